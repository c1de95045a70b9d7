/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-project.c: the project a user works on: dataset reference, the model doc,
 * training options, runs and variants, and its NAME.espalier file (one JSON document,
 * written atomically; format in espalier-project.h). Loading validates every field.
 * Not here: loading the dataset itself (the caller does, with the saved options). */
#include "config.h"

#include "espalier-project.h"

#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-quant-json-private.h"
#include "espalier-save.h"
#include "espalier-templates.h"

#define PROJECT_FORMAT_NAME "espalier-project"

struct _EspalierProject
{
  GObject               parent_instance;

  GFile                *file;
  char                 *title;
  gboolean              modified;
  guint64               generation;     /* counts changes: a save knows what it wrote */

  EspalierDataset      *dataset;
  char                 *dataset_source;
  EspalierLoadOptions   load_options;   /* strings owned: see copy_load_options */

  EspalierModelDoc     *model_doc;
  EspalierTrainOptions  train_options;
  EsModel              *model;          /* trained weights, owned, or NULL */
  GListStore           *runs;           /* (EspalierRun) */
  GListStore           *variants;       /* (EspalierVariant) */
};

G_DEFINE_FINAL_TYPE (EspalierProject, espalier_project, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_FILE,
  PROP_TITLE,
  PROP_MODIFIED,
  PROP_DATASET,
  PROP_DATASET_SOURCE,
  PROP_MODEL_DOC,
  PROP_MODEL,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_CHANGED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

EspalierProject *
espalier_project_new (void)
{
  return g_object_new (ESPALIER_TYPE_PROJECT, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static void
load_options_free_strings (EspalierLoadOptions *o)
{
  g_free ((char *) o->label_column);
  g_free ((char *) o->labels_path);
  g_free ((char *) o->cache_dir);
  o->label_column = o->labels_path = o->cache_dir = NULL;
}

/* dst := src with its own copies of the strings; dst's old strings are freed. */
static void
copy_load_options (EspalierLoadOptions *dst, const EspalierLoadOptions *src)
{
  EspalierLoadOptions tmp;

  if (src != NULL)
    tmp = *src;
  else
    espalier_load_options_init (&tmp);
  tmp.label_column = g_strdup (tmp.label_column);
  tmp.labels_path = g_strdup (tmp.labels_path);
  tmp.cache_dir = g_strdup (tmp.cache_dir);
  load_options_free_strings (dst);
  *dst = tmp;
}

static gboolean
load_options_equal (const EspalierLoadOptions *a, const EspalierLoadOptions *b)
{
  return g_strcmp0 (a->label_column, b->label_column) == 0
         && a->one_hot == b->one_hot && a->csv_header == b->csv_header
         && g_strcmp0 (a->labels_path, b->labels_path) == 0
         && a->ffill == b->ffill && a->drop_duplicates == b->drop_duplicates
         && a->mean_fill == b->mean_fill && a->standardize == b->standardize
         && a->minmax == b->minmax && a->val_fraction == b->val_fraction
         && a->test_fraction == b->test_fraction && a->split_seed == b->split_seed
         && a->use_cache == b->use_cache && g_strcmp0 (a->cache_dir, b->cache_dir) == 0;
}

/* Something changed: set modified and emit "changed". */
static void
changed (EspalierProject *self)
{
  self->generation++;
  espalier_project_set_modified (self, TRUE);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
}

static void
update_title (EspalierProject *self)
{
  g_autofree char *title = NULL;

  if (self->file != NULL)
    {
      g_autofree char *base = g_file_get_basename (self->file);
      gsize len = strlen (base);

      if (g_str_has_suffix (base, ".espalier") && len > strlen (".espalier"))
        base[len - strlen (".espalier")] = '\0';
      title = g_strdup (base);
    }
  if (title == NULL)
    title = g_strdup (_("Untitled"));
  if (g_strcmp0 (title, self->title) == 0)
    return;
  g_free (self->title);
  self->title = g_steal_pointer (&title);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TITLE]);
}

static void
set_file (EspalierProject *self, GFile *file)
{
  if (self->file == file || (self->file != NULL && file != NULL && g_file_equal (self->file, file)))
    return;
  g_set_object (&self->file, file);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_FILE]);
  update_title (self);
}

static void
on_doc_changed (EspalierModelDoc *doc, EspalierProject *self)
{
  changed (self);
}

static void
on_list_changed (GListModel *list, guint position, guint removed, guint added,
                 EspalierProject *self)
{
  changed (self);
}

/* A run's new epoch or end, a variant's new measurement: the file would differ. */
static void
on_run_record_added (EspalierRun *run, guint index, EspalierProject *self)
{
  changed (self);
}

static void
on_item_notify (GObject *item, GParamSpec *pspec, EspalierProject *self)
{
  changed (self);
}

/* Stop watching the items of store (all, or the one at position when >= 0). */
static void
unwatch_items (EspalierProject *self, GListStore *store, int position)
{
  for (guint i = 0; i < g_list_model_get_n_items (G_LIST_MODEL (store)); i++)
    {
      g_autoptr(GObject) item = NULL;

      if (position >= 0 && i != (guint) position)
        continue;
      item = g_list_model_get_item (G_LIST_MODEL (store), i);
      g_signal_handlers_disconnect_by_data (item, self);
    }
}

/* ------------------------------------------------------------------------------------ */
/* GObject */

static void
espalier_project_dispose (GObject *object)
{
  EspalierProject *self = ESPALIER_PROJECT (object);

  if (self->model_doc != NULL)
    g_signal_handlers_disconnect_by_data (self->model_doc, self);
  if (self->runs != NULL)
    {
      g_signal_handlers_disconnect_by_data (self->runs, self);
      unwatch_items (self, self->runs, -1);
    }
  if (self->variants != NULL)
    {
      g_signal_handlers_disconnect_by_data (self->variants, self);
      unwatch_items (self, self->variants, -1);
    }
  g_clear_object (&self->model_doc);
  g_clear_object (&self->runs);
  g_clear_object (&self->variants);
  g_clear_object (&self->dataset);
  g_clear_object (&self->file);
  G_OBJECT_CLASS (espalier_project_parent_class)->dispose (object);
}

static void
espalier_project_finalize (GObject *object)
{
  EspalierProject *self = ESPALIER_PROJECT (object);

  g_clear_pointer (&self->title, g_free);
  g_clear_pointer (&self->dataset_source, g_free);
  load_options_free_strings (&self->load_options);
  g_clear_pointer (&self->model, es_model_free);
  G_OBJECT_CLASS (espalier_project_parent_class)->finalize (object);
}

static void
espalier_project_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  EspalierProject *self = ESPALIER_PROJECT (object);

  switch (prop_id)
    {
    case PROP_FILE: g_value_set_object (value, self->file); break;
    case PROP_TITLE: g_value_set_string (value, self->title); break;
    case PROP_MODIFIED: g_value_set_boolean (value, self->modified); break;
    case PROP_DATASET: g_value_set_object (value, self->dataset); break;
    case PROP_DATASET_SOURCE: g_value_set_string (value, self->dataset_source); break;
    case PROP_MODEL_DOC: g_value_set_object (value, self->model_doc); break;
    case PROP_MODEL: g_value_set_pointer (value, self->model); break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_project_set_property (GObject *object, guint prop_id, const GValue *value,
                               GParamSpec *pspec)
{
  EspalierProject *self = ESPALIER_PROJECT (object);

  switch (prop_id)
    {
    case PROP_MODIFIED:
      espalier_project_set_modified (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_project_class_init (EspalierProjectClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GParamFlags ro = G_PARAM_READABLE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS;

  object_class->dispose = espalier_project_dispose;
  object_class->finalize = espalier_project_finalize;
  object_class->get_property = espalier_project_get_property;
  object_class->set_property = espalier_project_set_property;

  properties[PROP_FILE] = g_param_spec_object ("file", NULL, NULL, G_TYPE_FILE, ro);
  properties[PROP_TITLE] = g_param_spec_string ("title", NULL, NULL, NULL, ro);
  properties[PROP_MODIFIED] =
    g_param_spec_boolean ("modified", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_DATASET] = g_param_spec_object ("dataset", NULL, NULL, ESPALIER_TYPE_DATASET, ro);
  properties[PROP_DATASET_SOURCE] = g_param_spec_string ("dataset-source", NULL, NULL, NULL, ro);
  properties[PROP_MODEL_DOC] = g_param_spec_object ("model-doc", NULL, NULL,
                                                    ESPALIER_TYPE_MODEL_DOC, ro);
  properties[PROP_MODEL] = g_param_spec_pointer ("model", NULL, NULL, ro);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[SIGNAL_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
espalier_project_init (EspalierProject *self)
{
  self->title = g_strdup (_("Untitled"));
  espalier_load_options_init (&self->load_options);
  espalier_train_options_init (&self->train_options);
  self->model_doc = espalier_model_doc_new (NULL, 0);
  self->runs = g_list_store_new (ESPALIER_TYPE_RUN);
  self->variants = g_list_store_new (ESPALIER_TYPE_VARIANT);
  g_signal_connect (self->model_doc, "changed", G_CALLBACK (on_doc_changed), self);
  g_signal_connect (self->runs, "items-changed", G_CALLBACK (on_list_changed), self);
  g_signal_connect (self->variants, "items-changed", G_CALLBACK (on_list_changed), self);
}

/* ------------------------------------------------------------------------------------ */
/* Public API */

GFile *
espalier_project_get_file (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->file;
}

const char *
espalier_project_get_title (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->title;
}

gboolean
espalier_project_get_modified (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), FALSE);

  return self->modified;
}

void
espalier_project_set_modified (EspalierProject *self, gboolean modified)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));

  modified = !!modified;
  if (self->modified == modified)
    return;
  self->modified = modified;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MODIFIED]);
}

const char *
espalier_project_get_dataset_source (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->dataset_source;
}

const EspalierLoadOptions *
espalier_project_get_load_options (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return &self->load_options;
}

void
espalier_project_set_dataset_source (EspalierProject *self, const char *source,
                                     const EspalierLoadOptions *options)
{
  EspalierLoadOptions defaults;
  gboolean source_changed;

  g_return_if_fail (ESPALIER_IS_PROJECT (self));

  if (options == NULL)
    {
      espalier_load_options_init (&defaults);
      options = &defaults;
    }
  source_changed = g_strcmp0 (source, self->dataset_source) != 0;
  if (!source_changed && load_options_equal (options, &self->load_options))
    return;
  if (source_changed)
    {
      g_free (self->dataset_source);
      self->dataset_source = g_strdup (source);
    }
  if (options != &self->load_options)
    copy_load_options (&self->load_options, options);
  if (source_changed)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DATASET_SOURCE]);
  changed (self);
}

EspalierDataset *
espalier_project_get_dataset (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->dataset;
}

void
espalier_project_set_dataset (EspalierProject *self, EspalierDataset *dataset,
                              const EspalierLoadOptions *options)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (dataset == NULL || ESPALIER_IS_DATASET (dataset));

  if (!g_set_object (&self->dataset, dataset))
    return;
  if (dataset != NULL)
    {
      const guint *dims = espalier_dataset_get_dims (dataset);
      guint rank = espalier_dataset_get_rank (dataset);
      guint n_classes = espalier_dataset_get_n_classes (dataset);
      EsShape in = { .rank = (int) MIN (rank, (guint) ES_MAX_RANK) };

      for (int k = 0; k < in.rank; k++)
        in.dims[k] = (int) dims[k];
      espalier_project_set_dataset_source (self, espalier_dataset_get_source (dataset),
                                           options != NULL ? options : &self->load_options);
      espalier_model_doc_set_input (self->model_doc, &in,
                                    n_classes > 0 ? n_classes
                                                  : espalier_dataset_get_n_targets (dataset));
    }
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DATASET]);
}

/* Whether a source names a file (an absolute path) rather than "fashion-mnist" or a
 * generator spec. */
static gboolean
source_is_file (const char *source)
{
  return source != NULL && g_path_is_absolute (source);
}

gboolean
espalier_project_check_dataset (EspalierProject *self, GError **error)
{
  const char *labels;

  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!source_is_file (self->dataset_source))
    return TRUE;
  if (!g_file_test (self->dataset_source, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                   _("The dataset file “%s” is not there: it was moved or deleted"),
                   self->dataset_source);
      return FALSE;
    }
  labels = self->load_options.labels_path;
  if (labels != NULL && *labels != '\0' && !g_file_test (labels, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                   _("The labels file “%s” of the dataset is not there: it was moved or deleted"),
                   labels);
      return FALSE;
    }
  return TRUE;
}

/* "(1, 28, 28)" */
static char *
format_dims (const int *dims, int rank)
{
  GString *s = g_string_new ("(");

  for (int k = 0; k < rank; k++)
    g_string_append_printf (s, "%s%d", k ? ", " : "", dims[k]);
  g_string_append_c (s, ')');
  return g_string_free (s, FALSE);
}

gboolean
espalier_project_dataset_fits (EspalierProject *self, EspalierDataset *dataset, GError **error)
{
  const EsShape *want;
  const guint *dims;
  int have[ES_MAX_RANK] = { 0 };
  guint rank, outputs, want_outputs;
  gboolean same;

  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), FALSE);
  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  want = espalier_model_doc_get_input (self->model_doc);
  want_outputs = espalier_model_doc_get_n_outputs (self->model_doc);
  dims = espalier_dataset_get_dims (dataset);
  rank = espalier_dataset_get_rank (dataset);
  outputs = espalier_dataset_get_n_classes (dataset) > 0 ? espalier_dataset_get_n_classes (dataset)
                                                         : espalier_dataset_get_n_targets (dataset);
  same = rank == (guint) want->rank && rank <= ES_MAX_RANK;
  for (guint k = 0; k < MIN (rank, (guint) ES_MAX_RANK); k++)
    {
      have[k] = (int) MIN (dims[k], (guint) G_MAXINT);
      same = same && have[k] == want->dims[k];
    }
  if (!same)
    {
      g_autofree char *h = format_dims (have, (int) MIN (rank, (guint) ES_MAX_RANK));
      g_autofree char *w = format_dims (want->dims, want->rank);

      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                   _("Its rows have the shape %s; the project's model takes %s"), h, w);
      return FALSE;
    }
  if (outputs != want_outputs)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                   _("It has %u classes or targets; the project's model has %u outputs"),
                   outputs, want_outputs);
      return FALSE;
    }
  return TRUE;
}

void
espalier_project_relocate_dataset (EspalierProject *self, const char *path)
{
  EspalierLoadOptions options;
  const char *labels;

  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (path != NULL && g_path_is_absolute (path));

  options = self->load_options;
  labels = options.labels_path;
  if (labels != NULL && *labels != '\0' && !g_file_test (labels, G_FILE_TEST_EXISTS))
    options.labels_path = NULL;
  /* options borrows self's strings: set_dataset_source copies before it frees. */
  espalier_project_set_dataset_source (self, path, &options);
}

EspalierModelDoc *
espalier_project_get_model_doc (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->model_doc;
}

const EspalierTrainOptions *
espalier_project_get_train_options (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return &self->train_options;
}

void
espalier_project_set_train_options (EspalierProject *self, const EspalierTrainOptions *options)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (options != NULL);

  if (memcmp (options, &self->train_options, sizeof *options) == 0)
    return;
  self->train_options = *options;
  changed (self);
}

EsModel *
espalier_project_get_model (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return self->model;
}

void
espalier_project_set_model (EspalierProject *self, EsModel *model)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));

  if (model == self->model)
    return;
  g_clear_pointer (&self->model, es_model_free);
  self->model = model;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MODEL]);
}

GListModel *
espalier_project_get_runs (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return G_LIST_MODEL (self->runs);
}

void
espalier_project_add_run (EspalierProject *self, EspalierRun *run)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (ESPALIER_IS_RUN (run));

  g_signal_connect (run, "record-added", G_CALLBACK (on_run_record_added), self);
  g_signal_connect (run, "notify::finished", G_CALLBACK (on_item_notify), self);
  g_list_store_append (self->runs, run);
}

GListModel *
espalier_project_get_variants (EspalierProject *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), NULL);

  return G_LIST_MODEL (self->variants);
}

void
espalier_project_add_variant (EspalierProject *self, EspalierVariant *variant)
{
  guint n;

  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (ESPALIER_IS_VARIANT (variant));

  n = g_list_model_get_n_items (G_LIST_MODEL (self->variants));
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (G_LIST_MODEL (self->variants), i);

      if (v == variant)
        return;
      if (g_strcmp0 (espalier_variant_get_name (v), espalier_variant_get_name (variant)) == 0)
        {
          unwatch_items (self, self->variants, (int) i);
          g_signal_connect (variant, "notify", G_CALLBACK (on_item_notify), self);
          g_list_store_splice (self->variants, i, 1, (gpointer *) &variant, 1);
          return;
        }
    }
  g_signal_connect (variant, "notify", G_CALLBACK (on_item_notify), self);
  g_list_store_append (self->variants, variant);
}

void
espalier_project_remove_variant (EspalierProject *self, guint position)
{
  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (position < g_list_model_get_n_items (G_LIST_MODEL (self->variants)));

  unwatch_items (self, self->variants, (int) position);
  g_list_store_remove (self->variants, position);
}

/* ------------------------------------------------------------------------------------ */
/* Saving */

static const char *const csv_header_names[] = { "auto", "present", "absent" };

static void
build_load_options (JsonBuilder *b, const EspalierLoadOptions *o)
{
  json_builder_begin_object (b);
  espalier_json_add_string (b, "label_column", o->label_column);
  espalier_json_add_bool (b, "one_hot", o->one_hot);
  espalier_json_add_string (b, "csv_header", csv_header_names[CLAMP (o->csv_header, 0, 2)]);
  espalier_json_add_string (b, "labels_path", o->labels_path);
  espalier_json_add_bool (b, "ffill", o->ffill);
  espalier_json_add_bool (b, "drop_duplicates", o->drop_duplicates);
  espalier_json_add_bool (b, "mean_fill", o->mean_fill);
  espalier_json_add_bool (b, "standardize", o->standardize);
  espalier_json_add_bool (b, "minmax", o->minmax);
  espalier_json_add_double (b, "val_fraction", o->val_fraction);
  espalier_json_add_double (b, "test_fraction", o->test_fraction);
  espalier_json_add_u64 (b, "split_seed", o->split_seed);
  espalier_json_add_bool (b, "use_cache", o->use_cache);
  espalier_json_add_string (b, "cache_dir", o->cache_dir);
  json_builder_end_object (b);
}

static void
build_run (JsonBuilder *b, EspalierRun *run)
{
  json_builder_begin_object (b);
  espalier_json_add_string (b, "name", espalier_run_get_name (run));
  espalier_json_add_string (b, "spec", espalier_run_get_spec (run));
  espalier_json_add_string (b, "created", espalier_run_get_created (run));
  espalier_json_add_bool (b, "finished", espalier_run_get_finished (run));
  json_builder_set_member_name (b, "options");
  espalier_json_build_training (b, espalier_run_get_options (run));
  json_builder_set_member_name (b, "history");
  espalier_json_build_history (b, espalier_run_get_history (run));
  json_builder_set_member_name (b, "test");
  espalier_json_build_metrics (b, espalier_run_get_test (run));
  json_builder_end_object (b);
}

/* The weights of model in es_model_tensor order as little-endian float32 bytes. */
static guint8 *
model_weights (EsModel *model, gsize *len)
{
  gsize n = (gsize) (es_model_n_params (model) + es_model_n_buffers (model));
  guint8 *bytes = g_malloc (MAX (n, 1) * 4), *p = bytes;

  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *ti = es_model_tensor (model, i);

      espalier_floats_to_le (p, es_model_tensor_data (model, i), ti->size);
      p += ti->size * 4;
    }
  *len = (gsize) (p - bytes);
  return bytes;
}

/* The int8 weights of q: each int8 layer's scales (rows) as little-endian float32, then
 * its codes (rows, cols), layer after layer. */
static gsize
quant_weights_size (const EsQuant *q)
{
  gsize n = 0;

  for (int i = 0; i < q->n_layers; i++)
    if (espalier_quant_layer_is_int8 (q, i))
      n += (gsize) q->layers[i].rows * (4 + (gsize) q->layers[i].cols);
  return n;
}

static guint8 *
quant_weights (const EsQuant *q, gsize *len)
{
  guint8 *bytes = g_malloc (MAX (quant_weights_size (q), 1)), *p = bytes;

  for (int i = 0; i < q->n_layers; i++)
    {
      const EsQuantLayer *l = &q->layers[i];

      if (!espalier_quant_layer_is_int8 (q, i))
        continue;
      espalier_floats_to_le (p, l->w_scale, l->rows);
      p += (gsize) l->rows * 4;
      memcpy (p, l->w_q, (gsize) l->rows * l->cols);
      p += (gsize) l->rows * l->cols;
    }
  *len = (gsize) (p - bytes);
  return bytes;
}

/* Inside the quantization object: its int8 weights and their SHA-256. */
static void
build_quant_weights (JsonBuilder *b, gpointer data)
{
  const EsQuant *q = data;
  gsize len;
  g_autofree guint8 *bytes = quant_weights (q, &len);
  g_autofree char *base64 = g_base64_encode (bytes, len);
  g_autofree char *sha256 = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len);

  espalier_json_add_string (b, "weights", base64);
  espalier_json_add_string (b, "sha256", sha256);
}

static void
build_variant (JsonBuilder *b, EspalierVariant *v)
{
  EsModel *model = espalier_variant_get_model (v);
  const EsQuant *quant = espalier_variant_get_quant (v);

  json_builder_begin_object (b);
  espalier_json_add_string (b, "name", espalier_variant_get_name (v));
  espalier_json_add_string (b, "kind", espalier_variant_get_kind (v));
  espalier_json_add_string (b, "description", espalier_variant_get_description (v));
  espalier_json_add_string (b, "parent", espalier_variant_get_parent (v));
  espalier_json_add_double (b, "accuracy", espalier_variant_get_accuracy (v));
  espalier_json_add_double (b, "latency_us", espalier_variant_get_latency_us (v));
  espalier_json_add_double (b, "latency_p95_us", espalier_variant_get_latency_p95_us (v));
  espalier_json_add_double (b, "rows_per_second", espalier_variant_get_rows_per_second (v));
  espalier_json_add_double (b, "dense_latency_us", espalier_variant_get_dense_latency_us (v));
  espalier_json_add_double (b, "sparse_latency_us", espalier_variant_get_sparse_latency_us (v));
  espalier_json_add_string (b, "exec", espalier_variant_get_exec (v));
  espalier_json_add_string (b, "format", espalier_variant_get_format (v));
  if (model != NULL)
    {
      g_autofree char *spec = espalier_model_to_spec (model);
      g_autofree guint8 *bytes = NULL;
      g_autofree char *base64 = NULL, *sha256 = NULL;
      EsShape in = es_model_input_shape (model);
      gsize len;

      bytes = model_weights (model, &len);
      base64 = g_base64_encode (bytes, len);
      sha256 = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len);
      espalier_json_add_string (b, "spec", spec);
      espalier_json_add_shape (b, "input", &in);
      espalier_json_add_string (b, "weights", base64);
      espalier_json_add_string (b, "sha256", sha256);
      espalier_json_add_quant (b, "quantization", quant, build_quant_weights, (gpointer) quant);
    }
  else
    {
      /* A variant whose weights were never loaded keeps only its measurements. */
      espalier_json_add_string (b, "spec", NULL);
      espalier_json_add_string (b, "input", NULL);
      espalier_json_add_string (b, "weights", NULL);
      espalier_json_add_string (b, "sha256", NULL);
      espalier_json_add_quant (b, "quantization", NULL, NULL, NULL);
    }
  json_builder_end_object (b);
}

static JsonNode *
build_project (EspalierProject *self)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autofree char *spec = espalier_model_doc_to_spec (self->model_doc);
  GListModel *runs = G_LIST_MODEL (self->runs), *variants = G_LIST_MODEL (self->variants);

  json_builder_begin_object (b);
  espalier_json_add_string (b, "format", PROJECT_FORMAT_NAME);
  espalier_json_add_int (b, "version", ESPALIER_PROJECT_FORMAT_VERSION);
  espalier_json_add_string (b, "producer", "Espalier " PACKAGE_VERSION);

  json_builder_set_member_name (b, "dataset");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "source", self->dataset_source);
  json_builder_set_member_name (b, "options");
  build_load_options (b, &self->load_options);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "model");
  json_builder_begin_object (b);
  espalier_json_add_shape (b, "input", espalier_model_doc_get_input (self->model_doc));
  espalier_json_add_int (b, "n_outputs", espalier_model_doc_get_n_outputs (self->model_doc));
  espalier_json_add_string (b, "spec", spec);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "training");
  espalier_json_build_training (b, &self->train_options);

  json_builder_set_member_name (b, "runs");
  json_builder_begin_array (b);
  for (guint i = 0; i < g_list_model_get_n_items (runs); i++)
    {
      g_autoptr(EspalierRun) run = g_list_model_get_item (runs, i);

      build_run (b, run);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "variants");
  json_builder_begin_array (b);
  for (guint i = 0; i < g_list_model_get_n_items (variants); i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (variants, i);

      build_variant (b, v);
    }
  json_builder_end_array (b);

  json_builder_end_object (b);
  return json_builder_get_root (b);
}

static gboolean
write_atomically (GFile *file, const char *text, GCancellable *cancellable, GError **error)
{
  g_autofree char *path = g_file_get_path (file);

  /* Not a local file (a GVfs location): GIO's own replace is as atomic as it gets. */
  if (path == NULL)
    return g_file_replace_contents (file, text, strlen (text), NULL, FALSE,
                                    G_FILE_CREATE_REPLACE_DESTINATION, NULL, cancellable, error);
  return espalier_save_atomic (path, text, strlen (text), cancellable, error);
}

static void read_project (EspalierReader *r, JsonObject *root, EspalierProject *self);

/* Read root back as espalier_project_load would, so that what it would refuse (a batch
 * size of 0, a NaN learning rate) is refused before anything is written. */
static gboolean
validate_for_save (JsonNode *root, GFile *file, GError **error)
{
  g_autoptr(EspalierProject) scratch = espalier_project_new ();
  g_autofree char *name = g_file_get_parse_name (file);
  EspalierReader r = { .file = name };

  read_project (&r, json_node_get_object (root), scratch);
  if (r.error == NULL)
    return TRUE;
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
               _("Not saved, it could not be read back: %s"), r.error->message);
  g_clear_error (&r.error);
  return FALSE;
}

gboolean
espalier_project_save (EspalierProject *self, GFile *file, GCancellable *cancellable,
                       GError **error)
{
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *text = NULL;

  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), FALSE);
  g_return_val_if_fail (G_IS_FILE (file), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;
  root = build_project (self);
  if (!validate_for_save (root, file, error))
    return FALSE;
  text = espalier_json_to_text (root, TRUE);
  if (!write_atomically (file, text, cancellable, error))
    return FALSE;
  set_file (self, file);
  espalier_project_set_modified (self, FALSE);
  return TRUE;
}

typedef struct {
  GFile   *file;
  char    *text;
  guint64  generation;
} SaveData;

static void
save_data_free (SaveData *sd)
{
  g_clear_object (&sd->file);
  g_free (sd->text);
  g_free (sd);
}

static void
save_thread (GTask        *task,
             gpointer      source_object,
             gpointer      task_data,
             GCancellable *cancellable)
{
  SaveData *sd = task_data;
  GError *error = NULL;

  if (write_atomically (sd->file, sd->text, cancellable, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

void
espalier_project_save_async (EspalierProject     *self,
                             GFile               *file,
                             GCancellable        *cancellable,
                             GAsyncReadyCallback  callback,
                             gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  g_autoptr(JsonNode) root = NULL;
  GError *error = NULL;
  SaveData *sd;

  g_return_if_fail (ESPALIER_IS_PROJECT (self));
  g_return_if_fail (G_IS_FILE (file));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, espalier_project_save_async);
  root = build_project (self);
  if (!validate_for_save (root, file, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  sd = g_new0 (SaveData, 1);
  sd->file = g_object_ref (file);
  sd->text = espalier_json_to_text (root, TRUE);
  sd->generation = self->generation;
  g_task_set_task_data (task, sd, (GDestroyNotify) save_data_free);
  g_task_run_in_thread (task, save_thread);
}

gboolean
espalier_project_save_finish (EspalierProject  *self,
                              GAsyncResult     *result,
                              GError          **error)
{
  SaveData *sd;

  g_return_val_if_fail (ESPALIER_IS_PROJECT (self), FALSE);
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);

  if (!g_task_propagate_boolean (G_TASK (result), error))
    return FALSE;
  sd = g_task_get_task_data (G_TASK (result));
  set_file (self, sd->file);
  /* Changes made while the file was written are not in it. */
  if (sd->generation == self->generation)
    espalier_project_set_modified (self, FALSE);
  return TRUE;
}

/* ------------------------------------------------------------------------------------ */
/* Loading */

static void
read_load_options (EspalierReader *r, JsonObject *parent, EspalierLoadOptions *o)
{
  const char *w = "dataset.options";
  JsonObject *obj = espalier_reader_object (r, parent, "dataset", "options");
  g_autofree char *header = NULL;

  if (obj == NULL)
    return;
  o->label_column = espalier_reader_string (r, obj, w, "label_column", TRUE);
  espalier_reader_bool (r, obj, w, "one_hot", &o->one_hot);
  header = espalier_reader_string (r, obj, w, "csv_header", FALSE);
  if (header != NULL)
    {
      gsize k;

      for (k = 0; k < G_N_ELEMENTS (csv_header_names); k++)
        if (strcmp (header, csv_header_names[k]) == 0)
          break;
      if (k == G_N_ELEMENTS (csv_header_names))
        espalier_reader_fail (r, _("“%s.csv_header” is “%s”, not auto, present or absent"), w, header);
      else
        o->csv_header = (EspalierCsvHeader) k;
    }
  o->labels_path = espalier_reader_string (r, obj, w, "labels_path", TRUE);
  espalier_reader_bool (r, obj, w, "ffill", &o->ffill);
  espalier_reader_bool (r, obj, w, "drop_duplicates", &o->drop_duplicates);
  espalier_reader_bool (r, obj, w, "mean_fill", &o->mean_fill);
  espalier_reader_bool (r, obj, w, "standardize", &o->standardize);
  espalier_reader_bool (r, obj, w, "minmax", &o->minmax);
  espalier_reader_double (r, obj, w, "val_fraction", FALSE, 0.0, 1.0, &o->val_fraction);
  espalier_reader_double (r, obj, w, "test_fraction", FALSE, 0.0, 1.0, &o->test_fraction);
  if (r->error == NULL && o->val_fraction + o->test_fraction >= 1.0)
    espalier_reader_fail (r, _("“%s.val_fraction” (%g) and “%s.test_fraction” (%g) leave no "
                            "training rows"), w, o->val_fraction, w, o->test_fraction);
  espalier_reader_u64 (r, obj, w, "split_seed", &o->split_seed);
  espalier_reader_bool (r, obj, w, "use_cache", &o->use_cache);
  o->cache_dir = espalier_reader_string (r, obj, w, "cache_dir", TRUE);
}

/* Whether the layers of spec on input fit in memory (espalier-limits.h) and in the
 * engine's arithmetic, checked before the model document builds them: ESPALIER_ERROR_MEMORY
 * naming the size, or a format error naming the layer. A spec that does not parse is
 * left to the document, which says what is wrong with it. */
static gboolean
check_spec_size (EspalierReader *r, const char *where, const EsShape *input, const char *spec)
{
  g_autofree EsLayerSpec *specs = NULL;
  g_autofree double *floats = NULL;
  g_autofree char *why = NULL;
  int n = 0, too_large;
  double count;

  specs = espalier_spec_parse (spec, &n, NULL);
  if (specs == NULL)
    return TRUE;
  floats = g_new0 (double, n);
  too_large = espalier_arch_check_size (input, specs, n, floats);
  count = floats[too_large >= 0 ? too_large : n - 1];
  if (!espalier_memory_fits (count * 4.0 >= 0x1p63 ? G_MAXUINT64 : (guint64) (count * 4.0), 0,
                             &why))
    {
      espalier_reader_fail (r, _("“%s.spec” has %.0f parameters: it %s"), where, count, why);
      if (r->error != NULL)
        r->error->code = ESPALIER_ERROR_MEMORY;
      return FALSE;
    }
  if (too_large >= 0)
    return espalier_reader_fail (r, _("“%s.spec”: layer %d is too large to be a real model"),
                                 where, too_large + 1);
  return TRUE;
}

static void
read_model (EspalierReader *r, JsonObject *root, EspalierModelDoc *doc)
{
  JsonObject *obj = espalier_reader_object (r, root, "", "model");
  g_autofree char *spec = NULL;
  g_autoptr(GError) local = NULL;
  EsShape input = { 0 };
  guint n_outputs = 0;

  if (!espalier_reader_shape (r, obj, "model", "input", &input)
      || !espalier_reader_uint (r, obj, "model", "n_outputs", &n_outputs))
    return;
  spec = espalier_reader_string (r, obj, "model", "spec", FALSE);
  if (spec == NULL || !check_spec_size (r, "model", &input, spec))
    return;
  espalier_model_doc_set_input (doc, &input, n_outputs);
  if (!espalier_model_doc_set_spec (doc, spec, &local))
    espalier_reader_fail (r, _("“model.spec” does not read: %s"), local->message);
}

static EspalierRun *
read_run (EspalierReader *r, JsonNode *node, const char *where)
{
  g_autofree char *name = NULL, *spec = NULL, *created = NULL;
  g_autoptr(EspalierRun) run = NULL;
  EspalierTrainOptions options;
  EspalierMetrics test = { .loss = NAN, .accuracy = NAN };
  GArray *history = NULL;
  gboolean finished = FALSE;
  JsonObject *obj;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      espalier_reader_fail (r, _("“%s” is not an object"), where);
      return NULL;
    }
  obj = json_node_get_object (node);
  espalier_train_options_init (&options);
  name = espalier_reader_string (r, obj, where, "name", FALSE);
  spec = espalier_reader_string (r, obj, where, "spec", FALSE);
  created = espalier_reader_string (r, obj, where, "created", FALSE);
  espalier_reader_bool (r, obj, where, "finished", &finished);
  espalier_reader_training (r, obj, where, "options", &options);
  if (r->error != NULL)
    return NULL;
  run = espalier_run_new_full (name, spec, &options, created);
  history = espalier_run_get_history (run);
  espalier_reader_history (r, obj, where, "history", history);
  espalier_reader_metrics (r, obj, where, "test", &test);
  if (r->error != NULL)
    {
      espalier_metrics_clear (&test);
      return NULL;
    }
  espalier_run_set_finished (run, finished);
  espalier_run_set_test (run, &test);
  espalier_metrics_clear (&test);
  return g_steal_pointer (&run);
}

/* Strict base64: the alphabet, a length that is a multiple of 4, padding only at the
 * end. g_base64_decode skips what it does not know, so it cannot tell. */
static gboolean
is_base64 (const char *s)
{
  gsize len = strlen (s), pad = 0;

  if (len % 4 != 0)
    return FALSE;
  while (pad < 2 && pad < len && s[len - 1 - pad] == '=')
    pad++;
  for (gsize i = 0; i < len - pad; i++)
    if (!g_ascii_isalnum (s[i]) && s[i] != '+' && s[i] != '/')
      return FALSE;
  return TRUE;
}

/* The weights of a saved variant: spec, input, weights and sha256 into a model. */
static EsModel *
read_variant_model (EspalierReader *r, JsonObject *obj, const char *where)
{
  g_autofree char *spec = NULL, *weights = NULL, *sha256 = NULL, *sum = NULL;
  g_autofree EsLayerSpec *specs = NULL;
  g_autofree double *floats = NULL;
  g_autofree guint8 *bytes = NULL;
  g_autoptr(GError) local = NULL;
  JsonNode *node;
  EsShape input = { 0 };
  EsError es = { 0 };
  EsModel *model;
  gsize len = 0, offset = 0;
  gint64 need;
  int n = 0;

  node = espalier_reader_member (r, obj, where, "weights");
  if (node == NULL)
    return NULL;
  if (JSON_NODE_HOLDS_NULL (node))
    {
      static const char *const keys[] = { "spec", "input", "sha256" };

      /* No weights: the rest must say so too. */
      for (gsize k = 0; k < G_N_ELEMENTS (keys); k++)
        {
          JsonNode *m = espalier_reader_member (r, obj, where, keys[k]);

          if (m != NULL && !JSON_NODE_HOLDS_NULL (m))
            espalier_reader_fail (r, _("“%s.%s” is set but “%s.weights” is null"), where, keys[k],
                                  where);
        }
      return NULL;
    }
  spec = espalier_reader_string (r, obj, where, "spec", FALSE);
  espalier_reader_shape (r, obj, where, "input", &input);
  weights = espalier_reader_string (r, obj, where, "weights", FALSE);
  sha256 = espalier_reader_string (r, obj, where, "sha256", FALSE);
  if (r->error != NULL)
    return NULL;

  specs = espalier_spec_parse (spec, &n, &local);
  if (specs == NULL)
    {
      espalier_reader_fail (r, _("“%s.spec” does not read: %s"), where, local->message);
      return NULL;
    }
  if (!is_base64 (weights))
    {
      espalier_reader_fail (r, _("“%s.weights” is not base64"), where);
      return NULL;
    }
  bytes = g_base64_decode (weights, &len);
  g_clear_pointer (&weights, g_free);
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len);
  if (g_ascii_strcasecmp (sum, sha256) != 0)
    {
      espalier_reader_fail (r, _("“%s.weights” has the SHA-256 %s, but “%s.sha256” records %s: "
                              "the weights are corrupt"), where, sum, where, sha256);
      return NULL;
    }

  /* Bound the architecture by the data before the engine allocates it. */
  floats = g_new (double, n);
  if (espalier_arch_check_size (&input, specs, n, floats) >= 0
      || floats[n - 1] * 4.0 > (double) len)
    {
      espalier_reader_fail (r, _("“%s.weights” has %llu bytes, too few for “%s.spec”"),
                            where, (unsigned long long) len, where);
      return NULL;
    }
  model = es_model_new (&input, specs, n, &es);
  if (model == NULL)
    {
      espalier_reader_fail (r, _("“%s.spec” does not build on input “%s.input”: %s"), where, where,
                            es.message);
      return NULL;
    }
  need = 4 * (es_model_n_params (model) + es_model_n_buffers (model));
  if ((gint64) len != need)
    {
      espalier_reader_fail (r, _("“%s.weights” has %llu bytes; “%s.spec” needs %lld"),
                            where, (unsigned long long) len, where, (long long) need);
      es_model_free (model);
      return NULL;
    }
  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *ti = es_model_tensor (model, i);

      espalier_floats_from_le (es_model_tensor_data (model, i), bytes + offset, ti->size);
      offset += (gsize) ti->size * 4;
    }
  return model;
}

/* A field that version 2 added: required from version 2 on, optional before. */
static gboolean
has_v2_field (JsonObject *obj, const char *key, gint64 version)
{
  return version >= 2 || json_object_has_member (obj, key);
}

/* The quantization of a variant with weights (model), or NULL for float; with its int8
 * weights from base64 checked against their SHA-256. */
static EsQuant *
read_variant_quant (EspalierReader *r, JsonObject *obj, const char *where, const EsModel *model)
{
  g_autofree char *qwhere = espalier_reader_path (where, "quantization");
  g_autofree char *prefix = g_strconcat (qwhere, ".", NULL);
  g_autofree char *weights = NULL, *sha256 = NULL, *sum = NULL;
  g_autofree guint8 *bytes = NULL;
  JsonObject *qobj = NULL;
  EsQuant *q;
  gsize len = 0, offset = 0;

  q = espalier_reader_quant (r, obj, where, "quantization", model, &qobj);
  if (q == NULL)
    return NULL;
  weights = espalier_reader_string (r, qobj, qwhere, "weights", FALSE);
  sha256 = espalier_reader_string (r, qobj, qwhere, "sha256", FALSE);
  if (r->error != NULL)
    goto fail;
  if (!is_base64 (weights))
    {
      espalier_reader_fail (r, _("“%s.weights” is not base64"), qwhere);
      goto fail;
    }
  bytes = g_base64_decode (weights, &len);
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len);
  if (g_ascii_strcasecmp (sum, sha256) != 0)
    {
      espalier_reader_fail (r, _("“%s.weights” has the SHA-256 %s, but “%s.sha256” records %s: "
                                 "the weights are corrupt"), qwhere, sum, qwhere, sha256);
      goto fail;
    }
  if (len != quant_weights_size (q))
    {
      espalier_reader_fail (r, _("“%s.weights” has %llu bytes; its int8 layers need %llu"), qwhere,
                            (unsigned long long) len,
                            (unsigned long long) quant_weights_size (q));
      goto fail;
    }
  for (int i = 0; i < q->n_layers; i++)
    {
      EsQuantLayer *l = &q->layers[i];

      if (!espalier_quant_layer_is_int8 (q, i))
        continue;
      espalier_floats_from_le (l->w_scale, bytes + offset, l->rows);
      offset += (gsize) l->rows * 4;
      memcpy (l->w_q, bytes + offset, (gsize) l->rows * l->cols);
      offset += (gsize) l->rows * l->cols;
    }
  if (!espalier_quant_check_weights (r, q, model, prefix))
    goto fail;
  return q;

fail:
  es_quant_free (q);
  return NULL;
}

static EspalierVariant *
read_variant (EspalierReader *r, JsonNode *node, const char *where, gint64 version)
{
  static const char *const kinds[] = { "baseline", "pruned", "quantized", "reduced" };
  static const char *const figures[] = { "latency_p95_us", "rows_per_second",
                                         "dense_latency_us", "sparse_latency_us" };
  g_autofree char *name = NULL, *kind = NULL, *description = NULL, *parent = NULL;
  g_autofree char *format = g_strdup ("fp32"), *exec = NULL;
  EspalierVariant *v;
  EsModel *model;
  EsQuant *quant = NULL;
  EsQuantMode mode = ES_QUANT_FP32;
  double accuracy = NAN, latency = NAN;
  double figure[G_N_ELEMENTS (figures)] = { NAN, NAN, NAN, NAN };
  JsonObject *obj;
  gboolean known = FALSE;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      espalier_reader_fail (r, _("“%s” is not an object"), where);
      return NULL;
    }
  obj = json_node_get_object (node);
  name = espalier_reader_string (r, obj, where, "name", FALSE);
  if (name != NULL && name[0] == '\0')
    espalier_reader_fail (r, _("“%s.name” is empty"), where);
  kind = espalier_reader_string (r, obj, where, "kind", FALSE);
  for (gsize k = 0; kind != NULL && k < G_N_ELEMENTS (kinds); k++)
    known |= strcmp (kind, kinds[k]) == 0;
  if (kind != NULL && !known)
    espalier_reader_fail (r, _("“%s.kind” is “%s”, not baseline, pruned, quantized or reduced"),
                          where, kind);
  description = espalier_reader_string (r, obj, where, "description", TRUE);
  parent = espalier_reader_string (r, obj, where, "parent", TRUE);
  espalier_reader_double (r, obj, where, "accuracy", TRUE, 0.0, 1.0, &accuracy);
  espalier_reader_double (r, obj, where, "latency_us", TRUE, 0.0, G_MAXDOUBLE, &latency);
  for (gsize k = 0; k < G_N_ELEMENTS (figures); k++)
    if (has_v2_field (obj, figures[k], version))
      espalier_reader_double (r, obj, where, figures[k], TRUE, 0.0, G_MAXDOUBLE, &figure[k]);
  if (has_v2_field (obj, "exec", version))
    {
      exec = espalier_reader_string (r, obj, where, "exec", TRUE);
      if (exec != NULL && strcmp (exec, es_exec_kind_name (ES_EXEC_DENSE)) != 0
          && strcmp (exec, es_exec_kind_name (ES_EXEC_SPARSE)) != 0
          && strcmp (exec, es_exec_kind_name (ES_EXEC_INT8)) != 0)
        espalier_reader_fail (r, _("“%s.exec” is “%s”, not dense, sparse or int8"), where, exec);
    }
  if (has_v2_field (obj, "format", version))
    {
      g_free (format);
      format = espalier_reader_string (r, obj, where, "format", FALSE);
      if (format != NULL && !es_quant_mode_from_name (format, &mode))
        espalier_reader_fail (r, _("“%s.format” is “%s”, not fp32, fp16, bf16, int8-static or "
                                   "int8-dynamic"), where, format);
    }
  if (r->error != NULL)
    return NULL;
  model = read_variant_model (r, obj, where);
  if (r->error != NULL)
    return NULL;
  if (has_v2_field (obj, "quantization", version))
    {
      JsonNode *qnode = espalier_reader_member (r, obj, where, "quantization");

      if (model == NULL && qnode != NULL && !JSON_NODE_HOLDS_NULL (qnode))
        espalier_reader_fail (r, _("“%s.quantization” is set but “%s.weights” is null"), where,
                              where);
      else if (model != NULL)
        quant = read_variant_quant (r, obj, where, model);
    }
  /* The format is the quantization's; float weights are fp32. */
  if (r->error == NULL && model != NULL
      && mode != (quant != NULL ? quant->mode : ES_QUANT_FP32))
    espalier_reader_fail (r, _("“%s.format” is “%s”, but the weights are %s"), where, format,
                          quant != NULL ? es_quant_mode_name (quant->mode) : "fp32");
  if (r->error != NULL)
    {
      g_clear_pointer (&quant, es_quant_free);
      es_model_free (model);
      return NULL;
    }
  v = espalier_variant_new (name, kind, model);
  if (quant != NULL)
    espalier_variant_set_quant (v, quant);
  else
    g_object_set (v, "format", format, NULL);
  espalier_variant_set_description (v, description);
  espalier_variant_set_parent (v, parent);
  espalier_variant_set_accuracy (v, accuracy);
  /* NaN (not measured) goes through set_latency: a double property refuses it. */
  espalier_variant_set_latency (v, &(EspalierLatency) {
    .median_us = latency, .p95_us = figure[0], .rows_per_second = figure[1],
    .dense_us = figure[2], .sparse_us = figure[3], .exec = ES_EXEC_DENSE,
  });
  g_object_set (v, "exec", exec, NULL);
  return v;
}

/* Read everything into self, which is new; stops at the first problem (r->error). */
static void
read_project (EspalierReader *r, JsonObject *root, EspalierProject *self)
{
  g_autofree char *producer = NULL, *source = NULL;
  EspalierLoadOptions options;
  EspalierTrainOptions training;
  JsonObject *dataset;
  JsonArray *runs, *variants;
  gint64 version = 1;

  espalier_reader_format (r, root, PROJECT_FORMAT_NAME, ESPALIER_PROJECT_FORMAT_VERSION);
  espalier_reader_int (r, root, "", "version", 1, ESPALIER_PROJECT_FORMAT_VERSION, &version);
  producer = espalier_reader_string (r, root, "", "producer", FALSE);

  dataset = espalier_reader_object (r, root, "", "dataset");
  source = espalier_reader_string (r, dataset, "dataset", "source", TRUE);
  espalier_load_options_init (&options);
  read_load_options (r, dataset, &options);
  if (r->error == NULL)
    espalier_project_set_dataset_source (self, source, &options);
  load_options_free_strings (&options);

  read_model (r, root, self->model_doc);

  espalier_train_options_init (&training);
  espalier_reader_training (r, root, "", "training", &training);
  if (r->error == NULL)
    espalier_project_set_train_options (self, &training);

  runs = espalier_reader_array (r, root, "", "runs", FALSE);
  for (guint i = 0; runs != NULL && r->error == NULL && i < json_array_get_length (runs); i++)
    {
      g_autofree char *where = g_strdup_printf ("runs[%u]", i);
      g_autoptr(EspalierRun) run = read_run (r, json_array_get_element (runs, i), where);

      if (run != NULL)
        espalier_project_add_run (self, run);
    }

  variants = espalier_reader_array (r, root, "", "variants", FALSE);
  for (guint i = 0; variants != NULL && r->error == NULL && i < json_array_get_length (variants);
       i++)
    {
      g_autofree char *where = g_strdup_printf ("variants[%u]", i);
      g_autoptr(EspalierVariant) v = read_variant (r, json_array_get_element (variants, i), where,
                                                  version);

      if (v == NULL)
        break;
      /* add_variant replaces a namesake; in a file, a second one is a mistake. */
      for (guint k = 0; k < g_list_model_get_n_items (G_LIST_MODEL (self->variants)); k++)
        {
          g_autoptr(EspalierVariant) other = g_list_model_get_item (G_LIST_MODEL (self->variants),
                                                                    k);

          if (strcmp (espalier_variant_get_name (other), espalier_variant_get_name (v)) == 0)
            espalier_reader_fail (r, _("“%s.name” is “%s”, the name of an earlier variant"), where,
                                  espalier_variant_get_name (v));
        }
      if (r->error == NULL)
        espalier_project_add_variant (self, v);
    }
}

EspalierProject *
espalier_project_load (GFile *file, GCancellable *cancellable, GError **error)
{
  g_autoptr(EspalierProject) self = NULL;
  g_autoptr(JsonParser) parser = NULL;
  g_autofree char *text = NULL, *name = NULL;
  EspalierReader r = { 0 };
  JsonObject *root;
  gsize len = 0;

  g_return_val_if_fail (G_IS_FILE (file), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!g_file_load_contents (file, cancellable, &text, &len, NULL, error))
    return NULL;
  name = g_file_get_parse_name (file);
  r.file = name;
  self = espalier_project_new ();
  parser = json_parser_new ();
  if ((root = espalier_reader_parse (&r, parser, text, len)) != NULL)
    read_project (&r, root, self);
  if (r.error != NULL)
    {
      g_propagate_error (error, r.error);
      return NULL;
    }
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return NULL;

  espalier_model_doc_clear_history (self->model_doc);
  set_file (self, file);
  espalier_project_set_modified (self, FALSE);
  return g_steal_pointer (&self);
}
