/* test-trainer-cuda.c: the real EspalierTrainer on the CUDA backend, against the same
 * run on the CPU: a few epochs of a small model train (the loss falls) and agree with
 * the CPU's losses and accuracies to fp32 rounding; the memory limit is the device
 * pool's budget and holds (the batch is split to fit it); the automatic choice takes
 * the CUDA device; evaluation on the device agrees with the CPU's, and evaluates from a
 * copy of the rows kept on the device (the metrics of batches copied from the host,
 * exactly, without a copy per batch); the profile names the device; an fp16 run with
 * dynamic loss scaling stopped and resumed from its checkpoint ends as one that went
 * through, its loss scale, clean and skipped steps included. Built twice
 * (tests/cuda/meson.build): on the module of the CUDA emulation (tests/cuda/emu), so it
 * runs here and in CI, and on the real backend's module for a GPU machine
 * (tests/gpu/device-check.sh), where without a device every test skips. */
#include <dlfcn.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "espalier-checkpoint.h"

#include "espalier-dataset.h"
#include "espalier-device.h"
#include "espalier-error.h"
#include "espalier-generate.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"
#include "scratch-test-util.h"
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
  /* the trainer says the same without profiling's help (the Train page asks it) */
  g_assert_cmpint (espalier_trainer_get_device_used (tr), ==, prof->device);
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

typedef struct {
  gint64 fp32_products;   /* the most a progress record told */
} Fallbacks;

static void
on_fallbacks (const EspalierProgress *p, gpointer data)
{
  Fallbacks *f = data;

  f->fp32_products = MAX (f->fp32_products, p->fp32_products);
}

/* Mixed precision's fallbacks reach the run's progress and result: an fp16 run with
 * room has none; under a limit that holds the trainer at one row but leaves no room
 * for the 16-bit operand copies, its products run in fp32 and are counted. The limit:
 * the backend's 16 KiB of reductions (no cuBLAS workspace under 4 MiB), the plan at one
 * row (as the trainer plans it for this backend: streaming through uploads ahead, the
 * resident rows' indices for the whole batch) less its 16-bit copies (the fp16 plan's
 * bytes over the fp32 one's, but fp16's 32 bytes of scaler state) and the uint8
 * staging and argmax rows of one row. */
static void
test_fp32_fallbacks (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierTrainOptions opts;
  EsTrainConfig cfg;
  EsMemPlan p16, p32;
  EsModel *model;
  gsize half, D;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  opts.epochs = 1;
  opts.device = 0;
  opts.engine.precision = ES_PRECISION_FP16;
  D = espalier_dataset_get_row_size (ds);
  cfg = opts.engine;
  cfg.plan_cuda = TRUE;
  cfg.plan_prefetch = TRUE;
  es_mem_plan (model, &cfg, 1, TRUE, &p16);
  cfg.precision = ES_PRECISION_FP32;
  es_mem_plan (model, &cfg, 1, TRUE, &p32);
  half = p16.total - p32.total - 4 * sizeof (double);
  g_assert_cmpuint (half, >, 0);
  for (int limited = 0; limited < 2; limited++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierTrainer) tr = NULL;
      EsModel *m = es_model_copy (model);
      Fallbacks f = { 0 };
      EspalierTrainOptions o = opts;

      if (limited)
        {
          o.memory_limit = (2 * 1024 + 8) * sizeof (double) + p16.total
                           + 2 * (o.batch_size - 1) * sizeof (gint32) - half
                           - (D + sizeof (gint32));
          g_assert_cmpuint (o.memory_limit, <, 4u << 20);
        }
      tr = espalier_trainer_new (ds, m, &o);
      g_assert_true (espalier_trainer_run (tr, NULL, on_fallbacks, &f, &error));
      g_assert_no_error (error);
      g_test_message ("limit %zu: micro-batch %u, %lld product(s) in fp32 (progress told %lld)",
                      o.memory_limit, espalier_trainer_get_micro_batch (tr),
                      (long long) espalier_trainer_get_fp32_products (tr),
                      (long long) f.fp32_products);
      if (limited)
        {
          g_autofree char *msg = espalier_fp32_products_message (f.fp32_products);

          g_assert_cmpuint (espalier_trainer_get_micro_batch (tr), ==, 1);
          g_assert_cmpint (f.fp32_products, >, 0);
          g_assert_cmpint (espalier_trainer_get_fp32_products (tr), >=, f.fp32_products);
          g_assert_nonnull (strstr (msg, "fp32"));
        }
      else
        {
          g_assert_cmpint (f.fp32_products, ==, 0);
          g_assert_cmpint (espalier_trainer_get_fp32_products (tr), ==, 0);
        }
      es_model_free (m);
    }
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

/* The emulation's count of host-to-device copies (es-cuda-emu.h), or NULL where the
 * module is a real backend's. */
static long
h2d_copies (void)
{
  const char *path = g_getenv ("ESPALIER_CUDA_MODULE");
  static long (*count) (void);
  static gboolean looked;

  if (!looked && path != NULL)
    {
      void *mod = dlopen (path, RTLD_NOW | RTLD_LOCAL);   /* core's, opened again */

      if (mod != NULL)
        count = (long (*) (void)) dlsym (mod, "es_cuda_emu_h2d_copies");
      looked = TRUE;
    }
  return count != NULL ? count () : -1;
}

/* Evaluating n rows on the device from a resident copy (the default) and from
 * batches copied from the host (ESPALIER_CUDA_RESIDENT=0): the same metrics, exactly;
 * *copies: the host-to-device copies each made (-1 without the emulation). */
static void
evaluate_both (EsModel *model, EspalierDataset *ds, const guint32 *rows, guint n, EsLossKind loss,
               long copies[2])
{
  EspalierMetrics m[2] = { 0 };

  for (int k = 0; k < 2; k++)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *fallback = NULL;
      long before = h2d_copies ();

      if (k == 1)
        setenv ("ESPALIER_CUDA_RESIDENT", "0", 1);
      g_assert_true (espalier_evaluate_device (model, ds, rows, n, loss, 1, 0, FALSE, &fallback,
                                               &m[k], &error));
      unsetenv ("ESPALIER_CUDA_RESIDENT");
      g_assert_no_error (error);
      g_assert_null (fallback);
      copies[k] = before >= 0 ? h2d_copies () - before : -1;
    }
  g_test_message ("%u rows: loss %.9g / %.9g, accuracy %.6f / %.6f, host-to-device copies %ld "
                  "/ %ld", n, m[0].loss, m[1].loss, m[0].accuracy, m[1].accuracy, copies[0],
                  copies[1]);
  g_assert_cmpuint (m[0].rows, ==, n);
  g_assert_cmpfloat (m[0].loss, ==, m[1].loss);
  g_assert_cmpfloat (m[0].accuracy, ==, m[1].accuracy);
  g_assert_cmpuint (m[0].n_classes, ==, m[1].n_classes);
  g_assert_true (memcmp (m[0].confusion, m[1].confusion,
                         (gsize) m[0].n_classes * m[0].n_classes * sizeof (guint)) == 0);
  espalier_metrics_clear (&m[0]);
  espalier_metrics_clear (&m[1]);
}

/* Evaluation on the device from the rows kept there: the copying path's metrics, and
 * no host-to-device copy per batch (3000 rows are three batches, 1000 one: the
 * resident path copies as often for both, the copying path more for more). */
static void
test_evaluate_resident (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree guint32 *rows = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  long one[2], three[2];
  const guint n = 3000;

  if (!have_device ())
    return;
  ds = espalier_generate_from_spec ("spiral:n=3000,arms=3,noise=0.2,seed=3", &error);
  g_assert_no_error (error);
  model = playground (ds, &opts);
  rows = g_new (guint32, n);
  for (guint i = 0; i < n; i++)
    rows[i] = (i * 7) % n;   /* every row, out of order */
  evaluate_both (model, ds, rows, n / 3, opts.engine.loss, one);
  evaluate_both (model, ds, rows, n, opts.engine.loss, three);
  if (one[0] >= 0)
    {
      g_assert_cmpint (three[0], ==, one[0]);
      g_assert_cmpint (three[1], >, one[1]);
    }
  else
    g_test_message ("not the emulation: the copies are not counted");
  es_model_free (model);
}

/* fp16 from a scale that overflows the first steps (skipped, the scale lowered, then
 * grown every 2 clean steps), fed as the device is fed (the scaler on the device):
 * stopped in epoch 2 with a checkpoint every step and resumed from it, the run ends
 * with the weights of one that went through, and its last checkpoint holds the same
 * step and scaler state. */
static void
test_fp16_resume (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierTrainer) ta = NULL, tb = NULL, tc = NULL;
  g_autoptr(EspalierCheckpoint) cka = NULL, ckb = NULL, ckc = NULL;
  g_autofree char *pa = tmp_path ("a.ckpt"), *pb = tmp_path ("b.ckpt"), *pc = tmp_path ("c.ckpt");
  EspalierCheckpointInfo info;
  EspalierTrainOptions opts;
  Stopper stop;
  EsModel *model, *a, *b, *c;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground_for (ds, &opts, 3);
  opts.device = 0;
  opts.engine.precision = ES_PRECISION_FP16;
  opts.engine.loss_scale_init = 1073741824.0f;   /* 2^30 */
  opts.engine.loss_scale_backoff = 0.0625f;
  opts.engine.loss_scale_interval = 2;
  a = es_model_copy (model);
  b = es_model_copy (model);
  c = es_model_copy (model);

  ta = espalier_trainer_new (ds, a, &opts);
  espalier_trainer_set_checkpoint (ta, pa, 1);
  g_assert_true (espalier_trainer_run (ta, NULL, NULL, NULL, &error));
  g_assert_no_error (error);

  stop = (Stopper) { g_cancellable_new (), 2 };
  tb = espalier_trainer_new (ds, b, &opts);
  espalier_trainer_set_checkpoint (tb, pb, 1);
  g_assert_false (espalier_trainer_run (tb, stop.cancel, stop_in_epoch, &stop, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_object_unref (stop.cancel);
  ckb = espalier_checkpoint_load (pb, &error);
  g_assert_no_error (error);
  g_test_message ("stopped: checkpoint of step %lld (epoch %u, %llu rows in), scale %g, %lld "
                  "clean, %lld skipped", (long long) ckb->info.step, ckb->info.epoch,
                  (unsigned long long) ckb->info.position, (double) ckb->loss_scale,
                  (long long) ckb->scale_clean, (long long) ckb->skipped_steps);
  g_assert_true (ckb->have_scaler);
  g_assert_cmpint (ckb->skipped_steps, >, 0);
  g_assert_cmpfloat (ckb->loss_scale, <, opts.engine.loss_scale_init);
  g_assert_cmpuint (ckb->info.epoch, >=, 2);

  tc = espalier_trainer_new (ds, c, &opts);
  espalier_trainer_set_checkpoint (tc, pc, 1);
  g_assert_true (espalier_trainer_set_resume (tc, pb, &info, &error));
  g_assert_no_error (error);
  g_assert_true (espalier_trainer_run (tc, NULL, NULL, NULL, &error));
  g_assert_no_error (error);

  g_assert_true (memcmp (es_model_params_const (a), es_model_params_const (c),
                         es_model_n_params (a) * sizeof (float)) == 0);
  cka = espalier_checkpoint_load (pa, &error);
  g_assert_no_error (error);
  ckc = espalier_checkpoint_load (pc, &error);
  g_assert_no_error (error);
  g_test_message ("through: step %lld, scale %g, %lld clean, %lld skipped; resumed: step %lld, "
                  "scale %g, %lld clean, %lld skipped", (long long) cka->info.step,
                  (double) cka->loss_scale, (long long) cka->scale_clean,
                  (long long) cka->skipped_steps, (long long) ckc->info.step,
                  (double) ckc->loss_scale, (long long) ckc->scale_clean,
                  (long long) ckc->skipped_steps);
  g_assert_true (cka->have_scaler && ckc->have_scaler);
  g_assert_cmpint (ckc->info.step, ==, cka->info.step);
  g_assert_cmpfloat (ckc->loss_scale, ==, cka->loss_scale);
  g_assert_cmpint (ckc->scale_clean, ==, cka->scale_clean);
  g_assert_cmpint (ckc->skipped_steps, ==, cka->skipped_steps);
  g_assert_true (memcmp (cka->params, ckc->params, cka->n_params * sizeof (float)) == 0);
  remove_with_dir (pa);
  remove_with_dir (pb);
  remove_with_dir (pc);
  es_model_free (a);
  es_model_free (b);
  es_model_free (c);
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
  g_test_add_func ("/trainer-cuda/evaluate-resident", test_evaluate_resident);
  g_test_add_func ("/trainer-cuda/fp16-resume", test_fp16_resume);
  g_test_add_func ("/trainer-cuda/fp32-fallbacks", test_fp32_fallbacks);
  return g_test_run ();
}
