/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-preferences-window.c: the Preferences window, bound to GSettings. */
#include "config.h"

#include <glib/gi18n.h>

#include "espalier-preferences-window.h"

struct _EspalierPreferencesWindow
{
  AdwPreferencesWindow  parent_instance;

  GSettings            *settings;

  AdwComboRow          *device_row;
  GtkSpinButton        *threads_spin;
  GtkSpinButton        *memory_spin;
  AdwComboRow          *style_row;
};

G_DEFINE_FINAL_TYPE (EspalierPreferencesWindow, espalier_preferences_window, ADW_TYPE_PREFERENCES_WINDOW)

static const char *device_ids[] = { "auto", "cpu", "cuda", NULL };
static const char *style_ids[] = { "default", "light", "dark", NULL };

/* A string setting <-> the index of a combo row, through a NULL-terminated id list. */
static gboolean
id_to_index (GValue   *value,
             GVariant *variant,
             gpointer  user_data)
{
  const char **ids = user_data;
  const char *id = g_variant_get_string (variant, NULL);

  for (guint i = 0; ids[i] != NULL; i++)
    if (g_str_equal (ids[i], id))
      {
        g_value_set_uint (value, i);
        return TRUE;
      }
  g_value_set_uint (value, 0);
  return TRUE;
}

static GVariant *
index_to_id (const GValue       *value,
             const GVariantType *expected_type,
             gpointer            user_data)
{
  const char **ids = user_data;
  guint index = g_value_get_uint (value);

  if (index >= g_strv_length ((char **) ids))
    index = 0;
  return g_variant_new_string (ids[index]);
}

GtkWidget *
espalier_preferences_window_new (GSettings *settings)
{
  EspalierPreferencesWindow *self = g_object_new (ESPALIER_TYPE_PREFERENCES_WINDOW, NULL);

  if (settings == NULL)
    {
      adw_preferences_window_add_toast (ADW_PREFERENCES_WINDOW (self),
                                        adw_toast_new (_("The settings schema is not installed: "
                                                         "changes here are not kept")));
      return GTK_WIDGET (self);
    }
  self->settings = g_object_ref (settings);
  g_settings_bind_with_mapping (settings, "device", self->device_row, "selected",
                                G_SETTINGS_BIND_DEFAULT, id_to_index, index_to_id,
                                (gpointer) device_ids, NULL);
  g_settings_bind_with_mapping (settings, "color-scheme", self->style_row, "selected",
                                G_SETTINGS_BIND_DEFAULT, id_to_index, index_to_id,
                                (gpointer) style_ids, NULL);
  g_settings_bind (settings, "threads", gtk_spin_button_get_adjustment (self->threads_spin),
                   "value", G_SETTINGS_BIND_DEFAULT);
  g_settings_bind (settings, "memory-limit", gtk_spin_button_get_adjustment (self->memory_spin),
                   "value", G_SETTINGS_BIND_DEFAULT);
  return GTK_WIDGET (self);
}

static void
espalier_preferences_window_dispose (GObject *object)
{
  EspalierPreferencesWindow *self = ESPALIER_PREFERENCES_WINDOW (object);

  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_PREFERENCES_WINDOW);
  g_clear_object (&self->settings);
  G_OBJECT_CLASS (espalier_preferences_window_parent_class)->dispose (object);
}

static void
espalier_preferences_window_class_init (EspalierPreferencesWindowClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_preferences_window_dispose;

  gtk_widget_class_set_template_from_resource (widget_class, "/io/github/espalier/Espalier/ui/espalier-preferences-window.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierPreferencesWindow, device_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierPreferencesWindow, threads_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierPreferencesWindow, memory_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierPreferencesWindow, style_row);
}

static void
espalier_preferences_window_init (EspalierPreferencesWindow *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
}
