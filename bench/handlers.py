"""The benchmark payloads: in-process handlers a `schedworker --handlers bench.handlers` serves.

- `bench.noop`: records (task id, nominal ms, start wall ms, start monotonic ns, execution id, attempt,
  fencing token "term.index") and returns at once: the task body of every throughput and latency workload.
- `bench.sleep(seconds=...)`: records the same row, then holds its lease for `seconds` (asyncio sleep):
  the long-running executions of the concurrency workload.

Rows go to `$BENCH_LEDGER_DIR/ledger-<pid>.tsv`, tab-separated, one line per start. Writes are buffered
and flushed at most `FLUSH_S` after a row (and at exit), so that recording costs no syscall per call.
Both handlers are `async def`: they run on the worker's event loop (no thread per call). The start time is
read first thing in the call: start lag = start wall ms - nominal ms (wall clocks of one machine).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from pathlib import Path
from typing import IO

from cronraft.client.handlers import HandlerContext, handler

FLUSH_S = 0.2
_rows: list[str] = []
_file: IO[str] | None = None
_scheduled = False


def _out() -> IO[str] | None:
    global _file
    if _file is None:
        directory = os.environ.get("BENCH_LEDGER_DIR")
        if not directory:
            return None
        _file = open(Path(directory) / f"ledger-{os.getpid()}.tsv", "a", encoding="ascii")  # noqa: SIM115
    return _file


def flush() -> None:
    global _scheduled
    _scheduled = False
    out = _out()
    if out is None or not _rows:
        _rows.clear()
        return
    out.write("".join(_rows))
    out.flush()
    _rows.clear()


atexit.register(flush)


def _record(ctx: HandlerContext) -> None:
    global _scheduled
    wall_ms = time.time_ns() // 1_000_000
    mono_ns = time.monotonic_ns()
    _rows.append(
        f"{ctx.task_id}\t{ctx.nominal_time_ms}\t{wall_ms}\t{mono_ns}\t{ctx.execution_id}\t{ctx.attempt}\t"
        f"{ctx.fencing_token}\n"
    )
    if not _scheduled:
        _scheduled = True
        asyncio.get_running_loop().call_later(FLUSH_S, flush)


@handler("bench.noop")
async def noop(ctx: HandlerContext) -> None:
    _record(ctx)


@handler("bench.sleep")
async def sleep(ctx: HandlerContext, seconds: float = 60.0) -> None:
    _record(ctx)
    await asyncio.sleep(seconds)
