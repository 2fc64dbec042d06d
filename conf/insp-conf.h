/* conf/: the inspectd configuration.
 *
 * One schema table (conf/insp-conf.c) names every key with its type, default,
 * validator, hot or cold, and the component a change restarts. From it:
 *  - insp_config_load() reads FILE and its drop-ins FILE.d/NAME.conf (name
 *    order, later keys win), validates everything and returns a plain struct of
 *    typed fields, or NULL with EVERY problem, each one line
 *    "FILE: [section] key: reason" naming the file that set the value;
 *  - insp_config_diff() says which components two valid configs differ in, so
 *    a reload applies hot changes at once and restarts only what must restart;
 *  - the threshold override (insp_config_override_*) keeps a threshold set by
 *    an MQTT command across restarts.
 *
 * An InspConfig is immutable once returned: share it read-only between
 * threads and replace it whole (copy, change, swap). String fields are never
 * NULL; "" means "not set" with the meaning each key documents. No function
 * here keeps global state, so any thread may call them (the daemon does so
 * from its main loop). */
#pragma once

#include <glib.h>

#include "insp-camera-controls.h"

G_BEGIN_DECLS

#define INSP_CONFIG_ERROR (insp_config_error_quark())
GQuark insp_config_error_quark(void);

typedef enum {
  INSP_CONFIG_ERROR_INVALID, /* the config has problems; the problems list says which */
  INSP_CONFIG_ERROR_IO,      /* a state file could not be read or written */
} InspConfigError;

typedef enum {
  INSP_CONFIG_CAMERA_SOURCE_V4L2,
  INSP_CONFIG_CAMERA_SOURCE_ARAVIS,
  INSP_CONFIG_CAMERA_SOURCE_RTSP,
  INSP_CONFIG_CAMERA_SOURCE_FILES,
  INSP_CONFIG_CAMERA_SOURCE_TEST,
  INSP_CONFIG_CAMERA_SOURCE_PIPELINE,
} InspConfigCameraSource;

/* The name [camera] source gives @source ("v4l2", "files"...), static; NULL
 * for a value that is not one of the enum's. */
const char *insp_config_camera_source_to_string(InspConfigCameraSource source);

/* What the frame queue does when full. The key also takes "auto" (the
 * default), which resolves at load time: oldest for live sources (v4l2,
 * aravis, rtsp, pipeline), never for replays (files, test). */
typedef enum {
  INSP_CONFIG_DROP_NEVER,  /* block the source: no frame is lost */
  INSP_CONFIG_DROP_OLDEST, /* drop the oldest queued frame, count it */
} InspConfigDrop;

typedef enum {
  INSP_CONFIG_TRIGGER_MODE_FREE, /* inspect every frame the camera delivers */
  INSP_CONFIG_TRIGGER_MODE_MQTT, /* inspect the next frame after a cmd/trigger */
} InspConfigTriggerMode;

typedef enum {
  INSP_CONFIG_MASKS_FAIL, /* publish masks of failed parts only */
  INSP_CONFIG_MASKS_ALL,
  INSP_CONFIG_MASKS_NONE,
} InspConfigMasks;

/* [spool] sync: when the spool's appends are made durable (insp-spool.c). */
typedef enum {
  INSP_CONFIG_SPOOL_SYNC_BATCH,  /* at most once a second: a power cut loses up to 1 s */
  INSP_CONFIG_SPOOL_SYNC_ALWAYS, /* every message: a power cut loses nothing accepted */
  INSP_CONFIG_SPOOL_SYNC_NEVER,  /* the kernel's writeback (about 30 s) */
} InspConfigSpoolSync;

/* Which commands the daemon subscribes to ([mqtt] commands). */
typedef enum {
  INSP_CONFIG_COMMANDS_NONE,    /* none (old configs: false) */
  INSP_CONFIG_COMMANDS_TRIGGER, /* cmd/trigger only (the default) */
  INSP_CONFIG_COMMANDS_ALL,     /* trigger, threshold, reload, snapshot (old configs: true) */
} InspConfigCommands;

/* Values are the syslog/journal priorities. */
typedef enum {
  INSP_CONFIG_LOG_LEVEL_ERROR = 3,
  INSP_CONFIG_LOG_LEVEL_WARNING = 4,
  INSP_CONFIG_LOG_LEVEL_NOTICE = 5,
  INSP_CONFIG_LOG_LEVEL_INFO = 6,
  INSP_CONFIG_LOG_LEVEL_DEBUG = 7,
} InspConfigLogLevel;

/* A rectangle in image pixels; w == 0 (and h == 0) means "the whole image". */
typedef struct {
  int x, y, w, h;
} InspConfigRect;

/* The most controls [camera] controls may list. */
#define INSP_CONFIG_MAX_CONTROLS INSP_CAMERA_CONTROLS_MAX

typedef struct {
  struct {
    char *id;        /* topic level and part-name prefix; default: the host name */
    char *state_dir; /* absolute; seq counter and threshold override live here */
  } station;
  struct {
    InspConfigCameraSource source;
    char *device;   /* v4l2 device node */
    char *camera;   /* Aravis camera name; "" = the first camera found */
    char *uri;      /* rtsp: the stream URI */
    char *location; /* files: absolute glob of the images to replay */
    gboolean loop;  /* files/test: start again at the end */
    double fps;     /* 0 = camera's own rate; for files/test as fast as workers take frames */
    char *pipeline; /* pipeline: GStreamer source description producing video */
    InspCameraControl *controls; /* n_controls entries, in file order, names unique */
    guint n_controls;
    int width, height;   /* 0 = the camera's own resolution */
    int max_pixels;      /* larger frames and image files are rejected */
    InspConfigDrop drop; /* resolved; never "auto" */
  } camera;
  struct {
    InspConfigTriggerMode mode;
    int timeout_ms; /* mqtt: how long a trigger waits for its frame */
  } trigger;
  struct {
    char *path;       /* absolute path of a readable model file; "" = demo (source=test only) */
    int workers;      /* resolved: 1..64 (the key's 0 = one per CPU) */
    int blas_threads; /* OpenBLAS threads of the process (one pool) */
  } model;
  struct {
    double threshold;                    /* effective image threshold (override applied) */
    double pixel_threshold;              /* effective pixel threshold for the mask */
    int min_region_area;                 /* pixels; smaller regions are dropped */
    InspConfigRect roi;                  /* w == 0: the whole image */
    double configured_threshold;         /* what the config files say (before override) */
    double configured_pixel_threshold;   /* idem */
    double threshold_min, threshold_max; /* bounds of a threshold set by a command */
    double pixel_threshold_min, pixel_threshold_max; /* idem, pixel threshold */
  } inspection;
  struct {
    char *host; /* "" = MQTT disabled */
    int port;
    char *client_id; /* resolved: default "inspectd-<station id>" */
    char *username;
    char *password_file;               /* absolute, readable; "" = none */
    char *tls_ca, *tls_cert, *tls_key; /* absolute, readable; "" = none */
    int qos;
    int keepalive; /* seconds */
    char *topic_prefix;
    InspConfigMasks masks;
    InspConfigCommands commands; /* which of {prefix}/{station}/cmd/... are accepted */
    gboolean insecure_commands;  /* commands = all allowed on an anonymous connection */
    char *reply_prefix;          /* "" = any response topic outside {prefix}/ */
    gboolean homeassistant;      /* publish Home Assistant discovery configs */
    char *homeassistant_prefix;  /* HA's discovery prefix, default "homeassistant" */
  } mqtt;
  struct {
    char *dir; /* absolute */
    int max_mb;
    InspConfigSpoolSync sync;
  } spool;
  struct {
    char *listen;        /* "HOST:PORT", "" = off */
    char *password_file; /* "user:password" lines; "" = none */
    gboolean insecure;   /* listen beyond loopback without a password */
    char *tls_cert;      /* PEM certificate (chain): serve HTTPS; "" = plain HTTP */
    char *tls_key;       /* PEM private key of tls_cert */
  } http;
  struct {
    char *dir;            /* absolute; "" = no archive */
    InspConfigMasks what; /* which parts: fail, all, none (the masks enum's values) */
    int max_mb;           /* the folder's size bound, oldest parts removed first */
    int max_age_days;     /* parts older are removed; 0 = no age limit */
    int jpeg_quality;     /* 1..100 */
  } archive;
  struct {
    InspConfigLogLevel level;
  } log;
  char *path;   /* the main file, or the name given to insp_config_load_from_data() */
  char **files; /* every file read, main file first then drop-ins in order */
} InspConfig;

/* One validation problem. @text is the line to show:
 * "FILE: [section] key: reason", "FILE: [section]: reason" or
 * "FILE:LINE: reason" for syntax errors. */
typedef struct {
  char *file;    /* never NULL */
  int line;      /* 1-based; 0 when not tied to a line */
  char *section; /* NULL for file-level problems */
  char *key;     /* NULL for file- and section-level problems */
  char *reason;
  char *text;
} InspConfigProblem;

void insp_config_problem_free(InspConfigProblem *problem);

/* Reads @path, then every regular file @path.d/NAME.conf in byte order of
 * NAME (hidden files skipped), later values winning; validates it all.
 * Relative paths in values are taken relative to the folder of the file that
 * sets them. Returns a new config (free with insp_config_free()), or NULL with
 * @error set (INSP_CONFIG_ERROR_INVALID) and, when @problems_out is not NULL, a
 * new array of InspConfigProblem (owns its elements) with every problem in
 * the order found. *@problems_out is written only on failure. Does not apply
 * the threshold override. */
InspConfig *insp_config_load(const char *path, GPtrArray **problems_out, GError **error);

/* Like insp_config_load() for a config held in memory: @name is the file name
 * used in messages and relative paths are relative to the current folder. No
 * drop-ins. @length may be -1 for a NUL-terminated @data. */
InspConfig *insp_config_load_from_data(const char *data, gssize length, const char *name,
                                       GPtrArray **problems_out, GError **error);

/* The config of an empty file: every default (the demo line: test source,
 * model trained at start). Never fails. */
InspConfig *insp_config_new_default(void);

/* "HOST:PORT" (HOST may be [v6]) -> host (g_free) and port; FALSE if not. */
gboolean insp_config_parse_listen(const char *value, char **host, int *port);
/* Whether a valid listen address stays on this machine (127.x, ::1,
 * localhost). */
gboolean insp_config_listen_is_loopback(const char *value);

/* The closest of @candidates (NULL-terminated) to @name, for a "did you
 * mean" (ASCII case-insensitive edit distance, adjacent swaps counting one),
 * or NULL when none is close: at most a third of the name's length away (at
 * least 1, at most 3). Returns one of @candidates (not a copy). */
const char *insp_config_suggest(const char *name, const char *const *candidates);

/* A deep copy of @config. */
InspConfig *insp_config_copy(const InspConfig *config);

void insp_config_free(InspConfig *config);

/* Components whose settings differ between two configs. Hot changes apply to
 * the next frame; the others restart (or swap) only their component. */
typedef enum {
  INSP_CONFIG_CHANGE_NONE = 0,
  INSP_CONFIG_CHANGE_INSPECTION = 1 << 0, /* hot: thresholds, min area, roi */
  INSP_CONFIG_CHANGE_MASKS = 1 << 1,      /* hot: [mqtt] masks */
  INSP_CONFIG_CHANGE_LOG = 1 << 2,        /* hot: [log] level */
  INSP_CONFIG_CHANGE_MODEL = 1 << 3,      /* load the new model beside the old, swap */
  INSP_CONFIG_CHANGE_WORKERS = 1 << 4,    /* restart the worker pool */
  INSP_CONFIG_CHANGE_CAMERA = 1 << 5,     /* restart the capture pipeline */
  INSP_CONFIG_CHANGE_TRIGGER = 1 << 6,    /* restart the trigger */
  INSP_CONFIG_CHANGE_MQTT = 1 << 7,       /* restart the publisher (topics, connection) */
  INSP_CONFIG_CHANGE_SPOOL = 1 << 8,      /* restart the publisher with its spool */
  INSP_CONFIG_CHANGE_STATION = 1 << 9,    /* reopen the state folder (seq counter) */
  INSP_CONFIG_CHANGE_HTTP = 1 << 10,      /* restart the HTTP server */
  INSP_CONFIG_CHANGE_ARCHIVE = 1 << 11,   /* restart the archive writer */
} InspConfigChange;

#define INSP_CONFIG_CHANGE_HOT                                                                     \
  (INSP_CONFIG_CHANGE_INSPECTION | INSP_CONFIG_CHANGE_MASKS | INSP_CONFIG_CHANGE_LOG)
#define INSP_CONFIG_CHANGE_COLD                                                                    \
  (INSP_CONFIG_CHANGE_MODEL | INSP_CONFIG_CHANGE_WORKERS | INSP_CONFIG_CHANGE_CAMERA |             \
   INSP_CONFIG_CHANGE_TRIGGER | INSP_CONFIG_CHANGE_MQTT | INSP_CONFIG_CHANGE_SPOOL |               \
   INSP_CONFIG_CHANGE_STATION | INSP_CONFIG_CHANGE_HTTP | INSP_CONFIG_CHANGE_ARCHIVE)

/* The components in which @new_config differs from @old_config (both valid).
 * A change of [station] id also flags MQTT (topics and default client id). */
InspConfigChange insp_config_diff(const InspConfig *old_config, const InspConfig *new_config);

/* The keys that differ, as "[section] key" strings in schema order (a new
 * NULL-terminated array, free with g_strfreev()), for the journal. */
char **insp_config_diff_keys(const InspConfig *old_config, const InspConfig *new_config);

/* "inspection, camera" for the flags in @change (new string); "none" for 0. */
char *insp_config_change_to_string(InspConfigChange change);

/* The threshold override: <state_dir>/threshold-override.conf, a key file
 *   [inspection]
 *   threshold=0.62
 *   configured_threshold=0.5
 *   (and pixel_threshold / configured_pixel_threshold)
 * written when an MQTT command sets a threshold. It holds the config files'
 * value at the time (configured_*): the override wins while the config files
 * still say that value, and goes stale - and is removed - as soon as they say
 * something else, so that an edited config file always wins over an older
 * command. */

/* The override file of @config (new string). */
char *insp_config_override_path(const InspConfig *config);

/* Applies the override file of @config's state_dir to @config (which the
 * caller owns and has not shared yet). A missing file is not an error. A value
 * whose configured_* no longer matches @config is stale: it is not applied and
 * is removed from the file (the file is deleted when nothing is left).
 * @out_applied (may be NULL) gets the INSP_CONFIG_CHANGE_INSPECTION flag when
 * something was applied, else 0. Returns FALSE with @error
 * (INSP_CONFIG_ERROR_IO or _INVALID) when the file exists but cannot be read,
 * parsed or holds an out-of-range value; @config is then unchanged. */
gboolean insp_config_override_apply(InspConfig *config, InspConfigChange *out_applied,
                                    GError **error);

/* Records an override for @config (the config in force, whose configured_*
 * values are recorded as the base): @threshold and/or @pixel_threshold, each
 * NAN to leave that one as it is. Values must be in [0, 100]. Creates the
 * state folder if needed and replaces the file atomically. Does not change
 * @config: the caller swaps in a copy with the new thresholds. */
gboolean insp_config_override_save(const InspConfig *config, double threshold,
                                   double pixel_threshold, GError **error);

/* Removes the override file; a missing file is not an error. */
gboolean insp_config_override_clear(const InspConfig *config, GError **error);

/* The schema, for documentation and tests. */
typedef struct {
  const char *section;
  const char *key;
  const char *type;          /* "string", "bool", "int", "double", "enum", "path", "list", "rect" */
  const char *default_value; /* as written in the file ("" for empty) */
  const char *allowed;       /* range or values, e.g. "1 <= x <= 65535", "never, oldest"; "" */
  gboolean hot;
  InspConfigChange change; /* the component(s) a change of this key touches */
  const char *doc;         /* one line */
} InspConfigKeyInfo;

gsize insp_config_schema_n_keys(void);
/* Key @index (< insp_config_schema_n_keys()), in schema order; static data. */
const InspConfigKeyInfo *insp_config_schema_key(gsize index);
/* The key, or NULL when the schema has no such key. */
const InspConfigKeyInfo *insp_config_schema_lookup(const char *section, const char *key);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspConfig, insp_config_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspConfigProblem, insp_config_problem_free)

G_END_DECLS
