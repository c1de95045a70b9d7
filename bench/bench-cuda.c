/* bench-cuda.c: the CUDA backend's benchmark, for tests/gpu/device-check.sh.
 *   1. The reference MLP (Flatten 28x28 -> Dense 128 ReLU -> Dense 10, Adam 1e-3,
 *      cross-entropy) trained on Fashion-MNIST through EsTrainer, shuffled uint8 batches
 *      from host memory: seconds per epoch and test accuracy (the PyTorch peer,
 *      ../shared/peers/torch_mlp.py --device cuda, runs in the same check).
 *   2. A wide MLP layer (4096 x 4096, batch 4096) forward and backward through the
 *      backend's dense ops, in fp32 and with TF32: TFLOP/s of the matrix products.
 *   3. The backend's ceilings as the profiler measures them (es_measure_ceilings).
 * Prints one JSON object per part (one line each) and nothing else on stdout.
 * Not a test: times depend on the machine. No GLib (the GPU machine has none); zlib
 * reads the IDX files, gzipped or not.
 *
 * Usage: bench-cuda --data DIR [--epochs N] [--batch B] [--backend cuda|cpu] [--no-wide]
 *                   [--rows N]
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

static int
bench_mlp (EsBackend *be, const char *data_dir, int epochs, int batch, int rows)
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
  printf ("{\"bench\": \"mlp\", \"backend\": \"%s\", \"rows\": %d, \"batch\": %d, "
          "\"epochs\": %d, \"load_s\": %.3f, \"epoch_s\": [", be->iface->name, ntr, batch,
          epochs, load_t);
  for (int e = 0; e < epochs; e++)
    printf ("%s%.4f", e ? ", " : "", epoch_s[e]);
  printf ("], \"best_epoch_s\": %.4f, \"steps_per_s\": %.1f, \"test_accuracy\": %.4f}\n", best,
          ES_CEIL_DIV (ntr, batch) / best, acc);
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

static int
bench_wide (EsBackend *be)
{
  const int N = 4096;
  const size_t nn = (size_t) N * N;
  EsError err = { ES_OK, "" };
  float *host = malloc (nn * sizeof (float));
  float *buf[8] = { NULL };
  EsRng rng = { 42 };
  double flops = 3.0 * 2.0 * N * (double) N * N, fp32, tf32;

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
  if (es_cuda_backend_device (be) >= 0 && !es_cuda_backend_check (be, &err))
    {
      fprintf (stderr, "bench-cuda: %s\n", err.message);
      return 1;
    }
  printf ("{\"bench\": \"wide\", \"backend\": \"%s\", \"n\": %d, \"fp32_ms\": %.3f, "
          "\"fp32_tflops\": %.1f, \"tf32_ms\": %.3f, \"tf32_tflops\": %.1f, "
          "\"bf16\": \"not implemented\"}\n", be->iface->name, N, fp32 * 1e3,
          flops / fp32 * 1e-12, tf32 * 1e3, flops / tf32 * 1e-12);
  fflush (stdout);
  for (int i = 0; i < 8; i++)
    be->iface->free (be, ES_MEM_ACTIVATIONS, buf[i], (i < 6 ? nn : (size_t) N) * sizeof (float));
  free (host);
  return 0;
}

int
main (int argc, char **argv)
{
  const char *data = "/usr/share/datasets/fashion-mnist", *kind = "cuda";
  int epochs = 2, batch = 128, rows = 0, rc = 0;
  bool wide = true;
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
      else
        {
          fprintf (stderr, "usage: bench-cuda [--data DIR] [--epochs N] [--batch B] "
                   "[--backend cuda|cpu] [--no-wide] [--rows N]\n");
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
  rc = bench_mlp (be, data, epochs, batch, rows);
  if (rc == 0 && wide && be->iface->synchronize != NULL)
    rc = bench_wide (be);
  if (rc == 0)
    {
      EsCeilings c;

      if (es_measure_ceilings (be, 2.0, &c, &err))
        printf ("{\"bench\": \"ceilings\", \"backend\": \"%s\", \"gemm_gflops\": %.0f, "
                "\"gemm\": \"%dx%dx%d\", \"copy_gbs\": %.0f}\n", be->iface->name, c.gemm_gflops,
                c.gemm_b, c.gemm_in, c.gemm_out, c.copy_gbs);
      else
        fprintf (stderr, "bench-cuda: ceilings: %s\n", err.message);
    }
  es_backend_free (be);
  return rc;
}
