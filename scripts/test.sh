#!/usr/bin/env bash
# Runs the test suite (unit and integration tests; integration tests start real coordinator and
# worker processes on 127.0.0.1). Installs missing system packages first.
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
# Unit suites side by side; then the integration suites one at a time: they start real
# coordinators, workers and thousands of connections, and on 2 cores, side by side, they starved
# each other's raw clients past their 30 s bounds (three loaded CI runs, 2026-11-29).
swift test --skip-build --skip IntegrationTests
swift test --skip-build --filter IntegrationTests --no-parallel
