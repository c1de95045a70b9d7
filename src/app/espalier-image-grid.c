/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-image-grid.c: the image preview of the Data page. Each of the first rows of
 * an image dataset becomes one small cairo RGB24 surface when the dataset is set; the
 * snapshot scales them by a whole factor with the nearest filter (pixels stay sharp)
 * into a grid that reflows with the width, labels under the tiles. No caching of the
 * drawn grid: the surfaces are the data, the layout is recomputed per frame.
 *
 * Dimension key: C = channels, H = height, W = width of one image; a row holds
 * C * H * W values, channel-major. */
#include "config.h"

#include <math.h>

#include "espalier-image-grid.h"
#include "espalier-ui-util.h"

#define GAP     10 /* pixels between tiles */
#define LABEL_H 18 /* pixels under a tile for its label */

struct _EspalierImageGrid
{
  GtkWidget  parent_instance;

  GPtrArray *images;     /* (element-type cairo_surface_t) (W, H) RGB24 each */
  GPtrArray *labels;     /* (element-type utf8) one per image, may hold NULL */
  guint      width;      /* W */
  guint      height;     /* H */
  guint      max_images;
  guint      tile_size;
};

G_DEFINE_FINAL_TYPE (EspalierImageGrid, espalier_image_grid, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_MAX_IMAGES, PROP_TILE_SIZE, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkWidget *
espalier_image_grid_new (void)
{
  return g_object_new (ESPALIER_TYPE_IMAGE_GRID, NULL);
}

/* The scale from image pixels to screen pixels: a whole factor when images are smaller
 * than a tile, so that every pixel is a sharp square. */
static double
tile_scale (EspalierImageGrid *self)
{
  guint side = MAX (MAX (self->width, self->height), 1);
  double scale = (double) self->tile_size / side;

  return scale >= 1 ? floor (scale) : scale;
}

static void
cell_size (EspalierImageGrid *self,
           int               *tile_w,
           int               *tile_h,
           int               *cell_w,
           int               *cell_h)
{
  double scale = tile_scale (self);

  *tile_w = MAX (1, (int) ceil (self->width * scale));
  *tile_h = MAX (1, (int) ceil (self->height * scale));
  /* Labels need some width even under narrow images. */
  *cell_w = MAX (*tile_w, 64) + GAP;
  *cell_h = *tile_h + LABEL_H + GAP;
}

static guint
columns_for_width (EspalierImageGrid *self,
                   int                width)
{
  int tile_w, tile_h, cell_w, cell_h;
  guint cols;

  cell_size (self, &tile_w, &tile_h, &cell_w, &cell_h);
  cols = (guint) MAX (1, (width + GAP) / cell_w);
  return MIN (cols, MAX (self->images->len, 1));
}

static GtkSizeRequestMode
espalier_image_grid_get_request_mode (GtkWidget *widget)
{
  return GTK_SIZE_REQUEST_HEIGHT_FOR_WIDTH;
}

static void
espalier_image_grid_measure (GtkWidget      *widget,
                             GtkOrientation  orientation,
                             int             for_size,
                             int            *minimum,
                             int            *natural,
                             int            *minimum_baseline,
                             int            *natural_baseline)
{
  EspalierImageGrid *self = ESPALIER_IMAGE_GRID (widget);
  guint n = self->images->len;
  int tile_w, tile_h, cell_w, cell_h;

  if (n == 0)
    {
      *minimum = *natural = 0;
      return;
    }
  cell_size (self, &tile_w, &tile_h, &cell_w, &cell_h);
  if (orientation == GTK_ORIENTATION_HORIZONTAL)
    {
      *minimum = cell_w - GAP;
      *natural = (int) MIN (n, 8) * cell_w - GAP;
    }
  else
    {
      guint cols = for_size >= 0 ? columns_for_width (self, for_size) : MIN (n, 8);
      guint rows = (n + cols - 1) / cols;

      *minimum = *natural = (int) rows * cell_h - GAP;
    }
}

static void
espalier_image_grid_snapshot (GtkWidget   *widget,
                              GtkSnapshot *snapshot)
{
  EspalierImageGrid *self = ESPALIER_IMAGE_GRID (widget);
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  int tile_w, tile_h, cell_w, cell_h, x0;
  guint n = self->images->len, cols;
  double scale = tile_scale (self);
  cairo_t *cr;
  GdkRGBA color;

  if (n == 0 || width <= 0 || height <= 0)
    return;
  cell_size (self, &tile_w, &tile_h, &cell_w, &cell_h);
  cols = columns_for_width (self, width);
  x0 = MAX (0, (width - ((int) cols * cell_w - GAP)) / 2);

  cr = gtk_snapshot_append_cairo (snapshot, &GRAPHENE_RECT_INIT (0, 0, width, height));
  for (guint i = 0; i < n; i++)
    {
      cairo_surface_t *image = g_ptr_array_index (self->images, i);
      int x = x0 + (int) (i % cols) * cell_w + (cell_w - GAP - tile_w) / 2;
      int y = (int) (i / cols) * cell_h;

      cairo_save (cr);
      cairo_translate (cr, x, y);
      cairo_rectangle (cr, 0, 0, tile_w, tile_h);
      cairo_clip (cr);
      cairo_scale (cr, scale, scale);
      cairo_set_source_surface (cr, image, 0, 0);
      cairo_pattern_set_filter (cairo_get_source (cr),
                                scale >= 1 ? CAIRO_FILTER_NEAREST : CAIRO_FILTER_GOOD);
      cairo_paint (cr);
      cairo_restore (cr);
    }
  cairo_destroy (cr);

  G_GNUC_BEGIN_IGNORE_DEPRECATIONS
  gtk_style_context_get_color (gtk_widget_get_style_context (widget), &color);
  G_GNUC_END_IGNORE_DEPRECATIONS
  color.alpha *= 0.75f;
  for (guint i = 0; i < n; i++)
    {
      const char *label = g_ptr_array_index (self->labels, i);
      g_autoptr(PangoLayout) layout = NULL;
      int x = x0 + (int) (i % cols) * cell_w;
      int y = (int) (i / cols) * cell_h + tile_h + 2;

      if (label == NULL)
        continue;
      layout = espalier_text_layout_new (widget, label, 0.8, PANGO_WEIGHT_NORMAL, FALSE);
      pango_layout_set_width (layout, (cell_w - GAP) * PANGO_SCALE);
      pango_layout_set_ellipsize (layout, PANGO_ELLIPSIZE_END);
      pango_layout_set_alignment (layout, PANGO_ALIGN_CENTER);
      gtk_snapshot_save (snapshot);
      gtk_snapshot_translate (snapshot, &GRAPHENE_POINT_INIT (x, y));
      gtk_snapshot_append_layout (snapshot, layout, &color);
      gtk_snapshot_restore (snapshot);
    }
}

/* Row i of dataset as an RGB24 surface: one channel as grey, three as RGB (others:
 * the first channel). Floats are stretched from their min..max to 0..255. */
static cairo_surface_t *
image_surface (EspalierDataset *dataset,
               guint            i)
{
  const guint *dims = espalier_dataset_get_dims (dataset); /* (C, H, W) */
  guint C = dims[0], H = dims[1], W = dims[2];
  gsize F = espalier_dataset_get_row_size (dataset), plane = (gsize) H * W;
  const guint8 *u8 = espalier_dataset_is_u8 (dataset) ? espalier_dataset_get_u8 (dataset) + i * F : NULL;
  const float *f32 = u8 == NULL ? espalier_dataset_get_f32 (dataset) + i * F : NULL;
  cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_RGB24, (int) W, (int) H);
  int stride = cairo_image_surface_get_stride (surface);
  guint8 *data;
  float lo = 0, hi = 1;

  if (f32 != NULL)
    {
      lo = INFINITY;
      hi = -INFINITY;
      for (gsize j = 0; j < F; j++)
        if (isfinite (f32[j]))
          {
            lo = MIN (lo, f32[j]);
            hi = MAX (hi, f32[j]);
          }
      if (!(hi > lo))
        {
          lo = isfinite (lo) ? lo : 0;
          hi = lo + 1;
        }
    }

  cairo_surface_flush (surface);
  data = cairo_image_surface_get_data (surface);
  for (guint y = 0; y < H; y++)
    {
      guint32 *out = (guint32 *) (data + (gsize) y * stride);

      for (guint x = 0; x < W; x++)
        {
          guint8 rgb[3];

          for (guint c = 0; c < 3; c++)
            {
              gsize at = (C >= 3 ? c * plane : 0) + (gsize) y * W + x;

              if (u8 != NULL)
                rgb[c] = u8[at];
              else
                {
                  float v = isfinite (f32[at]) ? (f32[at] - lo) / (hi - lo) : 0;

                  rgb[c] = (guint8) CLAMP (lrintf (v * 255), 0, 255);
                }
            }
          out[x] = ((guint32) rgb[0] << 16) | ((guint32) rgb[1] << 8) | rgb[2];
        }
    }
  cairo_surface_mark_dirty (surface);
  return surface;
}

static void
espalier_image_grid_finalize (GObject *object)
{
  EspalierImageGrid *self = ESPALIER_IMAGE_GRID (object);

  g_ptr_array_unref (self->images);
  g_ptr_array_unref (self->labels);
  G_OBJECT_CLASS (espalier_image_grid_parent_class)->finalize (object);
}

static void
espalier_image_grid_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierImageGrid *self = ESPALIER_IMAGE_GRID (object);

  switch (prop_id)
    {
    case PROP_MAX_IMAGES:
      g_value_set_uint (value, self->max_images);
      break;
    case PROP_TILE_SIZE:
      g_value_set_uint (value, self->tile_size);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_image_grid_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierImageGrid *self = ESPALIER_IMAGE_GRID (object);

  switch (prop_id)
    {
    case PROP_MAX_IMAGES:
      espalier_image_grid_set_max_images (self, g_value_get_uint (value));
      break;
    case PROP_TILE_SIZE:
      espalier_image_grid_set_tile_size (self, g_value_get_uint (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_image_grid_class_init (EspalierImageGridClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->finalize = espalier_image_grid_finalize;
  object_class->get_property = espalier_image_grid_get_property;
  object_class->set_property = espalier_image_grid_set_property;

  widget_class->get_request_mode = espalier_image_grid_get_request_mode;
  widget_class->measure = espalier_image_grid_measure;
  widget_class->snapshot = espalier_image_grid_snapshot;

  properties[PROP_MAX_IMAGES] =
    g_param_spec_uint ("max-images", NULL, NULL, 1, 1024, 64,
                       G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_TILE_SIZE] =
    g_param_spec_uint ("tile-size", NULL, NULL, 8, 512, 84,
                       G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_set_css_name (widget_class, "imagegrid");
  gtk_widget_class_set_accessible_role (widget_class, GTK_ACCESSIBLE_ROLE_IMG);
}

static void
espalier_image_grid_init (EspalierImageGrid *self)
{
  self->images = g_ptr_array_new_with_free_func ((GDestroyNotify) cairo_surface_destroy);
  self->labels = g_ptr_array_new_with_free_func (g_free);
  self->max_images = 64;
  self->tile_size = 84;
}

void
espalier_image_grid_set_dataset (EspalierImageGrid *self,
                                 EspalierDataset   *dataset)
{
  guint n = 0;

  g_return_if_fail (ESPALIER_IS_IMAGE_GRID (self));
  g_return_if_fail (dataset == NULL || ESPALIER_IS_DATASET (dataset));

  g_ptr_array_set_size (self->images, 0);
  g_ptr_array_set_size (self->labels, 0);
  self->width = self->height = 0;

  if (dataset != NULL && espalier_dataset_get_rank (dataset) == 3
      && (espalier_dataset_get_u8 (dataset) != NULL || espalier_dataset_get_f32 (dataset) != NULL))
    {
      const guint *dims = espalier_dataset_get_dims (dataset);
      const gint32 *labels = espalier_dataset_get_labels (dataset);

      n = MIN (espalier_dataset_get_n_rows (dataset), self->max_images);
      self->height = dims[1];
      self->width = dims[2];
      for (guint i = 0; i < n; i++)
        {
          g_ptr_array_add (self->images, image_surface (dataset, i));
          g_ptr_array_add (self->labels,
                           labels != NULL
                           ? g_strdup (espalier_dataset_get_class_name (dataset, (guint) labels[i]))
                           : NULL);
        }
    }

  gtk_accessible_update_property (GTK_ACCESSIBLE (self),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  dataset != NULL ? espalier_dataset_get_name (dataset) : "",
                                  -1);
  gtk_widget_queue_resize (GTK_WIDGET (self));
}

guint
espalier_image_grid_get_n_images (EspalierImageGrid *self)
{
  g_return_val_if_fail (ESPALIER_IS_IMAGE_GRID (self), 0);
  return self->images->len;
}

const char *
espalier_image_grid_get_label (EspalierImageGrid *self,
                               guint              i)
{
  g_return_val_if_fail (ESPALIER_IS_IMAGE_GRID (self), NULL);
  g_return_val_if_fail (i < self->labels->len, NULL);
  return g_ptr_array_index (self->labels, i);
}

void
espalier_image_grid_set_max_images (EspalierImageGrid *self,
                                    guint              max_images)
{
  g_return_if_fail (ESPALIER_IS_IMAGE_GRID (self));
  g_return_if_fail (max_images > 0);

  if (self->max_images == max_images)
    return;
  self->max_images = max_images;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_MAX_IMAGES]);
}

void
espalier_image_grid_set_tile_size (EspalierImageGrid *self,
                                   guint              tile_size)
{
  g_return_if_fail (ESPALIER_IS_IMAGE_GRID (self));
  g_return_if_fail (tile_size > 0);

  if (self->tile_size == tile_size)
    return;
  self->tile_size = tile_size;
  gtk_widget_queue_resize (GTK_WIDGET (self));
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TILE_SIZE]);
}
