/* bench-kernels.c: times the CPU backend's kernels on the reference MLP
 * (Flatten 784 -> Dense 128 ReLU -> Dense 10, Adam over its 101,770 parameters) at
 * batch 32 and 128 with 1 and 2 threads: each op alone, one whole training step, and a
 * plain single-threaded cblas_sgemm of the same shapes for comparison.
 *
 * Usage: bench-kernels [--threads N] [--batch B] [--ms MS] [--conv] [--more] [--infer]
 *   --conv  also a small CNN layer (Conv2D 3x3, 8 -> 16 channels, 14x14)
 *   --more  also the step with only the gradient zeroing or only the batch conversion
 *   --infer also inference: the fused Dense+ReLU, softmax, and es_infer_run on the
 *           reference MLP with inputs of 0.5 as `espalier-cli bench` runs it (try
 *           --batch 1 and --batch 10000)
 * Prints one line per op: microseconds per call (median and best of 7 trials) and
 * GFLOP/s for the products. Not a test: the numbers depend on the machine, and on a
 * shared 2-core machine on what else runs: compare runs made together.
 * ESPALIER_GEMM=blas in the environment runs the backend on cblas_sgemm only.
 *
 * Dimension key: B = batch, IN = 784, HID = 128, OUT = 10. */
#include <cblas.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "es-backend.h"
#include "es-model.h"
#include "es-pool.h"
#include "es-train.h"

#define IN 784
#define HID 128
#define OUT 10
#define N_PARAMS (HID * IN + HID + OUT * HID + OUT)
#define N_TRIALS 7

typedef struct {
  EsBackend *be;
  int        B;
  /* parameters, carved from one block like the trainer does: w1 (HID,IN), b1 (HID),
   * w2 (OUT,HID), b2 (OUT); grads and Adam state in the same layout */
  float     *params, *grads, *m, *v;
  float     *w1, *b1, *w2, *b2, *dw1, *db1, *dw2, *db2;
  float     *x, *dx;               /* (B,IN) */
  uint8_t   *x8;                   /* (B,IN) the raw batch */
  float     *h, *a, *logits;       /* (B,HID) (B,HID) (B,OUT) */
  float     *probs, *losses;       /* (B,OUT) (B) */
  float     *dlogits, *da, *dh;    /* (B,OUT) (B,HID) (B,HID) */
  int32_t   *labels;               /* (B) */
  int        step;
} Mlp;

typedef void (*BenchFn) (Mlp *mlp);

static int target_ms = 150;
static bool opt_conv, opt_more, opt_infer;

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* Seconds per call: median and best of N_TRIALS trials of ~target_ms / N_TRIALS each. */
static void
time_fn (Mlp *mlp, BenchFn fn, double *median, double *best)
{
  double t[N_TRIALS];
  long iters = 1;
  double t0, dt;

  /* warm up and size the trials */
  for (;;)
    {
      t0 = es_now ();
      for (long i = 0; i < iters; i++)
        fn (mlp);
      dt = es_now () - t0;
      if (dt > target_ms * 1e-3 / N_TRIALS / 4)
        break;
      iters *= 2;
    }
  iters = (long) (iters * (target_ms * 1e-3 / N_TRIALS) / dt) + 1;
  for (int k = 0; k < N_TRIALS; k++)
    {
      t0 = es_now ();
      for (long i = 0; i < iters; i++)
        fn (mlp);
      t[k] = (es_now () - t0) / (double) iters;
    }
  qsort (t, N_TRIALS, sizeof t[0], cmp_double);
  *median = t[N_TRIALS / 2];
  *best = t[0];
}

static void
report (const char *name, Mlp *mlp, BenchFn fn, double flop)
{
  double med, best;

  time_fn (mlp, fn, &med, &best);
  if (flop > 0)
    printf ("  %-34s %9.2f us (best %8.2f)  %6.1f GFLOP/s\n", name, med * 1e6, best * 1e6,
            flop / med * 1e-9);
  else
    printf ("  %-34s %9.2f us (best %8.2f)\n", name, med * 1e6, best * 1e6);
}

/* ---- the ops --------------------------------------------------------------------- */

static void
op_load (Mlp *m)
{
  m->be->iface->load_u8 (m->be, m->x, m->x8, 1.0f / 255.0f, 0.0f, (int64_t) m->B * IN);
}

static void
op_dense1_fwd (Mlp *m)
{
  m->be->iface->dense_forward (m->be, m->h, m->x, m->w1, m->b1, m->B, IN, HID);
}

static void
op_relu_fwd (Mlp *m)
{
  m->be->iface->act_forward (m->be, ES_OP_RELU, m->a, m->h, 0, (int64_t) m->B * HID);
}

/* Dense 784->128 and ReLU in one op (inference), when the backend has it */
static void
op_dense1_relu_fwd (Mlp *m)
{
  m->be->iface->dense_act_forward (m->be, ES_OP_RELU, m->a, m->x, m->w1, m->b1, 0.0f, m->B,
                                   IN, HID);
}

static void
op_dense2_fwd (Mlp *m)
{
  m->be->iface->dense_forward (m->be, m->logits, m->a, m->w2, m->b2, m->B, HID, OUT);
}

static void
op_softmax_fwd (Mlp *m)
{
  m->be->iface->softmax_forward (m->be, m->probs, m->logits, m->B, OUT);
}

static void
op_xent (Mlp *m)
{
  m->be->iface->softmax_xent_forward (m->be, m->probs, m->losses, m->logits, m->labels,
                                      m->B, OUT);
  m->be->iface->softmax_xent_backward (m->be, m->dlogits, m->probs, m->labels,
                                       1.0f / m->B, m->B, OUT);
}

static void
op_dense2_bwd (Mlp *m)
{
  m->be->iface->dense_backward (m->be, m->da, m->dw2, m->db2, m->dlogits, m->a, m->w2,
                                m->B, HID, OUT);
}

static void
op_relu_bwd (Mlp *m)
{
  m->be->iface->act_backward (m->be, ES_OP_RELU, m->dh, m->da, m->h, NULL, 0,
                              (int64_t) m->B * HID);
}

static void
op_dense1_bwd (Mlp *m)
{
  /* the first layer: no dinp */
  m->be->iface->dense_backward (m->be, NULL, m->dw1, m->db1, m->dh, m->x, m->w1,
                                m->B, IN, HID);
}

static void
op_dense1_bwd_dinp (Mlp *m)
{
  m->be->iface->dense_backward (m->be, m->dx, m->dw1, m->db1, m->dh, m->x, m->w1,
                                m->B, IN, HID);
}

static void
op_zero_grads (Mlp *m)
{
  m->be->iface->zero (m->be, m->grads, N_PARAMS * sizeof (float));
}

static void
op_adam (Mlp *m)
{
  m->be->iface->adam_step (m->be, m->params, m->m, m->v, m->grads, 1e-3f, 0.9f, 0.999f,
                           1e-7f, 0.0f, 0.1f, 0.001f, N_PARAMS);
}

/* One training step as the trainer runs it: zero the gradients, convert the batch,
 * forward, loss, backward (no dinp for layer 1), Adam. */
static void
op_step (Mlp *m)
{
  op_zero_grads (m);
  op_load (m);
  op_dense1_fwd (m);
  op_relu_fwd (m);
  op_dense2_fwd (m);
  op_xent (m);
  op_dense2_bwd (m);
  op_relu_bwd (m);
  op_dense1_bwd (m);
  op_adam (m);
}

/* the same step's compute without data conversion and zeroing: what the targets count */
static void
op_step_core (Mlp *m)
{
  op_dense1_fwd (m);
  op_relu_fwd (m);
  op_dense2_fwd (m);
  op_xent (m);
  op_dense2_bwd (m);
  op_relu_bwd (m);
  op_dense1_bwd (m);
  op_adam (m);
}

static void
op_step_zero (Mlp *m)
{
  op_zero_grads (m);
  op_step_core (m);
}

static void
op_step_load (Mlp *m)
{
  op_load (m);
  op_step_core (m);
}

/* --infer: a session on the reference MLP and its input */
static EsInfer *infer;
static float *infer_x;

static void
op_infer (Mlp *m)
{
  es_infer_run (infer, infer_x, m->B);
}

/* The reference MLP as the CLI's template builds it: Flatten, Dense 128, ReLU,
 * Dense 10, Softmax on (1,28,28). */
static EsModel *
reference_model (void)
{
  EsShape in = { 3, { 1, 28, 28 } };
  EsLayerSpec l[5];
  EsModel *model;

  l[0] = es_layer_spec_default (ES_LAYER_FLATTEN);
  l[1] = es_layer_spec_default (ES_LAYER_DENSE);
  l[1].units = HID;
  l[2] = es_layer_spec_default (ES_LAYER_RELU);
  l[3] = es_layer_spec_default (ES_LAYER_DENSE);
  l[3].units = OUT;
  l[4] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  model = es_model_new (&in, l, 5, NULL);
  if (model != NULL)
    es_model_init (model, 1);
  return model;
}

static void
report_infer (Mlp *mlp)
{
  EsError err = { 0 };
  EsModel *model = reference_model ();

  if (mlp->be->iface->dense_act_forward != NULL)
    report ("dense1+relu forward (fused)", mlp, op_dense1_relu_fwd, 2.0 * mlp->B * IN * HID);
  report ("softmax forward (B x 10)", mlp, op_softmax_fwd, 0);
  infer = model != NULL ? es_infer_new (model, mlp->be, mlp->B, &err) : NULL;
  if (infer == NULL)
    {
      fprintf (stderr, "bench-kernels: %s\n", model != NULL ? err.message : "no model");
      exit (1);
    }
  infer_x = malloc ((size_t) mlp->B * IN * sizeof (float));
  for (size_t i = 0; i < (size_t) mlp->B * IN; i++)
    infer_x[i] = 0.5f;
  report ("es_infer_run (reference MLP)", mlp, op_infer, 0);
  free (infer_x);
  es_infer_free (infer);
  es_model_free (model);
}

/* a small CNN's middle layer: Conv2D 3x3, 8 -> 16 channels on 14x14, padding 1 */
#define CC 8
#define CH 14
#define COC 16
static float *conv_in, *conv_w, *conv_b, *conv_out, *conv_dw, *conv_db, *conv_din;

static void
op_conv_fwd (Mlp *m)
{
  m->be->iface->conv2d_forward (m->be, conv_out, conv_in, conv_w, conv_b, m->B, CC, CH, CH,
                                COC, 3, 1, 1);
}

static void
op_conv_bwd (Mlp *m)
{
  m->be->iface->conv2d_backward (m->be, conv_din, conv_dw, conv_db, conv_out, conv_in,
                                 conv_w, m->B, CC, CH, CH, COC, 3, 1, 1);
}

/* The step's ops timed one by one inside the step, where each finds the caches as
 * the previous op left them (unlike the isolated loops above). */
static void
report_phases (Mlp *m)
{
  static const char *const names[] = { "zero grads", "load_u8", "dense1 fwd", "relu fwd",
                                        "dense2 fwd", "xent f+b", "dense2 bwd", "relu bwd",
                                        "dense1 bwd", "adam" };
  static const BenchFn fns[] = { op_zero_grads, op_load, op_dense1_fwd, op_relu_fwd,
                                 op_dense2_fwd, op_xent, op_dense2_bwd, op_relu_bwd,
                                 op_dense1_bwd, op_adam };
  double t[10] = { 0 }, total = 0;
  const int steps = 2000;

  for (int s = 0; s < steps + 100; s++)
    for (int k = 0; k < 10; k++)
      {
        double t0 = es_now ();
        fns[k] (m);
        if (s >= 100)
          t[k] += es_now () - t0;
      }
  printf ("  in-step times (mean of %d steps):", steps);
  for (int k = 0; k < 10; k++)
    {
      printf ("%s %s %.1f", k % 5 == 0 ? "\n   " : ",", names[k], t[k] / steps * 1e6);
      total += t[k];
    }
  printf ("\n    sum %.1f us\n", total / steps * 1e6);
}

/* plain BLAS, one call on this thread, for comparison */
static void
blas_fwd1 (Mlp *m)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, m->B, HID, IN, 1.0f, m->x, IN,
               m->w1, IN, 0.0f, m->h, HID);
}

static void
blas_dw1 (Mlp *m)
{
  cblas_sgemm (CblasRowMajor, CblasTrans, CblasNoTrans, HID, IN, m->B, 1.0f, m->dh, HID,
               m->x, IN, 1.0f, m->dw1, IN);
}

static void
blas_dinp1 (Mlp *m)
{
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, m->B, IN, HID, 1.0f, m->dh, HID,
               m->w1, IN, 0.0f, m->dx, IN);
}

/* an empty parallel region: the cost of one dispatch */
static EsPool *bench_pool;

static void
empty_task (void *data, int i, int n)
{
}

static void
op_dispatch (Mlp *m)
{
  es_pool_run (bench_pool, empty_task, NULL);
}

/* ---- setup ------------------------------------------------------------------------- */

/* Every buffer of a backend, freed with it. */
typedef struct {
  void     *ptr;
  EsMemKind kind;
  size_t    bytes;
} Alloc;
static Alloc allocs[64];
static int n_allocs;

static float *
alloc_f (EsBackend *be, EsMemKind kind, size_t n)
{
  EsError err = { 0 };
  float *p = be->iface->alloc (be, kind, n * sizeof (float), &err);

  if (p == NULL || n_allocs == (int) (sizeof allocs / sizeof allocs[0]))
    {
      fprintf (stderr, "bench-kernels: %s\n", p == NULL ? err.message : "too many buffers");
      exit (1);
    }
  allocs[n_allocs++] = (Alloc) { p, kind, n * sizeof (float) };
  return p;
}

static void
free_all (EsBackend *be)
{
  while (n_allocs > 0)
    {
      Alloc *a = &allocs[--n_allocs];
      be->iface->free (be, a->kind, a->ptr, a->bytes);
    }
}

static void
fill (float *x, size_t n, float scale, EsRng *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = (float) ((es_rng_uniform (rng) * 2.0 - 1.0) * scale);
}

static void
mlp_init (Mlp *m, EsBackend *be, int B)
{
  EsRng rng = { 42 };
  float *p;

  memset (m, 0, sizeof *m);
  m->be = be;
  m->B = B;
  m->params = alloc_f (be, ES_MEM_WEIGHTS, N_PARAMS);
  m->grads = alloc_f (be, ES_MEM_GRADIENTS, N_PARAMS);
  m->m = alloc_f (be, ES_MEM_OPTIMIZER, N_PARAMS);
  m->v = alloc_f (be, ES_MEM_OPTIMIZER, N_PARAMS);
  p = m->params;
  m->w1 = p; p += HID * IN;
  m->b1 = p; p += HID;
  m->w2 = p; p += OUT * HID;
  m->b2 = p;
  p = m->grads;
  m->dw1 = p; p += HID * IN;
  m->db1 = p; p += HID;
  m->dw2 = p; p += OUT * HID;
  m->db2 = p;
  fill (m->params, N_PARAMS, 0.05f, &rng);
  fill (m->grads, N_PARAMS, 0.01f, &rng);

  m->x = alloc_f (be, ES_MEM_DATA, (size_t) B * IN);
  m->dx = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * IN);
  m->x8 = (uint8_t *) alloc_f (be, ES_MEM_DATA, (size_t) B * IN / 4 + 1);
  for (size_t i = 0; i < (size_t) B * IN; i++)
    m->x8[i] = (uint8_t) (es_rng_next (&rng) & 0xff);
  m->h = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * HID);
  m->a = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * HID);
  m->logits = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * OUT);
  m->probs = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * OUT);
  m->losses = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B);
  m->dlogits = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * OUT);
  m->da = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * HID);
  m->dh = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * HID);
  m->labels = (int32_t *) alloc_f (be, ES_MEM_DATA, (size_t) B);
  for (int b = 0; b < B; b++)
    m->labels[b] = (int32_t) (es_rng_next (&rng) % OUT);
  op_load (m);
  fill (m->dh, (size_t) B * HID, 0.01f, &rng);
}

static void
bench (int n_threads, int B)
{
  EsError err = { 0 };
  EsBackend *be = es_cpu_backend_new (n_threads, NULL, &err);
  const double f1 = 2.0 * B * IN * HID, f2 = 2.0 * B * HID * OUT;
  Mlp mlp;

  if (be == NULL)
    {
      fprintf (stderr, "bench-kernels: %s\n", err.message);
      exit (1);
    }
  mlp_init (&mlp, be, B);
  printf ("threads %d, batch %d\n", n_threads, B);
  report ("load_u8 (B x 784)", &mlp, op_load, 0);
  report ("dense1 forward 784->128", &mlp, op_dense1_fwd, f1);
  report ("relu forward (B x 128)", &mlp, op_relu_fwd, 0);
  report ("dense2 forward 128->10", &mlp, op_dense2_fwd, f2);
  report ("softmax-xent forward+backward", &mlp, op_xent, 0);
  report ("dense2 backward (dw, db, dinp)", &mlp, op_dense2_bwd, 2 * f2);
  report ("relu backward", &mlp, op_relu_bwd, 0);
  report ("dense1 backward (dw, db)", &mlp, op_dense1_bwd, f1);
  report ("dense1 backward (dw, db, dinp)", &mlp, op_dense1_bwd_dinp, 2 * f1);
  report ("zero gradients (101,770)", &mlp, op_zero_grads, 0);
  report ("adam (101,770 params)", &mlp, op_adam, 0);
  report ("STEP fwd+bwd+adam", &mlp, op_step_core, 2 * f1 + 3 * f2);
  report ("STEP + zero grads + load_u8", &mlp, op_step, 2 * f1 + 3 * f2);
  if (opt_more)
    {
      report_phases (&mlp);
      report ("STEP + zero grads", &mlp, op_step_zero, 2 * f1 + 3 * f2);
      report ("STEP + load_u8", &mlp, op_step_load, 2 * f1 + 3 * f2);
    }
  if (opt_infer)
    report_infer (&mlp);
  if (opt_conv)
    {
      const double fc = 2.0 * B * COC * CC * 9 * CH * CH;
      EsRng rng = { 7 };

      conv_in = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * CC * CH * CH);
      conv_din = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * CC * CH * CH);
      conv_out = alloc_f (be, ES_MEM_ACTIVATIONS, (size_t) B * COC * CH * CH);
      conv_w = alloc_f (be, ES_MEM_WEIGHTS, COC * CC * 9);
      conv_dw = alloc_f (be, ES_MEM_GRADIENTS, COC * CC * 9);
      conv_b = alloc_f (be, ES_MEM_WEIGHTS, COC);
      conv_db = alloc_f (be, ES_MEM_GRADIENTS, COC);
      fill (conv_in, (size_t) B * CC * CH * CH, 1.0f, &rng);
      fill (conv_w, COC * CC * 9, 0.1f, &rng);
      report ("conv 3x3 8->16 14x14 forward", &mlp, op_conv_fwd, fc);
      report ("conv 3x3 8->16 14x14 backward", &mlp, op_conv_bwd, 2 * fc);
    }
  if (n_threads > 1 && B == 32)
    {
      bench_pool = es_pool_new (n_threads, NULL);
      report ("[pool] empty es_pool_run", &mlp, op_dispatch, 0);
      es_pool_free (bench_pool);
    }
  if (n_threads == 1)
    {
      report ("[cblas_sgemm] dense1 forward", &mlp, blas_fwd1, f1);
      report ("[cblas_sgemm] dense1 dw", &mlp, blas_dw1, f1);
      report ("[cblas_sgemm] dense1 dinp", &mlp, blas_dinp1, f1);
    }
  printf ("\n");
  free_all (be);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  int threads[2] = { 1, 2 }, n_t = 2;
  int batches[2] = { 32, 128 }, n_b = 2;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--threads") == 0 && i + 1 < argc)
        threads[0] = atoi (argv[++i]), n_t = 1;
      else if (strcmp (argv[i], "--batch") == 0 && i + 1 < argc)
        batches[0] = atoi (argv[++i]), n_b = 1;
      else if (strcmp (argv[i], "--ms") == 0 && i + 1 < argc)
        target_ms = atoi (argv[++i]);
      else if (strcmp (argv[i], "--conv") == 0)
        opt_conv = true;
      else if (strcmp (argv[i], "--more") == 0)
        opt_more = true;
      else if (strcmp (argv[i], "--infer") == 0)
        opt_infer = true;
      else
        {
          fprintf (stderr, "usage: %s [--threads N] [--batch B] [--ms MS] [--conv] [--more] "
                   "[--infer]\n", argv[0]);
          return 2;
        }
    }
  /* OpenBLAS (pthread build) starts its own threads when loaded, and they spin for
   * ~0.1 s before sleeping although the backend never gives them work: let them. */
  usleep (300000);
  printf ("bench-kernels: reference MLP 784-128-10, Adam over %d parameters\n\n",
          N_PARAMS);
  for (int t = 0; t < n_t; t++)
    for (int b = 0; b < n_b; b++)
      bench (threads[t], batches[b]);
  return 0;
}
