/* insp-patchcore: not written yet. */
#include "insp-ops.h"
