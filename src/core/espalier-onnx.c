/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-onnx.c: what ONNX export and import share: the metadata record, reading a
 * file into the generated protobuf-c messages, and the summary of a file (nodes per
 * operator, initializer bytes) that the Export page and the CLI print. The graph
 * itself is written in espalier-onnx-export.c and read in espalier-onnx-import.c. */
#include "config.h"

#include "espalier-onnx-private.h"

#include <string.h>

#include <gio/gio.h>
#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"

void
espalier_onnx_meta_init (EspalierOnnxMeta *meta)
{
  g_return_if_fail (meta != NULL);

  memset (meta, 0, sizeof *meta);
  meta->input_scale = 1.0;
}

void
espalier_onnx_meta_clear (EspalierOnnxMeta *meta)
{
  g_return_if_fail (meta != NULL);

  g_free (meta->model_name);
  g_free (meta->producer);
  g_free (meta->version);
  g_free (meta->description);
  g_strfreev (meta->class_names);
  g_free (meta->preprocessing);
  g_free (meta->quantization);
  memset (meta, 0, sizeof *meta);
}

void
espalier_onnx_meta_from_info (EspalierOnnxMeta *meta, const EspalierModelInfo *info)
{
  g_return_if_fail (meta != NULL);

  espalier_onnx_meta_clear (meta);
  espalier_onnx_meta_init (meta);
  if (info == NULL)
    return;
  meta->model_name = g_strdup (info->name);
  meta->class_names = g_strdupv (info->class_names);
  meta->input_scale = info->input_scale;
  meta->input_shift = info->input_shift;
  meta->preprocessing = g_strdup (info->preprocessing);
}

void
espalier_onnx_meta_to_info (const EspalierOnnxMeta *meta, EspalierModelInfo *info)
{
  g_return_if_fail (meta != NULL);
  g_return_if_fail (info != NULL);

  g_free (info->name);
  info->name = g_strdup (meta->model_name);
  g_strfreev (info->class_names);
  info->class_names = g_strdupv (meta->class_names);
  info->input_scale = meta->input_scale;
  info->input_shift = meta->input_shift;
  /* Model files keep preprocessing as a JSON object: other text is left out. */
  g_free (info->preprocessing);
  info->preprocessing = NULL;
  if (meta->preprocessing != NULL)
    {
      g_autoptr(JsonNode) node = json_from_string (meta->preprocessing, NULL);

      if (node != NULL && JSON_NODE_HOLDS_OBJECT (node))
        info->preprocessing = g_strdup (meta->preprocessing);
    }
  g_free (info->producer);
  /* TRANSLATORS: the producer of a model read from an ONNX file, e.g. "pytorch 2.1 (imported from ONNX)" */
  info->producer = g_strdup_printf (_("%s%s%s (imported from ONNX)"),
                                    meta->producer ? meta->producer : "",
                                    meta->producer && meta->version ? " " : "",
                                    meta->version ? meta->version : "");
}

Onnx__ModelProto *
espalier_onnx_read_proto (const char *path, gint64 *size_out, GError **error)
{
  g_autoptr(GMappedFile) map = NULL;
  g_autoptr(GError) local = NULL;
  Onnx__ModelProto *m;
  gsize len;

  map = g_mapped_file_new (path, FALSE, &local);
  if (map == NULL)
    {
      /* GLib's message names the file and the reason. */
      g_set_error_literal (error, G_IO_ERROR, g_io_error_from_file_error (local->code),
                           local->message);
      return NULL;
    }
  len = g_mapped_file_get_length (map);
  if (len == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, _("%s is empty, not an ONNX model"),
                   path);
      return NULL;
    }
  if ((guint64) len > (guint64) ESPALIER_ONNX_MAX_BYTES)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT,
                   _("%s is larger than the 2 GiB an ONNX file can hold without external data"),
                   path);
      return NULL;
    }
  m = onnx__model_proto__unpack (NULL, len, (const guint8 *) g_mapped_file_get_contents (map));
  if (m == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT,
                   _("%s is not an ONNX model, or it is truncated or corrupt (its protobuf "
                     "cannot be read)"), path);
      return NULL;
    }
  if (size_out != NULL)
    *size_out = (gint64) len;
  return m;
}

void
espalier_onnx_summarize (const Onnx__ModelProto *m, gint64 file_size, EspalierOnnxSummary *s)
{
  const Onnx__GraphProto *g = m->graph;

  memset (s, 0, sizeof *s);
  s->file_size = file_size;
  for (size_t i = 0; i < m->n_opset_import; i++)
    {
      const Onnx__OperatorSetIdProto *o = m->opset_import[i];

      if (o->domain == NULL || o->domain[0] == '\0' || strcmp (o->domain, "ai.onnx") == 0)
        s->opset = o->version;
    }
  if (g == NULL)
    return;
  s->n_nodes = (guint) g->n_node;
  s->n_initializers = (guint) g->n_initializer;
  for (size_t i = 0; i < g->n_initializer; i++)
    {
      const Onnx__TensorProto *t = g->initializer[i];

      if (t->has_raw_data)
        s->initializer_bytes += (gint64) t->raw_data.len;
      else
        s->initializer_bytes += (gint64) (t->n_float_data * 4 + t->n_int32_data * 4
                                          + t->n_int64_data * 8 + t->n_double_data * 8
                                          + t->n_uint64_data * 8);
    }
  for (size_t i = 0; i < g->n_node; i++)
    {
      const Onnx__NodeProto *n = g->node[i];
      char op[sizeof s->ops[0].op];
      guint k;

      if (n->domain != NULL && n->domain[0] != '\0' && strcmp (n->domain, "ai.onnx") != 0)
        g_snprintf (op, sizeof op, "%s:%s", n->domain, n->op_type ? n->op_type : "");
      else
        g_strlcpy (op, n->op_type ? n->op_type : "", sizeof op);
      for (k = 0; k < s->n_op_kinds; k++)
        if (strcmp (s->ops[k].op, op) == 0)
          break;
      if (k == s->n_op_kinds)
        {
          if (k == ESPALIER_ONNX_MAX_OP_KINDS)
            {
              s->n_other_ops++;
              continue;
            }
          g_strlcpy (s->ops[k].op, op, sizeof s->ops[k].op);
          s->n_op_kinds++;
        }
      s->ops[k].count++;
    }
}

char *
espalier_onnx_summary_ops (const EspalierOnnxSummary *summary)
{
  GString *s;

  g_return_val_if_fail (summary != NULL, NULL);

  s = g_string_new (NULL);
  for (guint k = 0; k < summary->n_op_kinds; k++)
    g_string_append_printf (s, "%s%s %u", k ? ", " : "", summary->ops[k].op,
                            summary->ops[k].count);
  if (summary->n_other_ops > 0)
    /* TRANSLATORS: more ONNX nodes of kinds not listed one by one */
    g_string_append_printf (s, _(", %u others"), summary->n_other_ops);
  return g_string_free (s, FALSE);
}

gboolean
espalier_onnx_inspect (const char *path, EspalierOnnxSummary *summary, GError **error)
{
  Onnx__ModelProto *m;
  gint64 size = 0;

  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (summary != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  m = espalier_onnx_read_proto (path, &size, error);
  if (m == NULL)
    return FALSE;
  espalier_onnx_summarize (m, size, summary);
  onnx__model_proto__free_unpacked (m, NULL);
  return TRUE;
}
