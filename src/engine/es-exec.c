/* es-exec.c: see es-exec.h. */
#include "es-exec.h"
