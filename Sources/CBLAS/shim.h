// OpenBLAS's CBLAS interface (Debian's libopenblas-dev installs cblas.h through alternatives).
#ifndef CSPTRAIN_CBLAS_SHIM_H
#define CSPTRAIN_CBLAS_SHIM_H
#include <cblas.h>
#endif
