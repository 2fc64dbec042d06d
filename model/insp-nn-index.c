/* insp-nn-index: an inverted-file (IVF) index over PatchCore's memory bank,
 * for an approximate nearest-neighbour search that visits a few cells of
 * the bank instead of all of it.
 *
 * Build (once per model, at load): Lloyd's k-means with n_lists centroids
 * (seeded distinct rows to start, a fixed number of iterations, an empty
 * cell restarted at the row farthest from its centroid), then the bank's
 * rows regrouped cell by cell, with their original indices and norms.
 * Search: each query's distances to the centroids (one sgemm), its n_probe
 * nearest cells, then per cell the queries that probe it are gathered and
 * searched exactly against that cell's rows with insp_ops_nearest_neighbour
 * (the one exact kernel, so the cell search is the exact search on a subset
 * of the bank). The result for a query is therefore the distance to a real
 * bank row, never below the exact nearest distance (up to float rounding):
 * callers may re-rank the queries whose approximate distance matters with
 * the exact search over the whole bank (detector-patchcore.c does).
 *
 * Invariants: an index is immutable once built and owns copies of what it
 * needs (each cell's rows packed for the kernel: about the bank's size); search allocates nothing
 * (the caller's scratch) and any number of threads may search one index at once. OpenBLAS threads
 * as configured. */
#include "insp-kernels.h"
#include "insp-ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define KMEANS_ITERATIONS 10

struct _InspNnIndex {
  int nb, d, n_lists;
  float *centroids;   /* [n_lists, d] */
  float *centroid_sq; /* [n_lists] */
  int *offset;        /* [n_lists + 1]: cell l is rows offset[l] .. offset[l+1]-1 */
  gsize *packed_at;   /* [n_lists]: where cell l starts in @packed */
  float *packed;      /* each cell's rows by insp_ops_nn_pack, one after the other */
  float *rows_sq;     /* [nb] */
  int *row_id;        /* [nb] index of each row in the original bank */
};

static void
sqnorms(const float *x, int n, int d, float *out)
{
  for (int i = 0; i < n; i++) {
    const float *r = x + (gsize)i * d;
    float s = 0.0f;

    for (int k = 0; k < d; k++)
      s += r[k] * r[k];
    out[i] = s;
  }
}

InspNnIndex *
insp_nn_index_new(const float *bank, int nb, int d, int n_lists, guint64 seed)
{
  InspNnIndex *ix;
  g_autofree int *perm = NULL, *assign = NULL, *count = NULL, *fill = NULL;
  g_autofree float *d2 = NULL, *scratch = NULL, *cpacked = NULL, *rows = NULL;
  gsize n_packed = 0;
  g_autofree double *sum = NULL;
  guint64 rs = seed ^ 0x9e3779b97f4a7c15ull;

  g_return_val_if_fail(bank != NULL && nb > 0 && d > 0 && n_lists > 0, NULL);

  n_lists = MIN(n_lists, nb);
  ix = g_new0(InspNnIndex, 1);
  ix->nb = nb;
  ix->d = d;
  ix->n_lists = n_lists;
  ix->centroids = g_new(float, (gsize)n_lists *d);
  ix->centroid_sq = g_new(float, n_lists);
  ix->offset = g_new(int, n_lists + 1);
  ix->packed_at = g_new(gsize, n_lists);
  rows = g_new(float, (gsize)nb *d);
  cpacked = g_new(float, insp_ops_nn_packed_size(n_lists, d));
  ix->rows_sq = g_new(float, nb);
  ix->row_id = g_new(int, nb);
  perm = g_new(int, nb);
  assign = g_new(int, nb);
  count = g_new(int, n_lists);
  fill = g_new(int, n_lists);
  d2 = g_new(float, nb);
  sum = g_new(double, (gsize)n_lists *d);
  scratch = g_new(float, insp_ops_nn_scratch_size(nb));

  /* Start: n_lists distinct rows, a seeded partial Fisher-Yates shuffle. */
  for (int i = 0; i < nb; i++)
    perm[i] = i;
  for (int i = 0; i < n_lists; i++) {
    int j = i + (int)(insp_detector_rand_next(&rs) % (guint64)(nb - i)), t = perm[i];

    perm[i] = perm[j];
    perm[j] = t;
    memcpy(ix->centroids + (gsize)i * d, bank + (gsize)perm[i] * d, sizeof(float) * d);
  }
  for (int it = 0; it <= KMEANS_ITERATIONS; it++) {
    sqnorms(ix->centroids, n_lists, d, ix->centroid_sq);
    insp_ops_nn_pack(ix->centroids, n_lists, d, cpacked);
    insp_ops_nearest_neighbour(bank, nb, cpacked, ix->centroid_sq, n_lists, d, scratch, d2, assign);
    if (it == KMEANS_ITERATIONS)
      break;
    memset(sum, 0, sizeof(double) * (gsize)n_lists * d);
    memset(count, 0, sizeof(int) * n_lists);
    for (int i = 0; i < nb; i++) {
      const float *r = bank + (gsize)i * d;
      double *s = sum + (gsize)assign[i] * d;

      count[assign[i]]++;
      for (int k = 0; k < d; k++)
        s[k] += r[k];
    }
    for (int l = 0; l < n_lists; l++) {
      float *c = ix->centroids + (gsize)l * d;

      if (count[l] == 0) {
        /* Restart an empty cell at the row farthest from its centroid
         * (taken once: its distance is zeroed). */
        int far = 0;

        for (int i = 1; i < nb; i++)
          if (d2[i] > d2[far])
            far = i;
        d2[far] = 0.0f;
        memcpy(c, bank + (gsize)far * d, sizeof(float) * d);
        continue;
      }
      for (int k = 0; k < d; k++)
        c[k] = (float)(sum[(gsize)l * d + k] / count[l]);
    }
  }

  /* Regroup the rows cell by cell (original order within a cell). */
  memset(count, 0, sizeof(int) * n_lists);
  for (int i = 0; i < nb; i++)
    count[assign[i]]++;
  ix->offset[0] = 0;
  for (int l = 0; l < n_lists; l++) {
    ix->offset[l + 1] = ix->offset[l] + count[l];
    fill[l] = ix->offset[l];
  }
  for (int i = 0; i < nb; i++) {
    int at = fill[assign[i]]++;

    memcpy(rows + (gsize)at * d, bank + (gsize)i * d, sizeof(float) * d);
    ix->row_id[at] = i;
  }
  sqnorms(rows, nb, d, ix->rows_sq);
  for (int l = 0; l < n_lists; l++) {
    ix->packed_at[l] = n_packed;
    n_packed += insp_ops_nn_packed_size(ix->offset[l + 1] - ix->offset[l], d);
  }
  ix->packed = g_new(float, MAX(n_packed, 1));
  for (int l = 0; l < n_lists; l++)
    insp_ops_nn_pack(rows + (gsize)ix->offset[l] * d, ix->offset[l + 1] - ix->offset[l], d,
                     ix->packed + ix->packed_at[l]);
  return ix;
}

void
insp_nn_index_free(InspNnIndex *ix)
{
  if (ix == NULL)
    return;
  g_free(ix->centroids);
  g_free(ix->centroid_sq);
  g_free(ix->offset);
  g_free(ix->packed_at);
  g_free(ix->packed);
  g_free(ix->rows_sq);
  g_free(ix->row_id);
  g_free(ix);
}

int
insp_nn_index_get_n_lists(const InspNnIndex *ix)
{
  g_return_val_if_fail(ix != NULL, 0);
  return ix->n_lists;
}

/* The plan, in floats (ints are as wide): the probe count and query
 * count, centroid distances [n_lists, nq rounded up to SEL_LANES], probes [nq, n_probe], cell
 * starts [n_lists + 1], members [nq, n_probe] (the queries of each cell),
 * the queries' squared norms [nq] (made once here: each query is searched
 * in n_probe cells). */
#define PLAN_HEADER 2
#define SEL_LANES 16 /* queries per step of the choice of cells: one AVX-512 register */

/* The queries' row length in the plan's centroid distances: whole steps of
 * SEL_LANES. */
static gsize
plan_ld(int nq)
{
  return ((gsize)nq + SEL_LANES - 1) / SEL_LANES * SEL_LANES;
}

static gsize
plan_size(const InspNnIndex *ix, int nq, int np)
{
  return PLAN_HEADER + plan_ld(nq) * ix->n_lists + 2 * (gsize)nq * np + (gsize)ix->n_lists + 1 +
         (gsize)nq;
}

gsize
insp_nn_index_plan_size(const InspNnIndex *ix, int nq, int n_probe)
{
  g_return_val_if_fail(ix != NULL && nq >= 0 && n_probe > 0, 0);
  return plan_size(ix, nq, MIN(n_probe, ix->n_lists));
}

/* The work area: gathered queries [nq, d] and their norms [nq], the exact
 * kernel's scratch, its results [nq] + [nq]. */
gsize
insp_nn_index_work_size(const InspNnIndex *ix, int nq)
{
  g_return_val_if_fail(ix != NULL && nq >= 0, 0);
  return (gsize)nq * ix->d + insp_ops_nn_scratch_size(nq) + 3 * (gsize)nq;
}

gsize
insp_nn_index_scratch_size(const InspNnIndex *ix, int nq, int n_probe)
{
  return insp_nn_index_plan_size(ix, nq, n_probe) + insp_nn_index_work_size(ix, nq);
}

typedef struct {
  int nq, np;
  float *cd;
  int *probe, *start, *members;
  float *qsq;
} Plan;

static Plan
plan_view(const InspNnIndex *ix, float *plan)
{
  Plan p;
  gint32 head[PLAN_HEADER];

  memcpy(head, plan, sizeof head);
  p.np = head[0];
  p.nq = head[1];
  p.cd = plan + PLAN_HEADER;
  p.probe = (int *)(void *)(p.cd + plan_ld(p.nq) * ix->n_lists);
  p.start = p.probe + (gsize)p.nq * p.np;
  p.members = p.start + ix->n_lists + 1;
  p.qsq = (float *)(void *)(p.members + (gsize)p.nq * p.np);
  return p;
}

#define SEL_MAX_VEC_NP 16 /* more probes: the scalar insertion */

#if defined(__x86_64__) && defined(__GNUC__)
#define SEL_AVX512 1
#include <immintrin.h>

/* Queries q0 .. q0 + 15, one in each lane: each value of v [n, ld] goes
 * into the first of the np sorted slots it is below (strictly: after an
 * equal value, the lower index first) or that is empty, and the slots after
 * it shift down by one. No branch on the values. Inlined for a constant np
 * (the slots then stay in registers). */
__attribute__((target("avx512f"), always_inline)) static inline void
smallest_lanes_np(const float *v, int n, gsize ld, int q0, int nlanes, int np, int *out)
{
  __m512 pv[SEL_MAX_VEC_NP];
  __m512i pi[SEL_MAX_VEC_NP];
  gint32 lanes[SEL_MAX_VEC_NP][SEL_LANES];

  for (int j = 0; j < np; j++) {
    pv[j] = _mm512_setzero_ps();
    pi[j] = _mm512_setzero_si512();
  }
  for (int l = 0; l < n; l++) {
    __m512 x = _mm512_loadu_ps(v + (gsize)l * ld + q0);
    __m512i xi = _mm512_set1_epi32(l);
    __mmask16 moved = 0;

    for (int j = 0; j < np; j++) {
      /* every lane has had l values: slots l and on are empty */
      __mmask16 m = j >= l ? (__mmask16)0xffff : _mm512_cmp_ps_mask(x, pv[j], _CMP_LT_OQ) | moved;
      __m512 t = pv[j];
      __m512i ti = pi[j];

      pv[j] = _mm512_mask_blend_ps(m, t, x);
      pi[j] = _mm512_mask_blend_epi32(m, ti, xi);
      x = _mm512_mask_blend_ps(m, x, t);
      xi = _mm512_mask_blend_epi32(m, xi, ti);
      moved = m;
    }
  }
  for (int j = 0; j < np; j++)
    _mm512_storeu_si512(lanes[j], pi[j]);
  for (int lane = 0; lane < nlanes; lane++)
    for (int j = 0; j < np; j++)
      out[(gsize)(q0 + lane) * np + j] = lanes[j][lane];
}

__attribute__((target("avx512f"))) static void
smallest_lanes(const float *v, int n, gsize ld, int q0, int nlanes, int np, int *out)
{
  if (np == 8) /* NN_PROBE, detector-patchcore.c */
    smallest_lanes_np(v, n, ld, q0, nlanes, 8, out);
  else
    smallest_lanes_np(v, n, ld, q0, nlanes, np, out);
}
#endif

int
insp_smallest_k(const float *v, int n, gsize stride, int k, float *values, int *index)
{
  int m = 0;

  for (int l = 0; l < n; l++) {
    float x = v[(gsize)l * stride];
    int pos;

    if (m == k && x >= values[m - 1])
      continue;
    pos = m < k ? m++ : m - 1;
    while (pos > 0 && values[pos - 1] > x) {
      values[pos] = values[pos - 1];
      index[pos] = index[pos - 1];
      pos--;
    }
    values[pos] = x;
    index[pos] = l;
  }
  return m;
}

void
insp_nn_index_smallest(const float *v, int n, int nq, gsize ld, int np, int *out)
{
  g_return_if_fail(v != NULL && out != NULL && nq >= 0 && ld >= (gsize)nq);
  g_return_if_fail(0 < np && np <= MIN(n, INSP_NN_INDEX_MAX_PROBE));

#ifdef SEL_AVX512
  gboolean lanes = np <= SEL_MAX_VEC_NP && __builtin_cpu_supports("avx512f");
#endif

  for (int q0 = 0; q0 < nq; q0 += SEL_LANES) {
    int nlanes = MIN(SEL_LANES, nq - q0);

#ifdef SEL_AVX512
    if (lanes && (gsize)q0 + SEL_LANES <= ld) {
      smallest_lanes(v, n, ld, q0, nlanes, np, out);
      continue;
    }
#endif
    {
      float pv[INSP_NN_INDEX_MAX_PROBE];

      for (int i = q0; i < q0 + nlanes; i++)
        insp_smallest_k(v + i, n, ld, np, pv, out + (gsize)i * np);
    }
  }
}

void
insp_nn_index_plan(const InspNnIndex *ix, const float *q, int nq, int n_probe, float *plan)
{
  int nl, d, np;
  gsize ld;
  gint32 head[PLAN_HEADER];
  Plan p;

  g_return_if_fail(ix != NULL && q != NULL && plan != NULL && nq >= 0);
  g_return_if_fail(n_probe > 0 && n_probe <= INSP_NN_INDEX_MAX_PROBE);

  nl = ix->n_lists;
  d = ix->d;
  np = MIN(n_probe, nl);
  head[0] = np;
  head[1] = nq;
  memcpy(plan, head, sizeof head);
  p = plan_view(ix, plan);
  memset(p.start, 0, sizeof(int) * (gsize)(nl + 1));
  if (nq == 0)
    return;

  /* cd [nl, ld] = |c|^2 - 2 c.q (|q|^2 does not change the ranking): a
   * centroid's distances to every query in a row, the padding zeroed. */
  ld = plan_ld(nq);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nl, nq, d, -2.0f, ix->centroids, d, q, d,
              0.0f, p.cd, (int)ld);
  for (int l = 0; l < nl; l++) {
    float *row = p.cd + (gsize)l * ld;

    for (int i = 0; i < nq; i++)
      row[i] += ix->centroid_sq[l];
    for (gsize i = nq; i < ld; i++)
      row[i] = 0.0f;
  }
  insp_nn_index_smallest(p.cd, nl, nq, ld, np, p.probe);
  sqnorms(q, nq, d, p.qsq);

  /* Queries by cell (a counting sort of the probes). */
  for (gsize t = 0; t < (gsize)nq * np; t++)
    p.start[p.probe[t] + 1]++;
  for (int l = 0; l < nl; l++)
    p.start[l + 1] += p.start[l];
  for (int i = 0; i < nq; i++)
    for (int j = 0; j < np; j++)
      p.members[p.start[p.probe[(gsize)i * np + j]]++] = i;
  for (int l = nl; l > 0; l--)
    p.start[l] = p.start[l - 1];
  p.start[0] = 0;
}

int
insp_nn_index_plan_split(const InspNnIndex *ix, float *plan)
{
  Plan p;
  double total = 0.0, acc = 0.0;

  g_return_val_if_fail(ix != NULL && plan != NULL, 0);
  p = plan_view(ix, plan);
  for (int l = 0; l < ix->n_lists; l++)
    total += (double)(p.start[l + 1] - p.start[l]) * (ix->offset[l + 1] - ix->offset[l]);
  for (int l = 0; l < ix->n_lists; l++) {
    acc += (double)(p.start[l + 1] - p.start[l]) * (ix->offset[l + 1] - ix->offset[l]);
    if (acc >= 0.5 * total)
      return l + 1;
  }
  return ix->n_lists;
}

void
insp_nn_index_search_cells(const InspNnIndex *ix, const float *q, float *plan, int l0, int l1,
                           float *work, float *min_d2, int *argmin)
{
  Plan p;
  int d;
  float *qbuf, *qn, *nn_scratch, *td;
  int *ta;

  g_return_if_fail(ix != NULL && q != NULL && plan != NULL && work != NULL);
  g_return_if_fail(min_d2 != NULL && argmin != NULL && 0 <= l0 && l0 <= l1 && l1 <= ix->n_lists);

  p = plan_view(ix, plan);
  d = ix->d;
  qbuf = work;
  qn = qbuf + (gsize)p.nq * d;
  nn_scratch = qn + p.nq;
  td = nn_scratch + insp_ops_nn_scratch_size(p.nq);
  ta = (int *)(void *)(td + p.nq);
  for (int l = l0; l < l1; l++) {
    int m = p.start[l + 1] - p.start[l], r0 = ix->offset[l], nr = ix->offset[l + 1] - r0;
    const int *mem = p.members + p.start[l];

    if (m == 0 || nr == 0)
      continue;
    for (int t = 0; t < m; t++) {
      memcpy(qbuf + (gsize)t * d, q + (gsize)mem[t] * d, sizeof(float) * d);
      qn[t] = p.qsq[mem[t]];
    }
    insp_ops_nearest_neighbour_with_norms(qbuf, m, qn, ix->packed + ix->packed_at[l],
                                          ix->rows_sq + r0, nr, d, nn_scratch, td, ta);
    for (int t = 0; t < m; t++) {
      int i = mem[t], id = ix->row_id[r0 + ta[t]];

      /* Ties to the lowest bank index, as the exact search. */
      if (td[t] < min_d2[i] || (td[t] == min_d2[i] && id < argmin[i])) {
        min_d2[i] = td[t];
        argmin[i] = id;
      }
    }
  }
}

void
insp_nn_index_search(const InspNnIndex *ix, const float *q, int nq, int n_probe, float *scratch,
                     float *min_d2, int *argmin)
{
  g_return_if_fail(ix != NULL && q != NULL && scratch != NULL && min_d2 != NULL);
  g_return_if_fail(argmin != NULL && nq >= 0 && n_probe > 0 && n_probe <= INSP_NN_INDEX_MAX_PROBE);

  insp_nn_index_plan(ix, q, nq, n_probe, scratch);
  for (int i = 0; i < nq; i++) {
    min_d2[i] = INFINITY;
    argmin[i] = G_MAXINT;
  }
  insp_nn_index_search_cells(ix, q, scratch, 0, ix->n_lists,
                             scratch + insp_nn_index_plan_size(ix, nq, n_probe), min_d2, argmin);
}
