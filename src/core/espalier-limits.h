/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-limits.h: how much memory a load may take, asked before it allocates.
 *
 * The loaders of user files (IDX and CSV datasets, model files, model spec strings,
 * projects) ask here before an allocation that grows with what a file's header or size
 * claims, so that a huge or corrupt file is refused with the size it would need instead
 * of exhausting the machine. This is a guard against the impossible, not an accountant:
 * the engine's memory budget (es-memory.h) does the accounting while training.
 *
 * The jobs (training, evaluation, optimization) ask here too: before a run, whether the
 * least it can take fits (espalier_limits_check_training), and for their own big buffers
 * an allocation that fails with a GError instead of aborting (espalier_try_alloc), so
 * that running out of memory ends the job with a message and the application lives. */
#pragma once

#include <glib.h>

#include "es-train.h"

G_BEGIN_DECLS

/* Bytes this process can still get: the system's MemAvailable plus free swap, within
 * what its memory cgroup (v2 memory.max, v1 memory.limit_in_bytes) and RLIMIT_AS
 * leave. The environment variable ESPALIER_MEMORY_AVAILABLE (bytes) replaces the
 * figure, to try a small machine (tests and the fuzz harnesses do). G_MAXUINT64 when
 * nothing is known. */
guint64   espalier_memory_available (void);

/* Whether need bytes fit both limit (a memory limit in bytes, 0: none) and
 * espalier_memory_available(). When they do not, *why (may be NULL; g_free it) is the
 * end of a sentence saying so, for the caller's message: "needs 1.0 TB of memory, more
 * than the 23.4 GB available" or "... more than the memory limit of 1.0 MB". */
gboolean  espalier_memory_fits      (guint64      need,
                                     guint64      limit,
                                     char       **why);

/* n_elems * elem_size bytes (zeroed when zero is TRUE; free with g_free), or NULL with
 * ESPALIER_ERROR_MEMORY naming what ("the batch buffers") and the size when the product
 * overflows, does not fit espalier_memory_available(), or the allocator refuses. Never
 * aborts. A request of 0 bytes returns a 1-byte block. */
gpointer  espalier_try_alloc        (gsize        n_elems,
                                     gsize        elem_size,
                                     gboolean     zero,
                                     const char  *what,
                                     GError     **error);

/* A copy of model (es_model_copy), or NULL with ESPALIER_ERROR_MEMORY naming what ("the
 * best weights") and the size when its weights and buffers do not fit
 * espalier_memory_available() or the allocator refuses. Never aborts. */
EsModel  *espalier_model_try_copy   (const EsModel *model,
                                     const char    *what,
                                     GError       **error);

/* Before a training run of model (cfg, batches of batch rows) with extra bytes of the
 * caller's own (batch buffers, a copy of the best weights): whether the least the run
 * can take (es_mem_plan at one row, plus extra) fits espalier_memory_available(). When it
 * does not, FALSE with ESPALIER_ERROR_MEMORY saying how much it needs and how much there
 * is; nothing was allocated. When only the full batch does not fit, *budget_limit (the
 * engine budget in bytes, 0: none) is lowered to what is available, so that the engine
 * splits batches into micro-batches (es-train.h) instead of failing. */
gboolean  espalier_limits_check_training (const EsModel       *model,
                                          const EsTrainConfig *cfg,
                                          guint                batch,
                                          guint64              extra,
                                          gsize               *budget_limit,
                                          GError             **error);

G_END_DECLS
