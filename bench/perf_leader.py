"""In-process CPU of the leader outside apply (issue 16): the leader runner, its core and the worker
stream's message handling, per execution, with apply and the fake workers' own work subtracted.

One process, one asyncio loop: LeaderRunner over the real GroupCommitter and an in-memory replicator whose
apply is the real StateMachine over LMDB (timed and subtracted); N one-time tasks due at one instant; fake
workers attached like WorkerGateway.Connect attaches them, which take each offers message as the gateway
writes it (restamp, serialized as gRPC would), answer every lease at once with a success, and hand the
leader their results parsed from bytes (as gRPC would) through `on_results`, batched as a worker batches
them (up to 1,000 per message).

Usage: .venv/bin/python bench/perf_leader.py [--n 10000] [--workers 2] [--commit-ms 2] [--repeat 3]
       [--profile FILE]   (cProfile of the burst, apply included; pstats file)
       [--py-spy FILE]    (py-spy of the burst, apply included; raw collapsed stacks, distorts less)
Prints leader CPU microseconds per execution (process CPU time minus apply and fake workers), the entries
proposed, and the fastest of the repeats. Process CPU time, so that other load inflates it less than wall
time; still compare runs taken back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.perf_inproc import succeeded
from cronraft import __version__
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner, WorkerSession
from cronraft.daemon.main import GC_THRESHOLD
from cronraft.daemon.metrics import NodeMetrics
from cronraft.daemon.wire import bounded_results, worker_problem
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import features
from cronraft.raft.codec import make_id
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.memreplicator import MemReplicator
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

Command = commands_pb2.Command


class Clock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class SlowReplicator(MemReplicator):
    """Applies each entry after `commit_ms` (a replication round trip), so that entries queue and group
    as on a real leader; apply's CPU is counted in `apply_s`."""

    def __init__(self, sm: StateMachine, commit_ms: float) -> None:
        super().__init__(self._timed)
        self._sm = sm
        self._commit_s = commit_ms / 1000
        self.apply_s = 0.0
        self.entries = 0

    def _timed(self, index: int, payload: bytes) -> bytes | None:
        t = time.process_time()
        try:
            return self._sm.apply_entry(index, payload)
        finally:
            self.apply_s += time.process_time() - t
            self.entries += 1

    async def propose(self, payload: bytes, *, timeout_s: float) -> bytes:
        if self._commit_s:
            await asyncio.sleep(self._commit_s)
        return await super().propose(payload, timeout_s=timeout_s)


class Notifier:
    """No notification targets (as in W1): the runner still looks for events."""

    has_global_targets = False

    def submit(self, n: Any) -> None:
        pass


class FakeWorker:
    """Answers each lease at once with a success; its own CPU (building results) is counted apart."""

    def __init__(self, runner: LeaderRunner, worker_id: str, capacity: int) -> None:
        self.runner = runner
        self.session: WorkerSession = runner.attach(
            worker_pb2.Hello(
                worker_id=worker_id,
                capacity=capacity,
                queues=["default"],
                version=__version__,
                features=sorted(features.WORKER_FEATURES),
                incarnation=f"{worker_id}-1",
            )
        )
        self.acked = 0
        self.offered = 0
        self.own_s = 0.0
        self._todo: list[worker_pb2.Lease] = []
        self._ready = asyncio.Event()

    async def read(self) -> None:
        """The gateway's writer side: restamp, serialize (gRPC), and the worker's reading."""
        while True:
            msg = await self.session.queue.get()
            if msg is None:
                return
            self.runner.restamp(msg)
            raw = msg.SerializeToString()
            t = time.process_time()
            got = worker_pb2.GatewayMessage.FromString(raw)
            kind = got.WhichOneof("kind")
            if kind == "leases":
                self._todo.extend(got.leases.leases)
                self.offered += len(got.leases.leases)
                self._ready.set()
            elif kind == "acks":
                self.acked += len(got.acks.execution_ids)
            self.own_s += time.process_time() - t

    async def send(self) -> None:
        """The worker's results, up to 1,000 per message; the leader's reader side parses and hands them
        on (WorkerGateway.Connect's read loop)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await asyncio.sleep(0)  # let the rest of a burst of offers arrive
            t = time.process_time()
            todo, self._todo = self._todo, []
            now = time.time_ns() // 1_000_000
            raws = []
            for i in range(0, len(todo), 1000):
                results = [succeeded(lease, now) for lease in todo[i : i + 1000]]
                raws.append(
                    worker_pb2.WorkerMessage(results=worker_pb2.Results(results=results)).SerializeToString()
                )
            self.own_s += time.process_time() - t
            for raw in raws:
                msg = worker_pb2.WorkerMessage.FromString(raw)
                if worker_problem(msg):
                    raise SystemExit(worker_problem(msg))
                self.runner.on_results(self.session, bounded_results(msg.results.results))
                await asyncio.sleep(0)


def _spec(due: int) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="perf",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
        queue="default",
        timeout_ms=60_000,
        guarantee=common_pb2.AT_LEAST_ONCE,
    )


async def run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    kv = LmdbKV(root)
    sm = StateMachine(kv)
    rep = SlowReplicator(sm, args.commit_ms)
    rep.start()
    committer = GroupCommitter(rep, max_inflight=4)
    committer.start()
    clock = Clock()
    metrics = NodeMetrics()
    runner = LeaderRunner(
        kv=kv,
        committer=committer,
        settings=LeaderSettings(fire_lead_ms=500, stage_lead_ms=0),
        node_id="n1",
        term=1,
        clock=clock,
        still_leader=lambda: True,
        heartbeat_interval_ms=2_000,
        notifier=Notifier(),  # type: ignore[arg-type]
        on_committed=metrics.observe_committed,
    )
    gc.freeze()  # as schedd does once started (daemon.main)
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    runner.raise_features(features.SUPPORTED)
    runner.start()
    while not runner.ready:
        await asyncio.sleep(0.01)
    n = args.n
    workers = [FakeWorker(runner, f"w{i}", args.capacity) for i in range(args.workers)]
    tasks = [asyncio.create_task(f()) for w in workers for f in (w.read, w.send)]
    due = clock.now_ms() + 3_000 + n // 2
    spec = _spec(due)
    for start in range(0, n, 1000):
        cmds = [
            Command(
                request_id=f"c{i}",
                stamped_at_ms=clock.now_ms(),
                create_task=commands_pb2.CreateTask(task_id=make_id(due, i.to_bytes(10, "big")), spec=spec),
            )
            for i in range(start, min(n, start + 1000))
        ]
        runner.prepare(cmds)
        runner.observe(cmds, await committer.submit(cmds))
    if clock.now_ms() > due - 1_000:
        raise SystemExit("creating the tasks overran the due instant")
    await asyncio.sleep(max(0.0, (due - 600 - clock.now_ms()) / 1000))
    prof = cProfile.Profile() if args.profile else None
    spy = None
    if args.py_spy:
        py_spy = str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen(
            [py_spy, "record", "-p", str(os.getpid()), "-r", "250", "-f", "raw", "-o", args.py_spy],
            stdout=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)  # py-spy attaches
    apply0, entries0, own0 = rep.apply_s, rep.entries, sum(w.own_s for w in workers)
    t0, wall0 = time.process_time(), time.monotonic()
    if prof:
        prof.enable()
    while sum(w.acked for w in workers) < n:
        await asyncio.sleep(0.005)
    if prof:
        prof.disable()
        prof.dump_stats(args.profile)
    cpu = time.process_time() - t0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    wall = time.monotonic() - wall0
    apply_s = rep.apply_s - apply0
    own = sum(w.own_s for w in workers) - own0
    for t in tasks:
        t.cancel()
    await runner.stop()
    await committer.close()
    kv.close()
    return {
        "leader_us": (cpu - apply_s - own) / n * 1e6,
        "apply_us": apply_s / n * 1e6,
        "workers_us": own / n * 1e6,
        "entries": rep.entries - entries0,
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=10_000)
    p.add_argument("--commit-ms", type=float, default=2.0, help="replication round trip per entry")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", type=str, default="", help="cProfile of the first run's burst (pstats file)")
    p.add_argument("--py-spy", type=str, default="", help="py-spy of the first run's burst (raw stacks)")
    p.add_argument("--asyncio", action="store_true", help="the default event loop, not uvloop (schedd's)")
    args = p.parse_args()
    if not args.asyncio:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(run(args, Path(tmp)))
        args.profile = args.py_spy = ""
        runs.append(r)
        print(
            f"run {i + 1}: leader {r['leader_us']:.1f} us/execution outside apply, "
            f"apply {r['apply_us']:.1f}, fake workers {r['workers_us']:.1f}; "
            f"{r['entries']} entries, {r['wall_s']:.2f} s"
        )
    best = min(runs, key=lambda r: r["leader_us"])
    print(f"best of {len(runs)}: leader {best['leader_us']:.1f} us/execution outside apply")


if __name__ == "__main__":
    main()
