"""Validation of user input into the replicated state (pure, deterministic).

The leader validates before proposing, so that bad input is answered with INVALID_ARGUMENT without a
Raft round trip; `apply()` validates again with the same code, so that a command that slipped through
(an older leader, a forged entry) is rejected identically on every node instead of corrupting state.
Errors name the offending field as a dotted path (I8).
"""

from __future__ import annotations

import json
import re

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.schedule import validate_schedule

MAX_NAME_LEN = 200
MAX_TAGS = 64
MAX_TAG_LEN = 256
MAX_ARGV = 4096
MAX_ATTEMPTS = 100
MAX_TIMEOUT_MS = 30 * 24 * 3600 * 1000
_HANDLER_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# Enum.values() builds a list on every call; validation runs for every created task on every node.
_DELIVERYGUARANTEE = frozenset(common_pb2.DeliveryGuarantee.values())
_PRIORITY = frozenset(common_pb2.Priority.values())
_MISFIREPOLICY = frozenset(common_pb2.MisfirePolicy.values())
_OVERLAPPOLICY = frozenset(common_pb2.OverlapPolicy.values())
_CALENDARACTION = frozenset(common_pb2.CalendarAction.values())


# Verdicts on specs already found valid, keyed by everything but the name (the spec serialized without
# it). A bulk import creates thousands of tasks that differ only in their names, and each spec is
# validated on the leader and again by apply on every node: that was a third of an import's apply time.
# Validation is a pure function of the spec (no clock, no state), so the memo never changes a verdict;
# only valid specs are remembered, and the memo is bounded.
_VALID: dict[tuple[bytes, int | None], None] = {}
_VALID_MAX = 4_096


def validate_spec(spec: common_pb2.TaskSpec, *, max_payload_bytes: int | None = None) -> None:
    """Raise InvalidArgument naming the first bad field of `spec`."""
    name = spec.name
    if not name.strip():
        raise InvalidArgument("spec.name", "must not be empty")
    if len(name) > MAX_NAME_LEN:
        raise InvalidArgument("spec.name", f"longer than {MAX_NAME_LEN} characters")
    spec.ClearField("name")
    try:
        key = (spec.SerializeToString(deterministic=True), max_payload_bytes)
    finally:
        spec.name = name
    if key in _VALID:
        return
    _validate_unnamed(spec, max_payload_bytes)
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[key] = None


def _validate_unnamed(spec: common_pb2.TaskSpec, max_payload_bytes: int | None) -> None:
    """Every check of `validate_spec` but the name's."""
    if len(spec.tags) > MAX_TAGS:
        raise InvalidArgument("spec.tags", f"more than {MAX_TAGS} tags")
    for k, v in spec.tags.items():
        if not k or len(k) > MAX_TAG_LEN or "\0" in k:
            raise InvalidArgument("spec.tags", f"bad tag key {k!r} (1..{MAX_TAG_LEN} chars, no NUL)")
        if len(v) > MAX_TAG_LEN or "\0" in v:
            raise InvalidArgument(f"spec.tags.{k}", f"value longer than {MAX_TAG_LEN} chars or has NUL")
    if not spec.HasField("schedule"):
        raise InvalidArgument("spec.schedule", "is required")
    validate_schedule(spec.schedule, field="spec.schedule")
    _validate_payload(spec)
    if spec.HasField("sensor"):
        sensor = spec.sensor
        probe = common_pb2.TaskSpec(payload=sensor.probe)
        try:
            _validate_payload(probe)
        except InvalidArgument as e:
            raise InvalidArgument(e.field.replace("spec.payload", "spec.sensor.probe"), e.problem) from None
        if sensor.interval_ms < 0 or (sensor.interval_ms and sensor.interval_ms < 100):
            raise InvalidArgument("spec.sensor.interval_ms", "must be at least 100 ms (0: default 10 s)")
        if sensor.timeout_ms < 0:
            raise InvalidArgument("spec.sensor.timeout_ms", "must not be negative (0: default 1 h)")
    if max_payload_bytes is not None:
        size = spec.payload.ByteSize()
        if size > max_payload_bytes:
            raise InvalidArgument("spec.payload", f"is {size} bytes; the limit is {max_payload_bytes} bytes")
    if spec.queue and not _QUEUE_RE.match(spec.queue):
        raise InvalidArgument(
            "spec.queue", "must be 1..64 characters of [A-Za-z0-9_.-], not starting with a symbol"
        )
    if spec.timeout_ms < 0 or spec.timeout_ms > MAX_TIMEOUT_MS:
        raise InvalidArgument("spec.timeout_ms", f"must be between 0 and {MAX_TIMEOUT_MS}")
    if spec.max_attempts < 0 or spec.max_attempts > MAX_ATTEMPTS:
        raise InvalidArgument("spec.max_attempts", f"must be between 0 and {MAX_ATTEMPTS}")
    if spec.guarantee not in _DELIVERYGUARANTEE:
        raise InvalidArgument("spec.guarantee", f"unknown value {spec.guarantee}")
    if spec.priority not in _PRIORITY:
        raise InvalidArgument("spec.priority", f"unknown value {spec.priority}")
    if spec.misfire not in _MISFIREPOLICY:
        raise InvalidArgument("spec.misfire", f"unknown value {spec.misfire}")
    if spec.overlap not in _OVERLAPPOLICY:
        raise InvalidArgument("spec.overlap", f"unknown value {spec.overlap}")
    if spec.catchup_window_ms < 0:
        raise InvalidArgument("spec.catchup_window_ms", "must not be negative")
    if spec.max_catchup < 0 or spec.max_catchup > 100_000:
        raise InvalidArgument("spec.max_catchup", "must be between 0 and 100000")
    for i, name in enumerate(spec.schedule.calendars):
        if not name:
            raise InvalidArgument(f"spec.schedule.calendars[{i}]", "must not be empty")
    if spec.schedule.calendar_action not in _CALENDARACTION:
        raise InvalidArgument(
            "spec.schedule.calendar_action", f"unknown value {spec.schedule.calendar_action}"
        )


def _validate_payload(spec: common_pb2.TaskSpec) -> None:
    if not spec.HasField("payload"):
        raise InvalidArgument("spec.payload", "is required")
    kind = spec.payload.WhichOneof("kind")
    if kind == "command":
        argv = spec.payload.command.argv
        if not argv:
            raise InvalidArgument("spec.payload.command.argv", "must not be empty")
        if not argv[0]:
            raise InvalidArgument("spec.payload.command.argv", "the program (argv[0]) must not be empty")
        if len(argv) > MAX_ARGV:
            raise InvalidArgument("spec.payload.command.argv", f"more than {MAX_ARGV} arguments")
        for i, a in enumerate(argv):
            if "\0" in a:
                raise InvalidArgument(f"spec.payload.command.argv[{i}]", "contains a NUL byte")
        for k in spec.payload.command.env:
            if not k or "=" in k or "\0" in k:
                raise InvalidArgument("spec.payload.command.env", f"bad variable name {k!r}")
    elif kind == "shell":
        if not spec.payload.shell.script.strip():
            raise InvalidArgument("spec.payload.shell.script", "must not be empty")
        if "\0" in spec.payload.shell.script:
            raise InvalidArgument("spec.payload.shell.script", "contains a NUL byte")
    elif kind == "http":
        _validate_http(spec.payload.http)
    elif kind == "handler":
        h = spec.payload.handler
        if not _HANDLER_RE.match(h.name):
            raise InvalidArgument("spec.payload.handler.name", "must be 1..128 characters of [A-Za-z0-9_.:-]")
        if h.args_json:
            try:
                args = json.loads(h.args_json)
            except ValueError as e:
                raise InvalidArgument("spec.payload.handler.args_json", f"not JSON: {e}") from None
            if not isinstance(args, dict):
                raise InvalidArgument(
                    "spec.payload.handler.args_json", "must be a JSON object (keyword arguments)"
                )
    else:
        raise InvalidArgument("spec.payload", "exactly one of command, shell, http, handler must be set")


def _validate_http(h: common_pb2.HttpPayload) -> None:
    url = h.url
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) <= len("https://"):
        raise InvalidArgument("spec.payload.http.url", "must be an http:// or https:// URL")
    if any(c in url for c in " \r\n\0"):
        raise InvalidArgument("spec.payload.http.url", "must not contain spaces or control characters")
    if h.method and not _TOKEN_RE.match(h.method):
        raise InvalidArgument("spec.payload.http.method", f"not an HTTP method: {h.method!r}")
    for name, value in h.headers.items():
        if not _TOKEN_RE.match(name):
            raise InvalidArgument("spec.payload.http.headers", f"bad header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise InvalidArgument(f"spec.payload.http.headers.{name}", "must not contain line breaks")
    for i, code in enumerate(h.expected_status):
        if not 100 <= code <= 599:
            raise InvalidArgument(
                f"spec.payload.http.expected_status[{i}]", "must be an HTTP status (100..599)"
            )


__all__ = ["validate_spec"]
