"""Fire instants computed once by the leader and carried in the command (raft/answers.py, raft/fireplan.py,
raft/leaderplan.py; issue 18): a replica whose schedule maths answer differently (another tzdata, holidays
or cron evaluator, faked here by patching them while it applies) ends with the very store of the leader
once the commands carry plans, and with another one without them (the control). Every question apply
asks is in the plan (no miss), for each command kind that plans: fires on time and late (misfire walk),
a DST shift, a calendar roll and skip, create, import, update, pause and resume (the walk over paused
times), backfill, and the logical date of a dependency (grant, expiry of a pending execution)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import answers, calendar, deps, features, leaderplan, schedule
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.fireplan import PlanIndex, schedule_digest
from cronraft.raft.kv import DATABASES, MemKV
from cronraft.raft.state import StateMachine, read_task
from tests.support.native import pure_python_only

pytestmark = pure_python_only  # the replica's maths are faked by patching them

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86_400_000
Command = commands_pb2.Command
PARIS = "Europe/Paris"


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def eid(n: int) -> str:
    return make_id(T0, (1_000_000 + n).to_bytes(10, "big"))


def cron_spec(name: str, expr: str, **kw: Any) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expr, time_zone=PARIS)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    for k, v in kw.items():
        if k == "calendars":
            s.schedule.calendars.extend(v)
            s.schedule.calendar_action = common_pb2.CALENDAR_ROLL_FOLLOWING
        elif k == "depends_on":
            s.depends_on.add(task_id=v)
        else:
            setattr(s, k, v)
    return s


@contextmanager
def other_versions(misses: list[str]) -> Iterator[None]:
    """While it lasts, the schedule maths answer as a node with other versions would: every cron step
    an hour later, no DST shift, no calendar exclusion, the logical date an hour off; and every question a
    plan could not answer is listed in `misses`."""
    mp = pytest.MonkeyPatch()
    step, days = schedule.cron_step, deps.day_bounds

    def later(sched: common_pb2.Schedule, after_ms: int, *, field: str = "spec.schedule") -> int | None:
        got = step(sched, after_ms, field=field)
        return None if got is None else got + 3_600_000

    mp.setattr(schedule, "cron_step", later)
    mp.setattr(schedule, "dst_shifted", lambda sched, nominal: False)
    mp.setattr(calendar, "resolve", lambda cals, action, nominal, zone, **kw: ("fire", nominal, ""))
    mp.setattr(deps, "day_bounds", lambda sched, nominal: tuple(x + 3_600_000 for x in days(sched, nominal)))
    mp.setattr(answers.Carried, "_miss", lambda self, question, key: misses.append(f"{question}@{key}"))
    try:
        yield
    finally:
        mp.undo()


class Pair:
    """The leader's state machine and a replica fed the same entries; the replica computes otherwise."""

    def __init__(self, *, plans: bool) -> None:
        self.leader = StateMachine(MemKV())
        self.replica = StateMachine(MemKV())
        self.plans = plans
        self.index = 0
        self.misses: list[str] = []
        self.planned: list[str] = []

    def apply(self, cmd: Command) -> commands_pb2.CommandResult:
        if self.plans:
            with self.leader.kv.read() as txn:
                if leaderplan.attach_all(txn, [cmd]):
                    self.planned.append(cmd.WhichOneof("body") or "")
        self.index += 1
        payload = encode_batch([cmd])
        raw = self.leader.apply_entry(self.index, payload)
        with other_versions(self.misses):
            self.replica.apply_entry(self.index, payload)
        assert raw is not None
        (res,) = commands_pb2.BatchResult.FromString(raw).results
        return res

    def task(self, task_id: str) -> common_pb2.Task:
        with self.leader.kv.read() as txn:
            t = read_task(txn, task_id)
        assert t is not None
        return t

    def fire(self, task_id: str, execution_id: str, late_ms: int = 0) -> commands_pb2.CommandResult:
        t = self.task(task_id)
        due = t.next_due_ms or t.next_fire_ms
        return self.apply(
            Command(
                stamped_at_ms=due + late_ms,
                fire=commands_pb2.Fire(
                    task_id=task_id, nominal_time_ms=t.next_fire_ms, execution_id=execution_id
                ),
            )
        )

    def stores(self) -> tuple[dict[str, list[tuple[bytes, bytes]]], dict[str, list[tuple[bytes, bytes]]]]:
        def dump(sm: StateMachine) -> dict[str, list[tuple[bytes, bytes]]]:
            with sm.kv.read() as txn:
                return {db: list(txn.scan(db)) for db in DATABASES}

        return dump(self.leader), dump(self.replica)


def scenario(pair: Pair) -> None:
    weekends = common_pb2.Calendar(
        name="long_weekends",
        time_zone=PARIS,
        exclude=[common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[4, 5, 6, 7]))],
    )
    a, b, c, d = tid(1), tid(2), tid(3), tid(4)
    assert pair.apply(Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))).applied
    assert pair.apply(
        Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=weekends))
    ).applied
    for task_id, spec in (
        (a, cron_spec("a", "30 2 * * *")),  # a fixed-time job: shifted out of March's gap
        (b, cron_spec("b", "0 9 * * *", calendars=["long_weekends"])),
        (c, cron_spec("c", "0 10 * * *", depends_on=a)),
    ):
        res = pair.apply(
            Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec))
        )
        assert res.applied, res.error
    imported = commands_pb2.ImportTasks(first_task_id=d, specs=[cron_spec("d", "15 */6 * * *")])
    assert pair.apply(Command(stamped_at_ms=T0, import_tasks=imported)).applied

    assert pair.fire(a, eid(1)).applied
    assert pair.fire(b, eid(2)).applied  # Thursday 1 January rolls to Monday 5 January
    assert pair.fire(a, eid(3), late_ms=3 * DAY).applied  # a misfire: three days missed, walked over
    assert pair.fire(c, eid(4)).applied
    grant = commands_pb2.Grant(execution_id=eid(4), worker_id="w1", lease_ttl_ms=1000)
    res = pair.apply(Command(stamped_at_ms=pair.task(c).created_at_ms + DAY, grant=grant))
    assert res.error_code == "dependencies_unmet"  # a's run that day is still pending
    update = commands_pb2.UpdateTask(task_id=a, spec=cron_spec("a", "30 2 * * 1-5"))
    assert pair.apply(Command(stamped_at_ms=T0 + 5 * DAY, update_task=update)).applied
    assert pair.apply(
        Command(stamped_at_ms=T0 + 5 * DAY, pause_task=commands_pb2.PauseTask(task_id=a))
    ).applied
    resume = commands_pb2.ResumeTask(task_id=a)  # ten weekdays missed while paused, recorded as paused
    assert pair.apply(Command(stamped_at_ms=T0 + 19 * DAY, resume_task=resume)).applied
    backfill = commands_pb2.BackfillTask(task_id=b, from_ms=T0, to_ms=T0 + 12 * DAY, max_fires=20)
    assert pair.apply(Command(stamped_at_ms=T0 + 20 * DAY, backfill_task=backfill)).applied
    # Late March: the night of the 29th has no 02:30 in Paris (a DST gap): the fire is shifted to 03:00.
    march = 1_774_742_400_000  # 2026-03-29T00:00:00Z
    update = commands_pb2.UpdateTask(task_id=a, spec=cron_spec("a", "30 2 * * *"))
    assert pair.apply(Command(stamped_at_ms=march - DAY, update_task=update)).applied
    while pair.task(a).next_fire_ms < march:
        assert pair.fire(a, eid(100 + pair.index)).applied
    res = pair.fire(a, eid(99))
    assert res.applied and pair.task(a).fire_count > 0


def test_a_replica_computing_otherwise_ends_with_the_leaders_store_when_commands_carry_plans() -> None:
    pair = Pair(plans=True)
    scenario(pair)
    assert pair.misses == []
    leader, replica = pair.stores()
    for db in DATABASES:
        assert leader[db] == replica[db], db
    assert {"fire", "create_task", "import_tasks", "update_task", "resume_task", "backfill_task"} <= set(
        pair.planned
    )
    with pair.leader.kv.read() as txn:
        outcomes = {common_pb2.FireRecord.FromString(v).outcome for _, v in txn.scan("ledger")}
    assert {
        common_pb2.DST_SHIFTED,
        common_pb2.ROLLED,
        common_pb2.MISSED_DOWNTIME,
        common_pb2.PAUSED,
        common_pb2.MANUAL,
    } <= outcomes


def test_without_plans_the_same_replica_diverges() -> None:
    """The control: the patched maths do change what a replica stores when it computes for itself."""
    pair = Pair(plans=False)
    scenario(pair)
    leader, replica = pair.stores()
    assert leader["tasks"] != replica["tasks"] and leader["ledger"] != replica["ledger"]


def test_plans_wait_for_their_feature() -> None:
    """A store an older release wrote (no feature level) gets no plans: its replicas may ignore them."""
    sm = StateMachine(MemKV())
    sm.apply_entry(
        1, encode_batch([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n"))])
    )
    create = Command(
        stamped_at_ms=T0,
        create_task=commands_pb2.CreateTask(task_id=tid(1), spec=cron_spec("a", "0 9 * * *")),
    )
    with sm.kv.read() as txn:
        assert leaderplan.attach_all(txn, [create]) == 1 and create.plan.tasks[0].cron_next
    with sm.kv.write() as txn:
        txn.delete("meta", features.META_FEATURES)
    create.ClearField("plan")
    with sm.kv.read() as txn:
        assert leaderplan.attach_all(txn, [create]) == 0 and not create.HasField("plan")


def test_a_plan_for_another_schedule_or_calendar_version_is_not_used() -> None:
    sm = StateMachine(MemKV())
    cal = common_pb2.Calendar(
        name="hol", exclude=[common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[7]))]
    )
    sm.apply_entry(
        1, encode_batch([Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal))])
    )
    spec = cron_spec("a", "0 9 * * *", calendars=["hol"])
    create = Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=tid(1), spec=spec))
    with sm.kv.read() as txn:
        leaderplan.attach(txn, create)
        index = PlanIndex(create.plan)
        assert isinstance(index.answers(txn, tid(1), spec), answers.Carried)
        other = cron_spec("a", "0 10 * * *", calendars=["hol"])
        assert schedule_digest(other.schedule) != schedule_digest(spec.schedule)
        assert PlanIndex(create.plan).answers(txn, tid(1), other) is answers.LOCAL
        assert PlanIndex(create.plan).answers(txn, tid(2), spec) is answers.LOCAL
    cal.exclude.add(weekdays=common_pb2.WeekdaySet(days=[6]))  # the calendar changes: a new version
    sm.apply_entry(
        2, encode_batch([Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal))])
    )
    with sm.kv.read() as txn:
        assert PlanIndex(create.plan).answers(txn, tid(1), spec) is answers.LOCAL
