"""Search and statistics at scale (issue 15): latency of each kind of query over a store of 1 M tasks.

The store is built in process, through the state machine itself (the indexes are what apply keeps): an
LMDB store under `--dir`, filled with `--tasks` tasks by ImportTasks commands (cron 60 %, at 20 %,
fixed_rate 10 %, fixed_delay 10 %; 50 teams as tags, names `teamNN-job-NNNNNNN`, one task in ten in one of
five namespaces), then `--executions` executions triggered, granted and completed over 48 hours of
stamped time (50 workers; succeeded, failed, timed out, cancelled; a few left pending or running).
A store already filled to the same size is reused (`--dir` kept between runs).

Then each query kind runs `--queries` times with random parameters on a read transaction, as a servicer
runs it (raft.search, raft.stats; no gRPC): the first page of 100, then the next page from its token.
Figures per kind: p50 / p99 / max milliseconds. Target: p99 under 100 ms at 1 M tasks.

Usage: .venv/bin/python bench/search.py [--tasks 1000000] [--executions 300000] [--queries 200]
       [--dir /var/tmp/cronraft-search-bench] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, Recorder, summarize
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import search, stats
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import Txn
from cronraft.raft.state import StateMachine, read_task
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
TEAMS = 50
WORKERS = 50
NAMESPACES = ("alpha", "beta", "gamma", "delta", "eps")
Command = commands_pb2.Command
S = common_pb2


class Filler:
    def __init__(self, kv: LmdbKV) -> None:
        self.sm = StateMachine(kv)
        self.index = self.sm.last_applied()

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)


def _spec(i: int) -> S.TaskSpec:
    roll = i % 10
    if roll < 6:
        sched = S.Schedule(cron=S.CronSchedule(expression=("*/5 * * * *", "0 * * * *", "30 3 * * *")[i % 3]))
    elif roll < 8:
        sched = S.Schedule(at=S.AtSchedule(at_ms=T0 + 24 * HOUR + (i * 7919) % (30 * 24 * HOUR)))
    elif roll < 9:
        sched = S.Schedule(fixed_rate=S.FixedRateSchedule(period_ms=(1 + i % 60) * 60_000))
    else:
        sched = S.Schedule(fixed_delay=S.FixedDelaySchedule(delay_ms=(1 + i % 60) * 60_000))
    team = i % TEAMS
    spec = S.TaskSpec(
        name=f"team{team:02d}-job-{i:07d}",
        schedule=sched,
        payload=S.Payload(command=S.CommandPayload(argv=["true"])),
        namespace=NAMESPACES[(i // 10) % len(NAMESPACES)] if i % 10 == 7 else "",
    )
    spec.tags["team"] = f"t{team:02d}"
    spec.tags["env"] = "prod" if i % 3 else "staging"
    return spec


def task_id(i: int) -> str:
    return make_id(T0, i.to_bytes(10, "big"))


def fill(kv: LmdbKV, tasks: int, executions: int, seed: int = 1) -> None:
    f = Filler(kv)
    f.apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="bench"))])
    t = time.monotonic()
    for start in range(0, tasks, 1000):
        specs = [_spec(i) for i in range(start, min(tasks, start + 1000))]
        imp = commands_pb2.ImportTasks(first_task_id=task_id(start), specs=specs)
        (r,) = f.apply([Command(stamped_at_ms=T0, import_tasks=imp)])
        assert r.applied, r.error
        if start and start % 100_000 == 0:
            print(f"[search] {start:,} tasks ({time.monotonic() - t:.0f} s)", flush=True)
    rnd = random.Random(seed)
    at = T0 + HOUR
    step = 48 * HOUR // max(1, executions)
    batch = 500
    n = 0
    t = time.monotonic()
    while n < executions:
        chunk = []
        for _ in range(min(batch, executions - n)):
            at += step
            chunk.append((task_id(rnd.randrange(tasks)), make_id(at, (10**9 + n).to_bytes(10, "big")), at))
            n += 1
        f.apply(
            [
                Command(stamped_at_ms=a, trigger_task=commands_pb2.TriggerTask(task_id=tk, execution_id=e))
                for tk, e, a in chunk
            ]
        )
        kept = [c for c in chunk if rnd.random() >= 0.02]  # 2 % stay pending
        grants = f.apply(
            [
                Command(
                    stamped_at_ms=a + 5,
                    grant=commands_pb2.Grant(execution_id=e, worker_id=f"w{rnd.randrange(WORKERS):02d}"),
                )
                for _, e, a in kept
            ]
        )
        done = []
        for (_, e, a), g in zip(kept, grants, strict=True):
            roll = rnd.random()
            if roll < 0.02 or not g.applied:
                continue  # stays running
            outcome = (
                S.ATTEMPT_SUCCEEDED
                if roll < 0.9
                else S.ATTEMPT_FAILED
                if roll < 0.97
                else S.ATTEMPT_TIMED_OUT
                if roll < 0.99
                else S.ATTEMPT_CANCELLED
            )
            run_ms = int(rnd.lognormvariate(7, 1.5))
            result = S.AttemptResult(
                execution_id=e,
                token=g.execution.token,
                outcome=outcome,
                started_at_ms=a + 10,
                finished_at_ms=a + 10 + run_ms,
                stdout_tail=b"ok\n",
            )
            done.append(
                Command(
                    stamped_at_ms=a + 10 + run_ms,
                    complete=commands_pb2.Complete(execution_id=e, token=g.execution.token, result=result),
                )
            )
        f.apply(done)
        if n % 50_000 < batch:
            print(f"[search] {n:,} executions ({time.monotonic() - t:.0f} s)", flush=True)
    kv.close()


class Window(TypedDict):
    """The fields of an `ExecutionQuery`'s time window, passed as keywords."""

    since_ms: int
    until_ms: int


class NextWindow(TypedDict):
    """The fields of a `TaskQuery`'s window of next due times, passed as keywords."""

    next_after_ms: int
    next_before_ms: int


def queries(rnd: random.Random, txn: Txn, tasks: int, now: int) -> dict[str, Callable[[], Any]]:
    """Each query kind: a function running one random query of that kind (first page, then the next)."""
    Q, TQ = search.ExecutionQuery, search.TaskQuery

    def pages(make: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            q = make()
            fn: Callable[..., tuple[list[Any], str]] = (
                search.search_executions if isinstance(q, Q) else search.search_tasks
            )
            page, token = fn(txn, q, page_size=100)
            if token:
                fn(txn, q, page_size=100, page_token=token)
            return page

        return run

    def window() -> Window:
        since = T0 + HOUR + rnd.randrange(46) * HOUR
        return {"since_ms": since, "until_ms": since + HOUR}

    def team() -> tuple[tuple[str, str], ...]:
        return (("team", f"t{rnd.randrange(TEAMS):02d}"),)

    def next_hour() -> NextWindow:
        after = now + rnd.randrange(24) * HOUR
        return {"next_after_ms": after, "next_before_ms": after + HOUR}

    def task_stats() -> Any:
        t = read_task(txn, task_id(rnd.randrange(tasks)))
        assert t is not None
        return stats.task_stats(txn, t, since_ms=now - 24 * HOUR, now_ms=now)

    failed = frozenset({S.EXECUTION_FAILED})
    kinds = ["cron", "at", "fixed_rate", "fixed_delay"]
    return {
        "exec_recent": pages(Q),
        "exec_by_task": pages(lambda: Q(task_id=task_id(rnd.randrange(tasks)))),
        "exec_failed": pages(lambda: Q(states=failed)),
        "exec_failed_or_timed_out": pages(lambda: Q(states=failed | {S.EXECUTION_TIMED_OUT})),
        "exec_running": pages(lambda: Q(states=frozenset({S.EXECUTION_RUNNING}))),
        "exec_by_worker": pages(lambda: Q(worker_id=f"w{rnd.randrange(WORKERS):02d}")),
        "exec_by_tag": pages(lambda: Q(tags=team())),
        "exec_by_namespace": pages(lambda: Q(namespace=rnd.choice(NAMESPACES))),
        "exec_fired_window": pages(lambda: Q(**window())),
        "exec_failed_completed_window": pages(lambda: Q(by_completed=True, states=failed, **window())),
        "task_by_kind": pages(lambda: TQ(kind=rnd.choice(kinds))),
        "task_next_hour": pages(lambda: TQ(**next_hour())),
        "task_last_failed": pages(lambda: TQ(last_outcomes=failed)),
        "task_by_tag": pages(lambda: TQ(tags=team())),
        "task_by_name_prefix": pages(lambda: TQ(name_prefix=f"team{rnd.randrange(TEAMS):02d}-job-00")),
        "task_by_namespace": pages(lambda: TQ(namespace=rnd.choice(NAMESPACES))),
        "task_stats": task_stats,
        "cluster_stats": lambda: stats.cluster_stats(txn, since_ms=now - 24 * HOUR, now_ms=now, limit=10),
    }


def measure(kv: LmdbKV, tasks: int, n: int, seed: int = 2) -> dict[str, float]:
    rnd = random.Random(seed)
    now = T0 + 49 * HOUR
    figures: dict[str, float] = {}
    with kv.read() as txn:
        kinds = queries(rnd, txn, tasks, now)
        for kind, run in kinds.items():
            run()  # warm the pages this kind touches first
            times = []
            for _ in range(n):
                t = time.perf_counter()
                run()
                times.append((time.perf_counter() - t) * 1000)
            s = summarize(times, kind + "_ms")
            figures.update({k: s[k] for k in (f"{kind}_ms_p50", f"{kind}_ms_p99", f"{kind}_ms_max")})
            print(
                f"[search] {kind:30s} p50 {s[kind + '_ms_p50']:7.2f} ms  p99 {s[kind + '_ms_p99']:7.2f} ms  "
                f"max {s[kind + '_ms_max']:7.2f} ms",
                flush=True,
            )
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--executions", type=int, default=300_000)
    p.add_argument("--queries", type=int, default=200, help="queries of each kind")
    p.add_argument("--dir", type=Path, default=None, help="the store (kept, and reused at the same size)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script works")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.executions, args.queries = 5_000, 2_000, 5
    tmp = None
    if args.dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="cronraft-search-bench-"))
        args.dir = tmp
    marker = args.dir / f"filled-{args.tasks}-{args.executions}"
    store = args.dir / "store"
    try:
        if not marker.exists():
            shutil.rmtree(store, ignore_errors=True)
            t = time.monotonic()
            fill(LmdbKV(store, map_size=64 << 30), args.tasks, args.executions)
            print(f"[search] filled in {time.monotonic() - t:.0f} s", flush=True)
            marker.touch()
        kv = LmdbKV(store, map_size=64 << 30)
        rec = Recorder(
            "search",
            {"tasks": args.tasks, "executions": args.executions, "queries": args.queries, "page_size": 100},
            out_dir=args.out_dir,
        )
        figures = measure(kv, args.tasks, args.queries)
        figures["worst_p99_ms"] = max(v for k, v in figures.items() if k.endswith("_p99"))
        rec.add(figures)
        rec.write()
        kv.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
