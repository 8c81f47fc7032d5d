/* The measured floor of csptrain's design for `csptrain bench --only step` ("raw star"): one
 * coordinator process and P worker processes over nng on TCP loopback, moving the bytes
 * csptrain moves in the pattern it moves them, with nothing else: no protobuf, no accounting,
 * no membership, no files.
 *
 * Each step every worker sends its N-float gradient to the coordinator in chunks of --chunk
 * values (1 MiB by default, csptrain's chunk_values); with --micro-batches M, the step's M
 * gradients are spread over the workers instead (worker i sends those of micro-batches i, i + P,
 * ...: the shape of `csptrain bench --only ingest`). The coordinator folds the chunks into one
 * sum as they arrive, applies SGD (w -= lr * g / M) and sends the new weights to every worker:
 * N floats, or with --sparse S a bitmask of N bits and the (1 - S) * N kept values, which is what
 * a broadcast of a model pruned to S carries. A worker starts its next step once it has them.
 *
 * Sockets: gradients go PUSH (each worker) -> PULL (coordinator), the fan-in csptrain's REQ/REP
 * chunks make; weights go back over one PUSH -> PULL pair per worker, since each worker must
 * get its own copy (as csptrain's replies do) and PUB/SUB would drop messages under load.
 *
 *   .build/bench-peers/nng_star --n N --workers P [--sparse 0.9]
 * prints one JSON line; a step's time is from one step's start on the coordinator to the next's,
 * so it includes the workers' side of the cycle. */
#include <errno.h>
#include <malloc.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "step_common.h"
#define PEER_NAME "nng_star"
#include "nng_peer.h"

/* First word of a message on the gradient socket: a chunk index, or this. */
#define DONE_MARK UINT32_MAX

/* What goes on the wire from the coordinator: the weights themselves, or bitmask + kept values. */
struct layout {
    long mask_bytes;  /* 0 when dense */
    long values;      /* floats that follow the mask */
    size_t bytes;
};

static struct layout weights_layout(const struct step_options *o, long kept_count) {
    struct layout l;
    l.mask_bytes = o->sparse > 0 ? (o->n + 7) / 8 : 0;
    l.values = o->sparse > 0 ? kept_count : o->n;
    l.bytes = (size_t)l.mask_bytes + (size_t)l.values * sizeof(float);
    return l;
}

/* Worker i: send the gradient in chunks, wait for the weights, decode them into its own copy. */
static int run_worker(int index, const struct step_options *o, const char *gradient_url, const char *weights_url) {
    nng_socket up, down;
    check(nng_push0_open(&up), "open gradient PUSH");
    check(nng_pull0_open(&down), "open weights PULL");
    check(nng_socket_set_size(down, NNG_OPT_RECVMAXSZ, 0), "lift the weights socket's size limit");
    check(nng_dial(down, weights_url, NULL, 0), "dial the weights address");
    check(nng_dial(up, gradient_url, NULL, 0), "dial the gradient address");

    float *g = allocate((size_t)o->n * sizeof(float));
    float *w = allocate((size_t)o->n * sizeof(float));
    const int total = o->warmup + o->steps + 1;
    const int mine = o->micro_batches / o->workers + (index < o->micro_batches % o->workers);
    for (int s = 0; s < total; s++) {
        for (int b = 0; b < mine; b++) {
            fill_gradient(g, o->n, index);
            for (long first = 0, c = 0; first < o->n; first += o->chunk, c++) {
                long count = o->n - first < o->chunk ? o->n - first : o->chunk;
                nng_msg *m;
                check(nng_msg_alloc(&m, sizeof(uint32_t) + (size_t)count * sizeof(float)), "allocate a chunk");
                uint32_t header = (uint32_t)c;
                memcpy(nng_msg_body(m), &header, sizeof header);
                memcpy((char *)nng_msg_body(m) + sizeof header, g + first, (size_t)count * sizeof(float));
                check(nng_sendmsg(up, m, 0), "send a chunk");
            }
        }
        nng_msg *m;
        check(nng_recvmsg(down, &m, 0), "receive the weights");
        const unsigned char *body = nng_msg_body(m);
        size_t length = nng_msg_len(m);
        if (o->sparse > 0) {
            long mask_bytes = (o->n + 7) / 8;
            const unsigned char *bits = body;
            const float *values = (const float *)(body + mask_bytes);
            long k = 0, limit = (long)((length - (size_t)mask_bytes) / sizeof(float));
            for (long i = 0; i < o->n; i++)
                w[i] = (bits[i >> 3] >> (i & 7)) & 1 ? (k < limit ? values[k++] : 0.0f) : 0.0f;
        } else {
            if (length != (size_t)o->n * sizeof(float)) {
                fprintf(stderr, "nng_star: worker %d got %zu weight bytes, expected %zu\n", index, length,
                        (size_t)o->n * sizeof(float));
                return 1;
            }
            memcpy(w, body, length);
        }
        nng_msg_free(m);
    }
    /* The coordinator must not close before the last weights are delivered: say we have them. */
    uint32_t done = DONE_MARK;
    check(nng_send(up, &done, sizeof done, 0), "send done");
    nng_msg *ack;
    check(nng_recvmsg(down, &ack, 0), "wait for the coordinator's goodbye");
    nng_msg_free(ack);
    nng_close(up);
    nng_close(down);
    free(g);
    free(w);
    return 0;
}

static int bound_port(nng_listener l) {
    int port;
    check(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port), "read the bound port");
    return port;
}

/* The coordinator: fold, update, encode once, send to each worker. `to_workers[i]` is the pipe
 * on which worker i waits for the two addresses; `children[i]` is its process. */
static int run_coordinator(const struct step_options *o, const int *to_workers, const pid_t *children) {
    nng_socket in;
    nng_listener listener;
    nng_socket *out = allocate((size_t)o->workers * sizeof(nng_socket));
    check(nng_pull0_open(&in), "open gradient PULL");
    check(nng_socket_set_size(in, NNG_OPT_RECVMAXSZ, 0), "lift the gradient socket's size limit");
    check(nng_listen(in, "tcp://127.0.0.1:0", &listener, 0), "listen for gradients");
    int gradient_port = bound_port(listener);
    for (int i = 0; i < o->workers; i++) {
        check(nng_push0_open(&out[i]), "open weights PUSH");
        check(nng_listen(out[i], "tcp://127.0.0.1:0", &listener, 0), "listen for a worker's weights");
        char line[64];
        int length = snprintf(line, sizeof line, "%d %d\n", gradient_port, bound_port(listener));
        if (write(to_workers[i], line, (size_t)length) != length) {
            perror("nng_star: tell a worker the addresses");
            return 1;
        }
        close(to_workers[i]);
    }

    float *w = allocate((size_t)o->n * sizeof(float));
    float *sum = allocate((size_t)o->n * sizeof(float));
    for (long i = 0; i < o->n; i++) w[i] = 0.01f, sum[i] = 0.0f;
    /* The mask is fixed (one-shot pruning): pack it once; each step copies it and gathers values. */
    long kept_count = 0;
    unsigned char *bits = NULL;
    if (o->sparse > 0) {
        bits = calloc((size_t)(o->n + 7) / 8, 1);
        if (!bits) return 1;
        for (long i = 0; i < o->n; i++)
            if (kept(i, o->sparse)) bits[i >> 3] |= (unsigned char)(1u << (i & 7)), kept_count++;
    }
    const struct layout layout = weights_layout(o, kept_count);
    const long chunks = (o->n + o->chunk - 1) / o->chunk;
    const float scale = o->lr / (float)o->micro_batches;
    const int total = o->warmup + o->steps + 1;
    double *starts = allocate((size_t)total * sizeof(double));

    for (int s = 0; s < total; s++) {
        starts[s] = now_seconds();
        for (long received = 0; received < chunks * o->micro_batches; received++) {
            nng_msg *m;
            check(nng_recvmsg(in, &m, 0), "receive a chunk");
            uint32_t c;
            memcpy(&c, nng_msg_body(m), sizeof c);
            long first = (long)c * o->chunk;
            long count = (long)((nng_msg_len(m) - sizeof c) / sizeof(float));
            if (c >= (uint32_t)chunks || first + count > o->n) {
                fprintf(stderr, "nng_star: bad chunk %u (%ld values)\n", c, count);
                return 1;
            }
            /* The body is malloc'd, so the floats after a 4-byte header are aligned for float. */
            const float *values = (const float *)((const char *)nng_msg_body(m) + sizeof c);
            float *target = sum + first;
            for (long j = 0; j < count; j++) target[j] += values[j];
            nng_msg_free(m);
        }
        /* SGD on the master weights; the sum is cleared in the same pass for the next step. */
        for (long i = 0; i < o->n; i++) w[i] -= scale * sum[i], sum[i] = 0.0f;

        nng_msg *encoded;
        check(nng_msg_alloc(&encoded, layout.bytes), "allocate the weights");
        unsigned char *body = nng_msg_body(encoded);
        if (bits) {
            memcpy(body, bits, (size_t)layout.mask_bytes);
            float *values = (float *)(body + layout.mask_bytes);
            long k = 0;
            for (long i = 0; i < o->n; i++)
                if ((bits[i >> 3] >> (i & 7)) & 1) values[k++] = w[i];
        } else {
            memcpy(body, w, layout.bytes);
        }
        /* Encoded once; nng consumes a message on send, so every other worker gets a duplicate. */
        for (int i = 1; i < o->workers; i++) {
            nng_msg *copy;
            check(nng_msg_dup(&copy, encoded), "copy the weights");
            check(nng_sendmsg(out[i], copy, 0), "send the weights");
        }
        check(nng_sendmsg(out[0], encoded, 0), "send the weights");
    }

    for (int done = 0; done < o->workers;) {
        nng_msg *m;
        check(nng_recvmsg(in, &m, 0), "receive done");
        uint32_t mark = 0;
        if (nng_msg_len(m) >= sizeof mark) memcpy(&mark, nng_msg_body(m), sizeof mark);
        done += mark == DONE_MARK;
        nng_msg_free(m);
    }
    for (int i = 0; i < o->workers; i++) check(nng_send(out[i], "", 1, 0), "say goodbye");

    double *seconds = allocate((size_t)o->steps * sizeof(double));
    for (int s = 0; s < o->steps; s++) seconds[s] = starts[o->warmup + s + 1] - starts[o->warmup + s];
    /* The mean as well: gradient bytes over the timed steps' time, as csptrain's ingest counts. */
    double mean = (starts[o->warmup + o->steps] - starts[o->warmup]) / (double)o->steps;
    char extra[256];
    snprintf(extra, sizeof extra,
             ",\"chunk\":%ld,\"micro_batches\":%d,\"mean_seconds\":%.6f,\"bytes_to_coordinator_per_step\":%.0f,\"bytes_from_coordinator_per_step\":%.0f",
             o->chunk, o->micro_batches, mean, (double)o->micro_batches * (double)o->n * sizeof(float),
             (double)o->workers * (double)layout.bytes);
    print_result(o->sparse > 0 ? "nng_star_sparse" : "nng_star", o, seconds, w[0], extra);

    /* nng drops what is still queued when a socket closes: close only once every worker has
     * its goodbye, i.e. has exited. */
    int status = 0;
    for (int i = 0; i < o->workers; i++) {
        int child;
        if (waitpid(children[i], &child, 0) < 0 || !WIFEXITED(child) || WEXITSTATUS(child) != 0) status = 1;
    }
    for (int i = 0; i < o->workers; i++) nng_close(out[i]);
    nng_close(in);
    free(out), free(w), free(sum), free(bits), free(starts), free(seconds);
    return status;
}

int main(int argc, char **argv) {
    /* The same allocator setting as csptrain's processes (Runtime/ProcessTuning.swift): the
       40 MB weights message is over glibc's 32 MiB mmap cap, so without it every step would map
       and fault in fresh pages, and the floor would be pessimistic. Forked workers inherit it. */
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);
    struct step_options o = step_parse(argc, argv);
    if (o.chunk > (long)((UINT32_MAX - 1) / 4)) o.chunk = (UINT32_MAX - 1) / 4;
    int *to_workers = allocate((size_t)o.workers * sizeof(int));
    pid_t *children = allocate((size_t)o.workers * sizeof(pid_t));

    /* Fork before nng starts its threads; the workers learn the coordinator's ports (known only
     * once it listens on port 0) from a pipe. */
    for (int i = 0; i < o.workers; i++) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("nng_star: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("nng_star: fork");
            return 1;
        }
        if (pid == 0) {
            /* A coordinator that dies must not leave workers blocked on its sockets. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            close(fds[1]);
            char line[64] = {0};
            size_t have = 0;
            while (have < sizeof line - 1) {
                ssize_t n = read(fds[0], line + have, sizeof line - 1 - have);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                have += (size_t)n;
                if (memchr(line, '\n', have)) break;
            }
            int gradient_port, weights_port;
            if (sscanf(line, "%d %d", &gradient_port, &weights_port) != 2) {
                fprintf(stderr, "nng_star: worker %d: no addresses from the coordinator\n", i);
                _exit(1);
            }
            char gradient_url[64], weights_url[64];
            snprintf(gradient_url, sizeof gradient_url, "tcp://127.0.0.1:%d", gradient_port);
            snprintf(weights_url, sizeof weights_url, "tcp://127.0.0.1:%d", weights_port);
            _exit(run_worker(i, &o, gradient_url, weights_url));
        }
        close(fds[0]);
        to_workers[i] = fds[1];
        children[i] = pid;
    }

    int status = run_coordinator(&o, to_workers, children);
    free(to_workers);
    free(children);
    return status;
}
