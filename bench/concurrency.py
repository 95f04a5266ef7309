"""Concurrency: many executions holding leases at once, and many worker streams on one leader.

`leases`: N one-time tasks due at one instant whose handler (`bench.sleep`) holds its lease for a long
time, over W worker processes of N/W slots each. Once every execution started (or the start timeout
passed), the leader is observed for `--window-s` seconds while all leases are held and renewed by the
workers' heartbeats. Figures: executions holding a lease at once (started, none finished yet), time to
start them all, leader CPU share and RSS while holding them, leader CPU per renewed lease.

`streams`: S simulated workers (bench/sim_agents.py: Hello, then one empty Heartbeat per interval) in P
processes, connected to the leader. Once `connected_workers` reaches S, the leader is observed for
`--window-s` seconds. Figures: streams connected, leader CPU share and RSS (and RSS growth per stream),
leader CPU per heartbeat. Definition: bench/README.md.

Usage: .venv/bin/python bench/concurrency.py --part leases [--executions 100000] [--workers 4]
       .venv/bin/python bench/concurrency.py --part streams [--streams 10000] [--agent-procs 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchCluster,
    Recorder,
    base_parser,
    cpu_seconds,
    handler_spec,
    now_ms,
    rss_bytes,
    sampled_cpu,
    wait_for,
)
from cronraft.client import Client, at
from cronraft.proto.v1 import common_pb2

HEARTBEAT_MS = 2_000


def leases(args: argparse.Namespace) -> dict[str, object]:
    n = args.executions
    hold_s = args.hold_s or (120 + n / 200 + args.window_s)
    with BenchCluster(nodes=args.nodes, keep=args.keep, heartbeat_interval_ms=HEARTBEAT_MS) as bc:
        bc.start_workers(args.workers, -(-n // args.workers) + 10)
        leader = bc.leader()
        assert leader.proc is not None
        rss0 = rss_bytes(leader.proc.pid)
        due = now_ms() + (1_000 if args.smoke else 3_000) + n // 2
        template = handler_spec(
            "conc", at(due), handler="bench.sleep", args_json=json.dumps({"seconds": hold_s})
        )
        template.timeout_ms = int(hold_s * 1000) + 600_000

        def specs() -> Iterator[common_pb2.TaskSpec]:
            for i in range(n):
                s = type(template)()
                s.CopyFrom(template)
                s.name = f"conc-{i}"
                yield s

        with Client(bc.servers, timeout_s=120) as client:
            client.import_tasks(specs())
        time.sleep(max(0.0, (due - now_ms()) / 1000))
        t0 = time.monotonic()
        rows = bc.wait_ledger(lambda r: len(r) >= n, timeout_s=args.start_timeout_s, interval_s=1.0)
        start_all_s = time.monotonic() - t0
        started = len({r.execution_id for r in rows})
        pids = {"leader": leader.proc.pid, **{f"w{i}": p for i, p in enumerate(bc.worker_pids())}}
        with sampled_cpu(pids) as cpu:
            time.sleep(args.window_s)
        rows = bc.ledger()
        first_start = min((r.start_ms for r in rows), default=due)
        held = sum(1 for r in rows if r.start_ms < first_start + hold_s * 1000)
        leader_rss = rss_bytes(leader.proc.pid)
        renewals = held * args.window_s / (HEARTBEAT_MS / 1000)
        worker_cpu = sum(v for k, v in cpu.items() if k.startswith("w"))
    return {
        "executions": n,
        "started": started,
        "held_at_once": held,
        "start_all_s": start_all_s,
        "start_rate_per_s": started / start_all_s if start_all_s else 0,
        "leader_cpu_share": cpu["leader"] / cpu["_wall_s"],
        "workers_cpu_share": worker_cpu / cpu["_wall_s"],
        "leader_rss_bytes": leader_rss,
        "leader_rss_growth_bytes": leader_rss - rss0,
        "leader_cpu_us_per_renewal": cpu["leader"] * 1e6 / renewals if renewals else float("nan"),
    }


def streams(args: argparse.Namespace) -> dict[str, object]:
    s = args.streams
    procs_n = max(1, args.agent_procs)
    seconds = args.ramp_s + args.window_s + 60
    with BenchCluster(nodes=args.nodes, keep=args.keep, heartbeat_interval_ms=HEARTBEAT_MS) as bc:
        leader = bc.leader()
        assert leader.proc is not None
        rss0 = rss_bytes(leader.proc.pid)
        cpu0 = cpu_seconds(leader.proc.pid)
        term0 = leader.status().term
        agents = []
        for p in range(procs_n):
            count = s // procs_n + (1 if p < s % procs_n else 0)
            agents.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve().parent / "sim_agents.py"),
                        "--server",
                        leader.grpc_address,
                        "--agents",
                        str(count),
                        "--seconds",
                        str(seconds),
                        "--prefix",
                        f"sim{p}",
                        "--ramp-s",
                        str(args.ramp_s),
                        "--channels",
                        str(max(1, count // 100)),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        t0 = time.monotonic()
        try:
            wait_for(
                lambda: leader.status(timeout_s=5).connected_workers >= s,
                args.ramp_s + 120,
                f"{s} connected streams",
                interval_s=1.0,
            )
            connect_s = time.monotonic() - t0
        except AssertionError:
            connect_s = float("nan")
        status = leader.status(timeout_s=10)
        connected = status.connected_workers
        still_leader = status.is_leader and status.term == term0  # an overloaded leader may lose its term
        ramp_cpu = cpu_seconds(leader.proc.pid) - cpu0
        with sampled_cpu({"leader": leader.proc.pid}) as cpu:
            time.sleep(args.window_s)
        leader_rss = rss_bytes(leader.proc.pid)
        reports = []
        for a in agents:
            a.terminate()  # the agents close their streams and report
        for a in agents:
            out, _ = a.communicate(timeout=60)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if lines:
                reports.append(json.loads(lines[-1]))
    # Idle agents heartbeat at the leader's idle interval (LeaderSettings: 1,000 workers per interval).
    idle_ms = HEARTBEAT_MS * max(1, -(-connected // 1_000))
    heartbeats = connected * args.window_s / (idle_ms / 1000)
    return {
        "idle_heartbeat_interval_ms": idle_ms,
        "streams": s,
        "connected": connected,
        "connect_s": connect_s,
        "leader_kept_its_term": still_leader,
        "agents_failed": sum(r["failed"] for r in reports),
        "leader_cpu_share": cpu["leader"] / cpu["_wall_s"],
        "leader_cpu_s_during_connect": ramp_cpu,
        "leader_rss_bytes": leader_rss,
        "leader_rss_bytes_per_stream": (leader_rss - rss0) / max(1, connected),
        "heartbeats_per_s": heartbeats / args.window_s,
        "leader_cpu_us_per_heartbeat": cpu["leader"] * 1e6 / heartbeats if heartbeats else float("nan"),
    }


def main() -> None:
    p = base_parser("Concurrency: leases held at once, worker streams on one leader", runs=1)
    p.add_argument("--part", choices=["leases", "streams", "both"], default="both")
    p.add_argument("--executions", type=int, default=100_000, help="leases held at once (default 100,000)")
    p.add_argument("--workers", type=int, default=4, help="worker processes for the leases (default 4)")
    p.add_argument("--hold-s", type=float, default=0.0, help="how long each execution runs (default: enough)")
    p.add_argument("--start-timeout-s", type=float, default=900.0)
    p.add_argument("--streams", type=int, default=10_000, help="simulated worker streams (default 10,000)")
    p.add_argument("--agent-procs", type=int, default=4, help="processes of simulated agents (default 4)")
    p.add_argument("--ramp-s", type=float, default=30.0, help="spread the stream connections (default 30 s)")
    p.add_argument("--window-s", type=float, default=30.0, help="observation window (default 30 s)")
    args = p.parse_args()
    if args.smoke:
        args.executions, args.workers, args.hold_s, args.start_timeout_s = 50, 1, 4.0, 30.0
        args.streams, args.agent_procs, args.ramp_s, args.window_s, args.runs = 50, 1, 0.5, 1.0, 1
    parts = ["leases", "streams"] if args.part == "both" else [args.part]
    for part in parts:
        params = (
            {"executions": args.executions, "workers": args.workers, "window_s": args.window_s}
            if part == "leases"
            else {"streams": args.streams, "agent_procs": args.agent_procs, "window_s": args.window_s}
        )
        rec = Recorder(
            f"concurrency_{part}",
            {**params, "heartbeat_interval_ms": HEARTBEAT_MS, "nodes": args.nodes},
            out_dir=args.out_dir,
        )
        for _ in range(args.runs):
            rec.add(leases(args) if part == "leases" else streams(args))
        rec.write()


if __name__ == "__main__":
    main()
