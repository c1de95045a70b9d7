/* es-pool.c: the thread pool of es-pool.h.
 *
 * One 64-bit atomic word holds the run: generation (24 bits), number of tasks (8) and
 * a bit per task already claimed (32). A run stores fn and data and publishes a new
 * word; every thread (workers and the caller) then claims tasks by setting their bits
 * with a compare-and-swap until none are left, and the caller waits until the done
 * count reaches the number of tasks. Each thread first tries the task of its own index
 * (the caller is 0, worker i is i), so with everyone awake task i always runs on
 * thread i and finds in its cache the rows it had in the last region (the backend cuts
 * weights, gradients and optimizer state the same way in every op); a late thread's
 * task is taken by whoever is free. Because the generation is in the same word as the
 * bits, a worker that wakes late can never claim a task of the wrong run, and it reads
 * fn and data only after a successful claim, which the caller cannot outrun (it waits
 * for that task before it publishes again).
 *
 * Waits (workers for a new run, the caller for the last task) spin for spin_ns with a
 * pause instruction, then sleep on a condition variable. Sleepers announce themselves
 * in an atomic counter read after the matching store (a Dekker pair of sequentially
 * consistent atomics), so a waker takes the mutex only when somebody sleeps and no
 * wake-up is lost.
 *
 * FTZ/DAZ: the pool's setting is one atomic word, (generation << 1) | on, with a
 * generation unique in the process (a counter shared by all pools), and each thread
 * remembers in a thread-local the word it applied last. A worker compares the two when
 * it wakes for a run (the setting changes only between runs, on the driving thread,
 * and the run's publication orders it), so MXCSR is written only when the setting or
 * the pool changed.
 *
 * Not here: work queues, priorities, affinity to cores. */
#include "es-pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define ES_POOL_DEFAULT_SPIN_US 100
#define ES_CLAMP_SPIN(us) ((us) < 0 ? 0 : (us) > 1000000 ? 1000000 : (us))

#define GEN_MASK 0xffffffu
#define STATE(gen, n, claimed) \
  (((uint64_t) ((gen) & GEN_MASK) << 40) | ((uint64_t) (n) << 32) | (uint64_t) (claimed))
#define STATE_GEN(s)     ((uint32_t) ((s) >> 40))
#define STATE_N(s)       ((uint32_t) (((s) >> 32) & 0xff))
#define STATE_CLAIMED(s) ((uint32_t) (s))

typedef struct {
  EsPool *pool;
  int     index;                  /* 1 .. n_threads - 1; the caller is 0 */
} EsPoolWorker;

struct EsPool {
  int              n_threads;     /* counting the caller */
  pthread_t       *threads;       /* (n_threads - 1) */
  EsPoolWorker    *workers;       /* (n_threads - 1) */
  _Atomic int64_t  spin_ns;       /* may change while workers spin */
  uint32_t         gen;           /* the caller's copy of the last generation (24 bits) */

  /* One dispatcher at a time; others (and nested runs) go serial. */
  pthread_mutex_t  dispatch_lock;

  /* The current run; written before the state word is published. */
  EsPoolFn         fn;
  void            *data;
  atomic_bool      stop;          /* read by a late worker while a run is published */
  _Atomic uint64_t ftz;           /* (unique generation << 1) | FTZ/DAZ on */

  /* Each hot word on its own cache line. */
  alignas (64) _Atomic uint64_t state;
  alignas (64) atomic_uint      done;          /* tasks finished in this run */
  alignas (64) atomic_int       n_sleepers;    /* workers asleep on wake_cond */
  atomic_int                    caller_asleep; /* the caller sleeps on done_cond */

  alignas (64) pthread_mutex_t  sleep_lock;
  pthread_cond_t                wake_cond;
  pthread_cond_t                done_cond;
};

/* FTZ/DAZ generations, unique across the process's pools. */
static _Atomic uint64_t ftz_generations;
/* The pool setting word this thread applied last (0: none yet). */
static _Thread_local uint64_t thread_ftz;

/* MXCSR's FTZ (bit 15) and DAZ (bit 6) set or cleared on the calling thread. */
static void
write_ftz_daz (bool on)
{
#if defined(__SSE__)
  unsigned csr = _mm_getcsr ();

  _mm_setcsr (on ? csr | 0x8040u : csr & ~0x8040u);
#else
  (void) on;
#endif
}

static uint64_t
ftz_word (bool on)
{
  return ((atomic_fetch_add (&ftz_generations, 1) + 1) << 1) | (on ? 1u : 0u);
}

void
es_pool_apply_ftz (const EsPool *pool)
{
  uint64_t w;

  if (pool == NULL)
    {
      if (thread_ftz != 1)
        {
          write_ftz_daz (true);
          thread_ftz = 1;  /* generation 0, on: no pool uses it */
        }
      return;
    }
  w = atomic_load_explicit (&((EsPool *) pool)->ftz, memory_order_relaxed);
  if (w != thread_ftz)
    {
      write_ftz_daz ((w & 1u) != 0);
      thread_ftz = w;
    }
}

void
es_pool_set_ftz (EsPool *pool, bool on)
{
  if (pool == NULL)
    return;
  atomic_store_explicit (&pool->ftz, ftz_word (on), memory_order_relaxed);
  es_pool_apply_ftz (pool);
}

bool
es_pool_get_ftz (const EsPool *pool)
{
  return pool == NULL
         || (atomic_load_explicit (&((EsPool *) pool)->ftz, memory_order_relaxed) & 1u) != 0;
}

static inline void
cpu_relax (void)
{
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause ();
#elif defined(__aarch64__)
  __asm__ __volatile__ ("yield");
#endif
}

static inline int64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin until the clock passes spin_ns from the first check: true while still spinning. */
static inline bool
keep_spinning (const EsPool *pool, unsigned i, int64_t *deadline)
{
  int64_t t;

  cpu_relax ();
  if ((i & 127) != 0)
    return true;
  t = now_ns ();
  if (*deadline == 0)
    *deadline = t + atomic_load_explicit (&pool->spin_ns, memory_order_relaxed);
  return t < *deadline;
}

/* Wait until the generation differs from seen: spin, then sleep. Returns it. */
static uint32_t
wait_for_generation (EsPool *pool, uint32_t seen)
{
  int64_t deadline = 0;
  uint32_t g;

  for (unsigned i = 1;; i++)
    {
      g = STATE_GEN (atomic_load_explicit (&pool->state, memory_order_acquire));
      if (g != seen)
        return g;
      if (!keep_spinning (pool, i, &deadline))
        break;
    }

  pthread_mutex_lock (&pool->sleep_lock);
  atomic_fetch_add (&pool->n_sleepers, 1);
  while ((g = STATE_GEN (atomic_load (&pool->state))) == seen)
    pthread_cond_wait (&pool->wake_cond, &pool->sleep_lock);
  atomic_fetch_sub (&pool->n_sleepers, 1);
  pthread_mutex_unlock (&pool->sleep_lock);
  return g;
}

/* Claim and run tasks of generation gen until none are left, self's own first. */
static void
run_tasks (EsPool *pool, uint32_t gen, int self)
{
  uint64_t st = atomic_load_explicit (&pool->state, memory_order_acquire);

  for (;;)
    {
      const uint32_t n = STATE_N (st);
      const uint32_t all = n >= 32 ? 0xffffffffu : (1u << n) - 1;
      const uint32_t open = all & ~STATE_CLAIMED (st);
      int k;

      if (STATE_GEN (st) != gen || open == 0)
        return;
      k = (uint32_t) self < n && (open & (1u << self)) ? self : __builtin_ctz (open);
      if (!atomic_compare_exchange_weak_explicit (&pool->state, &st, st | (1u << k),
                                                  memory_order_acquire,
                                                  memory_order_acquire))
        continue;  /* st now holds the current word */
      pool->fn (pool->data, k, (int) n);
      if (atomic_fetch_add (&pool->done, 1) + 1 == n && atomic_load (&pool->caller_asleep))
        {
          pthread_mutex_lock (&pool->sleep_lock);
          pthread_cond_signal (&pool->done_cond);
          pthread_mutex_unlock (&pool->sleep_lock);
        }
      st = atomic_load_explicit (&pool->state, memory_order_acquire);
    }
}

static void *
worker_main (void *arg)
{
  EsPoolWorker *w = arg;
  EsPool *pool = w->pool;
  uint32_t seen = 0;

  es_pool_apply_ftz (pool);
  for (;;)
    {
      seen = wait_for_generation (pool, seen);
      if (atomic_load_explicit (&pool->stop, memory_order_relaxed))
        break;
      es_pool_apply_ftz (pool);
      run_tasks (pool, seen, w->index);
    }
  return NULL;
}

/* Publish a run of n tasks (or the stop order, n = 0) and wake up to `wake` sleepers. */
static void
publish (EsPool *pool, uint32_t n, int wake)
{
  int sleepers;

  atomic_store_explicit (&pool->done, 0, memory_order_relaxed);
  pool->gen = (pool->gen + 1) & GEN_MASK;
  atomic_store (&pool->state, STATE (pool->gen, n, 0));
  sleepers = atomic_load (&pool->n_sleepers);
  if (sleepers > 0 && wake > 0)
    {
      pthread_mutex_lock (&pool->sleep_lock);
      if (wake >= sleepers)
        pthread_cond_broadcast (&pool->wake_cond);
      else
        for (int k = 0; k < wake; k++)
          pthread_cond_signal (&pool->wake_cond);
      pthread_mutex_unlock (&pool->sleep_lock);
    }
}

static void
wait_for_tasks (EsPool *pool, uint32_t n)
{
  int64_t deadline = 0;

  for (unsigned i = 1;; i++)
    {
      if (atomic_load_explicit (&pool->done, memory_order_acquire) == n)
        return;
      if (!keep_spinning (pool, i, &deadline))
        break;
    }

  pthread_mutex_lock (&pool->sleep_lock);
  atomic_store (&pool->caller_asleep, 1);
  while (atomic_load (&pool->done) != n)
    pthread_cond_wait (&pool->done_cond, &pool->sleep_lock);
  atomic_store (&pool->caller_asleep, 0);
  pthread_mutex_unlock (&pool->sleep_lock);
}

int
es_pool_online_cores (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : (int) ES_MIN (n, 1024);
}

EsPool *
es_pool_new (int n_threads, EsError *err)
{
  EsPool *pool;

  if (n_threads <= 0)
    n_threads = es_pool_online_cores ();
  if (n_threads > ES_POOL_MAX_TASKS)
    n_threads = ES_POOL_MAX_TASKS;

  pool = aligned_alloc (64, ES_CEIL_DIV (sizeof (EsPool), 64) * 64);
  if (pool == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating a thread pool");
      return NULL;
    }
  memset (pool, 0, sizeof *pool);
  pool->n_threads = n_threads;
  {
    /* ESPALIER_POOL_SPIN_US overrides the default, for measurements */
    const char *env = getenv ("ESPALIER_POOL_SPIN_US");
    long us = env != NULL ? strtol (env, NULL, 10) : ES_POOL_DEFAULT_SPIN_US;

    atomic_init (&pool->spin_ns, (int64_t) ES_CLAMP_SPIN (us) * 1000);
  }
  pthread_mutex_init (&pool->dispatch_lock, NULL);
  pthread_mutex_init (&pool->sleep_lock, NULL);
  pthread_cond_init (&pool->wake_cond, NULL);
  pthread_cond_init (&pool->done_cond, NULL);
  atomic_init (&pool->stop, false);
  atomic_init (&pool->state, 0);
  atomic_init (&pool->done, 0);
  atomic_init (&pool->n_sleepers, 0);
  atomic_init (&pool->caller_asleep, 0);
  atomic_init (&pool->ftz, ftz_word (true));

  es_pool_apply_ftz (pool);
  if (n_threads == 1)
    return pool;

  pool->threads = calloc ((size_t) n_threads - 1, sizeof *pool->threads);
  pool->workers = calloc ((size_t) n_threads - 1, sizeof *pool->workers);
  if (pool->threads == NULL || pool->workers == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating a thread pool");
      pool->n_threads = 1;
      es_pool_free (pool);
      return NULL;
    }
  for (int i = 1; i < n_threads; i++)
    {
      int rc;

      pool->workers[i - 1].pool = pool;
      pool->workers[i - 1].index = i;
      rc = pthread_create (&pool->threads[i - 1], NULL, worker_main, &pool->workers[i - 1]);
      if (rc != 0)
        {
          es_error_set (err, ES_ERR_NOMEM, "Could not start compute thread %d of %d: %s",
                        i, n_threads - 1, strerror (rc));
          pool->n_threads = i;  /* the ones started, to be stopped */
          es_pool_free (pool);
          return NULL;
        }
#ifdef __GLIBC__
      {
        char name[16];

        snprintf (name, sizeof name, "es-worker-%d", i % 10000);
        pthread_setname_np (pool->threads[i - 1], name);
      }
#endif
    }
  return pool;
}

void
es_pool_free (EsPool *pool)
{
  if (pool == NULL)
    return;
  if (pool->n_threads > 1)
    {
      pthread_mutex_lock (&pool->dispatch_lock);
      atomic_store_explicit (&pool->stop, true, memory_order_relaxed);
      publish (pool, 0, pool->n_threads);
      for (int i = 1; i < pool->n_threads; i++)
        pthread_join (pool->threads[i - 1], NULL);
      pthread_mutex_unlock (&pool->dispatch_lock);
    }
  free (pool->threads);
  free (pool->workers);
  pthread_cond_destroy (&pool->wake_cond);
  pthread_cond_destroy (&pool->done_cond);
  pthread_mutex_destroy (&pool->sleep_lock);
  pthread_mutex_destroy (&pool->dispatch_lock);
  free (pool);
}

int
es_pool_n_threads (const EsPool *pool)
{
  return pool != NULL ? pool->n_threads : 1;
}

void
es_pool_set_spin_us (EsPool *pool, int spin_us)
{
  if (pool != NULL)
    atomic_store_explicit (&pool->spin_ns, (int64_t) ES_MAX (spin_us, 0) * 1000,
                           memory_order_relaxed);
}

void
es_pool_run_n (EsPool *pool, int n_tasks, EsPoolFn fn, void *data)
{
  if (n_tasks <= 0)
    return;
  if (n_tasks > ES_POOL_MAX_TASKS)
    n_tasks = ES_POOL_MAX_TASKS;
  if (pool == NULL || pool->n_threads == 1 || n_tasks == 1
      || pthread_mutex_trylock (&pool->dispatch_lock) != 0)
    {
      /* Serial: one task, one thread, or nested / another thread holds the pool. */
      es_pool_apply_ftz (pool);
      for (int i = 0; i < n_tasks; i++)
        fn (data, i, n_tasks);
      return;
    }

  pool->fn = fn;
  pool->data = data;
  publish (pool, (uint32_t) n_tasks, n_tasks - 1);
  es_pool_apply_ftz (pool);
  run_tasks (pool, pool->gen, 0);
  wait_for_tasks (pool, (uint32_t) n_tasks);
  pthread_mutex_unlock (&pool->dispatch_lock);
}

void
es_pool_run (EsPool *pool, EsPoolFn fn, void *data)
{
  es_pool_run_n (pool, pool != NULL ? pool->n_threads : 1, fn, data);
}
