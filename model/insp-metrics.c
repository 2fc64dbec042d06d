/* insp-metrics: AUROC, AUPRO, F1-max, the decisions at a threshold, the
 * gap between good and defect scores, the recommended threshold and
 * quantiles for `inspectd eval`.
 *
 * Scores are compared through order-preserving 32-bit keys (the IEEE bit
 * pattern with the sign handled, -0 folded onto +0), sorted once with an LSD
 * radix sort, so equal scores are exactly equal keys and ties are grouped
 * exactly. Counts are integers; only the final ratios are floating point.
 * Pure functions: any thread may enter, nothing is shared. */
#include "insp-metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline guint32
score_key(float f)
{
  guint32 u;
  if (f == 0.0f)
    f = 0.0f; /* -0 -> +0 */
  memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Stable LSD radix sort of @v (ascending) on the 32-bit key in bits
 * [shift, shift+32) of each 64-bit item, 8 bits a pass. @tmp holds n items. */
static void
radix_sort64(guint64 *v, guint64 *tmp, gsize n, int shift)
{
  gsize count[4][256];
  memset(count, 0, sizeof count);
  for (gsize i = 0; i < n; i++)
    for (int p = 0; p < 4; p++)
      count[p][(v[i] >> (shift + 8 * p)) & 0xff]++;
  guint64 *src = v, *dst = tmp;
  for (int p = 0; p < 4; p++) {
    gsize pos = 0;
    for (int b = 0; b < 256; b++) {
      gsize c = count[p][b];
      count[p][b] = pos;
      pos += c;
    }
    for (gsize i = 0; i < n; i++)
      dst[count[p][(src[i] >> (shift + 8 * p)) & 0xff]++] = src[i];
    guint64 *t = src;
    src = dst;
    dst = t;
  }
  /* four passes: the result is back in @v */
}

static void
radix_sort32(guint32 *v, guint32 *tmp, gsize n)
{
  gsize count[4][256];
  memset(count, 0, sizeof count);
  for (gsize i = 0; i < n; i++)
    for (int p = 0; p < 4; p++)
      count[p][(v[i] >> (8 * p)) & 0xff]++;
  guint32 *src = v, *dst = tmp;
  for (int p = 0; p < 4; p++) {
    gsize pos = 0;
    for (int b = 0; b < 256; b++) {
      gsize c = count[p][b];
      count[p][b] = pos;
      pos += c;
    }
    for (gsize i = 0; i < n; i++)
      dst[count[p][(src[i] >> (8 * p)) & 0xff]++] = src[i];
    guint32 *t = src;
    src = dst;
    dst = t;
  }
}

double
insp_metrics_auroc(const float *scores, const guint8 *labels, gsize n)
{
  g_return_val_if_fail(n == 0 || (scores != NULL && labels != NULL), NAN);
  gsize npos = 0;
  for (gsize i = 0; i < n; i++)
    npos += labels[i] != 0;
  const gsize nneg = n - npos;
  if (npos == 0 || nneg == 0)
    return NAN;

  g_autofree guint32 *keys = g_new(guint32, n);
  g_autofree guint32 *tmp = g_new(guint32, MAX(npos, nneg));
  guint32 *pos = keys, *neg = keys + npos;
  gsize ip = 0, in = 0;
  for (gsize i = 0; i < n; i++) {
    if (labels[i])
      pos[ip++] = score_key(scores[i]);
    else
      neg[in++] = score_key(scores[i]);
  }
  radix_sort32(pos, tmp, npos);
  radix_sort32(neg, tmp, nneg);

  /* 2U = sum over positives of 2 #(neg below) + #(neg equal); exact. */
  guint64 u2 = 0;
  gsize lo = 0, hi = 0;
  for (gsize i = 0; i < npos; i++) {
    guint32 p = pos[i];
    while (lo < nneg && neg[lo] < p)
      lo++;
    if (hi < lo)
      hi = lo;
    while (hi < nneg && neg[hi] <= p)
      hi++;
    u2 += 2 * (guint64)lo + (guint64)(hi - lo);
  }
  return (double)u2 / (2.0 * (double)npos * (double)nneg);
}

/* 8-connected components of mask (nonzero) in one image: writes 1-based
 * component ids into @label (0 = background), appends each component's size
 * to @sizes, returns the count. @stack holds w*h ints. */
static int
label_components(const guint8 *mask, int w, int h, guint32 *label, guint32 first_id, GArray *sizes,
                 int *stack)
{
  const gsize n = (gsize)w * h;
  int count = 0;
  memset(label, 0, n * sizeof *label);
  for (gsize start = 0; start < n; start++) {
    if (!mask[start] || label[start])
      continue;
    guint32 id = first_id + (guint32)count;
    guint32 size = 0;
    gsize sp = 0;
    label[start] = id;
    stack[sp++] = (int)start;
    while (sp > 0) {
      int p = stack[--sp];
      int px = p % w, py = p / w;
      size++;
      for (int dy = -1; dy <= 1; dy++) {
        int yy = py + dy;
        if (yy < 0 || yy >= h)
          continue;
        for (int dx = -1; dx <= 1; dx++) {
          int xx = px + dx;
          if (xx < 0 || xx >= w)
            continue;
          gsize q = (gsize)yy * w + xx;
          if (mask[q] && !label[q]) {
            label[q] = id;
            stack[sp++] = (int)q;
          }
        }
      }
    }
    g_array_append_val(sizes, size);
    count++;
  }
  return count;
}

double
insp_metrics_aupro(const float *maps, const guint8 *masks, int n_images, int width, int height,
                   double max_fpr)
{
  g_return_val_if_fail(maps != NULL && masks != NULL, NAN);
  g_return_val_if_fail(n_images > 0 && width > 0 && height > 0, NAN);
  g_return_val_if_fail(max_fpr > 0.0 && max_fpr <= 1.0, NAN);
  g_return_val_if_fail((gsize)width * height <= G_MAXINT, NAN);
  const gsize plane = (gsize)width * height, total = plane * (gsize)n_images;

  gsize n_def = 0;
  for (gsize i = 0; i < total; i++)
    n_def += masks[i] != 0;
  const gsize n_ok = total - n_def;
  if (n_ok == 0 || n_def == 0)
    return NAN;

  /* Regions, numbered from 0 over all images; defect pixels carry their
   * region id in the low 32 bits and their score key in the high 32. */
  g_autoptr(GArray) sizes = g_array_new(FALSE, FALSE, sizeof(guint32));
  g_autofree guint32 *ok = g_new(guint32, n_ok);
  g_autofree guint64 *def = g_new(guint64, n_def);
  {
    g_autofree guint32 *label = g_new(guint32, plane);
    g_autofree int *stack = g_new(int, plane);
    gsize io = 0, id = 0;
    for (int im = 0; im < n_images; im++) {
      const guint8 *mk = masks + plane * im;
      const float *mp = maps + plane * im;
      label_components(mk, width, height, label, (guint32)sizes->len + 1, sizes, stack);
      for (gsize i = 0; i < plane; i++) {
        if (label[i])
          def[id++] = ((guint64)score_key(mp[i]) << 32) | (guint64)(label[i] - 1);
        else
          ok[io++] = score_key(mp[i]);
      }
    }
  }
  {
    g_autofree guint64 *tmp = g_new(guint64, MAX(n_def, (n_ok + 1) / 2));
    radix_sort64(def, tmp, n_def, 32);
    radix_sort32(ok, (guint32 *)tmp, n_ok);
  }
  g_autofree double *inv_size = g_new(double, sizes->len);
  for (guint r = 0; r < sizes->len; r++)
    inv_size[r] = 1.0 / (double)g_array_index(sizes, guint32, r);
  const double n_regions = (double)sizes->len;

  /* Walk thresholds from the highest score down; each distinct score is one
   * curve point. Integrate as we go and stop past max_fpr. */
  gsize io = n_ok, id = n_def, fp = 0;
  double pro_sum = 0.0, x0 = 0.0, y0 = 0.0, area = 0.0;
  gboolean done = FALSE;
  while (!done && (io > 0 || id > 0)) {
    guint32 t = 0;
    if (io > 0)
      t = ok[io - 1];
    if (id > 0 && (guint32)(def[id - 1] >> 32) > t)
      t = (guint32)(def[id - 1] >> 32);
    while (io > 0 && ok[io - 1] == t) {
      io--;
      fp++;
    }
    while (id > 0 && (guint32)(def[id - 1] >> 32) == t) {
      id--;
      pro_sum += inv_size[def[id] & 0xffffffffu];
    }
    double x = MIN((double)fp / (double)n_ok, 1.0);
    double y = MIN(pro_sum / n_regions, 1.0);
    if (x <= max_fpr) {
      area += 0.5 * (y + y0) * (x - x0);
      x0 = x;
      y0 = y;
    } else {
      double yi = y0 + (y - y0) * (max_fpr - x0) / (x - x0);
      area += 0.5 * (yi + y0) * (max_fpr - x0);
      done = TRUE;
    }
  }
  if (!done) {
    /* the closing point (1, 1) */
    double yi = y0 + (1.0 - y0) * (max_fpr - x0) / (1.0 - x0);
    if (x0 < max_fpr)
      area += 0.5 * (yi + y0) * (max_fpr - x0);
  }
  return area / max_fpr;
}

typedef struct {
  float score;
  guint8 label;
} ScoredLabel;

static int
cmp_desc(const void *a, const void *b)
{
  float x = ((const ScoredLabel *)a)->score, y = ((const ScoredLabel *)b)->score;
  return (x < y) - (x > y);
}

/* A copy of the scores with their labels (0/1), highest score first; the
 * number of defects in *@npos. */
static ScoredLabel *
sorted_desc(const float *scores, const guint8 *labels, gsize n, gsize *npos)
{
  ScoredLabel *v = g_new(ScoredLabel, n);

  *npos = 0;
  for (gsize i = 0; i < n; i++) {
    v[i].score = scores[i];
    v[i].label = labels[i] != 0;
    *npos += v[i].label;
  }
  qsort(v, n, sizeof *v, cmp_desc);
  return v;
}

/* Every candidate threshold in turn, from the highest score down: after
 * each sweep_next(), @t is the next distinct score and @tp / @fp count the
 * defects and good parts scoring >= @t (equal scores are one step, so a
 * threshold never splits a tie). */
typedef struct {
  const ScoredLabel *v;
  gsize n, i;
  guint64 tp, fp;
  float t;
} ThresholdSweep;

static gboolean
sweep_next(ThresholdSweep *s)
{
  if (s->i >= s->n)
    return FALSE;
  s->t = s->v[s->i].score;
  while (s->i < s->n && s->v[s->i].score == s->t) {
    if (s->v[s->i].label)
      s->tp++;
    else
      s->fp++;
    s->i++;
  }
  return TRUE;
}

gboolean
insp_metrics_f1_max(const float *scores, const guint8 *labels, gsize n, double *f1,
                    double *threshold)
{
  g_return_val_if_fail(n == 0 || (scores != NULL && labels != NULL), FALSE);
  gsize npos = 0;
  for (gsize i = 0; i < n; i++)
    npos += labels[i] != 0;
  if (npos == 0)
    return FALSE;

  for (gsize i = 0; i < n; i++)
    if (isnan(scores[i]))
      return FALSE; /* no order, so no threshold (and NaN == t never ends a run) */
  g_autofree ScoredLabel *v = sorted_desc(scores, labels, n, &npos);
  ThresholdSweep sw = {.v = v, .n = n};

  /* F1 = 2tp / (2tp + fp + fn), compared exactly as fractions; walking the
   * thresholds downwards, >= keeps the lowest threshold among equal F1. */
  guint64 best_num = 0, best_den = 1;
  double best_t = v[0].score;
  while (sweep_next(&sw)) {
    guint64 num = 2 * sw.tp, den = 2 * sw.tp + sw.fp + (npos - sw.tp);
    if (num * best_den >= best_num * den && sw.tp > 0) {
      best_num = num;
      best_den = den;
      best_t = sw.t;
    }
  }
  if (f1)
    *f1 = (double)best_num / (double)best_den;
  if (threshold)
    *threshold = best_t;
  return TRUE;
}

void
insp_metrics_rates(const float *scores, const guint8 *labels, gsize n, float threshold,
                   InspMetricsRates *out)
{
  g_return_if_fail(out != NULL);
  g_return_if_fail(n == 0 || (scores != NULL && labels != NULL));
  InspMetricsRates r = {0};
  for (gsize i = 0; i < n; i++) {
    gboolean fails = scores[i] >= threshold;
    if (labels[i]) {
      r.n_defect++;
      r.caught += fails;
    } else {
      r.n_good++;
      r.rejected += fails;
    }
  }
  r.recall = r.n_defect > 0 ? (double)r.caught / (double)r.n_defect : NAN;
  r.false_reject_rate = r.n_good > 0 ? (double)r.rejected / (double)r.n_good : NAN;
  *out = r;
}

/* Both classes present and every score ordered (not NaN). */
static gboolean
two_ordered_classes(const float *scores, const guint8 *labels, gsize n)
{
  gsize npos = 0;
  for (gsize i = 0; i < n; i++) {
    if (isnan(scores[i]))
      return FALSE;
    npos += labels[i] != 0;
  }
  return npos > 0 && npos < n;
}

gboolean
insp_metrics_separation(const float *scores, const guint8 *labels, gsize n,
                        InspMetricsSeparation *out)
{
  g_return_val_if_fail(n == 0 || (scores != NULL && labels != NULL), FALSE);
  if (!two_ordered_classes(scores, labels, n))
    return FALSE;
  float max_good = -INFINITY, min_defect = INFINITY;
  for (gsize i = 0; i < n; i++) {
    if (labels[i])
      min_defect = MIN(min_defect, scores[i]);
    else
      max_good = MAX(max_good, scores[i]);
  }
  gsize good_over = 0, defect_under = 0;
  for (gsize i = 0; i < n; i++) {
    if (labels[i])
      defect_under += scores[i] <= max_good;
    else
      good_over += scores[i] >= min_defect;
  }
  if (out) {
    out->max_good = max_good;
    out->min_defect = min_defect;
    out->gap = (double)min_defect - (double)max_good;
    out->good_over = good_over;
    out->defect_under = defect_under;
  }
  return TRUE;
}

/* @target rounded to the fewest decimals in [lo_d, hi_d] that stay within
 * @tol of it (or read back as the same float) and whose float lies in
 * (@below, @at] (no lower bound when !@has_below); FALSE when none does. */
static gboolean
round_within(double target, double tol, gboolean has_below, float below, float at, int lo_d,
             int hi_d, double *value, int *decimals)
{
  for (int d = lo_d; d <= hi_d; d++) {
    double p = pow(10.0, d);
    double v = round(target * p) / p;
    float vf = (float)v;
    if ((fabs(v - target) <= tol || vf == (float)target) && (!has_below || vf > below) &&
        vf <= at) {
      *value = v;
      *decimals = d;
      return TRUE;
    }
  }
  return FALSE;
}

gboolean
insp_metrics_recommend_threshold(const float *scores, const guint8 *labels, gsize n,
                                 InspMetricsRecommendation *out)
{
  g_return_val_if_fail(n == 0 || (scores != NULL && labels != NULL), FALSE);
  if (!two_ordered_classes(scores, labels, n))
    return FALSE;
  gsize npos;
  g_autofree ScoredLabel *v = sorted_desc(scores, labels, n, &npos);
  const gsize nneg = n - npos;
  ThresholdSweep sw = {.v = v, .n = n};

  /* J = tp/npos - fp/nneg, compared exactly as tp*nneg - fp*npos; walking
   * the thresholds downwards, >= keeps the lowest threshold among equal J
   * (the more defects caught). */
  gint64 best = 0;
  gboolean found = FALSE;
  float at = v[0].score, below = 0.0f;
  gboolean has_below = FALSE;
  while (sweep_next(&sw)) {
    gint64 j = (gint64)sw.tp * (gint64)nneg - (gint64)sw.fp * (gint64)npos;
    if (j > 0 && (!found || j >= best)) {
      best = j;
      found = TRUE;
      at = sw.t;
      has_below = sw.i < n;
      below = sw.i < n ? v[sw.i].score : 0.0f;
    }
  }
  if (!found)
    return FALSE; /* no threshold fails a larger share of defects than of good parts */

  double target = has_below ? 0.5 * ((double)below + (double)at) : (double)at;
  double value = (double)at;
  int decimals = 12;
  /* the middle, rounded by at most a tenth of each margin; else (an
   * interval too narrow for 9 decimals) the best score itself, which 12
   * decimals write back as the same float for scores of this size */
  double tol = has_below ? 0.05 * ((double)at - (double)below) : 0.0;
  if (!round_within(target, tol, has_below, below, at, 3, 9, &value, &decimals))
    round_within((double)at, 0.0, has_below, below, at, 3, 12, &value, &decimals);

  const float vf = (float)value;
  InspMetricsRates rates;
  insp_metrics_rates(scores, labels, n, vf, &rates);
  double good_below = -INFINITY, defect_above = INFINITY;
  for (gsize i = 0; i < n; i++) {
    if (!labels[i] && scores[i] < vf)
      good_below = MAX(good_below, (double)scores[i]);
    if (labels[i] && scores[i] >= vf)
      defect_above = MIN(defect_above, (double)scores[i]);
  }
  if (out) {
    out->threshold = value;
    out->decimals = decimals;
    out->separated = rates.caught == rates.n_defect && rates.rejected == 0;
    out->margin_good = isfinite(good_below) ? value - good_below : NAN;
    out->margin_defect = isfinite(defect_above) ? defect_above - value : NAN;
  }
  return TRUE;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double
insp_metrics_quantile(const double *values, gsize n, double q)
{
  g_return_val_if_fail(n == 0 || values != NULL, NAN);
  if (n == 0)
    return NAN;
  q = CLAMP(q, 0.0, 1.0);
  g_autofree double *v = g_memdup2(values, n * sizeof *v);
  qsort(v, n, sizeof *v, cmp_double);
  double pos = q * (double)(n - 1);
  gsize i = (gsize)floor(pos);
  if (i + 1 >= n)
    return v[n - 1];
  return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}
