"""Schedule maths: when a task fires. Pure functions of their arguments (no clock, no I/O but the
one-time read of time-zone data), run by the replicated state machine on every node and by the offline
preview (`raft/preview.py`, `schedctl schedule preview`).

The set of nominal fire times F(schedule) is defined once, and the public functions query it:

- `at`: {at_ms}.
- `fixed_rate`: {anchor_ms + n * period_ms : n >= 0} (anchor 0 is the Unix epoch).
- `fixed_delay`: only the first fire is known in advance (created_at, or start_at_ms when later); each
  later one is `next_fixed_delay(s, finished_at)` = the previous execution's final state + delay_ms. So
  `next_fire` of a fixed_delay schedule is None: the caller asks again when the run ends.
- `cron`: the instants whose local wall time in the schedule's IANA zone matches the expression (its
  meaning, field by field, is raft/cron.py's). Where the zone's offset changes (semantics.md section
  3.3), the schedule's DST policies decide. cronie tells two kinds of job apart: an "elapsed-time" job,
  whose minute or hour field starts with `*` (`*/15 * * * *`, `@hourly`, `30 */9 * * *`), follows the
  new clock; every other job is "fixed-time" (`30 2 * * *`, `0 30 2 * * *`).
  * gap (spring forward, a wall time that does not exist), `dst_gap`:
    DEFAULT (cronie): SHIFT for a fixed-time job, SKIP for an elapsed-time one.
    SHIFT: fire at the first instant after the gap; several matching wall times in one gap collapse
    into that one instant, which never fires twice (`dst_shifted` tells such a fire; cronie would run
    the job once per matching minute, all at that moment).
    SKIP: a matching wall time inside the gap does not fire at all that day.
  * fold (fall back, a wall time that exists twice), `dst_fold`:
    FIRST: only its first occurrence fires; SECOND: only its repeat; BOTH: both fire.
    DEFAULT (cronie): FIRST for a fixed-time job, BOTH for an elapsed-time one, which keeps its rhythm
    through the repeated hour.
  The rule is per wall time, so it is the same in zones with a 30-minute change (Australia/Lord_Howe)
  or a 2-hour one (Antarctica/Troll), at midnight (America/Santiago), in either hemisphere, for a gap
  of a whole day (Pacific/Apia, 2011), and for a change of a zone's standard offset. A zone without
  changes (Asia/Kolkata) has neither case. The seconds field of a 6-field expression plays no part in
  the kind of job: cron has no seconds, and cronsim applies no DST rule to 6-field expressions (it
  walks elapsed time); we apply cronie's, so `0 30 2 * * *` fires like `30 2 * * *`.
- The window applies to every kind: F is cut to [start_at_ms, end_at_ms] (0 means unbounded) and to
  instants up to the end of year 9999 (so every result fits the proto's int64 and `datetime`).
  `max_runs` is counted by the caller (it needs the task's fire count).

`first_fire(s, created)` is min{f in F : f >= created}, except that `at` fires even when it lies in the
past (a late `at` runs as soon as possible, never silently dropped). `next_fire(s, after)` is
min{f in F : f > after}. Both return None when F has no such element.

Jitter moves the *actual* start, never the nominal time: `jitter_offset_ms(task_id, nominal, J)` is a
number in [0, J) from a keyed BLAKE2b hash of (task_id, nominal), so every node and every future leader
computes the same instant (Temporal's rule), and a fire's identity `(task_id, nominal)` is unchanged.

Determinism: raft/cron.py only steps through *naive* wall-clock time (no croniter: its DST history and
its reading of `5-5` as `*` are semantics.md 4 and issue 12); every mapping between wall time and UTC is
done here, by the small functions under "DST seam". Zones are read (`load_zone`, from
`cronraft.timefmt`) from the pinned `tzdata` package, never from the host's /usr/share/zoneinfo, so
nodes with the same lockfile agree (`TZDATA_VERSION`).

Leap seconds: all times are POSIX time (a day is 86,400 s; a leap second repeats or smears a second of
the clock but adds no instant), so cron and fixed_rate fires around one are neither lost nor doubled:
there is nothing to do here. A leap second written as `:60` in an instant (`cronraft.timefmt`, where the
text forms of durations, instants and the pinned zones live) is read as the next second's `:00`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft import cron
from cronraft.timefmt import load_zone

__all__ = [
    "MAX_INSTANT_MS",
    "MAX_JITTER_MS",
    "MIN_DELAY_MS",
    "MIN_PERIOD_MS",
    "TZDATA_VERSION",
    "CronStep",
    "cron_step",
    "dst_gap_skips",
    "dst_shifted",
    "first_fire",
    "jitter_offset_ms",
    "load_zone",
    "next_fire",
    "next_fixed_delay",
    "validate_schedule",
]

MIN_PERIOD_MS = 1_000
MIN_DELAY_MS = 1_000
MAX_JITTER_MS = 86_400_000  # one day
# 9999-12-31T23:59:59.999Z: the last instant `datetime` can represent; no fire is ever later.
MAX_INSTANT_MS = 253_402_300_799_999
TZDATA_VERSION: str = importlib.import_module("tzdata").IANA_VERSION

_EPOCH_NAIVE = datetime(1970, 1, 1)  # wall-clock arithmetic is naive on purpose
_KINDS = "exactly one of cron, at, fixed_rate, fixed_delay must be set"
_GAP_POLICIES = frozenset(common_pb2.DstGapPolicy.values())
_FOLD_POLICIES = frozenset(common_pb2.DstFoldPolicy.values())
_JITTER_PERSON = b"cronraft.jitter1"  # BLAKE2b personalisation: change it and every jitter moves


# ---------------------------------------------------------------------------------------------------
# Public API


def validate_schedule(
    schedule: common_pb2.Schedule, *, field: str = "spec.schedule", now_ms: int | None = None
) -> None:
    """Raise `InvalidArgument` naming the offending field (under `field`) if `schedule` is not valid.

    With `now_ms`, also reject a schedule that can never fire at or after `now_ms` (e.g. `end_at_ms` in
    the past). An `at` in the past is valid: it fires as soon as possible. `calendars` and
    `calendar_action` are checked by the calendar module, not here.
    """
    kind = schedule.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(field, _KINDS)
    for name in ("start_at_ms", "end_at_ms", "max_runs", "jitter_ms"):
        if getattr(schedule, name) < 0:
            raise InvalidArgument(f"{field}.{name}", f"must not be negative, got {getattr(schedule, name)}")
    _check_instant(schedule.start_at_ms, f"{field}.start_at_ms")
    _check_instant(schedule.end_at_ms, f"{field}.end_at_ms")
    start, end = schedule.start_at_ms, schedule.end_at_ms
    if start and end and end <= start:
        raise InvalidArgument(f"{field}.end_at_ms", f"must be after start_at_ms ({start}), got {end}")
    _check_dst_policies(schedule, kind, field)

    if kind == "cron":
        _cron_parts(schedule.cron, f"{field}.cron")
    elif kind == "at":
        at = schedule.at.at_ms
        if at <= 0:
            raise InvalidArgument(f"{field}.at.at_ms", f"must be > 0 (Unix milliseconds), got {at}")
        _check_instant(at, f"{field}.at.at_ms")
        if start and at < start:
            raise InvalidArgument(f"{field}.at.at_ms", "is before start_at_ms: the task would never fire")
        if end and at > end:
            raise InvalidArgument(f"{field}.at.at_ms", "is after end_at_ms: the task would never fire")
    elif kind == "fixed_rate":
        rate = schedule.fixed_rate
        if rate.period_ms < MIN_PERIOD_MS:
            raise InvalidArgument(
                f"{field}.fixed_rate.period_ms",
                f"must be at least {MIN_PERIOD_MS} (1 s), got {rate.period_ms}",
            )
        if rate.anchor_ms < 0:
            raise InvalidArgument(
                f"{field}.fixed_rate.anchor_ms", f"must not be negative, got {rate.anchor_ms}"
            )
        _check_instant(rate.anchor_ms, f"{field}.fixed_rate.anchor_ms")
    else:
        delay = schedule.fixed_delay.delay_ms
        if delay < MIN_DELAY_MS:
            raise InvalidArgument(
                f"{field}.fixed_delay.delay_ms", f"must be at least {MIN_DELAY_MS} (1 s), got {delay}"
            )
        if delay > MAX_INSTANT_MS:
            raise InvalidArgument(
                f"{field}.fixed_delay.delay_ms", f"must be at most {MAX_INSTANT_MS}, got {delay}"
            )
    _check_jitter(schedule, kind, field)

    since = max(start, now_ms if now_ms is not None else 0)
    if first_fire(schedule, since, field=field) is None:
        if end and now_ms is not None and end < now_ms:
            raise InvalidArgument(f"{field}.end_at_ms", "is in the past: the task would never fire")
        raise InvalidArgument(field, "never fires between start_at_ms and end_at_ms")


def first_fire(
    schedule: common_pb2.Schedule,
    created_at_ms: int,
    *,
    field: str = "spec.schedule",
    step: CronStep | None = None,
) -> int | None:
    """The nominal time (ms) of the first fire of a task created at `created_at_ms`, or None.

    `at` returns at_ms even when it is in the past; fixed_delay returns max(created_at_ms, start_at_ms);
    cron and fixed_rate return the first fire at or after `created_at_ms` (and at or after start_at_ms).
    None when the window ends before that.
    """
    kind = schedule.WhichOneof("kind")
    if kind == "at":
        at = schedule.at.at_ms
        return at if _in_window(schedule, at) else None
    if kind == "fixed_delay":
        first = max(created_at_ms, schedule.start_at_ms, 0)
        return first if _in_window(schedule, first) else None
    return next_fire(schedule, max(created_at_ms, schedule.start_at_ms) - 1, field=field, step=step)


def cron_step(schedule: common_pb2.Schedule, after_ms: int, *, field: str = "spec.schedule") -> int | None:
    """The cron expression's first instant strictly after `after_ms` in its zone with its DST policies,
    before the window is applied (None: none before year 10000). The only part of `next_fire` that depends
    on the versions a node runs (the evaluator, tzdata: raft.versions), hence the one a leader's plan
    answers for its replicas (raft.answers, `step=`)."""
    template, zone = _cron_parts(schedule.cron, f"{field}.cron")
    second = _cron_next_s(template, zone, after_ms // 1000, _dst_policy(schedule, template))
    return None if second is None else second * 1000


# `cron_step`'s shape: a replacement answers from a plan what it can (raft.answers.Answers.cron_step).
CronStep = Callable[[common_pb2.Schedule, int], int | None]


def next_fire(
    schedule: common_pb2.Schedule,
    after_ms: int,
    *,
    field: str = "spec.schedule",
    step: CronStep | None = None,
) -> int | None:
    """The first nominal time strictly after `after_ms` (normally the previous nominal time), or None
    when there is none (an `at` already due, past end_at_ms, or beyond year 9999). Hot path.

    Always None for fixed_delay: its next nominal time is only known when the current run reaches its
    final state; ask `next_fixed_delay` then. `step`, when given, replaces `cron_step` (a plan's answers,
    raft.answers); it is asked with `after_ms` clamped to the window's start."""
    after_ms = max(after_ms, schedule.start_at_ms - 1, -1)  # F holds no instant before 1970
    if after_ms >= MAX_INSTANT_MS:
        return None
    kind = schedule.WhichOneof("kind")
    nominal: int | None
    if kind == "cron":
        nominal = cron_step(schedule, after_ms, field=field) if step is None else step(schedule, after_ms)
    elif kind == "fixed_rate":
        nominal = _fixed_rate_next(schedule.fixed_rate, after_ms)
    elif kind == "at":
        nominal = schedule.at.at_ms if schedule.at.at_ms > after_ms else None
    elif kind == "fixed_delay":
        return None
    else:
        raise InvalidArgument(field, _KINDS)
    if nominal is None or not _in_window(schedule, nominal):
        return None
    return nominal


def next_fixed_delay(
    schedule: common_pb2.Schedule, finished_at_ms: int, *, succeeded: bool = True
) -> int | None:
    """The nominal time of the next fire of a fixed_delay task whose previous execution reached its final
    state at `finished_at_ms`: finished_at_ms + delay_ms (never before start_at_ms), or None when that is
    after end_at_ms or year 9999, or when the run did not succeed and the schedule has
    `stop_on_failure`. Every final state counts as the end of the run (failed, timed out, lost...)."""
    if schedule.WhichOneof("kind") != "fixed_delay":
        raise InvalidArgument("spec.schedule.fixed_delay", "next_fixed_delay needs a fixed_delay schedule")
    delay = schedule.fixed_delay
    if delay.stop_on_failure and not succeeded:
        return None
    nominal = max(finished_at_ms + delay.delay_ms, schedule.start_at_ms)
    return nominal if _in_window(schedule, nominal) else None


def dst_gap_skips(schedule: common_pb2.Schedule) -> bool:
    """True when a cron schedule's wall times inside a spring-forward gap do not fire: `dst_gap` SKIP,
    or the default for an elapsed-time job (minute or hour field starting with `*`: cronie runs it on
    the new clock only). False for other kinds and when the gap's times are shifted."""
    if schedule.WhichOneof("kind") != "cron":
        return False
    template, _ = _cron_parts(schedule.cron, "spec.schedule.cron")
    return not _dst_policy(schedule, template).shift


def dst_shifted(schedule: common_pb2.Schedule, nominal_ms: int) -> bool:
    """True when `nominal_ms`, a fire of this schedule (as `next_fire` returned it), exists only because
    the gap policy shifted a matching wall time out of a spring-forward gap: it is the first instant
    after a gap that held a matching wall time, and its own wall time does not match. (When its own wall
    time also matches, e.g. 03:00 for `0 2,3 * * *`, it is an ordinary fire that the gap's times merged
    into: False.) Always False for other kinds and when the gap's times are skipped (`dst_gap_skips`)."""
    if schedule.WhichOneof("kind") != "cron" or nominal_ms % 1000:
        return False
    template, zone = _cron_parts(schedule.cron, "spec.schedule.cron")
    if not _dst_policy(schedule, template).shift:
        return False
    if zone is UTC:
        return False
    second = nominal_ms // 1000
    wall = _wall_of(zone, second)
    gap_start = _wall_of(zone, second - 1) + 1
    if gap_start >= wall:  # the wall clock did not jump forward just before this instant
        return False
    if template.next_wall(wall - 1) == wall:
        return False
    candidate = template.next_wall(gap_start - 1)
    return candidate is not None and candidate < wall


def jitter_offset_ms(task_id: str, nominal_ms: int, jitter_ms: int) -> int:
    """The delay in [0, jitter_ms) of the fire (task_id, nominal_ms); 0 when jitter_ms <= 0.

    A pure function of its arguments, stable across processes, Python versions and releases: the first
    8 bytes (big-endian) of BLAKE2b-64 personalised with b"cronraft.jitter1" over
    utf8(task_id) || 0x00 || int64_be(nominal_ms), modulo jitter_ms (bias below 2**-37 for J <= 1 day).
    Never Python's `hash()`, which is salted per process."""
    if jitter_ms <= 0:
        return 0
    message = task_id.encode() + b"\x00" + nominal_ms.to_bytes(8, "big", signed=True)
    digest = hashlib.blake2b(message, digest_size=8, person=_JITTER_PERSON).digest()
    return int.from_bytes(digest, "big") % jitter_ms


# ---------------------------------------------------------------------------------------------------
# Kinds, policies and window


def _in_window(schedule: common_pb2.Schedule, instant_ms: int) -> bool:
    if schedule.start_at_ms and instant_ms < schedule.start_at_ms:
        return False
    if schedule.end_at_ms and instant_ms > schedule.end_at_ms:
        return False
    return 0 <= instant_ms <= MAX_INSTANT_MS


def _fixed_rate_next(rate: common_pb2.FixedRateSchedule, after_ms: int) -> int:
    anchor, period = rate.anchor_ms, rate.period_ms
    if after_ms < anchor:
        return anchor
    return anchor + ((after_ms - anchor) // period + 1) * period


def _check_instant(value_ms: int, field: str) -> None:
    if value_ms > MAX_INSTANT_MS:
        raise InvalidArgument(field, f"must be before year 10000 (at most {MAX_INSTANT_MS}), got {value_ms}")


def _check_dst_policies(schedule: common_pb2.Schedule, kind: str, field: str) -> None:
    for name, known, enum in (
        ("dst_gap", _GAP_POLICIES, common_pb2.DstGapPolicy),
        ("dst_fold", _FOLD_POLICIES, common_pb2.DstFoldPolicy),
    ):
        value = getattr(schedule, name)
        if value not in known:
            raise InvalidArgument(
                f"{field}.{name}", f"unknown policy {value}; use one of {', '.join(enum.keys())}"
            )
        if value and kind != "cron":
            raise InvalidArgument(
                f"{field}.{name}", f"applies to cron schedules only (this one is {kind}); leave it unset"
            )


def _check_jitter(schedule: common_pb2.Schedule, kind: str, field: str) -> None:
    jitter = schedule.jitter_ms
    if jitter > MAX_JITTER_MS:
        raise InvalidArgument(f"{field}.jitter_ms", f"must be at most {MAX_JITTER_MS} (1 day), got {jitter}")
    if kind == "fixed_rate" and jitter and jitter >= schedule.fixed_rate.period_ms:
        raise InvalidArgument(
            f"{field}.jitter_ms",
            f"must be less than fixed_rate.period_ms ({schedule.fixed_rate.period_ms}), got {jitter}",
        )
    if kind == "fixed_delay" and jitter and jitter >= schedule.fixed_delay.delay_ms:
        raise InvalidArgument(
            f"{field}.jitter_ms",
            f"must be less than fixed_delay.delay_ms ({schedule.fixed_delay.delay_ms}), got {jitter}",
        )


@dataclass(frozen=True, slots=True)
class _DstPolicy:
    """What fires around an offset change: `shift` a gap's wall times to the instant after it (else skip
    them); in a fold, fire a wall time's `first` occurrence, its `second` one, or both."""

    shift: bool
    first: bool
    second: bool


# cronie's two kinds of job (cron.c, find_jobs: MIN_STAR | HR_STAR): a fixed-time job's wall times in
# a gap run at its end, and its fold times once; an elapsed-time job follows the new clock: nothing for
# the wall times a gap skips, both passes of a fold.
_FIXED_TIME = _DstPolicy(shift=True, first=True, second=False)
_ELAPSED_TIME = _DstPolicy(shift=False, first=True, second=True)


def _dst_policy(schedule: common_pb2.Schedule, template: _CronTemplate) -> _DstPolicy:
    gap, fold = schedule.dst_gap, schedule.dst_fold
    if gap == common_pb2.DST_GAP_DEFAULT and fold == common_pb2.DST_FOLD_DEFAULT:  # the common case
        return _ELAPSED_TIME if template.elapsed else _FIXED_TIME
    shift = not template.elapsed if gap == common_pb2.DST_GAP_DEFAULT else gap == common_pb2.DST_GAP_SHIFT
    if fold == common_pb2.DST_FOLD_DEFAULT:
        first, second = True, template.elapsed
    else:
        first = fold in (common_pb2.DST_FOLD_FIRST, common_pb2.DST_FOLD_BOTH)
        second = fold in (common_pb2.DST_FOLD_SECOND, common_pb2.DST_FOLD_BOTH)
    return _DstPolicy(shift=shift, first=first, second=second)


# ---------------------------------------------------------------------------------------------------
# Cron: parsing (cached, raft/cron.py) and iteration over naive wall-clock time


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity, a cheap memo key
class _CronTemplate:
    """A parsed expression (one instance per expression text: `_compile` is memoised)."""

    expression: cron.CronExpression
    elapsed: bool  # cronie: the minute or hour field starts with `*` (the job follows elapsed time)

    def next_wall(self, wall_s: int) -> int | None:
        """The first matching wall time (naive epoch seconds) strictly after `wall_s`."""
        return _next_wall(self, wall_s)


# Many tasks share an expression and hence their next nominal times: memoise the step. Pure, so the
# cache cannot make nodes disagree.
@functools.lru_cache(maxsize=65_536)
def _next_wall(template: _CronTemplate, wall_s: int) -> int | None:
    return template.expression.next_after(wall_s)


def _cron_parts(cron: common_pb2.CronSchedule, field: str) -> tuple[_CronTemplate, tzinfo]:
    try:
        template = _compile(cron.expression)
    except ValueError as exc:
        raise InvalidArgument(f"{field}.expression", str(exc)) from None
    try:
        zone = load_zone(cron.time_zone)
    except ValueError as exc:
        raise InvalidArgument(f"{field}.time_zone", str(exc)) from None
    return template, zone


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> _CronTemplate:
    """Parse a 5-field or 6-field (seconds first) expression or a macro; ValueError says what is wrong."""
    parsed = cron.parse(expression)
    return _CronTemplate(parsed, parsed.elapsed)


def _cron_next_s(template: _CronTemplate, zone: tzinfo, after: int, policy: _DstPolicy) -> int | None:
    """The first cron fire (Unix seconds) strictly after `after`, in `zone`, under `policy`.

    Walks matching wall times upwards from the wall time of `after`. Instants grow with wall time except
    inside a fold, where the repeats of the fold's wall times all come after their first occurrences:
    when `after` is in the fold's first pass, the repeats of the wall times already passed are still
    ahead (`pending`); when it is in the second pass, the first occurrences are all behind it."""
    if zone is UTC:
        return template.next_wall(after)
    wall = _wall_of(zone, after)
    first, repeat, _ = _instants_of(zone, wall)
    start, pending = wall, None
    if repeat is not None:  # `after` is inside a fold
        fold_start, fold_end = _fold_bounds(zone, first, repeat)
        if after == first:
            if policy.second:
                candidate = template.next_wall(fold_start - 1)
                if candidate is not None and candidate <= wall:
                    pending = _instants_of(zone, candidate)[1]
        elif not policy.second:
            start = fold_end - 1  # the rest of the fold is a repeat: skip it
    candidate = template.next_wall(start)
    while candidate is not None:
        first, repeat, in_gap = _instants_of(zone, candidate)
        if in_gap and not policy.shift:  # skip every matching wall time of this gap at once
            candidate = template.next_wall(_wall_of(zone, first) - 1)
            continue
        if first > after and (repeat is None or policy.first):
            return first if pending is None else min(first, pending)
        if repeat is not None and policy.second and repeat > after:
            return repeat if pending is None else min(repeat, pending)
        candidate = template.next_wall(candidate)
    return pending


# ---------------------------------------------------------------------------------------------------
# DST seam: how wall time maps to UTC. Wall times are naive epoch seconds: seconds since
# 1970-01-01T00:00 local. The policies (`_DstPolicy`) are applied by `_cron_next_s`, not here.


def _offset_s(moment: datetime) -> int:
    offset = moment.utcoffset()
    assert offset is not None  # aware by construction
    return int(offset.total_seconds())


def _wall_of(zone: tzinfo, instant: int) -> int:
    """The local wall time of a Unix instant (seconds)."""
    return instant + _offset_s(datetime.fromtimestamp(instant, zone))


def _instants_of(zone: tzinfo, wall: int) -> tuple[int, int | None, bool]:
    """(first, repeat, in_gap) for a wall time: its instant; or in a fold the earlier of its two instants
    and the later one as `repeat`; or in a gap (the wall time does not exist) the first instant after
    the gap, with in_gap True."""
    naive = _EPOCH_NAIVE + timedelta(seconds=wall)
    early = wall - _offset_s(naive.replace(tzinfo=zone))
    late = wall - _offset_s(naive.replace(tzinfo=zone, fold=1))
    if early == late:
        return early, None, False
    if early < late:
        return early, late, False
    # PEP 495: in a gap, fold=0 reads the wall time with the offset before the transition (an instant
    # after it) and fold=1 with the offset after it (an instant before it); the transition lies between.
    return _transition_after(zone, late, early), None, True


def _fold_bounds(zone: tzinfo, first: int, repeat: int) -> tuple[int, int]:
    """[start, end) in wall time of the fold holding the wall time whose two instants are given."""
    transition = _transition_after(zone, first, repeat)
    before = _offset_s(datetime.fromtimestamp(first, zone))
    after = _offset_s(datetime.fromtimestamp(transition, zone))
    return transition + after, transition + before


def _transition_after(zone: tzinfo, low: int, high: int) -> int:
    """The first instant in (low, high] whose UTC offset differs from low's (high's does)."""
    base = _offset_s(datetime.fromtimestamp(low, zone))
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_s(datetime.fromtimestamp(middle, zone)) == base:
            low = middle
        else:
            high = middle
    return high
