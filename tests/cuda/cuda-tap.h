/* cuda-tap.h: a tiny TAP harness for the CUDA backend's tests, which must not need GLib
 * (they run on GPU machines that have CUDA but none of our Debian libraries): numbered
 * "ok" / "not ok" lines, "#" diagnostics, the plan printed at the end, and a whole-file
 * skip ("1..0 # SKIP", exit status 77) where there is no device. Plus the comparisons
 * every test makes: a relative error against the CPU backend's result and an exact
 * one, each saying where the first difference is.
 * Header-only: each test is one .c file. */
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-common.h"
#include "es-cuda.h"

/* Not every test uses every helper. */
#define TAP_UNUSED __attribute__ ((unused))

static int tap_count, tap_failures;

TAP_UNUSED static bool
tap_ok (bool ok, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* One test point: "ok N - description", or "not ok N - description". */
TAP_UNUSED static bool
tap_ok (bool ok, const char *fmt, ...)
{
  va_list ap;

  tap_count++;
  if (!ok)
    tap_failures++;
  printf ("%s %d - ", ok ? "ok" : "not ok", tap_count);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  fflush (stdout);
  return ok;
}

TAP_UNUSED static void
tap_diag (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* A "# ..." line for people; TAP readers skip it. */
TAP_UNUSED static void
tap_diag (const char *fmt, ...)
{
  va_list ap;

  printf ("# ");
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  fflush (stdout);
}

/* The plan, after the test points; the exit status for main. */
TAP_UNUSED static int
tap_done (void)
{
  printf ("1..%d\n", tap_count);
  if (tap_failures > 0)
    tap_diag ("%d of %d failed", tap_failures, tap_count);
  return tap_failures > 0 ? 1 : 0;
}

/* Without a CUDA device: checks that asking for the backend fails cleanly (NULL, an
 * error that says why, no crash), then skips the whole file with exit status 77.
 * Returns only when there is a device. */
TAP_UNUSED static void
tap_require_device (void)
{
  EsError err = { ES_OK, "" };
  EsCudaDeviceInfo info;
  EsBackend *be;

  if (es_cuda_device_count () > 0)
    return;
  be = es_cuda_backend_new (0, NULL, &err);
  if (be != NULL || err.code != ES_ERR_UNSUPPORTED || err.message[0] == '\0')
    {
      tap_ok (false, "without a device the CUDA backend is refused with a clear error "
              "(got %s: %s)", es_status_name (err.code), err.message);
      exit (tap_done ());
    }
  tap_diag ("es_cuda_backend_new: %s", err.message);
  es_error_clear (&err);
  if (es_cuda_device_info (0, &info, &err) || err.code != ES_ERR_UNSUPPORTED)
    {
      tap_ok (false, "without a device es_cuda_device_info fails cleanly");
      exit (tap_done ());
    }
  printf ("1..0 # SKIP no CUDA device\n");
  exit (77);
}

/* max |got - want| / max |want| over n (the finite values of want; 1 when all are 0):
 * a NaN where the other is not gives INFINITY, NaN in both counts as equal, and so do
 * equal infinities. *where gets the index of the worst element. */
TAP_UNUSED static double
tap_rel_err (const float *got, const float *want, int64_t n, int64_t *where)
{
  double scale = 0.0, worst = 0.0;

  *where = -1;
  for (int64_t i = 0; i < n; i++)
    if (isfinite (want[i]) && fabs ((double) want[i]) > scale)
      scale = fabs ((double) want[i]);
  if (scale == 0.0)
    scale = 1.0;
  for (int64_t i = 0; i < n; i++)
    {
      double e;

      if (isnan (got[i]) || isnan (want[i]))
        e = isnan (got[i]) && isnan (want[i]) ? 0.0 : INFINITY;
      else if (isinf (got[i]) || isinf (want[i]))
        e = got[i] == want[i] ? 0.0 : INFINITY;
      else
        e = fabs ((double) got[i] - (double) want[i]) / scale;
      if (e > worst || (*where < 0 && e > 0.0))
        {
          worst = e;
          *where = i;
        }
    }
  return worst;
}

/* got (n) within tol of want (relative to want's largest magnitude). */
TAP_UNUSED static bool
tap_close (const char *what, const float *got, const float *want, int64_t n, double tol)
{
  int64_t at;
  double e = tap_rel_err (got, want, n, &at);
  bool ok = e <= tol;

  tap_ok (ok, "%s (n=%lld): relative error %.3g <= %.0e", what, (long long) n, e, tol);
  if (!ok && at >= 0)
    tap_diag ("  worst at %lld: got %.9g, want %.9g", (long long) at, got[at], want[at]);
  return ok;
}

/* got (bytes) equal to want, bit for bit. */
TAP_UNUSED static bool
tap_same (const char *what, const void *got, const void *want, size_t bytes)
{
  const uint8_t *g = (const uint8_t *) got, *w = (const uint8_t *) want;
  size_t i = 0;

  while (i < bytes && g[i] == w[i])
    i++;
  tap_ok (i == bytes, "%s (%zu bytes): bit for bit", what, bytes);
  if (i < bytes)
    tap_diag ("  first difference at byte %zu: 0x%02x, want 0x%02x", i, g[i], w[i]);
  return i == bytes;
}

/* A scalar pair, relative to the larger magnitude (1 at least). */
TAP_UNUSED static bool
tap_close_scalar (const char *what, double got, double want, double tol)
{
  double scale = fabs (want) > 1.0 ? fabs (want) : 1.0;
  double e = isnan (got) || isnan (want) ? (isnan (got) && isnan (want) ? 0.0 : INFINITY)
                                        : fabs (got - want) / scale;

  return tap_ok (e <= tol, "%s: %.9g vs %.9g (relative error %.3g <= %.0e)", what, got, want,
                 e, tol);
}
