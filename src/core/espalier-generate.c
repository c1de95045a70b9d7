/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-generate.c: the 2-D teaching sets and their spec strings. Each generator
 * writes rows grouped by class, n / k rows per class (the first n % k classes one
 * more), with a sequential EsRng seeded from the spec's seed: the same spec gives the
 * same numbers on every machine.
 *
 * Dimension key: N = rows, K = classes; features (N, 2). */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "es-common.h"
#include "espalier-format.h"
#include "espalier-dataset-private.h"
#include "espalier-generate.h"

static const char * const generator_names[] = {
  [ESPALIER_GENERATOR_SPIRAL] = "spiral",
  [ESPALIER_GENERATOR_MOONS] = "moons",
  [ESPALIER_GENERATOR_CIRCLES] = "circles",
  [ESPALIER_GENERATOR_XOR] = "xor",
  [ESPALIER_GENERATOR_BLOBS] = "blobs",
  NULL,
};

#define MAX_ROWS 10000000u
#define MAX_CLASSES 100u

const char * const *
espalier_generate_list (void)
{
  return generator_names;
}

void
espalier_generate_params_init (EspalierGenerateParams *params,
                               EspalierGenerator       kind)
{
  g_return_if_fail (params != NULL);

  memset (params, 0, sizeof *params);
  params->kind = kind;
  params->n = 300;
  params->k = 2;
  params->factor = 0.5;
  params->seed = 1;
  switch (kind)
    {
    case ESPALIER_GENERATOR_SPIRAL:
      params->k = 3;
      params->noise = 0.2;
      break;
    case ESPALIER_GENERATOR_MOONS:
      params->noise = 0.1;
      break;
    case ESPALIER_GENERATOR_CIRCLES:
      params->noise = 0.05;
      break;
    case ESPALIER_GENERATOR_XOR:
      params->noise = 0.1;
      break;
    case ESPALIER_GENERATOR_BLOBS:
      params->k = 3;
      params->noise = 0.5;
      break;
    default:
      g_return_if_reached ();
    }
}

static gboolean
lookup_generator (const char        *name,
                  gsize              length,
                  EspalierGenerator *kind)
{
  for (guint i = 0; generator_names[i] != NULL; i++)
    if (strlen (generator_names[i]) == length
        && g_ascii_strncasecmp (name, generator_names[i], length) == 0)
      {
        *kind = i;
        return TRUE;
      }
  if ((length == 8 && g_ascii_strncasecmp (name, "gaussian", 8) == 0)
      || (length == 14 && g_ascii_strncasecmp (name, "gaussian-blobs", 14) == 0))
    {
      *kind = ESPALIER_GENERATOR_BLOBS;
      return TRUE;
    }
  return FALSE;
}

gboolean
espalier_generate_is_spec (const char *spec)
{
  EspalierGenerator kind;
  const char *colon;

  g_return_val_if_fail (spec != NULL, FALSE);

  colon = strchr (spec, ':');
  return lookup_generator (spec, colon != NULL ? (gsize) (colon - spec) : strlen (spec), &kind);
}

static const char *
keys_of (EspalierGenerator kind)
{
  switch (kind)
    {
    case ESPALIER_GENERATOR_SPIRAL: return "n, arms, noise, seed";
    case ESPALIER_GENERATOR_CIRCLES: return "n, noise, factor, seed";
    case ESPALIER_GENERATOR_BLOBS: return "n, centers, noise, seed";
    case ESPALIER_GENERATOR_MOONS:
    case ESPALIER_GENERATOR_XOR:
    default:
      return "n, noise, seed";
    }
}

gboolean
espalier_generate_parse_spec (const char              *spec,
                              EspalierGenerateParams  *params,
                              GError                 **error)
{
  g_auto(GStrv) pairs = NULL;
  EspalierGenerator kind;
  const char *colon;
  const char *name;

  g_return_val_if_fail (spec != NULL, FALSE);
  g_return_val_if_fail (params != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  colon = strchr (spec, ':');
  if (!lookup_generator (spec, colon != NULL ? (gsize) (colon - spec) : strlen (spec), &kind))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                   _("'%s': unknown generator (spiral, moons, circles, xor, blobs)"), spec);
      return FALSE;
    }
  espalier_generate_params_init (params, kind);
  name = generator_names[kind];
  if (colon == NULL || colon[1] == '\0')
    return TRUE;

  pairs = g_strsplit (colon + 1, ",", -1);
  for (guint i = 0; pairs[i] != NULL; i++)
    {
      char *pair = g_strstrip (pairs[i]);
      char *eq = strchr (pair, '=');
      const char *key, *value;
      guint64 u;
      double d;
      char *end;

      if (pair[0] == '\0')
        continue;
      if (eq == NULL)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                       _("'%s': '%s' is not key=value (keys of %s: %s)"), spec, pair, name,
                       keys_of (kind));
          return FALSE;
        }
      *eq = '\0';
      key = g_strstrip (pair);
      value = g_strstrip (eq + 1);

      if (strcmp (key, "n") == 0)
        {
          if (!g_ascii_string_to_unsigned (value, 10, 1, MAX_ROWS, &u, NULL))
            goto bad_value;
          params->n = (guint) u;
        }
      else if (strcmp (key, "seed") == 0)
        {
          if (!g_ascii_string_to_unsigned (value, 10, 0, G_MAXUINT64, &u, NULL))
            goto bad_value;
          params->seed = u;
        }
      else if (strcmp (key, "noise") == 0)
        {
          d = g_ascii_strtod (value, &end);
          if (end == value || *end != '\0' || !isfinite (d) || d < 0 || d > 100)
            goto bad_value;
          params->noise = d;
        }
      else if (strcmp (key, "factor") == 0 && kind == ESPALIER_GENERATOR_CIRCLES)
        {
          d = g_ascii_strtod (value, &end);
          if (end == value || *end != '\0' || !(d > 0 && d < 1))
            goto bad_value;
          params->factor = d;
        }
      else if ((strcmp (key, "arms") == 0 && kind == ESPALIER_GENERATOR_SPIRAL)
               || (strcmp (key, "centers") == 0 && kind == ESPALIER_GENERATOR_BLOBS)
               || (strcmp (key, "k") == 0 && (kind == ESPALIER_GENERATOR_SPIRAL
                                              || kind == ESPALIER_GENERATOR_BLOBS)))
        {
          if (!g_ascii_string_to_unsigned (value, 10, 2, MAX_CLASSES, &u, NULL))
            goto bad_value;
          params->k = (guint) u;
        }
      else
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                       _("'%s': unknown key '%s' (keys of %s: %s)"), spec, key, name,
                       keys_of (kind));
          return FALSE;
        }
      continue;

    bad_value:
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                   _("'%s': bad value '%s' for key '%s' (%s)"), spec, value, key,
                   strcmp (key, "n") == 0 ? _("an integer from 1 to 10000000")
                   : strcmp (key, "seed") == 0 ? _("an unsigned integer")
                   : strcmp (key, "noise") == 0 ? _("a number from 0 to 100")
                   : strcmp (key, "factor") == 0 ? _("a number between 0 and 1")
                   : _("an integer from 2 to 100"));
      return FALSE;
    }

  if (params->n < params->k)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                   _("'%s': n=%u is fewer rows than the %u classes"), spec, params->n,
                   params->k);
      return FALSE;
    }
  return TRUE;
}

/* The shortest decimal that reads back as v. */
static void
append_double (GString *s,
               double   v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_string_append (s, espalier_format_double (buf, v));
}

char *
espalier_generate_params_to_spec (const EspalierGenerateParams *params)
{
  GString *s;

  g_return_val_if_fail (params != NULL, NULL);
  g_return_val_if_fail (params->kind <= ESPALIER_GENERATOR_BLOBS, NULL);

  s = g_string_new (generator_names[params->kind]);
  g_string_append_printf (s, ":n=%u", params->n);
  if (params->kind == ESPALIER_GENERATOR_SPIRAL)
    g_string_append_printf (s, ",arms=%u", params->k);
  else if (params->kind == ESPALIER_GENERATOR_BLOBS)
    g_string_append_printf (s, ",centers=%u", params->k);
  g_string_append (s, ",noise=");
  append_double (s, params->noise);
  if (params->kind == ESPALIER_GENERATOR_CIRCLES)
    {
      g_string_append (s, ",factor=");
      append_double (s, params->factor);
    }
  g_string_append_printf (s, ",seed=%" G_GUINT64_FORMAT, params->seed);
  return g_string_free (s, FALSE);
}

/* Generators: each fills x (N, 2) and labels (N) for rows [start, start + m) of class c
 * out of k. */

static guint
class_rows (guint n,
            guint k,
            guint c)
{
  return n / k + (c < n % k ? 1 : 0);
}

static void
gen_spiral (const EspalierGenerateParams *p,
            EsRng                        *rng,
            float                        *x,
            guint                         m,
            guint                         c)
{
  /* An arm turns 4 radians from the centre outwards; arms are 2 pi / k apart. The
   * noise jitters the angle, as in the classic CS231n spiral. */
  for (guint i = 0; i < m; i++)
    {
      double r = m > 1 ? (double) i / (m - 1) : 0.5;
      double t = c * 2 * G_PI / p->k + 4.0 * r + es_rng_normal (rng) * p->noise;

      x[2 * i] = (float) (r * sin (t));
      x[2 * i + 1] = (float) (r * cos (t));
    }
}

static void
gen_moons (const EspalierGenerateParams *p,
           EsRng                        *rng,
           float                        *x,
           guint                         m,
           guint                         c)
{
  for (guint i = 0; i < m; i++)
    {
      double t = m > 1 ? G_PI * i / (m - 1) : G_PI / 2;
      double a = c == 0 ? cos (t) : 1 - cos (t);
      double b = c == 0 ? sin (t) : 0.5 - sin (t);

      x[2 * i] = (float) (a + es_rng_normal (rng) * p->noise);
      x[2 * i + 1] = (float) (b + es_rng_normal (rng) * p->noise);
    }
}

static void
gen_circles (const EspalierGenerateParams *p,
             EsRng                        *rng,
             float                        *x,
             guint                         m,
             guint                         c)
{
  double radius = c == 0 ? 1.0 : p->factor;

  for (guint i = 0; i < m; i++)
    {
      double t = 2 * G_PI * i / m;

      x[2 * i] = (float) (radius * cos (t) + es_rng_normal (rng) * p->noise);
      x[2 * i + 1] = (float) (radius * sin (t) + es_rng_normal (rng) * p->noise);
    }
}

static void
gen_xor (const EspalierGenerateParams *p,
         EsRng                        *rng,
         float                        *x,
         guint                         m,
         guint                         c)
{
  /* Class 0 in the quadrants where x and y have the same sign, class 1 elsewhere. */
  for (guint i = 0; i < m; i++)
    {
      double sx = es_rng_uniform (rng) < 0.5 ? -1 : 1;
      double sy = c == 0 ? sx : -sx;

      x[2 * i] = (float) (sx * es_rng_uniform (rng) + es_rng_normal (rng) * p->noise);
      x[2 * i + 1] = (float) (sy * es_rng_uniform (rng) + es_rng_normal (rng) * p->noise);
    }
}

static void
gen_blobs (const EspalierGenerateParams *p,
           EsRng                        *rng,
           double                        phase,
           float                        *x,
           guint                         m,
           guint                         c)
{
  /* Centres evenly on a circle of radius 3, turned by a seeded phase. */
  double cx = 3 * cos (phase + 2 * G_PI * c / p->k);
  double cy = 3 * sin (phase + 2 * G_PI * c / p->k);

  for (guint i = 0; i < m; i++)
    {
      x[2 * i] = (float) (cx + es_rng_normal (rng) * p->noise);
      x[2 * i + 1] = (float) (cy + es_rng_normal (rng) * p->noise);
    }
}

EspalierDataset *
espalier_generate (const EspalierGenerateParams  *params,
                   GError                       **error)
{
  static const guint dims[1] = { 2 };
  EspalierDataset *ds;
  g_autofree char *spec = NULL;
  EsRng rng;
  double phase;
  guint row = 0;

  g_return_val_if_fail (params != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (params->kind > ESPALIER_GENERATOR_BLOBS || params->n == 0 || params->n > MAX_ROWS
      || params->k < 2 || params->k > MAX_CLASSES || params->n < params->k
      || !isfinite (params->noise) || params->noise < 0
      || (params->kind == ESPALIER_GENERATOR_CIRCLES
          && !(params->factor > 0 && params->factor < 1)))
    {
      g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                           _("Bad generator parameters: n from 1 to 10000000, at least k rows, "
                             "k from 2 to 100, noise >= 0, factor between 0 and 1"));
      return NULL;
    }

  spec = espalier_generate_params_to_spec (params);
  ds = _espalier_dataset_new (generator_names[params->kind], spec);
  _espalier_dataset_set_shape (ds, 1, dims);
  ds->n_rows = params->n;
  ds->n_predefined_train = params->n;
  ds->f32 = g_new (float, (gsize) params->n * 2);
  ds->labels = g_new (gint32, params->n);
  ds->n_classes = params->kind == ESPALIER_GENERATOR_SPIRAL
                  || params->kind == ESPALIER_GENERATOR_BLOBS ? params->k : 2;
  ds->class_names = g_new0 (char *, ds->n_classes + 1);
  /* Not translated: class names go into model files and CSV exports. */
  for (guint c = 0; c < ds->n_classes; c++)
    ds->class_names[c] = g_strdup_printf ("class %u", c);
  ds->feature_names = g_strsplit ("x0 x1", " ", -1);

  rng.state = es_hash64 (params->seed ^ 0x67656e6572617465ull);   /* "generate" */
  phase = es_rng_uniform (&rng) * 2 * G_PI;
  for (guint c = 0; c < ds->n_classes; c++)
    {
      guint m = class_rows (params->n, ds->n_classes, c);
      float *x = ds->f32 + (gsize) row * 2;

      switch (params->kind)
        {
        case ESPALIER_GENERATOR_SPIRAL: gen_spiral (params, &rng, x, m, c); break;
        case ESPALIER_GENERATOR_MOONS: gen_moons (params, &rng, x, m, c); break;
        case ESPALIER_GENERATOR_CIRCLES: gen_circles (params, &rng, x, m, c); break;
        case ESPALIER_GENERATOR_XOR: gen_xor (params, &rng, x, m, c); break;
        case ESPALIER_GENERATOR_BLOBS: gen_blobs (params, &rng, phase, x, m, c); break;
        default: g_assert_not_reached ();
        }
      for (guint i = 0; i < m; i++)
        ds->labels[row + i] = (gint32) c;
      row += m;
    }
  _espalier_dataset_add_report (ds, _("generated %s: %u rows, %u classes"), spec,
                                params->n, ds->n_classes);
  return ds;
}

EspalierDataset *
espalier_generate_from_spec (const char  *spec,
                             GError     **error)
{
  EspalierGenerateParams params;

  g_return_val_if_fail (spec != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!espalier_generate_parse_spec (spec, &params, error))
    return NULL;
  return espalier_generate (&params, error);
}
