/* Tiles for high-resolution cameras: the layout against a naive check of
 * its promises (inside the frame, every pixel covered, neighbours sharing at
 * least the overlap, evenly spread, one size), and the proof that tiling
 * finds what the whole frame misses: a generated 768x576 part (slow stripes,
 * noise) whose defect is a dark 6x6 spot. At 96 px the whole frame is
 * shrunk 8x and the spot is under an input pixel: the resize (bilinear, no
 * antialias, as PyTorch's) reads frame pixels 8k+3 and 8k+4 only, and the
 * spot is placed between them (8k+5 to 8k+10 in x and y), so the whole frame
 * never sees it -- where a spot falls on them it is a faint dot, which the
 * test leaves out to stay deterministic. With 6 tiles across (30 tiles of
 * 162 px, shrunk 1.7x) it is a 3.5-pixel dark dot wherever it falls. The tiled
 * model's file keeps the tiling, its map covers the frame at the tiles' scale
 * and is hottest at the defect. Builtin backbone, PatchCore. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "insp-detector-private.h"
#include "insp-image.h"
#include "insp-model.h"

#define FRAME_W 768
#define FRAME_H 576
#define SIZE 96
#define TILES 6
#define DEFECT 6 /* side of the defect, frame pixels */

/* Checks one layout's promises for @n tiles across @w x @h. */
static void
check_layout(int n, double overlap, int w, int h)
{
  g_autofree InspRect *r = g_new(InspRect, INSP_MODEL_MAX_TILE_COUNT);
  g_autofree guint8 *covered = g_new0(guint8, (gsize)w * h);
  int count = insp_tiles_layout(n, overlap, w, h, r, INSP_MODEL_MAX_TILE_COUNT);
  int longer = MAX(w, h), along = 0;

  g_assert_cmpint(count, >=, n);
  g_assert_cmpint(count, ==, insp_tiles_layout(n, overlap, w, h, NULL, 0));
  for (int k = 0; k < count; k++) {
    g_assert_cmpint(r[k].w, ==, r[0].w);
    g_assert_cmpint(r[k].h, ==, r[0].h);
    g_assert_cmpint(r[k].x, >=, 0);
    g_assert_cmpint(r[k].y, >=, 0);
    g_assert_cmpint(r[k].x + r[k].w, <=, w);
    g_assert_cmpint(r[k].y + r[k].h, <=, h);
    for (int y = r[k].y; y < r[k].y + r[k].h; y++)
      memset(covered + (gsize)y * w + r[k].x, 1, r[k].w);
    /* row-major: y, then x */
    if (k > 0)
      g_assert_true(r[k].y > r[k - 1].y || (r[k].y == r[k - 1].y && r[k].x > r[k - 1].x));
    along += (w >= h ? r[k].y == 0 : r[k].x == 0);
  }
  for (gsize i = 0; i < (gsize)w * h; i++)
    g_assert_cmpint(covered[i], ==, 1);
  /* n tiles along the longer side, the edges reached */
  g_assert_cmpint(along, ==, n);
  g_assert_cmpint(w >= h ? r[0].w : r[0].h, <=, longer);
  g_assert_cmpint(r[count - 1].x + r[count - 1].w, ==, w);
  g_assert_cmpint(r[count - 1].y + r[count - 1].h, ==, h);
  /* neighbours share at least the overlap (to the pixel), either way */
  for (int k = 1; k < count; k++) {
    if (r[k].y == r[k - 1].y)
      g_assert_cmpint(r[k - 1].x + r[k - 1].w - r[k].x, >=, (int)floor(overlap * r[0].w) - 1);
  }
  for (int k = 0; k < count; k++)
    for (int j = k + 1; j < count; j++)
      if (r[j].x == r[k].x && r[j].y > r[k].y) {
        g_assert_cmpint(r[k].y + r[k].h - r[j].y, >=, (int)floor(overlap * r[0].h) - 1);
        break;
      }
}

static void
test_layout(void)
{
  static const struct {
    int n;
    double overlap;
    int w, h, count, tile_w, tile_h;
  } cases[] = {
      {1, 0.0, 2448, 2048, 1, 2448, 2048}, /* not tiled: the frame */
      {4, 0.25, 2448, 2048, 16, 754, 754}, /* 2448 / 3.25 = 753.2 */
      {4, 0.25, 2048, 2448, 16, 754, 754}, /* portrait: the same, transposed */
      {4, 0.25, FRAME_W, FRAME_H, 12, 237, 237},
      {TILES, 0.25, FRAME_W, FRAME_H, 30, 162, 162}, /* the proof's */
      {4, 0.25, 5000, 500, 4, 1539, 500},            /* a strip: one row of tiles */
      {2, 0.0, 1000, 1000, 4, 500, 500},             /* no overlap */
      {3, 0.5, 1000, 300, 3, 500, 300},              /* 1000 / 2, one row */
      {16, 0.5, 200, 100, 8 * 16, 24, 24},           /* small frame, many tiles */
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    InspRect r[1];
    int count = insp_tiles_layout(cases[i].n, cases[i].overlap, cases[i].w, cases[i].h, r, 1);

    g_test_message("%d across %dx%d, overlap %g: %d tiles of %dx%d", cases[i].n, cases[i].w,
                   cases[i].h, cases[i].overlap, count, r[0].w, r[0].h);
    g_assert_cmpint(count, ==, cases[i].count);
    g_assert_cmpint(r[0].w, ==, cases[i].tile_w);
    g_assert_cmpint(r[0].h, ==, cases[i].tile_h);
    check_layout(cases[i].n, cases[i].overlap, cases[i].w, cases[i].h);
  }
  /* random shapes */
  for (guint64 st = 1, i = 0; i < 200; i++) {
    int n = 1 + (int)(insp_detector_rand_next(&st) % INSP_MODEL_MAX_TILES);
    double ov = insp_detector_rand_uniform(&st) * INSP_MODEL_MAX_TILE_OVERLAP;
    int w = 1 + (int)(insp_detector_rand_next(&st) % 700);
    int h = 1 + (int)(insp_detector_rand_next(&st) % 700);

    check_layout(n, ov, w, h);
  }
}

/* The part: vertical stripes of period 64 px and noise; the defect, a dark
 * DEFECT x DEFECT spot at (@dx, @dy). */
static InspImage *
make_frame(guint64 seed, gboolean defect, int dx, int dy)
{
  InspImage *img = insp_image_new(FRAME_W, FRAME_H, 3);
  guint64 st = seed * 7919 + 1;
  double phase = insp_detector_rand_uniform(&st) * 2 * G_PI;

  for (int y = 0; y < FRAME_H; y++)
    for (int x = 0; x < FRAME_W; x++) {
      double v = 128.0 + 50.0 * sin(2 * G_PI * x / 64.0 + phase);
      guint8 *p = img->data + (gsize)y * img->stride + 3 * x;

      if (defect && x >= dx && x < dx + DEFECT && y >= dy && y < dy + DEFECT)
        v = 0.0;
      v += (insp_detector_rand_uniform(&st) - 0.5) * 20.0;
      v = CLAMP(v, 0.0, 255.0);
      p[0] = p[1] = p[2] = (guint8)v;
    }
  return img;
}

static InspImage *
source_good(int index, gpointer user_data, GError **error)
{
  return make_frame((guint64)index + 100, FALSE, 0, 0);
}

static InspModel *
train(int tiles)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  InspModel *m;

  insp_train_options_init(&opt);
  opt.backbone = "builtin";
  opt.coreset_fraction = 0.1;
  opt.input_size = SIZE;
  opt.tiles = tiles;
  m = insp_model_train(&opt, 10, source_good, NULL, NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_nonnull(m);
  return m;
}

typedef struct {
  float good_max, defect_min;
  double map_dist; /* mean distance of the map's hottest pixel from the defect, frame pixels */
} Outcome;

static void
run(InspModel *m, Outcome *o, int *map_w, int *map_h)
{
  g_autoptr(InspModelScratch) s = insp_model_scratch_new(m, NULL);
  guint64 st = 77;

  o->good_max = 0.0f;
  o->defect_min = G_MAXFLOAT;
  o->map_dist = 0.0;
  for (int i = 0; i < 4; i++) {
    /* between the whole frame's samples (header comment) */
    int dx = 8 * (5 + (int)(insp_detector_rand_uniform(&st) * (FRAME_W / 8 - 10))) + 5;
    int dy = 8 * (5 + (int)(insp_detector_rand_uniform(&st) * (FRAME_H / 8 - 10))) + 5;
    g_autoptr(InspImage) good = make_frame(1000 + i, FALSE, 0, 0);
    g_autoptr(InspImage) bad = make_frame(2000 + i, TRUE, dx, dy);
    InspScoreResult r;
    gsize best = 0;

    g_assert_true(insp_model_score(m, s, good->data, FRAME_W, FRAME_H, good->stride, &r, NULL));
    o->good_max = MAX(o->good_max, r.score);
    g_assert_true(insp_model_score(m, s, bad->data, FRAME_W, FRAME_H, bad->stride, &r, NULL));
    o->defect_min = MIN(o->defect_min, r.score);
    for (gsize k = 1; k < (gsize)r.map_width * r.map_height; k++)
      if (r.map[k] > r.map[best])
        best = k;
    o->map_dist += hypot((best % r.map_width + 0.5) * FRAME_W / r.map_width - (dx + DEFECT / 2),
                         (best / r.map_width + 0.5) * FRAME_H / r.map_height - (dy + DEFECT / 2)) /
                   4;
    *map_w = r.map_width;
    *map_h = r.map_height;
  }
}

static void
test_small_defect(void)
{
  g_autoptr(InspModel) whole = train(1);
  g_autoptr(InspModel) tiled = train(TILES);
  g_autofree char *dir = g_dir_make_tmp("test-tiles-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "tiled.safetensors", NULL);
  g_autoptr(InspModel) loaded = NULL;
  g_autoptr(GError) error = NULL;
  Outcome ow, ot, ol;
  int mw, mh, lw, lh, w, h;
  double overlap = 0.0;

  insp_model_get_input_shape(whole, &w, &h);
  g_assert_cmpint(w, ==, SIZE);
  g_assert_cmpint(h, ==, 72); /* 4:3 */
  insp_model_get_input_shape(tiled, &w, &h);
  g_assert_cmpint(w, ==, SIZE); /* the tiles are square */
  g_assert_cmpint(h, ==, SIZE);
  g_assert_cmpint(insp_model_get_tiles(tiled, &overlap), ==, TILES);
  g_assert_cmpfloat(overlap, ==, 0.25);
  /* the summary counts the tiles' patches: every training frame's tiles */
  {
    int per_frame = insp_tiles_layout(TILES, 0.25, FRAME_W, FRAME_H, NULL, 0);
    InspModelInfo info;
    g_autofree char *text = NULL, *want = NULL;

    insp_model_get_info(tiled, &info);
    g_assert_cmpint(per_frame, >, TILES);
    g_assert_cmpint(info.train_images, ==, 10);
    g_assert_cmpint(info.train_units, ==, 10 * per_frame);
    text = insp_model_describe(tiled);
    want = g_strdup_printf("of %d patches", info.train_units * info.n_patches);
    g_test_message("%s", text);
    g_assert_nonnull(strstr(text, want));
    insp_model_get_info(whole, &info);
    g_assert_cmpint(info.train_units, ==, 10);
  }

  run(whole, &ow, &mw, &mh);
  g_test_message("whole frame: good max %.3f, defect min %.3f, map %dx%d, hottest %.0f px off",
                 ow.good_max, ow.defect_min, mw, mh, ow.map_dist);
  g_assert_cmpint(mw, ==, SIZE);
  g_assert_cmpint(mh, ==, 72);
  run(tiled, &ot, &mw, &mh);
  g_test_message("tiled: good max %.3f, defect min %.3f, map %dx%d, hottest %.0f px off",
                 ot.good_max, ot.defect_min, mw, mh, ot.map_dist);
  /* the frame at the tiles' scale: 768 x 96 / 162, 576 x 96 / 162 */
  g_assert_cmpint(mw, ==, 455);
  g_assert_cmpint(mh, ==, 341);

  /* missed whole-frame: some defect scores no higher than a good part */
  g_assert_cmpfloat(ow.defect_min, <=, ow.good_max);
  /* found tiled: every defect above every good part and the threshold, the
   * map hottest at it */
  g_assert_cmpfloat(ot.defect_min, >, ot.good_max);
  g_assert_cmpfloat(ot.defect_min, >, 0.5f);
  g_assert_cmpfloat(ot.map_dist, <, 3 * DEFECT);

  /* the file keeps the tiling: the loaded model scores the same */
  g_assert_true(insp_model_save(tiled, path, &error));
  g_assert_no_error(error);
  loaded = insp_model_load(path, &error);
  g_assert_no_error(error);
  g_assert_cmpint(insp_model_get_tiles(loaded, NULL), ==, TILES);
  {
    InspModelInfo info;

    insp_model_get_info(loaded, &info);
    g_assert_cmpint(info.train_units, ==,
                    10 * insp_tiles_layout(TILES, 0.25, FRAME_W, FRAME_H, NULL, 0));
  }
  run(loaded, &ol, &lw, &lh);
  g_assert_cmpfloat(ol.good_max, ==, ot.good_max);
  g_assert_cmpfloat(ol.defect_min, ==, ot.defect_min);
  g_assert_cmpint(lw, ==, mw);
  g_assert_cmpint(lh, ==, mh);
  g_remove(path);
  g_rmdir(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/tiles/layout", test_layout);
  g_test_add_func("/tiles/small-defect", test_small_defect);
  return g_test_run();
}
