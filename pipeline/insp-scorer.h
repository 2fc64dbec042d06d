/* Scorers: the interface the inspector workers call to score one frame, and
 * InspResult, the record one scored frame yields.
 *
 * Ownership: a scorer is reference-counted; its data is freed with the last
 * reference. A result owns a reference of its frame and everything it points
 * to. Threads: the scorer functions run on worker threads, concurrently, each
 * worker with its own state; ref/unref from any thread. */
#pragma once

#include <glib.h>

#include "insp-frame.h"

G_BEGIN_DECLS

/* The stages of scoring one frame, timed into InspResult.stage_ms:
 * resize and normalise; the CNN and feature aggregation; the detector's
 * nearest-neighbour search (PatchCore) or distance (PaDiM); the anomaly map
 * (upsampling, blur, normalisation); the mask and regions. */
typedef enum {
  INSP_STAGE_PREPROCESS,
  INSP_STAGE_BACKBONE,
  INSP_STAGE_SEARCH,
  INSP_STAGE_MAP,
  INSP_STAGE_REGIONS,
  INSP_N_STAGES,
} InspStage;

/* What a scorer fills for one frame. The worker pool owns it (and frees mask,
 * map and regions with it); a result callback only borrows it, and must not
 * keep a pointer to map, mask, regions or model_id past the call: they may
 * be the scorer's recycled buffers. */
typedef struct {
  InspFrame *frame; /* the frame scored (a reference) */
  guint64 index;    /* delivery order (= frame->index) */
  gboolean ok;      /* FALSE: @error says why; the other fields are unset */
  GError *error;
  float score;     /* normalised image score */
  float threshold; /* the image threshold the verdict used */
  gboolean fail;   /* the verdict */
  int map_width, map_height;
  /* The frame's aspect over the model's input (1: the same), and whether it
   * differs by more than INSP_MODEL_ASPECT_TOLERANCE (stretched); 0 / FALSE
   * from a scorer without a model. */
  double aspect_ratio;
  gboolean aspect_differs;
  float *map;          /* g_malloc'd anomaly map or NULL */
  guint8 *mask;        /* g_malloc'd frame-sized 0/255 mask or NULL */
  GArray *regions;     /* of InspRegion, or NULL */
  char *model_id;      /* g_strdup'd, or NULL */
  int worker;          /* which worker scored it */
  gint64 done_mono_us; /* when scoring finished */
  double latency_ms;   /* capture to scored */
  /* Time per stage (INSP_STAGE_*), 0 where a scorer does not measure it. */
  double stage_ms[INSP_N_STAGES];
  /* private: a scorer that lends @map, @mask, @regions and @model_id (from
   * buffers it recycles) rather than handing them over sets @lent_release;
   * insp_result_free() then calls it with @lent instead of freeing those. */
  GDestroyNotify lent_release;
  gpointer lent;
} InspResult;

/* Accepts NULL; frees the frame reference, the error, and map, mask, regions
 * and model_id (or gives them back to the scorer that lent them). */
void insp_result_free(InspResult *r);
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

/* @funcs must outlive the scorer; @data_free(@data) runs with the last unref.
 * The caller owns the returned reference. */
InspScorer *insp_scorer_new(const InspScorerFuncs *funcs, gpointer data, GDestroyNotify data_free);
InspScorer *insp_scorer_ref(InspScorer *s);
void insp_scorer_unref(InspScorer *s); /* accepts NULL */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspScorer, insp_scorer_unref)

/* The functions and data given to insp_scorer_new() (borrowed: valid while
 * the caller holds a reference of @s). */
const InspScorerFuncs *insp_scorer_get_funcs(InspScorer *s);
gpointer insp_scorer_get_data(InspScorer *s);

G_END_DECLS
