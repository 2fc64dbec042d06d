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
 * The int8 kind, for CPUs with AVX512-VNNI and no AMX (VPDPBUSD: 64 int8
 * products per instruction, twice the fp32 FMA's rate here): each row is
 * b = sb B + db with B = round(b / sb) in [-127, 127], sb = max |b| / 127,
 * each query likewise q = sq Q + dq, and c = sq sb (Q.B), the integer dot
 * product exact. Then q.b - c = dq.b + (sq Q).db, so |q.b - c| <= |dq||b| +
 * |sq Q||db| (Cauchy-Schwarz), with |dq| and |db| the vectors' own
 * quantisation errors, computed, not bounded per element (SCREEN_I8_*):
 * the same screen with a bound per pair, B = 2 (|dq||b| + |q^||db|) + the
 * fp32 terms. About twice as wide as the bfloat16 one; on real features
 * (bottle's test images) 5.5 rows per patch are re-ranked with the 224 px
 * bottle model (1638 rows), 3.9 at 320 px (3344), 16 with the 10,656 rows
 * of a 666-image model.
 *
 * Invariants: a screen is immutable once built and owns its reduced copy of
 * the bank (bfloat16: half the bank's size; int8: a quarter) and the row
 * norms; it keeps a pointer to the caller's fp32 bank, which must outlive
 * it. Search allocates nothing (the caller's scratch,
 * insp_nn_screen_scratch_size), and any number of threads may search one
 * screen at once (each bfloat16 search loads its own tile configuration
 * and releases it on return). Only on x86-64: the bfloat16 kind with
 * AMX-BF16, AVX-512 and the kernel's permission for tile data, the int8
 * kind with AVX-512 and AVX512-VNNI; insp_nn_screen_new returns NULL
 * elsewhere and the caller keeps the plain search. */
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

/* The int8 kind's bound (see the header): per query A = 2 |dq| (1 + M) +
 * K2 (|q| + |dq|) and B = 2 (|q| + |dq|) (1 + M), per row |b|, |db| and
 * eps |b|^2: bw = A |b| + B |db| + eps |b|^2 bounds |v - the fp32 value|.
 * K2 (per dim) covers the fp32 sums of the re-rank, 2 d 2^-24 with margin,
 * plus 1e-5 for the rounding of v itself; M the fp32 norms (d 2^-24 for
 * d <= 1024 is 6.1e-5, so 1e-4 is used for the norms of q and dq). */
#define SCREEN_I8_K2_PER_DIM 1.25e-7f
#define SCREEN_I8_K2 1e-5f
#define SCREEN_I8_M 1e-5f
#define SCREEN_I8_NORM 1e-4f

struct _InspNnScreen {
  InspNnScreenKind kind;
  int nb, d, nb_pad;
  const float *bank; /* [nb, d] fp32, the caller's */
  guint16 *packed;   /* bf16: A tiles per 16 rows, per 32 dims, 16 x 32; padding 0 */
  gint32 *q8;        /* int8: the rows as integers B (b ~ sb B), per 16 rows, per 4 dims, 16 dwords
                      * of 4 bytes (one row's 4 dims each); padding 0 */
  float *sq;         /* [nb_pad] |b|^2, +inf for padding */
  float *w;          /* [nb_pad] bf16: kappa |b| (+ eps |b|); int8: |b|; 0 for padding */
  float *e;          /* [nb_pad] eps |b|^2, 0 for padding */
  float *sb;         /* int8: [nb_pad] the row's scale, 0 for padding */
  float *ndb;        /* int8: [nb_pad] |b - sb B| rounded up, 0 for padding */
  gint32 *bias;      /* int8: [nb_pad] -128 sum B (the queries are stored + 128) */
};

#ifdef SCREEN_X86

gboolean
insp_nn_screen_kind_available(InspNnScreenKind kind)
{
  switch (kind) {
  case INSP_NN_SCREEN_AUTO:
    return insp_amx_available() || insp_avx512_vnni_available();
  case INSP_NN_SCREEN_BF16_AMX:
    return insp_amx_available();
  case INSP_NN_SCREEN_INT8_VNNI:
    return insp_avx512_vnni_available();
  }
  return FALSE;
}

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,amx-tile,amx-bf16")))
#define VNNI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512vnni")))

/* |b|^2 - 2 q.b in fp32, the products summed in 16 lanes then halved. */
AVX512 static float
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

/* The fp32 re-rank of one block's candidates: those whose lower bound is
 * at most the query's final upper bound, or the whole bank for a query
 * whose list overflowed; ties to the lower row. */
AVX512 static void
rerank(const InspNnScreen *s, const float *q, int qn, const Scratch *w, const Lists *li,
       const float *bound, float *min_d2, int *argmin, gint64 *n_reranked)
{
  const int d = s->d;

  for (int i = 0; i < qn; i++) {
    const float *qi = q + (gsize)i * d;
    const gint32 *ci = w->cidx + (gsize)i * SCREEN_CAP;
    const float *cl = w->clo + (gsize)i * SCREEN_CAP;
    float best = INFINITY, qq = 0.0f;
    int arg = 0, n = 0;

    if (li->full[i]) {
      for (int r = 0; r < s->nb; r++) {
        float v = exact_value(qi, s->bank + (gsize)r * d, s->sq[r], d);

        if (v < best) {
          best = v;
          arg = r;
        }
      }
      n = s->nb;
    } else {
      for (int j = 0; j < li->ncand[i]; j++) {
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
  rerank(s, q, qn, w, &li, bound, min_d2, argmin, n_reranked);
}

/* Query i of a block in int8 (lanes of the B vectors: qp [half][group of
 * 4 dims][16 lanes] as dwords of 4 bytes Q + 128), and its bound terms. */
VNNI static void
quantize_query(const float *qi, int d, int i, guint32 *qp, float *qa, float *qb, float *qs)
{
  const int ng = d / 4, lane = i % 16;
  guint32 *dst = qp + (gsize)(i / 16) * ng * 16 + lane;
  __m512 mx = _mm512_setzero_ps(), ee = _mm512_setzero_ps(), xx = _mm512_setzero_ps();
  float m, sc, dq, nq;
  __m512 vsc, vinv;

  for (int k = 0; k < d; k += 16)
    mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(qi + k)));
  m = _mm512_reduce_max_ps(mx);
  sc = m > 0.0f ? m / 127.0f : 1.0f;
  vsc = _mm512_set1_ps(sc);
  vinv = _mm512_set1_ps(1.0f / sc);
  for (int k = 0; k < d; k += 16) {
    __m512 x = _mm512_loadu_ps(qi + k);
    __m512 qf = _mm512_roundscale_ps(_mm512_mul_ps(x, vinv), _MM_FROUND_TO_NEAREST_INT);
    __m512 e;
    __m128i u;
    guint32 g4[4];

    qf = _mm512_min_ps(_mm512_max_ps(qf, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    e = _mm512_fnmadd_ps(vsc, qf, x); /* x - sc Q, one rounding */
    ee = _mm512_fmadd_ps(e, e, ee);
    xx = _mm512_fmadd_ps(x, x, xx);
    u = _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(qf), _mm512_set1_epi32(128)));
    _mm_storeu_si128((__m128i *)(void *)g4, u);
    for (int t = 0; t < 4; t++)
      dst[(gsize)(k / 4 + t) * 16] = g4[t];
  }
  dq = sqrtf(_mm512_reduce_add_ps(ee)) * (1.0f + SCREEN_I8_NORM);
  nq = sqrtf(_mm512_reduce_add_ps(xx)) * (1.0f + SCREEN_I8_NORM);
  qa[i] = 2.0f * dq * (1.0f + SCREEN_I8_M) + (SCREEN_I8_K2_PER_DIM * d + SCREEN_I8_K2) * (nq + dq);
  qb[i] = 2.0f * (nq + dq) * (1.0f + SCREEN_I8_M);
  qs[i] = -2.0f * sc;
}

/* acc + the dot products of 4 unsigned bytes of a by 4 signed bytes at
 * *p in every lane: in assembly, as GCC 12 copies the accumulator around
 * the intrinsic and does not fold the broadcast into it. */
VNNI static inline __m512i
dpbusd_bcast(__m512i acc, __m512i a, const gint32 *p)
{
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*p));
  return acc;
}

/* As search_block, with the products in int8 on AVX512-VNNI: lanes are
 * queries (stored + 128, unsigned), each row's 4 dims broadcast (signed),
 * 16 rows at a time in 16 accumulators started at the row's -128 sum B,
 * so c = Q.B exactly; v = |b|^2 - 2 sq sb c and bw as at SCREEN_I8_K2. */
VNNI static void
search_block_int8(const InspNnScreen *s, const float *q, int qn, const Scratch *w, float *min_d2,
                  int *argmin, gint64 *n_reranked)
{
  const int d = s->d, ng = d / 4, n_steps = s->nb_pad / SCREEN_RB;
  float qa[SCREEN_QB] __attribute__((aligned(64)));
  float qb[SCREEN_QB] __attribute__((aligned(64)));
  float qs[SCREEN_QB] __attribute__((aligned(64)));
  float bound[SCREEN_QB] __attribute__((aligned(64)));
  guint32 *qp = (guint32 *)(void *)w->qb;
  guint16 flags[SCREEN_RB * 2];
  __m512 va[2], vb[2], vs[2], um[2];
  __mmask16 valid[2];
  Lists li;

  for (int i = 0; i < SCREEN_QB; i++) {
    li.ncand[i] = 0;
    li.full[i] = FALSE;
    if (i < qn) {
      quantize_query(q + (gsize)i * d, d, i, qp, qa, qb, qs);
      continue;
    }
    for (int g = 0; g < ng; g++)
      qp[(gsize)(i / 16) * ng * 16 + (gsize)g * 16 + i % 16] = 0x80808080u;
    qa[i] = qb[i] = qs[i] = 0.0f;
  }
  for (int h = 0; h < 2; h++) {
    va[h] = _mm512_load_ps(qa + 16 * h);
    vb[h] = _mm512_load_ps(qb + 16 * h);
    vs[h] = _mm512_load_ps(qs + 16 * h);
    um[h] = _mm512_set1_ps(INFINITY);
    valid[h] = (__mmask16)(qn <= 16 * h         ? 0
                           : qn >= 16 * (h + 1) ? 0xffff
                                                : (1u << (qn - 16 * h)) - 1);
  }
  for (int step = 0; step < n_steps; step++) {
    const int r0 = step * SCREEN_RB;
    __m512 stepmin[2][4];
    __mmask16 any = 0;

    for (int h = 0; h < 2; h++)
      for (int half = 0; half < 2; half++) {
        const gint32 *rb = s->q8 + (gsize)(r0 + 16 * half) / 16 * ng * 16;
        const guint32 *qh = qp + (gsize)h * ng * 16;
        __m512i acc[16];

        for (int j = 0; j < 16; j++)
          acc[j] = _mm512_set1_epi32(s->bias[r0 + 16 * half + j]);
        for (int g = 0; g < ng; g++) {
          const __m512i qv = _mm512_load_si512((const void *)(qh + (gsize)g * 16));

          for (int j = 0; j < 16; j++)
            acc[j] = dpbusd_bcast(acc[j], qv, rb + g * 16 + j);
        }
        for (int j = 0; j < 16; j++)
          _mm512_store_ps(w->cbuf + (16 * half + j) * SCREEN_QB + 16 * h,
                          _mm512_cvtepi32_ps(acc[j]));
      }
    for (int h = 0; h < 2; h++)
      for (int c = 0; c < 4; c++)
        stepmin[h][c] = um[h];
    for (int j = 0; j < SCREEN_RB; j++) {
      const int r = r0 + j;
      const __m512 sq = _mm512_set1_ps(s->sq[r]), sb = _mm512_set1_ps(s->sb[r]);
      const __m512 nb = _mm512_set1_ps(s->w[r]), ndb = _mm512_set1_ps(s->ndb[r]);
      const __m512 er = _mm512_set1_ps(s->e[r]);

      for (int h = 0; h < 2; h++) {
        __m512 c = _mm512_load_ps(w->cbuf + j * SCREEN_QB + 16 * h);
        __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(vs[h], sb), c, sq);
        __m512 bw = _mm512_fmadd_ps(va[h], nb, _mm512_fmadd_ps(vb[h], ndb, er));
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
          float v = s->sq[r] + qs[i] * s->sb[r] * c;
          float bw = qa[i] * s->w[r] + (qb[i] * s->ndb[r] + s->e[r]);

          k &= k - 1;
          if (v - bw <= bound[i])
            push(w, &li, i, r, v - bw, bound[i]);
        }
      }
    }
  }
  _mm512_store_ps(bound, um[0]);
  _mm512_store_ps(bound + 16, um[1]);
  rerank(s, q, qn, w, &li, bound, min_d2, argmin, n_reranked);
}

TARGET static void
search_bf16(const InspNnScreen *s, const float *q, int nq, const Scratch *w, float *min_d2,
            int *argmin, gint64 *n_reranked)
{
  insp_amx_load_config();
  for (int q0 = 0; q0 < nq; q0 += SCREEN_QB)
    search_block(s, q + (gsize)q0 * s->d, MIN(SCREEN_QB, nq - q0), w, min_d2 + q0,
                 argmin != NULL ? argmin + q0 : NULL, n_reranked);
  _tile_release();
}

static void
search(const InspNnScreen *s, const float *q, int nq, void *scratch, float *min_d2, int *argmin,
       gint64 *n_reranked)
{
  guint8 *base = (guint8 *)(((guintptr)scratch + 63) & ~(guintptr)63);
  Scratch w;

  w.qb = (guint16 *)(void *)base;
  w.cbuf = (float *)(void *)(base + (gsize)SCREEN_QB * s->d * 2);
  w.cidx = (gint32 *)(void *)(w.cbuf + SCREEN_RB * SCREEN_QB);
  w.clo = (float *)(void *)(w.cidx + SCREEN_QB * SCREEN_CAP);
  if (s->kind == INSP_NN_SCREEN_INT8_VNNI) {
    for (int q0 = 0; q0 < nq; q0 += SCREEN_QB)
      search_block_int8(s, q + (gsize)q0 * s->d, MIN(SCREEN_QB, nq - q0), &w, min_d2 + q0,
                        argmin != NULL ? argmin + q0 : NULL, n_reranked);
    return;
  }
  search_bf16(s, q, nq, &w, min_d2, argmin, n_reranked);
}

/* Row r in int8: B = round(b / sb) with sb = max |b| / 127, and |b - sb B|
 * in double, rounded up. */
static void
quantize_row(const float *b, int d, gint8 *out, gsize stride, float *sb, float *ndb, gint32 *bias)
{
  float m = 0.0f, sc;
  double e2 = 0.0;
  gint32 sum = 0;

  for (int k = 0; k < d; k++)
    m = MAX(m, fabsf(b[k]));
  sc = m > 0.0f ? m / 127.0f : 1.0f;
  for (int k = 0; k < d; k++) {
    float qf = CLAMP(nearbyintf(b[k] / sc), -127.0f, 127.0f);
    double e = (double)b[k] - (double)sc * qf;

    out[(gsize)(k / 4) * stride + k % 4] = (gint8)qf;
    sum += (gint32)qf;
    e2 += e * e;
  }
  *sb = sc;
  *ndb = (float)sqrt(e2) * (1.0f + SCREEN_I8_NORM);
  *bias = -128 * sum;
}

#else /* !SCREEN_X86 */

gboolean
insp_nn_screen_kind_available(InspNnScreenKind kind)
{
  (void)kind;
  return FALSE;
}

static void
quantize_row(const float *b, int d, gint8 *out, gsize stride, float *sb, float *ndb, gint32 *bias)
{
  (void)b, (void)d, (void)out, (void)stride, (void)sb, (void)ndb, (void)bias;
  g_assert_not_reached();
}

static void
search(const InspNnScreen *s, const float *q, int nq, void *scratch, float *min_d2, int *argmin,
       gint64 *n_reranked)
{
  (void)s, (void)q, (void)nq, (void)scratch, (void)min_d2, (void)argmin, (void)n_reranked;
  g_assert_not_reached();
}

#endif

gboolean
insp_nn_screen_available(void)
{
  return insp_nn_screen_kind_available(INSP_NN_SCREEN_AUTO);
}

const char *
insp_nn_screen_kind_describe(InspNnScreenKind kind)
{
  if (kind == INSP_NN_SCREEN_AUTO)
    kind = insp_amx_available() ? INSP_NN_SCREEN_BF16_AMX : INSP_NN_SCREEN_INT8_VNNI;
  return kind == INSP_NN_SCREEN_BF16_AMX ? "bfloat16 screen on the matrix unit (AMX-BF16)"
                                         : "int8 screen on AVX512-VNNI";
}

InspNnScreen *
insp_nn_screen_new(const float *bank, int nb, int d)
{
  return insp_nn_screen_new_kind(bank, nb, d, INSP_NN_SCREEN_AUTO);
}

InspNnScreen *
insp_nn_screen_new_kind(const float *bank, int nb, int d, InspNnScreenKind kind)
{
  InspNnScreen *s;

  g_return_val_if_fail(bank != NULL && nb > 0 && d > 0, NULL);
  if (!insp_nn_screen_kind_available(kind) || d % SCREEN_KC != 0 || d > SCREEN_MAX_DIM)
    return NULL;
  if (kind == INSP_NN_SCREEN_AUTO)
    kind = insp_amx_available() ? INSP_NN_SCREEN_BF16_AMX : INSP_NN_SCREEN_INT8_VNNI;
  s = g_new0(InspNnScreen, 1);
  s->kind = kind;
  s->nb = nb;
  s->d = d;
  s->bank = bank;
  s->nb_pad = (nb + SCREEN_RB - 1) / SCREEN_RB * SCREEN_RB;
  s->sq = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  s->w = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  s->e = g_aligned_alloc(s->nb_pad, sizeof(float), 64);
  if (kind == INSP_NN_SCREEN_INT8_VNNI) {
    s->q8 = g_aligned_alloc0((gsize)s->nb_pad * d, 1, 64);
    s->sb = g_aligned_alloc0(s->nb_pad, sizeof(float), 64);
    s->ndb = g_aligned_alloc0(s->nb_pad, sizeof(float), 64);
    s->bias = g_aligned_alloc0(s->nb_pad, sizeof(gint32), 64);
    for (int r = 0; r < s->nb_pad; r++) {
      const float *b = bank + (gsize)r * d;
      float bb = 0.0f;

      if (r >= nb) { /* padding: a value of +inf, never a candidate */
        s->sq[r] = INFINITY;
        s->w[r] = s->e[r] = 0.0f;
        continue;
      }
      for (int k = 0; k < d; k++)
        bb += b[k] * b[k];
      /* rows 16 (r / 16).., dims group k / 4: dword r % 16 */
      quantize_row(b, d, (gint8 *)(s->q8 + (gsize)(r / 16) * (d / 4) * 16 + r % 16), 64, &s->sb[r],
                   &s->ndb[r], &s->bias[r]);
      s->sq[r] = bb;
      s->w[r] = sqrtf(bb) * (1.0f + SCREEN_I8_NORM);
      s->e[r] = SCREEN_EPS * bb;
    }
    return s;
  }
  s->packed = g_aligned_alloc0((gsize)s->nb_pad * d, sizeof(guint16), 64);
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
  g_aligned_free(s->q8);
  g_aligned_free(s->sb);
  g_aligned_free(s->ndb);
  g_aligned_free(s->bias);
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
