/* bench-cuda.c: the CUDA backend's benchmark, for tests/gpu/device-check.sh.
 *   1. The reference MLP (Flatten 28x28 -> Dense 128 ReLU -> Dense 10, Adam 1e-3,
 *      cross-entropy) trained on Fashion-MNIST through EsTrainer, shuffled uint8 batches
 *      from host memory: seconds per epoch and test accuracy (the PyTorch peer,
 *      ../shared/peers/torch_mlp.py --device cuda, runs in the same check).
 *      Then the same run (same initialization and shuffling) in mixed precision, bf16
 *      and fp16 (where the backend has set_precision; --no-amp leaves it out): the test
 *      accuracy against the fp32 run's, in points (target: within 0.3).
 *   2. A wide MLP layer (4096 x 4096, batch 4096) forward and backward through the
 *      backend's dense ops, in fp32, with TF32 and in bf16 and fp16: TFLOP/s of the
 *      matrix products, and for bf16 the share of the H200's dense bf16 peak, 990
 *      TFLOP/s by NVIDIA's datasheet for the SXM part (/work/.library/device/H200.md;
 *      cuBLAS ran an 8192^3 bf16 product at about 790 there, KINDS.md), target 60%. The
 *      bf16 time includes the operands' rounding to 16 bits, which the backend does in
 *      every product (es-cuda-ops.cu says why): 5 n^2 elements read as fp32 and written
 *      as bf16 a pass; their share is estimated from the measured copy bandwidth
 *      (part 3) and given beside it, with the products' rate without it.
 *   3. The backend's ceilings as the profiler measures them (es_measure_ceilings).
 *   4. The reference MLP again through its three input paths, as samples/s: the dataset
 *      resident on the device with CUDA Graph replay (what makes a step of this small
 *      model cost microseconds: the 2x-over-PyTorch-eager target rests on it), eager
 *      steps from host memory, and streaming from host memory one batch ahead
 *      (--no-paths leaves it out; only on backends that record graphs).
 * Prints one JSON object per part (one line each) and nothing else on stdout.
 * Not a test: times depend on the machine. No GLib (the GPU machine has none); zlib
 * reads the IDX files, gzipped or not.
 *
 * Usage: bench-cuda --data DIR [--epochs N] [--batch B] [--backend cuda|cpu] [--no-wide]
 *                   [--rows N] [--no-amp] [--no-paths]
 *   --rows N  train on the first N images only (a quick run, e.g. on the emulation)
 *
 * Dimension key: B = batch, D = 784 input bytes per image. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "es-backend.h"
#include "es-ceiling.h"
#include "es-cuda.h"
#include "es-train.h"

#define D 784

/* An IDX file's payload (after the header) into a new buffer; *n the first
 * dimension. NULL on a read error (message on stderr). */
static uint8_t *
read_idx (const char *dir, const char *name, int *n, size_t item_bytes)
{
  char path[1024];
  gzFile f;
  uint8_t head[16];
  uint8_t *data;
  int ndim, hdr;
  size_t bytes;

  snprintf (path, sizeof path, "%s/%s.gz", dir, name);
  f = gzopen (path, "rb");
  if (f == NULL)
    {
      snprintf (path, sizeof path, "%s/%s", dir, name);
      f = gzopen (path, "rb");
    }
  if (f == NULL)
    {
      fprintf (stderr, "bench-cuda: cannot open %s/%s(.gz)\n", dir, name);
      return NULL;
    }
  if (gzread (f, head, 4) != 4)
    goto bad;
  ndim = head[3];
  hdr = 4 * ndim;
  if (ndim < 1 || ndim > 3 || gzread (f, head + 4, (unsigned) hdr) != hdr)
    goto bad;
  *n = (int) ((uint32_t) head[4] << 24 | (uint32_t) head[5] << 16 | (uint32_t) head[6] << 8
              | head[7]);
  bytes = (size_t) *n * item_bytes;
  data = malloc (bytes);
  if (data == NULL || gzread (f, data, (unsigned) bytes) != (int) bytes)
    {
      free (data);
      goto bad;
    }
  gzclose (f);
  return data;
bad:
  fprintf (stderr, "bench-cuda: %s is not a readable IDX file\n", path);
  gzclose (f);
  return NULL;
}

static EsBackend *
make_backend (const char *kind, EsError *err)
{
  if (strcmp (kind, "cpu") == 0)
    return es_cpu_backend_new (0, NULL, err);
  return es_cuda_backend_new (0, NULL, err);
}

/* ---- 1. the reference MLP ------------------------------------------------------------ */

/* One run in precision prec; *acc_out gets its test accuracy. fp32_acc (NAN for the
 * fp32 run itself) is the fp32 run's, to compare with. */
static int
bench_mlp (EsBackend *be, const char *data_dir, int epochs, int batch, int rows,
           EsPrecision prec, double fp32_acc, double *acc_out)
{
  uint8_t *xtr, *ltr, *xte, *lte;
  int ntr = 0, nte = 0, n2 = 0, n3 = 0;
  int32_t *ytr, *yte, *perm, *yb;
  uint8_t *xb;
  EsShape in = { 3, { 1, 28, 28 } };
  EsLayerSpec l[4];
  EsModel *m;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsError err = { ES_OK, "" };
  EsRng rng = { 0 };
  double load_t = es_now (), epoch_s[64], best = INFINITY, acc;
  EsStepStats st = { 0, 0, 0 };

  xtr = read_idx (data_dir, "train-images-idx3-ubyte", &ntr, D);
  ltr = read_idx (data_dir, "train-labels-idx1-ubyte", &n2, 1);
  xte = read_idx (data_dir, "t10k-images-idx3-ubyte", &nte, D);
  lte = read_idx (data_dir, "t10k-labels-idx1-ubyte", &n3, 1);
  if (xtr == NULL || ltr == NULL || xte == NULL || lte == NULL || n2 != ntr || n3 != nte)
    return 1;
  if (rows > 0 && rows < ntr)
    ntr = rows;
  ytr = malloc ((size_t) ntr * sizeof *ytr);
  yte = malloc ((size_t) nte * sizeof *yte);
  perm = malloc ((size_t) ntr * sizeof *perm);
  xb = malloc ((size_t) batch * D);
  yb = malloc ((size_t) batch * sizeof *yb);
  for (int i = 0; i < ntr; i++)
    {
      ytr[i] = ltr[i];
      perm[i] = i;
    }
  for (int i = 0; i < nte; i++)
    yte[i] = lte[i];
  load_t = es_now () - load_t;

  l[0] = es_layer_spec_default (ES_LAYER_FLATTEN);
  l[1] = es_layer_spec_default (ES_LAYER_DENSE);
  l[1].units = 128;
  l[2] = es_layer_spec_default (ES_LAYER_RELU);
  l[3] = es_layer_spec_default (ES_LAYER_DENSE);
  l[3].units = 10;
  m = es_model_new (&in, l, 4, &err);
  if (m == NULL)
    {
      fprintf (stderr, "bench-cuda: %s\n", err.message);
      return 1;
    }
  es_model_init (m, 0);
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 1e-3f;
  cfg.precision = prec;
  tr = es_trainer_new (m, be, &cfg, batch, &err);
  if (tr == NULL)
    {
      fprintf (stderr, "bench-cuda: %s\n", err.message);
      return 1;
    }
  if (epochs > 64)
    epochs = 64;
  for (int e = 0; e < epochs; e++)
    {
      double t0;

      es_shuffle (perm, (size_t) ntr, &rng);
      if (be->iface->synchronize != NULL)
        be->iface->synchronize (be);
      t0 = es_now ();
      for (int r0 = 0; r0 < ntr; r0 += batch)
        {
          const int B = ES_MIN (batch, ntr - r0);
          EsBatch b = { .B = B, .x_u8 = xb, .scale = 1.0f / 255.0f, .shift = 0.0f,
                        .labels = yb };

          for (int r = 0; r < B; r++)
            {
              memcpy (xb + (size_t) r * D, xtr + (size_t) perm[r0 + r] * D, D);
              yb[r] = ytr[perm[r0 + r]];
            }
          if (!es_trainer_train_batch (tr, &b, NULL, &err))
            {
              fprintf (stderr, "bench-cuda: %s\n", err.message);
              return 1;
            }
        }
      if (be->iface->synchronize != NULL)
        be->iface->synchronize (be);
      epoch_s[e] = es_now () - t0;
      best = fmin (best, epoch_s[e]);
    }
  {
    EsBatch b = { .B = nte, .x_u8 = xte, .scale = 1.0f / 255.0f, .shift = 0.0f, .labels = yte };

    if (!es_trainer_eval_batch (tr, &b, &st, NULL, &err))
      {
        fprintf (stderr, "bench-cuda: %s\n", err.message);
        return 1;
      }
    acc = (double) st.correct / st.rows;
  }
  if (es_cuda_backend_device (be) >= 0 && !es_cuda_backend_check (be, &err))
    {
      fprintf (stderr, "bench-cuda: %s\n", err.message);
      return 1;
    }
  *acc_out = acc;
  printf ("{\"bench\": \"%s%s\", \"backend\": \"%s\", \"precision\": \"%s\", "
          "\"rows\": %d, \"batch\": %d, \"epochs\": %d, \"load_s\": %.3f, \"epoch_s\": [",
          prec == ES_PRECISION_FP32 ? "mlp" : "mlp_", prec == ES_PRECISION_FP32 ? ""
          : es_precision_name (prec), be->iface->name, es_precision_name (prec), ntr, batch,
          epochs, load_t);
  for (int e = 0; e < epochs; e++)
    printf ("%s%.4f", e ? ", " : "", epoch_s[e]);
  printf ("], \"best_epoch_s\": %.4f, \"steps_per_s\": %.1f, \"test_accuracy\": %.4f", best,
          ES_CEIL_DIV (ntr, batch) / best, acc);
  if (prec != ES_PRECISION_FP32)
    printf (", \"fp32_test_accuracy\": %.4f, \"points_from_fp32\": %.2f, "
            "\"within_0_3_points\": %s, \"loss_scale\": %g, \"skipped_steps\": %lld", fp32_acc,
            100.0 * (acc - fp32_acc), fabs (100.0 * (acc - fp32_acc)) <= 0.3 ? "true" : "false",
            (double) es_trainer_loss_scale (tr), (long long) es_trainer_skipped_steps (tr));
  printf ("}\n");
  fflush (stdout);
  es_trainer_free (tr);
  es_model_free (m);
  free (xtr);
  free (ltr);
  free (xte);
  free (lte);
  free (ytr);
  free (yte);
  free (perm);
  free (xb);
  free (yb);
  return 0;
}

/* ---- 2. the wide layer --------------------------------------------------------------- */

/* Seconds per forward + backward (dinp, dw, db) of a Dense layer N x N at batch N,
 * the median of 5 timings of reps passes after a warm-up. */
static double
time_wide (EsBackend *be, float *x, float *w, float *b, float *y, float *dy, float *dx,
           float *dw, float *db, int N, int reps)
{
  double t[5];

  for (int k = -1; k < 5; k++)
    {
      double t0;

      be->iface->synchronize (be);
      t0 = es_now ();
      for (int r = 0; r < reps; r++)
        {
          be->iface->dense_forward (be, y, x, w, b, N, N, N);
          be->iface->dense_backward (be, dx, dw, db, dy, x, w, N, N, N);
        }
      be->iface->synchronize (be);
      if (k >= 0)
        t[k] = (es_now () - t0) / reps;
    }
  for (int i = 0; i < 5; i++)
    for (int j = i + 1; j < 5; j++)
      if (t[j] < t[i])
        {
          double s = t[i];

          t[i] = t[j];
          t[j] = s;
        }
  return t[2];
}

/* Dense bf16 peak of the H200 SXM, NVIDIA's datasheet (H200.md), in TFLOP/s. */
#define H200_BF16_PEAK_TFLOPS 990.0

/* copy_gbs: the measured device copy bandwidth (bytes read + written per second, 1e9),
 * for the estimate of the 16-bit rounding's time; NAN when unknown. */
static int
bench_wide (EsBackend *be, double copy_gbs)
{
  const int N = 4096;
  const size_t nn = (size_t) N * N;
  EsError err = { ES_OK, "" };
  float *host = malloc (nn * sizeof (float));
  float *buf[8] = { NULL };
  EsRng rng = { 42 };
  double flops = 3.0 * 2.0 * N * (double) N * N, fp32, tf32, half[3] = { NAN, NAN, NAN };
  /* the operands rounded to 16 bits in a pass: x and w forward; dy (once for its two
   * products), w and x backward: 5 n^2 elements, 4 bytes read and 2 written */
  const double round_bytes = 5.0 * (double) nn * 6.0;
  double round_s = isfinite (copy_gbs) && copy_gbs > 0 ? round_bytes / (copy_gbs * 1e9) : NAN;

  if (host == NULL)
    return 1;
  /* x, w, y, dy, dx, dw: N x N; b, db: N (random data: zeros time faster) */
  for (int i = 0; i < 8; i++)
    {
      size_t n = i < 6 ? nn : (size_t) N;

      buf[i] = be->iface->alloc (be, ES_MEM_ACTIVATIONS, n * sizeof (float), &err);
      if (buf[i] == NULL)
        {
          fprintf (stderr, "bench-cuda: %s\n", err.message);
          return 1;
        }
      for (size_t j = 0; j < n; j++)
        host[j] = (float) (es_rng_uniform (&rng) - 0.5);
      be->iface->upload (be, buf[i], host, n * sizeof (float));
    }
  fp32 = time_wide (be, buf[0], buf[1], buf[6], buf[2], buf[3], buf[4], buf[5], buf[7], N, 3);
  tf32 = NAN;
  if (es_cuda_backend_set_tf32 (be, true))
    {
      tf32 = time_wide (be, buf[0], buf[1], buf[6], buf[2], buf[3], buf[4], buf[5], buf[7], N, 3);
      es_cuda_backend_set_tf32 (be, false);
    }
  for (int p = ES_PRECISION_BF16; p <= ES_PRECISION_FP16; p++)
    if (be->iface->set_precision != NULL && be->iface->set_precision (be, p, &err))
      {
        half[p] = time_wide (be, buf[0], buf[1], buf[6], buf[2], buf[3], buf[4], buf[5], buf[7],
                             N, 10);
        be->iface->set_precision (be, ES_PRECISION_FP32, NULL);
      }
  if (es_cuda_backend_device (be) >= 0 && !es_cuda_backend_check (be, &err))
    {
      fprintf (stderr, "bench-cuda: %s\n", err.message);
      return 1;
    }
  /* NAN prints as nan, which is not JSON: such fields become null */
#define JNUM(buf, fmt, v) (isfinite (v) ? (snprintf (buf, sizeof buf, fmt, v), buf) : "null")
  {
    char a[32], bb[32], c[32], d[32], e[32], f[32], g[32], h[32], k[32];
    const double bf_tf = flops / half[ES_PRECISION_BF16] * 1e-12;
    const double gemm_tf = flops / (half[ES_PRECISION_BF16] - round_s) * 1e-12;

    printf ("{\"bench\": \"wide\", \"backend\": \"%s\", \"n\": %d, \"fp32_ms\": %.3f, "
            "\"fp32_tflops\": %.1f, \"tf32_ms\": %s, \"tf32_tflops\": %s, \"bf16_ms\": %s, "
            "\"bf16_tflops\": %s, \"bf16_peak_tflops\": %.0f, \"bf16_pct_of_peak\": %s, "
            "\"bf16_rounding_ms_est\": %s, \"bf16_gemm_tflops_est\": %s, \"fp16_ms\": %s, "
            "\"fp16_tflops\": %s}\n", be->iface->name, N, fp32 * 1e3, flops / fp32 * 1e-12,
            JNUM (a, "%.3f", tf32 * 1e3), JNUM (bb, "%.1f", flops / tf32 * 1e-12),
            JNUM (c, "%.3f", half[ES_PRECISION_BF16] * 1e3), JNUM (d, "%.1f", bf_tf),
            H200_BF16_PEAK_TFLOPS, JNUM (e, "%.1f", 100.0 * bf_tf / H200_BF16_PEAK_TFLOPS),
            JNUM (f, "%.3f", round_s * 1e3), JNUM (g, "%.1f", gemm_tf),
            JNUM (h, "%.3f", half[ES_PRECISION_FP16] * 1e3),
            JNUM (k, "%.1f", flops / half[ES_PRECISION_FP16] * 1e-12));
  }
#undef JNUM
  fflush (stdout);
  for (int i = 0; i < 8; i++)
    be->iface->free (be, ES_MEM_ACTIVATIONS, buf[i], (i < 6 ? nn : (size_t) N) * sizeof (float));
  free (host);
  return 0;
}

/* ---- 4. the reference MLP's three input paths (resident data, CUDA Graphs) ------------ */

/* One epoch of the reference MLP (as part 1 builds it: same initialization, Adam 1e-3)
 * at batch `batch` over the shuffled training set, through one of three paths, for
 * `epochs` epochs:
 *   "resident_graph": the uint8 images and labels resident on the device, batches named
 *      by row (es_resident_new), deferred statistics and CUDA Graph replay;
 *   "eager":     batches copied from host memory, one wait per step (part 1's way);
 *   "streaming": batches from host memory uploaded one batch ahead through pinned
 *      memory (es_trainer_prefetch), deferred statistics and CUDA Graph replay.
 * Prints one JSON line: seconds per epoch, samples/s and the test accuracy per path. */
typedef struct {
  double best_s, acc;
  int64_t replays;
} PathResult;

static int
bench_path (EsBackend *be, const char *path, const uint8_t *xtr, const int32_t *ytr, int ntr,
            const uint8_t *xte, const int32_t *yte, int nte, int epochs, int batch,
            PathResult *out)
{
  const bool resident = strcmp (path, "resident_graph") == 0;
  const bool stream = strcmp (path, "streaming") == 0;
  EsShape in = { 3, { 1, 28, 28 } };
  EsLayerSpec l[4];
  EsTrainConfig cfg;
  EsError err = { ES_OK, "" };
  EsRng rng = { 0 };
  EsModel *m;
  EsTrainer *tr;
  EsResident *res = NULL;
  EsStepStats st = { 0, 0, 0 };
  int32_t *perm = malloc ((size_t) ntr * sizeof *perm);
  uint8_t *xb[2] = { malloc ((size_t) batch * D), malloc ((size_t) batch * D) };
  int32_t *yb[2] = { malloc ((size_t) batch * sizeof (int32_t)),
                     malloc ((size_t) batch * sizeof (int32_t)) };
  int rc = 1;

  l[0] = es_layer_spec_default (ES_LAYER_FLATTEN);
  l[1] = es_layer_spec_default (ES_LAYER_DENSE);
  l[1].units = 128;
  l[2] = es_layer_spec_default (ES_LAYER_RELU);
  l[3] = es_layer_spec_default (ES_LAYER_DENSE);
  l[3].units = 10;
  m = es_model_new (&in, l, 4, &err);
  es_model_init (m, 0);
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 1e-3f;
  tr = es_trainer_new (m, be, &cfg, batch, &err);
  if (tr == NULL || perm == NULL || xb[0] == NULL || xb[1] == NULL || yb[0] == NULL
      || yb[1] == NULL)
    goto out;
  if (resident && (res = es_resident_new (be, xtr, NULL, ntr, D, ytr, NULL, 0, &err)) == NULL)
    goto out;
  if (resident || stream)
    es_trainer_set_deferred_stats (tr, true);
  for (int i = 0; i < ntr; i++)
    perm[i] = i;
  out->best_s = INFINITY;
  for (int e = 0; e < epochs; e++)
    {
      double t0;

      es_shuffle (perm, (size_t) ntr, &rng);
      be->iface->synchronize (be);
      t0 = es_now ();
      for (int r0 = 0, k = 0; r0 < ntr; r0 += batch, k++)
        {
          const int B = ES_MIN (batch, ntr - r0);
          EsBatch b = { .B = B, .scale = 1.0f / 255.0f };

          if (resident)
            {
              b.resident = res;
              b.rows = perm + r0;
            }
          else
            {
              /* the batch as a batcher would make it (stream: the buffer the prefetch
               * of the batch before filled) */
              const int s = stream ? k & 1 : 0;

              if (!stream || r0 == 0)
                for (int r = 0; r < B; r++)
                  {
                    memcpy (xb[s] + (size_t) r * D, xtr + (size_t) perm[r0 + r] * D, D);
                    yb[s][r] = ytr[perm[r0 + r]];
                  }
              b.x_u8 = xb[s];
              b.labels = yb[s];
              if (stream && r0 == 0 && !es_trainer_prefetch (tr, &b, &err))
                goto out;
              if (stream && r0 + B < ntr)
                {
                  const int n = (k + 1) & 1, nB = ES_MIN (batch, ntr - r0 - B);
                  EsBatch nb = { .B = nB, .scale = 1.0f / 255.0f, .x_u8 = xb[n],
                                 .labels = yb[n] };

                  for (int r = 0; r < nB; r++)
                    {
                      memcpy (xb[n] + (size_t) r * D, xtr + (size_t) perm[r0 + B + r] * D, D);
                      yb[n][r] = ytr[perm[r0 + B + r]];
                    }
                  if (!es_trainer_prefetch (tr, &nb, &err))
                    goto out;
                }
            }
          if (!es_trainer_train_batch (tr, &b, NULL, &err))
            goto out;
        }
      if ((resident || stream) && !es_trainer_read_stats (tr, NULL, &err))
        goto out;
      be->iface->synchronize (be);
      out->best_s = fmin (out->best_s, es_now () - t0);
    }
  {
    EsBatch b = { .B = nte, .x_u8 = xte, .scale = 1.0f / 255.0f, .labels = yte };

    if (!es_trainer_eval_batch (tr, &b, &st, NULL, &err))
      goto out;
    out->acc = (double) st.correct / st.rows;
  }
  out->replays = es_trainer_graph_replays (tr);
  rc = es_cuda_backend_device (be) >= 0 && !es_cuda_backend_check (be, &err) ? 1 : 0;
out:
  if (rc != 0)
    fprintf (stderr, "bench-cuda: %s path: %s\n", path, err.message);
  es_trainer_free (tr);
  es_resident_free (res);
  es_model_free (m);
  free (perm);
  free (xb[0]);
  free (xb[1]);
  free (yb[0]);
  free (yb[1]);
  return rc;
}

static int
bench_paths (EsBackend *be, const char *data_dir, int epochs, int batch, int rows)
{
  static const char *const paths[] = { "resident_graph", "eager", "streaming" };
  uint8_t *xtr, *ltr, *xte, *lte;
  int ntr = 0, nte = 0, n2 = 0, n3 = 0, rc = 0;
  int32_t *ytr, *yte;
  PathResult r[3];

  xtr = read_idx (data_dir, "train-images-idx3-ubyte", &ntr, D);
  ltr = read_idx (data_dir, "train-labels-idx1-ubyte", &n2, 1);
  xte = read_idx (data_dir, "t10k-images-idx3-ubyte", &nte, D);
  lte = read_idx (data_dir, "t10k-labels-idx1-ubyte", &n3, 1);
  if (xtr == NULL || ltr == NULL || xte == NULL || lte == NULL || n2 != ntr || n3 != nte)
    return 1;
  if (rows > 0 && rows < ntr)
    ntr = rows;
  ytr = malloc ((size_t) ntr * sizeof *ytr);
  yte = malloc ((size_t) nte * sizeof *yte);
  for (int i = 0; i < ntr; i++)
    ytr[i] = ltr[i];
  for (int i = 0; i < nte; i++)
    yte[i] = lte[i];
  for (int p = 0; p < 3 && rc == 0; p++)
    rc = bench_path (be, paths[p], xtr, ytr, ntr, xte, yte, nte, epochs, batch, &r[p]);
  if (rc == 0)
    {
      printf ("{\"bench\": \"mlp_paths\", \"backend\": \"%s\", \"rows\": %d, \"batch\": %d, "
              "\"epochs\": %d", be->iface->name, ntr, batch, epochs);
      for (int p = 0; p < 3; p++)
        printf (", \"%s\": {\"best_epoch_s\": %.4f, \"samples_per_s\": %.0f, "
                "\"graph_replays\": %lld, \"test_accuracy\": %.4f}", paths[p], r[p].best_s,
                ntr / r[p].best_s, (long long) r[p].replays, r[p].acc);
      printf ("}\n");
      fflush (stdout);
    }
  free (xtr);
  free (ltr);
  free (xte);
  free (lte);
  free (ytr);
  free (yte);
  return rc;
}

int
main (int argc, char **argv)
{
  const char *data = "/usr/share/datasets/fashion-mnist", *kind = "cuda";
  int epochs = 2, batch = 128, rows = 0, rc = 0;
  bool wide = true, amp = true, paths = true;
  EsError err = { ES_OK, "" };
  EsBackend *be;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--data") == 0 && i + 1 < argc)
        data = argv[++i];
      else if (strcmp (argv[i], "--epochs") == 0 && i + 1 < argc)
        epochs = atoi (argv[++i]);
      else if (strcmp (argv[i], "--batch") == 0 && i + 1 < argc)
        batch = atoi (argv[++i]);
      else if (strcmp (argv[i], "--backend") == 0 && i + 1 < argc)
        kind = argv[++i];
      else if (strcmp (argv[i], "--rows") == 0 && i + 1 < argc)
        rows = atoi (argv[++i]);
      else if (strcmp (argv[i], "--no-wide") == 0)
        wide = false;
      else if (strcmp (argv[i], "--no-amp") == 0)
        amp = false;
      else if (strcmp (argv[i], "--no-paths") == 0)
        paths = false;
      else
        {
          fprintf (stderr, "usage: bench-cuda [--data DIR] [--epochs N] [--batch B] "
                   "[--backend cuda|cpu] [--no-wide] [--rows N] [--no-amp] [--no-paths]\n");
          return 2;
        }
    }
  if (epochs < 1 || batch < 1)
    {
      fprintf (stderr, "bench-cuda: epochs and batch must be positive\n");
      return 2;
    }
  be = make_backend (kind, &err);
  if (be == NULL)
    {
      fprintf (stderr, "bench-cuda: no %s backend: %s\n", kind, err.message);
      return 1;
    }
  if (es_cuda_backend_device (be) >= 0)
    {
      EsCudaDeviceInfo info;

      if (es_cuda_device_info (es_cuda_backend_device (be), &info, &err))
        printf ("{\"bench\": \"device\", \"name\": \"%s\", \"cc\": \"%d.%d\", \"sms\": %d, "
                "\"mem_gib\": %.1f, \"driver\": \"%s\", \"runtime\": %d}\n", info.name,
                info.cc_major, info.cc_minor, info.multiprocessors,
                info.mem_total / 1073741824.0, info.driver_string, info.runtime_version);
    }
  {
    double acc32 = NAN, acc = NAN;
    EsCeilings c;
    bool have_c = false;

    rc = bench_mlp (be, data, epochs, batch, rows, ES_PRECISION_FP32, NAN, &acc32);
    /* the same run in bf16 and fp16, where the backend has them */
    for (int p = ES_PRECISION_BF16; rc == 0 && amp && p <= ES_PRECISION_FP16; p++)
      if (be->iface->set_precision != NULL && be->iface->set_precision (be, p, NULL))
        {
          be->iface->set_precision (be, ES_PRECISION_FP32, NULL);
          rc = bench_mlp (be, data, epochs, batch, rows, (EsPrecision) p, acc32, &acc);
        }
    /* part 4: the input paths (resident data + graphs, eager, streaming) */
    if (rc == 0 && paths && be->iface->graph_begin != NULL)
      rc = bench_paths (be, data, epochs, batch, rows);
    if (rc == 0)
      {
        have_c = es_measure_ceilings (be, 2.0, &c, &err);
        if (!have_c)
          fprintf (stderr, "bench-cuda: ceilings: %s\n", err.message);
      }
    if (rc == 0 && wide && be->iface->synchronize != NULL)
      rc = bench_wide (be, have_c ? c.copy_gbs : NAN);
    if (rc == 0 && have_c)
      printf ("{\"bench\": \"ceilings\", \"backend\": \"%s\", \"gemm_gflops\": %.0f, "
              "\"gemm\": \"%dx%dx%d\", \"copy_gbs\": %.0f}\n", be->iface->name, c.gemm_gflops,
              c.gemm_b, c.gemm_in, c.gemm_out, c.copy_gbs);
  }
  es_backend_free (be);
  return rc;
}
