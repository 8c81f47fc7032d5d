#!/usr/bin/env bash
# Builds the C peers of `csptrain bench --only step` into .build/bench-peers/:
#   nng_star  the raw star (needs libnng-dev: scripts/install-deps.sh)
#   nng_stream_star  the same star on nng byte streams (the chunk streams' design; run by hand)
#   mpi_step  MPI_Allreduce + SGD (needs mpicc: apt-get install openmpi-bin libopenmpi-dev);
#             skipped with a message when mpicc is absent, which the benchmark then reports.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/.build/bench-peers"
mkdir -p "$out"
flags=(-O2 -std=gnu11 -Wall -Wextra)

cc "${flags[@]}" -o "$out/nng_star" "$here/nng_star.c" -lnng -lpthread
echo "bench-peers: built $out/nng_star"
cc "${flags[@]}" -o "$out/nng_stream_star" "$here/nng_stream_star.c" -lnng -lpthread
echo "bench-peers: built $out/nng_stream_star"

if command -v mpicc >/dev/null; then
  mpicc "${flags[@]}" -o "$out/mpi_step" "$here/mpi_step.c"
  echo "bench-peers: built $out/mpi_step"
else
  rm -f "$out/mpi_step"
  echo "bench-peers: mpicc not found, MPI peer skipped (apt-get install openmpi-bin libopenmpi-dev)"
fi
