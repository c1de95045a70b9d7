/* test-optimize.c: the optimization jobs on a small, easy set (four Gaussian clusters
 * in 8-D, 800 rows) and a model with three hidden layers trained once: every kind makes
 * a variant with real measurements; magnitude pruning reaches the asked sparsity
 * exactly and fine-tuning keeps it; the gradual schedule rises to its target; the
 * structured model is smaller with valid shapes; quantized variants stay close to the
 * parent; reduction removes a layer and reports distillation against fine-tuning; the
 * trainer's hooks (mask, schedule, teacher, fake quantization); sensitivity scans;
 * the comparison table read back; cancellation; the async form. */
#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "data-test-util.h"
#include "espalier-error.h"
#include "espalier-optimize.h"
#include "espalier-split.h"
#include "espalier-templates.h"

#define N_ROWS    800
#define N_FEAT    8
#define N_CLASSES 4

static EspalierDataset *dataset;
static EspalierVariant *baseline;
static EspalierTrainOptions train_opts;

/* Four clusters in 8-D, centers 3 apart, unit noise: an easy set, not a trivial one. */
static EspalierDataset *
make_dataset (void)
{
  g_autofree char *path = g_build_filename (dtu_root, "clusters.csv", NULL);
  g_autoptr(GString) text = g_string_new (NULL);
  g_autoptr(GRand) rand = g_rand_new_with_seed (7);
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions lo;
  EspalierDataset *ds;
  double centers[N_CLASSES][N_FEAT];

  for (int k = 0; k < N_CLASSES; k++)
    for (int j = 0; j < N_FEAT; j++)
      centers[k][j] = g_rand_double_range (rand, -3, 3);
  for (int j = 0; j < N_FEAT; j++)
    g_string_append_printf (text, "f%d,", j);
  g_string_append (text, "label\n");
  for (int i = 0; i < N_ROWS; i++)
    {
      int k = i % N_CLASSES;

      for (int j = 0; j < N_FEAT; j++)
        {
          /* Box-Muller */
          double u = g_rand_double_range (rand, 1e-12, 1), v = g_rand_double (rand);
          double z = sqrt (-2 * log (u)) * cos (2 * G_PI * v);

          g_string_append_printf (text, "%.5f,", centers[k][j] + z);
        }
      g_string_append_printf (text, "c%d\n", k);
    }
  g_assert_true (g_file_set_contents (path, text->str, -1, NULL));
  espalier_load_options_init (&lo);
  lo.use_cache = FALSE;
  ds = espalier_dataset_load (path, &lo, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, N_CLASSES);
  return ds;
}

/* The baseline: three hidden layers (so one can be removed), trained once. */
static void
setup (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EsShape in = { 1, { N_FEAT } };
  EspalierMetrics m = { 0 };
  EsModel *model;

  dataset = make_dataset ();
  espalier_train_options_init (&train_opts);
  train_opts.epochs = 15;
  train_opts.batch_size = 32;
  train_opts.engine.optimizer = ES_OPT_ADAM;
  train_opts.engine.lr = 0.01f;
  train_opts.threads = 1;
  model = espalier_model_from_spec ("dense:32,relu,dense:32,relu,dense:16,relu,dense:4,softmax",
                                    &in, &error);
  g_assert_no_error (error);
  es_model_init (model, 3);
  tr = espalier_trainer_new (dataset, model, &train_opts);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  baseline = espalier_variant_new ("baseline", "baseline", model);
  g_assert_true (espalier_evaluate_exec (model, NULL, NULL, dataset, NULL, 0, 1, &m, &error));
  g_assert_no_error (error);
  g_test_message ("baseline accuracy on all rows: %.4f", m.accuracy);
  g_assert_cmpfloat (m.accuracy, >=, 0.9);
  espalier_variant_set_accuracy (baseline, m.accuracy);
  espalier_metrics_clear (&m);
}

static void
opts_init (EspalierOptimizeOptions *o, EspalierOptimizeKind kind)
{
  espalier_optimize_options_init (o);
  o->kind = kind;
  o->latency_seconds = 0.05;
  /* per layer, so every layer's sparsity is exact (the global default is tested apart) */
  o->scope = ES_PRUNE_PER_LAYER;
}

typedef struct {
  guint    epochs, steps, messages, starts;
  GString *text;
  GThread *thread;
  gboolean wrong_thread;
  GCancellable *cancel_at_epoch;
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
      if (seen->cancel_at_epoch != NULL)
        g_cancellable_cancel (seen->cancel_at_epoch);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      seen->messages++;
      if (seen->text != NULL)
        g_string_append_printf (seen->text, "%s\n", p->message);
      break;
    }
}

static EspalierVariant *
optimize (const EspalierOptimizeOptions *o, Seen *seen)
{
  g_autoptr(GError) error = NULL;
  EspalierVariant *v;

  v = espalier_optimize (dataset, baseline, &train_opts, o, NULL, NULL,
                         seen ? on_progress : NULL, seen, &error);
  g_assert_no_error (error);
  g_assert_nonnull (v);
  g_test_message ("%s: accuracy %.4f, latency %.2f us (p95 %.2f), %.0f rows/s, %" G_GUINT64_FORMAT
                  " bytes, %s/%s: %s",
                  espalier_variant_get_name (v), espalier_variant_get_accuracy (v),
                  espalier_variant_get_latency_us (v), espalier_variant_get_latency_p95_us (v),
                  espalier_variant_get_rows_per_second (v), espalier_variant_get_size_bytes (v),
                  espalier_variant_get_format (v), espalier_variant_get_exec (v),
                  espalier_variant_get_description (v));
  return v;
}

/* Every variant: its parent, a description, accuracy in range, latency measured. */
static void
assert_measured (EspalierVariant *v, const char *kind)
{
  double acc = espalier_variant_get_accuracy (v);

  g_assert_cmpstr (espalier_variant_get_kind (v), ==, kind);
  g_assert_cmpstr (espalier_variant_get_parent (v), ==, "baseline");
  g_assert_nonnull (espalier_variant_get_description (v));
  g_assert_cmpuint (strlen (espalier_variant_get_description (v)), >, 20);
  g_assert_nonnull (espalier_variant_get_model (v));
  g_assert_true (acc >= 0 && acc <= 1);
  g_assert_true (isfinite (espalier_variant_get_latency_us (v)));
  g_assert_cmpfloat (espalier_variant_get_latency_us (v), >, 0);
  g_assert_cmpfloat (espalier_variant_get_latency_p95_us (v), >=,
                     espalier_variant_get_latency_us (v));
  g_assert_cmpfloat (espalier_variant_get_rows_per_second (v), >, 0);
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), >, 0);
  g_assert_nonnull (espalier_variant_get_exec (v));
}

/* Accuracy of the parent on the same test rows the jobs use. */
static double
parent_test_accuracy (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierSplit) split = espalier_split_new (dataset, train_opts.val_fraction,
                                                       train_opts.test_fraction,
                                                       train_opts.seed, &error);
  EspalierMetrics m = { 0 };
  double acc;

  g_assert_no_error (error);
  g_assert_true (espalier_evaluate_exec (espalier_variant_get_model (baseline), NULL, NULL,
                                         dataset, (const guint32 *) split->test->data,
                                         split->test->len, 1, &m, &error));
  g_assert_no_error (error);
  acc = m.accuracy;
  espalier_metrics_clear (&m);
  return acc;
}

static void
test_names (void)
{
  EspalierOptimizeKind k;

  for (int i = ESPALIER_OPTIMIZE_PRUNE; i <= ESPALIER_OPTIMIZE_REDUCE; i++)
    {
      EspalierOptimizeOptions o;
      g_autofree char *d = NULL;
      const char *name = espalier_optimize_kind_name ((EspalierOptimizeKind) i);

      g_assert_nonnull (name);
      g_assert_true (espalier_optimize_kind_from_name (name, &k));
      g_assert_cmpint (k, ==, i);
      opts_init (&o, (EspalierOptimizeKind) i);
      d = espalier_optimize_describe (&o);
      g_test_message ("%s: %s", name, d);
      g_assert_cmpuint (strlen (d), >, 5);
      espalier_optimize_options_clear (&o);
    }
  g_assert_false (espalier_optimize_kind_from_name ("shrink", &k));
  {
    EspalierOptimizeOptions o;
    g_autofree char *d = NULL;

    opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
    g_assert_cmpfloat (o.sparsity, ==, 0.9);
    g_assert_cmpuint (o.epochs, ==, 2);
    g_assert_cmpint (o.remove_layer, ==, -1);
    g_assert_true (o.distill);
    d = espalier_optimize_describe (&o);
    g_assert_nonnull (strstr (d, "90%"));
  }
}

/* es-exec's accuracy of the float model agrees with the trainer's evaluation. */
static void
test_evaluate_exec (void)
{
  g_autoptr(GError) error = NULL;
  EspalierMetrics a = { 0 }, b = { 0 };
  EsModel *model = espalier_variant_get_model (baseline);
  guint32 rows[100];

  for (guint i = 0; i < 100; i++)
    rows[i] = i * 7 % N_ROWS;
  g_assert_true (espalier_evaluate_exec (model, NULL, NULL, dataset, rows, 100, 1, &a, &error));
  g_assert_true (espalier_evaluate (model, dataset, rows, 100, ES_LOSS_SOFTMAX_XENT, 1, &b, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (a.rows, ==, 100);
  g_assert_cmpfloat_with_epsilon (a.accuracy, b.accuracy, 1.5 / 100);
  g_assert_cmpfloat_with_epsilon (a.loss, b.loss, 1e-3);
  {
    guint total = 0;

    for (guint i = 0; i < N_CLASSES * N_CLASSES; i++)
      total += a.confusion[i];
    g_assert_cmpuint (total, ==, 100);
  }
  espalier_metrics_clear (&a);
  espalier_metrics_clear (&b);
}

/* Every prunable layer reaches exactly round(s * n) zeros (per layer). */
static void
assert_layer_sparsity (const EsModel *m, double s)
{
  for (int i = 0; i < es_model_n_layers (m); i++)
    if (es_prune_layer_is_prunable (m, i))
      {
        int64_t n = 0, z = es_prune_layer_zeros (m, i, &n);

        g_assert_cmpint (z, ==, (int64_t) llround (s * (double) n));
      }
}

static void
test_prune (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL, g = NULL;
  g_autoptr(GString) text = g_string_new (NULL);
  Seen seen = { .text = text };
  EsModel *m;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.sparsity = 0.75;
  o.scope = ES_PRUNE_PER_LAYER;
  o.epochs = 3;
  v = optimize (&o, &seen);
  assert_measured (v, "pruned");
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "pruned 75% (per layer)");
  g_assert_cmpuint (seen.epochs, ==, 3);
  /* fine-tuned three epochs and still exactly 75% in every layer */
  m = espalier_variant_get_model (v);
  assert_layer_sparsity (m, 0.75);
  g_assert_cmpint (espalier_variant_get_nonzeros (v), <,
                   espalier_variant_get_n_params (baseline) / 2);
  g_assert_cmpfloat (espalier_variant_get_accuracy (v), >=, parent_test_accuracy () - 0.1);

  /* global: one threshold, the total exact */
  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.sparsity = 0.6;
  o.scope = ES_PRUNE_GLOBAL;
  o.epochs = 1;
  g = optimize (&o, NULL);
  g_assert_cmpstr (espalier_variant_get_name (g), ==, "pruned 60%");
  {
    const EsModel *gm = espalier_variant_get_model (g);
    int64_t zeros = 0, total = 0;

    for (int i = 0; i < es_model_n_layers (gm); i++)
      {
        int64_t n = 0;

        zeros += es_prune_layer_zeros (gm, i, &n);
        total += n;
      }
    g_assert_cmpint (zeros, ==, llround (0.6 * (double) total));
  }
}

/* Only the chosen layers are pruned. */
static void
test_prune_layers (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL;
  const EsModel *m;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.sparsity = 0.5;
  o.epochs = 1;
  o.layers = g_new0 (gboolean, es_model_n_layers (espalier_variant_get_model (baseline)));
  o.layers[2] = TRUE;   /* the second Dense */
  v = optimize (&o, NULL);
  m = espalier_variant_get_model (v);
  for (int i = 0; i < es_model_n_layers (m); i++)
    if (es_prune_layer_is_prunable (m, i))
      {
        int64_t n = 0, z = es_prune_layer_zeros (m, i, &n);

        if (i == 2)
          g_assert_cmpint (z, ==, n / 2);
        else
          g_assert_cmpint (z, <, n / 10);
      }
  espalier_optimize_options_clear (&o);
}

static void
test_prune_gradual (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL;
  g_autoptr(GString) text = g_string_new (NULL);
  Seen seen = { .text = text };

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE_GRADUAL);
  o.sparsity = 0.8;
  o.prune_events = 5;
  o.epochs = 3;
  v = optimize (&o, &seen);
  assert_measured (v, "pruned");
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "pruned 80% (gradual)");
  assert_layer_sparsity (espalier_variant_get_model (v), 0.8);
  g_test_message ("%s", text->str);
  g_assert_nonnull (strstr (text->str, "Gradual pruning"));

  /* no fine-tuning: refused */
  {
    g_autoptr(GError) error = NULL;

    o.epochs = 0;
    g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, NULL, NULL,
                                      NULL, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  }
}

/* The trainer's schedule: events at t0 + k dt with the cubic targets; the measured
 * sparsity never falls and ends at the target. */
static void
test_trainer_schedule (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EsModel *model = es_model_copy (espalier_variant_get_model (baseline));
  EspalierPruneSchedule sc = {
    .initial_sparsity = 0.1, .final_sparsity = 0.85, .begin_step = 3, .frequency = 4,
    .n_events = 6, .scope = ES_PRUNE_PER_LAYER,
  };
  EspalierTrainOptions o = train_opts;
  GArray *ev;
  double prev = -1;

  o.epochs = 2;  /* 2 x 18 steps: the schedule ends at step 27 */
  tr = espalier_trainer_new (dataset, model, &o);
  espalier_trainer_set_prune_schedule (tr, &sc);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  ev = espalier_trainer_get_prune_events (tr);
  g_assert_cmpuint (ev->len, ==, 7);
  for (guint k = 0; k < ev->len; k++)
    {
      const EspalierPruneEvent *e = &g_array_index (ev, EspalierPruneEvent, k);
      double want = es_prune_cubic_sparsity (0.1f, 0.85f, 3, 6, 4, 3 + 4 * (gint64) k);

      g_test_message ("event %u: step %" G_GINT64_FORMAT " target %.4f sparsity %.4f", k,
                      e->step, e->target, e->sparsity);
      g_assert_cmpint (e->step, ==, 3 + 4 * (gint64) k);
      g_assert_cmpfloat_with_epsilon (e->target, want, 1e-6);
      g_assert_cmpfloat_with_epsilon (e->sparsity, e->target, 0.01);
      g_assert_cmpfloat (e->sparsity, >=, prev);
      prev = e->sparsity;
    }
  g_assert_cmpfloat_with_epsilon (prev, 0.85, 0.005);
  assert_layer_sparsity (model, 0.85);
  g_assert_nonnull (espalier_trainer_get_mask (tr));

  /* A run too short for its schedule still ends at the final sparsity. */
  {
    g_autoptr(EspalierTrainer) t2 = NULL;
    EsModel *m2 = es_model_copy (espalier_variant_get_model (baseline));

    sc.begin_step = 0;
    sc.frequency = 100;
    o.epochs = 1;
    t2 = espalier_trainer_new (dataset, m2, &o);
    espalier_trainer_set_prune_schedule (t2, &sc);
    g_assert_true (espalier_trainer_run (t2, NULL, NULL, NULL, &error));
    g_assert_no_error (error);
    ev = espalier_trainer_get_prune_events (t2);
    g_assert_cmpuint (ev->len, ==, 2);   /* step 0, then the forced final one */
    assert_layer_sparsity (m2, 0.85);
    g_clear_object (&t2);
    es_model_free (m2);
  }
  g_clear_object (&tr);
  es_model_free (model);
}

/* A fixed mask holds through training. */
static void
test_trainer_mask (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EsModel *model = es_model_copy (espalier_variant_get_model (baseline));
  EsMask *mask = es_mask_new (model);
  EspalierTrainOptions o = train_opts;
  EsError es = { 0 };
  const uint8_t *keep;
  const float *w;

  g_assert_true (es_prune_magnitude (model, mask, 0.5f, ES_PRUNE_GLOBAL, NULL, &es));
  /* undo the zeroing on the host: the trainer must zero them itself */
  memcpy (es_model_params (model), es_model_params_const (espalier_variant_get_model (baseline)),
          (gsize) es_model_n_params (model) * sizeof (float));
  o.epochs = 2;
  tr = espalier_trainer_new (dataset, model, &o);
  espalier_trainer_set_mask (tr, mask);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  keep = es_mask_data_const (mask);
  w = es_model_params_const (model);
  for (gint64 i = 0; i < es_model_n_params (model); i++)
    if (!keep[i])
      g_assert_cmpfloat (w[i], ==, 0.0f);
  g_assert_cmpfloat (es_prune_model_sparsity (model), >=, 0.49);
  g_clear_object (&tr);
  es_mask_free (mask);
  es_model_free (model);
}

static void
test_structured (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL;
  const EsModel *pm = espalier_variant_get_model (baseline), *m;
  EsShape a, b;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE_STRUCTURED);
  o.keep_fraction = 0.5;
  o.epochs = 2;
  v = optimize (&o, NULL);
  assert_measured (v, "pruned");
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "pruned 50% neurons");
  m = espalier_variant_get_model (v);
  g_assert_cmpint (es_model_n_layers (m), ==, es_model_n_layers (pm));
  a = es_model_input_shape (m);
  b = es_model_input_shape (pm);
  g_assert_true (es_shape_equal (&a, &b));
  a = es_model_output_shape (m);
  b = es_model_output_shape (pm);
  g_assert_true (es_shape_equal (&a, &b));
  /* hidden Dense layers halved, the output layer whole */
  g_assert_cmpint (es_model_layer (m, 0)->spec.units, ==, 16);
  g_assert_cmpint (es_model_layer (m, 2)->spec.units, ==, 16);
  g_assert_cmpint (es_model_layer (m, 4)->spec.units, ==, 8);
  g_assert_cmpint (es_model_layer (m, 6)->spec.units, ==, 4);
  g_assert_cmpint (es_model_layer (m, 2)->in.dims[0], ==, 16);
  g_assert_cmpint (espalier_variant_get_n_params (v), <, espalier_variant_get_n_params (baseline) / 2);
  g_assert_cmpint (espalier_variant_get_flops (v), <, espalier_variant_get_flops (baseline));
  g_assert_cmpfloat (espalier_variant_get_accuracy (v), >=, parent_test_accuracy () - 0.15);
}

static void
test_2_4 (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL;
  EsModel *m;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE_2_4);
  o.epochs = 1;
  v = optimize (&o, NULL);
  assert_measured (v, "pruned");
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "2:4");
  m = espalier_variant_get_model (v);
  for (int i = 0; i < es_model_n_layers (m); i++)
    if (es_prune_layer_is_prunable (m, i))
      {
        const EsTensorInfo *ti = es_model_tensor (m, es_model_layer (m, i)->first_tensor);
        const float *w = es_model_tensor_data (m, es_model_layer (m, i)->first_tensor);

        for (int64_t g = 0; g < ti->size / 4; g++)
          {
            int nz = 0;

            for (int j = 0; j < 4; j++)
              nz += w[g * 4 + j] != 0.0f;
            g_assert_cmpint (nz, <=, 2);
          }
      }
}

static void
test_quantize (void)
{
  static const struct { EsQuantMode mode; EsCalibMethod calib; const char *name, *format; } cases[] = {
    { ES_QUANT_INT8_STATIC, ES_CALIB_MINMAX, "int8 static (minmax)", "int8-static" },
    { ES_QUANT_INT8_STATIC, ES_CALIB_PERCENTILE, "int8 static (percentile)", "int8-static" },
    { ES_QUANT_INT8_STATIC, ES_CALIB_MSE, "int8 static (mse)", "int8-static" },
    { ES_QUANT_INT8_DYNAMIC, ES_CALIB_MINMAX, "int8 dynamic", "int8-dynamic" },
    { ES_QUANT_FP16, ES_CALIB_MINMAX, "fp16", "fp16" },
    { ES_QUANT_BF16, ES_CALIB_MINMAX, "bf16", "bf16" },
  };
  double parent = parent_test_accuracy ();
  guint64 fp32_bytes = espalier_variant_get_size_bytes (baseline);

  for (guint c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      EspalierOptimizeOptions o;
      g_autoptr(EspalierVariant) v = NULL;

      opts_init (&o, ESPALIER_OPTIMIZE_QUANTIZE);
      o.quant_mode = cases[c].mode;
      o.calib = cases[c].calib;
      v = optimize (&o, NULL);
      assert_measured (v, "quantized");
      g_assert_cmpstr (espalier_variant_get_name (v), ==, cases[c].name);
      g_assert_cmpstr (espalier_variant_get_format (v), ==, cases[c].format);
      g_assert_nonnull (espalier_variant_get_quant (v));
      g_assert_cmpfloat (fabs (espalier_variant_get_accuracy (v) - parent), <=, 0.03);
      if (cases[c].mode == ES_QUANT_FP16 || cases[c].mode == ES_QUANT_BF16)
        g_assert_cmpuint (espalier_variant_get_size_bytes (v), <=, fp32_bytes / 2 + 64);
      else
        {
          g_assert_cmpuint (espalier_variant_get_size_bytes (v), <, fp32_bytes / 2);
          g_assert_cmpstr (espalier_variant_get_exec (v), ==, "int8");
        }
    }

  /* fp32 is no quantization */
  {
    EspalierOptimizeOptions o;
    g_autoptr(GError) error = NULL;

    opts_init (&o, ESPALIER_OPTIMIZE_QUANTIZE);
    o.quant_mode = ES_QUANT_FP32;
    g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, NULL, NULL, NULL,
                                      &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  }
}

static void
test_qat (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) v = NULL;
  const EsQuant *q;

  opts_init (&o, ESPALIER_OPTIMIZE_QAT);
  o.epochs = 2;
  v = optimize (&o, NULL);
  assert_measured (v, "quantized");
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "int8 QAT");
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "int8-static");
  q = espalier_variant_get_quant (v);
  g_assert_nonnull (q);
  g_assert_true (es_quant_is_ready (q, NULL));
  for (int i = 0; i < q->n_layers; i++)
    if (q->layers[i].int8)
      g_assert_true (q->layers[i].in_hi > q->layers[i].in_lo);
  g_assert_cmpfloat (fabs (espalier_variant_get_accuracy (v) - parent_test_accuracy ()), <=, 0.05);
}

/* The trainer's fake quantization tracks the input range of exactly the chosen layers. */
static void
test_trainer_fake_quant (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EsModel *model = es_model_copy (espalier_variant_get_model (baseline));
  int n = es_model_n_layers (model);
  g_autofree gboolean *sel = g_new0 (gboolean, n);
  EspalierTrainOptions o = train_opts;
  float lo, hi;

  sel[2] = sel[4] = TRUE;
  o.epochs = 1;
  tr = espalier_trainer_new (dataset, model, &o);
  espalier_trainer_set_fake_quant (tr, sel, FALSE);
  g_assert_true (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (espalier_trainer_get_input_range (tr, 0, &lo, &hi));
  g_assert_true (espalier_trainer_get_input_range (tr, 2, &lo, &hi));
  /* the input of layer 2 comes from a ReLU */
  g_assert_cmpfloat (lo, >=, -1e-6);
  g_assert_cmpfloat (hi, >, 0);
  g_assert_true (espalier_trainer_get_input_range (tr, 4, NULL, NULL));
  g_assert_false (espalier_trainer_get_input_range (tr, (guint) n + 3, NULL, NULL));
  g_clear_object (&tr);
  es_model_free (model);
}

static void
test_reduce (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(EspalierVariant) kd = NULL, ft = NULL, cut = NULL;
  g_autoptr(GString) text = g_string_new (NULL);
  Seen seen = { .text = text };
  const EsModel *pm = espalier_variant_get_model (baseline), *m;
  EsShape a, b;

  opts_init (&o, ESPALIER_OPTIMIZE_REDUCE);
  o.epochs = 2;
  kd = optimize (&o, &seen);
  assert_measured (kd, "reduced");
  /* the last hidden weight layer is layer 5 (1-based) */
  g_assert_cmpstr (espalier_variant_get_name (kd), ==, "reduced (-layer 5, distilled)");
  m = espalier_variant_get_model (kd);
  g_assert_cmpint (es_model_n_layers (m), ==, es_model_n_layers (pm) - 2);
  a = es_model_output_shape (m);
  b = es_model_output_shape (pm);
  g_assert_true (es_shape_equal (&a, &b));
  g_assert_cmpint (es_model_layer (m, 4)->spec.units, ==, 4);
  g_assert_cmpint (es_model_layer (m, 4)->in.dims[0], ==, 32);
  /* the comparison with plain fine-tuning is reported, not skipped */
  g_assert_nonnull (strstr (espalier_variant_get_description (kd), "plain fine-tuning"));
  g_assert_nonnull (strstr (text->str, "plain fine-tuning"));
  g_assert_cmpuint (seen.epochs, ==, 2);   /* the comparison run's epochs are messages */

  opts_init (&o, ESPALIER_OPTIMIZE_REDUCE);
  o.distill = FALSE;
  o.remove_layer = 2;
  o.epochs = 1;
  ft = optimize (&o, NULL);
  assert_measured (ft, "reduced");
  g_assert_cmpstr (espalier_variant_get_name (ft), ==, "reduced (-layer 3, fine-tuned)");
  g_assert_cmpint (es_model_n_layers (espalier_variant_get_model (ft)), ==, es_model_n_layers (pm) - 2);

  opts_init (&o, ESPALIER_OPTIMIZE_REDUCE);
  o.epochs = 0;
  cut = optimize (&o, NULL);
  g_assert_cmpstr (espalier_variant_get_name (cut), ==, "reduced (-layer 5)");

  /* the output layer cannot go, nor a ReLU */
  {
    g_autoptr(GError) error = NULL;

    o.remove_layer = 6;
    g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, NULL, NULL, NULL,
                                      &error));
    g_assert_nonnull (error);
    g_clear_error (&error);
    o.remove_layer = 1;
    g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, NULL, NULL, NULL,
                                      &error));
    g_assert_nonnull (error);
  }
}

static void
test_unique_names (void)
{
  EspalierOptimizeOptions o;
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) v = NULL;
  const char *taken[] = { "pruned 50%", "pruned 50% (2)", NULL };

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.scope = ES_PRUNE_GLOBAL;
  o.sparsity = 0.5;
  o.epochs = 0;
  v = espalier_optimize (dataset, baseline, &train_opts, &o, taken, NULL, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (espalier_variant_get_name (v), ==, "pruned 50% (3)");
}

static void
test_sensitivity (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) rows = NULL, q = NULL;
  const double levels[] = { 0.5, 0.95 };
  Seen seen = { 0 };

  rows = espalier_sensitivity_scan (dataset, baseline, &train_opts, ESPALIER_SENSITIVITY_PRUNE,
                                    levels, 2, NULL, on_progress, &seen, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (rows->len, ==, 4 * 2);   /* 4 weight layers, 2 levels */
  for (guint i = 0; i < rows->len; i++)
    {
      const EspalierSensitivityRow *r = &g_array_index (rows, EspalierSensitivityRow, i);

      g_assert_cmpuint (r->layer, ==, (guint) (2 * (i / 2)));
      g_assert_cmpfloat (r->level, ==, levels[i % 2]);
      g_assert_true (r->accuracy >= 0 && r->accuracy <= 1);
      g_assert_cmpfloat (r->baseline, ==, g_array_index (rows, EspalierSensitivityRow, 0).baseline);
    }
  g_assert_cmpuint (seen.steps, ==, 1 + 8);

  q = espalier_sensitivity_scan (dataset, baseline, &train_opts, ESPALIER_SENSITIVITY_QUANTIZE,
                                 NULL, 0, NULL, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (q->len, ==, 4);
  for (guint i = 0; i < q->len; i++)
    {
      const EspalierSensitivityRow *r = &g_array_index (q, EspalierSensitivityRow, i);

      g_assert_cmpfloat (r->level, ==, -1);
      g_assert_cmpfloat (fabs (r->accuracy - r->baseline), <=, 0.05);
    }

  {
    const double bad[] = { 1.0 };
    GArray *none = espalier_sensitivity_scan (dataset, baseline, &train_opts,
                                              ESPALIER_SENSITIVITY_PRUNE, bad, 1, NULL, NULL,
                                              NULL, &error);
    g_assert_null (none);
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  }
}

/* Split one CSV line with quoted fields. */
static GPtrArray *
csv_fields (const char *line)
{
  GPtrArray *f = g_ptr_array_new_with_free_func (g_free);
  GString *cur = g_string_new (NULL);
  gboolean quoted = FALSE;

  for (const char *p = line; *p != '\0'; p++)
    {
      if (quoted)
        {
          if (*p == '"' && p[1] == '"')
            g_string_append_c (cur, *p++);
          else if (*p == '"')
            quoted = FALSE;
          else
            g_string_append_c (cur, *p);
        }
      else if (*p == '"')
        quoted = TRUE;
      else if (*p == ',')
        {
          g_ptr_array_add (f, g_string_free (cur, FALSE));
          cur = g_string_new (NULL);
        }
      else
        g_string_append_c (cur, *p);
    }
  g_ptr_array_add (f, g_string_free (cur, FALSE));
  return f;
}

static void
test_write_table (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) variants = g_ptr_array_new_with_free_func (g_object_unref);
  g_autofree char *csv = g_build_filename (dtu_root, "table.csv", NULL);
  g_autofree char *json = g_build_filename (dtu_root, "table.json", NULL);
  g_autofree char *text = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  EspalierOptimizeOptions o;
  EspalierVariant *v;
  JsonArray *arr;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.sparsity = 0.5;
  o.epochs = 0;
  v = optimize (&o, NULL);
  espalier_variant_set_name (v, "pruned, \"half\"");
  g_ptr_array_add (variants, v);
  g_ptr_array_add (variants, g_object_ref (baseline));   /* latency never measured */

  g_assert_true (espalier_variants_write_table (variants, csv, json, &error));
  g_assert_no_error (error);

  g_assert_true (g_file_get_contents (csv, &text, NULL, NULL));
  {
    g_auto(GStrv) lines = g_strsplit (text, "\n", -1);
    g_autoptr(GPtrArray) head = csv_fields (lines[0]);
    g_autoptr(GPtrArray) r1 = csv_fields (lines[1]);
    g_autoptr(GPtrArray) r2 = csv_fields (lines[2]);
    int i_name = -1, i_acc = -1, i_lat = -1, i_nz = -1;

    g_assert_cmpuint (g_strv_length (lines), ==, 4);   /* header, 2 rows, "" */
    for (guint c = 0; c < head->len; c++)
      {
        const char *h = g_ptr_array_index (head, c);

        if (g_str_equal (h, "name")) i_name = (int) c;
        if (g_str_equal (h, "accuracy")) i_acc = (int) c;
        if (g_str_equal (h, "latency_us")) i_lat = (int) c;
        if (g_str_equal (h, "nonzeros")) i_nz = (int) c;
      }
    g_assert_true (i_name >= 0 && i_acc >= 0 && i_lat >= 0 && i_nz >= 0);
    g_assert_cmpuint (r1->len, ==, head->len);
    g_assert_cmpuint (r2->len, ==, head->len);
    g_assert_cmpstr (g_ptr_array_index (r1, i_name), ==, "pruned, \"half\"");
    g_assert_cmpfloat (g_ascii_strtod (g_ptr_array_index (r1, i_acc), NULL), ==,
                       espalier_variant_get_accuracy (v));
    g_assert_cmpfloat (g_ascii_strtod (g_ptr_array_index (r1, i_lat), NULL), ==,
                       espalier_variant_get_latency_us (v));
    g_assert_cmpint (g_ascii_strtoll (g_ptr_array_index (r1, i_nz), NULL, 10), ==,
                     espalier_variant_get_nonzeros (v));
    g_assert_cmpstr (g_ptr_array_index (r2, i_name), ==, "baseline");
    g_assert_cmpstr (g_ptr_array_index (r2, i_lat), ==, "");   /* not measured */
  }

  g_assert_true (json_parser_load_from_file (parser, json, &error));
  g_assert_no_error (error);
  arr = json_node_get_array (json_parser_get_root (parser));
  g_assert_cmpuint (json_array_get_length (arr), ==, 2);
  {
    JsonObject *a = json_array_get_object_element (arr, 0);
    JsonObject *b = json_array_get_object_element (arr, 1);

    g_assert_cmpstr (json_object_get_string_member (a, "name"), ==, "pruned, \"half\"");
    g_assert_cmpstr (json_object_get_string_member (a, "kind"), ==, "pruned");
    g_assert_cmpstr (json_object_get_string_member (a, "parent"), ==, "baseline");
    g_assert_cmpfloat (json_object_get_double_member (a, "accuracy"), ==,
                       espalier_variant_get_accuracy (v));
    g_assert_cmpint (json_object_get_int_member (a, "n_params"), ==,
                     espalier_variant_get_n_params (v));
    g_assert_true (JSON_NODE_HOLDS_NULL (json_object_get_member (b, "latency_us")));
  }

  /* an unwritable place */
  g_assert_false (espalier_variants_write_table (variants, "/nonexistent/dir/t.csv", NULL, &error));
  g_assert_nonnull (error);
}

static void
test_cancel (void)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  EspalierOptimizeOptions o;
  Seen seen = { .cancel_at_epoch = cancellable };

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.epochs = 5;
  g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, cancellable,
                                    on_progress, &seen, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (seen.epochs, ==, 1);
  g_clear_error (&error);

  /* already cancelled: a job without fine-tuning stops at its measurement */
  opts_init (&o, ESPALIER_OPTIMIZE_QUANTIZE);
  g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, cancellable, NULL,
                                    NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

typedef struct {
  GMainLoop       *loop;
  EspalierVariant *variant;
  GArray          *rows;
  GError          *error;
} AsyncResult;

static void
on_optimized (GObject *source, GAsyncResult *result, gpointer data)
{
  AsyncResult *r = data;

  r->variant = espalier_optimize_finish (result, &r->error);
  g_main_loop_quit (r->loop);
}

static void
on_scanned (GObject *source, GAsyncResult *result, gpointer data)
{
  AsyncResult *r = data;

  r->rows = espalier_sensitivity_scan_finish (result, &r->error);
  g_main_loop_quit (r->loop);
}

static void
test_async (void)
{
  AsyncResult r = { g_main_loop_new (NULL, FALSE), NULL, NULL, NULL };
  Seen seen = { .thread = g_thread_self () };
  EspalierOptimizeOptions o;
  const double levels[] = { 0.5 };

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  o.epochs = 2;
  o.layers = g_new0 (gboolean, es_model_n_layers (espalier_variant_get_model (baseline)));
  o.layers[0] = TRUE;
  espalier_optimize_async (dataset, baseline, &train_opts, &o, NULL, NULL, on_progress, &seen,
                           NULL, on_optimized, &r);
  espalier_optimize_options_clear (&o);   /* the job copied what it needs */
  g_main_loop_run (r.loop);
  g_assert_no_error (r.error);
  g_assert_nonnull (r.variant);
  g_assert_false (seen.wrong_thread);
  g_assert_cmpuint (seen.epochs, ==, 2);
  g_assert_cmpuint (seen.messages, >, 0);
  {
    const EsModel *m = espalier_variant_get_model (r.variant);
    int64_t n = 0;

    g_assert_cmpint (es_prune_layer_zeros (m, 0, &n), ==, llround (0.9 * (double) n));
    g_assert_cmpint (es_prune_layer_zeros (m, 2, &n), <, n / 10);
  }
  g_clear_object (&r.variant);

  espalier_sensitivity_scan_async (dataset, baseline, &train_opts, ESPALIER_SENSITIVITY_PRUNE,
                                   levels, 1, NULL, on_progress, &seen, NULL, on_scanned, &r);
  g_main_loop_run (r.loop);
  g_assert_no_error (r.error);
  g_assert_cmpuint (r.rows->len, ==, 4);
  g_array_unref (r.rows);
  g_main_loop_unref (r.loop);
}

/* A variant without weights, and a dataset that does not fit, are refused. */
static void
test_refuses (void)
{
  g_autoptr(EspalierVariant) empty = espalier_variant_new ("saved", "baseline", NULL);
  g_autoptr(EspalierDataset) spiral = NULL;
  g_autoptr(GError) error = NULL;
  EspalierOptimizeOptions o;
  EspalierLoadOptions lo;

  opts_init (&o, ESPALIER_OPTIMIZE_PRUNE);
  g_assert_null (espalier_optimize (dataset, empty, &train_opts, &o, NULL, NULL, NULL, NULL,
                                    &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);

  espalier_load_options_init (&lo);
  lo.use_cache = FALSE;
  spiral = espalier_dataset_load ("spiral:n=60", &lo, NULL, &error);
  g_assert_no_error (error);
  g_assert_null (espalier_optimize (spiral, baseline, &train_opts, &o, NULL, NULL, NULL, NULL,
                                    &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_clear_error (&error);

  o.sparsity = 1.0;
  g_assert_null (espalier_optimize (dataset, baseline, &train_opts, &o, NULL, NULL, NULL, NULL,
                                    &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
}

int
main (int argc, char **argv)
{
  int status;

  dtu_init (&argc, &argv);
  setup ();
  g_test_add_func ("/core/optimize/names", test_names);
  g_test_add_func ("/core/optimize/evaluate-exec", test_evaluate_exec);
  g_test_add_func ("/core/optimize/prune", test_prune);
  g_test_add_func ("/core/optimize/prune-layers", test_prune_layers);
  g_test_add_func ("/core/optimize/prune-gradual", test_prune_gradual);
  g_test_add_func ("/core/optimize/trainer-schedule", test_trainer_schedule);
  g_test_add_func ("/core/optimize/trainer-mask", test_trainer_mask);
  g_test_add_func ("/core/optimize/structured", test_structured);
  g_test_add_func ("/core/optimize/2-4", test_2_4);
  g_test_add_func ("/core/optimize/quantize", test_quantize);
  g_test_add_func ("/core/optimize/qat", test_qat);
  g_test_add_func ("/core/optimize/trainer-fake-quant", test_trainer_fake_quant);
  g_test_add_func ("/core/optimize/reduce", test_reduce);
  g_test_add_func ("/core/optimize/unique-names", test_unique_names);
  g_test_add_func ("/core/optimize/sensitivity", test_sensitivity);
  g_test_add_func ("/core/optimize/write-table", test_write_table);
  g_test_add_func ("/core/optimize/cancel", test_cancel);
  g_test_add_func ("/core/optimize/async", test_async);
  g_test_add_func ("/core/optimize/refuses", test_refuses);
  status = g_test_run ();
  g_clear_object (&baseline);
  g_clear_object (&dataset);
  return dtu_finish (status);
}
