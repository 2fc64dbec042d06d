/* The capture pipeline: builds the GStreamer graph from InspCaptureOptions,
 * turns appsink samples into InspFrames (trigger pairing, seq, part id, size
 * and format checks), feeds the bounded frame queue that the worker pool
 * (insp-workers.c) drains, and restarts a failing capture with exponential
 * backoff.
 *
 * Threads and what they own:
 *   - control context (callbacks->context, or our "insp-bus" thread): the
 *     GstPipeline, the bus watch, the restart and play sources, trigger
 *     timeouts; the event and trigger-timeout callbacks;
 *   - the appsink streaming thread: on_new_sample() only;
 *   - "insp-files": feeds the appsrc of the files source;
 *   - "insp-worker-N", "insp-results": the worker pool's; the result callback
 *     is called from "insp-results" through on_worker_result().
 * Locks (never nested with each other; only GLib's own context lock is taken
 * inside trig_lock, to attach or destroy a timeout; no callback runs with one
 * held): trig_lock (pending triggers), files_lock (the replay list and
 * resume point), stats_lock (counters).
 * Invariants: frames enter the queue in capture order with dense seq numbers;
 * the worker pool delivers one result per popped frame in pop order. */
#include "insp-pipeline.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <glob.h>
#include <math.h>
#include <string.h>

#include "insp-image.h"
#include "insp-pipeline-config.h"
#include "insp-workers.h"

typedef struct {
  guint64 id;         /* ours, for the timeout */
  guint64 trigger_id; /* the caller's */
  char *part_id;
  gint64 mono_us; /* when the trigger arrived */
  GSource *timeout;
} Trigger;

typedef struct {
  GstVideoFrame vframe;
  GstSample *sample;
} MappedSample;

struct _InspPipeline {
  /* options (copied) */
  InspCaptureOptions opt;
  const InspCaptureSourceClass *source; /* of the table, checked by check_options() */
  char *device, *camera, *uri, *location, *pipeline_desc;
  InspCameraControl *controls; /* n_controls, a copy of the options' */
  guint n_controls;
  InspPipelineCallbacks cb;

  GMainContext *ctx;
  GMainLoop *own_loop;
  GThread *bus_thread;

  InspFrameQueue *queue;
  InspWorkers *workers;
  gboolean running;

  /* control context only */
  GstElement *gst;
  GSource *bus_source;
  GSource *play_source;
  GSource *restart_source;
  guint attempt;
  guint backoff_ms;
  gint64 capture_started_us;

  /* files source: files_lock */
  GMutex files_lock;
  GCond files_cond;
  GPtrArray *files;     /* this session's sorted paths */
  char *last_delivered; /* path of the last file that reached the queue */
  gboolean feeder_stop;
  GThread *feeder;
  GstElement *appsrc;

  /* trig_lock */
  GMutex trig_lock;
  GQueue triggers; /* of Trigger*, oldest first */
  guint64 next_trigger_id;

  /* streaming thread */
  guint64 next_seq;

  /* stats_lock */
  GMutex stats_lock;
  InspPipelineStats stats;
};

/* ---- options ---------------------------------------------------------------- */

/* The capture sources. Each launch template is followed by " ! " and the
 * tail (conversion to RGB, appsink). In a template, {pipeline} is the user's
 * description, {bayer} becomes " ! bayer2rgb" when the aravis camera offers
 * only Bayer caps (probed at start), {rate} " is-live=true ! video/x-raw,
 * framerate=N/D" at fps > 0 and " is-live=false" otherwise. The element named
 * insp_src gets the option @key in its property @property (when set). */
typedef enum {
  KEY_NONE,
  KEY_DEVICE,
  KEY_CAMERA,
  KEY_URI,
  KEY_LOCATION,
  KEY_PIPELINE,
} SourceKey;

typedef enum {
  CONTROLS_NONE,
  CONTROLS_V4L2,   /* through libv4l2 on the device, after READY */
  CONTROLS_ARAVIS, /* aravissrc properties and features, before READY */
} SourceControls;

typedef enum {
  LIVE_NEVER,    /* a replay: capture time is the arrival time */
  LIVE_ALWAYS,   /* a camera: capture time from the buffer's clock time */
  LIVE_WITH_FPS, /* live only when fps > 0 */
} SourceLive;

struct _InspCaptureSourceClass {
  const char *name;
  const char *launch;
  SourceKey key;
  gboolean key_required;
  const char *key_name; /* for the message when it is missing */
  const char *property; /* of insp_src, set from @key when it is set; NULL: none */
  SourceLive live;
  SourceControls controls;
  gboolean replay; /* the files feeder: part ids from file stems, EOS = finished */
  gboolean built;
};

#ifdef INSP_HAVE_ARAVIS
#define ARAVIS_BUILT TRUE
#else
#define ARAVIS_BUILT FALSE
#endif

static const InspCaptureSourceClass source_table[] = {
    {"v4l2", "v4l2src name=insp_src ! decodebin", KEY_DEVICE, TRUE, "a device", "device",
     LIVE_ALWAYS, CONTROLS_V4L2, FALSE, TRUE},
    {"aravis", "aravissrc name=insp_src{bayer}", KEY_CAMERA, FALSE, "a camera", "camera-name",
     LIVE_ALWAYS, CONTROLS_ARAVIS, FALSE, ARAVIS_BUILT},
    {"rtsp", "rtspsrc name=insp_src ! decodebin", KEY_URI, TRUE, "a uri", "location", LIVE_ALWAYS,
     CONTROLS_NONE, FALSE, TRUE},
    {"files", "appsrc name=insp_src format=time max-buffers=2 block=true", KEY_LOCATION, TRUE,
     "a location (a glob)", NULL, LIVE_NEVER, CONTROLS_NONE, TRUE, TRUE},
    {"test", "videotestsrc name=insp_src{rate}", KEY_NONE, FALSE, NULL, NULL, LIVE_WITH_FPS,
     CONTROLS_NONE, FALSE, TRUE},
    {"pipeline", "{pipeline}", KEY_PIPELINE, TRUE, "a pipeline description", NULL, LIVE_ALWAYS,
     CONTROLS_NONE, FALSE, TRUE},
};

const InspCaptureSourceClass *
insp_capture_source_lookup(const char *name, GError **error)
{
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  for (guint i = 0; name != NULL && i < G_N_ELEMENTS(source_table); i++) {
    if (!g_str_equal(name, source_table[i].name))
      continue;
    if (!source_table[i].built) {
      g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_NOT_BUILT,
                  "capture source %s is not built in (inspectd was built without it)", name);
      return NULL;
    }
    return &source_table[i];
  }
  g_autoptr(GString) names = g_string_new(NULL);
  for (guint i = 0; i < G_N_ELEMENTS(source_table); i++)
    if (source_table[i].built)
      g_string_append_printf(names, "%s%s", names->len ? ", " : "", source_table[i].name);
  g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS,
              "unknown capture source %s (this build has %s)", name ? name : "(none)", names->str);
  return NULL;
}

gboolean
insp_capture_source_class_is_replay(const InspCaptureSourceClass *klass)
{
  g_return_val_if_fail(klass != NULL, FALSE);
  return klass->replay;
}

static const char *
source_key_value(const InspCaptureOptions *o, SourceKey key)
{
  switch (key) {
  case KEY_DEVICE:
    return o->device;
  case KEY_CAMERA:
    return o->camera;
  case KEY_URI:
    return o->uri;
  case KEY_LOCATION:
    return o->location;
  case KEY_PIPELINE:
    return o->pipeline;
  case KEY_NONE:
    break;
  }
  return NULL;
}

void
insp_capture_options_init(InspCaptureOptions *opt)
{
  g_return_if_fail(opt != NULL);
  memset(opt, 0, sizeof *opt);
  opt->source = "test";
  opt->fps = 0;
  opt->drop = INSP_DROP_NEVER;
  opt->queue_size = 4;
  opt->workers = 1;
  opt->trigger = INSP_TRIGGER_FREE;
  opt->timeout_ms = 1000;
  opt->backoff_initial_ms = 500;
  opt->backoff_max_ms = 30000;
  opt->stable_ms = 10000;
}

static void on_worker_result(const InspResult *result, gpointer user_data);

static gboolean
check_options(const InspCaptureOptions *o, GError **error)
{
#define REQUIRE(cond, ...)                                                                         \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS, __VA_ARGS__);           \
      return FALSE;                                                                                \
    }                                                                                              \
  } while (0)
  const InspCaptureSourceClass *src = insp_capture_source_lookup(o->source, error);
  if (src == NULL)
    return FALSE;
  const char *key = source_key_value(o, src->key);
  REQUIRE(!src->key_required || (key != NULL && *key), "source %s needs %s", src->name,
          src->key_name);
  REQUIRE(o->fps >= 0 && o->fps <= 1000, "fps %g is out of range 0..1000", o->fps);
  REQUIRE(o->width >= 0 && o->height >= 0 && o->width <= 16384 && o->height <= 16384,
          "width/height %dx%d out of range 0..16384", o->width, o->height);
  REQUIRE((o->width == 0) == (o->height == 0), "width and height must be set together");
  REQUIRE(o->drop == INSP_DROP_NEVER || o->drop == INSP_DROP_OLDEST, "unknown drop policy");
  REQUIRE(o->queue_size <= 1024, "queue_size %u is over 1024", o->queue_size);
  REQUIRE(o->workers <= 64, "workers %u is over 64", o->workers);
  REQUIRE(o->trigger == INSP_TRIGGER_FREE || o->trigger == INSP_TRIGGER_EXTERNAL,
          "unknown trigger mode");
  REQUIRE(o->n_controls == 0 || o->controls != NULL, "n_controls without controls");
  REQUIRE(o->n_controls == 0 || src->controls != CONTROLS_NONE,
          "controls apply to the v4l2 and aravis sources only");
#undef REQUIRE
  return TRUE;
}

InspPipeline *
insp_pipeline_new(const InspCaptureOptions *opt, InspScorer *scorer,
                  const InspPipelineCallbacks *callbacks, GError **error)
{
  g_return_val_if_fail(opt != NULL, NULL);
  g_return_val_if_fail(scorer != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (!check_options(opt, error))
    return NULL;
  if (!gst_init_check(NULL, NULL, error))
    return NULL;

  InspPipeline *p = g_new0(InspPipeline, 1);
  p->opt = *opt;
  p->source = insp_capture_source_lookup(opt->source, NULL);
  p->opt.source = p->source->name;
  p->device = g_strdup(opt->device);
  p->camera = g_strdup(opt->camera);
  p->uri = g_strdup(opt->uri);
  p->location = g_strdup(opt->location);
  p->pipeline_desc = g_strdup(opt->pipeline);
  p->opt.device = p->device;
  p->opt.camera = p->camera;
  p->opt.uri = p->uri;
  p->opt.location = p->location;
  p->opt.pipeline = p->pipeline_desc;
  p->controls = insp_camera_controls_copy(opt->controls, opt->n_controls);
  p->n_controls = opt->n_controls;
  p->opt.controls = NULL;
  p->opt.n_controls = 0;
  if (p->opt.queue_size == 0)
    p->opt.queue_size = 4;
  if (p->opt.workers == 0)
    p->opt.workers = 1;
  if (p->opt.timeout_ms == 0)
    p->opt.timeout_ms = 1000;
  if (p->opt.backoff_initial_ms == 0)
    p->opt.backoff_initial_ms = 500;
  if (p->opt.backoff_max_ms == 0)
    p->opt.backoff_max_ms = 30000;
  if (p->opt.stable_ms == 0)
    p->opt.stable_ms = 10000;
  if (callbacks != NULL)
    p->cb = *callbacks;
  if (p->cb.context != NULL)
    p->ctx = g_main_context_ref(p->cb.context);
  else
    p->ctx = g_main_context_new();

  /* A triggered part must never be dropped: in trigger mode only armed frames
   * enter the queue, so backpressure there costs nothing but untriggered
   * frames, which are skipped anyway. */
  if (p->opt.trigger == INSP_TRIGGER_EXTERNAL)
    p->opt.drop = INSP_DROP_NEVER;
  p->queue = insp_frame_queue_new(p->opt.queue_size, p->opt.drop);
  p->workers = insp_workers_new(p->opt.workers, scorer, on_worker_result, p);
  g_mutex_init(&p->files_lock);
  g_cond_init(&p->files_cond);
  g_mutex_init(&p->trig_lock);
  g_queue_init(&p->triggers);
  g_mutex_init(&p->stats_lock);
  p->backoff_ms = p->opt.backoff_initial_ms;
  return p;
}

/* ---- results ("insp-results") ---------------------------------------------------- */

static void
on_worker_result(const InspResult *result, gpointer user_data)
{
  InspPipeline *p = user_data;
  if (p->cb.result != NULL)
    p->cb.result(p, result, p->cb.user_data);
}

/* ---- events ------------------------------------------------------------------- */

static void
emit_event(InspPipeline *p, InspPipelineEventKind kind, const char *message, const char *detail,
           guint attempt, guint delay_ms)
{
  if (p->cb.event == NULL)
    return;
  InspPipelineEvent ev = {kind, message, detail, attempt, delay_ms};
  p->cb.event(p, &ev, p->cb.user_data);
}

/* ---- frames from the appsink (streaming thread) --------------------------------- */

static void
mapped_sample_free(gpointer data)
{
  MappedSample *m = data;
  gst_video_frame_unmap(&m->vframe);
  gst_sample_unref(m->sample);
  g_free(m);
}

static void
count(InspPipeline *p, guint64 *field)
{
  g_mutex_lock(&p->stats_lock);
  (*field)++;
  g_mutex_unlock(&p->stats_lock);
}

/* Length of @pattern's fixed folder: up to and including the last '/' before
 * the first glob character (the whole folder part when there is none). */
static gsize
glob_fixed_prefix_len(const char *pattern)
{
  gsize meta = strcspn(pattern, "*?[");
  gsize slash = 0;

  for (gsize i = 0; i < meta; i++)
    if (pattern[i] == '/')
      slash = i + 1;
  return slash;
}

/* A file's part id: its path below the glob's fixed folder without the
 * extension ("good/000" and "broken_large/000" for test/STAR/STAR.png), so
 * that two files never share a part id; the bare stem when the glob has no
 * folder wildcard. */
/* The largest frame accepted, in pixels. */
static gint64
max_pixels(const InspPipeline *p)
{
  return p->opt.max_pixels > 0 ? MIN(p->opt.max_pixels, INSP_IMAGE_MAX_PIXELS)
                               : INSP_IMAGE_MAX_PIXELS;
}

static char *
file_part_id(const char *path, gsize prefix_len)
{
  g_autofree char *rel = g_strdup(strlen(path) >= prefix_len ? path + prefix_len : path);
  char *slash = strrchr(rel, '/');
  char *dot = strrchr(slash ? slash + 1 : rel, '.');

  if (dot != NULL && dot != (slash ? slash + 1 : rel))
    *dot = '\0';
  return g_steal_pointer(&rel);
}

/* Pops the oldest trigger that arrived at or before @mono_us; NULL if none. */
static Trigger *
take_trigger(InspPipeline *p, gint64 mono_us)
{
  Trigger *t = NULL;
  g_mutex_lock(&p->trig_lock);
  Trigger *head = g_queue_peek_head(&p->triggers);
  if (head != NULL && head->mono_us <= mono_us)
    t = g_queue_pop_head(&p->triggers);
  g_mutex_unlock(&p->trig_lock);
  return t;
}

static void
trigger_free(Trigger *t)
{
  if (t == NULL)
    return;
  if (t->timeout != NULL) {
    g_source_destroy(t->timeout);
    g_source_unref(t->timeout);
  }
  g_free(t->part_id);
  g_free(t);
}

static GstFlowReturn
on_new_sample(GstAppSink *sink, gpointer user_data)
{
  InspPipeline *p = user_data;
  GstSample *sample = gst_app_sink_pull_sample(sink);
  if (sample == NULL)
    return GST_FLOW_FLUSHING;
  gint64 now_mono = g_get_monotonic_time();
  gint64 now_wall = g_get_real_time();
  count(p, &p->stats.frames_captured);

  GstVideoInfo info;
  GstCaps *caps = gst_sample_get_caps(sample);
  GstBuffer *buf = gst_sample_get_buffer(sample);
  if (caps == NULL || buf == NULL || !gst_video_info_from_caps(&info, caps) ||
      GST_VIDEO_INFO_FORMAT(&info) != GST_VIDEO_FORMAT_RGB) {
    count(p, &p->stats.rejected_format);
    gst_sample_unref(sample);
    return GST_FLOW_OK;
  }
  int w = GST_VIDEO_INFO_WIDTH(&info), h = GST_VIDEO_INFO_HEIGHT(&info);
  if (w <= 0 || h <= 0 || (gint64)w * h > max_pixels(p) ||
      (p->opt.width > 0 && (w != p->opt.width || h != p->opt.height))) {
    count(p, &p->stats.rejected_size);
    gst_sample_unref(sample);
    return GST_FLOW_OK;
  }
  MappedSample *m = g_new0(MappedSample, 1);
  if (!gst_video_frame_map(&m->vframe, &info, buf, GST_MAP_READ)) {
    g_free(m);
    count(p, &p->stats.rejected_size); /* buffer smaller than its caps say */
    gst_sample_unref(sample);
    return GST_FLOW_OK;
  }
  m->sample = sample;
  guint64 offset = GST_BUFFER_OFFSET(buf);

  /* Capture time: for live sources the buffer's clock time (base time + PTS)
   * when the pipeline runs on the monotonic system clock and the time is
   * plausible (not ahead of now, less than a second old); else the arrival
   * time. Replays (files, a non-live test source) use the arrival time. */
  gint64 mono = now_mono;
  gboolean live =
      p->source->live == LIVE_ALWAYS || (p->source->live == LIVE_WITH_FPS && p->opt.fps > 0);
  GstClock *clock = live ? gst_element_get_clock(GST_ELEMENT(sink)) : NULL;
  if (clock != NULL) {
    GstClockType type = GST_CLOCK_TYPE_REALTIME;
    if (GST_IS_SYSTEM_CLOCK(clock))
      g_object_get(clock, "clock-type", &type, NULL);
    GstClockTime base = gst_element_get_base_time(GST_ELEMENT(sink));
    GstClockTime pts = GST_BUFFER_PTS(buf);
    if (type == GST_CLOCK_TYPE_MONOTONIC && GST_CLOCK_TIME_IS_VALID(pts) &&
        GST_CLOCK_TIME_IS_VALID(base)) {
      gint64 t = (gint64)((base + pts) / 1000);
      if (t <= now_mono && now_mono - t < G_USEC_PER_SEC)
        mono = t;
    }
    gst_object_unref(clock);
  }

  InspFrame *f =
      insp_frame_new_wrapped(GST_VIDEO_FRAME_PLANE_DATA(&m->vframe, 0), w, h,
                             GST_VIDEO_FRAME_PLANE_STRIDE(&m->vframe, 0), mapped_sample_free, m);
  f->mono_us = mono;
  f->wall_us = now_wall - (now_mono - mono);

  char *file_path = NULL;
  if (p->source->replay) {
    g_mutex_lock(&p->files_lock);
    if (p->files != NULL && offset < p->files->len)
      file_path = g_strdup(g_ptr_array_index(p->files, offset));
    g_mutex_unlock(&p->files_lock);
  }

  Trigger *t = NULL;
  if (p->opt.trigger == INSP_TRIGGER_EXTERNAL) {
    t = take_trigger(p, mono);
    if (t == NULL) {
      count(p, &p->stats.frames_untriggered);
      insp_frame_unref(f);
      g_free(file_path);
      return GST_FLOW_OK;
    }
  }
  f->seq = p->next_seq++;
  if (t != NULL) {
    f->part_id = g_strdup(t->part_id);
    f->trigger_id = t->trigger_id;
  } else if (file_path != NULL)
    f->part_id = file_part_id(file_path, glob_fixed_prefix_len(p->location));
  else
    f->part_id = g_strdup_printf("%" G_GUINT64_FORMAT, f->seq);

  if (insp_frame_queue_push(p->queue, f)) {
    count(p, &p->stats.frames_queued);
    trigger_free(t);
    if (file_path != NULL) {
      g_mutex_lock(&p->files_lock);
      g_free(p->last_delivered);
      p->last_delivered = g_steal_pointer(&file_path);
      g_mutex_unlock(&p->files_lock);
    }
  } else {
    /* Shutting down or restarting: the trigger waits for the next frame. */
    p->next_seq--;
    if (t != NULL) {
      g_mutex_lock(&p->trig_lock);
      g_queue_push_head(&p->triggers, t);
      g_mutex_unlock(&p->trig_lock);
    }
  }
  g_free(file_path);
  return GST_FLOW_OK;
}

/* ---- the files source feeder ("insp-files") ------------------------------------- */

static gint
compare_paths(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static GPtrArray *
glob_sorted(const char *pattern, GError **error)
{
  glob_t g;
  int rc = glob(pattern, GLOB_NOSORT, NULL, &g);
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; i++)
      if (g_file_test(g.gl_pathv[i], G_FILE_TEST_IS_REGULAR))
        g_ptr_array_add(out, g_strdup(g.gl_pathv[i]));
  if (rc == 0 || rc == GLOB_NOMATCH)
    globfree(&g);
  if (rc != 0 && rc != GLOB_NOMATCH) {
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS,
                "cannot read the files of %s", pattern);
    g_ptr_array_unref(out);
    return NULL;
  }
  g_ptr_array_sort(out, compare_paths);
  return out;
}

static void
image_free(gpointer data)
{
  insp_image_free(data);
}

static void
feeder_post_error(InspPipeline *p, GstElement *src, const char *message, const char *detail)
{
  GError *err = g_error_new_literal(GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ, message);
  gst_element_post_message(src, gst_message_new_error(GST_OBJECT(src), err, detail));
  g_error_free(err);
}

/* Waits until @deadline_us (monotonic) or a stop; FALSE when stopped. */
static gboolean
feeder_wait(InspPipeline *p, gint64 deadline_us)
{
  gboolean go = TRUE;
  g_mutex_lock(&p->files_lock);
  while (!p->feeder_stop && g_get_monotonic_time() < deadline_us)
    g_cond_wait_until(&p->files_cond, &p->files_lock, deadline_us);
  go = !p->feeder_stop;
  g_mutex_unlock(&p->files_lock);
  return go;
}

static gpointer
feeder_main(gpointer data)
{
  InspPipeline *p = data;
  GstElement *src = gst_object_ref(p->appsrc);
  insp_workers_block_signals();

  g_mutex_lock(&p->files_lock);
  GPtrArray *files = g_ptr_array_ref(p->files);
  guint start = 0;
  if (p->last_delivered != NULL) {
    while (start < files->len && strcmp(g_ptr_array_index(files, start), p->last_delivered) <= 0)
      start++;
    if (start == files->len && p->opt.loop)
      start = 0;
  }
  g_mutex_unlock(&p->files_lock);

  if (files->len == 0) {
    g_autofree char *msg = g_strdup_printf("no file matches %s", p->opt.location);
    feeder_post_error(p, src, msg, NULL);
    goto out;
  }

  int cur_w = 0, cur_h = 0;
  int fps_n = 0, fps_d = 1;
  if (p->opt.fps > 0)
    gst_util_double_to_fraction(p->opt.fps, &fps_n, &fps_d);
  gint64 t0 = g_get_monotonic_time();
  guint64 n = 0;
  for (;;) {
    for (guint i = start; i < files->len; i++) {
      const char *path = g_ptr_array_index(files, i);
      g_autoptr(GError) err = NULL;
      if (p->opt.fps > 0 && !feeder_wait(p, t0 + (gint64)(n * G_USEC_PER_SEC / p->opt.fps)))
        goto out;
      g_mutex_lock(&p->files_lock);
      gboolean stop = p->feeder_stop;
      g_mutex_unlock(&p->files_lock);
      if (stop)
        goto out;
      InspImage *img = insp_image_load(path, 3, &err);
      if (img == NULL && !g_error_matches(err, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO)) {
        /* Not an image we can decode: skip it (counted, reported), or the
         * replay would stop at it after every restart. */
        count(p, g_error_matches(err, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_TOO_LARGE)
                     ? &p->stats.rejected_size
                     : &p->stats.rejected_format);
        g_autofree char *msg = g_strdup_printf("skipping a file of the replay: %s", err->message);
        GError *w = g_error_new_literal(INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS, msg);
        gst_element_post_message(src, gst_message_new_warning(GST_OBJECT(src), w, NULL));
        g_error_free(w);
        continue;
      }
      if (img != NULL && (gint64)img->width * img->height > max_pixels(p)) {
        count(p, &p->stats.rejected_size);
        g_autofree char *msg = g_strdup_printf("skipping a file of the replay: %s: %dx%d is over "
                                               "[camera] max_pixels = %" G_GINT64_FORMAT,
                                               path, img->width, img->height, max_pixels(p));
        GError *w = g_error_new_literal(INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_OPTIONS, msg);
        insp_image_free(img);
        gst_element_post_message(src, gst_message_new_warning(GST_OBJECT(src), w, NULL));
        g_error_free(w);
        continue;
      }
      if (img == NULL) {
        g_autofree char *msg = g_strdup_printf("cannot read %s", path);
        feeder_post_error(p, src, msg, err->message);
        goto out;
      }
      if (img->width != cur_w || img->height != cur_h) {
        GstCaps *caps = gst_caps_new_simple(
            "video/x-raw", "format", G_TYPE_STRING, "RGB", "width", G_TYPE_INT, img->width,
            "height", G_TYPE_INT, img->height, "framerate", GST_TYPE_FRACTION, fps_n, fps_d, NULL);
        gst_app_src_set_caps(GST_APP_SRC(src), caps);
        gst_caps_unref(caps);
        cur_w = img->width;
        cur_h = img->height;
      }
      gsize size = (gsize)img->stride * img->height;
      GstBuffer *buf = gst_buffer_new_wrapped_full(GST_MEMORY_FLAG_READONLY, img->data, size, 0,
                                                   size, img, image_free);
      gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
      gint strides[GST_VIDEO_MAX_PLANES] = {img->stride};
      gst_buffer_add_video_meta_full(buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_RGB,
                                     img->width, img->height, 1, offsets, strides);
      GST_BUFFER_OFFSET(buf) = i;
      if (fps_n > 0) {
        GST_BUFFER_PTS(buf) = gst_util_uint64_scale(n, GST_SECOND * fps_d, fps_n);
        GST_BUFFER_DURATION(buf) = gst_util_uint64_scale(GST_SECOND, fps_d, fps_n);
      }
      n++;
      if (gst_app_src_push_buffer(GST_APP_SRC(src), buf) != GST_FLOW_OK)
        goto out; /* flushing: we are being stopped */
    }
    if (!p->opt.loop) {
      gst_app_src_end_of_stream(GST_APP_SRC(src));
      break;
    }
    start = 0;
  }
out:
  g_ptr_array_unref(files);
  gst_object_unref(src);
  return NULL;
}

/* ---- the capture graph (control context) ----------------------------------------- */

static char *
tail_description(const InspPipeline *p)
{
  if (p->opt.width > 0)
    return g_strdup_printf("videoconvert ! videoscale ! video/x-raw,format=RGB,width=%d,height=%d "
                           "! appsink name=insp_sink",
                           p->opt.width, p->opt.height);
  return g_strdup("videoconvert ! video/x-raw,format=RGB ! appsink name=insp_sink");
}

/* Whether the aravis camera offers only Bayer caps: opens it alone at READY. */
static gboolean
aravis_probe_bayer(const InspPipeline *p, gboolean *bayer, GError **error)
{
  GstElement *src = gst_element_factory_make("aravissrc", NULL);
  if (src == NULL) {
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_GRAPH,
                "GStreamer element aravissrc is missing (install gstreamer1.0-plugins-bad)");
    return FALSE;
  }
  gst_object_ref_sink(src);
  if (p->camera != NULL)
    g_object_set(src, "camera-name", p->camera, NULL);
  *bayer = FALSE;
  gboolean raw = FALSE;
  if (gst_element_set_state(src, GST_STATE_READY) != GST_STATE_CHANGE_FAILURE) {
    GstPad *pad = gst_element_get_static_pad(src, "src");
    GstCaps *caps = gst_pad_query_caps(pad, NULL);
    for (guint i = 0; i < gst_caps_get_size(caps); i++) {
      const char *name = gst_structure_get_name(gst_caps_get_structure(caps, i));
      if (g_str_equal(name, "video/x-bayer"))
        *bayer = TRUE;
      else if (g_str_equal(name, "video/x-raw"))
        raw = TRUE;
    }
    gst_caps_unref(caps);
    gst_object_unref(pad);
  }
  gst_element_set_state(src, GST_STATE_NULL);
  gst_object_unref(src);
  if (raw)
    *bayer = FALSE;
  return TRUE;
}

/* Aravis controls: exposure, gain, exposure_auto, gain_auto, trigger map to
 * aravissrc properties, the rest go to its "features" string. */
static void
aravis_apply_controls(InspPipeline *p, GstElement *src, GPtrArray *warnings)
{
  GString *features = g_string_new(NULL);
  static const struct {
    const char *control, *property;
  } map[] = {
      {"exposure", "exposure"},
      {"exposure_time", "exposure"},
      {"exposuretime", "exposure"},
      {"gain", "gain"},
      {"exposure_auto", "exposure-auto"},
      {"exposureauto", "exposure-auto"},
      {"gain_auto", "gain-auto"},
      {"gainauto", "gain-auto"},
      {"trigger", "trigger"},
      {"triggersource", "trigger"},
  };
  for (guint i = 0; i < p->n_controls; i++) {
    const InspCameraControl *c = &p->controls[i];
    const char *prop = NULL;
    for (guint k = 0; k < G_N_ELEMENTS(map); k++)
      if (g_str_equal(c->name, map[k].control))
        prop = map[k].property;
    if (prop == NULL) {
      /* A GenICam feature: its name keeps the case it was written with. */
      g_string_append_printf(features, "%s%s=%s", features->len ? " " : "", c->feature, c->text);
      continue;
    }
    GParamSpec *ps = g_object_class_find_property(G_OBJECT_GET_CLASS(src), prop);
    if (ps == NULL) {
      g_ptr_array_add(
          warnings, g_strdup_printf("control %s: aravissrc has no property %s", c->feature, prop));
      continue;
    }
    gst_util_set_object_arg(G_OBJECT(src), prop, c->text);
    GValue v = G_VALUE_INIT;
    g_value_init(&v, ps->value_type);
    g_object_get_property(G_OBJECT(src), prop, &v);
    g_autofree char *back = gst_value_serialize(&v);
    g_value_unset(&v);
    if (G_IS_PARAM_SPEC_DOUBLE(ps) || G_IS_PARAM_SPEC_FLOAT(ps)) {
      if (fabs(g_ascii_strtod(back, NULL) - g_ascii_strtod(c->text, NULL)) > 1e-3)
        g_ptr_array_add(warnings, g_strdup_printf("control %s=%s did not take: it reads %s",
                                                  c->feature, c->text, back));
    } else if (back == NULL || g_ascii_strcasecmp(back, c->text) != 0) {
      g_ptr_array_add(warnings, g_strdup_printf("control %s=%s did not take: it reads %s",
                                                c->feature, c->text, back ? back : "nothing"));
    }
  }
  if (features->len > 0)
    g_object_set(src, "features", features->str, NULL);
  g_string_free(features, TRUE);
}

static gboolean on_bus_message(GstBus *bus, GstMessage *msg, gpointer data);

/* The source's launch template with its placeholders expanded. */
static char *
launch_head(const InspPipeline *p, GError **error)
{
  g_autoptr(GString) s = g_string_new(p->source->launch);
  if (strstr(s->str, "{bayer}") != NULL) {
    gboolean bayer = FALSE;
    if (!aravis_probe_bayer(p, &bayer, error))
      return NULL;
    g_string_replace(s, "{bayer}", bayer ? " ! bayer2rgb" : "", 1);
  }
  if (strstr(s->str, "{rate}") != NULL) {
    g_autofree char *rate = NULL;
    if (p->opt.fps > 0) {
      int n, d;
      gst_util_double_to_fraction(p->opt.fps, &n, &d);
      rate = g_strdup_printf(" is-live=true ! video/x-raw,framerate=%d/%d", n, d);
    } else {
      rate = g_strdup(" is-live=false");
    }
    g_string_replace(s, "{rate}", rate, 1);
  }
  g_string_replace(s, "{pipeline}", p->pipeline_desc != NULL ? p->pipeline_desc : "", 1);
  return g_string_free(g_steal_pointer(&s), FALSE);
}

static GstElement *
build_graph(InspPipeline *p, GError **error)
{
  g_autofree char *tail = tail_description(p);
  g_autofree char *head = launch_head(p, error);
  if (head == NULL)
    return NULL;
  g_autofree char *desc = g_strdup_printf("%s ! %s", head, tail);

  GError *perr = NULL;
  GstElement *gst = gst_parse_launch_full(desc, NULL, GST_PARSE_FLAG_FATAL_ERRORS, &perr);
  if (gst == NULL || perr != NULL) {
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_GRAPH,
                "cannot build the %s capture graph: %s", p->source->name,
                perr ? perr->message : "unknown error");
    g_clear_error(&perr);
    if (gst != NULL)
      gst_object_unref(gst);
    return NULL;
  }
  if (!GST_IS_PIPELINE(gst)) {
    GstElement *wrap = gst_pipeline_new(NULL);
    gst_bin_add(GST_BIN(wrap), gst);
    gst = wrap;
  }
  GstElement *src = gst_bin_get_by_name(GST_BIN(gst), "insp_src");
  const char *key = source_key_value(&p->opt, p->source->key);
  if (src != NULL && p->source->property != NULL && key != NULL)
    g_object_set(src, p->source->property, key, NULL);
  if (src != NULL)
    gst_object_unref(src);

  GstElement *sink = gst_bin_get_by_name(GST_BIN(gst), "insp_sink");
  g_assert(sink != NULL);
  g_object_set(sink, "sync", FALSE, "max-buffers", 1, "drop", FALSE, "emit-signals", FALSE, NULL);
  GstAppSinkCallbacks cbs = {0};
  cbs.new_sample = on_new_sample;
  gst_app_sink_set_callbacks(GST_APP_SINK(sink), &cbs, p, NULL);
  gst_object_unref(sink);
  return gst;
}

static void schedule_restart(InspPipeline *p);

static void
teardown_capture(InspPipeline *p)
{
  if (p->play_source != NULL) {
    g_source_destroy(p->play_source);
    g_clear_pointer(&p->play_source, g_source_unref);
  }
  if (p->gst == NULL)
    return;
  insp_frame_queue_set_input_flushing(p->queue, TRUE);
  if (p->feeder != NULL) {
    g_mutex_lock(&p->files_lock);
    p->feeder_stop = TRUE;
    g_cond_broadcast(&p->files_cond);
    g_mutex_unlock(&p->files_lock);
  }
  gst_element_set_state(p->gst, GST_STATE_NULL);
  if (p->feeder != NULL) {
    g_thread_join(p->feeder);
    p->feeder = NULL;
  }
  g_clear_pointer(&p->appsrc, gst_object_unref);
  if (p->bus_source != NULL) {
    g_source_destroy(p->bus_source);
    g_clear_pointer(&p->bus_source, g_source_unref);
  }
  g_clear_pointer(&p->gst, gst_object_unref);
  insp_frame_queue_set_input_flushing(p->queue, FALSE);
}

/* Builds the graph and attaches its bus; the play source starts it. */
static gboolean
setup_capture(InspPipeline *p, GError **error)
{
  if (p->source->replay) {
    g_autoptr(GPtrArray) files = glob_sorted(p->location, error);
    if (files == NULL)
      return FALSE;
    g_mutex_lock(&p->files_lock);
    if (p->files != NULL)
      g_ptr_array_unref(p->files);
    p->files = g_steal_pointer(&files);
    p->feeder_stop = FALSE;
    g_mutex_unlock(&p->files_lock);
  }
  p->gst = build_graph(p, error);
  if (p->gst == NULL)
    return FALSE;
  GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(p->gst));
  p->bus_source = gst_bus_create_watch(bus);
  g_source_set_callback(p->bus_source, (GSourceFunc)(void (*)(void))on_bus_message, p, NULL);
  g_source_attach(p->bus_source, p->ctx);
  gst_object_unref(bus);
  return TRUE;
}

static gboolean
play_capture(gpointer data)
{
  InspPipeline *p = data;
  g_clear_pointer(&p->play_source, g_source_unref);
  g_autoptr(GPtrArray) warnings = g_ptr_array_new_with_free_func(g_free);
  GstElement *src = gst_bin_get_by_name(GST_BIN(p->gst), "insp_src");

  if (p->source->controls == CONTROLS_ARAVIS && src != NULL && p->n_controls > 0)
    aravis_apply_controls(p, src, warnings);
  GstStateChangeReturn r = gst_element_set_state(p->gst, GST_STATE_READY);
  if (r != GST_STATE_CHANGE_FAILURE && p->source->controls == CONTROLS_V4L2 && p->n_controls > 0) {
    g_autoptr(GError) err = NULL;
    if (!insp_v4l2_apply_controls(p->device, p->controls, p->n_controls, warnings, &err))
      g_ptr_array_add(warnings, g_strdup(err->message));
  }
  p->capture_started_us = g_get_monotonic_time();
  if (r != GST_STATE_CHANGE_FAILURE)
    r = gst_element_set_state(p->gst, GST_STATE_PLAYING);
  /* appsrc takes buffers once started (READY -> PAUSED, done above). */
  if (r != GST_STATE_CHANGE_FAILURE && p->source->replay && src != NULL) {
    p->appsrc = gst_object_ref(src);
    p->feeder = g_thread_new("insp-files", feeder_main, p);
  }
  if (src != NULL)
    gst_object_unref(src);
  for (guint i = 0; i < warnings->len; i++)
    emit_event(p, INSP_PIPELINE_EVENT_CONTROL, g_ptr_array_index(warnings, i), NULL, 0, 0);
  /* A failure posts an ERROR on the bus as well, which restarts; should an
   * element fail without one, restart from here. */
  if (r == GST_STATE_CHANGE_FAILURE && p->restart_source == NULL) {
    GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(p->gst));
    gboolean has_error = gst_bus_have_pending(bus);
    gst_object_unref(bus);
    if (!has_error) {
      emit_event(p, INSP_PIPELINE_EVENT_ERROR, "the capture pipeline did not start", NULL, 0, 0);
      teardown_capture(p);
      schedule_restart(p);
    }
  }
  return G_SOURCE_REMOVE;
}

static void
queue_play(InspPipeline *p)
{
  p->play_source = g_idle_source_new();
  g_source_set_callback(p->play_source, play_capture, p, NULL);
  g_source_attach(p->play_source, p->ctx);
}

static gboolean
restart_capture(gpointer data)
{
  InspPipeline *p = data;
  g_clear_pointer(&p->restart_source, g_source_unref);
  g_mutex_lock(&p->stats_lock);
  p->stats.restarts++;
  g_mutex_unlock(&p->stats_lock);
  g_autoptr(GError) err = NULL;
  if (!setup_capture(p, &err)) {
    emit_event(p, INSP_PIPELINE_EVENT_ERROR, err->message, NULL, 0, 0);
    teardown_capture(p);
    schedule_restart(p);
    return G_SOURCE_REMOVE;
  }
  play_capture(p);
  return G_SOURCE_REMOVE;
}

static void
schedule_restart(InspPipeline *p)
{
  if (p->restart_source != NULL || !p->running)
    return;
  gint64 ran_ms = (g_get_monotonic_time() - p->capture_started_us) / 1000;
  if (p->capture_started_us != 0 && ran_ms >= p->opt.stable_ms) {
    p->attempt = 0;
    p->backoff_ms = p->opt.backoff_initial_ms;
  }
  p->attempt++;
  guint delay = p->backoff_ms;
  p->backoff_ms = MIN(p->backoff_ms * 2, p->opt.backoff_max_ms);
  p->restart_source = g_timeout_source_new(delay);
  g_source_set_callback(p->restart_source, restart_capture, p, NULL);
  g_source_attach(p->restart_source, p->ctx);
  g_autofree char *msg = g_strdup_printf("restarting the %s capture in %u ms (attempt %u)",
                                         p->source->name, delay, p->attempt);
  emit_event(p, INSP_PIPELINE_EVENT_RESTARTING, msg, NULL, p->attempt, delay);
}

static gboolean
on_bus_message(GstBus *bus, GstMessage *msg, gpointer data)
{
  InspPipeline *p = data;
  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_ERROR: {
    g_autoptr(GError) err = NULL;
    g_autofree char *debug = NULL;
    gst_message_parse_error(msg, &err, &debug);
    g_autofree char *text = g_strdup_printf("%s capture error from %s: %s", p->source->name,
                                            GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)), err->message);
    teardown_capture(p);
    emit_event(p, INSP_PIPELINE_EVENT_ERROR, text, debug, 0, 0);
    schedule_restart(p);
    return G_SOURCE_REMOVE; /* teardown destroyed this source */
  }
  case GST_MESSAGE_EOS:
    teardown_capture(p);
    if (p->source->replay && !p->opt.loop) {
      emit_event(p, INSP_PIPELINE_EVENT_FINISHED, "the files replay has delivered every file", NULL,
                 0, 0);
    } else {
      emit_event(p, INSP_PIPELINE_EVENT_EOS, "the camera stream ended unexpectedly", NULL, 0, 0);
      schedule_restart(p);
    }
    return G_SOURCE_REMOVE;
  case GST_MESSAGE_STATE_CHANGED:
    if (GST_MESSAGE_SRC(msg) == GST_OBJECT(p->gst)) {
      GstState old, cur;
      gst_message_parse_state_changed(msg, &old, &cur, NULL);
      if (cur == GST_STATE_PLAYING && old != GST_STATE_PLAYING) {
        g_autofree char *text = g_strdup_printf("%s capture running", p->source->name);
        emit_event(p, INSP_PIPELINE_EVENT_STARTED, text, NULL, p->attempt, 0);
      }
    }
    break;
  case GST_MESSAGE_WARNING: {
    g_autoptr(GError) err = NULL;
    gst_message_parse_warning(msg, &err, NULL);
    if (err->domain == INSP_PIPELINE_ERROR)
      emit_event(p, INSP_PIPELINE_EVENT_REJECTED, err->message, NULL, 0, 0);
    else
      g_debug("capture warning: %s", err->message);
    break;
  }
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

/* ---- the own control thread ("insp-bus") ----------------------------------------- */

static gpointer
bus_main(gpointer data)
{
  InspPipeline *p = data;
  insp_workers_block_signals();
  g_main_context_push_thread_default(p->ctx);
  g_main_loop_run(p->own_loop);
  g_main_context_pop_thread_default(p->ctx);
  return NULL;
}

static gboolean
quit_own_loop(gpointer loop)
{
  g_main_loop_quit(loop);
  return G_SOURCE_REMOVE;
}

/* ---- lifecycle -------------------------------------------------------------------- */

gboolean
insp_pipeline_start(InspPipeline *p, GError **error)
{
  g_return_val_if_fail(p != NULL, FALSE);
  g_return_val_if_fail(!p->running, FALSE);
  if (!setup_capture(p, error)) {
    teardown_capture(p);
    return FALSE;
  }
  p->running = TRUE;
  insp_workers_start(p->workers, p->queue);
  queue_play(p);
  if (p->cb.context == NULL) {
    p->own_loop = g_main_loop_new(p->ctx, FALSE);
    p->bus_thread = g_thread_new("insp-bus", bus_main, p);
  }
  return TRUE;
}

void
insp_pipeline_stop(InspPipeline *p, gboolean drain)
{
  g_return_if_fail(p != NULL);
  if (!p->running)
    return;
  if (p->bus_thread != NULL) {
    /* Quit from inside the loop: a g_main_loop_quit() that lands before the
     * thread reaches g_main_loop_run() would be lost. */
    GSource *quit = g_idle_source_new();
    g_source_set_callback(quit, quit_own_loop, p->own_loop, NULL);
    g_source_attach(quit, p->ctx);
    g_source_unref(quit);
    g_thread_join(p->bus_thread);
    p->bus_thread = NULL;
    g_clear_pointer(&p->own_loop, g_main_loop_unref);
  }
  p->running = FALSE;
  if (p->restart_source != NULL) {
    g_source_destroy(p->restart_source);
    g_clear_pointer(&p->restart_source, g_source_unref);
  }
  if (drain) {
    /* Close first so a blocked appsink push fails instead of waiting. */
    insp_frame_queue_close(p->queue);
    teardown_capture(p);
  } else {
    insp_frame_queue_set_flushing(p->queue, TRUE);
    teardown_capture(p);
  }
  insp_workers_join(p->workers);

  g_mutex_lock(&p->trig_lock);
  GQueue pending = p->triggers;
  g_queue_init(&p->triggers);
  g_mutex_unlock(&p->trig_lock);
  g_queue_clear_full(&pending, (GDestroyNotify)trigger_free);
}

void
insp_pipeline_free(InspPipeline *p)
{
  if (p == NULL)
    return;
  insp_pipeline_stop(p, FALSE);
  teardown_capture(p);
  g_queue_clear_full(&p->triggers, (GDestroyNotify)trigger_free);
  insp_frame_queue_free(p->queue);
  insp_workers_free(p->workers);
  if (p->files != NULL)
    g_ptr_array_unref(p->files);
  g_free(p->last_delivered);
  insp_camera_controls_free(p->controls, p->n_controls);
  g_free(p->device);
  g_free(p->camera);
  g_free(p->uri);
  g_free(p->location);
  g_free(p->pipeline_desc);
  g_main_context_unref(p->ctx);
  g_mutex_clear(&p->files_lock);
  g_cond_clear(&p->files_cond);
  g_mutex_clear(&p->trig_lock);
  g_mutex_clear(&p->stats_lock);
  g_free(p);
}

/* ---- triggers ---------------------------------------------------------------------- */

typedef struct {
  InspPipeline *p;
  guint64 id;
} TimeoutArg;

static gboolean
on_trigger_timeout(gpointer data)
{
  TimeoutArg *a = data;
  InspPipeline *p = a->p;
  char *part_id = NULL;
  guint64 trigger_id = 0;
  g_mutex_lock(&p->trig_lock);
  GList *link = p->triggers.head;
  while (link != NULL && ((Trigger *)link->data)->id != a->id)
    link = link->next;
  if (link != NULL) {
    Trigger *t = link->data;
    g_queue_delete_link(&p->triggers, link);
    part_id = g_steal_pointer(&t->part_id);
    trigger_id = t->trigger_id;
    trigger_free(t); /* destroys this source, which is allowed while it runs */
  }
  g_mutex_unlock(&p->trig_lock);
  if (part_id != NULL) {
    count(p, &p->stats.trigger_timeouts);
    if (p->cb.trigger_timeout != NULL)
      p->cb.trigger_timeout(p, trigger_id, part_id, p->cb.user_data);
    g_free(part_id);
  }
  return G_SOURCE_REMOVE;
}

gboolean
insp_pipeline_trigger(InspPipeline *p, const char *part_id, guint64 trigger_id, GError **error)
{
  g_return_val_if_fail(p != NULL, FALSE);
  g_return_val_if_fail(part_id != NULL, FALSE);
  if (p->opt.trigger != INSP_TRIGGER_EXTERNAL) {
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_TRIGGER,
                "trigger for part %s refused: the pipeline is in free-running mode", part_id);
    return FALSE;
  }
  g_mutex_lock(&p->trig_lock);
  if (p->triggers.length >= INSP_PIPELINE_MAX_TRIGGERS) {
    g_mutex_unlock(&p->trig_lock);
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_TRIGGER,
                "trigger for part %s refused: %d triggers are already waiting for a frame", part_id,
                INSP_PIPELINE_MAX_TRIGGERS);
    return FALSE;
  }
  Trigger *t = g_new0(Trigger, 1);
  t->part_id = g_strdup(part_id);
  t->mono_us = g_get_monotonic_time();
  t->id = p->next_trigger_id++;
  t->trigger_id = trigger_id;
  TimeoutArg *a = g_new0(TimeoutArg, 1);
  a->p = p;
  a->id = t->id;
  t->timeout = g_timeout_source_new(p->opt.timeout_ms);
  g_source_set_callback(t->timeout, on_trigger_timeout, a, g_free);
  g_queue_push_tail(&p->triggers, t);
  g_source_attach(t->timeout, p->ctx);
  g_mutex_unlock(&p->trig_lock);
  return TRUE;
}

void
insp_pipeline_set_scorer(InspPipeline *p, InspScorer *scorer)
{
  g_return_if_fail(p != NULL && scorer != NULL);
  insp_workers_set_scorer(p->workers, scorer);
}

void
insp_pipeline_get_stats(InspPipeline *p, InspPipelineStats *out)
{
  g_return_if_fail(p != NULL && out != NULL);
  g_mutex_lock(&p->stats_lock);
  *out = p->stats;
  g_mutex_unlock(&p->stats_lock);
  InspWorkersStats ws;
  insp_workers_get_stats(p->workers, &ws);
  out->frames_inspected = ws.inspected;
  out->score_errors = ws.score_errors;
  out->fps = ws.fps;
  out->frames_dropped = insp_frame_queue_get_dropped(p->queue);
  out->queue_depth = insp_frame_queue_get_depth(p->queue);
}
