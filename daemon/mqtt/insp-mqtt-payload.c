/* The payloads of the MQTT contract (DESIGN.md): the JSON of result, status,
 * event and command replies, the Home Assistant discovery configs, and the
 * MQTT v5 properties that go with each.
 * Invariants: key names and order are fixed; numbers are written in their
 * shortest form (insp-json.c); NaN/inf are written as null, which JSON can
 * carry and consumers can detect.
 * Threads: any; no state. */
#include "insp-mqtt-private.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <mqtt_protocol.h>

#include "insp-json.h"

char *
insp_mqtt_format_time(gint64 unix_us)
{
  gint64 secs = unix_us / G_USEC_PER_SEC, rem = unix_us % G_USEC_PER_SEC;
  g_autoptr(GDateTime) dt = NULL;
  g_autofree char *base = NULL;

  if (rem < 0) {
    rem += G_USEC_PER_SEC;
    secs--;
  }
  dt = g_date_time_new_from_unix_utc(secs);
  if (dt == NULL)
    return g_strdup("1970-01-01T00:00:00.000Z");
  base = g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S");
  return g_strdup_printf("%s.%03dZ", base, (int)(rem / 1000));
}

GBytes *
insp_mqtt_json_object_to_bytes(JsonObject *obj)
{
  g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
  gsize len = 0;
  char *data;

  json_node_set_object(node, obj);
  data = insp_json_to_data(node, &len);
  return g_bytes_new_take(data, len);
}

static void
obj_set_double(JsonObject *o, const char *key, double v)
{
  if (isfinite(v))
    json_object_set_double_member(o, key, v);
  else
    json_object_set_null_member(o, key);
}

void
insp_mqtt_json_object_merge(JsonObject *dst, JsonObject *src)
{
  g_autoptr(GList) members = NULL;

  if (src == NULL)
    return;
  members = json_object_get_members(src);
  for (GList *l = members; l != NULL; l = l->next) {
    const char *k = l->data;
    if (json_object_has_member(dst, k))
      continue; /* the fixed keys win */
    json_object_set_member(dst, k, json_node_copy(json_object_get_member(src, k)));
  }
}

static void
add_double(JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name(b, key);
  if (isfinite(v))
    json_builder_add_double_value(b, v);
  else
    json_builder_add_null_value(b);
}

GBytes *
insp_mqtt_result_payload(const InspPart *r, const char *station)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *ts = NULL;
  g_autofree char *seq_str = NULL;
  gsize len = 0;
  char *data;

  g_return_val_if_fail(r != NULL && station != NULL, NULL);
  g_return_val_if_fail(r->n_regions == 0 || r->regions != NULL, NULL);

  ts = insp_mqtt_format_time(r->capture_time_us);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "v");
  json_builder_add_int_value(b, 1);
  json_builder_set_member_name(b, "station");
  json_builder_add_string_value(b, station);
  json_builder_set_member_name(b, "seq");
  json_builder_add_int_value(b, (gint64)r->seq);
  json_builder_set_member_name(b, "part_id");
  if (r->part_id != NULL) {
    json_builder_add_string_value(b, r->part_id);
  } else {
    seq_str = g_strdup_printf("%" G_GUINT64_FORMAT, r->seq);
    json_builder_add_string_value(b, seq_str);
  }
  json_builder_set_member_name(b, "ts");
  json_builder_add_string_value(b, ts);
  json_builder_set_member_name(b, "verdict");
  json_builder_add_string_value(b, r->fail ? "fail" : "pass");
  add_double(b, "score", r->score);
  add_double(b, "threshold", r->threshold);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, r->model ? r->model : "");
  add_double(b, "latency_ms", r->latency_ms);
  json_builder_set_member_name(b, "regions");
  json_builder_begin_array(b);
  for (gsize i = 0; i < r->n_regions; i++) {
    const InspRegion *g = &r->regions[i];
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "x");
    json_builder_add_int_value(b, g->x);
    json_builder_set_member_name(b, "y");
    json_builder_add_int_value(b, g->y);
    json_builder_set_member_name(b, "w");
    json_builder_add_int_value(b, g->w);
    json_builder_set_member_name(b, "h");
    json_builder_add_int_value(b, g->h);
    json_builder_set_member_name(b, "area");
    json_builder_add_int_value(b, g->area);
    add_double(b, "score", g->score);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);

  root = json_builder_get_root(b);
  data = insp_json_to_data(root, &len);
  return g_bytes_new_take(data, len);
}

GBytes *
insp_mqtt_status_payload(const InspStatus *s, InspState state, const char *station, guint spooled,
                         gint64 uptime_s)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autofree char *ts = insp_mqtt_format_time(g_get_real_time());

  g_return_val_if_fail(s != NULL && station != NULL, NULL);
  json_object_set_int_member(o, "v", 1);
  json_object_set_string_member(o, "station", station);
  json_object_set_string_member(o, "ts", ts);
  json_object_set_string_member(o, "state", insp_state_to_string(state));
  if (s->model != NULL)
    json_object_set_string_member(o, "model", s->model);
  else
    json_object_set_null_member(o, "model");
  obj_set_double(o, "threshold", s->threshold);
  obj_set_double(o, "fps", s->fps);
  json_object_set_int_member(o, "frames", (gint64)s->frames);
  json_object_set_int_member(o, "dropped", (gint64)s->dropped);
  json_object_set_int_member(o, "pass", (gint64)s->pass);
  json_object_set_int_member(o, "fail", (gint64)s->fail);
  json_object_set_int_member(o, "triggers", (gint64)s->triggers);
  json_object_set_int_member(o, "trigger_timeouts", (gint64)s->trigger_timeouts);
  json_object_set_int_member(o, "trigger_failures", (gint64)s->trigger_failures);
  json_object_set_int_member(o, "rejected", (gint64)s->rejected);
  json_object_set_int_member(o, "spool_dropped_results", (gint64)s->spool_dropped_results);
  json_object_set_int_member(o, "spool_dropped_masks", (gint64)s->spool_dropped_masks);
  json_object_set_int_member(o, "spooled", spooled);
  json_object_set_int_member(o, "uptime", uptime_s);
  {
    g_autofree char *since = insp_mqtt_format_time(s->since_us);
    json_object_set_string_member(o, "since", since);
  }
  return insp_mqtt_json_object_to_bytes(o);
}

GBytes *
insp_mqtt_will_payload(const char *station, gint64 ts_us)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autofree char *ts = insp_mqtt_format_time(ts_us);

  g_return_val_if_fail(station != NULL, NULL);
  json_object_set_int_member(o, "v", 1);
  json_object_set_string_member(o, "station", station);
  json_object_set_string_member(o, "ts", ts);
  json_object_set_string_member(o, "state", insp_state_to_string(INSP_STATE_OFFLINE));
  return insp_mqtt_json_object_to_bytes(o);
}

GBytes *
insp_mqtt_event_payload(const char *station, const char *level, const char *code,
                        const char *message, JsonObject *extra)
{
  g_autoptr(JsonObject) o = json_object_new();
  g_autofree char *ts = insp_mqtt_format_time(g_get_real_time());

  json_object_set_int_member(o, "v", 1);
  json_object_set_string_member(o, "station", station);
  json_object_set_string_member(o, "ts", ts);
  json_object_set_string_member(o, "level", level);
  json_object_set_string_member(o, "code", code);
  json_object_set_string_member(o, "message", message);
  insp_mqtt_json_object_merge(o, extra);
  return insp_mqtt_json_object_to_bytes(o);
}

GBytes *
insp_mqtt_reply_payload(JsonObject *fields, const char *error_message)
{
  g_autoptr(JsonObject) o = json_object_new();

  json_object_set_boolean_member(o, "ok", error_message == NULL);
  if (error_message != NULL)
    json_object_set_string_member(o, "error", error_message);
  else
    insp_mqtt_json_object_merge(o, fields);
  return insp_mqtt_json_object_to_bytes(o);
}

/* ---------- Home Assistant MQTT discovery ---------- */

/* HA's schema (home-assistant.io/integrations/mqtt, and each platform's
 * page): availability is a list of {topic, payload_available,
 * payload_not_available, value_template}; the template's result is compared
 * with the two payloads. The status' state is online, degraded or offline,
 * and the will is {"state":"offline"}: a degraded station still inspects. */
#define HA_AVAILABILITY_TEMPLATE                                                                   \
  "{{ 'online' if value_json.state in ('online', 'degraded') else 'offline' }}"

void
insp_mqtt_ha_config_free(InspMqttHaConfig *config)
{
  if (config == NULL)
    return;
  g_free(config->topic);
  g_clear_pointer(&config->payload, g_bytes_unref);
  g_free(config);
}

char *
insp_mqtt_ha_node_id(const char *station)
{
  char *id = g_strconcat("inspectd_", station, NULL);

  for (char *p = id; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-')
      *p = '_';
  return id;
}

/* The members every entity has: unique_id, name, device, origin,
 * availability. */
static JsonObject *
ha_entity(const InspMqttHaParams *p, const char *node_id, const char *object_id, const char *name)
{
  JsonObject *o = json_object_new();
  JsonObject *dev = json_object_new();
  JsonObject *origin = json_object_new();
  JsonArray *ids = json_array_new();
  JsonArray *avail = json_array_new();
  JsonObject *a = json_object_new();
  g_autofree char *uid = g_strconcat(node_id, "_", object_id, NULL);
  g_autofree char *dev_name = g_strconcat("inspectd ", p->station, NULL);

  json_object_set_string_member(o, "unique_id", uid);
  json_object_set_string_member(o, "name", name);
  json_array_add_string_element(ids, node_id);
  json_object_set_array_member(dev, "identifiers", ids);
  json_object_set_string_member(dev, "name", dev_name);
  json_object_set_string_member(dev, "manufacturer", "inspectd");
  json_object_set_string_member(dev, "model", "visual inspection station");
  if (p->sw_version != NULL)
    json_object_set_string_member(dev, "sw_version", p->sw_version);
  json_object_set_object_member(o, "device", dev);
  json_object_set_string_member(origin, "name", "inspectd");
  if (p->sw_version != NULL)
    json_object_set_string_member(origin, "sw_version", p->sw_version);
  json_object_set_object_member(o, "origin", origin);
  json_object_set_string_member(a, "topic", p->t_status);
  json_object_set_string_member(a, "payload_available", "online");
  json_object_set_string_member(a, "payload_not_available", "offline");
  json_object_set_string_member(a, "value_template", HA_AVAILABILITY_TEMPLATE);
  json_array_add_object_element(avail, a);
  json_object_set_array_member(o, "availability", avail);
  return o;
}

static void
ha_add(GPtrArray *out, const InspMqttHaParams *p, const char *component, const char *node_id,
       const char *object_id, JsonObject *config)
{
  InspMqttHaConfig *c = g_new0(InspMqttHaConfig, 1);

  c->topic = g_strdup_printf("%s/%s/%s/%s/config", p->prefix, component, node_id, object_id);
  if (config != NULL) {
    c->payload = insp_mqtt_json_object_to_bytes(config);
    json_object_unref(config);
  }
  g_ptr_array_add(out, c);
}

/* A sensor on @topic whose state is @value_template. */
static JsonObject *
ha_sensor(const InspMqttHaParams *p, const char *node_id, const char *object_id, const char *name,
          const char *topic, const char *value_template, const char *unit, const char *state_class)
{
  JsonObject *o = ha_entity(p, node_id, object_id, name);

  json_object_set_string_member(o, "state_topic", topic);
  json_object_set_string_member(o, "value_template", value_template);
  if (unit != NULL)
    json_object_set_string_member(o, "unit_of_measurement", unit);
  json_object_set_string_member(o, "state_class", state_class);
  return o;
}

GPtrArray *
insp_mqtt_ha_configs(const InspMqttHaParams *p)
{
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)insp_mqtt_ha_config_free);
  g_autofree char *node = NULL;
  JsonObject *o;

  g_return_val_if_fail(p != NULL && p->prefix != NULL && p->station != NULL, out);
  node = insp_mqtt_ha_node_id(p->station);

  /* The last part's verdict: on (a problem) when it failed. */
  o = ha_entity(p, node, "verdict", "Last part failed");
  json_object_set_string_member(o, "state_topic", p->t_result);
  json_object_set_string_member(o, "value_template",
                                "{{ 'ON' if value_json.verdict == 'fail' else 'OFF' }}");
  json_object_set_string_member(o, "payload_on", "ON");
  json_object_set_string_member(o, "payload_off", "OFF");
  json_object_set_string_member(o, "device_class", "problem");
  ha_add(out, p, "binary_sensor", node, "verdict", o);

  ha_add(out, p, "sensor", node, "score",
         ha_sensor(p, node, "score", "Score", p->t_result, "{{ value_json.score }}", NULL,
                   "measurement"));
  ha_add(out, p, "sensor", node, "fps",
         ha_sensor(p, node, "fps", "Parts per second", p->t_status, "{{ value_json.fps }}",
                   "parts/s", "measurement"));
  /* The counts start again at 0 with the daemon: total_increasing takes a
   * decrease for a reset. */
  ha_add(out, p, "sensor", node, "pass",
         ha_sensor(p, node, "pass", "Passed parts", p->t_status, "{{ value_json.pass }}", "parts",
                   "total_increasing"));
  ha_add(out, p, "sensor", node, "fail",
         ha_sensor(p, node, "fail", "Failed parts", p->t_status, "{{ value_json.fail }}", "parts",
                   "total_increasing"));

  /* The mask topic carries the PNG bytes themselves (no image_encoding). */
  o = ha_entity(p, node, "mask", "Defect mask");
  json_object_set_string_member(o, "image_topic", p->t_mask);
  json_object_set_string_member(o, "content_type", "image/png");
  ha_add(out, p, "image", node, "mask", o);

  /* The threshold command takes {"threshold": x}; the daemon refuses a
   * value outside [inspection] threshold_min..threshold_max. */
  o = NULL;
  if (p->threshold_number) {
    o = ha_entity(p, node, "threshold", "Threshold");
    json_object_set_string_member(o, "command_topic", p->t_threshold);
    json_object_set_string_member(o, "command_template", "{\"threshold\": {{ value }}}");
    json_object_set_string_member(o, "state_topic", p->t_status);
    json_object_set_string_member(o, "value_template", "{{ value_json.threshold }}");
    json_object_set_double_member(o, "min", p->threshold_min);
    json_object_set_double_member(o, "max", p->threshold_max);
    json_object_set_double_member(o, "step", 0.01);
    json_object_set_string_member(o, "mode", "box");
    json_object_set_string_member(o, "entity_category", "config");
  }
  ha_add(out, p, "number", node, "threshold", o);
  return out;
}

void
insp_mqtt_props_json(mosquitto_property **props, GBytes *correlation)
{
  mosquitto_property_add_byte(props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
  mosquitto_property_add_string(props, MQTT_PROP_CONTENT_TYPE, "application/json");
  if (correlation != NULL) {
    gsize n = 0;
    const void *p = g_bytes_get_data(correlation, &n);
    mosquitto_property_add_binary(props, MQTT_PROP_CORRELATION_DATA, p, (guint16)n);
  }
}

void
insp_mqtt_props_png(mosquitto_property **props, guint64 seq, const char *part_id, const char *kind)
{
  char seq_s[24];

  g_snprintf(seq_s, sizeof seq_s, "%" G_GUINT64_FORMAT, seq);
  mosquitto_property_add_string(props, MQTT_PROP_CONTENT_TYPE, "image/png");
  if (kind != NULL)
    mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "kind", kind);
  mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "seq", seq_s);
  mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "part_id",
                                     part_id ? part_id : seq_s);
}
