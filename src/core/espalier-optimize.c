/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize.c: see espalier-optimize.h. */
#include "config.h"

#include "espalier-optimize.h"
