/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-file.c: saving and loading a model as NAME.json + NAME.safetensors.
 *
 * The safetensors file is the standard layout: an 8-byte little-endian header length N,
 * N bytes of JSON ({"layers.1.weight": {"dtype": "F32", "shape": [...], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {string: string}}) padded with spaces so the data
 * starts 8-aligned, then the tensors' little-endian bytes, contiguous, in es_model_tensor
 * order. The JSON file describes everything else and records the weights' size and
 * SHA-256, so a pair that does not belong together is caught at load.
 *
 * The JSON text is written by a small serializer of our own rather than JsonGenerator:
 * json-glib 1.6 prints 1e-300 as "1e-300.0", which is not JSON, and prints floats with
 * 17 digits. Numbers here are written with the fewest digits that read back to the same
 * float or double, so a round trip is bit-exact and the file stays readable.
 *
 * Not here: projects (espalier-project.c) and other export formats (ONNX, C). */
#include "config.h"

#include "espalier-format.h"
#include "espalier-model-file.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"

#define MODEL_FORMAT_NAME        "espalier-model"
/* The safetensors library refuses headers above 100 MB; so do we. */
#define SAFETENSORS_MAX_HEADER   (100u * 1000u * 1000u)
/* Ceilings that keep a corrupt architecture from overflowing the engine's int and
 * int64 shape arithmetic: no real model comes near them. */
#define ARCH_MAX_FIELD           (1 << 24)     /* units, filters, kernel, stride, padding, dims */
#define ARCH_MAX_FLOATS          2147483647.0  /* one activation, per sample */
#define ARCH_MAX_FLOPS           1e18          /* one layer, per sample */

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
/* JSON text */

/* The double with the fewest significant digits that reads back as exactly f: 0.001f is
 * written as 0.001, not 0.0010000000474974513. */
static double
float_decimal (float f)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (!isfinite (f))
    return (double) f;
  return g_ascii_strtod (espalier_format_float (buf, f), NULL);
}

/* The shortest text that reads back as exactly d, always with a '.' or an exponent so it
 * reads back as a double and never as an integer. */
static void
append_double (GString *out, double d)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_string_append (out, espalier_format_double (buf, d));
  if (strpbrk (buf, ".eE") == NULL)
    g_string_append (out, ".0");
}

static void
append_string (GString *out, const char *s)
{
  g_autofree char *valid = g_utf8_validate (s, -1, NULL) ? NULL : g_utf8_make_valid (s, -1);

  if (valid != NULL)
    s = valid;
  g_string_append_c (out, '"');
  for (const guchar *p = (const guchar *) s; *p != '\0'; p++)
    {
      switch (*p)
        {
        case '"': g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\b': g_string_append (out, "\\b"); break;
        case '\f': g_string_append (out, "\\f"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        default:
          if (*p < 0x20)
            g_string_append_printf (out, "\\u%04x", *p);
          else
            g_string_append_c (out, (char) *p);
        }
    }
  g_string_append_c (out, '"');
}

static void
append_newline (GString *out, int indent)
{
  if (indent < 0)
    return;
  g_string_append_c (out, '\n');
  for (int i = 0; i < indent; i++)
    g_string_append (out, "  ");
}

static gboolean
holds_scalars_only (JsonNode *node)
{
  if (JSON_NODE_HOLDS_OBJECT (node))
    {
      JsonObject *obj = json_node_get_object (node);
      g_autoptr(GList) members = json_object_get_members (obj);

      for (GList *l = members; l != NULL; l = l->next)
        {
          JsonNode *m = json_object_get_member (obj, l->data);

          if (JSON_NODE_HOLDS_OBJECT (m) || JSON_NODE_HOLDS_ARRAY (m))
            return FALSE;
        }
    }
  else if (JSON_NODE_HOLDS_ARRAY (node))
    {
      JsonArray *arr = json_node_get_array (node);

      for (guint i = 0; i < json_array_get_length (arr); i++)
        {
          JsonNode *e = json_array_get_element (arr, i);

          if (JSON_NODE_HOLDS_OBJECT (e) || JSON_NODE_HOLDS_ARRAY (e))
            return FALSE;
        }
    }
  return TRUE;
}

/* Serialize node; indent < 0 is compact, inline (>= 0) one line with spaces after ':'
 * and ','. Arrays of scalars, and objects of scalars inside arrays (layers, epochs),
 * stay on one line. Non-finite doubles are written as null. */
static void
append_node (GString *out, JsonNode *node, int indent, gboolean inline_)
{
  const char *comma = inline_ ? ", " : ",";

  switch (json_node_get_node_type (node))
    {
    case JSON_NODE_OBJECT:
      {
        JsonObject *obj = json_node_get_object (node);
        g_autoptr(GList) members = json_object_get_members (obj);
        int inner = indent < 0 || inline_ ? -1 : indent + 1;

        g_string_append_c (out, '{');
        for (GList *l = members; l != NULL; l = l->next)
          {
            append_newline (out, inner);
            append_string (out, l->data);
            g_string_append (out, indent < 0 ? ":" : ": ");
            append_node (out, json_object_get_member (obj, l->data), inner, inline_);
            if (l->next != NULL)
              g_string_append (out, comma);
          }
        if (members != NULL && inner >= 0)
          append_newline (out, indent);
        g_string_append_c (out, '}');
      }
      break;

    case JSON_NODE_ARRAY:
      {
        JsonArray *arr = json_node_get_array (node);
        guint n = json_array_get_length (arr);
        gboolean flat = inline_ || holds_scalars_only (node);
        int inner = indent < 0 || flat ? -1 : indent + 1;

        g_string_append_c (out, '[');
        for (guint i = 0; i < n; i++)
          {
            JsonNode *e = json_array_get_element (arr, i);

            append_newline (out, inner);
            append_node (out, e, inner < 0 ? indent : inner,
                         indent >= 0 && (flat || holds_scalars_only (e)));
            if (i + 1 < n)
              g_string_append (out, indent >= 0 && flat ? ", " : ",");
          }
        if (n > 0 && inner >= 0)
          append_newline (out, indent);
        g_string_append_c (out, ']');
      }
      break;

    case JSON_NODE_NULL:
      g_string_append (out, "null");
      break;

    case JSON_NODE_VALUE:
      switch (json_node_get_value_type (node))
        {
        case G_TYPE_INT64:
          g_string_append_printf (out, "%" G_GINT64_FORMAT, json_node_get_int (node));
          break;
        case G_TYPE_DOUBLE:
          if (isfinite (json_node_get_double (node)))
            append_double (out, json_node_get_double (node));
          else
            g_string_append (out, "null");
          break;
        case G_TYPE_BOOLEAN:
          g_string_append (out, json_node_get_boolean (node) ? "true" : "false");
          break;
        case G_TYPE_STRING:
          append_string (out, json_node_get_string (node));
          break;
        default:
          g_string_append (out, "null");
          break;
        }
      break;

    default:
      g_string_append (out, "null");
      break;
    }
}

static char *
node_to_text (JsonNode *node, gboolean pretty)
{
  GString *out = g_string_new (NULL);

  append_node (out, node, pretty ? 0 : -1, FALSE);
  if (pretty)
    g_string_append_c (out, '\n');
  return g_string_free (out, FALSE);
}

/* Builder shorthands: member name, then value. */
static void
add_int (JsonBuilder *b, const char *key, gint64 v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_int_value (b, v);
}

/* NaN and the infinities become null. */
static void
add_double (JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name (b, key);
  if (isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}

static void
add_float (JsonBuilder *b, const char *key, float v)
{
  add_double (b, key, float_decimal (v));
}

/* JSON integers are int64 here; larger unsigned values go as decimal strings. */
static void
add_u64 (JsonBuilder *b, const char *key, guint64 v)
{
  json_builder_set_member_name (b, key);
  if (v <= G_MAXINT64)
    json_builder_add_int_value (b, (gint64) v);
  else
    {
      char buf[32];

      g_snprintf (buf, sizeof buf, "%" G_GUINT64_FORMAT, v);
      json_builder_add_string_value (b, buf);
    }
}

static void
add_string (JsonBuilder *b, const char *key, const char *v)
{
  json_builder_set_member_name (b, key);
  if (v != NULL)
    json_builder_add_string_value (b, v);
  else
    json_builder_add_null_value (b);
}

static void
add_bool (JsonBuilder *b, const char *key, gboolean v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_boolean_value (b, v);
}

static void
add_shape (JsonBuilder *b, const char *key, const EsShape *shape)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (int i = 0; i < shape->rank; i++)
    json_builder_add_int_value (b, shape->dims[i]);
  json_builder_end_array (b);
}

/* ------------------------------------------------------------------------------------ */
/* Atomic files */

typedef struct {
  char *path;       /* the target */
  char *tmp_path;   /* the temporary file next to it, until committed */
  int   fd;
} AtomicFile;

static gboolean
set_io_error (GError **error, int errsv, const char *what, const char *path)
{
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errsv), "Cannot %s %s: %s", what, path,
               g_strerror (errsv));
  return FALSE;
}

static gboolean
atomic_open (AtomicFile *af, const char *path, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *base = g_path_get_basename (path);

  af->path = g_strdup (path);
  af->tmp_path = g_strdup_printf ("%s/.%s.XXXXXX", dir, base);
  af->fd = g_mkstemp_full (af->tmp_path, O_WRONLY | O_CLOEXEC, 0644);
  if (af->fd < 0)
    {
      int errsv = errno;

      g_clear_pointer (&af->tmp_path, g_free);
      return set_io_error (error, errsv, "create a temporary file for", path);
    }
  return TRUE;
}

static gboolean
atomic_write (AtomicFile *af, const void *data, gsize len, GChecksum *sum, GError **error)
{
  const guint8 *p = data;

  if (sum != NULL)
    g_checksum_update (sum, data, (gssize) len);
  while (len > 0)
    {
      gssize n = write (af->fd, p, MIN (len, (gsize) 1 << 30));

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return set_io_error (error, errno, "write", af->tmp_path);
      p += n;
      len -= (gsize) n;
    }
  return TRUE;
}

/* Little-endian floats, whatever the host order. */
static gboolean
atomic_write_floats (AtomicFile *af, const float *data, gint64 n, GChecksum *sum, GError **error)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  return atomic_write (af, data, (gsize) n * sizeof (float), sum, error);
#else
  guint32 chunk[4096];

  while (n > 0)
    {
      gint64 m = MIN (n, (gint64) G_N_ELEMENTS (chunk));

      for (gint64 i = 0; i < m; i++)
        {
          guint32 u;

          memcpy (&u, &data[i], 4);
          chunk[i] = GUINT32_TO_LE (u);
        }
      if (!atomic_write (af, chunk, (gsize) m * 4, sum, error))
        return FALSE;
      data += m;
      n -= m;
    }
  return TRUE;
#endif
}

/* fsync and close the temporary file; it is renamed later by atomic_commit. */
static gboolean
atomic_sync (AtomicFile *af, GError **error)
{
  int fd = af->fd;

  af->fd = -1;
  if (fsync (fd) != 0)
    {
      int errsv = errno;

      close (fd);
      return set_io_error (error, errsv, "sync", af->tmp_path);
    }
  if (close (fd) != 0)
    return set_io_error (error, errno, "close", af->tmp_path);
  return TRUE;
}

static gboolean
atomic_commit (AtomicFile *af, GError **error)
{
  if (g_rename (af->tmp_path, af->path) != 0)
    return set_io_error (error, errno, "replace", af->path);
  g_clear_pointer (&af->tmp_path, g_free);
  return TRUE;
}

/* Remove the temporary file if it is still there, and free af. */
static void
atomic_clear (AtomicFile *af)
{
  if (af->fd >= 0)
    close (af->fd);
  af->fd = -1;
  if (af->tmp_path != NULL)
    g_unlink (af->tmp_path);
  g_clear_pointer (&af->tmp_path, g_free);
  g_clear_pointer (&af->path, g_free);
}

static void
sync_directory (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd >= 0)
    {
      fsync (fd);
      close (fd);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Saving */

static const float *
tensor_data_const (const EsModel *model, const EsTensorInfo *t)
{
  return (t->trainable ? es_model_params_const (model) : es_model_buffers_const (model)) + t->offset;
}

/* The safetensors header, padded with spaces to a multiple of 8 bytes. */
static char *
safetensors_header (const EsModel *model, const char *name, const char *producer, gsize *len)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  GString *text = g_string_new (NULL);
  gint64 offset = 0;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  /* "pt": the tensors have PyTorch's layouts (Linear (out, in), Conv2d (OC, C, K, K)). */
  add_string (b, "format", "pt");
  add_string (b, "producer", producer);
  add_string (b, "model", name);
  json_builder_end_object (b);
  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *t = es_model_tensor (model, i);

      json_builder_set_member_name (b, t->name);
      json_builder_begin_object (b);
      add_string (b, "dtype", "F32");
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      for (int k = 0; k < t->rank; k++)
        json_builder_add_int_value (b, t->dims[k]);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "data_offsets");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, offset * 4);
      json_builder_add_int_value (b, (offset + t->size) * 4);
      json_builder_end_array (b);
      json_builder_end_object (b);
      offset += t->size;
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  append_node (text, root, -1, FALSE);
  while (text->len % 8 != 0)
    g_string_append_c (text, ' ');
  *len = text->len;
  return g_string_free (text, FALSE);
}

/* Write the safetensors file to af; its SHA-256 goes to sha256 (65 bytes) and its
 * length to *size. */
static gboolean
write_safetensors (AtomicFile *af, const EsModel *model, const char *name,
                   const char *producer, char *sha256, gint64 *size, GError **error)
{
  g_autoptr(GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  gsize header_len;
  g_autofree char *header = safetensors_header (model, name, producer, &header_len);
  guint64 len_le = GUINT64_TO_LE ((guint64) header_len);

  *size = 8 + (gint64) header_len;
  if (!atomic_write (af, &len_le, 8, sum, error)
      || !atomic_write (af, header, header_len, sum, error))
    return FALSE;
  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *t = es_model_tensor (model, i);

      if (!atomic_write_floats (af, tensor_data_const (model, t), t->size, sum, error))
        return FALSE;
      *size += t->size * 4;
    }
  g_strlcpy (sha256, g_checksum_get_string (sum), 65);
  return TRUE;
}

static void
build_layer (JsonBuilder *b, const EsLayerSpec *s)
{
  json_builder_begin_object (b);
  add_string (b, "kind", es_layer_kind_name (s->kind));
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      add_int (b, "units", s->units);
      break;
    case ES_LAYER_CONV2D:
      add_int (b, "filters", s->filters);
      add_int (b, "kernel", s->kernel);
      add_int (b, "stride", s->stride);
      add_int (b, "padding", s->padding);
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      add_int (b, "kernel", s->kernel);
      add_int (b, "stride", s->stride);
      break;
    case ES_LAYER_LEAKY_RELU:
      add_float (b, "alpha", s->alpha);
      break;
    case ES_LAYER_DROPOUT:
      add_float (b, "rate", s->rate);
      break;
    case ES_LAYER_BATCHNORM:
      add_float (b, "momentum", s->momentum);
      add_float (b, "eps", s->eps);
      break;
    default:
      break;
    }
  json_builder_end_object (b);
}

static void
build_training (JsonBuilder *b, const EspalierTrainOptions *o)
{
  const EsTrainConfig *c = &o->engine;

  json_builder_begin_object (b);
  add_string (b, "loss", es_loss_kind_name (c->loss));
  add_string (b, "optimizer", es_opt_kind_name (c->optimizer));
  add_float (b, "lr", c->lr);
  add_float (b, "momentum", c->momentum);
  add_float (b, "beta1", c->beta1);
  add_float (b, "beta2", c->beta2);
  add_float (b, "eps", c->eps);
  add_float (b, "weight_decay", c->weight_decay);
  add_float (b, "l1", c->l1);
  add_float (b, "l2", c->l2);
  add_float (b, "clip_norm", c->clip_norm);
  add_int (b, "accum_steps", c->accum_steps);
  add_string (b, "schedule", es_lr_schedule_name (c->schedule));
  add_int (b, "step_size", c->step_size);
  add_float (b, "gamma", c->gamma);
  add_float (b, "min_lr", c->min_lr);
  add_int (b, "total_steps", c->total_steps);
  add_int (b, "warmup_steps", c->warmup_steps);
  add_u64 (b, "dropout_seed", c->seed);
  add_int (b, "epochs", o->epochs);
  add_int (b, "batch_size", o->batch_size);
  add_int (b, "patience", o->patience);
  add_double (b, "min_delta", o->min_delta);
  add_double (b, "val_fraction", o->val_fraction);
  add_double (b, "test_fraction", o->test_fraction);
  add_u64 (b, "seed", o->seed);
  add_int (b, "threads", o->threads);
  add_u64 (b, "memory_limit", o->memory_limit);
  json_builder_set_member_name (b, "augment");
  json_builder_begin_object (b);
  add_int (b, "shift_pixels", o->augment.shift_pixels);
  add_bool (b, "hflip", o->augment.hflip);
  add_float (b, "noise_std", o->augment.noise_std);
  json_builder_end_object (b);
  json_builder_end_object (b);
}

static void
build_history (JsonBuilder *b, GArray *history)
{
  json_builder_begin_array (b);
  for (guint i = 0; history != NULL && i < history->len; i++)
    {
      const EspalierEpochRecord *r = &g_array_index (history, EspalierEpochRecord, i);

      json_builder_begin_object (b);
      add_int (b, "epoch", r->epoch);
      add_double (b, "train_loss", r->train_loss);
      add_double (b, "train_accuracy", r->train_accuracy);
      add_double (b, "val_loss", r->val_loss);
      add_double (b, "val_accuracy", r->val_accuracy);
      add_double (b, "lr", r->lr);
      add_double (b, "seconds", r->seconds);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

static void
build_metrics (JsonBuilder *b, const EspalierMetrics *m)
{
  json_builder_begin_object (b);
  add_int (b, "rows", m->rows);
  add_double (b, "loss", m->loss);
  add_double (b, "accuracy", m->accuracy);
  add_int (b, "n_classes", m->n_classes);
  json_builder_set_member_name (b, "confusion");
  if (m->confusion != NULL && m->n_classes > 0)
    {
      json_builder_begin_array (b);
      for (guint r = 0; r < m->n_classes; r++)
        {
          json_builder_begin_array (b);
          for (guint c = 0; c < m->n_classes; c++)
            json_builder_add_int_value (b, m->confusion[(gsize) r * m->n_classes + c]);
          json_builder_end_array (b);
        }
      json_builder_end_array (b);
    }
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);
}

static JsonNode *
build_model_json (const EsModel *model, const EspalierModelInfo *info, const char *name,
                  const char *producer, JsonNode *preprocessing, const char *weights_file,
                  const char *sha256, gint64 weights_size)
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
  add_string (b, "format", MODEL_FORMAT_NAME);
  add_int (b, "version", ESPALIER_MODEL_FORMAT_VERSION);
  add_string (b, "name", name);
  add_string (b, "template", info->template_name);

  json_builder_set_member_name (b, "architecture");
  json_builder_begin_object (b);
  add_shape (b, "input_shape", &in);
  add_shape (b, "output_shape", &out);
  add_int (b, "n_params", es_model_n_params (model));
  add_int (b, "n_buffers", es_model_n_buffers (model));
  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (int i = 0; i < es_model_n_layers (model); i++)
    build_layer (b, &es_model_layer (model, i)->spec);
  json_builder_end_array (b);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "training");
  build_training (b, &info->train);

  json_builder_set_member_name (b, "history");
  build_history (b, info->history);

  json_builder_set_member_name (b, "test");
  build_metrics (b, &info->test);

  json_builder_set_member_name (b, "dataset");
  json_builder_begin_object (b);
  add_string (b, "source", info->dataset_source);
  json_builder_set_member_name (b, "preprocessing");
  if (preprocessing != NULL)
    json_builder_add_value (b, json_node_copy (preprocessing));
  else
    json_builder_add_null_value (b);
  add_double (b, "input_scale", info->input_scale);
  add_double (b, "input_shift", info->input_shift);
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
  add_string (b, "producer", producer);
  add_string (b, "created", created);
  add_string (b, "host", g_get_host_name ());
  json_builder_end_object (b);

  json_builder_set_member_name (b, "weights");
  json_builder_begin_object (b);
  add_string (b, "file", weights_file);
  add_string (b, "format", "safetensors");
  add_int (b, "size", weights_size);
  add_string (b, "sha256", sha256);
  json_builder_end_object (b);

  json_builder_end_object (b);
  return json_builder_get_root (b);
}

static gboolean validate_for_save (JsonNode *root, const char *json_path, GError **error);

gboolean
espalier_model_save (const EsModel *model, const EspalierModelInfo *info, const char *path,
                     GError **error)
{
  g_autofree char *json_path = NULL, *st_path = NULL, *name = NULL, *st_file = NULL;
  g_autofree char *producer = NULL, *text = NULL;
  g_autoptr(JsonNode) preprocessing = NULL;
  g_autoptr(JsonNode) root = NULL;
  AtomicFile st = { .fd = -1 }, js = { .fd = -1 };
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
                       "Cannot save %s: the preprocessing options are not JSON: %s", json_path,
                       local != NULL ? local->message : "empty text");
          g_clear_error (&local);
          return FALSE;
        }
    }

  /* Refuse what espalier_model_load would refuse, before writing anything. */
  memset (sha256, '0', 64);
  sha256[64] = '\0';
  root = build_model_json (model, info, name, producer, preprocessing, st_file, sha256, 8);
  if (!validate_for_save (root, json_path, error))
    return FALSE;
  g_clear_pointer (&root, json_node_unref);

  /* Both files are complete and synced before either replaces its target; only a failed
   * second rename can leave new weights beside the old JSON file, and loading that pair
   * then fails on the checksum rather than mixing them. */
  if (!atomic_open (&st, st_path, error)
      || !write_safetensors (&st, model, name, producer, sha256, &st_size, error)
      || !atomic_sync (&st, error))
    goto out;

  root = build_model_json (model, info, name, producer, preprocessing, st_file, sha256, st_size);
  text = node_to_text (root, TRUE);
  if (!atomic_open (&js, json_path, error)
      || !atomic_write (&js, text, strlen (text), NULL, error)
      || !atomic_sync (&js, error)
      || !atomic_commit (&st, error)
      || !atomic_commit (&js, error))
    goto out;
  sync_directory (json_path);
  ok = TRUE;

out:
  atomic_clear (&st);
  atomic_clear (&js);
  return ok;
}

/* ------------------------------------------------------------------------------------ */
/* Reading with validation. A Reader keeps the first problem; every getter does nothing
 * once one is recorded, so a parse reads as a list of fields with one check at the end.
 * `where` names the enclosing object ("training", "architecture.layers[2]"). */

typedef struct {
  const char *file;
  GError     *error;
} Reader;

static gboolean r_fail (Reader *r, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static gboolean
r_fail (Reader *r, const char *fmt, ...)
{
  if (r->error == NULL)
    {
      g_autofree char *msg = NULL;
      va_list ap;

      va_start (ap, fmt);
      msg = g_strdup_vprintf (fmt, ap);
      va_end (ap);
      r->error = g_error_new (ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, "%s: %s", r->file, msg);
    }
  return FALSE;
}

static const char *
dot (const char *where)
{
  return where[0] != '\0' ? "." : "";
}

/* The member, or NULL with an error when it is missing. */
static JsonNode *
r_member (Reader *r, JsonObject *obj, const char *where, const char *key)
{
  JsonNode *node;

  if (r->error != NULL || obj == NULL)
    return NULL;
  node = json_object_get_member (obj, key);
  if (node == NULL)
    r_fail (r, "the field “%s%s%s” is missing", where, dot (where), key);
  return node;
}

static gboolean
r_wrong_type (Reader *r, const char *where, const char *key, const char *expected)
{
  return r_fail (r, "the field “%s%s%s” is not %s", where, dot (where), key, expected);
}

static JsonObject *
r_object (Reader *r, JsonObject *obj, const char *where, const char *key)
{
  JsonNode *node = r_member (r, obj, where, key);

  if (node == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      r_wrong_type (r, where, key, "an object");
      return NULL;
    }
  return json_node_get_object (node);
}

/* An array, or NULL; with nullable, a JSON null is NULL without an error. */
static JsonArray *
r_array (Reader *r, JsonObject *obj, const char *where, const char *key, gboolean nullable)
{
  JsonNode *node = r_member (r, obj, where, key);

  if (node == NULL || (nullable && JSON_NODE_HOLDS_NULL (node)))
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY (node))
    {
      r_wrong_type (r, where, key, nullable ? "an array or null" : "an array");
      return NULL;
    }
  return json_node_get_array (node);
}

/* A newly allocated string; with nullable, null gives NULL. */
static char *
r_string (Reader *r, JsonObject *obj, const char *where, const char *key, gboolean nullable)
{
  JsonNode *node = r_member (r, obj, where, key);

  if (node == NULL || (nullable && JSON_NODE_HOLDS_NULL (node)))
    return NULL;
  if (json_node_get_value_type (node) != G_TYPE_STRING)
    {
      r_wrong_type (r, where, key, nullable ? "a string or null" : "a string");
      return NULL;
    }
  return g_strdup (json_node_get_string (node));
}

static gboolean
r_int (Reader *r, JsonObject *obj, const char *where, const char *key, gint64 min, gint64 max,
       gint64 *out)
{
  JsonNode *node = r_member (r, obj, where, key);
  gint64 v;

  if (node == NULL)
    return FALSE;
  if (json_node_get_value_type (node) != G_TYPE_INT64)
    return r_wrong_type (r, where, key, "an integer");
  v = json_node_get_int (node);
  if (v < min || v > max)
    return r_fail (r, "the field “%s%s%s” is %" G_GINT64_FORMAT ", outside [%" G_GINT64_FORMAT
                   ", %" G_GINT64_FORMAT "]", where, dot (where), key, v, min, max);
  *out = v;
  return TRUE;
}

static gboolean
r_int32 (Reader *r, JsonObject *obj, const char *where, const char *key, gint64 min, gint64 max,
         int *out)
{
  gint64 v;

  if (!r_int (r, obj, where, key, min, max, &v))
    return FALSE;
  *out = (int) v;
  return TRUE;
}

static gboolean
r_uint (Reader *r, JsonObject *obj, const char *where, const char *key, guint *out)
{
  gint64 v;

  if (!r_int (r, obj, where, key, 0, G_MAXUINT, &v))
    return FALSE;
  *out = (guint) v;
  return TRUE;
}

/* An integer >= 0, or a decimal string for values above G_MAXINT64. */
static gboolean
r_u64 (Reader *r, JsonObject *obj, const char *where, const char *key, guint64 *out)
{
  JsonNode *node = r_member (r, obj, where, key);

  if (node == NULL)
    return FALSE;
  if (json_node_get_value_type (node) == G_TYPE_STRING)
    {
      guint64 v;

      if (!g_ascii_string_to_unsigned (json_node_get_string (node), 10, 0, G_MAXUINT64, &v, NULL))
        return r_wrong_type (r, where, key, "an unsigned 64-bit integer");
      *out = v;
      return TRUE;
    }
  if (json_node_get_value_type (node) != G_TYPE_INT64 || json_node_get_int (node) < 0)
    return r_wrong_type (r, where, key, "an unsigned 64-bit integer");
  *out = (guint64) json_node_get_int (node);
  return TRUE;
}

/* A finite number in [min, max]; with nullable, null reads as NaN. */
static gboolean
r_double (Reader *r, JsonObject *obj, const char *where, const char *key, gboolean nullable,
          double min, double max, double *out)
{
  JsonNode *node = r_member (r, obj, where, key);
  GType type;
  double v;

  if (node == NULL)
    return FALSE;
  if (nullable && JSON_NODE_HOLDS_NULL (node))
    {
      *out = NAN;
      return TRUE;
    }
  type = json_node_get_value_type (node);
  if (type == G_TYPE_DOUBLE)
    v = json_node_get_double (node);
  else if (type == G_TYPE_INT64)
    v = (double) json_node_get_int (node);
  else
    return r_wrong_type (r, where, key, nullable ? "a number or null" : "a number");
  if (!isfinite (v))
    return r_fail (r, "the field “%s%s%s” is not a finite number", where, dot (where), key);
  if (v < min || v > max)
    return r_fail (r, "the field “%s%s%s” is %g, outside [%g, %g]", where, dot (where), key, v,
                   min, max);
  *out = v;
  return TRUE;
}

static gboolean
r_float (Reader *r, JsonObject *obj, const char *where, const char *key, double min, double max,
         float *out)
{
  double v;

  if (!r_double (r, obj, where, key, FALSE, MAX (min, -FLT_MAX), MIN (max, FLT_MAX), &v))
    return FALSE;
  *out = (float) v;
  return TRUE;
}

static gboolean
r_bool (Reader *r, JsonObject *obj, const char *where, const char *key, gboolean *out)
{
  JsonNode *node = r_member (r, obj, where, key);

  if (node == NULL)
    return FALSE;
  if (json_node_get_value_type (node) != G_TYPE_BOOLEAN)
    return r_wrong_type (r, where, key, "true or false");
  *out = json_node_get_boolean (node);
  return TRUE;
}

/* A shape: [F] or [C, H, W], every dimension in [1, ARCH_MAX_FIELD]. */
static gboolean
r_shape (Reader *r, JsonObject *obj, const char *where, const char *key, EsShape *shape)
{
  JsonArray *arr = r_array (r, obj, where, key, FALSE);
  guint n;
  double size = 1.0;

  if (arr == NULL)
    return FALSE;
  n = json_array_get_length (arr);
  if (n != 1 && n != 3)
    return r_fail (r, "the field “%s.%s” has %u dimensions; a shape is [features] or "
                   "[channels, height, width]", where, key, n);
  shape->rank = (int) n;
  for (guint i = 0; i < n; i++)
    {
      JsonNode *e = json_array_get_element (arr, i);
      gint64 d;

      if (json_node_get_value_type (e) != G_TYPE_INT64)
        return r_fail (r, "the field “%s.%s” holds something other than integers", where, key);
      d = json_node_get_int (e);
      if (d < 1 || d > ARCH_MAX_FIELD)
        return r_fail (r, "the field “%s.%s” has a dimension of %" G_GINT64_FORMAT, where, key, d);
      shape->dims[i] = (int) d;
      size *= (double) d;
    }
  if (size > ARCH_MAX_FLOATS)
    return r_fail (r, "the field “%s.%s” is too large", where, key);
  return TRUE;
}

static gboolean
read_layer (Reader *r, JsonNode *node, guint i, EsLayerSpec *spec)
{
  g_autofree char *where = g_strdup_printf ("architecture.layers[%u]", i);
  g_autofree char *kind_name = NULL;
  JsonObject *obj;
  EsLayerKind kind;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return r_fail (r, "“%s” is not an object", where);
  obj = json_node_get_object (node);
  kind_name = r_string (r, obj, where, "kind", FALSE);
  if (kind_name == NULL)
    return FALSE;
  if (!es_layer_kind_from_name (kind_name, &kind))
    return r_fail (r, "“%s.kind” is “%s”, not a known layer kind", where, kind_name);

  *spec = es_layer_spec_default (kind);
  switch (kind)
    {
    case ES_LAYER_DENSE:
      r_int32 (r, obj, where, "units", 1, ARCH_MAX_FIELD, &spec->units);
      break;
    case ES_LAYER_CONV2D:
      r_int32 (r, obj, where, "filters", 1, ARCH_MAX_FIELD, &spec->filters);
      r_int32 (r, obj, where, "kernel", 1, ARCH_MAX_FIELD, &spec->kernel);
      r_int32 (r, obj, where, "stride", 1, ARCH_MAX_FIELD, &spec->stride);
      r_int32 (r, obj, where, "padding", 0, ARCH_MAX_FIELD, &spec->padding);
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      r_int32 (r, obj, where, "kernel", 1, ARCH_MAX_FIELD, &spec->kernel);
      r_int32 (r, obj, where, "stride", 1, ARCH_MAX_FIELD, &spec->stride);
      break;
    case ES_LAYER_LEAKY_RELU:
      r_float (r, obj, where, "alpha", -FLT_MAX, FLT_MAX, &spec->alpha);
      break;
    case ES_LAYER_DROPOUT:
      if (r_float (r, obj, where, "rate", 0.0, 1.0, &spec->rate) && spec->rate >= 1.0f)
        r_fail (r, "“%s.rate” is 1; a dropout rate is below 1", where);
      break;
    case ES_LAYER_BATCHNORM:
      r_float (r, obj, where, "momentum", FLT_MIN, 1.0, &spec->momentum);
      r_float (r, obj, where, "eps", FLT_MIN, FLT_MAX, &spec->eps);
      break;
    default:
      break;
    }
  return r->error == NULL;
}

/* Shape inference in double precision, as a ceiling: a corrupt file must not make the
 * engine's int arithmetic overflow, nor allocate more parameters than the weights file's
 * data (weight_bytes) can hold. Exact checks and messages come from es_model_new. The
 * size errors name the weights file (r->file); the others the JSON file. */
static gboolean
check_architecture_size (Reader *r, const EsShape *input, const EsLayerSpec *specs, int n,
                         gsize weight_bytes, const char *json_path)
{
  double c = input->dims[0];
  double h = input->rank == 3 ? input->dims[1] : 1.0;
  double w = input->rank == 3 ? input->dims[2] : 1.0;
  double floats = 0.0;   /* parameters and buffers */

  for (int i = 0; i < n; i++)
    {
      const EsLayerSpec *s = &specs[i];
      double flops = 0.0;

      switch (s->kind)
        {
        case ES_LAYER_DENSE:
          floats += c * h * w * s->units + s->units;
          flops = 2.0 * c * h * w * s->units;
          c = s->units;
          h = w = 1.0;
          break;
        case ES_LAYER_CONV2D:
        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          {
            double pad = s->kind == ES_LAYER_CONV2D ? s->padding : 0.0;
            double oh = MAX (1.0, floor ((h + 2.0 * pad - s->kernel) / s->stride) + 1.0);
            double ow = MAX (1.0, floor ((w + 2.0 * pad - s->kernel) / s->stride) + 1.0);

            flops = 2.0 * oh * ow * c * s->kernel * s->kernel;
            if (s->kind == ES_LAYER_CONV2D)
              {
                floats += (double) s->filters * c * s->kernel * s->kernel + s->filters;
                flops *= s->filters;
                c = s->filters;
              }
            h = oh;
            w = ow;
          }
          break;
        case ES_LAYER_FLATTEN:
          c = c * h * w;
          h = w = 1.0;
          break;
        case ES_LAYER_BATCHNORM:
          floats += 4.0 * c;
          flops = 4.0 * c * h * w;
          break;
        default:
          flops = 4.0 * c * h * w;
          break;
        }
      if (c * h * w > ARCH_MAX_FLOATS || h > ARCH_MAX_FIELD || w > ARCH_MAX_FIELD
          || flops > ARCH_MAX_FLOPS)
        {
          r->file = json_path;
          return r_fail (r, "“architecture.layers[%d]” is too large to be a real model", i);
        }
      if (floats * 4.0 > (double) weight_bytes)
        return r_fail (r, "the file has %" G_GSIZE_FORMAT " bytes of data, but up to its layer "
                       "%d the architecture in %s needs %.0f floats: the file is truncated, or "
                       "the architecture is corrupt", weight_bytes, i + 1, json_path, floats);
    }
  return TRUE;
}

static void
read_training (Reader *r, JsonObject *root, EspalierTrainOptions *o)
{
  const char *w = "training";
  JsonObject *obj = r_object (r, root, "", w);
  JsonObject *aug;
  EsTrainConfig *c = &o->engine;
  g_autofree char *loss = NULL, *opt = NULL, *schedule = NULL;
  gint64 v;

  if (obj == NULL)
    return;
  loss = r_string (r, obj, w, "loss", FALSE);
  if (loss != NULL && !es_loss_kind_from_name (loss, &c->loss))
    r_fail (r, "“training.loss” is “%s”, not a known loss", loss);
  opt = r_string (r, obj, w, "optimizer", FALSE);
  if (opt != NULL && !es_opt_kind_from_name (opt, &c->optimizer))
    r_fail (r, "“training.optimizer” is “%s”, not a known optimizer", opt);
  r_float (r, obj, w, "lr", 0.0, FLT_MAX, &c->lr);
  r_float (r, obj, w, "momentum", 0.0, 1.0, &c->momentum);
  r_float (r, obj, w, "beta1", 0.0, 1.0, &c->beta1);
  r_float (r, obj, w, "beta2", 0.0, 1.0, &c->beta2);
  r_float (r, obj, w, "eps", 0.0, FLT_MAX, &c->eps);
  r_float (r, obj, w, "weight_decay", 0.0, FLT_MAX, &c->weight_decay);
  r_float (r, obj, w, "l1", 0.0, FLT_MAX, &c->l1);
  r_float (r, obj, w, "l2", 0.0, FLT_MAX, &c->l2);
  r_float (r, obj, w, "clip_norm", 0.0, FLT_MAX, &c->clip_norm);
  r_int32 (r, obj, w, "accum_steps", 1, G_MAXINT, &c->accum_steps);
  schedule = r_string (r, obj, w, "schedule", FALSE);
  if (schedule != NULL && !es_lr_schedule_from_name (schedule, &c->schedule))
    r_fail (r, "“training.schedule” is “%s”, not a known schedule", schedule);
  r_int32 (r, obj, w, "step_size", 0, G_MAXINT, &c->step_size);
  r_float (r, obj, w, "gamma", 0.0, FLT_MAX, &c->gamma);
  r_float (r, obj, w, "min_lr", 0.0, FLT_MAX, &c->min_lr);
  if (r_int (r, obj, w, "total_steps", 0, G_MAXINT64, &v))
    c->total_steps = v;
  r_int32 (r, obj, w, "warmup_steps", 0, G_MAXINT, &c->warmup_steps);
  r_u64 (r, obj, w, "dropout_seed", &c->seed);

  if (r_uint (r, obj, w, "epochs", &o->epochs) && o->epochs == 0)
    r_fail (r, "“training.epochs” is 0");
  if (r_uint (r, obj, w, "batch_size", &o->batch_size) && o->batch_size == 0)
    r_fail (r, "“training.batch_size” is 0");
  r_uint (r, obj, w, "patience", &o->patience);
  r_double (r, obj, w, "min_delta", FALSE, 0.0, G_MAXDOUBLE, &o->min_delta);
  r_double (r, obj, w, "val_fraction", FALSE, 0.0, 1.0, &o->val_fraction);
  r_double (r, obj, w, "test_fraction", FALSE, 0.0, 1.0, &o->test_fraction);
  /* the split's own rule: each below 1, and a training part left over */
  if (o->val_fraction >= 1.0 || o->test_fraction >= 1.0 || o->val_fraction + o->test_fraction >= 1.0)
    r_fail (r, "“training.val_fraction” (%g) and “training.test_fraction” (%g) leave no "
            "training rows", o->val_fraction, o->test_fraction);
  r_u64 (r, obj, w, "seed", &o->seed);
  r_uint (r, obj, w, "threads", &o->threads);
  {
    guint64 limit = 0;

    if (r_u64 (r, obj, w, "memory_limit", &limit))
      {
        if (limit > G_MAXSIZE)
          r_fail (r, "“training.memory_limit” does not fit this machine's address space");
        o->memory_limit = (gsize) limit;
      }
  }
  aug = r_object (r, obj, w, "augment");
  if (aug != NULL)
    {
      gboolean hflip = FALSE;

      r_uint (r, aug, "training.augment", "shift_pixels", &o->augment.shift_pixels);
      if (r_bool (r, aug, "training.augment", "hflip", &hflip))
        o->augment.hflip = hflip;
      r_float (r, aug, "training.augment", "noise_std", 0.0, FLT_MAX, &o->augment.noise_std);
    }
}

static void
read_history (Reader *r, JsonObject *root, GArray *history)
{
  JsonArray *arr = r_array (r, root, "", "history", FALSE);

  for (guint i = 0; arr != NULL && r->error == NULL && i < json_array_get_length (arr); i++)
    {
      JsonNode *node = json_array_get_element (arr, i);
      g_autofree char *where = g_strdup_printf ("history[%u]", i);
      EspalierEpochRecord rec = { 0 };
      gint64 epoch;
      JsonObject *obj;

      if (!JSON_NODE_HOLDS_OBJECT (node))
        {
          r_fail (r, "“%s” is not an object", where);
          return;
        }
      obj = json_node_get_object (node);
      if (r_int (r, obj, where, "epoch", 1, G_MAXUINT, &epoch))
        rec.epoch = (guint) epoch;
      r_double (r, obj, where, "train_loss", TRUE, 0.0, G_MAXDOUBLE, &rec.train_loss);
      r_double (r, obj, where, "train_accuracy", TRUE, 0.0, 1.0, &rec.train_accuracy);
      r_double (r, obj, where, "val_loss", TRUE, 0.0, G_MAXDOUBLE, &rec.val_loss);
      r_double (r, obj, where, "val_accuracy", TRUE, 0.0, 1.0, &rec.val_accuracy);
      r_double (r, obj, where, "lr", TRUE, -G_MAXDOUBLE, G_MAXDOUBLE, &rec.lr);
      r_double (r, obj, where, "seconds", TRUE, 0.0, G_MAXDOUBLE, &rec.seconds);
      g_array_append_val (history, rec);
    }
}

static void
read_metrics (Reader *r, JsonObject *root, EspalierMetrics *m)
{
  const char *w = "test";
  JsonObject *obj = r_object (r, root, "", w);
  JsonArray *rows;

  if (obj == NULL)
    return;
  r_uint (r, obj, w, "rows", &m->rows);
  r_double (r, obj, w, "loss", TRUE, 0.0, G_MAXDOUBLE, &m->loss);
  r_double (r, obj, w, "accuracy", TRUE, 0.0, 1.0, &m->accuracy);
  r_uint (r, obj, w, "n_classes", &m->n_classes);
  rows = r_array (r, obj, w, "confusion", TRUE);
  if (rows == NULL || r->error != NULL)
    return;
  if (json_array_get_length (rows) != m->n_classes || m->n_classes == 0)
    {
      r_fail (r, "“test.confusion” has %u rows for %u classes", json_array_get_length (rows),
              m->n_classes);
      return;
    }
  /* Each row is checked against n_classes before anything is allocated, so the
   * allocation is bounded by the file's own size. */
  for (guint i = 0; i < m->n_classes; i++)
    {
      JsonNode *row = json_array_get_element (rows, i);

      if (!JSON_NODE_HOLDS_ARRAY (row)
          || json_array_get_length (json_node_get_array (row)) != m->n_classes)
        {
          r_fail (r, "“test.confusion[%u]” is not an array of %u counts", i, m->n_classes);
          return;
        }
    }
  m->confusion = g_new0 (guint, (gsize) m->n_classes * m->n_classes);
  for (guint i = 0; i < m->n_classes; i++)
    {
      JsonArray *row = json_node_get_array (json_array_get_element (rows, i));

      for (guint j = 0; j < m->n_classes; j++)
        {
          JsonNode *e = json_array_get_element (row, j);

          if (json_node_get_value_type (e) != G_TYPE_INT64 || json_node_get_int (e) < 0
              || json_node_get_int (e) > G_MAXUINT)
            {
              r_fail (r, "“test.confusion[%u][%u]” is not a count", i, j);
              return;
            }
          m->confusion[(gsize) i * m->n_classes + j] = (guint) json_node_get_int (e);
        }
    }
}

static void
read_dataset (Reader *r, JsonObject *root, EspalierModelInfo *info)
{
  JsonObject *obj = r_object (r, root, "", "dataset");
  JsonNode *pre;

  if (obj == NULL)
    return;
  info->dataset_source = r_string (r, obj, "dataset", "source", TRUE);
  pre = r_member (r, obj, "dataset", "preprocessing");
  if (pre != NULL && !JSON_NODE_HOLDS_NULL (pre))
    {
      if (!JSON_NODE_HOLDS_OBJECT (pre))
        r_wrong_type (r, "dataset", "preprocessing", "an object or null");
      else
        info->preprocessing = node_to_text (pre, FALSE);
    }
  r_double (r, obj, "dataset", "input_scale", FALSE, -G_MAXDOUBLE, G_MAXDOUBLE, &info->input_scale);
  r_double (r, obj, "dataset", "input_shift", FALSE, -G_MAXDOUBLE, G_MAXDOUBLE, &info->input_shift);
}

static void
read_class_names (Reader *r, JsonObject *root, EspalierModelInfo *info)
{
  JsonArray *arr = r_array (r, root, "", "class_names", TRUE);
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
          r_fail (r, "“class_names[%u]” is not a string", i);
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
read_weights_ref (Reader *r, JsonObject *root, WeightsRef *ref)
{
  JsonObject *obj = r_object (r, root, "", "weights");
  g_autofree char *format = NULL;

  if (obj == NULL)
    return;
  ref->file = r_string (r, obj, "weights", "file", FALSE);
  if (ref->file != NULL
      && (ref->file[0] == '\0' || strchr (ref->file, '/') != NULL || strchr (ref->file, '\\') != NULL
          || strcmp (ref->file, ".") == 0 || strcmp (ref->file, "..") == 0))
    r_fail (r, "“weights.file” is “%s”, not a file name beside the model file", ref->file);
  format = r_string (r, obj, "weights", "format", FALSE);
  if (format != NULL && strcmp (format, "safetensors") != 0)
    r_fail (r, "“weights.format” is “%s”; only safetensors is known", format);
  r_int (r, obj, "weights", "size", 8, G_MAXINT64, &ref->size);
  ref->sha256 = r_string (r, obj, "weights", "sha256", FALSE);
  if (ref->sha256 != NULL)
    {
      gboolean hex = strlen (ref->sha256) == 64;

      for (const char *p = ref->sha256; hex && *p != '\0'; p++)
        hex = g_ascii_isxdigit (*p);
      if (!hex)
        r_fail (r, "“weights.sha256” is not 64 hexadecimal digits");
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
read_architecture (Reader *r, JsonObject *root, EsShape *input, EsLayerSpec **specs, int *n_layers)
{
  JsonObject *arch = r_object (r, root, "", "architecture");
  JsonArray *layers;
  guint n;

  *specs = NULL;
  *n_layers = 0;
  if (!r_shape (r, arch, "architecture", "input_shape", input))
    return;
  layers = r_array (r, arch, "architecture", "layers", FALSE);
  if (layers == NULL)
    return;
  n = json_array_get_length (layers);
  if (n == 0)
    {
      r_fail (r, "“architecture.layers” is empty");
      return;
    }
  if (n > 100000)
    {
      r_fail (r, "“architecture.layers” has %u layers", n);
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
check_architecture_counts (Reader *r, JsonObject *root, const EsModel *model)
{
  JsonObject *arch = r_object (r, root, "", "architecture");
  JsonArray *out = r_array (r, arch, "architecture", "output_shape", FALSE);
  EsShape out_shape = es_model_output_shape (model);
  gint64 n_params = 0, n_buffers = 0;

  if (out != NULL && !shapes_match (out, &out_shape))
    r_fail (r, "“architecture.output_shape” does not match the layers");
  if (r_int (r, arch, "architecture", "n_params", 0, G_MAXINT64, &n_params)
      && n_params != es_model_n_params (model))
    r_fail (r, "“architecture.n_params” is %" G_GINT64_FORMAT " but the layers have %" G_GINT64_FORMAT
            " parameters", n_params, (gint64) es_model_n_params (model));
  if (r_int (r, arch, "architecture", "n_buffers", 0, G_MAXINT64, &n_buffers)
      && n_buffers != es_model_n_buffers (model))
    r_fail (r, "“architecture.n_buffers” is %" G_GINT64_FORMAT " but the layers have %"
            G_GINT64_FORMAT " buffer values", n_buffers, (gint64) es_model_n_buffers (model));
}

/* Everything in the JSON file but the architecture. */
static void
read_info (Reader *r, JsonObject *root, EspalierModelInfo *info, WeightsRef *ref)
{
  g_autofree char *format = NULL;
  JsonObject *prov;
  gint64 version = 0;

  format = r_string (r, root, "", "format", FALSE);
  if (format != NULL && strcmp (format, MODEL_FORMAT_NAME) != 0)
    r_fail (r, "“format” is “%s”, not “" MODEL_FORMAT_NAME "”", format);
  if (r_int (r, root, "", "version", 1, G_MAXINT64, &version)
      && version > ESPALIER_MODEL_FORMAT_VERSION)
    r_fail (r, "the file has version %" G_GINT64_FORMAT "; this Espalier reads up to %d",
            version, ESPALIER_MODEL_FORMAT_VERSION);
  info->name = r_string (r, root, "", "name", FALSE);
  info->template_name = r_string (r, root, "", "template", TRUE);
  read_training (r, root, &info->train);
  read_history (r, root, info->history);
  read_metrics (r, root, &info->test);
  read_dataset (r, root, info);
  read_class_names (r, root, info);
  prov = r_object (r, root, "", "provenance");
  info->producer = r_string (r, prov, "provenance", "producer", FALSE);
  info->created = r_string (r, prov, "provenance", "created", FALSE);
  g_free (r_string (r, prov, "provenance", "host", TRUE));
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

static void
copy_floats_le (float *dst, const guint8 *src, gint64 n)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  memcpy (dst, src, (gsize) n * sizeof (float));
#else
  for (gint64 i = 0; i < n; i++)
    {
      guint32 u;

      memcpy (&u, src + 4 * i, 4);
      u = GUINT32_FROM_LE (u);
      memcpy (&dst[i], &u, 4);
    }
#endif
}

/* The safetensors header of bytes (len), parsed by parser; *data_start is where the
 * tensor data begins. */
static JsonObject *
read_safetensors_header (Reader *r, const guint8 *bytes, gsize len, JsonParser *parser,
                         gsize *data_start)
{
  g_autoptr(GError) local = NULL;
  guint64 header_len;
  JsonNode *root;

  if (len < 8)
    {
      r_fail (r, "the file is %" G_GSIZE_FORMAT " bytes, too short for a safetensors header", len);
      return NULL;
    }
  memcpy (&header_len, bytes, 8);
  header_len = GUINT64_FROM_LE (header_len);
  if (header_len < 2 || header_len > SAFETENSORS_MAX_HEADER || header_len > len - 8)
    {
      r_fail (r, "the header length %" G_GUINT64_FORMAT " does not fit the %" G_GSIZE_FORMAT
              "-byte file", header_len, len);
      return NULL;
    }
  if (bytes[8] != '{' || memchr (bytes + 8, '\0', header_len) != NULL
      || !g_utf8_validate ((const char *) bytes + 8, (gssize) header_len, NULL))
    {
      r_fail (r, "the header is not a JSON object");
      return NULL;
    }
  if (!json_parser_load_from_data (parser, (const char *) bytes + 8, (gssize) header_len, &local))
    {
      r_fail (r, "the header is not valid JSON: %s", local->message);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      r_fail (r, "the header is not a JSON object");
      return NULL;
    }
  *data_start = 8 + (gsize) header_len;
  return json_node_get_object (root);
}

/* Validate the safetensors header obj against model's tensors and copy the data in. */
static gboolean
read_safetensors (Reader *r, JsonObject *obj, const guint8 *data, gsize data_len, EsModel *model)
{
  g_autofree Range *ranges = NULL;
  g_autofree gboolean *seen = NULL;
  g_autoptr(GList) members = NULL;
  int n_tensors = es_model_n_tensors (model);
  int n_ranges = 0;

  seen = g_new0 (gboolean, MAX (n_tensors, 1));
  ranges = g_new0 (Range, MAX (n_tensors, 1));
  members = json_object_get_members (obj);
  for (GList *l = members; l != NULL; l = l->next)
    {
      const char *key = l->data;
      JsonNode *node = json_object_get_member (obj, key);
      g_autofree char *dtype = NULL;
      const EsTensorInfo *t = NULL;
      JsonArray *shape, *offsets;
      gint64 begin, end;
      int ti;

      if (strcmp (key, "__metadata__") == 0)
        {
          g_autoptr(GList) meta = NULL;

          if (!JSON_NODE_HOLDS_OBJECT (node))
            return r_fail (r, "“__metadata__” is not an object");
          meta = json_object_get_members (json_node_get_object (node));
          for (GList *m = meta; m != NULL; m = m->next)
            if (json_node_get_value_type (json_object_get_member (json_node_get_object (node),
                                                                  m->data)) != G_TYPE_STRING)
              return r_fail (r, "“__metadata__.%s” is not a string", (const char *) m->data);
          continue;
        }
      for (ti = 0; ti < n_tensors; ti++)
        if (strcmp (es_model_tensor (model, ti)->name, key) == 0)
          break;
      if (ti == n_tensors)
        return r_fail (r, "the tensor “%s” is not part of the architecture", key);
      t = es_model_tensor (model, ti);
      if (!JSON_NODE_HOLDS_OBJECT (node))
        return r_fail (r, "the entry of tensor “%s” is not an object", key);
      dtype = r_string (r, json_node_get_object (node), key, "dtype", FALSE);
      if (dtype == NULL)
        return FALSE;
      if (strcmp (dtype, "F32") != 0)
        return r_fail (r, "the tensor “%s” has dtype %s; Espalier models are F32", key, dtype);
      shape = r_array (r, json_node_get_object (node), key, "shape", FALSE);
      if (shape == NULL)
        return FALSE;
      /* Tensors have up to 4 dimensions; EsShape holds 3, so compare by hand. */
      if (json_array_get_length (shape) != (guint) t->rank)
        return r_fail (r, "the tensor “%s” has %u dimensions; the architecture needs %d", key,
                       json_array_get_length (shape), t->rank);
      for (int k = 0; k < t->rank; k++)
        {
          JsonNode *e = json_array_get_element (shape, (guint) k);

          if (json_node_get_value_type (e) != G_TYPE_INT64 || json_node_get_int (e) != t->dims[k])
            {
              GString *need = g_string_new ("[");

              for (int q = 0; q < t->rank; q++)
                g_string_append_printf (need, q ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT,
                                        (gint64) t->dims[q]);
              g_string_append_c (need, ']');
              r_fail (r, "the tensor “%s” has the wrong shape; the architecture needs %s", key,
                      need->str);
              g_string_free (need, TRUE);
              return FALSE;
            }
        }
      offsets = r_array (r, json_node_get_object (node), key, "data_offsets", FALSE);
      if (offsets == NULL)
        return FALSE;
      if (json_array_get_length (offsets) != 2
          || json_node_get_value_type (json_array_get_element (offsets, 0)) != G_TYPE_INT64
          || json_node_get_value_type (json_array_get_element (offsets, 1)) != G_TYPE_INT64)
        return r_fail (r, "the tensor “%s” has malformed data_offsets", key);
      begin = json_array_get_int_element (offsets, 0);
      end = json_array_get_int_element (offsets, 1);
      if (begin < 0 || end < begin)
        return r_fail (r, "the tensor “%s” has data_offsets [%" G_GINT64_FORMAT ", %"
                       G_GINT64_FORMAT "]", key, begin, end);
      if ((guint64) end > data_len)
        return r_fail (r, "the tensor “%s” ends at byte %" G_GINT64_FORMAT " of %" G_GSIZE_FORMAT
                       " data bytes: the file is truncated", key, end, data_len);
      if (end - begin != t->size * 4)
        return r_fail (r, "the tensor “%s” has %" G_GINT64_FORMAT " bytes; its shape needs %"
                       G_GINT64_FORMAT, key, end - begin, (gint64) (t->size * 4));
      seen[ti] = TRUE;
      ranges[n_ranges++] = (Range) { begin, end, ti };
    }
  for (int ti = 0; ti < n_tensors; ti++)
    if (!seen[ti])
      return r_fail (r, "the tensor “%s” is missing", es_model_tensor (model, ti)->name);

  /* The byte ranges must tile the data exactly, as the safetensors format requires. */
  qsort (ranges, (gsize) n_ranges, sizeof *ranges, range_compare);
  for (int i = 0; i < n_ranges; i++)
    {
      gint64 expected = i == 0 ? 0 : ranges[i - 1].end;

      if (ranges[i].begin < expected)
        return r_fail (r, "the tensors “%s” and “%s” overlap",
                       es_model_tensor (model, ranges[i - 1].tensor)->name,
                       es_model_tensor (model, ranges[i].tensor)->name);
      if (ranges[i].begin > expected)
        return r_fail (r, "there is a gap before the tensor “%s”",
                       es_model_tensor (model, ranges[i].tensor)->name);
    }
  if ((gsize) (n_ranges > 0 ? ranges[n_ranges - 1].end : 0) != data_len)
    return r_fail (r, "the file has %" G_GSIZE_FORMAT " bytes of data, but its tensors use %"
                   G_GINT64_FORMAT, data_len, n_ranges > 0 ? ranges[n_ranges - 1].end : 0);

  for (int i = 0; i < n_ranges; i++)
    copy_floats_le (es_model_tensor_data (model, ranges[i].tensor), data + ranges[i].begin,
                    (ranges[i].end - ranges[i].begin) / 4);
  return TRUE;
}

/* Read the JSON about to be written as espalier_model_load would, so that a value it
 * would refuse (a batch size of 0, a NaN learning rate) is refused now instead. */
static gboolean
validate_for_save (JsonNode *root, const char *json_path, GError **error)
{
  g_autofree EsLayerSpec *specs = NULL;
  EspalierModelInfo tmp;
  WeightsRef ref = { 0 };
  Reader r = { .file = json_path };
  EsShape input = { 0 };
  int n_layers = 0;

  espalier_model_info_init (&tmp);
  read_info (&r, json_node_get_object (root), &tmp, &ref);
  read_architecture (&r, json_node_get_object (root), &input, &specs, &n_layers);
  espalier_model_info_clear (&tmp);
  weights_ref_clear (&ref);
  if (r.error == NULL)
    return TRUE;
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID, "Not saved, it could not be read "
               "back: %s", r.error->message);
  g_clear_error (&r.error);
  return FALSE;
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
  g_autofree char *json_path = NULL, *st_path = NULL, *dir = NULL, *text = NULL;
  g_autofree EsLayerSpec *specs = NULL;
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(JsonParser) st_parser = json_parser_new ();
  g_autoptr(GMappedFile) mapped = NULL;
  g_autoptr(GChecksum) sum = NULL;
  g_autoptr(GError) local = NULL;
  EspalierModelInfo tmp;
  WeightsRef ref = { 0 };
  Reader r = { 0 };
  EsModel *model = NULL;
  EsShape input = { 0 };
  EsError es_err = { 0 };
  JsonNode *root;
  const guint8 *bytes = NULL;
  JsonObject *header = NULL;
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
  if (!g_utf8_validate (text, (gssize) len, NULL) || memchr (text, '\0', len) != NULL)
    r_fail (&r, "the file is not UTF-8 text");
  else if (!json_parser_load_from_data (parser, text, (gssize) len, &local))
    {
      /* json-glib names the input "<data>:LINE:COLUMN"; the file is named already */
      const char *where = g_str_has_prefix (local->message, "<data>:") ? local->message + 7
                                                                        : local->message;
      r_fail (&r, "not valid JSON at line %s", where);
    }
  else if ((root = json_parser_get_root (parser)) == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    r_fail (&r, "not a JSON object");
  else
    {
      JsonObject *obj = json_node_get_object (root);

      read_info (&r, obj, &tmp, &ref);
      read_architecture (&r, obj, &input, &specs, &n_layers);
      if (r.error == NULL)
        {
          dir = g_path_get_dirname (json_path);
          st_path = g_build_filename (dir, ref.file, NULL);
          mapped = g_mapped_file_new (st_path, FALSE, &local);
          if (mapped == NULL)
            {
              g_set_error (&r.error, G_IO_ERROR, g_io_error_from_file_error (local->code),
                           "%s (the weights of %s)", local->message, json_path);
              goto fail;
            }
          bytes = (const guint8 *) g_mapped_file_get_contents (mapped);
          len = g_mapped_file_get_length (mapped);
          r.file = st_path;
          header = read_safetensors_header (&r, bytes, len, st_parser, &data_start);
          if (header != NULL
              && check_architecture_size (&r, &input, specs, n_layers, len - data_start, json_path))
            {
              r.file = json_path;
              model = es_model_new (&input, specs, n_layers, &es_err);
              if (model == NULL)
                r_fail (&r, "the architecture does not build: %s", es_err.message);
              else
                check_architecture_counts (&r, obj, model);
            }
        }
    }
  if (r.error != NULL)
    goto fail;

  r.file = st_path;
  if (!read_safetensors (&r, header, bytes + data_start, len - data_start, model))
    goto fail;
  if ((gint64) len != ref.size)
    {
      r_fail (&r, "the file is %" G_GSIZE_FORMAT " bytes, but %s records %" G_GINT64_FORMAT, len,
              json_path, ref.size);
      goto fail;
    }
  sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_checksum_update (sum, bytes, (gssize) len);
  if (g_ascii_strcasecmp (g_checksum_get_string (sum), ref.sha256) != 0)
    {
      r_fail (&r, "the SHA-256 is %s, but %s records %s: the weights are corrupt or belong to "
              "another model", g_checksum_get_string (sum), json_path, ref.sha256);
      goto fail;
    }

  weights_ref_clear (&ref);
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
  es_model_free (model);
  return NULL;
}
