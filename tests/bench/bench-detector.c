/* bench-detector: milliseconds per image of PatchCore (coreset 1 % at 320
 * px, the default; 1 % and 10 % at 224 px, the reference's) and PaDiM, split into backbone (resize
 * + forward) / feature aggregation / nearest neighbour or Mahalanobis / anomaly map, with p50 and
 * p99 of the total, and the peak RSS of training and of scoring, each
 * measured in its own child process (wait4 rusage).
 *
 * Data: mvtec_bottle from $INSP_SHARED_DIR/datasets with the mobilenetv2
 * backbone from $INSP_SHARED_DIR/models when present (first N_TRAIN good
 * training images, the test images for scoring), else generated parts with
 * the builtin backbone. One image at a time, OPENBLAS_NUM_THREADS as set in
 * the environment. Prints numbers, never fails. Single-threaded (forks). */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-parts.h"
#include "insp-model.h"

#define N_TRAIN 60
#define N_SCORE 30

typedef struct {
  GPtrArray *train; /* paths, or NULL for generated parts */
  GPtrArray *test;
  const char *backbone;
} Data;

static InspImage *
load_image(GPtrArray *paths, int index, GError **error)
{
  if (paths == NULL)
    return bench_make_part((guint64)index);
  return insp_image_load(g_ptr_array_index(paths, index % paths->len), 3, error);
}

static InspImage *
source(int index, gpointer user_data, GError **error)
{
  return load_image(((Data *)user_data)->train, index, error);
}

static GPtrArray *
list_pngs(const char *dir, GPtrArray *into, int max)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *n;

  if (d == NULL)
    return into;
  while ((n = g_dir_read_name(d)) != NULL)
    if (g_str_has_suffix(n, ".png"))
      g_ptr_array_add(names, g_strdup(n));
  g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
  for (guint i = 0; i < names->len && (max <= 0 || (int)i < max); i++)
    g_ptr_array_add(into, g_build_filename(dir, *(char **)&names->pdata[i], NULL));
  g_ptr_array_unref(names);
  return into;
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

static int
child_train(Data *data, InspDetectorKind kind, double coreset, int channels, int size,
            const char *out)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) m = NULL;
  int n = data->train ? (int)MIN(data->train->len, N_TRAIN) : 40;
  gint64 t0 = g_get_monotonic_time();

  insp_train_options_init(&opt);
  opt.backbone = data->backbone;
  opt.detector = kind;
  opt.coreset_fraction = coreset;
  opt.padim_channels = channels;
  opt.input_size = size;
  m = insp_model_train(&opt, n, source, data, NULL, NULL, &error);
  if (m == NULL || !insp_model_save(m, out, &error)) {
    printf("  train failed: %s\n", error->message);
    return 1;
  }
  printf("  train: %d images in %.1f s\n", n, (double)(g_get_monotonic_time() - t0) / 1e6);
  return 0;
}

static int
child_score(Data *data, const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) m = insp_model_load(path, &error);
  g_autoptr(InspModelScratch) s = NULL;
  double sum[4] = {0}, tot[N_SCORE];
  InspImage *imgs[N_SCORE] = {0};

  if (m == NULL || (s = insp_model_scratch_new(m, &error)) == NULL) {
    printf("  load failed: %s\n", error->message);
    return 1;
  }
  for (int i = 0; i < N_SCORE; i++) {
    imgs[i] = load_image(data->test, 1000 + i, &error);
    if (imgs[i] == NULL) {
      printf("  image: %s\n", error->message);
      return 1;
    }
  }
  for (int warm = 0; warm < 3; warm++) {
    InspScoreResult r;

    insp_model_score(m, s, imgs[warm]->data, imgs[warm]->width, imgs[warm]->height,
                     imgs[warm]->stride, &r, NULL);
  }
  for (int i = 0; i < N_SCORE; i++) {
    InspScoreResult r;
    gint64 t0 = g_get_monotonic_time();

    insp_model_score(m, s, imgs[i]->data, imgs[i]->width, imgs[i]->height, imgs[i]->stride, &r,
                     NULL);
    tot[i] = (double)(g_get_monotonic_time() - t0) / 1000.0;
    sum[0] += r.ms_preprocess + r.ms_backbone; /* as printed before: with preprocessing */
    sum[1] += r.ms_features;
    sum[2] += r.ms_distance;
    sum[3] += r.ms_map;
  }
  qsort(tot, N_SCORE, sizeof(double), cmp_double);
  printf("  score: backbone %.1f  features %.1f  distance %.1f  map %.1f  | total p50 %.1f p99 "
         "%.1f ms/image (%s)\n",
         sum[0] / N_SCORE, sum[1] / N_SCORE, sum[2] / N_SCORE, sum[3] / N_SCORE, tot[N_SCORE / 2],
         tot[N_SCORE - 1], insp_model_get_id(m));
  for (int i = 0; i < N_SCORE; i++)
    insp_image_free(imgs[i]);
  return 0;
}

/* Runs @what in a child; prints its peak RSS. */
static void
in_child(const char *label, Data *data, int what, InspDetectorKind kind, double coreset,
         int channels, int size, const char *path)
{
  pid_t pid;
  int status = 0;
  struct rusage ru;

  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    int rc = what == 0 ? child_train(data, kind, coreset, channels, size, path)
                       : child_score(data, path);

    fflush(stdout);
    _exit(rc);
  }
  if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
    printf("  %s: fork failed\n", label);
    return;
  }
  printf("  %s peak RSS %.0f MiB\n", label, ru.ru_maxrss / 1024.0);
}

int
main(int argc, char **argv)
{
  const char *shared = g_getenv("INSP_SHARED_DIR");
  g_autofree char *model_file = NULL, *ds = NULL;
  g_autofree char *dir = g_dir_make_tmp("bench-detector-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "model.safetensors", NULL);
  Data data = {NULL, NULL, "builtin"};
  struct {
    const char *name;
    InspDetectorKind kind;
    double coreset;
    int channels, size;
  } configs[] = {
      {"patchcore coreset 1% at 320 px (the default)", INSP_DETECTOR_PATCHCORE, 0.01, 0, 320},
      {"patchcore coreset 1% at 224 px", INSP_DETECTOR_PATCHCORE, 0.01, 0, 224},
      {"patchcore coreset 10% at 224 px", INSP_DETECTOR_PATCHCORE, 0.1, 0, 224},
      {"padim 100 channels", INSP_DETECTOR_PADIM, 1.0, 100, 0},
      {"padim all channels", INSP_DETECTOR_PADIM, 1.0, 0, 0},
  };
  const char *backbones[2] = {NULL, "builtin"};

  if (shared != NULL) {
    model_file = g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL);
    ds = g_build_filename(shared, "datasets", "mvtec_bottle", NULL);
    if (g_file_test(model_file, G_FILE_TEST_EXISTS) && g_file_test(ds, G_FILE_TEST_IS_DIR)) {
      g_autofree char *train = g_build_filename(ds, "train", "good", NULL);
      g_autofree char *test = g_build_filename(ds, "test", NULL);
      g_autoptr(GDir) d = g_dir_open(test, 0, NULL);
      const char *t;

      data.train = list_pngs(train, g_ptr_array_new_with_free_func(g_free), N_TRAIN);
      data.test = g_ptr_array_new_with_free_func(g_free);
      while (d != NULL && (t = g_dir_read_name(d)) != NULL) {
        g_autofree char *sub = g_build_filename(test, t, NULL);

        list_pngs(sub, data.test, 0);
      }
      backbones[0] = model_file;
    }
  }
  printf("bench-detector: %s, OPENBLAS_NUM_THREADS=%s\n",
         data.train ? "mvtec_bottle (first 60 good images), test images scored"
                    : "generated 256x256 parts (no INSP_SHARED_DIR)",
         g_getenv("OPENBLAS_NUM_THREADS") ? g_getenv("OPENBLAS_NUM_THREADS") : "(unset)");
  for (int b = 0; b < 2; b++) {
    if (backbones[b] == NULL)
      continue;
    data.backbone = backbones[b];
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
      printf("%s, backbone %s\n", configs[c].name, b == 0 ? "mobilenetv2_100" : "builtin");
      in_child("train", &data, 0, configs[c].kind, configs[c].coreset, configs[c].channels,
               configs[c].size, path);
      in_child("score", &data, 1, configs[c].kind, configs[c].coreset, configs[c].channels,
               configs[c].size, path);
    }
  }
  g_remove(path);
  g_rmdir(dir);
  if (data.train)
    g_ptr_array_unref(data.train);
  if (data.test)
    g_ptr_array_unref(data.test);
  return 0;
}
