"""The fault harness's workload: tasks submitted through the public API, every call recorded.

Jepsen-style history (tests/fault/history.py has the format): each create is an `invoke` followed by
`ok` (acknowledged: committed on a majority), `fail` (the cluster said no and changed nothing) or
`info` (indeterminate: a timeout or a lost connection; the task may or may not exist). The checker
expects every acknowledged task's fires, and those of indeterminate ones that show up in the final
read.

Two kinds of tasks, all running the probe handler (tests/fault/probe.py):
- recurring: fixed rate every 1-5 s from an anchor a few seconds after t0 until the end of the
  judged window (`end_at` set half a period past the last judged fire, so the boundary is never
  ambiguous);
- one-time: created at a steady rate during the run, due 2-30 s after their creation.
Times are chosen on the harness's true wall clock; the nodes' clocks may be skewed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronraft.client import AsyncClient, at, every, handler
from cronraft.errors import CronraftError, DeadlineExceeded, OutcomeUnknown, Unavailable


@dataclass(frozen=True)
class WorkloadSize:
    recurring: int  # fixed-rate tasks created at the start
    periods_ms: tuple[int, ...]  # their periods, chosen at random
    one_time_per_s: float  # one-time creates per second during the run
    one_time_delay_s: tuple[float, float]  # how far after its creation a one-time task is due
    sleep_ms: tuple[int, int]  # how long the probe holds its lease
    concurrency: int = 16  # API calls in flight at most

    def expected_fires(self, duration_s: float) -> int:
        mean_period_s = sum(self.periods_ms) / len(self.periods_ms) / 1000
        return int(self.recurring * duration_s / mean_period_s + self.one_time_per_s * duration_s)


class History:
    """Append-only history.jsonl, one line per event, flushed as it goes (a crash keeps the prefix)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def write(self, **record: Any) -> None:
        record["mono_ns"] = time.monotonic_ns()
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._f.close()


def _indeterminate(exc: BaseException) -> bool:
    """Could the call have taken effect? Unknown outcomes, timeouts and lost connections: yes."""
    if isinstance(exc, (OutcomeUnknown, DeadlineExceeded, Unavailable, asyncio.TimeoutError, OSError)):
        return True
    # Anything the cluster refused on purpose (invalid, not found, exhausted) changed nothing.
    return not isinstance(exc, CronraftError)


class Workload:
    def __init__(
        self,
        servers: str,
        run_dir: Path,
        size: WorkloadSize,
        rng: random.Random,
        *,
        t0_wall_ms: int,
        warmup_s: float,
        duration_s: float,
        call_timeout_s: float = 8.0,
    ) -> None:
        self.servers = servers
        self.ledger = str(run_dir / "ledger.jsonl")
        self.history = History(run_dir / "history.jsonl")
        self.size = size
        self.rng = rng
        self.t0_wall_ms = t0_wall_ms
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.call_timeout_s = call_timeout_s
        self._seq = 0
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def _name(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}-{self._seq:06d}"

    async def _create(
        self, client: AsyncClient, name: str, schedule: dict[str, Any], sem: asyncio.Semaphore
    ) -> None:
        async with sem:
            req = name
            if schedule["kind"] == "at":
                sched = at(schedule["at_ms"])
            else:
                end = schedule["until_ms"]
                sched = every(schedule["period_ms"], schedule["anchor_ms"], end_at=end)
            sleep_ms = self.rng.randint(*self.size.sleep_ms)
            payload = handler("fault.probe", ledger=self.ledger, sleep_ms=sleep_ms)
            self.history.write(type="invoke", op="create", req=req, name=name, schedule=schedule)
            try:
                task = await asyncio.wait_for(client.create_task(name, sched, payload), self.call_timeout_s)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    self.history.write(type="info", op="create", req=req, name=name, task_id=None)
                    raise
                kind = "info" if _indeterminate(exc) else "fail"
                self.counts[kind] += 1
                self.history.write(
                    type=kind,
                    op="create",
                    req=req,
                    name=name,
                    task_id=None,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return
            self.counts["ok"] += 1
            self.history.write(type="ok", op="create", req=req, name=name, task_id=task.task_id)

    async def run(self) -> None:
        """Submit for `duration_s` seconds of the harness's wall clock, then return."""
        size = self.size
        end_ms = self.t0_wall_ms + int(self.duration_s * 1000)
        sem = asyncio.Semaphore(size.concurrency)
        pending: set[asyncio.Task[None]] = set()
        async with AsyncClient(self.servers, timeout_s=self.call_timeout_s) as client:
            now_ms = time.time_ns() // 1_000_000
            for _ in range(size.recurring):
                period = self.rng.choice(size.periods_ms)
                anchor = now_ms + 3000 + self.rng.randrange(0, period)
                last = anchor + ((end_ms - anchor) // period) * period
                schedule = {
                    "kind": "every",
                    "anchor_ms": anchor,
                    "period_ms": period,
                    "until_ms": last + period // 2,
                }
                pending.add(asyncio.create_task(self._create(client, self._name("rec"), schedule, sem)))
            interval = 1.0 / size.one_time_per_s if size.one_time_per_s > 0 else None
            next_at = time.monotonic()
            lo, hi = size.one_time_delay_s
            while interval is not None:
                now_ms = time.time_ns() // 1_000_000
                due = now_ms + int(self.rng.uniform(lo, hi) * 1000)
                if due > end_ms:
                    if now_ms >= end_ms - int(lo * 1000):
                        break
                    due = end_ms
                schedule = {"kind": "at", "at_ms": due}
                task = asyncio.create_task(self._create(client, self._name("one"), schedule, sem))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self.history.close()
