/* es-ref.c: instantiates the reference kernels of es-ref.h for float (_f32) and
 * double (_f64) from the one generic source, es-ref-impl.h. Nothing else lives here:
 * no dispatch, no threading, no checks (see es-ref-impl.h for why). */
#include "es-ref.h"
#include "es-quant.h"   /* the quantization arithmetic the fake-quant kernels use */

#include <math.h>

#define T float
#define SFX f32
#define ES_REF_EXP expf
#define ES_REF_LOG logf
#define ES_REF_LOG1P log1pf
#define ES_REF_SQRT sqrtf
#define ES_REF_TANH tanhf
#define ES_REF_FABS fabsf
#include "es-ref-impl.h"

#define T double
#define SFX f64
#define ES_REF_EXP exp
#define ES_REF_LOG log
#define ES_REF_LOG1P log1p
#define ES_REF_SQRT sqrt
#define ES_REF_TANH tanh
#define ES_REF_FABS fabs
#include "es-ref-impl.h"
