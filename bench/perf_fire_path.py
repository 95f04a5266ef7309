"""The fire path end to end, for profiling: N one-time tasks due at one instant, run by workers with an
in-process no-op handler (or by nobody, to measure the fire-commit path alone).

Usage: .venv/bin/python bench/perf_fire_path.py [--n 20000] [--workers 2] [--capacity 10000]
       [--no-worker] [--profile DIR] [--keep DIR]

Starts 3 `schedd` processes and the workers under a temporary directory (tests/integration/harness),
creates the tasks with concurrent AsyncClient calls, waits for the due instant, and prints:
- fires/s from the due instant to the last handler start (W1 of the mission: 10,000/s is the goal),
- start latency (handler start - nominal time) p50/p99/max,
- when every result was committed (every worker's outbox empty, i.e. acknowledged by the leader).
With --no-worker the tasks go to a queue no worker serves: it reports when every fire committed.
With --profile DIR, py-spy records the leader, a follower and a worker during the burst (raw collapsed
stacks, DIR/<role>.txt, plus a summary of the top functions printed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.client import AsyncClient, at, handler
from cronraft.proto.v1 import common_pb2
from tests.integration.harness import Cluster, NodeProc

HANDLER_MODULE = """
import os, time
from cronraft.client.handlers import handler

_fd = os.open(os.environ["PERF_STARTS_DIR"] + f"/starts-{os.getpid()}.txt",
              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

@handler("noop")
async def noop(ctx):
    os.write(_fd, b"%d %d\\n" % (time.time_ns() // 1000, ctx.nominal_time_ms))
"""


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def read_starts(root: Path) -> list[tuple[float, int]]:
    """(start time in ms, nominal ms) of every handler call so far."""
    out = []
    for f in root.glob("starts-*.txt"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((int(parts[0]) / 1000, int(parts[1])))
    return out


def count_lines(root: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in root.glob("starts-*.txt"))


def outbox_files(cluster: Cluster) -> int:
    return sum(1 for d in cluster.root.glob("*-outbox") for p in d.iterdir() if p.name.endswith(".result"))


async def create_all(servers: str, n: int, due: int, queue: str, concurrency: int) -> float:
    async with AsyncClient(servers) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.create_task(
                    f"perf-{i}", at(due), handler("noop"), queue=queue, tags={"perf": "1"}
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


async def count_completed(servers: str) -> int:
    async with AsyncClient(servers) as client:
        count = 0
        async for _ in client.list_tasks(state=common_pb2.TASK_COMPLETED, tags={"perf": "1"}, page_size=1000):
            count += 1
        return count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(node: NodeProc) -> int:
    assert node.proc is not None
    return node.proc.pid


def start_profilers(out: Path, targets: dict[str, int], seconds: int) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    for role, pid in targets.items():
        procs.append(
            subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--duration",
                    str(seconds),
                    "--output",
                    str(out / f"{role}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self time and inclusive time of the top functions in a py-spy raw (collapsed) profile."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        own[_short(frames[-1])] += count
        for f in {_short(f) for f in frames}:
            incl[f] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  self%  function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in own.most_common(top)]
    lines += ["  incl%  function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top * 2)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})" if file else name


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--lead-s", type=float, default=0.0, help="due this long after creating (default: auto)")
    p.add_argument("--no-worker", action="store_true", help="no worker serves the queue: fire path alone")
    p.add_argument("--profile", type=Path, help="py-spy raw profiles of leader/follower/worker into DIR")
    p.add_argument("--timeout-s", type=float, default=120)
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs) and print it")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="perf-fire-"))
    starts_dir = tmp / "starts"
    starts_dir.mkdir()
    (tmp / "perf_noop.py").write_text(HANDLER_MODULE)
    cluster = Cluster(tmp, n=args.nodes, lease_ttl_ms=30_000, heartbeat_interval_ms=2_000)
    cluster.env["PERF_STARTS_DIR"] = str(starts_dir)
    report: list[str] = []
    try:
        cluster.start()
        if not args.no_worker:
            for i in range(args.workers):
                cluster.start_worker(
                    f"w{i + 1}", capacity=args.capacity, extra_args=("--handlers", "perf_noop")
                )
            cluster.wait_workers(args.workers, timeout_s=60)
        leader = cluster.wait_leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        queue = "nobody" if args.no_worker else "default"
        # Creates run at several hundred per second: leave enough lead time, plus a margin.
        lead_ms = int(args.lead_s * 1000) or (15_000 + args.n * 3)
        due = int(time.time() * 1000) + lead_ms
        t0 = time.perf_counter()
        create_rate = asyncio.run(create_all(leader.grpc_address, args.n, due, queue, args.concurrency))
        created_s = time.perf_counter() - t0
        if time.time() * 1000 >= due:
            raise SystemExit(f"creating took {created_s:.1f} s, past the due instant: raise --lead-s")
        report.append(f"created {args.n} tasks in {created_s:.1f} s ({create_rate:.0f}/s)")
        profilers: list[subprocess.Popen[bytes]] = []
        wait_s = due / 1000 - time.time()
        if args.profile:
            time.sleep(max(0.0, wait_s - 1.0))
            targets = {"leader": pid_of(leader), "follower": pid_of(follower)}
            if not args.no_worker:
                targets["worker"] = cluster.workers["w1"].pid
            profilers = start_profilers(args.profile, targets, seconds=int(args.timeout_s))
        time.sleep(max(0.0, due / 1000 - time.time()))
        roles = {("leader" if n is leader else n.node_id): pid_of(n) for n in cluster.nodes}
        roles.update({w: proc.pid for w, proc in cluster.workers.items()})
        cpu0 = {role: cpu_seconds(pid) for role, pid in roles.items()}
        deadline = time.time() + args.timeout_s
        load0 = os.getloadavg()[0]
        if args.no_worker:
            # Reads on a follower: they do not take the leader's CPU (the follower applies anyway).
            while asyncio.run(count_completed(follower.grpc_address)) < args.n:
                if time.time() > deadline:
                    raise SystemExit("timed out waiting for the fires")
                time.sleep(0.1)
            done_ms = time.time() * 1000
            report.append(
                f"fire burst ({args.n} due at one instant, no worker): all committed (seen on a follower) "
                f"{done_ms - due:.0f} ms after due = {args.n / ((done_ms - due) / 1000):.0f} fires/s"
            )
        else:
            while count_lines(starts_dir) < args.n:
                if time.time() > deadline:
                    raise SystemExit(f"timed out: {count_lines(starts_dir)} of {args.n} started")
                time.sleep(0.05)
            while outbox_files(cluster) > 0:
                if time.time() > deadline:
                    raise SystemExit("timed out waiting for the results to be acknowledged")
                time.sleep(0.05)
            acked_ms = time.time() * 1000
            starts = read_starts(starts_dir)
            last = max(s for s, _ in starts)
            lat = [s - nominal for s, nominal in starts]
            report.append(
                f"execution burst ({args.n} due at one instant, {args.workers} workers x {args.capacity} "
                f"slots, async no-op handler): last start {last - due:.0f} ms after due = "
                f"{args.n / ((last - due) / 1000):.0f} starts/s; all results acknowledged "
                f"{acked_ms - due:.0f} ms after due"
            )
            report.append(
                f"start latency (start - nominal): p50 {statistics.median(lat):.0f} ms, "
                f"p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms"
            )
        cpu = {role: cpu_seconds(pid) - cpu0[role] for role, pid in roles.items()}
        report.append(
            "CPU from due to the end (s; us per task): "
            + ", ".join(f"{role} {c:.1f} ({c / args.n * 1e6:.0f})" for role, c in cpu.items())
            + f"; total {sum(cpu.values()):.1f} s = {sum(cpu.values()) / args.n * 1e6:.0f} us per task"
        )
        report.append(f"load average at the due instant: {load0:.2f}")
        for proc in profilers:
            proc.send_signal(signal.SIGINT)
        for proc in profilers:
            proc.wait(timeout=30)
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print("\n".join(report))
    if args.profile:
        for f in sorted(args.profile.glob("*.txt")):
            print(summarize_profile(f))


if __name__ == "__main__":
    main()
