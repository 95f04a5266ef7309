"""Builders of the execution-semantics parts of a task spec, free of I/O: the `http` and `handler`
payload kinds, the `retry` policy and the `notify_webhook` / `notify_command` targets.

Like the schedule builders of `_specs`, they check form only (a URL starts with http:// or https://, a
status code is 100..599, a retry code 0..599, a duration parses) and raise `InvalidArgument` naming the
field; the cluster is the authority on everything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cronraft.client import _parsing
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = [
    "NOTIFY_EVENTS",
    "handler",
    "http",
    "notifier",
    "notify_command",
    "notify_webhook",
    "parse_notify_event",
    "retention",
    "retry",
]

NOTIFY_EVENTS = ("failure", "timeout", "dead-letter", "missed")
"""The names `parse_notify_event` accepts (also with `_`)."""

_parse_event = _parsing._enum_parser(common_pb2.NotifyEvent, "NOTIFY_", "notify event")

NotifyEvents = Iterable[common_pb2.NotifyEvent.ValueType | str]


def parse_notify_event(
    value: common_pb2.NotifyEvent.ValueType | str, field: str = "notify.events"
) -> common_pb2.NotifyEvent.ValueType:
    """An enum value, or "failure" / "timeout" / "dead-letter" / "missed"."""
    return common_pb2.NotifyEvent.ValueType(_parse_event(value, field))


def _events(events: NotifyEvents, field: str) -> list[common_pb2.NotifyEvent.ValueType]:
    if isinstance(events, str):
        events = [events]
    out: list[common_pb2.NotifyEvent.ValueType] = []
    for event in events:
        number = parse_notify_event(event, field)
        if number not in out:
            out.append(number)
    return out


def check_url(url: str, field: str) -> str:
    """An http:// or https:// URL with a host (form only), returned stripped."""
    s = url.strip()
    scheme, sep, rest = s.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise InvalidArgument(field, f"expected an http:// or https:// URL, got {url!r}")
    return s


def _retry_codes(values: Iterable[int], field: str) -> list[int]:
    """A retry list: exit codes (0-255) or HTTP statuses (100-599, and -1: no response), without
    repeats; which of the two the spec's payload takes is checked with the whole spec."""
    out: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgument(f"{field}[{i}]", f"expected an integer, got {v!r}")
        if not -1 <= v <= 599:
            raise InvalidArgument(
                f"{field}[{i}]",
                f"{v} is neither an exit code (0-255) nor an HTTP status (100-599, -1: no response)",
            )
        if v not in out:
            out.append(v)
    return out


def _int_list(values: Iterable[int], field: str, lo: int, hi: int, what: str) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InvalidArgument(field, f"invalid {what} {v!r}: expected {lo}..{hi}")
        if v not in out:
            out.append(v)
    return out


def http(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | str = b"",
    expected_status: Sequence[int] = (),
) -> common_pb2.Payload:
    """An HTTP request made by the worker, e.g. `http("https://example.com/hook", method="POST")`.

    The attempt succeeds when the status is one of `expected_status` (default: any 2xx); the response
    body's tail is the stdout tail. A `str` body is sent as UTF-8.
    """
    verb = method.strip().upper()
    if not verb or not verb.isalpha():
        raise InvalidArgument("payload.http.method", f"expected an HTTP method such as GET, got {method!r}")
    header_map = dict(headers or {})
    for key in header_map:
        if not key.strip() or ":" in key:
            raise InvalidArgument("payload.http.headers", f"invalid header name {key!r}")
    return common_pb2.Payload(
        http=common_pb2.HttpPayload(
            method=verb,
            url=check_url(url, "payload.http.url"),
            headers=header_map,
            body=body.encode() if isinstance(body, str) else bytes(body),
            expected_status=_int_list(
                expected_status, "payload.http.expected_status", 100, 599, "HTTP status"
            ),
        )
    )


def handler(name: str, /, **kwargs: Any) -> common_pb2.Payload:
    """A Python function registered in a worker with `@worker.handler(name)`, called with `kwargs`
    (JSON-encoded here: they must be JSON-serialisable), e.g. `handler("resize", width=640)`."""
    if not name.strip():
        raise InvalidArgument("payload.handler.name", "must not be empty")
    try:
        args_json = json.dumps(kwargs, sort_keys=True, allow_nan=False) if kwargs else ""
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("payload.handler.args_json", f"arguments are not JSON: {exc}") from None
    return common_pb2.Payload(handler=common_pb2.HandlerPayload(name=name.strip(), args_json=args_json))


def handler_args_json(text: str, field: str) -> str:
    """Check that `text` is a JSON object (the keyword arguments of a handler); "" stays ""."""
    if not text.strip():
        return ""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(field, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(field, f"expected a JSON object of keyword arguments, got {text!r}")
    return text


def retry(
    initial: _parsing.Duration = "1s",
    multiplier: float = 2.0,
    max: _parsing.Duration = "5m",
    *,
    retryable: Iterable[int] = (),
    non_retryable: Iterable[int] = (),
    retry_on_timeout: bool = True,
) -> common_pb2.RetryPolicy:
    """A retry policy: the n-th retry waits `min(max, initial * multiplier**(n-1))`, shortened by a
    deterministic jitter of up to 20 % (the same on every node). `retryable`: when given, only these
    exit codes are retried; `non_retryable`: exit codes never retried (e.g. 2 for usage errors);
    `retry_on_timeout=False` makes a timed-out attempt final. How many attempts there are is the task's
    `max_attempts`. An http payload's exit code is its response status: for one, the lists hold HTTP
    statuses (`retryable=[503, 429]`), 100-599; for the other kinds exit codes, 0-255 (checked when the
    spec is built, against its payload).
    """
    initial_ms = _parsing.duration_ms(initial, "retry.initial_backoff_ms")
    if initial_ms <= 0:
        raise InvalidArgument("retry.initial_backoff_ms", "must be positive")
    max_ms = _parsing.duration_ms(max, "retry.max_backoff_ms")
    if max_ms < initial_ms:
        raise InvalidArgument("retry.max_backoff_ms", "must not be less than the initial backoff")
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float) or not multiplier >= 1.0:
        raise InvalidArgument("retry.multiplier", f"must be a number >= 1.0, got {multiplier!r}")
    # Exit codes (0-255) or, for an http payload, HTTP statuses (100-599): the spec checks them against
    # its payload (`_specs.edit_spec`, raft.validate.check_retry_codes).
    yes = _retry_codes(retryable, "retry.retryable_exit_codes")
    no = _retry_codes(non_retryable, "retry.non_retryable_exit_codes")
    both = sorted(set(yes) & set(no))
    if both:
        raise InvalidArgument(
            "retry.non_retryable_exit_codes", f"exit code {both[0]} is also listed as retryable"
        )
    return common_pb2.RetryPolicy(
        initial_backoff_ms=initial_ms,
        multiplier=float(multiplier),
        max_backoff_ms=max_ms,
        retryable_exit_codes=yes,
        non_retryable_exit_codes=no,
        no_retry_on_timeout=not retry_on_timeout,
    )


FOREVER = "forever"


def retention(
    keep_executions: int | str | None = None,
    max_age: _parsing.Duration | None = None,
    ended_task_max_age: _parsing.Duration | None = None,
) -> common_pb2.Retention:
    """How long a task's history is kept, overriding the cluster's `[retention]` defaults
    (docs/operations.md, "Retention"). `keep_executions`: the newest N executions are kept (their
    attempts, logs, dead letters and fire-ledger records with them); `max_age`: an execution is deleted
    this long after it ended; `ended_task_max_age`: the task itself, once completed or cancelled, this
    long after it ended. Each is None for the cluster's default, or "forever" for no limit."""

    def pick(value: Any, field: str, duration: bool) -> int:
        if value is None:
            return 0
        if value == FOREVER:
            return -1
        n = _parsing.duration_ms(value, field) if duration else value
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            what = "a positive duration" if duration else "a positive integer"
            raise InvalidArgument(field, f"expected {what}, {FOREVER!r} or None, got {value!r}")
        return n

    return common_pb2.Retention(
        keep_executions=pick(keep_executions, "retention.keep_executions", False),
        execution_max_age_ms=pick(max_age, "retention.execution_max_age_ms", True),
        ended_task_max_age_ms=pick(ended_task_max_age, "retention.ended_task_max_age_ms", True),
    )


def notify_webhook(url: str, events: NotifyEvents = ()) -> common_pb2.NotifyTarget:
    """An HTTP POST of the notification's JSON body to `url` on `events` ("failure", "timeout",
    "dead-letter", "missed"; none: every event)."""
    return common_pb2.NotifyTarget(
        webhook_url=check_url(url, "notify.webhook_url"), events=_events(events, "notify.events")
    )


# The names [notifiers.NAME] may have (raft.validate.NOTIFIER_NAME; the client does not import raft).
_NOTIFIER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def notifier(name: str, events: NotifyEvents = ()) -> common_pb2.NotifyTarget:
    """The notifier `name` an operator defined in the nodes' config ([notifiers.NAME]: a webhook or a
    command), on `events` (none: every event). A cluster refuses a name its config does not define."""
    if not _NOTIFIER_NAME.match(name):
        raise InvalidArgument("notify.notifier", f"{name!r}: 1-64 characters of [A-Za-z0-9_.-]")
    return common_pb2.NotifyTarget(notifier=name, events=_events(events, "notify.events"))


def notify_command(
    *argv: str, events: NotifyEvents = (), env: Mapping[str, str] | None = None, cwd: str = ""
) -> common_pb2.NotifyTarget:
    """A command run (without a shell) with the notification's JSON body on stdin, on `events`.

    Only a node's config may hold one ([notify] targets, [notifiers.NAME]): a cluster refuses a task
    spec that does (issue 13; name a configured notifier with `notifier(name)` instead). Kept to build
    such targets for tools that write configs, and to read old specs."""
    if not argv or not argv[0].strip():
        raise InvalidArgument("notify.command.argv", "must not be empty")
    return common_pb2.NotifyTarget(
        command=common_pb2.CommandPayload(argv=list(argv), env=dict(env or {}), cwd=cwd),
        events=_events(events, "notify.events"),
    )
