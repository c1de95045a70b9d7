/* es-sparse.c: see es-sparse.h. */
#include "es-sparse.h"
