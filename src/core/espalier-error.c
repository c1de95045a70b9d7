/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-error.c: core's error domain, the EsError bridge and the engine's message
 * translation. */
#include "config.h"

#include <gio/gio.h>
#include <glib/gi18n-lib.h>

#include "espalier-error.h"

G_DEFINE_QUARK (espalier-error-quark, espalier_error)

void
espalier_error_from_es (GError **error, const EsError *es, const char *prefix)
{
  EspalierError code;

  switch (es->code)
    {
    case ES_ERR_SHAPE: code = ESPALIER_ERROR_SHAPE; break;
    case ES_ERR_NOMEM:
    case ES_ERR_BUDGET: code = ESPALIER_ERROR_MEMORY; break;
    case ES_ERR_IO: code = ESPALIER_ERROR_IO; break;
    case ES_ERR_FORMAT: code = ESPALIER_ERROR_FORMAT; break;
    case ES_ERR_UNSUPPORTED: code = ESPALIER_ERROR_UNSUPPORTED; break;
    case ES_ERR_NUMERIC: code = ESPALIER_ERROR_NUMERIC; break;
    case ES_ERR_CANCELLED:
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CANCELLED, es->message);
      return;
    default: code = ESPALIER_ERROR_INVALID; break;
    }
  if (prefix != NULL)
    g_set_error (error, ESPALIER_ERROR, code, "%s: %s", prefix, es->message);
  else
    g_set_error_literal (error, ESPALIER_ERROR, code, es->message);
}

/* es_set_translate's hook: the engine's msgids are in our catalog (po/POTFILES.in lists
 * the engine files, es_error_set is a keyword). g_dgettext is thread-safe and its
 * strings live as long as the program. */
static const char *
translate_engine (const char *msgid)
{
  return g_dgettext (GETTEXT_PACKAGE, msgid);
}

/* Whether espalier_i18n_init has run: the CUDA module gets the hook only then, so that
 * its messages are in the same language as the engine's. */
static gint i18n_installed;

void
espalier_i18n_init (void)
{
  es_set_translate (translate_engine);
  g_atomic_int_set (&i18n_installed, TRUE);
}

EsTranslateFunc
espalier_i18n_translate_func (void)
{
  return g_atomic_int_get (&i18n_installed) ? translate_engine : NULL;
}
