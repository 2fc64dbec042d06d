/* The capture pipeline: a GStreamer graph built from InspCaptureOptions that
 * delivers packed RGB frames into a bounded frame queue, drained by a worker
 * pool (insp-workers.h) that scores frames through an InspScorer and hands
 * results out in capture order. Also the trigger interface and
 * restart-with-backoff on camera faults.
 *
 * pipeline/ may use model/; it knows no MQTT, systemd or config file: the
 * daemon fills InspCaptureOptions from the config.
 *
 * Threads (all created and joined here or in the worker pool, each named):
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

#include "insp-camera.h"
#include "insp-frame-queue.h"
#include "insp-frame.h"
#include "insp-pipeline-error.h"
#include "insp-scorer.h"

G_BEGIN_DECLS

/* ---- The pipeline ------------------------------------------------------------ */

/* The capture sources (v4l2, aravis, rtsp, files, test, pipeline) are one
 * table in insp-pipeline.c: name, launch template, the option that names what
 * to capture, live or replay, controls. A row is static data. */
typedef struct _InspCaptureSourceClass InspCaptureSourceClass;

/* The row named @name, or NULL with INSP_PIPELINE_ERROR_OPTIONS for a name
 * the table lacks and INSP_PIPELINE_ERROR_NOT_BUILT for a source this build
 * left out (aravis without -Daravis). */
const InspCaptureSourceClass *insp_capture_source_lookup(const char *name, GError **error);
/* Whether the source replays files (part ids are file stems, its end is
 * FINISHED rather than an error). */
gboolean insp_capture_source_class_is_replay(const InspCaptureSourceClass *klass);

typedef enum {
  INSP_TRIGGER_FREE,     /* every frame is inspected */
  INSP_TRIGGER_EXTERNAL, /* only the first frame after each insp_pipeline_trigger() */
} InspTriggerMode;

/* Everything the pipeline needs, filled by the daemon from [camera],
 * [trigger] and [model]. Strings are copied by insp_pipeline_new(). */
typedef struct {
  const char *source;   /* a name of the capture source table: "v4l2", "files"... */
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
  gint64 max_pixels; /* larger frames and files are rejected (counted); 0: INSP_IMAGE_MAX_PIXELS */
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

void insp_capture_options_init(InspCaptureOptions *opt); /* the defaults above, source "test" */

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
/* @trigger_id is the one given to insp_pipeline_trigger(). */
typedef void (*InspTriggerTimeoutFunc)(InspPipeline *pipe, guint64 trigger_id, const char *part_id,
                                       gpointer user_data);

typedef struct {
  InspResultFunc result;
  InspEventFunc event;
  InspTriggerTimeoutFunc trigger_timeout;
  gpointer user_data;
  /* Where bus messages, restarts and trigger timeouts run: the daemon's main
   * context (it must be iterated), or NULL for a thread of the pipeline's own. */
  GMainContext *context;
} InspPipelineCallbacks;

/* Validates @opt (an unknown or unbuilt source is an error, see
 * insp_capture_source_lookup()) and copies it; starts nothing. Takes a reference of @scorer.
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

/* Trigger mode: arms the first frame captured after now with @part_id and
 * @trigger_id (the caller's name for this trigger, 0 when it needs none),
 * which the frame carries (InspFrame.trigger_id) and the timeout callback
 * receives, so that two triggers with one part id stay apart.
 * Triggers queue (at most INSP_PIPELINE_MAX_TRIGGERS pending); any thread. */
#define INSP_PIPELINE_MAX_TRIGGERS 64
gboolean insp_pipeline_trigger(InspPipeline *pipe, const char *part_id, guint64 trigger_id,
                               GError **error);

/* Swaps the scorer (e.g. a new model scorer) for the frames that start
 * scoring after this call; each worker re-inits its state. Any thread. */
void insp_pipeline_set_scorer(InspPipeline *pipe, InspScorer *scorer);

void insp_pipeline_get_stats(InspPipeline *pipe, InspPipelineStats *out);

G_END_DECLS
