/* insp-patchcore: not written yet. */
#include "insp-model.h"
