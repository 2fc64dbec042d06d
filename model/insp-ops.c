/* insp-ops: not written yet. */
#include "insp-ops.h"
