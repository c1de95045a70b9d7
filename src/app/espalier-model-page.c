/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-page.c: the Model page: the palette (drag a kind onto the canvas, or
 * double-click / Enter to append it), the canvas, the properties panel, the templates
 * menu and undo/redo. It wires these to the project's EspalierModelDoc; drawing and
 * pointer editing are the canvas's, field editing the panel's. */
#include "config.h"

#include <glib/gi18n.h>

#include "espalier-job.h"
#include "espalier-layer-editor.h"
#include "espalier-model-canvas.h"
#include "espalier-model-page.h"

struct _EspalierModelPage
{
  AdwBin               parent_instance;

  EspalierProject     *project;
  EspalierModelDoc    *doc;

  GtkListBox          *palette;
  GtkMenuButton       *templates_button;
  GtkButton           *undo_button;
  GtkButton           *redo_button;
  GtkLabel            *status_label;
  GtkScrolledWindow   *canvas_window;
  EspalierModelCanvas *canvas;
  EspalierLayerEditor *editor;
};

G_DEFINE_FINAL_TYPE (EspalierModelPage, espalier_model_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* The palette, in groups. */
static const struct {
  EsLayerKind  kind;
  const char  *hint;
  const char  *group;   /* set on a group's first kind */
} palette_items[] = {
  { ES_LAYER_DENSE,      N_("Fully connected"),       N_("Weights") },
  { ES_LAYER_CONV2D,     N_("2-D convolution"),       NULL },
  { ES_LAYER_MAXPOOL2D,  N_("Largest in each window"), N_("Pooling and shape") },
  { ES_LAYER_AVGPOOL2D,  N_("Mean of each window"),   NULL },
  { ES_LAYER_FLATTEN,    N_("Image to features"),     NULL },
  { ES_LAYER_RELU,       N_("max(0, x)"),             N_("Activations") },
  { ES_LAYER_LEAKY_RELU, N_("Small slope below zero"), NULL },
  { ES_LAYER_SIGMOID,    N_("Squashes to (0, 1)"),    NULL },
  { ES_LAYER_TANH,       N_("Squashes to (−1, 1)"),   NULL },
  { ES_LAYER_SOFTMAX,    N_("Class probabilities"),   NULL },
  { ES_LAYER_DROPOUT,    N_("Zeroes at random"),      N_("Regularization") },
  { ES_LAYER_BATCHNORM,  N_("Normalizes channels"),   NULL },
};

GtkWidget *
espalier_model_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_MODEL_PAGE, NULL);
}

static void
update_undo (EspalierModelPage *self)
{
  gboolean can_undo = self->doc && espalier_model_doc_can_undo (self->doc);
  gboolean can_redo = self->doc && espalier_model_doc_can_redo (self->doc);
  g_autofree char *undo_label = NULL;
  g_autofree char *redo_label = NULL;
  g_autofree char *undo_tip = NULL;
  g_autofree char *redo_tip = NULL;

  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.undo", can_undo);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.redo", can_redo);
  if (self->doc != NULL)
    g_object_get (self->doc, "undo-label", &undo_label, "redo-label", &redo_label, NULL);
  undo_tip = undo_label ? g_strdup_printf (_("Undo “%s”"), undo_label) : g_strdup (_("Undo"));
  redo_tip = redo_label ? g_strdup_printf (_("Redo “%s”"), redo_label) : g_strdup (_("Redo"));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->undo_button), undo_tip);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->redo_button), redo_tip);
}

static void
update_status (EspalierModelPage *self)
{
  const char *error;

  if (self->doc == NULL)
    {
      gtk_label_set_text (self->status_label, "");
      return;
    }
  error = espalier_model_doc_get_error (self->doc);
  if (error != NULL)
    {
      gtk_label_set_text (self->status_label, error);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->status_label), error);
      gtk_widget_add_css_class (GTK_WIDGET (self->status_label), "error");
      gtk_widget_remove_css_class (GTK_WIDGET (self->status_label), "success");
    }
  else
    {
      guint n = espalier_model_doc_get_n_layers (self->doc);
      g_autofree char *text = g_strdup_printf (ngettext ("%u layer · ready to train",
                                                         "%u layers · ready to train", n), n);

      gtk_label_set_text (self->status_label, text);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->status_label), NULL);
      gtk_widget_remove_css_class (GTK_WIDGET (self->status_label), "error");
      gtk_widget_add_css_class (GTK_WIDGET (self->status_label), "success");
    }
}

static void
set_doc (EspalierModelPage *self,
         EspalierModelDoc  *doc);

/* Callbacks. */

static void
on_doc_notify (EspalierModelDoc  *doc,
               GParamSpec        *pspec,
               EspalierModelPage *self)
{
  update_undo (self);
}

static void
on_doc_changed (EspalierModelDoc  *doc,
                EspalierModelPage *self)
{
  update_status (self);
  update_undo (self);
}

static void
on_canvas_selected (EspalierModelCanvas *canvas,
                    GParamSpec          *pspec,
                    EspalierModelPage   *self)
{
  int selected = espalier_model_canvas_get_selected (canvas);

  espalier_layer_editor_set_index (self->editor, selected);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.remove-layer", selected >= 0);
}

static void
on_palette_row_activated (GtkListBox        *box,
                          GtkListBoxRow     *row,
                          EspalierModelPage *self)
{
  int kind = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (row), "espalier-kind")) - 1;

  if (kind >= 0)
    espalier_model_page_append_layer (self, kind);
}

static GdkContentProvider *
on_palette_prepare (GtkDragSource *source,
                    double         x,
                    double         y,
                    GtkWidget     *row)
{
  int kind = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (row), "espalier-kind")) - 1;

  if (kind < 0)
    return NULL;
  return gdk_content_provider_new_typed (G_TYPE_STRING, es_layer_kind_name (kind));
}

static void
on_palette_drag_begin (GtkDragSource *source,
                       GdkDrag       *drag,
                       GtkWidget     *row)
{
  g_autoptr(GdkPaintable) icon = gtk_widget_paintable_new (row);

  gtk_drag_source_set_icon (source, icon, 12, 12);
}

static void
draw_kind_dot (GtkDrawingArea *area,
               cairo_t        *cr,
               int             width,
               int             height,
               gpointer        data)
{
  GdkRGBA color;

  espalier_layer_kind_color (GTK_WIDGET (area), GPOINTER_TO_INT (data), &color);
  gdk_cairo_set_source_rgba (cr, &color);
  cairo_arc (cr, width / 2.0, height / 2.0, MIN (width, height) / 2.0, 0, 2 * G_PI);
  cairo_fill (cr);
}

static void
palette_header (GtkListBoxRow *row,
                GtkListBoxRow *before,
                gpointer       data)
{
  const char *group = g_object_get_data (G_OBJECT (row), "espalier-group");
  GtkWidget *label;

  if (group == NULL)
    {
      gtk_list_box_row_set_header (row, NULL);
      return;
    }
  label = gtk_label_new (_(group));
  gtk_label_set_xalign (GTK_LABEL (label), 0);
  gtk_widget_set_margin_start (label, 12);
  gtk_widget_set_margin_top (label, before ? 18 : 6);
  gtk_widget_set_margin_bottom (label, 6);
  gtk_widget_add_css_class (label, "heading");
  gtk_widget_add_css_class (label, "dim-label");
  gtk_list_box_row_set_header (row, label);
}

static GtkWidget *
palette_row_new (EsLayerKind  kind,
                 const char  *hint,
                 const char  *group)
{
  GtkWidget *row = gtk_list_box_row_new ();
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 10);
  GtkWidget *text = gtk_box_new (GTK_ORIENTATION_VERTICAL, 0);
  GtkWidget *dot = gtk_drawing_area_new ();
  GtkWidget *title = gtk_label_new (es_layer_kind_title (kind));
  GtkWidget *sub = gtk_label_new (_(hint));
  GtkDragSource *source = gtk_drag_source_new ();
  g_autofree char *tip = g_strdup_printf (_("Drag onto the model, or double-click to append a %s layer"),
                                          es_layer_kind_title (kind));

  gtk_drawing_area_set_content_width (GTK_DRAWING_AREA (dot), 10);
  gtk_drawing_area_set_content_height (GTK_DRAWING_AREA (dot), 10);
  gtk_drawing_area_set_draw_func (GTK_DRAWING_AREA (dot), draw_kind_dot, GINT_TO_POINTER (kind), NULL);
  gtk_widget_set_valign (dot, GTK_ALIGN_CENTER);
  gtk_label_set_xalign (GTK_LABEL (title), 0);
  gtk_label_set_xalign (GTK_LABEL (sub), 0);
  gtk_label_set_ellipsize (GTK_LABEL (sub), PANGO_ELLIPSIZE_END);
  gtk_widget_add_css_class (sub, "caption");
  gtk_widget_add_css_class (sub, "dim-label");
  gtk_box_append (GTK_BOX (text), title);
  gtk_box_append (GTK_BOX (text), sub);
  gtk_box_append (GTK_BOX (box), dot);
  gtk_box_append (GTK_BOX (box), text);
  gtk_widget_set_margin_top (box, 4);
  gtk_widget_set_margin_bottom (box, 4);
  gtk_widget_set_margin_start (box, 4);
  gtk_list_box_row_set_child (GTK_LIST_BOX_ROW (row), box);
  gtk_widget_set_tooltip_text (row, tip);
  gtk_accessible_update_property (GTK_ACCESSIBLE (row), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  es_layer_kind_title (kind), -1);

  g_object_set_data (G_OBJECT (row), "espalier-kind", GINT_TO_POINTER (kind + 1));
  g_object_set_data (G_OBJECT (row), "espalier-group", (gpointer) group);
  gtk_drag_source_set_actions (source, GDK_ACTION_COPY);
  g_signal_connect (source, "prepare", G_CALLBACK (on_palette_prepare), row);
  g_signal_connect (source, "drag-begin", G_CALLBACK (on_palette_drag_begin), row);
  gtk_widget_add_controller (row, GTK_EVENT_CONTROLLER (source));
  return row;
}

/* Actions. */

static void
action_undo (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  espalier_model_page_undo (ESPALIER_MODEL_PAGE (widget));
}

static void
action_redo (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  espalier_model_page_redo (ESPALIER_MODEL_PAGE (widget));
}

static void
action_template (GtkWidget  *widget,
                 const char *action_name,
                 GVariant   *parameter)
{
  espalier_model_page_apply_template (ESPALIER_MODEL_PAGE (widget), g_variant_get_string (parameter, NULL));
}

static void
action_append_layer (GtkWidget  *widget,
                     const char *action_name,
                     GVariant   *parameter)
{
  EsLayerKind kind;

  if (es_layer_kind_from_name (g_variant_get_string (parameter, NULL), &kind))
    espalier_model_page_append_layer (ESPALIER_MODEL_PAGE (widget), kind);
  else
    g_warning ("model.append-layer: unknown layer kind “%s”", g_variant_get_string (parameter, NULL));
}

static void
action_remove_layer (GtkWidget  *widget,
                     const char *action_name,
                     GVariant   *parameter)
{
  EspalierModelPage *self = ESPALIER_MODEL_PAGE (widget);

  gtk_widget_activate_action (GTK_WIDGET (self->canvas), "canvas.delete", NULL);
}

static void
espalier_model_page_dispose (GObject *object)
{
  EspalierModelPage *self = ESPALIER_MODEL_PAGE (object);

  set_doc (self, NULL);
  g_clear_object (&self->project);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_MODEL_PAGE);
  G_OBJECT_CLASS (espalier_model_page_parent_class)->dispose (object);
}

static void
espalier_model_page_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierModelPage *self = ESPALIER_MODEL_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      g_value_set_object (value, self->project);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_model_page_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierModelPage *self = ESPALIER_MODEL_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_model_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_model_page_class_init (EspalierModelPageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_model_page_dispose;
  object_class->get_property = espalier_model_page_get_property;
  object_class->set_property = espalier_model_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  g_type_ensure (ESPALIER_TYPE_MODEL_CANVAS);
  g_type_ensure (ESPALIER_TYPE_LAYER_EDITOR);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-model-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, palette);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, templates_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, undo_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, redo_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, status_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, canvas_window);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, canvas);
  gtk_widget_class_bind_template_child (widget_class, EspalierModelPage, editor);
  gtk_widget_class_bind_template_callback (widget_class, on_palette_row_activated);
  gtk_widget_class_bind_template_callback (widget_class, on_canvas_selected);

  gtk_widget_class_install_action (widget_class, "model.undo", NULL, action_undo);
  gtk_widget_class_install_action (widget_class, "model.redo", NULL, action_redo);
  gtk_widget_class_install_action (widget_class, "model.template", "s", action_template);
  gtk_widget_class_install_action (widget_class, "model.append-layer", "s", action_append_layer);
  gtk_widget_class_install_action (widget_class, "model.remove-layer", NULL, action_remove_layer);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_z, GDK_CONTROL_MASK, "model.undo", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_z, GDK_CONTROL_MASK | GDK_SHIFT_MASK,
                                       "model.redo", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Z, GDK_CONTROL_MASK | GDK_SHIFT_MASK,
                                       "model.redo", NULL);
}

static void
espalier_model_page_init (EspalierModelPage *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));

  for (guint i = 0; i < G_N_ELEMENTS (palette_items); i++)
    gtk_list_box_append (self->palette, palette_row_new (palette_items[i].kind, palette_items[i].hint,
                                                         palette_items[i].group));
  gtk_list_box_set_header_func (self->palette, palette_header, NULL, NULL);

  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.remove-layer", FALSE);
  set_doc (self, NULL);
}

static void
set_doc (EspalierModelPage *self,
         EspalierModelDoc  *doc)
{
  if (self->doc != doc)
    {
      if (self->doc != NULL)
        g_signal_handlers_disconnect_by_data (self->doc, self);
      g_set_object (&self->doc, doc);
      if (doc != NULL)
        {
          g_signal_connect (doc, "changed", G_CALLBACK (on_doc_changed), self);
          g_signal_connect (doc, "notify::can-undo", G_CALLBACK (on_doc_notify), self);
          g_signal_connect (doc, "notify::can-redo", G_CALLBACK (on_doc_notify), self);
          g_signal_connect (doc, "notify::undo-label", G_CALLBACK (on_doc_notify), self);
          g_signal_connect (doc, "notify::redo-label", G_CALLBACK (on_doc_notify), self);
        }
    }
  /* The template's children are gone during dispose. */
  if (self->canvas == NULL)
    return;
  espalier_model_canvas_set_doc (self->canvas, doc);
  espalier_layer_editor_set_doc (self->editor, doc);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.template", doc != NULL);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "model.append-layer", doc != NULL);
  gtk_widget_set_sensitive (GTK_WIDGET (self->palette), doc != NULL);
  update_undo (self);
  update_status (self);
}

EspalierProject *
espalier_model_page_get_project (EspalierModelPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_PAGE (self), NULL);
  return self->project;
}

void
espalier_model_page_set_project (EspalierModelPage *self,
                                 EspalierProject   *project)
{
  g_return_if_fail (ESPALIER_IS_MODEL_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (!g_set_object (&self->project, project))
    return;
  set_doc (self, project ? espalier_project_get_model_doc (project) : NULL);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}

void
espalier_model_page_undo (EspalierModelPage *self)
{
  g_return_if_fail (ESPALIER_IS_MODEL_PAGE (self));

  if (self->doc != NULL)
    espalier_model_doc_undo (self->doc);
}

void
espalier_model_page_redo (EspalierModelPage *self)
{
  g_return_if_fail (ESPALIER_IS_MODEL_PAGE (self));

  if (self->doc != NULL)
    espalier_model_doc_redo (self->doc);
}

void
espalier_model_page_append_layer (EspalierModelPage *self,
                                  EsLayerKind        kind)
{
  EsLayerSpec spec;
  guint n;

  g_return_if_fail (ESPALIER_IS_MODEL_PAGE (self));
  g_return_if_fail ((unsigned) kind < ES_LAYER_N_KINDS);

  if (self->doc == NULL)
    return;
  spec = es_layer_spec_default (kind);
  n = espalier_model_doc_get_n_layers (self->doc);
  espalier_model_doc_insert (self->doc, n, &spec);
  espalier_model_canvas_select (self->canvas, n);
}

gboolean
espalier_model_page_apply_template (EspalierModelPage *self,
                                    const char        *name)
{
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;

  g_return_val_if_fail (ESPALIER_IS_MODEL_PAGE (self), FALSE);
  g_return_val_if_fail (name != NULL, FALSE);

  if (self->doc == NULL)
    return FALSE;
  if (!espalier_model_doc_apply_template (self->doc, name, &opts, &error))
    {
      espalier_show_toast (GTK_WIDGET (self), error->message);
      return FALSE;
    }
  if (self->project != NULL)
    {
      const EspalierTrainOptions *old = espalier_project_get_train_options (self->project);

      /* The template's optimizer, schedule and epochs; this machine's settings stay. */
      if (old != NULL)
        {
          opts.threads = old->threads;
          opts.memory_limit = old->memory_limit;
        }
      espalier_project_set_train_options (self->project, &opts);
    }
  espalier_model_canvas_select (self->canvas, -1);
  return TRUE;
}

GtkWidget *
espalier_model_page_get_canvas (EspalierModelPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_PAGE (self), NULL);
  return GTK_WIDGET (self->canvas);
}

GtkWidget *
espalier_model_page_get_editor (EspalierModelPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_PAGE (self), NULL);
  return GTK_WIDGET (self->editor);
}
