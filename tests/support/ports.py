"""Loopback TCP ports for tests, never handed to two live test processes of this machine at once.

Why not "bind to port 0, read the port, close the socket" (what the tests used to do): between that close
and the moment the server under test binds the port, the kernel is free to hand the same port to the next
bind(0) of any process, e.g. another pytest run started by another engineer on the same machine, or to an
outgoing connection as its source port. Two clusters of two concurrent runs then listened on, or dialled,
each other's ports.

How this module prevents it:
1. Ports come from outside the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range): a
   bind(0) of code that does not use this module (an older checkout, a library) and the source ports of
   outgoing connections are taken from that range, so they never land on ours.
2. A reservation table (`TABLE`, JSON) records each port handed out with its owner's pid and the kernel's
   start time of that process. It is read and rewritten only under an exclusive `fcntl.flock` on `LOCK`,
   so two processes (or two threads) never hand out the same port.
3. A reservation lasts until the owner releases it (`release`) or exits: a test that kills a node and
   restarts it on the same port keeps its port meanwhile. A record whose owner is gone (no such pid, or
   the pid was reused: another start time) is reclaimed by the next allocation, in any process.
4. A port is handed out only if it can be bound on 127.0.0.1 at that moment (without SO_REUSEADDR), so a
   service outside the tests listening there, or a connection in TIME_WAIT on it, is skipped.
5. A cursor kept in the table walks the range round-robin, so a port released a moment ago (its sockets
   maybe in TIME_WAIT) is the last to be handed out again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOCK", "TABLE", "free_port", "free_ports", "release"]

_DIR = Path(os.environ.get("CRONRAFT_TEST_PORTS_DIR", tempfile.gettempdir()))
LOCK = _DIR / "cronraft-test-ports.lock"
TABLE = _DIR / "cronraft-test-ports.json"

_LOWEST = 20_000  # below: well-known and registered services a machine may run
_HIGHEST = 65_535
_thread_lock = threading.Lock()  # flock is per open file: this keeps threads of one process in order too


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports, reserved for this process until `release` or its exit."""
    with _locked_table() as table:
        candidates = _candidates()
        reserved: dict[str, Any] = table["ports"]
        start = table.get("next", candidates[0])
        pos = next((i for i, p in enumerate(candidates) if p >= start), 0)
        owner = [os.getpid(), _start_time(os.getpid())]
        out: list[int] = []
        for k in range(len(candidates)):
            port = candidates[(pos + k) % len(candidates)]
            if str(port) in reserved or not _bindable(port):
                continue
            reserved[str(port)] = owner
            out.append(port)
            if len(out) == n:
                table["next"] = candidates[(pos + k + 1) % len(candidates)]
                return out
        raise RuntimeError(
            f"no {n} free test ports in {candidates[0]}..{candidates[-1]} ({len(reserved)} reserved in "
            f"{TABLE}; delete it if no test is running)"
        )


def free_port() -> int:
    """One loopback port, reserved like `free_ports`'s (also: an address where nothing listens)."""
    return free_ports(1)[0]


def release(ports: Iterable[int]) -> None:
    """Give back ports this process reserved (others' reservations are left alone)."""
    me = os.getpid()
    with _locked_table() as table:
        for port in ports:
            rec = table["ports"].get(str(port))
            if rec is not None and rec[0] == me:
                del table["ports"][str(port)]


@contextlib.contextmanager
def _locked_table() -> Iterator[dict[str, Any]]:
    """The reservation table, its stale records dropped, written back when the block ends."""
    _DIR.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(LOCK, "a+") as lock_file:
        with contextlib.suppress(OSError):  # other users' runs share the table (best effort)
            os.chmod(LOCK, 0o666)
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            table = _read_table()
            table["ports"] = {p: rec for p, rec in table["ports"].items() if _alive(rec)}
            yield table
            tmp = TABLE.with_name(f"{TABLE.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table, separators=(",", ":")))
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o666)
            os.replace(tmp, TABLE)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_table() -> dict[str, Any]:
    try:
        data = json.loads(TABLE.read_text())
    except (OSError, ValueError):  # none yet, or torn by a crash before os.replace existed: start again
        return {"ports": {}}
    if not isinstance(data, dict) or not isinstance(data.get("ports"), dict):
        return {"ports": {}}
    return data


def _candidates() -> list[int]:
    """The ports we hand out: [_LOWEST, _HIGHEST] minus the kernel's ephemeral range."""
    low, high = 32_768, 60_999  # Linux's default range
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [p for p in range(_LOWEST, _HIGHEST + 1) if not low <= p <= high]
    if not ports:
        raise RuntimeError(f"the ephemeral port range {low}-{high} leaves no test ports above {_LOWEST}")
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (tells a live owner from a reused pid); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(record: Any) -> bool:
    try:
        pid, start = int(record[0]), record[1]
    except (TypeError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return start is None or _start_time(pid) == start
