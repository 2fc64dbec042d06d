/* The detector kernels of model/: patch features (insp-features.c), the
 * PatchCore coreset and scores (insp-patchcore.c), the PaDiM Gaussian fit and
 * distances (insp-padim.c). Plain arrays in, plain arrays out: they know
 * nothing of InspModel's layout, which only the detector classes
 * (detector-*.c) and insp-model.c / insp-train.c see. Not installed. */
#pragma once

#include <glib.h>
#include "insp-model.h"
#include "insp-random.h"

G_BEGIN_DECLS

#define INSP_PATCHCORE_PROJ_DIM 128 /* coreset projection dimension */
#define INSP_PATCHCORE_PATCH_SIZE 3 /* default neighbourhood (the paper's) */
/* PatchCore defaults, chosen from measurements (model/README.md, "Defaults: 320 px and a 1 %
 * coreset, and why"): at 320 px a 1 % coreset beats 224 px with 10 % on every data set here, in
 * about half the time per image. */
#define INSP_PATCHCORE_DEFAULT_SIZE 320
#define INSP_PATCHCORE_DEFAULT_CORESET 0.01
#define INSP_PATCHCORE_PATCH_SIZE_MAX 9
#define INSP_BLUR_SIGMA_224 4.0f /* anomaly-map blur at 224 px input */
#define INSP_MAX_INPUT_SIZE 1024

/* ---- patch features (insp-features.c) ---- */

/* How two backbone stages become one [P, D] patch matrix, P = h*w (the finer
 * stage's grid), rows position-major (y, x), D = dim.
 *   PatchCore: 3x3 average (count_include_pad) on each stage, the coarser one
 *              upsampled bilinearly (align_corners False), concatenated
 *              [fine channels, coarse channels], then optionally reduced to
 *              reduce_dim by adaptive averaging over channels.
 *   PaDiM:     no averaging, coarser upsampled nearest, concatenated, then
 *              optionally the sorted channel subset @channels. */
typedef struct {
  gboolean patchcore;
  int fine_c, coarse_c; /* stage channels */
  int h, w;             /* finer stage grid */
  int ch, cw;           /* coarser stage grid */
  int reduce_dim;       /* PatchCore: 0 = off */
  int patch_size;       /* PatchCore: neighbourhood averaged, odd (3 by default) */
  int n_channels;       /* PaDiM subset size, 0 = all */
  const int *channels;  /* sorted indices into the concatenation, n_channels long */
} InspFeatureSpec;

int insp_features_get_dim(const InspFeatureSpec *spec);
gsize insp_features_scratch_size(const InspFeatureSpec *spec);
/* fine [fine_c,h,w], coarse [coarse_c,ch,cw] -> out [h*w, dim]. */
void insp_features_extract(const InspFeatureSpec *spec, const float *fine, const float *coarse,
                           float *scratch, float *out);

/* ---- PatchCore (insp-patchcore.c) ---- */

/* Greedy k-center coreset (anomalib KCenterGreedy) of the rows of x [n, d]:
 * rows are projected to min(d, INSP_PATCHCORE_PROJ_DIM) dims by sklearn's
 * seeded sparse random projection, a random start row (torch.randint's draw
 * for the seed) is a centre but is not selected, then k = (gsize)(n *
 * fraction) (at least 1) times the row farthest from all centres is selected.
 * Exact result of the brute-force loop on the projected rows (near ties
 * decided in double, as the definition computes them), computed by default
 * in passes that apply many centres at once (INSP_CORESET_BATCHED).
 * Returns the selected row indices (*k_out of them; fewer than k only when the
 * remaining rows all duplicate a centre). */
gsize *insp_patchcore_coreset(const float *x, gsize n, int d, double fraction, guint64 seed,
                              gsize *k_out);
/* The same with the knobs. */
typedef enum {
  INSP_CORESET_SPARSE_RANDOM, /* the default, as anomalib */
  INSP_CORESET_EXACT,         /* no projection (top 128 principal axes when D > 128) */
} InspCoresetProjection;
typedef enum {
  INSP_CORESET_ADAPTIVE,
  INSP_CORESET_PRUNED,
  INSP_CORESET_STREAMED,
  INSP_CORESET_ALTERNATE,
  INSP_CORESET_BATCHED,
} InspCoresetStrategy;
typedef struct {
  InspCoresetProjection projection;
  /* threads of the streamed phase; 0: INSP_CORESET_THREADS from the
   * environment, else every processor */
  int threads;
  /* how each new centre is applied: batched (the default: the centres
   * that the farthest candidate rows show to be the next selections, all
   * applied in one pass over the rows, all threads; no rotated copy of the
   * rows), pruned (triangle inequality over cluster lists), streamed (every
   * row, all threads), or whichever of the last two measured cheaper
   * (ADAPTIVE). ALTERNATE switches every window (for tests). Same selection
   * whatever it is. */
  InspCoresetStrategy strategy;
  /* optional: called with (progress_stage, selections done, k) every 1 % */
  InspProgressFunc progress;
  const char *progress_stage;
  gpointer progress_data;
} InspCoresetOptions;
/* Defaults: insp_patchcore_coreset_projection(), all threads,
 * insp_patchcore_coreset_strategy(), no progress. */
void insp_coreset_options_init(InspCoresetOptions *o);
gsize *insp_patchcore_coreset_tuned(const float *x, gsize n, int d, double fraction, guint64 seed,
                                    const InspCoresetOptions *o, gsize *k_out);
/* The projection training uses: INSP_CORESET_PROJECTION=none in the
 * environment selects exact distances (for comparisons), else sparse random. */
InspCoresetProjection insp_patchcore_coreset_projection(void);
/* The strategy training uses: INSP_CORESET_STRATEGY=adaptive|pruned|streamed
 * in the environment selects an older one (comparisons: they select the
 * same rows up to float rounding of near ties), else batched. */
InspCoresetStrategy insp_patchcore_coreset_strategy(void);

/* sklearn's SparseRandomProjection(n_components=d_out, density 1/sqrt(d_in),
 * random_state=seed) matrix, transposed for x [n, d_in] @ r [d_in, d_out]
 * (numpy's legacy MT19937 stream reproduced draw for draw). */
void insp_sklearn_sparse_random_matrix(int d_in, int d_out, guint32 seed, float *r);

/* The image score by @rule (InspImageScoreRule, insp-model.h). patch_d2 [P]
 * squared distances of each patch to its nearest bank row, argmin [P] that
 * row, feats [P, d], bank [bank_rows, d] with its squared row norms. Fills
 * patch_scores [P] (sqrt) and returns: MAX, their maximum s* (the same
 * float); REWEIGHTED, anomalib's reweighting of s* by the @k (2..
 * INSP_MODEL_NEIGHBOURS_MAX; at most bank_rows are taken) nearest bank rows
 * of m*, the nearest row of the highest patch (s* itself when the bank has
 * one row); MAP_MAX, NAN (the caller takes the blurred map's maximum).
 * @knn_scratch holds bank_rows floats. */
float insp_patchcore_image_score(const float *feats, int n_patches, int d, const float *patch_d2,
                                 const int *argmin, const float *bank, const float *bank_sqnorm,
                                 int bank_rows, InspImageScoreRule rule, int k, float *knn_scratch,
                                 float *patch_scores);

/* ---- nearest-neighbour index (insp-nn-index.c) ---- */

/* An inverted file over a bank [nb, d]: n_lists k-means cells (seeded,
 * deterministic; at most nb), the rows copied cell by cell. */
typedef struct _InspNnIndex InspNnIndex;
#define INSP_NN_INDEX_MAX_PROBE 64
InspNnIndex *insp_nn_index_new(const float *bank, int nb, int d, int n_lists, guint64 seed);
void insp_nn_index_free(InspNnIndex *ix);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspNnIndex, insp_nn_index_free)
int insp_nn_index_get_n_lists(const InspNnIndex *ix);
/* Floats of scratch for a search of nq queries probing n_probe cells. */
gsize insp_nn_index_scratch_size(const InspNnIndex *ix, int nq, int n_probe);
/* Approximate nearest neighbour: q [nq, d] -> min_d2 [nq] (squared, clamped
 * at 0) and argmin [nq] (index into the original bank) of the nearest row
 * among the n_probe (1..INSP_NN_INDEX_MAX_PROBE) cells whose centroids are
 * nearest to the query. A distance to a real bank row, so never below the
 * exact search's (up to rounding); equal to it when the nearest row lies in
 * a probed cell. Ties to the lowest bank index. */
void insp_nn_index_search(const InspNnIndex *ix, const float *q, int nq, int n_probe,
                          float *scratch, float *min_d2, int *argmin);
/* The same in steps, for several threads: the plan (each query's cells,
 * each cell's queries; one sgemm, OpenBLAS threads as configured) into
 * @plan (insp_nn_index_plan_size floats), then insp_nn_index_search_cells
 * for disjoint ranges of cells [l0, l1), each with its own @work
 * (insp_nn_index_work_size floats) and its own min_d2 / argmin (set to
 * INFINITY / G_MAXINT first), merged by the caller (smaller, then lower
 * index). insp_nn_index_plan_split: a cell that splits the work in two
 * halves. */
gsize insp_nn_index_plan_size(const InspNnIndex *ix, int nq, int n_probe);
gsize insp_nn_index_work_size(const InspNnIndex *ix, int nq);
void insp_nn_index_plan(const InspNnIndex *ix, const float *q, int nq, int n_probe, float *plan);
int insp_nn_index_plan_split(const InspNnIndex *ix, float *plan);
void insp_nn_index_search_cells(const InspNnIndex *ix, const float *q, float *plan, int l0, int l1,
                                float *work, float *min_d2, int *argmin);
/* The plan's choice of cells: for each query i < nq, the indices l of the
 * @np smallest of v[l * ld + i] over l < n (0 < np <= MIN(n,
 * INSP_NN_INDEX_MAX_PROBE); a row holds every query's value for one cell,
 * ld >= nq apart, and at least 16 after the last query's column can be read
 * when ld is a multiple of 16) into out [nq, np], ascending by value, ties to
 * the lower index, for values that are not NaN. */
void insp_nn_index_smallest(const float *v, int n, int nq, gsize ld, int np, int *out);
/* The plain form, for one list: the @k (> 0) smallest of v[l * stride], l < n,
 * by insertion into a sorted list, ascending into @values and their l into
 * @index, ties to the lower l; returns how many (min(n, k)). */
int insp_smallest_k(const float *v, int n, gsize stride, int k, float *values, int *index);

/* ---- exact nearest neighbour by a screen (insp-nn-screen.c) ---- */

/* A reduced-precision screen of a bank [nb, d] (d a multiple of 32, at
 * most 1024; bfloat16 on AMX, int8 on AVX512-VNNI) whose bound rules out
 * every row but a few per query, which are then computed in fp32: the
 * nearest row and its distance as the fp32 search finds them, up to rows
 * whose fp32 distances differ by rounding only. NULL when the CPU has
 * neither kind (insp_nn_screen_kind_available) or d does not fit; @bank
 * must outlive the screen. */
typedef struct _InspNnScreen InspNnScreen;
/* Where its products are computed: AUTO takes AMX where the CPU has it,
 * otherwise AVX512-VNNI. */
typedef enum {
  INSP_NN_SCREEN_AUTO,
  INSP_NN_SCREEN_BF16_AMX,
  INSP_NN_SCREEN_INT8_VNNI,
} InspNnScreenKind;
gboolean insp_nn_screen_available(void);
gboolean insp_nn_screen_kind_available(InspNnScreenKind kind);
const char *insp_nn_screen_kind_describe(InspNnScreenKind kind);
InspNnScreen *insp_nn_screen_new(const float *bank, int nb, int d);
InspNnScreen *insp_nn_screen_new_kind(const float *bank, int nb, int d, InspNnScreenKind kind);
void insp_nn_screen_free(InspNnScreen *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspNnScreen, insp_nn_screen_free)
/* Bytes of scratch for a search (any nq). */
gsize insp_nn_screen_scratch_size(const InspNnScreen *s);
/* q [nq, d] -> min_d2 [nq] (squared, clamped at 0) and argmin [nq] or NULL;
 * ties to the lowest bank index. @n_reranked, when not NULL, is increased by
 * the rows computed in fp32. */
void insp_nn_screen_search(const InspNnScreen *s, const float *q, int nq, void *scratch,
                           float *min_d2, int *argmin, gint64 *n_reranked);

/* ---- PaDiM (insp-padim.c) ---- */

/* Running sums of a per-position Gaussian fit, in double. */
typedef struct _InspPadimAccum InspPadimAccum;
InspPadimAccum *insp_padim_accum_new(int n_positions, int d);
void insp_padim_accum_free(InspPadimAccum *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspPadimAccum, insp_padim_accum_free)
/* Adds one image's features [P, d]. */
void insp_padim_accum_add(InspPadimAccum *a, const float *feats);
int insp_padim_accum_get_count(const InspPadimAccum *a);
/* mean [P,d], inv_cov [P,d,d]: mean, unbiased covariance + eps*I, inverted by
 * Cholesky, all in double; stored float. FALSE if a covariance is not
 * positive definite (cannot happen with eps > 0 and finite features). */
gboolean insp_padim_accum_finish(InspPadimAccum *a, double eps, float *mean, float *inv_cov);
/* Symmetric positive definite a [n,n] (double, row-major) -> inverse in @inv,
 * through Cholesky. @work holds n*n doubles. FALSE if not positive definite. */
gboolean insp_padim_invert_spd(const double *a, int n, double *inv, double *work);
/* Mahalanobis distance per position: out[p] = sqrt(max(d^T S^-1 d, 0)),
 * d = feats[p] - mean[p]. @work holds 2*d floats. */
void insp_padim_score(const float *feats, int n_positions, int d, const float *mean,
                      const float *inv_cov, float *work, float *out);

/* torch.randperm(n, generator=torch.Generator().manual_seed(seed)) into
 * @perm [n] (n < 2^32 / 20, torch's small-n path). */
void insp_padim_randperm(int n, guint64 seed, int *perm);
/* PaDiM's channel subset: the first @k of insp_padim_randperm(@n, @seed),
 * sorted ascending, as anomalib's PaDiM picks it. */
void insp_padim_random_channels(int n, int k, guint64 seed, int *out);

G_END_DECLS
