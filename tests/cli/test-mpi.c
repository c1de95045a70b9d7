/* test-mpi.c: espalier-cli train --distributed under mpirun (Open MPI), as a user runs
 * it: two ranks with batch B train the same weights as one rank with batch 2B; a run
 * resumed from a checkpoint ends with the weights of the run that was never stopped (bit
 * for bit on the same rank count, within fp32 summation on another); a rank killed or
 * hung mid-run ends the whole job with a non-zero exit and a message, leaving the last
 * checkpoint whole; gradients staged through host buffers (the path of a GPU without a
 * CUDA-aware MPI, forced here on the CPU) give the weights of the direct reduction; on
 * the emulated CUDA backend, both the pinned staging and the CUDA-aware path train the
 * weights of one rank, and so does NCCL (an emulation of it over MPI), or MPI when NCCL
 * cannot be had. With --sync-batchnorm a model with BatchNorm trains as on one rank
 * too (CPU and emulated CUDA), and without it does not; a NaN on one rank stops every
 * rank at the same step with one message from rank 0, no timeout, no abort; so does a
 * validation pass or test evaluation that fails on one rank (a NaN, an allocation), every
 * rank ending with status 1 on the last good weights, and so does rank 0 failing to
 * write a checkpoint or the trained model, leaving the last checkpoint whole.
 * Skipped (77) when mpirun or the build's MPI is missing.
 *
 * Models are compared through their safetensors files: every tensor, value by value. */
#include "config.h"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmpdir;
static char *mpirun;
static char *tag;   /* marks this test's ranks in their environment */
static gboolean tell_exits;   /* each rank says its exit status on standard error */

/* Small and quick: a 2-D set and the playground template. With --val 0.1 --test 0.1 the
 * training split has 563 rows: 17 steps of 32 and a last one of 19, which two ranks
 * share unevenly (9 and 10 rows, weighted by rows) while the others are summed in place. */
#define DATA "moons:n=705"

typedef struct {
  int   status;
  char *out;
  char *err;
} Run;

static void
run_clear (Run *r)
{
  g_free (r->out);
  g_free (r->err);
}

static char **
job_environ (void)
{
  char **env = g_get_environ ();

  env = g_environ_setenv (env, "XDG_CACHE_HOME", tmpdir, TRUE);
  env = g_environ_setenv (env, "ESPALIER_MPI_TEST_TAG", tag, TRUE);
  env = g_environ_setenv (env, "OMPI_MCA_rmaps_base_oversubscribe", "1", TRUE);
  /* each rank to its own end, however the first to end did, for it to say how it ended */
  if (tell_exits)
    env = g_environ_setenv (env, "OMPI_MCA_orte_abort_on_non_zero_status", "0", TRUE);
  /* Open MPI's own allocations are not ours to account for in the sanitizer build: its
   * components stay loaded so that their frames have names to suppress. */
  env = g_environ_setenv (env, "OMPI_MCA_mca_base_component_disable_dlclose", "1", TRUE);
  env = g_environ_setenv (env, "LSAN_OPTIONS",
                          "fast_unwind_on_malloc=0:suppressions=" ESPALIER_SOURCE_DIR
                          "/tests/cli/mpi-lsan.supp", TRUE);
  return env;
}

/* argv of `timeout 120 mpirun ... -np np espalier-cli train ARGS...` (a hung job must not
 * hang the test); args NULL-terminated. */
static GPtrArray *
job_argv (int np, const char *const *args)
{
  GPtrArray *argv = g_ptr_array_new_with_free_func (g_free);

  g_ptr_array_add (argv, g_strdup ("timeout"));
  g_ptr_array_add (argv, g_strdup ("120"));
  g_ptr_array_add (argv, g_strdup (mpirun));
  g_ptr_array_add (argv, g_strdup ("--oversubscribe"));
  g_ptr_array_add (argv, g_strdup ("--allow-run-as-root"));
  g_ptr_array_add (argv, g_strdup ("-np"));
  g_ptr_array_add (argv, g_strdup_printf ("%d", np));
  if (tell_exits)
    {
      /* "rank R exited S" from a shell around each rank */
      g_ptr_array_add (argv, g_strdup ("/bin/sh"));
      g_ptr_array_add (argv, g_strdup ("-c"));
      g_ptr_array_add (argv, g_strdup ("\"$@\"; s=$?; echo \"rank $OMPI_COMM_WORLD_RANK exited $s\" >&2; "
                                       "exit $s"));
      g_ptr_array_add (argv, g_strdup ("sh"));
    }
  g_ptr_array_add (argv, g_strdup (ESPALIER_CLI));
  g_ptr_array_add (argv, g_strdup ("train"));
  for (int i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, g_strdup (args[i]));
  g_ptr_array_add (argv, NULL);
  return argv;
}

/* Run the job to its end; arguments NULL-terminated. */
static Run
mpi_train (int np, const char *first, ...)
{
  g_autoptr(GPtrArray) args = g_ptr_array_new ();
  g_autoptr(GPtrArray) argv = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) env = job_environ ();
  Run r = { 0 };
  int wait_status;
  va_list ap;

  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (char *) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  argv = job_argv (np, (const char *const *) args->pdata);
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, env, G_SPAWN_SEARCH_PATH, NULL,
                               NULL, &r.out, &r.err, &wait_status, &error));
  g_assert_no_error (error);
  r.status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : -1;
  if (r.status != 0)
    g_test_message ("job exited %d:\n%s\n%s", r.status, r.out, r.err);
  return r;
}

static char *
tmp_path (const char *name)
{
  return g_build_filename (tmpdir, name, NULL);
}

/* ------------------------------------------------------------------------------ */
/* safetensors files */

typedef struct {
  JsonParser *parser;
  JsonObject *header;
  guint8     *bytes;
  gsize       data_start, len;
} Tensors;

static void
tensors_clear (Tensors *t)
{
  g_clear_object (&t->parser);
  g_clear_pointer (&t->bytes, g_free);
}

static void
tensors_load (Tensors *t, const char *path)
{
  g_autoptr(GError) error = NULL;
  guint64 hlen = 0;

  memset (t, 0, sizeof *t);
  g_assert_true (g_file_get_contents (path, (char **) &t->bytes, &t->len, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (t->len, >=, 8);
  for (int i = 0; i < 8; i++)
    hlen |= (guint64) t->bytes[i] << (8 * i);
  g_assert_cmpuint (hlen, <=, t->len - 8);
  t->parser = json_parser_new ();
  g_assert_true (json_parser_load_from_data (t->parser, (const char *) t->bytes + 8,
                                             (gssize) hlen, &error));
  g_assert_no_error (error);
  t->header = json_node_get_object (json_parser_get_root (t->parser));
  t->data_start = 8 + hlen;
}

/* Tensor name of t as floats (n). */
static const guint8 *
tensor_bytes (Tensors *t, const char *name, gsize *n)
{
  JsonObject *o = json_object_get_object_member (t->header, name);
  JsonArray *offs = json_object_get_array_member (o, "data_offsets");
  gint64 a = json_array_get_int_element (offs, 0), b = json_array_get_int_element (offs, 1);

  g_assert_cmpstr (json_object_get_string_member (o, "dtype"), ==, "F32");
  g_assert_cmpuint (t->data_start + (gsize) b, <=, t->len);
  *n = (gsize) (b - a) / 4;
  return t->bytes + t->data_start + a;
}

static float
le_float (const guint8 *p)
{
  guint32 u = (guint32) p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16 | (guint32) p[3] << 24;
  float f;

  memcpy (&f, &u, 4);
  return f;
}

/* Every tensor of model files a and b (NAME.safetensors): bit for bit when tol is 0,
 * else |x - y| <= tol (1 + |x|). Returns the largest difference seen. */
static double
compare_models (const char *a, const char *b, double tol)
{
  g_autofree char *pa = g_strconcat (a, ".safetensors", NULL);
  g_autofree char *pb = g_strconcat (b, ".safetensors", NULL);
  Tensors ta, tb;
  GList *names;
  double worst = 0;
  guint tensors = 0;

  tensors_load (&ta, pa);
  tensors_load (&tb, pb);
  names = json_object_get_members (ta.header);
  for (GList *l = names; l != NULL; l = l->next)
    {
      const char *name = l->data;
      const guint8 *xa, *xb;
      gsize na, nb;

      if (g_str_equal (name, "__metadata__"))
        continue;
      g_assert_true (json_object_has_member (tb.header, name));
      xa = tensor_bytes (&ta, name, &na);
      xb = tensor_bytes (&tb, name, &nb);
      g_assert_cmpuint (na, ==, nb);
      tensors++;
      for (gsize i = 0; i < na; i++)
        {
          float x = le_float (xa + 4 * i), y = le_float (xb + 4 * i);
          double diff = fabs ((double) x - (double) y);

          g_assert_true (isfinite (x) && isfinite (y));
          worst = MAX (worst, diff);
          if (tol == 0 && memcmp (xa + 4 * i, xb + 4 * i, 4) != 0)
            g_error ("%s[%zu]: %.9g and %.9g differ (expected bit for bit)", name, i, x, y);
          if (diff > tol * (1 + fabs (x)))
            g_error ("%s[%zu]: %.9g and %.9g differ by %.3g, above %.3g", name, i, x, y, diff,
                     tol * (1 + fabs (x)));
        }
    }
  g_assert_cmpuint (tensors, >, 0);
  g_list_free (names);
  tensors_clear (&ta);
  tensors_clear (&tb);
  return worst;
}

/* The JSON events of a --json run's output with the given "event". */
static GPtrArray *
events (const char *out, const char *event)
{
  GPtrArray *found = g_ptr_array_new_with_free_func ((GDestroyNotify) json_node_unref);
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);

  for (int i = 0; lines[i] != NULL; i++)
    {
      g_autoptr(JsonParser) p = json_parser_new ();
      JsonObject *o;

      if (lines[i][0] != '{' || !json_parser_load_from_data (p, lines[i], -1, NULL))
        continue;
      o = json_node_get_object (json_parser_get_root (p));
      if (g_strcmp0 (json_object_get_string_member_with_default (o, "event", ""), event) == 0)
        g_ptr_array_add (found, json_node_copy (json_parser_get_root (p)));
    }
  return found;
}

static double
member (GPtrArray *evs, guint i, const char *name)
{
  g_assert_cmpuint (i, <, evs->len);
  return json_object_get_double_member (json_node_get_object (evs->pdata[i]), name);
}

/* ------------------------------------------------------------------------------ */

/* Two ranks with batch 16 and one rank with batch 32 take the same rows per step: after
 * two epochs (36 Adam steps) their weights differ only by fp32 summation order. The
 * tolerance: each step's gradient sums 32 rows in a different order (a relative error
 * of a few ulp, ~1e-7), and Adam's update divides by sqrt(v), so such differences stay
 * of the order of lr x 1e-7 per step; 1e-5 (1 + |w|) after 36 steps leaves a margin of
 * ten over what accumulates, and is far below the 1e-2 by which one step of a different
 * batch would move them. Losses and metrics reduced over ranks match the same way. */
static void
test_two_ranks_equal_one (void)
{
  g_autofree char *one = tmp_path ("one"), *two = tmp_path ("two");
  g_autoptr(GPtrArray) e1 = NULL, e2 = NULL, d2 = NULL, s2 = NULL, t1 = NULL, t2 = NULL;
  g_autoptr(GPtrArray) done = NULL;
  Run r1, r2;
  double worst;

  r1 = mpi_train (1, "--data", DATA, "--distributed", "--epochs", "2", "--batch", "32",
                  "--val", "0.1", "--test", "0.1", "--json", "-o", one, NULL);
  g_assert_cmpint (r1.status, ==, 0);
  r2 = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "2", "--batch", "16",
                  "--val", "0.1", "--test", "0.1", "--json", "-o", two, NULL);
  g_assert_cmpint (r2.status, ==, 0);

  worst = compare_models (one, two, 1e-5);
  g_test_message ("largest weight difference, 2 x 16 against 1 x 32: %.3g", worst);

  /* The run says what it ran: 2 ranks, 32 rows per step, the learning rate unscaled. */
  d2 = events (r2.out, "distributed");
  g_assert_cmpuint (d2->len, ==, 1);
  g_assert_cmpfloat (member (d2, 0, "ranks"), ==, 2);
  g_assert_cmpfloat (member (d2, 0, "global_batch"), ==, 32);
  g_assert_cmpfloat (member (d2, 0, "batch_per_rank"), ==, 16);
  g_assert_cmpstr (json_object_get_string_member (json_node_get_object (d2->pdata[0]),
                                                  "lr_scaling"), ==, "none");
  s2 = events (r2.out, "step");
  g_assert_cmpuint (s2->len, >, 0);
  g_assert_cmpfloat (member (s2, s2->len - 1, "ranks"), ==, 2);
  g_assert_cmpfloat (member (s2, s2->len - 1, "rank_samples_per_s"), >, 0);
  g_assert_cmpfloat (member (s2, s2->len - 1, "comm_s"), >, 0);
  /* one JSON stream: rank 1 stays quiet */
  done = events (r2.out, "done");
  g_assert_cmpuint (done->len, ==, 1);

  e1 = events (r1.out, "epoch");
  e2 = events (r2.out, "epoch");
  g_assert_cmpuint (e1->len, ==, 2);
  g_assert_cmpuint (e2->len, ==, 2);
  for (guint i = 0; i < 2; i++)
    {
      g_assert_cmpfloat_with_epsilon (member (e1, i, "train_loss"), member (e2, i, "train_loss"), 1e-5);
      g_assert_cmpfloat (member (e1, i, "train_accuracy"), ==, member (e2, i, "train_accuracy"));
      g_assert_cmpfloat_with_epsilon (member (e1, i, "val_loss"), member (e2, i, "val_loss"), 1e-5);
      g_assert_cmpfloat (member (e1, i, "val_accuracy"), ==, member (e2, i, "val_accuracy"));
    }
  t1 = events (r1.out, "metrics");
  t2 = events (r2.out, "metrics");
  g_assert_cmpuint (t1->len, ==, 1);
  g_assert_cmpuint (t2->len, ==, 1);
  g_assert_cmpfloat (member (t1, 0, "rows"), ==, member (t2, 0, "rows"));
  g_assert_cmpfloat (member (t1, 0, "accuracy"), ==, member (t2, 0, "accuracy"));
  g_assert_cmpfloat_with_epsilon (member (t1, 0, "loss"), member (t2, 0, "loss"), 1e-5);
  run_clear (&r1);
  run_clear (&r2);
}

/* Occurrences of needle in haystack. */
static guint
count_of (const char *haystack, const char *needle)
{
  guint n = 0;

  for (const char *p = strstr (haystack, needle); p != NULL; p = strstr (p + 1, needle))
    n++;
  return n;
}

/* Gradients staged through a host buffer (ESPALIER_MPI_STAGE=1: the path of a GPU
 * whose MPI is not CUDA-aware, download, reduce, upload, taken here on the CPU
 * backend) give the weights of the direct reduction bit for bit: in the even steps
 * each rank's gradient halved and then summed is the sum halved, exactly in fp32, and
 * in the uneven last step both paths scale each rank's part by its share before the
 * sum. Rank 0 logs the path it took. */
static void
test_staged (void)
{
  g_autofree char *direct = tmp_path ("direct"), *staged = tmp_path ("staged");
  Run r1, r2;

  g_setenv ("G_MESSAGES_DEBUG", "Espalier", TRUE);
  r1 = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "1", "--batch", "16",
                  "--val", "0.1", "--test", "0.1", "-o", direct, NULL);
  g_setenv ("ESPALIER_MPI_STAGE", "1", TRUE);
  r2 = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "1", "--batch", "16",
                  "--val", "0.1", "--test", "0.1", "-o", staged, NULL);
  g_unsetenv ("ESPALIER_MPI_STAGE");
  g_unsetenv ("G_MESSAGES_DEBUG");
  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  /* rank 0's log, on standard output as GLib writes debug messages (the others stay
   * quiet) */
  g_assert_cmpuint (count_of (r1.out, "rank 0: gradients reduced in place in host memory"), ==, 1);
  g_assert_cmpuint (count_of (r2.out, "rank 0: gradients reduced staged through host memory"), ==, 1);
  compare_models (direct, staged, 0);
  run_clear (&r1);
  run_clear (&r2);
}

/* On the CUDA backend (its CPU emulation, loaded as the CUDA module): with an MPI that
 * is not CUDA-aware (Debian's Open MPI) each bucket is staged through pinned host
 * memory, and two ranks with batch 16 train the weights of one rank with batch 32
 * within the fp32 tolerance above; with CUDA-aware MPI forced (the emulation's device
 * memory is host memory, so MPI can read it) the gradients are reduced in device memory
 * and give the staged weights bit for bit (the same sums, each part halved or scaled
 * by its share before them, or the whole halved after: exact in fp32). */
static void
test_cuda_emulated (void)
{
  g_autofree char *one = tmp_path ("cuda-one"), *staged = tmp_path ("cuda-staged");
  g_autofree char *aware = tmp_path ("cuda-aware");
  Run r1, r2, r3;

  if (!g_file_test (ESPALIER_CUDA_EMU_MODULE, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("this build has no CUDA emulation module");
      return;
    }
  g_setenv ("ESPALIER_CUDA_MODULE", ESPALIER_CUDA_EMU_MODULE, TRUE);
  g_setenv ("G_MESSAGES_DEBUG", "Espalier", TRUE);
  /* MPI's paths: no NCCL, even where a toolkit put libnccl.so.2 in the linker's path */
  g_setenv ("ESPALIER_NCCL", "0", TRUE);
  r1 = mpi_train (1, "--data", DATA, "--distributed", "--device", "cuda", "--epochs", "1",
                  "--batch", "32", "--val", "0.1", "--test", "0.1", "-o", one, NULL);
  r2 = mpi_train (2, "--data", DATA, "--distributed", "--device", "cuda", "--epochs", "1",
                  "--batch", "16", "--val", "0.1", "--test", "0.1", "-o", staged, NULL);
  g_setenv ("ESPALIER_MPI_CUDA_AWARE", "1", TRUE);
  r3 = mpi_train (2, "--data", DATA, "--distributed", "--device", "cuda", "--epochs", "1",
                  "--batch", "16", "--val", "0.1", "--test", "0.1", "-o", aware, NULL);
  g_unsetenv ("ESPALIER_MPI_CUDA_AWARE");
  g_unsetenv ("ESPALIER_NCCL");
  g_unsetenv ("G_MESSAGES_DEBUG");
  g_unsetenv ("ESPALIER_CUDA_MODULE");
  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  g_assert_cmpint (r3.status, ==, 0);
  g_assert_cmpuint (count_of (r2.out, "rank 0: gradients reduced staged through pinned host memory"), ==, 1);
  g_assert_cmpuint (count_of (r3.out, "rank 0: gradients reduced from device memory (CUDA-aware MPI)"), ==, 1);
  g_test_message ("largest weight difference on CUDA, 2 x 16 against 1 x 32: %.3g",
                  compare_models (one, staged, 1e-5));
  compare_models (staged, aware, 0);
  run_clear (&r1);
  run_clear (&r2);
  run_clear (&r3);
}

/* A 2-rank job on the (emulated) CUDA backend with batch 16 that writes its model to
 * out, with --json or not; run to its end. */
static Run
cuda_job (const char *out, gboolean json)
{
  return mpi_train (2, "--data", DATA, "--distributed", "--device", "cuda", "--epochs", "1",
                    "--batch", "16", "--val", "0.1", "--test", "0.1", "-o", out,
                    json ? "--json" : NULL, NULL);
}

/* NCCL on the emulated CUDA backend: ESPALIER_NCCL_LIBRARY names an NCCL emulated over
 * MPI (tests/cuda/emu/emu-nccl.c) on the emulation's device memory. Rank 0 says NCCL
 * summed the gradients, and the weights are the staged path's bit for bit (the same fp32
 * sums of the same parts: each rank's halved before a sum of two or the sum halved
 * after it, exact in fp32, and in the uneven last step each part scaled by its share
 * before it in both) and one rank's with batch 32 within the fp32 tolerance above.
 * When NCCL cannot be loaded (a missing file) or a rank cannot join the communicator,
 * every rank falls back to MPI (staged: Debian's Open MPI is not CUDA-aware), rank 0
 * says why once, and the weights are the staged path's. */
static void
test_nccl_emulated (void)
{
  g_autofree char *one = tmp_path ("nccl-one"), *staged = tmp_path ("nccl-staged");
  g_autofree char *nccl = tmp_path ("nccl"), *missing = tmp_path ("nccl-missing");
  g_autofree char *nojoin = tmp_path ("nccl-nojoin"), *lib = tmp_path ("no-such-libnccl.so.2");
  g_autoptr(GPtrArray) sum = NULL;
  JsonObject *o;
  Run r1, r2, r3, r4, r5;

  if (!g_file_test (ESPALIER_CUDA_EMU_MODULE, G_FILE_TEST_EXISTS)
      || !g_file_test (ESPALIER_NCCL_EMU_LIBRARY, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("this build has no CUDA or NCCL emulation");
      return;
    }
  g_setenv ("ESPALIER_CUDA_MODULE", ESPALIER_CUDA_EMU_MODULE, TRUE);
  g_setenv ("ESPALIER_NCCL", "0", TRUE);
  r1 = mpi_train (1, "--data", DATA, "--distributed", "--device", "cuda", "--epochs", "1",
                  "--batch", "32", "--val", "0.1", "--test", "0.1", "-o", one, NULL);
  r2 = cuda_job (staged, FALSE);
  g_unsetenv ("ESPALIER_NCCL");
  g_setenv ("ESPALIER_NCCL_LIBRARY", ESPALIER_NCCL_EMU_LIBRARY, TRUE);
  g_setenv ("G_MESSAGES_DEBUG", "Espalier", TRUE);
  r3 = cuda_job (nccl, TRUE);
  g_unsetenv ("G_MESSAGES_DEBUG");
  g_setenv ("ESPALIER_NCCL_EMU_FAIL_INIT", "1", TRUE);
  r5 = cuda_job (nojoin, FALSE);
  g_unsetenv ("ESPALIER_NCCL_EMU_FAIL_INIT");
  g_setenv ("ESPALIER_NCCL_LIBRARY", lib, TRUE);
  r4 = cuda_job (missing, FALSE);
  g_unsetenv ("ESPALIER_NCCL_LIBRARY");
  g_unsetenv ("ESPALIER_CUDA_MODULE");
  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  g_assert_cmpint (r3.status, ==, 0);
  g_assert_cmpint (r4.status, ==, 0);
  g_assert_cmpint (r5.status, ==, 0);

  /* what each run said it did: one line from rank 0 */
  g_assert_cmpuint (count_of (r2.out, "Gradients summed by: staged\n"), ==, 1);
  g_assert_cmpuint (count_of (r2.out, "NCCL not used: turned off by ESPALIER_NCCL=0\n"), ==, 1);
  g_assert_cmpuint (count_of (r3.out, "rank 0: gradients reduced with NCCL on the CUDA backend's stream"), ==, 1);
  sum = events (r3.out, "distributed_summary");
  g_assert_cmpuint (sum->len, ==, 1);
  o = json_node_get_object (sum->pdata[0]);
  g_assert_cmpstr (json_object_get_string_member (o, "reduction"), ==, "nccl");
  g_assert_true (json_object_get_null_member (o, "reduction_note"));
  g_assert_cmpfloat (json_object_get_double_member (o, "allreduce_bytes"), >, 0);
  g_assert_cmpuint (count_of (r4.out, "Gradients summed by: staged\n"), ==, 1);
  g_assert_cmpuint (count_of (r4.out, "NCCL not used: "), ==, 1);
  g_assert_nonnull (strstr (r4.out, lib));
  g_assert_nonnull (strstr (r4.out, "cannot be loaded"));
  g_assert_cmpuint (count_of (r5.out, "Gradients summed by: staged\n"), ==, 1);
  g_assert_cmpuint (count_of (r5.out, "NCCL not used: ncclCommInitRank failed on another rank\n"), ==, 1);

  g_test_message ("largest weight difference with NCCL, 2 x 16 against 1 x 32: %.3g",
                  compare_models (one, nccl, 1e-5));
  compare_models (staged, nccl, 0);
  compare_models (staged, missing, 0);
  compare_models (staged, nojoin, 0);
  run_clear (&r1);
  run_clear (&r2);
  run_clear (&r3);
  run_clear (&r4);
  run_clear (&r5);
}

/* The run that stops after epoch 2 leaves its last checkpoint at step 25, in the middle
 * of epoch 2; resumed to epoch 3 it must end on the weights of the run that went
 * through: bit for bit on 2 ranks, within the fp32 tolerance above on 1 rank with batch
 * 32. The resumed run's epoch records match too. */
static void
test_resume (void)
{
  g_autofree char *full = tmp_path ("full"), *ck = tmp_path ("ck.safetensors");
  g_autofree char *part = tmp_path ("part"), *resumed = tmp_path ("resumed");
  g_autofree char *other = tmp_path ("resumed1");
  g_autoptr(GPtrArray) ef = NULL, er = NULL;
  Run r;

  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "3", "--batch", "16",
                 "--json", "-o", full, NULL);
  g_assert_cmpint (r.status, ==, 0);
  ef = events (r.out, "epoch");
  run_clear (&r);

  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "2", "--batch", "16",
                 "--checkpoint", ck, "--checkpoint-every", "25", "-o", part, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "after step 25 (epoch 2)"));
  run_clear (&r);

  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "3", "--batch", "16",
                 "--resume", ck, "--json", "-o", resumed, NULL);
  g_assert_cmpint (r.status, ==, 0);
  compare_models (full, resumed, 0);
  er = events (r.out, "epoch");
  g_assert_cmpuint (er->len, ==, 2);   /* epochs 2 and 3 */
  for (guint i = 0; i < 2; i++)
    {
      g_assert_cmpfloat (member (er, i, "train_loss"), ==, member (ef, i + 1, "train_loss"));
      g_assert_cmpfloat (member (er, i, "val_loss"), ==, member (ef, i + 1, "val_loss"));
    }
  run_clear (&r);

  r = mpi_train (1, "--data", DATA, "--distributed", "--epochs", "3", "--batch", "32",
                 "--resume", ck, "-o", other, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "written by 2 ranks"));
  compare_models (full, other, 1e-5);
  run_clear (&r);

  /* a damaged checkpoint is refused, on every rank alike, and said so once */
  {
    g_autofree char *bad = tmp_path ("bad.safetensors");
    g_autofree char *bytes = NULL;
    gsize len;

    g_assert_true (g_file_get_contents (ck, &bytes, &len, NULL));
    bytes[len - 3] ^= 0x40;
    g_assert_true (g_file_set_contents (bad, bytes, (gssize) len, NULL));
    r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "3", "--batch", "16",
                   "--resume", bad, NULL);
    g_assert_cmpint (r.status, !=, 0);
    g_assert_nonnull (strstr (r.err, "SHA-256"));
    g_assert_null (strstr (strstr (r.err, "SHA-256") + 1, "SHA-256"));
    run_clear (&r);
  }
}

/* The pid of rank `rank` of this test's running job, or 0. */
static GPid
find_rank (int rank)
{
  g_autoptr(GDir) dir = g_dir_open ("/proc", 0, NULL);
  g_autofree char *want_tag = g_strdup_printf ("ESPALIER_MPI_TEST_TAG=%s", tag);
  g_autofree char *want_rank = g_strdup_printf ("OMPI_COMM_WORLD_RANK=%d", rank);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = NULL, *env = NULL;
      gsize len;
      gboolean has_tag = FALSE, has_rank = FALSE;

      if (!g_ascii_isdigit (name[0]))
        continue;
      path = g_strdup_printf ("/proc/%s/environ", name);
      if (!g_file_get_contents (path, &env, &len, NULL))
        continue;
      for (gsize off = 0; off < len; off += strlen (env + off) + 1)
        {
          has_tag |= g_str_equal (env + off, want_tag);
          has_rank |= g_str_equal (env + off, want_rank);
        }
      if (has_tag && has_rank)
        {
          g_autofree char *exe_path = g_strdup_printf ("/proc/%s/exe", name);
          g_autofree char *exe = g_file_read_link (exe_path, NULL);

          /* the rank itself, not mpirun's helpers */
          if (exe != NULL && g_str_has_suffix (exe, "espalier-cli"))
            return (GPid) atoi (name);
        }
    }
  return 0;
}

/* Start a long job that checkpoints every 5 steps with a collective timeout of 8 s, wait
 * for its first checkpoint, send sig to rank 1, and wait for the job to end. */
static Run
disturbed_job (const char *ck, int sig)
{
  const char *args[] = { "--data", "spiral:n=3000", "--distributed", "--epochs", "500",
                         "--batch", "16", "--checkpoint", ck, "--checkpoint-every", "5",
                         "--collective-timeout", "8", NULL };
  g_autoptr(GPtrArray) argv = job_argv (2, args);
  g_auto(GStrv) env = job_environ ();
  g_autoptr(GError) error = NULL;
  g_autofree char *out_path = tmp_path ("job.out"), *err_path = tmp_path ("job.err");
  GString *cmd = g_string_new ("exec");
  const char *sh[] = { "/bin/sh", "-c", NULL, NULL };
  GPid job, rank1 = 0;
  int wait_status;
  Run r = { 0 };

  for (guint i = 0; i + 1 < argv->len; i++)
    {
      g_autofree char *q = g_shell_quote (argv->pdata[i]);

      g_string_append_printf (cmd, " %s", q);
    }
  {
    g_autofree char *qo = g_shell_quote (out_path), *qe = g_shell_quote (err_path);

    g_string_append_printf (cmd, " >%s 2>%s", qo, qe);
  }
  sh[2] = cmd->str;
  g_unlink (ck);
  g_assert_true (g_spawn_async (NULL, (char **) sh, env, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                &job, &error));
  g_assert_no_error (error);

  /* the first checkpoint, then rank 1 (both within the 120 s the job may live) */
  for (int i = 0; i < 2400 && !g_file_test (ck, G_FILE_TEST_EXISTS); i++)
    g_usleep (50000);
  g_assert_true (g_file_test (ck, G_FILE_TEST_EXISTS));
  for (int i = 0; i < 200 && (rank1 = find_rank (1)) == 0; i++)
    g_usleep (10000);
  g_assert_cmpint (rank1, >, 0);
  g_assert_cmpint (kill (rank1, sig), ==, 0);

  g_assert_cmpint (waitpid (job, &wait_status, 0), ==, job);
  g_spawn_close_pid (job);
  r.status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : -1;
  /* a stopped rank the job could not end is ours to end */
  if (kill (rank1, 0) == 0)
    {
      kill (rank1, SIGKILL);
      kill (rank1, SIGCONT);
    }
  g_assert_true (g_file_get_contents (out_path, &r.out, NULL, NULL));
  g_assert_true (g_file_get_contents (err_path, &r.err, NULL, NULL));
  g_string_free (cmd, TRUE);
  g_test_message ("job exited %d:\n%s\n%s", r.status, r.out, r.err);
  return r;
}

/* The checkpoint at ck's tensors into t and its state (the header's "espalier"
 * metadata, parsed by p, which owns it); it must be a checkpoint. */
static JsonObject *
checkpoint_state (Tensors *t, JsonParser *p, const char *ck)
{
  JsonObject *meta, *state;

  tensors_load (t, ck);
  meta = json_object_get_object_member (t->header, "__metadata__");
  g_assert_nonnull (meta);
  g_assert_true (json_parser_load_from_data (p, json_object_get_string_member (meta, "espalier"),
                                             -1, NULL));
  state = json_node_get_object (json_parser_get_root (p));
  g_assert_cmpstr (json_object_get_string_member (state, "format"), ==, "espalier-checkpoint");
  return state;
}

/* The checkpoint left behind is whole: its header names where it stood, and a job
 * resumed from it finishes that epoch (the SHA-256 of its tensors is checked). */
static void
check_checkpoint_whole (const char *ck)
{
  g_autofree char *done = tmp_path ("after-failure");
  g_autofree char *epoch = NULL;
  g_autoptr(JsonParser) p = json_parser_new ();
  JsonObject *state;
  Tensors t;
  Run r;

  state = checkpoint_state (&t, p, ck);
  epoch = g_strdup_printf ("%" G_GINT64_FORMAT, json_object_get_int_member (state, "epoch"));
  tensors_clear (&t);

  r = mpi_train (2, "--data", "spiral:n=3000", "--distributed", "--epochs", epoch, "--batch",
                 "16", "--resume", ck, "-o", done, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Resuming from"));
  run_clear (&r);
}

/* A rank killed mid-run: the job ends (mpirun sees the rank die; a collective that
 * waits for it would hit the timeout) with a non-zero exit that says so. */
static void
test_rank_killed (void)
{
  g_autofree char *ck = tmp_path ("killed.safetensors");
  Run r = disturbed_job (ck, SIGKILL);

  g_assert_cmpint (r.status, !=, 0);
  g_assert_true (strstr (r.err, "signal 9") != NULL || strstr (r.err, "collective timeout") != NULL);
  run_clear (&r);
  check_checkpoint_whole (ck);
}

/* A rank that hangs (stopped): the others' collective times out and ends the job with
 * the message of the watchdog. */
static void
test_rank_hung (void)
{
  g_autofree char *ck = tmp_path ("hung.safetensors");
  Run r = disturbed_job (ck, SIGSTOP);

  g_assert_cmpint (r.status, !=, 0);
  g_assert_nonnull (strstr (r.err, "did not finish within the collective timeout of 8 s"));
  g_assert_nonnull (strstr (r.err, "Rank 0 of 2"));
  run_clear (&r);
  check_checkpoint_whole (ck);
}

/* ---- synchronized BatchNorm and the NaN stop across ranks ----------------------- */

/* A model with BatchNorm, trained with momentum SGD: Adam would divide the rounding
 * noise of the Dense bias before BatchNorm (whose true gradient is zero) by its own
 * tiny second moment and blow it up to steps of the learning rate. */
#define BN_ARGS "--data", DATA, "--spec", "dense:16,batchnorm,relu,dense:2,softmax", \
                "--distributed", "--epochs", "2", "--val", "0.1", "--test", "0.1", \
                "--optimizer", "momentum", "--lr", "0.05"

/* With --sync-batchnorm, two ranks with batch 16 train the weights and running
 * statistics of one rank with batch 32 (each BatchNorm layer normalizes with the
 * global batch's statistics; the last step's 9 and 10 rows weigh by rows), within
 * the fp32 summation tolerance of test_two_ranks_equal_one (measured: ~1e-7); without
 * it each rank normalizes with its own 16 rows and the weights move apart by far more
 * (measured: ~1e-1), which shows the flag does something. */
static void
test_sync_batchnorm (void)
{
  g_autofree char *one = tmp_path ("bn-one"), *sync = tmp_path ("bn-sync");
  g_autofree char *own = tmp_path ("bn-own");
  g_autoptr(GPtrArray) d = NULL;
  Run r1, r2, r3;
  double worst, apart;

  r1 = mpi_train (1, BN_ARGS, "--batch", "32", "-o", one, NULL);
  r2 = mpi_train (2, BN_ARGS, "--batch", "16", "--sync-batchnorm", "--json", "-o", sync, NULL);
  r3 = mpi_train (2, BN_ARGS, "--batch", "16", "-o", own, NULL);
  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  g_assert_cmpint (r3.status, ==, 0);
  worst = compare_models (one, sync, 1e-5);
  apart = compare_models (one, own, G_MAXDOUBLE);
  g_test_message ("largest difference from 1 x 32: %.3g with --sync-batchnorm, %.3g without",
                  worst, apart);
  g_assert_cmpfloat (apart, >, 1e-3);
  d = events (r2.out, "distributed");
  g_assert_cmpuint (d->len, ==, 1);
  g_assert_true (json_object_get_boolean_member (json_node_get_object (d->pdata[0]),
                                                 "sync_batchnorm"));
  run_clear (&r1);
  run_clear (&r2);
  run_clear (&r3);

  /* it goes with --distributed only */
  r1 = mpi_train (1, "--data", DATA, "--sync-batchnorm", NULL);
  g_assert_cmpint (r1.status, ==, 2);
  g_assert_nonnull (strstr (r1.err, "--sync-batchnorm goes with --distributed"));
  run_clear (&r1);
}

/* The same on the emulated CUDA backend: the statistics go through host memory (a few
 * floats per layer), the kernels are the CUDA ones. */
static void
test_sync_batchnorm_cuda (void)
{
  g_autofree char *one = tmp_path ("bn-cuda-one"), *sync = tmp_path ("bn-cuda-sync");
  Run r1, r2;

  if (!g_file_test (ESPALIER_CUDA_EMU_MODULE, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("this build has no CUDA emulation module");
      return;
    }
  g_setenv ("ESPALIER_CUDA_MODULE", ESPALIER_CUDA_EMU_MODULE, TRUE);
  /* the gradients through MPI: a real libnccl.so.2 on the library path would try (and
   * fail) to start on the emulated device */
  g_setenv ("ESPALIER_NCCL", "0", TRUE);
  r1 = mpi_train (1, BN_ARGS, "--device", "cuda", "--batch", "32", "-o", one, NULL);
  r2 = mpi_train (2, BN_ARGS, "--device", "cuda", "--batch", "16", "--sync-batchnorm", "-o",
                  sync, NULL);
  g_unsetenv ("ESPALIER_NCCL");
  g_unsetenv ("ESPALIER_CUDA_MODULE");
  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  g_test_message ("largest difference on CUDA, 2 x 16 with --sync-batchnorm against 1 x 32: "
                  "%.3g", compare_models (one, sync, 1e-5));
  run_clear (&r1);
  run_clear (&r2);
}

/* Rank 1 alone reads a NaN input at step 5 (ESPALIER_TEST_NAN_INPUT; a Tanh model, as
 * ReLU would turn the NaN into 0): both ranks stop at that step, through the gradient
 * reduction they take part in anyway, and end normally with status 1: rank 0 says
 * once which step, which rank and which layer, and that every rank went back to the
 * last good weights; no rank waits for the collective timeout (60 s here: a hang would
 * end the job with its message, which must not be there) and none aborts the job. */
static void
test_nan_one_rank (void)
{
  gint64 t0 = g_get_monotonic_time ();
  Run r;

  g_setenv ("ESPALIER_TEST_NAN_INPUT", "1:5", TRUE);
  r = mpi_train (2, "--data", DATA, "--spec", "dense:16,tanh,dense:2,softmax", "--distributed",
                 "--epochs", "2", "--batch", "16", "--collective-timeout", "60", NULL);
  g_unsetenv ("ESPALIER_TEST_NAN_INPUT");
  g_test_message ("the job ended after %.1f s:\n%s", (g_get_monotonic_time () - t0) / 1e6,
                  r.err);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_cmpuint (count_of (r.err, "Training stopped at step 5 (epoch 1): the loss of rank 1 "
                                     "became NaN. The first layer whose values went bad there "
                                     "is layer 1 (dense), in its outputs. Every rank holds the "
                                     "weights of step"), ==, 1);
  g_assert_null (strstr (r.err, "collective timeout"));
  g_assert_null (strstr (r.err, "MPI_ABORT"));
  run_clear (&r);
}

/* ---- one rank's validation pass or test evaluation failing ----------------------- */

/* The checkpoint at ck is whole (its SHA-256 is checked by the resume of
 * test_resume; here its header and values) and was written at step; every value in it
 * is finite. */
static void
check_checkpoint_finite (const char *ck, gint64 step)
{
  g_autoptr(JsonParser) p = json_parser_new ();
  JsonObject *state;
  GList *names;
  Tensors t;
  guint tensors = 0;

  state = checkpoint_state (&t, p, ck);
  g_assert_cmpint (json_object_get_int_member (state, "step"), ==, step);
  names = json_object_get_members (t.header);
  for (GList *l = names; l != NULL; l = l->next)
    {
      const guint8 *x;
      gsize n;

      if (g_str_equal (l->data, "__metadata__"))
        continue;
      x = tensor_bytes (&t, l->data, &n);
      for (gsize i = 0; i < n; i++)
        if (!isfinite (le_float (x + 4 * i)))
          g_error ("%s[%zu] of the checkpoint is not finite", (const char *) l->data, i);
      tensors++;
    }
  g_assert_cmpuint (tensors, >, 0);
  g_list_free (names);
  tensors_clear (&t);
}

/* The job failed alike on both ranks: none aborted the job or waited for the collective
 * timeout, and each ended normally with status 1: the shell around it says so
 * (tell_exits; mpirun, told not to end the job when a rank's status is not 0, then
 * exits 0), or, without it, mpirun's status is 1. */
static void
check_both_failed (const Run *r, gboolean told)
{
  if (told)
    {
      g_assert_cmpuint (count_of (r->err, "rank 0 exited 1\n"), ==, 1);
      g_assert_cmpuint (count_of (r->err, "rank 1 exited 1\n"), ==, 1);
    }
  else
    g_assert_cmpint (r->status, ==, 1);
  g_assert_null (strstr (r->err, "MPI_ABORT"));
  g_assert_null (strstr (r->err, "MPI_Abort"));
  g_assert_null (strstr (r->err, "collective timeout"));
}

/* Rank 1 alone meets a NaN input in its share of the validation rows after epoch 2
 * (ESPALIER_TEST_EVAL_FAIL=1:2; Tanh, which keeps the NaN): after that pass the ranks
 * agree that one failed, and every rank ends normally with status 1 (no MPI_Abort, no
 * timeout: 60 s here) while rank 0 alone says once which rank, which epoch, where the
 * values went bad and which weights every rank holds. With --val 0.1 --test 0.1 an
 * epoch is 18 steps (DATA), so epoch 2 ends at step 36: the weights then are finite,
 * and those are the last good state. As on the training NaN path nothing is saved to
 * -o; the checkpoint due at step 36 (every 18) is whole, of step 36, and finite. */
static void
test_eval_nan_one_rank (void)
{
  g_autofree char *ck = tmp_path ("eval-nan.safetensors"), *model = tmp_path ("eval-nan");
  g_autofree char *model_json = g_strconcat (model, ".json", NULL);
  Run r;

  g_setenv ("ESPALIER_TEST_EVAL_FAIL", "1:2", TRUE);
  tell_exits = TRUE;
  r = mpi_train (2, "--data", DATA, "--spec", "dense:16,tanh,dense:2,softmax", "--distributed",
                 "--epochs", "3", "--batch", "16", "--val", "0.1", "--test", "0.1",
                 "--checkpoint", ck, "--checkpoint-every", "18", "--collective-timeout", "60",
                 "-o", model, NULL);
  tell_exits = FALSE;
  g_unsetenv ("ESPALIER_TEST_EVAL_FAIL");
  g_test_message ("%s", r.err);
  check_both_failed (&r, TRUE);
  g_assert_cmpuint (count_of (r.err, "espalier-cli: training: rank 1: Validation after epoch 2 "
                                     "stopped: the loss on this rank's validation rows became "
                                     "NaN. The first layer whose values went bad is layer 1 "
                                     "(dense), in its outputs. Every rank holds the weights of "
                                     "step 36, the last good state.\n"), ==, 1);
  g_assert_false (g_file_test (model_json, G_FILE_TEST_EXISTS));
  check_checkpoint_finite (ck, 36);
  run_clear (&r);
}

/* Rank 1's validation pass after epoch 1 fails as allocating its batches would
 * (ESPALIER_TEST_EVAL_FAIL=1:1:alloc:WHAT), with a message longer than the 1 KiB that
 * goes to the other ranks, in 3-byte characters: every rank fails alike and rank 0
 * shows it cut before a whole character, valid UTF-8, with an ellipsis, and the weights
 * of step 18 (the end of epoch 1). Then a run whose rank 1 fails its share of the test
 * evaluation (R:test) ends the same way, with nothing saved. */
static void
test_eval_alloc_one_rank (void)
{
  g_autofree char *model = tmp_path ("eval-alloc");
  g_autofree char *model_json = g_strconcat (model, ".json", NULL);
  g_autoptr(GString) what = g_string_new ("the validation batches ");
  g_autofree char *env = NULL;
  const char *line, *end, *shared, *tail;
  Run r;

  for (int i = 0; i < 600; i++)
    g_string_append (what, "\xe4\xb8\xad");   /* U+4E2D */
  env = g_strdup_printf ("1:1:alloc:%s", what->str);
  g_setenv ("ESPALIER_TEST_EVAL_FAIL", env, TRUE);
  tell_exits = TRUE;
  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "2", "--batch", "16",
                 "--val", "0.1", "--test", "0.1", "--collective-timeout", "60", "-o", model,
                 NULL);
  tell_exits = FALSE;
  g_unsetenv ("ESPALIER_TEST_EVAL_FAIL");
  check_both_failed (&r, TRUE);
  line = strstr (r.err, "espalier-cli: training: rank 1: Validation after epoch 1 failed: Not "
                        "enough memory for the validation batches \xe4\xb8\xad");
  g_assert_nonnull (line);
  end = strchr (line, '\n');
  g_assert_nonnull (end);
  g_assert_true (g_utf8_validate (line, end - line, NULL));
  /* the part that crossed ranks: from after "rank 1: " to the tail every rank added, at
   * most 1 KiB with its NUL, and cut within 3 bytes of it (a character's length) */
  shared = strstr (line, "rank 1: ") + strlen ("rank 1: ");
  tail = strstr (line, "\xe2\x80\xa6 Every rank holds the weights of step 18, the last good "
                       "state.\n");
  g_assert_true (tail != NULL && tail < end);
  tail += strlen ("\xe2\x80\xa6");
  g_assert_cmpint (tail - shared, <=, 1023);
  g_assert_cmpint (tail - shared, >=, 1023 - 2);
  g_assert_cmpuint (count_of (r.err, "Validation after epoch"), ==, 1);
  g_assert_false (g_file_test (model_json, G_FILE_TEST_EXISTS));
  run_clear (&r);

  g_setenv ("ESPALIER_TEST_EVAL_FAIL", "1:test", TRUE);
  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "1", "--batch", "16",
                 "--val", "0.1", "--test", "0.1", "--collective-timeout", "60", "-o", model,
                 NULL);
  g_unsetenv ("ESPALIER_TEST_EVAL_FAIL");
  check_both_failed (&r, FALSE);
  g_assert_cmpuint (count_of (r.err, "espalier-cli: evaluating: rank 1: Not enough memory for "
                                     "the test batches (ESPALIER_TEST_EVAL_FAIL)\n"), ==, 1);
  g_assert_false (g_file_test (model_json, G_FILE_TEST_EXISTS));
  run_clear (&r);
}

/* ---- rank 0 failing to write a checkpoint or the model ------------------------------ */

/* The arguments of the runs below: 18 steps an epoch (DATA with --val 0.1 --test 0.1),
 * a checkpoint at ck every 9 steps, the model to model; NULL-terminated after epochs. */
#define WRITE_JOB(epochs, ck, model) \
  "--data", DATA, "--distributed", "--epochs", epochs, "--batch", "16", "--val", "0.1", \
  "--test", "0.1", "--checkpoint", ck, "--checkpoint-every", "9", \
  "--collective-timeout", "60", "-o", model, NULL

/* The checkpoint due at step 9 cannot be written (a real failure: its directory is a
 * regular file, which stops root too): every rank stops there and ends normally with
 * status 1, rank 0 alone saying once why, naming the checkpoint, and that no checkpoint
 * was written before; nothing is saved to -o. */
static void
test_checkpoint_unwritable (void)
{
  g_autofree char *blocker = tmp_path ("ck-blocker");
  g_autofree char *ck = g_build_filename (blocker, "ck.safetensors", NULL);
  g_autofree char *model = tmp_path ("ck-fail"), *model_json = g_strconcat (model, ".json", NULL);
  g_autofree char *expected = NULL;
  Run r;

  g_assert_true (g_file_set_contents (blocker, "", 0, NULL));
  tell_exits = TRUE;
  r = mpi_train (2, WRITE_JOB ("2", ck, model));
  tell_exits = FALSE;
  check_both_failed (&r, TRUE);
  expected = g_strdup_printf ("espalier-cli: training: rank 0: Cannot write the checkpoint: "
                              "Cannot create a temporary file for %s: Not a directory. "
                              "Training stopped on every rank at step 9 (epoch 1): the "
                              "checkpoints asked for cannot be written. No checkpoint was "
                              "written before in this run.\n", ck);
  g_assert_cmpuint (count_of (r.err, expected), ==, 1);
  g_assert_cmpuint (count_of (r.err, "Cannot write the checkpoint"), ==, 1);
  g_assert_false (g_file_test (model_json, G_FILE_TEST_EXISTS));
  run_clear (&r);
}

/* A checkpoint directory made read-only (chmod 0555) after a run that wrote its
 * checkpoint there: the next run's first checkpoint fails with "Permission denied" on
 * rank 0, every rank ends alike with status 1, and the file the first run wrote is left
 * as it was, byte for byte. Skipped as root, which the mode does not stop. */
static void
test_checkpoint_read_only (void)
{
  g_autofree char *dir = tmp_path ("ck-readonly");
  g_autofree char *ro_ck = g_build_filename (dir, "ck.safetensors", NULL);
  g_autofree char *model = tmp_path ("ck-ro"), *model_json = g_strconcat (model, ".json", NULL);
  g_autofree char *expected = NULL, *before = NULL, *after = NULL;
  gsize before_len = 0, after_len = 0;
  Run r;

  if (geteuid () == 0)
    {
      g_test_skip ("root writes into a read-only directory");
      return;
    }
  g_assert_cmpint (g_mkdir (dir, 0755), ==, 0);
  r = mpi_train (2, WRITE_JOB ("1", ro_ck, model));
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  check_checkpoint_finite (ro_ck, 18);
  g_assert_true (g_file_get_contents (ro_ck, &before, &before_len, NULL));
  g_unlink (model_json);

  g_assert_cmpint (g_chmod (dir, 0555), ==, 0);
  tell_exits = TRUE;
  r = mpi_train (2, WRITE_JOB ("2", ro_ck, model));
  tell_exits = FALSE;
  g_assert_cmpint (g_chmod (dir, 0755), ==, 0);
  check_both_failed (&r, TRUE);
  expected = g_strdup_printf ("espalier-cli: training: rank 0: Cannot write the checkpoint: "
                              "Cannot create a temporary file for %s: Permission denied. "
                              "Training stopped on every rank at step 9 (epoch 1)", ro_ck);
  g_assert_cmpuint (count_of (r.err, expected), ==, 1);
  g_assert_false (g_file_test (model_json, G_FILE_TEST_EXISTS));
  g_assert_true (g_file_get_contents (ro_ck, &after, &after_len, NULL));
  g_assert_cmpmem (before, before_len, after, after_len);
  run_clear (&r);
}

/* Rank 0 cannot save the trained model (-o into a directory that is a regular file,
 * found only after training): every rank ends normally with status 1 and rank 0 says
 * once that the weights were not saved and where the last checkpoint is (step 18, the
 * end of epoch 1), which is whole; without a checkpoint it says there is none. */
static void
test_save_unwritable (void)
{
  g_autofree char *blocker = tmp_path ("model-blocker"), *ck = tmp_path ("save-fail.safetensors");
  g_autofree char *model = g_build_filename (blocker, "model", NULL);
  g_autofree char *expected = NULL;
  const char *line;
  Run r;

  g_assert_true (g_file_set_contents (blocker, "", 0, NULL));
  tell_exits = TRUE;
  r = mpi_train (2, WRITE_JOB ("1", ck, model));
  check_both_failed (&r, TRUE);
  line = strstr (r.err, "espalier-cli: saving the model: rank 0: ");
  g_assert_nonnull (line);
  g_assert_cmpuint (count_of (r.err, "espalier-cli: saving the model:"), ==, 1);
  expected = g_strdup_printf (": Not a directory. The trained weights were not saved; the last "
                              "checkpoint, %s, holds those of step 18 (epoch 1).\n", ck);
  g_assert_nonnull (strstr (line, expected));
  g_assert_true (strstr (line, expected) < strchr (line, '\n'));
  run_clear (&r);
  check_checkpoint_finite (ck, 18);

  r = mpi_train (2, "--data", DATA, "--distributed", "--epochs", "1", "--batch", "16",
                 "--collective-timeout", "60", "-o", model, NULL);
  tell_exits = FALSE;
  check_both_failed (&r, TRUE);
  g_assert_cmpuint (count_of (r.err, ": Not a directory. The trained weights were not saved, "
                                     "and no checkpoint was written.\n"), ==, 1);
  run_clear (&r);
}

/* The same hang on the NCCL path (emulated, on the emulated CUDA backend, which the
 * default device "auto" takes): rank 0 waits for NCCL's allreduce (or for an MPI
 * collective it reached first) and ends the job at the timeout. */
static void
test_rank_hung_nccl (void)
{
  g_autofree char *ck = tmp_path ("hung-nccl.safetensors");
  Run r;

  if (!g_file_test (ESPALIER_CUDA_EMU_MODULE, G_FILE_TEST_EXISTS)
      || !g_file_test (ESPALIER_NCCL_EMU_LIBRARY, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("this build has no CUDA or NCCL emulation");
      return;
    }
  g_setenv ("ESPALIER_CUDA_MODULE", ESPALIER_CUDA_EMU_MODULE, TRUE);
  g_setenv ("ESPALIER_NCCL_LIBRARY", ESPALIER_NCCL_EMU_LIBRARY, TRUE);
  g_setenv ("G_MESSAGES_DEBUG", "Espalier", TRUE);
  r = disturbed_job (ck, SIGSTOP);
  g_unsetenv ("G_MESSAGES_DEBUG");
  g_unsetenv ("ESPALIER_NCCL_LIBRARY");
  g_unsetenv ("ESPALIER_CUDA_MODULE");
  g_assert_cmpuint (count_of (r.out, "rank 0: gradients reduced with NCCL on the CUDA backend's stream"), ==, 1);
  g_assert_cmpint (r.status, !=, 0);
  g_assert_nonnull (strstr (r.err, "did not finish within the collective timeout of 8 s"));
  g_assert_nonnull (strstr (r.err, "Rank 0 of 2"));
  run_clear (&r);
}

static gboolean
remove_tree (const char *path)
{
  g_autoptr(GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *child = g_build_filename (path, name, NULL);

      if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
        remove_tree (child);
      else
        g_unlink (child);
    }
  return g_rmdir (path) == 0;
}

/* Skip the whole program: 77 for the exit-code protocol; under --tap, meson (1.0) takes
 * a non-zero status for an error, so the plan "1..0 # SKIP" and status 0 say it. */
static int
skip_all (gboolean tap, const char *why)
{
  printf ("1..0 # SKIP %s\n", why);
  return tap ? 0 : 77;
}

int
main (int argc, char **argv)
{
  gboolean tap = FALSE;
  int status;

  for (int i = 1; i < argc; i++)
    tap |= g_str_equal (argv[i], "--tap");
#ifndef ESPALIER_HAVE_MPI
  return skip_all (tap, "this build has no MPI");
#endif
  mpirun = g_find_program_in_path ("mpirun");
  if (mpirun == NULL)
    return skip_all (tap, "mpirun is not installed (openmpi-bin)");
  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("espalier-mpi-XXXXXX", NULL);
  tag = g_strdup_printf ("%d-%" G_GINT64_FORMAT, (int) getpid (), g_get_real_time ());
  g_test_add_func ("/cli/mpi/two-ranks-equal-one", test_two_ranks_equal_one);
  g_test_add_func ("/cli/mpi/staged", test_staged);
  g_test_add_func ("/cli/mpi/cuda-emulated", test_cuda_emulated);
  g_test_add_func ("/cli/mpi/nccl-emulated", test_nccl_emulated);
  g_test_add_func ("/cli/mpi/resume", test_resume);
  g_test_add_func ("/cli/mpi/rank-killed", test_rank_killed);
  g_test_add_func ("/cli/mpi/rank-hung", test_rank_hung);
  g_test_add_func ("/cli/mpi/rank-hung-nccl", test_rank_hung_nccl);
  g_test_add_func ("/cli/mpi/sync-batchnorm", test_sync_batchnorm);
  g_test_add_func ("/cli/mpi/sync-batchnorm-cuda", test_sync_batchnorm_cuda);
  g_test_add_func ("/cli/mpi/nan-one-rank", test_nan_one_rank);
  g_test_add_func ("/cli/mpi/eval-nan-one-rank", test_eval_nan_one_rank);
  g_test_add_func ("/cli/mpi/eval-alloc-one-rank", test_eval_alloc_one_rank);
  g_test_add_func ("/cli/mpi/checkpoint-unwritable", test_checkpoint_unwritable);
  g_test_add_func ("/cli/mpi/checkpoint-read-only", test_checkpoint_read_only);
  g_test_add_func ("/cli/mpi/save-unwritable", test_save_unwritable);
  status = g_test_run ();
  remove_tree (tmpdir);
  g_free (tmpdir);
  g_free (mpirun);
  g_free (tag);
  return status;
}
