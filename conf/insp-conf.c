#include "insp-conf.h"
