/* insp-train: not written yet. */
#include "insp-model.h"
