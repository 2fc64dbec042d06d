/* insp-daemon: the daemon's lifecycle and reload orchestration.
 *
 * The main thread runs a GLib main loop that owns every control decision:
 * signals (g_unix_signal_add), the config file monitor, MQTT commands, the
 * pipeline's events, the STATUS and watchdog timers, reloads and the stop.
 * The config in force (d->config) is read and replaced on the main thread
 * only. Other threads enter here only through on_result() ("insp-results",
 * one result at a time, in capture order), which takes:
 *   - seq_lock: the sequence counter and its reservation file, so a seq is
 *     never reused after a crash (blocks of SEQ_BLOCK are reserved on disk
 *     ahead of use) and carries on exactly after a clean stop;
 *   - pub_lock: the publisher pointer, which a reload may replace;
 *   - stats_lock: pass/fail counts, latency sums, the progress time the
 *     watchdog looks at.
 * No lock is held while calling into pipeline/ from the main thread.
 *
 * The watchdog is pinged only while the inspector makes progress: when frames
 * are waiting (queued or being scored) and none completed for a whole
 * watchdog period, pings stop and systemd restarts the service. */
#define G_LOG_DOMAIN "inspectd"
#include "insp-daemon.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "insp-conf.h"
#include "insp-daemon-private.h"
#include "insp-image.h"
#include "insp-log.h"
#include "insp-model-scorer.h"
#include "insp-model.h"
#include "insp-notify.h"
#include "insp-ops.h"
#include "insp-pipeline.h"
#include "insp-synth.h"

#define SEQ_BLOCK 1000
#define STATUS_INTERVAL_S 5
#define RELOAD_DEBOUNCE_MS 300
#define FLUSH_TIMEOUT_US (10 * G_USEC_PER_SEC)
#define DEMO_TRAIN_PARTS 20
#define DEMO_LINE_PARTS 40
#define CAPTURE_START_TIMEOUT_S 15

typedef struct {
  InspDaemonOptions opt;
  char *config_path;
  gboolean demo;
  int exit_status;

  GMainLoop *loop;
  InspConfig *config; /* in force; main thread */
  char *station;      /* main thread */
  char *state_dir;

  /* Demo line. */
  char *demo_dir;

  InspModel *model; /* current (the scorer holds its own reference) */
  InspScorer *scorer;
  InspPipeline *pipe;
  gboolean use_frame_part_id; /* files replay or trigger mode: part ids come from frames */

  GMutex pub_lock;
  InspMqtt *mqtt;
  gint masks; /* InspConfigMasks, hot */
  gboolean broker_connected;
  gboolean broker_known;    /* a first state was reported */
  char *broker_lost_reason; /* why the connection was last lost */

  GMutex seq_lock;
  char *seq_path;
  guint64 next_seq;
  guint64 reserved_until; /* seqs below this are reserved on disk */

  GMutex stats_lock;
  guint64 n_pass, n_fail, n_done, n_errors;
  double latency_sum_ms;
  guint64 latency_n;
  gint64 last_progress_us;

  /* Start-up: the first capture outcome (main thread). */
  gboolean capture_started;
  char *capture_error;

  gint snapshot_pending;
  gint count_reached;
  gboolean degraded;
  gint stopping; /* set on the main thread, read by the results thread */
  gboolean ready;

  guint sig_hup, sig_term, sig_int;
  guint status_timer, watchdog_timer, reload_timer;
  GFileMonitor *file_monitor, *dir_monitor;
  guint64 wd_last_inspected;
  gint64 wd_last_change_us;
  gboolean wd_stalled;
  guint64 trigger_counter;

  /* Threshold override, saved coalesced off the main loop (main thread). */
  guint override_timer;
  gboolean override_saving, override_dirty;
  double override_t, override_pt; /* NaN: not set since the last save */
} Daemon;

void
insp_daemon_options_init(InspDaemonOptions *opt)
{
  g_return_if_fail(opt != NULL);
  memset(opt, 0, sizeof *opt);
  opt->demo_fps = 4.0;
  opt->demo_size = 256;
  opt->demo_defect_every = 5;
}

/* ---- seq persistence --------------------------------------------------- */

static gboolean
seq_write(const char *path, guint64 value, GError **error)
{
  char text[32];

  g_snprintf(text, sizeof text, "%" G_GUINT64_FORMAT "\n", value);
  return g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

/* Reads the next seq from <state_dir>/seq and reserves a block ahead. */
static gboolean
seq_open(Daemon *d, GError **error)
{
  g_autofree char *text = NULL;
  g_autoptr(GError) local = NULL;
  guint64 next = 0;

  if (g_mkdir_with_parents(d->state_dir, 0750) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot create the state folder %s: %s", d->state_dir, g_strerror(e));
    return FALSE;
  }
  g_free(d->seq_path);
  d->seq_path = g_build_filename(d->state_dir, "seq", NULL);
  if (g_file_get_contents(d->seq_path, &text, NULL, &local)) {
    g_strstrip(text);
    if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64 - 2 * SEQ_BLOCK, &next, NULL)) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                  "%s does not hold a sequence number (remove it to start again at 0)",
                  d->seq_path);
      return FALSE;
    }
  } else if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  if (!seq_write(d->seq_path, next + SEQ_BLOCK, error))
    return FALSE;
  d->next_seq = next;
  d->reserved_until = next + SEQ_BLOCK;
  return TRUE;
}

/* Results thread. */
static guint64
seq_take(Daemon *d)
{
  guint64 seq;

  g_mutex_lock(&d->seq_lock);
  seq = d->next_seq++;
  if (d->next_seq >= d->reserved_until) {
    g_autoptr(GError) error = NULL;
    /* Reserve before any seq of the new block is used. */
    if (seq_write(d->seq_path, d->next_seq + SEQ_BLOCK, &error))
      d->reserved_until = d->next_seq + SEQ_BLOCK;
    else
      g_warning("cannot reserve sequence numbers in %s: %s", d->seq_path, error->message);
  }
  g_mutex_unlock(&d->seq_lock);
  return seq;
}

/* At a clean stop: the next start carries on exactly. */
static void
seq_close(Daemon *d)
{
  g_autoptr(GError) error = NULL;

  if (d->seq_path == NULL)
    return;
  g_mutex_lock(&d->seq_lock);
  if (!seq_write(d->seq_path, d->next_seq, &error))
    g_warning("cannot save the sequence number in %s: %s", d->seq_path, error->message);
  g_mutex_unlock(&d->seq_lock);
}

/* ---- config ------------------------------------------------------------- */

static void
replace_string(char **field, const char *value)
{
  char *old = *field;
  *field = g_strdup(value);
  g_free(old);
}

/* Adjusts a freshly loaded config (not shared yet) to where it runs: under
 * systemd the default state and spool folders follow $STATE_DIRECTORY (one
 * folder per instance of inspectd@.service); the demo keeps its state in the
 * user's state folder and replays its synthetic line. */
static void
config_fixup(Daemon *d, InspConfig *cfg)
{
  const char *state_env = g_getenv("STATE_DIRECTORY");

  if (d->opt.station != NULL) {
    /* The config resolved an unset [station] id to the host name: the
     * instance name stands in for it, and so in the default client id, so
     * that two instances on one host never share either. */
    g_autoptr(InspConfig) def = insp_config_new_default();
    g_autofree char *def_client = g_strconcat("inspectd-", def->station.id, NULL);

    if (g_strcmp0(cfg->station.id, def->station.id) == 0) {
      replace_string(&cfg->station.id, d->opt.station);
      if (g_strcmp0(cfg->mqtt.client_id, def_client) == 0) {
        g_autofree char *client = g_strconcat("inspectd-", d->opt.station, NULL);
        replace_string(&cfg->mqtt.client_id, client);
      }
    }
  }

  if (d->demo) {
    g_autofree char *dir = state_env && *state_env
                               ? g_strdup(state_env)
                               : g_build_filename(g_get_user_state_dir(), "inspectd", NULL);
    g_autofree char *spool = g_build_filename(dir, "spool", NULL);
    g_autofree char *glob = g_build_filename(d->demo_dir, "*.png", NULL);
    replace_string(&cfg->station.state_dir, dir);
    replace_string(&cfg->spool.dir, spool);
    cfg->camera.source = INSP_CONFIG_CAMERA_SOURCE_FILES;
    replace_string(&cfg->camera.location, glob);
    cfg->camera.loop = TRUE;
    cfg->camera.fps = d->opt.demo_fps;
    cfg->camera.drop = INSP_CONFIG_DROP_NEVER;
    return;
  }
  if (state_env && *state_env && strchr(state_env, ':') == NULL) {
    if (g_strcmp0(cfg->station.state_dir, "/var/lib/inspectd") == 0)
      replace_string(&cfg->station.state_dir, state_env);
    if (g_strcmp0(cfg->spool.dir, "/var/lib/inspectd/spool") == 0) {
      g_autofree char *spool = g_build_filename(state_env, "spool", NULL);
      replace_string(&cfg->spool.dir, spool);
    }
  }
}

static char *
problems_to_string(GPtrArray *problems, const char *sep)
{
  GString *s = g_string_new(NULL);

  for (guint i = 0; problems && i < problems->len; i++) {
    const InspConfigProblem *p = g_ptr_array_index(problems, i);
    g_string_append_printf(s, "%s%s", i ? sep : "", p->text);
  }
  return g_string_free(s, FALSE);
}

static void publish_event(Daemon *d, const char *level, const char *code, const char *message);

/* Loads, fixes up and applies the threshold override: the whole new config,
 * or NULL with one message (all problems, joined with @sep). */
static InspConfig *
config_load(Daemon *d, const char *sep, GError **error)
{
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(GError) local = NULL;
  g_autoptr(InspConfig) cfg = NULL;

  if (d->demo) {
    cfg = insp_config_new_default();
  } else {
    cfg = insp_config_load(d->config_path, &problems, &local);
    if (cfg == NULL) {
      g_autofree char *all =
          problems && problems->len ? problems_to_string(problems, sep) : g_strdup(local->message);
      g_set_error_literal(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID, all);
      return NULL;
    }
  }
  config_fixup(d, cfg);
  if (!insp_config_override_apply(cfg, NULL, &local)) {
    /* A damaged or unreadable override must not keep the daemon from
     * starting (check-config cannot see it): the config files' thresholds
     * apply, and the next threshold command replaces the file. */
    g_autofree char *msg = g_strdup_printf(
        "threshold override ignored, the config files' thresholds apply: %s", local->message);
    g_warning("%s", msg);
    publish_event(d, "warning", "threshold_override_ignored", msg);
  }
  return g_steal_pointer(&cfg);
}

static void
params_from_config(const InspConfig *cfg, InspInspectParams *p)
{
  memset(p, 0, sizeof *p);
  p->threshold = (float)cfg->inspection.threshold;
  p->pixel_threshold = (float)cfg->inspection.pixel_threshold;
  p->min_region_area = cfg->inspection.min_region_area;
  p->has_roi = cfg->inspection.roi.w > 0 && cfg->inspection.roi.h > 0;
  p->roi = (InspRect){cfg->inspection.roi.x, cfg->inspection.roi.y, cfg->inspection.roi.w,
                      cfg->inspection.roi.h};
}

static InspLogLevel
log_level_from_config(const InspConfig *cfg)
{
  switch (cfg->log.level) {
  case INSP_CONFIG_LOG_LEVEL_ERROR:
    return INSP_LOG_LEVEL_ERROR;
  case INSP_CONFIG_LOG_LEVEL_WARNING:
    return INSP_LOG_LEVEL_WARNING;
  case INSP_CONFIG_LOG_LEVEL_DEBUG:
    return INSP_LOG_LEVEL_DEBUG;
  case INSP_CONFIG_LOG_LEVEL_NOTICE:
  case INSP_CONFIG_LOG_LEVEL_INFO:
  default:
    return INSP_LOG_LEVEL_INFO;
  }
}

/* ---- the demo line -------------------------------------------------------- */

typedef struct {
  int size;
} DemoTrain;

static InspImage *
demo_train_image(int index, gpointer user_data, GError **error)
{
  DemoTrain *t = user_data;
  InspImage *img = NULL;

  /* Seeds apart from the line's, so the model never saw a replayed part. */
  if (!insp_synth_part(insp_synth_line_seed(0x7ea1u, (guint64)index), INSP_SYNTH_GOOD, t->size,
                       t->size, &img, NULL, error))
    return NULL;
  return img;
}

static InspModel *
demo_model_train(Daemon *d, GError **error)
{
  InspTrainOptions topt;
  DemoTrain t = {d->opt.demo_size > 0 ? d->opt.demo_size : 256};
  gint64 t0 = g_get_monotonic_time();

  insp_train_options_init(&topt);
  topt.backbone = "builtin";
  topt.detector = INSP_DETECTOR_PATCHCORE;
  topt.seed = 1;
  /* the synthetic parts are 256 px with coarse defects: the builtin
   * backbone's 224 px and a 10 % bank, as measured for the demo */
  topt.input_size = 224;
  topt.coreset_fraction = 0.1;
  InspModel *m = insp_model_train(&topt, DEMO_TRAIN_PARTS, demo_train_image, &t, NULL, NULL, error);
  if (m)
    g_info("demo model %s trained on %d good synthetic parts in %.1f s", insp_model_get_id(m),
           DEMO_TRAIN_PARTS, (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  return m;
}

/* Writes the replayed line: part NNNN-KIND.png, every Nth one defective. */
static gboolean
demo_line_write(Daemon *d, GError **error)
{
  int size = d->opt.demo_size > 0 ? d->opt.demo_size : 256;
  guint every = d->opt.demo_defect_every;

  d->demo_dir = g_dir_make_tmp("inspectd-demo-XXXXXX", error);
  if (d->demo_dir == NULL)
    return FALSE;
  for (guint64 i = 0; i < DEMO_LINE_PARTS; i++) {
    g_autoptr(InspImage) img = NULL;
    InspSynthKind kind = insp_synth_line_kind(i, every);
    g_autofree char *name = g_strdup_printf("part%04" G_GUINT64_FORMAT "-%s.png", i + 1,
                                            insp_synth_kind_to_string(kind));
    g_autofree char *path = g_build_filename(d->demo_dir, name, NULL);

    if (!insp_synth_part(insp_synth_line_seed(0x11e5u, i), kind, size, size, &img, NULL, error) ||
        !insp_image_save_png(img, path, error))
      return FALSE;
  }
  return TRUE;
}

static void
demo_line_remove(Daemon *d)
{
  if (d->demo_dir == NULL)
    return;
  g_autoptr(GDir) dir = g_dir_open(d->demo_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    g_autofree char *p = g_build_filename(d->demo_dir, name, NULL);
    g_unlink(p);
  }
  g_rmdir(d->demo_dir);
  g_clear_pointer(&d->demo_dir, g_free);
}

/* ---- results (thread "insp-results") ----------------------------------------- */

static GBytes *
encode_mask(const InspResult *r)
{
  InspImage img = {r->frame->width, r->frame->height, 1, r->frame->width, r->mask};
  g_autoptr(GError) error = NULL;
  GBytes *png = insp_image_encode_png(&img, &error);

  if (png == NULL)
    g_debug("mask of seq %" G_GUINT64_FORMAT " not encoded: %s", r->frame->seq, error->message);
  return png;
}

static void
publish_snapshot(Daemon *d, InspMqtt *mqtt, guint64 seq, const char *part_id, const InspResult *r)
{
  InspImage img = {r->frame->width, r->frame->height, 3, r->frame->stride,
                   (guint8 *)r->frame->data};
  g_autoptr(GBytes) image = insp_image_encode_png(&img, NULL);
  g_autoptr(GBytes) map = NULL;

  if (r->map && r->map_width > 0 && r->map_height > 0) {
    g_autoptr(InspImage) grey = insp_image_new(r->map_width, r->map_height, 1);
    for (int i = 0; i < r->map_width * r->map_height; i++)
      grey->data[i] = (guint8)CLAMP(lrintf(r->map[i] * 255.0f), 0, 255);
    map = insp_image_encode_png(grey, NULL);
  }
  insp_daemon_mqtt_snapshot(mqtt, seq, part_id, image, map);
}

static gboolean stop_idle(gpointer data);

static void
on_result(InspPipeline *pipe, const InspResult *r, gpointer user_data)
{
  Daemon *d = user_data;
  char seq_text[24];

  if (g_atomic_int_get(&d->count_reached))
    return;
  if (!r->ok) {
    g_mutex_lock(&d->stats_lock);
    d->n_errors++;
    d->last_progress_us = g_get_monotonic_time();
    g_mutex_unlock(&d->stats_lock);
    g_warning("frame %s not inspected: %s", r->frame->part_id,
              r->error ? r->error->message : "unknown error");
    return;
  }

  guint64 seq = seq_take(d);
  g_snprintf(seq_text, sizeof seq_text, "%" G_GUINT64_FORMAT, seq);
  const char *part_id = d->use_frame_part_id && r->frame->part_id ? r->frame->part_id : seq_text;
  guint n_regions = r->regions ? r->regions->len : 0;
  InspConfigMasks masks = (InspConfigMasks)g_atomic_int_get(&d->masks);
  g_autoptr(GBytes) mask_png = NULL;

  if (r->mask && (masks == INSP_CONFIG_MASKS_ALL || (masks == INSP_CONFIG_MASKS_FAIL && r->fail)))
    mask_png = encode_mask(r);

  InspDaemonVerdict v = {
      .seq = seq,
      .part_id = part_id,
      .capture_time_us = r->frame->wall_us,
      .fail = r->fail,
      .score = r->score,
      .threshold = r->threshold,
      .model = r->model_id,
      .latency_ms = r->latency_ms,
      .regions = n_regions ? (const InspRegion *)r->regions->data : NULL,
      .n_regions = n_regions,
  };
  g_mutex_lock(&d->pub_lock);
  if (d->mqtt) {
    g_autoptr(GError) error = NULL;
    if (!insp_daemon_mqtt_publish(d->mqtt, &v, mask_png, &error))
      insp_log_part(G_LOG_LEVEL_WARNING, seq, part_id, "result not published or spooled: %s",
                    error->message);
    if (g_atomic_int_compare_and_exchange(&d->snapshot_pending, 1, 0))
      publish_snapshot(d, d->mqtt, seq, part_id, r);
  }
  g_mutex_unlock(&d->pub_lock);

  g_mutex_lock(&d->stats_lock);
  if (r->fail)
    d->n_fail++;
  else
    d->n_pass++;
  d->n_done++;
  d->latency_sum_ms += r->latency_ms;
  d->latency_n++;
  d->last_progress_us = g_get_monotonic_time();
  guint64 done = d->n_done;
  g_mutex_unlock(&d->stats_lock);

  insp_log_part(G_LOG_LEVEL_DEBUG, seq, part_id, "%s score %.3f threshold %.3f, %u regions",
                r->fail ? "fail" : "pass", r->score, r->threshold, n_regions);
  if (d->opt.print_decisions) {
    printf("seq=%" G_GUINT64_FORMAT " part=%s verdict=%s score=%.2f threshold=%.2f regions=%u "
           "latency=%.1fms\n",
           seq, part_id, r->fail ? "fail" : "pass", r->score, r->threshold, n_regions,
           r->latency_ms);
    fflush(stdout);
  }
  if (d->opt.debug_stall_after > 0 && done == d->opt.debug_stall_after) {
    g_warning("--debug-stall-after %" G_GUINT64_FORMAT ": the results thread hangs until the stop",
              done);
    while (!g_atomic_int_get(&d->stopping))
      g_usleep(20000);
  }
  if (d->opt.count > 0 && done >= d->opt.count &&
      g_atomic_int_compare_and_exchange(&d->count_reached, 0, 1))
    g_idle_add(stop_idle, d);
}

/* ---- pipeline --------------------------------------------------------------- */

static void on_pipeline_event(InspPipeline *pipe, const InspPipelineEvent *ev, gpointer user_data);
static void on_trigger_timeout(InspPipeline *pipe, const char *part_id, gpointer user_data);

static const char *
nonempty(const char *s)
{
  return s && *s ? s : NULL;
}

static InspPipeline *
pipeline_create(Daemon *d, const InspConfig *cfg, GError **error)
{
  InspCaptureOptions o;
  InspPipelineCallbacks cb = {
      .result = on_result,
      .event = on_pipeline_event,
      .trigger_timeout = on_trigger_timeout,
      .user_data = d,
      .context = NULL,
  };

  /* Pipeline callbacks run on the main context (the default one), iterated by
   * our main loop. */
  cb.context = g_main_context_default();
  insp_capture_options_init(&o);
  /* By name through the pipeline's source table: a source it lacks (or one
   * this build left out) fails insp_pipeline_new(). */
  o.source = insp_config_camera_source_to_string(cfg->camera.source);
  o.device = nonempty(cfg->camera.device);
  o.camera = nonempty(cfg->camera.camera);
  o.uri = nonempty(cfg->camera.uri);
  o.location = nonempty(cfg->camera.location);
  o.loop = cfg->camera.loop;
  o.fps = cfg->camera.fps;
  o.pipeline = nonempty(cfg->camera.pipeline);
  o.controls = cfg->camera.controls;
  o.n_controls = cfg->camera.n_controls;
  o.width = cfg->camera.width;
  o.height = cfg->camera.height;
  o.max_pixels = cfg->camera.max_pixels;
  o.drop = cfg->camera.drop == INSP_CONFIG_DROP_OLDEST ? INSP_DROP_OLDEST : INSP_DROP_NEVER;
  o.workers = (guint)MAX(cfg->model.workers, 1);
  o.trigger = cfg->trigger.mode == INSP_CONFIG_TRIGGER_MODE_MQTT ? INSP_TRIGGER_EXTERNAL
                                                                 : INSP_TRIGGER_FREE;
  o.timeout_ms = (guint)MAX(cfg->trigger.timeout_ms, 0);
  const InspCaptureSourceClass *source = insp_capture_source_lookup(o.source, error);
  if (source == NULL)
    return NULL;
  d->use_frame_part_id =
      insp_capture_source_class_is_replay(source) || o.trigger == INSP_TRIGGER_EXTERNAL;
  if (cfg->model.blas_threads > 0)
    insp_ops_set_blas_threads(cfg->model.blas_threads);

  g_autoptr(InspPipeline) pipe = insp_pipeline_new(&o, d->scorer, &cb, error);
  if (pipe == NULL || !insp_pipeline_start(pipe, error))
    return NULL;
  return g_steal_pointer(&pipe);
}

/* ---- status, events ------------------------------------------------------------ */

static void
publish_event(Daemon *d, const char *level, const char *code, const char *message)
{
  g_mutex_lock(&d->pub_lock);
  if (d->mqtt)
    insp_daemon_mqtt_event(d->mqtt, level, code, message);
  g_mutex_unlock(&d->pub_lock);
}

static void
set_degraded(Daemon *d, gboolean degraded, const char *why)
{
  if (d->degraded == degraded)
    return;
  d->degraded = degraded;
  if (degraded)
    g_warning("degraded: %s", why);
  else
    g_info("back online");
}

static gboolean
status_tick(gpointer user_data)
{
  Daemon *d = user_data;
  InspPipelineStats st = {0};
  guint64 pass, fail, errors;
  double lat;
  gboolean connected = FALSE;
  guint pending = 0;

  if (d->pipe)
    insp_pipeline_get_stats(d->pipe, &st);
  g_mutex_lock(&d->stats_lock);
  pass = d->n_pass;
  fail = d->n_fail;
  errors = d->n_errors;
  lat = d->latency_n ? d->latency_sum_ms / (double)d->latency_n : 0.0;
  d->latency_sum_ms = 0.0;
  d->latency_n = 0;
  g_mutex_unlock(&d->stats_lock);

  g_mutex_lock(&d->pub_lock);
  if (d->mqtt) {
    pending = insp_daemon_mqtt_pending(d->mqtt, &connected);
    insp_daemon_mqtt_status(d->mqtt, d->degraded, d->model ? insp_model_get_id(d->model) : "",
                            d->config->inspection.threshold, st.fps, pass + fail, st.frames_dropped,
                            pass, fail);
  }
  g_mutex_unlock(&d->pub_lock);

  insp_notify_status("%s: %.1f fps, latency %.1f ms, %" G_GUINT64_FORMAT " pass, %" G_GUINT64_FORMAT
                     " fail, %" G_GUINT64_FORMAT " dropped, %" G_GUINT64_FORMAT
                     " errors, threshold %.3f, broker %s%s",
                     d->degraded ? "degraded" : "inspecting", st.fps, lat, pass, fail,
                     st.frames_dropped, errors, d->config->inspection.threshold,
                     d->mqtt == NULL ? "off"
                     : connected     ? "connected"
                                     : "unreachable",
                     pending ? ", results spooled" : "");
  return G_SOURCE_CONTINUE;
}

static gboolean
watchdog_tick(gpointer user_data)
{
  Daemon *d = user_data;
  InspPipelineStats st = {0};
  gint64 now = g_get_monotonic_time();
  guint64 period = insp_notify_watchdog_usec();

  if (d->pipe == NULL) {
    insp_notify_watchdog();
    return G_SOURCE_CONTINUE;
  }
  insp_pipeline_get_stats(d->pipe, &st);
  if (st.frames_inspected != d->wd_last_inspected) {
    d->wd_last_inspected = st.frames_inspected;
    d->wd_last_change_us = now;
  }
  /* Frames waiting: queued and not yet delivered as results. */
  guint64 done = st.frames_inspected + st.frames_dropped;
  guint64 in_flight = st.frames_queued > done ? st.frames_queued - done : st.queue_depth;
  gboolean waiting = in_flight > 0;
  gboolean stalled = waiting && period > 0 && (guint64)(now - d->wd_last_change_us) > period;
  if (stalled) {
    if (!d->wd_stalled)
      g_warning("inspection stalled: %" G_GUINT64_FORMAT " frames waiting and none inspected "
                "for %.1f s; watchdog pings stopped",
                in_flight, (double)(now - d->wd_last_change_us) / G_USEC_PER_SEC);
    d->wd_stalled = TRUE;
    return G_SOURCE_CONTINUE;
  }
  d->wd_stalled = FALSE;
  insp_notify_watchdog();
  return G_SOURCE_CONTINUE;
}

static void
on_pipeline_event(InspPipeline *pipe, const InspPipelineEvent *ev, gpointer user_data)
{
  Daemon *d = user_data;

  switch (ev->kind) {
  case INSP_PIPELINE_EVENT_STARTED:
    if (d->degraded)
      publish_event(d, "info", "camera_back", ev->message);
    g_info("%s", ev->message);
    d->capture_started = TRUE;
    set_degraded(d, FALSE, NULL);
    break;
  case INSP_PIPELINE_EVENT_ERROR:
  case INSP_PIPELINE_EVENT_EOS:
    if (!d->capture_started && d->capture_error == NULL)
      d->capture_error = g_strdup(ev->message);
    /* During start-up the caller reports it, in one line. Once per outage
     * after that: the restarts that follow log at debug. */
    if (!d->ready || d->degraded) {
      g_debug("camera still failing: %s", ev->message);
      break;
    }
    g_warning("camera: %s%s%s", ev->message, ev->detail ? " - " : "", ev->detail ? ev->detail : "");
    publish_event(d, "error", "camera_lost", ev->message);
    set_degraded(d, TRUE, ev->message);
    break;
  case INSP_PIPELINE_EVENT_RESTARTING:
    if (ev->attempt <= 1 && d->ready)
      g_info("restarting the camera (attempt %u in %u ms, then with growing delays)", ev->attempt,
             ev->delay_ms);
    else
      g_debug("camera restart %u in %u ms", ev->attempt, ev->delay_ms);
    break;
  case INSP_PIPELINE_EVENT_CONTROL:
    g_warning("camera control: %s", ev->message);
    publish_event(d, "warning", "camera_control", ev->message);
    break;
  case INSP_PIPELINE_EVENT_FINISHED:
    g_info("%s", ev->message);
    break;
  default:
    break;
  }
}

static void
on_trigger_timeout(InspPipeline *pipe, const char *part_id, gpointer user_data)
{
  Daemon *d = user_data;
  g_autofree char *msg = g_strdup_printf("no frame came for the trigger of part %s", part_id);

  g_warning("%s", msg);
  publish_event(d, "warning", "trigger_timeout", msg);
}

/* ---- reload ---------------------------------------------------------------------- */

static InspModel *
model_for_config(Daemon *d, const InspConfig *cfg, GError **error)
{
  if (cfg->model.path[0] == '\0')
    return demo_model_train(d, error);
  return insp_model_load(cfg->model.path, error);
}

static InspMqtt *mqtt_for_config(Daemon *d, const InspConfig *cfg, GError **error);

/* Validates @why's new config whole and applies it, or keeps the old one. */
static gboolean
reload(Daemon *d, const char *why, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(InspConfig) cfg = NULL;
  g_autoptr(InspModel) model = NULL;
  InspConfigChange change;
  g_autofree char *what = NULL;
  g_auto(GStrv) keys = NULL;
  g_autofree char *keys_text = NULL;

  if (d->stopping)
    return TRUE;
  insp_notify_reloading();
  cfg = config_load(d, "; ", &local);
  if (cfg == NULL)
    goto rejected;

  change = insp_config_diff(d->config, cfg);
  what = insp_config_change_to_string(change);
  keys = insp_config_diff_keys(d->config, cfg);
  keys_text = g_strjoinv(", ", keys);

  /* Everything that can fail is prepared before anything is applied. */
  if (change & INSP_CONFIG_CHANGE_MODEL) {
    model = model_for_config(d, cfg, &local);
    if (model == NULL) {
      g_prefix_error(&local, "model %s: ", cfg->model.path);
      goto rejected;
    }
  }
  if (change & (INSP_CONFIG_CHANGE_MQTT | INSP_CONFIG_CHANGE_SPOOL)) {
    /* One client per spool folder at a time: the old one goes first (its
     * unacknowledged results stay in the spool for the new one). The results
     * thread waits on pub_lock meanwhile; no result is lost. */
    InspMqtt *fresh = NULL;
    g_mutex_lock(&d->pub_lock);
    insp_daemon_mqtt_free(g_steal_pointer(&d->mqtt));
    d->broker_connected = FALSE;
    d->broker_known = FALSE;
    if (cfg->mqtt.host[0])
      fresh = mqtt_for_config(d, cfg, &local);
    if (cfg->mqtt.host[0] && fresh == NULL) {
      g_autoptr(GError) again = NULL;
      if (d->config->mqtt.host[0] && (d->mqtt = mqtt_for_config(d, d->config, &again)) == NULL)
        g_warning("the previous MQTT client could not be restored: %s", again->message);
      g_mutex_unlock(&d->pub_lock);
      goto rejected;
    }
    d->mqtt = fresh;
    g_mutex_unlock(&d->pub_lock);
  }
  if (change & INSP_CONFIG_CHANGE_STATION) {
    replace_string(&d->station, cfg->station.id);
    insp_log_set_station(d->station);
    if (g_strcmp0(cfg->station.state_dir, d->state_dir) != 0) {
      seq_close(d);
      g_mutex_lock(&d->seq_lock);
      replace_string(&d->state_dir, cfg->station.state_dir);
      gboolean ok = seq_open(d, &local);
      g_mutex_unlock(&d->seq_lock);
      if (!ok) {
        g_warning("state folder: %s", local->message);
        publish_event(d, "error", "state_dir", local->message);
        g_clear_error(&local);
      }
    }
  }

  /* Apply: hot first, so they hold from the next frame. */
  InspInspectParams params;
  params_from_config(cfg, &params);
  insp_model_scorer_set_params(d->scorer, &params);
  g_atomic_int_set(&d->masks, (gint)cfg->mqtt.masks);
  insp_log_set_level(log_level_from_config(cfg));
  if (model) {
    insp_model_scorer_set_model(d->scorer, model);
    g_clear_pointer(&d->model, insp_model_unref);
    d->model = g_steal_pointer(&model);
    g_info("model swapped: now %s", insp_model_get_id(d->model));
  }
  g_mutex_lock(&d->pub_lock);
  if (d->mqtt)
    insp_daemon_mqtt_set_masks(d->mqtt, cfg->mqtt.masks);
  g_mutex_unlock(&d->pub_lock);
  if (change &
      (INSP_CONFIG_CHANGE_CAMERA | INSP_CONFIG_CHANGE_WORKERS | INSP_CONFIG_CHANGE_TRIGGER)) {
    if (d->pipe) {
      insp_pipeline_stop(d->pipe, TRUE);
      g_clear_pointer(&d->pipe, insp_pipeline_free);
    }
    d->pipe = pipeline_create(d, cfg, &local);
    d->wd_last_inspected = 0;
    d->wd_last_change_us = g_get_monotonic_time();
    if (d->pipe == NULL) {
      g_warning("capture not restarted: %s", local->message);
      publish_event(d, "error", "camera_lost", local->message);
      set_degraded(d, TRUE, local->message);
      g_clear_error(&local);
    }
  }
  insp_config_free(d->config);
  d->config = g_steal_pointer(&cfg);
  g_info("config reloaded (%s): %s%s%s", why, what, keys_text[0] ? " - " : "", keys_text);
  {
    g_autofree char *msg =
        g_strdup_printf("config reloaded: %s", keys_text[0] ? keys_text : "no change");
    publish_event(d, "info", "reloaded", msg);
  }
  insp_notify_ready(d->degraded ? "reloaded, degraded" : "reloaded");
  return TRUE;

rejected:
  g_warning("reload rejected (%s), keeping the config in force: %s", why, local->message);
  {
    g_autofree char *msg = g_strdup_printf("reload rejected: %s", local->message);
    publish_event(d, "error", "reload_rejected", msg);
  }
  insp_notify_ready("reload rejected, previous config in force");
  g_propagate_error(error, g_steal_pointer(&local));
  return FALSE;
}

static gboolean
reload_timer_fire(gpointer user_data)
{
  Daemon *d = user_data;

  d->reload_timer = 0;
  reload(d, "config file changed", NULL);
  return G_SOURCE_REMOVE;
}

static void
on_config_changed(GFileMonitor *monitor, GFile *file, GFile *other, GFileMonitorEvent event,
                  gpointer user_data)
{
  Daemon *d = user_data;

  switch (event) {
  case G_FILE_MONITOR_EVENT_CHANGES_DONE_HINT:
  case G_FILE_MONITOR_EVENT_CREATED:
  case G_FILE_MONITOR_EVENT_DELETED:
  case G_FILE_MONITOR_EVENT_MOVED_IN:
  case G_FILE_MONITOR_EVENT_MOVED_OUT:
  case G_FILE_MONITOR_EVENT_RENAMED:
  case G_FILE_MONITOR_EVENT_CHANGED:
    break;
  default:
    return;
  }
  /* Debounce: an editor's save is several events; reload once after quiet. */
  if (d->reload_timer)
    g_source_remove(d->reload_timer);
  d->reload_timer = g_timeout_add(RELOAD_DEBOUNCE_MS, reload_timer_fire, d);
}

static void
watch_config(Daemon *d)
{
  g_autoptr(GFile) file = g_file_new_for_path(d->config_path);
  g_autofree char *dropins = g_strconcat(d->config_path, ".d", NULL);
  g_autoptr(GFile) dir = g_file_new_for_path(dropins);
  g_autoptr(GError) error = NULL;

  d->file_monitor = g_file_monitor_file(file, G_FILE_MONITOR_WATCH_MOVES, NULL, &error);
  if (d->file_monitor) {
    g_file_monitor_set_rate_limit(d->file_monitor, RELOAD_DEBOUNCE_MS);
    g_signal_connect(d->file_monitor, "changed", G_CALLBACK(on_config_changed), d);
  } else {
    g_warning("config changes of %s are not watched (SIGHUP still reloads): %s", d->config_path,
              error->message);
    g_clear_error(&error);
  }
  d->dir_monitor = g_file_monitor_directory(dir, G_FILE_MONITOR_WATCH_MOVES, NULL, &error);
  if (d->dir_monitor)
    g_signal_connect(d->dir_monitor, "changed", G_CALLBACK(on_config_changed), d);
}

/* ---- MQTT commands and connection --------------------------------------------------- */

typedef struct {
  Daemon *d;
  InspMqttCommand *cmd;
} ReloadRequest;

static gboolean
reload_command_idle(gpointer user_data)
{
  ReloadRequest *req = user_data;
  Daemon *d = req->d;
  g_autoptr(GError) error = NULL;
  gboolean ok = reload(d, "MQTT command", &error);

  g_mutex_lock(&d->pub_lock);
  if (d->mqtt && ok)
    insp_daemon_mqtt_reply(d->mqtt, req->cmd, NULL, NULL, NULL, 0.0);
  else if (d->mqtt)
    insp_daemon_mqtt_reply_error(d->mqtt, req->cmd, error->message);
  g_mutex_unlock(&d->pub_lock);
  insp_daemon_mqtt_command_unref(req->cmd);
  g_free(req);
  return G_SOURCE_REMOVE;
}

/* ---- the threshold override, written off the main loop ------------------------------ */

/* At most one write per OVERRIDE_SAVE_MS however many threshold commands
 * arrive, and never on the main loop: a flood of commands must not delay the
 * watchdog ping. */
#define OVERRIDE_SAVE_MS 200

typedef struct {
  InspConfig *config;
  double t, pt;
} OverrideSave;

static void
override_save_free(gpointer data)
{
  OverrideSave *o = data;

  insp_config_free(o->config);
  g_free(o);
}

static void
override_save_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  OverrideSave *o = data;
  GError *error = NULL;

  if (insp_config_override_save(o->config, o->t, o->pt, &error))
    g_task_return_boolean(task, TRUE);
  else
    g_task_return_error(task, error);
}

static void override_schedule(Daemon *d);

static void
override_saved(GObject *source, GAsyncResult *res, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr(GError) error = NULL;

  d->override_saving = FALSE;
  if (!g_task_propagate_boolean(G_TASK(res), &error)) {
    g_autofree char *msg = g_strdup_printf(
        "the threshold set by command is in force but not saved (it is lost on restart): %s",
        error->message);
    g_warning("%s", msg);
    publish_event(d, "error", "threshold_not_saved", msg);
  }
  if (d->override_dirty)
    override_schedule(d);
}

static gboolean
override_timer_cb(gpointer user_data)
{
  Daemon *d = user_data;
  OverrideSave *o = g_new0(OverrideSave, 1);
  g_autoptr(GTask) task = g_task_new(NULL, NULL, override_saved, d);

  d->override_timer = 0;
  d->override_dirty = FALSE;
  d->override_saving = TRUE;
  o->config = insp_config_copy(d->config);
  o->t = d->override_t;
  o->pt = d->override_pt;
  d->override_t = d->override_pt = NAN;
  g_task_set_task_data(task, o, override_save_free);
  g_task_run_in_thread(task, override_save_thread);
  return G_SOURCE_REMOVE;
}

static void
override_schedule(Daemon *d)
{
  d->override_dirty = TRUE;
  if (d->override_timer == 0 && !d->override_saving)
    d->override_timer = g_timeout_add(OVERRIDE_SAVE_MS, override_timer_cb, d);
}

/* Waits for the last write at stop, so that a threshold set just before is
 * not lost. */
static void
override_flush(Daemon *d)
{
  if (d->override_timer) {
    g_clear_handle_id(&d->override_timer, g_source_remove);
    override_timer_cb(d);
  }
  while (d->override_saving)
    g_main_context_iteration(NULL, TRUE);
}

/* NULL when @value is within [inspection] @name_min..@name_max, else the
 * refusal. */
static char *
threshold_refusal(const char *name, double value, double min, double max)
{
  if (isnan(value) || (value >= min && value <= max))
    return NULL;
  return g_strdup_printf("%s %g refused: outside [inspection] %s_min .. %s_max = %g .. %g (set in "
                         "the config files)",
                         name, value, name, name, min, max);
}

static void
on_command(const InspDaemonCmd *c, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr(GError) error = NULL;

  switch (c->kind) {
  case INSP_DAEMON_CMD_TRIGGER: {
    g_autofree char *id =
        c->part_id ? g_strdup(c->part_id)
                   : g_strdup_printf("trigger-%" G_GINT64_FORMAT "-%" G_GUINT64_FORMAT,
                                     g_get_real_time() / G_USEC_PER_SEC, ++d->trigger_counter);
    if (d->pipe == NULL || !insp_pipeline_trigger(d->pipe, id, &error)) {
      insp_daemon_mqtt_reply_error(d->mqtt, c->cmd,
                                   error ? error->message : "capture is not running");
      return;
    }
    insp_daemon_mqtt_reply(d->mqtt, c->cmd, "part_id", id, NULL, 0.0);
    return;
  }
  case INSP_DAEMON_CMD_THRESHOLD: {
    double t = c->has_threshold ? c->threshold : NAN;
    double pt = c->has_pixel_threshold ? c->pixel_threshold : NAN;
    const InspConfig *now = d->config;
    g_autoptr(InspConfig) cfg = NULL;
    g_autofree char *refused = threshold_refusal("threshold", t, now->inspection.threshold_min,
                                                 now->inspection.threshold_max);

    if (refused == NULL)
      refused = threshold_refusal("pixel_threshold", pt, now->inspection.pixel_threshold_min,
                                  now->inspection.pixel_threshold_max);
    if (refused != NULL) {
      g_info("threshold command: %s", refused);
      insp_daemon_mqtt_reply_error(d->mqtt, c->cmd, refused);
      return;
    }
    if (!isnan(t))
      d->override_t = t;
    if (!isnan(pt))
      d->override_pt = pt;
    override_schedule(d);
    cfg = insp_config_copy(d->config);
    if (c->has_threshold)
      cfg->inspection.threshold = t;
    if (c->has_pixel_threshold)
      cfg->inspection.pixel_threshold = pt;
    InspInspectParams params;
    params_from_config(cfg, &params);
    insp_model_scorer_set_params(d->scorer, &params);
    insp_config_free(d->config);
    d->config = g_steal_pointer(&cfg);
    g_info("threshold set by command: %.4f, pixel threshold %.4f (saved within a second)",
           d->config->inspection.threshold, d->config->inspection.pixel_threshold);
    insp_daemon_mqtt_reply(d->mqtt, c->cmd, NULL, NULL, "threshold",
                           d->config->inspection.threshold);
    return;
  }
  case INSP_DAEMON_CMD_RELOAD: {
    /* Not from inside the client's callback: the reload may replace the
     * client itself. */
    ReloadRequest *req = g_new0(ReloadRequest, 1);
    req->d = d;
    req->cmd = insp_daemon_mqtt_command_ref(c->cmd);
    g_idle_add(reload_command_idle, req);
    return;
  }
  case INSP_DAEMON_CMD_SNAPSHOT:
    g_atomic_int_set(&d->snapshot_pending, 1);
    insp_daemon_mqtt_reply(d->mqtt, c->cmd, "snapshot", "next frame", NULL, 0.0);
    return;
  default:
    insp_daemon_mqtt_reply_error(d->mqtt, c->cmd, "unknown command");
    return;
  }
}

static void
on_connection(gboolean connected, const char *message, gpointer user_data)
{
  Daemon *d = user_data;

  const char *host = d->config ? d->config->mqtt.host : "";
  int port = d->config ? d->config->mqtt.port : 0;

  if (d->broker_known && connected == d->broker_connected)
    return;
  if (connected) {
    g_info("broker %s:%d connected", host, port);
    if (d->broker_known) {
      g_autofree char *msg = g_strdup_printf("broker %s:%d connected again (was: %s)", host, port,
                                             d->broker_lost_reason ? d->broker_lost_reason : "?");
      publish_event(d, "info", "broker_connected", msg);
    }
  } else {
    g_warning("broker %s:%d unreachable, results are spooled: %s", host, port,
              message ? message : "");
    g_free(d->broker_lost_reason);
    d->broker_lost_reason = g_strdup(message ? message : "");
  }
  d->broker_known = TRUE;
  d->broker_connected = connected;
}

static InspMqtt *
mqtt_for_config(Daemon *d, const InspConfig *cfg, GError **error)
{
  const char *station = cfg->station.id[0] ? cfg->station.id : d->station;

  return insp_daemon_mqtt_new(cfg, station, NULL, g_main_context_default(), on_command,
                              on_connection, d, error);
}

/* ---- stop ------------------------------------------------------------------------------ */

static void
daemon_stop(Daemon *d, const char *why)
{
  if (g_atomic_int_get(&d->stopping))
    return;
  g_atomic_int_set(&d->stopping, TRUE);
  g_info("stopping (%s): draining the queue", why);
  insp_notify_stopping("stopping: draining the queue and flushing results");
  if (d->pipe)
    insp_pipeline_stop(d->pipe, TRUE);

  /* Flush: wait (bounded) until the broker acknowledged everything, while the
   * broker is there; what remains stays spooled for the next start. */
  gint64 deadline = g_get_monotonic_time() + FLUSH_TIMEOUT_US;
  while (d->mqtt) {
    gboolean connected = FALSE;
    guint pending = insp_daemon_mqtt_pending(d->mqtt, &connected);
    if (pending == 0 || !connected || g_get_monotonic_time() > deadline) {
      if (pending)
        g_info("%u results stay spooled for the next start", pending);
      break;
    }
    while (g_main_context_iteration(NULL, FALSE))
      ;
    g_usleep(10000);
  }
  g_main_loop_quit(d->loop);
}

static gboolean
stop_idle(gpointer user_data)
{
  daemon_stop(user_data, "count reached");
  return G_SOURCE_REMOVE;
}

static gboolean
on_sigterm(gpointer user_data)
{
  daemon_stop(user_data, "SIGTERM");
  return G_SOURCE_CONTINUE;
}

static gboolean
on_sigint(gpointer user_data)
{
  daemon_stop(user_data, "SIGINT");
  return G_SOURCE_CONTINUE;
}

static gboolean
on_sighup(gpointer user_data)
{
  Daemon *d = user_data;

  if (d->demo) {
    g_info("SIGHUP: the demo line has no config file to reload");
    insp_notify_reloading();
    insp_notify_ready(NULL);
    return G_SOURCE_CONTINUE;
  }
  reload(d, "SIGHUP", NULL);
  return G_SOURCE_CONTINUE;
}

/* ---- start ------------------------------------------------------------------------------ */

static gboolean
start_failed(Daemon *d, const char *what, const GError *error)
{
  fprintf(stderr, "inspectd: %s%s%s\n", what, what[0] ? ": " : "", error->message);
  insp_notify_errno(error->domain == G_FILE_ERROR ? ENOENT : EINVAL, error->message);
  d->exit_status = 1;
  return FALSE;
}

static gboolean
wake_up(gpointer user_data)
{
  return G_SOURCE_CONTINUE;
}

static gboolean
daemon_start(Daemon *d)
{
  g_autoptr(GError) error = NULL;

  if (d->demo && !demo_line_write(d, &error))
    return start_failed(d, "cannot write the demo line", error);

  d->config = config_load(d, "\ninspectd: ", &error);
  if (d->config == NULL)
    return start_failed(d, "", error);
  d->station = g_strdup(d->config->station.id);
  insp_log_set_station(d->station);
  insp_log_set_level(log_level_from_config(d->config));
  d->state_dir = g_strdup(d->config->station.state_dir);
  if (!seq_open(d, &error))
    return start_failed(d, "state folder", error);

  d->model = model_for_config(d, d->config, &error);
  if (d->model == NULL) {
    g_autofree char *what = d->config->model.path[0]
                                ? g_strdup_printf("cannot load model %s", d->config->model.path)
                                : g_strdup("cannot train the demo model");
    return start_failed(d, what, error);
  }
  InspInspectParams params;
  params_from_config(d->config, &params);
  d->scorer = insp_model_scorer_new(d->model, &params);
  g_atomic_int_set(&d->masks, (gint)d->config->mqtt.masks);

  if (d->config->mqtt.host[0]) {
    d->mqtt = mqtt_for_config(d, d->config, &error);
    if (d->mqtt == NULL)
      return start_failed(d, "MQTT", error);
  }
  d->pipe = pipeline_create(d, d->config, &error);
  if (d->pipe == NULL)
    return start_failed(d, "cannot start the capture", error);
  /* A camera that cannot be opened fails the start, rather than READY
   * followed by endless restarts: wait for the first outcome. A camera slower
   * than CAPTURE_START_TIMEOUT_S to start is not an error. */
  gint64 deadline = g_get_monotonic_time() + CAPTURE_START_TIMEOUT_S * G_USEC_PER_SEC;
  guint wake = g_timeout_add(100, wake_up, NULL);
  while (!d->capture_started && d->capture_error == NULL && !g_atomic_int_get(&d->stopping) &&
         g_get_monotonic_time() < deadline)
    g_main_context_iteration(NULL, TRUE);
  g_source_remove(wake);
  if (!d->capture_started && d->capture_error) {
    g_set_error_literal(&error, G_IO_ERROR, G_IO_ERROR_FAILED, d->capture_error);
    return start_failed(d, "cannot start the capture", error);
  }
  if (!d->capture_started)
    g_info("the camera has not started yet after %d s; going on", CAPTURE_START_TIMEOUT_S);
  d->wd_last_change_us = g_get_monotonic_time();
  return TRUE;
}

static void
daemon_cleanup(Daemon *d)
{
  g_clear_handle_id(&d->sig_hup, g_source_remove);
  g_clear_handle_id(&d->sig_term, g_source_remove);
  g_clear_handle_id(&d->sig_int, g_source_remove);
  g_clear_handle_id(&d->status_timer, g_source_remove);
  g_clear_handle_id(&d->watchdog_timer, g_source_remove);
  g_clear_handle_id(&d->reload_timer, g_source_remove);
  override_flush(d);
  g_clear_object(&d->file_monitor);
  g_clear_object(&d->dir_monitor);
  if (d->pipe)
    insp_pipeline_stop(d->pipe, d->exit_status == 0);
  g_clear_pointer(&d->pipe, insp_pipeline_free);
  g_mutex_lock(&d->pub_lock);
  InspMqtt *mqtt = g_steal_pointer(&d->mqtt);
  g_mutex_unlock(&d->pub_lock);
  insp_daemon_mqtt_free(mqtt);
  seq_close(d);
  g_clear_pointer(&d->scorer, insp_scorer_unref);
  g_clear_pointer(&d->model, insp_model_unref);
  g_clear_pointer(&d->config, insp_config_free);
  demo_line_remove(d);
  g_clear_pointer(&d->loop, g_main_loop_unref);
  g_free(d->station);
  g_free(d->state_dir);
  g_free(d->seq_path);
  g_free(d->config_path);
  g_free(d->capture_error);
  g_free(d->broker_lost_reason);
  g_mutex_clear(&d->pub_lock);
  g_mutex_clear(&d->seq_lock);
  g_mutex_clear(&d->stats_lock);
}

int
insp_daemon_main(const InspDaemonOptions *opt)
{
  Daemon dd = {0}, *d = &dd;

  g_return_val_if_fail(opt != NULL, 2);
  d->opt = *opt;
  d->config_path = g_strdup(opt->config_path);
  d->opt.config_path = d->config_path;
  d->demo = opt->config_path == NULL;
  g_mutex_init(&d->pub_lock);
  g_mutex_init(&d->seq_lock);
  g_mutex_init(&d->stats_lock);
  d->override_t = d->override_pt = NAN;
  d->loop = g_main_loop_new(NULL, FALSE);
  insp_log_init();

  /* Signals are routed to the main loop before anything starts, so an
   * early SIGTERM stops cleanly instead of killing mid-write. */
  d->sig_term = g_unix_signal_add(SIGTERM, on_sigterm, d);
  d->sig_int = g_unix_signal_add(SIGINT, on_sigint, d);
  d->sig_hup = g_unix_signal_add(SIGHUP, on_sighup, d);

  if (daemon_start(d)) {
    guint64 wd = insp_notify_watchdog_usec();
    if (!d->demo)
      watch_config(d);
    d->status_timer = g_timeout_add_seconds(STATUS_INTERVAL_S, status_tick, d);
    if (wd > 0)
      d->watchdog_timer = g_timeout_add(MAX((guint)(wd / 2000), 50), watchdog_tick, d);
    g_autofree char *ready =
        g_strdup_printf("inspecting with %s, threshold %.3f%s", insp_model_get_id(d->model),
                        d->config->inspection.threshold, d->mqtt ? "" : ", MQTT off");
    g_info("%s (seq from %" G_GUINT64_FORMAT ")", ready, d->next_seq);
    insp_notify_ready(ready);
    d->ready = TRUE;
    if (!d->stopping)
      g_main_loop_run(d->loop);
  }
  daemon_cleanup(d);
  return d->exit_status;
}
