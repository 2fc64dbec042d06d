/* insp-patchcore: the PatchCore detector's own kernels: greedy coreset
 * selection of the memory bank at training, and the image score (by default
 * anomalib's reweighting) at inference. The nearest-neighbour search itself is
 * insp_ops_nearest_neighbour (and insp-nn-index.c for the approximate one).
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
 * it is skipped whole. Rows are first centred and rotated onto their
 * principal axes (PCA by Jacobi on the DxD covariance: an orthonormal change
 * of basis, so distances are unchanged), which makes two more bounds cheap:
 * |norm(c) - norm(c_j)| <= |c - c_j|, and a squared distance summed 16
 * dims at a time stops as soon as it passes the bound (most of it lies in
 * the first dims). Bounds carry a relative slack of 1e-4 so rounding never
 * skips a row the brute force would update.
 * Projection: by default, as anomalib, the rows are first projected to
 * min(D, 128) dims by sklearn's seeded sparse random projection (numpy's
 * stream reproduced draw for draw, below), so that the selection is the one
 * a PyTorch fit makes; INSP_CORESET_PROJECTION=none instead keeps distances
 * exact (the rotation alone for D <= 128, the top 128 principal axes when
 * D > 128). The seed chooses the projection and the start row. Once the
 * pruning stops paying (late selections, where every cluster is near the
 * new centre), the loop streams every row over all threads instead, and
 * the adaptive strategy picks whichever measured cheaper; the selection is
 * the same either way. The default, batched strategy (below, before
 * insp_patchcore_coreset) needs neither the rotated copy nor the clusters:
 * it reads the rows as they are and applies many centres per pass, with
 * the nearest-neighbour kernel.
 *
 * Invariants: pure functions; the coreset allocates its working set
 * (batched: 2n floats and small buffers; the other strategies: the
 * projected copy of the rows, n*min(d,128) floats, and n floats + n ints)
 * and frees it; its passes use INSP_CORESET_THREADS threads (default every
 * processor), OpenBLAS may use its own. */
#include "insp-kernels.h"
#include "insp-ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The coreset's two modes (pruned, streamed) are timed and chosen per window
 * of BRUTE_WINDOW selections. */
#define BRUTE_WINDOW 32
#define MODE_PRUNED 0
#define MODE_STREAMED 1

/* Squared Euclidean distance, 8 partial sums so the loop vectorises. */
static inline float
dist2(const float *a, const float *b, int d)
{
  float acc[8] = {0};
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

/* Squared distance accumulated 16 dims at a time, stopping as soon as the
 * partial sum reaches @limit (the result is then >= limit, a lower bound of
 * the full distance). Rows are in principal-component order, so most of the
 * distance is in the first dims and far pairs stop early. */
static inline float
dist2_bounded(const float *a, const float *b, int d, float limit)
{
  float acc = 0.0f;
  int i = 0;

  for (; i + 16 <= d; i += 16) {
    acc += dist2(a + i, b + i, 16);
    if (acc >= limit)
      return acc;
  }
  if (i < d)
    acc += dist2(a + i, b + i, d - i);
  return acc;
}

/* Is (r, idx) better than (best_r, best_idx): larger, or equal and earlier row. */
static inline gboolean
better(float r, gsize idx, float best_r, gsize best_idx)
{
  return r > best_r || (r == best_r && idx < best_idx);
}

/* Eigenvectors of the symmetric a [n,n] (destroyed) by cyclic Jacobi
 * rotations, in double: v [n,n] row-major with eigenvector j in column j,
 * eigenvalues in w, sorted by decreasing eigenvalue. */
static void
symmetric_eigen(double *a, int n, double *v, double *w)
{
  g_autofree int *order = g_new(int, n);
  g_autofree double *vs = g_new(double, (gsize)n *n);

  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      v[(gsize)i * n + j] = i == j;
  for (int sweep = 0; sweep < 50; sweep++) {
    double off = 0.0, diag = 0.0;

    for (int p = 0; p < n; p++) {
      diag += a[(gsize)p * n + p] * a[(gsize)p * n + p];
      for (int q = p + 1; q < n; q++)
        off += a[(gsize)p * n + q] * a[(gsize)p * n + q];
    }
    if (off <= 1e-22 * diag)
      break;
    for (int p = 0; p < n - 1; p++)
      for (int q = p + 1; q < n; q++) {
        double apq = a[(gsize)p * n + q], app, aqq, theta, t, c, sn;

        if (fabs(apq) < 1e-300)
          continue;
        app = a[(gsize)p * n + p];
        aqq = a[(gsize)q * n + q];
        theta = (aqq - app) / (2.0 * apq);
        t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        c = 1.0 / sqrt(t * t + 1.0);
        sn = t * c;
        for (int k = 0; k < n; k++) {
          double akp = a[(gsize)k * n + p], akq = a[(gsize)k * n + q];

          a[(gsize)k * n + p] = c * akp - sn * akq;
          a[(gsize)k * n + q] = sn * akp + c * akq;
        }
        for (int k = 0; k < n; k++) {
          double apk = a[(gsize)p * n + k], aqk = a[(gsize)q * n + k];

          a[(gsize)p * n + k] = c * apk - sn * aqk;
          a[(gsize)q * n + k] = sn * apk + c * aqk;
        }
        for (int k = 0; k < n; k++) {
          double vkp = v[(gsize)k * n + p], vkq = v[(gsize)k * n + q];

          v[(gsize)k * n + p] = c * vkp - sn * vkq;
          v[(gsize)k * n + q] = sn * vkp + c * vkq;
        }
      }
  }
  for (int i = 0; i < n; i++)
    order[i] = i;
  for (int i = 1; i < n; i++) { /* insertion sort by decreasing eigenvalue */
    int o = order[i], j = i;

    while (j > 0 && a[(gsize)order[j - 1] * n + order[j - 1]] < a[(gsize)o * n + o]) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = o;
  }
  for (int j = 0; j < n; j++) {
    w[j] = a[(gsize)order[j] * n + order[j]];
    for (int i = 0; i < n; i++)
      vs[(gsize)i * n + j] = v[(gsize)i * n + order[j]];
  }
  memcpy(v, vs, sizeof(double) * (gsize)n * n);
}

/* block [m, d] = x [m, d] - mean */
static void
centre_rows(const float *x, gsize m, int d, const float *mean, float *block)
{
  for (gsize i = 0; i < m; i++)
    for (int j = 0; j < d; j++)
      block[i * d + j] = x[i * d + j] - mean[j];
}

static float
norm_of(const float *v, int d)
{
  float s = 0;

  for (int j = 0; j < d; j++)
    s += v[j] * v[j];
  return sqrtf(s);
}

/* The row with the largest md (the first of equals), and that md in *r. */
static gsize
farthest_row(const float *md, gsize n, float *r)
{
  gsize best = 0;

  for (gsize i = 1; i < n; i++)
    if (md[i] > md[best])
      best = i;
  *r = md[best];
  return best;
}

/* The mean of the rows x [n, d] (meanf [d]) and the basis [d, dp] B = R *
 * V[:, :dp]: the rows, optionally projected by r [d, dp] (NULL: none),
 * rotated onto the principal axes of the projected rows (an orthonormal
 * change of basis: distances are those of (x - mean) R; without r and d >
 * dp the top dp components are kept). The projection is folded into the
 * basis, so no projected copy of the rows is ever needed: the covariance of
 * x R is R^T C R. */
static void
principal_basis(const float *x, gsize n, int d, const float *r, int dp, float *meanf, float *basis)
{
  int e = r ? dp : d; /* dimension of the space the eigenvectors live in */
  g_autofree double *mean = g_new0(double, d);
  g_autofree float *covf = g_new0(float, (gsize)d *d);
  g_autofree double *cov = g_new(double, (gsize)d *d);
  g_autofree double *cp = NULL;
  g_autofree double *v = g_new(double, (gsize)e *e);
  g_autofree double *w = g_new(double, e);
  g_autofree float *block = NULL;
  const gsize bs = 4096;

  for (gsize i = 0; i < n; i++)
    for (int j = 0; j < d; j++)
      mean[j] += x[i * d + j];
  for (int j = 0; j < d; j++)
    meanf[j] = (float)(mean[j] / (double)n);
  /* Covariance (up to a factor) of the centred rows, in blocks. */
  block = g_new(float, bs *(gsize)d);
  for (gsize i0 = 0; i0 < n; i0 += bs) {
    gsize m = MIN(bs, n - i0);

    centre_rows(x + i0 * d, m, d, meanf, block);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)m, 1.0f, block, d, 1.0f, covf, d);
  }
  for (int i = 0; i < d; i++)
    for (int j = i; j < d; j++)
      cov[(gsize)i * d + j] = cov[(gsize)j * d + i] = covf[(gsize)i * d + j] / (double)n;
  if (r != NULL) {
    /* cp = R^T C R, [dp, dp] */
    g_autofree double *cr = g_new0(double, (gsize)d *dp);

    cp = g_new0(double, (gsize)dp *dp);
    for (int i = 0; i < d; i++)
      for (int k = 0; k < d; k++) {
        double c = cov[(gsize)i * d + k];

        if (c != 0.0)
          for (int j = 0; j < dp; j++)
            cr[(gsize)i * dp + j] += c * r[(gsize)k * dp + j];
      }
    for (int k = 0; k < d; k++)
      for (int i = 0; i < dp; i++) {
        double rk = r[(gsize)k * dp + i];

        if (rk != 0.0)
          for (int j = 0; j < dp; j++)
            cp[(gsize)i * dp + j] += rk * cr[(gsize)k * dp + j];
      }
    symmetric_eigen(cp, dp, v, w);
    /* basis = R V */
    for (int i = 0; i < d; i++)
      for (int j = 0; j < dp; j++) {
        double acc = 0.0;

        for (int k = 0; k < dp; k++)
          acc += (double)r[(gsize)i * dp + k] * v[(gsize)k * dp + j];
        basis[(gsize)i * dp + j] = (float)acc;
      }
  } else {
    symmetric_eigen(cov, d, v, w);
    for (int i = 0; i < d; i++)
      for (int j = 0; j < dp; j++)
        basis[(gsize)i * dp + j] = (float)v[(gsize)i * d + j];
  }
}

/* z [n, dp] = (x - mean) * B, with the mean and basis of principal_basis. */
static float *
rotate_rows(const float *x, gsize n, int d, const float *r, int dp)
{
  g_autofree float *meanf = g_new(float, d);
  g_autofree float *basis = g_new(float, (gsize)d *dp);
  g_autofree float *block = NULL;
  float *z = g_new(float, n *(gsize)dp);
  const gsize bs = 4096;

  principal_basis(x, n, d, r, dp, meanf, basis);
  block = g_new(float, bs *(gsize)d);
  for (gsize i0 = 0; i0 < n; i0 += bs) {
    gsize m = MIN(bs, n - i0);

    centre_rows(x + i0 * d, m, d, meanf, block);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, dp, d, 1.0f, block, d, basis, dp,
                0.0f, z + i0 * dp, dp);
  }
  return z;
}

/* The brute-force phase of the coreset: every row against the new centre,
 * md[i] = min(md[i], |z_i - c|) with the same arithmetic as the pruned phase
 * (dist2_bounded against md^2), and the argmax of md (earliest row on ties).
 * Rows are split into contiguous ranges, one per thread. */
typedef struct {
  const float *z, *c;
  float *md;
  gint64 *owner, c_index;
  int dp;
  gsize lo, hi;
  float best_r;
  gsize best_i;
} BruteRange;

typedef struct {
  GMutex lock;
  GCond done;
  int pending;
} BruteSync;

static void
brute_range(BruteRange *t)
{
  float br = -1.0f;
  gsize bi = G_MAXSIZE;

  for (gsize i = t->lo; i < t->hi; i++) {
    float m = t->md[i], lim = m * m;
    float dd2 = dist2_bounded(t->z + i * t->dp, t->c, t->dp, lim);

    if (dd2 < lim) {
      t->md[i] = m = sqrtf(dd2);
      t->owner[i] = t->c_index;
    }
    if (m > br) { /* rows ascend: the first max stays */
      br = m;
      bi = i;
    }
  }
  t->best_r = br;
  t->best_i = bi;
}

static void
brute_worker(gpointer data, gpointer user_data)
{
  BruteSync *sync = user_data;

  brute_range(data);
  g_mutex_lock(&sync->lock);
  if (--sync->pending == 0)
    g_cond_signal(&sync->done);
  g_mutex_unlock(&sync->lock);
}

static int
coreset_threads(void)
{
  const char *e = g_getenv("INSP_CORESET_THREADS");
  int t = e && atoi(e) > 0 ? atoi(e) : (int)g_get_num_processors();

  return CLAMP(t, 1, 64);
}

/* numpy's legacy RandomState, as far as sklearn's sparse random matrix uses
 * it: MT19937 seeded by init_genrand (an integer seed), doubles from two
 * words (a >> 5, b >> 6), binomial by inversion (n p <= 30, p <= 0.5),
 * bounded integers by masked rejection, shuffle as Fisher-Yates from the end. */
typedef struct {
  InspMt19937 mt;
  gboolean have_binomial;
  gint64 bn, bound;
  double bp, q, qn;
} NpRandomState;

static double
np_double(NpRandomState *rs)
{
  guint32 a = insp_mt19937_next(&rs->mt) >> 5, b = insp_mt19937_next(&rs->mt) >> 6;

  return (a * 67108864.0 + b) / 9007199254740992.0;
}

static gint64
np_binomial(NpRandomState *rs, gint64 n, double p)
{
  double px, u;
  gint64 x = 0;

  /* numpy: p > 0.5 draws the complement; n p > 30 would use BTPE, which is
   * not reproduced here (inversion instead: the same distribution, another
   * stream; only d_in > 900, wider than any stage pair inspectd ships). */
  if (p > 0.5)
    return n - np_binomial(rs, n, 1.0 - p);
  if (n == 0 || p == 0.0)
    return 0;
  if (!rs->have_binomial || rs->bn != n || rs->bp != p) {
    double np_ = (double)n * p;

    rs->have_binomial = TRUE;
    rs->bn = n;
    rs->bp = p;
    rs->q = 1.0 - p;
    rs->qn = exp((double)n * log(rs->q));
    rs->bound = (gint64)MIN((double)n, np_ + 10.0 * sqrt(np_ * rs->q + 1));
  }
  px = rs->qn;
  u = np_double(rs);
  while (u > px) {
    x++;
    if (x > rs->bound) {
      x = 0;
      px = rs->qn;
      u = np_double(rs);
    } else {
      u -= px;
      px = ((double)(n - x + 1) * p * px) / ((double)x * rs->q);
    }
  }
  return x;
}

/* A uniform integer in [0, max], max < 2^32. */
static guint32
np_interval(NpRandomState *rs, guint32 max)
{
  guint32 mask = max, v;

  if (max == 0)
    return 0;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  while ((v = insp_mt19937_next(&rs->mt) & mask) > max)
    ;
  return v;
}

void
insp_sklearn_sparse_random_matrix(int d_in, int d_out, guint32 seed, float *r)
{
  NpRandomState rs = {0};
  double density = 1.0 / sqrt((double)d_in);
  float v = (float)(sqrt(1.0 / density) / sqrt((double)d_out));
  g_autofree int *perm = g_new(int, d_in);
  g_autofree int *cols = g_new(int, (gsize)d_in *d_out);
  g_autofree int *rows = g_new(int, (gsize)d_in *d_out);
  gsize nnz = 0;

  insp_mt19937_init(&rs.mt, seed);
  memset(r, 0, sizeof(float) * (gsize)d_in * d_out);
  if (d_in == 1) {
    /* density 1: dense signs binomial(1, 0.5, (d_out, d_in)) / sqrt(d_out) */
    for (int i = 0; i < d_out; i++)
      r[i] = np_binomial(&rs, 1, 0.5) ? v : -v;
    return;
  }
  for (int i = 0; i < d_out; i++) {
    gint64 k = np_binomial(&rs, d_in, density);
    double ratio = (double)k / d_in;

    if (ratio > 0.01 && ratio < 0.99) {
      /* sample_without_replacement: permutation(d_in)[:k] */
      for (int j = 0; j < d_in; j++)
        perm[j] = j;
      for (int j = d_in - 1; j >= 1; j--) {
        int t = (int)np_interval(&rs, (guint32)j), tmp = perm[j];

        perm[j] = perm[t];
        perm[t] = tmp;
      }
    } else if (ratio >= 0.2) {
      /* reservoir sampling: the first k, then row i replaces a random slot */
      for (int j = 0; j < d_in; j++)
        perm[j] = j;
      for (int j = (int)k; j < d_in; j++) {
        guint32 t = np_interval(&rs, (guint32)j);

        if (t < (guint32)k)
          perm[t] = j;
      }
    } else {
      /* tracking selection: randint(d_in) until unseen */
      for (gint64 j = 0; j < k; j++) {
        gboolean seen;
        int c;

        do {
          c = (int)np_interval(&rs, (guint32)(d_in - 1));
          seen = FALSE;
          for (gint64 t = 0; t < j; t++)
            seen |= perm[t] == c;
        } while (seen);
        perm[j] = c;
      }
    }
    for (gint64 j = 0; j < k; j++) {
      rows[nnz] = i;
      cols[nnz++] = perm[j];
    }
  }
  /* Signs: binomial(1, 0.5) * 2 - 1 per non-zero, in row order. */
  for (gsize t = 0; t < nnz; t++)
    r[(gsize)cols[t] * d_out + rows[t]] = np_binomial(&rs, 1, 0.5) ? v : -v;
}

/* ---- the batched strategy ----
 *
 * The same greedy selection without a rotated copy of the rows and with
 * each pass over the rows applying many centres at once, so that the pass
 * is bound by arithmetic (the nearest-neighbour kernel) rather than by
 * memory. Distances are those of the projected, centred rows y = (x - mean)
 * B (B: the projection, the identity, or the top principal axes), computed
 * from x itself as |y_a|^2 + |y_c|^2 - 2 (x_a - mean) . w_c with w_c = B
 * B^T (x_c - mean) and the norms s = |y|^2 computed once: x is read, never
 * copied or changed.
 *
 * Which centres a pass can apply at once: after a pass, the BATCH_CANDIDATES
 * rows farthest from the centres are the candidates, and T the farthest of
 * the other rows. Their distances only shrink, so while the farthest
 * candidate (updated against the centres chosen since the pass, on the
 * candidates alone) is farther than T, it is the farthest of all rows: the
 * greedy's next selection. When it no longer is, one pass applies every
 * centre chosen since the last one to every row and finds the next
 * candidates. The selection is exactly the one-centre-at-a-time loop's, on
 * these distances: each pair's distance comes from the same kernel
 * arithmetic whether computed for the candidates or in the pass, and a
 * minimum does not depend on the order. Squared distances at or below
 * BATCH_DUP_FLOOR |y_a|^2 (the rounding of this form) count as 0: the row
 * duplicates a centre. */
#define BATCH_CANDIDATES 512
#define BATCH_MAX_CENTRES 256
#define BATCH_TILE 512
#define BATCH_DUP_FLOOR 1e-5f
#define BATCH_TIE_REL 1e-4f

typedef struct {
  float v;
  gsize i;
} Far;

/* a before b: farther, or as far and an earlier row */
static inline gboolean
far_before(Far a, Far b)
{
  return better(a.v, a.i, b.v, b.i);
}

/* The cap rows kept farthest in a heap whose root is the nearest of them. */
typedef struct {
  Far *h;
  int n, cap;
} FarHeap;

static void
far_heap_offer(FarHeap *hp, Far f)
{
  int i;

  if (hp->n < hp->cap) {
    i = hp->n++;
    while (i > 0 && far_before(hp->h[(i - 1) / 2], f)) {
      hp->h[i] = hp->h[(i - 1) / 2];
      i = (i - 1) / 2;
    }
    hp->h[i] = f;
    return;
  }
  if (!far_before(f, hp->h[0]))
    return;
  i = 0;
  for (;;) {
    int c = 2 * i + 1;

    if (c >= hp->n)
      break;
    if (c + 1 < hp->n && far_before(hp->h[c], hp->h[c + 1]))
      c++;
    if (!far_before(f, hp->h[c]))
      break;
    hp->h[i] = hp->h[c];
    i = c;
  }
  hp->h[i] = f;
}

static int
far_cmp(const void *a, const void *b)
{
  Far x = *(const Far *)a, y = *(const Far *)b;

  return far_before(x, y) ? -1 : far_before(y, x) ? 1 : 0;
}

/* Squared distances d2 [m] of the centred rows q [m, d] (norms s [m]) to
 * the centres packed (insp_ops_nn_pack of their w, norms csq), the nearest
 * one each, with the duplicate floor. */
static void
batch_distances(const float *q, const float *s, int m, const float *packed, const float *csq,
                int nc, int d, float *scratch, float *d2)
{
  insp_ops_nearest_neighbour_with_norms(q, m, s, packed, csq, nc, d, scratch, d2, NULL);
  for (int i = 0; i < m; i++)
    if (d2[i] <= BATCH_DUP_FLOOR * s[i])
      d2[i] = 0.0f;
}

typedef struct {
  const float *x, *mean, *s;
  float *md2;
  int d;
  gsize lo, hi;
  const float *packed, *csq;
  int nc;
  float *tile, *d2, *scratch;
  FarHeap heap;
} BatchRange;

/* md2 = min(md2, distance to the nearest packed centre) over the range,
 * and its farthest rows kept in the heap. */
static void
batch_range(BatchRange *t)
{
  t->heap.n = 0;
  for (gsize i0 = t->lo; i0 < t->hi; i0 += BATCH_TILE) {
    int m = (int)MIN(BATCH_TILE, t->hi - i0);

    centre_rows(t->x + i0 * t->d, m, t->d, t->mean, t->tile);
    batch_distances(t->tile, t->s + i0, m, t->packed, t->csq, t->nc, t->d, t->scratch, t->d2);
    for (int i = 0; i < m; i++) {
      float v = MIN(t->md2[i0 + i], t->d2[i]);

      t->md2[i0 + i] = v;
      if (t->heap.n < t->heap.cap || v >= t->heap.h[0].v)
        far_heap_offer(&t->heap, (Far){v, i0 + i});
    }
  }
}

static void
batch_worker(gpointer data, gpointer user_data)
{
  BruteSync *sync = user_data;

  batch_range(data);
  g_mutex_lock(&sync->lock);
  if (--sync->pending == 0)
    g_cond_signal(&sync->done);
  g_mutex_unlock(&sync->lock);
}

/* w [d] = B B^T q for the centred row q (B NULL: the identity), in double. */
static void
batch_centre(const float *q, const float *basis, int d, int dp, float *w)
{
  double t[INSP_PATCHCORE_PROJ_DIM];

  if (basis == NULL) {
    memcpy(w, q, sizeof(float) * d);
    return;
  }
  for (int j = 0; j < dp; j++)
    t[j] = 0.0;
  for (int i = 0; i < d; i++)
    for (int j = 0; j < dp; j++)
      t[j] += (double)q[i] * basis[(gsize)i * dp + j];
  for (int i = 0; i < d; i++) {
    double acc[8] = {0}; /* partial sums, so that the loop vectorises */
    const float *row = basis + (gsize)i * dp;
    int j = 0;

    for (; j + 8 <= dp; j += 8)
      for (int l = 0; l < 8; l++)
        acc[l] += (double)row[j + l] * t[j + l];
    for (; j < dp; j++)
      acc[0] += (double)row[j] * t[j];
    w[i] =
        (float)(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
  }
}

/* out [dp] = the row x [d] as the definition projects it: float(x R) summed
 * in double (r NULL: x itself, or (x - mean) B onto principal axes when d >
 * dp). */
static void
batch_reference_row(const float *x, const float *r, const float *mean, const float *basis, int d,
                    int dp, float *out)
{
  if (r == NULL && basis == NULL) {
    memcpy(out, x, sizeof(float) * d);
    return;
  }
  double acc[INSP_PATCHCORE_PROJ_DIM] = {0};

  for (int i = 0; i < d; i++) {
    double xi = r != NULL ? (double)x[i] : (double)x[i] - mean[i];
    const float *row = (r != NULL ? r : basis) + (gsize)i * dp;

    for (int j = 0; j < dp; j++)
      acc[j] += xi * row[j];
  }
  for (int j = 0; j < dp; j++)
    out[j] = (float)acc[j];
}

/* The squared distance of the reference row y [dp] to the nearest of the
 * centres' reference rows yc [from, to), in double, folded into *best. */
static void
batch_reference_md2(const float *y, const float *yc, gsize from, gsize to, int dp, double *best)
{
  for (gsize c = from; c < to; c++) {
    double acc[8] = {0}; /* partial sums, so that the loop vectorises */
    int j = 0;

    for (; j + 8 <= dp; j += 8)
      for (int l = 0; l < 8; l++) {
        double t = (double)y[j + l] - yc[c * dp + j + l];

        acc[l] += t * t;
      }
    for (; j < dp; j++) {
      double t = (double)y[j] - yc[c * dp + j];

      acc[0] += t * t;
    }
    *best = MIN(*best,
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
  }
}

static gsize *
coreset_batched(const float *x, gsize n, int d, gsize k, gsize start, const float *r, int dp,
                const InspCoresetOptions *o, gsize *k_out)
{
  const int nb = (int)MIN((gsize)BATCH_CANDIDATES, n);
  const gsize bs = 4096;
  g_autofree float *mean = g_new(float, d);
  g_autofree float *basis_pca = NULL;
  const float *basis = r;
  g_autofree float *s = g_new(float, n);
  g_autofree float *md2 = g_new(float, n);
  g_autofree float *cw = g_new(float, (gsize)BATCH_MAX_CENTRES *d);
  g_autofree float *csq = g_new(float, BATCH_MAX_CENTRES);
  g_autofree float *packed = g_new(float, insp_ops_nn_packed_size(BATCH_MAX_CENTRES, d));
  g_autofree float *one = g_new(float, insp_ops_nn_packed_size(1, d));
  g_autofree float *cq = g_new(float, (gsize)nb *d); /* the candidates, centred */
  g_autofree float *cs = g_new(float, nb);
  g_autofree float *cd2 = g_new(float, nb);
  g_autofree float *cscratch = g_new(float, insp_ops_nn_scratch_size(nb));
  g_autofree Far *cand = NULL;
  g_autofree BatchRange *rg = NULL;
  g_autofree gsize *chosen = g_new(gsize, BATCH_MAX_CENTRES);
  /* near ties: the centres' reference rows, and per candidate its exact
   * squared distance over the first ex_upto of them */
  const int ep = r == NULL && d <= dp ? d : dp;
  g_autofree float *yc = g_new(float, (k + 1) * (gsize)ep);
  g_autofree float *ycand = g_new(float, (gsize)nb *ep);
  g_autofree double *ex_val = g_new(double, nb);
  g_autofree gsize *ex_upto = g_new(gsize, nb);
  g_autofree int *contender = g_new(int, nb);
  guint64 n_ties = 0;
  GThreadPool *pool = NULL;
  BruteSync sync;
  gsize *sel = g_new(gsize, k);
  gsize n_sel = 0, step = MAX(k / 100, 1);
  guint64 n_passes = 0;
  int nt, nc;
  Far far_other;

  /* The metric: B = the projection as it is (any rotation of it gives the
   * same distances), the identity, or the top dp principal axes. */
  if (r == NULL && d > dp) {
    basis_pca = g_new(float, (gsize)d *dp);
    principal_basis(x, n, d, NULL, dp, mean, basis_pca);
    basis = basis_pca;
  } else {
    g_autofree double *sum = g_new0(double, d);

    for (gsize i = 0; i < n; i++)
      for (int j = 0; j < d; j++)
        sum[j] += x[i * d + j];
    for (int j = 0; j < d; j++)
      mean[j] = (float)(sum[j] / (double)n);
  }
  {
    g_autofree float *block = g_new(float, bs *(gsize)d);
    g_autofree float *y = basis ? g_new(float, bs *(gsize)dp) : NULL;

    for (gsize i0 = 0; i0 < n; i0 += bs) {
      gsize m = MIN(bs, n - i0);
      const float *yb = block;
      int e = d;

      centre_rows(x + i0 * d, m, d, mean, block);
      if (basis != NULL) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, dp, d, 1.0f, block, d, basis,
                    dp, 0.0f, y, dp);
        yb = y;
        e = dp;
      }
      for (gsize i = 0; i < m; i++) {
        double acc = 0.0;

        for (int j = 0; j < e; j++)
          acc += (double)yb[i * e + j] * yb[i * e + j];
        s[i0 + i] = (float)acc;
      }
    }
  }

  nt = o->threads > 0 ? o->threads : coreset_threads();
  nt = (int)MIN((gsize)nt, MAX(n / BATCH_TILE, 1));
  rg = g_new0(BatchRange, nt);
  g_mutex_init(&sync.lock);
  g_cond_init(&sync.done);
  if (nt > 1)
    pool = g_thread_pool_new(batch_worker, &sync, nt - 1, FALSE, NULL);
  for (int t = 0; t < nt; t++) {
    rg[t].x = x;
    rg[t].mean = mean;
    rg[t].s = s;
    rg[t].md2 = md2;
    rg[t].d = d;
    rg[t].lo = n * t / nt;
    rg[t].hi = n * (t + 1) / nt;
    rg[t].packed = packed;
    rg[t].csq = csq;
    rg[t].tile = g_new(float, (gsize)BATCH_TILE *d);
    rg[t].d2 = g_new(float, BATCH_TILE);
    rg[t].scratch = g_new(float, insp_ops_nn_scratch_size(BATCH_TILE));
    rg[t].heap.cap = nb + 1;
    rg[t].heap.h = g_new(Far, nb + 1);
  }
  cand = g_new(Far, (gsize)nt * (nb + 1));
  for (gsize i = 0; i < n; i++)
    md2[i] = INFINITY;

  /* The start is the first centre; then batches of centres until k. */
  batch_reference_row(x + start * d, r, mean, basis_pca, d, dp, yc);
  chosen[0] = start;
  centre_rows(x + start * d, 1, d, mean, cq);
  batch_centre(cq, basis, d, dp, cw);
  nc = 1;
  for (;;) {
    int n_cand = 0, m;

    /* the pass: every row against the nc centres chosen since the last
     * (a centre's own distance is 0, as in the definition) */
    for (int c = 0; c < nc; c++) {
      md2[chosen[c]] = 0.0f;
      csq[c] = s[chosen[c]];
    }
    insp_ops_nn_pack(cw, nc, d, packed);
    sync.pending = nt - 1;
    for (int t = 0; t < nt; t++)
      rg[t].nc = nc;
    for (int t = 1; t < nt; t++)
      g_thread_pool_push(pool, &rg[t], NULL);
    batch_range(&rg[0]);
    g_mutex_lock(&sync.lock);
    while (sync.pending > 0)
      g_cond_wait(&sync.done, &sync.lock);
    g_mutex_unlock(&sync.lock);
    n_passes++;
    if (n_sel == k)
      break;

    /* the candidates: the nb farthest rows; far_other the next one */
    for (int t = 0; t < nt; t++)
      for (int j = 0; j < rg[t].heap.n; j++)
        cand[n_cand++] = rg[t].heap.h[j];
    qsort(cand, n_cand, sizeof(Far), far_cmp);
    far_other = n_cand > nb ? cand[nb] : (Far){-1.0f, G_MAXSIZE};
    m = MIN(n_cand, nb);
    if (m == 0 || !(cand[0].v > 0.0f))
      break; /* every row duplicates a centre */
    for (int j = 0; j < m; j++) {
      centre_rows(x + cand[j].i * d, 1, d, mean, cq + (gsize)j * d);
      cs[j] = s[cand[j].i];
      ex_upto[j] = 0;
    }

    /* the selections this pass can apply */
    nc = 0;
    while (n_sel < k && nc < BATCH_MAX_CENTRES) {
      int b = 0;

      float band;
      int n_cont = 0;

      for (int j = 1; j < m; j++)
        if (far_before(cand[j], cand[b]))
          b = j;
      if (!far_before(cand[b], far_other) || !(cand[b].v > 0.0f))
        break;
      /* Near ties are decided on the definition's distances, in double; a
       * tie with the rows outside the candidates waits for the next pass,
       * unless this is the first selection after one (then it would wait
       * forever: only duplicates, whose order the index decides anyway). */
      band = cand[b].v * (1.0f - BATCH_TIE_REL);
      if (nc > 0 && far_other.v >= band)
        break;
      for (int j = 0; j < m; j++)
        if (cand[j].v >= band)
          contender[n_cont++] = j;
      if (n_cont > 1) {
        Far best = {0};

        n_ties++;
        for (int t = 0; t < n_cont; t++) {
          int j = contender[t];
          Far f;

          if (ex_upto[j] == 0) {
            batch_reference_row(x + cand[j].i * d, r, mean, basis_pca, d, dp,
                                ycand + (gsize)j * ep);
            ex_val[j] = INFINITY;
          }
          batch_reference_md2(ycand + (gsize)j * ep, yc, ex_upto[j], n_sel + 1, ep, &ex_val[j]);
          ex_upto[j] = n_sel + 1;
          f = (Far){(float)ex_val[j], cand[j].i};
          if (t == 0 || ex_val[j] > ex_val[b] || (ex_val[j] == ex_val[b] && f.i < best.i)) {
            b = j;
            best = f;
          }
        }
      }
      sel[n_sel++] = cand[b].i;
      batch_reference_row(x + cand[b].i * d, r, mean, basis_pca, d, dp, yc + n_sel * (gsize)ep);
      chosen[nc++] = cand[b].i;
      if (o->progress != NULL && n_sel % step == 0)
        o->progress(o->progress_stage, (int)n_sel, (int)k, o->progress_data);
      if (n_sel == k)
        break;
      batch_centre(cq + (gsize)b * d, basis, d, dp, cw + (gsize)(nc - 1) * d);
      insp_ops_nn_pack(cw + (gsize)(nc - 1) * d, 1, d, one);
      batch_distances(cq, cs, m, one, &cs[b], 1, d, cscratch, cd2);
      for (int j = 0; j < m; j++)
        cand[j].v = MIN(cand[j].v, cd2[j]);
      cand[b].v = 0.0f;
    }
    if (n_sel == k)
      break; /* the last selections' update is never used */
  }
  if (pool != NULL)
    g_thread_pool_free(pool, FALSE, TRUE);
  g_mutex_clear(&sync.lock);
  g_cond_clear(&sync.done);
  for (int t = 0; t < nt; t++) {
    g_free(rg[t].tile);
    g_free(rg[t].d2);
    g_free(rg[t].scratch);
    g_free(rg[t].heap.h);
  }
  g_debug("coreset (batched): %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " rows, %" G_GUINT64_FORMAT
          " passes over the rows on %d threads, %" G_GUINT64_FORMAT " near ties",
          n_sel, n, n_passes, nt, n_ties);
  if (o->progress != NULL && n_sel % step != 0)
    o->progress(o->progress_stage, (int)n_sel, (int)n_sel, o->progress_data);
  *k_out = n_sel;
  return sel;
}

gsize *
insp_patchcore_coreset(const float *x, gsize n, int d, double fraction, guint64 seed, gsize *k_out)
{
  InspCoresetOptions o;

  insp_coreset_options_init(&o);
  return insp_patchcore_coreset_tuned(x, n, d, fraction, seed, &o, k_out);
}

void
insp_coreset_options_init(InspCoresetOptions *o)
{
  memset(o, 0, sizeof *o);
  o->projection = insp_patchcore_coreset_projection();
  o->strategy = insp_patchcore_coreset_strategy();
}

InspCoresetStrategy
insp_patchcore_coreset_strategy(void)
{
  const char *e = g_getenv("INSP_CORESET_STRATEGY");

  if (g_strcmp0(e, "adaptive") == 0)
    return INSP_CORESET_ADAPTIVE;
  if (g_strcmp0(e, "pruned") == 0)
    return INSP_CORESET_PRUNED;
  if (g_strcmp0(e, "streamed") == 0)
    return INSP_CORESET_STREAMED;
  return INSP_CORESET_BATCHED;
}

InspCoresetProjection
insp_patchcore_coreset_projection(void)
{
  return g_strcmp0(g_getenv("INSP_CORESET_PROJECTION"), "none") == 0 ? INSP_CORESET_EXACT
                                                                     : INSP_CORESET_SPARSE_RANDOM;
}

gsize *
insp_patchcore_coreset_tuned(const float *x, gsize n, int d, double fraction, guint64 seed,
                             const InspCoresetOptions *o, gsize *k_out)
{
  int dp = MIN(d, INSP_PATCHCORE_PROJ_DIM);
  gsize k;
  g_autofree float *z = NULL;
  g_autofree float *md = NULL;    /* distance of each row to its centre */
  g_autofree gint64 *next = NULL; /* next row in the same cluster, -1 ends */
  g_autofree gint64 *head = NULL; /* first row of each cluster */
  g_autofree float *rad = NULL;   /* cluster radius (max md of members) */
  g_autofree gint64 *amax = NULL; /* member with that radius (earliest on ties) */
  g_autofree float *cnorm = NULL; /* norm of each centre */
  g_autofree float *cz = NULL;    /* the centres' rows, contiguous */
  g_autofree gint64 *crow = NULL; /* row of each centre */
  gsize *sel;
  gsize n_sel = 0, n_centres;
  gsize start;
  InspMt19937 mt;
  guint64 n_cluster_visits = 0, n_row_dists = 0, n_centre_dists = 0;
  gsize step, cur, cost_at[2] = {0, 0}, gap[2] = {BRUTE_WINDOW * 8, BRUTE_WINDOW * 8};
  gsize n_by_mode[2] = {0, 0};
  g_autofree gint64 *owner = NULL; /* centre (index into crow) each row is nearest to */
  g_autofree BruteRange *rg = NULL;
  GThreadPool *pool = NULL;
  BruteSync sync;
  int nt = 1, mode = MODE_PRUNED, n_switches = 0;
  gboolean probing = FALSE;
  double cost[2] = {-1.0, -1.0}; /* microseconds per selection, last window of each mode */
  gint64 window_t0;
  float cur_r = -1.0f;

  g_return_val_if_fail(x != NULL && n > 0 && d > 0 && k_out != NULL, NULL);
  g_return_val_if_fail(fraction > 0.0 && fraction <= 1.0, NULL);

  k = (gsize)((double)n * fraction);
  k = CLAMP(k, 1, n);
  step = MAX(k / 100, 1);
  /* torch.randint(n, (1,), generator seeded with the seed): the first
   * 32-bit MT19937 word modulo n (n < 2^32 here). */
  insp_mt19937_init(&mt, (guint32)(seed & 0xffffffffu));
  start = (gsize)(insp_mt19937_next(&mt) % (guint64)n);
  if (o->strategy == INSP_CORESET_BATCHED) {
    g_autofree float *r = NULL;

    if (o->projection == INSP_CORESET_SPARSE_RANDOM) {
      r = g_new(float, (gsize)d *dp);
      insp_sklearn_sparse_random_matrix(d, dp, (guint32)(seed & 0xffffffffu), r);
    }
    return coreset_batched(x, n, d, k, start, r, dp, o, k_out);
  }
  if (o->projection == INSP_CORESET_SPARSE_RANDOM) {
    /* As anomalib and the PyTorch reference: sklearn's sparse random
     * projection to dp dims first (a near-isometry; at 10 % it also selected
     * better banks on KolektorSDD than exact distances, see README). */
    g_autofree float *r = g_new(float, (gsize)d *dp);

    insp_sklearn_sparse_random_matrix(d, dp, (guint32)(seed & 0xffffffffu), r);
    z = rotate_rows(x, n, d, r, dp);
  } else {
    z = rotate_rows(x, n, d, NULL, dp);
  }
  md = g_new(float, n);
  owner = g_new0(gint64, n);
  next = g_new(gint64, n);
  head = g_new(gint64, k + 1);
  rad = g_new(float, k + 1);
  amax = g_new(gint64, k + 1);
  cnorm = g_new(float, k + 1);
  cz = g_new(float, (k + 1) * (gsize)dp);
  crow = g_new(gint64, k + 1);
  sel = g_new(gsize, k);

  crow[0] = (gint64)start;
  memcpy(cz, z + start * dp, sizeof(float) * dp);
  cnorm[0] = norm_of(cz, dp);
  rad[0] = -1.0f;
  amax[0] = -1;
  for (gsize i = 0; i < n; i++) {
    md[i] = sqrtf(dist2(z + i * dp, cz, dp));
    next[i] = i + 1 < n ? (gint64)(i + 1) : -1;
    if (better(md[i], i, rad[0], amax[0] < 0 ? G_MAXSIZE : (gsize)amax[0])) {
      rad[0] = md[i];
      amax[0] = (gint64)i;
    }
  }
  head[0] = 0;
  n_centres = 1;

  /* Two ways to apply a new centre, chosen per window of BRUTE_WINDOW
   * selections by their measured cost (both keep md and owner exact, so they
   * alternate freely and select the same rows):
   *   pruned:   visit only the clusters the triangle inequality cannot rule
   *             out (cheap once clusters are small and far apart, but each
   *             visited row is a jump through memory);
   *   streamed: every row, sequentially, vectorised, on all cores (wins on
   *             data of high intrinsic dimension, where the pruning visits
   *             most rows anyway).
   * The mode not in use is probed now and then (gap doubling while it
   * loses), since the pruning pays off better as the clusters shrink. */
  if (o->strategy == INSP_CORESET_STREAMED)
    mode = MODE_STREAMED;
  cur = mode == MODE_STREAMED ? farthest_row(md, n, &cur_r) : 0;
  window_t0 = g_get_monotonic_time();
  while (n_sel < k) {
    gsize s, c;
    float *zc;

    if (n_sel > 0 && n_sel % BRUTE_WINDOW == 0 && o->strategy != INSP_CORESET_PRUNED &&
        o->strategy != INSP_CORESET_STREAMED) {
      gint64 now = g_get_monotonic_time();
      int other = 1 - mode, next_mode = mode;

      cost[mode] = (double)(now - window_t0) / BRUTE_WINDOW;
      cost_at[mode] = n_sel;
      if (o->strategy == INSP_CORESET_ALTERNATE) {
        next_mode = other;
      } else if (probing) {
        /* the probe of this mode ends: keep it if it is cheaper */
        probing = FALSE;
        if (cost[mode] >= cost[other]) {
          gap[mode] *= 2;
          next_mode = other;
        } else {
          gap[other] = BRUTE_WINDOW * 8;
        }
      } else if (cost[other] < 0.0 || n_sel - cost_at[other] >= gap[other]) {
        probing = TRUE;
        next_mode = other;
      }
      if (next_mode != mode) {
        n_switches++;
        if (next_mode == MODE_PRUNED) {
          /* rebuild the cluster lists, radii and farthest members */
          for (gsize j = 0; j < n_centres; j++) {
            head[j] = -1;
            rad[j] = -1.0f;
            amax[j] = -1;
          }
          for (gsize i = n; i-- > 0;) {
            gint64 ow = owner[i];

            next[i] = head[ow];
            head[ow] = (gint64)i;
            if (amax[ow] < 0 || better(md[i], i, rad[ow], (gsize)amax[ow])) {
              rad[ow] = md[i];
              amax[ow] = (gint64)i;
            }
          }
          for (gsize j = 0; j < n_centres; j++)
            if (amax[j] < 0) {
              rad[j] = 0.0f;
              amax[j] = crow[j];
            }
        } else {
          cur = farthest_row(md, n, &cur_r);
        }
        mode = next_mode;
      }
      window_t0 = now;
    }

    if (mode == MODE_PRUNED) {
      gsize best = 0;

      for (gsize j = 1; j < n_centres; j++)
        if (better(rad[j], (gsize)amax[j], rad[best], (gsize)amax[best]))
          best = j;
      if (!(rad[best] > 0.0f))
        break; /* every row duplicates a centre */
      s = (gsize)amax[best];
    } else {
      if (!(cur_r > 0.0f))
        break;
      s = cur;
    }
    sel[n_sel++] = s;
    n_by_mode[mode]++;
    if (o->progress != NULL && n_sel % step == 0)
      o->progress(o->progress_stage, (int)n_sel, (int)k, o->progress_data);
    if (n_sel == k)
      break; /* the last selection's update is never used */

    c = n_centres++;
    crow[c] = (gint64)s;
    zc = cz + c * dp;
    memcpy(zc, z + s * dp, sizeof(float) * dp);
    cnorm[c] = norm_of(zc, dp);
    if (mode == MODE_STREAMED) {
      if (rg == NULL) {
        nt = o->threads > 0 ? o->threads : coreset_threads();
        rg = g_new0(BruteRange, nt);
        g_mutex_init(&sync.lock);
        g_cond_init(&sync.done);
        if (nt > 1)
          pool = g_thread_pool_new(brute_worker, &sync, nt - 1, FALSE, NULL);
        for (int t = 0; t < nt; t++) {
          rg[t].z = z;
          rg[t].md = md;
          rg[t].owner = owner;
          rg[t].dp = dp;
          rg[t].lo = n * t / nt;
          rg[t].hi = n * (t + 1) / nt;
        }
      }
      sync.pending = nt - 1;
      for (int t = 0; t < nt; t++) {
        rg[t].c = zc;
        rg[t].c_index = (gint64)c;
      }
      for (int t = 1; t < nt; t++)
        g_thread_pool_push(pool, &rg[t], NULL);
      brute_range(&rg[0]);
      g_mutex_lock(&sync.lock);
      while (sync.pending > 0)
        g_cond_wait(&sync.done, &sync.lock);
      g_mutex_unlock(&sync.lock);
      cur_r = -1.0f;
      for (int t = 0; t < nt; t++)
        if (rg[t].best_i != G_MAXSIZE && better(rg[t].best_r, rg[t].best_i, cur_r, cur)) {
          cur_r = rg[t].best_r;
          cur = rg[t].best_i;
        }
      n_row_dists += n;
      continue;
    }

    head[c] = -1;
    rad[c] = -1.0f;
    amax[c] = -1;
    for (gsize j = 0; j < c; j++) {
      float bound = 2.0f * rad[j] * (1.0f + 1e-4f);
      gint64 prev = -1, i;
      float nr = -1.0f, dcc2, half;
      gint64 na = -1;

      if (!(rad[j] > 0.0f))
        continue;
      if (fabsf(cnorm[c] - cnorm[j]) >= bound)
        continue;
      n_centre_dists++;
      dcc2 = dist2_bounded(zc, cz + j * dp, dp, bound * bound);
      if (dcc2 >= bound * bound)
        continue;
      /* Per row: |x - c| >= |c - c_j| - |x - c_j|, so a row with
       * md <= |c - c_j| / 2 cannot get closer (slack for rounding). */
      half = 0.5f * sqrtf(dcc2) * (1.0f - 1e-4f);
      n_cluster_visits++;
      i = head[j];
      while (i >= 0) {
        gint64 nx = next[i];
        float lim = md[i] * md[i];
        float dd2 = md[i] <= half ? lim : dist2_bounded(z + (gsize)i * dp, zc, dp, lim);

        n_row_dists += md[i] > half;
        if (dd2 < lim) {
          float dd = sqrtf(dd2);

          md[i] = dd;
          owner[i] = (gint64)c;
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
  if (rg != NULL) {
    if (pool != NULL)
      g_thread_pool_free(pool, FALSE, TRUE);
    g_mutex_clear(&sync.lock);
    g_cond_clear(&sync.done);
  }
  g_debug("coreset: %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " rows (%" G_GSIZE_FORMAT
          " pruned, %" G_GSIZE_FORMAT " streamed, %d switches), %" G_GUINT64_FORMAT
          " centre distances, %" G_GUINT64_FORMAT " clusters visited, %" G_GUINT64_FORMAT
          " row distances (brute force: %" G_GUINT64_FORMAT ")",
          n_sel, n, n_by_mode[MODE_PRUNED], n_by_mode[MODE_STREAMED], n_switches, n_centre_dists,
          n_cluster_visits, n_row_dists, (guint64)n * n_sel);
  if (o->progress != NULL && n_sel % step != 0)
    o->progress(o->progress_stage, (int)n_sel, (int)n_sel, o->progress_data);
  *k_out = n_sel;
  return sel;
}

float
insp_patchcore_image_score(const float *feats, int n_patches, int d, const float *patch_d2,
                           const int *argmin, const float *bank, const float *bank_sqnorm,
                           int bank_rows, InspImageScoreRule rule, int k, float *knn_scratch,
                           float *patch_scores)
{
  int best = 0;
  float s_star;
  const float *f_star, *m_star;
  int nb_idx[INSP_MODEL_NEIGHBOURS_MAX];
  float nb_d[INSP_MODEL_NEIGHBOURS_MAX];
  int n_nb = 0;
  double dist[INSP_MODEL_NEIGHBOURS_MAX] = {0}, mx, den;

  for (int p = 0; p < n_patches; p++) {
    patch_scores[p] = sqrtf(MAX(patch_d2[p], 0.0f));
    if (patch_scores[p] > patch_scores[best])
      best = p;
  }
  if (rule == INSP_IMAGE_SCORE_MAP_MAX)
    return NAN;
  s_star = patch_scores[best];
  if (rule == INSP_IMAGE_SCORE_MAX)
    return s_star;
  g_return_val_if_fail(k >= INSP_MODEL_NEIGHBOURS_MIN && k <= INSP_MODEL_NEIGHBOURS_MAX, s_star);
  f_star = feats + (gsize)best * d;
  m_star = bank + (gsize)argmin[best] * d;
  k = MIN(k, bank_rows); /* anomalib: min(num_neighbors, the bank's size) */
  if (k < 2)
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
  n_nb = insp_smallest_k(knn_scratch, bank_rows, 1, k, nb_d, nb_idx);
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
