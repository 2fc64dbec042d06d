/* insp-amx: what the two users of the CPU's matrix unit (Intel AMX) share:
 * whether this CPU and kernel allow it, bfloat16 rounding, and the one tile
 * configuration both use.
 *
 * insp_amx_available: x86-64 with AVX512F/DQ/BW/VL, AMX-TILE and AMX-BF16,
 * the OS saving their state (XCR0), and the kernel's permission for tile
 * data granted to the process (arch_prctl ARCH_REQ_XCOMP_PERM, asked once).
 * insp_amx_load_config: every one of the 8 tiles 16 rows x 64 bytes (16 x
 * 32 bfloat16, or 16 x 16 fp32); only where insp_amx_available, and to be
 * followed by _tile_release() on the same thread.
 * insp_avx512_vnni_available: x86-64 with AVX512F/DQ/BW/VL and AVX512-VNNI
 * (the int8 dot products of the screen where there is no AMX), the OS
 * saving the ZMM state. */
#pragma once

#include <glib.h>
#include <string.h>

G_BEGIN_DECLS

gboolean insp_amx_available(void);
gboolean insp_avx512_vnni_available(void);
void insp_amx_load_config(void);

/* x rounded to bfloat16, to nearest even (finite x), as its 16 bits. */
static inline guint16
insp_bf16_bits(float x)
{
  guint32 u;

  memcpy(&u, &x, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (guint16)(u >> 16);
}

/* The float a bfloat16 stands for (exact). */
static inline float
insp_bf16_value(guint16 h)
{
  guint32 u = (guint32)h << 16;
  float x;

  memcpy(&x, &u, sizeof x);
  return x;
}

G_END_DECLS
