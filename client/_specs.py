"""The spec builders of the SDK: Python values -> `Schedule`, `Payload`, `TaskSpec` messages.

`cron`, `at`, `every`, `delay` build schedules (with the window, jitter, DST and calendar options
every kind shares), `command` and `shell` payloads, `build_spec` a whole spec and `edit_spec` a
changed copy of one (`EDITABLE_FIELDS`). They check form only (a duration parses, a datetime is
aware, a cron expression reads); the cluster is the authority on meaning and answers
INVALID_ARGUMENT naming the field. The execution-semantics parts (http and handler payloads, retry,
notify, retention) are built in `_builders`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Unpack

from cronraft.client import _cron_text
from cronraft.client._parsing import (
    Duration,
    Instant,
    duration_ms,
    instant_ms,
    non_negative_int,
    parse_calendar_action,
    parse_dst_fold,
    parse_dst_gap,
    parse_guarantee,
    parse_misfire,
    parse_overlap,
    parse_priority,
)
from cronraft.errors import (
    InvalidArgument,
)
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import check_retry_codes


class Window(TypedDict, total=False):
    """The keyword arguments every schedule builder (`cron`, `at`, `every`, `delay`) takes, all optional:
    the window (`start_at`, `end_at`, `max_runs`, default 0: no limit), `jitter`, the DST policies and
    the calendars (described in `cron`)."""

    start_at: Instant | None
    end_at: Instant | None
    max_runs: int
    jitter: Duration | None
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None
    calendars: Sequence[str] | None
    calendar_action: common_pb2.CalendarAction.ValueType | str | None


_WINDOW_KEYS = frozenset(Window.__annotations__)


def _check_window(builder: str, window: Window) -> None:
    """Refuse a keyword `Window` does not name, as Python refuses one a signature does not name (mypy
    catches it before; `**window` would take it at run time), before any other check."""
    for key in window:
        if key not in _WINDOW_KEYS:
            raise TypeError(f"{builder}() got an unexpected keyword argument {key!r}")


def _window(schedule: common_pb2.Schedule, window: Window) -> None:
    start_at, end_at = window.get("start_at"), window.get("end_at")
    max_runs, jitter = window.get("max_runs", 0), window.get("jitter")
    dst_gap, dst_fold = window.get("dst_gap"), window.get("dst_fold")
    calendars, calendar_action = window.get("calendars"), window.get("calendar_action")
    if start_at is not None:
        schedule.start_at_ms = instant_ms(start_at, "schedule.start_at_ms")
    if end_at is not None:
        schedule.end_at_ms = instant_ms(end_at, "schedule.end_at_ms")
    if max_runs < 0:
        raise InvalidArgument("schedule.max_runs", "must not be negative")
    schedule.max_runs = max_runs
    if jitter is not None:
        jitter_ms = duration_ms(jitter, "schedule.jitter_ms")
        if jitter_ms < 0:
            raise InvalidArgument("schedule.jitter_ms", "must not be negative")
        schedule.jitter_ms = jitter_ms
    if dst_gap is not None:
        schedule.dst_gap = parse_dst_gap(dst_gap)
    if dst_fold is not None:
        schedule.dst_fold = parse_dst_fold(dst_fold)
    if calendars is not None:
        if isinstance(calendars, str):
            calendars = [calendars]
        names = [c.strip() for c in calendars]
        if any(not n for n in names):
            raise InvalidArgument("schedule.calendars", "a calendar name must not be empty")
        del schedule.calendars[:]
        schedule.calendars.extend(names)
    if calendar_action is not None:
        schedule.calendar_action = parse_calendar_action(calendar_action)


def cron(
    expression: str, time_zone: str = "UTC", *, seconds: bool | None = None, **window: Unpack[Window]
) -> common_pb2.Schedule:
    """A cron schedule: 5 fields, or 6 with seconds first, evaluated in the IANA `time_zone`.

    The expression is checked here first (InvalidArgument naming `expression`): a year field
    (`0 9 * * * 2027`) is refused with the window to use instead, and a malformed field is named in
    cron's terms. `seconds=True` / `seconds=False` say which form is meant, and an expression with the
    other number of fields is refused; that catches `"0 9 * * * *"` (one `*` too many, which would fire
    hourly at :09) written where daily at 09:00 was meant. Without it, 6 fields are seconds first.

    The expression and the zone are validated by the cluster (INVALID_ARGUMENT naming
    `spec.schedule.cron.expression` or `spec.schedule.cron.time_zone`). The keyword arguments are those
    of every builder: the window (`start_at`, `end_at`, `max_runs`), `jitter` (fires are delayed by up
    to this, from a hash of task and nominal time), `dst_gap` ("shift" | "skip"), `dst_fold`
    ("first" | "second" | "both"), `calendars` (names of stored calendars) and `calendar_action`
    ("skip" | "roll-following" | "roll-preceding" | "roll-modified-following").
    """
    _check_window("cron", window)
    _cron_text.check_cron(expression, "expression", seconds=seconds)
    schedule = common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expression, time_zone=time_zone))
    _window(schedule, window)
    return schedule


def at(when: Instant, **window: Unpack[Window]) -> common_pb2.Schedule:
    """A one-time schedule at `when`: an aware datetime, an RFC 3339 string or Unix milliseconds."""
    _check_window("at", window)
    schedule = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=instant_ms(when, "schedule.at.at_ms")))
    _window(schedule, window)
    return schedule


def every(period: Duration, anchor: Instant | None = None, **window: Unpack[Window]) -> common_pb2.Schedule:
    """A fixed-rate schedule firing at `anchor + n * period` (anchor: the Unix epoch when None)."""
    _check_window("every", window)
    period_ms = duration_ms(period, "schedule.fixed_rate.period_ms")
    if period_ms <= 0:
        raise InvalidArgument("schedule.fixed_rate.period_ms", "must be positive")
    anchor_ms = 0 if anchor is None else instant_ms(anchor, "schedule.fixed_rate.anchor_ms")
    schedule = common_pb2.Schedule(
        fixed_rate=common_pb2.FixedRateSchedule(period_ms=period_ms, anchor_ms=anchor_ms)
    )
    _window(schedule, window)
    return schedule


def delay(duration: Duration, stop_on_failure: bool = False, **window: Unpack[Window]) -> common_pb2.Schedule:
    """A fixed-delay schedule: each run is due `duration` after the previous run reached its final state
    (every final state counts; with `stop_on_failure` a run that did not succeed completes the task).
    The first run is due at creation (or `start_at`)."""
    _check_window("delay", window)
    delay_ms = duration_ms(duration, "schedule.fixed_delay.delay_ms")
    if delay_ms <= 0:
        raise InvalidArgument("schedule.fixed_delay.delay_ms", "must be positive")
    schedule = common_pb2.Schedule(
        fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=delay_ms, stop_on_failure=stop_on_failure)
    )
    _window(schedule, window)
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
    misfire: common_pb2.MisfirePolicy.ValueType | str | None = None,
    catchup_window: Duration | None = None,
    max_catchup: int = 0,
    overlap: common_pb2.OverlapPolicy.ValueType | str | None = None,
    retry: common_pb2.RetryPolicy | None = None,
    notify: Sequence[common_pb2.NotifyTarget] | None = None,
    worker_labels: Mapping[str, str] | None = None,
    max_concurrency: int = 0,
    retention: common_pb2.Retention | None = None,
) -> common_pb2.TaskSpec:
    """Assemble a `TaskSpec` (the keyword arguments of `Client.create_task`).

    `misfire` ("skip" | "fire-once" | "fire-all"; default: fire-all within the catch-up window),
    `catchup_window` (missed times older than this never fire; default 60 s), `max_catchup` (fire-all
    fires at most this many; default 100), `overlap` ("skip" | "buffer-one" | "buffer-all" |
    "cancel-other" | "terminate-other" | "allow-all"; default allow-all). `retry` comes from
    `retry(...)` (None: the cluster's default backoff), `notify` from `notify_webhook` /
    `notify_command`; a worker must carry every one of `worker_labels`; `max_concurrency` caps the
    executions of the task holding a lease at once (0: no limit). `retention` (from `retention(...)`;
    None: the cluster's defaults) says how long the task's history is kept.
    """
    if max_catchup < 0:
        raise InvalidArgument("spec.max_catchup", "must not be negative")
    catchup_ms = 0 if catchup_window is None else duration_ms(catchup_window, "spec.catchup_window_ms")
    if catchup_ms < 0:
        raise InvalidArgument("spec.catchup_window_ms", "must not be negative")
    spec = common_pb2.TaskSpec(
        name=name,
        tags=dict(tags or {}),
        schedule=schedule,
        payload=payload,
        queue=queue,
        timeout_ms=timeout_ms,
        guarantee=parse_guarantee(guarantee, "spec.guarantee"),
        priority=parse_priority(priority, "spec.priority"),
        max_attempts=max_attempts,
        misfire=parse_misfire(misfire) if misfire is not None else common_pb2.MISFIRE_DEFAULT,
        catchup_window_ms=catchup_ms,
        max_catchup=max_catchup,
        overlap=parse_overlap(overlap) if overlap is not None else common_pb2.OVERLAP_DEFAULT,
    )
    extra = {"retry": retry, "notify": notify, "worker_labels": worker_labels, "retention": retention}
    return edit_spec(spec, {**extra, "max_concurrency": max_concurrency})


EDITABLE_FIELDS = (
    "name",
    "schedule",
    "payload",
    "tags",
    "queue",
    "timeout_ms",
    "guarantee",
    "priority",
    "max_attempts",
    "misfire",
    "catchup_window",
    "max_catchup",
    "overlap",
    "retry",
    "notify",
    "worker_labels",
    "max_concurrency",
    "start_deadline",
    "depends_on",
    "dependency_deadline",
    "sensor",
    "retention",
)
"""The keyword arguments of `edit_task`: those of `create_task` plus the policies."""


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(field, f"expected a mapping of non-empty strings to strings, got {value!r}")
    return dict(value)


def _set_retry(out: common_pb2.TaskSpec, value: Any) -> None:
    if value is None:
        out.ClearField("retry")
    elif isinstance(value, common_pb2.RetryPolicy):
        out.retry.CopyFrom(value)
    else:
        raise InvalidArgument("spec.retry", "expected a RetryPolicy (from retry(...)) or None")


def _set_notify(out: common_pb2.TaskSpec, value: Any) -> None:
    targets = [value] if isinstance(value, common_pb2.NotifyTarget) else list(value or [])
    for i, target in enumerate(targets):
        if not isinstance(target, common_pb2.NotifyTarget) or target.WhichOneof("kind") is None:
            raise InvalidArgument(
                f"spec.notify[{i}]", "expected a NotifyTarget (from notify_webhook or notify_command)"
            )
    del out.notify[:]
    out.notify.extend(targets)


def edit_spec(spec: common_pb2.TaskSpec, changes: Mapping[str, Any]) -> common_pb2.TaskSpec:
    """A copy of `spec` with `changes` applied (keys from `EDITABLE_FIELDS`; values as `create_task`
    takes them). `tags` replaces every tag; `schedule` and `payload` replace the whole message."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise InvalidArgument(
            unknown[0], f"not an editable field (expected one of: {', '.join(EDITABLE_FIELDS)})"
        )
    out = common_pb2.TaskSpec()
    out.CopyFrom(spec)
    for key, value in changes.items():
        field_name = f"spec.{key}"
        if key == "schedule":
            if not isinstance(value, common_pb2.Schedule):
                raise InvalidArgument(field_name, "expected a Schedule (from cron, at, every or delay)")
            out.schedule.CopyFrom(value)
        elif key == "payload":
            if not isinstance(value, common_pb2.Payload):
                raise InvalidArgument(field_name, "expected a Payload (from command, shell, http or handler)")
            out.payload.CopyFrom(value)
        elif key in ("tags", "worker_labels"):
            getattr(out, key).clear()
            getattr(out, key).update(_string_map(value, field_name))
        elif key == "retry":
            _set_retry(out, value)
        elif key == "notify":
            _set_notify(out, value)
        elif key == "max_concurrency":
            out.max_concurrency = non_negative_int(value, field_name)
        elif key == "start_deadline":
            out.start_deadline_ms = duration_ms(value, "spec.start_deadline_ms")
        elif key == "retention":
            if value is None:
                out.ClearField("retention")  # the cluster's defaults
            elif isinstance(value, common_pb2.Retention):
                out.retention.CopyFrom(value)
            else:
                raise InvalidArgument(field_name, "expected a Retention (from retention(...)) or None")
        elif key == "sensor":
            if value is None:
                out.ClearField("sensor")
            elif isinstance(value, common_pb2.Sensor):
                out.sensor.CopyFrom(value)
            else:
                raise InvalidArgument(field_name, "expected a Sensor (or None to remove it)")
        elif key == "dependency_deadline":
            out.dependency_deadline_ms = duration_ms(value, "spec.dependency_deadline_ms")
        elif key == "depends_on":
            del out.depends_on[:]
            for item in value:
                task_id, window = (item, 0) if isinstance(item, str) else item
                out.depends_on.add(
                    task_id=task_id, window_ms=duration_ms(window, "spec.depends_on.window_ms")
                )
        elif key in ("name", "queue"):
            if not isinstance(value, str):
                raise InvalidArgument(field_name, f"expected a string, got {value!r}")
            setattr(out, key, value)
        elif key == "timeout_ms":
            out.timeout_ms = non_negative_int(value, field_name)
        elif key in ("max_attempts", "max_catchup"):
            setattr(out, key, non_negative_int(value, field_name))
        elif key == "catchup_window":
            ms = duration_ms(value, "spec.catchup_window_ms")
            out.catchup_window_ms = non_negative_int(ms, "spec.catchup_window_ms")
        elif key == "guarantee":
            out.guarantee = parse_guarantee(value, field_name)
        elif key == "priority":
            out.priority = parse_priority(value, field_name)
        elif key == "misfire":
            out.misfire = parse_misfire(value, field_name)
        else:  # overlap
            out.overlap = parse_overlap(value, field_name)
    if "retry" in changes or "payload" in changes:
        # An http payload's retry lists hold HTTP statuses, the other kinds' exit codes: checked here
        # with the cluster's own rule, so that a mix-up is named before anything is sent.
        check_retry_codes(out)
    return out
