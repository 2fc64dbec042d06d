/* insp-ops: the dense CNN kernels of the engine (conv2d as im2col + a
 * matrix product of our own with a direct 1x1 path, Winograd 3x3 on
 * OpenBLAS's sgemm, depthwise 3x3, batch-norm folding, activations, residual add, max and
 * global-average pooling, conv geometry). The map kernels (average pool, resizes, blur, nearest
 * neighbour) live in insp-ops-map.c.
 *
 * Invariants: tensors are single CHW float32 images; no kernel allocates,
 * logs or keeps state, so any thread may enter any kernel at any time with its
 * own buffers. Shapes are trusted (checked by the backbone at load and at
 * scratch creation); only cheap g_return_if_fail guards remain. */
#include "insp-ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Kernels compiled for AVX-512, AVX2 and the baseline, chosen at load time
 * (the library is built for baseline x86-64; haswell = AVX2 + FMA). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__)
#define INSP_OPS_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#define INSP_OPS_INLINE static inline __attribute__((always_inline))
#else
#define INSP_OPS_CLONES
#define INSP_OPS_INLINE static inline
#endif

/* First and one-past-last output index o in [0, n_out) whose input index
 * o*stride - pad + tap lies in [0, n_in). */
static inline void
valid_range(int n_in, int n_out, int stride, int pad, int tap, int *lo, int *hi)
{
  int off = pad - tap; /* need o*stride >= off and o*stride <= n_in - 1 + off */
  int l = off <= 0 ? 0 : (off + stride - 1) / stride;
  int last = n_in - 1 + off;
  int h = last < 0 ? 0 : last / stride + 1;

  if (h > n_out)
    h = n_out;
  if (l > h)
    l = h;
  *lo = l;
  *hi = h;
}

void
insp_ops_conv_geometry(InspPadMode mode, int in, int k, int stride, int pad, int *out,
                       int *pad_before)
{
  g_return_if_fail(in > 0 && k > 0 && stride > 0 && out != NULL && pad_before != NULL);

  if (mode == INSP_PAD_TF_SAME) {
    int o = (in + stride - 1) / stride;
    int total = (o - 1) * stride + k - in;

    *out = o;
    *pad_before = total > 0 ? total / 2 : 0;
  } else {
    *out = (in + 2 * pad - k) / stride + 1;
    *pad_before = pad;
  }
}

gsize
insp_ops_conv2d_scratch_size(int cin, int kh, int kw, int oh, int ow, int stride)
{
  if (kh == 1 && kw == 1 && stride == 1)
    return 0;
  return (gsize)cin * kh * kw * oh * ow;
}

/* Columns [p0, p1) of col [cin*kh*kw, oh*ow] (rows oh*ow apart): row
 * (c*kh + i)*kw + j, column oy*ow + ox holds x[c, oy*s - pt + i, ox*s - pl + j]
 * (0 outside the image), matching the OIHW weight layout flattened to
 * [cout, cin*kh*kw]. */
static void
im2col(const float *x, int cin, int h, int w, int kh, int kw, int stride, int pt, int pl, int oh,
       int ow, gsize p0, gsize p1, float *col)
{
  gsize ohw = (gsize)oh * ow;

  for (int c = 0; c < cin; c++) {
    const float *xc = x + (gsize)c * h * w;
    for (int i = 0; i < kh; i++) {
      for (int j = 0; j < kw; j++) {
        float *row = col + ((gsize)(c * kh + i) * kw + j) * ohw;
        int lo, hi;

        valid_range(w, ow, stride, pl, j, &lo, &hi);
        for (gsize p = p0; p < p1;) {
          int oy = (int)(p / (gsize)ow), x0 = (int)(p % (gsize)ow);
          int x1 = (int)MIN((gsize)ow, (gsize)x0 + (p1 - p));
          int iy = oy * stride - pt + i, a = MAX(x0, lo), b = MIN(x1, hi);
          float *dst = row + (gsize)oy * ow;

          p += (gsize)(x1 - x0);
          if (iy < 0 || iy >= h || a >= b) {
            memset(dst + x0, 0, sizeof(float) * (x1 - x0));
            continue;
          }
          const float *src = xc + (gsize)iy * w - pl + j;
          for (int ox = x0; ox < a; ox++)
            dst[ox] = 0.0f;
          if (stride == 1) {
            memcpy(dst + a, src + a, sizeof(float) * (b - a));
          } else if (stride == 2) {
            for (int ox = a; ox < b; ox++)
              dst[ox] = src[2 * ox];
          } else {
            for (int ox = a; ox < b; ox++)
              dst[ox] = src[ox * stride];
          }
          for (int ox = b; ox < x1; ox++)
            dst[ox] = 0.0f;
        }
      }
    }
  }
}

/* 16 lanes: one AVX-512 register, two AVX2 ones, four SSE ones. */
typedef float GemmVec __attribute__((vector_size(64), aligned(4), may_alias));
typedef gint32 GemmIvec __attribute__((vector_size(64), aligned(4), may_alias));
#define GEMM_MR 8 /* output channels per tile */

/* In place (vectors go by pointer: by value they would change the ABI
 * between the clones). */
INSP_OPS_INLINE void
gemm_act(GemmVec *t, InspActivation act)
{
  const GemmVec zero = {0}, six = zero + 6.0f;

  if (act != INSP_ACT_NONE)
    *t = (GemmVec)((GemmIvec)*t & (*t > zero)); /* NaN -> 0, as the scalar form */
  if (act == INSP_ACT_RELU6) {
    GemmIvec m = *t < six;
    *t = (GemmVec)(((GemmIvec)*t & m) | ((GemmIvec)six & ~m));
  }
}

INSP_OPS_INLINE float
gemm_act1(float v, InspActivation act)
{
  if (act != INSP_ACT_NONE)
    v = v > 0.0f ? v : 0.0f;
  if (act == INSP_ACT_RELU6)
    v = v < 6.0f ? v : 6.0f;
  return v;
}

/* One tile: output channels [o0, o0 + GEMM_MR) (a short last tile repeats
 * channel cout - 1 and drops it) x 16 * @nv columns from @j, of which those
 * in [@keep, @end) are stored (a tail tile overlaps columns outside its part,
 * which it computes from whatever is there and leaves alone; they lie in the
 * row, so every read is in bounds). Each output is the sum over c = 0..k-1
 * in order, then + bias, + residual, activation: the same arithmetic in
 * every lane, so results do not depend on where a column falls. */
INSP_OPS_INLINE void
gemm_tile(const float *w, int cout, int k, int o0, const float *b, gsize ldb, gsize j, gsize keep,
          gsize end, const float *bias, const float *r, InspActivation act, gsize ldy, float *y,
          int nv)
{
  const float *wr[GEMM_MR];
  GemmVec acc[GEMM_MR][2];

  for (int i = 0; i < GEMM_MR; i++) {
    wr[i] = w + (gsize)MIN(o0 + i, cout - 1) * k;
    acc[i][0] = acc[i][1] = (GemmVec){0};
  }
  for (int c = 0; c < k; c++) {
    const float *bc = b + (gsize)c * ldb + j;
    GemmVec x0 = *(const GemmVec *)bc, x1 = nv > 1 ? *(const GemmVec *)(bc + 16) : x0;
    for (int i = 0; i < GEMM_MR; i++) {
      float wv = wr[i][c];
      acc[i][0] += wv * x0;
      if (nv > 1)
        acc[i][1] += wv * x1;
    }
  }
  for (int i = 0; i < GEMM_MR && o0 + i < cout; i++) {
    gsize at = (gsize)(o0 + i) * ldy + j;
    for (int v = 0; v < nv; v++) {
      GemmVec t = acc[i][v] + (bias != NULL ? bias[o0 + i] : 0.0f);
      if (r != NULL)
        t += *(const GemmVec *)(r + at + 16 * v);
      gemm_act(&t, act);
      gsize first = j + 16 * (gsize)v;
      gsize lo = keep > first ? keep - first : 0;
      gsize hi = end > first ? MIN(end - first, 16) : 0;
      if (lo == 0 && hi == 16) {
        *(GemmVec *)(y + at + 16 * v) = t;
      } else {
        for (gsize l = lo; l < hi; l++)
          y[at + 16 * v + l] = t[l];
      }
    }
  }
}

/* y [cout, columns j0..j1 of rows ldy apart] = act(w [cout, k] b [k, columns
 * j0..j1 of rows ldb apart] + bias (+ r, laid out as y)), the rows of b and y
 * at least 16 long: tiles of GEMM_MR channels x 32 columns (the [k, 32]
 * block of b stays in L1/L2 while every channel tile reads it), then 16
 * columns, then for what is left one tile of the 16 columns ending at j1 (or
 * the row's first 16 when j1 < 16), storing only [j, j1). */
INSP_OPS_CLONES static void
gemm_bias_act(const float *w, int cout, int k, const float *b, gsize ldb, const float *bias,
              const float *r, InspActivation act, gsize j0, gsize j1, gsize ldy, float *y)
{
  gsize j = j0;

  for (; j + 32 <= j1; j += 32)
    for (int o0 = 0; o0 < cout; o0 += GEMM_MR)
      gemm_tile(w, cout, k, o0, b, ldb, j, j, j1, bias, r, act, ldy, y, 2);
  for (; j + 16 <= j1; j += 16)
    for (int o0 = 0; o0 < cout; o0 += GEMM_MR)
      gemm_tile(w, cout, k, o0, b, ldb, j, j, j1, bias, r, act, ldy, y, 1);
  if (j < j1) {
    gsize t = j1 >= 16 ? j1 - 16 : 0; /* the row has at least 16 columns */
    for (int o0 = 0; o0 < cout; o0 += GEMM_MR)
      gemm_tile(w, cout, k, o0, b, ldb, t, j, j1, bias, r, act, ldy, y, 1);
  }
}

/* Rows shorter than 16: one output at a time, the same arithmetic. */
static void
gemm_bias_act_narrow(const float *w, int cout, int k, const float *b, gsize ldb, const float *bias,
                     const float *r, InspActivation act, gsize j0, gsize j1, gsize ldy, float *y)
{
  for (int o = 0; o < cout; o++) {
    const float *wo = w + (gsize)o * k;
    for (gsize jj = j0; jj < j1; jj++) {
      float acc = 0.0f;
      for (int c = 0; c < k; c++)
        acc += wo[c] * b[(gsize)c * ldb + jj];
      acc += bias != NULL ? bias[o] : 0.0f;
      if (r != NULL)
        acc += r[(gsize)o * ldy + jj];
      y[(gsize)o * ldy + jj] = gemm_act1(acc, act);
    }
  }
}

void
insp_ops_conv2d_part(const float *x, int cin, int h, int w, const float *weight, const float *bias,
                     int cout, int kh, int kw, int stride, int pad_top, int pad_left, int oh,
                     int ow, const float *residual, InspActivation act, gsize p0, gsize p1,
                     float *scratch, float *y)
{
  gsize ohw = (gsize)oh * ow;
  int k = cin * kh * kw;
  const float *b;

  g_return_if_fail(x != NULL && weight != NULL && y != NULL);
  g_return_if_fail(cin > 0 && cout > 0 && kh > 0 && kw > 0 && stride > 0 && oh > 0 && ow > 0);
  g_return_if_fail(p0 <= p1 && p1 <= ohw);

  if (kh == 1 && kw == 1 && stride == 1) {
    /* Direct: Y [cout, hw] = W [cout, cin] X [cin, hw]. */
    g_return_if_fail(pad_top == 0 && pad_left == 0 && oh == h && ow == w);
    b = x;
  } else {
    g_return_if_fail(scratch != NULL);
    im2col(x, cin, h, w, kh, kw, stride, pad_top, pad_left, oh, ow, p0, p1, scratch);
    b = scratch;
  }
  if (ohw >= 16)
    gemm_bias_act(weight, cout, k, b, ohw, bias, residual, act, p0, p1, ohw, y);
  else
    gemm_bias_act_narrow(weight, cout, k, b, ohw, bias, residual, act, p0, p1, ohw, y);
}

void
insp_ops_conv2d(const float *x, int cin, int h, int w, const float *weight, const float *bias,
                int cout, int kh, int kw, int stride, int pad_top, int pad_left, int oh, int ow,
                InspActivation act, float *scratch, float *y)
{
  insp_ops_conv2d_part(x, cin, h, w, weight, bias, cout, kh, kw, stride, pad_top, pad_left, oh, ow,
                       NULL, act, 0, (gsize)oh * ow, scratch, y);
}

gsize
insp_ops_winograd_weight_size(int cin, int cout)
{
  return (gsize)16 * cin * cout;
}

/* u_k = (G g G^T)[k], G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]],
 * computed in double. */
void
insp_ops_winograd_transform_weights(const float *weight, int cin, int cout, float *u)
{
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  gsize plane = (gsize)cout * cin;

  g_return_if_fail(weight != NULL && u != NULL);
  for (int o = 0; o < cout; o++)
    for (int c = 0; c < cin; c++) {
      const float *g = weight + ((gsize)o * cin + c) * 9;
      double t[4][3];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
          t[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
          u[(gsize)(i * 4 + j) * plane + (gsize)o * cin + c] =
              (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
    }
}

gsize
insp_ops_winograd_scratch_size(int cin, int cout, int oh, int ow)
{
  gsize tiles = (gsize)((oh + 1) / 2) * ((ow + 1) / 2);
  return (gsize)16 * tiles * ((gsize)cin + cout);
}

/* Tiles per row handled with the row buffers below; wider images take the
 * per-tile path. */
#define WINO_MAX_TW INSP_OPS_WINOGRAD_MAX_TILES_X

/* V [16, cin, tiles]: V_k = (B^T d B)[k] of each 4x4 input tile d at
 * (2ty - pt, 2tx - pl), B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
 * Per tile row: the four input rows are copied zero-padded, transformed
 * down the columns (B^T d) in one pass, then across (.. B) per tile, all in
 * contiguous loops. */
INSP_OPS_CLONES static void
winograd_input(const float *x, int cin, int h, int w, int pt, int pl, int th, int tw, float *v)
{
  gsize tiles = (gsize)th * tw, plane = (gsize)cin * tiles;
  int wp = 2 * tw + 2; /* padded row: column p is input column p - pl */
  float rb[4][2 * WINO_MAX_TW + 2], tb[4][2 * WINO_MAX_TW + 2];
  int lo = pl < wp ? pl : wp, hi = pl + w < wp ? pl + w : wp;

  for (int c = 0; c < cin; c++) {
    const float *xc = x + (gsize)c * h * w;
    for (int ty = 0; ty < th; ty++) {
      int y0 = 2 * ty - pt;
      for (int i = 0; i < 4; i++) {
        int yy = y0 + i;
        if (yy < 0 || yy >= h || hi <= lo) {
          memset(rb[i], 0, sizeof(float) * wp);
          continue;
        }
        memset(rb[i], 0, sizeof(float) * lo);
        memcpy(rb[i] + lo, xc + (gsize)yy * w + (lo - pl), sizeof(float) * (hi - lo));
        memset(rb[i] + hi, 0, sizeof(float) * (wp - hi));
      }
      for (int p = 0; p < wp; p++) {
        tb[0][p] = rb[0][p] - rb[2][p];
        tb[1][p] = rb[1][p] + rb[2][p];
        tb[2][p] = rb[2][p] - rb[1][p];
        tb[3][p] = rb[1][p] - rb[3][p];
      }
      gsize base = (gsize)c * tiles + (gsize)ty * tw;
      for (int i = 0; i < 4; i++) {
        const float *t = tb[i];
        float *v0 = v + (gsize)(i * 4 + 0) * plane + base,
              *v1 = v + (gsize)(i * 4 + 1) * plane + base;
        float *v2 = v + (gsize)(i * 4 + 2) * plane + base,
              *v3 = v + (gsize)(i * 4 + 3) * plane + base;
        for (int tx = 0; tx < tw; tx++) {
          float a0 = t[2 * tx], a1 = t[2 * tx + 1], a2 = t[2 * tx + 2], a3 = t[2 * tx + 3];
          v0[tx] = a0 - a2;
          v1[tx] = a1 + a2;
          v2[tx] = a2 - a1;
          v3[tx] = a1 - a3;
        }
      }
    }
  }
}

/* y = act(A^T m A + bias), A^T = [[1,1,1,0],[0,1,-1,-1]], m from M [16, cout, tiles];
 * per tile row, in contiguous loops over the tiles. */
INSP_OPS_CLONES static void
winograd_output(const float *m, int cout, int th, int tw, const float *bias, InspActivation act,
                int oh, int ow, float *y)
{
  gsize tiles = (gsize)th * tw, plane = (gsize)cout * tiles;
  float t0[4][WINO_MAX_TW], t1[4][WINO_MAX_TW], row[2][2 * WINO_MAX_TW];

  for (int o = 0; o < cout; o++) {
    float b = bias != NULL ? bias[o] : 0.0f;
    float *yo = y + (gsize)o * oh * ow;
    for (int ty = 0; ty < th; ty++) {
      gsize base = (gsize)o * tiles + (gsize)ty * tw;
      for (int j = 0; j < 4; j++) {
        const float *q0 = m + (gsize)(0 * 4 + j) * plane + base;
        const float *q1 = m + (gsize)(1 * 4 + j) * plane + base;
        const float *q2 = m + (gsize)(2 * 4 + j) * plane + base;
        const float *q3 = m + (gsize)(3 * 4 + j) * plane + base;
        for (int tx = 0; tx < tw; tx++) {
          t0[j][tx] = q0[tx] + q1[tx] + q2[tx];
          t1[j][tx] = q1[tx] - q2[tx] - q3[tx];
        }
      }
      for (int tx = 0; tx < tw; tx++) {
        row[0][2 * tx] = t0[0][tx] + t0[1][tx] + t0[2][tx] + b;
        row[0][2 * tx + 1] = t0[1][tx] - t0[2][tx] - t0[3][tx] + b;
        row[1][2 * tx] = t1[0][tx] + t1[1][tx] + t1[2][tx] + b;
        row[1][2 * tx + 1] = t1[1][tx] - t1[2][tx] - t1[3][tx] + b;
      }
      for (int i = 0; i < 2; i++) {
        int yy = 2 * ty + i;
        if (yy >= oh)
          break;
        float *yr = yo + (gsize)yy * ow;
        const float *r = row[i];
        if (act == INSP_ACT_NONE) {
          memcpy(yr, r, sizeof(float) * ow);
        } else if (act == INSP_ACT_RELU) {
          for (int xx = 0; xx < ow; xx++)
            yr[xx] = r[xx] > 0.0f ? r[xx] : 0.0f;
        } else {
          for (int xx = 0; xx < ow; xx++) {
            float val = r[xx] > 0.0f ? r[xx] : 0.0f;
            yr[xx] = val < 6.0f ? val : 6.0f;
          }
        }
      }
    }
  }
}

void
insp_ops_conv3x3_winograd(const float *x, int cin, int h, int w, const float *u, const float *bias,
                          int cout, int pad_top, int pad_left, int oh, int ow, InspActivation act,
                          float *scratch, float *y)
{
  int th = (oh + 1) / 2, tw = (ow + 1) / 2;
  gsize tiles = (gsize)th * tw;
  float *v = scratch, *m = scratch + (gsize)16 * cin * tiles;

  g_return_if_fail(x != NULL && u != NULL && scratch != NULL && y != NULL);
  g_return_if_fail(cin > 0 && cout > 0 && oh > 0 && ow > 0);
  g_return_if_fail(tw <= INSP_OPS_WINOGRAD_MAX_TILES_X);

  winograd_input(x, cin, h, w, pad_top, pad_left, th, tw, v);
  for (int k = 0; k < 16; k++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)tiles, cin, 1.0f,
                u + (gsize)k * cout * cin, cin, v + (gsize)k * cin * tiles, (int)tiles, 0.0f,
                m + (gsize)k * cout * tiles, (int)tiles);
  winograd_output(m, cout, th, tw, bias, act, oh, ow, y);
}

/* One output row of a depthwise 3x3 where all three input rows exist:
 * interior columns [lo, hi) without checks, the rest with checks. */
INSP_OPS_INLINE void
dw_row_full(const float *r0, const float *r1, const float *r2, int w, const float *k, float b,
            int stride, int pl, int ow, int lo, int hi, float *restrict yr)
{
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6],
              k7 = k[7], k8 = k[8];

  if (stride == 1) {
    const float *a = r0 - pl, *c = r1 - pl, *d = r2 - pl;
    for (int ox = lo; ox < hi; ox++)
      yr[ox] = b + k0 * a[ox] + k1 * a[ox + 1] + k2 * a[ox + 2] + k3 * c[ox] + k4 * c[ox + 1] +
               k5 * c[ox + 2] + k6 * d[ox] + k7 * d[ox + 1] + k8 * d[ox + 2];
  } else if (stride == 2) {
    const float *a = r0 - pl, *c = r1 - pl, *d = r2 - pl;
    for (int ox = lo; ox < hi; ox++) {
      int ix = 2 * ox;
      yr[ox] = b + k0 * a[ix] + k1 * a[ix + 1] + k2 * a[ix + 2] + k3 * c[ix] + k4 * c[ix + 1] +
               k5 * c[ix + 2] + k6 * d[ix] + k7 * d[ix + 1] + k8 * d[ix + 2];
    }
  } else {
    for (int ox = lo; ox < hi; ox++) {
      int ix = ox * stride - pl;
      yr[ox] = b + k0 * r0[ix] + k1 * r0[ix + 1] + k2 * r0[ix + 2] + k3 * r1[ix] + k4 * r1[ix + 1] +
               k5 * r1[ix + 2] + k6 * r2[ix] + k7 * r2[ix + 1] + k8 * r2[ix + 2];
    }
  }
  /* Border columns. */
  const float *rows[3] = {r0, r1, r2};
  for (int ox = 0; ox < ow; ox++) {
    if (ox == lo)
      ox = hi > lo ? hi : lo;
    if (ox >= ow)
      break;
    float acc = b;
    for (int ki = 0; ki < 3; ki++)
      for (int kj = 0; kj < 3; kj++) {
        int ix = ox * stride - pl + kj;
        if (ix >= 0 && ix < w)
          acc += k[ki * 3 + kj] * rows[ki][ix];
      }
    yr[ox] = acc;
  }
}

/* Output (oy, ox) of a depthwise 3x3 with every bound checked. */
INSP_OPS_INLINE float
dw_point(const float *xc, int h, int w, const float *k, float b, int stride, int pt, int pl, int oy,
         int ox)
{
  float acc = b;
  int iy = oy * stride - pt, ix0 = ox * stride - pl;

  for (int ki = 0; ki < 3; ki++) {
    int yy = iy + ki;
    if (yy < 0 || yy >= h)
      continue;
    for (int kj = 0; kj < 3; kj++) {
      int ix = ix0 + kj;
      if (ix >= 0 && ix < w)
        acc += k[ki * 3 + kj] * xc[(gsize)yy * w + ix];
    }
  }
  return acc;
}

/* One output row of a stride-1, pad-1 depthwise 3x3 from input rows above
 * (@ra), at (@rc) and below (@rd); @ra or @rd NULL stand for zero padding. */
INSP_OPS_INLINE void
dw_row_s1(const float *restrict ra, const float *restrict rc, const float *restrict rd, int w,
          const float *k, float b, float *restrict yr)
{
  const float *rows[3] = {ra, rc, rd};

  for (int ox = 0; ox < w; ox++)
    yr[ox] = b;
  for (int ki = 0; ki < 3; ki++) {
    const float *r = rows[ki];
    const float k0 = k[ki * 3], k1 = k[ki * 3 + 1], k2 = k[ki * 3 + 2];
    if (r == NULL)
      continue;
    for (int ox = 1; ox < w - 1; ox++)
      yr[ox] += k0 * r[ox - 1] + k1 * r[ox] + k2 * r[ox + 1];
    yr[0] += k1 * r[0] + (w > 1 ? k2 * r[1] : 0.0f);
    if (w > 1)
      yr[w - 1] += k0 * r[w - 2] + k1 * r[w - 1];
  }
}

/* Stride 1, pad 1 on every side, h, w >= 3: the rows 1..h-2 are one long
 * flattened loop over the plane (no bounds checks; each tap is a constant
 * offset), whose first and last columns read across the row ends and are
 * then recomputed; rows 0 and h-1 go through dw_row_s1. */
INSP_OPS_INLINE void
dw_plane_s1(const float *restrict xc, int h, int w, const float *k, float b, float *restrict yc)
{
  const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6],
              k7 = k[7], k8 = k[8];
  gsize q0 = (gsize)w + 1, q1 = (gsize)(h - 1) * w - 1;
  const float *a = xc - w - 1, *c = xc - 1, *d = xc + w - 1;

  for (gsize q = q0; q < q1; q++)
    yc[q] = b + k0 * a[q] + k1 * a[q + 1] + k2 * a[q + 2] + k3 * c[q] + k4 * c[q + 1] +
            k5 * c[q + 2] + k6 * d[q] + k7 * d[q + 1] + k8 * d[q + 2];
  for (int oy = 1; oy < h - 1; oy++) {
    const float *r0 = xc + (gsize)(oy - 1) * w, *r1 = r0 + w, *r2 = r1 + w;
    int e = w - 1;
    yc[(gsize)oy * w] =
        b + k1 * r0[0] + k2 * r0[1] + k4 * r1[0] + k5 * r1[1] + k7 * r2[0] + k8 * r2[1];
    yc[(gsize)oy * w + e] =
        b + k0 * r0[e - 1] + k1 * r0[e] + k3 * r1[e - 1] + k4 * r1[e] + k6 * r2[e - 1] + k7 * r2[e];
  }
  dw_row_s1(NULL, xc, xc + w, w, k, b, yc);
  dw_row_s1(xc + (gsize)(h - 2) * w, xc + (gsize)(h - 1) * w, NULL, w, k, b,
            yc + (gsize)(h - 1) * w);
}

/* Any stride and padding: rows with all three input rows present go through
 * dw_row_full, the others through checked points. */
INSP_OPS_INLINE void
dw_plane_generic(const float *xc, int h, int w, const float *k, float b, int stride, int pt, int pl,
                 int oh, int ow, int lo, int hi, float *yc)
{
  for (int oy = 0; oy < oh; oy++) {
    int iy = oy * stride - pt;
    float *yr = yc + (gsize)oy * ow;

    if (iy >= 0 && iy + 2 < h) {
      dw_row_full(xc + (gsize)iy * w, xc + (gsize)(iy + 1) * w, xc + (gsize)(iy + 2) * w, w, k, b,
                  stride, pl, ow, lo, hi, yr);
    } else {
      for (int ox = 0; ox < ow; ox++)
        yr[ox] = dw_point(xc, h, w, k, b, stride, pt, pl, oy, ox);
    }
  }
}

INSP_OPS_CLONES static void
depthwise_channels(const float *x, int c, int h, int w, const float *weight, const float *bias,
                   int stride, int pt, int pl, int oh, int ow, InspActivation act, int lo, int hi,
                   float *y)
{
  gboolean fast_s1 = stride == 1 && pt == 1 && pl == 1 && oh == h && ow == w && h >= 3 && w >= 3;
  gsize plane = (gsize)oh * ow;

  for (int ch = 0; ch < c; ch++) {
    const float *xc = x + (gsize)ch * h * w;
    const float *k = weight + (gsize)ch * 9;
    float b = bias != NULL ? bias[ch] : 0.0f;
    float *yc = y + (gsize)ch * plane;

    if (fast_s1)
      dw_plane_s1(xc, h, w, k, b, yc);
    else
      dw_plane_generic(xc, h, w, k, b, stride, pt, pl, oh, ow, lo, hi, yc);
    if (act == INSP_ACT_RELU) {
      for (gsize i = 0; i < plane; i++)
        yc[i] = yc[i] > 0.0f ? yc[i] : 0.0f;
    } else if (act == INSP_ACT_RELU6) {
      for (gsize i = 0; i < plane; i++) {
        float v = yc[i] > 0.0f ? yc[i] : 0.0f;
        yc[i] = v < 6.0f ? v : 6.0f;
      }
    }
  }
}

void
insp_ops_depthwise3x3(const float *x, int c, int h, int w, const float *weight, const float *bias,
                      int stride, int pad_top, int pad_left, int oh, int ow, InspActivation act,
                      float *y)
{
  int lo, hi, lo2, hi2;

  g_return_if_fail(x != NULL && weight != NULL && y != NULL && x != y);
  g_return_if_fail(c > 0 && stride > 0 && oh > 0 && ow > 0);

  /* Interior columns: every tap kj = 0..2 inside the row. */
  valid_range(w, ow, stride, pad_left, 0, &lo, &hi);
  valid_range(w, ow, stride, pad_left, 2, &lo2, &hi2);
  lo = lo > lo2 ? lo : lo2;
  hi = hi < hi2 ? hi : hi2;
  if (hi < lo)
    hi = lo;
  depthwise_channels(x, c, h, w, weight, bias, stride, pad_top, pad_left, oh, ow, act, lo, hi, y);
}

void
insp_ops_fold_batchnorm(float *weight, float *bias, const float *conv_bias, int cout, gsize per_out,
                        const float *gamma, const float *beta, const float *mean, const float *var,
                        float eps)
{
  g_return_if_fail(weight != NULL && bias != NULL && gamma != NULL && beta != NULL &&
                   mean != NULL && var != NULL);

  for (int o = 0; o < cout; o++) {
    double scale = (double)gamma[o] / sqrt((double)var[o] + (double)eps);
    double cb = conv_bias != NULL ? conv_bias[o] : 0.0;
    float *wo = weight + (gsize)o * per_out;

    for (gsize i = 0; i < per_out; i++)
      wo[i] = (float)(wo[i] * scale);
    bias[o] = (float)((cb - mean[o]) * scale + beta[o]);
  }
}

void
insp_ops_activation(float *x, gsize n, InspActivation act)
{
  g_return_if_fail(x != NULL || n == 0);
  if (act == INSP_ACT_RELU) {
    for (gsize i = 0; i < n; i++)
      x[i] = x[i] > 0.0f ? x[i] : 0.0f;
  } else if (act == INSP_ACT_RELU6) {
    for (gsize i = 0; i < n; i++) {
      float v = x[i] > 0.0f ? x[i] : 0.0f;
      x[i] = v < 6.0f ? v : 6.0f;
    }
  }
}

void
insp_ops_add(float *y, const float *x, gsize n)
{
  g_return_if_fail((y != NULL && x != NULL) || n == 0);
  for (gsize i = 0; i < n; i++)
    y[i] += x[i];
}

void
insp_ops_maxpool(const float *x, int c, int h, int w, int k, int stride, int pad, float *y)
{
  int oh = (h + 2 * pad - k) / stride + 1;
  int ow = (w + 2 * pad - k) / stride + 1;

  g_return_if_fail(x != NULL && y != NULL && k > 0 && stride > 0 && oh > 0 && ow > 0);

  for (int ch = 0; ch < c; ch++) {
    const float *xc = x + (gsize)ch * h * w;
    float *yc = y + (gsize)ch * oh * ow;

    for (int oy = 0; oy < oh; oy++) {
      int y0 = oy * stride - pad, y1 = y0 + k;
      y0 = y0 < 0 ? 0 : y0;
      y1 = y1 > h ? h : y1;
      for (int ox = 0; ox < ow; ox++) {
        int x0 = ox * stride - pad, x1 = x0 + k;
        float m = -INFINITY;
        x0 = x0 < 0 ? 0 : x0;
        x1 = x1 > w ? w : x1;
        for (int yy = y0; yy < y1; yy++)
          for (int xx = x0; xx < x1; xx++) {
            float v = xc[(gsize)yy * w + xx];
            m = v > m ? v : m;
          }
        yc[(gsize)oy * ow + ox] = m;
      }
    }
  }
}

void
insp_ops_global_avgpool(const float *x, int c, int h, int w, float *y)
{
  gsize n = (gsize)h * w;

  g_return_if_fail(x != NULL && y != NULL && n > 0);
  for (int ch = 0; ch < c; ch++) {
    const float *xc = x + (gsize)ch * n;
    double acc = 0.0;
    for (gsize i = 0; i < n; i++)
      acc += xc[i];
    y[ch] = (float)(acc / (double)n);
  }
}

void
insp_ops_set_blas_threads(int n)
{
  g_return_if_fail(n > 0);
  openblas_set_num_threads(n);
}

int
insp_ops_get_blas_threads(void)
{
  return openblas_get_num_threads();
}
