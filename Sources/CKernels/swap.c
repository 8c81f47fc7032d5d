// Swap refinement of one row's support for the activations objective (after the solvers of
// Sources/CompressedSensing/RowRegression.swift): exchange one kept entry for one dropped entry
// while that lowers the output error. Double precision, as obs.c.
#include "csptrain_kernels.h"
#include <math.h>

// Inverts the n × n symmetric positive definite matrix a (row-major, stride n; overwritten by its
// Cholesky factor and that factor's inverse) into h. Returns 0 when a is not positive definite.
static int invert_spd(double *a, double *h, int n) {
    for (int j = 0; j < n; j++) {
        double s = a[(long)j * n + j];
        for (int m = 0; m < j; m++) s -= a[(long)j * n + m] * a[(long)j * n + m];
        if (!(s > 0)) return 0;
        const double l = sqrt(s);
        a[(long)j * n + j] = l;
        for (int i = j + 1; i < n; i++) {
            double t = a[(long)i * n + j];
            for (int m = 0; m < j; m++) t -= a[(long)i * n + m] * a[(long)j * n + m];
            a[(long)i * n + j] = t / l;
        }
    }
    // L⁻¹ in place (lower triangle), column by column.
    for (int j = 0; j < n; j++) {
        a[(long)j * n + j] = 1 / a[(long)j * n + j];
        for (int i = j + 1; i < n; i++) {
            double t = 0;
            for (int m = j; m < i; m++) t -= a[(long)i * n + m] * a[(long)m * n + j];
            a[(long)i * n + j] = t / a[(long)i * n + i];
        }
    }
    // H = L⁻ᵀ L⁻¹.
    for (int i = 0; i < n; i++) {
        for (int j = 0; j <= i; j++) {
            double t = 0;
            for (int m = i; m < n; m++) t += a[(long)m * n + i] * a[(long)m * n + j];
            h[(long)i * n + j] = t;
            h[(long)j * n + i] = t;
        }
    }
    return 1;
}

int csp_swap_scratch(int d, int k) { return 2 * k * k + 3 * k + d + 1; }

// g: Ĝ (d × d, row-major); gw: Ĝw (d); keep: (d) in and out, 1 for the kept entries; scratch:
// csp_swap_scratch(d, k) doubles; index: d + candidates ints. Returns the number of swaps made.
//
// With S the kept entries (k of them), H = Ĝ_SS⁻¹ and z = H (Ĝw)_S the least-squares values, the
// error on S is wᵀĜw − q(S), q(S) = (Ĝw)_Sᵀ z. Dropping i ∈ S costs z_i² / H_ii (as in obs.c);
// adding j to T = S − i then gains num² / den, where, with v = Ĝ_jS and a = H v,
//
//     num = (Ĝw)_j − vᵀz + z_i a_i / H_ii,    den = Ĝ_jj − vᵀa + a_i² / H_ii,
//
// so every pair (i, j) is scored in O(1) once a is known for j. Each round scores the
// `candidates` dropped entries with the largest residual gradient r_j²/Ĝ_jj, r = Ĝ(w − z), against
// every kept one, and makes the best exchange while it lowers the error by more than a relative
// 1e-12, at most max_swaps times. H is computed once (O(k³)) and then updated in O(k²) per
// exchange, so a round costs O((d − k)·k + candidates·k²).
int csp_swap_refine(const double *g, const double *gw, int d, unsigned char *keep, double *scratch, int *index,
                    int candidates, int max_swaps) {
    int k = 0, rest = d;
    for (int i = 0; i < d; i++) {
        if (keep[i]) index[k++] = i; else index[--rest] = i;
    }
    if (k == 0 || k == d || max_swaps <= 0) return 0;
    if (candidates > d - k) candidates = d - k;
    if (candidates < 1) return 0;
    // index[0 ..< k]: the kept entries, in H's order; index[k ..< d]: the dropped ones.
    int *chosen = index + d;
    double *h = scratch, *a = scratch + (long)k * k, *z = a + (long)k * k, *v = z + k, *av = v + k, *score = av + k;
    for (int r = 0; r < k; r++) {
        for (int c = 0; c < k; c++) a[(long)r * k + c] = g[(long)index[r] * d + index[c]];
    }
    if (!invert_spd(a, h, k)) return 0;
    int swaps = 0;
    while (swaps < max_swaps) {
        double q = 0;
        for (int r = 0; r < k; r++) {
            double t = 0;
            const double *hr = h + (long)r * k;
            for (int c = 0; c < k; c++) t += hr[c] * gw[index[c]];
            z[r] = t;
            q += gw[index[r]] * t;
        }
        // The candidates: the dropped entries whose residual gradient is largest.
        for (int jj = k; jj < d; jj++) {
            const int j = index[jj];
            const double *gj = g + (long)j * d;
            double r = gw[j];
            for (int c = 0; c < k; c++) r -= gj[index[c]] * z[c];
            score[jj - k] = gj[j] > 0 ? r * r / gj[j] : 0;
        }
        int found = 0;
        for (; found < candidates; found++) {
            int best = -1;
            for (int jj = 0; jj < d - k; jj++) {
                if (score[jj] >= 0 && (best < 0 || score[jj] > score[best])) best = jj;
            }
            if (best < 0) break;  // the rest are NaN
            chosen[found] = best + k;
            score[best] = -1;
        }
        double bestGain = 0;
        int bestOut = -1, bestIn = -1;
        for (int m = 0; m < found; m++) {
            const int j = index[chosen[m]];
            const double *gj = g + (long)j * d;
            for (int c = 0; c < k; c++) v[c] = gj[index[c]];
            double va = 0, vz = 0;
            for (int r = 0; r < k; r++) {
                double t = 0;
                const double *hr = h + (long)r * k;
                for (int c = 0; c < k; c++) t += hr[c] * v[c];
                av[r] = t;
                va += v[r] * t;
                vz += v[r] * z[r];
            }
            for (int i = 0; i < k; i++) {
                const double hii = h[(long)i * k + i];
                if (!(hii > 0)) continue;
                const double den = gj[j] - va + av[i] * av[i] / hii;
                if (!(den > 0)) continue;
                const double num = gw[j] - vz + z[i] * av[i] / hii;
                const double gain = num * num / den - z[i] * z[i] / hii;
                if (gain > bestGain) { bestGain = gain; bestOut = i; bestIn = chosen[m]; }
            }
        }
        if (bestOut < 0 || !(bestGain > 1e-12 * fabs(q))) break;

        // Drop position p = bestOut: H ← H − H_:p H_p: / H_pp, then the last position moves to p.
        const int p = bestOut, last = k - 1;
        const double *hp = h + (long)p * k;
        const double hpp = hp[p];
        for (int r = 0; r < k; r++) v[r] = hp[r];
        for (int r = 0; r < k; r++) {
            const double c = v[r] / hpp;
            double *hr = h + (long)r * k;
            for (int c2 = 0; c2 < k; c2++) hr[c2] -= c * v[c2];
        }
        if (p != last) {
            for (int c = 0; c < k; c++) h[(long)p * k + c] = h[(long)last * k + c];
            for (int r = 0; r < k; r++) h[(long)r * k + p] = h[(long)r * k + last];
            h[(long)p * k + p] = h[(long)last * k + last];
        }
        const int out = index[p];
        index[p] = index[last];
        // Add j at position last: with u = H_T Ĝ_jT and s = Ĝ_jj − Ĝ_jTᵀ u, the inverse grows by
        // [H_T + u uᵀ/s, −u/s; −uᵀ/s, 1/s].
        const int j = index[bestIn];
        index[bestIn] = out;
        const int n = k - 1;
        const double *gj = g + (long)j * d;
        double s = gj[j];
        for (int r = 0; r < n; r++) {
            double t = 0;
            const double *hr = h + (long)r * k;
            for (int c = 0; c < n; c++) t += hr[c] * gj[index[c]];
            av[r] = t;
            s -= gj[index[r]] * t;
        }
        if (!(s > 0)) break;  // numerically singular with j: keep the support as it was
        for (int r = 0; r < n; r++) {
            double *hr = h + (long)r * k;
            for (int c = 0; c < n; c++) hr[c] += av[r] * av[c] / s;
            hr[last] = -av[r] / s;
            h[(long)last * k + r] = -av[r] / s;
        }
        h[(long)last * k + last] = 1 / s;
        index[last] = j;
        keep[out] = 0;
        keep[j] = 1;
        swaps++;
    }
    return swaps;
}
