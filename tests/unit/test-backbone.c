/* Unit tests of model/insp-backbone and its architectures:
 * - mobilenetv2_100 against the PyTorch float64 reference activations in
 *   INSP_SHARED_DIR/models (skipped when absent), and its preprocessing;
 * - resnet18/50 (and 34, wide_resnet50_2 with -m slow) on random weights the
 *   test writes as safetensors, against a naive double-precision forward
 *   written here from the torchvision definition;
 * - load errors (missing, misshapen, unexpected tensor) naming the tensor and
 *   its expected shape; architecture guessing; write/reload round trip;
 * - two threads with separate scratches equal one thread; a scratch for
 *   some stages equals a whole one on those, and so does a forward copy;
 *   training reads the backbone again for the model, and fails when the
 *   file changed or went;
 * - the builtin filter bank responds to a scratch; `inspectd features`.
 * Threads: the main test thread, plus two workers in /backbone/threads. */
#include <math.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "insp-backbone.h"
#include "insp-blas.h"
#include "insp-image.h"
#include "insp-model.h"
#include "insp-ops.h"
#include "insp-safetensors.h"

/* Stage outputs against the float64 reference: relative L2 error. */
#define MOBILENET_REL_L2_TOL 1e-3
/* Engine (float32, folded BN) against the naive double forward. */
#define RESNET_REL_L2_TOL 1e-4
/* Preprocessing of the reference PNG against the reference input tensor. */
#define PREPROCESS_TOL 1e-6
/* The same resnet on 1 and 3 OpenBLAS threads: float32 sums in another
 * order (relative L2 over all stages). */
#define TEAM_WINOGRAD_REL_L2_TOL 1e-5

/* ---- random weights ----------------------------------------------------- */

typedef struct {
  GHashTable *tensors; /* name -> float * (owned) */
  GHashTable *shapes;  /* name -> gint64[5] {ndim, dims...} */
  GPtrArray *order;    /* names in insertion order */
  guint64 rng;
} Weights;

static float
rnd(Weights *w, double lo, double hi)
{
  w->rng = w->rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)(lo + (hi - lo) * (double)(w->rng >> 11) / 9007199254740992.0);
}

static Weights *
weights_new(guint64 seed)
{
  Weights *w = g_new0(Weights, 1);
  w->tensors = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  w->shapes = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  w->order = g_ptr_array_new_with_free_func(g_free);
  w->rng = seed;
  return w;
}

static void
weights_free(Weights *w)
{
  g_hash_table_unref(w->tensors);
  g_hash_table_unref(w->shapes);
  g_ptr_array_unref(w->order);
  g_free(w);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Weights, weights_free)

static float *
add_tensor(Weights *w, const char *name, int ndim, const gint64 *shape, double lo, double hi)
{
  gsize n = 1;
  char *key = g_strdup(name);
  gint64 *sh = g_new0(gint64, 5);

  sh[0] = ndim;
  for (int i = 0; i < ndim; i++) {
    n *= (gsize)shape[i];
    sh[i + 1] = shape[i];
  }
  float *d = g_new(float, n);
  for (gsize i = 0; i < n; i++)
    d[i] = rnd(w, lo, hi);
  g_ptr_array_add(w->order, key);
  g_hash_table_insert(w->tensors, key, d);
  g_hash_table_insert(w->shapes, key, sh);
  return d;
}

static void
add_conv(Weights *w, const char *name, int cout, int cin, int kh, int kw)
{
  gint64 s[4] = {cout, cin, kh, kw};
  double a = sqrt(3.0 / (cin * kh * kw)) * 1.5; /* keeps activations O(1) */
  g_autofree char *n = g_strdup_printf("%s.weight", name);
  add_tensor(w, n, 4, s, -a, a);
}

static void
add_bn(Weights *w, const char *name, int c)
{
  gint64 s[1] = {c};
  g_autofree char *a = g_strdup_printf("%s.weight", name);
  g_autofree char *b = g_strdup_printf("%s.bias", name);
  g_autofree char *m = g_strdup_printf("%s.running_mean", name);
  g_autofree char *v = g_strdup_printf("%s.running_var", name);
  add_tensor(w, a, 1, s, 0.5, 1.5);
  add_tensor(w, b, 1, s, -0.2, 0.2);
  add_tensor(w, m, 1, s, -0.2, 0.2);
  add_tensor(w, v, 1, s, 0.5, 1.5);
}

static const float *get(Weights *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static const float *
get(Weights *w, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *n = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  const float *d = g_hash_table_lookup(w->tensors, n);
  g_assert_nonnull(d);
  return d;
}

typedef struct {
  const char *arch;
  gboolean bottleneck;
  int width_factor;
  int blocks[4];
} ResnetDef;

static const ResnetDef resnet18 = {"resnet18", FALSE, 1, {2, 2, 2, 2}};
static const ResnetDef resnet34 = {"resnet34", FALSE, 1, {3, 4, 6, 3}};
static const ResnetDef resnet50 = {"resnet50", TRUE, 1, {3, 4, 6, 3}};
static const ResnetDef wide50 = {"wide_resnet50_2", TRUE, 2, {3, 4, 6, 3}};

static Weights *
resnet_weights(const ResnetDef *d, guint64 seed)
{
  Weights *w = weights_new(seed);
  int inplanes = 64;

  add_conv(w, "conv1", 64, 3, 7, 7);
  add_bn(w, "bn1", 64);
  for (int L = 0; L < 4; L++) {
    int planes = 64 << L, out = d->bottleneck ? planes * 4 : planes;
    for (int i = 0; i < d->blocks[L]; i++) {
      int stride = i == 0 && L > 0 ? 2 : 1;
      g_autofree char *p = g_strdup_printf("layer%d.%d", L + 1, i);
      g_autofree char *c1 = g_strconcat(p, ".conv1", NULL), *b1 = g_strconcat(p, ".bn1", NULL);
      g_autofree char *c2 = g_strconcat(p, ".conv2", NULL), *b2 = g_strconcat(p, ".bn2", NULL);
      g_autofree char *c3 = g_strconcat(p, ".conv3", NULL), *b3 = g_strconcat(p, ".bn3", NULL);
      if (d->bottleneck) {
        int width = planes * d->width_factor;
        add_conv(w, c1, width, inplanes, 1, 1);
        add_bn(w, b1, width);
        add_conv(w, c2, width, width, 3, 3);
        add_bn(w, b2, width);
        add_conv(w, c3, out, width, 1, 1);
        add_bn(w, b3, out);
      } else {
        add_conv(w, c1, planes, inplanes, 3, 3);
        add_bn(w, b1, planes);
        add_conv(w, c2, planes, planes, 3, 3);
        add_bn(w, b2, planes);
      }
      if (stride != 1 || inplanes != out) {
        g_autofree char *d0 = g_strconcat(p, ".downsample.0", NULL);
        g_autofree char *d1 = g_strconcat(p, ".downsample.1", NULL);
        add_conv(w, d0, out, inplanes, 1, 1);
        add_bn(w, d1, out);
      }
      inplanes = out;
    }
  }
  gint64 fcs[2] = {10, inplanes}, fcb[1] = {10};
  add_tensor(w, "fc.weight", 2, fcs, -0.1, 0.1);
  add_tensor(w, "fc.bias", 1, fcb, -0.1, 0.1);
  return w;
}

static Weights *
mobilenet_weights(guint64 seed)
{
  static const int spec[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                 {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  Weights *w = weights_new(seed);
  int cin = 32;

  add_conv(w, "conv_stem", 32, 3, 3, 3);
  add_bn(w, "bn1", 32);
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
        add_conv(w, dw, cin, 1, 3, 3);
        add_bn(w, b1, cin);
        add_conv(w, pw, out, cin, 1, 1);
        add_bn(w, b2, out);
      } else {
        add_conv(w, pw, mid, cin, 1, 1);
        add_bn(w, b1, mid);
        add_conv(w, dw, mid, 1, 3, 3);
        add_bn(w, b2, mid);
        add_conv(w, pwl, out, mid, 1, 1);
        add_bn(w, b3, out);
      }
      cin = out;
    }
  return w;
}

/* Writes @w (skipping @skip, replacing @reshape's shape, adding @extra) with
 * @meta key/value pairs (NULL-terminated) to a temporary file. */
static char *
weights_save(Weights *w, const char *dir, const char *file, const char *skip, const char *reshape,
             const gint64 *new_shape, const char *extra, const char *const *meta)
{
  g_autoptr(InspSafetensorsWriter) wr = insp_safetensors_writer_new();
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename(dir, file, NULL);

  for (guint i = 0; i < w->order->len; i++) {
    const char *n = g_ptr_array_index(w->order, i);
    const gint64 *sh = g_hash_table_lookup(w->shapes, n);
    const float *d = g_hash_table_lookup(w->tensors, n);
    if (skip != NULL && g_str_equal(n, skip))
      continue;
    if (reshape != NULL && g_str_equal(n, reshape)) {
      insp_safetensors_writer_add_f32(wr, n, 4, new_shape, d); /* same element count */
      continue;
    }
    insp_safetensors_writer_add_f32(wr, n, (int)sh[0], sh + 1, d);
  }
  if (extra != NULL) {
    gint64 s[1] = {4};
    float z[4] = {0};
    insp_safetensors_writer_add_f32(wr, extra, 1, s, z);
  }
  for (int i = 0; meta != NULL && meta[i] != NULL; i += 2)
    insp_safetensors_writer_set_metadata(wr, meta[i], meta[i + 1]);
  g_assert_true(insp_safetensors_writer_save(wr, path, &error));
  g_assert_no_error(error);
  return path;
}

static char *
make_tmpdir(void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("test-backbone-XXXXXX", &error);
  g_assert_no_error(error);
  return dir;
}

static void
rm_tmpdir(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *n;
  while (d != NULL && (n = g_dir_read_name(d)) != NULL) {
    g_autofree char *p = g_build_filename(dir, n, NULL);
    g_unlink(p);
  }
  g_rmdir(dir);
}

/* ---- naive double reference --------------------------------------------- */

typedef struct {
  int c, h, w;
  double *d;
} DTensor;

static void
dt_free(DTensor *t)
{
  g_free(t->d);
  t->d = NULL;
}

static DTensor
n_conv(const DTensor *x, const float *wt, int cout, int k, int stride, int pad)
{
  DTensor y = {cout, (x->h + 2 * pad - k) / stride + 1, (x->w + 2 * pad - k) / stride + 1, NULL};
  y.d = g_new0(double, (gsize)y.c *y.h *y.w);
  for (int o = 0; o < cout; o++)
    for (int oy = 0; oy < y.h; oy++)
      for (int ox = 0; ox < y.w; ox++) {
        double acc = 0;
        for (int c = 0; c < x->c; c++)
          for (int i = 0; i < k; i++) {
            int iy = oy * stride - pad + i;
            if (iy < 0 || iy >= x->h)
              continue;
            for (int j = 0; j < k; j++) {
              int ix = ox * stride - pad + j;
              if (ix >= 0 && ix < x->w)
                acc += (double)wt[((o * x->c + c) * k + i) * k + j] *
                       x->d[((gsize)c * x->h + iy) * x->w + ix];
            }
          }
        y.d[((gsize)o * y.h + oy) * y.w + ox] = acc;
      }
  return y;
}

static void
n_bn(Weights *w, DTensor *x, const char *bn, gboolean relu)
{
  const float *g = get(w, "%s.weight", bn), *b = get(w, "%s.bias", bn);
  const float *m = get(w, "%s.running_mean", bn), *v = get(w, "%s.running_var", bn);
  for (int c = 0; c < x->c; c++)
    for (int i = 0; i < x->h * x->w; i++) {
      double *p = &x->d[(gsize)c * x->h * x->w + i];
      *p = (*p - m[c]) / sqrt((double)v[c] + 1e-5) * g[c] + b[c];
      if (relu && *p < 0)
        *p = 0;
    }
}

static DTensor
n_conv_bn(Weights *w, const DTensor *x, const char *prefix, const char *conv, const char *bn,
          int cout, int k, int stride, int pad, gboolean relu)
{
  DTensor y = n_conv(x, get(w, "%s%s.weight", prefix, conv), cout, k, stride, pad);
  g_autofree char *bnn = g_strconcat(prefix, bn, NULL);
  n_bn(w, &y, bnn, relu);
  return y;
}

static DTensor
n_maxpool(const DTensor *x)
{
  DTensor y = {x->c, (x->h + 2 - 3) / 2 + 1, (x->w + 2 - 3) / 2 + 1, NULL};
  y.d = g_new(double, (gsize)y.c *y.h *y.w);
  for (int c = 0; c < y.c; c++)
    for (int oy = 0; oy < y.h; oy++)
      for (int ox = 0; ox < y.w; ox++) {
        double m = -HUGE_VAL;
        for (int i = 0; i < 3; i++)
          for (int j = 0; j < 3; j++) {
            int iy = oy * 2 - 1 + i, ix = ox * 2 - 1 + j;
            if (iy >= 0 && iy < x->h && ix >= 0 && ix < x->w)
              m = MAX(m, x->d[((gsize)c * x->h + iy) * x->w + ix]);
          }
        y.d[((gsize)c * y.h + oy) * y.w + ox] = m;
      }
  return y;
}

/* Stage outputs layer1..layer4 of the torchvision forward. */
static void
resnet_reference(Weights *w, const ResnetDef *d, const float *input, int size, DTensor out[4])
{
  DTensor x = {3, size, size, g_new(double, 3 * (gsize)size * size)};
  for (gsize i = 0; i < 3 * (gsize)size * size; i++)
    x.d[i] = input[i];
  DTensor t = n_conv_bn(w, &x, "", "conv1", "bn1", 64, 7, 2, 3, TRUE);
  dt_free(&x);
  x = n_maxpool(&t);
  dt_free(&t);
  int inplanes = 64;
  for (int L = 0; L < 4; L++) {
    int planes = 64 << L, outc = d->bottleneck ? planes * 4 : planes;
    for (int i = 0; i < d->blocks[L]; i++) {
      int stride = i == 0 && L > 0 ? 2 : 1;
      g_autofree char *p = g_strdup_printf("layer%d.%d.", L + 1, i);
      DTensor idt, y;
      gboolean own_id = FALSE;
      if (stride != 1 || inplanes != outc) {
        idt = n_conv_bn(w, &x, p, "downsample.0", "downsample.1", outc, 1, stride, 0, FALSE);
        own_id = TRUE;
      } else {
        idt = x;
      }
      if (d->bottleneck) {
        int width = planes * d->width_factor;
        DTensor a = n_conv_bn(w, &x, p, "conv1", "bn1", width, 1, 1, 0, TRUE);
        DTensor b = n_conv_bn(w, &a, p, "conv2", "bn2", width, 3, stride, 1, TRUE);
        y = n_conv_bn(w, &b, p, "conv3", "bn3", outc, 1, 1, 0, FALSE);
        dt_free(&a);
        dt_free(&b);
      } else {
        DTensor a = n_conv_bn(w, &x, p, "conv1", "bn1", planes, 3, stride, 1, TRUE);
        y = n_conv_bn(w, &a, p, "conv2", "bn2", planes, 3, 1, 1, FALSE);
        dt_free(&a);
      }
      for (gsize k = 0; k < (gsize)y.c * y.h * y.w; k++)
        y.d[k] = MAX(y.d[k] + idt.d[k], 0.0);
      if (own_id)
        dt_free(&idt);
      dt_free(&x);
      x = y;
      inplanes = outc;
    }
    out[L] = x;
    x.d = g_memdup2(x.d, sizeof(double) * x.c * x.h * x.w);
  }
  dt_free(&x);
}

static double
rel_l2(const float *a, const double *ref, gsize n, double *max_abs)
{
  double num = 0, den = 0, mx = 0;
  for (gsize i = 0; i < n; i++) {
    double e = (double)a[i] - ref[i];
    num += e * e;
    den += ref[i] * ref[i];
    mx = MAX(mx, fabs(e));
  }
  if (max_abs != NULL)
    *max_abs = mx;
  return sqrt(num / MAX(den, 1e-30));
}

static float *
random_input(guint32 seed, int c, int h, int w)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(seed);
  float *x = g_new(float, (gsize)c *h *w);
  for (gsize i = 0; i < (gsize)c * h * w; i++)
    x[i] = (float)g_rand_double_range(r, -2, 2);
  return x;
}

/* ---- tests --------------------------------------------------------------- */

static void
check_resnet(const ResnetDef *d, int size)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w = resnet_weights(d, 42);
  g_autofree char *path = weights_save(w, dir, "r.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(path, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(insp_backbone_get_arch(bb), ==, d->arch); /* guessed from names */

  const char *fine, *coarse;
  insp_backbone_get_default_stages(bb, &fine, &coarse);
  g_assert_cmpstr(fine, ==, "layer2");
  g_assert_cmpstr(coarse, ==, "layer3");
  float mean[3], std[3];
  insp_backbone_get_normalisation(bb, mean, std);
  g_assert_cmpfloat_with_epsilon(mean[0], 0.485, 1e-6);
  g_assert_cmpfloat_with_epsilon(std[2], 0.225, 1e-6);

  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, size, size, &error);
  g_assert_no_error(error);
  g_autofree float *in = random_input(7, 3, size, size);
  InspFeatureMap fm[8];
  int n = insp_backbone_forward(bb, s, in, NULL, fm);
  g_assert_cmpint(n, ==, 5);
  DTensor ref[4];
  resnet_reference(w, d, in, size, ref);
  for (int L = 0; L < 4; L++) {
    const InspFeatureMap *f = &fm[L + 1];
    double mx;
    g_autofree char *name = g_strdup_printf("layer%d", L + 1);
    g_assert_cmpstr(f->name, ==, name);
    g_assert_cmpint(f->channels, ==, ref[L].c);
    g_assert_cmpint(f->height, ==, ref[L].h);
    g_assert_cmpint(f->width, ==, ref[L].w);
    g_assert_cmpint(f->stride, ==, 4 << (L > 0 ? L : 0));
    double e = rel_l2(f->data, ref[L].d, (gsize)f->channels * f->height * f->width, &mx);
    g_test_message("%s %s [%d,%d,%d]: rel L2 %.3g, max abs %.3g", d->arch, f->name, f->channels,
                   f->height, f->width, e, mx);
    g_assert_cmpfloat(e, <, RESNET_REL_L2_TOL);
    dt_free(&ref[L]);
  }
  /* Up to layer3 only: same values, three stages after the stem. */
  n = insp_backbone_forward(bb, s, in, "layer2", fm);
  g_assert_cmpint(n, ==, 3);
  g_assert_cmpstr(fm[2].name, ==, "layer2");
  rm_tmpdir(dir);
}

static void
test_resnet18(void)
{
  check_resnet(&resnet18, 96); /* layer2 at 12x12: 36 tiles, the Winograd path */
}

static void
test_resnet50(void)
{
  check_resnet(&resnet50, 32);
}

static void
test_resnet34(void)
{
  if (!g_test_slow()) {
    g_test_skip("resnet34 writes 87 MB of weights; run with -m slow");
    return;
  }
  check_resnet(&resnet34, 32);
}

static void
test_wide_resnet50(void)
{
  if (!g_test_slow()) {
    g_test_skip("wide_resnet50_2 writes 275 MB of weights; run with -m slow");
    return;
  }
  check_resnet(&wide50, 32);
}

static void
expect_load_error(const char *path, const char *const *must_contain)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(path, &error);
  g_assert_null(bb);
  g_assert_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS);
  g_test_message("%s", error->message);
  for (int i = 0; must_contain[i] != NULL; i++)
    if (strstr(error->message, must_contain[i]) == NULL)
      g_error("error '%s' does not mention '%s'", error->message, must_contain[i]);
}

static void
test_load_errors(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w = mobilenet_weights(3);
  gint64 bad[4] = {384, 1, 9, 1};

  g_autofree char *p1 = weights_save(w, dir, "missing.safetensors", "blocks.3.1.bn2.running_var",
                                     NULL, NULL, NULL, NULL);
  expect_load_error(p1, (const char *const[]){"blocks.3.1.bn2.running_var", "[384]", NULL});

  g_autofree char *p2 =
      weights_save(w, dir, "shape.safetensors", NULL, "blocks.3.1.conv_dw.weight", bad, NULL, NULL);
  expect_load_error(p2, (const char *const[]){"blocks.3.1.conv_dw.weight", "[384,1,3,3]", NULL});

  g_autofree char *p3 =
      weights_save(w, dir, "extra.safetensors", NULL, NULL, NULL, "blocks.2.0.extra_scale", NULL);
  expect_load_error(p3, (const char *const[]){"blocks.2.0.extra_scale", "[4]", NULL});

  /* A resnet without a downsample BN. */
  g_autoptr(Weights) r = resnet_weights(&resnet18, 5);
  g_autofree char *p4 =
      weights_save(r, dir, "r.safetensors", "layer3.0.downsample.1.weight", NULL, NULL, NULL, NULL);
  expect_load_error(p4, (const char *const[]){"layer3.0.downsample.1.weight", "[256]", NULL});

  /* Unknown architecture in the metadata. */
  g_autofree char *p5 =
      weights_save(w, dir, "arch.safetensors", NULL, NULL, NULL, NULL,
                   (const char *const[]){"architecture", "efficientnet_b9", NULL});
  g_autoptr(GError) error = NULL;
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(p5, &error);
  g_assert_null(bb);
  g_assert_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_UNKNOWN_ARCH);
  g_assert_nonnull(strstr(error->message, "efficientnet_b9"));
  g_clear_error(&error);

  /* Bad metadata value. */
  g_autofree char *p6 = weights_save(w, dir, "meta.safetensors", NULL, NULL, NULL, NULL,
                                     (const char *const[]){"padding", "reflect", NULL});
  bb = insp_backbone_new_from_file(p6, &error);
  g_assert_null(bb);
  g_assert_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS);
  g_assert_nonnull(strstr(error->message, "padding"));
  g_clear_error(&error);

  /* Input too small. */
  bb = insp_backbone_new_builtin();
  InspBackboneScratch *s = insp_backbone_scratch_new(bb, 8, 300, &error);
  g_assert_null(s);
  g_assert_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_INPUT);
  rm_tmpdir(dir);
}

/* Write under a prefix, reload, same outputs and metadata. */
static void
test_write_roundtrip(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w = mobilenet_weights(11);
  g_autofree char *path =
      weights_save(w, dir, "m.safetensors", NULL, NULL, NULL, NULL,
                   (const char *const[]){"padding", "tf_same", "mean", "[0.5, 0.5, 0.5]", "std",
                                         "[0.5,0.5,0.5]", "input_size", "192", NULL});
  g_autoptr(GError) error = NULL;
  g_autoptr(InspBackbone) a = insp_backbone_new_from_file(path, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(insp_backbone_get_arch(a), ==, "mobilenetv2_100");
  g_assert_cmpint(insp_backbone_get_input_size(a), ==, 192);

  g_autoptr(InspSafetensorsWriter) wr = insp_safetensors_writer_new();
  insp_backbone_write(a, wr, "backbone.");
  g_autoptr(InspBackbone) builtin = insp_backbone_new_builtin();
  insp_backbone_write(builtin, wr, "aux.");
  gint64 other_shape[1] = {3};
  float other[3] = {1, 2, 3};
  insp_safetensors_writer_add_f32(wr, "detector.bank", 1, other_shape, other);
  g_autofree char *out = g_build_filename(dir, "model.safetensors", NULL);
  g_assert_true(insp_safetensors_writer_save(wr, out, &error));

  g_autoptr(InspSafetensors) st = insp_safetensors_open(out, &error);
  g_assert_no_error(error);
  g_autoptr(InspBackbone) b = insp_backbone_new_from_safetensors(st, "backbone.", NULL, &error);
  g_assert_no_error(error);
  g_autoptr(InspBackbone) b2 = insp_backbone_new_from_safetensors(st, "aux.", NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(insp_backbone_get_arch(b2), ==, "builtin");

  /* A builtin of other filters (or of unknown version) is refused. */
  g_autofree char *old_builtin = weights_save(
      w, dir, "old.safetensors", NULL, NULL, NULL, NULL,
      (const char *const[]){"aux.architecture", "builtin", "aux.builtin_version", "1", NULL});
  g_autoptr(InspSafetensors) st_old = insp_safetensors_open(old_builtin, &error);
  g_assert_no_error(error);
  g_autoptr(InspBackbone) b3 = insp_backbone_new_from_safetensors(st_old, "aux.", NULL, &error);
  g_assert_null(b3);
  g_assert_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS);
  g_assert_nonnull(strstr(error->message, "builtin backbone version '1'"));
  g_clear_error(&error);
  g_assert_cmpint(insp_backbone_get_input_size(b), ==, 192);
  float mean[3], std[3];
  insp_backbone_get_normalisation(b, mean, std);
  g_assert_cmpfloat(mean[1], ==, 0.5f);
  g_assert_cmpfloat(std[2], ==, 0.5f);

  const int h = 67, wd = 45; /* odd: TF SAME asymmetric padding must survive */
  g_autofree float *in = random_input(9, 3, h, wd);
  g_autoptr(InspBackboneScratch) sa = insp_backbone_scratch_new(a, h, wd, &error);
  g_autoptr(InspBackboneScratch) sb = insp_backbone_scratch_new(b, h, wd, &error);
  InspFeatureMap fa[16], fb[16];
  int na = insp_backbone_forward(a, sa, in, NULL, fa);
  int nb = insp_backbone_forward(b, sb, in, NULL, fb);
  g_assert_cmpint(na, ==, 8); /* stem + 7 groups, no head */
  g_assert_cmpint(na, ==, nb);
  for (int i = 0; i < na; i++) {
    g_assert_cmpstr(fa[i].name, ==, fb[i].name);
    g_assert_cmpmem(fa[i].data, sizeof(float) * fa[i].channels * fa[i].height * fa[i].width,
                    fb[i].data, sizeof(float) * fb[i].channels * fb[i].height * fb[i].width);
  }
  /* blocks.2 at 67x45 with TF SAME: ceil(67/8) x ceil(45/8). */
  g_assert_cmpint(fa[3].height, ==, 9);
  g_assert_cmpint(fa[3].width, ==, 6);
  rm_tmpdir(dir);
}

static char *
shared_file(const char *rel)
{
  const char *shared = g_getenv("INSP_SHARED_DIR");
  if (shared == NULL)
    return NULL;
  char *p = g_build_filename(shared, "models", rel, NULL);
  if (!g_file_test(p, G_FILE_TEST_EXISTS)) {
    g_free(p);
    return NULL;
  }
  return p;
}

static void
test_mobilenet_reference(void)
{
  g_autofree char *wpath = shared_file("mobilenetv2_100.safetensors");
  g_autofree char *rpath = shared_file("reference/mobilenetv2_100_features.safetensors");
  g_autofree char *png = shared_file("reference/input_224.png");
  g_autoptr(GError) error = NULL;

  if (wpath == NULL || rpath == NULL || png == NULL) {
    g_test_skip("INSP_SHARED_DIR/models with the mobilenetv2_100 reference is absent");
    return;
  }
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(wpath, &error);
  g_assert_no_error(error);
  g_autoptr(InspSafetensors) ref = insp_safetensors_open(rpath, &error);
  g_assert_no_error(error);
  gint64 in_shape[4] = {1, 3, 224, 224};
  const float *input = insp_safetensors_get_f32(ref, "input", 4, in_shape, &error);
  g_assert_no_error(error);

  /* Preprocessing of the PNG gives the reference input. */
  float mean[3], std[3];
  insp_backbone_get_normalisation(bb, mean, std);
  g_assert_cmpfloat(mean[0], ==, 0.5f);
  g_assert_cmpfloat(std[0], ==, 0.5f);
  g_autoptr(InspImage) img = insp_image_load(png, 3, &error);
  g_assert_no_error(error);
  g_autofree float *pre = g_new(float, 3 * 224 * 224);
  insp_image_preprocess(img->data, img->width, img->height, img->stride, 224, 224, 1.0f, mean, std,
                        pre);
  double pmax = 0;
  for (gsize i = 0; i < 3 * 224 * 224; i++)
    pmax = MAX(pmax, fabs((double)pre[i] - input[i]));
  g_test_message("preprocess max abs err %.3g", pmax);
  g_assert_cmpfloat(pmax, <=, PREPROCESS_TOL);

  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, 224, 224, &error);
  g_assert_no_error(error);
  InspFeatureMap fm[16];
  int n = insp_backbone_forward(bb, s, input, NULL, fm);
  g_assert_cmpint(n, ==, 9); /* stem, blocks.0..6, head */
  for (int i = 0; i < n; i++) {
    gint64 shape[4] = {1, fm[i].channels, fm[i].height, fm[i].width};
    const float *r = insp_safetensors_get_f32(ref, fm[i].name, 4, shape, &error);
    g_assert_no_error(error);
    gsize cnt = (gsize)fm[i].channels * fm[i].height * fm[i].width;
    g_autofree double *rd = g_new(double, cnt);
    for (gsize k = 0; k < cnt; k++)
      rd[k] = r[k];
    double mx, e = rel_l2(fm[i].data, rd, cnt, &mx);
    g_test_message("mobilenetv2_100 %s [%d,%d,%d] stride %d: rel L2 %.3g, max abs %.3g", fm[i].name,
                   fm[i].channels, fm[i].height, fm[i].width, fm[i].stride, e, mx);
    g_assert_cmpfloat(e, <, MOBILENET_REL_L2_TOL);
  }
  g_assert_cmpstr(fm[3].name, ==, "blocks.2");
  g_assert_cmpfloat_with_epsilon(fm[3].data[0], -12.451983, 1e-3);
  g_assert_cmpstr(fm[5].name, ==, "blocks.4");
  g_assert_cmpfloat_with_epsilon(fm[5].data[0], 5.580525, 1e-3);
  const char *fine, *coarse;
  insp_backbone_get_default_stages(bb, &fine, &coarse);
  g_assert_cmpstr(fine, ==, "blocks.2");
  g_assert_cmpstr(coarse, ==, "blocks.4");
  for (int i = 0; i < n; i++) {
    int ch = 0, st = 0;
    g_assert_true(insp_backbone_get_stage_info(bb, fm[i].name, &ch, &st));
    g_assert_cmpint(ch, ==, fm[i].channels);
    g_assert_cmpint(st, ==, fm[i].stride);
  }
  g_assert_false(insp_backbone_get_stage_info(bb, "layer3", NULL, NULL));
}

typedef struct {
  const InspBackbone *bb;
  const float *inputs;
  int n_inputs, size;
  float *outputs; /* n_inputs x out_floats */
  gsize out_floats;
  const char *last;
} ThreadJob;

static gpointer
thread_run(gpointer p)
{
  ThreadJob *j = p;
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(j->bb, j->size, j->size, NULL);
  InspFeatureMap fm[16];
  for (int rep = 0; rep < 3; rep++)
    for (int i = 0; i < j->n_inputs; i++) {
      int n = insp_backbone_forward(j->bb, s, j->inputs + (gsize)i * 3 * j->size * j->size, j->last,
                                    fm);
      memcpy(j->outputs + (gsize)i * j->out_floats, fm[n - 1].data, j->out_floats * sizeof(float));
    }
  return NULL;
}

static void
test_threads(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w = mobilenet_weights(21);
  g_autofree char *path = weights_save(w, dir, "m.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(path, NULL);
  const int size = 96, n = 4;
  g_assert_nonnull(bb);
  g_autofree float *inputs = g_new(float, (gsize)n * 3 * size * size);
  for (int i = 0; i < n; i++) {
    g_autofree float *x = random_input(100 + i, 3, size, size);
    memcpy(inputs + (gsize)i * 3 * size * size, x, sizeof(float) * 3 * size * size);
  }
  gsize out_floats = 96 * 6 * 6; /* blocks.4 at 96 px */
  g_autofree float *single = g_new(float, n *out_floats);
  g_autofree float *t1 = g_new(float, n *out_floats);
  g_autofree float *t2 = g_new(float, n *out_floats);
  ThreadJob js = {bb, inputs, n, size, single, out_floats, "blocks.4"};
  thread_run(&js);

  ThreadJob j1 = js, j2 = js;
  j1.outputs = t1;
  j2.outputs = t2;
  GThread *a = g_thread_new("bb-worker-1", thread_run, &j1);
  GThread *b = g_thread_new("bb-worker-2", thread_run, &j2);
  g_thread_join(a);
  g_thread_join(b);
  g_assert_cmpmem(single, n * out_floats * sizeof(float), t1, n * out_floats * sizeof(float));
  g_assert_cmpmem(single, n * out_floats * sizeof(float), t2, n * out_floats * sizeof(float));
  rm_tmpdir(dir);
}

/* Every stage of @bb on @h x @w inputs (two frames, the second run twice)
 * with OpenBLAS set to @threads: the forward splits each layer over that
 * many threads of the scratch's team. Returns the stage outputs of the
 * three forwards one after the other. */
static GByteArray *
forward_all(const InspBackbone *bb, int h, int w, int threads)
{
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, h, w, NULL);
  g_autofree float *a = random_input(7, 3, h, w), *b = random_input(8, 3, h, w);
  const float *inputs[3] = {a, b, b};
  GByteArray *out = g_byte_array_new();
  InspFeatureMap fm[16];

  g_assert_nonnull(s);
  insp_ops_set_blas_threads(threads);
  for (int f = 0; f < 3; f++) {
    int n = insp_backbone_forward(bb, s, inputs[f], NULL, fm);
    g_assert_cmpint(n, >, 0);
    for (int i = 0; i < n; i++)
      g_byte_array_append(
          out, (const guint8 *)fm[i].data,
          (guint)((gsize)fm[i].channels * fm[i].height * fm[i].width * sizeof(float)));
  }
  insp_ops_set_blas_threads(1);
  return out;
}

/* One image over 2 and 3 threads (the scratch's team, README "Backbones")
 * gives every stage bit for bit as on one thread: the layers are cut so
 * that each output is computed the same way whoever computes it. Odd sizes
 * put the cuts and the kernel's tail tiles in the middle of rows. */
static void
test_team(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) mw = mobilenet_weights(23);
  g_autoptr(Weights) rw = resnet_weights(&resnet18, 24);
  g_autofree char *mpath = weights_save(mw, dir, "m.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autofree char *rpath = weights_save(rw, dir, "r.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autoptr(InspBackbone) mb = insp_backbone_new_from_file(mpath, NULL);
  g_autoptr(InspBackbone) rb = insp_backbone_new_from_file(rpath, NULL);
  g_autoptr(InspBackbone) bb = insp_backbone_new_builtin();
  const struct {
    const InspBackbone *bb;
    int h, w;
    gboolean winograd;
  } cases[] = {{mb, 224, 224, FALSE},
               {mb, 97, 131, FALSE},
               {mb, 32, 40, FALSE},
               {bb, 83, 90, FALSE},
               {rb, 75, 64, TRUE}};

  g_assert_nonnull(mb);
  g_assert_nonnull(rb);
  insp_ops_set_blas_threads(2);
  if (insp_ops_get_blas_threads() < 2) {
    insp_ops_set_blas_threads(1);
    g_test_skip("OpenBLAS runs one thread here");
    rm_tmpdir(dir);
    return;
  }
  for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
    g_autoptr(GByteArray) one = forward_all(cases[c].bb, cases[c].h, cases[c].w, 1);
    for (int t = 2; t <= 3; t++) {
      g_autoptr(GByteArray) many = forward_all(cases[c].bb, cases[c].h, cases[c].w, t);
      g_test_message("%s %dx%d, %d threads: %u bytes", insp_backbone_get_arch(cases[c].bb),
                     cases[c].w, cases[c].h, t, many->len);
      if (!cases[c].winograd) {
        g_assert_cmpmem(one->data, one->len, many->data, many->len);
        continue;
      }
      /* Winograd layers run whole on OpenBLAS's threads, whose sums
       * depend on how many it has (3 differ from 1 in the last bits). */
      g_assert_cmpuint(one->len, ==, many->len);
      const float *x = (const float *)(const void *)one->data,
                  *y = (const float *)(const void *)many->data;
      double d2 = 0, r2 = 0;
      for (guint k = 0; k < one->len / sizeof(float); k++) {
        d2 += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
        r2 += (double)x[k] * x[k];
      }
      g_assert_cmpfloat(sqrt(d2 / r2), <, TEAM_WINOGRAD_REL_L2_TOL);
    }
  }
  rm_tmpdir(dir);
}

/* A bright-grey part on a dark background, with optional scratch. */
static InspImage *
synthetic_part(int size, gboolean scratch)
{
  InspImage *img = insp_image_new(size, size, 3);
  g_autoptr(GRand) r = g_rand_new_with_seed(77);
  for (int y = 0; y < size; y++)
    for (int x = 0; x < size; x++) {
      double dx = x - size / 2.0, dy = y - size / 2.0;
      double v = dx * dx + dy * dy < (size * 0.4) * (size * 0.4) ? 170 : 40;
      v += g_rand_double_range(r, -6, 6);
      if (scratch && x > size * 0.55 && x < size * 0.75 && abs(y - x + size / 10) <= 0)
        v = 60;
      for (int c = 0; c < 3; c++)
        img->data[y * img->stride + x * 3 + c] = (guint8)CLAMP(v - 10 * c, 0, 255);
    }
  return img;
}

/* A scratch for some stages gives those stages bit for bit as a whole
 * scratch does, on one thread and on the team, the others' data NULL, and
 * is smaller (mobilenetv2: no stem / blocks.0 / blocks.1 kept). */
static void
test_scratch_for_stages(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) mw = mobilenet_weights(29);
  g_autoptr(Weights) rw = resnet_weights(&resnet18, 30);
  g_autofree char *mpath = weights_save(mw, dir, "m.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autofree char *rpath = weights_save(rw, dir, "r.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autoptr(InspBackbone) mb = insp_backbone_new_from_file(mpath, NULL);
  g_autoptr(InspBackbone) rb = insp_backbone_new_from_file(rpath, NULL);
  g_autoptr(InspBackbone) bb = insp_backbone_new_builtin();
  const struct {
    const InspBackbone *bb;
    int h, w;
    const char *stages[3];
    const char *last;
  } cases[] = {{mb, 160, 224, {"blocks.2", "blocks.4", NULL}, "blocks.4"},
               {mb, 97, 131, {"blocks.4", "blocks.1", NULL}, "blocks.4"},
               {mb, 64, 64, {"blocks.2", "blocks.4", NULL}, "blocks.2"},
               {rb, 96, 96, {"layer2", "layer3", NULL}, "layer3"},
               {bb, 83, 90, {"s8", "s16", NULL}, "s16"}};

  g_assert_nonnull(mb);
  g_assert_nonnull(rb);
  for (guint c = 0; c < G_N_ELEMENTS(cases); c++)
    for (int t = 1; t <= 2; t++) {
      int h = cases[c].h, w = cases[c].w, n, n2;
      g_autoptr(InspBackboneScratch) all = insp_backbone_scratch_new(cases[c].bb, h, w, NULL);
      g_autoptr(InspBackboneScratch) some =
          insp_backbone_scratch_new_for_stages(cases[c].bb, h, w, cases[c].stages, NULL);
      g_autofree float *in = random_input(9, 3, h, w);
      InspFeatureMap fa[16], fs[16];

      g_assert_nonnull(all);
      g_assert_nonnull(some);
      insp_ops_set_blas_threads(t);
      n = insp_backbone_forward(cases[c].bb, all, in, cases[c].last, fa);
      n2 = insp_backbone_forward(cases[c].bb, some, in, cases[c].last, fs);
      insp_ops_set_blas_threads(1);
      g_assert_cmpint(n, ==, n2);
      for (int i = 0; i < n; i++) {
        gsize len = (gsize)fa[i].channels * fa[i].height * fa[i].width * sizeof(float);

        g_assert_cmpstr(fa[i].name, ==, fs[i].name);
        g_assert_cmpint(fa[i].channels, ==, fs[i].channels);
        g_assert_cmpint(fa[i].height, ==, fs[i].height);
        g_assert_cmpint(fa[i].width, ==, fs[i].width);
        if (!g_strv_contains(cases[c].stages, fa[i].name)) {
          g_assert_null(fs[i].data);
          continue;
        }
        g_assert_nonnull(fs[i].data);
        g_assert_cmpmem(fa[i].data, len, fs[i].data, len);
      }
    }
  rm_tmpdir(dir);
}

/* A forward copy up to a stage gives that stage and the ones before bit for
 * bit as the backbone it was made from, has no later stages, and is equal to
 * it up to that stage (to the same weights read again too), not to another
 * backbone's weights. */
static void
test_forward_copy(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w1 = mobilenet_weights(31);
  g_autoptr(Weights) w2 = mobilenet_weights(32);
  g_autofree char *p1 = weights_save(w1, dir, "a.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autofree char *p2 = weights_save(w2, dir, "b.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autoptr(InspBackbone) full = insp_backbone_new_from_file(p1, NULL);
  g_autoptr(InspBackbone) again = insp_backbone_new_from_file(p1, NULL);
  g_autoptr(InspBackbone) other = insp_backbone_new_from_file(p2, NULL);
  g_autoptr(InspBackbone) rb = NULL;
  g_autoptr(InspBackbone) copy = NULL;
  g_autoptr(InspBackbone) rcopy = NULL;
  g_autoptr(InspBackboneScratch) sf = NULL, sc = NULL;
  g_autofree float *in = random_input(5, 3, 96, 128);
  InspFeatureMap ff[16], fc[16];
  const char *const *names;
  int n;

  g_assert_nonnull(full);
  g_assert_nonnull(other);
  copy = insp_backbone_new_forward_copy(full, "blocks.4");
  g_assert_nonnull(copy);
  names = insp_backbone_get_stage_names(copy);
  g_assert_cmpuint(g_strv_length((char **)names), ==, 6); /* stem, blocks.0 .. blocks.4 */
  g_assert_cmpstr(names[5], ==, "blocks.4");
  g_assert_true(insp_backbone_equal_to_stage(full, copy, "blocks.4"));
  g_assert_true(insp_backbone_equal_to_stage(again, copy, "blocks.4"));
  g_assert_true(insp_backbone_equal_to_stage(copy, again, "blocks.2"));
  g_assert_false(insp_backbone_equal_to_stage(other, copy, "blocks.4"));
  g_assert_false(insp_backbone_equal_to_stage(copy, full, "blocks.5")); /* not in the copy */

  sf = insp_backbone_scratch_new(full, 96, 128, NULL);
  sc = insp_backbone_scratch_new(copy, 96, 128, NULL);
  n = insp_backbone_forward(full, sf, in, "blocks.4", ff);
  g_assert_cmpint(insp_backbone_forward(copy, sc, in, NULL, fc), ==, n);
  for (int i = 0; i < n; i++) {
    gsize len = (gsize)ff[i].channels * ff[i].height * ff[i].width * sizeof(float);

    g_assert_cmpstr(ff[i].name, ==, fc[i].name);
    g_assert_cmpmem(ff[i].data, len, fc[i].data, len);
  }

  /* resnet: Winograd layers keep their transformed weights */
  {
    g_autoptr(Weights) rw = resnet_weights(&resnet18, 33);
    g_autofree char *rp = weights_save(rw, dir, "r.safetensors", NULL, NULL, NULL, NULL, NULL);
    g_autoptr(InspBackboneScratch) rs = NULL, rcs = NULL;
    g_autofree float *rin = random_input(6, 3, 96, 96);

    rb = insp_backbone_new_from_file(rp, NULL);
    g_assert_nonnull(rb);
    rcopy = insp_backbone_new_forward_copy(rb, "layer2");
    g_assert_true(insp_backbone_equal_to_stage(rb, rcopy, "layer2"));
    rs = insp_backbone_scratch_new(rb, 96, 96, NULL);
    rcs = insp_backbone_scratch_new(rcopy, 96, 96, NULL);
    n = insp_backbone_forward(rb, rs, rin, "layer2", ff);
    g_assert_cmpint(insp_backbone_forward(rcopy, rcs, rin, "layer2", fc), ==, n);
    for (int i = 0; i < n; i++) {
      gsize len = (gsize)ff[i].channels * ff[i].height * ff[i].width * sizeof(float);

      g_assert_cmpmem(ff[i].data, len, fc[i].data, len);
    }
  }
  rm_tmpdir(dir);
}

/* Training reads the backbone again for the model once the features are
 * freed (insp-train.c, "Memory"): the same file gives a model that saves;
 * a file changed or gone by then fails the training, each with its own
 * message. The source does it on its last call. */
typedef struct {
  const char *path;
  const char *replacement; /* NULL: unlink */
  int calls, act_at;
} TrainSource;

static InspImage *
train_source(int index, gpointer user_data, GError **error)
{
  TrainSource *ts = user_data;
  InspImage *img = insp_image_new(64, 48, 3);
  g_autoptr(GRand) r = g_rand_new_with_seed(40 + index);

  for (int y = 0; y < img->height; y++)
    for (int x = 0; x < img->width * 3; x++)
      img->data[(gsize)y * img->stride + x] = (guint8)g_rand_int_range(r, 60, 200);
  if (++ts->calls == ts->act_at && ts->act_at > 0) {
    if (ts->replacement == NULL) {
      g_assert_cmpint(g_unlink(ts->path), ==, 0);
    } else {
      g_autofree char *data = NULL;
      gsize len;

      g_assert_true(g_file_get_contents(ts->replacement, &data, &len, NULL));
      g_assert_true(g_file_set_contents(ts->path, data, (gssize)len, NULL));
    }
  }
  return img;
}

static void
test_train_reads_again(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autoptr(Weights) w1 = mobilenet_weights(35);
  g_autoptr(Weights) w2 = mobilenet_weights(36);
  g_autofree char *p1 = weights_save(w1, dir, "a.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autofree char *p2 = weights_save(w2, dir, "b.safetensors", NULL, NULL, NULL, NULL, NULL);
  g_autofree char *out = g_build_filename(dir, "model.safetensors", NULL);
  const int n = 5;
  InspTrainOptions opt;

  insp_train_options_init(&opt);
  opt.backbone = p1;
  opt.input_size = 64;
  opt.coreset_fraction = 0.05;
  for (int c = 0; c < 3; c++) {
    /* the sizes pass and the features pass each ask for every image */
    TrainSource ts = {p1, c == 1 ? p2 : NULL, 0, c == 0 ? 0 : 2 * n};
    g_autoptr(GError) error = NULL;
    g_autoptr(InspModel) m = insp_model_train(&opt, n, train_source, &ts, NULL, NULL, &error);

    g_assert_cmpint(ts.calls, ==, 2 * n);
    if (c == 0) {
      g_autoptr(InspModel) back = NULL;

      g_assert_no_error(error);
      g_assert_true(insp_model_save(m, out, &error));
      g_assert_no_error(error);
      back = insp_model_load(out, &error);
      g_assert_no_error(error);
      g_assert_nonnull(back);
      continue;
    }
    g_assert_null(m);
    g_assert_nonnull(error);
    g_test_message("%s", error->message);
    g_assert_nonnull(
        strstr(error->message, c == 1 ? "changed during training" : "reading the backbone again"));
  }
  rm_tmpdir(dir);
}

static void
test_builtin(void)
{
  g_autoptr(InspBackbone) bb = insp_backbone_new_builtin();
  g_autoptr(GError) error = NULL;
  const int size = 128;
  float mean[3], std[3];
  const char *const *names = insp_backbone_get_stage_names(bb);
  const char *fine, *coarse;

  g_assert_cmpstr(insp_backbone_get_arch(bb), ==, "builtin");
  g_assert_cmpstr(names[2], ==, "s8");
  g_assert_cmpstr(names[3], ==, "s16");
  g_assert_null(names[4]);
  insp_backbone_get_default_stages(bb, &fine, &coarse);
  g_assert_cmpstr(fine, ==, "s8");
  g_assert_cmpstr(coarse, ==, "s16");
  insp_backbone_get_normalisation(bb, mean, std);

  g_autoptr(InspImage) good = synthetic_part(size, FALSE);
  g_autoptr(InspImage) bad = synthetic_part(size, TRUE);
  g_autofree float *xg = g_new(float, 3 * size * size);
  g_autofree float *xb = g_new(float, 3 * size * size);
  insp_image_preprocess(good->data, size, size, good->stride, size, size, 1.0f, mean, std, xg);
  insp_image_preprocess(bad->data, size, size, bad->stride, size, size, 1.0f, mean, std, xb);
  g_autoptr(InspBackboneScratch) s1 = insp_backbone_scratch_new(bb, size, size, &error);
  g_autoptr(InspBackboneScratch) s2 = insp_backbone_scratch_new(bb, size, size, &error);
  g_assert_no_error(error);
  InspFeatureMap fg[4], fb[4];
  g_assert_cmpint(insp_backbone_forward(bb, s1, xg, "s8", fg), ==, 3);
  g_assert_cmpint(insp_backbone_forward(bb, s2, xb, "s8", fb), ==, 3);
  const InspFeatureMap *g = &fg[2], *b = &fb[2];
  g_assert_cmpint(g->channels, ==, 58);
  g_assert_cmpint(g->height, ==, 16);

  /* Distance per s8 cell: largest on the scratch, small elsewhere. */
  double in_max = 0, out_max = 0;
  for (int y = 0; y < g->height; y++)
    for (int x = 0; x < g->width; x++) {
      double d2 = 0;
      for (int c = 0; c < g->channels; c++) {
        gsize k = ((gsize)c * g->height + y) * g->width + x;
        d2 += (g->data[k] - b->data[k]) * (g->data[k] - b->data[k]);
      }
      /* scratch cells: x in [70, 96] px, y = x - 12 px */
      double cx = x * 8 + 4, cy = y * 8 + 4;
      gboolean near = cx > 62 && cx < 104 && fabs(cy - (cx - 12)) < 14;
      if (near)
        in_max = MAX(in_max, sqrt(d2));
      else
        out_max = MAX(out_max, sqrt(d2));
    }
  g_test_message("builtin s8: scratch distance %.3g, elsewhere max %.3g", in_max, out_max);
  g_assert_cmpfloat(in_max, >, 0.1);
  g_assert_cmpfloat(in_max, >, 20 * out_max);
}

static void
test_features_command(void)
{
  const char *exe = g_getenv("INSPECTD");
  g_autofree char *dir = make_tmpdir();
  g_autoptr(GError) error = NULL;

  if (exe == NULL || !g_file_test(exe, G_FILE_TEST_IS_EXECUTABLE)) {
    g_test_skip("INSPECTD is not set");
    return;
  }
  g_autoptr(InspImage) img = synthetic_part(100, TRUE);
  g_autofree char *png = g_build_filename(dir, "part.png", NULL);
  g_autofree char *out = g_build_filename(dir, "f.safetensors", NULL);
  g_assert_true(insp_image_save_png(img, png, &error));
  g_assert_no_error(error);

  const char *argv[] = {exe,     "features", "--backbone", "builtin", "--image", png,
                        "--out", out,        "--size",     "64",      NULL};
  g_autofree char *sout = NULL, *serr = NULL;
  int status;
  /* The same OpenBLAS kernels as here, so that the values can be compared
   * bit for bit (inspectd would otherwise choose its own: insp-blas.h). */
  g_auto(GStrv) env =
      g_environ_setenv(g_get_environ(), "OPENBLAS_CORETYPE", insp_blas_core(), TRUE);
  g_assert_true(g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_DEFAULT, NULL, NULL, &sout, &serr,
                             &status, &error));
  g_test_message("stdout: %s\nstderr: %s", sout, serr);
  g_assert_true(g_spawn_check_wait_status(status, &error));

  g_autoptr(InspSafetensors) st = insp_safetensors_open(out, &error);
  g_assert_no_error(error);
  gint64 ins[4] = {1, 3, 64, 64};
  const float *input = insp_safetensors_get_f32(st, "input", 4, ins, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(insp_safetensors_get_metadata(st, "architecture"), ==, "builtin");

  /* Same as running the backbone here on the same preprocessing. */
  g_autoptr(InspBackbone) bb = insp_backbone_new_builtin();
  float mean[3], std[3];
  insp_backbone_get_normalisation(bb, mean, std);
  g_autofree float *x = g_new(float, 3 * 64 * 64);
  insp_image_preprocess(img->data, 100, 100, img->stride, 64, 64, 1.0f, mean, std, x);
  g_assert_cmpmem(x, sizeof(float) * 3 * 64 * 64, input, sizeof(float) * 3 * 64 * 64);
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, 64, 64, &error);
  InspFeatureMap fm[8];
  int n = insp_backbone_forward(bb, s, x, NULL, fm);
  for (int i = 0; i < n; i++) {
    gint64 shape[4] = {1, fm[i].channels, fm[i].height, fm[i].width};
    const float *d = insp_safetensors_get_f32(st, fm[i].name, 4, shape, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(d, sizeof(float) * shape[1] * shape[2] * shape[3], fm[i].data,
                    sizeof(float) * shape[1] * shape[2] * shape[3]);
  }
  g_assert_true(insp_safetensors_check_all_used(st, NULL, &error));

  /* A missing image is an error with exit status 1. */
  const char *argv2[] = {
      exe, "features", "--backbone", "builtin", "--image", "/nonexistent.png", "--out", out, NULL};
  g_clear_pointer(&serr, g_free);
  g_assert_true(g_spawn_sync(NULL, (char **)argv2, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                             NULL, &serr, &status, &error));
  g_assert_false(g_spawn_check_wait_status(status, NULL));
  g_assert_nonnull(strstr(serr, "nonexistent.png"));
  rm_tmpdir(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  insp_ops_set_blas_threads(1);
  g_test_add_func("/backbone/mobilenetv2/reference", test_mobilenet_reference);
  g_test_add_func("/backbone/resnet18", test_resnet18);
  g_test_add_func("/backbone/resnet50", test_resnet50);
  g_test_add_func("/backbone/resnet34", test_resnet34);
  g_test_add_func("/backbone/wide_resnet50_2", test_wide_resnet50);
  g_test_add_func("/backbone/load-errors", test_load_errors);
  g_test_add_func("/backbone/write-roundtrip", test_write_roundtrip);
  g_test_add_func("/backbone/threads", test_threads);
  g_test_add_func("/backbone/team", test_team);
  g_test_add_func("/backbone/scratch-for-stages", test_scratch_for_stages);
  g_test_add_func("/backbone/forward-copy", test_forward_copy);
  g_test_add_func("/backbone/train-reads-again", test_train_reads_again);
  g_test_add_func("/backbone/builtin", test_builtin);
  g_test_add_func("/backbone/features-command", test_features_command);
  return g_test_run();
}
