#!/usr/bin/env python3
"""Issue 16's side-by-side table from scripts/speech-compare.sh's folder.

    scripts/speech-compare-report.py OUT [--out OUT/results.md]     (also writes OUT/scores.json)

For each model folder (OUT/ctc, OUT/rnnt, OUT/rnnt-aux) with scores: the held-out-voice test split's WER and
CER, clean and channel-degraded (`csptrain eval --json`), the inference real-time factor, the
run's steps and training wall time (metrics.jsonl), and the validation WER of each kind at every
evaluation: held-out voices (valid, valid_channel) and training voices (valid_seen), with the
first step and wall time at which the scored validation met the goal (≤ 8% clean, ≤ 15%
channel-degraded). Standard library only.
"""
import argparse
import json
import pathlib
import sys


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def model_rows(folder):
    run = folder / "run"
    scores = {}
    for split in ("test", "test_channel"):
        path = folder / f"{split}.json"
        if not path.exists():
            return None
        scores[split] = json.loads(path.read_text())
    metrics = load_jsonl(run / "metrics.jsonl")
    steps = [m for m in metrics if "step" in m]
    evals = [m for m in steps if m.get("valid_wer") is not None]
    goal = next((m for m in evals if m["valid_wer"] <= 0.08 and (m.get("valid_wer_channel") or 1) <= 0.15), None)
    return {"scores": scores, "last": steps[-1] if steps else {}, "evals": evals, "goal": goal}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--out", dest="report", type=pathlib.Path)
    args = parser.parse_args()
    rows = {}
    for model in ("ctc", "rnnt", "rnnt-aux"):
        if (args.out / model).is_dir():
            r = model_rows(args.out / model)
            if r is None:
                print(f"{model}: no scores yet in {args.out / model} (run scripts/speech-compare.sh)", file=sys.stderr)
            else:
                rows[model] = r
    if not rows:
        sys.exit(f"speech-compare-report: no scored model under {args.out}")
    lines = [
        "| model | steps | training wall time | test WER clean | test CER clean | test WER channel | test CER channel | real-time factor (eval, 1 thread) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, r in rows.items():
        t, c, last = r["scores"]["test"], r["scores"]["test_channel"], r["last"]
        lines.append(f"| {model} | {last.get('step', 'n/a')} | {last.get('wall_seconds', 0) / 60:.1f} min | {pct(t.get('wer'))} | {pct(t.get('cer'))} "
                     f"| {pct(c.get('wer'))} | {pct(c.get('cer'))} | {t.get('real_time_factor', float('nan')):.4f} |")
    lines += ["", "Validation during training (the first 200 utterances of each set):", "",
              "| model | step | wall time | held-out voices clean | held-out voices channel | training voices (valid_seen) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for model, r in rows.items():
        for m in r["evals"]:
            lines.append(f"| {model} | {m['step']} | {m['wall_seconds'] / 60:.1f} min | {pct(m.get('valid_wer'))} | {pct(m.get('valid_wer_channel'))} | {pct(m.get('valid_wer_seen'))} |")
    lines.append("")
    for model, r in rows.items():
        g = r["goal"]
        lines.append(f"- {model}: validation first met the goal (≤ 8% clean, ≤ 15% channel) "
                     + (f"at step {g['step']}, {g['wall_seconds'] / 60:.1f} min." if g else "at no evaluation."))
    text = "\n".join(lines) + "\n"
    (args.report or args.out / "results.md").write_text(text)
    # The scores without each utterance's transcript, small enough to commit beside the table.
    scores = {model: {split: {k: v for k, v in r["scores"][split].items() if not isinstance(v, (list, dict))}
                      for split in ("test", "test_channel")} for model, r in rows.items()}
    (args.out / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    print(text)


if __name__ == "__main__":
    main()
