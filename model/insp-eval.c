/* insp-eval: not written yet. */
#include "insp-model.h"
