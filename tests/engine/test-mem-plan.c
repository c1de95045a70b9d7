/* test-mem-plan.c: the memory plan bounds a run on the CPU backend (the contract of
 * mem-plan-contract.h): MLP with Dropout and CNN with BatchNorm and pooling, SGD,
 * momentum and AdamW, with and without clipping, training steps and an evaluation;
 * under no limit the run charges at most the plan, under a limit of exactly the plan
 * it runs at full batch, a byte under it halves. Inference (EsInfer) the same way on
 * those two and a convolution feeding a wide Dense layer, at one row and at 128 (where
 * the backend packs the weights of Dense layers of 48 outputs or more), on one thread
 * and two: under no limit at most the plan, under exactly the plan the same workspaces
 * taken, a byte under refused or run without the workspace. */
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

static EsBackend *
make_cpu_1 (EsBudget *budget)
{
  return es_cpu_backend_new (1, budget, NULL);
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

/* Conv2D 8 3x3, ReLU, Flatten, Dense 64, ReLU, Dense 10, Softmax on the contract's
 * 12x12 images: the Dense layer's packed copies (1152 inputs) and the convolution's
 * columns share the CPU backend's one workspace. */
static EsModel *
conv_dense_model (void)
{
  EsShape in = { 3, { 1, 12, 12 } };
  EsLayerSpec l[7];
  EsModel *m;
  int n = 0;

  l[n] = es_layer_spec_default (ES_LAYER_CONV2D);
  l[n].filters = 8;
  l[n].kernel = 3;
  l[n++].padding = 1;
  l[n++] = es_layer_spec_default (ES_LAYER_RELU);
  l[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 64;
  l[n++] = es_layer_spec_default (ES_LAYER_RELU);
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = CONTRACT_C;
  l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, n, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 12);
  return m;
}

/* What the inference plan counts that a run may leave unused: the packed copies and
 * convolution columns of the threads a small product does not get (es-cpu.c splits a
 * product only where each thread has enough work; the plan counts every thread). That
 * is at most the plan at cfg's threads over the plan on one. */
static size_t
infer_slack (const EsModel *m, const EsTrainConfig *cfg, int B)
{
  EsTrainConfig one = *cfg;
  EsMemPlan all, least;

  one.plan_threads = 1;
  es_mem_plan (m, cfg, B, false, &all);
  es_mem_plan (m, &one, B, false, &least);
  return all.total - least.total;
}

static void
test_infer (gconstpointer data)
{
  int which = GPOINTER_TO_INT (data);
  const char *name = which < CONTRACT_N_MODELS ? contract_model_names[which] : "conv-dense";
  EsModel *m = which < CONTRACT_N_MODELS ? contract_model ((ContractModel) which)
                                         : conv_dense_model ();
  const int threads[] = { 1, THREADS }, batches[] = { 1, 128 };

  g_assert_nonnull (m);
  for (guint t = 0; t < G_N_ELEMENTS (threads); t++)
    for (guint b = 0; b < G_N_ELEMENTS (batches); b++)
      {
        EsTrainConfig cfg;

        es_train_config_default (&cfg);
        cfg.plan_threads = threads[t];
        contract_infer_run (threads[t] == 1 ? make_cpu_1 : make_cpu, name, m, &cfg,
                            batches[b], true, infer_slack (m, &cfg, batches[b]));
      }
  es_model_free (m);
}

/* The packed copies are in the inference plan where the backend packs: the MLP's
 * first Dense layer (144 -> 48) at 128 rows, on CPUs whose products run on the
 * backend's AVX-512 kernels. Their bytes, as es-cpu.c lays them out: the 48 columns
 * (a multiple of 16) by 144 inputs and the bias, per thread, the workspace in steps of
 * 64 KiB; at 95 rows there are none. */
static void
test_infer_packed (void)
{
  EsModel *m = contract_model (CONTRACT_MLP);
  EsTrainConfig cfg;
  EsMemPlan at128, at95;
  size_t copies = (size_t) 48 * (144 + 1) * sizeof (float) * THREADS;

  es_train_config_default (&cfg);
  cfg.plan_threads = THREADS;
  es_mem_plan (m, &cfg, 128, false, &at128);
  es_mem_plan (m, &cfg, 95, false, &at95);
  es_model_free (m);
  g_assert_cmpuint (at95.workspace, ==, 0);
  if (g_strcmp0 (es_cpu_backend_gemm_path (), "avx512") != 0)
    {
      g_assert_cmpuint (at128.workspace, ==, 0);
      g_test_skip ("this CPU's products run on CBLAS: nothing is packed");
      return;
    }
  g_assert_cmpuint (at128.workspace, ==, (copies + 65535) / 65536 * 65536);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/engine/mem-plan/contract/mlp", GINT_TO_POINTER (CONTRACT_MLP),
                        test_contract);
  g_test_add_data_func ("/engine/mem-plan/contract/cnn", GINT_TO_POINTER (CONTRACT_CNN),
                        test_contract);
  g_test_add_data_func ("/engine/mem-plan/infer/mlp", GINT_TO_POINTER (CONTRACT_MLP),
                        test_infer);
  g_test_add_data_func ("/engine/mem-plan/infer/cnn", GINT_TO_POINTER (CONTRACT_CNN),
                        test_infer);
  g_test_add_data_func ("/engine/mem-plan/infer/conv-dense",
                        GINT_TO_POINTER (CONTRACT_N_MODELS), test_infer);
  g_test_add_func ("/engine/mem-plan/infer/packed", test_infer_packed);
  return g_test_run ();
}
