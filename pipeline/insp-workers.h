/* The worker pool: N inspector threads that pop frames from a frame queue,
 * score each through the current InspScorer, and one delivery thread that
 * hands the results to a callback in pop order (the reorder buffer). Knows no
 * GStreamer: a test can push frames built in memory and read the results.
 *
 * Ownership: the pool borrows the queue (it must outlive the pool's threads)
 * and holds a reference of the current scorer. Results are owned by the pool;
 * the callback borrows one for the duration of the call.
 * Threads (created by insp_workers_start(), joined by insp_workers_join()):
 * "insp-worker-N" (scoring), "insp-results" (the only caller of the result
 * callback). The other functions are for any thread. */
#pragma once

#include <glib.h>

#include "insp-frame-queue.h"
#include "insp-scorer.h"

G_BEGIN_DECLS

/* Called from "insp-results", in frame index order, one at a time, never with
 * a pool lock held. */
typedef void (*InspWorkersResultFunc)(const InspResult *result, gpointer user_data);

typedef struct {
  guint64 inspected;    /* results delivered */
  guint64 score_errors; /* results with ok = FALSE */
  double fps;           /* delivered per second over the last few seconds; 0 when idle */
} InspWorkersStats;

typedef struct _InspWorkers InspWorkers;

/* A pool of @n_workers (1..64) threads, not started. Takes a reference of
 * @scorer. The caller owns the pool. */
InspWorkers *insp_workers_new(guint n_workers, InspScorer *scorer, InspWorkersResultFunc func,
                              gpointer user_data);
/* Starts the threads on @queue (borrowed until insp_workers_join()). */
void insp_workers_start(InspWorkers *w, InspFrameQueue *queue);
/* Waits until every worker saw the queue end (the caller closes it to drain,
 * or flushes it to stop at once), then until every result is delivered, and
 * joins all threads. Every frame popped yields exactly one result. Idempotent;
 * the pool may be started again. */
void insp_workers_join(InspWorkers *w);
/* Frames that start scoring after this call use @scorer (a reference is
 * taken); each worker rebuilds its state on its next frame. */
void insp_workers_set_scorer(InspWorkers *w, InspScorer *scorer);
void insp_workers_get_stats(InspWorkers *w, InspWorkersStats *out);
void insp_workers_free(InspWorkers *w); /* joins first; accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspWorkers, insp_workers_free)

/* Blocks every signal in the calling thread (the threads of pipeline/ call it
 * first: signals reach only the main loop). */
void insp_workers_block_signals(void);

G_END_DECLS
