#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is missing, build, synthesise and prepare
# the built-in spoken corpus (once, into runs/corpus), then train the speech model with a
# coordinator and two workers on this machine, and score the result.
#
#   scripts/run-local.sh [extra `csptrain launch` options]     e.g. --steps 300 for a short try
#
# Takes about 35 minutes on 2 cores (corpus 3, training 30, scoring 1). The corpus has a held-out
# test split (test, test_channel) for `csptrain experiment pruning`. The run folder is
# runs/local-<time>: summary.json (valid_wer, valid_wer_channel), metrics.jsonl, checkpoints.
# A few-second smoke test of the machinery instead:
#   .build/release/csptrain launch --config Configs/local.yaml --run-dir runs/mlp-$(date +%s)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product csptrain
csptrain=.build/release/csptrain
if [[ ! -f runs/corpus/shards/test_channel/shards.json ]]; then
  rm -rf runs/corpus
  # Recipe 1 (espeak-ng only), the corpus the README's model was trained and scored on, and the
  # pruning sweep's (Configs/experiment-pruning.yaml). Recipe 2 (espeak-ng + flite, held-out
  # voices; `data synth`'s default) becomes the main job's corpus when the model is retrained on it.
  "$csptrain" data synth --out runs/corpus --recipe 1 --utterances 6000 --test-utterances 600 --seed 1
  for split in train valid valid_channel test test_channel; do
    "$csptrain" data prepare --manifest "runs/corpus/$split.jsonl" --out "runs/corpus/shards/$split"
  done
fi
run_dir="runs/local-$(date +%Y%m%d-%H%M%S)"
"$csptrain" launch --workers 2 --config Configs/speech-local.yaml --run-dir "$run_dir" "$@"
echo "clean validation set:"
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/corpus/valid.jsonl
echo "channel-degraded validation set:"
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/corpus/valid_channel.jsonl
