/* inspectd run: the daemon in the foreground. With -c it runs the config's
 * station; with no -c the embedded demo line (synthetic parts, a model trained
 * at start, one line per decision on stdout). --demo-write-dataset DIR
 * writes the synthetic parts as an MVTec AD data set instead, for
 * `inspectd train` / `inspectd eval` and the tests. Every flag the README
 * documents is shown by --help; only the tests' --debug-* flags are hidden.
 * Main thread only. */
#include <stdio.h>
#include <string.h>

#include "insp-cli.h"
#include "insp-daemon.h"
#include "insp-synth.h"

int
insp_cmd_run(int argc, char **argv)
{
  int status;
  g_autofree char *config = NULL;
  g_autofree char *dataset = NULL;
  gint64 count = 0;
  gboolean verbose = FALSE;
  double demo_fps = -1.0;
  g_autofree char *http = NULL;
  int demo_size = 0, demo_every = -1;
  int ds_train = 30, ds_test = 10;
  gint64 stall_after = 0, seq_block = 0;
  g_autofree char *station = NULL;
  const GOptionEntry entries[] = {
      {"station", 0, 0, G_OPTION_ARG_STRING, &station,
       "station id when the config sets no [station] id (inspectd@NAME passes NAME); "
       "default: the host name",
       "NAME"},
      {"config", 'c', 0, G_OPTION_ARG_FILENAME, &config,
       "the config file (drop-ins in FILE.d/); without it, the demo line", "FILE"},
      {"count", 'n', 0, G_OPTION_ARG_INT64, &count,
       "stop after N inspected parts (default: run until SIGTERM/SIGINT)", "N"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose,
       "print one line per decision on stdout (always on for the demo line)", NULL},
      {"http", 0, 0, G_OPTION_ARG_STRING, &http,
       "serve the live page, /metrics and /healthz on HOST:PORT (overrides [http] listen; \"\" "
       "= off; the demo line's default: " INSP_DEMO_HTTP_LISTEN ")",
       "HOST:PORT"},
      {"demo-fps", 0, 0, G_OPTION_ARG_DOUBLE, &demo_fps,
       "demo line speed in parts per second (default 4; 0: as fast as possible)", "FPS"},
      {"demo-size", 0, 0, G_OPTION_ARG_INT, &demo_size,
       "demo part image size in pixels (default 256)", "N"},
      {"demo-defect-every", 0, 0, G_OPTION_ARG_INT, &demo_every,
       "every Nth demo part is defective (default 5)", "N"},
      {"demo-write-dataset", 0, 0, G_OPTION_ARG_FILENAME, &dataset,
       "write the synthetic parts as an MVTec AD data set into DIR and exit", "DIR"},
      {"dataset-train", 0, 0, G_OPTION_ARG_INT, &ds_train,
       "with --demo-write-dataset: good training images (default 30)", "N"},
      {"dataset-test", 0, 0, G_OPTION_ARG_INT, &ds_test,
       "with --demo-write-dataset: test images per type (default 10)", "N"},
      {"debug-seq-block", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &seq_block,
       "tests: reserve sequence numbers N at a time (default 1000)", "N"},
      {"debug-stall-after", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &stall_after,
       "tests: hang the results thread after N parts (the watchdog must stop)", "N"},
      G_OPTION_ENTRY_NULL};

  if (!insp_cli_parse(&argc, &argv, "",
                      "Runs the inspection daemon in the foreground. Without -c it runs the demo\n"
                      "line: synthetic parts (every 5th defective), a model trained at start,\n"
                      "one line per decision on stdout, results to a broker on localhost:1883\n"
                      "when one answers (spooled otherwise). SIGHUP reloads the config;\n"
                      "SIGTERM and SIGINT drain the queue, flush the results and exit.",
                      entries, &status))
    return status;
  if (argc > 1) {
    fprintf(stderr, "inspectd run: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  if (count < 0 || stall_after < 0 || seq_block < 0 || seq_block > 1000000 || demo_size < 0 ||
      (demo_fps < 0 && demo_fps != -1.0)) {
    fprintf(stderr, "inspectd run: --count, --demo-size and --demo-fps must not be negative\n");
    return 2;
  }

  if (station != NULL) {
    gboolean ok = *station != '\0' && strlen(station) <= 64;

    for (const char *c = station; ok && *c; c++)
      ok = g_ascii_isalnum(*c) || *c == '.' || *c == '_' || *c == '-';
    if (!ok) {
      fprintf(stderr, "inspectd run: --station '%s': use 1-64 letters, digits, '.', '_', '-'\n",
              station);
      return 2;
    }
  }
  if (dataset) {
    g_autoptr(GError) error = NULL;
    int size = demo_size > 0 ? demo_size : 256;
    if (ds_train < 0 || ds_test < 0 ||
        !insp_synth_write_dataset(dataset, size, ds_train, ds_test, ds_test, 1, &error)) {
      fprintf(stderr, "inspectd run: %s\n", error ? error->message : "negative image count");
      return 1;
    }
    printf("wrote a synthetic data set (%dx%d, %d train, %d test per type) to %s\n", size, size,
           ds_train, ds_test, dataset);
    return 0;
  }

  InspDaemonOptions opt;
  insp_daemon_options_init(&opt);
  opt.config_path = config;
  opt.station = station;
  opt.http_listen = http;
  opt.print_decisions = verbose || config == NULL;
  opt.count = (guint64)count;
  opt.debug_stall_after = (guint64)stall_after;
  opt.debug_seq_block = (guint)seq_block;
  if (demo_fps >= 0)
    opt.demo_fps = demo_fps;
  if (demo_size > 0)
    opt.demo_size = demo_size;
  if (demo_every >= 0)
    opt.demo_defect_every = (guint)demo_every;
  return insp_daemon_main(&opt);
}
