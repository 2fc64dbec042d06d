/* bench-tiles: milliseconds per frame of a 2448x2048 camera frame (a
 * generated part: slow stripes, texture, noise) scored whole and tiled
 * (train --tile N: 2 and 4 tiles across, overlap 0.25), PatchCore 1 % at
 * 320 px, with the share of each step, the tiles per frame and the map's
 * size. Each model is trained on N_TRAIN generated frames first (not timed
 * here beyond a total).
 *
 * Backbone: mobilenetv2_100 from $INSP_SHARED_DIR/models when present, else
 * builtin (or argv[1]: a backbone file or "builtin"). One frame at a time,
 * OPENBLAS_NUM_THREADS as set in the environment; prints OpenBLAS's core.
 * Prints numbers, never fails. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "insp-model.h"

#define FRAME_W 2448
#define FRAME_H 2048
#define N_TRAIN 4
#define N_SCORE 8

char *openblas_get_corename(void); /* libopenblas */

static InspImage *
make_frame(guint64 seed)
{
  InspImage *img = insp_image_new(FRAME_W, FRAME_H, 3);
  GRand *rng = g_rand_new_with_seed((guint32)seed);
  double phase = g_rand_double(rng) * 2 * G_PI;

  for (int y = 0; y < FRAME_H; y++)
    for (int x = 0; x < FRAME_W; x++) {
      double v = 128.0 + 50.0 * sin(2 * G_PI * x / 200.0 + phase) +
                 20.0 * sin(2 * G_PI * (x + y) / 23.0) + g_rand_double_range(rng, -10, 10);
      guint8 *p = img->data + (gsize)y * img->stride + 3 * x;

      p[0] = p[1] = p[2] = (guint8)CLAMP(v, 0.0, 255.0);
    }
  g_rand_free(rng);
  return img;
}

static InspImage *
source(int index, gpointer user_data, GError **error)
{
  return make_frame((guint64)index + 1);
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

static const char *
env_or_unset(const char *name)
{
  const char *v = g_getenv(name);

  return v != NULL ? v : "unset";
}

int
main(int argc, char **argv)
{
  const char *shared = g_getenv("INSP_SHARED_DIR");
  g_autofree char *mobilenet =
      shared ? g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL) : NULL;
  const char *backbone = argc > 1                                                  ? argv[1]
                         : mobilenet && g_file_test(mobilenet, G_FILE_TEST_EXISTS) ? mobilenet
                                                                                   : "builtin";
  static const int tiles[] = {1, 2, 4};
  InspImage *frames[N_SCORE];
  double whole_p50 = 0.0;

  printf("bench-tiles: %dx%d frames, PatchCore 1 %% at 320 px, backbone %s\n", FRAME_W, FRAME_H,
         backbone);
  printf("OpenBLAS core %s (OPENBLAS_CORETYPE=%s), OPENBLAS_NUM_THREADS=%s\n",
         openblas_get_corename(), env_or_unset("OPENBLAS_CORETYPE"),
         env_or_unset("OPENBLAS_NUM_THREADS"));
  for (int i = 0; i < N_SCORE; i++)
    frames[i] = make_frame(1000 + (guint64)i);
  for (gsize t = 0; t < G_N_ELEMENTS(tiles); t++) {
    InspTrainOptions opt;
    g_autoptr(GError) error = NULL;
    g_autoptr(InspModel) m = NULL;
    g_autoptr(InspModelScratch) s = NULL;
    InspRect first;
    double tot[N_SCORE], pre = 0, bb = 0, dist = 0, map = 0;
    int n_tiles, mw = 0, mh = 0, iw, ih;
    gint64 t0 = g_get_monotonic_time();

    insp_train_options_init(&opt);
    opt.backbone = backbone;
    opt.tiles = tiles[t];
    m = insp_model_train(&opt, N_TRAIN, source, NULL, NULL, NULL, &error);
    if (m == NULL || (s = insp_model_scratch_new(m, &error)) == NULL) {
      printf("  tiles %d: %s\n", tiles[t], error->message);
      continue;
    }
    insp_model_get_input_shape(m, &iw, &ih);
    n_tiles = insp_tiles_layout(tiles[t], 0.25, FRAME_W, FRAME_H, &first, 1);
    printf("tiles %d across: %d tiles of %dx%d per frame at %dx%d (trained on %d frames in %.1f "
           "s)\n",
           tiles[t], n_tiles, first.w, first.h, iw, ih, N_TRAIN,
           (double)(g_get_monotonic_time() - t0) / 1e6);
    for (int i = -1; i < N_SCORE; i++) {
      const InspImage *f = frames[MAX(i, 0)];
      InspScoreResult r;
      gint64 t1 = g_get_monotonic_time();

      insp_model_score(m, s, f->data, f->width, f->height, f->stride, &r, NULL);
      if (i < 0)
        continue; /* warm-up */
      tot[i] = (double)(g_get_monotonic_time() - t1) / 1000.0;
      pre += r.ms_preprocess / N_SCORE;
      bb += (r.ms_backbone + r.ms_features) / N_SCORE;
      dist += r.ms_distance / N_SCORE;
      map += r.ms_map / N_SCORE;
      mw = r.map_width;
      mh = r.map_height;
    }
    qsort(tot, N_SCORE, sizeof(double), cmp_double);
    if (t == 0)
      whole_p50 = tot[N_SCORE / 2];
    printf("  ms/frame p50 %.1f (%.1fx the whole frame), max %.1f: resize %.1f, backbone + "
           "features %.1f, search %.1f, map %.1f; map %dx%d\n",
           tot[N_SCORE / 2], tot[N_SCORE / 2] / whole_p50, tot[N_SCORE - 1], pre, bb, dist, map, mw,
           mh);
  }
  for (int i = 0; i < N_SCORE; i++)
    insp_image_free(frames[i]);
  return 0;
}
