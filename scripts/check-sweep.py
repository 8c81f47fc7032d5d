#!/usr/bin/env python3
"""Checks a pruning sweep's output folder: results.json has every record and field the issue
names, each method reached its target, CSP carries its paired-bootstrap comparisons, and the
report and plot exist. Exits non-zero with the reasons otherwise."""
import argparse
import json
import os
import sys

FIELDS = ["method", "target_sparsity", "wer", "cer", "wer_channel", "sparsity", "sparsity_overall",
          "layer_sparsity", "params", "encoded_bytes", "wall_seconds"]
UNSTRUCTURED = {"csp", "csp-activations", "admm-magnitude", "gradual-magnitude", "one-shot-magnitude", "taylor", "wanda",
                "one-shot-reconstruction"}

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("--methods", type=int, required=True, help="methods expected at every target")
parser.add_argument("--targets", type=float, nargs="+", required=True)
parser.add_argument("--snapshot-methods", type=int, default=0,
                    help="methods expected with a snapshot at every target (one run to every size)")
args = parser.parse_args()

problems = []
path = os.path.join(args.folder, "results.json")
records = json.load(open(path))
if sum(r["method"] == "dense" for r in records) != 1:
    problems.append("no single dense record")
for t in args.targets:
    # The runs that stand for their method (not the tuning setting left out, not the extra seeds).
    at = [r for r in records if r["method"] != "dense" and abs(r["target_sparsity"] - t) < 1e-9 and r.get("primary", True) is not False]
    if len(at) != args.methods:
        problems.append(f"{len(at)} records at target {t}, expected {args.methods}")
snapshots = [r for r in records if r.get("snapshot")]
if len(snapshots) != args.snapshot_methods * len(args.targets):
    problems.append(f"{len(snapshots)} snapshot records, expected {args.snapshot_methods} methods x {len(args.targets)} sizes")
if args.snapshot_methods and "## One run, every size" not in open(os.path.join(args.folder, "results.md")).read():
    problems.append("results.md has no 'One run, every size' section")
for r in records:
    name = f'{r["method"]} at {r["target_sparsity"]}' + (" (snapshot)" if r.get("snapshot") else "")
    missing = [f for f in FIELDS if f not in r]
    if missing:
        problems.append(f"{name}: missing {missing}")
        continue
    if r["method"] == "dense":
        continue
    t, s = r["target_sparsity"], r["sparsity"]
    if r["method"] in UNSTRUCTURED and abs(s - t) > 0.005:
        problems.append(f"{name}: sparsity {s:.4f}, more than 0.5 points from the target")
    if r["method"] == "structured" and abs(s - t) > 0.05:
        problems.append(f"{name}: sparsity {s:.4f} far from N:M's {t}")
    if r["method"] == "low-rank" and s < t - 1e-9:
        problems.append(f"{name}: stored-parameter sparsity {s:.4f} below the target")
    if not (0 <= r["wer"] <= 5 and 0 <= r["wer_channel"] <= 5):
        problems.append(f"{name}: implausible WER {r['wer']}, {r['wer_channel']}")
    if r["method"] == "csp" and r.get("primary", True) is not False:
        for key in ["delta_wer_vs_gradual", "delta_wer_vs_admm"]:
            d = r.get(key)
            if not d:
                problems.append(f"{name}: no {key}")
                continue
            for side in ["clean", "channel"]:
                c = d[side]
                if not (c["ci_low"] <= c["delta"] + 1e-12 and c["delta"] <= c["ci_high"] + 1e-12):
                    problems.append(f"{name}: {key}.{side} interval does not hold its estimate")
    for key, value in [("wer_interval", r["wer"]), ("wer_channel_interval", r["wer_channel"])]:
        i = r.get(key)
        if not i:
            problems.append(f"{name}: no {key} (the run's own bootstrap interval)")
        elif not (i["low"] <= value + 1e-12 and value <= i["high"] + 1e-12):
            problems.append(f"{name}: {key} [{i['low']}, {i['high']}] does not hold {value}")
for f in ["results.md", "wer-vs-sparsity.svg"]:
    if not os.path.getsize(os.path.join(args.folder, f)):
        problems.append(f"{f} is empty")
if problems:
    print("sweep check failed:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"sweep check: {len(records)} records in {path} are complete and on target")
