"""The fault harness's payload: a handler that records each attempt in a ledger outside the system.

Workers run with `--handlers tests.fault.probe`. A task's payload is `handler("fault.probe",
ledger=PATH, sleep_ms=N)`. The handler appends one JSON line when the attempt starts and one when it
ends (see tests/fault/history.py for the format). The times are `time.monotonic_ns()`: the harness
clock, shared by every process on the host and left alone by libfaketime, so a worker whose wall
clock is skewed still records true times.

Each line is one `write()` on an O_APPEND descriptor: atomic between processes, and in the page cache
the moment it returns, so it survives a SIGKILL of the worker (not a power loss; the harness never
simulates one). An attempt killed mid-sleep leaves a start without an end, which the checker reads as
"the process died while holding the lease".
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from cronraft.client.handlers import HandlerContext, handler

_FDS: dict[str, int] = {}
_WORKER = os.environ.get("CRONRAFT_FAULT_WORKER", f"pid{os.getpid()}")


def _append(path: str, record: dict[str, object]) -> None:
    fd = _FDS.get(path)
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _FDS[path] = fd
    os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


@handler("fault.probe")
async def probe(ctx: HandlerContext, ledger: str, sleep_ms: int = 0) -> None:
    base: dict[str, object] = {
        "execution_id": ctx.execution_id,
        "task_id": ctx.task_id,
        "nominal_ms": ctx.nominal_time_ms,
        "attempt": ctx.attempt,
        "token": ctx.fencing_token,
        "worker": _WORKER,
        "pid": os.getpid(),
    }
    _append(ledger, {"ph": "start", **base, "mono_ns": time.monotonic_ns()})
    if sleep_ms > 0:
        await asyncio.sleep(sleep_ms / 1000)
    _append(ledger, {"ph": "end", **base, "mono_ns": time.monotonic_ns()})
