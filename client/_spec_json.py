"""Task specs read back from JSON: the inverse of `_render.spec_to_json`, free of I/O.

The import format of `schedctl task import` (docs/cli.md, "Import format") is one JSON object per line:
either a task as `schedctl task get/create --output json` prints it (its `spec` is read, the rest is
ignored) or the `spec` object alone. Keys are those of the output; the read is strict (an unknown key is
an error naming it) but lenient in form:

- an instant is `<name>_ms` (Unix ms) or `<name>` (RFC 3339); when both are present, `<name>_ms` wins;
- a `*_ms` duration may also be a duration string ("10s", "1h30m");
- enums are their lower-case names (with `-` or `_`), "default"/"unspecified" (0) or numbers;
- a handler payload takes `args` (an object) or `args_json` (its text); keys may be left out (defaults).

Errors are `InvalidArgument` naming the field as a dotted path from `spec` (e.g. `spec.schedule.at`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from cronraft.client import _builders, _cron_text, _parsing
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = ["spec_from_json", "task_spec_from_json_line"]

_TASK_KEYS = {  # the keys of a task object (task get -o json) besides its spec, read past
    "task_id",
    "namespace",  # shown; the spec's own "namespace" (present unless it is the default) is what counts
    "state",
    "created_at",
    "created_at_ms",
    "updated_at",
    "updated_at_ms",
    "next_fire",
    "next_fire_ms",
    "last_fired_nominal",
    "last_fired_nominal_ms",
    "fire_count",
    "stored_executions",
    "version",
    "pause_note",
    "paused_at",
    "paused_at_ms",
    "next_due",
    "next_due_ms",
    "catchup_fired",
    "last_finished",
    "last_finished_ms",
    "last_outcome",
    "last_execution_id",
    "outcomes",
}


def _obj(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"expected a JSON object, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known(obj: Mapping[str, Any], field: str, keys: set[str]) -> None:
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise InvalidArgument(f"{field}.{unknown[0]}", f"unknown key (expected: {', '.join(sorted(keys))})")


def _str(obj: Mapping[str, Any], key: str, field: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}.{key}", f"expected a string, got {_short(value)}")
    return value


def _int(obj: Mapping[str, Any], key: str, field: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}.{key}", f"expected an integer, got {_short(value)}")
    return value


def _bool(obj: Mapping[str, Any], key: str, field: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"{field}.{key}", f"expected true or false, got {_short(value)}")
    return value


def _duration(obj: Mapping[str, Any], key: str, field: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    ms = _parsing.duration_ms(value, f"{field}.{key}")
    if ms < 0:
        raise InvalidArgument(f"{field}.{key}", "must not be negative")
    return ms


def _instant(obj: Mapping[str, Any], name: str, field: str) -> int:
    """`<name>_ms` (Unix ms) or `<name>` (RFC 3339); 0 when neither is set."""
    ms = obj.get(f"{name}_ms")
    if ms is not None and ms != 0:
        return _parsing.instant_ms(ms, f"{field}.{name}_ms")
    text = obj.get(name)
    if text is None or text == "":
        return 0
    return _parsing.instant_ms(text, f"{field}.{name}")


def _str_list(obj: Mapping[str, Any], key: str, field: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{field}.{key}", f"expected a list of strings, got {_short(value)}")
    return value


def _int_list(obj: Mapping[str, Any], key: str, field: str) -> list[int]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidArgument(f"{field}.{key}", f"expected a list of integers, got {_short(value)}")
    return value


def _map(obj: Mapping[str, Any], key: str, field: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{field}.{key}", f"expected an object of strings, got {_short(value)}")
    return dict(value)


def _enum(obj: Mapping[str, Any], key: str, field: str, parse: Callable[[Any, str], Any]) -> Any:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and value.lower() in ("", "default", "unspecified")):
        return 0
    return parse(value, f"{field}.{key}")


_SCHEDULE_KEYS = {
    "kind",
    "expression",
    "time_zone",
    "at",
    "at_ms",
    "period_ms",
    "anchor",
    "anchor_ms",
    "delay_ms",
    "stop_on_failure",
    "start_at",
    "start_at_ms",
    "end_at",
    "end_at_ms",
    "max_runs",
    "jitter_ms",
    "dst_gap",
    "dst_fold",
    "calendars",
    "calendar_action",
}


def schedule_from_json(value: Any, field: str = "spec.schedule") -> common_pb2.Schedule:
    obj = _obj(value, field)
    _known(obj, field, _SCHEDULE_KEYS)
    kind = obj.get("kind")
    out = common_pb2.Schedule()
    if kind == "cron":
        out.cron.expression = _cron_text.check_cron(_str(obj, "expression", field), f"{field}.expression")
        out.cron.time_zone = _str(obj, "time_zone", field)
    elif kind == "at":
        out.at.at_ms = _instant(obj, "at", field)
    elif kind == "fixed_rate":
        out.fixed_rate.period_ms = _duration(obj, "period_ms", field)
        out.fixed_rate.anchor_ms = _instant(obj, "anchor", field)
    elif kind == "fixed_delay":
        out.fixed_delay.delay_ms = _duration(obj, "delay_ms", field)
        out.fixed_delay.stop_on_failure = _bool(obj, "stop_on_failure", field)
    else:
        raise InvalidArgument(
            f"{field}.kind", f"expected cron, at, fixed_rate or fixed_delay, got {_short(kind)}"
        )
    out.start_at_ms = _instant(obj, "start_at", field)
    out.end_at_ms = _instant(obj, "end_at", field)
    out.max_runs = _int(obj, "max_runs", field)
    out.jitter_ms = _duration(obj, "jitter_ms", field)
    out.dst_gap = _enum(obj, "dst_gap", field, _parsing.parse_dst_gap)
    out.dst_fold = _enum(obj, "dst_fold", field, _parsing.parse_dst_fold)
    out.calendars.extend(_str_list(obj, "calendars", field))
    out.calendar_action = _enum(obj, "calendar_action", field, _parsing.parse_calendar_action)
    return out


def _command(obj: Mapping[str, Any], field: str) -> common_pb2.CommandPayload:
    return common_pb2.CommandPayload(
        argv=_str_list(obj, "argv", field), env=_map(obj, "env", field), cwd=_str(obj, "cwd", field)
    )


_PAYLOAD_KEYS = {
    "command": {"kind", "argv", "env", "cwd"},
    "shell": {"kind", "script"},
    "http": {"kind", "method", "url", "headers", "body", "expected_status"},
    "handler": {"kind", "name", "args", "args_json"},
}


def payload_from_json(value: Any, field: str = "spec.payload") -> common_pb2.Payload:
    obj = _obj(value, field)
    kind = obj.get("kind")
    keys = _PAYLOAD_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise InvalidArgument(
            f"{field}.kind", f"expected command, shell, http or handler, got {_short(kind)}"
        )
    _known(obj, field, keys)
    out = common_pb2.Payload()
    if kind == "command":
        out.command.CopyFrom(_command(obj, f"{field}.command"))
    elif kind == "shell":
        out.shell.script = _str(obj, "script", field)
    elif kind == "http":
        out.http.method = _str(obj, "method", field)
        out.http.url = _str(obj, "url", field)
        out.http.headers.update(_map(obj, "headers", field))
        out.http.body = _str(obj, "body", field).encode()
        out.http.expected_status.extend(_int_list(obj, "expected_status", field))
    else:
        out.handler.name = _str(obj, "name", field)
        args_json = _str(obj, "args_json", field)
        args = obj.get("args")
        if not args_json and args not in (None, {}):
            if not isinstance(args, dict):
                raise InvalidArgument(f"{field}.args", f"expected a JSON object, got {_short(args)}")
            args_json = json.dumps(args, sort_keys=True, allow_nan=False)
        out.handler.args_json = args_json
    return out


def _retry(value: Any, field: str) -> common_pb2.RetryPolicy:
    obj = _obj(value, field)
    _known(
        obj,
        field,
        {
            "initial_backoff_ms",
            "multiplier",
            "max_backoff_ms",
            "retryable_exit_codes",
            "non_retryable_exit_codes",
            "no_retry_on_timeout",
        },
    )
    multiplier = obj.get("multiplier", 0.0)
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
        raise InvalidArgument(f"{field}.multiplier", f"expected a number, got {_short(multiplier)}")
    return common_pb2.RetryPolicy(
        initial_backoff_ms=_duration(obj, "initial_backoff_ms", field),
        multiplier=float(multiplier),
        max_backoff_ms=_duration(obj, "max_backoff_ms", field),
        retryable_exit_codes=_int_list(obj, "retryable_exit_codes", field),
        non_retryable_exit_codes=_int_list(obj, "non_retryable_exit_codes", field),
        no_retry_on_timeout=_bool(obj, "no_retry_on_timeout", field),
    )


def _notify(value: Any, field: str) -> common_pb2.NotifyTarget:
    obj = _obj(value, field)
    kind = obj.get("kind")
    out = common_pb2.NotifyTarget()
    if kind == "webhook":
        _known(obj, field, {"kind", "url", "events"})
        out.webhook_url = _str(obj, "url", field)
    elif kind == "notifier":
        _known(obj, field, {"kind", "name", "events"})
        out.notifier = _str(obj, "name", field)
    elif kind == "command":
        _known(obj, field, {"kind", "argv", "env", "cwd", "events"})
        out.command.CopyFrom(_command(obj, field))
    else:
        raise InvalidArgument(f"{field}.kind", f"expected notifier, webhook or command, got {_short(kind)}")
    for i, event in enumerate(_str_list(obj, "events", field)):
        out.events.append(_builders.parse_notify_event(event, f"{field}.events[{i}]"))
    return out


_SPEC_KEYS = {
    "namespace",
    "name",
    "tags",
    "schedule",
    "payload",
    "queue",
    "timeout_ms",
    "guarantee",
    "priority",
    "max_attempts",
    "misfire",
    "catchup_window_ms",
    "max_catchup",
    "overlap",
    "retry",
    "notify",
    "worker_labels",
    "max_concurrency",
    "start_deadline_ms",
    "depends_on",
    "dependency_deadline_ms",
    "sensor",
    "retention",
}


def spec_from_json(value: Any, field: str = "spec") -> common_pb2.TaskSpec:
    """A `TaskSpec` from the JSON object of `spec_to_json` (see the module docstring)."""
    obj = _obj(value, field)
    _known(obj, field, _SPEC_KEYS)
    if "schedule" not in obj:
        raise InvalidArgument(f"{field}.schedule", "is required")
    if "payload" not in obj:
        raise InvalidArgument(f"{field}.payload", "is required")
    out = common_pb2.TaskSpec(
        namespace=_str(obj, "namespace", field),  # empty: the client's namespace (--namespace)
        name=_str(obj, "name", field),
        tags=_map(obj, "tags", field),
        schedule=schedule_from_json(obj["schedule"], f"{field}.schedule"),
        payload=payload_from_json(obj["payload"], f"{field}.payload"),
        queue=_str(obj, "queue", field),
        timeout_ms=_duration(obj, "timeout_ms", field),
        guarantee=_enum(obj, "guarantee", field, _parsing.parse_guarantee),
        priority=_enum(obj, "priority", field, _parsing.parse_priority),
        max_attempts=_int(obj, "max_attempts", field),
        misfire=_enum(obj, "misfire", field, _parsing.parse_misfire),
        catchup_window_ms=_duration(obj, "catchup_window_ms", field),
        max_catchup=_int(obj, "max_catchup", field),
        overlap=_enum(obj, "overlap", field, _parsing.parse_overlap),
        worker_labels=_map(obj, "worker_labels", field),
        max_concurrency=_int(obj, "max_concurrency", field),
        start_deadline_ms=_duration(obj, "start_deadline_ms", field),
        dependency_deadline_ms=_duration(obj, "dependency_deadline_ms", field),
    )
    if obj.get("retry") is not None:
        out.retry.CopyFrom(_retry(obj["retry"], f"{field}.retry"))
    notify = obj.get("notify") or []
    if not isinstance(notify, list):
        raise InvalidArgument(f"{field}.notify", f"expected a list, got {_short(notify)}")
    out.notify.extend(_notify(n, f"{field}.notify[{i}]") for i, n in enumerate(notify))
    deps = obj.get("depends_on") or []
    if not isinstance(deps, list):
        raise InvalidArgument(f"{field}.depends_on", f"expected a list, got {_short(deps)}")
    for i, dep in enumerate(deps):
        where = f"{field}.depends_on[{i}]"
        d = {"task_id": dep} if isinstance(dep, str) else _obj(dep, where)
        _known(d, where, {"task_id", "window_ms"})
        out.depends_on.add(task_id=_str(d, "task_id", where), window_ms=_duration(d, "window_ms", where))
    if obj.get("sensor") is not None:
        where = f"{field}.sensor"
        sensor = _obj(obj["sensor"], where)
        _known(sensor, where, {"probe", "interval_ms", "timeout_ms"})
        out.sensor.probe.CopyFrom(payload_from_json(sensor.get("probe"), f"{where}.probe"))
        out.sensor.interval_ms = _duration(sensor, "interval_ms", where)
        out.sensor.timeout_ms = _duration(sensor, "timeout_ms", where)
    if obj.get("retention") is not None:
        where = f"{field}.retention"
        kept = _obj(obj["retention"], where)
        _known(kept, where, {"keep_executions", "execution_max_age_ms", "ended_task_max_age_ms"})
        # 0: the cluster's default, -1: no limit (as in the proto), else the limit.
        out.retention.keep_executions = _int(kept, "keep_executions", where)
        for key in ("execution_max_age_ms", "ended_task_max_age_ms"):
            value = kept.get(key)
            ms = -1 if value == -1 else _duration(kept, key, where)
            setattr(out.retention, key, ms)
    return out


def task_spec_from_json_line(line: str, where: str) -> common_pb2.TaskSpec:
    """The spec of one line of an import file: a task object (its `spec`) or a spec object.
    `where` (e.g. "line 12") prefixes the field of any error."""
    try:
        value = json.loads(line)
    except ValueError as e:
        raise InvalidArgument(where, f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(where, f"expected a JSON object, got {_short(value)}")
    if "spec" in value:
        _known(value, where, {*_TASK_KEYS, "spec"})
        value = value["spec"]
    try:
        return spec_from_json(value)
    except InvalidArgument as e:
        raise InvalidArgument(f"{where}: {e.field}", e.problem) from None
