#!/usr/bin/env bash
# Issue 16: the inference real-time factor of speech checkpoints, whole utterances and streamed.
#
#   scripts/speech-streaming-rtf.sh CORPUS UTTERANCES RUN...
#
# CORPUS: a corpus folder of `data synth` (its test.jsonl and test/ audio). For each RUN (a run
# folder): `csptrain eval` on the test split (whole utterances, one thread; its real-time
# factor), and, for a unidirectional model, `csptrain transcribe -` fed the first UTTERANCES test
# utterances back to back as 16 kHz 16-bit PCM, read in 100 ms chunks, with the process's wall and
# CPU seconds over the audio's seconds (model loading included). One line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:?usage: scripts/speech-streaming-rtf.sh CORPUS UTTERANCES RUN...}
count=${2:?usage: scripts/speech-streaming-rtf.sh CORPUS UTTERANCES RUN...}
shift 2
csptrain=${CSPTRAIN:-.build/release/csptrain}
pcm=$(mktemp "${TMPDIR:-/tmp}/csptrain-stream-XXXX.pcm")
trap 'rm -f "$pcm" "$pcm.err"' EXIT
python3 -c 'import json,sys; [print(json.loads(l)["audio_filepath"]) for l in list(sys.stdin)[:int(sys.argv[1])]]' "$count" \
  < "$corpus/test.jsonl" | while read -r file; do
  sox -V1 "$corpus/$file" -t raw -r 16000 -b 16 -e signed-integer -c 1 -
done > "$pcm"
audio=$(python3 -c "import os,sys; print(os.path.getsize(sys.argv[1]) / 32000)" "$pcm")
printf '%-40s %-8s %10s %14s %18s %18s\n' run encoder "test WER" "RTF whole" "RTF streamed wall" "RTF streamed CPU"
for run in "$@"; do
  if [[ ! -f $run/config.yaml ]]; then
    echo "speech-streaming-rtf: $run is not a run folder (it has no config.yaml)" >&2
    exit 2
  fi
  bidirectional=True
  grep -q "bidirectional: false" "$run/config.yaml" && bidirectional=False
  if ! scores=$("$csptrain" eval --checkpoint "$run" --manifest "$corpus/test.jsonl" --json 2> "$pcm.err"); then
    echo "speech-streaming-rtf: csptrain eval failed on $run:" >&2
    cat "$pcm.err" >&2
    exit 1
  fi
  read -r wer rtf < <(python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f%%" % (100 * d["wer"]), "%.4f" % d["real_time_factor"])' <<< "$scores")
  wall=- cpu=-
  if [[ $bidirectional == False ]]; then
    timing=$(mktemp "${TMPDIR:-/tmp}/csptrain-time-XXXX")
    /usr/bin/time -f "%e %U %S" -o "$timing" "$csptrain" transcribe - --checkpoint "$run" < "$pcm" > /dev/null 2> /dev/null
    read -r w u s < "$timing"
    rm -f "$timing"
    wall=$(python3 -c "print('%.4f' % ($w / $audio))")
    cpu=$(python3 -c "print('%.4f' % (($u + $s) / $audio))")
  fi
  printf '%-40s %-8s %10s %14s %18s %18s\n' "$run" "$([[ $bidirectional == False ]] && echo uni || echo bi)" "$wer" "$rtf" "$wall" "$cpu"
done
echo "($count test utterances, $audio s of audio streamed; eval on the whole test split)"
