/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-idx.c: the IDX loader (espalier-idx.h) on arbitrary bytes.
 *
 * Input: a mode byte, then one to four files separated by FUZZ_SEP. Mode % 3: 0 an
 * images file alone, 1 images and labels, 2 the four Fashion-MNIST files. Built twice:
 * fuzz-idx takes the files as they come (raw or gzip, told apart by content, as the
 * loader does: the corpus has both, so the inflater meets corrupt streams), and
 * fuzz-idx-gz (FUZZ_GZIP) gzips each file first, so that the fuzzer explores IDX
 * headers and payloads behind the streaming gzip path. Also espalier_idx_parse on the
 * first file. */
#include "config.h"

#include <zlib.h>

#include "espalier-idx.h"
#include "fuzz-common.h"

#ifdef FUZZ_GZIP
/* data as one gzip member. */
static GBytes *
gzip_bytes (const uint8_t *data, size_t size)
{
  z_stream z = { 0 };
  gsize cap = deflateBound (&z, (uLong) size) + 64;
  guint8 *out;

  if (deflateInit2 (&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    g_error ("deflateInit2");
  cap = deflateBound (&z, (uLong) size) + 64;
  out = g_malloc (cap);
  z.next_in = (Bytef *) data;
  z.avail_in = (uInt) size;
  z.next_out = out;
  z.avail_out = (uInt) cap;
  if (deflate (&z, Z_FINISH) != Z_STREAM_END)
    g_error ("deflate");
  cap = z.total_out;
  deflateEnd (&z);
  return g_bytes_new_take (out, cap);
}
#endif

static GBytes *
part_bytes (const FuzzPart *p)
{
#ifdef FUZZ_GZIP
  return gzip_bytes (p->data, p->size);
#else
  return g_bytes_new (p->data, p->size);
#endif
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const paths[4] = { "train-images", "train-labels", "t10k-images",
                                        "t10k-labels" };
  GBytes *raw[4] = { NULL };
  FuzzPart parts[4];
  guint mode, n;

  fuzz_init ();
  if (size < 1)
    return 0;
  mode = data[0] % 3;
  n = fuzz_split (data + 1, size - 1, parts, mode == 2 ? 4 : mode + 1);
  for (guint i = 0; i < 4; i++)
    raw[i] = i < n ? part_bytes (&parts[i]) : g_bytes_new (NULL, 0);

  if (mode == 2)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = espalier_idx_load_fashion_mnist_bytes (raw, paths, NULL,
                                                                             &error);

      g_assert ((ds == NULL) != (error == NULL));
    }
  else
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(GError) parse_error = NULL;
      g_autoptr(EspalierDataset) ds = NULL;
      g_auto(EspalierIdx) idx = { 0 };

      ds = espalier_idx_load_bytes (raw[0], paths[0], mode == 1 ? raw[1] : NULL,
                                    mode == 1 ? paths[1] : NULL, NULL, &error);
      g_assert ((ds == NULL) != (error == NULL));
      if (ds != NULL)
        {
          guint N = espalier_dataset_get_n_rows (ds), F = espalier_dataset_get_row_size (ds);
          const gint32 *labels = espalier_dataset_get_labels (ds);

          g_assert_cmpuint (N, >, 0);
          g_assert_cmpuint (F, >, 0);
          for (guint i = 0; labels != NULL && i < N; i++)
            g_assert_cmpint (labels[i], <, (gint) espalier_dataset_get_n_classes (ds));
        }
      if (espalier_idx_parse (raw[0], paths[0], &idx, &parse_error))
        g_assert_cmpuint (g_bytes_get_size (idx.payload), ==,
                          idx.n_elements * espalier_idx_type_size (idx.type));
      else
        g_assert_nonnull (parse_error);
    }
  for (guint i = 0; i < 4; i++)
    g_bytes_unref (raw[i]);
  return 0;
}
