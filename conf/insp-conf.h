/* Config: written by the conf/ helper. */
#pragma once
#include <glib.h>
