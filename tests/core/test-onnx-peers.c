/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-onnx-peers.c: our ONNX files against the tools people deploy with.
 *   - ONNX's own checker (python3-onnx, onnx-check.py): every exported model passes
 *     onnx.checker.check_model(full_check=True) and ONNX's shape inference gives the
 *     shapes we declare.
 *   - ONNX Runtime (onnxruntime-node, onnx-run.js) runs every exported model on 1,000
 *     Fashion-MNIST test rows: float models match the engine (EsInfer) within rtol 1e-3
 *     and atol 1e-5; int8 models agree with the engine's int8 kernels (EsExec) on the
 *     top-1 class for at least 99.5% of rows, and ONNX Runtime's optimized graph shows
 *     it really runs int8 kernels (QGemm, QLinearConv, ...) on them.
 *   - A graph written the way other tools write them runs in ONNX Runtime to the same
 *     outputs as the model Espalier imports from it.
 * Each test skips, saying why, when its tool is missing (python3 with the onnx module:
 * ESPALIER_PYTHON3, /usr/bin/python3 or python3; node with onnxruntime-node under
 * ESPALIER_ORT_NODE_MODULES, tests/onnx/node_modules or bench/node_modules). Nothing is
 * downloaded. */
#include "config.h"

#include <math.h>
#include <string.h>
#include <sys/wait.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "onnx.pb-c.h"

#include "espalier-error.h"
#include "espalier-onnx.h"
#include "onnx-test-util.h"

static char *python;        /* a python3 that imports onnx, or NULL */
static char *node;          /* node, or NULL */
static char *node_modules;  /* the directory holding onnxruntime-node, or NULL */
static char *src_dir;       /* tests/core in the source tree */

/* ------------------------------------------------------------------------------------ */
/* finding the tools */

static gboolean
spawn_ok (const char *const *argv, char **envp, char **out, char **err, int *exit_status)
{
  g_autoptr(GError) error = NULL;
  int status = 0;

  if (!g_spawn_sync (NULL, (char **) argv, envp, G_SPAWN_DEFAULT, NULL, NULL, out, err, &status,
                     &error))
    return FALSE;
  if (exit_status != NULL)
    *exit_status = WIFEXITED (status) ? WEXITSTATUS (status) : -1;
  return g_spawn_check_wait_status (status, NULL);
}

static char *
find_python (void)
{
  g_autofree char *in_path = g_find_program_in_path ("python3");
  const char *candidates[] = { g_getenv ("ESPALIER_PYTHON3"), "/usr/bin/python3", in_path };

  for (gsize i = 0; i < G_N_ELEMENTS (candidates); i++)
    {
      const char *argv[] = { candidates[i], "-c", "import onnx.checker", NULL };
      g_autofree char *out = NULL, *err = NULL;

      if (candidates[i] != NULL && g_file_test (candidates[i], G_FILE_TEST_IS_EXECUTABLE)
          && spawn_ok (argv, NULL, &out, &err, NULL))
        return g_strdup (candidates[i]);
    }
  return NULL;
}

static char *
find_node_modules (void)
{
  const char *root = g_getenv ("ESPALIER_SOURCE_DIR");
  g_autofree char *tests = root ? g_build_filename (root, "tests", "onnx", "node_modules", NULL) : NULL;
  g_autofree char *bench = root ? g_build_filename (root, "bench", "node_modules", NULL) : NULL;
  const char *candidates[] = { g_getenv ("ESPALIER_ORT_NODE_MODULES"), tests, bench };

  for (gsize i = 0; i < G_N_ELEMENTS (candidates); i++)
    {
      g_autofree char *pkg = NULL;

      if (candidates[i] == NULL)
        continue;
      pkg = g_build_filename (candidates[i], "onnxruntime-node", "package.json", NULL);
      if (g_file_test (pkg, G_FILE_TEST_IS_REGULAR))
        return g_strdup (candidates[i]);
    }
  return NULL;
}

static gboolean
need_python (void)
{
  if (python == NULL)
    g_test_skip ("python3 with the onnx module (Debian's python3-onnx) is not installed");
  return python != NULL;
}

static gboolean
need_ort (void)
{
  if (node == NULL)
    g_test_skip ("node is not installed");
  else if (node_modules == NULL)
    g_test_skip ("onnxruntime-node is not installed (npm install --ignore-scripts "
                 "onnxruntime-node@1.30.0 into tests/onnx, or set ESPALIER_ORT_NODE_MODULES)");
  return node != NULL && node_modules != NULL;
}

/* ------------------------------------------------------------------------------------ */
/* the exported models */

typedef struct _OrtJob OrtJob;

typedef struct {
  const char *name;
  EsModel    *model;
  EsQuant    *quant;     /* NULL: float */
  char       *path;
  OrtJob     *ort;       /* its run in ONNX Runtime */
} Case;

static GPtrArray *cases;   /* (Case *) */
static float *rows;        /* (OTU_ROWS, 784) */

static void
add_case (const char *name, EsModel *model, EsQuantMode mode, gboolean reduce_range)
{
  Case *c = g_new0 (Case, 1);

  c->name = name;
  c->model = model;
  if (mode != ES_QUANT_FP32)
    c->quant = otu_quant (model, mode, reduce_range, rows);
  c->path = otu_export (model, c->quant, name, NULL);
  g_ptr_array_add (cases, c);
}

static void
case_free (gpointer p)
{
  Case *c = p;

  es_model_free (c->model);
  es_quant_free (c->quant);
  g_free (c->path);
  g_free (c);
}

static void
make_cases (void)
{
  cases = g_ptr_array_new_with_free_func (case_free);
  rows = otu_rows (OTU_ROWS);
  add_case ("mlp", otu_mlp (), ES_QUANT_FP32, FALSE);
  add_case ("lenet", otu_lenet (), ES_QUANT_FP32, FALSE);
  add_case ("bn-nodes", otu_bn_nodes (), ES_QUANT_FP32, FALSE);
  add_case ("relu", otu_activation (ES_LAYER_RELU), ES_QUANT_FP32, FALSE);
  add_case ("leaky-relu", otu_activation (ES_LAYER_LEAKY_RELU), ES_QUANT_FP32, FALSE);
  add_case ("sigmoid", otu_activation (ES_LAYER_SIGMOID), ES_QUANT_FP32, FALSE);
  add_case ("tanh", otu_activation (ES_LAYER_TANH), ES_QUANT_FP32, FALSE);
  add_case ("softmax", otu_activation (ES_LAYER_SOFTMAX), ES_QUANT_FP32, FALSE);
  add_case ("convnet", otu_convnet (), ES_QUANT_FP32, FALSE);
  add_case ("mlp-fp16", otu_mlp (), ES_QUANT_FP16, FALSE);
  add_case ("mlp-int8", otu_mlp (), ES_QUANT_INT8_STATIC, FALSE);
  add_case ("convnet-int8", otu_convnet (), ES_QUANT_INT8_STATIC, FALSE);
  add_case ("lenet-int8", otu_lenet (), ES_QUANT_INT8_STATIC, FALSE);
  add_case ("convnet-int8-7bit", otu_convnet (), ES_QUANT_INT8_STATIC, TRUE);
  add_case ("mlp-dynamic", otu_mlp (), ES_QUANT_INT8_DYNAMIC, FALSE);
  add_case ("convnet-dynamic", otu_convnet (), ES_QUANT_INT8_DYNAMIC, FALSE);
}

static gboolean
is_int8 (const Case *c)
{
  return c->quant != NULL && (c->quant->mode == ES_QUANT_INT8_STATIC
                              || c->quant->mode == ES_QUANT_INT8_DYNAMIC);
}

/* ------------------------------------------------------------------------------------ */
/* ONNX's checker */

static void
test_checker (void)
{
  g_autofree char *script = NULL, *out = NULL, *err = NULL;
  g_autofree char *foreign = NULL;
  g_auto(GStrv) lines = NULL;
  GPtrArray *argv;
  guint n = 0;

  if (!need_python ())
    return;
  script = g_build_filename (src_dir, "onnx-check.py", NULL);
  foreign = otu_write_foreign ("foreign-check.onnx");
  argv = g_ptr_array_new ();
  g_ptr_array_add (argv, python);
  g_ptr_array_add (argv, script);
  for (guint i = 0; i < cases->len; i++)
    g_ptr_array_add (argv, ((Case *) g_ptr_array_index (cases, i))->path);
  g_ptr_array_add (argv, foreign);
  g_ptr_array_add (argv, NULL);
  if (!spawn_ok ((const char *const *) argv->pdata, NULL, &out, &err, NULL))
    g_error ("onnx.checker refused a model: %s", err);
  g_ptr_array_unref (argv);

  lines = g_strsplit (out, "\n", -1);
  for (guint i = 0; lines[i] != NULL && lines[i][0] != '\0'; i++, n++)
    {
      g_autoptr(JsonParser) parser = json_parser_new ();
      JsonObject *o, *meta;
      JsonArray *shape_in, *shape_out;
      const Case *c = i < cases->len ? g_ptr_array_index (cases, i) : NULL;
      EsShape in, outs;

      g_assert_true (json_parser_load_from_data (parser, lines[i], -1, NULL));
      o = json_node_get_object (json_parser_get_root (parser));
      g_test_message ("%s", lines[i]);
      if (c == NULL)
        {
          g_assert_cmpstr (json_object_get_string_member (o, "path"), ==, foreign);
          continue;
        }
      g_assert_cmpstr (json_object_get_string_member (o, "path"), ==, c->path);
      g_assert_cmpint (json_object_get_int_member (o, "ir_version"), ==, ESPALIER_ONNX_IR_VERSION);
      g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (o, "opset"),
                                                   "ai.onnx"), ==, ESPALIER_ONNX_OPSET);
      g_assert_cmpstr (json_object_get_string_member (o, "producer"), ==, "Espalier");
      meta = json_object_get_object_member (o, "metadata");
      g_assert_cmpstr (json_object_get_string_member (meta, "class_names"), ==,
                       "[\"T-shirt/top\",\"Trouser\",\"Pullover\",\"Dress\",\"Coat\",\"Sandal\","
                       "\"Shirt\",\"Sneaker\",\"Bag\",\"Ankle boot\"]");
      g_assert_cmpstr (json_object_get_string_member (meta, "input_std"), ==, "255");
      g_assert_cmpstr (json_object_get_string_member (meta, "quantization"), ==,
                       es_quant_mode_name (c->quant ? c->quant->mode : ES_QUANT_FP32));
      /* ONNX's shape inference (strict) agrees with the shapes we declare. */
      in = es_model_input_shape (c->model);
      outs = es_model_output_shape (c->model);
      shape_in = json_object_get_array_member (o, "input");
      shape_out = json_object_get_array_member (o, "output");
      g_assert_cmpuint (json_array_get_length (shape_in), ==, 1 + in.rank);
      g_assert_cmpstr (json_array_get_string_element (shape_in, 0), ==, "batch");
      for (int d = 0; d < in.rank; d++)
        g_assert_cmpint (json_array_get_int_element (shape_in, 1 + d), ==, in.dims[d]);
      g_assert_cmpuint (json_array_get_length (shape_out), ==, 2);
      g_assert_cmpstr (json_array_get_string_element (shape_out, 0), ==, "batch");
      g_assert_cmpint (json_array_get_int_element (shape_out, 1), ==, outs.dims[0]);
    }
  g_assert_cmpuint (n, ==, cases->len + 1);
}

/* ------------------------------------------------------------------------------------ */
/* ONNX Runtime */

/* One model run in ONNX Runtime on the test rows. */
struct _OrtJob {
  char               *model;
  EsShape             in;
  int                 C;          /* outputs per row */
  char               *out_path;
  char               *opt_path;
  float              *y;          /* (OTU_ROWS, C) */
  EspalierOnnxSummary optimized;  /* the graph after ONNX Runtime's optimizations */
};

static GPtrArray *ort_jobs;       /* (OrtJob *), all run in one node process */
static gboolean ort_done;
static OrtJob *foreign_job;       /* another tool's graph */
static OrtJob *again_job;         /* lenet imported and exported again */

static void
ort_job_free (gpointer p)
{
  OrtJob *j = p;

  g_free (j->model);
  g_free (j->out_path);
  g_free (j->opt_path);
  g_free (j->y);
  g_free (j);
}

static OrtJob *
ort_add (const char *model, const EsShape *in, int C)
{
  OrtJob *j = g_new0 (OrtJob, 1);
  g_autofree char *out = g_strdup_printf ("ort-%u.f32", ort_jobs->len);
  g_autofree char *opt = g_strdup_printf ("ort-%u-optimized.onnx", ort_jobs->len);

  j->model = g_strdup (model);
  j->in = *in;
  j->C = C;
  j->out_path = otu_path (out);
  j->opt_path = otu_path (opt);
  g_ptr_array_add (ort_jobs, j);
  return j;
}

/* Run every job: the rows (OTU_ROWS, 784) are one file whatever shape a model reads. */
static void
ort_run_all (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;
  g_autofree char *script = g_build_filename (src_dir, "onnx-run.js", NULL);
  g_autofree char *in_path = otu_path ("ort-rows.f32");
  g_autofree char *jobs_path = otu_path ("ort-jobs.json");
  g_autofree char *text = NULL, *out = NULL, *err = NULL;
  g_auto(GStrv) env = g_environ_setenv (g_get_environ (), "NODE_PATH", node_modules, TRUE);
  int code = 0;

  if (ort_done)
    return;
  ort_done = TRUE;
  g_assert_true (g_file_set_contents (in_path, (const char *) rows,
                                      (gssize) ((gsize) OTU_ROWS * 784 * 4), NULL));
  json_builder_begin_array (b);
  for (guint i = 0; i < ort_jobs->len; i++)
    {
      const OrtJob *j = g_ptr_array_index (ort_jobs, i);

      g_assert_cmpint (es_shape_size (&j->in), ==, 784);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "model");
      json_builder_add_string_value (b, j->model);
      json_builder_set_member_name (b, "input");
      json_builder_add_string_value (b, in_path);
      json_builder_set_member_name (b, "dims");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, OTU_ROWS);
      for (int d = 0; d < j->in.rank; d++)
        json_builder_add_int_value (b, j->in.dims[d]);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "output");
      json_builder_add_string_value (b, j->out_path);
      json_builder_set_member_name (b, "optimized");
      json_builder_add_string_value (b, j->opt_path);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  root = json_builder_get_root (b);
  text = json_to_string (root, TRUE);
  g_assert_true (g_file_set_contents (jobs_path, text, -1, NULL));
  {
    const char *argv[] = { node, script, jobs_path, NULL };

    if (!spawn_ok (argv, env, &out, &err, &code))
      g_error ("onnxruntime-node failed (exit %d): %s", code, err);
  }
  g_test_message ("%s", out);
  for (guint i = 0; i < ort_jobs->len; i++)
    {
      OrtJob *j = g_ptr_array_index (ort_jobs, i);
      g_autofree char *y = NULL;
      gsize len;

      g_assert_true (g_file_get_contents (j->out_path, &y, &len, &error));
      g_assert_cmpuint (len, ==, (gsize) OTU_ROWS * j->C * 4);
      j->y = (float *) g_steal_pointer (&y);
      g_assert_true (espalier_onnx_inspect (j->opt_path, &j->optimized, &error));
      g_assert_no_error (error);
    }
}

/* Within rtol and atol everywhere; returns the largest |a - b|. */
static double
assert_matches (const char *name, const float *ort, const float *ours, gsize n)
{
  double worst = 0.0;

  for (gsize k = 0; k < n; k++)
    {
      double d = fabs ((double) ort[k] - ours[k]);

      if (!(d <= 1e-5 + 1e-3 * fabs ((double) ours[k])))
        g_error ("%s: value %" G_GSIZE_FORMAT " (row %" G_GSIZE_FORMAT ") differs: ONNX Runtime "
                 "%.9g, Espalier %.9g", name, k, k / 10, ort[k], ours[k]);
      worst = MAX (worst, d);
    }
  return worst;
}

/* A run for every case, for another tool's graph, and for lenet imported and exported
 * again. */
static void
make_ort_jobs (void)
{
  g_autoptr(GError) error = NULL;
  const EsShape flat = { .rank = 1, .dims = { 784 } };
  g_autofree char *foreign = otu_write_foreign ("foreign-run.onnx");
  g_autofree char *again = otu_path ("lenet-again.onnx");
  const Case *lenet = g_ptr_array_index (cases, 1);
  EsShape in = es_model_input_shape (lenet->model);
  EsModel *m;

  ort_jobs = g_ptr_array_new_with_free_func (ort_job_free);
  for (guint i = 0; i < cases->len; i++)
    {
      Case *c = g_ptr_array_index (cases, i);
      EsShape cin = es_model_input_shape (c->model);

      c->ort = ort_add (c->path, &cin, otu_out_size (c->model));
    }
  foreign_job = ort_add (foreign, &flat, 10);
  g_assert_cmpstr (lenet->name, ==, "lenet");
  m = espalier_onnx_import (lenet->path, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (espalier_onnx_export (m, NULL, NULL, again, NULL, &error));
  g_assert_no_error (error);
  es_model_free (m);
  again_job = ort_add (again, &in, 10);
}

static void
test_runtime_float (void)
{
  if (!need_ort ())
    return;
  ort_run_all ();
  for (guint i = 0; i < cases->len; i++)
    {
      const Case *c = g_ptr_array_index (cases, i);
      int C = otu_out_size (c->model);
      g_autofree float *ours = NULL;
      EsModel *deq = NULL;

      if (is_int8 (c))
        continue;
      /* fp16: the engine computes the rounded weights in float. */
      if (c->quant != NULL)
        deq = es_quant_dequantized_model (c->model, c->quant);
      ours = otu_infer (deq ? deq : c->model, rows, OTU_ROWS);
      g_test_message ("%s: largest difference %.3g over %d rows", c->name,
                      assert_matches (c->name, c->ort->y, ours, (gsize) OTU_ROWS * C), OTU_ROWS);
      es_model_free (deq);
    }
}

/* The optimized graph runs int8 kernels: an operator of ONNX Runtime's that computes
 * in integers. */
static gboolean
runs_int8 (const EspalierOnnxSummary *s, gboolean conv)
{
  const char *dense_ops[] = { "com.microsoft:QGemm", "QLinearMatMul", "MatMulInteger",
                              "com.microsoft:MatMulIntegerToFloat",
                              "com.microsoft:DynamicQuantizeMatMul" };
  const char *conv_ops[] = { "QLinearConv", "ConvInteger", "com.microsoft:QLinearConv",
                             "com.microsoft:NhwcQLinearConv" };
  const char **ops = conv ? conv_ops : dense_ops;
  gsize n = conv ? G_N_ELEMENTS (conv_ops) : G_N_ELEMENTS (dense_ops);

  for (gsize i = 0; i < n; i++)
    if (otu_op_count (s, ops[i]) > 0)
      return TRUE;
  return FALSE;
}

/* Whether the export gives ONNX Runtime a complete int8 convolution: a Conv2D whose
 * output reaches another int8 layer through ReLU, MaxPool, Flatten or Dropout only
 * (static), or any Conv2D (dynamic: ConvInteger). One followed by a BatchNorm has no
 * output quantization, and ONNX Runtime convolves the dequantized values in float. */
static gboolean
expects_int8_conv (const Case *c)
{
  int n = es_model_n_layers (c->model);

  for (int i = 0; i < n; i++)
    {
      if (es_model_layer (c->model, i)->spec.kind != ES_LAYER_CONV2D)
        continue;
      if (c->quant->mode == ES_QUANT_INT8_DYNAMIC)
        return TRUE;
      for (int j = i + 1; j < n; j++)
        {
          EsLayerKind k = es_model_layer (c->model, j)->spec.kind;

          if (k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D)
            return TRUE;
          if (k != ES_LAYER_RELU && k != ES_LAYER_MAXPOOL2D && k != ES_LAYER_FLATTEN
              && k != ES_LAYER_DROPOUT)
            break;
        }
    }
  return FALSE;
}

static void
test_runtime_int8 (void)
{
  if (!need_ort ())
    return;
  ort_run_all ();
  for (guint i = 0; i < cases->len; i++)
    {
      const Case *c = g_ptr_array_index (cases, i);
      int C = otu_out_size (c->model);
      g_autofree float *ours = NULL, *fp32 = NULL;
      g_autofree char *ops = NULL;
      int agree = 0, agree_fp32 = 0;

      if (!is_int8 (c))
        continue;
      ours = otu_exec (c->model, c->quant, rows, OTU_ROWS);
      fp32 = otu_infer (c->model, rows, OTU_ROWS);
      for (int r = 0; r < OTU_ROWS; r++)
        {
          int k = otu_argmax (c->ort->y + (gsize) r * C, C);

          agree += k == otu_argmax (ours + (gsize) r * C, C);
          agree_fp32 += k == otu_argmax (fp32 + (gsize) r * C, C);
        }
      ops = espalier_onnx_summary_ops (&c->ort->optimized);
      g_test_message ("%s: top-1 agreement with the engine's int8 run %d/%d (with its fp32 run "
                      "%d/%d); ONNX Runtime ran: %s", c->name, agree, OTU_ROWS, agree_fp32,
                      OTU_ROWS, ops);
      g_assert_cmpint (agree * 1000, >=, 995 * OTU_ROWS);
      if (!runs_int8 (&c->ort->optimized, FALSE))
        g_error ("%s: ONNX Runtime runs no int8 matrix product: %s", c->name, ops);
      if (expects_int8_conv (c) && !runs_int8 (&c->ort->optimized, TRUE))
        g_error ("%s: ONNX Runtime runs no int8 convolution: %s", c->name, ops);
    }
}

/* Another tool's graph: ONNX Runtime and the imported model agree; and our own export,
 * imported and exported again, still runs the same. */
static void
test_runtime_import (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree float *ours = NULL, *y0 = NULL;
  EsModel *m;

  if (!need_ort ())
    return;
  ort_run_all ();
  m = espalier_onnx_import (foreign_job->model, NULL, &error);
  g_assert_no_error (error);
  ours = otu_infer (m, rows, OTU_ROWS);
  g_test_message ("foreign: largest difference %.3g",
                  assert_matches ("foreign", foreign_job->y, ours, (gsize) OTU_ROWS * 10));
  es_model_free (m);

  y0 = otu_infer (((Case *) g_ptr_array_index (cases, 1))->model, rows, OTU_ROWS);
  g_test_message ("lenet imported and exported again: largest difference %.3g",
                  assert_matches ("lenet again", again_job->y, y0, (gsize) OTU_ROWS * 10));
}

int
main (int argc, char **argv)
{
  const char *root;
  int status;

  otu_init (&argc, &argv);
  root = g_getenv ("ESPALIER_SOURCE_DIR");
  src_dir = root != NULL ? g_build_filename (root, "tests", "core", NULL) : g_strdup (".");
  python = find_python ();
  node = g_find_program_in_path ("node");
  node_modules = find_node_modules ();
  g_test_message ("python3 with onnx: %s; node: %s; onnxruntime-node in: %s",
                  python ? python : "none", node ? node : "none",
                  node_modules ? node_modules : "none");
  make_cases ();
  make_ort_jobs ();

  g_test_add_func ("/onnx-peers/checker", test_checker);
  g_test_add_func ("/onnx-peers/runtime/float", test_runtime_float);
  g_test_add_func ("/onnx-peers/runtime/int8", test_runtime_int8);
  g_test_add_func ("/onnx-peers/runtime/import", test_runtime_import);
  status = g_test_run ();

  g_ptr_array_unref (ort_jobs);
  g_ptr_array_unref (cases);
  g_free (rows);
  g_free (python);
  g_free (node);
  g_free (node_modules);
  g_free (src_dir);
  return otu_finish (status);
}
