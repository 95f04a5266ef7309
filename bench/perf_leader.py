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
proposed, the messages written to the workers per execution by kind (deterministic enough to compare: each
is a gRPC write and a wake-up of both ends), and the fastest of the repeats. Process CPU time, so that other
load inflates it less than wall time; still compare runs taken back to back.

       .venv/bin/python bench/perf_leader.py --rate R [--seconds 5] [--warm-s 3] [--workers 2]
W5's pattern instead of a burst: R fixed-rate tasks firing every second, their instants spread evenly over
the second, the daemon's default scheduler settings (fire lead, burst staging from 2,000/s), workers that
hold each start until its instant, confirm it with a heartbeat and send their results as a worker's outbox
groups them (HeldWorker), measured over `--seconds` of real time (not for callgrind: the clock is real).
Per-second costs (ticks, entries, messages) weigh here where a burst spreads them over thousands.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import operator
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.perf_inproc import succeeded
from cronraft import __version__
from cronraft.daemon.leader import LeaderSettings, planner
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
T = TypeVar("T")


class Clock:
    """The wall and monotonic clocks, both running `DILATE` times slower than real time (1: real)."""

    def now_ms(self) -> int:
        if DILATE == 1:
            return time.time_ns() // 1_000_000
        return _WALL0_MS + (time.monotonic_ns() - _MONO0_NS) // DILATE // 1_000_000

    def mono_ms(self) -> int:
        return self.mono_ns() // 1_000_000

    def mono_ns(self) -> int:
        if DILATE == 1:
            return time.monotonic_ns()
        return _MONO0_NS + (time.monotonic_ns() - _MONO0_NS) // DILATE


# --dilate: time runs this many times slower for everything the leader and the fake workers see (their
# clock, the event loop's timers), so that W5's pattern (--rate) runs under callgrind, ~50 times slower,
# as it runs at full speed: the same ticks, entries and messages per execution.
DILATE = 1
_WALL0_MS, _MONO0_NS = time.time_ns() // 1_000_000, time.monotonic_ns()
CLOCK = Clock()


class _SlowSelector(selectors.DefaultSelector):
    """Waits DILATE times longer than asked: the event loop's timeouts are in dilated time."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return super().select(timeout if timeout is None or timeout <= 0 else timeout * DILATE)


class DilatedLoop(asyncio.SelectorEventLoop):
    """The default event loop on the dilated clock (--dilate)."""

    def __init__(self) -> None:
        super().__init__(_SlowSelector())

    def time(self) -> float:
        return CLOCK.mono_ns() / 1e9


class _DilatedPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return DilatedLoop()


class SlowReplicator(MemReplicator):
    """Applies each entry after `commit_ms` (a replication round trip), so that entries queue and group
    as on a real leader; apply's CPU is counted in `apply_s`."""

    def __init__(self, sm: StateMachine, commit_ms: float) -> None:
        super().__init__(self._timed)
        self._sm = sm
        self._commit_s = commit_ms / 1000
        self.apply_s = 0.0
        self.entries = 0
        # With --profile --no-apply-profile: the profiler, paused during apply (the leader's own calls only).
        self.pause: cProfile.Profile | None = None

    def _timed(self, index: int, payload: bytes) -> bytes | None:
        t = time.process_time()
        if self.pause is not None:
            self.pause.disable()
        try:
            # Through operator.call, a C function only apply and the fake workers' own work (FakeWorker._own)
            # call here: --toggle-collect=_operator_call --collect-atstart=yes leaves them out of the count.
            return operator.call(self._sm.apply_entry, index, payload)
        finally:
            if self.pause is not None:
                self.pause.enable()
            self.apply_s += time.process_time() - t
            self.entries += 1

    async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
        if self._commit_s:
            await asyncio.sleep(self._commit_s)
        return await super().propose(payload, timeout_s=timeout_s, late=late)


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
        # Messages the gateway wrote to its stream, by kind (each a gRPC write and a wake-up of both ends).
        self.messages: dict[str, int] = {}
        self.own_s = 0.0
        self._todo: list[worker_pb2.Lease] = []
        self._ready = asyncio.Event()

    def _own(self, fn: Callable[..., T], *args: Any) -> T:
        """The fake worker's own work, `fn(*args)`: timed apart (`own_s`), and run through operator.call,
        which --toggle-collect=_operator_call leaves out of callgrind's count, as apply."""
        t = time.process_time()
        try:
            return operator.call(fn, *args)
        finally:
            self.own_s += time.process_time() - t

    def _got(self, raw: bytes) -> worker_pb2.GatewayMessage:
        """The worker's reading of a message the gateway wrote: its kind counted, acks counted."""
        got = worker_pb2.GatewayMessage.FromString(raw)
        kind = got.WhichOneof("kind") or ""
        self.messages[kind] = self.messages.get(kind, 0) + 1
        if kind == "acks":
            self.acked += len(got.acks.execution_ids)
        return got

    def _took(self, raw: bytes) -> None:
        got = self._got(raw)
        if got.WhichOneof("kind") == "leases":
            self._todo.extend(got.leases.leases)
            self.offered += len(got.leases.leases)
            self._ready.set()

    async def read(self) -> None:
        """The gateway's writer side: restamp, serialize (gRPC), and the worker's reading."""
        while True:
            msg = await self.session.queue.get()
            if msg is None:
                return
            self.runner.restamp(msg)
            self._own(self._took, msg.SerializeToString())

    def _results_of(self, todo: list[worker_pb2.Lease]) -> list[bytes]:
        now = CLOCK.now_ms()
        raws = []
        for i in range(0, len(todo), 1000):
            results = [succeeded(lease, now) for lease in todo[i : i + 1000]]
            raws.append(
                worker_pb2.WorkerMessage(results=worker_pb2.Results(results=results)).SerializeToString()
            )
        return raws

    async def send(self) -> None:
        """The worker's results, up to 1,000 per message; the leader's reader side parses and hands them
        on (WorkerGateway.Connect's read loop)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            await asyncio.sleep(0)  # let the rest of a burst of offers arrive
            todo, self._todo = self._todo, []
            for raw in self._own(self._results_of, todo):
                msg = worker_pb2.WorkerMessage.FromString(raw)
                if worker_problem(msg):
                    raise SystemExit(worker_problem(msg))
                self.runner.on_results(self.session, bounded_results(msg.results.results))
                await asyncio.sleep(0)


class HeldWorker(FakeWorker):
    """W5's worker (`--rate`): holds each start until its instant, asks the leader to confirm it with a
    heartbeat sent at most CONFIRM_AHEAD_S before it (at most one such heartbeat per CONFIRM_EVERY_S,
    listing the starts it confirms), starts it at its instant (gated per GATE_S), and sends its results
    as the worker's outbox groups them (under load, a result waits RESULT_LINGER_S for others to share
    its message); a full heartbeat every `heartbeat_s` lists what it holds.
    Its own CPU (its bookkeeping, building its messages) is counted apart; the leader's parse of them is
    not."""

    CONFIRM_AHEAD_S = 0.1  # client.worker.leases.CONFIRM_AHEAD_S
    CONFIRM_EVERY_S = 0.025  # client.worker.heartbeat_plan.CONFIRM_SPACING_S
    GATE_S = 0.005  # client.worker.start_gate
    RESULT_LINGER_S = 0.05  # client.worker.results.STORE_LINGER_S, RESULT_BUSY_S

    def __init__(self, runner: LeaderRunner, worker_id: str, capacity: int, heartbeat_s: float) -> None:
        super().__init__(runner, worker_id, capacity)
        self.heartbeat_s = heartbeat_s
        # Held starts: (start instant on the loop's clock, lease), in the order offered (instants rise).
        self.held: list[tuple[float, worker_pb2.Lease]] = []
        self.asked = 0  # held[:asked] were listed in a confirming heartbeat
        # Results waiting for their message (sent at `send_at`), and when the last one was sent.
        self.done: list[common_pb2.AttemptResult] = []
        self.send_at = self.sent = 0.0

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self.session.queue.get()
            if msg is None:
                return
            self.runner.restamp(msg, self.session)
            self._own(self._held, msg.SerializeToString(), loop.time())

    def _held(self, raw: bytes, now: float) -> None:
        got = self._got(raw)
        if got.WhichOneof("kind") == "leases":
            for lease in got.leases.leases:
                self.held.append((now + lease.start_delay_ms / 1000, lease))
            self.offered += len(got.leases.leases)

    @staticmethod
    def _heartbeat_bytes(leases: list[worker_pb2.Lease], listing: bool) -> bytes:
        hb = worker_pb2.Heartbeat(
            leases=[worker_pb2.LeaseRef(execution_id=x.execution_id, token=x.token) for x in leases],
            sent_mono_ms=CLOCK.mono_ms(),
            complete_listing=listing,
        )
        return worker_pb2.WorkerMessage(heartbeat=hb).SerializeToString()

    def _heartbeat(self, leases: list[worker_pb2.Lease], *, listing: bool = False) -> None:
        raw = self._own(self._heartbeat_bytes, leases, listing)
        self.runner.on_heartbeat(self.session, worker_pb2.WorkerMessage.FromString(raw).heartbeat)

    def _start(self, held: list[tuple[float, worker_pb2.Lease]], due: int, now: float) -> None:
        """The first `due` held starts begin now, and finish at once."""
        started, self.held = held[:due], held[due:]
        self.asked = max(0, self.asked - due)
        wall = CLOCK.now_ms()
        if not self.done:  # the first of a write: it waits for others only under load
            self.send_at = now + (self.RESULT_LINGER_S if now - self.sent < self.RESULT_LINGER_S else 0)
        self.done.extend(succeeded(lease, wall) for _, lease in started)

    def _results_bytes(self, now: float) -> bytes:
        results, self.done, self.sent = self.done, [], now
        return worker_pb2.WorkerMessage(results=worker_pb2.Results(results=results)).SerializeToString()

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat([], listing=True)
        next_full = loop.time() + self.heartbeat_s
        next_confirm = 0.0
        while True:
            await asyncio.sleep(self.GATE_S)
            now = loop.time()
            held = self.held
            if now >= next_confirm:
                ask = self.asked
                while ask < len(held) and held[ask][0] - now <= self.CONFIRM_AHEAD_S:
                    ask += 1
                if ask > self.asked:
                    self._heartbeat([lease for _, lease in held[self.asked : ask]])
                    self.asked, next_confirm = ask, now + self.CONFIRM_EVERY_S
            if now >= next_full:
                self._heartbeat([lease for _, lease in held])
                next_full = now + self.heartbeat_s
            due = 0
            while due < len(held) and held[due][0] <= now:
                due += 1
            if due:
                self._own(self._start, held, due, now)
            if not self.done or now < self.send_at:
                continue
            msg = worker_pb2.WorkerMessage.FromString(self._own(self._results_bytes, now))
            self.runner.on_results(self.session, bounded_results(msg.results.results))


def _messages(workers: Sequence[FakeWorker]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in workers:
        for kind, count in w.messages.items():
            out[kind] = out.get(kind, 0) + count
    return out


def _per_execution(now: dict[str, int], before: dict[str, int], n: int) -> dict[str, float]:
    return {kind: (count - before.get(kind, 0)) / n for kind, count in sorted(now.items())}


def _spec(due: int) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="perf",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
        queue="default",
        timeout_ms=60_000,
        guarantee=common_pb2.AT_LEAST_ONCE,
    )


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
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
    due = clock.now_ms() + (args.due_ms or 3_000 + n // 2)
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
    if args.callgrind:
        await _instrument(True)
    await asyncio.sleep(max(0.0, (due - 600 - clock.now_ms()) / 1000))
    prof = cProfile.Profile() if args.profile else None
    if prof and args.no_apply_profile:
        rep.pause = prof
    spy = None
    if args.py_spy:
        py_spy = str(Path(sys.executable).parent / "py-spy")
        spy = subprocess.Popen(
            [py_spy, "record", "-p", str(os.getpid()), "-r", "250", "-f", "raw", "-o", args.py_spy],
            stdout=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)  # py-spy attaches
    apply0, entries0, own0 = rep.apply_s, rep.entries, sum(w.own_s for w in workers)
    messages0 = _messages(workers)
    t0, wall0 = time.process_time(), time.monotonic()
    if prof:
        prof.enable()
    while sum(w.acked for w in workers) < n:
        await asyncio.sleep(0.005)
    if prof:
        rep.pause = None
        prof.disable()
        prof.dump_stats(args.profile)
    cpu = time.process_time() - t0
    if args.callgrind:
        await _instrument(False)
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
        "messages": _per_execution(_messages(workers), messages0, n),
    }


async def _instrument(on: bool) -> None:
    """Turn callgrind's instrumentation of this process on or off (`--callgrind`), and idle while it does:
    valgrind reads the request between this process's steps."""
    subprocess.Popen(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], stdout=subprocess.DEVNULL
    )
    await asyncio.sleep(2.0)


def _rate_spec(period_ms: int, anchor_ms: int) -> common_pb2.TaskSpec:
    spec = _spec(0)
    spec.schedule.fixed_rate.period_ms = period_ms
    spec.schedule.fixed_rate.anchor_ms = anchor_ms
    return spec


async def run_rate(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """W5's pattern: `args.rate` fixed-rate tasks firing every second, their instants spread evenly over
    the second, the daemon's default scheduler settings (fire lead, burst staging), held starts
    (HeldWorker); measured over `args.seconds` of real time after `args.warm_s`."""
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
        # The daemon's defaults, as daemon.node builds them.
        settings=LeaderSettings(
            horizon_ms=20_000,
            lease_ttl_ms=10_000,
            expiry_grace_ms=5_000,
            worker_silent_ms=4_200,
            heartbeat_interval_ms=2_000,
            fire_lead_ms=500,
            stage_lead_ms=10_000,
            stage_rate=2_000,
        ),
        node_id="n1",
        term=1,
        clock=clock,
        still_leader=lambda: True,
        heartbeat_interval_ms=2_000,
        notifier=Notifier(),  # type: ignore[arg-type]
        on_committed=metrics.observe_committed,
    )
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    runner.raise_features(features.SUPPORTED)
    runner.start()
    while not runner.ready:
        await asyncio.sleep(0.01)
    workers = [HeldWorker(runner, f"w{i}", args.capacity, 2.0) for i in range(args.workers)]
    tasks = [asyncio.create_task(f()) for w in workers for f in (w.read, w.send)]
    n, period = args.rate, 1_000
    base = clock.now_ms()
    for start in range(0, n, 1000):
        cmds = [
            Command(
                request_id=f"c{i}",
                stamped_at_ms=clock.now_ms(),
                create_task=commands_pb2.CreateTask(
                    task_id=make_id(base, i.to_bytes(10, "big")),
                    spec=_rate_spec(period, base + i * period // n),
                ),
            )
            for i in range(start, min(n, start + 1000))
        ]
        runner.prepare(cmds)
        runner.observe(cmds, await committer.submit(cmds))
    await asyncio.sleep(args.warm_s)
    prof = cProfile.Profile() if args.profile else None
    if prof and args.no_apply_profile:
        rep.pause = prof
    if args.callgrind:
        await _instrument_now(True)
    apply0, entries0, own0 = rep.apply_s, rep.entries, sum(w.own_s for w in workers)
    acked0, messages0 = sum(w.acked for w in workers), _messages(workers)
    t0, wall0 = time.process_time(), clock.mono_ms()
    if prof:
        prof.enable()
    await asyncio.sleep(args.seconds)
    if prof:
        rep.pause = None
        prof.disable()
        prof.dump_stats(args.profile)
    cpu = time.process_time() - t0
    wall = (clock.mono_ms() - wall0) / 1000
    done = sum(w.acked for w in workers) - acked0
    if args.callgrind:
        await _instrument_now(False)
    apply_s = rep.apply_s - apply0
    own = sum(w.own_s for w in workers) - own0
    for t in tasks:
        t.cancel()
    await runner.stop()
    await committer.close()
    kv.close()
    if done < 0.9 * n * wall:
        print(f"  (behind: {done / wall:.0f} executions/s acknowledged of {n}/s)")
    return {
        "leader_us": (cpu - apply_s - own) / max(1, done) * 1e6,
        "apply_us": apply_s / max(1, done) * 1e6,
        "workers_us": own / max(1, done) * 1e6,
        "entries": rep.entries - entries0,
        "wall_s": wall,
        "messages": _per_execution(_messages(workers), messages0, max(1, done)),
        "executions": done,
    }


async def _instrument_now(on: bool) -> None:
    """`_instrument`, returning once callgrind took the request (callgrind_control waits for its answer)
    while this loop runs on: the window measured (`--rate --callgrind`) starts and ends there."""
    cmd = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
    await asyncio.to_thread(subprocess.run, cmd, stdout=subprocess.DEVNULL, check=True)


def _shown(messages: dict[str, float]) -> str:
    total = sum(messages.values())
    return f"{total:.3f} (" + ", ".join(f"{kind} {v:.3f}" for kind, v in messages.items() if v) + ")"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=10_000)
    p.add_argument("--commit-ms", type=float, default=2.0, help="replication round trip per entry")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", type=str, default="", help="cProfile of the first run's burst (pstats file)")
    p.add_argument(
        "--no-apply-profile", action="store_true", help="with --profile: pause the profiler during apply"
    )
    p.add_argument("--py-spy", type=str, default="", help="py-spy of the first run's burst (raw stacks)")
    p.add_argument("--asyncio", action="store_true", help="the default event loop, not uvloop (schedd's)")
    p.add_argument(
        "--due-ms",
        type=int,
        default=0,
        help="the burst is due this long after the tasks' creation starts (default 3,000 + n / 2; under "
        "callgrind, which runs ~50 times slower, 60,000 or so: a creation that overruns the instant stops)",
    )
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="under valgrind --tool=callgrind --instr-atstart=no: instrument the burst only (from the "
        "wait for its instant to its end), not the tasks' creation; with --due-ms",
    )
    p.add_argument("--rate", type=int, default=0, help="W5's pattern: this many fixed-rate fires a second")
    p.add_argument("--seconds", type=float, default=5.0, help="with --rate: the window measured")
    p.add_argument("--warm-s", type=float, default=3.0, help="with --rate: run this long before measuring")
    p.add_argument(
        "--dilate",
        type=int,
        default=1,
        help="time runs this many times slower (the default event loop, not uvloop): with --rate "
        "--callgrind, ~50; valgrind --tool=callgrind --instr-atstart=no --toggle-collect=_operator_call "
        "--collect-atstart=yes leaves apply out of the count (in this order: the other way round counts "
        "only apply and the fake workers)",
    )
    p.add_argument(
        "--coalesce-ms", type=int, default=-1, help="planner.FIRE_COALESCE_MS (the window cap) for this run"
    )
    args = p.parse_args()
    global DILATE
    DILATE = args.dilate
    if args.coalesce_ms >= 0:
        planner.FIRE_COALESCE_MS = args.coalesce_ms
    if DILATE > 1:
        asyncio.set_event_loop_policy(_DilatedPolicy())
    elif not args.asyncio:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run((run_rate if args.rate else run)(args, Path(tmp)))
        args.profile = args.py_spy = ""
        runs.append(r)
        print(
            f"run {i + 1}: leader {r['leader_us']:.1f} us/execution outside apply, "
            f"apply {r['apply_us']:.1f}, fake workers {r['workers_us']:.1f}; "
            f"{r['entries']} entries, {r.get('executions', args.n)} executions, {r['wall_s']:.2f} s; "
            f"messages to workers per execution: {_shown(r['messages'])}"
        )
    best = min(runs, key=lambda r: r["leader_us"])
    print(f"best of {len(runs)}: leader {best['leader_us']:.1f} us/execution outside apply")


if __name__ == "__main__":
    main()
