/* MQTT client of the daemon (libmosquitto, MQTT v5).
 *
 * DESIGN. Three kinds of thread enter this file:
 *  - callers (the result thread, the main loop): publish_result/status/event/
 *    snapshot, command replies, set_masks, get_stats, remove_homeassistant;
 *  - "insp-mqtt-net", ours: drives libmosquitto with mosquitto_loop() and
 *    reconnects with capped exponential backoff (min_s * 2^n, at most max_s).
 *    We do not use mosquitto_loop_start(): its loop_forever() gives up for
 *    good on "fatal" errors, which include a v5 CONNACK refusal and TLS
 *    failures, and a daemon must keep retrying. All libmosquitto callbacks
 *    (on_connect, on_disconnect, on_publish, on_message) run here;
 *  - "insp-mqtt-pump", ours: moves spooled messages to the broker in
 *    (seq, kind) order, at most WINDOW unacknowledged at a time, and flushes
 *    events queued while offline.
 * Command handlers and the connection handler never run on these threads:
 * they are marshalled to the daemon's GMainContext (g_main_context_invoke).
 *
 * Delivery: results, replies and masks with QoS > 0 are written to the spool
 * before they are published and deleted only when the PUBACK arrives with a
 * success reason code (< 0x80; an error code drops the message, counted as
 * rejected). A crash between the broker's PUBACK and the deletion resends the
 * message after the next start, so delivery is AT LEAST ONCE, in seq order;
 * consumers dedupe on (station, seq). QoS 0 messages skip the spool while the
 * connection is up and nothing older waits in it.
 *
 * Order across a reconnect: libmosquitto keeps unacknowledged QoS > 0
 * messages and resends them itself right after the CONNACK, after our
 * on_connect ran. So when messages of an earlier connection are still
 * unacknowledged, the pump holds new ones back (the "barrier") until those
 * are acknowledged, or for at most BARRIER_TIMEOUT, after which they are
 * re-read from the spool and sent again.
 *
 * Home Assistant discovery (opt-in): the configs are built once in
 * insp_mqtt_new() and published, retained, in on_connect before the status,
 * so HA knows the entities before their availability. Removal publishes empty
 * retained payloads on the same topics and stops the republishing for good.
 * With it off nothing is published under the discovery prefix; with it on, a
 * command's response topic under the prefix is refused (HA would read a reply
 * there as a config).
 *
 * Locking: `lock` guards all mutable state below it in the struct; every
 * mosquitto_publish_v5() is made with it held, so a PUBACK (on the net
 * thread, which takes `lock` in on_publish) can never overtake the record of
 * its mid. libmosquitto invokes our callbacks with none of the locks a
 * publisher needs. Handlers are never called with `lock` held.
 *
 * Lifetime: InspMqtt is reference-counted inside; pending main-context
 * dispatches and commands hold references, and check `stopping` so nothing
 * reaches the daemon after insp_mqtt_free().
 */
#include "insp-mqtt-private.h"

#include <errno.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <signal.h>
#include <string.h>

#include "insp-json.h"
#include "insp-spool.h"

#define WINDOW 64            /* unacknowledged spooled messages in flight */
#define EVENT_QUEUE_MAX 32   /* events kept while offline */
#define TRIGGER_MAP_MAX 1024 /* triggers waiting for their part's result */
#define BARRIER_TIMEOUT_US (10 * G_USEC_PER_SEC)
#define PUMP_TICK_US (500 * G_TIME_SPAN_MILLISECOND)
#define DROP_EVENT_US (10 * G_USEC_PER_SEC) /* at most one spool_full event per 10 s */

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-mqtt-error-quark, insp_mqtt_error)
/* clang-format on */

typedef struct {
  guint64 spool_id;
  int qos;
  guint generation; /* connection it was sent on */
} Inflight;

/* Where a trigger's final answer goes. */
typedef struct {
  guint64 id; /* the caller's trigger id */
  char *topic;
  GBytes *correlation;
  char *part_id;
} PendingTrigger;

struct _InspMqtt {
  gint ref;
  /* Immutable after insp_mqtt_new(). */
  char *host;
  int port;
  char *client_id;
  char *username;
  char *password;
  int qos;
  int keepalive;
  char *station;
  InspMqttCommands commands;
  char *topic_prefix; /* no response topic at or below it */
  char *reply_prefix; /* NULL: none */
  InspMqttRate rate;  /* of commands; net thread only */
  guint reconnect_min_s, reconnect_max_s;
  char *t_base, *t_result, *t_mask, *t_status, *t_event, *t_snapshot, *t_cmd_sub, *t_cmd_base;
  gboolean homeassistant;
  char *ha_prefix;     /* NULL with homeassistant off */
  char *ha_sw_version; /* nullable */
  GMainContext *context;
  InspSpool *spool;
  gint64 start_wall_us; /* the status's since until the daemon gives its own */
  gint masks;           /* atomic InspMqttMasks */

  InspMqttCommandFunc cmd_func;
  gpointer cmd_data;
  GDestroyNotify cmd_destroy;
  InspMqttConnectionFunc conn_func;
  gpointer conn_data;
  GDestroyNotify conn_destroy;

  GThread *net_thread, *pump_thread;

  GMutex lock;
  GCond cond;
  struct mosquitto *mosq; /* NULL once destroyed */
  gboolean started;
  gboolean stopping; /* pump exits; no more dispatch to the daemon */
  gboolean net_stop; /* net thread exits */
  gboolean connected;
  gboolean kick; /* work for the pump */
  gboolean barrier;
  gint64 connect_time;
  guint generation;
  guint reconnects;     /* since the last successful CONNACK */
  GHashTable *inflight; /* mid -> Inflight */
  GQueue events;        /* GBytes payloads waiting for a connection */
  GHashTable *triggers; /* &PendingTrigger.id -> PendingTrigger */
  GQueue trigger_order; /* PendingTrigger*, oldest first (borrowed from triggers) */
  gboolean have_status;
  InspStatus status;
  char *status_model;
  gboolean keep_status; /* free without the offline status */
  int offline_mid;      /* mid of the final offline status, 0 when none */
  gboolean offline_acked;
  GPtrArray *ha_configs; /* InspMqttHaConfig*, NULL with homeassistant off */
  double ha_min, ha_max; /* the threshold entity's range */
  gboolean ha_removed;   /* the HA entities were removed: not published again */
  GHashTable *ha_mids;   /* mids of removals not yet acknowledged */
  int last_reason;
  char *tls_error; /* libmosquitto's last OpenSSL error line, net thread; under lock */
  /* Drops from a full spool, announced at most every DROP_EVENT_US (under
   * drop_lock: any thread pushes) */
  GMutex drop_lock;
  gint64 drop_announced_us;
  gboolean drop_pending, drop_logged;
  gint64 result_dropped_us; /* when a result was last dropped; 0 never */
  guint64 published, rejected, events_dropped, n_commands;
};

static void mqtt_unref(InspMqtt *mqtt);

static InspMqtt *
mqtt_ref(InspMqtt *mqtt)
{
  g_atomic_int_inc(&mqtt->ref);
  return mqtt;
}

/* ---------- options ---------- */

void
insp_mqtt_options_init(InspMqttOptions *opts)
{
  g_return_if_fail(opts != NULL);
  memset(opts, 0, sizeof *opts);
  opts->host = "localhost";
  opts->qos = 1;
  opts->keepalive = 30;
  opts->topic_prefix = "inspectd";
  opts->masks = INSP_MQTT_MASKS_FAIL;
  opts->commands = INSP_MQTT_COMMANDS_ALL;
  opts->spool_max_mb = 100;
  opts->reconnect_min_s = 1;
  opts->reconnect_max_s = 30;
  opts->threshold_min = 0.25;
  opts->threshold_max = 1.0;
}

static gboolean
topic_part_ok(const char *s, gboolean allow_slash)
{
  if (s == NULL || *s == '\0' || !g_utf8_validate(s, -1, NULL) || strlen(s) > 1024)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (*p == '+' || *p == '#' || (!allow_slash && *p == '/') || (guchar)*p < 0x20)
      return FALSE;
  if (allow_slash && (s[0] == '/' || s[strlen(s) - 1] == '/'))
    return FALSE;
  return TRUE;
}

/* Reads a whole small file, naming it in the error. */
static char *
read_named_file(const char *what, const char *path, gsize *len, GError **error)
{
  g_autoptr(GError) local = NULL;
  char *data = NULL;

  if (!g_file_get_contents(path, &data, len, &local)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_FILE, "cannot read %s file '%s': %s", what,
                path, local->message);
    return NULL;
  }
  return data;
}

/* ---------- dispatch to the daemon's main context ---------- */

typedef struct {
  InspMqtt *mqtt;
  InspMqttCommand *cmd;
  gboolean connected;
  int reason;
  char *message;
} Dispatch;

static void
dispatch_free(gpointer data)
{
  Dispatch *d = data;

  if (d->cmd)
    insp_mqtt_command_unref(d->cmd);
  mqtt_unref(d->mqtt);
  g_free(d->message);
  g_free(d);
}

static gboolean
dispatch_command(gpointer data)
{
  Dispatch *d = data;
  gboolean stopping;

  g_mutex_lock(&d->mqtt->lock);
  stopping = d->mqtt->stopping;
  g_mutex_unlock(&d->mqtt->lock);
  if (stopping)
    return G_SOURCE_REMOVE;
  if (d->mqtt->cmd_func == NULL)
    insp_mqtt_command_reply_error(d->mqtt, d->cmd, "commands are not handled");
  else
    d->mqtt->cmd_func(d->mqtt, d->cmd, d->mqtt->cmd_data);
  return G_SOURCE_REMOVE;
}

static gboolean
dispatch_connection(gpointer data)
{
  Dispatch *d = data;
  gboolean stopping;

  g_mutex_lock(&d->mqtt->lock);
  stopping = d->mqtt->stopping;
  g_mutex_unlock(&d->mqtt->lock);
  if (!stopping && d->mqtt->conn_func != NULL)
    d->mqtt->conn_func(d->mqtt, d->connected, d->reason, d->message, d->mqtt->conn_data);
  return G_SOURCE_REMOVE;
}

static void
post_connection(InspMqtt *mqtt, gboolean connected, int reason, const char *message)
{
  Dispatch *d;

  if (mqtt->conn_func == NULL)
    return;
  d = g_new0(Dispatch, 1);
  d->mqtt = mqtt_ref(mqtt);
  d->connected = connected;
  d->reason = reason;
  d->message = g_strdup(message);
  g_main_context_invoke_full(mqtt->context, G_PRIORITY_DEFAULT, dispatch_connection, d,
                             dispatch_free);
}

/* ---------- publishing (all with `lock` held) ---------- */

static int
publish_locked(InspMqtt *mqtt, int *mid, const char *topic, GBytes *payload, int qos,
               gboolean retain, const mosquitto_property *props)
{
  gsize len = 0;
  const void *data = payload ? g_bytes_get_data(payload, &len) : NULL;

  if (mqtt->mosq == NULL)
    return MOSQ_ERR_NO_CONN;
  if (len > G_MAXINT)
    return MOSQ_ERR_PAYLOAD_SIZE;
  return mosquitto_publish_v5(mqtt->mosq, mid, topic, (int)len, data, qos, retain, props);
}

static GBytes *
status_payload_locked(InspMqtt *mqtt, InspState state)
{
  InspSpoolStats ss;
  InspStatus status = mqtt->status;

  insp_spool_get_stats(mqtt->spool, &ss);
  status.model = mqtt->status_model;
  /* uptime counts from `since`, the daemon's start, so that a new MQTT
   * client (a changed [mqtt] section) does not restart it; the client's
   * own start before the daemon's first status. */
  if (status.since_us == 0)
    status.since_us = mqtt->start_wall_us;
  return insp_mqtt_status_payload(&status, state, mqtt->station, ss.n_messages,
                                  MAX(g_get_real_time() - status.since_us, 0) / G_USEC_PER_SEC);
}

static int
publish_status_locked(InspMqtt *mqtt, InspState state, int *mid)
{
  g_autoptr(GBytes) payload = status_payload_locked(mqtt, state);
  mosquitto_property *props = NULL;
  int rc;

  mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json");
  rc = publish_locked(mqtt, mid, mqtt->t_status, payload, 1, TRUE, props);
  mosquitto_property_free_all(&props);
  return rc;
}

/* The discovery configs for the current threshold range. */
static GPtrArray *
ha_build(InspMqtt *mqtt)
{
  g_autofree char *t_threshold = g_strconcat(mqtt->t_cmd_base, "threshold", NULL);
  InspMqttHaParams hp = {
      .prefix = mqtt->ha_prefix,
      .station = mqtt->station,
      .t_result = mqtt->t_result,
      .t_status = mqtt->t_status,
      .t_mask = mqtt->t_mask,
      .t_threshold = t_threshold,
      .threshold_number = mqtt->commands == INSP_MQTT_COMMANDS_ALL,
      .threshold_min = mqtt->ha_min,
      .threshold_max = mqtt->ha_max,
      .sw_version = mqtt->ha_sw_version,
  };

  return insp_mqtt_ha_configs(&hp);
}

/* The Home Assistant discovery configs, retained, QoS 1; an entity not
 * offered (the threshold without commands = all) gets an empty payload, which
 * removes it if an earlier run offered it. */
static void
publish_ha_locked(InspMqtt *mqtt)
{
  if (!mqtt->homeassistant || mqtt->ha_removed)
    return;
  for (guint i = 0; i < mqtt->ha_configs->len; i++) {
    const InspMqttHaConfig *c = mqtt->ha_configs->pdata[i];
    mosquitto_property *props = NULL;

    if (c->payload != NULL)
      insp_mqtt_props_json(&props, NULL);
    publish_locked(mqtt, NULL, c->topic, c->payload, 1, TRUE, props);
    mosquitto_property_free_all(&props);
  }
}

static void
props_for_spooled(const InspSpoolMessage *msg, mosquitto_property **props)
{
  if (msg->kind == INSP_SPOOL_KIND_MASK)
    insp_mqtt_props_png(props, msg->seq, msg->part_id, NULL);
  else
    insp_mqtt_props_json(props, msg->correlation);
}

/* Sends one spooled message; records its mid. Returns the libmosquitto code. */
static int
send_spooled_locked(InspMqtt *mqtt, InspSpoolMessage *msg)
{
  mosquitto_property *props = NULL;
  int mid = 0, rc;

  props_for_spooled(msg, &props);
  rc = publish_locked(mqtt, &mid, msg->topic, msg->payload, msg->qos, FALSE, props);
  mosquitto_property_free_all(&props);
  if (rc == MOSQ_ERR_SUCCESS) {
    Inflight *inf = g_new0(Inflight, 1);
    inf->spool_id = msg->id;
    inf->qos = msg->qos;
    inf->generation = mqtt->generation;
    g_hash_table_insert(mqtt->inflight, GINT_TO_POINTER(mid), inf);
  }
  return rc;
}

static void
queue_event_locked(InspMqtt *mqtt, GBytes *payload)
{
  if (mqtt->events.length >= EVENT_QUEUE_MAX) {
    g_bytes_unref(g_queue_pop_head(&mqtt->events));
    mqtt->events_dropped++;
  }
  g_queue_push_tail(&mqtt->events, g_bytes_ref(payload));
}

static void
send_event_locked(InspMqtt *mqtt, GBytes *payload)
{
  mosquitto_property *props = NULL;
  int rc;

  if (!mqtt->connected) {
    queue_event_locked(mqtt, payload);
    return;
  }
  insp_mqtt_props_json(&props, NULL);
  rc = publish_locked(mqtt, NULL, mqtt->t_event, payload, 1, FALSE, props);
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_SUCCESS)
    queue_event_locked(mqtt, payload);
}

/* The pump's work: barrier, queued events, spooled messages. */
static void
drain_locked(InspMqtt *mqtt)
{
  GHashTableIter it;
  gpointer key, value;

  if (!mqtt->connected || mqtt->mosq == NULL)
    return;
  if (mqtt->barrier) {
    gboolean old = FALSE;
    g_hash_table_iter_init(&it, mqtt->inflight);
    while (g_hash_table_iter_next(&it, &key, &value))
      if (((Inflight *)value)->generation != mqtt->generation)
        old = TRUE;
    if (old && g_get_monotonic_time() - mqtt->connect_time < BARRIER_TIMEOUT_US)
      return;
    if (old) {
      /* libmosquitto did not resend them: send them again from the spool. */
      g_hash_table_iter_init(&it, mqtt->inflight);
      while (g_hash_table_iter_next(&it, &key, &value))
        if (((Inflight *)value)->generation != mqtt->generation) {
          insp_spool_release(mqtt->spool, ((Inflight *)value)->spool_id);
          g_hash_table_iter_remove(&it);
        }
    }
    mqtt->barrier = FALSE;
  }
  while (mqtt->events.length > 0 && mqtt->connected) {
    g_autoptr(GBytes) ev = g_queue_pop_head(&mqtt->events);
    send_event_locked(mqtt, ev);
    if (!mqtt->connected)
      break;
  }
  while (g_hash_table_size(mqtt->inflight) < WINDOW) {
    g_autoptr(InspSpoolMessage) msg = insp_spool_claim_next(mqtt->spool);
    int rc;
    if (msg == NULL)
      break;
    rc = send_spooled_locked(mqtt, msg);
    if (rc == MOSQ_ERR_SUCCESS)
      continue;
    if (rc == MOSQ_ERR_PAYLOAD_SIZE || rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_MALFORMED_UTF8 ||
        rc == MOSQ_ERR_QOS_NOT_SUPPORTED || rc == MOSQ_ERR_OVERSIZE_PACKET) {
      /* The broker will never take it: drop it rather than block the spool. */
      g_debug("mqtt: dropping spooled seq %" G_GUINT64_FORMAT ": %s", msg->seq,
              mosquitto_strerror(rc));
      insp_spool_ack(mqtt->spool, msg->id);
      mqtt->rejected++;
      continue;
    }
    insp_spool_release(mqtt->spool, msg->id);
    break;
  }
}

static void announce_evictions(InspMqtt *mqtt, guint em, guint er);

static gpointer
pump_thread(gpointer data)
{
  InspMqtt *mqtt = data;
  sigset_t all;

  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  g_mutex_lock(&mqtt->lock);
  while (!mqtt->stopping) {
    if (!mqtt->kick)
      g_cond_wait_until(&mqtt->cond, &mqtt->lock, g_get_monotonic_time() + PUMP_TICK_US);
    mqtt->kick = FALSE;
    if (mqtt->stopping)
      break;
    drain_locked(mqtt);
    g_mutex_unlock(&mqtt->lock);
    insp_spool_flush(mqtt->spool); /* sync = batch: the last second */
    announce_evictions(mqtt, 0, 0);
    g_mutex_lock(&mqtt->lock);
  }
  g_mutex_unlock(&mqtt->lock);
  return NULL;
}

static void
kick_locked(InspMqtt *mqtt)
{
  mqtt->kick = TRUE;
  g_cond_broadcast(&mqtt->cond);
}

/* ---------- libmosquitto callbacks (net thread) ---------- */

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
  InspMqtt *mqtt = obj;
  GHashTableIter it;
  gpointer key, value;

  if (rc != 0) {
    g_mutex_lock(&mqtt->lock);
    mqtt->last_reason = rc;
    g_mutex_unlock(&mqtt->lock);
    post_connection(mqtt, FALSE, rc, mosquitto_reason_string(rc));
    return;
  }
  g_mutex_lock(&mqtt->lock);
  mqtt->connected = TRUE;
  g_clear_pointer(&mqtt->tls_error, g_free);
  mqtt->reconnects = 0;
  mqtt->generation++;
  mqtt->connect_time = g_get_monotonic_time();
  mqtt->barrier = FALSE;
  g_hash_table_iter_init(&it, mqtt->inflight);
  while (g_hash_table_iter_next(&it, &key, &value))
    if (((Inflight *)value)->qos > 0)
      mqtt->barrier = TRUE;
  if (mqtt->commands != INSP_MQTT_COMMANDS_NONE)
    mosquitto_subscribe_v5(mosq, NULL, mqtt->t_cmd_sub, 1, MQTT_SUB_OPT_SEND_RETAIN_NEVER, NULL);
  publish_ha_locked(mqtt); /* before the status that makes the entities available */
  publish_status_locked(mqtt, mqtt->have_status ? mqtt->status.state : INSP_STATE_ONLINE, NULL);
  kick_locked(mqtt);
  g_mutex_unlock(&mqtt->lock);
  post_connection(mqtt, TRUE, 0, "connected");
}

G_STATIC_ASSERT(INSP_MQTT_REASON_CONNECTION_LOST == MOSQ_ERR_CONN_LOST);
G_STATIC_ASSERT(INSP_MQTT_REASON_SESSION_TAKEN_OVER == MQTT_RC_SESSION_TAKEN_OVER);

static void
on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
  InspMqtt *mqtt = obj;
  GHashTableIter it;
  gpointer key, value;
  gboolean was;

  g_mutex_lock(&mqtt->lock);
  was = mqtt->connected;
  mqtt->connected = FALSE;
  if (rc != 0)
    mqtt->last_reason = rc;
  /* QoS 0 packets not yet written are gone with the socket: send them again. */
  g_hash_table_iter_init(&it, mqtt->inflight);
  while (g_hash_table_iter_next(&it, &key, &value))
    if (((Inflight *)value)->qos == 0) {
      insp_spool_release(mqtt->spool, ((Inflight *)value)->spool_id);
      g_hash_table_iter_remove(&it);
    }
  g_cond_broadcast(&mqtt->cond);
  g_mutex_unlock(&mqtt->lock);
  /* rc is a libmosquitto error, or the v5 reason code of the broker's
   * DISCONNECT (0x8E: another client took over our client id). */
  if (was)
    post_connection(mqtt, FALSE, rc,
                    rc == 0      ? "disconnected"
                    : rc >= 0x80 ? mosquitto_reason_string(rc)
                                 : mosquitto_strerror(rc));
}

static void
on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
  InspMqtt *mqtt = obj;
  Inflight *inf;

  g_mutex_lock(&mqtt->lock);
  if (mid != 0 && mid == mqtt->offline_mid) {
    mqtt->offline_acked = TRUE;
    g_cond_broadcast(&mqtt->cond);
  }
  if (mid != 0 && g_hash_table_remove(mqtt->ha_mids, GINT_TO_POINTER(mid)))
    g_cond_broadcast(&mqtt->cond);
  inf = g_hash_table_lookup(mqtt->inflight, GINT_TO_POINTER(mid));
  if (inf != NULL) {
    insp_spool_ack(mqtt->spool, inf->spool_id);
    if (reason < 0x80) {
      mqtt->published++;
    } else {
      g_autoptr(GBytes) ev = NULL;
      g_autofree char *text =
          g_strdup_printf("the broker refused a message: %s", mosquitto_reason_string(reason));
      mqtt->rejected++;
      ev = insp_mqtt_event_payload(mqtt->station, "error", "publish_rejected", text, NULL);
      send_event_locked(mqtt, ev);
    }
    g_hash_table_remove(mqtt->inflight, GINT_TO_POINTER(mid));
    kick_locked(mqtt);
  }
  g_mutex_unlock(&mqtt->lock);
}

/* Sends a reply payload on @cmd's response topic or the fallback
 * .../cmd/{name}/reply, with its correlation data. */
static void
send_reply(InspMqtt *mqtt, InspMqttCommand *cmd, GBytes *payload)
{
  g_autofree char *fallback = NULL;
  mosquitto_property *props = NULL;
  const char *topic = cmd->response_topic;

  if (topic == NULL)
    topic = fallback = g_strconcat(mqtt->t_cmd_base, cmd->name, "/reply", NULL);
  insp_mqtt_props_json(&props, cmd->correlation);
  g_mutex_lock(&mqtt->lock);
  if (!mqtt->stopping || mqtt->connected)
    publish_locked(mqtt, NULL, topic, payload, 1, FALSE, props);
  g_mutex_unlock(&mqtt->lock);
  mosquitto_property_free_all(&props);
}

static void
reply_error_raw(InspMqtt *mqtt, InspMqttCommand *cmd, const char *message)
{
  g_autoptr(GBytes) payload = insp_mqtt_reply_payload(NULL, message);

  send_reply(mqtt, cmd, payload);
}

static void
on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
           const mosquitto_property *props)
{
  InspMqtt *mqtt = obj;
  g_autoptr(InspMqttCommand) cmd = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *response_topic = NULL;
  g_autofree char *name = NULL;
  void *corr = NULL;
  guint16 corr_len = 0;
  gsize base_len = strlen(mqtt->t_cmd_base);
  Dispatch *d;

  if (mqtt->commands == INSP_MQTT_COMMANDS_NONE || msg->topic == NULL ||
      !g_str_has_prefix(msg->topic, mqtt->t_cmd_base))
    return;
  name = g_strdup(msg->topic + base_len);
  if (*name == '\0' || strchr(name, '/') != NULL)
    return; /* replies and deeper topics are not commands */
  if (msg->retain)
    return; /* a retained command would run again on every reconnect */
  g_mutex_lock(&mqtt->lock);
  mqtt->n_commands++;
  g_mutex_unlock(&mqtt->lock);

  mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false);
  mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);

  cmd = insp_mqtt_parse_command(name, msg->payload ? msg->payload : (const void *)"",
                                msg->payloadlen > 0 ? (gsize)msg->payloadlen : 0, &error);
  if (cmd != NULL && mqtt->homeassistant && response_topic != NULL &&
      insp_mqtt_topic_at_or_below(response_topic, mqtt->ha_prefix)) {
    /* A reply there would be read by Home Assistant as a discovery config. */
    g_set_error(&error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_RESPONSE_TOPIC,
                "response topic '%s' lies under the Home Assistant discovery prefix '%s'",
                response_topic, mqtt->ha_prefix);
    g_clear_pointer(&response_topic, free);
    g_clear_pointer(&cmd, insp_mqtt_command_unref);
  }
  if (cmd != NULL && !insp_mqtt_command_check(&mqtt->rate, mqtt->commands, mqtt->topic_prefix,
                                              mqtt->reply_prefix, cmd, response_topic, &error)) {
    /* Refused: answered on the station's own reply topic, never on a
     * response topic that was itself refused. */
    if (error->code == INSP_MQTT_ERROR_RESPONSE_TOPIC)
      g_clear_pointer(&response_topic, free);
    g_clear_pointer(&cmd, insp_mqtt_command_unref);
  }
  if (cmd == NULL) {
    /* Answer malformed commands here, on the name the sender used. */
    cmd = insp_mqtt_command_new_unparsed(name);
    if (response_topic)
      cmd->response_topic = g_strdup(response_topic);
    if (corr)
      cmd->correlation = g_bytes_new(corr, corr_len);
    if (cmd->response_topic != NULL || strlen(name) <= INSP_MQTT_COMMAND_NAME_MAX)
      reply_error_raw(mqtt, cmd, error->message);
    free(corr);
    return;
  }
  if (response_topic)
    cmd->response_topic = g_strdup(response_topic);
  if (corr)
    cmd->correlation = g_bytes_new(corr, corr_len);
  free(corr);

  d = g_new0(Dispatch, 1);
  d->mqtt = mqtt_ref(mqtt);
  d->cmd = g_steal_pointer(&cmd);
  g_main_context_invoke_full(mqtt->context, G_PRIORITY_DEFAULT, dispatch_command, d, dispatch_free);
}

/* libmosquitto says why a TLS handshake failed only in its log ("OpenSSL
 * Error[0]: error:0A000086:SSL routines::certificate verify failed"); the
 * error code is just MOSQ_ERR_TLS. Keep the line for the reason. */
static void
on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
  InspMqtt *mqtt = obj;

  if (!(level & MOSQ_LOG_ERR) || str == NULL || strstr(str, "SSL") == NULL)
    return;
  g_mutex_lock(&mqtt->lock);
  if (mqtt->tls_error == NULL) /* the first line names the cause */
    mqtt->tls_error = g_strdup(str);
  g_mutex_unlock(&mqtt->lock);
}

/* The reason of a failed loop: the TLS error libmosquitto logged, errno's
 * text, or libmosquitto's. */
static char *
failure_reason(InspMqtt *mqtt, int rc, int e)
{
  char *tls;

  g_mutex_lock(&mqtt->lock);
  tls = g_steal_pointer(&mqtt->tls_error);
  g_mutex_unlock(&mqtt->lock);
  if (tls != NULL) {
    const char *msg = g_strrstr(tls, "routines::"); /* OpenSSL's "lib routines::reason" */
    char *out = g_strdup_printf("TLS: %s (check tls_ca against the broker's certificate, the host "
                                "name against its subjectAltName, tls_cert and tls_key)",
                                msg ? msg + strlen("routines::") : tls);
    g_free(tls);
    return out;
  }
  return g_strdup(rc == MOSQ_ERR_ERRNO ? g_strerror(e) : mosquitto_strerror(rc));
}

/* Registers the last will, retained on the status topic after
 * INSP_MQTT_WILL_DELAY_S: a status with the keys every status has (v,
 * station, ts, state "offline"). Its ts is now, the time of registering:
 * before the first connect and again before each reconnect (libmosquitto
 * sends the stored will in every CONNECT), so it is when the connection that
 * later ends was made, not when it ended. Before the net thread runs, or on
 * it while not connected. */
static int
set_will(InspMqtt *mqtt)
{
  g_autoptr(GBytes) will = insp_mqtt_will_payload(mqtt->station, g_get_real_time());
  mosquitto_property *props = NULL;
  gsize len = 0;
  const void *data = g_bytes_get_data(will, &len);
  int rc;

  mosquitto_property_add_int32(&props, MQTT_PROP_WILL_DELAY_INTERVAL, INSP_MQTT_WILL_DELAY_S);
  /* On success the client owns the properties. */
  rc = mosquitto_will_set_v5(mqtt->mosq, mqtt->t_status, (int)len, data, 1, true, props);
  if (rc != MOSQ_ERR_SUCCESS)
    mosquitto_property_free_all(&props);
  return rc;
}

static gpointer
net_thread(gpointer data)
{
  InspMqtt *mqtt = data;
  sigset_t all;
  guint attempt = 0;

  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  {
    /* Maximum-Packet-Size in every CONNECT, so that the broker never delivers
     * a command larger than we read (a 200 MB publish would otherwise be
     * buffered whole before it is refused). libmosquitto takes CONNECT
     * properties only from the blocking mosquitto_connect_bind_v5(), which
     * stores them for every later (re)connect before it checks the port:
     * call it with an invalid port, then connect without blocking. */
    mosquitto_property *props = NULL;

    mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, INSP_MQTT_MAX_PACKET_SIZE);
    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, INSP_MQTT_WILL_DELAY_S);
    (void)mosquitto_connect_bind_v5(mqtt->mosq, mqtt->host, -1, mqtt->keepalive, NULL, props);
    mosquitto_property_free_all(&props);
  }
  (void)mosquitto_connect_async(mqtt->mosq, mqtt->host, mqtt->port, mqtt->keepalive);
  for (;;) {
    int rc;
    gint64 delay_us;
    gboolean stop;

    g_mutex_lock(&mqtt->lock);
    stop = mqtt->net_stop;
    g_mutex_unlock(&mqtt->lock);
    if (stop)
      break;
    rc = mosquitto_loop(mqtt->mosq, 100, 1);
    if (rc == MOSQ_ERR_SUCCESS)
      continue;
    {
      /* Every failed attempt is reported; the daemon logs a change of
       * state once (a broker unreachable from the start included). */
      int e = errno;
      g_autofree char *why = failure_reason(mqtt, rc, e);

      post_connection(mqtt, FALSE, rc, why);
    }
    g_mutex_lock(&mqtt->lock);
    if (mqtt->connected) {
      /* The loop failed without a disconnect callback (e.g. NO_CONN). */
      mqtt->connected = FALSE;
    }
    attempt = mqtt->reconnects++;
    delay_us = (gint64)mqtt->reconnect_min_s * G_USEC_PER_SEC;
    for (guint i = 0; i < attempt && delay_us < (gint64)mqtt->reconnect_max_s * G_USEC_PER_SEC; i++)
      delay_us *= 2;
    delay_us = MIN(delay_us, (gint64)mqtt->reconnect_max_s * G_USEC_PER_SEC);
    {
      gint64 until = g_get_monotonic_time() + delay_us;
      while (!mqtt->net_stop && g_get_monotonic_time() < until)
        g_cond_wait_until(&mqtt->cond, &mqtt->lock, until);
    }
    stop = mqtt->net_stop;
    g_mutex_unlock(&mqtt->lock);
    if (stop)
      break;
    g_debug("mqtt: reconnecting to %s:%d (attempt %u)", mqtt->host, mqtt->port, attempt + 1);
    if (set_will(mqtt) != MOSQ_ERR_SUCCESS)
      g_debug("mqtt: the last will keeps its earlier ts");
    (void)mosquitto_reconnect_async(mqtt->mosq);
  }
  return NULL;
}

/* ---------- public API ---------- */

static void
pending_trigger_free(gpointer data)
{
  PendingTrigger *t = data;

  g_free(t->topic);
  g_clear_pointer(&t->correlation, g_bytes_unref);
  g_free(t->part_id);
  g_free(t);
}

static void
mqtt_unref(InspMqtt *mqtt)
{
  if (mqtt == NULL || !g_atomic_int_dec_and_test(&mqtt->ref))
    return;
  g_free(mqtt->host);
  g_free(mqtt->tls_error);
  g_free(mqtt->client_id);
  g_free(mqtt->topic_prefix);
  g_free(mqtt->reply_prefix);
  g_free(mqtt->username);
  if (mqtt->password != NULL) {
    explicit_bzero(mqtt->password, strlen(mqtt->password));
    g_free(mqtt->password);
  }
  g_free(mqtt->station);
  g_free(mqtt->t_base);
  g_free(mqtt->t_result);
  g_free(mqtt->t_mask);
  g_free(mqtt->t_status);
  g_free(mqtt->t_event);
  g_free(mqtt->t_snapshot);
  g_free(mqtt->t_cmd_sub);
  g_free(mqtt->t_cmd_base);
  g_free(mqtt->ha_prefix);
  g_free(mqtt->ha_sw_version);
  g_clear_pointer(&mqtt->ha_configs, g_ptr_array_unref);
  g_clear_pointer(&mqtt->ha_mids, g_hash_table_unref);
  g_free(mqtt->status_model);
  g_clear_pointer(&mqtt->spool, insp_spool_free);
  g_clear_pointer(&mqtt->inflight, g_hash_table_unref);
  g_clear_pointer(&mqtt->triggers, g_hash_table_unref);
  g_queue_clear(&mqtt->trigger_order);
  g_queue_clear_full(&mqtt->events, (GDestroyNotify)g_bytes_unref);
  if (mqtt->context)
    g_main_context_unref(mqtt->context);
  g_mutex_clear(&mqtt->lock);
  g_mutex_clear(&mqtt->drop_lock);
  g_cond_clear(&mqtt->cond);
  g_free(mqtt);
}

static gsize lib_init_once;

InspMqtt *
insp_mqtt_new(const InspMqttOptions *opts, GMainContext *context, GError **error)
{
  InspMqtt *mqtt;
  g_autofree char *password = NULL;
  g_autofree char *ca = NULL, *cert = NULL, *key = NULL;
  g_autofree char *station = NULL;
  const char *prefix, *ha_prefix;
  InspSpoolFlags sflags = INSP_SPOOL_FLAGS_NONE;
  InspSpool *spool;
  gsize len = 0;
  int rc;

  g_return_val_if_fail(opts != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  /* What conf/ validates is a programming error here. */
  g_return_val_if_fail(opts->qos >= 0 && opts->qos <= 2, NULL);
  g_return_val_if_fail(opts->port >= 0 && opts->port <= 65535, NULL);
  g_return_val_if_fail(opts->keepalive >= 0 && opts->keepalive <= 65535, NULL);
  g_return_val_if_fail(opts->masks <= INSP_MQTT_MASKS_NONE, NULL);
  g_return_val_if_fail(opts->commands <= INSP_MQTT_COMMANDS_ALL, NULL);
  g_return_val_if_fail(opts->spool_dir != NULL && *opts->spool_dir != '\0', NULL);
  prefix = opts->topic_prefix ? opts->topic_prefix : "inspectd";
  g_return_val_if_fail(topic_part_ok(prefix, TRUE) && prefix[0] != '$', NULL);
  ha_prefix = opts->homeassistant_prefix ? opts->homeassistant_prefix : "homeassistant";
  g_return_val_if_fail(
      !opts->homeassistant || (topic_part_ok(ha_prefix, TRUE) && ha_prefix[0] != '$'), NULL);

  if (g_once_init_enter(&lib_init_once)) {
    mosquitto_lib_init();
    g_once_init_leave(&lib_init_once, 1);
  }
  /* The station may come from the host name, which conf does not see. */
  station = g_strdup(opts->station ? opts->station : g_get_host_name());
  if (!topic_part_ok(station, FALSE)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS,
                "station '%s' cannot be a topic level (no /, +, #)", station);
    return NULL;
  }
  if (opts->password != NULL && opts->password_file != NULL) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS,
                "set either a password or a password_file, not both");
    return NULL;
  }
  if ((opts->password != NULL || opts->password_file != NULL) && opts->username == NULL) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS, "a password needs a username");
    return NULL;
  }
  if (opts->password_file != NULL) {
    char *nl;
    password = read_named_file("password", opts->password_file, &len, error);
    if (password == NULL)
      return NULL;
    nl = strpbrk(password, "\r\n");
    if (nl)
      *nl = '\0';
  } else if (opts->password != NULL) {
    password = g_strdup(opts->password);
  }
  if ((opts->tls_cert == NULL) != (opts->tls_key == NULL)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS,
                "tls_cert and tls_key go together: set both or neither");
    return NULL;
  }
  if (opts->tls_cert != NULL && opts->tls_ca == NULL) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS,
                "a client certificate needs tls_ca as well");
    return NULL;
  }
  if (opts->tls_ca && (ca = read_named_file("tls_ca", opts->tls_ca, &len, error)) == NULL)
    return NULL;
  if (opts->tls_cert && (cert = read_named_file("tls_cert", opts->tls_cert, &len, error)) == NULL)
    return NULL;
  if (opts->tls_key && (key = read_named_file("tls_key", opts->tls_key, &len, error)) == NULL)
    return NULL;
  if (key != NULL)
    explicit_bzero(key, len);

  if (opts->spool_sync == INSP_MQTT_SPOOL_SYNC_ALWAYS)
    sflags |= INSP_SPOOL_FLAGS_FSYNC;
  else if (opts->spool_sync == INSP_MQTT_SPOOL_SYNC_BATCH)
    sflags |= INSP_SPOOL_FLAGS_SYNC_BATCH;
  {
    g_autoptr(GError) local = NULL;
    guint max_mb = opts->spool_max_mb ? opts->spool_max_mb : 100;
    spool = insp_spool_open(opts->spool_dir, (guint64)max_mb * 1024 * 1024, sflags, &local);
    if (spool == NULL) {
      g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_SPOOL, "%s", local->message);
      return NULL;
    }
  }

  mqtt = g_new0(InspMqtt, 1);
  mqtt->ref = 1;
  g_mutex_init(&mqtt->lock);
  g_mutex_init(&mqtt->drop_lock);
  mqtt->drop_pending = TRUE; /* the spool may hold drops an earlier client did not announce */
  g_cond_init(&mqtt->cond);
  mqtt->spool = spool;
  mqtt->host = g_strdup(opts->host ? opts->host : "localhost");
  mqtt->port = opts->port ? opts->port : (opts->tls_ca ? 8883 : 1883);
  mqtt->station = g_steal_pointer(&station);
  mqtt->client_id =
      opts->client_id ? g_strdup(opts->client_id) : g_strconcat("inspectd-", mqtt->station, NULL);
  mqtt->username = g_strdup(opts->username);
  mqtt->password = g_steal_pointer(&password);
  mqtt->qos = opts->qos;
  mqtt->keepalive = opts->keepalive ? opts->keepalive : 30;
  mqtt->commands = opts->commands;
  mqtt->topic_prefix = g_strdup(prefix);
  mqtt->reply_prefix =
      opts->reply_prefix && *opts->reply_prefix ? g_strdup(opts->reply_prefix) : NULL;
  insp_mqtt_rate_init(&mqtt->rate);
  mqtt->reconnect_min_s = MAX(opts->reconnect_min_s, 1u);
  mqtt->reconnect_max_s = MAX(opts->reconnect_max_s, mqtt->reconnect_min_s);
  mqtt->masks = opts->masks;
  mqtt->start_wall_us = opts->since_us > 0 ? opts->since_us : g_get_real_time();
  mqtt->context =
      context ? g_main_context_ref(context) : g_main_context_ref(g_main_context_default());
  mqtt->t_base = g_strdup_printf("%s/%s/", prefix, mqtt->station);
  mqtt->t_result = g_strdup_printf("%s/%s/result", prefix, mqtt->station);
  mqtt->t_mask = g_strdup_printf("%s/%s/mask", prefix, mqtt->station);
  mqtt->t_status = g_strdup_printf("%s/%s/status", prefix, mqtt->station);
  mqtt->t_event = g_strdup_printf("%s/%s/event", prefix, mqtt->station);
  mqtt->t_snapshot = g_strdup_printf("%s/%s/snapshot", prefix, mqtt->station);
  mqtt->t_cmd_sub = g_strdup_printf("%s/%s/cmd/+", prefix, mqtt->station);
  mqtt->t_cmd_base = g_strdup_printf("%s/%s/cmd/", prefix, mqtt->station);
  mqtt->inflight = g_hash_table_new_full(NULL, NULL, NULL, g_free);
  mqtt->ha_mids = g_hash_table_new(NULL, NULL);
  if (opts->homeassistant) {
    mqtt->homeassistant = TRUE;
    mqtt->ha_prefix = g_strdup(ha_prefix);
    mqtt->ha_sw_version = g_strdup(opts->sw_version);
    mqtt->ha_min = opts->threshold_min;
    mqtt->ha_max = opts->threshold_max;
    mqtt->ha_configs = ha_build(mqtt);
  }
  mqtt->triggers = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, pending_trigger_free);
  g_queue_init(&mqtt->events);
  g_queue_init(&mqtt->trigger_order);

  mqtt->mosq = mosquitto_new(mqtt->client_id, true, mqtt);
  if (mqtt->mosq == NULL) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_CLIENT, "cannot create the MQTT client: %s",
                g_strerror(errno));
    goto fail;
  }
  mosquitto_int_option(mqtt->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_threaded_set(mqtt->mosq, true);
  mosquitto_connect_v5_callback_set(mqtt->mosq, on_connect);
  mosquitto_disconnect_v5_callback_set(mqtt->mosq, on_disconnect);
  mosquitto_log_callback_set(mqtt->mosq, on_log);
  mosquitto_publish_v5_callback_set(mqtt->mosq, on_publish);
  mosquitto_message_v5_callback_set(mqtt->mosq, on_message);
  rc = set_will(mqtt);
  if (rc != MOSQ_ERR_SUCCESS) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_CLIENT, "cannot set the last will: %s",
                mosquitto_strerror(rc));
    goto fail;
  }
  if (mqtt->username != NULL) {
    rc = mosquitto_username_pw_set(mqtt->mosq, mqtt->username, mqtt->password);
    if (rc != MOSQ_ERR_SUCCESS) {
      g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_CLIENT, "cannot set the username: %s",
                  mosquitto_strerror(rc));
      goto fail;
    }
  }
  if (opts->tls_ca != NULL) {
    rc = mosquitto_tls_set(mqtt->mosq, opts->tls_ca, NULL, opts->tls_cert, opts->tls_key, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
      g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_FILE,
                  "TLS setup failed for tls_ca '%s'%s%s: %s", opts->tls_ca,
                  opts->tls_cert ? ", tls_cert " : "", opts->tls_cert ? opts->tls_cert : "",
                  mosquitto_strerror(rc));
      goto fail;
    }
  }
  return mqtt;

fail:
  if (mqtt->mosq)
    mosquitto_destroy(mqtt->mosq);
  mqtt->mosq = NULL;
  mqtt_unref(mqtt);
  return NULL;
}

void
insp_mqtt_set_command_handler(InspMqtt *mqtt, InspMqttCommandFunc func, gpointer user_data,
                              GDestroyNotify destroy)
{
  g_return_if_fail(mqtt != NULL && !mqtt->started);
  if (mqtt->cmd_destroy)
    mqtt->cmd_destroy(mqtt->cmd_data);
  mqtt->cmd_func = func;
  mqtt->cmd_data = user_data;
  mqtt->cmd_destroy = destroy;
}

void
insp_mqtt_set_connection_handler(InspMqtt *mqtt, InspMqttConnectionFunc func, gpointer user_data,
                                 GDestroyNotify destroy)
{
  g_return_if_fail(mqtt != NULL && !mqtt->started);
  if (mqtt->conn_destroy)
    mqtt->conn_destroy(mqtt->conn_data);
  mqtt->conn_func = func;
  mqtt->conn_data = user_data;
  mqtt->conn_destroy = destroy;
}

gboolean
insp_mqtt_start(InspMqtt *mqtt, GError **error)
{
  g_return_val_if_fail(mqtt != NULL, FALSE);
  g_return_val_if_fail(!mqtt->started, FALSE);

  mqtt->started = TRUE;
  mqtt->pump_thread = g_thread_new("insp-mqtt-pump", pump_thread, mqtt);
  mqtt->net_thread = g_thread_new("insp-mqtt-net", net_thread, mqtt);
  return TRUE;
}

gboolean
insp_mqtt_remove_homeassistant(InspMqtt *mqtt, guint timeout_ms)
{
  gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * G_TIME_SPAN_MILLISECOND;
  gboolean all = TRUE;

  g_return_val_if_fail(mqtt != NULL, FALSE);
  if (!mqtt->homeassistant)
    return TRUE;
  g_mutex_lock(&mqtt->lock);
  mqtt->ha_removed = TRUE;
  if (!mqtt->connected) {
    g_mutex_unlock(&mqtt->lock);
    return FALSE;
  }
  for (guint i = 0; i < mqtt->ha_configs->len; i++) {
    const InspMqttHaConfig *c = mqtt->ha_configs->pdata[i];
    int mid = 0;

    if (publish_locked(mqtt, &mid, c->topic, NULL, 1, TRUE, NULL) == MOSQ_ERR_SUCCESS)
      g_hash_table_add(mqtt->ha_mids, GINT_TO_POINTER(mid));
    else
      all = FALSE;
  }
  while (g_hash_table_size(mqtt->ha_mids) > 0 && mqtt->connected &&
         g_cond_wait_until(&mqtt->cond, &mqtt->lock, until))
    ;
  if (g_hash_table_size(mqtt->ha_mids) > 0)
    all = FALSE;
  g_hash_table_remove_all(mqtt->ha_mids);
  g_mutex_unlock(&mqtt->lock);
  return all;
}

void
insp_mqtt_set_threshold_range(InspMqtt *mqtt, double min, double max)
{
  g_autoptr(GPtrArray) old = NULL;

  g_return_if_fail(mqtt != NULL && min <= max);
  if (!mqtt->homeassistant)
    return;
  g_mutex_lock(&mqtt->lock);
  if (min != mqtt->ha_min || max != mqtt->ha_max) {
    mqtt->ha_min = min;
    mqtt->ha_max = max;
    old = g_steal_pointer(&mqtt->ha_configs);
    mqtt->ha_configs = ha_build(mqtt);
    if (mqtt->connected && mqtt->commands == INSP_MQTT_COMMANDS_ALL)
      publish_ha_locked(mqtt); /* HA updates the entities in place */
  }
  g_mutex_unlock(&mqtt->lock);
}

void
insp_mqtt_keep_status(InspMqtt *mqtt)
{
  g_return_if_fail(mqtt != NULL);
  g_mutex_lock(&mqtt->lock);
  mqtt->keep_status = TRUE;
  g_mutex_unlock(&mqtt->lock);
}

void
insp_mqtt_free(InspMqtt *mqtt)
{
  struct mosquitto *mosq;

  if (mqtt == NULL)
    return;
  g_mutex_lock(&mqtt->lock);
  mqtt->stopping = TRUE;
  g_cond_broadcast(&mqtt->cond);
  g_mutex_unlock(&mqtt->lock);
  if (mqtt->pump_thread)
    g_thread_join(g_steal_pointer(&mqtt->pump_thread));

  if (mqtt->net_thread) {
    gint64 until = g_get_monotonic_time() + G_USEC_PER_SEC;
    g_mutex_lock(&mqtt->lock);
    if (mqtt->connected && !mqtt->keep_status) {
      int mid = 0;
      if (publish_status_locked(mqtt, INSP_STATE_OFFLINE, &mid) == MOSQ_ERR_SUCCESS) {
        mqtt->offline_mid = mid;
        while (!mqtt->offline_acked && mqtt->connected &&
               g_cond_wait_until(&mqtt->cond, &mqtt->lock, until))
          ;
      }
    }
    /* Kept status: the will stays armed (v5 0x04), so that if the client
     * meant to say "online" next never connects (the daemon is killed in
     * between), the broker still says "offline" after the will delay; a
     * new connection with the same client id within it cancels the will. */
    gboolean with_will = mqtt->keep_status;
    g_mutex_unlock(&mqtt->lock);
    if (with_will)
      mosquitto_disconnect_v5(mqtt->mosq, MQTT_RC_DISCONNECT_WITH_WILL_MSG, NULL);
    else
      mosquitto_disconnect(mqtt->mosq);
    g_mutex_lock(&mqtt->lock);
    while (mqtt->connected && g_cond_wait_until(&mqtt->cond, &mqtt->lock, until))
      ;
    mqtt->net_stop = TRUE;
    g_cond_broadcast(&mqtt->cond);
    g_mutex_unlock(&mqtt->lock);
    g_thread_join(g_steal_pointer(&mqtt->net_thread));
  }
  g_mutex_lock(&mqtt->lock);
  mosq = g_steal_pointer(&mqtt->mosq);
  g_mutex_unlock(&mqtt->lock);
  if (mosq)
    mosquitto_destroy(mosq);
  if (mqtt->cmd_destroy)
    mqtt->cmd_destroy(mqtt->cmd_data);
  if (mqtt->conn_destroy)
    mqtt->conn_destroy(mqtt->conn_data);
  mqtt->cmd_func = NULL;
  mqtt->conn_func = NULL;
  mqtt->cmd_destroy = mqtt->conn_destroy = NULL;
  mqtt_unref(mqtt);
}

/* Says what a full spool dropped since the last time, with the seq
 * ranges: at once the first time, then at most every DROP_EVENT_US (the
 * pump calls it with em = er = 0 to flush what waited). An "error" when
 * results went, a "warning" when only masks did. While the broker is away
 * the drops add up in the spool (one range, not one event per 10 s that
 * the bounded offline event queue would lose); the journal hears of the
 * first at once. */
static void
announce_evictions(InspMqtt *mqtt, guint em, guint er)
{
  g_autoptr(JsonObject) extra = NULL;
  g_autoptr(GString) text = NULL;
  InspSpoolStats ss;
  InspSpoolDrops dr;
  gint64 now = g_get_monotonic_time();

  g_mutex_lock(&mqtt->drop_lock);
  if (er > 0)
    mqtt->result_dropped_us = now;
  if (em > 0 || er > 0)
    mqtt->drop_pending = TRUE;
  if (er > 0 && !mqtt->drop_logged) {
    mqtt->drop_logged = TRUE;
    g_warning("mqtt: the spool is full (its disk, or [spool] max_mb) and results are being "
              "dropped, the oldest first; the spool_full event will say which seqs");
  }
  if (!mqtt->drop_pending ||
      (mqtt->drop_announced_us != 0 && now - mqtt->drop_announced_us < DROP_EVENT_US)) {
    g_mutex_unlock(&mqtt->drop_lock);
    return;
  }
  g_mutex_lock(&mqtt->lock);
  gboolean up = mqtt->connected;
  g_mutex_unlock(&mqtt->lock);
  if (!up) {
    g_mutex_unlock(&mqtt->drop_lock);
    return;
  }
  mqtt->drop_logged = FALSE;
  mqtt->drop_pending = FALSE;
  mqtt->drop_announced_us = now;
  g_mutex_unlock(&mqtt->drop_lock);

  insp_spool_take_drops(mqtt->spool, &dr);
  if (dr.masks == 0 && dr.results == 0)
    return;
  insp_spool_get_stats(mqtt->spool, &ss);
  extra = json_object_new();
  json_object_set_int_member(extra, "dropped_masks", (gint64)dr.masks);
  json_object_set_int_member(extra, "dropped_results", (gint64)dr.results);
  if (dr.results > 0) {
    JsonArray *ranges = json_array_new();
    json_object_set_int_member(extra, "first_result_seq", (gint64)dr.first_result_seq);
    json_object_set_int_member(extra, "last_result_seq", (gint64)dr.last_result_seq);
    for (guint i = 0; i < dr.n_ranges; i++) {
      JsonArray *r = json_array_new();
      json_array_add_int_element(r, (gint64)dr.ranges[i][0]);
      json_array_add_int_element(r, (gint64)dr.ranges[i][1]);
      json_array_add_array_element(ranges, r);
    }
    json_object_set_array_member(extra, "dropped_result_seqs", ranges);
    if (dr.ranges_merged)
      json_object_set_boolean_member(extra, "dropped_result_seqs_merged", TRUE);
  }
  if (dr.masks > 0) {
    json_object_set_int_member(extra, "first_mask_seq", (gint64)dr.first_mask_seq);
    json_object_set_int_member(extra, "last_mask_seq", (gint64)dr.last_mask_seq);
  }
  json_object_set_int_member(extra, "total_dropped_masks", (gint64)ss.dropped_masks);
  json_object_set_int_member(extra, "total_dropped_results", (gint64)ss.dropped_results);
  text = g_string_new("spool full (its disk, or [spool] max_mb): dropped ");
  if (dr.results > 0) {
    g_string_append_printf(text, "%" G_GUINT64_FORMAT " result(s), seq ", dr.results);
    for (guint i = 0; i < dr.n_ranges && i < 8; i++)
      g_string_append_printf(text, "%s%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT, i ? ", " : "",
                             dr.ranges[i][0], dr.ranges[i][1]);
    if (dr.n_ranges > 8)
      g_string_append_printf(text, " and %u more ranges (dropped_result_seqs)", dr.n_ranges - 8);
    g_string_append(text, dr.masks > 0 ? "; and " : "");
  }
  if (dr.masks > 0)
    g_string_append_printf(text,
                           "%" G_GUINT64_FORMAT " mask(s) between seq %" G_GUINT64_FORMAT
                           " and %" G_GUINT64_FORMAT,
                           dr.masks, dr.first_mask_seq, dr.last_mask_seq);
  if (dr.results > 0)
    g_warning("mqtt: %s; the oldest results go first once no mask is left", text->str);
  else
    g_info("mqtt: %s (masks go first, every result is kept)", text->str);
  insp_mqtt_publish_event(mqtt, dr.results > 0 ? "error" : "warning", "spool_full", text->str,
                          extra);
}

/* Spools one message, or with QoS 0, an idle spool and a connection, sends
 * it at once. */
static gboolean
enqueue(InspMqtt *mqtt, InspSpoolMessage *m, GError **error)
{
  guint em = 0, er = 0;
  guint64 id;

  if (m->qos == 0) {
    InspSpoolStats ss;
    gboolean sent = FALSE;
    insp_spool_get_stats(mqtt->spool, &ss);
    g_mutex_lock(&mqtt->lock);
    if (mqtt->connected && !mqtt->barrier && ss.n_messages == 0) {
      mosquitto_property *props = NULL;
      props_for_spooled(m, &props);
      sent = publish_locked(mqtt, NULL, m->topic, m->payload, 0, FALSE, props) == MOSQ_ERR_SUCCESS;
      mosquitto_property_free_all(&props);
    }
    g_mutex_unlock(&mqtt->lock);
    if (sent)
      return TRUE;
  }
  id = insp_spool_push(mqtt->spool, m, &em, &er, error);
  announce_evictions(mqtt, em, er);
  g_mutex_lock(&mqtt->lock);
  kick_locked(mqtt);
  g_mutex_unlock(&mqtt->lock);
  if (id == 0 && error != NULL && *error != NULL) {
    g_prefix_error(error, "result %" G_GUINT64_FORMAT " not spooled: ", m->seq);
    (*error)->domain = INSP_MQTT_ERROR;
    (*error)->code = INSP_MQTT_ERROR_SPOOL;
    return FALSE;
  }
  return TRUE;
}

/* ---------- the PLC handshake: every trigger answered once ---------- */

/* The route of trigger @id, removed from the table; NULL when unknown. */
static PendingTrigger *
take_trigger_locked(InspMqtt *mqtt, guint64 id)
{
  PendingTrigger *t = NULL;

  if (!g_hash_table_steal_extended(mqtt->triggers, &id, NULL, (gpointer *)&t))
    return NULL;
  g_queue_remove(&mqtt->trigger_order, t);
  return t;
}

/* {"ok":false,"error":@message,"part_id":...} on @t's route, QoS >= 1. */
static void
send_trigger_failure(InspMqtt *mqtt, PendingTrigger *t, const char *message)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autoptr(GBytes) payload = NULL;
  mosquitto_property *props = NULL;

  json_object_set_boolean_member(o, "ok", FALSE);
  json_object_set_string_member(o, "error", message);
  json_object_set_string_member(o, "part_id", t->part_id);
  payload = insp_mqtt_json_object_to_bytes(o);
  insp_mqtt_props_json(&props, t->correlation);
  g_mutex_lock(&mqtt->lock);
  publish_locked(mqtt, NULL, t->topic, payload, MAX(mqtt->qos, 1), FALSE, props);
  g_mutex_unlock(&mqtt->lock);
  mosquitto_property_free_all(&props);
}

void
insp_mqtt_command_reply_trigger(InspMqtt *mqtt, InspMqttCommand *cmd, const char *part_id,
                                guint64 trigger_id)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autoptr(GBytes) payload = NULL;
  PendingTrigger *evicted = NULL;

  g_return_if_fail(mqtt != NULL && cmd != NULL && part_id != NULL);
  g_return_if_fail(cmd->kind == INSP_MQTT_COMMAND_TRIGGER);
  if (!g_atomic_int_compare_and_exchange(&cmd->replied, 0, 1)) {
    g_debug("mqtt: command %s answered twice", cmd->name);
    return;
  }
  json_object_set_string_member(o, "part_id", part_id);
  if (trigger_id != 0) {
    PendingTrigger *t = g_new0(PendingTrigger, 1);
    t->id = trigger_id;
    t->topic = cmd->response_topic ? g_strdup(cmd->response_topic)
                                   : g_strconcat(mqtt->t_cmd_base, cmd->name, "/reply", NULL);
    t->correlation = cmd->correlation ? g_bytes_ref(cmd->correlation) : NULL;
    t->part_id = g_strdup(part_id);
    g_mutex_lock(&mqtt->lock);
    PendingTrigger *old = take_trigger_locked(mqtt, trigger_id);
    if (old != NULL)
      pending_trigger_free(old); /* the caller reused an id: the newer one wins */
    g_hash_table_insert(mqtt->triggers, &t->id, t);
    g_queue_push_tail(&mqtt->trigger_order, t);
    if (mqtt->trigger_order.length > TRIGGER_MAP_MAX)
      evicted = take_trigger_locked(mqtt, ((PendingTrigger *)mqtt->trigger_order.head->data)->id);
    g_mutex_unlock(&mqtt->lock);
  }
  payload = insp_mqtt_reply_payload(o, NULL);
  send_reply(mqtt, cmd, payload);
  if (evicted != NULL) {
    send_trigger_failure(mqtt, evicted, "too many triggers waiting for their part");
    pending_trigger_free(evicted);
  }
}

gboolean
insp_mqtt_trigger_fail(InspMqtt *mqtt, guint64 trigger_id, const char *message)
{
  PendingTrigger *t;

  g_return_val_if_fail(mqtt != NULL && message != NULL, FALSE);
  g_mutex_lock(&mqtt->lock);
  t = take_trigger_locked(mqtt, trigger_id);
  g_mutex_unlock(&mqtt->lock);
  if (t == NULL)
    return FALSE;
  send_trigger_failure(mqtt, t, message);
  pending_trigger_free(t);
  return TRUE;
}

guint
insp_mqtt_trigger_fail_all(InspMqtt *mqtt, const char *message)
{
  GQueue all = G_QUEUE_INIT;
  guint n = 0;

  g_return_val_if_fail(mqtt != NULL && message != NULL, 0);
  g_mutex_lock(&mqtt->lock);
  while (mqtt->trigger_order.length > 0)
    g_queue_push_tail(
        &all, take_trigger_locked(mqtt, ((PendingTrigger *)mqtt->trigger_order.head->data)->id));
  g_mutex_unlock(&mqtt->lock);
  for (PendingTrigger *t; (t = g_queue_pop_head(&all)) != NULL; n++) {
    send_trigger_failure(mqtt, t, message);
    pending_trigger_free(t);
  }
  return n;
}

gboolean
insp_mqtt_publish_result(InspMqtt *mqtt, const InspPart *result, GError **error)
{
  g_autofree char *part = NULL;
  InspSpoolMessage m = {0};
  PendingTrigger *pt = NULL;
  InspMqttMasks policy;
  gboolean ok;
  g_autoptr(GBytes) payload = NULL;

  g_return_val_if_fail(mqtt != NULL && result != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  payload = insp_mqtt_result_payload(result, mqtt->station);
  part = result->part_id ? g_strdup(result->part_id)
                         : g_strdup_printf("%" G_GUINT64_FORMAT, result->seq);
  if (strlen(part) > 1024)
    part[1024] = '\0';

  m.kind = INSP_SPOOL_KIND_RESULT;
  m.seq = result->seq;
  m.qos = mqtt->qos;
  m.topic = mqtt->t_result;
  m.part_id = part;
  m.payload = payload;
  ok = enqueue(mqtt, &m, error);

  if (result->trigger_id != 0) {
    g_mutex_lock(&mqtt->lock);
    pt = take_trigger_locked(mqtt, result->trigger_id);
    g_mutex_unlock(&mqtt->lock);
  }
  if (pt != NULL) {
    InspSpoolMessage r = m;
    r.kind = INSP_SPOOL_KIND_REPLY;
    r.qos = MAX(mqtt->qos, 1);
    r.topic = pt->topic;
    r.correlation = pt->correlation;
    if (!enqueue(mqtt, &r, ok ? error : NULL))
      ok = FALSE;
    pending_trigger_free(pt);
  }

  policy = (InspMqttMasks)g_atomic_int_get(&mqtt->masks);
  if (result->mask_png != NULL &&
      (policy == INSP_MQTT_MASKS_ALL || (policy == INSP_MQTT_MASKS_FAIL && result->fail))) {
    InspSpoolMessage k = m;
    k.kind = INSP_SPOOL_KIND_MASK;
    k.topic = mqtt->t_mask;
    k.payload = result->mask_png;
    if (!enqueue(mqtt, &k, ok ? error : NULL))
      ok = FALSE;
  }
  return ok;
}

void
insp_mqtt_publish_status(InspMqtt *mqtt, const InspStatus *status)
{
  g_return_if_fail(mqtt != NULL && status != NULL);
  g_return_if_fail(status->state <= INSP_STATE_OFFLINE);

  g_mutex_lock(&mqtt->lock);
  mqtt->status = *status;
  mqtt->status.model = NULL;
  g_free(mqtt->status_model);
  mqtt->status_model = g_strdup(status->model);
  mqtt->have_status = TRUE;
  if (mqtt->connected)
    publish_status_locked(mqtt, status->state, NULL);
  g_mutex_unlock(&mqtt->lock);
}

void
insp_mqtt_publish_event(InspMqtt *mqtt, const char *level, const char *code, const char *message,
                        JsonObject *extra)
{
  g_autoptr(GBytes) payload = NULL;

  g_return_if_fail(mqtt != NULL && level != NULL && code != NULL && message != NULL);
  payload = insp_mqtt_event_payload(mqtt->station, level, code, message, extra);
  g_mutex_lock(&mqtt->lock);
  send_event_locked(mqtt, payload);
  g_mutex_unlock(&mqtt->lock);
}

void
insp_mqtt_publish_snapshot(InspMqtt *mqtt, guint64 seq, const char *part_id, GBytes *image_png,
                           GBytes *map_png)
{
  GBytes *parts[2] = {image_png, map_png};
  static const char *const kinds[2] = {"image", "anomaly_map"};

  g_return_if_fail(mqtt != NULL);
  g_mutex_lock(&mqtt->lock);
  for (int i = 0; i < 2; i++) {
    mosquitto_property *props = NULL;
    if (parts[i] == NULL)
      continue;
    insp_mqtt_props_png(&props, seq, part_id, kinds[i]);
    if (mqtt->connected)
      publish_locked(mqtt, NULL, mqtt->t_snapshot, parts[i], 1, FALSE, props);
    mosquitto_property_free_all(&props);
  }
  g_mutex_unlock(&mqtt->lock);
}

void
insp_mqtt_set_masks(InspMqtt *mqtt, InspMqttMasks masks)
{
  g_return_if_fail(mqtt != NULL);
  g_return_if_fail(masks <= INSP_MQTT_MASKS_NONE);
  g_atomic_int_set(&mqtt->masks, (gint)masks);
}

void
insp_mqtt_command_reply(InspMqtt *mqtt, InspMqttCommand *cmd, JsonObject *fields)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autoptr(GBytes) payload = NULL;

  g_return_if_fail(mqtt != NULL && cmd != NULL);
  if (!g_atomic_int_compare_and_exchange(&cmd->replied, 0, 1)) {
    g_debug("mqtt: command %s answered twice", cmd->name);
    return;
  }
  insp_mqtt_json_object_merge(o, fields);
  payload = insp_mqtt_reply_payload(o, NULL);
  send_reply(mqtt, cmd, payload);
}

void
insp_mqtt_command_reply_error(InspMqtt *mqtt, InspMqttCommand *cmd, const char *message)
{
  g_return_if_fail(mqtt != NULL && cmd != NULL && message != NULL);
  if (!g_atomic_int_compare_and_exchange(&cmd->replied, 0, 1)) {
    g_debug("mqtt: command %s answered twice", cmd->name);
    return;
  }
  reply_error_raw(mqtt, cmd, message);
}

void
insp_mqtt_get_stats(InspMqtt *mqtt, InspMqttStats *stats)
{
  InspSpoolStats ss;

  g_return_if_fail(mqtt != NULL && stats != NULL);
  insp_spool_get_stats(mqtt->spool, &ss);
  g_mutex_lock(&mqtt->lock);
  stats->connected = mqtt->connected;
  stats->last_reason = mqtt->last_reason;
  stats->published = mqtt->published;
  stats->rejected = mqtt->rejected;
  stats->events_dropped = mqtt->events_dropped;
  stats->commands = mqtt->n_commands;
  g_mutex_unlock(&mqtt->lock);
  stats->spooled = ss.n_messages;
  stats->spool_bytes = ss.bytes;
  stats->dropped_masks = ss.dropped_masks;
  stats->dropped_results = ss.dropped_results;
  g_mutex_lock(&mqtt->drop_lock);
  stats->result_dropped_us = mqtt->result_dropped_us;
  g_mutex_unlock(&mqtt->drop_lock);
}
