/* insp-ops-mx: the backbone's 1x1 convs on the CPU's matrix unit (Intel
 * AMX), in three bfloat16 products that make an fp32-accurate one.
 *
 * Each fp32 value x is split as x = hi + lo + r with hi = bf16(x), lo =
 * bf16(x - hi) (both round to nearest even), so |r| <= 2^-16 |x|. A product
 * w x is taken as hi_w hi_x + hi_w lo_x + lo_w hi_x (the dropped lo_w lo_x
 * is below 2^-16 |w x|), each product exact in fp32 and summed in fp32 by
 * TDPBF16PS: every output within about 4e-5 of its size in relative terms
 * of sum |w x| (test-ops: TOL_CONV_MX), against the fp32 kernel's order
 * of 1e-6; there are no other approximations.
 *
 * Weights are packed once (insp_ops_mx_pack_weights, at the backbone's
 * load): per 16 output channels and per 32 input channels a 16 x 32 tile of
 * hi and one of lo, the channels padded with zeros. Inputs are split and
 * packed per 32 pixels on the caller's stack. Every output is the same
 * sequence of tile products wherever its pixel or channel falls in the
 * blocks, so a conv cut into pixel or channel ranges (the backbone's team,
 * the fused expand) gives the whole conv's values bit for bit. */
#include "insp-amx.h"
#include "insp-kernels.h"
#include "insp-ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define MX_X86 1
#include <immintrin.h>
#endif

#define MX_PX 32 /* pixels per block: two B tiles of 16 */

static void
split(float x, guint16 *hi, guint16 *lo)
{
  *hi = insp_bf16_bits(x);
  *lo = insp_bf16_bits(x - insp_bf16_value(*hi));
}

gboolean
insp_ops_mx_available(void)
{
  return insp_amx_available();
}

static int
pad_to(int n, int m)
{
  return (n + m - 1) / m * m;
}

gsize
insp_ops_mx_weights_size(int cout, int cin)
{
  /* guint16s: hi and lo tiles for every 16 x 32 block */
  return (gsize)pad_to(cout, 16) * pad_to(cin, 32) * 2;
}

void
insp_ops_mx_pack_weights(const float *w, int cout, int cin, guint16 *out)
{
  const int kp = pad_to(cin, 32), nkc = kp / 32;

  g_return_if_fail(w != NULL && out != NULL && cout > 0 && cin > 0);
  memset(out, 0, insp_ops_mx_weights_size(cout, cin) * sizeof(guint16));
  for (int o = 0; o < cout; o++)
    for (int c = 0; c < cin; c++) {
      /* group o/16, chunk c/32: [hi 16 x 32][lo 16 x 32] */
      guint16 *t = out + ((gsize)(o / 16) * nkc + c / 32) * 2 * 512 + (o % 16) * 32 + c % 32;

      split(w[(gsize)o * cin + c], &t[0], &t[512]);
    }
}

#ifdef MX_X86

#define MX_TARGET                                                                                  \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,amx-tile,amx-bf16")))

/* Epilogue of one 16-channel x 32-pixel block: + bias, + residual,
 * activation (NaN -> 0 as the fp32 kernel), stored for the channels in
 * [o_lo, o_hi) and the pixels [keep, end). */
MX_TARGET static void
store_rows(const float *c, int g, int o_lo, int o_hi, const float *bias, const float *r,
           InspActivation act, gsize j, gsize keep, gsize end, gsize ldy, float *y)
{
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);

  for (int i = 0; i < 16; i++) {
    int o = g * 16 + i;
    gsize at;

    if (o < o_lo || o >= o_hi)
      continue;
    at = (gsize)(o - o_lo) * ldy + j;
    for (int h = 0; h < 2; h++) {
      gsize first = j + 16 * (gsize)h;
      gsize lo = keep > first ? keep - first : 0, hi = end > first ? MIN(end - first, 16) : 0;
      __mmask16 m = lo < hi ? (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
      __m512 v = _mm512_load_ps(c + i * MX_PX + 16 * h);

      if (m == 0)
        continue;
      if (bias != NULL)
        v = _mm512_add_ps(v, _mm512_set1_ps(bias[o - o_lo]));
      if (r != NULL)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r + at + 16 * h));
      if (act != INSP_ACT_NONE) /* v > 0 ? v : 0, NaN -> 0 */
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
      if (act == INSP_ACT_RELU6) /* v < 6 ? v : 6 */
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, six, _CMP_LT_OQ), six, v);
      _mm512_mask_storeu_ps(y + at + 16 * h, m, v);
    }
  }
}

/* Rows c and c + 1 of 16 pixels, split into hi and lo, as one row of a B
 * tile each: lane p = (pixel p of row c + 1) << 16 | pixel p of row c. */
MX_TARGET static void
pack_pair(__m512 x0, __m512 x1, guint16 *hi_row, guint16 *lo_row)
{
  const __m512i top = _mm512_set1_epi32((int)0xffff0000u), half = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i h[2], l[2];
  __m512 xs[2] = {x0, x1};

  for (int t = 0; t < 2; t++) {
    __m512i u = _mm512_castps_si512(xs[t]), v;

    /* round to nearest even at bit 16, then the rest the same way */
    u = _mm512_and_si512(
        _mm512_add_epi32(u,
                         _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(u, 16), one))),
        top);
    h[t] = u;
    v = _mm512_castps_si512(_mm512_sub_ps(xs[t], _mm512_castsi512_ps(u)));
    l[t] = _mm512_and_si512(
        _mm512_add_epi32(v,
                         _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(v, 16), one))),
        top);
  }
  _mm512_storeu_si512(hi_row, _mm512_or_si512(h[1], _mm512_srli_epi32(h[0], 16)));
  _mm512_storeu_si512(lo_row, _mm512_or_si512(l[1], _mm512_srli_epi32(l[0], 16)));
}

/* One block's inputs (pixels j0.., n of them, the rest zero) as B tiles
 * into @xb: [chunk][hi | lo][half][16 pairs x 16 pixels x 2]. */
MX_TARGET static void
pack_block(const float *x, int cin, gsize ldx, gsize j0, int n, guint16 *xb)
{
  const int kp = pad_to(cin, 32);

  for (int c = 0; c < kp; c += 2)
    for (int h = 0; h < 2; h++) {
      int from = 16 * h, cnt = CLAMP(n - from, 0, 16);
      __mmask16 m = (__mmask16)((1u << cnt) - 1);
      __m512 x0 =
          c < cin ? _mm512_maskz_loadu_ps(m, x + (gsize)c * ldx + j0 + from) : _mm512_setzero_ps();
      __m512 x1 = c + 1 < cin ? _mm512_maskz_loadu_ps(m, x + (gsize)(c + 1) * ldx + j0 + from)
                              : _mm512_setzero_ps();
      guint16 *t = xb + (gsize)(c / 32) * 2048 + h * 512 + (c % 32) / 2 * 32;

      pack_pair(x0, x1, t, t + 1024);
    }
}

/* Output channels [o_lo, o_hi) for the block at pixel j0 (stored for
 * [keep, end)) from its packed inputs, with the tile configuration loaded. */
MX_TARGET static void
block_products(const guint16 *xb, int cin, const guint16 *wp, int o_lo, int o_hi, const float *bias,
               const float *r, InspActivation act, gsize j0, gsize keep, gsize end, gsize ldy,
               float *y)
{
  const int nkc = pad_to(cin, 32) / 32, g0 = o_lo / 16, g1 = (o_hi + 15) / 16;
  float cbuf[2][16 * MX_PX] __attribute__((aligned(64)));

  for (int g = g0; g < g1; g += 2) {
    const guint16 *a0 = wp + (gsize)g * nkc * 1024;
    const guint16 *a1 = g + 1 < g1 ? a0 + (gsize)nkc * 1024 : a0;

    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int kc = 0; kc < nkc; kc++) {
      const guint16 *b = xb + (gsize)kc * 2048;

      /* hi x hi, hi x lo, lo x hi; tiles 4/5: A, 6/7: B (two pixel halves) */
      _tile_loadd(4, a0 + (gsize)kc * 1024, 64);
      _tile_loadd(5, a1 + (gsize)kc * 1024, 64);
      _tile_loadd(6, b, 64);
      _tile_loadd(7, b + 512, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
      _tile_loadd(6, b + 1024, 64);
      _tile_loadd(7, b + 1536, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
      _tile_loadd(4, a0 + (gsize)kc * 1024 + 512, 64);
      _tile_loadd(5, a1 + (gsize)kc * 1024 + 512, 64);
      _tile_loadd(6, b, 64);
      _tile_loadd(7, b + 512, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cbuf[0], MX_PX * 4);
    _tile_stored(1, cbuf[0] + 16, MX_PX * 4);
    _tile_stored(2, cbuf[1], MX_PX * 4);
    _tile_stored(3, cbuf[1] + 16, MX_PX * 4);
    store_rows(cbuf[0], g, o_lo, o_hi, bias, r, act, j0, keep, end, ldy, y);
    if (g + 1 < g1)
      store_rows(cbuf[1], g + 1, o_lo, o_hi, bias, r, act, j0, keep, end, ldy, y);
  }
}

MX_TARGET static void
conv1x1(const float *x, const guint16 *xp, int cin, gsize hw, const guint16 *wp, int o_lo, int o_hi,
        const float *bias, const float *r, InspActivation act, gsize p0, gsize p1, float *y)
{
  guint16 xb[INSP_OPS_MX_MAX_CIN / 32 * 2048] __attribute__((aligned(64)));

  insp_amx_load_config();
  for (gsize j0 = p0 / MX_PX * MX_PX; j0 < p1; j0 += MX_PX) {
    const guint16 *b = xb;

    if (xp != NULL) {
      b = xp + (j0 / MX_PX) * (gsize)(pad_to(cin, 32) / 32) * 2048;
    } else {
      pack_block(x, cin, hw, j0, (int)MIN((gsize)MX_PX, hw - j0), xb);
    }
    block_products(b, cin, wp, o_lo, o_hi, bias, r, act, j0, p0, p1, hw, y);
  }
  _tile_release();
}

MX_TARGET static void
pack_input(const float *x, int cin, gsize hw, guint16 *xp)
{
  const gsize per = (gsize)(pad_to(cin, 32) / 32) * 2048;

  for (gsize j0 = 0; j0 < hw; j0 += MX_PX)
    pack_block(x, cin, hw, j0, (int)MIN((gsize)MX_PX, hw - j0), xp + (j0 / MX_PX) * per);
}

#endif

gsize
insp_ops_mx_input_size(int cin, gsize hw)
{
  return (hw + MX_PX - 1) / MX_PX * (gsize)(pad_to(cin, 32) / 32) * 2048;
}

void
insp_ops_mx_pack_input(const float *x, int cin, gsize hw, guint16 *xp)
{
  g_return_if_fail(x != NULL && xp != NULL && cin > 0 && cin <= INSP_OPS_MX_MAX_CIN);
#ifdef MX_X86
  pack_input(x, cin, hw, xp);
#else
  g_assert_not_reached();
#endif
}

void
insp_ops_conv1x1_mx_part(const float *x, const guint16 *xp, int cin, gsize hw, const guint16 *wp,
                         int o_lo, int o_hi, const float *bias, const float *residual,
                         InspActivation act, gsize p0, gsize p1, float *y)
{
  g_return_if_fail((x != NULL || xp != NULL) && wp != NULL && y != NULL && cin > 0 &&
                   cin <= INSP_OPS_MX_MAX_CIN);
  g_return_if_fail(0 <= o_lo && o_lo < o_hi && p0 <= p1 && p1 <= hw);
#ifdef MX_X86
  conv1x1(x, xp, cin, hw, wp, o_lo, o_hi, bias, residual, act, p0, p1, y);
#else
  (void)bias, (void)residual, (void)act;
  g_assert_not_reached();
#endif
}
