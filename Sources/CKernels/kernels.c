// See csptrain_kernels.h. Every loop is branch-free over its elements so clang vectorises it;
// target_clones builds AVX-512 and AVX2 variants next to the baseline and picks one at load time.
#include "csptrain_kernels.h"
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__) && defined(__linux__)
#define VARIANTS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VARIANTS
#endif

// exp(x) for x <= 0, Cody–Waite reduction by ln 2 and a degree-7 Taylor polynomial on
// [-ln2/2, ln2/2] (truncation error below 7.4e-9 relative there; the result is within a few float
// roundings, about 3e-7 relative). Inputs below -87 give exp(-87) ≈ 1.6e-38 (the smallest normal
// float is 1.2e-38): negligible in absolute terms. NaN stays NaN.
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float round = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float n = (x * 1.44269504088896341f + round) - round;
    float r = x - n * 0.693359375f;    // ln 2, high part (exact in float for |n| < 2^9)
    r = r - n * -2.12194440e-4f;       // ln 2, low part
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // 2^n by adding n to the exponent field (n in [-126, 0]; a NaN's n is taken as 0, and p is NaN).
    int32_t bits, shift = (int32_t)(n == n ? n : 0.0f) * (1 << 23);
    memcpy(&bits, &p, 4);
    bits += shift;
    memcpy(&p, &bits, 4);
    return p;
}

static inline float sigmoid1(float x) {
    // Symmetric form: exp of a non-positive argument never overflows.
    float e = exp_nonpositive(x < 0 ? x : -x);
    float s = 1.0f / (1.0f + e);
    return x < 0 ? e * s : s;  // e / (1 + e): no cancellation for very negative x
}

static inline float tanh1(float x) {
    float ax = x < 0 ? -x : x;
    float e = exp_nonpositive(-2.0f * ax);
    float t = (1.0f - e) / (1.0f + e);
    // Near zero 1 - e cancels: the odd Taylor series is exact to float precision there.
    float x2 = x * x;
    float small = ax * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
    t = ax < 0.125f ? small : t;
    return x < 0 ? -t : t;
}

VARIANTS void csp_sigmoid(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = sigmoid1(x[i]);
}

VARIANTS void csp_tanh(const float *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = tanh1(x[i]);
}

VARIANTS void csp_lstm_cell_forward(float *restrict a, const float *restrict bias, const float *restrict cprev,
                                    float *restrict c, float *restrict tc, float *restrict h, long rows, long hidden) {
    const long H = hidden, G = 4 * hidden;
    for (long r = 0; r < rows; r++) {
        float *restrict ar = a + r * G;
        float *restrict cr = c + r * H, *restrict tcr = tc + r * H, *restrict hr = h + r * H;
        for (long j = 0; j < G; j++) ar[j] += bias[j];
        for (long j = 0; j < H; j++) ar[j] = sigmoid1(ar[j]);
        for (long j = H; j < 2 * H; j++) ar[j] = sigmoid1(ar[j]);
        for (long j = 2 * H; j < 3 * H; j++) ar[j] = tanh1(ar[j]);
        for (long j = 3 * H; j < G; j++) ar[j] = sigmoid1(ar[j]);
        if (cprev) {
            const float *restrict pr = cprev + r * H;
            for (long j = 0; j < H; j++) cr[j] = ar[H + j] * pr[j] + ar[j] * ar[2 * H + j];
        } else {
            for (long j = 0; j < H; j++) cr[j] = ar[j] * ar[2 * H + j];
        }
        for (long j = 0; j < H; j++) tcr[j] = tanh1(cr[j]);
        for (long j = 0; j < H; j++) hr[j] = ar[3 * H + j] * tcr[j];
    }
}

VARIANTS void csp_lstm_cell_backward(const float *restrict gates, const float *restrict tc, const float *restrict cprev,
                                     const float *restrict dh, float *restrict dc, float *restrict da, long hidden) {
    const long H = hidden;
    const float *i = gates, *f = gates + H, *g = gates + 2 * H, *o = gates + 3 * H;
    for (long j = 0; j < H; j++) {
        float dcj = dc[j] + dh[j] * o[j] * (1.0f - tc[j] * tc[j]);
        float previous = cprev ? cprev[j] : 0.0f;
        da[j] = dcj * g[j] * i[j] * (1.0f - i[j]);
        da[H + j] = dcj * previous * f[j] * (1.0f - f[j]);
        da[2 * H + j] = dcj * i[j] * (1.0f - g[j] * g[j]);
        da[3 * H + j] = dh[j] * tc[j] * o[j] * (1.0f - o[j]);
        dc[j] = dcj * f[j];
    }
}

VARIANTS void csp_adam(float *restrict p, const float *restrict grad, float *restrict m, float *restrict v, long n,
                       float lr, float b1, float b2, float eps, float c1, float c2, float wd, int decoupled) {
    if (decoupled) {
        for (long i = 0; i < n; i++) {
            float g = grad[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            float update = (m[i] / c1) / (__builtin_sqrtf(v[i] / c2) + eps);
            p[i] -= lr * (update + wd * p[i]);
        }
    } else {
        for (long i = 0; i < n; i++) {
            float g = grad[i] + wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            float update = (m[i] / c1) / (__builtin_sqrtf(v[i] / c2) + eps);
            p[i] -= lr * (update + 0.0f);
        }
    }
}

// MARK: Products of few rows

typedef float v16 __attribute__((vector_size(64), aligned(4)));

// Unaligned loads and stores (macros: a function passing v16 would fix one vector ABI for all variants).
#define load16(p) (*(const v16 *)(p))
#define store16(p, v) (*(v16 *)(p) = (v))

// out[r][c..c+32) += Σ_j x[r][j] · m[j][c..c+32) for up to 8 rows: 16 accumulators of 16 lanes.
// `FMA(a, b, c)` is a·b + c, fused or not per variant.
#define ROWS_KERNEL(NAME, ATTR, FMA)                                                                  \
    ATTR static void NAME(const float *x, long rows, long k, const float *m, long n, float *out) {   \
        long c = 0;                                                                                   \
        for (; c + 32 <= n; c += 32) {                                                                \
            v16 acc[8][2];                                                                            \
            for (long r = 0; r < 8; r++) { acc[r][0] = (v16){0}; acc[r][1] = (v16){0}; }              \
            for (long j = 0; j < k; j++) {                                                            \
                v16 m0 = load16(m + j * n + c), m1 = load16(m + j * n + c + 16);                      \
                for (long r = 0; r < 8; r++) {                                                        \
                    if (r < rows) {                                                                   \
                        float s = x[r * k + j];                                                       \
                        acc[r][0] = FMA(s, m0, acc[r][0]);                                            \
                        acc[r][1] = FMA(s, m1, acc[r][1]);                                            \
                    }                                                                                 \
                }                                                                                     \
            }                                                                                         \
            for (long r = 0; r < rows; r++) {                                                         \
                store16(out + r * n + c, load16(out + r * n + c) + acc[r][0]);                        \
                store16(out + r * n + c + 16, load16(out + r * n + c + 16) + acc[r][1]);              \
            }                                                                                         \
        }                                                                                             \
        for (; c < n; c++) {                                                                          \
            for (long r = 0; r < rows; r++) {                                                         \
                float s = 0;                                                                          \
                for (long j = 0; j < k; j++) s += x[r * k + j] * m[j * n + c];                        \
                out[r * n + c] += s;                                                                  \
            }                                                                                         \
        }                                                                                             \
    }

/* The widest vector extension this CPU offers of those the dispatched kernels are built for. */
enum isa { ISA_GENERIC, ISA_AVX2_FMA, ISA_AVX512 };
static enum isa widest_isa(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2_FMA;
#endif
    return ISA_GENERIC;
}

#define MUL_ADD(s, v, acc) ((s) * (v) + (acc))
#if defined(__x86_64__) && defined(__clang__)
#define FUSED(s, v, acc) __builtin_elementwise_fma((v16){0} + (s), (v), (acc))
ROWS_KERNEL(rows_avx512, __attribute__((target("avx512f,fma"))), FUSED)
ROWS_KERNEL(rows_avx2, __attribute__((target("avx2,fma"))), FUSED)
#endif
ROWS_KERNEL(rows_generic, , MUL_ADD)

void csp_rows_times_matrix(const float *x, long rows, long k, const float *m, long n, float *out) {
    typedef void (*kernel)(const float *, long, long, const float *, long, float *);
    static kernel chosen = 0;  // every thread picks the same one: a relaxed race is harmless
    kernel use = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!use) {
        switch (widest_isa()) {
#if defined(__x86_64__) && defined(__clang__)
        case ISA_AVX512: use = rows_avx512; break;
        case ISA_AVX2_FMA: use = rows_avx2; break;
#endif
        default: use = rows_generic;
        }
        __atomic_store_n(&chosen, use, __ATOMIC_RELAXED);
    }
    for (long r = 0; r < rows; r += 8) {
        use(x + r * k, rows - r < 8 ? rows - r : 8, k, m, n, out + r * n);
    }
}

const char *csp_rows_kernel_name(void) {
    switch (widest_isa()) {
    case ISA_AVX512: return "avx512f+fma";
    case ISA_AVX2_FMA: return "avx2+fma";
    default: return "generic";
    }
}

void csp_transpose(const float *restrict src, long rows, long cols, float *restrict dst) {
    // Tiles of 32 × 32 keep both sides in cache lines.
    for (long r0 = 0; r0 < rows; r0 += 32) {
        for (long c0 = 0; c0 < cols; c0 += 32) {
            long r1 = r0 + 32 < rows ? r0 + 32 : rows, c1 = c0 + 32 < cols ? c0 + 32 : cols;
            for (long r = r0; r < r1; r++)
                for (long c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
        }
    }
}

#include <math.h>

/* One value the careful way: any magnitude, NaN and overflow saturate and are counted. */
static long fold_fixed_one(long long *sum, float x, double scale) {
    const double limit = 9.2233720368547758e18; /* 2^63 */
    double term = rint((double)x * scale);
    if (!(term > -limit && term < limit)) {
        *sum = term < 0 ? INT64_MIN : INT64_MAX;
        return 1;
    }
    long long t = (long long)term, s;
    if (__builtin_add_overflow(*sum, t, &s)) {
        *sum = t < 0 ? INT64_MIN : INT64_MAX;
        return 1;
    }
    *sum = s;
    return 0;
}

long csp_fold_fixed(long long *sum, const float *x, long n, long weight, int scale_bits) {
    /* x · weight is exact in double (24 + at most 29 significant bits) and so is the power of
       two. Rounding to nearest, ties to even, happens once per term, independent of any other
       term. The fast path rounds with the 1.5·2^52 trick (exact for |t| < 2^51, where it gives
       what rint gives) and adds in wrapping unsigned arithmetic, which vectorises; a block with
       a term out of that range, a NaN, or a wrapped sum is undone and redone value by value. */
    const double scale = ldexp((double)weight, scale_bits);
    const double magic = 6755399441055744.0; /* 1.5 · 2^52 */
    const double fast_limit = 2251799813685248.0; /* 2^51 */
    long long magic_bits;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    enum { BLOCK = 512 };
    long overflowed = 0;
    for (long start = 0; start < n; start += BLOCK) {
        const long end = start + BLOCK < n ? start + BLOCK : n;
        int out_of_range = 0;
        for (long i = start; i < end; i++) {
            double t = (double)x[i] * scale;
            out_of_range |= !(t < fast_limit && t > -fast_limit);
        }
        unsigned long long wrapped = 0;
        if (!out_of_range) {
            for (long i = start; i < end; i++) {
                double t = (double)x[i] * scale + magic;
                long long bits;
                memcpy(&bits, &t, sizeof bits);
                unsigned long long term = (unsigned long long)(bits - magic_bits);
                unsigned long long before = (unsigned long long)sum[i];
                unsigned long long after = before + term;
                wrapped |= (before ^ after) & (term ^ after);
                sum[i] = (long long)after;
            }
            if (!(wrapped >> 63)) continue;
            for (long i = start; i < end; i++) { /* undo: the same terms, subtracted */
                double t = (double)x[i] * scale + magic;
                long long bits;
                memcpy(&bits, &t, sizeof bits);
                sum[i] = (long long)((unsigned long long)sum[i] - (unsigned long long)(bits - magic_bits));
            }
        }
        for (long i = start; i < end; i++) overflowed += fold_fixed_one(&sum[i], x[i], scale);
    }
    return overflowed;
}

void csp_fixed_mean(const long long *sum, float *out, long n, long examples, int scale_bits) {
    const double factor = ldexp(1.0, -scale_bits) / (double)examples;
    for (long i = 0; i < n; i++) out[i] = (float)((double)sum[i] * factor);
}

double csp_sum_squares(const float *x, long n) {
    /* Four lanes hide the add latency and let the compiler vectorise without reassociating:
       lane j sums x[i] for i = j mod 4, and the lanes are added in order at the end. */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        double a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
        s0 += a * a;
        s1 += b * b;
        s2 += c * c;
        s3 += d * d;
    }
    for (; i < n; i++) s0 += (double)x[i] * (double)x[i];
    return ((s0 + s1) + (s2 + s3));
}

/* Sixteen lanes: lane j sums x[i] for i = j mod 16, and the lanes are added in order, so the
   result is the same whatever vector width runs it (no contraction: -ffp-contract=off). */
#define SUM_SQUARES_WIDE(name, attributes)                                                         \
    attributes static double name(const float *x, long n) {                                        \
        double s[16] = {0};                                                                        \
        long i = 0;                                                                                \
        for (; i + 16 <= n; i += 16) {                                                             \
            for (int j = 0; j < 16; j++) s[j] += (double)x[i + j] * (double)x[i + j];              \
        }                                                                                          \
        double t = 0;                                                                              \
        for (int j = 0; j < 16; j++) t += s[j];                                                    \
        for (; i < n; i++) t += (double)x[i] * (double)x[i];                                       \
        return t;                                                                                  \
    }
#if defined(__x86_64__) && defined(__clang__)
SUM_SQUARES_WIDE(sum_squares_wide_avx512, __attribute__((target("avx512f"))))
SUM_SQUARES_WIDE(sum_squares_wide_avx2, __attribute__((target("avx2"))))
#endif
SUM_SQUARES_WIDE(sum_squares_wide_generic, )

double csp_sum_squares_wide(const float *x, long n) {
    typedef double (*kernel)(const float *, long);
    static kernel chosen = 0;  // every thread picks the same one: a relaxed race is harmless
    kernel use = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!use) {
        switch (widest_isa()) {
#if defined(__x86_64__) && defined(__clang__)
        case ISA_AVX512: use = sum_squares_wide_avx512; break;
        case ISA_AVX2_FMA: use = sum_squares_wide_avx2; break;
#endif
        default: use = sum_squares_wide_generic;
        }
        __atomic_store_n(&chosen, use, __ATOMIC_RELAXED);
    }
    return use(x, n);
}

static inline unsigned short bf16_round(float f) {
    unsigned int bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) return (unsigned short)((bits >> 16) | 0x0040u); /* quiet NaN */
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest, ties to even */
    return (unsigned short)(bits >> 16);
}

static inline float bf16_load(const unsigned char *p) {
    unsigned short h;
    memcpy(&h, p, sizeof h);
    unsigned int bits = (unsigned int)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void csp_to_bf16(const float *x, void *out, long n) {
    unsigned char *o = out;
    for (long i = 0; i < n; i++) {
        unsigned short h = bf16_round(x[i]);
        memcpy(o + 2 * i, &h, sizeof h);
    }
}

void csp_axpy_bf16(float *y, const void *x, long n, float a) {
    const unsigned char *p = x;
    for (long i = 0; i < n; i++) y[i] += a * bf16_load(p + 2 * i);
}

void csp_from_bf16(const void *x, float *out, long n) {
    const unsigned char *p = x;
    for (long i = 0; i < n; i++) out[i] = bf16_load(p + 2 * i);
}

double csp_sum_squares_bf16(const void *x, long n) {
    const unsigned char *p = x;
    double s0 = 0, s1 = 0;
    long i = 0;
    for (; i + 2 <= n; i += 2) {
        double a = bf16_load(p + 2 * i), b = bf16_load(p + 2 * i + 2);
        s0 += a * a;
        s1 += b * b;
    }
    for (; i < n; i++) { double a = bf16_load(p + 2 * i); s0 += a * a; }
    return s0 + s1;
}

long csp_count_stored(const float *x, long n, int keep_negative_zero) {
    /* On the bit patterns: +0.0 is all zeros, −0.0 only the sign bit; the loop vectorises. */
    const unsigned int ignore = keep_negative_zero ? 0xFFFFFFFFu : 0x7FFFFFFFu;
    long count = 0;
    for (long i = 0; i < n; i++) {
        unsigned int bits;
        memcpy(&bits, &x[i], sizeof bits);
        count += (bits & ignore) != 0;
    }
    return count;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static unsigned int crc32c_sse42(unsigned int crc, const unsigned char *p, long n) {
    unsigned long long c = crc;
    /* Three independent streams would hide the instruction's 3-cycle latency; one is already
       several GB/s, far above what the checkpoint writer needs. */
    while (n >= 8) {
        unsigned long long v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    unsigned int c32 = (unsigned int)c;
    while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

unsigned int csp_crc32c_hw(unsigned int crc, const void *data, long n, int *done) {
#if defined(__x86_64__)
    static int available = -1;
    if (available < 0) available = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (available) {
        *done = 1;
        return crc32c_sse42(crc, (const unsigned char *)data, n);
    }
#endif
    (void)data;
    (void)n;
    *done = 0;
    return crc;
}
