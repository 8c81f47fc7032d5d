#!/usr/bin/env bash
# Makes the Python environment the tests use, in .build/pyenv, if it is missing, and prints its
# python: numpy, safetensors and onnxruntime (exported models), prometheus_client (parsing the
# coordinator's /metrics) and selenium (driving Debian's chromium-driver for the live page's test).
#   export CSPTRAIN_PYTHON=$(scripts/python-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
env=.build/pyenv
if ! "$env/bin/python" -c "import numpy, safetensors, onnxruntime, prometheus_client, selenium" 2>/dev/null; then
  echo "python-env: installing numpy, safetensors, onnxruntime, prometheus_client and selenium into $env" >&2
  mkdir -p .build
  python3 -m venv "$env" >&2
  "$env/bin/pip" install --quiet --disable-pip-version-check numpy safetensors onnxruntime prometheus_client selenium >&2
fi
echo "$PWD/$env/bin/python"
