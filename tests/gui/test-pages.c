/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-pages.c: the Optimize, Profile and Export pages in real windows, on a project
 * with a generated spiral set and the playground model: the variants table and the
 * accuracy-versus-latency chart follow variants being added, remeasured and deleted
 * (the baseline only after its confirmation); the profile table holds one row per
 * layer whose FLOPs add up to the model's, and follows edits and runs; an export
 * writes NAME.json + NAME.safetensors that load back with the same weights. Screenshots
 * of each page go to the screenshot directory; every page is finalized after its window
 * is destroyed. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-error.h"
#include "espalier-export-page.h"
#include "espalier-generate.h"
#include "espalier-model-file.h"
#include "espalier-optimize-page.h"
#include "espalier-profile-page.h"
#include "gui-test-util.h"

typedef struct {
  EspalierProject *project;
  GtkWidget       *page;
  GtkWindow       *window;
  char            *tmp_dir;
} Fixture;

static EspalierVariant *
make_variant (EspalierProject *project,
              const char      *name,
              const char      *kind,
              guint64          seed,
              double           accuracy,
              double           latency_us)
{
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_doc_build (espalier_project_get_model_doc (project), seed, &error);
  EspalierVariant *variant;

  g_assert_no_error (error);
  variant = espalier_variant_new (name, kind, model);
  espalier_variant_set_accuracy (variant, accuracy);
  espalier_variant_set_latency_us (variant, latency_us);
  return variant;
}

static void
add_variant (EspalierProject *project,
             const char      *name,
             const char      *kind,
             guint64          seed,
             double           accuracy,
             double           latency_us)
{
  g_autoptr(EspalierVariant) v = make_variant (project, name, kind, seed, accuracy, latency_us);

  espalier_project_add_variant (project, v);
}

static EspalierVariant *
variant_named (EspalierProject *project,
               const char      *name)
{
  GListModel *variants = espalier_project_get_variants (project);

  for (guint i = 0; i < g_list_model_get_n_items (variants); i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (variants, i);

      if (g_strcmp0 (espalier_variant_get_name (v), name) == 0)
        return v;   /* the project holds it */
    }
  return NULL;
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  GType (*get_type) (void) = data;

  f->tmp_dir = gui_test_make_tmp_dir ("espalier-pages-XXXXXX");
  f->project = gui_test_spiral_project ();
  f->page = g_object_ref_sink (g_object_new (get_type (), "project", f->project, NULL));
  f->window = gui_test_window_new (GTK_WIDGET (f->page), 1400, 1000);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_tear_down_page (f->window, f->page, f->project, f->tmp_dir);
  g_free (f->tmp_dir);
}

static gpointer
template_child (Fixture    *f,
                GType       type,
                const char *name)
{
  GObject *child = gtk_widget_get_template_child (f->page, type, name);

  g_assert_nonnull (child);
  return child;
}

static void
screenshot (Fixture    *f,
            const char *name)
{
  gui_test_save_screenshot (GTK_WIDGET (f->window), name, 350);   /* past the stacks' crossfade */
}

/* Optimize */

static guint
table_rows (Fixture *f)
{
  GtkColumnView *view = template_child (f, ESPALIER_TYPE_OPTIMIZE_PAGE, "variants_view");

  return g_list_model_get_n_items (G_LIST_MODEL (gtk_column_view_get_model (view)));
}

/* Points of the chart's scatter layers (the best trade-off line is not counted). */
static guint
chart_points (Fixture *f,
              double   latency,
              gboolean *found)
{
  EspalierChart *chart = template_child (f, ESPALIER_TYPE_OPTIMIZE_PAGE, "chart");
  guint n = 0;

  *found = FALSE;
  for (guint i = 0; i < espalier_chart_get_n_layers (chart); i++)
    {
      EspalierChartLayer *layer = espalier_chart_get_layer (chart, i);
      EspalierSeries *series;
      const double *x;

      if (!ESPALIER_IS_SCATTER_LAYER (layer))
        continue;
      series = espalier_scatter_layer_get_series (ESPALIER_SCATTER_LAYER (layer));
      x = espalier_series_get_x (series);
      for (guint k = 0; k < espalier_series_get_n_points (series); k++)
        *found |= x[k] == latency;
      n += espalier_series_get_n_points (series);
    }
  return n;
}

/* The chart's hover readout at the data point (x, y). */
static char *
describe_point (Fixture *f,
                double   x,
                double   y)
{
  EspalierChart *chart = template_child (f, ESPALIER_TYPE_OPTIMIZE_PAGE, "chart");
  graphene_rect_t area;
  double px, py;

  espalier_chart_get_plot_area (chart, gtk_widget_get_width (GTK_WIDGET (chart)),
                                gtk_widget_get_height (GTK_WIDGET (chart)), &area);
  espalier_chart_layer_map (&area, espalier_chart_get_x_axis (chart),
                            espalier_chart_get_y_axis (chart), x, y, &px, &py);
  return espalier_chart_describe_at (chart, px, py);
}

static gboolean
x_axis_is_log (Fixture *f)
{
  EspalierChart *chart = template_child (f, ESPALIER_TYPE_OPTIMIZE_PAGE, "chart");
  gboolean log = FALSE;

  g_object_get (espalier_chart_get_x_axis (chart), "logarithmic", &log, NULL);
  return log;
}

static const char *
visible_page (Fixture *f,
              GType    type)
{
  GtkStack *stack = template_child (f, type, "stack");

  return gtk_stack_get_visible_child_name (stack);
}

static void
on_export_requested (EspalierOptimizePage *page,
                     EspalierVariant      *variant,
                     EspalierVariant     **out)
{
  g_set_object (out, variant);
}

static AdwMessageDialog *
find_message_dialog (void)
{
  GListModel *toplevels = gtk_window_get_toplevels ();   /* (transfer none) */

  for (guint i = 0; i < g_list_model_get_n_items (toplevels); i++)
    {
      g_autoptr(GObject) w = g_list_model_get_item (toplevels, i);

      if (ADW_IS_MESSAGE_DIALOG (w))
        return ADW_MESSAGE_DIALOG (w);
    }
  return NULL;
}

typedef struct {
  EspalierVariant *variant;
  double           before;
} LatencyWait;

static gboolean
latency_changed (gpointer data)
{
  LatencyWait *w = data;

  return espalier_variant_get_latency_us (w->variant) != w->before;
}

static void
test_optimize_variants (Fixture       *f,
                        gconstpointer  data)
{
  g_autoptr(EspalierVariant) requested = NULL;
  g_autofree char *readout = NULL;
  gboolean found;
  AdwMessageDialog *dialog;
  LatencyWait wait;

  /* Nothing trained: the empty state points at the Train page. */
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_OPTIMIZE_PAGE), ==, "empty");
  g_assert_cmpuint (table_rows (f), ==, 0);
  screenshot (f, "optimize-page-empty");

  add_variant (f->project, "baseline", "baseline", 1, 0.91, 48.0);
  gui_test_iterate (20);
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_OPTIMIZE_PAGE), ==, "variants");
  g_assert_cmpuint (table_rows (f), ==, 1);
  g_assert_cmpuint (chart_points (f, 48.0, &found), ==, 1);
  g_assert_true (found);

  add_variant (f->project, "pruned 50%", "pruned", 2, 0.89, 30.0);
  add_variant (f->project, "int8", "quantized", 3, 0.90, 12.0);
  add_variant (f->project, "reduced", "reduced", 4, 0.84, 9.0);
  /* Not measured yet: in the table, not on the chart. */
  add_variant (f->project, "pruned 90%", "pruned", 5, NAN, NAN);
  gui_test_iterate (20);
  g_assert_cmpuint (table_rows (f), ==, 5);
  g_assert_cmpuint (chart_points (f, 9.0, &found), ==, 4);
  g_assert_false (x_axis_is_log (f));
  screenshot (f, "optimize-page");
  /* Each point is labelled with its variant's name. */
  readout = describe_point (f, 12.0, 90.0);
  g_assert_nonnull (readout);
  g_assert_nonnull (strstr (readout, "int8"));
  g_clear_pointer (&readout, g_free);

  /* A remeasured variant moves on the chart; a 10x spread turns the axis to log. */
  espalier_variant_set_latency_us (variant_named (f->project, "pruned 90%"), 600.0);
  espalier_variant_set_accuracy (variant_named (f->project, "pruned 90%"), 0.62);
  gui_test_iterate (20);
  g_assert_cmpuint (chart_points (f, 600.0, &found), ==, 5);
  g_assert_true (found);
  g_assert_true (x_axis_is_log (f));

  /* Delete a variant: it leaves the table and the chart. */
  gtk_widget_activate_action (f->page, "optimize.delete", "s", "pruned 90%");
  gui_test_iterate (20);
  g_assert_cmpuint (table_rows (f), ==, 4);
  g_assert_cmpuint (chart_points (f, 600.0, &found), ==, 4);
  g_assert_false (found);
  g_assert_false (x_axis_is_log (f));

  /* Export… hands the variant to whoever shows the Export page. */
  g_signal_connect (f->page, "export-requested", G_CALLBACK (on_export_requested), &requested);
  gtk_widget_activate_action (f->page, "optimize.export", "s", "int8");
  g_assert_nonnull (requested);
  g_assert_cmpstr (espalier_variant_get_name (requested), ==, "int8");

  /* Measure again, on a worker: the latency is replaced by a real measurement. */
  wait.variant = variant_named (f->project, "reduced");
  wait.before = espalier_variant_get_latency_us (wait.variant);
  gtk_widget_activate_action (f->page, "optimize.measure-latency", "s", "reduced");
  g_assert_true (gui_test_wait_until (latency_changed, &wait, 20000));
  g_assert_cmpfloat (espalier_variant_get_latency_us (wait.variant), >, 0.0);
  g_assert_cmpfloat (espalier_variant_get_latency_us (wait.variant), <, 1e6);

  /* The baseline goes only after a confirmation. */
  gtk_widget_activate_action (f->page, "optimize.delete", "s", "baseline");
  gui_test_iterate (50);
  g_assert_cmpuint (table_rows (f), ==, 4);
  dialog = find_message_dialog ();
  g_assert_nonnull (dialog);
  adw_message_dialog_response (dialog, "cancel");
  gtk_window_destroy (GTK_WINDOW (dialog));
  gui_test_iterate (20);
  g_assert_cmpuint (table_rows (f), ==, 4);

  gtk_widget_activate_action (f->page, "optimize.delete", "s", "baseline");
  gui_test_iterate (50);
  dialog = find_message_dialog ();
  g_assert_nonnull (dialog);
  adw_message_dialog_response (dialog, "delete");
  gtk_window_destroy (GTK_WINDOW (dialog));
  gui_test_iterate (20);
  g_assert_cmpuint (table_rows (f), ==, 3);
  g_assert_null (variant_named (f->project, "baseline"));

  /* Everything gone: the empty state again. */
  while (g_list_model_get_n_items (espalier_project_get_variants (f->project)) > 0)
    espalier_project_remove_variant (f->project, 0);
  gui_test_iterate (20);
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_OPTIMIZE_PAGE), ==, "empty");
  g_assert_cmpuint (chart_points (f, 0, &found), ==, 0);
}

/* Profile */

static void
check_profile_rows (Fixture *f)
{
  EspalierModelDoc *doc = espalier_project_get_model_doc (f->project);
  GtkColumnView *view = template_child (f, ESPALIER_TYPE_PROFILE_PAGE, "layers_view");
  GListModel *rows = G_LIST_MODEL (gtk_column_view_get_model (view));
  gint64 flops_sum = 0, params_sum = 0, total_flops = 0, total_params = 0;
  double share_sum = 0;

  espalier_model_doc_get_totals (doc, &total_params, &total_flops, NULL);
  g_assert_cmpuint (g_list_model_get_n_items (rows), ==, espalier_model_doc_get_n_layers (doc));
  for (guint i = 0; i < g_list_model_get_n_items (rows); i++)
    {
      g_autoptr(GObject) row = g_list_model_get_item (rows, i);
      const EsLayerInfo *info = espalier_model_doc_get_layer_info (doc, i);
      gint64 flops, params;
      double share;
      g_autofree char *shape = NULL;
      char buf[64];

      g_object_get (row, "flops", &flops, "n-params", &params, "share", &share,
                    "output-shape", &shape, NULL);
      g_assert_nonnull (info);
      g_assert_cmpint (flops, ==, info->flops);
      g_assert_cmpint (params, ==, info->n_params);
      g_assert_cmpstr (shape, ==, es_shape_format (&info->out, buf, sizeof buf));
      flops_sum += flops;
      params_sum += params;
      share_sum += share;
    }
  g_assert_cmpint (flops_sum, ==, total_flops);
  g_assert_cmpint (params_sum, ==, total_params);
  g_assert_cmpfloat_with_epsilon (share_sum, 1.0, 1e-9);
}

static void
test_profile_layers (Fixture       *f,
                     gconstpointer  data)
{
  EspalierModelDoc *doc = espalier_project_get_model_doc (f->project);
  EspalierChart *flops_chart = template_child (f, ESPALIER_TYPE_PROFILE_PAGE, "flops_chart");
  GtkWidget *throughput_row = template_child (f, ESPALIER_TYPE_PROFILE_PAGE, "throughput_row");
  GtkLabel *epoch_time = template_child (f, ESPALIER_TYPE_PROFILE_PAGE, "epoch_time_label");
  GtkLabel *throughput = template_child (f, ESPALIER_TYPE_PROFILE_PAGE, "throughput_label");
  EspalierChartLayer *bars;
  EsLayerSpec dense = es_layer_spec_default (ES_LAYER_DENSE);
  g_autoptr(EspalierRun) run = NULL;
  double x0, x1, y0, y1;
  gint64 total_flops;

  gui_test_iterate (20);
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_PROFILE_PAGE), ==, "profile");
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, 6);
  check_profile_rows (f);

  /* The FLOPs chart: one bar per layer, the tallest the biggest layer. */
  g_assert_cmpuint (espalier_chart_get_n_layers (flops_chart), ==, 1);
  bars = espalier_chart_get_layer (flops_chart, 0);
  g_assert_true (ESPALIER_CHART_LAYER_GET_CLASS (bars)->get_extents (bars, &x0, &x1, &y0, &y1));
  g_assert_cmpfloat (y1, >=, 2.0 * 8 * 8);   /* Dense 8 -> 8: 2 * 64 FLOPs */
  g_assert_false (gtk_widget_get_visible (throughput_row));
  screenshot (f, "profile-page");

  /* An edit (a wider hidden layer) shows in the table. */
  dense.units = 32;
  espalier_model_doc_set_layer (doc, 2, &dense);
  gui_test_iterate (20);
  check_profile_rows (f);
  espalier_model_doc_get_totals (doc, NULL, &total_flops, NULL);
  g_assert_cmpint (total_flops, >, 2 * 8 * 32);

  /* A run: time per epoch and rows per second. */
  run = espalier_run_new ("Run 1", "dense:8", espalier_project_get_train_options (f->project));
  for (guint e = 1; e <= 4; e++)
    {
      EspalierEpochRecord r = { .epoch = e, .train_loss = 1.0 / e, .train_accuracy = 0.5,
                                .val_loss = NAN, .val_accuracy = NAN, .lr = 0.01,
                                .seconds = 0.25 };

      espalier_run_add_record (run, &r);
    }
  espalier_project_add_run (f->project, run);
  gui_test_iterate (20);
  g_assert_cmpstr (gtk_label_get_label (epoch_time), ==, "250.0 ms");
  g_assert_true (gtk_widget_get_visible (throughput_row));
  g_assert_nonnull (strstr (gtk_label_get_label (throughput), "rows/s"));
  screenshot (f, "profile-page-run");

  /* No layers: the empty state. */
  espalier_model_doc_set_spec (doc, "", NULL);
  gui_test_iterate (20);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, 0);
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_PROFILE_PAGE), ==, "empty");
}

/* Export */

static void
check_model_files (Fixture         *f,
                   const char      *name,
                   EspalierVariant *variant)
{
  g_autofree char *path = g_build_filename (f->tmp_dir, name, NULL);
  g_autofree char *json_path = NULL, *weights_path = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *loaded;
  const EsModel *model = espalier_variant_get_model (variant);

  espalier_model_paths (path, &json_path, &weights_path);
  g_assert_true (g_file_test (json_path, G_FILE_TEST_IS_REGULAR));
  g_assert_true (g_file_test (weights_path, G_FILE_TEST_IS_REGULAR));

  espalier_model_info_init (&info);
  loaded = espalier_model_load (json_path, &info, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_params (loaded), ==, es_model_n_params (model));
  g_assert_cmpint (memcmp (es_model_params_const (loaded), es_model_params_const (model),
                           (size_t) es_model_n_params (model) * sizeof (float)), ==, 0);
  g_assert_cmpstr (info.dataset_source, ==, espalier_project_get_dataset_source (f->project));
  g_assert_nonnull (info.class_names);
  g_assert_cmpstr (info.class_names[0], ==, "class 0");
  /* Measured on the spiral's test split: 20% of 300 rows. */
  g_assert_cmpuint (info.test.rows, ==, 60);
  g_assert_true (info.test.accuracy >= 0.0 && info.test.accuracy <= 1.0);
  espalier_model_info_clear (&info);
  es_model_free (loaded);
}

static void
on_export_done (GObject      *object,
                GAsyncResult *result,
                gpointer      data)
{
  guint64 *bytes = data;
  g_autoptr(GError) error = NULL;

  g_assert_true (espalier_export_page_export_finish (ESPALIER_EXPORT_PAGE (object), result,
                                                     bytes, &error));
  g_assert_no_error (error);
}

static gboolean
nonzero (gpointer data)
{
  return *(guint64 *) data > 0;
}

static void
test_export_variant (Fixture       *f,
                     gconstpointer  data)
{
  EspalierExportPage *page = ESPALIER_EXPORT_PAGE (f->page);
  GtkWidget *onnx_row = template_child (f, ESPALIER_TYPE_EXPORT_PAGE, "onnx_format_row");
  GtkWidget *c_row = template_child (f, ESPALIER_TYPE_EXPORT_PAGE, "c_format_row");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) unloaded = NULL;
  g_autofree char *path = NULL;
  guint64 bytes = 0;

  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_EXPORT_PAGE), ==, "empty");
  g_assert_null (espalier_export_page_get_variant (page));
  path = g_build_filename (f->tmp_dir, "none.json", NULL);
  g_assert_false (espalier_export_page_export_to (page, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  g_clear_pointer (&path, g_free);

  add_variant (f->project, "baseline", "baseline", 1, 0.91, 48.0);
  add_variant (f->project, "pruned 50%", "pruned", 2, 0.89, 30.0);
  gui_test_iterate (20);
  g_assert_cmpstr (visible_page (f, ESPALIER_TYPE_EXPORT_PAGE), ==, "export");
  /* The newest variant is the default. */
  g_assert_cmpstr (espalier_variant_get_name (espalier_export_page_get_variant (page)), ==,
                   "pruned 50%");
  /* Every format can take a float variant. */
  g_assert_true (gtk_widget_get_sensitive (onnx_row));
  g_assert_true (gtk_widget_get_sensitive (c_row));
  screenshot (f, "export-page");

  /* Synchronously, the baseline. */
  espalier_export_page_select_variant (page, variant_named (f->project, "baseline"));
  g_assert_cmpstr (espalier_variant_get_name (espalier_export_page_get_variant (page)), ==,
                   "baseline");
  path = g_build_filename (f->tmp_dir, "baseline.json", NULL);
  g_assert_true (espalier_export_page_export_to (page, path, &error));
  g_assert_no_error (error);
  check_model_files (f, "baseline.json", variant_named (f->project, "baseline"));

  /* On a worker, the pruned one, named without the extension. */
  espalier_export_page_select_variant (page, variant_named (f->project, "pruned 50%"));
  g_clear_pointer (&path, g_free);
  path = g_build_filename (f->tmp_dir, "pruned", NULL);
  espalier_export_page_export_async (page, path, NULL, on_export_done, &bytes);
  g_assert_true (gui_test_wait_until (nonzero, &bytes, 20000));
  check_model_files (f, "pruned", variant_named (f->project, "pruned 50%"));
  g_assert_cmpuint (bytes, >, 0);

  /* Through the Export… button's save dialog, on a worker with a job: the page then
   * shows where the files went. */
  {
    GtkWidget *last_export = template_child (f, ESPALIER_TYPE_EXPORT_PAGE, "last_export_group");
    g_autoptr(GFile) folder = g_file_new_for_path (f->tmp_dir);
    GtkFileChooserDialog *chooser = NULL;
    GListModel *toplevels = gtk_window_get_toplevels ();   /* (transfer none) */

    gtk_widget_activate_action (f->page, "export.export", NULL);
    gui_test_iterate (100);
    for (guint i = 0; i < g_list_model_get_n_items (toplevels) && chooser == NULL; i++)
      {
        g_autoptr(GObject) w = g_list_model_get_item (toplevels, i);

        if (GTK_IS_FILE_CHOOSER_DIALOG (w))
          chooser = GTK_FILE_CHOOSER_DIALOG (w);
      }
    if (chooser != NULL)
      {
        g_autofree char *suggested = gtk_file_chooser_get_current_name (GTK_FILE_CHOOSER (chooser));

        g_assert_cmpstr (suggested, ==, "pruned-50.json");
        gtk_file_chooser_set_current_folder (GTK_FILE_CHOOSER (chooser), folder, NULL);
        gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (chooser), "dialog.json");
        gtk_dialog_response (GTK_DIALOG (chooser), GTK_RESPONSE_ACCEPT);
        g_assert_true (gui_test_wait_until ((gboolean (*) (gpointer)) gtk_widget_get_visible,
                                            last_export, 20000));
        check_model_files (f, "dialog.json", variant_named (f->project, "pruned 50%"));
        screenshot (f, "export-page-exported");
      }
    else
      g_test_message ("no in-process file chooser (a portal answered): dialog path not tested");
  }

  /* A variant without weights cannot be exported, and says so. */
  unloaded = espalier_variant_new ("saved", "pruned", NULL);
  espalier_project_add_variant (f->project, unloaded);
  gui_test_iterate (20);
  g_assert_true (espalier_export_page_get_variant (page) == unloaded);
  g_assert_false (espalier_export_page_export_to (page, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_false (gtk_widget_get_sensitive (template_child (f, ESPALIER_TYPE_EXPORT_PAGE,
                                                            "export_button")));
}

int
main (int argc, char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add ("/pages/optimize/variants", Fixture, espalier_optimize_page_get_type,
              fixture_set_up, test_optimize_variants, fixture_tear_down);
  g_test_add ("/pages/profile/layers", Fixture, espalier_profile_page_get_type,
              fixture_set_up, test_profile_layers, fixture_tear_down);
  g_test_add ("/pages/export/variant", Fixture, espalier_export_page_get_type,
              fixture_set_up, test_export_variant, fixture_tear_down);

  return g_test_run ();
}
