/* insp-ops: the dense CNN kernels of the engine on OpenBLAS (conv2d as
 * im2col + sgemm with a direct 1x1 path, depthwise 3x3, batch-norm folding,
 * activations, residual add, max and global-average pooling, conv geometry).
 * The map kernels (average pool, resizes, blur, nearest neighbour) live in
 * insp-ops-map.c.
 *
 * Invariants: tensors are single CHW float32 images; no kernel allocates,
 * logs or keeps state, so any thread may enter any kernel at any time with its
 * own buffers. Shapes are trusted (checked by the backbone at load and at
 * scratch creation); only cheap g_return_if_fail guards remain. */
#include "insp-ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

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

/* y [c, n] = act(y + bias[c]) per row. */
static void
bias_act_rows(float *y, int c, gsize n, const float *bias, InspActivation act)
{
  for (int o = 0; o < c; o++) {
    float *row = y + (gsize)o * n;
    float b = bias != NULL ? bias[o] : 0.0f;

    switch (act) {
    case INSP_ACT_NONE:
      if (b != 0.0f)
        for (gsize i = 0; i < n; i++)
          row[i] += b;
      break;
    case INSP_ACT_RELU:
      for (gsize i = 0; i < n; i++) {
        float v = row[i] + b;
        row[i] = v > 0.0f ? v : 0.0f;
      }
      break;
    case INSP_ACT_RELU6:
      for (gsize i = 0; i < n; i++) {
        float v = row[i] + b;
        v = v > 0.0f ? v : 0.0f;
        row[i] = v < 6.0f ? v : 6.0f;
      }
      break;
    }
  }
}

gsize
insp_ops_conv2d_scratch_size(int cin, int kh, int kw, int oh, int ow, int stride)
{
  if (kh == 1 && kw == 1 && stride == 1)
    return 0;
  return (gsize)cin * kh * kw * oh * ow;
}

/* col [cin*kh*kw, oh*ow]: row (c*kh + i)*kw + j holds x[c, oy*s - pt + i, ox*s - pl + j]
 * (0 outside the image), matching the OIHW weight layout flattened to [cout, cin*kh*kw]. */
static void
im2col(const float *x, int cin, int h, int w, int kh, int kw, int stride, int pt, int pl, int oh,
       int ow, float *col)
{
  gsize ohw = (gsize)oh * ow;

  for (int c = 0; c < cin; c++) {
    const float *xc = x + (gsize)c * h * w;
    for (int i = 0; i < kh; i++) {
      for (int j = 0; j < kw; j++) {
        float *row = col + ((gsize)(c * kh + i) * kw + j) * ohw;
        int lo, hi;

        valid_range(w, ow, stride, pl, j, &lo, &hi);
        for (int oy = 0; oy < oh; oy++) {
          int iy = oy * stride - pt + i;
          float *dst = row + (gsize)oy * ow;

          if (iy < 0 || iy >= h) {
            memset(dst, 0, sizeof(float) * ow);
            continue;
          }
          const float *src = xc + (gsize)iy * w - pl + j;
          for (int ox = 0; ox < lo; ox++)
            dst[ox] = 0.0f;
          if (stride == 1) {
            memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
          } else if (stride == 2) {
            for (int ox = lo; ox < hi; ox++)
              dst[ox] = src[2 * ox];
          } else {
            for (int ox = lo; ox < hi; ox++)
              dst[ox] = src[ox * stride];
          }
          for (int ox = hi; ox < ow; ox++)
            dst[ox] = 0.0f;
        }
      }
    }
  }
}

void
insp_ops_conv2d(const float *x, int cin, int h, int w, const float *weight, const float *bias,
                int cout, int kh, int kw, int stride, int pad_top, int pad_left, int oh, int ow,
                InspActivation act, float *scratch, float *y)
{
  gsize ohw = (gsize)oh * ow;
  int k = cin * kh * kw;

  g_return_if_fail(x != NULL && weight != NULL && y != NULL);
  g_return_if_fail(cin > 0 && cout > 0 && kh > 0 && kw > 0 && stride > 0 && oh > 0 && ow > 0);

  if (kh == 1 && kw == 1 && stride == 1) {
    /* Direct: Y [cout, hw] = W [cout, cin] X [cin, hw]. */
    g_return_if_fail(pad_top == 0 && pad_left == 0 && oh == h && ow == w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)ohw, cin, 1.0f, weight, cin,
                x, (int)ohw, 0.0f, y, (int)ohw);
  } else {
    g_return_if_fail(scratch != NULL);
    im2col(x, cin, h, w, kh, kw, stride, pad_top, pad_left, oh, ow, scratch);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)ohw, k, 1.0f, weight, k,
                scratch, (int)ohw, 0.0f, y, (int)ohw);
  }
  bias_act_rows(y, cout, ohw, bias, act);
}

static inline float
act_apply(float v, InspActivation act)
{
  if (act == INSP_ACT_NONE)
    return v;
  v = v > 0.0f ? v : 0.0f;
  if (act == INSP_ACT_RELU6)
    v = v < 6.0f ? v : 6.0f;
  return v;
}

/* One output row of a depthwise 3x3 where all three input rows exist:
 * interior columns [lo, hi) without checks, the rest with checks. */
static inline void
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
      yr[ox] = b + k0 * r0[ix] + k1 * r0[ix + 1] + k2 * r0[ix + 2] + k3 * r1[ix] +
               k4 * r1[ix + 1] + k5 * r1[ix + 2] + k6 * r2[ix] + k7 * r2[ix + 1] + k8 * r2[ix + 2];
    }
  }
  /* Border columns. */
  const float *rows[3] = { r0, r1, r2 };
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

  for (int ch = 0; ch < c; ch++) {
    const float *xc = x + (gsize)ch * h * w;
    const float *k = weight + (gsize)ch * 9;
    float b = bias != NULL ? bias[ch] : 0.0f;
    float *yc = y + (gsize)ch * oh * ow;

    for (int oy = 0; oy < oh; oy++) {
      int iy = oy * stride - pad_top;
      float *yr = yc + (gsize)oy * ow;

      if (iy >= 0 && iy + 2 < h) {
        dw_row_full(xc + (gsize)iy * w, xc + (gsize)(iy + 1) * w, xc + (gsize)(iy + 2) * w, w, k,
                    b, stride, pad_left, ow, lo, hi, yr);
      } else {
        for (int ox = 0; ox < ow; ox++) {
          float acc = b;
          for (int ki = 0; ki < 3; ki++) {
            int yy = iy + ki;
            if (yy < 0 || yy >= h)
              continue;
            for (int kj = 0; kj < 3; kj++) {
              int ix = ox * stride - pad_left + kj;
              if (ix >= 0 && ix < w)
                acc += k[ki * 3 + kj] * xc[(gsize)yy * w + ix];
            }
          }
          yr[ox] = acc;
        }
      }
      if (act != INSP_ACT_NONE)
        for (int ox = 0; ox < ow; ox++)
          yr[ox] = act_apply(yr[ox], act);
    }
  }
}

void
insp_ops_fold_batchnorm(float *weight, float *bias, const float *conv_bias, int cout,
                        gsize per_out, const float *gamma, const float *beta, const float *mean,
                        const float *var, float eps)
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
