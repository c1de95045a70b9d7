/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-export-page.c: the Export page's three formats and the window's Import ONNX, in
 * real windows under Xvfb. On a project with a generated spiral set and the playground
 * model: every format row is sensitive for a float variant and says what will be
 * written; the baseline exported as ONNX and as C source (synchronously, on a worker,
 * and through the Export button's save dialog with a job) writes its files, and the
 * summary shows their sizes as the file system has them, the operators the ONNX file
 * holds and the C weight bytes the exporter counted; a static int8 variant made by
 * espalier_optimize exports to ONNX with QuantizeLinear among the operators, and to a
 * model file that keeps its quantization; a dynamic int8 variant cannot be C source and
 * the C row says why before anything is clicked. In the application window: an ONNX
 * file imported through win.import-onnx-file becomes the Model page's layers, the
 * project's model and a variant "imported"; a corrupt file and one with an operator
 * Espalier cannot run show the error dialog (naming the operator) and leave the project
 * as it was. Screenshots go to the screenshot directory. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "espalier-application.h"
#include "espalier-c-export.h"
#include "espalier-error.h"
#include "espalier-export-page.h"
#include "espalier-generate.h"
#include "espalier-model-file.h"
#include "espalier-onnx.h"
#include "espalier-optimize.h"
#include "espalier-templates.h"
#include "espalier-ui-util.h"
#include "espalier-window.h"
#include "gui-test-util.h"

typedef struct {
  EspalierProject *project;
  GtkWidget       *page;
  GtkWindow       *window;
  char            *tmp_dir;
} Fixture;

/* The project's model with seeded weights as a variant the project holds. */
static EspalierVariant *
add_variant (EspalierProject *project,
             const char      *name,
             guint64          seed)
{
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_doc_build (espalier_project_get_model_doc (project), seed, &error);
  g_autoptr(EspalierVariant) variant = NULL;

  g_assert_no_error (error);
  variant = espalier_variant_new (name, "baseline", model);
  espalier_variant_set_accuracy (variant, 0.9);
  espalier_variant_set_latency_us (variant, 2.5);
  espalier_project_add_variant (project, variant);
  return variant;   /* the project holds it */
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  f->tmp_dir = gui_test_make_tmp_dir ("espalier-export-XXXXXX");
  f->project = gui_test_spiral_project ();
  f->page = g_object_ref_sink (espalier_export_page_new ());
  espalier_export_page_set_project (ESPALIER_EXPORT_PAGE (f->page), f->project);
  f->window = gui_test_window_new (f->page, 1100, 1100);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_tear_down_page (f->window, f->page, f->project, f->tmp_dir);
  g_free (f->tmp_dir);
}

static gpointer
template_child (GtkWidget  *page,
                const char *name)
{
  GObject *child = gtk_widget_get_template_child (page, ESPALIER_TYPE_EXPORT_PAGE, name);

  g_assert_nonnull (child);
  return child;
}

static const char *
subtitle_of (GtkWidget  *page,
             const char *row)
{
  return adw_action_row_get_subtitle (template_child (page, row));
}

static void
screenshot (GtkWindow  *window,
            const char *name)
{
  gui_test_save_screenshot (GTK_WIDGET (window), name, 350);   /* past the crossfades */
}

/* A mapped label under widget whose text is text, or starts with text and a space. */
static GtkWidget *
find_label_starting (GtkWidget  *widget,
                     const char *text)
{
  if (!gtk_widget_get_mapped (widget))
    return NULL;
  if (GTK_IS_LABEL (widget))
    {
      const char *label = gtk_label_get_text (GTK_LABEL (widget));
      gsize n = strlen (text);

      if (strncmp (label, text, n) == 0 && (label[n] == '\0' || label[n] == ' '))
        return widget;
    }
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      GtkWidget *found = find_label_starting (child, text);

      if (found != NULL)
        return found;
    }
  return NULL;
}

/* The summary shows path's size as the file system has it, exactly. */
static void
assert_size_shown (GtkWidget  *page,
                   const char *path)
{
  GStatBuf st;
  g_autofree char *grouped = NULL;
  g_autofree char *text = NULL;

  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (st.st_size, >, 0);
  grouped = espalier_format_grouped (st.st_size);
  text = g_strdup_printf ("%s bytes", grouped);
  if (find_label_starting (page, text) == NULL)
    g_error ("the summary does not show “%s” for %s", text, path);
}

static gboolean
label_shown (gpointer data)
{
  gpointer *args = data;

  return gui_test_find_label (args[0], args[1]) != NULL;
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

/* The in-process save dialog the Export button opens, or NULL when a portal answered. */
static GtkFileChooser *
find_chooser (void)
{
  GListModel *toplevels = gtk_window_get_toplevels ();   /* (transfer none) */

  for (guint i = 0; i < g_list_model_get_n_items (toplevels); i++)
    {
      g_autoptr(GObject) w = g_list_model_get_item (toplevels, i);

      if (GTK_IS_FILE_CHOOSER_DIALOG (w))
        return GTK_FILE_CHOOSER (w);
    }
  return NULL;
}

/* Formats ----------------------------------------------------------------------------- */

static void
test_formats (Fixture       *f,
              gconstpointer  data)
{
  EspalierExportPage *page = ESPALIER_EXPORT_PAGE (f->page);
  GtkStack *stack = template_child (f->page, "stack");
  const char *rows[] = { "espalier_format_row", "onnx_format_row", "c_format_row" };
  const char *checks[] = { "espalier_format_check", "onnx_format_check", "c_format_check" };

  g_assert_cmpstr (gtk_stack_get_visible_child_name (stack), ==, "empty");
  screenshot (f->window, "export-page-empty");

  add_variant (f->project, "baseline", 1);
  gui_test_iterate (20);
  g_assert_cmpstr (gtk_stack_get_visible_child_name (stack), ==, "export");

  /* A float variant can go to every format. */
  for (guint i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      g_autofree char *problem = espalier_export_page_get_problem (page, i);

      g_assert_true (gtk_widget_get_sensitive (template_child (f->page, rows[i])));
      g_assert_null (problem);
    }
  g_assert_cmpint (espalier_export_page_get_format (page), ==, ESPALIER_EXPORT_FORMAT_MODEL);
  g_assert_cmpstr (subtitle_of (f->page, "files_row"), ==, "baseline.json + baseline.safetensors");
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"), "float32 weights"));
  g_assert_true (gtk_widget_get_sensitive (template_child (f->page, "export_button")));

  /* Choosing a row is choosing the format, and what will be written follows. */
  gtk_check_button_set_active (template_child (f->page, checks[1]), TRUE);
  g_assert_cmpint (espalier_export_page_get_format (page), ==, ESPALIER_EXPORT_FORMAT_ONNX);
  g_assert_cmpstr (subtitle_of (f->page, "files_row"), ==, "baseline.onnx");
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"), "Opset 13"));
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"), "float"));
  screenshot (f->window, "export-page-onnx-plan");

  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_C);
  g_assert_true (gtk_check_button_get_active (template_child (f->page, checks[2])));
  g_assert_false (gtk_check_button_get_active (template_child (f->page, checks[1])));
  g_assert_cmpstr (subtitle_of (f->page, "files_row"), ==, "baseline.c + baseline.h");
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"), "float"));
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"), "baseline_predict ()"));
}

/* ONNX and C ------------------------------------------------------------------------- */

static void
test_onnx_and_c (Fixture       *f,
                 gconstpointer  data)
{
  EspalierExportPage *page = ESPALIER_EXPORT_PAGE (f->page);
  EspalierVariant *baseline = add_variant (f->project, "baseline", 2);
  g_autofree char *onnx_path = g_build_filename (f->tmp_dir, "baseline.onnx", NULL);
  g_autofree char *c_path = g_build_filename (f->tmp_dir, "baseline.c", NULL);
  g_autofree char *h_path = g_build_filename (f->tmp_dir, "baseline.h", NULL);
  g_autofree char *stem = g_build_filename (f->tmp_dir, "baseline", NULL);
  g_autoptr(GError) error = NULL;
  EspalierOnnxSummary inspected;
  g_autofree char *ops = NULL;
  guint64 bytes = 0;

  gui_test_iterate (20);

  /* ONNX, named without the extension. */
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_ONNX);
  g_assert_true (espalier_export_page_export_to (page, stem, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_test (onnx_path, G_FILE_TEST_IS_REGULAR));
  gui_test_iterate (20);
  g_assert_true (gtk_widget_get_visible (template_child (f->page, "last_export_group")));
  assert_size_shown (f->page, onnx_path);
  /* The operators as the file holds them, read back independently of the export. */
  g_assert_true (espalier_onnx_inspect (onnx_path, &inspected, &error));
  g_assert_no_error (error);
  g_assert_cmpint (inspected.opset, ==, ESPALIER_ONNX_OPSET);
  ops = espalier_onnx_summary_ops (&inspected);
  g_assert_nonnull (strstr (ops, "Gemm 3"));
  g_assert_nonnull (find_label_starting (f->page, ops));
  /* And the file is the variant's model. */
  {
    g_autoptr(GError) import_error = NULL;
    EsModel *back = espalier_onnx_import (onnx_path, NULL, &import_error);
    const EsModel *model = espalier_variant_get_model (baseline);

    g_assert_no_error (import_error);
    g_assert_cmpint (es_model_n_params (back), ==, es_model_n_params (model));
    g_assert_cmpint (memcmp (es_model_params_const (back), es_model_params_const (model),
                             (gsize) es_model_n_params (model) * sizeof (float)), ==, 0);
    es_model_free (back);
  }
  screenshot (f->window, "export-page-onnx");

  /* C source on a worker. */
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_C);
  espalier_export_page_export_async (page, c_path, NULL, on_export_done, &bytes);
  g_assert_true (gui_test_wait_until (nonzero, &bytes, 30000));
  gui_test_iterate (20);
  g_assert_true (g_file_test (c_path, G_FILE_TEST_IS_REGULAR));
  g_assert_true (g_file_test (h_path, G_FILE_TEST_IS_REGULAR));
  assert_size_shown (f->page, c_path);
  assert_size_shown (f->page, h_path);
  {
    GStatBuf c_st, h_st;

    g_assert_cmpint (g_stat (c_path, &c_st), ==, 0);
    g_assert_cmpint (g_stat (h_path, &h_st), ==, 0);
    g_assert_cmpuint (bytes, ==, (guint64) c_st.st_size + (guint64) h_st.st_size);
  }
  /* The weight bytes are the exporter's own count: write the same model here. */
  {
    g_autofree char *dir = g_build_filename (f->tmp_dir, "again", NULL);
    g_autofree char *c2 = g_build_filename (dir, "baseline.c", NULL);
    g_autofree char *h2 = g_build_filename (dir, "baseline.h", NULL);
    g_autofree char *weights = NULL;
    g_autofree char *text = NULL;
    EspalierCExportSummary summary;

    g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
    g_assert_true (espalier_c_export (espalier_variant_get_model (baseline), NULL, NULL,
                                      "baseline", c2, h2, &summary, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (summary.weight_bytes, >=,
                      (gsize) es_model_n_params (espalier_variant_get_model (baseline)) * sizeof (float));
    weights = espalier_format_grouped ((gint64) summary.weight_bytes);
    text = g_strdup_printf ("%s bytes", weights);
    g_assert_nonnull (find_label_starting (f->page, text));
    g_assert_nonnull (find_label_starting (f->page, "float"));
    gui_test_remove_dir (dir);
  }
  /* The identifiers are named after the file. */
  {
    g_autofree char *source = NULL;

    g_assert_true (g_file_get_contents (h_path, &source, NULL, NULL));
    g_assert_nonnull (strstr (source, "baseline_predict ("));
  }
  screenshot (f->window, "export-page-c");

  /* Through the Export button: a save dialog named for the format, then a job. */
  gtk_widget_activate_action (f->page, "export.export", NULL);
  gui_test_iterate (100);
  {
    GtkFileChooser *chooser = find_chooser ();
    g_autoptr(GFile) folder = g_file_new_for_path (f->tmp_dir);

    if (chooser != NULL)
      {
        g_autofree char *suggested = gtk_file_chooser_get_current_name (chooser);
        g_autofree char *dialog_c = g_build_filename (f->tmp_dir, "dialog.c", NULL);
        g_autofree char *dialog_h = g_build_filename (f->tmp_dir, "dialog.h", NULL);
        gpointer args[2] = { f->page, (gpointer) "dialog.c" };

        g_assert_cmpstr (suggested, ==, "baseline.c");
        gtk_file_chooser_set_current_folder (chooser, folder, NULL);
        gtk_file_chooser_set_current_name (chooser, "dialog.c");
        gtk_dialog_response (GTK_DIALOG (chooser), GTK_RESPONSE_ACCEPT);
        g_assert_true (gui_test_wait_until (label_shown, args, 30000));
        g_assert_true (g_file_test (dialog_c, G_FILE_TEST_IS_REGULAR));
        g_assert_true (g_file_test (dialog_h, G_FILE_TEST_IS_REGULAR));
        assert_size_shown (f->page, dialog_c);
        g_assert_true (gtk_widget_get_sensitive (template_child (f->page, "export_button")));
      }
    else
      g_test_message ("no in-process file chooser (a portal answered): dialog path not tested");
  }
}

/* int8 ------------------------------------------------------------------------------- */

static EspalierVariant *
quantize (Fixture         *f,
          EspalierVariant *parent,
          EsQuantMode      mode)
{
  g_autoptr(GError) error = NULL;
  EspalierOptimizeOptions opts;
  EspalierVariant *variant;

  espalier_optimize_options_init (&opts);
  opts.kind = ESPALIER_OPTIMIZE_QUANTIZE;
  opts.quant_mode = mode;
  opts.calib_batches = 2;
  opts.epochs = 0;
  opts.latency_seconds = 0.05;
  variant = espalier_optimize (espalier_project_get_dataset (f->project), parent,
                               espalier_project_get_train_options (f->project), &opts, NULL,
                               NULL, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (espalier_variant_get_quant (variant));
  g_assert_cmpint (espalier_variant_get_quant (variant)->mode, ==, mode);
  espalier_optimize_options_clear (&opts);
  espalier_project_add_variant (f->project, variant);
  g_object_unref (variant);
  return variant;   /* the project holds it */
}

static void
test_int8 (Fixture       *f,
           gconstpointer  data)
{
  EspalierExportPage *page = ESPALIER_EXPORT_PAGE (f->page);
  EspalierVariant *baseline = add_variant (f->project, "baseline", 3);
  EspalierVariant *int8, *dynamic;
  g_autofree char *onnx_path = g_build_filename (f->tmp_dir, "int8.onnx", NULL);
  g_autofree char *model_path = g_build_filename (f->tmp_dir, "int8.json", NULL);
  g_autofree char *c_path = g_build_filename (f->tmp_dir, "int8.c", NULL);
  g_autofree char *problem = NULL;
  g_autoptr(GError) error = NULL;
  EspalierOnnxSummary inspected;
  g_autofree char *ops = NULL;
  guint quantize_linear = 0;

  /* Static int8: the newest variant is the one the page offers. */
  int8 = quantize (f, baseline, ES_QUANT_INT8_STATIC);
  gui_test_iterate (20);
  g_assert_true (espalier_export_page_get_variant (page) == int8);
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_ONNX);
  g_assert_nonnull (strstr (subtitle_of (f->page, "contents_row"),
                            "int8 QDQ with per-channel weight scales"));
  g_assert_nonnull (strstr (adw_preferences_row_get_title (template_child (f->page, "contents_row")),
                            "int8-static"));
  g_assert_true (espalier_export_page_export_to (page, onnx_path, &error));
  g_assert_no_error (error);
  gui_test_iterate (20);
  assert_size_shown (f->page, onnx_path);
  g_assert_true (espalier_onnx_inspect (onnx_path, &inspected, &error));
  g_assert_no_error (error);
  for (guint k = 0; k < inspected.n_op_kinds; k++)
    if (g_str_equal (inspected.ops[k].op, "QuantizeLinear"))
      quantize_linear = inspected.ops[k].count;
  g_assert_cmpuint (quantize_linear, >, 0);
  ops = espalier_onnx_summary_ops (&inspected);
  g_assert_nonnull (strstr (ops, "QuantizeLinear"));
  g_assert_nonnull (find_label_starting (f->page, ops));
  screenshot (f->window, "export-page-int8-onnx");

  /* A model file keeps the quantization. */
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_MODEL);
  g_assert_true (espalier_export_page_export_to (page, model_path, &error));
  g_assert_no_error (error);
  {
    EsQuant *quant = NULL;
    EsModel *back = espalier_model_load_variant (model_path, NULL, &quant, &error);

    g_assert_no_error (error);
    g_assert_nonnull (quant);
    g_assert_cmpint (quant->mode, ==, ES_QUANT_INT8_STATIC);
    es_quant_free (quant);
    es_model_free (back);
  }

  /* And C source runs it in int8. */
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_C);
  g_assert_true (espalier_export_page_export_to (page, c_path, &error));
  g_assert_no_error (error);
  gui_test_iterate (20);
  assert_size_shown (f->page, c_path);
  g_assert_nonnull (gui_test_find_label (f->page, "int8 layer"));

  /* Dynamic int8 cannot be C source: the row says so before any click. */
  dynamic = quantize (f, baseline, ES_QUANT_INT8_DYNAMIC);
  gui_test_iterate (20);
  g_assert_true (espalier_export_page_get_variant (page) == dynamic);
  problem = espalier_export_page_get_problem (page, ESPALIER_EXPORT_FORMAT_C);
  g_assert_nonnull (problem);
  g_assert_nonnull (strstr (problem, "Dynamic int8"));
  g_assert_false (gtk_widget_get_sensitive (template_child (f->page, "c_format_row")));
  g_assert_cmpstr (subtitle_of (f->page, "c_format_row"), ==, problem);
  g_assert_true (gtk_widget_get_sensitive (template_child (f->page, "onnx_format_row")));
  g_assert_false (gtk_widget_get_sensitive (template_child (f->page, "export_button")));
  g_assert_false (espalier_export_page_export_to (page, c_path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  screenshot (f->window, "export-page-dynamic");

  /* ONNX takes it (DynamicQuantizeLinear), and Export is offered again. */
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_ONNX);
  g_assert_true (gtk_widget_get_sensitive (template_child (f->page, "export_button")));
  g_clear_pointer (&onnx_path, g_free);
  onnx_path = g_build_filename (f->tmp_dir, "dynamic.onnx", NULL);
  g_assert_true (espalier_export_page_export_to (page, onnx_path, &error));
  g_assert_no_error (error);
  gui_test_iterate (20);
  g_assert_nonnull (gui_test_find_label (f->page, "DynamicQuantizeLinear"));
}

/* Import in the window --------------------------------------------------------------- */

typedef struct {
  EspalierApplication *app;
  EspalierWindow      *window;
  char                *tmp_dir;
} AppFixture;

static gboolean
has_dataset (gpointer data)
{
  return espalier_project_get_dataset (espalier_window_get_project (data)) != NULL;
}

static void
app_set_up (AppFixture    *f,
            gconstpointer  data)
{
  g_autoptr(GError) error = NULL;

  f->tmp_dir = gui_test_make_tmp_dir ("espalier-import-XXXXXX");
  f->app = espalier_application_new ();
  g_application_set_flags (G_APPLICATION (f->app), G_APPLICATION_NON_UNIQUE);
  g_application_register (G_APPLICATION (f->app), NULL, &error);
  g_assert_no_error (error);
  f->window = espalier_window_new (ADW_APPLICATION (f->app));
  gtk_window_set_default_size (GTK_WINDOW (f->window), 1400, 900);
  gtk_window_present (GTK_WINDOW (f->window));
  while (!gtk_widget_get_mapped (GTK_WIDGET (f->window)))
    g_main_context_iteration (NULL, TRUE);
  /* The default project's spiral set (Fashion-MNIST is hidden in main). */
  g_assert_true (gui_test_wait_until (has_dataset, f->window, 30000));
}

static void
app_tear_down (AppFixture    *f,
               gconstpointer  data)
{
  GList *toplevels = gtk_window_list_toplevels ();

  /* Dialogs first (they are transient for the window). */
  for (GList *l = toplevels; l; l = l->next)
    if (l->data != (gpointer) f->window)
      gtk_window_destroy (l->data);
  g_list_free (toplevels);
  espalier_project_set_modified (espalier_window_get_project (f->window), FALSE);
  g_object_ref (f->window);
  gtk_window_destroy (GTK_WINDOW (f->window));
  gui_test_iterate (50);
  g_assert_finalize_object (f->window);
  g_application_quit (G_APPLICATION (f->app));
  g_object_unref (f->app);
  gui_test_remove_dir (f->tmp_dir);
  g_free (f->tmp_dir);
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

static gboolean
has_imported (gpointer data)
{
  return variant_named (espalier_window_get_project (data), "imported") != NULL;
}

/* The visible message dialog, or NULL. */
static AdwMessageDialog *
shown_dialog (void)
{
  GList *toplevels = gtk_window_list_toplevels ();
  AdwMessageDialog *dialog = NULL;

  for (GList *l = toplevels; l != NULL && dialog == NULL; l = l->next)
    if (ADW_IS_MESSAGE_DIALOG (l->data) && gtk_widget_get_visible (l->data))
      dialog = l->data;
  g_list_free (toplevels);
  return dialog;
}

static gboolean
dialog_shown (gpointer data)
{
  return shown_dialog () != NULL;
}

/* Whether menu or a section or submenu of it has an item for action. */
static gboolean
menu_has_action (GMenuModel *menu,
                 const char *action)
{
  for (int i = 0; i < g_menu_model_get_n_items (menu); i++)
    {
      g_autofree char *name = NULL;
      const char *links[] = { G_MENU_LINK_SECTION, G_MENU_LINK_SUBMENU };

      if (g_menu_model_get_item_attribute (menu, i, G_MENU_ATTRIBUTE_ACTION, "s", &name)
          && g_str_equal (name, action))
        return TRUE;
      for (guint k = 0; k < G_N_ELEMENTS (links); k++)
        {
          g_autoptr(GMenuModel) link = g_menu_model_get_item_link (menu, i, links[k]);

          if (link != NULL && menu_has_action (link, action))
            return TRUE;
        }
    }
  return FALSE;
}

/* Whether a menu button under widget offers action. */
static gboolean
window_menu_has (GtkWidget  *widget,
                 const char *action)
{
  if (GTK_IS_MENU_BUTTON (widget))
    {
      GMenuModel *menu = gtk_menu_button_get_menu_model (GTK_MENU_BUTTON (widget));

      if (menu != NULL && menu_has_action (menu, action))
        return TRUE;
    }
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    if (window_menu_has (child, action))
      return TRUE;
  return FALSE;
}

static void
import_file (AppFixture *f,
             const char *path)
{
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autofree char *uri = g_file_get_uri (file);

  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.import-onnx-file", "s", uri);
}

/* An ONNX file of spec on the spiral's input (2), written by the Export page of the
 * window from a variant "source"; returns its path. */
static char *
export_model (AppFixture *f,
              const char *spec,
              guint64     seed,
              const char *name,
              EsModel   **model_out)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  EspalierExportPage *page = ESPALIER_EXPORT_PAGE (espalier_window_get_page_widget (f->window, "export"));
  const EsShape input = { .rank = 1, .dims = { 2 } };
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) variant = NULL;
  char *path = g_build_filename (f->tmp_dir, name, NULL);
  EsModel *model = espalier_model_from_spec (spec, &input, &error);

  g_assert_no_error (error);
  es_model_init (model, seed);
  variant = espalier_variant_new ("source", "baseline", es_model_copy (model));
  espalier_project_add_variant (project, variant);
  gui_test_iterate (20);
  espalier_export_page_select_variant (page, variant);
  espalier_export_page_set_format (page, ESPALIER_EXPORT_FORMAT_ONNX);
  g_assert_true (espalier_export_page_export_to (page, path, &error));
  g_assert_no_error (error);
  /* The source variant goes again: the import is then all the project gains. */
  espalier_project_remove_variant (project, g_list_model_get_n_items (espalier_project_get_variants (project)) - 1);
  if (model_out != NULL)
    *model_out = model;
  else
    es_model_free (model);
  return path;
}

static void
test_import (AppFixture    *f,
             gconstpointer  data)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  const char *spec = "dense:16,relu,dense:12,tanh,dense:3,softmax";
  g_autofree char *path = NULL;
  g_autofree char *doc_spec = NULL;
  g_autofree char *model_spec = NULL;
  g_autofree char *shot = NULL;
  EsModel *model = NULL;
  EsModel *trained;
  EspalierVariant *imported;
  guint n_variants;

  /* The project menu offers the import. */
  g_assert_true (window_menu_has (GTK_WIDGET (f->window), "win.import-onnx"));

  path = export_model (f, spec, 5, "mlp.onnx", &model);
  n_variants = g_list_model_get_n_items (espalier_project_get_variants (project));
  model_spec = espalier_model_to_spec (model);
  doc_spec = espalier_model_doc_to_spec (doc);
  g_assert_cmpstr (doc_spec, !=, model_spec);
  g_clear_pointer (&doc_spec, g_free);
  espalier_project_set_modified (project, FALSE);

  import_file (f, path);
  g_assert_true (gui_test_wait_until (has_imported, f->window, 30000));
  gui_test_iterate (100);

  /* The Model page's layers are the file's, the project's model its weights. */
  g_assert_true (espalier_window_get_project (f->window) == project);
  doc_spec = espalier_model_doc_to_spec (doc);
  g_assert_cmpstr (doc_spec, ==, model_spec);
  g_assert_true (espalier_model_doc_is_valid (doc));
  trained = espalier_project_get_model (project);
  g_assert_nonnull (trained);
  g_assert_cmpint (es_model_n_params (trained), ==, es_model_n_params (model));
  g_assert_cmpint (memcmp (es_model_params_const (trained), es_model_params_const (model),
                           (gsize) es_model_n_params (model) * sizeof (float)), ==, 0);

  /* A variant to profile, prune and quantize, timed like the others. */
  imported = variant_named (project, "imported");
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (project)), ==,
                    n_variants + 1);
  g_assert_cmpstr (espalier_variant_get_kind (imported), ==, "baseline");
  g_assert_cmpint (memcmp (es_model_params_const (espalier_variant_get_model (imported)),
                           es_model_params_const (model),
                           (gsize) es_model_n_params (model) * sizeof (float)), ==, 0);
  g_assert_true (isfinite (espalier_variant_get_latency_us (imported)));
  /* The spiral set fits it (2 features, 3 classes): measured on its test split. */
  g_assert_true (espalier_variant_get_accuracy (imported) >= 0.0
                 && espalier_variant_get_accuracy (imported) <= 1.0);
  g_assert_nonnull (strstr (espalier_variant_get_description (imported), "mlp.onnx"));
  g_assert_true (espalier_project_get_modified (project));
  g_assert_cmpstr (espalier_window_get_page (f->window), ==, "model");
  g_assert_null (shown_dialog ());

  shot = gui_test_screenshot (GTK_WIDGET (f->window), "export-import-model");
  g_assert_nonnull (shot);
  g_test_message ("screenshot: %s", shot);
  g_clear_pointer (&shot, g_free);
  espalier_window_show_page (f->window, "export");
  gui_test_iterate (350);
  shot = gui_test_screenshot (GTK_WIDGET (f->window), "export-import-export-page");
  g_assert_nonnull (shot);
  g_test_message ("screenshot: %s", shot);

  /* The Model page's undo takes the layers back. */
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.undo", NULL);
  g_clear_pointer (&doc_spec, g_free);
  doc_spec = espalier_model_doc_to_spec (doc);
  g_assert_cmpstr (doc_spec, !=, model_spec);
  es_model_free (model);
}

/* path imported: an error dialog whose body holds `expected`, and nothing changed. */
static void
check_import_fails (AppFixture *f,
                    const char *path,
                    const char *expected,
                    const char *shot_name)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  g_autofree char *before = espalier_model_doc_to_spec (doc);
  g_autofree char *after = NULL;
  g_autofree char *shot = NULL;
  guint n_variants = g_list_model_get_n_items (espalier_project_get_variants (project));
  gboolean modified = espalier_project_get_modified (project);
  AdwMessageDialog *dialog;

  import_file (f, path);
  g_assert_true (gui_test_wait_until (dialog_shown, NULL, 30000));
  gui_test_iterate (200);
  dialog = shown_dialog ();
  g_test_message ("error: %s", adw_message_dialog_get_body (dialog));
  g_assert_nonnull (strstr (adw_message_dialog_get_body (dialog), expected));
  g_assert_nonnull (strstr (adw_message_dialog_get_heading (dialog), "Importing"));
  shot = gui_test_screenshot (GTK_WIDGET (dialog), shot_name);
  g_assert_nonnull (shot);
  g_test_message ("screenshot: %s", shot);

  g_assert_true (espalier_window_get_project (f->window) == project);
  after = espalier_model_doc_to_spec (doc);
  g_assert_cmpstr (after, ==, before);
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (project)), ==,
                    n_variants);
  g_assert_null (variant_named (project, "imported"));
  g_assert_cmpint (espalier_project_get_modified (project), ==, modified);
  gtk_window_destroy (GTK_WINDOW (dialog));
  gui_test_iterate (50);
}

static void
test_import_errors (AppFixture    *f,
                    gconstpointer  data)
{
  g_autofree char *garbage = g_build_filename (f->tmp_dir, "garbage.onnx", NULL);
  g_autofree char *path = NULL;
  g_autofree char *contents = NULL;
  g_autofree char *unsupported = NULL;
  gsize length, replaced = 0;

  /* Not a protobuf at all. */
  g_assert_true (g_file_set_contents (garbage, "this is not an ONNX model\n", -1, NULL));
  check_import_fails (f, garbage, "garbage.onnx", "export-import-error-corrupt");

  /* A well-formed graph with an operator Espalier cannot run: every "Tanh" of a real
   * export made "Atan" (the same length, so the protobuf stays well formed). */
  path = export_model (f, "dense:8,tanh,dense:3,softmax", 6, "tanh.onnx", NULL);
  g_assert_true (g_file_get_contents (path, &contents, &length, NULL));
  for (gsize i = 0; i + 4 <= length; i++)
    if (memcmp (contents + i, "Tanh", 4) == 0)
      {
        memcpy (contents + i, "Atan", 4);
        replaced++;
      }
  g_assert_cmpuint (replaced, >, 0);
  unsupported = g_build_filename (f->tmp_dir, "atan.onnx", NULL);
  g_assert_true (g_file_set_contents (unsupported, contents, (gssize) length, NULL));
  check_import_fails (f, unsupported, "Atan", "export-import-error-operator");
}

int
main (int argc, char **argv)
{
  /* Without Fashion-MNIST, the window's default project is the spiral set. */
  g_setenv ("ESPALIER_FASHION_MNIST_DIR", "/nonexistent", TRUE);
  gui_test_init (&argc, &argv);

  g_test_add ("/export-page/formats", Fixture, NULL, fixture_set_up, test_formats, fixture_tear_down);
  g_test_add ("/export-page/onnx-and-c", Fixture, NULL, fixture_set_up, test_onnx_and_c,
              fixture_tear_down);
  g_test_add ("/export-page/int8", Fixture, NULL, fixture_set_up, test_int8, fixture_tear_down);
  g_test_add ("/export-page/import", AppFixture, NULL, app_set_up, test_import, app_tear_down);
  g_test_add ("/export-page/import-errors", AppFixture, NULL, app_set_up, test_import_errors,
              app_tear_down);
  return g_test_run ();
}
