// Local search on one row's support for the activations objective (after the solvers of
// Sources/CompressedSensing/RowRegression.swift): exchange one kept entry for one dropped entry
// while that lowers the output error, then iterated local search (Lourenço, Martin & Stützle,
// 2003): kick the best support by two random exchanges, search again, keep what is better.
// Double precision, as obs.c.
#include "csptrain_kernels.h"
#include <math.h>
#include <string.h>

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
int csp_swap_indices(int d, int candidates) { return 2 * d + candidates; }

// One row's search state. With S = index[0 ..< k] (in H's order) and the dropped entries in
// index[k ..< d]: H = Ĝ_SS⁻¹, z = H (Ĝw)_S the least-squares values, and the error on S is
// wᵀĜw − q(S), q(S) = (Ĝw)_Sᵀ z.
typedef struct {
    const double *g, *gw;
    int d, k, candidates;
    int *index, *chosen;
    double *h, *z, *v, *av, *score;
} row_search;

// z for the current S; returns q(S).
static double fit(row_search *s) {
    const int k = s->k;
    double q = 0;
    for (int r = 0; r < k; r++) {
        double t = 0;
        const double *hr = s->h + (long)r * k;
        for (int c = 0; c < k; c++) t += hr[c] * s->gw[s->index[c]];
        s->z[r] = t;
        q += s->gw[s->index[r]] * t;
    }
    return q;
}

// chosen[0 ..< found]: positions in index of the dropped entries with the largest residual
// gradient r_j²/Ĝ_jj, r = Ĝ(w − z), largest first. Needs z. Returns found.
static int rank_candidates(row_search *s) {
    const int d = s->d, k = s->k;
    for (int jj = k; jj < d; jj++) {
        const int j = s->index[jj];
        const double *gj = s->g + (long)j * d;
        double r = s->gw[j];
        for (int c = 0; c < k; c++) r -= gj[s->index[c]] * s->z[c];
        s->score[jj - k] = gj[j] > 0 ? r * r / gj[j] : 0;
    }
    int found = 0;
    for (; found < s->candidates; found++) {
        int best = -1;
        for (int jj = 0; jj < d - k; jj++) {
            if (s->score[jj] >= 0 && (best < 0 || s->score[jj] > s->score[best])) best = jj;
        }
        if (best < 0) break;  // the rest are NaN
        s->chosen[found] = best + k;
        s->score[best] = -1;
    }
    return found;
}

// For the dropped entry j: v = Ĝ_jS and a = H v (in s->v and s->av); returns vᵀa, and vᵀz in *vz.
static double couple(row_search *s, int j, double *vz) {
    const int k = s->k;
    const double *gj = s->g + (long)j * s->d;
    double va = 0, vzs = 0;
    for (int c = 0; c < k; c++) s->v[c] = gj[s->index[c]];
    for (int r = 0; r < k; r++) {
        double t = 0;
        const double *hr = s->h + (long)r * k;
        for (int c = 0; c < k; c++) t += hr[c] * s->v[c];
        s->av[r] = t;
        va += s->v[r] * t;
        vzs += s->v[r] * s->z[r];
    }
    *vz = vzs;
    return va;
}

// Exchanges the kept entry at position p for the dropped one at position jj, updating H in
// O(k²). Returns 0, with nothing changed, when Ĝ with the new entry would be numerically singular
// (its Schur complement σ = Ĝ_jj − vᵀa + a_p²/H_pp, v = Ĝ_jS, a = H v, is not positive); −1
// when rounding makes it so only after the update: H and index are then no longer consistent,
// and the caller must restore them.
static int exchange(row_search *s, int p, int jj) {
    const int d = s->d, k = s->k, last = k - 1;
    double *h = s->h, *v = s->v, *av = s->av;
    int *index = s->index;
    const double *hp = h + (long)p * k;
    const double hpp = hp[p];
    {
        double vz;
        const double va = couple(s, index[jj], &vz);
        if (!(hpp > 0) || !(s->g[(long)index[jj] * d + index[jj]] - va + av[p] * av[p] / hpp > 0)) return 0;
    }
    // Drop position p: H ← H − H_:p H_p: / H_pp, then the last position moves to p.
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
    // Add j at position last: with u = H_T Ĝ_jT and σ = Ĝ_jj − Ĝ_jTᵀ u, the inverse grows by
    // [H_T + u uᵀ/σ, −u/σ; −uᵀ/σ, 1/σ].
    const int j = index[jj];
    index[jj] = out;
    const double *gj = s->g + (long)j * d;
    double sigma = gj[j];
    for (int r = 0; r < last; r++) {
        double t = 0;
        const double *hr = h + (long)r * k;
        for (int c = 0; c < last; c++) t += hr[c] * gj[index[c]];
        av[r] = t;
        sigma -= gj[index[r]] * t;
    }
    index[last] = j;
    if (!(sigma > 0)) return -1;
    for (int r = 0; r < last; r++) {
        double *hr = h + (long)r * k;
        for (int c = 0; c < last; c++) hr[c] += av[r] * av[c] / sigma;
        hr[last] = -av[r] / sigma;
        h[(long)last * k + r] = -av[r] / sigma;
    }
    h[(long)last * k + last] = 1 / sigma;
    return 1;
}

// Best-improvement exchanges, at most max_swaps. Each round scores the candidates against every
// kept entry in closed form: dropping position i costs z_i²/H_ii (as in obs.c); adding j to
// T = S − i then gains num²/den, where, with v = Ĝ_jS and a = H v,
//
//     num = (Ĝw)_j − vᵀz + z_i a_i / H_ii,    den = Ĝ_jj − vᵀa + a_i² / H_ii,
//
// and it makes the best exchange while that lowers the error by more than a relative 1e-12. A
// round costs O((d − k)·k + candidates·k²). An exchange that would make Ĝ_SS singular ends the
// rounds where they are. Stores q of the final support in *q; returns the number of exchanges,
// or −1 when rounding broke an exchange halfway (state inconsistent).
static int refine(row_search *s, int max_swaps, double *q) {
    const int d = s->d, k = s->k;
    double *h = s->h, *z = s->z, *av = s->av;
    int swaps = 0;
    for (;;) {
        *q = fit(s);
        if (swaps >= max_swaps) return swaps;
        const int found = rank_candidates(s);
        double bestGain = 0;
        int bestOut = -1, bestIn = -1;
        for (int m = 0; m < found; m++) {
            const int j = s->index[s->chosen[m]];
            const double *gj = s->g + (long)j * d;
            double vz;
            const double va = couple(s, j, &vz);
            for (int i = 0; i < k; i++) {
                const double hii = h[(long)i * k + i];
                if (!(hii > 0)) continue;
                const double den = gj[j] - va + av[i] * av[i] / hii;
                if (!(den > 0)) continue;
                const double num = s->gw[j] - vz + z[i] * av[i] / hii;
                const double gain = num * num / den - z[i] * z[i] / hii;
                if (gain > bestGain) { bestGain = gain; bestOut = i; bestIn = s->chosen[m]; }
            }
        }
        if (bestOut < 0 || !(bestGain > 1e-12 * fabs(*q))) return swaps;
        const int made = exchange(s, bestOut, bestIn);
        if (made < 0) return -1;
        if (made == 0) { *q = fit(s); return swaps; }
        swaps++;
    }
}

static unsigned long long splitmix(unsigned long long *state) {
    unsigned long long x = (*state += 0x9E3779B97F4A7C15ULL);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

int csp_swap_search(const double *g, const double *gw, int d, unsigned char *keep, double *scratch, int *index,
                    int candidates, int max_swaps, int trials, unsigned long long seed) {
    int k = 0, rest = d;
    for (int i = 0; i < d; i++) {
        if (keep[i]) index[k++] = i; else index[--rest] = i;
    }
    if (k == 0 || k == d || max_swaps <= 0) return 0;
    if (candidates > d - k) candidates = d - k;
    if (candidates < 1) return 0;
    row_search s = {
        .g = g, .gw = gw, .d = d, .k = k, .candidates = candidates,
        .index = index, .chosen = index + d,
        .h = scratch, .z = scratch + 2L * k * k,
    };
    s.v = s.z + k;
    s.av = s.v + k;
    s.score = s.av + k;
    // The second k × k block first holds Ĝ_SS for the inversion, then the best support's H.
    double *bestH = scratch + (long)k * k;
    int *bestIndex = index + d + candidates;
    for (int r = 0; r < k; r++) {
        for (int c = 0; c < k; c++) bestH[(long)r * k + c] = g[(long)index[r] * d + index[c]];
    }
    if (!invert_spd(bestH, s.h, k)) return 0;
    double best;
    if (refine(&s, max_swaps, &best) < 0) return 0;  // keep stays as it came
    memcpy(bestH, s.h, sizeof(double) * k * k);
    memcpy(bestIndex, index, sizeof(int) * d);
    unsigned long long state = seed;
    const int kicks = k < 2 || d - k < 2 ? 1 : 2;
    for (int t = 0; t < trials; t++) {
        // The kick: `kicks` exchanges of a random kept entry for one of the candidates, drawn at
        // random. A single exchange could not lower the error from a local optimum; two together
        // can, and the search that follows finds where they lead.
        int ok = 1;
        for (int m = 0; m < kicks && ok; m++) {
            fit(&s);
            const int found = rank_candidates(&s);
            if (found < 1) { ok = 0; break; }
            // The second kick leaves alone the entry the first one brought in (at position k − 1).
            const int p = (int)(splitmix(&state) % (unsigned long long)(m == 0 ? k : k - 1));
            const int jj = s.chosen[splitmix(&state) % (unsigned long long)found];
            ok = exchange(&s, p, jj) > 0;
        }
        double q = 0;
        if (ok && refine(&s, max_swaps, &q) >= 0 && q > best + 1e-12 * fabs(best)) {
            best = q;
            memcpy(bestH, s.h, sizeof(double) * k * k);
            memcpy(bestIndex, index, sizeof(int) * d);
        } else {
            memcpy(s.h, bestH, sizeof(double) * k * k);
            memcpy(index, bestIndex, sizeof(int) * d);
        }
    }
    int changed = 0;
    for (int r = 0; r < k; r++) changed += !keep[bestIndex[r]];
    memset(keep, 0, (size_t)d);
    for (int r = 0; r < k; r++) keep[bestIndex[r]] = 1;
    return changed;
}
