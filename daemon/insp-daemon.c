/* insp-daemon: the daemon's lifecycle and reload orchestration.
 *
 * The main thread runs a GLib main loop that owns every control decision:
 * signals (g_unix_signal_add), the config file monitor, MQTT commands, the
 * pipeline's events, the STATUS and watchdog timers, reloads and the stop.
 * The config in force (d->config) is read and replaced on the main thread
 * only. Other threads enter here only through on_result() ("insp-results",
 * one result at a time, in capture order), which takes a seq from the seq
 * store (insp-seq.c), builds the part record (InspPart) once, outside any
 * lock, and hands it to the outputs (insp-outputs.h: MQTT, the decision
 * lines), whose list a reload changes under the list's own lock;
 * stats_lock guards pass/fail counts, latency sums, the progress time the
 * watchdog looks at, and the seq store pointer a reload may replace.
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

#include "insp-blas.h"
#include "insp-conf.h"
#include "insp-demo.h"
#include "insp-image.h"
#include "insp-log.h"
#include "insp-model-scorer.h"
#include "insp-backbone.h"
#include "insp-model.h"
#include "insp-notify.h"
#include "insp-ops.h"
#include "insp-outputs.h"
#include "insp-pipeline.h"
#include "insp-seq.h"

#define STATUS_INTERVAL_S 5
#define REJECT_BURST 5 /* rejected images told one by one, a minute */
#define RELOAD_DEBOUNCE_MS 300
#define FLUSH_TIMEOUT_US (10 * G_USEC_PER_SEC)
#define HOMEASSISTANT_REMOVE_MS 2000 /* a reload waits this long for the removals' PUBACKs */
#define CAPTURE_START_TIMEOUT_S 15
/* A connection the broker closes this soon after accepting it was most
 * likely taken over by another client with the same client id. */
#define INSP_TAKEOVER_SUSPECT_S 10.0

/* Why the daemon is degraded: a bit each. */
enum {
  DEGRADED_CAMERA = 1 << 0, /* the camera is lost */
  DEGRADED_SEQ = 1 << 1,    /* no seq can be saved: results are not published */
  DEGRADED_SPOOL = 1 << 2,  /* the spool is full: results are being dropped */
};

typedef struct {
  InspDaemonOptions opt;
  char *config_path;
  gboolean demo;
  int exit_status;

  GMainLoop *loop;
  InspConfig *config; /* in force; main thread */
  char *station;      /* main thread */
  char *state_dir;

  InspDemo *demo_line; /* the demo line, NULL with a config file */

  InspModel *model;     /* current (the scorer holds its own reference) */
  char *aspect_checked; /* id of the model whose first result's aspect was checked;
                         * the results thread */
  InspScorer *scorer;
  InspPipeline *pipe;
  gboolean use_frame_part_id; /* files replay or trigger mode: part ids come from frames */

  InspOutputs *outputs;    /* every thread; its own lock */
  InspOutput *mqtt_out;    /* the MQTT output in @outputs, NULL when off; main thread */
  InspOutput *http_out;    /* the HTTP output in @outputs, NULL when off; main thread */
  InspOutput *archive_out; /* the archive in @outputs, NULL when off; main thread */
  InspMqtt *mqtt;          /* its client (commands, counters); main thread */
  gint masks;              /* InspConfigMasks, hot */
  gboolean broker_connected;
  gboolean broker_known;       /* a first state was reported */
  char *broker_lost_reason;    /* why the connection was last lost */
  guint takeovers;             /* session takeovers not yet announced by an event */
  guint takeovers_unlogged;    /* of those, not in the journal (one line a minute) */
  gint64 takeover_logged;      /* monotonic time of the last such line */
  gboolean takeover_event_due; /* a takeover was logged, the event is not out yet */
  gint64 broker_connected_at;  /* monotonic time of the last connect */

  InspSeq *seq;          /* replaced by a reload under stats_lock */
  gint seq_failing;      /* no seq could be saved: results are not published */
  guint64 n_unpublished; /* parts not published for the lack of a seq (stats_lock) */

  gint64 started_wall_us; /* the counters count from here (the status's since) */
  GMutex stats_lock;
  guint64 n_pass, n_fail, n_done, n_errors;
  guint64 n_triggers, n_trigger_timeouts, n_trigger_failures;
  double latency_sum_ms;
  guint64 latency_n;
  gint64 last_progress_us;

  /* Start-up: the first capture outcome (main thread). */
  gboolean capture_started;
  char *capture_error;

  gint snapshot_pending;
  gint count_reached;
  guint degraded; /* DEGRADED_* bits; main thread */
  gint stopping;  /* set on the main thread, read by the results thread */
  gboolean ready;

  guint sig_hup, sig_term, sig_int;
  guint status_timer, watchdog_timer, reload_timer;
  GFileMonitor *file_monitor, *dir_monitor;
  guint64 wd_last_inspected;
  gint64 wd_last_change_us;
  gboolean wd_stalled;
  guint64 trigger_counter; /* names triggers that came without a part id */
  guint64 next_trigger_id; /* InspPart.trigger_id of the next trigger; main thread */

  /* Threshold override, saved coalesced off the main loop (main thread). */
  guint override_timer;
  gboolean override_saving, override_dirty;
  double override_t, override_pt; /* NaN: not set since the last save */

  /* Images refused before inspection (main thread): those of pipelines
   * already gone, and the log/event rate limit (REJECT_BURST a minute). */
  guint64 rejected_before;
  guint64 spool_dropped_results_before, spool_dropped_masks_before; /* by clients gone */
  gint64 reject_window_us;
  guint reject_said, reject_unsaid;

  /* The model file as last reported changed (main thread). */
  gboolean model_file_noted;
  InspFileId model_file_seen;
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

  if (d->opt.http_listen != NULL)
    replace_string(&cfg->http.listen, d->opt.http_listen);
  if (d->demo) {
    insp_demo_fixup_config(d->demo_line, cfg);
    if (d->opt.http_listen == NULL)
      replace_string(&cfg->http.listen, INSP_DEMO_HTTP_LISTEN);
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
  if (d->opt.http_listen != NULL && d->opt.http_listen[0] != '\0') {
    g_autofree char *host = NULL;
    int port = 0;
    if (!insp_config_parse_listen(cfg->http.listen, &host, &port)) {
      g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID,
                  "--http '%s': expected HOST:PORT", cfg->http.listen);
      return NULL;
    }
    if (!insp_config_listen_is_loopback(cfg->http.listen) && cfg->http.password_file[0] == '\0' &&
        !cfg->http.insecure) {
      g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID,
                  "--http %s is beyond loopback: it needs [http] password_file (basic auth) in "
                  "the config, or [http] insecure = true",
                  cfg->http.listen);
      return NULL;
    }
  }
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
    return INSP_LOG_LEVEL_NOTICE;
  case INSP_CONFIG_LOG_LEVEL_INFO:
  default:
    return INSP_LOG_LEVEL_INFO;
  }
}

/* ---- results (thread "insp-results") ----------------------------------------- */

static GBytes *
encode_mask(const InspResult *r)
{
  InspImage img = {r->frame->width, r->frame->height, 1, r->frame->width, r->mask};
  g_autoptr(GError) error = NULL;
  GBytes *png = insp_image_encode_png(&img, &error);

  if (png == NULL)
    g_debug("mask of frame %" G_GUINT64_FORMAT " not encoded: %s", r->frame->seq, error->message);
  return png;
}

/* The snapshot command's answer: the frame and its anomaly map as PNGs. */
static void
encode_snapshot(const InspResult *r, InspPart *part)
{
  InspImage img = {r->frame->width, r->frame->height, 3, r->frame->stride,
                   (guint8 *)r->frame->data};

  part->image_png = insp_image_encode_png(&img, NULL);
  if (r->map && r->map_width > 0 && r->map_height > 0) {
    g_autoptr(InspImage) grey = insp_image_new(r->map_width, r->map_height, 1);
    for (int i = 0; i < r->map_width * r->map_height; i++)
      grey->data[i] = (guint8)CLAMP(lrintf(r->map[i] * 255.0f), 0, 255);
    part->map_png = insp_image_encode_png(grey, NULL);
  }
}

static void set_degraded(Daemon *d, guint reason, gboolean on, const char *why);
static gboolean stop_idle(gpointer data);

typedef struct {
  Daemon *d;
  gboolean failing;
  char *message;
} SeqChange;

/* Main thread: the results thread found the seq store failing or back. */
static gboolean
seq_change_idle(gpointer data)
{
  SeqChange *c = data;

  set_degraded(c->d, DEGRADED_SEQ, c->failing, c->message);
  g_free(c->message);
  g_free(c);
  return G_SOURCE_REMOVE;
}

static void
seq_change(Daemon *d, gboolean failing, const char *code, const char *message)
{
  SeqChange *c = g_new0(SeqChange, 1);

  if (failing)
    g_warning("%s", message);
  else
    g_info("%s", message);
  insp_outputs_event_simple(d->outputs, failing ? "error" : "info", code, message);
  c->d = d;
  c->failing = failing;
  c->message = g_strdup(message);
  g_idle_add(seq_change_idle, c);
}

/* A seq for @r, or FALSE when none can be saved: the part is then not
 * published under any seq (a seq handed out past what is saved could name
 * another part after a crash), counted and announced once per outage. */
static gboolean
take_seq(Daemon *d, const InspResult *r, guint64 *seq)
{
  g_autoptr(GError) error = NULL;
  gboolean ok;
  guint64 lost = 0;

  g_mutex_lock(&d->stats_lock);
  ok = insp_seq_take(d->seq, seq, &error);
  if (!ok)
    d->n_unpublished++;
  lost = d->n_unpublished;
  g_mutex_unlock(&d->stats_lock);
  if (!ok && g_atomic_int_compare_and_exchange(&d->seq_failing, 0, 1)) {
    g_autofree char *msg = g_strdup_printf(
        "results are not published from part %s on: %s (they go on when the state folder is "
        "writable again)",
        r->frame->part_id, error->message);
    seq_change(d, TRUE, "seq_not_saved", msg);
  } else if (ok && g_atomic_int_compare_and_exchange(&d->seq_failing, 1, 0)) {
    g_autofree char *msg = g_strdup_printf(
        "sequence numbers are saved again, results are published from seq %" G_GUINT64_FORMAT
        " on; %" G_GUINT64_FORMAT " parts in all were inspected and not published",
        *seq, lost);
    seq_change(d, FALSE, "seq_saved", msg);
  }
  return ok;
}

static void
on_result(InspPipeline *pipe, const InspResult *r, gpointer user_data)
{
  Daemon *d = user_data;
  guint64 seq;

  if (g_atomic_int_get(&d->count_reached))
    return;
  if (!r->ok || !take_seq(d, r, &seq)) {
    g_autofree char *why =
        !r->ok ? g_strdup_printf("inspection failed: %s",
                                 r->error ? r->error->message : "unknown error")
               : g_strdup("not published: no sequence number can be saved in the state folder");
    g_mutex_lock(&d->stats_lock);
    if (!r->ok)
      d->n_errors++;
    if (r->frame->trigger_id != 0)
      d->n_trigger_failures++;
    d->last_progress_us = g_get_monotonic_time();
    g_mutex_unlock(&d->stats_lock);
    if (!r->ok) {
      InspEvent ev = {.level = "error",
                      .code = "inspection_failed",
                      .message = why,
                      .part_id = r->frame->part_id};
      g_warning("frame %s not inspected: %s", r->frame->part_id,
                r->error ? r->error->message : "unknown error");
      insp_outputs_event(d->outputs, &ev);
    }
    /* The PLC that triggered it is answered all the same. */
    if (r->frame->trigger_id != 0)
      insp_outputs_trigger_failed(d->outputs, r->frame->trigger_id, why);
    return;
  }

  /* Once per model: frames of another aspect than its training images are
   * stretched to it (and score worse); say so in the journal. */
  if (r->model_id != NULL && g_strcmp0(d->aspect_checked, r->model_id) != 0) {
    g_free(d->aspect_checked);
    d->aspect_checked = g_strdup(r->model_id);
    if (r->aspect_differs)
      g_warning("model %s: frames of %dx%d are %.2fx as wide for their height as the model's "
                "training images (or their tiles): they are stretched to its input, which "
                "costs accuracy; train on frames from this camera",
                r->model_id, r->frame->width, r->frame->height, r->aspect_ratio);
  }

  /* The part record, built once here, outside any lock. */
  g_autoptr(InspPart) part = insp_part_new();
  guint n_regions = r->regions ? r->regions->len : 0;
  InspConfigMasks masks = (InspConfigMasks)g_atomic_int_get(&d->masks);

  part->seq = seq;
  part->trigger_id = r->frame->trigger_id;
  part->part_id = d->use_frame_part_id && r->frame->part_id
                      ? g_strdup(r->frame->part_id)
                      : g_strdup_printf("%" G_GUINT64_FORMAT, seq);
  part->capture_time_us = r->frame->wall_us;
  part->fail = r->fail;
  part->score = r->score;
  part->threshold = r->threshold;
  part->model = g_strdup(r->model_id ? r->model_id : "");
  part->latency_ms = r->latency_ms;
  if (n_regions > 0) {
    part->regions = g_memdup2(r->regions->data, n_regions * sizeof(InspRegion));
    part->n_regions = n_regions;
  }
  part->dropped_before = r->frame->dropped_before;
  part->width = r->frame->width;
  part->height = r->frame->height;
  if (r->mask && (masks == INSP_CONFIG_MASKS_ALL || (masks == INSP_CONFIG_MASKS_FAIL && r->fail)))
    part->mask_png = encode_mask(r);
  if (g_atomic_int_compare_and_exchange(&d->snapshot_pending, 1, 0))
    encode_snapshot(r, part);
  G_STATIC_ASSERT(INSP_PART_N_STAGES == INSP_N_STAGES);
  memcpy(part->stage_ms, r->stage_ms, sizeof part->stage_ms);
  if (insp_outputs_wants_images(d->outputs, r->fail)) {
    part->rgb = r->frame->data;
    part->rgb_stride = r->frame->stride;
    part->rgb_owner = insp_frame_ref(r->frame);
    part->rgb_release = (GDestroyNotify)insp_frame_unref;
    if (r->map && r->map_width > 0 && r->map_height > 0) {
      part->map = g_memdup2(r->map, (gsize)r->map_width * (gsize)r->map_height * sizeof(float));
      part->map_width = r->map_width;
      part->map_height = r->map_height;
    }
  }

  insp_outputs_part(d->outputs, part);

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

  insp_log_part(G_LOG_LEVEL_DEBUG, seq, part->part_id, "%s score %.3f threshold %.3f, %u regions",
                r->fail ? "fail" : "pass", r->score, r->threshold, n_regions);
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
static void on_trigger_timeout(InspPipeline *pipe, guint64 trigger_id, const char *part_id,
                               gpointer user_data);

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
  insp_outputs_event_simple(d->outputs, level, code, message);
}

static gboolean status_tick(gpointer user_data);

/* Main thread. @reason is a DEGRADED_* bit; the status goes out at once. */
static void
set_degraded(Daemon *d, guint reason, gboolean on, const char *why)
{
  guint was = d->degraded;

  d->degraded = on ? was | reason : was & ~reason;
  if (d->degraded == was)
    return;
  if (on)
    g_warning("degraded: %s", why);
  else if (d->degraded == 0)
    g_message("back online");
  if (d->ready)
    status_tick(d);
}

/* The running model is in memory; its file may change under it (copied
 * over, truncated, retrained and renamed, removed). Said once per state of
 * the file, with what to do: a reload loads it (and refuses a damaged one,
 * keeping the running model). */
static void
check_model_file(Daemon *d)
{
  const InspFileId *loaded = d->model ? insp_model_get_file_id(d->model) : NULL;
  InspFileId now = {0};
  gboolean exists;
  g_autofree char *msg = NULL;

  if (loaded == NULL || d->config->model.path[0] == '\0')
    return;
  exists = insp_file_id_from_path(d->config->model.path, &now);
  if (exists && insp_file_id_equal(&now, loaded)) {
    d->model_file_noted = FALSE;
    return;
  }
  if (d->model_file_noted && insp_file_id_equal(&now, &d->model_file_seen))
    return;
  d->model_file_noted = TRUE;
  d->model_file_seen = now;
  if (exists)
    msg = g_strdup_printf(
        "model file %s changed on disk (%s, %" G_GUINT64_FORMAT " bytes); the running model %s "
        "stays in force until a reload (systemctl reload, SIGHUP) loads the new file or refuses "
        "it; replace a model by writing a new file and renaming it over the old one",
        d->config->model.path, now.ino != loaded->ino ? "another file" : "written in place",
        now.size, insp_model_get_id(d->model));
  else
    msg = g_strdup_printf("model file %s is gone; the running model %s stays in force (it is in "
                          "memory), but a restart will not find it",
                          d->config->model.path, insp_model_get_id(d->model));
  g_warning("%s", msg);
  publish_event(d, "warning", "model_file_changed", msg);
}

/* Starts a new minute of the rejected-image rate limit, saying how many the
 * last one did not tell one by one. */
static void
reject_window_flush(Daemon *d, gint64 now)
{
  if (d->reject_unsaid > 0) {
    g_autofree char *msg = g_strdup_printf(
        "%u more images were rejected in the last minute (counted in the status as rejected)",
        d->reject_unsaid);
    g_warning("%s", msg);
    publish_event(d, "warning", "image_rejected", msg);
  }
  d->reject_window_us = now;
  d->reject_said = 0;
  d->reject_unsaid = 0;
}

static gboolean
status_tick(gpointer user_data)
{
  Daemon *d = user_data;
  InspPipelineStats st = {0};
  InspMqttStats ms = {0};
  guint64 pass, fail, errors, unpublished, triggers, timeouts, trigger_failures;
  double lat;

  check_model_file(d);
  if (d->mqtt) {
    /* Degraded while a full spool drops results (each drop is announced by
     * the MQTT library's spool_full event), and 30 s after the last one. */
    InspMqttStats m0;
    insp_mqtt_get_stats(d->mqtt, &m0);
    gboolean dropping = m0.result_dropped_us != 0 &&
                        g_get_monotonic_time() - m0.result_dropped_us < 30 * G_USEC_PER_SEC;
    if (dropping != ((d->degraded & DEGRADED_SPOOL) != 0)) {
      set_degraded(d, DEGRADED_SPOOL, dropping,
                   "results are being dropped: the spool is full (its disk, or [spool] max_mb) "
                   "and the broker is not taking them; see the spool_full events for the seqs");
      if (d->ready)
        return G_SOURCE_CONTINUE; /* set_degraded sent the status */
    }
  }
  if (d->reject_unsaid > 0 && g_get_monotonic_time() - d->reject_window_us > 60 * G_USEC_PER_SEC)
    reject_window_flush(d, g_get_monotonic_time());
  if (d->pipe)
    insp_pipeline_get_stats(d->pipe, &st);
  g_mutex_lock(&d->stats_lock);
  pass = d->n_pass;
  fail = d->n_fail;
  errors = d->n_errors;
  unpublished = d->n_unpublished;
  triggers = d->n_triggers;
  timeouts = d->n_trigger_timeouts;
  trigger_failures = d->n_trigger_failures;
  lat = d->latency_n ? d->latency_sum_ms / (double)d->latency_n : 0.0;
  d->latency_sum_ms = 0.0;
  d->latency_n = 0;
  g_mutex_unlock(&d->stats_lock);

  InspStatus status = {
      .state = d->degraded ? INSP_STATE_DEGRADED : INSP_STATE_ONLINE,
      .model = d->model ? insp_model_get_id(d->model) : "",
      .threshold = d->config->inspection.threshold,
      .fps = st.fps,
      .frames = pass + fail,
      .dropped = st.frames_dropped,
      .pass = pass,
      .fail = fail,
      .triggers = triggers,
      .trigger_timeouts = timeouts,
      .trigger_failures = trigger_failures,
      .rejected = d->rejected_before + st.rejected_size + st.rejected_format,
      .since_us = d->started_wall_us,
  };
  if (d->mqtt)
    insp_mqtt_get_stats(d->mqtt, &ms);
  status.spool_dropped_results = d->spool_dropped_results_before + ms.dropped_results;
  status.spool_dropped_masks = d->spool_dropped_masks_before + ms.dropped_masks;
  status.pixel_threshold = d->config->inspection.pixel_threshold;
  if (d->model != NULL) {
    status.detector = insp_detector_kind_to_string(insp_model_get_detector(d->model));
    status.backbone = insp_model_get_backbone_arch(d->model);
    status.input_size = insp_model_get_input_size(d->model);
  }
  status.queue_frames = st.queue_depth;
  status.mqtt_connected = d->mqtt == NULL ? -1 : ms.connected ? 1 : 0;
  status.spool_messages = ms.spooled;
  status.spool_bytes = ms.spool_bytes;
  insp_outputs_status(d->outputs, &status);

  g_autofree char *spool_drops =
      status.spool_dropped_results
          ? g_strdup_printf(", %" G_GUINT64_FORMAT " results dropped by a full spool",
                            status.spool_dropped_results)
          : g_strdup("");
  g_autofree char *unpub = unpublished ? g_strdup_printf(", %" G_GUINT64_FORMAT " not published "
                                                         "(no seq can be saved)",
                                                         unpublished)
                                       : g_strdup("");
  insp_notify_status("%s: %.1f fps, latency %.1f ms, %" G_GUINT64_FORMAT " pass, %" G_GUINT64_FORMAT
                     " fail, %" G_GUINT64_FORMAT " dropped, %" G_GUINT64_FORMAT
                     " errors, %" G_GUINT64_FORMAT " rejected%s, threshold %.3f, broker %s%s%s",
                     d->degraded ? "degraded" : "inspecting", st.fps, lat, pass, fail,
                     st.frames_dropped, errors, status.rejected, unpub,
                     d->config->inspection.threshold,
                     d->mqtt == NULL ? "off"
                     : ms.connected  ? "connected"
                                     : "unreachable",
                     ms.spooled ? ", results spooled" : "", spool_drops);
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

static void daemon_stop(Daemon *d, const char *why);

/* Main thread, from an idle (not inside the pipeline's bus callback): a
 * files replay without loop has delivered its last file. The queue drains
 * (every result delivered and handed to the outputs), the journal says how
 * many files were inspected, and the daemon stops as on SIGTERM, flushing
 * MQTT (acknowledged, or spooled for the next start) and exiting 0. */
static gboolean
replay_done_idle(gpointer user_data)
{
  Daemon *d = user_data;
  InspPipelineStats st = {0};
  guint64 pass, fail, errors;

  if (g_atomic_int_get(&d->stopping) || d->pipe == NULL)
    return G_SOURCE_REMOVE;
  insp_pipeline_stop(d->pipe, TRUE);
  insp_pipeline_get_stats(d->pipe, &st);
  g_mutex_lock(&d->stats_lock);
  pass = d->n_pass;
  fail = d->n_fail;
  errors = d->n_errors;
  g_mutex_unlock(&d->stats_lock);
  guint64 skipped = st.rejected_size + st.rejected_format;
  guint64 files = st.frames_inspected + st.frames_dropped + skipped;
  if (skipped == 0 && st.frames_dropped == 0 && errors == 0)
    g_message("the files replay is done: all %" G_GUINT64_FORMAT
              " files were inspected (%" G_GUINT64_FORMAT " pass, %" G_GUINT64_FORMAT
              " fail); exiting",
              files, pass, fail);
  else
    g_message("the files replay is done: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
              " files were inspected (%" G_GUINT64_FORMAT " pass, %" G_GUINT64_FORMAT
              " fail); %" G_GUINT64_FORMAT " skipped, %" G_GUINT64_FORMAT
              " dropped, %" G_GUINT64_FORMAT " failed (see the warnings above); exiting",
              pass + fail, files, pass, fail, skipped, st.frames_dropped, errors);
  daemon_stop(d, "the files replay is done");
  return G_SOURCE_REMOVE;
}

static void
on_pipeline_event(InspPipeline *pipe, const InspPipelineEvent *ev, gpointer user_data)
{
  Daemon *d = user_data;

  switch (ev->kind) {
  case INSP_PIPELINE_EVENT_STARTED:
    if (d->degraded & DEGRADED_CAMERA)
      publish_event(d, "info", "camera_back", ev->message);
    g_info("%s", ev->message);
    d->capture_started = TRUE;
    set_degraded(d, DEGRADED_CAMERA, FALSE, NULL);
    break;
  case INSP_PIPELINE_EVENT_ERROR:
  case INSP_PIPELINE_EVENT_EOS:
    if (!d->capture_started && d->capture_error == NULL)
      d->capture_error = g_strdup(ev->message);
    /* During start-up the caller reports it, in one line. Once per outage
     * after that: the restarts that follow log at debug. */
    if (!d->ready || (d->degraded & DEGRADED_CAMERA)) {
      g_debug("camera still failing: %s", ev->message);
      break;
    }
    g_warning("camera: %s%s%s", ev->message, ev->detail ? " - " : "", ev->detail ? ev->detail : "");
    publish_event(d, "error", "camera_lost", ev->message);
    set_degraded(d, DEGRADED_CAMERA, TRUE, ev->message);
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
    /* Free running, every file is a part to inspect: done. With triggers
     * the replay only fed frames to them; the daemon stays for the next
     * (which time out). */
    if (d->config->trigger.mode == INSP_CONFIG_TRIGGER_MODE_FREE)
      g_idle_add(replay_done_idle, d);
    break;
  case INSP_PIPELINE_EVENT_REJECTED: {
    gint64 now = g_get_monotonic_time();
    if (now - d->reject_window_us > 60 * G_USEC_PER_SEC)
      reject_window_flush(d, now);
    if (d->reject_said < REJECT_BURST) {
      d->reject_said++;
      g_warning("%s", ev->message);
      publish_event(d, "warning", "image_rejected", ev->message);
    } else {
      d->reject_unsaid++;
    }
    break;
  }
  default:
    break;
  }
}

static void
on_trigger_timeout(InspPipeline *pipe, guint64 trigger_id, const char *part_id, gpointer user_data)
{
  Daemon *d = user_data;
  g_autofree char *msg = g_strdup_printf("no frame came within [trigger] timeout_ms = %d for the "
                                         "trigger of part %s",
                                         d->config->trigger.timeout_ms, part_id);
  InspEvent ev = {
      .level = "warning", .code = "trigger_timeout", .message = msg, .part_id = part_id};

  g_mutex_lock(&d->stats_lock);
  d->n_trigger_timeouts++;
  g_mutex_unlock(&d->stats_lock);
  g_warning("%s", msg);
  insp_outputs_event(d->outputs, &ev);
  insp_outputs_trigger_failed(d->outputs, trigger_id, "timeout");
}

/* Main thread, after the pipeline stopped (all its results delivered): the
 * triggers still waiting will get no frame; their PLCs are told. */
static void
fail_waiting_triggers(Daemon *d, const char *why)
{
  guint n = d->mqtt ? insp_mqtt_trigger_fail_all(d->mqtt, why) : 0;

  if (n == 0)
    return;
  g_mutex_lock(&d->stats_lock);
  d->n_trigger_failures += n;
  g_mutex_unlock(&d->stats_lock);
  g_info("%u waiting triggers answered: %s", n, why);
}

/* ---- reload ---------------------------------------------------------------------- */

static InspModel *
model_for_config(Daemon *d, const InspConfig *cfg, GError **error)
{
  if (cfg->model.path[0] == '\0')
    return insp_demo_train_model(d->opt.demo_size, error);
  return insp_model_load(cfg->model.path, error);
}

/* TRUE when @cfg's model path (the running one's) now names another file
 * than the one the running model was read from, or the same file changed. */
static gboolean
model_file_replaced(Daemon *d, const InspConfig *cfg)
{
  const InspFileId *loaded = d->model ? insp_model_get_file_id(d->model) : NULL;
  InspFileId now;

  if (loaded == NULL || cfg->model.path[0] == '\0')
    return FALSE;
  return !insp_file_id_from_path(cfg->model.path, &now) || !insp_file_id_equal(loaded, &now);
}

static InspOutput *mqtt_for_config(Daemon *d, const InspConfig *cfg, GError **error);
static void mqtt_output_set(Daemon *d, InspOutput *out);

/* TRUE when the Home Assistant entities the running client publishes are
 * not published again, at the same discovery topics on the same broker, by
 * the client of @cfg: they are to be removed before it goes. Entities that
 * stay are not removed and announced again (HA would forget what the user
 * set on them). */
static gboolean
homeassistant_dropped(Daemon *d, const InspConfig *cfg)
{
  const InspConfig *old = d->config;
  const char *old_station = old->station.id[0] ? old->station.id : d->station;
  const char *new_station = cfg->station.id[0] ? cfg->station.id : d->station;

  if (!old->mqtt.homeassistant || old->mqtt.host[0] == '\0')
    return FALSE;
  return !cfg->mqtt.homeassistant || cfg->mqtt.host[0] == '\0' ||
         g_strcmp0(old->mqtt.host, cfg->mqtt.host) != 0 || old->mqtt.port != cfg->mqtt.port ||
         g_strcmp0(old->mqtt.homeassistant_prefix, cfg->mqtt.homeassistant_prefix) != 0 ||
         g_strcmp0(old_station, new_station) != 0;
}

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
  /* The same path may name another file (retrained, renamed over it) or
   * the same file written anew: the model is loaded again then too. */
  gboolean model_file_changed = !(change & INSP_CONFIG_CHANGE_MODEL) && model_file_replaced(d, cfg);
  if (model_file_changed)
    change |= INSP_CONFIG_CHANGE_MODEL;
  what = insp_config_change_to_string(change);
  keys = insp_config_diff_keys(d->config, cfg);
  if (model_file_changed) {
    gsize n = g_strv_length(keys);
    keys = g_renew(char *, keys, n + 2);
    keys[n] = g_strdup("[model] path (the file changed)");
    keys[n + 1] = NULL;
  }
  keys_text = g_strjoinv(", ", keys);

  /* Everything that can fail is prepared before anything is applied. */
  if (change & INSP_CONFIG_CHANGE_MODEL) {
    model = model_for_config(d, cfg, &local);
    if (model == NULL) {
      g_prefix_error(&local, "model: ");
      goto rejected;
    }
  }
  if (change & (INSP_CONFIG_CHANGE_MQTT | INSP_CONFIG_CHANGE_SPOOL)) {
    /* One client per spool folder at a time: the old one goes first (its
     * unacknowledged results stay in the spool for the new one). The results
     * thread waits on the outputs' lock meanwhile; no result is lost. */
    InspOutput *fresh = NULL;
    /* No part may pass between the old client and the new one (it would
     * reach no MQTT output at all): the results thread waits meanwhile. */
    insp_outputs_hold(d->outputs);
    if (d->mqtt_out) {
      const char *old_station = d->config->station.id[0] ? d->config->station.id : d->station;
      const char *new_station = cfg->station.id[0] ? cfg->station.id : d->station;
      if (g_strcmp0(d->config->mqtt.host, cfg->mqtt.host) == 0 &&
          d->config->mqtt.port == cfg->mqtt.port &&
          g_strcmp0(d->config->mqtt.topic_prefix, cfg->mqtt.topic_prefix) == 0 &&
          g_strcmp0(old_station, new_station) == 0 &&
          g_strcmp0(d->config->mqtt.client_id, cfg->mqtt.client_id) == 0)
        insp_mqtt_keep_status(d->mqtt); /* the new client says "online" again */
      fail_waiting_triggers(d, "the MQTT settings were reloaded before the part was inspected");
      if (d->mqtt && homeassistant_dropped(d, cfg)) {
        if (insp_mqtt_remove_homeassistant(d->mqtt, HOMEASSISTANT_REMOVE_MS))
          g_info("Home Assistant discovery: the entities of station %s were removed", old_station);
        else
          g_warning("Home Assistant discovery: the entities of station %s could not be removed "
                    "(the broker was not connected or did not answer): their configs stay "
                    "retained under %s/; clear them with mosquitto_pub -r -n (README.md, \"Home "
                    "Assistant\")",
                    old_station, d->config->mqtt.homeassistant_prefix);
      }
      if (d->mqtt) {
        InspMqttStats gone;
        insp_mqtt_get_stats(d->mqtt, &gone);
        d->spool_dropped_results_before += gone.dropped_results;
        d->spool_dropped_masks_before += gone.dropped_masks;
      }
      insp_outputs_replace(d->outputs, d->mqtt_out, NULL);
      mqtt_output_set(d, NULL);
    }
    d->broker_connected = FALSE;
    d->broker_known = FALSE;
    if (cfg->mqtt.host[0])
      fresh = mqtt_for_config(d, cfg, &local);
    if (cfg->mqtt.host[0] && fresh == NULL) {
      g_autoptr(GError) again = NULL;
      InspOutput *old = NULL;
      if (d->config->mqtt.host[0] && (old = mqtt_for_config(d, d->config, &again)) == NULL)
        g_warning("the previous MQTT client could not be restored: %s", again->message);
      mqtt_output_set(d, old);
      insp_outputs_release(d->outputs);
      goto rejected;
    }
    mqtt_output_set(d, fresh);
    insp_outputs_release(d->outputs);
  }
  if (change & (INSP_CONFIG_CHANGE_HTTP | INSP_CONFIG_CHANGE_STATION)) {
    /* The old server lets go of its port first; a new one that cannot
     * listen is said, and the rest of the reload holds. */
    InspOutput *fresh = NULL;
    const char *station = cfg->station.id[0] ? cfg->station.id : d->station;
    if (d->http_out) {
      insp_outputs_replace(d->outputs, d->http_out, NULL);
      d->http_out = NULL;
    }
    if (cfg->http.listen[0] && (fresh = insp_output_http_new(cfg, station, &local)) == NULL) {
      g_warning("HTTP server not restarted: %s", local->message);
      publish_event(d, "error", "http_failed", local->message);
      g_clear_error(&local);
    }
    if (fresh != NULL) {
      insp_outputs_add(d->outputs, fresh);
      d->http_out = fresh;
    }
  }
  if (change & (INSP_CONFIG_CHANGE_ARCHIVE | INSP_CONFIG_CHANGE_STATION)) {
    /* The old writer finishes what it has queued; a new one that cannot
     * write its folder is said, and the rest of the reload holds. */
    InspOutput *fresh = NULL;
    const char *station = cfg->station.id[0] ? cfg->station.id : d->station;
    if (d->archive_out) {
      insp_outputs_replace(d->outputs, d->archive_out, NULL);
      d->archive_out = NULL;
    }
    if (cfg->archive.dir[0] && cfg->archive.what != INSP_CONFIG_MASKS_NONE &&
        (fresh = insp_output_archive_new(cfg, station, d->outputs, &local)) == NULL) {
      g_warning("archive not restarted: %s", local->message);
      publish_event(d, "error", "archive_failed", local->message);
      g_clear_error(&local);
    }
    if (fresh != NULL) {
      insp_outputs_add(d->outputs, fresh);
      d->archive_out = fresh;
    }
  }
  if (change & INSP_CONFIG_CHANGE_STATION) {
    replace_string(&d->station, cfg->station.id);
    insp_log_set_station(d->station);
    if (g_strcmp0(cfg->station.state_dir, d->state_dir) != 0) {
      /* The seq carries on from the old folder's when the new one has none
       * higher: a seq never names two parts of one station. */
      InspSeq *fresh = insp_seq_open(cfg->station.state_dir, d->opt.debug_seq_block, &local);
      if (fresh == NULL) {
        g_warning("state folder %s not used, the old one stays: %s", cfg->station.state_dir,
                  local->message);
        publish_event(d, "error", "state_dir", local->message);
        g_clear_error(&local);
      } else {
        g_mutex_lock(&d->stats_lock);
        InspSeq *old = d->seq;
        d->seq = fresh;
        g_mutex_unlock(&d->stats_lock);
        insp_seq_close(old);
        replace_string(&d->state_dir, cfg->station.state_dir);
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
    g_message("model swapped: now %s", insp_model_get_id(d->model));
  }
  if (d->mqtt_out)
    insp_output_mqtt_set_masks(d->mqtt_out, cfg->mqtt.masks);
  if (d->mqtt)
    insp_mqtt_set_threshold_range(d->mqtt, cfg->inspection.threshold_min,
                                  cfg->inspection.threshold_max);
  if (change &
      (INSP_CONFIG_CHANGE_CAMERA | INSP_CONFIG_CHANGE_WORKERS | INSP_CONFIG_CHANGE_TRIGGER)) {
    if (d->pipe) {
      InspPipelineStats old = {0};
      insp_pipeline_stop(d->pipe, TRUE);
      insp_pipeline_get_stats(d->pipe, &old);
      d->rejected_before += old.rejected_size + old.rejected_format;
      g_clear_pointer(&d->pipe, insp_pipeline_free);
      fail_waiting_triggers(d, "capture restarted by a reload before a frame came");
    }
    d->pipe = pipeline_create(d, cfg, &local);
    d->wd_last_inspected = 0;
    d->wd_last_change_us = g_get_monotonic_time();
    if (d->pipe == NULL) {
      g_warning("capture not restarted: %s", local->message);
      publish_event(d, "error", "camera_lost", local->message);
      set_degraded(d, DEGRADED_CAMERA, TRUE, local->message);
      g_clear_error(&local);
    }
  }
  insp_config_free(d->config);
  d->config = g_steal_pointer(&cfg);
  g_message("config reloaded (%s): %s%s%s", why, what, keys_text[0] ? " - " : "", keys_text);
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
  InspMqtt *mqtt; /* the client it came from, compared only */
  InspMqttCommand *cmd;
} ReloadRequest;

static gboolean
reload_command_idle(gpointer user_data)
{
  ReloadRequest *req = user_data;
  Daemon *d = req->d;
  g_autoptr(GError) error = NULL;
  gboolean ok = reload(d, "MQTT command", &error);

  /* The client the command came from may be gone with the reload. */
  if (d->mqtt == req->mqtt && ok)
    insp_mqtt_command_reply(d->mqtt, req->cmd, NULL);
  else if (d->mqtt == req->mqtt)
    insp_mqtt_command_reply_error(d->mqtt, req->cmd, error->message);
  insp_mqtt_command_unref(req->cmd);
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

/* Replies {"ok":true, @key: @value} (nothing more when @key is NULL). */
static void
reply_string(InspMqtt *mqtt, InspMqttCommand *cmd, const char *key, const char *value)
{
  g_autoptr(JsonObject) o = json_object_new();

  if (key)
    json_object_set_string_member(o, key, value);
  insp_mqtt_command_reply(mqtt, cmd, o);
}

/* Main thread: every command the MQTT client accepted, answered once. */
static void
on_command(InspMqtt *mqtt, InspMqttCommand *cmd, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr(GError) error = NULL;

  switch (insp_mqtt_command_get_kind(cmd)) {
  case INSP_MQTT_COMMAND_TRIGGER: {
    const char *asked = insp_mqtt_command_get_part_id(cmd);
    g_autofree char *id =
        asked ? g_strdup(asked)
              : g_strdup_printf("trigger-%" G_GINT64_FORMAT "-%" G_GUINT64_FORMAT,
                                g_get_real_time() / G_USEC_PER_SEC, ++d->trigger_counter);
    if (d->pipe == NULL) {
      insp_mqtt_command_reply_error(mqtt, cmd, "capture is not running");
      return;
    }
    if (d->config->trigger.mode != INSP_CONFIG_TRIGGER_MODE_MQTT) {
      insp_mqtt_command_reply_error(mqtt, cmd,
                                    "trigger refused: the camera runs free; [trigger] mode = mqtt "
                                    "inspects one frame per trigger");
      return;
    }
    /* The route of the final answer is in place before a frame can come. */
    guint64 trigger_id = ++d->next_trigger_id;
    insp_mqtt_command_reply_trigger(mqtt, cmd, id, trigger_id);
    g_mutex_lock(&d->stats_lock);
    d->n_triggers++;
    g_mutex_unlock(&d->stats_lock);
    if (!insp_pipeline_trigger(d->pipe, id, trigger_id, &error)) {
      g_mutex_lock(&d->stats_lock);
      d->n_trigger_failures++;
      g_mutex_unlock(&d->stats_lock);
      insp_mqtt_trigger_fail(mqtt, trigger_id, error->message);
    }
    return;
  }
  case INSP_MQTT_COMMAND_THRESHOLD: {
    double t = NAN, pt = NAN;
    gboolean has_t = insp_mqtt_command_get_threshold(cmd, &t);
    gboolean has_pt = insp_mqtt_command_get_pixel_threshold(cmd, &pt);
    const InspConfig *now = d->config;
    g_autoptr(InspConfig) cfg = NULL;
    g_autofree char *refused = threshold_refusal("threshold", t, now->inspection.threshold_min,
                                                 now->inspection.threshold_max);

    if (refused == NULL)
      refused = threshold_refusal("pixel_threshold", pt, now->inspection.pixel_threshold_min,
                                  now->inspection.pixel_threshold_max);
    if (refused != NULL) {
      g_info("threshold command: %s", refused);
      insp_mqtt_command_reply_error(mqtt, cmd, refused);
      return;
    }
    if (has_t)
      d->override_t = t;
    if (has_pt)
      d->override_pt = pt;
    override_schedule(d);
    cfg = insp_config_copy(d->config);
    if (has_t)
      cfg->inspection.threshold = t;
    if (has_pt)
      cfg->inspection.pixel_threshold = pt;
    InspInspectParams params;
    params_from_config(cfg, &params);
    insp_model_scorer_set_params(d->scorer, &params);
    insp_config_free(d->config);
    d->config = g_steal_pointer(&cfg);
    g_info("threshold set by command: %.4f, pixel threshold %.4f (saved within a second)",
           d->config->inspection.threshold, d->config->inspection.pixel_threshold);
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_double_member(o, "threshold", d->config->inspection.threshold);
    insp_mqtt_command_reply(mqtt, cmd, o);
    return;
  }
  case INSP_MQTT_COMMAND_RELOAD: {
    /* Not from inside the client's callback: the reload may replace the
     * client itself. */
    ReloadRequest *req = g_new0(ReloadRequest, 1);
    req->d = d;
    req->mqtt = mqtt;
    req->cmd = insp_mqtt_command_ref(cmd);
    g_idle_add(reload_command_idle, req);
    return;
  }
  case INSP_MQTT_COMMAND_SNAPSHOT:
    g_atomic_int_set(&d->snapshot_pending, 1);
    reply_string(mqtt, cmd, "snapshot", "next frame");
    return;
  default:
    insp_mqtt_command_reply_error(mqtt, cmd, "unknown command");
    return;
  }
}

static void
on_connection(InspMqtt *mqtt, gboolean connected, int reason, const char *message,
              gpointer user_data)
{
  Daemon *d = user_data;

  const char *host = d->config ? d->config->mqtt.host : "";
  int port = d->config ? d->config->mqtt.port : 0;

  if (d->broker_known && connected == d->broker_connected)
    return;
  gint64 now = g_get_monotonic_time();
  double lasted =
      d->broker_connected_at ? (double)(now - d->broker_connected_at) / G_USEC_PER_SEC : -1;
  /* Another client uses our client id: each connection kicks the other off.
   * A v5 broker says so (DISCONNECT 0x8E); mosquitto 2.0 just closes the
   * older connection, which then ends moments after it was accepted. */
  gboolean taken = !connected && reason == INSP_MQTT_REASON_SESSION_TAKEN_OVER;
  gboolean closed_soon = !connected && d->broker_connected && lasted >= 0 &&
                         lasted < INSP_TAKEOVER_SUSPECT_S &&
                         reason == INSP_MQTT_REASON_CONNECTION_LOST;
  if (taken || closed_soon) {
    /* The journal hears it once a minute at most, the event topic once the
     * daemon is back; the flapping is not logged as outages. */
    const char *client_id = d->config ? d->config->mqtt.client_id : "";
    d->takeovers++;
    if (d->takeover_logged == 0 || now - d->takeover_logged >= 60 * G_USEC_PER_SEC) {
      g_autofree char *more =
          d->takeovers_unlogged > 0
              ? g_strdup_printf(" (%u more times since the last such line)", d->takeovers_unlogged)
              : NULL;
      if (taken)
        g_warning("broker %s:%d: another client connected with this daemon's client id '%s' and "
                  "took over its session (MQTT reason 0x8E)%s; reconnecting, results are spooled "
                  "meanwhile; give every client its own [mqtt] client_id",
                  host, port, client_id, more ? more : "");
      else
        g_warning("broker %s:%d closed the connection %.1f s after accepting it%s: most likely "
                  "another client connected with this daemon's client id '%s' and took over its "
                  "session (the broker gave no reason; a v5 broker that does says 0x8E); "
                  "reconnecting, results are spooled meanwhile; give every client its own "
                  "[mqtt] client_id",
                  host, port, lasted, more ? more : "", client_id);
      d->takeover_logged = now;
      d->takeovers_unlogged = 0;
      d->takeover_event_due = TRUE;
    } else {
      d->takeovers_unlogged++;
    }
    g_free(d->broker_lost_reason);
    d->broker_lost_reason = g_strdup(message ? message : "");
    d->broker_known = TRUE;
    d->broker_connected = FALSE;
    return;
  }
  if (connected)
    d->broker_connected_at = now;
  if (connected && d->takeover_event_due) {
    const char *client_id = d->config ? d->config->mqtt.client_id : "";
    g_autofree char *msg = g_strdup_printf(
        "another client connected with this daemon's client id '%s' and took over its session "
        "%u time%s; connected again. Give every client its own [mqtt] client_id",
        client_id, d->takeovers, d->takeovers == 1 ? "" : "s");
    g_info("broker %s:%d connected again after the takeover", host, port);
    publish_event(d, "warning", "session_taken_over", msg);
    d->takeovers = 0;
    d->takeover_event_due = FALSE;
    d->broker_known = TRUE;
    d->broker_connected = TRUE;
    return;
  }
  if (connected && d->takeovers > 0) {
    /* Kicked again within the minute: counted, announced with the next line. */
    d->broker_known = TRUE;
    d->broker_connected = TRUE;
    return;
  }
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

static InspOutput *
mqtt_for_config(Daemon *d, const InspConfig *cfg, GError **error)
{
  const char *station = cfg->station.id[0] ? cfg->station.id : d->station;

  return insp_output_mqtt_new(cfg, station, d->started_wall_us, g_main_context_default(),
                              on_command, on_connection, d, error);
}

/* Main thread: @out (nullable) becomes the MQTT output, added to the list. */
static void
mqtt_output_set(Daemon *d, InspOutput *out)
{
  d->mqtt_out = out;
  d->mqtt = out ? insp_output_mqtt_get_client(out) : NULL;
  if (out)
    insp_outputs_add(d->outputs, out);
}

/* ---- stop ------------------------------------------------------------------------------ */

static void
daemon_stop(Daemon *d, const char *why)
{
  if (g_atomic_int_get(&d->stopping))
    return;
  g_atomic_int_set(&d->stopping, TRUE);
  g_message("stopping (%s): draining the queue", why);
  insp_notify_stopping("stopping: draining the queue and flushing results");
  if (d->pipe)
    insp_pipeline_stop(d->pipe, TRUE);
  fail_waiting_triggers(d, "the daemon is stopping");

  /* Flush: wait (bounded) until the broker acknowledged everything, while the
   * broker is there; what remains stays spooled for the next start. */
  gint64 deadline = g_get_monotonic_time() + FLUSH_TIMEOUT_US;
  while (d->mqtt) {
    InspMqttStats ms = {0};
    insp_mqtt_get_stats(d->mqtt, &ms);
    guint pending = ms.spooled;
    if (pending == 0 || !ms.connected || g_get_monotonic_time() > deadline) {
      if (pending)
        g_message("%u results stay spooled for the next start", pending);
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

/* A folder from the config that cannot be used at start: the message names
 * the key to change, as well as the folder and the reason (in @error). The
 * usual case is a normal user running a config that keeps the packaged
 * /var/lib/inspectd, which only the service's StateDirectory= makes. */
static gboolean
folder_failed(Daemon *d, const char *what, const char *key, const GError *error)
{
  g_autoptr(GError) e = g_error_new(error->domain, error->code,
                                    "the %s (%s) is not usable: %s; set %s to a folder this user "
                                    "can write",
                                    what, key, error->message, key);

  return start_failed(d, "", e);
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

  if (d->demo && (d->demo_line = insp_demo_new(d->opt.demo_size, d->opt.demo_defect_every,
                                               d->opt.demo_fps, &error)) == NULL)
    return start_failed(d, "cannot write the demo line", error);

  d->config = config_load(d, "\ninspectd: ", &error);
  if (d->config == NULL)
    return start_failed(d, "", error);
  d->station = g_strdup(d->config->station.id);
  insp_log_set_station(d->station);
  insp_log_set_level(log_level_from_config(d->config));
  d->state_dir = g_strdup(d->config->station.state_dir);
  if ((d->seq = insp_seq_open(d->state_dir, d->opt.debug_seq_block, &error)) == NULL)
    return folder_failed(d, "state folder", "[station] state_dir", error);

  d->model = model_for_config(d, d->config, &error);
  if (d->model == NULL) {
    /* insp_model_load()'s messages name the file. */
    return start_failed(
        d, d->config->model.path[0] ? "cannot load the model" : "cannot train the demo model",
        error);
  }
  InspInspectParams params;
  params_from_config(d->config, &params);
  d->scorer = insp_model_scorer_new(d->model, &params);
  g_atomic_int_set(&d->masks, (gint)d->config->mqtt.masks);

  if (d->opt.print_decisions)
    insp_outputs_add(d->outputs, insp_output_print_new(stdout));
  if (d->config->mqtt.host[0]) {
    InspOutput *out = mqtt_for_config(d, d->config, &error);
    if (out == NULL && g_error_matches(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_SPOOL))
      return folder_failed(d, "spool folder", "[spool] dir", error);
    if (out == NULL)
      return start_failed(d, "MQTT", error);
    mqtt_output_set(d, out);
  }
  if (d->config->http.listen[0]) {
    d->http_out = insp_output_http_new(d->config, d->station, &error);
    if (d->http_out == NULL && d->demo && d->opt.http_listen == NULL) {
      /* The demo's page is a convenience: a taken port must not stop it. */
      g_warning("demo: no live page: %s (choose a port with --http HOST:PORT)", error->message);
      g_clear_error(&error);
    } else if (d->http_out == NULL) {
      return start_failed(d, "HTTP", error);
    } else {
      insp_outputs_add(d->outputs, d->http_out);
      if (d->demo) {
        printf("inspectd demo: the live page is at %s://%s/ (metrics at /metrics)\n",
               d->config->http.tls_cert[0] ? "https" : "http", d->config->http.listen);
        fflush(stdout);
      }
    }
  }
  if (d->config->archive.dir[0] && d->config->archive.what != INSP_CONFIG_MASKS_NONE) {
    d->archive_out = insp_output_archive_new(d->config, d->station, d->outputs, &error);
    if (d->archive_out == NULL)
      return start_failed(d, "archive", error);
    insp_outputs_add(d->outputs, d->archive_out);
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
  d->mqtt = NULL;
  d->mqtt_out = NULL;
  g_clear_pointer(&d->outputs, insp_outputs_free);
  g_clear_pointer(&d->seq, insp_seq_close);
  g_clear_pointer(&d->scorer, insp_scorer_unref);
  g_clear_pointer(&d->model, insp_model_unref);
  g_clear_pointer(&d->config, insp_config_free);
  g_clear_pointer(&d->demo_line, insp_demo_free);
  g_clear_pointer(&d->loop, g_main_loop_unref);
  g_free(d->station);
  g_free(d->state_dir);
  g_free(d->config_path);
  g_free(d->capture_error);
  g_free(d->broker_lost_reason);
  g_free(d->aspect_checked);
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
  d->started_wall_us = g_get_real_time();
  d->outputs = insp_outputs_new();
  g_mutex_init(&d->stats_lock);
  d->override_t = d->override_pt = NAN;
  d->loop = g_main_loop_new(NULL, FALSE);
  insp_log_init();

  /* Signals are routed to the main loop before anything starts, so an
   * early SIGTERM stops cleanly instead of killing mid-write. */
  d->sig_term = g_unix_signal_add(SIGTERM, on_sigterm, d);
  d->sig_int = g_unix_signal_add(SIGINT, on_sigint, d);
  d->sig_hup = g_unix_signal_add(SIGHUP, on_sighup, d);

  if (g_getenv(INSP_BLAS_REPLACED_ENV) != NULL)
    g_message("OpenBLAS runs its %s kernels: it chose %s, which leaves this CPU's wider "
              "instructions unused, so inspectd set OPENBLAS_CORETYPE=%s (set it in the "
              "environment to choose another)",
              insp_blas_core(), g_getenv(INSP_BLAS_REPLACED_ENV), insp_blas_core());
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
    g_message("%s (seq from %" G_GUINT64_FORMAT ")", ready, insp_seq_peek(d->seq));
    g_info("PatchCore nearest-neighbour search: %s; backbone: %s", insp_nn_search_describe(),
           insp_backbone_describe_kernels());
    insp_notify_ready(ready);
    d->ready = TRUE;
    if (!d->stopping)
      g_main_loop_run(d->loop);
  }
  daemon_cleanup(d);
  return d->exit_status;
}
