/* Which kernels OpenBLAS runs on this CPU.
 *
 * OpenBLAS (a DYNAMIC_ARCH build such as Debian's) picks its kernels by CPU
 * model once, when the library is loaded. A CPU newer than the build knows
 * gets a generic fallback: Debian 12's OpenBLAS 0.3.21 on an Intel family 6
 * model 207 (AVX-512, BF16) runs its Prescott (SSE3) kernels, a fifth of
 * the sgemm speed its SkylakeX kernels reach on the same CPU. The choice can
 * only be changed through OPENBLAS_CORETYPE in the environment before the
 * library loads, so inspectd's main() re-executes itself with it set
 * (insp_blas_core_to_request) unless the user set it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The core OpenBLAS runs ("Prescott", "SkylakeX", ...), "unknown" when the
 * library does not say. */
const char *insp_blas_core(void);

/* The core to request with OPENBLAS_CORETYPE: the fastest known core whose
 * instructions this CPU has (SkylakeX with AVX-512 F/BW/VL/DQ/CD, Haswell
 * with AVX2 and FMA, Sandybridge with AVX), when OpenBLAS chose a
 * core of an older instruction set; NULL when its own choice stands (it is
 * as good, the CPU has no wider instruction set, or the core is one this
 * table does not rank). */
const char *insp_blas_core_to_request(void);

/* The environment variable main() sets, to the core OpenBLAS had chosen
 * itself, when it re-executes with OPENBLAS_CORETYPE (so that run can say
 * so in the journal and --version can show it). */
#define INSP_BLAS_REPLACED_ENV "INSP_OPENBLAS_REPLACED_CORE"

G_END_DECLS
