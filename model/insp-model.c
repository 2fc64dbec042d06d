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
 * format_version, the detector, stages, input size, normalisation and
 * detector parameters, and the score normalisation. Loading refuses a file
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

#define MAX_BANK_ROWS (1 << 24)

struct _InspModelScratch {
  InspModel *model;
  InspBackboneScratch *bb;
  InspFeatureMap *maps;
  int fine_index, coarse_index;
  float *input;
  float *feat_scratch;
  float *feats;
  float *nn_scratch;
  float *min_d2;
  int *argmin;
  float *knn;
  float *patch;
  float *map;
  float *blur_scratch;
  float *taps;
  int n_taps;
  float *padim_work;
};

InspModel *
insp_model_alloc(void)
{
  InspModel *m = g_new0(InspModel, 1);

  m->ref_count = 1;
  m->num_neighbours = INSP_PATCHCORE_NUM_NEIGHBOURS;
  m->spec.patch_size = INSP_PATCHCORE_PATCH_SIZE;
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
  g_free(m->bank_sqnorm);
  g_free(m->train_date);
  g_free(m->id);
  g_free(m->owned_bank);
  g_free(m->owned_mean);
  g_free(m->owned_inv_cov);
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
  return m->kind;
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
insp_model_get_info(const InspModel *m, InspModelInfo *info)
{
  g_return_if_fail(m != NULL && info != NULL);
  info->train_images = m->train_images;
  info->held_out_images = m->held_out_images;
  info->n_patches = m->n_patches;
  info->feature_dim = m->dim;
  info->bank_rows = m->kind == INSP_DETECTOR_PATCHCORE ? m->bank_rows : 0;
  info->coreset_fraction = m->coreset_fraction;
  info->seed = m->seed;
  info->image_base = m->norm.image_base;
  info->image_threshold = m->norm.image_threshold;
  info->pixel_base = m->norm.pixel_base;
  info->pixel_threshold = m->norm.pixel_threshold;
  info->train_date = m->train_date;
}

static const char *
detector_name(InspDetectorKind k)
{
  return k == INSP_DETECTOR_PADIM ? "padim" : "patchcore";
}

/* Sets the id from the SHA-256 of @bytes, or "unsaved" when NULL. */
static void
set_id(InspModel *m, GBytes *bytes)
{
  g_autofree char *hex = NULL;

  if (bytes != NULL)
    hex = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, bytes);
  g_free(m->id);
  m->id = g_strdup_printf("%s-%s-%.8s", detector_name(m->kind), insp_backbone_get_arch(m->backbone),
                          hex ? hex : "unsaved");
}

void
insp_model_finish_setup(InspModel *m)
{
  m->spec.patchcore = m->kind == INSP_DETECTOR_PATCHCORE;
  m->spec.channels = m->channels;
  m->dim = insp_features_get_dim(&m->spec);
  m->n_patches = m->spec.h * m->spec.w;
  m->blur_sigma = INSP_BLUR_SIGMA_224 * (float)m->input_size / 224.0f;
  g_clear_pointer(&m->bank_sqnorm, g_free);
  if (m->kind == INSP_DETECTOR_PATCHCORE && m->bank != NULL) {
    m->bank_sqnorm = g_new(float, m->bank_rows);
    for (int r = 0; r < m->bank_rows; r++) {
      const float *b = m->bank + (gsize)r * m->dim;
      float s = 0.0f;

      for (int j = 0; j < m->dim; j++)
        s += b[j] * b[j];
      m->bank_sqnorm[r] = s;
    }
  }
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
  g_free(s->nn_scratch);
  g_free(s->min_d2);
  g_free(s->argmin);
  g_free(s->knn);
  g_free(s->patch);
  g_free(s->map);
  g_free(s->blur_scratch);
  g_free(s->taps);
  g_free(s->padim_work);
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

InspModelScratch *
insp_model_scratch_new(const InspModel *m, GError **error)
{
  g_autoptr(InspModelScratch) s = g_new0(InspModelScratch, 1);
  int n_stages = 0, sz = m->input_size, p = m->n_patches;
  gsize pixels = (gsize)sz * sz;

  g_return_val_if_fail(m != NULL, NULL);
  s->model = insp_model_ref((InspModel *)m);
  s->bb = insp_backbone_scratch_new(m->backbone, sz, sz, error);
  if (s->bb == NULL)
    return NULL;
  while (insp_backbone_get_stage_names(m->backbone)[n_stages] != NULL)
    n_stages++;
  s->maps = g_new0(InspFeatureMap, n_stages + 1);
  s->fine_index = stage_index(m->backbone, m->fine_stage);
  s->coarse_index = stage_index(m->backbone, m->coarse_stage);
  g_return_val_if_fail(s->fine_index >= 0 && s->coarse_index >= 0, NULL);
  s->input = g_new(float, 3 * pixels);
  s->feat_scratch = g_new(float, insp_features_scratch_size(&m->spec));
  s->feats = g_new(float, (gsize)p * m->dim);
  if (m->kind == INSP_DETECTOR_PATCHCORE) {
    s->nn_scratch = g_new(float, insp_ops_nn_scratch_size(p));
    s->min_d2 = g_new(float, p);
    s->argmin = g_new(int, p);
    s->knn = g_new(float, MAX(m->bank_rows, 1));
  } else {
    s->padim_work = g_new(float, 2 * (gsize)m->dim);
  }
  s->patch = g_new(float, p);
  s->map = g_new(float, pixels);
  s->blur_scratch = g_new(float, pixels);
  s->taps = g_new(float, 2 * (int)(4.0f * m->blur_sigma + 0.5f) + 3);
  s->n_taps = insp_ops_gaussian_kernel(m->blur_sigma, s->taps);
  return g_steal_pointer(&s);
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
  int sz = m->input_size, p = m->n_patches;
  float image = 0.0f;

  if (m->kind == INSP_DETECTOR_PATCHCORE) {
    insp_ops_nearest_neighbour(feats, p, m->bank, m->bank_sqnorm, m->bank_rows, m->dim,
                               s->nn_scratch, s->min_d2, s->argmin);
    image = insp_patchcore_image_score(feats, p, m->dim, s->min_d2, s->argmin, m->bank,
                                       m->bank_sqnorm, m->bank_rows, s->knn, s->patch);
  } else {
    insp_padim_score(feats, p, m->dim, m->padim_mean, m->padim_inv_cov, s->padim_work, s->patch);
  }
  *ms_distance = ms_since(t0);
  t0 = g_get_monotonic_time();
  insp_ops_resize_bilinear(s->patch, 1, m->spec.h, m->spec.w, sz, sz, map_out);
  insp_ops_gaussian_blur(map_out, sz, sz, s->taps, s->n_taps, s->blur_scratch, map_out);
  if (m->kind == INSP_DETECTOR_PADIM) {
    image = map_out[0];
    for (gsize i = 1; i < (gsize)sz * sz; i++)
      image = MAX(image, map_out[i]);
  }
  *ms_map = ms_since(t0);
  return image;
}

gboolean
insp_model_score(const InspModel *m, InspModelScratch *s, const guint8 *rgb, int width, int height,
                 int stride, InspScoreResult *out, GError **error)
{
  gint64 t0;
  double ms_pre, ms_feat;
  int sz;
  float raw;

  g_return_val_if_fail(m != NULL && s != NULL && s->model == m && out != NULL, FALSE);
  if (rgb == NULL || width <= 0 || height <= 0 || stride < width * 3 ||
      (gint64)width * height > INSP_IMAGE_MAX_PIXELS) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_INPUT,
                "cannot score a %dx%d image (stride %d): empty or over %d pixels", width, height,
                stride, INSP_IMAGE_MAX_PIXELS);
    return FALSE;
  }
  sz = m->input_size;
  t0 = g_get_monotonic_time();
  insp_image_preprocess(rgb, width, height, stride, sz, sz, 1.0f, m->mean, m->std, s->input);
  ms_pre = ms_since(t0);
  insp_model_extract(m, s, s->input, s->feats, &out->ms_backbone, &ms_feat);
  out->ms_backbone += ms_pre;
  out->ms_features = ms_feat;
  raw = insp_model_score_features(m, s, s->feats, s->map, &out->ms_distance, &out->ms_map);
  t0 = g_get_monotonic_time();
  for (gsize i = 0; i < (gsize)sz * sz; i++)
    s->map[i] = insp_score_norm_apply_pixel(&m->norm, s->map[i]);
  out->ms_map += ms_since(t0);
  out->raw_score = raw;
  out->score = (float)insp_score_norm_apply_image(&m->norm, raw);
  out->map_width = sz;
  out->map_height = sz;
  out->map = s->map;
  return TRUE;
}

/* ---- file ---- */

static void
meta_set_double(InspSafetensorsWriter *w, const char *key, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  insp_safetensors_writer_set_metadata(w, key, g_ascii_dtostr(buf, sizeof buf, v));
}

static void
meta_set_int(InspSafetensorsWriter *w, const char *key, gint64 v)
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
  if (m->kind == INSP_DETECTOR_PATCHCORE) {
    gint64 shape[2] = {m->bank_rows, m->dim};

    insp_safetensors_writer_add_f32(w, "patchcore.memory_bank", 2, shape, m->bank);
  } else {
    gint64 s2[2] = {m->n_patches, m->dim};
    gint64 s3[3] = {m->n_patches, m->dim, m->dim};

    insp_safetensors_writer_add_f32(w, "padim.mean", 2, s2, m->padim_mean);
    insp_safetensors_writer_add_f32(w, "padim.inv_cov", 3, s3, m->padim_inv_cov);
    if (m->channels != NULL) {
      g_autofree float *ch = g_new(float, m->dim);
      gint64 s1[1] = {m->dim};

      for (int i = 0; i < m->dim; i++)
        ch[i] = (float)m->channels[i];
      insp_safetensors_writer_add_f32(w, "padim.channels", 1, s1, ch);
    }
  }
  insp_safetensors_writer_set_metadata(w, "format", INSP_MODEL_FORMAT);
  meta_set_int(w, "format_version", INSP_MODEL_FORMAT_VERSION);
  insp_safetensors_writer_set_metadata(w, "detector", detector_name(m->kind));
  insp_safetensors_writer_set_metadata(w, "backbone", insp_backbone_get_arch(m->backbone));
  stages = g_strdup_printf("%s,%s", m->fine_stage, m->coarse_stage);
  insp_safetensors_writer_set_metadata(w, "stages", stages);
  meta_set_int(w, "input_size", m->input_size);
  meta_set_triple(w, "mean", m->mean);
  meta_set_triple(w, "std", m->std);
  meta_set_int(w, "feature_dim", m->dim);
  meta_set_int(w, "feature_grid", m->spec.h);
  meta_set_double(w, "blur_sigma", m->blur_sigma);
  meta_set_int(w, "seed", (gint64)m->seed);
  if (m->kind == INSP_DETECTOR_PATCHCORE) {
    meta_set_double(w, "patchcore.coreset_fraction", m->coreset_fraction);
    meta_set_int(w, "patchcore.num_neighbors", m->num_neighbours);
    meta_set_int(w, "patchcore.reduce_dim", m->spec.reduce_dim);
    meta_set_int(w, "patchcore.patch_size", m->spec.patch_size);
    insp_safetensors_writer_set_metadata(
        w, "patchcore.projection",
        m->coreset_exact ? "none (exact distances; top 128 principal axes when D > 128)"
                         : "sklearn sparse random (density 1/sqrt(D), seed) to min(D, 128) dims");
  } else {
    meta_set_int(w, "padim.channels_total", m->padim_channels_total);
    meta_set_double(w, "padim.eps", 0.01);
  }
  insp_safetensors_writer_set_metadata(w, "score.rule", "normalised = 0.5 * raw / threshold");
  meta_set_double(w, "score.image_base", m->norm.image_base);
  meta_set_double(w, "score.image_threshold", m->norm.image_threshold);
  meta_set_double(w, "score.pixel_base", m->norm.pixel_base);
  meta_set_double(w, "score.pixel_threshold", m->norm.pixel_threshold);
  meta_set_int(w, "train.images", m->train_images);
  meta_set_int(w, "train.held_out", m->held_out_images);
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

static gboolean
meta_get_int(InspSafetensors *st, const char *path, const char *key, gint64 lo, gint64 hi,
             gint64 *out, GError **error)
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
meta_get_double(InspSafetensors *st, const char *path, const char *key, double *out, GError **error)
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

/* Runs the backbone once on zeros to learn the two stages' shapes. */
static gboolean
probe_stages(InspModel *m, GError **error)
{
  g_autoptr(InspBackboneScratch) bs = NULL;
  g_autofree InspFeatureMap *maps = NULL;
  g_autofree float *zeros = NULL;
  int n = 0, fi, ci;
  const char *last;

  fi = stage_index(m->backbone, m->fine_stage);
  ci = stage_index(m->backbone, m->coarse_stage);
  if (fi < 0 || ci < 0) {
    g_autofree char *names = g_strjoinv(", ", (char **)insp_backbone_get_stage_names(m->backbone));

    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "backbone %s has no stage '%s' (it has %s)", insp_backbone_get_arch(m->backbone),
                fi < 0 ? m->fine_stage : m->coarse_stage, names);
    return FALSE;
  }
  bs = insp_backbone_scratch_new(m->backbone, m->input_size, m->input_size, error);
  if (bs == NULL)
    return FALSE;
  while (insp_backbone_get_stage_names(m->backbone)[n] != NULL)
    n++;
  maps = g_new0(InspFeatureMap, n + 1);
  zeros = g_new0(float, 3 * (gsize)m->input_size * m->input_size);
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

static gboolean
tensor_error(GError **error, const char *path, GError *e)
{
  g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR, "%s: %s", path, e->message);
  g_error_free(e);
  return FALSE;
}

InspModel *
insp_model_load(const char *path, GError **error)
{
  g_autoptr(InspModel) m = insp_model_alloc();
  g_autoptr(GError) e = NULL;
  g_autoptr(GMappedFile) mf = NULL;
  g_autoptr(GBytes) bytes = NULL;
  InspSafetensors *st;
  const char *fmt, *det, *stages;
  gint64 version, size, dim, grid, seed, iv;
  g_auto(GStrv) sv = NULL;
  double sigma;

  g_return_val_if_fail(path != NULL, NULL);
  st = m->st = insp_safetensors_open(path, &e);
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
  if (!meta_get_int(st, path, "format_version", 1, G_MAXINT32, &version, error))
    return NULL;
  if (version > INSP_MODEL_FORMAT_VERSION) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s was written by a newer inspectd (model format version %" G_GINT64_FORMAT
                "); this build reads version %d: upgrade inspectd or retrain the model",
                path, version, INSP_MODEL_FORMAT_VERSION);
    return NULL;
  }
  det = insp_safetensors_get_metadata(st, "detector");
  if (g_strcmp0(det, "patchcore") == 0) {
    m->kind = INSP_DETECTOR_PATCHCORE;
  } else if (g_strcmp0(det, "padim") == 0) {
    m->kind = INSP_DETECTOR_PADIM;
  } else {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: unknown detector '%s' (expected patchcore or padim)", path,
                det ? det : "(missing)");
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
  if (!meta_get_int(st, path, "input_size", 32, INSP_MAX_INPUT_SIZE, &size, error) ||
      !meta_get_triple(st, path, "mean", m->mean, error) ||
      !meta_get_triple(st, path, "std", m->std, error) ||
      !meta_get_int(st, path, "feature_dim", 1, 1 << 16, &dim, error) ||
      !meta_get_int(st, path, "feature_grid", 1, INSP_MAX_INPUT_SIZE, &grid, error) ||
      !meta_get_int(st, path, "seed", G_MININT64, G_MAXINT64, &seed, error) ||
      !meta_get_double(st, path, "blur_sigma", &sigma, error) ||
      !meta_get_double(st, path, "score.image_base", &m->norm.image_base, error) ||
      !meta_get_double(st, path, "score.image_threshold", &m->norm.image_threshold, error) ||
      !meta_get_double(st, path, "score.pixel_base", &m->norm.pixel_base, error) ||
      !meta_get_double(st, path, "score.pixel_threshold", &m->norm.pixel_threshold, error))
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
  m->seed = (guint64)seed;
  if (meta_get_int(st, path, "train.images", 0, G_MAXINT32, &iv, NULL))
    m->train_images = (int)iv;
  if (meta_get_int(st, path, "train.held_out", 0, G_MAXINT32, &iv, NULL))
    m->held_out_images = (int)iv;
  m->train_date = g_strdup(insp_safetensors_get_metadata(st, "train.date"));
  if (!probe_stages(m, error))
    return NULL;
  if (m->spec.h != grid) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: the backbone gives a %dx%d grid at input %d, the model was trained on "
                "%" G_GINT64_FORMAT,
                path, m->spec.h, m->spec.w, m->input_size, grid);
    return NULL;
  }

  if (m->kind == INSP_DETECTOR_PATCHCORE) {
    const InspTensorInfo *ti = insp_safetensors_lookup(st, "patchcore.memory_bank");
    gint64 shape[2];
    double frac;

    if (!meta_get_double(st, path, "patchcore.coreset_fraction", &frac, error) ||
        !meta_get_int(st, path, "patchcore.num_neighbors", 1, 1024, &iv, error))
      return NULL;
    m->coreset_fraction = frac;
    if (iv != INSP_PATCHCORE_NUM_NEIGHBOURS) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: patchcore.num_neighbors = %" G_GINT64_FORMAT
                  " is not supported (this build uses %d)",
                  path, iv, INSP_PATCHCORE_NUM_NEIGHBOURS);
      return NULL;
    }
    if (!meta_get_int(st, path, "patchcore.reduce_dim", 0, 1 << 16, &iv, error))
      return NULL;
    m->spec.reduce_dim = (int)iv;
    /* Absent in files written before it could be chosen: the paper's 3. */
    if (insp_safetensors_get_metadata(st, "patchcore.patch_size") != NULL) {
      if (!meta_get_int(st, path, "patchcore.patch_size", 1, INSP_PATCHCORE_PATCH_SIZE_MAX, &iv,
                        error))
        return NULL;
      if (iv % 2 == 0) {
        g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                    "%s: model metadata 'patchcore.patch_size' = %" G_GINT64_FORMAT " is not odd",
                    path, iv);
        return NULL;
      }
      m->spec.patch_size = (int)iv;
    }
    insp_model_finish_setup(m);
    if (m->dim != dim) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: feature_dim %" G_GINT64_FORMAT " does not match the backbone's %d", path,
                  dim, m->dim);
      return NULL;
    }
    if (ti == NULL || ti->ndim != 2 || ti->shape[0] < 1 || ti->shape[0] > MAX_BANK_ROWS) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                  "%s: tensor 'patchcore.memory_bank' is %s, expected [K,%d] with 1 <= K <= %d",
                  path, ti ? "misshapen" : "missing", m->dim, MAX_BANK_ROWS);
      return NULL;
    }
    shape[0] = ti->shape[0];
    shape[1] = m->dim;
    m->bank = insp_safetensors_get_f32(st, "patchcore.memory_bank", 2, shape, &e);
    if (m->bank == NULL) {
      tensor_error(error, path, g_steal_pointer(&e));
      return NULL;
    }
    m->bank_rows = (int)shape[0];
    if (!check_finite(path, "patchcore.memory_bank", m->bank, (gsize)shape[0] * (gsize)shape[1],
                      error))
      return NULL;
    insp_model_finish_setup(m); /* bank norms */
  } else {
    gint64 s1[1], s2[2], s3[3];

    if (!meta_get_int(st, path, "padim.channels_total", 1, 1 << 16, &iv, error))
      return NULL;
    m->padim_channels_total = (int)iv;
    if (m->padim_channels_total != m->spec.fine_c + m->spec.coarse_c) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: padim.channels_total %d does not match the backbone's %d", path,
                  m->padim_channels_total, m->spec.fine_c + m->spec.coarse_c);
      return NULL;
    }
    if (insp_safetensors_lookup(st, "padim.channels") != NULL) {
      const float *ch;

      if (dim >= m->padim_channels_total) {
        g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                    "%s: padim.channels with feature_dim %" G_GINT64_FORMAT " of %d", path, dim,
                    m->padim_channels_total);
        return NULL;
      }
      s1[0] = dim;
      ch = insp_safetensors_get_f32(st, "padim.channels", 1, s1, &e);
      if (ch == NULL) {
        tensor_error(error, path, g_steal_pointer(&e));
        return NULL;
      }
      m->channels = g_new(int, dim);
      for (int i = 0; i < dim; i++) {
        if (!(ch[i] >= 0.0f && ch[i] < (float)m->padim_channels_total) || ch[i] != floorf(ch[i]) ||
            (i > 0 && ch[i] <= ch[i - 1])) {
          g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                      "%s: padim.channels must be increasing channel indices below %d", path,
                      m->padim_channels_total);
          return NULL;
        }
        m->channels[i] = (int)ch[i];
      }
      m->spec.n_channels = (int)dim;
    }
    insp_model_finish_setup(m);
    if (m->dim != dim) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: feature_dim %" G_GINT64_FORMAT " does not match %d", path, dim, m->dim);
      return NULL;
    }
    s2[0] = m->n_patches;
    s2[1] = dim;
    s3[0] = m->n_patches;
    s3[1] = dim;
    s3[2] = dim;
    m->padim_mean = insp_safetensors_get_f32(st, "padim.mean", 2, s2, &e);
    if (m->padim_mean == NULL) {
      tensor_error(error, path, g_steal_pointer(&e));
      return NULL;
    }
    m->padim_inv_cov = insp_safetensors_get_f32(st, "padim.inv_cov", 3, s3, &e);
    if (m->padim_inv_cov == NULL) {
      tensor_error(error, path, g_steal_pointer(&e));
      return NULL;
    }
    if (!check_finite(path, "padim.mean", m->padim_mean, (gsize)s2[0] * (gsize)s2[1], error) ||
        !check_finite(path, "padim.inv_cov", m->padim_inv_cov,
                      (gsize)s3[0] * (gsize)s3[1] * (gsize)s3[2], error))
      return NULL;
  }
  if (!insp_safetensors_check_all_used(st, NULL, &e)) {
    tensor_error(error, path, g_steal_pointer(&e));
    return NULL;
  }
  if (fabs(sigma - m->blur_sigma) > 1e-3 * m->blur_sigma) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: blur_sigma %g is not this build's %g for input %d", path, sigma, m->blur_sigma,
                m->input_size);
    return NULL;
  }
  mf = g_mapped_file_new(path, FALSE, NULL);
  if (mf != NULL) {
    bytes = g_mapped_file_get_bytes(mf);
    set_id(m, bytes);
  }
  return g_steal_pointer(&m);
}
