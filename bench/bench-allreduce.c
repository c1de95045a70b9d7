/* bench-allreduce.c: the cost of MPI_Allreduce (float sum, in place, as
 * espalier-distributed.c calls it) by message size on the ranks of this job, for the
 * paper model of bench-mpi.py. Not a test. One JSON line per size on rank 0:
 * {"bytes": B, "ranks": N, "seconds": median of the repeats, "min": fastest}: on a
 * shared, loaded machine the fastest is the link's own cost, the median what a job met.
 *
 *   mpirun -np 2 build/bench/bench-allreduce [--max-bytes 16777216] [--repeats 50] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
compare_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return (x > y) - (x < y);
}

int
main (int argc, char **argv)
{
  long max_bytes = 16 << 20;
  int repeats = 50, rank, size;
  float *buf;
  double *times;

  MPI_Init (&argc, &argv);
  MPI_Comm_rank (MPI_COMM_WORLD, &rank);
  MPI_Comm_size (MPI_COMM_WORLD, &size);
  for (int i = 1; i + 1 < argc; i += 2)
    {
      if (strcmp (argv[i], "--max-bytes") == 0)
        max_bytes = atol (argv[i + 1]);
      else if (strcmp (argv[i], "--repeats") == 0)
        repeats = atoi (argv[i + 1]);
    }
  if (max_bytes < 4 || repeats < 1)
    {
      if (rank == 0)
        fprintf (stderr, "usage: bench-allreduce [--max-bytes N] [--repeats R]\n");
      MPI_Finalize ();
      return 2;
    }
  buf = calloc ((size_t) max_bytes / 4, sizeof (float));
  times = calloc ((size_t) repeats, sizeof (double));
  if (buf == NULL || times == NULL)
    MPI_Abort (MPI_COMM_WORLD, 1);

  for (long bytes = 4; bytes <= max_bytes; bytes *= 4)
    {
      int n = (int) (bytes / 4);

      /* warm-up: connections, buffers */
      for (int r = 0; r < 3; r++)
        MPI_Allreduce (MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      for (int r = 0; r < repeats; r++)
        {
          double t0;

          MPI_Barrier (MPI_COMM_WORLD);
          t0 = MPI_Wtime ();
          MPI_Allreduce (MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
          times[r] = MPI_Wtime () - t0;
        }
      /* the slowest rank sets the pace */
      MPI_Allreduce (MPI_IN_PLACE, times, repeats, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      qsort (times, (size_t) repeats, sizeof (double), compare_double);
      if (rank == 0)
        printf ("{\"bytes\": %ld, \"ranks\": %d, \"seconds\": %.9g, \"min\": %.9g}\n",
                bytes, size, times[repeats / 2], times[0]);
      fflush (stdout);
    }
  free (buf);
  free (times);
  MPI_Finalize ();
  return 0;
}
