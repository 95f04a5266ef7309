"""[notify] (global targets, the hosts a task's webhook_url may name) and [notifiers.NAME] (the
notifiers tasks may name); delivery itself is daemon.notify."""

from __future__ import annotations

import re
from collections.abc import Mapping

from cronraft.daemon.config.reader import _Table
from cronraft.daemon.notify import validate_targets
from cronraft.errors import ConfigError, InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import NOTIFIER_NAME


def _notify(t: _Table) -> tuple[common_pb2.NotifyTarget, ...]:
    """[notify] targets = [{webhook_url = "...", events = ["failure"]}, {command = ["..."], events = []}]"""
    raw = t.data.get("targets", [])
    if not isinstance(raw, list):
        raise t.error("targets", "must be an array of tables")
    out = []
    for i, item in enumerate(raw):
        key = f"targets[{i}]"
        if not isinstance(item, dict) or set(item) - {"webhook_url", "command", "env", "cwd", "events"}:
            raise t.error(key, "a table with webhook_url or command (plus env, cwd, events)")
        target = common_pb2.NotifyTarget()
        if "webhook_url" in item:
            target.webhook_url = str(item["webhook_url"])
        elif "command" in item and isinstance(item["command"], list):
            target.command.argv.extend(str(a) for a in item["command"])
            target.command.env.update({str(k): str(v) for k, v in dict(item.get("env", {})).items()})
            target.command.cwd = str(item.get("cwd", ""))
        else:
            raise t.error(key, "needs webhook_url (a string) or command (an array of strings)")
        for name in item.get("events", []):
            value = getattr(common_pb2, f"NOTIFY_{str(name).upper()}", None)
            if not isinstance(value, int):
                raise t.error(
                    f"{key}.events", f"unknown event {name!r} (failure, timeout, dead_letter, missed)"
                )
            target.events.append(common_pb2.NotifyEvent.ValueType(value))
        out.append(target)
    try:
        validate_targets(out, t.key("targets"))
    except InvalidArgument as e:
        raise ConfigError(f"{t.source}: {e}") from None
    return tuple(out)


_NOTIFIER_KEYS = {"webhook": ("kind", "url"), "command": ("kind", "argv", "env", "cwd")}


def _notifiers(root: _Table) -> dict[str, common_pb2.NotifyTarget]:
    """[notifiers.NAME] tables: kind = "webhook" (url) or kind = "command" (argv, env, cwd). Tasks name
    them (NotifyTarget.notifier); only these commands, the operator's, are ever run by a node."""
    raw = root.data.get("notifiers", {})
    if not isinstance(raw, Mapping):
        raise root.error("notifiers", "expected tables [notifiers.NAME]")
    if len(raw) > 256:
        raise root.error("notifiers", "at most 256 notifiers")
    out: dict[str, common_pb2.NotifyTarget] = {}
    for name, item in raw.items():
        key = f"notifiers.{name}"
        if not NOTIFIER_NAME.match(name):
            raise root.error(key, "a notifier name is 1-64 characters of [A-Za-z0-9_.-]")
        kind = item.get("kind") if isinstance(item, Mapping) else None
        if kind not in _NOTIFIER_KEYS:
            raise root.error(f"{key}.kind", 'set kind = "webhook" (with url) or kind = "command" (with argv)')
        t = _Table(item, key, root.source, _NOTIFIER_KEYS[kind])
        target = common_pb2.NotifyTarget()
        if kind == "webhook":
            target.webhook_url = t.string("url")
        else:
            argv = t.data.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise t.error(
                    "argv", "expected a non-empty array of strings (no shell: argv[0] is the program)"
                )
            env = t.data.get("env", {})
            if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
                raise t.error("env", 'expected a table of NAME = "value" strings')
            target.command.argv.extend(argv)
            target.command.env.update(env)
            target.command.cwd = t.string("cwd", "/") if t.has("cwd") else ""
        try:
            validate_targets([target], key)
        except InvalidArgument as e:
            field_name = e.field.replace(f"{key}[0].webhook_url", f"{key}.url")
            field_name = field_name.replace(f"{key}[0].command", key)
            raise ConfigError(f"{root.source}: {field_name}: {e.problem}") from None
        out[name] = target
    return out


def _webhook_hosts(t: _Table) -> tuple[str, ...]:
    """[notify] webhook_hosts = ["hooks.example.com", "*.example.org"]: the hosts a task's own
    webhook_url may name (none by default: tasks name [notifiers.NAME] instead)."""
    raw = t.data.get("webhook_hosts", [])
    if not isinstance(raw, list) or len(raw) > 1024:
        raise t.error("webhook_hosts", "expected an array of at most 1024 host names")
    for i, host in enumerate(raw):
        if not isinstance(host, str) or not re.fullmatch(r"(\*\.)?[A-Za-z0-9.\-:\[\]]{1,253}", host):
            raise t.error(
                f"webhook_hosts[{i}]", f"{host!r}: a host name or address, or *.domain for the names under it"
            )
    return tuple(raw)
