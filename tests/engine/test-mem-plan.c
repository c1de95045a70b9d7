/* test-mem-plan.c: the memory plan bounds a run on the CPU backend (the contract of
 * mem-plan-contract.h): MLP with Dropout and CNN with BatchNorm and pooling, SGD,
 * momentum and AdamW, with and without clipping, training steps and an evaluation;
 * under no limit the run charges at most the plan, under a limit of exactly the plan
 * it runs at full batch, a byte under it halves. */
#include <glib.h>

#define CONTRACT_OK(ok, ...) contract_ok ((ok), __VA_ARGS__)
#define CONTRACT_NOTE(...) g_test_message (__VA_ARGS__)

static void contract_ok (gboolean ok, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

#include "mem-plan-contract.h"

static void
contract_ok (gboolean ok, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_test_message ("%s%s", ok ? "" : "FAILED: ", msg);
  if (!ok)
    g_test_fail ();
}

enum { THREADS = 2 };

static EsBackend *
make_cpu (EsBudget *budget)
{
  return es_cpu_backend_new (THREADS, budget, NULL);
}

/* What the plan counts that a run on this backend may leave unused: synchronized
 * BatchNorm's partial sums (3 floats for each of the CNN's 4 channels; no stat-reduce
 * hook here), and the convolution workspace of the threads the backend may not give a
 * small convolution (es-cpu.c gives fewer when the work is small; the plan counts them
 * all). The MLP's plan is exact. */
static size_t
cpu_slack (const EsMemPlan *plan, const EsTrainConfig *cfg, ContractModel which)
{
  (void) cfg;
  if (which == CONTRACT_CNN)
    return 3 * 4 * sizeof (float) + plan->workspace * (THREADS - 1) / THREADS;
  return 0;
}

static void
test_contract (gconstpointer data)
{
  ContractModel which = GPOINTER_TO_INT (data);
  const EsOptKind opts[] = { ES_OPT_SGD, ES_OPT_MOMENTUM, ES_OPT_ADAMW };

  for (guint o = 0; o < G_N_ELEMENTS (opts); o++)
    for (int clip = 0; clip < 2; clip++)
      {
        EsTrainConfig cfg;

        es_train_config_default (&cfg);
        cfg.optimizer = opts[o];
        cfg.lr = 0.01f;
        cfg.clip_norm = clip ? 1.0f : 0.0f;
        cfg.plan_threads = THREADS;
        contract_run (make_cpu, which, cfg, CONTRACT_EAGER, true, NULL, cpu_slack);
      }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/engine/mem-plan/contract/mlp", GINT_TO_POINTER (CONTRACT_MLP),
                        test_contract);
  g_test_add_data_func ("/engine/mem-plan/contract/cnn", GINT_TO_POINTER (CONTRACT_CNN),
                        test_contract);
  return g_test_run ();
}
