/* insp-ops-map: not written yet. */
#include "insp-ops.h"
