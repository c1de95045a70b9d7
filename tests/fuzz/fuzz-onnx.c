/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-onnx.c: ONNX import and inspection (espalier-onnx.h) on arbitrary bytes.
 *
 * Input: the .onnx file. It is written to a private directory, inspected and imported;
 * a model that imports is exported again and must import back to the same
 * architecture. */
#include "config.h"

#include "espalier-error.h"
#include "espalier-onnx.h"
#include "espalier-templates.h"
#include "fuzz-common.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *path = NULL, *rt_path = NULL, *spec = NULL;
  g_autoptr(GError) error = NULL, inspect_error = NULL;
  EspalierOnnxSummary summary;
  EspalierOnnxMeta meta;
  EsModel *model, *again;

  fuzz_init ();
  path = fuzz_write ("m.onnx", data, size);
  if (espalier_onnx_inspect (path, &summary, &inspect_error))
    g_free (espalier_onnx_summary_ops (&summary));
  else
    g_assert_nonnull (inspect_error);

  espalier_onnx_meta_init (&meta);
  model = espalier_onnx_import (path, &meta, &error);
  g_assert ((model == NULL) != (error == NULL));
  if (model == NULL)
    {
      espalier_onnx_meta_clear (&meta);
      return 0;
    }

  spec = espalier_model_to_spec (model);
  rt_path = g_build_filename (fuzz_tmp_dir, "rt.onnx", NULL);
  if (!espalier_onnx_export (model, NULL, &meta, rt_path, NULL, &error))
    {
      /* Beyond ONNX's 2 GiB is the one refusal that is not a bug. */
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED);
    }
  else
    {
      EspalierOnnxMeta back;

      espalier_onnx_meta_init (&back);
      again = espalier_onnx_import (rt_path, &back, &error);
      if (again == NULL)
        g_error ("imported, exported, but does not import back: %s", error->message);
      {
        g_autofree char *spec_back = espalier_model_to_spec (again);

        /* Export folds a BatchNorm into the layer before it: compare only models
         * without one. */
        if (strstr (spec, "batchnorm") == NULL)
          g_assert_cmpstr (spec, ==, spec_back);
      }
      es_model_free (again);
      espalier_onnx_meta_clear (&back);
    }
  es_model_free (model);
  espalier_onnx_meta_clear (&meta);
  return 0;
}
