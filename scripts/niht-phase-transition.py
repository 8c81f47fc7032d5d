#!/usr/bin/env python3
"""NIHT's phase transition on csp's blocks, measured with numpy (issue 14; 2026-11-30).

For exactly k-sparse blocks of b = 256 weights measured by Gaussian N(0, 1/m) operators, the
fraction recovered (relative error < 1e-3) by normalised IHT (Blumensath & Davies 2010: the
step size from the gradient on the current support, halved while a support change overshoots)
in 30 iterations, csp's default. It sets the floor m >= 5.5 k of `measurements: auto` under
`recover: signal` (Sources/Pruning/Projection.swift). Printed on 2026-11-30 (20 blocks each):

    k=13 (auto m/b=0.30) m/b=0.3:0.95 m/b=0.4:1.00 m/b=0.5:1.00 ...
    k=26 (auto m/b=0.46) m/b=0.3:0.00 m/b=0.4:0.05 m/b=0.5:0.95 m/b=0.6:1.00 ...
    k=34 (auto m/b=0.54) m/b=0.5:0.00 m/b=0.6:0.75 m/b=0.7:1.00 ...
    k=52 (auto m/b=0.65) m/b=0.7:0.00 m/b=0.8:0.50 m/b=0.9:0.90
    k=94 (auto m/b=0.74) m/b=0.9:0.00

Usage: python3 scripts/niht-phase-transition.py  (numpy; about a minute)
"""
import numpy as np

B = 256


def niht(phi, y, k, iterations=30):
    x = np.zeros(B)
    support = np.argsort(-np.abs(phi.T @ y))[:k]
    for _ in range(iterations):
        g = phi.T @ (y - phi @ x)
        gs = np.zeros(B)
        gs[support] = g[support]
        mu = (gs @ gs) / max(1e-30, np.sum((phi @ gs) ** 2))

        def step(mu):
            xn = x + mu * g
            s = np.argsort(-np.abs(xn))[:k]
            xt = np.zeros(B)
            xt[s] = xn[s]
            return xt, s

        xt, s = step(mu)
        if set(s) != set(support):
            for _ in range(20):
                d = xt - x
                if mu <= 0.99 * (d @ d) / max(1e-30, np.sum((phi @ d) ** 2)):
                    break
                mu /= 2
                xt, s = step(mu)
        x, support = xt, s
    return x


def main():
    rng = np.random.default_rng(1)
    for k in [13, 26, 34, 52, 94]:
        row = []
        for ratio in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            m = int(ratio * B)
            recovered = 0
            for _ in range(20):
                v = np.zeros(B)
                v[rng.choice(B, k, replace=False)] = rng.standard_normal(k)
                phi = rng.standard_normal((m, B)) / np.sqrt(m)
                recovered += np.linalg.norm(niht(phi, phi @ v, k) - v) / np.linalg.norm(v) < 1e-3
            row.append(f"m/b={m / B:.1f}:{recovered / 20:.2f}")
        auto = min(B, max(2 * k, int(np.ceil(2 * k * np.log(B / k)))))
        print(f"k={k} (auto m/b={auto / B:.2f})", " ".join(row), flush=True)


if __name__ == "__main__":
    main()
