/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-job.c: the UI state of a long piece of work (title, progress, status,
 * cancel, end). It never runs the work; workers post to it on the main thread. */
#include "config.h"

#include <glib/gi18n.h>

#include "espalier-job.h"
#include "espalier-window.h"

struct _EspalierJob
{
  GObject       parent_instance;

  char         *title;
  char         *status;
  double        fraction;
  GCancellable *cancellable;
  guint         running : 1;
};

G_DEFINE_FINAL_TYPE (EspalierJob, espalier_job, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_TITLE,
  PROP_FRACTION,
  PROP_STATUS,
  PROP_RUNNING,
  PROP_CANCELLABLE,
  N_PROPS
};

enum { FINISHED, N_SIGNALS };

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

EspalierJob *
espalier_job_new (const char *title)
{
  return g_object_new (ESPALIER_TYPE_JOB, "title", title, NULL);
}

static void
espalier_job_finalize (GObject *object)
{
  EspalierJob *self = ESPALIER_JOB (object);

  g_clear_pointer (&self->title, g_free);
  g_clear_pointer (&self->status, g_free);
  g_clear_object (&self->cancellable);
  G_OBJECT_CLASS (espalier_job_parent_class)->finalize (object);
}

static void
espalier_job_get_property (GObject    *object,
                           guint       prop_id,
                           GValue     *value,
                           GParamSpec *pspec)
{
  EspalierJob *self = ESPALIER_JOB (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_value_set_string (value, self->title);
      break;
    case PROP_FRACTION:
      g_value_set_double (value, self->fraction);
      break;
    case PROP_STATUS:
      g_value_set_string (value, self->status);
      break;
    case PROP_RUNNING:
      g_value_set_boolean (value, self->running);
      break;
    case PROP_CANCELLABLE:
      g_value_set_object (value, self->cancellable);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_job_set_property (GObject      *object,
                           guint         prop_id,
                           const GValue *value,
                           GParamSpec   *pspec)
{
  EspalierJob *self = ESPALIER_JOB (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_free (self->title);
      self->title = g_value_dup_string (value);
      break;
    case PROP_FRACTION:
      espalier_job_set_fraction (self, g_value_get_double (value));
      break;
    case PROP_STATUS:
      espalier_job_set_status (self, g_value_get_string (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_job_class_init (EspalierJobClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_job_finalize;
  object_class->get_property = espalier_job_get_property;
  object_class->set_property = espalier_job_set_property;

  properties[PROP_TITLE] =
    g_param_spec_string ("title", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_FRACTION] =
    g_param_spec_double ("fraction", NULL, NULL, -1, 1, -1,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_STATUS] =
    g_param_spec_string ("status", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_RUNNING] =
    g_param_spec_boolean ("running", NULL, NULL, TRUE,
                          G_PARAM_READABLE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_CANCELLABLE] =
    g_param_spec_object ("cancellable", NULL, NULL, G_TYPE_CANCELLABLE,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  /* The work ended; the GError is NULL on success and on cancel. */
  signals[FINISHED] =
    g_signal_new ("finished", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_ERROR);
}

static void
espalier_job_init (EspalierJob *self)
{
  self->fraction = -1;
  self->running = TRUE;
  self->cancellable = g_cancellable_new ();
}

const char *
espalier_job_get_title (EspalierJob *self)
{
  g_return_val_if_fail (ESPALIER_IS_JOB (self), NULL);
  return self->title;
}

double
espalier_job_get_fraction (EspalierJob *self)
{
  g_return_val_if_fail (ESPALIER_IS_JOB (self), -1);
  return self->fraction;
}

void
espalier_job_set_fraction (EspalierJob *self,
                           double       fraction)
{
  g_return_if_fail (ESPALIER_IS_JOB (self));

  if (!(fraction >= 0))
    fraction = -1;
  fraction = MIN (fraction, 1.0);
  if (fraction != self->fraction)
    {
      self->fraction = fraction;
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_FRACTION]);
    }
}

const char *
espalier_job_get_status (EspalierJob *self)
{
  g_return_val_if_fail (ESPALIER_IS_JOB (self), NULL);
  return self->status;
}

void
espalier_job_set_status (EspalierJob *self,
                         const char  *status)
{
  g_return_if_fail (ESPALIER_IS_JOB (self));

  if (g_strcmp0 (self->status, status) == 0)
    return;
  g_free (self->status);
  self->status = g_strdup (status);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_STATUS]);
}

gboolean
espalier_job_get_running (EspalierJob *self)
{
  g_return_val_if_fail (ESPALIER_IS_JOB (self), FALSE);
  return self->running;
}

GCancellable *
espalier_job_get_cancellable (EspalierJob *self)
{
  g_return_val_if_fail (ESPALIER_IS_JOB (self), NULL);
  return self->cancellable;
}

void
espalier_job_cancel (EspalierJob *self)
{
  g_return_if_fail (ESPALIER_IS_JOB (self));
  g_cancellable_cancel (self->cancellable);
}

void
espalier_job_finish (EspalierJob  *self,
                     const GError *error)
{
  g_autoptr(GError) reported = NULL;

  g_return_if_fail (ESPALIER_IS_JOB (self));

  if (!self->running)
    return;
  self->running = FALSE;
  if (error != NULL && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    reported = g_error_copy (error);
  g_object_ref (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_RUNNING]);
  g_signal_emit (self, signals[FINISHED], 0, reported);
  g_object_unref (self);
}

void
espalier_job_show (EspalierJob *self,
                   GtkWidget   *widget)
{
  GtkRoot *root;

  g_return_if_fail (ESPALIER_IS_JOB (self));
  g_return_if_fail (GTK_IS_WIDGET (widget));

  root = gtk_widget_get_root (widget);
  if (ESPALIER_IS_WINDOW (root))
    espalier_window_add_job (ESPALIER_WINDOW (root), self);
}

void
espalier_show_toast (GtkWidget  *widget,
                     const char *message)
{
  GtkRoot *root;

  g_return_if_fail (GTK_IS_WIDGET (widget));
  g_return_if_fail (message != NULL);

  root = gtk_widget_get_root (widget);
  if (ESPALIER_IS_WINDOW (root))
    espalier_window_add_toast (ESPALIER_WINDOW (root), message);
  else
    g_message ("%s", message);
}
