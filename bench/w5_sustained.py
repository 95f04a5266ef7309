"""W5 sustained: N recurring tasks each firing every second (fixed rate) for D seconds, on a real cluster.

Unlike W1 (one burst the leader sees coming) and W3 (200 tasks), W5 is a steady stream at the target
rate: N fires every second, spread evenly over the second by default (`--anchors spread`: task i's
anchor is i/N of a period after the common base), so no instant is a burst. Every fire of the load is
known ahead (fixed rate), as a production cron's are.

`--mode fixed` (default): N tasks (default 10,000), a D-second window (default 60: 600,000 fires).
`--ramp` (`--mode ramp`): one cluster, the rate stepped through `--ramp-rates` (tasks added at each
step), D seconds observed at each; stops after the first step not held. A step is held when its
lateness p99 is under 1 s and no fire of its window was lost. `--mode both`: the fixed runs, then a ramp
(with `--smoke`: both in one cluster, the ramp's rates above the fixed load's).

Per window (nominal times in [start, start + D s), opened `--settle-s` after the tasks were created):
fires expected (tasks x D) vs started; lost (no start within the grace after the window, `--grace-s`);
duplicated (a (task, nominal time) started twice); lateness = first start wall time
- nominal time: p50/p99/p99.9/max, and the share within +-1 s; CPU of the leader, of the followers
together and of the workers together per started fire (/proc, over the window); worker slot utilisation
(busy slot-seconds / available slot-seconds, sampled from each worker's Prometheus gauge: a slot is
busy from the lease offer until the result is stored, held starts included). Definition:
bench/README.md.

`--keep-executions K`: each task keeps K executions (its `retention.keep_executions`), so that from its
K-th fire on every fire also deletes its oldest execution, as on a node that has run for long (the
default keeps 1,000: ~17 minutes at one fire a second, longer than any window here). Without it the
figures are those of a young store.

Usage: .venv/bin/python bench/w5_sustained.py [--tasks 10000] [--seconds 60] [--runs 3]
       [--workers 2] [--capacity 5000] [--anchors spread|same] [--body-ms 0] [--keep-executions K]
       .venv/bin/python bench/w5_sustained.py --ramp [--ramp-rates 1000,2000,...] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, cpu_seconds, handler_spec, now_ms, wakeups
from bench.fire_book import FireBook, LedgerTail, Window
from bench.worker_probe import SlotSampler, attempts_ended, cpu_with_children, scrape, start_metered_workers
from cronraft.client import Client, every
from cronraft.proto.v1 import common_pb2

HELD_P99_MS = 1_000
DEFAULT_RAMP = ",".join(str(r) for r in range(1_000, 12_001, 1_000))


def _specs(args: argparse.Namespace, first: int, count: int, base: int) -> list[common_pb2.TaskSpec]:
    """`count` fixed-rate tasks w5-<first>..; anchors spread evenly over one period (or all at `base`)."""
    period = args.period_ms
    body: dict[str, Any] = {}
    if args.body_ms:
        body = {"handler": "bench.sleep", "args_json": json.dumps({"seconds": args.body_ms / 1000})}
    out = []
    for i in range(count):
        anchor = base if args.anchors == "same" else base + i * period // count
        spec = handler_spec(f"w5-{first + i}", every(period, anchor=anchor), **body)
        if args.keep_executions:
            spec.retention.keep_executions = args.keep_executions
        out.append(spec)
    return out


class Load:
    """One cluster, its metered workers and the fixed-rate tasks created so far."""

    def __init__(self, bc: BenchCluster, args: argparse.Namespace) -> None:
        self.bc = bc
        self.args = args
        self.ports = start_metered_workers(bc, args.workers, args.capacity)
        self.client = Client(bc.servers, timeout_s=120)
        self.tasks = 0
        self.tail = LedgerTail(bc.ledger_dir)
        self.book = FireBook()

    def grow(self, total: int) -> None:
        """Create tasks until `total` exist (the new ones spread over a period of their own)."""
        if total <= self.tasks:
            return
        base = now_ms() - now_ms() % self.args.period_ms
        self.client.import_tasks(_specs(self.args, self.tasks, total - self.tasks, base))
        self.tasks = total

    def observe(self, rate: int, seconds: int) -> tuple[Window, dict[str, Any]]:
        """Open a window `settle_s` from now and wait it out; the window and its probes."""
        args = self.args
        # Any D-second window holds D nominal times of each task (half-open), whatever its phase.
        start = now_ms() + int(args.settle_s * 1000)
        end = start + seconds * 1000
        window = Window(rate, self.tasks, start, end, fires_per_task=seconds * 1000 // args.period_ms)
        self.book.add_window(window)
        time.sleep(max(0.0, (start - now_ms()) / 1000))
        leader = self.bc.leader()
        assert leader.proc is not None
        nodes = {n.node_id: n.proc.pid for n in self.bc.cluster.nodes if n.proc is not None}
        workers = self.bc.worker_pids()
        ended0 = sum(attempts_ended(scrape(p)) for p in self.ports)
        cpu0 = {k: cpu_seconds(p) for k, p in nodes.items()}
        wcpu0 = [cpu_with_children(p) for p in workers]
        wake0 = {k: wakeups(p) for k, p in nodes.items()}
        wwake0 = [wakeups(p) for p in workers]
        index0 = self.client.cluster_status().commit_index  # Raft entries committed in the window
        sampler = SlotSampler(self.ports).start()
        time.sleep(max(0.0, (end - now_ms()) / 1000))
        sampler.stop()
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in nodes.items()}
        wake = {k: wakeups(p) - wake0[k] for k, p in nodes.items()}
        worker_wake = sum(wakeups(p) - w for p, w in zip(workers, wwake0, strict=True))
        worker_cpu = sum(cpu_with_children(p) - c for p, c in zip(workers, wcpu0, strict=True))
        ended = sum(attempts_ended(scrape(p)) for p in self.ports) - ended0
        entries = self.client.cluster_status().commit_index - index0
        after = self.bc.cluster.leader()
        probes = {
            "leader": leader.node_id,
            "leader_changed": after is None or after.node_id != leader.node_id,
            "leader_cpu_s": cpu[leader.node_id],
            "followers_cpu_s": sum(v for k, v in cpu.items() if k != leader.node_id),
            "workers_cpu_s": worker_cpu,
            "leader_wakeups": wake[leader.node_id],
            "followers_wakeups": sum(v for k, v in wake.items() if k != leader.node_id),
            "workers_wakeups": worker_wake,
            "leader_cpu_share": cpu[leader.node_id] / sampler.wall_s,
            "worker_attempts_succeeded": ended,
            "raft_entries": entries,
            "slot_utilisation_pct": sampler.utilisation() * 100,
            "slots_busy_mean": sampler.busy_slot_s / sampler.wall_s if sampler.wall_s else float("nan"),
            "slots_busy_peak": sampler.peak_running,
            "slots_available": sampler.capacity,
            "slot_samples": sampler.samples,
        }
        return window, probes

    def settle(self, window: Window) -> None:
        """Read the ledgers until every fire of `window` started or `grace_s` passed (the load goes on)."""
        deadline = time.monotonic() + self.args.grace_s
        while True:
            time.sleep(self.args.poll_s)
            self.book.add(self.tail.read())
            if self.book.complete(window) or time.monotonic() >= deadline:
                return

    def close(self) -> None:
        """Stop the workers before the nodes: a worker stopped together with the leader waits its whole
        shutdown grace (10 s) to report the leases it declines to a leader that is gone."""
        self.client.close()
        for worker_id in self.bc.workers:
            self.bc.cluster.core.kill(worker_id, signal.SIGTERM, timeout_s=15)


def figures(book: FireBook, window: Window, probes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {**book.figures(window), **probes}
    n = max(1, int(out["started"]))
    for part in ("leader", "followers", "workers"):
        out[f"{part}_cpu_ms_per_fire"] = out[f"{part}_cpu_s"] * 1000 / n
        # Sleeps and wake-ups of every thread (bench.common.wakeups): each costs 60-150 us of CPU here.
        out[f"{part}_wakeups_per_fire"] = out.get(f"{part}_wakeups", 0) / n
    out["nodes_cpu_ms_per_fire"] = out["leader_cpu_ms_per_fire"] + out["followers_cpu_ms_per_fire"]
    # Each entry costs every node a fixed price (a Raft round, a journal append, an apply transaction).
    out["raft_entries_per_fire"] = out["raft_entries"] / n
    out["held"] = out["lateness_ms_p99"] < HELD_P99_MS and out["lost"] == 0
    return out


def fixed_phase(load: Load, tasks: int, seconds: int) -> dict[str, Any]:
    t0 = time.monotonic()
    load.grow(tasks)
    import_s = time.monotonic() - t0
    window, probes = load.observe(tasks, seconds)
    load.settle(window)
    return {**figures(load.book, window, probes), "import_s": import_s}


def ramp_phase(load: Load, rates: list[int], seconds: int) -> dict[str, Any]:
    observed: list[tuple[Window, dict[str, Any]]] = []
    for rate in rates:
        load.grow(rate)
        window, probes = load.observe(rate, seconds)
        load.settle(window)
        observed.append((window, probes))
        step = figures(load.book, window, probes)
        print(f"[w5_ramp] {rate}/s: {_brief(step)}", flush=True)
        if not step["held"]:
            load.settle(window)  # one more grace for its late starts
            break
    load.book.add(load.tail.read())
    # Recomputed from everything read: a start that came after its step's grace is late, not lost.
    steps = [figures(load.book, w, p) for w, p in observed]
    best, first_failed = 0, None
    for s in steps:  # the rates held in a row from the first step
        if not s["held"]:
            first_failed = s["rate_per_s"]
            break
        best = s["rate_per_s"]
    out: dict[str, Any] = {
        "held_rate_per_s": best,
        "first_failed_rate_per_s": first_failed if first_failed is not None else float("nan"),
        "steps_run": len(steps),
        "steps": steps,
    }
    top = next((s for s in steps if s["rate_per_s"] == best), None)
    if top is not None:  # the held step's headline figures, for the summary table
        for key in ("lateness_ms_p99", "within_1s_pct", "leader_cpu_ms_per_fire", "slot_utilisation_pct"):
            out[f"held_{key}"] = top[key]
    return out


def session(args: argparse.Namespace, fixed: bool, ramp: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One cluster: the fixed window, then the ramp (its rates above the fixed load's), as asked."""
    rates = [int(r) for r in args.ramp_rates.split(",") if r.strip()]
    with BenchCluster(nodes=args.nodes, keep=args.keep, scheduler=_scheduler(args)) as bc:
        load = Load(bc, args)
        try:
            one = fixed_phase(load, args.tasks, args.seconds) if fixed else {}
            steps = ramp_phase(load, rates, args.ramp_seconds or args.seconds) if ramp else {}
        finally:
            load.close()
    return one, steps


def _scheduler(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.stage_lead_ms is None else {"stage_lead_ms": args.stage_lead_ms}


def _brief(step: dict[str, Any]) -> str:
    keys = ("started", "expected_fires", "lost", "duplicates", "lateness_ms_p99", "within_1s_pct", "held")
    return ", ".join(f"{k}={step[k]:.1f}" if isinstance(step[k], float) else f"{k}={step[k]}" for k in keys)


def main() -> None:
    p = base_parser("W5 sustained: N tasks firing every second, for D seconds (or a ramp of rates)")
    p.add_argument("--tasks", type=int, default=10_000, help="recurring tasks = fires/s (default 10,000)")
    p.add_argument("--seconds", type=int, default=60, help="observed window (default 60)")
    p.add_argument("--period-ms", type=int, default=1_000, help="fixed-rate period (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--capacity", type=int, default=5_000, help="slots per worker (default 5,000)")
    p.add_argument("--anchors", choices=("spread", "same"), default="spread", help="default: spread")
    p.add_argument("--body-ms", type=int, default=0, help="task body: 0 = bench.noop, else bench.sleep")
    p.add_argument("--settle-s", type=float, default=5.0, help="after creating tasks (default 5)")
    p.add_argument("--grace-s", type=float, default=10.0, help="wait for late starts (default 10)")
    p.add_argument("--stage-lead-ms", type=int, default=None, help="[scheduler] stage_lead_ms")
    p.add_argument(
        "--keep-executions", type=int, default=0, help="executions each task keeps (default: the cluster's)"
    )
    p.set_defaults(poll_s=1.0)
    p.add_argument("--mode", choices=("fixed", "ramp", "both"), default="fixed")
    p.add_argument("--ramp", action="store_const", dest="mode", const="ramp", help="= --mode ramp")
    p.add_argument("--ramp-rates", default=DEFAULT_RAMP, help="fires/s per step (default 1000..12000)")
    p.add_argument("--ramp-seconds", type=int, default=0, help="window per step (default --seconds)")
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.seconds, args.runs, args.workers, args.capacity = 20, 1, 1, 1, 100
        args.settle_s, args.grace_s, args.ramp_rates, args.ramp_seconds = 0.5, 5.0, "30,40", 1
        args.poll_s = 0.25
    if (args.seconds * 1000) % args.period_ms:
        sys.exit("--seconds must hold a whole number of periods")
    params = {
        "tasks": args.tasks,
        "seconds": args.seconds,
        "period_ms": args.period_ms,
        "workers": args.workers,
        "capacity": args.capacity,
        "anchors": args.anchors,
        "body_ms": args.body_ms,
        "nodes": args.nodes,
        "stage_lead_ms": args.stage_lead_ms,
        "keep_executions": args.keep_executions,
    }
    fixed_rec = Recorder("w5_sustained", params, out_dir=args.out_dir)
    ramp_params = {**params, "ramp_rates": args.ramp_rates, "ramp_seconds": args.ramp_seconds}
    ramp_rec = Recorder("w5_ramp", ramp_params, out_dir=args.out_dir)
    if args.smoke and args.mode == "both":  # both in one cluster: the smoke test's seconds
        one, steps = session(args, fixed=True, ramp=True)
        fixed_rec.add(one)
        ramp_rec.add(steps)
    else:
        for _ in range(args.runs if args.mode != "ramp" else 0):
            fixed_rec.add(session(args, fixed=True, ramp=False)[0])
        if args.mode != "fixed":
            ramp_rec.add(session(args, fixed=False, ramp=True)[1])
    for rec in (fixed_rec, ramp_rec):
        if rec.runs:
            rec.write()


if __name__ == "__main__":
    main()
