"""Misfire: what a fire committed late does, inside `apply()` (and in the leader's plan of it).

A fire is late when its due instant is more than MISFIRE_THRESHOLD_MS (raft.firing) behind the command's
time: the cluster could not fire (down, no quorum, a long election). The task's policy decides which of
the nominal times it missed still fire: skip (none), fire_once (the latest), fire_all (those within the
catch-up window, at most max_catchup). A task whose calendars roll has its missed times judged at their
rolled instants, as `firing.plan_from` would have planned them (`decide_rolled_misfire`, schedule_fixes).
Pure and deterministic like `raft.firing`, whose planning, ledger and calendar reads it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from cronraft.proto.v1 import common_pb2
from cronraft.raft import calendar as cal
from cronraft.raft import schedule
from cronraft.raft.answers import LOCAL, Answers
from cronraft.raft.firing import (
    DEFAULT_CATCHUP_WINDOW_MS,
    DEFAULT_MAX_CATCHUP,
    MAX_RECORDS_PER_COMMAND,
    MAX_WALK,
    MISFIRE_THRESHOLD_MS,
    Task,
    _zone_of,
    calendar_set,
)
from cronraft.raft.kv import Txn


@dataclass
class MisfireDecision:
    fire_nominal: int | None  # the nominal time to fire now (None: none)
    resume_after: int  # plan the next fire strictly after this nominal time
    missed: list[int] = field(default_factory=list)  # nominal times to record as missed_downtime
    missed_more: int = 0  # how many more were missed beyond the recorded ones
    catchup: bool = False
    last_seen: int = 0  # the latest missed nominal time the walk reached
    fire_rolled: bool = False  # fire_nominal is not the fire's own and a calendar rolled it (ledger rolled)
    fire_due: int = 0  # when fire_nominal was due, if the rolled walk found it (0: nominal + jitter)


def decide_misfire(
    task: Task, nominal_ms: int, now_ms: int, answers: Answers = LOCAL, *, due_ms: int = 0
) -> MisfireDecision:
    """What a fire of `nominal_ms` committed at `now_ms` does, per the task's misfire policy (`answers`:
    the command's plan, raft.answers). `due_ms`: the instant the fire was due (`due_of(task)`, its next
    fire being `nominal_ms`), when the caller has it (else it is read)."""
    late = now_ms - (due_ms or task.next_due_ms or nominal_ms)
    if late <= MISFIRE_THRESHOLD_MS:  # every usual fire, decided without reading the spec
        return MisfireDecision(nominal_ms, nominal_ms)
    spec = task.spec
    sched = spec.schedule
    if sched.WhichOneof("kind") in ("at", "fixed_delay"):
        # A one-time task (or the first run of a fixed delay) is never dropped for being late: firing
        # it late is what its user asked for (a past `at` fires as soon as possible).
        return MisfireDecision(nominal_ms, nominal_ms)
    window = spec.catchup_window_ms or DEFAULT_CATCHUP_WINDOW_MS
    policy = spec.misfire or common_pb2.MISFIRE_FIRE_ALL
    oldest = now_ms - window
    if policy == common_pb2.MISFIRE_FIRE_ALL:
        max_catchup = spec.max_catchup or DEFAULT_MAX_CATCHUP
        if nominal_ms >= oldest and task.catchup_fired < max_catchup:
            return MisfireDecision(nominal_ms, nominal_ms, catchup=True)
        # Too old, or the catch-up budget is spent: record this one and move on to the next missed one
        # that is still inside the window (or the first future one).
        start = nominal_ms
        decision = MisfireDecision(None, nominal_ms, missed=[nominal_ms])
        if task.catchup_fired >= max_catchup:
            oldest = now_ms  # budget spent: everything up to now is missed
        _walk_missed(sched, start, oldest, decision, answers)
        return decision
    # skip / fire_once: every missed time up to now is missed, except (fire_once) the latest one.
    decision = MisfireDecision(None, nominal_ms, missed=[nominal_ms])
    _walk_missed(sched, nominal_ms, now_ms, decision, answers)
    if policy == common_pb2.MISFIRE_FIRE_ONCE:
        _fire_latest(decision, decision.last_seen or nominal_ms)
    return decision


def _fire_latest(decision: MisfireDecision, latest: int) -> None:
    """fire_once: the latest missed time fires (it is no longer among the missed ones, recorded or only
    counted), and the plan resumes after it."""
    if decision.missed and decision.missed[-1] == latest:
        decision.missed.pop()
    elif decision.missed_more:
        decision.missed_more -= 1
    decision.fire_nominal = latest
    decision.resume_after = max(decision.resume_after, latest)


def _walk_missed(
    sched: common_pb2.Schedule, start: int, until: int, decision: MisfireDecision, answers: Answers
) -> None:
    """Extend `decision.missed` with the nominal times after `start` that are < `until` (bounded)."""
    decision.last_seen = start
    nxt = answers.next_fire(sched, start)
    steps = 0
    while nxt is not None and nxt < until and steps < MAX_WALK:
        if len(decision.missed) < MAX_RECORDS_PER_COMMAND:
            decision.missed.append(nxt)
        else:
            decision.missed_more += 1
        decision.resume_after = nxt
        decision.last_seen = nxt
        nxt = answers.next_fire(sched, nxt)
        steps += 1
    if steps >= MAX_WALK and nxt is not None and nxt < until:
        # Beyond the walk bound, jump: the first nominal time at or after `until` comes next.
        decision.missed_more += 1
        decision.resume_after = until - 1


_ROLLS = frozenset(
    {
        common_pb2.CALENDAR_ROLL_FOLLOWING,
        common_pb2.CALENDAR_ROLL_PRECEDING,
        common_pb2.CALENDAR_ROLL_MODIFIED_FOLLOWING,
    }
)


def rolls_late(task: Task, now_ms: int, due_ms: int) -> bool:
    """Whether a fire of `task` due at `due_ms` and committed at `now_ms` is a misfire of a task whose
    calendars roll its excluded times (`decide_rolled_misfire` decides it then, under the feature
    schedule_fixes). The lateness is compared first: an on-time fire reads nothing of the spec."""
    if now_ms - due_ms <= MISFIRE_THRESHOLD_MS:
        return False
    sched = task.spec.schedule
    return bool(sched.calendars) and sched.calendar_action in _ROLLS


def decide_rolled_misfire(
    txn: Txn, task: Task, nominal_ms: int, now_ms: int, answers: Answers = LOCAL, *, due_ms: int
) -> tuple[MisfireDecision, dict[int, str]]:
    """`decide_misfire` for a task whose calendars roll (feature schedule_fixes; `rolls_late` says when),
    and the nominal times its walk found the calendars skip or merge, with their reasons
    (skipped_calendar). Each time is judged at the instant it was due, rolled, as `plan_from` would have
    planned it had the cluster been up: missed when that instant passed (`fire_once` fires the latest
    such time), not missed at all when it is still to come (a Saturday rolled to Monday, the cluster back
    on Sunday: planned for Monday). `decide_misfire` walks nominal times: it recorded those still to come
    missed_downtime (fire_once fired one early), took a rolled fire due inside the catch-up window for
    one outside it (fire_all dropped it), and left a time rolled back before the restart to fire as a
    second misfire (fire_once fired twice)."""
    spec = task.spec
    if spec.schedule.WhichOneof("kind") in ("at", "fixed_delay"):
        return decide_misfire(task, nominal_ms, now_ms, answers, due_ms=due_ms), {}
    window = spec.catchup_window_ms or DEFAULT_CATCHUP_WINDOW_MS
    policy = spec.misfire or common_pb2.MISFIRE_FIRE_ALL
    until = now_ms
    if policy == common_pb2.MISFIRE_FIRE_ALL:
        max_catchup = spec.max_catchup or DEFAULT_MAX_CATCHUP
        if task.catchup_fired < max_catchup:
            if due_ms >= now_ms - window:  # its rolled instant is inside the window: catch up
                return MisfireDecision(nominal_ms, nominal_ms, catchup=True), {}
            until = now_ms - window  # the missed ones are those due before the window
    decision = MisfireDecision(None, nominal_ms, missed=[nominal_ms])
    skipped = _walk_rolled(txn, task, decision, answers, due_ms=due_ms, until=until)
    if policy == common_pb2.MISFIRE_FIRE_ONCE:
        _fire_latest(decision, decision.last_seen)
    else:
        decision.fire_rolled = False  # nothing fires
    return decision, skipped


def _walk_rolled(
    txn: Txn, task: Task, decision: MisfireDecision, answers: Answers, *, due_ms: int, until: int
) -> dict[int, str]:
    """Extend `decision.missed` with the nominal times after the fire's own (`decision.resume_after`)
    whose due instant is before `until`, planned one after another as `plan_from` plans them (rolled,
    jittered, merged into the fire before when rolled at or before it), and return those the calendars
    skip or merge. Stops at the first time due at or after `until`: the next plan (not missed)."""
    sched = task.spec.schedule
    cals = calendar_set(txn, list(sched.calendars), task.spec.namespace)
    if cals is None:
        return {}
    zone = _zone_of(sched)
    skipped: dict[int, str] = {}
    last_due = due_ms  # the instant the time before was due (the previous fire, in plan_from)
    decision.last_seen = decision.resume_after
    nominal = answers.next_fire(sched, decision.resume_after)
    steps = 0
    while nominal is not None and steps < MAX_WALK:
        steps += 1
        outcome, rolled_ms, reason = answers.resolve(cals, sched.calendar_action, nominal, zone, last_due)
        if outcome != "skip":
            due = rolled_ms if outcome == "roll" else nominal
            if sched.jitter_ms:
                due += schedule.jitter_offset_ms(task.task_id, nominal, sched.jitter_ms)
            if due > last_due and due >= until:
                break  # due after the outage: planned next, not missed
            if due <= last_due:
                reason = f"merged into the fire due at {last_due}" + (f" ({reason})" if reason else "")
                outcome = "skip"
            else:
                if len(decision.missed) < MAX_RECORDS_PER_COMMAND:
                    decision.missed.append(nominal)
                else:
                    decision.missed_more += 1
                decision.last_seen = nominal
                decision.fire_rolled = outcome == "roll"  # of the latest: what fire_once fires
                decision.fire_due = due
                last_due = due
        if outcome == "skip" and len(skipped) < MAX_RECORDS_PER_COMMAND:
            skipped[nominal] = reason
        decision.resume_after = nominal
        nominal = answers.next_fire(sched, nominal)
    if steps >= MAX_WALK and nominal is not None and nominal < until:
        # Beyond the walk bound, jump: the first nominal time at or after `until` comes next.
        decision.missed_more += 1
        decision.resume_after = until - 1
    return skipped


def skip_excluded(
    txn: Txn, task: Task, decision: MisfireDecision, answers: Answers = LOCAL
) -> dict[int, str]:
    """The missed nominal times of `decision` that the task's calendars exclude (action skip), with
    their reasons, taken out of `decision.missed` (they are skipped_calendar, not missed_downtime); and
    fire_once's latest time, when excluded, replaced by the latest missed one that is not (feature
    schedule_fixes). `_walk_missed` steps the bare schedule: without this, the calendar's skipped times
    inside an outage were recorded missed_downtime, and fire_once could fire an excluded time."""
    sched = task.spec.schedule
    if not sched.calendars or not decision.missed:
        return {}
    cals = calendar_set(txn, list(sched.calendars), task.spec.namespace)
    if cals is None:
        return {}
    zone = _zone_of(sched)
    latest = decision.fire_nominal  # with missed times: fire_once's latest (skip and fire_all fire none)
    asked = [*decision.missed, *([] if latest is None else [latest])]
    excluded: dict[int, str] = {}
    for nominal in asked:
        outcome, _, reason = answers.resolve(cals, sched.calendar_action, nominal, zone, 0)
        if outcome == "skip":
            excluded[nominal] = reason
    if not excluded:
        return excluded
    last_recorded = decision.missed[-1]
    decision.missed = [n for n in decision.missed if n not in excluded]
    if latest is not None and latest in excluded:
        # fire_once: the latest time that would have fired is excluded; the latest missed one is not.
        # Past the recorded ones (MAX_RECORDS_PER_COMMAND), it is among those only counted.
        beyond: int | None = None
        if decision.missed_more:
            beyond = _latest_included(sched, cals, zone, answers, after=last_recorded, before=latest)
        if beyond is not None:
            decision.fire_nominal = beyond
            decision.missed_more -= 1
        else:
            decision.fire_nominal = decision.missed.pop() if decision.missed else None
    return excluded


def _latest_included(
    sched: common_pb2.Schedule,
    cals: cal.CalendarSet,
    zone: tzinfo,
    answers: Answers,
    *,
    after: int,
    before: int,
) -> int | None:
    """The latest nominal time strictly between `after` and `before` that the calendars do not exclude
    (a walk of at most MAX_WALK steps), or None."""
    found: int | None = None
    nominal = answers.next_fire(sched, after)
    steps = 0
    while nominal is not None and nominal < before and steps < MAX_WALK:
        steps += 1
        if answers.resolve(cals, sched.calendar_action, nominal, zone, 0)[0] != "skip":
            found = nominal
        nominal = answers.next_fire(sched, nominal)
    return found


# ----------------------------------------------------------------------------------------- overlap


__all__ = [
    "MisfireDecision",
    "decide_misfire",
    "decide_rolled_misfire",
    "rolls_late",
    "skip_excluded",
]
