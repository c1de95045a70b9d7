/* es-common.h: status codes, the error record and small helpers shared by every
 * engine file. The engine is plain C11 with libc, libm, pthreads and CBLAS: no GLib,
 * so it can be embedded, exported as C and run on a GPU machine without our Debian
 * libraries. Core turns an EsError into a GError. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_OK = 0,
  ES_ERR_INVALID,      /* a bad argument or option */
  ES_ERR_SHAPE,        /* shapes do not fit together */
  ES_ERR_NOMEM,        /* the system allocator failed */
  ES_ERR_BUDGET,       /* the memory budget would be exceeded */
  ES_ERR_IO,           /* reading or writing a file failed */
  ES_ERR_FORMAT,       /* a file is corrupt or not what it claims */
  ES_ERR_UNSUPPORTED,  /* the backend cannot run this op */
  ES_ERR_NUMERIC,      /* a loss or value became NaN or infinite */
  ES_ERR_CANCELLED,    /* the caller asked to stop */
} EsStatus;

/* An error a caller can show a user: a code and one sentence. Functions take an
 * `EsError *err` last; it may be NULL. On success it is left untouched. */
typedef struct {
  EsStatus code;
  char message[512];
} EsError;

void        es_error_set   (EsError *err, EsStatus code, const char *fmt, ...)
                            __attribute__ ((format (printf, 3, 4)));
void        es_error_clear (EsError *err);
const char *es_status_name (EsStatus code);

/* Translating the engine's messages without gettext in the engine: the embedder (core,
 * with dgettext) installs a hook that maps an English msgid to the user's language.
 * es_error_set passes its format through it before formatting, so a translation must
 * take the same arguments, in order or by position (%2$s) (msgfmt -c checks that, the
 * formats being marked c-format at extraction: po/meson.build). The hook must be thread-safe
 * and return a string that lives as long as the program (dgettext does both); it is
 * called on compute threads too. NULL (the default) leaves messages in English.
 * Set it once, before any engine work starts; setting it again while engine calls run
 * on other threads is safe (the pointer is atomic) but which hook they see is not
 * defined. A CUDA backend module has its own copy of the engine, so its own hook. */
typedef const char *(*EsTranslateFunc) (const char *msgid);

void        es_set_translate (EsTranslateFunc fn);
/* msgid through the hook, or msgid itself when none is set. For a fragment that is
 * formatted into a message (xgettext extracts es_translate's argument too). */
const char *es_translate     (const char *msgid)
                              __attribute__ ((format_arg (1)));

#define ES_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define ES_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ES_MAX(a, b) ((a) > (b) ? (a) : (b))
/* Output size of a convolution or pool along one axis: n input, k kernel, s stride, p pad. */
#ifndef ES_CONV_OUT
#define ES_CONV_OUT(n, k, s, p) (((n) + 2 * (p) - (k)) / (s) + 1)
#endif
#define ES_N_ELEMENTS(arr) (sizeof (arr) / sizeof ((arr)[0]))

/* Counter-based random numbers (splitmix64 of seed and index): the same stream on
 * every backend and thread count, so dropout masks and inits are reproducible. */
static inline uint64_t
es_hash64 (uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Uniform in [0, 1) from (seed, index). */
static inline double
es_rand_uniform (uint64_t seed, uint64_t index)
{
  return (double) (es_hash64 (seed ^ es_hash64 (index)) >> 11) * (1.0 / 9007199254740992.0);
}

/* A small sequential generator for shuffles and data generation. */
typedef struct { uint64_t state; } EsRng;

static inline uint64_t
es_rng_next (EsRng *rng)
{
  rng->state += 0x9e3779b97f4a7c15ull;
  return es_hash64 (rng->state);
}

static inline double
es_rng_uniform (EsRng *rng)
{
  return (double) (es_rng_next (rng) >> 11) * (1.0 / 9007199254740992.0);
}

double es_rng_normal (EsRng *rng);
/* Fisher-Yates shuffle of idx (n). */
void   es_shuffle    (int32_t *idx, size_t n, EsRng *rng);

/* Seconds from a monotonic clock. */
double es_now (void);

/* Set flush-to-zero and denormals-are-zero on the calling thread (x86 MXCSR). Every
 * compute thread calls it: Adam's state decays into denormals otherwise. */
void   es_set_ftz_daz (void);

#ifdef __cplusplus
}
#endif
