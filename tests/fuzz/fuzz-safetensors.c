/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-safetensors.c: the safetensors reader of model files (the weights half of
 * espalier_model_load_variant) on arbitrary bytes.
 *
 * Input: a byte choosing one of the models of fuzz-models.h, then the weights file.
 * The JSON file beside it is that model's, with the recorded size and SHA-256 made
 * those of the input, so that the fuzzed weights get past the checksum into the
 * quantization checks and the dequantization, as weights a user edited by hand (and
 * re-hashed) would. */
#include "config.h"

#include <json-glib/json-glib.h>

#include "fuzz-common.h"
#include "fuzz-models.h"

#define N_KINDS G_N_ELEMENTS (fuzz_model_kinds)

/* (N_KINDS) each model's JSON file, parsed */
static JsonNode *model_json[N_KINDS];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  for (guint i = 0; i < N_KINDS; i++)
    {
      g_autofree char *path = g_build_filename (fuzz_tmp_dir, "template.json", NULL);
      g_autofree char *text = NULL;
      g_autoptr(GError) error = NULL;
      EspalierModelInfo info;
      EsQuant *quant = NULL;
      EsModel *model = fuzz_model_build (i, &quant);

      fuzz_model_info (i, &info);
      if (!espalier_model_save_variant (model, quant, &info, path, &error)
          || !g_file_get_contents (path, &text, NULL, &error))
        g_error ("%s", error->message);
      model_json[i] = json_from_string (text, &error);
      if (model_json[i] == NULL)
        g_error ("%s", error->message);
      es_model_free (model);
      g_clear_pointer (&quant, es_quant_free);
      espalier_model_info_clear (&info);
    }
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *json_path = NULL, *st_path = NULL, *text = NULL, *sum = NULL;
  g_autoptr(JsonNode) root = NULL;
  g_autoptr(GError) error = NULL;
  JsonObject *weights;
  EsQuant *quant = NULL;
  EsModel *model;

  if (size < 1)
    return 0;
  if (model_json[0] == NULL)
    LLVMFuzzerInitialize (NULL, NULL);
  root = json_node_copy (model_json[data[0] % N_KINDS]);
  weights = json_object_get_object_member (json_node_get_object (root), "weights");
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, data + 1, size - 1);
  json_object_set_string_member (weights, "file", "s.safetensors");
  json_object_set_int_member (weights, "size", (gint64) size - 1);
  json_object_set_string_member (weights, "sha256", sum);
  text = json_to_string (root, FALSE);

  json_path = fuzz_write ("s.json", text, strlen (text));
  st_path = fuzz_write ("s.safetensors", data + 1, size - 1);
  model = espalier_model_load_variant (json_path, NULL, &quant, &error);
  g_assert ((model == NULL) != (error == NULL));
  es_model_free (model);
  g_clear_pointer (&quant, es_quant_free);
  return 0;
}
