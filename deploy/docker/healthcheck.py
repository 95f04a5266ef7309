#!/usr/bin/env python3
"""`cronraft-healthcheck [URL]`: the container's HEALTHCHECK. Exit 0 when GET URL answers 200, else 1.

Without URL: the node's liveness route, `/healthz` on the `[http] address` of the config named by
$CRONRAFT_CONFIG (default /etc/cronraft/node.toml), over HTTPS when the config has `[tls]`, a wildcard
host dialled as 127.0.0.1. Only the config's TOML is read (no secret needed). Like a Kubernetes probe,
the node's certificate is not checked: this asks whether the process answers, not who it is.
A worker's container passes its metrics URL (`schedworker --metrics-address`).
"""

from __future__ import annotations

import os
import ssl
import sys
import tomllib
import urllib.request

DEFAULT_CONFIG = "/etc/cronraft/node.toml"
WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def node_url(config: dict[str, object]) -> str:
    """The /healthz URL of a node config (a parsed TOML document)."""
    http = config.get("http") or {}
    address = http.get("address", "") if isinstance(http, dict) else ""
    if not address:
        raise SystemExit("cronraft-healthcheck: the config has no [http] address: nothing to check")
    host, _, port = str(address).rpartition(":")
    if host in WILDCARDS:
        host = "127.0.0.1"
    tls = config.get("tls") or {}
    scheme = "https" if isinstance(tls, dict) and tls.get("cert") else "http"
    return f"{scheme}://{host}:{port}/healthz"


def check(url: str, timeout_s: float = 4.0) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return bool(response.status == 200)
    except (OSError, ValueError) as e:
        print(f"cronraft-healthcheck: {url}: {e}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    if argv:
        url = argv[0]
    else:
        path = os.environ.get("CRONRAFT_CONFIG") or DEFAULT_CONFIG
        with open(path, "rb") as f:
            url = node_url(tomllib.load(f))
    return 0 if check(url) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
