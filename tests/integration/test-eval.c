/* `inspectd train` + `inspectd eval` end to end: the test writes a small
 * dataset in MVTec AD layout (textured grey parts; defects are dark blots
 * with exact masks), trains a PatchCore model on its good images with the
 * builtin backbone, evaluates it with --json and --scores, and checks the
 * JSON keys, that an easy defect is found (high image and pixel AUROC), the
 * CSV (a row per test image, labels as the folders, RFC 4180 quoting of
 * paths with commas and quotes, --scores - on stdout alone), the threshold
 * summary against the CSV's own scores, and that the recommended threshold
 * separates the sets when they separate. Also the dataset errors: a defect
 * image without a mask is named, a folder without test/ is refused, and
 * missing flags are a usage error. */
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
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

/* RFC 4180: rows of fields, quoted fields may hold commas, quotes (doubled),
 * CR and LF; lines end in LF here (a CR before it is taken too). Fails the
 * test on a malformed quote. Returns a GPtrArray of GStrv rows. */
static GPtrArray *
parse_csv(const char *text)
{
  GPtrArray *rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  g_autoptr(GPtrArray) row = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GString) field = g_string_new(NULL);
  const char *p = text;
  while (*p) {
    if (*p == '"') {
      p++;
      for (;;) {
        g_assert_true(*p != '\0'); /* an unterminated quote */
        if (*p == '"' && p[1] == '"') {
          g_string_append_c(field, '"');
          p += 2;
        } else if (*p == '"') {
          p++;
          break;
        } else {
          g_string_append_c(field, *p++);
        }
      }
      g_assert_true(*p == ',' || *p == '\n' || *p == '\r' || *p == '\0');
    } else {
      while (*p && *p != ',' && *p != '\n' && *p != '\r') {
        g_assert_true(*p != '"'); /* a quote inside an unquoted field */
        g_string_append_c(field, *p++);
      }
    }
    g_ptr_array_add(row, g_strdup(field->str));
    g_string_truncate(field, 0);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p == '\r')
      p++;
    if (*p == '\n')
      p++;
    g_ptr_array_add(row, NULL);
    g_ptr_array_add(rows, g_ptr_array_steal(row, NULL));
  }
  g_assert_cmpuint(row->len, ==, 0);
  return rows;
}

static double
parse_number(const char *text)
{
  char *end = NULL;
  double v = g_ascii_strtod(text, &end);
  if (end == text || *end != '\0')
    g_error("not a number in the CSV: '%s'", text);
  return v;
}

/* The CSV of the test set, checked: the header, a row per image, five
 * fields, the type and label as the folder, the path relative to @dir,
 * the normalised score proportional to the raw one. Returns the highest good
 * and the lowest defect score, and the count of each. */
typedef struct {
  double max_good, min_defect;
  int n_good, n_defect;
} CsvSummary;

static CsvSummary
check_scores_csv(const char *csv, const char *dir, int n_expected)
{
  g_autoptr(GPtrArray) rows = parse_csv(csv);
  CsvSummary sum = {-INFINITY, INFINITY, 0, 0};
  g_assert_cmpuint(rows->len, ==, (guint)n_expected + 1);
  char **head = g_ptr_array_index(rows, 0);
  g_assert_cmpuint(g_strv_length(head), ==, 5);
  const char *names[] = {"path", "type", "label", "score", "raw_score"};
  for (int i = 0; i < 5; i++)
    g_assert_cmpstr(head[i], ==, names[i]);
  double ratio = NAN;
  for (guint i = 1; i < rows->len; i++) {
    char **f = g_ptr_array_index(rows, i);
    g_assert_cmpuint(g_strv_length(f), ==, 5);
    g_autofree char *prefix = g_strdup_printf("test/%s/", f[1]);
    g_assert_true(g_str_has_prefix(f[0], prefix));
    g_autofree char *full = g_build_filename(dir, f[0], NULL);
    g_assert_true(g_file_test(full, G_FILE_TEST_IS_REGULAR));
    gboolean good = strcmp(f[1], "good") == 0;
    g_assert_cmpstr(f[2], ==, good ? "0" : "1");
    double score = parse_number(f[3]), raw = parse_number(f[4]);
    g_assert_cmpfloat(score, >=, 0.0);
    g_assert_cmpfloat(raw, >, 0.0);
    /* normalised = 0.5 * raw / threshold: one ratio for every image */
    if (isnan(ratio))
      ratio = score / raw;
    g_assert_cmpfloat_with_epsilon(score / raw, ratio, 1e-5 * ratio);
    if (good) {
      sum.n_good++;
      sum.max_good = MAX(sum.max_good, score);
    } else {
      sum.n_defect++;
      sum.min_defect = MIN(sum.min_defect, score);
    }
  }
  return sum;
}

/* The number after @label (up to the end of its line) in @text. */
static double
number_after(const char *text, const char *label)
{
  const char *p = strstr(text, label);
  if (!p)
    g_error("no '%s' in the eval output:\n%s", label, text);
  return g_ascii_strtod(p + strlen(label), NULL);
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
  g_autofree char *csv_path = g_build_filename(f->dir, "scores.csv", NULL);
  const char *args[] = {"eval",   "--model", f->model,   "--dataset", f->dir,
                        "--json", json,      "--scores", csv_path,    NULL};
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
  const char *keys[] = {"image_auroc",     "pixel_auroc", "aupro",      "f1_max",
                        "threshold",       "latency_ms",  "images",     "per_type",
                        "model",           "dataset",     "separation", "at_model_threshold",
                        "at_f1_threshold", "recommended", "map_width",  "map_height",
                        "aspect_differ"};
  for (gsize i = 0; i < G_N_ELEMENTS(keys); i++)
    if (!json_object_has_member(o, keys[i]))
      g_error("eval JSON lacks \"%s\"", keys[i]);
  g_assert_cmpuint(json_object_get_size(o), ==, G_N_ELEMENTS(keys));
  JsonObject *lat = json_object_get_object_member(o, "latency_ms");
  g_assert_cmpfloat(member_double(lat, "mean"), >, 0.0);
  g_assert_cmpfloat(member_double(lat, "p50"), >, 0.0);
  g_assert_cmpfloat(member_double(lat, "p99"), >=, member_double(lat, "p50"));
  g_assert_cmpint(json_object_get_int_member(o, "images"), ==, N_TEST_GOOD + N_TEST_DEFECT);
  /* square parts: a square model, its maps at its input, no image stretched */
  g_assert_cmpint(json_object_get_int_member(o, "map_width"), ==,
                  json_object_get_int_member(o, "map_height"));
  g_assert_cmpint(json_object_get_int_member(o, "aspect_differ"), ==, 0);
  g_assert_null(strstr(out, "warning"));

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

  /* the CSV: a row per test image, labels as the folders */
  g_autofree char *csv = NULL;
  g_assert_true(g_file_get_contents(csv_path, &csv, NULL, NULL));
  CsvSummary cs = check_scores_csv(csv, f->dir, N_TEST_GOOD + N_TEST_DEFECT);
  g_assert_cmpint(cs.n_good, ==, N_TEST_GOOD);
  g_assert_cmpint(cs.n_defect, ==, N_TEST_DEFECT);

  /* the summary says what the CSV's scores say */
  g_assert_cmpfloat_with_epsilon(number_after(out, "\n  highest good "), cs.max_good, 1e-4);
  g_assert_cmpfloat_with_epsilon(number_after(out, "\n  lowest defect "), cs.min_defect, 1e-4);
  g_assert_cmpfloat_with_epsilon(number_after(out, "\n  gap "), cs.min_defect - cs.max_good, 1e-4);
  g_assert_nonnull(strstr(out, "at 0.5 (model)"));
  g_assert_nonnull(strstr(out, "(F1-max)"));
  g_assert_nonnull(strstr(out, "(recommended)"));
  g_assert_nonnull(strstr(out, "rule "));
  g_assert_nonnull(strstr(out, "margin "));
  JsonObject *sep = json_object_get_object_member(o, "separation");
  g_assert_cmpfloat_with_epsilon(member_double(sep, "max_good"), cs.max_good, 1e-6);
  g_assert_cmpfloat_with_epsilon(member_double(sep, "min_defect"), cs.min_defect, 1e-6);
  JsonObject *at_model = json_object_get_object_member(o, "at_model_threshold");
  g_assert_cmpfloat(member_double(at_model, "threshold"), ==, 0.5);
  g_assert_cmpint(json_object_get_int_member(at_model, "defects"), ==, N_TEST_DEFECT);
  g_assert_cmpint(json_object_get_int_member(at_model, "good"), ==, N_TEST_GOOD);

  /* the config lines to paste, and the threshold in them */
  const char *cfg = strstr(out, "\n[inspection]\nthreshold = ");
  g_assert_nonnull(cfg);
  double recommended = number_after(cfg, "threshold = ");
  JsonObject *rec = json_object_get_object_member(o, "recommended");
  g_assert_cmpfloat_with_epsilon(member_double(rec, "threshold"), recommended, 1e-9);
  int rejected = 0, caught = 0;
  g_autoptr(GPtrArray) rows = parse_csv(csv);
  for (guint i = 1; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    if ((float)parse_number(row[3]) >= (float)recommended) {
      caught += strcmp(row[2], "1") == 0;
      rejected += strcmp(row[2], "0") == 0;
    }
  }
  g_assert_cmpint(json_object_get_int_member(rec, "caught"), ==, caught);
  g_assert_cmpint(json_object_get_int_member(rec, "rejected"), ==, rejected);
  g_test_message("synthetic blots: good up to %.4f, defects from %.4f, recommended %.6g "
                 "(%d of %d defects fail, %d of %d good)",
                 cs.max_good, cs.min_defect, recommended, caught, cs.n_defect, rejected, cs.n_good);
  if (cs.min_defect > cs.max_good) {
    /* the sets separate: the recommendation fails every defect, no good part */
    g_assert_nonnull(strstr(out, "the sets separate"));
    g_assert_cmpfloat(recommended, >, cs.max_good);
    g_assert_cmpfloat(recommended, <, cs.min_defect);
    g_assert_cmpint(caught, ==, N_TEST_DEFECT);
    g_assert_cmpint(rejected, ==, 0);
    g_assert_true(json_object_get_boolean_member(rec, "separated"));
    g_assert_cmpfloat(member_double(rec, "margin_good"), >, 0.0);
    g_assert_cmpfloat(member_double(rec, "margin_defect"), >, 0.0);
    g_assert_nonnull(strstr(out, "the middle of the gap"));
  } else {
    g_assert_nonnull(strstr(out, "the sets overlap"));
  }

  /* --scores -: the CSV alone on stdout, the table on stderr */
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  const char *args_stdout[] = {"eval", "-q",       "--model", f->model, "--dataset",
                               f->dir, "--scores", "-",       NULL};
  g_assert_cmpint(run(args_stdout, &out, &err), ==, 0);
  g_assert_cmpstr(out, ==, csv);
  g_assert_nonnull(strstr(err, "image AUROC"));
  g_assert_nonnull(strstr(err, "\n[inspection]\nthreshold = "));

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

/* Paths with commas and double quotes come back whole through RFC 4180
 * quoting: a defect folder and a good file renamed so. */
static void
test_scores_quoting(Fixture *f, gconstpointer data)
{
  if (!train(f))
    return;
  const char *odd_type = "dark \"blot\", round";
  const char *odd_good = "0,\"0\".png";
  g_autofree char *from = g_build_filename(f->dir, "test", "blot", NULL);
  g_autofree char *to = g_build_filename(f->dir, "test", odd_type, NULL);
  g_assert_cmpint(g_rename(from, to), ==, 0);
  g_autofree char *gfrom = g_build_filename(f->dir, "ground_truth", "blot", NULL);
  g_autofree char *gto = g_build_filename(f->dir, "ground_truth", odd_type, NULL);
  g_assert_cmpint(g_rename(gfrom, gto), ==, 0);
  g_autofree char *good_from = g_build_filename(f->dir, "test", "good", "000.png", NULL);
  g_autofree char *good_to = g_build_filename(f->dir, "test", "good", odd_good, NULL);
  g_assert_cmpint(g_rename(good_from, good_to), ==, 0);

  g_autofree char *out = NULL, *err = NULL;
  const char *args[] = {"eval", "-q",       "--model", f->model, "--dataset",
                        f->dir, "--scores", "-",       NULL};
  g_assert_cmpint(run(args, &out, &err), ==, 0);
  /* the quoted fields as RFC 4180 writes them */
  g_assert_nonnull(strstr(out, "\"test/good/0,\"\"0\"\".png\",good,0,"));
  g_assert_nonnull(strstr(out, ",\"dark \"\"blot\"\", round\",1,"));
  CsvSummary cs = check_scores_csv(out, f->dir, N_TEST_GOOD + N_TEST_DEFECT);
  g_assert_cmpint(cs.n_defect, ==, N_TEST_DEFECT);
  g_autoptr(GPtrArray) rows = parse_csv(out);
  gboolean seen_good = FALSE;
  for (guint i = 1; i < rows->len; i++) {
    char **row = g_ptr_array_index(rows, i);
    g_autofree char *good_rel = g_build_filename("test", "good", odd_good, NULL);
    seen_good |= strcmp(row[0], good_rel) == 0;
    if (strcmp(row[2], "1") == 0)
      g_assert_cmpstr(row[1], ==, odd_type);
  }
  g_assert_true(seen_good);
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

  /* only --scores writes to stdout */
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  const char *json_stdout[] = {"eval", "--model", bogus, "--dataset", f->dir, "--json", "-", NULL};
  g_assert_cmpint(run(json_stdout, &out, &err), ==, 2);
  g_assert_nonnull(strstr(err, "--json"));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add("/eval/train-eval", Fixture, NULL, fixture_setup, test_train_eval, fixture_teardown);
  g_test_add("/eval/scores-quoting", Fixture, NULL, fixture_setup, test_scores_quoting,
             fixture_teardown);
  g_test_add("/eval/usage-errors", Fixture, NULL, fixture_setup, test_usage_errors,
             fixture_teardown);
  return g_test_run();
}
