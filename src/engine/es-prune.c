/* es-prune.c: see es-prune.h. */
#include "es-prune.h"
