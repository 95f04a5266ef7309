"""CPU of the node's per-execution metrics (issue 16): `NodeMetrics.observe_committed` on a batch of
completes as the leader commits them, and `timed_apply_many`'s observations on a group of entries.

The batch: N `complete` commands, each with the result a success records (the execution in `execution`
and in `executions`, final, one attempt that ran, a scheduled execution's first attempt: lateness and
duration both observed, finished counted by state and guarantee).

Usage: .venv/bin/python bench/perf_metrics.py [--n 1000] [--repeat 200] [--module FILE]
  --module FILE: time another daemon/metrics.py (e.g. the one before a change, `git show REV:path`),
                 loaded in place of cronraft.daemon.metrics.
Prints microseconds per command (best of the repeats, process CPU time) for each part.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.proto.v1 import commands_pb2, common_pb2


def _module(path: str | None) -> ModuleType:
    if path is None:
        from cronraft.daemon import metrics

        return metrics
    spec = importlib.util.spec_from_file_location("cronraft.daemon.metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def completes(n: int) -> tuple[list[commands_pb2.Command], list[commands_pb2.CommandResult]]:
    now = 1_800_000_000_000
    cmds, results = [], []
    for i in range(n):
        ex_id = f"{i:032x}"
        cmds.append(
            commands_pb2.Command(stamped_at_ms=now, complete=commands_pb2.Complete(execution_id=ex_id))
        )
        ex = common_pb2.Execution(
            execution_id=ex_id,
            task_id=f"{i:032x}",
            nominal_time_ms=now - 2_000,
            state=common_pb2.EXECUTION_SUCCEEDED,
            attempt=1,
            completed_at_ms=now,
            guarantee=common_pb2.AT_LEAST_ONCE,
            attempts=[
                common_pb2.AttemptSummary(
                    attempt=1,
                    worker_id="w1",
                    outcome=common_pb2.ATTEMPT_SUCCEEDED,
                    started_at_ms=now - 1_990 + i % 50,
                    finished_at_ms=now - 10,
                )
            ],
        )
        results.append(commands_pb2.CommandResult(applied=True, execution=ex, executions=[ex]))
    return cmds, results


def best_us(fn: object, repeat: int, per: int) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time_ns()
        fn()
        best = min(best, time.process_time_ns() - t)
    return best / 1000 / per


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--module")
    args = p.parse_args()
    mod = _module(args.module)
    metrics = mod.NodeMetrics()
    cmds, results = completes(args.n)
    observe = best_us(lambda: metrics.observe_committed(cmds, results), args.repeat, args.n)
    # An entry of one command each, as a group of N entries applied in one transaction.
    one = commands_pb2.BatchResult(results=[results[0]]).SerializeToString()
    group = [(i, b"") for i in range(args.n)]
    timed = metrics.timed_apply_many(lambda entries, unread: [one] * len(entries))
    apply = best_us(lambda: timed(group, ()), args.repeat, args.n)
    print(
        f"{args.module or 'cronraft.daemon.metrics'}: observe_committed {observe:.2f} us/complete "
        f"(batch of {args.n}); timed_apply_many {apply:.2f} us/entry (group of {args.n}, the apply "
        "function's own time included: a list of the same result)"
    )


if __name__ == "__main__":
    main()
