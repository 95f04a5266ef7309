"""Plans: the schedule answers a command carries (Command.plan), matched to the task they are for. Pure.

The leader computes the version-dependent schedule results a command's apply will ask for (raft.answers)
and puts them in the command (raft/leaderplan.py builds them); apply answers from them, so a replica with
another tzdata, holidays or cron evaluator computes the same fire instants (issue 18). A plan is used
only once the cluster's feature level has "schedule_plans" (raft.features): a release before it ignores
the field and computes everything itself, so the leader adds none until every member applies them.

A `TaskPlan` is valid for one schedule and the calendars it reads, as the leader read them: apply uses it
only when the task's schedule (`schedule_digest`) and those calendars (`calendars_digest`: names and
versions, includes followed) are what it reads in its own transaction; otherwise it computes, as without
a plan (a client changed the task or a calendar between the leader's read and the apply).

Which tasks need one (`needs_plan`): a cron schedule, calendars, or a dependency on the same logical date.
A fixed_rate, at or fixed_delay schedule without calendars is arithmetic on the command's own data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import firing
from cronraft.raft.answers import LOCAL, Answers, Carried, Recorder
from cronraft.raft.kv import Savepoint, Txn

__all__ = [
    "Discard",
    "PlanBuilder",
    "PlanIndex",
    "calendars_digest",
    "needs_plan",
    "schedule_digest",
]

MAX_CALENDARS_READ = 256  # a calendar closure is bounded far below this (raft/calendar.py)


def schedule_digest(sched: common_pb2.Schedule) -> bytes:
    return hashlib.blake2b(sched.SerializeToString(deterministic=True), digest_size=8).digest()


def calendars_digest(txn: Txn, spec: common_pb2.TaskSpec) -> bytes:
    """The calendars the task's schedule names and what they include, by key and version (b"": none)."""
    names = list(spec.schedule.calendars)
    if not names:
        return b""
    h = hashlib.blake2b(digest_size=8)
    seen: set[str] = set()
    while names and len(seen) < MAX_CALENDARS_READ:
        name = names.pop(0)
        if name in seen:
            continue
        seen.add(name)
        c = firing.read_calendar(txn, name, spec.namespace)
        h.update(name.encode() + b"\0" + (b"-" if c is None else str(c.version).encode()) + b"\0")
        if c is not None:
            names.extend(c.include)
    return h.digest()


def needs_plan(spec: common_pb2.TaskSpec) -> bool:
    """Whether applying commands about this task asks anything that depends on a node's versions."""
    # Asked for every fire the leader plans: the dependencies (rare) are walked only when there are some.
    schedule = spec.schedule
    if schedule.WhichOneof("kind") == "cron" or schedule.calendars:
        return True
    deps = spec.depends_on
    return bool(deps) and any(not d.window_ms for d in deps)


class PlanIndex:
    """A command's plan on the apply side: the answers for a task, when its TaskPlan still matches."""

    def __init__(self, plan: commands_pb2.Plan) -> None:
        self._plans = {(p.task_id, p.schedule_digest): p for p in plan.tasks}
        self._carried: dict[tuple[str, bytes], Answers] = {}

    def answers(self, txn: Txn, task_id: str, spec: common_pb2.TaskSpec) -> Answers:
        key = (task_id, schedule_digest(spec.schedule))
        got = self._carried.get(key)
        if got is None:
            plan = self._plans.get(key)
            if plan is None or plan.calendars_digest != calendars_digest(txn, spec):
                got = LOCAL
            else:
                got = Carried(plan)
            self._carried[key] = got
        return got


class PlanBuilder:
    """The leader's side: a plan being filled by `Recorder`s, one TaskPlan per (task, schedule)."""

    def __init__(self, txn: Txn, plan: commands_pb2.Plan | None = None) -> None:
        self.txn = txn
        self.plan = commands_pb2.Plan() if plan is None else plan
        self._recorders: dict[tuple[str, bytes], Recorder] = {}

    def answers(self, txn: Txn, task_id: str, spec: common_pb2.TaskSpec) -> Answers:
        if not needs_plan(spec):
            return LOCAL
        key = (task_id, schedule_digest(spec.schedule))
        rec = self._recorders.get(key)
        if rec is None:
            rec = Recorder(
                self.plan.tasks.add(
                    task_id=task_id,
                    schedule_digest=key[1],
                    calendars_digest=calendars_digest(self.txn, spec),
                )
            )
            self._recorders[key] = rec
        return rec


class Discard:
    """A transaction that reads `txn` and drops every write: the leader runs a command's planning (or a
    whole handler) on it to learn what apply will ask, changing nothing. Reads do not see the dropped
    writes, which the planning never reads back."""

    def __init__(self, txn: Txn) -> None:
        self._txn = txn

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        return None

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        return self._txn.get(db, key) is None

    def delete(self, db: str, key: bytes) -> bool:
        return self._txn.get(db, key) is not None

    def count(self, db: str) -> int:
        return self._txn.count(db)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._txn.scan(db, start, end, reverse=reverse)

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        return self._txn.first(db, start, end, reverse=reverse)

    def savepoint(self) -> Savepoint:
        return _DiscardSavepoint(self._txn)


class _DiscardSavepoint(Discard):
    def release(self) -> None:
        return None

    def rollback(self) -> None:
        return None
