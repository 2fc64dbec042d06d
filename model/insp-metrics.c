/* insp-metrics: not written yet. */
#include "insp-ops.h"
