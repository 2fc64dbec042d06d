/* bench-backbone: milliseconds per image for mobilenetv2_100 up to blocks.4
 * (stride 16) at 224 and 320 px and resnet18 up to layer3 at 224 px, with 1
 * and 2 threads (OpenBLAS set to 2: the backbone then splits each layer over
 * two threads of its own): min, median and p99 of 50 runs after 5 warm-ups,
 * the process CPU time (less sensitive to other processes on a shared machine), the
 * achieved GFLOPS (2 x multiply-adds of a direct convolution: layers run by
 * Winograd do fewer, so resnet can exceed the sgemm figure) and a 1024^3
 * sgemm peak measured in the same run. Also the builtin filter bank to s16.
 *
 * Weights: mobilenetv2_100 from $INSP_SHARED_DIR/models (or argv[1]),
 * otherwise random; resnet18 random (argv[2] for a real file), written to a
 * temporary file. Prints numbers, never fails (exit 0 even without weights).
 * Prints the OpenBLAS core (OPENBLAS_CORETYPE=SkylakeX matters on this
 * CPU) and the load average before and after. Single-threaded apart from the
 * backbone's team and OpenBLAS's own threads. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "insp-backbone-private.h"
#include "insp-backbone.h"
#include "insp-ops.h"
#include "insp-safetensors.h"

#define RUNS 50
#define WARMUP 5

static guint64 rng = 0x9e3779b97f4a7c15ULL;

static float
rnd(void)
{
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

static void
add(InspSafetensorsWriter *w, const char *name, int ndim, gint64 a, gint64 b, gint64 c, gint64 d,
    double scale, double offset)
{
  gint64 shape[4] = {a, b, c, d};
  gsize n = 1;
  for (int i = 0; i < ndim; i++)
    n *= (gsize)shape[i];
  g_autofree float *x = g_new(float, n);
  for (gsize i = 0; i < n; i++)
    x[i] = (float)(offset + scale * rnd());
  insp_safetensors_writer_add_f32(w, name, ndim, shape, x);
}

static void
add_conv_bn(InspSafetensorsWriter *w, const char *conv, const char *bn, int cout, int cin, int k)
{
  g_autofree char *cw = g_strdup_printf("%s.weight", conv);
  add(w, cw, 4, cout, cin, k, k, 2.0 * sqrt(3.0 / (cin * k * k)), 0);
  const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; i++) {
    g_autofree char *n = g_strdup_printf("%s.%s", bn, parts[i]);
    add(w, n, 1, cout, 0, 0, 0, 0.2, i == 0 || i == 3 ? 1.0 : 0.0);
  }
}

static char *
write_random_resnet18(const char *dir)
{
  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  int inplanes = 64;

  add_conv_bn(w, "conv1", "bn1", 64, 3, 7);
  for (int L = 0; L < 4; L++) {
    int planes = 64 << L;
    for (int i = 0; i < 2; i++) {
      int stride = i == 0 && L > 0 ? 2 : 1;
      g_autofree char *p = g_strdup_printf("layer%d.%d", L + 1, i);
      g_autofree char *c1 = g_strconcat(p, ".conv1", NULL), *b1 = g_strconcat(p, ".bn1", NULL);
      g_autofree char *c2 = g_strconcat(p, ".conv2", NULL), *b2 = g_strconcat(p, ".bn2", NULL);
      add_conv_bn(w, c1, b1, planes, inplanes, 3);
      add_conv_bn(w, c2, b2, planes, planes, 3);
      if (stride != 1 || inplanes != planes) {
        g_autofree char *d0 = g_strconcat(p, ".downsample.0", NULL);
        g_autofree char *d1 = g_strconcat(p, ".downsample.1", NULL);
        add_conv_bn(w, d0, d1, planes, inplanes, 1);
      }
      inplanes = planes;
    }
  }
  char *path = g_build_filename(dir, "resnet18-random.safetensors", NULL);
  if (!insp_safetensors_writer_save(w, path, NULL)) {
    g_free(path);
    return NULL;
  }
  return path;
}

static char *
write_random_mobilenet(const char *dir)
{
  static const int spec[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                 {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  int cin = 32;

  add_conv_bn(w, "conv_stem", "bn1", 32, 3, 3);
  for (int s = 0; s < 7; s++)
    for (int i = 0; i < spec[s][2]; i++) {
      g_autofree char *p = g_strdup_printf("blocks.%d.%d", s, i);
      g_autofree char *pw = g_strconcat(p, ".conv_pw", NULL),
                      *dw = g_strconcat(p, ".conv_dw", NULL);
      g_autofree char *pwl = g_strconcat(p, ".conv_pwl", NULL);
      g_autofree char *b1 = g_strconcat(p, ".bn1", NULL), *b2 = g_strconcat(p, ".bn2", NULL);
      g_autofree char *b3 = g_strconcat(p, ".bn3", NULL);
      int out = spec[s][1], mid = cin * spec[s][0];
      if (spec[s][0] == 1) {
        add_conv_bn(w, dw, b1, cin, 1, 3);
        add_conv_bn(w, pw, b2, out, cin, 1);
      } else {
        add_conv_bn(w, pw, b1, mid, cin, 1);
        add_conv_bn(w, dw, b2, mid, 1, 3);
        add_conv_bn(w, pwl, b3, out, mid, 1);
      }
      cin = out;
    }
  insp_safetensors_writer_set_metadata(w, "padding", "tf_same");
  char *path = g_build_filename(dir, "mobilenet-random.safetensors", NULL);
  if (!insp_safetensors_writer_save(w, path, NULL)) {
    g_free(path);
    return NULL;
  }
  return path;
}

/* The first three fields of /proc/loadavg and a newline (a shared machine's
 * numbers need it beside them). */
static const char *
load_average(void)
{
  static char buf[64];
  g_autofree char *text = NULL;
  g_auto(GStrv) f = NULL;

  if (!g_file_get_contents("/proc/loadavg", &text, NULL, NULL))
    return "unknown\n";
  f = g_strsplit(text, " ", 4);
  if (g_strv_length(f) < 3)
    return "unknown\n";
  g_snprintf(buf, sizeof(buf), "%s %s %s\n", f[0], f[1], f[2]);
  return buf;
}

static double
cpu_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double
sgemm_peak(void)
{
  const int n = 1024;
  g_autofree float *a = g_new(float, (gsize)n *n);
  g_autofree float *b = g_new(float, (gsize)n *n);
  g_autofree float *c = g_new(float, (gsize)n *n);
  double best = 1e30;

  for (gsize i = 0; i < (gsize)n * n; i++) {
    a[i] = rnd();
    b[i] = rnd();
  }
  for (int r = 0; r < 8; r++) {
    gint64 t0 = g_get_monotonic_time();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = (g_get_monotonic_time() - t0) / 1e6;
    best = MIN(best, dt);
  }
  return 2.0 * n * n * n / best / 1e9;
}

static void
bench(const char *label, const char *path_or_builtin, const char *last, int size, int threads,
      double peak)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(path_or_builtin, &error);
  if (bb == NULL) {
    printf("%-34s skipped: %s\n", label, error->message);
    return;
  }
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, size, size, &error);
  g_autofree float *in = g_new(float, (gsize)3 * size * size);
  InspFeatureMap fm[32];
  double t[RUNS], cpu[RUNS];

  for (int i = 0; i < 3 * size * size; i++)
    in[i] = 2 * rnd();
  for (int i = 0; i < WARMUP; i++)
    insp_backbone_forward(bb, s, in, last, fm);
  for (int i = 0; i < RUNS; i++) {
    gint64 t0 = g_get_monotonic_time();
    double c0 = cpu_ms();
    insp_backbone_forward(bb, s, in, last, fm);
    cpu[i] = cpu_ms() - c0;
    t[i] = (g_get_monotonic_time() - t0) / 1e3;
  }
  qsort(t, RUNS, sizeof(double), cmp_double);
  qsort(cpu, RUNS, sizeof(double), cmp_double);
  double med = t[RUNS / 2], p99 = t[(int)ceil(0.99 * RUNS) - 1];
  double flops = insp_bb_count_flops(bb, size, size, last);
  printf(
      "%-34s %3d px %d thr: min %6.2f  median %6.2f  p99 %6.2f ms (process CPU median %6.2f ms)  "
      "%4.2f GFLOP  %5.1f GFLOPS at median, %5.1f at min (%2.0f%% of sgemm peak %.0f)\n",
      label, size, threads, t[0], med, p99, cpu[RUNS / 2], flops / 1e9, flops / (med / 1e3) / 1e9,
      flops / (t[0] / 1e3) / 1e9, 100.0 * flops / (med / 1e3) / 1e9 / peak, peak);
}

int
main(int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("bench-backbone-XXXXXX", &error);
  g_autofree char *mobilenet = NULL, *resnet = NULL;
  const char *shared = g_getenv("INSP_SHARED_DIR");
  gboolean mobilenet_random = FALSE;

  if (argc > 1)
    mobilenet = g_strdup(argv[1]);
  else if (shared != NULL) {
    mobilenet = g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL);
    if (!g_file_test(mobilenet, G_FILE_TEST_EXISTS))
      g_clear_pointer(&mobilenet, g_free);
  }
  if (mobilenet == NULL && dir != NULL) {
    mobilenet = write_random_mobilenet(dir);
    mobilenet_random = TRUE;
  }
  if (argc > 2)
    resnet = g_strdup(argv[2]);
  else if (dir != NULL)
    resnet = write_random_resnet18(dir);

  printf("bench-backbone: %d runs after %d warm-ups; mobilenetv2_100 weights: %s%s\n"
         "OpenBLAS core %s; load %s"
         "GFLOP = 2 x multiply-adds of a direct convolution (Winograd layers do fewer); with 2\n"
         "threads the backbone splits each layer over 2 threads of its own (OpenBLAS's run\n"
         "only resnet's Winograd layers)\n",
         RUNS, WARMUP, mobilenet ? mobilenet : "(none)", mobilenet_random ? " (random)" : "",
         openblas_get_corename(), load_average());
  for (int threads = 1; threads <= 2; threads++) {
    insp_ops_set_blas_threads(threads);
    double peak = sgemm_peak();
    printf("sgemm 1024^3, %d thread(s): %.1f GFLOPS (best of 8); OpenBLAS reports %d thread(s)\n",
           threads, peak, insp_ops_get_blas_threads());
    if (mobilenet != NULL) {
      bench("mobilenetv2_100 -> blocks.4 (s16)", mobilenet, "blocks.4", 224, threads, peak);
      bench("mobilenetv2_100 -> blocks.4 (s16)", mobilenet, "blocks.4", 320, threads, peak);
    }
    if (resnet != NULL)
      bench("resnet18 -> layer3 (s16)", resnet, "layer3", 224, threads, peak);
    bench("builtin -> s16", "builtin", "s16", 224, threads, peak);
  }
  printf("load %s", load_average());

  if (dir != NULL) {
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *n;
    while (d != NULL && (n = g_dir_read_name(d)) != NULL) {
      g_autofree char *p = g_build_filename(dir, n, NULL);
      g_unlink(p);
    }
    g_rmdir(dir);
  }
  return 0;
}
