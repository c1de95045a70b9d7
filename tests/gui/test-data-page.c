/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-data-page.c: the Data page in a real window: loading a generated set, a CSV table
 * with forward-fill and Fashion-MNIST through espalier_data_page_load, what the preview
 * and the class chart then hold, and a bad file that leaves the previous dataset in
 * place with its error on the page. Loads never use the cache. Screenshots of each
 * state go to the screenshot directory. */
#include "config.h"

#include <string.h>

#include "espalier-chart-layers.h"
#include "espalier-data-page.h"
#include "espalier-image-grid.h"
#include "gui-test-util.h"

typedef struct {
  EspalierProject  *project;
  EspalierDataPage *page;
  GtkWindow        *window;
  char             *tmp_dir;
} Fixture;

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  f->tmp_dir = gui_test_make_tmp_dir ("espalier-data-page-XXXXXX");
  f->project = espalier_project_new ();
  f->page = ESPALIER_DATA_PAGE (g_object_ref_sink (espalier_data_page_new ()));
  espalier_data_page_set_project (f->page, f->project);
  f->window = gui_test_window_new (GTK_WIDGET (f->page), 1400, 900);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_tear_down_page (f->window, f->page, f->project, f->tmp_dir);
  g_free (f->tmp_dir);
}

static void
no_cache_options (EspalierLoadOptions *options)
{
  espalier_load_options_init (options);
  options->use_cache = FALSE;
}

static gboolean
not_loading (gpointer data)
{
  return !espalier_data_page_get_loading (data);
}

static void
load_and_wait (Fixture                   *f,
               const char                *source,
               const EspalierLoadOptions *options,
               guint                      timeout_ms)
{
  espalier_data_page_load (f->page, source, options);
  g_assert_true (espalier_data_page_get_loading (f->page));
  g_assert_true (gui_test_wait_until (not_loading, f->page, timeout_ms));
  gui_test_iterate (300); /* transitions, the summary worker, a frame */
}

typedef struct {
  GtkWidget  *root;
  const char *text;
} LabelQuery;

static gboolean
label_shown (gpointer data)
{
  LabelQuery *q = data;

  return gui_test_find_label (q->root, q->text) != NULL;
}

/* Whether a label with text shows up within a few seconds (workers, a frame). */
static gboolean
wait_for_label (Fixture    *f,
                const char *text)
{
  LabelQuery q = { GTK_WIDGET (f->page), text };

  return gui_test_wait_until (label_shown, &q, 10000);
}

static void
screenshot (Fixture    *f,
            const char *name)
{
  gui_test_save_screenshot (GTK_WIDGET (f->window), name, 0);
}

static char *
write_file (Fixture    *f,
            const char *name,
            const char *contents,
            gssize      length)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename (f->tmp_dir, name, NULL);

  g_file_set_contents (path, contents, length, &error);
  g_assert_no_error (error);
  return path;
}

static void
test_empty (Fixture       *f,
            gconstpointer  data)
{
  g_assert_null (espalier_data_page_get_dataset (f->page));
  g_assert_cmpstr (espalier_data_page_get_preview_kind (f->page), ==, "empty");
  g_assert_null (espalier_data_page_get_error_text (f->page));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "No Dataset"));
  screenshot (f, "data-page-empty");
}

static void
test_spiral_then_bad_files (Fixture       *f,
                            gconstpointer  data)
{
  EspalierLoadOptions options;
  EspalierDataset *spiral;
  EspalierChart *chart;
  EspalierChartLayer *layer;
  EspalierSeries *series;
  double x0, x1, y0, y1;
  g_autofree char *bad_csv = NULL;
  g_autofree char *bad_idx = NULL;
  /* An IDX header for 5 images of 28 x 28 with 3 bytes of pixels. */
  static const guint8 idx[] = { 0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3 };

  no_cache_options (&options);
  load_and_wait (f, "spiral:n=300,arms=3,noise=0.2,seed=1", &options, 20000);

  spiral = espalier_project_get_dataset (f->project);
  g_assert_nonnull (spiral);
  g_assert_true (spiral == espalier_data_page_get_dataset (f->page));
  g_assert_cmpstr (espalier_dataset_get_name (spiral), ==, "spiral");
  g_assert_cmpuint (espalier_dataset_get_n_rows (spiral), ==, 300);
  g_assert_cmpstr (espalier_data_page_get_preview_kind (f->page), ==, "points");
  g_assert_null (espalier_data_page_get_error_text (f->page));

  /* The scatter plot holds every point, with its class. */
  chart = espalier_data_page_get_scatter_chart (f->page);
  g_assert_cmpuint (espalier_chart_get_n_layers (chart), ==, 1);
  layer = espalier_chart_get_layer (chart, 0);
  g_assert_true (ESPALIER_IS_SCATTER_LAYER (layer));
  series = espalier_scatter_layer_get_series (ESPALIER_SCATTER_LAYER (layer));
  g_assert_cmpuint (espalier_series_get_n_points (series), ==, 300);
  g_assert_nonnull (espalier_series_get_class (series));
  g_assert_true (gtk_widget_get_mapped (GTK_WIDGET (chart)));

  /* The class chart: three bars of 100 rows. */
  chart = espalier_data_page_get_class_chart (f->page);
  g_assert_true (gtk_widget_get_mapped (GTK_WIDGET (chart)));
  layer = espalier_chart_get_layer (chart, 0);
  g_assert_true (ESPALIER_IS_BARS_LAYER (layer));
  g_assert_true (ESPALIER_CHART_LAYER_GET_CLASS (layer)->get_extents (layer, &x0, &x1, &y0, &y1));
  g_assert_cmpfloat (x0, <=, 0);
  g_assert_cmpfloat (x1, >=, 2);
  g_assert_cmpfloat (x1, <, 3.5);
  g_assert_cmpfloat_with_epsilon (y1, 100, 1e-9);

  /* Summary and report are on the page. */
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "300 points"));
  g_assert_true (wait_for_label (f, "210 / 30 / 60"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "generated spiral"));
  screenshot (f, "data-page-spiral");

  /* A ragged CSV: the spiral stays, the loader's message is on the page. */
  bad_csv = write_file (f, "bad.csv", "a,b,label\n1,2,x\n3,y\n4,5,x\n", -1);
  load_and_wait (f, bad_csv, &options, 20000);
  g_assert_true (espalier_project_get_dataset (f->project) == spiral);
  g_assert_true (espalier_data_page_get_dataset (f->page) == spiral);
  g_assert_cmpstr (espalier_data_page_get_preview_kind (f->page), ==, "points");
  g_assert_nonnull (espalier_data_page_get_error_text (f->page));
  g_assert_nonnull (strstr (espalier_data_page_get_error_text (f->page), "bad.csv"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), espalier_data_page_get_error_text (f->page)));
  screenshot (f, "data-page-error");

  /* A truncated IDX file: the same. */
  bad_idx = write_file (f, "bad-images-idx3-ubyte", (const char *) idx, sizeof idx);
  load_and_wait (f, bad_idx, &options, 20000);
  g_assert_true (espalier_project_get_dataset (f->project) == spiral);
  g_assert_nonnull (espalier_data_page_get_error_text (f->page));
  g_assert_nonnull (strstr (espalier_data_page_get_error_text (f->page), "bad-images-idx3-ubyte"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), espalier_data_page_get_error_text (f->page)));

  /* A good load clears the error. */
  load_and_wait (f, "moons:n=200,noise=0.1,seed=2", &options, 20000);
  g_assert_null (espalier_data_page_get_error_text (f->page));
  g_assert_cmpstr (espalier_dataset_get_name (espalier_project_get_dataset (f->project)), ==, "moons");
}

static void
test_csv_ffill (Fixture       *f,
                gconstpointer  data)
{
  static const char *species[] = { "setosa", "versicolor", "virginica" };
  g_autoptr(GString) csv = g_string_new ("sepal_length,sepal_width,petal_length,petal_width,species\n");
  g_autofree char *path = NULL;
  EspalierLoadOptions options;
  EspalierDataset *dataset;
  GtkColumnView *table;
  GListModel *columns;

  /* 60 rows, two of them with one missing cell each. */
  for (guint i = 0; i < 60; i++)
    {
      guint k = i % 3;

      if (i == 4)
        g_string_append_printf (csv, "5.1,,1.4,0.2,%s\n", species[k]);
      else if (i == 9)
        g_string_append_printf (csv, ",3.0,4.7,1.4,%s\n", species[k]);
      else
        g_string_append_printf (csv, "%.1f,%.1f,%.1f,%.1f,%s\n",
                                4.6 + k * 0.9 + (i % 5) * 0.1, 3.4 - k * 0.3 + (i % 4) * 0.1,
                                1.4 + k * 2.1 + (i % 3) * 0.2, 0.2 + k * 0.9 + (i % 2) * 0.1,
                                species[k]);
    }
  path = write_file (f, "iris-like.csv", csv->str, (gssize) csv->len);

  no_cache_options (&options);
  options.ffill = TRUE;
  load_and_wait (f, path, &options, 20000);

  dataset = espalier_project_get_dataset (f->project);
  g_assert_nonnull (dataset);
  g_assert_cmpuint (espalier_dataset_get_n_rows (dataset), ==, 60);
  g_assert_cmpuint (espalier_dataset_get_n_classes (dataset), ==, 3);
  g_assert_true (espalier_project_get_load_options (f->project)->ffill);
  g_assert_cmpstr (espalier_data_page_get_preview_kind (f->page), ==, "table");

  /* # + 4 features + label, the first 60 rows. */
  table = espalier_data_page_get_table (f->page);
  columns = gtk_column_view_get_columns (table);
  g_assert_cmpuint (g_list_model_get_n_items (columns), ==, 6);
  {
    g_autoptr(GtkColumnViewColumn) column = g_list_model_get_item (columns, 1);

    g_assert_cmpstr (gtk_column_view_column_get_title (column), ==, "sepal_length");
  }
  g_assert_cmpuint (g_list_model_get_n_items (G_LIST_MODEL (gtk_column_view_get_model (table))), ==, 60);

  /* The forward-fill step says what it did; the filled cell shows the value above. */
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "forward-fill: 2 cells filled"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "setosa"));
  g_assert_true (wait_for_label (f, "42 / 6 / 12"));
  g_assert_true (gtk_widget_get_mapped (GTK_WIDGET (espalier_data_page_get_class_chart (f->page))));
  screenshot (f, "data-page-csv");
}

static void
test_fashion_mnist (Fixture       *f,
                    gconstpointer  data)
{
  EspalierLoadOptions options;
  EspalierDataset *dataset;
  EspalierImageGrid *grid;

  if (!espalier_dataset_fashion_mnist_available ())
    {
      g_test_skip ("Fashion-MNIST is not installed (dataset-fashion-mnist)");
      return;
    }
  no_cache_options (&options);
  load_and_wait (f, "fashion-mnist", &options, 120000);

  dataset = espalier_project_get_dataset (f->project);
  g_assert_nonnull (dataset);
  g_assert_cmpuint (espalier_dataset_get_n_rows (dataset), ==, 70000);
  g_assert_cmpstr (espalier_data_page_get_preview_kind (f->page), ==, "images");
  grid = ESPALIER_IMAGE_GRID (espalier_data_page_get_image_grid (f->page));
  g_assert_true (gtk_widget_get_mapped (GTK_WIDGET (grid)));
  g_assert_cmpuint (espalier_image_grid_get_n_images (grid), ==, 64);
  g_assert_cmpstr (espalier_image_grid_get_label (grid, 0), ==,
                   espalier_dataset_get_class_name (dataset, (guint) espalier_dataset_get_labels (dataset)[0]));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "28 × 28"));
  g_assert_true (wait_for_label (f, "54000 / 6000 / 10000"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "First 64 of 70000 images"));
  screenshot (f, "data-page-fashion-mnist");
}

static void
test_replace_running_load (Fixture       *f,
                           gconstpointer  data)
{
  EspalierLoadOptions options;

  /* A long load replaced by a short one: only the short one's result lands. */
  no_cache_options (&options);
  espalier_data_page_load (f->page, "spiral:n=3000000,arms=3", &options);
  load_and_wait (f, "xor:n=100", &options, 60000);
  g_assert_cmpstr (espalier_dataset_get_name (espalier_project_get_dataset (f->project)), ==, "xor");
  gui_test_iterate (500);
  g_assert_cmpstr (espalier_dataset_get_name (espalier_project_get_dataset (f->project)), ==, "xor");
  g_assert_null (espalier_data_page_get_error_text (f->page));
}

int
main (int   argc,
      char *argv[])
{
  gui_test_init (&argc, &argv);

  g_test_add ("/data-page/empty", Fixture, NULL, fixture_set_up, test_empty, fixture_tear_down);
  g_test_add ("/data-page/spiral-then-bad-files", Fixture, NULL,
              fixture_set_up, test_spiral_then_bad_files, fixture_tear_down);
  g_test_add ("/data-page/csv-ffill", Fixture, NULL, fixture_set_up, test_csv_ffill, fixture_tear_down);
  g_test_add ("/data-page/fashion-mnist", Fixture, NULL,
              fixture_set_up, test_fashion_mnist, fixture_tear_down);
  g_test_add ("/data-page/replace-running-load", Fixture, NULL,
              fixture_set_up, test_replace_running_load, fixture_tear_down);
  return g_test_run ();
}
