#!/usr/bin/env python3
"""How far swap rounds and iterated local search get from the best support (numpy, brute force).

The activations objective of one row, e(z) = (z - w)^T G (z - w) with z k-sparse and refitted
(least squares on its support), on rows like RowRegressionTests' (d = 12, k = 4, G with
eigenvalues log-spaced over [1, 10^3] in a random basis), against the best of all C(d, k)
supports. Mirrors Sources/CKernels/swap.c: best-improvement single exchanges until none lowers e,
from backward elimination (OBS) and from the diagonal start |w_i| sqrt(G_ii), keeping the better;
then restarts that kick the best support by two random exchanges, search again and keep the
result where e is lower. Prints, per strategy, the worst and mean ratio to the best support and
the share of rows within 1.05x. Quoted in Sources/Pruning/README.md ("Restarts").

    python3 scripts/swap-search-simulation.py [--rows 200]
"""
import argparse
import itertools

import numpy as np


def error(g, w, support):
    s = sorted(support)
    z = np.zeros(len(w))
    if s:
        z[s] = np.linalg.solve(g[np.ix_(s, s)], (g @ w)[s])
    d = z - w
    return d @ g @ d


def swap_rounds(g, w, support):
    d = len(w)
    s, e = set(support), error(g, w, support)
    while True:
        best = (e, None)
        for out in s:
            for into in set(range(d)) - s:
                t = (s - {out}) | {into}
                et = error(g, w, t)
                if et < best[0] * (1 - 1e-12):
                    best = (et, t)
        if best[1] is None:
            return s, e
        e, s = best


def backward_elimination(g, w, k):
    s = list(range(len(w)))
    while len(s) > k:
        s = min(([x for x in s if x != out] for out in s), key=lambda t: error(g, w, t))
    return s


def diagonal_start(g, w, k):
    return list(np.argsort(-np.abs(w) * np.sqrt(np.diag(g)))[:k])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--d", type=int, default=12)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    d, k = args.d, args.k
    rng, kicks = np.random.default_rng(0), np.random.default_rng(5)
    supports = list(itertools.combinations(range(d), k))
    restarts = [8, 16, 32]
    ratios = {name: [] for name in ["swap rounds"] + [f"{r} restarts" for r in restarts]}
    for _ in range(args.rows):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        g = q @ np.diag(1e3 ** (np.arange(d) / (d - 1))) @ q.T
        w = rng.standard_normal(d)
        best = min(error(g, w, s) for s in supports)
        start = min((swap_rounds(g, w, f(g, w, k)) for f in (backward_elimination, diagonal_start)), key=lambda r: r[1])
        ratios["swap rounds"].append(start[1] / best)
        s, e, done = start[0], start[1], 0
        for r in restarts:
            while done < r:
                t = set(s)
                out = kicks.choice(sorted(t), 2, replace=False)
                into = kicks.choice(sorted(set(range(d)) - t), 2, replace=False)
                t, et = swap_rounds(g, w, (t - set(out)) | set(into))
                if et < e:
                    s, e = t, et
                done += 1
            ratios[f"{r} restarts"].append(e / best)
    for name, values in ratios.items():
        v = np.array(values)
        print(f"{name:12s} worst {v.max():.3f}  mean {v.mean():.4f}  within 1.05x {np.mean(v <= 1.05) * 100:.1f}%")


if __name__ == "__main__":
    main()
