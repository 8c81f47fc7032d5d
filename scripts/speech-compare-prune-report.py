#!/usr/bin/env python3
"""Issue 16's pruning comparison at 80%, from scripts/speech-compare-prune.sh's folders.

    scripts/speech-compare-prune-report.py OUT [--out OUT/pruning.md]   (also writes OUT/pruning-scores.json)

For each model (ctc, rnnt, rnnt-aux): the dense run (OUT/<model>), the same 1,000 steps of fine-tuning
without pruning (OUT/<model>-dense-finetuned, the control) and each pruned run
(OUT/<model>-<method>-80): test WER and CER on held-out voices, clean and channel-degraded,
the prunable layers' sparsity, the coordinator's time in projection steps, and the run's
validation WER. Each pruned run's WER is set against the control's with a 95% paired bootstrap
interval over test utterances (word errors counted here from the transcripts `csptrain eval
--json` writes and the manifest's references). Standard library only.
"""
import argparse
import json
import pathlib
import random
import sys

METHODS = ("one-shot-reconstruction", "csp-activations")


def word_errors(reference, hypothesis):
    """Levenshtein distance between word sequences, and the reference's length."""
    r, h = reference.split(), hypothesis.split()
    previous = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        current = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rw != hw))
        previous = current
    return previous[-1], len(r)


def per_utterance(scores, references):
    """(errors, words) per utterance, in the manifest's order, by audio file name."""
    by_name = {pathlib.Path(t["audio"]).name: t["text"] for t in scores["transcripts"]}
    return [word_errors(ref, by_name.get(name, "")) for name, ref in references]


def bootstrap(a, b, samples=2000, seed=1):
    """95% interval of WER(b) - WER(a), resampling utterances (paired)."""
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        words = sum(a[i][1] for i in idx)
        diffs.append((sum(b[i][0] for i in idx) - sum(a[i][0] for i in idx)) / words)
    diffs.sort()
    return diffs[int(0.025 * samples)], diffs[int(0.975 * samples) - 1]


def load(folder):
    scores = {}
    for split in ("test", "test_channel"):
        path = folder / f"{split}.json"
        if not path.exists():
            return None
        scores[split] = json.loads(path.read_text())
    summary = json.loads((folder / "run" / "summary.json").read_text())
    return {"scores": scores, "summary": summary}


def references(manifest):
    with open(manifest) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(pathlib.Path(r["audio_filepath"]).name, r["text"]) for r in rows]


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--out", dest="report", type=pathlib.Path)
    args = parser.parse_args()
    refs = {split: references(args.out / "corpus" / f"{split}.jsonl") for split in ("test", "test_channel")}
    lines = [
        "| model | run | steps | prunable sparsity | test WER clean | vs control (95% CI) | test WER channel | vs control (95% CI) "
        "| test CER clean | test CER channel | projection s | validation WER clean / channel |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    table = {}
    for model in ("ctc", "rnnt", "rnnt-aux"):
        if not (args.out / model).is_dir():
            continue
        runs = [("dense", args.out / model), ("dense, +1,000 steps (control)", args.out / f"{model}-dense-finetuned")]
        runs += [(f"{m}, 80%", args.out / f"{model}-{m}-80") for m in METHODS]
        loaded = [(name, load(folder)) for name, folder in runs if (folder / "test_channel.json").exists()]
        control = next((r for name, r in loaded if name.startswith("dense, +")), None)
        errors = {}
        for name, r in loaded:
            errors[name] = {split: per_utterance(r["scores"][split], refs[split]) for split in refs}
        for name, r in loaded:
            s, t, c = r["summary"], r["scores"]["test"], r["scores"]["test_channel"]
            versus = []
            for split in ("test", "test_channel"):
                if control is None or name.startswith("dense"):
                    versus.append("")
                    continue
                base = errors["dense, +1,000 steps (control)"][split]
                mine = errors[name][split]
                lo, hi = bootstrap(base, mine)
                words = sum(w for _, w in base)
                diff = (sum(e for e, _ in mine) - sum(e for e, _ in base)) / words
                versus.append(f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
            lines.append(f"| {model} | {name} | {s['steps']} | {pct(s.get('sparsity'))} | {pct(t['wer'])} | {versus[0]} | {pct(c['wer'])} | {versus[1]} "
                         f"| {pct(t['cer'])} | {pct(c['cer'])} | {s.get('projection_seconds', 0):.0f} "
                         f"| {pct(s.get('valid_wer'))} / {pct(s.get('valid_wer_channel'))} |")
            table.setdefault(model, {})[name] = {
                "steps": s["steps"], "sparsity": s.get("sparsity"), "test": {k: v for k, v in t.items() if not isinstance(v, (list, dict))},
                "test_channel": {k: v for k, v in c.items() if not isinstance(v, (list, dict))},
                "projection_seconds": s.get("projection_seconds"), "valid_wer": s.get("valid_wer"),
                "valid_wer_channel": s.get("valid_wer_channel"), "versus_control": versus}
    if not table:
        sys.exit(f"speech-compare-prune-report: no scored run under {args.out}")
    text = "\n".join(lines) + "\n"
    (args.report or args.out / "pruning.md").write_text(text)
    (args.out / "pruning-scores.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    print(text)


if __name__ == "__main__":
    main()
