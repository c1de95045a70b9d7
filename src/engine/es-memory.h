/* es-memory.h: the memory budget. Every engine allocation that scales with the model
 * or the batch is charged to a budget by kind, so a limit is enforced before work
 * starts and the plan can be printed. Thread-safe. */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_MEM_WEIGHTS,
  ES_MEM_GRADIENTS,
  ES_MEM_OPTIMIZER,
  ES_MEM_ACTIVATIONS,
  ES_MEM_WORKSPACE,
  ES_MEM_DATA,
  ES_MEM_N_KINDS
} EsMemKind;

typedef struct EsBudget EsBudget;

/* limit in bytes; 0 means no limit. */
EsBudget   *es_budget_new       (size_t limit);
void        es_budget_free      (EsBudget *budget);
void        es_budget_set_limit (EsBudget *budget, size_t limit);
size_t      es_budget_limit     (const EsBudget *budget);
size_t      es_budget_used      (const EsBudget *budget);
size_t      es_budget_peak      (const EsBudget *budget);
size_t      es_budget_used_kind (const EsBudget *budget, EsMemKind kind);
/* Charge bytes of kind; false and err (ES_ERR_BUDGET) when the limit would be passed.
 * A NULL budget accepts everything. */
bool        es_budget_charge    (EsBudget *budget, EsMemKind kind, size_t bytes,
                                 EsError *err);
void        es_budget_release   (EsBudget *budget, EsMemKind kind, size_t bytes);
const char *es_mem_kind_name    (EsMemKind kind);

/* Format bytes as "12.3 MB" into buf. */
const char *es_format_bytes     (char *buf, size_t size, double bytes);

#ifdef __cplusplus
}
#endif
