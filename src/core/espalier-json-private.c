/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-json-private.c: the JSON writing and validating reader shared by the
 * model file and the project file (see espalier-json-private.h; the atomic writes are
 * in espalier-save.c). */
#include "config.h"

#include "espalier-json-private.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

#include "espalier-error.h"
#include "espalier-format.h"

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

char *
espalier_json_to_text (JsonNode *node, gboolean pretty)
{
  GString *out = g_string_new (NULL);

  append_node (out, node, pretty ? 0 : -1, FALSE);
  if (pretty)
    g_string_append_c (out, '\n');
  return g_string_free (out, FALSE);
}

/* Builder shorthands: member name, then value. */
void
espalier_json_add_int (JsonBuilder *b, const char *key, gint64 v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_int_value (b, v);
}

/* NaN and the infinities become null. */
void
espalier_json_add_double (JsonBuilder *b, const char *key, double v)
{
  json_builder_set_member_name (b, key);
  if (isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}

void
espalier_json_add_float (JsonBuilder *b, const char *key, float v)
{
  espalier_json_add_double (b, key, float_decimal (v));
}

/* JSON integers are int64 here; larger unsigned values go as decimal strings. */
void
espalier_json_add_u64 (JsonBuilder *b, const char *key, guint64 v)
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

void
espalier_json_add_string (JsonBuilder *b, const char *key, const char *v)
{
  json_builder_set_member_name (b, key);
  if (v != NULL)
    json_builder_add_string_value (b, v);
  else
    json_builder_add_null_value (b);
}

void
espalier_json_add_bool (JsonBuilder *b, const char *key, gboolean v)
{
  json_builder_set_member_name (b, key);
  json_builder_add_boolean_value (b, v);
}

void
espalier_json_add_shape (JsonBuilder *b, const char *key, const EsShape *shape)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (int i = 0; i < shape->rank; i++)
    json_builder_add_int_value (b, shape->dims[i]);
  json_builder_end_array (b);
}

void
espalier_json_build_training (JsonBuilder *b, const EspalierTrainOptions *o)
{
  const EsTrainConfig *c = &o->engine;

  json_builder_begin_object (b);
  espalier_json_add_string (b, "loss", es_loss_kind_name (c->loss));
  espalier_json_add_string (b, "optimizer", es_opt_kind_name (c->optimizer));
  espalier_json_add_float (b, "lr", c->lr);
  espalier_json_add_float (b, "momentum", c->momentum);
  espalier_json_add_float (b, "beta1", c->beta1);
  espalier_json_add_float (b, "beta2", c->beta2);
  espalier_json_add_float (b, "eps", c->eps);
  espalier_json_add_float (b, "weight_decay", c->weight_decay);
  espalier_json_add_float (b, "l1", c->l1);
  espalier_json_add_float (b, "l2", c->l2);
  espalier_json_add_float (b, "clip_norm", c->clip_norm);
  espalier_json_add_int (b, "accum_steps", c->accum_steps);
  espalier_json_add_string (b, "schedule", es_lr_schedule_name (c->schedule));
  espalier_json_add_int (b, "step_size", c->step_size);
  espalier_json_add_float (b, "gamma", c->gamma);
  espalier_json_add_float (b, "min_lr", c->min_lr);
  espalier_json_add_int (b, "total_steps", c->total_steps);
  espalier_json_add_int (b, "warmup_steps", c->warmup_steps);
  espalier_json_add_u64 (b, "dropout_seed", c->seed);
  espalier_json_add_int (b, "epochs", o->epochs);
  espalier_json_add_int (b, "batch_size", o->batch_size);
  espalier_json_add_int (b, "patience", o->patience);
  espalier_json_add_double (b, "min_delta", o->min_delta);
  espalier_json_add_double (b, "val_fraction", o->val_fraction);
  espalier_json_add_double (b, "test_fraction", o->test_fraction);
  espalier_json_add_u64 (b, "seed", o->seed);
  espalier_json_add_int (b, "threads", o->threads);
  espalier_json_add_u64 (b, "memory_limit", o->memory_limit);
  json_builder_set_member_name (b, "augment");
  json_builder_begin_object (b);
  espalier_json_add_int (b, "shift_pixels", o->augment.shift_pixels);
  espalier_json_add_bool (b, "hflip", o->augment.hflip);
  espalier_json_add_float (b, "noise_std", o->augment.noise_std);
  json_builder_end_object (b);
  json_builder_end_object (b);
}

void
espalier_json_build_history (JsonBuilder *b, GArray *history)
{
  json_builder_begin_array (b);
  for (guint i = 0; history != NULL && i < history->len; i++)
    {
      const EspalierEpochRecord *r = &g_array_index (history, EspalierEpochRecord, i);

      json_builder_begin_object (b);
      espalier_json_add_int (b, "epoch", r->epoch);
      espalier_json_add_double (b, "train_loss", r->train_loss);
      espalier_json_add_double (b, "train_accuracy", r->train_accuracy);
      espalier_json_add_double (b, "val_loss", r->val_loss);
      espalier_json_add_double (b, "val_accuracy", r->val_accuracy);
      espalier_json_add_double (b, "lr", r->lr);
      espalier_json_add_double (b, "seconds", r->seconds);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

void
espalier_json_build_metrics (JsonBuilder *b, const EspalierMetrics *m)
{
  json_builder_begin_object (b);
  espalier_json_add_int (b, "rows", m->rows);
  espalier_json_add_double (b, "loss", m->loss);
  espalier_json_add_double (b, "accuracy", m->accuracy);
  espalier_json_add_int (b, "n_classes", m->n_classes);
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


JsonObject *
espalier_reader_parse (EspalierReader *r, JsonParser *parser, const char *text, gsize len)
{
  g_autoptr(GError) local = NULL;
  JsonNode *root;

  if (!g_utf8_validate (text, (gssize) len, NULL) || memchr (text, '\0', len) != NULL)
    {
      espalier_reader_fail (r, _("the file is not UTF-8 text"));
      return NULL;
    }
  if (!json_parser_load_from_data (parser, text, (gssize) len, &local))
    {
      /* json-glib names the input "<data>:LINE:COLUMN"; the file is named already */
      const char *where = g_str_has_prefix (local->message, "<data>:") ? local->message + 7
                                                                        : local->message;

      espalier_reader_fail (r, _("not valid JSON at line %s"), where);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      espalier_reader_fail (r, _("not a JSON object"));
      return NULL;
    }
  return json_node_get_object (root);
}

void
espalier_reader_format (EspalierReader *r, JsonObject *root, const char *format,
                        gint64 max_version)
{
  g_autofree char *name = espalier_reader_string (r, root, "", "format", FALSE);
  gint64 version = 0;

  if (name != NULL && strcmp (name, format) != 0)
    espalier_reader_fail (r, _("“format” is “%s”, not “%s”"), name, format);
  if (espalier_reader_int (r, root, "", "version", 1, G_MAXINT64, &version)
      && version > max_version)
    espalier_reader_fail (r, _("the file has version %lld; this Espalier reads up to %lld"),
                          (long long) version, (long long) max_version);
}

gboolean
espalier_reader_fail (EspalierReader *r, const char *fmt, ...)
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

char *
espalier_reader_path (const char *where, const char *key)
{
  return g_strconcat (where, dot (where), key, NULL);
}

/* The member, or NULL with an error when it is missing. */
JsonNode *
espalier_reader_member (EspalierReader *r, JsonObject *obj, const char *where, const char *key)
{
  JsonNode *node;

  if (r->error != NULL || obj == NULL)
    return NULL;
  node = json_object_get_member (obj, key);
  if (node == NULL)
    espalier_reader_fail (r, _("the field “%s%s%s” is missing"), where, dot (where), key);
  return node;
}

gboolean
espalier_reader_wrong_type (EspalierReader *r, const char *where, const char *key,
                            const char *expected)
{
  return espalier_reader_fail (r, _("the field “%s%s%s” is not %s"), where, dot (where), key,
                               expected);
}

/* The member when it is a `type` node (for JSON_NODE_VALUE, one of value_type), or NULL:
 * missing or of another type, with an error saying it is not `expected`; with nullable,
 * a JSON null, without an error. */
static JsonNode *
member_of_type (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                JsonNodeType type, GType value_type, gboolean nullable, const char *expected)
{
  JsonNode *node = espalier_reader_member (r, obj, where, key);

  if (node == NULL || (nullable && JSON_NODE_HOLDS_NULL (node)))
    return NULL;
  if (JSON_NODE_TYPE (node) != type
      || (type == JSON_NODE_VALUE && json_node_get_value_type (node) != value_type))
    {
      espalier_reader_wrong_type (r, where, key, expected);
      return NULL;
    }
  return node;
}

JsonObject *
espalier_reader_object (EspalierReader *r, JsonObject *obj, const char *where, const char *key)
{
  JsonNode *node = member_of_type (r, obj, where, key, JSON_NODE_OBJECT, G_TYPE_INVALID, FALSE,
                                   _("an object"));

  return node != NULL ? json_node_get_object (node) : NULL;
}

/* An array, or NULL; with nullable, a JSON null is NULL without an error. */
JsonArray *
espalier_reader_array (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                       gboolean nullable)
{
  JsonNode *node = member_of_type (r, obj, where, key, JSON_NODE_ARRAY, G_TYPE_INVALID, nullable,
                                   nullable ? _("an array or null") : _("an array"));

  return node != NULL ? json_node_get_array (node) : NULL;
}

/* A newly allocated string; with nullable, null gives NULL. */
char *
espalier_reader_string (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                        gboolean nullable)
{
  JsonNode *node = member_of_type (r, obj, where, key, JSON_NODE_VALUE, G_TYPE_STRING, nullable,
                                   nullable ? _("a string or null") : _("a string"));

  return node != NULL ? g_strdup (json_node_get_string (node)) : NULL;
}

gboolean
espalier_reader_int (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                     gint64 min, gint64 max, gint64 *out)
{
  JsonNode *node = member_of_type (r, obj, where, key, JSON_NODE_VALUE, G_TYPE_INT64, FALSE,
                                   _("an integer"));
  gint64 v;

  if (node == NULL)
    return FALSE;
  v = json_node_get_int (node);
  if (v < min || v > max)
    return espalier_reader_fail (r, _("the field “%s%s%s” is %lld, outside [%lld, %lld]"), where,
                                 dot (where), key, (long long) v, (long long) min,
                                 (long long) max);
  *out = v;
  return TRUE;
}

gboolean
espalier_reader_int32 (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                       gint64 min, gint64 max, int *out)
{
  gint64 v;

  if (!espalier_reader_int (r, obj, where, key, min, max, &v))
    return FALSE;
  *out = (int) v;
  return TRUE;
}

gboolean
espalier_reader_uint (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                      guint *out)
{
  gint64 v;

  if (!espalier_reader_int (r, obj, where, key, 0, G_MAXUINT, &v))
    return FALSE;
  *out = (guint) v;
  return TRUE;
}

/* An integer >= 0, or a decimal string for values above G_MAXINT64. */
gboolean
espalier_reader_u64 (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                     guint64 *out)
{
  JsonNode *node = espalier_reader_member (r, obj, where, key);

  if (node == NULL)
    return FALSE;
  if (json_node_get_value_type (node) == G_TYPE_STRING)
    {
      guint64 v;

      if (!g_ascii_string_to_unsigned (json_node_get_string (node), 10, 0, G_MAXUINT64, &v, NULL))
        return espalier_reader_wrong_type (r, where, key, _("an unsigned 64-bit integer"));
      *out = v;
      return TRUE;
    }
  if (json_node_get_value_type (node) != G_TYPE_INT64 || json_node_get_int (node) < 0)
    return espalier_reader_wrong_type (r, where, key, _("an unsigned 64-bit integer"));
  *out = (guint64) json_node_get_int (node);
  return TRUE;
}

/* A finite number in [min, max]; with nullable, null reads as NaN. */
gboolean
espalier_reader_double (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                        gboolean nullable, double min, double max, double *out)
{
  JsonNode *node = espalier_reader_member (r, obj, where, key);
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
    return espalier_reader_wrong_type (r, where, key,
                                       nullable ? _("a number or null") : _("a number"));
  if (!isfinite (v))
    return espalier_reader_fail (r, _("the field “%s%s%s” is not a finite number"), where,
                                 dot (where), key);
  if (v < min || v > max)
    return espalier_reader_fail (r, _("the field “%s%s%s” is %g, outside [%g, %g]"), where,
                                 dot (where), key, v, min, max);
  *out = v;
  return TRUE;
}

gboolean
espalier_reader_float (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                       double min, double max, float *out)
{
  double v;

  if (!espalier_reader_double (r, obj, where, key, FALSE, MAX (min, -FLT_MAX), MIN (max, FLT_MAX),
                               &v))
    return FALSE;
  *out = (float) v;
  return TRUE;
}

gboolean
espalier_reader_bool (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                      gboolean *out)
{
  JsonNode *node = member_of_type (r, obj, where, key, JSON_NODE_VALUE, G_TYPE_BOOLEAN, FALSE,
                                   _("true or false"));

  if (node == NULL)
    return FALSE;
  *out = json_node_get_boolean (node);
  return TRUE;
}

/* A shape: [F] or [C, H, W], every dimension in [1, ESPALIER_ARCH_MAX_FIELD]. */
gboolean
espalier_reader_shape (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                       EsShape *shape)
{
  JsonArray *arr = espalier_reader_array (r, obj, where, key, FALSE);
  guint n;
  double size = 1.0;

  if (arr == NULL)
    return FALSE;
  n = json_array_get_length (arr);
  if (n != 1 && n != 3)
    return espalier_reader_fail (r, _("the field “%s.%s” has %u dimensions; a shape is [features] or "
                                   "[channels, height, width]"), where, key, n);
  shape->rank = (int) n;
  for (guint i = 0; i < n; i++)
    {
      JsonNode *e = json_array_get_element (arr, i);
      gint64 d;

      if (json_node_get_value_type (e) != G_TYPE_INT64)
        return espalier_reader_fail (r, _("the field “%s.%s” holds something other than integers"),
                                     where, key);
      d = json_node_get_int (e);
      if (d < 1 || d > ESPALIER_ARCH_MAX_FIELD)
        return espalier_reader_fail (r, _("the field “%s.%s” has a dimension of %lld"),
                                     where, key, (long long) d);
      shape->dims[i] = (int) d;
      size *= (double) d;
    }
  if (size > ESPALIER_ARCH_MAX_FLOATS)
    return espalier_reader_fail (r, _("the field “%s.%s” is too large"), where, key);
  return TRUE;
}

void
espalier_reader_training (EspalierReader *r, JsonObject *parent, const char *where, const char *key,
                          EspalierTrainOptions *o)
{
  g_autofree char *w = espalier_reader_path (where, key);
  g_autofree char *wa = espalier_reader_path (w, "augment");
  JsonObject *obj = espalier_reader_object (r, parent, where, key);
  JsonObject *aug;
  EsTrainConfig *c = &o->engine;
  g_autofree char *loss = NULL, *opt = NULL, *schedule = NULL;
  gint64 v;

  if (obj == NULL)
    return;
  loss = espalier_reader_string (r, obj, w, "loss", FALSE);
  if (loss != NULL && !es_loss_kind_from_name (loss, &c->loss))
    espalier_reader_fail (r, _("“%s.loss” is “%s”, not a known loss"), w, loss);
  opt = espalier_reader_string (r, obj, w, "optimizer", FALSE);
  if (opt != NULL && !es_opt_kind_from_name (opt, &c->optimizer))
    espalier_reader_fail (r, _("“%s.optimizer” is “%s”, not a known optimizer"), w, opt);
  espalier_reader_float (r, obj, w, "lr", 0.0, FLT_MAX, &c->lr);
  espalier_reader_float (r, obj, w, "momentum", 0.0, 1.0, &c->momentum);
  espalier_reader_float (r, obj, w, "beta1", 0.0, 1.0, &c->beta1);
  espalier_reader_float (r, obj, w, "beta2", 0.0, 1.0, &c->beta2);
  espalier_reader_float (r, obj, w, "eps", 0.0, FLT_MAX, &c->eps);
  espalier_reader_float (r, obj, w, "weight_decay", 0.0, FLT_MAX, &c->weight_decay);
  espalier_reader_float (r, obj, w, "l1", 0.0, FLT_MAX, &c->l1);
  espalier_reader_float (r, obj, w, "l2", 0.0, FLT_MAX, &c->l2);
  espalier_reader_float (r, obj, w, "clip_norm", 0.0, FLT_MAX, &c->clip_norm);
  espalier_reader_int32 (r, obj, w, "accum_steps", 1, G_MAXINT, &c->accum_steps);
  schedule = espalier_reader_string (r, obj, w, "schedule", FALSE);
  if (schedule != NULL && !es_lr_schedule_from_name (schedule, &c->schedule))
    espalier_reader_fail (r, _("“%s.schedule” is “%s”, not a known schedule"), w, schedule);
  espalier_reader_int32 (r, obj, w, "step_size", 0, G_MAXINT, &c->step_size);
  espalier_reader_float (r, obj, w, "gamma", 0.0, FLT_MAX, &c->gamma);
  espalier_reader_float (r, obj, w, "min_lr", 0.0, FLT_MAX, &c->min_lr);
  if (espalier_reader_int (r, obj, w, "total_steps", 0, G_MAXINT64, &v))
    c->total_steps = v;
  espalier_reader_int32 (r, obj, w, "warmup_steps", 0, G_MAXINT, &c->warmup_steps);
  espalier_reader_u64 (r, obj, w, "dropout_seed", &c->seed);

  if (espalier_reader_uint (r, obj, w, "epochs", &o->epochs) && o->epochs == 0)
    espalier_reader_fail (r, _("“%s.epochs” is 0"), w);
  if (espalier_reader_uint (r, obj, w, "batch_size", &o->batch_size) && o->batch_size == 0)
    espalier_reader_fail (r, _("“%s.batch_size” is 0"), w);
  espalier_reader_uint (r, obj, w, "patience", &o->patience);
  espalier_reader_double (r, obj, w, "min_delta", FALSE, 0.0, G_MAXDOUBLE, &o->min_delta);
  espalier_reader_double (r, obj, w, "val_fraction", FALSE, 0.0, 1.0, &o->val_fraction);
  espalier_reader_double (r, obj, w, "test_fraction", FALSE, 0.0, 1.0, &o->test_fraction);
  /* the split's own rule: each below 1, and a training part left over */
  if (o->val_fraction >= 1.0 || o->test_fraction >= 1.0
      || o->val_fraction + o->test_fraction >= 1.0)
    espalier_reader_fail (r, _("“%s.val_fraction” (%g) and “%s.test_fraction” (%g) leave no "
                            "training rows"), w, o->val_fraction, w, o->test_fraction);
  espalier_reader_u64 (r, obj, w, "seed", &o->seed);
  espalier_reader_uint (r, obj, w, "threads", &o->threads);
  {
    guint64 limit = 0;

    if (espalier_reader_u64 (r, obj, w, "memory_limit", &limit))
      {
        if (limit > G_MAXSIZE)
          espalier_reader_fail (r, _("“%s.memory_limit” does not fit this machine's address space"),
                                w);
        o->memory_limit = (gsize) limit;
      }
  }
  aug = espalier_reader_object (r, obj, w, "augment");
  if (aug != NULL)
    {
      gboolean hflip = FALSE;

      espalier_reader_uint (r, aug, wa, "shift_pixels", &o->augment.shift_pixels);
      if (espalier_reader_bool (r, aug, wa, "hflip", &hflip))
        o->augment.hflip = hflip;
      espalier_reader_float (r, aug, wa, "noise_std", 0.0, FLT_MAX, &o->augment.noise_std);
    }
}

void
espalier_reader_history (EspalierReader *r, JsonObject *parent, const char *where, const char *key,
                         GArray *history)
{
  g_autofree char *w = espalier_reader_path (where, key);
  JsonArray *arr = espalier_reader_array (r, parent, where, key, FALSE);

  for (guint i = 0; arr != NULL && r->error == NULL && i < json_array_get_length (arr); i++)
    {
      JsonNode *node = json_array_get_element (arr, i);
      g_autofree char *we = g_strdup_printf ("%s[%u]", w, i);
      EspalierEpochRecord rec = { 0 };
      gint64 epoch;
      JsonObject *obj;

      if (!JSON_NODE_HOLDS_OBJECT (node))
        {
          espalier_reader_fail (r, _("“%s” is not an object"), we);
          return;
        }
      obj = json_node_get_object (node);
      if (espalier_reader_int (r, obj, we, "epoch", 1, G_MAXUINT, &epoch))
        rec.epoch = (guint) epoch;
      espalier_reader_double (r, obj, we, "train_loss", TRUE, 0.0, G_MAXDOUBLE, &rec.train_loss);
      espalier_reader_double (r, obj, we, "train_accuracy", TRUE, 0.0, 1.0, &rec.train_accuracy);
      espalier_reader_double (r, obj, we, "val_loss", TRUE, 0.0, G_MAXDOUBLE, &rec.val_loss);
      espalier_reader_double (r, obj, we, "val_accuracy", TRUE, 0.0, 1.0, &rec.val_accuracy);
      espalier_reader_double (r, obj, we, "lr", TRUE, -G_MAXDOUBLE, G_MAXDOUBLE, &rec.lr);
      espalier_reader_double (r, obj, we, "seconds", TRUE, 0.0, G_MAXDOUBLE, &rec.seconds);
      g_array_append_val (history, rec);
    }
}

void
espalier_reader_metrics (EspalierReader *r, JsonObject *parent, const char *where, const char *key,
                         EspalierMetrics *m)
{
  g_autofree char *w = espalier_reader_path (where, key);
  JsonObject *obj = espalier_reader_object (r, parent, where, key);
  JsonArray *rows;

  if (obj == NULL)
    return;
  espalier_reader_uint (r, obj, w, "rows", &m->rows);
  espalier_reader_double (r, obj, w, "loss", TRUE, 0.0, G_MAXDOUBLE, &m->loss);
  espalier_reader_double (r, obj, w, "accuracy", TRUE, 0.0, 1.0, &m->accuracy);
  espalier_reader_uint (r, obj, w, "n_classes", &m->n_classes);
  rows = espalier_reader_array (r, obj, w, "confusion", TRUE);
  if (rows == NULL || r->error != NULL)
    return;
  if (json_array_get_length (rows) != m->n_classes || m->n_classes == 0)
    {
      espalier_reader_fail (r, _("“%s.confusion” has %u rows for %u classes"), w,
                            json_array_get_length (rows), m->n_classes);
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
          espalier_reader_fail (r, _("“%s.confusion[%u]” is not an array of %u counts"), w, i,
                                m->n_classes);
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
              espalier_reader_fail (r, _("“%s.confusion[%u][%u]” is not a count"), w, i, j);
              return;
            }
          m->confusion[(gsize) i * m->n_classes + j] = (guint) json_node_get_int (e);
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Architectures and weights */

int
espalier_arch_check_size (const EsShape *input, const EsLayerSpec *specs, int n, double *floats)
{
  double c = input->dims[0];
  double h = input->rank == 3 ? input->dims[1] : 1.0;
  double w = input->rank == 3 ? input->dims[2] : 1.0;
  double sum = 0.0;   /* parameters and buffers */

  for (int i = 0; i < n; i++)
    {
      const EsLayerSpec *s = &specs[i];
      double flops = 0.0;

      switch (s->kind)
        {
        case ES_LAYER_DENSE:
          sum += c * h * w * s->units + s->units;
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
                sum += (double) s->filters * c * s->kernel * s->kernel + s->filters;
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
          sum += 4.0 * c;
          flops = 4.0 * c * h * w;
          break;
        default:
          flops = 4.0 * c * h * w;
          break;
        }
      if (floats != NULL)
        floats[i] = sum;
      if (c * h * w > ESPALIER_ARCH_MAX_FLOATS || h > ESPALIER_ARCH_MAX_FIELD
          || w > ESPALIER_ARCH_MAX_FIELD || flops > ESPALIER_ARCH_MAX_FLOPS)
        return i;
    }
  return -1;
}

void
espalier_floats_from_le (float *dst, const guint8 *src, gint64 n)
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

void
espalier_floats_to_le (guint8 *dst, const float *src, gint64 n)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  memcpy (dst, src, (gsize) n * sizeof (float));
#else
  for (gint64 i = 0; i < n; i++)
    {
      guint32 u;

      memcpy (&u, &src[i], 4);
      u = GUINT32_TO_LE (u);
      memcpy (dst + 4 * i, &u, 4);
    }
#endif
}
