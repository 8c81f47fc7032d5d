#!/usr/bin/env bash
# Runs the test suite (unit and integration tests; integration tests start real coordinator and
# worker processes on 127.0.0.1). Installs missing system packages first.
#
#   scripts/test.sh                    every suite
#   scripts/test.sh --filter NAME ...  passed to `swift test --skip-build`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# numpy, safetensors and onnxruntime, for the tests that load exported models in Python.
CSPTRAIN_PYTHON=$(scripts/python-env.sh)
export CSPTRAIN_PYTHON
swift build --build-tests
if [[ $# -gt 0 ]]; then
  swift test --skip-build "$@"
  exit
fi

# The suites run from the test bundle itself, not through `swift test`: swift test holds a test
# process's output until the process exits, so a suite that never ends left a CI log that stopped
# at the previous phase, with nothing to say which test hung (2026-11-30). Run directly, each test
# is printed as it starts, and each phase has a hard bound: past it, the processes still running
# are listed with their threads' stacks, then killed, and the phase fails.
if grep -rlq "^import XCTest" Tests; then
  echo "error: $(grep -rl '^import XCTest' Tests | head -1) uses XCTest; scripts/test.sh runs swift-testing suites only" >&2
  exit 1
fi
bundle="$(swift build --show-bin-path)/csptrainPackageTests.xctest"
[[ -t 1 ]] || export NO_COLOR=1

source scripts/bounded.sh

# Unit suites side by side; then the integration suites one at a time: they start real
# coordinators, workers and thousands of connections, and on 2 cores, side by side, they starved
# each other's raw clients past their 30 s bounds (three loaded CI runs, 2026-11-29).
bounded 900 "unit tests" "$bundle" --testing-library swift-testing --skip IntegrationTests
bounded 2400 "integration tests" "$bundle" --testing-library swift-testing --filter IntegrationTests --no-parallel
