/* Unit tests of the dense kernels in model/insp-ops.c (not the map kernels of
 * insp-ops-map.c): each against the most straightforward implementation
 * (double accumulation) on random inputs with odd sizes, strides 1 and 2, and
 * both padding modes, within a named tolerance. Single-threaded. */
#include <math.h>
#include <string.h>

#include <glib.h>

#include "insp-ops.h"

/* |fast - naive| <= TOL * (sum over the taps of |w*x| + |bias|): float32
 * accumulation over K terms in any order stays far below this. */
#define CONV_REL_TOL 1e-5
/* Winograd's transforms add and subtract up to 4x4 tile values: a little
 * more rounding than a direct sum. */
#define WINOGRAD_REL_TOL 4e-5
/* The matrix unit's three bfloat16 products: each fp32 product within
 * about 3 * 2^-16 of itself (insp-ops-mx.c), summed in fp32. */
#define TOL_CONV_MX 1e-4
#define BN_FOLD_TOL 1e-5
#define POOL_TOL 1e-6

static void
fill_random(GRand *r, float *x, gsize n, double lo, double hi)
{
  for (gsize i = 0; i < n; i++)
    x[i] = (float)g_rand_double_range(r, lo, hi);
}

static double
act_ref(double v, InspActivation act)
{
  if (act == INSP_ACT_NONE)
    return v;
  v = v > 0 ? v : 0;
  return act == INSP_ACT_RELU6 && v > 6 ? 6 : v;
}

/* Grouped conv, groups = 1 or cin (depthwise), zero padding. Writes the
 * reference and the absolute-sum scale for the tolerance. */
static void
conv_naive(const float *x, int cin, int h, int w, const float *wt, const float *bias, int cout,
           int k, int stride, int pt, int pl, int oh, int ow, gboolean depthwise,
           InspActivation act, double *ref, double *scale)
{
  for (int o = 0; o < cout; o++)
    for (int oy = 0; oy < oh; oy++)
      for (int ox = 0; ox < ow; ox++) {
        double acc = bias != NULL ? bias[o] : 0.0;
        double sc = fabs(acc);
        int c0 = depthwise ? o : 0, c1 = depthwise ? o + 1 : cin;
        for (int c = c0; c < c1; c++)
          for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
              int iy = oy * stride - pt + i, ix = ox * stride - pl + j;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                continue;
              int wc = depthwise ? 0 : c;
              double p = (double)wt[(((gsize)o * (depthwise ? 1 : cin) + wc) * k + i) * k + j] *
                         x[((gsize)c * h + iy) * w + ix];
              acc += p;
              sc += fabs(p);
            }
        gsize idx = ((gsize)o * oh + oy) * ow + ox;
        ref[idx] = act_ref(acc, act);
        scale[idx] = sc;
      }
}

static void
test_geometry(void)
{
  int out, pb;

  /* models/README.md §4, 224 input. */
  insp_ops_conv_geometry(INSP_PAD_TF_SAME, 224, 3, 2, 0, &out, &pb);
  g_assert_cmpint(out, ==, 112);
  g_assert_cmpint(pb, ==, 0);
  insp_ops_conv_geometry(INSP_PAD_TF_SAME, 112, 3, 1, 0, &out, &pb);
  g_assert_cmpint(out, ==, 112);
  g_assert_cmpint(pb, ==, 1);
  insp_ops_conv_geometry(INSP_PAD_TF_SAME, 14, 1, 1, 0, &out, &pb);
  g_assert_cmpint(out, ==, 14);
  g_assert_cmpint(pb, ==, 0);
  insp_ops_conv_geometry(INSP_PAD_TF_SAME, 225, 3, 2, 0, &out, &pb);
  g_assert_cmpint(out, ==, 113);
  g_assert_cmpint(pb, ==, 1);
  insp_ops_conv_geometry(INSP_PAD_TF_SAME, 7, 7, 2, 0, &out, &pb);
  g_assert_cmpint(out, ==, 4);
  g_assert_cmpint(pb, ==, 3);
  /* PyTorch: resnet stem 7x7 s2 p3 and maxpool 3x3 s2 p1. */
  insp_ops_conv_geometry(INSP_PAD_SYMMETRIC, 224, 7, 2, 3, &out, &pb);
  g_assert_cmpint(out, ==, 112);
  g_assert_cmpint(pb, ==, 3);
  insp_ops_conv_geometry(INSP_PAD_SYMMETRIC, 65, 3, 2, 1, &out, &pb);
  g_assert_cmpint(out, ==, 33);
  g_assert_cmpint(pb, ==, 1);
  insp_ops_conv_geometry(INSP_PAD_SYMMETRIC, 9, 1, 2, 0, &out, &pb);
  g_assert_cmpint(out, ==, 5);
  g_assert_cmpint(pb, ==, 0);
}

typedef struct {
  int cin, cout, h, w, k, stride;
  InspPadMode mode;
  InspActivation act;
} ConvCase;

static void
run_conv_case(GRand *r, const ConvCase *cc)
{
  int oh, ow, pt, pl;
  int pad = cc->k / 2;

  insp_ops_conv_geometry(cc->mode, cc->h, cc->k, cc->stride, pad, &oh, &pt);
  insp_ops_conv_geometry(cc->mode, cc->w, cc->k, cc->stride, pad, &ow, &pl);
  if (cc->k == 1 && cc->stride == 1)
    pt = pl = 0;

  gsize nx = (gsize)cc->cin * cc->h * cc->w, ny = (gsize)cc->cout * oh * ow;
  gsize nw = (gsize)cc->cout * cc->cin * cc->k * cc->k;
  g_autofree float *x = g_new(float, nx);
  g_autofree float *wt = g_new(float, nw);
  g_autofree float *b = g_new(float, cc->cout);
  g_autofree float *y = g_new(float, ny);
  g_autofree double *ref = g_new(double, ny);
  g_autofree double *scale = g_new(double, ny);
  gsize ns = insp_ops_conv2d_scratch_size(cc->cin, cc->k, cc->k, oh, ow, cc->stride);
  g_autofree float *scratch = g_new(float, ns + 1);

  fill_random(r, x, nx, -2, 2);
  fill_random(r, wt, nw, -1, 1);
  fill_random(r, b, cc->cout, -1, 1);
  memset(y, 0xff, sizeof(float) * ny); /* NaN: every output must be written */
  insp_ops_conv2d(x, cc->cin, cc->h, cc->w, wt, b, cc->cout, cc->k, cc->k, cc->stride, pt, pl, oh,
                  ow, cc->act, ns ? scratch : NULL, y);
  conv_naive(x, cc->cin, cc->h, cc->w, wt, b, cc->cout, cc->k, cc->stride, pt, pl, oh, ow, FALSE,
             cc->act, ref, scale);
  for (gsize i = 0; i < ny; i++) {
    double err = fabs((double)y[i] - ref[i]);
    if (!(err <= CONV_REL_TOL * (scale[i] + 1e-3)))
      g_error("conv cin=%d cout=%d %dx%d k=%d s=%d mode=%d: y[%" G_GSIZE_FORMAT
              "]=%g ref=%g err=%g",
              cc->cin, cc->cout, cc->h, cc->w, cc->k, cc->stride, cc->mode, i, y[i], ref[i], err);
  }

  /* In three pieces cut anywhere (the team's way), with a residual added
   * before the activation: a residual of 0 gives the whole conv's values
   * exactly, a random one the reference's within the tolerance. */
  gsize ohw = (gsize)oh * ow, cut[4] = {0, 0, 0, ohw};
  g_autofree float *res = g_new(float, ny);
  g_autofree float *yp = g_new(float, ny);
  cut[1] = (gsize)g_rand_int_range(r, 0, (gint32)ohw + 1);
  cut[2] = (gsize)g_rand_int_range(r, (gint32)cut[1], (gint32)ohw + 1);
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 0)
      memset(res, 0, sizeof(float) * ny);
    else
      fill_random(r, res, ny, -2, 2);
    memset(yp, 0xff, sizeof(float) * ny);
    for (int p = 0; p < 3; p++)
      insp_ops_conv2d_part(x, cc->cin, cc->h, cc->w, wt, b, cc->cout, cc->k, cc->k, cc->stride, pt,
                           pl, oh, ow, res, cc->act, cut[p], cut[p + 1], ns ? scratch : NULL, yp);
    if (pass == 0) {
      for (gsize i = 0; i < ny; i++) /* == rather than the bits: -0 + 0 is +0 */
        g_assert_cmpfloat(yp[i], ==, y[i]);
      continue;
    }
    conv_naive(x, cc->cin, cc->h, cc->w, wt, b, cc->cout, cc->k, cc->stride, pt, pl, oh, ow, FALSE,
               INSP_ACT_NONE, ref, scale);
    for (gsize i = 0; i < ny; i++) {
      double want = act_ref(ref[i] + res[i], cc->act);
      double err = fabs((double)yp[i] - want);
      if (!(err <= CONV_REL_TOL * (scale[i] + fabs(res[i]) + 1e-3)))
        g_error("conv part cin=%d cout=%d %dx%d k=%d s=%d cuts %" G_GSIZE_FORMAT ",%" G_GSIZE_FORMAT
                ": y[%" G_GSIZE_FORMAT "]=%g want=%g err=%g",
                cc->cin, cc->cout, cc->h, cc->w, cc->k, cc->stride, cut[1], cut[2], i, yp[i], want,
                err);
    }
  }
}

static void
test_conv2d(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(1);
  const ConvCase fixed[] = {
      {3, 32, 17, 19, 3, 2, INSP_PAD_TF_SAME, INSP_ACT_RELU6},   /* mobilenet stem, odd */
      {3, 64, 21, 16, 7, 2, INSP_PAD_SYMMETRIC, INSP_ACT_RELU},  /* resnet stem */
      {16, 24, 13, 11, 1, 1, INSP_PAD_SYMMETRIC, INSP_ACT_NONE}, /* direct 1x1 */
      {32, 17, 9, 15, 1, 2, INSP_PAD_SYMMETRIC, INSP_ACT_NONE},  /* downsample gather */
      {8, 8, 1, 1, 3, 1, INSP_PAD_SYMMETRIC, INSP_ACT_RELU},     /* 1x1 image */
      {5, 3, 2, 3, 3, 2, INSP_PAD_TF_SAME, INSP_ACT_NONE},
      {1, 1, 5, 5, 5, 1, INSP_PAD_TF_SAME, INSP_ACT_RELU6},
  };
  for (guint i = 0; i < G_N_ELEMENTS(fixed); i++)
    run_conv_case(r, &fixed[i]);

  for (int t = 0; t < 60; t++) {
    static const int ks[] = {1, 3, 5, 7};
    ConvCase cc = {
        .cin = g_rand_int_range(r, 1, 20),
        .cout = g_rand_int_range(r, 1, 40),
        .h = g_rand_int_range(r, 1, 24),
        .w = g_rand_int_range(r, 1, 24),
        .k = ks[g_rand_int_range(r, 0, 4)],
        .stride = g_rand_int_range(r, 1, 3),
        .mode = g_rand_boolean(r) ? INSP_PAD_TF_SAME : INSP_PAD_SYMMETRIC,
        .act = (InspActivation)g_rand_int_range(r, 0, 3),
    };
    if (cc.mode == INSP_PAD_SYMMETRIC && cc.h + 2 * (cc.k / 2) < cc.k)
      continue;
    run_conv_case(r, &cc);
  }
}

/* The 1x1 conv on the matrix unit against the naive conv, with a bias, a
 * residual and each activation; channels and pixels not multiples of the
 * tiles (MobileNetV2's 16, 24, 144, 576 among them); then cut into pixel
 * ranges and channel ranges anywhere: the whole conv's values exactly. */
static void
test_conv1x1_mx(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(4);
  const int cases[][3] = {{16, 96, 400}, {24, 144, 37}, {144, 24, 1600}, {576, 96, 33},
                          {32, 16, 5},   {7, 3, 16},    {640, 40, 48}};

  if (!insp_ops_mx_available()) {
    g_test_skip("no AMX-BF16 on this CPU or kernel: the fp32 kernel runs instead");
    return;
  }
  for (gsize t = 0; t < G_N_ELEMENTS(cases); t++) {
    const int cin = cases[t][0], cout = cases[t][1], hw = cases[t][2];
    const InspActivation act = (InspActivation)(t % 3);
    g_autofree float *x = g_new(float, (gsize)cin *hw);
    g_autofree float *wt = g_new(float, (gsize)cout *cin);
    g_autofree float *b = g_new(float, cout);
    g_autofree float *res = g_new(float, (gsize)cout *hw);
    g_autofree float *y = g_new(float, (gsize)cout *hw);
    g_autofree float *yp = g_new(float, (gsize)cout *hw);
    g_autofree double *ref = g_new(double, (gsize)cout *hw);
    g_autofree double *scale = g_new(double, (gsize)cout *hw);
    g_autofree guint16 *wp = g_new(guint16, insp_ops_mx_weights_size(cout, cin));
    g_autofree guint16 *xp = g_new(guint16, insp_ops_mx_input_size(cin, hw));
    double worst = 0;

    fill_random(r, x, (gsize)cin * hw, -2, 2);
    fill_random(r, wt, (gsize)cout * cin, -1, 1);
    fill_random(r, b, cout, -1, 1);
    fill_random(r, res, (gsize)cout * hw, -2, 2);
    insp_ops_mx_pack_weights(wt, cout, cin, wp);
    insp_ops_mx_pack_input(x, cin, hw, xp);
    memset(y, 0xff, sizeof(float) * cout * hw); /* NaN: every output must be written */
    insp_ops_conv1x1_mx_part(x, NULL, cin, hw, wp, 0, cout, b, res, act, 0, hw, y);
    conv_naive(x, cin, 1, hw, wt, b, cout, 1, 1, 0, 0, 1, hw, FALSE, INSP_ACT_NONE, ref, scale);
    for (gsize i = 0; i < (gsize)cout * hw; i++) {
      double want = act_ref(ref[i] + res[i], act);
      double err = fabs((double)y[i] - want), tol = TOL_CONV_MX * (scale[i] + fabs(res[i]) + 1e-3);

      if (!(err <= tol))
        g_error("conv1x1 mx cin=%d cout=%d hw=%d: y[%" G_GSIZE_FORMAT "]=%g want=%g err=%g", cin,
                cout, hw, i, y[i], want, err);
      worst = MAX(worst, err / tol);
    }
    g_test_message("conv1x1 mx cin %d cout %d hw %d: worst error %.2f of the tolerance", cin, cout,
                   hw, worst);
    /* pixel ranges cut anywhere, each with channel ranges cut anywhere; the
     * second pixel range from the input packed once */
    memset(yp, 0xff, sizeof(float) * cout * hw);
    {
      int pc = g_rand_int_range(r, 0, hw + 1), cc = g_rand_int_range(r, 1, cout + 1);
      const int pcut[3] = {0, pc, hw}, ccut[3] = {0, cc, cout};

      for (int p = 0; p < 2; p++)
        for (int c = 0; c < 2; c++)
          if (pcut[p] < pcut[p + 1] && ccut[c] < ccut[c + 1])
            insp_ops_conv1x1_mx_part(p == 0 ? x : NULL, p == 0 ? NULL : xp, cin, hw, wp, ccut[c],
                                     ccut[c + 1], b + ccut[c], res + (gsize)ccut[c] * hw, act,
                                     pcut[p], pcut[p + 1], yp + (gsize)ccut[c] * hw);
    }
    for (gsize i = 0; i < (gsize)cout * hw; i++)
      g_assert_cmpfloat(yp[i], ==, y[i]);
  }
}

/* Winograd F(2x2,3x3) against the naive conv: odd sizes, both paddings. */
static void
test_winograd(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(6);

  for (int t = 0; t < 40; t++) {
    int cin = g_rand_int_range(r, 1, 24), cout = g_rand_int_range(r, 1, 40);
    int h = g_rand_int_range(r, 1, 30), w = g_rand_int_range(r, 1, 30);
    InspPadMode mode = g_rand_boolean(r) ? INSP_PAD_TF_SAME : INSP_PAD_SYMMETRIC;
    InspActivation act = (InspActivation)g_rand_int_range(r, 0, 3);
    int oh, ow, pt, pl;
    if (t == 0) {
      cin = 64, cout = 64, h = 28, w = 28;
    }
    insp_ops_conv_geometry(mode, h, 3, 1, 1, &oh, &pt);
    insp_ops_conv_geometry(mode, w, 3, 1, 1, &ow, &pl);
    gsize nx = (gsize)cin * h * w, ny = (gsize)cout * oh * ow, nw = (gsize)cout * cin * 9;
    g_autofree float *x = g_new(float, nx);
    g_autofree float *wt = g_new(float, nw);
    g_autofree float *b = g_new(float, cout);
    g_autofree float *u = g_new(float, insp_ops_winograd_weight_size(cin, cout));
    g_autofree float *scratch = g_new(float, insp_ops_winograd_scratch_size(cin, cout, oh, ow));
    g_autofree float *y = g_new(float, ny);
    g_autofree double *ref = g_new(double, ny);
    g_autofree double *scale = g_new(double, ny);
    fill_random(r, x, nx, -2, 2);
    fill_random(r, wt, nw, -1, 1);
    fill_random(r, b, cout, -1, 1);
    memset(y, 0xff, sizeof(float) * ny);
    insp_ops_winograd_transform_weights(wt, cin, cout, u);
    insp_ops_conv3x3_winograd(x, cin, h, w, u, b, cout, pt, pl, oh, ow, act, scratch, y);
    conv_naive(x, cin, h, w, wt, b, cout, 3, 1, pt, pl, oh, ow, FALSE, act, ref, scale);
    for (gsize i = 0; i < ny; i++) {
      double err = fabs((double)y[i] - ref[i]);
      if (!(err <= WINOGRAD_REL_TOL * (scale[i] + 1e-3)))
        g_error("winograd cin=%d cout=%d %dx%d mode=%d: y[%" G_GSIZE_FORMAT "]=%g ref=%g", cin,
                cout, h, w, mode, i, y[i], ref[i]);
    }
  }
}

static void
run_dw_case(GRand *r, int c, int h, int w, int stride, InspPadMode mode, InspActivation act)
{
  int oh, ow, pt, pl;

  insp_ops_conv_geometry(mode, h, 3, stride, 1, &oh, &pt);
  insp_ops_conv_geometry(mode, w, 3, stride, 1, &ow, &pl);

  gsize nx = (gsize)c * h * w, ny = (gsize)c * oh * ow;
  g_autofree float *x = g_new(float, nx);
  g_autofree float *wt = g_new(float, (gsize)c * 9);
  g_autofree float *b = g_new(float, c);
  g_autofree float *y = g_new(float, ny);
  g_autofree double *ref = g_new(double, ny);
  g_autofree double *scale = g_new(double, ny);

  fill_random(r, x, nx, -4, 4);
  fill_random(r, wt, (gsize)c * 9, -1, 1);
  fill_random(r, b, c, -1, 1);
  memset(y, 0xff, sizeof(float) * ny);
  insp_ops_depthwise3x3(x, c, h, w, wt, b, stride, pt, pl, oh, ow, act, y);
  conv_naive(x, c, h, w, wt, b, c, 3, stride, pt, pl, oh, ow, TRUE, act, ref, scale);
  for (gsize i = 0; i < ny; i++) {
    double err = fabs((double)y[i] - ref[i]);
    if (!(err <= CONV_REL_TOL * (scale[i] + 1e-3)))
      g_error("depthwise c=%d %dx%d s=%d mode=%d: y[%" G_GSIZE_FORMAT "]=%g ref=%g", c, h, w,
              stride, mode, i, y[i], ref[i]);
  }
}

static void
test_depthwise(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(2);

  for (int s = 1; s <= 2; s++)
    for (int m = 0; m < 2; m++) {
      InspPadMode mode = m ? INSP_PAD_TF_SAME : INSP_PAD_SYMMETRIC;
      run_dw_case(r, 3, 1, 1, s, mode, INSP_ACT_RELU6);
      run_dw_case(r, 2, 2, 2, s, mode, INSP_ACT_NONE);
      run_dw_case(r, 4, 3, 7, s, mode, INSP_ACT_RELU);
      run_dw_case(r, 5, 56, 56, s, mode, INSP_ACT_RELU6);
      run_dw_case(r, 3, 37, 41, s, mode, INSP_ACT_RELU6);
    }
  /* Wider than the stride-2 row buffers: the generic path. */
  run_dw_case(r, 2, 5, 2101, 2, INSP_PAD_TF_SAME, INSP_ACT_RELU6);
  run_dw_case(r, 1, 4, 2050, 2, INSP_PAD_SYMMETRIC, INSP_ACT_NONE);
  run_dw_case(r, 2, 6, 9, 3, INSP_PAD_SYMMETRIC, INSP_ACT_NONE);
  for (int t = 0; t < 60; t++)
    run_dw_case(r, g_rand_int_range(r, 1, 9), g_rand_int_range(r, 1, 40),
                g_rand_int_range(r, 1, 40), g_rand_int_range(r, 1, 3),
                g_rand_boolean(r) ? INSP_PAD_TF_SAME : INSP_PAD_SYMMETRIC,
                (InspActivation)g_rand_int_range(r, 0, 3));
}

static void
test_fold_batchnorm(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(3);
  const int cin = 6, cout = 5, k = 3, h = 9, w = 8;
  const float eps = 1e-5f;
  gsize per_out = (gsize)cin * k * k;
  float wt[5 * 6 * 9], wf[5 * 6 * 9], cb[5], gamma[5], beta[5], mean[5], var[5], bf[5];
  float x[6 * 9 * 8], y[5 * 9 * 8];
  double ref[5 * 9 * 8], scale[5 * 9 * 8];
  g_autofree float *scratch = g_new(float, insp_ops_conv2d_scratch_size(cin, k, k, h, w, 1));

  fill_random(r, wt, G_N_ELEMENTS(wt), -1, 1);
  fill_random(r, cb, cout, -1, 1);
  fill_random(r, gamma, cout, 0.5, 2);
  fill_random(r, beta, cout, -1, 1);
  fill_random(r, mean, cout, -1, 1);
  fill_random(r, var, cout, 0.1, 3);
  fill_random(r, x, G_N_ELEMENTS(x), -1, 1);
  memcpy(wf, wt, sizeof(wt));
  insp_ops_fold_batchnorm(wf, bf, cb, cout, per_out, gamma, beta, mean, var, eps);

  /* Reference: BN applied to the unfolded conv output, in double. */
  conv_naive(x, cin, h, w, wt, cb, cout, k, 1, 1, 1, h, w, FALSE, INSP_ACT_NONE, ref, scale);
  insp_ops_conv2d(x, cin, h, w, wf, bf, cout, k, k, 1, 1, 1, h, w, INSP_ACT_NONE, scratch, y);
  for (int o = 0; o < cout; o++) {
    double s = gamma[o] / sqrt((double)var[o] + eps);
    for (int i = 0; i < h * w; i++) {
      double want = (ref[o * h * w + i] - mean[o]) * s + beta[o];
      g_assert_cmpfloat_with_epsilon(y[o * h * w + i], want,
                                     BN_FOLD_TOL * (scale[o * h * w + i] * s + fabs(want) + 1));
    }
  }

  /* Identity BN as in the mobilenet file: weights unchanged, bias passes. */
  float one = sqrtf(1.0f + eps), zero = 0.0f, unit = 1.0f, w1[4] = {1, 2, 3, 4}, b1;
  float bb = 0.25f;
  insp_ops_fold_batchnorm(w1, &b1, NULL, 1, 4, &one, &bb, &zero, &unit, eps);
  g_assert_cmpfloat_with_epsilon(w1[3], 4.0f, 1e-6);
  g_assert_cmpfloat_with_epsilon(b1, 0.25f, 1e-7);
}

static void
test_activation_add(void)
{
  float x[7] = {-3, -0.5f, 0, 0.5f, 5.9f, 6, 100};
  float a[7], s[7];

  memcpy(a, x, sizeof(x));
  insp_ops_activation(a, 7, INSP_ACT_RELU);
  for (int i = 0; i < 7; i++)
    g_assert_cmpfloat(a[i], ==, x[i] > 0 ? x[i] : 0);
  memcpy(a, x, sizeof(x));
  insp_ops_activation(a, 7, INSP_ACT_RELU6);
  for (int i = 0; i < 7; i++)
    g_assert_cmpfloat(a[i], ==, x[i] < 0 ? 0 : (x[i] > 6 ? 6 : x[i]));
  memcpy(a, x, sizeof(x));
  insp_ops_activation(a, 7, INSP_ACT_NONE);
  g_assert_cmpmem(a, sizeof(a), x, sizeof(x));

  for (int i = 0; i < 7; i++)
    s[i] = (float)i;
  insp_ops_add(s, x, 7);
  for (int i = 0; i < 7; i++)
    g_assert_cmpfloat(s[i], ==, (float)i + x[i]);
}

static void
test_maxpool(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(4);
  const int cases[][5] = {/* c, h, w, k, stride; pad = k/2 and 0 */
                          {3, 17, 13, 3, 2},
                          {2, 16, 16, 3, 2},
                          {1, 5, 7, 2, 2},
                          {4, 1, 1, 3, 1},
                          {2, 9, 4, 3, 1}};

  for (guint t = 0; t < G_N_ELEMENTS(cases); t++)
    for (int pad = 0; pad <= cases[t][3] / 2; pad++) {
      int c = cases[t][0], h = cases[t][1], w = cases[t][2], k = cases[t][3], s = cases[t][4];
      int oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
      if (oh <= 0 || ow <= 0)
        continue;
      g_autofree float *x = g_new(float, (gsize)c *h *w);
      g_autofree float *y = g_new(float, (gsize)c *oh *ow);
      fill_random(r, x, (gsize)c * h * w, -5, -1); /* all negative: padding must not win */
      insp_ops_maxpool(x, c, h, w, k, s, pad, y);
      for (int ch = 0; ch < c; ch++)
        for (int oy = 0; oy < oh; oy++)
          for (int ox = 0; ox < ow; ox++) {
            double m = -HUGE_VAL;
            for (int i = 0; i < k; i++)
              for (int j = 0; j < k; j++) {
                int iy = oy * s - pad + i, ix = ox * s - pad + j;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w && x[(ch * h + iy) * w + ix] > m)
                  m = x[(ch * h + iy) * w + ix];
              }
            g_assert_cmpfloat(y[(ch * oh + oy) * ow + ox], ==, (float)m);
          }
    }
}

static void
test_global_avgpool(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(5);
  const int c = 7, h = 13, w = 5;
  float x[7 * 13 * 5], y[7];

  fill_random(r, x, G_N_ELEMENTS(x), -3, 3);
  insp_ops_global_avgpool(x, c, h, w, y);
  for (int ch = 0; ch < c; ch++) {
    double acc = 0;
    for (int i = 0; i < h * w; i++)
      acc += x[ch * h * w + i];
    g_assert_cmpfloat_with_epsilon(y[ch], acc / (h * w), POOL_TOL * 3);
  }
}

static void
test_blas_threads(void)
{
  int before = insp_ops_get_blas_threads();

  insp_ops_set_blas_threads(1);
  g_assert_cmpint(insp_ops_get_blas_threads(), ==, 1);
  insp_ops_set_blas_threads(before > 0 ? before : 1);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ops/geometry", test_geometry);
  g_test_add_func("/ops/conv2d", test_conv2d);
  g_test_add_func("/ops/winograd3x3", test_winograd);
  g_test_add_func("/ops/conv1x1-mx", test_conv1x1_mx);
  g_test_add_func("/ops/depthwise3x3", test_depthwise);
  g_test_add_func("/ops/fold-batchnorm", test_fold_batchnorm);
  g_test_add_func("/ops/activation-add", test_activation_add);
  g_test_add_func("/ops/maxpool", test_maxpool);
  g_test_add_func("/ops/global-avgpool", test_global_avgpool);
  g_test_add_func("/ops/blas-threads", test_blas_threads);
  return g_test_run();
}
