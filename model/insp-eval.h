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
 * The report also keeps every image's path, type, label and scores (for
 * `--scores FILE.csv`), and the statistics a threshold is set from, on the
 * normalised image scores the daemon compares with `[inspection] threshold`
 * (a part fails when score >= threshold; regions from the map can fail it
 * too, which eval does not count): the highest good and lowest defect score
 * and the gap between them, recall and false-reject rate at the model's
 * threshold 0.5 and at the F1-max threshold, and a recommended threshold
 * with its margins (insp_metrics_recommend_threshold states the rule).
 *
 * Images of another aspect than the model's are stretched to it, as in the
 * daemon; the report counts them and the table warns.
 *
 * Memory: 5 bytes per map pixel per image (about 250 KB per image at 224 px)
 * plus the metrics' temporary memory at the end. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "insp-metrics.h"
#include "insp-model.h"

G_BEGIN_DECLS

#define INSP_EVAL_MAX_FPR 0.3
#define INSP_EVAL_MODEL_THRESHOLD 0.5 /* every model's fitted threshold, normalised */

typedef struct {
  char *name;         /* the defect type (folder under test/) */
  int n_images;       /* images of this type */
  double image_auroc; /* this type against good */
} InspEvalType;

typedef struct {
  char *path;      /* test/<type>/<file>, relative to the dataset */
  char *type;      /* "good" or the defect type (folder under test/) */
  gboolean defect; /* label: not in good/ */
  float score;     /* normalised */
  float raw_score; /* before normalisation */
} InspEvalImage;

typedef struct {
  char *model_id;
  char *dataset;
  int n_images, n_good, n_defect;
  int map_width, map_height;
  /* test images whose aspect differs from the model's by more than
   * INSP_MODEL_ASPECT_TOLERANCE (stretched to it), and the farthest one's
   * aspect over the model's */
  int aspect_differ;
  double aspect_worst;
  double image_auroc, pixel_auroc, aupro; /* NAN when undefined */
  double f1_max, threshold;               /* predicted defect when score >= threshold */
  double latency_mean_ms, latency_p50_ms, latency_p99_ms;
  GArray *per_type; /* InspEvalType, by name, good excluded */
  GArray *images;   /* InspEvalImage, in scoring order: type folder, then file name */
  /* on the normalised image scores: */
  InspMetricsSeparation separation;
  InspMetricsRates at_model; /* at INSP_EVAL_MODEL_THRESHOLD */
  InspMetricsRates at_f1;    /* at @threshold (NAN: zero counts) */
  InspMetricsRecommendation recommended;
  InspMetricsRates at_recommended; /* at recommended.threshold */
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
 * "threshold","latency_ms":{"mean","p50","p99"},"images","map_width",
 * "map_height","aspect_differ","per_type":{type:
 * auroc},"model","dataset","separation":{"max_good","min_defect","gap",
 * "good_over","defect_under"},"at_model_threshold","at_f1_threshold":
 * {"threshold","recall","false_reject_rate","caught","defects","rejected",
 * "good"},"recommended":{the same, "rule","separated","margin_good",
 * "margin_defect"}}; undefined values are null. Caller frees. */
JsonNode *insp_eval_report_to_json(const InspEvalReport *r);
gboolean insp_eval_report_write_json(const InspEvalReport *r, const char *path, GError **error);

/* The report as the human-readable table `inspectd eval` prints: the
 * metrics, then the threshold summary. */
char *insp_eval_report_format(const InspEvalReport *r);

/* Every image as CSV: the header "path,type,label,score,raw_score", then
 * one row per image in scoring order: the path relative to the dataset, the
 * type ("good" or the defect folder), the label (0 good, 1 defect), the
 * normalised and the raw score (%.9g: the float exactly). A field holding a
 * comma, a double quote, CR or LF is quoted as RFC 4180 says (in double
 * quotes, each double quote doubled); lines end in LF. Caller frees. */
char *insp_eval_report_format_scores(const InspEvalReport *r);

G_END_DECLS
