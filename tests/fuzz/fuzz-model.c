/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-model.c: the model file loader (espalier_model_load_variant) on an arbitrary
 * NAME.json and NAME.safetensors pair.
 *
 * Input: the JSON file, FUZZ_SEP, the safetensors file (the corpus holds the pairs of
 * fuzz-models.h, weights file "m.safetensors"). Both are written to a private
 * directory and loaded from there, as a user's pair would be. A pair that loads is
 * saved again and must load back to the same architecture: whatever the loader
 * accepts, the writer must accept too. */
#include "config.h"

#include "es-quant.h"
#include "espalier-model-file.h"
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
  g_autofree char *json_path = NULL, *st_path = NULL, *rt_path = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsQuant *quant = NULL;
  EsModel *model;
  FuzzPart parts[2];
  guint n;

  fuzz_init ();
  n = fuzz_split (data, size, parts, 2);
  json_path = fuzz_write ("m.json", parts[0].data, parts[0].size);
  st_path = fuzz_write ("m.safetensors", n > 1 ? parts[1].data : NULL, n > 1 ? parts[1].size : 0);

  espalier_model_info_init (&info);
  model = espalier_model_load_variant (json_path, &info, &quant, &error);
  g_assert ((model == NULL) != (error == NULL));
  if (model != NULL)
    {
      g_autoptr(GError) rt_error = NULL;
      g_autofree char *spec = espalier_model_to_spec (model);
      EspalierModelInfo back;
      EsQuant *back_quant = NULL;
      EsModel *again;

      rt_path = g_build_filename (fuzz_tmp_dir, "rt.json", NULL);
      if (!espalier_model_save_variant (model, quant, &info, rt_path, &rt_error))
        g_error ("loaded but does not save: %s", rt_error->message);
      espalier_model_info_init (&back);
      again = espalier_model_load_variant (rt_path, &back, &back_quant, &rt_error);
      if (again == NULL)
        g_error ("saved but does not load back: %s", rt_error->message);
      {
        g_autofree char *spec_back = espalier_model_to_spec (again);

        g_assert_cmpstr (spec, ==, spec_back);
      }
      g_assert_cmpint (quant != NULL ? quant->mode : ES_QUANT_FP32, ==,
                       back_quant != NULL ? back_quant->mode : ES_QUANT_FP32);
      es_model_free (again);
      g_clear_pointer (&back_quant, es_quant_free);
      espalier_model_info_clear (&back);
    }
  es_model_free (model);
  g_clear_pointer (&quant, es_quant_free);
  espalier_model_info_clear (&info);
  return 0;
}
