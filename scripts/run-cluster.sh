#!/usr/bin/env bash
# Start a local multi-node Cronraft on loopback: every node of cluster-configs/<three-node|five-node>
# plus one worker connected to all of them, in the background with logs in ./data/logs. Used by
# `make cluster`. Ctrl-C (or SIGTERM) stops everything.
#
# The cluster secret comes from $CRONRAFT_CLUSTER_SECRET; when it is unset, one is generated once into
# ./data/cluster-secret (mode 600) and reused by later runs. TLS and tokens (docs/security.md): on first
# start, a development CA and node certificates go to ./data/<cluster>/tls, an admin and a worker token
# to ./data/<cluster>/tokens.toml (hashed), and what a client needs to ./data/<cluster>/client.env
# (`source` it). Environment: WORKER_ID (default cluster-worker), READY_TIMEOUT_S (default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { echo "usage: $0 three-node|five-node" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
case $1 in three-node | five-node) ;; *) usage ;; esac
DIR=cluster-configs/$1
# shellcheck source=scripts/_run-common.sh
source scripts/_run-common.sh

WORKER_ID=${WORKER_ID:-cluster-worker}
mkdir -p data/logs

if [[ -z ${CRONRAFT_CLUSTER_SECRET:-} ]]; then
  if [[ ! -s data/cluster-secret ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' >data/cluster-secret)
    echo "generated a cluster secret into data/cluster-secret"
  fi
  chmod 600 data/cluster-secret
  CRONRAFT_CLUSTER_SECRET=$(<data/cluster-secret)
  export CRONRAFT_CLUSTER_SECRET
fi

CONFIGS=("$DIR"/node*.toml)
SERVERS=$(config_grpc_addresses "${CONFIGS[@]}")
HTTP_URLS=$(config_http_urls "${CONFIGS[@]}")
refuse_if_listening "$SERVERS"
secure_cluster "data/$1" "$SERVERS" "$WORKER_ID" "${CONFIGS[@]}"

declare -A NODE_PID NODE_ADDRESS NODE_HTTP
IFS=, read -r -a ADDRESSES <<<"$SERVERS"
IFS=, read -r -a URLS <<<"$HTTP_URLS"
for i in "${!CONFIGS[@]}"; do
  node=$(basename "${CONFIGS[$i]}" .toml)
  echo "starting $node: schedd --config ${CONFIGS[$i]} (log: data/logs/$node.log)"
  start_bg "data/logs/$node.log" "$BIN/schedd" --config "${CONFIGS[$i]}"
  NODE_PID[$node]=$LAST_PID
  NODE_ADDRESS[$node]=${ADDRESSES[$i]}
  NODE_HTTP[$node]=${URLS[$i]:-}
done

wait_for_leader "$SERVERS"

# A development worker: it also runs shell payloads (--allow-shell), which a worker refuses by default
# (docs/security.md, "What runs where"). Never start a production worker like this.
echo "starting schedworker --server $SERVERS --id $WORKER_ID --allow-shell (log: data/logs/worker.log)"
echo "NOTE: this development worker runs shell payloads (--allow-shell); a production worker should not"
# The worker's own token (role worker), not the admin's in client.env; in its environment, not argv.
CRONRAFT_TOKEN=$WORKER_TOKEN start_bg data/logs/worker.log "$BIN/schedworker" --server "$SERVERS" --id "$WORKER_ID" --allow-shell
WORKER_PID=$LAST_PID

echo
printf '%-8s %-18s %-8s %-9s %s\n' NODE GRPC PID ROLE HTTP
for node in $(printf '%s\n' "${!NODE_PID[@]}" | sort -V); do
  json=$(status_json "${NODE_ADDRESS[$node]}")
  role=follower
  [[ -z $json ]] && role="not answering"
  [[ $(json_get "$json" is_leader) == true ]] && role=leader
  printf '%-8s %-18s %-8s %-9s %s\n' "$node" "${NODE_ADDRESS[$node]}" "${NODE_PID[$node]}" "$role" \
    "${NODE_HTTP[$node]:--}"
done
LEADER_PID=${NODE_PID[$LEADER_ID]:-PID}

cat <<EOF

Cronraft $1 is running with TLS and tokens; worker $WORKER_ID (pid $WORKER_PID) is connected to $SERVERS.
First, in your shell, take the client settings (server list, CA, an admin token):
  source $CLIENT_ENV
  $BIN/schedctl --server $SERVERS cluster status
  $BIN/schedctl --server $SERVERS task create --name hello --cron "*/1 * * * *" --tz Europe/Paris -- echo hello
Watch a failover: kill the leader ($LEADER_ID), then ask the others who leads now:
  kill $LEADER_PID          # or kill -9 $LEADER_PID for a crash
  $BIN/schedctl --server $SERVERS cluster status
Each node's HTTP listener (the HTTP column above): /metrics, /healthz, /readyz (docs/monitoring.md).
Logs:  tail -f data/logs/*.log
Stop:  Ctrl-C here (stops every node and the worker; data stays in ./data, \`make clean\` removes it)
EOF

wait_children all
