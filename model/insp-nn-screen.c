/* insp-nn-screen: the exact nearest-neighbour search of PatchCore, computed
 * as a bfloat16 screen on the CPU's matrix unit (Intel AMX) and an fp32
 * re-rank of the rows the screen cannot rule out.
 *
 * For each query q and bank row b the screen computes c ~ q.b from q and b
 * rounded to bfloat16 (8 significant bits, round to nearest even: each
 * element within u = 2^-8 of itself), the products exact and summed in
 * fp32 by TDPBF16PS. Then |c - q.b| <= (2u + u^2 + d 2^-24 (1 + u)^2) |q||b|
 * (Cauchy-Schwarz on the rounding errors, plus fp32 summation of d terms),
 * so v = |b|^2 - 2c is within B = kappa |q||b| + eps |b|^2 of the true
 * |b|^2 - 2 q.b (SCREEN_KAPPA, SCREEN_EPS, with margin over the bound).
 * Per query, t = min over rows of (v + B) is an upper bound of the nearest
 * distance; only rows with v - B <= t can be the nearest, and those (a few
 * per query) are computed in fp32 and the smallest taken, ties to the lower
 * row. The result is the nearest row by fp32 arithmetic, as the plain
 * search (insp_ops_nearest_neighbour) finds it, up to rows whose fp32
 * distances differ by rounding only; there is no approximation to tune.
 *
 * Invariants: a screen is immutable once built and owns its bfloat16 copy
 * of the bank (half the bank's size) and the row norms; it keeps a pointer
 * to the caller's fp32 bank, which must outlive it. Search allocates
 * nothing (the caller's scratch, insp_nn_screen_scratch_size), and any
 * number of threads may search one screen at once (each loads its own tile
 * configuration and releases it on return). Only on x86-64 with AMX-BF16,
 * AVX-512 and the kernel's permission for tile data; insp_nn_screen_new
 * returns NULL elsewhere and the caller keeps the plain search. */
#include "insp-amx.h"
#include "insp-kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define SCREEN_X86 1
#include <immintrin.h>
#endif

#define SCREEN_QB 32   /* queries per block: two B tiles of 16 queries */
#define SCREEN_RB 32   /* bank rows per step: two A tiles of 16 rows */
#define SCREEN_KC 32   /* dims per tile step (64 bytes of bfloat16) */
#define SCREEN_CAP 128 /* candidates kept per query before compaction */
/* kappa: 2 (2u + u^2) with u = 2^-8 is 0.0157; + d 2^-24 for d <= 1024
 * (6.1e-5); rounded up with margin. eps: fp32 rounding of |b|^2 - 2c and of
 * the fp32 re-rank, relative to |b|^2 + 2|q||b| (folded into kappa). */
#define SCREEN_KAPPA 0.0160f
#define SCREEN_EPS 1e-6f
#define SCREEN_MAX_DIM 1024

struct _InspNnScreen {
  int nb, d, nb_pad;
  const float *bank; /* [nb, d] fp32, the caller's */
  guint16 *packed;   /* bfloat16 A tiles: per 16 rows, per 32 dims, 16 x 32; padding 0 */
  float *sq;         /* [nb_pad] |b|^2, +inf for padding */
  float *w;          /* [nb_pad] kappa |b| (+ eps |b|), 0 for padding */
  float *e;          /* [nb_pad] eps |b|^2, 0 for padding */
};

#ifdef SCREEN_X86

gboolean
insp_nn_screen_available(void)
{
  return insp_amx_available();
}

#define TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,amx-tile,amx-bf16")))

/* |b|^2 - 2 q.b in fp32, the products summed in 16 lanes then halved. */
TARGET static float
exact_value(const float *q, const float *b, float bsq, int d)
{
  __m512 acc = _mm512_setzero_ps();

  for (int k = 0; k < d; k += 16)
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + k), _mm512_loadu_ps(b + k), acc);
  return bsq - 2.0f * _mm512_reduce_add_ps(acc);
}

/* Keeps the candidates of one query with lower bound <= t. */
static int
compact(gint32 *idx, float *lo, int n, float t)
{
  int k = 0;

  for (int j = 0; j < n; j++)
    if (lo[j] <= t) {
      idx[k] = idx[j];
      lo[k] = lo[j];
      k++;
    }
  return k;
}

typedef struct {
  guint16 *qb;  /* the block's queries in bfloat16, as B tiles: [half][dims step][16 x 32] */
  float *cbuf;  /* [SCREEN_RB bank rows][SCREEN_QB queries] screen values of one step */
  gint32 *cidx; /* [SCREEN_QB][SCREEN_CAP] candidate rows */
  float *clo;   /* [SCREEN_QB][SCREEN_CAP] their lower bounds */
} Scratch;

typedef struct {
  int ncand[SCREEN_QB];
  gboolean full[SCREEN_QB];
} Lists;

/* Adds row r to query i's candidates (lower bound lo), compacting by the
 * query's current upper bound t when the list is full. */
static void
push(const Scratch *w, Lists *li, int i, int r, float lo, float t)
{
  gint32 *ci = w->cidx + (gsize)i * SCREEN_CAP;
  float *cl = w->clo + (gsize)i * SCREEN_CAP;
  int n = li->ncand[i];

  if (li->full[i])
    return;
  if (n == SCREEN_CAP)
    n = compact(ci, cl, n, t);
  if (n == SCREEN_CAP) {
    li->full[i] = TRUE; /* too close to call: searched whole at the end */
    return;
  }
  ci[n] = r;
  cl[n] = lo;
  li->ncand[i] = n + 1;
}

/* Queries of one block (qn <= SCREEN_QB) against the whole bank, with the
 * tile configuration loaded. Bank rows are the A tiles, the queries the B
 * tiles, so a vector holds one row's values for 16 queries and each
 * query's bound stays in its lane: per step, lanes of um fall to the
 * smallest upper bound v + bw seen, and any row whose value is at most the
 * bound before the step plus bw (lower bound <= upper bound) is flagged;
 * a flagged vector's rows are pushed with the bound after the step. */
TARGET static void
search_block(const InspNnScreen *s, const float *q, int qn, const Scratch *w, float *min_d2,
             int *argmin, gint64 *n_reranked)
{
  const int d = s->d, nkc = d / SCREEN_KC, n_steps = s->nb_pad / SCREEN_RB;
  float qn_norm[SCREEN_QB] __attribute__((aligned(64)));
  float bound[SCREEN_QB] __attribute__((aligned(64)));
  guint16 flags[SCREEN_RB * 2];
  const __m512 m2 = _mm512_set1_ps(-2.0f);
  __m512 qv[2], um[2];
  __mmask16 valid[2];
  Lists li;

  for (int i = 0; i < SCREEN_QB; i++) {
    float qq = 0.0f;

    for (int k = 0; k < d; k++) {
      float x = i < qn ? q[(gsize)i * d + k] : 0.0f;
      /* B tile (half i/16, dims step k/32): [pair][query][2] */
      w->qb[((gsize)(i / 16) * nkc + k / SCREEN_KC) * 16 * SCREEN_KC + (k % SCREEN_KC) / 2 * 32 +
            (i % 16) * 2 + k % 2] = insp_bf16_bits(x);
      qq += x * x;
    }
    qn_norm[i] = sqrtf(qq);
    li.ncand[i] = 0;
    li.full[i] = FALSE;
  }
  for (int h = 0; h < 2; h++) {
    qv[h] = _mm512_load_ps(qn_norm + 16 * h);
    um[h] = _mm512_set1_ps(INFINITY);
    valid[h] = (__mmask16)(qn <= 16 * h         ? 0
                           : qn >= 16 * (h + 1) ? 0xffff
                                                : (1u << (qn - 16 * h)) - 1);
  }
  for (int step = 0; step < n_steps; step++) {
    const int r0 = step * SCREEN_RB;
    const guint16 *a0 = s->packed + (gsize)r0 * d, *a1 = a0 + (gsize)16 * d; /* 16 rows each */
    __m512 stepmin[2][4]; /* four chains per half, so the minima do not wait on each other */
    __mmask16 any = 0;

    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int kc = 0; kc < nkc; kc++) {
      _tile_loadd(4, a0 + (gsize)kc * 16 * SCREEN_KC, 64);
      _tile_loadd(5, a1 + (gsize)kc * 16 * SCREEN_KC, 64);
      _tile_loadd(6, w->qb + (gsize)kc * 16 * SCREEN_KC, 64);
      _tile_loadd(7, w->qb + (gsize)(nkc + kc) * 16 * SCREEN_KC, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, w->cbuf, SCREEN_QB * 4);
    _tile_stored(1, w->cbuf + 16, SCREEN_QB * 4);
    _tile_stored(2, w->cbuf + 16 * SCREEN_QB, SCREEN_QB * 4);
    _tile_stored(3, w->cbuf + 16 * SCREEN_QB + 16, SCREEN_QB * 4);
    for (int h = 0; h < 2; h++)
      for (int c = 0; c < 4; c++)
        stepmin[h][c] = um[h];
    for (int j = 0; j < SCREEN_RB; j++) {
      const __m512 sq = _mm512_set1_ps(s->sq[r0 + j]), wr = _mm512_set1_ps(s->w[r0 + j]);
      const __m512 er = _mm512_set1_ps(s->e[r0 + j]);

      for (int h = 0; h < 2; h++) {
        __m512 v = _mm512_fmadd_ps(m2, _mm512_load_ps(w->cbuf + j * SCREEN_QB + 16 * h), sq);
        __m512 bw = _mm512_fmadd_ps(qv[h], wr, er);
        __mmask16 k = _mm512_cmp_ps_mask(v, _mm512_add_ps(um[h], bw), _CMP_LE_OQ);

        stepmin[h][j % 4] = _mm512_min_ps(stepmin[h][j % 4], _mm512_add_ps(v, bw));
        flags[j * 2 + h] = k;
        any |= k;
      }
    }
    for (int h = 0; h < 2; h++)
      um[h] = _mm512_min_ps(_mm512_min_ps(stepmin[h][0], stepmin[h][1]),
                            _mm512_min_ps(stepmin[h][2], stepmin[h][3]));
    if (G_LIKELY(any == 0))
      continue;
    _mm512_store_ps(bound, um[0]);
    _mm512_store_ps(bound + 16, um[1]);
    for (int j = 0; j < SCREEN_RB; j++) {
      const int r = r0 + j;

      for (int h = 0; h < 2; h++) {
        guint32 k = flags[j * 2 + h] & valid[h];

        while (k != 0) {
          int i = 16 * h + __builtin_ctz(k);
          float c = w->cbuf[j * SCREEN_QB + i];
          float v = s->sq[r] - 2.0f * c, bw = qn_norm[i] * s->w[r] + s->e[r];

          k &= k - 1;
          if (v - bw <= bound[i])
            push(w, &li, i, r, v - bw, bound[i]);
        }
      }
    }
  }
  _mm512_store_ps(bound, um[0]);
  _mm512_store_ps(bound + 16, um[1]);
  for (int i = 0; i < qn; i++) {
    const float *qi = q + (gsize)i * d;
    const gint32 *ci = w->cidx + (gsize)i * SCREEN_CAP;
    const float *cl = w->clo + (gsize)i * SCREEN_CAP;
    float best = INFINITY, qq = 0.0f;
    int arg = 0, n = 0;

    if (li.full[i]) {
      for (int r = 0; r < s->nb; r++) {
        float v = exact_value(qi, s->bank + (gsize)r * d, s->sq[r], d);

        if (v < best) {
          best = v;
          arg = r;
        }
      }
      n = s->nb;
    } else {
      for (int j = 0; j < li.ncand[i]; j++) {
        float v;

        if (cl[j] > bound[i])
          continue;
        v = exact_value(qi, s->bank + (gsize)ci[j] * d, s->sq[ci[j]], d);
        n++;
        if (v < best || (v == best && ci[j] < arg)) {
          best = v;
          arg = ci[j];
        }
      }
    }
    for (int k = 0; k < d; k++)
      qq += qi[k] * qi[k];
    best += qq;
    min_d2[i] = best > 0.0f ? best : 0.0f;
    if (argmin != NULL)
      argmin[i] = arg;
    if (n_reranked != NULL)
      *n_reranked += n;
  }
}

TARGET static void
search(const InspNnScreen *s, const float *q, int nq, void *scratch, float *min_d2, int *argmin,
       gint64 *n_reranked)
{
  guint8 *base = (guint8 *)(((guintptr)scratch + 63) & ~(guintptr)63);
  Scratch w;

  w.qb = (guint16 *)(void *)base;
  w.cbuf = (float *)(void *)(base + (gsize)SCREEN_QB * s->d * 2);
  w.cidx = (gint32 *)(void *)(w.cbuf + SCREEN_RB * SCREEN_QB);
  w.clo = (float *)(void *)(w.cidx + SCREEN_QB * SCREEN_CAP);
  insp_amx_load_config();
  for (int q0 = 0; q0 < nq; q0 += SCREEN_QB)
    search_block(s, q + (gsize)q0 * s->d, MIN(SCREEN_QB, nq - q0), &w, min_d2 + q0,
                 argmin != NULL ? argmin + q0 : NULL, n_reranked);
  _tile_release();
}

#else /* !SCREEN_X86 */

gboolean
insp_nn_screen_available(void)
{
  return FALSE;
}

static void
search(const InspNnScreen *s, const float *q, int nq, void *scratch, float *min_d2, int *argmin,
       gint64 *n_reranked)
{
  (void)s, (void)q, (void)nq, (void)scratch, (void)min_d2, (void)argmin, (void)n_reranked;
  g_assert_not_reached();
}

#endif

InspNnScreen *
insp_nn_screen_new(const float *bank, int nb, int d)
{
  InspNnScreen *s;

  g_return_val_if_fail(bank != NULL && nb > 0 && d > 0, NULL);
  if (!insp_nn_screen_available() || d % SCREEN_KC != 0 || d > SCREEN_MAX_DIM)
    return NULL;
  s = g_new0(InspNnScreen, 1);
  s->nb = nb;
  s->d = d;
  s->bank = bank;
  s->nb_pad = (nb + SCREEN_RB - 1) / SCREEN_RB * SCREEN_RB;
  s->packed = g_aligned_alloc0((gsize)s->nb_pad * d, sizeof(guint16), 64);
  s->sq = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  s->w = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  s->e = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  for (int r = 0; r < s->nb_pad; r++) {
    float bb = 0.0f;

    if (r >= nb) { /* padding: a value of +inf, never a candidate */
      s->sq[r] = INFINITY;
      s->w[r] = s->e[r] = 0.0f;
      continue;
    }
    for (int k = 0; k < d; k++) {
      float x = bank[(gsize)r * d + k];

      bb += x * x;
      /* A tile (rows 16g.., dims step k/32): [row][32 dims], 1 KiB each */
      s->packed[(gsize)(r / 16) * 16 * d + (gsize)(k / SCREEN_KC) * 16 * SCREEN_KC +
                (r % 16) * SCREEN_KC + k % SCREEN_KC] = insp_bf16_bits(x);
    }
    s->sq[r] = bb;
    s->w[r] = SCREEN_KAPPA * sqrtf(bb) * (1.0f + SCREEN_EPS);
    s->e[r] = SCREEN_EPS * bb;
  }
  return s;
}

void
insp_nn_screen_free(InspNnScreen *s)
{
  if (s == NULL)
    return;
  g_aligned_free(s->packed);
  g_aligned_free(s->sq);
  g_aligned_free(s->w);
  g_aligned_free(s->e);
  g_free(s);
}

gsize
insp_nn_screen_scratch_size(const InspNnScreen *s)
{
  g_return_val_if_fail(s != NULL, 0);
  return 64 + (gsize)SCREEN_QB * s->d * 2 + SCREEN_RB * SCREEN_QB * 4 + SCREEN_QB * SCREEN_CAP * 8;
}

void
insp_nn_screen_search(const InspNnScreen *s, const float *q, int nq, void *scratch, float *min_d2,
                      int *argmin, gint64 *n_reranked)
{
  g_return_if_fail(s != NULL && q != NULL && scratch != NULL && min_d2 != NULL && nq >= 0);
  search(s, q, nq, scratch, min_d2, argmin, n_reranked);
}
