/* Detection metrics for `inspectd eval`: image and pixel AUROC, AUPRO (the
 * MVTec AD per-region overlap up to a false-positive rate), the F1-max
 * operating point of the image precision-recall curve, and the statistics an
 * operator sets a threshold from: recall and false-reject rate at a
 * threshold, the gap between the good and the defect scores, and a
 * recommended threshold with its margins.
 *
 * All functions are pure and thread-safe; they allocate temporary memory
 * proportional to their input (stated per function) and free it before
 * returning. Labels are bytes, nonzero = defect (positive). Scores must not be
 * NaN. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Area under the ROC curve, equal to sklearn's roc_auc_score: the probability
 * that a random positive scores above a random negative, ties counting one
 * half (Mann-Whitney U / (n_pos n_neg)). Returns NAN when either class is
 * empty. Sorts once (radix sort); temporary memory about 4 bytes per sample
 * plus 4 per sample of the larger class, so it suits millions of pixels. */
double insp_metrics_auroc(const float *scores, const guint8 *labels, gsize n);

/* Normalised area under the per-region-overlap curve up to @max_fpr (0.3 in
 * the MVTec AD evaluation), exactly as that evaluation computes it:
 * @maps [n_images, height, width] anomaly maps, @masks [n_images, height,
 * width] ground truth. Ground-truth regions are the 8-connected components of
 * each mask. For every threshold t (each distinct map value, descending):
 * FPR = defect-free pixels (over all images) with map >= t / all defect-free
 * pixels; PRO = mean over all regions of the fraction of the region with
 * map >= t. The curve starts at (0,0), ends at (1,1); it is integrated with
 * the trapezoid rule up to @max_fpr, linearly interpolated at @max_fpr, and
 * divided by @max_fpr. Returns NAN when there is no defect-free pixel or no
 * region. Temporary memory about 12 bytes per pixel. */
double insp_metrics_aupro(const float *maps, const guint8 *masks, int n_images, int width,
                          int height, double max_fpr);

/* The best F1 score over the precision-recall curve of @scores (predicted
 * positive when score >= threshold; one point per distinct score) and the
 * threshold that reaches it; on equal F1 the lowest such threshold (as
 * sklearn's precision_recall_curve + argmax). Returns FALSE (outputs
 * untouched) when there is no positive sample or a score is NaN (NaN has no
 * order, so no threshold). */
gboolean insp_metrics_f1_max(const float *scores, const guint8 *labels, gsize n, double *f1,
                             double *threshold);

/* Image decisions at one threshold, as the daemon makes them: an image
 * fails (predicted defective) when its score >= @threshold (both float, as
 * InspInspectParams.threshold). Rates are NAN when their class is empty. */
typedef struct {
  gsize n_good, n_defect;
  gsize caught;             /* defect images that fail (true positives) */
  gsize rejected;           /* good images that fail (false rejects) */
  double recall;            /* caught / n_defect */
  double false_reject_rate; /* rejected / n_good */
} InspMetricsRates;

void insp_metrics_rates(const float *scores, const guint8 *labels, gsize n, float threshold,
                        InspMetricsRates *out);

/* How far apart the good and the defect scores are. */
typedef struct {
  float max_good;     /* highest good score */
  float min_defect;   /* lowest defect score */
  double gap;         /* min_defect - max_good; > 0: the sets separate, <= 0: they overlap */
  gsize good_over;    /* good images scoring >= min_defect: the false rejects of the lowest
                       * threshold that still fails every defect */
  gsize defect_under; /* defect images scoring <= max_good: the defects passed by the
                       * highest threshold that fails no good image */
} InspMetricsSeparation;

/* FALSE (@out untouched) when either class is empty or a score is NaN. */
gboolean insp_metrics_separation(const float *scores, const guint8 *labels, gsize n,
                                 InspMetricsSeparation *out);

/* A threshold to put in the config, and how much room it has. The rule: the
 * threshold with the largest recall - false-reject rate (Youden's J: the
 * share of defects that fail minus the share of good parts that fail, each
 * of its own class, so the proportions of good and defect images in the test
 * set do not matter; F1 does depend on them and, with more defects than
 * good images, as in the MVTec AD test sets, can prefer failing every part),
 * on equal J the lower one (more defects caught), lowered to the middle of
 * the empty interval between it and the next lower score, so that it makes
 * the same decisions on these images but no image sits on it. When the sets
 * separate, that is the middle of the gap between the highest good and the
 * lowest defect score: every defect fails, no good part does. The value is
 * rounded to the fewest decimals (3 to 9) that move it by at most a tenth of
 * its margins and, read as a float, still make the same decisions. */
typedef struct {
  double threshold; /* rounded to @decimals decimals */
  int decimals;
  gboolean separated;   /* no image is misjudged at @threshold */
  double margin_good;   /* @threshold - the highest good score under it; NAN when none */
  double margin_defect; /* the lowest defect score at or above @threshold - @threshold; NAN
                         * when none */
} InspMetricsRecommendation;

/* FALSE (@out untouched) when either class is empty, a score is NaN, or no
 * threshold fails a larger share of the defects than of the good images
 * (J <= 0 everywhere: the scores do not tell them apart).
 * Temporary memory: 8 bytes per score. */
gboolean insp_metrics_recommend_threshold(const float *scores, const guint8 *labels, gsize n,
                                          InspMetricsRecommendation *out);

/* The q-quantile (0..1) of @values with linear interpolation between order
 * statistics (numpy's default); NAN for n = 0. */
double insp_metrics_quantile(const double *values, gsize n, double q);

G_END_DECLS
