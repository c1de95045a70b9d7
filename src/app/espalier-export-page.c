/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-export-page.c: the Export page: a variant of the project written out as an
 * Espalier model (NAME.json + NAME.safetensors with what the project knows about it:
 * dataset source and preprocessing, class names, training options and curves, test
 * metrics measured on the exported weights; a quantized variant keeps its
 * quantization), as ONNX (NAME.onnx, opset 13, static int8 in QDQ form) or as C source
 * (NAME.c + NAME.h). Before an export the page says what will be written and refuses,
 * with the reason, what the exporters would refuse (dynamic int8 as C source); after
 * it, what was written: file sizes, the ONNX operators, the C weight bytes. Exports run
 * on a worker with a job; the page hands the worker copies, so nothing is shared with
 * the main thread. Not here: the exporters (core) and ONNX import (the window's
 * Import ONNX… action). */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "espalier-c-export.h"
#include "espalier-error.h"
#include "espalier-export-page.h"
#include "espalier-job.h"
#include "espalier-model-file.h"
#include "espalier-onnx.h"
#include "espalier-optimize.h"
#include "espalier-split.h"
#include "espalier-ui-util.h"

#define N_FORMATS 3

struct _EspalierExportPage
{
  AdwBin                parent_instance;

  EspalierProject      *project;
  GListModel           *variants;      /* the project's list, (transfer none) */
  EspalierVariant      *watched;       /* the selected variant, notify followed */
  GtkFileChooserNative *chooser;       /* the open save dialog, or NULL */
  EspalierJob          *job;           /* the running export, or NULL */
  EspalierExportFormat  format;
  char                 *last_path;     /* the last export's main file, or NULL */
  GPtrArray            *summary_rows;  /* (AdwActionRow, unowned) rows of the last
                                        * export's summary, below last_export_row */
  guint                 scroll_tick_id;/* bringing a new summary into view, or 0 */
  guint                 scroll_ticks;

  /* template */
  GtkStack             *stack;
  GtkScrolledWindow    *scroller;
  AdwComboRow          *variant_row;
  AdwActionRow         *measurements_row;
  AdwActionRow         *espalier_format_row;
  GtkCheckButton       *espalier_format_check;
  AdwActionRow         *onnx_format_row;
  GtkCheckButton       *onnx_format_check;
  AdwActionRow         *c_format_row;
  GtkCheckButton       *c_format_check;
  AdwActionRow         *files_row;
  AdwActionRow         *contents_row;
  GtkButton            *export_button;
  AdwPreferencesGroup  *last_export_group;
  AdwActionRow         *last_export_row;
};

G_DEFINE_FINAL_TYPE (EspalierExportPage, espalier_export_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* What one export needs, copied on the main thread and owned by the worker, and what
 * it wrote. */
typedef struct {
  EspalierExportFormat   format;
  EsModel               *model;        /* a copy of the variant's weights */
  EsQuant               *quant;        /* a copy of its quantization, or NULL: float */
  char                  *description;  /* the variant's, or NULL */
  EspalierModelInfo      info;
  EspalierDataset       *dataset;      /* for the test metrics, or NULL (immutable) */
  char                  *path;         /* as given */

  /* out */
  char                  *files[2];     /* the files written: the main one, then the
                                        * safetensors or the header (NULL for ONNX) */
  guint64                file_bytes[2];
  guint64                bytes;        /* both together */
  EspalierOnnxSummary    onnx;
  EspalierCExportSummary c;
} ExportData;

static void
export_data_free (ExportData *data)
{
  es_model_free (data->model);
  g_clear_pointer (&data->quant, es_quant_free);
  g_free (data->description);
  espalier_model_info_clear (&data->info);
  g_clear_object (&data->dataset);
  g_free (data->path);
  g_free (data->files[0]);
  g_free (data->files[1]);
  g_free (data);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ExportData, export_data_free)

GtkWidget *
espalier_export_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_EXPORT_PAGE, NULL);
}

/* Formats and paths */

static const char *
format_extension (EspalierExportFormat format)
{
  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      return ".onnx";
    case ESPALIER_EXPORT_FORMAT_C:
      return ".c";
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      return ".json";
    }
}

/* The files an export as format to path writes: the main one and the second (NULL for
 * ONNX). path's extension is optional. */
static void
export_paths (EspalierExportFormat   format,
              const char            *path,
              char                 **main_path,
              char                 **second_path)
{
  g_autofree char *base = NULL;

  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      *main_path = g_str_has_suffix (path, ".onnx") ? g_strdup (path)
                                                    : g_strconcat (path, ".onnx", NULL);
      *second_path = NULL;
      break;
    case ESPALIER_EXPORT_FORMAT_C:
      if (g_str_has_suffix (path, ".c") || g_str_has_suffix (path, ".h"))
        base = g_strndup (path, strlen (path) - 2);
      else
        base = g_strdup (path);
      *main_path = g_strconcat (base, ".c", NULL);
      *second_path = g_strconcat (base, ".h", NULL);
      break;
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      espalier_model_paths (path, main_path, second_path);
      break;
    }
}

/* file without its directory and extension ext ("dir/pruned-50.onnx" -> "pruned-50"). */
static char *
stem_of (const char *file,
         const char *ext)
{
  char *base = g_path_get_basename (file);

  if (g_str_has_suffix (base, ext) && strlen (base) > strlen (ext))
    base[strlen (base) - strlen (ext)] = '\0';
  return base;
}

/* The prefix of the generated C identifiers: the file's stem with every run of other
 * characters made one '_', starting with a letter, at most 48 characters
 * ("pruned-50.c" -> "pruned_50", "8bit.c" -> "model_8bit"). */
static char *
c_identifier_for (const char *c_path)
{
  g_autofree char *stem = stem_of (c_path, ".c");
  GString *s = g_string_new (NULL);

  for (const char *p = stem; *p != '\0'; p++)
    {
      if (g_ascii_isalnum (*p) || *p == '_')
        g_string_append_c (s, *p);
      else if (s->len > 0 && s->str[s->len - 1] != '_')
        g_string_append_c (s, '_');
    }
  while (s->len > 0 && s->str[s->len - 1] == '_')
    g_string_truncate (s, s->len - 1);
  if (s->len == 0)
    g_string_assign (s, "model");
  else if (!g_ascii_isalpha (s->str[0]))
    g_string_prepend (s, "model_");
  if (s->len > 48)
    g_string_truncate (s, 48);
  return g_string_free (s, FALSE);
}

/* A file name stem for a variant: its name with what file systems or shells dislike
 * replaced ("pruned 50%" -> "pruned-50"). */
static char *
file_stem_for (EspalierVariant *variant)
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
  return g_string_free (s, FALSE);
}

static EsQuantMode
variant_mode (EspalierVariant *variant)
{
  const EsQuant *quant = espalier_variant_get_quant (variant);

  return quant != NULL ? quant->mode : ES_QUANT_FP32;
}

/* Why variant cannot be written as format, or NULL; *code the error code to give. */
static char *
variant_problem (EspalierVariant      *variant,
                 EspalierExportFormat  format,
                 int                  *code)
{
  const EsQuant *quant;

  *code = ESPALIER_ERROR_INVALID;
  if (variant == NULL)
    return g_strdup (_("Choose a variant to export"));
  if (espalier_variant_get_model (variant) == NULL)
    return g_strdup_printf (_("“%s” has no weights loaded to export"),
                            espalier_variant_get_name (variant));
  quant = espalier_variant_get_quant (variant);
  if (quant != NULL && !es_quant_is_ready (quant, NULL))
    return g_strdup_printf (_("“%s” is not calibrated: its int8 layers have no input ranges"),
                            espalier_variant_get_name (variant));
  if (format == ESPALIER_EXPORT_FORMAT_C && quant != NULL && quant->mode == ES_QUANT_INT8_DYNAMIC)
    {
      *code = ESPALIER_ERROR_UNSUPPORTED;
      return g_strdup (_("Dynamic int8 cannot be C source: it takes its ranges from each "
                         "batch at run time. Export a static int8 or a float variant."));
    }
  return NULL;
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
  g_autofree char *problem = NULL;
  EspalierDataset *dataset;
  const EsQuant *quant;
  GListModel *runs;
  guint n_runs;
  int code;

  problem = variant_problem (variant, self->format, &code);
  if (problem != NULL)
    {
      g_set_error_literal (error, ESPALIER_ERROR, code, problem);
      return NULL;
    }

  data = g_new0 (ExportData, 1);
  data->format = self->format;
  data->model = es_model_copy (espalier_variant_get_model (variant));
  quant = espalier_variant_get_quant (variant);
  data->quant = quant != NULL ? es_quant_copy (quant) : NULL;
  data->description = g_strdup (espalier_variant_get_description (variant));
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

      /* Only model files carry test metrics. */
      if (self->format == ESPALIER_EXPORT_FORMAT_MODEL)
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

/* Test metrics of the exported weights, on the kernels the variant runs on, on the
 * test split the training options make. A model that no longer fits the loaded dataset
 * keeps what it had: the export itself does not depend on it. */
static void
measure_test (ExportData *data)
{
  g_autoptr(EspalierSplit) split = NULL;
  g_autoptr(GError) error = NULL;
  EspalierMetrics metrics = { 0 };
  const EspalierTrainOptions *opts = &data->info.train;
  gboolean ok;

  split = espalier_split_new (data->dataset, opts->val_fraction, opts->test_fraction,
                              opts->seed, &error);
  if (split == NULL || split->test->len == 0)
    return;
  if (data->quant != NULL)
    ok = espalier_evaluate_exec (data->model, data->quant, NULL, data->dataset,
                                 (const guint32 *) split->test->data, split->test->len,
                                 opts->threads, &metrics, &error);
  else
    ok = espalier_evaluate (data->model, data->dataset, (const guint32 *) split->test->data,
                            split->test->len, opts->engine.loss, opts->threads, &metrics, &error);
  if (!ok)
    {
      g_debug ("Export: no test metrics: %s", error->message);
      espalier_metrics_clear (&metrics);
      return;
    }
  espalier_metrics_clear (&data->info.test);
  data->info.test = metrics;
}

static gboolean
export_onnx (ExportData  *data,
             GError     **error)
{
  EspalierOnnxMeta meta;
  gboolean ok;

  espalier_onnx_meta_init (&meta);
  espalier_onnx_meta_from_info (&meta, &data->info);
  if (meta.model_name == NULL)
    meta.model_name = stem_of (data->files[0], ".onnx");
  meta.description = g_strdup (data->description);
  ok = espalier_onnx_export (data->model, data->quant, &meta, data->files[0], &data->onnx, error);
  espalier_onnx_meta_clear (&meta);
  return ok;
}

/* The work itself, on whichever thread calls it. */
static gboolean
export_data_run (ExportData    *data,
                 GCancellable  *cancellable,
                 GError       **error)
{
  gboolean ok = FALSE;

  export_paths (data->format, data->path, &data->files[0], &data->files[1]);
  if (data->dataset != NULL)
    measure_test (data);
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;

  switch (data->format)
    {
    case ESPALIER_EXPORT_FORMAT_MODEL:
      ok = espalier_model_save_variant (data->model, data->quant, &data->info, data->path, error);
      break;
    case ESPALIER_EXPORT_FORMAT_ONNX:
      ok = export_onnx (data, error);
      break;
    case ESPALIER_EXPORT_FORMAT_C:
      {
        g_autofree char *name = c_identifier_for (data->files[0]);

        ok = espalier_c_export (data->model, data->quant, &data->info, name,
                                data->files[0], data->files[1], &data->c, error);
      }
      break;
    }
  if (!ok)
    return FALSE;

  data->bytes = 0;
  for (guint i = 0; i < G_N_ELEMENTS (data->files); i++)
    {
      GStatBuf st;

      if (data->files[i] != NULL && g_stat (data->files[i], &st) == 0)
        data->file_bytes[i] = (guint64) st.st_size;
      data->bytes += data->file_bytes[i];
    }
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

/* "12345 bytes (12.3 kB)": exact, and in a unit a person reads. */
static char *
format_bytes (guint64 bytes)
{
  g_autofree char *exact = espalier_format_grouped ((gint64) bytes);
  g_autofree char *human = NULL;

  if (bytes < 1000)
    return g_strdup_printf (_("%s bytes"), exact);
  human = g_format_size (bytes);
  return g_strdup_printf (_("%s bytes (%s)"), exact, human);
}

static const char *
format_subtitle (EspalierExportFormat format)
{
  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      return _("For ONNX Runtime and other runtimes and viewers");
    case ESPALIER_EXPORT_FORMAT_C:
      return _("Plain C99 that never allocates, for microcontrollers and teaching");
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      return _("Espalier and the CLI read it back; the weights are standard safetensors");
    }
}

/* What the files hold, for variant's quantization. */
static char *
contents_text (EspalierExportFormat format,
               EsQuantMode          mode,
               const char          *c_name)
{
  const char *stored = es_quant_mode_name (mode);

  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      switch (mode)
        {
        case ES_QUANT_INT8_STATIC:
          return g_strdup (_("Opset 13 · int8 QDQ with per-channel weight scales: "
                             "QuantizeLinear and DequantizeLinear around each int8 Gemm and "
                             "Conv, which ONNX Runtime runs on its int8 kernels"));
        case ES_QUANT_INT8_DYNAMIC:
          return g_strdup (_("Opset 13 · dynamic int8: DynamicQuantizeLinear on the inputs, "
                             "MatMulInteger and ConvInteger on int8 weights"));
        case ES_QUANT_FP16:
        case ES_QUANT_BF16:
          return g_strdup_printf (_("Opset 13 · float, the weights as %s rounds them, stored "
                                    "as float32"), stored);
        case ES_QUANT_FP32:
        default:
          return g_strdup (_("Opset 13 · float32 weights, BatchNorm folded where it can be; "
                             "class names and input scaling as metadata"));
        }
    case ESPALIER_EXPORT_FORMAT_C:
      switch (mode)
        {
        case ES_QUANT_INT8_STATIC:
          return g_strdup_printf (_("int8, integer-only where the layers allow: uint8 codes "
                                    "times int8 weights into int32, per-channel fixed-point "
                                    "requantization; %s_predict () and a reentrant "
                                    "%s_predict_r ()"), c_name, c_name);
        case ES_QUANT_INT8_DYNAMIC:
          return g_strdup (_("Dynamic int8 cannot be C source: it takes its ranges from each "
                             "batch at run time. Export a static int8 or a float variant."));
        case ES_QUANT_FP16:
        case ES_QUANT_BF16:
          return g_strdup_printf (_("float, the weights as %s rounds them; %s_predict () "
                                    "and a reentrant %s_predict_r ()"), stored, c_name, c_name);
        case ES_QUANT_FP32:
        default:
          return g_strdup_printf (_("float: every layer in float, BatchNorm folded; "
                                    "%s_predict () and a reentrant %s_predict_r ()"),
                                  c_name, c_name);
        }
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      if (mode == ES_QUANT_INT8_STATIC || mode == ES_QUANT_INT8_DYNAMIC)
        return g_strdup (_("The architecture, quantization, training options, curves and "
                           "test metrics in the JSON; int8 weight codes with per-channel "
                           "scales in the safetensors"));
      return g_strdup_printf (_("The architecture, training options, curves and test metrics "
                                "in the JSON; %s weights in the safetensors"),
                              mode == ES_QUANT_FP32 ? "float32" : stored);
    }
}

static AdwActionRow *
format_row (EspalierExportPage   *self,
            EspalierExportFormat  format)
{
  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      return self->onnx_format_row;
    case ESPALIER_EXPORT_FORMAT_C:
      return self->c_format_row;
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      return self->espalier_format_row;
    }
}

static GtkCheckButton *
format_check (EspalierExportPage   *self,
              EspalierExportFormat  format)
{
  switch (format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      return self->onnx_format_check;
    case ESPALIER_EXPORT_FORMAT_C:
      return self->c_format_check;
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      return self->espalier_format_check;
    }
}

static void
refresh_measurements (EspalierExportPage *self)
{
  EspalierVariant *v = self->watched;
  g_autoptr(GString) text = g_string_new (NULL);
  double accuracy, latency;

  if (v == NULL)
    {
      adw_action_row_set_subtitle (self->measurements_row, "");
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
    g_string_append_printf (text, _("%s of %s weights"), size, espalier_variant_get_format (v));
  }
  adw_action_row_set_subtitle (self->measurements_row, text->str);
}

/* The format rows (a format the variant cannot take is insensitive and says why), what
 * will be written, and whether Export can run. */
static void
refresh (EspalierExportPage *self)
{
  EspalierVariant *v = self->watched;
  g_autofree char *general = NULL;
  g_autofree char *problem = NULL;
  int code;

  if (self->summary_rows == NULL)   /* disposed: the widgets are gone */
    return;
  refresh_measurements (self);

  /* Problems of the variant itself leave the formats alone. */
  general = variant_problem (v, ESPALIER_EXPORT_FORMAT_MODEL, &code);
  for (EspalierExportFormat f = 0; f < N_FORMATS; f++)
    {
      g_autofree char *own = general == NULL ? variant_problem (v, f, &code) : NULL;
      AdwActionRow *row = format_row (self, f);

      gtk_widget_set_sensitive (GTK_WIDGET (row), own == NULL);
      adw_action_row_set_subtitle (row, own != NULL ? own : format_subtitle (f));
    }

  problem = variant_problem (v, self->format, &code);
  if (v != NULL)
    {
      g_autofree char *stem = file_stem_for (v);
      g_autofree char *c_file = g_strconcat (stem, ".c", NULL);
      g_autofree char *c_name = c_identifier_for (c_file);
      g_autofree char *files = NULL;
      g_autofree char *title = NULL;
      g_autofree char *contents = contents_text (self->format, variant_mode (v), c_name);

      switch (self->format)
        {
        case ESPALIER_EXPORT_FORMAT_ONNX:
          files = g_strdup_printf ("%s.onnx", stem);
          break;
        case ESPALIER_EXPORT_FORMAT_C:
          files = g_strdup_printf ("%s.c + %s.h", stem, stem);
          break;
        case ESPALIER_EXPORT_FORMAT_MODEL:
        default:
          files = g_strdup_printf ("%s.json + %s.safetensors", stem, stem);
          break;
        }
      adw_action_row_set_subtitle (self->files_row, files);
      /* TRANSLATORS: the variant to export and how its weights are stored: “pruned 50%” · int8-static */
      title = g_strdup_printf (_("“%s” · %s"), espalier_variant_get_name (v),
                               espalier_variant_get_format (v));
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->contents_row), title);
      adw_action_row_set_subtitle (self->contents_row, problem != NULL ? problem : contents);
    }
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "export.export",
                                 problem == NULL && self->job == NULL);
}

static void
on_watched_notify (EspalierVariant    *variant,
                   GParamSpec         *pspec,
                   EspalierExportPage *self)
{
  refresh (self);
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
  watch_variant (self, self->variants != NULL ? adw_combo_row_get_selected_item (self->variant_row)
                                              : NULL);
  refresh (self);
}

static void
on_format_toggled (EspalierExportPage *self,
                   GtkCheckButton     *check)
{
  for (EspalierExportFormat f = 0; f < N_FORMATS; f++)
    if (check == format_check (self, f) && gtk_check_button_get_active (check))
      espalier_export_page_set_format (self, f);
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

/* The summary of the last export */

static void
clear_summary (EspalierExportPage *self)
{
  for (guint i = 0; i < self->summary_rows->len; i++)
    adw_preferences_group_remove (self->last_export_group, g_ptr_array_index (self->summary_rows, i));
  g_ptr_array_set_size (self->summary_rows, 0);
  gtk_widget_set_visible (GTK_WIDGET (self->last_export_group), FALSE);
  g_clear_pointer (&self->last_path, g_free);
}

static void
add_summary_row (EspalierExportPage *self,
                 const char         *title,
                 const char         *value)
{
  GtkWidget *row = adw_action_row_new ();

  adw_preferences_row_set_use_markup (ADW_PREFERENCES_ROW (row), FALSE);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), value);
  adw_preferences_group_add (self->last_export_group, row);
  g_ptr_array_add (self->summary_rows, row);
}

static void
add_file_row (EspalierExportPage *self,
              const char         *file,
              guint64             bytes)
{
  g_autofree char *name = g_path_get_basename (file);
  g_autofree char *size = format_bytes (bytes);

  add_summary_row (self, name, size);
}

/* Scroll the page to its end, where the summary is, once the frame's layout has placed
 * the new rows: the first tick comes before that layout. */
static gboolean
scroll_to_summary_tick (GtkWidget     *widget,
                        GdkFrameClock *clock,
                        gpointer       data)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (widget);
  GtkAdjustment *adjustment;

  if (self->scroll_ticks++ == 0)
    return G_SOURCE_CONTINUE;
  adjustment = gtk_scrolled_window_get_vadjustment (self->scroller);
  gtk_adjustment_set_value (adjustment, gtk_adjustment_get_upper (adjustment)
                                        - gtk_adjustment_get_page_size (adjustment));
  self->scroll_tick_id = 0;
  return G_SOURCE_REMOVE;
}

static void
show_summary (EspalierExportPage *self,
              const ExportData   *data)
{
  g_autofree char *dir = g_path_get_dirname (data->files[0]);

  clear_summary (self);
  self->last_path = g_strdup (data->files[0]);
  adw_action_row_set_subtitle (self->last_export_row, dir);

  switch (data->format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      {
        g_autofree char *ops = espalier_onnx_summary_ops (&data->onnx);
        g_autofree char *init_bytes = format_bytes ((guint64) data->onnx.initializer_bytes);
        g_autofree char *graph = NULL;

        add_file_row (self, data->files[0], data->file_bytes[0]);
        add_summary_row (self, _("Operators"), ops);
        graph = g_strdup_printf (_("Opset %lld · %u nodes · %u initializers holding %s"),
                                 (long long) data->onnx.opset, data->onnx.n_nodes,
                                 data->onnx.n_initializers,
                                 init_bytes);
        add_summary_row (self, _("Graph"), graph);
      }
      break;
    case ESPALIER_EXPORT_FORMAT_C:
      {
        g_autofree char *weights = format_bytes (data->c.weight_bytes);
        g_autofree char *scratch = format_bytes (data->c.scratch_bytes);
        g_autofree char *arithmetic = NULL;

        add_file_row (self, data->files[0], data->file_bytes[0]);
        add_file_row (self, data->files[1], data->file_bytes[1]);
        add_summary_row (self, _("Weights"), weights);
        add_summary_row (self, _("Scratch"), scratch);
        if (data->c.n_int8_layers == 0)
          arithmetic = g_strdup_printf (_("float · %u operations"), data->c.n_ops);
        else if (data->c.integer_only)
          arithmetic = g_strdup_printf (ngettext ("int8, integer-only · %u int8 layer · %u operations",
                                                  "int8, integer-only · %u int8 layers · %u operations",
                                                  data->c.n_int8_layers),
                                        data->c.n_int8_layers, data->c.n_ops);
        else
          arithmetic = g_strdup_printf (ngettext ("int8 with float steps between layers · %u int8 "
                                                  "layer · %u operations",
                                                  "int8 with float steps between layers · %u int8 "
                                                  "layers · %u operations",
                                                  data->c.n_int8_layers),
                                        data->c.n_int8_layers, data->c.n_ops);
        add_summary_row (self, _("Arithmetic"), arithmetic);
      }
      break;
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      add_file_row (self, data->files[0], data->file_bytes[0]);
      add_file_row (self, data->files[1], data->file_bytes[1]);
      if (data->info.test.rows > 0)
        {
          g_autofree char *test = g_strdup_printf (_("%.2f %% accuracy on %u test rows"),
                                                   100.0 * data->info.test.accuracy,
                                                   (guint) data->info.test.rows);

          add_summary_row (self, _("Test Metrics"), test);
        }
      break;
    }
  gtk_widget_set_visible (GTK_WIDGET (self->last_export_group), TRUE);
  if (self->scroll_tick_id == 0)
    {
      self->scroll_ticks = 0;
      self->scroll_tick_id = gtk_widget_add_tick_callback (GTK_WIDGET (self),
                                                           scroll_to_summary_tick, NULL, NULL);
    }
}

/* Exporting */

static void
export_done (GObject      *object,
             GAsyncResult *result,
             gpointer      user_data)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);
  g_autoptr(EspalierJob) job = g_steal_pointer (&self->job);
  g_autoptr(GError) error = NULL;
  guint64 bytes = 0;

  if (espalier_export_page_export_finish (self, result, &bytes, &error)
      && self->last_path != NULL)
    {
      g_autofree char *size = g_format_size (bytes);
      g_autofree char *message = g_strdup_printf (_("Exported to %s (%s)"), self->last_path, size);

      espalier_show_toast (GTK_WIDGET (self), message);
    }
  if (job != NULL)
    espalier_job_finish (job, error);
  refresh (self);
}

/* Export with a job the window shows; the result is a toast and the summary. */
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
  g_autofree char *stem = NULL;
  g_autofree char *name = NULL;
  g_autofree char *pattern = NULL;
  const char *ext = format_extension (self->format);

  if (variant == NULL || self->chooser != NULL || self->job != NULL)
    return;

  /* A new export begins: the last one's summary goes (the files stay, of course). */
  clear_summary (self);
  self->chooser = gtk_file_chooser_native_new (_("Export Model"),
                                               GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                               GTK_FILE_CHOOSER_ACTION_SAVE,
                                               _("_Export"), _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (self->chooser), TRUE);
  switch (self->format)
    {
    case ESPALIER_EXPORT_FORMAT_ONNX:
      gtk_file_filter_set_name (filter, _("ONNX models"));
      break;
    case ESPALIER_EXPORT_FORMAT_C:
      gtk_file_filter_set_name (filter, _("C source"));
      break;
    case ESPALIER_EXPORT_FORMAT_MODEL:
    default:
      gtk_file_filter_set_name (filter, _("Espalier models"));
      break;
    }
  pattern = g_strconcat ("*", ext, NULL);
  gtk_file_filter_add_pattern (filter, pattern);
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->chooser), filter);
  stem = file_stem_for (variant);
  name = g_strconcat (stem, ext, NULL);
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

  /* A running export holds the page through its task; its callback finishes the job
   * and, the page being disposed, touches no widget. */
  if (self->job != NULL)
    espalier_job_cancel (self->job);
  if (self->chooser != NULL)
    {
      g_signal_handlers_disconnect_by_func (self->chooser, on_chooser_response, self);
      gtk_native_dialog_destroy (GTK_NATIVE_DIALOG (self->chooser));
      g_clear_object (&self->chooser);
    }
  disconnect_project (self);
  if (self->scroll_tick_id != 0)
    gtk_widget_remove_tick_callback (GTK_WIDGET (self), self->scroll_tick_id);
  self->scroll_tick_id = 0;
  /* The summary rows go with the group; the list only pointed at them. */
  g_clear_pointer (&self->summary_rows, g_ptr_array_unref);
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
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, scroller);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, variant_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, measurements_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, espalier_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, espalier_format_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, onnx_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, onnx_format_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, c_format_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, c_format_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, files_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, contents_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, export_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, last_export_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierExportPage, last_export_row);
  gtk_widget_class_bind_template_callback (widget_class, on_selected_changed);
  gtk_widget_class_bind_template_callback (widget_class, on_format_toggled);
}

static void
espalier_export_page_init (EspalierExportPage *self)
{
  self->format = ESPALIER_EXPORT_FORMAT_MODEL;
  self->summary_rows = g_ptr_array_new ();
  gtk_widget_init_template (GTK_WIDGET (self));
  adw_combo_row_set_expression (self->variant_row,
                                gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, "name"));
  gtk_stack_set_visible_child_name (self->stack, "empty");
  refresh (self);
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
  clear_summary (self);
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

EspalierExportFormat
espalier_export_page_get_format (EspalierExportPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), ESPALIER_EXPORT_FORMAT_MODEL);
  return self->format;
}

void
espalier_export_page_set_format (EspalierExportPage   *self,
                                 EspalierExportFormat  format)
{
  g_return_if_fail (ESPALIER_IS_EXPORT_PAGE (self));
  g_return_if_fail ((guint) format < N_FORMATS);

  if (self->format == format)
    return;
  self->format = format;
  /* Its toggle comes back here with nothing left to do. */
  gtk_check_button_set_active (format_check (self, format), TRUE);
  refresh (self);
}

char *
espalier_export_page_get_problem (EspalierExportPage   *self,
                                  EspalierExportFormat  format)
{
  int code;

  g_return_val_if_fail (ESPALIER_IS_EXPORT_PAGE (self), NULL);
  g_return_val_if_fail ((guint) format < N_FORMATS, NULL);

  return variant_problem (espalier_export_page_get_variant (self), format, &code);
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
  if (data == NULL || !export_data_run (data, NULL, error))
    return FALSE;
  show_summary (self, data);
  return TRUE;
}

/* The worker's end, on the main thread: the summary first, then the caller's task
 * (user_data) returns. */
static void
export_worker_done (GObject      *object,
                    GAsyncResult *result,
                    gpointer      user_data)
{
  EspalierExportPage *self = ESPALIER_EXPORT_PAGE (object);
  g_autoptr(GTask) task = user_data;
  GError *error = NULL;

  if (!g_task_propagate_boolean (G_TASK (result), &error))
    {
      g_task_return_error (task, error);
      return;
    }
  if (self->summary_rows != NULL)   /* not disposed */
    show_summary (self, g_task_get_task_data (task));
  g_task_return_boolean (task, TRUE);
}

void
espalier_export_page_export_async (EspalierExportPage  *self,
                                   const char          *path,
                                   GCancellable        *cancellable,
                                   GAsyncReadyCallback  callback,
                                   gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  GTask *worker;
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
  /* The summary of the previous export would be stale until this one ends. */
  clear_summary (self);
  /* The worker's task borrows data: task, which owns it, outlives the worker. */
  worker = g_task_new (self, cancellable, export_worker_done, g_object_ref (task));
  g_task_set_task_data (worker, data, NULL);
  g_task_run_in_thread (worker, export_thread);
  g_object_unref (worker);
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
