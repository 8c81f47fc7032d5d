#!/usr/bin/env bash
# The speech model on the built-in corpus: install what is missing, build, synthesise and prepare
# the corpus (once, into runs/corpus), then train with a coordinator and two workers.
#
#   scripts/run-speech.sh [extra `csptrain launch` options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product csptrain
csptrain=.build/release/csptrain
if [[ ! -f runs/corpus/shards/valid_channel/shards.json ]]; then
  rm -rf runs/corpus
  "$csptrain" data synth --out runs/corpus --utterances 6000 --seed 1
  for split in train valid valid_channel; do
    "$csptrain" data prepare --manifest "runs/corpus/$split.jsonl" --out "runs/corpus/shards/$split"
  done
fi
run_dir="runs/speech-$(date +%Y%m%d-%H%M%S)"
"$csptrain" launch --workers 2 --config Configs/speech-local.yaml --run-dir "$run_dir" "$@"
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/corpus/valid.jsonl
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/corpus/valid_channel.jsonl
