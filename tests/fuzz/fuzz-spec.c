/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-spec.c: the model spec strings of the CLI and the canvas (espalier-templates.h)
 * and the generator specs of --data (espalier-generate.h) on arbitrary text.
 *
 * Input: three bytes giving an input shape (rank 1 to 3, dims 1 to 32), then the spec.
 * A spec that parses must format to a string that parses back to the same text, and
 * building it on the shape must succeed or fail with an error, never allocate beyond
 * reason. */
#include "config.h"

#include <math.h>

#include "espalier-error.h"
#include "espalier-generate.h"
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
  g_autofree char *spec = NULL;
  g_autofree EsLayerSpec *layers = NULL;
  g_autoptr(GError) error = NULL;
  EspalierGenerateParams params;
  EsShape input = { 0 };
  int n = 0;

  fuzz_init ();
  if (size < 3)
    return 0;
  input.rank = 1 + data[0] % 3;
  input.dims[0] = 1 + data[1] % 32;
  for (int d = 1; d < input.rank; d++)
    input.dims[d] = 1 + data[2] % 32;
  spec = g_strndup ((const char *) data + 3, size - 3);

  layers = espalier_spec_parse (spec, &n, &error);
  g_assert ((layers == NULL) != (error == NULL));
  if (layers != NULL)
    {
      g_autofree char *text = espalier_spec_format (layers, n);
      g_autofree EsLayerSpec *back = NULL;
      g_autofree char *text_back = NULL;
      g_autoptr(GError) back_error = NULL;
      EsModel *model;
      int n_back = 0;

      back = espalier_spec_parse (text, &n_back, &back_error);
      if (back == NULL)
        g_error ("“%s” formats as “%s”, which does not parse: %s", spec, text,
                 back_error->message);
      text_back = espalier_spec_format (back, n_back);
      g_assert_cmpstr (text, ==, text_back);

      model = espalier_model_from_spec (spec, &input, &back_error);
      g_assert ((model == NULL) != (back_error == NULL));
      if (model != NULL)
        {
          g_autofree char *rebuilt = espalier_model_to_spec (model);

          g_assert_cmpstr (rebuilt, ==, text);
          es_model_free (model);
        }
    }
  g_clear_error (&error);

  if (espalier_generate_is_spec (spec))
    {
      if (!espalier_generate_parse_spec (spec, &params, &error))
        g_assert_nonnull (error);
      else
        {
          g_autofree char *text = espalier_generate_params_to_spec (&params);
          EspalierGenerateParams back;

          if (!espalier_generate_parse_spec (text, &back, &error))
            g_error ("“%s” formats as “%s”, which does not parse: %s", spec, text,
                     error->message);
          g_assert_cmpint (back.kind, ==, params.kind);
          g_assert_cmpuint (back.n, ==, params.n);
          g_assert_cmpuint (back.k, ==, params.k);
          g_assert_cmpuint (back.seed, ==, params.seed);
          g_assert_true (back.noise == params.noise || (isnan (back.noise) && isnan (params.noise)));
          g_assert_true (back.factor == params.factor
                         || (isnan (back.factor) && isnan (params.factor)));
        }
    }
  return 0;
}
