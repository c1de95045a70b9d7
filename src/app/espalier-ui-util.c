/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-ui-util.c: number formatting, signal following, column view columns and
 * drawing helpers shared by the app's pages and widgets. Nothing here knows a page. */
#include "config.h"

#include <math.h>

#include "espalier-ui-util.h"

/* Numbers */

static const char * const si_prefixes[] = { "", "k", "M", "G", "T", "P" };

/* Divide *v by 1000 while |*v| >= limit, at most up to the last prefix; returns the
 * index of the prefix that now goes with *v. */
static guint
si_scale (double *v,
          double  limit)
{
  guint p = 0;

  while (fabs (*v) >= limit && p + 1 < G_N_ELEMENTS (si_prefixes))
    {
      *v /= 1000.0;
      p++;
    }
  return p;
}

/* Whole below a thousand, else one decimal and a prefix; 999.95 and up rounds to the
 * next prefix so that "1000.0k" never shows. */
static char *
format_scaled (gint64      n,
               const char *space,
               const char *unit)
{
  double v = (double) n;
  guint p;

  if (n < 1000 && n > -1000)
    return g_strdup_printf ("%" G_GINT64_FORMAT "%s%s", n, space, unit);
  p = si_scale (&v, 999.95);
  return g_strdup_printf ("%.1f%s%s%s", v, space, si_prefixes[p], unit);
}

char *
espalier_format_count (gint64 n)
{
  return format_scaled (n, "", "");
}

char *
espalier_format_flops (gint64 flops)
{
  return format_scaled (flops, " ", "FLOPs");
}

char *
espalier_format_grouped (gint64 n)
{
  return g_strdup_printf ("%'" G_GINT64_FORMAT, n);
}

char *
espalier_format_si (double v)
{
  /* %.3g rounds 999.9995 up to "1e+03": scale from the rounded value. */
  guint p = si_scale (&v, 999.5);

  if (p == 0)
    return g_strdup_printf ("%.0f", v);
  return g_strdup_printf ("%.3g %s", v, si_prefixes[p]);
}

/* Signals */

gboolean
espalier_follow (gpointer       slot,
                 gpointer       object,
                 const char    *signal,
                 GCallback      callback,
                 gpointer       data,
                 GConnectFlags  flags)
{
  GObject **ptr = slot;

  g_return_val_if_fail (ptr != NULL, FALSE);
  g_return_val_if_fail (object == NULL || G_IS_OBJECT (object), FALSE);
  g_return_val_if_fail (signal != NULL && callback != NULL, FALSE);

  if (*ptr == object)
    return FALSE;
  if (*ptr != NULL)
    g_signal_handlers_disconnect_by_func (*ptr, callback, data);
  g_set_object (ptr, object);
  if (object != NULL)
    g_signal_connect_data (object, signal, callback, data, NULL, flags);
  return TRUE;
}

/* Column views */

GtkColumnViewColumn *
espalier_column_view_append (GtkColumnView *view,
                             const char    *title,
                             gboolean       expand,
                             GCallback      setup,
                             GCallback      bind,
                             GCallback      unbind,
                             gpointer       data)
{
  GtkListItemFactory *factory;
  GtkColumnViewColumn *column;

  g_return_val_if_fail (GTK_IS_COLUMN_VIEW (view), NULL);

  factory = gtk_signal_list_item_factory_new ();
  if (setup != NULL)
    g_signal_connect (factory, "setup", setup, data);
  if (bind != NULL)
    g_signal_connect (factory, "bind", bind, data);
  if (unbind != NULL)
    g_signal_connect (factory, "unbind", unbind, data);
  column = gtk_column_view_column_new (title, factory);
  gtk_column_view_column_set_expand (column, expand);
  gtk_column_view_column_set_resizable (column, TRUE);
  gtk_column_view_append_column (view, column);
  g_object_unref (column);
  return column;
}

/* Drawing */

void
espalier_cairo_rounded_rect (cairo_t               *cr,
                             const graphene_rect_t *rect,
                             double                 radius)
{
  double x = rect->origin.x, y = rect->origin.y, w = rect->size.width, h = rect->size.height;

  radius = MIN (radius, MIN (w, h) / 2);
  cairo_new_sub_path (cr);
  cairo_arc (cr, x + w - radius, y + radius, radius, -G_PI / 2, 0);
  cairo_arc (cr, x + w - radius, y + h - radius, radius, 0, G_PI / 2);
  cairo_arc (cr, x + radius, y + h - radius, radius, G_PI / 2, G_PI);
  cairo_arc (cr, x + radius, y + radius, radius, G_PI, 3 * G_PI / 2);
  cairo_close_path (cr);
}

void
espalier_cairo_set_source (cairo_t       *cr,
                           const GdkRGBA *color,
                           double         alpha)
{
  cairo_set_source_rgba (cr, color->red, color->green, color->blue, color->alpha * alpha);
}

void
espalier_text_layout_style (PangoLayout *layout,
                            double       scale,
                            PangoWeight  weight,
                            gboolean     tabular)
{
  PangoAttrList *attrs;

  g_return_if_fail (PANGO_IS_LAYOUT (layout));

  attrs = pango_attr_list_new ();
  if (scale != 1.0)
    pango_attr_list_insert (attrs, pango_attr_scale_new (scale));
  if (weight != PANGO_WEIGHT_NORMAL)
    pango_attr_list_insert (attrs, pango_attr_weight_new (weight));
  if (tabular)
    pango_attr_list_insert (attrs, pango_attr_font_features_new ("tnum"));
  pango_layout_set_attributes (layout, attrs);
  pango_attr_list_unref (attrs);
}

PangoLayout *
espalier_text_layout_new (GtkWidget  *widget,
                          const char *text,
                          double      scale,
                          PangoWeight weight,
                          gboolean    tabular)
{
  PangoLayout *layout;

  g_return_val_if_fail (GTK_IS_WIDGET (widget), NULL);

  layout = gtk_widget_create_pango_layout (widget, text);
  espalier_text_layout_style (layout, scale, weight, tabular);
  return layout;
}
