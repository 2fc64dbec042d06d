/* insp-model: not written yet. */
#include "insp-ops.h"
