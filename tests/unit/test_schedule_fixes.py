"""The feature `schedule_fixes` (raft.features): apply's schedule corrections of 2026-12, on from the
entry that raises it, the previous release's behaviour below it (a rolling upgrade applies one log alike
on old and new nodes)."""

from __future__ import annotations

import pytest
from test_state import T0, Log, create, epoch, expire, fire, grant, spec, tid

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps, features
from cronraft.raft.kv import MemKV
from cronraft.raft.schedule import jitter_offset_ms
from cronraft.raft.state import StateMachine
from cronraft.raft.state import ledger as sm_ledger

Command = commands_pb2.Command
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
ID = "01M990QVT8FHE0548MV8BA2RMB"
EID = "01M990QVT8FHE0548MV8BA2RMC"


def _log(fixes: bool) -> Log:
    fresh = features.SUPPORTED if fixes else features.SUPPORTED - {features.SCHEDULE_FIXES}
    log = Log(StateMachine(MemKV(), fresh_features=fresh))
    log.apply(epoch(1))
    return log


def _every_minute(anchor_ms: int) -> common_pb2.Schedule:
    return common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MIN, anchor_ms=anchor_ms))


@pytest.mark.parametrize("fixes", [True, False])
def test_a_task_edited_while_paused_resumes_on_its_new_schedule(fixes: bool) -> None:
    log = _log(fixes)
    (c,) = log.apply(create(ID, spec(_every_minute(0))))
    old_next = c.task.next_fire_ms
    assert old_next % MIN == 0
    (p,) = log.apply(Command(stamped_at_ms=T0 + 2, pause_task=commands_pb2.PauseTask(task_id=ID)))
    assert p.applied, p.error
    edit = commands_pb2.UpdateTask(task_id=ID, spec=spec(_every_minute(30_000)))
    (u,) = log.apply(Command(stamped_at_ms=T0 + 3, update_task=edit))
    assert u.applied, u.error
    assert u.task.state == common_pb2.TASK_PAUSED
    (r,) = log.apply(Command(stamped_at_ms=T0 + 4, resume_task=commands_pb2.ResumeTask(task_id=ID)))
    assert r.applied, r.error
    if fixes:  # the new schedule's first time after the edit
        assert u.task.next_fire_ms % MIN == 30_000 and u.task.next_fire_ms > T0 + 3
        assert r.task.next_fire_ms == u.task.next_fire_ms
    else:  # the previous release: the old schedule's time, which then fires once
        assert u.task.next_fire_ms == old_next and r.task.next_fire_ms == old_next


@pytest.mark.parametrize("fixes", [True, False])
def test_a_fixed_delay_task_resumed_after_its_run_came_due(fixes: bool) -> None:
    log = _log(fixes)
    s = spec(
        common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=5_000), start_at_ms=T0 + MIN)
    )
    (c,) = log.apply(create(ID, s))
    assert c.task.next_fire_ms == T0 + MIN  # planned at creation, not yet run
    (p,) = log.apply(Command(stamped_at_ms=T0 + 2, pause_task=commands_pb2.PauseTask(task_id=ID)))
    assert p.applied, p.error
    resume_at = T0 + 2 * MIN  # past the planned run
    (r,) = log.apply(Command(stamped_at_ms=resume_at, resume_task=commands_pb2.ResumeTask(task_id=ID)))
    assert r.applied, r.error
    if fixes:  # it never ran: the delay counts from the resume (raft.commands.tasks.resume_task)
        assert r.task.state == common_pb2.TASK_SCHEDULED and r.task.next_fire_ms == resume_at + 5_000
    else:  # the previous release completed it: no run ever again
        assert r.task.state == common_pb2.TASK_COMPLETED and r.task.next_fire_ms == 0


def _ledger(log: Log, until: int = T0 + 10 * MIN) -> dict[int, tuple[str, str, str]]:
    with log.sm.kv.read() as txn:
        records = sm_ledger(txn, ID, 1, until, 1000)
    return {
        r.nominal_time_ms: (common_pb2.FireOutcome.Name(r.outcome), r.reason, r.execution_id) for r in records
    }


@pytest.mark.parametrize("fixes", [True, False])
@pytest.mark.parametrize("policy", [common_pb2.MISFIRE_SKIP, common_pb2.MISFIRE_FIRE_ONCE])
def test_calendar_excluded_times_missed_in_an_outage_stay_skipped_calendar(fixes: bool, policy: int) -> None:
    """Every minute, a calendar excluding 00:03-00:05 and 00:07-00:08; the cluster down from before 00:01
    until 00:08:30. The late Fire of 00:01 walks the missed times: the excluded ones are skipped_calendar
    (found on 3 real nodes, tests/integration/test_outage_kinds.py: recorded missed_downtime), and
    fire_once fires the latest included time, 00:06, never the excluded 00:07 (which it did)."""
    log = _log(fixes)
    quiet = common_pb2.Calendar(
        name="quiet",
        time_zone="UTC",
        exclude=[
            common_pb2.CalendarRule(time_of_day=common_pb2.TimeOfDayRange(start="00:03:00", end="00:05:00")),
            common_pb2.CalendarRule(time_of_day=common_pb2.TimeOfDayRange(start="00:07:00", end="00:09:00")),
        ],
    )
    (c,) = log.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=quiet)))
    assert c.applied, c.error
    sched = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MIN), calendars=["quiet"])
    (t,) = log.apply(create(ID, spec(sched, misfire=policy)))
    assert t.task.next_fire_ms == T0 + MIN
    (f,) = log.apply(fire(ID, T0 + MIN, EID, at=T0 + 8 * MIN + 30_000))
    assert f.applied, f.error
    ledger = _ledger(log)
    excluded = [T0 + m * MIN for m in (3, 4, 7, 8)]
    name = common_pb2.MisfirePolicy.Name(policy).lower()
    missed = ("MISSED_DOWNTIME", f"not fired in time; {name}", "")
    if not fixes:  # the previous release: every time walked is missed, fire_once fires the excluded 00:08
        assert all(ledger[n] == missed for n in excluded if n != T0 + 8 * MIN)
        if policy == common_pb2.MISFIRE_FIRE_ONCE:
            assert f.executions[0].nominal_time_ms == T0 + 8 * MIN
        return
    for n in excluded:
        outcome, reason, execution = ledger[n]
        assert outcome == "SKIPPED_CALENDAR" and "calendar quiet" in reason and not execution, ledger[n]
    if policy == common_pb2.MISFIRE_FIRE_ONCE:
        assert ledger[T0 + 6 * MIN][0] == "FIRED" and ledger[T0 + 6 * MIN][2] == EID, ledger
        assert [ledger[T0 + m * MIN] for m in (1, 2, 5)] == [missed] * 3
        assert f.executions[0].nominal_time_ms == T0 + 6 * MIN
    else:
        assert [ledger[T0 + m * MIN] for m in (1, 2, 5, 6)] == [missed] * 4
        assert not f.executions
    # The next fire: the first included time after the outage.
    assert f.task.next_fire_ms == T0 + 9 * MIN


@pytest.mark.parametrize("fixes", [True, False])
def test_a_skipped_overlap_says_which_execution_still_runs(fixes: bool) -> None:
    log = _log(fixes)
    s = spec(_every_minute(0), overlap=common_pb2.OVERLAP_SKIP)
    (c,) = log.apply(create(ID, s))
    first = c.task.next_fire_ms
    (f,) = log.apply(fire(ID, first, tid(100)))
    assert f.applied, f.error
    (g,) = log.apply(grant(tid(100)))
    assert g.applied, g.error
    (skipped,) = log.apply(fire(ID, first + MIN, tid(101)))  # the first run still runs
    assert skipped.applied, skipped.error
    with log.sm.kv.read() as txn:
        rec = next(r for r in sm_ledger(txn, ID, first + MIN, first + MIN, 10))
    assert rec.outcome == common_pb2.SKIPPED_OVERLAP
    if fixes:
        assert rec.reason == f"execution {tid(100)} still running (overlap skip)"
    else:  # the previous release's words
        assert rec.reason == f"execution {tid(100)} is execution_running"


@pytest.mark.parametrize("fixes", [True, False])
@pytest.mark.parametrize("jitter_ms", [0, 20_000])
def test_fire_once_records_how_late_its_latest_missed_time_fired(fixes: bool, jitter_ms: int) -> None:
    """Every minute, fire_once; the cluster down from before 00:01 until 00:08:30. The late Fire of 00:01
    fires 00:08, the latest missed time, half a minute after it was due: its ledger record says when it
    was due (actual_ms: 00:08 after its jitter) and how late it was committed after that. The previous
    release recorded 00:01's due instant, so the fire read seven minutes late (found on 3 real nodes by
    tests/integration/test_operations_real.py: after a restore, fire_once's fire read 12 s late, committed
    0.3 s after its nominal time)."""
    log = _log(fixes)
    sched = _every_minute(0)
    sched.jitter_ms = jitter_ms
    (t,) = log.apply(create(ID, spec(sched, misfire=common_pb2.MISFIRE_FIRE_ONCE)))
    first, first_due = t.task.next_fire_ms, t.task.next_due_ms or t.task.next_fire_ms
    assert first == T0 + MIN
    at = T0 + 8 * MIN + 30_000
    (f,) = log.apply(fire(ID, first, EID, at=at))
    assert f.applied, f.error
    latest = T0 + 8 * MIN
    assert f.executions[0].nominal_time_ms == latest
    rec = _record(log, latest)
    assert rec.outcome == common_pb2.FIRED and rec.committed_at_ms == at
    if fixes:  # its own due instant
        due = latest + (jitter_offset_ms(ID, latest, jitter_ms) if jitter_ms else 0)
        assert (rec.actual_ms, rec.late_ms) == (due, at - due)
    else:  # the previous release: 00:01's
        assert (rec.actual_ms, rec.late_ms) == (first_due, at - first_due)
        assert rec.late_ms > 7 * MIN


def test_fire_once_records_when_its_rolled_latest_time_was_due() -> None:
    """Daily at 09:00, Fridays rolled to the next day; the cluster down from before Thursday 09:00 until
    Saturday 12:00. fire_once fires Friday's time, rolled to Saturday 09:00 (raft.firing's rolled walk):
    its record is rolled, due Saturday 09:00, three hours late (not Thursday's 09:00, two days)."""
    log = _log(True)
    fridays = common_pb2.Calendar(
        name="fridays",
        time_zone="UTC",
        exclude=[common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[5]))],
    )
    (c,) = log.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=fridays)))
    assert c.applied, c.error
    sched = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * *"),
        calendars=["fridays"],
        calendar_action=common_pb2.CALENDAR_ROLL_FOLLOWING,
    )
    (t,) = log.apply(create(ID, spec(sched, misfire=common_pb2.MISFIRE_FIRE_ONCE)))
    thursday, friday = T0 + 9 * HOUR, T0 + DAY + 9 * HOUR  # 2026-01-01 is a Thursday
    assert t.task.next_fire_ms == thursday
    at = T0 + 2 * DAY + 12 * HOUR
    (f,) = log.apply(fire(ID, thursday, EID, at=at))
    assert f.applied, f.error
    assert [e.nominal_time_ms for e in f.executions] == [friday]
    rec = _record(log, friday)
    assert rec.outcome == common_pb2.ROLLED and rec.committed_at_ms == at
    assert (rec.actual_ms, rec.late_ms) == (friday + DAY, 3 * HOUR)


def _record(log: Log, nominal: int) -> common_pb2.FireRecord:
    with log.sm.kv.read() as txn:
        (rec,) = sm_ledger(txn, ID, nominal, nominal, 10)
    return rec


@pytest.mark.parametrize("fixes", [True, False])
def test_an_attempt_whose_lease_expired_is_recorded_lost(fixes: bool) -> None:
    """`execution get` showed such an attempt's outcome as 'unspecified' (only its error said why)."""
    log = _log(fixes)
    (c,) = log.apply(create(tid(1), spec()))
    log.apply(fire(tid(1), c.task.next_fire_ms, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    (x,) = log.apply(expire(tid(100), g.execution.token))
    assert x.applied, x.error
    (attempt,) = x.execution.attempts
    assert attempt.error == "lease expired: no renewal from the worker"
    want = common_pb2.ATTEMPT_LOST if fixes else common_pb2.ATTEMPT_OUTCOME_UNSPECIFIED
    assert attempt.outcome == want


@pytest.mark.parametrize("fixes", [True, False])
def test_a_dependency_on_a_deleted_task_says_it_was_deleted(fixes: bool) -> None:
    """A downstream whose upstream was deleted (with its history: it can never succeed now) waited
    'for ? (ID)', and failed at its dependency deadline with that text."""
    log = _log(fixes)
    s = spec()
    s.depends_on.add(task_id=tid(9), window_ms=60_000)  # no task of that id (any more)
    with log.sm.kv.read() as txn:
        why = deps.unmet(txn, common_pb2.Task(task_id=ID, spec=s), T0)
    if fixes:
        assert why == f"waiting for task {tid(9)} to succeed within 60000 ms before, but it was deleted"
    else:
        assert why == f"waiting for ? ({tid(9)}) to succeed within 60000 ms before"


def _roll_back_calendar(log: Log) -> common_pb2.TaskSpec:
    """Daily at 09:00 UTC, rolled back (roll-preceding) from 2026-01-02, which a calendar excludes."""
    excluded = common_pb2.CalendarRule(dates=common_pb2.DateList(dates=["2026-01-02"]))
    cal = common_pb2.Calendar(name="no-2nd", time_zone="UTC", exclude=[excluded])
    (c,) = log.apply(Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal)))
    assert c.applied, c.error
    sched = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * *", time_zone="UTC"),
        calendars=["no-2nd"],
        calendar_action=common_pb2.CALENDAR_ROLL_PRECEDING,
    )
    return spec(sched)


@pytest.mark.parametrize("fixes", [True, False])
def test_a_time_rolled_back_before_the_task_was_created_is_skipped_not_fired_at_once(fixes: bool) -> None:
    """Created on 2026-01-01 at 10:00: its first time, 01-02 09:00, is excluded and rolls back to 01-01
    09:00, an hour before the task existed. It was planned due then, so it fired at once on creation, an
    hour late (the month-end close of docs/scheduling.md, created on the last business day after 09:00)."""
    log = _log(fixes)
    (c,) = log.apply(create(ID, _roll_back_calendar(log), at=T0 + 10 * HOUR))
    assert c.applied, c.error
    if fixes:
        assert (c.task.next_fire_ms, c.task.next_due_ms) == (T0 + 57 * HOUR, 0)  # 01-03 09:00, as is
        outcome, reason, _ = _ledger(log, T0 + 3 * DAY)[T0 + 33 * HOUR]
        assert outcome == "SKIPPED_CALENDAR"
        assert reason.endswith(", to 2026-01-01T09:00:00Z: before the task was created"), reason
    else:
        assert (c.task.next_fire_ms, c.task.next_due_ms) == (T0 + 33 * HOUR, T0 + 9 * HOUR)
        assert T0 + 33 * HOUR not in _ledger(log, T0 + 3 * DAY)


@pytest.mark.parametrize("fixes", [True, False])
def test_a_time_rolled_back_before_a_resume_is_skipped(fixes: bool) -> None:
    log = _log(fixes)
    (c,) = log.apply(create(ID, _roll_back_calendar(log), at=T0 + 1))
    assert c.task.next_fire_ms == T0 + 9 * HOUR  # 01-01's own 09:00 fires first
    (p,) = log.apply(Command(stamped_at_ms=T0 + 2, pause_task=commands_pb2.PauseTask(task_id=ID)))
    assert p.applied, p.error
    resume = Command(stamped_at_ms=T0 + 10 * HOUR, resume_task=commands_pb2.ResumeTask(task_id=ID))
    (r,) = log.apply(resume)  # 01-01 09:00 passed while paused; 01-02's rolls back to it
    assert r.applied, r.error
    if fixes:
        assert r.task.next_fire_ms == T0 + 57 * HOUR
        assert _ledger(log, T0 + 3 * DAY)[T0 + 33 * HOUR][1].endswith("before the task was resumed")
    else:
        assert (r.task.next_fire_ms, r.task.next_due_ms) == (T0 + 33 * HOUR, T0 + 9 * HOUR)
