/* The step an MPI data-parallel user runs, as the baseline of `csptrain bench --only step`:
 * every rank holds its gradient of N float32 values, MPI_Allreduce sums them, and every rank
 * applies the same SGD update (w -= lr * g / P) to its own copy of the weights. With --sparse,
 * every rank then zeroes the pruned weights (a fixed mask), which is all a pruned model costs an
 * MPI user: the gradients stay dense and no weights cross the wire.
 *
 * Run over TCP on loopback, never shared memory, so it uses the same wire as csptrain:
 *   mpirun --allow-run-as-root --oversubscribe -np P --mca pml ob1 --mca btl tcp,self \
 *          --mca btl_tcp_if_include lo .build/bench-peers/mpi_step --n N
 * Rank 0 prints one JSON line; each step's time is the slowest rank's. */
#include <mpi.h>

#include "step_common.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    struct step_options o = step_parse(argc, argv);
    o.workers = size;  /* P is mpirun's -np, whatever --workers said */

    float *w = malloc((size_t)o.n * sizeof(float));
    float *g = malloc((size_t)o.n * sizeof(float));
    unsigned char *mask = o.sparse > 0 ? malloc((size_t)o.n) : NULL;
    double *seconds = malloc((size_t)o.steps * sizeof(double));
    double *slowest = malloc((size_t)o.steps * sizeof(double));
    if (!w || !g || !seconds || !slowest || (o.sparse > 0 && !mask)) {
        fprintf(stderr, "mpi_step: out of memory for %ld values\n", o.n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long i = 0; i < o.n; i++) w[i] = 0.01f;
    if (mask)
        for (long i = 0; i < o.n; i++) mask[i] = (unsigned char)kept(i, o.sparse);

    const float scale = o.lr / (float)size;
    for (int s = 0; s < o.warmup + o.steps; s++) {
        double start = MPI_Wtime();
        fill_gradient(g, o.n, rank);
        /* MPI counts are int: 10 M floats fit, 3 G would not. */
        MPI_Allreduce(MPI_IN_PLACE, g, (int)o.n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (mask)
            for (long i = 0; i < o.n; i++) w[i] = mask[i] ? w[i] - scale * g[i] : 0.0f;
        else
            for (long i = 0; i < o.n; i++) w[i] -= scale * g[i];
        if (s >= o.warmup) seconds[s - o.warmup] = MPI_Wtime() - start;
    }
    MPI_Reduce(seconds, slowest, o.steps, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) print_result("mpi_allreduce_sgd", &o, slowest, w[0], "");
    free(w);
    free(g);
    free(mask);
    free(seconds);
    free(slowest);
    MPI_Finalize();
    return 0;
}
