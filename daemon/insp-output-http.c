/* The HTTP output: a libsoup 3 server on the daemon's main context that
 * serves what a person or a monitoring system reads off the line.
 *   GET /              the live page (daemon/www/live.html): the last part's
 *                      frame with its heat map and regions, the verdict,
 *                      counters and a chart of recent scores.
 *   GET /live/events   server-sent events feeding the page: at most 4 a
 *                      second, each the latest part and the scores since the
 *                      previous event; a slow client misses parts, never
 *                      queues them.
 *   GET /live/overlay.jpg, /live/frame.jpg   the latest kept part's pictures.
 *   GET /metrics       Prometheus text format 0.0.4 (daemon/README.md, "HTTP: the live page,
 * `/metrics` and `/healthz`"). GET /healthz       200 and the status as JSON when online; 503 when
 *                      degraded or before the first status.
 * It is an output of the part record: part() counts parts, fills the
 * histograms and, a few times a second, keeps a copy of the frame (scaled to
 * at most LIVE_MAX_WIDTH) and its map; status() keeps the last status.
 * Requests read these under a short lock and render (JPEG) on the main
 * thread, so a slow client never holds up inspection.
 *
 * Bounds: at most MAX_STREAMS event streams, request bodies over
 * MAX_REQUEST_BODY refused (413) before they are read; only GET and HEAD.
 * Beyond loopback conf/ requires [http] password_file (basic auth, users
 * compared in constant time) or insecure = true; [http] tls_cert/tls_key
 * serve HTTPS.
 *
 * Threads: part() and wants_images() on the results thread, status() and
 * the server on the main thread; the lock guards everything they share. */
#include <errno.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <math.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "insp-json.h"
#include "insp-outputs.h"
#include "insp-overlay.h"
#include "insp-www.h"

#define N_LATENCY 12
#define N_STAGE 12
#define N_SCORE 17
#define N_HISTORY 300
#define LIVE_MAX_WIDTH 1280
#define LIVE_INTERVAL_MS 250
#define MAX_STREAMS 16
#define MAX_REQUEST_BODY 65536

static const double latency_bounds[N_LATENCY] = {0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
                                                 0.1,   0.15, 0.25, 0.5,  1.0,  2.5};
static const double stage_bounds[N_STAGE] = {0.0005, 0.001, 0.002, 0.004, 0.008, 0.016,
                                             0.032,  0.064, 0.128, 0.256, 0.512, 1.024};
/* Dense around the default threshold 0.5, so that a drift of a line's good
 * parts towards it shows on a dashboard. */
static const double score_bounds[N_SCORE] = {0.1,   0.2,  0.3, 0.35, 0.4, 0.425, 0.45, 0.475, 0.5,
                                             0.525, 0.55, 0.6, 0.7,  0.8, 1.0,   1.5,  2.0};

typedef struct {
  guint64 counts[N_SCORE + 1]; /* per bucket; cumulative counts are built when written */
  double sum;
  guint64 n;
} Histogram;

typedef struct {
  guint64 seq;
  float score;
  gboolean fail;
} HistoryEntry;

/* The latest part kept for the live page, copied off the part record. */
typedef struct {
  guint64 seq;
  char *part_id, *model;
  gboolean fail;
  double score, threshold, latency_ms;
  gint64 capture_time_us;
  int width, height; /* the frame's */
  InspRegion *regions;
  gsize n_regions;
  InspImage *image; /* the frame, scaled to at most LIVE_MAX_WIDTH */
  float *map;
  int map_width, map_height;
  GBytes *overlay_jpeg, *frame_jpeg; /* rendered on first request */
} LiveFrame;

typedef struct {
  InspOutput parent;
  SoupServer *server;
  GHashTable *users; /* user -> password */
  char *station;
  gint64 start_real_us;
  double pixel_threshold; /* for the overlay; updated from the status */
  gboolean tls;
  guint live_timer;
  GPtrArray *streams; /* of Stream, main thread only */

  GMutex lock;
  guint64 pass, fail;
  Histogram latency, score;
  Histogram stage[INSP_PART_N_STAGES];
  gboolean have_status;
  InspStatus status; /* .model points into @model */
  char *model, *detector, *backbone;
  HistoryEntry history[N_HISTORY]; /* ring */
  guint64 n_history;               /* entries ever written */
  LiveFrame *live;                 /* NULL until a part was kept */
  gint64 live_kept_us;             /* monotonic time of the last keep */
  guint n_streams;                 /* streams->len, for the results thread */
} HttpOutput;

typedef struct {
  HttpOutput *h;
  SoupServerMessage *msg;
  guint64 sent_seq; /* the last part sent */
  gboolean started; /* the first event (with all history) went */
} Stream;

static void
live_frame_free(LiveFrame *f)
{
  if (f == NULL)
    return;
  g_free(f->part_id);
  g_free(f->model);
  g_free(f->regions);
  insp_image_free(f->image);
  g_free(f->map);
  g_clear_pointer(&f->overlay_jpeg, g_bytes_unref);
  g_clear_pointer(&f->frame_jpeg, g_bytes_unref);
  g_free(f);
}

static void
observe(Histogram *h, const double *bounds, int n_bounds, double v)
{
  int i = 0;

  while (i < n_bounds && v > bounds[i])
    i++;
  h->counts[i]++;
  h->sum += v;
  h->n++;
}

/* The frame scaled (nearest) to at most LIVE_MAX_WIDTH wide. */
static InspImage *
copy_scaled(const guint8 *rgb, int width, int height, int stride)
{
  int ow = MIN(width, LIVE_MAX_WIDTH);
  int oh = MAX(1, (int)((gint64)height * ow / width));
  InspImage *img = insp_image_new(ow, oh, 3);

  for (int y = 0; y < oh; y++) {
    const guint8 *src = rgb + (gsize)((gint64)y * height / oh) * (gsize)stride;
    guint8 *dst = img->data + (gsize)y * (gsize)img->stride;
    if (ow == width) {
      memcpy(dst, src, (gsize)width * 3);
      continue;
    }
    for (int x = 0; x < ow; x++)
      memcpy(dst + 3 * x, src + 3 * (gsize)((gint64)x * width / ow), 3);
  }
  return img;
}

static gboolean
http_wants_images(InspOutput *out, gboolean fail)
{
  HttpOutput *h = (HttpOutput *)out;
  gint64 now = g_get_monotonic_time();
  /* With a page open a few per second; without, one a second so that a page
   * opened shows a recent part at once. */
  gint64 kept, every;

  (void)fail;
  g_mutex_lock(&h->lock);
  kept = h->live_kept_us;
  every = h->n_streams > 0 ? LIVE_INTERVAL_MS * 1000 / 2 : G_USEC_PER_SEC;
  g_mutex_unlock(&h->lock);
  return kept == 0 || now - kept >= every;
}

static void
http_part(InspOutput *out, InspPart *part)
{
  HttpOutput *h = (HttpOutput *)out;
  LiveFrame *f = NULL, *old = NULL;

  if (part->rgb != NULL && part->width > 0 && part->height > 0) {
    /* Copied outside the lock: the frame goes back to the capture now. */
    f = g_new0(LiveFrame, 1);
    f->seq = part->seq;
    f->part_id = g_strdup(part->part_id);
    f->model = g_strdup(part->model);
    f->fail = part->fail;
    f->score = part->score;
    f->threshold = part->threshold;
    f->latency_ms = part->latency_ms;
    f->capture_time_us = part->capture_time_us;
    f->width = part->width;
    f->height = part->height;
    if (part->n_regions > 0) {
      f->regions = g_memdup2(part->regions, part->n_regions * sizeof(InspRegion));
      f->n_regions = part->n_regions;
    }
    f->image = copy_scaled(part->rgb, part->width, part->height, part->rgb_stride);
    if (part->map != NULL) {
      f->map =
          g_memdup2(part->map, (gsize)part->map_width * (gsize)part->map_height * sizeof(float));
      f->map_width = part->map_width;
      f->map_height = part->map_height;
    }
  }
  g_mutex_lock(&h->lock);
  if (part->fail)
    h->fail++;
  else
    h->pass++;
  observe(&h->latency, latency_bounds, N_LATENCY, part->latency_ms / 1000.0);
  observe(&h->score, score_bounds, N_SCORE, part->score);
  for (int i = 0; i < INSP_PART_N_STAGES; i++)
    observe(&h->stage[i], stage_bounds, N_STAGE, part->stage_ms[i] / 1000.0);
  h->history[h->n_history % N_HISTORY] = (HistoryEntry){part->seq, (float)part->score, part->fail};
  h->n_history++;
  if (f != NULL) {
    old = h->live;
    h->live = f;
    h->live_kept_us = g_get_monotonic_time();
  }
  g_mutex_unlock(&h->lock);
  live_frame_free(old);
}

static void
http_status(InspOutput *out, const InspStatus *status)
{
  HttpOutput *h = (HttpOutput *)out;

  g_mutex_lock(&h->lock);
  g_free(h->model);
  h->model = g_strdup(status->model ? status->model : "");
  h->status = *status;
  h->status.model = h->model;
  g_free(h->detector);
  g_free(h->backbone);
  h->detector = g_strdup(status->detector ? status->detector : "");
  h->backbone = g_strdup(status->backbone ? status->backbone : "");
  h->status.detector = h->detector;
  h->status.backbone = h->backbone;
  h->have_status = TRUE;
  h->pixel_threshold = status->pixel_threshold;
  g_mutex_unlock(&h->lock);
}

static void stream_end(Stream *st);

static void
http_close(InspOutput *out)
{
  HttpOutput *h = (HttpOutput *)out;

  if (h->live_timer)
    g_source_remove(h->live_timer);
  if (h->streams != NULL) {
    while (h->streams->len > 0)
      stream_end(g_ptr_array_index(h->streams, h->streams->len - 1));
    g_ptr_array_unref(h->streams);
  }
  if (h->server != NULL) {
    soup_server_disconnect(h->server);
    g_object_unref(h->server);
  }
  g_clear_pointer(&h->users, g_hash_table_unref);
  live_frame_free(h->live);
  g_free(h->station);
  g_free(h->model);
  g_free(h->detector);
  g_free(h->backbone);
  g_mutex_clear(&h->lock);
  g_free(h);
}

static const InspOutputClass http_class = {
    .name = "http",
    .part = http_part,
    .wants_images = http_wants_images,
    .status = http_status,
    .close = http_close,
};

/* ---- /metrics ---- */

static void
append_label_value(GString *s, const char *v)
{
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      g_string_append_c(s, '\\');
    if (*v == '\n')
      g_string_append(s, "\\n");
    else
      g_string_append_c(s, *v);
  }
}

/* The shortest form that reads back the same (0.005, not 0.0050000000000000001). */
static void
append_double(GString *s, double v)
{
  if (isnan(v))
    g_string_append(s, "NaN");
  else if (isinf(v))
    g_string_append(s, v > 0 ? "+Inf" : "-Inf");
  else
    insp_json_append_number(s, v);
}

static void
metric_head(GString *s, const char *name, const char *type, const char *help)
{
  g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
metric_u64(GString *s, const char *name, const char *type, const char *help, guint64 v)
{
  metric_head(s, name, type, help);
  g_string_append_printf(s, "%s %" G_GUINT64_FORMAT "\n", name, v);
}

static void
metric_double(GString *s, const char *name, const char *type, const char *help, double v)
{
  metric_head(s, name, type, help);
  g_string_append_printf(s, "%s ", name);
  append_double(s, v);
  g_string_append_c(s, '\n');
}

/* The bucket, sum and count lines of one histogram series; @labels is
 * "" or 'key="value",' (with the comma). */
static void
histogram_series(GString *s, const char *name, const char *labels, const Histogram *h,
                 const double *bounds, int n_bounds)
{
  guint64 cum = 0;
  g_autofree char *bare = NULL;

  for (int i = 0; i < n_bounds; i++) {
    cum += h->counts[i];
    g_string_append_printf(s, "%s_bucket{%sle=\"", name, labels);
    append_double(s, bounds[i]);
    g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n", cum);
  }
  g_string_append_printf(s, "%s_bucket{%sle=\"+Inf\"} %" G_GUINT64_FORMAT "\n", name, labels, h->n);
  /* sum and count take the labels without the trailing comma */
  bare = g_strndup(labels, labels[0] ? strlen(labels) - 1 : 0);
  g_string_append_printf(s, bare[0] ? "%s_sum{%s} " : "%s_sum%s ", name, bare);
  append_double(s, h->sum);
  g_string_append_printf(s,
                         bare[0] ? "\n%s_count{%s} %" G_GUINT64_FORMAT "\n"
                                 : "\n%s_count%s %" G_GUINT64_FORMAT "\n",
                         name, bare, h->n);
}

static void
histogram(GString *s, const char *name, const char *help, const Histogram *h, const double *bounds,
          int n_bounds)
{
  metric_head(s, name, "histogram", help);
  histogram_series(s, name, "", h, bounds, n_bounds);
}

static void
process_metrics(GString *s, HttpOutput *h)
{
  struct rusage ru;
  long page = sysconf(_SC_PAGESIZE);
  g_autofree char *statm = NULL;
  guint64 fds = 0;
  g_autoptr(GDir) d = g_dir_open("/proc/self/fd", 0, NULL);

  if (getrusage(RUSAGE_SELF, &ru) == 0)
    metric_double(s, "process_cpu_seconds_total", "counter",
                  "Total user and system CPU time spent in seconds.",
                  (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                      ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6);
  if (g_file_get_contents("/proc/self/statm", &statm, NULL, NULL)) {
    guint64 vsz = 0, rss = 0;
    if (sscanf(statm, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &vsz, &rss) == 2) {
      metric_double(s, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                    (double)vsz * (double)page);
      metric_double(s, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                    (double)rss * (double)page);
    }
  }
  while (d != NULL && g_dir_read_name(d) != NULL)
    fds++;
  if (d != NULL)
    metric_u64(s, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
  metric_double(s, "process_start_time_seconds", "gauge",
                "Start time of the process since unix epoch in seconds.",
                (double)h->start_real_us / 1e6);
}

static char *
metrics_text(HttpOutput *h)
{
  GString *s = g_string_new(NULL);
  InspStatus st;
  g_autofree char *model = NULL, *detector = NULL, *backbone = NULL;
  gboolean have;
  guint64 pass, fail;
  Histogram lat, score, stage[INSP_PART_N_STAGES];

  g_mutex_lock(&h->lock);
  st = h->status;
  model = g_strdup(h->model ? h->model : "");
  detector = g_strdup(h->detector ? h->detector : "");
  backbone = g_strdup(h->backbone ? h->backbone : "");
  have = h->have_status;
  pass = h->pass;
  fail = h->fail;
  lat = h->latency;
  score = h->score;
  memcpy(stage, h->stage, sizeof stage);
  g_mutex_unlock(&h->lock);

  metric_head(s, "inspectd_parts_total", "counter", "Parts inspected and published, by verdict.");
  g_string_append_printf(s,
                         "inspectd_parts_total{verdict=\"pass\"} %" G_GUINT64_FORMAT "\n"
                         "inspectd_parts_total{verdict=\"fail\"} %" G_GUINT64_FORMAT "\n",
                         pass, fail);
  histogram(s, "inspectd_inspection_seconds", "Time from capture to verdict, in seconds.", &lat,
            latency_bounds, N_LATENCY);
  metric_head(s, "inspectd_stage_seconds", "histogram",
              "Time per scoring stage of a part (preprocess, backbone, search, map, regions), in "
              "seconds.");
  for (int i = 0; i < INSP_PART_N_STAGES; i++) {
    g_autofree char *labels = g_strdup_printf("stage=\"%s\",", insp_part_stage_names[i]);
    histogram_series(s, "inspectd_stage_seconds", labels, &stage[i], stage_bounds, N_STAGE);
  }
  histogram(s, "inspectd_score",
            "Normalised image scores of the parts (the default threshold is 0.5).", &score,
            score_bounds, N_SCORE);
  metric_u64(s, "inspectd_frames_total", "counter",
             "Frames inspected (parts decided, pass or fail).", pass + fail);
  metric_u64(s, "inspectd_frames_dropped_total", "counter",
             "Frames dropped by the bounded frame queue.", have ? st.dropped : 0);
  metric_u64(s, "inspectd_frames_rejected_total", "counter",
             "Images refused before inspection (undecodable, too large, wrong format).",
             have ? st.rejected : 0);
  metric_u64(s, "inspectd_triggers_total", "counter", "MQTT triggers accepted.",
             have ? st.triggers : 0);
  metric_u64(s, "inspectd_triggers_timed_out_total", "counter",
             "Triggers answered timeout: no frame came in time.", have ? st.trigger_timeouts : 0);
  metric_u64(s, "inspectd_triggers_failed_total", "counter",
             "Triggers answered with another failure.", have ? st.trigger_failures : 0);
  metric_u64(s, "inspectd_results_dropped_total", "counter",
             "Results a full spool dropped (each announced by a spool_full event).",
             have ? st.spool_dropped_results : 0);
  metric_u64(s, "inspectd_masks_dropped_total", "counter", "Masks a full spool dropped.",
             have ? st.spool_dropped_masks : 0);
  metric_double(s, "inspectd_fps", "gauge", "Frames inspected per second, recently.",
                have ? st.fps : 0.0);
  metric_u64(s, "inspectd_queue_frames", "gauge", "Frames waiting for a worker.",
             have ? st.queue_frames : 0);
  if (have && st.mqtt_connected >= 0) {
    metric_u64(s, "inspectd_mqtt_connected", "gauge", "1 while the MQTT broker is connected.",
               (guint64)st.mqtt_connected);
    metric_u64(s, "inspectd_spool_messages", "gauge",
               "Messages in the spool, not yet acknowledged by the broker.", st.spool_messages);
    metric_u64(s, "inspectd_spool_bytes", "gauge", "Disk the spool takes, in bytes.",
               st.spool_bytes);
  }
  metric_u64(s, "inspectd_degraded", "gauge",
             "1 while the daemon runs degraded (camera lost, seq not saved, spool full).",
             have && st.state == INSP_STATE_DEGRADED ? 1 : 0);
  if (have) {
    metric_head(s, "inspectd_threshold", "gauge", "Thresholds in force.");
    g_string_append(s, "inspectd_threshold{kind=\"image\"} ");
    append_double(s, st.threshold);
    g_string_append(s, "\ninspectd_threshold{kind=\"pixel\"} ");
    append_double(s, st.pixel_threshold);
    g_string_append_c(s, '\n');
    metric_head(s, "inspectd_model_info", "gauge", "The model in use (always 1).");
    g_string_append(s, "inspectd_model_info{model=\"");
    append_label_value(s, model);
    g_string_append(s, "\",detector=\"");
    append_label_value(s, detector);
    g_string_append(s, "\",backbone=\"");
    append_label_value(s, backbone);
    g_string_append_printf(s, "\",input_size=\"%d\",station=\"", st.input_size);
    append_label_value(s, h->station);
    g_string_append(s, "\"} 1\n");
  }
  process_metrics(s, h);
  return g_string_free(s, FALSE);
}

/* ---- /healthz ---- */

static char *
health_json(HttpOutput *h, guint *code)
{
  g_autoptr(JsonObject) o = json_object_new();
  InspStatus st;
  gboolean have;
  g_autofree char *model = NULL;

  g_mutex_lock(&h->lock);
  st = h->status;
  have = h->have_status;
  model = g_strdup(h->model ? h->model : "");
  g_mutex_unlock(&h->lock);
  json_object_set_string_member(o, "station", h->station);
  if (!have) {
    json_object_set_string_member(o, "state", "starting");
    *code = SOUP_STATUS_SERVICE_UNAVAILABLE;
  } else {
    json_object_set_string_member(o, "state", insp_state_to_string(st.state));
    json_object_set_string_member(o, "model", model);
    json_object_set_double_member(o, "threshold", st.threshold);
    json_object_set_double_member(o, "fps", st.fps);
    json_object_set_int_member(o, "frames", (gint64)st.frames);
    json_object_set_int_member(o, "pass", (gint64)st.pass);
    json_object_set_int_member(o, "fail", (gint64)st.fail);
    json_object_set_int_member(o, "dropped", (gint64)st.dropped);
    *code = st.state == INSP_STATE_ONLINE ? SOUP_STATUS_OK : SOUP_STATUS_SERVICE_UNAVAILABLE;
  }
  {
    g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
    return insp_json_to_data(root, NULL);
  }
}

/* ---- the live page ---- */

/* One event of /live/events: the latest part, the counters, and the scores
 * after @since (all kept history when @since is 0). */
static char *
live_event_json(HttpOutput *h, guint64 since, guint64 *last_seq)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(JsonNode) root = NULL;
  InspStatus st;
  gboolean have;
  guint64 pass, fail, n_hist;
  HistoryEntry *hist = g_new(HistoryEntry, N_HISTORY);
  LiveFrame copy = {0};
  gboolean have_live;

  g_mutex_lock(&h->lock);
  st = h->status;
  have = h->have_status;
  pass = h->pass;
  fail = h->fail;
  n_hist = h->n_history;
  memcpy(hist, h->history, sizeof(HistoryEntry) * N_HISTORY);
  have_live = h->live != NULL;
  if (have_live) {
    copy = *h->live;
    copy.part_id = g_strdup(h->live->part_id);
    copy.model = g_strdup(h->live->model);
    copy.regions = g_memdup2(h->live->regions, h->live->n_regions * sizeof(InspRegion));
  }
  g_mutex_unlock(&h->lock);

  json_builder_begin_object(b);
  json_builder_set_member_name(b, "station");
  json_builder_add_string_value(b, h->station);
  json_builder_set_member_name(b, "state");
  json_builder_add_string_value(b, have ? insp_state_to_string(st.state) : "starting");
  json_builder_set_member_name(b, "pass");
  json_builder_add_int_value(b, (gint64)pass);
  json_builder_set_member_name(b, "fail");
  json_builder_add_int_value(b, (gint64)fail);
  json_builder_set_member_name(b, "dropped");
  json_builder_add_int_value(b, have ? (gint64)st.dropped : 0);
  json_builder_set_member_name(b, "rejected");
  json_builder_add_int_value(b, have ? (gint64)st.rejected : 0);
  json_builder_set_member_name(b, "fps");
  json_builder_add_double_value(b, have ? st.fps : 0.0);
  json_builder_set_member_name(b, "threshold");
  json_builder_add_double_value(b, have ? st.threshold : 0.5);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, have && st.model ? st.model : copy.model ? copy.model : "");
  if (have_live) {
    json_builder_set_member_name(b, "part");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "seq");
    json_builder_add_int_value(b, (gint64)copy.seq);
    json_builder_set_member_name(b, "part_id");
    json_builder_add_string_value(b, copy.part_id);
    json_builder_set_member_name(b, "verdict");
    json_builder_add_string_value(b, copy.fail ? "fail" : "pass");
    json_builder_set_member_name(b, "score");
    json_builder_add_double_value(b, copy.score);
    json_builder_set_member_name(b, "threshold");
    json_builder_add_double_value(b, copy.threshold);
    json_builder_set_member_name(b, "latency_ms");
    json_builder_add_double_value(b, copy.latency_ms);
    json_builder_set_member_name(b, "capture_time_ms");
    json_builder_add_int_value(b, copy.capture_time_us / 1000);
    json_builder_set_member_name(b, "width");
    json_builder_add_int_value(b, copy.width);
    json_builder_set_member_name(b, "height");
    json_builder_add_int_value(b, copy.height);
    json_builder_set_member_name(b, "regions");
    json_builder_begin_array(b);
    for (gsize i = 0; i < copy.n_regions; i++) {
      const InspRegion *r = &copy.regions[i];
      json_builder_begin_array(b);
      json_builder_add_int_value(b, r->x);
      json_builder_add_int_value(b, r->y);
      json_builder_add_int_value(b, r->w);
      json_builder_add_int_value(b, r->h);
      json_builder_end_array(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
  }
  /* Scores since the last event, oldest first, [seq, score, fail]. */
  json_builder_set_member_name(b, "scores");
  json_builder_begin_array(b);
  guint64 first = n_hist > N_HISTORY ? n_hist - N_HISTORY : 0;
  guint64 newest = 0;
  for (guint64 i = first; i < n_hist; i++) {
    const HistoryEntry *e = &hist[i % N_HISTORY];
    newest = e->seq;
    if (since != 0 && e->seq <= since)
      continue;
    json_builder_begin_array(b);
    json_builder_add_int_value(b, (gint64)e->seq);
    json_builder_add_double_value(b, e->score);
    json_builder_add_boolean_value(b, e->fail);
    json_builder_end_array(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  *last_seq = newest;
  g_free(hist);
  g_free(copy.part_id);
  g_free(copy.model);
  g_free(copy.regions);
  root = json_builder_get_root(b);
  return insp_json_to_data(root, NULL);
}

static void
stream_send(Stream *st)
{
  guint64 last = 0;
  g_autofree char *json = live_event_json(st->h, st->started ? st->sent_seq : 0, &last);
  g_autofree char *chunk = NULL;
  SoupMessageBody *body = soup_server_message_get_response_body(st->msg);

  if (st->started && last == st->sent_seq)
    return; /* nothing new */
  chunk = g_strdup_printf("data: %s\n\n", json);
  soup_message_body_append(body, SOUP_MEMORY_TAKE, g_steal_pointer(&chunk), strlen(json) + 8);
  soup_server_message_unpause(st->msg);
  st->sent_seq = last;
  st->started = TRUE;
}

static void
stream_forget(Stream *st)
{
  HttpOutput *h = st->h;

  g_signal_handlers_disconnect_by_data(st->msg, st);
  g_ptr_array_remove(h->streams, st);
  g_mutex_lock(&h->lock);
  h->n_streams = h->streams->len;
  g_mutex_unlock(&h->lock);
  g_object_unref(st->msg);
  g_free(st);
}

static void
on_stream_finished(SoupServerMessage *msg, gpointer data)
{
  (void)msg;
  stream_forget(data);
}

/* The server goes (close): the stream's response ends. */
static void
stream_end(Stream *st)
{
  SoupServerMessage *msg = g_object_ref(st->msg);

  stream_forget(st);
  soup_message_body_complete(soup_server_message_get_response_body(msg));
  soup_server_message_unpause(msg);
  g_object_unref(msg);
}

static gboolean
live_tick(gpointer data)
{
  HttpOutput *h = data;

  for (guint i = 0; i < h->streams->len; i++)
    stream_send(g_ptr_array_index(h->streams, i));
  return G_SOURCE_CONTINUE;
}

static void
serve_events(HttpOutput *h, SoupServerMessage *msg)
{
  SoupMessageHeaders *hdrs = soup_server_message_get_response_headers(msg);
  Stream *st;

  if (h->streams->len >= MAX_STREAMS) {
    soup_server_message_set_status(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, NULL);
    soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC,
                                     "too many live pages open\n", 25);
    return;
  }
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_message_headers_set_encoding(hdrs, SOUP_ENCODING_CHUNKED);
  soup_message_headers_set_content_type(hdrs, "text/event-stream", NULL);
  soup_message_headers_replace(hdrs, "Cache-Control", "no-store");
  st = g_new0(Stream, 1);
  st->h = h;
  st->msg = g_object_ref(msg);
  g_signal_connect(msg, "finished", G_CALLBACK(on_stream_finished), st);
  g_ptr_array_add(h->streams, st);
  g_mutex_lock(&h->lock);
  h->n_streams = h->streams->len;
  g_mutex_unlock(&h->lock);
  /* The client reconnects after 2 s when the stream breaks. */
  soup_message_body_append(soup_server_message_get_response_body(msg), SOUP_MEMORY_STATIC,
                           "retry: 2000\n\n", 13);
  stream_send(st);
}

/* The latest kept part's overlay or frame as JPEG, rendered once. */
static GBytes *
live_jpeg(HttpOutput *h, gboolean overlay, guint64 *seq)
{
  GBytes *jpeg = NULL;
  g_autoptr(InspImage) img = NULL;
  LiveFrame *f;

  g_mutex_lock(&h->lock);
  f = h->live;
  if (f == NULL) {
    g_mutex_unlock(&h->lock);
    return NULL;
  }
  *seq = f->seq;
  jpeg = overlay ? f->overlay_jpeg : f->frame_jpeg;
  if (jpeg != NULL) {
    g_bytes_ref(jpeg);
    g_mutex_unlock(&h->lock);
    return jpeg;
  }
  /* Rendered under the lock: a few ms, and part() only takes it to swap. */
  if (overlay) {
    /* Regions are in frame pixels; the kept image may be scaled. */
    g_autofree InspRegion *regions = g_memdup2(f->regions, f->n_regions * sizeof(InspRegion));
    for (gsize i = 0; i < f->n_regions; i++) {
      regions[i].x = (int)((gint64)regions[i].x * f->image->width / f->width);
      regions[i].y = (int)((gint64)regions[i].y * f->image->height / f->height);
      regions[i].w = (int)((gint64)regions[i].w * f->image->width / f->width);
      regions[i].h = (int)((gint64)regions[i].h * f->image->height / f->height);
    }
    img = insp_overlay_render(f->image->data, f->image->width, f->image->height, f->image->stride,
                              f->map, f->map_width, f->map_height, (float)h->pixel_threshold,
                              regions, f->n_regions, 0);
    jpeg = f->overlay_jpeg = insp_image_encode_jpeg(img, 85, NULL);
  } else {
    jpeg = f->frame_jpeg = insp_image_encode_jpeg(f->image, 85, NULL);
  }
  if (jpeg != NULL)
    g_bytes_ref(jpeg);
  g_mutex_unlock(&h->lock);
  return jpeg;
}

static void
serve_jpeg(HttpOutput *h, SoupServerMessage *msg, gboolean overlay)
{
  guint64 seq = 0;
  g_autoptr(GBytes) jpeg = live_jpeg(h, overlay, &seq);
  SoupMessageHeaders *hdrs = soup_server_message_get_response_headers(msg);
  char seq_s[32];

  if (jpeg == NULL) {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
    soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC, "no part yet\n", 12);
    return;
  }
  g_snprintf(seq_s, sizeof seq_s, "%" G_GUINT64_FORMAT, seq);
  soup_message_headers_replace(hdrs, "X-Inspectd-Seq", seq_s);
  soup_message_headers_replace(hdrs, "Cache-Control", "no-store");
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(msg, "image/jpeg", SOUP_MEMORY_COPY,
                                   g_bytes_get_data(jpeg, NULL), g_bytes_get_size(jpeg));
}

static void
serve_page(SoupServerMessage *msg)
{
  g_autoptr(GBytes) page = g_resource_lookup_data(
      insp_www_get_resource(), "/org/inspectd/www/live.html", G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  SoupMessageHeaders *hdrs = soup_server_message_get_response_headers(msg);

  g_assert(page != NULL);
  /* Everything is inline: nothing loads from elsewhere. */
  soup_message_headers_replace(hdrs, "Content-Security-Policy",
                               "default-src 'self'; script-src 'unsafe-inline'; "
                               "style-src 'unsafe-inline'; img-src 'self'");
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(msg, "text/html; charset=utf-8", SOUP_MEMORY_COPY,
                                   g_bytes_get_data(page, NULL), g_bytes_get_size(page));
}

/* ---- auth ---- */

static gboolean
equal_ct(const char *a, const char *b)
{
  gsize la = strlen(a), lb = strlen(b), n = MAX(la, lb);
  guint8 diff = la != lb;

  for (gsize i = 0; i < n; i++)
    diff |= (guint8)((i < la ? a[i] : 0) ^ (i < lb ? b[i] : 0));
  return diff == 0;
}

static gboolean
on_basic_auth(SoupAuthDomain *domain, SoupServerMessage *msg, const char *username,
              const char *password, gpointer user_data)
{
  HttpOutput *h = user_data;
  const char *want = g_hash_table_lookup(h->users, username);
  /* The same work whether or not the user exists. */
  gboolean ok = equal_ct(want ? want : "\x01no such user\x01", password);

  return want != NULL && ok;
}

static GHashTable *
read_users(const char *path, GError **error)
{
  g_autofree char *text = NULL;
  g_auto(GStrv) lines = NULL;
  GHashTable *users;

  if (!g_file_get_contents(path, &text, NULL, error)) {
    g_prefix_error(error, "[http] password_file: ");
    return NULL;
  }
  users = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    char *colon = strchr(*l, ':');
    g_strchomp(*l);
    if (**l == '\0' || **l == '#' || colon == NULL || colon == *l)
      continue;
    g_hash_table_insert(users, g_strndup(*l, (gsize)(colon - *l)), g_strdup(colon + 1));
  }
  explicit_bzero(text, strlen(text));
  if (g_hash_table_size(users) == 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "[http] password_file %s has no 'user:password' line", path);
    g_hash_table_unref(users);
    return NULL;
  }
  return users;
}

static void
on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
           gpointer user_data)
{
  HttpOutput *h = user_data;
  const char *method = soup_server_message_get_method(msg);
  char *body = NULL;
  const char *type = "text/plain; charset=utf-8";
  guint code = SOUP_STATUS_OK;

  (void)server;
  (void)query;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL);
    soup_message_headers_append(soup_server_message_get_response_headers(msg), "Allow",
                                "GET, HEAD");
    return;
  }
  if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
    serve_page(msg);
    return;
  } else if (strcmp(path, "/live/events") == 0) {
    serve_events(h, msg);
    return;
  } else if (strcmp(path, "/live/overlay.jpg") == 0 || strcmp(path, "/live/frame.jpg") == 0) {
    serve_jpeg(h, msg, strcmp(path, "/live/overlay.jpg") == 0);
    return;
  } else if (strcmp(path, "/metrics") == 0) {
    body = metrics_text(h);
    type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (strcmp(path, "/healthz") == 0) {
    body = health_json(h, &code);
    type = "application/json";
  } else {
    static const char nf[] = "not found: try /, /metrics or /healthz\n";
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
    soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC, nf, sizeof nf - 1);
    return;
  }
  soup_server_message_set_status(msg, code, NULL);
  soup_server_message_set_response(msg, type, SOUP_MEMORY_TAKE, body, strlen(body));
}

/* An early handler: after the headers, before any body is read. No body is
 * kept (nothing here takes one), and one larger than MAX_REQUEST_BODY is
 * refused with 413, before it is sent when the client asked "Expect:
 * 100-continue". */
static void
on_early_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                 gpointer user_data)
{
  SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);

  (void)server;
  (void)path;
  (void)query;
  (void)user_data;
  /* Nothing here reads a body: whatever comes is discarded as it arrives. */
  soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
  if (soup_message_headers_get_encoding(req) == SOUP_ENCODING_CHUNKED ||
      soup_message_headers_get_content_length(req) > MAX_REQUEST_BODY)
    soup_server_message_set_status(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, NULL);
}

InspOutput *
insp_output_http_new(const InspConfig *config, const char *station, GError **error)
{
  g_autofree char *host = NULL;
  int port = 0;
  HttpOutput *h;
  g_autoptr(GInetAddress) addr = NULL;
  g_autoptr(GSocketAddress) sa = NULL;
  g_autoptr(GTlsCertificate) cert = NULL;
  SoupServerListenOptions listen_opts = 0;
  gboolean ok;

  g_return_val_if_fail(config != NULL && config->http.listen[0] != '\0', NULL);
  if (!insp_config_parse_listen(config->http.listen, &host, &port)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "[http] listen '%s' is not "
                "HOST:PORT",
                config->http.listen);
    return NULL;
  }
  if (config->http.tls_cert[0] != '\0') {
    cert = g_tls_certificate_new_from_files(config->http.tls_cert, config->http.tls_key, error);
    if (cert == NULL) {
      g_prefix_error(error, "[http] tls_cert %s / tls_key %s: ", config->http.tls_cert,
                     config->http.tls_key);
      return NULL;
    }
    listen_opts |= SOUP_SERVER_LISTEN_HTTPS;
  }
  h = g_new0(HttpOutput, 1);
  h->parent.klass = &http_class;
  g_mutex_init(&h->lock);
  h->station = g_strdup(station ? station : "");
  h->start_real_us = g_get_real_time();
  h->pixel_threshold = config->inspection.pixel_threshold;
  h->streams = g_ptr_array_new();
  h->tls = cert != NULL;
  if (config->http.password_file[0] != '\0' &&
      (h->users = read_users(config->http.password_file, error)) == NULL) {
    http_close(&h->parent);
    return NULL;
  }
  h->server = soup_server_new("server-header", "inspectd", "tls-certificate", cert, NULL);
  if (h->users != NULL) {
    SoupAuthDomain *domain = soup_auth_domain_basic_new("realm", "inspectd", NULL);
    soup_auth_domain_basic_set_auth_callback(domain, on_basic_auth, h, NULL);
    soup_auth_domain_add_path(domain, "/");
    soup_server_add_auth_domain(h->server, domain);
    g_object_unref(domain);
  }
  soup_server_add_early_handler(h->server, NULL, on_early_request, h, NULL);
  soup_server_add_handler(h->server, NULL, on_request, h, NULL);
  if (g_str_equal(host, "localhost")) {
    ok = soup_server_listen_local(h->server, (guint)port, listen_opts, error);
  } else {
    addr = g_inet_address_new_from_string(host);
    if (addr == NULL) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "[http] listen: '%s' is not an IP address (or localhost)", host);
      http_close(&h->parent);
      return NULL;
    }
    sa = g_inet_socket_address_new(addr, (guint16)port);
    ok = soup_server_listen(h->server, sa, listen_opts, error);
  }
  if (!ok) {
    g_prefix_error(error, "[http] listen %s: ", config->http.listen);
    http_close(&h->parent);
    return NULL;
  }
  h->live_timer = g_timeout_add(LIVE_INTERVAL_MS, live_tick, h);
  g_info("http: the live page, /metrics and /healthz on %s://%s/%s", h->tls ? "https" : "http",
         config->http.listen, h->users ? " (basic auth)" : "");
  return &h->parent;
}
