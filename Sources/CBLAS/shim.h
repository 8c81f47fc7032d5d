// OpenBLAS's CBLAS interface (Debian's libopenblas-dev installs cblas.h through alternatives).
#ifndef CSPTRAIN_CBLAS_SHIM_H
#define CSPTRAIN_CBLAS_SHIM_H
#include <cblas.h>

// LAPACK's divide-and-conquer SVD, as OpenBLAS exports it (Fortran calling convention: every
// argument by pointer, column-major matrices). Debian ships no LAPACKE header with OpenBLAS, so
// the routines csptrain needs are declared here.
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s,
             float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *iwork, int *info);

// LAPACK's Cholesky solve of a symmetric positive definite system A X = B, in double precision
// (the least-squares refit of a pruned row on its support, Sources/CompressedSensing).
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info);
#endif
