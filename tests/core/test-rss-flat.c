/* test-rss-flat.c: training, cancelling and training again in one process does not
 * grow it. Each cycle makes a new EspalierTrainer for the same dataset and model, runs
 * it and cancels it from the progress callback after a few steps, as the Train page's
 * Stop button does; the resident set (VmRSS of /proc/self/status, read after
 * malloc_trim (0) so that free memory the allocator keeps does not count) must be the
 * same after 50 more cycles as after the warm-up, within a bound derived from one run's
 * own working set. Under Valgrind or AddressSanitizer the cycles still run (their leak
 * checkers see every block a cycle leaves behind) but the resident set is theirs, not
 * ours, and is not measured. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "espalier-dataset.h"
#include "espalier-generate.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Cancel once the run has taken this many steps of its first epoch. */
#define CANCEL_AFTER_STEPS 4
#define WARMUP_RUNS        5
#define MEASURED_RUNS      50

typedef struct {
  GCancellable *cancellable;
  guint         steps_seen;    /* STEP records */
  gint64        rss_at_cancel; /* kB, read just before cancelling */
} Cycle;

/* The resident set of this process in kB, after giving free heap pages back. */
static gint64
rss_kb (void)
{
  g_autofree char *status = NULL;
  const char *line;

  malloc_trim (0);
  g_assert_true (g_file_get_contents ("/proc/self/status", &status, NULL, NULL));
  line = strstr (status, "\nVmRSS:");
  g_assert_nonnull (line);
  return g_ascii_strtoll (line + strlen ("\nVmRSS:"), NULL, 10);
}

/* Valgrind (the test setup "valgrind" sets ESPALIER_UNDER_VALGRIND) or ASan: their allocators
 * keep freed blocks (quarantine) and their own memory dominates the resident set. */
static const char *
under_tool (void)
{
  if (g_getenv ("ESPALIER_UNDER_VALGRIND") != NULL)
    return "Valgrind";
  if (UNDER_ASAN)
    return "AddressSanitizer";
  return NULL;
}

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Cycle *c = data;

  if (g_cancellable_is_cancelled (c->cancellable))
    return;
  if (p->kind == ESPALIER_PROGRESS_STEP)
    c->steps_seen++;
  if ((p->kind == ESPALIER_PROGRESS_STEP && p->step >= CANCEL_AFTER_STEPS)
      || p->kind == ESPALIER_PROGRESS_EPOCH)
    {
      c->rss_at_cancel = rss_kb ();
      g_cancellable_cancel (c->cancellable);
    }
}

/* One cycle: a new trainer on ds and model, run until cancelled, freed. Returns the
 * resident set read at the moment of cancelling. */
static gint64
train_and_cancel (EspalierDataset *ds, EsModel *model, const EspalierTrainOptions *opts)
{
  g_autoptr(EspalierTrainer) tr = espalier_trainer_new (ds, model, opts);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  Cycle c = { .cancellable = cancellable };

  g_assert_false (espalier_trainer_run (tr, cancellable, on_progress, &c, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (c.steps_seen, >=, 1);
  /* it stopped in its first epoch: no record was completed */
  g_assert_cmpuint (espalier_trainer_get_history (tr)->len, ==, 0);
  return c.rss_at_cancel;
}

typedef struct {
  EspalierDataset      *ds;
  EsModel              *model;
  EspalierTrainOptions  opts;
} Fixture;

/* A wide MLP on the spiral: about 270 000 parameters, so that weights, gradients, Adam's
 * two moments and the activations of a batch make a working set of megabytes that the
 * trainer allocates at every run, and a leak of a small part of it shows. */
static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  EsShape in = { 1, { 2 } };

  f->ds = espalier_generate_from_spec ("spiral:n=4000,arms=3,noise=0.2,seed=11", &error);
  g_assert_no_error (error);
  f->model = espalier_model_from_spec ("dense:512,relu,dense:512,relu,dense:3,softmax",
                                       &in, &error);
  g_assert_no_error (error);
  es_model_init (f->model, 11);
  espalier_train_options_init (&f->opts);
  f->opts.epochs = 1000;          /* never reached: every run is cancelled */
  f->opts.batch_size = 32;
  f->opts.seed = 11;
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  es_model_free (f->model);
  g_object_unref (f->ds);
}

/* The cycles alone, a few of them: under the leak checkers this is the test. */
static void
test_cycles (Fixture *f, gconstpointer data)
{
  for (int i = 0; i < 3; i++)
    train_and_cancel (f->ds, f->model, &f->opts);
}

static void
test_rss_flat (Fixture *f, gconstpointer data)
{
  const char *tool = under_tool ();
  gint64 before, during, working_set, base, end, growth, bound;

  if (tool != NULL)
    {
      g_autofree char *why = g_strdup_printf ("the resident set under %s is the tool's, "
                                              "not the program's", tool);
      g_test_skip (why);
      return;
    }

  /* One run's working set: what the process holds while a run is in progress beyond
   * what it held before any (dataset, model, libraries). */
  before = rss_kb ();
  during = train_and_cancel (f->ds, f->model, &f->opts);
  working_set = during - before;
  g_test_message ("resident before the first run %" G_GINT64_FORMAT " kB, during it %"
                  G_GINT64_FORMAT " kB: working set of a run %" G_GINT64_FORMAT " kB",
                  before, during, working_set);
  /* the model's own training state alone (weights, gradients, two moments) is 4 floats
   * per parameter: the measurement must at least see that */
  g_assert_cmpint (working_set * 1024, >=, 4 * (gint64) sizeof (float) * es_model_n_params (f->model) / 2);

  /* Warm-up: thread stacks, per-thread malloc arenas and OpenBLAS's buffers are kept
   * for reuse after the first runs; they are not growth. */
  for (int i = 1; i < WARMUP_RUNS; i++)
    train_and_cancel (f->ds, f->model, &f->opts);
  base = rss_kb ();
  for (int i = 0; i < MEASURED_RUNS; i++)
    train_and_cancel (f->ds, f->model, &f->opts);
  end = rss_kb ();
  growth = end - base;

  /* The bound: a quarter of one run's working set over all 50 runs. A run that kept
   * even 1/200 of what it allocates (one of its gradient or moment buffers would be a
   * quarter) would exceed it; what is left is page-granular allocator noise, which
   * malloc_trim reduces to a few pages. */
  bound = working_set / 4;
  g_test_message ("resident after %d warm-up runs %" G_GINT64_FORMAT " kB, after %d more %"
                  G_GINT64_FORMAT " kB: growth %" G_GINT64_FORMAT " kB, %.1f kB per run "
                  "(bound %" G_GINT64_FORMAT " kB over the %d runs)",
                  WARMUP_RUNS, base, MEASURED_RUNS, end, growth,
                  (double) growth / MEASURED_RUNS, bound, MEASURED_RUNS);
  g_assert_cmpint (growth, <, bound);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/core/rss-flat/cycles", Fixture, NULL, fixture_set_up, test_cycles,
              fixture_tear_down);
  g_test_add ("/core/rss-flat/train-cancel-50", Fixture, NULL, fixture_set_up,
              test_rss_flat, fixture_tear_down);
  return g_test_run ();
}
