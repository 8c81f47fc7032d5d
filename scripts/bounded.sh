# Sourced by scripts/test.sh (bash).

# bounded SECONDS NAME COMMAND...: runs COMMAND in a session of its own; past SECONDS, prints
# what is still running there and where its threads wait (gdb's stacks when gdb is installed),
# kills every process of the session and fails.
group=""
# Foundation starts every child process in a process group of its own, so the tests' processes
# are found by session (setsid below), not by process group.
kill_session() {
  local tries
  for tries in 1 2 3 4 5; do
    pkill -KILL -s "$1" 2>/dev/null || return 0
    sleep 0.2
  done
}
trap '[[ -n $group ]] && kill_session "$group"; exit 130' INT TERM
bounded() {
  local seconds=$1 name=$2
  shift 2
  set +m  # without job control, setsid execs in place and $! is the new session's leader
  setsid "$@" &
  local pid=$!
  group=$pid
  (
    # One-second naps, not one long sleep: an orphaned `sleep` would hold CI's output open.
    for ((waited = 0; waited < seconds; waited++)); do
      sleep 1
      kill -0 "$pid" 2>/dev/null || exit 0
    done
    echo "::: $name: still running after $seconds s. The test printed last as 'started' above is the one that hangs. Processes left:"
    ps -o pid,ppid,etime,stat,wchan:24,args --forest --sid "$pid" | cut -c1-240 || true
    echo "::: $name: where the threads of process $pid wait"
    local stacks=""
    if command -v gdb > /dev/null; then
      stacks=$(timeout 120 gdb -p "$pid" -batch -ex "thread apply all bt 16" 2>&1 | grep -E "^Thread|^#" | head -600 || true)
    fi
    if [[ -n $stacks ]]; then
      echo "$stacks"
    else
      for task in /proc/"$pid"/task/*; do echo "thread ${task##*/} $(cat "$task/comm" 2>/dev/null): $(cat "$task/wchan" 2>/dev/null)"; done
    fi
    kill_session "$pid"
  ) &
  local watchdog=$!
  local status=0
  wait "$pid" || status=$?
  wait "$watchdog" 2>/dev/null || true
  # Whatever the suite left behind (a killed test's coordinator, say) must not outlive it.
  if pgrep -s "$pid" > /dev/null; then
    echo "::: $name left processes running; killing them:"
    ps -o pid,ppid,etime,stat,args --forest --sid "$pid" | cut -c1-240 || true
    kill_session "$pid"
  fi
  group=""
  if (( status != 0 )); then echo "::: $name failed (exit status $status)" >&2; fi
  return "$status"
}

