/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-settings.c: see espalier-optimize-settings.h. The rows are the
 * template's; this file decides which a technique shows (the others hide: a row that
 * does nothing for the technique would only mislead), which are insensitive because
 * another setting makes them moot (the percentile without percentile calibration, the
 * learning rate without fine-tuning), and reads them into options. Defaults come from
 * espalier_optimize_options_init, so the page and the CLI start from the same values. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-optimize-settings.h"
#include "espalier-optimize-util.h"

struct _EspalierOptimizeSettings
{
  AdwBin               parent_instance;

  GArray              *remove_layers;  /* (element-type int) layer of each remove_row item */
  GPtrArray           *float_checks;   /* (element-type GtkCheckButton) one per weight layer */
  GArray              *float_layers;   /* (element-type int) the layer of each check */
  int                  n_layers;       /* of the model the lists came from */
  gboolean             updating;       /* rows being refilled: no "changed" */

  /* template */
  AdwComboRow         *technique_row;
  AdwPreferencesGroup *settings_group;
  AdwActionRow        *sparsity_row;
  GtkSpinButton       *sparsity_spin;
  AdwComboRow         *scope_row;
  AdwActionRow        *keep_row;
  GtkSpinButton       *keep_spin;
  AdwComboRow         *norm_row;
  AdwComboRow         *calib_row;
  AdwActionRow        *percentile_row;
  GtkSpinButton       *percentile_spin;
  AdwActionRow        *calib_batches_row;
  GtkSpinButton       *calib_batches_spin;
  AdwActionRow        *reduce_range_row;
  GtkSwitch           *reduce_range_switch;
  AdwExpanderRow      *keep_float_row;
  AdwComboRow         *remove_row;
  GtkStringList       *remove_list;
  AdwPreferencesGroup *tuning_group;
  AdwExpanderRow      *distill_row;
  GtkSpinButton       *temperature_spin;
  GtkSpinButton       *alpha_spin;
  AdwActionRow        *epochs_row;
  GtkSpinButton       *epochs_spin;
  AdwActionRow        *lr_row;
  GtkSpinButton       *lr_spin;
};

G_DEFINE_FINAL_TYPE (EspalierOptimizeSettings, espalier_optimize_settings, ADW_TYPE_BIN)

enum { PROP_0, PROP_TECHNIQUE, N_PROPS };
static GParamSpec *properties[N_PROPS];

enum { CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

GtkWidget *
espalier_optimize_settings_new (void)
{
  return g_object_new (ESPALIER_TYPE_OPTIMIZE_SETTINGS, NULL);
}

/* What each technique uses */

static gboolean
is_prune (EspalierTechnique t)
{
  return t <= ESPALIER_TECHNIQUE_PRUNE_2_4;
}

static gboolean
is_quantize (EspalierTechnique t)
{
  return t >= ESPALIER_TECHNIQUE_INT8_STATIC && t <= ESPALIER_TECHNIQUE_QAT;
}

static gboolean
is_int8 (EspalierTechnique t)
{
  return t == ESPALIER_TECHNIQUE_INT8_STATIC || t == ESPALIER_TECHNIQUE_INT8_DYNAMIC
         || t == ESPALIER_TECHNIQUE_QAT;
}

static gboolean
is_calibrated (EspalierTechnique t)
{
  return t == ESPALIER_TECHNIQUE_INT8_STATIC || t == ESPALIER_TECHNIQUE_QAT;
}

/* Post-training quantization changes the stored weights only: no training follows. */
static gboolean
trains (EspalierTechnique t)
{
  return !is_quantize (t) || t == ESPALIER_TECHNIQUE_QAT;
}

gboolean
espalier_technique_fine_tunes (EspalierTechnique technique,
                               guint             epochs)
{
  return trains (technique) && epochs > 0;
}

static const char *
group_description (EspalierTechnique t)
{
  switch (t)
    {
    case ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE:
      return _("Zero the weights of smallest magnitude at once, then fine-tune with them kept at zero");
    case ESPALIER_TECHNIQUE_PRUNE_GRADUAL:
      return _("Prune a little more at a time while fine-tuning, on the cubic schedule of Zhu and Gupta");
    case ESPALIER_TECHNIQUE_PRUNE_STRUCTURED:
      return _("Remove whole neurons and channels, so the smaller model runs on ordinary dense kernels");
    case ESPALIER_TECHNIQUE_PRUNE_2_4:
      return _("Keep the two largest of every four weights: the pattern sparse tensor cores run");
    case ESPALIER_TECHNIQUE_INT8_STATIC:
      return _("int8 weights per output channel and int8 activations with ranges calibrated on training batches");
    case ESPALIER_TECHNIQUE_INT8_DYNAMIC:
      return _("int8 weights; activation ranges measured on every batch while it runs");
    case ESPALIER_TECHNIQUE_FP16:
      return _("Weights stored as IEEE half precision, computed in single precision");
    case ESPALIER_TECHNIQUE_BF16:
      return _("Weights stored as bfloat16, computed in single precision");
    case ESPALIER_TECHNIQUE_QAT:
      return _("Fine-tune with simulated int8 rounding, then quantize to static int8");
    case ESPALIER_TECHNIQUE_REDUCE:
      return _("Remove a hidden layer, then recover the accuracy by fine-tuning");
    case ESPALIER_N_TECHNIQUES:
    default:
      return NULL;
    }
}

static void
update_rows (EspalierOptimizeSettings *self)
{
  EspalierTechnique t = espalier_optimize_settings_get_technique (self);
  gboolean magnitude = t == ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE || t == ESPALIER_TECHNIQUE_PRUNE_GRADUAL;
  gboolean reduce = t == ESPALIER_TECHNIQUE_REDUCE;
  guint epochs = (guint) gtk_spin_button_get_value_as_int (self->epochs_spin);
  guint n_float = 0;
  g_autofree char *float_subtitle = NULL;

  adw_preferences_group_set_title (self->settings_group,
                                   is_prune (t) ? _("Pruning")
                                   : is_quantize (t) ? _("Quantization") : _("Layer Reduction"));
  adw_preferences_group_set_description (self->settings_group, group_description (t));

  gtk_widget_set_visible (GTK_WIDGET (self->sparsity_row), magnitude);
  gtk_widget_set_visible (GTK_WIDGET (self->scope_row), magnitude);
  gtk_widget_set_visible (GTK_WIDGET (self->keep_row), t == ESPALIER_TECHNIQUE_PRUNE_STRUCTURED);
  gtk_widget_set_visible (GTK_WIDGET (self->norm_row), t == ESPALIER_TECHNIQUE_PRUNE_STRUCTURED);
  gtk_widget_set_visible (GTK_WIDGET (self->calib_row), is_calibrated (t));
  gtk_widget_set_visible (GTK_WIDGET (self->percentile_row), is_calibrated (t));
  gtk_widget_set_visible (GTK_WIDGET (self->calib_batches_row), is_calibrated (t));
  gtk_widget_set_visible (GTK_WIDGET (self->reduce_range_row), is_int8 (t));
  gtk_widget_set_visible (GTK_WIDGET (self->keep_float_row), is_quantize (t));
  gtk_widget_set_visible (GTK_WIDGET (self->remove_row), reduce);
  /* 2:4 has nothing more to set: the group's description says what it does (one half
   * sparse by definition). */

  gtk_widget_set_visible (GTK_WIDGET (self->tuning_group), trains (t));
  gtk_widget_set_visible (GTK_WIDGET (self->distill_row), reduce);
  adw_preferences_group_set_title (self->tuning_group,
                                   reduce ? _("Recovery") : _("Fine-Tuning"));

  /* Settings other settings make moot stay in view, insensitive. */
  gtk_widget_set_sensitive (GTK_WIDGET (self->percentile_row),
                            adw_combo_row_get_selected (self->calib_row) == ES_CALIB_PERCENTILE);
  gtk_widget_set_sensitive (GTK_WIDGET (self->lr_row), epochs > 0);
  gtk_widget_set_sensitive (GTK_WIDGET (self->distill_row), epochs > 0);
  gtk_widget_set_sensitive (GTK_WIDGET (self->remove_row),
                            g_list_model_get_n_items (G_LIST_MODEL (self->remove_list)) > 0);
  gtk_widget_set_sensitive (GTK_WIDGET (self->keep_float_row), self->float_checks->len > 0);
  /* Gradual pruning happens during training: it needs at least one epoch. */
  gtk_spin_button_set_range (self->epochs_spin, t == ESPALIER_TECHNIQUE_PRUNE_GRADUAL ? 1 : 0, 100);

  for (guint i = 0; i < self->float_checks->len; i++)
    n_float += gtk_check_button_get_active (g_ptr_array_index (self->float_checks, i));
  if (self->float_checks->len == 0)
    float_subtitle = g_strdup (_("The parent has no layers with weights"));
  else if (n_float == 0)
    float_subtitle = g_strdup (_("None: every layer with weights is quantized"));
  else
    float_subtitle = g_strdup_printf (ngettext ("%u layer", "%u layers", n_float), n_float);
  adw_expander_row_set_subtitle (self->keep_float_row, float_subtitle);
}

/* Callbacks */

static void
on_setting_changed (EspalierOptimizeSettings *self)
{
  if (self->updating)
    return;
  update_rows (self);
  g_signal_emit (self, signals[CHANGED], 0);
}

static void
on_technique_selected (EspalierOptimizeSettings *self)
{
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TECHNIQUE]);
}

/* Layer lists */

static void
clear_float_rows (EspalierOptimizeSettings *self)
{
  for (guint i = 0; i < self->float_checks->len; i++)
    {
      GtkWidget *check = g_ptr_array_index (self->float_checks, i);
      GtkWidget *row = gtk_widget_get_ancestor (check, ADW_TYPE_ACTION_ROW);

      if (row != NULL)
        adw_expander_row_remove (self->keep_float_row, row);
    }
  g_ptr_array_set_size (self->float_checks, 0);
  g_array_set_size (self->float_layers, 0);
}

void
espalier_optimize_settings_set_model (EspalierOptimizeSettings *self,
                                      const EsModel            *model)
{
  int old_remove = -1;
  guint selected_remove = GTK_INVALID_LIST_POSITION;
  g_autoptr(GArray) old_float = g_array_new (FALSE, FALSE, sizeof (int));
  int n_layers = model != NULL ? es_model_n_layers (model) : 0;
  int last_weight = -1;
  guint n;

  g_return_if_fail (ESPALIER_IS_OPTIMIZE_SETTINGS (self));

  /* What was chosen, to keep it where the new model has the same layer. */
  n = adw_combo_row_get_selected (self->remove_row);
  if (n != GTK_INVALID_LIST_POSITION && n < self->remove_layers->len)
    old_remove = g_array_index (self->remove_layers, int, n);
  for (guint i = 0; i < self->float_checks->len; i++)
    if (gtk_check_button_get_active (g_ptr_array_index (self->float_checks, i)))
      g_array_append_val (old_float, g_array_index (self->float_layers, int, i));

  self->updating = TRUE;
  for (int i = 0; i < n_layers; i++)
    if (espalier_layer_has_weights (model, i))
      last_weight = i;

  /* Layers to remove: every weight layer but the last (its outputs are the model's). */
  g_array_set_size (self->remove_layers, 0);
  gtk_string_list_splice (self->remove_list, 0,
                          g_list_model_get_n_items (G_LIST_MODEL (self->remove_list)), NULL);
  for (int i = 0; i < last_weight; i++)
    if (espalier_layer_has_weights (model, i))
      {
        g_autofree char *label = espalier_layer_label (model, i);

        gtk_string_list_append (self->remove_list, label);
        g_array_append_val (self->remove_layers, i);
      }
  /* The layer chosen before when the new model has it, otherwise the last hidden
   * weight layer (what the core's -1 means). */
  if (self->remove_layers->len > 0)
    selected_remove = self->remove_layers->len - 1;
  for (guint k = 0; old_remove >= 0 && k < self->remove_layers->len; k++)
    if (g_array_index (self->remove_layers, int, k) == old_remove)
      selected_remove = k;
  if (selected_remove != GTK_INVALID_LIST_POSITION)
    adw_combo_row_set_selected (self->remove_row, selected_remove);

  /* Layers kept in float: a check per weight layer. */
  clear_float_rows (self);
  for (int i = 0; i < n_layers; i++)
    {
      g_autofree char *label = NULL;
      GtkWidget *row, *check;
      gboolean active = FALSE;

      if (!espalier_layer_has_weights (model, i))
        continue;
      for (guint k = 0; k < old_float->len; k++)
        active |= g_array_index (old_float, int, k) == i;
      label = espalier_layer_label (model, i);
      check = gtk_check_button_new ();
      gtk_widget_set_valign (check, GTK_ALIGN_CENTER);
      gtk_check_button_set_active (GTK_CHECK_BUTTON (check), active);
      gtk_accessible_update_property (GTK_ACCESSIBLE (check), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                      label, -1);
      g_signal_connect_swapped (check, "toggled", G_CALLBACK (on_setting_changed), self);
      row = adw_action_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), label);
      adw_action_row_add_prefix (ADW_ACTION_ROW (row), check);
      adw_action_row_set_activatable_widget (ADW_ACTION_ROW (row), check);
      adw_expander_row_add_row (self->keep_float_row, row);
      g_ptr_array_add (self->float_checks, check);
      g_array_append_val (self->float_layers, i);
    }
  self->n_layers = n_layers;
  self->updating = FALSE;
  on_setting_changed (self);
}

/* Options */

void
espalier_optimize_settings_get_options (EspalierOptimizeSettings *self,
                                        EspalierOptimizeOptions  *opts)
{
  EspalierTechnique t;
  guint n;

  g_return_if_fail (ESPALIER_IS_OPTIMIZE_SETTINGS (self));
  g_return_if_fail (opts != NULL);

  espalier_optimize_options_init (opts);
  t = espalier_optimize_settings_get_technique (self);
  switch (t)
    {
    case ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE:
      opts->kind = ESPALIER_OPTIMIZE_PRUNE;
      break;
    case ESPALIER_TECHNIQUE_PRUNE_GRADUAL:
      opts->kind = ESPALIER_OPTIMIZE_PRUNE_GRADUAL;
      break;
    case ESPALIER_TECHNIQUE_PRUNE_STRUCTURED:
      opts->kind = ESPALIER_OPTIMIZE_PRUNE_STRUCTURED;
      break;
    case ESPALIER_TECHNIQUE_PRUNE_2_4:
      opts->kind = ESPALIER_OPTIMIZE_PRUNE_2_4;
      break;
    case ESPALIER_TECHNIQUE_INT8_STATIC:
    case ESPALIER_TECHNIQUE_INT8_DYNAMIC:
    case ESPALIER_TECHNIQUE_FP16:
    case ESPALIER_TECHNIQUE_BF16:
      opts->kind = ESPALIER_OPTIMIZE_QUANTIZE;
      break;
    case ESPALIER_TECHNIQUE_QAT:
      opts->kind = ESPALIER_OPTIMIZE_QAT;
      break;
    case ESPALIER_TECHNIQUE_REDUCE:
    case ESPALIER_N_TECHNIQUES:
    default:
      opts->kind = ESPALIER_OPTIMIZE_REDUCE;
      break;
    }

  opts->sparsity = gtk_spin_button_get_value (self->sparsity_spin) / 100.0;
  opts->scope = adw_combo_row_get_selected (self->scope_row) == 1 ? ES_PRUNE_GLOBAL : ES_PRUNE_PER_LAYER;
  opts->keep_fraction = gtk_spin_button_get_value (self->keep_spin) / 100.0;
  opts->norm = adw_combo_row_get_selected (self->norm_row) == 1 ? ES_NORM_L2 : ES_NORM_L1;

  opts->quant_mode = t == ESPALIER_TECHNIQUE_INT8_DYNAMIC ? ES_QUANT_INT8_DYNAMIC
                     : t == ESPALIER_TECHNIQUE_FP16 ? ES_QUANT_FP16
                     : t == ESPALIER_TECHNIQUE_BF16 ? ES_QUANT_BF16
                     : ES_QUANT_INT8_STATIC;
  n = adw_combo_row_get_selected (self->calib_row);
  opts->calib = n == 1 ? ES_CALIB_PERCENTILE : n == 2 ? ES_CALIB_MSE : ES_CALIB_MINMAX;
  opts->percentile = gtk_spin_button_get_value (self->percentile_spin);
  opts->calib_batches = (guint) gtk_spin_button_get_value_as_int (self->calib_batches_spin);
  opts->reduce_range = is_int8 (t) && gtk_switch_get_active (self->reduce_range_switch);
  if (is_quantize (t))
    for (guint i = 0; i < self->float_checks->len; i++)
      if (gtk_check_button_get_active (g_ptr_array_index (self->float_checks, i)))
        {
          if (opts->keep_float == NULL)
            opts->keep_float = g_new0 (gboolean, MAX (self->n_layers, 1));
          opts->keep_float[g_array_index (self->float_layers, int, i)] = TRUE;
        }

  n = adw_combo_row_get_selected (self->remove_row);
  opts->remove_layer = n != GTK_INVALID_LIST_POSITION && n < self->remove_layers->len
                       ? g_array_index (self->remove_layers, int, n) : -1;
  opts->distill = adw_expander_row_get_enable_expansion (self->distill_row);
  opts->temperature = gtk_spin_button_get_value (self->temperature_spin);
  opts->alpha = gtk_spin_button_get_value (self->alpha_spin);

  opts->epochs = trains (t) ? (guint) gtk_spin_button_get_value_as_int (self->epochs_spin) : 0;
  opts->lr = gtk_spin_button_get_value (self->lr_spin);
}

/* Defaults: the core's, so the page and the CLI agree. */
static void
apply_defaults (EspalierOptimizeSettings *self)
{
  EspalierOptimizeOptions opts;

  espalier_optimize_options_init (&opts);
  self->updating = TRUE;
  gtk_spin_button_set_value (self->sparsity_spin, 100 * opts.sparsity);
  adw_combo_row_set_selected (self->scope_row, opts.scope == ES_PRUNE_GLOBAL ? 1 : 0);
  gtk_spin_button_set_value (self->keep_spin, 100 * opts.keep_fraction);
  adw_combo_row_set_selected (self->norm_row, opts.norm == ES_NORM_L2 ? 1 : 0);
  adw_combo_row_set_selected (self->calib_row, opts.calib == ES_CALIB_PERCENTILE ? 1
                                               : opts.calib == ES_CALIB_MSE ? 2 : 0);
  gtk_spin_button_set_value (self->percentile_spin, opts.percentile);
  gtk_spin_button_set_value (self->calib_batches_spin, opts.calib_batches);
  gtk_switch_set_active (self->reduce_range_switch, opts.reduce_range);
  adw_expander_row_set_enable_expansion (self->distill_row, opts.distill);
  gtk_spin_button_set_value (self->temperature_spin, opts.temperature);
  gtk_spin_button_set_value (self->alpha_spin, opts.alpha);
  gtk_spin_button_set_value (self->epochs_spin, opts.epochs);
  gtk_spin_button_set_value (self->lr_spin, opts.lr);
  self->updating = FALSE;
  espalier_optimize_options_clear (&opts);
}

/* Life cycle */

static void
espalier_optimize_settings_dispose (GObject *object)
{
  EspalierOptimizeSettings *self = ESPALIER_OPTIMIZE_SETTINGS (object);

  if (self->float_checks != NULL)
    g_ptr_array_set_size (self->float_checks, 0);
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_OPTIMIZE_SETTINGS);
  G_OBJECT_CLASS (espalier_optimize_settings_parent_class)->dispose (object);
}

static void
espalier_optimize_settings_finalize (GObject *object)
{
  EspalierOptimizeSettings *self = ESPALIER_OPTIMIZE_SETTINGS (object);

  g_clear_pointer (&self->remove_layers, g_array_unref);
  g_clear_pointer (&self->float_checks, g_ptr_array_unref);
  g_clear_pointer (&self->float_layers, g_array_unref);
  G_OBJECT_CLASS (espalier_optimize_settings_parent_class)->finalize (object);
}

static void
espalier_optimize_settings_get_property (GObject    *object,
                                         guint       prop_id,
                                         GValue     *value,
                                         GParamSpec *pspec)
{
  EspalierOptimizeSettings *self = ESPALIER_OPTIMIZE_SETTINGS (object);

  switch (prop_id)
    {
    case PROP_TECHNIQUE:
      g_value_set_uint (value, espalier_optimize_settings_get_technique (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_optimize_settings_set_property (GObject      *object,
                                         guint         prop_id,
                                         const GValue *value,
                                         GParamSpec   *pspec)
{
  EspalierOptimizeSettings *self = ESPALIER_OPTIMIZE_SETTINGS (object);

  switch (prop_id)
    {
    case PROP_TECHNIQUE:
      espalier_optimize_settings_set_technique (self, g_value_get_uint (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_optimize_settings_class_init (EspalierOptimizeSettingsClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_optimize_settings_dispose;
  object_class->finalize = espalier_optimize_settings_finalize;
  object_class->get_property = espalier_optimize_settings_get_property;
  object_class->set_property = espalier_optimize_settings_set_property;

  properties[PROP_TECHNIQUE] =
    g_param_spec_uint ("technique", NULL, NULL, 0, ESPALIER_N_TECHNIQUES - 1,
                       ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE,
                       G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[CHANGED] =
    g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 0);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-optimize-settings.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, technique_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, settings_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, sparsity_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, sparsity_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, scope_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, keep_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, keep_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, norm_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, calib_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, percentile_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, percentile_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, calib_batches_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, calib_batches_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, reduce_range_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, reduce_range_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, keep_float_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, remove_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, remove_list);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, tuning_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, distill_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, temperature_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, alpha_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, epochs_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, epochs_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, lr_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizeSettings, lr_spin);
  gtk_widget_class_bind_template_callback (widget_class, on_setting_changed);
}

static void
espalier_optimize_settings_init (EspalierOptimizeSettings *self)
{
  self->remove_layers = g_array_new (FALSE, FALSE, sizeof (int));
  self->float_checks = g_ptr_array_new ();
  self->float_layers = g_array_new (FALSE, FALSE, sizeof (int));
  self->updating = TRUE;   /* the template's signals fire while it is built */
  gtk_widget_init_template (GTK_WIDGET (self));
  self->updating = FALSE;
  g_signal_connect_swapped (self->technique_row, "notify::selected",
                            G_CALLBACK (on_technique_selected), self);
  apply_defaults (self);
  update_rows (self);
}

/* Public API */

EspalierTechnique
espalier_optimize_settings_get_technique (EspalierOptimizeSettings *self)
{
  guint n;

  g_return_val_if_fail (ESPALIER_IS_OPTIMIZE_SETTINGS (self), ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE);
  n = adw_combo_row_get_selected (self->technique_row);
  return n < ESPALIER_N_TECHNIQUES ? (EspalierTechnique) n : ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE;
}

void
espalier_optimize_settings_set_technique (EspalierOptimizeSettings *self,
                                          EspalierTechnique         technique)
{
  g_return_if_fail (ESPALIER_IS_OPTIMIZE_SETTINGS (self));
  g_return_if_fail (technique < ESPALIER_N_TECHNIQUES);

  /* The row's notify updates the rows and tells the property's watchers. */
  adw_combo_row_set_selected (self->technique_row, technique);
}
