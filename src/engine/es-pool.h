/* es-pool.h: the engine's one thread pool. es_pool_run calls fn (data, i, n) once for
 * every task index i in [0, n) and returns when all have returned; the calling thread
 * takes part. It is built for many short parallel regions (a training step of a small
 * MLP is ~100 us with ~8 regions): workers spin briefly on a generation counter, then
 * sleep on a condition variable, so a dispatch to awake workers costs well under a
 * microsecond and idle workers cost nothing. Every pool thread runs with FTZ/DAZ set
 * (es_pool_set_ftz turns it off for the denormal detector).
 *
 * Tasks are claimed, not assigned. Each thread first takes the task of its own index
 * (the caller is 0), so with everyone awake task i runs on thread i in every region
 * and finds its part of the data in its own cache; a task whose thread the OS has not
 * scheduled (2 cores, a data-loading thread, a compiler) is taken by whoever is free,
 * so a late worker never holds the caller up. So i is a task index, not a thread
 * identity: two tasks running at once always have different i, which is what
 * per-task scratch space needs.
 *
 * It is not a task queue: no stealing between runs, no futures, no nesting. A run
 * from inside a task, or from a second thread while a run is in progress, executes
 * the tasks on the calling thread in order, so fn must not wait for another task. */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct EsPool EsPool;

/* Tasks of one run, and threads of one pool (larger requests are clamped). */
#define ES_POOL_MAX_TASKS 32

/* One share of a parallel region: task index in [0, n_tasks). */
typedef void (*EsPoolFn) (void *data, int task_index, int n_tasks);

/* A pool of n_threads threads counting the caller (0: the number of online cores; at
 * most ES_POOL_MAX_TASKS), so n_threads - 1 are started. NULL and err set when a
 * thread cannot be started. */
EsPool *es_pool_new           (int n_threads, EsError *err);
/* Wakes and joins the workers. */
void    es_pool_free          (EsPool *pool);
int     es_pool_n_threads     (const EsPool *pool);
/* How long a worker spins for the next region before it sleeps (default 100 us, or
 * ESPALIER_POOL_SPIN_US from the environment when the pool is made). */
void    es_pool_set_spin_us   (EsPool *pool, int spin_us);

/* fn (data, i, n_threads) for i in [0, n_threads), as many at once as there are
 * threads free; returns after all have returned. */
void    es_pool_run           (EsPool *pool, EsPoolFn fn, void *data);
/* The same with n_tasks tasks (at most ES_POOL_MAX_TASKS). n_tasks 1 runs fn on the
 * caller without waking anyone; 0 does nothing. */
void    es_pool_run_n         (EsPool *pool, int n_tasks, EsPoolFn fn, void *data);

/* Flush-to-zero and denormals-are-zero (x86 MXCSR) on the pool's threads: on by
 * default. set records the choice (a fresh process-wide generation with it) and
 * applies it to the calling thread; each worker applies it when it wakes for a run,
 * before its first task, and es_pool_apply_ftz applies it to the calling thread when
 * the generation this thread applied last differs: a load and a compare otherwise, so
 * ops may call it on every entry. A NULL pool means FTZ on. */
void    es_pool_set_ftz       (EsPool *pool, bool on);
bool    es_pool_get_ftz       (const EsPool *pool);
void    es_pool_apply_ftz     (const EsPool *pool);

/* The number of online cores (at least 1). */
int     es_pool_online_cores  (void);

/* Part index of [0, n) cut into n_parts nearly equal chunks whose boundaries are
 * multiples of align (so vectors and cache lines are not shared), as [*begin, *end).
 * Parts past the end are empty. */
static inline void
es_pool_chunk (int64_t n, int64_t align, int index, int n_parts,
               int64_t *begin, int64_t *end)
{
  int64_t blocks, b0, b1;

  if (align < 1)
    align = 1;
  blocks = (n + align - 1) / align;
  b0 = blocks * index / n_parts;
  b1 = blocks * (index + 1) / n_parts;
  *begin = ES_MIN (b0 * align, n);
  *end = ES_MIN (b1 * align, n);
}

#ifdef __cplusplus
}
#endif
