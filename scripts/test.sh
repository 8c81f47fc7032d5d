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
swift test --skip-build "$@"
