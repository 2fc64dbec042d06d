/* insp-train: not written yet. */
#include "insp-ops.h"
