/* detector-patchcore: PatchCore (Roth et al. 2022, as anomalib computes it)
 * as an InspDetectorClass.
 *
 * Training keeps the features of every patch of every image, n * P * D
 * floats (300 images at 224 px with mobilenetv2: 300 * 784 * 128 * 4 B =
 * 120 MB; it grows with --size, not with the camera's resolution), and
 * selects the memory bank as a greedy k-center coreset of them
 * (insp_patchcore_coreset_tuned). Scoring: each patch's distance to its
 * nearest bank row, the image score by the model's rule (by default
 * anomalib's reweighting, InspImageScoreRule).
 *
 * In the file: tensor patchcore.memory_bank [K, D]; metadata
 * patchcore.coreset_fraction, num_neighbors (the reweighting's k; 1, as in
 * anomalib, for a rule that does not reweight, so that a build from before
 * the rules refuses the file instead of reweighting), image_score (absent in
 * older files: reweighted), reduce_dim, patch_size (absent in older files:
 * 3) and projection (a note for people).
 *
 * Threads: fit and read on one thread; score from any, with own scratch.
 * Each model has one thread of its own (a GThreadPool of one, started on
 * first use, stopped when the model is freed) that searches half of the
 * patches when OpenBLAS is set to 2 threads or more; it shares nothing
 * with the caller but the read-only bank. */
#include "insp-detector-private.h"
#include "insp-ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BANK_ROWS (1 << 24)
/* Approximate search (insp_nn_index_search + exact re-rank), chosen from
 * measurements (model/README.md, "Speed and memory"): banks of at least
 * NN_INDEX_MIN_ROWS rows get an index of about NN_INDEX_ROWS_PER_LIST rows
 * per cell, NN_PROBE cells probed per patch; the patches are then re-ranked
 * exactly, highest first, NN_RERANK_BATCH at a time, until no patch left can
 * reach the highest exact score (approximate distances never fall below
 * exact ones), and at least a fraction NN_RERANK_MIN of them. So the image
 * score is the exact search's; patch scores (the map) may be a little high.
 * At 320 px, 1 % coresets, pixel AUROC against the exact search: bottle
 * 0.9825 at 2, 4 and 8 probes (exact 0.9825), KolektorSDD 0.8322 / 0.8353
 * / 0.8363 (exact 0.8360); image AUROC unchanged.
 * On a CPU with AMX-BF16 none of this is used: the exact search runs on the
 * matrix unit (insp-nn-screen.c: a bfloat16 screen, then fp32 for the rows
 * it cannot rule out), faster than the index at every bank size measured,
 * and the map is exact too. Without AMX but with AVX512-VNNI the exact
 * search is an int8 screen, then fp32 (insp-nn-screen.c), used below
 * NN_INDEX_MIN_ROWS as the fp32 search is elsewhere: since the index's plan
 * was made cheaper (2026-12-08), bench-nn (one thread, Zen 5, OpenBLAS's own
 * Cooperlake kernels) puts the screen ahead at 1638 rows and 784 patches
 * (0.86-0.93 against 1.07-1.09 ms) and the index ahead at 3344 rows and 1600
 * patches (2.21-2.56 against 2.94-3.00 ms).
 * insp_model_set_nn_search (inspectd eval --nn) or INSP_NN=exact|approx|fp32
 * in the environment chooses otherwise; INSP_NN_LISTS, INSP_NN_PROBE and
 * INSP_NN_RERANK tune the index (benchmarks). */
#define NN_INDEX_MIN_ROWS 2048
#define NN_INDEX_ROWS_PER_LIST 64
#define NN_PROBE 8
#define NN_RERANK_BATCH 10
#define NN_RERANK_MIN 0.0

typedef struct {
  int bank_rows;
  const float *bank; /* [bank_rows, dim]: owned_bank or the mapped file */
  float *bank_sqnorm;
  float *bank_packed; /* insp_ops_nn_pack of the bank */
  float *owned_bank;
  double coreset_fraction;
  gboolean coreset_exact; /* trained with INSP_CORESET_PROJECTION=none */
  InspImageScoreRule image_score;
  int neighbours; /* k of the REWEIGHTED rule, else 0 */
  InspNnSearch nn_search;
  InspNnIndex *index;   /* NULL: exact search over the whole bank */
  InspNnScreen *screen; /* not NULL: the exact search by a screen (AMX or VNNI) */
  GThreadPool *nn_pool; /* one thread: the second half of the search */
  int n_probe;
  double rerank_min;
} PatchCore;

static void nn_worker(gpointer data, gpointer user_data);

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
  insp_nn_index_free(pc->index);
  insp_nn_screen_free(pc->screen);
  if (pc->nn_pool != NULL)
    g_thread_pool_free(pc->nn_pool, FALSE, TRUE);
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

/* The index for the chosen search (none for the exact one). */
static void
build_index(InspModel *m)
{
  PatchCore *pc = state(m);
  InspNnSearch search = pc->nn_search;
  const char *e;
  int n_lists = MAX(1, pc->bank_rows / NN_INDEX_ROWS_PER_LIST);

  g_clear_pointer(&pc->index, insp_nn_index_free);
  g_clear_pointer(&pc->screen, insp_nn_screen_free);
  if (search == INSP_NN_SEARCH_AUTO && !insp_nn_search_from_string(g_getenv("INSP_NN"), &search))
    search = INSP_NN_SEARCH_AUTO;
  if (pc->bank == NULL || search == INSP_NN_SEARCH_FP32)
    return;
  if (search != INSP_NN_SEARCH_APPROX &&
      (search == INSP_NN_SEARCH_EXACT || insp_nn_screen_kind_available(INSP_NN_SCREEN_BF16_AMX) ||
       pc->bank_rows < NN_INDEX_MIN_ROWS) &&
      (pc->screen = insp_nn_screen_new(pc->bank, pc->bank_rows, m->dim)) != NULL)
    return;
  if (search == INSP_NN_SEARCH_EXACT ||
      (search == INSP_NN_SEARCH_AUTO && pc->bank_rows < NN_INDEX_MIN_ROWS))
    return;
  if ((e = g_getenv("INSP_NN_LISTS")) != NULL)
    n_lists = MAX(1, atoi(e));
  pc->n_probe = NN_PROBE;
  if ((e = g_getenv("INSP_NN_PROBE")) != NULL)
    pc->n_probe = CLAMP(atoi(e), 1, INSP_NN_INDEX_MAX_PROBE);
  pc->rerank_min = NN_RERANK_MIN;
  if ((e = g_getenv("INSP_NN_RERANK")) != NULL)
    pc->rerank_min = CLAMP(g_ascii_strtod(e, NULL), 0.0, 1.0);
  pc->index = insp_nn_index_new(pc->bank, pc->bank_rows, m->dim, n_lists, m->seed);
  pc->n_probe = MIN(pc->n_probe, insp_nn_index_get_n_lists(pc->index));
}

static void
patchcore_set_nn_search(InspModel *m, InspNnSearch search)
{
  ensure_state(m)->nn_search = search;
  build_index(m);
}

static void
patchcore_setup(InspModel *m)
{
  PatchCore *pc = ensure_state(m);

  g_clear_pointer(&pc->bank_sqnorm, g_free);
  g_clear_pointer(&pc->bank_packed, g_free);
  g_clear_pointer(&pc->index, insp_nn_index_free);
  g_clear_pointer(&pc->screen, insp_nn_screen_free);
  if (pc->bank == NULL)
    return;
  if (pc->nn_pool == NULL)
    pc->nn_pool = g_thread_pool_new(nn_worker, NULL, 1, FALSE, NULL);
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
  build_index(m);
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
  pc->image_score =
      opt->image_score == INSP_IMAGE_SCORE_DEFAULT ? INSP_IMAGE_SCORE_REWEIGHTED : opt->image_score;
  if (insp_image_score_rule_to_string(pc->image_score) == NULL) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "image score rule %d is not %s",
                (int)opt->image_score, insp_image_score_rule_list());
    return FALSE;
  }
  if (opt->neighbours != 0 && pc->image_score != INSP_IMAGE_SCORE_REWEIGHTED) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "%d neighbours given, but the image score '%s' does not reweight", opt->neighbours,
                insp_image_score_rule_to_string(pc->image_score));
    return FALSE;
  }
  if (opt->neighbours != 0 && (opt->neighbours < INSP_MODEL_NEIGHBOURS_MIN ||
                               opt->neighbours > INSP_MODEL_NEIGHBOURS_MAX)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN,
                "%d neighbours for the reweighting is not in [%d, %d]", opt->neighbours,
                INSP_MODEL_NEIGHBOURS_MIN, INSP_MODEL_NEIGHBOURS_MAX);
    return FALSE;
  }
  pc->neighbours = pc->image_score != INSP_IMAGE_SCORE_REWEIGHTED ? 0
                   : opt->neighbours != 0                         ? opt->neighbours
                                                                  : INSP_MODEL_NEIGHBOURS_DEFAULT;
  if (opt->patch_size != 0)
    m->spec.patch_size = opt->patch_size;
  if (opt->patchcore_dim > 0)
    m->spec.reduce_dim = opt->patchcore_dim;
  pc->coreset_fraction = opt->coreset_fraction;
  pc->coreset_exact = insp_patchcore_coreset_projection() == INSP_CORESET_EXACT;
  return TRUE;
}

struct _InspDetectorFit {
  /* [n_images, P, D]: slot order, then source order (the first fit's second
   * coreset), then the held-out images' alone (held_only) */
  float *rows;
  gsize per_img;
  int n_images, n_train;
  const int *slot;
  gboolean held_only;
  float *final_bank; /* [final_rows, D]: selected by the first fit */
  int final_rows;
};

static void
patchcore_fit_free(InspDetectorFit *f)
{
  if (f == NULL)
    return;
  g_free(f->rows);
  g_free(f->final_bank);
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

/* Valid from the first fit's return (which keeps the held-out images' rows
 * alone) to fit_free. */
static const float *
patchcore_fit_held(InspDetectorFit *f, int h)
{
  g_return_val_if_fail(f->held_only, NULL);
  return f->rows + (gsize)h * f->per_img;
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

/* The coreset of the first @n_rows rows of f->rows. */
static gsize *
select_rows(const InspModel *m, const InspDetectorFit *f, gsize n_rows, const char *stage,
            InspProgressFunc progress, gpointer progress_data, gsize *k, GError **error)
{
  const PatchCore *pc = state(m);
  InspCoresetOptions o;
  gsize *sel;

  insp_coreset_options_init(&o);
  o.projection = pc->coreset_exact ? INSP_CORESET_EXACT : INSP_CORESET_SPARSE_RANDOM;
  o.progress = progress;
  o.progress_stage = stage;
  o.progress_data = progress_data;
  *k = 0;
  sel = insp_patchcore_coreset_tuned(f->rows, n_rows, m->dim, pc->coreset_fraction, m->seed, &o, k);
  if (sel == NULL || *k == 0) {
    g_free(sel);
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_TRAIN, "coreset selection failed");
    return NULL;
  }
  return sel;
}

/* Keeps the held-out images' blocks of f->rows (in source order) alone, in
 * their order, and gives the rest back. */
static void
keep_held_rows(InspDetectorFit *f)
{
  int h = 0;

  for (int i = 0; i < f->n_images; i++)
    if (f->slot[i] >= f->n_train) {
      if (h != i)
        memcpy(f->rows + (gsize)h * f->per_img, f->rows + (gsize)i * f->per_img,
               sizeof(float) * f->per_img);
      h++;
    }
  f->rows = g_realloc(f->rows, sizeof(float) * f->per_img * MAX(h, 1));
  f->held_only = TRUE;
}

/* The first fit selects both banks while the features of every image are
 * held, then keeps the held-out images' features alone for the calibration
 * (the 545 MB of a 666-image training are not held beside the first bank,
 * its packed copy, its index and the calibration's scratch). The first
 * bank: a coreset of the training images' patches. The final one sees the
 * images in source (name) order, as a single fit on all of them would: the
 * bank then does not depend on which images were held out, and the seed's
 * start row is the same patch as in a PyTorch fit over the sorted folder.
 * The final fit puts it in the model. */
static gboolean
patchcore_fit(InspModel *m, InspDetectorFit *f, gboolean final, InspProgressFunc progress,
              gpointer progress_data, GError **error)
{
  PatchCore *pc = state(m);
  gsize k = 0, k2 = 0, p = (gsize)m->n_patches;
  g_autofree gsize *sel = NULL, *sel2 = NULL;
  g_autofree int *at = NULL;

  /* the first fit's bank, its packed copy and index go; the final bank's
   * packed copy and index wait for the caller's insp_model_finish_setup,
   * after the features are freed */
  pc->bank = NULL;
  pc->bank_rows = 0;
  g_clear_pointer(&pc->owned_bank, g_free);
  insp_model_finish_setup(m);
  if (final) {
    g_return_val_if_fail(f->final_bank != NULL, FALSE);
    pc->owned_bank = g_steal_pointer(&f->final_bank);
    pc->bank = pc->owned_bank;
    pc->bank_rows = f->final_rows;
    return TRUE;
  }

  sel = select_rows(m, f, (gsize)f->n_train * p, "coreset 1/2", progress, progress_data, &k, error);
  if (sel == NULL)
    return FALSE;
  to_source_order(f->rows, f->per_img, f->slot, f->n_images);
  sel2 =
      select_rows(m, f, (gsize)f->n_images * p, "coreset 2/2", progress, progress_data, &k2, error);
  if (sel2 == NULL)
    return FALSE;
  f->final_bank = gather_rows(f->rows, m->dim, sel2, k2);
  f->final_rows = (int)k2;
  /* the first selection's rows were at their slot's place: image at[s] */
  at = g_new(int, f->n_images);
  for (int i = 0; i < f->n_images; i++)
    at[f->slot[i]] = i;
  for (gsize i = 0; i < k; i++)
    sel[i] = (gsize)at[sel[i] / p] * p + sel[i] % p;
  pc->owned_bank = gather_rows(f->rows, m->dim, sel, k);
  pc->bank = pc->owned_bank;
  pc->bank_rows = (int)k;
  keep_held_rows(f);
  insp_model_finish_setup(m);
  return TRUE;
}

/* ---- the model ---- */

static void
patchcore_info(const InspModel *m, InspModelInfo *info)
{
  info->bank_rows = state(m)->bank_rows;
  info->coreset_fraction = state(m)->coreset_fraction;
  info->image_score = state(m)->image_score;
  info->neighbours = state(m)->neighbours;
}

static char *
patchcore_describe(const InspModel *m)
{
  return g_strdup_printf(
      "bank       %d rows (coreset %g of %" G_GINT64_FORMAT " patches, seed %" G_GUINT64_FORMAT ")",
      state(m)->bank_rows, state(m)->coreset_fraction,
      (gint64)(m->train_units > 0 ? m->train_units : m->train_images) * m->n_patches, m->seed);
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
  insp_model_meta_set_int(w, "patchcore.num_neighbors", MAX(state(m)->neighbours, 1));
  insp_safetensors_writer_set_metadata(w, "patchcore.image_score",
                                       insp_image_score_rule_to_string(state(m)->image_score));
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
  const char *rule = insp_safetensors_get_metadata(st, "patchcore.image_score");
  gint64 shape[2], iv;

  if (!insp_model_meta_get_double(st, path, "patchcore.coreset_fraction", &pc->coreset_fraction,
                                  error) ||
      !insp_model_meta_get_int(st, path, "patchcore.num_neighbors", 1, INSP_MODEL_NEIGHBOURS_MAX,
                               &iv, error))
    return FALSE;
  /* Absent in files written before it could be chosen: reweighted. */
  pc->image_score = INSP_IMAGE_SCORE_REWEIGHTED;
  if (rule != NULL && !insp_image_score_rule_from_string(rule, &pc->image_score)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'patchcore.image_score' = '%s' is not %s", path, rule,
                insp_image_score_rule_list());
    return FALSE;
  }
  if ((pc->image_score == INSP_IMAGE_SCORE_REWEIGHTED) != (iv >= INSP_MODEL_NEIGHBOURS_MIN)) {
    g_set_error(error, INSP_MODEL_ERROR, INSP_MODEL_ERROR_FORMAT,
                "%s: model metadata 'patchcore.num_neighbors' = %" G_GINT64_FORMAT
                " does not go with the image score '%s' (reweighted takes %d to %d, the "
                "others 1)",
                path, iv, insp_image_score_rule_to_string(pc->image_score),
                INSP_MODEL_NEIGHBOURS_MIN, INSP_MODEL_NEIGHBOURS_MAX);
    return FALSE;
  }
  pc->neighbours = pc->image_score == INSP_IMAGE_SCORE_REWEIGHTED ? (int)iv : 0;
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

/* The scratch, one allocation: the search's part, then min_d2 [P], argmin
 * [P], knn [bank_rows], each part 64-byte aligned. The search's part: for
 * the exact search, two halves (each for half of the P queries); with the
 * index, the plan for P queries, two work areas (P queries each) and the
 * second half's results [P] + [P]. The re-rank's part after knn: sort keys
 * [P], gathered patches [B, D], exact scratch for B queries, its results
 * [B] + [B]. */
#define ALIGN64(n) (((n) + 63) & ~(gsize)63)

typedef struct {
  gsize o_half;                       /* exact: the second half's scratch */
  gsize o_work0, o_work1, o_m2, o_a2; /* index: plan at 0, work areas, 2nd results */
  gsize o_min, o_arg, o_knn, o_keys, o_rq, o_rs, o_rd, o_ra, total;
} ScratchLayout;

static void
scratch_layout(const InspModel *m, ScratchLayout *l)
{
  const PatchCore *pc = state(m);
  int p = m->n_patches, b = NN_RERANK_BATCH;

  if (pc->index != NULL) {
    l->o_work0 = ALIGN64(insp_nn_index_plan_size(pc->index, p, pc->n_probe) * sizeof(float));
    l->o_work1 = l->o_work0 + ALIGN64(insp_nn_index_work_size(pc->index, p) * sizeof(float));
    l->o_m2 = l->o_work1 + (l->o_work1 - l->o_work0);
    l->o_a2 = l->o_m2 + ALIGN64((gsize)p * sizeof(float));
    l->o_min = l->o_a2 + ALIGN64((gsize)p * sizeof(int));
  } else if (pc->screen != NULL) {
    l->o_half = ALIGN64(insp_nn_screen_scratch_size(pc->screen));
    l->o_min = 2 * l->o_half;
  } else {
    l->o_half = ALIGN64(insp_ops_nn_scratch_size((p + 1) / 2) * sizeof(float));
    l->o_min = 2 * l->o_half;
  }
  l->o_arg = l->o_min + ALIGN64((gsize)p * sizeof(float));
  l->o_knn = l->o_arg + ALIGN64((gsize)p * sizeof(int));
  l->o_keys = l->o_knn + ALIGN64((gsize)MAX(pc->bank_rows, 1) * sizeof(float));
  l->total = l->o_keys;
  if (pc->index == NULL)
    return;
  l->o_rq = l->o_keys + ALIGN64((gsize)p * sizeof(guint64));
  l->o_rs = l->o_rq + ALIGN64((gsize)b * m->dim * sizeof(float));
  l->o_rd = l->o_rs + ALIGN64(insp_ops_nn_scratch_size(b) * sizeof(float));
  l->o_ra = l->o_rd + ALIGN64((gsize)b * sizeof(float));
  l->total = l->o_ra + ALIGN64((gsize)b * sizeof(int));
}

static gsize
patchcore_scratch_size(const InspModel *m)
{
  ScratchLayout l;

  scratch_layout(m, &l);
  return l.total;
}

static int
cmp_u64(const void *a, const void *b)
{
  guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;

  return (x > y) - (x < y);
}

/* Replaces the approximate min_d2/argmin of the patches that decide the
 * image score by exact ones: highest approximate distance first, in
 * batches, until the next one is below the highest exact distance found
 * (an approximate distance is never below the exact one, so no patch left
 * can be the maximum), and at least pc->rerank_min of all patches.
 * Returns the number re-ranked. */
static int
rerank(const InspModel *m, guint8 *base, const ScratchLayout *l, const float *feats, float *min_d2,
       int *argmin)
{
  const PatchCore *pc = state(m);
  int p = m->n_patches, d = m->dim, done = 0;
  int n_min = (int)ceil(pc->rerank_min * p);
  guint64 *keys = (guint64 *)(void *)(base + l->o_keys);
  float *rq = (float *)(void *)(base + l->o_rq), *rs = (float *)(void *)(base + l->o_rs);
  float *rd = (float *)(void *)(base + l->o_rd);
  int *ra = (int *)(void *)(base + l->o_ra);
  float best = -1.0f;

  /* Descending by distance: the bits of a float >= 0 order as the float. */
  for (int i = 0; i < p; i++) {
    guint32 bits;
    float v = MAX(min_d2[i], 0.0f);

    memcpy(&bits, &v, sizeof bits);
    keys[i] = ((guint64)(G_MAXUINT32 - bits) << 32) | (guint32)i;
  }
  qsort(keys, (gsize)p, sizeof(guint64), cmp_u64);
  while (done < p) {
    int n = MIN(NN_RERANK_BATCH, p - done);

    if (done >= n_min && min_d2[keys[done] & G_MAXUINT32] * (1.0f + 1e-4f) < best)
      break;
    for (int t = 0; t < n; t++)
      memcpy(rq + (gsize)t * d, feats + (gsize)(keys[done + t] & G_MAXUINT32) * d,
             sizeof(float) * d);
    insp_ops_nearest_neighbour(rq, n, pc->bank_packed, pc->bank_sqnorm, pc->bank_rows, d, rs, rd,
                               ra);
    for (int t = 0; t < n; t++) {
      int i = (int)(keys[done + t] & G_MAXUINT32);

      min_d2[i] = rd[t];
      argmin[i] = ra[t];
      best = MAX(best, rd[t]);
    }
    done += n;
  }
  return done;
}

/* One half of the search: exact, queries [q0, q1) with @scratch; with the
 * index, cells [l0, l1) of the plan with @work. */
typedef struct {
  const InspModel *m;
  const float *feats;
  int q0, q1, l0, l1;
  float *scratch, *plan, *min_d2;
  int *argmin;
  GMutex lock;
  GCond cond;
  gboolean done;
} NnHalf;

static void
nn_half(NnHalf *h)
{
  const PatchCore *pc = state(h->m);
  int d = h->m->dim;

  if (pc->index != NULL)
    insp_nn_index_search_cells(pc->index, h->feats, h->plan, h->l0, h->l1, h->scratch, h->min_d2,
                               h->argmin);
  else if (pc->screen != NULL)
    insp_nn_screen_search(pc->screen, h->feats + (gsize)h->q0 * d, h->q1 - h->q0, h->scratch,
                          h->min_d2 + h->q0, h->argmin + h->q0, NULL);
  else
    insp_ops_nearest_neighbour(h->feats + (gsize)h->q0 * d, h->q1 - h->q0, pc->bank_packed,
                               pc->bank_sqnorm, pc->bank_rows, d, h->scratch, h->min_d2 + h->q0,
                               h->argmin + h->q0);
}

static void
nn_worker(gpointer data, gpointer user_data)
{
  NnHalf *h = data;

  nn_half(h);
  g_mutex_lock(&h->lock);
  h->done = TRUE;
  g_cond_signal(&h->cond);
  g_mutex_unlock(&h->lock);
}

/* The search in two halves: the exact one by patches, the index's by cells
 * (after its plan, made once on this thread). On the calling thread one
 * after the other, or, when OpenBLAS is set to more than one thread (one
 * worker that has the whole machine, pipeline/README.md "Threads"), the second on the
 * detector's own thread at the same time; the results are the same. */
static void
search(const InspModel *m, guint8 *base, const ScratchLayout *l, const float *feats, float *min_d2,
       int *argmin)
{
  PatchCore *pc = state(m);
  int p = m->n_patches, half = (p + 1) / 2;
  NnHalf h[2];

  memset(h, 0, sizeof h);
  for (int t = 0; t < 2; t++) {
    h[t].m = m;
    h[t].feats = feats;
    h[t].min_d2 = min_d2;
    h[t].argmin = argmin;
  }
  if (pc->index != NULL) {
    float *plan = (float *)(void *)base;
    int split;

    insp_nn_index_plan(pc->index, feats, p, pc->n_probe, plan);
    split = insp_nn_index_plan_split(pc->index, plan);
    h[0].plan = h[1].plan = plan;
    h[0].l1 = h[1].l0 = split;
    h[1].l1 = insp_nn_index_get_n_lists(pc->index);
    h[0].scratch = (float *)(void *)(base + l->o_work0);
    h[1].scratch = (float *)(void *)(base + l->o_work1);
    h[1].min_d2 = (float *)(void *)(base + l->o_m2);
    h[1].argmin = (int *)(void *)(base + l->o_a2);
    for (int i = 0; i < p; i++) {
      min_d2[i] = h[1].min_d2[i] = INFINITY;
      argmin[i] = h[1].argmin[i] = G_MAXINT;
    }
  } else {
    h[0].q1 = h[1].q0 = half;
    h[1].q1 = p;
    h[0].scratch = (float *)(void *)base;
    h[1].scratch = (float *)(void *)(base + l->o_half);
  }
  if (pc->nn_pool == NULL || insp_ops_get_blas_threads() < 2) {
    nn_half(&h[0]);
    nn_half(&h[1]);
  } else {
    g_mutex_init(&h[1].lock);
    g_cond_init(&h[1].cond);
    if (!g_thread_pool_push(pc->nn_pool, &h[1], NULL))
      nn_worker(&h[1], NULL); /* no thread to be had: here, after all */
    nn_half(&h[0]);
    g_mutex_lock(&h[1].lock);
    while (!h[1].done)
      g_cond_wait(&h[1].cond, &h[1].lock);
    g_mutex_unlock(&h[1].lock);
    g_mutex_clear(&h[1].lock);
    g_cond_clear(&h[1].cond);
  }
  if (pc->index != NULL)
    for (int i = 0; i < p; i++) /* smaller, then lower index, as one search */
      if (h[1].min_d2[i] < min_d2[i] ||
          (h[1].min_d2[i] == min_d2[i] && h[1].argmin[i] < argmin[i])) {
        min_d2[i] = h[1].min_d2[i];
        argmin[i] = h[1].argmin[i];
      }
}

static float
patchcore_score(const InspModel *m, void *scratch, const float *feats, float *patch_scores)
{
  const PatchCore *pc = state(m);
  guint8 *base = scratch;
  ScratchLayout l = {0};
  float *min_d2, *knn;
  int *argmin;

  scratch_layout(m, &l);
  min_d2 = (float *)(void *)(base + l.o_min);
  argmin = (int *)(void *)(base + l.o_arg);
  knn = (float *)(void *)(base + l.o_knn);
  search(m, base, &l, feats, min_d2, argmin);
  if (pc->index != NULL)
    rerank(m, base, &l, feats, min_d2, argmin);
  return insp_patchcore_image_score(feats, m->n_patches, m->dim, min_d2, argmin, pc->bank,
                                    pc->bank_sqnorm, pc->bank_rows, pc->image_score, pc->neighbours,
                                    knn, patch_scores);
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
    .set_nn_search = patchcore_set_nn_search,
};
