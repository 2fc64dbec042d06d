/* The records every output receives: InspPart, one per inspected part, built
 * once by the daemon's results thread; InspStatus, the periodic status;
 * InspEvent, something an operator must hear about.
 *
 * Ownership: an InspPart is reference-counted and immutable once handed to
 * the outputs, so an output may keep a reference (an archive writer, a live
 * page) and read it from any thread. InspStatus and InspEvent are borrowed
 * for the duration of a call. */
#pragma once

#include <glib.h>

#include "insp-model.h"

G_BEGIN_DECLS

/* The scoring stages timed per part, in order. */
#define INSP_PART_N_STAGES 5
extern const char *const insp_part_stage_names[INSP_PART_N_STAGES];

typedef struct {
  guint64 seq;            /* per station, +1 per part, never reused */
  char *part_id;          /* never NULL: trigger id, file name, or the seq in decimal */
  guint64 trigger_id;     /* the trigger this part answers (insp_pipeline_trigger), 0: none */
  gint64 capture_time_us; /* g_get_real_time() clock, when the frame was captured */
  gboolean fail;          /* the verdict */
  double score;           /* normalised image score (0.5 = the model's own threshold) */
  double threshold;       /* image threshold in force for this part */
  char *model;            /* model id; never NULL */
  double latency_ms;      /* capture to verdict */
  InspRegion *regions;    /* n_regions, NULL when none */
  gsize n_regions;
  guint dropped_before; /* frames dropped by the queue right before this part */
  int width, height;    /* the frame's size */
  GBytes *mask_png;     /* the defect mask as PNG, encoded once; NULL: not wanted */
  /* The snapshot command's answer, NULL unless a snapshot was asked for
   * this part: the frame and its anomaly map as PNGs. */
  GBytes *image_png, *map_png;
  /* Time per scoring stage, in ms: insp_part_stage_names[i] names stage i. */
  double stage_ms[INSP_PART_N_STAGES];
  /* The frame's pixels and the anomaly map, only when an output asked for
   * them (InspOutputClass.wants_images), else NULL. @rgb is packed RGB8,
   * @width x @height, rows @rgb_stride apart, kept alive by @rgb_owner until
   * the part goes; @map is the normalised anomaly map (0.5 = the pixel
   * threshold's scale), @map_width x @map_height, owned by the part. */
  const guint8 *rgb;
  int rgb_stride;
  GDestroyNotify rgb_release;
  gpointer rgb_owner;
  float *map;
  int map_width, map_height;
  /* private */
  gint ref_count;
} InspPart;

/* A zeroed part holding one reference; the caller fills it before handing it
 * on, and must not change it afterwards. */
InspPart *insp_part_new(void);
InspPart *insp_part_ref(InspPart *part);
void insp_part_unref(InspPart *part); /* accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspPart, insp_part_unref)

typedef enum {
  INSP_STATE_ONLINE = 0,
  INSP_STATE_DEGRADED,
  INSP_STATE_OFFLINE,
} InspState;

const char *insp_state_to_string(InspState state); /* "online", ... */

/* The daemon's periodic status (every few seconds, and on a change). */
typedef struct {
  InspState state;
  const char *model; /* model id, NULL when none */
  double threshold;
  double fps;
  guint64 frames, dropped, pass, fail;
  guint64 triggers;         /* accepted since start */
  guint64 trigger_timeouts; /* answered "timeout": no frame came */
  guint64 trigger_failures; /* answered with another failure (scoring, no seq, stop) */
  guint64 rejected;         /* images refused before inspection: undecodable, over max_pixels, wrong
                             * format or size */
  guint64 spool_dropped_results; /* results a full spool dropped (each announced by spool_full) */
  guint64 spool_dropped_masks;
  double pixel_threshold;
  guint queue_frames;     /* frames waiting for a worker now */
  int mqtt_connected;     /* 1 connected, 0 not, -1 no broker configured */
  guint64 spool_messages; /* messages in the spool (not yet acknowledged by the broker) */
  guint64 spool_bytes;
  const char *detector, *backbone; /* the model's, NULL when none */
  int input_size;
  gint64 since_us; /* wall-clock time (µs since 1970) the counters started: the daemon's
                    * start; 0: not known yet (the MQTT client's start is said then) */
} InspStatus;

/* Something an operator must hear about (the journal has it too). */
typedef struct {
  const char *level;   /* "info" | "warning" | "error" */
  const char *code;    /* stable, snake_case: "camera_lost", ... */
  const char *message; /* one readable line */
  const char *part_id; /* the part it concerns, NULL when none */
  gboolean has_seq;    /* seq_first..seq_last name the parts it concerns */
  guint64 seq_first, seq_last;
} InspEvent;

G_END_DECLS
