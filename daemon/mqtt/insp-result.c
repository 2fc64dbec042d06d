/* The result payload: an InspPartResult rendered as the JSON of the MQTT contract
 * (DESIGN.md, {prefix}/{station}/result), built with json-glib.
 * Invariants: key names and order are fixed; scores are finite (NaN/inf are
 * written as null, which JSON can carry and consumers can detect).
 * Threads: any; no state.
 */
#include "insp-result.h"

#include <json-glib/json-glib.h>
#include <math.h>

#include "insp-json.h"

char *
insp_result_format_time(gint64 unix_us)
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

static void
add_double(JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name(b, key);
  if (isfinite(v))
    json_builder_add_double_value(b, v);
  else
    json_builder_add_null_value(b);
}

char *
insp_result_to_json(const InspPartResult *r, const char *station, gsize *length)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *ts = NULL;
  g_autofree char *seq_str = NULL;

  g_return_val_if_fail(r != NULL && station != NULL, NULL);
  g_return_val_if_fail(r->n_regions == 0 || r->regions != NULL, NULL);

  ts = insp_result_format_time(r->capture_time_us);
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
  return insp_json_to_data(root, length);
}
