/* model/insp-metrics: AUROC (ties, signed zeros, one class), AUPRO on small
 * cases computed by hand (8-connectivity, interpolation at the FPR limit),
 * F1-max and its threshold (ties), quantiles; AUROC against an O(n^2)
 * reference on random data with many ties; the threshold statistics (rates
 * at a threshold, the gap, the recommended threshold and its margins) on
 * hand-made score arrays with known answers. */
#include <glib.h>
#include <math.h>

#include "insp-metrics.h"

#define TOL_EXACT 1e-12

static void
test_auroc_hand(void)
{
  const float s1[] = {0.1f, 0.4f, 0.35f, 0.8f};
  const guint8 l1[] = {0, 0, 1, 1};
  g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s1, l1, 4), 0.75, TOL_EXACT);

  /* all tied: 0.5 */
  const float s2[] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
  const guint8 l2[] = {1, 0, 1, 0, 0};
  g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s2, l2, 5), 0.5, TOL_EXACT);

  /* one positive-negative tie counts half: (0.5 + 1 + 1 + 1) / 4 */
  const float s3[] = {0.5f, 0.5f, 0.2f, 0.9f};
  const guint8 l3[] = {1, 0, 0, 1};
  g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s3, l3, 4), 0.875, TOL_EXACT);

  /* negative scores order correctly; -0 ties with +0 */
  const float s4[] = {-1.0f, -2.0f, -0.0f, 0.0f};
  const guint8 l4[] = {1, 0, 1, 0};
  /* pairs: (-1 > -2) 1, (-1 < 0) 0, (-0 > -2) 1, (-0 == 0) 0.5 */
  g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s4, l4, 4), 2.5 / 4, TOL_EXACT);

  /* perfectly inverted */
  const float s5[] = {1, 2, 3, 4};
  const guint8 l5[] = {1, 1, 0, 0};
  g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s5, l5, 4), 0.0, TOL_EXACT);

  /* one class only: undefined */
  const guint8 l6[] = {1, 1, 1, 1};
  g_assert_true(isnan(insp_metrics_auroc(s5, l6, 4)));
  g_assert_true(isnan(insp_metrics_auroc(NULL, NULL, 0)));
}

static void
test_auroc_random(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(11);
  const gsize n = 3000;
  g_autofree float *s = g_new(float, n);
  g_autofree guint8 *l = g_new(guint8, n);

  for (int round = 0; round < 3; round++) {
    for (gsize i = 0; i < n; i++) {
      l[i] = g_rand_double(rng) < 0.3;
      /* coarse levels: many ties, within and across classes */
      s[i] = (float)(g_rand_int_range(rng, -20, 20) + (l[i] ? 5 : 0)) * 0.25f;
    }
    double u = 0;
    gsize np = 0, nn = 0;
    for (gsize i = 0; i < n; i++) {
      np += l[i];
      nn += !l[i];
      if (!l[i])
        continue;
      for (gsize j = 0; j < n; j++)
        if (!l[j])
          u += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
    }
    g_assert_cmpfloat_with_epsilon(insp_metrics_auroc(s, l, n), u / ((double)np * nn), 1e-12);
  }
}

static void
test_auroc_large(void)
{
  /* Pixel-scale input: 4M samples, two overlapping uniform ranges:
   * positives U(0.5,1.5), negatives U(0,1): AUROC = 0.875. */
  g_autoptr(GRand) rng = g_rand_new_with_seed(12);
  const gsize n = 4 * 1024 * 1024;
  g_autofree float *s = g_new(float, n);
  g_autofree guint8 *l = g_new(guint8, n);
  for (gsize i = 0; i < n; i++) {
    l[i] = (i % 5) == 0;
    s[i] = (float)g_rand_double(rng) + (l[i] ? 0.5f : 0.0f);
  }
  gint64 t0 = g_get_monotonic_time();
  double a = insp_metrics_auroc(s, l, n);
  g_test_message("auroc over %" G_GSIZE_FORMAT " samples: %.1f ms", n,
                 (g_get_monotonic_time() - t0) / 1000.0);
  g_assert_cmpfloat_with_epsilon(a, 0.875, 2e-3);
}

static void
test_aupro_hand(void)
{
  /* Two 4x1 images. Image 0: mask 1 1 0 0, map .9 .5 .6 .1; image 1: no
   * defect, map .2 .3 .4 .7. One region (size 2), six defect-free pixels.
   * Curve: (0,0) (0,.5)@.9 (1/6,.5)@.7 (1/3,.5)@.6 (1/3,1)@.5 (1/2,1)@.4 ...
   * Up to 0.3: .5 * .3 = .15 -> normalised .5. Up to 1: 1/6 + 2/3 = 5/6. */
  const float maps[] = {.9f, .5f, .6f, .1f, .2f, .3f, .4f, .7f};
  const guint8 masks[] = {1, 1, 0, 0, 0, 0, 0, 0};
  g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, 2, 4, 1, 0.3), 0.5, 1e-12);
  g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, 2, 4, 1, 1.0), 5.0 / 6.0, 1e-12);

  /* Interpolation inside a rising segment: limit 0.25 between (1/6,.5) and
   * (1/3,.5) is flat; use max_fpr = 1/3 + 1/12 = 5/12, inside the segment
   * (1/3,1)->(1/2,1): area 1/6 + 1/12 = 1/4, / (5/12) = 0.6. */
  g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, 2, 4, 1, 5.0 / 12.0), 0.6, 1e-12);
}

static void
test_aupro_tied_threshold(void)
{
  /* A defect-free pixel and a defect pixel share the top score: one curve
   * point (1/3, 1) straight from (0,0), the diagonal; the area up to 0.3 is
   * .5 * .3 * .9 = .135 -> .45. */
  const float maps[] = {.8f, .8f, .1f, .1f};
  const guint8 masks[] = {1, 0, 0, 0};
  g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, 1, 4, 1, 0.3), 0.45, 1e-12);
}

static void
test_aupro_8connected(void)
{
  /* 4x4, defects at (0,0), (1,1) (diagonal: one region of 2) and (3,3) (a
   * region of 1). Only (0,0) scores high: PRO = (1/2 + 0) / 2 = .25 all the
   * way up to FPR 1 (4-connectivity would say 1/3). */
  float maps[16];
  guint8 masks[16] = {0};
  for (int i = 0; i < 16; i++)
    maps[i] = 0.1f + 0.05f * (float)i;
  masks[0] = masks[5] = masks[15] = 1;
  maps[0] = 0.95f;
  maps[5] = maps[15] = 0.01f;
  g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, 1, 4, 4, 0.3), 0.25, 1e-12);
}

/* The most straightforward AUPRO: labels by repeated min-propagation over
 * the 8 neighbours until stable; for every distinct score t (descending)
 * count FPR and PRO from scratch; trapezoids with the MVTec interpolation. */
static double
ref_aupro(const float *maps, const guint8 *masks, int n_img, int w, int h, double max_fpr)
{
  int n = n_img * w * h, n_ok = 0;
  g_autofree int *lab = g_new(int, n);
  for (int i = 0; i < n; i++) {
    lab[i] = masks[i] ? i + 1 : 0;
    n_ok += !masks[i];
  }
  for (gboolean changed = TRUE; changed;) {
    changed = FALSE;
    for (int i = 0; i < n; i++) {
      if (!lab[i])
        continue;
      int im = i / (w * h), x = i % w, y = (i / w) % h;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= w || yy >= h)
            continue;
          int j = im * w * h + yy * w + xx;
          if (lab[j] && lab[j] < lab[i]) {
            lab[i] = lab[j];
            changed = TRUE;
          }
        }
    }
  }
  g_autofree int *size = g_new0(int, n + 1);
  int n_reg = 0;
  for (int i = 0; i < n; i++)
    if (lab[i] && size[lab[i]]++ == 0)
      n_reg++;
  g_autofree float *t = g_memdup2(maps, n * sizeof(float));
  double x0 = 0, y0 = 0, area = 0;
  for (;;) {
    float best = -INFINITY;
    for (int i = 0; i < n; i++)
      if (t[i] > best)
        best = t[i];
    if (best == -INFINITY)
      break;
    for (int i = 0; i < n; i++)
      if (t[i] == best)
        t[i] = -INFINITY;
    int fp = 0;
    double pro = 0;
    for (int i = 0; i < n; i++) {
      if (maps[i] < best)
        continue;
      if (lab[i])
        pro += 1.0 / size[lab[i]];
      else
        fp++;
    }
    double x = (double)fp / n_ok, y = pro / n_reg;
    if (x > max_fpr) {
      area += 0.5 * (y0 + y0 + (y - y0) * (max_fpr - x0) / (x - x0)) * (max_fpr - x0);
      return area / max_fpr;
    }
    area += 0.5 * (y + y0) * (x - x0);
    x0 = x;
    y0 = y;
  }
  if (x0 < max_fpr)
    area += 0.5 * (y0 + y0 + (1 - y0) * (max_fpr - x0) / (1 - x0)) * (max_fpr - x0);
  return area / max_fpr;
}

static void
test_aupro_random(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(13);
  for (int round = 0; round < 20; round++) {
    int n_img = g_rand_int_range(rng, 1, 4), w = g_rand_int_range(rng, 1, 9),
        h = g_rand_int_range(rng, 2, 9), n = n_img * w * h;
    g_autofree float *maps = g_new(float, n);
    g_autofree guint8 *masks = g_new(guint8, n);
    for (int i = 0; i < n; i++) {
      masks[i] = g_rand_double(rng) < 0.3;
      maps[i] = (float)g_rand_int_range(rng, 0, 6) + (masks[i] ? 1.5f : 0.0f);
    }
    masks[0] = 1;
    masks[n - 1] = 0;
    for (int k = 0; k < 3; k++) {
      double fpr = (double[]){0.3, 0.05, 1.0}[k];
      g_assert_cmpfloat_with_epsilon(insp_metrics_aupro(maps, masks, n_img, w, h, fpr),
                                     ref_aupro(maps, masks, n_img, w, h, fpr), 1e-9);
    }
  }
}

static void
test_aupro_undefined(void)
{
  const float maps[] = {.1f, .2f};
  const guint8 none[] = {0, 0}, all[] = {1, 1};
  g_assert_true(isnan(insp_metrics_aupro(maps, none, 1, 2, 1, 0.3)));
  g_assert_true(isnan(insp_metrics_aupro(maps, all, 1, 2, 1, 0.3)));
}

static void
test_f1_max(void)
{
  double f1 = -1, t = -1;
  const float s1[] = {0.1f, 0.4f, 0.35f, 0.8f};
  const guint8 l1[] = {0, 0, 1, 1};
  /* t=.8: 2/3; t=.4: 1/2; t=.35: 4/5; t=.1: 2/3 */
  g_assert_true(insp_metrics_f1_max(s1, l1, 4, &f1, &t));
  g_assert_cmpfloat_with_epsilon(f1, 0.8, TOL_EXACT);
  g_assert_cmpfloat(t, ==, 0.35f);

  /* equal F1 2/3 at .9 and .6: the lower threshold */
  const float s2[] = {0.9f, 0.8f, 0.7f, 0.6f};
  const guint8 l2[] = {1, 0, 0, 1};
  g_assert_true(insp_metrics_f1_max(s2, l2, 4, &f1, &t));
  g_assert_cmpfloat_with_epsilon(f1, 2.0 / 3.0, TOL_EXACT);
  g_assert_cmpfloat(t, ==, 0.6f);

  /* tied scores form one point: {.5 pos, .5 neg} -> t=.5: 2/(2+1+0) */
  const float s3[] = {0.5f, 0.5f, 0.1f};
  const guint8 l3[] = {1, 0, 0};
  g_assert_true(insp_metrics_f1_max(s3, l3, 3, &f1, &t));
  g_assert_cmpfloat_with_epsilon(f1, 2.0 / 3.0, TOL_EXACT);
  g_assert_cmpfloat(t, ==, 0.5f);

  const guint8 l4[] = {0, 0, 0};
  f1 = t = -7;
  g_assert_false(insp_metrics_f1_max(s3, l4, 3, &f1, &t));
  g_assert_cmpfloat(f1, ==, -7);
  /* A NaN score has no order: no threshold, and the call returns. */
  {
    const float nan_scores[] = {0.9f, NAN, 0.1f, 0.4f};
    const guint8 nan_labels[] = {1, 0, 0, 1};
    double nan_f1 = -1, nan_t = -1;

    g_assert_false(insp_metrics_f1_max(nan_scores, nan_labels, 4, &nan_f1, &nan_t));
    g_assert_cmpfloat(nan_f1, ==, -1);
    g_assert_cmpfloat(nan_t, ==, -1);
  }
}

static void
test_rates(void)
{
  /* good 0.1 0.3 0.5 0.7; defect 0.5 0.6 0.9 */
  const float s[] = {0.1f, 0.3f, 0.5f, 0.7f, 0.5f, 0.6f, 0.9f};
  const guint8 l[] = {0, 0, 0, 0, 1, 1, 1};
  InspMetricsRates r;

  /* >= : the good 0.5 and the defect 0.5 both fail at 0.5 */
  insp_metrics_rates(s, l, 7, 0.5f, &r);
  g_assert_cmpuint(r.n_good, ==, 4);
  g_assert_cmpuint(r.n_defect, ==, 3);
  g_assert_cmpuint(r.caught, ==, 3);
  g_assert_cmpuint(r.rejected, ==, 2);
  g_assert_cmpfloat_with_epsilon(r.recall, 1.0, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(r.false_reject_rate, 0.5, TOL_EXACT);

  insp_metrics_rates(s, l, 7, 0.65f, &r);
  g_assert_cmpuint(r.caught, ==, 1);
  g_assert_cmpuint(r.rejected, ==, 1);
  g_assert_cmpfloat_with_epsilon(r.recall, 1.0 / 3.0, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(r.false_reject_rate, 0.25, TOL_EXACT);

  /* above everything: nothing fails */
  insp_metrics_rates(s, l, 7, 1.0f, &r);
  g_assert_cmpuint(r.caught + r.rejected, ==, 0);

  /* one class: the other rate is undefined */
  insp_metrics_rates(s, l, 4, 0.2f, &r);
  g_assert_cmpuint(r.rejected, ==, 3);
  g_assert_true(isnan(r.recall));
  g_assert_cmpfloat_with_epsilon(r.false_reject_rate, 0.75, TOL_EXACT);
}

static void
test_separation(void)
{
  InspMetricsSeparation sep;

  /* separate: good up to 0.4, defects from 0.6 */
  const float s1[] = {0.2f, 0.4f, 0.3f, 0.6f, 0.8f};
  const guint8 l1[] = {0, 0, 0, 1, 1};
  g_assert_true(insp_metrics_separation(s1, l1, 5, &sep));
  g_assert_cmpfloat(sep.max_good, ==, 0.4f);
  g_assert_cmpfloat(sep.min_defect, ==, 0.6f);
  g_assert_cmpfloat_with_epsilon(sep.gap, (double)0.6f - (double)0.4f, TOL_EXACT);
  g_assert_cmpuint(sep.good_over, ==, 0);
  g_assert_cmpuint(sep.defect_under, ==, 0);

  /* overlap: good 0.1 0.3 0.5 0.7, defects 0.5 0.6 0.9: two good images at
   * or above 0.5 (0.5, 0.7), two defects at or below 0.7 (0.5, 0.6) */
  const float s2[] = {0.1f, 0.3f, 0.5f, 0.7f, 0.5f, 0.6f, 0.9f};
  const guint8 l2[] = {0, 0, 0, 0, 1, 1, 1};
  g_assert_true(insp_metrics_separation(s2, l2, 7, &sep));
  g_assert_cmpfloat(sep.max_good, ==, 0.7f);
  g_assert_cmpfloat(sep.min_defect, ==, 0.5f);
  g_assert_cmpfloat(sep.gap, <, 0.0);
  g_assert_cmpuint(sep.good_over, ==, 2);
  g_assert_cmpuint(sep.defect_under, ==, 2);

  /* touching (a tie between the classes): gap 0 is an overlap */
  const float s3[] = {0.2f, 0.5f, 0.5f};
  const guint8 l3[] = {0, 0, 1};
  g_assert_true(insp_metrics_separation(s3, l3, 3, &sep));
  g_assert_cmpfloat(sep.gap, ==, 0.0);
  g_assert_cmpuint(sep.good_over, ==, 1);
  g_assert_cmpuint(sep.defect_under, ==, 1);

  /* one class, or a NaN: FALSE, untouched */
  sep.gap = -7;
  g_assert_false(insp_metrics_separation(s1, l1, 3, &sep));
  const float s4[] = {0.2f, NAN, 0.6f};
  const guint8 l4[] = {0, 0, 1};
  g_assert_false(insp_metrics_separation(s4, l4, 3, &sep));
  g_assert_cmpfloat(sep.gap, ==, -7);
}

static void
test_recommend(void)
{
  InspMetricsRecommendation rec;

  /* separate: the middle of the gap 0.4 .. 0.6, three decimals */
  const float s1[] = {0.2f, 0.4f, 0.3f, 0.6f, 0.8f};
  const guint8 l1[] = {0, 0, 0, 1, 1};
  g_assert_true(insp_metrics_recommend_threshold(s1, l1, 5, &rec));
  g_assert_cmpfloat_with_epsilon(rec.threshold, 0.5, TOL_EXACT);
  g_assert_cmpint(rec.decimals, ==, 3);
  g_assert_true(rec.separated);
  g_assert_cmpfloat_with_epsilon(rec.margin_good, 0.5 - (double)0.4f, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(rec.margin_defect, (double)0.6f - 0.5, TOL_EXACT);

  /* a narrow gap 0.4500 .. 0.4502: the middle needs four decimals */
  const float s2[] = {0.1f, 0.45f, 0.4502f, 0.9f};
  const guint8 l2[] = {0, 0, 1, 1};
  g_assert_true(insp_metrics_recommend_threshold(s2, l2, 4, &rec));
  g_assert_cmpfloat_with_epsilon(rec.threshold, 0.4501, TOL_EXACT);
  g_assert_cmpint(rec.decimals, ==, 4);
  g_assert_true(rec.separated);
  InspMetricsRates r;
  insp_metrics_rates(s2, l2, 4, (float)rec.threshold, &r);
  g_assert_cmpuint(r.caught, ==, 2);
  g_assert_cmpuint(r.rejected, ==, 0);

  /* overlap: good 0.1 0.2 0.3 0.4 0.55, defects 0.35 0.5 0.6 0.7.
   * J = recall - FRR at each score, downwards: 0.7: 1/4; 0.6: 2/4;
   * 0.55: 2/4 - 1/5 = 0.3; 0.5: 3/4 - 1/5 = 0.55; 0.4: 3/4 - 2/5 = 0.35;
   * 0.35: 4/4 - 2/5 = 0.6 (best); 0.3: 1 - 3/5 ... so the threshold goes
   * between 0.3 and 0.35: 0.325. */
  const float s3[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.55f, 0.35f, 0.5f, 0.6f, 0.7f};
  const guint8 l3[] = {0, 0, 0, 0, 0, 1, 1, 1, 1};
  g_assert_true(insp_metrics_recommend_threshold(s3, l3, 9, &rec));
  g_assert_cmpfloat_with_epsilon(rec.threshold, 0.325, TOL_EXACT);
  g_assert_false(rec.separated);
  g_assert_cmpfloat_with_epsilon(rec.margin_good, 0.325 - (double)0.3f, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(rec.margin_defect, (double)0.35f - 0.325, TOL_EXACT);
  insp_metrics_rates(s3, l3, 9, (float)rec.threshold, &r);
  g_assert_cmpuint(r.caught, ==, 4);
  g_assert_cmpuint(r.rejected, ==, 2);

  /* where F1-max fails every part: good 0.45 0.46, defects 0.40 0.41 0.42
   * 0.50 0.55 0.60. F1 downwards: 0.50: 6/9, 0.46: 6/10, 0.45: 6/11,
   * 0.42: 8/12, 0.41: 10/13, 0.40: 12/14 (best: everything fails). J:
   * 0.50: 3/6 (best), 0.46: 3/6 - 1/2, ..., 0.40: 1 - 1 = 0. */
  const float s4[] = {0.45f, 0.46f, 0.40f, 0.41f, 0.42f, 0.50f, 0.55f, 0.60f};
  const guint8 l4[] = {0, 0, 1, 1, 1, 1, 1, 1};
  double f1 = 0, t = 0;
  g_assert_true(insp_metrics_f1_max(s4, l4, 8, &f1, &t));
  g_assert_cmpfloat(t, ==, 0.40f);
  g_assert_cmpfloat_with_epsilon(f1, 12.0 / 14.0, TOL_EXACT);
  g_assert_true(insp_metrics_recommend_threshold(s4, l4, 8, &rec));
  g_assert_cmpfloat_with_epsilon(rec.threshold, 0.48, TOL_EXACT);
  g_assert_false(rec.separated);
  insp_metrics_rates(s4, l4, 8, (float)rec.threshold, &r);
  g_assert_cmpuint(r.caught, ==, 3);
  g_assert_cmpuint(r.rejected, ==, 0);
  g_assert_cmpfloat_with_epsilon(rec.margin_good, 0.48 - (double)0.46f, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(rec.margin_defect, (double)0.50f - 0.48, TOL_EXACT);

  /* equal J: the lower threshold (more defects caught). good 0.1 0.4,
   * defects 0.3 0.5: J(0.5) = 1/2, J(0.3) = 1 - 1/2 = 1/2 -> between 0.1
   * and 0.3 */
  const float s5[] = {0.1f, 0.4f, 0.3f, 0.5f};
  const guint8 l5[] = {0, 0, 1, 1};
  g_assert_true(insp_metrics_recommend_threshold(s5, l5, 4, &rec));
  g_assert_cmpfloat_with_epsilon(rec.threshold, 0.2, TOL_EXACT);

  /* scores that do not tell the classes apart (defects below good): none */
  const float s6[] = {0.8f, 0.9f, 0.1f, 0.2f};
  const guint8 l6[] = {0, 0, 1, 1};
  rec.threshold = -7;
  g_assert_false(insp_metrics_recommend_threshold(s6, l6, 4, &rec));
  g_assert_cmpfloat(rec.threshold, ==, -7);
  /* one class, NaN */
  g_assert_false(insp_metrics_recommend_threshold(s1, l1, 3, &rec));
  const float s7[] = {0.2f, NAN, 0.6f};
  const guint8 l7[] = {0, 0, 1};
  g_assert_false(insp_metrics_recommend_threshold(s7, l7, 3, &rec));

  /* adjacent floats: no decimal of 9 digits fits between them; the defect's
   * own score is taken, written back exactly */
  const float lo = 0.5f, hi = nextafterf(0.5f, 1.0f);
  const float s8[] = {0.1f, lo, hi};
  const guint8 l8[] = {0, 0, 1};
  g_assert_true(insp_metrics_recommend_threshold(s8, l8, 3, &rec));
  g_assert_cmpfloat((float)rec.threshold, ==, hi);
  g_assert_true(rec.separated);
  g_autofree char *text = g_strdup_printf("%.*f", rec.decimals, rec.threshold);
  g_assert_cmpfloat((float)g_ascii_strtod(text, NULL), ==, hi);
}

static void
test_quantile(void)
{
  const double v[] = {4, 1, 3, 2};
  g_assert_cmpfloat_with_epsilon(insp_metrics_quantile(v, 4, 0.5), 2.5, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(insp_metrics_quantile(v, 4, 0.99), 3.97, 1e-12);
  g_assert_cmpfloat_with_epsilon(insp_metrics_quantile(v, 4, 0.0), 1.0, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(insp_metrics_quantile(v, 4, 1.0), 4.0, TOL_EXACT);
  g_assert_cmpfloat_with_epsilon(insp_metrics_quantile(v, 1, 0.5), 4.0, TOL_EXACT);
  g_assert_true(isnan(insp_metrics_quantile(v, 0, 0.5)));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/metrics/auroc-hand", test_auroc_hand);
  g_test_add_func("/metrics/auroc-random", test_auroc_random);
  g_test_add_func("/metrics/auroc-large", test_auroc_large);
  g_test_add_func("/metrics/aupro-hand", test_aupro_hand);
  g_test_add_func("/metrics/aupro-tied-threshold", test_aupro_tied_threshold);
  g_test_add_func("/metrics/aupro-8connected", test_aupro_8connected);
  g_test_add_func("/metrics/aupro-random", test_aupro_random);
  g_test_add_func("/metrics/aupro-undefined", test_aupro_undefined);
  g_test_add_func("/metrics/f1-max", test_f1_max);
  g_test_add_func("/metrics/quantile", test_quantile);
  g_test_add_func("/metrics/rates", test_rates);
  g_test_add_func("/metrics/separation", test_separation);
  g_test_add_func("/metrics/recommend", test_recommend);
  return g_test_run();
}
