/* daemon/ internals shared by insp-daemon.c and insp-daemon-mqtt.c.
 *
 * insp-daemon.c sees the pipeline, insp-daemon-mqtt.c sees the MQTT client
 * (InspPartResult, InspMqtt), and this header passes plain values between
 * them. */
#pragma once

#include <glib.h>

#include "insp-conf.h"
#include "insp-model.h"

G_BEGIN_DECLS

typedef struct _InspMqtt InspMqtt;
typedef struct _InspMqttCommand InspMqttCommand;

typedef enum {
  INSP_DAEMON_CMD_TRIGGER,
  INSP_DAEMON_CMD_THRESHOLD,
  INSP_DAEMON_CMD_RELOAD,
  INSP_DAEMON_CMD_SNAPSHOT,
} InspDaemonCmdKind;

/* A command as the daemon sees it; @cmd is the MQTT command to answer. */
typedef struct {
  InspDaemonCmdKind kind;
  const char *part_id; /* trigger; NULL when none was given */
  gboolean has_threshold, has_pixel_threshold;
  double threshold, pixel_threshold;
  InspMqttCommand *cmd;
} InspDaemonCmd;

/* Main context, called once per command; must answer it with
 * insp_daemon_mqtt_reply*() exactly once (now or later, holding a ref). */
typedef void (*InspDaemonCmdFunc)(const InspDaemonCmd *cmd, gpointer user_data);
typedef void (*InspDaemonConnFunc)(gboolean connected, const char *message, gpointer user_data);

/* A client for @config's [mqtt] and [spool] (@spool_dir overrides [spool]
 * dir when not NULL), started. NULL with @error (naming the file for bad TLS
 * or password files) when it cannot be created. */
InspMqtt *insp_daemon_mqtt_new(const InspConfig *config, const char *station, const char *spool_dir,
                               GMainContext *context, InspDaemonCmdFunc cmd_func,
                               InspDaemonConnFunc conn_func, gpointer user_data, GError **error);
void insp_daemon_mqtt_free(InspMqtt *mqtt);

typedef struct {
  guint64 seq;
  const char *part_id;
  gint64 capture_time_us;
  gboolean fail;
  double score, threshold;
  const char *model;
  double latency_ms;
  const InspRegion *regions;
  gsize n_regions;
} InspDaemonVerdict;

/* Any thread. FALSE with @error only when the spool cannot be written. */
gboolean insp_daemon_mqtt_publish(InspMqtt *mqtt, const InspDaemonVerdict *v, GBytes *mask_png,
                                  GError **error);
void insp_daemon_mqtt_status(InspMqtt *mqtt, gboolean degraded, const char *model, double threshold,
                             double fps, guint64 frames, guint64 dropped, guint64 pass,
                             guint64 fail);
/* @level "info" | "warning" | "error". */
void insp_daemon_mqtt_event(InspMqtt *mqtt, const char *level, const char *code,
                            const char *message);
void insp_daemon_mqtt_snapshot(InspMqtt *mqtt, guint64 seq, const char *part_id, GBytes *image,
                               GBytes *map);
void insp_daemon_mqtt_set_masks(InspMqtt *mqtt, InspConfigMasks masks);
/* Messages not yet acknowledged by the broker, and whether it is connected. */
guint insp_daemon_mqtt_pending(InspMqtt *mqtt, gboolean *connected);

void insp_daemon_mqtt_reply(InspMqtt *mqtt, InspMqttCommand *cmd, const char *key1,
                            const char *string1, const char *key2, double number2);
void insp_daemon_mqtt_reply_error(InspMqtt *mqtt, InspMqttCommand *cmd, const char *message);
InspMqttCommand *insp_daemon_mqtt_command_ref(InspMqttCommand *cmd);
void insp_daemon_mqtt_command_unref(InspMqttCommand *cmd);

G_END_DECLS
