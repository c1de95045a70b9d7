/* SPDX-License-Identifier: GPL-3.0-or-later */
/* main.c: the espalier executable: translations, then the application. */
#include "config.h"

#include <glib/gi18n.h>
#include <locale.h>

#include "espalier-application.h"
#include "espalier-error.h"

int
main (int   argc,
      char *argv[])
{
  g_autoptr(EspalierApplication) app = NULL;

  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
  espalier_i18n_init ();

  app = espalier_application_new ();
  return g_application_run (G_APPLICATION (app), argc, argv);
}
