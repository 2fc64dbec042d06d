/* insp-daemon-mqtt: the daemon's side of the MQTT client: fills
 * InspMqttOptions from the config, turns results and commands into the plain
 * values of insp-daemon-private.h, so that insp-daemon.c deals with the
 * pipeline and this file alone with the MQTT module's types.
 * Threads: new/free and the command/connection callbacks on the main
 * context; publish/status/event from any thread (the MQTT module allows it). */
#define G_LOG_DOMAIN "inspectd"
#include "insp-daemon-private.h"

#include "insp-mqtt.h"

typedef struct {
  InspDaemonCmdFunc cmd_func;
  InspDaemonConnFunc conn_func;
  gpointer user_data;
} Handlers;

static void
on_command(InspMqtt *mqtt, InspMqttCommand *cmd, gpointer user_data)
{
  Handlers *h = user_data;
  InspDaemonCmd c = {.cmd = cmd};

  switch (insp_mqtt_command_get_kind(cmd)) {
  case INSP_MQTT_COMMAND_TRIGGER:
    c.kind = INSP_DAEMON_CMD_TRIGGER;
    c.part_id = insp_mqtt_command_get_part_id(cmd);
    break;
  case INSP_MQTT_COMMAND_THRESHOLD:
    c.kind = INSP_DAEMON_CMD_THRESHOLD;
    c.has_threshold = insp_mqtt_command_get_threshold(cmd, &c.threshold);
    c.has_pixel_threshold = insp_mqtt_command_get_pixel_threshold(cmd, &c.pixel_threshold);
    break;
  case INSP_MQTT_COMMAND_RELOAD:
    c.kind = INSP_DAEMON_CMD_RELOAD;
    break;
  case INSP_MQTT_COMMAND_SNAPSHOT:
    c.kind = INSP_DAEMON_CMD_SNAPSHOT;
    break;
  default:
    insp_mqtt_command_reply_error(mqtt, cmd, "unknown command");
    return;
  }
  h->cmd_func(&c, h->user_data);
}

static void
on_connection(InspMqtt *mqtt, gboolean connected, int reason, const char *message,
              gpointer user_data)
{
  Handlers *h = user_data;

  h->conn_func(connected, message, h->user_data);
}

static const char *
nonempty(const char *s)
{
  return s && *s ? s : NULL;
}

InspMqtt *
insp_daemon_mqtt_new(const InspConfig *config, const char *station, const char *spool_dir,
                     GMainContext *context, InspDaemonCmdFunc cmd_func,
                     InspDaemonConnFunc conn_func, gpointer user_data, GError **error)
{
  InspMqttOptions o;
  Handlers *h;

  insp_mqtt_options_init(&o);
  o.host = nonempty(config->mqtt.host);
  o.port = config->mqtt.port;
  o.client_id = nonempty(config->mqtt.client_id);
  o.username = nonempty(config->mqtt.username);
  o.password_file = nonempty(config->mqtt.password_file);
  o.tls_ca = nonempty(config->mqtt.tls_ca);
  o.tls_cert = nonempty(config->mqtt.tls_cert);
  o.tls_key = nonempty(config->mqtt.tls_key);
  o.qos = config->mqtt.qos;
  o.keepalive = config->mqtt.keepalive;
  o.topic_prefix = nonempty(config->mqtt.topic_prefix);
  o.station = station;
  o.masks = config->mqtt.masks == INSP_CONFIG_MASKS_ALL    ? INSP_MQTT_MASKS_ALL
            : config->mqtt.masks == INSP_CONFIG_MASKS_NONE ? INSP_MQTT_MASKS_NONE
                                                           : INSP_MQTT_MASKS_FAIL;
  o.commands = config->mqtt.commands == INSP_CONFIG_COMMANDS_ALL       ? INSP_MQTT_COMMANDS_ALL
               : config->mqtt.commands == INSP_CONFIG_COMMANDS_TRIGGER ? INSP_MQTT_COMMANDS_TRIGGER
                                                                       : INSP_MQTT_COMMANDS_NONE;
  o.reply_prefix = nonempty(config->mqtt.reply_prefix);
  o.spool_dir = spool_dir ? spool_dir : config->spool.dir;
  o.spool_max_mb = (guint)MAX(config->spool.max_mb, 1);

  g_autoptr(InspMqtt) mqtt = insp_mqtt_new(&o, context, error);
  if (mqtt == NULL)
    return NULL;
  h = g_new0(Handlers, 1);
  h->cmd_func = cmd_func;
  h->conn_func = conn_func;
  h->user_data = user_data;
  insp_mqtt_set_command_handler(mqtt, on_command, h, g_free);
  insp_mqtt_set_connection_handler(mqtt, on_connection, h, NULL);
  if (!insp_mqtt_start(mqtt, error))
    return NULL;
  return g_steal_pointer(&mqtt);
}

void
insp_daemon_mqtt_free(InspMqtt *mqtt)
{
  insp_mqtt_free(mqtt);
}

gboolean
insp_daemon_mqtt_publish(InspMqtt *mqtt, const InspDaemonVerdict *v, GBytes *mask_png,
                         GError **error)
{
  InspPartResult r = {
      .seq = v->seq,
      .part_id = v->part_id,
      .capture_time_us = v->capture_time_us,
      .fail = v->fail,
      .score = v->score,
      .threshold = v->threshold,
      .model = v->model,
      .latency_ms = v->latency_ms,
      .regions = v->regions,
      .n_regions = v->n_regions,
  };
  return insp_mqtt_publish_result(mqtt, &r, mask_png, error);
}

void
insp_daemon_mqtt_status(InspMqtt *mqtt, gboolean degraded, const char *model, double threshold,
                        double fps, guint64 frames, guint64 dropped, guint64 pass, guint64 fail)
{
  InspMqttStatus s = {
      .state = degraded ? INSP_MQTT_STATE_DEGRADED : INSP_MQTT_STATE_ONLINE,
      .model = model,
      .threshold = threshold,
      .fps = fps,
      .frames = frames,
      .dropped = dropped,
      .pass = pass,
      .fail = fail,
  };
  insp_mqtt_publish_status(mqtt, &s);
}

void
insp_daemon_mqtt_event(InspMqtt *mqtt, const char *level, const char *code, const char *message)
{
  insp_mqtt_publish_event(mqtt, level, code, message, NULL);
}

void
insp_daemon_mqtt_snapshot(InspMqtt *mqtt, guint64 seq, const char *part_id, GBytes *image,
                          GBytes *map)
{
  insp_mqtt_publish_snapshot(mqtt, seq, part_id, image, map);
}

void
insp_daemon_mqtt_set_masks(InspMqtt *mqtt, InspConfigMasks masks)
{
  insp_mqtt_set_masks(mqtt, masks == INSP_CONFIG_MASKS_ALL    ? INSP_MQTT_MASKS_ALL
                            : masks == INSP_CONFIG_MASKS_NONE ? INSP_MQTT_MASKS_NONE
                                                              : INSP_MQTT_MASKS_FAIL);
}

guint
insp_daemon_mqtt_pending(InspMqtt *mqtt, gboolean *connected)
{
  InspMqttStats st = {0};

  insp_mqtt_get_stats(mqtt, &st);
  if (connected)
    *connected = st.connected;
  return st.spooled;
}

void
insp_daemon_mqtt_reply(InspMqtt *mqtt, InspMqttCommand *cmd, const char *key1, const char *string1,
                       const char *key2, double number2)
{
  g_autoptr(JsonObject) o = json_object_new();

  if (key1)
    json_object_set_string_member(o, key1, string1);
  if (key2)
    json_object_set_double_member(o, key2, number2);
  insp_mqtt_command_reply(mqtt, cmd, o);
}

void
insp_daemon_mqtt_reply_error(InspMqtt *mqtt, InspMqttCommand *cmd, const char *message)
{
  insp_mqtt_command_reply_error(mqtt, cmd, message);
}

InspMqttCommand *
insp_daemon_mqtt_command_ref(InspMqttCommand *cmd)
{
  return insp_mqtt_command_ref(cmd);
}

void
insp_daemon_mqtt_command_unref(InspMqttCommand *cmd)
{
  insp_mqtt_command_unref(cmd);
}
