/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-application.c: the AdwApplication: windows, app actions (quit, about,
 * preferences), opening .espalier files given on the command line, the style. */
#include "config.h"

#include <glib/gi18n.h>

#include "espalier-application.h"
#include "espalier-preferences-window.h"
#include "espalier-window.h"

struct _EspalierApplication
{
  AdwApplication  parent_instance;

  GSettings      *settings;   /* NULL without a schema */
};

G_DEFINE_FINAL_TYPE (EspalierApplication, espalier_application, ADW_TYPE_APPLICATION)

EspalierApplication *
espalier_application_new (void)
{
  return g_object_new (ESPALIER_TYPE_APPLICATION,
                       "application-id", APPLICATION_ID,
                       "flags", G_APPLICATION_HANDLES_OPEN,
                       "resource-base-path", "/io/github/espalier/Espalier",
                       NULL);
}

/* The schema installed, or the one compiled in the build tree for uninstalled runs. */
static GSettings *
settings_new (void)
{
  GSettingsSchemaSource *source = g_settings_schema_source_get_default ();
  g_autoptr(GSettingsSchema) schema = NULL;
  g_autoptr(GSettingsSchemaSource) build = NULL;

  if (source != NULL)
    schema = g_settings_schema_source_lookup (source, APPLICATION_ID, TRUE);
  if (schema == NULL)
    {
      build = g_settings_schema_source_new_from_directory (ESPALIER_BUILD_DATA_DIR, source,
                                                           FALSE, NULL);
      if (build != NULL)
        schema = g_settings_schema_source_lookup (build, APPLICATION_ID, FALSE);
    }
  if (schema == NULL)
    {
      g_warning ("The settings schema %s is not installed; preferences will not be kept",
                 APPLICATION_ID);
      return NULL;
    }
  return g_settings_new_full (schema, NULL, NULL);
}

static void
apply_color_scheme (EspalierApplication *self)
{
  AdwStyleManager *manager = adw_style_manager_get_default ();
  g_autofree char *scheme = NULL;

  if (self->settings == NULL)
    return;
  scheme = g_settings_get_string (self->settings, "color-scheme");
  if (g_strcmp0 (scheme, "light") == 0)
    adw_style_manager_set_color_scheme (manager, ADW_COLOR_SCHEME_FORCE_LIGHT);
  else if (g_strcmp0 (scheme, "dark") == 0)
    adw_style_manager_set_color_scheme (manager, ADW_COLOR_SCHEME_FORCE_DARK);
  else
    adw_style_manager_set_color_scheme (manager, ADW_COLOR_SCHEME_DEFAULT);
}

static void
on_color_scheme_changed (GSettings           *settings,
                         const char          *key,
                         EspalierApplication *self)
{
  apply_color_scheme (self);
}

static EspalierWindow *
active_or_new_window (EspalierApplication *self)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (self));

  if (ESPALIER_IS_WINDOW (window))
    return ESPALIER_WINDOW (window);
  return espalier_window_new (ADW_APPLICATION (self));
}

static void
quit_action (GSimpleAction *action,
             GVariant      *parameter,
             gpointer       user_data)
{
  EspalierApplication *self = user_data;

  /* Close each window through its close-request, so unsaved changes are asked about. */
  for (GList *l = gtk_application_get_windows (GTK_APPLICATION (self)); l; )
    {
      GtkWindow *window = l->data;

      l = l->next;
      gtk_window_close (window);
    }
}

static void
about_action (GSimpleAction *action,
              GVariant      *parameter,
              gpointer       user_data)
{
  EspalierApplication *self = user_data;
  GtkWindow *parent = gtk_application_get_active_window (GTK_APPLICATION (self));
  const char *developers[] = { _("The Espalier developers"), NULL };
  GtkWidget *about;

  about = g_object_new (ADW_TYPE_ABOUT_WINDOW,
                        "transient-for", parent,
                        "application-icon", APPLICATION_ID,
                        "application-name", _("Espalier"),
                        "developer-name", _("The Espalier developers"),
                        "version", PACKAGE_VERSION,
                        "comments", _("Find and remove the performance bottlenecks of "
                                      "neural networks: train, profile, prune, quantize "
                                      "and export."),
                        "website", "https://github.com/espalier/espalier",
                        "issue-url", "https://github.com/espalier/espalier/issues",
                        "license-type", GTK_LICENSE_GPL_3_0,
                        "developers", developers,
                        /* Translators: your name here, one per line */
                        "translator-credits", _("translator-credits"),
                        NULL);
  gtk_window_present (GTK_WINDOW (about));
}

static void
preferences_action (GSimpleAction *action,
                    GVariant      *parameter,
                    gpointer       user_data)
{
  EspalierApplication *self = user_data;
  GtkWindow *parent = gtk_application_get_active_window (GTK_APPLICATION (self));
  GtkWidget *prefs = espalier_preferences_window_new (self->settings);

  gtk_window_set_transient_for (GTK_WINDOW (prefs), parent);
  gtk_window_present (GTK_WINDOW (prefs));
}

static const GActionEntry app_actions[] = {
  { .name = "quit", .activate = quit_action },
  { .name = "about", .activate = about_action },
  { .name = "preferences", .activate = preferences_action },
};

static void
espalier_application_startup (GApplication *app)
{
  EspalierApplication *self = ESPALIER_APPLICATION (app);
  static const char *quit_accels[] = { "<Control>q", NULL };
  static const char *prefs_accels[] = { "<Control>comma", NULL };

  G_APPLICATION_CLASS (espalier_application_parent_class)->startup (app);

  g_action_map_add_action_entries (G_ACTION_MAP (self), app_actions,
                                   G_N_ELEMENTS (app_actions), self);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.quit", quit_accels);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.preferences", prefs_accels);

  self->settings = settings_new ();
  if (self->settings != NULL)
    {
      g_signal_connect (self->settings, "changed::color-scheme",
                        G_CALLBACK (on_color_scheme_changed), self);
      apply_color_scheme (self);
    }
}

static void
espalier_application_activate (GApplication *app)
{
  gtk_window_present (GTK_WINDOW (active_or_new_window (ESPALIER_APPLICATION (app))));
}

static void
espalier_application_open (GApplication  *app,
                           GFile        **files,
                           int            n_files,
                           const char    *hint)
{
  EspalierApplication *self = ESPALIER_APPLICATION (app);

  /* One window per project: the first file goes to the active window when it has
   * nothing to lose, the others to new windows. */
  for (int i = 0; i < n_files; i++)
    {
      EspalierWindow *window = i == 0 ? active_or_new_window (self)
                                      : espalier_window_new (ADW_APPLICATION (self));

      espalier_window_open_file (window, files[i]);
      gtk_window_present (GTK_WINDOW (window));
    }
}

static void
espalier_application_dispose (GObject *object)
{
  EspalierApplication *self = ESPALIER_APPLICATION (object);

  g_clear_object (&self->settings);
  G_OBJECT_CLASS (espalier_application_parent_class)->dispose (object);
}

static void
espalier_application_class_init (EspalierApplicationClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GApplicationClass *app_class = G_APPLICATION_CLASS (klass);

  object_class->dispose = espalier_application_dispose;
  app_class->startup = espalier_application_startup;
  app_class->activate = espalier_application_activate;
  app_class->open = espalier_application_open;
}

static void
espalier_application_init (EspalierApplication *self)
{
}

GSettings *
espalier_application_get_settings (EspalierApplication *self)
{
  g_return_val_if_fail (ESPALIER_IS_APPLICATION (self), NULL);
  return self->settings;
}

GSettings *
espalier_settings_get_default (void)
{
  GApplication *app = g_application_get_default ();

  if (ESPALIER_IS_APPLICATION (app))
    return ESPALIER_APPLICATION (app)->settings;
  return NULL;
}
