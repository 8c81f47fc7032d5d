// Linux calls that Swift cannot import directly (variadic prctl).
#ifndef CSPTRAIN_CSYSTEM_SHIM_H
#define CSPTRAIN_CSYSTEM_SHIM_H
#include <sys/prctl.h>
#include <signal.h>

// Ask the kernel to send `sig` to this process when its parent dies.
static inline int csp_set_parent_death_signal(int sig) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0);
}
#endif
