"""`host:port` addresses in the config: `split_host_port` and `is_loopback` (also used by the metrics
endpoint and daemon.security)."""

from __future__ import annotations

import ipaddress


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:port``); raise ValueError saying what is wrong."""
    if not address or any(c.isspace() for c in address):
        raise ValueError("expected host:port without spaces, e.g. 127.0.0.1:50051")
    host, sep, port_s = address.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port, e.g. 127.0.0.1:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError("empty IPv6 address between the brackets")
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:50051")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"port {port_s!r} is not a number in 1..65535")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    """Whether `host` (from split_host_port) can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost, or a wildcard: reachable from elsewhere
