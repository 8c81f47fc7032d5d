#!/usr/bin/env bash
# Kills and restarts a coordinator again and again under two long-lived workers, and checks that
# both join every new coordinator within 30 s. A long experiment, outside `swift test`.
#
#   scripts/restart-stress.sh [ROUNDS] [tls]      (default 30 rounds, plain TCP)
#
# Each round starts the coordinator (--resume auto, the same run folder), waits until both workers
# have joined it, lets it train 0-1 s, kills it with SIGKILL and waits 1 s. At the end it prints
# how often the workers saw each way a connection ended (docs/security.md explains them).
# CSPTRAIN: the binary (default .build/debug/csptrain). Exit 1 at the first round a worker misses,
# leaving the processes running for a look (ss -tanp, gdb -p).
set -euo pipefail
ROUNDS=${1:-30}
MODE=${2:-tcp}
BIN=$(realpath "${CSPTRAIN:-.build/debug/csptrain}")
D=$(mktemp -d "${TMPDIR:-/tmp}/csptrain-restart-stress-XXXX")
cd "$D"
echo "folder $D"
cat > run.yaml <<'YAML'
seed: 1
steps: 100000
model: {kind: mlp, input_dim: 32, hidden_dim: 64, classes: 8}
data: {kind: synthetic, examples: 16384, noise: 1.5}
coordinator: {global_batch: 256, micro_batches: 8, step_deadline_seconds: 3}
checkpoint: {every_steps: 500000, keep: 3}
YAML
printf 'ab%.0s' {1..32} > token
PORT=$((20000 + RANDOM % 12000))
C_TLS=() W_TLS=()
if [ "$MODE" = tls ]; then
  "$BIN" certs init --out tls > /dev/null 2>&1
  URL=tls+tcp://127.0.0.1:$PORT LISTEN=tls+tcp://0.0.0.0:$PORT
  C_TLS=(--tls tls --require-client-cert) W_TLS=(--tls tls)
else
  URL=tcp://127.0.0.1:$PORT LISTEN=tcp://0.0.0.0:$PORT
fi
WORKERS=()
for w in 1 2; do
  "$BIN" worker --connect "$URL" "${W_TLS[@]}" --token-file token --name "w$w" --patience 600 > "w$w.log" 2>&1 &
  WORKERS+=($!)
done
for r in $(seq 1 "$ROUNDS"); do
  "$BIN" coordinator --listen "$LISTEN" "${C_TLS[@]}" --config run.yaml --run-dir run --token-file token --resume auto \
    > "c$r.out" 2> "c$r.log" &
  coordinator=$!
  joined=0
  for _ in $(seq 1 300); do
    if grep -q "worker=w1" "c$r.log" && grep -q "worker=w2" "c$r.log"; then joined=1; break; fi
    sleep 0.1
  done
  if [ $joined = 0 ]; then
    echo "round $r: a worker did not join within 30 s (coordinator $coordinator, workers ${WORKERS[*]}, port $PORT)"
    ss -tanp | grep ":$PORT" || true
    exit 1
  fi
  sleep "0.$((RANDOM % 10))"
  kill -9 "$coordinator"; wait "$coordinator" 2> /dev/null || true
  sleep 1
  echo "round $r: both workers joined"
done
kill "${WORKERS[@]}" 2> /dev/null || true
wait 2> /dev/null || true
count() { cat w1.log w2.log | grep -c "$1" || true; }
echo "$ROUNDS rounds over $MODE, both workers joined every coordinator. Seen in the workers' logs:"
echo "  connection closed (nng noticed):              $(count 'connection to the coordinator closed; dialing')"
echo "  connection gone in the kernel, open in nng:   $(count 'no longer established in the kernel')"
echo "  restarted in place (nng could not close):     $(count 'Restarting this worker in place')"
echo "  requests unanswered through a timeout:        $(count 'no answer from the coordinator for')"
