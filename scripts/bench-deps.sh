#!/usr/bin/env bash
# Install what `make bench-peers` (bench/peers/: Cronraft beside Celery 5 + Redis) needs beyond the
# project's dev install:
#   apt:  redis-server (Debian's): the broker. Only the binary is used: `make bench-peers` starts its own
#         redis-server on a loopback port in a temporary directory and stops it after. The package's own
#         service is kept from starting while it installs (a policy-rc.d for the duration, when none
#         exists), so no Redis is left listening on 6379.
#   pip:  the `[bench]` extra (celery, redis-py) into .venv, pinned by constraints.txt.
# Never run by `make test`; the peers smoke test (marked `bench`) skips without these. Idempotent:
# installs only what is missing. Needs root for apt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench-deps: redis-server missing; run as root to install it (apt-get)" >&2
        exit 1
    fi
    echo "bench-deps: apt-get install redis-server"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"   # 101: "action forbidden" for invoke-rc.d
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

if [ -x "$VENV/bin/python" ]; then
    if ! "$VENV/bin/python" -c "import celery, redis" >/dev/null 2>&1; then
        # The extra's requirements as pyproject.toml lists them (not `-e .[bench]`: no reinstall of the
        # project itself into a venv other runs may be using).
        mapfile -t reqs < <("$VENV/bin/python" -c 'import tomllib; print("\n".join(
            tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
        echo "bench-deps: pip install the [bench] extra: ${reqs[*]}"
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt "${reqs[@]}"
    fi
else
    echo "bench-deps: no $VENV yet (make install first)" >&2
    exit 1
fi
echo "bench-deps: ok (redis-server $(redis-server --version | awk '{print $3}'), celery $("$VENV/bin/python" -c 'import celery; print(celery.__version__)'))"
