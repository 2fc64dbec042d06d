/* insp-regions: not written yet. */
#include "insp-model.h"
