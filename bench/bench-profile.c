/* bench-profile.c: what profiling costs. The reference MLP (the "mlp" template:
 * Flatten -> Dense 128 ReLU -> Dense 10 Softmax, Adam) trains one epoch of
 * Fashion-MNIST through core's EspalierTrainer with profiling off and on
 * (espalier_trainer_set_profiling (trainer, TRUE, 0, FALSE): every step, no trace), the
 * two alternating (off-on, then on-off, ...) so drift on a shared machine hits both
 * alike. A run's step time is its epoch's training wall time over its steps (the
 * EspalierEpochRecord; no validation split). Reported per batch size: the median step
 * time of each side, the median of the paired on/off ratios with their quartiles,
 * and the verdict against the profiler issue's target, on <= 1.03 x off: pass, FAIL,
 * or "too noisy" when the ratios' quartiles lie further apart than the 3% to be told
 * (another load on the machine; run it again on a quiet one).
 *
 * The same comparison on the engine alone, finer grained: an EsTrainer of the same
 * model, batch and threads steps through the training rows in blocks of 25 steps,
 * profiling off and on block by block (pairs in alternating order), so load that comes
 * and goes on the machine falls on both sides; the median step time of each side and
 * the median of the paired ratios.
 *
 * Beside each wall time, the process's CPU time (CLOCK_PROCESS_CPUTIME_ID) per step:
 * on a machine where other work runs, time spent preempted inflates wall times at
 * random but not CPU times, so the CPU ratio is the steadier reading there (the
 * core runs' CPU time covers the whole run, setup included, the same on both sides).
 *
 * Also measured, to say where the cost comes from: the clock reads profiling makes per
 * step (counted through the engine's event callback) and the cost of one es_now (the
 * best of 20 timings of 100,000 calls, so preemption does not count); and profiling's
 * own cost per step in microseconds, on a tiny MLP with the same layers (input 4,
 * Dense 4, ReLU, Dense 10: the same clock reads and counters, almost no arithmetic),
 * where it is a large share of the step and so stands out of the noise: the median
 * of the paired (on - off) differences over 101 pairs of 200-step blocks, and the
 * difference of the best blocks (on a loaded machine the best block of each side is
 * the one nothing preempted).
 *
 * Usage: bench-profile [--runs R] [--batch B]... [--threads N]
 *   --runs R     off/on pairs per batch size (7)
 *   --batch B    batch sizes to run (32 and 128 when none is given)
 *   --threads N  compute threads (0, the default: the trainer chooses by the work)
 * Prints a line per batch size and one JSON line; exits 1 when a batch size misses the
 * target, 3 when none does but the machine was too noisy to tell, 2 when it cannot run
 * (no Fashion-MNIST). Not a test: timings depend on the
 * machine and on what else runs. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "es-backend.h"
#include "es-train.h"
#include "espalier-dataset.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

#define MAX_BATCHES 8
#define TARGET_RATIO 1.03
/* Paired ratios whose quartiles are further apart than this cannot tell 3%. */
#define MAX_SPREAD   (TARGET_RATIO - 1.0)

typedef struct {
  guint   batch;
  guint   steps;              /* per epoch */
  double  off_s, on_s;        /* median step seconds */
  double  ratio;              /* median of the paired on / off ratios */
  double  ratio_q1, ratio_q3; /* their quartiles: how noisy the machine was */
  double  min_off_s, min_on_s;
  double  clock_reads;        /* es_now calls the engine makes per step */
  int     threads;            /* the trainer's compute threads */
  double  eng_off_s, eng_on_s, eng_ratio;   /* the engine alone, as above */
  double  cpu_ratio, eng_cpu_ratio;         /* the same on process CPU time */
  double  tiny_off_s, tiny_cost_s;          /* the tiny MLP: step off, on - off */
  double  tiny_best_cost_s;                 /* best on - best off */
  const char *verdict;                      /* "pass", "FAIL", "too noisy" */
} Result;

/* The process's CPU time, seconds. */
static double
cpu_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double
median (double *v, int n)
{
  qsort (v, (size_t) n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The q-quantile of v (n), sorting v; linear between neighbours. */
static double
quantile (double *v, int n, double q)
{
  double pos = q * (n - 1);
  int i = (int) pos;

  qsort (v, (size_t) n, sizeof *v, cmp_double);
  return i + 1 < n ? v[i] + (pos - i) * (v[i + 1] - v[i]) : v[n - 1];
}

static double
minimum (const double *v, int n)
{
  double m = v[0];

  for (int i = 1; i < n; i++)
    m = MIN (m, v[i]);
  return m;
}

/* Progress goes nowhere, as a GUI's would when nobody looks, but it is reported. */
static void
on_progress (const EspalierProgress *p, gpointer user_data)
{
  (void) p;
  (void) user_data;
}

/* One epoch of batches of `batch` rows; the seconds per step of its training pass,
 * and its steps in *steps. */
static double
run_epoch (EspalierTrainer *trainer, gboolean profiling, guint batch, guint *steps,
           double *cpu_s)
{
  g_autoptr (GError) error = NULL;
  GArray *history;
  const EspalierEpochRecord *rec;
  double c0 = cpu_now ();

  espalier_trainer_set_profiling (trainer, profiling, 0, FALSE);
  if (!espalier_trainer_run (trainer, NULL, on_progress, NULL, &error))
    {
      g_printerr ("bench-profile: training failed: %s\n", error->message);
      exit (2);
    }
  history = espalier_trainer_get_history (trainer);
  g_assert (history->len == 1);
  rec = &g_array_index (history, EspalierEpochRecord, 0);
  *steps = (espalier_trainer_get_split (trainer)->train->len + batch - 1) / batch;
  if (cpu_s != NULL)
    *cpu_s = (cpu_now () - c0) / *steps;
  if (profiling)
    {
      const EspalierProfile *prof = espalier_trainer_get_profile (trainer);

      /* every step profiled (core may leave the run's first out as warm-up) */
      if (prof == NULL || prof->steps > *steps || prof->steps + 1 < *steps)
        {
          g_printerr ("bench-profile: the profile holds %u steps, not %u\n",
                      prof != NULL ? prof->steps : 0, *steps);
          exit (2);
        }
    }
  return rec->seconds / *steps;
}

static void
count_event (void *user, EsStage stage, int layer, double t0, double t1)
{
  (void) stage;
  (void) layer;
  (void) t0;
  (void) t1;
  (*(gint64 *) user)++;
}

/* Clock reads per training step of model at this batch: one per interval the engine
 * reports (its readings are chained), counted on a few batches of zeros. */
static double
engine_clock_reads (EsModel *model, const EspalierTrainOptions *opts, guint batch)
{
  EsModel *copy = es_model_copy (model);
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsTrainer *tr;
  EsShape in = es_model_input_shape (copy);
  float *x = g_new0 (float, (gsize) batch * (gsize) es_shape_size (&in));
  gint32 *y = g_new0 (gint32, batch);
  EsBatch b = { .B = (int) batch, .x_f32 = x, .labels = y };
  gint64 events = 0;
  const int n = 4;

  tr = es_trainer_new (copy, be, &opts->engine, (int) batch, NULL);
  g_assert (tr != NULL);
  es_trainer_set_profiling (tr, true);
  es_trainer_set_profile_events (tr, count_event, &events);
  for (int i = 0; i < n; i++)
    g_assert (es_trainer_train_batch (tr, &b, NULL, NULL));
  es_trainer_free (tr);
  es_backend_free (be);
  es_model_free (copy);
  g_free (x);
  g_free (y);
  /* one more per batch: the reading that starts it */
  return (double) events / n + 1.0;
}

/* Seconds per es_now call: the best of 20 timings of 100,000 calls. */
static double
clock_cost (void)
{
  const int n = 100000;
  volatile double sink = 0.0;
  double best = INFINITY;

  for (int trial = 0; trial < 20; trial++)
    {
      double t0 = es_now ();

      for (int i = 0; i < n; i++)
        sink += es_now ();
      best = MIN (best, (es_now () - t0) / n);
    }
  (void) sink;
  return best;
}

#define BLOCK_STEPS 25

/* Seconds per step of BLOCK_STEPS steps of tr from row *row of the dataset's first
 * n_rows rows (wrapping), and CPU seconds per step into *cpu_s. */
static double
engine_block (EsTrainer *tr, EspalierDataset *ds, guint n_rows, guint batch, guint *row,
              double *cpu_s)
{
  const guint8 *x = espalier_dataset_get_u8 (ds);
  const gint32 *y = espalier_dataset_get_labels (ds);
  gsize F = espalier_dataset_get_row_size (ds);
  double c0 = cpu_now (), t0 = es_now ();

  for (int s = 0; s < BLOCK_STEPS; s++)
    {
      EsBatch b = { .B = (int) batch, .x_u8 = x + (gsize) *row * F,
                    .scale = espalier_dataset_get_scale (ds),
                    .shift = espalier_dataset_get_shift (ds), .labels = y + *row };
      EsError err = { 0 };

      if (!es_trainer_train_batch (tr, &b, NULL, &err))
        {
          g_printerr ("bench-profile: %s\n", err.message);
          exit (2);
        }
      *row += batch;
      if (*row + batch > n_rows)
        *row = 0;
    }
  *cpu_s = (cpu_now () - c0) / BLOCK_STEPS;
  return (es_now () - t0) / BLOCK_STEPS;
}

/* The engine alone: pairs of blocks off and on, r->threads threads. */
static void
engine_overhead (EsModel *model, const EspalierTrainOptions *opts, EspalierDataset *ds,
                 guint pairs, Result *r)
{
  EsModel *copy = es_model_copy (model);
  EsBackend *be = es_cpu_backend_new (r->threads, NULL, NULL);
  guint n_rows = espalier_dataset_get_n_predefined_train (ds), row = 0;
  double *off = g_new (double, pairs), *on = g_new (double, pairs);
  double *ratio = g_new (double, pairs), *cpu_ratio = g_new (double, pairs);
  double cpu_off, cpu_on, dummy;
  EsTrainer *tr;

  g_assert (be != NULL && espalier_dataset_get_u8 (ds) != NULL);
  tr = es_trainer_new (copy, be, &opts->engine, (int) r->batch, NULL);
  g_assert (tr != NULL);
  for (int w = 0; w < 4; w++)  /* warm-up */
    engine_block (tr, ds, n_rows, r->batch, &row, &dummy);
  for (guint i = 0; i < pairs; i++)
    {
      for (int k = 0; k < 2; k++)
        {
          gboolean prof = (k == 0) == (i % 2 == 1);

          es_trainer_set_profiling (tr, prof);
          (prof ? on : off)[i] = engine_block (tr, ds, n_rows, r->batch, &row,
                                               prof ? &cpu_on : &cpu_off);
        }
      ratio[i] = on[i] / off[i];
      cpu_ratio[i] = cpu_on / cpu_off;
    }
  r->eng_off_s = median (off, (int) pairs);
  r->eng_on_s = median (on, (int) pairs);
  r->eng_ratio = median (ratio, (int) pairs);
  r->eng_cpu_ratio = median (cpu_ratio, (int) pairs);
  es_trainer_free (tr);
  es_backend_free (be);
  es_model_free (copy);
  g_free (off);
  g_free (on);
  g_free (ratio);
  g_free (cpu_ratio);
}

/* Profiling's own cost per step: the tiny MLP of the same layers as the reference,
 * batch r->batch, r->threads threads. */
static void
tiny_overhead (Result *r)
{
  enum { PAIRS = 101, STEPS = 200, D = 4, C = 10 };
  EsShape in = { 1, { D } };
  EsLayerSpec l[5];
  EsModel *m;
  EsBackend *be = es_cpu_backend_new (r->threads, NULL, NULL);
  EsTrainConfig cfg;
  EsTrainer *tr;
  float *x = g_new (float, (gsize) r->batch * D);
  gint32 *y = g_new (gint32, r->batch);
  EsBatch b = { .B = (int) r->batch, .x_f32 = x, .labels = y };
  double off[PAIRS], on[PAIRS], diff[PAIRS];
  EsRng rng = { 1 };

  l[0] = es_layer_spec_default (ES_LAYER_FLATTEN);
  l[1] = es_layer_spec_default (ES_LAYER_DENSE);
  l[1].units = 4;
  l[2] = es_layer_spec_default (ES_LAYER_RELU);
  l[3] = es_layer_spec_default (ES_LAYER_DENSE);
  l[3].units = C;
  l[4] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, 5, NULL);
  g_assert (m != NULL && be != NULL);
  es_model_init (m, 1);
  for (guint i = 0; i < r->batch * D; i++)
    x[i] = (float) es_rng_normal (&rng);
  for (guint i = 0; i < r->batch; i++)
    y[i] = (gint32) (i % C);
  es_train_config_default (&cfg);
  tr = es_trainer_new (m, be, &cfg, (int) r->batch, NULL);
  g_assert (tr != NULL);
  for (int i = 0; i < STEPS; i++)
    es_trainer_train_batch (tr, &b, NULL, NULL);
  for (int i = 0; i < PAIRS; i++)
    {
      double t[2];

      for (int k = 0; k < 2; k++)
        {
          gboolean prof = (k == 0) == (i % 2 == 1);
          double t0;

          es_trainer_set_profiling (tr, prof);
          t0 = es_now ();
          for (int s = 0; s < STEPS; s++)
            es_trainer_train_batch (tr, &b, NULL, NULL);
          t[prof] = (es_now () - t0) / STEPS;
        }
      off[i] = t[0];
      on[i] = t[1];
      diff[i] = t[1] - t[0];
    }
  r->tiny_best_cost_s = minimum (on, PAIRS) - minimum (off, PAIRS);
  r->tiny_off_s = median (off, PAIRS);
  r->tiny_cost_s = median (diff, PAIRS);
  es_trainer_free (tr);
  es_backend_free (be);
  es_model_free (m);
  g_free (x);
  g_free (y);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EspalierDataset) ds = NULL;
  guint batches[MAX_BATCHES], n_batches = 0, runs = 7, threads = 0;
  Result results[MAX_BATCHES];
  EsShape input = { 0 };
  double now_s;
  gboolean any_fail = FALSE, any_noisy = FALSE;
  GString *json;

  /* options and their values, in pairs */
  for (int i = 1; i < argc; i += 2)
    {
      int v = i + 1 < argc ? atoi (argv[i + 1]) : -1;

      if (strcmp (argv[i], "--runs") == 0 && v >= 1)
        runs = (guint) v;
      else if (strcmp (argv[i], "--batch") == 0 && v >= 1 && n_batches < MAX_BATCHES)
        batches[n_batches++] = (guint) v;
      else if (strcmp (argv[i], "--threads") == 0 && v >= 0)
        threads = (guint) v;
      else
        {
          g_printerr ("usage: bench-profile [--runs R] [--batch B]... [--threads N]\n");
          return 2;
        }
    }
  if (n_batches == 0)
    {
      batches[n_batches++] = 32;
      batches[n_batches++] = 128;
    }
  if (!espalier_dataset_fashion_mnist_available ())
    {
      g_printerr ("bench-profile: Fashion-MNIST is not installed (%s)\n",
                  espalier_dataset_fashion_mnist_dir ());
      return 2;
    }
  ds = espalier_dataset_load ("fashion-mnist", NULL, NULL, &error);
  if (ds == NULL)
    {
      g_printerr ("bench-profile: %s\n", error->message);
      return 2;
    }
  input.rank = (int) espalier_dataset_get_rank (ds);
  for (int d = 0; d < input.rank; d++)
    input.dims[d] = (int) espalier_dataset_get_dims (ds)[d];

  now_s = clock_cost ();
  printf ("es_now: %.1f ns a call\n", now_s * 1e9);

  for (guint k = 0; k < n_batches; k++)
    {
      EspalierTrainOptions opts;
      g_autoptr (EspalierTrainer) trainer = NULL;
      EsModel *model;
      double *off = g_new (double, runs), *on = g_new (double, runs);
      double *ratio = g_new (double, runs), *cpu_ratio = g_new (double, runs);
      Result *r = &results[k];

      model = espalier_model_from_template ("mlp", &input, espalier_dataset_get_n_classes (ds),
                                            &opts, &error);
      if (model == NULL)
        {
          g_printerr ("bench-profile: %s\n", error->message);
          return 2;
        }
      opts.epochs = 1;
      opts.batch_size = batches[k];
      opts.val_fraction = 0.0;
      opts.patience = 0;
      opts.threads = threads;
      trainer = espalier_trainer_new (ds, model, &opts);
      memset (r, 0, sizeof *r);
      r->batch = batches[k];
      r->clock_reads = engine_clock_reads (model, &opts, r->batch);

      /* warm-up: page faults, caches, the batcher's first epoch */
      run_epoch (trainer, FALSE, r->batch, &r->steps, NULL);
      run_epoch (trainer, TRUE, r->batch, &r->steps, NULL);
      r->threads = espalier_trainer_get_profile (trainer)->threads.pool_threads;
      for (guint i = 0; i < runs; i++)
        {
          double cpu_off, cpu_on;

          if (i % 2 == 0)
            {
              off[i] = run_epoch (trainer, FALSE, r->batch, &r->steps, &cpu_off);
              on[i] = run_epoch (trainer, TRUE, r->batch, &r->steps, &cpu_on);
            }
          else
            {
              on[i] = run_epoch (trainer, TRUE, r->batch, &r->steps, &cpu_on);
              off[i] = run_epoch (trainer, FALSE, r->batch, &r->steps, &cpu_off);
            }
          ratio[i] = on[i] / off[i];
          cpu_ratio[i] = cpu_on / cpu_off;
        }
      r->min_off_s = minimum (off, (int) runs);
      r->min_on_s = minimum (on, (int) runs);
      r->off_s = median (off, (int) runs);
      r->on_s = median (on, (int) runs);
      r->ratio = median (ratio, (int) runs);
      r->ratio_q1 = quantile (ratio, (int) runs, 0.25);
      r->ratio_q3 = quantile (ratio, (int) runs, 0.75);
      r->cpu_ratio = median (cpu_ratio, (int) runs);
      r->verdict = r->ratio_q3 - r->ratio_q1 > MAX_SPREAD ? "too noisy"
                   : r->ratio <= TARGET_RATIO ? "pass" : "FAIL";
      any_fail |= strcmp (r->verdict, "FAIL") == 0;
      any_noisy |= strcmp (r->verdict, "too noisy") == 0;
      printf ("batch %u, %u steps, %d threads: off %.1f us/step, on %.1f us/step (medians of "
              "%u; best %.1f / %.1f); on/off %.4f (quartiles %.4f-%.4f; CPU time %.4f), "
              "target <= %.2f: %s\n",
              r->batch, r->steps, r->threads, r->off_s * 1e6, r->on_s * 1e6, runs,
              r->min_off_s * 1e6, r->min_on_s * 1e6, r->ratio, r->ratio_q1, r->ratio_q3,
              r->cpu_ratio, TARGET_RATIO, r->verdict);
      engine_overhead (model, &opts, ds, 8 * runs, r);
      printf ("  engine alone (%u pairs of %d-step blocks): off %.1f us/step, on %.1f us/step; "
              "on/off %.4f (CPU time %.4f)\n", 8 * runs, BLOCK_STEPS, r->eng_off_s * 1e6,
              r->eng_on_s * 1e6, r->eng_ratio, r->eng_cpu_ratio);
      tiny_overhead (r);
      printf ("  profiling's own cost: %.2f us a step (best blocks: %.2f us; tiny MLP of the "
              "same layers: off %.2f us/step), %.2f%% of the reference step off\n",
              r->tiny_cost_s * 1e6, r->tiny_best_cost_s * 1e6, r->tiny_off_s * 1e6,
              100.0 * r->tiny_cost_s / r->off_s);
      printf ("  of which engine clock reads: %.0f a step, %.2f us\n", r->clock_reads,
              r->clock_reads * now_s * 1e6);
      g_free (off);
      g_free (on);
      g_free (ratio);
      g_free (cpu_ratio);
      es_model_free (model);
    }

  json = g_string_new (NULL);
  g_string_append_printf (json, "{\"bench\":\"profile\",\"target_ratio\":%.2f,"
                          "\"es_now_ns\":%.2f,\"runs\":%u,\"results\":[", TARGET_RATIO,
                          now_s * 1e9, runs);
  for (guint k = 0; k < n_batches; k++)
    {
      const Result *r = &results[k];

      g_string_append_printf (json, "%s{\"batch\":%u,\"steps\":%u,\"off_us\":%.2f,"
                              "\"on_us\":%.2f,\"ratio\":%.4f,\"ratio_q1\":%.4f,"
                              "\"ratio_q3\":%.4f,\"best_off_us\":%.2f,"
                              "\"best_on_us\":%.2f,\"clock_reads_per_step\":%.0f,"
                              "\"threads\":%d,\"engine_off_us\":%.2f,\"engine_on_us\":%.2f,"
                              "\"engine_ratio\":%.4f,\"cpu_ratio\":%.4f,"
                              "\"engine_cpu_ratio\":%.4f,\"own_cost_us\":%.3f,"
                              "\"own_cost_best_us\":%.3f,\"own_cost_share\":%.5f,"
                              "\"verdict\":\"%s\"}",
                              k ? "," : "", r->batch, r->steps, r->off_s * 1e6,
                              r->on_s * 1e6, r->ratio, r->ratio_q1, r->ratio_q3,
                              r->min_off_s * 1e6,
                              r->min_on_s * 1e6, r->clock_reads, r->threads,
                              r->eng_off_s * 1e6, r->eng_on_s * 1e6, r->eng_ratio,
                              r->cpu_ratio, r->eng_cpu_ratio, r->tiny_cost_s * 1e6,
                              r->tiny_best_cost_s * 1e6,
                              r->tiny_cost_s / r->off_s, r->verdict);
    }
  g_string_append_printf (json, "],\"verdict\":\"%s\"}",
                          any_fail ? "FAIL" : any_noisy ? "too noisy" : "pass");
  printf ("%s\n", json->str);
  g_string_free (json, TRUE);
  return any_fail ? 1 : any_noisy ? 3 : 0;
}
