/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-save.c: atomic, durable file writes (espalier-save.h).
 *
 * The sequence: mkstemp ".NAME.XXXXXX" in the target's directory, flock it, write,
 * fsync, rename over the target, fsync the directory. The lock says "a writer is alive":
 * the kernel drops it when the writer dies, however it dies, so the next save of the
 * same target can tell a killed writer's leftover (unlocked) from a live writer's file
 * (locked) and remove only the former. POSIX only; this is Linux-first code. */
#include "config.h"

#include "espalier-save.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>

/* The length of mkstemp's random part. */
#define TMP_RANDOM 6

/* format: a translated "Cannot write %s: %s", the path then the system's reason. */
static gboolean
set_io_error (GError **error, int errsv, const char *format, const char *path)
{
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errsv), format, path,
               g_strerror (errsv));
  return FALSE;
}

/* Whether name is a temporary file of target base: "." base "." and TMP_RANDOM
 * characters. */
static gboolean
is_temporary_of (const char *name, const char *base)
{
  gsize nb = strlen (base);

  return name[0] == '.' && strncmp (name + 1, base, nb) == 0 && name[1 + nb] == '.'
         && strlen (name + 2 + nb) == TMP_RANDOM;
}

/* Remove the temporary files of base in dir that no living writer holds (a writer
 * killed mid-save leaves one): those whose lock can be taken. */
static void
remove_stale_temporaries (const char *dir, const char *base)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  if (d == NULL)
    return;
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = NULL;
      struct stat by_fd, by_name;
      int fd;

      if (!is_temporary_of (name, base))
        continue;
      path = g_build_filename (dir, name, NULL);
      fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0)
        continue;
      /* Still the same file under that name (not renamed to its target meanwhile), a
       * plain file, and nobody holds it. */
      if (flock (fd, LOCK_EX | LOCK_NB) == 0 && fstat (fd, &by_fd) == 0
          && S_ISREG (by_fd.st_mode) && g_lstat (path, &by_name) == 0
          && by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino)
        g_unlink (path);
      close (fd);
    }
}

/* Whether af's locked descriptor is still the file at af->tmp_path (a cleaner that ran
 * between mkstemp and flock may have removed it). */
static gboolean
still_ours (const EspalierAtomicFile *af)
{
  struct stat by_fd, by_name;

  return fstat (af->fd, &by_fd) == 0 && g_lstat (af->tmp_path, &by_name) == 0
         && by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino;
}

gboolean
espalier_atomic_open (EspalierAtomicFile *af, const char *path, GError **error)
{
  g_autofree char *dir = NULL;
  g_autofree char *base = NULL;
  struct stat target;

  g_return_val_if_fail (af != NULL && af->fd < 0 && af->tmp_path == NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  dir = g_path_get_dirname (path);
  base = g_path_get_basename (path);
  g_free (af->path);
  af->path = g_strdup (path);
  remove_stale_temporaries (dir, base);

  for (int attempt = 0; attempt < 8; attempt++)
    {
      int errsv;

      af->tmp_path = g_strdup_printf ("%s/.%s.XXXXXX", dir, base);
      af->fd = g_mkstemp_full (af->tmp_path, O_WRONLY | O_CLOEXEC, 0644);
      if (af->fd < 0)
        {
          errsv = errno;
          g_clear_pointer (&af->tmp_path, g_free);
          return set_io_error (error, errsv, _("Cannot create a temporary file for %s: %s"),
                               path);
        }
      if (flock (af->fd, LOCK_EX | LOCK_NB) == 0 && still_ours (af))
        break;
      close (af->fd);
      af->fd = -1;
      g_clear_pointer (&af->tmp_path, g_free);
    }
  if (af->fd < 0)
    return set_io_error (error, EAGAIN, _("Cannot create a temporary file for %s: %s"), path);

  /* The new file keeps the permissions of the one it replaces. */
  if (stat (path, &target) == 0 && S_ISREG (target.st_mode))
    fchmod (af->fd, target.st_mode & 07777);
  return TRUE;
}

gboolean
espalier_atomic_write (EspalierAtomicFile *af, const void *data, gsize len, GChecksum *sum,
                       GError **error)
{
  const guint8 *p = data;

  g_return_val_if_fail (af != NULL && af->fd >= 0, FALSE);

  if (sum != NULL)
    g_checksum_update (sum, data, (gssize) len);
  while (len > 0)
    {
      gssize n = write (af->fd, p, MIN (len, (gsize) 1 << 30));

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return set_io_error (error, errno, _("Cannot write %s: %s"), af->tmp_path);
      p += n;
      len -= (gsize) n;
    }
  return TRUE;
}

/* Little-endian floats, whatever the host order. */
gboolean
espalier_atomic_write_floats (EspalierAtomicFile *af, const float *data, gint64 n, GChecksum *sum,
                              GError **error)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  return espalier_atomic_write (af, data, (gsize) n * sizeof (float), sum, error);
#else
  guint32 chunk[4096];

  while (n > 0)
    {
      gint64 m = MIN (n, (gint64) G_N_ELEMENTS (chunk));

      for (gint64 i = 0; i < m; i++)
        {
          guint32 u;

          memcpy (&u, &data[i], 4);
          chunk[i] = GUINT32_TO_LE (u);
        }
      if (!espalier_atomic_write (af, chunk, (gsize) m * 4, sum, error))
        return FALSE;
      data += m;
      n -= m;
    }
  return TRUE;
#endif
}

gboolean
espalier_atomic_sync (EspalierAtomicFile *af, GError **error)
{
  g_return_val_if_fail (af != NULL && af->fd >= 0, FALSE);

  if (fsync (af->fd) != 0)
    return set_io_error (error, errno, _("Cannot sync %s: %s"), af->tmp_path);
  return TRUE;
}

gboolean
espalier_atomic_commit (EspalierAtomicFile *af, GError **error)
{
  int fd;

  g_return_val_if_fail (af != NULL && af->fd >= 0 && af->tmp_path != NULL, FALSE);

  if (g_rename (af->tmp_path, af->path) != 0)
    return set_io_error (error, errno, _("Cannot replace %s: %s"), af->path);
  g_clear_pointer (&af->tmp_path, g_free);
  /* Closing drops the lock; the data was synced before the rename. */
  fd = af->fd;
  af->fd = -1;
  if (close (fd) != 0 && errno != EINTR)
    return set_io_error (error, errno, _("Cannot close %s: %s"), af->path);
  espalier_sync_directory (af->path);
  return TRUE;
}

void
espalier_atomic_clear (EspalierAtomicFile *af)
{
  g_return_if_fail (af != NULL);

  /* Unlink before closing: the lock keeps a cleaner off the file until it is gone. */
  if (af->tmp_path != NULL)
    g_unlink (af->tmp_path);
  if (af->fd >= 0)
    close (af->fd);
  af->fd = -1;
  g_clear_pointer (&af->tmp_path, g_free);
  g_clear_pointer (&af->path, g_free);
}

void
espalier_sync_directory (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd >= 0)
    {
      fsync (fd);
      close (fd);
    }
}

gboolean
espalier_save_atomic (const char *path, const void *data, gsize len, GCancellable *cancellable,
                      GError **error)
{
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  gboolean ok;

  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  ok = espalier_atomic_open (&af, path, error)
       && espalier_atomic_write (&af, data, len, NULL, error)
       && espalier_atomic_sync (&af, error)
       && !g_cancellable_set_error_if_cancelled (cancellable, error)
       && espalier_atomic_commit (&af, error);
  espalier_atomic_clear (&af);
  return ok;
}
