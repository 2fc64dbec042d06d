/* Integration tests of pipeline/ against real GStreamer graphs: files replay
 * (exactly once, in order, file stem as part id, also with slow workers),
 * drop policies on a fast live test source with a slow scorer, restarts with
 * backoff after EOS, errors and vanished files, trigger pairing and timeouts,
 * in-order delivery with several workers, a scorer swap. The scorer is a stub
 * defined here (pipeline/ never sees it). */
#include <glib.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <string.h>

#include "insp-image.h"
#include "insp-model.h"
#include "insp-camera.h"
#include "insp-model-scorer.h"
#include "insp-pipeline-config.h"
#include "insp-pipeline.h"
#include "insp-workers.h"

/* ---- a stub scorer ---------------------------------------------------------------- */

typedef struct {
  guint sleep_us;  /* per frame */
  guint jitter_us; /* + random 0..jitter */
  gint inits, finalizes;
  float tag; /* reported as the score, to tell scorers apart */
} Stub;

static gpointer
stub_init(gpointer data, int worker, GError **error)
{
  Stub *s = data;
  g_atomic_int_inc(&s->inits);
  return g_rand_new_with_seed((guint32)worker + 1);
}

static void
stub_finalize(gpointer data, gpointer state)
{
  Stub *s = data;
  g_atomic_int_inc(&s->finalizes);
  g_rand_free(state);
}

static gboolean
stub_score(gpointer data, gpointer state, const InspFrame *frame, InspResult *r, GError **error)
{
  Stub *s = data;
  guint us = s->sleep_us;
  if (s->jitter_us > 0)
    us += (guint)g_rand_int_range(state, 0, (gint32)s->jitter_us);
  if (us > 0)
    g_usleep(us);
  r->score = s->tag;
  r->threshold = 0.5f;
  r->fail = frame->data[0] > 127;
  return TRUE;
}

static const InspScorerFuncs stub_funcs = {stub_init, stub_finalize, stub_score};

/* ---- what the callbacks saw ---------------------------------------------------------- */

typedef struct {
  guint64 seq, index;
  char *part_id;
  guint8 pixel0;
  guint dropped_before;
  gint64 mono_us;
  float score;
  int width, height;
  guint64 trigger_id;
} Seen;

typedef struct {
  GMutex lock;
  GCond cond;
  GArray *results; /* of Seen */
  GArray *events;  /* of InspPipelineEvent (message not kept) */
  GPtrArray *timeouts;
  GArray *timeout_times;
  gboolean finished;
  gboolean result_from_other_thread;
  GThread *result_thread;
} Seen_all;

static void
seen_clear(gpointer p)
{
  g_free(((Seen *)p)->part_id);
}

static void
all_init(Seen_all *a)
{
  memset(a, 0, sizeof *a);
  g_mutex_init(&a->lock);
  g_cond_init(&a->cond);
  a->results = g_array_new(FALSE, TRUE, sizeof(Seen));
  g_array_set_clear_func(a->results, seen_clear);
  a->events = g_array_new(FALSE, TRUE, sizeof(InspPipelineEvent));
  a->timeouts = g_ptr_array_new_with_free_func(g_free);
  a->timeout_times = g_array_new(FALSE, TRUE, sizeof(gint64));
}

static void
all_clear(Seen_all *a)
{
  g_array_unref(a->results);
  g_array_unref(a->events);
  g_ptr_array_unref(a->timeouts);
  g_array_unref(a->timeout_times);
  g_mutex_clear(&a->lock);
  g_cond_clear(&a->cond);
}

static void
on_result(InspPipeline *pipe, const InspResult *r, gpointer data)
{
  Seen_all *a = data;
  g_assert_true(r->ok);
  Seen s = {r->frame->seq,
            r->index,
            g_strdup(r->frame->part_id),
            r->frame->data[0],
            r->frame->dropped_before,
            r->frame->mono_us,
            r->score,
            r->frame->width,
            r->frame->height,
            r->frame->trigger_id};
  g_mutex_lock(&a->lock);
  if (a->result_thread == NULL)
    a->result_thread = g_thread_self();
  else if (a->result_thread != g_thread_self())
    a->result_from_other_thread = TRUE;
  g_array_append_val(a->results, s);
  g_cond_broadcast(&a->cond);
  g_mutex_unlock(&a->lock);
}

static void
on_event(InspPipeline *pipe, const InspPipelineEvent *ev, gpointer data)
{
  Seen_all *a = data;
  g_test_message("event %d: %s%s%s", ev->kind, ev->message, ev->detail ? " | " : "",
                 ev->detail ? ev->detail : "");
  InspPipelineEvent copy = *ev;
  copy.message = NULL;
  copy.detail = NULL;
  g_mutex_lock(&a->lock);
  g_array_append_val(a->events, copy);
  if (ev->kind == INSP_PIPELINE_EVENT_FINISHED)
    a->finished = TRUE;
  g_cond_broadcast(&a->cond);
  g_mutex_unlock(&a->lock);
}

static void
on_timeout(InspPipeline *pipe, guint64 trigger_id, const char *part_id, gpointer data)
{
  Seen_all *a = data;
  gint64 now = g_get_monotonic_time();
  g_mutex_lock(&a->lock);
  g_ptr_array_add(a->timeouts, g_strdup(part_id));
  g_array_append_val(a->timeout_times, now);
  g_cond_broadcast(&a->cond);
  g_mutex_unlock(&a->lock);
}

static guint
count_events(Seen_all *a, InspPipelineEventKind kind)
{
  guint n = 0;
  for (guint i = 0; i < a->events->len; i++)
    if (g_array_index(a->events, InspPipelineEvent, i).kind == kind)
      n++;
  return n;
}

/* Waits (up to @timeout_ms) until @pred holds, with the lock held. */
typedef gboolean (*Pred)(Seen_all *a, gpointer data);

static gboolean
wait_for(Seen_all *a, Pred pred, gpointer data, guint timeout_ms)
{
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  g_mutex_lock(&a->lock);
  gboolean ok;
  while (!(ok = pred(a, data)))
    if (!g_cond_wait_until(&a->cond, &a->lock, end)) {
      ok = pred(a, data);
      break;
    }
  g_mutex_unlock(&a->lock);
  return ok;
}

static gboolean
pred_finished(Seen_all *a, gpointer data)
{
  return a->finished && a->results->len >= GPOINTER_TO_UINT(data);
}

static gboolean
pred_results(Seen_all *a, gpointer data)
{
  return a->results->len >= GPOINTER_TO_UINT(data);
}

static gboolean
pred_restarts(Seen_all *a, gpointer data)
{
  return count_events(a, INSP_PIPELINE_EVENT_RESTARTING) >= GPOINTER_TO_UINT(data);
}

static gboolean
pred_timeouts(Seen_all *a, gpointer data)
{
  return a->timeouts->len >= GPOINTER_TO_UINT(data);
}

static InspPipeline *
make_pipeline(const InspCaptureOptions *opt, Stub *stub, Seen_all *a)
{
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, stub, NULL);
  InspPipelineCallbacks cb = {on_result, on_event, on_timeout, a, NULL};
  g_autoptr(GError) err = NULL;
  InspPipeline *p = insp_pipeline_new(opt, scorer, &cb, &err);
  g_assert_no_error(err);
  g_assert_true(insp_pipeline_start(p, &err));
  g_assert_no_error(err);
  return p;
}

/* ---- files replay ---------------------------------------------------------------- */

/* Writes @n PNGs named part-NNN.png whose first byte is 10*i; returns the folder. */
static char *
write_images(guint n, int w, int h)
{
  g_autoptr(GError) err = NULL;
  char *dir = g_dir_make_tmp("insp-capture-XXXXXX", &err);
  g_assert_no_error(err);
  for (guint i = 0; i < n; i++) {
    g_autoptr(InspImage) img = insp_image_new(w + (int)(i % 2) * 2, h, 3);
    for (int k = 0; k < img->stride * img->height; k++)
      img->data[k] = (guint8)(k * 7 + i);
    img->data[0] = (guint8)(10 * i);
    g_autofree char *path = g_strdup_printf("%s/part-%03u.png", dir, i);
    g_assert_true(insp_image_save_png(img, path, &err));
    g_assert_no_error(err);
  }
  return dir;
}

static void
remove_dir(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    g_unlink(p);
  }
  g_rmdir(dir);
}

static void
check_files_replay(guint workers, guint sleep_us, guint jitter_us, guint queue_size)
{
  const guint n = 24;
  g_autofree char *dir = write_images(n, 33, 17);
  g_autofree char *glob = g_strdup_printf("%s/*.png", dir);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  opt.location = glob;
  opt.fps = 0;
  opt.drop = INSP_DROP_NEVER;
  opt.workers = workers;
  opt.queue_size = queue_size;
  Stub stub = {sleep_us, jitter_us, 0, 0, 0.25f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_finished, GUINT_TO_POINTER(n), 20000));
  insp_pipeline_stop(p, TRUE);
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);

  g_assert_cmpuint(a.results->len, ==, n);
  for (guint i = 0; i < n; i++) {
    Seen *s = &g_array_index(a.results, Seen, i);
    g_autofree char *stem = g_strdup_printf("part-%03u", i);
    g_assert_cmpstr(s->part_id, ==, stem);
    g_assert_cmpuint(s->seq, ==, i);
    g_assert_cmpuint(s->index, ==, i);
    g_assert_cmpuint(s->pixel0, ==, 10 * i); /* the file's own pixels, decoded as eval does */
    g_assert_cmpint(s->width, ==, 33 + (int)(i % 2) * 2);
    g_assert_cmpint(s->height, ==, 17);
    g_assert_cmpuint(s->dropped_before, ==, 0);
  }
  g_assert_false(a.result_from_other_thread);
  g_assert_cmpuint(st.frames_dropped, ==, 0);
  g_assert_cmpuint(st.frames_inspected, ==, n);
  g_assert_cmpuint(st.restarts, ==, 0);
  g_assert_cmpint(stub.inits, ==, (gint)workers);
  g_assert_cmpint(stub.finalizes, ==, (gint)workers);
  all_clear(&a);
  remove_dir(dir);
}

static void
test_files_exactly_once(void)
{
  check_files_replay(1, 0, 0, 4);
}

static void
test_files_slow_workers(void)
{
  check_files_replay(3, 2000, 8000, 2);
}

/* A file over max_pixels is skipped before it is queued, counted as a
 * wrong size and reported; the replay goes on. Live frames are checked by
 * the same limit at the appsink. */
static void
test_files_over_max_pixels(void)
{
  const guint n = 3;
  g_autofree char *dir = write_images(n, 20, 10);
  g_autofree char *big = g_strdup_printf("%s/part-001b.png", dir);
  g_autoptr(GError) err = NULL;
  g_autoptr(InspImage) img = insp_image_new(40, 30, 3);
  memset(img->data, 7, (gsize)img->stride * img->height);
  g_assert_true(insp_image_save_png(img, big, &err));
  g_assert_no_error(err);
  g_autofree char *glob = g_strdup_printf("%s/*.png", dir);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  opt.location = glob;
  opt.max_pixels = 22 * 10; /* the 20x10 and 22x10 parts pass, 40x30 does not */
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_finished, GUINT_TO_POINTER(n), 20000));
  insp_pipeline_stop(p, TRUE);
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);
  g_assert_cmpuint(a.results->len, ==, n);
  for (guint i = 0; i < n; i++) {
    g_autofree char *stem = g_strdup_printf("part-%03u", i);
    g_assert_cmpstr(g_array_index(a.results, Seen, i).part_id, ==, stem);
  }
  g_assert_cmpuint(st.rejected_size, ==, 1);
  g_assert_cmpuint(count_events(&a, INSP_PIPELINE_EVENT_REJECTED), ==, 1);
  all_clear(&a);
  remove_dir(dir);
}

/* Files of the same name in different folders of the glob get different
 * part ids: their path below the glob's fixed folder, without extension. */
static void
test_files_part_ids_unique(void)
{
  g_autoptr(GError) err = NULL;
  g_autofree char *dir = g_dir_make_tmp("insp-capture-XXXXXX", &err);
  const char *const sub[] = {"broken_large", "good"};
  g_autoptr(InspImage) img = insp_image_new(16, 12, 3);

  g_assert_no_error(err);
  memset(img->data, 90, (gsize)img->stride * img->height);
  for (guint d = 0; d < G_N_ELEMENTS(sub); d++) {
    g_autofree char *folder = g_build_filename(dir, sub[d], NULL);

    g_assert_cmpint(g_mkdir(folder, 0755), ==, 0);
    for (guint i = 0; i < 2; i++) {
      g_autofree char *path = g_strdup_printf("%s/%03u.png", folder, i);

      g_assert_true(insp_image_save_png(img, path, &err));
      g_assert_no_error(err);
    }
  }
  g_autofree char *glob = g_strdup_printf("%s/*/*.png", dir);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  opt.location = glob;
  opt.drop = INSP_DROP_NEVER;
  opt.workers = 1;
  Stub stub = {0, 0, 0, 0, 0.25f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_finished, GUINT_TO_POINTER(4), 20000));
  insp_pipeline_stop(p, TRUE);
  insp_pipeline_free(p);

  const char *const want[] = {"broken_large/000", "broken_large/001", "good/000", "good/001"};
  g_assert_cmpuint(a.results->len, ==, G_N_ELEMENTS(want));
  for (guint i = 0; i < G_N_ELEMENTS(want); i++)
    g_assert_cmpstr(g_array_index(a.results, Seen, i).part_id, ==, want[i]);
  all_clear(&a);
  for (guint d = 0; d < G_N_ELEMENTS(sub); d++) {
    g_autofree char *folder = g_build_filename(dir, sub[d], NULL);
    remove_dir(folder);
  }
  g_rmdir(dir);
}

/* A file that does not decode is skipped, counted and reported; the replay
 * goes on. */
static void
test_files_skip_corrupt(void)
{
  const guint n = 5;
  g_autofree char *dir = write_images(n, 20, 10);
  g_autofree char *bad = g_strdup_printf("%s/part-002b.png", dir);
  g_assert_true(g_file_set_contents(bad, "not a png at all", -1, NULL));
  g_autofree char *glob = g_strdup_printf("%s/*.png", dir);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  opt.location = glob;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_finished, GUINT_TO_POINTER(n), 20000));
  insp_pipeline_stop(p, TRUE);
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);
  g_assert_cmpuint(a.results->len, ==, n);
  for (guint i = 0; i < n; i++) {
    g_autofree char *stem = g_strdup_printf("part-%03u", i);
    g_assert_cmpstr(g_array_index(a.results, Seen, i).part_id, ==, stem);
  }
  g_assert_cmpuint(st.rejected_format, ==, 1);
  g_assert_cmpuint(count_events(&a, INSP_PIPELINE_EVENT_REJECTED), ==, 1);
  g_assert_cmpuint(count_events(&a, INSP_PIPELINE_EVENT_RESTARTING), ==, 0);
  all_clear(&a);
  remove_dir(dir);
}

/* ---- drop policies ---------------------------------------------------------------------- */

static void
run_fast_source(InspDropPolicy drop, InspPipelineStats *st, Seen_all *a)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.fps = 100;
  opt.width = 64;
  opt.height = 48;
  opt.drop = drop;
  opt.queue_size = 2;
  opt.workers = 1;
  Stub stub = {25000, 0, 0, 0, 0.5f};
  InspPipeline *p = make_pipeline(&opt, &stub, a);
  g_assert_true(wait_for(a, pred_results, GUINT_TO_POINTER(25), 10000));
  insp_pipeline_stop(p, TRUE);
  insp_pipeline_get_stats(p, st);
  insp_pipeline_free(p);
  g_test_message("drop %d: captured %" G_GUINT64_FORMAT " inspected %" G_GUINT64_FORMAT
                 " dropped %" G_GUINT64_FORMAT,
                 drop, st->frames_captured, st->frames_inspected, st->frames_dropped);
}

static void
test_drop_oldest_counts(void)
{
  Seen_all a;
  all_init(&a);
  InspPipelineStats st;
  run_fast_source(INSP_DROP_OLDEST, &st, &a);
  g_assert_cmpuint(st.frames_dropped, >, 0);
  guint64 flagged = 0;
  for (guint i = 0; i < a.results->len; i++) {
    Seen *s = &g_array_index(a.results, Seen, i);
    g_assert_cmpint(s->width, ==, 64);
    g_assert_cmpint(s->height, ==, 48);
    if (i > 0) {
      Seen *prev = &g_array_index(a.results, Seen, i - 1);
      g_assert_cmpuint(s->index, ==, prev->index + 1);
      /* A seq gap is exactly the drops recorded on the frame after it. */
      g_assert_cmpuint(s->seq - prev->seq - 1, ==, s->dropped_before);
    }
    flagged += s->dropped_before;
  }
  g_assert_cmpuint(flagged, >, 0);
  g_assert_cmpuint(flagged, <=, st.frames_dropped);
  g_assert_cmpuint(st.frames_queued, ==, st.frames_dropped + st.frames_inspected);
  all_clear(&a);
}

static void
test_drop_never_keeps_all(void)
{
  Seen_all a;
  all_init(&a);
  InspPipelineStats st;
  run_fast_source(INSP_DROP_NEVER, &st, &a);
  g_assert_cmpuint(st.frames_dropped, ==, 0);
  for (guint i = 0; i < a.results->len; i++) {
    Seen *s = &g_array_index(a.results, Seen, i);
    g_assert_cmpuint(s->seq, ==, i);
    g_assert_cmpuint(s->dropped_before, ==, 0);
  }
  g_assert_cmpuint(st.frames_queued, ==, st.frames_inspected);
  all_clear(&a);
}

/* ---- faults ----------------------------------------------------------------------------- */

static void
check_restarts(const char *desc, InspPipelineEventKind fault)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "pipeline";
  opt.pipeline = desc;
  opt.backoff_initial_ms = 40;
  opt.backoff_max_ms = 160;
  opt.stable_ms = 60000;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_restarts, GUINT_TO_POINTER(4), 10000));
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);

  guint expect[] = {40, 80, 160, 160};
  guint k = 0;
  for (guint i = 0; i < a.events->len && k < 4; i++) {
    InspPipelineEvent *ev = &g_array_index(a.events, InspPipelineEvent, i);
    if (ev->kind != INSP_PIPELINE_EVENT_RESTARTING)
      continue;
    g_assert_cmpuint(ev->attempt, ==, k + 1);
    g_assert_cmpuint(ev->delay_ms, ==, expect[k]);
    k++;
  }
  g_assert_cmpuint(count_events(&a, fault), >=, 4);
  g_assert_cmpuint(st.restarts, >=, 3);
  all_clear(&a);
}

static void
test_restart_after_eos(void)
{
  check_restarts("videotestsrc num-buffers=3", INSP_PIPELINE_EVENT_EOS);
}

static void
test_restart_after_error(void)
{
  check_restarts("filesrc location=/nonexistent/insp-no-such-file ! decodebin",
                 INSP_PIPELINE_EVENT_ERROR);
}

/* A V4L2 camera that is not there: the daemon keeps running, the capture is
 * retried with backoff, each attempt reported. */
static void
test_v4l2_missing_device(void)
{
  InspCameraControl controls[] = {{.name = (char *)"Exposure Time, Absolute",
                                   .feature = (char *)"Exposure Time, Absolute",
                                   .type = INSP_CAMERA_CONTROL_INTEGER,
                                   .value = 200,
                                   .text = (char *)"200"}};
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "v4l2";
  opt.device = "/dev/video-insp-missing";
  opt.controls = controls;
  opt.n_controls = 1;
  opt.backoff_initial_ms = 30;
  opt.backoff_max_ms = 60;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_restarts, GUINT_TO_POINTER(3), 10000));
  insp_pipeline_free(p);
  g_assert_cmpuint(count_events(&a, INSP_PIPELINE_EVENT_ERROR), >=, 3);
  g_assert_cmpuint(a.results->len, ==, 0);
  all_clear(&a);
}

/* A capture that runs longer than stable_ms before it fails starts again from
 * the first delay. */
static void
test_backoff_resets_after_stable_run(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "pipeline";
  opt.pipeline = "videotestsrc is-live=true num-buffers=8 ! video/x-raw,framerate=40/1";
  opt.backoff_initial_ms = 20;
  opt.backoff_max_ms = 1000;
  opt.stable_ms = 100; /* each run lasts ~200 ms */
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_restarts, GUINT_TO_POINTER(3), 10000));
  insp_pipeline_free(p);
  for (guint i = 0; i < a.events->len; i++) {
    InspPipelineEvent *ev = &g_array_index(a.events, InspPipelineEvent, i);
    if (ev->kind == INSP_PIPELINE_EVENT_RESTARTING) {
      g_assert_cmpuint(ev->attempt, ==, 1);
      g_assert_cmpuint(ev->delay_ms, ==, 20);
    }
  }
  g_assert_cmpuint(a.results->len, >=, 16);
  all_clear(&a);
}

typedef struct {
  GThread *thread;
  gboolean other_thread;
  guint restarting;
} CtxSeen;

static void
on_ctx_event(InspPipeline *pipe, const InspPipelineEvent *ev, gpointer data)
{
  CtxSeen *c = data;
  if (g_thread_self() != c->thread)
    c->other_thread = TRUE;
  if (ev->kind == INSP_PIPELINE_EVENT_RESTARTING)
    c->restarting++;
}

/* With the caller's GMainContext, events come from the thread that iterates it. */
static void
test_caller_context(void)
{
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "pipeline";
  opt.pipeline = "videotestsrc num-buffers=2";
  opt.backoff_initial_ms = 10;
  opt.backoff_max_ms = 20;
  Stub stub = {0, 0, 0, 0, 0.5f};
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  CtxSeen c = {g_thread_self(), FALSE, 0};
  InspPipelineCallbacks cb = {NULL, on_ctx_event, NULL, &c, ctx};
  g_autoptr(GError) err = NULL;
  InspPipeline *p = insp_pipeline_new(&opt, scorer, &cb, &err);
  g_assert_no_error(err);
  g_assert_true(insp_pipeline_start(p, &err));
  gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (c.restarting < 3 && g_get_monotonic_time() < end)
    g_main_context_iteration(ctx, TRUE);
  insp_pipeline_stop(p, TRUE);
  insp_pipeline_free(p);
  g_main_context_pop_thread_default(ctx);
  g_assert_cmpuint(c.restarting, >=, 3);
  g_assert_false(c.other_thread);
}

static gboolean
pred_results_and_restart(Seen_all *a, gpointer data)
{
  return a->results->len >= GPOINTER_TO_UINT(data) &&
         count_events(a, INSP_PIPELINE_EVENT_RESTARTING) >= 2;
}

static void
test_files_vanish(void)
{
  const guint n = 6;
  g_autofree char *dir = write_images(n, 16, 16);
  g_autofree char *glob = g_strdup_printf("%s/*.png", dir);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  opt.location = glob;
  opt.loop = TRUE;
  opt.fps = 50;
  opt.backoff_initial_ms = 30;
  opt.backoff_max_ms = 60;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_results, GUINT_TO_POINTER(3), 10000));
  remove_dir(dir);
  g_assert_true(wait_for(&a, pred_results_and_restart, GUINT_TO_POINTER(3), 10000));
  g_mutex_lock(&a.lock);
  g_assert_cmpuint(count_events(&a, INSP_PIPELINE_EVENT_ERROR), >=, 2);
  g_mutex_unlock(&a.lock);
  insp_pipeline_free(p);
  all_clear(&a);
}

/* ---- triggers ----------------------------------------------------------------------------- */

static void
test_trigger_pairs_part_ids(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.fps = 30;
  opt.width = 32;
  opt.height = 24;
  opt.trigger = INSP_TRIGGER_EXTERNAL;
  opt.timeout_ms = 2000;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_usleep(300 * 1000); /* frames flow, none is inspected */
  g_mutex_lock(&a.lock);
  g_assert_cmpuint(a.results->len, ==, 0);
  g_mutex_unlock(&a.lock);

  const char *ids[] = {"A-1", "B-2", "C-3"};
  gint64 t_trig[3];
  for (guint i = 0; i < 3; i++) {
    g_autoptr(GError) err = NULL;
    t_trig[i] = g_get_monotonic_time();
    g_assert_true(insp_pipeline_trigger(p, ids[i], 100 + i, &err));
    g_assert_no_error(err);
    g_usleep(100 * 1000);
  }
  g_assert_true(wait_for(&a, pred_results, GUINT_TO_POINTER(3), 5000));
  g_usleep(200 * 1000);
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);
  g_assert_cmpuint(a.results->len, ==, 3);
  for (guint i = 0; i < 3; i++) {
    Seen *s = &g_array_index(a.results, Seen, i);
    g_assert_cmpstr(s->part_id, ==, ids[i]);
    g_assert_cmpuint(s->trigger_id, ==, 100 + i); /* the frame names its trigger */
    g_assert_cmpint(s->mono_us, >=, t_trig[i]);
    g_assert_cmpint(s->mono_us, <, t_trig[i] + 100 * 1000); /* the next frame at 30 fps */
  }
  g_assert_cmpuint(a.timeouts->len, ==, 0);
  g_assert_cmpuint(st.frames_untriggered, >, 0);
  all_clear(&a);
}

static void
test_trigger_timeout(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "pipeline";
  /* A camera that delivers nothing. */
  opt.pipeline = "videotestsrc is-live=true ! identity drop-probability=1.0";
  opt.trigger = INSP_TRIGGER_EXTERNAL;
  opt.timeout_ms = 200;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_autoptr(GError) err = NULL;
  gint64 t0 = g_get_monotonic_time();
  g_assert_true(insp_pipeline_trigger(p, "late-part", 0, &err));
  g_assert_no_error(err);
  g_assert_true(wait_for(&a, pred_timeouts, GUINT_TO_POINTER(1), 5000));
  gint64 dt = g_array_index(a.timeout_times, gint64, 0) - t0;
  g_assert_cmpstr(g_ptr_array_index(a.timeouts, 0), ==, "late-part");
  g_assert_cmpint(dt, >=, 200 * 1000);
  g_assert_cmpint(dt, <, 1200 * 1000);

  /* The trigger queue is bounded, with a clear error. */
  for (guint i = 0; i < INSP_PIPELINE_MAX_TRIGGERS; i++) {
    g_autofree char *id = g_strdup_printf("p%u", i);
    g_assert_true(insp_pipeline_trigger(p, id, 0, NULL));
  }
  g_assert_false(insp_pipeline_trigger(p, "one-too-many", 0, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_TRIGGER);
  g_assert_true(
      wait_for(&a, pred_timeouts, GUINT_TO_POINTER(1 + INSP_PIPELINE_MAX_TRIGGERS), 5000));
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  g_assert_cmpuint(st.trigger_timeouts, ==, 1 + INSP_PIPELINE_MAX_TRIGGERS);
  insp_pipeline_free(p);
  g_assert_cmpuint(a.results->len, ==, 0);
  all_clear(&a);
}

static void
test_trigger_refused_in_free_mode(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.fps = 10;
  Stub stub = {0, 0, 0, 0, 0.5f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_autoptr(GError) err = NULL;
  g_assert_false(insp_pipeline_trigger(p, "x", 0, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_TRIGGER);
  insp_pipeline_free(p);
  all_clear(&a);
}

/* ---- ordering, scorer swap, options ------------------------------------------------------- */

static gboolean
pred_two_scores(Seen_all *a, gpointer data)
{
  if (a->results->len == 0)
    return FALSE;
  return g_array_index(a->results, Seen, a->results->len - 1).score == 0.75f &&
         a->results->len >= GPOINTER_TO_UINT(data);
}

static void
test_order_and_scorer_swap(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.fps = 0; /* as fast as the workers take them */
  opt.width = 40;
  opt.height = 30;
  opt.workers = 3;
  opt.drop = INSP_DROP_NEVER;
  Stub stub = {500, 6000, 0, 0, 0.25f};
  Stub stub2 = {500, 3000, 0, 0, 0.75f};
  Seen_all a;
  all_init(&a);
  InspPipeline *p = make_pipeline(&opt, &stub, &a);
  g_assert_true(wait_for(&a, pred_results, GUINT_TO_POINTER(30), 10000));
  g_autoptr(InspScorer) s2 = insp_scorer_new(&stub_funcs, &stub2, NULL);
  insp_pipeline_set_scorer(p, s2);
  g_assert_true(wait_for(&a, pred_two_scores, GUINT_TO_POINTER(60), 10000));
  insp_pipeline_free(p);

  gboolean swapped = FALSE;
  for (guint i = 0; i < a.results->len; i++) {
    Seen *s = &g_array_index(a.results, Seen, i);
    g_assert_cmpuint(s->index, ==, i);
    g_assert_cmpuint(s->seq, ==, i);
    if (s->score == 0.75f)
      swapped = TRUE;
  }
  g_assert_true(swapped);
  g_assert_false(a.result_from_other_thread);
  g_assert_cmpint(stub.inits, ==, 3);
  g_assert_cmpint(stub.finalizes, ==, 3);
  g_assert_cmpint(stub2.inits, ==, stub2.finalizes);
  all_clear(&a);
}

/* The capture source is looked up by name in the pipeline's table: a name
 * the table lacks, or a source this build left out, is an error at
 * insp_pipeline_new(), never a silent fall-back to the test pattern. */
static void
test_unknown_source_is_an_error(void)
{
  Stub stub = {0, 0, 0, 0, 0.5f};
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  g_autoptr(GError) err = NULL;

  opt.source = "webcam";
  g_assert_null(insp_pipeline_new(&opt, scorer, NULL, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS);
  g_assert_nonnull(strstr(err->message, "unknown capture source webcam"));
  g_clear_error(&err);
  g_assert_null(insp_capture_source_lookup("webcam", &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS);
  g_clear_error(&err);
  opt.source = NULL;
  g_assert_null(insp_pipeline_new(&opt, scorer, NULL, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS);
  g_clear_error(&err);

  opt.source = "aravis";
  g_autoptr(InspPipeline) p = insp_pipeline_new(&opt, scorer, NULL, &err);
#ifdef INSP_HAVE_ARAVIS
  g_assert_no_error(err);
  g_assert_nonnull(p);
#else
  g_assert_null(p);
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_NOT_BUILT);
  g_assert_nonnull(strstr(err->message, "aravis"));
#endif
  g_clear_error(&err);

  const char *known[] = {"v4l2", "rtsp", "files", "test", "pipeline"};
  for (guint i = 0; i < G_N_ELEMENTS(known); i++) {
    const InspCaptureSourceClass *k = insp_capture_source_lookup(known[i], &err);
    g_assert_no_error(err);
    g_assert_nonnull(k);
    g_assert_cmpint(insp_capture_source_class_is_replay(k), ==, g_str_equal(known[i], "files"));
  }
}

static void
test_bad_options(void)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "files";
  Stub stub = {0, 0, 0, 0, 0.5f};
  g_autoptr(InspScorer) scorer = insp_scorer_new(&stub_funcs, &stub, NULL);
  g_autoptr(GError) err = NULL;
  g_assert_null(insp_pipeline_new(&opt, scorer, NULL, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS);
  g_clear_error(&err);

  opt.source = "pipeline";
  opt.pipeline = "no-such-element-insp";
  g_autoptr(InspPipeline) p = insp_pipeline_new(&opt, scorer, NULL, &err);
  g_assert_no_error(err);
  g_assert_false(insp_pipeline_start(p, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_GRAPH);
  g_clear_error(&err);

  /* The parser's own tests are in tests/unit/test-camera-controls.c. */
  InspCameraControl *c = NULL;
  guint n_c = 0;
  g_assert_true(insp_camera_controls_parse("exposure_time_absolute=200, gain=0\n"
                                           "focus_automatic_continuous = 0",
                                           &c, &n_c, &err));
  g_assert_no_error(err);
  g_assert_cmpuint(n_c, ==, 3);

  /* V4L2 control names as v4l2-ctl spells them. */
  const char *names[][2] = {{"Exposure Time, Absolute", "exposure_time_absolute"},
                            {"White Balance Temperature, Auto", "white_balance_temperature_auto"},
                            {"Focus (automatic continuous)", "focus_automatic_continuous"},
                            {"  Gain  ", "gain"},
                            {"Power Line Frequency", "power_line_frequency"}};
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *n = insp_v4l2_control_name(names[i][0]);
    g_assert_cmpstr(n, ==, names[i][1]);
  }
  /* Controls on a device that is not there: an error, not a crash. */
  g_autoptr(GPtrArray) warnings = g_ptr_array_new_with_free_func(g_free);
  g_clear_error(&err);

  g_assert_false(insp_v4l2_apply_controls("/dev/video-insp-missing", c, n_c, warnings, &err));
  g_assert_error(err, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_DEVICE);
  insp_camera_controls_free(c, n_c);
}

/* ---- the default model scorer, with hot thresholds --------------------------------------- */

static InspImage *
tiny_good(int index, gpointer data, GError **error)
{
  InspImage *img = insp_image_new(64, 64, 3);
  for (int k = 0; k < img->stride * img->height; k++)
    img->data[k] = (guint8)(((k / 3) % 64 / 8 + (k / 3) / 64 / 8) % 2 ? 160 + index : 90);
  return img;
}

typedef struct {
  GMutex lock;
  guint n, n_fail, n_with_mask;
  gboolean all_ok;
  char *model_id;
} ModelSeen;

static void
on_model_result(InspPipeline *p, const InspResult *r, gpointer data)
{
  ModelSeen *m = data;
  g_mutex_lock(&m->lock);
  m->n++;
  if (!r->ok) {
    m->all_ok = FALSE;
  } else {
    if (r->fail)
      m->n_fail++;
    if (r->mask != NULL && r->regions != NULL)
      m->n_with_mask++;
    if (m->model_id == NULL && r->model_id != NULL)
      m->model_id = g_strdup(r->model_id);
  }
  g_mutex_unlock(&m->lock);
}

static guint
model_seen_n(ModelSeen *m, guint *fails)
{
  g_mutex_lock(&m->lock);
  guint n = m->n;
  if (fails)
    *fails = m->n_fail;
  g_mutex_unlock(&m->lock);
  return n;
}

static void
test_model_scorer_hot_params(void)
{
  InspTrainOptions topt;
  insp_train_options_init(&topt);
  topt.backbone = "builtin";
  topt.input_size = 64;
  g_autoptr(GError) err = NULL;
  /* Training the builtin backbone needs nothing from the machine: a failure
   * here is a failure of our code, not a reason to skip. */
  g_autoptr(InspModel) model = insp_model_train(&topt, 8, tiny_good, NULL, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_nonnull(model);
  /* Threshold 0: everything fails. */
  InspInspectParams never_pass = {0.0f, 1e9f, 1, FALSE, {0, 0, 0, 0}};
  InspInspectParams always_pass = {1e9f, 1e9f, 1, FALSE, {0, 0, 0, 0}};
  g_autoptr(InspScorer) scorer = insp_model_scorer_new(model, &never_pass);
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.fps = 0;
  opt.width = 64;
  opt.height = 64;
  opt.workers = 2;
  ModelSeen m = {0};
  g_mutex_init(&m.lock);
  m.all_ok = TRUE;
  InspPipelineCallbacks cb = {on_model_result, NULL, NULL, &m, NULL};
  InspPipeline *p = insp_pipeline_new(&opt, scorer, &cb, &err);
  g_assert_no_error(err);
  g_assert_true(insp_pipeline_start(p, &err));
  gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (model_seen_n(&m, NULL) < 6 && g_get_monotonic_time() < end)
    g_usleep(10000);
  guint fails_before;
  guint n_before = model_seen_n(&m, &fails_before);
  g_assert_cmpuint(n_before, >=, 6);
  g_assert_cmpuint(fails_before, ==, n_before);
  /* Hot: from the next frame on, everything passes. */
  insp_model_scorer_set_params(scorer, &always_pass);
  g_usleep(50 * 1000); /* frames already scored may still arrive */
  guint fails_mid;
  guint n_mid = model_seen_n(&m, &fails_mid);
  while (model_seen_n(&m, NULL) < n_mid + 6 && g_get_monotonic_time() < end)
    g_usleep(10000);
  insp_pipeline_free(p);
  guint fails_after;
  guint n_after = model_seen_n(&m, &fails_after);
  g_assert_cmpuint(n_after, >=, n_mid + 6);
  g_assert_cmpuint(fails_after, <=, fails_mid + 2); /* at most the frames in flight */
  g_assert_true(m.all_ok);
  g_assert_cmpuint(m.n_with_mask, ==, m.n);
  g_assert_cmpstr(m.model_id, ==, insp_model_get_id(model));
  g_autoptr(InspModel) cur = insp_model_scorer_get_model(scorer);
  g_assert_true(cur == model);
  g_free(m.model_id);
  g_mutex_clear(&m.lock);
}

/* The model scorer lends each result a recycled set of buffers (mask,
 * regions, map copy; model_id is the model's own string): the results are
 * those of a fresh scoring of each frame, and the buffers are reused. */
typedef struct {
  InspModel *model;
  InspInspectParams params;
  InspModelScratch *scratch; /* the reference's, used on "insp-results" only */
  guint n, n_equal, n_regions;
  GHashTable *masks; /* distinct mask pointers seen */
  guint64 last_index;
  gboolean ordered;
} RecycleSeen;

static void
on_recycled_result(const InspResult *r, gpointer data)
{
  RecycleSeen *s = data;
  if (s->n > 0 && r->index != s->last_index + 1)
    s->ordered = FALSE;
  s->last_index = r->index;
  s->n++;
  g_assert_true(r->ok);
  InspFrame *f = r->frame;
  InspScoreResult sr;
  g_autoptr(GError) err = NULL;
  g_assert_true(
      insp_model_score(s->model, s->scratch, f->data, f->width, f->height, f->stride, &sr, &err));
  gsize n = (gsize)f->width * (gsize)f->height;
  g_autofree float *work = g_new(float, n);
  g_autofree guint8 *mask = g_malloc(n);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  gboolean fail = insp_inspect(sr.map, sr.map_width, sr.map_height, sr.score, f->width, f->height,
                               &s->params, work, mask, regions);
  gboolean equal =
      r->score == sr.score && r->fail == fail && r->map_width == sr.map_width &&
      r->map_height == sr.map_height &&
      memcmp(r->map, sr.map, (gsize)sr.map_width * sr.map_height * sizeof(float)) == 0 &&
      memcmp(r->mask, mask, n) == 0 && r->regions->len == regions->len &&
      memcmp(r->regions->data, regions->data, regions->len * sizeof(InspRegion)) == 0 &&
      g_strcmp0(r->model_id, insp_model_get_id(s->model)) == 0;
  if (equal)
    s->n_equal++;
  s->n_regions += regions->len;
  g_hash_table_add(s->masks, r->mask);
}

/* Good parts, and every third one with a bright defect that moves. */
static InspFrame *
recycle_frame(guint i)
{
  g_autoptr(InspImage) img = tiny_good((int)i % 8, NULL, NULL);
  if (i % 3 == 0)
    for (int y = 8 + (int)i % 40; y < 16 + (int)i % 40; y++)
      memset(img->data + y * img->stride + (8 + i % 40) * 3, 255, 8 * 3);
  InspFrame *f = insp_frame_new(img->width, img->height);
  memcpy((guint8 *)f->data, img->data, (gsize)img->stride * img->height);
  f->seq = i;
  return f;
}

static void
test_model_scorer_recycles_buffers(void)
{
  InspTrainOptions topt;
  insp_train_options_init(&topt);
  topt.backbone = "builtin";
  topt.input_size = 64;
  g_autoptr(GError) err = NULL;
  g_autoptr(InspModel) model = insp_model_train(&topt, 8, tiny_good, NULL, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_nonnull(model);
  RecycleSeen s = {0};
  s.model = model;
  s.params = (InspInspectParams){0.5f, 0.2f, 4, FALSE, {0, 0, 0, 0}};
  s.scratch = insp_model_scratch_new(model, &err);
  g_assert_no_error(err);
  s.masks = g_hash_table_new(NULL, NULL);
  s.ordered = TRUE;
  g_autoptr(InspScorer) scorer = insp_model_scorer_new(model, &s.params);
  const guint n_frames = 40;

  /* Two workers, as fast as they go: every result equals a fresh scoring. */
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(4, INSP_DROP_NEVER);
  InspWorkers *w = insp_workers_new(2, scorer, on_recycled_result, &s);
  insp_workers_start(w, q);
  for (guint i = 0; i < n_frames; i++)
    g_assert_true(insp_frame_queue_push(q, recycle_frame(i)));
  insp_frame_queue_close(q);
  insp_workers_free(w);
  g_assert_cmpuint(s.n, ==, n_frames);
  g_assert_true(s.ordered);
  g_assert_cmpuint(s.n_equal, ==, n_frames);

  /* One worker, one frame at a time: each result has given its buffers back
   * before the next frame is scored, so the same set serves every frame. */
  g_hash_table_remove_all(s.masks);
  s.n = s.n_equal = 0;
  g_autoptr(InspFrameQueue) q1 = insp_frame_queue_new(1, INSP_DROP_NEVER);
  w = insp_workers_new(1, scorer, on_recycled_result, &s);
  insp_workers_start(w, q1);
  for (guint i = 0; i < 12; i++) {
    g_assert_true(insp_frame_queue_push(q1, recycle_frame(i)));
    InspWorkersStats st = {0};
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (st.inspected < i + 1 && g_get_monotonic_time() < end) {
      g_usleep(2000);
      insp_workers_get_stats(w, &st);
    }
    g_usleep(5000); /* the result is freed right after it is counted */
  }
  insp_frame_queue_close(q1);
  insp_workers_free(w);
  g_assert_cmpuint(s.n, ==, 12);
  g_assert_cmpuint(s.n_equal, ==, 12);
  g_test_message("recycling: %u regions, %u distinct masks over 12 sequential frames", s.n_regions,
                 g_hash_table_size(s.masks));
  g_assert_cmpuint(g_hash_table_size(s.masks), ==, 1);
  g_hash_table_unref(s.masks);
  insp_model_scratch_free(s.scratch);
}

static void
test_cameras_command(void)
{
  const char *inspectd = g_getenv("INSPECTD");
  if (inspectd == NULL) {
    g_test_skip("INSPECTD is not set (run through meson test)");
    return;
  }
  const char *argv[] = {inspectd, "cameras", NULL};
  g_autofree char *out = NULL;
  int status = -1;
  g_autoptr(GError) err = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL,
                             &status, &err));
  g_assert_no_error(err);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  gboolean v4l2 = g_file_test("/dev/video0", G_FILE_TEST_EXISTS);
  if (!v4l2)
    g_assert_nonnull(strstr(out, "no V4L2 devices"));
  else
    g_assert_nonnull(strstr(out, "/dev/video0"));
  g_assert_nonnull(strstr(out, "GenICam"));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  gst_init(&argc, &argv);
  g_test_add_func("/capture/files-exactly-once", test_files_exactly_once);
  g_test_add_func("/capture/files-slow-workers", test_files_slow_workers);
  g_test_add_func("/capture/files-part-ids-unique", test_files_part_ids_unique);
  g_test_add_func("/capture/files-skip-corrupt", test_files_skip_corrupt);
  g_test_add_func("/capture/files-over-max-pixels", test_files_over_max_pixels);
  g_test_add_func("/capture/drop-oldest-counts", test_drop_oldest_counts);
  g_test_add_func("/capture/drop-never-keeps-all", test_drop_never_keeps_all);
  g_test_add_func("/capture/restart-after-eos", test_restart_after_eos);
  g_test_add_func("/capture/restart-after-error", test_restart_after_error);
  g_test_add_func("/capture/files-vanish", test_files_vanish);
  g_test_add_func("/capture/backoff-resets-after-stable-run", test_backoff_resets_after_stable_run);
  g_test_add_func("/capture/caller-context", test_caller_context);
  g_test_add_func("/capture/v4l2-missing-device", test_v4l2_missing_device);
  g_test_add_func("/capture/trigger-pairs-part-ids", test_trigger_pairs_part_ids);
  g_test_add_func("/capture/trigger-timeout", test_trigger_timeout);
  g_test_add_func("/capture/trigger-refused-in-free-mode", test_trigger_refused_in_free_mode);
  g_test_add_func("/capture/order-and-scorer-swap", test_order_and_scorer_swap);
  g_test_add_func("/capture/bad-options", test_bad_options);
  g_test_add_func("/capture/unknown-source-is-an-error", test_unknown_source_is_an_error);
  g_test_add_func("/capture/model-scorer-hot-params", test_model_scorer_hot_params);
  g_test_add_func("/capture/model-scorer-recycles-buffers", test_model_scorer_recycles_buffers);
  g_test_add_func("/capture/cameras-command", test_cameras_command);
  return g_test_run();
}
