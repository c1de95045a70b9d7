/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-variant.c: one measured version of the trained model: its weights and their
 * quantization, what was done to make it, and the figures measured on it (accuracy
 * from the caller's evaluation; batch-1 median and 95th percentile, large-batch rows/s
 * and the dense-or-sparse decision timed here through es-exec on the CPU backend;
 * sizes counted from the weights as stored). It does not prune or quantize; the
 * optimize jobs make variants. */
#include "config.h"

#include "espalier-variant.h"

#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

#include "es-prune.h"
#include "es-train.h"
#include "espalier-error.h"

/* Latency timing: rounds of calls lasting at least this long, at most this many (the
 * median and the 95th percentile are taken over rounds). */
#define ROUND_SECONDS   50e-6
#define MAX_ROUNDS      1001
/* Large-batch throughput: at most this many timed calls. */
#define MAX_LARGE_CALLS 101
/* Dense and CSR kernels are both timed when this fraction of Dense weights is zero. */
#define SPARSE_MIN      0.5

struct _EspalierVariant
{
  GObject   parent_instance;

  char     *name;
  char     *kind;
  char     *description;
  char     *parent;
  double    accuracy;     /* 0..1, NaN: not measured */
  double    latency_us;   /* NaN: not measured */
  guint64   size_bytes;
  gint64    n_params;
  gint64    nonzeros;
  gint64    flops;
  EsModel  *model;        /* owned, or NULL */
  EsQuant  *quant;        /* owned, or NULL: float weights */
  char     *format;       /* "fp32", "fp16", "bf16", "int8-static", "int8-dynamic" */
  char     *exec;         /* "dense", "sparse", "int8"; NULL: not measured */
  double    latency_p95_us;     /* NaN: not measured, and the three below */
  double    rows_per_second;
  double    dense_latency_us;
  double    sparse_latency_us;
};

G_DEFINE_FINAL_TYPE (EspalierVariant, espalier_variant, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_NAME,
  PROP_KIND,
  PROP_DESCRIPTION,
  PROP_PARENT,
  PROP_ACCURACY,
  PROP_LATENCY_US,
  PROP_SIZE_BYTES,
  PROP_N_PARAMS,
  PROP_NONZEROS,
  PROP_FLOPS,
  PROP_FORMAT,
  PROP_EXEC,
  PROP_LATENCY_P95_US,
  PROP_ROWS_PER_SECOND,
  PROP_DENSE_LATENCY_US,
  PROP_SPARSE_LATENCY_US,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

static void set_double (EspalierVariant *self, double *field, double value, int prop);
static void set_format (EspalierVariant *self, const char *format);
static void set_exec   (EspalierVariant *self, const char *exec);

EspalierVariant *
espalier_variant_new (const char *name, const char *kind, EsModel *model)
{
  EspalierVariant *self;

  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (kind != NULL, NULL);

  self = g_object_new (ESPALIER_TYPE_VARIANT, "name", name, "kind", kind, NULL);
  if (model != NULL)
    espalier_variant_set_model (self, model);
  return self;
}

static void
espalier_variant_finalize (GObject *object)
{
  EspalierVariant *self = ESPALIER_VARIANT (object);

  g_clear_pointer (&self->name, g_free);
  g_clear_pointer (&self->kind, g_free);
  g_clear_pointer (&self->description, g_free);
  g_clear_pointer (&self->parent, g_free);
  g_clear_pointer (&self->model, es_model_free);
  g_clear_pointer (&self->quant, es_quant_free);
  g_clear_pointer (&self->format, g_free);
  g_clear_pointer (&self->exec, g_free);
  G_OBJECT_CLASS (espalier_variant_parent_class)->finalize (object);
}

static void
espalier_variant_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  EspalierVariant *self = ESPALIER_VARIANT (object);

  switch (prop_id)
    {
    case PROP_NAME: g_value_set_string (value, self->name); break;
    case PROP_KIND: g_value_set_string (value, self->kind); break;
    case PROP_DESCRIPTION: g_value_set_string (value, self->description); break;
    case PROP_PARENT: g_value_set_string (value, self->parent); break;
    case PROP_ACCURACY: g_value_set_double (value, self->accuracy); break;
    case PROP_LATENCY_US: g_value_set_double (value, self->latency_us); break;
    case PROP_SIZE_BYTES: g_value_set_uint64 (value, self->size_bytes); break;
    case PROP_N_PARAMS: g_value_set_int64 (value, self->n_params); break;
    case PROP_NONZEROS: g_value_set_int64 (value, self->nonzeros); break;
    case PROP_FLOPS: g_value_set_int64 (value, self->flops); break;
    case PROP_FORMAT: g_value_set_string (value, self->format); break;
    case PROP_EXEC: g_value_set_string (value, self->exec); break;
    case PROP_LATENCY_P95_US: g_value_set_double (value, self->latency_p95_us); break;
    case PROP_ROWS_PER_SECOND: g_value_set_double (value, self->rows_per_second); break;
    case PROP_DENSE_LATENCY_US: g_value_set_double (value, self->dense_latency_us); break;
    case PROP_SPARSE_LATENCY_US: g_value_set_double (value, self->sparse_latency_us); break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_variant_set_property (GObject *object, guint prop_id, const GValue *value,
                               GParamSpec *pspec)
{
  EspalierVariant *self = ESPALIER_VARIANT (object);

  switch (prop_id)
    {
    case PROP_NAME:
      espalier_variant_set_name (self, g_value_get_string (value));
      break;
    case PROP_KIND:
      g_free (self->kind);
      self->kind = g_value_dup_string (value);
      break;
    case PROP_DESCRIPTION:
      espalier_variant_set_description (self, g_value_get_string (value));
      break;
    case PROP_PARENT:
      espalier_variant_set_parent (self, g_value_get_string (value));
      break;
    case PROP_ACCURACY:
      espalier_variant_set_accuracy (self, g_value_get_double (value));
      break;
    case PROP_LATENCY_US:
      espalier_variant_set_latency_us (self, g_value_get_double (value));
      break;
    case PROP_FORMAT:
      set_format (self, g_value_get_string (value));
      break;
    case PROP_EXEC:
      set_exec (self, g_value_get_string (value));
      break;
    case PROP_LATENCY_P95_US:
      set_double (self, &self->latency_p95_us, g_value_get_double (value), PROP_LATENCY_P95_US);
      break;
    case PROP_ROWS_PER_SECOND:
      set_double (self, &self->rows_per_second, g_value_get_double (value),
                  PROP_ROWS_PER_SECOND);
      break;
    case PROP_DENSE_LATENCY_US:
      set_double (self, &self->dense_latency_us, g_value_get_double (value),
                  PROP_DENSE_LATENCY_US);
      break;
    case PROP_SPARSE_LATENCY_US:
      set_double (self, &self->sparse_latency_us, g_value_get_double (value),
                  PROP_SPARSE_LATENCY_US);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_variant_class_init (EspalierVariantClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GParamFlags rw = G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS;
  GParamFlags ro = G_PARAM_READABLE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS;

  object_class->finalize = espalier_variant_finalize;
  object_class->get_property = espalier_variant_get_property;
  object_class->set_property = espalier_variant_set_property;

  properties[PROP_NAME] = g_param_spec_string ("name", NULL, NULL, NULL, rw);
  properties[PROP_KIND] =
    g_param_spec_string ("kind", NULL, NULL, "baseline",
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_DESCRIPTION] = g_param_spec_string ("description", NULL, NULL, NULL, rw);
  properties[PROP_PARENT] = g_param_spec_string ("parent", NULL, NULL, NULL, rw);
  /* NaN until measured; a pspec default cannot be NaN, so it says 0. */
  properties[PROP_ACCURACY] = g_param_spec_double ("accuracy", NULL, NULL, -G_MAXDOUBLE,
                                                   G_MAXDOUBLE, 0.0, rw);
  properties[PROP_LATENCY_US] = g_param_spec_double ("latency-us", NULL, NULL, -G_MAXDOUBLE,
                                                     G_MAXDOUBLE, 0.0, rw);
  properties[PROP_SIZE_BYTES] = g_param_spec_uint64 ("size-bytes", NULL, NULL, 0, G_MAXUINT64,
                                                     0, ro);
  properties[PROP_N_PARAMS] = g_param_spec_int64 ("n-params", NULL, NULL, 0, G_MAXINT64, 0, ro);
  properties[PROP_NONZEROS] = g_param_spec_int64 ("nonzeros", NULL, NULL, 0, G_MAXINT64, 0, ro);
  properties[PROP_FLOPS] = g_param_spec_int64 ("flops", NULL, NULL, 0, G_MAXINT64, 0, ro);
  /* Writable for a variant saved without its weights; with a quantization it follows
   * espalier_variant_set_quant. */
  properties[PROP_FORMAT] = g_param_spec_string ("format", NULL, NULL, "fp32", rw);
  properties[PROP_EXEC] = g_param_spec_string ("exec", NULL, NULL, NULL, rw);
  properties[PROP_LATENCY_P95_US] = g_param_spec_double ("latency-p95-us", NULL, NULL,
                                                         -G_MAXDOUBLE, G_MAXDOUBLE, 0.0, rw);
  properties[PROP_ROWS_PER_SECOND] = g_param_spec_double ("rows-per-second", NULL, NULL,
                                                          -G_MAXDOUBLE, G_MAXDOUBLE, 0.0, rw);
  properties[PROP_DENSE_LATENCY_US] = g_param_spec_double ("dense-latency-us", NULL, NULL,
                                                           -G_MAXDOUBLE, G_MAXDOUBLE, 0.0, rw);
  properties[PROP_SPARSE_LATENCY_US] = g_param_spec_double ("sparse-latency-us", NULL, NULL,
                                                            -G_MAXDOUBLE, G_MAXDOUBLE, 0.0, rw);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_variant_init (EspalierVariant *self)
{
  self->accuracy = NAN;
  self->latency_us = NAN;
  self->latency_p95_us = NAN;
  self->rows_per_second = NAN;
  self->dense_latency_us = NAN;
  self->sparse_latency_us = NAN;
  self->format = g_strdup ("fp32");
}

/* ------------------------------------------------------------------------------------ */

static void
set_string (EspalierVariant *self, char **field, const char *value, int prop)
{
  if (g_strcmp0 (*field, value) == 0)
    return;
  g_free (*field);
  *field = g_strdup (value);
  g_object_notify_by_pspec (G_OBJECT (self), properties[prop]);
}

/* Two doubles are the same value when both are NaN, or equal. */
static void
set_double (EspalierVariant *self, double *field, double value, int prop)
{
  if ((isnan (*field) && isnan (value)) || *field == value)
    return;
  *field = value;
  g_object_notify_by_pspec (G_OBJECT (self), properties[prop]);
}

/* A format name es_quant_mode_from_name knows; with a quantization, only its own, and
 * a variant with float weights is fp32. */
static void
set_format (EspalierVariant *self, const char *format)
{
  EsQuantMode mode;

  if (format == NULL)
    format = "fp32";
  if (!es_quant_mode_from_name (format, &mode))
    {
      g_warning ("“%s” is not a variant format", format);
      return;
    }
  if (self->quant != NULL ? self->quant->mode != mode
                          : self->model != NULL && mode != ES_QUANT_FP32)
    {
      g_warning ("The variant “%s” has %s weights, not %s", self->name,
                 self->quant != NULL ? es_quant_mode_name (self->quant->mode) : "fp32", format);
      return;
    }
  set_string (self, &self->format, format, PROP_FORMAT);
}

static gboolean
exec_kind_from_name (const char *name, EsExecKind *kind)
{
  static const EsExecKind kinds[] = { ES_EXEC_DENSE, ES_EXEC_SPARSE, ES_EXEC_INT8 };

  for (gsize i = 0; i < G_N_ELEMENTS (kinds); i++)
    if (strcmp (name, es_exec_kind_name (kinds[i])) == 0)
      {
        *kind = kinds[i];
        return TRUE;
      }
  return FALSE;
}

static void
set_exec (EspalierVariant *self, const char *exec)
{
  EsExecKind kind;

  if (exec != NULL && !exec_kind_from_name (exec, &kind))
    {
      g_warning ("“%s” is not a kind of kernels", exec);
      return;
    }
  set_string (self, &self->exec, exec, PROP_EXEC);
}

const char *
espalier_variant_get_name (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->name;
}

void
espalier_variant_set_name (EspalierVariant *self, const char *name)
{
  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  set_string (self, &self->name, name, PROP_NAME);
}

const char *
espalier_variant_get_kind (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->kind;
}

const char *
espalier_variant_get_description (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->description;
}

void
espalier_variant_set_description (EspalierVariant *self, const char *description)
{
  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  set_string (self, &self->description, description, PROP_DESCRIPTION);
}

const char *
espalier_variant_get_parent (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->parent;
}

void
espalier_variant_set_parent (EspalierVariant *self, const char *parent)
{
  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  set_string (self, &self->parent, parent, PROP_PARENT);
}

double
espalier_variant_get_accuracy (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->accuracy;
}

void
espalier_variant_set_accuracy (EspalierVariant *self, double accuracy)
{
  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  set_double (self, &self->accuracy, accuracy, PROP_ACCURACY);
}

double
espalier_variant_get_latency_us (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->latency_us;
}

void
espalier_variant_set_latency_us (EspalierVariant *self, double latency_us)
{
  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  set_double (self, &self->latency_us, latency_us, PROP_LATENCY_US);
}

guint64
espalier_variant_get_size_bytes (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0);

  return self->size_bytes;
}

gint64
espalier_variant_get_n_params (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0);

  return self->n_params;
}

gint64
espalier_variant_get_nonzeros (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0);

  return self->nonzeros;
}

gint64
espalier_variant_get_flops (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0);

  return self->flops;
}

double
espalier_variant_get_sparsity (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0.0);

  if (self->n_params <= 0)
    return 0.0;
  return 1.0 - (double) self->nonzeros / (double) self->n_params;
}

EsModel *
espalier_variant_get_model (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->model;
}

/* size-bytes: the weights as stored for the format (4 bytes a float without one). */
static void
update_size (EspalierVariant *self)
{
  guint64 size_bytes = 0;

  if (self->model != NULL && self->quant != NULL)
    size_bytes = es_quant_weight_bytes (self->model, self->quant);
  else if (self->model != NULL)
    size_bytes = 4 * (guint64) (es_model_n_params (self->model)
                                + es_model_n_buffers (self->model));
  if (size_bytes != self->size_bytes)
    {
      self->size_bytes = size_bytes;
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SIZE_BYTES]);
    }
}

void
espalier_variant_set_model (EspalierVariant *self, EsModel *model)
{
  GObject *obj = G_OBJECT (self);
  gint64 n_params = 0, nonzeros = 0, flops = 0;

  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  if (model != self->model)
    g_clear_pointer (&self->model, es_model_free);
  self->model = model;
  if (model != NULL)
    {
      const float *p = es_model_params_const (model);

      n_params = es_model_n_params (model);
      for (gint64 i = 0; i < n_params; i++)
        nonzeros += p[i] != 0.0f;
      flops = es_model_flops (model);
    }

  g_object_freeze_notify (obj);
  /* A quantization belongs to the weights it was made from: one that no longer fits
   * them goes, and the variant is float again. */
  if (self->quant != NULL && (model == NULL || !es_quant_check (self->quant, model, NULL)))
    {
      g_clear_pointer (&self->quant, es_quant_free);
      set_string (self, &self->format, "fp32", PROP_FORMAT);
    }
  update_size (self);
  if (n_params != self->n_params)
    {
      self->n_params = n_params;
      g_object_notify_by_pspec (obj, properties[PROP_N_PARAMS]);
    }
  if (nonzeros != self->nonzeros)
    {
      self->nonzeros = nonzeros;
      g_object_notify_by_pspec (obj, properties[PROP_NONZEROS]);
    }
  if (flops != self->flops)
    {
      self->flops = flops;
      g_object_notify_by_pspec (obj, properties[PROP_FLOPS]);
    }
  g_object_thaw_notify (obj);
}

const EsQuant *
espalier_variant_get_quant (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->quant;
}

void
espalier_variant_set_quant (EspalierVariant *self, EsQuant *quant)
{
  GObject *obj = G_OBJECT (self);
  EsError es = { 0 };

  g_return_if_fail (ESPALIER_IS_VARIANT (self));

  if (quant == self->quant)
    return;
  if (quant != NULL && self->model == NULL)
    {
      g_critical ("%s: the variant “%s” has no weights to quantize", G_STRFUNC, self->name);
      es_quant_free (quant);
      return;
    }
  if (quant != NULL && !es_quant_check (quant, self->model, &es))
    {
      g_critical ("%s: the quantization does not fit the weights of “%s”: %s", G_STRFUNC,
                  self->name, es.message);
      es_quant_free (quant);
      return;
    }
  g_object_freeze_notify (obj);
  g_clear_pointer (&self->quant, es_quant_free);
  self->quant = quant;
  set_string (self, &self->format, quant != NULL ? es_quant_mode_name (quant->mode) : "fp32",
              PROP_FORMAT);
  update_size (self);
  g_object_thaw_notify (obj);
}

const char *
espalier_variant_get_format (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->format;
}

const char *
espalier_variant_get_exec (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NULL);

  return self->exec;
}

double
espalier_variant_get_latency_p95_us (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->latency_p95_us;
}

double
espalier_variant_get_rows_per_second (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->rows_per_second;
}

double
espalier_variant_get_dense_latency_us (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->dense_latency_us;
}

double
espalier_variant_get_sparse_latency_us (EspalierVariant *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), NAN);

  return self->sparse_latency_us;
}

void
espalier_variant_set_latency (EspalierVariant *self, const EspalierLatency *latency)
{
  GObject *obj = G_OBJECT (self);

  g_return_if_fail (ESPALIER_IS_VARIANT (self));
  g_return_if_fail (latency != NULL);

  g_object_freeze_notify (obj);
  set_double (self, &self->latency_us, latency->median_us, PROP_LATENCY_US);
  set_double (self, &self->latency_p95_us, latency->p95_us, PROP_LATENCY_P95_US);
  set_double (self, &self->rows_per_second, latency->rows_per_second, PROP_ROWS_PER_SECOND);
  set_double (self, &self->dense_latency_us, latency->dense_us, PROP_DENSE_LATENCY_US);
  set_double (self, &self->sparse_latency_us, latency->sparse_us, PROP_SPARSE_LATENCY_US);
  set_exec (self, es_exec_kind_name (latency->exec));
  g_object_thaw_notify (obj);
}

double
espalier_variant_get_layer_sparsity (EspalierVariant *self, guint layer)
{
  int64_t n = 0, zeros;

  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), 0.0);

  if (self->model == NULL)
    return 0.0;
  g_return_val_if_fail (layer < (guint) es_model_n_layers (self->model), 0.0);
  zeros = es_prune_layer_zeros (self->model, (int) layer, &n);
  return n > 0 ? (double) zeros / (double) n : 0.0;
}

/* ------------------------------------------------------------------------------------ */
/* Measuring */

static int
compare_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y ? 1 : 0;
}

/* Batch-1 latency of ex on x (1, D) for about `seconds`: a warm-up of a tenth of the
 * time (at least 3 calls) that also sizes the rounds, then rounds of calls lasting at
 * least ROUND_SECONDS until the time is up (at least 5, at most MAX_ROUNDS); the median
 * and the 95th percentile of the rounds' per-call times, in microseconds. */
static void
time_batch1 (EsExec *ex, const float *x, double seconds, double *median_us, double *p95_us)
{
  g_autofree double *rounds = g_new (double, MAX_ROUNDS);
  double start, t0, per_call;
  int calls = 0, n_rounds = 0;

  start = es_now ();
  do
    {
      es_exec_run (ex, x, 1);
      calls++;
    }
  while (calls < 3 || es_now () - start < 0.1 * seconds);
  per_call = (es_now () - start) / calls;
  calls = (int) CLAMP (ceil (ROUND_SECONDS / MAX (per_call, 1e-9)), 1, 100000);

  start = es_now ();
  while (n_rounds < MAX_ROUNDS && (n_rounds < 5 || es_now () - start < 0.9 * seconds))
    {
      t0 = es_now ();
      for (int i = 0; i < calls; i++)
        es_exec_run (ex, x, 1);
      rounds[n_rounds++] = (es_now () - t0) / calls * 1e6;
    }
  qsort (rounds, (gsize) n_rounds, sizeof (double), compare_double);
  *median_us = rounds[n_rounds / 2];
  *p95_us = rounds[(int) ceil (0.95 * n_rounds) - 1];
}

/* Rows per second of ex on x (B, D): one warm-up call, then single calls until the
 * time is up (at least 3, at most MAX_LARGE_CALLS); B over the median call. */
static double
time_large (EsExec *ex, const float *x, int B, double seconds)
{
  double calls[MAX_LARGE_CALLS];
  double start, t0;
  int n = 0;

  es_exec_run (ex, x, B);
  start = es_now ();
  while (n < MAX_LARGE_CALLS && (n < 3 || es_now () - start < seconds))
    {
      t0 = es_now ();
      es_exec_run (ex, x, B);
      calls[n++] = es_now () - t0;
    }
  qsort (calls, (gsize) n, sizeof (double), compare_double);
  return (double) B / MAX (calls[n / 2], 1e-12);
}

/* The CSR kernels for the Dense layers of model that are at least SPARSE_MIN zeros,
 * dense kernels elsewhere, into kinds (n_layers); FALSE when the Dense weights as a
 * whole are less sparse than that (or no layer qualifies). */
static gboolean
sparse_kinds (const EsModel *model, EsExecKind *kinds)
{
  int64_t zeros = 0, total = 0;
  gboolean any = FALSE;

  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      int64_t n = 0, z = 0;

      kinds[i] = ES_EXEC_DENSE;
      if (es_model_layer (model, i)->spec.kind != ES_LAYER_DENSE)
        continue;
      z = es_prune_layer_zeros (model, i, &n);
      zeros += z;
      total += n;
      if (n > 0 && (double) z >= SPARSE_MIN * (double) n)
        {
          kinds[i] = ES_EXEC_SPARSE;
          any = TRUE;
        }
    }
  return any && total > 0 && (double) zeros >= SPARSE_MIN * (double) total;
}

static gboolean
is_int8 (const EsQuant *quant)
{
  return quant != NULL
         && (quant->mode == ES_QUANT_INT8_STATIC || quant->mode == ES_QUANT_INT8_DYNAMIC);
}

gboolean
espalier_measure_variant (const EsModel *model, const EsQuant *quant, guint threads,
                          guint large_batch, double seconds, EspalierLatency *latency,
                          GError **error)
{
  g_autofree float *x = NULL;                 /* (B, D) */
  g_autofree EsExecKind *kinds = NULL;        /* (n_layers) */
  EsModel *rounded = NULL;
  const EsModel *run_model = model;
  EsBackend *be = NULL;
  EsExec *ex = NULL, *ex_sparse = NULL;
  EsError es = { 0 };
  EsRng rng = { 42 };
  EsShape in;
  gint64 D;
  int B;
  gboolean both = FALSE, ok = FALSE;
  EspalierLatency lat = {
    .median_us = NAN, .p95_us = NAN, .rows_per_second = NAN, .dense_us = NAN,
    .sparse_us = NAN, .exec = ES_EXEC_DENSE,
  };

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (latency != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!(seconds > 0.0))
    seconds = 1.0;
  B = large_batch > 0 ? (int) MIN (large_batch, 1u << 20) : 256;
  if (quant != NULL && !es_quant_check (quant, model, &es))
    {
      espalier_error_from_es (error, &es, _("The quantization does not fit the model"));
      return FALSE;
    }
  /* fp16 and bf16 run in fp32 on the rounded weights; int8 runs its own kernels. */
  if (quant != NULL && !is_int8 (quant) && quant->mode != ES_QUANT_FP32)
    run_model = rounded = es_quant_dequantized_model (model, quant);
  if (!is_int8 (quant))
    quant = NULL;

  be = es_cpu_backend_new (threads > 0 ? (int) threads : 1, NULL, &es);
  if (be == NULL)
    goto es_fail;
  kinds = g_new (EsExecKind, es_model_n_layers (run_model));
  if (quant == NULL)
    both = sparse_kinds (run_model, kinds);
  if (quant != NULL)
    {
      ex = es_exec_new (run_model, quant, NULL, be, B, &es);
      lat.exec = ES_EXEC_INT8;
    }
  else
    ex = es_exec_new (run_model, NULL, NULL, be, B, &es);   /* dense everywhere */
  if (ex == NULL)
    goto es_fail;
  if (both && (ex_sparse = es_exec_new (run_model, NULL, kinds, be, B, &es)) == NULL)
    goto es_fail;

  /* A fixed random input, the same for every variant of a model; its first row is the
   * batch-1 input. */
  in = es_model_input_shape (run_model);
  D = es_shape_size (&in);
  x = g_try_new (float, (gsize) B * (gsize) D);
  if (x == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   _("Not enough memory for a batch of %d rows to measure"), B);
      goto out;
    }
  for (gint64 i = 0; i < (gint64) B * D; i++)
    x[i] = (float) es_rng_normal (&rng);

  if (both)
    {
      double dense_p95, sparse_p95;

      time_batch1 (ex, x, 0.3 * seconds, &lat.dense_us, &dense_p95);
      time_batch1 (ex_sparse, x, 0.3 * seconds, &lat.sparse_us, &sparse_p95);
      if (lat.sparse_us < lat.dense_us)
        {
          lat.exec = ES_EXEC_SPARSE;
          lat.median_us = lat.sparse_us;
          lat.p95_us = sparse_p95;
          es_exec_free (ex);
          ex = g_steal_pointer (&ex_sparse);
        }
      else
        {
          lat.median_us = lat.dense_us;
          lat.p95_us = dense_p95;
        }
    }
  else
    time_batch1 (ex, x, 0.6 * seconds, &lat.median_us, &lat.p95_us);
  lat.rows_per_second = time_large (ex, x, B, 0.4 * seconds);
  *latency = lat;
  ok = TRUE;
  goto out;

es_fail:
  espalier_error_from_es (error, &es, NULL);
out:
  g_clear_pointer (&ex_sparse, es_exec_free);
  g_clear_pointer (&ex, es_exec_free);
  g_clear_pointer (&be, es_backend_free);
  g_clear_pointer (&rounded, es_model_free);
  return ok;
}

gboolean
espalier_measure_latency (const EsModel *model, guint threads, double seconds,
                          double *latency_us, GError **error)
{
  EspalierLatency lat;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (latency_us != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!espalier_measure_variant (model, NULL, threads, 0, seconds > 0.0 ? seconds : 0.5, &lat,
                                 error))
    return FALSE;
  *latency_us = lat.median_us;
  return TRUE;
}

gboolean
espalier_variant_measure_latency (EspalierVariant *self, guint threads, double seconds,
                                  GError **error)
{
  EspalierLatency lat;

  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (self->model == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The variant “%s” has no weights loaded to measure"), self->name);
      return FALSE;
    }
  if (!espalier_measure_variant (self->model, self->quant, threads, 0,
                                 seconds > 0.0 ? seconds : 0.5, &lat, error))
    return FALSE;
  espalier_variant_set_latency (self, &lat);
  return TRUE;
}
