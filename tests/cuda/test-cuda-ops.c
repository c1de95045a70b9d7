/* test-cuda-ops.c: every op of the CUDA backend, forward and backward, against the CPU
 * backend on the same random inputs: fp32 results within 1e-4 of the largest reference
 * value, and bit for bit where the interface promises it (masks, fake quantization,
 * uint8 loading, min/max) or the arithmetic is the same IEEE operations on both (the
 * element-wise ops, dropout's counter-based masks). Odd sizes, so no kernel gets by on
 * multiples of a warp; gradients that accumulate start from nonzero values; input
 * gradients that overwrite start as NaN, so an element left unwritten shows. In bf16 and
 * fp16 (set_precision) the matrix products are checked element by element against a
 * bound derived from the rounding (check_mixed), and the rounding itself bit for bit
 * (test_rounding). Without a
 * CUDA device it checks the clean refusal and skips (exit 77). No GLib. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-backend.h"
#include "es-cuda.h"

#include "cuda-tap.h"

static EsBackend *cpu, *gpu;
static EsRng rng = { 12345 };

/* ---- memory helpers: everything a test makes is freed by arena_free ------------------ */

typedef struct { void *ptr; size_t bytes; bool dev; EsBackend *be; } Block;
static Block arena[512];
static int arena_n;

static void *
keep (void *ptr, size_t bytes, bool dev, EsBackend *be)
{
  if (ptr == NULL || arena_n == (int) ES_N_ELEMENTS (arena))
    {
      fprintf (stderr, "test arena: allocation failed\n");
      exit (1);
    }
  arena[arena_n++] = (Block) { ptr, bytes, dev, be };
  return ptr;
}

static void
arena_free (void)
{
  while (arena_n > 0)
    {
      Block *b = &arena[--arena_n];

      if (b->dev)
        b->be->iface->free (b->be, ES_MEM_ACTIVATIONS, b->ptr, b->bytes);
      else
        free (b->ptr);
    }
}

/* host memory */
static void *
hmem (size_t bytes)
{
  return keep (calloc (1, bytes > 0 ? bytes : 1), bytes, false, NULL);
}

static float *
hrand (int64_t n, float lo, float hi)
{
  float *x = hmem ((size_t) n * sizeof (float));

  for (int64_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * (float) es_rng_uniform (&rng);
  return x;
}

static float *
hfill (int64_t n, float v)
{
  float *x = hmem ((size_t) n * sizeof (float));

  for (int64_t i = 0; i < n; i++)
    x[i] = v;
  return x;
}

static float *
hcopy (const float *x, int64_t n)
{
  float *y = hmem ((size_t) n * sizeof (float));

  memcpy (y, x, (size_t) n * sizeof (float));
  return y;
}

/* device memory of the GPU backend, with a copy of host bytes (or zeros when NULL) */
static void *
dmem (const void *host, size_t bytes)
{
  EsError err = { ES_OK, "" };
  void *p = gpu->iface->alloc (gpu, ES_MEM_ACTIVATIONS, bytes > 0 ? bytes : 1, &err);

  if (p == NULL)
    {
      fprintf (stderr, "device allocation of %zu bytes failed: %s\n", bytes, err.message);
      exit (1);
    }
  keep (p, bytes > 0 ? bytes : 1, true, gpu);
  if (host != NULL && bytes > 0)
    gpu->iface->upload (gpu, p, host, bytes);
  return p;
}

static float *
dcopy (const float *host, int64_t n)
{
  return dmem (host, (size_t) n * sizeof (float));
}

/* a host copy of n floats of device memory */
static float *
fetch (const float *dev, int64_t n)
{
  float *h = hmem ((size_t) n * sizeof (float));

  gpu->iface->download (gpu, h, dev, (size_t) n * sizeof (float));
  return h;
}

static void *
fetch_bytes (const void *dev, size_t bytes)
{
  void *h = hmem (bytes);

  gpu->iface->download (gpu, h, dev, bytes);
  return h;
}

static int32_t *
labels_rand (int B, int C)
{
  int32_t *y = hmem ((size_t) B * sizeof (int32_t));

  for (int b = 0; b < B; b++)
    y[b] = (int32_t) (es_rng_next (&rng) % (uint64_t) C);
  return y;
}

#define TOL 1e-4
#define TOL_EW 1e-6   /* element-wise ops: the same IEEE operations, a few ulp at most */

/* ---- memory and data ---------------------------------------------------------------- */

static void
test_memory (void)
{
  const int64_t n = 100003;
  float *x = hrand (n, -1, 1);
  float *d = dmem (NULL, (size_t) n * sizeof (float));
  float *e = dmem (NULL, (size_t) n * sizeof (float));
  float *zeros = hfill (n, 0.0f);
  uint8_t *u8 = hmem ((size_t) n);

  tap_same ("alloc gives zeroed memory", fetch (d, n), zeros, (size_t) n * sizeof (float));
  gpu->iface->upload (gpu, d, x, (size_t) n * sizeof (float));
  tap_same ("upload then download", fetch (d, n), x, (size_t) n * sizeof (float));
  gpu->iface->copy (gpu, e, d, (size_t) n * sizeof (float));
  tap_same ("copy on the device", fetch (e, n), x, (size_t) n * sizeof (float));
  gpu->iface->zero (gpu, d, (size_t) n * sizeof (float));
  tap_same ("zero", fetch (d, n), zeros, (size_t) n * sizeof (float));

  for (int64_t i = 0; i < n; i++)
    u8[i] = (uint8_t) (es_rng_next (&rng) & 0xff);
  {
    float *want = hmem ((size_t) n * sizeof (float));

    cpu->iface->load_u8 (cpu, want, u8, 1.0f / 255.0f, -0.5f, n);
    gpu->iface->load_u8 (gpu, d, u8, 1.0f / 255.0f, -0.5f, n);
    tap_same ("load_u8", fetch (d, n), want, (size_t) n * sizeof (float));
  }
  arena_free ();
}

/* ---- dense ------------------------------------------------------------------------------ */

static void
test_dense (int B, int IN, int OUT, bool bias)
{
  char what[128];
  float *x = hrand ((int64_t) B * IN, -1, 1), *w = hrand ((int64_t) OUT * IN, -0.5f, 0.5f);
  float *b = bias ? hrand (OUT, -1, 1) : NULL;
  float *out = hmem ((size_t) B * OUT * sizeof (float));
  float *gx = dcopy (x, (int64_t) B * IN), *gw = dcopy (w, (int64_t) OUT * IN);
  float *gb = bias ? dcopy (b, OUT) : NULL;
  float *gout = dcopy (NULL, (int64_t) B * OUT);

  cpu->iface->dense_forward (cpu, out, x, w, b, B, IN, OUT);
  gpu->iface->dense_forward (gpu, gout, gx, gw, gb, B, IN, OUT);
  snprintf (what, sizeof what, "dense forward B=%d IN=%d OUT=%d%s", B, IN, OUT,
            bias ? "" : " (no bias)");
  tap_close (what, fetch (gout, (int64_t) B * OUT), out, (int64_t) B * OUT, TOL);

  /* inference forward with the activation */
  cpu->iface->dense_act_forward (cpu, ES_OP_LEAKY_RELU, out, x, w, b, 0.1f, B, IN, OUT);
  gpu->iface->dense_act_forward (gpu, ES_OP_LEAKY_RELU, gout, gx, gw, gb, 0.1f, B, IN, OUT);
  snprintf (what, sizeof what, "dense_act_forward (LeakyReLU) B=%d IN=%d OUT=%d", B, IN, OUT);
  tap_close (what, fetch (gout, (int64_t) B * OUT), out, (int64_t) B * OUT, TOL);

  {
    float *dout = hrand ((int64_t) B * OUT, -1, 1);
    float *dw = hrand ((int64_t) OUT * IN, -1, 1), *db = hrand (OUT, -1, 1);
    float *dinp = hfill ((int64_t) B * IN, NAN);
    float *gdout = dcopy (dout, (int64_t) B * OUT), *gdw = dcopy (dw, (int64_t) OUT * IN);
    float *gdb = dcopy (db, OUT), *gdinp = dcopy (dinp, (int64_t) B * IN);

    cpu->iface->dense_backward (cpu, dinp, dw, bias ? db : NULL, dout, x, w, B, IN, OUT);
    gpu->iface->dense_backward (gpu, gdinp, gdw, bias ? gdb : NULL, gdout, gx, gw, B, IN, OUT);
    snprintf (what, sizeof what, "dense backward dinp B=%d IN=%d OUT=%d", B, IN, OUT);
    tap_close (what, fetch (gdinp, (int64_t) B * IN), dinp, (int64_t) B * IN, TOL);
    snprintf (what, sizeof what, "dense backward dw (accumulated) B=%d IN=%d OUT=%d", B, IN, OUT);
    tap_close (what, fetch (gdw, (int64_t) OUT * IN), dw, (int64_t) OUT * IN, TOL);
    snprintf (what, sizeof what, "dense backward db%s B=%d IN=%d OUT=%d",
              bias ? " (accumulated)" : " untouched without bias", B, IN, OUT);
    tap_close (what, fetch (gdb, OUT), db, OUT, TOL);

    /* no input gradient (the first layer) */
    cpu->iface->dense_backward (cpu, NULL, dw, db, dout, x, w, B, IN, OUT);
    gpu->iface->dense_backward (gpu, NULL, gdw, gdb, gdout, gx, gw, B, IN, OUT);
    snprintf (what, sizeof what, "dense backward without dinp, dw B=%d IN=%d OUT=%d", B, IN, OUT);
    tap_close (what, fetch (gdw, (int64_t) OUT * IN), dw, (int64_t) OUT * IN, TOL);
  }
  arena_free ();
}

/* ---- conv2d ----------------------------------------------------------------------------- */

static void
test_conv (EsBackend *g, const char *path, int B, int C, int H, int W, int OC, int K, int S,
           int P)
{
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t nin = (int64_t) B * C * H * W, nout = (int64_t) B * OC * OH * OW;
  const int64_t nw = (int64_t) OC * C * K * K;
  EsBackend *saved = gpu;
  char what[160];

  gpu = g;  /* dcopy / fetch on this backend */
  {
    float *x = hrand (nin, -1, 1), *w = hrand (nw, -0.5f, 0.5f), *b = hrand (OC, -1, 1);
    float *out = hmem ((size_t) nout * sizeof (float));
    float *gx = dcopy (x, nin), *gw = dcopy (w, nw), *gb = dcopy (b, OC);
    float *gout = dcopy (hfill (nout, NAN), nout);
    float *dout = hrand (nout, -1, 1), *dw = hrand (nw, -1, 1), *db = hrand (OC, -1, 1);
    float *dinp = hfill (nin, NAN);
    float *gdout = dcopy (dout, nout), *gdw = dcopy (dw, nw), *gdb = dcopy (db, OC);
    float *gdinp = dcopy (dinp, nin);

    cpu->iface->conv2d_forward (cpu, out, x, w, b, B, C, H, W, OC, K, S, P);
    gpu->iface->conv2d_forward (gpu, gout, gx, gw, gb, B, C, H, W, OC, K, S, P);
    snprintf (what, sizeof what, "conv2d forward (%s) B=%d C=%d %dx%d OC=%d K=%d S=%d P=%d",
              path, B, C, H, W, OC, K, S, P);
    tap_close (what, fetch (gout, nout), out, nout, TOL);

    cpu->iface->conv2d_backward (cpu, dinp, dw, db, dout, x, w, B, C, H, W, OC, K, S, P);
    gpu->iface->conv2d_backward (gpu, gdinp, gdw, gdb, gdout, gx, gw, B, C, H, W, OC, K, S, P);
    snprintf (what, sizeof what, "conv2d backward dinp (%s) K=%d S=%d P=%d", path, K, S, P);
    tap_close (what, fetch (gdinp, nin), dinp, nin, TOL);
    snprintf (what, sizeof what, "conv2d backward dw (%s) K=%d S=%d P=%d", path, K, S, P);
    tap_close (what, fetch (gdw, nw), dw, nw, TOL);
    snprintf (what, sizeof what, "conv2d backward db (%s) K=%d S=%d P=%d", path, K, S, P);
    tap_close (what, fetch (gdb, OC), db, OC, TOL);

    /* without bias and input gradient */
    cpu->iface->conv2d_forward (cpu, out, x, w, NULL, B, C, H, W, OC, K, S, P);
    gpu->iface->conv2d_forward (gpu, gout, gx, gw, NULL, B, C, H, W, OC, K, S, P);
    snprintf (what, sizeof what, "conv2d forward without bias (%s)", path);
    tap_close (what, fetch (gout, nout), out, nout, TOL);
    cpu->iface->conv2d_backward (cpu, NULL, dw, NULL, dout, x, w, B, C, H, W, OC, K, S, P);
    gpu->iface->conv2d_backward (gpu, NULL, gdw, NULL, gdout, gx, gw, B, C, H, W, OC, K, S, P);
    snprintf (what, sizeof what, "conv2d backward without dinp and db (%s), dw", path);
    tap_close (what, fetch (gdw, nw), dw, nw, TOL);
  }
  arena_free ();
  gpu = saved;
}

/* ---- pooling ------------------------------------------------------------------------------ */

static void
test_pool (int B, int C, int H, int W, int K, int S, bool with_nan)
{
  const int OH = ES_CONV_OUT (H, K, S, 0), OW = ES_CONV_OUT (W, K, S, 0);
  const int64_t nin = (int64_t) B * C * H * W, nout = (int64_t) B * C * OH * OW;
  float *x = hrand (nin, -1, 1);
  char what[128];

  if (with_nan)
    x[nin / 3] = NAN;
  {
    float *out = hmem ((size_t) nout * sizeof (float));
    int32_t *am = hmem ((size_t) nout * sizeof (int32_t));
    float *gx = dcopy (x, nin), *gout = dcopy (NULL, nout);
    int32_t *gam = dmem (NULL, (size_t) nout * sizeof (int32_t));
    float *dout = hrand (nout, -1, 1), *dinp = hfill (nin, NAN);
    float *gdout = dcopy (dout, nout), *gdinp = dcopy (dinp, nin);

    cpu->iface->maxpool2d_forward (cpu, out, am, x, B, C, H, W, K, S);
    gpu->iface->maxpool2d_forward (gpu, gout, gam, gx, B, C, H, W, K, S);
    snprintf (what, sizeof what, "maxpool forward K=%d S=%d%s", K, S, with_nan ? " with a NaN" : "");
    tap_same (what, fetch (gout, nout), out, (size_t) nout * sizeof (float));
    snprintf (what, sizeof what, "maxpool argmax K=%d S=%d", K, S);
    tap_same (what, fetch_bytes (gam, (size_t) nout * sizeof (int32_t)), am,
              (size_t) nout * sizeof (int32_t));
    cpu->iface->maxpool2d_backward (cpu, dinp, dout, am, B, C, H, W, K, S);
    gpu->iface->maxpool2d_backward (gpu, gdinp, gdout, gam, B, C, H, W, K, S);
    snprintf (what, sizeof what, "maxpool backward K=%d S=%d", K, S);
    tap_close (what, fetch (gdinp, nin), dinp, nin, TOL_EW);

    cpu->iface->avgpool2d_forward (cpu, out, x, B, C, H, W, K, S);
    gpu->iface->avgpool2d_forward (gpu, gout, gx, B, C, H, W, K, S);
    snprintf (what, sizeof what, "avgpool forward K=%d S=%d", K, S);
    tap_close (what, fetch (gout, nout), out, nout, TOL_EW);
    cpu->iface->avgpool2d_backward (cpu, dinp, dout, B, C, H, W, K, S);
    gpu->iface->avgpool2d_backward (gpu, gdinp, gdout, B, C, H, W, K, S);
    snprintf (what, sizeof what, "avgpool backward K=%d S=%d", K, S);
    tap_close (what, fetch (gdinp, nin), dinp, nin, TOL_EW);
  }
  arena_free ();
}

/* ---- activations, softmax, dropout -------------------------------------------------------- */

static void
test_activations (void)
{
  static const EsOp acts[] = { ES_OP_RELU, ES_OP_LEAKY_RELU, ES_OP_SIGMOID, ES_OP_TANH };
  static const char *names[] = { "ReLU", "LeakyReLU", "Sigmoid", "Tanh" };
  const int64_t n = 40009;
  float *x = hrand (n, -6, 6), *dout = hrand (n, -1, 1);
  float *gx = dcopy (x, n), *gdout = dcopy (dout, n);
  float *out = hmem ((size_t) n * sizeof (float)), *dinp = hmem ((size_t) n * sizeof (float));
  float *gout = dcopy (NULL, n), *gdinp = dcopy (NULL, n);
  char what[96];

  for (size_t a = 0; a < ES_N_ELEMENTS (acts); a++)
    {
      /* exp and tanh come from different libraries: a few ulp apart */
      const double tol = acts[a] == ES_OP_SIGMOID || acts[a] == ES_OP_TANH ? 1e-6 : 0.0;

      cpu->iface->act_forward (cpu, acts[a], out, x, 0.02f, n);
      gpu->iface->act_forward (gpu, acts[a], gout, gx, 0.02f, n);
      snprintf (what, sizeof what, "%s forward", names[a]);
      tap_close (what, fetch (gout, n), out, n, tol);
      /* backward from the same outputs on both (those of the CPU) */
      gpu->iface->upload (gpu, gout, out, (size_t) n * sizeof (float));
      cpu->iface->act_backward (cpu, acts[a], dinp, dout, x, out, 0.02f, n);
      gpu->iface->act_backward (gpu, acts[a], gdinp, gdout, gx, gout, 0.02f, n);
      snprintf (what, sizeof what, "%s backward", names[a]);
      tap_close (what, fetch (gdinp, n), dinp, n, 0.0);
    }
  arena_free ();
}

static void
test_softmax (int B, int C)
{
  const int64_t n = (int64_t) B * C;
  float *x = hrand (n, -8, 8), *dout = hrand (n, -1, 1);
  float *out = hmem ((size_t) n * sizeof (float)), *dinp = hmem ((size_t) n * sizeof (float));
  float *gx = dcopy (x, n), *gout = dcopy (NULL, n), *gdout = dcopy (dout, n);
  float *gdinp = dcopy (hfill (n, NAN), n);
  char what[96];

  cpu->iface->softmax_forward (cpu, out, x, B, C);
  gpu->iface->softmax_forward (gpu, gout, gx, B, C);
  snprintf (what, sizeof what, "softmax forward B=%d C=%d", B, C);
  tap_close (what, fetch (gout, n), out, n, TOL);
  gpu->iface->upload (gpu, gout, out, (size_t) n * sizeof (float));
  cpu->iface->softmax_backward (cpu, dinp, dout, out, B, C);
  gpu->iface->softmax_backward (gpu, gdinp, gdout, gout, B, C);
  snprintf (what, sizeof what, "softmax backward B=%d C=%d", B, C);
  tap_close (what, fetch (gdinp, n), dinp, n, TOL);
  arena_free ();
}

static void
test_dropout (float rate)
{
  const int64_t n = 30011;
  const uint64_t seed = 0x5eedull + (uint64_t) (rate * 1000);
  float *x = hrand (n, -1, 1), *dout = hrand (n, -1, 1);
  float *out = hmem ((size_t) n * sizeof (float)), *dinp = hmem ((size_t) n * sizeof (float));
  uint8_t *mask = hmem ((size_t) n);
  float *gx = dcopy (x, n), *gout = dcopy (NULL, n), *gdout = dcopy (dout, n);
  float *gdinp = dcopy (NULL, n);
  uint8_t *gmask = dmem (NULL, (size_t) n);
  char what[96];

  cpu->iface->dropout_forward (cpu, out, mask, x, rate, seed, n);
  gpu->iface->dropout_forward (gpu, gout, gmask, gx, rate, seed, n);
  snprintf (what, sizeof what, "dropout mask rate=%g", rate);
  tap_same (what, fetch_bytes (gmask, (size_t) n), mask, (size_t) n);
  snprintf (what, sizeof what, "dropout forward rate=%g", rate);
  tap_same (what, fetch (gout, n), out, (size_t) n * sizeof (float));
  cpu->iface->dropout_backward (cpu, dinp, dout, mask, rate, n);
  gpu->iface->dropout_backward (gpu, gdinp, gdout, gmask, rate, n);
  snprintf (what, sizeof what, "dropout backward rate=%g", rate);
  tap_same (what, fetch (gdinp, n), dinp, (size_t) n * sizeof (float));
  arena_free ();
}

/* ---- BatchNorm ---------------------------------------------------------------------------- */

static void
test_batchnorm (int B, int CH, int SP)
{
  const int64_t n = (int64_t) B * CH * SP;
  float *x = hrand (n, -2, 3), *gamma = hrand (CH, 0.5f, 1.5f), *beta = hrand (CH, -1, 1);
  float *rm = hrand (CH, -1, 1), *rv = hrand (CH, 0.5f, 2);
  float *out = hmem ((size_t) n * sizeof (float)), *mean = hmem ((size_t) CH * sizeof (float));
  float *rstd = hmem ((size_t) CH * sizeof (float));
  float *gx = dcopy (x, n), *ggamma = dcopy (gamma, CH), *gbeta = dcopy (beta, CH);
  float *grm = dcopy (rm, CH), *grv = dcopy (rv, CH);
  float *gout = dcopy (NULL, n), *gmean = dcopy (NULL, CH), *grstd = dcopy (NULL, CH);
  char what[96];

  cpu->iface->batchnorm_forward_train (cpu, out, mean, rstd, rm, rv, x, gamma, beta, 0.1f, 1e-5f,
                                       B, CH, SP);
  gpu->iface->batchnorm_forward_train (gpu, gout, gmean, grstd, grm, grv, gx, ggamma, gbeta, 0.1f,
                                       1e-5f, B, CH, SP);
  snprintf (what, sizeof what, "batchnorm train forward B=%d CH=%d SP=%d", B, CH, SP);
  tap_close (what, fetch (gout, n), out, n, TOL);
  tap_close ("batchnorm batch mean", fetch (gmean, CH), mean, CH, TOL);
  tap_close ("batchnorm batch rstd", fetch (grstd, CH), rstd, CH, TOL);
  tap_close ("batchnorm running mean", fetch (grm, CH), rm, CH, TOL);
  tap_close ("batchnorm running var", fetch (grv, CH), rv, CH, TOL);

  cpu->iface->batchnorm_forward_infer (cpu, out, x, gamma, beta, rm, rv, 1e-5f, B, CH, SP);
  gpu->iface->upload (gpu, grm, rm, (size_t) CH * sizeof (float));
  gpu->iface->upload (gpu, grv, rv, (size_t) CH * sizeof (float));
  gpu->iface->batchnorm_forward_infer (gpu, gout, gx, ggamma, gbeta, grm, grv, 1e-5f, B, CH, SP);
  snprintf (what, sizeof what, "batchnorm inference forward B=%d CH=%d SP=%d", B, CH, SP);
  tap_close (what, fetch (gout, n), out, n, TOL_EW);

  {
    float *dout = hrand (n, -1, 1), *dgamma = hrand (CH, -1, 1), *dbeta = hrand (CH, -1, 1);
    float *dinp = hfill (n, NAN);
    float *gdout = dcopy (dout, n), *gdgamma = dcopy (dgamma, CH), *gdbeta = dcopy (dbeta, CH);
    float *gdinp = dcopy (dinp, n);

    gpu->iface->upload (gpu, gmean, mean, (size_t) CH * sizeof (float));
    gpu->iface->upload (gpu, grstd, rstd, (size_t) CH * sizeof (float));
    cpu->iface->batchnorm_backward (cpu, dinp, dgamma, dbeta, dout, x, gamma, mean, rstd, B, CH,
                                    SP);
    gpu->iface->batchnorm_backward (gpu, gdinp, gdgamma, gdbeta, gdout, gx, ggamma, gmean, grstd,
                                    B, CH, SP);
    snprintf (what, sizeof what, "batchnorm backward dinp B=%d CH=%d SP=%d", B, CH, SP);
    tap_close (what, fetch (gdinp, n), dinp, n, TOL);
    tap_close ("batchnorm backward dgamma (accumulated)", fetch (gdgamma, CH), dgamma, CH, TOL);
    tap_close ("batchnorm backward dbeta (accumulated)", fetch (gdbeta, CH), dbeta, CH, TOL);
  }
  arena_free ();
}

/* ---- losses --------------------------------------------------------------------------------- */

static void
test_xent (int B, int C)
{
  const int64_t n = (int64_t) B * C;
  float *x = hrand (n, -5, 5);
  int32_t *y = labels_rand (B, C);
  float *probs = hmem ((size_t) n * sizeof (float)), *losses = hmem ((size_t) B * sizeof (float));
  float *gx = dcopy (x, n), *gprobs = dcopy (NULL, n), *glosses = dcopy (NULL, B);
  int32_t *gy = dmem (y, (size_t) B * sizeof (int32_t));
  float lc, lg;
  char what[96];

  lc = cpu->iface->softmax_xent_forward (cpu, probs, losses, x, y, B, C);
  lg = gpu->iface->softmax_xent_forward (gpu, gprobs, glosses, gx, gy, B, C);
  snprintf (what, sizeof what, "cross-entropy mean loss B=%d C=%d", B, C);
  tap_close_scalar (what, lg, lc, TOL);
  tap_close ("cross-entropy probabilities", fetch (gprobs, n), probs, n, TOL);
  tap_close ("cross-entropy losses", fetch (glosses, B), losses, B, TOL);
  {
    int cc = cpu->iface->argmax_correct (cpu, NULL, probs, y, B, C);
    int cg = gpu->iface->argmax_correct (gpu, NULL, gprobs, gy, B, C);

    tap_ok (cc == cg, "argmax_correct right after the loss: %d rows (CPU %d)", cg, cc);
  }
  lg = gpu->iface->softmax_xent_forward (gpu, gprobs, NULL, gx, gy, B, C);
  tap_close_scalar ("cross-entropy mean loss without losses", lg, lc, TOL);
  {
    float *d = hmem ((size_t) n * sizeof (float));
    float *gd = dcopy (hfill (n, NAN), n);

    gpu->iface->upload (gpu, gprobs, probs, (size_t) n * sizeof (float));
    cpu->iface->softmax_xent_backward (cpu, d, probs, y, 1.0f / B, B, C);
    gpu->iface->softmax_xent_backward (gpu, gd, gprobs, gy, 1.0f / B, B, C);
    tap_close ("cross-entropy backward", fetch (gd, n), d, n, 0.0);
  }
  arena_free ();
}

static void
test_argmax (int B, int C)
{
  const int64_t n = (int64_t) B * C;
  float *s = hrand (n, -1, 1);
  int32_t *y = labels_rand (B, C);
  int32_t *pc = hmem ((size_t) B * sizeof (int32_t)), *pg = hmem ((size_t) B * sizeof (int32_t));

  /* ties (the first wins), a NaN in column 0 (keeps 0), a NaN elsewhere (never wins),
   * and -inf everywhere */
  for (int b = 0; b < B; b += 5)
    s[(int64_t) b * C + C / 2] = s[(int64_t) b * C + C - 1] = 2.0f;
  if (B > 1)
    s[(int64_t) 1 * C] = NAN;
  if (B > 2)
    s[(int64_t) 2 * C + C / 3] = NAN;
  if (B > 3)
    for (int c = 0; c < C; c++)
      s[(int64_t) 3 * C + c] = -INFINITY;
  {
    float *gs = dcopy (s, n);
    int32_t *gy = dmem (y, (size_t) B * sizeof (int32_t));
    int cc = cpu->iface->argmax_correct (cpu, pc, s, y, B, C);
    int cg = gpu->iface->argmax_correct (gpu, pg, gs, gy, B, C);
    char what[96];

    snprintf (what, sizeof what, "argmax_correct count B=%d C=%d", B, C);
    tap_ok (cc == cg, "%s: %d (CPU %d)", what, cg, cc);
    snprintf (what, sizeof what, "argmax_correct predictions B=%d C=%d", B, C);
    tap_same (what, pg, pc, (size_t) B * sizeof (int32_t));
    cg = gpu->iface->argmax_correct (gpu, NULL, gs, NULL, B, C);
    tap_ok (cg == 0, "argmax_correct without labels counts 0 (%d)", cg);
  }
  arena_free ();
}

static void
test_bce_mse (int B, int D)
{
  const int64_t n = (int64_t) B * D;
  float *x = hrand (n, -30, 30), *t = hrand (n, 0, 1);
  float *probs = hmem ((size_t) n * sizeof (float)), *losses = hmem ((size_t) n * sizeof (float));
  float *d = hmem ((size_t) n * sizeof (float));
  float *gx = dcopy (x, n), *gt = dcopy (t, n), *gprobs = dcopy (NULL, n);
  float *glosses = dcopy (NULL, n), *gd = dcopy (hfill (n, NAN), n);
  float lc, lg;

  lc = cpu->iface->bce_forward (cpu, probs, losses, x, t, n);
  lg = gpu->iface->bce_forward (gpu, gprobs, glosses, gx, gt, n);
  tap_close_scalar ("binary cross-entropy mean loss", lg, lc, TOL);
  tap_close ("binary cross-entropy probabilities", fetch (gprobs, n), probs, n, TOL_EW);
  tap_close ("binary cross-entropy losses", fetch (glosses, n), losses, n, TOL_EW);
  gpu->iface->upload (gpu, gprobs, probs, (size_t) n * sizeof (float));
  cpu->iface->bce_backward (cpu, d, probs, t, 1.0f / n, n);
  gpu->iface->bce_backward (gpu, gd, gprobs, gt, 1.0f / n, n);
  tap_close ("binary cross-entropy backward", fetch (gd, n), d, n, 0.0);

  lc = cpu->iface->mse_forward (cpu, losses, x, t, B, D);
  lg = gpu->iface->mse_forward (gpu, glosses, gx, gt, B, D);
  tap_close_scalar ("mean squared error mean loss", lg, lc, TOL);
  tap_close ("mean squared error losses", fetch (glosses, B), losses, B, TOL);
  cpu->iface->mse_backward (cpu, d, x, t, 0.5f, B, D);
  gpu->iface->mse_backward (gpu, gd, gx, gt, 0.5f, B, D);
  tap_close ("mean squared error backward", fetch (gd, n), d, n, 0.0);
  arena_free ();
}

static void
test_distill (int B, int C)
{
  const int64_t n = (int64_t) B * C;
  float *x = hrand (n, -4, 4), *t = hrand (n, -4, 4);
  int32_t *y = labels_rand (B, C);
  float *probs = hmem ((size_t) n * sizeof (float)), *ss = hmem ((size_t) n * sizeof (float));
  float *st = hmem ((size_t) n * sizeof (float)), *losses = hmem ((size_t) B * sizeof (float));
  float *gx = dcopy (x, n), *gt = dcopy (t, n), *gprobs = dcopy (NULL, n);
  float *gss = dcopy (NULL, n), *gst = dcopy (NULL, n), *glosses = dcopy (NULL, B);
  int32_t *gy = dmem (y, (size_t) B * sizeof (int32_t));
  float lc, lg;

  lc = cpu->iface->distill_forward (cpu, probs, ss, st, losses, x, t, y, 3.0f, 0.7f, B, C);
  lg = gpu->iface->distill_forward (gpu, gprobs, gss, gst, glosses, gx, gt, gy, 3.0f, 0.7f, B, C);
  tap_close_scalar ("distillation mean loss", lg, lc, TOL);
  tap_close ("distillation probabilities", fetch (gprobs, n), probs, n, TOL);
  tap_close ("distillation soft student", fetch (gss, n), ss, n, TOL);
  tap_close ("distillation soft teacher", fetch (gst, n), st, n, TOL);
  tap_close ("distillation losses", fetch (glosses, B), losses, B, TOL);
  {
    float *d = hmem ((size_t) n * sizeof (float));
    float *gd = dcopy (hfill (n, NAN), n);

    gpu->iface->upload (gpu, gprobs, probs, (size_t) n * sizeof (float));
    gpu->iface->upload (gpu, gss, ss, (size_t) n * sizeof (float));
    gpu->iface->upload (gpu, gst, st, (size_t) n * sizeof (float));
    cpu->iface->distill_backward (cpu, d, probs, ss, st, y, 3.0f, 0.7f, 1.0f / B, B, C);
    gpu->iface->distill_backward (gpu, gd, gprobs, gss, gst, gy, 3.0f, 0.7f, 1.0f / B, B, C);
    tap_close ("distillation backward", fetch (gd, n), d, n, 0.0);
  }
  arena_free ();
}

/* ---- optimizer ------------------------------------------------------------------------------- */

static void
test_optimizer (void)
{
  const int64_t n = 50021;
  float *p = hrand (n, -1, 1), *g = hrand (n, -0.1f, 0.1f), *m = hrand (n, -0.01f, 0.01f);
  float *v = hrand (n, 0, 0.001f);
  float *gp = dcopy (p, n), *gg = dcopy (g, n), *gm = dcopy (m, n), *gv = dcopy (v, n);
  double sc, sg;

  p[7] = 0.0f;  /* sign(0) = 0 in the L1 term */
  gpu->iface->upload (gpu, gp, p, (size_t) n * sizeof (float));

  sc = cpu->iface->sum_squares (cpu, g, n);
  sg = gpu->iface->sum_squares (gpu, gg, n);
  tap_close_scalar ("sum_squares", sg, sc, 1e-12);

  cpu->iface->scale (cpu, g, 0.75f, n);
  gpu->iface->scale (gpu, gg, 0.75f, n);
  tap_close ("scale", fetch (gg, n), g, n, 0.0);

  cpu->iface->regularize (cpu, g, p, 1e-3f, 1e-2f, n);
  gpu->iface->regularize (gpu, gg, gp, 1e-3f, 1e-2f, n);
  tap_close ("regularize (L1 + L2)", fetch (gg, n), g, n, 0.0);

  cpu->iface->sgd_step (cpu, p, NULL, g, 0.1f, 0.0f, false, n);
  gpu->iface->sgd_step (gpu, gp, NULL, gg, 0.1f, 0.0f, false, n);
  tap_close ("SGD step", fetch (gp, n), p, n, 0.0);

  cpu->iface->sgd_step (cpu, p, m, g, 0.1f, 0.9f, false, n);
  gpu->iface->sgd_step (gpu, gp, gm, gg, 0.1f, 0.9f, false, n);
  tap_close ("SGD momentum step, params", fetch (gp, n), p, n, 0.0);
  tap_close ("SGD momentum step, velocity", fetch (gm, n), m, n, 0.0);

  cpu->iface->sgd_step (cpu, p, m, g, 0.1f, 0.9f, true, n);
  gpu->iface->sgd_step (gpu, gp, gm, gg, 0.1f, 0.9f, true, n);
  tap_close ("Nesterov step, params", fetch (gp, n), p, n, 0.0);
  tap_close ("Nesterov step, velocity", fetch (gm, n), m, n, 0.0);

  for (int step = 1; step <= 3; step++)
    {
      const float bc1 = (float) (1.0 - pow (0.9, step)), bc2 = (float) (1.0 - pow (0.999, step));
      const float wd = step == 3 ? 0.01f : 0.0f;
      char what[64];

      cpu->iface->adam_step (cpu, p, m, v, g, 1e-3f, 0.9f, 0.999f, 1e-7f, wd, bc1, bc2, n);
      gpu->iface->adam_step (gpu, gp, gm, gv, gg, 1e-3f, 0.9f, 0.999f, 1e-7f, wd, bc1, bc2, n);
      snprintf (what, sizeof what, "%s step %d, params", wd > 0 ? "AdamW" : "Adam", step);
      tap_close (what, fetch (gp, n), p, n, TOL_EW);
      snprintf (what, sizeof what, "%s step %d, first moment", wd > 0 ? "AdamW" : "Adam", step);
      tap_close (what, fetch (gm, n), m, n, TOL_EW);
      snprintf (what, sizeof what, "%s step %d, second moment", wd > 0 ? "AdamW" : "Adam", step);
      tap_close (what, fetch (gv, n), v, n, TOL_EW);
    }
  arena_free ();
}

/* ---- slimming: masks, min/max, fake quantization ---------------------------------------------- */

static void
test_slimming (void)
{
  const int rows = 37, cols = 301;
  const int64_t n = (int64_t) rows * cols;
  float *x = hrand (n, -3, 3);
  uint8_t *mask = hmem ((size_t) n);
  float lo_c, hi_c, lo_g, hi_g;

  x[5] = NAN;
  x[100] = INFINITY;
  x[cols] = 0.0f;
  for (int64_t i = 0; i < n; i++)
    mask[i] = (es_rng_next (&rng) & 3) != 0;
  {
    float *gx = dcopy (x, n);
    uint8_t *gmask = dmem (mask, (size_t) n);
    float *y = hcopy (x, n);

    cpu->iface->mask_apply (cpu, y, mask, n);
    gpu->iface->mask_apply (gpu, gx, gmask, n);
    tap_same ("mask_apply", fetch (gx, n), y, (size_t) n * sizeof (float));
  }
  {
    float *gx = dcopy (x, n);

    cpu->iface->min_max (cpu, &lo_c, &hi_c, x, n);
    gpu->iface->min_max (gpu, &lo_g, &hi_g, gx, n);
    tap_ok (lo_c == lo_g && hi_c == hi_g, "min_max with a NaN and an inf: [%g, %g] (CPU [%g, %g])",
            lo_g, hi_g, lo_c, hi_c);
    gpu->iface->upload (gpu, gx, hfill (n, NAN), (size_t) n * sizeof (float));
    gpu->iface->min_max (gpu, &lo_g, &hi_g, gx, n);
    tap_ok (lo_g == INFINITY && hi_g == -INFINITY, "min_max of NaN only: [%g, %g]", lo_g, hi_g);
  }
  {
    float *w = hrand (n, -0.2f, 0.2f);
    float *out = hmem ((size_t) n * sizeof (float));
    float *gw, *gout;

    for (int c = 0; c < cols; c++)
      w[(int64_t) 2 * cols + c] = 0.0f;   /* a zero row: scale 1 */
    w[(int64_t) 3 * cols + 4] = NAN;       /* skipped by the maximum, lowest code */
    w[(int64_t) 4 * cols + 9] = 1e30f;     /* dominates its row */
    gw = dcopy (w, n);
    gout = dcopy (NULL, n);
    cpu->iface->fake_quant_weights (cpu, out, w, rows, cols);
    gpu->iface->fake_quant_weights (gpu, gout, gw, rows, cols);
    tap_same ("fake_quant_weights", fetch (gout, n), out, (size_t) n * sizeof (float));
    gpu->iface->fake_quant_weights (gpu, gw, gw, rows, cols);
    tap_same ("fake_quant_weights in place", fetch (gw, n), out, (size_t) n * sizeof (float));
  }
  {
    float *a = hrand (n, -2, 5);
    float *out = hmem ((size_t) n * sizeof (float)), *d = hrand (n, -1, 1);
    float *gd, *ga, *gout;

    a[1] = NAN;
    a[2] = 1e30f;
    a[3] = -1e30f;
    ga = dcopy (a, n);
    gout = dcopy (NULL, n);
    for (int qmax = 127; qmax <= 255; qmax += 128)
      {
        char what[64];

        cpu->iface->fake_quant_act (cpu, out, a, -1.0f, 3.0f, qmax, n);
        gpu->iface->fake_quant_act (gpu, gout, ga, -1.0f, 3.0f, qmax, n);
        snprintf (what, sizeof what, "fake_quant_act qmax=%d", qmax);
        tap_same (what, fetch (gout, n), out, (size_t) n * sizeof (float));
      }
    gd = dcopy (d, n);
    cpu->iface->fake_quant_act_backward (cpu, d, d, a, 0.5f, 3.0f, n);
    gpu->iface->fake_quant_act_backward (gpu, gd, gd, ga, 0.5f, 3.0f, n);
    tap_same ("fake_quant_act_backward in place", fetch (gd, n), d, (size_t) n * sizeof (float));
  }
  arena_free ();
}

/* ---- mixed precision (set_precision: bf16 and fp16 matrix products) ------------------- */

/* bf16 rounding, derived apart from the backend's bit trick: the two bf16 values around
 * x (x truncated to its top 16 bits, and one bf16 step further from zero), the nearer
 * one, the one with an even last bit on a tie. Finite x under the largest bf16. */
static float
ref_bf16 (float x)
{
  uint32_t u, lo, hi;
  float a, b;
  double da, db;

  if (!isfinite (x))
    return x;
  memcpy (&u, &x, 4);
  lo = u & 0xffff0000u;
  hi = lo + 0x10000u;
  memcpy (&a, &lo, 4);
  memcpy (&b, &hi, 4);
  da = fabs ((double) x - a);
  db = fabs ((double) b - x);
  return da < db ? a : db < da ? b : ((lo >> 16) & 1u) ? b : a;
}

/* The values the 16-bit rounding is checked on: ties either way, the largest finite
 * values and the first ones past them, fp16's subnormals and what underflows, signs,
 * NaN, infinities, and random values over many magnitudes. No fp32 subnormals (the
 * GPU code flushes them, -ftz=true, as the CPU backend does). */
static int
rounding_values (float *v, int cap)
{
  const float fixed[] = {
    1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -(1.0f + 0x1p-8f),
    1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-11f + 0x1p-20f, -(1.0f + 3 * 0x1p-11f),
    65504.0f, 65519.0f, 65520.0f, 65536.0f, 1e5f, -65520.0f, 0x1p-14f, 0x1p-15f + 0x1p-25f,
    0x1p-24f, 0x1p-25f, 3 * 0x1p-25f, 0x1p-26f, -3 * 0x1p-25f, 0x1p-100f, 3.0e38f, 0.1f,
    -0.1f, 0.0f, -0.0f, NAN, INFINITY, -INFINITY,
  };
  int n = 0;

  for (int i = 0; i < (int) ES_N_ELEMENTS (fixed) && n < cap; i++)
    v[n++] = fixed[i];
  while (n < cap)
    v[n++] = (float) ((es_rng_uniform (&rng) - 0.5)
                      * ldexp (1.0, (int) (es_rng_next (&rng) % 60) - 30));
  return n;
}

/* dense_forward with IN = OUT = 1 and w = 1: out = round(x) * round(1), exactly (one
 * product, exact in fp32), so it shows the rounding of every x. */
static void
test_rounding (int precision)
{
  enum { N = 301 };
  float *x = hmem (N * sizeof (float)), *want = hmem (N * sizeof (float));
  float one = 1.0f, *got;
  int n = rounding_values (x, N), bad = -1;
  float *gx = dcopy (x, n), *gw = dcopy (&one, 1), *gout = dcopy (hfill (n, 0.0f), n);
  EsError err = { ES_OK, "" };

  for (int i = 0; i < n; i++)
    {
#if defined(__FLT16_MAX__)
      want[i] = precision == 1 ? ref_bf16 (x[i]) : (float) (_Float16) x[i];
#else
      if (precision == 2)
        {
          tap_ok (true, "# SKIP fp16 rounding: this compiler has no _Float16");
          arena_free ();
          return;
        }
      want[i] = ref_bf16 (x[i]);
#endif
      if (precision == 1 && fabsf (x[i]) > 3.3e38f)
        want[i] = x[i];   /* (none such: ref_bf16 does not round past the largest) */
    }
  if (!tap_ok (gpu->iface->set_precision (gpu, precision, &err), "set_precision %d (%s)",
               precision, err.message))
    return;
  gpu->iface->dense_forward (gpu, gout, gx, gw, NULL, n, 1, 1);
  got = fetch (gout, n);
  gpu->iface->set_precision (gpu, 0, NULL);
  for (int i = 0; i < n && bad < 0; i++)
    /* NaN as NaN; -0 may come back +0 (the product's sum starts at +0) */
    if (isnan (want[i]) ? !isnan (got[i])
        : want[i] == 0.0f ? got[i] != 0.0f : memcmp (&got[i], &want[i], 4) != 0)
      bad = i;
  tap_ok (bad < 0, "%s rounding (round to nearest even) of %d values through a product",
          precision == 1 ? "bf16" : "fp16", n);
  if (bad >= 0)
    tap_diag ("  %.9g rounded to %.9g, want %.9g", x[bad], got[bad], want[bad]);
  arena_free ();
}

/* How far a product with 16-bit operands may be from the fp32 one, element by element
 * (the derivation): each operand rounded to nearest is a (1 + d) with |d| <= u, the
 * unit roundoff (bf16, 8 significant bits: 2^-8; fp16, 11: 2^-11), so each of the K
 * products a b is off by at most (2u + u^2) |a b|. Both results then sum the K terms
 * in fp32, each within K 2^-24 sum |a b| of its exact sum (recursive summation,
 * gamma_K), and add an fp32 bias or accumulated value, 2^-24 |result| each. fp16 also
 * keeps magnitudes under 2^-14 only on a grid of 2^-24 (subnormals): an absolute error
 * up to 2^-25 per operand, so per product at most 2^-25 (amax + bmax) (1 + u) + 2^-50
 * with every operand within amax, bmax. S = sum |a| |b|, which the CPU computes by the
 * same op on absolute values, within K 2^-24 S of itself. So:
 *   |got - want| <= (2u + u^2 + 3 K 2^-24) S + 2^-23 |want| + K abs1. */
static bool
check_mixed (const char *what, const float *got, const float *want, const float *S,
             int64_t n, double u, int64_t K, double abs1)
{
  double worst = 0.0;
  int64_t at = -1;

  for (int64_t i = 0; i < n; i++)
    {
      const double bound = (2 * u + u * u + 3.0 * K * 0x1p-24) * S[i]
                           + 0x1p-23 * fabs ((double) want[i]) + K * abs1;
      const double e = fabs ((double) got[i] - (double) want[i]);

      if (!(e <= bound))
        {
          at = i;
          break;
        }
      if (bound > 0 && e / bound > worst)
        worst = e / bound;
    }
  tap_ok (at < 0, "%s (n=%lld, K=%lld): within the derived bound (worst %.2f of it)", what,
          (long long) n, (long long) K, worst);
  if (at >= 0)
    tap_diag ("  at %lld: got %.9g, want %.9g, S %.9g", (long long) at, got[at], want[at],
              S[at]);
  return at < 0;
}

static float *
habs (const float *x, int64_t n)
{
  float *y = hmem ((size_t) n * sizeof (float));

  for (int64_t i = 0; i < n; i++)
    y[i] = fabsf (x[i]);
  return y;
}

/* The unit roundoff and the absolute error per product of a precision, for operands
 * within amax and bmax. */
static double
mixed_u (int precision)
{
  return precision == 1 ? 0x1p-8 : 0x1p-11;
}

static double
mixed_abs1 (int precision, double amax, double bmax)
{
  return precision == 2 ? 0x1p-25 * (amax + bmax) * (1 + 0x1p-11) + 0x1p-50 : 0.0;
}

static void
test_dense_mixed (int precision, int B, int IN, int OUT)
{
  const char *pn = precision == 1 ? "bf16" : "fp16";
  const double u = mixed_u (precision);
  char what[128];
  float *x = hrand ((int64_t) B * IN, -1, 1), *w = hrand ((int64_t) OUT * IN, -0.5f, 0.5f);
  float *b = hrand (OUT, -1, 1), *out = hmem ((size_t) B * OUT * sizeof (float));
  float *S = hmem ((size_t) B * OUT * sizeof (float));
  float *gx = dcopy (x, (int64_t) B * IN), *gw = dcopy (w, (int64_t) OUT * IN);
  float *gb = dcopy (b, OUT), *gout = dcopy (hfill ((int64_t) B * OUT, NAN), (int64_t) B * OUT);
  float *dout = hrand ((int64_t) B * OUT, -1, 1), *dw = hrand ((int64_t) OUT * IN, -1, 1);
  float *db = hrand (OUT, -1, 1), *dinp = hfill ((int64_t) B * IN, NAN);
  float *Sdinp = hmem ((size_t) B * IN * sizeof (float));
  float *Sdw = hfill ((int64_t) OUT * IN, 0.0f), *Sdb = hfill (OUT, 0.0f);
  float *gdout = dcopy (dout, (int64_t) B * OUT), *gdw = dcopy (dw, (int64_t) OUT * IN);
  float *gdb = dcopy (db, OUT), *gdinp = dcopy (dinp, (int64_t) B * IN);

  cpu->iface->dense_forward (cpu, out, x, w, b, B, IN, OUT);
  cpu->iface->dense_forward (cpu, S, habs (x, (int64_t) B * IN), habs (w, (int64_t) OUT * IN),
                             NULL, B, IN, OUT);
  cpu->iface->dense_backward (cpu, dinp, dw, db, dout, x, w, B, IN, OUT);
  cpu->iface->dense_backward (cpu, Sdinp, Sdw, Sdb, habs (dout, (int64_t) B * OUT),
                              habs (x, (int64_t) B * IN), habs (w, (int64_t) OUT * IN), B, IN,
                              OUT);
  gpu->iface->set_precision (gpu, precision, NULL);
  gpu->iface->dense_forward (gpu, gout, gx, gw, gb, B, IN, OUT);
  gpu->iface->dense_backward (gpu, gdinp, gdw, gdb, gdout, gx, gw, B, IN, OUT);
  gpu->iface->set_precision (gpu, 0, NULL);
  snprintf (what, sizeof what, "%s dense forward B=%d IN=%d OUT=%d", pn, B, IN, OUT);
  check_mixed (what, fetch (gout, (int64_t) B * OUT), out, S, (int64_t) B * OUT, u, IN,
               mixed_abs1 (precision, 1.0, 0.5));
  snprintf (what, sizeof what, "%s dense backward dinp B=%d IN=%d OUT=%d", pn, B, IN, OUT);
  check_mixed (what, fetch (gdinp, (int64_t) B * IN), dinp, Sdinp, (int64_t) B * IN, u, OUT,
               mixed_abs1 (precision, 1.0, 0.5));
  snprintf (what, sizeof what, "%s dense backward dw (accumulated) B=%d IN=%d OUT=%d", pn, B,
            IN, OUT);
  check_mixed (what, fetch (gdw, (int64_t) OUT * IN), dw, Sdw, (int64_t) OUT * IN, u, B,
               mixed_abs1 (precision, 1.0, 1.0));
  /* the bias gradient sums fp32 dout: no 16-bit operand */
  snprintf (what, sizeof what, "%s dense backward db stays fp32", pn);
  tap_close (what, fetch (gdb, OUT), db, OUT, TOL);
  arena_free ();
}

static void
test_conv_mixed (int precision, int B, int C, int H, int W, int OC, int K, int S, int P)
{
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t nin = (int64_t) B * C * H * W, nout = (int64_t) B * OC * OH * OW;
  const int64_t nw = (int64_t) OC * C * K * K;
  const char *pn = precision == 1 ? "bf16" : "fp16";
  const double u = mixed_u (precision);
  char what[160];
  float *x = hrand (nin, -1, 1), *w = hrand (nw, -0.5f, 0.5f), *b = hrand (OC, -1, 1);
  float *out = hmem ((size_t) nout * sizeof (float)), *Sout = hmem ((size_t) nout * sizeof (float));
  float *dout = hrand (nout, -1, 1), *dw = hrand (nw, -1, 1), *db = hrand (OC, -1, 1);
  float *dinp = hfill (nin, NAN), *Sdinp = hmem ((size_t) nin * sizeof (float));
  float *Sdw = hfill (nw, 0.0f);
  float *gx = dcopy (x, nin), *gw = dcopy (w, nw), *gb = dcopy (b, OC);
  float *gout = dcopy (hfill (nout, NAN), nout), *gdout = dcopy (dout, nout);
  float *gdw = dcopy (dw, nw), *gdb = dcopy (db, OC), *gdinp = dcopy (dinp, nin);

  cpu->iface->conv2d_forward (cpu, out, x, w, b, B, C, H, W, OC, K, S, P);
  cpu->iface->conv2d_forward (cpu, Sout, habs (x, nin), habs (w, nw), NULL, B, C, H, W, OC, K,
                              S, P);
  cpu->iface->conv2d_backward (cpu, dinp, dw, db, dout, x, w, B, C, H, W, OC, K, S, P);
  cpu->iface->conv2d_backward (cpu, Sdinp, Sdw, NULL, habs (dout, nout), habs (x, nin),
                               habs (w, nw), B, C, H, W, OC, K, S, P);
  gpu->iface->set_precision (gpu, precision, NULL);
  gpu->iface->conv2d_forward (gpu, gout, gx, gw, gb, B, C, H, W, OC, K, S, P);
  gpu->iface->conv2d_backward (gpu, gdinp, gdw, gdb, gdout, gx, gw, B, C, H, W, OC, K, S, P);
  gpu->iface->set_precision (gpu, 0, NULL);
  /* forward: K = C K K terms; dinp: OC K K (the product over OC, then col2im's sum over
   * the window, both fp32 sums); dw: B OH OW */
  snprintf (what, sizeof what, "%s conv2d forward B=%d C=%d %dx%d OC=%d K=%d S=%d P=%d", pn, B,
            C, H, W, OC, K, S, P);
  check_mixed (what, fetch (gout, nout), out, Sout, nout, u, (int64_t) C * K * K,
               mixed_abs1 (precision, 1.0, 0.5));
  snprintf (what, sizeof what, "%s conv2d backward dinp K=%d S=%d P=%d", pn, K, S, P);
  check_mixed (what, fetch (gdinp, nin), dinp, Sdinp, nin, u, (int64_t) OC * K * K,
               mixed_abs1 (precision, 1.0, 0.5));
  snprintf (what, sizeof what, "%s conv2d backward dw K=%d S=%d P=%d", pn, K, S, P);
  check_mixed (what, fetch (gdw, nw), dw, Sdw, nw, u, (int64_t) B * OH * OW,
               mixed_abs1 (precision, 1.0, 1.0));
  snprintf (what, sizeof what, "%s conv2d backward db stays fp32", pn);
  tap_close (what, fetch (gdb, OC), db, OC, TOL);
  arena_free ();
}

static void
test_mixed (void)
{
  EsError err = { ES_OK, "" };

  tap_ok (!gpu->iface->set_precision (gpu, 7, &err) && err.code == ES_ERR_INVALID,
          "an unknown precision is refused (%s)", err.message);
  tap_ok (cpu->iface->set_precision == NULL, "the CPU backend has no set_precision (fp32 only)");
  for (int precision = 1; precision <= 2; precision++)
    {
      test_rounding (precision);
      test_dense_mixed (precision, 37, 53, 29);
      test_dense_mixed (precision, 128, 784, 128);
      test_dense_mixed (precision, 5, 7, 3);
      test_conv_mixed (precision, 3, 2, 9, 7, 5, 3, 1, 1);
      test_conv_mixed (precision, 2, 3, 8, 8, 4, 3, 2, 0);
      test_conv_mixed (precision, 2, 16, 6, 6, 3, 1, 1, 0);
    }
  /* and back in fp32, the products agree with the CPU to fp32 rounding again */
  test_dense (37, 53, 29, true);
}

int
main (void)
{
  EsError err = { ES_OK, "" };
  EsBackend *direct;

  tap_require_device ();
  cpu = es_cpu_backend_new (1, NULL, &err);
  gpu = es_cuda_backend_new (0, NULL, &err);
  if (!tap_ok (cpu != NULL && gpu != NULL, "backends made (%s)", err.message))
    return tap_done ();
  setenv ("ESPALIER_CUDA_CONV", "direct", 1);
  direct = es_cuda_backend_new (0, NULL, &err);
  unsetenv ("ESPALIER_CUDA_CONV");
  if (!tap_ok (direct != NULL, "a second backend with the direct convolutions (%s)", err.message))
    return tap_done ();

  test_memory ();
  test_dense (37, 53, 29, true);
  test_dense (5, 7, 3, false);
  test_dense (128, 784, 128, true);
  test_dense (1, 300, 1000, true);
  for (int i = 0; i < 2; i++)
    {
      EsBackend *g = i == 0 ? gpu : direct;
      const char *path = i == 0 ? "im2col" : "direct";

      test_conv (g, path, 3, 2, 9, 7, 5, 3, 1, 1);
      test_conv (g, path, 2, 3, 8, 8, 4, 3, 2, 0);
      test_conv (g, path, 4, 1, 28, 28, 8, 5, 1, 2);
      test_conv (g, path, 2, 16, 6, 6, 3, 1, 1, 0);
    }
  test_pool (3, 4, 8, 8, 2, 2, false);
  test_pool (2, 3, 9, 7, 3, 2, true);
  test_pool (2, 2, 7, 7, 3, 3, false);
  test_activations ();
  test_softmax (7, 10);
  test_softmax (33, 1000);
  test_dropout (0.0f);
  test_dropout (0.3f);
  test_dropout (1.0f);
  test_batchnorm (5, 3, 49);
  test_batchnorm (37, 17, 1);
  test_batchnorm (1, 4, 1);
  test_xent (37, 10);
  test_xent (5, 1000);
  test_argmax (41, 10);
  test_argmax (6, 77);
  test_bce_mse (13, 7);
  test_distill (19, 10);
  test_optimizer ();
  test_slimming ();
  test_mixed ();

  tap_ok (es_cuda_backend_check (gpu, &err), "no CUDA error on the way (%s)", err.message);
  tap_ok (es_cuda_backend_check (direct, &err), "nor on the second backend (%s)", err.message);
  es_backend_free (direct);
  es_backend_free (gpu);
  es_backend_free (cpu);
  return tap_done ();
}
