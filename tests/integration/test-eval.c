/* `inspectd train` + `inspectd eval` end to end: the test writes a small
 * dataset in MVTec AD layout (textured grey parts; defects are dark blots
 * with exact masks), trains a PatchCore model on its good images with the
 * builtin backbone, evaluates it with --json, and checks the JSON keys and
 * that an easy defect is found (high image and pixel AUROC). Also the
 * dataset errors: a defect image without a mask is named, a folder without
 * test/ is refused, and missing flags are a usage error. Skips with the
 * reason while `inspectd train` is not built. */
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/wait.h>

#include "insp-image.h"

#define SIZE 96
#define N_TRAIN 16
#define N_TEST_GOOD 6
#define N_TEST_DEFECT 6

typedef struct {
  char *dir;
  char *model;
} Fixture;

static int
run(const char *const *args, char **out, char **err)
{
  const char *exe = g_getenv("INSPECTD");
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_autoptr(GError) error = NULL;
  int status = -1;

  g_assert_nonnull(exe);
  g_ptr_array_add(argv, (gpointer)exe);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, NULL);
  g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, out,
                             err, &status, &error));
  g_assert_no_error(error);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A part: grey background with a soft diagonal texture and noise. A defect
 * adds a dark blot of radius 7..10 at a random place; @mask (if non-NULL)
 * gets it exactly. */
static InspImage *
make_part(GRand *rng, gboolean defect, InspImage *mask)
{
  InspImage *img = insp_image_new(SIZE, SIZE, 3);
  int cx = g_rand_int_range(rng, 20, SIZE - 20), cy = g_rand_int_range(rng, 20, SIZE - 20);
  int r = g_rand_int_range(rng, 7, 11);
  for (int y = 0; y < SIZE; y++)
    for (int x = 0; x < SIZE; x++) {
      int v = 140 + ((x + y) % 8 < 4 ? 12 : -12) + g_rand_int_range(rng, -6, 7);
      gboolean in = defect && (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r;
      if (in)
        v = 30 + g_rand_int_range(rng, 0, 10);
      guint8 *p = img->data + y * img->stride + 3 * x;
      p[0] = p[1] = p[2] = (guint8)CLAMP(v, 0, 255);
      if (mask)
        mask->data[y * mask->stride + x] = in ? 255 : 0;
    }
  return img;
}

static void
save(const InspImage *img, const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  g_assert_true(insp_image_save_png(img, path, &error));
  g_assert_no_error(error);
}

static void
write_dataset(const char *root)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(7);
  for (int i = 0; i < N_TRAIN; i++) {
    g_autoptr(InspImage) img = make_part(rng, FALSE, NULL);
    g_autofree char *name = g_strdup_printf("%03d.png", i);
    g_autofree char *path = g_build_filename(root, "train", "good", name, NULL);
    save(img, path);
  }
  for (int i = 0; i < N_TEST_GOOD; i++) {
    g_autoptr(InspImage) img = make_part(rng, FALSE, NULL);
    g_autofree char *name = g_strdup_printf("%03d.png", i);
    g_autofree char *path = g_build_filename(root, "test", "good", name, NULL);
    save(img, path);
  }
  for (int i = 0; i < N_TEST_DEFECT; i++) {
    g_autoptr(InspImage) mask = insp_image_new(SIZE, SIZE, 1);
    g_autoptr(InspImage) img = make_part(rng, TRUE, mask);
    g_autofree char *name = g_strdup_printf("%03d.png", i);
    g_autofree char *mname = g_strdup_printf("%03d_mask.png", i);
    g_autofree char *path = g_build_filename(root, "test", "blot", name, NULL);
    g_autofree char *mpath = g_build_filename(root, "ground_truth", "blot", mname, NULL);
    save(img, path);
    save(mask, mpath);
  }
}

static void
remove_tree(const char *path)
{
  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d)) != NULL) {
      g_autofree char *child = g_build_filename(path, name, NULL);
      remove_tree(child);
    }
    g_rmdir(path);
  } else {
    g_unlink(path);
  }
}

static void
fixture_setup(Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  f->dir = g_dir_make_tmp("inspectd-eval-XXXXXX", &error);
  g_assert_no_error(error);
  write_dataset(f->dir);
  f->model = g_build_filename(f->dir, "model.safetensors", NULL);
}

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
  remove_tree(f->dir);
  g_free(f->dir);
  g_free(f->model);
}

/* Trains the model; a failure of train is a failure of the test. */
static gboolean
train(Fixture *f)
{
  g_autofree char *out = NULL, *err = NULL;
  g_autofree char *images = g_build_filename(f->dir, "train", "good", NULL);
  const char *args[] = {"train",  "--images",   images,    "--out",
                        f->model, "--backbone", "builtin", NULL};
  int rc = run(args, &out, &err);
  if (rc != 0)
    g_error("inspectd train failed (%d): %s", rc, err);
  return TRUE;
}

static double
member_double(JsonObject *o, const char *key)
{
  g_assert_true(json_object_has_member(o, key));
  JsonNode *n = json_object_get_member(o, key);
  g_assert_true(JSON_NODE_HOLDS_VALUE(n));
  return json_node_get_double(n);
}

static void
test_train_eval(Fixture *f, gconstpointer data)
{
  if (!train(f))
    return;
  g_autofree char *out = NULL, *err = NULL;
  g_autofree char *json = g_build_filename(f->dir, "eval.json", NULL);
  const char *args[] = {"eval", "--model", f->model, "--dataset", f->dir, "--json", json, NULL};
  int rc = run(args, &out, &err);
  if (rc != 0)
    g_error("inspectd eval failed (%d): %s", rc, err);

  /* the table on stdout, progress on stderr */
  g_assert_nonnull(strstr(out, "image AUROC"));
  g_assert_nonnull(strstr(out, "AUPRO@0.3"));
  g_assert_nonnull(strstr(out, "blot"));
  g_assert_nonnull(strstr(err, "test/blot/000.png"));

  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = NULL;
  g_assert_true(json_parser_load_from_file(parser, json, &error));
  g_assert_no_error(error);
  JsonObject *o = json_node_get_object(json_parser_get_root(parser));
  const char *keys[] = {"image_auroc", "pixel_auroc", "aupro",    "f1_max", "threshold",
                        "latency_ms",  "images",      "per_type", "model",  "dataset"};
  for (gsize i = 0; i < G_N_ELEMENTS(keys); i++)
    if (!json_object_has_member(o, keys[i]))
      g_error("eval JSON lacks \"%s\"", keys[i]);
  g_assert_cmpuint(json_object_get_size(o), ==, G_N_ELEMENTS(keys));
  JsonObject *lat = json_object_get_object_member(o, "latency_ms");
  g_assert_cmpfloat(member_double(lat, "mean"), >, 0.0);
  g_assert_cmpfloat(member_double(lat, "p50"), >, 0.0);
  g_assert_cmpfloat(member_double(lat, "p99"), >=, member_double(lat, "p50"));
  g_assert_cmpint(json_object_get_int_member(o, "images"), ==, N_TEST_GOOD + N_TEST_DEFECT);

  double image_auroc = member_double(o, "image_auroc");
  double pixel_auroc = member_double(o, "pixel_auroc");
  double aupro = member_double(o, "aupro");
  double f1 = member_double(o, "f1_max");
  g_test_message("synthetic blots: image AUROC %.4f pixel AUROC %.4f AUPRO %.4f F1 %.4f",
                 image_auroc, pixel_auroc, aupro, f1);
  g_assert_cmpfloat(image_auroc, >=, 0.95);
  g_assert_cmpfloat(pixel_auroc, >=, 0.90);
  g_assert_cmpfloat(aupro, >, 0.0);
  g_assert_cmpfloat(aupro, <=, 1.0);
  g_assert_cmpfloat(f1, >=, 0.9);
  JsonObject *per = json_object_get_object_member(o, "per_type");
  g_assert_cmpuint(json_object_get_size(per), ==, 1);
  g_assert_cmpfloat(member_double(per, "blot"), ==, image_auroc);
  g_assert_cmpstr(json_object_get_string_member(o, "dataset"), ==, f->dir);
  g_assert_true(g_str_has_prefix(json_object_get_string_member(o, "model"), "patchcore-"));

  /* --limit takes the first N of each type */
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  const char *args2[] = {"eval",   "-q", "--model", f->model, "--dataset", f->dir,
                         "--json", json, "--limit", "2",      NULL};
  g_assert_cmpint(run(args2, &out, &err), ==, 0);
  g_assert_cmpstr(err, ==, "");
  g_autoptr(JsonParser) p2 = json_parser_new();
  g_assert_true(json_parser_load_from_file(p2, json, &error));
  g_assert_cmpint(
      json_object_get_int_member(json_node_get_object(json_parser_get_root(p2)), "images"), ==, 4);

  /* a folder that is not in MVTec layout */
  g_autofree char *train_dir = g_build_filename(f->dir, "train", NULL);
  const char *args3[] = {"eval", "--model", f->model, "--dataset", train_dir, NULL};
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_cmpint(run(args3, &out, &err), ==, 1);
  g_assert_nonnull(strstr(err, "no test/ folder"));

  /* a defect image without its mask: refused, naming it */
  g_autofree char *mask = g_build_filename(f->dir, "ground_truth", "blot", "003_mask.png", NULL);
  g_assert_cmpint(g_unlink(mask), ==, 0);
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_cmpint(run(args, &out, &err), ==, 1);
  g_assert_nonnull(strstr(err, "test/blot/003.png"));
  g_assert_nonnull(strstr(err, "003_mask.png"));
}

static void
test_usage_errors(Fixture *f, gconstpointer data)
{
  g_autofree char *out = NULL, *err = NULL;
  const char *no_model[] = {"eval", "--dataset", f->dir, NULL};
  g_assert_cmpint(run(no_model, &out, &err), ==, 2);
  g_assert_nonnull(strstr(err, "--model"));

  /* a model file that is not one */
  g_autofree char *bogus = g_build_filename(f->dir, "bogus.safetensors", NULL);
  g_assert_true(g_file_set_contents(bogus, "not a model", -1, NULL));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  const char *bad_model[] = {"eval", "--model", bogus, "--dataset", f->dir, NULL};
  g_assert_cmpint(run(bad_model, &out, &err), ==, 1);
  g_assert_nonnull(strstr(err, bogus));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add("/eval/train-eval", Fixture, NULL, fixture_setup, test_train_eval, fixture_teardown);
  g_test_add("/eval/usage-errors", Fixture, NULL, fixture_setup, test_usage_errors,
             fixture_teardown);
  return g_test_run();
}
