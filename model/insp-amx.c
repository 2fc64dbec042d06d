/* insp-amx: the CPU and kernel checks and the tile configuration shared by
 * insp-nn-screen and insp-ops-mx (see insp-amx.h). */
#include "insp-amx.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
  guint8 palette, start_row, reserved[14];
  guint16 colsb[16];
  guint8 rows[16];
} __attribute__((packed)) TileConfig;

static gboolean
cpu_has_amx(void)
{
  unsigned a, b, c, d, lo, hi;

  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) /* OSXSAVE */
    return FALSE;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  /* SSE, AVX, opmask, ZMM state and tile config + data enabled by the OS */
  if ((lo & 0x600e6u) != 0x600e6u)
    return FALSE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
    return FALSE;
  /* AVX512F (b16), AVX512DQ (b17), AVX512BW (b30), AVX512VL (b31);
   * AMX-BF16 (d22), AMX-TILE (d24) */
  if (((b >> 16) & 3u) != 3u || ((b >> 30) & 3u) != 3u || !((d >> 22) & 1) || !((d >> 24) & 1))
    return FALSE;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* AVX512F/DQ/BW/VL and AVX512-VNNI, with the OS saving the ZMM state. */
static gboolean
cpu_has_avx512_vnni(void)
{
  unsigned a, b, c, d, lo, hi;

  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) /* OSXSAVE */
    return FALSE;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xe6u) != 0xe6u) /* SSE, AVX, opmask, ZMM state */
    return FALSE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
    return FALSE;
  /* AVX512F (b16), AVX512DQ (b17), AVX512BW (b30), AVX512VL (b31); AVX512_VNNI (c11) */
  return ((b >> 16) & 3u) == 3u && ((b >> 30) & 3u) == 3u && ((c >> 11) & 1);
}

gboolean
insp_avx512_vnni_available(void)
{
  static gsize once = 0;
  static gboolean ok;

  if (g_once_init_enter(&once)) {
    ok = cpu_has_avx512_vnni();
    g_once_init_leave(&once, 1);
  }
  return ok;
}

gboolean
insp_amx_available(void)
{
  static gsize once = 0;
  static gboolean ok;

  if (g_once_init_enter(&once)) {
    ok = cpu_has_amx();
    g_once_init_leave(&once, 1);
  }
  return ok;
}

__attribute__((target("amx-tile"))) void
insp_amx_load_config(void)
{
  TileConfig cfg;

  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

#else

gboolean
insp_avx512_vnni_available(void)
{
  return FALSE;
}

gboolean
insp_amx_available(void)
{
  return FALSE;
}

void
insp_amx_load_config(void)
{
  g_assert_not_reached();
}

#endif
