/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-series.c: the points of a chart layer in data units, with optional class
 * indices. Appending keeps the extents up to date incrementally so a live chart of a
 * long run does not rescan its history every frame. It knows nothing of pixels or
 * drawing; every change emits "changed". */

#include "config.h"

#include <math.h>

#include "espalier-series.h"

/* A point without a class (when others have one) carries this index. */
#define NO_CLASS G_MAXUINT

struct _EspalierSeries
{
  GObject  parent_instance;

  char    *title;
  GArray  *x;           /* (n_points) double */
  GArray  *y;           /* (n_points) double */
  GArray  *klass;       /* (n_points) guint, or NULL while no point has a class */

  /* Cached extents of the finite values; valid while extents_valid. */
  double   x_min, x_max, y_min, y_max;
  guint    extents_valid : 1;
  guint    has_extents : 1;
};

G_DEFINE_FINAL_TYPE (EspalierSeries, espalier_series, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_TITLE,
  PROP_N_POINTS,
  N_PROPS
};

enum {
  CHANGED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

EspalierSeries *
espalier_series_new (const char *title)
{
  return g_object_new (ESPALIER_TYPE_SERIES, "title", title, NULL);
}

static void
emit_changed (EspalierSeries *self)
{
  g_signal_emit (self, signals[CHANGED], 0);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_POINTS]);
}

/* Grow the cached extents by one point (only when they are valid). */
static void
extents_add (EspalierSeries *self,
             double          x,
             double          y)
{
  if (!self->extents_valid || !isfinite (x) || !isfinite (y))
    return;

  if (!self->has_extents)
    {
      self->x_min = self->x_max = x;
      self->y_min = self->y_max = y;
      self->has_extents = TRUE;
      return;
    }

  self->x_min = MIN (self->x_min, x);
  self->x_max = MAX (self->x_max, x);
  self->y_min = MIN (self->y_min, y);
  self->y_max = MAX (self->y_max, y);
}

static void
espalier_series_finalize (GObject *object)
{
  EspalierSeries *self = ESPALIER_SERIES (object);

  g_free (self->title);
  g_array_unref (self->x);
  g_array_unref (self->y);
  g_clear_pointer (&self->klass, g_array_unref);

  G_OBJECT_CLASS (espalier_series_parent_class)->finalize (object);
}

static void
espalier_series_get_property (GObject    *object,
                              guint       prop_id,
                              GValue     *value,
                              GParamSpec *pspec)
{
  EspalierSeries *self = ESPALIER_SERIES (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_value_set_string (value, self->title);
      break;
    case PROP_N_POINTS:
      g_value_set_uint (value, self->x->len);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_series_set_property (GObject      *object,
                              guint         prop_id,
                              const GValue *value,
                              GParamSpec   *pspec)
{
  EspalierSeries *self = ESPALIER_SERIES (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      espalier_series_set_title (self, g_value_get_string (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_series_class_init (EspalierSeriesClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_series_finalize;
  object_class->get_property = espalier_series_get_property;
  object_class->set_property = espalier_series_set_property;

  properties[PROP_TITLE] =
    g_param_spec_string ("title", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_N_POINTS] =
    g_param_spec_uint ("n-points", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[CHANGED] =
    g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
espalier_series_init (EspalierSeries *self)
{
  self->x = g_array_new (FALSE, FALSE, sizeof (double));
  self->y = g_array_new (FALSE, FALSE, sizeof (double));
  self->extents_valid = TRUE;
}

const char *
espalier_series_get_title (EspalierSeries *self)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), NULL);

  return self->title;
}

void
espalier_series_set_title (EspalierSeries *self,
                           const char     *title)
{
  g_return_if_fail (ESPALIER_IS_SERIES (self));

  if (g_strcmp0 (self->title, title) != 0)
    {
      g_free (self->title);
      self->title = g_strdup (title);
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TITLE]);
      g_signal_emit (self, signals[CHANGED], 0);
    }
}

guint
espalier_series_get_n_points (EspalierSeries *self)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), 0);

  return self->x->len;
}

const double *
espalier_series_get_x (EspalierSeries *self)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), NULL);

  return (const double *) (gpointer) self->x->data;
}

const double *
espalier_series_get_y (EspalierSeries *self)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), NULL);

  return (const double *) (gpointer) self->y->data;
}

const guint *
espalier_series_get_class (EspalierSeries *self)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), NULL);

  return self->klass != NULL ? (const guint *) (gpointer) self->klass->data : NULL;
}

void
espalier_series_append (EspalierSeries *self,
                        double          x,
                        double          y)
{
  g_return_if_fail (ESPALIER_IS_SERIES (self));

  g_array_append_val (self->x, x);
  g_array_append_val (self->y, y);
  if (self->klass != NULL)
    {
      guint none = NO_CLASS;
      g_array_append_val (self->klass, none);
    }
  extents_add (self, x, y);
  emit_changed (self);
}

void
espalier_series_append_class (EspalierSeries *self,
                              double          x,
                              double          y,
                              guint           klass)
{
  g_return_if_fail (ESPALIER_IS_SERIES (self));

  if (self->klass == NULL)
    {
      guint none = NO_CLASS;

      self->klass = g_array_sized_new (FALSE, FALSE, sizeof (guint), self->x->len + 1);
      for (guint i = 0; i < self->x->len; i++)
        g_array_append_val (self->klass, none);
    }
  g_array_append_val (self->x, x);
  g_array_append_val (self->y, y);
  g_array_append_val (self->klass, klass);
  extents_add (self, x, y);
  emit_changed (self);
}

void
espalier_series_set_data (EspalierSeries *self,
                          const double   *x,
                          const double   *y,
                          const guint    *klass,
                          guint           n)
{
  g_return_if_fail (ESPALIER_IS_SERIES (self));
  g_return_if_fail (n == 0 || (x != NULL && y != NULL));

  g_array_set_size (self->x, 0);
  g_array_set_size (self->y, 0);
  g_clear_pointer (&self->klass, g_array_unref);
  if (n > 0)
    {
      g_array_append_vals (self->x, x, n);
      g_array_append_vals (self->y, y, n);
    }
  if (klass != NULL && n > 0)
    {
      self->klass = g_array_sized_new (FALSE, FALSE, sizeof (guint), n);
      g_array_append_vals (self->klass, klass, n);
    }
  self->extents_valid = FALSE;
  self->has_extents = FALSE;
  emit_changed (self);
}

void
espalier_series_clear (EspalierSeries *self)
{
  g_return_if_fail (ESPALIER_IS_SERIES (self));

  espalier_series_set_data (self, NULL, NULL, NULL, 0);
}

gboolean
espalier_series_get_extents (EspalierSeries *self,
                             double         *x_min,
                             double         *x_max,
                             double         *y_min,
                             double         *y_max)
{
  g_return_val_if_fail (ESPALIER_IS_SERIES (self), FALSE);

  if (!self->extents_valid)
    {
      const double *xs = (const double *) (gpointer) self->x->data;
      const double *ys = (const double *) (gpointer) self->y->data;

      self->extents_valid = TRUE;
      self->has_extents = FALSE;
      for (guint i = 0; i < self->x->len; i++)
        extents_add (self, xs[i], ys[i]);
    }

  if (!self->has_extents)
    return FALSE;

  if (x_min != NULL)
    *x_min = self->x_min;
  if (x_max != NULL)
    *x_max = self->x_max;
  if (y_min != NULL)
    *y_min = self->y_min;
  if (y_max != NULL)
    *y_max = self->y_max;
  return TRUE;
}
