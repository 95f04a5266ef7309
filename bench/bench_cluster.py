"""End-to-end figures of a real cluster on loopback: create latency, create throughput with
concurrent clients (group commit), fire throughput, and start latency (nominal time -> process start).

Usage: .venv/bin/python bench/bench_cluster.py [--nodes 3] [--creates 500] [--concurrent 64]
       [--burst 5000] [--timed 200]
Starts its own schedd processes and a worker under a temporary directory; prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.client import AsyncClient, Client, at, command
from cronraft.proto.v1 import common_pb2
from tests.integration.harness import Cluster, wait_for


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def far() -> common_pb2.Schedule:
    return at(4_102_444_800_000)  # 2100-01-01: stored, never due during the run


def bench_create_latency(servers: str, n: int) -> list[float]:
    lat = []
    with Client(servers) as client:
        client.create_task("warm", far(), command("true"))
        for i in range(n):
            t0 = time.perf_counter()
            client.create_task(f"lat-{i}", far(), command("true"))
            lat.append((time.perf_counter() - t0) * 1000)
    return lat


async def bench_create_throughput(servers: str, n: int, concurrency: int) -> float:
    async with AsyncClient(servers) as client:
        await client.create_task("warm", far(), command("true"))
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.create_task(f"tp-{i}", far(), command("true"))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


async def bench_fire_burst(servers: str, n: int) -> tuple[float, float]:
    """n one-time tasks due at the same instant, no worker for their queue: fires committed per second."""
    async with AsyncClient(servers) as client:
        due = int(time.time() * 1000) + 15_000 + n  # leave time to create them all
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                await client.create_task(
                    f"burst-{i}", at(due), command("true"), queue="nobody", tags={"b": "1"}
                )

        await asyncio.gather(*(one(i) for i in range(n)))
        assert time.time() * 1000 < due, "creating the burst took longer than the lead time"
        await asyncio.sleep(max(0.0, due / 1000 - time.time()))

        async def completed() -> int:
            count = 0
            async for _ in client.list_tasks(
                state=common_pb2.TASK_COMPLETED, tags={"b": "1"}, page_size=1000
            ):
                count += 1
            return count

        while await completed() < n:
            await asyncio.sleep(0.05)
        done = time.time() * 1000
        return n / ((done - due) / 1000), done - due


def bench_start_latency(servers: str, n: int) -> list[float]:
    """One-time tasks spread over a few seconds; started_at (worker) - nominal time, in ms."""
    with Client(servers) as client:
        base = int(time.time() * 1000) + 3000
        tasks = [client.create_task(f"timed-{i}", at(base + 20 * i), command("true")) for i in range(n)]
        out: list[float] = []
        for t in tasks:

            def succeeded(task_id: str = t.task_id) -> list[common_pb2.Execution]:
                return [
                    e for e in client.list_executions(task_id) if e.state == common_pb2.EXECUTION_SUCCEEDED
                ]

            (ex,) = wait_for(succeeded, 60, "execution")
            out.append(ex.started_at_ms - ex.nominal_time_ms)
        return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--creates", type=int, default=500)
    p.add_argument("--concurrent", type=int, default=64)
    p.add_argument("--throughput-n", type=int, default=3000)
    p.add_argument("--burst", type=int, default=3000)
    p.add_argument("--timed", type=int, default=200)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), n=args.nodes, lease_ttl_ms=10_000, heartbeat_interval_ms=2_000)
        try:
            cluster.start()
            cluster.start_worker("bench-worker", capacity=16)
            cluster.wait_workers(1)
            leader = cluster.wait_leader()
            servers = leader.grpc_address
            lat = bench_create_latency(servers, args.creates)
            tput = asyncio.run(bench_create_throughput(servers, args.throughput_n, args.concurrent))
            fires, burst_ms = asyncio.run(bench_fire_burst(servers, args.burst))
            start = bench_start_latency(servers, args.timed)
        finally:
            cluster.stop()
    print(f"machine: {platform.machine()}, {platform.system()}, python {platform.python_version()}")
    print(f"cluster: {args.nodes} nodes on loopback, durability=replicated")
    print(
        f"create latency (sequential, n={args.creates}): p50 {statistics.median(lat):.1f} ms, "
        f"p99 {pct(lat, 99):.1f} ms"
    )
    print(f"create throughput ({args.concurrent} concurrent, n={args.throughput_n}): {tput:.0f} tasks/s")
    print(
        f"fire burst ({args.burst} fires due at one instant): {fires:.0f} fires/s, "
        f"all committed {burst_ms:.0f} ms after due"
    )
    print(
        f"start latency nominal->process start (n={args.timed}): p50 {statistics.median(start):.0f} ms, "
        f"p99 {pct(start, 99):.0f} ms, max {max(start):.0f} ms"
    )


if __name__ == "__main__":
    main()
