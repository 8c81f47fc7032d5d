/* What the two nng peers of `csptrain bench` share (nng_star.c, nng_stream_star.c): one way out
 * for an nng error and for a failed allocation, naming the peer (PEER_NAME, defined before this
 * header is included) and the process. */
#ifndef NNG_PEER_H
#define NNG_PEER_H

#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef PEER_NAME
#error "define PEER_NAME before including nng_peer.h"
#endif

static void check(int rv, const char *what) {
    if (rv != 0) {
        fprintf(stderr, "%s (pid %d): %s: %s\n", PEER_NAME, (int)getpid(), what, nng_strerror(rv));
        exit(1);
    }
}

static void *allocate(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", PEER_NAME, bytes);
        exit(1);
    }
    return p;
}

#endif
