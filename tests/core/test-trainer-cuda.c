/* test-trainer-cuda.c: the real EspalierTrainer on the CUDA backend, against the same
 * run on the CPU: a few epochs of a small model train (the loss falls) and agree with
 * the CPU's losses and accuracies to fp32 rounding; the memory limit is the device
 * pool's budget and holds (the batch is split to fit it); the automatic choice takes
 * the CUDA device; evaluation on the device agrees with the CPU's; the profile names
 * the device. Built twice (tests/cuda/meson.build): on the module of the CUDA
 * emulation (tests/cuda/emu), so it runs here and in CI, and on the real backend's
 * module for a GPU machine (tests/gpu/device-check.sh), where without a device every
 * test skips. */
#include <math.h>
#include <string.h>

#include "espalier-dataset.h"
#include "espalier-device.h"
#include "espalier-error.h"
#include "espalier-generate.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"
#include "cuda-test-util.h"

/* The playground template with its options, a few epochs. */
static EsModel *
playground (EspalierDataset *ds, EspalierTrainOptions *opts)
{
  return playground_for (ds, opts, 4);
}

typedef struct {
  GString *messages;
} Seen;

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Seen *seen = data;

  if (p->kind == ESPALIER_PROGRESS_MESSAGE)
    g_string_append_printf (seen->messages, "%s\n", p->message);
}

/* Trains a copy of model on device; the history (EspalierEpochRecord) and, profiled, the
 * profile's device. */
static GArray *
train_on (EspalierDataset            *ds,
          const EsModel              *model,
          const EspalierTrainOptions *base,
          gint                        device,
          gint                       *ran_on,
          GString                    *messages)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EspalierTrainOptions o = *base;
  EsModel *m = es_model_copy (model);
  Seen seen = { messages };
  const EspalierProfile *prof;
  GArray *history;

  o.device = device;
  tr = espalier_trainer_new (ds, m, &o);
  espalier_trainer_set_profiling (tr, TRUE, 0, FALSE);
  g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
  g_assert_no_error (error);
  prof = espalier_trainer_get_profile (tr);
  g_assert_nonnull (prof);
  *ran_on = prof->device;
  history = g_array_ref (espalier_trainer_get_history (tr));
  es_model_free (m);
  return history;
}

static void
test_devices (void)
{
  g_autofree char *no_cuda = NULL;
  g_autoptr(GArray) list = NULL;
  const EspalierDevice *gpu;
  g_autoptr(GError) error = NULL;
  gint device = -5;

  if (!have_device ())
    return;
  list = espalier_devices_list (&no_cuda);
  g_assert_null (no_cuda);
  g_assert_cmpuint (list->len, ==, 1 + espalier_cuda_device_count ());
  g_assert_cmpint (g_array_index (list, EspalierDevice, 0).device, ==, ESPALIER_DEVICE_CPU);
  gpu = &g_array_index (list, EspalierDevice, 1);
  g_assert_cmpint (gpu->device, ==, 0);
  g_assert_cmpstr (gpu->name, ==, gpu->cuda.name);
  g_assert_cmpuint (gpu->cuda.mem_total, >, 0);
  g_assert_cmpuint (gpu->cuda.mem_free, <=, gpu->cuda.mem_total);
  g_assert_cmpint (gpu->cuda.cc_major * 10 + gpu->cuda.cc_minor, >=, 75);

  /* cuda:N names a device of this machine */
  g_assert_true (espalier_device_parse ("cuda:0", &device, &error));
  g_assert_cmpint (device, ==, 0);
  g_assert_false (espalier_device_parse ("cuda:99", &device, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
}

/* The same seed on the CPU and the device: the same math, to fp32 rounding. */
static void
test_matches_cpu (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GArray) cpu = NULL, gpu = NULL;
  g_autoptr(GString) messages = g_string_new (NULL);
  EspalierTrainOptions opts;
  EsModel *model;
  gint on_cpu = 99, on_gpu = 99;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  cpu = train_on (ds, model, &opts, ESPALIER_DEVICE_CPU, &on_cpu, messages);
  gpu = train_on (ds, model, &opts, 0, &on_gpu, messages);
  g_assert_cmpint (on_cpu, ==, ESPALIER_DEVICE_CPU);
  g_assert_cmpint (on_gpu, ==, 0);
  g_assert_cmpstr (messages->str, ==, "");   /* no fallback */
  g_assert_cmpuint (gpu->len, ==, opts.epochs);
  g_assert_cmpuint (cpu->len, ==, gpu->len);
  for (guint e = 0; e < gpu->len; e++)
    {
      const EspalierEpochRecord *c = &g_array_index (cpu, EspalierEpochRecord, e);
      const EspalierEpochRecord *g = &g_array_index (gpu, EspalierEpochRecord, e);

      g_test_message ("epoch %u: loss cpu %.6f cuda %.6f, val accuracy cpu %.4f cuda %.4f",
                      e + 1, c->train_loss, g->train_loss, c->val_accuracy, g->val_accuracy);
      g_assert_true (isfinite (g->train_loss));
      g_assert_cmpfloat_with_epsilon (g->train_loss, c->train_loss, 1e-3 * c->train_loss);
      g_assert_cmpfloat_with_epsilon (g->val_loss, c->val_loss, 1e-3 * c->val_loss);
      /* a row whose two best classes are within rounding may flip */
      g_assert_cmpfloat_with_epsilon (g->train_accuracy, c->train_accuracy, 0.01);
      g_assert_cmpfloat_with_epsilon (g->val_accuracy, c->val_accuracy, 0.04);
    }
  g_assert_cmpfloat (g_array_index (gpu, EspalierEpochRecord, gpu->len - 1).train_loss, <,
                     g_array_index (gpu, EspalierEpochRecord, 0).train_loss);
  es_model_free (model);
}

/* ESPALIER_DEVICE_AUTO, the default, takes the first CUDA device, without a word. */
static void
test_auto (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GArray) history = NULL;
  g_autoptr(GString) messages = g_string_new (NULL);
  EspalierTrainOptions opts;
  EsModel *model;
  gint on = 99;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  g_assert_cmpint (opts.device, ==, ESPALIER_DEVICE_AUTO);
  opts.epochs = 1;
  history = train_on (ds, model, &opts, opts.device, &on, messages);
  g_assert_cmpint (on, ==, 0);
  g_assert_cmpstr (messages->str, ==, "");
  g_assert_cmpuint (history->len, ==, 1);
  es_model_free (model);
}

/* The memory limit is the device pool's budget: a limit below what the full batch
 * needs splits it into micro-batches, and the pool never goes past the limit. */
static void
test_memory_limit (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GString) messages = g_string_new (NULL);
  EspalierTrainOptions opts;
  const EspalierProfile *prof;
  EsMemPlan small, full;
  EsModel *model;
  Seen seen;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  opts.epochs = 1;
  opts.batch_size = 256;
  opts.device = 0;
  /* between what 8 rows and the whole batch take, plus the backend's 16 KiB for
   * reductions (the 4 MiB cuBLAS workspace only comes when the budget has room) */
  es_mem_plan (model, &opts.engine, 8, TRUE, &small);
  es_mem_plan (model, &opts.engine, (int) opts.batch_size, TRUE, &full);
  g_assert_cmpuint (small.total, <, full.total);
  opts.memory_limit = (small.total + full.total) / 2 + 16 * 1024;
  g_assert_cmpuint (opts.memory_limit, <, 4u << 20);
  seen.messages = messages;
  tr = espalier_trainer_new (ds, model, &opts);
  espalier_trainer_set_profiling (tr, TRUE, 0, FALSE);
  g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
  g_assert_no_error (error);
  prof = espalier_trainer_get_profile (tr);
  g_test_message ("limit %zu, peak %zu, micro-batch %u of %u", opts.memory_limit,
                  prof->mem_peak, espalier_trainer_get_micro_batch (tr), opts.batch_size);
  g_assert_cmpint (prof->device, ==, 0);
  g_assert_cmpuint (prof->mem_limit, ==, opts.memory_limit);
  g_assert_cmpuint (prof->mem_peak, <=, opts.memory_limit);
  g_assert_cmpuint (prof->mem_peak, >, 0);
  g_assert_cmpuint (espalier_trainer_get_micro_batch (tr), <, opts.batch_size);
  g_assert_nonnull (strstr (messages->str, "micro-batches"));
  g_assert_null (strstr (messages->str, "CPU instead"));
  /* the device's own readings */
  g_assert_nonnull (strstr (prof->device_name, "CUDA 0"));
  g_assert_cmpuint (prof->device_mem_total, >, 0);
  g_assert_true (prof->ftz);
  g_assert_true (isfinite (g_array_index (espalier_trainer_get_history (tr),
                                          EspalierEpochRecord, 0).train_loss));
  es_model_free (model);
}

/* Evaluation on the device gives the CPU's metrics. */
static void
test_evaluate (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *fallback = NULL;
  EspalierMetrics cpu = { 0 }, gpu = { 0 };
  EspalierTrainOptions opts;
  EsModel *model;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  g_assert_true (espalier_evaluate (model, ds, NULL, 0, opts.engine.loss, 1, &cpu, &error));
  g_assert_no_error (error);
  g_assert_true (espalier_evaluate_device (model, ds, NULL, 0, opts.engine.loss, 1, 0, FALSE,
                                           &fallback, &gpu, &error));
  g_assert_no_error (error);
  g_assert_null (fallback);
  g_assert_cmpuint (gpu.rows, ==, cpu.rows);
  g_assert_cmpfloat_with_epsilon (gpu.loss, cpu.loss, 1e-4 * cpu.loss);
  g_assert_cmpfloat_with_epsilon (gpu.accuracy, cpu.accuracy, 2.0 / cpu.rows);
  espalier_metrics_clear (&cpu);
  espalier_metrics_clear (&gpu);
  es_model_free (model);
}

int
main (int argc, char **argv)
{
#ifdef TEST_CUDA_MODULE
  /* the CUDA emulation's module, unless the caller names another */
  g_setenv ("ESPALIER_CUDA_MODULE", TEST_CUDA_MODULE, FALSE);
#endif
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/trainer-cuda/devices", test_devices);
  g_test_add_func ("/trainer-cuda/matches-cpu", test_matches_cpu);
  g_test_add_func ("/trainer-cuda/auto", test_auto);
  g_test_add_func ("/trainer-cuda/memory-limit", test_memory_limit);
  g_test_add_func ("/trainer-cuda/evaluate", test_evaluate);
  return g_test_run ();
}
