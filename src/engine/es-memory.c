/* es-memory.c: the memory budget, a mutex around per-kind byte counts, their sum, the
 * peak of that sum and an optional limit. It counts what allocators charge; it does not
 * allocate, so it is the same for the CPU and a GPU backend. */
#include "es-memory.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* Marks a msgid for the catalog without translating it (xgettext's N_ keyword,
 * po/meson.build): es_mem_kind_name's names are identifiers (JSON keys of the profile
 * report), which a user message translates with es_translate where it is built. */
#define N_(s) (s)

struct EsBudget {
  pthread_mutex_t mutex;
  size_t          limit;                  /* 0: no limit */
  size_t          used;                   /* sum of used_kind */
  size_t          peak;                   /* highest used so far */
  size_t          used_kind[ES_MEM_N_KINDS];
};

EsBudget *
es_budget_new (size_t limit)
{
  EsBudget *budget = calloc (1, sizeof *budget);

  if (budget == NULL)
    return NULL;
  pthread_mutex_init (&budget->mutex, NULL);
  budget->limit = limit;
  return budget;
}

void
es_budget_free (EsBudget *budget)
{
  if (budget == NULL)
    return;
  pthread_mutex_destroy (&budget->mutex);
  free (budget);
}

/* The getters lock a mutex inside a const object; the lock is not part of the value. */
static pthread_mutex_t *
budget_mutex (const EsBudget *budget)
{
  return (pthread_mutex_t *) &budget->mutex;
}

void
es_budget_set_limit (EsBudget *budget, size_t limit)
{
  if (budget == NULL)
    return;
  pthread_mutex_lock (&budget->mutex);
  budget->limit = limit;
  pthread_mutex_unlock (&budget->mutex);
}

size_t
es_budget_limit (const EsBudget *budget)
{
  size_t v;

  if (budget == NULL)
    return 0;
  pthread_mutex_lock (budget_mutex (budget));
  v = budget->limit;
  pthread_mutex_unlock (budget_mutex (budget));
  return v;
}

size_t
es_budget_used (const EsBudget *budget)
{
  size_t v;

  if (budget == NULL)
    return 0;
  pthread_mutex_lock (budget_mutex (budget));
  v = budget->used;
  pthread_mutex_unlock (budget_mutex (budget));
  return v;
}

size_t
es_budget_peak (const EsBudget *budget)
{
  size_t v;

  if (budget == NULL)
    return 0;
  pthread_mutex_lock (budget_mutex (budget));
  v = budget->peak;
  pthread_mutex_unlock (budget_mutex (budget));
  return v;
}

size_t
es_budget_used_kind (const EsBudget *budget, EsMemKind kind)
{
  size_t v;

  if (budget == NULL || (unsigned) kind >= ES_MEM_N_KINDS)
    return 0;
  pthread_mutex_lock (budget_mutex (budget));
  v = budget->used_kind[kind];
  pthread_mutex_unlock (budget_mutex (budget));
  return v;
}

bool
es_budget_charge (EsBudget *budget, EsMemKind kind, size_t bytes, EsError *err)
{
  size_t limit, used;

  if (budget == NULL)
    return true;
  if ((unsigned) kind >= ES_MEM_N_KINDS)
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown memory kind %d", (int) kind);
      return false;
    }

  pthread_mutex_lock (&budget->mutex);
  limit = budget->limit;
  used = budget->used;
  /* Written so that a huge request cannot wrap around. */
  if (limit != 0 && (bytes > limit || used > limit - bytes))
    {
      pthread_mutex_unlock (&budget->mutex);
      if (err != NULL)
        {
          char req[32], lim[32], in_use[32];

          es_format_bytes (req, sizeof req, (double) bytes);
          es_format_bytes (lim, sizeof lim, (double) limit);
          es_format_bytes (in_use, sizeof in_use, (double) used);
          es_error_set (err, ES_ERR_BUDGET,
                        "Allocating %s of %s would exceed the memory limit of %s "
                        "(%s already in use)", req, es_translate (es_mem_kind_name (kind)), lim,
                        in_use);
        }
      return false;
    }
  budget->used = used + bytes;
  budget->used_kind[kind] += bytes;
  if (budget->used > budget->peak)
    budget->peak = budget->used;
  pthread_mutex_unlock (&budget->mutex);
  return true;
}

void
es_budget_release (EsBudget *budget, EsMemKind kind, size_t bytes)
{
  if (budget == NULL || (unsigned) kind >= ES_MEM_N_KINDS)
    return;
  pthread_mutex_lock (&budget->mutex);
  /* Releasing more than was charged is a caller bug; clamp rather than wrap. */
  if (bytes > budget->used_kind[kind])
    bytes = budget->used_kind[kind];
  budget->used_kind[kind] -= bytes;
  budget->used -= bytes;
  pthread_mutex_unlock (&budget->mutex);
}

const char *
es_mem_kind_name (EsMemKind kind)
{
  switch (kind)
    {
    /* TRANSLATORS: kinds of memory, as in "Allocating 12 MB of weights would exceed ..." */
    case ES_MEM_WEIGHTS: return N_("weights");
    case ES_MEM_GRADIENTS: return N_("gradients");
    case ES_MEM_OPTIMIZER: return N_("optimizer state");
    case ES_MEM_ACTIVATIONS: return N_("activations");
    case ES_MEM_WORKSPACE: return N_("workspace");
    case ES_MEM_DATA: return N_("data");
    case ES_MEM_N_KINDS:
    default: return N_("unknown");
    }
}

/* Decimal units, as GNOME shows sizes (g_format_size): 1 kB = 1000 bytes. */
const char *
es_format_bytes (char *buf, size_t size, double bytes)
{
  static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
  double v = bytes;
  int u = -1;

  if (buf == NULL || size == 0)
    return buf;
  if (v < 0)
    v = 0;
  if (v < 1000.0)
    {
      snprintf (buf, size, "%.0f bytes", v);
      return buf;
    }
  while (v >= 1000.0 && u + 1 < (int) ES_N_ELEMENTS (units))
    {
      v /= 1000.0;
      u++;
    }
  /* 999.96 kB would print as "1000.0 kB": move to the next unit instead. */
  if (v >= 999.95 && u + 1 < (int) ES_N_ELEMENTS (units))
    {
      v /= 1000.0;
      u++;
    }
  snprintf (buf, size, "%.1f %s", v, units[u]);
  return buf;
}
