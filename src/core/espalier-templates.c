/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-templates.c: the model templates with their training defaults, and the
 * one-line model spec string in both directions. Shape checking is es_model_new's; this
 * file only names layers and wraps its errors. */
#include "config.h"

#include "espalier-format.h"
#include "espalier-templates.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"

/* Spec arguments above this are typos, and would overflow shape arithmetic. */
#define SPEC_MAX_INT      (1 << 24)
#define SPEC_MAX_INT_TEXT 16777216
/* The messages spell SPEC_MAX_INT_TEXT out, so that they can be translated. */
G_STATIC_ASSERT (SPEC_MAX_INT == SPEC_MAX_INT_TEXT);

typedef struct {
  const char *name;
  const char *description;
} TemplateInfo;

static const TemplateInfo templates[] = {
  { "mlp", N_("Flatten, Dense 128, ReLU, Dense, Softmax: the reference model (Adam 1e-3, batch 32, 10 epochs)") },
  { "lenet", N_("Two 3x3 convolutions (16 and 32 filters) with max pooling, Dense 128: a small CNN for images (Adam 1e-3, batch 64, 10 epochs)") },
  { "playground", N_("Dense 8, Tanh, Dense 8, Tanh, Dense, Softmax: for the 2-D teaching sets (Adam 0.03, batch 16, 300 epochs)") },
};

static const char *const template_names[] = { "mlp", "lenet", "playground", NULL };
G_STATIC_ASSERT (G_N_ELEMENTS (template_names) == G_N_ELEMENTS (templates) + 1);

const char *const *
espalier_template_names (void)
{
  return template_names;
}

const char *
espalier_template_describe (const char *name)
{
  g_return_val_if_fail (name != NULL, NULL);

  for (gsize i = 0; i < G_N_ELEMENTS (templates); i++)
    if (strcmp (templates[i].name, name) == 0)
      return _(templates[i].description);
  return NULL;
}

static EsLayerSpec
layer (EsLayerKind kind)
{
  return es_layer_spec_default (kind);
}

static EsLayerSpec
dense (int units)
{
  EsLayerSpec s = es_layer_spec_default (ES_LAYER_DENSE);

  s.units = units;
  return s;
}

static EsLayerSpec
conv2d (int filters, int kernel, int padding)
{
  EsLayerSpec s = es_layer_spec_default (ES_LAYER_CONV2D);

  s.filters = filters;
  s.kernel = kernel;
  s.stride = 1;
  s.padding = padding;
  return s;
}

static EsLayerSpec
maxpool2d (int kernel)
{
  EsLayerSpec s = es_layer_spec_default (ES_LAYER_MAXPOOL2D);

  s.kernel = kernel;
  s.stride = kernel;
  return s;
}

/* Build from layers, turning an engine error into a GError that names the template. */
static EsModel *
build (const char *what, const EsShape *input, const EsLayerSpec *layers, int n,
       GError **error)
{
  EsError err = { 0 };
  EsModel *model = es_model_new (input, layers, n, &err);

  if (model == NULL)
    espalier_error_from_es (error, &err, what);
  return model;
}

static gboolean
shape_error (GError **error, const char *name, const EsShape *input, const char *advice)
{
  char shape[64];

  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
               _("The %s template does not suit input of shape %s: %s"), name,
               es_shape_format (input, shape, sizeof shape), advice);
  return FALSE;
}

EsModel *
espalier_model_from_template (const char *name, const EsShape *input, guint n_outputs,
                              EspalierTrainOptions *opts, GError **error)
{
  EspalierTrainOptions defaults;
  g_autofree char *what = NULL;
  EsModel *model = NULL;
  int n = (int) MIN (n_outputs, (guint) SPEC_MAX_INT);

  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (input != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (espalier_template_describe (name) == NULL)
    {
      g_autofree char *known = g_strjoinv (", ", (char **) template_names);

      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("There is no model template “%s”; the templates are %s"), name, known);
      return NULL;
    }
  if (n_outputs < 2)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The %s template classifies into 2 or more classes, not %u"), name,
                   n_outputs);
      return NULL;
    }

  espalier_train_options_init (&defaults);
  defaults.engine.loss = ES_LOSS_SOFTMAX_XENT;
  defaults.engine.optimizer = ES_OPT_ADAM;
  /* TRANSLATORS: the start of an error message, "The mlp template: ..." */
  what = g_strdup_printf (_("The %s template"), name);

  if (strcmp (name, "mlp") == 0)
    {
      const EsLayerSpec layers[] = {
        layer (ES_LAYER_FLATTEN), dense (128), layer (ES_LAYER_RELU), dense (n),
        layer (ES_LAYER_SOFTMAX),
      };

      model = build (what, input, layers, G_N_ELEMENTS (layers), error);
      defaults.engine.lr = 1e-3f;
      defaults.batch_size = 32;
      defaults.epochs = 10;
    }
  else if (strcmp (name, "lenet") == 0)
    {
      /* About 2.4 MFLOP forward per 28x28 sample: a few seconds per Fashion-MNIST epoch
       * on two cores, about 91% test accuracy after 10 epochs. */
      const EsLayerSpec layers[] = {
        conv2d (16, 3, 1), layer (ES_LAYER_RELU), maxpool2d (2),
        conv2d (32, 3, 1), layer (ES_LAYER_RELU), maxpool2d (2),
        layer (ES_LAYER_FLATTEN), dense (128), layer (ES_LAYER_RELU), dense (n),
        layer (ES_LAYER_SOFTMAX),
      };

      if (input->rank != 3)
        {
          shape_error (error, name, input,
                       _("it needs images of shape (channels, height, width); use mlp"));
          return NULL;
        }
      if (input->dims[1] < 4 || input->dims[2] < 4)
        {
          shape_error (error, name, input,
                       _("its two 2x2 poolings need images of at least 4x4"));
          return NULL;
        }
      model = build (what, input, layers, G_N_ELEMENTS (layers), error);
      defaults.engine.lr = 1e-3f;
      defaults.batch_size = 64;
      defaults.epochs = 10;
    }
  else /* playground */
    {
      const EsLayerSpec layers[] = {
        dense (8), layer (ES_LAYER_TANH), dense (8), layer (ES_LAYER_TANH), dense (n),
        layer (ES_LAYER_SOFTMAX),
      };

      if (input->rank != 1)
        {
          shape_error (error, name, input,
                       _("it is for points with a few features, such as the 2-D teaching "
                         "sets; use mlp or lenet"));
          return NULL;
        }
      model = build (what, input, layers, G_N_ELEMENTS (layers), error);
      defaults.engine.lr = 0.03f;
      defaults.batch_size = 16;
      defaults.epochs = 300;
      defaults.val_fraction = 0.0;
      defaults.test_fraction = 0.0;
    }

  if (model == NULL)
    return NULL;
  es_model_init (model, defaults.seed);
  if (opts != NULL)
    *opts = defaults;
  return model;
}

/* ------------------------------------------------------------------------------------ */
/* Spec strings */

static gboolean
spec_error (GError **error, const char *token, gsize position, int index, const char *fmt, ...)
  G_GNUC_PRINTF (5, 6);

static gboolean
spec_error (GError **error, const char *token, gsize position, int index, const char *fmt, ...)
{
  g_autofree char *msg = NULL;
  va_list ap;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
               _("Model spec, layer %d “%s” at position %llu: %s"), index + 1, token,
               (unsigned long long) position + 1, msg);
  return FALSE;
}

static gboolean
parse_int (const char *text, gint64 min, gint64 max, int *out)
{
  gint64 v;

  if (!g_ascii_string_to_signed (text, 10, min, max, &v, NULL))
    return FALSE;
  *out = (int) v;
  return TRUE;
}

static gboolean
parse_float (const char *text, double min, double max, float *out)
{
  char *end = NULL;
  double v;

  if (text[0] == '\0' || g_ascii_isspace (text[0]))
    return FALSE;
  v = g_ascii_strtod (text, &end);
  if (end == NULL || *end != '\0' || !isfinite (v) || v < min || v > max)
    return FALSE;
  *out = (float) v;
  return TRUE;
}

/* One token, already split at ':' into kind and args, into spec. */
static gboolean
parse_layer (char **parts, const char *token, gsize position, int index, EsLayerSpec *spec,
             GError **error)
{
  guint n_args = g_strv_length (parts) - 1;
  char **args = parts + 1;
  EsLayerKind kind;
  guint max_args = 0, min_args = 0;
  const char *usage = "";

  if (!es_layer_kind_from_name (parts[0], &kind))
    {
      GString *known = g_string_new (NULL);

      for (int k = 0; k < ES_LAYER_N_KINDS; k++)
        g_string_append_printf (known, k ? ", %s" : "%s", es_layer_kind_name ((EsLayerKind) k));
      spec_error (error, token, position, index, _("“%s” is not a layer kind; the kinds are %s"),
                  parts[0], known->str);
      g_string_free (known, TRUE);
      return FALSE;
    }
  *spec = es_layer_spec_default (kind);
  switch (kind)
    {
    case ES_LAYER_DENSE: min_args = max_args = 1; usage = "dense:UNITS"; break;
    case ES_LAYER_CONV2D: min_args = 2; max_args = 4; usage = "conv2d:FILTERS:KERNEL[:STRIDE[:PADDING]]"; break;
    case ES_LAYER_MAXPOOL2D: max_args = 2; usage = "maxpool2d[:KERNEL[:STRIDE]]"; break;
    case ES_LAYER_AVGPOOL2D: max_args = 2; usage = "avgpool2d[:KERNEL[:STRIDE]]"; break;
    case ES_LAYER_LEAKY_RELU: max_args = 1; usage = "leaky_relu[:ALPHA]"; break;
    case ES_LAYER_DROPOUT: max_args = 1; usage = "dropout[:RATE]"; break;
    case ES_LAYER_BATCHNORM: max_args = 2; usage = "batchnorm[:MOMENTUM[:EPS]]"; break;
    default: usage = es_layer_kind_name (kind); break;
    }
  if (n_args < min_args || n_args > max_args)
    {
      g_autofree char *count = max_args == 0 ? g_strdup (_("no arguments"))
                               : min_args == max_args
                               ? g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "%u argument",
                                                               "%u arguments", max_args), max_args)
                               : min_args == 0 ? g_strdup_printf (_("up to %u arguments"), max_args)
                               : g_strdup_printf (_("%u to %u arguments"), min_args, max_args);

      /* TRANSLATORS: "dense takes 1 argument; write it as dense:UNITS" */
      return spec_error (error, token, position, index, _("%s takes %s; write it as %s"),
                         es_layer_kind_name (kind), count, usage);
    }

  for (guint a = 0; a < n_args; a++)
    {
      const char *arg = args[a];
      gboolean ok = TRUE;
      const char *need = _("a whole number from 1 to 16777216");

      switch (kind)
        {
        case ES_LAYER_DENSE:
          ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->units);
          break;
        case ES_LAYER_CONV2D:
          if (a == 0)
            ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->filters);
          else if (a == 1)
            ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->kernel);
          else if (a == 2)
            ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->stride);
          else
            {
              need = _("a whole number from 0 to 16777216");
              ok = parse_int (arg, 0, SPEC_MAX_INT, &spec->padding);
            }
          break;
        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          if (a == 0)
            {
              ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->kernel);
              spec->stride = spec->kernel;
            }
          else
            ok = parse_int (arg, 1, SPEC_MAX_INT, &spec->stride);
          break;
        case ES_LAYER_LEAKY_RELU:
          /* The engine reads an alpha of 0 as "the default" (0.01); leaky_relu:0 is relu. */
          need = _("a number other than 0 (for a slope of 0, use relu)");
          ok = parse_float (arg, -1e30, 1e30, &spec->alpha) && spec->alpha != 0.0f;
          break;
        case ES_LAYER_DROPOUT:
          need = _("a rate in [0, 1)");
          ok = parse_float (arg, 0.0, 1.0, &spec->rate) && spec->rate < 1.0f;
          break;
        case ES_LAYER_BATCHNORM:
          if (a == 0)
            {
              need = _("a momentum in (0, 1]");
              ok = parse_float (arg, 0.0, 1.0, &spec->momentum) && spec->momentum > 0.0f;
            }
          else
            {
              need = _("an epsilon above 0");
              ok = parse_float (arg, 0.0, 1e30, &spec->eps) && spec->eps > 0.0f;
            }
          break;
        default:
          break;
        }
      if (!ok)
        return spec_error (error, token, position, index, _("argument %u “%s” is not %s"),
                           a + 1, arg, need);
    }
  return TRUE;
}

EsLayerSpec *
espalier_spec_parse (const char *spec, int *n_layers, GError **error)
{
  g_autoptr(GArray) layers = g_array_new (FALSE, TRUE, sizeof (EsLayerSpec));
  gsize start = 0, len;

  g_return_val_if_fail (spec != NULL, NULL);
  g_return_val_if_fail (n_layers != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  len = strlen (spec);
  if (strspn (spec, " \t\n") == len)
    {
      g_set_error_literal (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                           _("The model spec is empty; write layers like "
                             "“flatten,dense:128,relu,dense:10,softmax”"));
      return NULL;
    }
  while (start <= len)
    {
      gsize end = start + strcspn (spec + start, ",");
      g_autofree char *raw = g_strndup (spec + start, end - start);
      gsize lead = strspn (raw, " \t\n");
      g_autofree char *token = g_strstrip (g_strdup (raw));
      g_auto(GStrv) parts = NULL;
      EsLayerSpec s;
      int index = (int) layers->len;

      if (token[0] == '\0')
        {
          spec_error (error, token, start + lead, index, _("the layer is empty (two commas in a "
                                                           "row, or a comma at the start or the end)"));
          return NULL;
        }
      parts = g_strsplit (token, ":", -1);
      for (char **p = parts; *p != NULL; p++)
        g_strstrip (*p);
      if (!parse_layer (parts, token, start + lead, index, &s, error))
        return NULL;
      g_array_append_val (layers, s);
      start = end + 1;
    }
  *n_layers = (int) layers->len;
  return (EsLayerSpec *) g_array_free (g_steal_pointer (&layers), FALSE);
}

EsModel *
espalier_model_from_spec (const char *spec, const EsShape *input, GError **error)
{
  g_autofree EsLayerSpec *layers = NULL;
  EsModel *model;
  int n = 0;

  g_return_val_if_fail (spec != NULL, NULL);
  g_return_val_if_fail (input != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  layers = espalier_spec_parse (spec, &n, error);
  if (layers == NULL)
    return NULL;

  /* What the layers would allocate, before the engine does (espalier-limits.h). */
  {
    g_autofree double *floats = g_new0 (double, n);   /* (n) */
    int too_large = espalier_arch_check_size (input, layers, n, floats);
    double count = floats[too_large >= 0 ? too_large : n - 1];
    g_autofree char *why = NULL;

    if (!espalier_memory_fits (count * 4.0 >= 0x1p63 ? G_MAXUINT64 : (guint64) (count * 4.0), 0,
                               &why))
      {
        /* TRANSLATORS: "The model has 268435456000000 parameters: it needs 1.1 PB of
         * memory, more than the 20.1 GB available" */
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                     _("The model has %.0f parameters: it %s"), count, why);
        return NULL;
      }
    if (too_large >= 0)
      {
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                     _("Layer %d (%s) is too large to build: its output or its work per "
                       "sample is beyond what a model can hold"), too_large + 1,
                     es_layer_kind_name (layers[too_large].kind));
        return NULL;
      }
  }
  model = build (NULL, input, layers, n, error);
  if (model != NULL)
    es_model_init (model, 0);
  return model;
}

/* The shortest text that reads back as exactly f. */
static void
append_float (GString *out, float f)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_string_append (out, espalier_format_float (buf, f));
}

char *
espalier_spec_format (const EsLayerSpec *layers, int n_layers)
{
  GString *out = g_string_new (NULL);
  const EsLayerSpec def_bn = es_layer_spec_default (ES_LAYER_BATCHNORM);

  g_return_val_if_fail (layers != NULL || n_layers == 0, NULL);

  for (int i = 0; i < n_layers; i++)
    {
      const EsLayerSpec *s = &layers[i];

      if (i > 0)
        g_string_append_c (out, ',');
      g_string_append (out, es_layer_kind_name (s->kind));
      switch (s->kind)
        {
        case ES_LAYER_DENSE:
          g_string_append_printf (out, ":%d", s->units);
          break;
        case ES_LAYER_CONV2D:
          g_string_append_printf (out, ":%d:%d", s->filters, s->kernel);
          if (s->stride != 1 || s->padding != 0)
            g_string_append_printf (out, ":%d:%d", s->stride, s->padding);
          break;
        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          g_string_append_printf (out, ":%d", s->kernel);
          if (s->stride != s->kernel)
            g_string_append_printf (out, ":%d", s->stride);
          break;
        case ES_LAYER_LEAKY_RELU:
          g_string_append_c (out, ':');
          append_float (out, s->alpha);
          break;
        case ES_LAYER_DROPOUT:
          g_string_append_c (out, ':');
          append_float (out, s->rate);
          break;
        case ES_LAYER_BATCHNORM:
          if (s->momentum != def_bn.momentum || s->eps != def_bn.eps)
            {
              g_string_append_c (out, ':');
              append_float (out, s->momentum);
              g_string_append_c (out, ':');
              append_float (out, s->eps);
            }
          break;
        default:
          break;
        }
    }
  return g_string_free (out, FALSE);
}

char *
espalier_model_to_spec (const EsModel *model)
{
  g_autofree EsLayerSpec *layers = NULL;
  int n;

  g_return_val_if_fail (model != NULL, NULL);

  n = es_model_n_layers (model);
  layers = g_new (EsLayerSpec, MAX (n, 1));
  for (int i = 0; i < n; i++)
    layers[i] = es_model_layer (model, i)->spec;
  return espalier_spec_format (layers, n);
}
