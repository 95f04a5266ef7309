"""The audit log for the fault checker: what this node applied, dispatched and decided, as JSON lines.

Enabled by the environment variable CRONRAFT_AUDIT_DIR: each daemon then appends to
`$CRONRAFT_AUDIT_DIR/<node_id>.audit.jsonl`. Unset, `AuditLog.from_env` returns None and every call
site costs one `is not None` branch.

Every record carries `node`, `mono_ns` (`time.monotonic_ns()` when the event was recorded: CLOCK_MONOTONIC
is shared by every process of the machine and untouched by libfaketime, so the checker can order events
of all nodes and the harness on one time line) and `ev` (apply, dispatch, role, clock). The records of one
apply are the state machine's own (`raft.commands.Ctx.audit`), written after its transaction committed.

Cost on the hot path (the Raft thread applying entries): one dict and a list append under a lock. The
JSON encoding and the writes happen on a flusher thread every `FLUSH_S`, and at `close()` (the daemon's
shutdown, and `atexit`). No fsync: this is for tests, and a crash (`kill -9`, a failpoint's `os._exit`)
loses at most the last `FLUSH_S` of records; the checker must treat a missing tail after a crash as
unknown, not as "did not happen".
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENV = "CRONRAFT_AUDIT_DIR"
FLUSH_S = 0.1


class AuditLog:
    def __init__(self, path: str | os.PathLike[str], node_id: str, *, flush_s: float = FLUSH_S) -> None:
        self.path = Path(path)
        self.node_id = node_id
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._io = threading.Lock()
        self._buffer: list[tuple[int, Mapping[str, Any]]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-flusher", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def from_env(cls, node_id: str, environ: Mapping[str, str] | None = None) -> AuditLog | None:
        folder = (os.environ if environ is None else environ).get(ENV, "")
        return cls(Path(folder) / f"{node_id}.audit.jsonl", node_id) if folder else None

    def record(self, ev: str, **fields: Any) -> None:
        self.write({"ev": ev, **fields})

    def write(self, event: Mapping[str, Any]) -> None:
        """One event (a mapping with an "ev" key); stamped with the monotonic time now."""
        stamp = time.monotonic_ns()
        with self._lock:
            self._buffer.append((stamp, event))

    def write_all(self, events: Iterable[Mapping[str, Any]]) -> None:
        stamp = time.monotonic_ns()
        with self._lock:
            self._buffer.extend((stamp, e) for e in events)

    def flush(self) -> None:
        # Two locks: writers (the Raft thread) only ever wait for the buffer swap, never for the encoding
        # or the write; `_io` keeps two flushes from interleaving their lines.
        with self._io:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch or self._file.closed:
                return
            lines = [
                json.dumps({"node": self.node_id, "mono_ns": stamp, **event}, separators=(",", ":"))
                for stamp, event in batch
            ]
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=2)
        self.flush()
        with self._io:
            self._file.close()
        atexit.unregister(self.close)

    def _run(self) -> None:
        while not self._closed.wait(self._flush_s):
            with contextlib.suppress(OSError):  # a full disk must not kill the daemon over a test aid
                self.flush()


def read_audit(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of an audit file (a torn last line, from a crash mid-write, is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


__all__ = ["ENV", "FLUSH_S", "AuditLog", "read_audit"]
