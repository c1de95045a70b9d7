/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-ui-util.h: small helpers the pages and widgets share, so that each is written
 * once: numbers in human units, following one object's signal, a GtkColumnView column
 * made by a signal factory, and the cairo and pango pieces custom drawing repeats. No
 * widgets and no state of its own. */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

/* Numbers in human units, for labels. Free with g_free. */

/* Compact, one decimal past a thousand: "156", "101.8k", "1.2M". */
char                *espalier_format_count       (gint64               n);
/* FLOPs the same way: "156 FLOPs", "200.7 kFLOPs". */
char                *espalier_format_flops       (gint64               flops);
/* Exact, grouped as the user's locale groups digits: "1,234,567". */
char                *espalier_format_grouped     (gint64               n);
/* Three significant digits and an SI prefix past a thousand: "950", "1.23 M". */
char                *espalier_format_si          (double               v);

/* Point *slot (a GObject pointer) at object (may be NULL) and move a signal handler
 * along: the handlers of callback with data on the old object are disconnected, and
 * callback is connected to `signal` of the new one with data and flags. The slot holds
 * a reference. Returns FALSE, and does nothing, when *slot already is object. */
gboolean             espalier_follow             (gpointer             slot,
                                                  gpointer             object,
                                                  const char          *signal,
                                                  GCallback            callback,
                                                  gpointer             data,
                                                  GConnectFlags        flags);

/* Append a resizable column titled `title` to view, its cells made by a
 * GtkSignalListItemFactory whose "setup", "bind" and "unbind" (each may be NULL) get
 * data. Returns the column, owned by view. */
GtkColumnViewColumn *espalier_column_view_append (GtkColumnView       *view,
                                                  const char          *title,
                                                  gboolean             expand,
                                                  GCallback            setup,
                                                  GCallback            bind,
                                                  GCallback            unbind,
                                                  gpointer             data);

/* Drawing */

/* A closed sub-path: rect with corners of radius (at most half the shorter side). */
void                 espalier_cairo_rounded_rect (cairo_t             *cr,
                                                  const graphene_rect_t *rect,
                                                  double               radius);
/* color, its alpha multiplied by alpha, as the source. */
void                 espalier_cairo_set_source   (cairo_t             *cr,
                                                  const GdkRGBA       *color,
                                                  double               alpha);
/* Set layout's attributes: a font scale (1: as is), a weight and tabular figures. */
void                 espalier_text_layout_style  (PangoLayout         *layout,
                                                  double               scale,
                                                  PangoWeight          weight,
                                                  gboolean             tabular);
/* A layout of text (may be NULL) in widget's font, styled as espalier_text_layout_style
 * does. */
PangoLayout         *espalier_text_layout_new    (GtkWidget           *widget,
                                                  const char          *text,
                                                  double               scale,
                                                  PangoWeight          weight,
                                                  gboolean             tabular);

G_END_DECLS
