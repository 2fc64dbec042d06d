/* insp-safetensors: not written yet. */
#include "insp-safetensors.h"
