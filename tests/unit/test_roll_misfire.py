"""Times missed while the cluster could not fire, for a task whose calendars roll (feature schedule_fixes,
raft.misfire.decide_rolled_misfire): each time is judged at the instant it was due, rolled, as the plan
would have had it fire. Missed when that instant passed (fire_once fires the latest such time, once); not
missed at all when it is still to come (planned, and fired at its rolled instant); and a rolled fire
late by more than the misfire threshold but inside the catch-up window catches up under fire_all.
Below the feature, the previous release's rule (nominal times walked) is kept. Also: fire_once, more
than 100 missed times, the latest excluded by a skip calendar: the latest included one fires.

The state machine applies commands stamped at chosen instants (the injected clock of apply). Real
processes: tests/integration/test_outage_kinds.py."""

from __future__ import annotations

import pytest
from test_fireplan import Pair
from test_state import Log, create, epoch, fire, spec

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft.kv import DATABASES, MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.state import ledger as sm_ledger
from tests.support.native import pure_python_only

Command = commands_pb2.Command
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
ID = "01M990QVT8FHE0548MV8BA2RMB"
# Days of January 2026 at 09:00 UTC.
THU1, FRI2, SAT3, SUN4, MON5 = (T0 + d * DAY + 9 * HOUR for d in range(5))
FRI9, SAT10, MON12 = (T0 + d * DAY + 9 * HOUR for d in (8, 9, 11))
SKIP, ONCE, ALL = common_pb2.MISFIRE_SKIP, common_pb2.MISFIRE_FIRE_ONCE, common_pb2.MISFIRE_FIRE_ALL


def _eid(n: int) -> str:
    return f"01M990QVT8FHE0548MV8BA{n:04d}"


def _log(fixes: bool) -> Log:
    fresh = features.SUPPORTED if fixes else features.SUPPORTED - {features.SCHEDULE_FIXES}
    log = Log(StateMachine(MemKV(), fresh_features=fresh))
    log.apply(epoch(1))
    return log


def _calendar(log: Log, *weekdays: int) -> None:
    days = common_pb2.Calendar(
        name="days",
        time_zone="UTC",
        exclude=[common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=list(weekdays)))],
    )
    (c,) = log.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=days)))
    assert c.applied, c.error


def _task(log: Log, expression: str, action: int, policy: int) -> common_pb2.Task:
    sched = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression=expression), calendars=["days"], calendar_action=action
    )
    (t,) = log.apply(create(ID, spec(sched, misfire=policy), at=T0 + 1))
    assert t.applied, t.error
    return t.task


def _fire(log: Log, task: common_pb2.Task, n: int, at: int) -> commands_pb2.CommandResult:
    """The Fire of `task`'s planned next time, committed at `at`."""
    (f,) = log.apply(fire(ID, task.next_fire_ms, _eid(n), at=at))
    assert f.applied, f.error
    return f


def _ledger(log: Log) -> dict[int, tuple[str, str]]:
    with log.sm.kv.read() as txn:
        records = sm_ledger(txn, ID, 1, T0 + 60 * DAY, 1000)
    return {r.nominal_time_ms: (common_pb2.FireOutcome.Name(r.outcome), r.reason) for r in records}


def _weekend_rolled_to_monday(fixes: bool, policy: int) -> tuple[Log, common_pb2.CommandResult]:
    """Daily at 09:00, weekends rolled to the following Monday; Thursday fires on time, then the cluster
    is down from before Friday 09:00 until Sunday 12:00, when Friday's Fire commits."""
    log = _log(fixes)
    _calendar(log, 6, 7)
    task = _task(log, "0 9 * * *", common_pb2.CALENDAR_ROLL_FOLLOWING, policy)
    assert task.next_fire_ms == THU1
    thu = _fire(log, task, 1, THU1)
    assert thu.task.next_fire_ms == FRI2 and not thu.task.next_due_ms
    return log, _fire(log, thu.task, 2, SUN4 + 3 * HOUR)


@pytest.mark.parametrize("policy", [SKIP, ONCE])
def test_a_rolled_time_still_to_come_after_an_outage_is_planned_not_missed(policy: int) -> None:
    """Saturday's and Sunday's 09:00 roll to Monday 09:00, still to come when the cluster is back on
    Sunday: not missed. Saturday is planned for Monday (Sunday then merges into it); only Friday was
    missed, and fire_once fires Friday, the latest time whose instant passed (it fired Sunday's nominal
    time, rolled to Monday, on Sunday)."""
    log, f = _weekend_rolled_to_monday(True, policy)
    ledger = _ledger(log)
    assert SAT3 not in ledger and SUN4 not in ledger, ledger
    assert f.task.next_fire_ms == SAT3 and f.task.next_due_ms == MON5
    if policy == ONCE:
        assert [e.nominal_time_ms for e in f.executions] == [FRI2] and ledger[FRI2][0] == "FIRED"
        assert not f.missed
    else:
        assert not f.executions and ledger[FRI2] == ("MISSED_DOWNTIME", "not fired in time; misfire_skip")
        assert [m.nominal_time_ms for m in f.missed] == [FRI2]
    # Monday 09:00: Saturday fires there, rolled; Sunday and Monday merge into it, as without an outage.
    mon = _fire(log, f.task, 3, MON5)
    assert [e.nominal_time_ms for e in mon.executions] == [SAT3]
    ledger = _ledger(log)
    assert ledger[SAT3] == ("ROLLED", "rolled by calendar")
    assert ledger[SUN4][0] == ledger[MON5][0] == "SKIPPED_CALENDAR"
    assert ledger[SUN4][1] == (
        f"merged into the fire due at {MON5} (rolled from 2026-01-04 (weekend (Sun) (calendar days)))"
    )


@pytest.mark.parametrize("policy", [SKIP, ONCE])
def test_without_the_feature_rolled_times_are_judged_at_their_nominal_time(policy: int) -> None:
    """The previous release, kept below the feature: Saturday and Sunday are missed_downtime, and
    fire_once fires Sunday's nominal time on Sunday, a day before its rolled instant."""
    log, f = _weekend_rolled_to_monday(False, policy)
    ledger = _ledger(log)
    assert ledger[SAT3][0] == "MISSED_DOWNTIME"
    if policy == ONCE:
        assert [e.nominal_time_ms for e in f.executions] == [SUN4] and ledger[SUN4][0] == "FIRED"
    else:
        assert ledger[SUN4][0] == "MISSED_DOWNTIME" and not f.executions
    assert f.task.next_fire_ms == MON5


@pytest.mark.parametrize("fixes", [True, False])
def test_a_rolled_fire_late_by_seconds_catches_up_under_fire_all(fixes: bool) -> None:
    """fire_all (the default), a leader failover of 30 s at Monday 09:00: Saturday's run, rolled to
    Monday 09:00, is 30 s late, inside the 60 s window: it fires (catch-up). Its nominal time, two days
    old, was compared with the window: Saturday and Sunday were missed_downtime and Monday's own time,
    merged into the missed fire, never ran."""
    log = _log(fixes)
    _calendar(log, 6, 7)
    task = _task(log, "0 9 * * *", common_pb2.CALENDAR_ROLL_FOLLOWING, ALL)
    for n in (1, 2):  # Thursday and Friday on time
        task = _fire(log, task, n, task.next_due_ms or task.next_fire_ms).task
    assert task.next_fire_ms == SAT3 and task.next_due_ms == MON5
    f = _fire(log, task, 3, MON5 + 30_000)
    ledger = _ledger(log)
    if fixes:
        assert [e.nominal_time_ms for e in f.executions] == [SAT3]
        assert ledger[SAT3] == ("ROLLED", "rolled by calendar; catch-up after a misfire")
        assert ledger[SUN4][0] == ledger[MON5][0] == "SKIPPED_CALENDAR"  # merged, as on time
    else:
        assert not f.executions and ledger[SAT3][0] == ledger[SUN4][0] == "MISSED_DOWNTIME"
        assert ledger[MON5][0] == "SKIPPED_CALENDAR"
    assert f.task.next_fire_ms == MON5 + DAY  # Tuesday


def _saturday_rolled_back_to_friday(fixes: bool, policy: int) -> tuple[Log, common_pb2.CommandResult]:
    """Mondays and Saturdays at 09:00, Saturdays rolled back to Friday 09:00. Saturday 3 fires on Friday
    2; the cluster is down from before Monday 5 09:00 until Friday 9 12:00, when Monday 5's Fire
    commits: Saturday 10's instant, Friday 9 09:00, passed during the outage, its nominal time did not."""
    log = _log(fixes)
    _calendar(log, 6)
    task = _task(log, "0 9 * * 1,6", common_pb2.CALENDAR_ROLL_PRECEDING, policy)
    assert task.next_fire_ms == SAT3 and task.next_due_ms == FRI2
    sat = _fire(log, task, 1, FRI2)
    assert sat.task.next_fire_ms == MON5
    return log, _fire(log, sat.task, 2, FRI9 + 3 * HOUR)


@pytest.mark.parametrize("policy", [SKIP, ONCE])
def test_a_time_rolled_back_into_an_outage_is_missed_with_it(policy: int) -> None:
    """fire_once fires once, Saturday 10 (rolled: the latest time whose instant passed), Monday 5 being
    missed; skip records both missed_downtime. Monday 12 comes next."""
    log, f = _saturday_rolled_back_to_friday(True, policy)
    ledger = _ledger(log)
    assert ledger[MON5] == (
        "MISSED_DOWNTIME",
        f"not fired in time; {common_pb2.MisfirePolicy.Name(policy).lower()}",
    )
    if policy == ONCE:
        assert [e.nominal_time_ms for e in f.executions] == [SAT10]
        assert ledger[SAT10] == ("ROLLED", "rolled by calendar")
    else:
        assert not f.executions and ledger[SAT10][0] == "MISSED_DOWNTIME"
    assert f.task.next_fire_ms == MON12 and not f.task.next_due_ms


def test_without_the_feature_fire_once_fires_twice_for_one_outage() -> None:
    """The previous release: Monday 5 fires, then Saturday 10 is planned at an instant already passed, so
    its Fire is a second misfire and fires too."""
    log, f = _saturday_rolled_back_to_friday(False, ONCE)
    assert [e.nominal_time_ms for e in f.executions] == [MON5]
    assert f.task.next_fire_ms == SAT10 and f.task.next_due_ms == FRI9
    again = _fire(log, f.task, 3, FRI9 + 3 * HOUR + 100)
    assert [e.nominal_time_ms for e in again.executions] == [SAT10]


@pytest.mark.parametrize("fixes", [True, False])
def test_fire_once_past_the_recorded_times_fires_the_latest_included_one(fixes: bool) -> None:
    """Every minute, a skip calendar excluding 02:30-03:10; the cluster down from before 00:01 until
    03:00:30: 180 missed times, of which the first 100 are recorded and the latest, 03:00, is excluded.
    fire_once fires 02:29, the latest included time (with the feature it fired the 100th recorded time,
    01:40; below it, the excluded 03:00)."""
    log = _log(fixes)
    quiet = common_pb2.Calendar(
        name="quiet",
        time_zone="UTC",
        exclude=[
            common_pb2.CalendarRule(time_of_day=common_pb2.TimeOfDayRange(start="02:30:00", end="03:10:00"))
        ],
    )
    (c,) = log.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=quiet)))
    assert c.applied, c.error
    sched = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MIN), calendars=["quiet"])
    (t,) = log.apply(create(ID, spec(sched, misfire=ONCE), at=T0 + 1))
    f = _fire(log, t.task, 1, T0 + 3 * HOUR + 30_000)
    (ex,) = f.executions
    assert ex.nominal_time_ms == (T0 + 149 * MIN if fixes else T0 + 180 * MIN)
    ledger = _ledger(log)
    assert ledger[ex.nominal_time_ms][0] == "FIRED"
    assert f.task.next_fire_ms == T0 + 190 * MIN  # 03:10, the first included time after the outage


@pure_python_only
def test_the_leaders_plan_answers_every_question_of_a_rolled_misfire() -> None:
    """A replica whose calendar maths answer otherwise (test_fireplan.other_versions) stores what the
    leader stores when the rolled misfire's Fire carries the leader's plan: the walk asks nothing the
    plan lacks."""
    pair = Pair(plans=True)
    days = common_pb2.Calendar(
        name="days",
        time_zone="UTC",
        exclude=[common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[6]))],
    )
    assert pair.apply(epoch(1)).applied
    assert pair.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=days))).applied
    sched = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * 1,6"),
        calendars=["days"],
        calendar_action=common_pb2.CALENDAR_ROLL_PRECEDING,
    )
    assert pair.apply(create(ID, spec(sched, misfire=ONCE), at=T0 + 1)).applied
    assert pair.fire(ID, _eid(1)).applied  # Saturday 3, on time on Friday 2
    res = pair.fire(ID, _eid(2), late_ms=FRI9 + 3 * HOUR - MON5)  # Monday 5, at Friday 9 12:00
    assert res.applied and [e.nominal_time_ms for e in res.executions] == [SAT10]
    assert pair.misses == [] and "fire" in pair.planned
    leader, replica = pair.stores()
    for db in DATABASES:
        assert leader[db] == replica[db], db


@pure_python_only
def test_the_leaders_plan_answers_every_question_of_a_creation_rolled_back_before_it() -> None:
    """A task created after the instant its first time rolls back to (schedule_fixes skips that time,
    raft.firing.plan_from's `start`): the leader's plan for the CreateTask holds the next time's answer
    too, so a replica with other calendar maths stores what the leader stores."""
    pair = Pair(plans=True)
    excluded = common_pb2.CalendarRule(dates=common_pb2.DateList(dates=["2026-01-02"]))
    cal = common_pb2.Calendar(name="no-2nd", time_zone="UTC", exclude=[excluded])
    assert pair.apply(epoch(1)).applied
    assert pair.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal))).applied
    sched = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * *", time_zone="UTC"),
        calendars=["no-2nd"],
        calendar_action=common_pb2.CALENDAR_ROLL_PRECEDING,
    )
    res = pair.apply(create(ID, spec(sched), at=T0 + 10 * HOUR))
    assert res.applied and res.task.next_fire_ms == T0 + 57 * HOUR  # 01-02 skipped: 01-03 09:00
    assert pair.misses == [] and "create_task" in pair.planned
    leader, replica = pair.stores()
    for db in DATABASES:
        assert leader[db] == replica[db], db
