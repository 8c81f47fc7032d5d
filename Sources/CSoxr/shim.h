// libsoxr: band-limited sample-rate conversion (Debian's libsoxr-dev).
#ifndef CSPTRAIN_CSOXR_SHIM_H
#define CSPTRAIN_CSOXR_SHIM_H
#include <soxr.h>
#endif
