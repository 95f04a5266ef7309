"""W3 precision: T recurring tasks firing every P ms, observed for D seconds.

The tasks (fixed rate P, one common anchor: all T fire at the same instants) are created before the
window opens; every nominal time in [window start, window end) must start exactly once. Figures: start
lag distribution (start wall time - nominal time), the share of fires that started within +-50 ms,
+-100 ms and +-1 s of their nominal time, missed fires (a nominal time of the window with no start once
the window is over plus a grace) and duplicates. Definition: bench/README.md.

Usage: .venv/bin/python bench/w3_precision.py [--tasks 200] [--period-ms 1000] [--seconds 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, handler_spec, now_ms, sampled_cpu, summarize
from cronraft.client import Client, every

GRACE_S = 10.0


def run_once(args: argparse.Namespace) -> dict[str, object]:
    period = args.period_ms
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        bc.start_workers(args.workers, args.capacity)
        leader = bc.leader()
        assert leader.proc is not None
        anchor = now_ms() - now_ms() % 1000
        with Client(bc.servers, timeout_s=60) as client:
            created = client.import_tasks(
                handler_spec(f"w3-{i}", every(period, anchor=anchor)) for i in range(args.tasks)
            )
            ids = list(created.task_ids())
            # The window opens on the first whole period at least 2 s after the last create.
            start = now_ms() + (500 if args.smoke else 2_000)
            start += (period - (start - anchor) % period) % period
            end = start + args.seconds * 1000
            time.sleep(max(0.0, (start - now_ms()) / 1000))
            with sampled_cpu({"leader": leader.proc.pid}) as cpu:
                time.sleep(max(0.0, (end - now_ms()) / 1000))
            expected = {(t, n) for t in ids for n in range(start, end, period)}
            rows = bc.wait_ledger(
                lambda r: expected <= {(x.task_id, x.nominal_ms) for x in r}, GRACE_S, interval_s=0.5
            )
            for task_id in ids:  # stop the load before the cluster stops
                client.cancel_task(task_id)
    window = [r for r in rows if (r.task_id, r.nominal_ms) in expected]
    seen: dict[tuple[str, int], int] = {}
    for r in window:
        key = (r.task_id, r.nominal_ms)
        seen[key] = min(seen.get(key, r.start_ms), r.start_ms)
    lags = [s - n for (_, n), s in seen.items()]
    n = max(1, len(expected))

    def within(ms: int) -> float:
        return sum(1 for lag in lags if abs(lag) <= ms) / n * 100

    return {
        "expected_fires": len(expected),
        "started": len(seen),
        "missed": len(expected) - len(seen),
        "duplicates": len(window) - len(seen),
        "within_50ms_pct": within(50),
        "within_100ms_pct": within(100),
        "within_1s_pct": within(1000),
        **summarize(lags, "start_lag_ms"),
        "start_lag_ms_min": min(lags) if lags else float("nan"),
        "leader_cpu_share": cpu["leader"] / cpu["_wall_s"],
    }


def main() -> None:
    p = base_parser("W3 precision: recurring tasks every second")
    p.add_argument("--tasks", type=int, default=200, help="recurring tasks (default 200)")
    p.add_argument("--period-ms", type=int, default=1_000, help="fixed-rate period (default 1000)")
    p.add_argument("--seconds", type=int, default=60, help="observed window (default 60)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--capacity", type=int, default=500, help="slots per worker (default 500)")
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.seconds, args.runs, args.workers = 5, 2, 1, 1
    rec = Recorder(
        "w3_precision",
        {
            "tasks": args.tasks,
            "period_ms": args.period_ms,
            "seconds": args.seconds,
            "workers": args.workers,
            "capacity": args.capacity,
            "nodes": args.nodes,
        },
        out_dir=args.out_dir,
    )
    for _ in range(args.runs):
        rec.add(run_once(args))
    rec.write()


if __name__ == "__main__":
    main()
