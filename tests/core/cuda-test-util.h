/* cuda-test-util.h: what the core tests of the CUDA device share (test-trainer-cuda,
 * test-trainer-cuda-graph): the skip without a device, a small spiral set and the
 * playground template set up to train on it. Header-only: each test is one file. */
#pragma once

#include <glib.h>

#include "espalier-device.h"
#include "espalier-generate.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

static inline gboolean
have_device (void)
{
  if (espalier_cuda_device_count () > 0)
    return TRUE;
  g_test_skip ("no CUDA device");
  return FALSE;
}

/* 300 rows of 2 values, 3 classes */
static inline EspalierDataset *
spiral (void)
{
  g_autoptr(GError) error = NULL;
  EspalierDataset *ds = espalier_generate_from_spec ("spiral:n=300,arms=3,noise=0.2,seed=3", &error);

  g_assert_no_error (error);
  return ds;
}

/* The playground template (Dense 8, Tanh, Dense 8, Tanh, Dense, Softmax; Adam) with
 * its options for epochs of batch 32 on one thread, a fifth of the rows held out for
 * validation (the template trains on every row), initialized with the options' seed. */
static inline EsModel *
playground_for (EspalierDataset *ds, EspalierTrainOptions *opts, guint epochs)
{
  g_autoptr(GError) error = NULL;
  EsShape in = { 1, { 2 } };
  EsModel *m;

  espalier_train_options_init (opts);
  m = espalier_model_from_template ("playground", &in, espalier_dataset_get_n_classes (ds),
                                    opts, &error);
  g_assert_no_error (error);
  opts->epochs = epochs;
  opts->batch_size = 32;
  opts->val_fraction = 0.2;
  opts->seed = 5;
  opts->threads = 1;
  es_model_init (m, opts->seed);
  return m;
}
