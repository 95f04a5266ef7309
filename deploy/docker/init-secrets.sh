#!/bin/sh
# The compose file's init service: on the first `docker compose up` only, a development CA with a
# certificate per node (`schedctl tls init`), the cluster secret, an admin token and a token per worker
# (`schedctl token create`). Nodes get theirs in the node-secrets volume; workers get the CA and their
# tokens in worker-secrets, and never see a node's key or the cluster secret. Production: bring your own
# PKI and write these files into the volumes (or use Docker secrets) instead.
set -eu
NODES=/etc/cronraft/secrets
WORKERS=/etc/cronraft/worker-secrets
if [ -e "$NODES/initialised" ]; then
    echo "secrets already made (remove the node-secrets and worker-secrets volumes to start over)"
    exit 0
fi
umask 077
schedctl tls init "$NODES/tls" --config /etc/cronraft/node1.toml
# The CA's key signs nothing more here: it does not stay beside the nodes' keys.
rm "$NODES/tls/ca-key.pem"
python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$NODES/cluster-secret"
schedctl token create --principal admin --role admin --file "$NODES/tokens.toml" > "$NODES/admin.token"
for worker in w1 w2; do
    schedctl token create --principal "$worker" --role worker --file "$NODES/tokens.toml" \
        > "$WORKERS/$worker.token"
done
cp "$NODES/tls/ca.pem" "$WORKERS/ca.pem"
touch "$NODES/initialised"
echo "secrets made: node certificates, cluster secret, tokens for admin, w1, w2"
