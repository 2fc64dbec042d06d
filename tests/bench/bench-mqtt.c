/* Benchmark of the MQTT module against a local mosquitto: results per second
 * at QoS 0 and 1 (publish call rate, and end to end until the subscriber has
 * them all / the spool is empty), the spool's write rate with and without
 * fsync, and the replay rate of a spool filled while the broker was down.
 * Prints numbers, never fails. Usage: bench-mqtt [N] (results per run). */
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "insp-mqtt.h"
#include "insp-spool.h"
#include "mqtt-helpers.h"

static InspMqtt *
make_mqtt(int port, const char *spool, int qos)
{
  InspMqttOptions o;
  g_autoptr(GError) error = NULL;
  InspMqtt *m;

  insp_mqtt_options_init(&o);
  o.host = "127.0.0.1";
  o.port = port;
  o.topic_prefix = "b";
  o.station = "st";
  o.spool_dir = spool;
  o.qos = qos;
  o.reconnect_min_s = 1;
  o.reconnect_max_s = 1;
  m = insp_mqtt_new(&o, NULL, &error);
  if (m == NULL || !insp_mqtt_start(m, &error)) {
    fprintf(stderr, "bench-mqtt: %s\n", error->message);
    return NULL;
  }
  return m;
}

static gboolean
wait_stats(InspMqtt *m, gboolean want_connected, gboolean want_empty, double timeout_s)
{
  gint64 until = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);
  InspMqttStats st;

  do {
    insp_mqtt_get_stats(m, &st);
    if ((!want_connected || st.connected) && (!want_empty || st.spooled == 0))
      return TRUE;
    g_usleep(1000);
  } while (g_get_monotonic_time() < until);
  return FALSE;
}

static void
one_result(InspMqtt *m, guint64 seq)
{
  InspRegion reg = {12, 34, 56, 78, 900, 0.87f};
  InspPart r = {.seq = seq,
                .capture_time_us = g_get_real_time(),
                .fail = TRUE,
                .score = 0.87,
                .threshold = 0.5,
                .model = (char *)"bench",
                .latency_ms = 9.5,
                .regions = &reg,
                .n_regions = 1};

  insp_mqtt_publish_result(m, &r, NULL);
}

static void
bench_publish(MqttBroker *broker, int qos, guint n)
{
  g_autofree char *spool = g_dir_make_tmp("bench-mqtt-XXXXXX", NULL);
  g_autoptr(MqttClient) sub = mqtt_client_new(mqtt_broker_get_port(broker), NULL,
                                              (const char *const[]){"b/st/result", NULL});
  InspMqtt *m;
  gint64 t0, t1, t2, until;
  guint got = 0;

  mqtt_client_wait_connected(sub, 5000);
  m = make_mqtt(mqtt_broker_get_port(broker), spool, qos);
  if (m == NULL || !wait_stats(m, TRUE, FALSE, 5)) {
    printf("qos %d: no connection\n", qos);
    goto out;
  }
  t0 = g_get_monotonic_time();
  for (guint i = 1; i <= n; i++)
    one_result(m, i);
  t1 = g_get_monotonic_time();
  until = t1 + 60 * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < until) {
    g_autoptr(GPtrArray) msgs = mqtt_client_take(sub, "b/st/result");
    got += msgs->len;
    if (got >= n)
      break;
    g_usleep(1000);
  }
  wait_stats(m, FALSE, TRUE, 10);
  t2 = g_get_monotonic_time();
  printf("qos %d: %u results: publish calls %.0f /s (%.1f us each), delivered to a subscriber "
         "%.0f /s end to end (%u received)\n",
         qos, n, n / ((t1 - t0) / 1e6), (double)(t1 - t0) / n, got / ((t2 - t0) / 1e6), got);
out:
  insp_mqtt_free(m);
  mqtt_test_rm_rf(spool);
}

static void
bench_spool(guint n, gboolean fsync_on)
{
  g_autofree char *dir = g_dir_make_tmp("bench-spool-XXXXXX", NULL);
  g_autoptr(GError) error = NULL;
  InspSpool *spool = insp_spool_open(
      dir, 1ull << 32, fsync_on ? INSP_SPOOL_FLAGS_FSYNC : INSP_SPOOL_FLAGS_NONE, &error);
  g_autofree char *payload = g_strnfill(330, 'x'); /* about one result's JSON */
  g_autoptr(GBytes) bytes = g_bytes_new_static(payload, 330);
  InspSpoolMessage msg = {
      .kind = INSP_SPOOL_KIND_RESULT, .qos = 1, .topic = (char *)"b/st/result", .payload = bytes};
  gint64 t0, t1, t2;
  InspSpoolMessage *got;
  guint claimed = 0;

  if (spool == NULL) {
    printf("spool: %s\n", error->message);
    return;
  }
  t0 = g_get_monotonic_time();
  for (guint i = 1; i <= n; i++) {
    msg.seq = i;
    insp_spool_push(spool, &msg, NULL, NULL, NULL);
  }
  t1 = g_get_monotonic_time();
  while ((got = insp_spool_claim_next(spool)) != NULL) {
    insp_spool_ack(spool, got->id);
    insp_spool_message_free(got);
    claimed++;
  }
  t2 = g_get_monotonic_time();
  printf("spool (fsync %s): write %.0f msgs/s (%.1f us each); claim+read+ack %.0f msgs/s "
         "(%u)\n",
         fsync_on ? "on " : "off", n / ((t1 - t0) / 1e6), (double)(t1 - t0) / n,
         claimed / ((t2 - t1) / 1e6), claimed);
  insp_spool_free(spool);
  mqtt_test_rm_rf(dir);
}

static void
bench_replay(MqttBroker *broker, guint n)
{
  g_autofree char *spool = g_dir_make_tmp("bench-replay-XXXXXX", NULL);
  g_autoptr(GError) error = NULL;
  InspMqtt *m;
  gint64 t0, t1;
  InspMqttStats st;

  m = make_mqtt(mqtt_broker_get_port(broker), spool, 1);
  if (m == NULL)
    return;
  wait_stats(m, TRUE, FALSE, 5);
  mqtt_broker_stop(broker, SIGKILL);
  wait_stats(m, FALSE, FALSE, 1);
  g_usleep(200000);
  for (guint i = 1; i <= n; i++)
    one_result(m, 1000000 + i);
  insp_mqtt_get_stats(m, &st);
  if (!mqtt_broker_restart(broker, &error)) {
    printf("replay: %s\n", error->message);
    goto out;
  }
  /* The reconnect happens after the backoff: time from the connection. */
  wait_stats(m, TRUE, FALSE, 10);
  t0 = g_get_monotonic_time();
  wait_stats(m, FALSE, TRUE, 60);
  t1 = g_get_monotonic_time();
  printf("replay: %u spooled results sent and acknowledged at %.0f /s after reconnect\n",
         st.spooled, st.spooled / ((t1 - t0) / 1e6));
out:
  insp_mqtt_free(m);
  mqtt_test_rm_rf(spool);
}

int
main(int argc, char **argv)
{
  guint n = argc > 1 ? (guint)strtoul(argv[1], NULL, 10) : 5000;
  g_autoptr(GError) error = NULL;
  g_autoptr(MqttBroker) broker = NULL;

  signal(SIGPIPE, SIG_IGN);
  if (n == 0)
    n = 5000;
  bench_spool(n, FALSE);
  bench_spool(MIN(n, 500u), TRUE);
  broker = mqtt_broker_start(NULL, &error);
  if (broker == NULL) {
    printf("no broker: %s\n", error->message);
    return 0;
  }
  bench_publish(broker, 0, n);
  bench_publish(broker, 1, n);
  bench_replay(broker, n);
  return 0;
}
