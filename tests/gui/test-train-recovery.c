/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-train-recovery.c: the Train page keeps the last good state. A loss that turns
 * NaN stops the run with the step and the layer in the page's message area, and the
 * project keeps the weights of the last good state (here the start: the data holds an
 * infinity on every row, so one of the first steps fails). A checkpoint left behind by a run
 * that was killed is offered as "Resume training from step S (epoch E)?"; Resume
 * continues the run from it, and it ends with the weights of a run that was never
 * interrupted, and with every epoch's record; Discard deletes it. Screenshots go to the
 * screenshot directory. */
#include "config.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "espalier-checkpoint.h"
#include "espalier-project.h"
#include "espalier-train-page.h"
#include "gui-test-util.h"

static char *cache_dir;   /* XDG_CACHE_HOME of this test */

static char *
unsaved_checkpoint (void)
{
  /* the page's rule for a project not saved yet */
  return g_build_filename (cache_dir, "espalier", "unsaved", "train.ckpt", NULL);
}

static gboolean
keep_awake (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

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

/* The button under widget whose label is label. */
static GtkWidget *
find_button (GtkWidget  *widget,
             const char *label)
{
  if (GTK_IS_BUTTON (widget) && g_strcmp0 (gtk_button_get_label (GTK_BUTTON (widget)), label) == 0)
    return widget;
  for (GtkWidget *c = gtk_widget_get_first_child (widget); c != NULL;
       c = gtk_widget_get_next_sibling (c))
    {
      GtkWidget *found = find_button (c, label);

      if (found != NULL)
        return found;
    }
  return NULL;
}

static EspalierProject *
project_with_epochs (guint epochs)
{
  EspalierProject *project = gui_test_spiral_project ();
  EspalierTrainOptions o = *espalier_project_get_train_options (project);

  o.epochs = epochs;
  o.batch_size = 16;
  o.seed = 7;
  espalier_project_set_train_options (project, &o);
  return project;
}

static void
test_nan (void)
{
  EspalierProject *project = project_with_epochs (3);
  EspalierDataset *ds = espalier_project_get_dataset (project);
  float *x = (float *) espalier_dataset_get_f32 (ds);   /* the project's own copy */
  guint D = espalier_dataset_get_row_size (ds);
  EspalierTrainPage *page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  GtkWindow *window;
  g_autoptr(GError) error = NULL;
  g_autofree char *ck = unsaved_checkpoint ();
  EsModel *start, *model;
  GtkWidget *message;

  for (guint r = 0; r < espalier_dataset_get_n_rows (ds); r++)
    x[(gsize) r * D] = INFINITY;
  start = espalier_model_doc_build (espalier_project_get_model_doc (project),
                                    espalier_project_get_train_options (project)->seed, &error);
  g_assert_no_error (error);
  espalier_train_page_set_project (page, project);
  window = gui_test_window_new (GTK_WIDGET (page), 1500, 950);
  espalier_train_page_start (page);
  g_assert_true (wait_for (not_training, page, 60000));
  gui_test_iterate (50);

  /* The first layer takes the infinity in: its outputs go bad, or (Tanh after it
   * saturates them) its weights after the first update. */
  message = gui_test_find_label (GTK_WIDGET (page), "Training stopped at step");
  g_assert_nonnull (message);
  g_test_message ("%s", gtk_label_get_text (GTK_LABEL (message)));
  g_assert_nonnull (strstr (gtk_label_get_text (GTK_LABEL (message)), "(epoch 1)"));
  g_assert_nonnull (strstr (gtk_label_get_text (GTK_LABEL (message)), "layer 1 (dense)"));
  g_assert_nonnull (strstr (gtk_label_get_text (GTK_LABEL (message)),
                            "weights of step 0, the last good state"));
  /* the project keeps the restored, finite weights: the run's start */
  model = espalier_project_get_model (project);
  g_assert_nonnull (model);
  g_assert_cmpint (es_model_n_params (model), ==, es_model_n_params (start));
  g_assert_true (memcmp (es_model_params_const (model), es_model_params_const (start),
                         es_model_n_params (start) * sizeof (float)) == 0);
  /* the run ended in order: no checkpoint left to offer */
  g_assert_false (g_file_test (ck, G_FILE_TEST_EXISTS));
  gui_test_save_screenshot (GTK_WIDGET (window), "train-recovery-nan", 100);
  es_model_free (start);
  gui_test_tear_down_page (window, page, project, NULL);
}

typedef struct {
  GCancellable *cancel;
  guint         at_epoch;
} Stopper;

static void
stop_in_epoch (const EspalierProgress *p,
               gpointer                data)
{
  Stopper *s = data;

  if (p->kind == ESPALIER_PROGRESS_STEP && p->epoch >= s->at_epoch)
    g_cancellable_cancel (s->cancel);
}

/* Train the project's model as the page would, in this process; with stopper, stopped
 * in its epoch leaving a checkpoint every 5 steps at path, as a killed run does. */
static EsModel *
train_like_the_page (EspalierProject *project,
                     Stopper         *stopper,
                     const char      *path)
{
  g_autoptr(GError) error = NULL;
  const EspalierTrainOptions *o = espalier_project_get_train_options (project);
  EsModel *m = espalier_model_doc_build (espalier_project_get_model_doc (project), o->seed, &error);
  g_autoptr(EspalierTrainer) tr = NULL;
  gboolean ok;

  g_assert_no_error (error);
  tr = espalier_trainer_new (espalier_project_get_dataset (project), m, o);
  if (path != NULL)
    espalier_trainer_set_checkpoint (tr, path, 5);
  ok = espalier_trainer_run (tr, stopper ? stopper->cancel : NULL,
                             stopper ? stop_in_epoch : NULL, stopper, &error);
  if (stopper != NULL)
    {
      g_assert_false (ok);
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    }
  else
    g_assert_true (ok);
  return m;
}

static void
test_leftover_resume (void)
{
  EspalierProject *project = project_with_epochs (6);
  EspalierTrainPage *page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  g_autofree char *ck_path = unsaved_checkpoint ();
  g_autofree char *dir = g_path_get_dirname (ck_path);
  g_autofree char *expect = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierCheckpoint) ck = NULL;
  Stopper stop = { g_cancellable_new (), 3 };
  EsModel *straight, *stopped, *model;
  GtkWindow *window;
  GtkWidget *offer, *resume;
  EspalierRun *run;
  GArray *history;

  straight = train_like_the_page (project, NULL, NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  stopped = train_like_the_page (project, &stop, ck_path);
  ck = espalier_checkpoint_load (ck_path, &error);
  g_assert_no_error (error);
  expect = g_strdup_printf ("Resume training from step %lld (epoch %u)?",
                            (long long) ck->info.step, ck->info.epoch);
  g_test_message ("%s", expect);

  espalier_train_page_set_project (page, project);
  window = gui_test_window_new (GTK_WIDGET (page), 1500, 950);
  gui_test_iterate (50);
  offer = gui_test_find_label (GTK_WIDGET (page), expect);
  g_assert_nonnull (offer);
  gui_test_save_screenshot (GTK_WIDGET (window), "train-recovery-offer", 100);
  resume = find_button (GTK_WIDGET (page), "_Resume");
  g_assert_nonnull (resume);
  g_signal_emit_by_name (resume, "clicked");
  g_assert_true (espalier_train_page_get_training (page));
  g_assert_false (gtk_widget_get_mapped (offer));
  g_assert_true (wait_for (not_training, page, 60000));
  gui_test_iterate (50);
  gui_test_save_screenshot (GTK_WIDGET (window), "train-recovery-resumed", 100);

  /* the run has every epoch, the first ones from the checkpoint */
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (project)), ==, 1);
  run = g_list_model_get_item (espalier_project_get_runs (project), 0);
  history = espalier_run_get_history (run);
  g_assert_cmpuint (history->len, ==, 6);
  for (guint i = 0; i < history->len; i++)
    g_assert_cmpuint (g_array_index (history, EspalierEpochRecord, i).epoch, ==, i + 1);
  for (guint i = 0; i < ck->history->len; i++)
    g_assert_cmpfloat (g_array_index (history, EspalierEpochRecord, i).train_loss, ==,
                       g_array_index (ck->history, EspalierEpochRecord, i).train_loss);
  g_object_unref (run);
  /* and it continued where the checkpoint left off: the weights of a run never stopped */
  model = espalier_project_get_model (project);
  g_assert_nonnull (model);
  g_assert_true (memcmp (es_model_params_const (model), es_model_params_const (straight),
                         es_model_n_params (straight) * sizeof (float)) == 0);
  g_assert_false (g_file_test (ck_path, G_FILE_TEST_EXISTS));

  es_model_free (straight);
  es_model_free (stopped);
  g_object_unref (stop.cancel);
  gui_test_tear_down_page (window, page, project, NULL);
}

static void
test_leftover_discard (void)
{
  EspalierProject *project = project_with_epochs (4);
  EspalierTrainPage *page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  g_autofree char *ck_path = unsaved_checkpoint ();
  g_autofree char *dir = g_path_get_dirname (ck_path);
  Stopper stop = { g_cancellable_new (), 2 };
  GtkWindow *window;
  GtkWidget *discard;

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  es_model_free (train_like_the_page (project, &stop, ck_path));
  g_assert_true (g_file_test (ck_path, G_FILE_TEST_EXISTS));
  espalier_train_page_set_project (page, project);
  window = gui_test_window_new (GTK_WIDGET (page), 1500, 950);
  gui_test_iterate (50);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (page), "Resume training from step"));
  discard = find_button (GTK_WIDGET (page), "_Discard");
  g_assert_nonnull (discard);
  g_signal_emit_by_name (discard, "clicked");
  gui_test_iterate (50);
  g_assert_null (gui_test_find_label (GTK_WIDGET (page), "Resume training from step"));
  g_assert_false (g_file_test (ck_path, G_FILE_TEST_EXISTS));
  g_object_unref (stop.cancel);
  gui_test_tear_down_page (window, page, project, NULL);
}

/* Two pages on unsaved projects hold different checkpoint slots, so one run never
 * overwrites or deletes the other's; the slot a page held is free again once it is
 * gone (as after a crash), and the next page takes it and finds its leftover. */
static void
test_slots (void)
{
  EspalierProject *p1 = project_with_epochs (4), *p2 = project_with_epochs (4);
  EspalierTrainPage *page1 = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  EspalierTrainPage *page2 = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  EspalierTrainPage *page3;
  GtkWindow *window;
  g_autofree char *first = unsaved_checkpoint ();
  g_autofree char *path1 = NULL, *path2 = NULL, *path3 = NULL;
  Stopper stop = { g_cancellable_new (), 2 };

  espalier_train_page_set_project (page1, p1);
  espalier_train_page_set_project (page2, p2);
  path1 = espalier_train_page_get_checkpoint_path (page1);
  path2 = espalier_train_page_get_checkpoint_path (page2);
  g_test_message ("slots: %s and %s", path1, path2);
  g_assert_cmpstr (path1, ==, first);
  g_assert_cmpstr (path2, !=, path1);
  /* the same page keeps its slot */
  g_free (espalier_train_page_get_checkpoint_path (page1));
  g_assert_true (g_str_has_suffix (path2, "unsaved-1" G_DIR_SEPARATOR_S "train.ckpt"));

  /* page1 goes away with a checkpoint left in its slot, as a killed run leaves it */
  es_model_free (train_like_the_page (p1, &stop, path1));
  g_assert_true (g_file_test (path1, G_FILE_TEST_EXISTS));
  g_assert_finalize_object (page1);
  page3 = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  espalier_train_page_set_project (page3, p1);
  path3 = espalier_train_page_get_checkpoint_path (page3);
  g_assert_cmpstr (path3, ==, path1);
  window = gui_test_window_new (GTK_WIDGET (page3), 1500, 950);
  gui_test_iterate (50);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (page3), "Resume training from step"));
  g_unlink (path3);

  g_object_unref (stop.cancel);
  g_assert_finalize_object (page2);
  g_assert_finalize_object (p2);
  gui_test_tear_down_page (window, page3, p1, NULL);
}

int
main (int argc, char **argv)
{
  int status;

  cache_dir = g_dir_make_tmp ("espalier-recovery-XXXXXX", NULL);
  g_assert_nonnull (cache_dir);
  g_setenv ("XDG_CACHE_HOME", cache_dir, TRUE);
  gui_test_init (&argc, &argv);
  g_test_add_func ("/gui/train-recovery/nan", test_nan);
  g_test_add_func ("/gui/train-recovery/leftover-resume", test_leftover_resume);
  g_test_add_func ("/gui/train-recovery/leftover-discard", test_leftover_discard);
  g_test_add_func ("/gui/train-recovery/slots", test_slots);
  status = g_test_run ();
  {
    g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", cache_dir);

    if (system (cmd) != 0)
      g_printerr ("could not remove %s\n", cache_dir);
  }
  g_free (cache_dir);
  return status;
}
