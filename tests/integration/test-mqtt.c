/* Integration tests of the MQTT module (daemon/insp-mqtt.c) against a real
 * mosquitto broker started per test on a free loopback port: payload schema
 * of every topic, retained status and the will, commands and their replies
 * (v5 response topic + correlation data, and the fallback reply topic), the
 * trigger/ack/result handshake, commands disabled, username/password, TLS
 * with a generated CA, a broker outage while results keep coming (at least
 * once, in order), and a publisher SIGKILLed while the broker is down whose
 * spool is delivered by the next start. */
#include <math.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "insp-json.h"
#include "insp-mqtt.h"
#include "insp-spool.h"
#include "mqtt-helpers.h"

static char *child_path;

typedef struct {
  MqttBroker *broker;
  GMainContext *ctx;
  char *spool;
  InspMqtt *mqtt;
  /* command handler record */
  guint n_handled;
  InspMqttCommandKind last_kind;
  double last_threshold, last_pixel;
  gboolean last_has_threshold, last_has_pixel;
  guint auto_part;
  guint64 last_trigger_id; /* what the handler gave the last trigger */
} Fixture;

static void
fixture_setup(Fixture *f, const MqttBrokerOptions *bopts)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *prog = g_find_program_in_path("mosquitto");

  memset(f, 0, sizeof *f);
  if (prog == NULL && !g_file_test("/usr/sbin/mosquitto", G_FILE_TEST_EXISTS)) {
    g_test_skip("mosquitto is not installed");
    return;
  }
  f->broker = mqtt_broker_start(bopts, &error);
  g_assert_no_error(error);
  f->ctx = g_main_context_new();
  f->spool = g_dir_make_tmp("mqtt-spool-XXXXXX", &error);
  g_assert_no_error(error);
}

static void
fixture_teardown(Fixture *f)
{
  g_clear_pointer(&f->mqtt, insp_mqtt_free);
  g_clear_pointer(&f->broker, mqtt_broker_free);
  if (f->ctx)
    g_main_context_unref(f->ctx);
  mqtt_test_rm_rf(f->spool);
  g_free(f->spool);
}

static void
handler(InspMqtt *mqtt, InspMqttCommand *cmd, gpointer data)
{
  Fixture *f = data;
  g_autoptr(JsonObject) o = json_object_new();

  f->n_handled++;
  f->last_kind = insp_mqtt_command_get_kind(cmd);
  switch (f->last_kind) {
  case INSP_MQTT_COMMAND_TRIGGER: {
    const char *p = insp_mqtt_command_get_part_id(cmd);
    g_autofree char *auto_id = p ? NULL : g_strdup_printf("auto-%u", ++f->auto_part);
    insp_mqtt_command_reply_trigger(mqtt, cmd, p ? p : auto_id, ++f->last_trigger_id);
    break;
  }
  case INSP_MQTT_COMMAND_THRESHOLD:
    f->last_has_threshold = insp_mqtt_command_get_threshold(cmd, &f->last_threshold);
    f->last_has_pixel = insp_mqtt_command_get_pixel_threshold(cmd, &f->last_pixel);
    if (f->last_has_threshold)
      json_object_set_double_member(o, "threshold", f->last_threshold);
    insp_mqtt_command_reply(mqtt, cmd, o);
    break;
  default:
    insp_mqtt_command_reply(mqtt, cmd, NULL);
    break;
  }
}

/* The options every client of these tests starts from. */
static void
fixture_options(Fixture *f, InspMqttOptions *o)
{
  insp_mqtt_options_init(o);
  o->host = "127.0.0.1";
  o->port = mqtt_broker_get_port(f->broker);
  o->topic_prefix = "t";
  o->station = "st";
  o->spool_dir = f->spool;
  o->reconnect_min_s = 1;
  o->reconnect_max_s = 1;
  o->keepalive = 5;
}

static InspMqtt *
start_mqtt(Fixture *f, void (*tweak)(InspMqttOptions *, gpointer), gpointer tweak_data,
           GError **error)
{
  InspMqttOptions o;
  InspMqtt *m;

  fixture_options(f, &o);
  if (tweak)
    tweak(&o, tweak_data);
  m = insp_mqtt_new(&o, f->ctx, error);
  if (m == NULL)
    return NULL;
  insp_mqtt_set_command_handler(m, handler, f, NULL);
  g_assert_true(insp_mqtt_start(m, error));
  return m;
}

static gboolean
is_connected(gpointer data)
{
  InspMqttStats st;

  insp_mqtt_get_stats(data, &st);
  return st.connected;
}

static gboolean
spool_empty(gpointer data)
{
  InspMqttStats st;

  insp_mqtt_get_stats(data, &st);
  return st.spooled == 0;
}

static JsonObject *
parse_object(GBytes *payload)
{
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) error = NULL;
  gsize n;
  const char *d = g_bytes_get_data(payload, &n);

  json_parser_load_from_data(p, d, (gssize)n, &error);
  g_assert_no_error(error);
  g_assert_true(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)));
  return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

/* Asserts @key exists with JSON type @type (G_TYPE_INT64, G_TYPE_DOUBLE
 * (int accepted), G_TYPE_STRING, G_TYPE_BOOLEAN; 0: array). */
static void
assert_member(JsonObject *o, const char *key, GType type)
{
  JsonNode *n = json_object_get_member(o, key);

  if (n == NULL)
    g_error("missing key '%s'", key);
  if (type == 0) {
    g_assert_true(JSON_NODE_HOLDS_ARRAY(n));
    return;
  }
  g_assert_true(JSON_NODE_HOLDS_VALUE(n));
  if (type == G_TYPE_DOUBLE)
    g_assert_true(json_node_get_value_type(n) == G_TYPE_DOUBLE ||
                  json_node_get_value_type(n) == G_TYPE_INT64);
  else if (json_node_get_value_type(n) != type)
    g_error("key '%s' has type %s, want %s", key, g_type_name(json_node_get_value_type(n)),
            g_type_name(type));
}

static void
assert_keys_exactly(JsonObject *o, const char *const *keys)
{
  guint n = 0;

  for (; keys[n]; n++)
    if (!json_object_has_member(o, keys[n]))
      g_error("missing key '%s'", keys[n]);
  g_assert_cmpuint(json_object_get_size(o), ==, n);
}

static void
assert_ts(const char *ts)
{
  g_assert_true(
      g_regex_match_simple("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$", ts, 0, 0));
}

static void
publish_for(InspMqtt *mqtt, guint64 seq, const char *part, gboolean fail, GBytes *mask,
            guint64 trigger_id)
{
  g_autoptr(GError) error = NULL;
  InspRegion regs[2] = {{10, 20, 30, 40, 500, 0.75f}, {1, 2, 3, 4, 5, 0.5f}};
  InspPart r = {.seq = seq,
                .part_id = (char *)part,
                .capture_time_us = 1764362653123456, /* 2025-11-28T20:44:13.123Z */
                .fail = fail,
                .score = fail ? 0.8 : 0.2,
                .threshold = 0.5,
                .model = (char *)"m1",
                .latency_ms = 12.5,
                .regions = fail ? regs : NULL,
                .n_regions = fail ? 2 : 0,
                .mask_png = mask,
                .trigger_id = trigger_id};

  g_assert_true(insp_mqtt_publish_result(mqtt, &r, &error));
  g_assert_no_error(error);
}

static void
publish(InspMqtt *mqtt, guint64 seq, const char *part, gboolean fail, GBytes *mask)
{
  publish_for(mqtt, seq, part, fail, mask, 0);
}

static void
test_schema(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  const char *filters[] = {"t/st/#", NULL};
  g_autoptr(MqttClient) sub = NULL;
  g_autoptr(GBytes) mask = g_bytes_new_static("\x89PNG\r\n\x1a\nfake", 12);
  static const char *const result_keys[] = {"v",     "station",    "seq",     "part_id",
                                            "ts",    "verdict",    "score",   "threshold",
                                            "model", "latency_ms", "regions", NULL};
  static const char *const region_keys[] = {"x", "y", "w", "h", "area", "score", NULL};
  static const char *const status_keys[] = {"v",
                                            "station",
                                            "ts",
                                            "state",
                                            "model",
                                            "threshold",
                                            "fps",
                                            "frames",
                                            "dropped",
                                            "pass",
                                            "fail",
                                            "triggers",
                                            "trigger_timeouts",
                                            "trigger_failures",
                                            "rejected",
                                            "spool_dropped_results",
                                            "spool_dropped_masks",
                                            "spooled",
                                            "uptime",
                                            "since",
                                            NULL};
  InspStatus status = {INSP_STATE_DEGRADED, "m1", 0.55, 12.5, 100, 3, 90, 7};
  gint64 before_us = g_get_real_time();

  status.since_us = 1764362653123456; /* 2025-11-28T20:44:13.123Z */

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  sub = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL, filters);
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  f.mqtt = start_mqtt(&f, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));

  /* The status published on connect. */
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/status", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    g_assert_true(m->retain);
    o = parse_object(m->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "state"), ==, "online");
    /* Before the daemon said since when its counters count: the client's start. */
    assert_keys_exactly(o, status_keys);
    assert_ts(json_object_get_string_member(o, "since"));
    g_autoptr(GDateTime) since =
        g_date_time_new_from_iso8601(json_object_get_string_member(o, "since"), NULL);
    g_assert_nonnull(since);
    g_assert_cmpint(g_date_time_to_unix(since), >=, before_us / G_USEC_PER_SEC - 1);
    g_assert_cmpint(g_date_time_to_unix(since), <=, g_get_real_time() / G_USEC_PER_SEC);
  }
  insp_mqtt_publish_status(f.mqtt, &status);
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/status", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    g_assert_true(m->retain);
    g_assert_cmpint(m->qos, ==, 1);
    o = parse_object(m->payload);
    assert_keys_exactly(o, status_keys);
    assert_member(o, "v", G_TYPE_INT64);
    g_assert_cmpstr(json_object_get_string_member(o, "station"), ==, "st");
    assert_ts(json_object_get_string_member(o, "ts"));
    g_assert_cmpstr(json_object_get_string_member(o, "state"), ==, "degraded");
    g_assert_cmpstr(json_object_get_string_member(o, "model"), ==, "m1");
    assert_member(o, "threshold", G_TYPE_DOUBLE);
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(o, "threshold"), 0.55, 1e-9);
    assert_member(o, "fps", G_TYPE_DOUBLE);
    for (const char *const *k =
             (const char *const[]){"frames", "dropped", "pass", "fail", "spooled", "uptime", NULL};
         *k; k++)
      assert_member(o, *k, G_TYPE_INT64);
    g_assert_cmpint(json_object_get_int_member(o, "frames"), ==, 100);
    g_assert_cmpint(json_object_get_int_member(o, "dropped"), ==, 3);
    g_assert_cmpint(json_object_get_int_member(o, "pass"), ==, 90);
    g_assert_cmpint(json_object_get_int_member(o, "fail"), ==, 7);
    assert_member(o, "since", G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(o, "since"), ==, "2025-11-28T20:44:13.123Z");
  }

  /* A failed part: result and mask. */
  publish(f.mqtt, 41, "P-41", TRUE, mask);
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/result", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    JsonArray *regions;
    JsonObject *r0;
    g_assert_nonnull(m);
    g_assert_false(m->retain);
    g_assert_cmpint(m->qos, ==, 1);
    g_assert_cmpstr(m->content_type, ==, "application/json");
    o = parse_object(m->payload);
    assert_keys_exactly(o, result_keys);
    assert_member(o, "v", G_TYPE_INT64);
    g_assert_cmpint(json_object_get_int_member(o, "v"), ==, 1);
    assert_member(o, "station", G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(o, "station"), ==, "st");
    assert_member(o, "seq", G_TYPE_INT64);
    g_assert_cmpint(json_object_get_int_member(o, "seq"), ==, 41);
    assert_member(o, "part_id", G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "P-41");
    assert_member(o, "ts", G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(o, "ts"), ==, "2025-11-28T20:44:13.123Z");
    g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "fail");
    assert_member(o, "score", G_TYPE_DOUBLE);
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(o, "score"), 0.8, 1e-9);
    assert_member(o, "threshold", G_TYPE_DOUBLE);
    assert_member(o, "model", G_TYPE_STRING);
    g_assert_cmpstr(json_object_get_string_member(o, "model"), ==, "m1");
    assert_member(o, "latency_ms", G_TYPE_DOUBLE);
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(o, "latency_ms"), 12.5, 1e-9);
    assert_member(o, "regions", 0);
    regions = json_object_get_array_member(o, "regions");
    g_assert_cmpuint(json_array_get_length(regions), ==, 2);
    r0 = json_array_get_object_element(regions, 0);
    assert_keys_exactly(r0, region_keys);
    for (const char *const *k = (const char *const[]){"x", "y", "w", "h", "area", NULL}; *k; k++)
      assert_member(r0, *k, G_TYPE_INT64);
    assert_member(r0, "score", G_TYPE_DOUBLE);
    g_assert_cmpint(json_object_get_int_member(r0, "x"), ==, 10);
    g_assert_cmpint(json_object_get_int_member(r0, "h"), ==, 40);
    g_assert_cmpint(json_object_get_int_member(r0, "area"), ==, 500);
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(r0, "score"), 0.75, 1e-6);
  }
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/mask", 3000, f.ctx);
    g_assert_nonnull(m);
    g_assert_true(g_bytes_equal(m->payload, mask));
    g_assert_cmpstr(g_hash_table_lookup(m->user, "seq"), ==, "41");
    g_assert_cmpstr(g_hash_table_lookup(m->user, "part_id"), ==, "P-41");
    g_assert_cmpstr(m->content_type, ==, "image/png");
    g_assert_cmpint(m->qos, ==, 1);
  }

  /* A pass with masks=fail: no mask; part_id defaults to the seq. Masks
   * follow their result in seq order, so once result 43 is here, a mask
   * for 42 would have been too. */
  publish(f.mqtt, 42, NULL, FALSE, mask);
  publish(f.mqtt, 43, NULL, FALSE, NULL);
  {
    g_autoptr(MqttMsg) m42 = mqtt_client_wait(sub, "t/st/result", 3000, f.ctx);
    g_autoptr(MqttMsg) m43 = mqtt_client_wait(sub, "t/st/result", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m42);
    g_assert_nonnull(m43);
    o = parse_object(m42->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "42");
    g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "pass");
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(o, "regions")), ==, 0);
    g_assert_cmpuint(mqtt_client_count(sub, "t/st/mask"), ==, 0);
  }
  /* masks=all (hot): a pass gets its mask; masks=none: a fail gets none. */
  insp_mqtt_set_masks(f.mqtt, INSP_MQTT_MASKS_ALL);
  publish(f.mqtt, 44, NULL, FALSE, mask);
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/mask", 3000, f.ctx);
    g_assert_nonnull(m);
    g_assert_cmpstr(g_hash_table_lookup(m->user, "seq"), ==, "44");
  }
  insp_mqtt_set_masks(f.mqtt, INSP_MQTT_MASKS_NONE);
  publish(f.mqtt, 45, NULL, TRUE, mask);
  publish(f.mqtt, 46, NULL, FALSE, NULL);
  for (int want = 44; want <= 46; want++) {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/st/result", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_cmpint(json_object_get_int_member(o, "seq"), ==, want);
  }
  g_assert_cmpuint(mqtt_client_count(sub, "t/st/mask"), ==, 0);

  /* Event. */
  {
    g_autoptr(JsonObject) extra = json_object_new();
    g_autoptr(MqttMsg) m = NULL;
    g_autoptr(JsonObject) o = NULL;
    static const char *const event_keys[] = {"v",    "station", "ts",     "level",
                                             "code", "message", "camera", NULL};
    json_object_set_string_member(extra, "camera", "/dev/video0");
    json_object_set_string_member(extra, "level", "must not override");
    insp_mqtt_publish_event(f.mqtt, "error", "camera_lost", "camera lost", extra);
    m = mqtt_client_wait(sub, "t/st/event", 3000, f.ctx);
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    assert_keys_exactly(o, event_keys);
    assert_ts(json_object_get_string_member(o, "ts"));
    g_assert_cmpstr(json_object_get_string_member(o, "level"), ==, "error");
    g_assert_cmpstr(json_object_get_string_member(o, "code"), ==, "camera_lost");
    g_assert_cmpstr(json_object_get_string_member(o, "message"), ==, "camera lost");
    g_assert_cmpstr(json_object_get_string_member(o, "camera"), ==, "/dev/video0");
  }
  /* Snapshot: two PNGs told apart by the kind user property. */
  {
    g_autoptr(GBytes) img = g_bytes_new_static("\x89PNGimage", 9);
    g_autoptr(GBytes) map = g_bytes_new_static("\x89PNGmap", 7);
    g_autoptr(MqttMsg) a = NULL;
    g_autoptr(MqttMsg) b = NULL;
    insp_mqtt_publish_snapshot(f.mqtt, 47, "P-47", img, map);
    a = mqtt_client_wait(sub, "t/st/snapshot", 3000, f.ctx);
    b = mqtt_client_wait(sub, "t/st/snapshot", 3000, f.ctx);
    g_assert_nonnull(a);
    g_assert_nonnull(b);
    g_assert_cmpstr(g_hash_table_lookup(a->user, "kind"), ==, "image");
    g_assert_true(g_bytes_equal(a->payload, img));
    g_assert_cmpstr(g_hash_table_lookup(b->user, "kind"), ==, "anomaly_map");
    g_assert_true(g_bytes_equal(b->payload, map));
    g_assert_cmpstr(g_hash_table_lookup(b->user, "seq"), ==, "47");
    g_assert_cmpstr(g_hash_table_lookup(b->user, "part_id"), ==, "P-47");
  }
  /* Everything acknowledged leaves the spool. */
  g_assert_true(mqtt_test_wait_until(spool_empty, f.mqtt, 3000, f.ctx));

  /* A graceful stop leaves a retained offline status. */
  g_clear_pointer(&f.mqtt, insp_mqtt_free);
  {
    g_autoptr(MqttClient) late = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                                                 (const char *const[]){"t/st/status", NULL});
    g_autoptr(MqttMsg) m = NULL;
    g_autoptr(JsonObject) o = NULL;
    g_assert_true(mqtt_client_wait_connected(late, 5000));
    m = mqtt_client_wait(late, "t/st/status", 3000, NULL);
    g_assert_nonnull(m);
    g_assert_true(m->retain);
    o = parse_object(m->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "state"), ==, "offline");
  }
  fixture_teardown(&f);
}

static char *
write_ready_path(const char *dir)
{
  return g_build_filename(dir, "ready", NULL);
}

static gboolean
file_exists(gpointer path)
{
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

static GPid
spawn_child(const char *const *args)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_autoptr(GError) error = NULL;
  GPid pid = 0;

  g_ptr_array_add(argv, child_path);
  for (; *args; args++)
    g_ptr_array_add(argv, (gpointer)*args);
  g_ptr_array_add(argv, NULL);
  g_spawn_async(NULL, (char **)argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid,
                &error);
  g_assert_no_error(error);
  return pid;
}

static int
reap(GPid pid)
{
  int status = 0;

  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_spawn_close_pid(pid);
  return status;
}

static void
test_will(void)
{
  Fixture f;
  g_autofree char *port = NULL;
  g_autofree char *ready = NULL;
  g_autoptr(MqttClient) sub = NULL;
  GPid pid;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  port = g_strdup_printf("%d", mqtt_broker_get_port(f.broker));
  ready = write_ready_path(f.spool);
  sub = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                        (const char *const[]){"t/child/status", NULL});
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  gint64 spawned_s = g_get_real_time() / G_USEC_PER_SEC;
  pid = spawn_child((const char *const[]){"--port", port, "--spool", f.spool, "--ready", ready,
                                          "--wait-connect", "--hold", NULL});
  g_assert_true(mqtt_test_wait_until(file_exists, ready, 8000, NULL));
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(sub, "t/child/status", 3000, NULL);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "state"), ==, "online");
  }
  /* Abrupt end: the broker sees the socket close and sends the will, after
   * its delay (a restart within it would have said nothing). */
  gint64 killed_s = g_get_real_time() / G_USEC_PER_SEC;
  kill(pid, SIGKILL);
  reap(pid);
  {
    g_autoptr(MqttMsg) m =
        mqtt_client_wait(sub, "t/child/status", (INSP_MQTT_WILL_DELAY_S + 8) * 1000, NULL);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    g_assert_true(m->retain); /* retain as published */
    o = parse_object(m->payload);
    /* A status like every other: v, station, ts, state. Its ts is when the
     * will was registered, at connect: before the kill. */
    assert_keys_exactly(o, (const char *const[]){"v", "station", "ts", "state", NULL});
    assert_member(o, "v", G_TYPE_INT64);
    g_assert_cmpint(json_object_get_int_member(o, "v"), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(o, "station"), ==, "child");
    g_assert_cmpstr(json_object_get_string_member(o, "state"), ==, "offline");
    assert_member(o, "ts", G_TYPE_STRING);
    assert_ts(json_object_get_string_member(o, "ts"));
    g_autoptr(GDateTime) ts =
        g_date_time_new_from_iso8601(json_object_get_string_member(o, "ts"), NULL);
    g_assert_nonnull(ts);
    g_assert_cmpint(g_date_time_to_unix(ts), <=, killed_s);
    g_assert_cmpint(g_date_time_to_unix(ts), >=, spawned_s - 1);
  }
  /* ... and keeps it for whoever subscribes later. */
  {
    g_autoptr(MqttClient) late = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                                                 (const char *const[]){"t/child/status", NULL});
    g_autoptr(MqttMsg) m = NULL;
    g_assert_true(mqtt_client_wait_connected(late, 5000));
    m = mqtt_client_wait(late, "t/child/status", 3000, NULL);
    g_assert_nonnull(m);
    g_assert_true(m->retain);
    g_assert_nonnull(g_strstr_len(g_bytes_get_data(m->payload, NULL),
                                  (gssize)g_bytes_get_size(m->payload), "offline"));
  }
  fixture_teardown(&f);
}

/* Sends a command and returns the reply on @reply_topic. */
static MqttMsg *
command(Fixture *f, MqttClient *c, const char *name, const char *payload, gssize len,
        const char *response_topic, const char *corr, const char *reply_topic)
{
  g_autofree char *topic = g_strdup_printf("t/st/cmd/%s", name);

  mqtt_client_publish(c, topic, payload, len >= 0 ? (int)len : (int)strlen(payload), response_topic,
                      corr, corr ? (int)strlen(corr) : 0, FALSE);
  return mqtt_client_wait(c, reply_topic, 3000, f->ctx);
}

static void
assert_error_reply(MqttMsg *msg, const char *corr, const char *needle)
{
  g_autoptr(MqttMsg) m = msg; /* taken */
  g_autoptr(JsonObject) o = NULL;

  g_assert_nonnull(m);
  o = parse_object(m->payload);
  g_assert_false(json_object_get_boolean_member(o, "ok"));
  g_assert_cmpuint(json_object_get_size(o), ==, 2);
  if (strstr(json_object_get_string_member(o, "error"), needle) == NULL)
    g_error("error '%s' does not mention '%s'", json_object_get_string_member(o, "error"), needle);
  if (corr) {
    g_assert_nonnull(m->correlation);
    g_assert_cmpmem(g_bytes_get_data(m->correlation, NULL), g_bytes_get_size(m->correlation), corr,
                    strlen(corr));
  }
}

static void
test_commands(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) c = NULL;
  g_autofree char *big = NULL;
  guint handled;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  c = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                      (const char *const[]){"resp/#", "t/st/cmd/+/reply", "t/st/result", NULL});
  g_assert_true(mqtt_client_wait_connected(c, 5000));
  f.mqtt = start_mqtt(&f, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  g_usleep(100000); /* its SUBACK */

  /* threshold: a number, v5 response topic + correlation data. */
  {
    g_autoptr(MqttMsg) m = command(&f, c, "threshold", "0.7", -1, "resp/a", "c1", "resp/a");
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_true(json_object_get_boolean_member(o, "ok"));
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(o, "threshold"), 0.7, 1e-9);
    g_assert_cmpmem(g_bytes_get_data(m->correlation, NULL), g_bytes_get_size(m->correlation), "c1",
                    2);
    g_assert_cmpuint(f.n_handled, ==, 1);
    g_assert_true(f.last_has_threshold);
    g_assert_false(f.last_has_pixel);
    g_assert_cmpfloat(f.last_threshold, ==, 0.7);
  }
  /* threshold: an object, no response topic: the fallback reply topic. */
  {
    g_autoptr(MqttMsg) m =
        command(&f, c, "threshold", "{\"threshold\":0.4,\"pixel_threshold\":0.3}", -1, NULL, NULL,
                "t/st/cmd/threshold/reply");
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    g_assert_null(m->correlation);
    o = parse_object(m->payload);
    g_assert_true(json_object_get_boolean_member(o, "ok"));
    g_assert_true(f.last_has_pixel);
    g_assert_cmpfloat(f.last_pixel, ==, 0.3);
    g_assert_cmpfloat(f.last_threshold, ==, 0.4);
  }
  /* Malformed and out-of-range: an error, and the handler never runs. */
  handled = f.n_handled;
  assert_error_reply(command(&f, c, "threshold", "abc", -1, "resp/e", "e1", "resp/e"), "e1",
                     "number");
  assert_error_reply(command(&f, c, "threshold", "250", -1, "resp/e", "e2", "resp/e"), "e2",
                     "out of range");
  assert_error_reply(command(&f, c, "threshold", "-0.1", -1, "resp/e", NULL, "resp/e"), NULL,
                     "out of range");
  assert_error_reply(
      command(&f, c, "threshold", "{\"threshold\":\"x\"}", -1, "resp/e", NULL, "resp/e"), NULL,
      "number");
  assert_error_reply(command(&f, c, "threshold", "{\"threshold\":0.5,\"threshold\":0.6}", -1,
                             "resp/e", NULL, "resp/e"),
                     NULL, "duplicate");
  assert_error_reply(command(&f, c, "threshold", "{\"thresh\":0.5}", -1, "resp/e", NULL, "resp/e"),
                     NULL, "unknown key");
  assert_error_reply(command(&f, c, "threshold", "{}", -1, "resp/e", NULL, "resp/e"), NULL,
                     "threshold");
  assert_error_reply(
      command(&f, c, "threshold", "{\"threshold\":[[[[[[0.5]]]]]]}", -1, "resp/e", NULL, "resp/e"),
      NULL, "nest");
  assert_error_reply(command(&f, c, "threshold", "", 0, NULL, NULL, "t/st/cmd/threshold/reply"),
                     NULL, "threshold");
  /* Over the payload limit but within the Maximum-Packet-Size of CONNECT:
   * read and refused. */
  big = g_malloc(1 << 20);
  memset(big, '1', 1 << 20);
  assert_error_reply(command(&f, c, "threshold", big, 66000, "resp/e", NULL, "resp/e"), NULL,
                     "too large");
  /* Over the Maximum-Packet-Size: the broker never delivers it (no reply),
   * and the next command is answered as usual. */
  {
    g_autoptr(MqttMsg) none = command(&f, c, "threshold", big, 1 << 20, "resp/e", NULL, "resp/e");

    g_assert_null(none);
  }
  assert_error_reply(command(&f, c, "bogus", "", 0, "resp/e", "b1", "resp/e"), "b1",
                     "unknown command");
  assert_error_reply(command(&f, c, "bogus", "", 0, NULL, NULL, "t/st/cmd/bogus/reply"), NULL,
                     "unknown command");
  assert_error_reply(command(&f, c, "trigger", "{\"part_id\":\"\"}", -1, "resp/e", NULL, "resp/e"),
                     NULL, "part_id");
  assert_error_reply(command(&f, c, "trigger", "{\"part\":\"x\"}", -1, "resp/e", NULL, "resp/e"),
                     NULL, "unknown key");
  g_assert_cmpuint(f.n_handled, ==, handled);

  /* reload and snapshot. */
  for (int i = 0; i < 2; i++) {
    const char *name = i ? "snapshot" : "reload";
    g_autoptr(MqttMsg) m = command(&f, c, name, "", 0, "resp/r", "r", "resp/r");
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_true(json_object_get_boolean_member(o, "ok"));
    g_assert_cmpint(f.last_kind, ==, i ? INSP_MQTT_COMMAND_SNAPSHOT : INSP_MQTT_COMMAND_RELOAD);
  }

  /* trigger with a response topic: ack at once, later that part's result
   * there with the same correlation data. */
  {
    g_autoptr(MqttMsg) ack = command(&f, c, "trigger", "P-1", -1, "resp/plc", "xyz", "resp/plc");
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(MqttMsg) res = NULL;
    g_autoptr(MqttMsg) plain = NULL;
    g_assert_nonnull(ack);
    o = parse_object(ack->payload);
    g_assert_true(json_object_get_boolean_member(o, "ok"));
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "P-1");
    g_assert_cmpmem(g_bytes_get_data(ack->correlation, NULL), g_bytes_get_size(ack->correlation),
                    "xyz", 3);
    g_clear_pointer(&o, json_object_unref);
    publish(f.mqtt, 100, "P-0", FALSE, NULL); /* another part: not sent there */
    publish(f.mqtt, 99, "P-1", FALSE, NULL);  /* the same part id, another trigger: not there */
    publish_for(f.mqtt, 101, "P-1", TRUE, NULL, f.last_trigger_id);
    res = mqtt_client_wait(c, "resp/plc", 3000, f.ctx);
    g_assert_nonnull(res);
    o = parse_object(res->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "P-1");
    g_assert_cmpint(json_object_get_int_member(o, "seq"), ==, 101);
    g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "fail");
    g_assert_cmpmem(g_bytes_get_data(res->correlation, NULL), g_bytes_get_size(res->correlation),
                    "xyz", 3);
    plain = mqtt_client_wait(c, "t/st/result", 3000, f.ctx);
    g_assert_nonnull(plain);
    g_clear_pointer(&plain, mqtt_msg_free);
    plain = mqtt_client_wait(c, "t/st/result", 3000, f.ctx);
    g_assert_nonnull(plain);
    g_clear_pointer(&plain, mqtt_msg_free);
    plain = mqtt_client_wait(c, "t/st/result", 3000, f.ctx);
    g_assert_nonnull(plain);
    g_assert_cmpuint(mqtt_client_count(c, "resp/plc"), ==, 0);
  }
  /* trigger as JSON without a response topic: both answers on the fallback. */
  {
    g_autoptr(MqttMsg) ack = command(&f, c, "trigger", "{\"part_id\":\"P-2\"}", -1, NULL, NULL,
                                     "t/st/cmd/trigger/reply");
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(MqttMsg) res = NULL;
    g_assert_nonnull(ack);
    o = parse_object(ack->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "P-2");
    g_clear_pointer(&o, json_object_unref);
    publish_for(f.mqtt, 102, "P-2", FALSE, NULL, f.last_trigger_id);
    res = mqtt_client_wait(c, "t/st/cmd/trigger/reply", 3000, f.ctx);
    g_assert_nonnull(res);
    o = parse_object(res->payload);
    g_assert_cmpint(json_object_get_int_member(o, "seq"), ==, 102);
  }
  /* Two triggers with one part id (a PLC's retry): each gets its own
   * answer, with its own correlation data; one times out. */
  {
    g_autoptr(MqttMsg) a1 = command(&f, c, "trigger", "R-7", -1, "resp/r", "one", "resp/r");
    guint64 first = f.last_trigger_id;
    g_autoptr(MqttMsg) a2 = command(&f, c, "trigger", "R-7", -1, "resp/r", "two", "resp/r");
    guint64 second = f.last_trigger_id;
    g_autoptr(MqttMsg) r1 = NULL, r2 = NULL;
    g_autoptr(JsonObject) o1 = NULL, o2 = NULL;

    g_assert_nonnull(a1);
    g_assert_nonnull(a2);
    g_assert_cmpuint(first, !=, second);
    publish_for(f.mqtt, 103, "R-7", FALSE, NULL, second);
    r2 = mqtt_client_wait(c, "resp/r", 3000, f.ctx);
    g_assert_nonnull(r2);
    g_assert_cmpmem(g_bytes_get_data(r2->correlation, NULL), g_bytes_get_size(r2->correlation),
                    "two", 3);
    o2 = parse_object(r2->payload);
    g_assert_cmpint(json_object_get_int_member(o2, "seq"), ==, 103);
    g_assert_true(insp_mqtt_trigger_fail(f.mqtt, first, "timeout"));
    r1 = mqtt_client_wait(c, "resp/r", 3000, f.ctx);
    g_assert_nonnull(r1);
    g_assert_cmpmem(g_bytes_get_data(r1->correlation, NULL), g_bytes_get_size(r1->correlation),
                    "one", 3);
    o1 = parse_object(r1->payload);
    g_assert_false(json_object_get_boolean_member(o1, "ok"));
    g_assert_cmpstr(json_object_get_string_member(o1, "error"), ==, "timeout");
    g_assert_cmpstr(json_object_get_string_member(o1, "part_id"), ==, "R-7");
    /* Answered once: a second failure or a late result goes nowhere. */
    g_assert_false(insp_mqtt_trigger_fail(f.mqtt, first, "timeout"));
    publish_for(f.mqtt, 104, "R-7", FALSE, NULL, first);
    g_assert_null(mqtt_client_wait(c, "resp/r", 500, f.ctx));
  }
  /* trigger without a part id: the daemon names it. */
  {
    g_autoptr(MqttMsg) ack = command(&f, c, "trigger", "", 0, "resp/t", "t", "resp/t");
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(ack);
    o = parse_object(ack->payload);
    g_assert_cmpstr(json_object_get_string_member(o, "part_id"), ==, "auto-1");
  }
  /* A retained command is not executed when the client (re)subscribes. */
  g_clear_pointer(&f.mqtt, insp_mqtt_free);
  handled = f.n_handled;
  mqtt_client_publish(c, "t/st/cmd/reload", "", 0, "resp/ret", NULL, 0, TRUE);
  g_usleep(100000);
  f.mqtt = start_mqtt(&f, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  g_assert_null(mqtt_client_wait(c, "resp/ret", 500, f.ctx));
  g_assert_cmpuint(f.n_handled, ==, handled);
  mqtt_client_publish(c, "t/st/cmd/reload", "", 0, NULL, NULL, 0, TRUE); /* clear it */
  fixture_teardown(&f);
}

static void
no_commands(InspMqttOptions *o, gpointer data)
{
  o->commands = INSP_MQTT_COMMANDS_NONE;
}

static void
test_commands_disabled(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) c = NULL;
  InspMqttStats st;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  c = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                      (const char *const[]){"resp/#", "t/st/cmd/#", NULL});
  g_assert_true(mqtt_client_wait_connected(c, 5000));
  f.mqtt = start_mqtt(&f, no_commands, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  g_usleep(100000);
  mqtt_client_publish(c, "t/st/cmd/threshold", "0.7", 3, "resp/x", "q", 1, FALSE);
  mqtt_client_publish(c, "t/st/cmd/trigger", "", 0, NULL, NULL, 0, FALSE);
  g_assert_null(mqtt_client_wait(c, "resp/x", 700, f.ctx));
  g_assert_null(mqtt_client_wait(c, "t/st/cmd/trigger/reply", 100, f.ctx));
  g_assert_cmpuint(f.n_handled, ==, 0);
  insp_mqtt_get_stats(f.mqtt, &st);
  g_assert_cmpuint(st.commands, ==, 0);
  fixture_teardown(&f);
}

/* Numbers go out in their shortest form: a threshold configured as 0.93 reads
 * 0.93 whether it went through a float or not, and every text reads back to
 * the same value. */
static void
test_json_numbers(void)
{
  static const struct {
    double v;
    const char *want;
  } cases[] = {
      {0.93, "0.93"},
      {(double)0.93f, "0.93"},
      {0.1 + 0.2, "0.30000000000000004"},
      {0.5, "0.5"},
      {0, "0"},
      {-2.5e-7, "-2.5e-07"},
      {123456789.0, "123456789"},
      {NAN, "null"},
      {INFINITY, "null"},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GString) out = g_string_new(NULL);

    insp_json_append_number(out, cases[i].v);
    g_assert_cmpstr(out->str, ==, cases[i].want);
  }
  {
    g_autoptr(JsonObject) o = json_object_new();
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    g_autofree char *text = NULL;

    json_object_set_string_member(o, "s", "a\"b\\c\n\x01\xc3\xa9");
    json_object_set_int_member(o, "n", -(G_GINT64_CONSTANT(1) << 53));
    json_object_set_double_member(o, "t", (double)0.93f);
    json_object_set_boolean_member(o, "ok", TRUE);
    json_object_set_null_member(o, "z");
    json_node_set_object(node, json_object_ref(o));
    text = insp_json_to_data(node, NULL);
    g_assert_cmpstr(text, ==,
                    "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\",\"n\":-9007199254740992,"
                    "\"t\":0.93,\"ok\":true,\"z\":null}");
    g_autoptr(GBytes) bytes = g_bytes_new_static(text, strlen(text));
    g_autoptr(JsonObject) back = parse_object(bytes);
    g_assert_cmpstr(json_object_get_string_member(back, "s"), ==, "a\"b\\c\n\x01\xc3\xa9");
  }
}

static void
trigger_only(InspMqttOptions *o, gpointer data)
{
  o->commands = INSP_MQTT_COMMANDS_TRIGGER;
  o->reply_prefix = "resp";
}

/* What the commands level, the reply prefix and the rate refuse, each answered
 * with the key that allows it, on the station's own reply topic when the
 * response topic itself is refused. */
static void
test_commands_guarded(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) c = NULL;
  guint too_many = 0, answered = 0;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  c = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                      (const char *const[]){"resp/#", "t/#", "elsewhere/#", NULL});
  g_assert_true(mqtt_client_wait_connected(c, 5000));
  f.mqtt = start_mqtt(&f, trigger_only, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  g_usleep(100000);

  assert_error_reply(command(&f, c, "threshold", "0.1", -1, "resp/g", "g1", "resp/g"), "g1",
                     "[mqtt] commands = all");
  assert_error_reply(command(&f, c, "reload", "", 0, "resp/g", NULL, "resp/g"), NULL,
                     "[mqtt] commands = all");
  assert_error_reply(
      command(&f, c, "trigger", "P", -1, "t/other/cmd/threshold", NULL, "t/st/cmd/trigger/reply"),
      NULL, "lies under 't/'");
  g_assert_cmpuint(mqtt_client_count(c, "t/other/cmd/threshold"), ==, 0); /* nothing went there */
  assert_error_reply(
      command(&f, c, "trigger", "P", -1, "elsewhere/x", NULL, "t/st/cmd/trigger/reply"), NULL,
      "[mqtt] reply_prefix 'resp'");
  g_assert_cmpuint(mqtt_client_count(c, "elsewhere/x"), ==, 0);
  g_assert_cmpuint(f.n_handled, ==, 0);
  {
    g_autoptr(MqttMsg) ok = command(&f, c, "trigger", "P-ok", -1, "resp/plc", NULL, "resp/plc");

    g_assert_nonnull(ok);
    g_assert_cmpuint(f.n_handled, ==, 1);
  }

  /* A flood: the bucket lets INSP_MQTT_COMMANDS_PER_S through, the rest is
   * answered "too many commands" without reaching the handler. */
  for (int i = 0; i < 3 * INSP_MQTT_COMMANDS_PER_S; i++)
    mqtt_client_publish(c, "t/st/cmd/threshold", "0.5", 3, "resp/flood", NULL, 0, FALSE);
  for (;;) {
    g_autoptr(MqttMsg) m = mqtt_client_wait(c, "resp/flood", 3000, f.ctx);

    if (m == NULL)
      break;
    answered++;
    if (g_strstr_len(g_bytes_get_data(m->payload, NULL), (gssize)g_bytes_get_size(m->payload),
                     "too many commands: at most") != NULL)
      too_many++;
  }
  g_assert_cmpuint(answered, ==, 3 * INSP_MQTT_COMMANDS_PER_S);
  g_assert_cmpuint(too_many, >=, INSP_MQTT_COMMANDS_PER_S);
  g_assert_cmpuint(f.n_handled, ==, 1); /* threshold is refused either way */
  fixture_teardown(&f);
}

typedef struct {
  const char *user, *password_file;
} Creds;

static void
with_creds(InspMqttOptions *o, gpointer data)
{
  Creds *c = data;

  o->username = c->user;
  o->password_file = c->password_file;
}

static gboolean
refused(gpointer data)
{
  InspMqttStats st;

  insp_mqtt_get_stats(data, &st);
  return !st.connected && st.last_reason != 0;
}

static gboolean
run_tool(const char *const *argv)
{
  int status = 0;
  g_autoptr(GError) error = NULL;

  if (!g_spawn_sync(NULL, (char **)argv, NULL,
                    G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                    NULL, NULL, NULL, NULL, &status, &error))
    return FALSE;
  return g_spawn_check_wait_status(status, NULL);
}

static void
test_auth(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("mqtt-auth-XXXXXX", &error);
  g_autofree char *pwfile = g_build_filename(dir, "passwd", NULL);
  g_autofree char *good = g_build_filename(dir, "good", NULL);
  g_autofree char *bad = g_build_filename(dir, "bad", NULL);
  g_autofree char *missing = g_build_filename(dir, "missing", NULL);
  MqttBrokerOptions bo = {.password_file = pwfile};
  Fixture f;
  Creds ok = {"line1", good}, wrong = {"line1", bad}, absent = {"line1", missing};
  g_autoptr(MqttClient) c = NULL;
  InspMqttStats st;

  g_assert_no_error(error);
  if (!run_tool((const char *const[]){"mosquitto_passwd", "-b", "-c", pwfile, "line1", "s3cret!",
                                      NULL})) {
    g_test_skip("mosquitto_passwd failed");
    mqtt_test_rm_rf(dir);
    return;
  }
  g_assert_true(g_file_set_contents(good, "s3cret!\n", -1, NULL));
  g_assert_true(g_file_set_contents(bad, "guess\n", -1, NULL));
  fixture_setup(&f, &bo);
  if (f.broker == NULL)
    return;
  c = mqtt_client_new(mqtt_broker_get_port(f.broker),
                      &(MqttClientOptions){.username = "line1", .password = "s3cret!"},
                      (const char *const[]){"t/st/result", NULL});
  g_assert_true(mqtt_client_wait_connected(c, 5000));

  /* Unreadable password file: refused at start, naming the file. */
  g_assert_null(start_mqtt(&f, with_creds, &absent, &error));
  g_assert_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_FILE);
  g_assert_nonnull(strstr(error->message, missing));
  g_clear_error(&error);

  /* Wrong password: the broker refuses; nothing is delivered. */
  f.mqtt = start_mqtt(&f, with_creds, &wrong, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(refused, f.mqtt, 5000, f.ctx));
  publish(f.mqtt, 1, NULL, FALSE, NULL);
  g_assert_null(mqtt_client_wait(c, "t/st/result", 500, f.ctx));
  insp_mqtt_get_stats(f.mqtt, &st);
  g_assert_false(st.connected);
  g_assert_cmpuint(st.spooled, ==, 1);
  g_clear_pointer(&f.mqtt, insp_mqtt_free);

  /* Right password: connects, and the result spooled above goes out first. */
  f.mqtt = start_mqtt(&f, with_creds, &ok, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  publish(f.mqtt, 2, NULL, FALSE, NULL);
  for (int want = 1; want <= 2; want++) {
    g_autoptr(MqttMsg) m = mqtt_client_wait(c, "t/st/result", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_cmpint(json_object_get_int_member(o, "seq"), ==, want);
  }
  fixture_teardown(&f);
  mqtt_test_rm_rf(dir);
}

typedef struct {
  const char *ca, *cert, *key;
} Tls;

static void
with_tls(InspMqttOptions *o, gpointer data)
{
  Tls *t = data;

  o->tls_ca = t->ca;
  o->tls_cert = t->cert;
  o->tls_key = t->key;
}

static gboolean
make_cert(const char *dir, const char *name, const char *cn, const char *san)
{
  g_autofree char *key = g_strdup_printf("%s/%s.key", dir, name);
  g_autofree char *csr = g_strdup_printf("%s/%s.csr", dir, name);
  g_autofree char *crt = g_strdup_printf("%s/%s.crt", dir, name);
  g_autofree char *ext = g_strdup_printf("%s/%s.ext", dir, name);
  g_autofree char *subj = g_strdup_printf("/CN=%s", cn);
  g_autofree char *ca = g_strdup_printf("%s/ca.crt", dir);
  g_autofree char *cakey = g_strdup_printf("%s/ca.key", dir);
  g_autofree char *extline = g_strdup_printf("%s\n", san);

  if (!g_file_set_contents(ext, extline, -1, NULL))
    return FALSE;
  return run_tool((const char *const[]){"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                                        "-out", csr, "-subj", subj, NULL}) &&
         run_tool((const char *const[]){"openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey",
                                        cakey, "-CAcreateserial", "-out", crt, "-days", "2",
                                        "-extfile", ext, NULL});
}

static void
record_connection(InspMqtt *mqtt, gboolean connected, int reason, const char *message,
                  gpointer data)
{
  g_ptr_array_add(data, g_strdup_printf("%s %d %s", connected ? "up" : "down", reason, message));
}

static gboolean
has_records(gpointer data)
{
  return ((GPtrArray *)data)->len > 0;
}

/* A client that cannot get through TLS says why, in the message its
 * connection handler gets (the daemon logs it once, with host:port). */
static char *
tls_failure(Fixture *f, Tls *tls)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) got = g_ptr_array_new_with_free_func(g_free);
  InspMqttOptions o;
  InspMqtt *m;
  char *first;

  fixture_options(f, &o);
  with_tls(&o, tls);
  m = insp_mqtt_new(&o, f->ctx, &error);
  g_assert_no_error(error);
  insp_mqtt_set_connection_handler(m, record_connection, got, NULL);
  g_assert_true(insp_mqtt_start(m, &error));
  g_assert_true(mqtt_test_wait_until(has_records, got, 8000, f->ctx));
  insp_mqtt_free(m);
  first = g_strdup(g_ptr_array_index(got, 0));
  g_test_message("TLS failure: %s", first);
  return first;
}

static void
test_tls(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("mqtt-tls-XXXXXX", &error);
  g_autofree char *ca = g_build_filename(dir, "ca.crt", NULL);
  g_autofree char *cakey = g_build_filename(dir, "ca.key", NULL);
  g_autofree char *scrt = g_build_filename(dir, "server.crt", NULL);
  g_autofree char *skey = g_build_filename(dir, "server.key", NULL);
  g_autofree char *ccrt = g_build_filename(dir, "client.crt", NULL);
  g_autofree char *ckey = g_build_filename(dir, "client.key", NULL);
  g_autofree char *nope = g_build_filename(dir, "nope.pem", NULL);
  MqttBrokerOptions bo = {
      .cafile = ca, .certfile = scrt, .keyfile = skey, .require_certificate = TRUE};
  Tls good = {ca, ccrt, ckey}, missing_ca = {nope, NULL, NULL}, dir_key = {ca, ccrt, dir},
      no_key = {ca, ccrt, NULL};
  Fixture f;
  g_autoptr(MqttClient) c = NULL;

  g_assert_no_error(error);
  if (!run_tool((const char *const[]){"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", cakey,
                                      "-out", ca, "-days", "2", "-subj", "/CN=inspectd test CA",
                                      NULL}) ||
      !make_cert(dir, "server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost") ||
      !make_cert(dir, "client", "inspectd-client", "extendedKeyUsage=clientAuth")) {
    g_test_skip("openssl could not make the test certificates");
    mqtt_test_rm_rf(dir);
    return;
  }
  fixture_setup(&f, &bo);
  if (f.broker == NULL)
    return;

  /* Unreadable files are refused at start, naming the file. */
  g_assert_null(start_mqtt(&f, with_tls, &missing_ca, &error));
  g_assert_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_FILE);
  g_assert_nonnull(strstr(error->message, nope));
  g_assert_nonnull(strstr(error->message, "tls_ca"));
  g_clear_error(&error);
  g_assert_null(start_mqtt(&f, with_tls, &dir_key, &error));
  g_assert_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_FILE);
  g_assert_nonnull(strstr(error->message, "tls_key"));
  g_clear_error(&error);
  g_assert_null(start_mqtt(&f, with_tls, &no_key, &error));
  g_assert_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_OPTIONS);
  g_clear_error(&error);

  /* A CA that did not sign the broker's certificate; a client key that is
   * not the certificate's. Each says what went wrong. */
  {
    g_autofree char *other = g_build_filename(dir, "other", NULL);
    g_autofree char *oca = g_build_filename(other, "ca.crt", NULL);
    g_autofree char *ocakey = g_build_filename(other, "ca.key", NULL);
    g_assert_cmpint(g_mkdir(other, 0700), ==, 0);
    g_assert_true(run_tool((const char *const[]){
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", ocakey, "-out", oca, "-days", "2", "-subj", "/CN=another CA", NULL}));
    Tls wrong_ca = {oca, ccrt, ckey}, wrong_key = {ca, ccrt, ocakey};
    g_autofree char *a = tls_failure(&f, &wrong_ca);
    g_assert_nonnull(strstr(a, "down"));
    g_assert_nonnull(strstr(a, "certificate verify failed"));
    g_autofree char *b = tls_failure(&f, &wrong_key);
    g_assert_nonnull(strstr(b, "down"));
    g_assert_nonnull(strstr(b, "key values mismatch"));
  }
  /* A broker whose certificate names another host. */
  {
    g_assert_true(
        make_cert(dir, "elsewhere", "elsewhere.example", "subjectAltName=DNS:elsewhere.example"));
    g_autofree char *ecrt = g_build_filename(dir, "elsewhere.crt", NULL);
    g_autofree char *ekey = g_build_filename(dir, "elsewhere.key", NULL);
    MqttBrokerOptions eo = {.cafile = ca, .certfile = ecrt, .keyfile = ekey};
    Fixture g;
    fixture_setup(&g, &eo);
    g_assert_nonnull(g.broker);
    Tls plain = {ca, NULL, NULL};
    g_autofree char *e = tls_failure(&g, &plain);
    g_assert_nonnull(strstr(e, "certificate verify failed"));
    fixture_teardown(&g);
  }

  c = mqtt_client_new(mqtt_broker_get_port(f.broker),
                      &(MqttClientOptions){.cafile = ca, .certfile = ccrt, .keyfile = ckey},
                      (const char *const[]){"t/st/result", NULL});
  g_assert_true(mqtt_client_wait_connected(c, 5000));
  f.mqtt = start_mqtt(&f, with_tls, &good, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  publish(f.mqtt, 7, NULL, TRUE, NULL);
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(c, "t/st/result", 3000, f.ctx);
    g_assert_nonnull(m);
  }
  fixture_teardown(&f);
  mqtt_test_rm_rf(dir);
}

/* Collects the seqs of result messages, in arrival order. */
static void
collect_seqs(MqttClient *c, GArray *seqs)
{
  g_autoptr(GPtrArray) msgs = mqtt_client_take(c, "t/st/result");

  for (guint i = 0; i < msgs->len; i++) {
    MqttMsg *m = msgs->pdata[i];
    g_autoptr(JsonObject) o = parse_object(m->payload);
    gint64 s = json_object_get_int_member(o, "seq");
    g_array_append_val(seqs, s);
  }
}

/* Every seq in 1..n at least once; first occurrences in order. Returns the
 * number of duplicates. */
static guint
check_seqs(GArray *seqs, gint64 n)
{
  gint64 next = 1;
  guint dups = 0;

  for (guint i = 0; i < seqs->len; i++) {
    gint64 s = g_array_index(seqs, gint64, i);
    if (s < next) {
      dups++;
      continue;
    }
    if (s != next)
      g_error("seq %" G_GINT64_FORMAT " arrived before %" G_GINT64_FORMAT " (gap or reorder)", s,
              next);
    next++;
  }
  g_assert_cmpint(next - 1, ==, n);
  return dups;
}

static void
test_outage(void)
{
  MqttBrokerOptions bo = {.persistence = TRUE};
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) sub = NULL;
  g_autoptr(GArray) seqs = g_array_new(FALSE, FALSE, sizeof(gint64));
  guint64 seq = 0;
  gint64 t0, until;
  guint dups;
  InspMqttStats st;
  gboolean saw_spooled = FALSE, stopped = FALSE, restarted = FALSE;

  fixture_setup(&f, &bo);
  if (f.broker == NULL)
    return;
  sub = mqtt_client_new(mqtt_broker_get_port(f.broker),
                        &(MqttClientOptions){.client_id = "outage-sub", .persistent = TRUE},
                        (const char *const[]){"t/st/result", NULL});
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  f.mqtt = start_mqtt(&f, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));

  /* 20 results/s: 0.5 s up, 2.5 s down, 0.5 s up again. */
  t0 = g_get_monotonic_time();
  while (g_get_monotonic_time() - t0 < 3500 * 1000) {
    gint64 t = g_get_monotonic_time() - t0;
    publish(f.mqtt, ++seq, NULL, FALSE, NULL);
    if (!stopped && t >= 500000) {
      mqtt_broker_stop(f.broker, SIGTERM);
      stopped = TRUE;
    } else if (stopped && !restarted && t >= 3000000) {
      insp_mqtt_get_stats(f.mqtt, &st);
      saw_spooled = st.spooled > 10;
      g_assert_true(mqtt_broker_restart(f.broker, &error));
      restarted = TRUE;
    }
    collect_seqs(sub, seqs);
    g_usleep(50000);
  }
  g_assert_no_error(error);
  g_assert_true(saw_spooled);
  until = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < until) {
    collect_seqs(sub, seqs);
    insp_mqtt_get_stats(f.mqtt, &st);
    if (st.spooled == 0 && seqs->len >= seq)
      break;
    g_usleep(20000);
  }
  g_usleep(300000);
  collect_seqs(sub, seqs);
  dups = check_seqs(seqs, (gint64)seq);
  g_test_message("outage: %" G_GUINT64_FORMAT " results, %u received, %u duplicates", seq,
                 seqs->len, dups);
  insp_mqtt_get_stats(f.mqtt, &st);
  g_assert_cmpuint(st.spooled, ==, 0);
  g_assert_cmpuint(st.dropped_results, ==, 0);
  fixture_teardown(&f);
}

static void
test_sigkill_spool(void)
{
  Fixture f;
  g_autofree char *port = NULL;
  g_autofree char *ready = NULL;
  g_autoptr(MqttClient) sub = NULL;
  g_autoptr(GArray) seqs = g_array_new(FALSE, FALSE, sizeof(gint64));
  g_autoptr(GDir) d = NULL;
  g_autoptr(GError) error = NULL;
  guint files = 0;
  GPid pid;
  int status;
  const char *name;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  port = g_strdup_printf("%d", mqtt_broker_get_port(f.broker));
  ready = write_ready_path(f.spool);
  mqtt_broker_stop(f.broker, SIGKILL);

  /* The broker is down: 20 results go to the spool; then SIGKILL. */
  pid = spawn_child((const char *const[]){"--port", port, "--spool", f.spool, "--station", "st",
                                          "--count", "20", "--ready", ready, "--hold", NULL});
  g_assert_true(mqtt_test_wait_until(file_exists, ready, 8000, NULL));
  kill(pid, SIGKILL);
  status = reap(pid);
  g_assert_true(WIFSIGNALED(status));
  /* All 20 are in the spool's segments (one or two files, not 20). */
  d = g_dir_open(f.spool, 0, &error);
  g_assert_no_error(error);
  while ((name = g_dir_read_name(d)) != NULL)
    if (g_str_has_suffix(name, ".log"))
      files++;
  g_assert_cmpuint(files, >=, 1);
  g_assert_cmpuint(files, <=, 2);
  {
    g_autoptr(InspSpool) sp = insp_spool_open(f.spool, 1 << 30, INSP_SPOOL_FLAGS_NONE, &error);
    InspSpoolStats ss;
    g_assert_no_error(error);
    insp_spool_get_stats(sp, &ss);
    g_assert_cmpuint(ss.n_messages, ==, 20);
  }

  /* Broker back, publisher restarted with nothing new: the spool drains. */
  g_assert_true(mqtt_broker_restart(f.broker, &error));
  g_assert_no_error(error);
  sub = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                        (const char *const[]){"t/st/result", NULL});
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  pid = spawn_child((const char *const[]){"--port", port, "--spool", f.spool, "--station", "st",
                                          "--drain", "8000", NULL});
  status = reap(pid);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
  g_usleep(200000);
  collect_seqs(sub, seqs);
  g_assert_cmpuint(check_seqs(seqs, 20), ==, 0);
  fixture_teardown(&f);
}

static void
small_spool(InspMqttOptions *o, gpointer data)
{
  o->spool_max_mb = 1;
}

static void
test_spool_full(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) sub = NULL;
  g_autofree guint8 *big = g_malloc0(300 * 1024);
  g_autoptr(GBytes) mask = NULL;
  g_autoptr(GPtrArray) events = NULL;
  InspMqttStats st;
  gboolean announced = FALSE;

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  mask = g_bytes_new(big, 300 * 1024);
  mqtt_broker_stop(f.broker, SIGKILL);
  f.mqtt = start_mqtt(&f, small_spool, NULL, &error);
  g_assert_no_error(error);
  /* Offline, 1 MiB of spool: six fails with 300 KiB masks. The oldest masks
   * go (what is kept stays an eighth below the budget: two masks fit); every
   * result stays. */
  for (guint64 seq = 1; seq <= 6; seq++)
    publish(f.mqtt, seq, NULL, TRUE, mask);
  insp_mqtt_get_stats(f.mqtt, &st);
  g_assert_cmpuint(st.dropped_results, ==, 0);
  g_assert_cmpuint(st.dropped_masks, ==, 4);
  g_assert_cmpuint(st.spooled, ==, 8);
  g_assert_cmpuint(st.spool_bytes, <=, 1024 * 1024);

  g_assert_true(mqtt_broker_restart(f.broker, &error));
  sub =
      mqtt_client_new(mqtt_broker_get_port(f.broker), NULL, (const char *const[]){"t/st/#", NULL});
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  g_assert_true(mqtt_test_wait_until(spool_empty, f.mqtt, 8000, f.ctx));
  g_usleep(200000);
  /* The drops were announced on the event topic once connected. */
  events = mqtt_client_take(sub, "t/st/event");
  for (guint i = 0; i < events->len; i++) {
    g_autoptr(JsonObject) o = parse_object(((MqttMsg *)events->pdata[i])->payload);
    if (g_strcmp0(json_object_get_string_member(o, "code"), "spool_full") == 0) {
      g_assert_cmpstr(json_object_get_string_member(o, "level"), ==, "warning");
      /* The first drop is told at once, with its seqs; later ones are
       * gathered for 10 s. */
      g_assert_cmpint(json_object_get_int_member(o, "dropped_masks"), >=, 1);
      g_assert_cmpint(json_object_get_int_member(o, "dropped_results"), ==, 0);
      g_assert_cmpint(json_object_get_int_member(o, "first_mask_seq"), ==, 1);
      g_assert_false(json_object_has_member(o, "first_result_seq"));
      g_assert_nonnull(strstr(json_object_get_string_member(o, "message"), "between seq 1 and"));
      announced = TRUE;
    }
  }
  g_assert_true(announced);
  g_assert_cmpuint(mqtt_client_count(sub, "t/st/result"), ==, 6);
  g_assert_cmpuint(mqtt_client_count(sub, "t/st/mask"), ==, 2);
  fixture_teardown(&f);
}

static gboolean
one_rejected(gpointer data)
{
  InspMqttStats st;

  insp_mqtt_get_stats(data, &st);
  return st.rejected >= 1 && st.spooled == 0;
}

static void
test_rejected(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("mqtt-acl-XXXXXX", &error);
  g_autofree char *acl = g_build_filename(dir, "acl", NULL);
  MqttBrokerOptions bo = {.acl_file = acl};
  Fixture f;
  g_autoptr(MqttClient) sub = NULL;
  g_autoptr(MqttMsg) ev = NULL;
  g_autoptr(JsonObject) o = NULL;
  InspMqttStats st;

  g_assert_no_error(error);
  /* Anonymous clients may write everything but results. */
  g_assert_true(g_file_set_contents(acl,
                                    "topic readwrite t/st/status\ntopic readwrite t/st/event\n"
                                    "topic readwrite t/st/mask\n",
                                    -1, NULL));
  fixture_setup(&f, &bo);
  if (f.broker == NULL)
    return;
  sub = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                        (const char *const[]){"t/st/event", NULL});
  g_assert_true(mqtt_client_wait_connected(sub, 5000));
  f.mqtt = start_mqtt(&f, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  /* The broker answers the PUBACK with "not authorized": the result is
   * dropped (retrying would block the spool), counted and announced. */
  publish(f.mqtt, 1, NULL, FALSE, NULL);
  g_assert_true(mqtt_test_wait_until(one_rejected, f.mqtt, 5000, f.ctx));
  insp_mqtt_get_stats(f.mqtt, &st);
  g_assert_cmpuint(st.rejected, ==, 1);
  g_assert_cmpuint(st.published, ==, 0);
  ev = mqtt_client_wait(sub, "t/st/event", 3000, f.ctx);
  g_assert_nonnull(ev);
  o = parse_object(ev->payload);
  g_assert_cmpstr(json_object_get_string_member(o, "code"), ==, "publish_rejected");
  fixture_teardown(&f);
  mqtt_test_rm_rf(dir);
}

static void
test_parse_command(void)
{
  /* The parser alone (no broker): what the fuzz target exercises. */
  static const struct {
    const char *name, *payload;
    gboolean ok;
  } cases[] = {
      {"trigger", "", TRUE},
      {"trigger", "  A-1 \n", TRUE},
      {"trigger", "\"quoted\"", TRUE},
      {"trigger", "{\"part_id\":12}", TRUE},
      {"trigger", "{\"part_id\":null}", TRUE},
      {"trigger", "{\"part_id\":1.5}", FALSE},
      /* part_id: an integer JSON carries exactly, or a string without NUL */
      {"trigger", "{\"part_id\":99999999999999999999}", FALSE},
      {"trigger", "{\"part_id\":9007199254740992}", TRUE},
      {"trigger", "{\"part_id\":9007199254740993}", FALSE},
      {"trigger", "{\"part_id\":-9007199254740992}", TRUE},
      {"trigger", "{\"part_id\":1e3}", FALSE},
      {"trigger", "{\"part_id\":\"a\\u0000b\"}", FALSE},
      {"trigger", "\"a\\u0000b\"", FALSE},
      {"trigger", "{\"part_id\":\"a\\\\u0000b\"}", TRUE},
      {"trigger", "{\"part_id\":\"a\",\"part_id\":\"b\"}", FALSE},
      {"trigger", "{\"part_id\":{\"x\":1}}", FALSE},
      {"trigger", "bad\x01id", FALSE},
      {"trigger", "\xff\xfe", FALSE},
      {"threshold", "0", TRUE},
      {"threshold", "100", TRUE},
      {"threshold", "1e400", FALSE},
      {"threshold", "nan", FALSE},
      {"threshold", "0.5x", FALSE},
      {"threshold", "{\"pixel_threshold\":0.2}", TRUE},
      {"threshold", "[0.5]", FALSE},
      {"threshold", "{\"threshold\":true}", FALSE},
      {"reload", "anything", TRUE},
      {"snapshot", "", TRUE},
      {"", "", FALSE},
      {"trigger/x", "", FALSE},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(InspMqttCommand) cmd = insp_mqtt_parse_command(
        cases[i].name, (const guint8 *)cases[i].payload, strlen(cases[i].payload), &error);
    if (cases[i].ok != (cmd != NULL))
      g_error("case %" G_GSIZE_FORMAT " (%s '%s'): %s", i, cases[i].name, cases[i].payload,
              error ? error->message : "accepted");
    if (cmd == NULL)
      g_assert_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_COMMAND);
  }
  {
    g_autoptr(InspMqttCommand) cmd =
        insp_mqtt_parse_command("trigger", (const guint8 *)" {\"part_id\":12} ", 16, NULL);
    g_assert_cmpstr(insp_mqtt_command_get_part_id(cmd), ==, "12");
  }
  {
    g_autoptr(InspMqttCommand) cmd =
        insp_mqtt_parse_command("trigger", (const guint8 *)"  A-1 \n", 7, NULL);
    g_assert_cmpstr(insp_mqtt_command_get_part_id(cmd), ==, "A-1");
  }
  {
    const char *big = "{\"part_id\":-9007199254740992}";
    g_autoptr(InspMqttCommand) cmd =
        insp_mqtt_parse_command("trigger", (const guint8 *)big, strlen(big), NULL);
    g_assert_cmpstr(insp_mqtt_command_get_part_id(cmd), ==, "-9007199254740992");
  }
}

/* ---- Home Assistant discovery ---- */

typedef struct {
  const char *station;
  gboolean homeassistant;
  InspMqttCommands commands;
} HaTweak;

static void
ha_tweak(InspMqttOptions *o, gpointer data)
{
  const HaTweak *t = data;

  o->station = t->station;
  o->homeassistant = t->homeassistant;
  o->commands = t->commands;
  o->threshold_min = 0.3;
  o->threshold_max = 0.9;
  o->sw_version = "9.8.7";
}

#define HA_AVAILABILITY                                                                            \
  "{{ 'online' if value_json.state in ('online', 'degraded') else 'offline' }}"

/* Asserts the members every entity shares, and that its unique_id is new in
 * @uids. */
static void
assert_ha_common(JsonObject *o, const char *node_id, const char *status_topic, GHashTable *uids)
{
  JsonObject *dev, *origin, *a;
  JsonArray *ids, *avail;

  assert_member(o, "unique_id", G_TYPE_STRING);
  g_assert_true(g_str_has_prefix(json_object_get_string_member(o, "unique_id"), node_id));
  g_assert_true(g_hash_table_add(uids, g_strdup(json_object_get_string_member(o, "unique_id"))));
  assert_member(o, "name", G_TYPE_STRING);
  dev = json_object_get_object_member(o, "device");
  g_assert_nonnull(dev);
  ids = json_object_get_array_member(dev, "identifiers");
  g_assert_nonnull(ids);
  g_assert_cmpuint(json_array_get_length(ids), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(ids, 0), ==, node_id);
  g_assert_cmpstr(json_object_get_string_member(dev, "manufacturer"), ==, "inspectd");
  assert_member(dev, "name", G_TYPE_STRING);
  assert_member(dev, "model", G_TYPE_STRING);
  g_assert_cmpstr(json_object_get_string_member(dev, "sw_version"), ==, "9.8.7");
  origin = json_object_get_object_member(o, "origin");
  g_assert_nonnull(origin);
  g_assert_cmpstr(json_object_get_string_member(origin, "name"), ==, "inspectd");
  g_assert_cmpstr(json_object_get_string_member(origin, "sw_version"), ==, "9.8.7");
  avail = json_object_get_array_member(o, "availability");
  g_assert_nonnull(avail);
  g_assert_cmpuint(json_array_get_length(avail), ==, 1);
  a = json_array_get_object_element(avail, 0);
  g_assert_cmpstr(json_object_get_string_member(a, "topic"), ==, status_topic);
  g_assert_cmpstr(json_object_get_string_member(a, "payload_available"), ==, "online");
  g_assert_cmpstr(json_object_get_string_member(a, "payload_not_available"), ==, "offline");
  g_assert_cmpstr(json_object_get_string_member(a, "value_template"), ==, HA_AVAILABILITY);
}

/* The retained configs a fresh subscriber of homeassistant/# gets, by topic
 * (empty payloads are not retained: a removed entity is absent). Waits for
 * the retained status first, subscribed after the configs. */
static GHashTable *
ha_retained(Fixture *f, const char *status_topic)
{
  g_autoptr(MqttClient) c =
      mqtt_client_new(mqtt_broker_get_port(f->broker), NULL,
                      (const char *const[]){"homeassistant/#", status_topic, NULL});
  GHashTable *out =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)mqtt_msg_free);
  g_autoptr(MqttMsg) st = NULL;
  g_autoptr(GPtrArray) all = NULL;

  g_assert_true(mqtt_client_wait_connected(c, 5000));
  st = mqtt_client_wait(c, status_topic, 3000, f->ctx);
  g_assert_nonnull(st);
  g_usleep(200000);
  all = mqtt_client_take(c, NULL);
  for (guint i = 0; i < all->len; i++) {
    MqttMsg *m = all->pdata[i];
    if (!g_str_has_prefix(m->topic, "homeassistant/"))
      continue;
    g_assert_true(m->retain);
    g_assert_cmpuint(g_bytes_get_size(m->payload), >, 0);
    g_assert_true(g_hash_table_insert(out, g_strdup(m->topic), g_steal_pointer(&all->pdata[i])));
  }
  return out;
}

static JsonObject *
ha_config(GHashTable *retained, const char *topic)
{
  MqttMsg *m = g_hash_table_lookup(retained, topic);

  if (m == NULL)
    g_error("no retained config on %s", topic);
  g_assert_cmpstr(m->content_type, ==, "application/json");
  return parse_object(m->payload);
}

/* [mqtt] homeassistant: the retained discovery configs, to HA's schema, sent
 * on connect before the status; the threshold as a number only with commands
 * = all; a response topic under the prefix refused; removal leaves nothing
 * retained; with it off, nothing is published under the prefix. */
static void
test_homeassistant(void)
{
  Fixture f;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttClient) live = NULL;
  g_autoptr(GHashTable) uids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  HaTweak tw = {"line.1", TRUE, INSP_MQTT_COMMANDS_ALL};
  const char *node = "inspectd_line_1";
  const char *pre = "homeassistant";
  static const char *const objects[] = {"binary_sensor/inspectd_line_1/verdict",
                                        "sensor/inspectd_line_1/score",
                                        "sensor/inspectd_line_1/fps",
                                        "sensor/inspectd_line_1/pass",
                                        "sensor/inspectd_line_1/fail",
                                        "image/inspectd_line_1/mask",
                                        "number/inspectd_line_1/threshold",
                                        NULL};

  fixture_setup(&f, NULL);
  if (f.broker == NULL)
    return;
  live = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                         (const char *const[]){"homeassistant/#", "t/line.1/status", NULL});
  g_assert_true(mqtt_client_wait_connected(live, 5000));
  g_usleep(100000);
  f.mqtt = start_mqtt(&f, ha_tweak, &tw, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));

  /* On connect: the seven configs (retained, QoS 1), then the status. */
  {
    g_autoptr(MqttMsg) st = mqtt_client_wait(live, "t/line.1/status", 3000, f.ctx);
    g_autoptr(GPtrArray) before = NULL;
    g_assert_nonnull(st);
    before = mqtt_client_take(live, NULL);
    g_assert_cmpuint(before->len, ==, 7);
    for (guint i = 0; i < before->len; i++) {
      MqttMsg *m = before->pdata[i];
      g_autofree char *want = g_strdup_printf("%s/%s/config", pre, objects[i]);
      g_assert_cmpstr(m->topic, ==, want);
      g_assert_true(m->retain);
      g_assert_cmpint(m->qos, ==, 1);
    }
  }

  /* What a Home Assistant that starts now reads. */
  {
    g_autoptr(GHashTable) r = ha_retained(&f, "t/line.1/status");
    g_autoptr(JsonObject) bs = NULL, score = NULL, fps = NULL, pass = NULL, fail = NULL;
    g_autoptr(JsonObject) img = NULL, num = NULL;

    g_assert_cmpuint(g_hash_table_size(r), ==, 7);
    bs = ha_config(r, "homeassistant/binary_sensor/inspectd_line_1/verdict/config");
    assert_ha_common(bs, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(bs, "unique_id"), ==, "inspectd_line_1_verdict");
    g_assert_cmpstr(json_object_get_string_member(bs, "state_topic"), ==, "t/line.1/result");
    g_assert_cmpstr(json_object_get_string_member(bs, "value_template"), ==,
                    "{{ 'ON' if value_json.verdict == 'fail' else 'OFF' }}");
    g_assert_cmpstr(json_object_get_string_member(bs, "payload_on"), ==, "ON");
    g_assert_cmpstr(json_object_get_string_member(bs, "payload_off"), ==, "OFF");
    g_assert_cmpstr(json_object_get_string_member(bs, "device_class"), ==, "problem");

    score = ha_config(r, "homeassistant/sensor/inspectd_line_1/score/config");
    assert_ha_common(score, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(score, "state_topic"), ==, "t/line.1/result");
    g_assert_cmpstr(json_object_get_string_member(score, "value_template"), ==,
                    "{{ value_json.score }}");
    g_assert_cmpstr(json_object_get_string_member(score, "state_class"), ==, "measurement");

    fps = ha_config(r, "homeassistant/sensor/inspectd_line_1/fps/config");
    assert_ha_common(fps, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(fps, "state_topic"), ==, "t/line.1/status");
    g_assert_cmpstr(json_object_get_string_member(fps, "value_template"), ==,
                    "{{ value_json.fps }}");
    g_assert_cmpstr(json_object_get_string_member(fps, "unit_of_measurement"), ==, "parts/s");
    g_assert_cmpstr(json_object_get_string_member(fps, "state_class"), ==, "measurement");

    pass = ha_config(r, "homeassistant/sensor/inspectd_line_1/pass/config");
    fail = ha_config(r, "homeassistant/sensor/inspectd_line_1/fail/config");
    assert_ha_common(pass, node, "t/line.1/status", uids);
    assert_ha_common(fail, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(pass, "state_topic"), ==, "t/line.1/status");
    g_assert_cmpstr(json_object_get_string_member(fail, "state_topic"), ==, "t/line.1/status");
    g_assert_cmpstr(json_object_get_string_member(pass, "value_template"), ==,
                    "{{ value_json.pass }}");
    g_assert_cmpstr(json_object_get_string_member(fail, "value_template"), ==,
                    "{{ value_json.fail }}");
    g_assert_cmpstr(json_object_get_string_member(pass, "state_class"), ==, "total_increasing");
    g_assert_cmpstr(json_object_get_string_member(fail, "state_class"), ==, "total_increasing");

    img = ha_config(r, "homeassistant/image/inspectd_line_1/mask/config");
    assert_ha_common(img, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(img, "image_topic"), ==, "t/line.1/mask");
    g_assert_cmpstr(json_object_get_string_member(img, "content_type"), ==, "image/png");
    g_assert_false(json_object_has_member(img, "image_encoding")); /* raw PNG bytes */
    g_assert_false(json_object_has_member(img, "state_topic"));

    num = ha_config(r, "homeassistant/number/inspectd_line_1/threshold/config");
    assert_ha_common(num, node, "t/line.1/status", uids);
    g_assert_cmpstr(json_object_get_string_member(num, "command_topic"), ==,
                    "t/line.1/cmd/threshold");
    g_assert_cmpstr(json_object_get_string_member(num, "command_template"), ==,
                    "{\"threshold\": {{ value }}}");
    g_assert_cmpstr(json_object_get_string_member(num, "state_topic"), ==, "t/line.1/status");
    g_assert_cmpstr(json_object_get_string_member(num, "value_template"), ==,
                    "{{ value_json.threshold }}");
    g_assert_cmpfloat(json_object_get_double_member(num, "min"), ==, 0.3);
    g_assert_cmpfloat(json_object_get_double_member(num, "max"), ==, 0.9);
    g_assert_cmpfloat(json_object_get_double_member(num, "step"), ==, 0.01);
    g_assert_cmpuint(g_hash_table_size(uids), ==, 7);
  }

  /* [inspection] threshold_min/max are hot: the number is announced again. */
  insp_mqtt_set_threshold_range(f.mqtt, 0.4, 0.8);
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(
        live, "homeassistant/number/inspectd_line_1/threshold/config", 3000, f.ctx);
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(GPtrArray) rest = NULL;
    g_assert_nonnull(m);
    g_assert_true(m->retain);
    o = parse_object(m->payload);
    g_assert_cmpfloat(json_object_get_double_member(o, "min"), ==, 0.4);
    g_assert_cmpfloat(json_object_get_double_member(o, "max"), ==, 0.8);
    g_usleep(200000);
    rest = mqtt_client_take(live, NULL);
  }

  /* What the number's command_template renders for 0.6 is a threshold
   * command the daemon takes. */
  {
    g_autoptr(InspMqttCommand) cmd = NULL;
    double t = 0;
    const char *rendered = "{\"threshold\": 0.6}";
    cmd = insp_mqtt_parse_command("threshold", (const guint8 *)rendered, strlen(rendered), &error);
    g_assert_no_error(error);
    g_assert_true(insp_mqtt_command_get_threshold(cmd, &t));
    g_assert_cmpfloat(t, ==, 0.6);
  }

  /* A response topic under the discovery prefix is refused: HA would take
   * the reply for a config. */
  {
    g_autoptr(MqttClient) c =
        mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                        (const char *const[]){"t/line.1/cmd/trigger/reply", NULL});
    g_autoptr(MqttMsg) m = NULL;
    g_autoptr(JsonObject) o = NULL;
    g_assert_true(mqtt_client_wait_connected(c, 5000));
    g_usleep(100000);
    mqtt_client_publish(c, "t/line.1/cmd/trigger", "P", 1, "homeassistant/sensor/x/y/config", NULL,
                        0, FALSE);
    m = mqtt_client_wait(c, "t/line.1/cmd/trigger/reply", 3000, f.ctx);
    g_assert_nonnull(m);
    o = parse_object(m->payload);
    g_assert_false(json_object_get_boolean_member(o, "ok"));
    g_assert_nonnull(strstr(json_object_get_string_member(o, "error"), "Home Assistant"));
    g_assert_cmpuint(f.n_handled, ==, 0);
  }
  g_assert_cmpuint(mqtt_client_count(live, "homeassistant/sensor/x/y/config"), ==, 0);

  /* commands = trigger: no number; the one the run above left is removed. */
  g_clear_pointer(&f.mqtt, insp_mqtt_free);
  tw.commands = INSP_MQTT_COMMANDS_TRIGGER;
  f.mqtt = start_mqtt(&f, ha_tweak, &tw, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  {
    g_autoptr(GHashTable) r = NULL;
    g_autoptr(MqttMsg) removed = mqtt_client_wait(
        live, "homeassistant/number/inspectd_line_1/threshold/config", 3000, f.ctx);
    g_assert_nonnull(removed);
    g_assert_cmpuint(g_bytes_get_size(removed->payload), ==, 0);
    g_assert_true(removed->retain);
    r = ha_retained(&f, "t/line.1/status");
    g_assert_cmpuint(g_hash_table_size(r), ==, 6);
    g_assert_false(
        g_hash_table_contains(r, "homeassistant/number/inspectd_line_1/threshold/config"));
  }

  /* Turned off: an empty retained payload on every config topic, and nothing
   * is retained under the prefix after it. */
  mqtt_client_free(g_steal_pointer(&live));
  live = mqtt_client_new(mqtt_broker_get_port(f.broker), NULL,
                         (const char *const[]){"homeassistant/#", NULL});
  g_assert_true(mqtt_client_wait_connected(live, 5000));
  {
    g_autoptr(MqttMsg) m =
        mqtt_client_wait(live, "homeassistant/image/inspectd_line_1/mask/config", 3000, f.ctx);
    g_autoptr(GPtrArray) rest = NULL;
    g_assert_nonnull(m);
    g_usleep(200000);
    rest = mqtt_client_take(live, NULL);
  }
  g_assert_true(insp_mqtt_remove_homeassistant(f.mqtt, 3000));
  {
    g_autoptr(GPtrArray) gone = NULL;
    g_autoptr(GHashTable) r = NULL;
    g_usleep(200000);
    gone = mqtt_client_take(live, NULL);
    g_assert_cmpuint(gone->len, ==, 7);
    for (guint i = 0; i < gone->len; i++) {
      MqttMsg *m = gone->pdata[i];
      g_autofree char *want = g_strdup_printf("%s/%s/config", pre, objects[i]);
      g_assert_cmpstr(m->topic, ==, want);
      g_assert_cmpuint(g_bytes_get_size(m->payload), ==, 0);
      g_assert_true(m->retain);
    }
    r = ha_retained(&f, "t/line.1/status");
    g_assert_cmpuint(g_hash_table_size(r), ==, 0);
  }

  /* Off from the start: nothing at all under the prefix. */
  g_clear_pointer(&f.mqtt, insp_mqtt_free);
  tw.homeassistant = FALSE;
  tw.commands = INSP_MQTT_COMMANDS_ALL;
  f.mqtt = start_mqtt(&f, ha_tweak, &tw, &error);
  g_assert_no_error(error);
  g_assert_true(mqtt_test_wait_until(is_connected, f.mqtt, 5000, f.ctx));
  g_assert_true(insp_mqtt_remove_homeassistant(f.mqtt, 1000)); /* a no-op */
  {
    g_autoptr(MqttMsg) m = mqtt_client_wait(live, NULL, 1000, f.ctx);
    g_assert_null(m);
  }
  fixture_teardown(&f);
}

int
main(int argc, char **argv)
{
  g_autofree char *dir = g_path_get_dirname(argv[0]);

  g_test_init(&argc, &argv, NULL);
  child_path = g_build_filename(dir, "mqtt-publisher-child", NULL);
  signal(SIGPIPE, SIG_IGN);
  g_test_add_func("/mqtt/parse-command", test_parse_command);
  g_test_add_func("/mqtt/schema", test_schema);
  g_test_add_func("/mqtt/will", test_will);
  g_test_add_func("/mqtt/commands", test_commands);
  g_test_add_func("/mqtt/commands-disabled", test_commands_disabled);
  g_test_add_func("/mqtt/commands-guarded", test_commands_guarded);
  g_test_add_func("/mqtt/json-numbers", test_json_numbers);
  g_test_add_func("/mqtt/auth", test_auth);
  g_test_add_func("/mqtt/tls", test_tls);
  g_test_add_func("/mqtt/outage", test_outage);
  g_test_add_func("/mqtt/sigkill-spool", test_sigkill_spool);
  g_test_add_func("/mqtt/spool-full", test_spool_full);
  g_test_add_func("/mqtt/rejected", test_rejected);
  g_test_add_func("/mqtt/homeassistant", test_homeassistant);
  return g_test_run();
}
