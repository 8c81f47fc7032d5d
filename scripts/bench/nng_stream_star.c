/* The raw star of nng_star.c on nng byte streams (nng_stream) instead of nng messages: the
 * design of csptrain's chunk streams with nothing else, to show what moving the same bytes costs
 * without nng's per-message allocation, zeroing and copies (BENCHMARKS.md, "Chunk streams").
 *
 * One coordinator and P worker processes; each worker sends its share of M gradients of N floats
 * per step as frames (8-byte header: chunk index, value count; then the values, written from the
 * gradient where it lies) on one TCP stream, and reads the N-float weights back on the same
 * stream straight into its copy. The coordinator reads each worker's stream on a thread of its
 * own into a buffer it reuses, folds under a lock, applies SGD and writes the weights from its
 * own array to every worker. Dense only.
 *
 *   .build/bench-peers/nng_stream_star --n 4194304 --workers 2 --micro-batches 8 --chunk 262144 --steps 100
 * prints one JSON line like nng_star's, with "gbps": gradient bytes per second over the timed steps. */
#include <errno.h>
#include <malloc.h>
#include <nng/nng.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "step_common.h"
#define PEER_NAME "nng_stream_star"
#include "nng_peer.h"

#define MAX_WORKERS 64

/* Sends (or receives) every byte of p0[n0] then p1[n1]: nng may move fewer per call. */
static void xfer(nng_stream *s, nng_aio *aio, int send, void *p0, size_t n0, void *p1, size_t n1) {
    nng_iov iov[2]; unsigned k;
    while (n0 + n1 > 0) {
        k = 0;
        if (n0) { iov[k].iov_buf = p0; iov[k].iov_len = n0; k++; }
        if (n1) { iov[k].iov_buf = p1; iov[k].iov_len = n1; k++; }
        check(nng_aio_set_iov(aio, k, iov), "iov");
        if (send) nng_stream_send(s, aio); else nng_stream_recv(s, aio);
        nng_aio_wait(aio);
        check(nng_aio_result(aio), send ? "send" : "recv");
        size_t got = nng_aio_count(aio);
        if (got >= n0) { got -= n0; n0 = 0; p1 = (char *)p1 + got; n1 -= got; }
        else { p0 = (char *)p0 + got; n0 -= got; }
    }
}

static struct step_options O;
static float *W, *SUM;
static long CHUNKS;
/* Guards SUM and the count of chunks folded; the coordinator waits on `folded_cv`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t folded_cv = PTHREAD_COND_INITIALIZER;
static long folded_count = 0;

struct conn { nng_stream *s; };

/* One worker's stream: read each frame into a buffer reused for every chunk, fold it. */
static void *reader(void *arg) {
    struct conn *c = arg;
    nng_aio *aio; check(nng_aio_alloc(&aio, NULL, NULL), "aio");
    float *buf = allocate((size_t)O.chunk * 4);
    for (;;) {
        uint32_t h[2];
        xfer(c->s, aio, 0, h, sizeof h, NULL, 0);
        if (h[0] == UINT32_MAX) break;
        long first = (long)h[0] * O.chunk, count = h[1];
        if (h[0] >= (uint32_t)CHUNKS || count > O.chunk || first + count > O.n) {
            fprintf(stderr, "nng_stream_star: bad chunk %u (%ld values)\n", h[0], count);
            exit(1);
        }
        xfer(c->s, aio, 0, buf, (size_t)count * 4, NULL, 0);
        pthread_mutex_lock(&lock);
        float *t = SUM + first;
        for (long j = 0; j < count; j++) t[j] += buf[j];
        folded_count++;
        pthread_cond_signal(&folded_cv);
        pthread_mutex_unlock(&lock);
    }
    free(buf); nng_aio_free(aio); return NULL;
}

/* Worker `index`: send its gradients chunk by chunk, then read the weights into its copy. */
static int run_worker(int index, const char *url) {
    nng_stream_dialer *d; nng_aio *aio; nng_stream *s;
    check(nng_stream_dialer_alloc(&d, url), "dialer");
    check(nng_aio_alloc(&aio, NULL, NULL), "aio");
    nng_stream_dialer_dial(d, aio); nng_aio_wait(aio); check(nng_aio_result(aio), "dial");
    s = nng_aio_get_output(aio, 0);
    check(nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true), "set TCP_NODELAY");
    float *g = allocate((size_t)O.n * 4), *w = allocate((size_t)O.n * 4);
    int total = O.warmup + O.steps + 1;
    int mine = O.micro_batches / O.workers + (index < O.micro_batches % O.workers);
    for (int st = 0; st < total; st++) {
        for (int b = 0; b < mine; b++) {
            fill_gradient(g, O.n, index);
            for (long first = 0, c = 0; first < O.n; first += O.chunk, c++) {
                long count = O.n - first < O.chunk ? O.n - first : O.chunk;
                uint32_t h[2] = {(uint32_t)c, (uint32_t)count};
                xfer(s, aio, 1, h, sizeof h, g + first, (size_t)count * 4);
            }
        }
        xfer(s, aio, 0, w, (size_t)O.n * 4, NULL, 0);
    }
    uint32_t h[2] = {UINT32_MAX, 0}; xfer(s, aio, 1, h, sizeof h, NULL, 0);
    char bye; xfer(s, aio, 0, &bye, 1, NULL, 0);
    nng_stream_free(s);
    free(g), free(w);
    return 0;
}

int main(int argc, char **argv) {
    /* The allocator setting of csptrain's processes, as in nng_star.c. */
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);
    O = step_parse(argc, argv);
    if (O.workers > MAX_WORKERS) {
        fprintf(stderr, "nng_stream_star: at most %d workers\n", MAX_WORKERS);
        return 2;
    }
    /* Fork before nng starts its threads; each worker learns the address from a pipe. */
    int fds[MAX_WORKERS][2];
    pid_t kids[MAX_WORKERS];
    for (int i = 0; i < O.workers; i++) {
        if (pipe(fds[i]) != 0) {
            perror("nng_stream_star: pipe");
            return 1;
        }
        pid_t p = fork();
        if (p < 0) {
            perror("nng_stream_star: fork");
            return 1;
        }
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            close(fds[i][1]);
            char url[64] = {0};
            if (read(fds[i][0], url, sizeof url - 1) <= 0) _exit(1);
            _exit(run_worker(i, url));
        }
        close(fds[i][0]);
        kids[i] = p;
    }
    nng_stream_listener *l;
    check(nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0"), "allocate the listener");
    check(nng_stream_listener_listen(l), "listen");
    int port;
    check(nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port), "read the bound port");
    char url[64];
    int length = snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    for (int i = 0; i < O.workers; i++) {
        if (write(fds[i][1], url, (size_t)length) != length) {
            perror("nng_stream_star: tell a worker the address");
            return 1;
        }
        close(fds[i][1]);
    }
    struct conn conns[MAX_WORKERS];
    pthread_t readers[MAX_WORKERS];
    nng_aio *aio;
    check(nng_aio_alloc(&aio, NULL, NULL), "allocate an aio");
    W = allocate((size_t)O.n * 4);
    SUM = allocate((size_t)O.n * 4);
    for (long i = 0; i < O.n; i++) W[i] = 0.01f, SUM[i] = 0;
    CHUNKS = (O.n + O.chunk - 1) / O.chunk;
    for (int i = 0; i < O.workers; i++) {
        nng_stream_listener_accept(l, aio);
        nng_aio_wait(aio);
        check(nng_aio_result(aio), "accept a worker");
        conns[i].s = nng_aio_get_output(aio, 0);
        /* Small frames at once (nng sets this on its sockets' connections, not on bare streams). */
        check(nng_stream_set_bool(conns[i].s, NNG_OPT_TCP_NODELAY, true), "set TCP_NODELAY");
    }
    for (int i = 0; i < O.workers; i++) pthread_create(&readers[i], NULL, reader, &conns[i]);
    const int total = O.warmup + O.steps + 1;
    double *starts = allocate(sizeof(double) * (size_t)total);
    const float scale = O.lr / (float)O.micro_batches;
    for (int st = 0; st < total; st++) {
        starts[st] = now_seconds();
        pthread_mutex_lock(&lock);
        while (folded_count < (long)(st + 1) * CHUNKS * O.micro_batches) pthread_cond_wait(&folded_cv, &lock);
        pthread_mutex_unlock(&lock);
        for (long i = 0; i < O.n; i++) W[i] -= scale * SUM[i], SUM[i] = 0;
        /* The weights go from the coordinator's own array: no message, no copy. */
        for (int i = 0; i < O.workers; i++) xfer(conns[i].s, aio, 1, W, (size_t)O.n * 4, NULL, 0);
    }
    for (int i = 0; i < O.workers; i++) pthread_join(readers[i], NULL);
    for (int i = 0; i < O.workers; i++) {
        char bye = 1;
        xfer(conns[i].s, aio, 1, &bye, 1, NULL, 0);
    }
    double *seconds = allocate(sizeof(double) * (size_t)O.steps);
    for (int s = 0; s < O.steps; s++) seconds[s] = starts[O.warmup + s + 1] - starts[O.warmup + s];
    double mean = (starts[O.warmup + O.steps] - starts[O.warmup]) / O.steps;
    char extra[160];
    snprintf(extra, sizeof extra, ",\"chunk\":%ld,\"micro_batches\":%d,\"mean_seconds\":%.6f,\"gbps\":%.3f", O.chunk, O.micro_batches, mean,
             (double)O.micro_batches * (double)O.n * 4.0 / mean / 1e9);
    print_result("nng_stream_star", &O, seconds, W[0], extra);
    int status = 0;
    for (int i = 0; i < O.workers; i++) {
        int child;
        if (waitpid(kids[i], &child, 0) < 0 || !WIFEXITED(child) || WEXITSTATUS(child) != 0) status = 1;
    }
    return status;
}
