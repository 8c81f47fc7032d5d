/* What the two C peers of `csptrain bench --only step` share: their command line, the
 * gradient fill and the one JSON line they print, so that the Swift driver reads both alike. */
#ifndef STEP_COMMON_H
#define STEP_COMMON_H

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct step_options {
    long n;         /* float32 values per gradient and per weight vector */
    int workers;    /* P: MPI ranks, or star workers (the coordinator is one more process) */
    int steps;      /* timed steps */
    int warmup;     /* untimed steps first: connections, page faults, allocator */
    double sparse;  /* star only: fraction of the broadcast weights that are zero (0: dense) */
    float lr;
    long chunk;     /* star only: gradient values per message (csptrain's chunk_values) */
    int micro_batches; /* star only: gradients folded per step, spread over the workers (one each unless set) */
};

static inline void step_usage(const char *program) {
    fprintf(stderr,
            "usage: %s [--n VALUES] [--workers P] [--steps K] [--warmup W] [--sparse FRACTION] [--chunk VALUES] [--lr RATE]\n"
            "       [--micro-batches M]   (star only: M gradients per step in all, spread over the workers)\n"
            "prints one JSON line: median, p10 and p90 seconds per step\n",
            program);
}

static inline struct step_options step_parse(int argc, char **argv) {
    struct step_options o = {.n = 10000000, .workers = 2, .steps = 30, .warmup = 5, .sparse = 0, .lr = 0.01f, .chunk = 262144, .micro_batches = 0};
    static const struct option longs[] = {
        {"n", required_argument, 0, 'n'},      {"workers", required_argument, 0, 'p'},
        {"steps", required_argument, 0, 'k'},  {"warmup", required_argument, 0, 'w'},
        {"sparse", required_argument, 0, 's'}, {"chunk", required_argument, 0, 'c'},
        {"lr", required_argument, 0, 'l'},     {"micro-batches", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'n': o.n = atol(optarg); break;
        case 'p': o.workers = atoi(optarg); break;
        case 'k': o.steps = atoi(optarg); break;
        case 'w': o.warmup = atoi(optarg); break;
        case 's': o.sparse = atof(optarg); break;
        case 'c': o.chunk = atol(optarg); break;
        case 'l': o.lr = (float)atof(optarg); break;
        case 'm': o.micro_batches = atoi(optarg); break;
        default: step_usage(argv[0]); exit(c == 'h' ? 0 : 2);
        }
    }
    if (o.micro_batches == 0) o.micro_batches = o.workers;
    if (o.n < 1 || o.workers < 1 || o.steps < 1 || o.warmup < 0 || o.chunk < 1 || o.sparse < 0 || o.sparse >= 1 ||
        o.micro_batches < 1) {
        step_usage(argv[0]);
        exit(2);
    }
    return o;
}

static inline double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The same cheap, deterministic gradient on every worker and every step: computing it must cost
 * next to nothing, as csptrain's loadtest model's does, so that only the exchange is timed. */
static inline void fill_gradient(float *g, long n, int worker) {
    float base = 1e-3f * (float)(worker + 1);
    for (long i = 0; i < n; i++) g[i] = base;
}

/* Whether weight i survives pruning to `sparse`: a fixed pseudo-random mask (a hash of i), as a
 * one-shot pruning leaves it, and irregular so that building a bitmask from it is not unduly
 * cheap. About (1 - sparse) * n weights are kept. */
static inline int kept(long i, double sparse) {
    unsigned long long z = (unsigned long long)i + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 >= sparse;
}

static inline int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of sorted[0..count) with linear interpolation between neighbours. */
static inline double quantile(const double *sorted, int count, double q) {
    double position = q * (double)(count - 1);
    int below = (int)position;
    if (below >= count - 1) return sorted[count - 1];
    double fraction = position - (double)below;
    return sorted[below] + fraction * (sorted[below + 1] - sorted[below]);
}

/* One line on stdout; `seconds` is sorted in place. `check` is a weight after the run, which
 * shows the arithmetic was done (equal across peers given the same settings); `extra` holds
 * further ,"key":value pairs or is empty. */
static inline void print_result(const char *name, const struct step_options *o, double *seconds, double check, const char *extra) {
    qsort(seconds, (size_t)o->steps, sizeof(double), compare_doubles);
    printf("{\"name\":\"%s\",\"n\":%ld,\"p\":%d,\"steps\":%d,\"warmup\":%d,\"sparse\":%.3f,"
           "\"median_seconds\":%.6f,\"p10_seconds\":%.6f,\"p90_seconds\":%.6f,\"weight0\":%.9g%s}\n",
           name, o->n, o->workers, o->steps, o->warmup, o->sparse, quantile(seconds, o->steps, 0.5),
           quantile(seconds, o->steps, 0.1), quantile(seconds, o->steps, 0.9), check, extra);
    fflush(stdout);
}

#endif
