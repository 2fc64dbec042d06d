/* The config schema, the loader of a key file and its drop-ins, validation
 * with one message per problem, deep copy and free, and the diff of two
 * configs into components.
 *
 * DESIGN: the table `schema` below is the only place a key is described:
 * section, name, type, default (as file text, parsed by the same code as a
 * file), range or allowed values, the component a change touches (hot when in
 * INSP_CONFIG_CHANGE_HOT) and the field of InspConfig it fills (by offset).
 * Loading starts from the defaults, then reads each file in order; every
 * value of every file is checked where it is written (so a bad value in an
 * early file is reported even if a later file replaces it), the last one
 * wins, and the file (and line) that set each key is remembered so that the
 * rules checked on the merged result (cross-key rules, readable files) name
 * the right file. A problem never stops the load: all are collected, and a
 * config with any problem is not returned.
 *
 * Invariants: a returned InspConfig has every string field non-NULL, paths
 * absolute, enums within their values, drop and workers resolved. Limits:
 * files up to 1 MiB, 256 drop-ins, 20 syntax errors per file, values up to
 * 64 KiB, 64 camera controls.
 *
 * Threads: any thread may call these functions; they share no state (the
 * daemon calls them from its main loop). */
#include "insp-conf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-config-error-quark, insp_config_error)
/* clang-format on */

#define MAX_FILE_SIZE (1024 * 1024)
#define MAX_DROPINS 256
#define MAX_SYNTAX_ERRORS 20
#define MAX_VALUE_LEN (64 * 1024)

typedef enum {
  T_STRING,
  T_BOOL,
  T_INT,
  T_DOUBLE,
  T_ENUM,
  T_PATH,
  T_LIST, /* [camera] controls */
  T_RECT, /* [inspection] roi */
} KeyType;

typedef struct {
  const char *name;
  int value;
} Choice;

/* An extra check of a non-empty string value: returns FALSE and writes why
 * into @reason. */
typedef gboolean (*CheckFunc)(const char *value, GString *reason);

typedef struct {
  InspConfigKeyInfo info;
  KeyType type;
  gsize offset;
  double min, max;       /* T_INT, T_DOUBLE */
  const Choice *choices; /* T_ENUM, NULL-terminated */
  CheckFunc check;       /* T_STRING, T_PATH */
} Key;

#define DROP_AUTO (-1)

static const Choice source_choices[] = {
    {"v4l2", INSP_CONFIG_CAMERA_SOURCE_V4L2},
    {"aravis", INSP_CONFIG_CAMERA_SOURCE_ARAVIS},
    {"rtsp", INSP_CONFIG_CAMERA_SOURCE_RTSP},
    {"files", INSP_CONFIG_CAMERA_SOURCE_FILES},
    {"test", INSP_CONFIG_CAMERA_SOURCE_TEST},
    {"pipeline", INSP_CONFIG_CAMERA_SOURCE_PIPELINE},
    {NULL, 0},
};
static const Choice drop_choices[] = {
    {"never", INSP_CONFIG_DROP_NEVER},
    {"oldest", INSP_CONFIG_DROP_OLDEST},
    {"auto", DROP_AUTO},
    {NULL, 0},
};
static const Choice trigger_choices[] = {
    {"free", INSP_CONFIG_TRIGGER_MODE_FREE},
    {"mqtt", INSP_CONFIG_TRIGGER_MODE_MQTT},
    {NULL, 0},
};
static const Choice masks_choices[] = {
    {"fail", INSP_CONFIG_MASKS_FAIL},
    {"all", INSP_CONFIG_MASKS_ALL},
    {"none", INSP_CONFIG_MASKS_NONE},
    {NULL, 0},
};
/* true/false and their spellings are the old boolean key's values. */
static const Choice commands_choices[] = {
    {"none", INSP_CONFIG_COMMANDS_NONE}, {"trigger", INSP_CONFIG_COMMANDS_TRIGGER},
    {"all", INSP_CONFIG_COMMANDS_ALL},   {"true", INSP_CONFIG_COMMANDS_ALL},
    {"yes", INSP_CONFIG_COMMANDS_ALL},   {"on", INSP_CONFIG_COMMANDS_ALL},
    {"1", INSP_CONFIG_COMMANDS_ALL},     {"false", INSP_CONFIG_COMMANDS_NONE},
    {"no", INSP_CONFIG_COMMANDS_NONE},   {"off", INSP_CONFIG_COMMANDS_NONE},
    {"0", INSP_CONFIG_COMMANDS_NONE},    {NULL, 0},
};
static const Choice sync_choices[] = {
    {"batch", INSP_CONFIG_SPOOL_SYNC_BATCH},
    {"always", INSP_CONFIG_SPOOL_SYNC_ALWAYS},
    {"never", INSP_CONFIG_SPOOL_SYNC_NEVER},
    {NULL, 0},
};
static const Choice level_choices[] = {
    {"error", INSP_CONFIG_LOG_LEVEL_ERROR},   {"warning", INSP_CONFIG_LOG_LEVEL_WARNING},
    {"notice", INSP_CONFIG_LOG_LEVEL_NOTICE}, {"info", INSP_CONFIG_LOG_LEVEL_INFO},
    {"debug", INSP_CONFIG_LOG_LEVEL_DEBUG},   {NULL, 0},
};

static gboolean check_name(const char *value, GString *reason);
static gboolean check_topic_prefix(const char *value, GString *reason);
static gboolean check_token(const char *value, GString *reason);
static gboolean check_listen(const char *value, GString *reason);
static gboolean check_uri(const char *value, GString *reason);

#define C_INSPECTION INSP_CONFIG_CHANGE_INSPECTION
#define C_MASKS INSP_CONFIG_CHANGE_MASKS
#define C_LOG INSP_CONFIG_CHANGE_LOG
#define C_MODEL INSP_CONFIG_CHANGE_MODEL
#define C_WORKERS INSP_CONFIG_CHANGE_WORKERS
#define C_CAMERA INSP_CONFIG_CHANGE_CAMERA
#define C_TRIGGER INSP_CONFIG_CHANGE_TRIGGER
#define C_MQTT INSP_CONFIG_CHANGE_MQTT
#define C_SPOOL INSP_CONFIG_CHANGE_SPOOL
#define C_STATION INSP_CONFIG_CHANGE_STATION
#define C_HTTP INSP_CONFIG_CHANGE_HTTP
#define C_ARCHIVE INSP_CONFIG_CHANGE_ARCHIVE

#define KEY(sec, name, ty, tyname, field, def, allowed, chg, doc)                                  \
  .info = {sec, name, tyname, def, allowed, ((chg)&INSP_CONFIG_CHANGE_HOT) != 0, chg, doc},        \
  .type = ty, .offset = offsetof(InspConfig, field)

/* The schema. Keep it in the order of conf/inspectd.conf (a test checks that
 * the shipped file lists every key with its default). */
static const Key schema[] = {
    {KEY("station", "id", T_STRING, "string", station.id, "", "letters, digits, '.', '_', '-'",
         C_STATION | C_MQTT, "station name in topics; empty = this machine's host name"),
     .check = check_name},
    {KEY("station", "state_dir", T_PATH, "path", station.state_dir, "/var/lib/inspectd", "",
         C_STATION, "state folder: the seq counter and the threshold override live here")},

    {KEY("camera", "source", T_ENUM, "enum", camera.source, "test",
         "v4l2, aravis, rtsp, files, test, pipeline", C_CAMERA,
         "where frames come from; test = the built-in synthetic part line"),
     .choices = source_choices},
    {KEY("camera", "device", T_PATH, "path", camera.device, "/dev/video0", "", C_CAMERA,
         "v4l2: the video device")},
    {KEY("camera", "camera", T_STRING, "string", camera.camera, "", "", C_CAMERA,
         "aravis: the GenICam camera name; empty = the first camera found")},
    {KEY("camera", "uri", T_STRING, "string", camera.uri, "", "an rtsp:// URI", C_CAMERA,
         "rtsp: the stream URI (required for source = rtsp)"),
     .check = check_uri},
    {KEY("camera", "location", T_PATH, "path", camera.location, "", "a glob", C_CAMERA,
         "files: glob of the images to replay, in name order (required for source = files)")},
    {KEY("camera", "loop", T_BOOL, "bool", camera.loop, "false", "true, false", C_CAMERA,
         "files, test: start again after the last image")},
    {KEY("camera", "fps", T_DOUBLE, "double", camera.fps, "0", "0 <= x <= 1000", C_CAMERA,
         "frame rate; 0 = the camera's own, or as fast as the workers take frames for files/test"),
     .min = 0, .max = 1000},
    {KEY("camera", "pipeline", T_STRING, "string", camera.pipeline, "", "", C_CAMERA,
         "pipeline: a gst-launch source description; inspectd appends conversion and its sink")},
    {KEY("camera", "controls", T_LIST, "list", camera.controls, "", "name=value, comma-separated",
         C_CAMERA,
         "v4l2/aravis: controls set at every start, e.g. "
         "exposure_time_absolute=300,auto_exposure=manual_mode")},
    {KEY("camera", "width", T_INT, "int", camera.width, "0", "0 <= x <= 16384", C_CAMERA,
         "frame width in pixels; 0 = the camera's own (set width and height together)"),
     .min = 0, .max = 16384},
    {KEY("camera", "height", T_INT, "int", camera.height, "0", "0 <= x <= 16384", C_CAMERA,
         "frame height in pixels; 0 = the camera's own"),
     .min = 0, .max = 16384},
    {KEY("camera", "max_pixels", T_INT, "int", camera.max_pixels, "16777216", "1 <= x <= 67108864",
         C_CAMERA,
         "larger frames and image files are rejected (counted, logged); bounds memory: about "
         "(queue + 1) x 3 + workers x 9 bytes per pixel"),
     .min = 1, .max = 67108864},
    {KEY("camera", "drop", T_ENUM, "enum", camera.drop, "auto", "never, oldest, auto", C_CAMERA,
         "queue full: never = wait, oldest = drop the oldest frame; auto = oldest for live "
         "cameras, never for files/test"),
     .choices = drop_choices},

    {KEY("trigger", "mode", T_ENUM, "enum", trigger.mode, "free", "free, mqtt", C_TRIGGER,
         "free = inspect every frame; mqtt = inspect the next frame after a cmd/trigger"),
     .choices = trigger_choices},
    {KEY("trigger", "timeout_ms", T_INT, "int", trigger.timeout_ms, "1000", "1 <= x <= 600000",
         C_TRIGGER, "mqtt: how long a trigger waits for its frame before it fails"),
     .min = 1, .max = 600000},

    {KEY("model", "path", T_PATH, "path", model.path, "", "a readable file", C_MODEL,
         "model file from inspectd train; empty = the demo model (source = test only)")},
    {KEY("model", "workers", T_INT, "int", model.workers, "0", "0 <= x <= 64", C_WORKERS,
         "inspector threads; 0 = one per CPU"),
     .min = 0, .max = 64},
    {KEY("model", "blas_threads", T_INT, "int", model.blas_threads, "1", "1 <= x <= 64", C_WORKERS,
         "OpenBLAS threads of the process, one pool all workers share (keep 1 when workers > 1)"),
     .min = 1, .max = 64},

    {KEY("inspection", "threshold", T_DOUBLE, "double", inspection.threshold, "0.5",
         "0 <= x <= 100", C_INSPECTION, "a part fails when its score >= threshold (normalised)"),
     .min = 0, .max = 100},
    {KEY("inspection", "pixel_threshold", T_DOUBLE, "double", inspection.pixel_threshold, "0.5",
         "0 <= x <= 100", C_INSPECTION, "a pixel is defective when its score >= pixel_threshold"),
     .min = 0, .max = 100},
    {KEY("inspection", "threshold_min", T_DOUBLE, "double", inspection.threshold_min, "0.25",
         "0 <= x <= 100", C_INSPECTION,
         "lowest threshold a command may set (0.25: half the fitted one); the files are not "
         "bounded"),
     .min = 0, .max = 100},
    {KEY("inspection", "threshold_max", T_DOUBLE, "double", inspection.threshold_max, "1",
         "0 <= x <= 100", C_INSPECTION,
         "highest threshold a command may set (1: twice the fitted one)"),
     .min = 0, .max = 100},
    {KEY("inspection", "pixel_threshold_min", T_DOUBLE, "double", inspection.pixel_threshold_min,
         "0.25", "0 <= x <= 100", C_INSPECTION, "lowest pixel_threshold a command may set"),
     .min = 0, .max = 100},
    {KEY("inspection", "pixel_threshold_max", T_DOUBLE, "double", inspection.pixel_threshold_max,
         "1", "0 <= x <= 100", C_INSPECTION, "highest pixel_threshold a command may set"),
     .min = 0, .max = 100},
    {KEY("inspection", "min_region_area", T_INT, "int", inspection.min_region_area, "16",
         "0 <= x <= 100000000", C_INSPECTION,
         "defect regions smaller than this (pixels) are ignored"),
     .min = 0, .max = 100000000},
    {KEY("inspection", "roi", T_RECT, "rect", inspection.roi, "", "x,y,w,h with w, h > 0",
         C_INSPECTION, "region of interest in image pixels; empty = the whole image")},

    {KEY("mqtt", "host", T_STRING, "string", mqtt.host, "localhost", "", C_MQTT,
         "broker host name or address; empty = MQTT disabled"),
     .check = check_token},
    {KEY("mqtt", "port", T_INT, "int", mqtt.port, "1883", "1 <= x <= 65535", C_MQTT,
         "broker port (8883 is usual with TLS)"),
     .min = 1, .max = 65535},
    {KEY("mqtt", "client_id", T_STRING, "string", mqtt.client_id, "", "", C_MQTT,
         "MQTT client id; empty = inspectd-<station id>"),
     .check = check_token},
    {KEY("mqtt", "username", T_STRING, "string", mqtt.username, "", "", C_MQTT,
         "user name; empty = anonymous")},
    {KEY("mqtt", "password_file", T_PATH, "path", mqtt.password_file, "", "a readable file", C_MQTT,
         "file whose first line is the password; empty = none")},
    {KEY("mqtt", "tls_ca", T_PATH, "path", mqtt.tls_ca, "", "a readable file", C_MQTT,
         "CA certificate (PEM) that enables TLS; empty = plain TCP")},
    {KEY("mqtt", "tls_cert", T_PATH, "path", mqtt.tls_cert, "", "a readable file", C_MQTT,
         "client certificate (PEM); needs tls_key")},
    {KEY("mqtt", "tls_key", T_PATH, "path", mqtt.tls_key, "", "a readable file", C_MQTT,
         "client private key (PEM); needs tls_cert")},
    {KEY("mqtt", "qos", T_INT, "int", mqtt.qos, "1", "0 <= x <= 2", C_MQTT,
         "QoS of results and masks"),
     .min = 0, .max = 2},
    {KEY("mqtt", "keepalive", T_INT, "int", mqtt.keepalive, "30", "5 <= x <= 3600", C_MQTT,
         "seconds between keep-alive pings"),
     .min = 5, .max = 3600},
    {KEY("mqtt", "topic_prefix", T_STRING, "string", mqtt.topic_prefix, "inspectd",
         "no '+', '#', leading '$', empty levels", C_MQTT,
         "first topic level(s): {prefix}/{station}/result ..."),
     .check = check_topic_prefix},
    {KEY("mqtt", "masks", T_ENUM, "enum", mqtt.masks, "fail", "fail, all, none", C_MASKS,
         "which parts' defect masks are published"),
     .choices = masks_choices},
    {KEY("mqtt", "commands", T_ENUM, "enum", mqtt.commands, "trigger",
         "none, trigger, all (true = all, false = none)", C_MQTT,
         "commands accepted on {prefix}/{station}/cmd/...: trigger = cmd/trigger only; all adds "
         "threshold, reload and snapshot and needs an authenticated connection"),
     .choices = commands_choices},
    {KEY("mqtt", "insecure_commands", T_BOOL, "bool", mqtt.insecure_commands, "false",
         "true, false", C_MQTT,
         "allow commands = all on an anonymous connection: anyone on the broker may then change "
         "how parts are judged")},
    {KEY("mqtt", "reply_prefix", T_STRING, "string", mqtt.reply_prefix, "",
         "no '+', '#', leading '$', empty levels", C_MQTT,
         "response topics of commands must start with this; empty = any topic outside "
         "{topic_prefix}/"),
     .check = check_topic_prefix},
    {KEY("mqtt", "homeassistant", T_BOOL, "bool", mqtt.homeassistant, "false", "true, false",
         C_MQTT,
         "Home Assistant MQTT discovery: retained configs of a device for this station, "
         "published on every connect; turned off at a reload, they are removed")},
    {KEY("mqtt", "homeassistant_prefix", T_STRING, "string", mqtt.homeassistant_prefix,
         "homeassistant", "no '+', '#', leading '$', empty levels", C_MQTT,
         "Home Assistant's discovery prefix: configs go to "
         "{homeassistant_prefix}/{component}/inspectd_{station}/{entity}/config"),
     .check = check_topic_prefix},

    {KEY("spool", "dir", T_PATH, "path", spool.dir, "/var/lib/inspectd/spool", "", C_SPOOL,
         "where results wait while the broker is down")},
    {KEY("spool", "max_mb", T_INT, "int", spool.max_mb, "256", "1 <= x <= 1000000", C_SPOOL,
         "disk the spool may take, in MiB; when full (or its disk is) the oldest masks go, then "
         "the oldest results, each drop announced and counted"),
     .min = 1, .max = 1000000},
    {KEY("spool", "sync", T_ENUM, "enum", spool.sync, "batch", "batch, always, never", C_SPOOL,
         "when spooled results reach the disk: batch = once a second (a power cut loses at most "
         "the last second), always = every result, never = the kernel's writeback"),
     .choices = sync_choices},

    {KEY("http", "listen", T_STRING, "string", http.listen, "", "HOST:PORT or empty", C_HTTP,
         "where the HTTP server (live page, /metrics, /healthz) listens; empty = off; beyond "
         "loopback it "
         "needs password_file or insecure = true"),
     .check = check_listen},
    {KEY("http", "password_file", T_PATH, "path", http.password_file, "", "a readable file", C_HTTP,
         "HTTP basic-auth users, one 'user:password' per line; empty = no password")},
    {KEY("http", "insecure", T_BOOL, "bool", http.insecure, "false", "true, false", C_HTTP,
         "serve beyond loopback without a password: anyone on the network may read the line's "
         "metrics")},
    {KEY("http", "tls_cert", T_PATH, "path", http.tls_cert, "", "a readable PEM file", C_HTTP,
         "serve HTTPS with this certificate (chain); needs tls_key; empty = plain HTTP")},
    {KEY("http", "tls_key", T_PATH, "path", http.tls_key, "", "a readable PEM file", C_HTTP,
         "the private key of tls_cert")},

    {KEY("archive", "dir", T_PATH, "path", archive.dir, "", "", C_ARCHIVE,
         "where parts are archived (frame JPEG, overlay JPEG, result JSON); empty = off")},
    {KEY("archive", "what", T_ENUM, "enum", archive.what, "fail", "fail, all, none", C_ARCHIVE,
         "which parts are archived"),
     .choices = masks_choices},
    {KEY("archive", "max_mb", T_INT, "int", archive.max_mb, "1024", "1 <= x <= 10000000", C_ARCHIVE,
         "disk the archive may take, in MiB; the oldest parts are removed first"),
     .min = 1, .max = 10000000},
    {KEY("archive", "max_age_days", T_INT, "int", archive.max_age_days, "30", "0 <= x <= 36500",
         C_ARCHIVE, "parts older than this are removed; 0 = no age limit"),
     .min = 0, .max = 36500},
    {KEY("archive", "jpeg_quality", T_INT, "int", archive.jpeg_quality, "90", "1 <= x <= 100",
         C_ARCHIVE, "JPEG quality of the archived frame and overlay"),
     .min = 1, .max = 100},

    {KEY("log", "level", T_ENUM, "enum", log.level, "info", "error, warning, notice, info, debug",
         C_LOG, "the least important journal priority that is logged"),
     .choices = level_choices},
};

static const char *const sections[] = {"station",    "camera", "trigger", "model",
                                       "inspection", "mqtt",   "spool",   "http",
                                       "archive",    "log",    NULL};

gsize
insp_config_schema_n_keys(void)
{
  return G_N_ELEMENTS(schema);
}

const InspConfigKeyInfo *
insp_config_schema_key(gsize index)
{
  g_return_val_if_fail(index < G_N_ELEMENTS(schema), NULL);
  return &schema[index].info;
}

static const Key *
find_key(const char *section, const char *key)
{
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++)
    if (strcmp(schema[i].info.section, section) == 0 && strcmp(schema[i].info.key, key) == 0)
      return &schema[i];
  return NULL;
}

const InspConfigKeyInfo *
insp_config_schema_lookup(const char *section, const char *key)
{
  const Key *k;

  g_return_val_if_fail(section != NULL && key != NULL, NULL);
  k = find_key(section, key);
  return k ? &k->info : NULL;
}

static gboolean
is_section(const char *name)
{
  for (gsize i = 0; sections[i]; i++)
    if (strcmp(sections[i], name) == 0)
      return TRUE;
  return FALSE;
}

#define FIELD(cfg, k, T) ((T *)(void *)((char *)(cfg) + (k)->offset))

/* ---- Suggestions ---------------------------------------------------------- */

/* Optimal string alignment distance (Levenshtein plus adjacent swaps), ASCII
 * case-insensitive; strings longer than 64 bytes count as far from anything. */
static guint
edit_distance(const char *a, const char *b)
{
  gsize la = strlen(a), lb = strlen(b);
  guint d[65][65];

  if (la > 64 || lb > 64)
    return G_MAXUINT;
  for (gsize i = 0; i <= la; i++)
    d[i][0] = (guint)i;
  for (gsize j = 0; j <= lb; j++)
    d[0][j] = (guint)j;
  for (gsize i = 1; i <= la; i++) {
    for (gsize j = 1; j <= lb; j++) {
      char ca = g_ascii_tolower(a[i - 1]), cb = g_ascii_tolower(b[j - 1]);
      guint cost = ca == cb ? 0 : 1;
      guint best = MIN(d[i - 1][j] + 1, d[i][j - 1] + 1);

      best = MIN(best, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && ca == g_ascii_tolower(b[j - 2]) && g_ascii_tolower(a[i - 2]) == cb)
        best = MIN(best, d[i - 2][j - 2] + 1);
      d[i][j] = best;
    }
  }
  return d[la][lb];
}

const char *
insp_config_suggest(const char *name, const char *const *candidates)
{
  g_return_val_if_fail(name != NULL && candidates != NULL, NULL);
  guint limit = CLAMP((guint)strlen(name) / 3, 1, 3);
  guint best = G_MAXUINT;
  const char *found = NULL;

  for (gsize i = 0; candidates[i]; i++) {
    guint dist = edit_distance(name, candidates[i]);

    if (dist < best) {
      best = dist;
      found = candidates[i];
    }
  }
  return best <= limit ? found : NULL;
}

static const char **
section_key_names(const char *section)
{
  GPtrArray *names = g_ptr_array_new();

  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++)
    if (strcmp(schema[i].info.section, section) == 0)
      g_ptr_array_add(names, (gpointer)schema[i].info.key);
  g_ptr_array_add(names, NULL);
  return (const char **)g_ptr_array_free(names, FALSE);
}

/* ---- Value parsers -------------------------------------------------------- */

static gboolean
parse_int64(const char *s, gint64 *out)
{
  return g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64, out, NULL);
}

static gboolean
parse_double(const char *s, double *out)
{
  char *end = NULL;
  double v;

  if (*s == '\0' || g_ascii_isspace(*s))
    return FALSE;
  errno = 0;
  v = g_ascii_strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
    return FALSE;
  *out = v;
  return TRUE;
}

static gboolean
check_name(const char *value, GString *reason)
{
  gsize n = strlen(value);

  if (n > 64) {
    g_string_append(reason, "longer than 64 characters");
    return FALSE;
  }
  for (const char *p = value; *p; p++) {
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-') {
      g_string_append_printf(
          reason, "'%s' has the character '%c'; use letters, digits, '.', '_', '-'", value, *p);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean
check_token(const char *value, GString *reason)
{
  if (strlen(value) > 255) {
    g_string_append(reason, "longer than 255 characters");
    return FALSE;
  }
  for (const char *p = value; *p; p++) {
    if (g_ascii_isspace(*p) || g_ascii_iscntrl(*p)) {
      g_string_append_printf(reason, "'%s' contains white space or a control character", value);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
insp_config_parse_listen(const char *value, char **host, int *port)
{
  const char *colon = value ? strrchr(value, ':') : NULL;
  guint64 p = 0;
  g_autofree char *h = NULL;

  if (colon == NULL || colon == value ||
      !g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &p, NULL))
    return FALSE;
  h = g_strndup(value, (gsize)(colon - value));
  if (h[0] == '[' && h[strlen(h) - 1] == ']') { /* [::1]:8080 */
    char *inner = g_strndup(h + 1, strlen(h) - 2);
    g_free(h);
    h = inner;
  }
  if (h[0] == '\0' || strchr(h, ' ') != NULL)
    return FALSE;
  if (host)
    *host = g_steal_pointer(&h);
  if (port)
    *port = (int)p;
  return TRUE;
}

gboolean
insp_config_listen_is_loopback(const char *value)
{
  g_autofree char *host = NULL;

  if (!insp_config_parse_listen(value, &host, NULL))
    return FALSE;
  return g_str_equal(host, "localhost") || g_str_equal(host, "::1") ||
         g_str_has_prefix(host, "127.");
}

static gboolean
check_listen(const char *value, GString *reason)
{
  if (value[0] == '\0' || insp_config_parse_listen(value, NULL, NULL))
    return TRUE;
  g_string_append(reason, "expected HOST:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080)");
  return FALSE;
}

static gboolean
check_topic_prefix(const char *value, GString *reason)
{
  if (strlen(value) > 1024) {
    g_string_append(reason, "longer than 1024 characters");
    return FALSE;
  }
  if (strpbrk(value, "+#")) {
    g_string_append_printf(reason, "'%s' contains an MQTT wildcard ('+' or '#')", value);
    return FALSE;
  }
  if (value[0] == '$') {
    /* $SYS/... belongs to the broker and $share/... names a shared
     * subscription: a broker refuses publishes there, so every result would
     * be lost. */
    g_string_append_printf(
        reason, "'%s' starts with '$' (topics of the broker or shared subscriptions)", value);
    return FALSE;
  }
  if (value[0] == '/' || g_str_has_suffix(value, "/") || strstr(value, "//")) {
    g_string_append_printf(
        reason, "'%s' has an empty topic level (leading, trailing or double '/')", value);
    return FALSE;
  }
  return check_token(value, reason);
}

static gboolean
check_uri(const char *value, GString *reason)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GUri) uri = g_uri_parse(value, G_URI_FLAGS_NONE, &error);

  if (!uri) {
    g_string_append_printf(reason, "not a valid URI: %s", error->message);
    return FALSE;
  }
  if (!g_str_has_prefix(g_uri_get_scheme(uri), "rtsp")) {
    g_string_append_printf(reason, "'%s' is not an rtsp:// URI", value);
    return FALSE;
  }
  return TRUE;
}

static gboolean
parse_controls(const char *value, InspCameraControl **out, guint *n_out, GString *reason)
{
  g_autoptr(GError) error = NULL;

  if (!insp_camera_controls_parse(value, out, n_out, &error)) {
    g_string_append(reason, error->message);
    return FALSE;
  }
  return TRUE;
}

static gboolean
parse_rect(const char *value, InspConfigRect *out, GString *reason)
{
  g_auto(GStrv) parts = NULL;
  gint64 v[4];

  if (*value == '\0') {
    *out = (InspConfigRect){0, 0, 0, 0};
    return TRUE;
  }
  parts = g_strsplit(value, ",", -1);
  if (g_strv_length(parts) != 4)
    goto bad;
  for (int i = 0; i < 4; i++)
    if (!g_ascii_string_to_signed(g_strstrip(parts[i]), 10, 0, 65535, &v[i], NULL))
      goto bad;
  if (v[2] == 0 || v[3] == 0)
    goto bad;
  *out = (InspConfigRect){(int)v[0], (int)v[1], (int)v[2], (int)v[3]};
  return TRUE;
bad:
  g_string_append_printf(reason, "expected x,y,w,h (four integers 0..65535, w and h > 0), got '%s'",
                         value);
  return FALSE;
}

static const char *
choice_name(const Choice *choices, int value)
{
  for (gsize i = 0; choices[i].name; i++)
    if (choices[i].value == value)
      return choices[i].name;
  return "?";
}

/* Parses @raw as the value of @k and stores it in @cfg (freeing what was
 * there); relative paths are made absolute against @base_dir. On failure
 * leaves @cfg as it was and writes the reason. */
static gboolean
store_value(InspConfig *cfg, const Key *k, const char *raw, const char *base_dir, GString *reason)
{
  g_autofree char *value = g_strstrip(g_strdup(raw));

  if (strlen(value) > MAX_VALUE_LEN) {
    g_string_append_printf(reason, "value longer than %d bytes", MAX_VALUE_LEN);
    return FALSE;
  }
  switch (k->type) {
  case T_STRING:
    if (*value && k->check && !k->check(value, reason))
      return FALSE;
    g_free(*FIELD(cfg, k, char *));
    *FIELD(cfg, k, char *) = g_steal_pointer(&value);
    return TRUE;
  case T_PATH:
    if (*value && k->check && !k->check(value, reason))
      return FALSE;
    g_free(*FIELD(cfg, k, char *));
    *FIELD(cfg, k, char *) = *value ? g_canonicalize_filename(value, base_dir) : g_strdup("");
    return TRUE;
  case T_BOOL: {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (gsize i = 0; i < G_N_ELEMENTS(yes); i++) {
      if (g_ascii_strcasecmp(value, yes[i]) == 0) {
        *FIELD(cfg, k, gboolean) = TRUE;
        return TRUE;
      }
      if (g_ascii_strcasecmp(value, no[i]) == 0) {
        *FIELD(cfg, k, gboolean) = FALSE;
        return TRUE;
      }
    }
    g_string_append_printf(reason, "expected true or false, got '%s'", value);
    return FALSE;
  }
  case T_INT: {
    gint64 v;

    if (!parse_int64(value, &v)) {
      g_string_append_printf(reason, "expected an integer, got '%s'", value);
      return FALSE;
    }
    if ((double)v < k->min || (double)v > k->max) {
      g_string_append_printf(reason, "out of range, expected %s, got %s", k->info.allowed, value);
      return FALSE;
    }
    *FIELD(cfg, k, int) = (int)v;
    return TRUE;
  }
  case T_DOUBLE: {
    double v;

    if (!parse_double(value, &v)) {
      g_string_append_printf(reason, "expected a number, got '%s'", value);
      return FALSE;
    }
    if (v < k->min || v > k->max) {
      g_string_append_printf(reason, "out of range, expected %s, got %s", k->info.allowed, value);
      return FALSE;
    }
    *FIELD(cfg, k, double) = v;
    return TRUE;
  }
  case T_ENUM: {
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    const char *close;

    for (gsize i = 0; k->choices[i].name; i++) {
      if (g_ascii_strcasecmp(value, k->choices[i].name) == 0) {
        *FIELD(cfg, k, int) = k->choices[i].value;
        return TRUE;
      }
      g_ptr_array_add(names, (gpointer)k->choices[i].name);
    }
    g_ptr_array_add(names, NULL);
    close = insp_config_suggest(value, (const char *const *)names->pdata);
    g_string_append_printf(reason, "'%s' is not one of the allowed values: %s", value,
                           k->info.allowed);
    if (close)
      g_string_append_printf(reason, " (did you mean '%s'?)", close);
    return FALSE;
  }
  case T_LIST: {
    InspCameraControl *controls;
    guint n;

    if (!parse_controls(value, &controls, &n, reason))
      return FALSE;
    insp_camera_controls_free(cfg->camera.controls, cfg->camera.n_controls);
    cfg->camera.controls = controls;
    cfg->camera.n_controls = n;
    return TRUE;
  }
  case T_RECT:
    return parse_rect(value, FIELD(cfg, k, InspConfigRect), reason);
  default:
    g_assert_not_reached();
  }
}

/* ---- Problems ------------------------------------------------------------- */

void
insp_config_problem_free(InspConfigProblem *problem)
{
  if (!problem)
    return;
  g_free(problem->file);
  g_free(problem->section);
  g_free(problem->key);
  g_free(problem->reason);
  g_free(problem->text);
  g_free(problem);
}

typedef struct {
  char *file;
  int line;
} Origin;

static void
origin_free(Origin *o)
{
  g_free(o->file);
  g_free(o);
}

typedef struct {
  InspConfig *cfg;
  GPtrArray *problems; /* of InspConfigProblem */
  GHashTable *origins; /* "section\nkey" -> Origin */
  GHashTable *bad;     /* "section\nkey" of values that were rejected */
  const char *main_file;
} Loader;

static void
add_problem(Loader *L, const char *file, int line, const char *section, const char *key,
            const char *reason)
{
  InspConfigProblem *p = g_new0(InspConfigProblem, 1);

  p->file = g_strdup(file);
  p->line = line;
  p->section = g_strdup(section);
  p->key = g_strdup(key);
  p->reason = g_strdup(reason);
  if (section && key)
    p->text = g_strdup_printf("%s: [%s] %s: %s", file, section, key, reason);
  else if (section)
    p->text = g_strdup_printf("%s: [%s]: %s", file, section, reason);
  else if (line > 0)
    p->text = g_strdup_printf("%s:%d: %s", file, line, reason);
  else
    p->text = g_strdup_printf("%s: %s", file, reason);
  g_ptr_array_add(L->problems, p);
}

static const Origin *
origin_of(Loader *L, const char *section, const char *key)
{
  g_autofree char *id = g_strconcat(section, "\n", key, NULL);

  return g_hash_table_lookup(L->origins, id);
}

/* The file that set [section] key, or the main file when it was a default. */
static const char *
origin_file(Loader *L, const char *section, const char *key)
{
  const Origin *o = origin_of(L, section, key);

  return o ? o->file : L->main_file;
}

static void
key_problem(Loader *L, const char *section, const char *key, const char *reason)
{
  const Origin *o = origin_of(L, section, key);

  add_problem(L, o ? o->file : L->main_file, o ? o->line : 0, section, key, reason);
}

/* ---- Reading one file ------------------------------------------------------ */

static gboolean
read_file(const char *path, char **data_out, gsize *len_out, GString *reason)
{
  struct stat st;
  g_autofree char *data = NULL;
  gsize len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

  if (fd < 0) {
    g_string_append_printf(reason, "cannot read: %s", g_strerror(errno));
    return FALSE;
  }
  if (fstat(fd, &st) < 0) {
    g_string_append_printf(reason, "cannot read: %s", g_strerror(errno));
    close(fd);
    return FALSE;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > MAX_FILE_SIZE) {
    g_string_append_printf(reason, "cannot read: %s",
                           S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
    close(fd);
    return FALSE;
  }
  data = g_malloc((gsize)st.st_size + 1);
  while (len < (gsize)st.st_size) {
    gssize r = read(fd, data + len, (gsize)st.st_size - len);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      g_string_append_printf(reason, "cannot read: %s", g_strerror(errno));
      close(fd);
      return FALSE;
    }
    if (r == 0)
      break;
    len += (gsize)r;
  }
  close(fd);
  data[len] = '\0';
  *data_out = g_steal_pointer(&data);
  *len_out = len;
  return TRUE;
}

static char *
join_lines(char **lines, gsize n)
{
  GString *s = g_string_new(NULL);

  for (gsize i = 0; i < n; i++) {
    g_string_append(s, lines[i]);
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}

static gboolean
lines_parse(char **lines, gsize n, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_autofree char *text = join_lines(lines, n);

  return g_key_file_load_from_data(kf, text, (gsize)-1, G_KEY_FILE_NONE, error);
}

/* The section a key without one was probably meant for. */
static const char *
section_of_key(const char *key)
{
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++)
    if (g_ascii_strcasecmp(schema[i].info.key, key) == 0)
      return schema[i].info.section;
  return NULL;
}

/* Parses @lines with GKeyFile. Each line GKeyFile rejects is reported with
 * its number and blanked, and parsing starts again, so that the rest of the
 * file is still checked. Returns NULL after MAX_SYNTAX_ERRORS. */
static GKeyFile *
parse_lines(Loader *L, const char *file, char **lines, gsize n)
{
  for (int round = 0; round <= MAX_SYNTAX_ERRORS; round++) {
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *text = join_lines(lines, n);
    g_autoptr(GError) error = NULL;
    gsize lo = 1, hi = n;
    gboolean in_section = FALSE;
    const char *line;

    if (g_key_file_load_from_data(kf, text, (gsize)-1, G_KEY_FILE_NONE, &error))
      return g_steal_pointer(&kf);
    if (round == MAX_SYNTAX_ERRORS) {
      add_problem(L, file, 0, NULL, NULL, "too many syntax errors, giving up on this file");
      return NULL;
    }
    /* Find the first line at which a prefix of the file stops parsing: the
     * prefixes that fail are exactly the ones that include that line. */
    while (lo < hi) {
      gsize mid = lo + (hi - lo) / 2;

      if (lines_parse(lines, mid, NULL))
        lo = mid + 1;
      else
        hi = mid;
    }
    line = g_strchug(lines[lo - 1]);
    for (gsize i = 0; i + 1 < lo; i++)
      if (g_strchug(lines[i])[0] == '[')
        in_section = TRUE;
    if (!in_section && line[0] != '[' && strchr(line, '=')) {
      g_autofree char *key = g_strndup(line, (gsize)(strchr(line, '=') - line));
      const char *section = section_of_key(g_strstrip(key));
      g_autofree char *reason =
          section ? g_strdup_printf("key '%s' comes before any [section] line; it belongs in [%s]",
                                    key, section)
                  : g_strdup_printf("key '%s' comes before any [section] line", key);

      add_problem(L, file, (int)lo, NULL, NULL, reason);
    } else {
      g_autofree char *reason = g_strdup_printf("syntax error: %s", error->message);

      add_problem(L, file, (int)lo, NULL, NULL, reason);
    }
    g_free(lines[lo - 1]);
    lines[lo - 1] = g_strdup("");
  }
  return NULL;
}

/* Reports a key set twice in one file; records the line of each key. */
static void
scan_lines(Loader *L, const char *file, char **lines, gsize n, GHashTable *key_lines)
{
  g_autofree char *group = NULL;

  for (gsize i = 0; i < n; i++) {
    const char *line = lines[i];
    const char *eq;

    while (g_ascii_isspace(*line))
      line++;
    if (*line == '#' || *line == '\0')
      continue;
    if (*line == '[') {
      const char *end = strchr(line, ']');

      g_free(group);
      group = end ? g_strndup(line + 1, (gsize)(end - line - 1)) : NULL;
      /* "section\n" holds the line of the section's first header */
      if (group) {
        char *id = g_strconcat(group, "\n", NULL);

        if (g_hash_table_contains(key_lines, id))
          g_free(id);
        else
          g_hash_table_insert(key_lines, id, GINT_TO_POINTER((int)i + 1));
      }
      continue;
    }
    eq = strchr(line, '=');
    if (group && eq) {
      g_autofree char *key = g_strndup(line, (gsize)(eq - line));
      char *id = g_strconcat(group, "\n", g_strchomp(key), NULL);
      gpointer prev = g_hash_table_lookup(key_lines, id);

      if (prev) {
        g_autofree char *reason = g_strdup_printf("set twice in this file (lines %d and %d)",
                                                  GPOINTER_TO_INT(prev), (int)i + 1);

        add_problem(L, file, (int)i + 1, group, key, reason);
        g_free(id);
      } else {
        g_hash_table_insert(key_lines, id, GINT_TO_POINTER((int)i + 1));
      }
    }
  }
}

static int
compare_lines(gconstpointer a, gconstpointer b)
{
  const InspConfigProblem *pa = *(const InspConfigProblem *const *)a;
  const InspConfigProblem *pb = *(const InspConfigProblem *const *)b;
  int la = pa->line > 0 ? pa->line : G_MAXINT, lb = pb->line > 0 ? pb->line : G_MAXINT;

  return (la > lb) - (la < lb);
}

/* Puts the problems of one file, from index @first on, in line order (stable). */
static void
sort_problems(Loader *L, guint first)
{
  g_autoptr(GPtrArray) tail = g_ptr_array_new();

  for (guint i = first; i < L->problems->len; i++)
    g_ptr_array_add(tail, L->problems->pdata[i]);
  g_ptr_array_sort(tail, compare_lines);
  for (guint i = 0; i < tail->len; i++)
    L->problems->pdata[first + i] = tail->pdata[i];
}

/* @data holds @len bytes and a terminating NUL after them. */
static void
load_data(Loader *L, const char *file, const char *data, gsize len, const char *base_dir)
{
  g_auto(GStrv) lines = NULL;
  g_autoptr(GKeyFile) kf = NULL;
  g_autoptr(GHashTable) key_lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_auto(GStrv) groups = NULL;
  gsize n;

  if (memchr(data, '\0', len)) {
    add_problem(L, file, 0, NULL, NULL, "contains a NUL byte; not a text file");
    return;
  }
  lines = g_strsplit(data, "\n", -1);
  n = g_strv_length(lines);
  if (n > 0 && lines[n - 1][0] == '\0')
    n--;
  kf = parse_lines(L, file, lines, n);
  if (!kf)
    return;
  scan_lines(L, file, lines, n, key_lines);

  groups = g_key_file_get_groups(kf, NULL);
  for (gsize g = 0; groups[g]; g++) {
    const char *section = groups[g];
    g_auto(GStrv) keys = NULL;
    g_autofree const char **names = NULL;

    if (!is_section(section)) {
      const char *close = insp_config_suggest(section, sections);
      g_autofree char *reason =
          close ? g_strdup_printf("unknown section, did you mean [%s]?", close)
                : g_strdup("unknown section (known: station, camera, trigger, model, inspection, "
                           "mqtt, spool, http, archive, log)");

      g_autofree char *gid = g_strconcat(section, "\n", NULL);

      add_problem(L, file, GPOINTER_TO_INT(g_hash_table_lookup(key_lines, gid)), section, NULL,
                  reason);
      continue;
    }
    names = section_key_names(section);
    keys = g_key_file_get_keys(kf, section, NULL, NULL);
    for (gsize i = 0; keys && keys[i]; i++) {
      const char *key = keys[i];
      g_autofree char *id = g_strconcat(section, "\n", key, NULL);
      int line = GPOINTER_TO_INT(g_hash_table_lookup(key_lines, id));
      const Key *k = find_key(section, key);
      g_autoptr(GString) reason = g_string_new(NULL);
      g_autoptr(GError) error = NULL;
      g_autofree char *raw = NULL;

      if (!k) {
        const char *close = insp_config_suggest(key, names);
        const char *elsewhere = section_of_key(key);

        if (strchr(key, '['))
          g_string_append(reason, "unknown key (localized keys are not supported)");
        else if (close)
          g_string_append_printf(reason, "unknown key, did you mean '%s'?", close);
        else if (elsewhere)
          g_string_append_printf(reason, "unknown key in [%s]; '%s' belongs in [%s]", section, key,
                                 elsewhere);
        else
          g_string_append(reason, "unknown key");
        add_problem(L, file, line, section, key, reason->str);
        continue;
      }
      raw = g_key_file_get_string(kf, section, key, &error);
      if (!raw) {
        add_problem(L, file, line, section, key, error->message);
        continue;
      }
      if (!store_value(L->cfg, k, raw, base_dir, reason)) {
        add_problem(L, file, line, section, key, reason->str);
        g_hash_table_add(L->bad, g_steal_pointer(&id));
        continue;
      }
      {
        Origin *o = g_new0(Origin, 1);

        o->file = g_strdup(file);
        o->line = line;
        g_hash_table_replace(L->origins, g_steal_pointer(&id), o);
      }
    }
  }
}

static void
load_file(Loader *L, const char *path, GPtrArray *files)
{
  g_autofree char *data = NULL;
  g_autofree char *rel_dir = g_path_get_dirname(path);
  g_autofree char *dir = g_canonicalize_filename(rel_dir, NULL);
  g_autoptr(GString) reason = g_string_new(NULL);
  guint first;
  gsize len;

  if (!read_file(path, &data, &len, reason)) {
    add_problem(L, path, 0, NULL, NULL, reason->str);
    return;
  }
  g_ptr_array_add(files, g_strdup(path));
  first = L->problems->len;
  load_data(L, path, data, len, dir);
  sort_problems(L, first);
}

static int
compare_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* TRUE when @path is (a symlink chain to) /dev/null: a masked drop-in. */
static gboolean
is_dev_null(const char *path)
{
  struct stat st, null_st;

  return stat(path, &st) == 0 && stat("/dev/null", &null_st) == 0 && S_ISCHR(st.st_mode) &&
         st.st_rdev == null_st.st_rdev;
}

/* Why a drop-in entry that is not a regular file is refused. */
static char *
dropin_kind(const char *path)
{
  struct stat st;

  if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode) && stat(path, &st) != 0)
    return g_strdup_printf("a symbolic link to nothing (%s): not read; remove it, or link it to "
                           "/dev/null to mask the name",
                           g_strerror(errno));
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return g_strdup("a folder, not a file: not read; rename or remove it");
  return g_strdup("not a regular file (a FIFO, socket or device): not read; remove it, or link "
                  "it to /dev/null to mask the name");
}

/* The drop-ins of @path in name order, or NULL with a problem. */
static GPtrArray *
list_dropins(Loader *L, const char *path)
{
  gboolean bad = FALSE;
  g_autofree char *dir_path = g_strconcat(path, ".d", NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) dir = NULL;
  const char *name;

  if (!g_file_test(dir_path, G_FILE_TEST_EXISTS))
    return g_steal_pointer(&out);
  dir = g_dir_open(dir_path, 0, &error);
  if (!dir) {
    g_autofree char *reason = g_strdup_printf("cannot read the drop-in folder: %s", error->message);

    add_problem(L, dir_path, 0, NULL, NULL, reason);
    return NULL;
  }
  while ((name = g_dir_read_name(dir))) {
    if (name[0] == '.' || !g_str_has_suffix(name, ".conf"))
      continue;
    g_ptr_array_add(names, g_strdup(name));
  }
  if (names->len > MAX_DROPINS) {
    g_autofree char *reason = g_strdup_printf("more than %d drop-in files", MAX_DROPINS);

    add_problem(L, dir_path, 0, NULL, NULL, reason);
    return NULL;
  }
  g_ptr_array_sort(names, compare_names);
  for (guint i = 0; i < names->len; i++) {
    char *full = g_build_filename(dir_path, (const char *)names->pdata[i], NULL);

    /* Regular files count and a symlink to /dev/null masks a name, as in
     * systemd. Anything else (a dangling link, a folder, a FIFO) is a
     * problem: the settings someone meant to give would be missing. */
    if (g_file_test(full, G_FILE_TEST_IS_REGULAR)) {
      g_ptr_array_add(out, full);
      continue;
    }
    if (!is_dev_null(full)) {
      g_autofree char *reason = dropin_kind(full);

      add_problem(L, full, 0, NULL, NULL, reason);
      bad = TRUE;
    }
    g_free(full);
  }
  if (bad)
    return NULL;
  return g_steal_pointer(&out);
}

/* ---- Defaults, resolution and rules on the merged config ------------------ */

static InspConfig *
config_new_defaults(void)
{
  InspConfig *cfg = g_new0(InspConfig, 1);

  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++) {
    g_autoptr(GString) reason = g_string_new(NULL);

    if (!store_value(cfg, &schema[i], schema[i].info.default_value, "/", reason))
      g_critical("conf: default of [%s] %s does not parse: %s", schema[i].info.section,
                 schema[i].info.key, reason->str);
  }
  return cfg;
}

static char *
host_station_id(void)
{
  char *id = g_strdup(g_get_host_name());

  for (char *p = id; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
      *p = '-';
  if (strlen(id) > 64)
    id[64] = '\0';
  if (*id == '\0') {
    g_free(id);
    id = g_strdup("station");
  }
  return id;
}

static void
resolve(InspConfig *cfg)
{
  if (cfg->station.id[0] == '\0') {
    g_free(cfg->station.id);
    cfg->station.id = host_station_id();
  }
  if (cfg->mqtt.client_id[0] == '\0') {
    g_free(cfg->mqtt.client_id);
    cfg->mqtt.client_id = g_strconcat("inspectd-", cfg->station.id, NULL);
  }
  if (*(int *)(void *)&cfg->camera.drop == DROP_AUTO)
    cfg->camera.drop = (cfg->camera.source == INSP_CONFIG_CAMERA_SOURCE_FILES ||
                        cfg->camera.source == INSP_CONFIG_CAMERA_SOURCE_TEST)
                           ? INSP_CONFIG_DROP_NEVER
                           : INSP_CONFIG_DROP_OLDEST;
  if (cfg->model.workers == 0)
    cfg->model.workers = (int)CLAMP(g_get_num_processors(), 1, 64);
  cfg->inspection.configured_threshold = cfg->inspection.threshold;
  cfg->inspection.configured_pixel_threshold = cfg->inspection.pixel_threshold;
}

static void
check_readable(Loader *L, const char *section, const char *key, const char *path)
{
  struct stat st;
  g_autofree char *reason = NULL;
  int fd;

  if (path[0] == '\0')
    return;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    reason = g_strdup_printf("cannot read '%s': %s", path, g_strerror(errno));
  } else {
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode))
      reason = g_strdup_printf("'%s' is not a regular file", path);
    close(fd);
  }
  if (reason)
    key_problem(L, section, key, reason);
}

const char *
insp_config_camera_source_to_string(InspConfigCameraSource source)
{
  for (gsize i = 0; source_choices[i].name; i++)
    if (source_choices[i].value == (int)source)
      return source_choices[i].name;
  return NULL;
}

static const char *
source_name(const InspConfig *cfg)
{
  return choice_name(source_choices, (int)cfg->camera.source);
}

/* Whether a file gave [section] key a value that was rejected: rules about
 * that key would only repeat the problem. */
static gboolean
was_rejected(Loader *L, const char *section, const char *key)
{
  g_autofree char *id = g_strconcat(section, "\n", key, NULL);

  return g_hash_table_contains(L->bad, id);
}

/* [inspection] NAME_min must not exceed NAME_max. */
static void
check_bounds(Loader *L, const char *name, double min, double max)
{
  g_autofree char *min_key = g_strconcat(name, "_min", NULL);
  g_autofree char *max_key = g_strconcat(name, "_max", NULL);

  if (min > max && !was_rejected(L, "inspection", min_key) &&
      !was_rejected(L, "inspection", max_key)) {
    g_autofree char *reason =
        g_strdup_printf("%g is above [inspection] %s = %g", min, max_key, max);

    key_problem(L, "inspection", min_key, reason);
  }
}

static void
check_rules(Loader *L)
{
  const InspConfig *cfg = L->cfg;
  InspConfigCameraSource src = cfg->camera.source;
  struct {
    InspConfigCameraSource source;
    const char *key;
    const char *value;
  } needs[] = {
      {INSP_CONFIG_CAMERA_SOURCE_V4L2, "device", cfg->camera.device},
      {INSP_CONFIG_CAMERA_SOURCE_RTSP, "uri", cfg->camera.uri},
      {INSP_CONFIG_CAMERA_SOURCE_FILES, "location", cfg->camera.location},
      {INSP_CONFIG_CAMERA_SOURCE_PIPELINE, "pipeline", cfg->camera.pipeline},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(needs); i++) {
    if (src == needs[i].source && needs[i].value[0] == '\0' &&
        !was_rejected(L, "camera", needs[i].key)) {
      g_autofree char *reason =
          g_strdup_printf("required when [camera] source = %s", source_name(cfg));

      add_problem(L, origin_file(L, "camera", "source"), 0, "camera", needs[i].key, reason);
    }
  }
  if ((cfg->camera.width == 0) != (cfg->camera.height == 0) &&
      !was_rejected(L, "camera", "width") && !was_rejected(L, "camera", "height")) {
    const char *set = cfg->camera.width ? "width" : "height";
    const char *unset = cfg->camera.width ? "height" : "width";
    g_autofree char *reason = g_strdup_printf("required when [camera] %s is set", set);

    add_problem(L, origin_file(L, "camera", set), 0, "camera", unset, reason);
  }
  if ((gint64)cfg->camera.width * cfg->camera.height > cfg->camera.max_pixels &&
      !was_rejected(L, "camera", "width") && !was_rejected(L, "camera", "max_pixels")) {
    g_autofree char *reason =
        g_strdup_printf("%dx%d is over [camera] max_pixels = %d", cfg->camera.width,
                        cfg->camera.height, cfg->camera.max_pixels);

    add_problem(L, origin_file(L, "camera", "width"), 0, "camera", "width", reason);
  }
  if (cfg->mqtt.tls_cert[0] != '\0' && cfg->mqtt.tls_key[0] == '\0' &&
      !was_rejected(L, "mqtt", "tls_key"))
    add_problem(L, origin_file(L, "mqtt", "tls_cert"), 0, "mqtt", "tls_key",
                "required when [mqtt] tls_cert is set");
  if (cfg->mqtt.tls_key[0] != '\0' && cfg->mqtt.tls_cert[0] == '\0' &&
      !was_rejected(L, "mqtt", "tls_cert"))
    add_problem(L, origin_file(L, "mqtt", "tls_key"), 0, "mqtt", "tls_cert",
                "required when [mqtt] tls_key is set");
  if (cfg->trigger.mode == INSP_CONFIG_TRIGGER_MODE_MQTT &&
      (cfg->mqtt.host[0] == '\0' || cfg->mqtt.commands == INSP_CONFIG_COMMANDS_NONE) &&
      !was_rejected(L, "mqtt", "host") && !was_rejected(L, "mqtt", "commands"))
    key_problem(L, "trigger", "mode",
                "mqtt needs MQTT enabled ([mqtt] host set) and [mqtt] commands = trigger or all");
  if (cfg->mqtt.commands == INSP_CONFIG_COMMANDS_ALL && !cfg->mqtt.insecure_commands &&
      cfg->mqtt.host[0] != '\0' &&
      (cfg->mqtt.username[0] == '\0' || cfg->mqtt.password_file[0] == '\0') &&
      cfg->mqtt.tls_cert[0] == '\0' && !was_rejected(L, "mqtt", "commands"))
    key_problem(L, "mqtt", "commands",
                "all needs an authenticated connection ([mqtt] username and password_file, or "
                "tls_cert and tls_key) so that only who the broker allows may change thresholds; "
                "set [mqtt] insecure_commands = true to accept the risk");
  if (cfg->http.listen[0] != '\0' && !was_rejected(L, "http", "listen") &&
      !insp_config_listen_is_loopback(cfg->http.listen) && cfg->http.password_file[0] == '\0' &&
      !cfg->http.insecure)
    key_problem(L, "http", "listen",
                "a listen address beyond loopback needs [http] password_file (basic auth), or "
                "[http] insecure = true to let anyone on the network read the line's metrics");
  if (cfg->http.tls_cert[0] != '\0' && cfg->http.tls_key[0] == '\0' &&
      !was_rejected(L, "http", "tls_key"))
    add_problem(L, origin_file(L, "http", "tls_cert"), 0, "http", "tls_key",
                "required when [http] tls_cert is set");
  if (cfg->http.tls_key[0] != '\0' && cfg->http.tls_cert[0] == '\0' &&
      !was_rejected(L, "http", "tls_cert"))
    add_problem(L, origin_file(L, "http", "tls_key"), 0, "http", "tls_cert",
                "required when [http] tls_key is set");
  check_bounds(L, "threshold", cfg->inspection.threshold_min, cfg->inspection.threshold_max);
  check_bounds(L, "pixel_threshold", cfg->inspection.pixel_threshold_min,
               cfg->inspection.pixel_threshold_max);
  if (cfg->mqtt.reply_prefix[0] != '\0' && !was_rejected(L, "mqtt", "reply_prefix") &&
      !was_rejected(L, "mqtt", "topic_prefix") &&
      (strcmp(cfg->mqtt.reply_prefix, cfg->mqtt.topic_prefix) == 0 ||
       (g_str_has_prefix(cfg->mqtt.reply_prefix, cfg->mqtt.topic_prefix) &&
        cfg->mqtt.reply_prefix[strlen(cfg->mqtt.topic_prefix)] == '/'))) {
    g_autofree char *reason = g_strdup_printf(
        "'%s' lies under [mqtt] topic_prefix '%s': replies there would land in the stations' "
        "own topics",
        cfg->mqtt.reply_prefix, cfg->mqtt.topic_prefix);

    key_problem(L, "mqtt", "reply_prefix", reason);
  }
  if (cfg->mqtt.homeassistant && cfg->mqtt.homeassistant_prefix[0] == '\0' &&
      !was_rejected(L, "mqtt", "homeassistant_prefix"))
    key_problem(L, "mqtt", "homeassistant_prefix", "required when [mqtt] homeassistant = true");
  if (cfg->model.path[0] == '\0' && src != INSP_CONFIG_CAMERA_SOURCE_TEST &&
      !was_rejected(L, "model", "path")) {
    g_autofree char *reason = g_strdup_printf(
        "required when [camera] source = %s (only source = test runs the demo model)",
        source_name(cfg));

    add_problem(L, origin_file(L, "camera", "source"), 0, "model", "path", reason);
  }
  check_readable(L, "model", "path", cfg->model.path);
  check_readable(L, "mqtt", "password_file", cfg->mqtt.password_file);
  check_readable(L, "mqtt", "tls_ca", cfg->mqtt.tls_ca);
  check_readable(L, "mqtt", "tls_cert", cfg->mqtt.tls_cert);
  check_readable(L, "mqtt", "tls_key", cfg->mqtt.tls_key);
}

/* ---- Public entry points -------------------------------------------------- */

static InspConfig *
finish(Loader *L, GPtrArray *files, GPtrArray **problems_out, GError **error)
{
  g_autoptr(InspConfig) cfg = L->cfg;

  resolve(cfg);
  check_rules(L);
  if (L->problems->len > 0) {
    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID, "%s: %u problem%s",
                L->main_file, L->problems->len, L->problems->len == 1 ? "" : "s");
    if (problems_out)
      *problems_out = g_ptr_array_ref(L->problems);
    return NULL;
  }
  g_ptr_array_add(files, NULL);
  cfg->files = g_strdupv((char **)files->pdata);
  cfg->path = g_strdup(L->main_file);
  return g_steal_pointer(&cfg);
}

static void
loader_init(Loader *L, const char *main_file)
{
  L->cfg = config_new_defaults();
  L->problems = g_ptr_array_new_with_free_func((GDestroyNotify)insp_config_problem_free);
  L->origins = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)origin_free);
  L->bad = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  L->main_file = main_file;
}

static void
loader_clear(Loader *L)
{
  g_ptr_array_unref(L->problems);
  g_hash_table_unref(L->origins);
  g_hash_table_unref(L->bad);
}

InspConfig *
insp_config_load(const char *path, GPtrArray **problems_out, GError **error)
{
  g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) dropins = NULL;
  Loader L;
  InspConfig *cfg;

  g_return_val_if_fail(path != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  loader_init(&L, path);
  load_file(&L, path, files);
  dropins = list_dropins(&L, path);
  for (guint i = 0; dropins && i < dropins->len; i++)
    load_file(&L, (const char *)dropins->pdata[i], files);
  cfg = finish(&L, files, problems_out, error);
  loader_clear(&L);
  return cfg;
}

InspConfig *
insp_config_load_from_data(const char *data, gssize length, const char *name,
                           GPtrArray **problems_out, GError **error)
{
  g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *cwd = g_get_current_dir();
  gsize len;
  Loader L;
  InspConfig *cfg;

  g_return_val_if_fail(data != NULL || length == 0, NULL);
  g_return_val_if_fail(name != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  len = length < 0 ? strlen(data) : (gsize)length;
  loader_init(&L, name);
  g_ptr_array_add(files, g_strdup(name));
  if (len > MAX_FILE_SIZE)
    add_problem(&L, name, 0, NULL, NULL, "larger than 1 MiB");
  else {
    /* load_data() wants a terminated copy; @data need not be */
    g_autofree char *copy = g_malloc(len + 1);

    if (len > 0)
      memcpy(copy, data, len);
    copy[len] = '\0';
    load_data(&L, name, copy, len, cwd);
  }
  sort_problems(&L, 0);
  cfg = finish(&L, files, problems_out, error);
  loader_clear(&L);
  return cfg;
}

InspConfig *
insp_config_new_default(void)
{
  InspConfig *cfg = insp_config_load_from_data("", 0, "(built-in defaults)", NULL, NULL);

  g_assert(cfg != NULL);
  return cfg;
}

InspConfig *
insp_config_copy(const InspConfig *config)
{
  InspConfig *copy;

  g_return_val_if_fail(config != NULL, NULL);
  copy = g_new(InspConfig, 1);
  *copy = *config;
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++) {
    const Key *k = &schema[i];

    if (k->type == T_STRING || k->type == T_PATH)
      *FIELD(copy, k, char *) = g_strdup(*FIELD(config, k, char *));
  }
  copy->camera.controls =
      insp_camera_controls_copy(config->camera.controls, config->camera.n_controls);
  copy->path = g_strdup(config->path);
  copy->files = g_strdupv(config->files);
  return copy;
}

void
insp_config_free(InspConfig *config)
{
  if (!config)
    return;
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++) {
    const Key *k = &schema[i];

    if (k->type == T_STRING || k->type == T_PATH)
      g_free(*FIELD(config, k, char *));
  }
  insp_camera_controls_free(config->camera.controls, config->camera.n_controls);
  g_free(config->path);
  g_strfreev(config->files);
  g_free(config);
}

/* ---- Diff ----------------------------------------------------------------- */

static gboolean
key_equal(const Key *k, const InspConfig *a, const InspConfig *b)
{
  switch (k->type) {
  case T_STRING:
  case T_PATH:
    return g_strcmp0(*FIELD(a, k, char *), *FIELD(b, k, char *)) == 0;
  case T_BOOL:
    return !*FIELD(a, k, gboolean) == !*FIELD(b, k, gboolean);
  case T_INT:
  case T_ENUM:
    return *FIELD(a, k, int) == *FIELD(b, k, int);
  case T_DOUBLE:
    return *FIELD(a, k, double) == *FIELD(b, k, double);
  case T_RECT:
    return memcmp(FIELD(a, k, InspConfigRect), FIELD(b, k, InspConfigRect),
                  sizeof(InspConfigRect)) == 0;
  case T_LIST:
    return insp_camera_controls_equal(a->camera.controls, a->camera.n_controls, b->camera.controls,
                                      b->camera.n_controls);
  default:
    g_assert_not_reached();
  }
}

InspConfigChange
insp_config_diff(const InspConfig *old_config, const InspConfig *new_config)
{
  InspConfigChange change = INSP_CONFIG_CHANGE_NONE;

  g_return_val_if_fail(old_config != NULL && new_config != NULL, INSP_CONFIG_CHANGE_NONE);
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++)
    if (!key_equal(&schema[i], old_config, new_config))
      change |= schema[i].info.change;
  return change;
}

char **
insp_config_diff_keys(const InspConfig *old_config, const InspConfig *new_config)
{
  GPtrArray *keys = g_ptr_array_new();

  g_return_val_if_fail(old_config != NULL && new_config != NULL, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(schema); i++)
    if (!key_equal(&schema[i], old_config, new_config))
      g_ptr_array_add(keys, g_strdup_printf("[%s] %s", schema[i].info.section, schema[i].info.key));
  g_ptr_array_add(keys, NULL);
  return (char **)g_ptr_array_free(keys, FALSE);
}

char *
insp_config_change_to_string(InspConfigChange change)
{
  static const char *const names[] = {"inspection", "masks",   "log",     "model",
                                      "workers",    "camera",  "trigger", "mqtt",
                                      "spool",      "station", "http",    "archive"};
  GString *s = g_string_new(NULL);

  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    if (change & (1u << i)) {
      if (s->len)
        g_string_append(s, ", ");
      g_string_append(s, names[i]);
    }
  }
  if (s->len == 0)
    g_string_append(s, "none");
  return g_string_free(s, FALSE);
}
