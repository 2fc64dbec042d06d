/* Private to daemon/mqtt/: what the three parts of the MQTT library share.
 *   insp-mqtt-command.c  the command protocol: parsing, the policy that
 *                        refuses commands (level, rate, response topics),
 *                        reply payloads; no libmosquitto, no I/O;
 *   insp-mqtt-payload.c  the payloads of every topic (JSON) and their MQTT v5
 *                        properties;
 *   insp-mqtt.c          the session: connection, backoff, threads, in-flight
 *                        bookkeeping, the spool, trigger replies.
 * Not installed; tests use insp-mqtt.h only. */
#pragma once

#include <mosquitto.h>

#include "insp-mqtt.h"
#include "insp-part.h"

G_BEGIN_DECLS

#define INSP_MQTT_COMMAND_NAME_MAX 32

struct _InspMqttCommand {
  gint ref;
  InspMqttCommandKind kind;
  char *name;
  char *part_id;
  gboolean has_threshold, has_pixel_threshold;
  double threshold, pixel_threshold;
  char *response_topic; /* v5 response topic, NULL: the fallback reply topic */
  GBytes *correlation;
  gint replied;
};

/* ---- insp-mqtt-command.c ---- */

/* A command answered with an error although it could not be parsed: named
 * as the sender named it. */
InspMqttCommand *insp_mqtt_command_new_unparsed(const char *name);

/* The token bucket of INSP_MQTT_COMMANDS_PER_S. */
typedef struct {
  double tokens;
  gint64 time_us;
} InspMqttRate;

void insp_mqtt_rate_init(InspMqttRate *rate);

/* Decides whether @cmd may run. FALSE with the reply's error text:
 * INSP_MQTT_ERROR_COMMAND when over the rate or not enabled by @commands,
 * INSP_MQTT_ERROR_RESPONSE_TOPIC when @response_topic (nullable) could point
 * the daemon's publish at a wildcard, a '$' topic, any station's topics
 * (under @topic_prefix) or outside @reply_prefix (nullable). */
gboolean insp_mqtt_command_check(InspMqttRate *rate, InspMqttCommands commands,
                                 const char *topic_prefix, const char *reply_prefix,
                                 const InspMqttCommand *cmd, const char *response_topic,
                                 GError **error);

/* TRUE when @topic is @prefix or lies below it. */
gboolean insp_mqtt_topic_at_or_below(const char *topic, const char *prefix);

/* ---- insp-mqtt-payload.c ---- */

/* RFC 3339 UTC with milliseconds, e.g. "2026-11-28T20:44:13.123Z". */
char *insp_mqtt_format_time(gint64 unix_us);
GBytes *insp_mqtt_json_object_to_bytes(JsonObject *obj);
/* Copies the members of @src (nullable) that @dst does not have. */
void insp_mqtt_json_object_merge(JsonObject *dst, JsonObject *src);

/* {prefix}/{station}/status; @spooled and @uptime_s are the session's, since
 * is @status->since_us (RFC 3339 UTC, ms). */
GBytes *insp_mqtt_status_payload(const InspStatus *status, InspState state, const char *station,
                                 guint spooled, gint64 uptime_s);
/* The last will, a status of its own: {"v":1,"station","ts","state":"offline"}
 * (the keys every status has). @ts_us is when the will is registered, that
 * is when the connection it belongs to is made: the broker sends the payload
 * as it was then, so a will's ts says since when the connection stood, not
 * when it was lost. */
GBytes *insp_mqtt_will_payload(const char *station, gint64 ts_us);
/* {prefix}/{station}/event. */
GBytes *insp_mqtt_event_payload(const char *station, const char *level, const char *code,
                                const char *message, JsonObject *extra);
/* A command's reply: {"ok":true, ...@fields} or, with @error_message,
 * {"ok":false,"error":...}. */
GBytes *insp_mqtt_reply_payload(JsonObject *fields, const char *error_message);

/* Home Assistant MQTT discovery: one entity's config topic and payload. */
typedef struct {
  char *topic;     /* {prefix}/{component}/{node_id}/{object_id}/config */
  GBytes *payload; /* the JSON config; NULL: not offered, an empty payload removes it */
} InspMqttHaConfig;

void insp_mqtt_ha_config_free(InspMqttHaConfig *config);

typedef struct {
  const char *prefix; /* the discovery prefix */
  const char *station;
  const char *t_result, *t_status, *t_mask, *t_threshold; /* the station's topics */
  gboolean threshold_number; /* the threshold command is accepted (commands = all) */
  double threshold_min, threshold_max;
  const char *sw_version; /* nullable */
} InspMqttHaParams;

/* "inspectd_" + @station with every byte outside [A-Za-z0-9_-] made '_':
 * HA's node_id and the device's identifier. */
char *insp_mqtt_ha_node_id(const char *station);
/* Every entity of the station's device, in a fixed order (binary_sensor
 * verdict, sensors score, fps, pass, fail, image mask, number threshold),
 * the number with a NULL payload unless @p->threshold_number. A new array of
 * InspMqttHaConfig that frees its elements. */
GPtrArray *insp_mqtt_ha_configs(const InspMqttHaParams *p);

/* v5 properties: JSON (payload format UTF-8, content type, correlation data
 * when not NULL) and PNG (content type, user properties seq, part_id, and
 * kind when not NULL). */
void insp_mqtt_props_json(mosquitto_property **props, GBytes *correlation);
void insp_mqtt_props_png(mosquitto_property **props, guint64 seq, const char *part_id,
                         const char *kind);

G_END_DECLS
