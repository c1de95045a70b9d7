/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-csv.c: delimited text into a dataset. Three passes over the text: detect the
 * delimiter, split into cells (quotes understood, every row's line remembered), then
 * type the columns and fill the (N, F) feature matrix and the labels. Errors name the
 * file, the line and the column (1-based, as an editor shows them). Preprocessing and
 * caching are espalier-dataset.c's.
 *
 * Dimension key: N = data rows, C = columns in the file, F = features after one-hot. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "espalier-csv.h"
#include "espalier-dataset-private.h"
#include "espalier-limits.h"

typedef struct {
  GStringChunk *chunk;
  GPtrArray    *cells;      /* (element-type const char *) row-major, C per row */
  GArray       *lines;      /* (element-type guint) 1-based line each row starts on */
  guint         n_cols;     /* C, from the first row */
} CsvTable;

static void
csv_table_clear (CsvTable *t)
{
  g_clear_pointer (&t->chunk, g_string_chunk_free);
  g_clear_pointer (&t->cells, g_ptr_array_unref);
  g_clear_pointer (&t->lines, g_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CsvTable, csv_table_clear)

static inline const char *
cell (const CsvTable *t,
      guint           row,
      guint           col)
{
  return g_ptr_array_index (t->cells, (gsize) row * t->n_cols + col);
}

static inline guint
row_line (const CsvTable *t,
          guint           row)
{
  return g_array_index (t->lines, guint, row);
}

gboolean
espalier_csv_is_missing (const char *s)
{
  g_return_val_if_fail (s != NULL, FALSE);

  return s[0] == '\0'
         || g_ascii_strcasecmp (s, "NA") == 0
         || g_ascii_strcasecmp (s, "N/A") == 0
         || g_ascii_strcasecmp (s, "NaN") == 0
         || g_ascii_strcasecmp (s, "null") == 0;
}

/* A number in C notation; in a semicolon-delimited file also with a decimal comma
 * ("1,5"), as spreadsheets in many locales write it. */
static gboolean
parse_number (char        delim,
              const char *s,
              double     *out)
{
  char buf[64];
  char *end;
  double v;

  if (s[0] == '\0')
    return FALSE;
  if (delim == ';' && strchr (s, ',') != NULL && strchr (s, '.') == NULL && strlen (s) < sizeof buf)
    {
      char *comma;

      g_strlcpy (buf, s, sizeof buf);
      comma = strchr (buf, ',');
      if (strchr (comma + 1, ',') != NULL)
        return FALSE;
      *comma = '.';
      s = buf;
    }
  v = g_ascii_strtod (s, &end);
  if (end == s || *end != '\0' || !isfinite (v))
    return FALSE;
  *out = v;
  return TRUE;
}

/* A cell as it can appear in a message: at most 40 characters. */
static char *
quote_cell (const char *s)
{
  if (g_utf8_strlen (s, -1) <= 40)
    return g_strdup_printf ("'%s'", s);
  {
    g_autofree char *head = g_utf8_substring (s, 0, 37);

    return g_strdup_printf ("'%s...'", head);
  }
}

/* Delimiter detection */

static guint
count_fields (const char *text,
              gsize       length,
              char        delim,
              guint      *counts,
              guint       max_lines)
{
  gboolean in_quotes = FALSE, content = FALSE;
  guint fields = 1, n = 0;

  for (gsize i = 0; i < length && n < max_lines; i++)
    {
      char ch = text[i];

      if (in_quotes)
        {
          if (ch == '"')
            {
              if (i + 1 < length && text[i + 1] == '"')
                i++;
              else
                in_quotes = FALSE;
            }
          continue;
        }
      if (ch == '"')
        {
          in_quotes = TRUE;
          content = TRUE;
        }
      else if (ch == delim)
        {
          fields++;
          content = TRUE;
        }
      else if (ch == '\n' || ch == '\r')
        {
          if (content)
            counts[n++] = fields;
          fields = 1;
          content = FALSE;
        }
      else if (ch != ' ' && ch != '\t')
        content = TRUE;
    }
  if (content && n < max_lines)
    counts[n++] = fields;
  return n;
}

char
espalier_csv_detect_delimiter (const char *text,
                               gsize       length)
{
  static const char candidates[3] = { '\t', ';', ',' };
  guint counts[20];
  guint consistent[3] = { 0 }, first[3] = { 0 };
  guint best_count = 0;
  char best = ',';

  g_return_val_if_fail (text != NULL || length == 0, ',');

  for (guint c = 0; c < 3; c++)
    {
      guint n = count_fields (text, length, candidates[c], counts, G_N_ELEMENTS (counts));
      gboolean same = n > 0;

      for (guint i = 1; i < n; i++)
        same = same && counts[i] == counts[0];
      first[c] = n > 0 ? counts[0] : 0;
      consistent[c] = same && counts[0] >= 2 ? counts[0] : 0;
    }
  /* "1,5;2,3": semicolons split rows and commas are decimal marks. */
  if (consistent[1] > 0)
    consistent[2] = 0;
  for (guint c = 0; c < 3; c++)
    if (consistent[c] > best_count)
      {
        best_count = consistent[c];
        best = candidates[c];
      }
  if (best_count > 0)
    return best;

  best_count = 1;
  for (guint c = 0; c < 3; c++)
    if (first[c] > best_count)
      {
        best_count = first[c];
        best = candidates[c];
      }
  return best;
}

/* Splitting into cells */

static gboolean
parse_table (const char    *text,
             gsize          length,
             char           delim,
             const char    *path,
             CsvTable      *t,
             GCancellable  *cancellable,
             GError       **error)
{
  g_autoptr(GString) field = g_string_new (NULL);
  gsize pos = 0;
  guint line = 1, first_line = 0, n_rows = 0;

  t->chunk = g_string_chunk_new (MAX (length, 1024));
  t->cells = g_ptr_array_new ();
  t->lines = g_array_new (FALSE, FALSE, sizeof (guint));
  t->n_cols = 0;

  while (pos < length)
    {
      guint start_line = line, n_fields = 0, first_cell = t->cells->len;

      for (;;)
        {
          g_string_truncate (field, 0);
          while (pos < length && (text[pos] == ' ' || (text[pos] == '\t' && delim != '\t')))
            pos++;
          if (pos < length && text[pos] == '"')
            {
              guint open_line = line;

              pos++;
              for (;;)
                {
                  if (pos >= length)
                    {
                      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                                   _("%s: line %u, column %u: the quoted field opened here "
                                     "is never closed"), path, open_line, n_fields + 1);
                      return FALSE;
                    }
                  if (text[pos] == '"')
                    {
                      if (pos + 1 < length && text[pos + 1] == '"')
                        {
                          g_string_append_c (field, '"');
                          pos += 2;
                          continue;
                        }
                      pos++;
                      break;
                    }
                  if (text[pos] == '\n' || (text[pos] == '\r' && (pos + 1 >= length
                                                                  || text[pos + 1] != '\n')))
                    line++;
                  g_string_append_c (field, text[pos++]);
                }
              /* Be lenient with text after the closing quote: keep it, minus blanks. */
              while (pos < length && text[pos] != delim && text[pos] != '\n'
                     && text[pos] != '\r')
                {
                  if (text[pos] != ' ' && text[pos] != '\t')
                    g_string_append_c (field, text[pos]);
                  pos++;
                }
            }
          else
            {
              gsize s = pos, e;

              while (pos < length && text[pos] != delim && text[pos] != '\n'
                     && text[pos] != '\r')
                pos++;
              e = pos;
              while (e > s && (text[e - 1] == ' ' || (text[e - 1] == '\t' && delim != '\t')))
                e--;
              g_string_append_len (field, text + s, e - s);
            }
          g_ptr_array_add (t->cells, g_string_chunk_insert_len (t->chunk, field->str,
                                                                field->len));
          n_fields++;
          if (pos < length && text[pos] == delim)
            {
              pos++;
              continue;
            }
          if (pos < length && text[pos] == '\r')
            pos++;
          if (pos < length && text[pos] == '\n')
            pos++;
          line++;
          break;
        }

      /* A blank line */
      if (n_fields == 1 && ((const char *) g_ptr_array_index (t->cells, first_cell))[0] == '\0')
        {
          g_ptr_array_set_size (t->cells, first_cell);
          continue;
        }

      if (n_rows == 0)
        {
          t->n_cols = n_fields;
          first_line = start_line;
        }
      else if (n_fields != t->n_cols)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_RAGGED,
                       _("%s: line %u, column %u: the row has %u fields where line %u has %u"),
                       path, start_line, MIN (n_fields, t->n_cols) + 1, n_fields,
                       first_line, t->n_cols);
          return FALSE;
        }
      g_array_append_val (t->lines, start_line);
      n_rows++;
      if ((n_rows & 4095) == 0 && g_cancellable_set_error_if_cancelled (cancellable, error))
        return FALSE;
    }
  return TRUE;
}

/* Columns */

static int
compare_strings (gconstpointer a,
                 gconstpointer b)
{
  return strcmp (*(const char * const *) a, *(const char * const *) b);
}

static int
compare_doubles (gconstpointer a,
                 gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* The distinct non-missing strings of column col, sorted by byte value, and a map from
 * each to its index. */
static GPtrArray *
column_categories (const CsvTable *t,
                   guint           first_row,
                   guint           col,
                   GHashTable    **index_out)
{
  GHashTable *index = g_hash_table_new (g_str_hash, g_str_equal);
  GPtrArray *cats = g_ptr_array_new ();
  guint n_rows = t->lines->len;

  for (guint r = first_row; r < n_rows; r++)
    {
      const char *s = cell (t, r, col);

      if (!espalier_csv_is_missing (s) && !g_hash_table_contains (index, s))
        {
          g_hash_table_add (index, (gpointer) s);
          g_ptr_array_add (cats, (gpointer) s);
        }
    }
  g_ptr_array_sort (cats, compare_strings);
  for (guint k = 0; k < cats->len; k++)
    g_hash_table_insert (index, g_ptr_array_index (cats, k), GUINT_TO_POINTER (k));
  *index_out = index;
  return cats;
}

static void
free_categories (gpointer data)
{
  if (data != NULL)
    g_ptr_array_unref (data);
}

static void
free_index (gpointer data)
{
  if (data != NULL)
    g_hash_table_unref (data);
}

static gboolean
resolve_label_column (const CsvTable  *t,
                      gboolean         has_header,
                      const char      *spec,
                      const char      *path,
                      char           **names,
                      guint           *out,
                      GError         **error)
{
  gint64 index;

  if (spec == NULL || spec[0] == '\0')
    {
      *out = t->n_cols - 1;
      return TRUE;
    }
  if (has_header)
    for (guint c = 0; c < t->n_cols; c++)
      if (strcmp (names[c], spec) == 0)
        {
          *out = c;
          return TRUE;
        }
  if (g_ascii_string_to_signed (spec, 10, G_MININT32, G_MAXINT32, &index, NULL))
    {
      if (index < 0)
        index += t->n_cols;
      if (index >= 0 && index < t->n_cols)
        {
          *out = (guint) index;
          return TRUE;
        }
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_UNKNOWN_COLUMN,
                   _("%s: there is no label column %s: the file has %u columns (indices 0 to %u)"),
                   path, spec, t->n_cols, t->n_cols - 1);
      return FALSE;
    }
  {
    g_autofree char *list = g_strjoinv ("', '", names);

    if (has_header)
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_UNKNOWN_COLUMN,
                   _("%s: line 1: there is no column named '%s' for the label (the columns "
                     "are '%s')"), path, spec, list);
    else
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_UNKNOWN_COLUMN,
                   _("%s: line 1: there is no column named '%s' for the label (the file has "
                     "no header)"), path, spec);
    return FALSE;
  }
}

/* Whether the memory holds the table parse_table and the dataset make of text: a copy of
 * the text, a pointer and a float for every cell (a cell ends at a delimiter or a line
 * break, so there are at most that many plus one). Refused naming the size, before
 * parsing. */
static gboolean
check_memory (const char  *text,
              gsize        length,
              char         delim,
              const char  *path,
              GError     **error)
{
  guint64 cells = 1;
  double need;
  g_autofree char *why = NULL;

  for (gsize i = 0; i < length; i++)
    cells += text[i] == delim || text[i] == '\n';
  need = (double) length + (double) cells * (sizeof (char *) + sizeof (float) + sizeof (guint));
  if (espalier_memory_fits (need >= 0x1p63 ? G_MAXUINT64 : (guint64) need, 0, &why))
    return TRUE;
  {
    g_autofree char *size = g_format_size (length);

    /* TRANSLATORS: "data.csv: this table of 100.0 GB (about 20000000000 cells) needs
     * 340.0 GB of memory, more than the 15.2 GB available" */
    g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                 _("%s: this table of %s (about %llu cells) %s"), path, size,
                 (unsigned long long) cells, why);
  }
  return FALSE;
}

static const char *
delimiter_name (char delim)
{
  switch (delim)
    {
    /* TRANSLATORS: a delimiter, in "a %s-separated table" and "(%s-separated, header)" */
    case '\t': return _("tab");
    case ';': return _("semicolon");
    default: return _("comma");
    }
}

EspalierDataset *
espalier_csv_load_bytes (GBytes                     *raw,
                         const char                 *path,
                         const EspalierLoadOptions  *options,
                         GCancellable               *cancellable,
                         GError                    **error)
{
  EspalierLoadOptions defaults;
  g_autoptr(GBytes) plain = NULL;
  g_autofree char *valid = NULL;
  g_auto(CsvTable) t = { 0 };
  g_auto(GStrv) names = NULL;
  g_autoptr(GPtrArray) feature_names = NULL;
  g_autoptr(GArray) feature_columns = NULL;
  g_autofree guint8 *numeric = NULL;
  g_autoptr(GPtrArray) categories = NULL;   /* (C) GPtrArray of categories, or NULL */
  g_autoptr(GPtrArray) cat_index = NULL;    /* (C) GHashTable, or NULL */
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *base = NULL;
  const char *text;
  gsize length;
  char delim;
  gboolean has_header;
  guint first, N, C, F = 0, label_col;
  guint n_one_hot_cols = 0, n_one_hot_features = 0;

  g_return_val_if_fail (raw != NULL, NULL);
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (options == NULL)
    {
      espalier_load_options_init (&defaults);
      options = &defaults;
    }

  plain = _espalier_data_gunzip (raw, path, cancellable, error);
  if (plain == NULL)
    return NULL;
  text = g_bytes_get_data (plain, &length);
  if (length >= 3 && memcmp (text, "\xEF\xBB\xBF", 3) == 0)
    {
      text += 3;
      length -= 3;
    }
  if (!g_utf8_validate_len (text, length, NULL))
    {
      valid = g_utf8_make_valid (text, length);
      text = valid;
      length = strlen (valid);
    }

  delim = espalier_csv_detect_delimiter (text, length);
  if (!check_memory (text, length, delim, path, error)
      || !parse_table (text, length, delim, path, &t, cancellable, error))
    return NULL;
  if (t.lines->len == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                   _("%s: empty file"), path);
      return NULL;
    }
  C = t.n_cols;

  /* Header */
  switch (options->csv_header)
    {
    case ESPALIER_CSV_HEADER_PRESENT:
      has_header = TRUE;
      break;
    case ESPALIER_CSV_HEADER_ABSENT:
      has_header = FALSE;
      break;
    case ESPALIER_CSV_HEADER_AUTO:
    default:
      has_header = FALSE;
      if (t.lines->len >= 2)
        {
          for (guint c = 0; c < C && !has_header; c++)
            {
              double v;
              const char *a = cell (&t, 0, c), *b = cell (&t, 1, c);

              has_header = !espalier_csv_is_missing (a) && !parse_number (delim, a, &v)
                           && parse_number (delim, b, &v);
            }
        }
      else
        {
          has_header = TRUE;   /* one row of all-text cells is a header without data */
          for (guint c = 0; c < C; c++)
            {
              double v;

              if (parse_number (delim, cell (&t, 0, c), &v))
                has_header = FALSE;
            }
        }
      break;
    }
  first = has_header ? 1 : 0;
  N = t.lines->len - first;
  if (N == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                   _("%s: line %u is a header and no data rows follow"), path, row_line (&t, 0));
      return NULL;
    }
  if (C < 2)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                   _("%s: line %u: only one column (a %s-separated table needs features and "
                     "a label)"), path, row_line (&t, 0), delimiter_name (delim));
      return NULL;
    }

  names = g_new0 (char *, C + 1);
  for (guint c = 0; c < C; c++)
    names[c] = has_header && cell (&t, 0, c)[0] != '\0'
               ? g_strdup (cell (&t, 0, c)) : g_strdup_printf ("column %u", c + 1);

  if (!resolve_label_column (&t, has_header, options->label_column, path, names,
                             &label_col, error))
    return NULL;

  /* Feature columns: numeric, or one-hot, or refused. */
  numeric = g_new0 (guint8, C);
  categories = g_ptr_array_new_with_free_func (free_categories);
  cat_index = g_ptr_array_new_with_free_func (free_index);
  g_ptr_array_set_size (categories, C);
  g_ptr_array_set_size (cat_index, C);
  for (guint c = 0; c < C; c++)
    {
      guint bad_row = G_MAXUINT;

      if (c == label_col)
        continue;
      for (guint r = first; r < t.lines->len && bad_row == G_MAXUINT; r++)
        {
          const char *s = cell (&t, r, c);
          double v;

          if (!espalier_csv_is_missing (s) && !parse_number (delim, s, &v))
            bad_row = r;
        }
      if (bad_row == G_MAXUINT)
        {
          numeric[c] = TRUE;
          F++;
          continue;
        }
      if (!options->one_hot)
        {
          g_autofree char *shown = quote_cell (cell (&t, bad_row, c));

          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NON_NUMERIC,
                       _("%s: line %u, column %u ('%s'): %s is not a number; choose one-hot "
                         "encoding to use this column"), path, row_line (&t, bad_row), c + 1,
                       names[c], shown);
          return NULL;
        }
      {
        GHashTable *index = NULL;
        GPtrArray *cats = column_categories (&t, first, c, &index);

        g_ptr_array_index (categories, c) = cats;
        g_ptr_array_index (cat_index, c) = index;
        F += cats->len;
        n_one_hot_cols++;
        n_one_hot_features += cats->len;
      }
    }
  if (F == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                   _("%s: no features: every column but the label ('%s') is empty"), path,
                   names[label_col]);
      return NULL;
    }

  base = g_path_get_basename (path);
  ds = _espalier_dataset_new (base, path);
  {
    const guint dims[1] = { F };

    _espalier_dataset_set_shape (ds, 1, dims);
  }
  ds->n_rows = N;
  ds->n_predefined_train = N;
  ds->f32 = g_new (float, (gsize) N * F);
  ds->origin_path = g_strdup (path);
  ds->row_lines = g_new (guint, N);
  for (guint i = 0; i < N; i++)
    ds->row_lines[i] = row_line (&t, first + i);

  feature_names = g_ptr_array_new ();
  feature_columns = g_array_new (FALSE, FALSE, sizeof (guint));
  for (guint c = 0, j = 0; c < C; c++)
    {
      GPtrArray *cats = g_ptr_array_index (categories, c);
      GHashTable *index = g_ptr_array_index (cat_index, c);
      guint col1 = c + 1;

      if (c == label_col)
        continue;
      if (numeric[c])
        {
          for (guint i = 0; i < N; i++)
            {
              const char *s = cell (&t, first + i, c);
              double v;

              ds->f32[(gsize) i * F + j] = espalier_csv_is_missing (s) || !parse_number (delim, s, &v)
                                           ? NAN : (float) v;
            }
          g_ptr_array_add (feature_names, g_strdup (names[c]));
          g_array_append_val (feature_columns, col1);
          j++;
          continue;
        }
      for (guint i = 0; i < N; i++)
        {
          const char *s = cell (&t, first + i, c);
          float *row = ds->f32 + (gsize) i * F + j;

          if (espalier_csv_is_missing (s))
            for (guint k = 0; k < cats->len; k++)
              row[k] = NAN;
          else
            {
              guint hot = GPOINTER_TO_UINT (g_hash_table_lookup (index, s));

              for (guint k = 0; k < cats->len; k++)
                row[k] = k == hot ? 1.0f : 0.0f;
            }
        }
      for (guint k = 0; k < cats->len; k++)
        {
          g_ptr_array_add (feature_names, g_strdup_printf ("%s=%s", names[c],
                                                           (const char *) g_ptr_array_index (cats, k)));
          g_array_append_val (feature_columns, col1);
        }
      _espalier_dataset_add_report (ds, _("one-hot: column %u ('%s') became %u features"),
                                    col1, names[c], cats->len);
      j += cats->len;
    }
  g_ptr_array_add (feature_names, NULL);
  ds->feature_names = (char **) g_ptr_array_free (g_steal_pointer (&feature_names), FALSE);
  ds->feature_columns = (guint *) g_array_free (g_steal_pointer (&feature_columns), FALSE);
  ds->counts.one_hot_columns = n_one_hot_cols;
  ds->counts.one_hot_features = n_one_hot_features;
  ds->label_name = g_strdup (names[label_col]);

  /* The label column: integers, strings or (otherwise) a regression target. */
  {
    gboolean all_numeric = TRUE, all_integer = TRUE;
    g_autofree double *values = g_new (double, N);

    for (guint i = 0; i < N; i++)
      {
        const char *s = cell (&t, first + i, label_col);

        if (espalier_csv_is_missing (s))
          {
            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                         _("%s: line %u, column %u ('%s'): missing label"), path,
                         row_line (&t, first + i), label_col + 1, names[label_col]);
            return NULL;
          }
        if (all_numeric && !parse_number (delim, s, &values[i]))
          all_numeric = FALSE;
        if (all_numeric && (values[i] != floor (values[i]) || fabs (values[i]) > G_MAXINT32))
          all_integer = FALSE;
      }

    if (all_numeric && all_integer)
      {
        g_autofree double *sorted = g_memdup2 (values, sizeof (double) * N);
        guint K = 0;

        qsort (sorted, N, sizeof (double), compare_doubles);
        for (guint i = 0; i < N; i++)
          if (K == 0 || sorted[i] != sorted[K - 1])
            sorted[K++] = sorted[i];
        if (K <= ESPALIER_CSV_MAX_INT_CLASSES)
          {
            ds->labels = g_new (gint32, N);
            for (guint i = 0; i < N; i++)
              {
                double *hit = bsearch (&values[i], sorted, K, sizeof (double), compare_doubles);

                ds->labels[i] = (gint32) (hit - sorted);
              }
            ds->n_classes = K;
            ds->class_names = g_new0 (char *, K + 1);
            for (guint k = 0; k < K; k++)
              ds->class_names[k] = g_strdup_printf ("%" G_GINT64_FORMAT, (gint64) sorted[k]);
          }
        else
          {
            all_integer = FALSE;
            _espalier_dataset_add_report (ds, _("label column '%s' has %u distinct integers, "
                                            "more than %u: read as a regression target"),
                                          names[label_col], K, ESPALIER_CSV_MAX_INT_CLASSES);
          }
      }
    if (all_numeric && !all_integer)
      {
        ds->targets = g_new (float, N);
        ds->n_targets = 1;
        for (guint i = 0; i < N; i++)
          ds->targets[i] = (float) values[i];
        ds->class_names = g_new0 (char *, 1);
      }
    if (!all_numeric)
      {
        GHashTable *index = NULL;
        GPtrArray *cats = column_categories (&t, first, label_col, &index);

        ds->labels = g_new (gint32, N);
        for (guint i = 0; i < N; i++)
          ds->labels[i] = GPOINTER_TO_INT (g_hash_table_lookup (index, cell (&t, first + i,
                                                                             label_col)));
        ds->n_classes = cats->len;
        ds->class_names = g_new0 (char *, cats->len + 1);
        for (guint k = 0; k < cats->len; k++)
          ds->class_names[k] = g_strdup (g_ptr_array_index (cats, k));
        g_ptr_array_unref (cats);
        g_hash_table_unref (index);
      }
  }

  ds->column_names = g_steal_pointer (&names);
  if (ds->labels != NULL)
    _espalier_dataset_add_report (ds, _("read %u rows from %s (%s-separated, %s): %u features, "
                                    "label column %u ('%s') with %u classes"), N, path,
                                  delimiter_name (delim), has_header ? _("header") : _("no header"),
                                  F, label_col + 1, ds->column_names[label_col], ds->n_classes);
  else
    _espalier_dataset_add_report (ds, _("read %u rows from %s (%s-separated, %s): %u features, "
                                    "regression target column %u ('%s')"), N, path,
                                  delimiter_name (delim), has_header ? _("header") : _("no header"),
                                  F, label_col + 1, ds->column_names[label_col]);
  return g_steal_pointer (&ds);
}

EspalierDataset *
espalier_csv_load (const char                 *path,
                   const EspalierLoadOptions  *options,
                   GCancellable               *cancellable,
                   GError                    **error)
{
  g_autoptr(GBytes) raw = NULL;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  raw = _espalier_data_read_file (path, cancellable, error);
  if (raw == NULL)
    return NULL;
  return espalier_csv_load_bytes (raw, path, options, cancellable, error);
}
