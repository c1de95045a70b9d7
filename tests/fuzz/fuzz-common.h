/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-common.h: what the libFuzzer harnesses share: criticals and warnings made fatal
 * (a loader that logs one on user input has a bug the fuzzer should report), a private
 * temporary directory for the loaders that take a path, and the split of one input into
 * several files. Header-only, static; each harness is one .c file that defines
 * LLVMFuzzerTestOneInput, linked either with libFuzzer (-Dfuzz=true, clang) or with
 * fuzz-replay.c, which runs the corpus through it as a plain test. */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Between the files of one input (in every dictionary). */
#define FUZZ_SEP     "--espalier-fuzz-next-file--"
#define FUZZ_SEP_LEN (sizeof FUZZ_SEP - 1)

G_GNUC_UNUSED static char *fuzz_tmp_dir;

G_GNUC_UNUSED static void
fuzz_remove_tmp_dir (void)
{
  g_autoptr(GDir) d = NULL;
  const char *name;

  if (fuzz_tmp_dir == NULL)
    return;
  d = g_dir_open (fuzz_tmp_dir, 0, NULL);
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (fuzz_tmp_dir, name, NULL);

      g_unlink (path);
    }
  g_rmdir (fuzz_tmp_dir);
  g_clear_pointer (&fuzz_tmp_dir, g_free);
}

/* Once per process: messages in English, criticals fatal, 64 MB of memory, and the
 * temporary directory (in /dev/shm when there is one: nothing reaches a disk). */
G_GNUC_UNUSED static void
fuzz_init (void)
{
  static gboolean done;
  g_autofree char *tmpl = NULL;

  if (done)
    return;
  done = TRUE;
  g_setenv ("LANGUAGE", "C", TRUE);
  g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  /* A small machine (espalier-limits.h): the loaders must refuse what would not fit it,
   * well below libFuzzer's -rss_limit_mb, instead of allocating it. */
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "67108864", FALSE);
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_ERROR);
  if (g_file_test ("/dev/shm", G_FILE_TEST_IS_DIR) && access ("/dev/shm", W_OK) == 0)
    tmpl = g_strdup ("/dev/shm/espalier-fuzz-XXXXXX");
  else
    tmpl = g_build_filename (g_get_tmp_dir (), "espalier-fuzz-XXXXXX", NULL);
  fuzz_tmp_dir = g_mkdtemp (tmpl) != NULL ? g_steal_pointer (&tmpl) : NULL;
  if (fuzz_tmp_dir == NULL)
    g_error ("cannot create a temporary directory: %s", g_strerror (errno));
  atexit (fuzz_remove_tmp_dir);
}

/* dir/name holding data (size bytes); the path, g_free it. */
G_GNUC_UNUSED static char *
fuzz_write (const char *name, const void *data, size_t size)
{
  char *path = g_build_filename (fuzz_tmp_dir, name, NULL);
  g_autoptr(GError) error = NULL;

  if (!g_file_set_contents_full (path, data != NULL ? data : "", (gssize) size,
                                 G_FILE_SET_CONTENTS_NONE, 0600, &error))
    g_error ("%s", error->message);
  return path;
}

/* Split data at FUZZ_SEP into at most max parts (the last one keeps any further
 * separators); returns how many. parts[i] points into data. */
typedef struct {
  const uint8_t *data;
  size_t         size;
} FuzzPart;

G_GNUC_UNUSED static guint
fuzz_split (const uint8_t *data, size_t size, FuzzPart *parts, guint max)
{
  guint n = 0;

  while (n + 1 < max)
    {
      const uint8_t *at = size >= FUZZ_SEP_LEN ? memmem (data, size, FUZZ_SEP, FUZZ_SEP_LEN)
                                               : NULL;

      if (at == NULL)
        break;
      parts[n++] = (FuzzPart) { data, (size_t) (at - data) };
      size -= (size_t) (at - data) + FUZZ_SEP_LEN;
      data = at + FUZZ_SEP_LEN;
    }
  parts[n++] = (FuzzPart) { data, size };
  return n;
}
