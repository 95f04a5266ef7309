# Shared by scripts/run-local.sh and scripts/run-cluster.sh (sourced, not run): start processes in the
# background, wait for a leader, and stop everything cleanly on exit, Ctrl-C or SIGTERM.
# Expects to be sourced from the repository root with `set -euo pipefail` in force.

# The project's tools: $CRONRAFT_BIN if set, else the venv of `make install`, else whatever is on PATH.
if [[ -n ${CRONRAFT_BIN:-} ]]; then
  BIN=$CRONRAFT_BIN
elif [[ -x .venv/bin/schedd ]]; then
  BIN=.venv/bin
else
  BIN=$(dirname "$(command -v schedd || echo /nonexistent/schedd)")
fi
[[ -x $BIN/schedd ]] || { echo "schedd not found in $BIN: run \`make install\` first" >&2; exit 1; }
# A Python that can import cronraft (to read the config files).
PY=python3
for candidate in .venv/bin/python "$BIN/python"; do
  if [[ -x $candidate ]]; then PY=$candidate; break; fi
done

READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-20}  # > the worker's default --shutdown-grace (10 s)
CHILDREN=()
LAST_PID=

# Each background process gets its own process group (job control), so that a Ctrl-C in the terminal
# reaches only this script, which then sends each process exactly one SIGTERM. (Two signals would make
# schedworker skip its shutdown grace.)
set -m

# config_grpc_addresses FILE... : validate the config files and print their gRPC addresses, comma-separated.
config_grpc_addresses() {
  "$PY" - "$@" <<'PYEOF'
import sys
from cronraft.daemon.config import load_config
from cronraft.errors import ConfigError
try:
    print(",".join(load_config(p).self_member.grpc_address for p in sys.argv[1:]))
except ConfigError as e:
    sys.exit(f"invalid config: {e}")
PYEOF
}

# config_http_urls FILE... : the base URL of each node's HTTP listener ([http] address; https with [tls]),
# comma-separated in file order ("" for a node without one): /metrics, /healthz, /readyz, the dashboard.
config_http_urls() {
  "$PY" - "$@" <<'PYEOF'
import sys
from cronraft.daemon.config import load_config
from cronraft.errors import ConfigError
urls = []
try:
    for path in sys.argv[1:]:
        c = load_config(path)
        urls.append(f"{'https' if c.tls.enabled else 'http'}://{c.http.address}" if c.http.address else "")
except ConfigError as e:
    sys.exit(f"invalid config: {e}")
print(",".join(urls))
PYEOF
}

# refuse_if_listening HOST:PORT[,...] : fail early when something already answers on one of the ports.
refuse_if_listening() {
  "$PY" - "$1" <<'PYEOF'
import socket, sys
for address in sys.argv[1].split(","):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=0.5).close()
    except OSError:
        continue
    sys.exit(f"something already listens on {address}: stop it first (another schedd? `make run`?)")
PYEOF
}

# start_bg LOGFILE CMD ARGS... : start CMD in the background, appending its output to LOGFILE.
start_bg() {
  local log=$1
  shift
  printf '\n===== %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >>"$log"
  "$@" </dev/null >>"$log" 2>&1 &
  LAST_PID=$!
  CHILDREN+=("$LAST_PID")
}

# secure_cluster DATA_DIR SERVERS WORKER_ID CONFIG... : on first start, the development PKI (DATA_DIR/tls),
# an admin and a worker token (DATA_DIR/tokens.toml holds their hashes) and DATA_DIR/client.env; exports
# the client settings for this script's own schedctl calls and sets CLIENT_ENV and WORKER_TOKEN.
secure_cluster() {
  local data=$1 servers=$2 worker=$3
  shift 3
  mkdir -p "$data"
  chmod 700 "$data"
  if [[ ! -s $data/tls/ca.pem ]]; then
    local args=()
    for cfg in "$@"; do args+=(--config "$cfg"); done
    "$BIN/schedctl" tls init "$data/tls" "${args[@]}" --worker "$worker" --force >/dev/null
    echo "generated development certificates into $data/tls"
  fi
  CLIENT_ENV=$data/client.env
  if [[ ! -s $CLIENT_ENV || ! -s $data/worker.env || ! -s $data/tokens.toml ]]; then
    rm -f "$data/tokens.toml"
    local admin worker_token
    admin=$("$BIN/schedctl" token create --principal admin --role admin --file "$data/tokens.toml" 2>/dev/null)
    worker_token=$("$BIN/schedctl" token create --principal "$worker" --role worker --file "$data/tokens.toml" 2>/dev/null)
    (
      umask 077
      printf 'export CRONRAFT_TOKEN=%q\n' "$worker_token" >"$data/worker.env"
      {
        echo "# Cronraft client settings for $data (made by run-cluster.sh): source this file."
        printf 'export CRONRAFT_SERVER=%q\n' "$servers"
        printf 'export CRONRAFT_TLS_CA=%q\n' "$PWD/$data/tls/ca.pem"
        printf 'export CRONRAFT_TOKEN=%q\n' "$admin"
        echo "# mutual TLS is off in the shipped configs; with it on, also:"
        printf '# export CRONRAFT_TLS_CERT=%q CRONRAFT_TLS_KEY=%q\n' "$PWD/$data/tls/client.pem" "$PWD/$data/tls/client-key.pem"
      } >"$CLIENT_ENV"
    )
    echo "generated an admin token and a worker token ($data/tokens.toml holds their hashes)"
  fi
  # shellcheck disable=SC1090
  source "$CLIENT_ENV"
  WORKER_TOKEN=$(
    # shellcheck disable=SC1091
    source "$data/worker.env"
    printf '%s' "$CRONRAFT_TOKEN"
  )
  echo "client settings: source $CLIENT_ENV"
}

# status_json HOST:PORT : one node's `schedctl cluster status` as JSON (empty when it does not answer).
status_json() {
  "$BIN/schedctl" --server "$1" --output json cluster status 2>/dev/null || true
}

# json_get JSON KEY : print one top-level key of a JSON object ("" when absent or not JSON).
json_get() {
  "$PY" -c 'import json, sys
try:
    v = json.loads(sys.argv[1]).get(sys.argv[2], "")
except (ValueError, AttributeError):
    v = ""
print(str(v).lower() if isinstance(v, bool) else v)' "$1" "$2"
}

# wait_for_leader HOST:PORT[,...] : poll the nodes until one says the cluster is ready with a leader,
# bounded by READY_TIMEOUT_S; fail early when a started process exits. Sets LEADER_ID, LEADER_ADDRESS.
wait_for_leader() {
  local servers=$1 deadline=$((SECONDS + READY_TIMEOUT_S)) address json pid
  echo -n "waiting for a leader on $servers "
  while ((SECONDS < deadline)); do
    for pid in "${CHILDREN[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo
        echo "process $pid exited during start-up; see the logs in data/logs/:" >&2
        tail -n 20 data/logs/*.log >&2 || true
        exit 1
      fi
    done
    for address in ${servers//,/ }; do
      json=$(status_json "$address")
      if [[ $(json_get "$json" ready) == true && -n $(json_get "$json" leader_id) ]]; then
        LEADER_ID=$(json_get "$json" leader_id)
        LEADER_ADDRESS=$(json_get "$json" leader_address)
        echo
        echo "ready: leader is $LEADER_ID ($LEADER_ADDRESS)"
        return 0
      fi
    done
    echo -n .
    sleep 0.5
  done
  echo
  echo "no leader after ${READY_TIMEOUT_S}s (READY_TIMEOUT_S); last lines of the logs:" >&2
  tail -n 20 data/logs/*.log >&2 || true
  exit 1
}

_force_stop=0

# stop_children : SIGTERM every child still running, wait up to STOP_TIMEOUT_S, then SIGKILL.
# A second Ctrl-C while stopping kills at once.
stop_children() {
  trap - EXIT
  trap '_force_stop=1' INT TERM
  local pid alive=() deadline=$((SECONDS + STOP_TIMEOUT_S))
  for pid in "${CHILDREN[@]}"; do
    kill -0 "$pid" 2>/dev/null && alive+=("$pid")
  done
  ((${#alive[@]} == 0)) && return 0
  echo
  echo "stopping (pids ${alive[*]}); Ctrl-C again to kill at once"
  kill -TERM "${alive[@]}" 2>/dev/null || true
  while ((SECONDS < deadline && _force_stop == 0)); do
    alive=()
    for pid in "${CHILDREN[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    ((${#alive[@]} == 0)) && break
    sleep 0.2
  done
  for pid in "${CHILDREN[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid did not stop; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  echo "stopped"
}

trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_children any|all : block until one child exits (any: then stop the rest) or until all have
# exited (all: a cluster survives losing a node), or until Ctrl-C / SIGTERM.
wait_children() {
  local rc=0
  if [[ $1 == any ]]; then
    wait -n "${CHILDREN[@]}" || rc=$?
    echo "a process exited (status $rc); see data/logs/" >&2
    exit 1
  fi
  wait "${CHILDREN[@]}" || true
  echo "all processes exited; see data/logs/" >&2
}
