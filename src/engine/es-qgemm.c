/* es-qgemm.c: see es-qgemm.h. */
#include "es-qgemm.h"
