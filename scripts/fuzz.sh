#!/usr/bin/env bash
# Fuzzes the decoders csptrain runs on network bytes with libFuzzer, longer than CI's seeded
# harness (Tests/FuzzingTests). Outside CI.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      default: 300 s, every target
#
# Builds csptrain-fuzz with -sanitize=fuzzer,address into .build-fuzz, copies the committed corpus
# into .build-fuzz/corpus/<target> (libFuzzer adds the inputs it keeps there), and runs each target
# with its field-aware mutator mixed with libFuzzer's own. Crashes are written to
# .build-fuzz/crashes/<target>/; libFuzzer replays one with `CSPTRAIN_FUZZ_TARGET=<target> .build-fuzz/debug/csptrain-fuzz FILE`,
# and `swift run csptrain-fuzz replay <target> .build-fuzz/corpus/<target>` lists the outcomes a corpus reaches.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request weights rice encodings)

echo "::: building csptrain-fuzz with libFuzzer and AddressSanitizer"
swift build -j "${FUZZ_BUILD_JOBS:-2}" --build-path .build-fuzz --product csptrain-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DLIBFUZZER
binary=.build-fuzz/debug/csptrain-fuzz

for target in "${targets[@]}"; do
  corpus=.build-fuzz/corpus/$target
  crashes=.build-fuzz/crashes/$target
  mkdir -p "$corpus" "$crashes"
  cp -n Tests/FuzzingTests/Corpus/"$target"/*.bin "$corpus"/
  echo "::: $target: ${seconds} s"
  # rss_limit_mb: memory must stay bounded; max_len: past a gradient chunk's size. detect_leaks=0:
  # the request target keeps a run state machine between inputs on purpose (memory it holds is
  # bounded by the machine's own limits and checked by rss_limit_mb), which LeakSanitizer's
  # per-input check would report.
  ASAN_OPTIONS=detect_leaks=0 CSPTRAIN_FUZZ_TARGET=$target "$binary" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -detect_leaks=0 -max_len=65536 -artifact_prefix="$crashes/" -print_final_stats=1 2>&1 | tail -n 12
done
