/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-window.c: the main window: pages, project actions (new, open, save, recent,
 * import ONNX), the job bar, toasts, shortcuts, the question about unsaved changes, and
 * what goes wrong around a project: a dataset file that is gone (the window asks where it
 * went), a folder that cannot be written (Save As is offered), window state and recent
 * projects in corrupt settings (ignored). */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-application.h"
#include "espalier-data-page.h"
#include "espalier-export-page.h"
#include "espalier-generate.h"
#include "espalier-model-page.h"
#include "espalier-onnx.h"
#include "espalier-optimize.h"
#include "espalier-optimize-page.h"
#include "espalier-profile-page.h"
#include "espalier-split.h"
#include "espalier-templates.h"
#include "espalier-train-page.h"
#include "espalier-window.h"

#define PROJECT_MIME_TYPE "application/x-espalier-project"
#define MAX_RECENT 8
/* The most entries of the settings' recent list looked at: it may hold anything. */
#define MAX_RECENT_SCANNED 64
/* Window sizes taken from the settings; others (0, negative, larger than any screen,
 * from a corrupt or hand-edited settings file) give the defaults. */
#define MIN_WINDOW_SIZE 360
#define MAX_WINDOW_SIZE 16384
#define DEFAULT_WIDTH 1280
#define DEFAULT_HEIGHT 800

typedef void (*ContinueFunc) (EspalierWindow *self, gpointer data);

static void do_close (EspalierWindow *self, gpointer data);
static void ask_missing_dataset (EspalierWindow *self, const GError *error);

struct _EspalierWindow
{
  AdwApplicationWindow  parent_instance;

  EspalierProject      *project;
  GPtrArray            *jobs;              /* EspalierJob, running, newest last */
  EspalierJob          *shown_job;
  gulong                project_notify_id;
  gulong                doc_changed_id;
  gulong                recent_changed_id;   /* on the settings */
  gboolean              close_after_save;
  gboolean              saving;
  gboolean              closing_confirmed;

  /* Template widgets */
  AdwViewSwitcherTitle *switcher_title;
  AdwViewSwitcherBar   *switcher_bar;
  AdwViewStack         *stack;
  AdwToastOverlay      *toast_overlay;
  GtkButton            *train_button;
  GtkRevealer          *job_revealer;
  GtkLabel             *job_title;
  GtkProgressBar       *job_progress;
  GtkLabel             *job_status;
  GtkButton            *job_cancel;
  GMenu                *primary_menu;
  GMenu                *recent_section;
  EspalierDataPage     *data_page;
  EspalierModelPage    *model_page;
  EspalierTrainPage    *train_page;
  EspalierProfilePage  *profile_page;
  EspalierOptimizePage *optimize_page;
  EspalierExportPage   *export_page;
};

G_DEFINE_FINAL_TYPE (EspalierWindow, espalier_window, ADW_TYPE_APPLICATION_WINDOW)

static const char *page_names[] = { "data", "model", "train", "profile", "optimize", "export" };

EspalierWindow *
espalier_window_new (AdwApplication *application)
{
  return g_object_new (ESPALIER_TYPE_WINDOW, "application", application, NULL);
}

/* The project a new window or New starts with: Fashion-MNIST when installed, otherwise
 * the spiral set, with the reference MLP ready to train. */
static EspalierProject *
default_project_new (char **source)
{
  EspalierProject *project = espalier_project_new ();
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  EspalierTrainOptions opts;
  g_autoptr(GError) error = NULL;
  EsShape input;
  guint classes;

  if (espalier_dataset_fashion_mnist_available ())
    {
      *source = g_strdup ("fashion-mnist");
      input = (EsShape) { .rank = 3, .dims = { 1, 28, 28 } };
      classes = 10;
    }
  else
    {
      EspalierGenerateParams params;

      espalier_generate_params_init (&params, ESPALIER_GENERATOR_SPIRAL);
      *source = espalier_generate_params_to_spec (&params);
      input = (EsShape) { .rank = 1, .dims = { 2 } };
      classes = params.k;
    }
  espalier_model_doc_set_input (doc, &input, classes);
  if (espalier_model_doc_apply_template (doc, "mlp", &opts, &error))
    espalier_project_set_train_options (project, &opts);
  else
    g_warning ("The reference MLP does not fit the default data: %s", error->message);
  espalier_model_doc_clear_history (doc);
  espalier_project_set_dataset_source (project, *source, NULL);
  espalier_project_set_modified (project, FALSE);
  return project;
}

/* Jobs ---------------------------------------------------------------------------- */

static void
update_job_bar (EspalierWindow *self)
{
  EspalierJob *job = self->jobs->len > 0 ? g_ptr_array_index (self->jobs, self->jobs->len - 1)
                                         : NULL;
  double fraction;

  self->shown_job = job;
  gtk_revealer_set_reveal_child (self->job_revealer, job != NULL);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "win.cancel-job", job != NULL);
  if (job == NULL)
    return;
  gtk_label_set_label (self->job_title, espalier_job_get_title (job));
  gtk_label_set_label (self->job_status, espalier_job_get_status (job) ? espalier_job_get_status (job) : "");
  fraction = espalier_job_get_fraction (job);
  if (fraction < 0)
    gtk_progress_bar_pulse (self->job_progress);
  else
    gtk_progress_bar_set_fraction (self->job_progress, fraction);
}

static void
on_job_notify (EspalierJob    *job,
               GParamSpec     *pspec,
               EspalierWindow *self)
{
  if (job == self->shown_job)
    update_job_bar (self);
}

static void
on_job_finished (EspalierJob    *job,
                 const GError   *error,
                 EspalierWindow *self)
{
  g_signal_handlers_disconnect_by_data (job, self);
  if (error != NULL)
    {
      AdwMessageDialog *dialog;
      g_autofree char *heading = g_strdup_printf (_("%s Failed"), espalier_job_get_title (job));

      dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (GTK_WINDOW (self), heading,
                                                           error->message));
      adw_message_dialog_add_response (dialog, "close", _("_Close"));
      gtk_window_present (GTK_WINDOW (dialog));
    }
  g_ptr_array_remove (self->jobs, job);
  update_job_bar (self);
}

void
espalier_window_add_job (EspalierWindow *self,
                         EspalierJob    *job)
{
  g_return_if_fail (ESPALIER_IS_WINDOW (self));
  g_return_if_fail (ESPALIER_IS_JOB (job));

  if (!espalier_job_get_running (job) || g_ptr_array_find (self->jobs, job, NULL))
    return;
  g_ptr_array_add (self->jobs, g_object_ref (job));
  g_signal_connect (job, "notify", G_CALLBACK (on_job_notify), self);
  g_signal_connect (job, "finished", G_CALLBACK (on_job_finished), self);
  update_job_bar (self);
}

void
espalier_window_add_toast (EspalierWindow *self,
                           const char     *message)
{
  AdwToast *toast;

  g_return_if_fail (ESPALIER_IS_WINDOW (self));

  toast = adw_toast_new (message);
  adw_toast_set_timeout (toast, 5);
  adw_toast_overlay_add_toast (self->toast_overlay, toast);
}

static void
on_job_cancel_clicked (GtkButton      *button,
                       EspalierWindow *self)
{
  if (self->shown_job != NULL)
    espalier_job_cancel (self->shown_job);
}

/* Title ---------------------------------------------------------------------------- */

static void
update_title (EspalierWindow *self)
{
  EspalierDataset *dataset = espalier_project_get_dataset (self->project);
  const char *title = espalier_project_get_title (self->project);
  g_autofree char *shown = NULL;

  if (espalier_project_get_modified (self->project))
    shown = g_strdup_printf ("• %s", title);
  else
    shown = g_strdup (title);
  adw_view_switcher_title_set_title (self->switcher_title, shown);
  adw_view_switcher_title_set_subtitle (self->switcher_title,
                                        dataset ? espalier_dataset_get_name (dataset) : "");
  gtk_window_set_title (GTK_WINDOW (self), shown);
}

static void
on_project_notify (EspalierProject *project,
                   GParamSpec      *pspec,
                   EspalierWindow  *self)
{
  update_title (self);
}

/* Recent projects: a list in GSettings, the most recent first. (GtkRecentManager's
 * own bookkeeping raises a GLib critical in Debian 12 when it clamps entries by age.) */

static void
rebuild_recent_menu (EspalierWindow *self)
{
  GSettings *settings = espalier_settings_get_default ();
  g_auto(GStrv) uris = settings ? g_settings_get_strv (settings, "recent-projects") : NULL;
  guint shown = 0;

  g_menu_remove_all (self->recent_section);
  /* Only local files that are there: the list may hold anything (a corrupt settings
   * file), and a remote location would block the menu on the network. */
  for (guint i = 0; uris != NULL && uris[i] != NULL && shown < MAX_RECENT
                    && i < MAX_RECENT_SCANNED; i++)
    {
      g_autoptr(GFile) file = NULL;
      g_autofree char *path = NULL;
      g_autofree char *name = NULL;
      g_autoptr(GMenuItem) item = NULL;

      if (!g_str_has_prefix (uris[i], "file:///"))
        continue;
      file = g_file_new_for_uri (uris[i]);
      path = g_file_get_path (file);
      if (path == NULL || !g_file_test (path, G_FILE_TEST_IS_REGULAR))
        continue;
      /* The name in the menu is UTF-8 whatever the file system's encoding. */
      name = g_filename_display_basename (path);
      item = g_menu_item_new (name, NULL);
      g_menu_item_set_action_and_target (item, "win.open-recent", "s", uris[i]);
      g_menu_append_item (self->recent_section, item);
      shown++;
    }
  if (shown == 0)
    {
      g_autoptr(GMenuItem) item = g_menu_item_new (_("No Recent Projects"), "win.no-recent");

      g_menu_append_item (self->recent_section, item);
    }
}

static void
add_recent (GFile *file)
{
  GSettings *settings = espalier_settings_get_default ();
  g_autofree char *uri = g_file_get_uri (file);
  g_auto(GStrv) old = NULL;
  g_autoptr(GStrvBuilder) builder = NULL;
  g_auto(GStrv) uris = NULL;
  guint n = 1;

  if (settings == NULL)
    return;
  old = g_settings_get_strv (settings, "recent-projects");
  builder = g_strv_builder_new ();
  g_strv_builder_add (builder, uri);
  for (guint i = 0; old[i] != NULL && n < MAX_RECENT; i++)
    if (!g_str_equal (old[i], uri))
      {
        g_strv_builder_add (builder, old[i]);
        n++;
      }
  uris = g_strv_builder_end (builder);
  g_settings_set_strv (settings, "recent-projects", (const char * const *) uris);
}

/* Projects ------------------------------------------------------------------------- */

static void
load_dataset_of_project (EspalierWindow *self)
{
  const char *source = espalier_project_get_dataset_source (self->project);

  if (source != NULL && *source != '\0')
    espalier_data_page_load (self->data_page, source,
                             espalier_project_get_load_options (self->project));
}

static void
on_doc_changed (EspalierWindow *self)
{
  EspalierModelDoc *doc = espalier_project_get_model_doc (self->project);

  gtk_widget_action_set_enabled (GTK_WIDGET (self), "win.undo", espalier_model_doc_can_undo (doc));
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "win.redo", espalier_model_doc_can_redo (doc));
}

void
espalier_window_set_project (EspalierWindow  *self,
                             EspalierProject *project)
{
  g_return_if_fail (ESPALIER_IS_WINDOW (self));
  g_return_if_fail (ESPALIER_IS_PROJECT (project));

  if (self->project != NULL)
    {
      g_clear_signal_handler (&self->project_notify_id, self->project);
      g_clear_signal_handler (&self->doc_changed_id, espalier_project_get_model_doc (self->project));
    }
  g_set_object (&self->project, project);
  self->project_notify_id = g_signal_connect (project, "notify",
                                              G_CALLBACK (on_project_notify), self);
  self->doc_changed_id = g_signal_connect_swapped (espalier_project_get_model_doc (project), "changed",
                                                   G_CALLBACK (on_doc_changed), self);
  on_doc_changed (self);
  espalier_data_page_set_project (self->data_page, project);
  espalier_model_page_set_project (self->model_page, project);
  espalier_train_page_set_project (self->train_page, project);
  espalier_profile_page_set_project (self->profile_page, project);
  espalier_optimize_page_set_project (self->optimize_page, project);
  espalier_export_page_set_project (self->export_page, project);
  update_title (self);
}

EspalierProject *
espalier_window_get_project (EspalierWindow *self)
{
  g_return_val_if_fail (ESPALIER_IS_WINDOW (self), NULL);
  return self->project;
}

void
espalier_window_load_dataset (EspalierWindow            *self,
                              const char                *source,
                              const EspalierLoadOptions *options)
{
  g_return_if_fail (ESPALIER_IS_WINDOW (self));
  espalier_data_page_load (self->data_page, source, options);
}

/* Run `next` now when nothing is unsaved, or after the user saved or discarded. */
typedef struct {
  EspalierWindow *self;
  ContinueFunc    next;
  gpointer        data;
  GDestroyNotify  data_free;
} Confirm;

static void
confirm_free (gpointer data,
              GClosure *closure)
{
  Confirm *c = data;

  if (c->data_free)
    c->data_free (c->data);
  g_object_unref (c->self);
  g_free (c);
}

static void
on_confirm_response (AdwMessageDialog *dialog,
                     const char       *response,
                     Confirm          *c)
{
  if (g_str_equal (response, "discard"))
    c->next (c->self, c->data);
  else if (g_str_equal (response, "save"))
    {
      /* After the save, closing goes on by itself; New and Open are chosen again. */
      c->self->close_after_save = c->next == do_close;
      if (espalier_project_get_file (c->self->project) != NULL)
        espalier_window_save_to (c->self, NULL);
      else
        gtk_widget_activate_action (GTK_WIDGET (c->self), "win.save-as", NULL);
    }
}

static void
confirm_discard (EspalierWindow *self,
                 ContinueFunc    next,
                 gpointer        data,
                 GDestroyNotify  data_free)
{
  Confirm *c;
  AdwMessageDialog *dialog;
  g_autofree char *body = NULL;

  if (self->project == NULL || !espalier_project_get_modified (self->project))
    {
      next (self, data);
      if (data_free)
        data_free (data);
      return;
    }
  c = g_new0 (Confirm, 1);
  c->self = g_object_ref (self);
  c->next = next;
  c->data = data;
  c->data_free = data_free;
  body = g_strdup_printf (_("“%s” has changes that are not saved. Unsaved changes, "
                            "including training runs, are lost if you discard them."),
                          espalier_project_get_title (self->project));
  dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (GTK_WINDOW (self),
                                                       _("Save Changes?"), body));
  adw_message_dialog_add_responses (dialog,
                                    "cancel", _("_Cancel"),
                                    "discard", _("_Discard"),
                                    "save", _("_Save"),
                                    NULL);
  adw_message_dialog_set_response_appearance (dialog, "discard", ADW_RESPONSE_DESTRUCTIVE);
  adw_message_dialog_set_response_appearance (dialog, "save", ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_default_response (dialog, "save");
  adw_message_dialog_set_close_response (dialog, "cancel");
  /* c lives as long as the dialog, answered or not. */
  g_signal_connect_data (dialog, "response", G_CALLBACK (on_confirm_response), c,
                         confirm_free, 0);
  gtk_window_present (GTK_WINDOW (dialog));
}

static void
do_new (EspalierWindow *self,
        gpointer        data)
{
  g_autofree char *source = NULL;
  g_autoptr(EspalierProject) project = default_project_new (&source);

  espalier_window_set_project (self, project);
  load_dataset_of_project (self);
  espalier_window_show_page (self, "data");
}

static void
new_action (GtkWidget  *widget,
            const char *action_name,
            GVariant   *parameter)
{
  confirm_discard (ESPALIER_WINDOW (widget), do_new, NULL, NULL);
}

typedef struct {
  GWeakRef window;
  GFile   *file;
  EspalierJob *job;
} OpenData;

static void
open_data_free (OpenData *od)
{
  g_weak_ref_clear (&od->window);
  g_clear_object (&od->file);
  g_clear_object (&od->job);
  g_free (od);
}

static void
open_thread (GTask        *task,
             gpointer      source_object,
             gpointer      task_data,
             GCancellable *cancellable)
{
  OpenData *od = task_data;
  GError *error = NULL;
  EspalierProject *project = espalier_project_load (od->file, cancellable, &error);

  if (project == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, project, g_object_unref);
}

static void
open_done (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  OpenData *od = g_task_get_task_data (G_TASK (result));
  g_autoptr(EspalierWindow) self = g_weak_ref_get (&od->window);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierProject) project = g_task_propagate_pointer (G_TASK (result), &error);
  g_autoptr(GError) missing = NULL;

  espalier_job_finish (od->job, error);
  if (self == NULL || project == NULL)
    return;
  espalier_window_set_project (self, project);
  add_recent (od->file);
  /* A dataset file that is gone: the project is open all the same; ask where it went. */
  if (espalier_project_check_dataset (project, &missing))
    load_dataset_of_project (self);
  else
    ask_missing_dataset (self, missing);
}

/* The missing dataset ------------------------------------------------------------- */

typedef struct {
  GWeakRef         window;
  EspalierProject *project;   /* the project asked about: a later Open replaces it */
  char            *path;
  EspalierJob     *job;
} LocateData;

static void
locate_data_free (LocateData *ld)
{
  g_weak_ref_clear (&ld->window);
  g_clear_object (&ld->project);
  g_clear_pointer (&ld->path, g_free);
  g_clear_object (&ld->job);
  g_free (ld);
}

static void
locate_done (GObject      *source,
             GAsyncResult *result,
             gpointer      user_data)
{
  LocateData *ld = user_data;
  g_autoptr(EspalierWindow) self = g_weak_ref_get (&ld->window);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) dataset = espalier_dataset_load_finish (result, &error);
  g_autofree char *name = g_filename_display_basename (ld->path);

  /* The question itself says what went wrong, not a second dialog. */
  espalier_job_finish (ld->job, NULL);
  if (self != NULL && self->project == ld->project
      && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      if (dataset != NULL && espalier_project_dataset_fits (ld->project, dataset, &error))
        {
          g_autofree char *message = g_strdup_printf (_("Dataset found at “%s”"), name);

          espalier_project_relocate_dataset (ld->project, ld->path);
          espalier_project_set_dataset (ld->project, dataset,
                                        espalier_project_get_load_options (ld->project));
          espalier_window_add_toast (self, message);
        }
      else
        {
          g_autoptr(GError) why = g_error_new (error->domain, error->code,
                                               _("“%s” cannot stand in for the dataset: %s"),
                                               name, error->message);

          ask_missing_dataset (self, why);
        }
    }
  locate_data_free (ld);
}

/* Load path as the project's dataset, with the project's options (a labels file that is
 * gone is left to the usual naming); it replaces the source if it fits the model. */
static void
locate_dataset (EspalierWindow *self,
                const char     *path)
{
  EspalierLoadOptions options = *espalier_project_get_load_options (self->project);
  g_autofree char *name = g_filename_display_basename (path);
  g_autofree char *title = g_strdup_printf (_("Loading %s"), name);
  LocateData *ld = g_new0 (LocateData, 1);

  if (options.labels_path != NULL && !g_file_test (options.labels_path, G_FILE_TEST_EXISTS))
    options.labels_path = NULL;
  g_weak_ref_init (&ld->window, self);
  ld->project = g_object_ref (self->project);
  ld->path = g_strdup (path);
  ld->job = espalier_job_new (title);
  espalier_window_add_job (self, ld->job);
  espalier_dataset_load_async (path, &options, espalier_job_get_cancellable (ld->job),
                               locate_done, ld);
}

static void
on_locate_response (GtkNativeDialog *dialog,
                    int              response,
                    EspalierWindow  *self)
{
  g_autoptr(GFile) file = NULL;
  g_autofree char *path = NULL;

  if (response == GTK_RESPONSE_ACCEPT)
    file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
  if (file != NULL)
    path = g_file_get_path (file);
  gtk_native_dialog_destroy (dialog);
  g_object_unref (dialog);

  if (path != NULL)
    locate_dataset (self, path);
  else
    {
      /* Cancelled, or not a local file: back to the question. */
      g_autoptr(GError) missing = NULL;

      if (!espalier_project_check_dataset (self->project, &missing))
        ask_missing_dataset (self, missing);
    }
}

static void
choose_dataset_file (EspalierWindow *self)
{
  GtkFileChooserNative *dialog;
  GFile *project_file = espalier_project_get_file (self->project);

  dialog = gtk_file_chooser_native_new (_("Locate the Dataset"), GTK_WINDOW (self),
                                        GTK_FILE_CHOOSER_ACTION_OPEN, _("_Select"), _("_Cancel"));
  /* Datasets often travel with their project: start in its folder. */
  if (project_file != NULL)
    {
      g_autoptr(GFile) folder = g_file_get_parent (project_file);

      if (folder != NULL)
        gtk_file_chooser_set_current_folder (GTK_FILE_CHOOSER (dialog), folder, NULL);
    }
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (dialog), TRUE);
  g_signal_connect (dialog, "response", G_CALLBACK (on_locate_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (dialog));
}

static void
on_missing_response (AdwMessageDialog *dialog,
                     const char       *response,
                     EspalierWindow   *self)
{
  if (g_str_equal (response, "locate"))
    choose_dataset_file (self);
  else
    espalier_window_add_toast (self, _("Opened without its data: the model, runs and "
                                       "variants are all there"));
}

static void
ask_missing_dataset (EspalierWindow *self,
                     const GError   *error)
{
  AdwMessageDialog *dialog;

  dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (GTK_WINDOW (self),
                                                       _("Where Is the Dataset?"), NULL));
  adw_message_dialog_format_body (dialog, "%s\n\n%s", error->message,
                                  _("Locate the file to train and measure with it, or open "
                                    "the project without data: its model, runs and variants "
                                    "are all there."));
  adw_message_dialog_add_responses (dialog,
                                    "without", _("Open _Without Data"),
                                    "locate", _("_Locate…"),
                                    NULL);
  adw_message_dialog_set_response_appearance (dialog, "locate", ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_default_response (dialog, "locate");
  adw_message_dialog_set_close_response (dialog, "without");
  g_signal_connect_object (dialog, "response", G_CALLBACK (on_missing_response), self, 0);
  gtk_window_present (GTK_WINDOW (dialog));
}

/* The same as choosing path in the file chooser (scripts, tests). */
static void
locate_dataset_action (GtkWidget  *widget,
                       const char *action_name,
                       GVariant   *parameter)
{
  const char *path = g_variant_get_string (parameter, NULL);

  if (g_path_is_absolute (path))
    locate_dataset (ESPALIER_WINDOW (widget), path);
}

static void
do_open (EspalierWindow *self,
         gpointer        data)
{
  GFile *file = data;
  OpenData *od = g_new0 (OpenData, 1);
  g_autoptr(GTask) task = NULL;
  g_autofree char *name = g_file_get_basename (file);
  g_autofree char *title = g_strdup_printf (_("Opening %s"), name);

  g_weak_ref_init (&od->window, self);
  od->file = g_object_ref (file);
  od->job = espalier_job_new (title);
  espalier_window_add_job (self, od->job);
  task = g_task_new (NULL, espalier_job_get_cancellable (od->job), open_done, NULL);
  g_task_set_task_data (task, od, (GDestroyNotify) open_data_free);
  g_task_run_in_thread (task, open_thread);
}

void
espalier_window_open_file (EspalierWindow *self,
                           GFile          *file)
{
  g_return_if_fail (ESPALIER_IS_WINDOW (self));
  g_return_if_fail (G_IS_FILE (file));

  confirm_discard (self, do_open, g_object_ref (file), g_object_unref);
}

static GtkFileFilter *
project_filter_new (void)
{
  GtkFileFilter *filter = gtk_file_filter_new ();

  gtk_file_filter_set_name (filter, _("Espalier Projects"));
  gtk_file_filter_add_pattern (filter, "*.espalier");
  gtk_file_filter_add_mime_type (filter, PROJECT_MIME_TYPE);
  return filter;
}

static void
on_open_response (GtkNativeDialog *dialog,
                  int              response,
                  EspalierWindow  *self)
{
  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));

      if (file != NULL)
        espalier_window_open_file (self, file);
    }
  gtk_native_dialog_destroy (dialog);
  g_object_unref (dialog);
}

static void
open_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);
  GtkFileChooserNative *dialog;
  g_autoptr(GtkFileFilter) filter = project_filter_new ();

  dialog = gtk_file_chooser_native_new (_("Open Project"), GTK_WINDOW (self),
                                        GTK_FILE_CHOOSER_ACTION_OPEN, _("_Open"), _("_Cancel"));
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (dialog), filter);
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (dialog), TRUE);
  g_signal_connect (dialog, "response", G_CALLBACK (on_open_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (dialog));
}

static void
open_recent_action (GtkWidget  *widget,
                    const char *action_name,
                    GVariant   *parameter)
{
  g_autoptr(GFile) file = g_file_new_for_uri (g_variant_get_string (parameter, NULL));

  espalier_window_open_file (ESPALIER_WINDOW (widget), file);
}

typedef struct {
  GWeakRef     window;
  EspalierJob *job;
  GFile       *file;
} SaveData;

static void
save_data_free (SaveData *sd)
{
  g_weak_ref_clear (&sd->window);
  g_clear_object (&sd->job);
  g_clear_object (&sd->file);
  g_free (sd);
}

static void save_as_action (GtkWidget *widget, const char *action_name, GVariant *parameter);

static void
on_save_failed_save_as (EspalierWindow *self)
{
  save_as_action (GTK_WIDGET (self), "win.save-as", NULL);
}

static void
save_done (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  SaveData *sd = user_data;
  g_autoptr(EspalierWindow) self = g_weak_ref_get (&sd->window);
  g_autoptr(GError) error = NULL;
  gboolean ok = espalier_project_save_finish (ESPALIER_PROJECT (source), result, &error);

  espalier_job_finish (sd->job, NULL);
  if (self == NULL)
    {
      save_data_free (sd);
      return;
    }
  self->saving = FALSE;
  if (!ok)
    {
      AdwMessageDialog *dialog;
      g_autoptr(GFile) folder = g_file_get_parent (sd->file);
      g_autofree char *where = folder ? g_file_get_parse_name (folder) : NULL;
      g_autofree char *why = NULL;

      /* Name the folder: it is what the user has to change (or leave for another). */
      if (where != NULL
          && (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED)
              || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_READ_ONLY)
              || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NO_SPACE)))
        why = g_strdup_printf (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NO_SPACE)
                               ? _("The folder “%s” has no space left.")
                               : _("The folder “%s” cannot be written to."), where);
      dialog = ADW_MESSAGE_DIALOG (adw_message_dialog_new (GTK_WINDOW (self),
                                                           _("The Project Could Not Be Saved"),
                                                           NULL));
      adw_message_dialog_format_body (dialog, "%s%s%s\n\n%s", why ? why : "", why ? " " : "",
                                      error->message,
                                      _("Nothing was lost: the project is still open. "
                                        "Choose “Save As…” to save it somewhere else."));
      adw_message_dialog_add_responses (dialog,
                                        "close", _("_Close"),
                                        "save-as", _("Save _As…"),
                                        NULL);
      adw_message_dialog_set_response_appearance (dialog, "save-as", ADW_RESPONSE_SUGGESTED);
      adw_message_dialog_set_default_response (dialog, "save-as");
      adw_message_dialog_set_close_response (dialog, "close");
      g_signal_connect_object (dialog, "response::save-as", G_CALLBACK (on_save_failed_save_as),
                               self, G_CONNECT_SWAPPED);
      gtk_window_present (GTK_WINDOW (dialog));
      self->close_after_save = FALSE;
    }
  else
    {
      g_autofree char *name = g_file_get_basename (sd->file);
      g_autofree char *message = g_strdup_printf (_("Saved “%s”"), name);

      add_recent (sd->file);
      espalier_window_add_toast (self, message);
      if (self->close_after_save)
        {
          self->close_after_save = FALSE;
          gtk_window_close (GTK_WINDOW (self));
        }
    }
  save_data_free (sd);
}

void
espalier_window_save_to (EspalierWindow *self,
                         GFile          *file)
{
  g_autofree char *name = NULL;
  g_autofree char *title = NULL;
  SaveData *sd;
  GFile *target;

  g_return_if_fail (ESPALIER_IS_WINDOW (self));

  target = file != NULL ? file : espalier_project_get_file (self->project);
  g_return_if_fail (target != NULL);
  if (self->saving)
    return;

  name = g_file_get_basename (target);
  title = g_strdup_printf (_("Saving %s"), name);
  sd = g_new0 (SaveData, 1);
  g_weak_ref_init (&sd->window, self);
  sd->job = espalier_job_new (title);
  sd->file = g_object_ref (target);
  espalier_window_add_job (self, sd->job);
  self->saving = TRUE;
  espalier_project_save_async (self->project, target, espalier_job_get_cancellable (sd->job),
                               save_done, sd);
}

static void
on_save_as_response (GtkNativeDialog *dialog,
                     int              response,
                     EspalierWindow  *self)
{
  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
      g_autofree char *name = file ? g_file_get_basename (file) : NULL;

      if (file != NULL && !g_str_has_suffix (name, ".espalier"))
        {
          g_autofree char *with = g_strconcat (name, ".espalier", NULL);
          g_autoptr(GFile) parent = g_file_get_parent (file);

          g_object_unref (file);
          file = g_file_get_child (parent, with);
        }
      if (file != NULL)
        espalier_window_save_to (self, file);
    }
  else
    self->close_after_save = FALSE;
  gtk_native_dialog_destroy (dialog);
  g_object_unref (dialog);
}

static void
save_as_action (GtkWidget  *widget,
                const char *action_name,
                GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);
  GtkFileChooserNative *dialog;
  g_autoptr(GtkFileFilter) filter = project_filter_new ();
  g_autofree char *name = g_strconcat (espalier_project_get_title (self->project), ".espalier", NULL);

  dialog = gtk_file_chooser_native_new (_("Save Project"), GTK_WINDOW (self),
                                        GTK_FILE_CHOOSER_ACTION_SAVE, _("_Save"), _("_Cancel"));
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (dialog), filter);
  gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (dialog), name);
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (dialog), TRUE);
  g_signal_connect (dialog, "response", G_CALLBACK (on_save_as_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (dialog));
}

static void
save_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);

  if (espalier_project_get_file (self->project) == NULL)
    save_as_action (widget, "win.save-as", NULL);
  else
    espalier_window_save_to (self, NULL);
}

/* Import ONNX: a model from another tool into the project, as the Model page's layers,
 * the trained weights and a variant "imported" to profile, prune and quantize. The
 * file is read and the model timed (and its test accuracy measured when the loaded
 * data fits it) on a worker; a file Espalier cannot read is the job's error dialog,
 * and the project is left as it was. */

typedef struct {
  GWeakRef          window;
  EspalierProject  *project;    /* the project the model goes into */
  EspalierJob      *job;
  char             *path;
  EspalierDataset  *dataset;    /* the loaded one (immutable), or NULL */
  EspalierTrainOptions train;   /* its splits */
  EsModel          *model;      /* out */
  EspalierOnnxMeta  meta;       /* out */
  EspalierLatency   latency;    /* out */
  gboolean          measured;
  double            accuracy;   /* out, NaN: not measured */
} ImportData;

static void
import_data_free (ImportData *id)
{
  g_weak_ref_clear (&id->window);
  g_clear_object (&id->project);
  g_clear_object (&id->job);
  g_free (id->path);
  g_clear_object (&id->dataset);
  if (id->model != NULL)
    es_model_free (id->model);
  espalier_onnx_meta_clear (&id->meta);
  g_free (id);
}

/* Whether dataset's rows and classes are what model takes and gives. */
static gboolean
import_fits (const EsModel   *model,
             EspalierDataset *dataset)
{
  EsShape input = es_model_input_shape (model);
  EsShape output = es_model_output_shape (model);

  return espalier_dataset_get_row_size (dataset) == es_shape_size (&input)
         && espalier_dataset_get_n_classes (dataset) == es_shape_size (&output);
}

static void
import_thread (GTask        *task,
               gpointer      source_object,
               gpointer      task_data,
               GCancellable *cancellable)
{
  ImportData *id = task_data;
  GError *error = NULL;

  id->model = espalier_onnx_import (id->path, &id->meta, &error);
  if (id->model == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  /* Timed like every variant; a model that cannot be timed still imports. */
  id->measured = espalier_measure_variant (id->model, NULL, 1, 0, 0.5, &id->latency, &error);
  if (!id->measured)
    {
      g_debug ("Import: latency not measured: %s", error->message);
      g_clear_error (&error);
    }
  if (id->dataset != NULL && import_fits (id->model, id->dataset))
    {
      g_autoptr(EspalierSplit) split = espalier_split_new (id->dataset, id->train.val_fraction,
                                                           id->train.test_fraction,
                                                           id->train.seed, NULL);
      EspalierMetrics metrics = { 0 };

      if (split != NULL && split->test->len > 0
          && espalier_evaluate_exec (id->model, NULL, NULL, id->dataset,
                                     (const guint32 *) split->test->data, split->test->len,
                                     1, &metrics, NULL))
        id->accuracy = metrics.accuracy;
      espalier_metrics_clear (&metrics);
    }
  if (!g_task_return_error_if_cancelled (task))
    g_task_return_boolean (task, TRUE);
}

static void
import_done (GObject      *source,
             GAsyncResult *result,
             gpointer      user_data)
{
  ImportData *id = g_task_get_task_data (G_TASK (result));
  g_autoptr(EspalierWindow) self = g_weak_ref_get (&id->window);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) variant = NULL;
  g_autofree char *name = g_path_get_basename (id->path);
  g_autofree char *spec = NULL;
  g_autofree char *description = NULL;
  g_autofree char *message = NULL;
  g_autofree EsLayerSpec *layers = NULL;
  int n_layers = 0;
  EspalierModelDoc *doc = espalier_project_get_model_doc (id->project);
  EspalierDataset *dataset = espalier_project_get_dataset (id->project);
  EsShape input, output;
  char shape[64];

  /* A window closed or a project replaced meanwhile: nothing to put it into. */
  if (!g_task_propagate_boolean (G_TASK (result), &error) || self == NULL
      || self->project != id->project)
    {
      espalier_job_finish (id->job, error);
      return;
    }

  input = es_model_input_shape (id->model);
  output = es_model_output_shape (id->model);
  spec = espalier_model_to_spec (id->model);
  /* set_spec fails only where parsing does: parse first, so that a failure changes
   * nothing. */
  layers = espalier_spec_parse (spec, &n_layers, &error);
  if (layers == NULL)
    {
      espalier_job_finish (id->job, error);
      return;
    }
  espalier_model_doc_set_input (doc, &input, (guint) es_shape_size (&output));
  espalier_model_doc_set_spec (doc, spec, NULL);
  variant = espalier_variant_new ("imported", "baseline", es_model_copy (id->model));
  /* TRANSLATORS: a variant's description: the file and the tool that wrote it */
  description = g_strdup_printf (_("Imported from %s, written by %s"), name,
                                 id->meta.producer != NULL ? id->meta.producer : _("an unknown tool"));
  espalier_variant_set_description (variant, description);
  if (id->measured)
    espalier_variant_set_latency (variant, &id->latency);
  if (isfinite (id->accuracy))
    espalier_variant_set_accuracy (variant, id->accuracy);
  espalier_project_set_model (id->project, g_steal_pointer (&id->model));
  espalier_project_add_variant (id->project, variant);
  espalier_job_finish (id->job, NULL);

  es_shape_format (&input, shape, sizeof shape);
  if (dataset != NULL && !import_fits (espalier_variant_get_model (variant), dataset))
    message = g_strdup_printf (_("Imported “%s”: it takes %s, which the loaded data does not "
                                 "give; load data that fits to train or measure it"), name, shape);
  else
    message = g_strdup_printf (_("Imported “%s”: %u layers, input %s"), name,
                               espalier_model_doc_get_n_layers (doc), shape);
  espalier_window_add_toast (self, message);
  espalier_window_show_page (self, "model");
}

static void
import_onnx (EspalierWindow *self,
             GFile          *file)
{
  g_autoptr(GTask) task = NULL;
  g_autofree char *path = g_file_get_path (file);
  g_autofree char *name = g_file_get_basename (file);
  g_autofree char *title = NULL;
  ImportData *id;

  if (path == NULL)
    {
      espalier_window_add_toast (self, _("Choose a local file to import"));
      return;
    }
  title = g_strdup_printf (_("Importing %s"), name);
  id = g_new0 (ImportData, 1);
  g_weak_ref_init (&id->window, self);
  id->project = g_object_ref (self->project);
  id->job = espalier_job_new (title);
  id->path = g_steal_pointer (&path);
  if (espalier_project_get_dataset (self->project) != NULL)
    id->dataset = g_object_ref (espalier_project_get_dataset (self->project));
  id->train = *espalier_project_get_train_options (self->project);
  id->accuracy = NAN;
  espalier_onnx_meta_init (&id->meta);
  espalier_window_add_job (self, id->job);
  task = g_task_new (NULL, espalier_job_get_cancellable (id->job), import_done, NULL);
  g_task_set_task_data (task, id, (GDestroyNotify) import_data_free);
  g_task_run_in_thread (task, import_thread);
}

static void
on_import_response (GtkNativeDialog *dialog,
                    int              response,
                    EspalierWindow  *self)
{
  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));

      if (file != NULL)
        import_onnx (self, file);
    }
  gtk_native_dialog_destroy (dialog);
  g_object_unref (dialog);
}

static void
import_onnx_action (GtkWidget  *widget,
                    const char *action_name,
                    GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);
  GtkFileChooserNative *dialog;
  g_autoptr(GtkFileFilter) filter = gtk_file_filter_new ();

  gtk_file_filter_set_name (filter, _("ONNX Models"));
  gtk_file_filter_add_pattern (filter, "*.onnx");
  dialog = gtk_file_chooser_native_new (_("Import ONNX Model"), GTK_WINDOW (self),
                                        GTK_FILE_CHOOSER_ACTION_OPEN, _("_Import"), _("_Cancel"));
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (dialog), filter);
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (dialog), TRUE);
  g_signal_connect (dialog, "response", G_CALLBACK (on_import_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (dialog));
}

/* The same without the dialog: the parameter is the file's URI (scripts, tests). */
static void
import_onnx_file_action (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter)
{
  g_autoptr(GFile) file = g_file_new_for_uri (g_variant_get_string (parameter, NULL));

  import_onnx (ESPALIER_WINDOW (widget), file);
}

void
espalier_window_show_page (EspalierWindow *self,
                           const char     *name)
{
  g_return_if_fail (ESPALIER_IS_WINDOW (self));

  if (adw_view_stack_get_child_by_name (self->stack, name) != NULL)
    adw_view_stack_set_visible_child_name (self->stack, name);
}

const char *
espalier_window_get_page (EspalierWindow *self)
{
  g_return_val_if_fail (ESPALIER_IS_WINDOW (self), NULL);
  return adw_view_stack_get_visible_child_name (self->stack);
}

GtkWidget *
espalier_window_get_page_widget (EspalierWindow *self,
                                 const char     *name)
{
  g_return_val_if_fail (ESPALIER_IS_WINDOW (self), NULL);
  return adw_view_stack_get_child_by_name (self->stack, name);
}

static void
show_page_action (GtkWidget  *widget,
                  const char *action_name,
                  GVariant   *parameter)
{
  espalier_window_show_page (ESPALIER_WINDOW (widget), g_variant_get_string (parameter, NULL));
}

static void
train_action (GtkWidget  *widget,
              const char *action_name,
              GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);

  if (espalier_train_page_get_training (self->train_page))
    espalier_train_page_stop (self->train_page);
  else
    {
      espalier_window_show_page (self, "train");
      espalier_train_page_start (self->train_page);
    }
}

static void
on_training_changed (EspalierTrainPage *page,
                     GParamSpec        *pspec,
                     EspalierWindow    *self)
{
  gboolean training = espalier_train_page_get_training (page);

  gtk_button_set_icon_name (self->train_button,
                            training ? "media-playback-stop-symbolic"
                                     : "media-playback-start-symbolic");
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->train_button),
                               training ? _("Stop Training (Ctrl+Enter)")
                                        : _("Train (Ctrl+Enter)"));
  if (training)
    {
      gtk_widget_remove_css_class (GTK_WIDGET (self->train_button), "suggested-action");
      gtk_widget_add_css_class (GTK_WIDGET (self->train_button), "destructive-action");
    }
  else
    {
      gtk_widget_remove_css_class (GTK_WIDGET (self->train_button), "destructive-action");
      gtk_widget_add_css_class (GTK_WIDGET (self->train_button), "suggested-action");
    }
}

static void
cancel_job_action (GtkWidget  *widget,
                   const char *action_name,
                   GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);

  if (self->shown_job != NULL)
    espalier_job_cancel (self->shown_job);
}

static void
undo_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierWindow *self = ESPALIER_WINDOW (widget);
  EspalierModelDoc *doc = espalier_project_get_model_doc (self->project);

  if (g_str_equal (action_name, "win.undo"))
    espalier_model_doc_undo (doc);
  else
    espalier_model_doc_redo (doc);
}

/* Closing ---------------------------------------------------------------------------- */

static void
do_close (EspalierWindow *self,
          gpointer        data)
{
  self->closing_confirmed = TRUE;
  gtk_window_close (GTK_WINDOW (self));
}

static void
save_window_state (EspalierWindow *self)
{
  GSettings *settings = espalier_settings_get_default ();
  int width, height;

  if (settings == NULL)
    return;
  gtk_window_get_default_size (GTK_WINDOW (self), &width, &height);
  if (width >= MIN_WINDOW_SIZE && width <= MAX_WINDOW_SIZE)
    g_settings_set_int (settings, "window-width", width);
  if (height >= MIN_WINDOW_SIZE && height <= MAX_WINDOW_SIZE)
    g_settings_set_int (settings, "window-height", height);
  g_settings_set_boolean (settings, "window-maximized", gtk_window_is_maximized (GTK_WINDOW (self)));
}

static gboolean
espalier_window_close_request (GtkWindow *window)
{
  EspalierWindow *self = ESPALIER_WINDOW (window);

  if (!self->closing_confirmed && self->project != NULL &&
      espalier_project_get_modified (self->project))
    {
      confirm_discard (self, do_close, NULL, NULL);
      return TRUE;
    }
  save_window_state (self);
  /* Stop the work of this window; workers hold only weak references to it. */
  for (guint i = 0; i < self->jobs->len; i++)
    espalier_job_cancel (g_ptr_array_index (self->jobs, i));
  return GTK_WINDOW_CLASS (espalier_window_parent_class)->close_request (window);
}

static void
espalier_window_dispose (GObject *object)
{
  EspalierWindow *self = ESPALIER_WINDOW (object);

  if (self->recent_changed_id != 0)
    g_clear_signal_handler (&self->recent_changed_id, espalier_settings_get_default ());
  if (self->project != NULL)
    {
      g_clear_signal_handler (&self->project_notify_id, self->project);
      g_clear_signal_handler (&self->doc_changed_id, espalier_project_get_model_doc (self->project));
    }
  if (self->jobs != NULL)
    for (guint i = 0; i < self->jobs->len; i++)
      g_signal_handlers_disconnect_by_data (g_ptr_array_index (self->jobs, i), self);
  g_clear_pointer (&self->jobs, g_ptr_array_unref);
  self->shown_job = NULL;
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_WINDOW);
  g_clear_object (&self->project);
  G_OBJECT_CLASS (espalier_window_parent_class)->dispose (object);
}

static void
espalier_window_class_init (EspalierWindowClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);
  GtkWindowClass *window_class = GTK_WINDOW_CLASS (klass);

  object_class->dispose = espalier_window_dispose;
  window_class->close_request = espalier_window_close_request;

  g_type_ensure (ESPALIER_TYPE_DATA_PAGE);
  g_type_ensure (ESPALIER_TYPE_MODEL_PAGE);
  g_type_ensure (ESPALIER_TYPE_TRAIN_PAGE);
  g_type_ensure (ESPALIER_TYPE_PROFILE_PAGE);
  g_type_ensure (ESPALIER_TYPE_OPTIMIZE_PAGE);
  g_type_ensure (ESPALIER_TYPE_EXPORT_PAGE);

  gtk_widget_class_set_template_from_resource (widget_class, "/io/github/espalier/Espalier/ui/espalier-window.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, switcher_title);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, switcher_bar);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, toast_overlay);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, train_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, job_revealer);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, job_title);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, job_progress);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, job_status);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, job_cancel);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, primary_menu);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, recent_section);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, data_page);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, model_page);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, train_page);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, profile_page);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, optimize_page);
  gtk_widget_class_bind_template_child (widget_class, EspalierWindow, export_page);

  gtk_widget_class_install_action (widget_class, "win.new", NULL, new_action);
  gtk_widget_class_install_action (widget_class, "win.open", NULL, open_action);
  gtk_widget_class_install_action (widget_class, "win.open-recent", "s", open_recent_action);
  gtk_widget_class_install_action (widget_class, "win.save", NULL, save_action);
  gtk_widget_class_install_action (widget_class, "win.save-as", NULL, save_as_action);
  gtk_widget_class_install_action (widget_class, "win.import-onnx", NULL, import_onnx_action);
  gtk_widget_class_install_action (widget_class, "win.import-onnx-file", "s", import_onnx_file_action);
  gtk_widget_class_install_action (widget_class, "win.locate-dataset", "s", locate_dataset_action);
  gtk_widget_class_install_action (widget_class, "win.show-page", "s", show_page_action);
  gtk_widget_class_install_action (widget_class, "win.train", NULL, train_action);
  gtk_widget_class_install_action (widget_class, "win.cancel-job", NULL, cancel_job_action);
  gtk_widget_class_install_action (widget_class, "win.undo", NULL, undo_action);
  gtk_widget_class_install_action (widget_class, "win.redo", NULL, undo_action);

  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_n, GDK_CONTROL_MASK, "win.new", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_o, GDK_CONTROL_MASK, "win.open", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_s, GDK_CONTROL_MASK, "win.save", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_s, GDK_CONTROL_MASK | GDK_SHIFT_MASK, "win.save-as", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Return, GDK_CONTROL_MASK, "win.train", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_KP_Enter, GDK_CONTROL_MASK, "win.train", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Escape, 0, "win.cancel-job", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_z, GDK_CONTROL_MASK, "win.undo", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_z, GDK_CONTROL_MASK | GDK_SHIFT_MASK, "win.redo", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_y, GDK_CONTROL_MASK, "win.redo", NULL);
  for (guint i = 0; i < G_N_ELEMENTS (page_names); i++)
    gtk_widget_class_add_binding_action (widget_class, GDK_KEY_1 + i, GDK_ALT_MASK,
                                         "win.show-page", "s", page_names[i]);
}

static void
on_export_requested (EspalierOptimizePage *page,
                     EspalierVariant      *variant,
                     EspalierWindow       *self)
{
  espalier_export_page_select_variant (self->export_page, variant);
  espalier_window_show_page (self, "export");
}

static void
espalier_window_init (EspalierWindow *self)
{
  GSettings *settings = espalier_settings_get_default ();
  g_autofree char *source = NULL;
  g_autoptr(EspalierProject) project = NULL;

  gtk_widget_init_template (GTK_WIDGET (self));
  self->jobs = g_ptr_array_new_with_free_func (g_object_unref);

  g_object_bind_property (self->switcher_title, "title-visible",
                          self->switcher_bar, "reveal", G_BINDING_SYNC_CREATE);
  g_signal_connect (self->train_page, "notify::training", G_CALLBACK (on_training_changed), self);
  g_signal_connect (self->optimize_page, "export-requested", G_CALLBACK (on_export_requested), self);
  /* A profiled training run shows live on the Profile page. */
  g_signal_connect_swapped (self->train_page, "profile",
                            G_CALLBACK (espalier_profile_page_update_live), self->profile_page);

  if (settings != NULL)
    {
      int width = g_settings_get_int (settings, "window-width");
      int height = g_settings_get_int (settings, "window-height");

      /* A corrupt or hand-edited settings file may say anything. */
      if (width < MIN_WINDOW_SIZE || width > MAX_WINDOW_SIZE)
        width = DEFAULT_WIDTH;
      if (height < MIN_WINDOW_SIZE || height > MAX_WINDOW_SIZE)
        height = DEFAULT_HEIGHT;
      gtk_window_set_default_size (GTK_WINDOW (self), width, height);
      if (g_settings_get_boolean (settings, "window-maximized"))
        gtk_window_maximize (GTK_WINDOW (self));
    }

  if (settings != NULL)
    self->recent_changed_id = g_signal_connect_swapped (settings, "changed::recent-projects",
                                                        G_CALLBACK (rebuild_recent_menu), self);
  rebuild_recent_menu (self);
  {
    /* "Import ONNX…" after "Open Recent" in the project section. */
    g_autoptr(GMenuModel) section = g_menu_model_get_item_link (G_MENU_MODEL (self->primary_menu), 0,
                                                                G_MENU_LINK_SECTION);

    if (G_IS_MENU (section))
      g_menu_insert (G_MENU (section), 3, _("_Import ONNX…"), "win.import-onnx");
  }
  g_signal_connect (self->job_cancel, "clicked", G_CALLBACK (on_job_cancel_clicked), self);
  update_job_bar (self);

  project = default_project_new (&source);
  espalier_window_set_project (self, project);
  load_dataset_of_project (self);
}
