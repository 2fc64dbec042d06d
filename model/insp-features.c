/* insp-features: not written yet. */
#include "insp-model.h"
