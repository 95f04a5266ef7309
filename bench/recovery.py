"""Recovery: SIGKILL the leader under a steady load of fires; how long until the new leader dispatches,
and until the fires that fell due meanwhile (the backlog) have all started.

Load: T recurring tasks (fixed rate P, anchors spread evenly over the period: T/P fires per second,
evenly), no-op handler, W workers. After `--warm-s` seconds the leader gets SIGKILL at wall time K.
Figures, from the workers' ledgers (each row carries its lease's term):
- first dispatch: the first start of a lease granted in a later term than the old leader's, minus K;
- backlog drained: the fires whose nominal time is in [K, first dispatch) are the backlog; the time
  from K until the last of them started;
- election: from K until a node reports itself ready leader (polled every 50 ms);
- missed: nominal times in [K - warm, K + observe - grace] with no start; duplicates: a (task, nominal
  time) started twice (at-least-once: an attempt running during the kill may be re-run).
Definition: bench/README.md.

Usage: .venv/bin/python bench/recovery.py [--tasks 100] [--period-ms 1000] [--warm-s 10]
       [--observe-s 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, handler_spec, now_ms, summarize
from cronraft.client import Client, every

GRACE_MS = 5_000


def run_once(args: argparse.Namespace) -> dict[str, object]:
    period = args.period_ms
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        bc.start_workers(args.workers, args.capacity)
        old = bc.leader()
        old_term = old.status().term
        base = now_ms() - now_ms() % period
        with Client(bc.servers, timeout_s=60) as client:
            created = client.import_tasks(
                handler_spec(f"rec-{i}", every(period, anchor=base + i * period // args.tasks))
                for i in range(args.tasks)
            )
        ids = set(created.task_ids())
        load_start = now_ms() + 1_000
        time.sleep(args.warm_s)
        _, kill_ms = bc.kill_leader()
        election_ms = float("nan")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if bc.cluster.leader() is not None:
                election_ms = now_ms() - kill_ms
                break
            time.sleep(0.05)
        end = kill_ms + args.observe_s * 1000
        time.sleep(max(0.0, (end - now_ms()) / 1000))
        rows = [r for r in bc.ledger() if r.task_id in ids]
    new_starts = [r.start_ms for r in rows if r.token_term > old_term]
    first_dispatch = min(new_starts) if new_starts else None
    first: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r.task_id, r.nominal_ms)
        first[key] = min(first.get(key, r.start_ms), r.start_ms)
    duplicates = len(rows) - len(first)
    # Every nominal time of every task inside the observed window must have started. Import ids are
    # consecutive in spec order, so sorted ids line up with the anchors.
    lo, hi = load_start, end - GRACE_MS
    expected = set()
    for i, task_id in enumerate(sorted(ids)):
        anchor = base + i * period // args.tasks
        n = anchor + max(0, -(-(lo - anchor) // period)) * period
        while n < hi:
            expected.add((task_id, n))
            n += period
    backlog = [
        s for (_, n), s in first.items() if first_dispatch is not None and kill_ms <= n < first_dispatch
    ]
    steady = [s - n for (_, n), s in first.items() if lo <= n < kill_ms - 1_000]
    return {
        "fires_per_s": args.tasks * 1000 / period,
        "election_ms": election_ms,
        "first_dispatch_after_kill_ms": (first_dispatch - kill_ms) if first_dispatch else float("nan"),
        "backlog_fires": len(backlog),
        "backlog_drained_after_kill_ms": (max(backlog) - kill_ms) if backlog else float("nan"),
        "expected_fires": len(expected),
        "missed": len(expected - first.keys()),
        "duplicates": duplicates,
        **summarize(steady, "steady_lag_ms"),
    }


def main() -> None:
    p = base_parser("Recovery: leader SIGKILL under a steady load of fires")
    p.add_argument("--tasks", type=int, default=100, help="recurring tasks (default 100)")
    p.add_argument("--period-ms", type=int, default=1_000, help="their period (default 1000)")
    p.add_argument("--warm-s", type=float, default=10.0, help="load before the kill (default 10 s)")
    p.add_argument("--observe-s", type=float, default=20.0, help="observed after the kill (default 20 s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=500)
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.warm_s, args.observe_s, args.runs, args.workers = 5, 2.0, 7.0, 1, 1
    rec = Recorder(
        "recovery",
        {
            "tasks": args.tasks,
            "period_ms": args.period_ms,
            "warm_s": args.warm_s,
            "observe_s": args.observe_s,
            "workers": args.workers,
            "nodes": args.nodes,
        },
        out_dir=args.out_dir,
    )
    for _ in range(args.runs):
        rec.add(run_once(args))
    rec.write()


if __name__ == "__main__":
    main()
