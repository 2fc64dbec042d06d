/* insp-model: the trained detector as an object and as a file.
 *
 * An InspModel (PatchCore or PaDiM) holds its backbone, the feature spec, the
 * detector's tensors and the score normalisation. It is immutable once built
 * (trained or loaded) and reference-counted; worker threads share it and
 * score with their own InspModelScratch, which holds every per-frame buffer
 * (backbone scratch, features, nearest-neighbour scratch, maps), so
 * insp_model_score allocates nothing.
 *
 * The file is one safetensors: the backbone under "backbone." (tensors and
 * metadata, insp_backbone_write), the detector tensors (patchcore.memory_bank
 * [K,D]; padim.mean [P,D], padim.inv_cov [P,D,D], padim.channels [D] when a
 * subset is used) and in __metadata__ format = "inspectd-model",
 * format_version, the detector, stages, input size (input_size the longer
 * side, input_width and input_height; a file without the last two is a
 * square model from before native aspect), normalisation and detector
 * parameters, the tiling (tiles, tile_overlap; absent: none), and the
 * score normalisation. Loading refuses a file
 * that is not ours, a newer format version, a tensor with the wrong shape, a
 * missing or an unexpected tensor, each with a message that says which. A
 * loaded model points into the mapped file (read-only arena).
 *
 * Threads: load/save/train on any one thread; score from any number of
 * threads, each with its own scratch. */
#include "insp-detector-private.h"
#include "insp-ops.h"

#include <math.h>
#include <string.h>

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-model-error-quark, insp_model_error)
/* clang-format on */

/* The detectors: one row each (and one detector-NAME.c). */
static const InspDetectorClass *const detector_classes[] = {
    &insp_detector_patchcore,
    &insp_detector_padim,
};

const InspDetectorClass *
insp_detector_class_for_kind(InspDetectorKind kind)
{
  for (gsize i = 0; i < G_N_ELEMENTS(detector_classes); i++)
    if (detector_classes[i]->kind == kind)
      return detector_classes[i];
  return NULL;
}

const InspDetectorClass *
insp_detector_class_for_name(const char *name)
{
  for (gsize i = 0; name != NULL && i < G_N_ELEMENTS(detector_classes); i++)
    if (strcmp(detector_classes[i]->name, name) == 0)
      return detector_classes[i];
  return NULL;
}

const char *
insp_detector_kind_to_string(InspDetectorKind kind)
{
  const InspDetectorClass *k = insp_detector_class_for_kind(kind);

  return k ? k->name : NULL;
}

gboolean
insp_detector_kind_from_string(const char *name, InspDetectorKind *kind)
{
  const InspDetectorClass *k = insp_detector_class_for_name(name);

  if (k != NULL && kind != NULL)
    *kind = k->kind;
  return k != NULL;
}

const char *
insp_detector_kind_list(void)
{
  static char *list;

  if (g_once_init_enter(&list)) {
    g_autoptr(GString) s = g_string_new(NULL);

    for (gsize i = 0; i < G_N_ELEMENTS(detector_classes); i++) {
      if (i > 0)
        g_string_append(s, i + 1 == G_N_ELEMENTS(detector_classes) ? " or " : ", ");
      g_string_append(s, detector_classes[i]->name);
    }
    g_once_init_leave(&list, g_string_free(g_steal_pointer(&s), FALSE));
  }
  return list;
}

static const char *const image_score_names[] = {
    [INSP_IMAGE_SCORE_REWEIGHTED] = "reweighted",
    [INSP_IMAGE_SCORE_MAX] = "max",
    [INSP_IMAGE_SCORE_MAP_MAX] = "map-max",
};

const char *
insp_image_score_rule_to_string(InspImageScoreRule rule)
{
  return (gsize)rule < G_N_ELEMENTS(image_score_names) ? image_score_names[rule] : NULL;
}

gboolean
insp_image_score_rule_from_string(const char *name, InspImageScoreRule *rule)
{
  for (gsize i = 0; name != NULL && i < G_N_ELEMENTS(image_score_names); i++)
    if (image_score_names[i] != NULL && strcmp(image_score_names[i], name) == 0) {
      if (rule != NULL)
        *rule = (InspImageScoreRule)i;
      return TRUE;
    }
  return FALSE;
}

const char *
insp_image_score_rule_list(void)
{
  return "reweighted, max or map-max";
}

struct _InspModelScratch {
  InspModel *model;
  InspBackboneScratch *bb;
  InspFeatureMap *maps;
  int fine_index, coarse_index;
  float *input;
  float *feat_scratch;
  float *feats;
  void *det_scratch; /* the detector's (klass->scratch_size bytes) */
  float *patch;
  float *map;
  float *blur_scratch;
  float *taps;
  int n_taps;
  InspRect *rects; /* a tiled model's tiles of the frame being scored */
  float *stitched; /* a tiled model's map; grows with the frame, once */
  gsize stitched_len;
};

InspModel *
insp_model_alloc(const InspDetectorClass *klass)
{
  InspModel *m = g_new0(InspModel, 1);

  m->ref_count = 1;
  m->klass = klass;
  m->spec.patch_size = INSP_PATCHCORE_PATCH_SIZE;
  m->tiles = 1;
  return m;
}

InspModel *
insp_model_ref(InspModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  g_atomic_int_inc(&m->ref_count);
  return m;
}

void
insp_model_unref(InspModel *m)
{
  if (m == NULL || !g_atomic_int_dec_and_test(&m->ref_count))
    return;
  insp_backbone_unref(m->backbone);
  g_free(m->fine_stage);
  g_free(m->coarse_stage);
  g_free(m->channels);
  g_free(m->train_date);
  g_free(m->id);
  if (m->klass != NULL && m->det != NULL)
    m->klass->free(m->det);
  insp_safetensors_free(m->st);
  g_free(m);
}

const char *
insp_model_get_id(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  return m->id;
}

InspDetectorKind
insp_model_get_detector(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, INSP_DETECTOR_PATCHCORE);
  return m->klass->kind;
}

const InspFileId *
insp_model_get_file_id(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  return m->st ? insp_safetensors_get_file_id(m->st) : NULL;
}

char *
insp_model_describe(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  return m->klass->describe(m);
}

const char *
insp_model_get_backbone_arch(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, NULL);
  return insp_backbone_get_arch(m->backbone);
}

int
insp_model_get_input_size(const InspModel *m)
{
  g_return_val_if_fail(m != NULL, 0);
  return m->input_size;
}

void
insp_model_get_input_shape(const InspModel *m, int *width, int *height)
{
  g_return_if_fail(m != NULL);
  if (width != NULL)
    *width = m->input_width;
  if (height != NULL)
    *height = m->input_height;
}

int
insp_model_get_tiles(const InspModel *m, double *overlap)
{
  g_return_val_if_fail(m != NULL, 1);
  if (overlap != NULL)
    *overlap = m->tile_overlap;
  return m->tiles;
}

/* Positions of @count tiles of @t along @len, spread evenly edge to edge. */
static void
spread(int len, int t, int count, int *pos)
{
  for (int i = 0; i < count; i++)
    pos[i] = count == 1 ? 0 : (int)floor((double)i * (len - t) / (count - 1) + 0.5);
}

int
insp_tiles_layout(int n, double overlap, int width, int height, InspRect *rects, int max)
{
  gboolean wide = width >= height;
  int len = wide ? width : height, across = wide ? height : width;
  int t_len, t_across, n_across, count, xs_n, ys_n;
  int pos_len[INSP_MODEL_MAX_TILES], pos_across[INSP_MODEL_MAX_TILE_COUNT];
  const int *xs, *ys;

  g_return_val_if_fail(n >= 1 && n <= INSP_MODEL_MAX_TILES && width > 0 && height > 0, 0);
  g_return_val_if_fail(overlap >= 0.0 && overlap <= INSP_MODEL_MAX_TILE_OVERLAP, 0);
  t_len = n == 1 ? len : (int)ceil((double)len / (n - (n - 1) * overlap) - 1e-9);
  t_len = CLAMP(t_len, 1, len);
  t_across = MIN(t_len, across);
  n_across = 1;
  if (t_across < across)
    n_across = (int)ceil((double)(across - t_across) / (t_across * (1.0 - overlap)) - 1e-9) + 1;
  n_across = MIN(n_across, INSP_MODEL_MAX_TILE_COUNT / n);
  count = n * n_across;
  spread(len, t_len, n, pos_len);
  spread(across, t_across, n_across, pos_across);
  xs = wide ? pos_len : pos_across;
  ys = wide ? pos_across : pos_len;
  xs_n = wide ? n : n_across;
  ys_n = wide ? n_across : n;
  for (int j = 0, k = 0; j < ys_n; j++)
    for (int i = 0; i < xs_n; i++, k++)
      if (rects != NULL && k < max)
        rects[k] = (InspRect){xs[i], ys[j], wide ? t_len : t_across, wide ? t_across : t_len};
  return count;
}

void
insp_tiles_map_size(const InspModel *m, int width, int height, int tile_w, int tile_h, int *map_w,
                    int *map_h)
{
  *map_w = MAX(1, (int)floor((double)width * m->input_width / tile_w + 0.5));
  *map_h = MAX(1, (int)floor((double)height * m->input_height / tile_h + 0.5));
}

void
insp_model_unit_shape(const InspModel *m, int width, int height, int *unit_w, int *unit_h)
{
  InspRect r = {0, 0, width, height};

  if (m->tiles > 1)
    insp_tiles_layout(m->tiles, m->tile_overlap, width, height, &r, 1);
  *unit_w = r.w;
  *unit_h = r.h;
}

gboolean
insp_model_aspect_differs(const InspModel *m, int width, int height, double *ratio)
{
  double r;
  int uw, uh;

  g_return_val_if_fail(m != NULL && width > 0 && height > 0, FALSE);
  insp_model_unit_shape(m, width, height, &uw, &uh);
  r = m->train_aspect > 0.0 ? ((double)uw / uh) / m->train_aspect : 1.0;
  if (ratio != NULL)
    *ratio = r;
  /* symmetric: 5 % wider or 5 % narrower */
  return fabs(log(r)) > log1p(INSP_MODEL_ASPECT_TOLERANCE);
}

void
insp_model_input_shape_for_aspect(int size, double aspect, int *width, int *height)
{
  double a = aspect > 0.0 && isfinite(aspect) ? aspect : 1.0;
  double shorter = (double)size * (a < 1.0 ? a : 1.0 / a);
  int s = 8 * (int)floor(shorter / 8.0 + 0.5);

  s = CLAMP(s, 32, size);
  *width = a < 1.0 ? s : size;
  *height = a < 1.0 ? size : s;
}

void
insp_model_set_nn_search(InspModel *m, InspNnSearch search)
{
  g_return_if_fail(m != NULL);
  if (m->klass->set_nn_search != NULL)
    m->klass->set_nn_search(m, search);
}

gboolean
insp_nn_search_from_string(const char *s, InspNnSearch *out)
{
  static const char *const names[] = {"auto", "exact", "approx", "fp32"};

  for (gsize i = 0; i < G_N_ELEMENTS(names); i++)
    if (g_strcmp0(s, names[i]) == 0) {
      *out = (InspNnSearch)i;
      return TRUE;
    }
  return FALSE;
}

const char *
insp_nn_search_describe(void)
{
  if (insp_nn_screen_kind_available(INSP_NN_SCREEN_BF16_AMX))
    return "exact, on the matrix unit (AMX-BF16: bfloat16 screen, fp32 re-rank)";
  if (insp_nn_screen_kind_available(INSP_NN_SCREEN_INT8_VNNI))
    return "exact (AVX512-VNNI: int8 screen, fp32 re-rank); approximate index for banks of 2048 "
           "rows or more (no AMX-BF16)";
  return "exact in fp32; approximate index for banks of 2048 rows or more (no AMX-BF16 or "
         "AVX512-VNNI)";
}

void
insp_model_get_info(const InspModel *m, InspModelInfo *info)
{
  g_return_if_fail(m != NULL && info != NULL);
  info->train_images = m->train_images;
  info->held_out_images = m->held_out_images;
  info->train_units = m->train_units > 0 ? m->train_units : m->train_images;
  info->aspect_differ = m->train_aspect_differ;
  info->n_patches = m->n_patches;
  info->feature_dim = m->dim;
  m->klass->info(m, info);
  info->seed = m->seed;
  info->image_base = m->norm.image_base;
  info->image_threshold = m->norm.image_threshold;
  info->pixel_base = m->norm.pixel_base;
  info->pixel_threshold = m->norm.pixel_threshold;
  info->train_date = m->train_date;
}

/* Sets the id from the SHA-256 of @bytes, or "unsaved" when NULL. */
static void
set_id(InspModel *m, GBytes *bytes)
{
  g_autofree char *hex = NULL;

  if (bytes != NULL)
    hex = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, bytes);
  g_free(m->id);
  m->id = g_strdup_printf("%s-%s-%.8s", m->klass->name, insp_backbone_get_arch(m->backbone),
                          hex ? hex : "unsaved");
}

void
insp_model_finish_setup(InspModel *m)
{
  m->spec.patchcore = m->klass->patchcore_features;
  m->spec.channels = m->channels;
  m->dim = insp_features_get_dim(&m->spec);
  m->n_patches = m->spec.h * m->spec.w;
  m->blur_sigma = INSP_BLUR_SIGMA_224 * (float)m->input_size / 224.0f;
  if (m->klass->setup != NULL)
    m->klass->setup(m);
  if (m->id == NULL)
    set_id(m, NULL);
}

/* ---- score normalisation ---- */

/* normalised = 0.5 * raw / threshold: raw scores and map values are
 * distances (>= 0), so this is strictly increasing (rankings, AUROC and
 * AUPRO are those of the raw scores) and maps the fitted threshold to 0.5. */
static double
norm_apply(double raw, double thr)
{
  return 0.5 * raw / (thr > 1e-30 ? thr : 1e-30);
}

double
insp_score_norm_apply_image(const InspScoreNorm *n, double raw)
{
  return norm_apply(raw, n->image_threshold);
}

float
insp_score_norm_apply_pixel(const InspScoreNorm *n, float raw)
{
  return (float)norm_apply(raw, n->pixel_threshold);
}

double
insp_model_normalise_image_score(const InspModel *m, double raw)
{
  g_return_val_if_fail(m != NULL, NAN);
  return insp_score_norm_apply_image(&m->norm, raw);
}

float
insp_model_normalise_map_value(const InspModel *m, float raw)
{
  g_return_val_if_fail(m != NULL, NAN);
  return insp_score_norm_apply_pixel(&m->norm, raw);
}

/* ---- scratch and scoring ---- */

void
insp_model_scratch_free(InspModelScratch *s)
{
  if (s == NULL)
    return;
  insp_backbone_scratch_free(s->bb);
  g_free(s->maps);
  g_free(s->input);
  g_free(s->feat_scratch);
  g_free(s->feats);
  g_free(s->det_scratch);
  g_free(s->patch);
  g_free(s->map);
  g_free(s->blur_scratch);
  g_free(s->taps);
  g_free(s->rects);
  g_free(s->stitched);
  insp_model_unref(s->model);
  g_free(s);
}

static int
stage_index(const InspBackbone *bb, const char *name)
{
  const char *const *names = insp_backbone_get_stage_names(bb);

  for (int i = 0; names[i] != NULL; i++)
    if (strcmp(names[i], name) == 0)
      return i;
  return -1;
}

/* With @backbone FALSE, scratch for insp_model_score_features only (no
 * backbone activations: 7.7 MB at 320 px for mobilenetv2, which training's
 * calibration, holding every patch feature, does without). The backbone's
 * keeps the two stages' outputs only. */
static InspModelScratch *
scratch_new(const InspModel *m, gboolean backbone, GError **error)
{
  g_autoptr(InspModelScratch) s = g_new0(InspModelScratch, 1);
  int n_stages = 0, p = m->n_patches;
  gsize pixels = (gsize)m->input_width * m->input_height;

  g_return_val_if_fail(m != NULL, NULL);
  s->model = insp_model_ref((InspModel *)m);
  if (backbone) {
    const char *stages[] = {m->fine_stage, m->coarse_stage, NULL};

    s->bb = insp_backbone_scratch_new_for_stages(m->backbone, m->input_height, m->input_width,
                                                 stages, error);
    if (s->bb == NULL)
      return NULL;
  }
  while (insp_backbone_get_stage_names(m->backbone)[n_stages] != NULL)
    n_stages++;
  s->maps = g_new0(InspFeatureMap, n_stages + 1);
  s->fine_index = stage_index(m->backbone, m->fine_stage);
  s->coarse_index = stage_index(m->backbone, m->coarse_stage);
  g_return_val_if_fail(s->fine_index >= 0 && s->coarse_index >= 0, NULL);
  s->input = g_new(float, 3 * pixels);
  s->feat_scratch = g_new(float, insp_features_scratch_size(&m->spec));
  s->feats = g_new(float, (gsize)p * m->dim);
  s->det_scratch = g_malloc(MAX(m->klass->scratch_size(m), 1));
  s->patch = g_new(float, p);
  s->map = g_new(float, pixels);
  s->blur_scratch = g_new(float, pixels);
  s->taps = g_new(float, 2 * (int)(4.0f * m->blur_sigma + 0.5f) + 3);
  s->n_taps = insp_ops_gaussian_kernel(m->blur_sigma, s->taps);
  if (m->tiles > 1)
    s->rects = g_new(InspRect, INSP_MODEL_MAX_TILE_COUNT);
  return g_steal_pointer(&s);
}

InspModelScratch *
insp_model_scratch_new(const InspModel *m, GError **error)
{
  return scratch_new(m, TRUE, error);
}

InspModelScratch *
insp_model_scratch_new_for_features(const InspModel *m, GError **error)
{
  return scratch_new(m, FALSE, error);
}

float *
insp_model_scratch_get_feats(InspModelScratch *s)
{
  return s->feats;
}

float *
insp_model_scratch_get_input(InspModelScratch *s)
{
  return s->input;
}

static double
ms_since(gint64 t0)
{
  return (double)(g_get_monotonic_time() - t0) / 1000.0;
}

void
insp_model_extract(const InspModel *m, InspModelScratch *s, const float *input, float *feats_out,
                   double *ms_backbone, double *ms_features)
{
  const char *last = s->fine_index > s->coarse_index ? m->fine_stage : m->coarse_stage;
  gint64 t0 = g_get_monotonic_time();
  const InspFeatureMap *fine, *coarse;

  insp_backbone_forward(m->backbone, s->bb, input, last, s->maps);
  *ms_backbone = ms_since(t0);
  t0 = g_get_monotonic_time();
  fine = &s->maps[s->fine_index];
  coarse = &s->maps[s->coarse_index];
  insp_features_extract(&m->spec, fine->data, coarse->data, s->feat_scratch, feats_out);
  *ms_features = ms_since(t0);
}

float
insp_model_score_features(const InspModel *m, InspModelScratch *s, const float *feats,
                          float *map_out, double *ms_distance, double *ms_map)
{
  gint64 t0 = g_get_monotonic_time();
  int w = m->input_width, h = m->input_height;
  float image = 0.0f;

  image = m->klass->score(m, s->det_scratch, feats, s->patch);
  *ms_distance = ms_since(t0);
  t0 = g_get_monotonic_time();
  insp_ops_resize_bilinear(s->patch, 1, m->spec.h, m->spec.w, h, w, map_out);
  insp_ops_gaussian_blur(map_out, h, w, s->taps, s->n_taps, s->blur_scratch, map_out);
  if (isnan(image)) {
    image = map_out[0];
    for (gsize i = 1; i < (gsize)w * h; i++)
      image = MAX(image, map_out[i]);
  }
  *ms_map = ms_since(t0);
  return image;
}

/* A tiled model's insp_model_score (the layout and the stitching in the
 * header): each tile preprocessed from its place in the frame, scored as a
 * whole image would be (raw, blurred at the input), its map sampled by
 * nearest into its footprint of the frame's map, the maximum kept where
 * footprints overlap. */
static void
score_tiled(const InspModel *m, InspModelScratch *s, const guint8 *rgb, int width, int height,
            int stride, InspScoreResult *out)
{
  int n = insp_tiles_layout(m->tiles, m->tile_overlap, width, height, s->rects,
                            INSP_MODEL_MAX_TILE_COUNT);
  int iw = m->input_width, ih = m->input_height, mw, mh;
  float raw = -INFINITY;
  gsize plane;
  gint64 t0;

  insp_tiles_map_size(m, width, height, s->rects[0].w, s->rects[0].h, &mw, &mh);
  plane = (gsize)mw * mh;
  if (s->stitched_len < plane) {
    g_free(s->stitched);
    s->stitched = g_new(float, plane);
    s->stitched_len = plane;
  }
  for (gsize i = 0; i < plane; i++)
    s->stitched[i] = -INFINITY;
  out->ms_preprocess = out->ms_backbone = out->ms_features = out->ms_distance = out->ms_map = 0;
  for (int k = 0; k < n; k++) {
    const InspRect *r = &s->rects[k];
    int fx0 = (int)floor((double)r->x * mw / width + 0.5);
    int fx1 = MIN(mw, (int)floor((double)(r->x + r->w) * mw / width + 0.5));
    int fy0 = (int)floor((double)r->y * mh / height + 0.5);
    int fy1 = MIN(mh, (int)floor((double)(r->y + r->h) * mh / height + 0.5));
    double t_bb, t_feat, t_dist, t_map;
    float v;

    t0 = g_get_monotonic_time();
    insp_image_preprocess(rgb + (gsize)r->y * stride + (gsize)r->x * 3, r->w, r->h, stride, iw, ih,
                          1.0f, m->mean, m->std, s->input);
    out->ms_preprocess += ms_since(t0);
    insp_model_extract(m, s, s->input, s->feats, &t_bb, &t_feat);
    v = insp_model_score_features(m, s, s->feats, s->map, &t_dist, &t_map);
    raw = MAX(raw, v);
    t0 = g_get_monotonic_time();
    for (int y = fy0; y < fy1; y++) {
      int ty = MIN((int)((gint64)(y - fy0) * ih / (fy1 - fy0)), ih - 1);
      float *row = s->stitched + (gsize)y * mw;

      for (int x = fx0; x < fx1; x++) {
        int tx = MIN((int)((gint64)(x - fx0) * iw / (fx1 - fx0)), iw - 1);

        row[x] = MAX(row[x], s->map[(gsize)ty * iw + tx]);
      }
    }
    out->ms_backbone += t_bb;
    out->ms_features += t_feat;
    out->ms_distance += t_dist;
    out->ms_map += t_map + ms_since(t0);
  }
  t0 = g_get_monotonic_time();
  for (gsize i = 0; i < plane; i++)
    s->stitched[i] = insp_score_norm_apply_pixel(&m->norm, s->stitched[i]);
  out->ms_map += ms_since(t0);
  out->raw_score = raw;
  out->score = (float)insp_score_norm_apply_image(&m->norm, raw);
  out->map_width = mw;
  out->map_height = mh;
  out->map = s->stitched;
}

gboolean
insp_model_score(const InspModel *m, InspModelScratch *s, const guint8 *rgb, int width, int height,
                 int stride, InspScoreResult *out, GError **error)
{
  gint64 t0;
  double ms_pre, ms_feat;
  int w, h;
  float raw;

  g_return_val_if_fail(m != NULL && s != NULL && s->model == m && out != NULL, FALSE);
  if (rgb == NULL || width <= 0 || height <= 0 || stride < width * 3 ||
      (gint64)width * height > INSP_IMAGE_MAX_PIXELS) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_INPUT,
                "cannot score a %dx%d image (stride %d): empty or over %d pixels", width, height,
                stride, INSP_IMAGE_MAX_PIXELS);
    return FALSE;
  }
  if (m->tiles > 1) {
    score_tiled(m, s, rgb, width, height, stride, out);
    return TRUE;
  }
  w = m->input_width;
  h = m->input_height;
  t0 = g_get_monotonic_time();
  insp_image_preprocess(rgb, width, height, stride, w, h, 1.0f, m->mean, m->std, s->input);
  ms_pre = ms_since(t0);
  insp_model_extract(m, s, s->input, s->feats, &out->ms_backbone, &ms_feat);
  out->ms_preprocess = ms_pre;
  out->ms_features = ms_feat;
  raw = insp_model_score_features(m, s, s->feats, s->map, &out->ms_distance, &out->ms_map);
  t0 = g_get_monotonic_time();
  for (gsize i = 0; i < (gsize)w * h; i++)
    s->map[i] = insp_score_norm_apply_pixel(&m->norm, s->map[i]);
  out->ms_map += ms_since(t0);
  out->raw_score = raw;
  out->score = (float)insp_score_norm_apply_image(&m->norm, raw);
  out->map_width = w;
  out->map_height = h;
  out->map = s->map;
  return TRUE;
}

/* ---- file ---- */

void
insp_model_meta_set_double(InspSafetensorsWriter *w, const char *key, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  insp_safetensors_writer_set_metadata(w, key, g_ascii_dtostr(buf, sizeof buf, v));
}

void
insp_model_meta_set_int(InspSafetensorsWriter *w, const char *key, gint64 v)
{
  g_autofree char *s = g_strdup_printf("%" G_GINT64_FORMAT, v);

  insp_safetensors_writer_set_metadata(w, key, s);
}

static void
meta_set_triple(InspSafetensorsWriter *w, const char *key, const float v[3])
{
  char a[G_ASCII_DTOSTR_BUF_SIZE], b[G_ASCII_DTOSTR_BUF_SIZE], c[G_ASCII_DTOSTR_BUF_SIZE];
  g_autofree char *s =
      g_strdup_printf("%s,%s,%s", g_ascii_dtostr(a, sizeof a, v[0]),
                      g_ascii_dtostr(b, sizeof b, v[1]), g_ascii_dtostr(c, sizeof c, v[2]));

  insp_safetensors_writer_set_metadata(w, key, s);
}

gboolean
insp_model_save(const InspModel *m, const char *path, GError **error)
{
  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  g_autoptr(GMappedFile) mf = NULL;
  g_autoptr(GBytes) bytes = NULL;
  g_autofree char *stages = NULL;

  g_return_val_if_fail(m != NULL && path != NULL, FALSE);
  insp_backbone_write(m->backbone, w, "backbone.");
  m->klass->write_tensors(m, w);
  insp_safetensors_writer_set_metadata(w, "format", INSP_MODEL_FORMAT);
  /* A square model stays readable by builds from before native aspect. */
  insp_model_meta_set_int(
      w, "format_version",
      m->input_width == m->input_height && m->tiles == 1 ? 1 : INSP_MODEL_FORMAT_VERSION);
  insp_safetensors_writer_set_metadata(w, "detector", m->klass->name);
  insp_safetensors_writer_set_metadata(w, "backbone", insp_backbone_get_arch(m->backbone));
  stages = g_strdup_printf("%s,%s", m->fine_stage, m->coarse_stage);
  insp_safetensors_writer_set_metadata(w, "stages", stages);
  insp_model_meta_set_int(w, "input_size", m->input_size);
  insp_model_meta_set_int(w, "input_width", m->input_width);
  insp_model_meta_set_int(w, "input_height", m->input_height);
  meta_set_triple(w, "mean", m->mean);
  meta_set_triple(w, "std", m->std);
  insp_model_meta_set_int(w, "feature_dim", m->dim);
  insp_model_meta_set_int(w, "feature_grid", m->spec.h);
  insp_model_meta_set_int(w, "feature_grid_width", m->spec.w);
  if (m->tiles > 1) {
    insp_model_meta_set_int(w, "tiles", m->tiles);
    insp_model_meta_set_double(w, "tile_overlap", m->tile_overlap);
  }
  insp_model_meta_set_double(w, "blur_sigma", m->blur_sigma);
  insp_model_meta_set_int(w, "seed", (gint64)m->seed);
  m->klass->write_metadata(m, w);
  insp_safetensors_writer_set_metadata(w, "score.rule", "normalised = 0.5 * raw / threshold");
  insp_model_meta_set_double(w, "score.image_base", m->norm.image_base);
  insp_model_meta_set_double(w, "score.image_threshold", m->norm.image_threshold);
  insp_model_meta_set_double(w, "score.pixel_base", m->norm.pixel_base);
  insp_model_meta_set_double(w, "score.pixel_threshold", m->norm.pixel_threshold);
  insp_model_meta_set_int(w, "train.images", m->train_images);
  insp_model_meta_set_int(w, "train.held_out", m->held_out_images);
  if (m->train_units > 0)
    insp_model_meta_set_int(w, "train.units", m->train_units);
  insp_model_meta_set_int(w, "train.aspect_differ", m->train_aspect_differ);
  if (m->train_aspect > 0.0)
    insp_model_meta_set_double(w, "train.aspect", m->train_aspect);
  if (m->train_date != NULL)
    insp_safetensors_writer_set_metadata(w, "train.date", m->train_date);
  if (!insp_safetensors_writer_save(w, path, error))
    return FALSE;
  /* The id names the file's content; a model is otherwise immutable. */
  mf = g_mapped_file_new(path, FALSE, NULL);
  if (mf != NULL) {
    bytes = g_mapped_file_get_bytes(mf);
    set_id((InspModel *)m, bytes);
  }
  return TRUE;
}

gboolean
insp_model_meta_get_int(InspSafetensors *st, const char *path, const char *key, gint64 lo,
                        gint64 hi, gint64 *out, GError **error)
{
  const char *v = insp_safetensors_get_metadata(st, key);
  g_autoptr(GError) e = NULL;

  if (v == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata '%s' is missing", path, key);
    return FALSE;
  }
  if (!g_ascii_string_to_signed(v, 10, lo, hi, out, &e)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata '%s' = '%s' is not an integer in [%" G_GINT64_FORMAT
                ", %" G_GINT64_FORMAT "]",
                path, key, v, lo, hi);
    return FALSE;
  }
  return TRUE;
}

/* FALSE, naming the tensor and the first bad element, when @data holds a NaN
 * or an infinity: such a model scores every part NaN (and metrics on NaN
 * have no order). */
static gboolean
check_finite(const char *path, const char *name, const float *data, gsize n, GError **error)
{
  for (gsize i = 0; i < n; i++) {
    if (!isfinite(data[i])) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                  "%s: tensor '%s' holds a non-finite value (%g at element %" G_GSIZE_FORMAT
                  "): the file is damaged or was written by a failed training",
                  path, name, (double)data[i], i);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean
tensor_error(GError **error, const char *path, GError *e)
{
  g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR, "%s: %s", path, e->message);
  g_error_free(e);
  return FALSE;
}

const float *
insp_model_get_tensor(InspModel *m, const char *path, const char *name, int ndim,
                      const gint64 *shape, GError **error)
{
  g_autoptr(GError) e = NULL;
  const float *t = insp_safetensors_get_f32(m->st, name, ndim, shape, &e);
  gsize n = 1;

  if (t == NULL) {
    tensor_error(error, path, g_steal_pointer(&e));
    return NULL;
  }
  for (int i = 0; i < ndim; i++)
    n *= (gsize)shape[i];
  return check_finite(path, name, t, n, error) ? t : NULL;
}

gboolean
insp_model_meta_get_double(InspSafetensors *st, const char *path, const char *key, double *out,
                           GError **error)
{
  const char *v = insp_safetensors_get_metadata(st, key);
  char *end = NULL;

  if (v == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata '%s' is missing", path, key);
    return FALSE;
  }
  *out = g_ascii_strtod(v, &end);
  if (end == v || *end != '\0' || !isfinite(*out)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata '%s' = '%s' is not a finite number", path, key, v);
    return FALSE;
  }
  return TRUE;
}

static gboolean
meta_get_triple(InspSafetensors *st, const char *path, const char *key, float out[3],
                GError **error)
{
  const char *v = insp_safetensors_get_metadata(st, key);
  g_auto(GStrv) parts = NULL;

  if (v != NULL)
    parts = g_strsplit(v, ",", -1);
  if (parts == NULL || g_strv_length(parts) != 3)
    goto bad;
  for (int i = 0; i < 3; i++) {
    char *end = NULL;
    double d = g_ascii_strtod(parts[i], &end);

    if (end == parts[i] || *end != '\0' || !isfinite(d))
      goto bad;
    out[i] = (float)d;
  }
  return TRUE;
bad:
  g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
              "%s: model metadata '%s' = '%s' is not three numbers", path, key,
              v ? v : "(missing)");
  return FALSE;
}

/* m->input_width and input_height from the file. Both or neither: without
 * them (format version 1, from before native aspect) the input is square
 * input_size x input_size; with them input_size must be the longer. */
static gboolean
read_input_shape(InspSafetensors *st, const char *path, gint64 version, InspModel *m,
                 GError **error)
{
  gboolean has_w = insp_safetensors_get_metadata(st, "input_width") != NULL;
  gboolean has_h = insp_safetensors_get_metadata(st, "input_height") != NULL;
  gint64 w, h;

  if (!has_w && !has_h && version < 2) {
    m->input_width = m->input_height = m->input_size;
    return TRUE;
  }
  if (!insp_model_meta_get_int(st, path, "input_width", 32, INSP_MAX_INPUT_SIZE, &w, error) ||
      !insp_model_meta_get_int(st, path, "input_height", 32, INSP_MAX_INPUT_SIZE, &h, error))
    return FALSE;
  if (MAX(w, h) != m->input_size) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'input_size' = %d is not the longer of 'input_width' = "
                "%" G_GINT64_FORMAT " and 'input_height' = %" G_GINT64_FORMAT,
                path, m->input_size, w, h);
    return FALSE;
  }
  m->input_width = (int)w;
  m->input_height = (int)h;
  return TRUE;
}

/* m->tiles and tile_overlap: absent, none; present, in range. */
static gboolean
read_tiles(InspSafetensors *st, const char *path, InspModel *m, GError **error)
{
  gint64 n;
  double overlap;

  if (insp_safetensors_get_metadata(st, "tiles") == NULL)
    return TRUE;
  if (!insp_model_meta_get_int(st, path, "tiles", 1, INSP_MODEL_MAX_TILES, &n, error) ||
      !insp_model_meta_get_double(st, path, "tile_overlap", &overlap, error))
    return FALSE;
  if (!(overlap >= 0.0 && overlap <= INSP_MODEL_MAX_TILE_OVERLAP)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'tile_overlap' = %g is not in [0, %g]", path, overlap,
                INSP_MODEL_MAX_TILE_OVERLAP);
    return FALSE;
  }
  m->tiles = (int)n;
  m->tile_overlap = overlap;
  return TRUE;
}

/* Runs the backbone once on zeros to learn the two stages' shapes. */
static gboolean
probe_stages(InspModel *m, GError **error)
{
  g_autoptr(InspBackboneScratch) bs = NULL;
  g_autofree InspFeatureMap *maps = NULL;
  g_autofree float *zeros = NULL;
  int n = 0, fi, ci;
  const char *last;

  if (m->input_width == 0 || m->input_height == 0)
    m->input_width = m->input_height = m->input_size;
  fi = stage_index(m->backbone, m->fine_stage);
  ci = stage_index(m->backbone, m->coarse_stage);
  if (fi < 0 || ci < 0) {
    g_autofree char *names = g_strjoinv(", ", (char **)insp_backbone_get_stage_names(m->backbone));

    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "backbone %s has no stage '%s' (it has %s)", insp_backbone_get_arch(m->backbone),
                fi < 0 ? m->fine_stage : m->coarse_stage, names);
    return FALSE;
  }
  bs = insp_backbone_scratch_new(m->backbone, m->input_height, m->input_width, error);
  if (bs == NULL)
    return FALSE;
  while (insp_backbone_get_stage_names(m->backbone)[n] != NULL)
    n++;
  maps = g_new0(InspFeatureMap, n + 1);
  zeros = g_new0(float, 3 * (gsize)m->input_width * m->input_height);
  last = fi > ci ? m->fine_stage : m->coarse_stage;
  insp_backbone_forward(m->backbone, bs, zeros, last, maps);
  m->spec.fine_c = maps[fi].channels;
  m->spec.h = maps[fi].height;
  m->spec.w = maps[fi].width;
  m->spec.coarse_c = maps[ci].channels;
  m->spec.ch = maps[ci].height;
  m->spec.cw = maps[ci].width;
  return TRUE;
}

gboolean
insp_model_probe_stages(InspModel *m, GError **error)
{
  return probe_stages(m, error);
}

InspModel *
insp_model_load(const char *path, GError **error)
{
  g_autoptr(InspModel) m = insp_model_alloc(NULL);
  g_autoptr(GError) e = NULL;
  g_autoptr(GBytes) bytes = NULL;
  InspSafetensors *st;
  const char *fmt, *det, *stages;
  gint64 version, size, dim, grid, grid_w = -1, seed, iv;
  g_auto(GStrv) sv = NULL;
  double sigma;

  g_return_val_if_fail(path != NULL, NULL);
  st = m->st = insp_safetensors_open(path, &e);
  if (st == NULL &&
      g_error_matches(e, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s, so not an inspectd model (a model is the safetensors file that "
                "`inspectd train --out` writes)",
                e->message);
    return NULL;
  }
  if (st == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT, "%s", e->message);
    return NULL;
  }
  fmt = insp_safetensors_get_metadata(st, "format");
  if (fmt == NULL || strcmp(fmt, INSP_MODEL_FORMAT) != 0) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s is not an inspectd model file: its metadata 'format' is %s%s%s, expected "
                "'%s' (a backbone file goes to --backbone, not --model)",
                path, fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "", INSP_MODEL_FORMAT);
    return NULL;
  }
  if (!insp_model_meta_get_int(st, path, "format_version", 1, G_MAXINT32, &version, error))
    return NULL;
  if (version > INSP_MODEL_FORMAT_VERSION) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s was written by a newer inspectd (model format version %" G_GINT64_FORMAT
                "); this build reads version %d: upgrade inspectd or retrain the model",
                path, version, INSP_MODEL_FORMAT_VERSION);
    return NULL;
  }
  det = insp_safetensors_get_metadata(st, "detector");
  m->klass = insp_detector_class_for_name(det);
  if (m->klass == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: unknown detector '%s' (expected %s)", path, det ? det : "(missing)",
                insp_detector_kind_list());
    return NULL;
  }
  m->backbone = insp_backbone_new_from_safetensors(st, "backbone.", NULL, &e);
  if (m->backbone == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR, "%s: backbone: %s", path,
                e->message);
    return NULL;
  }
  if (g_strcmp0(insp_safetensors_get_metadata(st, "backbone"),
                insp_backbone_get_arch(m->backbone)) != 0) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: metadata names backbone '%s' but the file holds '%s'", path,
                insp_safetensors_get_metadata(st, "backbone")
                    ? insp_safetensors_get_metadata(st, "backbone")
                    : "(missing)",
                insp_backbone_get_arch(m->backbone));
    return NULL;
  }
  stages = insp_safetensors_get_metadata(st, "stages");
  if (stages != NULL)
    sv = g_strsplit(stages, ",", -1);
  if (sv == NULL || g_strv_length(sv) != 2) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'stages' = '%s' is not two stage names", path,
                stages ? stages : "(missing)");
    return NULL;
  }
  m->fine_stage = g_strdup(sv[0]);
  m->coarse_stage = g_strdup(sv[1]);
  if (!insp_model_meta_get_int(st, path, "input_size", 32, INSP_MAX_INPUT_SIZE, &size, error) ||
      !meta_get_triple(st, path, "mean", m->mean, error) ||
      !meta_get_triple(st, path, "std", m->std, error) ||
      !insp_model_meta_get_int(st, path, "feature_dim", 1, 1 << 16, &dim, error) ||
      !insp_model_meta_get_int(st, path, "feature_grid", 1, INSP_MAX_INPUT_SIZE, &grid, error) ||
      !insp_model_meta_get_int(st, path, "seed", G_MININT64, G_MAXINT64, &seed, error) ||
      !insp_model_meta_get_double(st, path, "blur_sigma", &sigma, error) ||
      !insp_model_meta_get_double(st, path, "score.image_base", &m->norm.image_base, error) ||
      !insp_model_meta_get_double(st, path, "score.image_threshold", &m->norm.image_threshold,
                                  error) ||
      !insp_model_meta_get_double(st, path, "score.pixel_base", &m->norm.pixel_base, error) ||
      !insp_model_meta_get_double(st, path, "score.pixel_threshold", &m->norm.pixel_threshold,
                                  error))
    return NULL;
  if (!(m->norm.image_threshold > 0) || !(m->norm.pixel_threshold > 0)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'score.image_threshold' = %g and 'score.pixel_threshold' = %g "
                "must be positive (scores are normalised by them)",
                path, m->norm.image_threshold, m->norm.pixel_threshold);
    return NULL;
  }
  for (int i = 0; i < 3; i++)
    if (!(m->std[i] != 0.0f)) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: model metadata 'std' has a zero", path);
      return NULL;
    }
  m->input_size = (int)size;
  if (!read_input_shape(st, path, version, m, error))
    return NULL;
  if (insp_safetensors_get_metadata(st, "feature_grid_width") != NULL &&
      !insp_model_meta_get_int(st, path, "feature_grid_width", 1, INSP_MAX_INPUT_SIZE, &grid_w,
                               error))
    return NULL;
  m->seed = (guint64)seed;
  if (!read_tiles(st, path, m, error))
    return NULL;
  if (insp_model_meta_get_int(st, path, "train.images", 0, G_MAXINT32, &iv, NULL))
    m->train_images = (int)iv;
  if (insp_model_meta_get_int(st, path, "train.held_out", 0, G_MAXINT32, &iv, NULL))
    m->held_out_images = (int)iv;
  if (insp_model_meta_get_int(st, path, "train.units", 0, G_MAXINT32, &iv, NULL))
    m->train_units = (int)iv;
  if (insp_model_meta_get_int(st, path, "train.aspect_differ", 0, G_MAXINT32, &iv, NULL))
    m->train_aspect_differ = (int)iv;
  if (insp_safetensors_get_metadata(st, "train.aspect") != NULL) {
    if (!insp_model_meta_get_double(st, path, "train.aspect", &m->train_aspect, error))
      return NULL;
    if (!(m->train_aspect > 1e-4 && m->train_aspect < 1e4)) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: model metadata 'train.aspect' = %g is not a width / height", path,
                  m->train_aspect);
      return NULL;
    }
  }
  m->train_date = g_strdup(insp_safetensors_get_metadata(st, "train.date"));
  if (!probe_stages(m, error))
    return NULL;
  if (m->spec.h != grid || (grid_w >= 0 && m->spec.w != grid_w)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: the backbone gives a %dx%d grid (width x height) at input %dx%d, the model "
                "metadata 'feature_grid_width' x 'feature_grid' is %" G_GINT64_FORMAT
                "x%" G_GINT64_FORMAT,
                path, m->spec.w, m->spec.h, m->input_width, m->input_height,
                grid_w >= 0 ? grid_w : grid, grid);
    return NULL;
  }

  if (!m->klass->read(m, path, dim, error))
    return NULL;
  if (!insp_safetensors_check_all_used(st, NULL, &e)) {
    tensor_error(error, path, g_steal_pointer(&e));
    return NULL;
  }
  if (fabs(sigma - m->blur_sigma) > 1e-3 * m->blur_sigma) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: blur_sigma %g is not this build's %g for input size %d", path, sigma,
                m->blur_sigma, m->input_size);
    return NULL;
  }
  {
    gsize len;
    const guint8 *data = insp_safetensors_get_bytes(st, &len);

    /* The id names the bytes that were read, not whatever the path holds now. */
    bytes = g_bytes_new_static(data, len);
    set_id(m, bytes);
  }
  return g_steal_pointer(&m);
}
