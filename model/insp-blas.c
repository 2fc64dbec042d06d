/* insp-blas: which kernels OpenBLAS runs on this CPU (insp-blas.h). */
#include "insp-blas.h"

#include <cblas.h>
#include <cpuid.h>

/* The x86-64 cores of OpenBLAS 0.3.21 by the widest instruction set their
 * kernels use; cores not listed are left alone (never downgraded). */
typedef enum {
  ISA_SSE,
  ISA_AVX,
  ISA_AVX2,
  ISA_AVX512,
  ISA_AVX512_BF16,
} Isa;

static const struct {
  const char *core;
  Isa isa;
} cores[] = {
    {"Prescott", ISA_SSE},    {"Core2", ISA_SSE},
    {"Penryn", ISA_SSE},      {"Dunnington", ISA_SSE},
    {"Nehalem", ISA_SSE},     {"Atom", ISA_SSE},
    {"Barcelona", ISA_SSE},   {"Sandybridge", ISA_AVX},
    {"Bulldozer", ISA_AVX},   {"Haswell", ISA_AVX2},
    {"Zen", ISA_AVX2},        {"Excavator", ISA_AVX2},
    {"SkylakeX", ISA_AVX512}, {"Cooperlake", ISA_AVX512_BF16},
};

const char *
insp_blas_core(void)
{
  const char *name = openblas_get_corename();

  return name != NULL && name[0] != '\0' ? name : "unknown";
}

/* The widest instruction set of this CPU that the OS also saves (XCR0). */
static Isa
cpu_isa(void)
{
  unsigned a, b, c, d, xcr0_lo = 0, xcr0_hi = 0;
  gboolean osxsave, avx, fma, avx2, avx512;

  if (!__get_cpuid(1, &a, &b, &c, &d))
    return ISA_SSE;
  osxsave = (c >> 27) & 1;
  avx = (c >> 28) & 1;
  fma = (c >> 12) & 1;
  if (!osxsave || !avx)
    return ISA_SSE;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) /* XMM and YMM state */
    return ISA_SSE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
    return ISA_AVX;
  avx2 = (b >> 5) & 1;
  /* F (16), DQ (17), CD (28), BW (30), VL (31), and the OS saves opmask
   * and ZMM state (XCR0 bits 5-7). */
  avx512 = (b & 0xd0030000u) == 0xd0030000u && (xcr0_lo & 0xe0) == 0xe0;
  if (avx512) {
    unsigned a1 = 0, b1, c1, d1;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && ((a1 >> 5) & 1))
      return ISA_AVX512_BF16;
    return ISA_AVX512;
  }
  return avx2 && fma ? ISA_AVX2 : ISA_AVX;
}

const char *
insp_blas_core_to_request(void)
{
  const char *now = insp_blas_core();
  Isa have = cpu_isa(), used;
  gsize i;

  for (i = 0; i < G_N_ELEMENTS(cores); i++)
    if (g_ascii_strcasecmp(now, cores[i].core) == 0)
      break;
  if (i == G_N_ELEMENTS(cores))
    return NULL;
  used = cores[i].isa;
  /* BF16 adds no sgemm kernel (below): SkylakeX already uses this CPU */
  if (have == ISA_AVX512_BF16)
    have = ISA_AVX512;
  if (have <= used)
    return NULL;
  switch (have) {
  case ISA_AVX512_BF16:
  case ISA_AVX512:
    /* Not Cooperlake for BF16: its sgemm is SkylakeX's (the BF16 kernels
     * are sbgemm's, which Debian's build does not export), and 0.3.21's
     * OPENBLAS_CORETYPE parser warns "Core not found: Cooperlake" while
     * taking it. */
    return "SkylakeX";
  case ISA_AVX2:
    return "Haswell";
  case ISA_AVX:
    return "Sandybridge";
  default:
    return NULL;
  }
}
