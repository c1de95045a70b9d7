/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-format.h: numbers as the shortest text that reads back exactly, for every
 * file and string core writes (model JSON, CSV export, spec strings): 0.1, not
 * 0.100000001. Locale-independent ('.' always). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Write into buf (G_ASCII_DTOSTR_BUF_SIZE bytes) and return it. */
const char *espalier_format_double (char   *buf,
                                    double  v);
const char *espalier_format_float  (char   *buf,
                                    float   v);

G_END_DECLS
