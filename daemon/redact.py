"""Secrets on read (issue 13): what a caller without the `secrets` permission sees of stored tasks and
executions, and how a redacted value sent back in an update keeps the stored one.

The `secrets` permission is the operator role (and admin, above it) in the task's namespace; readers
and submitters get `<redacted>` in place of:

- the values of a command payload's `env` (spec.payload.command.env, spec.sensor.probe.command.env),
- the values of an HTTP payload's headers (spec.payload.http.headers, spec.sensor.probe.http.headers),
  except a few that never carry credentials (Content-Type, Accept, ...),
- the password and the query values of a task's notify webhook URL (spec.notify[i].webhook_url),

and no fencing token (Execution.token: after issue 13 a token is not enough to act, since results are
accepted only from the worker holding the lease, but it is an operator's diagnostic). A value
`secret:NAME` is shown as it is: the worker resolves it locally, the value holds no secret. With
authentication off every caller holds every role: nothing is redacted.

A read-modify-write by a caller who saw `<redacted>` (`schedctl task update`, `Client.edit_task`) sends
the placeholder back. `restore` puts the stored value back in its place, but only while the payload
holding it is otherwise unchanged (and a webhook URL the same but for the redacted parts): the secret
keeps going to the program, headers and URL it went to before. A payload changed around a placeholder
would let its author have the secret used (and printed) by a program of their choice: that, and a
placeholder with no stored value behind it (a create, an import), is refused with InvalidArgument
naming the field (`refuse_placeholders`).

Pure functions of protobuf messages; the caller's permission is passed in (`Reveal`) or read from the
RPC's principal by `for_caller`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from urllib.parse import urlsplit, urlunsplit

from google.protobuf.message import Message

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

REDACTED = "<redacted>"
SECRET_REF = "secret:"
SECRETS_ROLE = "operator"  # the `secrets` permission: operator, and admin above it
# Header names whose values are redacted nonetheless: they describe the request, never authenticate it.
PLAIN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "content-type",
        "user-agent",
    }
)

# Whether the caller sees secrets of a task in a namespace ("" is the default one).
Reveal = Callable[[str], bool]


def _shown(value: str) -> bool:
    """A value shown as it is: empty, or a reference the worker resolves (it holds no secret)."""
    return not value or value.startswith(SECRET_REF)


def _secret_values(mapping: MutableMapping[str, str], plain: frozenset[str] = frozenset()) -> Iterator[str]:
    """The keys of `mapping` whose values are secret-bearing."""
    for key, value in mapping.items():
        if not _shown(value) and key.lower() not in plain:
            yield key


def redact_url(url: str) -> str:
    """`url` with its password and each query value replaced by REDACTED (the rest kept, so that the
    reader sees where it goes). Unchanged when it has neither."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return REDACTED  # not a URL we can take apart: show none of it
    netloc = parts.netloc
    if password:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pieces = []
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            pieces.append(f"{key}={REDACTED}" if eq and value and not value.startswith(SECRET_REF) else item)
        query = "&".join(pieces)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_payload(payload: common_pb2.Payload) -> bool:
    """Redact `payload` in place; True if anything changed."""
    changed = False
    kind = payload.WhichOneof("kind")
    if kind == "command":
        env = payload.command.env
        for key in list(_secret_values(env)):
            env[key] = REDACTED
            changed = True
    elif kind == "http":
        headers = payload.http.headers
        for key in list(_secret_values(headers, PLAIN_HEADERS)):
            headers[key] = REDACTED
            changed = True
    return changed


def redact_spec(spec: common_pb2.TaskSpec) -> bool:
    """Redact the secret-bearing values of `spec` in place (see the module docstring); True if any."""
    changed = _redact_payload(spec.payload)
    if spec.HasField("sensor"):
        changed = _redact_payload(spec.sensor.probe) or changed
    for target in spec.notify:
        if target.WhichOneof("kind") == "webhook_url":
            hidden = redact_url(target.webhook_url)
            if hidden != target.webhook_url:
                target.webhook_url = hidden
                changed = True
    return changed


def _needs_redaction(msg: Message, reveal: Reveal) -> bool:
    if isinstance(msg, common_pb2.Task):
        return not reveal(msg.spec.namespace)
    if isinstance(msg, common_pb2.TaskSpec):
        return not reveal(msg.namespace)
    if isinstance(msg, common_pb2.Execution):
        return msg.HasField("token") and not reveal(msg.namespace)
    for field, value in msg.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        items = value if field.is_repeated else [value]
        if any(_needs_redaction(m, reveal) for m in items):
            return True
    return False


def _redact_in_place(msg: Message, reveal: Reveal) -> None:
    if isinstance(msg, common_pb2.Task):
        if not reveal(msg.spec.namespace):
            redact_spec(msg.spec)
        return
    if isinstance(msg, common_pb2.TaskSpec):
        if not reveal(msg.namespace):
            redact_spec(msg)
        return
    if isinstance(msg, common_pb2.Execution):
        if not reveal(msg.namespace):
            msg.ClearField("token")
        return
    for field, value in msg.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for m in value if field.is_repeated else [value]:
            _redact_in_place(m, reveal)


def redact_reply(reply: Message, reveal: Reveal) -> Message:
    """`reply` as a caller who sees secrets only where `reveal(namespace)` says may see it: every Task,
    TaskSpec and Execution in it (at any depth) redacted. A copy when anything changes; `reply` itself
    (often the stored or applied object) is never modified."""
    if not _needs_redaction(reply, reveal):
        return reply
    out = type(reply)()
    out.CopyFrom(reply)
    _redact_in_place(out, reveal)
    return out


def for_caller(reply: Message) -> Message:
    """`reply` redacted for the principal of the RPC being served (daemon.security.authz)."""
    from cronraft.daemon.security.authz import current_principal  # the servicer side only

    principal = current_principal()
    if principal.source == "none":
        return reply  # authentication off: every caller holds every role
    return redact_reply(reply, lambda namespace: principal.has(SECRETS_ROLE, namespace))


# ------------------------------------------------------------------------------- values sent back


def _placeholders(payload: common_pb2.Payload, field: str) -> list[tuple[str, str]]:
    """(field name, key) of each value of `payload` holding REDACTED; `field` is the payload's path."""
    kind = payload.WhichOneof("kind")
    if kind == "command":
        return [(f"{field}.command.env.{k}", k) for k, v in payload.command.env.items() if v == REDACTED]
    if kind == "http":
        return [(f"{field}.http.headers.{k}", k) for k, v in payload.http.headers.items() if v == REDACTED]
    return []


def _values(payload: common_pb2.Payload) -> MutableMapping[str, str]:
    return payload.command.env if payload.WhichOneof("kind") == "command" else payload.http.headers


def _restore_payload(payload: common_pb2.Payload, stored: common_pb2.Payload | None, field: str) -> None:
    held = _placeholders(payload, field)
    if not held:
        return
    none_here = f"{REDACTED!r} stands for a stored value, and the task has none here"
    if stored is None or stored.WhichOneof("kind") != payload.WhichOneof("kind"):
        raise InvalidArgument(held[0][0], none_here)
    candidate = common_pb2.Payload()
    candidate.CopyFrom(payload)
    values, old = _values(candidate), _values(stored)
    for name, key in held:
        if key not in old:
            raise InvalidArgument(name, none_here)
        values[key] = old[key]
    if candidate != stored:
        raise InvalidArgument(
            held[0][0],
            f"{REDACTED!r} keeps the stored value only while the rest of the payload is unchanged; to "
            "change the payload, give the value itself (or secret:NAME)",
        )
    payload.CopyFrom(candidate)


def restore(spec: common_pb2.TaskSpec, stored: common_pb2.TaskSpec | None) -> None:
    """Put the stored values back where an update sends REDACTED (see the module docstring), in place;
    InvalidArgument naming the field where that cannot be done. `stored`: the task's spec now."""
    _restore_payload(spec.payload, stored.payload if stored is not None else None, "spec.payload")
    if spec.HasField("sensor"):
        old_probe = stored.sensor.probe if stored is not None and stored.HasField("sensor") else None
        _restore_payload(spec.sensor.probe, old_probe, "spec.sensor.probe")
    for i, target in enumerate(spec.notify):
        if target.WhichOneof("kind") != "webhook_url" or REDACTED not in target.webhook_url:
            continue
        matches = [
            t.webhook_url
            for t in (stored.notify if stored is not None else ())
            if t.WhichOneof("kind") == "webhook_url" and redact_url(t.webhook_url) == target.webhook_url
        ]
        if not matches:
            raise InvalidArgument(
                f"spec.notify[{i}].webhook_url",
                f"{REDACTED!r} keeps a stored webhook URL only when the rest of the URL is unchanged; "
                "give the whole URL to change it",
            )
        target.webhook_url = matches[0]


def refuse_placeholders(spec: common_pb2.TaskSpec) -> None:
    """InvalidArgument naming the first field of `spec` that still holds REDACTED: the placeholder shown
    to readers is not a value to store (a create, an import, or an update `restore` could not match)."""
    held = [name for name, _ in _placeholders(spec.payload, "spec.payload")]
    if spec.HasField("sensor"):
        held += [name for name, _ in _placeholders(spec.sensor.probe, "spec.sensor.probe")]
    held += [
        f"spec.notify[{i}].webhook_url"
        for i, t in enumerate(spec.notify)
        if t.WhichOneof("kind") == "webhook_url" and REDACTED in t.webhook_url
    ]
    if held:
        raise InvalidArgument(
            held[0],
            f"{REDACTED!r} is the placeholder shown for a secret value, not a value: give the value "
            "itself, or secret:NAME for one the worker resolves",
        )


__all__ = [
    "PLAIN_HEADERS",
    "REDACTED",
    "SECRETS_ROLE",
    "for_caller",
    "redact_reply",
    "redact_spec",
    "redact_url",
    "refuse_placeholders",
    "restore",
]
