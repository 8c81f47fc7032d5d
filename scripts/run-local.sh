#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is missing, build, synthesise and prepare
# the built-in spoken corpus (once, into runs/voices: recipe 2, espeak-ng and flite, validation
# and test spoken by voices training never hears), then train the RNN transducer with a
# coordinator and two workers on this machine, and score it on the held-out-voice test split.
#
#   scripts/run-local.sh [extra `csptrain launch` options]     e.g. --steps 300 for a short try
#
# Takes about 30 minutes on 2 cores (build 5, corpus 2, training 23, scoring 1). The run folder is
# runs/local-<time>: summary.json (valid_wer, valid_wer_channel: held-out voices;
# valid_wer_seen: training voices), metrics.jsonl, checkpoints. A few-second smoke test of the
# machinery instead:
#   .build/release/csptrain launch --config Configs/local.yaml --run-dir runs/mlp-$(date +%s)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product csptrain
csptrain=.build/release/csptrain
if [[ ! -f runs/voices/shards/test_channel/shards.json ]]; then
  rm -rf runs/voices
  "$csptrain" data synth --out runs/voices --utterances 6000 --test-utterances 600 --seed 1
  for split in train valid valid_channel valid_seen test test_channel; do
    "$csptrain" data prepare --manifest "runs/voices/$split.jsonl" --out "runs/voices/shards/$split"
  done
fi
run_dir="runs/local-$(date +%Y%m%d-%H%M%S)"
"$csptrain" launch --workers 2 --config Configs/rnnt-local.yaml --run-dir "$run_dir" "$@"
echo "test set, held-out voices, clean:"
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/voices/test.jsonl
echo "test set, held-out voices, channel-degraded:"
"$csptrain" eval --checkpoint "$run_dir" --manifest runs/voices/test_channel.jsonl
