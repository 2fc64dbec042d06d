/* insp-padim: not written yet. */
#include "insp-ops.h"
