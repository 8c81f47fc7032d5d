#!/usr/bin/env bash
# Issue 16 item 4, the pruning comparison: each model of scripts/speech-compare.sh, pruned to 80%
# with one projection method, fine-tuned for 1,000 steps on 2 workers from its dense run, scored on
# the held-out-voice test split, clean and channel-degraded.
#
#   scripts/speech-compare-prune.sh OUT [method [model ...]]
#
# OUT is speech-compare.sh's folder (OUT/corpus, OUT/<model>/run must exist). method defaults to
# one-shot-reconstruction with the setting issue 14's sweep chose for it at 80% (learning rate
# 3e-4, damping 0.01, no swap rounds: docs/runs/pruning-sweep-2026-11-29), the best method there;
# csp-activations runs with its chosen setting too, and `dense` fine-tunes the same steps without
# pruning (the control: the pruned runs train 1,000 steps more than the dense model). Models: ctc
# rnnt rnnt-aux (default ctc rnnt); rnnt-aux starts from the transducer trained with the auxiliary
# CTC loss and keeps training its CTC head while fine-tuning (Configs/prune-rnnt.yaml's
# model.rnnt.ctc_weight 0.3: without it, the same 1,000 steps took the dense model from 4.85% to
# 8.15% test WER, with it to 7.49%); rnnt, trained without the head, fine-tunes without one.
# Resumable like speech-compare.sh. Writes OUT/<model>-<method>-80/run (the control:
# OUT/<model>-dense-finetuned/run) and its test.json, test_channel.json (`csptrain eval --json`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/speech-compare-prune.sh OUT [method [model ...]]}
method=${2:-one-shot-reconstruction}
shift $(( $# < 2 ? $# : 2 ))
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(ctc rnnt)
csptrain=${CSPTRAIN:-.build/release/csptrain}
corpus="$out/corpus"
case $method in
  one-shot-reconstruction)
    setting=(pruning.method=one-shot-reconstruction pruning.damping=0.01 pruning.swaps=0 pruning.restarts=0
             optimizer.learning_rate=0.0003) ;;
  csp-activations)
    setting=(pruning.method=csp pruning.operator=activations pruning.solver=niht pruning.iterations=10
             pruning.warm_start=diagonal pruning.swaps=0 pruning.restarts=0 pruning.rho=300
             optimizer.learning_rate=0.0003) ;;
  # The control: the same 1,000 steps of fine-tuning at the same learning rate, nothing pruned.
  dense)
    setting=(pruning.method=none optimizer.learning_rate=0.0003) ;;
  *) echo "speech-compare-prune: no sweep setting for method '$method' (one-shot-reconstruction, csp-activations or dense)" >&2
     exit 2 ;;
esac
for model in "${models[@]}"; do
  model_sets=()
  case $model in
    ctc) config=Configs/prune-speech.yaml ;;
    # The plain transducer has no CTC head to keep training (the comparison of 2026-11-30).
    rnnt) config=Configs/prune-rnnt.yaml; model_sets=(model.rnnt.ctc_weight=0) ;;
    rnnt-aux) config=Configs/prune-rnnt.yaml ;;
    *) echo "speech-compare-prune: unknown model '$model' (expected ctc, rnnt or rnnt-aux)" >&2; exit 2 ;;
  esac
  dense="$out/$model/run"
  [[ -f "$dense/summary.json" ]] || { echo "speech-compare-prune: no finished dense run at $dense (run scripts/speech-compare.sh $out $model first)" >&2; exit 2; }
  dir="$out/$model-$method-80"
  [[ $method == dense ]] && dir="$out/$model-dense-finetuned"
  run="$dir/run"
  [[ -f "$dir/test_channel.json" ]] && continue
  mkdir -p "$dir"
  resume=()
  [[ -d "$run" ]] && resume=(--resume auto)
  sets=(init_from="$dense" steps=1000 pruning.schedule.kind=cubic pruning.schedule.initial=0
        pruning.schedule.target=0.8 pruning.schedule.start_step=0 pruning.schedule.end_step=666
        pruning.schedule.interval=111 checkpoint.every_steps=1000 coordinator.eval_every_steps=1000
        "data.train=$corpus/shards/train" "data.valid=$corpus/shards/valid"
        "data.valid_channel=$corpus/shards/valid_channel" "data.valid_seen=$corpus/shards/valid_seen"
        "${setting[@]}" "${model_sets[@]}")
  args=()
  for s in "${sets[@]}"; do args+=(--set "$s"); done
  "$csptrain" launch --workers 2 --config "$config" --run-dir "$run" "${resume[@]}" "${args[@]}"
  for split in test test_channel; do
    "$csptrain" eval --checkpoint "$run" --manifest "$corpus/$split.jsonl" --json > "$dir/$split.json.part"
    mv "$dir/$split.json.part" "$dir/$split.json"
  done
done
