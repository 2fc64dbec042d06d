/* The capture pipeline: a GStreamer graph built from InspCaptureOptions that
 * delivers packed RGB frames, a bounded frame queue, N inspector worker
 * threads that score frames through an InspScorer, and a reorder stage that
 * hands results out in capture order. Also camera control (libv4l2), the
 * trigger interface, restart-with-backoff on camera faults, and the camera
 * listing behind `inspectd cameras`.
 *
 * pipeline/ may use model/; it knows no MQTT, systemd or config file: the
 * daemon fills InspCaptureOptions from the config.
 *
 * Threads (all created and joined here, each named):
 *   - GStreamer streaming threads ("insp-capture" side): take frames off the
 *     appsink, apply the trigger, push into the frame queue (may block under
 *     drop = never);
 *   - "insp-files": the feeder of the files source;
 *   - "insp-worker-N": pop frames, score them (InspScorer callbacks run here);
 *   - "insp-results": the only thread that calls the result callback;
 *   - the control context (the GMainContext given in InspPipelineCallbacks, or
 *     the pipeline's own "insp-bus" thread when none is given): bus messages,
 *     restarts with backoff, trigger timeouts. The event and trigger-timeout
 *     callbacks are called there.
 * No callback is ever called with a pipeline lock held. */
#pragma once

#include <glib.h>
#include "insp-model.h"

G_BEGIN_DECLS

#define INSP_PIPELINE_ERROR (insp_pipeline_error_quark())
GQuark insp_pipeline_error_quark(void);

typedef enum {
  INSP_PIPELINE_ERROR_OPTIONS,   /* an option is missing or invalid (named) */
  INSP_PIPELINE_ERROR_GRAPH,     /* the capture graph cannot be built (missing element...) */
  INSP_PIPELINE_ERROR_DEVICE,    /* a camera device cannot be opened or queried */
  INSP_PIPELINE_ERROR_CONTROL,   /* a control is unknown, out of range, or did not take */
  INSP_PIPELINE_ERROR_TRIGGER,   /* trigger queue full, or not in trigger mode */
  INSP_PIPELINE_ERROR_NOT_BUILT, /* Aravis support not compiled in */
  INSP_PIPELINE_ERROR_SCORE,     /* a scorer failed on a frame */
} InspPipelineError;

/* ---- Frames -------------------------------------------------------------- */

/* One captured image, packed RGB8. Reference-counted; immutable once it is in
 * the frame queue (except the fields the queue itself writes, documented). */
typedef struct {
  const guint8 *data; /* width*height RGB pixels, rows @stride bytes apart */
  int width;
  int height;
  int stride;
  guint64 seq;          /* capture sequence, +1 per frame taken into the queue, across restarts */
  gint64 mono_us;       /* capture time, g_get_monotonic_time() clock */
  gint64 wall_us;       /* capture time, g_get_real_time() clock */
  char *part_id;        /* trigger part id, file stem, or the decimal seq */
  guint dropped_before; /* frames the queue dropped right before this one (written by the queue) */
  guint64 index;        /* pop order, 0, 1, 2... (written by the queue at pop) */
  /* private */
  gint ref_count;
  GDestroyNotify data_free;
  gpointer data_owner;
} InspFrame;

/* A new frame of @width x @height with its own zeroed pixels (stride = 3*width).
 * The caller owns the returned reference. */
InspFrame *insp_frame_new(int width, int height);
/* A frame over pixels the caller keeps alive until @data_free(@data_owner) is
 * called when the last reference goes. */
InspFrame *insp_frame_new_wrapped(const guint8 *data, int width, int height, int stride,
                                  GDestroyNotify data_free, gpointer data_owner);
InspFrame *insp_frame_ref(InspFrame *frame);
void insp_frame_unref(InspFrame *frame); /* accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspFrame, insp_frame_unref)

/* ---- The bounded frame queue ---------------------------------------------- */

typedef enum {
  INSP_DROP_NEVER,  /* full queue: the pusher blocks (backpressure), nothing is lost */
  INSP_DROP_OLDEST, /* full queue: the oldest queued frame is dropped, the newest wins */
} InspDropPolicy;

typedef struct _InspFrameQueue InspFrameQueue;

/* A queue of at most @capacity (>= 1) frames. */
InspFrameQueue *insp_frame_queue_new(guint capacity, InspDropPolicy policy);
void insp_frame_queue_free(InspFrameQueue *q); /* accepts NULL; unrefs queued frames */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspFrameQueue, insp_frame_queue_free)

/* Takes @frame (transfer full). When full: INSP_DROP_OLDEST unrefs the oldest
 * queued frame, counts it, and adds it (and the drops before it) to the
 * dropped_before of the frame that followed it; INSP_DROP_NEVER blocks until
 * there is room. Returns FALSE (and unrefs @frame) when the queue or its input
 * is flushing. */
gboolean insp_frame_queue_push(InspFrameQueue *q, InspFrame *frame);
/* Blocks for the oldest frame (transfer full, its index set) or returns NULL
 * when the queue is flushing. */
InspFrame *insp_frame_queue_pop(InspFrameQueue *q);
/* Flushing: every blocked push and pop returns at once, queued frames are
 * dropped (not counted), new pushes and pops fail until unset. */
void insp_frame_queue_set_flushing(InspFrameQueue *q, gboolean flushing);
/* Input flushing: only pushes fail (blocked ones return); pops go on draining. */
void insp_frame_queue_set_input_flushing(InspFrameQueue *q, gboolean flushing);
/* Closes the input for good: pushes fail, pops drain what is queued, then
 * return NULL. */
void insp_frame_queue_close(InspFrameQueue *q);
guint insp_frame_queue_get_depth(InspFrameQueue *q);
guint64 insp_frame_queue_get_dropped(InspFrameQueue *q);

/* ---- Scorers --------------------------------------------------------------- */

/* What a scorer fills for one frame. The pipeline owns it and frees mask,
 * map and regions. */
typedef struct {
  InspFrame *frame; /* the frame scored (a reference) */
  guint64 index;    /* delivery order (= frame->index) */
  gboolean ok;      /* FALSE: @error says why; the other fields are unset */
  GError *error;
  float score;     /* normalised image score */
  float threshold; /* the image threshold the verdict used */
  gboolean fail;   /* the verdict */
  int map_width, map_height;
  float *map;          /* g_malloc'd anomaly map or NULL */
  guint8 *mask;        /* g_malloc'd frame-sized 0/255 mask or NULL */
  GArray *regions;     /* of InspRegion, or NULL */
  char *model_id;      /* g_strdup'd, or NULL */
  int worker;          /* which worker scored it */
  gint64 done_mono_us; /* when scoring finished */
  double latency_ms;   /* capture to scored */
} InspResult;

void insp_result_free(InspResult *r); /* accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspResult, insp_result_free)

/* The scorer interface the workers call. Every function is called from a
 * worker thread ("insp-worker-N"), concurrently from different workers with
 * different @worker_state; @scorer_data is shared and must be thread-safe. */
typedef struct {
  /* Creates one worker's scratch state (may return NULL as a valid state). */
  gpointer (*worker_init)(gpointer scorer_data, int worker, GError **error);
  void (*worker_finalize)(gpointer scorer_data, gpointer worker_state);
  /* Scores @frame into @result (score, threshold, fail, map, mask, regions,
   * model_id); returns FALSE with @error set on failure. */
  gboolean (*score)(gpointer scorer_data, gpointer worker_state, const InspFrame *frame,
                    InspResult *result, GError **error);
} InspScorerFuncs;

typedef struct _InspScorer InspScorer;

/* @funcs must outlive the scorer; @data_free(@data) runs with the last unref. */
InspScorer *insp_scorer_new(const InspScorerFuncs *funcs, gpointer data, GDestroyNotify data_free);
InspScorer *insp_scorer_ref(InspScorer *s);
void insp_scorer_unref(InspScorer *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspScorer, insp_scorer_unref)

/* The default scorer over an InspModel: insp_model_score, then insp_inspect
 * with the current params. Takes its own reference of @model. */
InspScorer *insp_model_scorer_new(InspModel *model, const InspInspectParams *params);
/* Swaps the model atomically: each frame takes a reference of the model
 * current when its scoring starts, so frames in flight finish on the old one;
 * a worker rebuilds its scratch on its next frame. Any thread. */
void insp_model_scorer_set_model(InspScorer *s, InspModel *model);
/* Sets thresholds/ROI atomically; they apply from the next frame. Any thread. */
void insp_model_scorer_set_params(InspScorer *s, const InspInspectParams *params);
/* Returns a new reference of the current model. */
InspModel *insp_model_scorer_get_model(InspScorer *s);

/* ---- Camera controls ------------------------------------------------------- */

typedef struct {
  char *name;  /* v4l2-ctl style: lower case, spaces to underscores */
  char *value; /* integer, or for menus an integer or the item's name */
} InspCameraControl;

/* Parses "name=value, name=value" (commas or newlines) into a GArray of
 * InspCameraControl (its clear func frees the strings); an empty string gives
 * an empty array. Rejects a missing '=', an empty name, a duplicate. */
GArray *insp_camera_controls_parse(const char *text, GError **error);

/* ---- The pipeline ------------------------------------------------------------ */

typedef enum {
  INSP_CAPTURE_SOURCE_V4L2,
  INSP_CAPTURE_SOURCE_ARAVIS,
  INSP_CAPTURE_SOURCE_RTSP,
  INSP_CAPTURE_SOURCE_FILES,
  INSP_CAPTURE_SOURCE_TEST,
  INSP_CAPTURE_SOURCE_PIPELINE,
} InspCaptureSource;

typedef enum {
  INSP_TRIGGER_FREE,     /* every frame is inspected */
  INSP_TRIGGER_EXTERNAL, /* only the first frame after each insp_pipeline_trigger() */
} InspTriggerMode;

/* Everything the pipeline needs, filled by the daemon from [camera],
 * [trigger] and [model]. Strings are copied by insp_pipeline_new(). */
typedef struct {
  InspCaptureSource source;
  const char *device;   /* v4l2: /dev/videoN */
  const char *camera;   /* aravis: camera name (NULL: the first one) */
  const char *uri;      /* rtsp: rtsp://... */
  const char *location; /* files: a glob, e.g. /data/parts/ *.png, sorted by name */
  gboolean loop;        /* files: start again after the last file */
  double fps;           /* files, test: frames per second; 0 = as fast as the workers take them */
  const char *pipeline; /* pipeline: a gst-launch description ending in a source pad */
  const InspCameraControl *controls; /* v4l2 and aravis controls, applied at every start */
  guint n_controls;
  int width, height; /* > 0: scale to this size; 0: the camera's own */
  InspDropPolicy
      drop; /* forced to INSP_DROP_NEVER in trigger mode: a triggered part is never dropped */
  guint queue_size; /* frames; 0: 4 */
  guint workers;    /* inspector threads; 0: 1 */
  InspTriggerMode trigger;
  guint timeout_ms;         /* trigger timeout; 0: 1000 */
  guint backoff_initial_ms; /* first restart delay; 0: 500 */
  guint backoff_max_ms;     /* cap; 0: 30000 */
  guint stable_ms;          /* a capture that ran this long resets the backoff; 0: 10000 */
} InspCaptureOptions;

void insp_capture_options_init(InspCaptureOptions *opt); /* the defaults above, source test */

/* "v4l2", "aravis"... <-> enum; FALSE/NULL for an unknown name. */
gboolean insp_capture_source_from_string(const char *name, InspCaptureSource *out);
const char *insp_capture_source_to_string(InspCaptureSource source);

typedef enum {
  INSP_PIPELINE_EVENT_STARTED,    /* capture is running (first start or after a restart) */
  INSP_PIPELINE_EVENT_ERROR,      /* the capture failed (message: operator text; detail: debug) */
  INSP_PIPELINE_EVENT_EOS,        /* unexpected end of stream */
  INSP_PIPELINE_EVENT_RESTARTING, /* a restart is scheduled: attempt, delay_ms */
  INSP_PIPELINE_EVENT_CONTROL,    /* a control did not take or is unknown (warning) */
  INSP_PIPELINE_EVENT_FINISHED,   /* a files replay without loop has delivered everything */
  INSP_PIPELINE_EVENT_REJECTED,   /* a file of a replay cannot be decoded: skipped (warning) */
} InspPipelineEventKind;

typedef struct {
  InspPipelineEventKind kind;
  const char *message; /* for a person */
  const char *detail;  /* debug detail, or NULL */
  guint attempt;       /* RESTARTING: 1, 2, ... since the last stable run */
  guint delay_ms;      /* RESTARTING: when the next attempt starts */
} InspPipelineEvent;

typedef struct {
  guint64 frames_captured;    /* frames that reached the appsink */
  guint64 frames_queued;      /* taken into the queue (got a seq) */
  guint64 frames_inspected;   /* results delivered */
  guint64 frames_dropped;     /* dropped by the queue (drop = oldest) */
  guint64 frames_untriggered; /* trigger mode: frames no trigger was waiting for */
  guint64
      rejected_size; /* wrong width/height (fixed size configured, or size changed mid-stream) */
  guint64 rejected_format; /* not packed RGB / unmappable */
  guint64 score_errors;    /* the scorer failed */
  guint64 restarts;        /* capture restarts */
  guint64 trigger_timeouts;
  guint queue_depth;
  double fps; /* inspected frames per second over the last few seconds */
} InspPipelineStats;

typedef struct _InspPipeline InspPipeline;

/* Called from "insp-results", in frame index order, one at a time; @result
 * is owned by the pipeline and valid only during the call (take a reference
 * of result->frame to keep the pixels). It must not wait for the control
 * context: insp_pipeline_stop() joins this thread from there. */
typedef void (*InspResultFunc)(InspPipeline *pipe, const InspResult *result, gpointer user_data);
/* Called from the control context. */
typedef void (*InspEventFunc)(InspPipeline *pipe, const InspPipelineEvent *event,
                              gpointer user_data);
/* Called from the control context: no frame came within timeout_ms of the trigger. */
typedef void (*InspTriggerTimeoutFunc)(InspPipeline *pipe, const char *part_id, gpointer user_data);

typedef struct {
  InspResultFunc result;
  InspEventFunc event;
  InspTriggerTimeoutFunc trigger_timeout;
  gpointer user_data;
  /* Where bus messages, restarts and trigger timeouts run: the daemon's main
   * context (it must be iterated), or NULL for a thread of the pipeline's own. */
  GMainContext *context;
} InspPipelineCallbacks;

/* Validates @opt and copies it; starts nothing. Takes a reference of @scorer.
 * Starting, stopping and restarts run on the control context; an aravis
 * (re)start probes the camera there, which can take a second or two. */
InspPipeline *insp_pipeline_new(const InspCaptureOptions *opt, InspScorer *scorer,
                                const InspPipelineCallbacks *callbacks, GError **error);
/* Starts the workers and the capture. An error building the graph the first
 * time (missing element, bad description, bad glob) is returned; a camera
 * that fails later is restarted with backoff and reported as events. */
gboolean insp_pipeline_start(InspPipeline *pipe, GError **error);
/* Stops capture, lets the workers finish the frames already queued when
 * @drain, delivers their results, joins every thread. Idempotent. Must not be
 * called from a pipeline callback. */
void insp_pipeline_stop(InspPipeline *pipe, gboolean drain);
void insp_pipeline_free(InspPipeline *pipe); /* stops (without drain) first; accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspPipeline, insp_pipeline_free)

/* Trigger mode: arms the first frame captured after now with @part_id.
 * Triggers queue (at most INSP_PIPELINE_MAX_TRIGGERS pending); any thread. */
#define INSP_PIPELINE_MAX_TRIGGERS 64
gboolean insp_pipeline_trigger(InspPipeline *pipe, const char *part_id, GError **error);

/* Swaps the scorer (e.g. a new model scorer) for the frames that start
 * scoring after this call; each worker re-inits its state. Any thread. */
void insp_pipeline_set_scorer(InspPipeline *pipe, InspScorer *scorer);

void insp_pipeline_get_stats(InspPipeline *pipe, InspPipelineStats *out);

/* ---- Cameras --------------------------------------------------------------- */

/* A human-readable listing for `inspectd cameras`: every /dev/video* device
 * with its capabilities, formats, frame sizes and controls (range, step,
 * default, current), then the GenICam cameras Aravis finds (when built with
 * Aravis). With no device it says "no V4L2 devices". */
char *insp_cameras_describe(void);

G_END_DECLS
