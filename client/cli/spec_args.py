"""The task flags of `task create` and `task update` (`spec_flags`) read into a payload
(`payload_from_args`) and the other spec fields (`spec_changes`), as `_specs.build_spec` and
`_specs.edit_spec` take them.

Errors are `InvalidArgument` naming the flag, or `UsageError` for a wrong combination; `main`
(`cli/__init__.py`) turns both into exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from typing import Any

from cronraft import timefmt
from cronraft.client import _argnames, _builders, _parsing, _specs
from cronraft.client.cli.common import UsageError, non_negative, parse_pairs
from cronraft.client.cli.spec_flags import PAYLOAD_FLAGS
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = ["named_by_flag", "parse_codes", "payload_from_args", "spec_changes"]

_HTTP_FLAGS = ("http_method", "http_header", "http_body", "http_expect")
_RETRY_FLAGS = {
    "retry_initial": "--retry-initial",
    "retry_multiplier": "--retry-multiplier",
    "retry_max": "--retry-max-backoff",
    "retry_on_exit": "--retry-on-exit",
    "no_retry_on_exit": "--retry-never-on-exit",
    "retry_on_timeout": "--no-retry-on-timeout",
}
# The field a retry error names -> the flag that set it.
_RETRY_FIELD_FLAG = {
    "retry.initial_backoff_ms": "--retry-initial",
    "retry.multiplier": "--retry-multiplier",
    "retry.max_backoff_ms": "--retry-max-backoff",
    "retry.retryable_exit_codes": "--retry-on-exit",
    "retry.non_retryable_exit_codes": "--retry-never-on-exit",
}
_CODES = "neither an exit code (0-255) nor an HTTP status (100-599, or no-response)"
# What an http attempt that got no response reports as its exit code; `no-response` in a retry flag
# (argparse would read "-1,503" as a flag of its own).
_NO_RESPONSE = {"no-response": -1, "-1": -1}
_EVENTS_SUFFIX = re.compile(r"^(?P<target>.*?),events=(?P<events>[A-Za-z_+-]*)$", re.DOTALL)


def parse_codes(
    values: Iterable[str], flag: str, lo: int, hi: int, what: str = "", *, words: dict[str, int] | None = None
) -> list[int]:
    """Integers from repeatable flags, each possibly a comma list ("1,2"). `what`: the range in words,
    for the error ("an exit code (0-255) nor ..."), else `lo..hi`. `words`: names taken for codes
    outside the range ("no-response")."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            if words and part.strip() in words:
                code = words[part.strip()]
                if code not in out:
                    out.append(code)
                continue
            try:
                code = int(part.strip())
            except ValueError:
                raise InvalidArgument(flag, f"expected integers such as 1,2, got {value!r}") from None
            if not lo <= code <= hi:
                problem = f"{code} is {what}" if what else f"{code} is out of range {lo}..{hi}"
                raise InvalidArgument(flag, problem)
            if code not in out:
                out.append(code)
    return out


def _given(args: argparse.Namespace, name: str) -> bool:
    value = getattr(args, name, None)
    return value not in (None, [], False)


# ------------------------------------------------------------------------------------------- payloads


def payload_from_args(
    args: argparse.Namespace, base: common_pb2.Payload | None = None, *, required: bool = True
) -> common_pb2.Payload | None:
    """The payload the flags describe: `-- ARGV`, `--shell -- SCRIPT`, `--http-url URL` (with
    `--http-method`, `--http-header`, `--http-body`, `--http-expect`) or `--handler NAME` (with
    `--handler-args`); exactly one kind. With `base` (update), the modifiers of an http or handler
    payload alone change that payload; None means "unchanged" (and is an error when `required`)."""
    kinds = []
    if args.argv or args.shell:
        kinds.append("--shell -- SCRIPT" if args.shell else "-- ARGV")
    if args.http_url is not None:
        kinds.append("--http-url")
    if args.handler_name is not None:
        kinds.append("--handler")
    if len(kinds) > 1:
        raise UsageError(f"give exactly one payload: {PAYLOAD_FLAGS} (got {' and '.join(kinds)})")
    base_kind = base.WhichOneof("kind") if base is not None else None
    if kinds == ["--http-url"] or (not kinds and base_kind == "http" and _http_modifiers(args)):
        return _http_payload(args, base if not kinds else None)
    if kinds == ["--handler"] or (not kinds and base_kind == "handler" and args.handler_args is not None):
        return _handler_payload(args, base if not kinds else None)
    for name in _HTTP_FLAGS:
        if _given(args, name):
            raise InvalidArgument(f"--{name.replace('_', '-')}", "applies to --http-url only")
    if args.handler_args is not None:
        raise InvalidArgument("--handler-args", "applies to --handler only")
    if args.shell:
        if len(args.argv) != 1:
            raise UsageError(
                f"--shell takes exactly one argument after --, the script (quote it); got {len(args.argv)}"
            )
        return _specs.shell(args.argv[0])
    if args.argv:
        return _specs.command(*args.argv)
    if required:
        raise UsageError(
            "missing command: put its argv after --, e.g. -- echo hello"
            " (or give --shell -- SCRIPT, --http-url URL or --handler NAME)"
        )
    return None


def _http_modifiers(args: argparse.Namespace) -> bool:
    return any(_given(args, name) for name in _HTTP_FLAGS)


def _http_payload(args: argparse.Namespace, base: common_pb2.Payload | None) -> common_pb2.Payload:
    old = base.http if base is not None else common_pb2.HttpPayload()
    headers = dict(old.headers)
    for header in args.http_header:
        pair = _argnames.split_pair(header, "=:")  # KEY=VALUE as every flag, or KEY:VALUE as HTTP
        if pair is None:
            raise InvalidArgument("--http-header", f"expected KEY=VALUE or KEY:VALUE, got {header!r}")
        headers[pair[0]] = pair[1]
    body: bytes = old.body if args.http_body is None else _read_body(args.http_body)
    expected = (
        parse_codes(args.http_expect, "--http-expect", 100, 599)
        if args.http_expect
        else list(old.expected_status)
    )
    url = args.http_url if args.http_url is not None else old.url
    try:
        return _builders.http(
            url,
            method=args.http_method or old.method or "GET",
            headers=headers,
            body=body,
            expected_status=expected,
        )
    except InvalidArgument as exc:
        flag = {"payload.http.method": "--http-method", "payload.http.headers": "--http-header"}
        raise InvalidArgument(flag.get(exc.field, "--http-url"), exc.problem) from None


def _read_body(text: str) -> bytes:
    """--http-body: TEXT, @FILE (a file's bytes), @- (stdin), @@TEXT (TEXT starting with @)."""
    if text.startswith("@@"):
        return text[1:].encode()
    if not text.startswith("@"):
        return text.encode()
    path = text[1:]
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgument("--http-body", f"cannot read {path}: {exc.strerror}") from None


def _handler_payload(args: argparse.Namespace, base: common_pb2.Payload | None) -> common_pb2.Payload:
    old = base.handler if base is not None else common_pb2.HandlerPayload()
    name = args.handler_name if args.handler_name is not None else old.name
    if not name.strip():
        raise InvalidArgument("--handler", "must not be empty")
    if args.handler_args is None:
        args_json = old.args_json
    else:
        args_json = _builders.handler_args_json(args.handler_args, "--handler-args")
    return common_pb2.Payload(handler=common_pb2.HandlerPayload(name=name.strip(), args_json=args_json))


# --------------------------------------------------------------------------------------- spec changes


def spec_changes(args: argparse.Namespace, base: common_pb2.TaskSpec | None = None) -> dict[str, Any]:
    """The spec fields given on the command line (besides name, schedule, payload and tags), as
    `_specs.edit_spec` takes them. `base` is the stored spec of an update (None for a create)."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.queue is not None:
        changes["queue"] = args.queue
    if args.task_timeout is not None:
        changes["timeout_ms"] = timefmt.parse_duration(args.task_timeout, "--exec-timeout")
    if args.guarantee is not None:
        changes["guarantee"] = _parsing.parse_guarantee(args.guarantee, "--guarantee")
    if args.priority is not None:
        changes["priority"] = _parsing.parse_priority(args.priority, "--priority")
    if args.max_attempts is not None:
        changes["max_attempts"] = non_negative(args.max_attempts, "--retry-attempts")
    if args.misfire is not None:
        changes["misfire"] = _parsing.parse_misfire(args.misfire, "--misfire")
    if args.catchup_window is not None:
        changes["catchup_window"] = timefmt.parse_duration(args.catchup_window, "--catchup-window")
    if args.max_catchup is not None:
        changes["max_catchup"] = non_negative(args.max_catchup, "--max-catchup")
    if args.overlap is not None:
        changes["overlap"] = _parsing.parse_overlap(args.overlap, "--overlap")
    if args.max_concurrency is not None:
        changes["max_concurrency"] = non_negative(args.max_concurrency, "--max-concurrency")
    if args.start_deadline is not None:
        changes["start_deadline"] = timefmt.parse_duration(args.start_deadline, "--start-deadline")
    if args.sensor_command is not None:
        import shlex

        argv = shlex.split(args.sensor_command)
        if not argv:
            raise UsageError("--sensor-command: must not be empty")
        changes["sensor"] = common_pb2.Sensor(
            probe=_specs.command(*argv),
            interval_ms=timefmt.parse_duration(args.sensor_interval, "--sensor-interval")
            if args.sensor_interval
            else 0,
            timeout_ms=timefmt.parse_duration(args.sensor_timeout, "--sensor-timeout")
            if args.sensor_timeout
            else 0,
        )
    elif args.sensor_interval is not None or args.sensor_timeout is not None:
        raise UsageError("--sensor-interval/--sensor-timeout: apply to --sensor-command only")
    if args.dependency_deadline is not None:
        changes["dependency_deadline"] = timefmt.parse_duration(
            args.dependency_deadline, "--dependency-deadline"
        )
    if args.depends_on:
        deps = []
        for item in args.depends_on:
            task_id, _, window = item.partition(":")
            deps.append((task_id, timefmt.parse_duration(window, "--depends-on") if window else 0))
        changes["depends_on"] = deps
    _retry_change(args, base, changes)
    _notify_change(args, changes)
    _retention_change(args, base, changes)
    labels = dict(base.worker_labels) if base is not None else {}
    labels.update(parse_pairs(args.worker_label, "--worker-label"))
    for key in getattr(args, "remove_worker_label", []):
        labels.pop(key, None)
    if base is None or labels != dict(base.worker_labels):
        changes["worker_labels"] = labels
    return changes


def _retention_change(
    args: argparse.Namespace, base: common_pb2.TaskSpec | None, changes: dict[str, Any]
) -> None:
    """--keep-executions, --retention, --ended-retention: change only what is given (an update keeps
    the rest of the task's retention); --reset-retention drops it (the cluster's defaults apply)."""
    given = {
        "--keep-executions": args.keep_executions,
        "--retention": args.execution_retention,
        "--ended-retention": args.ended_retention,
    }
    flags = [flag for flag, value in given.items() if value is not None]
    if getattr(args, "reset_retention", False):
        if flags:
            raise UsageError(
                f"--clear-retention drops the task's retention: do not combine it with {flags[0]}"
            )
        changes["retention"] = None
        return
    if not flags:
        return
    out = common_pb2.Retention()
    if base is not None and base.HasField("retention"):
        out.CopyFrom(base.retention)

    def value(text: str, flag: str, duration: bool) -> int:
        if text.strip().lower() == _builders.FOREVER:
            return -1
        if duration:
            n = timefmt.parse_duration(text, flag)
        else:
            try:
                n = int(text)
            except ValueError:
                raise InvalidArgument(
                    flag, f"expected a number or {_builders.FOREVER!r}, got {text!r}"
                ) from None
        if n <= 0:
            raise InvalidArgument(flag, f"must be positive (or {_builders.FOREVER!r}), got {text!r}")
        return n

    if args.keep_executions is not None:
        out.keep_executions = value(args.keep_executions, "--keep-executions", False)
    if args.execution_retention is not None:
        out.execution_max_age_ms = value(args.execution_retention, "--retention", True)
    if args.ended_retention is not None:
        out.ended_task_max_age_ms = value(args.ended_retention, "--ended-retention", True)
    changes["retention"] = out


def _retry_change(
    args: argparse.Namespace, base: common_pb2.TaskSpec | None, changes: dict[str, Any]
) -> None:
    given = [
        flag
        for name, flag in _RETRY_FLAGS.items()
        if _given(args, name) or (name == "retry_on_timeout" and args.retry_on_timeout is not None)
    ]
    if getattr(args, "reset_retry", False):
        if given:
            raise UsageError(f"--clear-retry drops the retry policy: do not combine it with {given[0]}")
        changes["retry"] = None
        return
    if not given:
        return
    old = base.retry if base is not None and base.HasField("retry") else common_pb2.RetryPolicy()
    initial = (
        timefmt.parse_duration(args.retry_initial, "--retry-initial")
        if args.retry_initial is not None
        else old.initial_backoff_ms or 1000
    )
    maximum = (
        timefmt.parse_duration(args.retry_max, "--retry-max-backoff")
        if args.retry_max is not None
        else old.max_backoff_ms or 300_000
    )
    # Exit codes, or HTTP statuses for an http payload: the whole spec checks which (`named_by_flag`).
    yes = (
        parse_codes(args.retry_on_exit, "--retry-on-exit", 0, 599, _CODES, words=_NO_RESPONSE)
        if args.retry_on_exit
        else list(old.retryable_exit_codes)
    )
    no = (
        parse_codes(args.no_retry_on_exit, "--retry-never-on-exit", 0, 599, _CODES, words=_NO_RESPONSE)
        if args.no_retry_on_exit
        else list(old.non_retryable_exit_codes)
    )
    on_timeout = args.retry_on_timeout if args.retry_on_timeout is not None else not old.no_retry_on_timeout
    try:
        changes["retry"] = _builders.retry(
            initial,
            args.retry_multiplier if args.retry_multiplier is not None else old.multiplier or 2.0,
            maximum,
            retryable=yes,
            non_retryable=no,
            retry_on_timeout=on_timeout,
        )
    except InvalidArgument as exc:
        field = exc.field.split("[", 1)[0]
        raise InvalidArgument(_RETRY_FIELD_FLAG.get(field, "--retry-initial"), exc.problem) from None


def named_by_flag(exc: InvalidArgument) -> InvalidArgument:
    """An error of the spec schedctl built, naming the flag that sets the field when it is a retry list
    (`spec.retry.retryable_exit_codes[1]` -> `--retry-on-exit`: the codes do not fit the payload)."""
    field = exc.field.removeprefix("spec.").split("[", 1)[0]
    flag = _RETRY_FIELD_FLAG.get(field)
    return exc if flag is None else InvalidArgument(flag, exc.problem)


def _split_events(value: str, flag: str) -> tuple[str, list[str]]:
    m = _EVENTS_SUFFIX.match(value)
    if m is None:
        return value, []
    events = [e for e in m.group("events").split("+") if e]
    if not events:
        raise InvalidArgument(flag, f"empty events= in {value!r} (expected e.g. events=failure+timeout)")
    return m.group("target"), events


def _notify_change(args: argparse.Namespace, changes: dict[str, Any]) -> None:
    targets: list[common_pb2.NotifyTarget] = []
    for value in args.notify_webhook:
        url, events = _split_events(value, "--notify-webhook")
        try:
            targets.append(_builders.notify_webhook(url, events))
        except InvalidArgument as exc:
            raise InvalidArgument("--notify-webhook", exc.problem) from None
    for value in args.notify_names:
        name, events = _split_events(value, "--notify")
        try:
            targets.append(_builders.notifier(name, events))
        except InvalidArgument as exc:
            raise InvalidArgument("--notify", exc.problem) from None
    if args.notify_command:
        raise InvalidArgument(
            "--notify-command",
            "removed: a task may not make the cluster run a command; use --notify NAME with a notifier "
            "an operator defined in the nodes' config ([notifiers.NAME], docs/notifications.md)",
        )
    no_notify = getattr(args, "no_notify", False)
    if no_notify and targets:
        raise UsageError(
            "--clear-notify removes every notification target: do not combine it with --notify-*"
        )
    if targets or no_notify:
        changes["notify"] = targets
