/* SPDX-License-Identifier: GPL-3.0-or-later */
/* scratch-test-util.h: for the core tests that write checkpoints: a file name in a
 * scratch directory of its own and its removal with the directory, and a progress
 * callback that cancels a run once it reaches an epoch. Header-only, static. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>

#include "espalier-trainer.h"

/* name in a new directory under the temporary directory */
G_GNUC_UNUSED static char *
tmp_path (const char *name)
{
  g_autofree char *dir = g_dir_make_tmp ("espalier-test-XXXXXX", NULL);

  g_assert_nonnull (dir);
  return g_build_filename (dir, name, NULL);
}

/* path and the directory tmp_path made for it */
G_GNUC_UNUSED static void
remove_with_dir (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);

  g_unlink (path);
  g_rmdir (dir);
}

/* Cancels the run (cancel) at its first step in epoch at_epoch or later. */
typedef struct {
  GCancellable *cancel;
  guint         at_epoch;
} Stopper;

G_GNUC_UNUSED static void
stop_in_epoch (const EspalierProgress *p, gpointer data)
{
  Stopper *s = data;

  if (p->kind == ESPALIER_PROGRESS_STEP && p->epoch >= s->at_epoch)
    g_cancellable_cancel (s->cancel);
}
