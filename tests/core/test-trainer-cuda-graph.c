/* test-trainer-cuda-graph.c: how EspalierTrainer feeds a CUDA device (the dataset
 * resident, batches by row index, deferred statistics and CUDA Graphs, or host batches
 * uploaded one ahead), against the same run fed eagerly (ESPALIER_CUDA_RESIDENT=0,
 * ESPALIER_CUDA_DEFERRED=0, ESPALIER_CUDA_GRAPHS=0: every batch copied and its loss
 * read back at once). The engine promises that a replayed step gives the weights of an
 * ordinary one bit for bit and that a gathered row is the row uploaded, so the weights,
 * the accuracies and the validation metrics must be equal exactly; only the epoch's
 * training loss is added up otherwise (each batch's losses summed on the device rather
 * than its mean loss times its rows), so it agrees to fp32 rounding. Also: a budget
 * that refuses the resident copy streams the batches; augmentation streams them; a NaN
 * noticed at a deferred reading stops the run with the eager run's message and weights.
 * Built like test-trainer-cuda (tests/cuda/meson.build): on the CUDA emulation's module
 * here and in CI, on the real backend's on a GPU machine, where without a device every
 * test skips. */
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data-test-util.h"
#include "espalier-dataset.h"
#include "espalier-device.h"
#include "espalier-error.h"
#include "espalier-generate.h"
#include "espalier-split.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"
#include "cuda-test-util.h"

/* The playground template on the CUDA device, 3 epochs of 8 batches. */
static EsModel *
playground (EspalierDataset *ds, EspalierTrainOptions *opts)
{
  EsModel *m = playground_for (ds, opts, 3);

  opts->device = 0;
  return m;
}

typedef enum {
  FEED_DEFAULT,    /* resident, deferred statistics, graphs */
  FEED_EAGER,      /* every one of them off */
} FeedMode;

typedef struct {
  GString *messages;
  guint    steps;
} Seen;

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Seen *seen = data;

  if (p->kind == ESPALIER_PROGRESS_MESSAGE)
    g_string_append_printf (seen->messages, "%s\n", p->message);
  if (p->kind == ESPALIER_PROGRESS_STEP)
    {
      g_assert_true (isfinite (p->loss));
      seen->steps++;
    }
}

typedef struct {
  GArray          *history;   /* EspalierEpochRecord */
  EsModel         *model;     /* the weights after the run */
  GString         *messages;
  GError          *error;
  EspalierProfile *profile;   /* when profiled */
} Run;

static void
run_clear (Run *r)
{
  g_clear_pointer (&r->history, g_array_unref);
  g_clear_pointer (&r->model, es_model_free);
  if (r->messages != NULL)
    g_string_free (r->messages, TRUE);
  r->messages = NULL;
  g_clear_error (&r->error);
  g_clear_pointer (&r->profile, espalier_profile_free);
}

/* Trains a copy of model with options o, fed as mode says; profiled or with a
 * progress callback as asked; ck_every > 0: checkpoints (the last good state) every
 * ck_every steps. */
static void
train (EspalierDataset            *ds,
       const EsModel              *model,
       const EspalierTrainOptions *o,
       FeedMode                    mode,
       gboolean                    profiled,
       gboolean                    progress,
       guint                       ck_every,
       Run                        *out)
{
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autofree char *dir = NULL, *path = NULL;
  Seen seen = { g_string_new (NULL), 0 };
  const char *vars[] = { "ESPALIER_CUDA_RESIDENT", "ESPALIER_CUDA_DEFERRED",
                         "ESPALIER_CUDA_GRAPHS" };

  memset (out, 0, sizeof *out);
  out->model = es_model_copy (model);
  /* setenv rather than g_setenv, which warns once threads have been made: the runs
   * before this one joined theirs, and nothing reads the environment meanwhile */
  for (guint i = 0; i < G_N_ELEMENTS (vars); i++)
    if (mode == FEED_EAGER)
      setenv (vars[i], "0", 1);
    else
      unsetenv (vars[i]);
  tr = espalier_trainer_new (ds, out->model, o);
  if (profiled)
    espalier_trainer_set_profiling (tr, TRUE, 0, FALSE);
  if (ck_every > 0)
    {
      dir = g_dir_make_tmp ("espalier-cuda-graph-XXXXXX", NULL);
      g_assert_nonnull (dir);
      path = g_build_filename (dir, "run.ckpt", NULL);
      espalier_trainer_set_checkpoint (tr, path, ck_every);
    }
  espalier_trainer_run (tr, NULL, progress ? on_progress : NULL, &seen, &out->error);
  for (guint i = 0; i < G_N_ELEMENTS (vars); i++)
    unsetenv (vars[i]);
  if (path != NULL)
    {
      g_remove (path);
      g_rmdir (dir);
    }
  out->history = g_array_ref (espalier_trainer_get_history (tr));
  out->messages = seen.messages;
  if (profiled)
    out->profile = espalier_profile_copy (espalier_trainer_get_profile (tr));
  if (progress && out->error == NULL)
    g_assert_cmpuint (seen.steps, >, 0);
}

/* b's epochs and weights are a's: exactly, but for the training loss. */
static void
assert_same_run (const Run *a, const Run *b)
{
  gsize P;

  g_assert_no_error (a->error);
  g_assert_no_error (b->error);
  g_assert_cmpuint (a->history->len, ==, b->history->len);
  for (guint e = 0; e < a->history->len; e++)
    {
      const EspalierEpochRecord *x = &g_array_index (a->history, EspalierEpochRecord, e);
      const EspalierEpochRecord *y = &g_array_index (b->history, EspalierEpochRecord, e);

      g_test_message ("epoch %u: loss %.9f / %.9f, accuracy %.6f / %.6f, val %.9f / %.9f",
                      e + 1, x->train_loss, y->train_loss, x->train_accuracy,
                      y->train_accuracy, x->val_loss, y->val_loss);
      g_assert_true (isfinite (y->train_loss));
      /* per batch, B float losses summed against their float mean times B: a few
       * units of fp32 rounding (6e-8) of the loss */
      g_assert_cmpfloat_with_epsilon (y->train_loss, x->train_loss, 1e-5 * x->train_loss);
      g_assert_cmpfloat (y->train_accuracy, ==, x->train_accuracy);
      g_assert_cmpfloat (y->val_loss, ==, x->val_loss);
      g_assert_cmpfloat (y->val_accuracy, ==, x->val_accuracy);
    }
  P = (gsize) es_model_n_params (a->model);
  g_assert_cmpint (es_model_n_params (b->model), ==, P);
  g_assert_true (memcmp (es_model_params_const (a->model), es_model_params_const (b->model),
                         P * sizeof (float)) == 0);
}

/* The bytes of the resident copy of ds (float inputs, int32 labels). */
static gsize
dataset_bytes (EspalierDataset *ds)
{
  return (gsize) espalier_dataset_get_n_rows (ds)
         * (espalier_dataset_get_row_size (ds) * sizeof (float) + sizeof (gint32));
}

/* Resident rows, deferred statistics and graphs: the eager run's results. With
 * progress reports (readings at unforeseen steps) and without (at the epoch's end);
 * profiled (eager steps on resident rows) too. */
static void
test_matches_eager (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  Run eager, fed, quiet, profiled;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  train (ds, model, &opts, FEED_EAGER, FALSE, TRUE, 0, &eager);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, TRUE, 0, &fed);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, FALSE, 0, &quiet);
  train (ds, model, &opts, FEED_DEFAULT, TRUE, FALSE, 0, &profiled);
  assert_same_run (&eager, &fed);
  assert_same_run (&eager, &quiet);
  assert_same_run (&eager, &profiled);
  g_assert_cmpstr (fed.messages->str, ==, "");
  /* the training loss fell */
  g_assert_cmpfloat (g_array_index (fed.history, EspalierEpochRecord, 2).train_loss, <,
                     g_array_index (fed.history, EspalierEpochRecord, 0).train_loss);
  /* the profiled run kept the dataset on the device, and timed its steps */
  g_assert_cmpint (profiled.profile->device, ==, 0);
  g_assert_cmpuint (profiled.profile->mem_kind[ES_MEM_DATA], >=, dataset_bytes (ds));
  g_assert_cmpuint (profiled.profile->steps, >, 0);
  g_assert_cmpfloat (profiled.profile->engine.total_s, >, 0.0);
  run_clear (&eager);
  run_clear (&fed);
  run_clear (&quiet);
  run_clear (&profiled);
  es_model_free (model);
}

/* A memory limit that holds the training but not the dataset beside it: the batches
 * stream from the host, say so, and train as the eager run does. A limit that holds
 * both keeps the dataset on the device, and the run stays under it. */
static void
test_budget_streams (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierTrainOptions opts;
  EsMemPlan plan;
  EsModel *model;
  Run eager, fed, profiled, roomy;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  /* The run's own plan (on the GPU, with batches staged ahead), which bounds all the
   * trainer charges (es-train.h), and the backend's 16 KiB for reductions (and 1 KiB for
   * its other small buffers). With all of the dataset too, it stays on the device; with
   * the backend's exact 16 KiB and all but a quarter of the dataset, the training
   * fits at full batch and the dataset would fit in what is left once the trainer is
   * made, but not beside what the steps still allocate later, so it must stream. */
  opts.engine.plan_cuda = true;
  opts.engine.plan_prefetch = true;
  es_mem_plan (model, &opts.engine, (int) opts.batch_size, TRUE, &plan);
  opts.memory_limit = plan.total + 17 * 1024 + dataset_bytes (ds);
  train (ds, model, &opts, FEED_DEFAULT, TRUE, TRUE, 0, &roomy);
  g_test_message ("limit %zu: %s", opts.memory_limit, roomy.messages->str);
  g_assert_null (strstr (roomy.messages->str, "does not fit in the device's memory budget"));
  g_assert_cmpuint (roomy.profile->mem_kind[ES_MEM_DATA], >=, dataset_bytes (ds));
  g_assert_cmpuint (roomy.profile->mem_peak, <=, opts.memory_limit);
  opts.memory_limit -= 1024 + dataset_bytes (ds) / 4;
  train (ds, model, &opts, FEED_EAGER, FALSE, TRUE, 0, &eager);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, TRUE, 0, &fed);
  train (ds, model, &opts, FEED_DEFAULT, TRUE, TRUE, 0, &profiled);
  g_test_message ("limit %zu: %s", opts.memory_limit, fed.messages->str);
  assert_same_run (&eager, &fed);
  assert_same_run (&eager, &profiled);
  g_assert_nonnull (strstr (fed.messages->str, "does not fit in the device's memory budget"));
  g_assert_null (strstr (fed.messages->str, "micro-batches"));   /* the batch fit */
  g_assert_cmpuint (profiled.profile->mem_kind[ES_MEM_DATA], <, dataset_bytes (ds));
  g_assert_cmpuint (profiled.profile->mem_peak, <=, opts.memory_limit);
  run_clear (&eager);
  run_clear (&fed);
  run_clear (&profiled);
  run_clear (&roomy);
  es_model_free (model);
}

/* Augmentation makes the batches on the host: they stream, and the run is the eager
 * one's with the same augmentation. */
static void
test_augment_streams (void)
{
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  Run eager, fed, profiled;

  if (!have_device ())
    return;
  ds = spiral ();
  model = playground (ds, &opts);
  opts.augment.noise_std = 0.05f;
  train (ds, model, &opts, FEED_EAGER, FALSE, TRUE, 0, &eager);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, TRUE, 0, &fed);
  train (ds, model, &opts, FEED_DEFAULT, TRUE, FALSE, 0, &profiled);
  assert_same_run (&eager, &fed);
  assert_same_run (&eager, &profiled);
  g_assert_nonnull (strstr (fed.messages->str, "Augmentation makes every batch on the host"));
  g_assert_cmpuint (profiled.profile->mem_kind[ES_MEM_DATA], <, dataset_bytes (ds));
  run_clear (&eager);
  run_clear (&fed);
  run_clear (&profiled);
  es_model_free (model);
}

/* uint8 images (a tiny fake Fashion-MNIST, as the real one is kept): resident as
 * uint8, converted as they are gathered, the eager run's results; with pixel shifts
 * and flips (augmentation made on the host) they stream, again as the eager run. */
static void
test_u8_images (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *dir = NULL;
  EspalierLoadOptions load;
  EspalierTrainOptions opts;
  const guint *dims;
  EsShape in = { 0 };
  EsModel *model;
  Run eager, fed, profiled;

  if (!have_device ())
    return;
  dir = dtu_tmpdir ();
  dtu_write_fake_fashion (dir, 96, 32);
  setenv ("ESPALIER_FASHION_MNIST_DIR", dir, 1);
  dtu_options_no_cache (&load);
  ds = espalier_dataset_load ("fashion-mnist", &load, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (espalier_dataset_is_u8 (ds));
  dims = espalier_dataset_get_dims (ds);
  in.rank = (int) espalier_dataset_get_rank (ds);
  for (int k = 0; k < in.rank; k++)
    in.dims[k] = (int) dims[k];
  espalier_train_options_init (&opts);
  model = espalier_model_from_spec ("flatten,dense:16,relu,dense:10", &in, &error);
  g_assert_no_error (error);
  es_model_init (model, 7);
  opts.epochs = 2;
  opts.batch_size = 16;
  opts.val_fraction = 0.25;
  opts.seed = 9;
  opts.threads = 1;
  opts.device = 0;
  train (ds, model, &opts, FEED_EAGER, FALSE, TRUE, 0, &eager);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, TRUE, 0, &fed);
  train (ds, model, &opts, FEED_DEFAULT, TRUE, FALSE, 0, &profiled);
  assert_same_run (&eager, &fed);
  assert_same_run (&eager, &profiled);
  g_assert_cmpstr (fed.messages->str, ==, "");
  /* kept as bytes: a quarter of the floats */
  g_assert_cmpuint (profiled.profile->mem_kind[ES_MEM_DATA], >=,
                    (gsize) espalier_dataset_get_n_rows (ds) * 784);
  g_assert_cmpuint (profiled.profile->mem_kind[ES_MEM_DATA], <,
                    (gsize) espalier_dataset_get_n_rows (ds) * 784 * sizeof (float));
  run_clear (&eager);
  run_clear (&fed);
  run_clear (&profiled);

  opts.augment.shift_pixels = 2;
  opts.augment.hflip = TRUE;
  train (ds, model, &opts, FEED_EAGER, FALSE, TRUE, 0, &eager);
  train (ds, model, &opts, FEED_DEFAULT, FALSE, TRUE, 0, &fed);
  assert_same_run (&eager, &fed);
  g_assert_nonnull (strstr (fed.messages->str, "Augmentation makes every batch on the host"));
  run_clear (&eager);
  run_clear (&fed);
  unsetenv ("ESPALIER_FASHION_MNIST_DIR");
  es_model_free (model);
}

/* A NaN planted in one training row: the step whose batch holds it fails. Fed
 * with deferred statistics the device stops updating there and the trainer notices at
 * its next reading, steps later; the error (step, epoch, first bad layer, the word for
 * the loss, the last good step) and the weights it goes back to are the eager run's.
 * ck_every: the last good state every ck_every steps (0: the run's start only).
 * fp16_scale > 0: in fp16 with that first loss scale, so large that the first steps
 * overflow and are skipped (they do not count as steps) in the same reading as the
 * bad one, which is then found at a step under its place among the batches read. */
static void
check_nan_in (guint ck_every, float fp16_scale)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierSplit) split = NULL;
  float *x = (float *) espalier_dataset_get_f32 (ds);   /* the test owns this dataset */
  EspalierTrainOptions opts;
  EsModel *model;
  Run eager, fed;
  guint32 row;

  if (!have_device ())
    return;
  model = playground (ds, &opts);
  if (fp16_scale > 0)
    {
      opts.engine.precision = ES_PRECISION_FP16;
      opts.engine.loss_scale_init = fp16_scale;
    }
  split = espalier_split_new (ds, opts.val_fraction, opts.test_fraction, opts.seed, &error);
  g_assert_no_error (error);
  /* a training row whose batch comes in the middle of the first epoch, so that the fed
   * run queues steps past the bad one before it reads: the eager run says where */
  for (guint i = 0;; i++)
    {
      g_autofree char *step = NULL;
      g_autoptr(GMatchInfo) mi = NULL;
      g_autoptr(GRegex) re = g_regex_new ("at step (\\d+) \\(epoch 1\\)", 0, 0, NULL);
      gint64 s;

      g_assert_cmpuint (i, <, split->train->len);
      row = g_array_index (split->train, guint32, i);
      x[(gsize) row * 2] = NAN;
      train (ds, model, &opts, FEED_EAGER, FALSE, FALSE, ck_every, &eager);
      g_assert_error (eager.error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
      g_assert_true (g_regex_match (re, eager.error->message, 0, &mi));
      step = g_match_info_fetch (mi, 1);
      s = g_ascii_strtoll (step, NULL, 10);
      if (fp16_scale > 0 ? s >= 2 && s <= 4 : s >= 3 && s <= 6)
        break;
      x[(gsize) row * 2] = 0.0f;   /* (its value does not matter: the run is over) */
      run_clear (&eager);
    }
  train (ds, model, &opts, FEED_DEFAULT, FALSE, FALSE, ck_every, &fed);
  g_assert_error (eager.error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
  g_assert_error (fed.error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
  g_test_message ("eager: %s", eager.error->message);
  g_test_message ("fed: %s", fed.error->message);
  g_assert_nonnull (strstr (eager.error->message, "layer 1 (dense), in its outputs"));
  g_assert_cmpstr (fed.error->message, ==, eager.error->message);
  g_assert_null (strstr (fed.error->message, "NaN or infinite"));
  for (gint64 i = 0; i < es_model_n_params (fed.model); i++)
    g_assert_true (isfinite (es_model_params_const (fed.model)[i]));
  g_assert_true (memcmp (es_model_params_const (eager.model), es_model_params_const (fed.model),
                         (gsize) es_model_n_params (fed.model) * sizeof (float)) == 0);
  run_clear (&eager);
  run_clear (&fed);
  es_model_free (model);
}

static void test_nan_start (void) { check_nan_in (0, 0); }
static void test_nan_last_good (void) { check_nan_in (2, 0); }
/* 2^24: the playground's gradients times it pass fp16's 65504 for the first few steps */
static void test_nan_fp16_skipped (void) { check_nan_in (0, 0x1p24f); }

int
main (int argc, char **argv)
{
#ifdef TEST_CUDA_MODULE
  /* the CUDA emulation's module, unless the caller names another */
  g_setenv ("ESPALIER_CUDA_MODULE", TEST_CUDA_MODULE, FALSE);
#endif
  dtu_init (&argc, &argv);   /* g_test_init, and a scratch directory */
  g_test_add_func ("/trainer-cuda-graph/matches-eager", test_matches_eager);
  g_test_add_func ("/trainer-cuda-graph/budget-streams", test_budget_streams);
  g_test_add_func ("/trainer-cuda-graph/augment-streams", test_augment_streams);
  g_test_add_func ("/trainer-cuda-graph/nan-start", test_nan_start);
  g_test_add_func ("/trainer-cuda-graph/nan-last-good", test_nan_last_good);
  g_test_add_func ("/trainer-cuda-graph/nan-fp16-skipped", test_nan_fp16_skipped);
  g_test_add_func ("/trainer-cuda-graph/u8-images", test_u8_images);
  return dtu_finish (g_test_run ());
}
