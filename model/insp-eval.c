/* insp-eval: runs a model over an MVTec AD style dataset and computes the
 * report of insp-eval.h.
 *
 * The layout is scanned and checked whole (every defect image has its mask)
 * before the first image is scored, so a broken dataset fails in a second,
 * not after minutes of scoring. Maps and masks are appended to two flat
 * arrays at the model's map resolution ([n, h, w] float and byte), which is
 * what the metrics take. One thread enters at a time (the caller's); it owns
 * one scratch for the whole run. */
#include "insp-eval.h"
#include "insp-metrics.h"

#include <math.h>
#include <string.h>
#include <time.h>

typedef struct {
  char *rel;  /* test/<type>/<file>, relative to the dataset */
  char *path; /* full path */
  char *mask; /* full path of the mask, NULL for good */
  int type;   /* index into the type names; -1 for good */
} Item;

static void
item_clear(gpointer p)
{
  Item *it = p;
  g_free(it->rel);
  g_free(it->path);
  g_free(it->mask);
}

static gint
cmp_str(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in @dir that satisfy @want (a directory or an image file). */
static GPtrArray *
list_dir(const char *dir, gboolean dirs, GError **error)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, error);
  if (!d)
    return NULL;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    if (name[0] == '.')
      continue;
    g_autofree char *full = g_build_filename(dir, name, NULL);
    gboolean is_dir = g_file_test(full, G_FILE_TEST_IS_DIR);
    if (dirs ? is_dir : (!is_dir && insp_image_has_image_name(name)))
      g_ptr_array_add(names, g_strdup(name));
  }
  g_ptr_array_sort(names, cmp_str);
  return names;
}

/* Fills @items and @types (defect type names) from the layout. */
static gboolean
scan_dataset(const char *dataset, int limit, GArray *items, GPtrArray *types, GError **error)
{
  g_autofree char *test = g_build_filename(dataset, "test", NULL);
  if (!g_file_test(test, G_FILE_TEST_IS_DIR)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_DATASET,
                "%s: no test/ folder (expected the MVTec AD layout: test/<type>/*.png, "
                "ground_truth/<type>/<stem>_mask.png)",
                dataset);
    return FALSE;
  }
  g_autoptr(GPtrArray) type_dirs = list_dir(test, TRUE, error);
  if (!type_dirs)
    return FALSE;

  int n_good = 0, n_defect = 0;
  for (guint t = 0; t < type_dirs->len; t++) {
    const char *type = g_ptr_array_index(type_dirs, t);
    gboolean good = strcmp(type, "good") == 0;
    g_autofree char *tdir = g_build_filename(test, type, NULL);
    g_autoptr(GPtrArray) files = list_dir(tdir, FALSE, error);
    if (!files)
      return FALSE;
    if (files->len == 0)
      continue;
    int type_index = -1;
    if (!good) {
      type_index = (int)types->len;
      g_ptr_array_add(types, g_strdup(type));
    }
    guint n = limit > 0 ? MIN(files->len, (guint)limit) : files->len;
    for (guint f = 0; f < n; f++) {
      const char *file = g_ptr_array_index(files, f);
      Item it = {0};
      it.rel = g_build_filename("test", type, file, NULL);
      it.path = g_build_filename(tdir, file, NULL);
      it.type = type_index;
      if (!good) {
        const char *dot = strrchr(file, '.');
        g_autofree char *stem = g_strndup(file, (gsize)(dot - file));
        g_autofree char *mname = g_strconcat(stem, "_mask.png", NULL);
        it.mask = g_build_filename(dataset, "ground_truth", type, mname, NULL);
        if (!g_file_test(it.mask, G_FILE_TEST_IS_REGULAR)) {
          g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_DATASET,
                      "%s: no mask for the defect image %s (expected ground_truth/%s/%s)", dataset,
                      it.rel, type, mname);
          item_clear(&it);
          return FALSE;
        }
        n_defect++;
      } else {
        n_good++;
      }
      g_array_append_val(items, it);
    }
  }
  if (n_good == 0 || n_defect == 0) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_DATASET,
                "%s: needs images in test/good and in at least one defect type under test/ "
                "(found %d good, %d defect)",
                dataset, n_good, n_defect);
    return FALSE;
  }
  return TRUE;
}

/* The mask resized to out_w x out_h by nearest with half-pixel centres,
 * grey > 127 -> 1. */
static gboolean
load_mask(const char *path, int out_w, int out_h, guint8 *out, GError **error)
{
  g_autoptr(InspImage) m = insp_image_load(path, 1, error);
  if (!m)
    return FALSE;
  for (int y = 0; y < out_h; y++) {
    int sy = MIN((int)floor((y + 0.5) * m->height / out_h), m->height - 1);
    const guint8 *row = m->data + (gsize)sy * m->stride;
    for (int x = 0; x < out_w; x++) {
      int sx = MIN((int)floor((x + 0.5) * m->width / out_w), m->width - 1);
      out[(gsize)y * out_w + x] = row[sx] > 127;
    }
  }
  return TRUE;
}

static double
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void
insp_eval_report_free(InspEvalReport *r)
{
  if (!r)
    return;
  g_free(r->model_id);
  g_free(r->dataset);
  if (r->per_type) {
    for (guint i = 0; i < r->per_type->len; i++)
      g_free(g_array_index(r->per_type, InspEvalType, i).name);
    g_array_unref(r->per_type);
  }
  if (r->images) {
    for (guint i = 0; i < r->images->len; i++) {
      InspEvalImage *im = &g_array_index(r->images, InspEvalImage, i);
      g_free(im->path);
      g_free(im->type);
    }
    g_array_unref(r->images);
  }
  g_free(r);
}

/* The statistics a threshold is set from, on the normalised scores: what
 * the daemon compares with [inspection] threshold. */
static void
threshold_summary(InspEvalReport *r, const float *scores, const guint8 *labels, int n)
{
  const gsize un = (gsize)n;
  /* the scan guarantees both classes; a NaN score leaves these unset */
  r->separation.gap = NAN;
  r->separation.max_good = r->separation.min_defect = NAN;
  r->recommended.threshold = r->recommended.margin_good = r->recommended.margin_defect = NAN;
  insp_metrics_separation(scores, labels, un, &r->separation);
  insp_metrics_rates(scores, labels, un, (float)INSP_EVAL_MODEL_THRESHOLD, &r->at_model);
  insp_metrics_rates(scores, labels, un, (float)r->threshold, &r->at_f1);
  if (!isfinite(r->threshold)) {
    r->at_f1.recall = r->at_f1.false_reject_rate = NAN;
    r->at_f1.caught = r->at_f1.rejected = 0;
  }
  if (insp_metrics_recommend_threshold(scores, labels, un, &r->recommended))
    insp_metrics_rates(scores, labels, un, (float)r->recommended.threshold, &r->at_recommended);
  else
    r->at_recommended = (InspMetricsRates){0, 0, 0, 0, NAN, NAN};
}

InspEvalReport *
insp_eval_run(const InspModel *m, const char *dataset, int limit_per_type,
              InspEvalProgressFunc progress, gpointer user_data, GError **error)
{
  g_return_val_if_fail(m != NULL && dataset != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  g_autoptr(GArray) items = g_array_new(FALSE, TRUE, sizeof(Item));
  g_array_set_clear_func(items, item_clear);
  g_autoptr(GPtrArray) types = g_ptr_array_new_with_free_func(g_free);
  if (!scan_dataset(dataset, limit_per_type, items, types, error))
    return NULL;

  g_autoptr(InspModelScratch) scratch = insp_model_scratch_new(m, error);
  if (!scratch)
    return NULL;

  const int n = (int)items->len;
  g_autofree float *scores = g_new(float, n); /* normalised */
  g_autofree float *raw = g_new(float, n);    /* before normalisation */
  g_autofree guint8 *labels = g_new(guint8, n);
  g_autofree double *ms = g_new(double, n);
  g_autofree float *maps = NULL;   /* [n, mh, mw] */
  g_autofree guint8 *masks = NULL; /* [n, mh, mw], 0/1 */
  int mw = 0, mh = 0, aspect_differ = 0;
  double aspect_worst = 1.0;
  gsize plane = 0;

  for (int i = 0; i < n; i++) {
    const Item *it = &g_array_index(items, Item, i);
    g_autoptr(InspImage) img = insp_image_load(it->path, 3, error);
    if (!img) {
      g_prefix_error(error, "%s: ", it->rel);
      return NULL;
    }
    InspScoreResult res;
    double t0 = now_ms();
    if (!insp_model_score(m, scratch, img->data, img->width, img->height, img->stride, &res,
                          error)) {
      g_prefix_error(error, "%s: ", it->rel);
      return NULL;
    }
    ms[i] = now_ms() - t0;
    double ratio;
    if (insp_model_aspect_differs(m, img->width, img->height, &ratio)) {
      aspect_differ++;
      if (fabs(log(ratio)) > fabs(log(aspect_worst)))
        aspect_worst = ratio;
    }
    if (i == 0) {
      /* the map size is the model's: known from the first image on */
      mw = res.map_width;
      mh = res.map_height;
      plane = (gsize)mw * mh;
      maps = g_try_new(float, plane *(gsize)n);
      masks = g_try_new0(guint8, plane * (gsize)n);
      if (!maps || !masks) {
        g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_DATASET,
                    "%s: not enough memory for %d maps of %dx%d (use --limit)", dataset, n, mw, mh);
        return NULL;
      }
    }
    if (res.map_width != mw || res.map_height != mh) {
      /* a tiled model's map follows the frame */
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_DATASET,
                  "%s: %dx%d gives a %dx%d map, the first image a %dx%d one: a tiled model "
                  "evaluates images of one size",
                  it->rel, img->width, img->height, res.map_width, res.map_height, mw, mh);
      return NULL;
    }
    scores[i] = res.score;
    raw[i] = res.raw_score;
    labels[i] = it->type >= 0;
    memcpy(maps + plane * (gsize)i, res.map, plane * sizeof(float));
    /* masks of good images stay zero */
    if (it->mask && !load_mask(it->mask, mw, mh, masks + plane * (gsize)i, error)) {
      g_prefix_error(error, "%s: ", it->mask);
      return NULL;
    }
    if (progress)
      progress(i + 1, n, it->rel, res.score, ms[i], user_data);
  }

  g_autoptr(InspEvalReport) r = g_new0(InspEvalReport, 1);
  r->model_id = g_strdup(insp_model_get_id(m));
  r->dataset = g_strdup(dataset);
  r->n_images = n;
  for (int i = 0; i < n; i++) {
    r->n_defect += labels[i];
    r->n_good += !labels[i];
  }
  r->map_width = mw;
  r->map_height = mh;
  r->aspect_differ = aspect_differ;
  r->aspect_worst = aspect_worst;
  /* Image metrics rank the raw scores: the normalisation is monotone, so
   * they are the same as on normalised scores, unless the normalisation
   * clamps (e.g. at 0), which would tie every image below its base. */
  r->image_auroc = insp_metrics_auroc(raw, labels, (gsize)n);
  r->pixel_auroc = insp_metrics_auroc(maps, masks, plane * (gsize)n);
  r->aupro = insp_metrics_aupro(maps, masks, n, mw, mh, INSP_EVAL_MAX_FPR);
  r->f1_max = r->threshold = NAN;
  double raw_threshold = NAN;
  if (insp_metrics_f1_max(raw, labels, (gsize)n, &r->f1_max, &raw_threshold)) {
    /* the threshold in normalised units: the normalised score of the image
     * whose raw score is the raw threshold */
    for (int i = 0; i < n; i++)
      if (raw[i] == (float)raw_threshold) {
        r->threshold = scores[i];
        break;
      }
  }
  threshold_summary(r, scores, labels, n);
  r->images = g_array_sized_new(FALSE, TRUE, sizeof(InspEvalImage), (guint)n);
  for (int i = 0; i < n; i++) {
    const Item *it = &g_array_index(items, Item, i);
    InspEvalImage im = {g_strdup(it->rel),
                        g_strdup(it->type >= 0 ? g_ptr_array_index(types, it->type) : "good"),
                        it->type >= 0, scores[i], raw[i]};
    g_array_append_val(r->images, im);
  }
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += ms[i];
  r->latency_mean_ms = sum / n;
  r->latency_p50_ms = insp_metrics_quantile(ms, (gsize)n, 0.50);
  r->latency_p99_ms = insp_metrics_quantile(ms, (gsize)n, 0.99);

  /* each defect type against good */
  r->per_type = g_array_new(FALSE, TRUE, sizeof(InspEvalType));
  g_autofree float *ts = g_new(float, n);
  g_autofree guint8 *tl = g_new(guint8, n);
  for (guint t = 0; t < types->len; t++) {
    gsize k = 0;
    int count = 0;
    for (int i = 0; i < n; i++) {
      const Item *it = &g_array_index(items, Item, i);
      if (it->type == -1 || it->type == (int)t) {
        ts[k] = raw[i];
        tl[k++] = it->type >= 0;
        count += it->type >= 0;
      }
    }
    InspEvalType et = {g_strdup(g_ptr_array_index(types, t)), count, insp_metrics_auroc(ts, tl, k)};
    g_array_append_val(r->per_type, et);
  }
  return g_steal_pointer(&r);
}

static void
add_number(JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name(b, key);
  if (isfinite(v))
    json_builder_add_double_value(b, v);
  else
    json_builder_add_null_value(b);
}

static void
add_int(JsonBuilder *b, const char *key, gint64 v)
{
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, v);
}

/* The members of the decisions at @threshold (the object is the caller's). */
static void
add_rates(JsonBuilder *b, double threshold, const InspMetricsRates *x)
{
  add_number(b, "threshold", threshold);
  add_number(b, "recall", x->recall);
  add_number(b, "false_reject_rate", x->false_reject_rate);
  add_int(b, "caught", (gint64)x->caught);
  add_int(b, "defects", (gint64)x->n_defect);
  add_int(b, "rejected", (gint64)x->rejected);
  add_int(b, "good", (gint64)x->n_good);
}

/* The rule the recommendation followed, in words (JSON "rule" and the
 * table). */
static const char *
recommendation_rule(const InspEvalReport *r)
{
  if (!isfinite(r->recommended.threshold))
    return "none: no threshold fails a larger share of the defects than of the good images";
  if (r->separation.gap > 0)
    return "the middle of the gap between the highest good and the lowest defect score";
  return "the sets overlap: the largest recall - false-reject rate, lowered to the middle of "
         "the empty interval under it";
}

JsonNode *
insp_eval_report_to_json(const InspEvalReport *r)
{
  g_return_val_if_fail(r != NULL, NULL);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  add_number(b, "image_auroc", r->image_auroc);
  add_number(b, "pixel_auroc", r->pixel_auroc);
  add_number(b, "aupro", r->aupro);
  add_number(b, "f1_max", r->f1_max);
  add_number(b, "threshold", r->threshold);
  json_builder_set_member_name(b, "latency_ms");
  json_builder_begin_object(b);
  add_number(b, "mean", r->latency_mean_ms);
  add_number(b, "p50", r->latency_p50_ms);
  add_number(b, "p99", r->latency_p99_ms);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "images");
  json_builder_add_int_value(b, r->n_images);
  json_builder_set_member_name(b, "map_width");
  json_builder_add_int_value(b, r->map_width);
  json_builder_set_member_name(b, "map_height");
  json_builder_add_int_value(b, r->map_height);
  json_builder_set_member_name(b, "aspect_differ");
  json_builder_add_int_value(b, r->aspect_differ);
  json_builder_set_member_name(b, "per_type");
  json_builder_begin_object(b);
  for (guint i = 0; r->per_type && i < r->per_type->len; i++) {
    const InspEvalType *t = &g_array_index(r->per_type, InspEvalType, i);
    add_number(b, t->name, t->image_auroc);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, r->model_id ? r->model_id : "");
  json_builder_set_member_name(b, "dataset");
  json_builder_add_string_value(b, r->dataset ? r->dataset : "");

  json_builder_set_member_name(b, "separation");
  json_builder_begin_object(b);
  add_number(b, "max_good", r->separation.max_good);
  add_number(b, "min_defect", r->separation.min_defect);
  add_number(b, "gap", r->separation.gap);
  add_int(b, "good_over", (gint64)r->separation.good_over);
  add_int(b, "defect_under", (gint64)r->separation.defect_under);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "at_model_threshold");
  json_builder_begin_object(b);
  add_rates(b, INSP_EVAL_MODEL_THRESHOLD, &r->at_model);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "at_f1_threshold");
  json_builder_begin_object(b);
  add_rates(b, r->threshold, &r->at_f1);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "recommended");
  json_builder_begin_object(b);
  add_rates(b, r->recommended.threshold, &r->at_recommended);
  json_builder_set_member_name(b, "rule");
  json_builder_add_string_value(b, recommendation_rule(r));
  json_builder_set_member_name(b, "separated");
  json_builder_add_boolean_value(b, r->recommended.separated);
  add_number(b, "margin_good", r->recommended.margin_good);
  add_number(b, "margin_defect", r->recommended.margin_defect);
  json_builder_end_object(b);

  json_builder_end_object(b);
  return json_builder_get_root(b);
}

gboolean
insp_eval_report_write_json(const InspEvalReport *r, const char *path, GError **error)
{
  g_return_val_if_fail(r != NULL && path != NULL, FALSE);
  g_autoptr(JsonNode) root = insp_eval_report_to_json(r);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  gsize len = 0;
  g_autofree char *text = json_generator_to_data(gen, &len);
  g_autofree char *with_nl = g_strconcat(text, "\n", NULL);
  return g_file_set_contents(path, with_nl, -1, error);
}

static void
append_metric(GString *s, const char *name, double v)
{
  if (isfinite(v))
    g_string_append_printf(s, "%-14s %.4f\n", name, v);
  else
    g_string_append_printf(s, "%-14s n/a\n", name);
}

/* "R (c of n defects fail), false rejects F (j of g good fail)" */
static void
append_rates(GString *s, const InspMetricsRates *x)
{
  g_string_append_printf(s,
                         "recall %.4f (%zu of %zu defects fail), false rejects %.4f (%zu of %zu "
                         "good fail)\n",
                         x->recall, x->caught, x->n_defect, x->false_reject_rate, x->rejected,
                         x->n_good);
}

/* The threshold summary, in normalised units: the gap, the decisions at
 * 0.5, at F1-max and at the recommended threshold. */
static void
append_threshold_summary(GString *s, const InspEvalReport *r)
{
  const InspMetricsSeparation *sep = &r->separation;
  if (!isfinite(sep->gap))
    return;
  g_string_append(s, "image scores (normalised: the model's threshold is 0.5; a part fails "
                     "at score >= threshold):\n");
  g_string_append_printf(s, "  %-24s %.4f (of %d good images)\n", "highest good", sep->max_good,
                         r->n_good);
  g_string_append_printf(s, "  %-24s %.4f (of %d defect images)\n", "lowest defect",
                         sep->min_defect, r->n_defect);
  if (sep->gap > 0)
    g_string_append_printf(s, "  %-24s %.4f: the sets separate\n", "gap", sep->gap);
  else
    g_string_append_printf(s,
                           "  %-24s %.4f: the sets overlap: %zu of %d good images score at or "
                           "above the lowest defect,\n  %-24s %zu of %d defects at or below the "
                           "highest good\n",
                           "gap", sep->gap, sep->good_over, r->n_good, "", sep->defect_under,
                           r->n_defect);
  g_string_append_printf(s, "  %-24s ", "at 0.5 (model)");
  append_rates(s, &r->at_model);
  if (isfinite(r->threshold)) {
    g_autofree char *label = g_strdup_printf("at %.4f (F1-max)", r->threshold);
    g_string_append_printf(s, "  %-24s ", label);
    append_rates(s, &r->at_f1);
  }
  const InspMetricsRecommendation *rec = &r->recommended;
  if (!isfinite(rec->threshold)) {
    g_string_append_printf(s, "  %-24s %s\n", "recommended", recommendation_rule(r));
    return;
  }
  g_autofree char *label = g_strdup_printf("at %.*f (recommended)", rec->decimals, rec->threshold);
  g_string_append_printf(s, "  %-24s ", label);
  append_rates(s, &r->at_recommended);
  g_string_append_printf(s, "  %-24s %.*f\n", "recommended", rec->decimals, rec->threshold);
  g_string_append_printf(s, "  %-24s %s\n", "rule", recommendation_rule(r));
  g_string_append_printf(s, "  %-24s ", "margin");
  if (isfinite(rec->margin_good))
    g_string_append_printf(s, "%.4g over the highest good that passes", rec->margin_good);
  else
    g_string_append(s, "no good image passes");
  if (isfinite(rec->margin_defect))
    g_string_append_printf(s, ", %.4g under the lowest defect that fails\n", rec->margin_defect);
  else
    g_string_append(s, ", no defect fails\n");
}

char *
insp_eval_report_format(const InspEvalReport *r)
{
  g_return_val_if_fail(r != NULL, NULL);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%-14s %s\n", "dataset", r->dataset);
  g_string_append_printf(s, "%-14s %s\n", "model", r->model_id);
  g_string_append_printf(s, "%-14s %d (%d good, %d defect), maps %dx%d\n", "images", r->n_images,
                         r->n_good, r->n_defect, r->map_width, r->map_height);
  if (r->aspect_differ > 0)
    g_string_append_printf(s,
                           "%-14s %d of %d images differ from the training images' aspect by "
                           "more than %.0f %% (up to %.2fx): they are stretched to the model's "
                           "input; a model trained on images like them scores them better\n",
                           "warning", r->aspect_differ, r->n_images,
                           100 * INSP_MODEL_ASPECT_TOLERANCE, r->aspect_worst);
  append_metric(s, "image AUROC", r->image_auroc);
  append_metric(s, "pixel AUROC", r->pixel_auroc);
  append_metric(s, "AUPRO@0.3", r->aupro);
  if (isfinite(r->f1_max))
    g_string_append_printf(s, "%-14s %.4f at threshold %.4f\n", "F1-max", r->f1_max, r->threshold);
  g_string_append_printf(s, "%-14s mean %.2f  p50 %.2f  p99 %.2f\n", "latency ms",
                         r->latency_mean_ms, r->latency_p50_ms, r->latency_p99_ms);
  if (r->per_type && r->per_type->len > 0) {
    g_string_append(s, "image AUROC per defect type (against good):\n");
    for (guint i = 0; i < r->per_type->len; i++) {
      const InspEvalType *t = &g_array_index(r->per_type, InspEvalType, i);
      if (isfinite(t->image_auroc))
        g_string_append_printf(s, "  %-22s %.4f  (%d images)\n", t->name, t->image_auroc,
                               t->n_images);
      else
        g_string_append_printf(s, "  %-22s n/a  (%d images)\n", t->name, t->n_images);
    }
  }
  append_threshold_summary(s, r);
  return g_string_free(s, FALSE);
}

/* One field of a CSV row, quoted as RFC 4180 says when it must be. */
static void
append_csv_field(GString *s, const char *field)
{
  if (strpbrk(field, ",\"\r\n") == NULL) {
    g_string_append(s, field);
    return;
  }
  g_string_append_c(s, '"');
  for (const char *p = field; *p; p++) {
    if (*p == '"')
      g_string_append_c(s, '"');
    g_string_append_c(s, *p);
  }
  g_string_append_c(s, '"');
}

char *
insp_eval_report_format_scores(const InspEvalReport *r)
{
  g_return_val_if_fail(r != NULL, NULL);
  GString *s = g_string_new("path,type,label,score,raw_score\n");
  for (guint i = 0; r->images && i < r->images->len; i++) {
    const InspEvalImage *im = &g_array_index(r->images, InspEvalImage, i);
    char num[G_ASCII_DTOSTR_BUF_SIZE];
    append_csv_field(s, im->path);
    g_string_append_c(s, ',');
    append_csv_field(s, im->type);
    g_string_append_printf(s, ",%d,", im->defect ? 1 : 0);
    g_string_append(s, g_ascii_formatd(num, sizeof num, "%.9g", im->score));
    g_string_append_c(s, ',');
    g_string_append(s, g_ascii_formatd(num, sizeof num, "%.9g", im->raw_score));
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}
