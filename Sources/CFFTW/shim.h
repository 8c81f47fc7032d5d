// FFTW 3, single precision (libfftw3f from Debian's libfftw3-dev).
#ifndef CSPTRAIN_CFFTW_SHIM_H
#define CSPTRAIN_CFFTW_SHIM_H
#include <fftw3.h>
#endif
