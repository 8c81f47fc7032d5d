#!/usr/bin/env bash
# The pruning sweep's smoke test: a tiny corpus with a test split, a tiny dense model, every
# method at 50% and 90%, then a check of results.json (fields, targets reached, CSP's intervals)
# and of resuming (a second invocation trains nothing). About 3 minutes on 2 cores.
#
#   scripts/smoke-sweep.sh [path/to/csptrain]      (default: .build/debug/csptrain)
set -euo pipefail
cd "$(dirname "$0")/.."
csptrain=${1:-.build/debug/csptrain}
out=runs/smoke-sweep
rm -rf "$out"
"$csptrain" data synth --out "$out/corpus" --utterances 48 --test-utterances 10 --seed 5 --json > /dev/null
for split in train valid; do
  "$csptrain" data prepare --manifest "$out/corpus/$split.jsonl" --out "$out/corpus/shards/$split" --json > /dev/null
done
"$csptrain" experiment pruning --config Configs/experiment-smoke.yaml --out "$out/sweep"
# Resuming a finished sweep reuses every run.
before=$(ls -l --time-style=+%s "$out"/sweep/runs/*/summary.json | md5sum)
"$csptrain" experiment pruning --config Configs/experiment-smoke.yaml --out "$out/sweep" 2> "$out/resume.log"
after=$(ls -l --time-style=+%s "$out"/sweep/runs/*/summary.json | md5sum)
[[ "$before" == "$after" ]] || { echo "smoke sweep: resuming retrained runs"; exit 1; }
python3 scripts/check-sweep.py "$out/sweep" --methods 10 --targets 0.5 0.9 --snapshot-methods 7
# `csptrain plot` draws the sweep and one of its runs.
"$csptrain" plot "$out/sweep" --out "$out/plot-sweep.svg" > /dev/null
"$csptrain" plot "$(ls -d "$out"/sweep/runs/*/ | head -1)" --out "$out/plot-run.svg" > /dev/null
grep -q "<polyline" "$out/plot-sweep.svg" && grep -q "<polyline" "$out/plot-run.svg" || { echo "smoke sweep: a plot has no curve"; exit 1; }
