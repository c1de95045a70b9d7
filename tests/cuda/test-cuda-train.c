/* test-cuda-train.c: the CUDA backend under the engine's trainer, against the CPU
 * backend on the same model, data and seed: the loss curve of a few training steps of
 * an MLP (Adam, uint8 inputs) and of a small CNN (Conv2D, BatchNorm, MaxPool, Dropout;
 * Nesterov with L2 and clipping), evaluation and prediction, inference through EsInfer,
 * pruning masks with distillation and quantization-aware training through the trainer.
 * Then the memory limit: an allocation past the budget fails cleanly and leaves the
 * backend working, one past the device's memory too, and a trainer whose batch does
 * not fit halves its micro-batch and accumulates to the same losses. And the device
 * list. Mixed precision: bf16 and fp16 training against the fp32 curve, the CPU backend's
 * refusal, and fp16's loss scaling (a planted overflow skips the step, leaves the
 * parameters as they were and halves the scale; the scale grows back after its
 * interval), and the memory plan's 16-bit operand copies: under a budget of exactly
 * what es_mem_plan counts for them, each Dense and Conv2D product of a micro-batch
 * still runs in fp16 (its results those of an unlimited backend), and a byte less
 * makes the largest fall back; and a CNN trained in fp16 under the planned workspace
 * (this backend's layout), and more, runs every product in fp16, a byte less runs one
 * in fp32 and counts it (es_cuda_backend_fp32_products). Without a CUDA device it checks the clean refusal and
 * skips (exit 77).
 * No GLib. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-backend.h"
#include "es-cuda.h"
#include "es-train.h"

#include "cuda-tap.h"

static EsBackend *cpu, *gpu;

/* Rows of uint8 "images" (n, D) with labels in [0, 10) that depend on them (the
 * brightest of 10 stripes), so training has something to learn. */
static void
make_data (uint8_t *x, int32_t *y, int n, int D, uint64_t seed)
{
  EsRng rng = { seed };

  for (int i = 0; i < n; i++)
    {
      int best = 0;
      double best_sum = -1.0;

      for (int d = 0; d < D; d++)
        x[(int64_t) i * D + d] = (uint8_t) (es_rng_next (&rng) & 0xff);
      for (int k = 0; k < 10; k++)
        {
          double s = 0.0;

          for (int d = k; d < D; d += 10)
            s += x[(int64_t) i * D + d];
          if (s > best_sum)
            {
              best_sum = s;
              best = k;
            }
        }
      y[i] = best;
    }
}

static EsModel *
mlp (int D, int hidden, uint64_t seed)
{
  EsShape in = { 1, { D } };
  EsLayerSpec l[4];
  EsModel *m;

  l[0] = es_layer_spec_default (ES_LAYER_DENSE);
  l[0].units = hidden;
  l[1] = es_layer_spec_default (ES_LAYER_RELU);
  l[2] = es_layer_spec_default (ES_LAYER_DENSE);
  l[2].units = 10;
  l[3] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, 4, NULL);
  if (m != NULL)
    es_model_init (m, seed);
  return m;
}

static EsModel *
cnn (uint64_t seed)
{
  EsShape in = { 3, { 1, 12, 12 } };
  EsLayerSpec l[9];
  EsModel *m;
  int n = 0;

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
  l[n++].units = 10;
  m = es_model_new (&in, l, n, NULL);
  if (m != NULL)
    es_model_init (m, seed);
  return m;
}

/* steps batches of B rows (u8 or f32 inputs) through tr from row 0 on, cycling over n
 * rows; losses (steps) get each batch's mean loss. false on a failed step. */
static bool
run_steps (EsTrainer *tr, const uint8_t *xu8, const float *xf, const int32_t *y, int n, int D,
           int B, int steps, double *losses)
{
  for (int s = 0; s < steps; s++)
    {
      int r0 = (s * B) % (n - B + 1);
      EsBatch b = { .B = B, .scale = 1.0f / 255.0f, .shift = 0.0f, .labels = y + r0 };
      EsStepStats st = { 0, 0, 0 };
      EsError err = { ES_OK, "" };

      if (xu8 != NULL)
        b.x_u8 = xu8 + (int64_t) r0 * D;
      else
        b.x_f32 = xf + (int64_t) r0 * D;
      if (!es_trainer_train_batch (tr, &b, &st, &err))
        {
          tap_diag ("step %d failed: %s", s, err.message);
          return false;
        }
      losses[s] = st.loss_sum / st.rows;
    }
  return true;
}

/* The two curves within tol (relative), and the worst step said. */
static bool
curves_close (const char *what, const double *g, const double *c, int steps, double tol)
{
  double worst = 0.0;
  int at = 0;

  for (int s = 0; s < steps; s++)
    {
      double e = fabs (g[s] - c[s]) / fmax (fabs (c[s]), 1e-3);

      if (!(e <= worst))
        {
          worst = e;
          at = s;
        }
    }
  tap_diag ("%s: loss %.6f -> %.6f on the GPU, %.6f -> %.6f on the CPU", what, g[0],
            g[steps - 1], c[0], c[steps - 1]);
  return tap_ok (worst <= tol, "%s: %d steps, worst relative loss difference %.3g (step %d) <= %.0e",
                 what, steps, worst, at, tol);
}

/* The parameters of two trainers' models after es_trainer_sync. */
static void
params_close (const char *what, EsTrainer *tg, EsTrainer *tc, EsModel *mg, EsModel *mc,
              double tol)
{
  es_trainer_sync (tg);
  es_trainer_sync (tc);
  tap_close (what, es_model_params (mg), es_model_params (mc), es_model_n_params (mc), tol);
}

/* ---- the device list ------------------------------------------------------------------------ */

static void
test_devices (void)
{
  int n = es_cuda_device_count ();
  EsError err = { ES_OK, "" };
  EsCudaDeviceInfo info;

  tap_ok (n > 0, "%d CUDA device(s)", n);
  for (int i = 0; i < n; i++)
    {
      bool ok = es_cuda_device_info (i, &info, &err);

      tap_ok (ok && info.name[0] != '\0' && info.cc_major >= 7 && info.mem_total > 0
              && info.mem_free <= info.mem_total && info.runtime_version > 0
              && info.driver_version >= info.runtime_version / 1000 * 1000,
              "device %d: %s, compute capability %d.%d, %d SMs", i, info.name, info.cc_major,
              info.cc_minor, info.multiprocessors);
      tap_diag ("  memory %.1f GiB free of %.1f GiB, L2 %zu KiB, driver CUDA %d.%d, runtime %d.%d, "
                "bus %s", info.mem_free / 1073741824.0, info.mem_total / 1073741824.0,
                info.l2_bytes >> 10, info.driver_version / 1000, info.driver_version % 1000 / 10,
                info.runtime_version / 1000, info.runtime_version % 1000 / 10, info.pci_bus_id);
      if (info.have_nvml)
        tap_diag ("  NVML: driver %s, utilization %d%% (memory %d%%), %d C, %.0f W of %.0f W",
                  info.driver_string, info.utilization_gpu, info.utilization_mem,
                  info.temperature_c, info.power_w, info.power_limit_w);
      else
        tap_diag ("  NVML not loaded (libnvidia-ml.so.1 missing or failing)");
    }
  tap_ok (!es_cuda_device_info (n, &info, &err) && err.code == ES_ERR_INVALID,
          "a device index past the last is refused: %s", err.message);
  es_error_clear (&err);
  tap_ok (es_cuda_backend_new (n, NULL, &err) == NULL && err.code == ES_ERR_INVALID,
          "no backend on a device past the last: %s", err.message);
  tap_ok (es_cuda_backend_device (gpu) == 0 && es_cuda_backend_device (cpu) == -1,
          "es_cuda_backend_device tells CUDA backends from others");
}

/* ---- training against the CPU ---------------------------------------------------------------- */

#define N_ROWS 512

static void
test_mlp (const uint8_t *x, const int32_t *y, int D)
{
  enum { STEPS = 20, B = 64 };
  EsModel *mc = mlp (D, 64, 7), *mg = es_model_copy (mc);
  EsTrainConfig cfg;
  EsTrainer *tc, *tg;
  EsError err = { ES_OK, "" };
  double lc[STEPS], lg[STEPS];

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.seed = 3;
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  tg = es_trainer_new (mg, gpu, &cfg, B, &err);
  if (!tap_ok (tc != NULL && tg != NULL, "MLP trainers made (%s)", err.message))
    goto out;

  /* prediction and evaluation before training: the same parameters */
  {
    float *xf = malloc ((size_t) B * D * sizeof (float));
    float *pc = malloc ((size_t) B * 10 * sizeof (float)), *pg = malloc ((size_t) B * 10 * sizeof (float));

    for (int64_t i = 0; i < (int64_t) B * D; i++)
      xf[i] = x[i] / 255.0f;
    tap_ok (es_trainer_predict (tc, xf, B, pc, &err) && es_trainer_predict (tg, xf, B, pg, &err),
            "predict runs (%s)", err.message);
    tap_close ("predict before training", pg, pc, (int64_t) B * 10, 1e-4);
    free (xf);
    free (pc);
    free (pg);
  }

  tap_ok (run_steps (tc, x, NULL, y, N_ROWS, D, B, STEPS, lc)
          && run_steps (tg, x, NULL, y, N_ROWS, D, B, STEPS, lg), "MLP: %d Adam steps on both",
          STEPS);
  curves_close ("MLP, Adam, uint8 inputs", lg, lc, STEPS, 2e-3);
  params_close ("MLP parameters after training", tg, tc, mg, mc, 1e-2);

  /* evaluation: losses, correct counts and predictions */
  {
    EsBatch b = { .B = 200, .x_u8 = x, .scale = 1.0f / 255.0f, .labels = y };
    EsStepStats sc = { 0, 0, 0 }, sg = { 0, 0, 0 };
    int32_t *pc = malloc (200 * sizeof (int32_t)), *pg = malloc (200 * sizeof (int32_t));
    int agree = 0;

    tap_ok (es_trainer_eval_batch (tc, &b, &sc, pc, &err) && es_trainer_eval_batch (tg, &b, &sg, pg, &err),
            "evaluation runs (%s)", err.message);
    for (int i = 0; i < 200; i++)
      agree += pc[i] == pg[i];
    tap_close_scalar ("evaluation loss", sg.loss_sum / sg.rows, sc.loss_sum / sc.rows, 2e-3);
    tap_ok (agree >= 198 && abs (sc.correct - sg.correct) <= 2,
            "evaluation predictions agree on %d of 200 rows; correct %d vs %d on the CPU", agree,
            sg.correct, sc.correct);
    free (pc);
    free (pg);
  }

  /* profiling synchronizes the backend between stages */
  {
    EsProfile prof;
    double l[2];

    es_trainer_set_profiling (tg, true);
    run_steps (tg, x, NULL, y, N_ROWS, D, B, 2, l);
    es_trainer_get_profile (tg, &prof);
    tap_ok (prof.batches == 2 && prof.total_s > 0.0 && prof.stage_s[ES_STAGE_FORWARD] > 0.0,
            "profiled steps on the GPU: %lld batches, %.3f ms a batch", (long long) prof.batches,
            prof.total_s / 2 * 1e3);
  }

  /* EsInfer (dense and activation fused where the backend offers it) */
  {
    EsInfer *ic = es_infer_new (mc, cpu, 100, &err), *ig = es_infer_new (mg, gpu, 100, &err);
    float *xf = malloc ((size_t) 100 * D * sizeof (float));

    es_trainer_sync (tg);
    es_trainer_sync (tc);
    if (tap_ok (ic != NULL && ig != NULL, "EsInfer made on both (%s)", err.message))
      {
        const float *oc, *og;
        float *keep = malloc (100 * 10 * sizeof (float));

        for (int64_t i = 0; i < (int64_t) 100 * D; i++)
          xf[i] = x[i] / 255.0f;
        oc = es_infer_run (ic, xf, 100);
        memcpy (keep, oc, 100 * 10 * sizeof (float));
        og = es_infer_run (ig, xf, 100);
        /* each on its own trained parameters: those differ within the curve tolerance */
        tap_close ("EsInfer outputs", og, keep, 100 * 10, 1e-2);
        free (keep);
      }
    es_infer_free (ic);
    es_infer_free (ig);
    free (xf);
  }
out:
  es_trainer_free (tc);
  es_trainer_free (tg);
  es_model_free (mc);
  es_model_free (mg);
}

static void
test_cnn (void)
{
  enum { STEPS = 10, B = 16, D = 144, N = 128 };
  EsModel *mc = cnn (11), *mg = es_model_copy (mc);
  EsTrainConfig cfg;
  EsTrainer *tc, *tg;
  EsError err = { ES_OK, "" };
  double lc[STEPS], lg[STEPS];
  float *x = malloc ((size_t) N * D * sizeof (float));
  int32_t *y = malloc (N * sizeof (int32_t));
  EsRng rng = { 99 };

  for (int i = 0; i < N; i++)
    {
      y[i] = i % 10;
      for (int d = 0; d < D; d++)
        x[i * D + d] = (float) es_rng_normal (&rng) + (d % 10 == y[i] ? 1.5f : 0.0f);
    }
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_NESTEROV;
  cfg.lr = 0.05f;
  cfg.l2 = 1e-4f;
  cfg.clip_norm = 5.0f;
  cfg.seed = 5;
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  tg = es_trainer_new (mg, gpu, &cfg, B, &err);
  if (tap_ok (tc != NULL && tg != NULL, "CNN trainers made (%s)", err.message))
    {
      tap_ok (run_steps (tc, NULL, x, y, N, D, B, STEPS, lc)
              && run_steps (tg, NULL, x, y, N, D, B, STEPS, lg), "CNN: %d Nesterov steps on both",
              STEPS);
      curves_close ("CNN with BatchNorm, MaxPool, Dropout; Nesterov, L2, clipping", lg, lc,
                    STEPS, 2e-3);
      params_close ("CNN parameters after training", tg, tc, mg, mc, 1e-2);
      {
        EsModel *bc = mc, *bg = mg;

        tap_close ("CNN BatchNorm running statistics", es_model_buffers (bg),
                   es_model_buffers (bc), es_model_n_buffers (bc), 1e-3);
      }
    }
  es_trainer_free (tc);
  es_trainer_free (tg);
  es_model_free (mc);
  es_model_free (mg);
  free (x);
  free (y);
}

/* Pruning masks with distillation from a teacher, then quantization-aware training. */
static void
test_slimming (const uint8_t *x, const int32_t *y, int D)
{
  enum { STEPS = 8, B = 32 };
  EsModel *mc = mlp (D, 32, 21), *mg = es_model_copy (mc), *teacher = mlp (D, 48, 22);
  int64_t P = es_model_n_params (mc);
  uint8_t *mask = malloc ((size_t) P);
  bool qat[4] = { true, false, true, false };
  EsTrainConfig cfg;
  EsTrainer *tc, *tg;
  EsError err = { ES_OK, "" };
  double lc[STEPS], lg[STEPS];
  EsRng rng = { 5 };

  for (int64_t i = 0; i < P; i++)
    mask[i] = (es_rng_next (&rng) & 1) != 0;
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAMW;
  cfg.seed = 9;
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  tg = es_trainer_new (mg, gpu, &cfg, B, &err);
  if (!tap_ok (tc != NULL && tg != NULL, "slimming trainers made (%s)", err.message))
    goto out;
  tap_ok (es_trainer_set_mask (tc, mask, &err) && es_trainer_set_mask (tg, mask, &err)
          && es_trainer_set_teacher (tc, teacher, 2.0f, 0.5f, &err)
          && es_trainer_set_teacher (tg, teacher, 2.0f, 0.5f, &err),
          "mask and teacher set (%s)", err.message);
  tap_ok (run_steps (tc, x, NULL, y, N_ROWS, D, B, STEPS, lc)
          && run_steps (tg, x, NULL, y, N_ROWS, D, B, STEPS, lg), "pruned and distilled steps");
  curves_close ("pruning mask + distillation, AdamW", lg, lc, STEPS, 2e-3);
  es_trainer_sync (tg);
  {
    const float *p = es_model_params (mg);
    int64_t nonzero = 0;

    for (int64_t i = 0; i < P; i++)
      nonzero += !mask[i] && p[i] != 0.0f;
    tap_ok (nonzero == 0, "pruned weights stay exactly zero on the GPU (%lld are not)",
            (long long) nonzero);
  }

  /* QAT: a value that lands on the other side of a rounding boundary moves by one
   * quantization step, so the curves agree less closely than in float */
  tap_ok (es_trainer_set_teacher (tc, NULL, 1, 0, &err) && es_trainer_set_teacher (tg, NULL, 1, 0, &err)
          && es_trainer_set_fake_quant (tc, qat, false, &err)
          && es_trainer_set_fake_quant (tg, qat, false, &err), "fake quantization on (%s)",
          err.message);
  tap_ok (run_steps (tc, x, NULL, y, N_ROWS, D, B, STEPS, lc)
          && run_steps (tg, x, NULL, y, N_ROWS, D, B, STEPS, lg), "quantization-aware steps");
  curves_close ("quantization-aware training", lg, lc, STEPS, 2e-2);
  {
    float lo_c = NAN, hi_c = NAN, lo_g = NAN, hi_g = NAN;
    bool have = es_trainer_get_input_range (tc, 2, &lo_c, &hi_c)
                && es_trainer_get_input_range (tg, 2, &lo_g, &hi_g);

    tap_ok (have && fabsf (lo_g - lo_c) <= 1e-3f * fmaxf (1.0f, fabsf (lo_c))
            && fabsf (hi_g - hi_c) <= 1e-3f * fmaxf (1.0f, fabsf (hi_c)),
            "tracked QAT input range of layer 3: [%g, %g], CPU [%g, %g]", lo_g, hi_g, lo_c, hi_c);
  }
out:
  es_trainer_free (tc);
  es_trainer_free (tg);
  es_model_free (mc);
  es_model_free (mg);
  es_model_free (teacher);
  free (mask);
}

/* ---- the memory limit -------------------------------------------------------------------------- */

static void
test_memory_limit (const uint8_t *x, const int32_t *y, int D)
{
  enum { STEPS = 5, B = N_ROWS };
  EsBudget *budget = es_budget_new ((size_t) 1 << 40);
  EsError err = { ES_OK, "" };
  EsBackend *g = es_cuda_backend_new (0, budget, &err);
  EsModel *mc = mlp (D, 32, 31), *mg = es_model_copy (mc);
  EsTrainConfig cfg;
  EsMemPlan plan;
  EsTrainer *tc = NULL, *tg = NULL;
  double lc[STEPS], lg[STEPS];
  size_t own, used;
  void *p;

  if (!tap_ok (g != NULL, "a backend with a budget (%s)", err.message))
    goto out;
  own = es_budget_used (budget);
  tap_diag ("the backend's own buffers: %zu bytes", own);
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  es_mem_plan (mc, &cfg, B / 4, true, &plan);
  es_budget_set_limit (budget, own + plan.total + plan.total * 15 / 100);

  /* past the limit: refused, nothing charged, the backend unharmed */
  used = es_budget_used (budget);
  p = g->iface->alloc (g, ES_MEM_ACTIVATIONS, es_budget_limit (budget) - used + 1, &err);
  tap_ok (p == NULL && err.code == ES_ERR_BUDGET && es_budget_used (budget) == used,
          "an allocation past the limit fails with a budget error: %s", err.message);
  es_error_clear (&err);
  p = g->iface->alloc (g, ES_MEM_ACTIVATIONS, 4096, &err);
  tap_ok (p != NULL && es_budget_used (budget) == used + 4096, "and a small one still works");
  g->iface->free (g, ES_MEM_ACTIVATIONS, p, 4096);
  tap_ok (es_budget_used (budget) == used, "free gives the bytes back");

  /* a batch four times what fits: the trainer halves it twice and accumulates */
  tg = es_trainer_new (mg, g, &cfg, B, &err);
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  if (!tap_ok (tg != NULL && tc != NULL, "trainers made under the limit (%s)", err.message))
    goto out;
  tap_ok (es_trainer_micro_batch (tg) == B / 4 && es_trainer_accum_steps (tg) == 4,
          "batch %d in micro-batches of %d, %d accumulated", B, es_trainer_micro_batch (tg),
          es_trainer_accum_steps (tg));
  tap_ok (run_steps (tc, x, NULL, y, N_ROWS, D, B, STEPS, lc)
          && run_steps (tg, x, NULL, y, N_ROWS, D, B, STEPS, lg), "steps under the limit");
  curves_close ("halved micro-batches against the whole batch on the CPU", lg, lc, STEPS, 2e-3);
  tap_ok (es_budget_peak (budget) <= es_budget_limit (budget),
          "the budget's peak %zu stayed within its limit %zu", es_budget_peak (budget),
          es_budget_limit (budget));
  tap_ok (es_cuda_backend_check (g, &err), "no CUDA error under the limit (%s)", err.message);

out:
  es_trainer_free (tc);
  es_trainer_free (tg);
  es_backend_free (g);
  tap_ok (es_budget_used (budget) == 0, "everything given back: %zu bytes still charged",
          es_budget_used (budget));
  es_budget_free (budget);
  es_model_free (mc);
  es_model_free (mg);
}

/* More than any GPU has, without a budget: the device refuses, the backend carries on. */
static void
test_device_full (void)
{
  EsError err = { ES_OK, "" };
  void *p = gpu->iface->alloc (gpu, ES_MEM_ACTIVATIONS, (size_t) 1 << 42, &err);

  tap_ok (p == NULL && err.code == ES_ERR_NOMEM, "4 TiB is refused by the device: %s",
          err.message);
  es_error_clear (&err);
  p = gpu->iface->alloc (gpu, ES_MEM_ACTIVATIONS, 1 << 20, &err);
  tap_ok (p != NULL && es_cuda_backend_check (gpu, &err),
          "the backend still allocates and has no error recorded (%s)", err.message);
  gpu->iface->free (gpu, ES_MEM_ACTIVATIONS, p, 1 << 20);
}

/* ---- mixed precision ----------------------------------------------------------------------- */

/* A trainer of the MLP on the GPU in precision p, with the scaler's initial scale and
 * growth interval (fp16). */
static EsTrainer *
mixed_trainer (EsModel *m, EsPrecision p, float scale, int interval, EsError *err)
{
  EsTrainConfig cfg;

  *err = (EsError) { ES_OK, "" };
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.seed = 3;
  cfg.precision = p;
  if (scale > 0)
    cfg.loss_scale_init = scale;
  if (interval > 0)
    cfg.loss_scale_interval = interval;
  return es_trainer_new (m, gpu, &cfg, 64, err);
}

static void
test_mixed (const uint8_t *x, const int32_t *y, int D)
{
  enum { STEPS = 20, B = 64 };
  EsModel *mc = mlp (D, 64, 7);
  EsTrainConfig cfg;
  EsTrainer *tc;
  EsError err = { ES_OK, "" };
  double lc[STEPS];
  EsPrecision p;

  tap_ok (es_precision_from_name ("bf16", &p) && p == ES_PRECISION_BF16
          && es_precision_from_name ("FP16", &p) && p == ES_PRECISION_FP16
          && strcmp (es_precision_name (ES_PRECISION_FP32), "fp32") == 0
          && !es_precision_from_name ("fp8", &p), "precision names");
  es_train_config_default (&cfg);
  tap_ok (cfg.precision == ES_PRECISION_FP32 && cfg.loss_scale_init == 65536.0f
          && cfg.loss_scale_interval == 2000 && cfg.loss_scale_growth == 2.0f
          && cfg.loss_scale_backoff == 0.5f, "defaults: fp32; GradScaler's 65536, 2000, 2, 0.5");

  /* the CPU backend computes in fp32 only, and says so */
  cfg.precision = ES_PRECISION_BF16;
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  tap_ok (tc == NULL && err.code == ES_ERR_UNSUPPORTED && strstr (err.message, "CUDA") != NULL,
          "a bf16 trainer on the CPU backend is refused: %s", err.message);
  es_trainer_free (tc);

  /* the fp32 curve on the CPU */
  err = (EsError) { ES_OK, "" };
  cfg.optimizer = ES_OPT_ADAM;
  cfg.seed = 3;
  cfg.precision = ES_PRECISION_FP32;
  tc = es_trainer_new (mc, cpu, &cfg, B, &err);
  if (!tap_ok (tc != NULL && run_steps (tc, x, NULL, y, N_ROWS, D, B, STEPS, lc),
               "the fp32 curve on the CPU (%s)", err.message))
    goto out;

  /* A few steps in bf16 and fp16 against it. Tolerance, per step, relative: the ops
   * test bounds each product's error by about 2u sum |a b| (u the unit roundoff); two
   * layers, and cross-entropy moves by at most 2 max |d logit| (its gradient p - y has
   * an l1 norm of at most 2), give about 8u on a step's loss with the same parameters;
   * the parameters then drift apart a little each step (Adam's steps have the size of
   * the learning rate whatever the gradient's rounding), so twice that over 20 steps:
   * 16u, 6.3% for bf16 (u = 2^-8) and 0.8% for fp16 (u = 2^-11). */
  for (int i = 0; i < 2; i++)
    {
      const EsPrecision prec = i == 0 ? ES_PRECISION_BF16 : ES_PRECISION_FP16;
      const double u = prec == ES_PRECISION_BF16 ? 0x1p-8 : 0x1p-11;
      EsModel *mg = mlp (D, 64, 7);
      EsTrainer *tg = mixed_trainer (mg, prec, 0, 0, &err);
      double lg[STEPS];
      char what[64];

      snprintf (what, sizeof what, "MLP in %s against fp32", es_precision_name (prec));
      if (tap_ok (tg != NULL && run_steps (tg, x, NULL, y, N_ROWS, D, B, STEPS, lg),
                  "%d steps in %s on the GPU (%s)", STEPS, es_precision_name (prec), err.message))
        {
          curves_close (what, lg, lc, STEPS, 16 * u);
          tap_ok (es_trainer_skipped_steps (tg) == 0 && es_trainer_step_count (tg) == STEPS
                  && es_trainer_loss_scale (tg) == (prec == ES_PRECISION_FP16 ? 65536.0f : 1.0f),
                  "%s: no step skipped, the scale stays %g", es_precision_name (prec),
                  (double) es_trainer_loss_scale (tg));
        }
      es_trainer_free (tg);
      es_model_free (mg);
    }

  /* fp16 loss scaling, a planted overflow: a scale of 2^40 makes the loss gradient
   * (p - y) / B 2^40, past fp16's 65504 when rounded for the last layer's products, so
   * the gradients hold inf or NaN: the step is skipped, the parameters stay as they
   * were bit for bit, the scale halves; it goes on halving until the gradients fit. */
  {
    EsModel *mg = mlp (D, 64, 7);
    EsTrainer *tg = mixed_trainer (mg, ES_PRECISION_FP16, 0x1p40f, 0, &err);
    int64_t P = es_model_n_params (mg);
    float *before = malloc ((size_t) P * sizeof (float));
    double l[1] = { NAN };
    int batches = 0;

    if (tap_ok (tg != NULL, "an fp16 trainer with a scale of 2^40 (%s)", err.message))
      {
        es_trainer_sync (tg);
        memcpy (before, es_model_params (mg), (size_t) P * sizeof (float));
        bool ran = run_steps (tg, x, NULL, y, N_ROWS, D, B, 1, l);

        tap_ok (ran && isfinite (l[0]), "the overflowing batch trains without error (loss %.4f)",
                l[0]);
        es_trainer_sync (tg);
        tap_ok (es_trainer_step_count (tg) == 0 && es_trainer_skipped_steps (tg) == 1,
                "its step was skipped (steps %lld, skipped %lld)",
                (long long) es_trainer_step_count (tg), (long long) es_trainer_skipped_steps (tg));
        tap_same ("the parameters are unchanged after the skipped step", es_model_params (mg),
                  before, (size_t) P * sizeof (float));
        tap_ok (es_trainer_loss_scale (tg) == 0x1p39f, "the scale halved to %g",
                (double) es_trainer_loss_scale (tg));
        while (es_trainer_step_count (tg) == 0 && ++batches < 40)
          run_steps (tg, x, NULL, y, N_ROWS, D, B, 1, l);
        /* the untrained model gives the true class of some row a probability under
         * 0.5 (10 classes, near uniform), a loss gradient over 0.5 / B there: every
         * scale of 2^23 (0.5 2^23 / 64 = 65536) and up overflows, so at least 18
         * steps are skipped before one is taken */
        tap_ok (es_trainer_step_count (tg) == 1
                && es_trainer_loss_scale (tg)
                   == ldexpf (1.0f, 40 - (int) es_trainer_skipped_steps (tg))
                && es_trainer_skipped_steps (tg) >= 18,
                "halving until the gradients fit: a step taken after %lld skipped, at a scale "
                "of %g", (long long) es_trainer_skipped_steps (tg),
                (double) es_trainer_loss_scale (tg));
        es_trainer_sync (tg);
        tap_ok (memcmp (es_model_params (mg), before, (size_t) P * sizeof (float)) != 0,
                "and that step changed the parameters");
      }
    free (before);
    es_trainer_free (tg);
    es_model_free (mg);
  }

  /* growth: after the interval's clean steps the scale doubles, and not before */
  {
    EsModel *mg = mlp (D, 64, 7);
    EsTrainer *tg = mixed_trainer (mg, ES_PRECISION_FP16, 256.0f, 3, &err);
    double l[3];
    float s2 = 0, s3 = 0, s5 = 0, s6 = 0;

    if (tap_ok (tg != NULL, "an fp16 trainer with a scale of 256, growing every 3 steps (%s)",
                err.message))
      {
        run_steps (tg, x, NULL, y, N_ROWS, D, B, 2, l);
        s2 = es_trainer_loss_scale (tg);
        run_steps (tg, x, NULL, y, N_ROWS, D, B, 1, l);
        s3 = es_trainer_loss_scale (tg);
        run_steps (tg, x, NULL, y, N_ROWS, D, B, 2, l);
        s5 = es_trainer_loss_scale (tg);
        run_steps (tg, x, NULL, y, N_ROWS, D, B, 1, l);
        s6 = es_trainer_loss_scale (tg);
        tap_ok (s2 == 256.0f && s3 == 512.0f && s5 == 512.0f && s6 == 1024.0f
                && es_trainer_skipped_steps (tg) == 0 && es_trainer_step_count (tg) == 6,
                "the scale grows back: 256 after 2 steps, %g after 3, %g after 5, %g after 6",
                (double) s3, (double) s5, (double) s6);
      }
    es_trainer_free (tg);
    es_model_free (mg);
  }

out:
  es_trainer_free (tc);
  es_model_free (mc);
}

/* ---- the memory plan of mixed precision ---------------------------------------------------- */

/* n floats of [-1, 1) from seed, on g. */
static float *
dev_random (EsBackend *g, size_t n, uint64_t seed)
{
  EsRng rng = { seed };
  EsError err = { ES_OK, "" };
  float *h = malloc (n * sizeof (float));
  float *d = g->iface->alloc (g, ES_MEM_ACTIVATIONS, n * sizeof (float), &err);

  for (size_t i = 0; i < n; i++)
    h[i] = (float) (es_rng_uniform (&rng) * 2.0 - 1.0);
  if (d != NULL)
    g->iface->upload (g, d, h, n * sizeof (float));
  free (h);
  return d;
}

/* The operands of one Dense or Conv2D layer's product at B rows, on a backend. */
typedef struct {
  const EsLayerInfo *l;
  size_t nx, nw, nb, ny;
  float *x, *w, *b, *y, *dy, *dx, *dw, *db;
} PlanOps;

/* Every Dense and Conv2D layer of m at B rows in fp16 on g: operands allocated first,
 * then (room not NULL) the budget limited to them plus *room bytes, then forward
 * through the layers and backward (the input gradient past the first layer with
 * parameters, as the trainer asks), in the trainer's order. Returns the outputs and
 * gradients, one after the other (*n floats), host memory. */
static float *
plan_ops (EsBackend *g, EsBudget *budget, const EsModel *m, int B, const size_t *room,
          size_t *n)
{
  const int L = es_model_n_layers (m);
  PlanOps *ops = calloc ((size_t) L, sizeof *ops);
  EsError err = { ES_OK, "" };
  size_t total = 0, at = 0;
  int first = -1;
  float *out;

  g->iface->set_precision (g, ES_PRECISION_FP16, &err);
  for (int i = 0; i < L; i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);
      PlanOps *o = &ops[i];

      if (l->spec.kind != ES_LAYER_DENSE && l->spec.kind != ES_LAYER_CONV2D)
        continue;
      if (first < 0)
        first = i;
      o->l = l;
      o->nx = (size_t) B * (size_t) es_shape_size (&l->in);
      o->ny = (size_t) B * (size_t) es_shape_size (&l->out);
      o->nb = (size_t) (l->spec.kind == ES_LAYER_DENSE ? l->spec.units : l->spec.filters);
      o->nw = (size_t) l->n_params - o->nb;
      o->x = dev_random (g, o->nx, 10 * i + 1);
      o->w = dev_random (g, o->nw, 10 * i + 2);
      o->b = dev_random (g, o->nb, 10 * i + 3);
      o->dy = dev_random (g, o->ny, 10 * i + 4);
      o->y = g->iface->alloc (g, ES_MEM_ACTIVATIONS, o->ny * sizeof (float), &err);
      o->dx = g->iface->alloc (g, ES_MEM_ACTIVATIONS, o->nx * sizeof (float), &err);
      o->dw = g->iface->alloc (g, ES_MEM_ACTIVATIONS, o->nw * sizeof (float), &err);
      o->db = g->iface->alloc (g, ES_MEM_ACTIVATIONS, o->nb * sizeof (float), &err);
      total += o->ny + o->nx + o->nw + o->nb;
    }
  if (room != NULL)
    es_budget_set_limit (budget, es_budget_used (budget) + *room);
  for (int pass = 0; pass < 2; pass++)
    for (int k = 0; k < L; k++)
      {
        const int i = pass == 0 ? k : L - 1 - k;
        const PlanOps *o = &ops[i];
        const EsLayerInfo *l = o->l;

        if (l == NULL)
          continue;
        if (l->spec.kind == ES_LAYER_DENSE)
          {
            const int IN = (int) es_shape_size (&l->in), OUT = l->spec.units;

            if (pass == 0)
              g->iface->dense_forward (g, o->y, o->x, o->w, o->b, B, IN, OUT);
            else
              g->iface->dense_backward (g, i > first ? o->dx : NULL, o->dw, o->db, o->dy, o->x,
                                        o->w, B, IN, OUT);
          }
        else
          {
            const int C = l->in.dims[0], H = l->in.dims[1], W = l->in.dims[2];
            const int S = l->spec.stride > 0 ? l->spec.stride : 1;

            if (pass == 0)
              g->iface->conv2d_forward (g, o->y, o->x, o->w, o->b, B, C, H, W, l->spec.filters,
                                        l->spec.kernel, S, l->spec.padding);
            else
              g->iface->conv2d_backward (g, i > first ? o->dx : NULL, o->dw, o->db, o->dy, o->x,
                                         o->w, B, C, H, W, l->spec.filters, l->spec.kernel, S,
                                         l->spec.padding);
          }
      }
  out = calloc (total, sizeof (float));
  for (int i = 0; i < L; i++)
    {
      PlanOps *o = &ops[i];
      float *bufs[4] = { o->y, o->dx, o->dw, o->db };
      size_t ns[4] = { o->ny, o->nx, o->nw, o->nb };

      if (o->l == NULL)
        continue;
      for (int k = 0; k < 4; k++)
        {
          if (k != 1 || i > first)
            g->iface->download (g, out + at, bufs[k], ns[k] * sizeof (float));
          at += ns[k];
        }
      g->iface->free (g, ES_MEM_ACTIVATIONS, o->x, o->nx * sizeof (float));
      g->iface->free (g, ES_MEM_ACTIVATIONS, o->w, o->nw * sizeof (float));
      g->iface->free (g, ES_MEM_ACTIVATIONS, o->b, o->nb * sizeof (float));
      g->iface->free (g, ES_MEM_ACTIVATIONS, o->dy, o->ny * sizeof (float));
      for (int k = 0; k < 4; k++)
        g->iface->free (g, ES_MEM_ACTIVATIONS, bufs[k], ns[k] * sizeof (float));
    }
  g->iface->set_precision (g, ES_PRECISION_FP32, &err);
  free (ops);
  *n = total;
  return out;
}

/* m's products at B rows under a budget of the plan's 16-bit copies (plus
 * conv_bytes, the fp32 columns of a convolution of one image, which the backend takes
 * first), against an unlimited backend's: equal; and a byte less: the largest copy is
 * refused and its product runs in fp32. */
static void
check_plan (const char *what, const EsModel *m, int B, size_t conv_bytes)
{
  EsTrainConfig cfg;
  EsMemPlan p16, p32;
  size_t half, n = 0, n_ref = 0;
  float *ref, *got;

  es_train_config_default (&cfg);
  es_mem_plan (m, &cfg, B, true, &p32);
  cfg.precision = ES_PRECISION_FP16;
  es_mem_plan (m, &cfg, B, true, &p16);
  half = p16.workspace - p32.workspace;
  ref = plan_ops (gpu, NULL, m, B, NULL, &n_ref);
  for (int k = 0; k < 2; k++)
    {
      EsError err = { ES_OK, "" };
      EsBudget *budget = es_budget_new ((size_t) 1 << 40);
      EsBackend *g = es_cuda_backend_new (0, budget, &err);
      size_t limit, room = half + conv_bytes - (size_t) k;

      if (!tap_ok (g != NULL, "%s: a backend with a budget (%s)", what, err.message))
        {
          es_budget_free (budget);
          continue;
        }
      got = plan_ops (g, budget, m, B, &room, &n);
      limit = es_budget_limit (budget);
      if (k == 0)
        tap_ok (n == n_ref && memcmp (got, ref, n * sizeof (float)) == 0
                && es_budget_peak (budget) <= limit,
                "%s: under the plan's %zu bytes of 16-bit copies (B %d), every product runs "
                "in fp16 as without a limit", what, half, B);
      else
        tap_ok (n == n_ref && memcmp (got, ref, n * sizeof (float)) != 0,
                "%s: a byte less, and one runs otherwise (the plan is what the backend takes)",
                what);
      free (got);
      es_backend_free (g);
      es_budget_free (budget);
    }
  free (ref);
}

static void
test_mixed_plan (void)
{
  EsModel *dense = mlp (40, 48, 5), *conv = cnn (5);

  check_plan ("Dense 40-48-10", dense, 96, 0);
  /* the convolution's columns and output gradient, one image: (CKK + OC) OHW floats */
  check_plan ("Conv2D 1-4 3x3 on 12x12, Dense", conv, 1,
              (size_t) (1 * 3 * 3 + 4) * (12 * 12) * sizeof (float));
  es_model_free (dense);
  es_model_free (conv);
}

/* A Conv2D model trained in fp16 by the trainer under a budget of what it allocated
 * plus es_mem_plan's workspace for this backend (one image's convolution columns and
 * the largest product's 16-bit copies): no product runs in fp32
 * (es_cuda_backend_fp32_products stays 0) and the losses are an unlimited backend's
 * (in chunks of other sizes: the weight gradient's sums in another order); the same
 * with room for one and a half, two and a half, three and a half images' columns more,
 * where chunks of several images are taken and their copies must fit beside them; and
 * a byte less than the plan: a product runs in fp32, and is counted. */
static void
test_mixed_plan_trainer (void)
{
  enum { STEPS = 3, B = 8, D = 144, N = 64, CASES = 6 };
  /* cnn (): Conv2D 1->4 3x3 on 12x12, the columns (C K K + OC) OH OW floats an image */
  const size_t w1 = (size_t) (1 * 3 * 3 + 4) * (12 * 12) * sizeof (float);
  const long extra[CASES] = { 0, (long) (w1 / 2), (long) (w1 + w1 / 2),
                              (long) (2 * w1 + w1 / 2), (long) (3 * w1 + w1 / 2), -1 };
  float *x = malloc ((size_t) N * D * sizeof (float));
  int32_t *y = malloc (N * sizeof (int32_t));
  double ref[STEPS];
  EsRng rng = { 7 };
  EsTrainConfig cfg;
  EsMemPlan plan;

  for (int i = 0; i < N; i++)
    {
      y[i] = i % 10;
      for (int d = 0; d < D; d++)
        x[i * D + d] = (float) es_rng_normal (&rng) + (d % 10 == y[i] ? 1.5f : 0.0f);
    }
  es_train_config_default (&cfg);
  cfg.precision = ES_PRECISION_FP16;
  cfg.seed = 3;
  cfg.plan_cuda = true;
  {
    EsModel *m = cnn (5);

    es_mem_plan (m, &cfg, B, true, &plan);
    es_model_free (m);
  }
  for (int c = -1; c < CASES; c++)
    {
      EsError err = { ES_OK, "" };
      EsBudget *budget = es_budget_new (0);
      EsBackend *g = es_cuda_backend_new (0, budget, &err);
      size_t ws_own = es_budget_used_kind (budget, ES_MEM_WORKSPACE);
      EsModel *m = cnn (5);
      EsTrainer *tr = g != NULL ? es_trainer_new (m, g, &cfg, B, &err) : NULL;
      double l[STEPS];
      size_t limit = 0;
      bool ran;

      if (!tap_ok (tr != NULL, "an fp16 CNN trainer on a budget (%s)", err.message))
        goto next;
      if (c >= 0)
        {
          /* the plan's workspace less what the trainer made of it already (the device
           * tables of deferred statistics), the uint8 staging and argmax rows that
           * steps on float batches without predictions leave unused, and synchronized
           * BatchNorm's partial sums (3 floats for each of 4 channels), unused too: the
           * columns and the copies */
          limit = es_budget_used (budget) + plan.workspace
                  - (es_budget_used_kind (budget, ES_MEM_WORKSPACE) - ws_own)
                  - ((size_t) B * D + (size_t) B * sizeof (int32_t)) - 3 * 4 * sizeof (float)
                  + (size_t) extra[c];
          es_budget_set_limit (budget, limit);
        }
      ran = run_steps (tr, NULL, x, y, N, D, B, STEPS, c < 0 ? ref : l);
      if (c < 0)
        tap_ok (ran && es_cuda_backend_fp32_products (g) == 0,
                "fp16 CNN, no limit: %d steps, no product in fp32", STEPS);
      else if (extra[c] >= 0)
        {
          tap_ok (ran && es_cuda_backend_fp32_products (g) == 0
                  && es_budget_peak (budget) <= limit,
                  "fp16 CNN under what the trainer holds + the plan's %zu bytes of workspace "
                  "+ %ld: no product in fp32 (%lld), peak %zu <= %zu", plan.workspace, extra[c],
                  (long long) es_cuda_backend_fp32_products (g), es_budget_peak (budget), limit);
          if (ran)
            {
              double worst = 0.0;

              for (int k = 0; k < STEPS; k++)
                worst = fmax (worst, fabs (l[k] - ref[k]) / fabs (ref[k]));
              tap_ok (worst <= 1e-5, "and the losses without a limit: worst relative "
                      "difference %.3g <= 1e-5", worst);
            }
        }
      else
        tap_ok (ran && es_cuda_backend_fp32_products (g) > 0 && es_budget_peak (budget) <= limit,
                "a byte less: the steps run, %lld product(s) in fp32, counted",
                (long long) es_cuda_backend_fp32_products (g));
      tap_ok (es_cuda_backend_check (g, &err), "no CUDA error (%s)", err.message);
    next:
      es_trainer_free (tr);
      es_backend_free (g);
      es_budget_free (budget);
      es_model_free (m);
    }
  tap_ok (es_cuda_backend_fp32_products (cpu) == -1, "a CPU backend has no such count");
  free (x);
  free (y);
}

int
main (void)
{
  enum { D = 196 };
  EsError err = { ES_OK, "" };
  uint8_t *x;
  int32_t *y;

  tap_require_device ();
  cpu = es_cpu_backend_new (1, NULL, &err);
  gpu = es_cuda_backend_new (0, NULL, &err);
  if (!tap_ok (cpu != NULL && gpu != NULL, "backends made (%s)", err.message))
    return tap_done ();
  x = malloc ((size_t) N_ROWS * D);
  y = malloc (N_ROWS * sizeof (int32_t));
  make_data (x, y, N_ROWS, D, 1);

  test_devices ();
  test_mlp (x, y, D);
  test_cnn ();
  test_slimming (x, y, D);
  test_mixed (x, y, D);
  test_mixed_plan ();
  test_mixed_plan_trainer ();
  test_memory_limit (x, y, D);
  test_device_full ();

  tap_ok (es_cuda_backend_check (gpu, &err), "no CUDA error on the way (%s)", err.message);
  es_backend_free (gpu);
  es_backend_free (cpu);
  free (x);
  free (y);
  return tap_done ();
}
