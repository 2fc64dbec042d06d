/* insp-padim: not written yet. */
#include "insp-model.h"
