#!/usr/bin/env bash
# The PyTorch reference for `csptrain bench speech`, in its own virtual environment.
#
#   scripts/bench-pytorch.sh --install        create .venv-torch and install torch into it (once)
#   scripts/bench-pytorch.sh [bench options]  run scripts/bench_pytorch.py (see --help)
#
# torch is large (PyPI's default wheel pulls several GB of CUDA libraries), so nothing else in
# this project installs it: `csptrain bench speech` runs this script when .venv-torch exists and
# says how to create it when it does not. A local wheel directory (PIP_FIND_LINKS) is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CSPTRAIN_TORCH_VENV:-.venv-torch}"
if [[ "${1:-}" == "--install" ]]; then
    python3 -m venv "$venv"
    # A CPU-only wheel avoids several GB of CUDA libraries: a local one (PIP_FIND_LINKS) first,
    # then PyTorch's CPU index, then PyPI's default wheel as the last resort.
    local_wheel=$(ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -1 || true)
    if [[ -n "$local_wheel" ]]; then
        "$venv/bin/pip" install --quiet "$local_wheel" numpy
    else
        "$venv/bin/pip" install --quiet numpy && "$venv/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu \
            || "$venv/bin/pip" install --quiet torch numpy
    fi
    "$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "installed in '"$venv"'")'
    exit 0
fi
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "bench-pytorch: torch is not installed in $venv; run scripts/bench-pytorch.sh --install first" >&2
    exit 3
fi
exec "$venv/bin/python" scripts/bench_pytorch.py "$@"
