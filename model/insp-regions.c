/* insp-regions: not written yet. */
#include "insp-ops.h"
