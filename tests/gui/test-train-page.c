/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-train-page.c: the Train page in a real window on a spiral set with the
 * playground model: a two-epoch run that ends with its curves, a drawn decision
 * boundary, a run with two records and a measured baseline variant; the playground's
 * own options (no held-out rows) measured on the training rows; a long run stopped
 * mid-way (the window keeps answering, the run is kept unfinished, the page can start
 * again); pause and resume continuing the epoch count, and stop while paused; an
 * invalid model and a missing dataset refused with the reason on the page; and a saved
 * project reopening with its charts. The Done line says what the latency is: the
 * trained model's batch-1 inference on one CPU thread. Screenshots during and after
 * training go to the screenshot directory. */
#include "config.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "espalier-chart-layers.h"
#include "espalier-device.h"
#include "espalier-generate.h"
#include "espalier-train-page.h"
#include "gui-test-util.h"

#define SPIRAL     "spiral:n=300,arms=3,noise=0.2,seed=1"
/* Long runs use more rows: epochs of the small set take well under a millisecond, and
 * the worker can finish 100000 of them before a slow (sanitized) main loop has drawn
 * the first few. */
#define SPIRAL_BIG "spiral:n=3000,arms=3,noise=0.2,seed=1"

typedef struct {
  EspalierProject   *project;
  EspalierTrainPage *page;
  GtkWindow         *window;
} Fixture;

static void
set_epochs (EspalierProject *project,
            guint            epochs)
{
  EspalierTrainOptions opts = *espalier_project_get_train_options (project);

  opts.epochs = epochs;
  espalier_project_set_train_options (project, &opts);
}

static EspalierProject *
spiral_project (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (SPIRAL, &error);
  EspalierProject *project = espalier_project_new ();
  EspalierTrainOptions opts;

  g_assert_no_error (error);
  espalier_project_set_dataset (project, ds, NULL);
  espalier_train_options_init (&opts);
  espalier_model_doc_apply_template (espalier_project_get_model_doc (project), "playground",
                                     &opts, &error);
  g_assert_no_error (error);
  /* The playground trains on every row; hold some out to see validation and test. */
  opts.val_fraction = 0.2;
  opts.test_fraction = 0.2;
  espalier_project_set_train_options (project, &opts);
  g_assert_true (espalier_model_doc_is_valid (espalier_project_get_model_doc (project)));
  return project;
}

static void
use_big_set (Fixture *f)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (SPIRAL_BIG, &error);

  g_assert_no_error (error);
  espalier_project_set_dataset (f->project, ds, NULL);
  g_assert_true (espalier_model_doc_is_valid (espalier_project_get_model_doc (f->project)));
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  f->project = spiral_project ();
  f->page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  espalier_train_page_set_project (f->page, f->project);
  f->window = gui_test_window_new (GTK_WIDGET (f->page), 1500, 950);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_window_destroy (f->window);
  g_assert_finalize_object (f->page);
  g_assert_finalize_object (f->project);
}

static gboolean
keep_awake (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* Run the main loop for ms milliseconds. Unlike gui_test_iterate this does not wait for
 * the loop to fall idle: while training it may never do so on a slow (sanitized) build,
 * where drawing a frame takes longer than the worker needs for its next reports. */
static void
spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;
  guint tick = g_timeout_add (5, keep_awake, NULL);

  while (g_get_monotonic_time () < end)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (tick);
}

/* Run the main loop until condition(data) or timeout_ms; returns the condition. */
static gboolean
wait_for (gboolean (*condition) (gpointer data),
          gpointer  data,
          guint     timeout_ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  guint tick = g_timeout_add (5, keep_awake, NULL);
  gboolean done;

  while (!(done = condition (data)) && g_get_monotonic_time () < end)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (tick);
  return done;
}

static gboolean
not_training (gpointer data)
{
  return !espalier_train_page_get_training (data);
}

static gboolean
paused (gpointer data)
{
  return espalier_train_page_get_paused (data);
}

/* Points of layer i of the loss chart (0: training loss per epoch). */
static guint
loss_points (EspalierTrainPage *page,
             guint              i)
{
  EspalierChart *chart = espalier_train_page_get_loss_chart (page);
  EspalierChartLayer *layer = espalier_chart_get_layer (chart, i);

  return espalier_series_get_n_points (espalier_line_layer_get_series (ESPALIER_LINE_LAYER (layer)));
}

typedef struct {
  EspalierTrainPage *page;
  guint              n;
} AtLeast;

static gboolean
epochs_at_least (gpointer data)
{
  AtLeast *a = data;

  return loss_points (a->page, 0) >= a->n;
}

static gboolean
boundary_drawn (gpointer data)
{
  return espalier_train_page_get_boundary_updates (data) > 0;
}

/* How long the main loop went without running a 10 ms timer: the window's response. */
typedef struct {
  gint64 last;
  gint64 max_gap;
} Watch;

static gboolean
watch_tick (gpointer data)
{
  Watch *w = data;
  gint64 now = g_get_monotonic_time ();

  if (w->last > 0)
    w->max_gap = MAX (w->max_gap, now - w->last);
  w->last = now;
  return G_SOURCE_CONTINUE;
}

/* A screenshot of the window. While training the window is redrawn all the time and
 * its render node is missing between an invalidation and the next frame: try again
 * after a frame. */
static void
screenshot (Fixture    *f,
            const char *name)
{
  g_autofree char *path = NULL;

  for (guint i = 0; i < 200 && path == NULL; i++)
    {
      path = gui_test_screenshot (GTK_WIDGET (f->window), name);
      if (path == NULL)
        spin (5);
    }
  g_assert_nonnull (path);
  g_test_message ("screenshot: %s", path);
}

static void
count_notify (GObject    *object,
              GParamSpec *pspec,
              guint      *count)
{
  (*count)++;
}

/* Two epochs from Start to the end: curves, boundary, run, model and baseline. */
static void
test_train (Fixture       *f,
            gconstpointer  data)
{
  GListModel *runs = espalier_project_get_runs (f->project);
  GListModel *variants = espalier_project_get_variants (f->project);
  g_autoptr(EspalierRun) run = NULL;
  g_autoptr(EspalierVariant) baseline = NULL;
  guint notified = 0;

  set_epochs (f->project, 2);
  g_signal_connect (f->page, "notify::training", G_CALLBACK (count_notify), &notified);
  espalier_train_page_start (f->page);
  g_assert_true (espalier_train_page_get_training (f->page));
  g_assert_cmpuint (notified, >, 0);
  g_signal_handlers_disconnect_by_data (f->page, &notified);

  g_assert_true (wait_for (not_training, f->page, 60000));
  g_assert_true (wait_for (boundary_drawn, f->page, 10000));
  spin (200);
  screenshot (f, "train-page-done");

  g_assert_cmpuint (loss_points (f->page, 0), ==, 2);
  g_assert_cmpuint (loss_points (f->page, 1), ==, 2);   /* validation */
  g_assert_cmpuint (loss_points (f->page, 2), >, 0);    /* running */
  g_assert_cmpuint (espalier_train_page_get_boundary_updates (f->page), >=, 1);

  g_assert_cmpuint (g_list_model_get_n_items (runs), ==, 1);
  run = g_list_model_get_item (runs, 0);
  g_assert_cmpuint (espalier_run_get_history (run)->len, ==, 2);
  g_assert_cmpuint (g_array_index (espalier_run_get_history (run), EspalierEpochRecord, 1).epoch, ==, 2);
  g_assert_true (espalier_run_get_finished (run));
  g_assert_cmpuint (espalier_run_get_test (run)->rows, >, 0);
  g_assert_nonnull (espalier_project_get_model (f->project));

  g_assert_cmpuint (g_list_model_get_n_items (variants), >=, 1);
  baseline = g_list_model_get_item (variants, 0);
  g_assert_cmpstr (espalier_variant_get_name (baseline), ==, "baseline");
  g_assert_true (isfinite (espalier_variant_get_accuracy (baseline)));
  g_assert_cmpfloat (espalier_variant_get_accuracy (baseline), >=, 0);
  g_assert_cmpfloat (espalier_variant_get_accuracy (baseline), <=, 1);
  g_assert_true (isfinite (espalier_variant_get_latency_us (baseline)));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "test accuracy"));

  /* The Done line: where the run trained (the GPU when the default "auto" found one),
   * the test accuracy, then the baseline's latency said for what it is, the trained
   * model's batch-1 inference on one CPU thread, whatever the run trained on. */
  {
    const char *prefix = espalier_cuda_device_count () > 0
                         ? "Done: trained on the GPU; test accuracy " : "Done: test accuracy ";
    GtkWidget *done = gui_test_find_label (GTK_WIDGET (f->page), "Done:");
    g_autofree char *latency = g_strdup_printf ("Inference latency of the trained model on the "
                                                "CPU: %.3g µs per sample (batch 1, one thread).",
                                                espalier_variant_get_latency_us (baseline));
    const char *text;

    g_assert_nonnull (done);
    text = gtk_label_get_label (GTK_LABEL (done));
    g_test_message ("the Done line: %s", text);
    g_assert_true (g_str_has_prefix (text, prefix));
    g_assert_true (g_str_has_suffix (text, latency));
  }

  /* The device rows and the memory plan, at the bottom of the left column. */
  {
    GtkWidget *plan = gui_test_find_label (GTK_WIDGET (f->page), "Memory plan");
    GtkWidget *scroller;
    GtkAdjustment *adj;

    g_assert_nonnull (plan);
    scroller = gtk_widget_get_ancestor (plan, GTK_TYPE_SCROLLED_WINDOW);
    adj = gtk_scrolled_window_get_vadjustment (GTK_SCROLLED_WINDOW (scroller));
    gtk_adjustment_set_value (adj, gtk_adjustment_get_upper (adj));
    spin (100);
    screenshot (f, "train-page-device");
  }
}

/* The playground's own options train on every row: the baseline is measured on them
 * and says so; the run has no test metrics. */
static void
test_all_rows (Fixture       *f,
               gconstpointer  data)
{
  EspalierTrainOptions opts = *espalier_project_get_train_options (f->project);
  GListModel *variants = espalier_project_get_variants (f->project);
  g_autoptr(EspalierRun) run = NULL;
  g_autoptr(EspalierVariant) baseline = NULL;

  opts.val_fraction = 0;
  opts.test_fraction = 0;
  opts.epochs = 2;
  espalier_project_set_train_options (f->project, &opts);
  espalier_train_page_start (f->page);
  g_assert_true (wait_for (not_training, f->page, 60000));
  g_assert_cmpuint (loss_points (f->page, 0), ==, 2);
  g_assert_cmpuint (loss_points (f->page, 1), ==, 0);
  run = g_list_model_get_item (espalier_project_get_runs (f->project), 0);
  g_assert_cmpuint (espalier_run_get_test (run)->rows, ==, 0);
  baseline = g_list_model_get_item (variants, 0);
  g_assert_true (isfinite (espalier_variant_get_accuracy (baseline)));
  g_assert_nonnull (strstr (espalier_variant_get_description (baseline), "training rows"));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "no test split"));
}

/* A long run stopped mid-way: the main loop kept answering, the run is kept unfinished,
 * the project's model is untouched, and the page starts again. */
static void
test_stop (Fixture       *f,
           gconstpointer  data)
{
  GListModel *runs = espalier_project_get_runs (f->project);
  AtLeast three = { f->page, 3 };
  Watch watch = { 0 };
  g_autoptr(EspalierRun) run = NULL;
  g_autoptr(EspalierRun) second = NULL;
  guint tick, records;

  use_big_set (f);
  set_epochs (f->project, 100000);
  espalier_train_page_start (f->page);
  tick = g_timeout_add (10, watch_tick, &watch);
  g_assert_true (wait_for (epochs_at_least, &three, 60000));
  g_assert_true (wait_for (boundary_drawn, f->page, 10000));
  spin (500);
  g_source_remove (tick);
  g_test_message ("longest main-loop gap while training: %.1f ms", watch.max_gap / 1000.0);
  g_assert_cmpint (watch.max_gap, <, 1000 * 1000);   /* generous: test machines are loaded */
  screenshot (f, "train-page-running");

  espalier_train_page_stop (f->page);
  g_assert_true (wait_for (not_training, f->page, 10000));
  g_assert_false (espalier_train_page_get_paused (f->page));
  g_assert_cmpuint (g_list_model_get_n_items (runs), ==, 1);
  run = g_list_model_get_item (runs, 0);
  g_assert_false (espalier_run_get_finished (run));
  records = espalier_run_get_history (run)->len;
  g_assert_cmpuint (records, >=, 3);
  g_assert_cmpuint (records, ==, loss_points (f->page, 0));
  g_assert_null (espalier_project_get_model (f->project));
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (f->project)), ==, 0);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "unfinished"));
  screenshot (f, "train-page-stopped");

  /* Stopping twice, or when idle, does nothing. */
  espalier_train_page_stop (f->page);

  set_epochs (f->project, 1);
  espalier_train_page_start (f->page);
  g_assert_true (wait_for (not_training, f->page, 60000));
  g_assert_cmpuint (g_list_model_get_n_items (runs), ==, 2);
  second = g_list_model_get_item (runs, 1);
  g_assert_cmpstr (espalier_run_get_name (second), ==, "Run 2");
  g_assert_true (espalier_run_get_finished (second));
  g_assert_cmpuint (loss_points (f->page, 0), ==, 1);
}

/* Pause keeps the weights and the epoch count; Resume carries on from them. */
static void
test_pause (Fixture       *f,
            gconstpointer  data)
{
  GListModel *runs = espalier_project_get_runs (f->project);
  AtLeast two = { f->page, 2 };
  AtLeast more;
  g_autoptr(EspalierRun) run = NULL;
  GArray *history;
  guint at_pause;

  use_big_set (f);
  set_epochs (f->project, 100000);
  espalier_train_page_start (f->page);
  g_assert_true (wait_for (epochs_at_least, &two, 60000));
  espalier_train_page_pause (f->page);
  g_assert_true (wait_for (paused, f->page, 10000));
  g_assert_true (espalier_train_page_get_training (f->page));
  /* Progress the worker posted before it paused may still be on its way. */
  spin (300);
  at_pause = loss_points (f->page, 0);
  spin (300);
  g_assert_cmpuint (loss_points (f->page, 0), ==, at_pause);
  g_assert_cmpuint (g_list_model_get_n_items (runs), ==, 0);
  screenshot (f, "train-page-paused");

  espalier_train_page_pause (f->page);   /* resume */
  g_assert_false (espalier_train_page_get_paused (f->page));
  more = (AtLeast) { f->page, at_pause + 2 };
  g_assert_true (wait_for (epochs_at_least, &more, 60000));
  espalier_train_page_stop (f->page);
  g_assert_true (wait_for (not_training, f->page, 10000));

  g_assert_cmpuint (g_list_model_get_n_items (runs), ==, 1);
  run = g_list_model_get_item (runs, 0);
  history = espalier_run_get_history (run);
  g_assert_cmpuint (history->len, >=, at_pause + 2);
  for (guint i = 0; i < history->len; i++)
    g_assert_cmpuint (g_array_index (history, EspalierEpochRecord, i).epoch, ==, i + 1);
}

/* Stop while paused wakes the worker and ends the run. */
static void
test_stop_paused (Fixture       *f,
                  gconstpointer  data)
{
  AtLeast one = { f->page, 1 };

  use_big_set (f);
  set_epochs (f->project, 100000);
  espalier_train_page_start (f->page);
  g_assert_true (wait_for (epochs_at_least, &one, 60000));
  espalier_train_page_pause (f->page);
  g_assert_true (wait_for (paused, f->page, 10000));
  espalier_train_page_stop (f->page);
  g_assert_true (wait_for (not_training, f->page, 10000));
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (f->project)), ==, 1);
}

/* An invalid model, then no dataset: nothing starts and the page says why. */
static void
test_refuse (Fixture       *f,
             gconstpointer  data)
{
  EspalierModelDoc *doc = espalier_project_get_model_doc (f->project);
  g_autoptr(EspalierProject) empty = espalier_project_new ();
  g_autoptr(GError) error = NULL;
  const char *reason;

  /* Five outputs for three classes. */
  g_assert_true (espalier_model_doc_set_spec (doc, "dense:8,relu,dense:5,softmax", &error));
  g_assert_no_error (error);
  g_assert_false (espalier_model_doc_is_valid (doc));
  reason = espalier_model_doc_get_error (doc);
  g_assert_nonnull (reason);
  spin (50);

  espalier_train_page_start (f->page);
  g_assert_false (espalier_train_page_get_training (f->page));
  spin (50);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "Fix it on the Model page"));
  screenshot (f, "train-page-invalid");
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (f->project)), ==, 0);

  espalier_train_page_set_project (f->page, empty);
  espalier_train_page_start (f->page);
  g_assert_false (espalier_train_page_get_training (f->page));
  spin (50);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page), "Data page"));
  espalier_train_page_set_project (f->page, f->project);
}

typedef struct {
  EspalierTrainPage *page;
  guint              before;
} Boundaries;

static gboolean
more_boundaries (gpointer data)
{
  Boundaries *b = data;

  return espalier_train_page_get_boundary_updates (b->page) > b->before;
}

/* A saved project opens with the last run's curves and its model's boundary. */
static void
test_reopen (Fixture       *f,
             gconstpointer  data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("espalier-train-page-XXXXXX", &error);
  g_autofree char *path = g_build_filename (dir, "spiral.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(EspalierProject) reopened = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  Boundaries boundaries;

  g_assert_no_error (error);
  set_epochs (f->project, 3);
  espalier_train_page_start (f->page);
  g_assert_true (wait_for (not_training, f->page, 60000));
  g_assert_true (espalier_project_save (f->project, file, NULL, &error));
  g_assert_no_error (error);

  espalier_train_page_set_project (f->page, NULL);
  g_assert_cmpuint (loss_points (f->page, 0), ==, 0);

  reopened = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  ds = espalier_generate_from_spec (espalier_project_get_dataset_source (reopened), &error);
  g_assert_no_error (error);
  espalier_project_set_dataset (reopened, ds, espalier_project_get_load_options (reopened));
  boundaries = (Boundaries) { f->page, espalier_train_page_get_boundary_updates (f->page) };
  espalier_train_page_set_project (f->page, reopened);
  spin (100);
  g_assert_cmpuint (loss_points (f->page, 0), ==, 3);
  /* The weights come from the saved baseline variant. */
  g_assert_true (wait_for (more_boundaries, &boundaries, 10000));
  screenshot (f, "train-page-reopened");

  espalier_train_page_set_project (f->page, f->project);
  g_unlink (path);
  g_rmdir (dir);
}

int
main (int    argc,
      char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add ("/train-page/train", Fixture, NULL, fixture_set_up, test_train, fixture_tear_down);
  g_test_add ("/train-page/all-rows", Fixture, NULL, fixture_set_up, test_all_rows, fixture_tear_down);
  g_test_add ("/train-page/stop", Fixture, NULL, fixture_set_up, test_stop, fixture_tear_down);
  g_test_add ("/train-page/pause", Fixture, NULL, fixture_set_up, test_pause, fixture_tear_down);
  g_test_add ("/train-page/stop-paused", Fixture, NULL, fixture_set_up, test_stop_paused, fixture_tear_down);
  g_test_add ("/train-page/refuse", Fixture, NULL, fixture_set_up, test_refuse, fixture_tear_down);
  g_test_add ("/train-page/reopen", Fixture, NULL, fixture_set_up, test_reopen, fixture_tear_down);

  return g_test_run ();
}
