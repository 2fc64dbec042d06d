/* Evaluation of a trained model on a dataset in MVTec AD layout, the engine
 * of `inspectd eval`:
 *
 *   DIR/test/<type>/<stem>.png|.jpg      test images; <type> "good" = defect-free
 *   DIR/ground_truth/<type>/<stem>_mask.png  defect masks (grey > 127 = defect);
 *                                        required for every image not in good/
 *
 * Each image is decoded (insp_image_load, RGB), scored with insp_model_score
 * (only the scoring is timed: decode excluded), and its normalised anomaly map
 * kept at the model's map resolution with its mask resized to it by nearest
 * with half-pixel centres: src = min(floor((dst + 0.5) * in / out), in - 1).
 * The report holds image AUROC, pixel AUROC over all test pixels, AUPRO up to
 * FPR 0.3, the image F1-max and its threshold (normalised score units), the
 * image AUROC of each defect type against good, and the latency.
 * Image-level metrics rank the raw image scores (InspScoreResult.raw_score):
 * the same ranking as the normalised scores for any strictly increasing
 * normalisation, and unaffected by a normalisation that clamps; pixel-level
 * metrics use the normalised maps as published.
 *
 * Memory: 5 bytes per map pixel per image (about 250 KB per image at 224 px)
 * plus the metrics' temporary memory at the end. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "insp-model.h"

G_BEGIN_DECLS

#define INSP_EVAL_MAX_FPR 0.3

typedef struct {
  char *name;         /* the defect type (folder under test/) */
  int n_images;       /* images of this type */
  double image_auroc; /* this type against good */
} InspEvalType;

typedef struct {
  char *model_id;
  char *dataset;
  int n_images, n_good, n_defect;
  int map_width, map_height;
  double image_auroc, pixel_auroc, aupro; /* NAN when undefined */
  double f1_max, threshold;               /* predicted defect when score >= threshold */
  double latency_mean_ms, latency_p50_ms, latency_p99_ms;
  GArray *per_type; /* InspEvalType, by name, good excluded */
} InspEvalReport;

void insp_eval_report_free(InspEvalReport *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspEvalReport, insp_eval_report_free)

/* Called after each image: @done of @total, the image's path relative to
 * the dataset, its score and scoring time. */
typedef void (*InspEvalProgressFunc)(int done, int total, const char *path, float score, double ms,
                                     gpointer user_data);

/* Evaluates @m on @dataset. @limit_per_type > 0 takes only the first images
 * (by name) of each type. The layout is checked whole (every mask present)
 * before any image is scored; errors are INSP_MODEL_ERROR_DATASET (naming
 * the folder or the missing mask), INSP_IMAGE_ERROR from decoding, or
 * INSP_MODEL_ERROR from scoring. Returns a new report (caller frees). */
InspEvalReport *insp_eval_run(const InspModel *m, const char *dataset, int limit_per_type,
                              InspEvalProgressFunc progress, gpointer user_data, GError **error);

/* The report as JSON: {"image_auroc","pixel_auroc","aupro","f1_max",
 * "threshold","latency_ms":{"mean","p50","p99"},"images","per_type":{type:
 * auroc},"model","dataset"}; undefined values are null. Caller frees. */
JsonNode *insp_eval_report_to_json(const InspEvalReport *r);
gboolean insp_eval_report_write_json(const InspEvalReport *r, const char *path, GError **error);

/* The report as the human-readable table `inspectd eval` prints. */
char *insp_eval_report_format(const InspEvalReport *r);

G_END_DECLS
