/* bench-nn: PatchCore's nearest-neighbour step on real features, the plain
 * fp32 search over the whole bank against the search the model chooses as
 * it loads (the bfloat16 screen on AMX or the int8 one on AVX512-VNNI with
 * its fp32 re-rank, or the IVF cells then the exact re-rank;
 * detector-patchcore.c), and what it changes:
 * patches whose score differs, the largest relative error of a patch score,
 * image scores that differ.
 *
 *   bench-nn MODEL DATASET [N]   (N test images, default 40; 0: all)
 *
 * The model is loaded twice, set to the fp32 search and left as it loads
 * (INSP_NN in the environment; INSP_NN_LISTS, INSP_NN_PROBE, INSP_NN_RERANK
 * tune the index), features are extracted once per image, and each search is timed
 * on them (median over images, 5 repetitions each). The index's centroid
 * distances are an sgemm: run with the OpenBLAS core inspectd would set
 * (OPENBLAS_CORETYPE=SkylakeX on these CPUs; the line printed says which
 * ran). OpenBLAS threads as set
 * (OPENBLAS_NUM_THREADS). Prints numbers; never fails. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "insp-blas.h"
#include "insp-detector-private.h"
#include "insp-image.h"
#include "insp-ops.h"

#define REPS 5

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
  qsort(v, (gsize)n, sizeof(double), cmp_double);
  return n > 0 ? v[n / 2] : NAN;
}

static int
cmp_path(gconstpointer a, gconstpointer b)
{
  return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

static GPtrArray *
test_images(const char *dataset, int max)
{
  g_autofree char *test = g_build_filename(dataset, "test", NULL);
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) d = g_dir_open(test, 0, NULL);
  const char *n;

  while (d != NULL && (n = g_dir_read_name(d)) != NULL) {
    g_autofree char *sub = g_build_filename(test, n, NULL);
    g_autoptr(GPtrArray) files = insp_image_list_folder(sub, NULL);

    for (guint i = 0; files != NULL && i < files->len; i++)
      g_ptr_array_add(out, g_strdup(g_ptr_array_index(files, i)));
  }
  g_ptr_array_sort(out, cmp_path);
  /* An even spread over the sorted list (good and defective alike). */
  if (max > 0 && (int)out->len > max) {
    GPtrArray *some = g_ptr_array_new_with_free_func(g_free);

    for (int i = 0; i < max; i++)
      g_ptr_array_add(some, g_strdup(g_ptr_array_index(out, (guint)((gsize)i * out->len / max))));
    g_ptr_array_unref(out);
    out = some;
  }
  return out;
}

static double
now_ms(void)
{
  return (double)g_get_monotonic_time() / 1000.0;
}

int
main(int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) exact = NULL, approx = NULL;
  g_autoptr(InspModelScratch) s = NULL;
  g_autoptr(GPtrArray) paths = NULL;
  g_autofree char *mode = g_strdup(g_getenv("INSP_NN"));
  int n_max = argc > 3 ? atoi(argv[3]) : 40, n = 0, p, rows = 0;
  g_autofree double *t_exact = NULL, *t_approx = NULL;
  g_autofree float *feats = NULL, *ps_exact = NULL, *ps_approx = NULL;
  g_autofree void *sc_exact = NULL, *sc_approx = NULL;
  guint64 n_patches = 0, n_differ = 0;
  double max_rel = 0.0, sum_rel = 0.0, max_img_rel = 0.0;
  int n_img_differ = 0;

  if (argc < 3) {
    printf("usage: bench-nn MODEL DATASET [N]\n");
    return 0;
  }
  exact = insp_model_load(argv[1], &error);
  if (exact != NULL) {
    insp_model_set_nn_search(exact, INSP_NN_SEARCH_FP32);
    approx = insp_model_load(argv[1], &error);
  }
  if (approx == NULL || insp_model_get_detector(approx) != INSP_DETECTOR_PATCHCORE ||
      (s = insp_model_scratch_new(exact, &error)) == NULL) {
    printf("bench-nn: %s\n", error != NULL ? error->message : "not a PatchCore model");
    return 0;
  }
  insp_patchcore_get_bank(exact, &rows);
  paths = test_images(argv[2], n_max);
  p = exact->n_patches;
  feats = g_new(float, (gsize)p * exact->dim);
  ps_exact = g_new(float, p);
  ps_approx = g_new(float, p);
  sc_exact = g_malloc(exact->klass->scratch_size(exact));
  sc_approx = g_malloc(approx->klass->scratch_size(approx));
  t_exact = g_new(double, paths->len);
  t_approx = g_new(double, paths->len);
  printf("bench-nn: %s, %d patches x %d dims, bank %d rows, INSP_NN=%s, OpenBLAS threads %d, "
         "core %s\n",
         argv[1], p, exact->dim, rows, mode ? mode : "default", insp_ops_get_blas_threads(),
         insp_blas_core());
  for (guint k = 0; k < paths->len; k++) {
    g_autoptr(InspImage) img = insp_image_load(g_ptr_array_index(paths, k), 3, &error);
    float *input = insp_model_scratch_get_input(s);
    double a, b, te[REPS], ta[REPS];
    float se = 0, sa = 0;

    if (img == NULL) {
      printf("bench-nn: %s\n", error->message);
      return 0;
    }
    insp_image_preprocess(img->data, img->width, img->height, img->stride, exact->input_size,
                          exact->input_size, 1.0f, exact->mean, exact->std, input);
    insp_model_extract(exact, s, input, feats, &a, &b);
    for (int r = 0; r < REPS; r++) {
      double t0 = now_ms();

      se = exact->klass->score(exact, sc_exact, feats, ps_exact);
      te[r] = now_ms() - t0;
      t0 = now_ms();
      sa = approx->klass->score(approx, sc_approx, feats, ps_approx);
      ta[r] = now_ms() - t0;
    }
    t_exact[n] = median(te, REPS);
    t_approx[n] = median(ta, REPS);
    n++;
    for (int i = 0; i < p; i++) {
      double rel = fabs((double)ps_approx[i] - ps_exact[i]) / MAX((double)ps_exact[i], 1e-6);

      n_patches++;
      n_differ += rel > 1e-5;
      max_rel = MAX(max_rel, rel);
      sum_rel += rel;
    }
    if (se != sa) {
      n_img_differ++;
      max_img_rel = MAX(max_img_rel, fabs((double)sa - se) / MAX((double)se, 1e-6));
    }
  }
  printf("images %d: fp32 %.2f ms, as loaded %.2f ms (median per image; %.1fx)\n", n,
         median(t_exact, n), median(t_approx, n), median(t_exact, n) / median(t_approx, n));
  printf("patch scores off by > 1e-5 relative: %.3f %% (mean relative error %.2e, max %.3f); "
         "image scores that differ: %d (max relative %.2e)\n",
         100.0 * (double)n_differ / (double)MAX(n_patches, 1), sum_rel / MAX(n_patches, 1), max_rel,
         n_img_differ, max_img_rel);
  return 0;
}
