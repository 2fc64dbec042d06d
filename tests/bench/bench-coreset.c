/* bench-coreset: seconds and distance counts of the PatchCore coreset
 * selection (training's main cost) on the patch features of a real image
 * folder, for one or more fractions.
 *
 *   bench-coreset [--images DIR] [--fraction F]... [--max-images N]
 *                 [--cache FILE] [--brute] [--strategy S] [--compare S]
 *                 [--threads N] [--size N]
 *
 * Default data: kolektorsdd/train/good under $INSP_SHARED_DIR/datasets with
 * the mobilenetv2 backbone under $INSP_SHARED_DIR/models (the hardest set
 * for the pruning here: large uniform regions); the builtin backbone on
 * generated parts when those are absent. --cache keeps the extracted
 * features between runs. --brute also times the brute-force loop (the
 * definition; O(k N d)) and checks that both select the same rows.
 * INSP_CORESET_PROJECTION=none selects on exact distances, as in training.
 * --strategy and --threads are the knobs of the selection (see
 * InspCoresetOptions); --compare S also runs strategy S and counts the same
 * selections; --size N extracts at another input size (the default model's
 * 320 px). Prints numbers, never fails. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../unit/coreset-reference.h"
#include "bench-parts.h"
#include "insp-detector-private.h"
#include "insp-image.h"
#include "insp-model.h"

static int input_size; /* 0: the backbone's */

static float *
extract(const char *backbone, GPtrArray *paths, gsize *n_rows, int *dim, GError **error)
{
  g_autoptr(InspModel) m = insp_model_alloc(&insp_detector_patchcore);
  g_autoptr(InspModelScratch) s = NULL;
  const char *fine, *coarse;
  float *rows;
  gsize per;

  m->backbone = insp_backbone_new_from_file(backbone, error);
  if (m->backbone == NULL)
    return NULL;
  m->input_size = input_size > 0 ? input_size : insp_backbone_get_input_size(m->backbone);
  insp_backbone_get_normalisation(m->backbone, m->mean, m->std);
  insp_backbone_get_default_stages(m->backbone, &fine, &coarse);
  m->fine_stage = g_strdup(fine);
  m->coarse_stage = g_strdup(coarse);
  if (!insp_model_probe_stages(m, error))
    return NULL;
  insp_model_finish_setup(m);
  s = insp_model_scratch_new(m, error);
  if (s == NULL)
    return NULL;
  per = (gsize)m->n_patches * m->dim;
  rows = g_new(float, per * paths->len);
  for (guint i = 0; i < paths->len; i++) {
    g_autoptr(InspImage) img = NULL;
    double t1, t2;

    if (g_ptr_array_index(paths, i) == NULL) {
      img = bench_make_part(i);
    } else {
      img = insp_image_load(g_ptr_array_index(paths, i), 3, error);
      if (img == NULL) {
        g_free(rows);
        return NULL;
      }
    }
    insp_image_preprocess(img->data, img->width, img->height, img->stride, m->input_size,
                          m->input_size, 1.0f, m->mean, m->std, insp_model_scratch_get_input(s));
    insp_model_extract(m, s, insp_model_scratch_get_input(s), rows + i * per, &t1, &t2);
  }
  *n_rows = (gsize)m->n_patches * paths->len;
  *dim = m->dim;
  return rows;
}

static InspCoresetStrategy
parse_strategy(const char *name, InspCoresetStrategy dflt)
{
  if (g_strcmp0(name, "adaptive") == 0)
    return INSP_CORESET_ADAPTIVE;
  if (g_strcmp0(name, "pruned") == 0)
    return INSP_CORESET_PRUNED;
  if (g_strcmp0(name, "streamed") == 0)
    return INSP_CORESET_STREAMED;
  if (g_strcmp0(name, "alternate") == 0)
    return INSP_CORESET_ALTERNATE;
  if (g_strcmp0(name, "batched") == 0)
    return INSP_CORESET_BATCHED;
  return dflt;
}

int
main(int argc, char **argv)
{
  g_autofree char *images = NULL, *cache = NULL;
  g_auto(GStrv) fractions = NULL;
  int max_images = 0;
  gboolean do_brute = FALSE;
  g_autofree char *strategy = NULL, *compare = NULL;
  int threads = 0;
  const GOptionEntry entries[] = {
      {"images", 0, 0, G_OPTION_ARG_FILENAME, &images, "folder of good images", "DIR"},
      {"fraction", 0, 0, G_OPTION_ARG_STRING_ARRAY, &fractions, "coreset fraction (repeat)", "F"},
      {"max-images", 0, 0, G_OPTION_ARG_INT, &max_images, "use the first N images", "N"},
      {"cache", 0, 0, G_OPTION_ARG_FILENAME, &cache, "feature cache file", "FILE"},
      {"brute", 0, 0, G_OPTION_ARG_NONE, &do_brute, "also run the brute-force loop", NULL},
      {"strategy", 0, 0, G_OPTION_ARG_STRING, &strategy,
       "batched (default), adaptive, pruned, streamed or alternate", "S"},
      {"threads", 0, 0, G_OPTION_ARG_INT, &threads, "threads of the streamed phase (0: all)", "N"},
      {"size", 0, 0, G_OPTION_ARG_INT, &input_size, "input size (default: the backbone's)", "N"},
      {"compare", 0, 0, G_OPTION_ARG_STRING, &compare,
       "also run this strategy and count the same selections", "S"},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GOptionContext) ctx = g_option_context_new("- time the PatchCore coreset");
  g_autoptr(GError) error = NULL;
  g_autofree char *shared = g_strdup(g_getenv("INSP_SHARED_DIR"));
  g_autofree char *backbone = NULL;
  g_autofree float *rows = NULL;
  gsize n = 0;
  int d = 0;
  const char *default_fractions[] = {"0.01", "0.1", NULL};

  g_option_context_add_main_entries(ctx, entries, NULL);
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "bench-coreset: %s\n", error->message);
    return 2;
  }
  if (shared == NULL)
    shared = g_strdup("../shared");
  backbone = g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL);
  if (images == NULL)
    images = g_build_filename(shared, "datasets", "kolektorsdd", "train", "good", NULL);

  if (cache != NULL && g_file_test(cache, G_FILE_TEST_EXISTS)) {
    g_autofree char *buf = NULL;
    gsize len;

    if (g_file_get_contents(cache, &buf, &len, NULL) && len > 8) {
      memcpy(&d, buf, 4);
      n = (len - 8) / sizeof(float) / (gsize)d;
      rows = g_memdup2(buf + 8, len - 8);
    }
  }
  if (rows == NULL) {
    g_autoptr(GPtrArray) paths = insp_image_list_folder(images, NULL);
    const char *bb = backbone;
    gint64 t0 = g_get_monotonic_time();

    if (paths == NULL || paths->len == 0 || !g_file_test(backbone, G_FILE_TEST_EXISTS)) {
      printf("data: 200 generated parts, builtin backbone (%s or %s absent)\n", images, backbone);
      if (paths == NULL)
        paths = g_ptr_array_new_with_free_func(g_free);
      g_ptr_array_set_size(paths, 0);
      for (int i = 0; i < 200; i++)
        g_ptr_array_add(paths, NULL);
      bb = "builtin";
    } else {
      printf("data: %s, %s\n", images, backbone);
    }
    if (max_images > 0 && (int)paths->len > max_images)
      g_ptr_array_set_size(paths, max_images);
    rows = extract(bb, paths, &n, &d, &error);
    if (rows == NULL) {
      fprintf(stderr, "bench-coreset: %s\n", error->message);
      return 1;
    }
    printf("features: %" G_GSIZE_FORMAT " rows x %d dims in %.1f s\n", n, d,
           (double)(g_get_monotonic_time() - t0) / 1e6);
    if (cache != NULL) {
      g_autofree char *buf = g_malloc(8 + n * d * sizeof(float));

      memset(buf, 0, 8);
      memcpy(buf, &d, 4);
      memcpy(buf + 8, rows, n * d * sizeof(float));
      g_file_set_contents(cache, buf, (gssize)(8 + n * d * sizeof(float)), NULL);
    }
  } else {
    printf("features: %" G_GSIZE_FORMAT " rows x %d dims from %s\n", n, d, cache);
  }

  for (const char *const *f = fractions ? (const char *const *)fractions : default_fractions;
       *f != NULL; f++) {
    double frac = g_ascii_strtod(*f, NULL);
    gsize k = 0;
    gint64 t0 = g_get_monotonic_time();
    InspCoresetOptions o;
    g_autofree gsize *sel = NULL;
    double secs;

    insp_coreset_options_init(&o);
    o.threads = threads;
    o.strategy = parse_strategy(strategy, o.strategy);
    sel = insp_patchcore_coreset_tuned(rows, n, d, frac, 0, &o, &k);
    secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    printf("coreset %-5s %7" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " rows  %8.2f s (%s)\n", *f, k,
           n, secs, strategy ? strategy : "default");
    fflush(stdout);
    if (compare != NULL) {
      g_autofree gsize *other = NULL;
      gsize ko = 0, same = 0, first;

      o.strategy = parse_strategy(compare, o.strategy);
      t0 = g_get_monotonic_time();
      other = insp_patchcore_coreset_tuned(rows, n, d, frac, 0, &o, &ko);
      secs = (double)(g_get_monotonic_time() - t0) / 1e6;
      first = MIN(k, ko);
      for (gsize i = 0; i < MIN(k, ko); i++) {
        same += sel[i] == other[i];
        if (sel[i] != other[i] && first == MIN(k, ko))
          first = i;
      }
      printf("  %-8s %7" G_GSIZE_FORMAT " rows  %8.2f s, same selection %" G_GSIZE_FORMAT
             " of %" G_GSIZE_FORMAT ", first difference at %" G_GSIZE_FORMAT "\n",
             compare, ko, secs, same, k, first);
      fflush(stdout);
    }
    if (do_brute && d <= INSP_PATCHCORE_PROJ_DIM) {
      gsize start = insp_test_torch_start(0, n), same = 0, first = k;
      g_autofree gsize *ref = g_new(gsize, k);
      g_autofree float *xp = NULL;

      if (insp_patchcore_coreset_projection() == INSP_CORESET_SPARSE_RANDOM)
        xp = insp_test_project(rows, n, d, 0);
      t0 = g_get_monotonic_time();
      insp_test_greedy_coreset(xp ? xp : rows, n, d, k, start, ref);
      secs = (double)(g_get_monotonic_time() - t0) / 1e6;
      for (gsize i = 0; i < k; i++) {
        same += sel[i] == ref[i];
        if (sel[i] != ref[i] && first == k)
          first = i;
      }
      printf("  brute force (double)   %8.2f s, same selection %" G_GSIZE_FORMAT
             " of %" G_GSIZE_FORMAT ", first difference at %" G_GSIZE_FORMAT "\n",
             secs, same, k, first);
    }
  }
  return 0;
}
