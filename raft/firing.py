"""When a task fires, and what a fire does: the scheduling rules applied inside `apply()`.

Pure and deterministic like the rest of the state machine: it reads the store through `Txn`, and time
comes from the command being applied. It owns
- planning: the next nominal time of a task and the instant it is due (jitter, calendar skip or roll);
- the misfire constants (what a fire committed late does is `raft.misfire`);
- overlap: what a fire does while an earlier execution of the task is pending, buffered or running, as
  decided by the pure `raft.overlap.decide_overlap` (beside `raft.misfire.decide_misfire`; carried out by
  `raft.commands.fires.start_execution`);
- the fire ledger: one record per nominal time, with its outcome and reason (bounded per task).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import tzinfo

from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft import calendar as cal
from cronraft.raft import features, schedule
from cronraft.raft.answers import LOCAL, Answers
from cronraft.raft.codec import from_u64, id_bytes, id_text, make_id, u64
from cronraft.raft.kv import Txn
from cronraft.raft.validate import check_namespace, stored_namespace
from cronraft.timefmt import utc_text

Task = common_pb2.Task
Execution = common_pb2.Execution
_FireRecord = common_pb2.FireRecord
# From the class once: looked up on a message, a method costs a look-up of a field of that name (upb).
_record_bytes = _FireRecord.SerializeToString

# A fire committed more than this after its due instant is a misfire (the cluster could not fire it in
# time: downtime, failover); below it, it is just late and fires normally.
MISFIRE_THRESHOLD_MS = 5_000
DEFAULT_CATCHUP_WINDOW_MS = 60_000
DEFAULT_MAX_CATCHUP = 100
# The ledger keeps this many records per task; older ones are pruned as new ones arrive.
LEDGER_PER_TASK = 1_000
LEDGER_PRUNE_BATCH = 64
# Bounds on walks over nominal times inside one apply (calendar skips, missed times recorded).
MAX_WALK = 10_000
MAX_RECORDS_PER_COMMAND = 100
# Fire ahead: the longest a Fire or Grant may commit before the instant its execution is due to start
# (`fire_lead_ms` of an ordinary second, or the staging lead of a burst: daemon.leader.staging). Bounded so
# that a leader cannot commit far ahead (a change to the task after the commit no longer affects that
# fire; see may_fire_ahead).
MAX_FIRE_LEAD_MS = 30_000

ACTIVE_STATES = frozenset(
    {common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED}
)


# ------------------------------------------------------------------------------------------ keys


def ledger_key(task16: bytes, nominal_ms: int) -> bytes:
    return task16 + u64(nominal_ms)


def active_key(task16: bytes, exec16: bytes) -> bytes:
    return task16 + exec16


def buffered_key(task16: bytes, nominal_ms: int, exec16: bytes) -> bytes:
    return task16 + u64(nominal_ms) + exec16


def prefix_end(prefix: bytes) -> bytes:
    return prefix + b"\xff" * 25


# ----------------------------------------------------------------------------------------- ledger


def record(
    txn: Txn,
    task16: bytes,
    nominal_ms: int,
    outcome: int,
    now_ms: int,
    *,
    reason: str = "",
    execution_id: str = "",
    actual_ms: int = 0,
    removed: int = 0,
) -> None:
    """Write the ledger record of one nominal time (the last outcome wins) and prune the oldest.
    `removed`: records of the task the caller deleted in this command without moving its count (a fire's
    trim: raft.retention.trim_on_fire), moved here with this record's (one read and one write of the
    count for both)."""
    key = task16 + nominal_ms.to_bytes(8, "big")  # ledger_key
    late = 0
    if execution_id:
        late = max(0, now_ms - (actual_ms or nominal_ms))
    rec = _FireRecord(
        task_id=id_text(task16),
        nominal_time_ms=nominal_ms,
        outcome=common_pb2.FireOutcome.ValueType(outcome),
        reason=reason[:500],
        execution_id=execution_id,
        committed_at_ms=now_ms,
        late_ms=late,
        actual_ms=actual_ms,
    )
    # A FireRecord holds no map (codec.MAPLESS): the bytes of `deterministic=True`, cheaper.
    value = _record_bytes(rec)
    # Most records are of a new nominal time: one insert (which writes nothing if the key is there)
    # instead of a get and a put.
    if txn.insert("ledger", key, value):
        _prune_ledger(txn, task16, removed)
    else:
        txn.put("ledger", key, value)
        if removed:
            _count_removed(txn, task16, removed)


def _stored_count(raw: bytes, removed: int) -> int:
    """A task's `ledger_count` as stored (`raw`), less `removed` records, never below 0: what moving it
    down one record at a time (raft.retention) leaves."""
    return max(0, int.from_bytes(raw[:8], "big") - removed)  # from_u64


def _count_removed(txn: Txn, task16: bytes, removed: int) -> None:
    """The task's `ledger_count` less `removed` records (an absent count stays absent)."""
    raw = txn.get("ledger_count", task16)
    if raw is not None:
        txn.put("ledger_count", task16, _stored_count(raw, removed).to_bytes(8, "big"))


def _prune_ledger(txn: Txn, task16: bytes, removed: int = 0) -> None:
    # A count per task makes pruning O(1) amortised: when it passes the bound by a margin, the oldest
    # records go in one forward scan (never a scan of the whole ledger per record).
    raw = txn.get("ledger_count", task16)
    # `removed`: records deleted by the caller, the count not moved yet (an absent count: none to move).
    if raw is None:
        count = 1
    else:
        count = (_stored_count(raw, removed) if removed else int.from_bytes(raw[:8], "big")) + 1
    if count > LEDGER_PER_TASK + LEDGER_PRUNE_BATCH:
        excess = range(count - LEDGER_PER_TASK)
        oldest = txn.scan("ledger", task16, prefix_end(task16))
        doomed = [key for (key, _), _ in zip(oldest, excess, strict=False)]
        for k in doomed:
            txn.delete("ledger", k)
        count -= len(doomed)
    value = count.to_bytes(8, "big")  # u64
    if value != raw:  # a fire that trimmed one record at the task's count leaves it as it was
        txn.put("ledger_count", task16, value)


def ledger_range(txn: Txn, task_id: str, from_ms: int, to_ms: int, limit: int) -> list[common_pb2.FireRecord]:
    task16 = id_bytes(task_id, field="task_id")
    out = []
    for _, raw in txn.scan("ledger", ledger_key(task16, max(0, from_ms)), ledger_key(task16, to_ms + 1)):
        rec = common_pb2.FireRecord()
        rec.ParseFromString(raw)
        out.append(rec)
        if len(out) >= limit:
            break
    return out


def drop_ledger(txn: Txn, task16: bytes) -> None:
    for k, _ in list(txn.scan("ledger", task16, prefix_end(task16))):
        txn.delete("ledger", k)
    txn.delete("ledger_count", task16)


# --------------------------------------------------------------------------------------- planning


@dataclass
class Planned:
    nominal_ms: int | None  # None: no fire left
    due_ms: int = 0
    rolled_from: str = ""  # calendar reason when the due instant was rolled


def calendar_key(namespace: str, name: str) -> str:
    """The stored key of calendar `name` of `namespace` (also in the calendar_refs index): the bare name
    in the default namespace, as before namespaces existed (stores written then keep their keys and
    digest), `namespace/name` in another one (a calendar name holds no "/"). Calendar names are unique
    per namespace, and a name is always resolved in the namespace of whoever names it (a task's schedule,
    another calendar's include)."""
    namespace = stored_namespace(namespace)
    return f"{namespace}/{name}" if namespace else name


def calendar_set(txn: Txn, names: list[str], namespace: str = "") -> cal.CalendarSet | None:
    if not names:
        return None
    return cal.CalendarSet(names, _CalendarView(txn, namespace))


class _CalendarView(Mapping[str, common_pb2.Calendar]):
    """A read-only mapping of the stored calendars of one namespace for `CalendarSet` (loaded lazily, by
    name)."""

    def __init__(self, txn: Txn, namespace: str = "") -> None:
        self._txn = txn
        self._namespace = namespace

    def __getitem__(self, name: str) -> common_pb2.Calendar:
        c = read_calendar(self._txn, name, self._namespace)
        if c is None:
            raise KeyError(name)
        return c

    def __iter__(self) -> Iterator[str]:
        prefix = calendar_key(self._namespace, "")
        if prefix:  # "ns/": its keys sort together, up to "ns0"
            for k, _ in self._txn.scan("calendars", prefix.encode(), prefix[:-1].encode() + b"0"):
                yield k.decode()[len(prefix) :]
        else:
            for k, _ in self._txn.scan("calendars"):
                if b"/" not in k:
                    yield k.decode()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def check_calendar(txn: Txn, calendar: common_pb2.Calendar) -> None:
    """Every check of a PutCalendar of `calendar` against the calendars stored in `txn`: its fields, its
    includes (they exist, close no cycle, stay within the depth and expansion bounds) and the depth of
    the calendars that include it. Raises InvalidArgument on "calendar...". The leader runs it before
    proposing, the state machine again when applying: one function, so both agree."""
    namespace = check_namespace(calendar.namespace, "calendar.namespace")
    cal.validate_calendar(
        calendar,
        known=_CalendarView(txn, namespace),
        field="calendar",
        includers=lambda name: _includers(txn, namespace, name),
    )


def _includers(txn: Txn, namespace: str, name: str) -> list[str]:
    """The stored calendars of `namespace` that include `name` directly (from the calendar_refs index)."""
    key = calendar_key(namespace, name).encode()
    prefix, skip = key + b"\0C", len(calendar_key(namespace, ""))
    return [k[len(prefix) :].decode()[skip:] for k, _ in txn.scan("calendar_refs", prefix, key + b"\0D")]


def read_calendar(txn: Txn, name: str, namespace: str = "") -> common_pb2.Calendar | None:
    """Calendar `name` of `namespace` ("" or "default": the default one), or None."""
    raw = txn.get("calendars", calendar_key(namespace, name).encode())
    if raw is None:
        return None
    c = common_pb2.Calendar()
    c.ParseFromString(raw)
    return c


def _zone_of(sched: common_pb2.Schedule) -> tzinfo:
    tz = sched.cron.time_zone if sched.WhichOneof("kind") == "cron" else ""
    return schedule.load_zone(tz or "UTC")


def plan_from(
    txn: Txn,
    task: Task,
    first_nominal: int | None,
    now_ms: int,
    *,
    not_before_ms: int = 0,
    answers: Answers = LOCAL,
    sched: common_pb2.Schedule | None = None,
    start: tuple[int, str] | None = None,
) -> Planned:
    """Starting at `first_nominal`, the first nominal time that will fire and its due instant; nominal
    times a calendar excludes (action skip) are recorded in the ledger and passed over. `answers`: the
    command's plan (raft.answers), else computed here. `sched`: the task's schedule, when the caller
    holds it already (a Fire: each protobuf read costs). `start`: (instant, what happened then) of a plan
    that begins now (a task created, edited or resumed: schedule_fixes): a nominal time rolled back to
    before it is skipped, not fired at once, late (the instant was never this plan's)."""
    if sched is None:
        sched = task.spec.schedule
    names = sched.calendars  # most tasks name none: no list, no task id decoded (every fire plans)
    if not names:
        if first_nominal is None:
            return Planned(None)
        due = first_nominal
        if sched.jitter_ms:
            due += schedule.jitter_offset_ms(task.task_id, first_nominal, sched.jitter_ms)
        return Planned(first_nominal, due, "")
    task16 = id_bytes(task.task_id)
    cals = calendar_set(txn, list(names), task.spec.namespace)
    nominal = first_nominal
    steps = 0
    while nominal is not None and steps < MAX_WALK:
        steps += 1
        due = nominal
        rolled = ""
        if cals is not None:
            outcome, rolled_ms, reason = answers.resolve(
                cals, sched.calendar_action, nominal, _zone_of(sched), not_before_ms
            )
            if outcome == "skip":
                if steps <= MAX_RECORDS_PER_COMMAND:
                    record(txn, task16, nominal, common_pb2.SKIPPED_CALENDAR, now_ms, reason=reason)
                nominal = answers.next_fire(sched, nominal)
                continue
            if outcome == "roll":
                due, rolled = rolled_ms, reason
                if start is not None and due < start[0] and features.is_active(txn, features.SCHEDULE_FIXES):
                    if steps <= MAX_RECORDS_PER_COMMAND:
                        why = f"{reason}, to {utc_text(due)}: before {start[1]}"
                        record(txn, task16, nominal, common_pb2.SKIPPED_CALENDAR, now_ms, reason=why)
                    nominal = answers.next_fire(sched, nominal)
                    continue
        if sched.jitter_ms:
            due += schedule.jitter_offset_ms(task.task_id, nominal, sched.jitter_ms)
        if cals is not None and not_before_ms and due <= not_before_ms:
            # Rolling can land several nominal times on one instant (Saturday's and Sunday's daily runs
            # both roll to Monday 09:00, Monday's own too): they merge into the fire already planned there.
            if steps <= MAX_RECORDS_PER_COMMAND:
                why = f"merged into the fire due at {not_before_ms}" + (f" ({rolled})" if rolled else "")
                record(txn, task16, nominal, common_pb2.SKIPPED_CALENDAR, now_ms, reason=why)
            nominal = answers.next_fire(sched, nominal)
            continue
        return Planned(nominal, due, rolled)
    return Planned(None)


def set_plan(task: Task, plan: Planned, max_runs_reached: bool = False) -> None:
    if plan.nominal_ms is None or max_runs_reached:
        task.next_fire_ms = 0
        task.next_due_ms = 0
        if task.state == common_pb2.TASK_SCHEDULED:
            task.state = common_pb2.TASK_COMPLETED
        return
    task.next_fire_ms = plan.nominal_ms
    task.next_due_ms = plan.due_ms if plan.due_ms != plan.nominal_ms else 0


def due_of(task: Task) -> int:
    return task.next_due_ms or task.next_fire_ms


def may_fire_ahead(task: Task) -> bool:
    """Whether the fires of `task` may commit (and be leased) before their due time, the worker holding
    the start until then. Only where the fire's effect cannot depend on what happens in between: with
    overlap allow_all (no decision about earlier executions that may still end before the due time),
    no dependencies (upstream runs may still succeed) and no concurrency limit (counted at grant)."""
    spec = task.spec
    return (
        (spec.overlap or common_pb2.OVERLAP_ALLOW_ALL) == common_pb2.OVERLAP_ALLOW_ALL
        and not spec.depends_on
        and not spec.max_concurrency
    )


def fire_lead(task: Task, requested_ms: int) -> int:
    """The lead a Fire or Grant of `task` may use: what the leader asked for, bounded, or none."""
    if requested_ms <= 0 or not may_fire_ahead(task):
        return 0
    return min(requested_ms, MAX_FIRE_LEAD_MS)


def active_executions(txn: Txn, task16: bytes) -> list[Execution]:
    out = []
    for k, _ in txn.scan("active", task16, prefix_end(task16)):
        raw = txn.get("execs", k[16:32])
        if raw is not None:
            e = Execution()
            e.ParseFromString(raw)
            out.append(e)
    return out


def derived_id(now_ms: int, index: int, position: int, n: int) -> str:
    """An execution id for executions created inside apply (backfill, promotions): derived from the
    log position, so every node computes the same one without a random source."""
    digest = hashlib.blake2b(f"{index}:{position}:{n}".encode(), digest_size=10).digest()
    return make_id(now_ms, digest)


def buffered_count(txn: Txn, task16: bytes) -> int:
    return sum(1 for _ in txn.scan("buffered", task16, prefix_end(task16)))


def oldest_buffered(txn: Txn, task16: bytes) -> bytes | None:
    # Asked at every Complete, and almost always answered none: one seek (Txn.first), not a scan.
    found = txn.first("buffered", task16, prefix_end(task16))
    return None if found is None else found[0]


def buffered_nominal(key: bytes) -> int:
    return from_u64(key[16:24])


__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_CATCHUP_WINDOW_MS",
    "MAX_FIRE_LEAD_MS",
    "MISFIRE_THRESHOLD_MS",
    "Planned",
    "active_executions",
    "active_key",
    "buffered_key",
    "calendar_key",
    "check_calendar",
    "derived_id",
    "due_of",
    "fire_lead",
    "ledger_range",
    "may_fire_ahead",
    "plan_from",
    "read_calendar",
    "record",
    "set_plan",
]


def preview_stored(txn: Txn, task: Task, from_ms: int, count: int) -> list[scheduler_pb2.PreviewFire]:
    """The next fires of a stored task, computed with the stored calendars, as the leader would plan them."""
    from cronraft.raft.preview import preview

    sched = task.spec.schedule
    cals = calendar_set(txn, list(sched.calendars), task.spec.namespace)
    resolve = None
    if cals is not None:
        zone = _zone_of(sched)

        def resolve(nominal_ms: int) -> tuple[str, int, str]:
            return cal.resolve(cals, sched.calendar_action, nominal_ms, zone)

    return preview(
        sched, from_ms=from_ms, count=count, task_id=task.task_id, resolve=resolve, fire_count=task.fire_count
    )
