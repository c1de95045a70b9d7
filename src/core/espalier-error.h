/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-error.h: the error domain of core's own failures (training, models, files)
 * and the bridge from the engine's EsError to GError. Data loaders have their own
 * domain, ESPALIER_DATA_ERROR. */
#pragma once

#include <glib.h>

#include "es-common.h"

G_BEGIN_DECLS

#define ESPALIER_ERROR (espalier_error_quark ())

typedef enum {
  ESPALIER_ERROR_INVALID = 1,  /* a bad option or argument */
  ESPALIER_ERROR_SHAPE,        /* a model does not fit its data or its layers */
  ESPALIER_ERROR_MEMORY,       /* out of memory or over the memory budget */
  ESPALIER_ERROR_FORMAT,       /* a model or project file is corrupt or mismatched */
  ESPALIER_ERROR_NUMERIC,      /* the loss became NaN or infinite */
  ESPALIER_ERROR_UNSUPPORTED,  /* a backend cannot run something */
  ESPALIER_ERROR_IO,           /* a file could not be read or written */
} EspalierError;

GQuark espalier_error_quark (void);

/* Set *error from an engine error; prefix (may be NULL) is put before its message. */
void   espalier_error_from_es (GError **error, const EsError *es, const char *prefix);

/* Have the engine's messages translated as core's are (g_dgettext of GETTEXT_PACKAGE):
 * installs es_set_translate's hook. Call it once at start-up, after setlocale and
 * bindtextdomain and before any engine work (espalier-cli's and the app's main do);
 * more calls are harmless. Without it engine messages stay in English. */
void   espalier_i18n_init     (void);
/* The hook espalier_i18n_init installed, or NULL before it has run: for another copy of
 * the engine to translate alike (espalier-device.c gives it to the CUDA module when it
 * opens it, so espalier_i18n_init must come before the first use of a device). */
EsTranslateFunc espalier_i18n_translate_func (void);

G_END_DECLS
