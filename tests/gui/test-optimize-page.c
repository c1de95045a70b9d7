/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-optimize-page.c: the optimization controls of the Optimize page in a real
 * window, on a spiral set with the playground model (Dense 8, Tanh, Dense 8, Tanh,
 * Dense 3, Softmax) trained for a few epochs into a measured baseline: the technique
 * shows the rows it uses and hides the others, moot rows turn insensitive, and the rows
 * read back into the options the core gets; a one-shot prune with fine-tuning adds a
 * variant to the table and the chart, draws its live curves, selects it so the sparsity
 * strip shows its pruned fractions (checked against the zeros of its weights), and
 * lands in the comparison against its parent; static int8 gives an int8 variant; a
 * long run stops without adding anything; sensitivity scans fill their table and
 * chart. Screenshots of the whole page go to the screenshot directory. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "espalier-chart-layers.h"
#include "espalier-generate.h"
#include "espalier-optimize-page.h"
#include "espalier-optimize-settings.h"
#include "espalier-sensitivity-view.h"
#include "espalier-sparsity-strip.h"
#include "espalier-variant-compare.h"
#include "gui-test-util.h"

#define SPIRAL     "spiral:n=300,arms=3,noise=0.2,seed=1"
#define SPIRAL_BIG "spiral:n=200000,arms=3,noise=0.2,seed=1"

typedef struct {
  EspalierProject *project;
  GtkWidget       *page;
  GtkWindow       *window;
} Fixture;

/* The project, with a baseline trained for a few epochs and measured as the Train page
 * would: test accuracy on the test split, latency on the CPU. */
static EspalierProject *
trained_project (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (SPIRAL, &error);
  EspalierProject *project = espalier_project_new ();
  g_autoptr(EspalierTrainer) trainer = NULL;
  g_autoptr(EspalierVariant) baseline = NULL;
  EspalierTrainOptions opts;
  EspalierMetrics metrics = { 0 };
  EspalierLatency latency;
  const EspalierSplit *split;
  EsModel *model;

  g_assert_no_error (error);
  espalier_project_set_dataset (project, ds, NULL);
  espalier_train_options_init (&opts);
  espalier_model_doc_apply_template (espalier_project_get_model_doc (project), "playground",
                                     &opts, &error);
  g_assert_no_error (error);
  /* The playground trains on every row; hold some out for validation and test. */
  opts.val_fraction = 0.2;
  opts.test_fraction = 0.2;
  opts.epochs = 20;
  espalier_project_set_train_options (project, &opts);

  model = espalier_model_doc_build (espalier_project_get_model_doc (project), opts.seed, &error);
  g_assert_no_error (error);
  trainer = espalier_trainer_new (ds, model, &opts);
  g_assert_true (espalier_trainer_run (trainer, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  split = espalier_trainer_get_split (trainer);
  g_assert_true (espalier_evaluate (model, ds, (const guint32 *) split->test->data, split->test->len,
                                    opts.engine.loss, 1, &metrics, &error));
  g_assert_no_error (error);
  g_assert_true (espalier_measure_variant (model, NULL, 1, 0, 0.1, &latency, &error));
  g_assert_no_error (error);

  baseline = espalier_variant_new ("baseline", "baseline", model);   /* takes the model */
  espalier_variant_set_accuracy (baseline, metrics.accuracy);
  espalier_variant_set_latency (baseline, &latency);
  espalier_metrics_clear (&metrics);
  espalier_project_add_variant (project, baseline);
  return project;
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  f->project = trained_project ();
  f->page = g_object_ref_sink (espalier_optimize_page_new ());
  espalier_optimize_page_set_project (ESPALIER_OPTIMIZE_PAGE (f->page), f->project);
  f->window = gui_test_window_new (f->page, 1400, 1000);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_tear_down_page (f->window, f->page, f->project, NULL);
}

static gpointer
page_child (Fixture    *f,
            const char *name)
{
  GObject *child = gtk_widget_get_template_child (f->page, ESPALIER_TYPE_OPTIMIZE_PAGE, name);

  g_assert_nonnull (child);
  return child;
}

static gpointer
settings_child (Fixture    *f,
                const char *name)
{
  GtkWidget *settings = page_child (f, "settings");
  GObject *child = gtk_widget_get_template_child (settings, ESPALIER_TYPE_OPTIMIZE_SETTINGS, name);

  g_assert_nonnull (child);
  return child;
}

static gboolean
row_shown (Fixture    *f,
           const char *name)
{
  return gtk_widget_get_visible (settings_child (f, name));
}

static gboolean
row_sensitive (Fixture    *f,
               const char *name)
{
  return gtk_widget_get_sensitive (settings_child (f, name));
}

static void
set_technique (Fixture           *f,
               EspalierTechnique  technique)
{
  espalier_optimize_settings_set_technique (page_child (f, "settings"), technique);
  gui_test_iterate (10);
}

static void
set_spin (Fixture    *f,
          const char *name,
          double      value)
{
  gtk_spin_button_set_value (settings_child (f, name), value);
}

typedef struct {
  GtkWidget  *widget;
  const char *name;
  char       *path;
  gboolean    done;
} Shot;

/* Right after a frame is painted every allocation is valid; between frames, progress
 * that changed a label leaves the widget to be laid out again and its paintable empty. */
static void
on_after_paint (GdkFrameClock *clock,
                Shot          *shot)
{
  if (shot->done)
    return;
  shot->path = gui_test_screenshot (shot->widget, shot->name);
  shot->done = TRUE;
}

static gboolean
shot_done (gpointer data)
{
  return ((Shot *) data)->done;
}

/* The whole page, scrolled content and all, as one image, also while a job updates it. */
static void
screenshot_page (Fixture    *f,
                 const char *name)
{
  GtkWidget *clamp = gtk_widget_get_ancestor (page_child (f, "chart"), ADW_TYPE_CLAMP);
  GdkFrameClock *clock;
  Shot shot = { clamp, name, NULL, FALSE };
  gulong id;

  g_assert_nonnull (clamp);
  gui_test_iterate (350);   /* past the stacks' crossfade */
  clock = gtk_widget_get_frame_clock (clamp);
  g_assert_nonnull (clock);
  id = g_signal_connect (clock, "after-paint", G_CALLBACK (on_after_paint), &shot);
  gtk_widget_queue_draw (clamp);
  g_assert_true (gui_test_wait_until (shot_done, &shot, 10000));
  g_signal_handler_disconnect (clock, id);
  g_assert_nonnull (shot.path);
  g_test_message ("screenshot: %s", shot.path);
  g_free (shot.path);
}

static guint
n_variants (Fixture *f)
{
  return g_list_model_get_n_items (espalier_project_get_variants (f->project));
}

static guint
table_rows (Fixture *f)
{
  GtkColumnView *view = page_child (f, "variants_view");

  return g_list_model_get_n_items (G_LIST_MODEL (gtk_column_view_get_model (view)));
}

/* Points on the accuracy-versus-latency chart (its scatter layers). */
static guint
chart_points (Fixture *f)
{
  EspalierChart *chart = page_child (f, "chart");
  guint n = 0;

  for (guint i = 0; i < espalier_chart_get_n_layers (chart); i++)
    {
      EspalierChartLayer *layer = espalier_chart_get_layer (chart, i);

      if (ESPALIER_IS_SCATTER_LAYER (layer))
        n += espalier_series_get_n_points (espalier_scatter_layer_get_series (ESPALIER_SCATTER_LAYER (layer)));
    }
  return n;
}

/* The series of the line titled `title` on chart, or NULL. */
static EspalierSeries *
line_series (EspalierChart *chart,
             const char    *title)
{
  for (guint i = 0; i < espalier_chart_get_n_layers (chart); i++)
    {
      EspalierChartLayer *layer = espalier_chart_get_layer (chart, i);

      if (ESPALIER_IS_LINE_LAYER (layer) && g_strcmp0 (espalier_chart_layer_get_title (layer), title) == 0)
        return espalier_line_layer_get_series (ESPALIER_LINE_LAYER (layer));
    }
  return NULL;
}

static EspalierVariant *
variant_at (Fixture *f,
            guint    i)
{
  g_autoptr(EspalierVariant) v = g_list_model_get_item (espalier_project_get_variants (f->project), i);

  return v;   /* the project holds it */
}

typedef struct {
  Fixture *f;
  guint    n;
} CountWait;

static gboolean
has_n_variants (gpointer data)
{
  CountWait *w = data;

  return n_variants (w->f) >= w->n;
}

static gboolean
page_idle (gpointer data)
{
  Fixture *f = data;

  return gtk_widget_is_sensitive (page_child (f, "apply_button"))
         && !gtk_widget_get_visible (page_child (f, "stop_button"))
         && !gtk_widget_get_visible (page_child (f, "scan_stop_button"));
}

/* Run an optimization with the settings as they are and wait for its variant. */
static EspalierVariant *
optimize (Fixture *f)
{
  CountWait w = { f, n_variants (f) + 1 };

  g_assert_true (page_idle (f));
  gtk_widget_activate_action (f->page, "optimize.apply", NULL);
  g_assert_true (gtk_widget_get_visible (page_child (f, "stop_button")));
  g_assert_true (gui_test_wait_until (has_n_variants, &w, 120000));
  g_assert_true (gui_test_wait_until (page_idle, f, 10000));
  gui_test_iterate (20);
  return variant_at (f, w.n - 1);
}

/* The zero fraction of layer's weight tensor, counted here. */
static double
count_zeros (EsModel *model,
             int      layer)
{
  const EsLayerInfo *info = es_model_layer (model, layer);
  const EsTensorInfo *t = es_model_tensor (model, info->first_tensor);
  const float *w = es_model_tensor_data (model, info->first_tensor);
  gint64 zeros = 0;

  for (gint64 i = 0; i < t->size; i++)
    zeros += w[i] == 0.0f;
  return (double) zeros / (double) t->size;
}

/* The technique shows its rows; moot ones turn insensitive; the options follow. */
static void
test_controls (Fixture       *f,
               gconstpointer  data)
{
  EspalierOptimizeSettings *settings = page_child (f, "settings");
  AdwComboRow *parent_row = page_child (f, "parent_row");
  GtkStringList *remove_list = settings_child (f, "remove_list");
  const char *summary;
  EspalierOptimizeOptions opts;

  /* The baseline is the default parent; the summary says what will be done to it. */
  g_assert_true (adw_combo_row_get_selected_item (parent_row) == variant_at (f, 0));
  summary = gtk_label_get_label (page_child (f, "summary_label"));
  g_assert_nonnull (strstr (summary, "baseline"));
  g_assert_true (gtk_widget_get_focusable (page_child (f, "apply_button")));

  /* The rows start at the core's defaults, so the page and the CLI agree. */
  {
    EspalierOptimizeOptions defaults;
    g_autofree char *what = NULL;

    espalier_optimize_options_init (&defaults);
    what = espalier_optimize_describe (&defaults);
    g_assert_nonnull (strstr (summary, what));
    espalier_optimize_settings_get_options (settings, &opts);
    g_assert_cmpint (opts.kind, ==, defaults.kind);
    g_assert_cmpfloat_with_epsilon (opts.sparsity, defaults.sparsity, 1e-9);
    g_assert_cmpint (opts.scope, ==, defaults.scope);
    g_assert_cmpfloat_with_epsilon (opts.keep_fraction, defaults.keep_fraction, 1e-9);
    g_assert_cmpint (opts.calib, ==, defaults.calib);
    g_assert_cmpfloat_with_epsilon (opts.percentile, defaults.percentile, 1e-6);
    g_assert_cmpuint (opts.calib_batches, ==, defaults.calib_batches);
    g_assert_cmpint (opts.distill, ==, defaults.distill);
    g_assert_cmpfloat_with_epsilon (opts.temperature, defaults.temperature, 1e-9);
    g_assert_cmpfloat_with_epsilon (opts.alpha, defaults.alpha, 1e-9);
    g_assert_cmpuint (opts.epochs, ==, defaults.epochs);
    g_assert_cmpfloat (opts.lr, ==, defaults.lr);
    espalier_optimize_options_clear (&opts);
    espalier_optimize_options_clear (&defaults);
  }

  /* Magnitude pruning: sparsity and scope; nothing of quantization or reduction. */
  g_assert_cmpuint (espalier_optimize_settings_get_technique (settings), ==,
                    ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE);
  g_assert_true (row_shown (f, "sparsity_row"));
  g_assert_true (row_shown (f, "scope_row"));
  g_assert_false (row_shown (f, "keep_row"));
  g_assert_false (row_shown (f, "calib_row"));
  g_assert_false (row_shown (f, "remove_row"));
  g_assert_true (row_shown (f, "tuning_group"));
  g_assert_false (row_shown (f, "distill_row"));
  set_spin (f, "sparsity_spin", 60);
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.kind, ==, ESPALIER_OPTIMIZE_PRUNE);
  g_assert_cmpfloat_with_epsilon (opts.sparsity, 0.6, 1e-9);
  espalier_optimize_options_clear (&opts);
  g_assert_nonnull (strstr (gtk_label_get_label (page_child (f, "summary_label")), "60"));
  screenshot_page (f, "optimize-controls-prune");

  /* Fine-tuning off: the learning rate is moot. */
  g_assert_true (row_sensitive (f, "lr_row"));
  set_spin (f, "epochs_spin", 0);
  g_assert_false (row_sensitive (f, "lr_row"));
  set_spin (f, "epochs_spin", 2);
  g_assert_true (row_sensitive (f, "lr_row"));

  /* Structured: units kept and the norm instead. */
  set_technique (f, ESPALIER_TECHNIQUE_PRUNE_STRUCTURED);
  g_assert_false (row_shown (f, "sparsity_row"));
  g_assert_true (row_shown (f, "keep_row"));
  g_assert_true (row_shown (f, "norm_row"));
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.kind, ==, ESPALIER_OPTIMIZE_PRUNE_STRUCTURED);
  g_assert_cmpfloat_with_epsilon (opts.keep_fraction, 0.5, 1e-9);
  espalier_optimize_options_clear (&opts);

  /* Static int8: calibration; the percentile only with percentile calibration; one
   * float choice per weight layer; no fine-tuning. */
  set_technique (f, ESPALIER_TECHNIQUE_INT8_STATIC);
  g_assert_true (row_shown (f, "calib_row"));
  g_assert_true (row_shown (f, "calib_batches_row"));
  g_assert_true (row_shown (f, "reduce_range_row"));
  g_assert_true (row_shown (f, "keep_float_row"));
  g_assert_false (row_shown (f, "keep_row"));
  g_assert_false (row_shown (f, "tuning_group"));
  g_assert_false (row_sensitive (f, "percentile_row"));
  adw_combo_row_set_selected (settings_child (f, "calib_row"), 1);
  g_assert_true (row_sensitive (f, "percentile_row"));
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.kind, ==, ESPALIER_OPTIMIZE_QUANTIZE);
  g_assert_cmpint (opts.quant_mode, ==, ES_QUANT_INT8_STATIC);
  g_assert_cmpint (opts.calib, ==, ES_CALIB_PERCENTILE);
  g_assert_cmpuint (opts.epochs, ==, 0);
  g_assert_null (opts.keep_float);
  espalier_optimize_options_clear (&opts);
  screenshot_page (f, "optimize-controls-int8");

  /* Dynamic int8: no calibration; fp16: not even the range. */
  set_technique (f, ESPALIER_TECHNIQUE_INT8_DYNAMIC);
  g_assert_false (row_shown (f, "calib_row"));
  g_assert_true (row_shown (f, "reduce_range_row"));
  set_technique (f, ESPALIER_TECHNIQUE_FP16);
  g_assert_false (row_shown (f, "reduce_range_row"));
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.quant_mode, ==, ES_QUANT_FP16);
  espalier_optimize_options_clear (&opts);

  /* QAT fine-tunes and calibrates. */
  set_technique (f, ESPALIER_TECHNIQUE_QAT);
  g_assert_true (row_shown (f, "calib_row"));
  g_assert_true (row_shown (f, "tuning_group"));

  /* Reduce: the hidden weight layers of the parent (layers 1 and 3 of the playground),
   * the last one by default; distillation with its T and alpha, moot without epochs. */
  set_technique (f, ESPALIER_TECHNIQUE_REDUCE);
  g_assert_true (row_shown (f, "remove_row"));
  g_assert_true (row_shown (f, "distill_row"));
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (remove_list)), ==, 2);
  g_assert_cmpstr (gtk_string_list_get_string (remove_list, 0), ==, "Layer 1: Dense 8");
  g_assert_cmpstr (gtk_string_list_get_string (remove_list, 1), ==, "Layer 3: Dense 8");
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.kind, ==, ESPALIER_OPTIMIZE_REDUCE);
  g_assert_cmpint (opts.remove_layer, ==, 2);
  g_assert_true (opts.distill);
  espalier_optimize_options_clear (&opts);
  adw_combo_row_set_selected (settings_child (f, "remove_row"), 0);
  espalier_optimize_settings_get_options (settings, &opts);
  g_assert_cmpint (opts.remove_layer, ==, 0);
  espalier_optimize_options_clear (&opts);
  set_spin (f, "epochs_spin", 0);
  g_assert_false (row_sensitive (f, "distill_row"));
  set_spin (f, "epochs_spin", 2);
  screenshot_page (f, "optimize-controls-reduce");
}

/* A quick prune: a variant in the table, on the chart, in the strip and the comparison. */
static void
test_prune (Fixture       *f,
            gconstpointer  data)
{
  EspalierSparsityStrip *strip = page_child (f, "strip");
  EspalierVariantCompare *compare = page_child (f, "compare");
  EspalierSeries *val;
  EspalierVariant *pruned;
  EsModel *model;
  g_autofree char *tip = NULL;
  GtkGrid *grid;
  guint epochs = 3;

  /* The baseline is selected: its layers are all dense. */
  g_assert_true (espalier_sparsity_strip_get_variant (strip) == variant_at (f, 0));
  g_assert_cmpuint (espalier_sparsity_strip_get_n_cells (strip), ==, 3);
  g_assert_cmpfloat (espalier_sparsity_strip_get_cell_sparsity (strip, 0), ==, 0.0);

  set_spin (f, "sparsity_spin", 50);
  adw_combo_row_set_selected (settings_child (f, "scope_row"), 0);   /* per layer */
  set_spin (f, "epochs_spin", epochs);
  pruned = optimize (f);

  g_assert_cmpstr (espalier_variant_get_kind (pruned), ==, "pruned");
  g_assert_cmpstr (espalier_variant_get_parent (pruned), ==, "baseline");
  g_assert_true (isfinite (espalier_variant_get_accuracy (pruned)));
  g_assert_true (isfinite (espalier_variant_get_latency_us (pruned)));
  g_assert_cmpuint (table_rows (f), ==, 2);
  g_assert_cmpuint (chart_points (f), ==, 2);

  /* The live curves: one validation point per epoch of fine-tuning. */
  val = line_series (page_child (f, "tuning_accuracy_chart"), "Validation");
  g_assert_nonnull (val);
  g_assert_cmpuint (espalier_series_get_n_points (val), ==, epochs);
  g_assert_cmpuint (espalier_series_get_n_points (line_series (page_child (f, "tuning_loss_chart"),
                                                               "Training (running)")), >, 0);

  /* The new variant is selected: the strip shows each weight layer's own zeros. */
  model = espalier_variant_get_model (pruned);
  g_assert_nonnull (model);
  g_assert_true (espalier_sparsity_strip_get_variant (strip) == pruned);
  g_assert_cmpuint (espalier_sparsity_strip_get_n_cells (strip), ==, 3);
  for (guint i = 0; i < 3; i++)
    {
      guint layer = espalier_sparsity_strip_get_cell_layer (strip, i);
      double zeros = count_zeros (model, (int) layer);

      g_assert_cmpuint (layer, ==, 2 * i);   /* the Dense layers of the playground */
      g_assert_cmpfloat_with_epsilon (espalier_sparsity_strip_get_cell_sparsity (strip, i), zeros, 1e-9);
      /* Per-layer magnitude pruning reaches the target in each layer, to one weight. */
      g_assert_cmpfloat (fabs (zeros - 0.5), <=,
                         1.0 / es_model_tensor (model, es_model_layer (model, (int) layer)->first_tensor)->size + 1e-9);
    }
  tip = espalier_sparsity_strip_describe_at (strip, 5, 5);
  g_assert_nonnull (tip);
  g_assert_nonnull (strstr (tip, "Layer 1: Dense 8"));
  g_assert_nonnull (strstr (tip, "are zero"));

  /* The comparison: the parent against the new variant, with the ratios. */
  g_assert_true (espalier_variant_compare_get_a (compare) == variant_at (f, 0));
  g_assert_true (espalier_variant_compare_get_b (compare) == pruned);
  grid = GTK_GRID (gtk_widget_get_template_child (GTK_WIDGET (compare), ESPALIER_TYPE_VARIANT_COMPARE, "grid"));
  g_assert_cmpstr (gtk_label_get_label (GTK_LABEL (gtk_grid_get_child_at (grid, 1, 0))), ==, "baseline");
  g_assert_cmpstr (gtk_label_get_label (GTK_LABEL (gtk_grid_get_child_at (grid, 2, 0))), ==,
                   espalier_variant_get_name (pruned));
  /* Row 1 accuracy (points), row 2 latency (× faster or slower, or same). */
  g_assert_nonnull (strstr (gtk_label_get_label (GTK_LABEL (gtk_grid_get_child_at (grid, 3, 1))), "points"));
  {
    const char *speed = gtk_label_get_label (GTK_LABEL (gtk_grid_get_child_at (grid, 3, 2)));

    g_assert_true (strstr (speed, "×") != NULL || g_str_equal (speed, "same"));
  }
  screenshot_page (f, "optimize-pruned");
}

/* Static int8: an int8 variant, shown as such in the strip. */
static void
test_quantize (Fixture       *f,
               gconstpointer  data)
{
  EspalierSparsityStrip *strip = page_child (f, "strip");
  EspalierVariant *q;

  set_technique (f, ESPALIER_TECHNIQUE_INT8_STATIC);
  q = optimize (f);
  g_assert_cmpstr (espalier_variant_get_kind (q), ==, "quantized");
  g_assert_cmpstr (espalier_variant_get_format (q), ==, "int8-static");
  g_assert_nonnull (espalier_variant_get_quant (q));
  g_assert_cmpuint (espalier_variant_get_size_bytes (q), <, espalier_variant_get_size_bytes (variant_at (f, 0)));
  g_assert_true (espalier_sparsity_strip_get_variant (strip) == q);
  g_assert_cmpuint (chart_points (f), ==, 2);
  screenshot_page (f, "optimize-quantized");

  /* The parent leaves the project: the rows that chose it move to what is left. */
  espalier_project_remove_variant (f->project, 0);
  gui_test_iterate (20);
  g_assert_cmpuint (n_variants (f), ==, 1);
  g_assert_true (adw_combo_row_get_selected_item (page_child (f, "parent_row")) == q);
  g_assert_true (espalier_variant_compare_get_a (page_child (f, "compare")) == q);
  g_assert_true (espalier_variant_compare_get_b (page_child (f, "compare")) == q);
  g_assert_true (espalier_sparsity_strip_get_variant (strip) == q);
  g_assert_nonnull (strstr (gtk_label_get_label (page_child (f, "summary_label")), espalier_variant_get_name (q)));
}

static gboolean
has_curve (gpointer data)
{
  Fixture *f = data;
  EspalierSeries *loss = line_series (page_child (f, "tuning_loss_chart"), "Training (running)");

  return espalier_series_get_n_points (loss) > 0;
}

/* A long run stopped: nothing is added, the page can start again. */
static void
test_stop (Fixture       *f,
           gconstpointer  data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) big = espalier_generate_from_spec (SPIRAL_BIG, &error);

  /* Epochs of the small set take a millisecond: fine-tune 100 epochs of 200,000 rows,
   * so that the run is still going when the stop comes even on a loaded machine that
   * starves this thread for many seconds. */
  g_assert_no_error (error);
  espalier_project_set_dataset (f->project, big, NULL);
  set_spin (f, "epochs_spin", 100);
  gtk_widget_activate_action (f->page, "optimize.apply", NULL);
  g_assert_true (gui_test_wait_until (has_curve, f, 60000));
  g_assert_false (gtk_widget_is_sensitive (page_child (f, "apply_button")));
  g_assert_false (gtk_widget_is_sensitive (page_child (f, "scan_button")));
  screenshot_page (f, "optimize-running");
  gtk_widget_activate_action (f->page, "optimize.stop", NULL);
  g_assert_true (gui_test_wait_until (page_idle, f, 60000));
  g_assert_cmpuint (n_variants (f), ==, 1);
  g_assert_nonnull (strstr (gtk_label_get_label (page_child (f, "tuning_status")), "Stopped"));
}

static gboolean
scan_shown (gpointer data)
{
  Fixture *f = data;

  return gtk_widget_get_visible (page_child (f, "scan_view")) && page_idle (f);
}

/* Sensitivity scans: a line per layer for pruning, a bar per layer for int8. */
static void
test_scan (Fixture       *f,
           gconstpointer  data)
{
  EspalierSensitivityView *view = page_child (f, "scan_view");
  EspalierChart *chart = espalier_sensitivity_view_get_chart (view);
  guint lines = 0;

  /* A bad list of sparsities is refused on the spot. */
  gtk_editable_set_text (page_child (f, "scan_levels_row"), "50, 150");
  gtk_widget_activate_action (f->page, "optimize.scan", NULL);
  gui_test_iterate (10);
  g_assert_true (gtk_widget_has_css_class (page_child (f, "scan_levels_row"), "error"));
  g_assert_true (page_idle (f));

  /* Enter in the row scans, as the button does. */
  gtk_editable_set_text (page_child (f, "scan_levels_row"), "50, 90");
  g_signal_emit_by_name (page_child (f, "scan_levels_row"), "entry-activated");
  g_assert_true (gui_test_wait_until (scan_shown, f, 60000));
  g_assert_cmpuint (espalier_sensitivity_view_get_n_layers (view), ==, 3);
  for (guint i = 0; i < espalier_chart_get_n_layers (chart); i++)
    if (ESPALIER_IS_LINE_LAYER (espalier_chart_get_layer (chart, i)))
      {
        EspalierSeries *s = espalier_line_layer_get_series (ESPALIER_LINE_LAYER (espalier_chart_get_layer (chart, i)));

        lines++;
        g_assert_cmpuint (espalier_series_get_n_points (s), ==, 2);   /* 50 % and 90 % */
      }
  g_assert_cmpuint (lines, ==, 3 + 1);   /* a line per layer and the unpruned level */
  /* Header, then a row per layer; columns: layer, unpruned, 50 %, 90 %. */
  g_assert_nonnull (gtk_grid_get_child_at (espalier_sensitivity_view_get_table (view), 3, 3));
  screenshot_page (f, "optimize-scan-prune");

  adw_combo_row_set_selected (page_child (f, "scan_kind_row"), 1);
  g_assert_false (gtk_widget_get_visible (page_child (f, "scan_levels_row")));
  gtk_widget_set_visible (GTK_WIDGET (view), FALSE);
  gtk_widget_activate_action (f->page, "optimize.scan", NULL);
  g_assert_true (gui_test_wait_until (scan_shown, f, 60000));
  g_assert_cmpuint (espalier_sensitivity_view_get_n_layers (view), ==, 3);
  g_assert_cmpuint (espalier_chart_get_n_layers (chart), ==, 1);
  g_assert_true (ESPALIER_IS_BARS_LAYER (espalier_chart_get_layer (chart, 0)));
  screenshot_page (f, "optimize-scan-int8");
}

int
main (int argc, char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add ("/optimize-page/controls", Fixture, NULL, fixture_set_up, test_controls, fixture_tear_down);
  g_test_add ("/optimize-page/prune", Fixture, NULL, fixture_set_up, test_prune, fixture_tear_down);
  g_test_add ("/optimize-page/quantize", Fixture, NULL, fixture_set_up, test_quantize, fixture_tear_down);
  g_test_add ("/optimize-page/stop", Fixture, NULL, fixture_set_up, test_stop, fixture_tear_down);
  g_test_add ("/optimize-page/scan", Fixture, NULL, fixture_set_up, test_scan, fixture_tear_down);

  return g_test_run ();
}
