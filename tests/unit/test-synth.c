/* The synthetic-part generator: deterministic, masks only for defects, every
 * defect kind changes the pixels where its mask says, good parts differ a
 * little from each other, and the MVTec-layout writer produces the layout. */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "insp-synth.h"

static gsize
mask_count(const InspImage *m)
{
  gsize n = 0;
  for (int y = 0; y < m->height; y++)
    for (int x = 0; x < m->width; x++) {
      guint8 v = m->data[(gsize)y * m->stride + x];
      g_assert_true(v == 0 || v == 255);
      n += v == 255;
    }
  return n;
}

static double
mean_abs_diff(const InspImage *a, const InspImage *b)
{
  double sum = 0.0;
  g_assert_cmpint(a->width, ==, b->width);
  g_assert_cmpint(a->height, ==, b->height);
  for (int y = 0; y < a->height; y++)
    for (int x = 0; x < a->width * 3; x++)
      sum += abs((int)a->data[(gsize)y * a->stride + x] - (int)b->data[(gsize)y * b->stride + x]);
  return sum / ((double)a->width * a->height * 3);
}

static void
test_deterministic(void)
{
  for (int k = 0; k < INSP_SYNTH_N_KINDS; k++) {
    g_autoptr(InspImage) a = NULL, am = NULL, b = NULL, bm = NULL;
    g_autoptr(GError) error = NULL;

    g_assert_true(insp_synth_part(1234, (InspSynthKind)k, 96, 80, &a, &am, &error));
    g_assert_no_error(error);
    g_assert_true(insp_synth_part(1234, (InspSynthKind)k, 96, 80, &b, &bm, &error));
    g_assert_cmpint(a->width, ==, 96);
    g_assert_cmpint(a->height, ==, 80);
    g_assert_cmpint(a->channels, ==, 3);
    g_assert_cmpint(am->channels, ==, 1);
    g_assert_cmpmem(a->data, (gsize)a->stride * a->height, b->data, (gsize)b->stride * b->height);
    g_assert_cmpmem(am->data, (gsize)am->stride * am->height, bm->data,
                    (gsize)bm->stride * bm->height);
  }
}

/* A known pixel value pins the rendering down across platforms: a change of
 * the generator changes every data set built from it, and should be seen. */
static void
test_golden_checksum(void)
{
  g_autoptr(InspImage) a = NULL;
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);

  g_assert_true(insp_synth_part(7, INSP_SYNTH_GOOD, 64, 64, &a, NULL, NULL));
  /* The part is on the dark background at the corner and on metal at 3/4 of
   * the bore-to-ring distance. */
  g_assert_cmpint(a->data[0], <, 70);
  guint8 *face = a->data + (gsize)(32 + 12) * a->stride + 32 * 3;
  g_assert_cmpint(face[0], >, 100);
  g_checksum_update(sum, a->data, (gssize)a->stride * a->height);
  g_test_message("sha256 of good part seed 7 64x64: %s", g_checksum_get_string(sum));
}

static void
test_masks(void)
{
  for (guint64 seed = 1; seed <= 24; seed++) {
    for (int k = 0; k < INSP_SYNTH_N_KINDS; k++) {
      g_autoptr(InspImage) img = NULL, mask = NULL, good = NULL;
      int size = seed % 2 ? 64 : 224;

      g_assert_true(insp_synth_part(seed, (InspSynthKind)k, size, size, &img, &mask, NULL));
      gsize n = mask_count(mask);
      if (k == INSP_SYNTH_GOOD) {
        g_assert_cmpuint(n, ==, 0);
        continue;
      }
      g_assert_cmpuint(n, >, 0);
      g_assert_cmpuint(n, <, (gsize)size * size / 10);
      /* The defect changed the image inside its mask, and only near it: the
       * same seed's good part shares position, lighting and noise. */
      g_assert_true(insp_synth_part(seed, INSP_SYNTH_GOOD, size, size, &good, NULL, NULL));
      double inside = 0.0, outside = 0.0;
      gsize n_out = 0;
      for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
          int d = 0;
          for (int c = 0; c < 3; c++)
            d += abs((int)img->data[(gsize)y * img->stride + x * 3 + c] -
                     (int)good->data[(gsize)y * good->stride + x * 3 + c]);
          if (mask->data[(gsize)y * mask->stride + x])
            inside += d;
          else {
            outside += d;
            n_out++;
          }
        }
      inside /= (double)n;
      outside /= (double)n_out;
      g_assert_cmpfloat(inside, >, 60.0);
      g_assert_cmpfloat(outside, <, 2.0);
    }
  }
}

static void
test_good_parts_vary(void)
{
  g_autoptr(InspImage) a = NULL, b = NULL;

  g_assert_true(insp_synth_part(1, INSP_SYNTH_GOOD, 128, 128, &a, NULL, NULL));
  g_assert_true(insp_synth_part(2, INSP_SYNTH_GOOD, 128, 128, &b, NULL, NULL));
  double d = mean_abs_diff(a, b);
  g_test_message("mean |good1 - good2| = %.2f", d);
  /* Different, through jitter and noise, but the same part. */
  g_assert_cmpfloat(d, >, 2.0);
  g_assert_cmpfloat(d, <, 30.0);
}

static void
test_bad_size(void)
{
  InspImage *img = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_false(insp_synth_part(1, INSP_SYNTH_GOOD, 8, 64, &img, NULL, &error));
  g_assert_error(error, INSP_SYNTH_ERROR, INSP_SYNTH_ERROR_SIZE);
  g_assert_null(img);
}

static void
test_kinds(void)
{
  InspSynthKind k = INSP_SYNTH_GOOD;
  int counts[INSP_SYNTH_N_KINDS] = {0};

  g_assert_true(insp_synth_kind_from_string("missing", &k));
  g_assert_cmpint(k, ==, INSP_SYNTH_MISSING);
  g_assert_false(insp_synth_kind_from_string("dent", &k));
  g_assert_cmpint(k, ==, INSP_SYNTH_MISSING);
  g_assert_cmpstr(insp_synth_kind_to_string(INSP_SYNTH_SPOT), ==, "spot");
  g_assert_null(insp_synth_kind_to_string(INSP_SYNTH_N_KINDS));
  for (guint64 i = 0; i < 30; i++)
    counts[insp_synth_line_kind(i, 5)]++;
  g_assert_cmpint(counts[INSP_SYNTH_GOOD], ==, 24);
  g_assert_cmpint(counts[INSP_SYNTH_SCRATCH], ==, 2);
  g_assert_cmpint(counts[INSP_SYNTH_SPOT], ==, 2);
  g_assert_cmpint(counts[INSP_SYNTH_MISSING], ==, 2);
  g_assert_cmpint(insp_synth_line_kind(4, 5), !=, INSP_SYNTH_GOOD);
  g_assert_cmpint(insp_synth_line_kind(4, 0), ==, INSP_SYNTH_GOOD);
  g_assert_cmpuint(insp_synth_line_seed(1, 0), !=, insp_synth_line_seed(1, 1));
}

static void
test_write_dataset(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("test-synth-XXXXXX", &error);
  const char *files[] = {"train/good/000.png",
                         "train/good/002.png",
                         "test/good/001.png",
                         "test/scratch/000.png",
                         "test/spot/001.png",
                         "test/missing/001.png",
                         "ground_truth/scratch/000_mask.png",
                         "ground_truth/missing/001_mask.png"};

  g_assert_no_error(error);
  g_assert_true(insp_synth_write_dataset(dir, 64, 3, 2, 2, 99, &error));
  g_assert_no_error(error);
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *p = g_build_filename(dir, files[i], NULL);
    g_assert_true(g_file_test(p, G_FILE_TEST_IS_REGULAR));
  }
  g_autofree char *nogt = g_build_filename(dir, "ground_truth", "good", NULL);
  g_assert_false(g_file_test(nogt, G_FILE_TEST_EXISTS));
  g_autofree char *mpath = g_build_filename(dir, "ground_truth/spot/000_mask.png", NULL);
  g_autoptr(InspImage) m = insp_image_load(mpath, 1, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(mask_count(m), >, 0);

  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
  g_assert_cmpint(system(cmd), ==, 0);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/synth/deterministic", test_deterministic);
  g_test_add_func("/synth/golden", test_golden_checksum);
  g_test_add_func("/synth/masks", test_masks);
  g_test_add_func("/synth/good-parts-vary", test_good_parts_vary);
  g_test_add_func("/synth/bad-size", test_bad_size);
  g_test_add_func("/synth/kinds", test_kinds);
  g_test_add_func("/synth/write-dataset", test_write_dataset);
  return g_test_run();
}
