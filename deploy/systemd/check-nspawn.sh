#!/bin/bash
# Runs deploy/systemd for real: a Debian 12 container booted by systemd (systemd-nspawn, its own network
# namespace), the project's wheel in /opt/cronraft, the multi-host configs on 127.0.0.1-3 through
# cronraft-schedd@node1..3 and one cronraft-schedworker, laid out as docs/operations.md ("Deploy") says;
# then checks that a leader is elected, tasks run inside the worker's sandbox and cannot read the nodes'
# secrets, reload re-reads the token file, and a killed node is restarted.
#
# Needs root, debootstrap and systemd-container (apt-get install debootstrap systemd-container), Debian's
# mirror and PyPI. Not part of `make test`. Usage, from the repository root:
#   deploy/systemd/check-nspawn.sh [WORK_DIR]      (default /var/tmp/cronraft-nspawn; reused if present)
# The project is built from the commit REF (default HEAD); the deploy/ files are the work tree's.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-/var/tmp/cronraft-nspawn}
R=$WORK/rootfs
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
mkdir -p "$WORK"

if [ ! -x "$R/usr/bin/python3" ]; then
    echo "== debootstrap (a few minutes)"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-venv,curl \
        bookworm "$R" http://deb.debian.org/debian > "$WORK/debootstrap.log"
fi

echo "== wheels of the project at ${REF:=HEAD} and of its dependencies (constraints.txt)"
rm -rf "$WORK/wheels" "$WORK/src" && mkdir -p "$WORK/wheels" "$WORK/src"
git -C "$REPO" archive "$REF" | tar -x -C "$WORK/src"   # committed code only, not the work tree
(cd "$WORK/src" && "$PYTHON" -m pip wheel --quiet --wheel-dir "$WORK/wheels" -c constraints.txt . 2> /dev/null)
rm -rf "$R/tmp/wheels" "$R/opt/cronraft" && cp -r "$WORK/wheels" "$R/tmp/wheels"
cp "$REPO/constraints.txt" "$R/tmp/wheels/"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" sh -c 'python3 -m venv /opt/cronraft &&
    /opt/cronraft/bin/pip install --quiet --no-index --find-links /tmp/wheels -c /tmp/wheels/constraints.txt cronraft'

echo "== files, as docs/operations.md lays them out (three nodes on 127.0.0.1, .2 and .3)"
D=$REPO/deploy
in_root() { env -i PATH=/opt/cronraft/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$R" "$@"; }
cp "$D"/systemd/*.service "$R/etc/systemd/system/"
mkdir -p "$R/etc/sysusers.d" && cp "$D/systemd/cronraft.sysusers" "$R/etc/sysusers.d/cronraft.conf"
systemd-sysusers --root="$R"
rm -rf "$R/etc/cronraft" "$R/var/lib/cronraft" "$R/var/lib/private/cronraft"* "$R/var/lib/cronraft-worker"
install -d -m 0755 "$R/etc/cronraft"
for n in 1 2 3; do
    sed -e "s/10\.0\.0\./127.0.0./g" -e "s|/var/lib/cronraft/data|/var/lib/cronraft/node$n/data|" \
        "$D/multi-host/node$n.toml" > "$R/etc/cronraft/node$n.toml"
done
in_root sh -c 'chgrp cronraft /etc/cronraft/node?.toml && chmod 0640 /etc/cronraft/node?.toml'
in_root schedctl tls init /etc/cronraft/tls --config /etc/cronraft/node1.toml --worker w1 > /dev/null
in_root sh -c 'chmod 0755 /etc/cronraft/tls && chown cronraft /etc/cronraft/tls/node?-key.pem'
(umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$R/etc/cronraft/cluster-secret")
in_root chown cronraft /etc/cronraft/cluster-secret
in_root schedctl token create --principal admin --role admin --file /etc/cronraft/tokens.toml > "$R/root/admin.token"
in_root schedctl token create --principal w1 --role worker --file /etc/cronraft/tokens.toml > "$R/root/w1.token"
in_root sh -c 'chgrp cronraft /etc/cronraft/tokens.toml && chmod 0640 /etc/cronraft/tokens.toml'
sed -e "s/^CRONRAFT_TOKEN=.*/CRONRAFT_TOKEN=$(cat "$R/root/w1.token")/" \
    -e "s/^CRONRAFT_SERVER=.*/CRONRAFT_SERVER=127.0.0.1:50051,127.0.0.2:50051,127.0.0.3:50051/" \
    "$D/systemd/worker.env.example" > "$R/etc/cronraft/worker.env"
chmod 0600 "$R/etc/cronraft/worker.env"
cp "$D/systemd/worker-policy.toml" "$R/etc/cronraft/"
in_root sh -c 'chgrp cronraft-worker /etc/cronraft/worker-policy.toml && chmod 0640 /etc/cronraft/worker-policy.toml'
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
for unit in cronraft-schedd@node1 cronraft-schedd@node2 cronraft-schedd@node3; do
    ln -sf /etc/systemd/system/cronraft-schedd@.service "$R/etc/systemd/system/multi-user.target.wants/$unit.service"
done
ln -sf /etc/systemd/system/cronraft-schedworker.service "$R/etc/systemd/system/multi-user.target.wants/"
cat > "$R/root/client.env" <<EOF
export PATH=/opt/cronraft/bin:\$PATH CRONRAFT_SERVER=127.0.0.1:50051,127.0.0.2:50051,127.0.0.3:50051
export CRONRAFT_TLS_CA=/etc/cronraft/tls/ca.pem CRONRAFT_TOKEN=$(cat "$R/root/admin.token")
EOF
cp "$D/systemd/check-nspawn-inside.sh" "$R/root/"

echo "== boot"
setsid systemd-nspawn -q -D "$R" --private-network -b --register=no --keep-unit --console=pipe \
    -M cronraft-check > "$WORK/nspawn.log" 2>&1 < /dev/null &
NSPAWN=$!
trap 'kill "$NSPAWN" 2>/dev/null || true' EXIT
for _ in $(seq 60); do
    INIT=$(pgrep -P "$NSPAWN" systemd || true)
    [ -n "$INIT" ] && [ "$(nsenter -t "$INIT" -a systemctl is-system-running 2>/dev/null)" = running ] && break
    sleep 1
done
status=0
nsenter -t "$INIT" -a bash /root/check-nspawn-inside.sh || status=$?
nsenter -t "$INIT" -a systemctl poweroff || true
wait "$NSPAWN" || true
trap - EXIT
exit "$status"
