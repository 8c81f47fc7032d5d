// Numeric inner loops the Swift compiler cannot vectorise for this machine: the LSTM cell's
// element-wise forward and backward (sigmoid, tanh and the cell update over one time step) and
// the recurrent products of few rows.
//
// Plain C, no allocation, no errors: callers own every buffer and its size. The element-wise
// kernels are built with -ffp-contract=off and no fast-math, so every CPU variant (AVX-512, AVX2,
// baseline, chosen at load time) rounds them identically. The products use fused multiply-adds
// where the CPU has them, so, like OpenBLAS's, their last bits depend on the CPU model.
#ifndef CSPTRAIN_KERNELS_H
#define CSPTRAIN_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/// y[i] = 1 / (1 + exp(-x[i])), relative error below 5e-7 for x ≥ -87 (float32 expf is about
/// 1e-7); below, about 1.6e-38 (the true value or less): absolute error under 2e-38.
void csp_sigmoid(const float *x, float *y, long n);

/// y[i] = tanh(x[i]), absolute error below 3e-7, relative error below 1e-6 near zero.
void csp_tanh(const float *x, float *y, long n);

/// One LSTM time step for `rows` rows of one batch, PyTorch gate order (i, f, g, o).
///   a     (rows, 4H)  in: pre-activations without biases; out: activated gates i, f, g, o
///   bias  (4H)        b_ih + b_hh
///   cprev (rows, H)   c_{t-1}, or NULL for zeros
///   c, tc, h (rows, H) out: c_t, tanh(c_t), h_t = o * tanh(c_t)
/// Row r of a, cprev, c, tc and h starts at r * its row stride (4H for a, H for the rest).
void csp_lstm_cell_forward(float *a, const float *bias, const float *cprev, float *c, float *tc, float *h,
                           long rows, long hidden);

/// Its backward for one row:
///   gates (4H) activated i, f, g, o;  tc (H) tanh(c_t);  cprev (H) c_{t-1} or NULL
///   dh (H)     dL/dh_t (output gradient plus what flowed back from t+1)
///   dc (H)     in: dL/dc_t from t+1; out: dL/dc_{t-1}
///   da (4H)    out: pre-activation gradients
void csp_lstm_cell_backward(const float *gates, const float *tc, const float *cprev, const float *dh,
                            float *dc, float *da, long hidden);

/// One Adam step over n parameters, in float, operation for operation as the scalar definition:
///   g = grad + (decoupled ? 0 : wd·p);  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g·g
///   p −= lr · ((m / c1) / (sqrt(v / c2) + eps) + (decoupled ? wd·p : 0))
/// with c1 = 1 − b1^t, c2 = 1 − b2^t. Bit for bit the same in every CPU variant.
void csp_adam(float *p, const float *grad, float *m, float *v, long n, float lr, float b1, float b2, float eps,
              float c1, float c2, float wd, int decoupled);

/// out (rows, n) += x (rows, k) · m (k, n), all row-major with rows packed (strides k and n).
///
/// For the LSTM's per-time-step recurrent products, few rows against a weight that stays the
/// same for the whole sequence: forward h_{t-1} · W_hhᵀ with W_hhᵀ packed once per batch, and
/// backward da_t · W_hh straight from the parameters. Eight rows at a time share each load of
/// m, held in registers, so m streams through the core once per eight rows, with nothing packed
/// per call (a general sgemm packs its operands on every call, which at eight rows costs as much
/// as the product). Uses fused multiply-adds where the CPU has them.
void csp_rows_times_matrix(const float *x, long rows, long k, const float *m, long n, float *out);

/// The variant csp_rows_times_matrix runs on this CPU ("avx512f+fma", "avx2+fma", "generic"):
/// results differ in the last bits between variants (fused multiply-adds round once).
const char *csp_rows_kernel_name(void);

/// dst (cols, rows) = srcᵀ for src (rows, cols), row-major.
void csp_transpose(const float *src, long rows, long cols, float *dst);

/// Deterministic gradient sums: sum[i] += round(weight · x[i] · 2^scale_bits) in int64, exactly.
/// Each term is a pure function of (x[i], weight), and integer addition is associative, so the
/// result does not depend on the order the terms arrive in. Returns the number of values whose
/// term or sum overflowed (those sums saturate and the step must not be applied).
long csp_fold_fixed(long long *sum, const float *x, long n, long weight, int scale_bits);

/// out[i] = (float)((double)sum[i] · 2^−scale_bits / examples).
void csp_fixed_mean(const long long *sum, float *out, long n, long examples, int scale_bits);

/// CRC-32C (Castagnoli) update without the initial and final inversion: the hardware crc32
/// instruction (SSE 4.2) when the CPU has it, else 0 is returned in `*done` and nothing is
/// computed (the caller's table-driven version takes over).
unsigned int csp_crc32c_hw(unsigned int crc, const void *data, long n, int *done);

/// Σ x[i]² in double precision, four independent sums added in a fixed order (the same bits on
/// every machine). NaN or infinity when any value is not finite.
double csp_sum_squares(const float *x, long n);

/// Σ x[i]² in double precision over sixteen independent sums (a received gradient chunk's
/// check: four times the throughput of csp_sum_squares, whose four-sum order the gradient norm
/// keeps). The same bits whatever the vector width; NaN or infinity when a value is not finite.
double csp_sum_squares_wide(const float *x, long n);

/// float32 → bfloat16, rounded to nearest, ties to even (NaN stays NaN); `out` may be unaligned.
void csp_to_bf16(const float *x, void *out, long n);

/// y[i] += a · bf16(x[i]) for little-endian bfloat16 `x` (may be unaligned).
void csp_axpy_bf16(float *y, const void *x, long n, float a);

/// bfloat16 → float32 (exact); `x` may be unaligned.
void csp_from_bf16(const void *x, float *out, long n);

/// Σ bf16(x[i])² in double, as csp_sum_squares.
double csp_sum_squares_bf16(const void *x, long n);

/// Values of x that are not +0.0 (keep_negative_zero) or not ±0.0 (otherwise).
long csp_count_stored(const float *x, long n, int keep_negative_zero);

/// Optimal Brain Surgeon's backward elimination of one row to k entries (obs.c): h = Ĝ⁻¹ (d × d,
/// overwritten), x = the row (overwritten), perm scratch (d); keep[i] = 1 for the entries kept.
void csp_obs_eliminate(double *h, double *x, int *perm, int d, int k, unsigned char *keep);

/// Local search on one row's support (swap.c). Swap rounds: while exchanging one kept entry for a
/// dropped one lowers the output error (z − w)ᵀĜ(z − w) of the least-squares z, make the best such
/// exchange among the `candidates` dropped entries with the largest residual gradient, at most
/// max_swaps times. Then `trials` rounds of iterated local search: the best support kicked by two
/// random exchanges (drawn from `seed`), swap rounds again, kept where the error is lower.
/// g = Ĝ (d × d), gw = Ĝw (d); keep (d) in and out; scratch csp_swap_scratch(d, k) doubles, index
/// csp_swap_indices(d, candidates) ints. Returns how many kept entries changed.
int csp_swap_search(const double *g, const double *gw, int d, unsigned char *keep, double *scratch, int *index,
                    int candidates, int max_swaps, int trials, unsigned long long seed);
int csp_swap_scratch(int d, int k);
int csp_swap_indices(int d, int candidates);

#ifdef __cplusplus
}
#endif
#endif

