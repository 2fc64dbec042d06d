/* The error domain of pipeline/ (insp-pipeline-error.h). Threads: any. */
#include "insp-pipeline-error.h"

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-pipeline-error-quark, insp_pipeline_error)
/* clang-format on */
