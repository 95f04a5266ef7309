"""What the sync and the asyncio clients share, free of I/O: builders, parsing, routing, errors, JSON.

- Spec builders (`cron`, `at`, `every`, `command`, `shell`, `build_spec`) turn Python values into the
  `cronraft.v1` messages. They check only form (a duration parses, a datetime is aware); the cluster is the
  authority on meaning (a cron expression, a time zone) and answers INVALID_ARGUMENT naming the field.
- `parse_duration` / `parse_instant` read the human forms used by the SDK and `schedctl`.
- `Router` and `CallPlan` decide, for one logical call, which server to try next, when to follow a leader
  redirect, and how long to back off; the clients only perform the I/O the plan asks for.
- `error_from_status` maps a gRPC status to the error tree of `cronraft.errors` (one place).
- `task_to_json`, `execution_to_json`, `status_to_json` are the stable JSON rendering of docs/cli.md.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from cronraft.proto.v1 import cluster_pb2, common_pb2, scheduler_pb2

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "CRONRAFT_SERVER"
LEADER_METADATA_KEY = "cronraft-leader"
MAX_PAGE_SIZE = 1000

Instant: TypeAlias = datetime | str | int
"""An instant: an aware datetime, an RFC 3339 string (see `parse_instant`) or Unix milliseconds."""
Duration: TypeAlias = timedelta | str | int
"""A duration: a timedelta, a string such as "1h30m" (see `parse_duration`) or milliseconds."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------- parsing

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_HINT = "expected a duration such as 500ms, 10s, 5m, 1h, 2d or 1h30m"


def parse_duration(text: str, field: str = "duration") -> int:
    """Parse "500ms", "10s", "5m", "1h", "2d", "1h30m" (or "0") into milliseconds.

    Parts are a number (decimals allowed) and a unit among ms, s, m, h, d, written without spaces.
    The total must be a whole number of milliseconds. Raises `InvalidArgument(field, ...)`.
    """
    s = text.strip()
    if s == "0":
        return 0
    if not s:
        raise InvalidArgument(field, f"empty duration: {_DURATION_HINT}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise InvalidArgument(field, f"invalid duration {text!r}: {_DURATION_HINT}")
        total += Fraction(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if total.denominator != 1:
        raise InvalidArgument(field, f"invalid duration {text!r}: finer than a millisecond")
    return int(total)


_INSTANT = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<off>[Zz]|[+-]\d{2}:\d{2})?"
    r"(?:\[!?(?P<zone>[^\]\s]+)\])?"
)
_INSTANT_HINT = (
    "expected RFC 3339 such as 2025-06-01T09:00:00Z, 2025-06-01T11:00:00+02:00"
    " or 2025-06-01T11:00:00[Europe/Paris]"
)


def parse_instant(text: str, field: str = "instant") -> int:
    """Parse an RFC 3339 instant into Unix milliseconds (POSIX time, fraction truncated to the ms).

    Accepted: `2025-06-01T09:00:00Z`, `...+02:00`, `...-05:30`, fractional seconds, and an RFC 9557 zone
    suffix `[Europe/Paris]`, either after an offset (which must then agree with the zone) or alone, in
    which case the local time is read in that zone (a local time inside a DST gap is rejected; one in a
    DST overlap is the earlier of the two instants). A time without offset or zone is naive and rejected.
    A leap second (second 60) is read as the start of the next second, as POSIX time has no leap seconds.
    """
    m = _INSTANT.fullmatch(text.strip())
    if m is None:
        raise InvalidArgument(field, f"invalid instant {text!r}: {_INSTANT_HINT}")
    off, zone_name = m.group("off"), m.group("zone")
    if off is None and zone_name is None:
        raise InvalidArgument(
            field, f"naive time {text!r}: add Z, an offset such as +02:00, or a zone such as [Europe/Paris]"
        )
    second = int(m.group("s"))
    leap = second == 60
    frac = m.group("frac") or ""
    try:
        naive = datetime(
            int(m.group("y")),
            int(m.group("mo")),
            int(m.group("d")),
            int(m.group("h")),
            int(m.group("mi")),
            59 if leap else second,
            0 if leap else int(frac[:6].ljust(6, "0")),
        )
    except ValueError as exc:
        raise InvalidArgument(field, f"invalid instant {text!r}: {exc}") from None
    zone = _zone(zone_name, field) if zone_name else None
    if off is not None:
        offset = _offset(off, text, field)
        instant = naive.replace(tzinfo=UTC) - offset
        if zone is not None:
            zone_offset = instant.astimezone(zone).utcoffset()
            if zone_offset != offset:
                raise InvalidArgument(
                    field, f"offset {off} in {text!r} does not match {zone_name} ({_fmt_offset(zone_offset)})"
                )
    else:
        assert zone is not None
        local = naive.replace(tzinfo=zone)
        if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
            raise InvalidArgument(field, f"{text!r} does not exist in {zone_name} (skipped by a DST change)")
        instant = local.astimezone(UTC)
    if leap:
        instant += timedelta(seconds=1)
    return (instant - _EPOCH) // _MS


def _zone(name: str, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(field, f"unknown time zone {name!r}") from None


def _offset(off: str, text: str, field: str) -> timedelta:
    if off in ("Z", "z"):
        return timedelta(0)
    hours, minutes = int(off[1:3]), int(off[4:6])
    if hours > 23 or minutes > 59:
        raise InvalidArgument(field, f"invalid offset {off} in {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if off[0] == "-" else delta


def _fmt_offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta(0)).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def instant_ms(value: Instant, field: str = "instant") -> int:
    """Unix milliseconds of an aware datetime, an RFC 3339 string or an int (already milliseconds)."""
    if isinstance(value, bool):
        raise InvalidArgument(field, "expected a datetime, an RFC 3339 string or Unix milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_instant(value, field)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(field, "naive datetime: give it a tzinfo (e.g. datetime.now(UTC))")
        return (value - _EPOCH) // _MS
    raise InvalidArgument(
        field, f"expected a datetime, an RFC 3339 string or Unix milliseconds, got {value!r}"
    )


def duration_ms(value: Duration, field: str = "duration") -> int:
    """Milliseconds of a timedelta, a duration string (see `parse_duration`) or an int (milliseconds)."""
    if isinstance(value, bool):
        raise InvalidArgument(field, "expected a timedelta, a duration string or milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_duration(value, field)
    if isinstance(value, timedelta):
        return value // _MS
    raise InvalidArgument(field, f"expected a timedelta, a duration string or milliseconds, got {value!r}")


def format_instant(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2025-06-01T09:00:00.000Z."""
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_servers(servers: str | Sequence[str] | None) -> list[str]:
    """Normalise `servers` ("h:p", "h:p,h:p" or a list) into a list; None reads $CRONRAFT_SERVER."""
    if servers is None:
        servers = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    parts = servers.split(",") if isinstance(servers, str) else [p for s in servers for p in s.split(",")]
    result = [p.strip() for p in parts if p.strip()]
    if not result:
        raise InvalidArgument("servers", "no server address given (expected HOST:PORT[,HOST:PORT...])")
    return result


# ------------------------------------------------------------------------------------------------ enums


def _enum_parser(wrapper: Any, prefix: str, what: str) -> Callable[[Any, str], Any]:
    by_name: dict[str, int] = {}
    for name, number in wrapper.items():
        if number == 0:
            continue
        short = name.removeprefix(prefix).lower()
        by_name[short] = number
        by_name[short.replace("_", "-")] = number

    def parse(value: Any, field: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in by_name:
            return by_name[value.strip().lower()]
        choices = ", ".join(sorted(k for k in by_name if "_" not in k))
        raise InvalidArgument(field, f"unknown {what} {value!r} (expected one of: {choices})")

    return parse


_parse_guarantee = _enum_parser(common_pb2.DeliveryGuarantee, "", "guarantee")
_parse_priority = _enum_parser(common_pb2.Priority, "", "priority")
_parse_task_state = _enum_parser(common_pb2.TaskState, "TASK_", "task state")
_parse_execution_state = _enum_parser(common_pb2.ExecutionState, "EXECUTION_", "execution state")


def parse_guarantee(
    value: common_pb2.DeliveryGuarantee.ValueType | str, field: str = "guarantee"
) -> common_pb2.DeliveryGuarantee.ValueType:
    """An enum value, or a name such as "at-least-once" / "exactly_once" / "at-most-once"."""
    return common_pb2.DeliveryGuarantee.ValueType(_parse_guarantee(value, field))


def parse_priority(
    value: common_pb2.Priority.ValueType | str, field: str = "priority"
) -> common_pb2.Priority.ValueType:
    """An enum value, or "high" / "medium" / "low"."""
    return common_pb2.Priority.ValueType(_parse_priority(value, field))


def parse_task_state(
    value: common_pb2.TaskState.ValueType | str | None, field: str = "state"
) -> common_pb2.TaskState.ValueType:
    """None (any state), an enum value, or "scheduled" / "completed" / "cancelled"."""
    if value is None:
        return common_pb2.TASK_STATE_UNSPECIFIED
    return common_pb2.TaskState.ValueType(_parse_task_state(value, field))


def parse_execution_state(
    value: common_pb2.ExecutionState.ValueType | str | None, field: str = "state"
) -> common_pb2.ExecutionState.ValueType:
    """None (any state), an enum value, or "pending" / "running" / "succeeded" / "failed" / ..."""
    if value is None:
        return common_pb2.EXECUTION_STATE_UNSPECIFIED
    return common_pb2.ExecutionState.ValueType(_parse_execution_state(value, field))


def enum_name(wrapper: Any, number: int, prefix: str = "") -> str:
    """Lower-case enum name without `prefix` ("TASK_SCHEDULED" -> "scheduled"); "unspecified" for 0,
    "unknown_<n>" for a value this client does not know (a newer server)."""
    if number == 0:
        return "unspecified"
    try:
        name: str = wrapper.Name(number)
    except ValueError:
        return f"unknown_{number}"
    return name.removeprefix(prefix).lower()


# --------------------------------------------------------------------------------------------- builders


def _window(
    schedule: common_pb2.Schedule, start_at: Instant | None, end_at: Instant | None, max_runs: int
) -> None:
    if start_at is not None:
        schedule.start_at_ms = instant_ms(start_at, "schedule.start_at_ms")
    if end_at is not None:
        schedule.end_at_ms = instant_ms(end_at, "schedule.end_at_ms")
    if max_runs < 0:
        raise InvalidArgument("schedule.max_runs", "must not be negative")
    schedule.max_runs = max_runs


def cron(
    expression: str,
    time_zone: str = "UTC",
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
) -> common_pb2.Schedule:
    """A cron schedule: 5 fields, or 6 with seconds first, evaluated in the IANA `time_zone`.

    The expression and the zone are validated by the cluster (INVALID_ARGUMENT naming
    `spec.schedule.cron.expression` or `spec.schedule.cron.time_zone`).
    """
    schedule = common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expression, time_zone=time_zone))
    _window(schedule, start_at, end_at, max_runs)
    return schedule


def at(
    when: Instant,
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
) -> common_pb2.Schedule:
    """A one-time schedule at `when`: an aware datetime, an RFC 3339 string or Unix milliseconds."""
    schedule = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=instant_ms(when, "schedule.at.at_ms")))
    _window(schedule, start_at, end_at, max_runs)
    return schedule


def every(
    period: Duration,
    anchor: Instant | None = None,
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
) -> common_pb2.Schedule:
    """A fixed-rate schedule firing at `anchor + n * period` (anchor: the Unix epoch when None)."""
    period_ms = duration_ms(period, "schedule.fixed_rate.period_ms")
    if period_ms <= 0:
        raise InvalidArgument("schedule.fixed_rate.period_ms", "must be positive")
    anchor_ms = 0 if anchor is None else instant_ms(anchor, "schedule.fixed_rate.anchor_ms")
    schedule = common_pb2.Schedule(
        fixed_rate=common_pb2.FixedRateSchedule(period_ms=period_ms, anchor_ms=anchor_ms)
    )
    _window(schedule, start_at, end_at, max_runs)
    return schedule


def command(*argv: str, env: Mapping[str, str] | None = None, cwd: str = "") -> common_pb2.Payload:
    """An argv list run without a shell, e.g. `command("echo", "hello")`."""
    if not argv:
        raise InvalidArgument("payload.command.argv", "must not be empty")
    return common_pb2.Payload(
        command=common_pb2.CommandPayload(argv=list(argv), env=dict(env or {}), cwd=cwd)
    )


def shell(script: str) -> common_pb2.Payload:
    """A shell string run by `/bin/sh -c`: an explicit opt-in (prefer `command`)."""
    if not script.strip():
        raise InvalidArgument("payload.shell.script", "must not be empty")
    return common_pb2.Payload(shell=common_pb2.ShellPayload(script=script))


def build_spec(
    name: str,
    schedule: common_pb2.Schedule,
    payload: common_pb2.Payload,
    *,
    tags: Mapping[str, str] | None = None,
    queue: str = "",
    timeout_ms: int = 0,
    guarantee: common_pb2.DeliveryGuarantee.ValueType | str = common_pb2.AT_LEAST_ONCE,
    priority: common_pb2.Priority.ValueType | str = common_pb2.MEDIUM,
    max_attempts: int = 0,
) -> common_pb2.TaskSpec:
    """Assemble a `TaskSpec` (the keyword arguments of `Client.create_task`)."""
    return common_pb2.TaskSpec(
        name=name,
        tags=dict(tags or {}),
        schedule=schedule,
        payload=payload,
        queue=queue,
        timeout_ms=timeout_ms,
        guarantee=parse_guarantee(guarantee, "spec.guarantee"),
        priority=parse_priority(priority, "spec.priority"),
        max_attempts=max_attempts,
    )


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (reused by every retry of that write)."""
    return uuid.uuid4().hex


def clamp_page_size(page_size: int) -> int:
    """Page sizes are 1..1000 (the server's bounds)."""
    return max(1, min(MAX_PAGE_SIZE, page_size))


def list_tasks_request(
    state: common_pb2.TaskState.ValueType | str | None,
    tags: Mapping[str, str] | None,
    name_prefix: str,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListTasksRequest:
    return scheduler_pb2.ListTasksRequest(
        state=parse_task_state(state),
        tags=dict(tags or {}),
        name_prefix=name_prefix,
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


def list_executions_request(
    task_id: str,
    state: common_pb2.ExecutionState.ValueType | str | None,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListExecutionsRequest:
    return scheduler_pb2.ListExecutionsRequest(
        task_id=task_id,
        state=parse_execution_state(state),
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


# ------------------------------------------------------------------------------------------------ errors


def error_from_status(code_name: str, details: str | None) -> CronraftError:
    """Map a gRPC status (code by name, e.g. "NOT_FOUND") to the error tree of `cronraft.errors`.

    INVALID_ARGUMENT details read "field: problem" (split on the first ": "); without one, the field is
    "request".
    """
    message = details or code_name.lower()
    if code_name == "INVALID_ARGUMENT":
        field_name, sep, problem = message.partition(": ")
        if not sep or not field_name or " " in field_name:
            return InvalidArgument("request", message)
        return InvalidArgument(field_name, problem)
    classes: dict[str, type[CronraftError]] = {
        "NOT_FOUND": NotFound,
        "FAILED_PRECONDITION": FailedPrecondition,
        "RESOURCE_EXHAUSTED": ResourceExhausted,
        "UNAVAILABLE": Unavailable,
        "DEADLINE_EXCEEDED": DeadlineExceeded,
    }
    cls = classes.get(code_name)
    if cls is None:
        return CronraftError(f"{code_name.lower()}: {message}")
    return cls(message)


def leader_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The leader address a follower put in the trailing metadata, or None if absent or empty."""
    for key, value in metadata or ():
        if key.lower() == LEADER_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return text.strip() or None
    return None


# ----------------------------------------------------------------------------------------------- routing


RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class Router:
    """Where a client sends its calls; shared by all the calls of one client. Its two fields are plain
    hints written without a lock: a lost update between threads costs at most one extra redirect.

    Writes go to the leader when one is known, else to the servers in turn. Reads go to the server that
    answered last (any node can serve them), else to the servers in turn.
    """

    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)
        self.leader: str | None = None
        self.preferred = 0  # index into servers for reads / leader discovery

    def first(self, write: bool) -> str:
        if write and self.leader:
            return self.leader
        return self.servers[self.preferred % len(self.servers)]

    def succeeded(self, address: str, write: bool) -> None:
        if write:
            self.leader = address
        if address in self.servers:
            self.preferred = self.servers.index(address)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (0.5x to 1x of the step)."""

    initial_s: float = 0.05
    cap_s: float = 1.0
    multiplier: float = 2.0
    rand: Callable[[], float] = random.random
    _step: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._step = self.initial_s if self._step == 0 else min(self.cap_s, self._step * self.multiplier)
        return self._step * (0.5 + 0.5 * self.rand())


@dataclass
class Failure:
    address: str
    code_name: str
    details: str


class CallPlan:
    """The retry plan of one logical call: which address next, how long to wait, when to give up.

    The caller loops: `address = plan.address`, perform the RPC with `plan.attempt_timeout()`; on success
    `plan.succeeded()`; on a gRPC error `delay = plan.failed(code, details, leader)` and sleep `delay`
    then try again, or raise `plan.give_up_error()` when `delay` is None.

    - A redirect (UNAVAILABLE with a leader address) is followed at once, at most `max_redirects` times.
    - UNAVAILABLE / DEADLINE_EXCEEDED move to the next configured server; after a full round over them,
      the plan backs off. The total is bounded by `timeout_s`.
    - Any other status is final: `failed` returns None and `give_up_error` maps it.
    """

    def __init__(
        self,
        router: Router,
        *,
        write: bool,
        timeout_s: float,
        attempt_timeout_s: float | None = None,
        max_redirects: int = 5,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self.router = router
        self.write = write
        self.clock = clock
        self.deadline = clock() + timeout_s
        self.attempt_timeout_s = (
            attempt_timeout_s if attempt_timeout_s is not None else max(timeout_s / 2, 0.1)
        )
        self.max_redirects = max_redirects
        self.redirects_left = max_redirects
        self.backoff = backoff or Backoff()
        self.address = router.first(write)
        self.failures: list[Failure] = []
        self._final: Failure | None = None
        self._tried_in_round: set[str] = set()
        self._index = router.preferred

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def attempt_timeout(self) -> float:
        return max(0.001, min(self.remaining(), self.attempt_timeout_s))

    def succeeded(self) -> None:
        self.router.succeeded(self.address, self.write)

    def failed(self, code_name: str, details: str, leader: str | None) -> float | None:
        """Record a failed attempt; return the delay before the next one, or None to give up."""
        failure = Failure(self.address, code_name, details)
        self.failures.append(failure)
        if code_name not in RETRYABLE:
            self._final = failure
            return None
        self._tried_in_round.add(self.address)
        if code_name == "UNAVAILABLE" and leader and leader != self.address and self.redirects_left > 0:
            self.redirects_left -= 1
            self.router.leader = leader
            self.address = leader
            return 0.0 if self.remaining() > 0 else None
        if self.router.leader == self.address:
            self.router.leader = None  # the leader we knew is gone or deposed: rediscover
        delay = 0.0
        nxt = self._next_server()
        if nxt is None:  # every server failed in this round: back off, then start a new round
            self._tried_in_round.clear()
            self.redirects_left = self.max_redirects
            nxt = self._next_server()
            delay = self.backoff.next()
        assert nxt is not None
        self.address = nxt
        if self.remaining() - delay <= 0.001:
            return None
        return delay

    def _next_server(self) -> str | None:
        servers = self.router.servers
        for _ in range(len(servers)):
            self._index = (self._index + 1) % len(servers)
            candidate = servers[self._index]
            if candidate not in self._tried_in_round:
                return candidate
        return None

    def give_up_error(self, request_id: str | None = None) -> CronraftError:
        """The error to raise once `failed` returned None."""
        if self._final is not None:
            return error_from_status(self._final.code_name, self._final.details)
        last = self.failures[-1] if self.failures else Failure(self.address, "UNAVAILABLE", "no attempt made")
        tried = ", ".join(dict.fromkeys(f.address for f in self.failures)) or self.address
        outcome = ""
        if self.write and request_id and any(f.code_name == "DEADLINE_EXCEEDED" for f in self.failures):
            outcome = f"; the outcome is unknown: retrying with request_id={request_id} is safe"
        if last.code_name == "DEADLINE_EXCEEDED":
            return DeadlineExceeded(f"deadline exceeded (tried {tried}): {last.details}{outcome}")
        return Unavailable(f"cluster unavailable (tried {tried}): {last.details}{outcome}")


# ------------------------------------------------------------------------------------------------- JSON


def _time_fields(out: dict[str, Any], name: str, ms: int) -> None:
    out[f"{name}_ms"] = ms
    out[name] = format_instant(ms) if ms else None


def schedule_to_json(schedule: common_pb2.Schedule) -> dict[str, Any]:
    kind = schedule.WhichOneof("kind")
    out: dict[str, Any] = {"kind": kind}
    if kind == "cron":
        out["expression"] = schedule.cron.expression
        out["time_zone"] = schedule.cron.time_zone
    elif kind == "at":
        _time_fields(out, "at", schedule.at.at_ms)
    elif kind == "fixed_rate":
        out["period_ms"] = schedule.fixed_rate.period_ms
        _time_fields(out, "anchor", schedule.fixed_rate.anchor_ms)
    elif kind == "fixed_delay":
        out["delay_ms"] = schedule.fixed_delay.delay_ms
    _time_fields(out, "start_at", schedule.start_at_ms)
    _time_fields(out, "end_at", schedule.end_at_ms)
    out["max_runs"] = schedule.max_runs
    out["jitter_ms"] = schedule.jitter_ms
    return out


def payload_to_json(payload: common_pb2.Payload) -> dict[str, Any]:
    kind = payload.WhichOneof("kind")
    if kind == "command":
        return {
            "kind": "command",
            "argv": list(payload.command.argv),
            "env": dict(sorted(payload.command.env.items())),
            "cwd": payload.command.cwd,
        }
    if kind == "shell":
        return {"kind": "shell", "script": payload.shell.script}
    return {"kind": None}


def spec_to_json(spec: common_pb2.TaskSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "tags": dict(sorted(spec.tags.items())),
        "schedule": schedule_to_json(spec.schedule),
        "payload": payload_to_json(spec.payload),
        "queue": spec.queue,
        "timeout_ms": spec.timeout_ms,
        "guarantee": enum_name(common_pb2.DeliveryGuarantee, spec.guarantee),
        "priority": enum_name(common_pb2.Priority, spec.priority),
        "max_attempts": spec.max_attempts,
    }


def task_to_json(task: common_pb2.Task) -> dict[str, Any]:
    """The JSON object of a task (docs/cli.md, "Task")."""
    out: dict[str, Any] = {
        "task_id": task.task_id,
        "state": enum_name(common_pb2.TaskState, task.state, "TASK_"),
        "spec": spec_to_json(task.spec),
    }
    _time_fields(out, "created_at", task.created_at_ms)
    _time_fields(out, "updated_at", task.updated_at_ms)
    _time_fields(out, "next_fire", task.next_fire_ms)
    _time_fields(out, "last_fired_nominal", task.last_fired_nominal_ms)
    out["fire_count"] = task.fire_count
    out["version"] = task.version
    return out


def tail_text(data: bytes) -> str:
    """Output tails as text: UTF-8, invalid bytes replaced by U+FFFD."""
    return data.decode("utf-8", errors="replace")


def execution_to_json(execution: common_pb2.Execution) -> dict[str, Any]:
    """The JSON object of an execution (docs/cli.md, "Execution")."""
    out: dict[str, Any] = {
        "execution_id": execution.execution_id,
        "task_id": execution.task_id,
        "state": enum_name(common_pb2.ExecutionState, execution.state, "EXECUTION_"),
    }
    _time_fields(out, "nominal_time", execution.nominal_time_ms)
    _time_fields(out, "fired_at", execution.fired_at_ms)
    out["attempt"] = execution.attempt
    out["worker_id"] = execution.worker_id
    out["token"] = (
        {"term": execution.token.term, "index": execution.token.index}
        if execution.HasField("token")
        else None
    )
    _time_fields(out, "leased_at", execution.leased_at_ms)
    _time_fields(out, "started_at", execution.started_at_ms)
    _time_fields(out, "finished_at", execution.finished_at_ms)
    _time_fields(out, "completed_at", execution.completed_at_ms)
    out["exit_code"] = execution.exit_code
    out["stdout_tail"] = tail_text(execution.stdout_tail)
    out["stderr_tail"] = tail_text(execution.stderr_tail)
    out["error"] = execution.error
    out["guarantee"] = enum_name(common_pb2.DeliveryGuarantee, execution.guarantee)
    out["priority"] = enum_name(common_pb2.Priority, execution.priority)
    return out


def status_to_json(status: cluster_pb2.StatusResponse) -> dict[str, Any]:
    """The JSON object of `cluster status` (docs/cli.md, "Cluster status")."""
    return {
        "node_id": status.node_id,
        "is_leader": status.is_leader,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "term": status.term,
        "epoch_term": status.epoch_term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "ready": status.ready,
        "connected_workers": status.connected_workers,
        "members": [
            {
                "node_id": m.node_id,
                "raft_address": m.raft_address,
                "grpc_address": m.grpc_address,
                "connected": m.connected,
            }
            for m in status.members
        ],
    }
