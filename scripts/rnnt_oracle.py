#!/usr/bin/env python3
"""The RNN-T loss and its gradient in numpy (float64): a torch-free oracle for the Swift loss.

Reads JSON on stdin, writes JSON on stdout:

    {"cases": [{"logits": [...], "frames": T, "classes": V, "labels": [y1, ..., yU]}, ...]}
    -> {"results": [{"loss": L, "gradient": [...]}, ...]}

`logits` is (T, U + 1, V) row-major, blank = 0, the log-softmax fused (the gradient is with
respect to the logits), as torchaudio.functional.rnnt_loss(blank=0, fused_log_softmax=True).
Tests/ModelsTests/RNNTLossTests.swift runs it through CSPTRAIN_PYTHON (scripts/python-env.sh).

    python3 scripts/rnnt_oracle.py --check Tests/ModelsTests/Fixtures/rnnt_torchaudio.json

checks the oracle itself against the committed torchaudio fixture and prints the worst errors.
"""
import json
import sys

import numpy as np


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))


def rnnt(logits, labels):
    """logits (T, U+1, V) float64, labels (U,) ints. Returns (loss, dloss/dlogits)."""
    T, N, V = logits.shape
    U = N - 1
    lp = log_softmax(logits)
    blank = lp[:, :, 0]                                            # (T, U+1)
    emit = lp[:, np.arange(U), labels] if U else np.zeros((T, 0))  # (T, U): label y_{u+1} out of (t, u)
    alpha = np.full((T, N), -np.inf)
    alpha[0, 0] = 0.0
    # The lattice swept by anti-diagonals t + u = d: each node's two predecessors lie on d - 1.
    for d in range(1, T + U):
        for t in range(max(0, d - U), min(T - 1, d) + 1):
            u = d - t
            from_blank = alpha[t - 1, u] + blank[t - 1, u] if t > 0 else -np.inf
            from_label = alpha[t, u - 1] + emit[t, u - 1] if u > 0 else -np.inf
            alpha[t, u] = np.logaddexp(from_blank, from_label)
    beta = np.full((T, N), -np.inf)
    beta[T - 1, U] = blank[T - 1, U]
    for d in range(T + U - 1, -1, -1):
        for t in range(max(0, d - U), min(T - 1, d) + 1):
            u = d - t
            if t == T - 1 and u == U:
                continue
            via_blank = beta[t + 1, u] + blank[t, u] if t < T - 1 else -np.inf
            via_label = beta[t, u + 1] + emit[t, u] if u < U else -np.inf
            beta[t, u] = np.logaddexp(via_blank, via_label)
    log_p = alpha[T - 1, U] + blank[T - 1, U]
    # Gradient with respect to the log-probabilities, then through the softmax.
    dlp = np.zeros_like(lp)
    after_blank = np.full((T, N), -np.inf)
    after_blank[:-1, :] = beta[1:, :]
    after_blank[T - 1, U] = 0.0
    dlp[:, :, 0] = -np.exp(alpha + blank + after_blank - log_p)
    for u in range(U):
        dlp[:, u, labels[u]] -= np.exp(alpha[:, u] + emit[:, u] + beta[:, u + 1] - log_p)
    grad = dlp - np.exp(lp) * dlp.sum(axis=-1, keepdims=True)
    return -log_p, grad, alpha[T - 1, U] + blank[T - 1, U] - beta[0, 0]


def run(cases):
    results = []
    for c in cases:
        T, V, labels = c["frames"], c["classes"], np.array(c["labels"], dtype=np.int64)
        logits = np.array(c["logits"], dtype=np.float64).reshape(T, len(labels) + 1, V)
        loss, grad, disagreement = rnnt(logits, labels)
        assert abs(disagreement) < 1e-9, f"alpha and beta disagree on log p by {disagreement}"
        results.append({"loss": float(loss), "gradient": grad.reshape(-1).tolist()})
    return results


def check(path):
    """The oracle against torchaudio's numbers in a fixture made by scripts/make-rnnt-fixture.py."""
    with open(path) as f:
        fixture = json.load(f)
    worst_loss = worst_grad = 0.0
    for batch in fixture["batches"]:
        B, T, N, V = batch["shape"]
        logits = np.array(batch["logits"], dtype=np.float64).reshape(B, T, N, V)
        grads = np.array(batch["gradient"], dtype=np.float64).reshape(B, T, N, V)
        total = 0.0
        for b in range(B):
            t_b, labels = batch["frames"][b], np.array(batch["labels"][b], dtype=np.int64)
            loss, grad, _ = rnnt(logits[b, :t_b, : len(labels) + 1], labels)
            total += loss
            expected = grads[b, :t_b, : len(labels) + 1]
            worst_grad = max(worst_grad, float(np.abs(grad - expected).max()))
        worst_loss = max(worst_loss, abs(total - batch["loss"]) / abs(batch["loss"]))
    print(f"numpy oracle vs torchaudio: worst relative loss error {worst_loss:.2e}, worst gradient error {worst_grad:.2e}")
    return worst_loss < 1e-5 and worst_grad < 1e-5


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    json.dump({"results": run(json.load(sys.stdin)["cases"])}, sys.stdout)
