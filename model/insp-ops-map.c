/* insp-ops-map: the spatial kernels behind the anomaly map and the nearest-
 * neighbour search of PatchCore — 3x3 (k x k) neighbourhood averaging,
 * bilinear and nearest resize with torch's index conventions, the Gaussian
 * blur with torch 'reflect' borders, and the nearest neighbour (a blocked
 * distance kernel with the row minimum fused, on a packed bank).
 *
 * Invariants: every kernel is pure (no allocation, no logging, no global
 * state), reads only inside its inputs whatever the sizes, and writes only its
 * outputs and the caller's scratch. Index arithmetic follows PyTorch exactly
 * (float scale = in/out, as ATen computes it) so that maps match a PyTorch
 * reference to float rounding. Any thread may enter; nothing is shared. */
#include "insp-ops.h"

#include <math.h>
#include <string.h>

/* Nearest neighbour: queries NN_MR at a time against panels of
 * INSP_OPS_NN_PANEL packed bank rows, the row minimum fused into the pass
 * (no distance matrix is written). Bank panels are taken NN_CHUNK at a time
 * (NN_CHUNK * 16 rows * d floats: 256 KB at d = 128, in L2) against every
 * query of a block of NN_QUERY_BLOCK, whose running per-lane minima live in
 * the scratch. Measured here (AVX-512 clone, 1 thread, 784 queries x 128
 * dims x 15680 rows): 6 queries 108 GFLOPS, 8 93, 10 120, and with the
 * dimension loop unrolled 4 times 6: 114, 8: 127, 10: 130-135, 12: 130,
 * 14: 128; OpenBLAS sgemm of the same product (no minimum) 125 with its
 * SkylakeX kernels, 30 with the Prescott ones it picks on this CPU. */
#define NN_MR 10
#define NN_CHUNK 32
#define NN_QUERY_BLOCK 1024

/* Kernels compiled for AVX-512, AVX2 and the baseline, chosen at load time
 * (as in insp-ops.c). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__)
#define INSP_OPS_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define INSP_OPS_CLONES
#endif

/* ---- average pool --------------------------------------------------------- */

/* x [c,h,w] -> y [c,h,w]: mean over the k x k window centred on each cell
 * (pad k/2), padded cells count as zeros (divide by k*k). Each source row's
 * window sums (left to right, from 0) are made once, POOL_CHUNK columns at
 * a time on the stack, and added to every output row whose window holds
 * that row, in row order: each output the same sums in the same order as
 * the plain k x k loop. */
#define POOL_CHUNK 256

/* The window sum of a border column, its window clipped to the row. */
static inline float
border_sum(const float *xr, int w, int k, int r, int ox)
{
  int x0 = MAX(ox - r, 0), x1 = MIN(ox - r + k - 1, w - 1);
  float v = 0.0f;

  for (int sx = x0; sx <= x1; sx++)
    v += xr[sx];
  return v;
}

INSP_OPS_CLONES static void
pool_channel(const float *xp, int h, int w, int k, float *yp)
{
  const int r = k / 2;
  const float inv = 1.0f / (float)(k * k);
  float hs[POOL_CHUNK];

  memset(yp, 0, (gsize)h * w * sizeof(float));
  for (int sy = 0; sy < h; sy++) {
    const float *xr = xp + (gsize)sy * w;
    /* output rows oy with oy - r <= sy <= oy - r + k - 1 */
    int oy0 = MAX(sy - (k - 1 - r), 0), oy1 = MIN(sy + r, h - 1);

    for (int c0 = 0; c0 < w; c0 += POOL_CHUNK) {
      int c1 = MIN(c0 + POOL_CHUNK, w);
      /* interior: the window [ox - r, ox - r + k) inside the row */
      int i0 = CLAMP(r, c0, c1), i1 = CLAMP(w - (k - 1 - r), i0, c1);

      for (int ox = c0; ox < i0; ox++)
        hs[ox - c0] = border_sum(xr, w, k, r, ox);
      for (int j = i0; j < i1; j++)
        hs[j - c0] = 0.0f;
      for (int t = 0; t < k; t++)
        for (int j = i0; j < i1; j++)
          hs[j - c0] += xr[j - r + t];
      for (int ox = i1; ox < c1; ox++)
        hs[ox - c0] = border_sum(xr, w, k, r, ox);
      for (int oy = oy0; oy <= oy1; oy++) {
        float *yr = yp + (gsize)oy * w;
        for (int j = c0; j < c1; j++)
          yr[j] += hs[j - c0];
      }
    }
  }
  for (gsize i = 0; i < (gsize)h * w; i++)
    yp[i] *= inv;
}

void
insp_ops_avgpool_same(const float *x, int c, int h, int w, int k, float *y)
{
  g_return_if_fail(x != NULL && y != NULL && c >= 0 && h >= 0 && w >= 0 && k >= 1);
  for (int ch = 0; ch < c; ch++)
    pool_channel(x + (gsize)ch * h * w, h, w, k, y + (gsize)ch * h * w);
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

/* Rows up to this wide, borders included, are blurred from a padded copy on
 * the stack (16 KB). */
#define BLUR_MAX_PADDED_ROW 4096

/* 16 lanes: one AVX-512 register, two AVX2 ones, four SSE ones. */
typedef float BlurVec __attribute__((vector_size(64), aligned(4), may_alias));

/* Interior columns [in0, in1) of one row: each output summed over the taps
 * in order in a register (16 columns at a time), then stored once. */
INSP_OPS_CLONES static void
blur_row_interior(const float *xr, int in0, int in1, const float *taps, int n_taps,
                  float *restrict sr)
{
  const int r = n_taps / 2;
  int ox = in0;

  for (; ox + 16 <= in1; ox += 16) {
    BlurVec acc = taps[0] * *(const BlurVec *)(xr + ox - r);
    for (int t = 1; t < n_taps; t++)
      acc += taps[t] * *(const BlurVec *)(xr + ox + t - r);
    *(BlurVec *)(sr + ox) = acc;
  }
  for (; ox < in1; ox++) {
    float acc = taps[0] * xr[ox - r];
    for (int t = 1; t < n_taps; t++)
      acc += taps[t] * xr[ox + t - r];
    sr[ox] = acc;
  }
}

/* Output row @oy of the vertical pass: rows of @scratch weighted by the
 * taps in order, 64 columns at a time in registers, then 16, then one. */
INSP_OPS_CLONES static void
blur_column_pass(const float *scratch, int h, int w, int oy, const float *taps, int n_taps,
                 float *restrict yr)
{
  const int r = n_taps / 2;
  int ox = 0;

#define BLUR_ROW(t)                                                                                \
  (scratch + (gsize)(oy - r + (t) >= 0 && oy - r + (t) < h ? oy - r + (t)                          \
                                                           : reflect_index(oy - r + (t), h)) *     \
                 w)
  for (; ox + 64 <= w; ox += 64) {
    const float *s0 = BLUR_ROW(0) + ox;
    BlurVec a0 = taps[0] * *(const BlurVec *)s0, a1 = taps[0] * *(const BlurVec *)(s0 + 16);
    BlurVec a2 = taps[0] * *(const BlurVec *)(s0 + 32), a3 = taps[0] * *(const BlurVec *)(s0 + 48);
    for (int t = 1; t < n_taps; t++) {
      const float *st = BLUR_ROW(t) + ox;
      a0 += taps[t] * *(const BlurVec *)st;
      a1 += taps[t] * *(const BlurVec *)(st + 16);
      a2 += taps[t] * *(const BlurVec *)(st + 32);
      a3 += taps[t] * *(const BlurVec *)(st + 48);
    }
    *(BlurVec *)(yr + ox) = a0;
    *(BlurVec *)(yr + ox + 16) = a1;
    *(BlurVec *)(yr + ox + 32) = a2;
    *(BlurVec *)(yr + ox + 48) = a3;
  }
  for (; ox + 16 <= w; ox += 16) {
    BlurVec a0 = taps[0] * *(const BlurVec *)(BLUR_ROW(0) + ox);
    for (int t = 1; t < n_taps; t++)
      a0 += taps[t] * *(const BlurVec *)(BLUR_ROW(t) + ox);
    *(BlurVec *)(yr + ox) = a0;
  }
  for (; ox < w; ox++) {
    float a0 = taps[0] * BLUR_ROW(0)[ox];
    for (int t = 1; t < n_taps; t++)
      a0 += taps[t] * BLUR_ROW(t)[ox];
    yr[ox] = a0;
  }
#undef BLUR_ROW
}

/* One plane x [h,w] -> y [h,w]: horizontal pass into @scratch, vertical pass
 * into @y, so x may equal y. Every output is its taps' sum in tap order. */
void
insp_ops_gaussian_blur(const float *x, int h, int w, const float *taps, int n_taps, float *scratch,
                       float *y)
{
  g_return_if_fail(x != NULL && y != NULL && taps != NULL && scratch != NULL);
  g_return_if_fail(h > 0 && w > 0 && n_taps >= 1 && n_taps % 2 == 1);
  const int r = n_taps / 2;

  /* Horizontal: each row copied into @pad with its reflected borders, then
   * summed as one interior; rows too wide for it take the interior in place
   * and the border columns one tap at a time. */
  float pad[BLUR_MAX_PADDED_ROW];
  const int in0 = MIN(r, w), in1 = MAX(w - r, in0);
  for (int row = 0; row < h; row++) {
    const float *xr = x + (gsize)row * w;
    float *sr = scratch + (gsize)row * w;
    if (w + 2 * r <= BLUR_MAX_PADDED_ROW) {
      for (int i = -r; i < w + r; i++)
        pad[r + i] = xr[i >= 0 && i < w ? i : reflect_index(i, w)];
      blur_row_interior(pad + r, 0, w, taps, n_taps, sr);
      continue;
    }
    blur_row_interior(xr, in0, in1, taps, n_taps, sr);
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
  for (int oy = 0; oy < h; oy++)
    blur_column_pass(scratch, h, w, oy, taps, n_taps, y + (gsize)oy * w);
}

/* ---- nearest neighbour ---------------------------------------------------- */

/* 16 lanes: one AVX-512 register, two AVX2 ones, four SSE ones. */
typedef float NnVec __attribute__((vector_size(4 * INSP_OPS_NN_PANEL), aligned(4), may_alias));
typedef gint32 NnIvec __attribute__((vector_size(4 * INSP_OPS_NN_PANEL), aligned(4), may_alias));

gsize
insp_ops_nn_packed_size(int nb, int d)
{
  g_return_val_if_fail(nb >= 0 && d > 0, 0);
  return (gsize)(nb + INSP_OPS_NN_PANEL - 1) / INSP_OPS_NN_PANEL * INSP_OPS_NN_PANEL * d;
}

void
insp_ops_nn_pack(const float *bank, int nb, int d, float *packed)
{
  g_return_if_fail(bank != NULL && packed != NULL && nb >= 0 && d > 0);
  const int np = (nb + INSP_OPS_NN_PANEL - 1) / INSP_OPS_NN_PANEL;

  for (int p = 0; p < np; p++) {
    float *dst = packed + (gsize)p * d * INSP_OPS_NN_PANEL;
    for (int j = 0; j < INSP_OPS_NN_PANEL; j++) {
      int r = p * INSP_OPS_NN_PANEL + j;
      for (int k = 0; k < d; k++)
        dst[(gsize)k * INSP_OPS_NN_PANEL + j] = r < nb ? bank[(gsize)r * d + k] : 0.0f;
    }
  }
}

gsize
insp_ops_nn_scratch_size(int nq)
{
  g_return_val_if_fail(nq >= 0, 0);
  /* per query of a block: 16 lane minima and 16 lane indices */
  return (gsize)MIN(nq, NN_QUERY_BLOCK) * 2 * INSP_OPS_NN_PANEL;
}

/* One block of queries (qn <= NN_QUERY_BLOCK, rows of q) against panels
 * [p0, p1): lane minima best [qn][16] and their rows bidx [qn][16] updated
 * (strictly smaller only: ties keep the earlier panel). */
INSP_OPS_CLONES static void
nn_block(const float *q, int qn, const float *packed, const float *bank_sqnorm, int nb, int d,
         int p0, int p1, float *best, gint32 *bidx)
{
  NnIvec lane;

  for (int j = 0; j < INSP_OPS_NN_PANEL; j++)
    lane[j] = j;
  for (int i0 = 0; i0 < qn; i0 += NN_MR) {
    const float *qr[NN_MR];
    NnVec bv[NN_MR];
    NnIvec bi[NN_MR];

    /* A short last block repeats its first query; its results are dropped. */
    for (int i = 0; i < NN_MR; i++) {
      int r = i0 + i < qn ? i0 + i : i0;
      qr[i] = q + (gsize)r * d;
      bv[i] = *(const NnVec *)(best + (gsize)r * INSP_OPS_NN_PANEL);
      bi[i] = *(const NnIvec *)(bidx + (gsize)r * INSP_OPS_NN_PANEL);
    }
    for (int p = p0; p < p1; p++) {
      const float *panel = packed + (gsize)p * d * INSP_OPS_NN_PANEL;
      NnVec acc[NN_MR], sq;
      NnIvec row = lane + p * INSP_OPS_NN_PANEL;
      int n_valid = MIN(INSP_OPS_NN_PANEL, nb - p * INSP_OPS_NN_PANEL);

      for (int i = 0; i < NN_MR; i++)
        acc[i] = (NnVec){0};
#pragma GCC unroll 4
      for (int k = 0; k < d; k++) {
        NnVec b = *(const NnVec *)(panel + (gsize)k * INSP_OPS_NN_PANEL);
        for (int i = 0; i < NN_MR; i++)
          acc[i] += qr[i][k] * b;
      }
      if (n_valid == INSP_OPS_NN_PANEL) {
        sq = *(const NnVec *)(bank_sqnorm + (gsize)p * INSP_OPS_NN_PANEL);
      } else {
        for (int j = 0; j < INSP_OPS_NN_PANEL; j++) /* padding rows never win */
          sq[j] = j < n_valid ? bank_sqnorm[p * INSP_OPS_NN_PANEL + j] : INFINITY;
      }
      for (int i = 0; i < NN_MR; i++) {
        NnVec v = sq - 2.0f * acc[i];
        NnIvec m = v < bv[i];
        bv[i] = (NnVec)(((NnIvec)v & m) | ((NnIvec)bv[i] & ~m));
        bi[i] = (row & m) | (bi[i] & ~m);
      }
    }
    for (int i = NN_MR; i-- > 0;) { /* backwards: a repeated query stores its own state last */
      int r = i0 + i < qn ? i0 + i : i0;
      *(NnVec *)(best + (gsize)r * INSP_OPS_NN_PANEL) = bv[i];
      *(NnIvec *)(bidx + (gsize)r * INSP_OPS_NN_PANEL) = bi[i];
    }
  }
}

/* q [nq,d], packed bank (insp_ops_nn_pack) of nb rows, bank_sqnorm [nb] ->
 * min_d2 [nq], argmin [nq] or NULL: per query min_j (|b_j|^2 - 2 q.b_j),
 * then + |q|^2 (q_sqnorm [nq], or computed when NULL), clamped at 0. Ties
 * go to the lowest bank index. Each pair's value is computed by the same
 * sequence of operations wherever the pair falls in the blocks. */
void
insp_ops_nearest_neighbour_with_norms(const float *q, int nq, const float *q_sqnorm,
                                      const float *packed, const float *bank_sqnorm, int nb, int d,
                                      float *scratch, float *min_d2, int *argmin)
{
  g_return_if_fail(q != NULL && packed != NULL && bank_sqnorm != NULL && scratch != NULL);
  g_return_if_fail(min_d2 != NULL && nq >= 0 && nb > 0 && d > 0);
  const int np = (nb + INSP_OPS_NN_PANEL - 1) / INSP_OPS_NN_PANEL;

  for (int q0 = 0; q0 < nq; q0 += NN_QUERY_BLOCK) {
    const int qn = MIN(NN_QUERY_BLOCK, nq - q0);
    const float *qb = q + (gsize)q0 * d;
    float *best = scratch;
    gint32 *bidx = (gint32 *)(void *)(scratch + (gsize)qn * INSP_OPS_NN_PANEL);

    for (gsize t = 0; t < (gsize)qn * INSP_OPS_NN_PANEL; t++) {
      best[t] = INFINITY;
      bidx[t] = 0;
    }
    for (int p0 = 0; p0 < np; p0 += NN_CHUNK)
      nn_block(qb, qn, packed, bank_sqnorm, nb, d, p0, MIN(np, p0 + NN_CHUNK), best, bidx);
    for (int i = 0; i < qn; i++) {
      const float *bv = best + (gsize)i * INSP_OPS_NN_PANEL, *qi = qb + (gsize)i * d;
      const gint32 *bi = bidx + (gsize)i * INSP_OPS_NN_PANEL;
      float m = bv[0], s = 0.0f;
      gint32 a = bi[0];

      for (int j = 1; j < INSP_OPS_NN_PANEL; j++)
        if (bv[j] < m || (bv[j] == m && bi[j] < a)) {
          m = bv[j];
          a = bi[j];
        }
      if (q_sqnorm != NULL) {
        s = q_sqnorm[q0 + i];
      } else {
        for (int k = 0; k < d; k++)
          s += qi[k] * qi[k];
      }
      m += s;
      min_d2[q0 + i] = m > 0.0f ? m : 0.0f;
      if (argmin != NULL)
        argmin[q0 + i] = a;
    }
  }
}

void
insp_ops_nearest_neighbour(const float *q, int nq, const float *packed, const float *bank_sqnorm,
                           int nb, int d, float *scratch, float *min_d2, int *argmin)
{
  insp_ops_nearest_neighbour_with_norms(q, nq, NULL, packed, bank_sqnorm, nb, d, scratch, min_d2,
                                        argmin);
}
