/* test-cli-device.c: espalier-cli's devices command (text and --json), --device and
 * --tf32 on train, eval, bench and profile, --precision on train: bad values are usage
 * errors (exit 2), and where no CUDA device can be used (this machine, CI) `--device
 * cuda` runs on the CPU and says why, in text and as a JSON message event. On a machine
 * with a GPU the fallback tests skip. */
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli-test-util.h"

/* `devices --json`: the number of CUDA devices, and why there is none (or NULL). */
static guint
cuda_devices (char **no_cuda)
{
  g_autoptr(JsonParser) p = json_parser_new ();
  Run r = cli ("devices", "--json", NULL);
  JsonObject *root;
  JsonArray *list;
  JsonObject *cpu;

  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, "");
  g_assert_true (json_parser_load_from_data (p, r.out, -1, NULL));
  root = json_node_get_object (json_parser_get_root (p));
  g_assert_cmpstr (json_object_get_string_member (root, "event"), ==, "devices");
  list = json_object_get_array_member (root, "devices");
  g_assert_cmpuint (json_array_get_length (list), >=, 1);
  cpu = json_array_get_object_element (list, 0);
  g_assert_cmpstr (json_object_get_string_member (cpu, "device"), ==, "cpu");
  g_assert_cmpint (json_object_get_int_member (cpu, "cores"), ==, g_get_num_processors ());
  g_assert_cmpstr (json_object_get_string_member (cpu, "name"), !=, "");
  for (guint i = 1; i < json_array_get_length (list); i++)
    {
      JsonObject *gpu = json_array_get_object_element (list, i);
      g_autofree char *id = g_strdup_printf ("cuda:%u", i - 1);

      g_assert_cmpstr (json_object_get_string_member (gpu, "device"), ==, id);
      g_assert_cmpint (json_object_get_int_member (gpu, "memory_total"), >, 0);
      g_assert_true (json_object_has_member (gpu, "compute_capability"));
      g_assert_true (json_object_has_member (gpu, "driver_cuda_version"));
      g_assert_true (json_object_has_member (gpu, "utilization_gpu"));
    }
  *no_cuda = json_object_get_null_member (root, "no_cuda")
             ? NULL : g_strdup (json_object_get_string_member (root, "no_cuda"));
  g_assert_true ((json_array_get_length (list) == 1) == (*no_cuda != NULL));
  run_clear (&r);
  return json_array_get_length (list) - 1;
}

static void
test_devices (void)
{
  g_autofree char *no_cuda = NULL;
  guint n = cuda_devices (&no_cuda);
  Run r = cli ("devices", NULL);

  g_assert_cmpint (r.status, ==, 0);
  g_test_message ("%s", r.out);
  g_assert_true (g_str_has_prefix (r.out, "cpu "));
  g_assert_true (strstr (r.out, " cores\n") != NULL || strstr (r.out, " core\n") != NULL);
  if (n == 0)
    {
      g_autofree char *line = g_strdup_printf ("No CUDA device: %s\n", no_cuda);

      g_assert_nonnull (strstr (r.out, line));
      g_assert_null (strstr (r.out, "cuda:0"));
    }
  else
    {
      g_assert_nonnull (strstr (r.out, "\ncuda:0 "));
      g_assert_nonnull (strstr (r.out, "compute capability"));
      g_assert_nonnull (strstr (r.out, "memory"));
    }
  run_clear (&r);

  r = cli ("devices", "extra", NULL);
  g_assert_cmpint (r.status, ==, 2);
  run_clear (&r);
  r = cli ("--help", NULL);
  g_assert_nonnull (strstr (r.out, "devices"));
  run_clear (&r);
  for (guint i = 0; i < 4; i++)
    {
      const char *cmd = (const char *[]) { "train", "eval", "bench", "profile" }[i];

      r = cli (cmd, "--help", NULL);
      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, "--device"));
      g_assert_nonnull (strstr (r.out, "--tf32"));
      run_clear (&r);
    }
}

static void
test_bad_values (void)
{
  static const char *const bad[] = { "cuda:x", "cuda:99", "gpu", "cuda:", "cuda:-1" };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    for (guint c = 0; c < 4; c++)
      {
        const char *cmd = (const char *[]) { "train", "eval", "bench", "profile" }[c];
        Run r = cmd[0] == 'e' ? cli (cmd, "m.json", "--device", bad[i], NULL)
                              : cli (cmd, "--device", bad[i], "--data", "spiral:n=30", NULL);

        g_assert_cmpint (r.status, ==, 2);
        g_assert_nonnull (strstr (r.err, cmd));
        if (g_str_equal (bad[i], "cuda:99"))
          g_assert_nonnull (strstr (r.err, "no CUDA device 99"));
        else
          g_assert_nonnull (strstr (r.err, bad[i]));
        run_clear (&r);
      }
  {
    Run r = cli ("train", "--precision", "fp8", "--data", "spiral:n=30", NULL);

    g_assert_cmpint (r.status, ==, 2);
    g_assert_nonnull (strstr (r.err, "fp8"));
    run_clear (&r);
  }
}

/* The JSON events of out with event == name. */
static guint
count_events (const char *out, const char *name, const char *contains)
{
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);
  guint n = 0;

  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_autoptr(JsonParser) p = json_parser_new ();
      JsonObject *o;

      if (lines[i][0] != '{')
        continue;
      g_assert_true (json_parser_load_from_data (p, lines[i], -1, NULL));
      o = json_node_get_object (json_parser_get_root (p));
      if (g_strcmp0 (json_object_get_string_member (o, "event"), name) == 0
          && (contains == NULL || strstr (lines[i], contains) != NULL))
        n++;
    }
  return n;
}

static void
test_fallback (void)
{
  g_autofree char *no_cuda = NULL;
  g_autofree char *model = g_build_filename (tmpdir, "fallback", NULL);
  g_autofree char *model_json = g_strconcat (model, ".json", NULL);
  Run r;

  if (cuda_devices (&no_cuda) > 0)
    {
      g_test_skip ("a CUDA device is present: no fallback");
      return;
    }
  r = cli ("train", "--data", "spiral:n=90", "--epochs", "1", "--device", "cuda", "--tf32",
           "--precision", "fp32", "-o", model, NULL);
  g_test_message ("%s%s", r.out, r.err);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "CUDA device 0 cannot be used"));
  g_assert_nonnull (strstr (r.out, no_cuda));
  g_assert_nonnull (strstr (r.out, "Running on the CPU instead"));
  run_clear (&r);

  r = cli ("train", "--data", "spiral:n=90", "--epochs", "1", "--device", "cuda:0", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpuint (count_events (r.out, "message", "Running on the CPU instead"), ==, 1);
  g_assert_cmpuint (count_events (r.out, "epoch", NULL), ==, 1);
  run_clear (&r);

  /* the CPU and the automatic choice say nothing */
  for (guint i = 0; i < 2; i++)
    {
      r = cli ("train", "--data", "spiral:n=90", "--epochs", "1", "--device", i ? "auto" : "cpu",
               NULL);
      g_assert_cmpint (r.status, ==, 0);
      g_assert_null (strstr (r.out, "CUDA"));
      g_assert_null (strstr (r.err, "CUDA"));
      run_clear (&r);
    }

  r = cli ("eval", model_json, "--device", "cuda", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.err, "Running on the CPU instead"));
  g_assert_nonnull (strstr (r.out, "accuracy"));
  run_clear (&r);

  r = cli ("bench", "--model", "mlp", "--rows", "64", "--reps", "100", "--device", "cuda",
           "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpuint (count_events (r.out, "message", "Running on the CPU instead"), ==, 1);
  g_assert_cmpuint (count_events (r.out, "bench", "\"device\":\"cpu\""), ==, 1);
  run_clear (&r);

  r = cli ("profile", "--data", "spiral:n=90", "--steps", "3", "--device", "cuda", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "device: CPU"));
  run_clear (&r);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("espalier-cli-device-XXXXXX", NULL);
  g_test_add_func ("/cli-device/devices", test_devices);
  g_test_add_func ("/cli-device/bad-values", test_bad_values);
  g_test_add_func ("/cli-device/fallback", test_fallback);
  status = g_test_run ();
  {
    g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);

    if (system (cmd) != 0)
      g_printerr ("could not remove %s\n", tmpdir);
  }
  g_free (tmpdir);
  return status;
}
