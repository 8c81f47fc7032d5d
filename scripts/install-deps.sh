#!/usr/bin/env bash
# Installs the Debian packages csptrain builds against, if any is missing.
# Runs apt-get as root (directly, or through sudo when available).
set -euo pipefail

packages=(
  libnng-dev        # nng: the coordinator/worker transport
  libopenblas-dev   # CBLAS matrix products
  libsndfile1-dev   # reading WAV and FLAC
  libsoxr-dev       # band-limited resampling
  libfftw3-dev      # FFTs for log-mel features
  espeak-ng         # the built-in spoken corpus
  flite             # the built-in spoken corpus (recipe 2): voices kal16, awb, rms, slt, built in
  sox               # the built-in spoken corpus (recipe 2): tempo and pitch perturbation
  python3-venv      # the tests' Python environment (numpy, safetensors: scripts/python-env.sh)
  # The live page's browser test (Tests/IntegrationTests/ObserveTests.swift, through selenium):
  # about 1.5 minutes to install on a fresh machine.
  chromium
  chromium-driver
  iproute2          # scripts/netns-test.sh: network namespaces, veth links, tc tbf
  nftables          # scripts/netns-test.sh: packet loss on a link
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all packages present (${packages[*]})"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
