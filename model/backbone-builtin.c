/* backbone-builtin: not written yet. */
#include "insp-backbone.h"
