/* detector-patchcore: PatchCore (Roth et al. 2022, as anomalib computes it)
 * as an InspDetectorClass.
 *
 * Training keeps the features of every patch of every image, n * P * D
 * floats (300 images at 224 px with mobilenetv2: 300 * 784 * 128 * 4 B =
 * 120 MB; it grows with --size, not with the camera's resolution), and
 * selects the memory bank as a greedy k-center coreset of them
 * (insp_patchcore_coreset_tuned). Scoring: each patch's distance to its
 * nearest bank row, the image score with anomalib's reweighting.
 *
 * In the file: tensor patchcore.memory_bank [K, D]; metadata
 * patchcore.coreset_fraction, num_neighbors, reduce_dim, patch_size (absent
 * in older files: 3) and projection (a note for people).
 *
 * Threads: fit and read on one thread; score from any, with own scratch. */
#include "insp-detector-private.h"
#include "insp-ops.h"

#include <math.h>
#include <string.h>

#define MAX_BANK_ROWS (1 << 24)

typedef struct {
  int bank_rows;
  const float *bank; /* [bank_rows, dim]: owned_bank or the mapped file */
  float *bank_sqnorm;
  float *bank_packed; /* insp_ops_nn_pack of the bank */
  float *owned_bank;
  double coreset_fraction;
  gboolean coreset_exact; /* trained with INSP_CORESET_PROJECTION=none */
} PatchCore;

static PatchCore *
state(const InspModel *m)
{
  return m->det;
}

static void
patchcore_free(gpointer det)
{
  PatchCore *pc = det;

  if (pc == NULL)
    return;
  g_free(pc->bank_sqnorm);
  g_free(pc->bank_packed);
  g_free(pc->owned_bank);
  g_free(pc);
}

static PatchCore *
ensure_state(InspModel *m)
{
  if (m->det == NULL)
    m->det = g_new0(PatchCore, 1);
  return m->det;
}

const float *
insp_patchcore_get_bank(const InspModel *m, int *rows)
{
  g_return_val_if_fail(m != NULL && m->klass == &insp_detector_patchcore, NULL);
  *rows = state(m)->bank_rows;
  return state(m)->bank;
}

static void
patchcore_setup(InspModel *m)
{
  PatchCore *pc = ensure_state(m);

  g_clear_pointer(&pc->bank_sqnorm, g_free);
  g_clear_pointer(&pc->bank_packed, g_free);
  if (pc->bank == NULL)
    return;
  pc->bank_packed = g_new(float, insp_ops_nn_packed_size(pc->bank_rows, m->dim));
  insp_ops_nn_pack(pc->bank, pc->bank_rows, m->dim, pc->bank_packed);
  pc->bank_sqnorm = g_new(float, pc->bank_rows);
  for (int r = 0; r < pc->bank_rows; r++) {
    const float *b = pc->bank + (gsize)r * m->dim;
    float s = 0.0f;

    for (int j = 0; j < m->dim; j++)
      s += b[j] * b[j];
    pc->bank_sqnorm[r] = s;
  }
}

/* ---- training ---- */

static gboolean
patchcore_configure(InspModel *m, const InspTrainOptions *opt, GError **error)
{
  PatchCore *pc = ensure_state(m);

  if (!(opt->coreset_fraction > 0.0 && opt->coreset_fraction <= 1.0)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "coreset fraction %g is not in (0, 1]", opt->coreset_fraction);
    return FALSE;
  }
  if (opt->patch_size != 0 &&
      (opt->patch_size < 1 || opt->patch_size > INSP_PATCHCORE_PATCH_SIZE_MAX ||
       opt->patch_size % 2 == 0)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "patch size %d is not an odd number in [1, %d]", opt->patch_size,
                INSP_PATCHCORE_PATCH_SIZE_MAX);
    return FALSE;
  }
  if (opt->patch_size != 0)
    m->spec.patch_size = opt->patch_size;
  if (opt->patchcore_dim > 0)
    m->spec.reduce_dim = opt->patchcore_dim;
  pc->coreset_fraction = opt->coreset_fraction;
  pc->coreset_exact = insp_patchcore_coreset_projection() == INSP_CORESET_EXACT;
  return TRUE;
}

struct _InspDetectorFit {
  float *rows; /* [n_images, P, D], slot order until the final fit */
  gsize per_img;
  int n_images, n_train;
  const int *slot;
};

static void
patchcore_fit_free(InspDetectorFit *f)
{
  if (f == NULL)
    return;
  g_free(f->rows);
  g_free(f);
}

static InspDetectorFit *
patchcore_fit_new(InspModel *m, int n_images, int n_train, const int *slot, GError **error)
{
  InspDetectorFit *f = g_new0(InspDetectorFit, 1);

  f->per_img = (gsize)m->n_patches * m->dim;
  f->n_images = n_images;
  f->n_train = n_train;
  f->slot = slot;
  f->rows = g_try_new(float, f->per_img *n_images);
  if (f->rows == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "cannot allocate %" G_GSIZE_FORMAT " MB of patch features for %d images",
                f->per_img * n_images * sizeof(float) >> 20, n_images);
    patchcore_fit_free(f);
    return NULL;
  }
  return f;
}

/* Slots put training images first, held-out ones last. */
static float *
patchcore_fit_dest(InspDetectorFit *f, int image, float *scratch_feats)
{
  return f->rows + (gsize)f->slot[image] * f->per_img;
}

static void
patchcore_fit_add(InspDetectorFit *f, int image, const float *feats)
{
}

static const float *
patchcore_fit_held(InspDetectorFit *f, int h)
{
  return f->rows + (gsize)(f->n_train + h) * f->per_img;
}

/* Moves the per-image blocks of @rows from slot order (the rows of image i
 * at position slot[i]) to source order (at position i), in place, one
 * permutation cycle at a time. */
static void
to_source_order(float *rows, gsize per_img, const int *slot, int n_images)
{
  g_autofree float *tmp = g_new(float, per_img);
  g_autofree gboolean *done = g_new0(gboolean, n_images);

  for (int i = 0; i < n_images; i++) {
    int j = i;

    if (done[i])
      continue;
    memcpy(tmp, rows + (gsize)i * per_img, sizeof(float) * per_img);
    for (;;) {
      int nx = slot[j];

      done[j] = TRUE;
      if (nx == i) {
        memcpy(rows + (gsize)j * per_img, tmp, sizeof(float) * per_img);
        break;
      }
      memcpy(rows + (gsize)j * per_img, rows + (gsize)nx * per_img, sizeof(float) * per_img);
      j = nx;
    }
  }
}

static float *
gather_rows(const float *x, int d, const gsize *idx, gsize k)
{
  float *out = g_new(float, k *(gsize)d);

  for (gsize i = 0; i < k; i++)
    memcpy(out + i * d, x + idx[i] * d, sizeof(float) * (gsize)d);
  return out;
}

/* The first fit: a coreset of the training images' patches. The final fit
 * sees the images in source (name) order, as a single fit on all of them
 * would: the bank then does not depend on which images were held out, and
 * the seed's start row is the same patch as in a PyTorch fit over the
 * sorted folder. */
static gboolean
patchcore_fit(InspModel *m, InspDetectorFit *f, gboolean final, InspProgressFunc progress,
              gpointer progress_data, GError **error)
{
  PatchCore *pc = state(m);
  gsize k = 0, n_rows;
  InspCoresetOptions o;
  g_autofree gsize *sel = NULL;

  if (final)
    to_source_order(f->rows, f->per_img, f->slot, f->n_images);
  n_rows = (gsize)(final ? f->n_images : f->n_train) * m->n_patches;
  insp_coreset_options_init(&o);
  o.projection = pc->coreset_exact ? INSP_CORESET_EXACT : INSP_CORESET_SPARSE_RANDOM;
  o.progress = progress;
  o.progress_stage = final ? "coreset 2/2" : "coreset 1/2";
  o.progress_data = progress_data;
  sel =
      insp_patchcore_coreset_tuned(f->rows, n_rows, m->dim, pc->coreset_fraction, m->seed, &o, &k);
  if (sel == NULL || k == 0) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "coreset selection failed");
    return FALSE;
  }
  g_free(pc->owned_bank);
  pc->owned_bank = gather_rows(f->rows, m->dim, sel, k);
  pc->bank = pc->owned_bank;
  pc->bank_rows = (int)k;
  insp_model_finish_setup(m);
  return TRUE;
}

/* ---- the model ---- */

static void
patchcore_info(const InspModel *m, InspModelInfo *info)
{
  info->bank_rows = state(m)->bank_rows;
  info->coreset_fraction = state(m)->coreset_fraction;
}

static char *
patchcore_describe(const InspModel *m)
{
  return g_strdup_printf(
      "bank       %d rows (coreset %g of %d patches, seed %" G_GUINT64_FORMAT ")",
      state(m)->bank_rows, state(m)->coreset_fraction, m->train_images * m->n_patches, m->seed);
}

static void
patchcore_write_tensors(const InspModel *m, InspSafetensorsWriter *w)
{
  gint64 shape[2] = {state(m)->bank_rows, m->dim};

  insp_safetensors_writer_add_f32(w, "patchcore.memory_bank", 2, shape, state(m)->bank);
}

static void
patchcore_write_metadata(const InspModel *m, InspSafetensorsWriter *w)
{
  insp_model_meta_set_double(w, "patchcore.coreset_fraction", state(m)->coreset_fraction);
  insp_model_meta_set_int(w, "patchcore.num_neighbors", INSP_PATCHCORE_NUM_NEIGHBOURS);
  insp_model_meta_set_int(w, "patchcore.reduce_dim", m->spec.reduce_dim);
  insp_model_meta_set_int(w, "patchcore.patch_size", m->spec.patch_size);
  insp_safetensors_writer_set_metadata(
      w, "patchcore.projection",
      state(m)->coreset_exact
          ? "none (exact distances; top 128 principal axes when D > 128)"
          : "sklearn sparse random (density 1/sqrt(D), seed) to min(D, 128) dims");
}

static gboolean
patchcore_read(InspModel *m, const char *path, gint64 dim, GError **error)
{
  InspSafetensors *st = m->st;
  PatchCore *pc = ensure_state(m);
  const InspTensorInfo *ti = insp_safetensors_lookup(st, "patchcore.memory_bank");
  gint64 shape[2], iv;

  if (!insp_model_meta_get_double(st, path, "patchcore.coreset_fraction", &pc->coreset_fraction,
                                  error) ||
      !insp_model_meta_get_int(st, path, "patchcore.num_neighbors", 1, 1024, &iv, error))
    return FALSE;
  if (iv != INSP_PATCHCORE_NUM_NEIGHBOURS) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: patchcore.num_neighbors = %" G_GINT64_FORMAT
                " is not supported (this build uses %d)",
                path, iv, INSP_PATCHCORE_NUM_NEIGHBOURS);
    return FALSE;
  }
  if (!insp_model_meta_get_int(st, path, "patchcore.reduce_dim", 0, 1 << 16, &iv, error))
    return FALSE;
  m->spec.reduce_dim = (int)iv;
  /* Absent in files written before it could be chosen: the paper's 3. */
  if (insp_safetensors_get_metadata(st, "patchcore.patch_size") != NULL) {
    if (!insp_model_meta_get_int(st, path, "patchcore.patch_size", 1, INSP_PATCHCORE_PATCH_SIZE_MAX,
                                 &iv, error))
      return FALSE;
    if (iv % 2 == 0) {
      g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                  "%s: model metadata 'patchcore.patch_size' = %" G_GINT64_FORMAT " is not odd",
                  path, iv);
      return FALSE;
    }
    m->spec.patch_size = (int)iv;
  }
  insp_model_finish_setup(m);
  if (m->dim != dim) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: feature_dim %" G_GINT64_FORMAT " does not match the backbone's %d", path, dim,
                m->dim);
    return FALSE;
  }
  if (ti == NULL || ti->ndim != 2 || ti->shape[0] < 1 || ti->shape[0] > MAX_BANK_ROWS) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TENSOR,
                "%s: tensor 'patchcore.memory_bank' is %s, expected [K,%d] with 1 <= K <= %d", path,
                ti ? "misshapen" : "missing", m->dim, MAX_BANK_ROWS);
    return FALSE;
  }
  shape[0] = ti->shape[0];
  shape[1] = m->dim;
  pc->bank = insp_model_get_tensor(m, path, "patchcore.memory_bank", 2, shape, error);
  if (pc->bank == NULL)
    return FALSE;
  pc->bank_rows = (int)shape[0];
  insp_model_finish_setup(m); /* bank norms */
  return TRUE;
}

/* ---- scoring ---- */

/* The scratch, one allocation: nearest-neighbour scratch, min_d2 [P],
 * argmin [P], knn [bank_rows], each part 64-byte aligned. */
#define ALIGN64(n) (((n) + 63) & ~(gsize)63)

static void
scratch_layout(const InspModel *m, gsize *o_min, gsize *o_arg, gsize *o_knn, gsize *total)
{
  int p = m->n_patches;

  *o_min = ALIGN64(insp_ops_nn_scratch_size(p) * sizeof(float));
  *o_arg = *o_min + ALIGN64((gsize)p * sizeof(float));
  *o_knn = *o_arg + ALIGN64((gsize)p * sizeof(int));
  *total = *o_knn + ALIGN64((gsize)MAX(state(m)->bank_rows, 1) * sizeof(float));
}

static gsize
patchcore_scratch_size(const InspModel *m)
{
  gsize a, b, c, total;

  scratch_layout(m, &a, &b, &c, &total);
  return total;
}

static float
patchcore_score(const InspModel *m, void *scratch, const float *feats, float *patch_scores)
{
  const PatchCore *pc = state(m);
  guint8 *base = scratch;
  gsize o_min, o_arg, o_knn, total;
  float *min_d2, *knn;
  int *argmin;

  scratch_layout(m, &o_min, &o_arg, &o_knn, &total);
  min_d2 = (float *)(void *)(base + o_min);
  argmin = (int *)(void *)(base + o_arg);
  knn = (float *)(void *)(base + o_knn);
  insp_ops_nearest_neighbour(feats, m->n_patches, pc->bank_packed, pc->bank_sqnorm, pc->bank_rows,
                             m->dim, (float *)scratch, min_d2, argmin);
  return insp_patchcore_image_score(feats, m->n_patches, m->dim, min_d2, argmin, pc->bank,
                                    pc->bank_sqnorm, pc->bank_rows, knn, patch_scores);
}

const InspDetectorClass insp_detector_patchcore = {
    .kind = INSP_DETECTOR_PATCHCORE,
    .name = "patchcore",
    .patchcore_features = TRUE,
    .default_input_size = INSP_PATCHCORE_DEFAULT_SIZE,
    .configure = patchcore_configure,
    .fit_new = patchcore_fit_new,
    .fit_dest = patchcore_fit_dest,
    .fit_add = patchcore_fit_add,
    .fit_held = patchcore_fit_held,
    .fit = patchcore_fit,
    .fit_free = patchcore_fit_free,
    .setup = patchcore_setup,
    .free = patchcore_free,
    .info = patchcore_info,
    .describe = patchcore_describe,
    .write_tensors = patchcore_write_tensors,
    .write_metadata = patchcore_write_metadata,
    .read = patchcore_read,
    .scratch_size = patchcore_scratch_size,
    .score = patchcore_score,
};
