/* The worker pool: "insp-worker-N" threads pop frames from the frame queue
 * and score them through the current scorer; "insp-results" takes the
 * results out of the reorder buffer in index order and calls the result
 * callback.
 *
 * Invariants: every frame popped yields exactly one InspResult (ok or with an
 * error), so the reorder buffer never waits on a hole; results leave in pop
 * order, which is push order. A worker keeps its scorer state for as long as
 * the current scorer stays the same, and finalizes it with the scorer that
 * made it.
 * Locks (never nested, no callback under one): scorer_lock (the current
 * scorer), reorder_lock (results by index, workers alive), stats_lock. */
#include "insp-workers.h"

#include <pthread.h>
#include <signal.h>

#include "insp-pipeline-error.h"

#define FPS_WINDOW 64
#define MAX_WORKERS 64

struct _InspWorkers {
  guint n_workers;
  InspWorkersResultFunc func;
  gpointer user_data;
  InspFrameQueue *queue; /* borrowed while started */
  GThread **threads;
  GThread *results_thread;

  /* scorer_lock */
  GMutex scorer_lock;
  InspScorer *scorer;

  /* reorder_lock */
  GMutex reorder_lock;
  GCond reorder_cond;
  GHashTable *reorder; /* index -> InspResult */
  guint64 next_index;
  guint workers_alive;

  /* stats_lock */
  GMutex stats_lock;
  InspWorkersStats stats;
  gint64 done_times[FPS_WINDOW];
  guint n_done_times;
};

typedef struct {
  InspWorkers *w;
  int index;
} WorkerArg;

void
insp_workers_block_signals(void)
{
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
}

InspWorkers *
insp_workers_new(guint n_workers, InspScorer *scorer, InspWorkersResultFunc func,
                 gpointer user_data)
{
  g_return_val_if_fail(n_workers >= 1 && n_workers <= MAX_WORKERS, NULL);
  g_return_val_if_fail(scorer != NULL, NULL);
  InspWorkers *w = g_new0(InspWorkers, 1);
  w->n_workers = n_workers;
  w->func = func;
  w->user_data = user_data;
  g_mutex_init(&w->scorer_lock);
  w->scorer = insp_scorer_ref(scorer);
  g_mutex_init(&w->reorder_lock);
  g_cond_init(&w->reorder_cond);
  w->reorder =
      g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, (GDestroyNotify)insp_result_free);
  g_mutex_init(&w->stats_lock);
  return w;
}

static void
reorder_put(InspWorkers *w, InspResult *r)
{
  g_mutex_lock(&w->reorder_lock);
  g_hash_table_insert(w->reorder, &r->index, r);
  if (r->index == w->next_index)
    g_cond_signal(&w->reorder_cond);
  g_mutex_unlock(&w->reorder_lock);
}

static gpointer
worker_main(gpointer data)
{
  WorkerArg *arg = data;
  InspWorkers *w = arg->w;
  int wi = arg->index;
  g_free(arg);
  insp_workers_block_signals();

  InspScorer *cur = NULL;
  gpointer state = NULL;
  gboolean state_ok = FALSE;
  for (;;) {
    InspFrame *f = insp_frame_queue_pop(w->queue);
    if (f == NULL)
      break;
    g_mutex_lock(&w->scorer_lock);
    InspScorer *s = insp_scorer_ref(w->scorer);
    g_mutex_unlock(&w->scorer_lock);
    const InspScorerFuncs *funcs = insp_scorer_get_funcs(s);

    InspResult *r = g_new0(InspResult, 1);
    r->frame = f;
    r->index = f->index;
    r->worker = wi;
    GError *err = NULL;
    if (s != cur || !state_ok) {
      if (cur != NULL && state_ok && insp_scorer_get_funcs(cur)->worker_finalize != NULL)
        insp_scorer_get_funcs(cur)->worker_finalize(insp_scorer_get_data(cur), state);
      if (cur != s) {
        insp_scorer_unref(cur);
        cur = insp_scorer_ref(s);
      }
      state = NULL;
      state_ok = TRUE;
      if (funcs->worker_init != NULL) {
        state = funcs->worker_init(insp_scorer_get_data(s), wi, &err);
        state_ok = err == NULL;
      }
    }
    if (state_ok)
      r->ok = funcs->score(insp_scorer_get_data(s), state, f, r, &err);
    insp_scorer_unref(s);
    if (!r->ok) {
      if (err == NULL)
        err = g_error_new_literal(INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_SCORE,
                                  "the scorer failed without saying why");
      r->error = err;
      g_mutex_lock(&w->stats_lock);
      w->stats.score_errors++;
      g_mutex_unlock(&w->stats_lock);
    } else {
      g_clear_error(&err);
    }
    r->done_mono_us = g_get_monotonic_time();
    r->latency_ms = (double)(r->done_mono_us - f->mono_us) / 1000.0;
    reorder_put(w, r);
  }
  if (cur != NULL && state_ok && insp_scorer_get_funcs(cur)->worker_finalize != NULL)
    insp_scorer_get_funcs(cur)->worker_finalize(insp_scorer_get_data(cur), state);
  insp_scorer_unref(cur);

  g_mutex_lock(&w->reorder_lock);
  w->workers_alive--;
  g_cond_broadcast(&w->reorder_cond);
  g_mutex_unlock(&w->reorder_lock);
  return NULL;
}

static gpointer
results_main(gpointer data)
{
  InspWorkers *w = data;
  insp_workers_block_signals();
  for (;;) {
    g_mutex_lock(&w->reorder_lock);
    InspResult *r = NULL;
    for (;;) {
      guint64 key = w->next_index;
      if (g_hash_table_steal_extended(w->reorder, &key, NULL, (gpointer *)&r))
        break;
      if (w->workers_alive == 0)
        break;
      g_cond_wait(&w->reorder_cond, &w->reorder_lock);
    }
    if (r != NULL)
      w->next_index++;
    g_mutex_unlock(&w->reorder_lock);
    if (r == NULL)
      break;
    if (w->func != NULL)
      w->func(r, w->user_data);
    g_mutex_lock(&w->stats_lock);
    w->stats.inspected++;
    w->done_times[w->n_done_times % FPS_WINDOW] = g_get_monotonic_time();
    w->n_done_times++;
    g_mutex_unlock(&w->stats_lock);
    insp_result_free(r);
  }
  return NULL;
}

void
insp_workers_start(InspWorkers *w, InspFrameQueue *queue)
{
  g_return_if_fail(w != NULL && queue != NULL);
  g_return_if_fail(w->threads == NULL);
  w->queue = queue;
  w->workers_alive = w->n_workers;
  w->threads = g_new0(GThread *, w->n_workers);
  for (guint i = 0; i < w->n_workers; i++) {
    WorkerArg *arg = g_new0(WorkerArg, 1);
    arg->w = w;
    arg->index = (int)i;
    g_autofree char *name = g_strdup_printf("insp-worker-%u", i);
    w->threads[i] = g_thread_new(name, worker_main, arg);
  }
  w->results_thread = g_thread_new("insp-results", results_main, w);
}

void
insp_workers_join(InspWorkers *w)
{
  g_return_if_fail(w != NULL);
  if (w->threads == NULL)
    return;
  for (guint i = 0; i < w->n_workers; i++)
    g_thread_join(w->threads[i]);
  g_clear_pointer(&w->threads, g_free);
  g_thread_join(w->results_thread);
  w->results_thread = NULL;
  w->queue = NULL;
}

void
insp_workers_set_scorer(InspWorkers *w, InspScorer *scorer)
{
  g_return_if_fail(w != NULL && scorer != NULL);
  insp_scorer_ref(scorer);
  g_mutex_lock(&w->scorer_lock);
  InspScorer *old = w->scorer;
  w->scorer = scorer;
  g_mutex_unlock(&w->scorer_lock);
  insp_scorer_unref(old);
}

void
insp_workers_get_stats(InspWorkers *w, InspWorkersStats *out)
{
  g_return_if_fail(w != NULL && out != NULL);
  g_mutex_lock(&w->stats_lock);
  *out = w->stats;
  guint n = MIN(w->n_done_times, FPS_WINDOW);
  gint64 now = g_get_monotonic_time();
  out->fps = 0;
  if (n >= 2) {
    gint64 last = w->done_times[(w->n_done_times - 1) % FPS_WINDOW];
    gint64 first = w->done_times[(w->n_done_times - n) % FPS_WINDOW];
    if (last > first && now - last < 5 * G_USEC_PER_SEC)
      out->fps = (double)(n - 1) * G_USEC_PER_SEC / (double)(last - first);
  }
  g_mutex_unlock(&w->stats_lock);
}

void
insp_workers_free(InspWorkers *w)
{
  if (w == NULL)
    return;
  insp_workers_join(w);
  insp_scorer_unref(w->scorer);
  g_hash_table_unref(w->reorder);
  g_mutex_clear(&w->scorer_lock);
  g_mutex_clear(&w->reorder_lock);
  g_cond_clear(&w->reorder_cond);
  g_mutex_clear(&w->stats_lock);
  g_free(w);
}
