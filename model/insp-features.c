/* insp-features: not written yet. */
#include "insp-ops.h"
