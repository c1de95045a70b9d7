/* mem-plan-contract.h: the memory plan's contract (es_mem_plan, es-train.h), shared by
 * the CPU backend's test (tests/engine/test-mem-plan.c, GTest) and the CUDA backend's
 * (tests/cuda/test-cuda-memplan.c, plain C on the emulation or a GPU). For a model,
 * an optimizer, a precision and a way of running steps, a trainer runs a few training
 * batches, reads its statistics and evaluates a batch with predictions, three times:
 * - under a budget without a limit: what it charges on top of what was charged before
 *   it (the backend's own buffers) is at most the plan's total where the backend takes
 *   workspaces of exactly the size asked (the CPU backend; the CUDA backend rounds them
 *   to 1 MiB and lets convolutions take more images at once when nothing limits it);
 * - under a limit of exactly the plan on top of that: no halving, no failure, no
 *   product in fp32, and the plan no more than `slack` above what the run charged;
 * - a byte under: the micro-batch halves, and the run still goes through.
 * And for inference (es_mem_plan with training false, contract_infer_run below): an
 * EsInfer of B rows runs a batch of B rows and one of a single row, three times:
 * - without a limit: it charges at most the plan where the backend takes workspaces
 *   of the size asked;
 * - under a limit of exactly the plan: it is made, both batches run, and the plan is
 *   no more than `slack` above what it charged (its ops had their workspaces);
 * - a byte under: where the plan has no workspace, es_infer_new fails with
 *   ES_ERR_BUDGET (the plan is its blocks); where it has one, the EsInfer is made and
 *   runs without the workspace the budget refuses, its outputs those of the first run
 *   up to rounding.
 * Header-only; the including file defines CONTRACT_OK (bool, printf-style message) and
 * CONTRACT_NOTE (printf-style diagnostics) and calls contract_run (contract_infer_run)
 * per configuration.
 *
 * Dimension key: B = batch rows, D = input values per row (a 12x12 image), C = 10. */
#pragma once

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-backend.h"
#include "es-model.h"
#include "es-train.h"

enum { CONTRACT_B = 32, CONTRACT_D = 144, CONTRACT_C = 10, CONTRACT_STEPS = 4 };

typedef enum {
  CONTRACT_MLP,          /* Flatten, Dense 48, ReLU, Dropout, Dense 10, Softmax */
  CONTRACT_CNN,          /* Conv2D 4 3x3, BatchNorm, ReLU, MaxPool, Flatten, Dropout, Dense */
  CONTRACT_N_MODELS
} ContractModel;

typedef enum {
  CONTRACT_EAGER,        /* host batches, statistics read at each step */
  CONTRACT_GRAPHS,       /* deferred statistics, uploads ahead (es_trainer_prefetch) and
                          * CUDA Graphs where the backend has them */
} ContractMode;

static const char *const contract_model_names[] = { "mlp", "cnn" };

static EsModel *
contract_model (ContractModel which)
{
  EsShape in = { 3, { 1, 12, 12 } };
  EsLayerSpec l[9];
  EsModel *m;
  int n = 0;

  if (which == CONTRACT_CNN)
    {
      l[n] = es_layer_spec_default (ES_LAYER_CONV2D);
      l[n].filters = 4;
      l[n].kernel = 3;
      l[n++].padding = 1;
      l[n++] = es_layer_spec_default (ES_LAYER_BATCHNORM);
      l[n++] = es_layer_spec_default (ES_LAYER_RELU);
      l[n] = es_layer_spec_default (ES_LAYER_MAXPOOL2D);
      l[n++].kernel = 2;
      l[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
      l[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
      l[n++].rate = 0.2f;
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = CONTRACT_C;
    }
  else
    {
      l[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = 48;
      l[n++] = es_layer_spec_default (ES_LAYER_RELU);
      l[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
      l[n++].rate = 0.25f;
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = CONTRACT_C;
      l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
    }
  m = es_model_new (&in, l, n, NULL);
  if (m != NULL)
    es_model_init (m, 11);
  return m;
}

/* uint8 images with a class-dependent stripe, so the steps learn something */
static void
contract_data (uint8_t *x, int32_t *y, int rows)
{
  uint64_t s = 0x9e3779b97f4a7c15u;

  for (int r = 0; r < rows; r++)
    {
      y[r] = r % CONTRACT_C;
      for (int d = 0; d < CONTRACT_D; d++)
        {
          s = s * 6364136223846793005u + 1442695040888963407u;
          x[r * CONTRACT_D + d] = (uint8_t) ((s >> 56) / 2 + (d % CONTRACT_C == y[r] ? 100 : 0));
        }
    }
}

/* Makes a backend charging budget (NULL when there is none: the caller skips). */
typedef EsBackend *(*ContractBackendFunc) (EsBudget *budget);

typedef struct {
  bool    made;          /* the trainer was made */
  bool    ran;           /* every step and the evaluation went through */
  int     micro;
  size_t  charged;       /* peak - what was charged before the trainer */
  int64_t fp32_products; /* the CUDA backend's count, or -1 */
  int64_t replays;
} ContractRun;

/* One run: a trainer of cfg on a fresh backend, its budget limited to what the backend
 * charged plus limit_over (SIZE_MAX: no limit). */
static void
contract_once (ContractBackendFunc make, ContractModel which, const EsTrainConfig *cfg,
               ContractMode mode, size_t limit_over, int64_t (*fp32_count) (EsBackend *),
               ContractRun *run)
{
  EsBudget *budget = es_budget_new (0);
  EsBackend *be = make (budget);
  EsModel *m = contract_model (which);
  uint8_t x[CONTRACT_B * CONTRACT_D];
  int32_t y[CONTRACT_B], pred[CONTRACT_B];
  EsError err = { ES_OK, "" };
  EsTrainer *tr = NULL;
  size_t before;

  memset (run, 0, sizeof *run);
  run->fp32_products = -1;
  contract_data (x, y, CONTRACT_B);
  if (be == NULL || m == NULL)
    goto out;
  before = es_budget_used (budget);
  if (limit_over != SIZE_MAX)
    es_budget_set_limit (budget, before + limit_over);
  tr = es_trainer_new (m, be, cfg, CONTRACT_B, &err);
  if (tr == NULL)
    goto out;
  run->made = true;
  run->micro = es_trainer_micro_batch (tr);
  run->ran = true;
  if (mode == CONTRACT_GRAPHS)
    es_trainer_set_deferred_stats (tr, true);
  for (int s = 0; s < CONTRACT_STEPS && run->ran; s++)
    {
      EsBatch eb = { .B = CONTRACT_B, .x_u8 = x, .scale = 1.0f / 255.0f, .labels = y };
      EsStepStats st = { 0 };

      if (mode == CONTRACT_GRAPHS)
        (void) es_trainer_prefetch (tr, &eb, NULL);  /* refused where it cannot */
      run->ran = es_trainer_train_batch (tr, &eb, &st, &err);
    }
  if (run->ran)
    {
      EsBatch eb = { .B = CONTRACT_B, .x_u8 = x, .scale = 1.0f / 255.0f, .labels = y };
      EsStepStats st = { 0 };

      run->ran = es_trainer_read_stats (tr, &st, &err)
                 && es_trainer_eval_batch (tr, &eb, &st, pred, &err);
    }
  if (!run->ran)
    CONTRACT_NOTE ("the run failed: %s", err.message);
  run->charged = es_budget_peak (budget) - before;
  run->replays = es_trainer_graph_replays (tr);
  if (fp32_count != NULL)
    run->fp32_products = fp32_count (be);
out:
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
  es_budget_free (budget);
}

/* The contract for one configuration (see the top). exact_unlimited: the backend takes
 * workspaces of the size asked without a limit too. slack: how far the plan may lie
 * above what the run charged. */
static void
contract_run (ContractBackendFunc make, ContractModel which, EsTrainConfig cfg,
              ContractMode mode, bool exact_unlimited, int64_t (*fp32_count) (EsBackend *),
              size_t (*slack) (const EsMemPlan *, const EsTrainConfig *, ContractModel))
{
  EsModel *m = contract_model (which);
  char what[160];
  ContractRun r;
  EsMemPlan plan;
  size_t allowed;

  snprintf (what, sizeof what, "%s %s %s %s%s", contract_model_names[which],
            es_opt_kind_name (cfg.optimizer), es_precision_name (cfg.precision),
            mode == CONTRACT_GRAPHS ? "graphs" : "eager", cfg.clip_norm > 0 ? " clipped" : "");
  cfg.plan_prefetch = mode == CONTRACT_GRAPHS;
  es_mem_plan (m, &cfg, CONTRACT_B, true, &plan);
  es_model_free (m);
  CONTRACT_OK (plan.total == plan.weights + plan.gradients + plan.optimizer
               + plan.activations + plan.workspace + plan.data,
               "%s: the plan's total %zu is the sum of its kinds", what, plan.total);
  allowed = slack (&plan, &cfg, which);

  contract_once (make, which, &cfg, mode, SIZE_MAX, fp32_count, &r);
  if (!r.made)
    {
      CONTRACT_OK (false, "%s: a trainer without a limit", what);
      return;
    }
  CONTRACT_OK (r.ran && r.micro == CONTRACT_B, "%s, no limit: the steps and the evaluation "
               "run at the whole batch", what);
  if (exact_unlimited)
    CONTRACT_OK (r.charged <= plan.total, "%s, no limit: charged %zu <= plan %zu (slack %zu)",
                 what, r.charged, plan.total, plan.total - ES_MIN (plan.total, r.charged));
  else
    CONTRACT_NOTE ("%s, no limit: charged %zu, plan %zu (the backend's workspaces grow "
                   "freely without a limit)", what, r.charged, plan.total);

  contract_once (make, which, &cfg, mode, plan.total, fp32_count, &r);
  CONTRACT_OK (r.made && r.ran && r.micro == CONTRACT_B && r.charged <= plan.total
               && r.fp32_products <= 0,
               "%s, a limit of exactly the plan (%zu): no halving (micro-batch %d), no "
               "failure, charged %zu, %lld product(s) in fp32", what, plan.total, r.micro,
               r.charged, (long long) r.fp32_products);
  CONTRACT_OK (plan.total - ES_MIN (plan.total, r.charged) <= allowed,
               "%s: the plan lies %zu bytes (%.1f%%) above the run's peak, at most %zu",
               what, plan.total - ES_MIN (plan.total, r.charged),
               100.0 * (double) (plan.total - ES_MIN (plan.total, r.charged)) / (double) plan.total,
               allowed);
  if (mode == CONTRACT_GRAPHS && fp32_count != NULL)
    CONTRACT_OK (r.replays > 0, "%s: %lld batch(es) replayed as graphs", what,
                 (long long) r.replays);

  contract_once (make, which, &cfg, mode, plan.total - 1, fp32_count, &r);
  CONTRACT_OK (r.made && r.ran && r.micro < CONTRACT_B,
               "%s, a byte under the plan: the micro-batch halves (%d) and the run goes "
               "through", what, r.micro);
}

/* ---- inference ------------------------------------------------------------------ */

typedef struct {
  bool    made;          /* es_infer_new succeeded */
  bool    ran;           /* both batches ran */
  EsStatus code;         /* es_infer_new's error when not made */
  size_t  charged;       /* peak - what was charged before es_infer_new */
  float  *out;           /* (B, C) the outputs of the batch of B rows, malloc'd */
} ContractInferRun;

/* One EsInfer of m for B rows on a fresh backend, its budget limited to what the
 * backend charged plus limit_over (SIZE_MAX: no limit): a batch of B rows of x, then
 * its first row alone. Inline, as the CUDA half need not use it. */
static inline void
contract_infer_once (ContractBackendFunc make, const EsModel *m, int B, const float *x,
                     size_t limit_over, ContractInferRun *run)
{
  EsBudget *budget = es_budget_new (0);
  EsBackend *be = make (budget);
  EsShape out_shape = es_model_output_shape (m);
  size_t F = (size_t) es_shape_size (&out_shape);
  EsError err = { ES_OK, "" };
  EsInfer *inf = NULL;
  const float *y;
  size_t before;

  memset (run, 0, sizeof *run);
  if (be == NULL)
    goto out;
  before = es_budget_used (budget);
  if (limit_over != SIZE_MAX)
    es_budget_set_limit (budget, before + limit_over);
  inf = es_infer_new (m, be, B, &err);
  run->code = err.code;
  if (inf != NULL)
    {
      run->made = true;
      y = es_infer_run (inf, x, B);
      if (y != NULL && (run->out = malloc ((size_t) B * F * sizeof (float))) != NULL)
        memcpy (run->out, y, (size_t) B * F * sizeof (float));
      run->ran = y != NULL && run->out != NULL && es_infer_run (inf, x, 1) != NULL;
    }
  else
    CONTRACT_NOTE ("es_infer_new: %s", err.message);
  run->charged = es_budget_peak (budget) - before;
out:
  es_infer_free (inf);
  es_backend_free (be);
  es_budget_free (budget);
}

/* The largest difference between a and b (n values), relative to 1 + |a|. */
static inline double
contract_max_rel_diff (const float *a, const float *b, size_t n)
{
  double worst = 0.0;

  for (size_t i = 0; i < n; i++)
    {
      double d = fabs ((double) a[i] - (double) b[i]) / (1.0 + fabs ((double) a[i]));

      if (!(d <= worst))
        worst = d;   /* NaN too */
    }
  return worst;
}

/* The inference contract (see the top) for m (borrowed; input CONTRACT_D values a row)
 * at B rows on the backends make gives, planned with cfg (plan_cuda and plan_threads
 * as the backend's). exact_unlimited: the backend takes workspaces of the size asked
 * without a limit too. slack: how far the plan may lie above what the run charged. */
static inline void
contract_infer_run (ContractBackendFunc make, const char *name, const EsModel *m,
                    const EsTrainConfig *cfg, int B, bool exact_unlimited, size_t slack)
{
  EsShape out_shape = es_model_output_shape (m);
  size_t n_out = (size_t) B * (size_t) es_shape_size (&out_shape);
  uint8_t *xu = malloc ((size_t) B * CONTRACT_D);
  int32_t *y = malloc ((size_t) B * sizeof (int32_t));
  float *x = malloc ((size_t) B * CONTRACT_D * sizeof (float));
  ContractInferRun free_run, exact, under;
  char what[160];
  EsMemPlan plan;

  snprintf (what, sizeof what, "%s inference at %d row(s), %d thread(s)", name, B,
            cfg->plan_threads > 1 ? cfg->plan_threads : 1);
  if (xu == NULL || y == NULL || x == NULL)
    {
      CONTRACT_OK (false, "%s: memory for the batch", what);
      free (xu);
      free (y);
      free (x);
      return;
    }
  contract_data (xu, y, B);
  for (size_t i = 0; i < (size_t) B * CONTRACT_D; i++)
    x[i] = (float) xu[i] / 255.0f;
  es_mem_plan (m, cfg, B, false, &plan);
  CONTRACT_OK (plan.total == plan.weights + plan.gradients + plan.optimizer
               + plan.activations + plan.workspace + plan.data
               && plan.gradients == 0 && plan.optimizer == 0,
               "%s: the plan's total %zu is the sum of its kinds, none for training", what,
               plan.total);

  contract_infer_once (make, m, B, x, SIZE_MAX, &free_run);
  CONTRACT_OK (free_run.made && free_run.ran, "%s, no limit: made and run", what);
  if (exact_unlimited)
    CONTRACT_OK (free_run.charged <= plan.total, "%s, no limit: charged %zu <= plan %zu",
                 what, free_run.charged, plan.total);
  else
    CONTRACT_NOTE ("%s, no limit: charged %zu, plan %zu (the backend's workspaces grow "
                   "freely without a limit)", what, free_run.charged, plan.total);

  contract_infer_once (make, m, B, x, plan.total, &exact);
  CONTRACT_OK (exact.made && exact.ran && exact.charged <= plan.total,
               "%s, a limit of exactly the plan (%zu): made and run, charged %zu", what,
               plan.total, exact.charged);
  if (exact_unlimited)
    CONTRACT_OK (exact.charged == free_run.charged,
                 "%s: under the plan the ops took what they took without a limit (%zu of "
                 "%zu)", what, exact.charged, free_run.charged);
  CONTRACT_OK (plan.total - (exact.charged < plan.total ? exact.charged : plan.total) <= slack,
               "%s: the plan lies %zu bytes above the run's peak, at most %zu (workspace "
               "%zu planned)", what,
               plan.total - (exact.charged < plan.total ? exact.charged : plan.total), slack,
               plan.workspace);

  contract_infer_once (make, m, B, x, plan.total - 1, &under);
  if (plan.workspace == 0)
    CONTRACT_OK (!under.made && under.code == ES_ERR_BUDGET,
                 "%s, a byte under a plan without workspace: es_infer_new refused (error %d)",
                 what, (int) under.code);
  else
    {
      double diff = under.ran && free_run.ran
                    ? contract_max_rel_diff (free_run.out, under.out, n_out) : 1.0;

      CONTRACT_OK (under.made && under.ran && under.charged < plan.total && diff <= 1e-4,
                   "%s, a byte under: made and run without the refused workspace (charged "
                   "%zu), outputs within %.2g of the first run's", what, under.charged, diff);
    }
  free (free_run.out);
  free (exact.out);
  free (under.out);
  free (xu);
  free (y);
  free (x);
}
