// See csptrain_sparse.h. Built as kernels.c is: target_clones picks AVX-512, AVX2 or the
// baseline at load time, so the column loops vectorise for the CPU at hand.
#include "csptrain_sparse.h"

// Products may fuse multiply-adds (as OpenBLAS does); the package builds CKernels with
// -ffp-contract=off for the element-wise kernels' sake.
#pragma clang fp contract(fast)

#if defined(__x86_64__) && defined(__clang__) && defined(__linux__)
#define VARIANTS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VARIANTS
#endif

// Columns handled per pass at n > 1: the accumulators stay in registers (two AVX-512 or four
// AVX2 vectors) while the row's stored values stream past.
#define BLOCK 32

// One row of y, columns [c0, c0 + w), from `count` stored values whose column index is COLUMN(i).
#define ROW_BLOCK(COLUMN)                                                                  \
    do {                                                                                   \
        if (w == BLOCK) {                                                                  \
            float acc[BLOCK];                                                              \
            for (int j = 0; j < BLOCK; j++) acc[j] = yr[j];                                \
            for (long i = 0; i < count; i++) {                                             \
                const float v = vals[i];                                                   \
                const float *restrict xr = x + (long)(COLUMN(i)) * n + c0;                 \
                for (int j = 0; j < BLOCK; j++) acc[j] += v * xr[j];                       \
            }                                                                              \
            for (int j = 0; j < BLOCK; j++) yr[j] = acc[j];                                \
        } else {                                                                           \
            for (long i = 0; i < count; i++) {                                             \
                const float v = vals[i];                                                   \
                const float *restrict xr = x + (long)(COLUMN(i)) * n + c0;                 \
                for (long j = 0; j < w; j++) yr[j] += v * xr[j];                           \
            }                                                                              \
        }                                                                                  \
    } while (0)

VARIANTS void csp_csr_multiply_add(long rows, const int32_t *restrict row_start, const uint16_t *restrict columns,
                                   const float *restrict values, const float *restrict x, long n, float *restrict y) {
    if (n == 1) {
        for (long r = 0; r < rows; r++) {
            long i = row_start[r];
            const long end = row_start[r + 1];
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (; i + 4 <= end; i += 4) {
                s0 += values[i] * x[columns[i]];
                s1 += values[i + 1] * x[columns[i + 1]];
                s2 += values[i + 2] * x[columns[i + 2]];
                s3 += values[i + 3] * x[columns[i + 3]];
            }
            for (; i < end; i++) s0 += values[i] * x[columns[i]];
            y[r] += (s0 + s1) + (s2 + s3);
        }
        return;
    }
    for (long c0 = 0; c0 < n; c0 += BLOCK) {
        const long w = n - c0 < BLOCK ? n - c0 : BLOCK;
        for (long r = 0; r < rows; r++) {
            const long start = row_start[r], count = row_start[r + 1] - start;
            const uint16_t *restrict cols = columns + start;
            const float *restrict vals = values + start;
            float *restrict yr = y + r * n + c0;
#define CSR_COLUMN(i) cols[i]
            ROW_BLOCK(CSR_COLUMN);
#undef CSR_COLUMN
        }
    }
}

VARIANTS void csp_nm_multiply_add(long rows, long groups, long keep, long m, const uint8_t *restrict offsets,
                                  const float *restrict values, const float *restrict x, long n, float *restrict y) {
    const long count = groups * keep;
    if (n == 1) {
        for (long r = 0; r < rows; r++) {
            const uint8_t *restrict off = offsets + r * count;
            const float *restrict vals = values + r * count;
            float s0 = 0, s1 = 0;
            for (long g = 0; g < groups; g++) {
                const float *restrict xg = x + g * m;
                long i = g * keep;
                for (long j = 0; j < keep; j++, i++) {
                    if (j & 1) s1 += vals[i] * xg[off[i]];
                    else s0 += vals[i] * xg[off[i]];
                }
            }
            y[r] += s0 + s1;
        }
        return;
    }
    for (long c0 = 0; c0 < n; c0 += BLOCK) {
        const long w = n - c0 < BLOCK ? n - c0 : BLOCK;
        for (long r = 0; r < rows; r++) {
            const uint8_t *restrict off = offsets + r * count;
            const float *restrict vals = values + r * count;
            float *restrict yr = y + r * n + c0;
#define NM_COLUMN(i) ((i) / keep * m + off[i])
            ROW_BLOCK(NM_COLUMN);
#undef NM_COLUMN
        }
    }
}

VARIANTS void csp_bitmask_multiply_add(long rows, long words, const uint64_t *restrict masks, const int32_t *restrict row_start,
                                       const float *restrict values, const float *restrict x, long n, float *restrict y) {
    if (n == 1) {
        for (long r = 0; r < rows; r++) {
            const uint64_t *restrict mr = masks + r * words;
            const float *restrict v = values + row_start[r];
            float s0 = 0, s1 = 0;
            for (long wd = 0; wd < words; wd++) {
                uint64_t bits = mr[wd];
                const float *restrict xw = x + wd * 64;
                while (bits) {
                    s0 += *v++ * xw[__builtin_ctzll(bits)];
                    bits &= bits - 1;
                    if (!bits) break;
                    s1 += *v++ * xw[__builtin_ctzll(bits)];
                    bits &= bits - 1;
                }
            }
            y[r] += s0 + s1;
        }
        return;
    }
    for (long c0 = 0; c0 < n; c0 += BLOCK) {
        const long w = n - c0 < BLOCK ? n - c0 : BLOCK;
        for (long r = 0; r < rows; r++) {
            const uint64_t *restrict mr = masks + r * words;
            const float *restrict v = values + row_start[r];
            float *restrict yr = y + r * n + c0;
            float acc[BLOCK];
            for (long j = 0; j < w; j++) acc[j] = yr[j];
            for (long wd = 0; wd < words; wd++) {
                uint64_t bits = mr[wd];
                while (bits) {
                    const float *restrict xr = x + (wd * 64 + __builtin_ctzll(bits)) * n + c0;
                    const float s = *v++;
                    if (w == BLOCK) {
                        for (int j = 0; j < BLOCK; j++) acc[j] += s * xr[j];
                    } else {
                        for (long j = 0; j < w; j++) acc[j] += s * xr[j];
                    }
                    bits &= bits - 1;
                }
            }
            for (long j = 0; j < w; j++) yr[j] = acc[j];
        }
    }
}
