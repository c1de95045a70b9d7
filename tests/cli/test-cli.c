/* test-cli.c: espalier-cli as a user runs it: exit codes (0, 1, 2), messages that say
 * what went wrong, --help for every command, --json events, a train/save/eval/info/bench
 * round on a generated set, Ctrl-C stopping a run without writing the model, and the
 * optimization commands (prune, quantize, reduce, sensitivity, compare) and export/import
 * (ONNX, safetensors, C) on good and bad arguments, and profile with its trace, advice
 * and --apply. */
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>

#include "cli-test-util.h"

static void
test_usage (void)
{
  Run r = cli (NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "Usage"));
  run_clear (&r);

  r = cli ("frobnicate", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "unknown command 'frobnicate'"));
  run_clear (&r);

  r = cli ("train", "--no-such-flag", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "--no-such-flag"));
  g_assert_nonnull (strstr (r.err, "--help"));
  run_clear (&r);

  r = cli ("train", "--epochs", "-3", NULL);
  g_assert_cmpint (r.status, ==, 2);
  run_clear (&r);

  r = cli ("train", "--optimizer", "lion", "--data", "spiral:n=30", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "optimizer"));
  run_clear (&r);

  r = cli ("eval", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "model file"));
  run_clear (&r);
}

static void
test_help (void)
{
  const char *commands[] = { "train", "eval", "info", "datasets", "bench" };

  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      Run r = cli (commands[i], "--help", NULL);

      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, "Usage"));
      g_assert_nonnull (strstr (r.out, commands[i]));
      run_clear (&r);
    }
  {
    Run r = cli ("--help", NULL);
    g_assert_cmpint (r.status, ==, 0);
    for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
      g_assert_nonnull (strstr (r.out, commands[i]));
    run_clear (&r);
  }
}

static void
test_datasets (void)
{
  Run r = cli ("datasets", NULL);

  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "fashion-mnist"));
  g_assert_nonnull (strstr (r.out, "spiral"));
  run_clear (&r);

  r = cli ("datasets", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    g_autoptr(JsonParser) p = json_parser_new ();
    g_assert_true (json_parser_load_from_data (p, r.out, -1, NULL));
  }
  run_clear (&r);
}

/* Parse --json output: one object per line; returns the events in order. */
static GPtrArray *
events (const char *out)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);

  for (int i = 0; lines[i] != NULL; i++)
    {
      g_autoptr(JsonParser) p = json_parser_new ();
      g_autoptr(GError) error = NULL;
      JsonObject *o;

      if (lines[i][0] == '\0')
        continue;
      g_assert_true (json_parser_load_from_data (p, lines[i], -1, &error));
      g_assert_no_error (error);
      o = json_node_get_object (json_parser_get_root (p));
      g_ptr_array_add (names, g_strdup (json_object_get_string_member (o, "event")));
    }
  return names;
}

static gboolean
has_event (GPtrArray *ev, const char *name)
{
  for (guint i = 0; i < ev->len; i++)
    if (g_str_equal (g_ptr_array_index (ev, i), name))
      return TRUE;
  return FALSE;
}

static void
test_train_eval_round (void)
{
  g_autofree char *out = g_build_filename (tmpdir, "spiral-model", NULL);
  g_autofree char *json = g_strconcat (out, ".json", NULL);
  g_autofree char *st = g_strconcat (out, ".safetensors", NULL);
  g_autoptr(GPtrArray) ev = NULL;
  guint epochs = 0;
  Run r;

  r = cli ("train", "--data", "spiral:n=150,arms=3,seed=2", "--model", "playground", "--epochs", "5", "--test", "0.2",
           "--json", "-o", out, NULL);
  g_assert_cmpint (r.status, ==, 0);
  ev = events (r.out);
  for (guint i = 0; i < ev->len; i++)
    epochs += g_str_equal (g_ptr_array_index (ev, i), "epoch");
  g_assert_cmpuint (epochs, ==, 5);
  g_assert_true (has_event (ev, "dataset"));
  g_assert_true (has_event (ev, "start"));
  g_assert_true (has_event (ev, "metrics"));
  g_assert_true (has_event (ev, "saved"));
  g_assert_cmpstr (g_ptr_array_index (ev, ev->len - 1), ==, "done");
  /* step, epoch and done events count the products that fell back to fp32: none in
   * fp32 on the CPU, and no sentence about them */
  g_assert_nonnull (strstr (r.out, "\"fp32_products\":0"));
  g_assert_null (strstr (r.out, "\"fp32_products\":1"));
  g_assert_null (strstr (r.out, "ran in fp32"));
  g_assert_true (g_file_test (json, G_FILE_TEST_IS_REGULAR));
  g_assert_true (g_file_test (st, G_FILE_TEST_IS_REGULAR));
  run_clear (&r);

  r = cli ("eval", json, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "test:"));
  g_assert_nonnull (strstr (r.out, "accuracy"));
  g_assert_nonnull (strstr (r.out, "class 2"));
  run_clear (&r);

  r = cli ("eval", json, "--split", "all", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "\"rows\":150"));
  run_clear (&r);

  r = cli ("info", json, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Dense"));
  g_assert_nonnull (strstr (r.out, "parameters"));
  g_assert_nonnull (strstr (r.out, "memory plan"));
  run_clear (&r);

  r = cli ("bench", json, "--reps", "200", "--rows", "100", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "latency_batch1_us"));
  run_clear (&r);

  /* plain (non-terminal) output: one line per epoch, no carriage returns */
  r = cli ("train", "--data", "moons:n=100", "--epochs", "3", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "epoch 3/3"));
  g_assert_null (strchr (r.out, '\r'));
  g_assert_null (strchr (r.err, '\r'));
  run_clear (&r);
}

/* A CSV cleaned on the way in and written back out. */
static void
test_export_csv (void)
{
  g_autofree char *in = g_build_filename (tmpdir, "dirty.csv", NULL);
  g_autofree char *out = g_build_filename (tmpdir, "clean.csv", NULL);
  g_autofree char *text = NULL;
  Run r;

  g_assert_true (g_file_set_contents (in, "a;b;label\n1;2;x\n;4;y\n1;2;x\n5;NA;y\n", -1, NULL));
  r = cli ("datasets", "--data", in, "--ffill", "--drop-duplicates", "--export-csv", out, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Wrote"));
  g_assert_true (g_file_get_contents (out, &text, NULL, NULL));
  g_test_message ("%s", text);
  g_assert_true (g_str_has_prefix (text, "a,b,label\n"));
  g_assert_nonnull (strstr (text, "\n1,4,y\n"));   /* the empty a filled from above */
  g_assert_nonnull (strstr (text, "\n5,2,y"));      /* NA filled from the row above, before duplicates go */
  {
    g_auto(GStrv) lines = g_strsplit (text, "\n", -1);
    g_assert_cmpuint (g_strv_length (lines), ==, 5);  /* header, 3 rows, "" (the duplicate went) */
  }
  run_clear (&r);

  r = cli ("datasets", "--export-csv", out, NULL);
  g_assert_cmpint (r.status, ==, 2);
  run_clear (&r);
}

/* A model trained on standardized data is evaluated on standardized data again: eval
 * reports the same test metrics the training run printed. */
static void
test_eval_keeps_preprocessing (void)
{
  g_autofree char *csv = g_build_filename (tmpdir, "scaled.csv", NULL);
  g_autofree char *model = g_build_filename (tmpdir, "scaled", NULL);
  g_autofree char *json = g_strconcat (model, ".json", NULL);
  g_autoptr(GString) text = g_string_new ("width,height,kind\n");
  const char *train_line, *eval_line;
  Run r, e;

  /* two classes far from the origin: without standardization the model sees nonsense */
  for (int i = 0; i < 400; i++)
    g_string_append_printf (text, "%d,%d,%s\n", 1000 + (i * 37) % 50 + (i % 2) * 60,
                            5000 + (i * 11) % 40, i % 2 ? "big" : "small");
  g_assert_true (g_file_set_contents (csv, text->str, -1, NULL));
  r = cli ("train", "--data", csv, "--standardize", "--spec", "dense:8,tanh,dense:2,softmax",
           "--epochs", "30", "--lr", "0.01", "-o", model, NULL);
  g_assert_cmpint (r.status, ==, 0);
  e = cli ("eval", json, NULL);
  g_assert_cmpint (e.status, ==, 0);
  train_line = strstr (r.out, "test:");
  eval_line = strstr (e.out, "test:");
  g_assert_nonnull (train_line);
  g_assert_nonnull (eval_line);
  {
    g_autofree char *a = g_strndup (train_line, strcspn (train_line, "\n"));
    g_autofree char *b = g_strndup (eval_line, strcspn (eval_line, "\n"));
    g_test_message ("train: %s / eval: %s", a, b);
    g_assert_cmpstr (a, ==, b);
  }
  run_clear (&r);
  run_clear (&e);
}

static void
test_failures (void)
{
  g_autofree char *ragged = g_build_filename (tmpdir, "ragged.csv", NULL);
  g_autofree char *broken = g_build_filename (tmpdir, "broken.json", NULL);
  Run r;

  r = cli ("eval", "/nonexistent/model.json", NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "model.json"));
  run_clear (&r);

  r = cli ("train", "--data", "/nonexistent/table.csv", NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "table.csv"));
  run_clear (&r);

  g_assert_true (g_file_set_contents (ragged, "a,b,label\n1,2,0\n3,4\n5,6,1\n", -1, NULL));
  r = cli ("train", "--data", ragged, NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "ragged.csv"));
  g_assert_nonnull (strstr (r.err, "line 3"));
  run_clear (&r);

  g_assert_true (g_file_set_contents (broken, "{ \"format\": ", -1, NULL));
  r = cli ("info", broken, NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "broken.json"));
  run_clear (&r);

  r = cli ("train", "--data", "spiral:n=60", "--spec", "dense:8,relu,dense:5,softmax", NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "3 classes"));
  run_clear (&r);

  r = cli ("train", "--data", "spiral:n=60", "--spec", "conv2d:4:3", NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "Conv2D"));
  run_clear (&r);

  r = cli ("train", "--data", "spiral:n=60", "--json", "--spec", "dense:8,relu,dense:5", NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.out, "\"event\":\"error\""));
  run_clear (&r);
}

/* The epoch lines of a --json run, as text. */
static char *
epoch_lines (const char *out)
{
  GString *s = g_string_new (NULL);
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);

  for (int i = 0; lines[i] != NULL; i++)
    if (strstr (lines[i], "\"event\":\"epoch\"") != NULL)
      {
        /* drop the wall time, keep losses and accuracies */
        char *secs = strstr (lines[i], ",\"seconds\"");
        if (secs != NULL)
          *secs = '\0';
        g_string_append_printf (s, "%s\n", lines[i]);
      }
  return g_string_free (s, FALSE);
}

/* The same seed and thread count give the same losses, run to run. */
static void
test_deterministic (void)
{
  g_autofree char *a = NULL, *b = NULL;
  Run r1 = cli ("train", "--data", "moons:n=400,seed=3", "--spec", "dense:16,relu,dropout:0.2,dense:2,softmax",
                "--epochs", "4", "--batch", "16", "--seed", "5", "--threads", "2", "--json", NULL);
  Run r2 = cli ("train", "--data", "moons:n=400,seed=3", "--spec", "dense:16,relu,dropout:0.2,dense:2,softmax",
                "--epochs", "4", "--batch", "16", "--seed", "5", "--threads", "2", "--json", NULL);

  g_assert_cmpint (r1.status, ==, 0);
  g_assert_cmpint (r2.status, ==, 0);
  a = epoch_lines (r1.out);
  b = epoch_lines (r2.out);
  g_assert_cmpstr (a, !=, "");
  g_assert_cmpstr (a, ==, b);
  run_clear (&r1);
  run_clear (&r2);
}

/* Ctrl-C in the middle of a run: the job stops at a step boundary, says so, exits 1 and
 * does not write the model. */
static void
test_interrupt (void)
{
  g_autofree char *out = g_build_filename (tmpdir, "interrupted", NULL);
  g_autofree char *json = g_strconcat (out, ".json", NULL);
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                                                       | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr(GSubprocess) proc = NULL;
  g_autoptr(GDataInputStream) lines = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *line = NULL;

  g_subprocess_launcher_setenv (launcher, "XDG_CACHE_HOME", tmpdir, TRUE);
  g_subprocess_launcher_set_flags (launcher, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
  proc = g_subprocess_launcher_spawn (launcher, &error, ESPALIER_CLI, "train", "--data",
                                      "spiral:n=3000", "--epochs", "100000", "--json", "-o",
                                      out, NULL);
  g_assert_no_error (error);
  lines = g_data_input_stream_new (g_subprocess_get_stdout_pipe (proc));
  /* wait until the run has really started */
  do
    {
      g_free (line);
      line = g_data_input_stream_read_line (lines, NULL, NULL, &error);
      g_assert_no_error (error);
      g_assert_nonnull (line);
    }
  while (strstr (line, "\"epoch\"") == NULL || strstr (line, "\"event\":\"epoch\"") == NULL);
  g_subprocess_send_signal (proc, SIGINT);
  {
    g_autoptr(GString) rest = g_string_new (NULL);
    char *l;

    while ((l = g_data_input_stream_read_line (lines, NULL, NULL, NULL)) != NULL)
      {
        g_string_append_printf (rest, "%s\n", l);
        g_free (l);
      }
    g_assert_true (g_subprocess_wait (proc, NULL, &error));
    g_assert_true (g_subprocess_get_if_exited (proc));
    g_assert_cmpint (g_subprocess_get_exit_status (proc), ==, 1);
    g_assert_nonnull (strstr (rest->str, "Ctrl-C"));
    g_assert_nonnull (strstr (rest->str, "nothing was saved"));
  }
  g_assert_false (g_file_test (json, G_FILE_TEST_EXISTS));
}

/* ------------------------------------------------------------------------------ */
/* prune, quantize, reduce, sensitivity, compare */

static char *opt_model;   /* a trained model with three hidden layers, its .json path */

/* An 8-feature CSV (so 2:4 groups fit) with three clusters, and a model trained on it,
 * once for all the tests that need it. */
static void
train_opt_model (void)
{
  g_autofree char *csv = g_build_filename (tmpdir, "clusters8.csv", NULL);
  g_autofree char *out = g_build_filename (tmpdir, "opt-base", NULL);
  g_autoptr(GString) text = g_string_new ("a,b,c,d,e,f,g,h,label\n");
  g_autoptr(GRand) rand = g_rand_new_with_seed (11);
  Run r;

  if (opt_model != NULL)
    return;
  for (int i = 0; i < 600; i++)
    {
      int k = i % 3;

      for (int j = 0; j < 8; j++)
        g_string_append_printf (text, "%.4f,", (j % 3 == k ? 2.0 : -1.0) + g_rand_double_range (rand, -1.5, 1.5));
      g_string_append_printf (text, "k%d\n", k);
    }
  g_assert_true (g_file_set_contents (csv, text->str, -1, NULL));
  r = cli ("train", "--data", csv, "--spec", "dense:16,relu,dense:16,relu,dense:8,relu,dense:3,softmax",
           "--epochs", "15", "--lr", "0.01", "-o", out, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  opt_model = g_strconcat (out, ".json", NULL);
}

/* The JSON event named name in a --json run's output, or NULL. */
static JsonObject *
find_event (JsonParser **keep, const char *out, const char *name)
{
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);

  for (int i = 0; lines[i] != NULL; i++)
    {
      JsonParser *p;
      JsonObject *o;

      if (lines[i][0] == '\0')
        continue;
      p = json_parser_new ();
      g_assert_true (json_parser_load_from_data (p, lines[i], -1, NULL));
      o = json_node_get_object (json_parser_get_root (p));
      if (g_str_equal (json_object_get_string_member (o, "event"), name))
        {
          *keep = p;
          return o;
        }
      g_object_unref (p);
    }
  return NULL;
}

/* A --json optimize run: it exits 0, reports a measured variant and saves it. */
static void
assert_variant_run (Run *r, const char *kind, const char *saved)
{
  g_autoptr(JsonParser) p = NULL, q = NULL;
  JsonObject *v, *s;

  if (r->status != 0)
    g_test_message ("stdout: %s\nstderr: %s", r->out, r->err);
  g_assert_cmpint (r->status, ==, 0);
  v = find_event (&p, r->out, "variant");
  g_assert_nonnull (v);
  g_assert_cmpstr (json_object_get_string_member (v, "kind"), ==, kind);
  g_assert_cmpfloat (json_object_get_double_member (v, "accuracy"), >=, 0.5);
  g_assert_cmpfloat (json_object_get_double_member (v, "latency_us"), >, 0);
  g_assert_cmpfloat (json_object_get_double_member (v, "latency_p95_us"), >, 0);
  g_assert_cmpfloat (json_object_get_double_member (v, "rows_per_second"), >, 0);
  g_assert_cmpint (json_object_get_int_member (v, "size_bytes"), >, 0);
  g_assert_cmpint (json_object_get_int_member (v, "n_params"), >, 0);
  g_assert_cmpint (json_object_get_int_member (v, "flops"), >, 0);
  s = find_event (&q, r->out, "saved");
  g_assert_nonnull (s);
  if (saved != NULL)
    g_assert_cmpstr (json_object_get_string_member (s, "path"), ==, saved);
  g_assert_true (g_file_test (json_object_get_string_member (s, "path"), G_FILE_TEST_IS_REGULAR));
}

static void
test_prune (void)
{
  g_autofree char *derived = g_build_filename (tmpdir, "opt-base-pruned.json", NULL);
  g_autofree char *structured = g_build_filename (tmpdir, "opt-structured.json", NULL);
  g_autoptr(JsonParser) p = NULL;
  Run r;

  train_opt_model ();

  /* magnitude, saved next to the input by default */
  r = cli ("prune", opt_model, "--sparsity", "0.8", "--epochs", "1", "--seconds", "0.05", "--json", NULL);
  assert_variant_run (&r, "pruned", derived);
  {
    JsonObject *v = find_event (&p, r.out, "variant");
    g_assert_cmpstr (json_object_get_string_member (v, "name"), ==, "pruned 80%");
    g_assert_cmpfloat (json_object_get_double_member (v, "sparsity"), >, 0.7);
  }
  run_clear (&r);
  /* the pruned model is an ordinary model file */
  r = cli ("eval", derived, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "test:"));
  run_clear (&r);

  /* plain output names every measurement */
  r = cli ("prune", opt_model, "--method", "gradual", "--scope", "global", "--epochs", "2",
           "--seconds", "0.05", "-o", derived, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "pruned 90% (gradual)"));
  g_assert_nonnull (strstr (r.out, "test accuracy"));
  g_assert_nonnull (strstr (r.out, "latency"));
  g_assert_nonnull (strstr (r.out, "rows/s"));
  g_assert_nonnull (strstr (r.out, "nonzero"));
  g_assert_nonnull (strstr (r.out, "FLOPs"));
  g_assert_nonnull (strstr (r.out, "Saved"));
  run_clear (&r);

  r = cli ("prune", opt_model, "--method", "structured", "--keep", "0.5", "--norm", "l2",
           "--seconds", "0.05", "--json", "-o", structured, NULL);
  assert_variant_run (&r, "pruned", structured);
  run_clear (&r);
  r = cli ("info", structured, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "1   Dense       (8)"));   /* the first Dense halved from 16 */
  run_clear (&r);

  r = cli ("prune", opt_model, "--method", "2:4", "--layers", "1,3", "--epochs", "0",
           "--seconds", "0.05", "--json", NULL);
  assert_variant_run (&r, "pruned", NULL);
  run_clear (&r);
}

static void
test_quantize (void)
{
  g_autofree char *int8 = g_build_filename (tmpdir, "opt-base-int8.json", NULL);
  const char *modes[] = { "int8-dynamic", "fp16", "bf16" };
  Run r;

  train_opt_model ();

  r = cli ("quantize", opt_model, "--calibration", "percentile", "--percentile", "99.9",
           "--calib-batches", "4", "--seconds", "0.05", "--json", NULL);
  assert_variant_run (&r, "quantized", int8);
  {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *v = find_event (&p, r.out, "variant");
    g_assert_cmpstr (json_object_get_string_member (v, "format"), ==, "int8-static");
    g_assert_cmpstr (json_object_get_string_member (v, "exec"), ==, "int8");
  }
  run_clear (&r);
  for (guint i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      r = cli ("quantize", opt_model, "--mode", modes[i], "--seconds", "0.05", "--json", NULL);
      assert_variant_run (&r, "quantized", NULL);
      run_clear (&r);
    }
  r = cli ("quantize", opt_model, "--mode", "qat", "--epochs", "1", "--keep-float", "7",
           "--seconds", "0.05", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "int8 QAT"));
  g_assert_nonnull (strstr (r.out, "Saved"));
  run_clear (&r);
}

static void
test_reduce (void)
{
  g_autofree char *out = g_build_filename (tmpdir, "opt-reduced.json", NULL);
  g_autofree char *other = g_build_filename (tmpdir, "opt-reduced-finetuned.json", NULL);
  Run r;

  train_opt_model ();

  r = cli ("reduce", opt_model, "--epochs", "1", "--compare", "--seconds", "0.05", "-o", out, NULL);
  if (r.status != 0)
    g_test_message ("%s\n%s", r.out, r.err);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "reduced (-layer 5, distilled)"));
  g_assert_nonnull (strstr (r.out, "plain fine-tuning"));
  g_assert_nonnull (strstr (r.out, "Distillation"));
  g_assert_true (g_file_test (out, G_FILE_TEST_IS_REGULAR));
  g_assert_true (g_file_test (other, G_FILE_TEST_IS_REGULAR));
  run_clear (&r);
  r = cli ("info", out, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_null (strstr (r.out, "Dense       (8)"));   /* the Dense of 8 units is gone */
  g_assert_nonnull (strstr (r.out, "6   Softmax"));     /* with its ReLU: 8 layers, now 6 */
  run_clear (&r);

  r = cli ("reduce", opt_model, "--layer", "3", "--no-distill", "--epochs", "1",
           "--seconds", "0.05", "--json", NULL);
  assert_variant_run (&r, "reduced", NULL);
  run_clear (&r);
}

static void
test_sensitivity_compare (void)
{
  g_autofree char *pruned = g_build_filename (tmpdir, "opt-base-pruned.json", NULL);
  g_autofree char *csv = g_build_filename (tmpdir, "table.csv", NULL);
  g_autofree char *json = g_build_filename (tmpdir, "table.json", NULL);
  g_autofree char *text = NULL;
  Run r;

  train_opt_model ();

  r = cli ("sensitivity", opt_model, "--levels", "0.5,0.9", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "1 Dense"));
  g_assert_nonnull (strstr (r.out, "90%"));
  g_assert_nonnull (strstr (r.out, "unmodified"));
  run_clear (&r);

  r = cli ("sensitivity", opt_model, "--kind", "quantize", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = find_event (&p, r.out, "sensitivity");
    g_assert_nonnull (o);
    g_assert_cmpuint (json_array_get_length (json_object_get_array_member (o, "rows")), ==, 4);
  }
  run_clear (&r);

  if (!g_file_test (pruned, G_FILE_TEST_EXISTS))
    {
      r = cli ("prune", opt_model, "--epochs", "0", "--seconds", "0.05", NULL);
      run_clear (&r);
    }
  r = cli ("compare", opt_model, pruned, "--seconds", "0.05", "--csv", csv, "--json", json, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "opt-base"));
  g_assert_nonnull (strstr (r.out, "opt-base-pruned"));
  g_assert_true (g_file_get_contents (csv, &text, NULL, NULL));
  {
    g_auto(GStrv) lines = g_strsplit (text, "\n", -1);
    g_autoptr(JsonParser) p = json_parser_new ();

    g_assert_cmpuint (g_strv_length (lines), ==, 4);
    g_assert_true (g_str_has_prefix (lines[0], "name,"));
    g_assert_true (json_parser_load_from_file (p, json, NULL));
    g_assert_cmpuint (json_array_get_length (json_node_get_array (json_parser_get_root (p))), ==, 2);
  }
  run_clear (&r);
}

static void
test_optimize_usage (void)
{
  static const struct { const char *args[8]; const char *says; int status; } cases[] = {
    { { "prune", NULL }, "model file", 2 },
    { { "prune", "M", "--sparsity", "1.5", NULL }, "--sparsity", 2 },
    { { "prune", "M", "--sparsity", "much", NULL }, "sparsity", 2 },
    { { "prune", "M", "--method", "random", NULL }, "--method 'random'", 2 },
    { { "prune", "M", "--scope", "world", NULL }, "--scope 'world'", 2 },
    { { "prune", "M", "--norm", "l3", NULL }, "--norm 'l3'", 2 },
    { { "prune", "M", "--method", "structured", "--keep", "1", NULL }, "--keep", 2 },
    { { "prune", "M", "--layers", "2", NULL }, "--layers 2", 2 },
    { { "prune", "M", "--layers", "1,99", NULL }, "99", 2 },
    { { "prune", "M", "--epochs", "-2", NULL }, "--epochs", 2 },
    { { "prune", "M", "--lr", "-1", NULL }, "--lr", 2 },
    { { "quantize", "M", "--mode", "int4", NULL }, "--mode 'int4'", 2 },
    { { "quantize", "M", "--calibration", "guess", NULL }, "--calibration 'guess'", 2 },
    { { "quantize", "M", "--percentile", "0", NULL }, "--percentile", 2 },
    { { "quantize", "M", "--mode", "fp16", "--calibration", "mse", NULL }, "int8-static", 2 },
    { { "quantize", "M", "--mode", "qat", "--epochs", "0", NULL }, "qat", 2 },
    { { "quantize", "M", "--keep-float", "x", NULL }, "--keep-float x", 2 },
    { { "reduce", "M", "--layer", "2", NULL }, "ReLU", 2 },
    { { "reduce", "M", "--layer", "40", NULL }, "--layer 40", 2 },
    { { "reduce", "M", "--alpha", "2", NULL }, "--alpha", 2 },
    { { "reduce", "M", "--temperature", "0", NULL }, "--temperature", 2 },
    { { "reduce", "M", "--distill", "--no-distill", NULL }, "--no-distill", 2 },
    { { "sensitivity", "M", "--kind", "both", NULL }, "--kind 'both'", 2 },
    { { "sensitivity", "M", "--levels", "0.5,1.2", NULL }, "--levels", 2 },
    { { "compare", NULL }, "model file", 2 },
    { { "compare", "M", "--threads", "0", NULL }, "--threads", 2 },
    { { "prune", "/nonexistent/model.json", NULL }, "model.json", 1 },
    { { "compare", "/nonexistent/other.json", NULL }, "other.json", 1 },
  };
  const char *commands[] = { "prune", "quantize", "reduce", "sensitivity", "compare" };

  train_opt_model ();
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GPtrArray) argv = g_ptr_array_new ();
      g_autoptr(GError) error = NULL;
      g_auto(GStrv) env = g_environ_setenv (g_get_environ (), "XDG_CACHE_HOME", tmpdir, TRUE);
      g_autofree char *out = NULL, *err = NULL;
      int wait_status;

      g_ptr_array_add (argv, (char *) ESPALIER_CLI);
      for (guint a = 0; cases[i].args[a] != NULL; a++)
        g_ptr_array_add (argv, (char *) (g_str_equal (cases[i].args[a], "M") ? opt_model
                                                                             : cases[i].args[a]));
      g_ptr_array_add (argv, NULL);
      g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, env, G_SPAWN_DEFAULT, NULL, NULL,
                                   &out, &err, &wait_status, &error));
      g_assert_no_error (error);
      g_test_message ("%s %s: %s", cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "", err);
      g_assert_true (WIFEXITED (wait_status));
      g_assert_cmpint (WEXITSTATUS (wait_status), ==, cases[i].status);
      g_assert_nonnull (strstr (err, cases[i].says));
    }

  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      Run r = cli (commands[i], "--help", NULL);

      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, "Usage"));
      g_assert_nonnull (strstr (r.out, commands[i]));
      run_clear (&r);
    }
  {
    Run r = cli ("--help", NULL);

    for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
      g_assert_nonnull (strstr (r.out, commands[i]));
    run_clear (&r);
  }
}

/* ------------------------------------------------------------------------------ */
/* export, import */

/* A directory under tmpdir for one test's files. */
static char *
scratch_dir (const char *name)
{
  char *dir = g_build_filename (tmpdir, name, NULL);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  return dir;
}

static gint64
size_of (const char *path)
{
  GStatBuf st;

  g_assert_cmpint (g_stat (path, &st), ==, 0);
  return (gint64) st.st_size;
}

/* The "exported" event of a --json export: every file it lists exists with the size it
 * gives; returns the event (kept alive by *keep). */
static JsonObject *
assert_exported (JsonParser **keep, Run *r, const char *format, guint n_files)
{
  JsonObject *o;
  JsonArray *files;

  if (r->status != 0)
    g_test_message ("stdout: %s\nstderr: %s", r->out, r->err);
  g_assert_cmpint (r->status, ==, 0);
  o = find_event (keep, r->out, "exported");
  g_assert_nonnull (o);
  g_assert_cmpstr (json_object_get_string_member (o, "format"), ==, format);
  files = json_object_get_array_member (o, "files");
  g_assert_cmpuint (json_array_get_length (files), ==, n_files);
  for (guint i = 0; i < n_files; i++)
    {
      JsonObject *f = json_array_get_object_element (files, i);
      const char *path = json_object_get_string_member (f, "path");

      g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
      g_assert_cmpint (json_object_get_int_member (f, "bytes"), ==, size_of (path));
    }
  return o;
}

/* The plain output names every file written with its size in bytes. */
static void
assert_sizes_printed (const Run *r, const char * const *paths)
{
  if (r->status != 0)
    g_test_message ("stdout: %s\nstderr: %s", r->out, r->err);
  g_assert_cmpint (r->status, ==, 0);
  for (guint i = 0; paths[i] != NULL; i++)
    {
      g_autofree char *says = g_strdup_printf ("%s, %" G_GINT64_FORMAT " bytes", paths[i],
                                               size_of (paths[i]));

      g_assert_nonnull (strstr (r->out, says));
    }
}

/* Compile generated C as a strict C99 compiler would (the core tests run it). */
static void
assert_compiles (const char *c_path)
{
  g_autofree char *cc = g_find_program_in_path ("gcc");
  g_autofree char *obj = g_strconcat (c_path, ".o", NULL);
  g_autofree char *err = NULL;
  g_autoptr(GError) error = NULL;
  int wait_status;

  if (cc == NULL)
    {
      g_test_message ("gcc not found: %s not compiled", c_path);
      return;
    }
  g_assert_true (g_spawn_sync (NULL, (char *[]) { cc, (char *) "-std=c99", (char *) "-Wall",
                                                  (char *) "-Werror", (char *) "-c",
                                                  (char *) c_path, (char *) "-o", obj, NULL },
                               NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                               &wait_status, &error));
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (wait_status, NULL))
    g_test_message ("gcc %s: %s", c_path, err);
  g_assert_true (g_spawn_check_wait_status (wait_status, NULL));
  g_assert_true (g_file_test (obj, G_FILE_TEST_IS_REGULAR));
}

static void
test_export (void)
{
  g_autofree char *dir = scratch_dir ("export");
  g_autofree char *onnx = g_build_filename (dir, "base.onnx", NULL);
  g_autofree char *copy = g_build_filename (dir, "copy.json", NULL);
  g_autofree char *copy_st = g_build_filename (dir, "copy.safetensors", NULL);
  g_autofree char *c_base = g_build_filename (dir, "net", NULL);
  g_autofree char *c_path = g_build_filename (dir, "net.c", NULL);
  g_autofree char *h_path = g_build_filename (dir, "net.h", NULL);
  g_autofree char *derived = g_build_filename (tmpdir, "opt-base.onnx", NULL);
  g_autofree char *in_dir = g_build_filename (dir, "opt_base.c", NULL);
  g_autoptr(JsonParser) p1 = NULL, p2 = NULL, p3 = NULL;
  JsonObject *o;
  Run r;

  train_opt_model ();

  /* ONNX: operators and opset, the default path next to the model */
  r = cli ("export", opt_model, "--format", "onnx", "--json", NULL);
  o = assert_exported (&p1, &r, "onnx", 1);
  g_assert_cmpstr (json_object_get_string_member (o, "path"), ==, derived);
  g_assert_cmpint (json_object_get_int_member (o, "bytes"), ==, size_of (derived));
  g_assert_cmpint (json_object_get_int_member (o, "opset"), ==, 13);
  g_assert_cmpstr (json_object_get_string_member (o, "quantization"), ==, "fp32");
  {
    JsonObject *ops = json_object_get_object_member (o, "operators");
    g_assert_cmpint (json_object_get_int_member (ops, "Gemm"), ==, 4);
    g_assert_cmpint (json_object_get_int_member (ops, "Relu"), ==, 3);
    g_assert_cmpint (json_object_get_int_member (ops, "Softmax"), ==, 1);
  }
  run_clear (&r);
  r = cli ("export", opt_model, "-o", onnx, NULL);
  assert_sizes_printed (&r, (const char *[]) { onnx, NULL });
  g_assert_nonnull (strstr (r.out, "opset 13"));
  g_assert_nonnull (strstr (r.out, "Gemm 4, Relu 3, Softmax 1"));
  run_clear (&r);

  /* safetensors: a model file pair that loads and evaluates */
  r = cli ("export", opt_model, "--format", "safetensors", "-o", copy, "--json", NULL);
  o = assert_exported (&p2, &r, "safetensors", 2);
  g_assert_cmpstr (json_object_get_string_member (o, "path"), ==, copy);
  run_clear (&r);
  r = cli ("export", opt_model, "--format", "safetensors", "-o", copy, NULL);
  assert_sizes_printed (&r, (const char *[]) { copy, copy_st, NULL });
  run_clear (&r);
  r = cli ("info", copy, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "1   Dense       (16)"));
  run_clear (&r);

  /* C: both files, their sizes, integer or float, how to build; it compiles */
  r = cli ("export", opt_model, "--format", "c", "-o", c_base, "--json", NULL);
  o = assert_exported (&p3, &r, "c", 2);
  g_assert_cmpstr (json_object_get_string_member (o, "name"), ==, "net");
  g_assert_cmpint (json_object_get_int_member (o, "c_bytes"), ==, size_of (c_path));
  g_assert_cmpint (json_object_get_int_member (o, "h_bytes"), ==, size_of (h_path));
  g_assert_cmpint (json_object_get_int_member (o, "weight_bytes"), >, 0);
  g_assert_cmpint (json_object_get_int_member (o, "int8_layers"), ==, 0);
  g_assert_false (json_object_get_boolean_member (o, "integer_only"));
  g_assert_true (g_str_has_prefix (json_object_get_string_member (o, "compile"), "gcc -std=c99"));
  run_clear (&r);
  r = cli ("export", opt_model, "--format", "c", "-o", dir, NULL);   /* a directory */
  assert_sizes_printed (&r, (const char *[]) { in_dir, NULL });
  g_assert_nonnull (strstr (r.out, "opt_base_predict"));
  g_assert_nonnull (strstr (r.out, "float"));
  g_assert_nonnull (strstr (r.out, "gcc -std=c99"));
  run_clear (&r);
  assert_compiles (c_path);
}

/* eval of two model files on the rows of split: the same rows, accuracy and loss. */
static void
assert_same_eval (const char *model_a, const char *model_b, const char *split)
{
  g_autoptr(JsonParser) pa = NULL, pb = NULL;
  Run a = cli ("eval", model_a, "--split", split, "--json", NULL);
  Run b = cli ("eval", model_b, "--split", split, "--json", NULL);
  JsonObject *ma, *mb;

  g_assert_cmpint (a.status, ==, 0);
  g_assert_cmpint (b.status, ==, 0);
  ma = find_event (&pa, a.out, "metrics");
  mb = find_event (&pb, b.out, "metrics");
  g_assert_nonnull (ma);
  g_assert_nonnull (mb);
  g_test_message ("%s: original %g, imported %g", split,
                  json_object_get_double_member (ma, "accuracy"),
                  json_object_get_double_member (mb, "accuracy"));
  g_assert_cmpint (json_object_get_int_member (ma, "rows"), ==,
                   json_object_get_int_member (mb, "rows"));
  g_assert_cmpfloat (json_object_get_double_member (ma, "accuracy"), ==,
                     json_object_get_double_member (mb, "accuracy"));
  g_assert_cmpfloat_with_epsilon (json_object_get_double_member (ma, "loss"),
                                  json_object_get_double_member (mb, "loss"), 1e-6);
  run_clear (&a);
  run_clear (&b);
}

/* Our own ONNX read back: the same layers and, on the same data, the same accuracy. */
static void
test_import (void)
{
  g_autofree char *dir = scratch_dir ("import");
  g_autofree char *onnx = g_build_filename (dir, "base.onnx", NULL);
  g_autofree char *back = g_build_filename (dir, "back.json", NULL);
  g_autofree char *csv = g_build_filename (tmpdir, "clusters8.csv", NULL);
  g_autofree char *spiral = g_build_filename (dir, "spiral", NULL);
  g_autofree char *spiral_json = g_build_filename (dir, "spiral.json", NULL);
  g_autofree char *spiral_onnx = g_build_filename (dir, "spiral.onnx", NULL);
  g_autofree char *spiral_back = g_build_filename (dir, "spiral-back.json", NULL);
  const char *splits[] = { "all", "test" };
  Run r;

  train_opt_model ();
  r = cli ("export", opt_model, "-o", onnx, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);

  r = cli ("import", onnx, "--output", back, "--data", csv, NULL);
  if (r.status != 0)
    g_test_message ("%s\n%s", r.out, r.err);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "opset 13"));
  g_assert_nonnull (strstr (r.out, "1   Dense       (16)"));
  g_assert_nonnull (strstr (r.out, "8   Softmax     (3)"));
  g_assert_nonnull (strstr (r.out, "parameters"));
  g_assert_nonnull (strstr (r.out, "Saved"));
  g_assert_nonnull (strstr (r.out, back));
  run_clear (&r);

  for (guint i = 0; i < G_N_ELEMENTS (splits); i++)
    assert_same_eval (opt_model, back, splits[i]);

  /* a model that gets rows wrong, with Tanh layers: the same mistakes after the trip */
  r = cli ("train", "--data", "spiral:n=200,seed=4", "--model", "playground", "--epochs", "2",
           "-o", spiral, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  r = cli ("export", spiral_json, "-o", spiral_onnx, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  r = cli ("import", spiral_onnx, "-o", spiral_back, "--data", "spiral:n=200,seed=4", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Tanh"));
  run_clear (&r);
  assert_same_eval (spiral_json, spiral_back, "all");

  /* --json: one object naming what was saved */
  r = cli ("import", onnx, "-o", back, "--json", NULL);
  {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = find_event (&p, r.out, "imported");

    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (o);
    g_assert_cmpstr (json_object_get_string_member (o, "path"), ==, back);
    g_assert_cmpuint (json_array_get_length (json_object_get_array_member (o, "layers")), ==, 8);
    g_assert_cmpint (json_object_get_int_member (o, "opset"), ==, 13);
  }
  run_clear (&r);

  /* without --output, a model of the same name is never replaced */
  r = cli ("export", opt_model, "--format", "safetensors", "-o", dir, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  {
    g_autofree char *same = g_build_filename (dir, "opt-base.onnx", NULL);

    r = cli ("export", opt_model, "-o", same, NULL);
    g_assert_cmpint (r.status, ==, 0);
    run_clear (&r);
    r = cli ("import", same, NULL);
    g_assert_cmpint (r.status, ==, 2);
    g_assert_nonnull (strstr (r.err, "exists"));
    run_clear (&r);
  }
}

/* The int8 variant `quantize` makes, exported to ONNX (QDQ) and to integer-only C; a
 * dynamic one is refused by the C export with its reason. */
static void
test_export_int8 (void)
{
  g_autofree char *dir = scratch_dir ("export-int8");
  g_autofree char *int8 = g_build_filename (tmpdir, "opt-base-int8.json", NULL);
  g_autofree char *dyn = g_build_filename (tmpdir, "opt-base-int8-dynamic.json", NULL);
  g_autofree char *onnx = g_build_filename (dir, "q.onnx", NULL);
  g_autofree char *back = g_build_filename (dir, "q-back.json", NULL);
  g_autoptr(JsonParser) p1 = NULL, p2 = NULL;
  JsonObject *o;
  Run r;

  train_opt_model ();
  if (!g_file_test (int8, G_FILE_TEST_EXISTS))
    {
      r = cli ("quantize", opt_model, "--seconds", "0.05", NULL);
      g_assert_cmpint (r.status, ==, 0);
      run_clear (&r);
    }
  if (!g_file_test (dyn, G_FILE_TEST_EXISTS))
    {
      r = cli ("quantize", opt_model, "--mode", "int8-dynamic", "--seconds", "0.05", NULL);
      g_assert_cmpint (r.status, ==, 0);
      run_clear (&r);
    }

  r = cli ("export", int8, "-o", onnx, "--json", NULL);
  o = assert_exported (&p1, &r, "onnx", 1);
  g_assert_cmpstr (json_object_get_string_member (o, "quantization"), ==, "int8-static");
  g_assert_cmpstr (json_object_get_string_member (o, "form"), ==, "qdq");
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "operators"),
                                         "QuantizeLinear"));
  run_clear (&r);
  r = cli ("export", int8, "-o", onnx, NULL);
  assert_sizes_printed (&r, (const char *[]) { onnx, NULL });
  g_assert_nonnull (strstr (r.out, "QDQ"));
  run_clear (&r);

  r = cli ("export", int8, "--format", "c", "--name", "qnet", "-o", dir, "--json", NULL);
  o = assert_exported (&p2, &r, "c", 2);
  g_assert_cmpstr (json_object_get_string_member (o, "quantization"), ==, "int8-static");
  g_assert_cmpint (json_object_get_int_member (o, "int8_layers"), ==, 4);
  g_assert_true (json_object_get_boolean_member (o, "integer_only"));
  run_clear (&r);
  {
    g_autofree char *c_path = g_build_filename (dir, "qnet.c", NULL);

    r = cli ("export", int8, "--format", "c", "--name", "qnet", "-o", dir, NULL);
    assert_sizes_printed (&r, (const char *[]) { c_path, NULL });
    g_assert_nonnull (strstr (r.out, "int8 in 4 layers: integer only"));
    run_clear (&r);
    assert_compiles (c_path);
  }

  /* the QDQ file comes back in float, saying what it was */
  r = cli ("import", onnx, "-o", back, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "int8-static"));
  g_assert_nonnull (strstr (r.out, "in float"));
  run_clear (&r);

  r = cli ("export", dyn, "--format", "c", "-o", dir, NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "Dynamic int8"));
  run_clear (&r);
}

static void
test_export_usage (void)
{
  g_autofree char *dir = scratch_dir ("export-usage");
  g_autofree char *onnx = g_build_filename (dir, "whole.onnx", NULL);
  g_autofree char *cut = g_build_filename (dir, "cut.onnx", NULL);
  g_autofree char *cut_json = g_build_filename (dir, "cut.json", NULL);
  g_autofree char *text = NULL;
  gsize len;
  Run r;
  struct { const char *args[8]; const char *says; int status; } cases[] = {
    { { "export", NULL }, "model file", 2 },
    { { "export", "M", "--format", "tflite", NULL }, "--format 'tflite'", 2 },
    { { "export", "M", "--format", "c", "--name", "9lives", NULL }, "--name 9lives", 2 },
    { { "export", "M", "--format", "c", "--name", "has space", NULL }, "has space", 2 },
    { { "export", "M", "--name", "", NULL }, "--name", 2 },
    { { "export", "M", "--format", "safetensors", "-o", "M", NULL }, "model file itself", 2 },
    { { "export", "/nonexistent/model.json", NULL }, "model.json", 1 },
    { { "export", "M", "-o", "/nonexistent/dir/out.onnx", NULL }, "/nonexistent/dir/out.onnx", 1 },
    { { "export", "M", "--format", "c", "-o", "/nonexistent/dir/", NULL }, "/nonexistent/dir/", 1 },
    { { "import", NULL }, "ONNX file", 2 },
    { { "import", "/nonexistent/model.onnx", "-o", "O", NULL }, "/nonexistent/model.onnx", 1 },
    { { "import", "C", "-o", "O", NULL }, "truncated", 1 },
    { { "import", "C", "--bogus", NULL }, "--bogus", 2 },
  };

  train_opt_model ();
  r = cli ("export", opt_model, "-o", onnx, NULL);
  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  g_assert_true (g_file_get_contents (onnx, &text, &len, NULL));
  g_assert_true (g_file_set_contents (cut, text, (gssize) (len / 2), NULL));

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GPtrArray) argv = g_ptr_array_new ();
      g_autoptr(GError) error = NULL;
      g_auto(GStrv) env = g_environ_setenv (g_get_environ (), "XDG_CACHE_HOME", tmpdir, TRUE);
      g_autofree char *out = NULL, *err = NULL;
      int wait_status;

      g_ptr_array_add (argv, (char *) ESPALIER_CLI);
      for (guint a = 0; cases[i].args[a] != NULL; a++)
        {
          const char *arg = cases[i].args[a];

          g_ptr_array_add (argv, (char *) (g_str_equal (arg, "M") ? opt_model
                                           : g_str_equal (arg, "C") ? cut
                                           : g_str_equal (arg, "O") ? cut_json : arg));
        }
      g_ptr_array_add (argv, NULL);
      g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, env, G_SPAWN_DEFAULT, NULL, NULL,
                                   &out, &err, &wait_status, &error));
      g_assert_no_error (error);
      g_test_message ("%s %s: %s", cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "", err);
      g_assert_true (WIFEXITED (wait_status));
      g_assert_cmpint (WEXITSTATUS (wait_status), ==, cases[i].status);
      g_assert_nonnull (strstr (err, cases[i].says));
    }
  g_assert_false (g_file_test (cut_json, G_FILE_TEST_EXISTS));

  /* --json failures are an error event on standard output */
  r = cli ("import", cut, "-o", cut_json, "--json", NULL);
  g_assert_cmpint (r.status, ==, 1);
  {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = find_event (&p, r.out, "error");

    g_assert_nonnull (o);
    g_assert_cmpstr (json_object_get_string_member (o, "while"), ==, "importing");
    g_assert_nonnull (strstr (json_object_get_string_member (o, "message"), "cut.onnx"));
  }
  run_clear (&r);

  for (guint i = 0; i < 2; i++)
    {
      const char *command = i == 0 ? "export" : "import";

      r = cli (command, "--help", NULL);
      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, "Usage"));
      g_assert_nonnull (strstr (r.out, command));
      run_clear (&r);
    }
  r = cli ("--help", NULL);
  g_assert_nonnull (strstr (r.out, "export"));
  g_assert_nonnull (strstr (r.out, "import"));
  run_clear (&r);
}

/* ------------------------------------------------------------------------------ */
/* profile */

/* profile: the stage and layer tables, memory, threads, findings and advice; --json
 * with stages that make up the step time and the report's members; --trace writing
 * trace-event JSON (one "X" event per interval and one per step); --apply measuring
 * before and after; bad arguments. */
static void
test_profile (void)
{
  g_autofree char *trace = g_build_filename (tmpdir, "profile-trace.json", NULL);
  const char *spec = "dense:16,relu,dense:3,softmax";
  g_autoptr(JsonParser) keep = NULL;
  g_autoptr(JsonParser) tp = json_parser_new ();
  g_autoptr(GError) error = NULL;
  JsonObject *o;
  JsonArray *stages, *layers, *tev, *arr;
  double share_sum = 0.0;
  guint steps = 0;
  Run r;

  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "12", NULL);
  g_assert_cmpint (r.status, ==, 0);
  for (guint i = 0; i < 6; i++)
    g_assert_nonnull (strstr (r.out, (const char *[]) { "data", "forward", "loss", "backward",
                                                        "optimizer", "GFLOP/s" }[i]));
  /* layers numbered from 1, as info prints them */
  g_assert_nonnull (strstr (r.out, "1 dense"));
  g_assert_nonnull (strstr (r.out, "3 dense"));
  g_assert_nonnull (strstr (r.out, "12 steps"));
  /* the machine's ceilings, and each layer's place under them */
  g_assert_nonnull (strstr (r.out, "machine: "));
  g_assert_nonnull (strstr (r.out, "GFLOP/s peak (gemm "));
  g_assert_nonnull (strstr (r.out, "GB/s copy"));
  g_assert_nonnull (strstr (r.out, "FLOP/B"));
  g_assert_nonnull (strstr (r.out, "roofline"));
  g_assert_nonnull (strstr (r.out, "bytes/step"));
  g_assert_nonnull (strstr (r.out, "GB/s "));
  g_assert_nonnull (strstr (r.out, "bound"));
  g_assert_true (strstr (r.out, " memory\n") != NULL || strstr (r.out, " compute\n") != NULL);
  /* memory, threads, denormals */
  g_assert_nonnull (strstr (r.out, "memory: engine peak "));
  g_assert_nonnull (strstr (r.out, "no limit"));
  g_assert_nonnull (strstr (r.out, "process resident "));
  g_assert_nonnull (strstr (r.out, "threads: pool "));
  g_assert_nonnull (strstr (r.out, "flush-to-zero on"));
  g_assert_true (strstr (r.out, "Findings, most severe first:") != NULL
                 || strstr (r.out, "No bottleneck found") != NULL);
  run_clear (&r);

  /* the ceilings were measured above and cached in tmpdir (XDG_CACHE_HOME) */
  {
    g_autofree char *cache = g_build_filename (tmpdir, "espalier", "ceilings.json", NULL);

    g_assert_true (g_file_test (cache, G_FILE_TEST_IS_REGULAR));
  }
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "12", "--batch", "16",
           "--json", "--trace", trace, "--memory-limit", "10M", NULL);
  g_assert_cmpint (r.status, ==, 0);
  o = find_event (&keep, r.out, "profile");
  g_assert_nonnull (o);
  {
    JsonObject *m = json_object_get_object_member (o, "machine");

    g_assert_nonnull (m);
    g_assert_cmpfloat (json_object_get_double_member (m, "peak_gflops_per_s"), >, 0.0);
    g_assert_cmpfloat (json_object_get_double_member (m, "copy_gb_per_s"), >, 0.0);
    g_assert_cmpint (json_object_get_int_member (m, "threads"), >=, 1);
    g_assert_nonnull (json_object_get_string_member (m, "gemm"));
    g_assert_true (json_object_get_boolean_member (m, "cached"));
  }
  g_assert_cmpint (json_object_get_int_member (o, "steps"), ==, 12);
  g_assert_cmpint (json_object_get_int_member (o, "batch"), ==, 16);
  g_assert_true (JSON_NODE_HOLDS_VALUE (json_object_get_member (o, "adds_up")));
  g_assert_cmpstr (json_object_get_string_member (o, "trace"), ==, trace);
  stages = json_object_get_array_member (o, "stages");
  for (guint i = 0; i < json_array_get_length (stages); i++)
    share_sum += json_object_get_double_member (json_array_get_object_element (stages, i), "share");
  /* data, the engine's stages and "other" are the whole step */
  g_assert_cmpfloat (fabs (share_sum - 1.0), <, 1e-6);
  layers = json_object_get_array_member (o, "layers");
  g_assert_cmpuint (json_array_get_length (layers), ==, 4);
  {
    JsonObject *d0 = json_array_get_object_element (layers, 0);
    double flops = json_object_get_int_member (d0, "flops");
    double bytes = json_object_get_int_member (d0, "bytes");

    g_assert_cmpstr (json_object_get_string_member (d0, "kind"), ==, "dense");
    /* 2 inputs to 16 units on 16 rows: forward 2*2*16 FLOPs a row, backward the weight
     * gradient only */
    g_assert_cmpint (json_object_get_int_member (d0, "flops"), ==, 2 * (2 * 2 * 16) * 16);
    g_assert_cmpfloat (json_object_get_double_member (d0, "forward_ms"), >, 0.0);
    /* at least the weights, the inputs and the outputs, 4 bytes each */
    g_assert_cmpfloat (bytes, >=, 4.0 * (2 * 16 + 16 + 16 * (2 + 16)));
    g_assert_cmpfloat (fabs (json_object_get_double_member (d0, "intensity") - flops / bytes),
                       <, 1e-6);
    g_assert_cmpfloat (json_object_get_double_member (d0, "roofline_share"), >=, 0.0);
    g_assert_true (isfinite (json_object_get_double_member (d0, "roofline_share")));
    g_assert_true (json_object_has_member (d0, "gb_per_s"));
    g_assert_true (json_object_has_member (d0, "bound"));
  }
  /* --memory-limit reaches the engine's budget */
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (o, "memory"), "limit"),
                   ==, 10 * 1024 * 1024);
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "threads"), "cores"));
  g_assert_true (json_object_has_member (json_object_get_object_member (o, "denormals"), "ftz"));
  g_assert_nonnull (json_object_get_array_member (o, "findings"));
  arr = json_object_get_array_member (o, "advice");
  g_assert_nonnull (arr);
  for (guint i = 0; i < json_array_get_length (arr); i++)
    {
      JsonObject *a = json_array_get_object_element (arr, i);

      g_assert_cmpint (json_object_get_int_member (a, "index"), ==, i + 1);
      g_assert_true (json_object_get_boolean_member (a, "estimate"));
      g_assert_nonnull (json_object_get_string_member (a, "evidence"));
    }
  run_clear (&r);

  /* --remeasure measures again */
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "2", "--json",
           "--remeasure", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_clear_object (&keep);
  o = find_event (&keep, r.out, "profile");
  g_assert_false (json_object_get_boolean_member (json_object_get_object_member (o, "machine"),
                                                  "cached"));
  run_clear (&r);

  g_assert_true (json_parser_load_from_file (tp, trace, &error));
  g_assert_no_error (error);
  o = json_node_get_object (json_parser_get_root (tp));
  tev = json_object_get_array_member (o, "traceEvents");
  g_assert_cmpuint (json_array_get_length (tev), >, 12);
  for (guint i = 0; i < json_array_get_length (tev); i++)
    {
      JsonObject *e = json_array_get_object_element (tev, i);

      g_assert_cmpstr (json_object_get_string_member (e, "ph"), ==, "X");
      g_assert_nonnull (json_object_get_string_member (e, "name"));
      g_assert_cmpfloat (json_object_get_double_member (e, "ts"), >=, 0.0);
      g_assert_cmpfloat (json_object_get_double_member (e, "dur"), >=, 0.0);
      g_assert_true (json_object_has_member (e, "pid") && json_object_has_member (e, "tid"));
      steps += g_str_equal (json_object_get_string_member (e, "cat"), "step");
    }
  g_assert_cmpuint (steps, ==, 12);

  /* batches of two rows: a larger batch is advised; --apply NAME measures both. Where
   * it ranks depends on what else a busy machine shows (threads, data), so the test
   * reads its number from the list rather than assuming it is first. */
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "100", "--batch", "2",
           "--apply", "larger-batch", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    g_autoptr(GRegex) re = g_regex_new ("^  ([0-9]+)\\. Train on batches of 8 \\[larger-batch\\]",
                                        G_REGEX_MULTILINE, 0, NULL);
    g_autoptr(GMatchInfo) m = NULL;
    g_autofree char *n = NULL, *applied = NULL;

    g_assert_true (g_regex_match (re, r.out, 0, &m));
    n = g_match_info_fetch (m, 1);
    applied = g_strdup_printf ("Applied %s. Train on batches of 8: batch 2 → 8", n);
    g_assert_nonnull (strstr (r.out, applied));
  }
  g_assert_nonnull (strstr (r.out, "(estimate)"));
  g_assert_nonnull (strstr (r.out, "rows/s (training)"));
  g_assert_nonnull (strstr (r.out, "before"));
  g_assert_nonnull (strstr (r.out, "after"));
  g_assert_nonnull (strstr (r.out, "Gain: "));
  g_assert_nonnull (strstr (r.out, "measured before and after"));
  run_clear (&r);

  /* --apply N: the Nth advice of the list, whichever it is on this machine */
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "100", "--batch", "2",
           "--apply", "1", "--json", NULL);
  g_clear_object (&keep);
  o = find_event (&keep, r.out, "profile");
  g_assert_nonnull (o);
  arr = json_object_get_array_member (o, "advice");
  g_assert_cmpuint (json_array_get_length (arr), >=, 1);
  {
    JsonObject *first = json_array_get_object_element (arr, 0);
    g_autofree char *name = g_strdup (json_object_get_string_member (first, "name"));
    gboolean can = json_object_get_boolean_member (first, "can_apply");
    g_autoptr(JsonParser) keep2 = NULL;

    if (!can)
      {
        /* advice that needs what this machine lacks (a GPU) is refused, not faked */
        g_assert_cmpint (r.status, ==, 1);
        g_assert_nonnull (strstr (r.err, "cannot be applied"));
      }
    else
      {
        g_assert_cmpint (r.status, ==, 0);
        o = find_event (&keep2, r.out, "apply");
        g_assert_nonnull (o);
        g_assert_cmpint (json_object_get_int_member (o, "index"), ==, 1);
        g_assert_cmpstr (json_object_get_string_member (o, "name"), ==, name);
        g_assert_true (json_object_get_boolean_member (o, "measured"));
      }
  }
  run_clear (&r);

  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "100", "--batch", "2",
           "--apply", "larger-batch", "--json", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_clear_object (&keep);
  o = find_event (&keep, r.out, "apply");
  g_assert_nonnull (o);
  g_assert_cmpstr (json_object_get_string_member (o, "name"), ==, "larger-batch");
  g_assert_true (json_object_get_boolean_member (o, "measured"));
  g_assert_cmpfloat (json_object_get_double_member (o, "before"), >, 0.0);
  g_assert_cmpfloat (json_object_get_double_member (o, "after"), >, 0.0);
  g_assert_cmpfloat (fabs (json_object_get_double_member (o, "gain")
                           - json_object_get_double_member (o, "after")
                             / json_object_get_double_member (o, "before")),
                     <, 1e-6 * json_object_get_double_member (o, "gain"));
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (o, "profile"),
                                               "batch"), ==, 8);
  run_clear (&r);

  /* bad arguments: usage errors before any work, and advice the profile did not give */
  r = cli ("profile", "--data", "spiral:n=300", "--steps", "0", NULL);
  g_assert_cmpint (r.status, ==, 2);
  run_clear (&r);
  r = cli ("profile", "model.json", "--spec", spec, NULL);
  g_assert_cmpint (r.status, ==, 2);
  run_clear (&r);
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--apply", "0", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "--apply"));
  run_clear (&r);
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--apply", "faster", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "faster"));
  run_clear (&r);
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--memory-limit", "lots", NULL);
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "lots"));
  run_clear (&r);
  r = cli ("profile", "--data", "spiral:n=300", "--spec", spec, "--steps", "3", "--apply", "99",
           NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "99"));
  run_clear (&r);
}

/* ---- checkpoints and the NaN stop without MPI (espalier_trainer_set_checkpoint) -- */

static char *
file_bytes (const char *path, gsize *len)
{
  g_autoptr(GError) error = NULL;
  char *bytes = NULL;

  g_assert_true (g_file_get_contents (path, &bytes, len, &error));
  g_assert_no_error (error);
  return bytes;
}

/* A run with checkpoints, then one resumed from its last checkpoint: the same weights,
 * byte for byte, as the run straight through. */
static void
test_checkpoint_resume (void)
{
  g_autofree char *full = g_build_filename (tmpdir, "ck-full", NULL);
  g_autofree char *part = g_build_filename (tmpdir, "ck-part", NULL);
  g_autofree char *resumed = g_build_filename (tmpdir, "ck-resumed", NULL);
  g_autofree char *ck = g_build_filename (tmpdir, "run.ckpt", NULL);
  g_autofree char *st_full = g_strconcat (full, ".safetensors", NULL);
  g_autofree char *st_resumed = g_strconcat (resumed, ".safetensors", NULL);
  g_autofree char *a = NULL, *b = NULL;
  gsize la = 0, lb = 0;
#define TRAIN_ARGS "train", "--data", "moons:n=400,seed=3", "--spec", \
                   "dense:16,relu,dropout:0.2,dense:2,softmax", "--epochs", "3", "--batch", \
                   "16", "--seed", "5", "--threads", "1"
  Run r = cli (TRAIN_ARGS, "-o", full, NULL);

  g_assert_cmpint (r.status, ==, 0);
  run_clear (&r);
  r = cli (TRAIN_ARGS, "--checkpoint", ck, "--checkpoint-every", "7", "-o", part, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Last checkpoint"));
  run_clear (&r);
  r = cli (TRAIN_ARGS, "--resume", ck, "-o", resumed, NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Resuming from"));
  run_clear (&r);
  a = file_bytes (st_full, &la);
  b = file_bytes (st_resumed, &lb);
  g_assert_cmpuint (la, ==, lb);
  {
    /* the tensors, after the header (whose metadata names the model) */
    guint64 ha = 0, hb = 0;

    g_assert_cmpuint (la, >, 8);
    for (int i = 0; i < 8; i++)
      {
        ha |= (guint64) (guint8) a[i] << (8 * i);
        hb |= (guint64) (guint8) b[i] << (8 * i);
      }
    g_assert_cmpuint (ha, ==, hb);
    g_assert_cmpuint (ha + 8, <, la);
    g_assert_true (memcmp (a + 8 + ha, b + 8 + hb, la - 8 - ha) == 0);
  }

  /* another model refuses the checkpoint, saying so */
  r = cli ("train", "--data", "moons:n=400,seed=3", "--spec", "dense:8,relu,dense:2,softmax",
           "--resume", ck, NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "checkpoint holds the model"));
  run_clear (&r);
  /* a truncated one too */
  {
    gsize n = 0;
    g_autofree char *bytes = file_bytes (ck, &n);

    g_assert_true (g_file_set_contents (ck, bytes, 100, NULL));
  }
  r = cli (TRAIN_ARGS, "--resume", ck, NULL);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "truncated"));
  run_clear (&r);
#undef TRAIN_ARGS
}

/* A learning rate that blows the weights up: the run stops naming the step and the
 * layer, and exits 1. */
static void
test_nan_stop (void)
{
  Run r = cli ("train", "--data", "moons:n=400,seed=3", "--spec", "dense:16,relu,dense:2,softmax",
               "--epochs", "3", "--optimizer", "sgd", "--lr", "1e30", "--threads", "1", NULL);

  g_assert_cmpint (r.status, ==, 1);
  g_test_message ("%s", r.err);
  g_assert_nonnull (strstr (r.err, "Training stopped at step"));
  g_assert_nonnull (strstr (r.err, "layer"));
  g_assert_nonnull (strstr (r.err, "the last good state"));
  run_clear (&r);
}


int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("espalier-cli-XXXXXX", NULL);
  g_test_add_func ("/cli/usage", test_usage);
  g_test_add_func ("/cli/help", test_help);
  g_test_add_func ("/cli/datasets", test_datasets);
  g_test_add_func ("/cli/train-eval-round", test_train_eval_round);
  g_test_add_func ("/cli/export-csv", test_export_csv);
  g_test_add_func ("/cli/eval-keeps-preprocessing", test_eval_keeps_preprocessing);
  g_test_add_func ("/cli/failures", test_failures);
  g_test_add_func ("/cli/deterministic", test_deterministic);
  g_test_add_func ("/cli/interrupt", test_interrupt);
  g_test_add_func ("/cli/optimize/usage", test_optimize_usage);
  g_test_add_func ("/cli/optimize/prune", test_prune);
  g_test_add_func ("/cli/optimize/quantize", test_quantize);
  g_test_add_func ("/cli/optimize/reduce", test_reduce);
  g_test_add_func ("/cli/optimize/sensitivity-compare", test_sensitivity_compare);
  g_test_add_func ("/cli/export/formats", test_export);
  g_test_add_func ("/cli/export/import", test_import);
  g_test_add_func ("/cli/export/int8", test_export_int8);
  g_test_add_func ("/cli/export/usage", test_export_usage);
  g_test_add_func ("/cli/profile", test_profile);
  g_test_add_func ("/cli/checkpoint-resume", test_checkpoint_resume);
  g_test_add_func ("/cli/nan-stop", test_nan_stop);
  status = g_test_run ();
  g_free (opt_model);
  {
    g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", tmpdir);
    if (system (cmd) != 0)
      g_printerr ("could not remove %s\n", tmpdir);
  }
  g_free (tmpdir);
  return status;
}
