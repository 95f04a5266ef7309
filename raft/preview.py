"""Preview: the next fires of a schedule with the reasons behind each instant, for `schedctl schedule
preview` (offline, no server) and the PreviewTask API (a stored task). Pure: it runs the same schedule
maths the leader runs (`schedule.first_fire` / `next_fire` / `dst_shifted` / `jitter_offset_ms`), and
takes the calendar decision from the caller (`resolve`), since calendars live in the replicated state.

What a row says (`PreviewFire`):
- `nominal_time_ms`: the nominal time (the fire's identity); `local_time`: that instant in RFC 3339 in the
  schedule's zone (UTC for every kind but cron).
- `actual_ms`: when it would start: the nominal time, or the calendar's rolled instant, plus the jitter
  offset; 0 for a time that does not fire (a calendar skip, or a DST gap's time that is skipped: with
  `dst_gap: skip`, or by default for an elapsed-time job, one whose minute or hour starts with `*`).
- `notes`: "dst_shifted (...)", "dst_skipped (...)", "dst_fold: ...", "jitter +N ms", the calendar's note.

Counting: `count` counts the rows that fire; rows that do not fire are listed too, and the walk stops
after 10 * count nominal times whatever happened, so an always-excluded schedule ends quickly.
`max_runs` is honoured from `fire_count` fires already made (0 for a task not yet created).
fixed_delay shows only its first fire: the later ones depend on when each run ends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft import schedule as sched

__all__ = ["OUTCOMES", "Resolve", "format_duration", "preview", "rfc3339"]

# resolve(nominal_ms) -> (outcome, actual_ms, note): the calendar's decision for one nominal time.
Resolve = Callable[[int], tuple[str, int, str]]
OUTCOMES = ("fire", "skip", "roll")
_WALK_FACTOR = 10


def preview(
    schedule: common_pb2.Schedule,
    *,
    from_ms: int,
    count: int,
    task_id: str = "",
    resolve: Resolve | None = None,
    fire_count: int = 0,
) -> list[scheduler_pb2.PreviewFire]:
    """The next `count` fires of `schedule` for a task created (or looked at) at `from_ms`, with the
    rows in between that do not fire. Without `task_id` the jitter offset is unknown (it hashes the task
    id): such rows keep actual = nominal and say so. Raises `InvalidArgument` for an invalid schedule;
    ValueError when `resolve` answers an unknown outcome."""
    if count <= 0:
        return []
    kind = schedule.WhichOneof("kind")
    zone = sched.load_zone(schedule.cron.time_zone) if kind == "cron" else UTC
    # `dst_gap: skip`, and the default for an elapsed-time job (cronie: it follows the new clock).
    skip_gaps = kind == "cron" and sched.dst_gap_skips(schedule)
    walker = schedule
    if skip_gaps:  # walk the SHIFT twin: its shifted fires are exactly the times skipping drops
        walker = common_pb2.Schedule()
        walker.CopyFrom(schedule)
        walker.dst_gap = common_pb2.DST_GAP_SHIFT
    runs_left = schedule.max_runs - fire_count if schedule.max_runs else None

    rows: list[scheduler_pb2.PreviewFire] = []
    fires = 0
    nominal = sched.first_fire(walker, from_ms)
    for _ in range(_WALK_FACTOR * count):
        if nominal is None or fires >= count or (runs_left is not None and fires >= runs_left):
            break
        row = scheduler_pb2.PreviewFire(nominal_time_ms=nominal, local_time=rfc3339(nominal, zone))
        kept = _annotate(row, schedule, walker, zone, from_ms=from_ms, skip_gaps=skip_gaps)
        if kept and _decide(row, schedule, task_id, resolve):
            fires += 1
        rows.append(row)
        nominal = None if kind == "fixed_delay" else sched.next_fire(walker, nominal)
    if kind == "fixed_delay" and rows:
        rows[0].notes.append(
            f"then {format_duration(schedule.fixed_delay.delay_ms)} after each run ends"
            + (" (stops after a failed run)" if schedule.fixed_delay.stop_on_failure else "")
        )
    return rows


def _annotate(
    row: scheduler_pb2.PreviewFire,
    schedule: common_pb2.Schedule,
    walker: common_pb2.Schedule,
    zone: tzinfo,
    *,
    from_ms: int,
    skip_gaps: bool,
) -> bool:
    """Add the DST and past-time notes of a nominal time; False when the DST gap policy drops it."""
    nominal = row.nominal_time_ms
    kind = schedule.WhichOneof("kind")
    if kind == "at" and nominal < from_ms:
        row.notes.append("in the past: fires as soon as possible, never dropped (no misfire policy for --at)")
    if kind != "cron":
        return True
    if sched.dst_shifted(walker, nominal):
        before = datetime.fromtimestamp(nominal // 1000 - 1, zone) + timedelta(seconds=1)
        after = datetime.fromtimestamp(nominal // 1000, zone)
        if before.date() == after.date():
            gap = f"local {before:%H:%M}-{after:%H:%M} does not exist on {after:%Y-%m-%d}"
        else:  # a gap over midnight, or a whole skipped day (Pacific/Apia, 2011-12-30)
            gap = f"local {before:%Y-%m-%d %H:%M} to {after:%Y-%m-%d %H:%M} does not exist"
        if skip_gaps:
            row.notes.append(f"dst_skipped ({gap})")
            row.actual_ms = 0
            return False
        row.notes.append(f"dst_shifted ({gap})")
        return True
    local = datetime.fromtimestamp(nominal // 1000, zone)
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        which = "repeat" if local.fold else "first occurrence"
        row.notes.append(f"dst_fold: {which} of {local:%H:%M}")
    return True


def _decide(
    row: scheduler_pb2.PreviewFire,
    schedule: common_pb2.Schedule,
    task_id: str,
    resolve: Resolve | None,
) -> bool:
    """Apply the calendar and the jitter to a nominal time; False when the calendar skips it."""
    nominal = row.nominal_time_ms
    outcome, actual, note = resolve(nominal) if resolve is not None else ("fire", nominal, "")
    if outcome not in OUTCOMES:
        raise ValueError(f"resolve() returned outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    if note:
        row.notes.append(note)
    if outcome == "skip":
        row.actual_ms = 0
        return False
    jitter = schedule.jitter_ms
    if jitter and task_id:
        offset = sched.jitter_offset_ms(task_id, nominal, jitter)
        actual += offset
        row.notes.append(f"jitter +{offset} ms")
    elif jitter:
        row.notes.append(f"jitter: up to {format_duration(jitter)} later (depends on the task id)")
    row.actual_ms = actual
    return True


def rfc3339(instant_ms: int, zone: tzinfo) -> str:
    """`instant_ms` as RFC 3339 in `zone`: seconds, or milliseconds when there are any; 'Z' for UTC."""
    local = datetime.fromtimestamp(instant_ms // 1000, zone).replace(microsecond=instant_ms % 1000 * 1000)
    text = local.isoformat(timespec="milliseconds" if instant_ms % 1000 else "seconds")
    return text[:-6] + "Z" if zone is UTC else text


def format_duration(duration_ms: int) -> str:
    """Compact duration: 90000 -> "1m30s", 1500 -> "1s500ms", 0 -> "0s"."""
    if duration_ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if duration_ms >= size:
            parts.append(f"{duration_ms // size}{unit}")
            duration_ms %= size
    return "".join(parts)
