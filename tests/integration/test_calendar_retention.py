"""Calendars changed under scheduled tasks, and retention while runs live, on one real 3-node cluster
with a real worker.

Calendars (docs/scheduling.md "Calendars"): "Changing a calendar applies to each task from its next
planning (its next fire is already planned)". So a calendar put again to exclude a task's planned next
fire leaves that fire as it is and applies from the plan it makes (the following times are
skipped_calendar), through a calendar another one includes too; a calendar put again to include times
the plan already passed over does not bring them back; a calendar in use by a task or included by
another calendar cannot be deleted.

Retention (docs/operations.md "Retention"): executions that are pending, buffered or running are never
deleted; a task keeps its newest `keep_executions`; deleting an execution deletes its fire-ledger record;
an ended task goes with its whole history after its ended-task age, and a task that depends on it then
waits and fails at its dependency deadline (docs/cli.md, "Delete").

The bug class these hunt: a run that should happen and never does, one deleted while live, a plan that
ignores a changed calendar. Every wait is a condition polled with a deadline.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, cron, every, retention
from cronraft.errors import FailedPrecondition, NotFound
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, started, wait_for
from .semantics import (
    Gate,
    create_task_with_policies,
    fire_ledger,
    first_started_ms,
    next_second,
    now_ms,
    outcome_name,
    runs_of,
    time_of_day,
)

pytestmark = pytest.mark.integration

SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
ACTIVE = (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED)
# A whole day in the past: a calendar that excludes it excludes nothing the tasks here fire at.
NOTHING = common_pb2.CalendarRule(dates=common_pb2.DateList(dates=["2001-01-01"]))


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    c = Cluster(tmp_path_factory.mktemp("calendar-retention"), n=3)
    module_clusters.append(c)
    return started(c)


@pytest.fixture
def client(module_cluster: Cluster) -> Iterator[Client]:
    with Client(module_cluster.servers, timeout_s=30) as c:
        yield c


def _quiet(lo: int, hi: int) -> common_pb2.CalendarRule:
    """A rule excluding [lo, hi) (UTC time of day, whole seconds)."""
    return common_pb2.CalendarRule(
        time_of_day=common_pb2.TimeOfDayRange(start=time_of_day(lo), end=time_of_day(hi))
    )


def _calendar(
    name: str, *rules: common_pb2.CalendarRule, include: tuple[str, ...] = ()
) -> common_pb2.Calendar:
    return common_pb2.Calendar(name=name, time_zone="UTC", exclude=list(rules), include=list(include))


def _ahead(lead_ms: int, span_ms: int) -> int:
    """A whole second at least `lead_ms` ahead such that the `span_ms` after it do not cross midnight
    (a time-of-day range would wrap)."""
    lo = next_second(now_ms() + lead_ms)
    if time_of_day(lo) > time_of_day(lo + span_ms):
        lo = next_second(lo + span_ms + 1000)
    return lo


def test_a_calendar_changed_to_exclude_the_planned_fire_applies_from_the_next_planning(
    client: Client,
) -> None:
    """Two per-second tasks whose first fire N is planned: one names calendar cr-direct, the other
    cr-wrap, which includes cr-base. Both cr-direct and cr-base are put again to exclude N and the two
    seconds after it. N fires (it was planned before the change), N+1 s and N+2 s are skipped_calendar
    naming the calendar that excludes them (the plan made at N's fire read the new versions, also
    through the include), N+3 s fires."""
    client.put_calendar(_calendar("cr-direct", NOTHING))
    client.put_calendar(_calendar("cr-base", NOTHING))
    client.put_calendar(_calendar("cr-wrap", include=("cr-base",)))
    n = _ahead(3000, 4000)
    direct = client.create_task(
        "cr-direct-task", cron("* * * * * *", start_at=n, calendars=["cr-direct"]), command("true")
    )
    wrapped = client.create_task(
        "cr-wrap-task", cron("* * * * * *", start_at=n, calendars=["cr-wrap"]), command("true")
    )
    assert direct.next_fire_ms == n and wrapped.next_fire_ms == n
    v_direct = client.put_calendar(_calendar("cr-direct", _quiet(n, n + 3000))).version
    v_base = client.put_calendar(_calendar("cr-base", _quiet(n, n + 3000))).version
    assert now_ms() < n - 500, "the calendars changed too late for the test to mean anything"
    # The put re-plans nothing: the next fire is still N, due at N.
    for t in (direct, wrapped):
        got = client.get_task(t.task_id)
        assert got.next_fire_ms == n and (got.next_due_ms or n) == n, got
    wait_for(
        lambda: all(client.get_task(t.task_id).last_fired_nominal_ms >= n + 3000 for t in (direct, wrapped)),
        20,
        "both tasks to fire past the excluded seconds",
    )
    for t in (direct, wrapped):
        client.cancel_task(t.task_id)
    for t, excluder, version in ((direct, "cr-direct", v_direct), (wrapped, "cr-base", v_base)):
        runs = {e.nominal_time_ms: e for e in runs_of(client, t.task_id)}
        ledger = fire_ledger(client, t.task_id)
        assert n in runs and outcome_name(ledger[n]) == "FIRED", (t.spec.name, ledger.get(n))
        assert ledger[n].execution_id == runs[n].execution_id
        for skipped in (n + 1000, n + 2000):
            assert skipped not in runs, (t.spec.name, skipped)
            rec = ledger[skipped]
            assert outcome_name(rec) == "SKIPPED_CALENDAR", (t.spec.name, rec)
            assert f"calendar {excluder}" in rec.reason, (t.spec.name, rec)
            assert rec.committed_at_ms >= client.get_calendar(excluder).updated_at_ms
        assert n + 3000 in runs and outcome_name(ledger[n + 3000]) == "FIRED", (t.spec.name, ledger)
        assert client.get_calendar(excluder).version == version


def test_a_calendar_changed_to_include_times_the_plan_passed_over_does_not_fire_them(
    client: Client,
) -> None:
    """A per-second task starting at L under a calendar excluding [L, L+3 s): its plan at creation
    passes over those three seconds (skipped_calendar) to L+3 s. The calendar put again without the
    exclusion, seconds before L, does not bring them back: the next fire is already planned, L+3 s
    fires, L .. L+2 s fire nothing."""
    lo = _ahead(3000, 5000)
    client.put_calendar(_calendar("cr-reopen", _quiet(lo, lo + 3000)))
    task = client.create_task(
        "cr-reopen-task", cron("* * * * * *", start_at=lo, calendars=["cr-reopen"]), command("true")
    )
    assert task.next_fire_ms == lo + 3000, task
    client.put_calendar(_calendar("cr-reopen", NOTHING))
    assert now_ms() < lo - 500, "the calendar changed too late for the test to mean anything"
    assert client.get_task(task.task_id).next_fire_ms == lo + 3000
    wait_for(lambda: client.get_task(task.task_id).last_fired_nominal_ms >= lo + 4000, 20, "fires past L+3 s")
    client.cancel_task(task.task_id)
    runs = {e.nominal_time_ms for e in runs_of(client, task.task_id)}
    ledger = fire_ledger(client, task.task_id)
    assert min(runs) == lo + 3000, sorted(runs)
    for passed in (lo, lo + 1000, lo + 2000):
        rec = ledger[passed]
        assert outcome_name(rec) == "SKIPPED_CALENDAR" and "calendar cr-reopen" in rec.reason, rec
        assert rec.committed_at_ms <= task.created_at_ms + 1000  # recorded by the creation's plan
    assert all(outcome_name(ledger[n]) == "FIRED" for n in (lo + 3000, lo + 4000))


def test_a_calendar_in_use_cannot_be_deleted(client: Client) -> None:
    """Refused, naming who uses it, while a task names it (also once cancelled: the task still does) or
    another calendar includes it; deletable once the task is deleted and the includer gone."""
    client.put_calendar(_calendar("cr-used-base", NOTHING))
    client.put_calendar(_calendar("cr-used", include=("cr-used-base",)))
    task = client.create_task("cr-used-task", every("1h", calendars=["cr-used"]), command("true"))
    with pytest.raises(FailedPrecondition) as refused:
        client.delete_calendar("cr-used")
    assert f"task {task.task_id}" in str(refused.value), refused.value
    with pytest.raises(FailedPrecondition) as refused:
        client.delete_calendar("cr-used-base")
    assert "calendar cr-used" in str(refused.value), refused.value
    client.cancel_task(task.task_id)
    with pytest.raises(FailedPrecondition):
        client.delete_calendar("cr-used")
    # Nothing changed by the refusals.
    assert client.get_calendar("cr-used").include == ["cr-used-base"]
    assert list(client.get_task(task.task_id).spec.schedule.calendars) == ["cr-used"]
    client.delete_task(task.task_id)
    client.delete_calendar("cr-used")
    client.delete_calendar("cr-used-base")
    for name in ("cr-used", "cr-used-base"):
        with pytest.raises(NotFound):
            client.get_calendar(name)


# A payload that stamps its start; started while the hold file exists, it stamps "held" and waits for the
# gate (at most 60 s); then it stamps its end. Stamps are `what execution_id pid monotonic_ns` (Gate's).
_HOLD_PAYLOAD = (
    "import os, sys, time\n"
    "stamps, hold, gate = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "eid = os.environ['CRONRAFT_EXECUTION_ID']\n"
    "def stamp(what):\n"
    "    with open(stamps, 'a') as f:\n"
    "        f.write(f'{what} {eid} {os.getpid()} {time.monotonic_ns()}\\n')\n"
    "stamp('start')\n"
    "if os.path.exists(hold):\n"
    "    stamp('held')\n"
    "    deadline = time.monotonic() + 60\n"
    "    while not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "        time.sleep(0.02)\n"
    "stamp('end')\n"
)


def test_keep_executions_never_deletes_a_live_run(client: Client, tmp_path: Path) -> None:
    """keep_executions 2, every second, allow_all: the first three runs hold on a gate while later ones
    end at once, so the trim at each fire and the sweep meet ended executions newer than live ones.
    While they hold, every held execution is there and running each time it is read, and the task
    holds at most its live runs, its count and the one just fired. Once the gate opens, every held run
    ends succeeded (its process stamped its end: not killed), every fire of the task succeeded, and
    after the task is cancelled exactly the two newest executions are left; each deleted one is not
    found and its fire-ledger record went with it."""
    gate = Gate(tmp_path / "stamps", tmp_path / "gate")
    hold = tmp_path / "hold"
    hold.touch()
    payload = command(sys.executable, "-c", _HOLD_PAYLOAD, str(gate.stamps), str(hold), str(gate.gate))
    task = client.create_task(
        "cr-keep2", every("1s"), payload, overlap="allow_all", retention=retention(keep_executions=2)
    )
    held = wait_for(lambda: (h := gate.stamps_of("held")) and len(h) >= 3 and h, 20, "three held runs")
    hold.unlink()
    held_ids = set(held)
    fires_when_released = client.get_task(task.task_id).fire_count
    violations: list[str] = []

    def watched() -> bool:
        """Every held run still there and running; the task within its live runs + its count + 1."""
        listed = runs_of(client, task.task_id)
        by_id = {e.execution_id: e for e in listed}
        for eid in held_ids:
            e = by_id.get(eid)
            if e is None or e.state != common_pb2.EXECUTION_RUNNING:
                violations.append(f"held {eid}: {'gone' if e is None else e.state}")
        live = sum(e.state in ACTIVE for e in listed)
        if len(listed) > live + 2 + 1:
            violations.append(f"{len(listed)} executions, {live} live: over the count")
        return client.get_task(task.task_id).fire_count >= fires_when_released + 5

    wait_for(lambda: watched() or violations, 20, "five runs ending beside the held ones")
    assert not violations, violations
    assert all(client.get_execution(eid).state == common_pb2.EXECUTION_RUNNING for eid in held_ids)
    gate.open()
    wait_for(lambda: held_ids <= set(gate.stamps_of("end")), 20, "the held runs to end")
    client.cancel_task(task.task_id)

    def settled() -> common_pb2.Task | None:
        t = client.get_task(task.task_id)
        return t if t.outcomes.runs == t.fire_count and t.stored_executions == 2 else None

    done = wait_for(settled, 20, "every run ended and the task down to its count")
    # Every run that started succeeded and its process ended on its own; the cancel ends the one run
    # fired ahead of its due second that had not started yet, if there is one (cancelled, never run).
    starts = gate.stamps_of("start")
    assert done.outcomes.succeeded == len(starts) and set(gate.stamps_of("end")) == set(starts)
    assert done.outcomes.cancelled == done.fire_count - len(starts) <= 1, done.outcomes
    kept = runs_of(client, task.task_id)
    ledger = fire_ledger(client, task.task_id)
    assert len(kept) == 2 and kept[0].state == SUCCEEDED, kept
    assert kept[1].state == SUCCEEDED or kept[1].execution_id not in starts, kept
    assert kept[-1].nominal_time_ms == done.last_fired_nominal_ms  # the newest is kept
    for e in kept:
        assert ledger[e.nominal_time_ms].execution_id == e.execution_id
    deleted = set(starts) - {e.execution_id for e in kept}
    assert len(deleted) >= len(starts) - 2 and held_ids & deleted, (deleted, held_ids)
    for eid in deleted:
        with pytest.raises(NotFound):
            client.get_execution(eid)
    named = {r.execution_id for r in ledger.values()}
    assert not named & deleted, "a ledger record names a deleted execution"
    assert set(ledger) == {e.nominal_time_ms for e in kept}, sorted(ledger)


def test_an_ended_task_goes_after_its_retention_and_its_downstream_then_fails_its_dependency(
    client: Client,
) -> None:
    """A one-time upstream with a calendar and ended-task retention 2 s, and a per-second downstream
    (allow_all, dependency deadline 2.5 s) that depends on it. Downstream runs fired before the upstream
    succeeded wait and run after it; the upstream is deleted with its execution and its calendar
    reference 2 s after it ended (explain and execution get: not found; its calendar deletable); the
    downstream runs fired after that wait and fail at their dependency deadline, never started."""
    client.put_calendar(_calendar("cr-upstream", NOTHING))
    up = client.create_task(
        "cr-upstream",
        at(now_ms() + 1500, calendars=["cr-upstream"]),
        command("true"),
        retention=retention(ended_task_max_age="2s"),
    )
    down = create_task_with_policies(
        client,
        "cr-downstream",
        every("1s"),
        command("true"),
        overlap="allow_all",
        depends_on=[up.task_id],
        dependency_deadline_ms=2500,
    )
    with pytest.raises(FailedPrecondition):
        client.delete_calendar("cr-upstream")
    (up_run,) = wait_for(
        lambda: [e for e in client.list_executions(up.task_id) if e.state == SUCCEEDED] or None,
        20,
        "the upstream's run",
    )

    def gone() -> bool:
        try:
            client.get_task(up.task_id)
        except NotFound:
            return True
        return False

    wait_for(gone, 20, "the ended upstream to be deleted")
    deleted_at = now_ms()
    assert deleted_at >= up_run.completed_at_ms + 2000, "deleted before its ended-task retention"
    with pytest.raises(NotFound):
        client.get_execution(up_run.execution_id)
    with pytest.raises(NotFound):
        client.explain_task(up.task_id)
    client.delete_calendar("cr-upstream")  # the deleted task no longer uses it

    def after_deletion() -> list[common_pb2.Execution] | None:
        late = [e for e in runs_of(client, down.task_id) if e.nominal_time_ms > deleted_at]
        ended = [e for e in late if e.state not in ACTIVE]
        return late if len(ended) >= 2 else None

    seen = wait_for(after_deletion, 20, "two downstream runs fired after the deletion to end")
    client.cancel_task(down.task_id)  # cancels the ones still waiting
    runs = runs_of(client, down.task_id)
    before = [e for e in runs if e.nominal_time_ms < up_run.nominal_time_ms]
    assert before, "no downstream run fired before the upstream"
    for e in before:  # waited for the upstream, then ran
        assert e.state == SUCCEEDED, e
        assert first_started_ms(e) >= up_run.completed_at_ms, e
    late = [e for e in seen if e.state not in ACTIVE]  # as read before the cancel
    assert len(late) >= 2
    for e in late:
        assert e.state == common_pb2.EXECUTION_FAILED, e
        assert "dependencies unmet after 2500 ms" in e.error and up.task_id in e.error, e.error
        assert not e.attempts and not e.started_at_ms, e
        assert e.completed_at_ms >= e.fired_at_ms + 2500
    ledger = fire_ledger(client, down.task_id)
    assert all(outcome_name(ledger[e.nominal_time_ms]) == "FIRED" for e in runs)


def test_keep_executions_keeps_the_newest_while_an_older_run_lives(client: Client, tmp_path: Path) -> None:
    """keep_executions 2, every second, allow_all, the first run held on a gate: per the docs the task
    holds the held run (live, never deleted) and its two newest executions, the newest ended one
    among them. The store keeps the held run and the newest only."""
    gate = Gate(tmp_path / "stamps", tmp_path / "gate")
    hold = tmp_path / "hold"
    hold.touch()
    payload = command(sys.executable, "-c", _HOLD_PAYLOAD, str(gate.stamps), str(hold), str(gate.gate))
    task = client.create_task(
        "cr-keep-newest", every("1s"), payload, overlap="allow_all", retention=retention(keep_executions=2)
    )
    try:
        wait_for(lambda: gate.stamps_of("held") or None, 20, "a held run")
        hold.unlink()
        released = client.get_task(task.task_id).fire_count
        wait_for(lambda: client.get_task(task.task_id).fire_count >= released + 3, 20, "three more fires")
        nominals = [e.nominal_time_ms for e in runs_of(client, task.task_id)]
    finally:
        gate.open()
        client.cancel_task(task.task_id)
    assert nominals[-1] - nominals[-2] == 1000, f"the two newest are not kept: {nominals}"
