/* detector-padim: PaDiM (Defard et al. 2021, as anomalib computes it) as an
 * InspDetectorClass.
 *
 * Training accumulates double sums [P, D] and [P, D, D] (784 * 128 * 128 *
 * 8 B = 100 MB) over the training images and keeps only the held-out images'
 * features; a fit is a per-position Gaussian (mean, inverse covariance with
 * eps = 0.01). Scoring: the Mahalanobis distance of each patch, the image
 * score the maximum of the blurred map. An optional random channel subset
 * (anomalib's, drawn as torch.randperm draws it) shrinks D.
 *
 * In the file: tensors padim.mean [P, D], padim.inv_cov [P, D, D],
 * padim.channels [D] when a subset is used; metadata padim.channels_total
 * and padim.eps.
 *
 * Threads: fit and read on one thread; score from any, with own scratch. */
#include "insp-detector-private.h"

#include <math.h>
#include <string.h>

#define PADIM_EPS 0.01

typedef struct {
  int channels_total;   /* channels of the two stages together */
  const float *mean;    /* [P, D] */
  const float *inv_cov; /* [P, D, D] */
  float *owned_mean, *owned_inv_cov;
} PaDiM;

static PaDiM *
state(const InspModel *m)
{
  return m->det;
}

static PaDiM *
ensure_state(InspModel *m)
{
  if (m->det == NULL)
    m->det = g_new0(PaDiM, 1);
  return m->det;
}

static void
padim_free(gpointer det)
{
  PaDiM *pd = det;

  if (pd == NULL)
    return;
  g_free(pd->owned_mean);
  g_free(pd->owned_inv_cov);
  g_free(pd);
}

/* ---- training ---- */

static gboolean
padim_configure(InspModel *m, const InspTrainOptions *opt, GError **error)
{
  PaDiM *pd = ensure_state(m);
  int total_c = m->spec.fine_c + m->spec.coarse_c;

  pd->channels_total = total_c;
  if ((opt->image_score != INSP_IMAGE_SCORE_DEFAULT &&
       opt->image_score != INSP_IMAGE_SCORE_MAP_MAX) ||
      opt->neighbours != 0) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "PaDiM's image score is the maximum of its blurred map (map-max): no other "
                "rule, no neighbours");
    return FALSE;
  }
  if (opt->padim_channels < 0 || opt->padim_channels > total_c) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "PaDiM channel subset %d is not in [0, %d]", opt->padim_channels, total_c);
    return FALSE;
  }
  if (opt->padim_channels > 0 && opt->padim_channels < total_c) {
    m->channels = g_new(int, opt->padim_channels);
    insp_padim_random_channels(total_c, opt->padim_channels, opt->seed, m->channels);
    m->spec.n_channels = opt->padim_channels;
  }
  return TRUE;
}

struct _InspDetectorFit {
  InspPadimAccum *acc; /* the training images */
  float *held;         /* [n_hold, P, D] */
  gsize per_img;
  int n_train, n_hold;
  const int *slot;
};

static void
padim_fit_free(InspDetectorFit *f)
{
  if (f == NULL)
    return;
  insp_padim_accum_free(f->acc);
  g_free(f->held);
  g_free(f);
}

static InspDetectorFit *
padim_fit_new(InspModel *m, int n_images, int n_train, const int *slot, GError **error)
{
  InspDetectorFit *f = g_new0(InspDetectorFit, 1);
  int n_hold = n_images - n_train;

  f->per_img = (gsize)m->n_patches * m->dim;
  f->n_train = n_train;
  f->n_hold = n_hold;
  f->slot = slot;
  f->held = g_try_new(float, f->per_img *n_hold);
  if (f->held == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "cannot allocate %" G_GSIZE_FORMAT " MB of patch features for %d images",
                f->per_img * n_hold * sizeof(float) >> 20, n_hold);
    padim_fit_free(f);
    return NULL;
  }
  f->acc = insp_padim_accum_new(m->n_patches, m->dim);
  return f;
}

/* A held-out image's features are kept; a training image's go through the
 * caller's scratch into the sums. */
static float *
padim_fit_dest(InspDetectorFit *f, int image, float *scratch_feats)
{
  if (f->slot[image] >= f->n_train)
    return f->held + (gsize)(f->slot[image] - f->n_train) * f->per_img;
  return scratch_feats;
}

static void
padim_fit_add(InspDetectorFit *f, int image, const float *feats)
{
  if (f->slot[image] < f->n_train)
    insp_padim_accum_add(f->acc, feats);
}

static const float *
padim_fit_held(InspDetectorFit *f, int h)
{
  return f->held + (gsize)h * f->per_img;
}

/* The final fit adds the held-out images to the sums. */
static gboolean
padim_fit(InspModel *m, InspDetectorFit *f, gboolean final, InspProgressFunc progress,
          gpointer progress_data, GError **error)
{
  PaDiM *pd = state(m);
  gsize p = (gsize)m->n_patches, d = (gsize)m->dim;

  if (final)
    for (int h = 0; h < f->n_hold; h++)
      insp_padim_accum_add(f->acc, f->held + (gsize)h * f->per_img);
  if (pd->owned_mean == NULL) {
    pd->owned_mean = g_new(float, p *d);
    pd->owned_inv_cov = g_new(float, p *d *d);
  }
  if (!insp_padim_accum_finish(f->acc, PADIM_EPS, pd->owned_mean, pd->owned_inv_cov)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "a covariance is not positive definite (non-finite features?)");
    return FALSE;
  }
  pd->mean = pd->owned_mean;
  pd->inv_cov = pd->owned_inv_cov;
  return TRUE;
}

/* ---- the model ---- */

static void
padim_info(const InspModel *m, InspModelInfo *info)
{
  info->bank_rows = 0;
  info->coreset_fraction = 0.0;
  info->image_score = INSP_IMAGE_SCORE_MAP_MAX;
  info->neighbours = 0;
}

static char *
padim_describe(const InspModel *m)
{
  return g_strdup_printf("gaussians  %d positions x %d dims", m->n_patches, m->dim);
}

static void
padim_write_tensors(const InspModel *m, InspSafetensorsWriter *w)
{
  gint64 s2[2] = {m->n_patches, m->dim};
  gint64 s3[3] = {m->n_patches, m->dim, m->dim};

  insp_safetensors_writer_add_f32(w, "padim.mean", 2, s2, state(m)->mean);
  insp_safetensors_writer_add_f32(w, "padim.inv_cov", 3, s3, state(m)->inv_cov);
  if (m->channels != NULL) {
    g_autofree float *ch = g_new(float, m->dim);
    gint64 s1[1] = {m->dim};

    for (int i = 0; i < m->dim; i++)
      ch[i] = (float)m->channels[i];
    insp_safetensors_writer_add_f32(w, "padim.channels", 1, s1, ch);
  }
}

static void
padim_write_metadata(const InspModel *m, InspSafetensorsWriter *w)
{
  insp_model_meta_set_int(w, "padim.channels_total", state(m)->channels_total);
  insp_model_meta_set_double(w, "padim.eps", PADIM_EPS);
}

static gboolean
padim_read(InspModel *m, const char *path, gint64 dim, GError **error)
{
  InspSafetensors *st = m->st;
  PaDiM *pd = ensure_state(m);
  gint64 s1[1], s2[2], s3[3], iv;

  if (!insp_model_meta_get_int(st, path, "padim.channels_total", 1, 1 << 16, &iv, error))
    return FALSE;
  pd->channels_total = (int)iv;
  if (pd->channels_total != m->spec.fine_c + m->spec.coarse_c) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: padim.channels_total %d does not match the backbone's %d", path,
                pd->channels_total, m->spec.fine_c + m->spec.coarse_c);
    return FALSE;
  }
  if (insp_safetensors_lookup(st, "padim.channels") != NULL) {
    g_autoptr(GError) e = NULL;
    const float *ch;

    if (dim >= pd->channels_total) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                  "%s: padim.channels with feature_dim %" G_GINT64_FORMAT " of %d", path, dim,
                  pd->channels_total);
      return FALSE;
    }
    s1[0] = dim;
    ch = insp_safetensors_get_f32(st, "padim.channels", 1, s1, &e);
    if (ch == NULL) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR, "%s: %s", path, e->message);
      return FALSE;
    }
    m->channels = g_new(int, dim);
    for (int i = 0; i < dim; i++) {
      if (!(ch[i] >= 0.0f && ch[i] < (float)pd->channels_total) || ch[i] != floorf(ch[i]) ||
          (i > 0 && ch[i] <= ch[i - 1])) {
        g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                    "%s: padim.channels must be increasing channel indices below %d", path,
                    pd->channels_total);
        return FALSE;
      }
      m->channels[i] = (int)ch[i];
    }
    m->spec.n_channels = (int)dim;
  }
  insp_model_finish_setup(m);
  if (m->dim != dim) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: feature_dim %" G_GINT64_FORMAT " does not match %d", path, dim, m->dim);
    return FALSE;
  }
  s2[0] = m->n_patches;
  s2[1] = dim;
  s3[0] = m->n_patches;
  s3[1] = dim;
  s3[2] = dim;
  pd->mean = insp_model_get_tensor(m, path, "padim.mean", 2, s2, error);
  if (pd->mean == NULL)
    return FALSE;
  pd->inv_cov = insp_model_get_tensor(m, path, "padim.inv_cov", 3, s3, error);
  return pd->inv_cov != NULL;
}

/* ---- scoring ---- */

static gsize
padim_scratch_size(const InspModel *m)
{
  return 2 * (gsize)m->dim * sizeof(float);
}

static float
padim_score(const InspModel *m, void *scratch, const float *feats, float *patch_scores)
{
  insp_padim_score(feats, m->n_patches, m->dim, state(m)->mean, state(m)->inv_cov, scratch,
                   patch_scores);
  return NAN; /* the maximum of the blurred map */
}

const InspDetectorClass insp_detector_padim = {
    .kind = INSP_DETECTOR_PADIM,
    .name = "padim",
    .patchcore_features = FALSE,
    .default_input_size = 0,
    .configure = padim_configure,
    .fit_new = padim_fit_new,
    .fit_dest = padim_fit_dest,
    .fit_add = padim_fit_add,
    .fit_held = padim_fit_held,
    .fit = padim_fit,
    .fit_free = padim_fit_free,
    .free = padim_free,
    .info = padim_info,
    .describe = padim_describe,
    .write_tensors = padim_write_tensors,
    .write_metadata = padim_write_metadata,
    .read = padim_read,
    .scratch_size = padim_scratch_size,
    .score = padim_score,
};
