// Sparse weight products for inference: y (M, n) += W (M, K) · x (K, n), all row-major with
// row strides n. The activations are feature-major (one row per input feature, one column per
// time step or utterance), so every stored weight multiplies n contiguous values: at n = 1 a
// gather-dot per row, at larger n an axpy the compiler vectorises.
//
// Plain C, no allocation: callers own every buffer and its size. Sums run in index order within
// a row (with a few independent partial sums at n = 1), so results differ from a dense product
// of the same weights only by float rounding.
#ifndef CSPTRAIN_SPARSE_H
#define CSPTRAIN_SPARSE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Compressed sparse rows with 16-bit column indices (K ≤ 65536).
///   row_start (M + 1)  index of each row's first stored value; row_start[M] = stored count
///   columns, values    one per stored value, row by row, columns ascending within a row
void csp_csr_multiply_add(long rows, const int32_t *row_start, const uint16_t *columns, const float *values,
                          const float *x, long n, float *y);

/// Bitmask-packed rows: each row's positions as ⌈K/64⌉ 64-bit words (bit c % 64 of word c / 64
/// set where column c is stored), its values in column order.
///   masks (M, words), row_start (M + 1) as for CSR
void csp_bitmask_multiply_add(long rows, long words, const uint64_t *masks, const int32_t *row_start,
                              const float *values, const float *x, long n, float *y);

/// N:M structured rows: the K columns in groups of m (the last group may be shorter), exactly
/// `keep` values stored per group (zeros where a group had fewer), each with its offset in the
/// group. A row holds keep · ⌈K/m⌉ values.
///   offsets, values (M, keep · groups)
void csp_nm_multiply_add(long rows, long groups, long keep, long m, const uint8_t *offsets, const float *values,
                         const float *x, long n, float *y);

#ifdef __cplusplus
}
#endif
#endif
