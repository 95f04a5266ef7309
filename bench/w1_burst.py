"""W1 burst: N one-time tasks all due at the same instant, executed end to end by the no-op handler.

Figures: tasks/s from the due instant to the last start, start lag (start wall time - nominal time)
p50/p99/max, missing and duplicated starts, leader CPU during the burst. Definition: bench/README.md.

Usage: .venv/bin/python bench/w1_burst.py [--size 20000] [--runs 3] [--workers 2] [--capacity 10000]
       [--stage-lead-ms MS] [--stage-rate N]   ([scheduler] keys; default: the shipped defaults)
       [--py-spy FILE] [--py-spy-node leader|follower|worker]   (record a node during the first run's burst:
       py-spy raw file)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CLK_TCK,
    BenchCluster,
    Recorder,
    base_parser,
    cpu_seconds,
    handler_spec,
    now_ms,
    summarize,
)
from cronraft.client import Client, at


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """User and system CPU seconds of each thread of `pid`: "main" (the event loop) and the others by
    thread id (their names are all "python")."""
    out: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        name = "main" if task.name == str(pid) else task.name
        out[name] = (int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)
    return out


def run_once(args: argparse.Namespace, run: int) -> dict[str, object]:
    size: int = args.size
    scheduler = {}
    if args.stage_lead_ms is not None:
        scheduler["stage_lead_ms"] = args.stage_lead_ms
    if args.stage_rate is not None:
        scheduler["stage_rate"] = args.stage_rate
    with BenchCluster(nodes=args.nodes, keep=args.keep, scheduler=scheduler) as bc:
        bc.start_workers(args.workers, args.capacity)
        leader = bc.leader()
        assert leader.proc is not None
        # Creation is not measured: the tasks are imported ahead of the due instant (lead time).
        lead_ms = args.lead_ms or int(4_000 + size / 2.0)
        due = now_ms() + lead_ms
        due -= due % 1000
        template = handler_spec("w1", at(due))
        specs = []
        for i in range(size):
            s = type(template)()
            s.CopyFrom(template)
            s.name = f"w1-{i}"
            specs.append(s)
        with Client(bc.servers, timeout_s=120) as client:
            imported = client.import_tasks(specs)
        created_at = now_ms()
        # CPU is counted from here: a staged burst (docs/scheduling.md) commits before its due instant.
        pids = {n.node_id: n.proc.pid for n in bc.cluster.nodes if n.proc is not None}
        pids.update({f"worker{i}": pid for i, pid in enumerate(bc.worker_pids())})
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        cpu_t0 = time.monotonic()
        ids = set(imported.task_ids())
        if created_at >= due - 500:
            raise SystemExit(f"creating {size} tasks overran the due instant by {created_at - due + 500} ms")
        time.sleep(max(0.0, (due - now_ms() - 300) / 1000))
        cpu_due = {k: cpu_seconds(pid) for k, pid in pids.items()}  # the burst alone, without the idle wait
        # One follower's threads too (--threads), and py-spy on it (--py-spy-node follower); a single
        # node (--smoke, --nodes 1) has none.
        follower_id = next((k for k in pids if k.startswith("node") and k != leader.node_id), None)
        watched = [("leader", leader.node_id)] + ([("follower", follower_id)] if follower_id else [])
        threads_due = {n: thread_cpu(pids[n]) for _, n in watched} if args.threads else {}
        spy = None
        if args.py_spy and run == 1:
            spied = leader.proc.pid
            if args.py_spy_node == "follower" and follower_id is not None:
                spied = pids[follower_id]
            elif args.py_spy_node == "worker":
                spied = pids["worker0"]
            # From just before the due instant (the import and the idle wait would dilute the profile),
            # for the burst's expected length unless --py-spy-s says.
            duration = args.py_spy_s or max(5, int(size / 2_000) + 3)
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(spied),
                    "-d",
                    str(duration),
                    "-r",
                    str(args.py_spy_rate),
                    "--gil",
                    "-f",
                    "raw",
                    "-o",
                    str(args.py_spy),
                ],
                stdout=subprocess.DEVNULL,
            )
        timeout_s = 120 + size / 100
        rows = bc.wait_ledger(lambda r: len({x.task_id for x in r}) >= size, timeout_s)
        wall = time.monotonic() - cpu_t0  # the CPU window: from the end of the import
        cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
        leader_cpu = cpu[leader.node_id]
        leader_burst_cpu = cpu_seconds(pids[leader.node_id]) - cpu_due[leader.node_id]
        threads: dict[str, float] = {}
        if args.threads:  # the burst's CPU by thread, the leader's and one follower's: main thread first
            for role, node in watched:
                spent = [
                    (
                        name,
                        user - threads_due[node].get(name, (0.0, 0.0))[0],
                        system - threads_due[node].get(name, (0.0, 0.0))[1],
                    )
                    for name, (user, system) in thread_cpu(pids[node]).items()
                ]
                spent.sort(key=lambda t: (t[0] != "main", -(t[1] + t[2])))
                for rank, (name, user, system) in enumerate(spent[:4]):
                    key = "main" if name == "main" else f"other{rank}"
                    threads[f"{role}_thread_{key}_user_ms_per_task"] = user * 1000 / size
                    threads[f"{role}_thread_{key}_sys_ms_per_task"] = system * 1000 / size
        follower_cpu = sum(v for k, v in cpu.items() if k.startswith("node") and k != leader.node_id)
        worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker"))
        if spy is not None:
            spy.wait()
    ours = [r for r in rows if r.task_id in ids]
    first: dict[str, int] = {}
    for r in ours:
        first[r.task_id] = min(first.get(r.task_id, r.start_ms), r.start_ms)
    pairs = {(r.task_id, r.nominal_ms) for r in ours}
    starts = sorted(first.values())
    last = starts[-1] if starts else due
    span_s = max(1e-3, (last - due) / 1000)
    lags = [s - due for s in starts]
    figures: dict[str, object] = {
        "tasks": size,
        "started": len(first),
        "missing": size - len(first),
        "duplicates": len(ours) - len(pairs),
        "tasks_per_s": len(first) / span_s,
        "last_start_after_due_ms": last - due,
        **summarize(lags, "start_lag_ms"),
        "leader_cpu_s": leader_cpu,
        "leader_cpu_share": leader_cpu / wall if wall else float("nan"),
        # CPU of the whole system per executed task: what bounds tasks/s when the cores are shared.
        "leader_cpu_ms_per_task": leader_cpu * 1000 / max(1, len(first)),
        "leader_burst_cpu_ms_per_task": leader_burst_cpu * 1000 / max(1, len(first)),
        "followers_cpu_ms_per_task": follower_cpu * 1000 / max(1, len(first)),
        "workers_cpu_ms_per_task": worker_cpu * 1000 / max(1, len(first)),
        "lead_ms": lead_ms,
        **threads,
        "import_s": (created_at - (due - lead_ms)) / 1000,
    }
    return figures


def main() -> None:
    p = base_parser("W1 burst: N one-time tasks due at one instant")
    p.add_argument("--size", type=int, default=20_000, help="tasks (default 20,000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--capacity", type=int, default=10_000, help="slots per worker (default 10,000)")
    p.add_argument("--stage-lead-ms", type=int, default=None, help="[scheduler] stage_lead_ms (0: off)")
    p.add_argument("--stage-rate", type=int, default=None, help="[scheduler] stage_rate")
    p.add_argument("--lead-ms", type=int, default=0, help="due instant after start (default 4 s + N/2 ms)")
    p.add_argument("--py-spy", type=Path, default=None, help="record the leader during run 1 (raw format)")
    p.add_argument(
        "--py-spy-s", type=int, default=0, help="py-spy seconds from the due instant (0: N/2000 + 3)"
    )
    p.add_argument(
        "--threads",
        action="store_true",
        help="the burst CPU by thread (user / sys) of the leader and one follower",
    )
    p.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument(
        "--py-spy-node",
        choices=("leader", "follower", "worker"),
        default="leader",
        help="the process --py-spy records (worker: the first worker)",
    )
    args = p.parse_args()
    if args.smoke:
        args.size, args.runs, args.workers, args.capacity = 200, 1, 1, 200
        args.lead_ms = args.lead_ms or 2_000
    rec = Recorder(
        "w1_burst",
        {
            "size": args.size,
            "workers": args.workers,
            "capacity": args.capacity,
            "nodes": args.nodes,
            "stage_lead_ms": args.stage_lead_ms,
            "stage_rate": args.stage_rate,
        },
        out_dir=args.out_dir,
    )
    for run in range(1, args.runs + 1):
        rec.add(run_once(args, run))
    rec.write()


if __name__ == "__main__":
    main()
