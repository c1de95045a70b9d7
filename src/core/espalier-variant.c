/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-variant.c: one measured version of the trained model: its weights, what was
 * done to make it, and the figures measured on it (accuracy from the caller's
 * evaluation, batch-1 latency timed here on the CPU backend, sizes counted from the
 * weights). It does not prune or quantize; the optimize jobs make variants. */
#include "config.h"

#include "espalier-variant.h"

#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

#include "es-train.h"
#include "espalier-error.h"

/* Latency timing: rounds of calls lasting at least this long, at most this many. */
#define ROUND_SECONDS   50e-6
#define MAX_ROUNDS      201

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
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

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
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_variant_init (EspalierVariant *self)
{
  self->accuracy = NAN;
  self->latency_us = NAN;
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

void
espalier_variant_set_model (EspalierVariant *self, EsModel *model)
{
  GObject *obj = G_OBJECT (self);
  guint64 size_bytes = 0;
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
      size_bytes = 4 * (guint64) (n_params + es_model_n_buffers (model));
      flops = es_model_flops (model);
    }

  g_object_freeze_notify (obj);
  if (size_bytes != self->size_bytes)
    {
      self->size_bytes = size_bytes;
      g_object_notify_by_pspec (obj, properties[PROP_SIZE_BYTES]);
    }
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

static int
compare_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y ? 1 : 0;
}

gboolean
espalier_measure_latency (const EsModel *model, guint threads, double seconds,
                          double *latency_us, GError **error)
{
  g_autofree float *x = NULL;                 /* (1, D) */
  double rounds[MAX_ROUNDS];
  EsShape in;
  EsBackend *be;
  EsInfer *inf;
  EsError es = { 0 };
  EsRng rng = { 42 };
  double start, t0, per_call;
  gint64 D;
  int calls, n_rounds = 0;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (latency_us != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!(seconds > 0.0))
    seconds = 0.5;
  be = es_cpu_backend_new (threads > 0 ? (int) threads : 1, NULL, &es);
  if (be == NULL)
    {
      espalier_error_from_es (error, &es, NULL);
      return FALSE;
    }
  inf = es_infer_new (model, be, 1, &es);
  if (inf == NULL)
    {
      espalier_error_from_es (error, &es, NULL);
      es_backend_free (be);
      return FALSE;
    }

  /* A fixed random input, the same for every variant of a model. */
  in = es_model_input_shape (model);
  D = es_shape_size (&in);
  x = g_new (float, D);
  for (gint64 i = 0; i < D; i++)
    x[i] = (float) es_rng_normal (&rng);

  /* Warm-up: a tenth of the time, at least 3 calls; it also sizes the rounds. */
  start = es_now ();
  calls = 0;
  do
    {
      es_infer_run (inf, x, 1);
      calls++;
    }
  while (calls < 3 || es_now () - start < 0.1 * seconds);
  per_call = (es_now () - start) / calls;
  calls = (int) CLAMP (ceil (ROUND_SECONDS / MAX (per_call, 1e-9)), 1, 100000);

  /* Rounds until the time is up (at least 5), the median of their per-call times. */
  while (n_rounds < MAX_ROUNDS && (n_rounds < 5 || es_now () - start < seconds))
    {
      t0 = es_now ();
      for (int i = 0; i < calls; i++)
        es_infer_run (inf, x, 1);
      rounds[n_rounds++] = (es_now () - t0) / calls * 1e6;
    }
  qsort (rounds, (gsize) n_rounds, sizeof (double), compare_double);

  es_infer_free (inf);
  es_backend_free (be);
  *latency_us = rounds[n_rounds / 2];
  return TRUE;
}

gboolean
espalier_variant_measure_latency (EspalierVariant *self, guint threads, double seconds,
                                  GError **error)
{
  double us;

  g_return_val_if_fail (ESPALIER_IS_VARIANT (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (self->model == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The variant “%s” has no weights loaded to measure"), self->name);
      return FALSE;
    }
  if (!espalier_measure_latency (self->model, threads, seconds, &us, error))
    return FALSE;
  espalier_variant_set_latency_us (self, us);
  return TRUE;
}
