/* insp-backbone: not written yet. */
#include "insp-backbone.h"
