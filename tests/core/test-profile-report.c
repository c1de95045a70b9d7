/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-profile-report.c: the bottleneck analyzer on short real runs. The stages of a
 * step add up to its wall time; the trace is trace-event JSON with every interval
 * inside its step; runs built around one known bottleneck (heavy augmentation on a
 * tiny model, batches of two rows, a memory limit just above the run's need, a model
 * with one big layer) each make the advisor name that bottleneck first; applying the
 * larger batch to the tiny-batch run measures both sides and gains rows per second; the
 * JSON has its documented members; a live run's progress carries the profile; advice
 * that cannot be applied says why; more batcher threads are applied and measured; and
 * denormals with flush-to-zero off are counted and probed. */
#include "config.h"

#include <math.h>

#include "espalier-dataset-private.h"
#include "espalier-error.h"
#include "espalier-generate.h"
#include "espalier-profile-report.h"
#include "espalier-templates.h"

#include "data-test-util.h"

static EspalierDataset *
spiral (void)
{
  g_autoptr(GError) error = NULL;
  EspalierDataset *ds = espalier_generate_from_spec ("spiral:n=300,arms=3,noise=0.2,seed=1",
                                                     &error);

  g_assert_no_error (error);
  return ds;
}

/* N uint8 images of (1, 28, 28) in 10 classes, all of them training rows. */
static EspalierDataset *
images (guint N)
{
  const guint dims[3] = { 1, 28, 28 };
  EspalierDataset *ds = _espalier_dataset_new ("images", "test");
  const guint F = 28 * 28;

  _espalier_dataset_set_shape (ds, 3, dims);
  ds->n_rows = N;
  ds->n_predefined_train = N;
  ds->u8 = g_new (guint8, (gsize) N * F);
  ds->labels = g_new (gint32, N);
  for (guint n = 0; n < N; n++)
    {
      for (guint j = 0; j < F; j++)
        ds->u8[(gsize) n * F + j] = (guint8) ((7 * n + 3 * j) % 256);
      ds->labels[n] = (gint32) (n % 10);
    }
  ds->scale = 1.0f / 255.0f;
  _espalier_dataset_set_numbered_classes (ds, 10);
  return ds;
}

static EsModel *
model_for (EspalierDataset *ds, const char *spec)
{
  g_autoptr(GError) error = NULL;
  const guint *dims = espalier_dataset_get_dims (ds);
  EsShape in = { (int) espalier_dataset_get_rank (ds), { 0 } };
  EsModel *m;

  for (int i = 0; i < in.rank; i++)
    in.dims[i] = (int) dims[i];
  m = espalier_model_from_spec (spec, &in, &error);
  g_assert_no_error (error);
  es_model_init (m, 1);
  return m;
}

static EspalierProfileReport *
profile (EspalierDataset            *ds,
         const EsModel              *model,
         const EspalierTrainOptions *opts,
         guint                       steps,
         gboolean                    trace)
{
  g_autoptr(GError) error = NULL;
  EspalierProfileOptions popts;
  EspalierProfileReport *r;

  espalier_profile_options_init (&popts);
  popts.steps = steps;
  popts.trace = trace;
  r = espalier_profile_run (ds, model, opts, &popts, NULL, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (r);
  return r;
}

/* Print what the advisor said, for the log. */
static void
log_report (EspalierProfileReport *r, const char *what)
{
  const EspalierProfileSummary *s = espalier_profile_report_get_summary (r);

  g_test_message ("%s: %u steps of %u rows, %.4f ms a step", what, s->steps, s->batch,
                  1e3 * s->step_s);
  for (guint i = 0; i < s->n_stages; i++)
    g_test_message ("  stage %-9s %.4f ms", s->stages[i].name,
                    1e3 * s->stages[i].seconds / MAX (s->steps, 1));
  for (guint i = 0; i < espalier_profile_report_n_findings (r); i++)
    {
      const EspalierFinding *f = espalier_profile_report_finding (r, i);

      g_test_message ("  finding %s (%.3f): %s", f->name, f->severity, f->evidence);
    }
  for (guint i = 0; i < espalier_profile_report_n_advice (r); i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (r, i);

      g_test_message ("  advice %s (%.2fx): %s", a->name, a->expected_gain, a->evidence);
    }
}

/* A machine is busy when the training thread waits for a core this share of the time
 * (the oversubscription detector's threshold). */
#define BUSY 0.10

/* The share of the time the training thread waited for a core. */
static double
busy_share (EspalierProfileReport *r)
{
  const EspalierProfile *p = espalier_profile_report_get_summary (r)->profile;

  return p->wall_s > 0 ? p->trainer_runqueue_wait_s / p->wall_s : 0.0;
}

/* The finding of kind the test built its run around, which must come first. When
 * other work on the machine kept the training thread from its core a tenth of the
 * time or more (the test suite may share the machine), that is the run's first
 * bottleneck, rightly named before, and it distorts the rest: the built one then only
 * has to be among the findings, and when it is not the test is skipped, saying why.
 * NULL: skipped. */
static const EspalierFinding *
expect_first (EspalierProfileReport *r, EspalierFindingKind kind)
{
  const EspalierProfile *p = espalier_profile_report_get_summary (r)->profile;
  double busy = busy_share (r);
  guint n = espalier_profile_report_n_findings (r);
  g_autofree char *why = NULL;

  if (n > 0 && espalier_profile_report_finding (r, 0)->kind == kind)
    return espalier_profile_report_finding (r, 0);
  if (n > 1 && espalier_profile_report_finding (r, 0)->kind == ESPALIER_FINDING_OVERSUBSCRIBED
      && p->threads.pool_threads <= p->threads.cores
      && espalier_profile_report_finding (r, 1)->kind == kind)
    {
      g_test_message ("busy machine: %s", espalier_profile_report_finding (r, 0)->evidence);
      return espalier_profile_report_finding (r, 1);
    }
  g_assert_cmpfloat (busy, >=, BUSY);
  for (guint i = 0; i < n; i++)
    if (espalier_profile_report_finding (r, i)->kind == kind)
      {
        g_test_message ("busy machine (%.0f%% of the time waiting for a core): %s is "
                        "finding %u", 100 * busy, espalier_profile_report_finding (r, i)->name, i);
        return espalier_profile_report_finding (r, i);
      }
  why = g_strdup_printf ("the machine is too busy to tell: the training thread waited for "
                         "a core %.0f%% of the time", 100 * busy);
  g_test_skip (why);
  return NULL;
}

/* The first advice that answers finding f, which must be of kind, and its index; on a
 * busy machine (see expect_first) an estimate may fall too low for the advice to be
 * given: NULL, and the test skipped. */
static const EspalierAdvice *
expect_advice (EspalierProfileReport *r,
               const EspalierFinding *f,
               EspalierAdviceKind     kind,
               guint                 *index)
{
  for (guint i = 0; i < espalier_profile_report_n_advice (r); i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (r, i);

      if (a->finding != f->kind)
        continue;
      if (a->kind != kind && busy_share (r) >= BUSY)
        break;
      g_assert_cmpint (a->kind, ==, kind);
      if (index != NULL)
        *index = i;
      return a;
    }
  g_assert_cmpfloat (busy_share (r), >=, BUSY);
  g_test_skip ("the machine is too busy to tell: the advice's estimate fell too low");
  return NULL;
}

/* The stages (data, the engine's, other) add up to the wall time, the engine's and the
 * data stage alone cover it within 5%, and the layers fit inside forward and backward. */
static void
test_stages_add_up (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "dense:64,relu,dense:64,relu,dense:3,softmax");
  const EspalierProfileSummary *s;
  const EspalierProfile *p;
  EspalierTrainOptions opts;
  double sum = 0.0, staged = 0.0, layers = 0.0;

  espalier_train_options_init (&opts);
  opts.batch_size = 48;
  r = profile (ds, model, &opts, 40, FALSE);
  s = espalier_profile_report_get_summary (r);
  p = s->profile;
  log_report (r, "stages");
  g_assert_cmpuint (s->steps, ==, 40);
  g_assert_cmpuint (s->batch, ==, 48);
  g_assert_cmpuint (s->n_stages, ==, ES_N_STAGES + 2);
  g_assert_cmpstr (s->stages[0].name, ==, "data");
  g_assert_cmpstr (s->stages[s->n_stages - 1].name, ==, "other");
  g_assert_cmpfloat (s->wall_s, >, 0.0);
  for (guint i = 0; i < s->n_stages; i++)
    {
      g_assert_cmpfloat (s->stages[i].seconds, >=, 0.0);
      g_assert_nonnull (s->stages[i].label);
      sum += s->stages[i].seconds;
      if (i + 1 < s->n_stages)
        staged += s->stages[i].seconds;
    }
  g_assert_cmpfloat (fabs (sum - s->wall_s), <=, 1e-9 * s->wall_s + 1e-12);
  /* "other" (bookkeeping between steps) is at most 5% of the step */
  g_assert_cmpfloat (fabs (1.0 - staged / s->wall_s), <=, 0.05);
  g_assert_cmpfloat (fabs (s->coverage - staged / s->wall_s), <, 1e-9);
  g_assert_cmpfloat (fabs (s->step_s - s->wall_s / s->steps), <, 1e-12);
  /* 240 training rows: batches of 48 are all full */
  g_assert_cmpint (p->engine.rows, ==, 40 * 48);
  g_assert_cmpfloat (fabs (s->rows_per_s - 40 * 48 / s->wall_s), <, 1e-6 * s->rows_per_s);
  for (guint i = 0; i < s->n_layers; i++)
    {
      const EspalierLayerTime *l = &s->layers[i];

      layers += l->forward_s + l->backward_s;
      g_assert_cmpuint (l->index, ==, i);
      g_assert_cmpfloat (l->bytes, >=, 0.0);
      if (l->flops > 0 && l->forward_s + l->backward_s > 0)
        g_assert_cmpfloat (fabs (l->gflops - l->flops * s->steps
                                 / (l->forward_s + l->backward_s) / 1e9),
                           <, 1e-9 * l->gflops);
      if (l->bytes > 0)
        g_assert_cmpfloat (fabs (l->intensity - l->flops / l->bytes), <, 1e-12 * l->intensity + 1e-15);
    }
  g_assert_cmpfloat (layers, <=, (s->stages[2].seconds + s->stages[5].seconds) * 1.0001 + 1e-9);
  g_assert_cmpstr (s->stages[2].name, ==, "forward");
  g_assert_cmpstr (s->stages[5].name, ==, "backward");
  /* the first Dense layer, on the roofline: its bytes are the engine's traffic model */
  g_assert_cmpfloat (s->layers[0].bytes, ==,
                     (double) (es_layer_bytes_moved (model, 0, 48, false, false)
                               + es_layer_bytes_moved (model, 0, 48, true, false)));
  g_assert_true (s->have_ceilings);
  g_assert_cmpfloat (s->layers[0].attainable_gflops, >, 0.0);
  g_assert_cmpfloat (s->layers[0].attainable_gflops, <=, s->ceilings.gemm_gflops);

  /* memory by kind from the engine's budget, the process's resident set, threads */
  g_assert_cmpuint (p->mem_kind[ES_MEM_WEIGHTS], >=, (gsize) es_model_n_params (model) * 4);
  g_assert_cmpuint (p->mem_kind[ES_MEM_GRADIENTS], >, 0);
  g_assert_cmpuint (p->mem_kind[ES_MEM_OPTIMIZER], >, 0);   /* Adam */
  g_assert_cmpuint (p->mem_peak, >=, p->mem_kind[ES_MEM_WEIGHTS] + p->mem_kind[ES_MEM_GRADIENTS]);
  g_assert_cmpuint (p->mem_limit, ==, 0);
  g_assert_cmpuint (p->rss, >, 0);
  g_assert_cmpuint (p->rss_peak, >=, p->rss);
  g_assert_cmpint (p->threads.pool_threads, >=, 1);
  g_assert_cmpint (p->threads.cores, >=, 1);
  g_assert_true (p->ftz);
  g_assert_cmpint (p->denormals.total_values, >=, es_model_n_params (model));
  g_assert_cmpuint (p->train_rows, ==, 240);
  g_assert_cmpuint (p->data_threads, ==, 1);
  g_assert_cmpfloat (p->produce_s, >, 0.0);
  es_model_free (model);
}

/* The trace: trace-event JSON, one "X" event per interval and one per step, every
 * interval inside its step, steps one after the other. */
static void
test_trace (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierProfileReport) r = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "trace.json", NULL);
  EsModel *model = model_for (ds, "dense:16,relu,dense:3,softmax");
  const EspalierProfileSummary *s;
  EspalierTrainOptions opts;
  JsonArray *events;
  double step_ts[13] = { 0 }, step_end[13] = { 0 };
  guint steps = 0, intervals = 0;

  espalier_train_options_init (&opts);
  opts.batch_size = 16;
  r = profile (ds, model, &opts, 12, TRUE);
  s = espalier_profile_report_get_summary (r);
  g_assert_nonnull (s->profile->events);
  g_assert_true (espalier_profile_write_trace (s->profile, model, path, &error));
  g_assert_no_error (error);

  g_assert_true (json_parser_load_from_file (parser, path, &error));
  g_assert_no_error (error);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)));
  events = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                         "traceEvents");
  g_assert_nonnull (events);
  /* steps first: they come before their intervals */
  for (guint i = 0; i < json_array_get_length (events); i++)
    {
      JsonObject *e = json_array_get_object_element (events, i);
      gint64 step = json_object_get_int_member (json_object_get_object_member (e, "args"), "step");

      g_assert_cmpstr (json_object_get_string_member (e, "ph"), ==, "X");
      g_assert_nonnull (json_object_get_string_member (e, "name"));
      g_assert_cmpfloat (json_object_get_double_member (e, "ts"), >=, 0.0);
      g_assert_cmpfloat (json_object_get_double_member (e, "dur"), >=, 0.0);
      g_assert_true (json_object_has_member (e, "pid") && json_object_has_member (e, "tid"));
      g_assert_cmpint (step, >=, 1);
      g_assert_cmpint (step, <=, 12);
      if (g_str_equal (json_object_get_string_member (e, "cat"), "step"))
        {
          steps++;
          g_assert_cmpint (step, ==, steps);
          step_ts[step] = json_object_get_double_member (e, "ts");
          step_end[step] = step_ts[step] + json_object_get_double_member (e, "dur");
        }
    }
  g_assert_cmpuint (steps, ==, 12);
  for (guint k = 2; k <= 12; k++)
    g_assert_cmpfloat (step_ts[k], >=, step_end[k - 1] - 1e-3);
  for (guint i = 0; i < json_array_get_length (events); i++)
    {
      JsonObject *e = json_array_get_object_element (events, i);
      gint64 step = json_object_get_int_member (json_object_get_object_member (e, "args"), "step");
      double ts = json_object_get_double_member (e, "ts");
      double end = ts + json_object_get_double_member (e, "dur");

      if (g_str_equal (json_object_get_string_member (e, "cat"), "step"))
        continue;
      intervals++;
      g_assert_cmpfloat (ts, >=, step_ts[step] - 1e-3);
      g_assert_cmpfloat (end, <=, step_end[step] + 1e-3);
    }
  g_assert_cmpuint (intervals, ==, s->profile->events->len);
  g_assert_cmpuint (intervals, >, 12 * (1 + ES_N_STAGES));

  /* a profile without intervals writes nothing */
  {
    g_autoptr(EspalierProfileReport) plain = profile (ds, model, &opts, 3, FALSE);
    g_autofree char *none = g_build_filename (dir, "none.json", NULL);

    g_assert_false (espalier_profile_write_trace (espalier_profile_report_get_summary (plain)->profile,
                                                  model, none, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
    g_assert_false (g_file_test (none, G_FILE_TEST_EXISTS));
  }
  es_model_free (model);
}

/* (a) Heavy augmentation (pixel noise and shifts) of images for a tiny model: the data
 * pipeline is named first, and more batcher threads are the first advice. */
static void
test_data_bound (void)
{
  g_autoptr(EspalierDataset) ds = images (512);
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "flatten,dense:4,relu,dense:10");
  const EspalierFinding *f;
  const EspalierAdvice *a;
  EspalierTrainOptions opts;

  espalier_train_options_init (&opts);
  opts.batch_size = 64;
  opts.augment.noise_std = 0.3f;
  opts.augment.shift_pixels = 2;
  r = profile (ds, model, &opts, 12, FALSE);
  log_report (r, "data-bound");
  g_assert_true (espalier_profile_report_get_summary (r)->profile->augment);
  g_assert_cmpuint (espalier_profile_report_n_findings (r), >=, 1);
  f = expect_first (r, ESPALIER_FINDING_DATA_BOUND);
  if (f == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (f->kind, ==, ESPALIER_FINDING_DATA_BOUND);
  g_assert_cmpstr (f->name, ==, "data-bound");
  g_assert_cmpint (f->layer, ==, -1);
  g_assert_cmpfloat (f->severity, >=, 0.10);
  g_assert_nonnull (strstr (f->evidence, "%"));
  a = expect_advice (r, f, ESPALIER_ADVICE_PREFETCH_DATA, NULL);
  if (a == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (a->finding, ==, ESPALIER_FINDING_DATA_BOUND);
  g_assert_cmpfloat (a->expected_gain, >, 1.0);
  g_assert_true (a->can_apply || g_get_num_processors () < 2);
  es_model_free (model);
}

/* (b) Batches of two rows: launch-bound first, a larger batch first; applying it
 * measures both sides and gains rows per second. */
static void
test_launch_bound_apply (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierProfileReport) r = NULL;
  g_autoptr(GError) error = NULL;
  EsModel *model = model_for (ds, "dense:16,relu,dense:3,softmax");
  EspalierAdviceResult res = { 0 };
  EspalierProfileOptions popts;
  const EspalierFinding *f;
  const EspalierAdvice *a;
  EspalierTrainOptions opts;
  guint index = 0;

  espalier_train_options_init (&opts);
  opts.batch_size = 2;
  r = profile (ds, model, &opts, 200, FALSE);
  log_report (r, "launch-bound");
  f = expect_first (r, ESPALIER_FINDING_LAUNCH_BOUND);
  if (f == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (f->kind, ==, ESPALIER_FINDING_LAUNCH_BOUND);
  g_assert_cmpstr (f->name, ==, "launch-bound");
  a = expect_advice (r, f, ESPALIER_ADVICE_LARGER_BATCH, &index);
  if (a == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpstr (a->name, ==, "larger-batch");
  g_assert_true (a->can_apply);
  g_assert_cmpfloat (a->expected_gain, >, 1.0);
  g_assert_nonnull (strstr (a->title, "8"));

  espalier_profile_options_init (&popts);
  popts.steps = 200;
  g_assert_true (espalier_advice_apply (r, index, ds, model, &opts, &popts, NULL, &res, &error));
  g_assert_no_error (error);
  g_test_message ("apply: %s: %s %.1f → %.1f, %.2fx", res.change, res.quantity, res.before,
                  res.after, res.gain);
  g_assert_cmpint (res.kind, ==, ESPALIER_ADVICE_LARGER_BATCH);
  g_assert_cmpuint (res.opts.batch_size, ==, 8);
  g_assert_cmpuint (opts.batch_size, ==, 2);
  g_assert_nonnull (res.model);
  g_assert_nonnull (res.change);
  g_assert_nonnull (res.report);
  g_assert_cmpuint (espalier_profile_report_get_summary (res.report)->batch, ==, 8);
  g_assert_cmpfloat (res.before, >, 0.0);
  g_assert_cmpfloat (res.after, >, 0.0);
  g_assert_cmpfloat (fabs (res.gain - res.after / res.before), <, 1e-9 * res.gain);
  /* A measured speed is reported, never asserted (tests check behaviour, benchmarks
   * time): a machine busy with other work can time the two sides either way. */
  if (res.gain <= 1.0)
    g_test_message ("the larger batch measured no gain (%.2fx; the machine was %s)",
                    res.gain, busy_share (res.report) >= BUSY ? "busy" : "not busy");
  espalier_advice_result_clear (&res);
  g_assert_null (res.report);
  es_model_free (model);
}

/* (c) A memory limit just above what the run needs: memory is named first; the
 * accumulation advice measures the peak, and mixed precision says why it cannot run. */
static void
test_memory_limit (void)
{
  g_autoptr(EspalierDataset) ds = images (512);
  g_autoptr(EspalierProfileReport) free_run = NULL;
  g_autoptr(EspalierProfileReport) r = NULL;
  g_autoptr(GError) error = NULL;
  EsModel *model = model_for (ds, "flatten,dense:64,relu,dense:10");
  EspalierAdviceResult res = { 0 };
  EspalierProfileOptions popts;
  const EspalierProfile *p;
  const EspalierFinding *f;
  EspalierTrainOptions opts;
  EsMemPlan plan;
  guint accum = G_MAXUINT, mixed = G_MAXUINT, i_first = G_MAXUINT;

  espalier_train_options_init (&opts);
  opts.batch_size = 64;
  free_run = profile (ds, model, &opts, 5, FALSE);
  p = espalier_profile_report_get_summary (free_run)->profile;
  es_mem_plan (model, &opts.engine, 64, TRUE, &plan);
  g_test_message ("peak %zu, plan %zu", p->mem_peak, plan.total);
  g_assert_cmpuint (p->mem_peak, >, 0);
  /* the peak at 95% of the limit, as long as the plan (with the trainer's 10% slack)
   * still fits whole batches */
  opts.memory_limit = MAX ((gsize) (p->mem_peak / 0.95), plan.total + plan.total / 10 + 64);
  g_assert_cmpfloat ((double) p->mem_peak / opts.memory_limit, >, 0.85);

  r = profile (ds, model, &opts, 12, FALSE);
  log_report (r, "memory");
  p = espalier_profile_report_get_summary (r)->profile;
  g_assert_cmpuint (p->mem_limit, ==, opts.memory_limit);
  g_assert_cmpuint (p->micro_batch, ==, 64);
  f = expect_first (r, ESPALIER_FINDING_MEMORY_LIMIT);
  if (f == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (f->kind, ==, ESPALIER_FINDING_MEMORY_LIMIT);
  g_assert_cmpfloat (fabs (f->severity - (double) p->mem_peak / p->mem_limit), <, 1e-9);
  for (guint i = 0; i < espalier_profile_report_n_advice (r); i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (r, i);

      if (a->kind == ESPALIER_ADVICE_GRAD_ACCUMULATION)
        accum = i;
      if (a->kind == ESPALIER_ADVICE_MIXED_PRECISION)
        mixed = i;
    }
  g_assert_nonnull (expect_advice (r, f, ESPALIER_ADVICE_GRAD_ACCUMULATION, &i_first));
  g_assert_cmpuint (accum, ==, i_first);
  g_assert_cmpuint (mixed, <, espalier_profile_report_n_advice (r));
  g_assert_false (espalier_profile_report_advice (r, mixed)->can_apply);
  g_assert_nonnull (espalier_profile_report_advice (r, mixed)->cannot_apply);

  espalier_profile_options_init (&popts);
  popts.steps = 4;
  g_assert_false (espalier_advice_apply (r, mixed, ds, model, &opts, &popts, NULL, &res, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  g_assert_null (res.report);

  g_assert_true (espalier_advice_apply (r, accum, ds, model, &opts, &popts, NULL, &res, &error));
  g_assert_no_error (error);
  g_test_message ("apply: %s: %s %.0f → %.0f, %.2fx", res.change, res.quantity, res.before,
                  res.after, res.gain);
  g_assert_cmpuint (res.opts.batch_size, ==, 32);
  g_assert_cmpint (res.opts.engine.accum_steps, ==, 2);
  g_assert_cmpfloat (res.after, <, res.before);
  g_assert_cmpfloat (res.gain, >, 1.0);
  espalier_advice_result_clear (&res);
  es_model_free (model);
}

/* (d) One layer much bigger than the rest: it is named first, and the advice acts on
 * it; the pruned model trains faster per row. */
static void
test_dominant_layer (void)
{
  g_autoptr(EspalierDataset) ds = images (1024);
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "flatten,dense:512,relu,dense:10");
  const EspalierFinding *f;
  const EspalierAdvice *a;
  EspalierTrainOptions opts;

  espalier_train_options_init (&opts);
  opts.batch_size = 256;
  opts.threads = 1;
  r = profile (ds, model, &opts, 12, FALSE);
  log_report (r, "dominant");
  f = expect_first (r, ESPALIER_FINDING_DOMINANT_LAYER);
  if (f == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (f->kind, ==, ESPALIER_FINDING_DOMINANT_LAYER);
  g_assert_cmpint (f->layer, ==, 1);
  /* the user reads layers numbered from 1 */
  g_assert_nonnull (strstr (f->title, "Layer 2 "));
  a = expect_advice (r, f, ESPALIER_ADVICE_PRUNE, NULL);
  if (a == NULL)
    {
      es_model_free (model);
      return;
    }
  g_assert_cmpint (a->finding, ==, ESPALIER_FINDING_DOMINANT_LAYER);
  g_assert_cmpint (a->layer, ==, 1);
  g_assert_true (a->can_apply);
  es_model_free (model);
}

/* The JSON has every documented member, findings and advice as the getters give them. */
static void
test_json (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierProfileReport) r = NULL;
  g_autoptr(JsonNode) node = NULL;
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;
  EsModel *model = model_for (ds, "dense:16,relu,dense:3,softmax");
  const char *top[] = { "steps", "batch", "micro_batch", "wall_s", "step_ms", "rows_per_s",
                        "coverage", "adds_up", "stages", "layers", "machine", "memory",
                        "threads", "data", "denormals", "findings", "advice" };
  const char *layer[] = { "index", "kind", "forward_ms", "backward_ms", "share", "flops",
                          "bytes", "gflops_per_s", "gb_per_s", "intensity",
                          "attainable_gflops_per_s", "roofline_share", "bound" };
  EspalierTrainOptions opts;
  JsonObject *o, *mem;
  JsonArray *arr;

  espalier_train_options_init (&opts);
  opts.batch_size = 2;
  r = profile (ds, model, &opts, 30, FALSE);
  node = espalier_profile_report_to_json (r);
  json_generator_set_root (gen, node);
  text = json_generator_to_data (gen, NULL);
  g_assert_true (json_parser_load_from_data (parser, text, -1, &error));
  g_assert_no_error (error);
  o = json_node_get_object (json_parser_get_root (parser));
  for (guint i = 0; i < G_N_ELEMENTS (top); i++)
    if (!json_object_has_member (o, top[i]))
      g_error ("no member %s in %s", top[i], text);
  g_assert_cmpint (json_object_get_int_member (o, "steps"), ==, 30);
  g_assert_cmpint (json_object_get_int_member (o, "batch"), ==, 2);
  arr = json_object_get_array_member (o, "stages");
  g_assert_cmpuint (json_array_get_length (arr), ==, ES_N_STAGES + 2);
  for (guint i = 0; i < json_array_get_length (arr); i++)
    {
      JsonObject *st = json_array_get_object_element (arr, i);

      g_assert_true (json_object_has_member (st, "name") && json_object_has_member (st, "label")
                     && json_object_has_member (st, "ms_per_step")
                     && json_object_has_member (st, "share"));
    }
  arr = json_object_get_array_member (o, "layers");
  g_assert_cmpuint (json_array_get_length (arr), ==, 4);
  for (guint i = 0; i < json_array_get_length (arr); i++)
    for (guint k = 0; k < G_N_ELEMENTS (layer); k++)
      g_assert_true (json_object_has_member (json_array_get_object_element (arr, i), layer[k]));
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (arr, 0), "bound"),
                   !=, NULL);
  g_assert_cmpfloat (json_object_get_double_member (json_object_get_object_member (o, "machine"),
                                                    "peak_gflops_per_s"), >, 0.0);
  mem = json_object_get_object_member (o, "memory");
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    g_assert_true (json_object_has_member (json_object_get_object_member (mem, "kinds"),
                                           es_mem_kind_name ((EsMemKind) k)));
  g_assert_cmpint (json_object_get_int_member (mem, "peak"), >, 0);
  g_assert_cmpint (json_object_get_int_member (mem, "rss"), >, 0);
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "threads"), "cores"));
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "denormals"), "ftz"));
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "data"),
                                         "produce_ms_per_step"));
  arr = json_object_get_array_member (o, "findings");
  g_assert_cmpuint (json_array_get_length (arr), ==, espalier_profile_report_n_findings (r));
  for (guint i = 0; i < json_array_get_length (arr); i++)
    g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (arr, i), "name"),
                     ==, espalier_profile_report_finding (r, i)->name);
  arr = json_object_get_array_member (o, "advice");
  g_assert_cmpuint (json_array_get_length (arr), ==, espalier_profile_report_n_advice (r));
  g_assert_cmpuint (json_array_get_length (arr), >=, 1);
  for (guint i = 0; i < json_array_get_length (arr); i++)
    {
      JsonObject *a = json_array_get_object_element (arr, i);

      g_assert_cmpstr (json_object_get_string_member (a, "name"), ==,
                       espalier_profile_report_advice (r, i)->name);
      g_assert_true (json_object_get_boolean_member (a, "estimate"));
      g_assert_true (json_object_has_member (a, "expected_gain")
                     && json_object_has_member (a, "evidence")
                     && json_object_has_member (a, "action")
                     && json_object_has_member (a, "can_apply"));
    }
  es_model_free (model);
}

typedef struct {
  GMainLoop *loop;
  guint      epochs_with_profile, steps_seen;
  guint      last_steps;
  gboolean   ok;
  GError    *error;
} Live;

static void
on_live (const EspalierProgress *p, gpointer data)
{
  Live *live = data;

  if (p->kind == ESPALIER_PROGRESS_EPOCH)
    {
      g_assert_nonnull (p->profile);
      live->epochs_with_profile++;
      g_assert_cmpuint (p->profile->steps, >=, live->last_steps);
      live->last_steps = p->profile->steps;
      g_assert_cmpuint (p->profile->n_layers, ==, 4);
    }
  if (p->profile != NULL)
    live->steps_seen++;
}

static void
on_live_done (GObject *source, GAsyncResult *result, gpointer data)
{
  Live *live = data;

  live->ok = espalier_trainer_run_finish (ESPALIER_TRAINER (source), result, &live->error);
  g_main_loop_quit (live->loop);
}

/* A live run's progress carries the profile so far, through the relay's copy; a report
 * is made from it without ceilings; copies are deep. */
static void
test_live_progress (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "dense:16,relu,dense:3,softmax");
  EspalierTrainOptions opts;
  EspalierProfile *copy;
  const EspalierProfile *p;
  Live live = { 0 };

  espalier_train_options_init (&opts);
  opts.epochs = 3;
  opts.batch_size = 16;
  tr = espalier_trainer_new (ds, model, &opts);
  espalier_trainer_set_profiling (tr, TRUE, 0, TRUE);
  live.loop = g_main_loop_new (NULL, FALSE);
  espalier_trainer_run_async (tr, NULL, on_live, &live, NULL, on_live_done, &live);
  g_main_loop_run (live.loop);
  g_main_loop_unref (live.loop);
  g_assert_no_error (live.error);
  g_assert_true (live.ok);
  g_assert_cmpuint (live.epochs_with_profile, ==, 3);
  p = espalier_trainer_get_profile (tr);
  g_assert_nonnull (p);
  /* three epochs of 14 steps (210 training rows), the first one warm-up */
  g_assert_cmpuint (p->steps, ==, 3 * 14 - 1);
  g_assert_cmpuint (live.last_steps, ==, p->steps);

  copy = espalier_profile_copy (p);
  g_assert_true (copy->layers != p->layers);
  g_assert_true (copy->events != p->events);
  g_assert_cmpuint (copy->events->len, ==, p->events->len);
  g_assert_cmpmem (copy->layers, sizeof (EsLayerProfile) * p->n_layers, p->layers,
                   sizeof (EsLayerProfile) * p->n_layers);
  r = espalier_profile_report_new (copy, model, &opts, NULL);
  espalier_profile_free (copy);
  g_assert_false (espalier_profile_report_get_summary (r)->have_ceilings);
  g_assert_cmpfloat (espalier_profile_report_get_summary (r)->layers[0].attainable_gflops, ==, 0.0);
  g_assert_cmpuint (espalier_profile_report_get_summary (r)->steps, ==, p->steps);
  espalier_profile_report_ref (r);
  espalier_profile_report_unref (r);
  es_model_free (model);
}

/* Twice as many compute threads as cores: oversubscription is found and the advice
 * names the core count. Adam with L2: AdamW is advised. */
static void
test_threads_and_adamw (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "dense:16,relu,dense:3,softmax");
  EspalierTrainOptions opts;
  gboolean over = FALSE, adamw = FALSE, fewer = FALSE;
  guint cores;

  espalier_train_options_init (&opts);
  opts.batch_size = 32;
  opts.engine.optimizer = ES_OPT_ADAM;
  opts.engine.l2 = 1e-3f;
  opts.threads = 2 * g_get_num_processors ();
  r = profile (ds, model, &opts, 10, FALSE);
  log_report (r, "threads");
  cores = (guint) espalier_profile_report_get_summary (r)->profile->threads.cores;
  g_assert_cmpint (espalier_profile_report_get_summary (r)->profile->threads.pool_threads, ==,
                   (int) opts.threads);
  for (guint i = 0; i < espalier_profile_report_n_findings (r); i++)
    {
      const EspalierFinding *f = espalier_profile_report_finding (r, i);

      over |= f->kind == ESPALIER_FINDING_OVERSUBSCRIBED;
      adamw |= f->kind == ESPALIER_FINDING_OPTIMIZER;
    }
  for (guint i = 0; i < espalier_profile_report_n_advice (r); i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (r, i);

      if (a->kind == ESPALIER_ADVICE_FEWER_THREADS)
        {
          g_autofree char *n = g_strdup_printf ("%u", cores);

          fewer = TRUE;
          g_assert_true (a->can_apply);
          g_assert_nonnull (strstr (a->title, n));
        }
    }
  g_assert_true (over && fewer && adamw);
  es_model_free (model);
}

/* Applying the prefetch advice of (a): both sides measured, the batcher of the second
 * on more threads. (Whether that gains depends on free cores: logged, not asserted.) */
static void
test_prefetch_apply (void)
{
  g_autoptr(EspalierDataset) ds = images (512);
  g_autoptr(EspalierProfileReport) r = NULL;
  g_autoptr(GError) error = NULL;
  EsModel *model = model_for (ds, "flatten,dense:4,relu,dense:10");
  EspalierAdviceResult res = { 0 };
  EspalierProfileOptions popts;
  EspalierTrainOptions opts;
  const EspalierProfile *after;
  guint i;

  if (g_get_num_processors () < 2)
    {
      g_test_skip ("one core: no room for a second data thread");
      es_model_free (model);
      return;
    }
  espalier_train_options_init (&opts);
  opts.batch_size = 64;
  opts.augment.noise_std = 0.3f;
  /* A profile of 8 steps is a small sample: on a loaded machine the batcher's thread
   * may be switched out long enough to look idle. Up to three tries before deciding. */
  for (guint attempt = 0; attempt < 3; attempt++)
    {
      g_clear_pointer (&r, espalier_profile_report_unref);
      r = profile (ds, model, &opts, 8, FALSE);
      log_report (r, "prefetch");
      for (i = 0; i < espalier_profile_report_n_advice (r); i++)
        if (espalier_profile_report_advice (r, i)->kind == ESPALIER_ADVICE_PREFETCH_DATA)
          break;
      if (i < espalier_profile_report_n_advice (r))
        break;
    }
  if (i == espalier_profile_report_n_advice (r))
    {
      g_assert_cmpfloat (busy_share (r), >=, BUSY);
      g_test_skip ("the machine is too busy to tell: no prefetch advice");
      es_model_free (model);
      return;
    }
  espalier_profile_options_init (&popts);
  popts.steps = 8;
  g_assert_true (espalier_advice_apply (r, i, ds, model, &opts, &popts, NULL, &res, &error));
  g_assert_no_error (error);
  g_test_message ("apply: %s: %s %.1f → %.1f, %.2fx (estimate %.2fx)", res.change,
                  res.quantity, res.before, res.after, res.gain,
                  espalier_profile_report_advice (r, i)->expected_gain);
  after = espalier_profile_report_get_summary (res.report)->profile;
  g_assert_cmpuint (res.opts.data_threads, >=, 2);
  g_assert_cmpuint (after->data_threads, ==, res.opts.data_threads);
  g_assert_cmpuint (after->prefetch, ==, res.opts.prefetch);
  g_assert_cmpfloat (res.before, >, 0.0);
  g_assert_cmpfloat (res.after, >, 0.0);
  espalier_advice_result_clear (&res);
  es_model_free (model);
}

/* Denormal weights that stay (plain SGD moves them by lr times gradients that are
 * themselves denormal or tiny) with flush-to-zero off: counted, and
 * the probe times steps both ways; where they cost enough to be a finding, flushing is
 * the advice. */
static void
test_denormals (void)
{
  g_autoptr(EspalierDataset) ds = images (256);
  g_autoptr(EspalierProfileReport) r = NULL;
  EsModel *model = model_for (ds, "flatten,dense:64,relu,dense:10");
  const EspalierProfile *p;
  EspalierTrainOptions opts;
  float *w = es_model_params (model);
  double off = 0, on = 0;
  guint steps = 0;

  for (gint64 k = 0; k < es_model_n_params (model); k++)
    w[k] = 1e-39f;   /* subnormal */
  espalier_train_options_init (&opts);
  opts.batch_size = 32;
  opts.threads = 1;
  opts.engine.optimizer = ES_OPT_SGD;
  opts.engine.lr = 1e-3f;
  opts.keep_denormals = TRUE;
  r = profile (ds, model, &opts, 6, FALSE);
  log_report (r, "denormals");
  p = espalier_profile_report_get_summary (r)->profile;
  g_assert_false (p->ftz);
  /* the weights stay denormal (the last layer's biases move) */
  g_assert_cmpint (p->denormals.params, >, es_model_n_params (model) / 2);
  g_assert_true (espalier_profile_report_get_probe (r, &steps, &off, &on));
  g_test_message ("probe: %u steps, %.4f ms a step with flush-to-zero off, %.4f ms on", steps,
                  1e3 * off, 1e3 * on);
  g_assert_cmpuint (steps, >=, 3);
  g_assert_cmpfloat (off, >, 0.0);
  g_assert_cmpfloat (on, >, 0.0);
  for (guint i = 0; i < espalier_profile_report_n_findings (r); i++)
    if (espalier_profile_report_finding (r, i)->kind == ESPALIER_FINDING_DENORMALS)
      {
        gboolean advised = FALSE;

        g_assert_nonnull (strstr (espalier_profile_report_finding (r, i)->evidence,
                                  "flush-to-zero is off"));
        for (guint j = 0; j < espalier_profile_report_n_advice (r); j++)
          advised |= espalier_profile_report_advice (r, j)->kind == ESPALIER_ADVICE_FLUSH_DENORMALS;
        g_assert_true (advised);
      }

  /* with flush-to-zero on, the run flushes: no probe, no finding */
  {
    g_autoptr(EspalierProfileReport) flushed = NULL;

    opts.keep_denormals = FALSE;
    flushed = profile (ds, model, &opts, 3, FALSE);
    g_assert_true (espalier_profile_report_get_summary (flushed)->profile->ftz);
    g_assert_false (espalier_profile_report_get_probe (flushed, NULL, NULL, NULL));
    for (guint i = 0; i < espalier_profile_report_n_findings (flushed); i++)
      g_assert_cmpint (espalier_profile_report_finding (flushed, i)->kind, !=,
                       ESPALIER_FINDING_DENORMALS);
  }
  es_model_free (model);
}

int
main (int argc, char **argv)
{
  dtu_init (&argc, &argv);
  g_test_add_func ("/profile-report/stages-add-up", test_stages_add_up);
  g_test_add_func ("/profile-report/trace", test_trace);
  g_test_add_func ("/profile-report/data-bound", test_data_bound);
  g_test_add_func ("/profile-report/launch-bound-apply", test_launch_bound_apply);
  g_test_add_func ("/profile-report/memory-limit", test_memory_limit);
  g_test_add_func ("/profile-report/dominant-layer", test_dominant_layer);
  g_test_add_func ("/profile-report/json", test_json);
  g_test_add_func ("/profile-report/live-progress", test_live_progress);
  g_test_add_func ("/profile-report/threads-adamw", test_threads_and_adamw);
  g_test_add_func ("/profile-report/prefetch-apply", test_prefetch_apply);
  g_test_add_func ("/profile-report/denormals", test_denormals);
  return dtu_finish (g_test_run ());
}
