/* insp-ops-map: the spatial kernels behind the anomaly map and the nearest-
 * neighbour search of PatchCore — 3x3 (k x k) neighbourhood averaging,
 * bilinear and nearest resize with torch's index conventions, the Gaussian
 * blur with torch 'reflect' borders, and the sgemm-based nearest neighbour.
 *
 * Invariants: every kernel is pure (no allocation, no logging, no global
 * state), reads only inside its inputs whatever the sizes, and writes only its
 * outputs and the caller's scratch. Index arithmetic follows PyTorch exactly
 * (float scale = in/out, as ATen computes it) so that maps match a PyTorch
 * reference to float rounding. Any thread may enter; nothing is shared. */
#include "insp-ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* Nearest neighbour: bank rows per sgemm block. A [nq, NN_BLOCK] tile of
 * products (784 x 256 floats = 800 KB for a 28x28 map) is written by sgemm
 * and read once by the fused minimum while still in L2. Measured here (1
 * thread, d = 128, nq = 784): blocks of 128-512 run at plain-sgemm speed,
 * 1024 and 2048 lose 10-20 %. Queries are taken NN_QUERY_BLOCK at a time so
 * the scratch stays bounded for any nq. */
#ifndef NN_BLOCK
#define NN_BLOCK 256
#endif
#define NN_QUERY_BLOCK 1024

/* ---- average pool --------------------------------------------------------- */

/* x [c,h,w] -> y [c,h,w]: mean over the k x k window centred on each cell
 * (pad k/2), padded cells count as zeros (divide by k*k). */
void
insp_ops_avgpool_same(const float *x, int c, int h, int w, int k, float *y)
{
  g_return_if_fail(x != NULL && y != NULL && c >= 0 && h >= 0 && w >= 0 && k >= 1);
  const int r = k / 2;
  const float inv = 1.0f / (float)(k * k);

  for (int ch = 0; ch < c; ch++) {
    const float *xp = x + (gsize)ch * h * w;
    float *yp = y + (gsize)ch * h * w;
    for (int oy = 0; oy < h; oy++) {
      float *yr = yp + (gsize)oy * w;
      int y0 = MAX(oy - r, 0), y1 = MIN(oy - r + k - 1, h - 1);
      memset(yr, 0, (gsize)w * sizeof(float));
      for (int sy = y0; sy <= y1; sy++) {
        const float *xr = xp + (gsize)sy * w;
        for (int ox = 0; ox < w; ox++) {
          int x0 = MAX(ox - r, 0), x1 = MIN(ox - r + k - 1, w - 1);
          float s = 0.0f;
          for (int sx = x0; sx <= x1; sx++)
            s += xr[sx];
          yr[ox] += s;
        }
      }
      for (int ox = 0; ox < w; ox++)
        yr[ox] *= inv;
    }
  }
}

/* ---- resize --------------------------------------------------------------- */

/* torch area_pixel_compute_source_index, align_corners = False, linear mode:
 * src = scale*(dst + 0.5) - 0.5 clamped at 0; i1 = i0 + 1 unless at the edge. */
static inline void
linear_index(float scale, int dst, int in, int *i0, int *i1, float *l1)
{
  float src = scale * ((float)dst + 0.5f) - 0.5f;
  if (src < 0.0f)
    src = 0.0f;
  int i = (int)src;
  if (i > in - 1)
    i = in - 1;
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *l1 = src - (float)i;
}

#define RESIZE_CHUNK 256

/* x [c,h,w] -> y [c,oh,ow]. Columns are processed in chunks whose source
 * indices and weights live on the stack, so nothing is allocated. Within a
 * chunk, the two source rows are interpolated horizontally once per change
 * of source row pair (every ~oh/h output rows when upsampling), and each
 * output row is then a vectorisable blend of the two. */
void
insp_ops_resize_bilinear(const float *x, int c, int h, int w, int oh, int ow, float *y)
{
  g_return_if_fail(x != NULL && y != NULL && c >= 0 && h > 0 && w > 0 && oh >= 0 && ow >= 0);
  const float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  int cx0[RESIZE_CHUNK], cx1[RESIZE_CHUNK];
  float cl0[RESIZE_CHUNK], cl1[RESIZE_CHUNK], h0[RESIZE_CHUNK], h1[RESIZE_CHUNK];

  for (int xs = 0; xs < ow; xs += RESIZE_CHUNK) {
    int n = MIN(RESIZE_CHUNK, ow - xs);
    for (int i = 0; i < n; i++) {
      linear_index(sx, xs + i, w, &cx0[i], &cx1[i], &cl1[i]);
      cl0[i] = 1.0f - cl1[i];
    }
    for (int ch = 0; ch < c; ch++) {
      const float *xp = x + (gsize)ch * h * w;
      float *yp = y + (gsize)ch * oh * ow;
      int have0 = -1, have1 = -1;
      for (int oy = 0; oy < oh; oy++) {
        int y0, y1;
        float ly1;
        linear_index(sy, oy, h, &y0, &y1, &ly1);
        const float ly0 = 1.0f - ly1;
        if (y0 != have0 || y1 != have1) {
          const float *r0 = xp + (gsize)y0 * w, *r1 = xp + (gsize)y1 * w;
          for (int i = 0; i < n; i++) {
            h0[i] = cl0[i] * r0[cx0[i]] + cl1[i] * r0[cx1[i]];
            h1[i] = cl0[i] * r1[cx0[i]] + cl1[i] * r1[cx1[i]];
          }
          have0 = y0;
          have1 = y1;
        }
        float *yr = yp + (gsize)oy * ow + xs;
        for (int i = 0; i < n; i++)
          yr[i] = ly0 * h0[i] + ly1 * h1[i];
      }
    }
  }
}

/* torch 'nearest': src = min(floor(dst * (float)in/out), in - 1). */
static inline int
nearest_index(float scale, int dst, int in)
{
  int i = (int)floorf((float)dst * scale);
  return MIN(i, in - 1);
}

void
insp_ops_resize_nearest(const float *x, int c, int h, int w, int oh, int ow, float *y)
{
  g_return_if_fail(x != NULL && y != NULL && c >= 0 && h > 0 && w > 0 && oh >= 0 && ow >= 0);
  const float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  int cx[RESIZE_CHUNK];

  for (int xs = 0; xs < ow; xs += RESIZE_CHUNK) {
    int n = MIN(RESIZE_CHUNK, ow - xs);
    for (int i = 0; i < n; i++)
      cx[i] = nearest_index(sx, xs + i, w);
    for (int ch = 0; ch < c; ch++) {
      const float *xp = x + (gsize)ch * h * w;
      float *yp = y + (gsize)ch * oh * ow;
      for (int oy = 0; oy < oh; oy++) {
        const float *r = xp + (gsize)nearest_index(sy, oy, h) * w;
        float *yr = yp + (gsize)oy * ow + xs;
        for (int i = 0; i < n; i++)
          yr[i] = r[cx[i]];
      }
    }
  }
}

/* ---- Gaussian blur -------------------------------------------------------- */

int
insp_ops_gaussian_kernel(float sigma, float *taps)
{
  g_return_val_if_fail(taps != NULL && sigma > 0.0f, 0);
  const int r = (int)(4.0f * sigma + 0.5f);
  const int n = 2 * r + 1;
  const double two_s2 = 2.0 * (double)sigma * (double)sigma;
  double sum = 0.0;

  for (int i = 0; i < n; i++)
    sum += exp(-(double)(i - r) * (double)(i - r) / two_s2);
  for (int i = 0; i < n; i++)
    taps[i] = (float)(exp(-(double)(i - r) * (double)(i - r) / two_s2) / sum);
  return n;
}

/* torch 'reflect' index for i in any range: mirror about 0 and n-1 without
 * repeating the edge, repeated as often as needed (period 2(n-1)). */
static inline int
reflect_index(int i, int n)
{
  if (n == 1)
    return 0;
  const int period = 2 * (n - 1);
  i %= period;
  if (i < 0)
    i += period;
  return i < n ? i : period - i;
}

/* One plane x [h,w] -> y [h,w]: horizontal pass into @scratch, vertical pass
 * into @y, so x may equal y. */
void
insp_ops_gaussian_blur(const float *x, int h, int w, const float *taps, int n_taps, float *scratch,
                       float *y)
{
  g_return_if_fail(x != NULL && y != NULL && taps != NULL && scratch != NULL);
  g_return_if_fail(h > 0 && w > 0 && n_taps >= 1 && n_taps % 2 == 1);
  const int r = n_taps / 2;

  /* Horizontal. Interior columns [r, w-r) read no border and are summed
   * tap by tap across the row (vectorisable); border columns reflect. */
  const int in0 = MIN(r, w), in1 = MAX(w - r, in0);
  for (int row = 0; row < h; row++) {
    const float *xr = x + (gsize)row * w;
    float *sr = scratch + (gsize)row * w;
    for (int ox = in0; ox < in1; ox++)
      sr[ox] = taps[0] * xr[ox - r];
    for (int t = 1; t < n_taps; t++) {
      const float tap = taps[t];
      const int off = t - r;
      for (int ox = in0; ox < in1; ox++)
        sr[ox] += tap * xr[ox + off];
    }
    for (int ox = 0; ox < w; ox++) {
      if (ox == in0)
        ox = in1;
      if (ox >= w)
        break;
      float s = 0.0f;
      for (int t = 0; t < n_taps; t++)
        s += taps[t] * xr[reflect_index(ox - r + t, w)];
      sr[ox] = s;
    }
  }
  /* Vertical: each output row is a weighted sum of whole scratch rows. */
  for (int oy = 0; oy < h; oy++) {
    float *yr = y + (gsize)oy * w;
    const float *s0 = scratch + (gsize)reflect_index(oy - r, h) * w;
    for (int ox = 0; ox < w; ox++)
      yr[ox] = taps[0] * s0[ox];
    for (int t = 1; t < n_taps; t++) {
      const float *st = scratch + (gsize)reflect_index(oy - r + t, h) * w;
      const float tap = taps[t];
      for (int ox = 0; ox < w; ox++)
        yr[ox] += tap * st[ox];
    }
  }
}

/* ---- nearest neighbour ---------------------------------------------------- */

gsize
insp_ops_nn_scratch_size(int nq)
{
  g_return_val_if_fail(nq >= 0, 0);
  gsize qb = (gsize)MIN(nq, NN_QUERY_BLOCK);
  return qb * NN_BLOCK;
}

/* min over j of row[j] + bn[j] (n values, n >= 1). */
static inline float
row_min(const float *row, const float *bn, int n)
{
  float m = row[0] + bn[0];
  int j = 1;
#if defined(__SSE__)
  if (n >= 8) {
    __m128 m0 = _mm_add_ps(_mm_loadu_ps(row), _mm_loadu_ps(bn));
    __m128 m1 = _mm_add_ps(_mm_loadu_ps(row + 4), _mm_loadu_ps(bn + 4));
    for (j = 8; j + 8 <= n; j += 8) {
      m0 = _mm_min_ps(m0, _mm_add_ps(_mm_loadu_ps(row + j), _mm_loadu_ps(bn + j)));
      m1 = _mm_min_ps(m1, _mm_add_ps(_mm_loadu_ps(row + j + 4), _mm_loadu_ps(bn + j + 4)));
    }
    m0 = _mm_min_ps(m0, m1);
    float lanes[4];
    _mm_storeu_ps(lanes, m0);
    m = MIN(MIN(lanes[0], lanes[1]), MIN(lanes[2], lanes[3]));
  }
#endif
  for (; j < n; j++) {
    float v = row[j] + bn[j];
    m = v < m ? v : m;
  }
  return m;
}

/* The first j with row[j] + bn[j] == m, computed the same way as row_min. */
static inline int
row_find(const float *row, const float *bn, int n, float m)
{
  for (int j = 0; j < n; j++)
    if (row[j] + bn[j] == m)
      return j;
  return 0;
}

/* q [nq,d], bank [nb,d], bank_sqnorm [nb] -> min_d2 [nq], argmin [nq] or NULL.
 * For each block of queries: tile[i][j] = -2 q_i.b_j by sgemm, then per row
 * min_j (tile[i][j] + |b_j|^2), then + |q_i|^2, clamped at 0. Ties go to the
 * lowest bank index. */
void
insp_ops_nearest_neighbour(const float *q, int nq, const float *bank, const float *bank_sqnorm,
                           int nb, int d, float *scratch, float *min_d2, int *argmin)
{
  g_return_if_fail(q != NULL && bank != NULL && bank_sqnorm != NULL && scratch != NULL);
  g_return_if_fail(min_d2 != NULL && nq >= 0 && nb > 0 && d > 0);

  for (int q0 = 0; q0 < nq; q0 += NN_QUERY_BLOCK) {
    const int qn = MIN(NN_QUERY_BLOCK, nq - q0);
    const float *qb = q + (gsize)q0 * d;
    float *tile = scratch;
    float *best = min_d2 + q0;
    int *barg = argmin ? argmin + q0 : NULL;

    for (int i = 0; i < qn; i++)
      best[i] = INFINITY;
    if (barg)
      for (int i = 0; i < qn; i++)
        barg[i] = 0;

    for (int b0 = 0; b0 < nb; b0 += NN_BLOCK) {
      const int bn = MIN(NN_BLOCK, nb - b0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qn, bn, d, -2.0f, qb, d,
                  bank + (gsize)b0 * d, d, 0.0f, tile, bn);
      for (int i = 0; i < qn; i++) {
        const float *row = tile + (gsize)i * bn;
        float m = row_min(row, bank_sqnorm + b0, bn);
        /* Strictly smaller: on ties the earlier block (lower index) wins; the
         * index is looked up only when the minimum improves, in a row that
         * is still in cache. */
        if (m < best[i]) {
          best[i] = m;
          if (barg)
            barg[i] = b0 + row_find(row, bank_sqnorm + b0, bn, m);
        }
      }
    }
    for (int i = 0; i < qn; i++) {
      const float *qi = qb + (gsize)i * d;
      float s = 0.0f;
      for (int k = 0; k < d; k++)
        s += qi[k] * qi[k];
      float v = best[i] + s;
      best[i] = v > 0.0f ? v : 0.0f;
    }
  }
}
