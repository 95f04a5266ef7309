"""In-process CPU of a worker (issue 16): the whole agent (client.worker.Worker) per execution, from a lease
offer read off its stream to the result's acknowledgement, with the no-op handler (as W1 runs it).

One process, the stock asyncio loop (schedworker's), schedworker's GC settings. The stream is a fake
`Connect` call: offers arrive as a leader sends them (serialized GatewayMessages of up to --per-message
leases, parsed on read as gRPC would), and the fake leader answers every message the worker writes as a
leader does: results with their acks, heartbeats with an ack renewing every lease listed. The fake
leader's own work is counted apart and subtracted.

Usage: .venv/bin/python bench/perf_worker.py [--n 10000] [--per-message 1000] [--interval-ms 0] [--repeat 3]
       [--profile FILE]   (cProfile of the first run; pstats file)
Prints worker CPU microseconds per execution (process CPU time, fake leader subtracted; the outbox's
writes in their threads included) and the fastest of the repeats. Compare runs taken back to back.
Also how late the payloads began after their instants (p50/p99/max, ms), the heartbeats and results
messages the worker wrote, and the wake-ups per execution (the process's voluntary context switches,
every thread's, from /proc; the fake leader's own timers included): a wake-up from sleep costs 60-150 us
of CPU on the benchmark VMs, mostly the kernel's, and unlike the CPU figure this count does not move with
the load of a shared machine.

       .venv/bin/python bench/perf_worker.py --rate 500 [--n 5000] [--lead-ms 70] [--every-ms 20]
W5's pattern instead (held starts): every `--every-ms` an offers message of the leases whose start
instants fall in the next `--every-ms`, each granted `--lead-ms` ahead of its instant, instants spread
evenly at `--rate` per second (as the leader's coalesced fires of spread fixed-rate tasks arrive); each
start waits for its confirming heartbeat. Same figures; wall time is then n / rate.

       .venv/bin/python bench/perf_worker.py --grpc [either pattern's options]
The same offers over a real `WorkerGateway.Connect` stream: the fake leader is a gRPC server in a
process of its own, and the worker connects to it as schedworker does (`Worker.run`). Each stream message
wakes gRPC's poller thread and the event loop, which the in-process fake call does not show: W5 counted
~2.2 wake-ups per fire in the workers where the in-process pattern counts 0.8. The figures are the
worker process's own, every thread's (nothing to subtract); the fake leader's CPU is printed apart.
`--ack-delay-ms D [--ack-jitter-ms J]`: the fake leader answers each heartbeat D ms after it came (plus up
to J, in order), a busy leader's round trip: what it does to the starts' lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.client.handlers import HandlerContext, HandlerRegistry
from cronraft.client.worker import cli as worker_cli
from cronraft.client.worker.agent import Worker
from cronraft.client.worker.config import WorkerConfig
from cronraft.client.worker.metrics import WorkerMetrics
from cronraft.client.worker.session import Session
from cronraft.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc

EOF = object()


class StartDelays(WorkerMetrics):
    """How late each payload began after its instant (the worker's start-delay metric, kept whole), and
    how many messages of each kind the worker wrote to its stream."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []
        self.written: dict[str | None, int] = {}  # by WhichOneof("kind"): None for an empty message

    def attempt_started(self, delay_s: float) -> None:
        self.delays.append(delay_s)

    def attempt_finished(self, outcome: int) -> None:
        pass

    def count_writes(self) -> None:
        """Count what every Session writes (Session.write, wrapped for this process)."""
        write = Session.write
        written = self.written

        # Named as Session.write's parameters: mypy checks the names of a replacement method's parameters.
        async def counted(
            self: Session, message: worker_pb2.WorkerMessage, numbered: Callable[[int], None] | None = None
        ) -> int:
            kind = message.WhichOneof("kind")
            written[kind] = written.get(kind, 0) + 1
            return await write(self, message, numbered)

        Session.write = counted  # type: ignore[method-assign]  # deliberate: wrapped for this process only

    def figures(self) -> dict[str, float]:
        delays = sorted(self.delays) or [0.0]
        return {
            "late_p50_ms": delays[len(delays) // 2] * 1000,
            "late_p99_ms": delays[int(len(delays) * 0.99)] * 1000,
            "late_max_ms": delays[-1] * 1000,
            "heartbeats": self.written.get("heartbeat", 0),
            "results_messages": self.written.get("results", 0),
        }


class FakeCall:
    """A `WorkerGateway.Connect` call: reads what the fake leader queued, writes answered at once."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | object] = asyncio.Queue()
        self.own_s = 0.0  # the fake leader's CPU
        self.results = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def read(self) -> worker_pb2.GatewayMessage | object:
        raw = await self.inbox.get()
        if raw is EOF:
            return EOF
        assert isinstance(raw, bytes)
        return worker_pb2.GatewayMessage.FromString(raw)

    async def write(self, message: worker_pb2.WorkerMessage) -> None:
        raw = message.SerializeToString()
        t = time.process_time()
        msg = worker_pb2.WorkerMessage.FromString(raw)
        kind = msg.WhichOneof("kind")
        if kind == "results":
            ids = [r.execution_id for r in msg.results.results]
            self.results += len(ids)
            out = worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=ids))
            self.inbox.put_nowait(out.SerializeToString())
            if self.results >= self.expected:
                self.done.set()
        elif kind == "heartbeat":
            ack = worker_pb2.HeartbeatAck(renewed=[ref.execution_id for ref in msg.heartbeat.leases])
            self.inbox.put_nowait(worker_pb2.GatewayMessage(heartbeat_ack=ack).SerializeToString())
        self.own_s += time.process_time() - t

    def cancel(self) -> None:
        pass


def offers(n: int, per_message: int, offset: int) -> list[bytes]:
    return [msg.SerializeToString() for msg in _offer_messages(n, per_message, offset)]


def _offer_messages(n: int, per_message: int, offset: int) -> list[worker_pb2.GatewayMessage]:
    payload = common_pb2.Payload(handler=common_pb2.HandlerPayload(name="bench.noop"))
    now = time.time_ns() // 1_000_000
    out = []
    for start in range(0, n, per_message):
        msg = worker_pb2.GatewayMessage()
        for i in range(start, min(n, start + per_message)):
            lease = msg.leases.leases.add()
            lease.execution_id = f"01JEXEC{offset + i:019d}"
            lease.task_id = f"01JTASK{offset + i:019d}"
            lease.attempt = 1
            lease.token.term = 2
            lease.token.index = 1000 + offset + i
            lease.payload.CopyFrom(payload)
            lease.timeout_ms = 60_000
            lease.nominal_time_ms = now
            lease.lease_ttl_ms = 30_000
            lease.guarantee = common_pb2.AT_LEAST_ONCE
        out.append(msg)
    return out


async def _offer_held(call: FakeCall, args: argparse.Namespace) -> None:
    """W5's pattern: every `every_ms`, the leases whose instants fall in the next `every_ms`, offered
    `lead_ms` ahead of their instants (spread at `rate` per second)."""

    def send(msg: worker_pb2.GatewayMessage) -> None:
        call.inbox.put_nowait(msg.SerializeToString())

    def count(seconds: float) -> None:
        call.own_s += seconds

    await _offer_held_to(send, count, args)


async def _offer_held_to(
    send: Callable[[worker_pb2.GatewayMessage], None],
    count: Callable[[float], None],
    args: argparse.Namespace,
) -> None:
    """`_offer_held` for any stream: `send` queues a message, `count` adds to the fake leader's CPU."""
    leases = [lease for msg in _offer_messages(args.n, args.n, 0) for lease in msg.leases.leases]
    loop = asyncio.get_running_loop()
    t0 = loop.time() + args.lead_ms / 1000
    gap = 1 / args.rate
    i = 0
    while i < len(leases):
        t = time.process_time()  # the fake leader's work, counted apart as FakeCall.write's
        now = loop.time()
        msg = worker_pb2.GatewayMessage()
        horizon = now + (args.lead_ms + args.every_ms) / 1000
        while i < len(leases) and t0 + i * gap < horizon:
            lease = msg.leases.leases.add()
            lease.CopyFrom(leases[i])
            start_at = t0 + i * gap
            if not args.unheld:
                lease.start_delay_ms = max(1, int((start_at - now) * 1000))
                lease.start_at_ms = time.time_ns() // 1_000_000 + lease.start_delay_ms
            i += 1
        if msg.leases.leases:
            send(msg)
        count(time.process_time() - t)
        await asyncio.sleep(args.every_ms / 1000)


def _sleeps() -> int:
    """Voluntary context switches of this process's threads so far (0 without /proc)."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
    except OSError:
        return 0
    return total


async def run(args: argparse.Namespace, root: Path, profile: cProfile.Profile | None) -> dict[str, float]:
    registry = HandlerRegistry()
    count = 0

    @registry.handler("bench.noop")
    async def noop(ctx: HandlerContext) -> None:
        nonlocal count
        count += 1

    config = WorkerConfig(
        servers=("127.0.0.1:1",), worker_id="w1", outbox_dir=root / "outbox", capacity=args.n
    )
    metrics = StartDelays()
    worker = Worker(config, handlers=registry, metrics=metrics)
    call = FakeCall()
    welcome = worker_pb2.Welcome(
        leader_id="n1", heartbeat_interval_ms=1_000, lease_ttl_ms=30_000, idle_heartbeat_interval_ms=1_000
    )
    session = Session(call, welcome, "fake")  # type: ignore[arg-type]
    worker._session = session
    worker.connected.set()
    serving = asyncio.create_task(worker._serve(session))
    fence = asyncio.create_task(worker._fence_loop())
    await asyncio.sleep(0.2)  # the first heartbeat and its answer
    n = args.n
    raws = [] if args.rate else offers(n, args.per_message, 0)
    call.expected = n
    own0 = call.own_s
    metrics.count_writes()
    t0, wall0, sleeps0 = time.process_time(), time.monotonic(), _sleeps()
    if profile is not None:
        profile.enable()
    if args.rate:
        await _offer_held(call, args)
    for raw in raws:
        call.inbox.put_nowait(raw)
        if args.interval_ms:
            await asyncio.sleep(args.interval_ms / 1000)
    await call.done.wait()
    while len(worker.outbox) or worker._attempts:  # the acks removed every result
        await asyncio.sleep(0.001)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - t0
    wall = time.monotonic() - wall0
    wakes = _sleeps() - sleeps0
    own = call.own_s - own0
    assert count == n, (count, n)
    call.inbox.put_nowait(EOF)
    await serving
    fence.cancel()
    await asyncio.gather(fence, return_exceptions=True)
    worker._runners.result_files.close()
    return {
        "worker_us": (cpu - own) / n * 1e6,
        "leader_us": own / n * 1e6,
        "wall_s": wall,
        "wakes": wakes / n,
        **metrics.figures(),
    }


class BenchLeader(worker_pb2_grpc.WorkerGatewayServicer):
    """The fake leader of `--grpc`, in a process of its own: welcomes one worker, offers it the pattern's
    leases 0.3 s later, renews what each heartbeat lists and acknowledges every result."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ended = asyncio.Event()
        self._ack_at = 0.0  # when the latest delayed heartbeat answer goes (answers keep their order)
        self._random = random.Random(1)

    def _answer(
        self, send: Callable[[worker_pb2.GatewayMessage], None], msg: worker_pb2.GatewayMessage
    ) -> None:
        """Send a heartbeat's answer, `--ack-delay-ms` (+ up to `--ack-jitter-ms`) after it came: a busy
        leader's round trip."""
        delay = (self.args.ack_delay_ms + self._random.random() * self.args.ack_jitter_ms) / 1000
        if delay <= 0:
            send(msg)
            return
        loop = asyncio.get_running_loop()
        self._ack_at = max(self._ack_at, loop.time() + delay)
        loop.call_at(self._ack_at, send, msg)

    async def Connect(  # type: ignore[override]  # the coroutine form of a grpc.aio stream handler
        self, request_iterator: Any, context: Any
    ) -> None:
        await context.read()  # the Hello
        welcome = worker_pb2.Welcome(
            leader_id="n1", heartbeat_interval_ms=1_000, lease_ttl_ms=30_000, idle_heartbeat_interval_ms=1_000
        )
        await context.write(worker_pb2.GatewayMessage(welcome=welcome))
        outbound: asyncio.Queue[worker_pb2.GatewayMessage] = asyncio.Queue()

        async def pump() -> None:
            while True:
                await context.write(await outbound.get())

        tasks = [asyncio.create_task(pump()), asyncio.create_task(self._offer(outbound.put_nowait))]
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    return
                kind = msg.WhichOneof("kind")
                if kind == "results":
                    ids = [r.execution_id for r in msg.results.results]
                    outbound.put_nowait(
                        worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=ids))
                    )
                elif kind == "heartbeat":
                    ack = worker_pb2.HeartbeatAck(renewed=[ref.execution_id for ref in msg.heartbeat.leases])
                    self._answer(outbound.put_nowait, worker_pb2.GatewayMessage(heartbeat_ack=ack))
        finally:
            for task in tasks:
                task.cancel()
            self.ended.set()

    async def _offer(self, send: Callable[[worker_pb2.GatewayMessage], None]) -> None:
        await asyncio.sleep(0.3)  # the worker's measure begins 0.1 s after its Welcome
        if self.args.rate:
            await _offer_held_to(send, lambda seconds: None, self.args)
            return
        for msg in _offer_messages(self.args.n, self.args.per_message, 0):
            send(msg)
            if self.args.interval_ms:
                await asyncio.sleep(self.args.interval_ms / 1000)


async def serve_leader(args: argparse.Namespace) -> None:
    """`--leader`: the fake leader's process; prints its port, ends with its one stream."""
    server = grpc.aio.server()
    leader = BenchLeader(args)
    worker_pb2_grpc.add_WorkerGatewayServicer_to_server(leader, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await leader.ended.wait()
    await server.stop(grace=None)


def _leader_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, __file__, "--leader", "--n", str(args.n), "--per-message", str(args.per_message)]
    argv += ["--interval-ms", str(args.interval_ms), "--rate", str(args.rate), "--lead-ms", str(args.lead_ms)]
    argv += ["--every-ms", str(args.every_ms)] + (["--unheld"] if args.unheld else [])
    argv += ["--ack-delay-ms", str(args.ack_delay_ms), "--ack-jitter-ms", str(args.ack_jitter_ms)]
    return argv


async def run_grpc(
    args: argparse.Namespace, root: Path, profile: cProfile.Profile | None
) -> dict[str, float]:
    """One run of `--grpc`: this process is the worker, a child the leader."""
    registry = HandlerRegistry()
    count = 0
    all_ran = asyncio.Event()

    @registry.handler("bench.noop")
    async def noop(ctx: HandlerContext) -> None:
        nonlocal count
        count += 1
        if count >= args.n:
            all_ran.set()

    leader = subprocess.Popen(_leader_argv(args), stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    port = int(leader.stdout.readline())
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    config = WorkerConfig(
        servers=(f"127.0.0.1:{port}",), worker_id="w1", outbox_dir=root / "outbox", capacity=args.n
    )
    metrics = StartDelays()
    worker = Worker(config, handlers=registry, metrics=metrics)
    running = asyncio.create_task(worker.run())
    await worker.connected.wait()
    await asyncio.sleep(0.1)
    metrics.count_writes()
    t0, wall0, sleeps0 = time.process_time(), time.monotonic(), _sleeps()
    if profile is not None:
        profile.enable()
    await all_ran.wait()
    while len(worker.outbox) or worker._attempts:  # until the acks removed every result
        worker._results.acked.clear()
        if not (len(worker.outbox) or worker._attempts):
            break
        await worker._results.acked.wait()
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - t0
    wall = time.monotonic() - wall0
    wakes = _sleeps() - sleeps0
    worker.stop()
    await running
    leader.wait(timeout=10)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    leader_s = children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime
    return {
        "worker_us": cpu / args.n * 1e6,
        "leader_us": leader_s / args.n * 1e6,
        "wall_s": wall,
        "wakes": wakes / args.n,
        **metrics.figures(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--per-message", type=int, default=1_000, help="leases per offers message")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", type=str, default="", help="cProfile of the first run (pstats file)")
    p.add_argument(
        "--interval-ms", type=float, default=0, help="between two offers messages (0: all at once)"
    )
    p.add_argument("--rate", type=float, default=0, help="held starts per second, W5's pattern (0: off)")
    p.add_argument("--lead-ms", type=int, default=70, help="with --rate: leases offered this far ahead")
    p.add_argument("--every-ms", type=int, default=20, help="with --rate: one offers message this often")
    p.add_argument("--unheld", action="store_true", help="with --rate: started when offered, not held")
    p.add_argument("--gc-threshold", type=int, default=0, help="gen0 threshold (0: schedworker's)")
    p.add_argument("--grpc", action="store_true", help="over a real stream to a fake leader's process")
    p.add_argument("--leader", action="store_true", help=argparse.SUPPRESS)  # --grpc's fake leader
    p.add_argument("--ack-delay-ms", type=float, default=0, help="with --grpc: heartbeats answered this late")
    p.add_argument("--ack-jitter-ms", type=float, default=0, help="with --grpc: and up to this much later")
    args = p.parse_args()
    if args.leader:
        asyncio.run(serve_leader(args))
        return
    worker_cli.configure_logging("json", "info")  # as the benchmarks start schedworker
    gc.freeze()  # as schedworker does once started (client.worker.cli)
    gc.set_threshold(args.gc_threshold or worker_cli._GC_THRESHOLD, 20, 20)
    runs = []
    for i in range(args.repeat):
        profile = cProfile.Profile() if args.profile and i == 0 else None
        with tempfile.TemporaryDirectory() as tmp, asyncio.Runner() as runner:
            r = runner.run((run_grpc if args.grpc else run)(args, Path(tmp), profile))
        if profile is not None:
            profile.dump_stats(args.profile)
        runs.append(r)
        print(
            f"run {i + 1}: worker {r['worker_us']:.1f} us/execution, fake leader {r['leader_us']:.1f}; "
            f"{r['wakes']:.2f} wake-ups/execution; {r['wall_s']:.2f} s; starts late p50/p99/max "
            f"{r['late_p50_ms']:.0f}/{r['late_p99_ms']:.0f}/{r['late_max_ms']:.0f} ms; "
            f"{r['heartbeats']:.0f} heartbeats, {r['results_messages']:.0f} results messages"
        )
    best = min(runs, key=lambda r: r["worker_us"])
    wakes = best["wakes"]
    print(f"best of {len(runs)}: worker {best['worker_us']:.1f} us/execution, {wakes:.2f} wake-ups/execution")


if __name__ == "__main__":
    main()
