#include "CMalloc.h"

static int arenas_at_start = 0;

/* Runs when the program loads, before main and before the Swift runtime starts a thread.
 *
 * One malloc arena for every thread. glibc gives a thread that allocates under contention an arena
 * of its own, which grows in 64 MiB heaps and gives each heap's empty top back to the kernel
 * (whatever M_TRIM_THRESHOLD says); the coordinator's 16 MiB weights replies then land in fresh
 * pages every step, which the kernel must fault in and zero (8,190 faults a step, 32 MiB: the two
 * replies of `bench --only ingest`). Setting M_ARENA_MAX later, once `run()` executes on a thread
 * of Swift's pool, is too late for the threads already attached to an arena of their own. */
#if defined(__linux__)
__attribute__((constructor)) static void csptrain_one_malloc_arena(void) {
    if (mallopt(M_ARENA_MAX, 1) == 1) arenas_at_start = 1;
}
#endif

int csptrain_malloc_arenas_at_start(void) { return arenas_at_start; }
