/* Speed of the anomaly-map kernels: the fused nearest neighbour (784 queries
 * of 128 dims against banks of a 1 % and a 10 % coreset of ~200 images),
 * next to a plain sgemm of the same size; the 28 -> 224 map upsample + blur;
 * insp_inspect on a 12 MP image; AUROC over 8 M pixels. Prints the best of
 * several runs; never fails. */
#include <cblas.h>
#include <glib.h>
#include <stdio.h>

#include "insp-metrics.h"
#include "insp-model.h"
#include "insp-ops.h"

#define REPS 10

static double
now_ms(void)
{
  return (double)g_get_monotonic_time() / 1000.0;
}

static void
bench_nn(GRand *rng, int nb)
{
  const int nq = 784, d = 128;
  g_autofree float *q = g_new(float, nq *d);
  g_autofree float *b = g_new(float, (gsize)nb *d);
  g_autofree float *bn = g_new(float, nb);
  g_autofree float *scratch = g_new(float, insp_ops_nn_scratch_size(nq));
  g_autofree float *dist = g_new(float, nq);
  g_autofree int *arg = g_new(int, nq);
  g_autofree float *full = g_new(float, (gsize)nq *nb);
  g_autofree float *packed = g_new(float, insp_ops_nn_packed_size(nb, d));
  double best = G_MAXDOUBLE, best_gemm = G_MAXDOUBLE;

  for (int i = 0; i < nq * d; i++)
    q[i] = (float)g_rand_double(rng);
  for (gsize i = 0; i < (gsize)nb * d; i++)
    b[i] = (float)g_rand_double(rng);
  for (int j = 0; j < nb; j++) {
    float s = 0;
    for (int k = 0; k < d; k++)
      s += b[(gsize)j * d + k] * b[(gsize)j * d + k];
    bn[j] = s;
  }
  insp_ops_nn_pack(b, nb, d, packed);
  for (int r = 0; r < REPS; r++) {
    double t0 = now_ms();
    insp_ops_nearest_neighbour(q, nq, packed, bn, nb, d, scratch, dist, arg);
    double t1 = now_ms();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nb, d, -2.0f, q, d, b, d, 0.0f, full,
                nb);
    double t2 = now_ms();
    best = MIN(best, t1 - t0);
    best_gemm = MIN(best_gemm, t2 - t1);
  }
  printf("nearest neighbour 784x128 vs %6d rows: %7.2f ms (%5.1f GFLOPS); plain sgemm %7.2f ms\n",
         nb, best, 2.0 * nq * nb * d / best / 1e6, best_gemm);
}

static void
bench_map(GRand *rng)
{
  float patch[28 * 28], taps[64];
  g_autofree float *map = g_new(float, 224 * 224);
  g_autofree float *scratch = g_new(float, 224 * 224);
  int n = insp_ops_gaussian_kernel(4.0f, taps);
  double best = G_MAXDOUBLE;

  for (int i = 0; i < 28 * 28; i++)
    patch[i] = (float)g_rand_double(rng);
  for (int r = 0; r < REPS; r++) {
    double t0 = now_ms();
    insp_ops_resize_bilinear(patch, 1, 28, 28, 224, 224, map);
    insp_ops_gaussian_blur(map, 224, 224, taps, n, scratch, map);
    best = MIN(best, now_ms() - t0);
  }
  printf("anomaly map 28x28 -> 224x224 bilinear + blur sigma 4 (33 taps): %.3f ms\n", best);
}

static void
bench_inspect(void)
{
  const int W = 4000, H = 3000, M = 224;
  g_autofree float *map = g_new0(float, M *M);
  g_autofree float *work = g_new(float, (gsize)W *H);
  g_autofree guint8 *mask = g_new(guint8, (gsize)W * H);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  InspInspectParams p = {0.5f, 0.5f, 50, FALSE, {0, 0, 0, 0}};
  double best = G_MAXDOUBLE;

  for (int y = 30; y < 60; y++)
    for (int x = 40; x < 90; x++)
      map[y * M + x] = 0.8f;
  for (int r = 0; r < REPS; r++) {
    g_array_set_size(regions, 0);
    double t0 = now_ms();
    insp_inspect(map, M, M, 0.1f, W, H, &p, work, mask, regions);
    best = MIN(best, now_ms() - t0);
  }
  printf("insp_inspect 224x224 map -> 4000x3000 mask + regions: %.1f ms (%.2f ms/MP)\n", best,
         best / 12.0);
}

/* Every pixel over the threshold (a frame far from the training images:
 * the whole mask is one region), a noisy map (many small regions), and a
 * good part's map (everywhere under the threshold: no region). */
static void
bench_inspect_all(void)
{
  const int sizes[][2] = {{640, 480}, {4000, 3000}}, M = 224;
  g_autofree float *map = g_new(float, M *M);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  InspInspectParams p = {0.5f, 0.5f, 50, FALSE, {0, 0, 0, 0}};
  guint32 st = 1;

  for (int pattern = 0; pattern < 3; pattern++)
    for (gsize s = 0; s < G_N_ELEMENTS(sizes); s++) {
      int W = sizes[s][0], H = sizes[s][1];
      g_autofree float *work = g_new(float, (gsize)W *H);
      g_autofree guint8 *mask = g_new(guint8, (gsize)W * H);
      double best = G_MAXDOUBLE;

      for (int i = 0; i < M * M; i++) {
        st = st * 1664525u + 1013904223u;
        map[i] = pattern == 0         ? 0.9f
                 : pattern == 2       ? 0.3f + (float)((st >> 8) % 100) * 0.001f
                 : (st >> 8) % 3 == 0 ? 0.8f
                                      : 0.2f;
      }
      for (int r = 0; r < REPS; r++) {
        g_array_set_size(regions, 0);
        double t0 = now_ms();
        insp_inspect(map, M, M, 0.9f, W, H, &p, work, mask, regions);
        best = MIN(best, now_ms() - t0);
      }
      printf("insp_inspect %s map -> %dx%d: %.2f ms (%.2f ms/MP), %u regions\n",
             pattern == 0   ? "all over the threshold"
             : pattern == 1 ? "noisy"
                            : "good part's",
             W, H, best, best / (W * (double)H / 1e6), regions->len);
    }
}

static void
bench_auroc(GRand *rng)
{
  const gsize n = 8u * 1024 * 1024;
  g_autofree float *s = g_new(float, n);
  g_autofree guint8 *l = g_new(guint8, n);
  for (gsize i = 0; i < n; i++) {
    l[i] = g_rand_int_range(rng, 0, 50) == 0;
    s[i] = (float)g_rand_double(rng) + (l[i] ? 0.3f : 0.0f);
  }
  double t0 = now_ms();
  double a = insp_metrics_auroc(s, l, n);
  printf("pixel AUROC over %" G_GSIZE_FORMAT " pixels: %.1f ms (AUROC %.4f)\n", n, now_ms() - t0,
         a);
}

int
main(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(1);
  printf("OpenBLAS threads: %d\n", insp_ops_get_blas_threads());
  bench_nn(rng, 1568);
  bench_nn(rng, 15680);
  bench_map(rng);
  bench_inspect();
  bench_inspect_all();
  bench_auroc(rng);
  return 0;
}
