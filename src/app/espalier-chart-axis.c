/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-axis.c: a chart axis maps data values to 0..1 and back, picks its
 * range (fixed, or fitted around the data with 1-2-5 rounded ends) and its ticks, and
 * formats tick labels. Linear or log10. It draws nothing: the chart does. */

#include "config.h"

#include <math.h>

#include "espalier-chart-axis.h"

struct _EspalierChartAxis
{
  GObject  parent_instance;

  char    *title;
  double   min;
  double   max;
  double   tick_step;        /* last tick step (linear), 0 until ticks were asked for */
  guint    auto_range : 1;
  guint    logarithmic : 1;
  guint    include_zero : 1;
  guint    integer_ticks : 1;   /* counted things (epochs): no tick between two integers */
};

G_DEFINE_FINAL_TYPE (EspalierChartAxis, espalier_chart_axis, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_TITLE,
  PROP_MIN,
  PROP_MAX,
  PROP_AUTO_RANGE,
  PROP_LOGARITHMIC,
  PROP_INCLUDE_ZERO,
  N_PROPS
};

enum {
  CHANGED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

EspalierChartAxis *
espalier_chart_axis_new (const char *title)
{
  return g_object_new (ESPALIER_TYPE_CHART_AXIS, "title", title, NULL);
}

/* The 1-2-5 step nearest above raw (raw > 0). */
static double
nice_step (double raw)
{
  double mag = pow (10.0, floor (log10 (raw)));
  double norm = raw / mag;

  if (norm <= 1.0 + 1e-9)
    return mag;
  if (norm <= 2.0 + 1e-9)
    return 2.0 * mag;
  if (norm <= 5.0 + 1e-9)
    return 5.0 * mag;
  return 10.0 * mag;
}

/* Set the range; notify and emit "changed" when it differs. */
static void
update_range (EspalierChartAxis *self,
              double             min,
              double             max)
{
  if (min == self->min && max == self->max)
    return;

  self->min = min;
  self->max = max;
  self->tick_step = 0;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MIN]);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MAX]);
  g_signal_emit (self, signals[CHANGED], 0);
}

static void
espalier_chart_axis_finalize (GObject *object)
{
  EspalierChartAxis *self = ESPALIER_CHART_AXIS (object);

  g_free (self->title);

  G_OBJECT_CLASS (espalier_chart_axis_parent_class)->finalize (object);
}

static void
espalier_chart_axis_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierChartAxis *self = ESPALIER_CHART_AXIS (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_value_set_string (value, self->title);
      break;
    case PROP_MIN:
      g_value_set_double (value, self->min);
      break;
    case PROP_MAX:
      g_value_set_double (value, self->max);
      break;
    case PROP_AUTO_RANGE:
      g_value_set_boolean (value, self->auto_range);
      break;
    case PROP_LOGARITHMIC:
      g_value_set_boolean (value, self->logarithmic);
      break;
    case PROP_INCLUDE_ZERO:
      g_value_set_boolean (value, self->include_zero);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_chart_axis_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierChartAxis *self = ESPALIER_CHART_AXIS (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      espalier_chart_axis_set_title (self, g_value_get_string (value));
      break;
    case PROP_MIN:
      espalier_chart_axis_set_range (self, g_value_get_double (value), self->max);
      break;
    case PROP_MAX:
      espalier_chart_axis_set_range (self, self->min, g_value_get_double (value));
      break;
    case PROP_AUTO_RANGE:
      espalier_chart_axis_set_auto_range (self, g_value_get_boolean (value));
      break;
    case PROP_LOGARITHMIC:
      espalier_chart_axis_set_logarithmic (self, g_value_get_boolean (value));
      break;
    case PROP_INCLUDE_ZERO:
      espalier_chart_axis_set_include_zero (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_chart_axis_class_init (EspalierChartAxisClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_chart_axis_finalize;
  object_class->get_property = espalier_chart_axis_get_property;
  object_class->set_property = espalier_chart_axis_set_property;

  properties[PROP_TITLE] =
    g_param_spec_string ("title", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_MIN] =
    g_param_spec_double ("min", NULL, NULL, -G_MAXDOUBLE, G_MAXDOUBLE, 0,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_MAX] =
    g_param_spec_double ("max", NULL, NULL, -G_MAXDOUBLE, G_MAXDOUBLE, 1,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_AUTO_RANGE] =
    g_param_spec_boolean ("auto-range", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_LOGARITHMIC] =
    g_param_spec_boolean ("logarithmic", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_INCLUDE_ZERO] =
    g_param_spec_boolean ("include-zero", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[CHANGED] =
    g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
espalier_chart_axis_init (EspalierChartAxis *self)
{
  self->min = 0;
  self->max = 1;
  self->auto_range = TRUE;
}

const char *
espalier_chart_axis_get_title (EspalierChartAxis *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), NULL);

  return self->title;
}

void
espalier_chart_axis_set_title (EspalierChartAxis *self,
                               const char        *title)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  if (g_strcmp0 (self->title, title) == 0)
    return;

  g_free (self->title);
  self->title = g_strdup (title);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TITLE]);
  g_signal_emit (self, signals[CHANGED], 0);
}

void
espalier_chart_axis_set_range (EspalierChartAxis *self,
                               double             min,
                               double             max)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));
  g_return_if_fail (isfinite (min) && isfinite (max));

  if (self->auto_range)
    {
      self->auto_range = FALSE;
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_AUTO_RANGE]);
    }
  update_range (self, min, max);
}

void
espalier_chart_axis_get_range (EspalierChartAxis *self,
                               double            *min,
                               double            *max)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  if (min != NULL)
    *min = self->min;
  if (max != NULL)
    *max = self->max;
}

void
espalier_chart_axis_set_auto_range (EspalierChartAxis *self,
                                    gboolean           auto_range)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  auto_range = !!auto_range;
  if (self->auto_range == (guint) auto_range)
    return;

  self->auto_range = auto_range;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_AUTO_RANGE]);
  g_signal_emit (self, signals[CHANGED], 0);
}

gboolean
espalier_chart_axis_get_auto_range (EspalierChartAxis *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), FALSE);

  return self->auto_range;
}

void
espalier_chart_axis_set_logarithmic (EspalierChartAxis *self,
                                     gboolean           logarithmic)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  logarithmic = !!logarithmic;
  if (self->logarithmic == (guint) logarithmic)
    return;

  self->logarithmic = logarithmic;
  self->tick_step = 0;
  if (logarithmic && self->min <= 0)
    {
      /* Keep a usable range until the next fit. */
      self->max = self->max > 0 ? self->max : 10;
      self->min = self->max / 10;
    }
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_LOGARITHMIC]);
  g_signal_emit (self, signals[CHANGED], 0);
}

void
espalier_chart_axis_set_integer_ticks (EspalierChartAxis *self,
                                       gboolean           integer_ticks)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  integer_ticks = !!integer_ticks;
  if (self->integer_ticks == (guint) integer_ticks)
    return;
  self->integer_ticks = integer_ticks;
  g_signal_emit (self, signals[CHANGED], 0);
}

gboolean
espalier_chart_axis_get_logarithmic (EspalierChartAxis *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), FALSE);

  return self->logarithmic;
}

void
espalier_chart_axis_set_include_zero (EspalierChartAxis *self,
                                      gboolean           include_zero)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  include_zero = !!include_zero;
  if (self->include_zero == (guint) include_zero)
    return;

  self->include_zero = include_zero;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_INCLUDE_ZERO]);
  g_signal_emit (self, signals[CHANGED], 0);
}

static void
fit_range (EspalierChartAxis *self,
           double             lo,
           double             hi,
           gboolean           exact)
{
  if (!self->auto_range || !isfinite (lo) || !isfinite (hi))
    return;
  if (lo > hi)
    {
      double t = lo;
      lo = hi;
      hi = t;
    }

  if (self->logarithmic)
    {
      double lmin, lmax;

      if (hi <= 0)
        {
          update_range (self, 1, 10);
          return;
        }
      if (lo <= 0)
        lo = hi / 1000;
      if (exact && lo < hi)
        {
          update_range (self, lo, hi);
          return;
        }
      lmin = floor (log10 (lo) + 1e-9);
      lmax = ceil (log10 (hi) - 1e-9);
      if (lmax <= lmin)
        lmax = lmin + 1;
      update_range (self, pow (10.0, lmin), pow (10.0, lmax));
      return;
    }

  if (self->include_zero)
    {
      lo = MIN (lo, 0);
      hi = MAX (hi, 0);
    }
  if (hi - lo <= fabs (hi) * 1e-12)
    {
      /* One value: open a window around it. */
      double pad = lo == 0 ? 1 : fabs (lo) * 0.1;

      lo -= pad;
      hi += pad;
      if (self->include_zero && lo < 0 && hi - 2 * pad >= 0)
        lo = 0;
    }
  if (!exact)
    {
      double step = nice_step ((hi - lo) / 5);

      lo = floor (lo / step + 1e-9) * step;
      hi = ceil (hi / step - 1e-9) * step;
    }
  update_range (self, lo, hi);
}

void
espalier_chart_axis_fit (EspalierChartAxis *self,
                         double             lo,
                         double             hi)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  fit_range (self, lo, hi, FALSE);
}

void
espalier_chart_axis_fit_exact (EspalierChartAxis *self,
                               double             lo,
                               double             hi)
{
  g_return_if_fail (ESPALIER_IS_CHART_AXIS (self));

  fit_range (self, lo, hi, TRUE);
}

double
espalier_chart_axis_normalize (EspalierChartAxis *self,
                               double             value)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), 0);

  if (self->logarithmic)
    {
      double lmin, lmax;

      if (value <= 0 || self->min <= 0 || self->max <= 0)
        return NAN;
      lmin = log10 (self->min);
      lmax = log10 (self->max);
      if (lmax == lmin)
        return 0.5;
      return (log10 (value) - lmin) / (lmax - lmin);
    }

  if (self->max == self->min)
    return 0.5;
  return (value - self->min) / (self->max - self->min);
}

double
espalier_chart_axis_denormalize (EspalierChartAxis *self,
                                 double             fraction)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), 0);

  if (self->logarithmic && self->min > 0 && self->max > 0)
    {
      double lmin = log10 (self->min);
      double lmax = log10 (self->max);

      return pow (10.0, lmin + fraction * (lmax - lmin));
    }

  return self->min + fraction * (self->max - self->min);
}

/* How many multiples of step lie in [min, max]. */
static guint
tick_count (double min,
            double max,
            double step)
{
  double first = ceil (min / step - 1e-9);
  double last = floor (max / step + 1e-9);

  return last >= first ? (guint) MIN (last - first + 1, G_MAXUINT / 2) : 0;
}

static GArray *
log_ticks (EspalierChartAxis *self,
           guint              max_ticks)
{
  GArray *ticks = g_array_new (FALSE, FALSE, sizeof (double));
  double lmin = log10 (self->min);
  double lmax = log10 (self->max);
  int first = (int) ceil (lmin - 1e-9);
  int last = (int) floor (lmax + 1e-9);

  /* Few decades: 1, 2 and 5 in each, when they all fit. */
  if (last - first >= 1 && (guint) (last - first) * 3 + 1 > max_ticks)
    {
      /* Powers of ten, every stride-th one when there are too many. */
      int n = last - first + 1;
      int stride = (n + (int) max_ticks - 1) / (int) max_ticks;

      for (int e = first; e <= last; e += stride)
        {
          double v = pow (10.0, e);
          g_array_append_val (ticks, v);
        }
      return ticks;
    }

  /* Less than a decade, or few: 1-2-5 multiples of the powers inside. */
  {
    static const double mult[] = { 1, 2, 5 };

    for (int e = (int) floor (lmin) ; e <= (int) ceil (lmax); e++)
      for (guint m = 0; m < G_N_ELEMENTS (mult); m++)
        {
          double v = mult[m] * pow (10.0, e);

          if (v >= self->min * (1 - 1e-9) && v <= self->max * (1 + 1e-9) &&
              ticks->len < MAX (max_ticks, 2))
            g_array_append_val (ticks, v);
        }
  }
  if (ticks->len < 2)
    {
      /* A narrow range (30..45): linear ticks read better. */
      g_array_unref (ticks);
      return NULL;
    }
  return ticks;
}

GArray *
espalier_chart_axis_get_ticks (EspalierChartAxis *self,
                               guint              max_ticks)
{
  GArray *ticks;
  double range, step, first;

  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), NULL);

  max_ticks = MAX (max_ticks, 2);

  if (self->logarithmic && self->min > 0 && self->max > self->min &&
      (ticks = log_ticks (self, max_ticks)) != NULL)
    return ticks;

  ticks = g_array_new (FALSE, FALSE, sizeof (double));
  range = self->max - self->min;
  if (!(range > 0) || !isfinite (range))
    return ticks;

  /* At most max_ticks values: (range / step) + 1 <= max_ticks; then the smallest 1-2-5
   * step that still gives at most max_ticks (a narrow range may hold no multiple of the
   * first step at all). */
  step = nice_step (range / (max_ticks - 1));
  for (;;)
    {
      double mag = pow (10.0, floor (log10 (step) + 1e-9));
      double norm = step / mag;
      double smaller = norm > 4 ? 2 * mag : norm > 1.5 ? mag : 0.5 * mag;

      if (tick_count (self->min, self->max, smaller) > max_ticks
          || (self->integer_ticks && smaller < 1))
        break;
      step = smaller;
    }
  if (self->integer_ticks)
    step = MAX (step, 1);   /* 1-2-5 steps of 1 or more are whole numbers */
  self->tick_step = step;
  first = ceil (self->min / step - 1e-9);
  for (double k = first; ticks->len < max_ticks; k++)
    {
      double v = k * step;

      if (v > self->max + step * 1e-9)
        break;
      if (fabs (v) < step * 1e-9)
        v = 0;
      g_array_append_val (ticks, v);
    }
  return ticks;
}

char *
espalier_chart_axis_format (EspalierChartAxis *self,
                            double             value)
{
  static const char *suffix[] = { "", "k", "M", "G", "T" };
  double step, mag, scaled_step;
  guint s = 0;
  int decimals;

  g_return_val_if_fail (ESPALIER_IS_CHART_AXIS (self), NULL);

  if (!isfinite (value))
    return g_strdup ("–");
  if (value == 0)
    return g_strdup ("0");

  if (self->logarithmic)
    {
      double a = fabs (value);

      if (a < 1e-3)
        return g_strdup_printf ("%.3g", value);
      while (a >= 1000 && s + 1 < G_N_ELEMENTS (suffix))
        {
          a /= 1000;
          value /= 1000;
          s++;
        }
      return g_strdup_printf ("%.3g%s", value, suffix[s]);
    }

  step = self->tick_step;
  if (!(step > 0))
    {
      double range = self->max - self->min;

      step = range > 0 ? nice_step (range / 5) : fabs (value) / 10;
    }

  mag = MAX (fabs (self->min), fabs (self->max));
  mag = MAX (mag, fabs (value));
  if (mag < 1e-3)
    return g_strdup_printf ("%.2g", value);

  scaled_step = step;
  /* 9500 stays as it is; 20000 is 20k, 5000000 is 5M. */
  while (mag >= (s == 0 ? 1e4 : 1e3) && s + 1 < G_N_ELEMENTS (suffix))
    {
      mag /= 1000;
      value /= 1000;
      scaled_step /= 1000;
      s++;
    }

  decimals = (int) ceil (-log10 (scaled_step) - 1e-9);
  decimals = CLAMP (decimals, 0, 6);
  /* Values between ticks keep the digits they need. */
  while (decimals < 6)
    {
      double scale = pow (10.0, decimals);

      if (fabs (round (value * scale) / scale - value) <= scaled_step * 1e-6)
        break;
      decimals++;
    }
  return g_strdup_printf ("%.*f%s", decimals, value, suffix[s]);
}
