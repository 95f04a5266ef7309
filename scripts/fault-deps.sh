#!/usr/bin/env bash
# Install what the fault harness (tests/fault/) needs beyond the project's Python dependencies:
#   apt:  iproute2 (ip netns), nftables (partitions, loss), iptables (NFQUEUE target for delay: this
#         kernel has no nft `queue` expression and no netem), libnetfilter-queue-dev (to build
#         netfilterqueue)
#   pip:  netfilterqueue (tests/fault/nfq_delay.py) and libfaketime (clock skew) into .venv
# Idempotent: installs only what is missing. Needs root for apt (the harness's netns mode needs root
# anyway; without root the harness falls back to its proxy mode, which needs none of this).
# See shared/docs/fault-testing.md, sections 3.1 and 3.11.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
dpkg -s libnetfilter-queue-dev >/dev/null 2>&1 || missing+=(libnetfilter-queue-dev)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fault-deps: missing ${missing[*]}; run as root to install them (apt-get)" >&2
        exit 1
    fi
    echo "fault-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -x "$VENV/bin/python" ]; then
    for pkg in netfilterqueue libfaketime; do
        if ! "$VENV/bin/python" -c "import $pkg" >/dev/null 2>&1; then
            echo "fault-deps: pip install $pkg"
            "$VENV/bin/python" -m pip install --quiet "$pkg"
        fi
    done
else
    echo "fault-deps: no $VENV yet (make install); skipped the pip packages" >&2
fi
echo "fault-deps: ok (ip $(command -v ip), nft $(command -v nft), iptables $(command -v iptables))"
