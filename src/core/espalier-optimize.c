/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize.c: the optimization jobs of espalier-optimize.h. Each job copies
 * the parent's weights, changes them with the engine (es-prune.h, es-quant.h),
 * fine-tunes through EspalierTrainer and its hooks (mask, pruning schedule, fake
 * quantization, teacher), then measures the result for real: test accuracy through
 * es-exec on the kernels the variant runs on, latency with espalier_measure_variant.
 * Also the sensitivity scans and the comparison table. It never touches GTK; the async
 * forms run the same code on a worker and relay progress to the caller's context.
 *
 * Dimension key: B = batch rows, D = input floats per row, C = outputs. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-exec.h"
#include "espalier-error.h"
#include "espalier-format.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-optimize.h"
#include "espalier-split.h"

/* Rows per es-exec call when evaluating. */
#define EVAL_BATCH 256

/* ------------------------------------------------------------------------------ */
/* names and options */

static const char *const kind_names[] = {
  [ESPALIER_OPTIMIZE_PRUNE] = "prune",
  [ESPALIER_OPTIMIZE_PRUNE_GRADUAL] = "prune-gradual",
  [ESPALIER_OPTIMIZE_PRUNE_STRUCTURED] = "prune-structured",
  [ESPALIER_OPTIMIZE_PRUNE_2_4] = "prune-2:4",
  [ESPALIER_OPTIMIZE_QUANTIZE] = "quantize",
  [ESPALIER_OPTIMIZE_QAT] = "qat",
  [ESPALIER_OPTIMIZE_REDUCE] = "reduce",
};

const char *
espalier_optimize_kind_name (EspalierOptimizeKind kind)
{
  if ((guint) kind >= G_N_ELEMENTS (kind_names))
    return NULL;
  return kind_names[kind];
}

gboolean
espalier_optimize_kind_from_name (const char           *name,
                                  EspalierOptimizeKind *kind)
{
  g_return_val_if_fail (name != NULL, FALSE);

  for (guint i = 0; i < G_N_ELEMENTS (kind_names); i++)
    if (g_str_equal (name, kind_names[i]))
      {
        if (kind != NULL)
          *kind = (EspalierOptimizeKind) i;
        return TRUE;
      }
  return FALSE;
}

void
espalier_optimize_options_init (EspalierOptimizeOptions *opts)
{
  g_return_if_fail (opts != NULL);

  memset (opts, 0, sizeof *opts);
  opts->kind = ESPALIER_OPTIMIZE_PRUNE;
  opts->sparsity = 0.9;
  /* Global: the small output layer keeps the weights it needs (per layer, 90% of a
   * 128x10 layer costs points that fine-tuning does not win back). */
  opts->scope = ES_PRUNE_GLOBAL;
  opts->initial_sparsity = 0.0;
  opts->prune_events = 10;
  opts->keep_fraction = 0.5;
  opts->norm = ES_NORM_L1;
  opts->quant_mode = ES_QUANT_INT8_STATIC;
  opts->calib = ES_CALIB_MINMAX;
  opts->percentile = 99.99;
  opts->calib_batches = 8;
  opts->remove_layer = -1;
  opts->distill = TRUE;
  opts->temperature = 4.0;
  opts->alpha = 0.7;
  opts->epochs = 2;
  opts->lr = 0.0;
  opts->threads = 1;
  opts->latency_seconds = 1.0;
}

void
espalier_optimize_options_clear (EspalierOptimizeOptions *opts)
{
  g_return_if_fail (opts != NULL);

  g_clear_pointer (&opts->layers, g_free);
  g_clear_pointer (&opts->keep_float, g_free);
}

/* A fraction as a percentage with no needless digits: 0.9 -> "90", 0.875 -> "87.5". */
static char *
percent (double fraction)
{
  return g_strdup_printf ("%.4g", 100.0 * fraction);
}

static const char *
norm_name (EsNorm norm)
{
  return norm == ES_NORM_L2 ? "L2" : "L1";
}

static const char *
quant_title (EsQuantMode mode)
{
  switch (mode)
    {
    case ES_QUANT_INT8_STATIC: return _("int8 static");
    case ES_QUANT_INT8_DYNAMIC: return _("int8 dynamic");
    case ES_QUANT_FP16: return "fp16";
    case ES_QUANT_BF16: return "bf16";
    case ES_QUANT_FP32: default: return "fp32";
    }
}

/* ", fine-tune 2 epochs" or "" */
static char *
describe_fine_tune (const EspalierOptimizeOptions *opts)
{
  if (opts->epochs == 0)
    return g_strdup ("");
  return g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, ", fine-tune %u epoch",
                                       ", fine-tune %u epochs", opts->epochs),
                          opts->epochs);
}

char *
espalier_optimize_describe (const EspalierOptimizeOptions *opts)
{
  g_autofree char *ft = NULL, *pct = NULL;

  g_return_val_if_fail (opts != NULL, NULL);

  ft = describe_fine_tune (opts);
  switch (opts->kind)
    {
    case ESPALIER_OPTIMIZE_PRUNE:
      pct = percent (opts->sparsity);
      return g_strdup_printf (opts->scope == ES_PRUNE_GLOBAL
                                ? _("Prune %s%% of weights globally by magnitude%s")
                                : _("Prune %s%% of weights per layer by magnitude%s"),
                              pct, ft);
    case ESPALIER_OPTIMIZE_PRUNE_GRADUAL:
      {
        g_autofree char *from = percent (opts->initial_sparsity);

        pct = percent (opts->sparsity);
        return g_strdup_printf (_("Prune gradually from %s%% to %s%% of weights on the cubic "
                                  "schedule in %u steps while fine-tuning %u epochs"),
                                from, pct, opts->prune_events, opts->epochs);
      }
    case ESPALIER_OPTIMIZE_PRUNE_STRUCTURED:
      pct = percent (1.0 - opts->keep_fraction);
      return g_strdup_printf (_("Remove %s%% of the neurons and channels of each layer by %s "
                                "norm%s"), pct, norm_name (opts->norm), ft);
    case ESPALIER_OPTIMIZE_PRUNE_2_4:
      return g_strdup_printf (_("Keep the 2 largest of every 4 weights (2:4)%s"), ft);
    case ESPALIER_OPTIMIZE_QUANTIZE:
      if (opts->quant_mode == ES_QUANT_INT8_STATIC)
        return g_strdup_printf (_("Quantize to int8, activations calibrated by %s on %u "
                                  "batches"),
                                es_calib_method_name (opts->calib), opts->calib_batches);
      if (opts->quant_mode == ES_QUANT_INT8_DYNAMIC)
        return g_strdup (_("Quantize weights to int8, activation ranges at run time"));
      return g_strdup_printf (_("Store weights as %s"), quant_title (opts->quant_mode));
    case ESPALIER_OPTIMIZE_QAT:
      return g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                           "Quantization-aware training for %u epoch, then int8",
                                           "Quantization-aware training for %u epochs, then int8",
                                           opts->epochs),
                              opts->epochs);
    case ESPALIER_OPTIMIZE_REDUCE:
      {
        g_autofree char *layer = opts->remove_layer < 0
                                   ? g_strdup (_("the last hidden weight layer"))
                                   : g_strdup_printf (_("layer %d"), opts->remove_layer + 1);

        if (opts->epochs == 0)
          return g_strdup_printf (_("Remove %s"), layer);
        if (opts->distill)
          return g_strdup_printf (_("Remove %s, then distill from the parent (T %g, alpha %g)%s"),
                                  layer, opts->temperature, opts->alpha, ft);
        return g_strdup_printf (_("Remove %s%s"), layer, ft);
      }
    }
  return g_strdup ("");
}

/* ------------------------------------------------------------------------------ */
/* data */

/* x (n, D) = the rows' features as floats. */
static void
gather_rows (EspalierDataset *ds,
             const guint32   *rows,
             guint            n,
             float           *x)
{
  guint D = espalier_dataset_get_row_size (ds);

  if (espalier_dataset_is_u8 (ds))
    {
      const guint8 *u8 = espalier_dataset_get_u8 (ds);
      float scale = espalier_dataset_get_scale (ds), shift = espalier_dataset_get_shift (ds);

      for (guint r = 0; r < n; r++)
        {
          const guint8 *src = u8 + (gsize) rows[r] * D;
          float *dst = x + (gsize) r * D;

          for (guint j = 0; j < D; j++)
            dst[j] = src[j] * scale + shift;
        }
    }
  else
    {
      const float *f32 = espalier_dataset_get_f32 (ds);

      for (guint r = 0; r < n; r++)
        memcpy (x + (gsize) r * D, f32 + (gsize) rows[r] * D, D * sizeof (float));
    }
}

static gboolean
check_model_fits (const EsModel   *model,
                  EspalierDataset *ds,
                  GError         **error)
{
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  guint n_classes = espalier_dataset_get_n_classes (ds);
  gint64 n_out = es_shape_size (&out);
  char a[64];

  if ((guint) es_shape_size (&in) != espalier_dataset_get_row_size (ds))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The model takes inputs of shape %s (%lld values) but %s has rows of %u "
                     "values"),
                   es_shape_format (&in, a, sizeof a), (long long) es_shape_size (&in),
                   espalier_dataset_get_name (ds), espalier_dataset_get_row_size (ds));
      return FALSE;
    }
  if (n_classes > 0 && espalier_dataset_get_labels (ds) != NULL
      && n_out != n_classes && !(n_out == 1 && n_classes == 2))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The model outputs %s but %s has %u classes"),
                   es_shape_format (&out, a, sizeof a), espalier_dataset_get_name (ds),
                   n_classes);
      return FALSE;
    }
  if (n_classes == 0 && (espalier_dataset_get_targets (ds) == NULL
                         || n_out != espalier_dataset_get_n_targets (ds)))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The model outputs %s but %s has %u targets per row"),
                   es_shape_format (&out, a, sizeof a), espalier_dataset_get_name (ds),
                   espalier_dataset_get_n_targets (ds));
      return FALSE;
    }
  return TRUE;
}

/* Loss and prediction of one output row y (C) against label / targets: softmax cross
 * entropy (of probabilities when the model ends in Softmax, of logits otherwise),
 * binary cross-entropy for one output, or the mean squared error for regression. */
static double
row_loss (const float *y, int C, gboolean probs, const gint32 *label, const float *targets,
          gint32 *pred)
{
  if (targets != NULL)
    {
      double sum = 0;

      for (int c = 0; c < C; c++)
        sum += ((double) y[c] - targets[c]) * ((double) y[c] - targets[c]);
      *pred = -1;
      return sum / C;
    }
  if (C == 1)
    {
      double p = probs ? y[0] : 1.0 / (1.0 + exp (-(double) y[0]));

      p = CLAMP (p, 1e-12, 1 - 1e-12);
      *pred = p > 0.5;
      return *label ? -log (p) : -log (1 - p);
    }
  {
    int best = 0;
    double mx = y[0], loss;

    for (int c = 1; c < C; c++)
      if (y[c] > y[best])
        best = c;
    *pred = best;
    if (probs)
      return -log (MAX ((double) y[*label], 1e-12));
    for (int c = 1; c < C; c++)
      mx = MAX (mx, (double) y[c]);
    loss = 0;
    for (int c = 0; c < C; c++)
      loss += exp ((double) y[c] - mx);
    return log (loss) + mx - y[*label];
  }
}

static gboolean
evaluate_exec (const EsModel     *model,
               const EsQuant     *quant,
               const EsExecKind  *kinds,
               EspalierDataset   *ds,
               const guint32     *rows,
               guint              n_rows,
               guint              threads,
               EspalierMetrics   *metrics,
               GCancellable      *cancellable,
               GError           **error)
{
  g_autofree guint32 *all = NULL;
  g_autofree float *x = NULL;
  EsModel *rounded = NULL;
  EsBackend *be;
  EsExec *ex;
  EsError es = { 0 };
  EsShape out = es_model_output_shape (model);
  int C = (int) es_shape_size (&out);
  guint D = espalier_dataset_get_row_size (ds);
  guint n_classes = espalier_dataset_get_n_classes (ds);
  const gint32 *labels = espalier_dataset_get_labels (ds);
  const float *targets = n_classes == 0 ? espalier_dataset_get_targets (ds) : NULL;
  gboolean probs;
  double loss_sum = 0;
  guint correct = 0;
  int last = es_model_n_layers (model) - 1;

  memset (metrics, 0, sizeof *metrics);
  if (!check_model_fits (model, ds, error))
    return FALSE;
  if (rows == NULL)
    {
      n_rows = espalier_dataset_get_n_rows (ds);
      /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
      all = espalier_try_alloc (n_rows, sizeof (guint32), FALSE, _("the evaluation buffers"),
                                error);
      if (all == NULL)
        return FALSE;
      for (guint i = 0; i < n_rows; i++)
        all[i] = i;
      rows = all;
    }
  metrics->rows = n_rows;
  metrics->n_classes = n_classes;
  if (n_classes > 0)
    metrics->confusion = g_new0 (guint, (gsize) n_classes * n_classes);
  if (n_rows == 0)
    {
      metrics->loss = metrics->accuracy = NAN;
      return TRUE;
    }
  probs = last >= 0 && (es_model_layer (model, last)->spec.kind == ES_LAYER_SOFTMAX
                        || (C == 1 && es_model_layer (model, last)->spec.kind == ES_LAYER_SIGMOID));

  /* fp16 and bf16 run in fp32 on the weights as rounded for storage. */
  if (quant != NULL && quant->mode != ES_QUANT_INT8_STATIC && quant->mode != ES_QUANT_INT8_DYNAMIC)
    {
      if (quant->mode != ES_QUANT_FP32)
        model = rounded = es_quant_dequantized_model (model, quant);
      quant = NULL;
    }
  be = es_cpu_backend_new ((int) threads, NULL, &es);
  if (be == NULL)
    {
      espalier_error_from_es (error, &es, _("Could not start the CPU backend"));
      g_clear_pointer (&rounded, es_model_free);
      return FALSE;
    }
  ex = es_exec_new (model, quant, kinds, be, EVAL_BATCH, &es);
  g_clear_pointer (&rounded, es_model_free);   /* es_exec_new copied it */
  if (ex == NULL)
    {
      espalier_error_from_es (error, &es, _("Cannot run the variant"));
      es_backend_free (be);
      return FALSE;
    }
  x = espalier_try_alloc ((gsize) EVAL_BATCH * D, sizeof (float), FALSE,
                          _("the evaluation buffers"), error);   /* (EVAL_BATCH, D) */
  if (x == NULL)
    {
      es_exec_free (ex);
      es_backend_free (be);
      espalier_metrics_clear (metrics);
      return FALSE;
    }
  for (guint r0 = 0; r0 < n_rows; r0 += EVAL_BATCH)
    {
      guint B = MIN (EVAL_BATCH, n_rows - r0);
      const float *y;

      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        {
          es_exec_free (ex);
          es_backend_free (be);
          espalier_metrics_clear (metrics);
          return FALSE;
        }
      gather_rows (ds, rows + r0, B, x);
      y = es_exec_run (ex, x, (int) B);   /* (B, C) */
      for (guint r = 0; r < B; r++)
        {
          guint32 row = rows[r0 + r];
          gint32 pred;

          loss_sum += row_loss (y + (gsize) r * C, C, probs, labels ? &labels[row] : NULL,
                                targets ? targets + (gsize) row * C : NULL, &pred);
          if (labels != NULL && n_classes > 0 && pred >= 0 && (guint) pred < n_classes
              && (guint) labels[row] < n_classes)
            {
              metrics->confusion[(gsize) labels[row] * n_classes + (guint) pred]++;
              correct += pred == labels[row];
            }
        }
    }
  es_exec_free (ex);
  es_backend_free (be);
  metrics->loss = loss_sum / n_rows;
  metrics->accuracy = n_classes > 0 ? (double) correct / n_rows : NAN;
  return TRUE;
}

gboolean
espalier_evaluate_exec (const EsModel     *model,
                        const EsQuant     *quant,
                        const EsExecKind  *kinds,
                        EspalierDataset   *dataset,
                        const guint32     *rows,
                        guint              n_rows,
                        guint              threads,
                        EspalierMetrics   *metrics,
                        GError           **error)
{
  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), FALSE);
  g_return_val_if_fail (metrics != NULL, FALSE);

  return evaluate_exec (model, quant, kinds, dataset, rows, n_rows, threads, metrics, NULL,
                        error);
}

/* ------------------------------------------------------------------------------ */
/* a job */

typedef struct {
  EspalierDataset               *dataset;
  EspalierVariant               *parent;
  const EspalierTrainOptions    *train;
  const EspalierOptimizeOptions *opts;
  const char * const            *taken;
  GCancellable                  *cancellable;
  EspalierProgressFunc           func;
  gpointer                       data;

  const EsModel                 *model;      /* the parent's weights */
  int                            n_layers;
  EspalierSplit                 *split;
  const guint32                 *eval_rows;  /* test split, else validation */
  guint                          n_eval;
  gboolean                       comparison; /* a comparison run: epochs become messages */
} Job;

static void G_GNUC_PRINTF (2, 3)
job_message (Job *job, const char *fmt, ...)
{
  g_autofree char *text = NULL;
  EspalierProgress p = { .kind = ESPALIER_PROGRESS_MESSAGE };
  va_list ap;

  if (job->func == NULL)
    return;
  va_start (ap, fmt);
  text = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  p.message = text;
  job->func (&p, job->data);
}

/* Fine-tuning progress from the trainer to the caller. */
static void
forward_progress (const EspalierProgress *p, gpointer user_data)
{
  Job *job = user_data;

  if (job->func == NULL)
    return;
  if (job->comparison && p->kind == ESPALIER_PROGRESS_START)
    return;
  if (job->comparison && p->kind == ESPALIER_PROGRESS_EPOCH)
    {
      g_autofree char *acc = percent (p->record->val_accuracy);

      if (!isnan (p->record->val_accuracy))
        job_message (job, _("Comparison fine-tuning, epoch %u/%u: validation accuracy %s%%"),
                     p->epoch, p->epochs, acc);
      return;
    }
  job->func (p, job->data);
}

static float
fine_tune_lr (const Job *job)
{
  return job->opts->lr > 0 ? (float) job->opts->lr : job->train->engine.lr;
}

static void
fine_tune_options (const Job *job, EspalierTrainOptions *o)
{
  *o = *job->train;
  o->epochs = job->opts->epochs;
  o->engine.lr = fine_tune_lr (job);
  o->engine.total_steps = 0;   /* a cosine schedule spans the fine-tuning */
  o->engine.warmup_steps = 0;
  o->patience = 0;
}

/* A trainer for model with the job's fine-tuning options. */
static EspalierTrainer *
job_trainer (Job *job, EsModel *model)
{
  EspalierTrainOptions o;

  fine_tune_options (job, &o);
  return espalier_trainer_new (job->dataset, model, &o);
}

static gboolean
job_run (Job *job, EspalierTrainer *trainer, GError **error)
{
  return espalier_trainer_run (trainer, job->cancellable, forward_progress, job, error);
}

static gboolean
job_evaluate (Job *job, const EsModel *model, const EsQuant *quant, double *accuracy,
              GError **error)
{
  EspalierMetrics m = { 0 };

  if (!evaluate_exec (model, quant, NULL, job->dataset, job->eval_rows, job->n_eval,
                      job->opts->threads, &m, job->cancellable, error))
    return FALSE;
  *accuracy = m.rows > 0 ? m.accuracy : NAN;
  espalier_metrics_clear (&m);
  return TRUE;
}

/* The selection opts->layers as bools (NULL stays NULL). */
static bool *
job_layers (const Job *job, const gboolean *sel)
{
  bool *b;

  if (sel == NULL)
    return NULL;
  b = g_new (bool, job->n_layers);
  for (int i = 0; i < job->n_layers; i++)
    b[i] = sel[i] != FALSE;
  return b;
}

/* Whether the parent's weights hold zeros that a fine-tuning run must keep. */
static EsMask *
zeros_mask (const EsModel *model)
{
  return es_prune_model_sparsity (model) > 0 ? es_mask_from_zeros (model) : NULL;
}

/* job_trainer, holding the zeros model already has (if any) at zero. */
static EspalierTrainer *
job_trainer_keeping_zeros (Job *job, EsModel *model)
{
  EsMask *mask = zeros_mask (model);
  EspalierTrainer *tr = job_trainer (job, model);

  if (mask != NULL)
    {
      espalier_trainer_set_mask (tr, mask);   /* the trainer keeps a copy */
      es_mask_free (mask);
    }
  return tr;
}

/* Fine-tune model for the job's epochs (none: nothing to do) with mask held, then
 * apply it. */
static gboolean
job_fine_tune_masked (Job *job, EsModel *model, const EsMask *mask, GError **error)
{
  g_autoptr(EspalierTrainer) tr = NULL;

  if (job->opts->epochs == 0)
    return TRUE;
  tr = job_trainer (job, model);
  espalier_trainer_set_mask (tr, mask);
  if (!job_run (job, tr, error))
    return FALSE;
  es_mask_apply (mask, model);
  return TRUE;
}

/* Base name made unique against taken: "pruned 90%", "pruned 90% (2)". */
static char *
unique_name (const char *base, const char * const *taken)
{
  char *name = g_strdup (base);

  for (guint n = 2; taken != NULL && g_strv_contains (taken, name); n++)
    {
      g_free (name);
      name = g_strdup_printf ("%s (%u)", base, n);
    }
  return name;
}

/* Indices of the Dense/Conv2D layers, in order. */
static GArray *
weight_layers (const EsModel *model)
{
  GArray *w = g_array_new (FALSE, FALSE, sizeof (int));

  for (int i = 0; i < es_model_n_layers (model); i++)
    if (es_prune_layer_is_prunable (model, i))
      g_array_append_val (w, i);
  return w;
}

static const char *
layer_title (const EsModel *model, int layer)
{
  return es_layer_kind_title (es_model_layer (model, layer)->spec.kind);
}

/* "2 epochs at learning rate 0.001 (adam, batch 32)" */
static char *
fine_tune_details (const Job *job)
{
  return g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                       "%u epoch at learning rate %g (%s, batch %u)",
                                       "%u epochs at learning rate %g (%s, batch %u)",
                                       job->opts->epochs),
                          job->opts->epochs, (double) fine_tune_lr (job),
                          es_opt_kind_name (job->train->engine.optimizer),
                          job->train->batch_size);
}

/* "fine-tuned 2 epochs at learning rate 0.001 (adam, batch 32)" or "not fine-tuned";
 * held: what stayed fixed during fine-tuning ("with the pruned weights held at zero"),
 * or NULL. */
static char *
fine_tune_sentence (const Job *job, const char *held)
{
  g_autofree char *details = NULL;

  if (job->opts->epochs == 0)
    return g_strdup (_("not fine-tuned"));
  details = fine_tune_details (job);
  if (held != NULL)
    /* TRANSLATORS: "fine-tuned 2 epochs at learning rate 0.001 (adam, batch 32) with the
     * pruned weights held at zero" */
    return g_strdup_printf (_("fine-tuned %s %s"), details, held);
  return g_strdup_printf (_("fine-tuned %s"), details);
}

/* Measure model (taken) with quant (taken, may be NULL) and make the variant. */
static EspalierVariant *
finish_variant (Job         *job,
                const char  *kind,
                const char  *base_name,
                const char  *description,
                EsModel     *model,
                EsQuant     *quant,
                GError     **error)
{
  EspalierVariant *v;
  EspalierLatency lat;
  g_autofree char *name = NULL;
  double accuracy = NAN;

  job_message (job, _("Measuring test accuracy on the kernels that run the variant"));
  if (!job_evaluate (job, model, quant, &accuracy, error))
    goto fail;
  if (g_cancellable_set_error_if_cancelled (job->cancellable, error))
    goto fail;
  job_message (job, _("Measuring latency"));
  if (!espalier_measure_variant (model, quant, job->opts->threads, 0,
                                 job->opts->latency_seconds, &lat, error))
    goto fail;
  if (g_cancellable_set_error_if_cancelled (job->cancellable, error))
    goto fail;

  name = unique_name (base_name, job->taken);
  v = espalier_variant_new (name, kind, model);
  if (quant != NULL)
    espalier_variant_set_quant (v, quant);
  espalier_variant_set_description (v, description);
  espalier_variant_set_parent (v, espalier_variant_get_name (job->parent));
  espalier_variant_set_accuracy (v, accuracy);
  espalier_variant_set_latency (v, &lat);
  return v;

fail:
  es_model_free (model);
  if (quant != NULL)
    es_quant_free (quant);
  return NULL;
}

static void
es_fail (GError **error, const EsError *es, const char *what)
{
  espalier_error_from_es (error, es, what);
}

/* ------------------------------------------------------------------------------ */
/* pruning */

/* es_model_copy, or NULL when the copy does not fit the memory available (where the
 * allocator would not say so before the kernel kills the process) or is refused. */
static EsModel *
model_copy (const EsModel *model)
{
  guint64 bytes = ((guint64) es_model_n_params (model) + (guint64) es_model_n_buffers (model))
                  * sizeof (float);

  return espalier_memory_fits (bytes, 0, NULL) ? es_model_copy (model) : NULL;
}

/* A copy of model that could not be made (out of memory): the error, and NULL for the
 * callers' returns. */
static gpointer
copy_failed (const EsModel *model, GError **error)
{
  g_autofree char *size = g_format_size ((guint64) es_model_n_params (model) * sizeof (float));

  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
               _("Not enough memory for a copy of the model (%s)"), size);
  return NULL;
}

static EspalierVariant *
run_prune (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  EsModel *model = model_copy (job->model);
  if (model == NULL)
    return copy_failed (job->model, error);
  EsMask *mask = es_mask_from_zeros (model);
  g_autofree bool *layers = job_layers (job, o->layers);
  g_autofree char *pct = percent (o->sparsity), *ft = NULL, *desc = NULL, *name = NULL;
  g_autofree char *now = NULL;
  EsError es = { 0 };

  job_message (job, _("Pruning %s%% of the weights by magnitude"), pct);
  if (!es_prune_magnitude (model, mask, (float) o->sparsity, o->scope, layers, &es))
    {
      es_fail (error, &es, _("Pruning failed"));
      goto fail;
    }
  if (!job_fine_tune_masked (job, model, mask, error))
    goto fail;
  ft = fine_tune_sentence (job, _("with the pruned weights held at zero"));
  now = percent (es_prune_model_sparsity (model));
  desc = g_strdup_printf (o->scope == ES_PRUNE_GLOBAL
                            ? _("Pruned the %s%% smallest weights of the selected layers taken "
                                "together (one global threshold) by magnitude in one shot, then "
                                "%s; %s%% of all weights are zero")
                            : _("Pruned the %s%% smallest weights of each selected layer by "
                                "magnitude in one shot, then %s; %s%% of all weights are zero"),
                          pct, ft, now);
  name = g_strdup_printf (o->scope == ES_PRUNE_GLOBAL ? _("pruned %s%%")
                                                      : _("pruned %s%% (per layer)"), pct);
  es_mask_free (mask);
  return finish_variant (job, "pruned", name, desc, model, NULL, error);

fail:
  es_mask_free (mask);
  es_model_free (model);
  return NULL;
}

/* The sparsity the selected layers already have: the most of any one layer (per
 * layer) or of them together (global). */
static double
existing_sparsity (const EsModel *model, const gboolean *sel, EsPruneScope scope)
{
  gint64 zeros = 0, total = 0;
  double most = 0;

  for (int i = 0; i < es_model_n_layers (model); i++)
    if ((sel == NULL || sel[i]) && es_prune_layer_is_prunable (model, i))
      {
        int64_t n = 0;
        int64_t z = es_prune_layer_zeros (model, i, &n);

        zeros += z;
        total += n;
        if (n > 0)
          most = MAX (most, (double) z / (double) n);
      }
  if (scope == ES_PRUNE_GLOBAL)
    return total > 0 ? (double) zeros / (double) total : 0;
  return most;
}

static EspalierVariant *
run_prune_gradual (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  EsModel *model;
  g_autoptr(EspalierTrainer) tr = NULL;
  EspalierPruneSchedule sc = { 0 };
  g_autofree char *pct = percent (o->sparsity), *from = NULL, *ft = NULL, *desc = NULL;
  g_autofree char *name = NULL, *now = NULL;
  guint batch = MAX (job->train->batch_size, 1);
  gint64 steps, span;
  double s_i;

  if (o->epochs == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Gradual pruning prunes while it fine-tunes: give it at least one epoch"));
      return NULL;
    }
  s_i = MAX (o->initial_sparsity, existing_sparsity (job->model, o->layers, o->scope));
  if (s_i > o->sparsity)
    {
      g_autofree char *have = percent (s_i);

      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The model already has %s%% of its weights pruned, more than the %s%% "
                     "asked"), have, pct);
      return NULL;
    }
  /* Optimizer steps of the whole fine-tuning; the schedule spans its first 2/3. */
  steps = (gint64) o->epochs * ((job->split->train->len + batch - 1) / batch)
          / MAX (job->train->engine.accum_steps, 1);
  span = MAX (1, 2 * steps / 3);
  sc.initial_sparsity = s_i;
  sc.final_sparsity = o->sparsity;
  sc.begin_step = 0;
  sc.n_events = MAX (1, MIN ((gint64) MAX (o->prune_events, 1), span));
  sc.frequency = MAX (1, span / sc.n_events);
  sc.scope = o->scope;
  sc.layers = o->layers;

  model = model_copy (job->model);
  if (model == NULL)
    return copy_failed (job->model, error);
  tr = job_trainer_keeping_zeros (job, model);
  espalier_trainer_set_prune_schedule (tr, &sc);
  from = percent (s_i);
  job_message (job, _("Pruning gradually from %s%% to %s%% over %lld of %lld steps"), from, pct,
               (long long) (sc.n_events * sc.frequency), (long long) steps);
  if (!job_run (job, tr, error))
    {
      es_model_free (model);
      return NULL;
    }
  if (espalier_trainer_get_mask (tr) != NULL)
    es_mask_apply (espalier_trainer_get_mask (tr), model);

  ft = fine_tune_details (job);
  now = percent (es_prune_model_sparsity (model));
  desc = g_strdup_printf (_("Pruned gradually by magnitude (%s) on the Zhu & Gupta cubic "
                            "schedule from %s%% to %s%% in %lld steps, one every %lld optimizer "
                            "steps, while fine-tuning %s; %s%% of all weights are zero"),
                          o->scope == ES_PRUNE_GLOBAL ? _("global") : _("per layer"),
                          from, pct, (long long) sc.n_events, (long long) sc.frequency, ft, now);
  name = g_strdup_printf (_("pruned %s%% (gradual)"), pct);
  return finish_variant (job, "pruned", name, desc, model, NULL, error);
}

static EspalierVariant *
run_prune_structured (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  g_autoptr(GArray) wl = weight_layers (job->model);
  g_autoptr(GString) what = g_string_new (NULL);
  g_autofree char *pct = percent (1.0 - o->keep_fraction), *ft = NULL, *desc = NULL;
  g_autofree char *name = NULL;
  EsModel *model = model_copy (job->model);
  if (model == NULL)
    return copy_failed (job->model, error);
  gboolean dense = FALSE, conv = FALSE;
  guint changed = 0;

  if (!(o->keep_fraction > 0 && o->keep_fraction < 1))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Structured pruning keeps a fraction of the units between 0 and 1, not %g"),
                   o->keep_fraction);
      es_model_free (model);
      return NULL;
    }
  for (guint k = 0; k < wl->len; k++)
    {
      int i = g_array_index (wl, int, k);
      const EsLayerInfo *l = es_model_layer (model, i);
      gboolean is_conv = l->spec.kind == ES_LAYER_CONV2D;
      int units = is_conv ? l->spec.filters : l->spec.units;
      int keep;
      EsModel *smaller;
      EsError es = { 0 };

      /* Default: every weight layer but the last, whose outputs are the model's. */
      if (o->layers != NULL ? !o->layers[i] : k + 1 == wl->len)
        continue;
      keep = (int) MAX (1, lround (o->keep_fraction * units));
      if (keep >= units)
        continue;
      smaller = es_prune_structured (model, i, keep, o->norm, &es);
      if (smaller == NULL)
        {
          es_fail (error, &es, _("Structured pruning failed"));
          es_model_free (model);
          return NULL;
        }
      es_model_free (model);
      model = smaller;
      dense |= !is_conv;
      conv |= is_conv;
      changed++;
      /* TRANSLATORS: "Dense 3: 128 to 64" (layer, its units before and after) */
      if (what->len > 0)
        g_string_append (what, ", ");
      g_string_append_printf (what, _("%s %d: %d to %d"),
                              es_layer_kind_title (is_conv ? ES_LAYER_CONV2D : ES_LAYER_DENSE),
                              i + 1, units, keep);
    }
  if (changed == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("No layer to prune: structured pruning needs a Dense or Conv2D layer "
                     "before the last one, with more than one unit to keep"));
      es_model_free (model);
      return NULL;
    }
  job_message (job, _("Removed whole units: %s"), what->str);
  if (o->epochs > 0)
    {
      g_autoptr(EspalierTrainer) tr = job_trainer_keeping_zeros (job, model);

      if (!job_run (job, tr, error))
        {
          es_model_free (model);
          return NULL;
        }
    }
  ft = fine_tune_sentence (job, NULL);
  desc = g_strdup_printf (_("Removed the %s%% of units with the smallest %s norm of their "
                            "weights, shrinking each layer and the inputs of the next (%s), "
                            "then %s; it runs on dense kernels"),
                          pct, norm_name (o->norm), what->str, ft);
  name = g_strdup_printf (dense && conv ? _("pruned %s%% units")
                          : conv ? _("pruned %s%% channels") : _("pruned %s%% neurons"), pct);
  return finish_variant (job, "pruned", name, desc, model, NULL, error);
}

static EspalierVariant *
run_prune_2_4 (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  EsModel *model = model_copy (job->model);
  if (model == NULL)
    return copy_failed (job->model, error);
  EsMask *mask = es_mask_from_zeros (model);
  g_autofree bool *layers = job_layers (job, o->layers);
  g_autofree char *ft = NULL, *desc = NULL, *now = NULL;
  EsError es = { 0 };

  job_message (job, _("Keeping the 2 largest of every 4 weights"));
  if (!es_prune_2_4 (model, mask, layers, &es))
    {
      es_fail (error, &es, _("2:4 pruning failed"));
      goto fail;
    }
  if (!job_fine_tune_masked (job, model, mask, error))
    goto fail;
  ft = fine_tune_sentence (job, _("with the mask held"));
  now = percent (es_prune_model_sparsity (model));
  desc = g_strdup_printf (_("2:4 semi-structured sparsity: in every 4 consecutive inputs of "
                            "each row of the selected layers the 2 largest weights kept, then "
                            "%s; %s%% of all weights are zero (sparse tensor cores run this "
                            "pattern on GPUs)"), ft, now);
  es_mask_free (mask);
  return finish_variant (job, "pruned", "2:4", desc, model, NULL, error);

fail:
  es_mask_free (mask);
  es_model_free (model);
  return NULL;
}

/* ------------------------------------------------------------------------------ */
/* quantization */

/* Observe calib_batches batches of the training split (shuffled with the seed) in the
 * float model. */
static EsCalib *
calib_observe (Job *job, const EsModel *model, EsCalibMethod method, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  GArray *train = job->split->train;
  guint batch = MAX (job->train->batch_size, 1);
  guint n = (guint) MIN ((guint64) train->len, (guint64) MAX (o->calib_batches, 1) * batch);
  guint D = espalier_dataset_get_row_size (job->dataset);
  g_autofree guint32 *rows = NULL;
  g_autofree float *x = NULL;
  EsCalib *c;
  EsError es = { 0 };
  EsRng rng = { job->train->seed ^ 0xca11b4a7e5ull };

  if (n == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Calibration needs training rows and the training split is empty"));
      return NULL;
    }
  /* A seeded partial Fisher-Yates: the first n of a shuffled training split. */
  /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
  rows = espalier_try_alloc (train->len, sizeof (guint32), FALSE, _("the calibration buffers"),
                             error);
  if (rows == NULL)
    return NULL;
  memcpy (rows, train->data, (gsize) train->len * sizeof (guint32));
  for (guint i = 0; i < n; i++)
    {
      guint j = i + (guint) (es_rng_next (&rng) % (train->len - i));
      guint32 t = rows[i];

      rows[i] = rows[j];
      rows[j] = t;
    }
  c = es_calib_new (model, method, (float) o->percentile, &es);
  if (c == NULL)
    {
      es_fail (error, &es, _("Calibration failed"));
      return NULL;
    }
  x = espalier_try_alloc ((gsize) batch * D, sizeof (float), FALSE,
                          _("the calibration buffers"), error);   /* (B, D) */
  if (x == NULL)
    {
      es_calib_free (c);
      return NULL;
    }
  for (guint r0 = 0; r0 < n; r0 += batch)
    {
      guint B = MIN (batch, n - r0);

      if (g_cancellable_set_error_if_cancelled (job->cancellable, error))
        {
          es_calib_free (c);
          return NULL;
        }
      gather_rows (job->dataset, rows + r0, B, x);   /* (B, D) */
      if (!es_calib_observe (c, x, (int) B, &es))
        {
          es_fail (error, &es, _("Calibration failed"));
          es_calib_free (c);
          return NULL;
        }
    }
  return c;
}

static gboolean
calib_apply (const EsCalib *c, EsQuant *q, GError **error)
{
  EsError es = { 0 };

  if (!es_calib_apply (c, q, &es))
    {
      es_fail (error, &es, _("Calibration failed"));
      return FALSE;
    }
  return TRUE;
}

/* Observe and set q's static ranges. */
static gboolean
calibrate (Job *job, const EsModel *model, EsQuant *q, EsCalibMethod method, GError **error)
{
  EsCalib *c = calib_observe (job, model, method, error);
  gboolean ok;

  if (c == NULL)
    return FALSE;
  ok = calib_apply (c, q, error);
  es_calib_free (c);
  return ok;
}

/* ", layers 2 and 4 kept in float" or "". */
static char *
kept_float_sentence (const Job *job)
{
  g_autoptr(GString) s = g_string_new (NULL);

  if (job->opts->keep_float == NULL)
    return g_strdup ("");
  for (int i = 0; i < job->n_layers; i++)
    if (job->opts->keep_float[i] && es_prune_layer_is_prunable (job->model, i))
      g_string_append_printf (s, "%s%d", s->len ? ", " : "", i + 1);
  if (s->len == 0)
    return g_strdup ("");
  return g_strdup_printf (_("; layers %s kept in float"), s->str);
}

static EspalierVariant *
run_quantize (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  g_autofree bool *keep = job_layers (job, o->keep_float);
  g_autofree char *kept = kept_float_sentence (job), *desc = NULL, *name = NULL;
  EsModel *model;
  EsQuant *q;
  EsError es = { 0 };

  if (o->quant_mode == ES_QUANT_FP32)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Choose a quantization: int8-static, int8-dynamic, fp16 or bf16"));
      return NULL;
    }
  job_message (job, _("Quantizing the weights (%s)"), quant_title (o->quant_mode));
  q = es_quant_new (job->model, o->quant_mode, keep, o->reduce_range, &es);
  if (q == NULL)
    {
      es_fail (error, &es, _("Quantization failed"));
      return NULL;
    }
  switch (o->quant_mode)
    {
    case ES_QUANT_INT8_STATIC:
      job_message (job, g_dngettext (GETTEXT_PACKAGE, "Calibrating activation ranges (%s) on %u batch",
                                     "Calibrating activation ranges (%s) on %u batches",
                                     o->calib_batches),
                   es_calib_method_name (o->calib), o->calib_batches);
      if (!calibrate (job, job->model, q, o->calib, error))
        {
          es_quant_free (q);
          return NULL;
        }
      model = model_copy (job->model);
      desc = g_strdup_printf (_("Post-training static int8: weights symmetric per output "
                                "channel, activations asymmetric per tensor (%s), ranges "
                                "calibrated by %s on %u training batches of %u rows%s; int8 "
                                "kernels (%s)"),
                              o->reduce_range ? _("7-bit") : _("8-bit"),
                              es_calib_method_name (o->calib), o->calib_batches,
                              job->train->batch_size, kept, es_exec_int8_path ());
      name = g_strdup_printf (_("int8 static (%s)"), es_calib_method_name (o->calib));
      break;
    case ES_QUANT_INT8_DYNAMIC:
      model = model_copy (job->model);
      desc = g_strdup_printf (_("Dynamic int8: weights symmetric per output channel, each "
                                "batch's activation range taken at run time (%s)%s; int8 "
                                "kernels (%s)"),
                              o->reduce_range ? _("7-bit") : _("8-bit"), kept,
                              es_exec_int8_path ());
      name = g_strdup (_("int8 dynamic"));
      break;
    case ES_QUANT_FP16:
    case ES_QUANT_BF16:
    default:
      /* The weights as they are stored, computed in fp32. */
      model = es_quant_dequantized_model (job->model, q);
      desc = g_strdup_printf (_("Weights stored as %s (rounded to nearest even) and computed in "
                                "fp32%s"), quant_title (o->quant_mode), kept);
      name = g_strdup (quant_title (o->quant_mode));
      break;
    }
  if (model == NULL)
    {
      es_quant_free (q);
      return copy_failed (job->model, error);
    }
  return finish_variant (job, "quantized", name, desc, model, q, error);
}

static EspalierVariant *
run_qat (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  g_autofree bool *keep = job_layers (job, o->keep_float);
  g_autofree gboolean *fq = g_new0 (gboolean, job->n_layers);
  g_autofree char *kept = kept_float_sentence (job), *ft = NULL, *desc = NULL;
  g_autoptr(EspalierTrainer) tr = NULL;
  EsModel *model;
  EsQuant *q;
  EsError es = { 0 };
  guint tracked = 0, missing = 0;

  if (o->epochs == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Quantization-aware training needs at least one epoch"));
      return NULL;
    }
  for (int i = 0; i < job->n_layers; i++)
    fq[i] = es_prune_layer_is_prunable (job->model, i) && !(keep != NULL && keep[i]);

  model = model_copy (job->model);
  if (model == NULL)
    return copy_failed (job->model, error);
  tr = job_trainer_keeping_zeros (job, model);
  espalier_trainer_set_fake_quant (tr, fq, o->reduce_range);
  job_message (job, g_dngettext (GETTEXT_PACKAGE, "Training with fake quantization for %u epoch",
                                 "Training with fake quantization for %u epochs", o->epochs),
               o->epochs);
  if (!job_run (job, tr, error))
    {
      es_model_free (model);
      return NULL;
    }

  q = es_quant_new (model, ES_QUANT_INT8_STATIC, keep, o->reduce_range, &es);
  if (q == NULL)
    {
      es_fail (error, &es, _("Quantization failed"));
      es_model_free (model);
      return NULL;
    }
  for (int i = 0; i < job->n_layers; i++)
    if (q->layers[i].int8)
      {
        if (espalier_trainer_get_input_range (tr, (guint) i, NULL, NULL))
          tracked++;
        else
          missing++;
      }
  /* Layers the training tracked no range for are calibrated by min/max. */
  if (missing > 0 && !calibrate (job, model, q, ES_CALIB_MINMAX, error))
    {
      es_quant_free (q);
      es_model_free (model);
      return NULL;
    }
  for (int i = 0; i < job->n_layers; i++)
    {
      float lo, hi;

      if (q->layers[i].int8 && espalier_trainer_get_input_range (tr, (guint) i, &lo, &hi))
        es_quant_set_input_range (q, i, lo, hi);
    }
  if (!es_quant_is_ready (q, &es))
    {
      es_fail (error, &es, _("Quantization failed"));
      es_quant_free (q);
      es_model_free (model);
      return NULL;
    }
  ft = fine_tune_sentence (job, NULL);
  desc = g_strdup_printf (_("Quantization-aware training: %s with weights and inputs "
                            "fake-quantized as the int8 kernels round them (straight-through "
                            "gradients), then static int8 with the input ranges the training "
                            "tracked (%u layers%s)%s; int8 kernels (%s)"),
                          ft, tracked,
                          missing > 0 ? _(", the others calibrated by minmax") : "", kept,
                          es_exec_int8_path ());
  return finish_variant (job, "quantized", _("int8 QAT"), desc, model, q, error);
}

/* ------------------------------------------------------------------------------ */
/* layer reduction */

/* Fine-tune a copy of start (with the parent as teacher when distill) and return it. */
static EsModel *
recover (Job *job, const EsModel *start, gboolean distill, GError **error)
{
  EsModel *model = model_copy (start);
  g_autoptr(EspalierTrainer) tr = model != NULL ? job_trainer (job, model) : NULL;

  if (model == NULL)
    return copy_failed (start, error);
  if (distill)
    espalier_trainer_set_teacher (tr, job->model, job->opts->temperature, job->opts->alpha);
  if (!job_run (job, tr, error))
    {
      es_model_free (model);
      return NULL;
    }
  return model;
}

static char *
acc_text (double a)
{
  return isnan (a) ? g_strdup ("–") : g_strdup_printf ("%.2f%%", 100 * a);
}

static EspalierVariant *
run_reduce (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  g_autoptr(GArray) wl = weight_layers (job->model);
  g_autofree char *removed_what = NULL, *ft = NULL, *desc = NULL, *name = NULL;
  g_autofree char *a_parent = NULL, *a_cut = NULL, *a_ft = NULL, *a_kd = NULL, *verdict = NULL;
  EsModel *reduced, *model;
  EsError es = { 0 };
  int layer = o->remove_layer;
  double acc_parent = NAN, acc_cut = NAN, acc_ft = NAN, acc_kd = NAN;
  gboolean distill = o->distill && o->epochs > 0;

  if (layer < 0)
    {
      if (wl->len < 2)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("The model has no hidden weight layer to remove"));
          return NULL;
        }
      layer = g_array_index (wl, int, wl->len - 2);
    }
  if (layer >= job->n_layers)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Layer %d does not exist: the model has %d layers"), layer + 1,
                   job->n_layers);
      return NULL;
    }
  {
    const EsLayerInfo *l = es_model_layer (job->model, layer);

    removed_what = l->spec.kind == ES_LAYER_CONV2D
                     ? g_strdup_printf (_("Conv2D layer %d (%d filters)"), layer + 1, l->spec.filters)
                     : g_strdup_printf (_("%s layer %d (%d units)"), layer_title (job->model, layer),
                                        layer + 1, l->spec.units);
  }
  reduced = es_reduce_remove_layer (job->model, layer, job->train->seed, &es);
  if (reduced == NULL)
    {
      es_fail (error, &es, _("Cannot remove the layer"));
      return NULL;
    }
  job_message (job, _("Removed %s"), removed_what);
  if (!job_evaluate (job, job->model, espalier_variant_get_quant (job->parent), &acc_parent, error)
      || !job_evaluate (job, reduced, NULL, &acc_cut, error))
    {
      es_model_free (reduced);
      return NULL;
    }
  a_parent = acc_text (acc_parent);
  a_cut = acc_text (acc_cut);
  job_message (job, _("Test accuracy right after the removal: %s (the parent: %s)"), a_cut,
               a_parent);

  if (o->epochs == 0)
    model = g_steal_pointer (&reduced);
  else
    {
      job_message (job, distill ? _("Recovering by distillation from the parent")
                                : _("Recovering by fine-tuning"));
      model = recover (job, reduced, distill, error);
      if (model == NULL)
        {
          es_model_free (reduced);
          return NULL;
        }
      if (distill)
        {
          EsModel *plain;

          /* What fine-tuning alone reaches from the same start: the measure of what
           * distillation is worth. */
          if (!job_evaluate (job, model, NULL, &acc_kd, error))
            goto fail_model;
          job_message (job, _("For comparison: the same fine-tuning without distillation"));
          job->comparison = TRUE;
          plain = recover (job, reduced, FALSE, error);
          job->comparison = FALSE;
          if (plain == NULL)
            goto fail_model;
          if (!job_evaluate (job, plain, NULL, &acc_ft, error))
            {
              es_model_free (plain);
              goto fail_model;
            }
          es_model_free (plain);
        }
    }
  g_clear_pointer (&reduced, es_model_free);

  ft = fine_tune_sentence (job, NULL);
  if (o->epochs == 0)
    desc = g_strdup_printf (_("Removed %s and the layers after it up to the next weight layer, "
                              "with the next layer's inputs repaired; not fine-tuned (test "
                              "accuracy of the parent %s, now %s)"),
                            removed_what, a_parent, a_cut);
  else if (!distill)
    desc = g_strdup_printf (_("Removed %s and the layers after it up to the next weight layer, "
                              "with the next layer's inputs repaired, then %s (test accuracy "
                              "of the parent %s, right after the removal %s)"),
                            removed_what, ft, a_parent, a_cut);
  else
    {
      a_ft = acc_text (acc_ft);
      a_kd = acc_text (acc_kd);
      if (isnan (acc_parent) || isnan (acc_ft) || isnan (acc_kd))
        verdict = g_strdup ("");
      else if (acc_parent - acc_ft <= 0)
        verdict = g_strdup_printf (_(": fine-tuning alone lost nothing against the parent, "
                                     "distillation changed accuracy by %+.2f points"),
                                   100 * (acc_kd - acc_ft));
      else
        verdict = g_strdup_printf (_(": distillation recovered %.0f%% of the %.2f points "
                                     "fine-tuning alone left lost"),
                                   100 * (acc_kd - acc_ft) / (acc_parent - acc_ft),
                                   100 * (acc_parent - acc_ft));
      desc = g_strdup_printf (_("Removed %s and the layers after it up to the next weight layer, "
                                "with the next layer's inputs repaired, then recovered by "
                                "knowledge distillation from the parent (temperature %g, soft "
                                "weight alpha %g), %s. Test accuracy: parent %s, right after "
                                "the removal %s, plain fine-tuning %s, distillation %s%s"),
                              removed_what, o->temperature, o->alpha, ft, a_parent, a_cut,
                              a_ft, a_kd, verdict);
      job_message (job, _("Test accuracy: parent %s, right after the removal %s, plain "
                          "fine-tuning %s, distillation %s%s"),
                   a_parent, a_cut, a_ft, a_kd, verdict);
    }
  name = o->epochs == 0 ? g_strdup_printf (_("reduced (-layer %d)"), layer + 1)
         : distill ? g_strdup_printf (_("reduced (-layer %d, distilled)"), layer + 1)
                   : g_strdup_printf (_("reduced (-layer %d, fine-tuned)"), layer + 1);
  return finish_variant (job, "reduced", name, desc, model, NULL, error);

fail_model:
  es_model_free (model);
  es_model_free (reduced);
  return NULL;
}

/* ------------------------------------------------------------------------------ */
/* the entry points */

static gboolean
check_options (const EspalierOptimizeOptions *o, const EspalierTrainOptions *train,
               GError **error)
{
#define BAD(...) G_STMT_START { g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID, __VA_ARGS__); return FALSE; } G_STMT_END
  if ((guint) o->kind >= G_N_ELEMENTS (kind_names))
    BAD (_("Unknown optimization %d"), (int) o->kind);
  if ((o->kind == ESPALIER_OPTIMIZE_PRUNE || o->kind == ESPALIER_OPTIMIZE_PRUNE_GRADUAL)
      && !(o->sparsity >= 0 && o->sparsity < 1))
    BAD (_("The sparsity must be at least 0 and below 1, not %g"), o->sparsity);
  if (o->kind == ESPALIER_OPTIMIZE_PRUNE_GRADUAL
      && !(o->initial_sparsity >= 0 && o->initial_sparsity <= o->sparsity))
    BAD (_("The initial sparsity must be between 0 and the final sparsity, not %g"),
         o->initial_sparsity);
  if (o->kind == ESPALIER_OPTIMIZE_QUANTIZE && o->quant_mode == ES_QUANT_INT8_STATIC
      && o->calib == ES_CALIB_PERCENTILE && !(o->percentile > 0 && o->percentile <= 100))
    BAD (_("The calibration percentile must be above 0 and at most 100, not %g"), o->percentile);
  if (o->kind == ESPALIER_OPTIMIZE_REDUCE && o->distill
      && (!(o->temperature > 0 && isfinite (o->temperature)) || !(o->alpha >= 0 && o->alpha <= 1)))
    BAD (_("Distillation needs a positive temperature and alpha between 0 and 1"));
  if (!(o->lr >= 0 && isfinite (o->lr)))
    BAD (_("The learning rate cannot be negative"));
  if (o->epochs > 0 && train->batch_size == 0)
    BAD (_("Fine-tuning needs a batch size of at least 1"));
#undef BAD
  return TRUE;
}

static EspalierVariant *
optimize_job (Job *job, GError **error)
{
  const EspalierOptimizeOptions *o = job->opts;
  g_autofree char *what = NULL;
  EspalierVariant *v = NULL;

  job->model = espalier_variant_get_model (job->parent);
  if (job->model == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The variant “%s” has no weights loaded"),
                   espalier_variant_get_name (job->parent));
      return NULL;
    }
  job->n_layers = es_model_n_layers (job->model);
  if (!check_options (o, job->train, error) || !check_model_fits (job->model, job->dataset, error))
    return NULL;
  job->split = espalier_split_new (job->dataset, job->train->val_fraction,
                                   job->train->test_fraction, job->train->seed, error);
  if (job->split == NULL)
    return NULL;
  if (job->split->test->len > 0)
    {
      job->eval_rows = (const guint32 *) job->split->test->data;
      job->n_eval = job->split->test->len;
    }
  else
    {
      job_message (job, _("There is no test split: accuracy is measured on the validation "
                          "split"));
      job->eval_rows = (const guint32 *) job->split->val->data;
      job->n_eval = job->split->val->len;
    }
  what = espalier_optimize_describe (o);
  job_message (job, "%s", what);

  switch (o->kind)
    {
    case ESPALIER_OPTIMIZE_PRUNE: v = run_prune (job, error); break;
    case ESPALIER_OPTIMIZE_PRUNE_GRADUAL: v = run_prune_gradual (job, error); break;
    case ESPALIER_OPTIMIZE_PRUNE_STRUCTURED: v = run_prune_structured (job, error); break;
    case ESPALIER_OPTIMIZE_PRUNE_2_4: v = run_prune_2_4 (job, error); break;
    case ESPALIER_OPTIMIZE_QUANTIZE: v = run_quantize (job, error); break;
    case ESPALIER_OPTIMIZE_QAT: v = run_qat (job, error); break;
    case ESPALIER_OPTIMIZE_REDUCE: v = run_reduce (job, error); break;
    }
  return v;
}

EspalierVariant *
espalier_optimize (EspalierDataset               *dataset,
                   EspalierVariant               *parent,
                   const EspalierTrainOptions    *train,
                   const EspalierOptimizeOptions *opts,
                   const char * const            *taken,
                   GCancellable                  *cancellable,
                   EspalierProgressFunc           func,
                   gpointer                       user_data,
                   GError                       **error)
{
  Job job = { 0 };
  EspalierVariant *v;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), NULL);
  g_return_val_if_fail (ESPALIER_IS_VARIANT (parent), NULL);
  g_return_val_if_fail (train != NULL, NULL);
  g_return_val_if_fail (opts != NULL, NULL);

  job.dataset = dataset;
  job.parent = parent;
  job.train = train;
  job.opts = opts;
  job.taken = taken;
  job.cancellable = cancellable;
  job.func = func;
  job.data = user_data;
  v = optimize_job (&job, error);
  g_clear_pointer (&job.split, espalier_split_free);
  return v;
}

/* What a worker needs, copied at the call. */
typedef struct {
  EspalierDataset         *dataset;
  EspalierVariant         *parent;
  EspalierTrainOptions     train;
  EspalierOptimizeOptions  opts;
  char                   **taken;
  EspalierSensitivityKind  sens_kind;
  double                  *levels;
  guint                    n_levels;
  EspalierProgressRelay   *relay;     /* NULL without a progress callback */
} AsyncJob;

static void
async_job_free (gpointer p)
{
  AsyncJob *aj = p;

  g_clear_object (&aj->dataset);
  g_clear_object (&aj->parent);
  espalier_optimize_options_clear (&aj->opts);
  g_strfreev (aj->taken);
  g_free (aj->levels);
  if (aj->relay != NULL)
    espalier_progress_relay_unref (aj->relay);
  g_free (aj);
}

static AsyncJob *
async_job_new (EspalierDataset            *dataset,
               EspalierVariant            *parent,
               const EspalierTrainOptions *train,
               EspalierProgressFunc        func,
               gpointer                    user_data,
               GDestroyNotify              user_data_free)
{
  AsyncJob *aj = g_new0 (AsyncJob, 1);

  aj->dataset = g_object_ref (dataset);
  aj->parent = g_object_ref (parent);
  aj->train = *train;
  if (func != NULL)
    aj->relay = espalier_progress_relay_new (func, user_data, user_data_free);
  else if (user_data_free != NULL)
    user_data_free (user_data);
  return aj;
}

static void
optimize_thread (GTask        *task,
                 gpointer      source,
                 gpointer      task_data,
                 GCancellable *cancellable)
{
  AsyncJob *aj = task_data;
  GError *error = NULL;
  EspalierVariant *v;

  v = espalier_optimize (aj->dataset, aj->parent, &aj->train, &aj->opts,
                         (const char * const *) aj->taken, cancellable,
                         aj->relay ? espalier_progress_relay_post : NULL, aj->relay, &error);
  if (v != NULL)
    g_task_return_pointer (task, v, g_object_unref);
  else
    g_task_return_error (task, error);
}

void
espalier_optimize_async (EspalierDataset               *dataset,
                         EspalierVariant               *parent,
                         const EspalierTrainOptions    *train,
                         const EspalierOptimizeOptions *opts,
                         const char * const            *taken,
                         GCancellable                  *cancellable,
                         EspalierProgressFunc           func,
                         gpointer                       user_data,
                         GDestroyNotify                 user_data_free,
                         GAsyncReadyCallback            callback,
                         gpointer                       callback_data)
{
  g_autoptr(GTask) task = NULL;
  AsyncJob *aj;
  EsModel *model;

  g_return_if_fail (ESPALIER_IS_DATASET (dataset));
  g_return_if_fail (ESPALIER_IS_VARIANT (parent));
  g_return_if_fail (train != NULL && opts != NULL);

  aj = async_job_new (dataset, parent, train, func, user_data, user_data_free);
  aj->opts = *opts;
  model = espalier_variant_get_model (parent);
  aj->opts.layers = aj->opts.keep_float = NULL;
  if (model != NULL)
    {
      gsize n = (gsize) es_model_n_layers (model) * sizeof (gboolean);

      if (opts->layers != NULL)
        aj->opts.layers = g_memdup2 (opts->layers, n);
      if (opts->keep_float != NULL)
        aj->opts.keep_float = g_memdup2 (opts->keep_float, n);
    }
  aj->taken = g_strdupv ((char **) taken);
  task = g_task_new (NULL, cancellable, callback, callback_data);
  g_task_set_source_tag (task, espalier_optimize_async);
  g_task_set_task_data (task, aj, async_job_free);
  g_task_run_in_thread (task, optimize_thread);
}

EspalierVariant *
espalier_optimize_finish (GAsyncResult  *result,
                          GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == espalier_optimize_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ------------------------------------------------------------------------------ */
/* sensitivity */

static void
sens_step (Job *job, guint step, guint steps)
{
  EspalierProgress p = { .kind = ESPALIER_PROGRESS_STEP, .step = step, .steps = steps,
                         .epoch = 1, .epochs = 1 };

  if (job->func != NULL)
    job->func (&p, job->data);
}

GArray *
espalier_sensitivity_scan (EspalierDataset            *dataset,
                           EspalierVariant            *parent,
                           const EspalierTrainOptions *train,
                           EspalierSensitivityKind     kind,
                           const double               *levels,
                           guint                       n_levels,
                           GCancellable               *cancellable,
                           EspalierProgressFunc        func,
                           gpointer                    user_data,
                           GError                    **error)
{
  EspalierOptimizeOptions opts;
  Job job = { 0 };
  g_autoptr(GArray) rows = g_array_new (FALSE, FALSE, sizeof (EspalierSensitivityRow));
  g_autoptr(GArray) wl = NULL;
  EsCalib *calib = NULL;
  double baseline;
  guint steps, step = 0;
  GArray *result = NULL;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), NULL);
  g_return_val_if_fail (ESPALIER_IS_VARIANT (parent), NULL);
  g_return_val_if_fail (train != NULL, NULL);
  g_return_val_if_fail (levels != NULL || n_levels == 0, NULL);

  espalier_optimize_options_init (&opts);
  job.dataset = dataset;
  job.parent = parent;
  job.train = train;
  job.opts = &opts;
  job.cancellable = cancellable;
  job.func = func;
  job.data = user_data;
  job.model = espalier_variant_get_model (parent);
  if (job.model == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The variant “%s” has no weights loaded"), espalier_variant_get_name (parent));
      return NULL;
    }
  job.n_layers = es_model_n_layers (job.model);
  if (kind == ESPALIER_SENSITIVITY_PRUNE)
    {
      if (n_levels == 0)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("A pruning sensitivity scan needs at least one sparsity"));
          return NULL;
        }
      for (guint k = 0; k < n_levels; k++)
        if (!(levels[k] >= 0 && levels[k] < 1))
          {
            g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                         _("The sparsity must be at least 0 and below 1, not %g"), levels[k]);
            return NULL;
          }
    }
  if (!check_model_fits (job.model, dataset, error))
    return NULL;
  job.split = espalier_split_new (dataset, train->val_fraction, train->test_fraction,
                                  train->seed, error);
  if (job.split == NULL)
    return NULL;
  if (job.split->val->len > 0)
    {
      job.eval_rows = (const guint32 *) job.split->val->data;
      job.n_eval = job.split->val->len;
    }
  else
    {
      job.eval_rows = (const guint32 *) job.split->test->data;
      job.n_eval = job.split->test->len;
    }

  wl = weight_layers (job.model);
  steps = 1 + wl->len * (kind == ESPALIER_SENSITIVITY_PRUNE ? n_levels : 1);
  job_message (&job, kind == ESPALIER_SENSITIVITY_PRUNE
                       ? _("Sensitivity to pruning: each weight layer alone, no fine-tuning")
                       : _("Sensitivity to int8: each weight layer alone, the others in float"));
  if (!job_evaluate (&job, job.model, NULL, &baseline, error))
    goto out;
  sens_step (&job, ++step, steps);
  if (kind == ESPALIER_SENSITIVITY_QUANTIZE)
    {
      /* One calibration serves every layer: it records the inputs of all of them. */
      calib = calib_observe (&job, job.model, ES_CALIB_MINMAX, error);
      if (calib == NULL)
        goto out;
    }

  for (guint k = 0; k < wl->len; k++)
    {
      int layer = g_array_index (wl, int, k);
      EsError es = { 0 };

      if (kind == ESPALIER_SENSITIVITY_PRUNE)
        {
          g_autofree bool *sel = g_new0 (bool, job.n_layers);

          sel[layer] = true;
          for (guint li = 0; li < n_levels; li++)
            {
              EsModel *m = model_copy (job.model);
              if (m == NULL)
                {
                  copy_failed (job.model, error);
                  goto out;
                }
              EsMask *mask = es_mask_from_zeros (m);
              EspalierSensitivityRow row = { .layer = (guint) layer, .level = levels[li],
                                             .baseline = baseline };
              gboolean ok = es_prune_magnitude (m, mask, (float) levels[li], ES_PRUNE_PER_LAYER,
                                                sel, &es);

              if (!ok)
                es_fail (error, &es, _("Pruning failed"));
              else
                ok = job_evaluate (&job, m, NULL, &row.accuracy, error);
              es_mask_free (mask);
              es_model_free (m);
              if (!ok)
                goto out;
              g_array_append_val (rows, row);
              sens_step (&job, ++step, steps);
            }
        }
      else
        {
          g_autofree bool *keep = g_new (bool, job.n_layers);
          EspalierSensitivityRow row = { .layer = (guint) layer, .level = -1,
                                         .baseline = baseline };
          EsQuant *q;
          gboolean ok;

          for (int i = 0; i < job.n_layers; i++)
            keep[i] = i != layer;
          q = es_quant_new (job.model, ES_QUANT_INT8_STATIC, keep, FALSE, &es);
          if (q == NULL)
            {
              es_fail (error, &es, _("Quantization failed"));
              goto out;
            }
          ok = calib_apply (calib, q, error)
               && job_evaluate (&job, job.model, q, &row.accuracy, error);
          es_quant_free (q);
          if (!ok)
            goto out;
          g_array_append_val (rows, row);
          sens_step (&job, ++step, steps);
        }
    }
  result = g_steal_pointer (&rows);

out:
  if (calib != NULL)
    es_calib_free (calib);
  g_clear_pointer (&job.split, espalier_split_free);
  espalier_optimize_options_clear (&opts);
  return result;
}

static void
sensitivity_thread (GTask        *task,
                    gpointer      source,
                    gpointer      task_data,
                    GCancellable *cancellable)
{
  AsyncJob *aj = task_data;
  GError *error = NULL;
  GArray *rows;

  rows = espalier_sensitivity_scan (aj->dataset, aj->parent, &aj->train, aj->sens_kind,
                                    aj->levels, aj->n_levels, cancellable,
                                    aj->relay ? espalier_progress_relay_post : NULL, aj->relay,
                                    &error);
  if (rows != NULL)
    g_task_return_pointer (task, rows, (GDestroyNotify) g_array_unref);
  else
    g_task_return_error (task, error);
}

void
espalier_sensitivity_scan_async (EspalierDataset            *dataset,
                                 EspalierVariant            *parent,
                                 const EspalierTrainOptions *train,
                                 EspalierSensitivityKind     kind,
                                 const double               *levels,
                                 guint                       n_levels,
                                 GCancellable               *cancellable,
                                 EspalierProgressFunc        func,
                                 gpointer                    user_data,
                                 GDestroyNotify              user_data_free,
                                 GAsyncReadyCallback         callback,
                                 gpointer                    callback_data)
{
  g_autoptr(GTask) task = NULL;
  AsyncJob *aj;

  g_return_if_fail (ESPALIER_IS_DATASET (dataset));
  g_return_if_fail (ESPALIER_IS_VARIANT (parent));
  g_return_if_fail (train != NULL);
  g_return_if_fail (levels != NULL || n_levels == 0);

  aj = async_job_new (dataset, parent, train, func, user_data, user_data_free);
  espalier_optimize_options_init (&aj->opts);
  aj->sens_kind = kind;
  aj->levels = n_levels > 0 ? g_memdup2 (levels, n_levels * sizeof (double)) : NULL;
  aj->n_levels = n_levels;
  task = g_task_new (NULL, cancellable, callback, callback_data);
  g_task_set_source_tag (task, espalier_sensitivity_scan_async);
  g_task_set_task_data (task, aj, async_job_free);
  g_task_run_in_thread (task, sensitivity_thread);
}

GArray *
espalier_sensitivity_scan_finish (GAsyncResult  *result,
                                  GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == espalier_sensitivity_scan_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ------------------------------------------------------------------------------ */
/* the comparison table */

/* The columns, in order; CSV and JSON use the same names. */
static const char *const table_columns[] = {
  "name", "kind", "parent", "format", "exec", "accuracy", "latency_us", "latency_p95_us",
  "rows_per_second", "dense_latency_us", "sparse_latency_us", "size_bytes", "n_params",
  "nonzeros", "sparsity", "flops", "description",
};

static void
csv_string (GString *s, const char *v)
{
  if (v == NULL)
    return;
  if (strpbrk (v, ",\"\r\n") == NULL)
    {
      g_string_append (s, v);
      return;
    }
  g_string_append_c (s, '"');
  for (const char *p = v; *p != '\0'; p++)
    {
      if (*p == '"')
        g_string_append_c (s, '"');
      g_string_append_c (s, *p);
    }
  g_string_append_c (s, '"');
}

/* A number, or an empty cell when it is not measured. */
static void
csv_double (GString *s, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (isfinite (v))
    g_string_append (s, espalier_format_double (buf, v));
}

static gboolean
write_text (const char *path, const char *text, GError **error)
{
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  gboolean ok;

  ok = espalier_atomic_open (&af, path, error)
       && espalier_atomic_write (&af, text, strlen (text), NULL, error)
       && espalier_atomic_sync (&af, error)
       && espalier_atomic_commit (&af, error);
  espalier_atomic_clear (&af);
  if (ok)
    espalier_sync_directory (path);
  return ok;
}

gboolean
espalier_variants_write_table (GPtrArray   *variants,
                               const char  *csv_path,
                               const char  *json_path,
                               GError     **error)
{
  g_return_val_if_fail (variants != NULL, FALSE);

  if (csv_path != NULL)
    {
      g_autoptr(GString) s = g_string_new (NULL);

      for (guint c = 0; c < G_N_ELEMENTS (table_columns); c++)
        g_string_append_printf (s, "%s%s", c ? "," : "", table_columns[c]);
      g_string_append_c (s, '\n');
      for (guint i = 0; i < variants->len; i++)
        {
          EspalierVariant *v = g_ptr_array_index (variants, i);

          csv_string (s, espalier_variant_get_name (v));
          g_string_append_c (s, ',');
          csv_string (s, espalier_variant_get_kind (v));
          g_string_append_c (s, ',');
          csv_string (s, espalier_variant_get_parent (v));
          g_string_append_c (s, ',');
          csv_string (s, espalier_variant_get_format (v));
          g_string_append_c (s, ',');
          csv_string (s, espalier_variant_get_exec (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_accuracy (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_latency_us (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_latency_p95_us (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_rows_per_second (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_dense_latency_us (v));
          g_string_append_c (s, ',');
          csv_double (s, espalier_variant_get_sparse_latency_us (v));
          g_string_append_printf (s, ",%" G_GUINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",",
                                  espalier_variant_get_size_bytes (v),
                                  espalier_variant_get_n_params (v),
                                  espalier_variant_get_nonzeros (v));
          csv_double (s, espalier_variant_get_sparsity (v));
          g_string_append_printf (s, ",%" G_GINT64_FORMAT ",", espalier_variant_get_flops (v));
          csv_string (s, espalier_variant_get_description (v));
          g_string_append_c (s, '\n');
        }
      if (!write_text (csv_path, s->str, error))
        return FALSE;
    }
  if (json_path != NULL)
    {
      g_autoptr(JsonBuilder) b = json_builder_new ();
      g_autoptr(JsonNode) root = NULL;
      g_autofree char *text = NULL;

      json_builder_begin_array (b);
      for (guint i = 0; i < variants->len; i++)
        {
          EspalierVariant *v = g_ptr_array_index (variants, i);

          json_builder_begin_object (b);
          espalier_json_add_string (b, "name", espalier_variant_get_name (v));
          espalier_json_add_string (b, "kind", espalier_variant_get_kind (v));
          espalier_json_add_string (b, "parent", espalier_variant_get_parent (v));
          espalier_json_add_string (b, "format", espalier_variant_get_format (v));
          espalier_json_add_string (b, "exec", espalier_variant_get_exec (v));
          espalier_json_add_double (b, "accuracy", espalier_variant_get_accuracy (v));
          espalier_json_add_double (b, "latency_us", espalier_variant_get_latency_us (v));
          espalier_json_add_double (b, "latency_p95_us", espalier_variant_get_latency_p95_us (v));
          espalier_json_add_double (b, "rows_per_second", espalier_variant_get_rows_per_second (v));
          espalier_json_add_double (b, "dense_latency_us", espalier_variant_get_dense_latency_us (v));
          espalier_json_add_double (b, "sparse_latency_us", espalier_variant_get_sparse_latency_us (v));
          espalier_json_add_u64 (b, "size_bytes", espalier_variant_get_size_bytes (v));
          espalier_json_add_int (b, "n_params", espalier_variant_get_n_params (v));
          espalier_json_add_int (b, "nonzeros", espalier_variant_get_nonzeros (v));
          espalier_json_add_double (b, "sparsity", espalier_variant_get_sparsity (v));
          espalier_json_add_int (b, "flops", espalier_variant_get_flops (v));
          espalier_json_add_string (b, "description", espalier_variant_get_description (v));
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      root = json_builder_get_root (b);
      text = espalier_json_to_text (root, TRUE);
      if (!write_text (json_path, text, error))
        return FALSE;
    }
  return TRUE;
}
