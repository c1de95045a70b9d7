/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-layer-editor.c: the properties panel of the Model page. It shows one layer
 * of the document and writes every change back with espalier_model_doc_set_layer; it
 * keeps no copy of the spec, it re-reads the document after each "changed". */
#include "config.h"

#include <glib/gi18n.h>

#include "espalier-layer-editor.h"
#include "espalier-model-canvas.h"
#include "espalier-ui-util.h"

/* The settings a layer spec has; each has a row and a spin button in the template. */
typedef enum {
  FIELD_UNITS,
  FIELD_FILTERS,
  FIELD_KERNEL,
  FIELD_STRIDE,
  FIELD_PADDING,
  FIELD_ALPHA,
  FIELD_RATE,
  FIELD_MOMENTUM,
  FIELD_EPS,
  N_FIELDS
} Field;

struct _EspalierLayerEditor
{
  AdwBin               parent_instance;

  EspalierModelDoc    *doc;
  int                  index;
  gboolean             updating;   /* writing the document's values into the widgets */

  GtkStack            *stack;
  AdwPreferencesGroup *layer_group;
  AdwComboRow         *kind_row;
  AdwPreferencesGroup *settings_group;
  AdwActionRow        *units_row;
  GtkSpinButton       *units_spin;
  AdwActionRow        *filters_row;
  GtkSpinButton       *filters_spin;
  AdwActionRow        *kernel_row;
  GtkSpinButton       *kernel_spin;
  AdwActionRow        *stride_row;
  GtkSpinButton       *stride_spin;
  AdwActionRow        *padding_row;
  GtkSpinButton       *padding_spin;
  AdwActionRow        *alpha_row;
  GtkSpinButton       *alpha_spin;
  AdwActionRow        *rate_row;
  GtkSpinButton       *rate_spin;
  AdwActionRow        *momentum_row;
  GtkSpinButton       *momentum_spin;
  AdwActionRow        *eps_row;
  GtkSpinButton       *eps_spin;
  AdwActionRow        *no_settings_row;
  GtkLabel            *input_label;
  GtkLabel            *output_label;
  GtkLabel            *params_label;
  GtkLabel            *flops_label;
  GtkLabel            *error_label;
};

G_DEFINE_FINAL_TYPE (EspalierLayerEditor, espalier_layer_editor, ADW_TYPE_BIN)

enum { PROP_0, PROP_DOC, PROP_INDEX, N_PROPS };
static GParamSpec *properties[N_PROPS];

static const struct {
  const char *name;
  glong       row;       /* offsets into EspalierLayerEditor */
  glong       spin;
} fields[N_FIELDS] = {
#define FIELD_OFFSETS(f) #f, G_STRUCT_OFFSET (EspalierLayerEditor, f##_row), G_STRUCT_OFFSET (EspalierLayerEditor, f##_spin)
  [FIELD_UNITS]    = { FIELD_OFFSETS (units) },
  [FIELD_FILTERS]  = { FIELD_OFFSETS (filters) },
  [FIELD_KERNEL]   = { FIELD_OFFSETS (kernel) },
  [FIELD_STRIDE]   = { FIELD_OFFSETS (stride) },
  [FIELD_PADDING]  = { FIELD_OFFSETS (padding) },
  [FIELD_ALPHA]    = { FIELD_OFFSETS (alpha) },
  [FIELD_RATE]     = { FIELD_OFFSETS (rate) },
  [FIELD_MOMENTUM] = { FIELD_OFFSETS (momentum) },
  [FIELD_EPS]      = { FIELD_OFFSETS (eps) },
#undef FIELD_OFFSETS
};

#define FIELD_ROW(self, f)  G_STRUCT_MEMBER (GtkWidget *, self, fields[f].row)
#define FIELD_SPIN(self, f) G_STRUCT_MEMBER (GtkSpinButton *, self, fields[f].spin)

GtkWidget *
espalier_layer_editor_new (void)
{
  return g_object_new (ESPALIER_TYPE_LAYER_EDITOR, NULL);
}

static gboolean
field_used (EsLayerKind kind,
            Field       f)
{
  switch (kind)
    {
    case ES_LAYER_DENSE:
      return f == FIELD_UNITS;
    case ES_LAYER_CONV2D:
      return f == FIELD_FILTERS || f == FIELD_KERNEL || f == FIELD_STRIDE || f == FIELD_PADDING;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      return f == FIELD_KERNEL || f == FIELD_STRIDE;
    case ES_LAYER_LEAKY_RELU:
      return f == FIELD_ALPHA;
    case ES_LAYER_DROPOUT:
      return f == FIELD_RATE;
    case ES_LAYER_BATCHNORM:
      return f == FIELD_MOMENTUM || f == FIELD_EPS;
    default:
      return FALSE;
    }
}

static double
spec_get (const EsLayerSpec *spec,
          Field              f)
{
  switch (f)
    {
    case FIELD_UNITS: return spec->units;
    case FIELD_FILTERS: return spec->filters;
    case FIELD_KERNEL: return spec->kernel;
    /* A pool's stride of 0 means "the kernel". */
    case FIELD_STRIDE: return spec->stride > 0 ? spec->stride : MAX (spec->kernel, 1);
    case FIELD_PADDING: return spec->padding;
    case FIELD_ALPHA: return spec->alpha;
    case FIELD_RATE: return spec->rate;
    case FIELD_MOMENTUM: return spec->momentum;
    case FIELD_EPS: return spec->eps;
    case N_FIELDS: default: return 0;
    }
}

/* Returns FALSE when v is what the spec already has. */
static gboolean
spec_set (EsLayerSpec *spec,
          Field        f,
          double       v)
{
  int *ip = NULL;
  float *fp = NULL;

  switch (f)
    {
    case FIELD_UNITS: ip = &spec->units; break;
    case FIELD_FILTERS: ip = &spec->filters; break;
    case FIELD_KERNEL: ip = &spec->kernel; break;
    case FIELD_STRIDE: ip = &spec->stride; break;
    case FIELD_PADDING: ip = &spec->padding; break;
    case FIELD_ALPHA: fp = &spec->alpha; break;
    case FIELD_RATE: fp = &spec->rate; break;
    case FIELD_MOMENTUM: fp = &spec->momentum; break;
    case FIELD_EPS: fp = &spec->eps; break;
    case N_FIELDS: default: return FALSE;
    }
  if (ip != NULL)
    {
      int iv = (int) (v + 0.5);

      if (*ip == iv)
        return FALSE;
      *ip = iv;
    }
  else
    {
      if (*fp == (float) v)
        return FALSE;
      *fp = (float) v;
    }
  return TRUE;
}

static void
set_shape_label (GtkLabel      *label,
                 const EsShape *shape)
{
  char buf[64];

  gtk_label_set_text (label, shape ? es_shape_format (shape, buf, sizeof buf) : "—");
}

static void
refresh (EspalierLayerEditor *self)
{
  const EsLayerSpec *spec;
  const EsLayerInfo *info;
  const EsShape *in = NULL;
  const char *error;
  g_autofree char *title = NULL;
  g_autofree char *heading = NULL;
  gboolean any = FALSE;
  guint n = self->doc ? espalier_model_doc_get_n_layers (self->doc) : 0;
  int first_error;

  if (self->index < 0 || (guint) self->index >= n)
    {
      gtk_stack_set_visible_child_name (self->stack, "empty");
      return;
    }
  gtk_stack_set_visible_child_name (self->stack, "layer");
  spec = espalier_model_doc_get_layer (self->doc, self->index);
  info = espalier_model_doc_get_layer_info (self->doc, self->index);
  error = espalier_model_doc_get_layer_error (self->doc, self->index);
  first_error = espalier_model_doc_get_first_error (self->doc);

  self->updating = TRUE;

  heading = g_strdup_printf (_("Layer %d"), self->index + 1);
  title = espalier_layer_spec_title (spec);
  adw_preferences_group_set_title (self->layer_group, heading);
  adw_preferences_group_set_description (self->layer_group, title);
  adw_combo_row_set_selected (self->kind_row, spec->kind);

  for (Field f = 0; f < N_FIELDS; f++)
    {
      gboolean used = field_used (spec->kind, f);

      gtk_widget_set_visible (FIELD_ROW (self, f), used);
      if (used)
        gtk_spin_button_set_value (FIELD_SPIN (self, f), spec_get (spec, f));
      any |= used;
    }
  gtk_widget_set_visible (GTK_WIDGET (self->no_settings_row), !any);

  if (self->index == 0)
    in = espalier_model_doc_get_input (self->doc);
  else if (espalier_model_doc_get_layer_info (self->doc, self->index - 1) != NULL)
    in = &espalier_model_doc_get_layer_info (self->doc, self->index - 1)->out;
  set_shape_label (self->input_label, in);
  set_shape_label (self->output_label, info ? &info->out : NULL);
  if (info != NULL)
    {
      g_autofree char *params = espalier_format_count (info->n_params);
      g_autofree char *flops = espalier_format_flops (info->flops);

      gtk_label_set_text (self->params_label, params);
      gtk_label_set_text (self->flops_label, flops);
    }
  else
    {
      gtk_label_set_text (self->params_label, "—");
      gtk_label_set_text (self->flops_label, "—");
    }

  if (error != NULL)
    gtk_label_set_text (self->error_label, error);
  else if (first_error >= 0 && self->index > first_error)
    gtk_label_set_text (self->error_label, _("A layer above this one is invalid: fix it first."));
  gtk_widget_set_visible (GTK_WIDGET (self->error_label),
                          error != NULL || (first_error >= 0 && self->index > first_error));

  self->updating = FALSE;
}

static void
write_spec (EspalierLayerEditor *self,
            const EsLayerSpec   *spec)
{
  espalier_model_doc_set_layer (self->doc, self->index, spec);
}

/* Callbacks. */

static void
on_doc_changed (EspalierModelDoc    *doc,
                EspalierLayerEditor *self)
{
  refresh (self);
}

static void
on_spin_value_changed (GtkSpinButton       *spin,
                       EspalierLayerEditor *self)
{
  Field f = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (spin), "espalier-field")) - 1;
  EsLayerSpec spec;

  if (self->updating || self->doc == NULL || self->index < 0
      || (guint) self->index >= espalier_model_doc_get_n_layers (self->doc))
    return;
  spec = *espalier_model_doc_get_layer (self->doc, self->index);
  if (spec_set (&spec, f, gtk_spin_button_get_value (spin)))
    write_spec (self, &spec);
}

static void
on_kind_selected (AdwComboRow         *row,
                  GParamSpec          *pspec,
                  EspalierLayerEditor *self)
{
  guint kind = adw_combo_row_get_selected (row);
  const EsLayerSpec *old;
  EsLayerSpec spec;

  if (self->updating || self->doc == NULL || self->index < 0
      || (guint) self->index >= espalier_model_doc_get_n_layers (self->doc)
      || kind >= ES_LAYER_N_KINDS)
    return;
  old = espalier_model_doc_get_layer (self->doc, self->index);
  if (old->kind == (EsLayerKind) kind)
    return;
  /* A new kind starts from its defaults, keeping the window of a conv or pool. */
  spec = es_layer_spec_default (kind);
  if (field_used (old->kind, FIELD_KERNEL) && field_used (kind, FIELD_KERNEL))
    {
      spec.kernel = old->kernel;
      spec.stride = old->stride;
    }
  write_spec (self, &spec);
}

/* The epsilon is small: show it as 1e-05, not 0.00001000. */
static gboolean
on_eps_output (GtkSpinButton *spin,
               gpointer       data)
{
  char buf[32];

  g_snprintf (buf, sizeof buf, "%g", gtk_adjustment_get_value (gtk_spin_button_get_adjustment (spin)));
  if (!g_str_equal (buf, gtk_editable_get_text (GTK_EDITABLE (spin))))
    gtk_editable_set_text (GTK_EDITABLE (spin), buf);
  return TRUE;
}

static int
on_eps_input (GtkSpinButton *spin,
              double        *value,
              gpointer       data)
{
  const char *text = gtk_editable_get_text (GTK_EDITABLE (spin));
  char *end = NULL;
  double v = g_strtod (text, &end);

  if (end == text || (end != NULL && *end != '\0' && !g_ascii_isspace (*end)))
    return GTK_INPUT_ERROR;
  *value = v;
  return TRUE;
}

static void
espalier_layer_editor_dispose (GObject *object)
{
  EspalierLayerEditor *self = ESPALIER_LAYER_EDITOR (object);

  if (self->doc != NULL)
    g_signal_handlers_disconnect_by_data (self->doc, self);
  g_clear_object (&self->doc);
  /* AdwBin unparents the stack, the template's only direct child. */
  G_OBJECT_CLASS (espalier_layer_editor_parent_class)->dispose (object);
}

static void
espalier_layer_editor_get_property (GObject    *object,
                                    guint       prop_id,
                                    GValue     *value,
                                    GParamSpec *pspec)
{
  EspalierLayerEditor *self = ESPALIER_LAYER_EDITOR (object);

  switch (prop_id)
    {
    case PROP_DOC:
      g_value_set_object (value, self->doc);
      break;
    case PROP_INDEX:
      g_value_set_int (value, self->index);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_layer_editor_set_property (GObject      *object,
                                    guint         prop_id,
                                    const GValue *value,
                                    GParamSpec   *pspec)
{
  EspalierLayerEditor *self = ESPALIER_LAYER_EDITOR (object);

  switch (prop_id)
    {
    case PROP_DOC:
      espalier_layer_editor_set_doc (self, g_value_get_object (value));
      break;
    case PROP_INDEX:
      espalier_layer_editor_set_index (self, g_value_get_int (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_layer_editor_class_init (EspalierLayerEditorClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_layer_editor_dispose;
  object_class->get_property = espalier_layer_editor_get_property;
  object_class->set_property = espalier_layer_editor_set_property;

  properties[PROP_DOC] =
    g_param_spec_object ("doc", NULL, NULL, ESPALIER_TYPE_MODEL_DOC,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_INDEX] =
    g_param_spec_int ("index", NULL, NULL, -1, G_MAXINT, -1,
                      G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-layer-editor.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, layer_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, kind_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, settings_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, units_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, units_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, filters_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, filters_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, kernel_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, kernel_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, stride_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, stride_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, padding_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, padding_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, alpha_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, alpha_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, rate_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, rate_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, momentum_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, momentum_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, eps_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, eps_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, no_settings_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, input_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, output_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, params_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, flops_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierLayerEditor, error_label);
  gtk_widget_class_bind_template_callback (widget_class, on_kind_selected);
  gtk_widget_class_bind_template_callback (widget_class, on_eps_output);
  gtk_widget_class_bind_template_callback (widget_class, on_eps_input);
}

static void
espalier_layer_editor_init (EspalierLayerEditor *self)
{
  g_autoptr(GtkStringList) kinds = gtk_string_list_new (NULL);

  self->index = -1;
  gtk_widget_init_template (GTK_WIDGET (self));

  self->updating = TRUE;
  for (int k = 0; k < ES_LAYER_N_KINDS; k++)
    gtk_string_list_append (kinds, es_layer_kind_title (k));
  adw_combo_row_set_model (self->kind_row, G_LIST_MODEL (kinds));
  self->updating = FALSE;

  for (Field f = 0; f < N_FIELDS; f++)
    {
      GtkSpinButton *spin = FIELD_SPIN (self, f);

      g_object_set_data (G_OBJECT (spin), "espalier-field", GINT_TO_POINTER (f + 1));
      g_signal_connect (spin, "value-changed", G_CALLBACK (on_spin_value_changed), self);
    }
  refresh (self);
}

EspalierModelDoc *
espalier_layer_editor_get_doc (EspalierLayerEditor *self)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_EDITOR (self), NULL);
  return self->doc;
}

void
espalier_layer_editor_set_doc (EspalierLayerEditor *self,
                               EspalierModelDoc    *doc)
{
  g_return_if_fail (ESPALIER_IS_LAYER_EDITOR (self));
  g_return_if_fail (doc == NULL || ESPALIER_IS_MODEL_DOC (doc));

  if (!espalier_follow (&self->doc, doc, "changed", G_CALLBACK (on_doc_changed), self, 0))
    return;
  refresh (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DOC]);
}

int
espalier_layer_editor_get_index (EspalierLayerEditor *self)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_EDITOR (self), -1);
  return self->index;
}

void
espalier_layer_editor_set_index (EspalierLayerEditor *self,
                                 int                  index)
{
  g_return_if_fail (ESPALIER_IS_LAYER_EDITOR (self));

  index = MAX (index, -1);
  if (self->index == index)
    return;
  self->index = index;
  refresh (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_INDEX]);
}

static int
field_from_name (const char *name)
{
  for (int f = 0; f < N_FIELDS; f++)
    if (g_strcmp0 (fields[f].name, name) == 0)
      return f;
  return -1;
}

GtkSpinButton *
espalier_layer_editor_get_field (EspalierLayerEditor *self,
                                 const char          *field)
{
  int f;

  g_return_val_if_fail (ESPALIER_IS_LAYER_EDITOR (self), NULL);

  f = field_from_name (field);
  return f >= 0 ? FIELD_SPIN (self, f) : NULL;
}

gboolean
espalier_layer_editor_field_visible (EspalierLayerEditor *self,
                                     const char          *field)
{
  int f;

  g_return_val_if_fail (ESPALIER_IS_LAYER_EDITOR (self), FALSE);

  f = field_from_name (field);
  return f >= 0 && g_str_equal (gtk_stack_get_visible_child_name (self->stack), "layer")
         && gtk_widget_get_visible (FIELD_ROW (self, f));
}

AdwComboRow *
espalier_layer_editor_get_kind_row (EspalierLayerEditor *self)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_EDITOR (self), NULL);
  return self->kind_row;
}
