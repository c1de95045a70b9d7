/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-app.c: the application end to end, as a user drives it: the window opens on
 * its default project, a spiral set is chosen, two epochs are trained with the loss
 * chart and the decision boundary live, the project is saved and opened again with the
 * same curves; every page is screenshot; shortcuts and the unsaved-changes state work.
 * Run under Xvfb. */
#include "config.h"

#include <glib/gstdio.h>
#include <math.h>

#include "espalier-application.h"
#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-data-page.h"
#include "espalier-train-page.h"
#include "espalier-window.h"
#include "gui-test-util.h"

static const char *pages[] = { "data", "model", "train", "profile", "optimize", "export" };

typedef struct {
  EspalierApplication *app;
  EspalierWindow      *window;
  char                *tmpdir;
} Fixture;

static gboolean
dataset_is (gpointer data)
{
  gpointer *args = data;
  EspalierProject *project = espalier_window_get_project (args[0]);
  EspalierDataset *dataset = espalier_project_get_dataset (project);

  return dataset != NULL && g_str_has_prefix (espalier_dataset_get_source (dataset), args[1]);
}

static gboolean
not_training (gpointer data)
{
  return !espalier_train_page_get_training (data);
}

static EspalierProject *old_project;

static gboolean
project_saved (gpointer data)
{
  return !espalier_project_get_modified (data);
}

static gboolean
project_replaced (gpointer data)
{
  return espalier_window_get_project (data) != old_project;
}

static gboolean
has_variant (gpointer data)
{
  EspalierWindow *window = data;
  EspalierProject *project = espalier_window_get_project (window);

  return g_list_model_get_n_items (espalier_project_get_variants (project)) > 0;
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  g_autoptr(GError) error = NULL;

  f->tmpdir = g_dir_make_tmp ("espalier-app-XXXXXX", &error);
  g_assert_no_error (error);
  f->app = espalier_application_new ();
  g_application_set_flags (G_APPLICATION (f->app), G_APPLICATION_NON_UNIQUE);
  g_application_register (G_APPLICATION (f->app), NULL, &error);
  g_assert_no_error (error);
  f->window = espalier_window_new (ADW_APPLICATION (f->app));
  gtk_window_set_default_size (GTK_WINDOW (f->window), 1400, 900);
  gtk_window_present (GTK_WINDOW (f->window));
  while (!gtk_widget_get_mapped (GTK_WIDGET (f->window)))
    g_main_context_iteration (NULL, TRUE);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  g_autoptr(GDir) dir = g_dir_open (f->tmpdir, 0, NULL);
  const char *name;

  if (f->window != NULL)
    {
      EspalierProject *project = espalier_window_get_project (f->window);

      GList *toplevels = gtk_window_list_toplevels ();

      /* Dialogs first (the unsaved-changes question is transient for the window). */
      for (GList *l = toplevels; l; l = l->next)
        if (l->data != (gpointer) f->window)
          gtk_window_destroy (l->data);
      g_list_free (toplevels);
      espalier_project_set_modified (project, FALSE);
      g_object_ref (f->window);
      gtk_window_destroy (GTK_WINDOW (f->window));
      gui_test_iterate (50);
      g_assert_finalize_object (f->window);
    }
  g_application_quit (G_APPLICATION (f->app));
  g_object_unref (f->app);
  while (dir && (name = g_dir_read_name (dir)))
    {
      g_autofree char *path = g_build_filename (f->tmpdir, name, NULL);
      g_unlink (path);
    }
  g_rmdir (f->tmpdir);
  g_free (f->tmpdir);
}

/* Points of the first line layer whose series is titled like `title`. */
static guint
loss_points (EspalierTrainPage *page,
             guint             *n_layers_out)
{
  EspalierChart *chart = espalier_train_page_get_loss_chart (page);
  guint n = 0, n_layers = espalier_chart_get_n_layers (chart);

  for (guint i = 0; i < n_layers; i++)
    {
      EspalierChartLayer *layer = espalier_chart_get_layer (chart, i);

      if (ESPALIER_IS_LINE_LAYER (layer))
        n = MAX (n, espalier_series_get_n_points (espalier_line_layer_get_series (ESPALIER_LINE_LAYER (layer))));
    }
  if (n_layers_out)
    *n_layers_out = n_layers;
  return n;
}

static void
test_train_save_open (Fixture       *f,
                      gconstpointer  data)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  EspalierDataPage *data_page = ESPALIER_DATA_PAGE (espalier_window_get_page_widget (f->window, "data"));
  EspalierTrainPage *train_page = ESPALIER_TRAIN_PAGE (espalier_window_get_page_widget (f->window, "train"));
  EspalierTrainOptions opts;
  g_autoptr(GFile) file = NULL;
  g_autofree char *path = g_build_filename (f->tmpdir, "spiral.espalier", NULL);
  g_autoptr(GArray) history = NULL;
  gpointer args[2] = { f->window, (gpointer) "spiral" };
  EspalierRun *run;
  guint points;

  /* The window opens on its default project with the reference MLP. */
  g_assert_nonnull (project);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (espalier_project_get_model_doc (project)), >, 0);

  /* Choose the spiral set. */
  espalier_data_page_load (data_page, "spiral:n=600,arms=3,noise=0.2,seed=3", NULL);
  g_assert_true (gui_test_wait_until (dataset_is, args, 30000));
  gui_test_iterate (100);

  /* Train two epochs, from the shortcut's action. */
  opts = *espalier_project_get_train_options (project);
  opts.epochs = 2;
  opts.patience = 0;
  espalier_project_set_train_options (project, &opts);
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.train", NULL);
  g_assert_cmpstr (espalier_window_get_page (f->window), ==, "train");
  g_assert_true (gui_test_wait_until (not_training, train_page, 120000));
  g_assert_true (gui_test_wait_until (has_variant, f->window, 60000));
  gui_test_iterate (200);

  points = loss_points (train_page, NULL);
  g_assert_cmpuint (points, >=, 2);
  g_assert_cmpuint (espalier_train_page_get_boundary_updates (train_page), >, 0);
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (project)), ==, 1);
  run = g_list_model_get_item (espalier_project_get_runs (project), 0);
  history = g_array_ref (espalier_run_get_history (run));
  g_object_unref (run);
  g_assert_cmpuint (history->len, ==, 2);
  g_assert_true (espalier_project_get_modified (project));

  /* A screenshot of every page. */
  for (guint i = 0; i < G_N_ELEMENTS (pages); i++)
    {
      g_autofree char *name = g_strconcat ("app-", pages[i], NULL);
      g_autofree char *shot = NULL;

      espalier_window_show_page (f->window, pages[i]);
      gui_test_iterate (150);
      shot = gui_test_screenshot (GTK_WIDGET (f->window), name);
      g_assert_nonnull (shot);
      g_test_message ("screenshot: %s", shot);
    }

  /* Save, then open it again in the same window: the same curves come back. */
  file = g_file_new_for_path (path);
  espalier_window_save_to (f->window, file);
  g_assert_true (gui_test_wait_until (project_saved, project, 30000));
  g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
  g_assert_cmpstr (espalier_project_get_title (project), ==, "spiral");

  espalier_window_open_file (f->window, file);
  old_project = project;
  g_assert_true (gui_test_wait_until (project_replaced, f->window, 30000));
  project = espalier_window_get_project (f->window);
  g_assert_true (gui_test_wait_until (dataset_is, args, 30000));
  gui_test_iterate (200);
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (project)), ==, 1);
  run = g_list_model_get_item (espalier_project_get_runs (project), 0);
  {
    GArray *reopened = espalier_run_get_history (run);

    g_assert_cmpuint (reopened->len, ==, history->len);
    for (guint i = 0; i < history->len; i++)
      {
        EspalierEpochRecord *a = &g_array_index (history, EspalierEpochRecord, i);
        EspalierEpochRecord *b = &g_array_index (reopened, EspalierEpochRecord, i);

        g_assert_cmpfloat (a->train_loss, ==, b->train_loss);
        g_assert_cmpfloat (a->val_accuracy, ==, b->val_accuracy);
      }
  }
  g_object_unref (run);
  g_assert_cmpuint (loss_points (train_page, NULL), ==, points);
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (project)), >=, 1);
  g_assert_false (espalier_project_get_modified (project));
}

static void
test_shortcuts_and_undo (Fixture       *f,
                         gconstpointer  data)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  guint n = espalier_model_doc_get_n_layers (doc);
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_DROPOUT);

  /* Alt+N switches pages through win.show-page. */
  for (guint i = 0; i < G_N_ELEMENTS (pages); i++)
    {
      gtk_widget_activate_action (GTK_WIDGET (f->window), "win.show-page", "s", pages[i]);
      g_assert_cmpstr (espalier_window_get_page (f->window), ==, pages[i]);
    }

  /* An edit marks the project modified and the window's undo reverts it. */
  g_assert_false (espalier_project_get_modified (project));
  espalier_model_doc_insert (doc, 1, &spec);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, n + 1);
  g_assert_true (espalier_project_get_modified (project));
  g_assert_true (g_str_has_prefix (gtk_window_get_title (GTK_WINDOW (f->window)), "•"));
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.undo", NULL);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, n);
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.redo", NULL);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, n + 1);

  /* Closing with unsaved changes asks first: the window stays, a question is shown. */
  gtk_window_close (GTK_WINDOW (f->window));
  gui_test_iterate (100);
  g_assert_true (gtk_widget_get_visible (GTK_WIDGET (f->window)));
  {
    GList *toplevels = gtk_window_list_toplevels ();
    gboolean asked = FALSE;

    for (GList *l = toplevels; l; l = l->next)
      asked |= ADW_IS_MESSAGE_DIALOG (l->data) && gtk_widget_get_visible (l->data);
    g_list_free (toplevels);
    g_assert_true (asked);
  }
}

static void
test_bad_project_file (Fixture       *f,
                       gconstpointer  data)
{
  EspalierProject *before = espalier_window_get_project (f->window);
  g_autofree char *path = g_build_filename (f->tmpdir, "broken.espalier", NULL);
  g_autoptr(GFile) file = NULL;

  g_assert_true (g_file_set_contents (path, "{ \"format\": \"espalier-project\", \"version\": ", -1, NULL));
  file = g_file_new_for_path (path);
  espalier_window_open_file (f->window, file);
  gui_test_iterate (500);
  /* The error is shown; the open project is untouched. */
  g_assert_true (espalier_window_get_project (f->window) == before);
}

int
main (int   argc,
      char *argv[])
{
  /* Without Fashion-MNIST, the default project is the spiral set (fast to train). */
  g_setenv ("ESPALIER_FASHION_MNIST_DIR", "/nonexistent", TRUE);
  gui_test_init (&argc, &argv);

  g_test_add ("/app/train-save-open", Fixture, NULL, fixture_set_up, test_train_save_open, fixture_tear_down);
  g_test_add ("/app/shortcuts-undo", Fixture, NULL, fixture_set_up, test_shortcuts_and_undo, fixture_tear_down);
  g_test_add ("/app/bad-project-file", Fixture, NULL, fixture_set_up, test_bad_project_file, fixture_tear_down);
  return g_test_run ();
}
