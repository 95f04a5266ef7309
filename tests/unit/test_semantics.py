"""Scheduling semantics in the state machine, in virtual time: misfire, overlap, edits, pause/resume,
trigger, backfill, fixed delay, calendars, cancellation, jitter, and the fire ledger."""

from __future__ import annotations

import pytest
from test_state import T0, Log, complete, create, epoch, fire, grant, spec, tid

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm

MIN = 60_000
Command = commands_pb2.Command


def cmd(**body: object) -> Command:
    at = body.pop("at", T0)
    return Command(stamped_at_ms=at, **body)  # type: ignore[arg-type]


def ledger(log: Log, task_id: str) -> list[tuple[int, str]]:
    with log.sm.kv.read() as txn:
        recs = sm.ledger(txn, task_id, 0, 2**62, 10_000)
    return [(r.nominal_time_ms, common_pb2.FireOutcome.Name(r.outcome)) for r in recs]


def execs(log: Log, task_id: str) -> list[common_pb2.Execution]:
    with log.sm.kv.read() as txn:
        return sorted(sm.list_executions(txn, task_id, page_size=1000)[0], key=lambda e: e.nominal_time_ms)


def task_of(log: Log, task_id: str) -> common_pb2.Task:
    with log.sm.kv.read() as txn:
        t = sm.read_task(txn, task_id)
    assert t is not None
    return t


def every_minute(**kw: object) -> common_pb2.TaskSpec:
    return spec(common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *")), **kw)


# ------------------------------------------------------------------------------------------ misfire


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [
        (common_pb2.MISFIRE_SKIP, [], 10),
        (common_pb2.MISFIRE_FIRE_ONCE, [9], 9),  # the latest missed one fires
        (common_pb2.MISFIRE_FIRE_ALL, [0], 0),  # within the window: each fires in turn
    ],
)
def test_misfire_policies_after_downtime(policy: int, fired: list[int], missed: int) -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute(misfire=policy, catchup_window_ms=30 * MIN)))
    first = c.task.next_fire_ms
    now = first + 9 * MIN + 30_000  # ten nominal times passed while the cluster was down
    (f,) = log.apply(fire(tid(1), first, tid(100), at=now))
    assert f.applied
    got = [(e.nominal_time_ms - first) // MIN for e in execs(log, tid(1))]
    assert got == fired
    outcomes = ledger(log, tid(1))
    assert sum(1 for _, o in outcomes if o == "MISSED_DOWNTIME") == missed
    if policy == common_pb2.MISFIRE_FIRE_ALL:
        assert f.task.next_fire_ms == first + MIN  # the next missed one is due at once
    else:
        assert f.task.next_fire_ms == first + 10 * MIN  # the first future one


def test_fire_all_stops_at_the_catchup_window_and_max_catchup() -> None:
    log = Log()
    (c,) = log.apply(
        create(
            tid(1),
            every_minute(misfire=common_pb2.MISFIRE_FIRE_ALL, catchup_window_ms=5 * MIN, max_catchup=2),
        )
    )
    first = c.task.next_fire_ms
    now = first + 20 * MIN + 1_000
    (f,) = log.apply(fire(tid(1), first, tid(100), at=now))
    # The first missed time is older than the window: recorded as missed, the walk jumps to the window.
    assert not f.execution.execution_id
    nominal = f.task.next_fire_ms
    assert now - nominal <= 5 * MIN
    for i in range(4):
        if nominal > now:
            break
        (g,) = log.apply(fire(tid(1), nominal, tid(200 + i), at=now))
        nominal = g.task.next_fire_ms
    fired = [e.nominal_time_ms for e in execs(log, tid(1))]
    assert len(fired) == 2, "max_catchup bounds the catch-up"
    assert nominal > now


def test_a_late_one_time_task_still_fires() -> None:
    log = Log()
    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000))
    log.apply(create(tid(1), spec(at, misfire=common_pb2.MISFIRE_SKIP)))
    (f,) = log.apply(fire(tid(1), T0 + 1_000, tid(100), at=T0 + 3_600_000))
    assert f.execution.execution_id and f.task.state == common_pb2.TASK_COMPLETED


# ------------------------------------------------------------------------------------------ overlap


def _run_first(log: Log, policy: int) -> tuple[int, common_pb2.Execution]:
    log.apply(epoch(1))
    (c,) = log.apply(create(tid(1), every_minute(overlap=policy)))
    n0 = c.task.next_fire_ms
    log.apply(fire(tid(1), n0, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    return n0, g.execution


def test_overlap_skip_records_the_skipped_fire() -> None:
    log = Log()
    n0, _ = _run_first(log, common_pb2.OVERLAP_SKIP)
    (f,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    assert f.applied and not f.execution.execution_id
    assert (n0 + MIN, "SKIPPED_OVERLAP") in ledger(log, tid(1))


def test_overlap_buffer_one_runs_one_after_and_drops_the_rest() -> None:
    log = Log()
    n0, running = _run_first(log, common_pb2.OVERLAP_BUFFER_ONE)
    (f1,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    (f2,) = log.apply(fire(tid(1), n0 + 2 * MIN, tid(102)))
    assert f1.execution.state == common_pb2.EXECUTION_BUFFERED
    assert not f2.execution.execution_id
    assert (n0 + 2 * MIN, "BUFFER_DROPPED") in ledger(log, tid(1))
    (done,) = log.apply(complete(tid(100), running.token))
    promoted = [e for e in done.executions if e.execution_id == tid(101)]
    assert promoted and promoted[0].state == common_pb2.EXECUTION_PENDING


def test_overlap_buffer_all_runs_them_in_order() -> None:
    log = Log()
    n0, running = _run_first(log, common_pb2.OVERLAP_BUFFER_ALL)
    for i in (1, 2, 3):
        log.apply(fire(tid(1), n0 + i * MIN, tid(100 + i)))
    order = []
    token = running.token
    for _ in range(3):
        log.apply(complete(order[-1] if order else tid(100), token))
        with log.sm.kv.read() as txn:
            (nxt,) = sm.pending_executions(txn)
        order.append(nxt.execution_id)
        (g,) = log.apply(grant(nxt.execution_id))
        token = g.execution.token
    assert order == [tid(101), tid(102), tid(103)]


def test_overlap_terminate_other_fences_the_old_attempt() -> None:
    log = Log()
    n0, running = _run_first(log, common_pb2.OVERLAP_TERMINATE_OTHER)
    (f,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    assert f.execution.state == common_pb2.EXECUTION_PENDING
    assert [c.execution_id for c in f.cancels] == [tid(100)]
    (late,) = log.apply(complete(tid(100), running.token))
    assert not late.applied and late.error_code == "stale_token"
    old = next(e for e in execs(log, tid(1)) if e.execution_id == tid(100))
    assert old.state == common_pb2.EXECUTION_CANCELLED


def test_overlap_cancel_other_waits_for_the_cancelled_run() -> None:
    log = Log()
    n0, running = _run_first(log, common_pb2.OVERLAP_CANCEL_OTHER)
    (f,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    assert f.execution.state == common_pb2.EXECUTION_BUFFERED
    assert [c.execution_id for c in f.cancels] == [tid(100)]
    (done,) = log.apply(complete(tid(100), running.token, outcome=common_pb2.ATTEMPT_CANCELLED))
    assert done.execution.state == common_pb2.EXECUTION_CANCELLED
    assert any(
        e.execution_id == tid(101) and e.state == common_pb2.EXECUTION_PENDING for e in done.executions
    )


def test_overlap_allow_all_is_the_default() -> None:
    log = Log()
    n0, _ = _run_first(log, common_pb2.OVERLAP_DEFAULT)
    (f,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    assert f.execution.state == common_pb2.EXECUTION_PENDING


# ------------------------------------------------------------------------------------------- edits


def test_an_edit_applies_from_the_next_nominal_time_and_never_retroactively() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute()))
    n0 = c.task.next_fire_ms
    log.apply(fire(tid(1), n0, tid(100)))
    hourly = spec(common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 * * * *")))
    at = n0 + 30 * MIN  # half an hour later: 29 minutely times passed, and 00:00 of the hourly one
    (u,) = log.apply(cmd(at=at, update_task=commands_pb2.UpdateTask(task_id=tid(1), spec=hourly)))
    assert u.applied
    assert u.task.next_fire_ms == T0 + 3_600_000  # the next hourly time after now, not one in the past
    assert [e.execution_id for e in execs(log, tid(1))] == [tid(100)]


def test_edits_with_a_stale_version_are_refused_and_change_nothing() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute()))
    v = c.task.version
    (a,) = log.apply(
        cmd(
            update_task=commands_pb2.UpdateTask(
                task_id=tid(1), spec=every_minute(name="a"), expected_version=v
            )
        )
    )
    (b,) = log.apply(
        cmd(
            update_task=commands_pb2.UpdateTask(
                task_id=tid(1), spec=every_minute(name="b"), expected_version=v
            )
        )
    )
    assert a.applied and not b.applied and b.error_code == "version_mismatch"
    assert task_of(log, tid(1)).spec.name == "a"


def test_rapid_edits_while_a_run_is_in_flight_end_in_one_state() -> None:
    log = Log()
    log.apply(epoch(1))
    (c,) = log.apply(create(tid(1), every_minute()))
    n0 = c.task.next_fire_ms
    log.apply(fire(tid(1), n0, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    for i, expr in enumerate(["*/5 * * * *", "*/10 * * * *", "0 * * * *", "*/2 * * * *"]):
        s = spec(
            common_pb2.Schedule(
                cron=common_pb2.CronSchedule(expression=expr, time_zone="Europe/Paris" if i % 2 else "UTC")
            )
        )
        log.apply(cmd(at=n0 + 1_000 + i, update_task=commands_pb2.UpdateTask(task_id=tid(1), spec=s)))
    (done,) = log.apply(complete(tid(100), g.execution.token))
    assert done.execution.state == common_pb2.EXECUTION_SUCCEEDED  # the in-flight run was not dropped
    t = task_of(log, tid(1))
    assert t.spec.schedule.cron.expression == "*/2 * * * *"
    assert t.next_fire_ms == T0 + 2 * MIN  # the first even minute after the last edit


# ----------------------------------------------------------------------------- pause/resume/trigger


def test_pause_and_resume_without_replay_records_paused_times() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute()))
    n0 = c.task.next_fire_ms
    (p,) = log.apply(cmd(pause_task=commands_pb2.PauseTask(task_id=tid(1), note="maintenance")))
    assert p.task.state == common_pb2.TASK_PAUSED and p.task.pause_note == "maintenance"
    (f,) = log.apply(fire(tid(1), n0, tid(100)))
    assert not f.applied  # paused: the leader's fire is refused
    (r,) = log.apply(cmd(at=n0 + 5 * MIN + 1, resume_task=commands_pb2.ResumeTask(task_id=tid(1))))
    assert r.task.state == common_pb2.TASK_SCHEDULED
    assert r.task.next_fire_ms == n0 + 6 * MIN
    assert [o for _, o in ledger(log, tid(1))] == ["PAUSED"] * 6


def test_resume_with_replay_hands_the_missed_times_to_the_misfire_policy() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute()))
    n0 = c.task.next_fire_ms
    log.apply(cmd(pause_task=commands_pb2.PauseTask(task_id=tid(1))))
    (r,) = log.apply(
        cmd(at=n0 + 5 * MIN, resume_task=commands_pb2.ResumeTask(task_id=tid(1), replay_missed=True))
    )
    assert r.task.next_fire_ms == n0


def test_trigger_fires_now_without_moving_the_schedule_and_obeys_overlap() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute(overlap=common_pb2.OVERLAP_SKIP)))
    (t,) = log.apply(
        cmd(at=T0 + 5, trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=tid(100)))
    )
    assert t.applied and t.execution.manual and t.execution.nominal_time_ms == T0 + 5
    assert t.task.next_fire_ms == c.task.next_fire_ms
    (t2,) = log.apply(
        cmd(at=T0 + 6, trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=tid(101)))
    )
    assert t2.error_code == "skipped_overlap" and not t2.execution.execution_id


def test_backfill_fires_each_missing_time_once_in_order() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), every_minute(overlap=common_pb2.OVERLAP_SKIP), at=T0 + 10 * MIN))
    body = commands_pb2.BackfillTask(task_id=tid(1), from_ms=T0, to_ms=T0 + 4 * MIN)
    (b,) = log.apply(cmd(at=T0 + 10 * MIN, backfill_task=body))
    created = [e for e in b.executions if e.manual]
    assert [e.nominal_time_ms for e in created] == [T0 + i * MIN for i in range(5)]
    # Not overlapping: the first is pending, the others wait behind it in order.
    assert [e.state for e in created] == [common_pb2.EXECUTION_PENDING] + [common_pb2.EXECUTION_BUFFERED] * 4
    (again,) = log.apply(cmd(at=T0 + 10 * MIN, backfill_task=body))
    assert [e for e in again.executions if e.manual] == []
    assert task_of(log, tid(1)).next_fire_ms == c.task.next_fire_ms


# ------------------------------------------------------------------------------------- fixed delay


def test_fixed_delay_plans_the_next_run_when_the_previous_ends() -> None:
    log = Log()
    log.apply(epoch(1))
    s = spec(common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=30_000)))
    (c,) = log.apply(create(tid(1), s))
    first = c.task.next_fire_ms
    (f,) = log.apply(fire(tid(1), first, tid(100)))
    assert f.task.next_fire_ms == 0  # nothing is due while it runs
    (g,) = log.apply(grant(tid(100)))
    end = first + 12_345
    log.apply(Command(stamped_at_ms=end, complete=complete(tid(100), g.execution.token).complete))
    assert task_of(log, tid(1)).next_fire_ms == end + 30_000


@pytest.mark.parametrize(
    "request_id", ["", "r-complete"]
)  # answered as bytes (a leader's own) / as a message
def test_the_complete_that_plans_a_fixed_delay_run_answers_the_task(request_id: str) -> None:
    """The leader loaded that part of the due index into its wheel already: it learns of the next run
    from the Complete's result (daemon.leader.outcomes), which must carry the task as planned."""
    log = Log()
    log.apply(epoch(1))
    s = spec(common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=30_000)))
    (c,) = log.apply(create(tid(1), s))
    first = c.task.next_fire_ms
    log.apply(fire(tid(1), first, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    end = first + 5_000
    done = Command(
        request_id=request_id, stamped_at_ms=end, complete=complete(tid(100), g.execution.token).complete
    )
    (r,) = log.apply(done)
    assert r.applied
    assert r.task.task_id == tid(1)
    assert r.task.next_fire_ms == end + 30_000
    assert r.execution.state == common_pb2.EXECUTION_SUCCEEDED  # the answer is still the execution
    assert r.task == task_of(log, tid(1))


def test_fixed_delay_stop_on_failure_completes_the_task() -> None:
    log = Log()
    log.apply(epoch(1))
    s = spec(
        common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=30_000, stop_on_failure=True))
    )
    (c,) = log.apply(create(tid(1), s))
    log.apply(fire(tid(1), c.task.next_fire_ms, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    log.apply(complete(tid(100), g.execution.token, outcome=common_pb2.ATTEMPT_FAILED))
    assert task_of(log, tid(1)).state == common_pb2.TASK_COMPLETED


# ------------------------------------------------------------------------------------- calendars


def _calendar(name: str, **rules: object) -> Command:
    c = common_pb2.Calendar(name=name, time_zone="Europe/Paris")
    for kind, value in rules.items():
        c.exclude.append(common_pb2.CalendarRule(**{kind: value}))  # type: ignore[arg-type]
    return cmd(put_calendar=commands_pb2.PutCalendar(calendar=c))


def test_calendar_skip_and_roll_preceding() -> None:
    log = Log()
    (p,) = log.apply(
        _calendar(
            "fr-business",
            holidays=common_pb2.HolidaySet(country="FR"),
            weekdays=common_pb2.WeekdaySet(days=[6, 7]),
        )
    )
    assert p.applied, p.error
    daily9 = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * *", time_zone="Europe/Paris"),
        calendars=["fr-business"],
    )
    # 2026-01-01 (holiday), 02 (Fri), 03-04 (weekend): created on Jan 1st 00:00 UTC.
    (c,) = log.apply(create(tid(1), spec(daily9)))
    assert c.task.next_fire_ms == 1_767_340_800_000  # 2026-01-02T09:00+01:00
    assert (1_767_254_400_000, "SKIPPED_CALENDAR") in ledger(log, tid(1))

    last_bd = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 L * *", time_zone="Europe/Paris"),
        calendars=["fr-business"],
        calendar_action=common_pb2.CALENDAR_ROLL_PRECEDING,
    )
    (c2,) = log.apply(create(tid(2), spec(last_bd), at=1_779_000_000_000))  # 2026-05-17
    # 2026-05-31 is a Sunday: the last business day is Friday 2026-05-29, 09:00 Paris (07:00 UTC).
    assert c2.task.next_fire_ms == 1_780_210_800_000  # nominal 2026-05-31T09:00+02:00
    assert c2.task.next_due_ms == 1_780_038_000_000  # due 2026-05-29T09:00+02:00


def test_a_calendar_in_use_cannot_be_deleted_and_unknown_ones_are_refused() -> None:
    log = Log()
    log.apply(_calendar("weekends", weekdays=common_pb2.WeekdaySet(days=[6, 7])))
    s = every_minute()
    s.schedule.calendars.append("weekends")
    log.apply(create(tid(1), s))
    (d,) = log.apply(cmd(delete_calendar=commands_pb2.DeleteCalendar(name="weekends")))
    assert not d.applied and d.error_code == "in_use" and tid(1) in d.error
    s2 = every_minute()
    s2.schedule.calendars.append("nope")
    (bad,) = log.apply(create(tid(2), s2))
    assert not bad.applied and "spec.schedule.calendars[0]" in bad.error


# ------------------------------------------------------------------------------------ cancellation


def test_cancel_pending_ends_it_and_cancel_running_asks_the_worker() -> None:
    log = Log()
    log.apply(epoch(1))
    (c,) = log.apply(create(tid(1), every_minute()))
    n0 = c.task.next_fire_ms
    log.apply(fire(tid(1), n0, tid(100)))
    (x,) = log.apply(cmd(cancel_execution=commands_pb2.CancelExecution(execution_id=tid(100))))
    assert x.execution.state == common_pb2.EXECUTION_CANCELLED
    log.apply(fire(tid(1), n0 + MIN, tid(101)))
    (g,) = log.apply(grant(tid(101)))
    (y,) = log.apply(cmd(cancel_execution=commands_pb2.CancelExecution(execution_id=tid(101), reason="stop")))
    assert y.execution.state == common_pb2.EXECUTION_RUNNING and y.execution.cancel_requested_at_ms
    assert [r.worker_id for r in y.cancels] == ["w1"]
    (z,) = log.apply(complete(tid(101), g.execution.token, outcome=common_pb2.ATTEMPT_CANCELLED))
    assert z.execution.state == common_pb2.EXECUTION_CANCELLED


def test_jitter_is_deterministic_and_within_bounds() -> None:
    logs = [Log(), Log()]
    s = every_minute()
    s.schedule.jitter_ms = 20_000
    dues = []
    for log in logs:
        (c,) = log.apply(create(tid(1), s))
        dues.append(c.task.next_due_ms or c.task.next_fire_ms)
        assert 0 <= dues[-1] - c.task.next_fire_ms < 20_000
    assert dues[0] == dues[1]


def test_fires_rolled_onto_one_instant_merge_into_one_run() -> None:
    log = Log()
    log.apply(_calendar("weekends", weekdays=common_pb2.WeekdaySet(days=[6, 7])))
    daily9 = common_pb2.Schedule(
        cron=common_pb2.CronSchedule(expression="0 9 * * *", time_zone="Europe/Paris"),
        calendars=["weekends"],
        calendar_action=common_pb2.CALENDAR_ROLL_FOLLOWING,
    )
    (c,) = log.apply(create(tid(1), spec(daily9), at=1_767_344_400_000))  # Fri 2026-01-02 10:00 Paris
    assert c.task.next_fire_ms == 1_767_427_200_000  # Saturday's nominal time...
    assert c.task.next_due_ms == 1_767_600_000_000  # ...rolled to Monday 09:00
    (f,) = log.apply(fire(tid(1), c.task.next_fire_ms, tid(100), at=1_767_600_000_000))
    assert f.execution.execution_id
    assert f.task.next_fire_ms == 1_767_686_400_000  # Tuesday: Sunday's and Monday's merged into Monday's run
    merged = [o for n, o in ledger(log, tid(1)) if n in (1_767_513_600_000, 1_767_600_000_000)]
    assert merged == ["SKIPPED_CALENDAR", "SKIPPED_CALENDAR"]


def test_the_end_of_the_window_is_explained_in_the_ledger() -> None:
    log = Log()
    s = every_minute()
    s.schedule.max_runs = 2
    (c,) = log.apply(create(tid(1), s))
    n0 = c.task.next_fire_ms
    log.apply(fire(tid(1), n0, tid(100)))
    (f,) = log.apply(fire(tid(1), n0 + MIN, tid(101)))
    assert f.task.state == common_pb2.TASK_COMPLETED
    assert ledger(log, tid(1))[-1] == (n0 + 2 * MIN, "OUTSIDE_WINDOW")


def test_the_ledger_is_bounded_per_task() -> None:
    from cronraft.raft import firing

    log = Log()
    (c,) = log.apply(create(tid(1), every_minute(overlap=common_pb2.OVERLAP_SKIP)))
    nominal = c.task.next_fire_ms
    with log.sm.kv.write() as txn:
        for i in range(firing.LEDGER_PER_TASK + firing.LEDGER_PRUNE_BATCH + 10):
            firing.record(txn, bytes.fromhex(log_task16(tid(1))), nominal + i * MIN, common_pb2.FIRED, T0)
    kept = ledger(log, tid(1))
    assert firing.LEDGER_PER_TASK <= len(kept) <= firing.LEDGER_PER_TASK + firing.LEDGER_PRUNE_BATCH
    assert kept[-1][0] == nominal + (firing.LEDGER_PER_TASK + firing.LEDGER_PRUNE_BATCH + 9) * MIN


def log_task16(task_id: str) -> str:
    from cronraft.raft.codec import id_bytes

    return id_bytes(task_id).hex()
