#!/bin/bash
# Run by check-nspawn.sh inside the booted container: each check prints ok or FAIL; exit 1 on a FAIL.
set -uo pipefail
. /root/client.env
failed=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failed=1; }
check() { local what=$1; shift; if "$@" > /dev/null 2>&1; then ok "$what"; else fail "$what"; fi; }

# The last ended execution of the task named $1: "STATE EXIT_CODE STDOUT_TAIL | STDERR_TAIL".
outcome() {
    python3 - "$1" <<'EOF'
import json, subprocess, sys
tasks = json.loads(subprocess.check_output(["schedctl", "-o", "json", "task", "list"]))
task = next(t for t in tasks if t["spec"]["name"] == sys.argv[1])
runs = json.loads(subprocess.check_output(["schedctl", "-o", "json", "executions", task["task_id"]]))
ended = [e for e in runs if e["state"] not in ("pending", "running")]
e = ended[0] if ended else {"state": "none", "exit_code": "", "stdout_tail": "", "stderr_tail": ""}
print(e["state"], e["exit_code"], e["stdout_tail"].strip(), "|", e["stderr_tail"].strip())
EOF
}
leader() { schedctl -o json cluster status | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader_id"])'; }

for unit in cronraft-schedd@node1 cronraft-schedd@node2 cronraft-schedd@node3 cronraft-schedworker; do
    check "$unit is active" systemctl is-active --quiet "$unit"
done
for _ in $(seq 30); do [ -n "$(leader 2>/dev/null)" ] && break; sleep 1; done
check "a leader is elected ($(leader 2>/dev/null))" test -n "$(leader 2>/dev/null)"
pid=$(systemctl show -p MainPID --value cronraft-schedd@node1)
check "schedd runs with seccomp and NoNewPrivs" grep -qE "^Seccomp:\s+2" "/proc/$pid/status"
check "MemoryDenyWriteExecute is on for schedd" \
    test "$(systemctl show -p MemoryDenyWriteExecute --value cronraft-schedd@node1)" = yes
check "the data directory is private" test "$(stat -c %a /var/lib/cronraft/node1/data)" = 700

schedctl task create --name hello --at +1s -- /bin/echo hello > /dev/null 2>&1
schedctl task create --name id --at +1s -- /usr/bin/id -un > /dev/null 2>&1
schedctl task create --name write-etc --at +1s -- /usr/bin/touch /etc/payload-was-here > /dev/null 2>&1
schedctl task create --name read-secret --at +1s -- /bin/cat /etc/cronraft/cluster-secret > /dev/null 2>&1
schedctl task create --name read-node-data --at +1s -- /bin/ls /var/lib/cronraft/node1 > /dev/null 2>&1
schedctl task create --name write-home --at +1s -- /usr/bin/touch /var/lib/cronraft-worker/x > /dev/null 2>&1
sleep 5
case "$(outcome hello)" in "succeeded 0 hello |"*) ok "a task ran";; *) fail "a task ran: $(outcome hello)";; esac
case "$(outcome id)" in *" cronraft-worker |"*) ok "payloads run as cronraft-worker";; *) fail "id: $(outcome id)";; esac
case "$(outcome write-etc)" in failed*Read-only*) ok "/etc is read-only to payloads";; *) fail "write-etc: $(outcome write-etc)";; esac
case "$(outcome read-secret)" in failed*denied*) ok "payloads cannot read the cluster secret";; *) fail "read-secret: $(outcome read-secret)";; esac
case "$(outcome read-node-data)" in failed*denied*) ok "payloads cannot read a node's data";; *) fail "read-node-data: $(outcome read-node-data)";; esac
case "$(outcome write-home)" in succeeded*) ok "payloads write the worker's state directory";; *) fail "write-home: $(outcome write-home)";; esac

systemctl reload cronraft-schedd@node1
sleep 1
check "reload re-reads the token file" \
    sh -c 'journalctl -u cronraft-schedd@node1 -o cat | grep -q "\"reason\": \"SIGHUP\""'

old=$(leader)
systemctl kill -s KILL "cronraft-schedd@$old"
sleep 8
check "the killed leader ($old) was restarted" \
    test "$(systemctl show -p NRestarts --value "cronraft-schedd@$old")" -ge 1
check "a leader again ($(leader 2>/dev/null))" test -n "$(leader 2>/dev/null)"
systemctl start cronraft-schedd@missing 2>/dev/null
sleep 7
check "a config error is not restarted" \
    test "$(systemctl show -p NRestarts --value cronraft-schedd@missing)" = 0
systemd-analyze security --no-pager cronraft-schedd@node1 cronraft-schedworker 2>/dev/null | grep "Overall exposure"
exit "$failed"
