/* The detector API that train, eval, the pipeline workers and the daemon use.
 *
 * An InspModel is a trained detector (PatchCore or PaDiM) with its backbone,
 * loaded from one self-contained safetensors model file. It is immutable once
 * loaded and reference-counted, so workers share it and a reload swaps it
 * atomically. Each worker scores with its own InspModelScratch: nothing is
 * allocated per frame.
 *
 * Scores are normalised at training so that 0.5 is the default threshold for
 * every model, for the image score and for the anomaly map alike. */
#pragma once

#include <glib.h>
#include "insp-image.h"
#include "insp-safetensors.h"

G_BEGIN_DECLS

#define INSP_MODEL_ERROR (insp_model_error_quark())
GQuark insp_model_error_quark(void);

typedef enum {
  INSP_MODEL_ERROR_FORMAT,  /* not a model file, foreign or old format version */
  INSP_MODEL_ERROR_TENSOR,  /* a tensor is missing or misshapen (named) */
  INSP_MODEL_ERROR_INPUT,   /* an image the model cannot take (size 0, too large) */
  INSP_MODEL_ERROR_TRAIN,   /* too few images, unreadable images... */
  INSP_MODEL_ERROR_DATASET, /* eval: not an MVTec layout */
} InspModelError;

typedef enum {
  INSP_DETECTOR_PATCHCORE,
  INSP_DETECTOR_PADIM,
} InspDetectorKind;

/* The detector's name ("patchcore", "padim": in files, ids and the CLI);
 * NULL / FALSE for a kind or name this build does not have. The list reads
 * "patchcore or padim", for messages. */
const char *insp_detector_kind_to_string(InspDetectorKind kind);
gboolean insp_detector_kind_from_string(const char *name, InspDetectorKind *kind);
const char *insp_detector_kind_list(void);

typedef struct _InspModel InspModel;
typedef struct _InspModelScratch InspModelScratch;

/* How a model turns its patch scores into the image score (model/README.md,
 * "Models"):
 *   REWEIGHTED: PatchCore's default, anomalib's rule: the highest patch
 *               distance s* times 1 - softmax(d)[0], d the distances from
 *               that patch to its nearest bank row m* and to m*'s k - 1
 *               nearest bank rows (k = the model's neighbours): a patch
 *               whose nearest good patch is an isolated one scores higher;
 *   MAX:        the highest patch distance, no reweighting (anomalib's
 *               num_neighbors = 1);
 *   MAP_MAX:    the highest value of the blurred anomaly map (PaDiM's only
 *               rule): a patch's evidence averaged with its neighbours'.
 * DEFAULT, in training options only: the detector's own (PatchCore
 * REWEIGHTED, PaDiM MAP_MAX). */
typedef enum {
  INSP_IMAGE_SCORE_DEFAULT,
  INSP_IMAGE_SCORE_REWEIGHTED,
  INSP_IMAGE_SCORE_MAX,
  INSP_IMAGE_SCORE_MAP_MAX,
} InspImageScoreRule;
/* The rule's name ("reweighted", "max", "map-max": in files and the CLI;
 * NULL for DEFAULT); FALSE for a name that is none of them. The list reads
 * "reweighted, max or map-max", for messages. */
const char *insp_image_score_rule_to_string(InspImageScoreRule rule);
gboolean insp_image_score_rule_from_string(const char *name, InspImageScoreRule *rule);
const char *insp_image_score_rule_list(void);
/* k of the REWEIGHTED rule: the default (anomalib's) and the range
 * accepted (k = 1 would reweight by nothing: that is MAX). */
#define INSP_MODEL_NEIGHBOURS_DEFAULT 9
#define INSP_MODEL_NEIGHBOURS_MIN 2
#define INSP_MODEL_NEIGHBOURS_MAX 64

/* Reads a model file; NULL with INSP_MODEL_ERROR when it cannot (every
 * message names @path, so callers do not prefix it). */
InspModel *insp_model_load(const char *path, GError **error);
InspModel *insp_model_ref(InspModel *m);
void insp_model_unref(InspModel *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspModel, insp_model_unref)
gboolean insp_model_save(const InspModel *m, const char *path, GError **error);

/* A short name for results and status: "<detector>-<backbone>-<8 hex of the
 * file's content hash>", e.g. "patchcore-mobilenetv2_100-1a2b3c4d". */
const char *insp_model_get_id(const InspModel *m);
InspDetectorKind insp_model_get_detector(const InspModel *m);
const char *insp_model_get_backbone_arch(const InspModel *m);
/* The file a loaded model was read from, as it was when read (NULL for a
 * model trained in memory). The model is in private memory: the file may
 * change or go without changing the model. */
const InspFileId *insp_model_get_file_id(const InspModel *m);
/* One line on the detector's fitted state, labelled for a summary
 * ("bank       2870 rows (coreset ...)"); free with g_free. */
char *insp_model_describe(const InspModel *m);
/* The model's input: every image is resized to @width x @height (the
 * training images' aspect, the longer side the training size); the input
 * size is the longer side. A model from before native aspect is square. */
int insp_model_get_input_size(const InspModel *m);
void insp_model_get_input_shape(const InspModel *m, int *width, int *height);

/* An image whose aspect (width / height) differs from the training images'
 * by more than this fraction is stretched noticeably: train counts such
 * training images, eval and the daemon warn about such frames. */
#define INSP_MODEL_ASPECT_TOLERANCE 0.05
/* TRUE when a @width x @height image's aspect (a tiled model's: its
 * tiles') differs from the training images' median by more than
 * INSP_MODEL_ASPECT_TOLERANCE; @ratio (may be NULL) gets the one over the
 * other. The training aspect, not the input's: rounding the input to a
 * multiple of 8 stretches every image a little, the same in training and
 * scoring. FALSE (ratio 1) for a model that does not know its training
 * images' aspect (--aspect square, files from before native aspect). */
gboolean insp_model_aspect_differs(const InspModel *m, int width, int height, double *ratio);
/* The input for images of aspect @aspect (width / height) at training size
 * @size: the longer side @size, the shorter round(size * short / long) to a
 * multiple of 8, at least 32 (and at most @size). */
void insp_model_input_shape_for_aspect(int size, double aspect, int *width, int *height);

/* What a model was trained with, for summaries and status (strings owned by
 * the model). */
typedef struct {
  int train_images;    /* good images it was fitted on */
  int held_out_images; /* of which held out to fit the score normalisation */
  int train_units;     /* the units fitted: the images, or a tiled model's tiles (models
                        * from before this field: train_images) */
  int aspect_differ;   /* of which stretched to the model's aspect (differing by more
                        * than INSP_MODEL_ASPECT_TOLERANCE; 0 when unknown) */
  int n_patches;       /* feature positions per image */
  int feature_dim;
  int bank_rows; /* PatchCore memory bank rows, 0 for PaDiM */
  double coreset_fraction;
  InspImageScoreRule image_score; /* never DEFAULT */
  int neighbours;                 /* k of the REWEIGHTED rule, else 0 */
  guint64 seed;
  double image_base, image_threshold; /* median raw score of good held-out parts (not used
                                       * by the normalisation); raw score mapped to 0.5
                                       * (normalised = 0.5 * raw / threshold) */
  double pixel_base, pixel_threshold; /* the same for anomaly-map values */
  const char *train_date;             /* ISO 8601, or NULL */
} InspModelInfo;
void insp_model_get_info(const InspModel *m, InspModelInfo *info);

/* The normalisation the model applies (the same code as insp_model_score):
 * a raw image score, or a raw anomaly-map value, in normalised units. */
double insp_model_normalise_image_score(const InspModel *m, double raw);
float insp_model_normalise_map_value(const InspModel *m, float raw);

/* PatchCore's nearest-neighbour search (PaDiM has none: no effect). AUTO:
 * exact; except on a CPU without AMX-BF16, approximate (an index probed in a
 * few cells, then the patches that decide the image score re-ranked
 * exactly; model/README.md "Speed and memory") for banks of 2048 rows or
 * more. INSP_NN=exact, approx or
 * fp32 in the environment decides AUTO instead. EXACT: every patch's
 * nearest row: on AMX-BF16 by the bfloat16 screen and its fp32 re-rank,
 * on AVX512-VNNI by an int8 screen and its fp32 re-rank (insp-nn-screen.c),
 * else every patch against the whole bank in fp32. APPROX: the index, whatever the CPU. FP32: every
 * patch against the whole bank in fp32, whatever the CPU (what the screen
 * is checked against). Set it before making scratch (its size depends on
 * it) and before the model is shared between threads. */
typedef enum {
  INSP_NN_SEARCH_AUTO,
  INSP_NN_SEARCH_EXACT,
  INSP_NN_SEARCH_APPROX,
  INSP_NN_SEARCH_FP32,
} InspNnSearch;
void insp_model_set_nn_search(InspModel *m, InspNnSearch search);
/* Parses "auto", "exact", "approx" or "fp32"; FALSE for anything else. */
gboolean insp_nn_search_from_string(const char *s, InspNnSearch *out);
/* What AUTO does on this machine, in a few words, for --version and the
 * journal: which screen does the exact search, and when the index. */
const char *insp_nn_search_describe(void);

InspModelScratch *insp_model_scratch_new(const InspModel *m, GError **error);
void insp_model_scratch_free(InspModelScratch *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspModelScratch, insp_model_scratch_free)

typedef struct {
  float score;     /* normalised image score (0.5 = default threshold) */
  float raw_score; /* before normalisation */
  int map_width;   /* the anomaly map, at the model's input resolution (its input shape); a
                    * tiled model's is the frame at the tiles' scale (insp_tiles_map_size) */
  int map_height;
  const float *map; /* normalised, blurred; owned by the scratch, valid until its next use */
  /* Time per step: resize and normalise, the CNN, feature aggregation, the
   * detector's search (PatchCore) or distance (PaDiM), the map. */
  double ms_preprocess, ms_backbone, ms_features, ms_distance, ms_map;
} InspScoreResult;

/* Scores one RGB8 image of any size (preprocessed with insp_image_preprocess). */
gboolean insp_model_score(const InspModel *m, InspModelScratch *s, const guint8 *rgb, int width,
                          int height, int stride, InspScoreResult *out, GError **error);

/* Training. Images come one at a time from @next (index 0..n_images-1, a new
 * image the caller of @next owns), so memory stays bounded for large sets.
 * With the NATIVE aspect (or tiles) a first pass, before the input shape is
 * known, takes every image's size: from InspTrainOptions.size_of when set
 * (the same @user_data; for files, insp_image_read_size reads only the
 * header), else by asking @next for the image twice. */
typedef InspImage *(*InspImageSourceFunc)(int index, gpointer user_data, GError **error);
typedef gboolean (*InspImageSizeFunc)(int index, gpointer user_data, int *width, int *height,
                                      GError **error);
typedef void (*InspProgressFunc)(const char *stage, int done, int total, gpointer user_data);

/* The input's shape at training. NATIVE: the training images' aspect
 * (their median aspect when they differ; those that differ are stretched to
 * it), the longer side the input size (insp_model_input_shape_for_aspect).
 * SQUARE: size x size, every image squashed (models before native aspect). */
typedef enum {
  INSP_TRAIN_ASPECT_NATIVE,
  INSP_TRAIN_ASPECT_SQUARE,
} InspTrainAspect;

typedef struct {
  const char *backbone; /* file or "builtin" */
  InspDetectorKind detector;
  double coreset_fraction; /* PatchCore, (0,1]; default 0.01 */
  int input_size;          /* the longer side; 0: PatchCore 320, PaDiM the backbone's (224) */
  InspTrainAspect aspect;  /* default NATIVE */
  int padim_channels;      /* PaDiM random channel subset, 0: all */
  guint64 seed;
  int patchcore_dim;              /* PatchCore: reduce features to this many dims by adaptive
                                   * averaging over channels, 0: off (default) */
  const char *stages;             /* "FINE,COARSE" backbone stage names, NULL: the backbone's
                                   * default pair */
  int patch_size;                 /* PatchCore neighbourhood (odd, 1..9), 0: 3 (default) */
  int tiles;                      /* tiles across the longer side of each frame (insp_tiles_layout),
                                   * 0 or 1: none (default); at most INSP_MODEL_MAX_TILES */
  double tile_overlap;            /* fraction of a tile shared with its neighbour, [0, 0.5];
                                   * default 0.25 */
  InspImageScoreRule image_score; /* PatchCore: any rule; PaDiM: DEFAULT or MAP_MAX */
  int neighbours;                 /* PatchCore REWEIGHTED: k, INSP_MODEL_NEIGHBOURS_MIN..MAX; 0: the
                                   * default (9) */
  InspImageSizeFunc size_of;      /* each image's size without its pixels, the size @next's image
                                   * will have; NULL (default): the first pass decodes */
} InspTrainOptions;

void insp_train_options_init(InspTrainOptions *opt); /* the documented defaults */
InspModel *insp_model_train(const InspTrainOptions *opt, int n_images, InspImageSourceFunc next,
                            gpointer source_data, InspProgressFunc progress, gpointer progress_data,
                            GError **error);

/* Masks and regions (model/insp-regions.c). */
typedef struct {
  int x, y, w, h;
} InspRect;

typedef struct {
  float threshold;       /* image score at or above: fail */
  float pixel_threshold; /* anomaly map at or above: defect pixel */
  int min_region_area;   /* smaller 8-connected components are dropped (pixels) */
  gboolean has_roi;
  InspRect roi; /* image pixels; outside it nothing is a defect */
} InspInspectParams;

typedef struct {
  int x, y, w, h; /* bounding box, image pixels */
  int area;       /* defect pixels */
  float score;    /* max normalised map value inside */
} InspRegion;

/* Upsamples @map (map_w x map_h) bilinearly to the image's @width x @height,
 * thresholds it into @mask (width*height bytes, 0/255) inside the ROI, finds
 * 8-connected regions, drops those under min_region_area (clearing them from
 * the mask), appends the rest to @regions (GArray of InspRegion) and returns
 * the verdict: TRUE (fail) when @score >= threshold or any region survives.
 * @work holds width*height floats. */
gboolean insp_inspect(const float *map, int map_w, int map_h, float score, int width, int height,
                      const InspInspectParams *params, float *work, guint8 *mask, GArray *regions);

/* Tiles for high-resolution cameras. A tiled model cuts every frame, in
 * training and in scoring, into overlapping tiles, each resized to the
 * model's input and scored against the one model; the tiles' maps are
 * stitched (the maximum where tiles overlap) into one map of the frame at the
 * tiles' scale, and the image score is the highest tile's. The tiling is the
 * model's (stored in it): scoring applies what training did.
 *
 * The layout of a @width x @height frame for @n tiles across its longer side
 * (L) with @overlap: tiles of t = ceil(L / (n - (n - 1) overlap)) along it
 * (n tiles sharing exactly that fraction), min(t, shorter side) across it,
 * with as many across as it takes to share at least @overlap, all spread
 * evenly from edge to edge. Writes up to @max rectangles (row-major by y,
 * then x; all the same size) and returns how many the layout has; @n = 1 is
 * the whole frame. */
#define INSP_MODEL_MAX_TILES 16
#define INSP_MODEL_MAX_TILE_OVERLAP 0.5
#define INSP_MODEL_MAX_TILE_COUNT 1024 /* what any layout above can reach */
int insp_tiles_layout(int n, double overlap, int width, int height, InspRect *rects, int max);
/* The map of a tiled model for a @width x @height frame whose tiles are
 * @tile_w x @tile_h pixels: the frame at the scale of the model's input. */
void insp_tiles_map_size(const InspModel *m, int width, int height, int tile_w, int tile_h,
                         int *map_w, int *map_h);
/* The model's tiles across the longer side (1: not tiled) and overlap. */
int insp_model_get_tiles(const InspModel *m, double *overlap);

G_END_DECLS
