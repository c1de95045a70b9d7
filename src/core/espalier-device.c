/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-device.c: the device list, the user's device choice and the backend for
 * it, with the fallback to the CPU (espalier-device.h). The CUDA backend is a module
 * (libespalier-cuda.so, src/engine/cuda) opened on first use: programs start without
 * loading cuBLAS, and run where the CUDA libraries are missing. It is looked for in
 * $ESPALIER_CUDA_MODULE (the tests point it at the CUDA emulation's module), in this
 * build's tree, then where it is installed; without an NVIDIA driver it is not opened
 * at all. Its copy of the engine is given core's message-translation hook when it is
 * opened (espalier_i18n_translate_func). */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <gmodule.h>
#include <string.h>

#include "es-memory.h"
#include "espalier-device.h"
#include "espalier-error.h"

/* es-cuda.h's functions, from the module. */
typedef struct {
  int        (*device_count)     (void);
  bool       (*device_info)      (int device, EsCudaDeviceInfo *info, EsError *err);
  EsBackend *(*backend_new)      (int device, EsBudget *budget, EsError *err);
  int        (*backend_device)   (EsBackend *be);
  bool       (*backend_check)    (EsBackend *be, EsError *err);
  bool       (*backend_set_tf32) (EsBackend *be, bool on);
} CudaApi;

static CudaApi cuda;
static char *cuda_missing;   /* why the module is not there, or NULL */

/* Open the module at path into cuda; FALSE and *why when it cannot be. */
static gboolean
open_module (const char *path, char **why)
{
  static const struct { const char *name; gsize offset; } syms[] = {
    { "es_cuda_device_count",     G_STRUCT_OFFSET (CudaApi, device_count) },
    { "es_cuda_device_info",      G_STRUCT_OFFSET (CudaApi, device_info) },
    { "es_cuda_backend_new",      G_STRUCT_OFFSET (CudaApi, backend_new) },
    { "es_cuda_backend_device",   G_STRUCT_OFFSET (CudaApi, backend_device) },
    { "es_cuda_backend_check",    G_STRUCT_OFFSET (CudaApi, backend_check) },
    { "es_cuda_backend_set_tf32", G_STRUCT_OFFSET (CudaApi, backend_set_tf32) },
  };
  GModule *module = g_module_open (path, G_MODULE_BIND_LOCAL);
  void (*set_translate) (EsTranslateFunc fn) = NULL;

  if (module == NULL)
    {
      /* TRANSLATORS: %s is the dynamic loader's message */
      *why = g_strdup_printf (_("the CUDA backend cannot be loaded: %s"), g_module_error ());
      return FALSE;
    }
  for (guint i = 0; i < G_N_ELEMENTS (syms); i++)
    if (!g_module_symbol (module, syms[i].name,
                          &G_STRUCT_MEMBER (gpointer, &cuda, syms[i].offset)))
      {
        /* TRANSLATORS: the first %s is a file, the second a function name */
        *why = g_strdup_printf (_("the CUDA backend %s lacks %s"), path, syms[i].name);
        g_module_close (module);
        memset (&cuda, 0, sizeof cuda);
        return FALSE;
      }
  /* optional: a module built before it simply speaks English */
  if (g_module_symbol (module, "es_cuda_set_translate", (gpointer *) &set_translate))
    set_translate (espalier_i18n_translate_func ());
  g_module_make_resident (module);
  return TRUE;
}

/* The module's functions, opened once; NULL when there is none, *why (may be NULL)
 * saying why (a fragment, translated when the module was first asked for). */
static const CudaApi *
cuda_api (const char **why)
{
  static gsize once;

  if (g_once_init_enter (&once))
    {
      const char *env = g_getenv ("ESPALIER_CUDA_MODULE");
      GModule *driver;

      if (env != NULL && *env != '\0')
        open_module (env, &cuda_missing);
      else if (!ES_HAVE_CUDA)
        cuda_missing = g_strdup (_("this build of Espalier has no CUDA backend (nvcc was not "
                                   "found when it was built)"));
      else if ((driver = g_module_open ("libcuda.so.1", G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL)) == NULL)
        /* as the backend itself says it, without loading cuBLAS to say it */
        cuda_missing = g_strdup (_("no NVIDIA driver is installed (libcuda.so.1 was not found)"));
      else
        {
          g_module_close (driver);
          if (g_file_test (ESPALIER_CUDA_MODULE_BUILD, G_FILE_TEST_EXISTS))
            open_module (ESPALIER_CUDA_MODULE_BUILD, &cuda_missing);
          else
            open_module (ESPALIER_CUDA_MODULE_INSTALLED, &cuda_missing);
        }
      g_once_init_leave (&once, 1);
    }
  if (why != NULL)
    *why = cuda_missing;
  return cuda_missing == NULL ? &cuda : NULL;
}

void
espalier_device_clear (EspalierDevice *dev)
{
  g_clear_pointer (&dev->name, g_free);
}

/* The CPU's model name from /proc/cpuinfo, or "CPU". */
static char *
cpu_name (void)
{
  g_autofree char *text = NULL;
  char **lines;
  char *name = NULL;

  if (g_file_get_contents ("/proc/cpuinfo", &text, NULL, NULL))
    {
      lines = g_strsplit (text, "\n", -1);
      for (guint i = 0; lines[i] != NULL && name == NULL; i++)
        if (g_str_has_prefix (lines[i], "model name"))
          {
            const char *colon = strchr (lines[i], ':');

            if (colon != NULL)
              name = g_strstrip (g_strdup (colon + 1));
          }
      g_strfreev (lines);
    }
  if (name == NULL || *name == '\0')
    {
      g_free (name);
      name = g_strdup ("CPU");
    }
  return name;
}

/* The CUDA module's message for no usable device (es-cuda.cu, es-cuda-device.cu), whose
 * reason alone goes into core's messages. */
#define NO_DEVICE_MSGID "No CUDA device can be used: %s"

/* What the message fmt (one "%s") puts around its argument, *before and *after, or FALSE
 * when it has no single "%s". */
static gboolean
split_format (const char *fmt, char **before, char **after)
{
  const char *arg = strstr (fmt, "%s");

  if (arg == NULL || strchr (arg + 2, '%') != NULL || strchr (fmt, '%') != arg)
    return FALSE;
  *before = g_strndup (fmt, (gsize) (arg - fmt));
  *after = g_strdup (arg + 2);
  return TRUE;
}

/* message's reason when it is NO_DEVICE_MSGID's, in English or as the module's hook
 * (core's, espalier_i18n_translate_func) translated it; otherwise message itself. */
static char *
engine_reason (const char *message)
{
  EsTranslateFunc translate = espalier_i18n_translate_func ();
  const char *formats[2] = { NO_DEVICE_MSGID, NULL };

  if (translate != NULL)
    formats[1] = translate (NO_DEVICE_MSGID);
  for (guint i = 0; i < G_N_ELEMENTS (formats) && formats[i] != NULL; i++)
    {
      g_autofree char *before = NULL;
      g_autofree char *after = NULL;
      gsize len = strlen (message);

      if (split_format (formats[i], &before, &after)
          && len >= strlen (before) + strlen (after)
          && g_str_has_prefix (message, before) && g_str_has_suffix (message, after))
        return g_strndup (message + strlen (before), len - strlen (before) - strlen (after));
    }
  return g_strdup (message);
}

guint
espalier_cuda_device_count (void)
{
  const CudaApi *api = cuda_api (NULL);
  int n = api != NULL ? api->device_count () : 0;

  return n > 0 ? (guint) n : 0;
}

char *
espalier_cuda_unavailable_reason (void)
{
  const char *why = NULL;
  const CudaApi *api = cuda_api (&why);
  EsCudaDeviceInfo info;
  EsError es = { 0 };

  if (api == NULL)
    return g_strdup (why);
  if (api->device_count () > 0)
    return NULL;
  if (api->device_info (0, &info, &es))
    return NULL;
  return es.message[0] != '\0' ? engine_reason (es.message)
                               : g_strdup (_("no CUDA device can be used"));
}

GArray *
espalier_devices_list (char **no_cuda)
{
  GArray *list = g_array_new (FALSE, TRUE, sizeof (EspalierDevice));
  EspalierDevice cpu = { .device = ESPALIER_DEVICE_CPU };
  g_autofree char *first_error = NULL;
  const CudaApi *api = cuda_api (NULL);
  int n = (int) espalier_cuda_device_count ();

  g_array_set_clear_func (list, (GDestroyNotify) espalier_device_clear);
  cpu.name = cpu_name ();
  cpu.cores = g_get_num_processors ();
  g_array_append_val (list, cpu);
  for (int i = 0; i < n; i++)
    {
      EspalierDevice dev = { .device = i };
      EsError es = { 0 };

      if (!api->device_info (i, &dev.cuda, &es))
        {
          if (first_error == NULL)
            first_error = g_strdup (es.message);
          continue;
        }
      dev.name = g_strdup (dev.cuda.name[0] != '\0' ? dev.cuda.name : "CUDA");
      g_array_append_val (list, dev);
    }
  if (no_cuda != NULL)
    {
      *no_cuda = NULL;
      if (list->len == 1)
        *no_cuda = first_error != NULL ? g_steal_pointer (&first_error)
                                       : espalier_cuda_unavailable_reason ();
    }
  return list;
}

gboolean
espalier_device_parse (const char *text, gint *device, GError **error)
{
  g_autofree char *t = NULL;
  guint64 index = 0;

  g_return_val_if_fail (device != NULL, FALSE);

  t = g_strstrip (g_ascii_strdown (text != NULL ? text : "", -1));
  if (g_strcmp0 (t, "auto") == 0)
    {
      *device = ESPALIER_DEVICE_AUTO;
      return TRUE;
    }
  if (g_strcmp0 (t, "cpu") == 0)
    {
      *device = ESPALIER_DEVICE_CPU;
      return TRUE;
    }
  if (g_strcmp0 (t, "cuda") != 0
      && (!g_str_has_prefix (t, "cuda:")
          || !g_ascii_string_to_unsigned (t + 5, 10, 0, G_MAXINT, &index, NULL)))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("“%s” is not a device: use auto, cpu, cuda or cuda:N"), text);
      return FALSE;
    }
  if (index > 0 && index >= espalier_cuda_device_count ())
    {
      guint n = espalier_cuda_device_count ();

      if (n == 0)
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                     _("There is no CUDA device %u: this machine has none"), (guint) index);
      else if (n == 1)
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                     _("There is no CUDA device %u: this machine has one (cuda:0)"), (guint) index);
      else
        /* a range of two or more: languages with one plural form must not say "cuda:0 to
         * cuda:0" */
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                     g_dngettext (GETTEXT_PACKAGE,
                                  "There is no CUDA device %u: this machine has %u (cuda:0 to cuda:%u)",
                                  "There is no CUDA device %u: this machine has %u (cuda:0 to cuda:%u)",
                                  n),
                     (guint) index, n, n - 1);
      return FALSE;
    }
  *device = (gint) index;
  return TRUE;
}

char *
espalier_device_to_string (gint device)
{
  if (device == ESPALIER_DEVICE_AUTO)
    return g_strdup ("auto");
  if (device < 0)
    return g_strdup ("cpu");
  return g_strdup_printf ("cuda:%d", device);
}

char *
espalier_device_describe (gint device)
{
  const CudaApi *api = cuda_api (NULL);
  EsCudaDeviceInfo info;
  char mem[32];

  if (device == ESPALIER_DEVICE_AUTO)
    return g_strdup (C_("device", "Automatic"));
  if (device < 0)
    return g_strdup (C_("device", "CPU"));
  if (api == NULL || !api->device_info (device, &info, NULL))
    return g_strdup_printf (C_("device", "CUDA %d"), device);
  es_format_bytes (mem, sizeof mem, (double) info.mem_total);
  /* TRANSLATORS: a GPU: its index, name and memory */
  return g_strdup_printf (C_("device", "CUDA %d: %s (%s)"), device, info.name, mem);
}

gboolean
espalier_device_get_cuda_info (gint device, EsCudaDeviceInfo *info)
{
  const CudaApi *api = cuda_api (NULL);

  g_return_val_if_fail (info != NULL, FALSE);

  memset (info, 0, sizeof *info);
  return device >= 0 && api != NULL && api->device_info (device, info, NULL);
}

EsBackend *
espalier_backend_new (gint        device,
                      guint       threads,
                      EsBudget   *budget,
                      gboolean    tf32,
                      char      **fallback,
                      GError    **error)
{
  const char *why = NULL;
  const CudaApi *api = cuda_api (&why);
  EsError es = { 0 };
  EsBackend *be;
  gboolean asked = device >= 0;   /* AUTO falls back without a word */

  if (fallback != NULL)
    *fallback = NULL;
  if (device == ESPALIER_DEVICE_AUTO)
    device = espalier_cuda_device_count () > 0 ? 0 : ESPALIER_DEVICE_CPU;
  if (device >= 0)
    {
      be = api != NULL ? api->backend_new (device, budget, &es) : NULL;
      if (be != NULL)
        {
          api->backend_set_tf32 (be, tf32 != FALSE);
          return be;
        }
      if (api == NULL)
        {
          es.code = ES_ERR_UNSUPPORTED;
          g_strlcpy (es.message, why, sizeof es.message);
        }
      if (fallback != NULL && asked)
        {
          g_autofree char *reason = engine_reason (es.message);

          /* TRANSLATORS: %d is a CUDA device index, %s the reason it cannot be used */
          *fallback = g_strdup_printf (_("CUDA device %d cannot be used: %s. Running on the "
                                         "CPU instead."), device, reason);
        }
      es_error_clear (&es);
    }
  be = es_cpu_backend_new ((int) threads, budget, &es);
  if (be == NULL)
    {
      if (fallback != NULL)
        g_clear_pointer (fallback, g_free);
      espalier_error_from_es (error, &es, _("Could not start the CPU backend"));
    }
  return be;
}

gint
espalier_backend_get_device (EsBackend *be)
{
  const CudaApi *api = cuda_api (NULL);
  int d = be != NULL && api != NULL ? api->backend_device (be) : -1;

  return d >= 0 ? d : ESPALIER_DEVICE_CPU;
}

gboolean
espalier_backend_check (EsBackend *be, GError **error)
{
  EsError es = { 0 };

  if (espalier_backend_get_device (be) < 0)
    return TRUE;
  if (cuda_api (NULL)->backend_check (be, &es))
    return TRUE;
  espalier_error_from_es (error, &es, _("The CUDA device failed"));
  return FALSE;
}
