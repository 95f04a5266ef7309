"""Transcript tests of the leader's pure components (daemon.leader): each file in testdata/ is a scripted
history of events and the exact decisions expected (tests/sim/transcript.py says how to read one).

- fire_planning.txt: the horizon, fire ahead and the on-time wheel (FirePlanner);
- worker_pick.txt: labels, capacity, most free slots, full queues, reconnects, namespaces (WorkerPool);
- deferred_start.txt: expiry of a deferred start never confirmed (ExpireLease.unstarted, issue 17's
  ATTEMPT_NOT_STARTED path), a confirmed one, and reconciliation after a failover (LeaseKeeper);
- pending_aging.txt: dispatch order by priority with aging (PendingQueue).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader.leases import LeaseKeeper
from cronraft.daemon.leader.pending import PendingQueue, effective_rank
from cronraft.daemon.leader.planner import FirePlanner
from cronraft.daemon.leader.workers import WorkerPool
from cronraft.proto.v1 import common_pb2, worker_pb2

from .transcript import Cmd, run

TESTDATA = Path(__file__).parent / "testdata"
RANKS = {"high": 0, "normal": 1, "low": 2}


def _labels(text: str) -> dict[str, str]:
    """`zone:a,arch:arm` -> {"zone": "a", "arch": "arm"}."""
    return dict(pair.split(":", 1) for pair in text.split(",") if pair)


def _namespace(text: str) -> str:
    """A namespace as the leader holds it: "default" is stored empty."""
    return "" if text == "default" else text


def _token(text: str) -> common_pb2.FencingToken:
    term, index = text.split(".")
    return common_pb2.FencingToken(term=int(term), index=int(index))


def _refs(text: str) -> list[worker_pb2.LeaseRef]:
    """`e1@2.7,e2@2.8` -> lease references."""
    refs = []
    for item in (i for i in text.split(",") if i):
        execution_id, _, token = item.partition("@")
        refs.append(worker_pb2.LeaseRef(execution_id=execution_id, token=_token(token)))
    return refs


class PlannerDriver:
    """The fire planner with a due-index of its own: `tick` does what LeaderCore.tick does with it
    (load the horizon, take what is due, plan each task) and prints each decision."""

    def __init__(self) -> None:
        self.tasks: dict[str, common_pb2.Task] = {}
        self.planner = FirePlanner(LeaderSettings())

    def __call__(self, cmd: Cmd) -> list[str]:
        if cmd.verb == "settings":
            settings = LeaderSettings(horizon_ms=cmd.num("horizon"), fire_lead_ms=cmd.num("fire_lead"))
            self.planner = FirePlanner(settings)
            self.planner.reset_clock(cmd.num("now", 0))
            return []
        if cmd.verb == "task":  # a task scheduled at due=; ahead=no: it may not fire ahead
            (task_id,) = cmd.words
            task = common_pb2.Task(
                task_id=task_id, state=common_pb2.TASK_SCHEDULED, next_fire_ms=cmd.num("due")
            )
            if cmd.text("ahead") == "no":
                task.spec.max_concurrency = 1  # firing.may_fire_ahead: no concurrency limit
            self.tasks[task_id] = task
            self.planner.schedule(task)
            return []
        if cmd.verb == "commit":  # its Fire committed: the task's next fire is next= (0: none)
            (task_id,) = cmd.words
            task = self.tasks[task_id]
            task.next_fire_ms = cmd.num("next")
            if not task.next_fire_ms:
                task.state = common_pb2.TASK_COMPLETED
            self.planner.done_firing(task_id)
            self.planner.schedule(task)
            return []
        if cmd.verb == "tick":
            return self._tick(cmd.num("now"))
        if cmd.verb == "wheel":
            nd = self.planner.wheel.next_deadline()
            return [
                f"{len(self.planner.wheel)} in the wheel, next due {nd}; {len(self.planner.on_time)} on time"
            ]
        raise ValueError(f"unknown command {cmd.verb}")

    def _tick(self, now: int) -> list[str]:
        out = []
        span = self.planner.horizon_to_load(now)
        if span is not None:
            lo, hi = span
            due = sorted(
                (t.next_fire_ms, t.task_id)
                for t in self.tasks.values()
                if t.state == common_pb2.TASK_SCHEDULED and lo <= t.next_fire_ms <= hi
            )
            self.planner.load(due)
            self.planner.loaded(hi)
            out.append(f"load {lo}..{hi}: " + (" ".join(f"{t}@{d}" for d, t in due) or "nothing"))
        for task_id, _due in self.planner.take_due(now):
            if not self.planner.start_firing(task_id):
                out.append(f"{task_id} already firing")
                continue
            task = self.tasks.get(task_id)
            lead = self.planner.plan(task, task_id, now)
            if lead is not None and task is not None:
                ahead = task.next_fire_ms - now
                out.append(f"fire {task_id} {ahead} ms ahead" if ahead > 0 else f"fire {task_id}")
            elif task_id in self.planner.on_time:
                out.append(
                    f"{task_id} waits on the on-time wheel until {self.planner.on_time.deadline_of(task_id)}"
                )
            elif task_id in self.planner.wheel:
                out.append(f"{task_id} back in the wheel at {self.planner.wheel.deadline_of(task_id)}")
            else:
                out.append(f"{task_id} not fired")
        return out


class PoolDriver:
    def __init__(self) -> None:
        self.pool = WorkerPool(LeaderSettings())

    def __call__(self, cmd: Cmd) -> list[str]:
        pool = self.pool
        if cmd.verb == "connect":
            (worker_id,) = cmd.words
            pool.connect(
                worker_id,
                cmd.num("capacity", 1),
                cmd.items("queues"),
                _labels(cmd.text("labels")),
                0,
                echo_ms=0,
                incarnation="",
                leases=cmd.items("leases"),
                granting=(),
                # namespaces= (those its credential holds `worker` in); none: every namespace ("*")
                namespaces=frozenset(map(_namespace, cmd.items("namespaces")))
                if "namespaces" in cmd.kv
                else None,
            )
            return []
        if cmd.verb == "disconnect":
            pool.disconnect(cmd.words[0])
            return []
        if (
            cmd.verb == "pick"
        ):  # a worker for queue= and namespace= with labels=; take= the slot for that execution
            w = pool.pick(cmd.text("queue"), _labels(cmd.text("labels")), _namespace(cmd.text("namespace")))
            if w is None:
                return ["none"]
            if cmd.text("take"):
                pool.take_slot(w.worker_id, cmd.text("take"))
                return [f"{cmd.text('take')} -> {w.worker_id}"]
            return [w.worker_id]
        if cmd.verb == "reason":  # why work of queue= and namespace= with labels= waits (a waiting reason)
            args = (cmd.text("queue"), _labels(cmd.text("labels")), _namespace(cmd.text("namespace")))
            return [pool.unserved_reason(*args) or pool.busy_reason(*args) or "some worker could take it"]
        if cmd.verb == "release":
            worker_id, execution_id = cmd.words
            pool.release_slot(worker_id, execution_id)
            return []
        if cmd.verb == "tick":
            pool.new_tick()
            return []
        if cmd.verb == "workers":
            return [
                f"{w.worker_id} free={w.free()}/{w.capacity} queues={','.join(sorted(w.queues))}"
                + (f" labels={','.join(f'{k}:{v}' for k, v in sorted(w.labels.items()))}" if w.labels else "")
                + (
                    ""
                    if w.namespaces is None
                    else f" namespaces={','.join(sorted(n or 'default' for n in w.namespaces))}"
                )
                + ("" if w.connected else " disconnected")
                for w in pool.workers.values()
            ]
        raise ValueError(f"unknown command {cmd.verb}")


class KeeperDriver:
    """The lease keeper; `grant` does what the core does when a Grant commits (the offer is not written
    yet; start= is a deferred start, on the leader's monotonic clock)."""

    def __init__(self) -> None:
        self.keeper = LeaseKeeper()

    def __call__(self, cmd: Cmd) -> list[str]:
        keeper = self.keeper
        if cmd.verb == "grant":
            (execution_id,) = cmd.words
            ex = common_pb2.Execution(
                execution_id=execution_id,
                task_id=cmd.text("task", "t"),
                worker_id=cmd.text("worker"),
                token=_token(cmd.text("token")),
                worker_incarnation=cmd.text("incarnation"),
            )
            lease = keeper.track(ex, cmd.num("deadline"))
            lease.written = cmd.text("written") == "yes"  # loaded at an Epoch: yes; granted by us: no
            if "start" in cmd.kv:
                lease.start_mono = cmd.num("start")
            return []
        if cmd.verb == "offered":  # the offer is written to the worker's stream; its start at start=
            (execution_id,) = cmd.words
            start = cmd.num("start") if "start" in cmd.kv else None
            token = _token(cmd.text("token"))
            keeper.offered(execution_id, (token.term, token.index), start)
            return []
        if cmd.verb == "heartbeat":  # renew the listed leases= to until=, at mono=
            (worker_id,) = cmd.words
            r = keeper.renew(worker_id, _refs(cmd.text("leases")), cmd.num("mono"), cmd.num("until"), set())
            out = [f"renewed {' '.join(r.renewed) or '-'}; revoked {' '.join(r.revoked) or '-'}"]
            out += [
                f"forged {f.kind} of {f.execution_id} by {f.worker_id} (held by {f.holder})" for f in r.forged
            ]
            out += [f"{e} confirmed" for e in r.renewed if (ls := keeper.get(e)) is not None and ls.confirmed]
            return out
        if cmd.verb == "reconcile":  # a worker's complete listing, seen by the leader of term=
            (worker_id,) = cmd.words
            keeper.reconcile(
                worker_id,
                cmd.text("incarnation"),
                _refs(cmd.text("listed")),
                cmd.num("term"),
                cmd.num("mono"),
            )
            return []
        if cmd.verb == "due":  # in execution id order: the order among equal deadlines is no contract
            out = []
            for lease in keeper.due(cmd.num("mono")):
                x = keeper.expire_command(lease, 0).expire_lease
                began = "never began (unstarted)" if x.unstarted else "may have begun"
                out.append(f"expire {x.execution_id} token={x.token.term}.{x.token.index}: {began}")
            return sorted(out)
        if cmd.verb == "release":
            keeper.release(cmd.words[0])
            return []
        if cmd.verb == "leases":
            return [
                f"{lease.execution_id} {lease.worker_id} deadline={lease.deadline}"
                + (" expiring" if lease.expiring else "")
                for lease in keeper.leases.values()
            ]
        raise ValueError(f"unknown command {cmd.verb}")


class PendingDriver:
    def __init__(self) -> None:
        self.pending = PendingQueue()
        self.aging_step_ms = LeaderSettings().aging_step_ms
        self.fired: dict[str, int] = {}

    def __call__(self, cmd: Cmd) -> list[str]:
        if cmd.verb == "settings":
            self.aging_step_ms = cmd.num("aging_step")
            return []
        if cmd.verb == "pend":  # an execution of queue= at priority= fired at fired=
            (execution_id,) = cmd.words
            rank = RANKS[cmd.text("priority", "normal")]
            self.fired[execution_id] = cmd.num("fired")
            self.pending.add(cmd.text("queue", "default"), execution_id, rank, self.fired[execution_id])
            return []
        if cmd.verb == "order":  # the dispatch order of queue= at now=
            now = cmd.num("now")
            names = {v: k for k, v in RANKS.items()}
            out = []
            for rank, execution_id in self.pending.dispatch_order(
                cmd.text("queue", "default"), now, self.aging_step_ms
            ):
                fired = self.fired[execution_id]
                effective = effective_rank(rank, fired, now, self.aging_step_ms)
                out.append(f"{execution_id} {names[rank]} fired={fired}, counts as {names[effective]}")
            return out
        if cmd.verb == "grant":  # the first in dispatch order leaves the queue
            queue = cmd.text("queue", "default")
            rank, execution_id = self.pending.dispatch_order(queue, cmd.num("now"), self.aging_step_ms)[0]
            self.pending.remove(queue, rank, execution_id)
            return [execution_id]
        raise ValueError(f"unknown command {cmd.verb}")


DRIVERS: dict[str, Callable[[], Callable[[Cmd], list[str]]]] = {
    "fire_planning.txt": PlannerDriver,
    "worker_pick.txt": PoolDriver,
    "deferred_start.txt": KeeperDriver,
    "pending_aging.txt": PendingDriver,
}


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_transcript(name: str) -> None:
    run(TESTDATA / name, DRIVERS[name]())
