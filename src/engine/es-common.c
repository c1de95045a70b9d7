/* es-common.c: error records, random helpers, clock and FTZ/DAZ for the engine. */
#include "es-common.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* The message-translation hook (es_set_translate); NULL: English. */
static _Atomic (EsTranslateFunc) translate_hook;

void
es_set_translate (EsTranslateFunc fn)
{
  atomic_store_explicit (&translate_hook, fn, memory_order_release);
}

const char *
es_translate (const char *msgid)
{
  EsTranslateFunc fn = atomic_load_explicit (&translate_hook, memory_order_acquire);
  const char *s;

  if (fn == NULL || msgid == NULL)
    return msgid;
  s = fn (msgid);
  return s != NULL ? s : msgid;
}

void
es_error_set (EsError *err, EsStatus code, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL)
    return;
  err->code = code;
  va_start (ap, fmt);
  /* The format was checked at every call site; its translation was checked by msgfmt -c. */
  vsnprintf (err->message, sizeof err->message, es_translate (fmt), ap);
  va_end (ap);
}

void
es_error_clear (EsError *err)
{
  if (err == NULL)
    return;
  err->code = ES_OK;
  err->message[0] = '\0';
}

const char *
es_status_name (EsStatus code)
{
  switch (code)
    {
    case ES_OK: return "ok";
    case ES_ERR_INVALID: return "invalid argument";
    case ES_ERR_SHAPE: return "shape mismatch";
    case ES_ERR_NOMEM: return "out of memory";
    case ES_ERR_BUDGET: return "memory budget exceeded";
    case ES_ERR_IO: return "input/output error";
    case ES_ERR_FORMAT: return "bad file format";
    case ES_ERR_UNSUPPORTED: return "unsupported";
    case ES_ERR_NUMERIC: return "numeric error";
    case ES_ERR_CANCELLED: return "cancelled";
    default: return "unknown error";
    }
}

double
es_rng_normal (EsRng *rng)
{
  /* Box-Muller; u1 is kept away from 0. */
  double u1 = es_rng_uniform (rng);
  double u2 = es_rng_uniform (rng);

  if (u1 < 1e-300)
    u1 = 1e-300;
  return sqrt (-2.0 * log (u1)) * cos (2.0 * M_PI * u2);
}

void
es_shuffle (int32_t *idx, size_t n, EsRng *rng)
{
  for (size_t i = n; i > 1; i--)
    {
      size_t j = (size_t) (es_rng_next (rng) % i);
      int32_t t = idx[i - 1];
      idx[i - 1] = idx[j];
      idx[j] = t;
    }
}

double
es_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

void
es_set_ftz_daz (void)
{
#if defined(__SSE__)
  /* FTZ is bit 15, DAZ bit 6 of MXCSR. */
  _mm_setcsr (_mm_getcsr () | 0x8040);
#endif
}
