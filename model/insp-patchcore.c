/* insp-patchcore: the PatchCore detector's own kernels: greedy coreset
 * selection of the memory bank at training, and the image score with
 * anomalib's reweighting at inference. The nearest-neighbour search itself is
 * insp_ops_nearest_neighbour (sgemm).
 *
 * Coreset: anomalib's KCenterGreedy, exactly (up to floating-point ties): a
 * seeded random start row is a centre but is not selected; then k times the
 * row farthest from every centre so far is selected and becomes a centre. The
 * brute force is O(k*n*d) and memory-bound (it streams the whole projected
 * bank once per selection: minutes for a 10 % coreset of 250k patches), so
 * this keeps each row in the cluster of its nearest centre (a linked list per
 * centre, with the cluster's radius = its largest min-distance) and uses the
 * triangle inequality: a cluster j whose centre is at distance >= 2*r_j from
 * the new centre c cannot have a row closer to c than to its own centre, so
 * it is skipped whole. A cheap lower bound |norm(c) - norm(c_j)| on that
 * distance (rows are centred first) skips most clusters without touching
 * their centre. Bounds carry a relative slack of 1e-4 so rounding never
 * skips a row the brute force would update.
 * Projection: when d > INSP_PATCHCORE_PROJ_DIM the rows are projected by a
 * seeded sparse random projection (Achlioptas / sklearn
 * SparseRandomProjection: density 1/sqrt(d), entries +-sqrt(1/density/dim));
 * otherwise distances are computed on the rows themselves (anomalib projects
 * 128 to 128 dims, which only adds distortion).
 *
 * Invariants: pure functions; the coreset allocates its working set (n floats
 * and ints, plus the projected copy when d > 128) and frees it; one thread. */
#include "insp-detector-private.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Squared Euclidean distance, 8 partial sums so the loop vectorises. */
static inline float
dist2(const float *a, const float *b, int d)
{
  float acc[8] = { 0 };
  int i = 0;

  for (; i + 8 <= d; i += 8)
    for (int l = 0; l < 8; l++) {
      float t = a[i + l] - b[i + l];

      acc[l] += t * t;
    }
  for (; i < d; i++) {
    float t = a[i] - b[i];

    acc[0] += t * t;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Is (r, idx) better than (best_r, best_idx): larger, or equal and earlier row. */
static inline gboolean
better(float r, gsize idx, float best_r, gsize best_idx)
{
  return r > best_r || (r == best_r && idx < best_idx);
}

static float *
project_rows(const float *x, gsize n, int d, int dp, guint64 seed)
{
  float *z = g_new(float, n * (gsize)dp);

  if (d <= dp) {
    memcpy(z, x, sizeof(float) * n * (gsize)d);
  } else {
    g_autofree float *r = g_new0(float, (gsize)d * dp);
    double density = 1.0 / sqrt((double)d);
    float v = (float)sqrt(1.0 / density / dp);
    guint64 st = seed ^ G_GUINT64_CONSTANT(0x5851F42D4C957F2D);

    for (gsize i = 0; i < (gsize)d * dp; i++) {
      double u = insp_detector_rand_uniform(&st);

      r[i] = u < density / 2 ? -v : u < density ? v : 0.0f;
    }
    /* z [n, dp] = x [n, d] * r [d, dp] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, dp, d, 1.0f, x, d, r, dp,
                0.0f, z, dp);
  }
  /* Centre the columns: distances are unchanged, norms become small, so the
   * norm lower bound prunes better. */
  {
    int dd = MIN(d, dp);
    g_autofree double *mean = g_new0(double, dd);

    g_autofree float *meanf = g_new(float, dd);

    for (gsize i = 0; i < n; i++)
      for (int j = 0; j < dd; j++)
        mean[j] += z[i * dd + j];
    for (int j = 0; j < dd; j++)
      meanf[j] = (float)(mean[j] / (double)n);
    for (gsize i = 0; i < n; i++)
      for (int j = 0; j < dd; j++)
        z[i * dd + j] -= meanf[j];
  }
  return z;
}

gsize *
insp_patchcore_coreset(const float *x, gsize n, int d, double fraction, guint64 seed,
                       gsize *k_out)
{
  int dp = MIN(d, INSP_PATCHCORE_PROJ_DIM);
  gsize k;
  g_autofree float *z = NULL;
  g_autofree float *md = NULL;     /* distance of each row to its centre */
  g_autofree gint64 *next = NULL;  /* next row in the same cluster, -1 ends */
  g_autofree gint64 *head = NULL;  /* first row of each cluster */
  g_autofree float *rad = NULL;    /* cluster radius (max md of members) */
  g_autofree gint64 *amax = NULL;  /* member with that radius (earliest on ties) */
  g_autofree float *cnorm = NULL;  /* norm of each centre */
  g_autofree gint64 *crow = NULL;  /* row of each centre */
  gsize *sel;
  gsize n_sel = 0, n_centres;
  guint64 st = seed;
  gsize start;

  g_return_val_if_fail(x != NULL && n > 0 && d > 0 && k_out != NULL, NULL);
  g_return_val_if_fail(fraction > 0.0 && fraction <= 1.0, NULL);

  k = (gsize)((double)n * fraction);
  k = CLAMP(k, 1, n);
  z = project_rows(x, n, d, dp, seed);
  md = g_new(float, n);
  next = g_new(gint64, n);
  head = g_new(gint64, k + 1);
  rad = g_new(float, k + 1);
  amax = g_new(gint64, k + 1);
  cnorm = g_new(float, k + 1);
  crow = g_new(gint64, k + 1);
  sel = g_new(gsize, k);

  start = (gsize)(insp_detector_rand_next(&st) % n);
  crow[0] = (gint64)start;
  {
    float s = 0;

    for (int j = 0; j < dp; j++)
      s += z[start * dp + j] * z[start * dp + j];
    cnorm[0] = sqrtf(s);
  }
  rad[0] = -1.0f;
  amax[0] = -1;
  for (gsize i = 0; i < n; i++) {
    md[i] = sqrtf(dist2(z + i * dp, z + start * dp, dp));
    next[i] = i + 1 < n ? (gint64)(i + 1) : -1;
    if (better(md[i], i, rad[0], amax[0] < 0 ? G_MAXSIZE : (gsize)amax[0])) {
      rad[0] = md[i];
      amax[0] = (gint64)i;
    }
  }
  head[0] = 0;
  n_centres = 1;

  while (n_sel < k) {
    gsize best = 0, c;
    const float *zc;
    float cn;

    for (gsize j = 1; j < n_centres; j++)
      if (better(rad[j], (gsize)amax[j], rad[best], (gsize)amax[best]))
        best = j;
    if (!(rad[best] > 0.0f))
      break; /* every row duplicates a centre */
    sel[n_sel++] = (gsize)amax[best];
    if (n_sel == k)
      break; /* the last selection's update is never used */

    c = n_centres++;
    crow[c] = amax[best];
    zc = z + (gsize)crow[c] * dp;
    {
      float s = 0;

      for (int j = 0; j < dp; j++)
        s += zc[j] * zc[j];
      cn = sqrtf(s);
    }
    cnorm[c] = cn;
    head[c] = -1;
    rad[c] = -1.0f;
    amax[c] = -1;

    for (gsize j = 0; j < c; j++) {
      float bound = 2.0f * rad[j] * (1.0f + 1e-4f);
      gint64 prev = -1, i;
      float nr = -1.0f;
      gint64 na = -1;

      if (!(rad[j] > 0.0f))
        continue;
      if (fabsf(cn - cnorm[j]) >= bound)
        continue;
      if (sqrtf(dist2(zc, z + (gsize)crow[j] * dp, dp)) >= bound)
        continue;
      i = head[j];
      while (i >= 0) {
        gint64 nx = next[i];
        float dd = sqrtf(dist2(z + (gsize)i * dp, zc, dp));

        if (dd < md[i]) {
          md[i] = dd;
          if (prev < 0)
            head[j] = nx;
          else
            next[prev] = nx;
          next[i] = head[c];
          head[c] = i;
          if (amax[c] < 0 || better(dd, (gsize)i, rad[c], (gsize)amax[c])) {
            rad[c] = dd;
            amax[c] = i;
          }
        } else {
          if (na < 0 || better(md[i], (gsize)i, nr, (gsize)na)) {
            nr = md[i];
            na = i;
          }
          prev = i;
        }
        i = nx;
      }
      rad[j] = na < 0 ? 0.0f : nr;
      amax[j] = na < 0 ? crow[j] : na;
    }
    if (amax[c] < 0) {
      rad[c] = 0.0f;
      amax[c] = crow[c];
    }
  }
  *k_out = n_sel;
  return sel;
}

float
insp_patchcore_image_score(const float *feats, int n_patches, int d, const float *patch_d2,
                           const int *argmin, const float *bank, const float *bank_sqnorm,
                           int bank_rows, float *knn_scratch, float *patch_scores)
{
  int best = 0;
  float s_star;
  const float *f_star, *m_star;
  int nb_idx[INSP_PATCHCORE_NUM_NEIGHBOURS];
  float nb_d[INSP_PATCHCORE_NUM_NEIGHBOURS];
  int n_nb = 0;
  double dist[INSP_PATCHCORE_NUM_NEIGHBOURS], mx, den;

  for (int p = 0; p < n_patches; p++) {
    patch_scores[p] = sqrtf(MAX(patch_d2[p], 0.0f));
    if (patch_scores[p] > patch_scores[best])
      best = p;
  }
  s_star = patch_scores[best];
  f_star = feats + (gsize)best * d;
  m_star = bank + (gsize)argmin[best] * d;
  if (bank_rows < 2)
    return s_star;

  /* Squared distances from m* to every bank row: |b|^2 + |m|^2 - 2 b.m. */
  cblas_sgemv(CblasRowMajor, CblasNoTrans, bank_rows, d, -2.0f, bank, d, m_star, 1, 0.0f,
              knn_scratch, 1);
  {
    float msq = bank_sqnorm[argmin[best]];

    for (int r = 0; r < bank_rows; r++)
      knn_scratch[r] = MAX(knn_scratch[r] + bank_sqnorm[r] + msq, 0.0f);
  }
  knn_scratch[argmin[best]] = -1.0f; /* m* itself first, whatever rounding says */
  /* Top-k smallest by insertion (k = 9). */
  for (int r = 0; r < bank_rows; r++) {
    float v = knn_scratch[r];
    int pos;

    if (n_nb == INSP_PATCHCORE_NUM_NEIGHBOURS && v >= nb_d[n_nb - 1])
      continue;
    pos = n_nb < INSP_PATCHCORE_NUM_NEIGHBOURS ? n_nb++ : n_nb - 1;
    while (pos > 0 && nb_d[pos - 1] > v) {
      nb_d[pos] = nb_d[pos - 1];
      nb_idx[pos] = nb_idx[pos - 1];
      pos--;
    }
    nb_d[pos] = v;
    nb_idx[pos] = r;
  }
  /* d_j = |f(p*) - N_b[j]|, exact; weight = 1 - softmax(d)[0]. */
  for (int j = 0; j < n_nb; j++)
    dist[j] = sqrt((double)dist2(f_star, bank + (gsize)nb_idx[j] * d, d));
  mx = dist[0];
  for (int j = 1; j < n_nb; j++)
    mx = MAX(mx, dist[j]);
  den = 0.0;
  for (int j = 0; j < n_nb; j++)
    den += exp(dist[j] - mx);
  return (float)((1.0 - exp(dist[0] - mx) / den) * s_star);
}
