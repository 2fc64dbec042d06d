/* The HTTP output: a libsoup 3 server on the daemon's main context that
 * serves what a person or a monitoring system reads off the line.
 *   GET /metrics  Prometheus text format 0.0.4 (README, "Metrics").
 *   GET /healthz  200 and the status as JSON when online; 503 when degraded
 *                 or before the first status.
 * It is an output of the part record: part() counts parts and fills the
 * histograms, status() keeps the last status; requests read both under a
 * short lock, so a slow client never holds up inspection (libsoup writes
 * the response from the main loop).
 *
 * Beyond loopback conf/ requires [http] password_file (basic auth, users
 * compared in constant time) or insecure = true.
 *
 * Threads: part() on the results thread, status() and the server on the
 * main thread; the lock guards the counters. */
#include <errno.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "insp-json.h"
#include "insp-outputs.h"

#define N_LATENCY 12
#define N_SCORE 17
static const double latency_bounds[N_LATENCY] = {0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
                                                 0.1,   0.15, 0.25, 0.5,  1.0,  2.5};
/* Dense around the default threshold 0.5, so that a drift of a line's good
 * parts towards it shows on a dashboard. */
static const double score_bounds[N_SCORE] = {0.1,   0.2,  0.3, 0.35, 0.4, 0.425, 0.45, 0.475, 0.5,
                                             0.525, 0.55, 0.6, 0.7,  0.8, 1.0,   1.5,  2.0};

typedef struct {
  guint64 counts[N_SCORE + 1]; /* cumulative counts are built when written */
  double sum;
  guint64 n;
} Histogram;

typedef struct {
  InspOutput parent;
  SoupServer *server;
  GHashTable *users; /* user -> password */
  char *station;
  gint64 start_real_us;

  GMutex lock;
  guint64 pass, fail;
  Histogram latency, score;
  gboolean have_status;
  InspStatus status; /* .model points into @model */
  char *model;
} HttpOutput;

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

static void
http_part(InspOutput *out, InspPart *part)
{
  HttpOutput *h = (HttpOutput *)out;

  g_mutex_lock(&h->lock);
  if (part->fail)
    h->fail++;
  else
    h->pass++;
  observe(&h->latency, latency_bounds, N_LATENCY, part->latency_ms / 1000.0);
  observe(&h->score, score_bounds, N_SCORE, part->score);
  g_mutex_unlock(&h->lock);
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
  h->have_status = TRUE;
  g_mutex_unlock(&h->lock);
}

static void
http_close(InspOutput *out)
{
  HttpOutput *h = (HttpOutput *)out;

  if (h->server != NULL) {
    soup_server_disconnect(h->server);
    g_object_unref(h->server);
  }
  g_clear_pointer(&h->users, g_hash_table_unref);
  g_free(h->station);
  g_free(h->model);
  g_mutex_clear(&h->lock);
  g_free(h);
}

static const InspOutputClass http_class = {
    .name = "http",
    .part = http_part,
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

static void
append_double(GString *s, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_string_append(s, g_ascii_dtostr(buf, sizeof buf, v));
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

static void
histogram(GString *s, const char *name, const char *help, const Histogram *h, const double *bounds,
          int n_bounds)
{
  guint64 cum = 0;

  metric_head(s, name, "histogram", help);
  for (int i = 0; i < n_bounds; i++) {
    cum += h->counts[i];
    g_string_append_printf(s, "%s_bucket{le=\"", name);
    append_double(s, bounds[i]);
    g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n", cum);
  }
  g_string_append_printf(s, "%s_bucket{le=\"+Inf\"} %" G_GUINT64_FORMAT "\n", name, h->n);
  g_string_append_printf(s, "%s_sum ", name);
  append_double(s, h->sum);
  g_string_append_printf(s, "\n%s_count %" G_GUINT64_FORMAT "\n", name, h->n);
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
  g_autofree char *model = NULL;
  gboolean have;
  guint64 pass, fail;
  Histogram lat, score;

  g_mutex_lock(&h->lock);
  st = h->status;
  model = g_strdup(h->model ? h->model : "");
  have = h->have_status;
  pass = h->pass;
  fail = h->fail;
  lat = h->latency;
  score = h->score;
  g_mutex_unlock(&h->lock);

  metric_head(s, "inspectd_parts_total", "counter", "Parts inspected and published, by verdict.");
  g_string_append_printf(s,
                         "inspectd_parts_total{verdict=\"pass\"} %" G_GUINT64_FORMAT "\n"
                         "inspectd_parts_total{verdict=\"fail\"} %" G_GUINT64_FORMAT "\n",
                         pass, fail);
  histogram(s, "inspectd_inspection_seconds", "Time from capture to verdict, in seconds.", &lat,
            latency_bounds, N_LATENCY);
  histogram(s, "inspectd_score",
            "Normalised image scores of the parts (the default threshold is 0.5).", &score,
            score_bounds, N_SCORE);
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
  metric_u64(s, "inspectd_degraded", "gauge",
             "1 while the daemon runs degraded (camera lost, seq not saved, spool full).",
             have && st.state == INSP_STATE_DEGRADED ? 1 : 0);
  if (have) {
    metric_head(s, "inspectd_threshold", "gauge", "Thresholds in force.");
    g_string_append(s, "inspectd_threshold{kind=\"image\"} ");
    append_double(s, st.threshold);
    g_string_append_c(s, '\n');
    metric_head(s, "inspectd_model_info", "gauge", "The model in use (always 1).");
    g_string_append(s, "inspectd_model_info{model=\"");
    append_label_value(s, model);
    g_string_append(s, "\",station=\"");
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

static void
on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
           gpointer user_data)
{
  HttpOutput *h = user_data;
  const char *method = soup_server_message_get_method(msg);
  char *body = NULL;
  const char *type = "text/plain; charset=utf-8";
  guint code = SOUP_STATUS_OK;

  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL);
    soup_message_headers_append(soup_server_message_get_response_headers(msg), "Allow",
                                "GET, HEAD");
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    body = metrics_text(h);
    type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (strcmp(path, "/healthz") == 0) {
    body = health_json(h, &code);
    type = "application/json";
  } else {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
    soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC,
                                     "not found: try /metrics or /healthz\n", 36);
    return;
  }
  soup_server_message_set_status(msg, code, NULL);
  soup_server_message_set_response(msg, type, SOUP_MEMORY_TAKE, body, strlen(body));
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

InspOutput *
insp_output_http_new(const InspConfig *config, const char *station, GError **error)
{
  g_autofree char *host = NULL;
  int port = 0;
  HttpOutput *h;
  g_autoptr(GInetAddress) addr = NULL;
  g_autoptr(GSocketAddress) sa = NULL;
  gboolean ok;

  g_return_val_if_fail(config != NULL && config->http.listen[0] != '\0', NULL);
  if (!insp_config_parse_listen(config->http.listen, &host, &port)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "[http] listen '%s' is not "
                "HOST:PORT",
                config->http.listen);
    return NULL;
  }
  h = g_new0(HttpOutput, 1);
  h->parent.klass = &http_class;
  g_mutex_init(&h->lock);
  h->station = g_strdup(station ? station : "");
  h->start_real_us = g_get_real_time();
  if (config->http.password_file[0] != '\0' &&
      (h->users = read_users(config->http.password_file, error)) == NULL) {
    http_close(&h->parent);
    return NULL;
  }
  h->server = soup_server_new("server-header", "inspectd", NULL);
  if (h->users != NULL) {
    SoupAuthDomain *domain = soup_auth_domain_basic_new("realm", "inspectd", NULL);
    soup_auth_domain_basic_set_auth_callback(domain, on_basic_auth, h, NULL);
    soup_auth_domain_add_path(domain, "/");
    soup_server_add_auth_domain(h->server, domain);
    g_object_unref(domain);
  }
  soup_server_add_handler(h->server, NULL, on_request, h, NULL);
  if (g_str_equal(host, "localhost")) {
    ok = soup_server_listen_local(h->server, (guint)port, 0, error);
  } else {
    addr = g_inet_address_new_from_string(host);
    if (addr == NULL) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "[http] listen: '%s' is not an IP address (or localhost)", host);
      http_close(&h->parent);
      return NULL;
    }
    sa = g_inet_socket_address_new(addr, (guint16)port);
    ok = soup_server_listen(h->server, sa, 0, error);
  }
  if (!ok) {
    g_prefix_error(error, "[http] listen %s: ", config->http.listen);
    http_close(&h->parent);
    return NULL;
  }
  g_info("http: serving /metrics and /healthz on http://%s/%s", config->http.listen,
         h->users ? " (basic auth)" : "");
  return &h->parent;
}
