#!/usr/bin/env python3
"""The sketch comparison's WER differences with paired-bootstrap intervals (issue 14 item 2).

Reads each run's test-scores.json under OUT/runs (written by `csptrain experiment pruning
--config Configs/experiment-sketch.yaml --out OUT`) and prints, for every csp-sketch-* run, its
test WER and the difference from csp-activations (the full Σ x xᵀ) in points, with a 95%
paired-bootstrap interval over the test utterances (2,000 resamples, as the experiment's own
report), clean and through the channel.

    python3 scripts/sketch-sweep-report.py runs/sketch-sweep-2026-11-30
"""
import json
import pathlib
import sys

import numpy as np


def scores(folder):
    data = json.loads((folder / "test-scores.json").read_text())
    return {split: (np.array(data[split]["wordEdits"], float), np.array(data[split]["words"], float)) for split in ("clean", "channel")}


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sketch-sweep-2026-11-30")
    runs = {p.name: scores(p) for p in sorted((out / "runs").iterdir()) if (p / "test-scores.json").exists() and p.name != "dense"}
    reference = next(name for name in runs if name.startswith("csp-activations"))
    rng = np.random.default_rng(1)
    print(f"| run | WER clean | − {reference} (clean) | WER channel | − {reference} (channel) |")
    print("|---|---|---|---|---|")
    for name, s in runs.items():
        cells = []
        for split in ("clean", "channel"):
            edits, words = s[split]
            ref_edits, ref_words = runs[reference][split]
            wer = 100 * edits.sum() / words.sum()
            if name == reference:
                cells += [f"{wer:.2f}", "—"]
                continue
            n = len(edits)
            picks = rng.integers(0, n, size=(2000, n))
            diffs = 100 * (edits[picks].sum(1) / words[picks].sum(1) - ref_edits[picks].sum(1) / ref_words[picks].sum(1))
            low, high = np.percentile(diffs, [2.5, 97.5])
            delta = wer - 100 * ref_edits.sum() / ref_words.sum()
            cells += [f"{wer:.2f}", f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
