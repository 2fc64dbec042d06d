/* Tests of the worker pool (pipeline/insp-workers.c) without GStreamer:
 * frames built in memory go through a frame queue to N workers and a stub
 * scorer; the tests check the results (one per frame, in order, whatever the
 * workers' speeds), drop accounting carried to the results, scorer failures,
 * scorer swaps (state init/finalize balanced), and the stop paths (drain by
 * closing the queue, stop at once by flushing it, start again). */
#include <glib.h>

#include "insp-frame-queue.h"
#include "insp-pipeline-error.h"
#include "insp-scorer.h"
#include "insp-workers.h"

typedef struct {
  gint inits, finalizes, scored;
  gboolean fail_odd;  /* score() fails on odd seq */
  gboolean fail_init; /* worker_init() fails */
  guint sleep_us_mod; /* score() sleeps (seq % 4) * this */
  float score;        /* what it reports */
  GMutex lock;        /* for gate */
  GCond cond;
  gboolean gated; /* score() waits until the gate opens */
} Stub;

static gpointer
stub_init(gpointer data, int worker, GError **error)
{
  Stub *s = data;
  g_atomic_int_inc(&s->inits);
  if (s->fail_init) {
    g_set_error_literal(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_SCORE, "init refused");
    return NULL;
  }
  return GINT_TO_POINTER(worker + 1);
}

static void
stub_finalize(gpointer data, gpointer state)
{
  Stub *s = data;
  g_atomic_int_inc(&s->finalizes);
}

static gboolean
stub_score(gpointer data, gpointer state, const InspFrame *f, InspResult *r, GError **error)
{
  Stub *s = data;
  g_mutex_lock(&s->lock);
  while (s->gated)
    g_cond_wait(&s->cond, &s->lock);
  g_mutex_unlock(&s->lock);
  if (s->sleep_us_mod > 0)
    g_usleep((f->seq % 4) * s->sleep_us_mod);
  g_atomic_int_inc(&s->scored);
  if (s->fail_odd && f->seq % 2 == 1) {
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_SCORE, "odd frame %u",
                (guint)f->seq);
    return FALSE;
  }
  r->score = s->score;
  r->fail = s->score >= 0.5f;
  r->threshold = 0.5f;
  return TRUE;
}

static const InspScorerFuncs stub_funcs = {stub_init, stub_finalize, stub_score};

static void
stub_init_struct(Stub *s)
{
  *s = (Stub){0};
  g_mutex_init(&s->lock);
  g_cond_init(&s->cond);
}

static void
stub_open_gate(Stub *s)
{
  g_mutex_lock(&s->lock);
  s->gated = FALSE;
  g_cond_broadcast(&s->cond);
  g_mutex_unlock(&s->lock);
}

static void
stub_clear(Stub *s)
{
  g_mutex_clear(&s->lock);
  g_cond_clear(&s->cond);
}

/* What the result callback saw (copied: results are only borrowed). */
typedef struct {
  GMutex lock;
  GArray *index, *seq, *dropped, *ok, *worker; /* of guint64 */
  GPtrArray *errors;                           /* messages of failed results */
  GArray *score;                               /* of float */
  GThread *thread;                             /* the thread of the first call */
  gboolean other_thread;                       /* a later call came from another thread */
} Seen;

static void
seen_init(Seen *s)
{
  g_mutex_init(&s->lock);
  s->index = g_array_new(FALSE, FALSE, sizeof(guint64));
  s->seq = g_array_new(FALSE, FALSE, sizeof(guint64));
  s->dropped = g_array_new(FALSE, FALSE, sizeof(guint64));
  s->ok = g_array_new(FALSE, FALSE, sizeof(guint64));
  s->worker = g_array_new(FALSE, FALSE, sizeof(guint64));
  s->score = g_array_new(FALSE, FALSE, sizeof(float));
  s->errors = g_ptr_array_new_with_free_func(g_free);
  s->thread = NULL;
  s->other_thread = FALSE;
}

static void
seen_clear(Seen *s)
{
  g_array_unref(s->index);
  g_array_unref(s->seq);
  g_array_unref(s->dropped);
  g_array_unref(s->ok);
  g_array_unref(s->worker);
  g_array_unref(s->score);
  g_ptr_array_unref(s->errors);
  g_mutex_clear(&s->lock);
}

static guint64
at(GArray *a, guint i)
{
  return g_array_index(a, guint64, i);
}

static void
on_result(const InspResult *r, gpointer user_data)
{
  Seen *s = user_data;
  g_mutex_lock(&s->lock);
  guint64 v[5] = {r->index, r->frame->seq, r->frame->dropped_before, (guint64)r->ok,
                  (guint64)r->worker};
  g_array_append_val(s->index, v[0]);
  g_array_append_val(s->seq, v[1]);
  g_array_append_val(s->dropped, v[2]);
  g_array_append_val(s->ok, v[3]);
  g_array_append_val(s->worker, v[4]);
  g_array_append_val(s->score, r->score);
  if (!r->ok)
    g_ptr_array_add(s->errors, g_strdup(r->error->message));
  if (s->thread == NULL)
    s->thread = g_thread_self();
  else if (s->thread != g_thread_self())
    s->other_thread = TRUE;
  g_mutex_unlock(&s->lock);
}

static InspFrame *
frame(guint64 seq)
{
  InspFrame *f = insp_frame_new(4, 2);
  f->seq = seq;
  f->part_id = g_strdup_printf("%" G_GUINT64_FORMAT, seq);
  return f;
}

/* Results leave in pop order, one per frame, whatever the workers' speeds. */
static void
test_order(void)
{
  Stub stub;
  stub_init_struct(&stub);
  stub.sleep_us_mod = 2000;
  stub.score = 0.75f;
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  Seen seen;
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(4, INSP_DROP_NEVER);
  InspWorkers *w = insp_workers_new(4, scorer, on_result, &seen);
  insp_workers_start(w, q);
  for (guint64 i = 0; i < 40; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  insp_frame_queue_close(q);
  insp_workers_join(w);

  g_assert_cmpuint(seen.index->len, ==, 40);
  gboolean several_workers = FALSE;
  for (guint i = 0; i < 40; i++) {
    g_assert_cmpuint(at(seen.index, i), ==, i);
    g_assert_cmpuint(at(seen.seq, i), ==, i);
    g_assert_cmpuint(at(seen.ok, i), ==, 1);
    g_assert_cmpuint(at(seen.dropped, i), ==, 0);
    g_assert_cmpfloat(g_array_index(seen.score, float, i), ==, 0.75f);
    several_workers |= at(seen.worker, i) != at(seen.worker, 0);
  }
  g_assert_true(several_workers);
  g_assert_false(seen.other_thread);
  g_assert_true(seen.thread != g_thread_self());
  InspWorkersStats st;
  insp_workers_get_stats(w, &st);
  g_assert_cmpuint(st.inspected, ==, 40);
  g_assert_cmpuint(st.score_errors, ==, 0);
  insp_workers_free(w);
  /* Every worker state made was finalized, with the scorer that made it. */
  g_assert_cmpint(stub.inits, >=, 1);
  g_assert_cmpint(stub.inits, <=, 4);
  g_assert_cmpint(stub.inits, ==, stub.finalizes);
  seen_clear(&seen);
  stub_clear(&stub);
}

/* Frames the queue dropped are counted there and reach the result of the
 * frame that followed them. */
static void
test_drop_accounting(void)
{
  Stub stub;
  stub_init_struct(&stub);
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  Seen seen;
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(2, INSP_DROP_OLDEST);
  for (guint64 i = 0; i < 5; i++) /* 0, 1, 2 are dropped; 3 and 4 stay */
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 3);
  InspWorkers *w = insp_workers_new(2, scorer, on_result, &seen);
  insp_workers_start(w, q);
  insp_frame_queue_close(q);
  insp_workers_join(w);
  g_assert_cmpuint(seen.seq->len, ==, 2);
  g_assert_cmpuint(at(seen.seq, 0), ==, 3);
  g_assert_cmpuint(at(seen.dropped, 0), ==, 3);
  g_assert_cmpuint(at(seen.seq, 1), ==, 4);
  g_assert_cmpuint(at(seen.dropped, 1), ==, 0);
  g_assert_cmpuint(at(seen.index, 0), ==, 0);
  g_assert_cmpuint(at(seen.index, 1), ==, 1);
  insp_workers_free(w);
  seen_clear(&seen);
  stub_clear(&stub);
}

/* A failing score still yields its result, in order, with the reason. */
static void
test_score_errors(void)
{
  Stub stub;
  stub_init_struct(&stub);
  stub.fail_odd = TRUE;
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  Seen seen;
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(3, INSP_DROP_NEVER);
  InspWorkers *w = insp_workers_new(3, scorer, on_result, &seen);
  insp_workers_start(w, q);
  for (guint64 i = 0; i < 10; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  insp_frame_queue_close(q);
  insp_workers_join(w);
  g_assert_cmpuint(seen.seq->len, ==, 10);
  for (guint i = 0; i < 10; i++) {
    g_assert_cmpuint(at(seen.seq, i), ==, i);
    g_assert_cmpuint(at(seen.ok, i), ==, i % 2 == 0);
  }
  g_assert_cmpuint(seen.errors->len, ==, 5);
  g_assert_cmpstr(g_ptr_array_index(seen.errors, 0), ==, "odd frame 1");
  InspWorkersStats st;
  insp_workers_get_stats(w, &st);
  g_assert_cmpuint(st.inspected, ==, 10);
  g_assert_cmpuint(st.score_errors, ==, 5);
  insp_workers_free(w);
  seen_clear(&seen);
  stub_clear(&stub);

  /* A worker whose state cannot be made fails each frame, and tries again. */
  Stub bad;
  stub_init_struct(&bad);
  bad.fail_init = TRUE;
  g_autoptr(InspScorer) bad_scorer = insp_scorer_new(&stub_funcs, &bad, NULL);
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q2 = insp_frame_queue_new(4, INSP_DROP_NEVER);
  w = insp_workers_new(1, bad_scorer, on_result, &seen);
  insp_workers_start(w, q2);
  for (guint64 i = 0; i < 3; i++)
    g_assert_true(insp_frame_queue_push(q2, frame(i)));
  insp_frame_queue_close(q2);
  insp_workers_free(w);
  g_assert_cmpuint(seen.seq->len, ==, 3);
  g_assert_cmpuint(seen.errors->len, ==, 3);
  g_assert_cmpstr(g_ptr_array_index(seen.errors, 0), ==, "init refused");
  g_assert_cmpint(bad.inits, ==, 3);
  g_assert_cmpint(bad.scored, ==, 0);
  g_assert_cmpint(bad.finalizes, ==, 0);
  seen_clear(&seen);
  stub_clear(&bad);
}

/* A new scorer applies from the next frame; old states are finalized by the
 * scorer that made them. */
static void
test_scorer_swap(void)
{
  Stub a, b;
  stub_init_struct(&a);
  stub_init_struct(&b);
  a.score = 0.25f;
  b.score = 0.75f;
  g_autoptr(InspScorer) sa = insp_scorer_new(&stub_funcs, &a, NULL);
  g_autoptr(InspScorer) sb = insp_scorer_new(&stub_funcs, &b, NULL);
  Seen seen;
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(8, INSP_DROP_NEVER);
  InspWorkers *w = insp_workers_new(2, sa, on_result, &seen);
  insp_workers_start(w, q);
  for (guint64 i = 0; i < 6; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  while (g_atomic_int_get(&a.scored) < 6)
    g_usleep(1000);
  insp_workers_set_scorer(w, sb);
  for (guint64 i = 6; i < 12; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  insp_frame_queue_close(q);
  insp_workers_free(w);
  g_assert_cmpuint(seen.seq->len, ==, 12);
  for (guint i = 0; i < 12; i++)
    g_assert_cmpfloat(g_array_index(seen.score, float, i), ==, i < 6 ? 0.25f : 0.75f);
  g_assert_cmpint(a.scored, ==, 6);
  g_assert_cmpint(b.scored, ==, 6);
  g_assert_cmpint(a.inits, ==, a.finalizes);
  g_assert_cmpint(b.inits, ==, b.finalizes);
  g_assert_cmpint(b.inits, >=, 1);
  seen_clear(&seen);
  stub_clear(&a);
  stub_clear(&b);
}

/* Flushing stops at once: idle workers return, queued frames are dropped
 * without a result, frames already popped still deliver theirs; the pool can
 * start again, and indices go on from where they were. */
static void
test_stop_paths(void)
{
  Stub stub;
  stub_init_struct(&stub);
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  Seen seen;
  seen_init(&seen);
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(8, INSP_DROP_NEVER);
  InspWorkers *w = insp_workers_new(2, scorer, on_result, &seen);

  /* Idle workers blocked in pop. */
  insp_workers_start(w, q);
  g_usleep(20 * 1000);
  insp_frame_queue_set_flushing(q, TRUE);
  insp_workers_join(w);
  g_assert_cmpuint(seen.seq->len, ==, 0);
  insp_workers_join(w); /* idempotent */

  /* Busy workers: two frames popped and held at the gate, four queued. */
  insp_frame_queue_set_flushing(q, FALSE);
  stub.gated = TRUE;
  insp_workers_start(w, q);
  for (guint64 i = 0; i < 6; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  while (insp_frame_queue_get_depth(q) > 4)
    g_usleep(1000);
  insp_frame_queue_set_flushing(q, TRUE);
  g_assert_cmpuint(insp_frame_queue_get_depth(q), ==, 0);
  stub_open_gate(&stub);
  insp_workers_join(w);
  g_assert_cmpuint(seen.seq->len, ==, 2);
  g_assert_cmpint(stub.scored, ==, 2);
  g_assert_cmpuint(at(seen.index, 0), ==, 0);
  g_assert_cmpuint(at(seen.index, 1), ==, 1);

  /* Again, draining: every queued frame is delivered. */
  insp_frame_queue_set_flushing(q, FALSE);
  insp_workers_start(w, q);
  for (guint64 i = 10; i < 13; i++)
    g_assert_true(insp_frame_queue_push(q, frame(i)));
  insp_frame_queue_close(q);
  insp_workers_join(w);
  g_assert_cmpuint(seen.seq->len, ==, 5);
  g_assert_cmpuint(at(seen.seq, 2), ==, 10);
  g_assert_cmpuint(at(seen.index, 4), ==, 4);
  InspWorkersStats st;
  insp_workers_get_stats(w, &st);
  g_assert_cmpuint(st.inspected, ==, 5);
  insp_workers_free(w);
  insp_workers_free(NULL);
  g_assert_cmpint(stub.inits, ==, stub.finalizes);
  seen_clear(&seen);
  stub_clear(&stub);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/workers/order", test_order);
  g_test_add_func("/workers/drop-accounting", test_drop_accounting);
  g_test_add_func("/workers/score-errors", test_score_errors);
  g_test_add_func("/workers/scorer-swap", test_scorer_swap);
  g_test_add_func("/workers/stop-paths", test_stop_paths);
  return g_test_run();
}
