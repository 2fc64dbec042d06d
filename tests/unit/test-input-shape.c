/* The model's input shape (native aspect): the shape rule, the aspect check,
 * PatchCore and PaDiM trained on generated strips three times wider than
 * high (builtin backbone, longer side 96): the input and the map keep the
 * strips' aspect, a defect scores above good parts, the file round trip keeps
 * the shape and the scores, a square model is still written as format
 * version 1, images of another aspect are counted at training and stretched
 * at scoring, and a file whose shape metadata is missing or inconsistent is
 * refused naming the key. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "insp-detector-private.h"
#include "insp-image.h"
#include "insp-model.h"
#include "test-tmp.h"

#define SIZE 96
#define STRIP_W 120
#define STRIP_H 40

/* A @w x @h RGB strip: a bar with slanted stripes and noise across the
 * middle, on a dark background; @defect adds a dark spot on the bar. */
static InspImage *
make_strip(guint64 seed, int w, int h, gboolean defect)
{
  InspImage *img = insp_image_new(w, h, 3);
  guint64 st = seed * 7919 + 1;
  double phase = insp_detector_rand_uniform(&st);
  double cx = w * (0.2 + 0.6 * insp_detector_rand_uniform(&st)), cy = h * 0.5;

  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      double fy = (y + 0.5) / h, v = 30.0;
      guint8 *p = img->data + (gsize)y * img->stride + 3 * x;

      if (fy > 0.2 && fy < 0.8)
        v = 150.0 + 50.0 * sin((x + 0.6 * y) * 0.7 + phase);
      v += (insp_detector_rand_uniform(&st) - 0.5) * 16.0;
      if (defect && hypot(x - cx, y - cy) < h * 0.12)
        v = 10.0;
      v = CLAMP(v, 0.0, 255.0);
      p[0] = (guint8)v;
      p[1] = (guint8)(v * 0.9);
      p[2] = (guint8)(v * 0.8);
    }
  return img;
}

/* Good strips; every image whose index is in @user_data's odd list (an
 * int array ending in -1) is twice as high: another aspect. */
static InspImage *
source_strips(int index, gpointer user_data, GError **error)
{
  const int *odd = user_data;

  for (int i = 0; odd != NULL && odd[i] >= 0; i++)
    if (odd[i] == index)
      return make_strip((guint64)index + 100, STRIP_W, 2 * STRIP_H, FALSE);
  return make_strip((guint64)index + 100, STRIP_W, STRIP_H, FALSE);
}

static InspModel *
train_strips(InspDetectorKind kind, InspTrainAspect aspect, int n, const int *odd)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  InspModel *m;

  insp_train_options_init(&opt);
  opt.backbone = "builtin";
  opt.detector = kind;
  opt.coreset_fraction = 0.25;
  opt.input_size = SIZE;
  opt.aspect = aspect;
  opt.padim_channels = kind == INSP_DETECTOR_PADIM ? 16 : 0;
  m = insp_model_train(&opt, n, source_strips, (gpointer)odd, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_nonnull(m);
  return m;
}

static void
test_rule(void)
{
  static const struct {
    int size;
    double aspect;
    int w, h;
  } cases[] = {
      {320, 1.0, 320, 320},                                 /* square stays square */
      {320, 0.4, 128, 320},                                 /* KolektorSDD, 500x1250 */
      {320, 127.0 / 320, 128, 320},                         /* its images here, 127x320 */
      {320, 4.0 / 3, 320, 240},                             /* 4:3 */
      {320, 16.0 / 9, 320, 184},                            /* 16:9: 180 rounds to 184 */
      {320, 2448.0 / 2048, 320, 264},                       /* 267.8 rounds to 264 */
      {320, 0.05, 32, 320},                                 /* at least 32 */
      {320, 40.0, 320, 32},           {100, 1.0, 100, 100}, /* never longer than the size (104) */
      {100, 0.99, 96, 100},           {504, 0.4, 200, 504}, /* KolektorSDD at 320 x 320's pixels */
      {320, 0.0, 320, 320},                                 /* no aspect: square */
      {320, NAN, 320, 320},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    int w = 0, h = 0;

    insp_model_input_shape_for_aspect(cases[i].size, cases[i].aspect, &w, &h);
    g_test_message("%d at %g: %dx%d", cases[i].size, cases[i].aspect, w, h);
    g_assert_cmpint(w, ==, cases[i].w);
    g_assert_cmpint(h, ==, cases[i].h);
  }
}

static float
score(InspModel *m, InspModelScratch *s, const InspImage *img, InspScoreResult *r)
{
  g_autoptr(GError) error = NULL;

  g_assert_true(insp_model_score(m, s, img->data, img->width, img->height, img->stride, r, &error));
  g_assert_no_error(error);
  return r->score;
}

static gboolean
file_has(const char *path, const char *needle)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  return memmem(data, MIN(len, 1 << 20), needle, strlen(needle)) != NULL;
}

static void
check_native(InspDetectorKind kind)
{
  g_autoptr(InspModel) m = train_strips(kind, INSP_TRAIN_ASPECT_NATIVE, 24, NULL);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) loaded = NULL;
  g_autoptr(InspModelScratch) ls = NULL;
  InspModelInfo info;
  float good_max = 0.0f, defect_min = G_MAXFLOAT;
  int w, h;

  insp_model_get_input_shape(m, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, SIZE * STRIP_H / STRIP_W);
  g_assert_cmpint(insp_model_get_input_size(m), ==, SIZE);
  insp_model_get_info(m, &info);
  g_assert_cmpint(info.aspect_differ, ==, 0);
  /* the builtin backbone's stride-8 grid of a 96x32 input */
  g_assert_cmpint(info.n_patches, ==, (SIZE / 8) * (SIZE * STRIP_H / STRIP_W / 8));

  g_assert_true(insp_model_save(m, path, &error));
  g_assert_no_error(error);
  g_assert_true(file_has(path, "\"format_version\":\"2\""));
  g_assert_true(file_has(path, "\"input_width\":\"96\""));
  g_assert_true(file_has(path, "\"input_height\":\"32\""));
  loaded = insp_model_load(path, &error);
  g_assert_no_error(error);
  insp_model_get_input_shape(loaded, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, SIZE * STRIP_H / STRIP_W);
  ls = insp_model_scratch_new(loaded, &error);
  g_assert_no_error(error);

  for (int i = 0; i < 6; i++) {
    g_autoptr(InspImage) good = make_strip(1000 + i, STRIP_W, STRIP_H, FALSE);
    g_autoptr(InspImage) bad = make_strip(2000 + i, STRIP_W, STRIP_H, TRUE);
    InspScoreResult r, lr;
    float sg = score(m, s, good, &r), sb;

    g_assert_cmpint(r.map_width, ==, SIZE);
    g_assert_cmpint(r.map_height, ==, SIZE * STRIP_H / STRIP_W);
    g_assert_cmpfloat(score(loaded, ls, good, &lr), ==, sg);
    sb = score(m, s, bad, &r);
    g_assert_cmpfloat(score(loaded, ls, bad, &lr), ==, sb);
    g_test_message("good %.4f defect %.4f", sg, sb);
    good_max = MAX(good_max, sg);
    defect_min = MIN(defect_min, sb);
  }
  g_assert_cmpfloat(defect_min, >, good_max);
  g_assert_cmpfloat(defect_min, >, 0.5f);
  test_tmp_remove(path);
}

static void
test_patchcore(void)
{
  check_native(INSP_DETECTOR_PATCHCORE);
}

static void
test_padim(void)
{
  check_native(INSP_DETECTOR_PADIM);
}

/* SQUARE squashes as before native aspect, and the file is version 1. */
static void
test_square(void)
{
  g_autoptr(InspModel) m = train_strips(INSP_DETECTOR_PATCHCORE, INSP_TRAIN_ASPECT_SQUARE, 8, NULL);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autoptr(InspModel) loaded = NULL;
  int w, h;

  insp_model_get_input_shape(m, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, SIZE);
  g_assert_true(insp_model_save(m, path, NULL));
  g_assert_true(file_has(path, "\"format_version\":\"1\""));
  loaded = insp_model_load(path, NULL);
  g_assert_nonnull(loaded);
  insp_model_get_input_shape(loaded, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, SIZE);
  test_tmp_remove(path);
}

/* Images of another aspect: counted, the median wins, and a frame of
 * another aspect is scored stretched to the model's shape. */
static void
test_mixed(void)
{
  static const int odd[] = {1, 4, 7, -1};
  g_autoptr(InspModel) m = train_strips(INSP_DETECTOR_PATCHCORE, INSP_TRAIN_ASPECT_NATIVE, 10, odd);
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  g_autoptr(InspImage) tall = make_strip(5, STRIP_W, 2 * STRIP_H, FALSE);
  InspModelInfo info;
  InspScoreResult r;
  double ratio = 0.0;
  int w, h;

  insp_model_get_input_shape(m, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, 32);
  insp_model_get_info(m, &info);
  g_assert_cmpint(info.aspect_differ, ==, 3);

  g_assert_false(insp_model_aspect_differs(m, STRIP_W, STRIP_H, &ratio));
  g_assert_cmpfloat_with_epsilon(ratio, 1.0, 1e-9);
  /* 4 % off: within the tolerance; 6 % off: not */
  g_assert_false(insp_model_aspect_differs(m, 1248, 400, NULL));
  g_assert_true(insp_model_aspect_differs(m, 1272, 400, NULL));
  g_assert_true(insp_model_aspect_differs(m, 1128, 400, NULL));
  g_assert_true(insp_model_aspect_differs(m, STRIP_W, 2 * STRIP_H, &ratio));
  g_assert_cmpfloat_with_epsilon(ratio, 0.5, 1e-9);

  score(m, s, tall, &r);
  g_assert_cmpint(r.map_width, ==, SIZE);
  g_assert_cmpint(r.map_height, ==, 32);
}

/* The first pass's sizes from InspTrainOptions.size_of: each image is asked
 * for once, not twice, and the model is the one the decoding pass makes; a
 * size that is not the image's, or a size that cannot be had, fails naming
 * the image. */
typedef struct {
  const int *odd;
  int images, sizes;
  int lie_at, fail_at; /* -1: never */
} Counted;

static InspImage *
source_counted(int index, gpointer user_data, GError **error)
{
  Counted *c = user_data;

  c->images++;
  return source_strips(index, (gpointer)c->odd, error);
}

static gboolean
size_counted(int index, gpointer user_data, int *width, int *height, GError **error)
{
  Counted *c = user_data;
  g_autoptr(InspImage) img = source_strips(index, (gpointer)c->odd, NULL);

  c->sizes++;
  if (index == c->fail_at) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "header unreadable");
    return FALSE;
  }
  *width = img->width + (index == c->lie_at ? 8 : 0);
  *height = img->height;
  return TRUE;
}

static void
test_size_of(void)
{
  static const int odd[] = {2, 5, -1};
  g_autoptr(InspModel) ref =
      train_strips(INSP_DETECTOR_PATCHCORE, INSP_TRAIN_ASPECT_NATIVE, 9, odd);
  g_autoptr(InspModelScratch) rs = insp_model_scratch_new(ref, NULL);
  InspTrainOptions opt;
  Counted c = {odd, 0, 0, -1, -1};
  g_autoptr(GError) error = NULL;
  InspModel *m;
  InspModelInfo a, b;
  int w, h, rw, rh;

  insp_train_options_init(&opt);
  g_assert_null(opt.size_of);
  opt.backbone = "builtin";
  opt.coreset_fraction = 0.25;
  opt.input_size = SIZE;
  opt.size_of = size_counted;
  m = insp_model_train(&opt, 9, source_counted, &c, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_nonnull(m);
  g_assert_cmpint(c.sizes, ==, 9);
  g_assert_cmpint(c.images, ==, 9);
  insp_model_get_input_shape(m, &w, &h);
  insp_model_get_input_shape(ref, &rw, &rh);
  g_assert_cmpint(w, ==, rw);
  g_assert_cmpint(h, ==, rh);
  insp_model_get_info(m, &a);
  insp_model_get_info(ref, &b);
  g_assert_cmpint(a.aspect_differ, ==, 2);
  g_assert_cmpint(a.aspect_differ, ==, b.aspect_differ);
  g_assert_cmpint(a.bank_rows, ==, b.bank_rows);
  g_assert_cmpint(a.train_units, ==, 9);
  {
    g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
    g_autoptr(InspImage) img = make_strip(77, STRIP_W, STRIP_H, TRUE);
    InspScoreResult r;

    g_assert_cmpfloat(score(m, s, img, &r), ==, score(ref, rs, img, &r));
  }
  insp_model_unref(m);

  c = (Counted){odd, 0, 0, 4, -1};
  g_assert_null(insp_model_train(&opt, 9, source_counted, &c, NULL, NULL, &error));
  g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN);
  g_assert_nonnull(strstr(error->message, "image 4: 120x40, but it was 128x40 in the first pass"));
  g_clear_error(&error);

  c = (Counted){odd, 0, 0, -1, 3};
  g_assert_null(insp_model_train(&opt, 9, source_counted, &c, NULL, NULL, &error));
  g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN);
  g_assert_cmpstr(error->message, ==, "image 3: header unreadable");
  g_assert_cmpint(c.images, ==, 0);
}

/* Frames are compared with the training images' aspect, not the input's:
 * at 64 px the strips' 3:1 becomes 64x32 (2:1: at least 32 px), which
 * stretches every image alike and is no reason to warn. The aspect is kept
 * by the file. */
static void
test_rounding(void)
{
  InspTrainOptions opt;
  g_autoptr(InspModel) m = NULL;
  g_autoptr(InspModel) loaded = NULL;
  g_autofree char *path = test_tmp_path("model.safetensors");
  InspModelInfo info;
  double ratio = 0.0;
  int w, h;

  insp_train_options_init(&opt);
  opt.coreset_fraction = 0.25;
  opt.input_size = 64;
  m = insp_model_train(&opt, 6, source_strips, NULL, NULL, NULL, NULL);
  g_assert_nonnull(m);
  insp_model_get_input_shape(m, &w, &h);
  g_assert_cmpint(w, ==, 64);
  g_assert_cmpint(h, ==, 32);
  insp_model_get_info(m, &info);
  g_assert_cmpint(info.aspect_differ, ==, 0);
  g_assert_false(insp_model_aspect_differs(m, STRIP_W, STRIP_H, &ratio));
  g_assert_cmpfloat_with_epsilon(ratio, 1.0, 1e-9);
  g_assert_true(insp_model_save(m, path, NULL));
  loaded = insp_model_load(path, NULL);
  g_assert_nonnull(loaded);
  g_assert_false(insp_model_aspect_differs(loaded, STRIP_W, STRIP_H, NULL));
  g_assert_true(insp_model_aspect_differs(loaded, 64, 32, NULL));
  test_tmp_remove(path);
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
  g_assert_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT);
  g_test_message("refused: %s", error->message);
  if (strstr(error->message, needle) == NULL || strstr(error->message, path) == NULL)
    g_error("'%s' does not mention '%s' and the file", error->message, needle);
}

static void
test_refusals(void)
{
  g_autoptr(InspModel) m = train_strips(INSP_DETECTOR_PATCHCORE, INSP_TRAIN_ASPECT_NATIVE, 6, NULL);
  g_autoptr(InspModel) sq =
      train_strips(INSP_DETECTOR_PATCHCORE, INSP_TRAIN_ASPECT_SQUARE, 6, NULL);
  g_autofree char *path = test_tmp_path("model.safetensors");
  g_autofree char *bad = g_strconcat(path, ".bad", NULL);
  g_autofree char *data = NULL;
  g_autoptr(InspModel) old = NULL;
  gsize len = 0;
  int w, h;

  g_assert_true(insp_model_save(m, path, NULL));
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  /* version 2 without one of the two */
  write_patched(bad, data, len, "\"input_height\"", "\"input_hxight\"");
  expect_refusal(bad, "'input_height' is missing");
  write_patched(bad, data, len, "\"input_width\"", "\"input_wxdth\"");
  expect_refusal(bad, "'input_width' is missing");
  /* the longer side is not input_size */
  write_patched(bad, data, len, "\"input_width\":\"96\"", "\"input_width\":\"88\"");
  expect_refusal(bad, "is not the longer of 'input_width' = 88");
  /* a shape the features were not fitted on */
  write_patched(bad, data, len, "\"input_height\":\"32\"", "\"input_height\":\"48\"");
  expect_refusal(bad, "'feature_grid_width' x 'feature_grid'");
  g_clear_pointer(&data, g_free);

  /* A square file from before native aspect (version 1, no input_width,
   * input_height or feature_grid_width) loads as input_size x input_size. */
  g_assert_true(insp_model_save(sq, path, NULL));
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  {
    g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
    g_autofree char *d2 = NULL, *d3 = NULL;
    gsize l2, l3;

    write_patched(tmp, data, len, "\"input_width\"", "\"xnput_width\"");
    g_assert_true(g_file_get_contents(tmp, &d2, &l2, NULL));
    write_patched(tmp, d2, l2, "\"input_height\"", "\"xnput_height\"");
    g_assert_true(g_file_get_contents(tmp, &d3, &l3, NULL));
    write_patched(bad, d3, l3, "\"feature_grid_width\"", "\"xeature_grid_width\"");
    g_remove(tmp);
  }
  old = insp_model_load(bad, NULL);
  g_assert_nonnull(old);
  insp_model_get_input_shape(old, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, SIZE);
  g_remove(bad);
  test_tmp_remove(path);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/input-shape/rule", test_rule);
  g_test_add_func("/input-shape/patchcore", test_patchcore);
  g_test_add_func("/input-shape/padim", test_padim);
  g_test_add_func("/input-shape/square", test_square);
  g_test_add_func("/input-shape/mixed", test_mixed);
  g_test_add_func("/input-shape/size-of", test_size_of);
  g_test_add_func("/input-shape/rounding", test_rounding);
  g_test_add_func("/input-shape/refusals", test_refusals);
  return g_test_run();
}
