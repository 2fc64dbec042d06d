/* The anomaly-map kernels of model/insp-ops-map.c (average pool, bilinear and
 * nearest resize, Gaussian kernel and blur, sgemm nearest neighbour), each
 * against the most straightforward double-precision implementation, on
 * random odd sizes and edge cases, with named tolerances. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "insp-ops.h"

/* float kernels vs double references: values are O(1). */
#define TOL_POOL 1e-5
#define TOL_RESIZE 1e-5
#define TOL_BLUR 1e-5
/* |q|^2 + |b|^2 - 2 q.b in float: error relative to |q|^2 + |b|^2. */
#define TOL_NN_REL 2e-5

static float *
random_floats(GRand *rng, gsize n, double lo, double hi)
{
  float *v = g_new(float, n);
  for (gsize i = 0; i < n; i++)
    v[i] = (float)g_rand_double_range(rng, lo, hi);
  return v;
}

static void
assert_close(const float *got, const double *want, gsize n, double tol, const char *what)
{
  double worst = 0.0;
  gsize at = 0;
  for (gsize i = 0; i < n; i++) {
    double e = fabs((double)got[i] - want[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  if (!(worst <= tol))
    g_error("%s: |error| %.3g > %.3g at %" G_GSIZE_FORMAT " (got %.9g want %.9g)", what, worst, tol,
            at, (double)got[at], want[at]);
}

/* ---- avgpool ---- */

static void
ref_avgpool(const float *x, int c, int h, int w, int k, double *y)
{
  int r = k / 2;
  for (int ch = 0; ch < c; ch++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++) {
        double s = 0;
        for (int a = 0; a < k; a++)
          for (int b = 0; b < k; b++) {
            int yy = i - r + a, xx = j - r + b;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w)
              s += x[((gsize)ch * h + yy) * w + xx];
          }
        y[((gsize)ch * h + i) * w + j] = s / (k * k);
      }
}

static void
test_avgpool(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(1);
  const int shapes[][3] = {{1, 1, 1}, {2, 1, 7}, {3, 5, 1}, {4, 28, 28}, {3, 13, 9}, {2, 2, 2}};
  const int ks[] = {1, 3, 5};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++)
    for (gsize ki = 0; ki < G_N_ELEMENTS(ks); ki++) {
      int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
      gsize n = (gsize)c * h * w;
      g_autofree float *x = random_floats(rng, n, -2, 2);
      g_autofree float *y = g_new(float, n);
      g_autofree double *want = g_new(double, n);
      ref_avgpool(x, c, h, w, ks[ki], want);
      insp_ops_avgpool_same(x, c, h, w, ks[ki], y);
      assert_close(y, want, n, TOL_POOL, "avgpool");
    }
}

/* The plain order of the sums: per output, each window row's sum left to
 * right from 0, the rows added top to bottom from 0, times 1 / k^2. */
static void
plain_avgpool(const float *x, int c, int h, int w, int k, float *y)
{
  int r = k / 2;
  float inv = 1.0f / (float)(k * k);

  for (int ch = 0; ch < c; ch++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++) {
        volatile float acc = 0.0f; /* no reassociation, no contraction */

        for (int yy = MAX(i - r, 0); yy <= MIN(i - r + k - 1, h - 1); yy++) {
          volatile float s = 0.0f;

          for (int xx = MAX(j - r, 0); xx <= MIN(j - r + k - 1, w - 1); xx++)
            s = s + x[((gsize)ch * h + yy) * w + xx];
          acc = acc + s;
        }
        y[((gsize)ch * h + i) * w + j] = acc * inv;
      }
}

/* The kernel (window sums made once per row, by chunks of columns, the
 * interior vectorised) gives the plain order's values bit for bit: rows
 * wider than a chunk, windows wider than the row, every patch size. */
static void
test_avgpool_order(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(7);
  const int shapes[][3] = {{2, 40, 40}, {1, 3, 600}, {2, 7, 1}, {1, 9, 2}, {3, 20, 257}};
  const int ks[] = {1, 3, 5, 7, 9};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++)
    for (gsize ki = 0; ki < G_N_ELEMENTS(ks); ki++) {
      int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
      gsize n = (gsize)c * h * w;
      g_autofree float *x = random_floats(rng, n, -3, 3);
      g_autofree float *y = g_new(float, n);
      g_autofree float *want = g_new(float, n);

      plain_avgpool(x, c, h, w, ks[ki], want);
      insp_ops_avgpool_same(x, c, h, w, ks[ki], y);
      for (gsize i = 0; i < n; i++)
        if (memcmp(&y[i], &want[i], sizeof(float)) != 0)
          g_error("avgpool %dx%dx%d k %d: at %" G_GSIZE_FORMAT " %.9g, plain order %.9g", c, h, w,
                  ks[ki], i, (double)y[i], (double)want[i]);
    }
}

static void
test_avgpool_border(void)
{
  /* All ones: an interior cell is 1, an edge cell 6/9, a corner 4/9. */
  float x[25], y[25];
  for (int i = 0; i < 25; i++)
    x[i] = 1.0f;
  insp_ops_avgpool_same(x, 1, 5, 5, 3, y);
  g_assert_cmpfloat_with_epsilon(y[12], 1.0, 1e-6);
  g_assert_cmpfloat_with_epsilon(y[2], 6.0 / 9.0, 1e-6);
  g_assert_cmpfloat_with_epsilon(y[0], 4.0 / 9.0, 1e-6);
}

/* ---- resize ---- */

static void
ref_bilinear(const float *x, int c, int h, int w, int oh, int ow, double *y)
{
  for (int ch = 0; ch < c; ch++)
    for (int i = 0; i < oh; i++)
      for (int j = 0; j < ow; j++) {
        double sy = ((double)h / oh) * (i + 0.5) - 0.5, sx = ((double)w / ow) * (j + 0.5) - 0.5;
        sy = sy < 0 ? 0 : sy;
        sx = sx < 0 ? 0 : sx;
        int y0 = MIN((int)sy, h - 1), x0 = MIN((int)sx, w - 1);
        int y1 = MIN(y0 + 1, h - 1), x1 = MIN(x0 + 1, w - 1);
        double ly = sy - y0, lx = sx - x0;
        const float *p = x + (gsize)ch * h * w;
        y[((gsize)ch * oh + i) * ow + j] =
            (1 - ly) * ((1 - lx) * p[y0 * w + x0] + lx * p[y0 * w + x1]) +
            ly * ((1 - lx) * p[y1 * w + x0] + lx * p[y1 * w + x1]);
      }
}

static void
test_resize_bilinear(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(2);
  const int shapes[][5] = {{1, 28, 28, 224, 224}, {3, 7, 5, 13, 11}, {2, 9, 13, 4, 3},
                           {1, 1, 1, 5, 7},       {1, 3, 1, 3, 600}, {1, 14, 14, 28, 28},
                           {2, 5, 3, 5, 3}};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2], oh = shapes[s][3], ow = shapes[s][4];
    g_autofree float *x = random_floats(rng, (gsize)c * h * w, -1, 1);
    gsize n = (gsize)c * oh * ow;
    g_autofree float *y = g_new(float, n);
    g_autofree double *want = g_new(double, n);
    ref_bilinear(x, c, h, w, oh, ow, want);
    insp_ops_resize_bilinear(x, c, h, w, oh, ow, y);
    assert_close(y, want, n, TOL_RESIZE, "bilinear");
  }
}

static void
test_resize_bilinear_values(void)
{
  /* [0 1] to 4 with half-pixel centres: 0, 0.25, 0.75, 1. */
  const float x[2] = {0, 1};
  float y[4];
  insp_ops_resize_bilinear(x, 1, 1, 2, 1, 4, y);
  g_assert_cmpfloat_with_epsilon(y[0], 0.0, 1e-7);
  g_assert_cmpfloat_with_epsilon(y[1], 0.25, 1e-7);
  g_assert_cmpfloat_with_epsilon(y[2], 0.75, 1e-7);
  g_assert_cmpfloat_with_epsilon(y[3], 1.0, 1e-7);
}

static void
test_resize_nearest(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(3);
  const int shapes[][5] = {
      {1, 14, 14, 28, 28}, {2, 7, 5, 13, 11}, {1, 9, 13, 4, 3}, {1, 1, 1, 3, 3}, {3, 5, 7, 5, 7}};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2], oh = shapes[s][3], ow = shapes[s][4];
    g_autofree float *x = random_floats(rng, (gsize)c * h * w, -1, 1);
    g_autofree float *y = g_new(float, (gsize)c *oh *ow);
    insp_ops_resize_nearest(x, c, h, w, oh, ow, y);
    for (int ch = 0; ch < c; ch++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
          int si = MIN((int)floor(i * (double)h / oh), h - 1);
          int sj = MIN((int)floor(j * (double)w / ow), w - 1);
          g_assert_cmpfloat(y[((gsize)ch * oh + i) * ow + j], ==, x[((gsize)ch * h + si) * w + sj]);
        }
  }
  /* 14 -> 28 repeats each cell twice. */
  float a[2] = {3, 4}, b[4];
  insp_ops_resize_nearest(a, 1, 1, 2, 1, 4, b);
  g_assert_cmpfloat(b[0], ==, 3);
  g_assert_cmpfloat(b[1], ==, 3);
  g_assert_cmpfloat(b[2], ==, 4);
  g_assert_cmpfloat(b[3], ==, 4);
}

/* ---- Gaussian ---- */

static void
test_gaussian_kernel(void)
{
  float taps[64];
  int n = insp_ops_gaussian_kernel(4.0f, taps);
  double sum = 0;

  g_assert_cmpint(n, ==, 33);
  for (int i = 0; i < n; i++) {
    sum += taps[i];
    g_assert_cmpfloat_with_epsilon(taps[i], taps[n - 1 - i], 1e-9);
    double want = exp(-(double)(i - 16) * (i - 16) / 32.0);
    g_assert_cmpfloat_with_epsilon(taps[i] / taps[16], want, 1e-6);
  }
  g_assert_cmpfloat_with_epsilon(sum, 1.0, 1e-6);
  g_assert_cmpint(insp_ops_gaussian_kernel(0.5f, taps), ==, 5);
  g_assert_cmpint(insp_ops_gaussian_kernel(1.0f, taps), ==, 9);
}

/* Reference: pad with an explicit torch 'reflect' table built by walking
 * back and forth across the plane, then a direct 2-D convolution. */
static int
ref_reflect(int i, int n)
{
  if (n == 1)
    return 0;
  int pos = 0, dir = 1;
  if (i >= 0) {
    for (int s = 0; s < i; s++) {
      if (pos + dir < 0 || pos + dir >= n)
        dir = -dir;
      pos += dir;
    }
  } else {
    dir = -1;
    for (int s = 0; s < -i; s++) {
      if (pos + dir < 0 || pos + dir >= n)
        dir = -dir;
      pos += dir;
    }
  }
  return pos;
}

static void
ref_blur(const float *x, int h, int w, const float *taps, int n, double *y)
{
  int r = n / 2;
  g_autofree int *ry = g_new(int, h + n), *rx = g_new(int, w + n);
  for (int i = 0; i < h + n; i++)
    ry[i] = ref_reflect(i - r, h);
  for (int j = 0; j < w + n; j++)
    rx[j] = ref_reflect(j - r, w);
  for (int i = 0; i < h; i++)
    for (int j = 0; j < w; j++) {
      double s = 0;
      for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
          s += (double)taps[a] * taps[b] * x[ry[i + a] * w + rx[j + b]];
      y[i * w + j] = s;
    }
}

static void
test_gaussian_blur(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(4);
  /* 2 x 4100: a row too wide for the padded copy (the in-place path). */
  const int shapes[][2] = {{224, 224}, {37, 51}, {5, 3}, {1, 9},   {9, 1},
                           {1, 1},     {33, 34}, {2, 2}, {2, 4100}};
  const float sigmas[] = {4.0f, 1.0f, 0.5f};
  float taps[64];

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++)
    for (gsize si = 0; si < G_N_ELEMENTS(sigmas); si++) {
      int h = shapes[s][0], w = shapes[s][1];
      gsize n = (gsize)h * w;
      int nt = insp_ops_gaussian_kernel(sigmas[si], taps);
      g_autofree float *x = random_floats(rng, n, 0, 1);
      g_autofree float *y = g_new(float, n);
      g_autofree float *scratch = g_new(float, n);
      g_autofree double *want = g_new(double, n);
      /* the reference is O(h w n^2): keep the large plane to one sigma */
      if (h * w > 10000 && si > 0)
        continue;
      ref_blur(x, h, w, taps, nt, want);
      insp_ops_gaussian_blur(x, h, w, taps, nt, scratch, y);
      assert_close(y, want, n, TOL_BLUR, "blur");
      /* in place */
      insp_ops_gaussian_blur(x, h, w, taps, nt, scratch, x);
      assert_close(x, want, n, TOL_BLUR, "blur in place");
    }
}

static void
test_reflect_no_edge_repeat(void)
{
  /* 1-D row [a b c d] with a 3-tap kernel [0 0 1] shifted: output at 0 with
   * taps (1,0,0) reads index -1, which torch 'reflect' maps to b (not a). */
  const float x[4] = {10, 20, 30, 40};
  const float taps[3] = {1, 0, 0};
  float y[4], scratch[4];
  insp_ops_gaussian_blur(x, 1, 4, taps, 3, scratch, y);
  g_assert_cmpfloat(y[0], ==, 20);
  g_assert_cmpfloat(y[1], ==, 10);
  const float taps2[3] = {0, 0, 1};
  insp_ops_gaussian_blur(x, 1, 4, taps2, 3, scratch, y);
  g_assert_cmpfloat(y[3], ==, 30);
}

/* ---- nearest neighbour ---- */

static void
check_nn(const float *q, int nq, const float *bank, int nb, int d, gboolean exact_argmin)
{
  g_autofree float *bn = g_new(float, nb);
  g_autofree float *scratch = g_new(float, insp_ops_nn_scratch_size(nq));
  g_autofree float *dist = g_new(float, nq);
  g_autofree int *arg = g_new(int, nq);
  g_autofree float *dist2 = g_new(float, nq);
  g_autofree float *dist3 = g_new(float, nq);
  g_autofree float *qsq = g_new(float, nq);
  g_autofree float *packed = g_new(float, insp_ops_nn_packed_size(nb, d));
  double bmax = 0;

  for (int j = 0; j < nb; j++) {
    double s = 0;
    for (int k = 0; k < d; k++)
      s += (double)bank[(gsize)j * d + k] * bank[(gsize)j * d + k];
    bn[j] = (float)s;
    bmax = MAX(bmax, s);
  }
  insp_ops_nn_pack(bank, nb, d, packed);
  insp_ops_nearest_neighbour(q, nq, packed, bn, nb, d, scratch, dist, arg);
  insp_ops_nearest_neighbour(q, nq, packed, bn, nb, d, scratch, dist2, NULL);
  /* given query norms stand in for |q|^2: here |q|^2 + 1, so every minimum
   * is 1 more (the coreset passes norms of another metric) */
  for (int i = 0; i < nq; i++) {
    double qn = 0;
    for (int k = 0; k < d; k++)
      qn += (double)q[(gsize)i * d + k] * q[(gsize)i * d + k];
    qsq[i] = (float)(qn + 1.0);
  }
  insp_ops_nearest_neighbour_with_norms(q, nq, qsq, packed, bn, nb, d, scratch, dist3, NULL);
  for (int i = 0; i < nq; i++) {
    double best = INFINITY, second = INFINITY, qn = 0;
    int besti = -1;
    for (int k = 0; k < d; k++)
      qn += (double)q[(gsize)i * d + k] * q[(gsize)i * d + k];
    for (int j = 0; j < nb; j++) {
      double s = 0;
      for (int k = 0; k < d; k++) {
        double e = (double)q[(gsize)i * d + k] - bank[(gsize)j * d + k];
        s += e * e;
      }
      if (s < best) {
        second = best;
        best = s;
        besti = j;
      } else if (s < second) {
        second = s;
      }
    }
    double tol = TOL_NN_REL * (qn + bmax);
    if (!(fabs(dist[i] - best) <= tol))
      g_error("nn: query %d dist %.9g want %.9g (tol %.3g)", i, (double)dist[i], best, tol);
    g_assert_cmpfloat(dist[i], >=, 0.0f);
    g_assert_cmpfloat(dist2[i], ==, dist[i]);
    if (!(fabs(dist3[i] - (best + 1.0)) <= tol + TOL_NN_REL))
      g_error("nn with norms: query %d dist %.9g want %.9g (tol %.3g)", i, (double)dist3[i],
              best + 1.0, tol + TOL_NN_REL);
    if (exact_argmin)
      g_assert_cmpint(arg[i], ==, besti);
    else if (second - best > 2 * tol)
      g_assert_cmpint(arg[i], ==, besti);
  }
}

static void
test_nn_random(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(5);
  /* nq, nb, d: bank sizes below, at, and not a multiple of any block */
  const int shapes[][3] = {{1, 1, 1},     {7, 3, 5},    {784, 1300, 128},
                           {13, 512, 17}, {29, 513, 9}, {1100, 37, 3},
                           {5, 2049, 33}, {6, 16, 4},   {12, 17, 128}};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++) {
    int nq = shapes[s][0], nb = shapes[s][1], d = shapes[s][2];
    g_autofree float *q = random_floats(rng, (gsize)nq * d, -1, 1);
    g_autofree float *bank = random_floats(rng, (gsize)nb * d, -1, 1);
    check_nn(q, nq, bank, nb, d, FALSE);
  }
}

static void
test_nn_ties(void)
{
  /* Small integers: every product and sum is exact in float, so ties are
   * exact. Bank rows repeat with period 7 across 1500 rows (three blocks):
   * the nearest is always the first copy. */
  g_autoptr(GRand) rng = g_rand_new_with_seed(6);
  const int nq = 50, nb = 1500, d = 6;
  g_autofree float *q = g_new(float, nq *d);
  g_autofree float *bank = g_new(float, nb *d);

  for (int j = 0; j < nb; j++)
    for (int k = 0; k < d; k++)
      bank[j * d + k] = (float)(((j % 7) * 3 + k * 5) % 9 - 4);
  for (int i = 0; i < nq * d; i++)
    q[i] = (float)g_rand_int_range(rng, -4, 5);
  check_nn(q, nq, bank, nb, d, TRUE);
  /* a query equal to a bank row: distance exactly 0 at its first copy */
  check_nn(bank + 3 * d, 1, bank, nb, d, TRUE);
}

static void
test_nn_cancellation_clamped(void)
{
  /* Large norms, query equal to a bank row: |q|^2+|b|^2-2qb may round below
   * zero; the result is clamped at 0. */
  const int d = 64;
  float q[64], bank[2 * 64], bn[2], scratch[2048], packed[16 * 64], dist;
  int arg;
  double s = 0;
  for (int k = 0; k < d; k++) {
    q[k] = bank[k] = 1000.0f + 0.001f * (float)k;
    bank[d + k] = -q[k];
    s += (double)q[k] * q[k];
  }
  bn[0] = bn[1] = (float)s;
  g_assert_cmpuint(insp_ops_nn_scratch_size(1), <=, G_N_ELEMENTS(scratch));
  g_assert_cmpuint(insp_ops_nn_packed_size(2, d), <=, G_N_ELEMENTS(packed));
  insp_ops_nn_pack(bank, 2, d, packed);
  insp_ops_nearest_neighbour(q, 1, packed, bn, 2, d, scratch, &dist, &arg);
  g_assert_cmpfloat(dist, >=, 0.0f);
  g_assert_cmpfloat(dist, <=, TOL_NN_REL * 2 * s);
  g_assert_cmpint(arg, ==, 0);
}

static void
test_nn_scratch_bounded(void)
{
  /* The scratch does not grow without bound with the query count. */
  g_assert_cmpuint(insp_ops_nn_scratch_size(1000000), ==, insp_ops_nn_scratch_size(100000));
  g_assert_cmpuint(insp_ops_nn_scratch_size(784), <=, 784 * 1024);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/ops-map/avgpool", test_avgpool);
  g_test_add_func("/ops-map/avgpool-border", test_avgpool_border);
  g_test_add_func("/ops-map/avgpool-order", test_avgpool_order);
  g_test_add_func("/ops-map/resize-bilinear", test_resize_bilinear);
  g_test_add_func("/ops-map/resize-bilinear-values", test_resize_bilinear_values);
  g_test_add_func("/ops-map/resize-nearest", test_resize_nearest);
  g_test_add_func("/ops-map/gaussian-kernel", test_gaussian_kernel);
  g_test_add_func("/ops-map/gaussian-blur", test_gaussian_blur);
  g_test_add_func("/ops-map/reflect-no-edge-repeat", test_reflect_no_edge_repeat);
  g_test_add_func("/ops-map/nn-random", test_nn_random);
  g_test_add_func("/ops-map/nn-ties", test_nn_ties);
  g_test_add_func("/ops-map/nn-cancellation-clamped", test_nn_cancellation_clamped);
  g_test_add_func("/ops-map/nn-scratch-bounded", test_nn_scratch_bounded);
  return g_test_run();
}
