"""Calendar commands: PutCalendar, DeleteCalendar. Names are unique per namespace; a calendar in use by
a task or included by another calendar cannot be deleted (`in_use`). Checks are firing.check_calendar's.
"""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import firing, quota
from cronraft.raft.codec import id_text
from cronraft.raft.commands.context import Ctx, in_namespace
from cronraft.raft.records import calendar_include_key
from cronraft.raft.rejection import Code, Rejected
from cronraft.raft.validate import stored_namespace


def put_calendar(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = common_pb2.Calendar()
    c.CopyFrom(cmd.put_calendar.calendar)
    firing.check_calendar(ctx.txn, c)  # the leader ran the same check before proposing
    c.namespace = stored_namespace(c.namespace)  # the default namespace is stored empty
    # Names are unique per namespace, and includes resolve in the calendar's own (firing.calendar_key).
    key = firing.calendar_key(c.namespace, c.name)
    quota.check_calendar(ctx.txn, ctx.limits, key)
    old = firing.read_calendar(ctx.txn, c.name, c.namespace)
    c.version = ctx.index
    c.updated_at_ms = ctx.now
    if old is not None:
        for name in set(old.include) - set(c.include):
            ctx.txn.delete("calendar_refs", calendar_include_key(firing.calendar_key(c.namespace, name), key))
    for name in c.include:
        ctx.txn.put("calendar_refs", calendar_include_key(firing.calendar_key(c.namespace, name), key), b"")
    ctx.txn.put("calendars", key.encode(), c.SerializeToString(deterministic=True))
    ctx.result.calendar.CopyFrom(c)


def delete_calendar(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    name, namespace = cmd.delete_calendar.name, cmd.delete_calendar.namespace
    c = firing.read_calendar(ctx.txn, name, namespace)
    if c is None:
        raise Rejected(Code.NOT_FOUND, f"calendar {name!r} not found{in_namespace(namespace)}")
    key = firing.calendar_key(namespace, name)
    prefix, skip = key.encode() + b"\0", len(firing.calendar_key(namespace, ""))
    users = []
    for k, _ in ctx.txn.scan("calendar_refs", prefix, prefix + b"\xff" * 65):
        rest = k[len(prefix) :]
        users.append(
            f"calendar {rest[1:].decode()[skip:]}" if rest[:1] == b"C" else f"task {id_text(rest[1:])}"
        )
        if len(users) >= 5:
            break
    if users:
        raise Rejected(Code.IN_USE, f"calendar {name!r} is used by {', '.join(users)}")
    for inc in c.include:
        ctx.txn.delete("calendar_refs", calendar_include_key(firing.calendar_key(namespace, inc), key))
    ctx.txn.delete("calendars", key.encode())
    ctx.result.calendar.CopyFrom(c)


__all__ = ["delete_calendar", "put_calendar"]
