/* es-qgemm.h: the int8 matrix products (uint8 activations times int8 weights into int32),
 * a scalar reference and run-time dispatched AVX2 and AVX-512 VNNI paths. */
#pragma once

#include "es-common.h"
