"""A seeded fault schedule runner on top of `FaultCluster` (shared/docs/fault-testing.md, section 2.2).

A schedule is a list of steps `(at_s, what)`, `at_s` seconds after `run()` starts. `what` is either

- a callable `f(cluster)` (run in a thread; for anything the primitives below do not cover), or
- a `Fault(fault, target, duration_s, args)`, or the tuple `(fault, target, duration_s[, args])`:
  the fault is applied to the processes the target selector names, and undone `duration_s` later
  (concurrently with later steps).

Faults: kill | terminate (SIGKILL | SIGTERM; undo = restart), pause (SIGSTOP; undo = SIGCONT), isolate,
cut_link (target "A,B", each a selector), loss (args percent), delay (args ms, jitter_ms),
skew (args offset_s), disk_full (undo = free the disk and restart the node if it died, unless
args restart=False).

Selectors: "leader", "follower", "random-node", "random-worker", "half-workers", or a process name. They
are resolved when the step runs, one step after the other on the event loop, so that the random choices
depend only on the seed and on what the cluster looked like (the leader), never on thread timing.
Every applied fault is logged by the cluster's primitives to run_dir/nemesis.jsonl; `final_heal()`
undoes everything (and restarts processes that are down).
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fault.cluster import FaultCluster, Unsupported

__all__ = ["FAULTS", "SELECTORS", "Fault", "Nemesis", "Step", "random_schedule"]

FAULTS = ("kill", "terminate", "pause", "isolate", "cut_link", "loss", "delay", "skew", "disk_full")
SELECTORS = ("leader", "follower", "random-node", "random-worker", "half-workers")


@dataclass(frozen=True)
class Fault:
    fault: str
    target: str
    duration_s: float
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {', '.join(FAULTS)}")


Action = Callable[[FaultCluster], object]
Step = tuple[float, Fault | Action | tuple[Any, ...]]


def _as_fault(what: Fault | tuple[Any, ...]) -> Fault:
    if isinstance(what, Fault):
        return what
    return Fault(what[0], what[1], float(what[2]), dict(what[3]) if len(what) > 3 else {})


@dataclass
class Applied:
    """One step as it ran (kept in `Nemesis.events` for tests and reports)."""

    at_s: float
    fault: str
    targets: tuple[str, ...]
    skipped: str | None = None  # why it was not applied (Unsupported, no leader, no candidate)


class Nemesis:
    def __init__(self, cluster: FaultCluster, rng: random.Random, *, leader_wait_s: float = 10.0) -> None:
        self.cluster = cluster
        self.rng = rng
        self.leader_wait_s = leader_wait_s
        self.events: list[Applied] = []
        self._pending: set[asyncio.Task[None]] = set()

    # -- selectors --------------------------------------------------------------------------------

    async def _leader(self) -> str | None:
        try:
            return await asyncio.to_thread(self.cluster.wait_leader, self.leader_wait_s)
        except TimeoutError:
            return None

    async def resolve(self, selector: str) -> list[str]:
        """The process names a selector stands for now (empty: none available)."""
        c = self.cluster
        nodes = [n for n in c.node_ids if c.alive(n)]
        workers = [w for w in c.worker_ids if c.alive(w)]
        if selector == "leader":
            lead = await self._leader()
            return [lead] if lead else []
        if selector == "follower":
            lead = await self._leader()
            followers = [n for n in nodes if n != lead]
            return [self.rng.choice(followers)] if followers else []
        if selector == "random-node":
            return [self.rng.choice(nodes)] if nodes else []
        if selector == "random-worker":
            return [self.rng.choice(workers)] if workers else []
        if selector == "half-workers":
            k = max(1, len(c.worker_ids) // 2)
            return sorted(self.rng.sample(workers, min(k, len(workers))))
        if selector in c.node_ids or selector in c.worker_ids:
            return [selector]
        raise ValueError(f"unknown target selector {selector!r}; one of {', '.join(SELECTORS)} or a name")

    async def _targets(self, fault: Fault) -> list[str]:
        if fault.fault != "cut_link":
            return await self.resolve(fault.target)
        parts = fault.target.split(",")
        if len(parts) != 2:
            raise ValueError(f"cut_link needs a target 'A,B', got {fault.target!r}")
        a = await self.resolve(parts[0].strip())
        b = [x for x in await self.resolve(parts[1].strip()) if x not in a]
        return [a[0], b[0]] if a and b else []

    # -- faults -----------------------------------------------------------------------------------

    def _apply(self, fault: Fault, targets: list[str]) -> Callable[[], None]:
        """Apply the fault (blocking); return its undo."""
        c = self.cluster
        args = fault.args

        def each(fn: Callable[[str], object]) -> None:
            for t in targets:
                fn(t)

        def restart(t: str) -> None:
            if not c.alive(t):
                (c.start_node if t in c.node_ids else c.start_worker)(t)

        kind = fault.fault
        if kind in ("kill", "terminate"):
            sig = signal.SIGKILL if kind == "kill" else signal.SIGTERM
            each(lambda t: (c.kill_node if t in c.node_ids else c.kill_worker)(t, sig))
            return lambda: each(restart)
        if kind == "pause":
            each(c.pause)
            return lambda: each(c.resume)
        if kind == "isolate":
            each(c.isolate)
            return lambda: each(c.heal)
        if kind == "cut_link":
            c.cut_link(targets[0], targets[1])
            return lambda: c.heal_link(targets[0], targets[1])
        if kind == "loss":
            each(lambda t: c.set_loss(t, int(args.get("percent", 20))))
            return lambda: each(lambda t: c.set_loss(t, 0))
        if kind == "delay":
            ms, jitter = int(args.get("ms", 100)), int(args.get("jitter_ms", 20))
            each(lambda t: c.set_delay(t, ms, jitter))
            return lambda: each(lambda t: c.set_delay(t, 0, 0))
        if kind == "skew":
            each(lambda t: c.set_skew(t, float(args.get("offset_s", 5.0))))
            return lambda: each(lambda t: c.set_skew(t, 0.0))
        if kind == "disk_full":
            each(c.fill_disk)

            def undo() -> None:
                each(c.free_disk)
                if args.get("restart", True):
                    each(restart)

            return undo
        raise ValueError(kind)  # pragma: no cover - Fault validates the name

    async def _undo_later(self, delay_s: float, undo: Callable[[], None]) -> None:
        await asyncio.sleep(delay_s)
        await asyncio.to_thread(undo)

    async def run(self, schedule: Sequence[Step]) -> None:
        """Run the schedule; returns once every fault it applied has been undone."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            for at_s, what in sorted(schedule, key=lambda s: s[0]):
                await asyncio.sleep(max(0.0, t0 + at_s - loop.time()))
                if callable(what):
                    self.events.append(Applied(at_s, getattr(what, "__name__", "action"), ()))
                    await asyncio.to_thread(what, self.cluster)
                    continue
                fault = _as_fault(what)
                targets = await self._targets(fault)
                event = Applied(at_s, fault.fault, tuple(targets))
                self.events.append(event)
                if not targets:
                    event.skipped = f"no process for selector {fault.target!r}"
                    continue
                try:
                    undo = await asyncio.to_thread(self._apply, fault, targets)
                except Unsupported as e:
                    event.skipped = e.reason
                    continue
                task = asyncio.create_task(self._undo_later(fault.duration_s, undo))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            if self._pending:
                await asyncio.gather(*list(self._pending))
        finally:
            for task in list(self._pending):
                task.cancel()

    def run_blocking(self, schedule: Sequence[Step]) -> None:
        """The same, for a caller without an event loop (runs its own in this thread)."""
        asyncio.run(self.run(schedule))

    def final_heal(self, *, restart: bool = True) -> None:
        """Undo every fault in force (cluster.heal_all) and, with `restart`, start every process that is
        down. Blocking: call it through asyncio.to_thread from a coroutine."""
        self.cluster.heal_all()
        if restart:
            for n in self.cluster.node_ids:
                if not self.cluster.alive(n):
                    self.cluster.start_node(n)
            for w in self.cluster.worker_ids:
                if not self.cluster.alive(w):
                    self.cluster.start_worker(w)


def random_schedule(
    rng: random.Random,
    duration_s: float,
    *,
    faults: Sequence[tuple[str, str]] = (("kill", "leader"), ("pause", "follower"), ("isolate", "leader")),
    gap_s: tuple[float, float] = (5.0, 15.0),
    fault_s: tuple[float, float] = (2.0, 8.0),
    args: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Step]:
    """One fault at a time: wait a gap, apply a random (fault, selector) for a random duration, repeat
    while it fits in `duration_s`. Deterministic given the rng's state."""
    steps: list[Step] = []
    t = rng.uniform(*gap_s)
    while True:
        kind, selector = faults[rng.randrange(len(faults))]
        length = rng.uniform(*fault_s)
        if t + length > duration_s:
            return steps
        steps.append((round(t, 3), Fault(kind, selector, round(length, 3), dict((args or {}).get(kind, {})))))
        t += length + rng.uniform(*gap_s)
