"""What a fault run leaves on the machine, recorded so that a later run can clean up after a dead harness.

A `FaultCluster` (tests/fault/cluster.py) running as root writes /run/cronraft-fault/<prefix>.json: its
owner (PID and kernel start time), the PIDs it started, its network namespaces, its root veth and its
tmpfs mounts. A harness that was SIGKILLed cannot clean up; the next `FaultCluster` (or
`python -m tests.fault.cluster --reap`) calls `reap_stale`, which undoes every record whose owner is gone.
A start time goes with every PID, so a reused PID is never killed.

`install_exit_hooks` makes a harness that is terminated (SIGTERM, interpreter exit) close its live
clusters itself.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from tests.fault.netns import kill_namespace_pids, run

REGISTRY = Path("/run/cronraft-fault")

__all__ = [
    "REGISTRY",
    "Registry",
    "install_exit_hooks",
    "is_mountpoint",
    "reap_stale",
    "start_time",
    "track",
    "umount",
    "untrack",
]


def start_time(pid: int) -> str | None:
    """The kernel's start time of a process (tells a live process from a reused PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Registry:
    """What a run created outside its run dir, for a later cleanup if the harness died (SIGKILL)."""

    path: Path | None
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):  # still used by another run: keep it
                self.path.parent.rmdir()


def umount(path: str) -> None:
    if run(["umount", path], check=False) and is_mountpoint(path):
        run(["umount", "-l", path], check=False)
    if is_mountpoint(path):
        run(["umount", "-l", path], check=False)


def is_mountpoint(path: str) -> bool:
    return os.path.ismount(path)


def reap_stale() -> list[str]:
    """Clean up after fault runs whose harness died without cleaning (owner PID gone). Returns prefixes."""
    reaped: list[str] = []
    if not REGISTRY.is_dir():
        return reaped
    for record in sorted(REGISTRY.glob("*.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if start_time(int(data.get("owner_pid", 0))) == data.get("owner_start"):
            continue  # its harness is alive
        for pid, start in data.get("pids", []):
            if start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in data.get("namespaces", []):
            kill_namespace_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
        if data.get("root_veth"):
            run(["ip", "link", "del", data["root_veth"]], check=False)
        for mount in data.get("mounts", []):
            if is_mountpoint(mount):
                umount(mount)
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        reaped.append(str(data.get("prefix", record.stem)))
    return reaped


class _Closeable(Protocol):
    def close(self) -> None: ...


_LIVE: weakref.WeakSet[_Closeable] = weakref.WeakSet()
_HOOKS_INSTALLED = False


def _close_all() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.close()


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind the stack so that `with`/finally blocks run close(); atexit closes whatever is left.
    raise SystemExit(128 + signum)


def install_exit_hooks() -> None:
    """Close every live cluster at interpreter exit, and turn SIGTERM into SystemExit (main thread, and
    only if nobody else handles SIGTERM)."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_close_all)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def track(cluster: _Closeable) -> None:
    """Close `cluster` at exit unless `untrack` came first."""
    _LIVE.add(cluster)


def untrack(cluster: _Closeable) -> None:
    _LIVE.discard(cluster)
