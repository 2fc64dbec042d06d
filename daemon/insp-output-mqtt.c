/* The MQTT output: the part record, the status and events handed to the
 * MQTT library (daemon/mqtt/), whose client is created from the config here.
 * Threads: as InspOutput (insp-output.h); the library allows any thread. */
#define G_LOG_DOMAIN "inspectd"
#include "insp-outputs.h"

#include <sys/stat.h>

#include "insp-daemon-config.h"
#include "insp-log.h"

typedef struct {
  InspOutput parent;
  InspMqtt *mqtt;
} OutputMqtt;

static void
mqtt_part(InspOutput *out, InspPart *part)
{
  OutputMqtt *o = (OutputMqtt *)out;
  g_autoptr(GError) error = NULL;

  if (!insp_mqtt_publish_result(o->mqtt, part, &error))
    insp_log_part(G_LOG_LEVEL_WARNING, part->seq, part->part_id,
                  "result not published or spooled: %s", error->message);
  if (part->image_png != NULL || part->map_png != NULL)
    insp_mqtt_publish_snapshot(o->mqtt, part->seq, part->part_id, part->image_png, part->map_png);
}

static void
mqtt_status(InspOutput *out, const InspStatus *status)
{
  insp_mqtt_publish_status(((OutputMqtt *)out)->mqtt, status);
}

static void
mqtt_event(InspOutput *out, const InspEvent *ev)
{
  g_autoptr(JsonObject) extra = json_object_new();

  if (ev->part_id != NULL)
    json_object_set_string_member(extra, "part_id", ev->part_id);
  if (ev->part_id != NULL && !ev->has_seq) {
    json_object_set_null_member(extra, "seq"); /* about a part that got none */
  } else if (ev->has_seq && ev->seq_first == ev->seq_last) {
    json_object_set_int_member(extra, "seq", (gint64)ev->seq_first);
  } else if (ev->has_seq) {
    json_object_set_int_member(extra, "seq_first", (gint64)ev->seq_first);
    json_object_set_int_member(extra, "seq_last", (gint64)ev->seq_last);
  }
  insp_mqtt_publish_event(((OutputMqtt *)out)->mqtt, ev->level, ev->code, ev->message, extra);
}

static void
mqtt_trigger_failed(InspOutput *out, guint64 trigger_id, const char *message)
{
  insp_mqtt_trigger_fail(((OutputMqtt *)out)->mqtt, trigger_id, message);
}

static void
mqtt_close(InspOutput *out)
{
  OutputMqtt *o = (OutputMqtt *)out;

  insp_mqtt_free(o->mqtt);
  g_free(o);
}

static const InspOutputClass mqtt_class = {
    .name = "mqtt",
    .part = mqtt_part,
    .status = mqtt_status,
    .event = mqtt_event,
    .trigger_failed = mqtt_trigger_failed,
    .close = mqtt_close,
};

static const char *
nonempty(const char *s)
{
  return s && *s ? s : NULL;
}

static InspMqttMasks
masks_from_config(InspConfigMasks masks)
{
  return masks == INSP_CONFIG_MASKS_ALL    ? INSP_MQTT_MASKS_ALL
         : masks == INSP_CONFIG_MASKS_NONE ? INSP_MQTT_MASKS_NONE
                                           : INSP_MQTT_MASKS_FAIL;
}

/* The broker password protects who may command the line: said once, at
 * start and reload, when others than its owner can read it. */
static void
check_password_file(const char *path)
{
  struct stat st;

  if (path == NULL || stat(path, &st) != 0)
    return; /* unreadable: the client's error names it */
  if ((st.st_mode & 077) != 0)
    g_warning("[mqtt] password_file %s can be read by its group or by others (mode %04o): "
              "chmod 600 it (or 640 with a group only the daemon is in)",
              path, (unsigned)(st.st_mode & 07777));
}

InspOutput *
insp_output_mqtt_new(const InspConfig *config, const char *station, gint64 since_us,
                     GMainContext *context, InspMqttCommandFunc cmd_func,
                     InspMqttConnectionFunc conn_func, gpointer user_data, GError **error)
{
  InspMqttOptions opt;
  OutputMqtt *o;

  g_return_val_if_fail(config != NULL && station != NULL, NULL);
  insp_mqtt_options_init(&opt);
  opt.host = nonempty(config->mqtt.host);
  opt.port = config->mqtt.port;
  opt.client_id = nonempty(config->mqtt.client_id);
  opt.username = nonempty(config->mqtt.username);
  opt.password_file = nonempty(config->mqtt.password_file);
  opt.tls_ca = nonempty(config->mqtt.tls_ca);
  opt.tls_cert = nonempty(config->mqtt.tls_cert);
  opt.tls_key = nonempty(config->mqtt.tls_key);
  opt.qos = config->mqtt.qos;
  opt.keepalive = config->mqtt.keepalive;
  opt.topic_prefix = nonempty(config->mqtt.topic_prefix);
  opt.station = station;
  opt.masks = masks_from_config(config->mqtt.masks);
  opt.commands = config->mqtt.commands == INSP_CONFIG_COMMANDS_ALL ? INSP_MQTT_COMMANDS_ALL
                 : config->mqtt.commands == INSP_CONFIG_COMMANDS_TRIGGER
                     ? INSP_MQTT_COMMANDS_TRIGGER
                     : INSP_MQTT_COMMANDS_NONE;
  opt.reply_prefix = nonempty(config->mqtt.reply_prefix);
  opt.homeassistant = config->mqtt.homeassistant;
  opt.homeassistant_prefix = nonempty(config->mqtt.homeassistant_prefix);
  opt.threshold_min = config->inspection.threshold_min;
  opt.threshold_max = config->inspection.threshold_max;
  opt.sw_version = INSP_VERSION;
  opt.since_us = since_us;
  opt.spool_dir = config->spool.dir;
  opt.spool_max_mb = (guint)MAX(config->spool.max_mb, 1);
  opt.spool_sync = config->spool.sync == INSP_CONFIG_SPOOL_SYNC_ALWAYS ? INSP_MQTT_SPOOL_SYNC_ALWAYS
                   : config->spool.sync == INSP_CONFIG_SPOOL_SYNC_NEVER
                       ? INSP_MQTT_SPOOL_SYNC_NEVER
                       : INSP_MQTT_SPOOL_SYNC_BATCH;

  check_password_file(opt.password_file);
  g_autoptr(InspMqtt) mqtt = insp_mqtt_new(&opt, context, error);
  if (mqtt == NULL)
    return NULL;
  insp_mqtt_set_command_handler(mqtt, cmd_func, user_data, NULL);
  insp_mqtt_set_connection_handler(mqtt, conn_func, user_data, NULL);
  if (!insp_mqtt_start(mqtt, error))
    return NULL;
  o = g_new0(OutputMqtt, 1);
  o->parent.klass = &mqtt_class;
  o->mqtt = g_steal_pointer(&mqtt);
  return &o->parent;
}

InspMqtt *
insp_output_mqtt_get_client(InspOutput *out)
{
  g_return_val_if_fail(out != NULL && out->klass == &mqtt_class, NULL);
  return ((OutputMqtt *)out)->mqtt;
}

void
insp_output_mqtt_set_masks(InspOutput *out, InspConfigMasks masks)
{
  g_return_if_fail(out != NULL && out->klass == &mqtt_class);
  insp_mqtt_set_masks(((OutputMqtt *)out)->mqtt, masks_from_config(masks));
}
