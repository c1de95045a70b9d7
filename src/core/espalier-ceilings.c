/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-ceilings.c: the measured-once machine ceilings (espalier-ceilings.h).
 *
 * The cache, ceilings.json:
 *   { "version": 1,
 *     "entries": [ { "cpu": "...", "threads": 2, "gemm": "avx512",
 *                    "gemm_gflops": 268.0, "copy_gbs": 93.7, "gemm_b": 256,
 *                    "gemm_in": 1024, "gemm_out": 1024, "copy_bytes": 67108864,
 *                    "measure_s": 0.7 }, ... ] }
 * One entry per key (CPU model, threads, gemm path); a new measurement replaces its
 * key's entry and keeps the others. Anything unreadable is dropped, not reported. */
#include "config.h"

#include "espalier-ceilings.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "espalier-error.h"
#include "espalier-json-private.h"

#define CACHE_VERSION 1
#define MEASURE_SECONDS 0.3

char *
espalier_ceilings_cache_path (void)
{
  return g_build_filename (g_get_user_cache_dir (), "espalier", "ceilings.json", NULL);
}

char *
espalier_ceilings_cpu_model (void)
{
  g_autofree char *text = NULL;
  g_auto(GStrv) lines = NULL;

  if (!g_file_get_contents ("/proc/cpuinfo", &text, NULL, NULL))
    return g_strdup ("unknown");
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      const char *colon = strchr (lines[i], ':');

      if (g_str_has_prefix (lines[i], "model name") && colon != NULL)
        {
          g_autofree char *name = g_strstrip (g_strdup (colon + 1));

          if (*name != '\0')
            return g_steal_pointer (&name);
        }
    }
  return g_strdup ("unknown");
}

/* The string member key of e, or NULL when it is missing or not a string. */
static const char *
member_string (JsonObject *e, const char *key)
{
  JsonNode *n = json_object_get_member (e, key);

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (n);
}

static double member_double (JsonObject *e, const char *key);

/* Whether entry e is for this key. */
static gboolean
entry_matches (JsonObject *e, const char *cpu, int threads, const char *gemm)
{
  return g_strcmp0 (member_string (e, "cpu"), cpu) == 0
         && member_double (e, "threads") == threads
         && g_strcmp0 (member_string (e, "gemm"), gemm) == 0;
}

static double
member_double (JsonObject *e, const char *key)
{
  JsonNode *n = json_object_get_member (e, key);

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n))
    return NAN;
  if (json_node_get_value_type (n) == G_TYPE_INT64)
    return (double) json_node_get_int (n);
  if (json_node_get_value_type (n) == G_TYPE_DOUBLE)
    return json_node_get_double (n);
  return NAN;
}

/* Fill out from a cache entry; FALSE when it is not a complete, sane entry. */
static gboolean
entry_read (JsonObject *e, EsCeilings *out)
{
  EsCeilings c = { 0 };

  c.gemm_gflops = member_double (e, "gemm_gflops");
  c.copy_gbs = member_double (e, "copy_gbs");
  c.n_threads = (int) member_double (e, "threads");
  c.gemm_b = (int) member_double (e, "gemm_b");
  c.gemm_in = (int) member_double (e, "gemm_in");
  c.gemm_out = (int) member_double (e, "gemm_out");
  c.copy_bytes = member_double (e, "copy_bytes");
  c.measure_s = member_double (e, "measure_s");
  if (!(isfinite (c.gemm_gflops) && c.gemm_gflops > 0 && isfinite (c.copy_gbs)
        && c.copy_gbs > 0 && c.n_threads > 0 && c.gemm_b > 0 && c.gemm_in > 0
        && c.gemm_out > 0 && c.copy_bytes > 0 && isfinite (c.measure_s)
        && c.measure_s >= 0))
    return FALSE;
  c.cached = TRUE;
  *out = c;
  return TRUE;
}

/* The cache's entries (a new reference; empty when it is missing or unreadable). */
static JsonArray *
cache_load (const char *path)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonNode *root;
  JsonObject *o;
  JsonArray *entries, *kept = json_array_new ();

  if (!json_parser_load_from_file (parser, path, NULL))
    return kept;
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return kept;
  o = json_node_get_object (root);
  if (member_double (o, "version") != CACHE_VERSION)
    return kept;
  entries = json_object_has_member (o, "entries")
            && JSON_NODE_HOLDS_ARRAY (json_object_get_member (o, "entries"))
            ? json_object_get_array_member (o, "entries") : NULL;
  for (guint i = 0; entries != NULL && i < json_array_get_length (entries); i++)
    {
      JsonNode *n = json_array_get_element (entries, i);
      EsCeilings c;

      if (JSON_NODE_HOLDS_OBJECT (n) && entry_read (json_node_get_object (n), &c)
          && member_string (json_node_get_object (n), "cpu") != NULL
          && member_string (json_node_get_object (n), "gemm") != NULL)
        json_array_add_element (kept, json_node_copy (n));
    }
  return kept;
}

static gboolean
cache_save (const char *path, JsonArray *entries, const char *cpu, const char *gemm,
            const EsCeilings *c, GError **error)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *text = NULL, *dir = g_path_get_dirname (path);

  json_builder_begin_object (b);
  espalier_json_add_int (b, "version", CACHE_VERSION);
  json_builder_set_member_name (b, "entries");
  json_builder_begin_array (b);
  for (guint i = 0; i < json_array_get_length (entries); i++)
    {
      JsonObject *e = json_array_get_object_element (entries, i);

      if (!entry_matches (e, cpu, c->n_threads, gemm))
        json_builder_add_value (b, json_node_copy (json_array_get_element (entries, i)));
    }
  json_builder_begin_object (b);
  espalier_json_add_string (b, "cpu", cpu);
  espalier_json_add_int (b, "threads", c->n_threads);
  espalier_json_add_string (b, "gemm", gemm);
  espalier_json_add_double (b, "gemm_gflops", c->gemm_gflops);
  espalier_json_add_double (b, "copy_gbs", c->copy_gbs);
  espalier_json_add_int (b, "gemm_b", c->gemm_b);
  espalier_json_add_int (b, "gemm_in", c->gemm_in);
  espalier_json_add_int (b, "gemm_out", c->gemm_out);
  espalier_json_add_double (b, "copy_bytes", c->copy_bytes);
  espalier_json_add_double (b, "measure_s", c->measure_s);
  json_builder_end_object (b);
  json_builder_end_array (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  text = espalier_json_to_text (root, TRUE);
  if (g_mkdir_with_parents (dir, 0755) != 0)
    {
      int saved = errno;

      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved),
                   _("Could not create %s: %s"), dir, g_strerror (saved));
      return FALSE;
    }
  return g_file_set_contents (path, text, -1, error);
}

gboolean
espalier_ceilings_get (guint        threads,
                       gboolean     remeasure,
                       EsCeilings  *out,
                       GError     **error)
{
  g_autofree char *path = espalier_ceilings_cache_path ();
  g_autofree char *cpu = espalier_ceilings_cpu_model ();
  g_autoptr(JsonArray) entries = NULL;
  g_autoptr(GError) save_error = NULL;
  const char *gemm = es_cpu_backend_gemm_path ();
  EsError es = { 0 };
  EsBackend *be;
  EsCeilings c;
  int n_threads;
  gboolean ok;

  g_return_val_if_fail (out != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  be = es_cpu_backend_new ((int) threads, NULL, &es);
  if (be == NULL)
    {
      espalier_error_from_es (error, &es, _("Could not start the CPU backend"));
      return FALSE;
    }
  n_threads = be->n_threads;

  entries = cache_load (path);
  if (!remeasure)
    for (guint i = 0; i < json_array_get_length (entries); i++)
      {
        JsonObject *e = json_array_get_object_element (entries, i);

        if (entry_matches (e, cpu, n_threads, gemm) && entry_read (e, out))
          {
            es_backend_free (be);
            return TRUE;
          }
      }

  ok = es_measure_ceilings (be, MEASURE_SECONDS, &c, &es);
  es_backend_free (be);
  if (!ok)
    {
      espalier_error_from_es (error, &es, _("Could not measure the machine's ceilings"));
      return FALSE;
    }
  if (!cache_save (path, entries, cpu, gemm, &c, &save_error))
    g_warning ("Could not write the ceilings cache %s: %s", path, save_error->message);
  *out = c;
  return TRUE;
}
