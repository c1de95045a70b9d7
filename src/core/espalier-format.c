/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-format.c: shortest round-trip decimal text for doubles and floats. */
#include "config.h"

#include "espalier-format.h"

/* The fewest significant digits (up to max_digits) whose text reads back as v, the
 * float case comparing after rounding to float. */
static const char *
format_shortest (char *buf, double v, int max_digits, gboolean as_float)
{
  for (int digits = 1; digits <= max_digits; digits++)
    {
      char format[8];
      double back;

      g_snprintf (format, sizeof format, "%%.%dg", digits);
      g_ascii_formatd (buf, G_ASCII_DTOSTR_BUF_SIZE, format, v);
      back = g_ascii_strtod (buf, NULL);
      if (as_float ? (float) back == (float) v : back == v)
        break;
    }
  return buf;
}

const char *
espalier_format_double (char   *buf,
                        double  v)
{
  g_return_val_if_fail (buf != NULL, NULL);
  return format_shortest (buf, v, 17, FALSE);
}

const char *
espalier_format_float (char  *buf,
                       float  v)
{
  g_return_val_if_fail (buf != NULL, NULL);
  return format_shortest (buf, (double) v, 9, TRUE);
}
