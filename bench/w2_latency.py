"""W2 scheduling latency: sequential creates of one-time tasks due in an hour, as a client sees them.

One client (a sync `Client`, one gRPC channel): W warm-up calls, then N timed calls in a row; each call
returns once the create is committed on a majority (durability "replicated") and applied on the leader.
Then C concurrent clients (C `AsyncClient`s, one channel each, in one process), each making N / C calls
in a row. Figures: latency p50/p99/max (ms) and calls/s, for both. Definition: bench/README.md.

Usage: .venv/bin/python bench/w2_latency.py [--calls 5000] [--warmup 100] [--clients 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, now_ms, sampled_cpu, summarize
from cronraft.client import AsyncClient, Client, at, command


def sequential(servers: str, warmup: int, calls: int) -> tuple[list[float], float]:
    due = now_ms() + 3_600_000
    payload = command("true")
    with Client(servers, timeout_s=30) as client:
        for i in range(warmup):
            client.create_task(f"w2-warm-{i}", at(due), payload)
        lat: list[float] = []
        t0 = time.perf_counter()
        for i in range(calls):
            c0 = time.perf_counter()
            client.create_task(f"w2-seq-{i}", at(due), payload)
            lat.append((time.perf_counter() - c0) * 1000)
        elapsed = time.perf_counter() - t0
    return lat, calls / elapsed


async def concurrent(servers: str, warmup: int, calls: int, clients: int) -> tuple[list[float], float]:
    due = now_ms() + 3_600_000
    payload = command("true")
    lat: list[float] = []
    per_client = max(1, calls // clients)

    async def one(n: int, client: AsyncClient) -> None:
        for i in range(per_client):
            c0 = time.perf_counter()
            await client.create_task(f"w2-c{n}-{i}", at(due), payload)
            lat.append((time.perf_counter() - c0) * 1000)

    conns = [AsyncClient(servers, timeout_s=30) for _ in range(clients)]
    try:
        for n, client in enumerate(conns):  # warm every channel
            for i in range(max(1, warmup // clients)):
                await client.create_task(f"w2-cwarm-{n}-{i}", at(due), payload)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(n, c) for n, c in enumerate(conns)))
        elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            await c.close()
    return lat, len(lat) / elapsed


def run_once(args: argparse.Namespace, bc: BenchCluster) -> dict[str, object]:
    leader = bc.leader()
    assert leader.proc is not None
    pids = {"leader": leader.proc.pid}
    with sampled_cpu(pids) as idle:  # what the leader burns doing nothing (Raft heartbeats, its loop)
        time.sleep(3.0 if not args.smoke else 0.5)
    idle_share = idle["leader"] / idle["_wall_s"]
    with sampled_cpu(pids) as cpu:
        lat, rate = sequential(bc.servers, args.warmup, args.calls)
    figures: dict[str, object] = {
        **summarize(lat, "seq_ms"),
        "seq_calls_per_s": rate,
        "seq_leader_cpu_ms_per_call": cpu["leader"] * 1000 / args.calls,
        "leader_idle_cpu_share": idle_share,
        "seq_leader_cpu_ms_per_call_above_idle": (cpu["leader"] - idle_share * cpu["_wall_s"])
        * 1000
        / args.calls,
    }
    if args.clients > 1:
        with sampled_cpu(pids) as cpu:
            clat, crate = asyncio.run(concurrent(bc.servers, args.warmup, args.calls, args.clients))
        figures.update(summarize(clat, "conc_ms"))
        figures["conc_calls_per_s"] = crate
        figures["conc_leader_cpu_ms_per_call"] = cpu["leader"] * 1000 / max(1, len(clat))
    return figures


def main() -> None:
    p = base_parser("W2 scheduling latency: sequential and concurrent creates")
    p.add_argument("--calls", type=int, default=5_000, help="timed calls (default 5,000)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up calls (default 100)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16; 1: skip)")
    args = p.parse_args()
    if args.smoke:
        args.calls, args.warmup, args.clients, args.runs = 50, 5, 4, 1
    rec = Recorder(
        "w2_latency",
        {"calls": args.calls, "warmup": args.warmup, "clients": args.clients, "nodes": args.nodes},
        out_dir=args.out_dir,
    )
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        for _ in range(args.runs):
            rec.add(run_once(args, bc))
    rec.write()


if __name__ == "__main__":
    main()
