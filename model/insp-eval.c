/* insp-eval: not written yet. */
#include "insp-ops.h"
