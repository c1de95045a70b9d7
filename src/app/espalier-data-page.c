/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-data-page.c: the Data page. The controls on the left name a source and its
 * load options; "Load" runs espalier_dataset_load_async, shown as an EspalierJob, and
 * hands the result to the project. The page then shows whatever dataset the project
 * holds: summary figures, the loader's report one line per step, a preview (image grid,
 * table of the first rows, or a scatter plot of a 2-D set) and the rows per class. The
 * split sizes need a pass over the labels, so they come from a second small worker.
 * Nothing here changes a dataset: datasets are immutable once loaded, which is what
 * lets a worker read the shown one.
 *
 * Dimension key: N = rows, F = floats per row, K = classes. */
#include "config.h"

#include <glib/gi18n.h>
#include <math.h>
#include <string.h>

#include "espalier-chart-layers.h"
#include "espalier-data-page.h"
#include "espalier-generate.h"
#include "espalier-image-grid.h"
#include "espalier-job.h"
#include "espalier-split.h"

#define MAX_TABLE_ROWS     200    /* rows of a table preview */
#define MAX_TABLE_FEATURES 100    /* feature columns of a table preview */
#define MAX_SCATTER_POINTS 20000  /* points of a scatter preview (a stride above) */

/* The choices of the source combo row, in order; Fashion-MNIST only when installed. */
typedef struct {
  const char *id;       /* "fashion-mnist", a generator name, or "file" */
  const char *label;    /* translatable */
} SourceChoice;

static const SourceChoice source_choices[] = {
  { "fashion-mnist", N_("Fashion-MNIST") },
  { "spiral",        N_("Spiral") },
  { "moons",         N_("Two moons") },
  { "circles",       N_("Circles") },
  { "xor",           N_("XOR") },
  { "blobs",         N_("Gaussian blobs") },
  { "file",          N_("IDX or CSV file") },
};

/* Load options with their own copies of the strings (EspalierLoadOptions borrows). */
typedef struct {
  EspalierLoadOptions options;  /* strings point at the fields below */
  char               *label_column;
  char               *labels_path;
  char               *cache_dir;
} OwnedOptions;

struct _EspalierDataPage
{
  AdwBin               parent_instance;

  EspalierProject     *project;
  gulong               project_dataset_id;
  EspalierDataset     *dataset;        /* shown */

  GPtrArray           *choice_ids;     /* (element-type utf8) ids of the combo's items */
  char                *file_path;      /* the chosen file, or NULL */
  OwnedOptions         base_options;   /* what the controls do not show (cache, labels) */
  gboolean             syncing;        /* controls are being set from a source */

  EspalierJob         *job;            /* the running load, or NULL */
  gboolean             loading;
  guint                load_serial;    /* bumps with every load; stale results drop */
  GCancellable        *summary_cancellable;
  guint                summary_serial;
  char                *error_text;
  GtkFileChooserNative *file_chooser;

  EspalierSeries      *scatter_series;
  EspalierChartLayer  *scatter_layer;
  EspalierChartLayer  *bars_layer;

  /* template children */
  AdwComboRow         *source_row;
  AdwActionRow        *file_row;
  GtkButton           *open_button;
  AdwActionRow        *samples_row;
  GtkSpinButton       *samples_spin;
  AdwActionRow        *classes_row;
  GtkSpinButton       *classes_spin;
  AdwActionRow        *noise_row;
  GtkSpinButton       *noise_spin;
  AdwActionRow        *seed_row;
  GtkSpinButton       *seed_spin;
  AdwPreferencesGroup *csv_group;
  AdwEntryRow         *label_column_row;
  GtkSwitch           *one_hot_switch;
  GtkSwitch           *ffill_switch;
  GtkSwitch           *drop_duplicates_switch;
  GtkSwitch           *mean_fill_switch;
  GtkSwitch           *standardize_switch;
  GtkSwitch           *minmax_switch;
  GtkSpinButton       *val_spin;
  AdwActionRow        *test_row;
  GtkSpinButton       *test_spin;
  GtkButton           *load_button;
  GtkSpinner          *spinner;
  GtkWidget           *summary_box;
  GtkLabel            *name_label;
  GtkLabel            *rows_label;
  GtkLabel            *shape_label;
  GtkLabel            *classes_label;
  GtkLabel            *split_label;
  GtkLabel            *origin_label;
  GtkWidget           *report_box;
  GtkListBox          *report_list;
  GtkRevealer         *error_revealer;
  GtkLabel            *error_label;
  GtkLabel            *preview_title;
  GtkStack            *preview_stack;
  GtkSpinner          *loading_spinner;
  EspalierImageGrid   *image_grid;
  GtkColumnView       *table_view;
  EspalierChart       *scatter_chart;
  EspalierChart       *bars_chart;
  GtkWidget           *bottom_box;
};

G_DEFINE_FINAL_TYPE (EspalierDataPage, espalier_data_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, PROP_LOADING, PROP_ERROR_TEXT, N_PROPS };
static GParamSpec *properties[N_PROPS];

static void show_dataset (EspalierDataPage *self,
                          EspalierDataset  *dataset);

GtkWidget *
espalier_data_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_DATA_PAGE, NULL);
}

/* Owned options ------------------------------------------------------------------- */

static void
owned_options_clear (OwnedOptions *o)
{
  g_clear_pointer (&o->label_column, g_free);
  g_clear_pointer (&o->labels_path, g_free);
  g_clear_pointer (&o->cache_dir, g_free);
}

static void
owned_options_set (OwnedOptions              *o,
                   const EspalierLoadOptions *options)
{
  EspalierLoadOptions defaults;

  if (options == NULL)
    {
      espalier_load_options_init (&defaults);
      options = &defaults;
    }
  /* options may point into o: copy the strings before freeing. */
  {
    char *label_column = g_strdup (options->label_column);
    char *labels_path = g_strdup (options->labels_path);
    char *cache_dir = g_strdup (options->cache_dir);

    o->options = *options;
    owned_options_clear (o);
    o->label_column = label_column;
    o->labels_path = labels_path;
    o->cache_dir = cache_dir;
  }
  o->options.label_column = o->label_column;
  o->options.labels_path = o->labels_path;
  o->options.cache_dir = o->cache_dir;
}

/* Loads ---------------------------------------------------------------------------- */

/* One load as the page sees it: the page may be gone when it ends. */
typedef struct {
  GWeakRef      page;
  guint         serial;
  EspalierJob  *job;
  OwnedOptions  options;
} LoadData;

static void
load_data_free (LoadData *ld)
{
  g_weak_ref_clear (&ld->page);
  g_clear_object (&ld->job);
  owned_options_clear (&ld->options);
  g_free (ld);
}

/* The summary worker: split sizes of the shown dataset ---------------------------- */

typedef struct {
  EspalierDataset *dataset;
  double           val_fraction;
  double           test_fraction;
  guint64          seed;
} SummaryTaskData;

typedef struct {
  guint train, val, test;
} SplitSizes;

static void
summary_task_data_free (gpointer data)
{
  SummaryTaskData *td = data;

  g_clear_object (&td->dataset);
  g_free (td);
}

static void
summary_thread (GTask        *task,
                gpointer      source_object,
                gpointer      task_data,
                GCancellable *cancellable)
{
  SummaryTaskData *td = task_data;
  g_autoptr(EspalierSplit) split = NULL;
  GError *error = NULL;
  SplitSizes *sizes;

  split = espalier_split_new (td->dataset, td->val_fraction, td->test_fraction, td->seed, &error);
  if (split == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  sizes = g_new (SplitSizes, 1);
  sizes->train = split->train->len;
  sizes->val = split->val->len;
  sizes->test = split->test->len;
  g_task_return_pointer (task, sizes, g_free);
}

typedef struct {
  GWeakRef page;
  guint    serial;
} SummaryData;

static void
summary_done_cb (GObject      *source_object,
                 GAsyncResult *result,
                 gpointer      user_data)
{
  SummaryData *sd = user_data;
  g_autoptr(EspalierDataPage) self = g_weak_ref_get (&sd->page);
  g_autoptr(GError) error = NULL;
  g_autofree SplitSizes *sizes = g_task_propagate_pointer (G_TASK (result), &error);

  if (self != NULL && sd->serial == self->summary_serial)
    {
      if (sizes != NULL)
        {
          g_autofree char *text = g_strdup_printf ("%u / %u / %u", sizes->train, sizes->val, sizes->test);

          gtk_label_set_label (self->split_label, text);
          gtk_widget_set_tooltip_text (GTK_WIDGET (self->split_label), NULL);
        }
      else if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          gtk_label_set_label (self->split_label, _("Invalid"));
          gtk_widget_set_tooltip_text (GTK_WIDGET (self->split_label), error->message);
        }
      g_clear_object (&self->summary_cancellable);
    }
  g_weak_ref_clear (&sd->page);
  g_free (sd);
}

static void
start_summary (EspalierDataPage          *self,
               EspalierDataset           *dataset,
               const EspalierLoadOptions *options)
{
  g_autoptr(GTask) task = NULL;
  SummaryTaskData *td;
  SummaryData *sd;

  if (self->summary_cancellable != NULL)
    g_cancellable_cancel (self->summary_cancellable);
  g_clear_object (&self->summary_cancellable);
  self->summary_serial++;
  if (dataset == NULL)
    return;

  self->summary_cancellable = g_cancellable_new ();
  sd = g_new0 (SummaryData, 1);
  g_weak_ref_init (&sd->page, self);
  sd->serial = self->summary_serial;
  td = g_new0 (SummaryTaskData, 1);
  td->dataset = g_object_ref (dataset);
  td->val_fraction = options->val_fraction;
  td->test_fraction = options->test_fraction;
  td->seed = options->split_seed;

  task = g_task_new (NULL, self->summary_cancellable, summary_done_cb, sd);
  g_task_set_source_tag (task, start_summary);
  g_task_set_task_data (task, td, summary_task_data_free);
  g_task_run_in_thread (task, summary_thread);
}

/* Controls ------------------------------------------------------------------------- */

static const char *
selected_choice (EspalierDataPage *self)
{
  guint i = adw_combo_row_get_selected (self->source_row);

  return i < self->choice_ids->len ? g_ptr_array_index (self->choice_ids, i) : "file";
}

static void
select_choice (EspalierDataPage *self,
               const char       *id)
{
  guint i;

  if (g_ptr_array_find_with_equal_func (self->choice_ids, id, g_str_equal, &i))
    adw_combo_row_set_selected (self->source_row, i);
}

/* Whether path names an IDX file (CSV options do not apply). */
static gboolean
looks_like_idx (const char *path)
{
  g_autofree char *base = g_ascii_strdown (path, -1);

  return strstr (base, "idx") != NULL || strstr (base, "ubyte") != NULL;
}

static void
update_source_rows (EspalierDataPage *self)
{
  const char *id = selected_choice (self);
  gboolean is_file = g_str_equal (id, "file");
  gboolean is_generator = espalier_generate_is_spec (id);
  gboolean has_classes = g_str_equal (id, "spiral") || g_str_equal (id, "blobs");
  gboolean predefined = g_str_equal (id, "fashion-mnist");

  gtk_widget_set_visible (GTK_WIDGET (self->file_row), is_file);
  gtk_widget_set_visible (GTK_WIDGET (self->samples_row), is_generator);
  gtk_widget_set_visible (GTK_WIDGET (self->noise_row), is_generator);
  gtk_widget_set_visible (GTK_WIDGET (self->seed_row), is_generator);
  gtk_widget_set_visible (GTK_WIDGET (self->classes_row), has_classes);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->classes_row),
                                 g_str_equal (id, "blobs") ? _("Centers") : _("Arms"));
  gtk_widget_set_visible (GTK_WIDGET (self->csv_group),
                          is_file && self->file_path != NULL && !looks_like_idx (self->file_path));
  gtk_widget_set_sensitive (GTK_WIDGET (self->test_spin), !predefined);
  adw_action_row_set_subtitle (self->test_row,
                               predefined ? _("Fashion-MNIST keeps its own test set") : "");
  adw_action_row_set_subtitle (self->file_row,
                               self->file_path != NULL ? self->file_path : _("None chosen"));
}

static void
set_generator_params (EspalierDataPage             *self,
                      const EspalierGenerateParams *params)
{
  gtk_spin_button_set_value (self->samples_spin, params->n);
  gtk_spin_button_set_value (self->classes_spin, params->k);
  gtk_spin_button_set_value (self->noise_spin, params->noise);
  gtk_spin_button_set_value (self->seed_spin, (double) params->seed);
}

/* Show source and options in the controls. */
static void
sync_controls (EspalierDataPage          *self,
               const char                *source,
               const EspalierLoadOptions *options)
{
  EspalierLoadOptions defaults;
  EspalierGenerateParams params;

  if (options == NULL)
    {
      espalier_load_options_init (&defaults);
      options = &defaults;
    }
  self->syncing = TRUE;

  if (source != NULL && espalier_generate_is_spec (source)
      && espalier_generate_parse_spec (source, &params, NULL))
    {
      g_autofree char *name = g_strdup (source);

      *strchrnul (name, ':') = '\0';
      select_choice (self, g_str_equal (name, "gaussian") ? "blobs" : name);
      set_generator_params (self, &params);
    }
  else if (g_strcmp0 (source, "fashion-mnist") == 0)
    select_choice (self, "fashion-mnist");
  else if (source != NULL)
    {
      g_free (self->file_path);
      self->file_path = g_strdup (source);
      select_choice (self, "file");
    }

  gtk_editable_set_text (GTK_EDITABLE (self->label_column_row),
                         options->label_column != NULL ? options->label_column : "");
  gtk_switch_set_active (self->one_hot_switch, options->one_hot);
  gtk_switch_set_active (self->ffill_switch, options->ffill);
  gtk_switch_set_active (self->drop_duplicates_switch, options->drop_duplicates);
  gtk_switch_set_active (self->mean_fill_switch, options->mean_fill);
  gtk_switch_set_active (self->standardize_switch, options->standardize);
  gtk_switch_set_active (self->minmax_switch, options->minmax);
  gtk_spin_button_set_value (self->val_spin, options->val_fraction);
  gtk_spin_button_set_value (self->test_spin, options->test_fraction);
  owned_options_set (&self->base_options, options);

  self->syncing = FALSE;
  update_source_rows (self);
}

/* The source the controls name; NULL with an error when there is none. */
static char *
controls_source (EspalierDataPage  *self,
                 GError           **error)
{
  const char *id = selected_choice (self);
  EspalierGenerateParams params;

  if (g_str_equal (id, "file"))
    {
      if (self->file_path == NULL)
        g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                             _("No file chosen: use “Open File…” to pick an IDX or CSV file"));
      return g_strdup (self->file_path);
    }
  if (!espalier_generate_is_spec (id))
    return g_strdup (id);

  if (!espalier_generate_parse_spec (id, &params, error))
    return NULL;
  params.n = (guint) gtk_spin_button_get_value_as_int (self->samples_spin);
  params.noise = gtk_spin_button_get_value (self->noise_spin);
  params.seed = (guint64) gtk_spin_button_get_value (self->seed_spin);
  if (params.kind == ESPALIER_GENERATOR_SPIRAL || params.kind == ESPALIER_GENERATOR_BLOBS)
    params.k = (guint) gtk_spin_button_get_value_as_int (self->classes_spin);
  return espalier_generate_params_to_spec (&params);
}

/* The load options the controls name, over the base options. Strings borrowed from
 * the controls and the page. */
static void
controls_options (EspalierDataPage    *self,
                  EspalierLoadOptions *options)
{
  const char *label_column = gtk_editable_get_text (GTK_EDITABLE (self->label_column_row));

  *options = self->base_options.options;
  options->label_column = label_column != NULL && *label_column != '\0' ? label_column : NULL;
  options->one_hot = gtk_switch_get_active (self->one_hot_switch);
  options->ffill = gtk_switch_get_active (self->ffill_switch);
  options->drop_duplicates = gtk_switch_get_active (self->drop_duplicates_switch);
  options->mean_fill = gtk_switch_get_active (self->mean_fill_switch);
  options->standardize = gtk_switch_get_active (self->standardize_switch);
  options->minmax = gtk_switch_get_active (self->minmax_switch);
  options->val_fraction = gtk_spin_button_get_value (self->val_spin);
  options->test_fraction = gtk_spin_button_get_value (self->test_spin);
}

/* Errors --------------------------------------------------------------------------- */

static void
set_error_text (EspalierDataPage *self,
                const char       *text)
{
  if (g_strcmp0 (self->error_text, text) == 0)
    return;
  g_free (self->error_text);
  self->error_text = g_strdup (text);
  if (text != NULL)
    gtk_label_set_label (self->error_label, text);
  gtk_revealer_set_reveal_child (self->error_revealer, text != NULL);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_ERROR_TEXT]);
}

static void
show_error (EspalierDataPage *self,
            const char       *message)
{
  set_error_text (self, message);
  espalier_show_toast (GTK_WIDGET (self), message);
}

/* Loading -------------------------------------------------------------------------- */

static void
set_loading (EspalierDataPage *self,
             gboolean          loading)
{
  gboolean changed = self->loading != loading;

  self->loading = loading;
  gtk_spinner_set_spinning (self->spinner, loading);
  gtk_spinner_set_spinning (self->loading_spinner, loading);
  if (self->dataset == NULL)
    gtk_stack_set_visible_child_name (self->preview_stack, loading ? "loading" : "empty");
  if (changed)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_LOADING]);
}

static void
load_done_cb (GObject      *source_object,
              GAsyncResult *result,
              gpointer      user_data)
{
  LoadData *ld = user_data;
  g_autoptr(EspalierDataPage) self = g_weak_ref_get (&ld->page);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) dataset = espalier_dataset_load_finish (result, &error);
  gboolean current = self != NULL && ld->serial == self->load_serial;
  gboolean cancelled = g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* The page reports a failed load itself (inline and as a toast), and the previous
   * dataset stays: the job ends without an error, so the window adds no dialog. */
  espalier_job_finish (ld->job, cancelled ? error : NULL);

  if (current)
    {
      g_clear_object (&self->job);
      if (dataset != NULL)
        {
          set_error_text (self, NULL);
          if (self->project != NULL)
            espalier_project_set_dataset (self->project, dataset, &ld->options.options);
          if (self->dataset != dataset)
            show_dataset (self, dataset);
        }
      else if (!cancelled)
        show_error (self, error->message);
      set_loading (self, FALSE);
    }
  load_data_free (ld);
}

static void
start_load (EspalierDataPage          *self,
            const char                *source,
            const EspalierLoadOptions *options)
{
  g_autofree char *status = NULL;
  LoadData *ld;

  if (self->job != NULL)
    {
      espalier_job_cancel (self->job);
      g_clear_object (&self->job);
    }
  self->load_serial++;

  self->job = espalier_job_new (_("Loading Dataset"));
  espalier_job_set_fraction (self->job, -1);
  status = g_path_get_basename (source);
  espalier_job_set_status (self->job, espalier_generate_is_spec (source) ? source : status);

  ld = g_new0 (LoadData, 1);
  g_weak_ref_init (&ld->page, self);
  ld->serial = self->load_serial;
  ld->job = g_object_ref (self->job);
  owned_options_set (&ld->options, options);

  set_loading (self, TRUE);
  espalier_job_show (self->job, GTK_WIDGET (self));
  espalier_dataset_load_async (source, &ld->options.options,
                               espalier_job_get_cancellable (self->job), load_done_cb, ld);
}

/* Showing a dataset ---------------------------------------------------------------- */

static char *
format_value (EspalierDataset *dataset,
              guint            row,
              guint            col)
{
  gsize F = espalier_dataset_get_row_size (dataset);
  double v;

  if (espalier_dataset_is_u8 (dataset))
    v = espalier_dataset_get_u8 (dataset)[row * F + col] * (double) espalier_dataset_get_scale (dataset)
        + espalier_dataset_get_shift (dataset);
  else
    v = espalier_dataset_get_f32 (dataset)[row * F + col];
  if (isnan (v))
    return g_strdup ("—");
  return g_strdup_printf ("%.4g", v);
}

/* Column kinds: the row number, feature i (>= 0), the label, target i. */
#define COLUMN_ROW    (-1)
#define COLUMN_LABEL  (-2)
#define COLUMN_TARGET (-1000)

static void
table_setup_cb (GtkSignalListItemFactory *factory,
                GtkListItem              *item,
                gpointer                  user_data)
{
  int column = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (factory), "column"));
  GtkWidget *label = gtk_label_new (NULL);

  /* Numbers right-aligned with even digits, class names left-aligned. */
  if (column == COLUMN_LABEL)
    gtk_label_set_xalign (GTK_LABEL (label), 0);
  else
    {
      gtk_label_set_xalign (GTK_LABEL (label), 1);
      gtk_widget_add_css_class (label, "numeric");
    }
  gtk_list_item_set_child (item, label);
}

static void
table_bind_cb (GtkSignalListItemFactory *factory,
               GtkListItem              *item,
               EspalierDataPage         *self)
{
  GtkLabel *label = GTK_LABEL (gtk_list_item_get_child (item));
  GtkStringObject *string = gtk_list_item_get_item (item);
  int column = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (factory), "column"));
  guint row = (guint) g_ascii_strtoull (gtk_string_object_get_string (string), NULL, 10);
  EspalierDataset *dataset = self->dataset;
  g_autofree char *text = NULL;

  if (dataset == NULL || row >= espalier_dataset_get_n_rows (dataset))
    ;
  else if (column == COLUMN_ROW)
    text = g_strdup_printf ("%u", row);
  else if (column == COLUMN_LABEL)
    text = g_strdup (espalier_dataset_get_class_name (dataset,
                                                      (guint) espalier_dataset_get_labels (dataset)[row]));
  else if (column <= COLUMN_TARGET)
    {
      guint t = (guint) (COLUMN_TARGET - column);

      text = g_strdup_printf ("%.4g",
                              espalier_dataset_get_targets (dataset)[row * espalier_dataset_get_n_targets (dataset) + t]);
    }
  else
    text = format_value (dataset, row, (guint) column);
  gtk_label_set_label (label, text != NULL ? text : "");
}

static void
add_table_column (EspalierDataPage *self,
                  const char       *title,
                  int               column)
{
  GtkListItemFactory *factory = gtk_signal_list_item_factory_new ();
  GtkColumnViewColumn *view_column;

  g_object_set_data (G_OBJECT (factory), "column", GINT_TO_POINTER (column));
  g_signal_connect (factory, "setup", G_CALLBACK (table_setup_cb), NULL);
  g_signal_connect (factory, "bind", G_CALLBACK (table_bind_cb), self);
  view_column = gtk_column_view_column_new (title, factory);
  gtk_column_view_column_set_resizable (view_column, TRUE);
  gtk_column_view_column_set_expand (view_column, column != COLUMN_ROW);
  gtk_column_view_append_column (self->table_view, view_column);
  g_object_unref (view_column);
}

static void
clear_table (EspalierDataPage *self)
{
  GListModel *columns = gtk_column_view_get_columns (self->table_view);

  gtk_column_view_set_model (self->table_view, NULL);
  while (g_list_model_get_n_items (columns) > 0)
    {
      g_autoptr(GtkColumnViewColumn) column = g_list_model_get_item (columns, 0);

      gtk_column_view_remove_column (self->table_view, column);
    }
}

static void
fill_table (EspalierDataPage *self,
            EspalierDataset  *dataset)
{
  guint n = MIN (espalier_dataset_get_n_rows (dataset), MAX_TABLE_ROWS);
  guint F = espalier_dataset_get_row_size (dataset);
  g_autoptr(GtkStringList) rows = gtk_string_list_new (NULL);
  g_autoptr(GtkSelectionModel) selection = NULL;

  add_table_column (self, "#", COLUMN_ROW);
  for (guint i = 0; i < MIN (F, MAX_TABLE_FEATURES); i++)
    add_table_column (self, espalier_dataset_get_feature_name (dataset, i), (int) i);
  if (espalier_dataset_get_labels (dataset) != NULL)
    add_table_column (self, _("label"), COLUMN_LABEL);
  else
    for (guint t = 0; t < espalier_dataset_get_n_targets (dataset); t++)
      {
        g_autofree char *title = g_strdup_printf (_("target %u"), t);

        add_table_column (self, title, COLUMN_TARGET - (int) t);
      }

  for (guint i = 0; i < n; i++)
    {
      char number[16];

      g_snprintf (number, sizeof number, "%u", i);
      gtk_string_list_append (rows, number);
    }
  selection = GTK_SELECTION_MODEL (gtk_no_selection_new (G_LIST_MODEL (g_steal_pointer (&rows))));
  gtk_column_view_set_model (self->table_view, selection);
}

static void
fill_scatter (EspalierDataPage *self,
              EspalierDataset  *dataset)
{
  guint N = espalier_dataset_get_n_rows (dataset);
  guint F = espalier_dataset_get_row_size (dataset);
  guint stride = MAX (1, (N + MAX_SCATTER_POINTS - 1) / MAX_SCATTER_POINTS);
  guint n = (N + stride - 1) / stride;
  const float *x = espalier_dataset_get_f32 (dataset); /* (N, F) */
  const gint32 *labels = espalier_dataset_get_labels (dataset);
  g_autofree double *px = g_new (double, MAX (n, 1));
  g_autofree double *py = g_new (double, MAX (n, 1));
  g_autofree guint *klass = labels != NULL ? g_new (guint, MAX (n, 1)) : NULL;

  for (guint i = 0, j = 0; i < N && j < n; i += stride, j++)
    {
      px[j] = x[(gsize) i * F];
      py[j] = x[(gsize) i * F + 1];
      if (klass != NULL)
        klass[j] = (guint) labels[i];
    }
  espalier_series_set_data (self->scatter_series, px, py, klass, n);
  espalier_chart_layer_set_title (self->scatter_layer, espalier_dataset_get_name (dataset));
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->scatter_chart),
                                 espalier_dataset_get_feature_name (dataset, 0));
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->scatter_chart),
                                 espalier_dataset_get_feature_name (dataset, 1));
}

static void
fill_class_counts (EspalierDataPage *self,
                   EspalierDataset  *dataset)
{
  guint K = espalier_dataset_get_n_classes (dataset);
  guint N = espalier_dataset_get_n_rows (dataset);
  const gint32 *labels = espalier_dataset_get_labels (dataset); /* (N) */
  g_autofree double *counts = g_new0 (double, MAX (K, 1));
  g_autofree const char **names = g_new0 (const char *, K + 1);

  if (labels == NULL || K == 0)
    {
      espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (self->bars_layer), NULL, NULL, 0);
      gtk_widget_set_visible (GTK_WIDGET (self->bars_chart), FALSE);
      return;
    }
  for (guint i = 0; i < N; i++)
    if (labels[i] >= 0 && (guint) labels[i] < K)
      counts[labels[i]]++;
  for (guint k = 0; k < K; k++)
    names[k] = espalier_dataset_get_class_name (dataset, k);
  espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (self->bars_layer), counts, names, K);
  gtk_widget_set_visible (GTK_WIDGET (self->bars_chart), TRUE);
}

static void
fill_report (EspalierDataPage *self,
             EspalierDataset  *dataset)
{
  GPtrArray *report = dataset != NULL ? espalier_dataset_get_report (dataset) : NULL;
  GtkWidget *child;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->report_list))) != NULL)
    gtk_list_box_remove (self->report_list, child);
  for (guint i = 0; report != NULL && i < report->len; i++)
    {
      GtkWidget *label = gtk_label_new (g_ptr_array_index (report, i));

      gtk_label_set_xalign (GTK_LABEL (label), 0);
      gtk_label_set_wrap (GTK_LABEL (label), TRUE);
      gtk_label_set_wrap_mode (GTK_LABEL (label), PANGO_WRAP_WORD_CHAR);
      gtk_label_set_selectable (GTK_LABEL (label), TRUE);
      gtk_widget_set_margin_start (label, 12);
      gtk_widget_set_margin_end (label, 12);
      gtk_widget_set_margin_top (label, 10);
      gtk_widget_set_margin_bottom (label, 10);
      gtk_list_box_append (self->report_list, label);
      gtk_list_box_row_set_activatable (GTK_LIST_BOX_ROW (gtk_widget_get_parent (label)), FALSE);
    }
  gtk_widget_set_visible (self->report_box, report != NULL && report->len > 0);
}

static void
fill_summary (EspalierDataPage *self,
              EspalierDataset  *dataset)
{
  const guint *dims = espalier_dataset_get_dims (dataset);
  guint K = espalier_dataset_get_n_classes (dataset);
  g_autofree char *rows = g_strdup_printf ("%u", espalier_dataset_get_n_rows (dataset));
  g_autofree char *shape = NULL;
  g_autofree char *classes = NULL;
  const char *source = espalier_dataset_get_source (dataset);

  if (espalier_dataset_get_rank (dataset) == 3)
    shape = g_strdup_printf ("%u × %u × %u", dims[0], dims[1], dims[2]);
  else
    shape = g_strdup_printf ("%u", espalier_dataset_get_row_size (dataset));
  if (K > 0)
    classes = g_strdup_printf ("%u", K);
  else
    classes = g_strdup_printf (ngettext ("None (%u target)", "None (%u targets)",
                                         espalier_dataset_get_n_targets (dataset)),
                               espalier_dataset_get_n_targets (dataset));

  gtk_label_set_label (self->name_label, espalier_dataset_get_name (dataset));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->name_label), source);
  gtk_label_set_label (self->rows_label, rows);
  gtk_label_set_label (self->shape_label, shape);
  gtk_label_set_label (self->classes_label, classes);
  gtk_label_set_label (self->split_label, "…");
  if (espalier_dataset_is_from_cache (dataset))
    gtk_label_set_label (self->origin_label, _("Cache"));
  else if (source != NULL && espalier_generate_is_spec (source))
    gtk_label_set_label (self->origin_label, _("Generator"));
  else
    gtk_label_set_label (self->origin_label, _("Source files"));
}

static const EspalierLoadOptions *
shown_options (EspalierDataPage    *self,
               EspalierLoadOptions *scratch)
{
  if (self->project != NULL && espalier_project_get_dataset (self->project) == self->dataset)
    return espalier_project_get_load_options (self->project);
  controls_options (self, scratch);
  return scratch;
}

static void
show_dataset (EspalierDataPage *self,
              EspalierDataset  *dataset)
{
  EspalierLoadOptions scratch;
  const char *kind;
  g_autofree char *title = NULL;
  guint N;

  g_set_object (&self->dataset, dataset);

  espalier_image_grid_set_dataset (self->image_grid, NULL);
  clear_table (self);
  espalier_series_clear (self->scatter_series);
  fill_report (self, dataset);

  if (dataset == NULL)
    {
      start_summary (self, NULL, NULL);
      gtk_widget_set_visible (self->summary_box, FALSE);
      gtk_widget_set_visible (self->bottom_box, FALSE);
      gtk_widget_set_visible (GTK_WIDGET (self->bars_chart), FALSE);
      gtk_widget_set_visible (GTK_WIDGET (self->preview_title), FALSE);
      espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (self->bars_layer), NULL, NULL, 0);
      gtk_stack_set_visible_child_name (self->preview_stack, self->loading ? "loading" : "empty");
      return;
    }

  N = espalier_dataset_get_n_rows (dataset);
  fill_summary (self, dataset);
  gtk_widget_set_visible (self->summary_box, TRUE);
  gtk_widget_set_visible (self->bottom_box, TRUE);
  start_summary (self, dataset, shown_options (self, &scratch));
  fill_class_counts (self, dataset);

  if (espalier_dataset_get_rank (dataset) == 3)
    {
      kind = "images";
      espalier_image_grid_set_dataset (self->image_grid, dataset);
      title = g_strdup_printf (_("First %u of %u images"),
                               espalier_image_grid_get_n_images (self->image_grid), N);
    }
  else if (espalier_dataset_get_row_size (dataset) == 2 && espalier_dataset_get_f32 (dataset) != NULL
           && espalier_generate_is_spec (espalier_dataset_get_source (dataset)))
    {
      kind = "points";
      fill_scatter (self, dataset);
      title = g_strdup_printf (ngettext ("%u point", "%u points", N), N);
    }
  else
    {
      kind = "table";
      fill_table (self, dataset);
      title = g_strdup_printf (_("First %u of %u rows"), MIN (N, MAX_TABLE_ROWS), N);
    }
  gtk_label_set_label (self->preview_title, title);
  gtk_widget_set_visible (GTK_WIDGET (self->preview_title), TRUE);
  gtk_stack_set_visible_child_name (self->preview_stack, kind);
}

/* Callbacks ------------------------------------------------------------------------ */

static void
project_dataset_cb (EspalierDataPage *self,
                    GParamSpec       *pspec,
                    EspalierProject  *project)
{
  EspalierDataset *dataset = espalier_project_get_dataset (project);

  if (dataset != self->dataset)
    show_dataset (self, dataset);
}

static void
source_selected_cb (EspalierDataPage *self)
{
  const char *id = selected_choice (self);

  if (!self->syncing && espalier_generate_is_spec (id))
    {
      EspalierGenerateParams params;

      if (espalier_generate_parse_spec (id, &params, NULL))
        set_generator_params (self, &params);
    }
  update_source_rows (self);
}

static void
scaling_switch_cb (EspalierDataPage *self,
                   GParamSpec       *pspec,
                   GtkSwitch        *toggled)
{
  /* Standardize and min-max scale exclude each other. */
  if (!gtk_switch_get_active (toggled))
    return;
  if (toggled == self->standardize_switch)
    gtk_switch_set_active (self->minmax_switch, FALSE);
  else
    gtk_switch_set_active (self->standardize_switch, FALSE);
}

static void
load_clicked_cb (EspalierDataPage *self)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *source = controls_source (self, &error);
  EspalierLoadOptions options;

  if (source == NULL)
    {
      show_error (self, error->message);
      return;
    }
  controls_options (self, &options);
  start_load (self, source, &options);
}

static void
dismiss_error_cb (EspalierDataPage *self)
{
  set_error_text (self, NULL);
}

static void
file_chooser_response_cb (EspalierDataPage     *self,
                          int                   response,
                          GtkFileChooserNative *chooser)
{
  g_autoptr(GFile) file = NULL;
  g_autofree char *path = NULL;

  if (response == GTK_RESPONSE_ACCEPT)
    file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (chooser));
  g_clear_object (&self->file_chooser);
  if (file == NULL)
    return;
  path = g_file_get_path (file);
  if (path == NULL)
    {
      show_error (self, _("Only local files can be loaded"));
      return;
    }
  g_free (self->file_path);
  self->file_path = g_steal_pointer (&path);
  self->syncing = TRUE;
  select_choice (self, "file");
  self->syncing = FALSE;
  update_source_rows (self);
  load_clicked_cb (self);
}

static void
open_clicked_cb (EspalierDataPage *self)
{
  GtkRoot *root = gtk_widget_get_root (GTK_WIDGET (self));
  GtkFileFilter *filter;

  if (self->file_chooser != NULL)
    return;
  self->file_chooser = gtk_file_chooser_native_new (_("Open a Dataset"),
                                                    GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                                    GTK_FILE_CHOOSER_ACTION_OPEN,
                                                    _("_Open"), _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (self->file_chooser), TRUE);

  filter = gtk_file_filter_new ();
  gtk_file_filter_set_name (filter, _("IDX and CSV files"));
  gtk_file_filter_add_pattern (filter, "*.csv");
  gtk_file_filter_add_pattern (filter, "*.csv.gz");
  gtk_file_filter_add_pattern (filter, "*.tsv");
  gtk_file_filter_add_pattern (filter, "*.txt");
  gtk_file_filter_add_pattern (filter, "*.idx");
  gtk_file_filter_add_pattern (filter, "*-ubyte");
  gtk_file_filter_add_pattern (filter, "*-ubyte.gz");
  gtk_file_filter_add_pattern (filter, "*.idx*");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->file_chooser), filter);
  g_object_unref (filter);

  filter = gtk_file_filter_new ();
  gtk_file_filter_set_name (filter, _("CSV files"));
  gtk_file_filter_add_pattern (filter, "*.csv");
  gtk_file_filter_add_pattern (filter, "*.csv.gz");
  gtk_file_filter_add_pattern (filter, "*.tsv");
  gtk_file_filter_add_pattern (filter, "*.txt");
  gtk_file_filter_add_mime_type (filter, "text/csv");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->file_chooser), filter);
  g_object_unref (filter);

  filter = gtk_file_filter_new ();
  gtk_file_filter_set_name (filter, _("IDX files"));
  gtk_file_filter_add_pattern (filter, "*.idx*");
  gtk_file_filter_add_pattern (filter, "*-ubyte");
  gtk_file_filter_add_pattern (filter, "*-ubyte.gz");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->file_chooser), filter);
  g_object_unref (filter);

  g_signal_connect_object (self->file_chooser, "response",
                           G_CALLBACK (file_chooser_response_cb), self, G_CONNECT_SWAPPED);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (self->file_chooser));
}

/* GObject -------------------------------------------------------------------------- */

static void
espalier_data_page_dispose (GObject *object)
{
  EspalierDataPage *self = ESPALIER_DATA_PAGE (object);

  if (self->job != NULL)
    espalier_job_cancel (self->job);
  g_clear_object (&self->job);
  if (self->summary_cancellable != NULL)
    g_cancellable_cancel (self->summary_cancellable);
  g_clear_object (&self->summary_cancellable);
  if (self->file_chooser != NULL)
    gtk_native_dialog_destroy (GTK_NATIVE_DIALOG (self->file_chooser));
  g_clear_object (&self->file_chooser);
  if (self->project != NULL)
    g_clear_signal_handler (&self->project_dataset_id, self->project);
  g_clear_object (&self->project);

  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_DATA_PAGE);
  g_clear_object (&self->dataset);
  g_clear_object (&self->scatter_layer);
  g_clear_object (&self->scatter_series);
  g_clear_object (&self->bars_layer);

  G_OBJECT_CLASS (espalier_data_page_parent_class)->dispose (object);
}

static void
espalier_data_page_finalize (GObject *object)
{
  EspalierDataPage *self = ESPALIER_DATA_PAGE (object);

  g_ptr_array_unref (self->choice_ids);
  g_free (self->file_path);
  g_free (self->error_text);
  owned_options_clear (&self->base_options);
  G_OBJECT_CLASS (espalier_data_page_parent_class)->finalize (object);
}

static void
espalier_data_page_get_property (GObject    *object,
                                 guint       prop_id,
                                 GValue     *value,
                                 GParamSpec *pspec)
{
  EspalierDataPage *self = ESPALIER_DATA_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      g_value_set_object (value, self->project);
      break;
    case PROP_LOADING:
      g_value_set_boolean (value, espalier_data_page_get_loading (self));
      break;
    case PROP_ERROR_TEXT:
      g_value_set_string (value, self->error_text);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_data_page_set_property (GObject      *object,
                                 guint         prop_id,
                                 const GValue *value,
                                 GParamSpec   *pspec)
{
  EspalierDataPage *self = ESPALIER_DATA_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_data_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_data_page_class_init (EspalierDataPageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_data_page_dispose;
  object_class->finalize = espalier_data_page_finalize;
  object_class->get_property = espalier_data_page_get_property;
  object_class->set_property = espalier_data_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_LOADING] =
    g_param_spec_boolean ("loading", NULL, NULL, FALSE,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_ERROR_TEXT] =
    g_param_spec_string ("error-text", NULL, NULL, NULL,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  g_type_ensure (ESPALIER_TYPE_CHART);
  g_type_ensure (ESPALIER_TYPE_IMAGE_GRID);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-data-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, source_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, file_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, open_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, samples_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, samples_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, classes_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, classes_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, noise_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, noise_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, seed_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, seed_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, csv_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, label_column_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, one_hot_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, ffill_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, drop_duplicates_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, mean_fill_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, standardize_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, minmax_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, val_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, test_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, test_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, load_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, spinner);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, summary_box);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, name_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, rows_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, shape_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, classes_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, split_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, origin_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, report_box);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, report_list);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, error_revealer);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, error_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, preview_title);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, preview_stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, loading_spinner);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, image_grid);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, table_view);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, scatter_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, bars_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierDataPage, bottom_box);
  gtk_widget_class_bind_template_callback (widget_class, open_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, load_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, scaling_switch_cb);
  gtk_widget_class_bind_template_callback (widget_class, dismiss_error_cb);
}

static void
espalier_data_page_init (EspalierDataPage *self)
{
  g_autoptr(GtkStringList) labels = gtk_string_list_new (NULL);
  EspalierChartAxis *axis;

  gtk_widget_init_template (GTK_WIDGET (self));

  self->choice_ids = g_ptr_array_new ();
  for (guint i = 0; i < G_N_ELEMENTS (source_choices); i++)
    {
      if (g_str_equal (source_choices[i].id, "fashion-mnist")
          && !espalier_dataset_fashion_mnist_available ())
        continue;
      g_ptr_array_add (self->choice_ids, (gpointer) source_choices[i].id);
      gtk_string_list_append (labels, _(source_choices[i].label));
    }
  adw_combo_row_set_model (self->source_row, G_LIST_MODEL (labels));
  g_signal_connect_object (self->source_row, "notify::selected",
                           G_CALLBACK (source_selected_cb), self, G_CONNECT_SWAPPED);

  self->scatter_series = espalier_series_new (_("Samples"));
  self->scatter_layer = espalier_scatter_layer_new (self->scatter_series);
  espalier_chart_add_layer (self->scatter_chart, self->scatter_layer);
  espalier_chart_set_empty_text (self->scatter_chart, _("No points"));

  self->bars_layer = espalier_bars_layer_new ();
  espalier_chart_layer_set_title (self->bars_layer, _("Rows"));
  espalier_bars_layer_set_per_bar_colors (ESPALIER_BARS_LAYER (self->bars_layer), TRUE);
  espalier_chart_add_layer (self->bars_chart, self->bars_layer);
  espalier_chart_set_title (self->bars_chart, _("Rows per class"));
  axis = espalier_chart_get_y_axis (self->bars_chart);
  espalier_chart_axis_set_include_zero (axis, TRUE);
  espalier_chart_axis_set_title (axis, _("Rows"));

  /* The controls start at the defaults, on the first choice. */
  sync_controls (self, g_ptr_array_index (self->choice_ids, 0), NULL);
  show_dataset (self, NULL);
}

/* Public API ----------------------------------------------------------------------- */

EspalierProject *
espalier_data_page_get_project (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->project;
}

void
espalier_data_page_set_project (EspalierDataPage *self,
                                EspalierProject  *project)
{
  g_return_if_fail (ESPALIER_IS_DATA_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (self->project == project)
    return;
  if (self->project != NULL)
    g_clear_signal_handler (&self->project_dataset_id, self->project);
  g_set_object (&self->project, project);
  if (project != NULL)
    {
      const char *source = espalier_project_get_dataset_source (project);

      self->project_dataset_id =
        g_signal_connect_object (project, "notify::dataset",
                                 G_CALLBACK (project_dataset_cb), self, G_CONNECT_SWAPPED);
      if (source != NULL && *source != '\0')
        sync_controls (self, source, espalier_project_get_load_options (project));
      show_dataset (self, espalier_project_get_dataset (project));
    }
  else
    show_dataset (self, NULL);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}

void
espalier_data_page_load (EspalierDataPage          *self,
                         const char                *source,
                         const EspalierLoadOptions *options)
{
  g_return_if_fail (ESPALIER_IS_DATA_PAGE (self));
  g_return_if_fail (source != NULL);

  sync_controls (self, source, options);
  start_load (self, source, options);
}

gboolean
espalier_data_page_get_loading (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), FALSE);
  return self->loading;
}

const char *
espalier_data_page_get_error_text (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->error_text;
}

EspalierDataset *
espalier_data_page_get_dataset (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->dataset;
}

const char *
espalier_data_page_get_preview_kind (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return gtk_stack_get_visible_child_name (self->preview_stack);
}

EspalierChart *
espalier_data_page_get_scatter_chart (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->scatter_chart;
}

EspalierChart *
espalier_data_page_get_class_chart (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->bars_chart;
}

GtkWidget *
espalier_data_page_get_image_grid (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return GTK_WIDGET (self->image_grid);
}

GtkColumnView *
espalier_data_page_get_table (EspalierDataPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATA_PAGE (self), NULL);
  return self->table_view;
}
