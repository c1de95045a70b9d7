/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-limits.c: the memory a load or a job may take (espalier-limits.h), from
 * /proc/meminfo, the memory cgroup (v2 or v1) and RLIMIT_AS. Linux first; elsewhere
 * the physical memory sysconf reports, or nothing known. Also the jobs' checked
 * allocations and the check before a training run. */
#include "config.h"

#include "espalier-limits.h"

#include "espalier-error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>

/* "MemAvailable:   123456 kB" -> bytes; FALSE when key is not there. */
static gboolean
meminfo_field (const char *text, const char *key, guint64 *bytes)
{
  const char *at = strstr (text, key);

  if (at == NULL || (at != text && at[-1] != '\n'))
    return FALSE;
  *bytes = g_ascii_strtoull (at + strlen (key), NULL, 10) * 1024;
  return TRUE;
}

/* What a cgroup v2 file holds as a number; FALSE for "max" or when unreadable. */
static gboolean
cgroup_number (const char *dir, const char *name, guint64 *value)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autofree char *text = NULL;
  char *end = NULL;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return FALSE;
  *value = g_ascii_strtoull (text, &end, 10);
  return end != text;
}

/* The room left under the tightest limit from the cgroup at path (below root, the
 * hierarchy's mount point) up to root: limit_file minus usage_file at each level. In a
 * container root is the container's own cgroup, with its limit. */
static guint64
cgroup_walk (const char *root, const char *path, const char *limit_file, const char *usage_file)
{
  g_autofree char *dir = g_build_filename (root, path, NULL);
  guint64 room = G_MAXUINT64;

  for (;;)
    {
      guint64 max, current;

      if (cgroup_number (dir, limit_file, &max) && cgroup_number (dir, usage_file, &current))
        room = MIN (room, max > current ? max - current : 0);
      if (strlen (dir) <= strlen (root))
        break;
      *strrchr (dir, '/') = '\0';
    }
  return room;
}

/* The room this process's memory cgroup leaves: cgroup v2 ("0::/path", memory.max) or
 * the v1 memory controller ("N:memory:/path", memory.limit_in_bytes); G_MAXUINT64 when
 * there is no limit. */
static guint64
cgroup_room (void)
{
  g_autofree char *self = NULL;
  g_auto(GStrv) lines = NULL;
  guint64 room = G_MAXUINT64;

  if (!g_file_get_contents ("/proc/self/cgroup", &self, NULL, NULL))
    return room;
  lines = g_strsplit (self, "\n", -1);
  for (char **l = lines; *l != NULL; l++)
    {
      const char *at;

      if (g_str_has_prefix (*l, "0::/"))
        room = MIN (room, cgroup_walk ("/sys/fs/cgroup", *l + 3, "memory.max", "memory.current"));
      else if ((at = strstr (*l, ":memory:/")) != NULL)
        room = MIN (room, cgroup_walk ("/sys/fs/cgroup/memory", at + 8, "memory.limit_in_bytes",
                                       "memory.usage_in_bytes"));
    }
  return room;
}

/* The room RLIMIT_AS leaves beside this process's address space, or G_MAXUINT64. */
static guint64
rlimit_room (void)
{
  struct rlimit rl;
  g_autofree char *statm = NULL;
  guint64 pages;

  if (getrlimit (RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return G_MAXUINT64;
  if (!g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL))
    return (guint64) rl.rlim_cur;
  pages = g_ascii_strtoull (statm, NULL, 10);
  pages *= (guint64) sysconf (_SC_PAGESIZE);
  return (guint64) rl.rlim_cur > pages ? (guint64) rl.rlim_cur - pages : 0;
}

guint64
espalier_memory_available (void)
{
  const char *env = g_getenv ("ESPALIER_MEMORY_AVAILABLE");
  g_autofree char *meminfo = NULL;
  guint64 avail = G_MAXUINT64, mem, swap;

  if (env != NULL && *env != '\0')
    {
      char *end = NULL;
      guint64 v = g_ascii_strtoull (env, &end, 10);

      if (end != env)
        return v;
    }

  if (g_file_get_contents ("/proc/meminfo", &meminfo, NULL, NULL)
      && meminfo_field (meminfo, "MemAvailable:", &mem))
    avail = mem + (meminfo_field (meminfo, "SwapFree:", &swap) ? swap : 0);
#ifdef _SC_AVPHYS_PAGES
  else
    {
      long pages = sysconf (_SC_AVPHYS_PAGES), size = sysconf (_SC_PAGESIZE);

      if (pages > 0 && size > 0)
        avail = (guint64) pages * (guint64) size;
    }
#endif
  avail = MIN (avail, cgroup_room ());
  avail = MIN (avail, rlimit_room ());
  return avail;
}

/* Whether need bytes fit under limit (0: none) and in what the machine has; when not,
 * *cap is the bound it crosses and the result says which. */
typedef enum { FITS, OVER_LIMIT, OVER_AVAILABLE } Shortfall;

static Shortfall
shortfall (guint64 need, guint64 limit, guint64 *cap)
{
  guint64 avail = espalier_memory_available ();

  if ((limit == 0 || need <= limit) && need <= avail)
    return FITS;
  if (limit != 0 && need > limit && limit <= avail)
    {
      *cap = limit;
      return OVER_LIMIT;
    }
  *cap = avail;
  return OVER_AVAILABLE;
}

gboolean
espalier_memory_fits (guint64 need, guint64 limit, char **why)
{
  g_autofree char *need_s = NULL, *cap_s = NULL;
  guint64 cap = 0;
  Shortfall s = shortfall (need, limit, &cap);

  if (why != NULL)
    *why = NULL;
  if (s == FITS || why == NULL)
    return s == FITS;
  need_s = g_format_size (need);
  cap_s = g_format_size (cap);
  if (s == OVER_LIMIT)
    /* TRANSLATORS: the end of a sentence: "<file>: the header (...) needs 1.0 TB of
     * memory, more than the memory limit of 2.0 GB" */
    *why = g_strdup_printf (_("needs %s of memory, more than the memory limit of %s"), need_s,
                            cap_s);
  else
    /* TRANSLATORS: the end of a sentence: "<file>: the header (...) needs 1.0 TB of
     * memory, more than the 23.4 GB available" */
    *why = g_strdup_printf (_("needs %s of memory, more than the %s available"), need_s, cap_s);
  return FALSE;
}

/* The error of an allocation of bytes for what that failed: refused before it was tried
 * (s, cap from shortfall), or by the system (s == FITS). Whole sentences, for
 * translators. */
static void
set_memory_error (GError **error, const char *what, guint64 bytes, Shortfall s, guint64 cap)
{
  g_autofree char *size = g_format_size (bytes);
  g_autofree char *cap_s = g_format_size (cap);

  switch (s)
    {
    case FITS:
      /* TRANSLATORS: %s is what was to be allocated, then a size: "the batch buffers
       * (1.2 GB)" */
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   _("Not enough memory for %s (%s): the system refused it"), what, size);
      break;
    case OVER_LIMIT:
      /* TRANSLATORS: "Not enough memory for the batch buffers: it needs 1.2 GB of memory, more
       * than the memory limit of 800 MB" */
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   _("Not enough memory for %s: it needs %s of memory, more than the memory limit of %s"),
                   what, size, cap_s);
      break;
    case OVER_AVAILABLE:
      /* TRANSLATORS: "Not enough memory for the batch buffers: it needs 1.2 GB of memory, more than
       * the 800 MB available" */
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   _("Not enough memory for %s: it needs %s of memory, more than the %s available"),
                   what, size, cap_s);
      break;
    }
}

gpointer
espalier_try_alloc (gsize n_elems, gsize elem_size, gboolean zero, const char *what,
                    GError **error)
{
  gpointer p = NULL;
  guint64 cap = 0;
  Shortfall s;
  gsize bytes;

  g_return_val_if_fail (what != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (elem_size != 0 && n_elems > G_MAXSIZE / elem_size)
    {
      /* TRANSLATORS: %s is what was to be allocated, "the batch buffers" */
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   _("Not enough memory for %s: the size does not fit this machine's address space"),
                   what);
      return NULL;
    }
  bytes = MAX (n_elems * elem_size, 1);
  s = shortfall (bytes, 0, &cap);
  if (s == FITS)
    p = zero ? g_try_malloc0 (bytes) : g_try_malloc (bytes);
  if (p == NULL)
    set_memory_error (error, what, bytes, s, cap);
  return p;
}

EsModel *
espalier_model_try_copy (const EsModel *model, const char *what, GError **error)
{
  EsModel *copy = NULL;
  guint64 bytes, cap = 0;
  Shortfall s;

  g_return_val_if_fail (model != NULL && what != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  bytes = ((guint64) es_model_n_params (model) + (guint64) es_model_n_buffers (model))
          * sizeof (float);
  s = shortfall (bytes, 0, &cap);
  if (s == FITS)
    copy = es_model_copy (model);
  if (copy == NULL)
    set_memory_error (error, what, bytes, s, cap);
  return copy;
}

/* a + b, or G_MAXUINT64 when it overflows */
static guint64
add_sat (guint64 a, guint64 b)
{
  return a > G_MAXUINT64 - b ? G_MAXUINT64 : a + b;
}

gboolean
espalier_limits_check_training (const EsModel       *model,
                                const EsTrainConfig *cfg,
                                guint                batch,
                                guint64              extra,
                                gsize               *budget_limit,
                                GError             **error)
{
  EsMemPlan least, full;
  guint64 avail, need_least, need_full;
  g_autofree char *why = NULL;

  g_return_val_if_fail (model != NULL && cfg != NULL && budget_limit != NULL, FALSE);

  avail = espalier_memory_available ();
  if (avail == G_MAXUINT64)
    return TRUE;
  es_mem_plan (model, cfg, 1, true, &least);
  need_least = add_sat (least.total, extra);
  if (!espalier_memory_fits (need_least, 0, &why))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                   /* TRANSLATORS: the end is "needs 1.2 GB of memory, more than the
                    * 800 MB available" */
                   _("Training cannot start: even one row at a time, this model %s. "
                     "Choose a smaller model or close other programs."), why);
      return FALSE;
    }
  es_mem_plan (model, cfg, (int) MIN (batch, (guint) G_MAXINT), true, &full);
  need_full = add_sat (full.total, extra);
  if (need_full > avail && avail > extra
      && (*budget_limit == 0 || *budget_limit > avail - extra))
    *budget_limit = (gsize) MIN (avail - extra, (guint64) G_MAXSIZE);
  return TRUE;
}
