/* backbone-resnet: not written yet. */
#include "insp-backbone.h"
