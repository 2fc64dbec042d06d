/* The daemon's outputs (daemon/output/insp-output.h): one file each.
 *   insp-output-mqtt.c   results, masks, status, events, snapshots over MQTT,
 *                        and the client whose commands the daemon answers;
 *   insp-output-print.c  one decision line per part on stdout;
 *   insp-output-http.c   the live page, /metrics (Prometheus) and /healthz;
 *   insp-output-archive.c  failed (or all) parts' frames, overlays and JSON
 *                        in a folder kept within a size and an age. */
#pragma once

#include <stdio.h>

#include "insp-conf.h"
#include "insp-mqtt.h"
#include "insp-output.h"

G_BEGIN_DECLS

/* The MQTT output for @config's [mqtt] and [spool], its client started;
 * @cmd_func and @conn_func run on @context (see insp-mqtt.h). @since_us:
 * the daemon's start (real time), where the status's since and uptime
 * count from. NULL with @error (naming the file for bad TLS or password
 * files). */
InspOutput *insp_output_mqtt_new(const InspConfig *config, const char *station, gint64 since_us,
                                 GMainContext *context, InspMqttCommandFunc cmd_func,
                                 InspMqttConnectionFunc conn_func, gpointer user_data,
                                 GError **error);
/* The client, to answer commands and read its counters; owned by @out. */
InspMqtt *insp_output_mqtt_get_client(InspOutput *out);
void insp_output_mqtt_set_masks(InspOutput *out, InspConfigMasks masks);

/* The HTTP server of @config's [http] (listening already): /metrics and
 * /healthz. NULL with @error when it cannot listen or read its password
 * file. */
InspOutput *insp_output_http_new(const InspConfig *config, const char *station, GError **error);

/* The archive of @config's [archive] (its writer thread started); events
 * (archive_failed, archive_behind) go to @outs on the main context. NULL
 * with @error when the folder cannot be made or written. */
InspOutput *insp_output_archive_new(const InspConfig *config, const char *station,
                                    InspOutputs *outs, GError **error);

/* "seq=N part=ID verdict=pass|fail score=S threshold=T regions=R latency=Lms"
 * per part on @stream, flushed. */
InspOutput *insp_output_print_new(FILE *stream);

G_END_DECLS
