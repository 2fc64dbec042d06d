/* Detectors: PatchCore and PaDiM trained on generated parts (a textured disc,
 * the defect a dark scratch) with the builtin backbone at 64 px: training,
 * save/load round trip, defect above good, the score normalisation around
 * 0.5, refusal of truncated / foreign / newer / tampered model files, coreset
 * reproducibility and agreement with the brute-force greedy loop, and the
 * PaDiM fit against a naive double-precision reference. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coreset-reference.h"
#include "insp-detector-private.h"
#include "insp-image.h"
#include "insp-model.h"
#include "insp-safetensors.h"
#include "test-tmp.h"

#define SIZE 96

static guint64
rng_next(guint64 *s)
{
  return insp_detector_rand_next(s);
}

static double
rng_unit(guint64 *s)
{
  return insp_detector_rand_uniform(s);
}

/* A 96x96 RGB part: a disc with radial stripes and noise on a dark
 * background; @defect adds a dark scratch across the disc. */
static InspImage *
make_part(guint64 seed, gboolean defect)
{
  InspImage *img = insp_image_new(96, 96, 3);
  guint64 st = seed * 7919 + 1;
  double phase = rng_unit(&st) * 0.3;
  double sx = 30 + rng_unit(&st) * 30, sy = 30 + rng_unit(&st) * 30;
  double angle = rng_unit(&st) * G_PI;

  for (int y = 0; y < 96; y++)
    for (int x = 0; x < 96; x++) {
      double dx = x - 48.0, dy = y - 48.0, r = sqrt(dx * dx + dy * dy);
      double v = 30.0;
      guint8 *p = img->data + (gsize)y * img->stride + 3 * x;

      if (r < 34.0)
        v = 150.0 + 40.0 * sin(atan2(dy, dx) * 12.0 + phase) + 20.0 * sin(r * 0.8);
      v += (rng_unit(&st) - 0.5) * 16.0;
      if (defect) {
        /* distance to the scratch segment through (sx, sy) at @angle, length 30 */
        double ux = cos(angle), uy = sin(angle);
        double t = (x - sx) * ux + (y - sy) * uy;
        double n = fabs(-(x - sx) * uy + (y - sy) * ux);

        if (fabs(t) < 15.0 && n < 2.5)
          v = 10.0;
      }
      v = CLAMP(v, 0.0, 255.0);
      p[0] = (guint8)v;
      p[1] = (guint8)(v * 0.9);
      p[2] = (guint8)(v * 0.8);
    }
  return img;
}

static InspImage *
source_good(int index, gpointer user_data, GError **error)
{
  return make_part((guint64)index + 100, FALSE);
}

static InspModel *
train(InspDetectorKind kind, double coreset, int n, guint64 seed)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  InspModel *m;

  insp_train_options_init(&opt);
  opt.backbone = "builtin";
  opt.detector = kind;
  opt.coreset_fraction = coreset;
  opt.input_size = SIZE;
  opt.seed = seed;
  /* PaDiM needs more images than dims for a covariance: a channel subset */
  opt.padim_channels = kind == INSP_DETECTOR_PADIM ? 16 : 0;
  m = insp_model_train(&opt, n, source_good, NULL, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_nonnull(m);
  return m;
}

static float
score_of(InspModel *m, InspModelScratch *s, const InspImage *img, float *raw)
{
  InspScoreResult r;
  g_autoptr(GError) error = NULL;

  g_assert_true(
      insp_model_score(m, s, img->data, img->width, img->height, img->stride, &r, &error));
  g_assert_no_error(error);
  g_assert_cmpint(r.map_width, ==, SIZE);
  g_assert_cmpint(r.map_height, ==, SIZE);
  if (raw)
    *raw = r.raw_score;
  return r.score;
}

static void
check_detector(InspDetectorKind kind)
{
  g_autoptr(InspModel) m = train(kind, 0.25, 40, 1);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) loaded = NULL;
  g_autoptr(InspModelScratch) ls = NULL;
  float good_max = 0.0f, defect_min = G_MAXFLOAT;

  g_assert_nonnull(s);
  g_assert_cmpint(insp_model_get_detector(m), ==, kind);
  g_assert_cmpstr(insp_model_get_backbone_arch(m), ==, "builtin");
  g_assert_cmpint(insp_model_get_input_size(m), ==, SIZE);
  g_assert_true(insp_model_save(m, path, &error));
  g_assert_no_error(error);
  loaded = insp_model_load(path, &error);
  g_assert_no_error(error);
  g_assert_nonnull(loaded);
  g_assert_cmpstr(insp_model_get_id(loaded), ==, insp_model_get_id(m));
  g_assert_true(g_str_has_prefix(
      insp_model_get_id(m), kind == INSP_DETECTOR_PADIM ? "padim-builtin-" : "patchcore-builtin-"));
  ls = insp_model_scratch_new(loaded, &error);
  g_assert_no_error(error);

  for (int i = 0; i < 6; i++) {
    g_autoptr(InspImage) good = make_part(1000 + i, FALSE);
    g_autoptr(InspImage) bad = make_part(2000 + i, TRUE);
    float rg, rb, lrg, lrb;
    float sg = score_of(m, s, good, &rg), sb = score_of(m, s, bad, &rb);

    /* Round trip: the loaded model scores exactly as the trained one. */
    g_assert_cmpfloat(score_of(loaded, ls, good, &lrg), ==, sg);
    g_assert_cmpfloat(lrg, ==, rg);
    g_assert_cmpfloat(score_of(loaded, ls, bad, &lrb), ==, sb);
    g_assert_cmpfloat(lrb, ==, rb);
    g_test_message("good %.4f (raw %.4f) defect %.4f (raw %.4f)", sg, rg, sb, rb);
    good_max = MAX(good_max, sg);
    defect_min = MIN(defect_min, sb);
  }
  g_test_message("good max %.3f, defect min %.3f", good_max, defect_min);
  g_assert_cmpfloat(defect_min, >, good_max);
  g_assert_cmpfloat(good_max, <, 0.5f);
  g_assert_cmpfloat(defect_min, >, 0.5f);
  test_tmp_remove(path);
}

static void
test_patchcore(void)
{
  check_detector(INSP_DETECTOR_PATCHCORE);
}

static void
test_padim(void)
{
  check_detector(INSP_DETECTOR_PADIM);
}

/* The defect's map is hot where the scratch is, and the map is normalised
 * the same way (good pixels below 0.5). */
static void
test_map(void)
{
  g_autoptr(InspModel) m = train(INSP_DETECTOR_PATCHCORE, 0.25, 12, 3);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autoptr(InspImage) good = make_part(3000, FALSE);
  g_autoptr(InspImage) bad = make_part(3001, TRUE);
  InspScoreResult r;
  float gmax = 0.0f, bmax = 0.0f;

  g_assert_true(insp_model_score(m, s, good->data, 96, 96, good->stride, &r, NULL));
  for (int i = 0; i < SIZE * SIZE; i++)
    gmax = MAX(gmax, r.map[i]);
  g_assert_true(insp_model_score(m, s, bad->data, 96, 96, bad->stride, &r, NULL));
  for (int i = 0; i < SIZE * SIZE; i++)
    bmax = MAX(bmax, r.map[i]);
  g_test_message("map max good %.3f defect %.3f", gmax, bmax);
  g_assert_cmpfloat(gmax, <, 0.5f);
  g_assert_cmpfloat(bmax, >, 0.5f);
  g_assert_cmpfloat(r.ms_backbone, >=, 0.0);
  g_assert_cmpfloat(r.ms_distance, >=, 0.0);
}

static void
test_bad_input(void)
{
  g_autoptr(InspModel) m = train(INSP_DETECTOR_PADIM, 1.0, 4, 0);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autoptr(GError) error = NULL;
  InspScoreResult r;
  guint8 px[3] = {0};

  g_assert_false(insp_model_score(m, s, px, 0, 1, 3, &r, &error));
  g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_INPUT);
}

static InspImage *
source_two(int index, gpointer user_data, GError **error)
{
  return make_part((guint64)index, FALSE);
}

static void
test_too_few(void)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) m = NULL;

  insp_train_options_init(&opt);
  opt.input_size = SIZE;
  m = insp_model_train(&opt, 2, source_two, NULL, NULL, NULL, &error);
  g_assert_null(m);
  g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN);
  g_assert_nonnull(strstr(error->message, "at least 3"));
}

/* Writes @data with @from replaced by @to (same length) in the header. */
static void
write_patched(const char *path, const char *data, gsize len, const char *from, const char *to)
{
  g_autofree char *copy = g_memdup2(data, len);
  char *hit = memmem(copy, MIN(len, 1 << 20), from, strlen(from));

  g_assert_nonnull(hit);
  g_assert_cmpuint(strlen(from), ==, strlen(to));
  memcpy(hit, to, strlen(to));
  g_assert_true(g_file_set_contents(path, copy, (gssize)len, NULL));
}

static void
expect_refusal(const char *path, const char *needle)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) m = insp_model_load(path, &error);

  g_assert_null(m);
  g_assert_nonnull(error);
  g_assert_true(error->domain == INSP_MODEL_ERROR);
  g_test_message("refused: %s", error->message);
  if (strstr(error->message, needle) == NULL)
    g_error("'%s' does not mention '%s'", error->message, needle);
}

static void
test_refusals(void)
{
  g_autoptr(InspModel) m = train(INSP_DETECTOR_PATCHCORE, 0.5, 4, 0);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autofree char *bad = NULL;
  g_autofree char *data = NULL;
  gsize len = 0;

  g_assert_true(insp_model_save(m, path, NULL));
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  bad = g_strconcat(path, ".bad", NULL);

  /* truncated */
  g_assert_true(g_file_set_contents(bad, data, (gssize)(len / 2), NULL));
  expect_refusal(bad, bad);
  /* a newer format version */
  write_patched(bad, data, len, "\"format_version\":\"1\"", "\"format_version\":\"7\"");
  expect_refusal(bad, "newer");
  /* foreign: another format name */
  write_patched(bad, data, len, "\"inspectd-model\"", "\"someones-model\"");
  expect_refusal(bad, "not an inspectd model");
  /* a tensor renamed: missing */
  write_patched(bad, data, len, "patchcore.memory_bank", "patchcore.memory_bonk");
  expect_refusal(bad, "memory_bank");
  /* a NaN in the memory bank: refused at load, naming the tensor */
  {
    g_autofree char *copy = g_memdup2(data, len);
    guint64 header_len = 0;
    const char *entry, *offsets;
    unsigned long long begin = 0;
    const float nan_value = NAN;

    memcpy(&header_len, copy, 8); /* little-endian on the machines we build for */
    entry = g_strstr_len(copy + 8, (gssize)header_len, "\"patchcore.memory_bank\"");
    g_assert_nonnull(entry);
    offsets = strstr(entry, "\"data_offsets\":[");
    g_assert_nonnull(offsets);
    g_assert_cmpint(sscanf(offsets + strlen("\"data_offsets\":["), "%llu", &begin), ==, 1);
    g_assert_cmpuint(8 + header_len + begin + 4 * 5 + 4, <=, len);
    memcpy(copy + 8 + header_len + begin + 4 * 5, &nan_value, 4);
    g_assert_true(g_file_set_contents(bad, copy, (gssize)len, NULL));
    expect_refusal(bad, "tensor 'patchcore.memory_bank' holds a non-finite value");
  }
  /* a negative score normalisation */
  {
    g_autofree char *copy = g_memdup2(data, len);
    char *value = memmem(copy, MIN(len, 1 << 20), "\"score.image_threshold\":\"",
                         strlen("\"score.image_threshold\":\""));

    g_assert_nonnull(value);
    value[strlen("\"score.image_threshold\":\"")] = '-';
    g_assert_true(g_file_set_contents(bad, copy, (gssize)len, NULL));
    expect_refusal(bad, "must be positive");
  }
  /* a plain safetensors file without our metadata */
  {
    g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
    gint64 shape[1] = {2};
    float v[2] = {1, 2};

    insp_safetensors_writer_add_f32(w, "weight", 1, shape, v);
    g_assert_true(insp_safetensors_writer_save(w, bad, NULL));
    expect_refusal(bad, "not an inspectd model");
  }
  g_remove(bad);
  test_tmp_remove(path);
}

static void
count_progress(const char *stage, int done, int total, gpointer data)
{
  g_assert_cmpstr(stage, ==, "coreset");
  g_assert_cmpint(done, <=, total);
  (*(int *)data)++;
}

static void
test_coreset(void)
{
  const gsize n = 3000;
  const int d = 24;
  g_autofree float *x = g_new(float, n *d);
  guint64 st = 42;
  gsize k1, k2, k3, kn;
  g_autofree gsize *a = NULL, *b = NULL, *c = NULL, *ref = NULL, *ex = NULL;
  g_autofree float *xp = NULL;
  InspCoresetOptions o;
  int n_progress = 0;
  gsize start;

  /* clustered data: 20 centres plus noise of varying scale */
  for (gsize i = 0; i < n; i++) {
    int cl = (int)(rng_next(&st) % 20);

    for (int j = 0; j < d; j++)
      x[i * d + j] = (float)(cl * 0.7 * ((j + cl) % 5) + (rng_unit(&st) - 0.5) * (1 + j % 3));
  }
  a = insp_patchcore_coreset(x, n, d, 0.05, 7, &k1);
  b = insp_patchcore_coreset(x, n, d, 0.05, 7, &k2);
  c = insp_patchcore_coreset(x, n, d, 0.05, 8, &k3);
  g_assert_cmpuint(k1, ==, 150);
  g_assert_cmpuint(k2, ==, k1);
  g_assert_cmpuint(k3, ==, k1);
  g_assert_cmpmem(a, k1 * sizeof(gsize), b, k2 * sizeof(gsize));
  g_assert_true(memcmp(a, c, k1 * sizeof(gsize)) != 0);

  /* The definition: the start is torch.randint's draw for the seed; the
   * default selects on sklearn's sparse projection of the rows, EXACT on
   * the rows themselves. */
  start = insp_test_torch_start(7, n);
  kn = k1;
  ref = g_new(gsize, kn);
  xp = insp_test_project(x, n, d, 7);
  insp_test_greedy_coreset(xp, n, d, kn, start, ref);
  g_assert_cmpmem(a, k1 * sizeof(gsize), ref, kn * sizeof(gsize));
  insp_coreset_options_init(&o);
  o.projection = INSP_CORESET_EXACT;
  o.progress = count_progress;
  o.progress_stage = "coreset";
  o.progress_data = &n_progress;
  ex = insp_patchcore_coreset_tuned(x, n, d, 0.05, 7, &o, &kn);
  g_assert_cmpint(n_progress, ==, 150); /* every max(k / 100, 1) selections */
  g_assert_cmpuint(kn, ==, k1);
  insp_test_greedy_coreset(x, n, d, kn, start, ref);
  g_assert_cmpmem(ex, kn * sizeof(gsize), ref, kn * sizeof(gsize));
  g_assert_true(memcmp(a, ex, k1 * sizeof(gsize)) != 0);

  /* Every strategy (pruned only, streamed only, alternating every window so
   * the cluster lists are rebuilt from a streamed state), on one thread and
   * on three, selects exactly the same rows. */
  for (int t = 1; t <= 3; t += 2)
    for (int strat = INSP_CORESET_ADAPTIVE; strat <= INSP_CORESET_BATCHED; strat++) {
      g_autofree gsize *e = NULL;
      gsize ke;

      insp_coreset_options_init(&o);
      o.projection = INSP_CORESET_SPARSE_RANDOM;
      o.threads = t;
      o.strategy = (InspCoresetStrategy)strat;
      e = insp_patchcore_coreset_tuned(x, n, d, 0.05, 7, &o, &ke);
      g_assert_cmpuint(ke, ==, k1);
      g_assert_cmpmem(a, k1 * sizeof(gsize), e, ke * sizeof(gsize));
    }

  /* all rows identical: stops after the first selection */
  for (gsize i = 0; i < n * d; i++)
    x[i] = 1.0f;
  g_free(c);
  c = insp_patchcore_coreset(x, n, d, 0.1, 1, &k3);
  g_assert_cmpuint(k3, <=, 1);
}

/* A wide (D > 128) input: projected to 128 dims. */
static void
test_coreset_wide(void)
{
  const gsize n = 600;
  const int d = 200;
  g_autofree float *x = g_new(float, n *d);
  guint64 st = 9;
  gsize k;
  g_autofree gsize *sel = NULL;

  for (gsize i = 0; i < n * d; i++)
    x[i] = (float)rng_unit(&st);
  sel = insp_patchcore_coreset(x, n, d, 0.1, 3, &k);
  g_assert_cmpuint(k, ==, 60);
  for (gsize i = 0; i < k; i++) {
    g_assert_cmpuint(sel[i], <, n);
    for (gsize j = 0; j < i; j++)
      g_assert_cmpuint(sel[i], !=, sel[j]);
  }
}

/* sklearn's sparse random matrix: entries 0 or +-(1/density)^(1/2) /
 * sqrt(d_out), about density * d_in non-zeros per output, reproducible. */
static void
test_sparse_projection(void)
{
  const int d = 128;
  g_autofree float *r = g_new(float, d *d);
  g_autofree float *r2 = g_new(float, d *d);
  float v = (float)(pow(128.0, 0.25) / sqrt(128.0));
  int nnz = 0, pos = 0;

  insp_sklearn_sparse_random_matrix(d, d, 0, r);
  insp_sklearn_sparse_random_matrix(d, d, 0, r2);
  g_assert_cmpmem(r, sizeof(float) * d * d, r2, sizeof(float) * d * d);
  for (int i = 0; i < d * d; i++) {
    g_assert_true(r[i] == 0.0f || fabsf(fabsf(r[i]) - v) < 1e-6f);
    nnz += r[i] != 0.0f;
    pos += r[i] > 0.0f;
  }
  /* expected d * sqrt(d) = 1448 non-zeros, half of them positive */
  g_assert_cmpint(nnz, >, 1250);
  g_assert_cmpint(nnz, <, 1650);
  g_assert_cmpint(abs(2 * pos - nnz), <, 150);
  insp_sklearn_sparse_random_matrix(d, d, 1, r2);
  g_assert_true(memcmp(r, r2, sizeof(float) * d * d) != 0);

  /* narrow inputs (--dim 1..): density 1 is dense signs, > 0.5 draws the
   * complement, nearly all columns go through reservoir sampling */
  for (int din = 1; din <= 5; din++) {
    float vn = (float)(pow((double)din, 0.25) / sqrt((double)din));

    insp_sklearn_sparse_random_matrix(din, din, 3, r);
    nnz = 0;
    for (int i = 0; i < din * din; i++) {
      g_assert_true(r[i] == 0.0f || fabsf(fabsf(r[i]) - vn) < 1e-6f);
      nnz += r[i] != 0.0f;
    }
    g_assert_cmpint(nnz, >, 0);
    if (din == 1)
      g_assert_cmpint(nnz, ==, 1);
  }
}

/* Training options: explicit stages and patch size are kept in the file and
 * used when it is loaded; bad ones are refused with the reason. */
static void
test_train_options(void)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) m = NULL, loaded = NULL, m3 = NULL;
  g_autoptr(InspModelScratch) s = NULL, ls = NULL, s3 = NULL;
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autoptr(InspImage) bad = make_part(2000, TRUE);
  float raw, lraw, raw3;
  InspModel *none;

  insp_train_options_init(&opt);
  opt.input_size = SIZE;
  opt.coreset_fraction = 0.25;
  opt.stages = "s8,s16";
  opt.patch_size = 1;
  m = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpint(m->spec.patch_size, ==, 1);
  g_assert_true(insp_model_save(m, path, &error));
  loaded = insp_model_load(path, &error);
  g_assert_no_error(error);
  g_assert_cmpint(loaded->spec.patch_size, ==, 1);
  g_assert_cmpstr(loaded->fine_stage, ==, "s8");
  s = insp_model_scratch_new(m, NULL);
  ls = insp_model_scratch_new(loaded, NULL);
  score_of(m, s, bad, &raw);
  score_of(loaded, ls, bad, &lraw);
  g_assert_cmpfloat(raw, ==, lraw);
  /* the default neighbourhood (3) scores differently */
  opt.patch_size = 0;
  m3 = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpint(m3->spec.patch_size, ==, 3);
  s3 = insp_model_scratch_new(m3, NULL);
  score_of(m3, s3, bad, &raw3);
  g_assert_cmpfloat(raw3, !=, raw);

  /* The defaults: PatchCore at 320 px with a 1 % bank, PaDiM at the
   * backbone's 224 px. */
  {
    InspTrainOptions def;
    g_autoptr(InspModel) md = NULL, mp = NULL;
    InspModelInfo info;

    insp_train_options_init(&def);
    g_assert_cmpfloat(def.coreset_fraction, ==, 0.01);
    md = insp_model_train(&def, 5, source_good, NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(insp_model_get_input_size(md), ==, 320);
    insp_model_get_info(md, &info);
    g_assert_cmpint(info.n_patches, ==, 40 * 40);
    g_assert_cmpint(info.bank_rows, ==, 5 * 1600 / 100);
    def.detector = INSP_DETECTOR_PADIM;
    def.padim_channels = 8;
    mp = insp_model_train(&def, 5, source_good, NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpint(insp_model_get_input_size(mp), ==, 224);
  }

  opt.patch_size = 4;
  none = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_null(none);
  g_assert_nonnull(strstr(error->message, "patch size 4 is not an odd number"));
  g_clear_error(&error);
  opt.patch_size = 0;
  opt.stages = "s8,s32";
  none = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_null(none);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, "no stage 's32' (it has "));
  g_clear_error(&error);
  opt.stages = "s16,s8";
  none = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_null(none);
  g_assert_nonnull(strstr(error->message, "give the finer stage first"));
  g_clear_error(&error);
  opt.stages = "s8";
  none = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
  g_assert_null(none);
  g_assert_nonnull(strstr(error->message, "not two stage names"));
  test_tmp_remove(path);
}

/* The image-score kernel against the most straightforward implementation,
 * in double: every bank row's distance to every patch, the highest patch
 * p*, its nearest row m*, m*'s k - 1 nearest other rows by sorting all of
 * them, weight = 1 - softmax(d)[0] over the distances from p* to those k
 * rows. MAX is the highest patch score itself (the same float), MAP_MAX
 * leaves the image score to the map (NAN) and fills the patch scores all
 * the same. Tolerance 1e-5 relative (float distances against double). */
typedef struct {
  int row;
  double d2;
} RowDist;

static int
cmp_row_dist(const void *a, const void *b)
{
  const RowDist *x = a, *y = b;

  return (x->d2 > y->d2) - (x->d2 < y->d2);
}

static double
naive_reweighted(const float *feats, int n, int d, const float *bank, int rows, int k)
{
  int best = 0, nearest = 0;
  double best_d = -1.0, near_d = G_MAXDOUBLE, mx = -G_MAXDOUBLE, den = 0.0;
  g_autofree RowDist *rd = g_new(RowDist, rows);
  g_autofree double *dist = g_new(double, k);

  for (int p = 0; p < n; p++) {
    double lo = G_MAXDOUBLE;

    for (int r = 0; r < rows; r++) {
      double s = 0.0;

      for (int j = 0; j < d; j++)
        s += ((double)feats[p * d + j] - bank[r * d + j]) *
             ((double)feats[p * d + j] - bank[r * d + j]);
      lo = MIN(lo, s);
    }
    if (lo > best_d) {
      best_d = lo;
      best = p;
    }
  }
  for (int r = 0; r < rows; r++) {
    double s = 0.0;

    for (int j = 0; j < d; j++)
      s += ((double)feats[best * d + j] - bank[r * d + j]) *
           ((double)feats[best * d + j] - bank[r * d + j]);
    if (s < near_d) {
      near_d = s;
      nearest = r;
    }
  }
  for (int r = 0; r < rows; r++) {
    double s = 0.0;

    for (int j = 0; j < d; j++)
      s += ((double)bank[nearest * d + j] - bank[r * d + j]) *
           ((double)bank[nearest * d + j] - bank[r * d + j]);
    rd[r] = (RowDist){r, r == nearest ? -1.0 : s};
  }
  qsort(rd, (gsize)rows, sizeof *rd, cmp_row_dist);
  k = MIN(k, rows);
  for (int j = 0; j < k; j++) {
    double s = 0.0;

    for (int i = 0; i < d; i++)
      s += ((double)feats[best * d + i] - bank[rd[j].row * d + i]) *
           ((double)feats[best * d + i] - bank[rd[j].row * d + i]);
    dist[j] = sqrt(s);
    mx = MAX(mx, dist[j]);
  }
  for (int j = 0; j < k; j++)
    den += exp(dist[j] - mx);
  return (1.0 - exp(dist[0] - mx) / den) * sqrt(best_d);
}

/* Patch distances to the first @rows rows of @bank, by brute force. */
static void
brute_nearest(const float *feats, int n, int d, const float *bank, int rows, float *sq, float *d2,
              int *arg)
{
  for (int r = 0; r < rows; r++) {
    sq[r] = 0.0f;
    for (int j = 0; j < d; j++)
      sq[r] += bank[r * d + j] * bank[r * d + j];
  }
  for (int p = 0; p < n; p++) {
    d2[p] = G_MAXFLOAT;
    for (int r = 0; r < rows; r++) {
      float s = 0.0f;

      for (int j = 0; j < d; j++)
        s += (feats[p * d + j] - bank[r * d + j]) * (feats[p * d + j] - bank[r * d + j]);
      if (s < d2[p]) {
        d2[p] = s;
        arg[p] = r;
      }
    }
  }
}

static void
test_image_score_kernel(void)
{
  const int n = 50, d = 16, rows = 80, small = 30;
  g_autofree float *feats = g_new(float, n *d), *bank = g_new(float, rows *d);
  g_autofree float *sq = g_new(float, rows), *d2 = g_new(float, n), *knn = g_new(float, rows);
  g_autofree float *ps = g_new(float, n);
  g_autofree int *arg = g_new(int, n);
  guint64 st = 11;
  float s_star = 0.0f, v, prev = 0.0f, all;

  for (int i = 0; i < n * d; i++)
    feats[i] = (float)rng_unit(&st) * 2.0f;
  for (int i = 0; i < rows * d; i++)
    bank[i] = (float)rng_unit(&st) * 2.0f;
  brute_nearest(feats, n, d, bank, rows, sq, d2, arg);

  v = insp_patchcore_image_score(feats, n, d, d2, arg, bank, sq, rows, INSP_IMAGE_SCORE_MAX, 0, knn,
                                 ps);
  for (int p = 0; p < n; p++) {
    g_assert_cmpfloat(ps[p], ==, sqrtf(d2[p]));
    s_star = MAX(s_star, ps[p]);
  }
  g_assert_cmpfloat(v, ==, s_star);
  memset(ps, 0, sizeof(float) * n);
  v = insp_patchcore_image_score(feats, n, d, d2, arg, bank, sq, rows, INSP_IMAGE_SCORE_MAP_MAX, 0,
                                 knn, ps);
  g_assert_true(isnan(v));
  for (int p = 0; p < n; p++)
    g_assert_cmpfloat(ps[p], ==, sqrtf(d2[p]));
  /* every k: the reference, 1 - softmax(d)[0] >= 1 - 1/k (m* is the nearest
   * row, so no other distance is below d[0]), growing with k */
  for (int k = INSP_MODEL_NEIGHBOURS_MIN; k <= INSP_MODEL_NEIGHBOURS_MAX; k++) {
    double ref = naive_reweighted(feats, n, d, bank, rows, k);

    v = insp_patchcore_image_score(feats, n, d, d2, arg, bank, sq, rows,
                                   INSP_IMAGE_SCORE_REWEIGHTED, k, knn, ps);
    if (fabs(v - ref) > 1e-5 * ref)
      g_error("k = %d: reweighted %.9g, the naive reference %.9g", k, v, ref);
    g_assert_cmpfloat(v, <, s_star);
    g_assert_cmpfloat(v, >=, s_star * (1.0f - 1.0f / (float)k) * (1.0f - 1e-6f));
    g_assert_cmpfloat(v, >, prev);
    prev = v;
  }
  /* a bank smaller than k: all of its rows (anomalib: min(k, rows)) */
  brute_nearest(feats, n, d, bank, small, sq, d2, arg);
  all = insp_patchcore_image_score(feats, n, d, d2, arg, bank, sq, small,
                                   INSP_IMAGE_SCORE_REWEIGHTED, small, knn, ps);
  g_assert_cmpfloat_with_epsilon(all, naive_reweighted(feats, n, d, bank, small, small),
                                 1e-5 * all);
  for (int k = small + 1; k <= INSP_MODEL_NEIGHBOURS_MAX; k += 11)
    g_assert_cmpfloat(insp_patchcore_image_score(feats, n, d, d2, arg, bank, sq, small,
                                                 INSP_IMAGE_SCORE_REWEIGHTED, k, knn, ps),
                      ==, all);
}

static InspModel *
train_rule(InspImageScoreRule rule, int neighbours, GError **error)
{
  InspTrainOptions opt;

  insp_train_options_init(&opt);
  opt.input_size = SIZE;
  opt.coreset_fraction = 0.25;
  opt.seed = 4;
  opt.image_score = rule;
  opt.neighbours = neighbours;
  return insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, error);
}

/* The raw image score from the model's own scoring path (insp_model_score)
 * and from its detector on the same features, with the patch scores. */
static float
detector_score(InspModel *m, const InspImage *img, float *patch, float *model_raw)
{
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autofree float *feats = g_new(float, (gsize)m->n_patches * m->dim);
  g_autofree void *sc = g_malloc(m->klass->scratch_size(m));
  double t1, t2;

  score_of(m, s, img, model_raw);
  insp_image_preprocess(img->data, img->width, img->height, img->stride, m->input_width,
                        m->input_height, 1.0f, m->mean, m->std, insp_model_scratch_get_input(s));
  insp_model_extract(m, s, insp_model_scratch_get_input(s), feats, &t1, &t2);
  return m->klass->score(m, sc, feats, patch);
}

/* train's image-score rule and k: kept in the model file and used when it is
 * loaded; MAX is the highest patch score exactly, REWEIGHTED grows with k
 * towards it, MAP_MAX is the blurred map's maximum; the bank is the same
 * whatever the rule (it only scores). Files from before the rules load as
 * reweighted with k = 9; inconsistent or unknown values are refused naming
 * the key, as are bad training options. */
static void
test_image_score(void)
{
  const struct {
    InspImageScoreRule rule;
    int k;
    InspImageScoreRule stored;
    int stored_k;
  } cases[] = {
      {INSP_IMAGE_SCORE_DEFAULT, 0, INSP_IMAGE_SCORE_REWEIGHTED, 9},
      {INSP_IMAGE_SCORE_REWEIGHTED, 2, INSP_IMAGE_SCORE_REWEIGHTED, 2},
      {INSP_IMAGE_SCORE_REWEIGHTED, 3, INSP_IMAGE_SCORE_REWEIGHTED, 3},
      {INSP_IMAGE_SCORE_DEFAULT, 27, INSP_IMAGE_SCORE_REWEIGHTED, 27},
      {INSP_IMAGE_SCORE_MAX, 0, INSP_IMAGE_SCORE_MAX, 0},
      {INSP_IMAGE_SCORE_MAP_MAX, 0, INSP_IMAGE_SCORE_MAP_MAX, 0},
  };
  g_autoptr(InspImage) bad = make_part(2001, TRUE);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autofree char *bad_path = g_strconcat(path, ".bad", NULL);
  g_autoptr(GError) error = NULL;
  g_autofree float *bank0 = NULL;
  float raw[G_N_ELEMENTS(cases)], s_star = 0.0f;
  int rows0 = 0;

  for (gsize c = 0; c < G_N_ELEMENTS(cases); c++) {
    g_autoptr(InspModel) m = train_rule(cases[c].rule, cases[c].k, &error);
    g_autoptr(InspModel) loaded = NULL;
    g_autofree float *patch = NULL;
    InspModelInfo info, linfo;
    const float *bank;
    float det, model_raw, lraw, hi = 0.0f;
    int rows;

    g_assert_no_error(error);
    insp_model_get_info(m, &info);
    g_assert_cmpint(info.image_score, ==, cases[c].stored);
    g_assert_cmpint(info.neighbours, ==, cases[c].stored_k);
    bank = insp_patchcore_get_bank(m, &rows);
    if (bank0 == NULL) {
      bank0 = g_memdup2(bank, sizeof(float) * rows * m->dim);
      rows0 = rows;
      g_assert_cmpint(rows, >=, 27);
    }
    g_assert_cmpint(rows, ==, rows0);
    g_assert_cmpmem(bank, sizeof(float) * rows * m->dim, bank0, sizeof(float) * rows * m->dim);

    patch = g_new(float, m->n_patches);
    det = detector_score(m, bad, patch, &model_raw);
    for (int p = 0; p < m->n_patches; p++)
      hi = MAX(hi, patch[p]);
    if (c == 0)
      s_star = hi;
    g_assert_cmpfloat(hi, ==, s_star);
    switch (cases[c].stored) {
    case INSP_IMAGE_SCORE_MAX:
      g_assert_cmpfloat(det, ==, hi);
      g_assert_cmpfloat(model_raw, ==, hi);
      break;
    case INSP_IMAGE_SCORE_MAP_MAX: {
      g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
      InspScoreResult r;
      float map_max = 0.0f;

      g_assert_true(isnan(det));
      g_assert_true(
          insp_model_score(m, s, bad->data, bad->width, bad->height, bad->stride, &r, NULL));
      for (int i = 0; i < r.map_width * r.map_height; i++)
        map_max = MAX(map_max, r.map[i]);
      /* the map is normalised by the pixel threshold, the score by the image one */
      g_assert_cmpfloat_with_epsilon(map_max * info.pixel_threshold / 0.5, model_raw,
                                     1e-5 * model_raw);
      g_assert_cmpfloat(model_raw, <, hi); /* blurred: below the highest patch */
      break;
    }
    default:
      g_assert_cmpfloat(det, ==, model_raw);
      g_assert_cmpfloat(model_raw, <, hi);
      g_assert_cmpfloat(model_raw, >=, hi * (1.0f - 1.0f / (float)cases[c].stored_k) * 0.99999f);
      break;
    }
    raw[c] = model_raw;

    g_assert_true(insp_model_save(m, path, &error));
    g_assert_no_error(error);
    loaded = insp_model_load(path, &error);
    g_assert_no_error(error);
    insp_model_get_info(loaded, &linfo);
    g_assert_cmpint(linfo.image_score, ==, cases[c].stored);
    g_assert_cmpint(linfo.neighbours, ==, cases[c].stored_k);
    {
      g_autoptr(InspModelScratch) ls = insp_model_scratch_new(loaded, NULL);

      score_of(loaded, ls, bad, &lraw);
      g_assert_cmpfloat(lraw, ==, model_raw);
    }
    g_test_message("image score %s k %d: %.6g (highest patch %.6g)",
                   insp_image_score_rule_to_string(linfo.image_score), linfo.neighbours, model_raw,
                   hi);

    /* Refusals of the file's values, naming the key. */
    {
      g_autofree char *data = NULL;
      gsize len = 0;

      g_assert_true(g_file_get_contents(path, &data, &len, NULL));
      if (c == 0) {
        /* a file from before the rules: no image_score, k = 9: today's */
        g_autoptr(InspModel) old = NULL;
        InspModelInfo oinfo;

        write_patched(bad_path, data, len, "\"patchcore.image_score\"",
                      "\"patchcore.xmage_score\"");
        old = insp_model_load(bad_path, &error);
        g_assert_no_error(error);
        insp_model_get_info(old, &oinfo);
        g_assert_cmpint(oinfo.image_score, ==, INSP_IMAGE_SCORE_REWEIGHTED);
        g_assert_cmpint(oinfo.neighbours, ==, 9);
        {
          g_autoptr(InspModelScratch) os = insp_model_scratch_new(old, NULL);

          score_of(old, os, bad, &lraw);
          g_assert_cmpfloat(lraw, ==, model_raw);
        }
        write_patched(bad_path, data, len, "\"patchcore.num_neighbors\":\"9\"",
                      "\"patchcore.num_neighbors\":\"1\"");
        expect_refusal(bad_path, "'patchcore.num_neighbors' = 1 does not go with");
        write_patched(bad_path, data, len, "\"patchcore.image_score\":\"reweighted\"",
                      "\"patchcore.image_score\":\"reweightex\"");
        expect_refusal(bad_path, "'patchcore.image_score' = 'reweightex' is not reweighted, max");
      } else if (cases[c].k == 27) {
        write_patched(bad_path, data, len, "\"patchcore.num_neighbors\":\"27\"",
                      "\"patchcore.num_neighbors\":\"65\"");
        expect_refusal(bad_path, "'patchcore.num_neighbors' = '65' is not an integer in [1, 64]");
      } else if (cases[c].stored == INSP_IMAGE_SCORE_MAX) {
        /* num_neighbors is 1 for a rule that does not reweight: a build
         * from before the rules, which takes only 9, refuses the file */
        write_patched(bad_path, data, len, "\"patchcore.num_neighbors\":\"1\"",
                      "\"patchcore.num_neighbors\":\"9\"");
        expect_refusal(bad_path, "= 9 does not go with the image score 'max'");
      }
    }
    test_tmp_remove(path);
    g_free(path);
    path = test_tmp_path("model.safetensors");
    g_free(bad_path);
    bad_path = g_strconcat(path, ".bad", NULL);
  }
  /* k changes the reweighted score, towards the highest patch score */
  g_assert_cmpfloat(raw[1], <, raw[2]);
  g_assert_cmpfloat(raw[2], <, raw[0]);
  g_assert_cmpfloat(raw[0], <, raw[3]);
  g_assert_cmpfloat(raw[3], <, raw[4]);
  g_assert_cmpfloat(raw[4], ==, s_star);

  /* Bad training options, with the reason. */
  {
    const struct {
      InspDetectorKind kind;
      InspImageScoreRule rule;
      int k;
      const char *needle;
    } bad_opts[] = {
        {INSP_DETECTOR_PATCHCORE, INSP_IMAGE_SCORE_REWEIGHTED, 1,
         "1 neighbours for the reweighting is not in [2, 64]"},
        {INSP_DETECTOR_PATCHCORE, INSP_IMAGE_SCORE_DEFAULT, 65,
         "65 neighbours for the reweighting is not in [2, 64]"},
        {INSP_DETECTOR_PATCHCORE, INSP_IMAGE_SCORE_MAX, 3,
         "the image score 'max' does not reweight"},
        {INSP_DETECTOR_PATCHCORE, (InspImageScoreRule)17, 0,
         "image score rule 17 is not reweighted, max or map-max"},
        {INSP_DETECTOR_PADIM, INSP_IMAGE_SCORE_MAX, 0,
         "PaDiM's image score is the maximum of its blurred map"},
        {INSP_DETECTOR_PADIM, INSP_IMAGE_SCORE_DEFAULT, 3,
         "PaDiM's image score is the maximum of its blurred map"},
    };

    for (gsize i = 0; i < G_N_ELEMENTS(bad_opts); i++) {
      InspTrainOptions opt;
      InspModel *none;

      insp_train_options_init(&opt);
      opt.input_size = SIZE;
      opt.detector = bad_opts[i].kind;
      opt.padim_channels = bad_opts[i].kind == INSP_DETECTOR_PADIM ? 16 : 0;
      opt.image_score = bad_opts[i].rule;
      opt.neighbours = bad_opts[i].k;
      none = insp_model_train(&opt, 20, source_good, NULL, NULL, NULL, &error);
      g_assert_null(none);
      g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN);
      if (strstr(error->message, bad_opts[i].needle) == NULL)
        g_error("'%s' does not say '%s'", error->message, bad_opts[i].needle);
      g_clear_error(&error);
    }
  }
  /* the names, both ways */
  for (InspImageScoreRule r = INSP_IMAGE_SCORE_REWEIGHTED; r <= INSP_IMAGE_SCORE_MAP_MAX; r++) {
    InspImageScoreRule back = INSP_IMAGE_SCORE_DEFAULT;

    g_assert_true(insp_image_score_rule_from_string(insp_image_score_rule_to_string(r), &back));
    g_assert_cmpint(back, ==, r);
  }
  g_assert_null(insp_image_score_rule_to_string(INSP_IMAGE_SCORE_DEFAULT));
  g_assert_false(insp_image_score_rule_from_string("Max", NULL));
  g_assert_false(insp_image_score_rule_from_string(NULL, NULL));
  test_tmp_remove(path);
}

/* The final PatchCore bank is the coreset of all images in source order,
 * whichever images the calibration held out: the same rows a single fit
 * over the folder selects. */
static void
test_final_bank(void)
{
  g_autoptr(InspModel) m = train(INSP_DETECTOR_PATCHCORE, 0.25, 20, 3);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  gsize per = (gsize)m->n_patches * m->dim, k = 0;
  g_autofree float *rows = g_new(float, per * 20);
  g_autofree gsize *sel = NULL;

  for (int i = 0; i < 20; i++) {
    g_autoptr(InspImage) img = source_good(i, NULL, NULL);
    double t1, t2;

    insp_image_preprocess(img->data, img->width, img->height, img->stride, m->input_size,
                          m->input_size, 1.0f, m->mean, m->std, insp_model_scratch_get_input(s));
    insp_model_extract(m, s, insp_model_scratch_get_input(s), rows + i * per, &t1, &t2);
  }
  sel = insp_patchcore_coreset(rows, 20 * (gsize)m->n_patches, m->dim, 0.25, 3, &k);
  int bank_rows = 0;
  const float *bank = insp_patchcore_get_bank(m, &bank_rows);
  g_assert_cmpint((int)k, ==, bank_rows);
  for (gsize r = 0; r < k; r++)
    g_assert_cmpmem(bank + r * m->dim, sizeof(float) * m->dim, rows + sel[r] * m->dim,
                    sizeof(float) * m->dim);
}

static void
test_padim_inverse(void)
{
  const int n = 7;
  double a[49], inv[49], work[49], b[49];
  guint64 st = 5;

  /* A = B B^T + 0.5 I */
  for (int i = 0; i < n * n; i++)
    b[i] = rng_unit(&st) * 2 - 1;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double s = i == j ? 0.5 : 0.0;

      for (int k = 0; k < n; k++)
        s += b[i * n + k] * b[j * n + k];
      a[i * n + j] = s;
    }
  g_assert_true(insp_padim_invert_spd(a, n, inv, work));
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;

      for (int k = 0; k < n; k++)
        s += a[i * n + k] * inv[k * n + j];
      g_assert_cmpfloat_with_epsilon(s, i == j ? 1.0 : 0.0, 1e-10);
      g_assert_cmpfloat_with_epsilon(inv[i * n + j], inv[j * n + i], 1e-12);
    }
  /* not positive definite */
  a[0] = -1.0;
  g_assert_false(insp_padim_invert_spd(a, n, inv, work));
}

static void
test_padim_fit(void)
{
  const int p = 3, d = 4, n = 6;
  float feats[6][12];
  g_autoptr(InspPadimAccum) acc = insp_padim_accum_new(p, d);
  float mean[12], inv_cov[48], work[8], dist[3];
  guint64 st = 11;

  for (int i = 0; i < n; i++)
    for (int j = 0; j < p * d; j++)
      feats[i][j] = (float)(rng_unit(&st) * 4 - 2 + j);
  for (int i = 0; i < n; i++)
    insp_padim_accum_add(acc, feats[i]);
  g_assert_cmpint(insp_padim_accum_get_count(acc), ==, n);
  g_assert_true(insp_padim_accum_finish(acc, 0.01, mean, inv_cov));
  for (int q = 0; q < p; q++) {
    double mu[4] = {0}, cov[16] = {0}, inv[16], w[16];

    for (int i = 0; i < n; i++)
      for (int j = 0; j < d; j++)
        mu[j] += feats[i][q * d + j] / n;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < d; j++)
        for (int k = 0; k < d; k++)
          cov[j * d + k] += (feats[i][q * d + j] - mu[j]) * (feats[i][q * d + k] - mu[k]) / (n - 1);
    for (int j = 0; j < d; j++)
      cov[j * d + j] += 0.01;
    g_assert_true(insp_padim_invert_spd(cov, d, inv, w));
    for (int j = 0; j < d; j++)
      g_assert_cmpfloat_with_epsilon(mean[q * d + j], mu[j], 1e-5);
    for (int j = 0; j < d * d; j++)
      g_assert_cmpfloat_with_epsilon(inv_cov[q * d * d + j], inv[j], 1e-3 * MAX(1.0, fabs(inv[j])));
  }
  /* the mean scores 0; a point off the mean scores its Mahalanobis distance */
  insp_padim_score(mean, p, d, mean, inv_cov, work, dist);
  for (int q = 0; q < p; q++)
    g_assert_cmpfloat_with_epsilon(dist[q], 0.0, 1e-4);
}

/* MT19937 against the published outputs of the reference generator
 * (init_genrand), for the paper's default seed 5489 and for seed 0. */
static void
test_mt19937(void)
{
  static const guint32 want5489[] = {3499211612u, 581869302u, 3890346734u};
  static const guint32 want0[] = {2357136044u, 2546248239u, 3071714933u, 3626093760u};
  InspMt19937 mt;
  guint32 last = 0;

  insp_mt19937_init(&mt, 5489);
  for (gsize i = 0; i < G_N_ELEMENTS(want5489); i++)
    g_assert_cmpuint(insp_mt19937_next(&mt), ==, want5489[i]);
  insp_mt19937_init(&mt, 0);
  for (gsize i = 0; i < G_N_ELEMENTS(want0); i++)
    g_assert_cmpuint(insp_mt19937_next(&mt), ==, want0[i]);
  /* past the first regeneration (624 words) the stream goes on, and a
   * reseed restarts it */
  for (int i = 0; i < 2000; i++)
    last = insp_mt19937_next(&mt);
  insp_mt19937_init(&mt, 0);
  g_assert_cmpuint(insp_mt19937_next(&mt), ==, want0[0]);
  g_assert_cmpuint(last, !=, 0);
}

/* torch.randperm's Fisher-Yates for n = 5, seed 0, derived by hand from the
 * draws above: 2357136044 % 5 = 4 swaps r0,r4 -> 4 1 2 3 0; 2546248239 % 4
 * = 3 swaps r1,r4 -> 4 0 2 3 1; 3071714933 % 3 = 2 swaps r2,r4 -> 4 0 1 3 2;
 * 3626093760 % 2 = 0 keeps r3. */
static void
test_randperm(void)
{
  static const int want[] = {4, 0, 1, 3, 2};
  int perm[5], seen[128] = {0}, big[128];

  insp_padim_randperm(5, 0, perm);
  g_assert_cmpmem(perm, sizeof perm, want, sizeof want);
  /* only the low 32 bits of the seed count, as in torch's mt19937 */
  insp_padim_randperm(5, G_GUINT64_CONSTANT(1) << 32, perm);
  g_assert_cmpmem(perm, sizeof perm, want, sizeof want);
  insp_padim_randperm(128, 0, big);
  for (int i = 0; i < 128; i++) {
    g_assert_cmpint(big[i], >=, 0);
    g_assert_cmpint(big[i], <, 128);
    g_assert_cmpint(seen[big[i]]++, ==, 0);
  }
}

static void
test_channels(void)
{
  int a[100], b[100], c[100], perm[128];

  insp_padim_random_channels(128, 100, 0, a);
  insp_padim_random_channels(128, 100, 0, b);
  insp_padim_random_channels(128, 100, 1, c);
  g_assert_cmpmem(a, sizeof a, b, sizeof b);
  g_assert_true(memcmp(a, c, sizeof a) != 0);
  for (int i = 1; i < 100; i++)
    g_assert_cmpint(a[i], >, a[i - 1]);
  g_assert_cmpint(a[0], >=, 0);
  g_assert_cmpint(a[99], <, 128);
  /* the 28 channels seed 0 leaves out of 128: with these, padim-100 gives
   * BENCHMARKS.md's PyTorch numbers within 0.0001 on all three sets,
   * so this is torch.randperm(128, generator=manual_seed(0))[100:], sorted */
  {
    static const int dropped[] = {5,  7,  9,  16, 24, 28, 34, 42, 43, 49,  50,  60,  62,  80,
                                  82, 83, 85, 86, 88, 89, 90, 91, 93, 100, 113, 117, 122, 124};
    int j = 0;

    for (int ch = 0, i = 0; ch < 128; ch++) {
      if (j < (int)G_N_ELEMENTS(dropped) && dropped[j] == ch)
        j++;
      else
        g_assert_cmpint(a[i++], ==, ch);
    }
    g_assert_cmpint(j, ==, G_N_ELEMENTS(dropped));
  }
  /* the subset is the sorted first 100 of the permutation */
  insp_padim_randperm(128, 0, perm);
  for (int i = 0; i < 100; i++) {
    gboolean found = FALSE;

    for (int j = 0; j < 100; j++)
      found = found || a[j] == perm[i];
    g_assert_true(found);
  }
}

/* Feature layout: PatchCore rows are position-major; the reduction averages
 * channel windows; PaDiM picks the subset. */
static void
test_features(void)
{
  float fine[2 * 2 * 2], coarse[2 * 1 * 1], out[4 * 4];
  InspFeatureSpec spec = {
      .patchcore = FALSE, .fine_c = 2, .coarse_c = 2, .h = 2, .w = 2, .ch = 1, .cw = 1};
  float scratch[64];
  int ch[2] = {1, 2};

  for (int i = 0; i < 8; i++)
    fine[i] = (float)i;
  coarse[0] = 10.0f;
  coarse[1] = 20.0f;
  g_assert_cmpuint(insp_features_scratch_size(&spec), <=, G_N_ELEMENTS(scratch));
  insp_features_extract(&spec, fine, coarse, scratch, out);
  /* position 1 (y 0, x 1): fine channels 1 and 5, coarse 10 and 20 */
  g_assert_cmpfloat(out[4 + 0], ==, 1.0f);
  g_assert_cmpfloat(out[4 + 1], ==, 5.0f);
  g_assert_cmpfloat(out[4 + 2], ==, 10.0f);
  g_assert_cmpfloat(out[4 + 3], ==, 20.0f);
  spec.n_channels = 2;
  spec.channels = ch;
  g_assert_cmpint(insp_features_get_dim(&spec), ==, 2);
  insp_features_extract(&spec, fine, coarse, scratch, out);
  g_assert_cmpfloat(out[2 * 3 + 0], ==, 7.0f);
  g_assert_cmpfloat(out[2 * 3 + 1], ==, 10.0f);
  /* PatchCore with reduction to 2 dims: constant maps stay constant after
   * the 3x3 average only in the centre, so use a 1x1 grid-free check: the
   * reduction averages channel pairs. */
  spec.patchcore = TRUE;
  spec.n_channels = 0;
  spec.reduce_dim = 2;
  g_assert_cmpint(insp_features_get_dim(&spec), ==, 2);
  insp_features_extract(&spec, fine, coarse, scratch, out);
  /* 3x3 avg with pad (count 9) of a 2x2 plane: every cell = sum/9 */
  g_assert_cmpfloat_with_epsilon(
      out[0], (0 + 1 + 2 + 3) / 9.0f * 0.5f + (4 + 5 + 6 + 7) / 9.0f * 0.5f, 1e-5);
  g_assert_cmpfloat_with_epsilon(out[1], (10.0f / 9.0f + 20.0f / 9.0f) * 0.5f, 1e-5);
}

/* ---- approximate nearest neighbour (insp-nn-index.c) ---- */

/* Squared distance in double. */
static double
ref_d2(const float *a, const float *b, int d)
{
  double s = 0;

  for (int k = 0; k < d; k++)
    s += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
  return s;
}

/* Relative tolerance of a float distance |q|^2 + |b|^2 - 2 q.b against the
 * double one, as the exact kernel's test (test-ops-map.c) allows. */
#define TOL_NN_INDEX 1e-5

static void
test_nn_index(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(11);
  const int d = 24, nb = 1500, nq = 300, n_blobs = 30;
  g_autofree float *bank = g_new(float, (gsize)nb *d);
  g_autofree float *q = g_new(float, (gsize)nq *d);
  g_autofree float *centre = g_new(float, (gsize)n_blobs *d);
  g_autofree float *dist = g_new(float, nq);
  g_autofree int *arg = g_new(int, nq);
  /* lists (more than rows, one, some), probes: all cells, then few */
  const int shapes[][2] = {{37, 37}, {37, 3}, {1, 1}, {4000, 8}, {200, 64}};

  for (int i = 0; i < n_blobs * d; i++)
    centre[i] = (float)g_rand_double_range(rng, -1, 1);
  for (int j = 0; j < nb; j++)
    for (int k = 0; k < d; k++)
      bank[j * d + k] = centre[(j % n_blobs) * d + k] + (float)g_rand_double_range(rng, -1, 1);
  /* two exact duplicates: ties go to the lower index */
  memcpy(bank + 700 * d, bank + 200 * d, sizeof(float) * d);
  for (int i = 0; i < nq; i++)
    for (int k = 0; k < d; k++)
      q[i * d + k] = centre[(i * 7 % n_blobs) * d + k] + (float)g_rand_double_range(rng, -1.2, 1.2);
  memcpy(q, bank + 700 * d, sizeof(float) * d);

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++) {
    g_autoptr(InspNnIndex) ix = insp_nn_index_new(bank, nb, d, shapes[s][0], 3);
    int n_lists = insp_nn_index_get_n_lists(ix), np = MIN(shapes[s][1], n_lists), hits = 0;
    g_autofree float *scratch = g_new(float, insp_nn_index_scratch_size(ix, nq, np));

    g_assert_cmpint(n_lists, ==, MIN(shapes[s][0], nb));
    insp_nn_index_search(ix, q, nq, np, scratch, dist, arg);
    for (int i = 0; i < nq; i++) {
      double best = INFINITY, got, qn = ref_d2(q + i * d, bank, 0), tol;
      int besti = -1;

      for (int j = 0; j < nb; j++) {
        double v = ref_d2(q + i * d, bank + (gsize)j * d, d);

        if (v < best) {
          best = v;
          besti = j;
        }
      }
      for (int k = 0; k < d; k++)
        qn += (double)q[i * d + k] * q[i * d + k];
      tol = TOL_NN_INDEX * (qn + 100.0 * d);
      g_assert_cmpint(arg[i], >=, 0);
      g_assert_cmpint(arg[i], <, nb);
      /* a real row's distance, never below the exact nearest */
      got = ref_d2(q + i * d, bank + (gsize)arg[i] * d, d);
      if (!(fabs(dist[i] - got) <= tol && dist[i] >= best - tol))
        g_error("nn-index %d lists %d probes: query %d dist %.7g, its row %.7g, nearest %.7g",
                n_lists, np, i, (double)dist[i], got, best);
      hits += arg[i] == besti;
      if (np == n_lists) /* every cell probed: the exact search */
        g_assert_cmpint(arg[i], ==, besti);
    }
    g_assert_cmpint(arg[0], ==, 200);
    g_test_message("nn-index: %d lists, %d probes: %d of %d exact", n_lists, np, hits, nq);
    /* overlapping blobs: three probes already find most neighbours */
    if (np >= 3)
      g_assert_cmpint(hits, >=, nq * 9 / 10);
    insp_nn_index_search(ix, q, 0, np, scratch, dist, arg);
  }
}

/* The index's choice of cells against a sort: the np smallest by (value,
 * index), for every np, lengths around the 16-lane blocks, values drawn from
 * few levels (many ties) and from many, infinities, and a run of equal
 * values longer than the candidate list. */
typedef struct {
  float v;
  int i;
} Ranked;

static int
cmp_ranked(const void *a, const void *b)
{
  const Ranked *x = a, *y = b;

  if (x->v != y->v)
    return x->v < y->v ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

static void
test_nn_index_smallest(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(5);
  const int lengths[] = {1, 7, 15, 16, 17, 31, 64, 65, 166, 300, 1000};
  /* queries and row lengths: whole 16-lane steps, a short last step
   * (padding read), a row length that is not one (the scalar path) */
  const int shapes[][2] = {{1, 16}, {37, 48}, {37, 37}};
  g_autofree float *v = g_new(float, 1000 * 48);
  g_autofree int *out = g_new(int, 37 * INSP_NN_INDEX_MAX_PROBE);
  Ranked r[1000];
  int checked = 0;

  for (gsize t = 0; t < G_N_ELEMENTS(lengths); t++)
    for (gsize sh = 0; sh < G_N_ELEMENTS(shapes); sh++)
      for (int kind = 0; kind < 4; kind++)
        for (int np = 1; np <= MIN(lengths[t], INSP_NN_INDEX_MAX_PROBE); np++) {
          int n = lengths[t], nq = shapes[sh][0], ld = shapes[sh][1];

          if (np > 20 && np % 8 != 0)
            continue;
          for (int l = 0; l < n; l++)
            for (int i = 0; i < ld; i++) {
              float x;

              switch (kind) {
              case 0:
                x = (float)g_rand_double_range(rng, -50, 50);
                break;
              case 1:
                x = (float)g_rand_int_range(rng, 0, 6); /* ties */
                break;
              case 2:
                x = g_rand_int_range(rng, 0, 4) == 0 ? INFINITY : (float)g_rand_double(rng);
                break;
              default:
                x = (l + i) % 97 == 3 ? -1.0f : 2.0f; /* long runs of one value */
              }
              v[(gsize)l * ld + i] = i < nq ? x : NAN; /* padding: never taken */
            }
          insp_nn_index_smallest(v, n, nq, ld, np, out);
          for (int i = 0; i < nq; i++) {
            for (int l = 0; l < n; l++)
              r[l] = (Ranked){v[(gsize)l * ld + i], l};
            qsort(r, n, sizeof *r, cmp_ranked);
            for (int j = 0; j < np; j++)
              if (out[i * np + j] != r[j].i)
                g_error("smallest: n %d nq %d ld %d np %d kind %d: query %d place %d is %d, the "
                        "sort's %d (%g)",
                        n, nq, ld, np, kind, i, j, out[i * np + j], r[j].i, (double)r[j].v);
          }
          checked++;
        }
  g_test_message("smallest: %d cases", checked);
}

/* Each screen this CPU has (bfloat16 on AMX, int8 on AVX512-VNNI) with
 * its fp32 re-rank finds the nearest row of the double search (or one whose
 * distance differs by rounding only), with the fp32 distance; ties and
 * rows too close to call (every row the same) go to the lowest index
 * through the whole-bank fallback. Shapes not multiples of the tiles
 * (queries, rows), three widths, signed clustered data, a row of zeros
 * and one of a single large value (int8: scales of 0 and of one element). */
static void nn_screen_check(InspNnScreenKind kind);

static void
test_nn_screen(void)
{
  const InspNnScreenKind kinds[] = {INSP_NN_SCREEN_BF16_AMX, INSP_NN_SCREEN_INT8_VNNI};
  int n_kinds = 0;

  for (gsize k = 0; k < G_N_ELEMENTS(kinds); k++) {
    if (!insp_nn_screen_kind_available(kinds[k])) {
      g_test_message("nn-screen: no %s on this CPU", insp_nn_screen_kind_describe(kinds[k]));
      continue;
    }
    n_kinds++;
    nn_screen_check(kinds[k]);
  }
  if (n_kinds == 0)
    g_test_skip("neither AMX-BF16 nor AVX512-VNNI on this CPU: the screen is not used here");
}

static void
nn_screen_check(InspNnScreenKind kind)
{
  const int shapes[][3] = {{128, 1000, 301}, {32, 77, 5}, {64, 33, 64}, {128, 300, 40}};

  for (gsize s = 0; s < G_N_ELEMENTS(shapes); s++) {
    const int d = shapes[s][0], nb = shapes[s][1], nq = shapes[s][2], n_blobs = 20;
    g_autoptr(GRand) rng = g_rand_new_with_seed(5 + (guint32)s);
    g_autofree float *bank = g_new(float, (gsize)nb *d);
    g_autofree float *q = g_new(float, (gsize)nq *d);
    g_autofree float *centre = g_new(float, (gsize)n_blobs *d);
    g_autofree float *dist = g_new(float, nq);
    g_autofree int *arg = g_new(int, nq);
    g_autoptr(InspNnScreen) sc = NULL;
    g_autofree guint8 *scratch = NULL;
    gint64 reranked = 0;
    gboolean same = s == 3; /* every row the same: all tie */

    for (int i = 0; i < n_blobs * d; i++)
      centre[i] = (float)g_rand_double_range(rng, -3, 3);
    for (int j = 0; j < nb; j++)
      for (int k = 0; k < d; k++)
        bank[j * d + k] =
            same ? centre[k]
                 : centre[(j % n_blobs) * d + k] + (float)g_rand_double_range(rng, -0.5, 0.5);
    if (!same) {
      memcpy(bank + (nb - 1) * d, bank + 3 * d, sizeof(float) * d); /* a duplicate */
      memset(bank + (nb - 2) * d, 0, sizeof(float) * d);            /* zeros */
      memset(bank + (nb - 3) * d, 0, sizeof(float) * d);
      bank[(nb - 3) * d + 1] = 40.0f; /* one large value */
    }
    for (int i = 0; i < nq; i++)
      for (int k = 0; k < d; k++)
        q[i * d + k] =
            centre[(i * 7 % n_blobs) * d + k] + (float)g_rand_double_range(rng, -0.6, 0.6);
    memcpy(q, bank + 3 * d, sizeof(float) * d); /* on a row: distance 0, row 3 */

    sc = insp_nn_screen_new_kind(bank, nb, d, kind);
    g_assert_nonnull(sc);
    scratch = g_malloc(insp_nn_screen_scratch_size(sc));
    insp_nn_screen_search(sc, q, nq, scratch, dist, arg, &reranked);
    for (int i = 0; i < nq; i++) {
      double best = INFINITY, got, qn = 0, tol;

      for (int j = 0; j < nb; j++)
        best = MIN(best, ref_d2(q + i * d, bank + (gsize)j * d, d));
      for (int k = 0; k < d; k++)
        qn += (double)q[i * d + k] * q[i * d + k];
      tol = TOL_NN_INDEX * (qn + 10.0 * d);
      g_assert_cmpint(arg[i], >=, 0);
      g_assert_cmpint(arg[i], <, nb);
      got = ref_d2(q + i * d, bank + (gsize)arg[i] * d, d);
      if (!(fabs(got - best) <= tol && fabs(dist[i] - best) <= tol))
        g_error("nn-screen (%s) d %d: query %d dist %.7g, its row %.7g, nearest %.7g",
                insp_nn_screen_kind_describe(kind), d, i, (double)dist[i], got, best);
      if (same)
        g_assert_cmpint(arg[i], ==, 0);
    }
    g_assert_cmpint(arg[0], ==, same ? 0 : 3);
    g_assert_cmpfloat(dist[0], <=, TOL_NN_INDEX * 10.0 * d);
    g_test_message("nn-screen (%s) d %d, %d rows, %d queries: %.1f rows re-ranked per query",
                   insp_nn_screen_kind_describe(kind), d, nb, nq, (double)reranked / nq);
    /* the screen rules out most rows (all tie when every row is the same) */
    if (!same)
      g_assert_cmpint(reranked, <, (gint64)nq * nb / 4);
    insp_nn_screen_search(sc, q, 0, scratch, dist, arg, NULL);
  }
}

/* The approximate search with its exact re-rank scores images exactly as
 * the exact search (the image score is decided by the re-ranked patches),
 * and no patch score falls below the exact one. */
static void
test_patchcore_approx(void)
{
  g_autoptr(InspModel) m = train(INSP_DETECTOR_PATCHCORE, 0.25, 40, 1);
  g_autofree char *path = test_tmp_path("approx.safetensors");
  g_autoptr(InspModel) ex = NULL, ap = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree float *feats = NULL, *ps_ex = NULL, *ps_ap = NULL;
  g_autofree void *sc_ex = NULL, *sc_ap = NULL;
  g_autoptr(InspModelScratch) s = NULL;
  int n_differ = 0, n_total = 0;
  InspNnSearch nn;

  g_assert_true(insp_nn_search_from_string("exact", &nn));
  g_assert_cmpint(nn, ==, INSP_NN_SEARCH_EXACT);
  g_assert_true(insp_nn_search_from_string("approx", &nn));
  g_assert_cmpint(nn, ==, INSP_NN_SEARCH_APPROX);
  g_assert_true(insp_nn_search_from_string("auto", &nn));
  g_assert_cmpint(nn, ==, INSP_NN_SEARCH_AUTO);
  g_assert_false(insp_nn_search_from_string("Exact", &nn));
  g_assert_false(insp_nn_search_from_string(NULL, &nn));
  g_assert_true(insp_model_save(m, path, &error));
  ex = insp_model_load(path, &error);
  g_assert_no_error(error);
  insp_model_set_nn_search(ex, INSP_NN_SEARCH_EXACT);
  /* a bank of 1440 rows: exact by default, the index only when asked (40
   * cells, 2 probed, so that many patches miss their nearest row) */
  g_setenv("INSP_NN_LISTS", "40", TRUE);
  g_setenv("INSP_NN_PROBE", "2", TRUE);
  ap = insp_model_load(path, &error);
  g_assert_no_error(error);
  insp_model_set_nn_search(ap, INSP_NN_SEARCH_APPROX);
  g_unsetenv("INSP_NN_LISTS");
  g_unsetenv("INSP_NN_PROBE");
  s = insp_model_scratch_new(ex, &error);
  g_assert_no_error(error);
  feats = g_new(float, (gsize)ex->n_patches * ex->dim);
  ps_ex = g_new(float, ex->n_patches);
  ps_ap = g_new(float, ex->n_patches);
  sc_ex = g_malloc(ex->klass->scratch_size(ex));
  sc_ap = g_malloc(ap->klass->scratch_size(ap));
  for (int i = 0; i < 12; i++) {
    g_autoptr(InspImage) img = make_part(3000 + i, i % 2 == 1);
    float *input = insp_model_scratch_get_input(s), se, sa;
    double a, b;

    insp_image_preprocess(img->data, img->width, img->height, img->stride, ex->input_size,
                          ex->input_size, 1.0f, ex->mean, ex->std, input);
    insp_model_extract(ex, s, input, feats, &a, &b);
    se = ex->klass->score(ex, sc_ex, feats, ps_ex);
    sa = ap->klass->score(ap, sc_ap, feats, ps_ap);
    g_assert_cmpfloat(sa, ==, se);
    for (int p = 0; p < ex->n_patches; p++) {
      g_assert_cmpfloat(ps_ap[p], >=, ps_ex[p] * (1.0f - 1e-5f));
      n_differ += ps_ap[p] != ps_ex[p];
      n_total++;
    }
  }
  g_test_message("patchcore approx: %d of %d patch scores differ", n_differ, n_total);
  test_tmp_remove(path);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/detector/patchcore", test_patchcore);
  g_test_add_func("/detector/padim", test_padim);
  g_test_add_func("/detector/map", test_map);
  g_test_add_func("/detector/bad-input", test_bad_input);
  g_test_add_func("/detector/too-few", test_too_few);
  g_test_add_func("/detector/refusals", test_refusals);
  g_test_add_func("/detector/coreset", test_coreset);
  g_test_add_func("/detector/coreset-wide", test_coreset_wide);
  g_test_add_func("/detector/sparse-projection", test_sparse_projection);
  g_test_add_func("/detector/train-options", test_train_options);
  g_test_add_func("/detector/image-score-kernel", test_image_score_kernel);
  g_test_add_func("/detector/image-score", test_image_score);
  g_test_add_func("/detector/final-bank", test_final_bank);
  g_test_add_func("/detector/padim-inverse", test_padim_inverse);
  g_test_add_func("/detector/padim-fit", test_padim_fit);
  g_test_add_func("/detector/mt19937", test_mt19937);
  g_test_add_func("/detector/randperm", test_randperm);
  g_test_add_func("/detector/channels", test_channels);
  g_test_add_func("/detector/features", test_features);
  g_test_add_func("/detector/nn-index", test_nn_index);
  g_test_add_func("/detector/nn-index-smallest", test_nn_index_smallest);
  g_test_add_func("/detector/nn-screen", test_nn_screen);
  g_test_add_func("/detector/patchcore-approx", test_patchcore_approx);
  return g_test_run();
}
