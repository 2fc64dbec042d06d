/* Helper process for test-mqtt: publishes results with the daemon's MQTT
 * module, so the test can SIGKILL a publisher (the will, the spool surviving
 * a crash). Options:
 *   --port N --spool DIR [--station S] [--first SEQ] [--count N]
 *   [--ready FILE]  written once all results are handed over (and, with
 *                   --wait-connect, once connected and the status is out)
 *   [--wait-connect] [--hold] (sleep until killed) [--drain MS] (exit once the
 *   spool is empty, or fail after MS)
 * Exit status: 0 ok, 1 usage or setup error, 2 drain timed out. */
#include <glib.h>
#include <stdio.h>

#include "insp-mqtt.h"

int
main(int argc, char **argv)
{
  int port = 0, count = 0, drain_ms = 0;
  gint64 first = 1;
  g_autofree char *spool = NULL;
  g_autofree char *station = NULL;
  g_autofree char *ready = NULL;
  gboolean hold = FALSE, wait_connect = FALSE;
  GOptionEntry entries[] = {
      {"port", 0, 0, G_OPTION_ARG_INT, &port, "broker port", "N"},
      {"spool", 0, 0, G_OPTION_ARG_FILENAME, &spool, "spool dir", "DIR"},
      {"station", 0, 0, G_OPTION_ARG_STRING, &station, "station", "S"},
      {"first", 0, 0, G_OPTION_ARG_INT64, &first, "first seq", "N"},
      {"count", 0, 0, G_OPTION_ARG_INT, &count, "results to publish", "N"},
      {"ready", 0, 0, G_OPTION_ARG_FILENAME, &ready, "file to write when ready", "FILE"},
      {"wait-connect", 0, 0, G_OPTION_ARG_NONE, &wait_connect, "wait for the broker", NULL},
      {"hold", 0, 0, G_OPTION_ARG_NONE, &hold, "sleep until killed", NULL},
      {"drain", 0, 0, G_OPTION_ARG_INT, &drain_ms, "wait until the spool is empty", "MS"},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GOptionContext) octx = g_option_context_new("- MQTT publisher for tests");
  g_autoptr(GError) error = NULL;
  g_autoptr(InspMqtt) mqtt = NULL;
  InspMqttOptions opts;
  InspMqttStats st;
  gint64 until;

  g_option_context_add_main_entries(octx, entries, NULL);
  if (!g_option_context_parse(octx, &argc, &argv, &error) || spool == NULL || port <= 0) {
    fprintf(stderr, "usage: %s --port N --spool DIR ...\n", argv[0]);
    return 1;
  }
  insp_mqtt_options_init(&opts);
  opts.host = "127.0.0.1";
  opts.port = port;
  opts.topic_prefix = "t";
  opts.station = station ? station : "child";
  opts.spool_dir = spool;
  opts.reconnect_min_s = 1;
  opts.reconnect_max_s = 1;
  opts.keepalive = 5;
  mqtt = insp_mqtt_new(&opts, NULL, &error);
  if (mqtt == NULL || !insp_mqtt_start(mqtt, &error)) {
    fprintf(stderr, "child: %s\n", error->message);
    return 1;
  }
  if (wait_connect) {
    until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    do {
      insp_mqtt_get_stats(mqtt, &st);
      g_usleep(5000);
    } while (!st.connected && g_get_monotonic_time() < until);
    if (!st.connected) {
      fprintf(stderr, "child: no connection\n");
      return 1;
    }
    g_usleep(100000); /* the status published on connect reaches the broker */
  }
  for (int i = 0; i < count; i++) {
    InspRegion reg = {.x = 1, .y = 2, .w = 3, .h = 4, .area = 5, .score = 0.9f};
    InspPart r = {.seq = (guint64)(first + i),
                  .capture_time_us = g_get_real_time(),
                  .fail = TRUE,
                  .score = 0.9,
                  .threshold = 0.5,
                  .model = (char *)"child",
                  .latency_ms = 1.5,
                  .regions = &reg,
                  .n_regions = 1};
    if (!insp_mqtt_publish_result(mqtt, &r, &error)) {
      fprintf(stderr, "child: %s\n", error->message);
      return 1;
    }
  }
  if (ready != NULL && !g_file_set_contents(ready, "ready\n", -1, &error)) {
    fprintf(stderr, "child: %s\n", error->message);
    return 1;
  }
  if (hold)
    for (;;)
      g_usleep(G_USEC_PER_SEC);
  if (drain_ms > 0) {
    until = g_get_monotonic_time() + (gint64)drain_ms * 1000;
    do {
      insp_mqtt_get_stats(mqtt, &st);
      if (st.spooled == 0)
        return 0;
      g_usleep(10000);
    } while (g_get_monotonic_time() < until);
    fprintf(stderr, "child: %u messages still spooled\n", st.spooled);
    return 2;
  }
  return 0;
}
