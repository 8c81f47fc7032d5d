#!/usr/bin/env bash
# The main job on a fresh Debian machine: install what is missing, build, and train a model
# with a coordinator and two workers on this machine, on the built-in data set.
#
#   scripts/run-local.sh [extra `csptrain launch` options]
#
# The run folder is runs/local-<time>; its summary.json says how it went.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product csptrain
run_dir="runs/local-$(date +%Y%m%d-%H%M%S)"
exec .build/release/csptrain launch --workers 2 --steps 200 --config Configs/local.yaml --run-dir "$run_dir" "$@"
