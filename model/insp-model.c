/* insp-model: not written yet. */
#include "insp-model.h"
