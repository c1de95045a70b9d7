/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-stage-bars.c: see espalier-stage-bars.h. The chart holds one stacked bars
 * layer per stage, so that the legend names the stages in their colours; each stage
 * keeps its colour whatever the set of stages. The events are split into steps here,
 * on the main thread: a trace of 50 steps is a few thousand intervals. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <glib/gi18n.h>

#include "espalier-chart-layers.h"
#include "espalier-stage-bars.h"

struct _EspalierStageBars
{
  AdwBin         parent_instance;

  EspalierChart *chart;
  GtkLabel      *shares_label;
  guint          n_bars;
  guint          n_stages;
  double        *seconds;      /* (n_bars, n_stages) */
  guint          n_clipped;    /* bars cut off at the top of the scale */
};

/* A step this many times the median step is cut off at the top of the scale, so that
 * one pause (the first step's allocations, the machine scheduling something else) does
 * not flatten every other bar to nothing. Only with enough steps for a median. */
#define CLIP_FACTOR    5.0
#define CLIP_MIN_BARS  5

G_DEFINE_FINAL_TYPE (EspalierStageBars, espalier_stage_bars, ADW_TYPE_BIN)

GtkWidget *
espalier_stage_bars_new (void)
{
  return g_object_new (ESPALIER_TYPE_STAGE_BARS, NULL);
}

/* A fixed palette colour per stage, so that forward is blue in every chart. */
static guint
stage_palette_index (const char *name,
                     guint       k)
{
  static const struct { const char *name; guint color; } colors[] = {
    { "data", 1 }, { "load", 9 }, { "forward", 0 }, { "loss", 4 }, { "metrics", 8 },
    { "backward", 2 }, { "optimizer", 3 }, { "other", 7 },
  };

  for (guint i = 0; name != NULL && i < G_N_ELEMENTS (colors); i++)
    if (strcmp (name, colors[i].name) == 0)
      return colors[i].color;
  return k;
}

static guint
find_stage (const EspalierProfileSummary *summary,
            const char                   *name)
{
  for (guint k = 0; k < summary->n_stages; k++)
    if (summary->stages[k].name != NULL && strcmp (summary->stages[k].name, name) == 0)
      return k;
  return G_MAXUINT;
}

guint
espalier_stage_bars_split_events (const EspalierProfileSummary *summary,
                                  double                      **seconds)
{
  const GArray *events;
  g_autoptr(GArray) out = NULL;    /* double, (steps, n_stages) */
  guint stage_of[ES_N_STAGES];     /* EsStage -> summary stage, or G_MAXUINT */
  guint data_k, other_k, n = 0;
  double start = 0, end = 0;
  gboolean in_step = FALSE;

  g_return_val_if_fail (summary != NULL && seconds != NULL, 0);

  *seconds = NULL;
  events = summary->profile != NULL ? summary->profile->events : NULL;
  if (events == NULL || events->len == 0 || summary->n_stages == 0)
    return 0;

  data_k = find_stage (summary, "data");
  other_k = find_stage (summary, "other");
  for (int s = 0; s < ES_N_STAGES; s++)
    stage_of[s] = find_stage (summary, es_stage_name ((EsStage) s));

  out = g_array_new (FALSE, TRUE, sizeof (double));
  for (guint e = 0; e <= events->len; e++)
    {
      const EspalierTraceEvent *ev = e < events->len
                                     ? &g_array_index (events, EspalierTraceEvent, e) : NULL;
      double *row;
      guint k;

      /* A data interval (or the end) closes the step before it. */
      if (ev == NULL || ev->stage == ESPALIER_STAGE_DATA)
        {
          if (in_step && other_k != G_MAXUINT)
            {
              double staged = 0, wall;

              row = &g_array_index (out, double, (gsize) (n - 1) * summary->n_stages);
              for (guint j = 0; j < summary->n_stages; j++)
                staged += row[j];
              wall = (ev != NULL ? ev->t0 : end) - start;
              row[other_k] += MAX (wall - staged, 0.0);
            }
          if (ev == NULL)
            break;
          g_array_set_size (out, (gsize) (n + 1) * summary->n_stages);
          n++;
          in_step = TRUE;
          start = ev->t0;
          end = ev->t1;
        }
      if (!in_step)
        continue;   /* intervals before the first step's data */

      if (ev->stage == ESPALIER_STAGE_DATA)
        k = data_k;
      else if (ev->stage >= 0 && ev->stage < ES_N_STAGES)
        k = stage_of[ev->stage];
      else
        k = G_MAXUINT;
      end = MAX (end, ev->t1);
      if (k == G_MAXUINT)
        continue;   /* counted in "other" */
      row = &g_array_index (out, double, (gsize) (n - 1) * summary->n_stages);
      row[k] += MAX (ev->t1 - ev->t0, 0.0);
    }

  if (n == 0)
    return 0;
  *seconds = (double *) g_array_free (g_steal_pointer (&out), FALSE);
  return n;
}

/* The time unit that keeps the tallest bar's number readable. */
static double
pick_unit (double       max_s,
           const char **title)
{
  if (max_s < 1e-3)
    {
      *title = _("Time per step (µs)");
      return 1e6;
    }
  if (max_s < 1)
    {
      *title = _("Time per step (ms)");
      return 1e3;
    }
  *title = _("Time per step (s)");
  return 1;
}

static int
cmp_double (gconstpointer a,
            gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return (x > y) - (x < y);
}

/* The 1-2-2.5-5 ceiling of v (> 0): the top of a scale that holds v. */
static double
nice_ceil (double v)
{
  static const double steps[] = { 1, 2, 2.5, 5, 10 };
  double mag = pow (10.0, floor (log10 (v)));

  for (guint i = 0; i < G_N_ELEMENTS (steps); i++)
    if (steps[i] * mag >= v * (1 - 1e-9))
      return steps[i] * mag;
  return 10 * mag;
}

/* "1.04 ms", "34 µs": seconds in the unit that suits them. */
static void
format_seconds (double s,
                char  *buf,
                gsize  size)
{
  if (s < 1e-3)
    g_snprintf (buf, size, "%.3g µs", s * 1e6);
  else if (s < 1)
    g_snprintf (buf, size, "%.3g ms", s * 1e3);
  else
    g_snprintf (buf, size, "%.3g s", s);
}

static void
set_shares (EspalierStageBars            *self,
            const EspalierProfileSummary *summary,
            const char                   *clipped)
{
  g_autoptr(GString) text = g_string_new (NULL);

  for (guint k = 0; summary != NULL && k < summary->n_stages; k++)
    {
      const EspalierStageTime *st = &summary->stages[k];

      if (text->len > 0)
        g_string_append (text, "  ·  ");
      /* TRANSLATORS: a stage's share of the step time: "Forward 42.1 %" */
      g_string_append_printf (text, _("%s %.1f %%"), st->label != NULL ? st->label : st->name,
                              100.0 * st->share);
    }
  if (clipped != NULL)
    g_string_append_printf (text, "\n%s", clipped);
  gtk_label_set_label (self->shares_label, text->str);
  gtk_widget_set_visible (GTK_WIDGET (self->shares_label), text->len > 0);
}

void
espalier_stage_bars_set_bars (EspalierStageBars            *self,
                              const EspalierProfileSummary *summary,
                              const double                 *seconds,
                              const char * const           *labels,
                              guint                         n_bars,
                              const char                   *x_title)
{
  g_autofree double *values = NULL;     /* (n_bars) */
  g_autofree double *bases = NULL;      /* (n_bars) */
  g_autofree double *totals = NULL;     /* (n_bars) seconds */
  g_autofree double *sorted = NULL;     /* (n_bars) */
  g_autoptr(GPtrArray) marked = NULL;   /* the labels, a clipped bar's marked */
  g_autofree char *clipped = NULL;
  EspalierChartAxis *x_axis, *y_axis;
  double max_total = 0, median = 0, cut = G_MAXDOUBLE, top = 0, unit;
  const char *unit_title = NULL;
  guint longest = 0;

  g_return_if_fail (ESPALIER_IS_STAGE_BARS (self));
  g_return_if_fail (n_bars == 0 || (summary != NULL && seconds != NULL));

  espalier_chart_remove_all (self->chart);
  g_clear_pointer (&self->seconds, g_free);
  self->n_bars = 0;
  self->n_stages = 0;
  self->n_clipped = 0;
  y_axis = espalier_chart_get_y_axis (self->chart);
  espalier_chart_axis_set_auto_range (y_axis, TRUE);
  if (summary == NULL || summary->n_stages == 0 || n_bars == 0)
    {
      set_shares (self, summary, NULL);
      return;
    }

  self->n_stages = summary->n_stages;
  self->n_bars = n_bars;
  self->seconds = g_memdup2 (seconds, (gsize) n_bars * self->n_stages * sizeof (double));
  x_axis = espalier_chart_get_x_axis (self->chart);
  espalier_chart_axis_set_title (x_axis, x_title);
  /* A lone bar stays a bar, not a wall across the chart. */
  if (n_bars < 5)
    espalier_chart_axis_set_range (x_axis, -2.5, 2.5 + (n_bars - 1));
  else
    espalier_chart_axis_set_auto_range (x_axis, TRUE);

  totals = g_new0 (double, self->n_bars);
  for (guint i = 0; i < self->n_bars; i++)
    {
      for (guint k = 0; k < self->n_stages; k++)
        totals[i] += self->seconds[(gsize) i * self->n_stages + k];
      if (totals[i] > totals[longest])
        longest = i;
    }
  if (self->n_bars >= CLIP_MIN_BARS)
    {
      sorted = g_memdup2 (totals, self->n_bars * sizeof (double));
      qsort (sorted, self->n_bars, sizeof (double), cmp_double);
      median = sorted[self->n_bars / 2];
      if (median > 0)
        cut = CLIP_FACTOR * median;
    }
  for (guint i = 0; i < self->n_bars; i++)
    if (totals[i] > cut)
      self->n_clipped++;
    else
      max_total = MAX (max_total, totals[i]);
  if (self->n_clipped == 0)
    max_total = totals[longest];
  unit = pick_unit (max_total, &unit_title);
  espalier_chart_axis_set_title (y_axis, unit_title);
  if (self->n_clipped > 0)
    {
      char longest_time[32], median_time[32];

      /* the scale of the others, the cut bars running off its top; their labels say so */
      top = nice_ceil (max_total * unit * 1.1);
      espalier_chart_axis_set_range (y_axis, 0, top);
      marked = g_ptr_array_new_with_free_func (g_free);
      for (guint i = 0; i < self->n_bars; i++)
        {
          const char *l = labels != NULL ? labels[i] : NULL;

          /* TRANSLATORS: the label of a bar cut off at the top of the chart */
          g_ptr_array_add (marked, totals[i] > cut ? g_strdup_printf (_("%s ↑"), l ? l : "")
                                                   : g_strdup (l ? l : ""));
        }
      g_ptr_array_add (marked, NULL);
      labels = (const char * const *) marked->pdata;
      format_seconds (totals[longest], longest_time, sizeof longest_time);
      format_seconds (median, median_time, sizeof median_time);
      clipped = g_strdup_printf (
        ngettext ("↑ %u bar is cut off at the top so that the others stay readable: it took "
                  "%s, %.0f× the median step of %s.",
                  "↑ %u bars are cut off at the top so that the others stay readable: the "
                  "longest took %s, %.0f× the median step of %s.", self->n_clipped),
        self->n_clipped, longest_time, totals[longest] / median, median_time);
    }
  set_shares (self, summary, clipped);

  values = g_new (double, self->n_bars);
  bases = g_new0 (double, self->n_bars);
  for (guint k = 0; k < self->n_stages; k++)
    {
      const EspalierStageTime *st = &summary->stages[k];
      g_autoptr(EspalierChartLayer) layer = espalier_bars_layer_new ();
      GdkRGBA color;

      for (guint i = 0; i < self->n_bars; i++)
        values[i] = self->seconds[(gsize) i * self->n_stages + k] * unit;
      espalier_chart_layer_set_title (layer, st->label != NULL ? st->label : st->name);
      espalier_chart_palette_color (stage_palette_index (st->name, k), &color);
      espalier_chart_layer_set_color (layer, &color);
      espalier_bars_layer_set_stacked (ESPALIER_BARS_LAYER (layer), values, bases, labels,
                                       self->n_bars);
      espalier_chart_add_layer (self->chart, layer);
      for (guint i = 0; i < self->n_bars; i++)
        bases[i] += values[i];
    }
}

void
espalier_stage_bars_set_summary (EspalierStageBars            *self,
                                 const EspalierProfileSummary *summary)
{
  g_autofree double *split = NULL;
  g_autoptr(GPtrArray) labels = g_ptr_array_new_with_free_func (g_free);
  guint steps, first;

  g_return_if_fail (ESPALIER_IS_STAGE_BARS (self));

  if (summary == NULL || summary->n_stages == 0 || summary->steps == 0)
    {
      espalier_stage_bars_set_bars (self, summary, NULL, NULL, 0, NULL);
      return;
    }

  steps = espalier_stage_bars_split_events (summary, &split);
  if (steps > 0)
    {
      first = steps > ESPALIER_STAGE_BARS_MAX_STEPS ? steps - ESPALIER_STAGE_BARS_MAX_STEPS : 0;
      for (guint i = first; i < steps; i++)
        g_ptr_array_add (labels, g_strdup_printf ("%u", i + 1));
      g_ptr_array_add (labels, NULL);
      espalier_stage_bars_set_bars (self, summary, split + (gsize) first * summary->n_stages,
                                    (const char * const *) labels->pdata, steps - first,
                                    _("Profiled step"));
    }
  else
    {
      g_autofree double *mean = g_new0 (double, summary->n_stages);

      for (guint k = 0; k < summary->n_stages; k++)
        mean[k] = summary->stages[k].seconds / summary->steps;
      g_ptr_array_add (labels, g_strdup_printf (ngettext ("Mean of %u step", "Mean of %u steps",
                                                          summary->steps),
                                                summary->steps));
      g_ptr_array_add (labels, NULL);
      espalier_stage_bars_set_bars (self, summary, mean, (const char * const *) labels->pdata, 1,
                                    NULL);
    }
}

guint
espalier_stage_bars_get_n_bars (EspalierStageBars *self)
{
  g_return_val_if_fail (ESPALIER_IS_STAGE_BARS (self), 0);
  return self->n_bars;
}

double
espalier_stage_bars_get_seconds (EspalierStageBars *self,
                                 guint              bar,
                                 guint              stage)
{
  g_return_val_if_fail (ESPALIER_IS_STAGE_BARS (self), NAN);
  if (bar >= self->n_bars || stage >= self->n_stages)
    return NAN;
  return self->seconds[(gsize) bar * self->n_stages + stage];
}

guint
espalier_stage_bars_get_n_clipped (EspalierStageBars *self)
{
  g_return_val_if_fail (ESPALIER_IS_STAGE_BARS (self), 0);
  return self->n_clipped;
}

EspalierChart *
espalier_stage_bars_get_chart (EspalierStageBars *self)
{
  g_return_val_if_fail (ESPALIER_IS_STAGE_BARS (self), NULL);
  return self->chart;
}

static void
espalier_stage_bars_finalize (GObject *object)
{
  EspalierStageBars *self = ESPALIER_STAGE_BARS (object);

  g_free (self->seconds);
  G_OBJECT_CLASS (espalier_stage_bars_parent_class)->finalize (object);
}

static void
espalier_stage_bars_class_init (EspalierStageBarsClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_stage_bars_finalize;
}

static void
espalier_stage_bars_init (EspalierStageBars *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 6);
  EspalierChartAxis *y;

  self->chart = ESPALIER_CHART (espalier_chart_new ());
  gtk_widget_set_size_request (GTK_WIDGET (self->chart), -1, 280);
  gtk_widget_set_vexpand (GTK_WIDGET (self->chart), TRUE);
  espalier_chart_set_title (self->chart, _("Where Each Step’s Time Goes"));
  espalier_chart_set_empty_text (self->chart, _("Profile the model to split its steps by stage"));
  y = espalier_chart_get_y_axis (self->chart);
  espalier_chart_axis_set_include_zero (y, TRUE);

  self->shares_label = GTK_LABEL (gtk_label_new (NULL));
  gtk_label_set_wrap (self->shares_label, TRUE);
  gtk_label_set_xalign (self->shares_label, 0);
  gtk_label_set_selectable (self->shares_label, TRUE);
  gtk_widget_set_margin_start (GTK_WIDGET (self->shares_label), 12);
  gtk_widget_set_margin_end (GTK_WIDGET (self->shares_label), 12);
  gtk_widget_set_margin_bottom (GTK_WIDGET (self->shares_label), 6);
  gtk_widget_add_css_class (GTK_WIDGET (self->shares_label), "dim-label");
  gtk_widget_add_css_class (GTK_WIDGET (self->shares_label), "numeric");
  gtk_widget_set_visible (GTK_WIDGET (self->shares_label), FALSE);

  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->chart));
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->shares_label));
  adw_bin_set_child (ADW_BIN (self), box);
}
