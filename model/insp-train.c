/* insp-train: fits a PatchCore or PaDiM model on good images, and its score
 * normalisation.
 *
 * Images are streamed: each is decoded by the caller's source, preprocessed
 * (insp_image_preprocess, the same path as scoring), run through the backbone
 * and turned into patch features, which go where the detector class says
 * (fit_dest: PatchCore keeps every image's, PaDiM sums them; what that
 * costs in memory is in detector-*.c), then dropped. Nothing here knows
 * which detector it trains.
 *
 * Score normalisation (so that 0.5 is a sensible default threshold for every
 * model): a seeded random hold-out of the good images (15 %, at least 1, at
 * most 50) is left out of a first fit; the held-out images are scored by
 * that model exactly as at inspection. From their raw image scores
 *   threshold = max(q75 + 3 * (q75 - q25), 1.1 * median)
 * (Tukey's "far out" fence: a good part scoring above it is an outlier among
 * good parts; the floor keeps a margin when the good scores are nearly
 * equal), and normalised = 0.5 * raw / threshold. The anomaly map gets the
 * same rule over the held-out maps' per-image maxima, so that a typical good
 * part has no pixel at or above 0.5 (no region). Quantiles rather than the
 * max: every real set here had one held-out good image far above the others
 * (bottle PaDiM 110 vs a median of 27), and a max-based rule let that one
 * image set the threshold. Then the held-out images are added back and the
 * final model is fitted on all images (a second coreset); scores of the
 * final model on good parts can only be lower than those of the first fit,
 * so the normalisation stays on the safe side.
 *
 * Input shape (InspTrainOptions.aspect NATIVE, the default): a first pass
 * takes every image's size (InspTrainOptions.size_of, or the image from the
 * source, decoded for its size alone); the second pass checks that each image
 * has the size the first gave; the model's
 * aspect is the median of the images' aspects (width / height: one image's
 * when they share one, as a camera's do), the longer side the input size and
 * the shorter rounded to a multiple of 8 (insp_model_input_shape_for_aspect).
 * Images whose aspect differs from the median by more than
 * INSP_MODEL_ASPECT_TOLERANCE are counted (the train summary says how many):
 * like every image, they are resized to the model's shape, so stretched.
 * PaDiM gets the same rule: its Gaussians are tied to one grid, and stretching
 * keeps each position where it is in the frame (and the whole frame in view),
 * where padding or cropping to the common aspect would move or cut it.
 *
 * Tiles (InspTrainOptions.tiles > 1): every image is cut into its tiles
 * (insp_tiles_layout, the same as scoring's) and every tile is a unit the
 * detector fits, all in one bank (PatchCore) or one set of Gaussians (PaDiM);
 * the shape rule above applies to the tiles' aspect. The hold-out is by
 * image, all of an image's tiles together, and a held-out image's scores
 * are those scoring gives it: the highest tile's image score and the
 * highest of its tiles' map values (what the stitched map's maximum is,
 * but for the stitching's nearest sampling).
 *
 * Memory: the patch features of every unit (PatchCore: units x P x D
 * floats, 545 MB for 666 images at 320 px) are held from the features phase
 * through the coresets, so everything else held beside them counts. The
 * backbone as loaded (mobilenetv2: 17.6 MB, folded weights and the weights
 * as loaded, for the model file) is replaced, once the stages are probed,
 * by a forward copy up to the later stage (2.1 MB), which runs the features
 * and stays in the model during the fits; after the final fit has freed the
 * features, the backbone is read again from the same file (or built again)
 * and must equal the copy up to that stage bit for bit (else the training
 * fails: the file changed). The backbone scratch keeps the model's two
 * stages only. PatchCore selects both banks while the features are held and
 * then keeps the held-out images' alone, so its calibration comes after the
 * second coreset (detector-patchcore.c). Freed blocks' pages go back to the
 * system between the phases (release_freed_memory). What that leaves at the
 * peak is in model/README.md ("Speed and memory").
 *
 * Threads: the caller's; OpenBLAS may use its own. */
#include "insp-detector-private.h"
#include "insp-ops.h"

#include <math.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define INSP_NORM_FENCE 3.0 /* Tukey's far-out fence */
#define INSP_NORM_FLOOR 1.1
#define INSP_HOLD_OUT_FRACTION 0.15
#define INSP_HOLD_OUT_MAX 50

void
insp_train_options_init(InspTrainOptions *opt)
{
  g_return_if_fail(opt != NULL);
  memset(opt, 0, sizeof *opt);
  opt->backbone = "builtin";
  opt->detector = INSP_DETECTOR_PATCHCORE;
  opt->coreset_fraction = INSP_PATCHCORE_DEFAULT_CORESET;
  opt->input_size = 0;
  opt->aspect = INSP_TRAIN_ASPECT_NATIVE;
  opt->tiles = 0;
  opt->tile_overlap = 0.25;
  opt->padim_channels = 0;
  opt->image_score = INSP_IMAGE_SCORE_DEFAULT;
  opt->neighbours = 0;
  opt->seed = 0;
}

static int
hold_out_count(int n)
{
  int h = (int)floor(n * INSP_HOLD_OUT_FRACTION + 0.5);

  return CLAMP(h, 1, MIN(INSP_HOLD_OUT_MAX, n - 2));
}

static int
cmp_float(const void *a, const void *b)
{
  float x = *(const float *)a, y = *(const float *)b;

  return (x > y) - (x < y);
}

/* Linear-interpolated quantile of sorted @v. */
static double
quantile(const float *v, gsize n, double q)
{
  double pos = q * (double)(n - 1);
  gsize lo = (gsize)pos, hi = MIN(lo + 1, n - 1);

  return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

/* The rule in the header comment, on raw scores of good held-out parts
 * (sorts @values). */
static void
fit_norm(float *values, gsize n, double *base, double *thr)
{
  double q25, q50, q75;

  qsort(values, n, sizeof(float), cmp_float);
  q25 = quantile(values, n, 0.25);
  q50 = quantile(values, n, 0.5);
  q75 = quantile(values, n, 0.75);
  *base = q50;
  *thr = MAX(q75 + INSP_NORM_FENCE * (q75 - q25), INSP_NORM_FLOOR * q50);
  if (!(*thr > 0.0))
    *thr = MAX(values[n - 1], 1e-12);
}

/* RGB view of @img (grey expanded into @tmp). */
static const guint8 *
rgb_of(const InspImage *img, guint8 **tmp, int *stride)
{
  if (img->channels == 3) {
    *stride = img->stride;
    return img->data;
  }
  g_free(*tmp);
  *tmp = g_new(guint8, (gsize)img->width * img->height * 3);
  for (int y = 0; y < img->height; y++)
    for (int x = 0; x < img->width; x++) {
      guint8 v = img->data[(gsize)y * img->stride + x];
      guint8 *o = *tmp + ((gsize)y * img->width + x) * 3;

      o[0] = o[1] = o[2] = v;
    }
  *stride = img->width * 3;
  return *tmp;
}

/* Scores the held-out units' features held[u] (unit u of held-out image
 * owner[u], 0..n_hold-1) with the model fitted without them and sets m->norm
 * from the images' scores and the maxima of their anomaly maps (each the
 * highest of its units'). */
static gboolean
calibrate(InspModel *m, const float *const *held, const int *owner, int n_units, int n_hold,
          InspProgressFunc progress, gpointer progress_data, GError **error)
{
  g_autoptr(InspModelScratch) s = insp_model_scratch_new_for_features(m, error);
  gsize pixels = (gsize)m->input_width * m->input_height;
  g_autofree float *img_scores = g_new(float, n_hold);
  g_autofree float *map_max = g_new(float, n_hold);
  g_autofree float *map = g_new(float, pixels);

  if (s == NULL)
    return FALSE;
  for (int h = 0; h < n_hold; h++)
    img_scores[h] = map_max[h] = -INFINITY;
  for (int u = 0; u < n_units; u++) {
    double t1, t2;
    float mx, v;

    v = insp_model_score_features(m, s, held[u], map, &t1, &t2);
    mx = map[0];
    for (gsize i = 1; i < pixels; i++)
      mx = MAX(mx, map[i]);
    img_scores[owner[u]] = MAX(img_scores[owner[u]], v);
    map_max[owner[u]] = MAX(map_max[owner[u]], mx);
    if (progress)
      progress("calibrate", u + 1, n_units, progress_data);
  }
  fit_norm(img_scores, n_hold, &m->norm.image_base, &m->norm.image_threshold);
  fit_norm(map_max, n_hold, &m->norm.pixel_base, &m->norm.pixel_threshold);
  if (g_log_writer_default_would_drop(G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN) == FALSE) {
    g_autoptr(GString) a = g_string_new("held-out image scores:");
    g_autoptr(GString) b = g_string_new("held-out map maxima:");

    for (int h = 0; h < n_hold; h++) {
      g_string_append_printf(a, " %.3f", img_scores[h]);
      g_string_append_printf(b, " %.3f", map_max[h]);
    }
    g_debug("%s", a->str);
    g_debug("%s", b->str);
  }
  g_debug("normalisation: image base %g threshold %g, pixel base %g threshold %g",
          m->norm.image_base, m->norm.image_threshold, m->norm.pixel_base, m->norm.pixel_threshold);
  return TRUE;
}

/* Gives the pages of freed blocks back to the system. glibc keeps a freed
 * block that is not at the top of its heap, and its mmap threshold rises to
 * the largest block freed, so training's big buffers (the backbone as
 * loaded, the backbone scratch, the coreset's arrays) come from the heap and
 * would stay resident, unused, beside the features after they are freed. */
static void
release_freed_memory(void)
{
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* The later of the model's two stages in the backbone's forward order. */
static const char *
last_stage(const InspModel *m)
{
  const char *const *names = insp_backbone_get_stage_names(m->backbone);

  for (int i = 0; names[i] != NULL; i++)
    if (g_str_equal(names[i], m->fine_stage))
      return m->coarse_stage; /* the coarse one comes after it (or is it) */
    else if (g_str_equal(names[i], m->coarse_stage))
      return m->fine_stage;
  g_return_val_if_reached(m->coarse_stage);
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

/* The first pass (header comment): every image's size into @size [2n],
 * then with @native m->input_width and input_height from the images' (or
 * their tiles') aspect, and the images stretched counted. */
static gboolean
scan_sizes(InspModel *m, gboolean native, int n_images, InspImageSourceFunc next,
           InspImageSizeFunc size_of, gpointer source_data, int *size, InspProgressFunc progress,
           gpointer progress_data, GError **error)
{
  g_autofree double *sorted = g_new(double, n_images);
  double median;
  int uw, uh;

  for (int i = 0; i < n_images; i++) {
    g_autoptr(GError) e = NULL;
    int w = 0, h = 0;

    if (size_of != NULL) {
      if (!size_of(i, source_data, &w, &h, &e))
        w = h = 0;
    } else {
      g_autoptr(InspImage) img = next(i, source_data, &e);

      if (img != NULL) {
        w = img->width;
        h = img->height;
      }
    }
    if (w <= 0 || h <= 0) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "image %d: %s", i,
                  e ? e->message : "no image");
      return FALSE;
    }
    size[2 * i] = w;
    size[2 * i + 1] = h;
    insp_model_unit_shape(m, w, h, &uw, &uh);
    sorted[i] = (double)uw / uh;
    if (progress)
      progress("sizes", i + 1, n_images, progress_data);
  }
  if (!native)
    return TRUE;
  qsort(sorted, n_images, sizeof(double), cmp_double);
  /* the lower median: one image's aspect, never a mean of two */
  median = sorted[(n_images - 1) / 2];
  m->train_aspect = median;
  insp_model_input_shape_for_aspect(m->input_size, median, &m->input_width, &m->input_height);
  m->train_aspect_differ = 0;
  for (int i = 0; i < n_images; i++)
    if (insp_model_aspect_differs(m, size[2 * i], size[2 * i + 1], NULL))
      m->train_aspect_differ++;
  g_debug("input %dx%d from the median aspect %.4f of %d images (%d stretched)", m->input_width,
          m->input_height, median, n_images, m->train_aspect_differ);
  return TRUE;
}

/* A fit in progress, freed on every way out. */
typedef struct {
  const InspDetectorClass *klass;
  InspDetectorFit *fit;
} FitGuard;

static void
fit_guard_clear(FitGuard *g)
{
  if (g->fit != NULL)
    g->klass->fit_free(g_steal_pointer(&g->fit));
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(FitGuard, fit_guard_clear)

InspModel *
insp_model_train(const InspTrainOptions *opt, int n_images, InspImageSourceFunc next,
                 gpointer source_data, InspProgressFunc progress, gpointer progress_data,
                 GError **error)
{
  const InspDetectorClass *klass = insp_detector_class_for_kind(opt->detector);
  g_autoptr(InspModel) m = NULL;
  g_autoptr(InspModelScratch) s = NULL;
  g_auto(FitGuard) guard = {klass, NULL};
  gboolean ok;
  g_autofree gboolean *held_mask = NULL;
  g_autofree int *slot = NULL;
  g_autofree guint8 *grey_tmp = NULL;
  g_autofree const float **held = NULL;
  g_autofree int *size = NULL, *unit_base = NULL, *owner = NULL;
  int n_units, n_train_units;
  g_autoptr(GDateTime) now = NULL;
  const char *fine = NULL, *coarse = NULL, *last;
  const char *backbone_path = opt->backbone ? opt->backbone : "builtin";
  g_autoptr(InspBackbone) full = NULL;
  int n_hold, n_train;
  guint64 st;

  g_return_val_if_fail(opt != NULL && next != NULL, NULL);
  if (n_images < 3) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "training needs at least 3 good images, got %d", n_images);
    return NULL;
  }
  if (klass == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "unknown detector %d (this build has %s)", (int)opt->detector,
                insp_detector_kind_list());
    return NULL;
  }
  if (opt->input_size != 0 && (opt->input_size < 32 || opt->input_size > INSP_MAX_INPUT_SIZE)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "input size %d is not in [32, %d]",
                opt->input_size, INSP_MAX_INPUT_SIZE);
    return NULL;
  }

  if (opt->tiles < 0 || opt->tiles > INSP_MODEL_MAX_TILES ||
      (opt->tiles > 1 &&
       !(opt->tile_overlap >= 0.0 && opt->tile_overlap <= INSP_MODEL_MAX_TILE_OVERLAP))) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "tiles %d with overlap %g: tiles must be in [0, %d], the overlap in [0, %g]",
                opt->tiles, opt->tile_overlap, INSP_MODEL_MAX_TILES, INSP_MODEL_MAX_TILE_OVERLAP);
    return NULL;
  }

  m = insp_model_alloc(klass);
  if (opt->tiles > 1) {
    m->tiles = opt->tiles;
    m->tile_overlap = opt->tile_overlap;
  }
  m->backbone = insp_backbone_new_from_file(backbone_path, error);
  if (m->backbone == NULL)
    return NULL;
  if (opt->input_size != 0)
    m->input_size = opt->input_size;
  else if (klass->default_input_size != 0)
    m->input_size = klass->default_input_size;
  else
    m->input_size = insp_backbone_get_input_size(m->backbone);
  m->input_width = m->input_height = m->input_size;
  size = g_new0(int, 2 * (gsize)n_images);
  if ((opt->aspect == INSP_TRAIN_ASPECT_NATIVE || m->tiles > 1) &&
      !scan_sizes(m, opt->aspect == INSP_TRAIN_ASPECT_NATIVE, n_images, next, opt->size_of,
                  source_data, size, progress, progress_data, error))
    return NULL;
  insp_backbone_get_normalisation(m->backbone, m->mean, m->std);
  insp_backbone_get_default_stages(m->backbone, &fine, &coarse);
  if (opt->stages != NULL) {
    g_auto(GStrv) sv = g_strsplit(opt->stages, ",", -1);

    if (g_strv_length(sv) != 2 || sv[0][0] == '\0' || sv[1][0] == '\0') {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                  "stages '%s' are not two stage names FINE,COARSE", opt->stages);
      return NULL;
    }
    m->fine_stage = g_strdup(sv[0]);
    m->coarse_stage = g_strdup(sv[1]);
  } else {
    m->fine_stage = g_strdup(fine);
    m->coarse_stage = g_strdup(coarse);
  }
  m->seed = opt->seed;
  if (!insp_model_probe_stages(m, error))
    return NULL;
  if (m->spec.h < m->spec.ch || m->spec.w < m->spec.cw) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "stage %s (%dx%d) is coarser than %s (%dx%d): give the finer stage first",
                m->fine_stage, m->spec.w, m->spec.h, m->coarse_stage, m->spec.cw, m->spec.ch);
    return NULL;
  }
  if (!klass->configure(m, opt, error))
    return NULL;
  insp_model_finish_setup(m);
  /* The features need the network up to the later stage, the weights as
   * loaded only when the model is written: a copy without them runs the
   * features and stays in the model during the fits, and the backbone is
   * read again at the end (header comment, "Memory"). */
  last = last_stage(m);
  {
    InspBackbone *copy = insp_backbone_new_forward_copy(m->backbone, last);

    insp_backbone_unref(m->backbone);
    m->backbone = copy;
  }
  release_freed_memory();
  s = insp_model_scratch_new(m, error);
  if (s == NULL)
    return NULL;

  /* Seeded hold-out by image; slots put the training images' units first,
   * the held-out ones' last, each group in source order. */
  n_hold = hold_out_count(n_images);
  n_train = n_images - n_hold;
  held_mask = g_new0(gboolean, n_images);
  unit_base = g_new(int, n_images + 1);
  unit_base[0] = 0;
  for (int i = 0; i < n_images; i++)
    unit_base[i + 1] =
        unit_base[i] + (m->tiles > 1 ? insp_tiles_layout(m->tiles, m->tile_overlap, size[2 * i],
                                                         size[2 * i + 1], NULL, 0)
                                     : 1);
  n_units = unit_base[n_images];
  slot = g_new(int, n_units);
  {
    g_autofree int *perm = g_new(int, n_images);
    int a = 0, b = n_train;

    st = opt->seed ^ G_GUINT64_CONSTANT(0xA0761D6478BD642F);
    for (int i = 0; i < n_images; i++)
      perm[i] = i;
    for (int i = n_images - 1; i > 0; i--) {
      int j = (int)(insp_detector_rand_next(&st) % (guint64)(i + 1));
      int t = perm[i];

      perm[i] = perm[j];
      perm[j] = t;
    }
    for (int i = 0; i < n_hold; i++)
      held_mask[perm[i]] = TRUE;
    b = 0;
    for (int i = 0; i < n_images; i++)
      if (!held_mask[i])
        b += unit_base[i + 1] - unit_base[i];
    n_train_units = b;
    owner = g_new(int, n_units - n_train_units);
    for (int i = 0, h = 0; i < n_images; i++) {
      for (int u = unit_base[i]; u < unit_base[i + 1]; u++) {
        if (held_mask[i])
          owner[b - n_train_units] = h;
        slot[u] = held_mask[i] ? b++ : a++;
      }
      h += held_mask[i];
    }
  }

  guard.fit = klass->fit_new(m, n_units, n_train_units, slot, error);
  if (guard.fit == NULL)
    return NULL;
  for (int i = 0; i < n_images; i++) {
    g_autoptr(GError) e = NULL;
    g_autoptr(InspImage) img = next(i, source_data, &e);
    const guint8 *rgb;
    int stride, n_tiles = unit_base[i + 1] - unit_base[i];
    InspRect tiles[INSP_MODEL_MAX_TILE_COUNT];

    if (img == NULL) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "image %d: %s", i,
                  e ? e->message : "no image");
      return NULL;
    }
    if ((img->channels != 1 && img->channels != 3) || img->width <= 0 || img->height <= 0) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                  "image %d: unsupported %dx%d with %d channels", i, img->width, img->height,
                  img->channels);
      return NULL;
    }
    if (size[2 * i] != 0 && (img->width != size[2 * i] || img->height != size[2 * i + 1])) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                  "image %d: %dx%d, but it was %dx%d in the first pass (the source must give "
                  "the same image twice)",
                  i, img->width, img->height, size[2 * i], size[2 * i + 1]);
      return NULL;
    }
    rgb = rgb_of(img, &grey_tmp, &stride);
    tiles[0] = (InspRect){0, 0, img->width, img->height};
    if (m->tiles > 1)
      insp_tiles_layout(m->tiles, m->tile_overlap, img->width, img->height, tiles, n_tiles);
    for (int k = 0; k < n_tiles; k++) {
      const InspRect *r = &tiles[k];
      float *dst;
      double t1, t2;

      insp_image_preprocess(rgb + (gsize)r->y * stride + (gsize)r->x * 3, r->w, r->h, stride,
                            m->input_width, m->input_height, 1.0f, m->mean, m->std,
                            insp_model_scratch_get_input(s));
      dst = klass->fit_dest(guard.fit, unit_base[i] + k, insp_model_scratch_get_feats(s));
      insp_model_extract(m, s, insp_model_scratch_get_input(s), dst, &t1, &t2);
      klass->fit_add(guard.fit, unit_base[i] + k, dst);
    }
    if (progress)
      progress("features", i + 1, n_images, progress_data);
  }
  g_clear_pointer(&s, insp_model_scratch_free);
  release_freed_memory();

  /* A fit without the held-out images, their calibration, then the final
   * fit with them added back. (Scoring the held-out images leave-one-out
   * against a coreset of all images is not honest: the coreset covers a
   * cluster of similar patches with one row, often the held-out image's own,
   * and removing it leaves a hole no retrained coreset would leave; measured
   * 10x pessimistic on generated parts.) */
  ok = klass->fit(m, guard.fit, FALSE, progress, progress_data, error);
  release_freed_memory();
  held = g_new(const float *, n_units - n_train_units);
  for (int h = 0; ok && h < n_units - n_train_units; h++)
    held[h] = klass->fit_held(guard.fit, h);
  ok = ok &&
       calibrate(m, held, owner, n_units - n_train_units, n_hold, progress, progress_data, error);
  release_freed_memory();
  ok = ok && klass->fit(m, guard.fit, TRUE, progress, progress_data, error);
  fit_guard_clear(&guard);
  if (!ok)
    return NULL;

  /* The backbone for the model file: read again, and the network the
   * features came from, bit for bit. */
  full = insp_backbone_new_from_file(backbone_path, error);
  if (full == NULL) {
    g_prefix_error(error, "reading the backbone again for the model: ");
    return NULL;
  }
  if (!insp_backbone_equal_to_stage(full, m->backbone, last)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "backbone %s changed during training (read again for the model, its weights up to "
                "%s differ from those the features came from)",
                backbone_path, last);
    return NULL;
  }
  insp_backbone_unref(m->backbone);
  m->backbone = g_steal_pointer(&full);

  m->train_images = n_images;
  m->train_units = n_units;
  m->held_out_images = n_hold;
  now = g_date_time_new_now_utc();
  m->train_date = g_date_time_format_iso8601(now);
  insp_model_finish_setup(m);
  return g_steal_pointer(&m);
}
