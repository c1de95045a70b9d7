/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-export-page.c: the Export page: a variant of the project written out as an
 * Espalier model (NAME.json + NAME.safetensors, espalier-model-file.h) with what the
 * project knows about it: dataset source and preprocessing, class names, training
 * options and curves, and test metrics measured on the exported weights. Saving (and
 * the test evaluation) run on a worker with a job; the page hands the worker copies, so
 * nothing is shared with the main thread. ONNX and C source are shown, insensitive,
 * until the export issue brings them: no format pretends to work. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-export-page.h"
#include "espalier-job.h"
#include "espalier-model-file.h"
#include "espalier-split.h"
#include "espalier-ui-util.h"

struct _EspalierExportPage
{
  AdwBin                parent_instance;

  EspalierProject      *project;
  GListModel           *variants;      /* the project's list, (transfer none) */
  EspalierVariant      *watched;       /* the selected variant, notify followed */
  GtkFileChooserNative *chooser;       /* the open save dialog, or NULL */
  EspalierJob          *job;           /* the running export, or NULL */
  char                 *last_path;     /* the last export's JSON path, or NULL */

  /* template */
  GtkStack             *stack;
  AdwComboRow          *variant_row;
  AdwActionRow         *measurements_row;
  AdwActionRow         *espalier_format_row;
  GtkCheckButton       *espalier_format_check;
  AdwActionRow         *onnx_format_row;
  AdwActionRow         *c_format_row;
  GtkButton            *export_button;
  AdwPreferencesGroup  *last_export_group;
  AdwActionRow         *last_export_row;
};

G_DEFINE_FINAL_TYPE (EspalierExportPage, espalier_export_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* What one export needs, copied on the main thread and owned by the worker. */
typedef struct {
  EsModel           *model;       /* a copy of the variant's weights */
  EspalierModelInfo  info;
  EspalierDataset   *dataset;     /* for the test metrics, or NULL (immutable) */
  char              *path;
  guint64            bytes;       /* out: size of the two files */
} ExportData;

static void
export_data_free (ExportData *data)
{
  es_model_free (data->model);
  espalier_model_info_clear (&data->info);
  g_clear_object (&data->dataset);
  g_free (data->path);
  g_free (data);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ExportData, export_data_free)

GtkWidget *
espalier_export_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_EXPORT_PAGE, NULL);
}

/* Building what the worker gets */

/* The preprocessing as the JSON object espalier-cli reads back from a model file. */
static char *
preprocessing_to_json (const EspalierLoadOptions *o)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(JsonNode) root = NULL;

  json_builder_begin_object (b);
  if (o->label_column != NULL)
    {
      json_builder_set_member_name (b, "label_column");
      json_builder_add_string_value (b, o->label_column);
    }
  json_builder_set_member_name (b, "one_hot");
  json_builder_add_boolean_value (b, o->one_hot);
  json_builder_set_member_name (b, "ffill");
  json_builder_add_boolean_value (b, o->ffill);
  json_builder_set_member_name (b, "mean_fill");
  json_builder_add_boolean_value (b, o->mean_fill);
  json_builder_set_member_name (b, "drop_duplicates");
  json_builder_add_boolean_value (b, o->drop_duplicates);
  json_builder_set_member_name (b, "standardize");
  json_builder_add_boolean_value (b, o->standardize);
  json_builder_set_member_name (b, "minmax");
  json_builder_add_boolean_value (b, o->minmax);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

static void
copy_metrics (EspalierMetrics       *dest,
              const EspalierMetrics *src)
{
  espalier_metrics_clear (dest);
  *dest = *src;
  if (src->confusion != NULL)
    dest->confusion = g_memdup2 (src->confusion,
                                 (gsize) src->n_classes * src->n_classes * sizeof (guint));
}

static ExportData *
export_data_new (EspalierExportPage  *self,
                 const char          *path,
                 GError             **error)
{
  EspalierVariant *variant = espalier_export_page_get_variant (self);
  g_autoptr(ExportData) data = NULL;
  g_autoptr(EspalierRun) run = NULL;
  EspalierDataset *dataset;
  GListModel *runs;
  guint n_runs;

  if (variant == NULL)
    {
      g_set_error_literal (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                           _("Choose a variant to export"));
      return NULL;
    }
  if (espalier_variant_get_model (variant) == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("“%s” has no weights loaded to export"), espalier_variant_get_name (variant));
      return NULL;
    }

  data = g_new0 (ExportData, 1);
  data->model = es_model_copy (espalier_variant_get_model (variant));
  data->path = g_strdup (path);
  espalier_model_info_init (&data->info);
  data->info.dataset_source = g_strdup (espalier_project_get_dataset_source (self->project));
  data->info.preprocessing = preprocessing_to_json (espalier_project_get_load_options (self->project));
  data->info.train = *espalier_project_get_train_options (self->project);

  /* The weights came from the last run (directly, or through the baseline): its
   * options and curves are the training they had. */
  runs = espalier_project_get_runs (self->project);
  n_runs = g_list_model_get_n_items (runs);
  if (n_runs > 0)
    {
      GArray *history;

      run = g_list_model_get_item (runs, n_runs - 1);
      history = espalier_run_get_history (run);
      data->info.train = *espalier_run_get_options (run);
      g_array_append_vals (data->info.history, history->data, history->len);
      /* Without the dataset to measure on, the run's test metrics are the baseline's. */
      if (g_strcmp0 (espalier_variant_get_kind (variant), "baseline") == 0
          && espalier_run_get_test (run)->rows > 0)
        copy_metrics (&data->info.test, espalier_run_get_test (run));
    }

  dataset = espalier_project_get_dataset (self->project);
  if (dataset != NULL)
    {
      guint nc = espalier_dataset_get_n_classes (dataset);

      data->dataset = g_object_ref (dataset);
      if (nc > 0)
        {
          data->info.class_names = g_new0 (char *, nc + 1);
          for (guint k = 0; k < nc; k++)
            data->info.class_names[k] = g_strdup (espalier_dataset_get_class_name (dataset, k));
        }
      if (espalier_dataset_is_u8 (dataset))
        {
          data->info.input_scale = espalier_dataset_get_scale (dataset);
          data->info.input_shift = espalier_dataset_get_shift (dataset);
        }
    }
  return g_steal_pointer (&data);
}

/* Test metrics of the exported weights on the test split the training options make.
 * A model that no longer fits the loaded dataset keeps what it had: the export itself
 * does not depend on it. */
static void
measure_test (ExportData *data)
{
  g_autoptr(EspalierSplit) split = NULL;
  g_autoptr(GError) error = NULL;
  EspalierMetrics metrics = { 0 };
  const EspalierTrainOptions *opts = &data->info.train;

  split = espalier_split_new (data->dataset, opts->val_fraction, opts->test_fraction,
                              opts->seed, &error);
  if (split == NULL || split->test->len == 0)
    return;
  if (!espalier_evaluate (data->model, data->dataset, (const guint32 *) split->test->data,
                          split->test->len, opts->engine.loss, opts->threads, &metrics, &error))
    {
      g_debug ("Export: no test metrics: %s", error->message);
      return;
    }
  espalier_metrics_clear (&data->info.test);
  data->info.test = metrics;
}

/* The work itself, on whichever thread calls it. */
static gboolean
export_data_run (ExportData    *data,
                 GCancellable  *cancellable,
                 GError       **error)
{
  g_autofree char *json_path = NULL, *weights_path = NULL;
  GStatBuf st;

  if (data->dataset != NULL)
    measure_test (data);
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;
  if (!espalier_model_save (data->model, &data->info, data->path, error))
    return FALSE;

  espalier_model_paths (data->path, &json_path, &weights_path);
  data->bytes = 0;
  if (g_stat (json_path, &st) == 0)
    data->bytes += (guint64) st.st_size;
  if (g_stat (weights_path, &st) == 0)
    data->bytes += (guint64) st.st_size;
  return TRUE;
}

static void
export_thread (GTask        *task,
               gpointer      source_object,
               gpointer      task_data,
               GCancellable *cancellable)
{
  GError *error = NULL;

  if (export_data_run (task_data, cancellable, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

/* The page */

static void
refresh_measurements (EspalierExportPage *self)
{
  EspalierVariant *v = self->watched;
  g_autoptr(GString) text = g_string_new (NULL);
  double accuracy, latency;

  if (v == NULL)
    {
      adw_action_row_set_subtitle (self->measurements_row, "");
      gtk_widget_action_set_enabled (GTK_WIDGET (self), "export.export", FALSE);
      return;
    }

  accuracy = espalier_variant_get_accuracy (v);
  latency = espalier_variant_get_latency_us (v);
  if (isfinite (accuracy))
    g_string_append_printf (text, _("%.2f %% test accuracy"), 100.0 * accuracy);
  else
    g_string_append (text, _("accuracy not measured"));
  g_string_append (text, " · ");
  if (isfinite (latency))
    g_string_append_printf (text, _("%.1f µs per sample"), latency);
  else
    g_string_append (text, _("latency not measured"));
  g_string_append (text, " · ");
  {
    g_autofree char *size = g_format_size (espalier_variant_get_size_bytes (v));
    g_string_append_printf (text, _("%s of weights"), size);
  }
  adw_action_row_set_subtitle (self->measurements_row, text->str);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "export.export",
                                 espalier_variant_get_model (v) != NULL && self->job == NULL);
}

static void
on_watched_notify (EspalierVariant    *variant,
                   GParamSpec         *pspec,
                   EspalierExportPage *self)
{
  refresh_measurements (self);
}

static void
watch_variant (EspalierExportPage *self,
               EspalierVariant    *variant)
{
  espalier_follow (&self->watched, variant, "notify", G_CALLBACK (on_watched_notify), self, 0);
}

static void
on_selected_changed (EspalierExportPage *self)
{
  watch_variant (self, adw_combo_row_get_selected_item (self->variant_row));
  refresh_measurements (self);
}

static void
on_variants_changed (GListModel         *model,
                     guint               position,
                     guint               removed,
                     guint               added,
                     EspalierExportPage *self)
{
  guint n = g_list_model_get_n_items (model);

  /* A new variant is most likely the one to export next. */
  if (added > 0)
    adw_combo_row_set_selected (self->variant_row, position + added - 1);
  gtk_stack_set_visible_child_name (self->stack, n > 0 ? "export" : "empty");
  on_selected_changed (self);
}

/* "dir/NAME" for a variant: its name with what file systems or shells dislike replaced
 * ("pruned 50%" -> "pruned-50"). */
static char *
file_name_for (EspalierVariant *variant)
{
  const char *name = espalier_variant_get_name (variant);
  GString *s = g_string_new (NULL);

  for (const char *p = name; p != NULL && *p != '\0'; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);

      if (g_unichar_isalnum (c) || c == '_' || c == '.')
        g_string_append_unichar (s, c);
      else if (s->len > 0 && s->str[s->len - 1] != '-')
        g_string_append_c (s, '-');
    }
  while (s->len > 0 && s->str[s->len - 1] == '-')
    g_string_truncate (s, s->len - 1);
  if (s->len == 0 || s->str[0] == '.')
    g_string_prepend (s, "model");
  g_string_append (s, ".json");
  return g_string_free (s, FALSE);
}

static void
export_done (GObject      *object,
             GAsyncResult *result,
             gpointer      user_data)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);
  g_autoptr(EspalierJob) job = g_steal_pointer (&self->job);
  g_autoptr(GError) error = NULL;
  guint64 bytes = 0;

  if (espalier_export_page_export_finish (self, result, &bytes, &error))
    {
      ExportData *data = g_task_get_task_data (G_TASK (result));
      g_autofree char *json_path = NULL;
      g_autofree char *size = g_format_size (bytes);
      g_autofree char *message = NULL;
      g_autofree char *subtitle = NULL;

      espalier_model_paths (data->path, &json_path, NULL);
      g_free (self->last_path);
      self->last_path = g_strdup (json_path);
      message = g_strdup_printf (_("Exported to %s (%s)"), json_path, size);
      subtitle = g_strdup_printf (_("%s and its weights, %s"), json_path, size);
      adw_action_row_set_subtitle (self->last_export_row, subtitle);
      gtk_widget_set_visible (GTK_WIDGET (self->last_export_group), TRUE);
      espalier_show_toast (GTK_WIDGET (self), message);
    }
  if (job != NULL)
    espalier_job_finish (job, error);
  refresh_measurements (self);
}

/* Export with a job the window shows; the result is a toast. */
static void
start_export (EspalierExportPage *self,
              const char         *path)
{
  g_autofree char *status = NULL;

  if (self->job != NULL)
    return;
  self->job = espalier_job_new (_("Exporting"));
  status = g_strdup_printf (_("Writing %s"), path);
  espalier_job_set_status (self->job, status);
  espalier_job_set_fraction (self->job, -1);
  espalier_job_show (self->job, GTK_WIDGET (self));
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "export.export", FALSE);
  espalier_export_page_export_async (self, path, espalier_job_get_cancellable (self->job),
                                     export_done, NULL);
}

static void
on_chooser_response (GtkNativeDialog    *dialog,
                     int                 response,
                     EspalierExportPage *self)
{
  g_autoptr(GtkFileChooserNative) chooser = g_steal_pointer (&self->chooser);
  g_autoptr(GFile) file = NULL;
  g_autofree char *path = NULL;

  if (response == GTK_RESPONSE_ACCEPT)
    file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
  if (file != NULL)
    path = g_file_get_path (file);
  if (path != NULL)
    start_export (self, path);
  else if (file != NULL)
    espalier_show_toast (GTK_WIDGET (self), _("Choose a local folder to export to"));
}

static void
export_action (GtkWidget  *widget,
               const char *action_name,
               GVariant   *parameter)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (widget);
  EspalierVariant *variant = espalier_export_page_get_variant (self);
  GtkRoot *root = gtk_widget_get_root (widget);
  g_autoptr(GtkFileFilter) filter = gtk_file_filter_new ();
  g_autofree char *name = NULL;

  if (variant == NULL || self->chooser != NULL || self->job != NULL)
    return;

  self->chooser = gtk_file_chooser_native_new (_("Export Model"),
                                               GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                               GTK_FILE_CHOOSER_ACTION_SAVE,
                                               _("_Export"), _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (self->chooser), TRUE);
  gtk_file_filter_set_name (filter, _("Espalier models"));
  gtk_file_filter_add_pattern (filter, "*.json");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->chooser), filter);
  name = file_name_for (variant);
  gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (self->chooser), name);
  g_signal_connect (self->chooser, "response", G_CALLBACK (on_chooser_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (self->chooser));
}

static void
open_folder_action (GtkWidget  *widget,
                    const char *action_name,
                    GVariant   *parameter)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (widget);
  GtkRoot *root = gtk_widget_get_root (widget);
  g_autofree char *dir = NULL;
  g_autofree char *uri = NULL;

  if (self->last_path == NULL)
    return;
  dir = g_path_get_dirname (self->last_path);
  uri = g_filename_to_uri (dir, NULL, NULL);
  if (uri != NULL)
    gtk_show_uri (GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL, uri, GDK_CURRENT_TIME);
}

/* Life cycle */

static void
disconnect_project (EspalierExportPage *self)
{
  watch_variant (self, NULL);
  if (self->variants != NULL)
    g_signal_handlers_disconnect_by_func (self->variants, on_variants_changed, self);
  self->variants = NULL;
}

static void
espalier_export_page_dispose (GObject *object)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);

  /* A running export holds the page through its task; its callback finishes the job. */
  if (self->job != NULL)
    espalier_job_cancel (self->job);
  if (self->chooser != NULL)
    {
      g_signal_handlers_disconnect_by_func (self->chooser, on_chooser_response, self);
      gtk_native_dialog_destroy (GTK_NATIVE_DIALOG (self->chooser));
      g_clear_object (&self->chooser);
    }
  disconnect_project (self);
  /* The bin's child is a template child: let the bin drop it before the template
   * does, or both would unparent it. */
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_EXPORT_PAGE);
  g_clear_object (&self->project);
  G_OBJECT_CLASS (espalier_export_page_parent_class)->dispose (object);
}

static void
espalier_export_page_finalize (GObject *object)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);

  g_clear_object (&self->job);
  g_free (self->last_path);
  G_OBJECT_CLASS (espalier_export_page_parent_class)->finalize (object);
}

static void
espalier_export_page_get_property (GObject    *object,
                                   guint       prop_id,
                                   GValue     *value,
                                   GParamSpec *pspec)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      g_value_set_object (value, self->project);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_export_page_set_property (GObject      *object,
                                   guint         prop_id,
                                   const GValue *value,
                                   GParamSpec   *pspec)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_export_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_export_page_class_init (EspalierExportPageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_export_page_dispose;
  object_class->finalize = espalier_export_page_finalize;
  object_class->get_property = espalier_export_page_get_property;
  object_class->set_property = espalier_export_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_install_action (widget_class, "export.export", NULL, export_action);
  gtk_widget_class_install_action (widget_class, "export.open-folder", NULL, open_folder_action);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-export-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, variant_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, measurements_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, espalier_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, espalier_format_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, onnx_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, c_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, export_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, last_export_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, last_export_row);
  gtk_widget_class_bind_template_callback (widget_class, on_selected_changed);
}

static void
espalier_export_page_init (EspalierExportPage *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  adw_combo_row_set_expression (self->variant_row,
                                gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, "name"));
  gtk_stack_set_visible_child_name (self->stack, "empty");
  refresh_measurements (self);
}

/* Public API */

EspalierProject *
espalier_export_page_get_project (EspalierExportPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), NULL);
  return self->project;
}

void
espalier_export_page_set_project (EspalierExportPage *self,
                                  EspalierProject    *project)
{
  guint n;

  g_return_if_fail (ESPALIER_IS_EXPORT_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (self->project == project)
    return;

  disconnect_project (self);
  g_set_object (&self->project, project);
  if (project != NULL)
    {
      self->variants = espalier_project_get_variants (project);
      /* After the combo row's own selection model has taken the change in. */
      g_signal_connect_after (self->variants, "items-changed",
                              G_CALLBACK (on_variants_changed), self);
    }
  adw_combo_row_set_model (self->variant_row, self->variants);
  n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  if (n > 0)
    adw_combo_row_set_selected (self->variant_row, n - 1);
  gtk_stack_set_visible_child_name (self->stack, n > 0 ? "export" : "empty");
  gtk_widget_set_visible (GTK_WIDGET (self->last_export_group), FALSE);
  on_selected_changed (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}

EspalierVariant *
espalier_export_page_get_variant (EspalierExportPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), NULL);
  return self->variants != NULL ? adw_combo_row_get_selected_item (self->variant_row) : NULL;
}

void
espalier_export_page_select_variant (EspalierExportPage *self,
                                     EspalierVariant    *variant)
{
  guint n;

  g_return_if_fail (ESPALIER_IS_EXPORT_PAGE (self));
  g_return_if_fail (ESPALIER_IS_VARIANT (variant));

  n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);

      if (v == variant)
        {
          adw_combo_row_set_selected (self->variant_row, i);
          return;
        }
    }
}

gboolean
espalier_export_page_export_to (EspalierExportPage  *self,
                                const char          *path,
                                GError             **error)
{
  g_autoptr(ExportData) data = NULL;

  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  data = export_data_new (self, path, error);
  return data != NULL && export_data_run (data, NULL, error);
}

void
espalier_export_page_export_async (EspalierExportPage  *self,
                                   const char          *path,
                                   GCancellable        *cancellable,
                                   GAsyncReadyCallback  callback,
                                   gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  GError *error = NULL;
  ExportData *data;

  g_return_if_fail (ESPALIER_IS_EXPORT_PAGE (self));
  g_return_if_fail (path != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, espalier_export_page_export_async);
  data = export_data_new (self, path, &error);
  if (data == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  g_task_set_task_data (task, data, (GDestroyNotify) export_data_free);
  g_task_run_in_thread (task, export_thread);
}

gboolean
espalier_export_page_export_finish (EspalierExportPage  *self,
                                    GAsyncResult        *result,
                                    guint64             *bytes,
                                    GError             **error)
{
  ExportData *data;

  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), FALSE);
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == espalier_export_page_export_async,
                        FALSE);

  if (!g_task_propagate_boolean (G_TASK (result), error))
    return FALSE;
  data = g_task_get_task_data (G_TASK (result));
  if (bytes != NULL)
    *bytes = data != NULL ? data->bytes : 0;
  return TRUE;
}
