"""Validation of user input into the replicated state (pure, deterministic).

The leader validates before proposing, so that bad input is answered with INVALID_ARGUMENT without a
Raft round trip; `apply()` validates again with the same code, so that a command that slipped through
(an older leader, a forged entry) is rejected identically on every node instead of corrupting state.
Errors name the offending field as a dotted path (I8).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from urllib.parse import urlsplit

from cronraft.bounds import DEFAULT_NAMESPACE, MAX_CALENDAR_NAME, MAX_NAMESPACE, NAMESPACE_PATTERN
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.schedule import validate_schedule

MAX_NAME_LEN = 200
MAX_TAGS = 64
MAX_TAG_LEN = 256
MAX_ARGV = 4096
MAX_ENV = 1024  # variables of a command payload
MAX_CWD = 4096  # characters of a working directory (PATH_MAX)
MAX_HTTP_URL = 8192
MAX_HTTP_HEADERS = 100
MAX_EXPECTED_STATUS = 100
MAX_JSON_DEPTH = 64  # nesting of a handler's args_json (checked without recursion before it is parsed)
MAX_LABELS = 64  # spec.worker_labels pairs (keys and values as tags)
MAX_TASK_CALENDARS = 16  # spec.schedule.calendars
MAX_EXIT_CODES = 256  # each exit-code list of a retry policy
MAX_MULTIPLIER = 100.0  # retry.multiplier
MAX_ATTEMPTS = 100
MAX_TIMEOUT_MS = 30 * 24 * 3600 * 1000
MAX_SENSOR_INTERVAL_MS = 24 * 3600 * 1000
# The payload and the sensor's probe together are at most `max_payload_bytes` (scheduler config, 64 KiB
# by default): the leader checks the configured value; the state machine, which reads no configuration,
# the ceiling the configuration accepts.
MAX_PAYLOAD_CEILING = 4 * 1024 * 1024
# Notification targets (also the global [notify] list of the config).
MAX_TARGETS = 16
MAX_URL_LENGTH = 2048
MAX_NOTIFY_ARGV = 256
MAX_NOTIFY_ENV = 64
MAX_NOTIFY_COMMAND_BYTES = 16 * 1024  # a notify command, serialized (argv, env, cwd)
MAX_NOTIFY_EVENTS = 8
NOTIFIER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # [notifiers.NAME] of the config
_NOTIFY_EVENTS = frozenset(common_pb2.NotifyEvent.values()) - {common_pb2.NOTIFY_EVENT_UNSPECIFIED}
_CALENDAR_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_CALENDAR_NAME}}}")
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
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
_VALID: dict[tuple[bytes, int], None] = {}
_VALID_MAX = 4_096


def validate_spec(spec: common_pb2.TaskSpec, *, max_payload_bytes: int = MAX_PAYLOAD_CEILING) -> None:
    """Raise InvalidArgument naming the first bad field of `spec`. The leader passes its configured
    `max_payload_bytes`; the state machine keeps the default, the largest value a config accepts."""
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


def check_namespace(namespace: str, field: str) -> str:
    """Raise InvalidArgument unless `namespace` is empty (the default one) or a namespace name; return
    its stored form: "" for the default namespace (also when spelled "default"), else the name."""
    if namespace and not _NAMESPACE.fullmatch(namespace):
        raise InvalidArgument(
            field,
            f"{namespace[: MAX_NAMESPACE + 1]!r} is not a namespace: 1 to {MAX_NAMESPACE} characters of "
            "a-z 0-9 and -, starting with a letter or digit (empty: default)",
        )
    return stored_namespace(namespace)


def stored_namespace(namespace: str) -> str:
    """The stored form of a (valid) namespace: "" for the default one, however spelled."""
    return "" if namespace == DEFAULT_NAMESPACE else namespace


def namespace_name(namespace: str) -> str:
    """The name shown for a stored namespace: "default" for the empty one."""
    return namespace or DEFAULT_NAMESPACE


def _validate_unnamed(spec: common_pb2.TaskSpec, max_payload_bytes: int) -> None:
    """Every check of `validate_spec` but the name's."""
    check_namespace(spec.namespace, "spec.namespace")
    _validate_pairs(spec.tags, "spec.tags", MAX_TAGS, "tags")
    _validate_pairs(spec.worker_labels, "spec.worker_labels", MAX_LABELS, "labels")
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
        if sensor.interval_ms > MAX_SENSOR_INTERVAL_MS:
            raise InvalidArgument(
                "spec.sensor.interval_ms", f"must be at most {MAX_SENSOR_INTERVAL_MS} (a day)"
            )
        if not 0 <= sensor.timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidArgument(
                "spec.sensor.timeout_ms", f"must be between 0 (default 1 h) and {MAX_TIMEOUT_MS} (30 days)"
            )
    size = spec.payload.ByteSize() + (spec.sensor.probe.ByteSize() if spec.HasField("sensor") else 0)
    if size > max_payload_bytes:
        what = " with the sensor's probe" if spec.HasField("sensor") else ""
        raise InvalidArgument(
            "spec.payload",
            f"is {size} bytes{what}; the limit is {max_payload_bytes} bytes (scheduler.max_payload_bytes)",
        )
    _validate_retry(spec.retry)
    validate_targets(spec.notify, "spec.notify")
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
    for name in ("max_concurrency", "start_deadline_ms", "dependency_deadline_ms"):
        if getattr(spec, name) < 0:
            raise InvalidArgument(f"spec.{name}", "must not be negative (0: none)")
    if spec.max_catchup < 0 or spec.max_catchup > 100_000:
        raise InvalidArgument("spec.max_catchup", "must be between 0 and 100000")
    calendars = spec.schedule.calendars
    if len(calendars) > MAX_TASK_CALENDARS:
        raise InvalidArgument(
            "spec.schedule.calendars", f"at most {MAX_TASK_CALENDARS} calendars, got {len(calendars)}"
        )
    for i, name in enumerate(calendars):
        if not _CALENDAR_NAME.fullmatch(name):
            raise InvalidArgument(
                f"spec.schedule.calendars[{i}]",
                f"must be a calendar name: 1 to {MAX_CALENDAR_NAME} characters from A-Z a-z 0-9 _ . -",
            )
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
        env = spec.payload.command.env
        if len(env) > MAX_ENV:
            raise InvalidArgument("spec.payload.command.env", f"at most {MAX_ENV} variables, got {len(env)}")
        for k, v in env.items():
            if not k or "=" in k or "\0" in k:
                raise InvalidArgument("spec.payload.command.env", f"bad variable name {k[:64]!r}")
            if "\0" in v:
                raise InvalidArgument(f"spec.payload.command.env.{k}", "contains a NUL byte")
        if len(spec.payload.command.cwd) > MAX_CWD or "\0" in spec.payload.command.cwd:
            raise InvalidArgument("spec.payload.command.cwd", f"at most {MAX_CWD} characters, no NUL")
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
            depth = json_depth(h.args_json)
            if depth > MAX_JSON_DEPTH:
                raise InvalidArgument(
                    "spec.payload.handler.args_json", f"nested {depth} deep; at most {MAX_JSON_DEPTH} levels"
                )
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
    if len(url) > MAX_HTTP_URL:
        raise InvalidArgument("spec.payload.http.url", f"longer than {MAX_HTTP_URL} characters")
    if len(h.headers) > MAX_HTTP_HEADERS:
        raise InvalidArgument("spec.payload.http.headers", f"at most {MAX_HTTP_HEADERS} headers")
    if len(h.expected_status) > MAX_EXPECTED_STATUS:
        raise InvalidArgument(
            "spec.payload.http.expected_status", f"at most {MAX_EXPECTED_STATUS} status codes"
        )
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) <= len("https://"):
        raise InvalidArgument("spec.payload.http.url", "must be an http:// or https:// URL")
    if any(c in url for c in " \r\n\0"):
        raise InvalidArgument("spec.payload.http.url", "must not contain spaces or control characters")
    if h.method and not _TOKEN_RE.match(h.method):
        raise InvalidArgument("spec.payload.http.method", f"not an HTTP method: {h.method!r}")
    for name, value in h.headers.items():
        if not _TOKEN_RE.match(name):
            raise InvalidArgument("spec.payload.http.headers", f"bad header name {name[:64]!r}")
        if any(c in value for c in "\r\n\0"):
            raise InvalidArgument(f"spec.payload.http.headers.{name}", "must not contain line breaks")
    for i, code in enumerate(h.expected_status):
        if not 100 <= code <= 599:
            raise InvalidArgument(
                f"spec.payload.http.expected_status[{i}]", "must be an HTTP status (100..599)"
            )


def _validate_pairs(pairs: Mapping[str, str], field: str, most: int, what: str) -> None:
    """Tags and worker labels: at most `most` pairs, keys 1..MAX_TAG_LEN characters, values up to it."""
    if len(pairs) > most:
        raise InvalidArgument(field, f"more than {most} {what}")
    for k, v in pairs.items():
        if not k or len(k) > MAX_TAG_LEN or "\0" in k:
            raise InvalidArgument(field, f"bad key {k[:64]!r} (1..{MAX_TAG_LEN} chars, no NUL)")
        if len(v) > MAX_TAG_LEN or "\0" in v:
            raise InvalidArgument(f"{field}.{k}", f"value longer than {MAX_TAG_LEN} chars or has NUL")


def _validate_retry(policy: common_pb2.RetryPolicy) -> None:
    """Backoffs within the timeout bound and a finite multiplier: the backoff of attempt n (at most
    MAX_ATTEMPTS) is then a finite number (an unchecked multiplier overflowed inside apply)."""
    for name in ("initial_backoff_ms", "max_backoff_ms"):
        value = getattr(policy, name)
        if not 0 <= value <= MAX_TIMEOUT_MS:
            raise InvalidArgument(f"spec.retry.{name}", f"must be between 0 and {MAX_TIMEOUT_MS}")
    m = policy.multiplier
    if not math.isfinite(m) or not (m == 0 or 1.0 <= m <= MAX_MULTIPLIER):
        raise InvalidArgument(
            "spec.retry.multiplier", f"must be between 1 and {MAX_MULTIPLIER:g} (0: default 2)"
        )
    for name in ("retryable_exit_codes", "non_retryable_exit_codes"):
        if len(getattr(policy, name)) > MAX_EXIT_CODES:
            raise InvalidArgument(f"spec.retry.{name}", f"at most {MAX_EXIT_CODES} exit codes")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON `text` (a scan, no recursion, no parse): the
    standard parser recurses once per level and raises RecursionError past about a thousand."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def validate_targets(targets: Sequence[common_pb2.NotifyTarget], field: str) -> None:
    """Notification targets (a spec's `notify`, the config's global list): raise InvalidArgument naming
    the first bad field (e.g. "spec.notify[0].webhook_url")."""
    if len(targets) > MAX_TARGETS:
        raise InvalidArgument(field, f"at most {MAX_TARGETS} notification targets, got {len(targets)}")
    for i, target in enumerate(targets):
        here = f"{field}[{i}]"
        kind = target.WhichOneof("kind")
        if kind == "webhook_url":
            _validate_url(target.webhook_url, f"{here}.webhook_url")
        elif kind == "command":
            _validate_notify_command(target.command, f"{here}.command")
        elif kind == "notifier":
            if not NOTIFIER_NAME.match(target.notifier):
                raise InvalidArgument(
                    f"{here}.notifier", "1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit"
                )
        else:
            raise InvalidArgument(here, "set one of notifier, webhook_url or command")
        if len(target.events) > MAX_NOTIFY_EVENTS:
            raise InvalidArgument(f"{here}.events", f"at most {MAX_NOTIFY_EVENTS} events")
        for j, event in enumerate(target.events):
            if event not in _NOTIFY_EVENTS:
                raise InvalidArgument(
                    f"{here}.events[{j}]",
                    f"unknown event {event}; use failure, timeout, dead_letter or missed",
                )


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """Whether `host` is one of `allowed`: a host name or address (exact, case-insensitive), or
    `*.example.com`, which matches the names under example.com (not example.com itself)."""
    host = host.lower().rstrip(".")
    for given in allowed:
        entry = given.lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return True
        if host == entry:
            return True
    return False


def check_new_targets(
    targets: Sequence[common_pb2.NotifyTarget],
    field: str,
    *,
    notifiers: Collection[str],
    webhook_hosts: Collection[str],
) -> None:
    """The rules of issue 13 for targets a client sends in a new or updated task spec (the API checks
    them; apply() does not, so that entries committed before these rules apply as they did): a notify
    command is refused (the control plane runs only commands its operators configured); a notifier must
    be one the config defines; a webhook's host must be in [notify] webhook_hosts. InvalidArgument names
    the field and the fix."""
    for i, target in enumerate(targets):
        here = f"{field}[{i}]"
        kind = target.WhichOneof("kind")
        if kind == "command":
            raise InvalidArgument(
                f"{here}.command",
                "a task may not carry a notify command (the leader would run it): name a notifier an "
                "operator defined in the nodes' config ([notifiers.NAME]; schedctl --notify NAME)",
            )
        if kind == "notifier" and target.notifier not in notifiers:
            known = ", ".join(sorted(notifiers)[:20]) or "none are defined"
            raise InvalidArgument(
                f"{here}.notifier", f"no notifier {target.notifier!r} in the cluster's config ({known})"
            )
        if kind == "webhook_url":
            host = urlsplit(target.webhook_url).hostname or ""
            if not host_allowed(host, webhook_hosts):
                raise InvalidArgument(
                    f"{here}.webhook_url",
                    f"host {host!r} is not in the cluster's [notify] webhook_hosts; an operator may add "
                    "it, or define a webhook notifier ([notifiers.NAME]) that tasks name",
                )


# The codes a retry policy's lists may hold: what an attempt of the payload's kind reports as its exit code
# (docs/payloads.md). An HTTP payload's exit code is the response status.
EXIT_CODES = (0, 255)
HTTP_STATUSES = (100, 599)
NO_RESPONSE = -1  # an http attempt that got no response at all (connection refused, DNS, TLS, reset)


def check_retry_codes(spec: common_pb2.TaskSpec, field: str = "spec.retry") -> None:
    """The codes of `spec`'s retry policy against its payload's kind: HTTP statuses (100-599), and -1 for
    no response at all, for an `http` payload; exit codes (0-255) for the others, so that "retry only on
    503, 429 and no response" is written
    with the same lists as "retry only on exit 3". InvalidArgument names the first bad entry, e.g.
    `spec.retry.retryable_exit_codes[2]`. For new and updated specs (the API, the SDK, schedctl); apply()
    checks only the lists' lengths, so that entries committed before this rule apply as they did."""
    if not spec.HasField("retry"):
        return
    http = spec.payload.WhichOneof("kind") == "http"
    lo, hi = HTTP_STATUSES if http else EXIT_CODES
    for name in ("retryable_exit_codes", "non_retryable_exit_codes"):
        for i, code in enumerate(getattr(spec.retry, name)):
            if lo <= code <= hi or (http and code == NO_RESPONSE):
                continue
            if http:
                problem = (
                    f"{code} is not an HTTP status ({lo}-{hi}) nor {NO_RESPONSE} (no response): an http "
                    "payload's exit code is the response status"
                )
            elif HTTP_STATUSES[0] <= code <= HTTP_STATUSES[1]:
                problem = (
                    f"{code} is not an exit code ({lo}-{hi}): HTTP statuses apply to an http payload only"
                )
            else:
                problem = f"{code} is not an exit code ({lo}-{hi})"
            raise InvalidArgument(f"{field}.{name}[{i}]", problem)


def _validate_url(url: str, field: str) -> None:
    if not url:
        raise InvalidArgument(field, "must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidArgument(field, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as e:
        raise InvalidArgument(field, f"not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field, f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidArgument(field, "has no host; use e.g. https://hooks.example.com/cronraft")
    if parts.fragment:
        raise InvalidArgument(field, "must not have a #fragment")


def _validate_notify_command(cmd: common_pb2.CommandPayload, field: str) -> None:
    if not cmd.argv or not cmd.argv[0]:
        raise InvalidArgument(f"{field}.argv", "must name a program (argv[0])")
    if len(cmd.argv) > MAX_NOTIFY_ARGV:
        raise InvalidArgument(f"{field}.argv", f"at most {MAX_NOTIFY_ARGV} arguments, got {len(cmd.argv)}")
    if len(cmd.env) > MAX_NOTIFY_ENV:
        raise InvalidArgument(f"{field}.env", f"at most {MAX_NOTIFY_ENV} variables, got {len(cmd.env)}")
    size = cmd.ByteSize()
    if size > MAX_NOTIFY_COMMAND_BYTES:
        raise InvalidArgument(
            field, f"is {size} bytes; at most {MAX_NOTIFY_COMMAND_BYTES} (argv, env and cwd)"
        )
    for k, arg in enumerate(cmd.argv):
        if "\0" in arg:
            raise InvalidArgument(f"{field}.argv[{k}]", "must not contain a NUL character")
    for key, value in cmd.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgument(f"{field}.env", f"bad variable {key[:64]!r}: no '=' or NUL, not empty")
    if cmd.cwd and not os.path.isabs(cmd.cwd):
        raise InvalidArgument(f"{field}.cwd", f"must be an absolute path, got {cmd.cwd[:256]!r}")


__all__ = [
    "EXIT_CODES",
    "HTTP_STATUSES",
    "NO_RESPONSE",
    "check_namespace",
    "check_new_targets",
    "check_retry_codes",
    "host_allowed",
    "json_depth",
    "namespace_name",
    "stored_namespace",
    "validate_spec",
    "validate_targets",
]
