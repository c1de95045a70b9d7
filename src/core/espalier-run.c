/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-run.c: one training run as an object: what it trained (spec, options), its
 * per-epoch records as they arrive, whether it finished, and its test metrics. It does
 * not train anything itself; the train page feeds it from EspalierTrainer progress, and
 * the project saves it. */
#include "config.h"

#include "espalier-run.h"

#include <math.h>
#include <string.h>

struct _EspalierRun
{
  GObject               parent_instance;

  char                 *name;
  char                 *spec;
  char                 *created;    /* ISO 8601 */
  EspalierTrainOptions  options;
  GArray               *history;    /* (EspalierEpochRecord) */
  gboolean              finished;
  EspalierMetrics       test;       /* owns its confusion matrix */
};

G_DEFINE_FINAL_TYPE (EspalierRun, espalier_run, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_NAME,
  PROP_SPEC,
  PROP_CREATED,
  PROP_N_EPOCHS,
  PROP_FINISHED,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_RECORD_ADDED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

EspalierRun *
espalier_run_new (const char *name, const char *spec, const EspalierTrainOptions *options)
{
  return espalier_run_new_full (name, spec, options, NULL);
}

EspalierRun *
espalier_run_new_full (const char *name, const char *spec, const EspalierTrainOptions *options,
                       const char *created)
{
  EspalierRun *self;

  g_return_val_if_fail (name != NULL, NULL);

  self = g_object_new (ESPALIER_TYPE_RUN, "name", name, "spec", spec, "created", created, NULL);
  if (options != NULL)
    self->options = *options;
  return self;
}

static void
espalier_run_finalize (GObject *object)
{
  EspalierRun *self = ESPALIER_RUN (object);

  g_clear_pointer (&self->name, g_free);
  g_clear_pointer (&self->spec, g_free);
  g_clear_pointer (&self->created, g_free);
  g_clear_pointer (&self->history, g_array_unref);
  espalier_metrics_clear (&self->test);
  G_OBJECT_CLASS (espalier_run_parent_class)->finalize (object);
}

static void
espalier_run_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  EspalierRun *self = ESPALIER_RUN (object);

  switch (prop_id)
    {
    case PROP_NAME:
      g_value_set_string (value, self->name);
      break;
    case PROP_SPEC:
      g_value_set_string (value, self->spec);
      break;
    case PROP_CREATED:
      g_value_set_string (value, self->created);
      break;
    case PROP_N_EPOCHS:
      g_value_set_uint (value, self->history->len);
      break;
    case PROP_FINISHED:
      g_value_set_boolean (value, self->finished);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_run_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  EspalierRun *self = ESPALIER_RUN (object);

  switch (prop_id)
    {
    case PROP_NAME:
      g_free (self->name);
      self->name = g_value_dup_string (value);
      break;
    case PROP_SPEC:
      g_free (self->spec);
      self->spec = g_strdup (g_value_get_string (value) != NULL ? g_value_get_string (value) : "");
      break;
    case PROP_CREATED:
      if (g_value_get_string (value) != NULL)
        {
          g_free (self->created);
          self->created = g_value_dup_string (value);
        }
      break;
    case PROP_FINISHED:
      espalier_run_set_finished (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_run_class_init (EspalierRunClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_run_finalize;
  object_class->get_property = espalier_run_get_property;
  object_class->set_property = espalier_run_set_property;

  properties[PROP_NAME] =
    g_param_spec_string ("name", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_SPEC] =
    g_param_spec_string ("spec", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  /* Construct-only, for a run read back from a project; NULL: now. */
  properties[PROP_CREATED] =
    g_param_spec_string ("created", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_N_EPOCHS] =
    g_param_spec_uint ("n-epochs", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_FINISHED] =
    g_param_spec_boolean ("finished", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[SIGNAL_RECORD_ADDED] =
    g_signal_new ("record-added", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 1, G_TYPE_UINT);
}

static void
espalier_run_init (EspalierRun *self)
{
  g_autoptr(GDateTime) now = g_date_time_new_now_utc ();

  self->created = g_date_time_format_iso8601 (now);
  self->spec = g_strdup ("");
  espalier_train_options_init (&self->options);
  self->history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
  self->test.loss = NAN;
  self->test.accuracy = NAN;
}

const char *
espalier_run_get_name (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return self->name;
}

const char *
espalier_run_get_spec (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return self->spec;
}

const char *
espalier_run_get_created (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return self->created;
}

const EspalierTrainOptions *
espalier_run_get_options (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return &self->options;
}

GArray *
espalier_run_get_history (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return self->history;
}

void
espalier_run_add_record (EspalierRun *self, const EspalierEpochRecord *record)
{
  g_return_if_fail (ESPALIER_IS_RUN (self));
  g_return_if_fail (record != NULL);

  g_array_append_val (self->history, *record);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_N_EPOCHS]);
  g_signal_emit (self, signals[SIGNAL_RECORD_ADDED], 0, self->history->len - 1);
}

gboolean
espalier_run_get_finished (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), FALSE);

  return self->finished;
}

void
espalier_run_set_finished (EspalierRun *self, gboolean finished)
{
  g_return_if_fail (ESPALIER_IS_RUN (self));

  finished = !!finished;
  if (self->finished == finished)
    return;
  self->finished = finished;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_FINISHED]);
}

const EspalierMetrics *
espalier_run_get_test (EspalierRun *self)
{
  g_return_val_if_fail (ESPALIER_IS_RUN (self), NULL);

  return &self->test;
}

void
espalier_run_set_test (EspalierRun *self, const EspalierMetrics *test)
{
  EspalierMetrics copy;

  g_return_if_fail (ESPALIER_IS_RUN (self));
  g_return_if_fail (test != NULL);

  copy = *test;
  copy.confusion = NULL;
  if (test->confusion != NULL && test->n_classes > 0)
    copy.confusion = g_memdup2 (test->confusion,
                                (gsize) test->n_classes * test->n_classes * sizeof (guint));
  else
    copy.n_classes = test->n_classes;
  espalier_metrics_clear (&self->test);
  self->test = copy;
}
