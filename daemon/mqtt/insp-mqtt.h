/* MQTT client of the daemon: results, masks, status, events, snapshots and
 * commands over MQTT v5 (libmosquitto, threaded loop), with the
 * store-and-forward spool. Topics and payloads: DESIGN.md. It renders the
 * records of daemon/output/insp-part.h; the daemon's MQTT output
 * (daemon/insp-output-mqtt.c) is its one user besides the tests.
 *
 * Options are validated by conf/ (the only validator of config values): here
 * a value conf would refuse is a programming error (g_return_val_if_fail);
 * only what conf cannot see (files, the station name) is a GError. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "insp-part.h"

G_BEGIN_DECLS

#define INSP_MQTT_ERROR (insp_mqtt_error_quark())
GQuark insp_mqtt_error_quark(void);

typedef enum {
  INSP_MQTT_ERROR_OPTIONS,        /* an option is invalid (message names it) */
  INSP_MQTT_ERROR_FILE,           /* password/TLS file unreadable (message names the file) */
  INSP_MQTT_ERROR_SPOOL,          /* the spool could not be opened or written */
  INSP_MQTT_ERROR_CLIENT,         /* libmosquitto refused a setting */
  INSP_MQTT_ERROR_COMMAND,        /* a command payload is malformed or out of range */
  INSP_MQTT_ERROR_RESPONSE_TOPIC, /* a command's response topic is refused */
} InspMqttError;

typedef enum {
  INSP_MQTT_MASKS_FAIL = 0, /* masks of failed parts only (default) */
  INSP_MQTT_MASKS_ALL,
  INSP_MQTT_MASKS_NONE,
} InspMqttMasks;

/* Which commands are accepted. Each level answers the commands it does not
 * accept with an error naming [mqtt] commands. */
typedef enum {
  INSP_MQTT_COMMANDS_NONE = 0, /* no subscription */
  INSP_MQTT_COMMANDS_TRIGGER,  /* cmd/trigger; threshold, reload, snapshot refused */
  INSP_MQTT_COMMANDS_ALL,
} InspMqttCommands;

/* Commands accepted per second (a token bucket of this many); the excess is
 * answered with an error and not dispatched, so a flood cannot starve the
 * main loop. */
#define INSP_MQTT_COMMANDS_PER_S 200
/* Maximum-Packet-Size announced in CONNECT: the broker does not deliver a
 * larger packet (a command is at most INSP_MQTT_COMMAND_MAX_PAYLOAD). */
#define INSP_MQTT_MAX_PACKET_SIZE (INSP_MQTT_COMMAND_MAX_PAYLOAD + 4096)
/* The last will ("offline", retained) is sent this long after the connection
 * is lost, and only if the daemon has not connected again by then; the
 * session outlives the connection as long (Session Expiry Interval), which a
 * v5 broker needs to delay the will. A takeover of the client id, a broker
 * restart or a short network fault thus never leaves the retained status
 * "offline" while the daemon runs; a crashed daemon reads "offline" 10 s
 * later. */
#define INSP_MQTT_WILL_DELAY_S 10
/* The reason of a broker's DISCONNECT when another client connected with
 * this client id (v5 "Session taken over"). */
#define INSP_MQTT_REASON_SESSION_TAKEN_OVER 0x8E
/* The broker closed the socket without a DISCONNECT (libmosquitto's
 * MOSQ_ERR_CONN_LOST); mosquitto 2.0 does so on a takeover. */
#define INSP_MQTT_REASON_CONNECTION_LOST 7

/* [spool] sync: how often the spool's appends reach the disk. */
typedef enum {
  INSP_MQTT_SPOOL_SYNC_BATCH = 0, /* at most once a second (the default) */
  INSP_MQTT_SPOOL_SYNC_ALWAYS,    /* every message */
  INSP_MQTT_SPOOL_SYNC_NEVER,     /* when the kernel writes back */
} InspMqttSpoolSync;

/* Caller-owned; insp_mqtt_new() copies what it keeps. Strings may be NULL. */
typedef struct {
  const char *host;      /* default "localhost" */
  int port;              /* default 1883, 8883 with TLS */
  const char *client_id; /* default "inspectd-<station>" */
  const char *username;
  const char *password;      /* or password_file; never both; never logged */
  const char *password_file; /* first line, trailing newline stripped */
  const char *tls_ca;        /* CA file: enables TLS */
  const char *tls_cert;      /* client certificate (with tls_key) */
  const char *tls_key;
  int qos;                  /* results, masks, replies: 0..2, default 1 */
  int keepalive;            /* seconds, default 30 */
  const char *topic_prefix; /* default "inspectd" */
  const char *station;      /* default the host name */
  InspMqttMasks masks;
  InspMqttCommands commands; /* default all */
  /* Response topics must be this or below it; NULL: any topic outside
   * {topic_prefix}/. Wildcards and topics under {topic_prefix}/ are always
   * refused. */
  const char *reply_prefix;
  /* Home Assistant MQTT discovery: the configs of a device for the station,
   * retained, QoS 1, on every connect before the status (README "Home
   * Assistant"). Off: nothing is published under the prefix. */
  gboolean homeassistant;
  const char *homeassistant_prefix;    /* default "homeassistant" */
  double threshold_min, threshold_max; /* the threshold entity's range (commands all) */
  const char *sw_version;              /* the device's and origin's sw_version; nullable */
  gint64 since_us;                     /* the status's since (and uptime's origin) until the first
                                        * insp_mqtt_set_status: the daemon's start, so that a
                                        * client made by a reload does not restart the count;
                                        * 0: the client's own start */
  const char *spool_dir;               /* required */
  guint spool_max_mb;                  /* default 100 */
  InspMqttSpoolSync spool_sync;        /* [spool] sync; see insp-spool.c */
  guint reconnect_min_s;               /* backoff 1 s doubling up to 30 s by default */
  guint reconnect_max_s;
} InspMqttOptions;

/* Fills the defaults above (commands all, masks fail, qos 1, spool_dir NULL,
 * homeassistant off, thresholds 0.25..1 as [inspection]'s). */
void insp_mqtt_options_init(InspMqttOptions *opts);

typedef enum {
  INSP_MQTT_COMMAND_TRIGGER,
  INSP_MQTT_COMMAND_THRESHOLD,
  INSP_MQTT_COMMAND_RELOAD,
  INSP_MQTT_COMMAND_SNAPSHOT,
} InspMqttCommandKind;

/* Range accepted for threshold and pixel_threshold by the threshold command. */
#define INSP_MQTT_THRESHOLD_MIN 0.0
#define INSP_MQTT_THRESHOLD_MAX 100.0
/* Largest command payload read; longer ones are answered with an error. */
#define INSP_MQTT_COMMAND_MAX_PAYLOAD (64 * 1024)
#define INSP_MQTT_PART_ID_MAX 128

/* A validated command. Reference-counted; replies may be sent later. */
typedef struct _InspMqttCommand InspMqttCommand;

InspMqttCommand *insp_mqtt_command_ref(InspMqttCommand *cmd);
void insp_mqtt_command_unref(InspMqttCommand *cmd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspMqttCommand, insp_mqtt_command_unref)

InspMqttCommandKind insp_mqtt_command_get_kind(const InspMqttCommand *cmd);
const char *insp_mqtt_command_get_name(const InspMqttCommand *cmd); /* "trigger", ... */
/* trigger: the requested part id, NULL when the trigger named none. */
const char *insp_mqtt_command_get_part_id(const InspMqttCommand *cmd);
/* threshold: each returns FALSE when the command did not set it. */
gboolean insp_mqtt_command_get_threshold(const InspMqttCommand *cmd, double *value);
gboolean insp_mqtt_command_get_pixel_threshold(const InspMqttCommand *cmd, double *value);

/* Parses and validates one command payload (bounded, no I/O: the fuzz entry
 * point). @name is the last topic level. Returns a new command, or NULL with
 * INSP_MQTT_ERROR_COMMAND whose message is the reply's "error" text. */
InspMqttCommand *insp_mqtt_parse_command(const char *name, const guint8 *payload, gsize length,
                                         GError **error);

typedef struct _InspMqtt InspMqtt;

/* Runs on the GMainContext given to insp_mqtt_new(). The handler must answer
 * each command exactly once, now or later, with insp_mqtt_command_reply() or
 * insp_mqtt_command_reply_error() (ref the command to answer later). */
typedef void (*InspMqttCommandFunc)(InspMqtt *mqtt, InspMqttCommand *cmd, gpointer user_data);
/* Runs on that context on every connect (@connected TRUE, @reason 0) and loss
 * or refusal (@connected FALSE, @reason the MQTT v5 reason code or
 * libmosquitto error, @message readable). For the daemon to log once. */
typedef void (*InspMqttConnectionFunc)(InspMqtt *mqtt, gboolean connected, int reason,
                                       const char *message, gpointer user_data);

/* Validates @opts, reads the password file, checks every TLS file is
 * readable (the error names the file), opens the spool; does not connect.
 * Callbacks are dispatched on @context (NULL: the global default context). */
InspMqtt *insp_mqtt_new(const InspMqttOptions *opts, GMainContext *context, GError **error);
/* Sends the offline status, disconnects, stops the network thread, frees.
 * Spooled messages stay on disk for the next start. NULL is fine. */
void insp_mqtt_free(InspMqtt *mqtt);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspMqtt, insp_mqtt_free)
/* insp_mqtt_free() leaves the retained status as it is: a successor on the
 * same broker with the same status topic is about to connect and publish its
 * own (a reload that restarts the client), so subscribers never read
 * "offline" while the daemon runs. */
void insp_mqtt_keep_status(InspMqtt *mqtt);

/* Removes the Home Assistant entities: an empty retained payload on each
 * discovery config topic (QoS 1), and none is published again by this
 * client. Waits up to @timeout_ms for the broker to acknowledge them all.
 * FALSE when not every removal was acknowledged (not connected, or too
 * slow): the configs may stay retained. No-op (TRUE) with homeassistant
 * off. Any thread but the network's. */
gboolean insp_mqtt_remove_homeassistant(InspMqtt *mqtt, guint timeout_ms);

/* Hot: the threshold entity's range ([inspection] threshold_min/max);
 * with homeassistant on and commands = all, the configs are published again
 * when it changed. Any thread. */
void insp_mqtt_set_threshold_range(InspMqtt *mqtt, double min, double max);

/* Before insp_mqtt_start(). */
void insp_mqtt_set_command_handler(InspMqtt *mqtt, InspMqttCommandFunc func, gpointer user_data,
                                   GDestroyNotify destroy);
void insp_mqtt_set_connection_handler(InspMqtt *mqtt, InspMqttConnectionFunc func,
                                      gpointer user_data, GDestroyNotify destroy);

/* Starts the network thread; connecting and reconnecting (capped
 * exponential backoff) happen in the background, so an absent broker is not
 * an error here. */
gboolean insp_mqtt_start(InspMqtt *mqtt, GError **error);

/* Result (spooled first for QoS > 0, sent in seq order, deleted on PUBACK)
 * and, per the masks policy, @part's mask_png (when not NULL) on .../mask with
 * user properties seq and part_id. When the part was triggered with a v5
 * response topic, the result also goes there with its correlation data.
 * Any thread. Returns FALSE only when the spool cannot be written. */
gboolean insp_mqtt_publish_result(InspMqtt *mqtt, const InspPart *part, GError **error);
/* Retained status (spooled and uptime added here); remembered and
 * republished on every reconnect. Any thread. */
void insp_mqtt_publish_status(InspMqtt *mqtt, const InspStatus *status);
/* {"v":1,"station","ts","level","code","message", ...@extra}; @extra
 * (nullable, borrowed) adds members. Kept in a small bounded queue while
 * disconnected. @level: "info" | "warning" | "error". Any thread. */
void insp_mqtt_publish_event(InspMqtt *mqtt, const char *level, const char *code,
                             const char *message, JsonObject *extra);
/* The snapshot command's answer: the frame and its anomaly map as PNGs on
 * .../snapshot, user properties kind (image | anomaly_map), seq, part_id. */
void insp_mqtt_publish_snapshot(InspMqtt *mqtt, guint64 seq, const char *part_id, GBytes *image_png,
                                GBytes *map_png);
/* Hot. Any thread. */
void insp_mqtt_set_masks(InspMqtt *mqtt, InspMqttMasks masks);

/* {"ok":true, ...@fields} (nullable, borrowed). Any thread. */
void insp_mqtt_command_reply(InspMqtt *mqtt, InspMqttCommand *cmd, JsonObject *fields);

/* The PLC handshake: every trigger is answered twice on its own response
 * topic (or .../cmd/trigger/reply) with its own correlation data: at once
 * {"ok":true,"part_id":@part_id}, and finally exactly one of
 *   - the result of the part whose InspPart.trigger_id is @trigger_id,
 *   - {"ok":false,"error":...,"part_id":@part_id} from insp_mqtt_trigger_fail()
 *     ("timeout" when no frame came, "inspection failed: ..." ...).
 * Routing is by @trigger_id (nonzero, unique per trigger), never by part id:
 * two triggers with one part id each get their own answer. Any thread. */
void insp_mqtt_command_reply_trigger(InspMqtt *mqtt, InspMqttCommand *cmd, const char *part_id,
                                     guint64 trigger_id);
/* The final answer of trigger @trigger_id is a failure; FALSE when it is not
 * waiting (already answered, or unknown). */
gboolean insp_mqtt_trigger_fail(InspMqtt *mqtt, guint64 trigger_id, const char *message);
/* Every trigger still waiting fails with @message (capture restarted, stop);
 * returns how many. */
guint insp_mqtt_trigger_fail_all(InspMqtt *mqtt, const char *message);
/* {"ok":false,"error":@message}. Any thread. */
void insp_mqtt_command_reply_error(InspMqtt *mqtt, InspMqttCommand *cmd, const char *message);

typedef struct {
  gboolean connected;
  int last_reason;   /* last connect refusal / disconnect reason, 0 if none */
  guint64 published; /* results + masks + replies acknowledged */
  guint64 rejected;  /* PUBACK with an error reason code: dropped */
  guint spooled;     /* messages in the spool (not yet acknowledged) */
  guint64 spool_bytes;
  guint64 dropped_masks; /* evicted from a full spool */
  guint64 dropped_results;
  gint64 result_dropped_us; /* monotonic time a result was last dropped, 0 never */
  guint64 events_dropped;   /* events lost from the bounded offline queue */
  guint64 commands;         /* commands received (valid or not) */
} InspMqttStats;

void insp_mqtt_get_stats(InspMqtt *mqtt, InspMqttStats *stats);

/* The JSON of {prefix}/{station}/result for @part (DESIGN.md); the archive
 * writes the same document beside each part's images. */
GBytes *insp_mqtt_result_payload(const InspPart *part, const char *station);

G_END_DECLS
