/* insp-padim: the PaDiM detector's kernels (Defard et al. 2021): one Gaussian
 * per patch position, fitted from running sums in double precision (mean,
 * unbiased covariance + eps*I, inverted through Cholesky), and the
 * Mahalanobis distance of each position at inference. Also the random
 * channel subset, drawn exactly as torch.randperm draws it (MT19937).
 *
 * Shapes: P positions, D feature dims; mean [P,D], inv_cov [P,D,D]
 * (row-major, symmetric, float32); the accumulator holds sum [P,D] and the
 * upper triangles of sum of outer products [P,D,D] in double.
 *
 * Invariants: an accumulator belongs to one training thread; the scoring
 * kernel is pure and allocation-free, any thread; the subset functions are
 * pure functions of (n, k, seed), any thread. */
#include "insp-kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PADIM_BATCH 32

/* Images are buffered PADIM_BATCH at a time so the outer products go through
 * one dsyrk per position (compute-bound) instead of a rank-1 update per image
 * (which streams the whole [P,D,D] sum once per image). */
struct _InspPadimAccum {
  int p, d, count;
  int pending;   /* images buffered, not yet in the sums */
  float *batch;  /* [PADIM_BATCH, P, D] */
  double *sum;   /* [P, D] */
  double *outer; /* [P, D, D], upper triangle */
  double *rows;  /* [PADIM_BATCH, D] */
};

InspPadimAccum *
insp_padim_accum_new(int n_positions, int d)
{
  InspPadimAccum *a = g_new0(InspPadimAccum, 1);

  a->p = n_positions;
  a->d = d;
  a->sum = g_new0(double, (gsize)n_positions *d);
  a->outer = g_new0(double, (gsize)n_positions *d *d);
  a->rows = g_new0(double, (gsize)PADIM_BATCH *d);
  a->batch = g_new(float, (gsize)PADIM_BATCH *n_positions *d);
  return a;
}

void
insp_padim_accum_free(InspPadimAccum *a)
{
  if (a == NULL)
    return;
  g_free(a->sum);
  g_free(a->outer);
  g_free(a->rows);
  g_free(a->batch);
  g_free(a);
}

int
insp_padim_accum_get_count(const InspPadimAccum *a)
{
  return a->count;
}

static void
flush(InspPadimAccum *a)
{
  int d = a->d, nb = a->pending;
  gsize per_img = (gsize)a->p * d;

  for (int p = 0; p < a->p && nb > 0; p++) {
    double *s = a->sum + (gsize)p * d;

    for (int b = 0; b < nb; b++) {
      const float *x = a->batch + b * per_img + (gsize)p * d;
      double *r = a->rows + (gsize)b * d;

      for (int i = 0; i < d; i++) {
        r[i] = x[i];
        s[i] += x[i];
      }
    }
    /* outer[p] (upper) += rows^T rows */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, nb, 1.0, a->rows, d, 1.0,
                a->outer + (gsize)p * d * d, d);
  }
  a->pending = 0;
}

void
insp_padim_accum_add(InspPadimAccum *a, const float *feats)
{
  memcpy(a->batch + (gsize)a->pending * a->p * a->d, feats, sizeof(float) * (gsize)a->p * a->d);
  a->pending++;
  a->count++;
  if (a->pending == PADIM_BATCH)
    flush(a);
}

gboolean
insp_padim_invert_spd(const double *a, int n, double *inv, double *work)
{
  double *l = work; /* lower Cholesky factor, then its inverse, in place */

  memset(l, 0, sizeof(double) * (gsize)n * n);
  for (int j = 0; j < n; j++) {
    double s = a[(gsize)j * n + j];

    for (int k = 0; k < j; k++)
      s -= l[(gsize)j * n + k] * l[(gsize)j * n + k];
    if (!(s > 0.0))
      return FALSE;
    l[(gsize)j * n + j] = sqrt(s);
    for (int i = j + 1; i < n; i++) {
      double t = a[(gsize)i * n + j];

      for (int k = 0; k < j; k++)
        t -= l[(gsize)i * n + k] * l[(gsize)j * n + k];
      l[(gsize)i * n + j] = t / l[(gsize)j * n + j];
    }
  }
  /* X = L^-1 in place, column by column: X[i][j] = -sum_{k=j}^{i-1} L[i][k]
   * X[k][j] / L[i][i]. Column j only overwrites entries the later columns no
   * longer read (row i, columns <= j), and reads the diagonal L[i][i] of rows
   * below before their own column inverts it. */
  for (int j = 0; j < n; j++) {
    l[(gsize)j * n + j] = 1.0 / l[(gsize)j * n + j];
    for (int i = j + 1; i < n; i++) {
      double t = 0.0;

      for (int k = j; k < i; k++)
        t -= l[(gsize)i * n + k] * l[(gsize)k * n + j];
      l[(gsize)i * n + j] = t / l[(gsize)i * n + i];
    }
  }
  /* A^-1 = X^T X: inv[i][j] = sum_{k >= max(i,j)} X[k][i] X[k][j]. */
  for (int i = 0; i < n; i++)
    for (int j = i; j < n; j++) {
      double t = 0.0;

      for (int k = j; k < n; k++)
        t += l[(gsize)k * n + i] * l[(gsize)k * n + j];
      inv[(gsize)i * n + j] = t;
      inv[(gsize)j * n + i] = t;
    }
  return TRUE;
}

gboolean
insp_padim_accum_finish(InspPadimAccum *a, double eps, float *mean, float *inv_cov)
{
  int d = a->d;
  double n = a->count;
  g_autofree double *cov = g_new(double, (gsize)d *d);
  g_autofree double *inv = g_new(double, (gsize)d *d);
  g_autofree double *work = g_new(double, (gsize)d *d);
  g_autofree double *mu = g_new(double, d);

  g_return_val_if_fail(a->count > 0, FALSE);
  flush(a);
  for (int p = 0; p < a->p; p++) {
    const double *s = a->sum + (gsize)p * d;
    const double *o = a->outer + (gsize)p * d * d;
    double div = a->count > 1 ? n - 1.0 : 1.0;

    for (int i = 0; i < d; i++) {
      mu[i] = s[i] / n;
      mean[(gsize)p * d + i] = (float)mu[i];
    }
    for (int i = 0; i < d; i++)
      for (int j = i; j < d; j++) {
        double c = (o[(gsize)i * d + j] - n * mu[i] * mu[j]) / div;

        cov[(gsize)i * d + j] = c;
        cov[(gsize)j * d + i] = c;
      }
    for (int i = 0; i < d; i++)
      cov[(gsize)i * d + i] += eps;
    if (!insp_padim_invert_spd(cov, d, inv, work))
      return FALSE;
    for (gsize i = 0; i < (gsize)d * d; i++)
      inv_cov[(gsize)p * d * d + i] = (float)inv[i];
  }
  return TRUE;
}

void
insp_padim_score(const float *feats, int n_positions, int d, const float *mean,
                 const float *inv_cov, float *work, float *out)
{
  float *diff = work, *tmp = work + d;

  for (int p = 0; p < n_positions; p++) {
    const float *x = feats + (gsize)p * d, *mu = mean + (gsize)p * d;
    float v;

    for (int i = 0; i < d; i++)
      diff[i] = x[i] - mu[i];
    cblas_ssymv(CblasRowMajor, CblasUpper, d, 1.0f, inv_cov + (gsize)p * d * d, d, diff, 1, 0.0f,
                tmp, 1);
    v = cblas_sdot(d, diff, 1, tmp, 1);
    out[p] = sqrtf(MAX(v, 0.0f));
  }
}

/* ---- channel subset ----
 *
 * anomalib's PaDiM keeps a random subset of the concatenated channels,
 * torch.randperm(n)[:k] from a generator seeded with the model seed, and we
 * draw the same indices so that a model trained here selects exactly the
 * channels PyTorch/anomalib would (torch.Generator().manual_seed(0) for
 * seed 0). That needs PyTorch's CPU generator bit for bit: a plain 32-bit
 * MT19937 seeded by init_genrand with the low 32 bits of the seed, and
 * randperm's small-n Fisher-Yates, which walks forwards, swapping r[i] with
 * r[i + draw % (n - i)] for i = 0 .. n-2, one 32-bit draw per step. */

void
insp_padim_randperm(int n, guint64 seed, int *perm)
{
  InspMt19937 mt;

  g_return_if_fail(n >= 0 && (guint64)n < G_MAXUINT32 / 20 && (perm != NULL || n == 0));
  insp_mt19937_init(&mt, (guint32)(seed & 0xffffffffu));
  for (int i = 0; i < n; i++)
    perm[i] = i;
  for (int i = 0; i + 1 < n; i++) {
    int z = (int)(insp_mt19937_next(&mt) % (guint32)(n - i));
    int t = perm[i];

    perm[i] = perm[i + z];
    perm[i + z] = t;
  }
}

static int
cmp_int(const void *a, const void *b)
{
  int x = *(const int *)a, y = *(const int *)b;

  return (x > y) - (x < y);
}

void
insp_padim_random_channels(int n, int k, guint64 seed, int *out)
{
  g_autofree int *perm = NULL;

  g_return_if_fail(k > 0 && k <= n && out != NULL);
  perm = g_new(int, n);
  insp_padim_randperm(n, seed, perm);
  memcpy(out, perm, sizeof(int) * (gsize)k);
  qsort(out, (gsize)k, sizeof(int), cmp_int);
}
