"""The pure part of notifications (`daemon.notify` delivers them): the body, a documented, versioned
JSON object (docs/notifications.md), its delivery id, and the choice of targets for an event (what a
node may run: `daemon.notify`). Reads no clock and does no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import host_allowed

BODY_VERSION = 1
TAIL_CAP_BYTES = 4096  # each output tail in a body: its last 4 KiB
MAX_MISSED = 100  # nominal times listed in a `missed` body (all are counted in `missed_count`)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Notification:
    """One event to tell the targets about. `event` is a `common_pb2.NotifyEvent` value."""

    event: int
    task: common_pb2.Task
    execution: common_pb2.Execution | None = None
    records: tuple[common_pb2.FireRecord, ...] = ()  # NOTIFY_MISSED: the missed nominal times
    dead_letter: common_pb2.DeadLetter | None = None
    cluster: str = ""


def _enum_name(wrapper: Any, number: int, prefix: str) -> str:
    """Lower-case name without `prefix`; "unspecified" for 0, "unknown_<n>" for a value newer than us."""
    if number == 0:
        return "unspecified"
    try:
        name: str = wrapper.Name(number)
    except ValueError:
        return f"unknown_{number}"
    return name.removeprefix(prefix).lower()


def event_name(event: int) -> str:
    """ "failure", "timeout", "dead_letter", "missed" (the body's `event` and the Cronraft-Event header)."""
    return _enum_name(common_pb2.NotifyEvent, event, "NOTIFY_")


def rfc3339(ms: int) -> str | None:
    """RFC 3339 UTC with milliseconds ("2025-06-01T09:00:00.000Z"); None for 0 (unset)."""
    if ms == 0:
        return None
    instant = _EPOCH + timedelta(milliseconds=ms)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_fields(name: str, ms: int) -> dict[str, Any]:
    return {f"{name}_ms": ms, name: rfc3339(ms)}


def tail_text(data: bytes, cap: int = TAIL_CAP_BYTES) -> str:
    """The last `cap` bytes of an output tail as text, never starting inside a UTF-8 sequence."""
    if len(data) > cap:
        data = data[-cap:]
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")


def delivery_id(n: Notification) -> str:
    """The notification's id (header Cronraft-Delivery, body `delivery_id`): derived from what the event is
    about, so it is the same across retries and targets, and for the same event submitted twice."""
    parts = [str(BODY_VERSION), str(n.event), n.task.task_id]
    if n.execution is not None:
        parts.append(n.execution.execution_id)
    if n.dead_letter is not None:
        parts.append(n.dead_letter.execution_id)
    parts.extend(str(r.nominal_time_ms) for r in n.records)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _execution(e: common_pb2.Execution) -> dict[str, Any]:
    return {
        "execution_id": e.execution_id,
        **time_fields("nominal_time", e.nominal_time_ms),
        "state": _enum_name(common_pb2.ExecutionState, e.state, "EXECUTION_"),
        "attempt": e.attempt,
        "worker_id": e.worker_id,
        "exit_code": e.exit_code,
        "error": e.error,
        "manual": e.manual,
        **time_fields("fired_at", e.fired_at_ms),
        **time_fields("started_at", e.started_at_ms),
        **time_fields("finished_at", e.finished_at_ms),
        **time_fields("completed_at", e.completed_at_ms),
        "stdout_tail": tail_text(e.stdout_tail),
        "stderr_tail": tail_text(e.stderr_tail),
    }


def _dead_letter(d: common_pb2.DeadLetter) -> dict[str, Any]:
    return {
        "execution_id": d.execution_id,
        **time_fields("nominal_time", d.nominal_time_ms),
        "reason": d.reason,
        "attempts": d.attempts,
        **time_fields("dead_at", d.dead_at_ms),
        "stdout_tail": tail_text(d.stdout_tail),
        "stderr_tail": tail_text(d.stderr_tail),
    }


def notification_body(n: Notification, *, now_ms: int) -> dict[str, Any]:
    """The JSON body (docs/notifications.md). Every key is always present; keys are added, never renamed
    or removed, while `version` is 1. `now_ms` is the `sent_at` time."""
    records = sorted(n.records, key=lambda r: r.nominal_time_ms)
    return {
        "version": BODY_VERSION,
        "delivery_id": delivery_id(n),
        "event": event_name(n.event),
        "cluster": n.cluster,
        **time_fields("sent_at", now_ms),
        "task": {
            "task_id": n.task.task_id,
            "name": n.task.spec.name,
            "tags": dict(sorted(n.task.spec.tags.items())),
        },
        "execution": None if n.execution is None else _execution(n.execution),
        "missed_count": len(records),
        "missed": [
            {**time_fields("nominal_time", r.nominal_time_ms), "reason": r.reason}
            for r in records[:MAX_MISSED]
        ],
        "dead_letter": None if n.dead_letter is None else _dead_letter(n.dead_letter),
    }


def encode_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _wants(target: common_pb2.NotifyTarget, event: int) -> bool:
    return not target.events or event in target.events


def _identity(target: common_pb2.NotifyTarget) -> bytes:
    """The target without its event filter: two equal identities are one destination."""
    bare = common_pb2.NotifyTarget()
    bare.CopyFrom(target)
    del bare.events[:]
    return bare.SerializeToString(deterministic=True)


def task_target(
    target: common_pb2.NotifyTarget,
    notifiers: Mapping[str, common_pb2.NotifyTarget],
    webhook_hosts: Sequence[str],
) -> common_pb2.NotifyTarget | str:
    """What a task's target delivers to: a named notifier's configured target (with the task's event
    filter), or an allowed webhook; a text saying why it is skipped when the config does not allow it
    (a notify command stored in a task is never run)."""
    kind = target.WhichOneof("kind")
    if kind == "notifier":
        configured = notifiers.get(target.notifier)
        if configured is None:
            return f"notifier {target.notifier!r} is not in this node's config ([notifiers])"
        out = common_pb2.NotifyTarget()
        out.CopyFrom(configured)
        del out.events[:]
        out.events.extend(target.events)
        return out
    if kind == "command":
        return "a notify command stored in a task is never run (issue 13): name a [notifiers] entry instead"
    if kind == "webhook_url":
        try:
            host = urlsplit(target.webhook_url).hostname or ""
        except ValueError:
            host = ""
        if not host_allowed(host, webhook_hosts):
            return f"webhook host {host!r} is not in this node's [notify] webhook_hosts"
        return target
    return "no target kind this node knows"


def targets_for(
    task: common_pb2.Task,
    event: int,
    global_targets: Sequence[common_pb2.NotifyTarget],
    *,
    notifiers: Mapping[str, common_pb2.NotifyTarget] | None = None,
    webhook_hosts: Sequence[str] = (),
    skipped: list[str] | None = None,
) -> list[common_pb2.NotifyTarget]:
    """The task's targets that subscribe to `event` (no events listed: all), resolved by `task_target`
    (the reasons for those skipped are appended to `skipped`), then the global ones that do; a
    destination listed twice is delivered to once."""
    resolved: list[common_pb2.NotifyTarget] = []
    for target in task.spec.notify:
        if not _wants(target, event):
            continue
        got = task_target(target, notifiers or {}, webhook_hosts)
        if isinstance(got, str):
            if skipped is not None:
                skipped.append(got)
            continue
        resolved.append(got)
    out: list[common_pb2.NotifyTarget] = []
    seen: set[bytes] = set()
    for target in (*resolved, *global_targets):
        key = _identity(target)
        if key in seen or not _wants(target, event) or target.WhichOneof("kind") is None:
            continue
        seen.add(key)
        out.append(target)
    return out


def describe_target(target: common_pb2.NotifyTarget) -> str:
    """A loggable name: a webhook's scheme://host[:port] only (paths and queries often hold secrets)."""
    if target.WhichOneof("kind") == "webhook_url":
        try:
            parts = urlsplit(target.webhook_url)
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "webhook:(invalid URL)"
        return f"{parts.scheme}://{parts.hostname}{port}"
    return f"command:{os.path.basename(target.command.argv[0]) if target.command.argv else ''}"
