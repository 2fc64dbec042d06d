/* The payloads of the MQTT contract (DESIGN.md): the JSON of result, status,
 * event and command replies, and the MQTT v5 properties that go with each.
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
