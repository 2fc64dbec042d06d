/* backbone-mobilenetv2: not written yet. */
#include "insp-backbone.h"
