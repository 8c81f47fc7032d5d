#!/usr/bin/env bash
# Makes the Python environment the tests use to check exported models (numpy, the
# `safetensors` package and onnxruntime from PyPI) in .build/pyenv, if it is missing, and prints
# its python.
#   export CSPTRAIN_PYTHON=$(scripts/python-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
env=.build/pyenv
if ! "$env/bin/python" -c "import numpy, safetensors, onnxruntime" 2>/dev/null; then
  echo "python-env: installing numpy, safetensors and onnxruntime into $env" >&2
  mkdir -p .build
  python3 -m venv "$env" >&2
  "$env/bin/pip" install --quiet --disable-pip-version-check numpy safetensors onnxruntime >&2
fi
echo "$PWD/$env/bin/python"
