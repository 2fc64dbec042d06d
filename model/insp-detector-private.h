/* Private to model/'s model files (insp-model.c, insp-train.c, the detector
 * classes detector-*.c) and their unit tests: the layout of InspModel and the
 * detector class table. A detector is one detector-NAME.c that fills an
 * InspDetectorClass, plus one row in insp_detector_classes (insp-model.c).
 * Not installed, not used outside model/ except by tests/unit/ and
 * tests/bench/. */
#pragma once

#include <glib.h>
#include "insp-backbone.h"
#include "insp-kernels.h"
#include "insp-model.h"
#include "insp-safetensors.h"

G_BEGIN_DECLS

#define INSP_MODEL_FORMAT "inspectd-model"
/* Version 2: a model whose input is not square (input_width, input_height).
 * A square model is still written as version 1, which older builds read. */
#define INSP_MODEL_FORMAT_VERSION 2
/* ---- the model ---- */

typedef struct {
  double image_base, image_threshold; /* median of good held-out; raw mapped to 0.5 */
  double pixel_base, pixel_threshold;
} InspScoreNorm;

typedef struct _InspDetectorClass InspDetectorClass;
typedef struct _InspDetectorFit InspDetectorFit; /* a detector's training state */

struct _InspModel {
  gint ref_count;
  const InspDetectorClass *klass;
  gpointer det; /* the detector's own state (klass->free) */
  InspBackbone *backbone;
  char *fine_stage, *coarse_stage;
  int input_size;                /* the longer side: max(input_width, input_height) */
  int input_width, input_height; /* what every image is resized to (0 before
                                  * insp_model_probe_stages: square input_size) */
  float mean[3], std[3];
  InspFeatureSpec spec; /* spec.channels points into @channels */
  int dim;
  int n_patches;
  float blur_sigma;
  guint64 seed;
  int *channels; /* feature channel subset, NULL = all */
  InspScoreNorm norm;
  int train_images, held_out_images;
  int train_units; /* the units fitted: images, or a tiled model's tiles (0: unknown, older files)
                    */
  int train_aspect_differ; /* training images stretched to the model's aspect */
  double train_aspect;     /* the training images' (or tiles') median width / height, which
                            * frames are compared with; 0: unknown (square models from
                            * before native aspect, --aspect square) */
  int tiles;               /* across the longer side, 1: none (insp_tiles_layout) */
  double tile_overlap;
  char *train_date;
  char *id;
  InspSafetensors *st; /* a loaded model's file; the detector's tensors point into it */
};

/* What a detector is. Training (insp-train.c) streams each image's features
 * once: fit_new, then for image i fit_dest (where its [P, D] features go)
 * and fit_add once they are there; fit without the held-out images, the
 * score normalisation from the held-out features (fit_held, valid from the
 * first fit's return: a detector may drop the other images' features then),
 * and the final fit with them, after which it frees the fit and calls
 * insp_model_finish_setup (so the final fit may leave the derived state to
 * that call, when the features no longer take memory). A model file holds the generic part
 * (insp-model.c) and the detector's tensors and "NAME."-prefixed metadata (write_*, read). */
struct _InspDetectorClass {
  InspDetectorKind kind;
  const char *name;            /* in files, ids and the CLI */
  gboolean patchcore_features; /* spec.patchcore: neighbourhood averaging, bilinear */
  int default_input_size;      /* training without a size; 0: the backbone's */

  /* Checks the training options that concern the detector and applies them
   * to @m (before insp_model_finish_setup; the stages are probed). */
  gboolean (*configure)(InspModel *m, const InspTrainOptions *opt, GError **error);
  /* @slot[i] < @n_train: image i trains; else it is held out. */
  InspDetectorFit *(*fit_new)(InspModel *m, int n_images, int n_train, const int *slot,
                              GError **error);
  float *(*fit_dest)(InspDetectorFit *f, int image, float *scratch_feats);
  void (*fit_add)(InspDetectorFit *f, int image, const float *feats);
  const float *(*fit_held)(InspDetectorFit *f, int h);
  gboolean (*fit)(InspModel *m, InspDetectorFit *f, gboolean final, InspProgressFunc progress,
                  gpointer progress_data, GError **error);
  void (*fit_free)(InspDetectorFit *f);

  /* Derived state once the detector's data is set (may be NULL). */
  void (*setup)(InspModel *m);
  void (*free)(gpointer det);
  void (*info)(const InspModel *m, InspModelInfo *info);
  char *(*describe)(const InspModel *m);
  void (*write_tensors)(const InspModel *m, InspSafetensorsWriter *w);
  void (*write_metadata)(const InspModel *m, InspSafetensorsWriter *w);
  /* Reads and validates the detector's part of m->st (the generic part is
   * read, the stages probed); calls insp_model_finish_setup. */
  gboolean (*read)(InspModel *m, const char *path, gint64 feature_dim, GError **error);

  /* Bytes of per-worker scratch for score. */
  gsize (*scratch_size)(const InspModel *m);
  /* Patch scores [P] from features [P, D]; returns the raw image score, or
   * NAN when the image score is the maximum of the blurred map. */
  float (*score)(const InspModel *m, void *scratch, const float *feats, float *patch_scores);
  /* insp_model_set_nn_search (may be NULL: no choice to make). */
  void (*set_nn_search)(InspModel *m, InspNnSearch search);
};

extern const InspDetectorClass insp_detector_patchcore; /* detector-patchcore.c */
extern const InspDetectorClass insp_detector_padim;     /* detector-padim.c */
const InspDetectorClass *insp_detector_class_for_kind(InspDetectorKind kind);
const InspDetectorClass *insp_detector_class_for_name(const char *name);

/* PatchCore's memory bank (tests). */
const float *insp_patchcore_get_bank(const InspModel *m, int *rows);

/* Builds everything derived (spec, the detector's setup) once the fields
 * above are set. */
void insp_model_finish_setup(InspModel *m);
/* Sets spec.{fine_c,coarse_c,h,w,ch,cw} from one forward pass on zeros at
 * m->input_width x m->input_height (both 0: set to m->input_size, square);
 * FALSE if a stage is unknown or the size is refused. */
gboolean insp_model_probe_stages(InspModel *m, GError **error);
InspModel *insp_model_alloc(const InspDetectorClass *klass);

/* Scratch for insp_model_score_features alone: no backbone activations
 * (insp_model_extract and insp_model_score need insp_model_scratch_new). */
InspModelScratch *insp_model_scratch_new_for_features(const InspModel *m, GError **error);
/* Raw scoring from features (training's hold-out and insp_model_score):
 * fills raw map [input_height, input_width] (blurred, not normalised) and
 * returns the raw image score. */
float insp_model_score_features(const InspModel *m, InspModelScratch *s, const float *feats,
                                float *map_out, double *ms_distance, double *ms_map);
/* The shape of what a @width x @height frame is resized from to the model's
 * input: the frame, or a tiled model's tiles. */
void insp_model_unit_shape(const InspModel *m, int width, int height, int *unit_w, int *unit_h);
/* Runs the backbone and feature extraction on a preprocessed input. */
void insp_model_extract(const InspModel *m, InspModelScratch *s, const float *input,
                        float *feats_out, double *ms_backbone, double *ms_features);
float *insp_model_scratch_get_feats(InspModelScratch *s);
float *insp_model_scratch_get_input(InspModelScratch *s);

double insp_score_norm_apply_image(const InspScoreNorm *n, double raw);
float insp_score_norm_apply_pixel(const InspScoreNorm *n, float raw);

/* Model-file helpers for the detector classes: metadata read with a message
 * naming the file and key, a tensor of m->st with its shape checked and
 * every value finite. */
gboolean insp_model_meta_get_int(InspSafetensors *st, const char *path, const char *key, gint64 lo,
                                 gint64 hi, gint64 *out, GError **error);
gboolean insp_model_meta_get_double(InspSafetensors *st, const char *path, const char *key,
                                    double *out, GError **error);
void insp_model_meta_set_int(InspSafetensorsWriter *w, const char *key, gint64 v);
void insp_model_meta_set_double(InspSafetensorsWriter *w, const char *key, double v);
const float *insp_model_get_tensor(InspModel *m, const char *path, const char *name, int ndim,
                                   const gint64 *shape, GError **error);

G_END_DECLS
