/* test-trainer.c: EspalierTrainer over real datasets: the playground template learns
 * the 3-arm spiral, cancelling stops cleanly, early stopping keeps the best epoch, the
 * async run reports progress in the caller's context, the memory budget halves the
 * batch and says so, and a model that does not fit its data is refused. */
#include <math.h>

#include "espalier-dataset.h"
#include "espalier-error.h"
#include "espalier-split.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

static EspalierDataset *
load (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions lo;
  EspalierDataset *ds;

  espalier_load_options_init (&lo);
  lo.use_cache = FALSE;
  ds = espalier_dataset_load (spec, &lo, NULL, &error);
  g_assert_no_error (error);
  return ds;
}

static EsModel *
template_for (EspalierDataset *ds, const char *name, EspalierTrainOptions *opts)
{
  g_autoptr(GError) error = NULL;
  const guint *dims = espalier_dataset_get_dims (ds);
  EsShape in = { (int) espalier_dataset_get_rank (ds), { 0 } };
  EsModel *m;

  for (int i = 0; i < in.rank; i++)
    in.dims[i] = (int) dims[i];
  m = espalier_model_from_template (name, &in, espalier_dataset_get_n_classes (ds), opts, &error);
  g_assert_no_error (error);
  es_model_init (m, opts->seed);
  return m;
}

typedef struct {
  guint steps, epochs, messages, starts;
  GCancellable *cancel_after;
  guint cancel_at;
  GThread *thread;
  gboolean wrong_thread;
  GString *text;
} Seen;

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Seen *seen = data;

  if (seen->thread != NULL && g_thread_self () != seen->thread)
    seen->wrong_thread = TRUE;
  switch (p->kind)
    {
    case ESPALIER_PROGRESS_START: seen->starts++; break;
    case ESPALIER_PROGRESS_STEP: seen->steps++; break;
    case ESPALIER_PROGRESS_EPOCH:
      seen->epochs++;
      g_assert_nonnull (p->record);
      g_assert_cmpuint (p->record->epoch, ==, p->epoch);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      seen->messages++;
      if (seen->text)
        g_string_append_printf (seen->text, "%s\n", p->message);
      break;
    }
  if (seen->cancel_after != NULL && p->kind == ESPALIER_PROGRESS_EPOCH && p->epoch == seen->cancel_at)
    g_cancellable_cancel (seen->cancel_after);
}

/* The target: the 3-arm spiral of 300 points to >= 97% training accuracy. */
static void
test_spiral_playground (void)
{
  g_autoptr(EspalierDataset) ds = load ("spiral:n=300,arms=3,noise=0.2,seed=1");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EspalierMetrics m = { 0 };
  EsModel *model;
  Seen seen = { 0 };
  GArray *hist;
  const EspalierEpochRecord *last;

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
  g_assert_no_error (error);
  hist = espalier_trainer_get_history (tr);
  g_assert_cmpuint (hist->len, ==, opts.epochs);
  g_assert_cmpuint (seen.epochs, ==, opts.epochs);
  g_assert_cmpuint (seen.starts, ==, 1);
  last = &g_array_index (hist, EspalierEpochRecord, hist->len - 1);

  /* training accuracy measured on the whole training split with the final weights */
  {
    const EspalierSplit *split = espalier_trainer_get_split (tr);
    g_assert_true (espalier_evaluate (model, ds, (const guint32 *) split->train->data,
                                      split->train->len, ES_LOSS_SOFTMAX_XENT, 1, &m, &error));
  }
  g_test_message ("spiral: last epoch loss %.4f acc %.4f; training split accuracy %.4f",
                  last->train_loss, last->train_accuracy, m.accuracy);
  g_assert_cmpfloat (m.accuracy, >=, 0.97);
  espalier_metrics_clear (&m);
  es_model_free (model);
}

static void
test_metrics_confusion (void)
{
  g_autoptr(EspalierDataset) ds = load ("blobs:n=300,centers=3,noise=0.3,seed=2");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EspalierMetrics m = { 0 };
  EsModel *model;
  guint total = 0;

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  opts.epochs = 20;
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_true (espalier_evaluate (model, ds, NULL, 0, ES_LOSS_SOFTMAX_XENT, 2, &m, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (m.rows, ==, 300);
  g_assert_cmpuint (m.n_classes, ==, 3);
  for (guint i = 0; i < 9; i++)
    total += m.confusion[i];
  g_assert_cmpuint (total, ==, 300);
  {
    guint diag = m.confusion[0] + m.confusion[4] + m.confusion[8];
    g_assert_cmpfloat_with_epsilon (m.accuracy, diag / 300.0, 1e-9);
  }
  for (guint k = 0; k < 3; k++)
    g_assert_cmpfloat (espalier_metrics_class_accuracy (&m, k), >=, 0.8);
  espalier_metrics_clear (&m);
  es_model_free (model);
}

static void
test_cancel (void)
{
  g_autoptr(EspalierDataset) ds = load ("moons:n=400,seed=3");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  Seen seen = { 0 };

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  seen.cancel_after = cancellable;
  seen.cancel_at = 2;
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_false (espalier_trainer_run (tr, cancellable, on_progress, &seen, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  /* it stopped after the first step of epoch 3 with usable weights */
  g_assert_cmpuint (espalier_trainer_get_history (tr)->len, ==, 2);
  for (gint64 i = 0; i < es_model_n_params (model); i++)
    g_assert_true (isfinite (es_model_params (model)[i]));
  es_model_free (model);
}

static void
test_early_stopping (void)
{
  g_autoptr(EspalierDataset) ds = load ("xor:n=200,noise=0.6,seed=4");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  Seen seen = { 0 };
  GArray *hist;
  double best = INFINITY;
  EspalierMetrics vm = { 0 };

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  /* a very noisy set and a high learning rate: validation loss soon stops improving */
  opts.epochs = 200;
  opts.val_fraction = 0.3;
  opts.patience = 3;
  opts.engine.lr = 0.1f;
  seen.text = g_string_new (NULL);
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
  hist = espalier_trainer_get_history (tr);
  g_test_message ("stopped after %u epochs: %s", hist->len, seen.text->str);
  g_assert_cmpuint (hist->len, <, 200);
  g_assert_nonnull (strstr (seen.text->str, "Stopped early"));
  for (guint i = 0; i < hist->len; i++)
    best = MIN (best, g_array_index (hist, EspalierEpochRecord, i).val_loss);
  /* the model holds the best epoch's weights */
  {
    const EspalierSplit *split = espalier_trainer_get_split (tr);
    g_assert_true (espalier_evaluate (model, ds, (const guint32 *) split->val->data,
                                      split->val->len, ES_LOSS_SOFTMAX_XENT, 1, &vm, &error));
    g_assert_cmpfloat_with_epsilon (vm.loss, best, 1e-4);
  }
  espalier_metrics_clear (&vm);
  g_string_free (seen.text, TRUE);
  es_model_free (model);
}

/* With early stopping on, a run that ends before its patience does still keeps the
 * weights of its best validation epoch. */
static void
test_best_epoch_kept (void)
{
  g_autoptr(EspalierDataset) ds = load ("xor:n=200,noise=0.6,seed=4");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  GArray *hist;
  double best = INFINITY;
  EspalierMetrics vm = { 0 };

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  opts.epochs = 25;
  opts.val_fraction = 0.3;
  opts.patience = 1000;
  opts.engine.lr = 0.1f;
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  hist = espalier_trainer_get_history (tr);
  g_assert_cmpuint (hist->len, ==, 25);
  for (guint i = 0; i < hist->len; i++)
    best = MIN (best, g_array_index (hist, EspalierEpochRecord, i).val_loss);
  {
    const EspalierSplit *split = espalier_trainer_get_split (tr);
    g_assert_true (espalier_evaluate (model, ds, (const guint32 *) split->val->data,
                                      split->val->len, ES_LOSS_SOFTMAX_XENT, 1, &vm, &error));
  }
  g_assert_cmpfloat_with_epsilon (vm.loss, best, 1e-4);
  espalier_metrics_clear (&vm);
  es_model_free (model);
}

static void
on_async_done (GObject *source, GAsyncResult *result, gpointer data)
{
  gboolean *done = data;
  g_autoptr(GError) error = NULL;

  g_assert_true (espalier_trainer_run_finish (ESPALIER_TRAINER (source), result, &error));
  g_assert_no_error (error);
  *done = TRUE;
}

static void
test_async (void)
{
  g_autoptr(EspalierDataset) ds = load ("circles:n=300,seed=5");
  g_autoptr(EspalierTrainer) tr = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  Seen seen = { 0 };
  gboolean done = FALSE;

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  opts.epochs = 10;
  seen.thread = g_thread_self ();
  tr = espalier_trainer_new (ds, model, &opts);
  espalier_trainer_run_async (tr, NULL, on_progress, &seen, NULL, on_async_done, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
  /* progress posted before completion has been delivered too */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_false (seen.wrong_thread);
  g_assert_cmpuint (seen.epochs, ==, 10);
  g_assert_cmpuint (seen.starts, ==, 1);
  g_assert_cmpuint (seen.steps, >=, 10);
  es_model_free (model);
}

/* Pause holds the worker between steps: nothing arrives while paused, and the resumed
 * run ends with every epoch once; a cancel wakes a paused run. */
typedef struct {
  gboolean  done;
  GError   *error;
} Finished;

static void
on_finished (GObject *source, GAsyncResult *result, gpointer data)
{
  Finished *fin = data;

  espalier_trainer_run_finish (ESPALIER_TRAINER (source), result, &fin->error);
  fin->done = TRUE;
}

static void
drain_for (guint ms)
{
  gint64 end = g_get_monotonic_time () + ms * 1000;

  while (g_get_monotonic_time () < end)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      g_usleep (5000);
    }
}

static void
test_pause (void)
{
  g_autoptr(EspalierDataset) ds = load ("spiral:n=3000,seed=2");
  EspalierTrainOptions opts;
  EsModel *model;

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  opts.epochs = 200;
  for (int cancel = 0; cancel < 2; cancel++)
    {
      g_autoptr(EspalierTrainer) tr = espalier_trainer_new (ds, model, &opts);
      g_autoptr(GCancellable) cancellable = g_cancellable_new ();
      Seen seen = { 0 };
      Finished fin = { 0 };
      guint steps, epochs;

      espalier_trainer_run_async (tr, cancellable, on_progress, &seen, NULL, on_finished, &fin);
      while (seen.steps == 0)
        g_main_context_iteration (NULL, TRUE);
      espalier_trainer_set_paused (tr, TRUE);
      g_assert_true (espalier_trainer_get_paused (tr));
      drain_for (200);                 /* what was posted before the pause */
      steps = seen.steps;
      epochs = seen.epochs;
      drain_for (300);
      g_assert_cmpuint (seen.steps, ==, steps);
      g_assert_cmpuint (seen.epochs, ==, epochs);
      g_assert_false (fin.done);
      if (cancel)
        g_cancellable_cancel (cancellable);      /* still paused */
      else
        espalier_trainer_set_paused (tr, FALSE);
      while (!fin.done)
        g_main_context_iteration (NULL, TRUE);
      while (g_main_context_iteration (NULL, FALSE))
        ;
      if (cancel)
        {
          g_assert_error (fin.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
          g_assert_cmpuint (seen.epochs, ==, epochs);
        }
      else
        {
          g_assert_no_error (fin.error);
          g_assert_cmpuint (seen.epochs, ==, opts.epochs);
          g_assert_cmpuint (espalier_trainer_get_history (tr)->len, ==, opts.epochs);
        }
      g_clear_error (&fin.error);
    }
  es_model_free (model);
}

static void
test_memory_limit_message (void)
{
  g_autoptr(EspalierDataset) ds = load ("spiral:n=600,seed=6");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *plan = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  EsMemPlan full;
  Seen seen = { 0 };

  espalier_train_options_init (&opts);
  model = template_for (ds, "playground", &opts);
  opts.epochs = 2;
  opts.batch_size = 512;
  es_mem_plan (model, &opts.engine, 512, TRUE, &full);
  opts.memory_limit = full.total / 2;
  seen.text = g_string_new (NULL);
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_trainer_get_micro_batch (tr), <, 512);
  g_assert_nonnull (strstr (seen.text->str, "accumulating"));
  plan = espalier_trainer_describe_plan (tr);
  g_assert_nonnull (strstr (plan, "activations"));
  g_string_free (seen.text, TRUE);
  es_model_free (model);
}

static void
test_refuses_mismatch (void)
{
  g_autoptr(EspalierDataset) ds = load ("spiral:n=90,arms=3,seed=7");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EsShape in = { 1, { 2 } };
  EspalierTrainOptions opts;
  EsModel *model;

  espalier_train_options_init (&opts);
  /* four outputs for three classes */
  model = espalier_model_from_spec ("dense:8,tanh,dense:4,softmax", &in, &error);
  g_assert_no_error (error);
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_false (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "3 classes"));
  es_model_free (model);
  g_clear_object (&tr);
  g_clear_error (&error);

  in.dims[0] = 3;
  model = espalier_model_from_spec ("dense:8,tanh,dense:3", &in, &error);
  tr = espalier_trainer_new (ds, model, &opts);
  g_assert_false (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  es_model_free (model);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/core/trainer/spiral-playground", test_spiral_playground);
  g_test_add_func ("/core/trainer/metrics-confusion", test_metrics_confusion);
  g_test_add_func ("/core/trainer/cancel", test_cancel);
  g_test_add_func ("/core/trainer/early-stopping", test_early_stopping);
  g_test_add_func ("/core/trainer/best-epoch-kept", test_best_epoch_kept);
  g_test_add_func ("/core/trainer/async", test_async);
  g_test_add_func ("/core/trainer/pause", test_pause);
  g_test_add_func ("/core/trainer/memory-limit", test_memory_limit_message);
  g_test_add_func ("/core/trainer/refuses-mismatch", test_refuses_mismatch);
  return g_test_run ();
}
