/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-file.c: saving and loading a model or a quantized variant as
 * NAME.json + NAME.safetensors.
 *
 * The safetensors file is the standard layout: an 8-byte little-endian header length N,
 * N bytes of JSON ({"layers.1.weight": {"dtype": "F32", "shape": [...], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {string: string}}) padded with spaces so the data
 * starts 8-aligned, then the tensors' little-endian bytes, contiguous: for a float model
 * every tensor F32 in es_model_tensor order; for a variant the F32 tensors first, then
 * F16/BF16, then I8 (file_entries), so each is aligned to its element size. The JSON file describes everything else and records the weights' size and
 * SHA-256, so a pair that does not belong together is caught at load.
 *
 * The JSON text, the atomic writes and the validating reader are shared with the
 * project file (espalier-json-private.h): numbers are written with the fewest digits
 * that read back to the same float or double, so a round trip is bit-exact.
 *
 * Not here: projects (espalier-project.c) and other export formats (ONNX, C). */
#include "config.h"

#include "espalier-model-file.h"

#include <float.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-quant-json-private.h"
#include "espalier-save.h"

#define MODEL_FORMAT_NAME        "espalier-model"
/* The safetensors library refuses headers above 100 MB; so do we. */
#define SAFETENSORS_MAX_HEADER   (100u * 1000u * 1000u)

/* ------------------------------------------------------------------------------------ */
/* EspalierModelInfo */

void
espalier_model_info_init (EspalierModelInfo *info)
{
  g_return_if_fail (info != NULL);

  memset (info, 0, sizeof *info);
  espalier_train_options_init (&info->train);
  info->history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
  info->test.loss = NAN;
  info->test.accuracy = NAN;
  info->input_scale = 1.0;
  info->input_shift = 0.0;
}

void
espalier_model_info_clear (EspalierModelInfo *info)
{
  g_return_if_fail (info != NULL);

  g_free (info->name);
  g_free (info->template_name);
  g_free (info->dataset_source);
  g_free (info->preprocessing);
  g_strfreev (info->class_names);
  g_clear_pointer (&info->history, g_array_unref);
  espalier_metrics_clear (&info->test);
  g_free (info->created);
  g_free (info->producer);
  memset (info, 0, sizeof *info);
}

void
espalier_model_paths (const char *path, char **json_path, char **safetensors_path)
{
  g_autofree char *base = NULL;

  g_return_if_fail (path != NULL);

  if (g_str_has_suffix (path, ".json"))
    base = g_strndup (path, strlen (path) - strlen (".json"));
  else if (g_str_has_suffix (path, ".safetensors"))
    base = g_strndup (path, strlen (path) - strlen (".safetensors"));
  else
    base = g_strdup (path);
  if (json_path != NULL)
    *json_path = g_strconcat (base, ".json", NULL);
  if (safetensors_path != NULL)
    *safetensors_path = g_strconcat (base, ".safetensors", NULL);
}

/* ------------------------------------------------------------------------------------ */
/* The tensors of the safetensors file */

typedef enum {
  DT_F32,
  DT_F16,
  DT_BF16,
  DT_I8,
} Dtype;

static const char *const dtype_names[] = { "F32", "F16", "BF16", "I8" };
static const int dtype_bytes[] = { 4, 2, 2, 1 };

/* One tensor of the file: a model tensor as F32 or as 16-bit floats, an int8 layer's
 * codes (I8, the weight's shape) or its per-channel scales (F32, "layers.N.weight_scale"). */
typedef struct {
  char     name[48];
  Dtype    dtype;
  int      rank;
  gint64   dims[4];
  gint64   count;       /* elements */
  int      tensor;      /* the model tensor it holds (or names, for codes), -1 for scales */
  int      layer;       /* the int8 layer of codes and scales, else -1 */
  gint64   begin, end;  /* bytes into the data */
} Entry;

static void
add_entry (GArray *entries, const char *name, Dtype dtype, int rank, const gint64 *dims,
           int tensor, int layer)
{
  Entry e = { .dtype = dtype, .rank = rank, .tensor = tensor, .layer = layer, .count = 1 };

  g_strlcpy (e.name, name, sizeof e.name);
  for (int k = 0; k < rank; k++)
    {
      e.dims[k] = dims[k];
      e.count *= dims[k];
    }
  g_array_append_val (entries, e);
}

/* The file's tensors for model stored as q (NULL: float), in data order: the F32 ones
 * (an int8 layer's scales where its weight would be) first, then the 16-bit ones, then
 * I8, each group in es_model_tensor order, so every tensor is aligned to its element
 * size. A float model's file is what it always was: every tensor F32, in order. */
static GArray *
file_entries (const EsModel *model, const EsQuant *q)
{
  GArray *entries = g_array_new (FALSE, TRUE, sizeof (Entry));
  gint64 offset = 0;

  for (Dtype group = DT_F32; group <= DT_I8; group++)
    for (int layer = 0; layer < es_model_n_layers (model); layer++)
      {
        const EsLayerInfo *li = es_model_layer (model, layer);

        for (int i = li->first_tensor; i < li->first_tensor + li->n_tensors; i++)
          {
            const EsTensorInfo *t = es_model_tensor (model, i);
            gboolean is_weight = i == li->first_tensor;
            Dtype dtype = DT_F32;

            if (is_weight && espalier_quant_layer_is_int8 (q, layer))
              dtype = DT_I8;
            else if (espalier_quant_tensor_is_16 (q, model, i))
              dtype = q->mode == ES_QUANT_FP16 ? DT_F16 : DT_BF16;
            if (dtype == DT_I8 && group == DT_F32)
              {
                g_autofree char *name = g_strdup_printf ("layers.%d.weight_scale", layer);
                gint64 rows = t->dims[0];

                add_entry (entries, name, DT_F32, 1, &rows, -1, layer);
              }
            if (dtype == group)
              add_entry (entries, t->name, dtype, t->rank, t->dims, i,
                         dtype == DT_I8 ? layer : -1);
          }
      }
  for (guint k = 0; k < entries->len; k++)
    {
      Entry *e = &g_array_index (entries, Entry, k);

      e->begin = offset;
      e->end = offset += e->count * dtype_bytes[e->dtype];
    }
  return entries;
}

/* ------------------------------------------------------------------------------------ */
/* Saving */

static const float *
tensor_data_const (const EsModel *model, const EsTensorInfo *t)
{
  return (t->trainable ? es_model_params_const (model) : es_model_buffers_const (model)) + t->offset;
}

/* The safetensors header of entries, padded with spaces to a multiple of 8 bytes. */
static char *
safetensors_header (GArray *entries, const char *name, const char *producer, gsize *len)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  GString *text = g_string_new (NULL);

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  /* "pt": the tensors have PyTorch's layouts (Linear (out, in), Conv2d (OC, C, K, K)). */
  espalier_json_add_string (b, "format", "pt");
  espalier_json_add_string (b, "producer", producer);
  espalier_json_add_string (b, "model", name);
  json_builder_end_object (b);
  for (guint i = 0; i < entries->len; i++)
    {
      const Entry *e = &g_array_index (entries, Entry, i);

      json_builder_set_member_name (b, e->name);
      json_builder_begin_object (b);
      espalier_json_add_string (b, "dtype", dtype_names[e->dtype]);
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      for (int k = 0; k < e->rank; k++)
        json_builder_add_int_value (b, e->dims[k]);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "data_offsets");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, e->begin);
      json_builder_add_int_value (b, e->end);
      json_builder_end_array (b);
      json_builder_end_object (b);
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  {
    g_autofree char *compact = espalier_json_to_text (root, FALSE);

    g_string_append (text, compact);
  }
  while (text->len % 8 != 0)
    g_string_append_c (text, ' ');
  *len = text->len;
  return g_string_free (text, FALSE);
}

/* src (n) as little-endian IEEE half or bfloat16. */
static gboolean
write_halves (EspalierAtomicFile *af, const float *src, gint64 n, Dtype dtype, GChecksum *sum,
              GError **error)
{
  guint16 buf[2048];

  for (gint64 i = 0; i < n; i += G_N_ELEMENTS (buf))
    {
      gint64 m = MIN (n - i, (gint64) G_N_ELEMENTS (buf));

      for (gint64 k = 0; k < m; k++)
        buf[k] = GUINT16_TO_LE (dtype == DT_F16 ? es_f32_to_f16 (src[i + k])
                                                : es_f32_to_bf16 (src[i + k]));
      if (!espalier_atomic_write (af, buf, (gsize) m * 2, sum, error))
        return FALSE;
    }
  return TRUE;
}

/* Write the safetensors file to af; its SHA-256 goes to sha256 (65 bytes) and its
 * length to *size. */
static gboolean
write_safetensors (EspalierAtomicFile *af, const EsModel *model, const EsQuant *q,
                   const char *name, const char *producer, char *sha256, gint64 *size,
                   GError **error)
{
  g_autoptr(GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autoptr(GArray) entries = file_entries (model, q);
  gsize header_len;
  g_autofree char *header = safetensors_header (entries, name, producer, &header_len);
  guint64 len_le = GUINT64_TO_LE ((guint64) header_len);

  *size = 8 + (gint64) header_len;
  if (!espalier_atomic_write (af, &len_le, 8, sum, error)
      || !espalier_atomic_write (af, header, header_len, sum, error))
    return FALSE;
  for (guint i = 0; i < entries->len; i++)
    {
      const Entry *e = &g_array_index (entries, Entry, i);
      gboolean ok;

      if (e->dtype == DT_I8)
        ok = espalier_atomic_write (af, q->layers[e->layer].w_q, (gsize) e->count, sum, error);
      else if (e->tensor < 0)
        ok = espalier_atomic_write_floats (af, q->layers[e->layer].w_scale, e->count, sum, error);
      else if (e->dtype == DT_F32)
        ok = espalier_atomic_write_floats (af, tensor_data_const (model, es_model_tensor (model,
                                                                                          e->tensor)),
                                           e->count, sum, error);
      else
        ok = write_halves (af, tensor_data_const (model, es_model_tensor (model, e->tensor)),
                           e->count, e->dtype, sum, error);
      if (!ok)
        return FALSE;
      *size += e->end - e->begin;
    }
  g_strlcpy (sha256, g_checksum_get_string (sum), 65);
  return TRUE;
}

static void
build_layer (JsonBuilder *b, const EsLayerSpec *s)
{
  json_builder_begin_object (b);
  espalier_json_add_string (b, "kind", es_layer_kind_name (s->kind));
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      espalier_json_add_int (b, "units", s->units);
      break;
    case ES_LAYER_CONV2D:
      espalier_json_add_int (b, "filters", s->filters);
      espalier_json_add_int (b, "kernel", s->kernel);
      espalier_json_add_int (b, "stride", s->stride);
      espalier_json_add_int (b, "padding", s->padding);
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      espalier_json_add_int (b, "kernel", s->kernel);
      espalier_json_add_int (b, "stride", s->stride);
      break;
    case ES_LAYER_LEAKY_RELU:
      espalier_json_add_float (b, "alpha", s->alpha);
      break;
    case ES_LAYER_DROPOUT:
      espalier_json_add_float (b, "rate", s->rate);
      break;
    case ES_LAYER_BATCHNORM:
      espalier_json_add_float (b, "momentum", s->momentum);
      espalier_json_add_float (b, "eps", s->eps);
      break;
    default:
      break;
    }
  json_builder_end_object (b);
}

static JsonNode *
build_model_json (const EsModel *model, const EsQuant *quant, const EspalierModelInfo *info,
                  const char *name, const char *producer, JsonNode *preprocessing,
                  const char *weights_file, const char *sha256, gint64 weights_size)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  g_autofree char *created = NULL;

  if (info->created != NULL)
    created = g_strdup (info->created);
  else
    {
      g_autoptr(GDateTime) now = g_date_time_new_now_utc ();

      created = g_date_time_format_iso8601 (now);
    }

  json_builder_begin_object (b);
  espalier_json_add_string (b, "format", MODEL_FORMAT_NAME);
  espalier_json_add_int (b, "version", ESPALIER_MODEL_FORMAT_VERSION);
  espalier_json_add_string (b, "name", name);
  espalier_json_add_string (b, "template", info->template_name);

  json_builder_set_member_name (b, "architecture");
  json_builder_begin_object (b);
  espalier_json_add_shape (b, "input_shape", &in);
  espalier_json_add_shape (b, "output_shape", &out);
  espalier_json_add_int (b, "n_params", es_model_n_params (model));
  espalier_json_add_int (b, "n_buffers", es_model_n_buffers (model));
  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (int i = 0; i < es_model_n_layers (model); i++)
    build_layer (b, &es_model_layer (model, i)->spec);
  json_builder_end_array (b);
  json_builder_end_object (b);

  espalier_json_add_quant (b, "quantization", quant, NULL, NULL);

  json_builder_set_member_name (b, "training");
  espalier_json_build_training (b, &info->train);

  json_builder_set_member_name (b, "history");
  espalier_json_build_history (b, info->history);

  json_builder_set_member_name (b, "test");
  espalier_json_build_metrics (b, &info->test);

  json_builder_set_member_name (b, "dataset");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "source", info->dataset_source);
  json_builder_set_member_name (b, "preprocessing");
  if (preprocessing != NULL)
    json_builder_add_value (b, json_node_copy (preprocessing));
  else
    json_builder_add_null_value (b);
  espalier_json_add_double (b, "input_scale", info->input_scale);
  espalier_json_add_double (b, "input_shift", info->input_shift);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "class_names");
  if (info->class_names != NULL)
    {
      json_builder_begin_array (b);
      for (char **c = info->class_names; *c != NULL; c++)
        json_builder_add_string_value (b, *c);
      json_builder_end_array (b);
    }
  else
    json_builder_add_null_value (b);

  json_builder_set_member_name (b, "provenance");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "producer", producer);
  espalier_json_add_string (b, "created", created);
  espalier_json_add_string (b, "host", g_get_host_name ());
  json_builder_end_object (b);

  json_builder_set_member_name (b, "weights");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "file", weights_file);
  espalier_json_add_string (b, "format", "safetensors");
  espalier_json_add_int (b, "size", weights_size);
  espalier_json_add_string (b, "sha256", sha256);
  json_builder_end_object (b);

  json_builder_end_object (b);
  return json_builder_get_root (b);
}

static gboolean validate_for_save (JsonNode *root, const char *json_path, const char *st_path,
                                   const EsModel *model, const EsQuant *quant, GError **error);

/* ".NAME.safetensors.old" beside st_path: the weights the JSON file on disk describes,
 * kept while a save replaces the pair (see espalier_model_save_variant). */
static char *
previous_weights_path (const char *st_path)
{
  g_autofree char *dir = g_path_get_dirname (st_path);
  g_autofree char *base = g_path_get_basename (st_path);
  g_autofree char *name = g_strdup_printf (".%s.old", base);

  return g_build_filename (dir, name, NULL);
}

/* The SHA-256 of a mapped file, lower-case hex. */
static char *
mapped_sha256 (GMappedFile *mapped)
{
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256,
                                      (const guint8 *) g_mapped_file_get_contents (mapped),
                                      g_mapped_file_get_length (mapped));
}

/* Whether the JSON file at json_path records the size and SHA-256 of the weights file at
 * st_path (TRUE too when it cannot tell: no JSON file, or no record in it). */
static gboolean
json_describes (const char *json_path, const char *st_path)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GMappedFile) mapped = NULL;
  g_autofree char *sum = NULL;
  JsonNode *root, *weights, *size, *sha256;

  if (!json_parser_load_from_mapped_file (parser, json_path, NULL)
      || (root = json_parser_get_root (parser)) == NULL || !JSON_NODE_HOLDS_OBJECT (root)
      || (weights = json_object_get_member (json_node_get_object (root), "weights")) == NULL
      || !JSON_NODE_HOLDS_OBJECT (weights)
      || (size = json_object_get_member (json_node_get_object (weights), "size")) == NULL
      || (sha256 = json_object_get_member (json_node_get_object (weights), "sha256")) == NULL
      || json_node_get_value_type (size) != G_TYPE_INT64
      || json_node_get_value_type (sha256) != G_TYPE_STRING)
    return TRUE;
  mapped = g_mapped_file_new (st_path, FALSE, NULL);
  if (mapped == NULL || (gint64) g_mapped_file_get_length (mapped) != json_node_get_int (size))
    return FALSE;
  sum = mapped_sha256 (mapped);
  return g_ascii_strcasecmp (sum, json_node_get_string (sha256)) == 0;
}

/* Keep the weights the JSON file on disk describes reachable at prev_path until the new
 * JSON file replaces it: the weights at st_path (a hard link: nothing is copied), or,
 * when an earlier save was cut between its renames (new weights beside the old JSON
 * file), the previous weights that save kept, left as they are. Where links are not
 * possible nothing is kept, and a save cut between its two renames leaves a pair that
 * fails its checksum at load. */
static gboolean
keep_previous_weights (const char *json_path, const char *st_path, const char *prev_path)
{
  if (g_file_test (prev_path, G_FILE_TEST_IS_REGULAR) && !json_describes (json_path, st_path))
    return TRUE;
  g_unlink (prev_path);
  if (!g_file_test (st_path, G_FILE_TEST_EXISTS) || link (st_path, prev_path) != 0)
    return FALSE;
  espalier_sync_directory (prev_path);
  return TRUE;
}

gboolean
espalier_model_save (const EsModel *model, const EspalierModelInfo *info, const char *path,
                     GError **error)
{
  return espalier_model_save_variant (model, NULL, info, path, error);
}

gboolean
espalier_model_save_variant (const EsModel *model, const EsQuant *quant,
                             const EspalierModelInfo *info, const char *path, GError **error)
{
  g_autofree char *json_path = NULL, *st_path = NULL, *name = NULL, *st_file = NULL;
  g_autofree char *producer = NULL, *text = NULL, *prev_path = NULL;
  g_autoptr(JsonNode) preprocessing = NULL;
  g_autoptr(JsonNode) root = NULL;
  EspalierAtomicFile st = ESPALIER_ATOMIC_FILE_INIT, js = ESPALIER_ATOMIC_FILE_INIT;
  char sha256[65];
  gint64 st_size = 0;
  gboolean ok = FALSE;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (info != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  espalier_model_paths (path, &json_path, &st_path);
  st_file = g_path_get_basename (st_path);
  if (info->name != NULL)
    name = g_strdup (info->name);
  else
    {
      name = g_path_get_basename (json_path);
      name[strlen (name) - strlen (".json")] = '\0';
    }
  producer = g_strdup (info->producer != NULL ? info->producer : "Espalier " PACKAGE_VERSION);

  if (info->preprocessing != NULL)
    {
      GError *local = NULL;

      preprocessing = json_from_string (info->preprocessing, &local);
      if (preprocessing == NULL)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("Cannot save %s: the preprocessing options are not JSON: %s"), json_path,
                       local != NULL ? local->message : _("empty text"));
          g_clear_error (&local);
          return FALSE;
        }
    }

  /* Refuse what espalier_model_load would refuse, before writing anything. */
  memset (sha256, '0', 64);
  sha256[64] = '\0';
  if (!espalier_quant_is_stored (quant))
    quant = NULL;
  root = build_model_json (model, quant, info, name, producer, preprocessing, st_file, sha256, 8);
  if (!validate_for_save (root, json_path, st_path, model, quant, error))
    return FALSE;
  g_clear_pointer (&root, json_node_unref);

  /* Both files are complete and synced before either replaces its target. Between the
   * two renames the new weights sit beside the old JSON file: the old weights stay
   * reachable as .NAME.safetensors.old until the new JSON file is in place, and
   * espalier_model_load falls back on them when the weights do not match the JSON's
   * checksum, so a save cut at any point loads as the old model or the new one. */
  if (!espalier_atomic_open (&st, st_path, error)
      || !write_safetensors (&st, model, quant, name, producer, sha256, &st_size, error)
      || !espalier_atomic_sync (&st, error))
    goto out;

  root = build_model_json (model, quant, info, name, producer, preprocessing, st_file, sha256,
                           st_size);
  text = espalier_json_to_text (root, TRUE);
  if (!espalier_atomic_open (&js, json_path, error)
      || !espalier_atomic_write (&js, text, strlen (text), NULL, error)
      || !espalier_atomic_sync (&js, error))
    goto out;
  prev_path = previous_weights_path (st_path);
  if (!keep_previous_weights (json_path, st_path, prev_path))
    g_clear_pointer (&prev_path, g_free);
  /* Should a rename fail, the kept weights stay: they are checked before they are used,
   * and the next save replaces them. */
  if (!espalier_atomic_commit (&st, error) || !espalier_atomic_commit (&js, error))
    goto out;
  if (prev_path != NULL)
    g_unlink (prev_path);
  ok = TRUE;

out:
  espalier_atomic_clear (&st);
  espalier_atomic_clear (&js);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Reading with validation. A EspalierReader keeps the first problem; every getter does nothing
 * once one is recorded, so a parse reads as a list of fields with one check at the end.
 * `where` names the enclosing object ("training", "architecture.layers[2]"). */

static gboolean
read_layer (EspalierReader *r, JsonNode *node, guint i, EsLayerSpec *spec)
{
  g_autofree char *where = g_strdup_printf ("architecture.layers[%u]", i);
  g_autofree char *kind_name = NULL;
  JsonObject *obj;
  EsLayerKind kind;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return espalier_reader_fail (r, _("“%s” is not an object"), where);
  obj = json_node_get_object (node);
  kind_name = espalier_reader_string (r, obj, where, "kind", FALSE);
  if (kind_name == NULL)
    return FALSE;
  if (!es_layer_kind_from_name (kind_name, &kind))
    return espalier_reader_fail (r, _("“%s.kind” is “%s”, not a known layer kind"), where,
                                 kind_name);

  *spec = es_layer_spec_default (kind);
  switch (kind)
    {
    case ES_LAYER_DENSE:
      espalier_reader_int32 (r, obj, where, "units", 1, ESPALIER_ARCH_MAX_FIELD, &spec->units);
      break;
    case ES_LAYER_CONV2D:
      espalier_reader_int32 (r, obj, where, "filters", 1, ESPALIER_ARCH_MAX_FIELD, &spec->filters);
      espalier_reader_int32 (r, obj, where, "kernel", 1, ESPALIER_ARCH_MAX_FIELD, &spec->kernel);
      espalier_reader_int32 (r, obj, where, "stride", 1, ESPALIER_ARCH_MAX_FIELD, &spec->stride);
      espalier_reader_int32 (r, obj, where, "padding", 0, ESPALIER_ARCH_MAX_FIELD, &spec->padding);
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      espalier_reader_int32 (r, obj, where, "kernel", 1, ESPALIER_ARCH_MAX_FIELD, &spec->kernel);
      espalier_reader_int32 (r, obj, where, "stride", 1, ESPALIER_ARCH_MAX_FIELD, &spec->stride);
      break;
    case ES_LAYER_LEAKY_RELU:
      espalier_reader_float (r, obj, where, "alpha", -FLT_MAX, FLT_MAX, &spec->alpha);
      break;
    case ES_LAYER_DROPOUT:
      if (espalier_reader_float (r, obj, where, "rate", 0.0, 1.0, &spec->rate)
          && spec->rate >= 1.0f)
        espalier_reader_fail (r, _("“%s.rate” is 1; a dropout rate is below 1"), where);
      break;
    case ES_LAYER_BATCHNORM:
      espalier_reader_float (r, obj, where, "momentum", FLT_MIN, 1.0, &spec->momentum);
      espalier_reader_float (r, obj, where, "eps", FLT_MIN, FLT_MAX, &spec->eps);
      break;
    default:
      break;
    }
  return r->error == NULL;
}

/* Before the model is allocated (and after check_architecture_size: a file whose data
 * cannot hold its architecture is corrupt, whatever the memory): whether the
 * architecture's parameters fit in memory (memory_limit, 0: none, and what the machine
 * has); an int8 model (quantized) is dequantized into a second copy.
 * ESPALIER_ERROR_MEMORY naming the file and the size when not. */
static gboolean
check_architecture_memory (EspalierReader *r, const EsShape *input, const EsLayerSpec *specs,
                           int n, gboolean quantized, guint64 memory_limit)
{
  g_autofree double *floats = g_new0 (double, MAX (n, 1));   /* (n) */
  int too_large = espalier_arch_check_size (input, specs, n, floats);
  double count = floats[MAX (too_large >= 0 ? too_large : n - 1, 0)];
  double need = count * 4.0 * (quantized ? 2.0 : 1.0);
  g_autofree char *why = NULL;

  if (espalier_memory_fits (need >= 0x1p63 ? G_MAXUINT64 : (guint64) need, memory_limit, &why))
    return TRUE;
  espalier_reader_fail (r, _("the architecture has %.0f parameters and buffer values: it %s"),
                        count, why);
  if (r->error != NULL)
    r->error->code = ESPALIER_ERROR_MEMORY;
  return FALSE;
}

/* A corrupt file must not make the engine's int arithmetic overflow, nor allocate more
 * parameters than the weights file's data (weight_bytes, at least min_bytes a float:
 * 4, or 1 for a quantized file) can hold: checked with
 * espalier_arch_check_size before es_model_new, whose exact checks and messages come
 * after. The size errors name the weights file (r->file); the others the JSON file. */
static gboolean
check_architecture_size (EspalierReader *r, const EsShape *input, const EsLayerSpec *specs, int n,
                         gsize weight_bytes, double min_bytes, const char *json_path)
{
  g_autofree double *floats = g_new (double, MAX (n, 1));   /* (n) */
  int too_large = espalier_arch_check_size (input, specs, n, floats);

  for (int i = 0; i < n; i++)
    {
      if (i == too_large)
        {
          r->file = json_path;
          return espalier_reader_fail (r, _("“architecture.layers[%d]” is too large to be a real "
                                         "model"), i);
        }
      if (floats[i] * min_bytes > (double) weight_bytes)
        return espalier_reader_fail (r, _("the file has %llu bytes of data, but up to its "
                                          "layer %d the architecture in %s needs %.0f floats: "
                                          "the file is truncated, or the architecture is "
                                          "corrupt"),
                                     (unsigned long long) weight_bytes, i + 1, json_path,
                                     floats[i]);
    }
  return TRUE;
}

static void
read_dataset (EspalierReader *r, JsonObject *root, EspalierModelInfo *info)
{
  JsonObject *obj = espalier_reader_object (r, root, "", "dataset");
  JsonNode *pre;

  if (obj == NULL)
    return;
  info->dataset_source = espalier_reader_string (r, obj, "dataset", "source", TRUE);
  pre = espalier_reader_member (r, obj, "dataset", "preprocessing");
  if (pre != NULL && !JSON_NODE_HOLDS_NULL (pre))
    {
      if (!JSON_NODE_HOLDS_OBJECT (pre))
        espalier_reader_wrong_type (r, "dataset", "preprocessing", _("an object or null"));
      else
        info->preprocessing = espalier_json_to_text (pre, FALSE);
    }
  espalier_reader_double (r, obj, "dataset", "input_scale", FALSE, -G_MAXDOUBLE, G_MAXDOUBLE,
                          &info->input_scale);
  espalier_reader_double (r, obj, "dataset", "input_shift", FALSE, -G_MAXDOUBLE, G_MAXDOUBLE,
                          &info->input_shift);
}

static void
read_class_names (EspalierReader *r, JsonObject *root, EspalierModelInfo *info)
{
  JsonArray *arr = espalier_reader_array (r, root, "", "class_names", TRUE);
  guint n;

  if (arr == NULL)
    return;
  n = json_array_get_length (arr);
  info->class_names = g_new0 (char *, n + 1);
  for (guint i = 0; i < n; i++)
    {
      JsonNode *e = json_array_get_element (arr, i);

      if (json_node_get_value_type (e) != G_TYPE_STRING)
        {
          espalier_reader_fail (r, _("“class_names[%u]” is not a string"), i);
          return;
        }
      info->class_names[i] = g_strdup (json_node_get_string (e));
    }
}

/* What the JSON file says about the weights file. */
typedef struct {
  char   *file;     /* a plain file name in the JSON file's directory */
  gint64  size;
  char   *sha256;   /* 64 lower-case hex digits */
} WeightsRef;

static void
weights_ref_clear (WeightsRef *w)
{
  g_clear_pointer (&w->file, g_free);
  g_clear_pointer (&w->sha256, g_free);
}

static void
read_weights_ref (EspalierReader *r, JsonObject *root, WeightsRef *ref)
{
  JsonObject *obj = espalier_reader_object (r, root, "", "weights");
  g_autofree char *format = NULL;

  if (obj == NULL)
    return;
  ref->file = espalier_reader_string (r, obj, "weights", "file", FALSE);
  if (ref->file != NULL
      && (ref->file[0] == '\0' || strchr (ref->file, '/') != NULL || strchr (ref->file, '\\') != NULL
          || strcmp (ref->file, ".") == 0 || strcmp (ref->file, "..") == 0))
    espalier_reader_fail (r, _("“weights.file” is “%s”, not a file name beside the model file"),
                          ref->file);
  format = espalier_reader_string (r, obj, "weights", "format", FALSE);
  if (format != NULL && strcmp (format, "safetensors") != 0)
    espalier_reader_fail (r, _("“weights.format” is “%s”; only safetensors is known"), format);
  espalier_reader_int (r, obj, "weights", "size", 8, G_MAXINT64, &ref->size);
  ref->sha256 = espalier_reader_string (r, obj, "weights", "sha256", FALSE);
  if (ref->sha256 != NULL)
    {
      gboolean hex = strlen (ref->sha256) == 64;

      for (const char *p = ref->sha256; hex && *p != '\0'; p++)
        hex = g_ascii_isxdigit (*p);
      if (!hex)
        espalier_reader_fail (r, _("“weights.sha256” is not 64 hexadecimal digits"));
    }
}

static gboolean
shapes_match (JsonArray *arr, const EsShape *shape)
{
  if (json_array_get_length (arr) != (guint) shape->rank)
    return FALSE;
  for (int i = 0; i < shape->rank; i++)
    {
      JsonNode *e = json_array_get_element (arr, (guint) i);

      if (json_node_get_value_type (e) != G_TYPE_INT64 || json_node_get_int (e) != shape->dims[i])
        return FALSE;
    }
  return TRUE;
}

/* Read the JSON file's architecture into specs (n_layers) and input. */
static void
read_architecture (EspalierReader *r, JsonObject *root, EsShape *input, EsLayerSpec **specs,
                   int *n_layers)
{
  JsonObject *arch = espalier_reader_object (r, root, "", "architecture");
  JsonArray *layers;
  guint n;

  *specs = NULL;
  *n_layers = 0;
  if (!espalier_reader_shape (r, arch, "architecture", "input_shape", input))
    return;
  layers = espalier_reader_array (r, arch, "architecture", "layers", FALSE);
  if (layers == NULL)
    return;
  n = json_array_get_length (layers);
  if (n == 0)
    {
      espalier_reader_fail (r, _("“architecture.layers” is empty"));
      return;
    }
  if (n > 100000)
    {
      espalier_reader_fail (r, _("“architecture.layers” has %u layers"), n);
      return;
    }
  *specs = g_new0 (EsLayerSpec, n);
  *n_layers = (int) n;
  for (guint i = 0; i < n; i++)
    if (!read_layer (r, json_array_get_element (layers, i), i, &(*specs)[i]))
      return;
}

/* The architecture's derived fields, once the model is built. */
static void
check_architecture_counts (EspalierReader *r, JsonObject *root, const EsModel *model)
{
  JsonObject *arch = espalier_reader_object (r, root, "", "architecture");
  JsonArray *out = espalier_reader_array (r, arch, "architecture", "output_shape", FALSE);
  EsShape out_shape = es_model_output_shape (model);
  gint64 n_params = 0, n_buffers = 0;

  if (out != NULL && !shapes_match (out, &out_shape))
    espalier_reader_fail (r, _("“architecture.output_shape” does not match the layers"));
  if (espalier_reader_int (r, arch, "architecture", "n_params", 0, G_MAXINT64, &n_params)
      && n_params != es_model_n_params (model))
    espalier_reader_fail (r, _("“architecture.n_params” is %lld but the layers have %lld "
                               "parameters"), (long long) n_params,
                          (long long) es_model_n_params (model));
  if (espalier_reader_int (r, arch, "architecture", "n_buffers", 0, G_MAXINT64, &n_buffers)
      && n_buffers != es_model_n_buffers (model))
    espalier_reader_fail (r, _("“architecture.n_buffers” is %lld but the layers have %lld "
                               "buffer values"), (long long) n_buffers,
                          (long long) es_model_n_buffers (model));
}

/* Everything in the JSON file but the architecture. */
static void
read_info (EspalierReader *r, JsonObject *root, EspalierModelInfo *info, WeightsRef *ref)
{
  JsonObject *prov;
  gint64 version = 1;

  espalier_reader_format (r, root, MODEL_FORMAT_NAME, ESPALIER_MODEL_FORMAT_VERSION);
  /* From version 2 on the quantization is there (null for float), checked here for its
   * type: the size checks before the model is built depend on it. Its fields are read
   * with the model (read_quantization). */
  if (espalier_reader_int (r, root, "", "version", 1, G_MAXINT64, &version) && version >= 2)
    {
      JsonNode *quant = espalier_reader_member (r, root, "", "quantization");

      if (quant != NULL && !JSON_NODE_HOLDS_NULL (quant) && !JSON_NODE_HOLDS_OBJECT (quant))
        espalier_reader_wrong_type (r, "", "quantization", _("an object or null"));
    }
  info->name = espalier_reader_string (r, root, "", "name", FALSE);
  info->template_name = espalier_reader_string (r, root, "", "template", TRUE);
  espalier_reader_training (r, root, "", "training", &info->train);
  espalier_reader_history (r, root, "", "history", info->history);
  espalier_reader_metrics (r, root, "", "test", &info->test);
  read_dataset (r, root, info);
  read_class_names (r, root, info);
  prov = espalier_reader_object (r, root, "", "provenance");
  info->producer = espalier_reader_string (r, prov, "provenance", "producer", FALSE);
  info->created = espalier_reader_string (r, prov, "provenance", "created", FALSE);
  g_free (espalier_reader_string (r, prov, "provenance", "host", TRUE));
  read_weights_ref (r, root, ref);
}

typedef struct {
  gint64 begin, end;
  int    tensor;
} Range;

static int
range_compare (gconstpointer a, gconstpointer b)
{
  const Range *x = a, *y = b;

  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* The safetensors header of bytes (len), parsed by parser; *data_start is where the
 * tensor data begins. */
static JsonObject *
read_safetensors_header (EspalierReader *r, const guint8 *bytes, gsize len, JsonParser *parser,
                         gsize *data_start)
{
  g_autoptr(GError) local = NULL;
  guint64 header_len;
  JsonNode *root;

  if (len < 8)
    {
      espalier_reader_fail (r, _("the file is %llu bytes, too short for a safetensors header"),
                            (unsigned long long) len);
      return NULL;
    }
  memcpy (&header_len, bytes, 8);
  header_len = GUINT64_FROM_LE (header_len);
  if (header_len < 2 || header_len > SAFETENSORS_MAX_HEADER || header_len > len - 8)
    {
      espalier_reader_fail (r, _("the header length %llu does not fit the %llu-byte file"),
                            (unsigned long long) header_len, (unsigned long long) len);
      return NULL;
    }
  if (bytes[8] != '{' || memchr (bytes + 8, '\0', header_len) != NULL
      || !g_utf8_validate ((const char *) bytes + 8, (gssize) header_len, NULL))
    {
      espalier_reader_fail (r, _("the header is not a JSON object"));
      return NULL;
    }
  if (!json_parser_load_from_data (parser, (const char *) bytes + 8, (gssize) header_len, &local))
    {
      espalier_reader_fail (r, _("the header is not valid JSON: %s"), local->message);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      espalier_reader_fail (r, _("the header is not a JSON object"));
      return NULL;
    }
  *data_start = 8 + (gsize) header_len;
  return json_node_get_object (root);
}

/* n little-endian IEEE half or bfloat16 values into dst. */
static void
halves_from_le (float *dst, const guint8 *src, gint64 n, Dtype dtype)
{
  for (gint64 i = 0; i < n; i++)
    {
      guint16 h = (guint16) (src[2 * i] | (src[2 * i + 1] << 8));

      dst[i] = dtype == DT_F16 ? es_f16_to_f32 (h) : es_bf16_to_f32 (h);
    }
}

/* Validate the safetensors header obj against the tensors of model stored as q (its
 * int8 layers allocated) and copy the data in: float and 16-bit tensors into the
 * model, int8 codes and scales into q. */
static gboolean
read_safetensors (EspalierReader *r, JsonObject *obj, const guint8 *data, gsize data_len,
                  EsModel *model, EsQuant *q)
{
  g_autoptr(GArray) entries = file_entries (model, q);
  g_autofree Range *ranges = NULL;
  g_autofree gboolean *seen = NULL;
  g_autoptr(GList) members = NULL;
  int n_entries = (int) entries->len;
  int n_ranges = 0;

  seen = g_new0 (gboolean, MAX (n_entries, 1));
  ranges = g_new0 (Range, MAX (n_entries, 1));
  members = json_object_get_members (obj);
  for (GList *l = members; l != NULL; l = l->next)
    {
      const char *key = l->data;
      JsonNode *node = json_object_get_member (obj, key);
      g_autofree char *dtype = NULL;
      const Entry *t = NULL;
      JsonArray *shape, *offsets;
      gint64 begin, end;
      int ti;

      if (strcmp (key, "__metadata__") == 0)
        {
          g_autoptr(GList) meta = NULL;

          if (!JSON_NODE_HOLDS_OBJECT (node))
            return espalier_reader_fail (r, _("“__metadata__” is not an object"));
          meta = json_object_get_members (json_node_get_object (node));
          for (GList *m = meta; m != NULL; m = m->next)
            if (json_node_get_value_type (json_object_get_member (json_node_get_object (node),
                                                                  m->data)) != G_TYPE_STRING)
              return espalier_reader_fail (r, _("“__metadata__.%s” is not a string"),
                                           (const char *) m->data);
          continue;
        }
      for (ti = 0; ti < n_entries; ti++)
        if (strcmp (g_array_index (entries, Entry, ti).name, key) == 0)
          break;
      if (ti == n_entries)
        return espalier_reader_fail (r, _("the tensor “%s” is not part of the architecture"), key);
      t = &g_array_index (entries, Entry, ti);
      if (!JSON_NODE_HOLDS_OBJECT (node))
        return espalier_reader_fail (r, _("the entry of tensor “%s” is not an object"), key);
      dtype = espalier_reader_string (r, json_node_get_object (node), key, "dtype", FALSE);
      if (dtype == NULL)
        return FALSE;
      if (strcmp (dtype, dtype_names[t->dtype]) != 0)
        {
          if (q == NULL)
            return espalier_reader_fail (r, _("the tensor “%s” has dtype %s; Espalier models are "
                                              "F32"), key, dtype);
          return espalier_reader_fail (r, _("the tensor “%s” has dtype %s; the %s model stores it "
                                            "as %s"), key, dtype, es_quant_mode_name (q->mode),
                                       dtype_names[t->dtype]);
        }
      shape = espalier_reader_array (r, json_node_get_object (node), key, "shape", FALSE);
      if (shape == NULL)
        return FALSE;
      /* Tensors have up to 4 dimensions; EsShape holds 3, so compare by hand. */
      if (json_array_get_length (shape) != (guint) t->rank)
        return espalier_reader_fail (r, _("the tensor “%s” has %u dimensions; the architecture "
                                       "needs %d"), key, json_array_get_length (shape), t->rank);
      for (int k = 0; k < t->rank; k++)
        {
          JsonNode *e = json_array_get_element (shape, (guint) k);

          if (json_node_get_value_type (e) != G_TYPE_INT64 || json_node_get_int (e) != t->dims[k])
            {
              GString *need = g_string_new ("[");

              for (int j = 0; j < t->rank; j++)
                g_string_append_printf (need, j ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT,
                                        t->dims[j]);
              g_string_append_c (need, ']');
              espalier_reader_fail (r, _("the tensor “%s” has the wrong shape; the architecture "
                                      "needs %s"), key, need->str);
              g_string_free (need, TRUE);
              return FALSE;
            }
        }
      offsets = espalier_reader_array (r, json_node_get_object (node), key, "data_offsets", FALSE);
      if (offsets == NULL)
        return FALSE;
      if (json_array_get_length (offsets) != 2
          || json_node_get_value_type (json_array_get_element (offsets, 0)) != G_TYPE_INT64
          || json_node_get_value_type (json_array_get_element (offsets, 1)) != G_TYPE_INT64)
        return espalier_reader_fail (r, _("the tensor “%s” has malformed data_offsets"), key);
      begin = json_array_get_int_element (offsets, 0);
      end = json_array_get_int_element (offsets, 1);
      if (begin < 0 || end < begin)
        return espalier_reader_fail (r, _("the tensor “%s” has data_offsets [%lld, %lld]"), key,
                                     (long long) begin, (long long) end);
      if ((guint64) end > data_len)
        return espalier_reader_fail (r, _("the tensor “%s” ends at byte %lld of %llu data "
                                          "bytes: the file is truncated"), key, (long long) end,
                                     (unsigned long long) data_len);
      if (end - begin != t->count * dtype_bytes[t->dtype])
        return espalier_reader_fail (r, _("the tensor “%s” has %lld bytes; its shape needs %lld"),
                                     key, (long long) (end - begin),
                                     (long long) (t->count * dtype_bytes[t->dtype]));
      seen[ti] = TRUE;
      ranges[n_ranges++] = (Range) { begin, end, ti };
    }
  for (int ti = 0; ti < n_entries; ti++)
    if (!seen[ti])
      return espalier_reader_fail (r, _("the tensor “%s” is missing"),
                                   g_array_index (entries, Entry, ti).name);

  /* The byte ranges must tile the data exactly, as the safetensors format requires. */
  qsort (ranges, (gsize) n_ranges, sizeof *ranges, range_compare);
  for (int i = 0; i < n_ranges; i++)
    {
      gint64 expected = i == 0 ? 0 : ranges[i - 1].end;

      if (ranges[i].begin < expected)
        return espalier_reader_fail (r, _("the tensors “%s” and “%s” overlap"),
                                     g_array_index (entries, Entry, ranges[i - 1].tensor).name,
                                     g_array_index (entries, Entry, ranges[i].tensor).name);
      if (ranges[i].begin > expected)
        return espalier_reader_fail (r, _("there is a gap before the tensor “%s”"),
                                     g_array_index (entries, Entry, ranges[i].tensor).name);
    }
  if ((gsize) (n_ranges > 0 ? ranges[n_ranges - 1].end : 0) != data_len)
    return espalier_reader_fail (r, _("the file has %llu bytes of data, but its tensors use %lld"),
                                 (unsigned long long) data_len,
                                 (long long) (n_ranges > 0 ? ranges[n_ranges - 1].end : 0));

  for (int i = 0; i < n_ranges; i++)
    {
      const Entry *e = &g_array_index (entries, Entry, ranges[i].tensor);
      const guint8 *src = data + ranges[i].begin;

      if (e->dtype == DT_I8)
        memcpy (q->layers[e->layer].w_q, src, (gsize) e->count);
      else if (e->tensor < 0)
        espalier_floats_from_le (q->layers[e->layer].w_scale, src, e->count);
      else if (e->dtype == DT_F32)
        espalier_floats_from_le (es_model_tensor_data (model, e->tensor), src, e->count);
      else
        halves_from_le (es_model_tensor_data (model, e->tensor), src, e->count, e->dtype);
    }
  return TRUE;
}

/* The quantization object of root for model: required (an object, or null for float
 * weights) from version 2 on; a version 1 file is float. */
static EsQuant *
read_quantization (EspalierReader *r, JsonObject *root, const EsModel *model)
{
  gint64 version = 1;
  JsonNode *node;

  if (!espalier_reader_int (r, root, "", "version", 1, G_MAXINT64, &version))
    return NULL;
  if (version >= 2)
    return espalier_reader_quant (r, root, "", "quantization", model, NULL);
  node = json_object_get_member (root, "quantization");
  if (node != NULL && !JSON_NODE_HOLDS_NULL (node))
    espalier_reader_fail (r, _("“quantization” is set in a version 1 file; quantized models are "
                               "version 2"));
  return NULL;
}

/* Whether root says its weights are quantized (then they may take 1 byte a value). */
static gboolean
json_is_quantized (JsonObject *root)
{
  JsonNode *node = json_object_get_member (root, "quantization");

  return node != NULL && JSON_NODE_HOLDS_OBJECT (node);
}

/* Read the JSON about to be written as espalier_model_load would, so that a value it
 * would refuse (a batch size of 0, a NaN learning rate, an int8 scale of 0) is refused
 * now instead. */
static gboolean
validate_for_save (JsonNode *root, const char *json_path, const char *st_path,
                   const EsModel *model, const EsQuant *quant, GError **error)
{
  g_autofree EsLayerSpec *specs = NULL;
  EspalierModelInfo tmp;
  WeightsRef ref = { 0 };
  EspalierReader r = { .file = json_path };
  EsShape input = { 0 };
  int n_layers = 0;

  espalier_model_info_init (&tmp);
  read_info (&r, json_node_get_object (root), &tmp, &ref);
  read_architecture (&r, json_node_get_object (root), &input, &specs, &n_layers);
  if (r.error == NULL)
    {
      EsQuant *q = read_quantization (&r, json_node_get_object (root), model);

      g_clear_pointer (&q, es_quant_free);
    }
  if (r.error == NULL && quant != NULL)
    {
      r.file = st_path;
      espalier_quant_check_weights (&r, quant, model, "");
    }
  espalier_model_info_clear (&tmp);
  weights_ref_clear (&ref);
  if (r.error == NULL)
    return TRUE;
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
               _("Not saved, it could not be read back: %s"), r.error->message);
  g_clear_error (&r.error);
  return FALSE;
}

/* The weights file at st_path, mapped, with its SHA-256 in *sha256. When it is not the
 * one ref describes (size and checksum) and the previous weights a save keeps while it
 * replaces the pair are (a save cut between its renames), those instead: then *st_path
 * changes to theirs. */
static GMappedFile *
map_weights (char **st_path, const WeightsRef *ref, char **sha256, GError **error)
{
  g_autoptr(GMappedFile) mapped = g_mapped_file_new (*st_path, FALSE, error);
  g_autofree char *prev_path = NULL;
  g_autoptr(GMappedFile) prev = NULL;

  if (mapped == NULL)
    return NULL;
  *sha256 = mapped_sha256 (mapped);
  if ((gint64) g_mapped_file_get_length (mapped) == ref->size
      && g_ascii_strcasecmp (*sha256, ref->sha256) == 0)
    return g_steal_pointer (&mapped);

  prev_path = previous_weights_path (*st_path);
  prev = g_mapped_file_new (prev_path, FALSE, NULL);
  if (prev != NULL && (gint64) g_mapped_file_get_length (prev) == ref->size)
    {
      g_autofree char *prev_sum = mapped_sha256 (prev);

      if (g_ascii_strcasecmp (prev_sum, ref->sha256) == 0)
        {
          g_free (*sha256);
          *sha256 = g_steal_pointer (&prev_sum);
          g_free (*st_path);
          *st_path = g_steal_pointer (&prev_path);
          return g_steal_pointer (&prev);
        }
    }
  return g_steal_pointer (&mapped);
}

static gboolean
load_file (const char *path, char **contents, gsize *len, GError **error)
{
  g_autoptr(GFile) file = g_file_new_for_path (path);

  return g_file_load_contents (file, NULL, contents, len, NULL, error);
}

EsModel *
espalier_model_load (const char *path, EspalierModelInfo *info, GError **error)
{
  return espalier_model_load_variant (path, info, NULL, error);
}

EsModel *
espalier_model_load_variant (const char *path, EspalierModelInfo *info, EsQuant **quant,
                             GError **error)
{
  g_autofree char *json_path = NULL, *st_path = NULL, *dir = NULL, *text = NULL;
  g_autofree EsLayerSpec *specs = NULL;
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(JsonParser) st_parser = json_parser_new ();
  g_autoptr(GMappedFile) mapped = NULL;
  g_autofree char *sha256 = NULL;
  g_autoptr(GError) local = NULL;
  EspalierModelInfo tmp;
  WeightsRef ref = { 0 };
  EspalierReader r = { 0 };
  EsModel *model = NULL;
  EsQuant *q = NULL;
  EsShape input = { 0 };
  EsError es_err = { 0 };
  JsonObject *obj, *header = NULL;
  const guint8 *bytes = NULL;
  gsize len, data_start = 0;
  int n_layers = 0;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  espalier_model_paths (path, &json_path, NULL);
  if (!load_file (json_path, &text, &len, error))
    return NULL;

  espalier_model_info_init (&tmp);
  r.file = json_path;
  parser = json_parser_new ();
  if ((obj = espalier_reader_parse (&r, parser, text, len)) != NULL)
    {
      read_info (&r, obj, &tmp, &ref);
      read_architecture (&r, obj, &input, &specs, &n_layers);
      if (r.error == NULL)
        {
          dir = g_path_get_dirname (json_path);
          st_path = g_build_filename (dir, ref.file, NULL);
          mapped = map_weights (&st_path, &ref, &sha256, &local);
          if (mapped == NULL)
            {
              g_set_error (&r.error, G_IO_ERROR, g_io_error_from_file_error (local->code),
                           _("%s (the weights of %s)"), local->message, json_path);
              goto fail;
            }
          bytes = (const guint8 *) g_mapped_file_get_contents (mapped);
          len = g_mapped_file_get_length (mapped);
          r.file = st_path;
          header = read_safetensors_header (&r, bytes, len, st_parser, &data_start);
          if (header != NULL
              && check_architecture_size (&r, &input, specs, n_layers, len - data_start,
                                          json_is_quantized (obj) ? 1.0 : 4.0, json_path))
            {
              r.file = json_path;
              if (check_architecture_memory (&r, &input, specs, n_layers,
                                             json_is_quantized (obj), tmp.train.memory_limit))
                {
                  model = es_model_new (&input, specs, n_layers, &es_err);
                  if (model == NULL)
                    espalier_reader_fail (&r, _("the architecture does not build: %s"),
                                          es_err.message);
                  else
                    check_architecture_counts (&r, obj, model);
                }
              if (r.error == NULL)
                q = read_quantization (&r, obj, model);
            }
        }
    }
  if (r.error != NULL)
    goto fail;

  r.file = st_path;
  if (!read_safetensors (&r, header, bytes + data_start, len - data_start, model, q))
    goto fail;
  if ((gint64) len != ref.size)
    {
      espalier_reader_fail (&r, _("the file is %llu bytes, but %s records %lld"),
                            (unsigned long long) len, json_path, (long long) ref.size);
      goto fail;
    }
  if (g_ascii_strcasecmp (sha256, ref.sha256) != 0)
    {
      espalier_reader_fail (&r, _("the SHA-256 is %s, but %s records %s: the weights are corrupt "
                              "or belong to another model"), sha256, json_path, ref.sha256);
      goto fail;
    }
  if (q != NULL && !espalier_quant_check_weights (&r, q, model, ""))
    goto fail;

  /* The float weights of int8 layers are their codes times their scales. */
  if (q != NULL && (q->mode == ES_QUANT_INT8_STATIC || q->mode == ES_QUANT_INT8_DYNAMIC))
    {
      EsModel *dequantized = es_quant_dequantized_model (model, q);

      if (dequantized == NULL)
        {
          espalier_reader_fail (&r, _("out of memory for the dequantized weights"));
          goto fail;
        }
      es_model_free (model);
      model = dequantized;
    }

  weights_ref_clear (&ref);
  if (quant != NULL)
    *quant = q;
  else
    g_clear_pointer (&q, es_quant_free);
  if (info != NULL)
    {
      espalier_model_info_clear (info);
      *info = tmp;
    }
  else
    espalier_model_info_clear (&tmp);
  return model;

fail:
  g_propagate_error (error, r.error);
  weights_ref_clear (&ref);
  espalier_model_info_clear (&tmp);
  g_clear_pointer (&q, es_quant_free);
  es_model_free (model);
  return NULL;
}
