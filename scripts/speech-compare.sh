#!/usr/bin/env bash
# Issue 16: CTC and the RNN transducer side by side on recipe 2's corpus (espeak-ng + flite,
# validation and test spoken by voices training never hears), the same budget (4,000 steps,
# 2 workers), scored on the held-out-voice test split, clean and channel-degraded.
#
#   scripts/speech-compare.sh OUT [model ...]     models: ctc rnnt rnnt-aux (default ctc rnnt)
#
# rnnt is the plain transducer the comparison of 2026-11-30 trained; rnnt-aux is the main job's
# transducer with its auxiliary CTC loss (model.rnnt.ctc_weight 0.3), at the same budget.
#
# Resumable: the corpus is made once (OUT/corpus), a run that stopped resumes from its last
# checkpoint, and a model whose scores exist is skipped. Writes OUT/<model>/run (the run folder)
# and OUT/<model>/test.json, test_channel.json (`csptrain eval --json`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/speech-compare.sh OUT [ctc] [rnnt]}
shift
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(ctc rnnt)
csptrain=${CSPTRAIN:-.build/release/csptrain}
corpus="$out/corpus"
splits=(train valid valid_channel valid_seen test test_channel)
if [[ ! -f "$corpus/shards/test_channel/shards.json" ]]; then
  rm -rf "$corpus"
  "$csptrain" data synth --out "$corpus" --recipe 2 --utterances 6000 --test-utterances 600 --seed 1
  for split in "${splits[@]}"; do
    "$csptrain" data prepare --manifest "$corpus/$split.jsonl" --out "$corpus/shards/$split"
  done
fi
for model in "${models[@]}"; do
  extra=()
  case $model in
    ctc) config=Configs/speech-local.yaml ;;
    # The comparison of 2026-11-30 trained the plain transducer; the main job's configuration
    # has added an auxiliary CTC loss since (docs/runs/speech-aux-ctc-2026-12-01).
    rnnt) config=Configs/rnnt-local.yaml; extra=(--set model.rnnt.ctc_weight=0) ;;
    rnnt-aux) config=Configs/rnnt-local.yaml ;;
    *) echo "speech-compare: unknown model '$model' (expected ctc, rnnt or rnnt-aux)" >&2; exit 2 ;;
  esac
  run="$out/$model/run"
  [[ -f "$out/$model/test_channel.json" ]] && continue
  mkdir -p "$out/$model"
  resume=()
  [[ -d "$run" ]] && resume=(--resume auto)
  "$csptrain" launch --workers 2 --config "$config" --run-dir "$run" "${resume[@]}" "${extra[@]}" --steps 4000 \
    --set "data.train=$corpus/shards/train" --set "data.valid=$corpus/shards/valid" \
    --set "data.valid_channel=$corpus/shards/valid_channel" --set "data.valid_seen=$corpus/shards/valid_seen"
  for split in test test_channel; do
    "$csptrain" eval --checkpoint "$run" --manifest "$corpus/$split.jsonl" --json > "$out/$model/$split.json.part"
    mv "$out/$model/$split.json.part" "$out/$model/$split.json"
  done
done
