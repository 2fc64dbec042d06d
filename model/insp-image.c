/* insp-image: not written yet. */
#include "insp-image.h"
