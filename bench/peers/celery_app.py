"""The Celery side of the peer benchmark: the app, the task body and the fixed-rate beat schedule.

Imported by the `celery worker` and `celery beat` processes (`-A bench.peers.celery_app`; the benchmark
process publishes by task name through an app of its own per Redis). Configured from the environment:
- `BENCH_CELERY_BROKER`: the broker URL (the Redis the benchmark started on a loopback port);
- `BENCH_LEDGER_DIR`: where the task body writes its rows (as bench/handlers.py does for Cronraft);
- `BENCH_CELERY_BEAT` = "tasks,period_ms,anchor_ms": beat's schedule (W3), none when unset.

Celery's defaults otherwise (JSON serializer, prefetch multiplier 4, acks on receipt), results ignored
(no result backend): the no-op returns nothing, as `bench.noop` does.

The task body `bench.noop(task_id, nominal_ms)` records the row bench/handlers.py records, first thing:
task id, nominal time, start wall ms, start monotonic ns, Celery's request id, retries, "0.0" (no
fencing token). Each row is one `os.write` to the process's own ledger file (O_APPEND): a prefork pool
child has no event loop to flush a buffer later, and a syscall per call is small beside Celery's own
per-task cost. Start lag = start wall ms - nominal ms, as for Cronraft.

W3's recurring tasks run under beat with `FixedRate`, a schedule firing at anchor + n * period (Celery's
own interval schedule counts from the last send, so it drifts and has no nominal time to measure
against). Beat calls `is_due` just before it sends an entry; the nominal time it was due for is passed
to the task through a `BeatLazyFunc` argument, evaluated at send time. A send later than a whole period
skips the nominal times in between: they are missed, as they are for the user.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import schedstate, schedule

BROKER_ENV = "BENCH_CELERY_BROKER"
BEAT_ENV = "BENCH_CELERY_BEAT"
LEDGER_ENV = "BENCH_LEDGER_DIR"

app = Celery("cronraft_bench_peer", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


_ledger: tuple[int, int] | None = None  # (pid, fd): a forked pool child opens its own


def _ledger_fd() -> int | None:
    global _ledger
    pid = os.getpid()
    if _ledger is None or _ledger[0] != pid:
        directory = os.environ.get(LEDGER_ENV)
        if not directory:
            return None
        path = Path(directory) / f"ledger-celery-{pid}.tsv"
        _ledger = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    return _ledger[1]


@app.task(name="bench.noop", bind=True)  # type: ignore[untyped-decorator]  # celery has no type hints
def noop(self: Any, task_id: str, nominal_ms: int) -> None:
    wall_ms = time.time_ns() // 1_000_000
    mono_ns = time.monotonic_ns()
    fd = _ledger_fd()
    if fd is not None:
        req = self.request
        row = f"{task_id}\t{nominal_ms}\t{wall_ms}\t{mono_ns}\t{req.id}\t{req.retries}\t0.0\n"
        os.write(fd, row.encode("ascii"))


class FixedRate(schedule):  # type: ignore[misc]  # celery has no type hints: schedule is Any
    """Due at anchor_ms + n * period_ms; `due_ms` is the nominal time of the last `is_due` that said yes."""

    def __init__(self, period_ms: int, anchor_ms: int, app: Any = None) -> None:
        super().__init__(run_every=timedelta(milliseconds=period_ms), app=app)
        self.period_ms = period_ms
        self.anchor_ms = anchor_ms
        self.due_ms = 0

    def is_due(self, last_run_at: Any) -> schedstate:
        last = int(last_run_at.timestamp() * 1000)
        due = self.anchor_ms + ((last - self.anchor_ms) // self.period_ms + 1) * self.period_ms
        now = time.time_ns() // 1_000_000
        if now >= due:
            self.due_ms = due
            return schedstate(True, (due + self.period_ms - now) / 1000)
        return schedstate(False, (due - now) / 1000)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.period_ms, self.anchor_ms)


def _due_of(rate: FixedRate) -> int:
    return rate.due_ms


def _beat_schedule(spec: str) -> dict[str, dict[str, Any]]:
    tasks, period_ms, anchor_ms = (int(x) for x in spec.split(","))
    out: dict[str, dict[str, Any]] = {}
    for i in range(tasks):
        rate = FixedRate(period_ms, anchor_ms)
        out[f"w3-{i}"] = {
            "task": "bench.noop",
            "schedule": rate,
            "args": (f"w3-{i}", BeatLazyFunc(_due_of, rate)),
        }
    return out


if os.environ.get(BEAT_ENV):
    app.conf.beat_schedule = _beat_schedule(os.environ[BEAT_ENV])
