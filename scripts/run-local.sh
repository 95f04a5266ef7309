#!/usr/bin/env bash
# Start a single-node Cronraft on this machine: one `schedd` (cluster-configs/single-node.toml, the
# default) and one `schedworker`, both in the background with logs in ./data/logs. Used by `make run`.
# Ctrl-C (or SIGTERM) stops both. Environment: CONFIG (default cluster-configs/single-node.toml),
# WORKER_ID (default local-worker), READY_TIMEOUT_S (default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_run-common.sh
source scripts/_run-common.sh

CONFIG=${CONFIG:-cluster-configs/single-node.toml}
WORKER_ID=${WORKER_ID:-local-worker}
SERVER=$(config_grpc_addresses "$CONFIG")
HTTP_URL=$(config_http_urls "$CONFIG")

mkdir -p data/logs
refuse_if_listening "$SERVER${HTTP_URL:+,${HTTP_URL#*://}}"

echo "starting schedd --config $CONFIG (log: data/logs/schedd.log)"
start_bg data/logs/schedd.log "$BIN/schedd" --config "$CONFIG"
SCHEDD_PID=$LAST_PID

wait_for_leader "$SERVER" "$SCHEDD_PID" data/logs/schedd.log

# A development worker: it also runs shell payloads (--allow-shell), which a worker refuses by default
# (docs/security.md, "What runs where"). Never start a production worker like this.
echo "starting schedworker --server $SERVER --id $WORKER_ID --allow-shell (log: data/logs/worker.log)"
echo "NOTE: this development worker runs shell payloads (--allow-shell); a production worker should not"
start_bg data/logs/worker.log "$BIN/schedworker" --server "$SERVER" --id "$WORKER_ID" --allow-shell

CTL="$BIN/schedctl --server $SERVER"
cat <<EOF

Cronraft is running: schedd on $SERVER (pid $SCHEDD_PID), worker $WORKER_ID (pid $LAST_PID).
Next steps, in another terminal (add $BIN to PATH or use the full path):
  $CTL task create --name hello --cron "*/1 * * * *" --tz Europe/Paris -- echo hello
  $CTL task list
  $CTL executions TASK_ID              # its executions, from the next minute on
  $CTL execution get EXECUTION_ID      # status, attempts and output of one execution
  $CTL cluster status
EOF
if [[ -n $HTTP_URL ]]; then
  echo "Web:   $HTTP_URL/ (metrics: $HTTP_URL/metrics, readiness: $HTTP_URL/readyz; docs/monitoring.md)"
fi
cat <<EOF
Logs:  tail -f data/logs/schedd.log data/logs/worker.log
Stop:  Ctrl-C here (stops the worker and schedd; data stays in ./data, \`make clean\` removes it)
EOF

wait_children any
