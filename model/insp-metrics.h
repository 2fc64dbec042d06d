/* Detection metrics for `inspectd eval`: image and pixel AUROC, AUPRO (the
 * MVTec AD per-region overlap up to a false-positive rate), and the F1-max
 * operating point of the image precision-recall curve.
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

/* The q-quantile (0..1) of @values with linear interpolation between order
 * statistics (numpy's default); NAN for n = 0. */
double insp_metrics_quantile(const double *values, gsize n, double q);

G_END_DECLS
