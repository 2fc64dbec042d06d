/* The inspectd daemon: wires config -> model -> pipeline -> MQTT publisher
 * and runs the GLib main loop that owns control (signals, the config file
 * watch, MQTT commands, the status and watchdog timers, reloads).
 *
 * Lifecycle: start-up failures (invalid config, missing model, unopenable
 * camera, unreadable TLS files, unusable state folder) return exit status 1
 * after one clear line on stderr; failures after start degrade (status
 * "degraded", an event) instead of exiting. SIGHUP, a change of the config
 * file or its drop-ins, and the MQTT reload command reload; SIGTERM and
 * SIGINT stop: capture stops, the queue drains, the publisher flushes, exit 0. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Where the demo line's live page listens unless --http says otherwise. */
#define INSP_DEMO_HTTP_LISTEN "127.0.0.1:8080"

typedef struct {
  const char *config_path;   /* NULL: the embedded demo line */
  gboolean print_decisions;  /* one line per part on stdout (default in the demo) */
  guint64 count;             /* stop after this many parts; 0: run until signalled */
  double demo_fps;           /* demo line speed; 0: as fast as the workers go */
  int demo_size;             /* demo part images, pixels square; 0: 256 */
  guint demo_defect_every;   /* every Nth demo part is defective; 0: 5 */
  const char *station;       /* station id when the config sets no [station] id; NULL: host */
  const char *http_listen;   /* overrides [http] listen ("" = off); NULL: the config's, and
                              * for the demo INSP_DEMO_HTTP_LISTEN */
  guint64 debug_stall_after; /* tests: the results thread hangs after this many parts
                              * until the stop (shows the watchdog stop pinging); 0: off */
  guint debug_seq_block;     /* tests: seqs reserved at a time; 0: INSP_SEQ_BLOCK */
} InspDaemonOptions;

void insp_daemon_options_init(InspDaemonOptions *opt);

/* Runs the daemon on the calling (main) thread until it stops; returns the
 * process exit status. */
int insp_daemon_main(const InspDaemonOptions *opt);

G_END_DECLS
