/* es-quant.c: see es-quant.h. */
#include "es-quant.h"
