// Optimal Brain Surgeon's backward elimination for one row of a layer (the activations objective
// of Sources/CompressedSensing/RowRegression.swift). Double precision: the downdates of an
// ill-conditioned inverse lose too much in float32.
#include "csptrain_kernels.h"
#include <math.h>
#include <string.h>

// h: (d, d) row-major, on entry Ĝ⁻¹ (overwritten); x: (d), on entry the row w (overwritten);
// perm: (d) scratch; keep: (d) out, 1 for the k entries kept.
//
// While more than k entries remain, removes the entry q whose removal raises the output error
// (z − w)ᵀĜ(z − w) least, x_q² / H_qq, moves the others to compensate (x ← x − x_q/H_qq · H_:q)
// and downdates H to the inverse of Ĝ on the entries left. The live entries are kept in the
// leading n × n block (a removed position is refilled from the last), so every loop runs over
// contiguous memory.
void csp_obs_eliminate(double *h, double *x, int *perm, int d, int k, unsigned char *keep) {
    for (int i = 0; i < d; i++) { perm[i] = i; keep[i] = 1; }
    int n = d;
    while (n > k && n > 0) {
        int p = 0;
        double best = INFINITY;
        for (int a = 0; a < n; a++) {
            double hii = h[(long)a * d + a];
            double s = hii > 0 ? x[a] * x[a] / hii : INFINITY;
            if (s < best) { best = s; p = a; }
        }
        const double *hp = h + (long)p * d;
        const double hpp = hp[p];
        if (hpp > 0) {
            const double f = x[p] / hpp;
            for (int a = 0; a < n; a++) x[a] -= f * hp[a];
            // H ← H − H_:p H_p: / H_pp on the live block (H symmetric: column p is row p).
            for (int a = 0; a < n; a++) {
                if (a == p) continue;
                const double c = hp[a] / hpp;
                if (c == 0) continue;
                double *ha = h + (long)a * d;
                for (int b = 0; b < n; b++) ha[b] -= c * hp[b];
            }
        }
        keep[perm[p]] = 0;
        // Refill position p from the last live position.
        const int last = n - 1;
        if (p != last) {
            double *rp = h + (long)p * d;
            const double *rl = h + (long)last * d;
            for (int b = 0; b < n; b++) rp[b] = rl[b];
            for (int a = 0; a < n; a++) h[(long)a * d + p] = h[(long)a * d + last];
            h[(long)p * d + p] = h[(long)last * d + last];
            x[p] = x[last];
            perm[p] = perm[last];
        }
        n--;
    }
}
