/* test-cuda-memplan.c: the memory plan bounds a run on the CUDA backend (the contract
 * of tests/engine/mem-plan-contract.h, whose CPU half is tests/engine/test-mem-plan.c):
 * MLP with Dropout and CNN with BatchNorm and pooling, SGD, momentum and AdamW, fp32,
 * bf16 and fp16, eager steps and steps with deferred statistics, uploads ahead and CUDA
 * Graphs, each with an evaluation that brings predictions back. Under a limit of
 * exactly the plan (on top of the backend's own buffers) the run takes the whole batch,
 * goes through and runs no product in fp32; a byte under, the micro-batch halves.
 * Plain C with cuda-tap.h: built on the emulation here and for a GPU machine. */
#include "cuda-tap.h"

#define CONTRACT_OK(ok, ...) tap_ok ((ok), __VA_ARGS__)
#define CONTRACT_NOTE(...) tap_diag (__VA_ARGS__)

#include "../engine/mem-plan-contract.h"

static EsBackend *
make_cuda (EsBudget *budget)
{
  EsError err = { ES_OK, "" };
  EsBackend *be = es_cuda_backend_new (0, budget, &err);

  if (be == NULL)
    tap_diag ("es_cuda_backend_new: %s", err.message);
  return be;
}

/* What the plan counts that these runs leave unused: synchronized BatchNorm's partial
 * sums (3 floats for each of the CNN's 4 channels; no stat-reduce hook here). The
 * rest (the device tables, the row indices, the staged batches in the graph runs, the
 * uint8 staging of the host batches and the argmax rows of the evaluation, the columns
 * and the 16-bit copies) is used, and under a limit taken at the size asked. */
static size_t
cuda_slack (const EsMemPlan *plan, const EsTrainConfig *cfg, ContractModel which)
{
  (void) plan;
  (void) cfg;
  return which == CONTRACT_CNN ? 3 * 4 * sizeof (float) : 0;
}

int
main (void)
{
  const EsOptKind opts[] = { ES_OPT_SGD, ES_OPT_MOMENTUM, ES_OPT_ADAMW };
  const EsPrecision precs[] = { ES_PRECISION_FP32, ES_PRECISION_BF16, ES_PRECISION_FP16 };

  tap_require_device ();
  for (int which = 0; which < CONTRACT_N_MODELS; which++)
    for (size_t p = 0; p < ES_N_ELEMENTS (precs); p++)
      for (size_t o = 0; o < ES_N_ELEMENTS (opts); o++)
        for (int mode = CONTRACT_EAGER; mode <= CONTRACT_GRAPHS; mode++)
          {
            EsTrainConfig cfg;

            es_train_config_default (&cfg);
            cfg.optimizer = opts[o];
            cfg.precision = precs[p];
            cfg.lr = 0.01f;
            cfg.plan_cuda = true;
            /* clipping by the global norm on the device path too, with AdamW */
            cfg.clip_norm = opts[o] == ES_OPT_ADAMW ? 1.0f : 0.0f;
            contract_run (make_cuda, (ContractModel) which, cfg, (ContractMode) mode, false,
                          es_cuda_backend_fp32_products, cuda_slack);
          }
  return tap_done ();
}
