"""The client side of namespaces (docs/security.md, "Namespaces"): a `Client`'s namespace, which every
create, put, list and bulk call uses unless told otherwise, and the request fields it fills. Calls by id
(get, update, cancel, ... of a task, an execution or a dead letter) need none: the cluster acts in the
stored object's namespace.
"""

from __future__ import annotations

import re

from cronraft.bounds import DEFAULT_NAMESPACE, MAX_NAMESPACE, NAMESPACE_PATTERN
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = ["DEFAULT_NAMESPACE", "calendar_in", "check", "list_scope", "shown", "spec_in", "wire"]

_NAMESPACE = re.compile(NAMESPACE_PATTERN)


def check(namespace: str, field: str = "namespace") -> str:
    """`namespace` if it is a namespace name (the cluster checks again), else InvalidArgument."""
    if not _NAMESPACE.fullmatch(namespace):
        raise InvalidArgument(
            field,
            f"{namespace[: MAX_NAMESPACE + 1]!r} is not a namespace: 1 to {MAX_NAMESPACE} characters of "
            "a-z 0-9 and -, starting with a letter or digit",
        )
    return namespace


def shown(namespace: str) -> str:
    """The name shown for a namespace field: the cluster stores the default one empty."""
    return namespace or DEFAULT_NAMESPACE


def wire(namespace: str) -> str:
    """A namespace as requests carry it: the default one empty, as the cluster stores it (and as a
    cluster from before namespaces expects: it would keep an unknown field in what it stores)."""
    return "" if namespace == DEFAULT_NAMESPACE else namespace


def spec_in(spec: common_pb2.TaskSpec, namespace: str) -> common_pb2.TaskSpec:
    """`spec` in `namespace` when it names none (a copy: the caller's spec is not changed)."""
    if spec.namespace or not wire(namespace):
        return spec
    out = common_pb2.TaskSpec()
    out.CopyFrom(spec)
    out.namespace = namespace
    return out


def calendar_in(calendar: common_pb2.Calendar, namespace: str) -> common_pb2.Calendar:
    """`calendar` in `namespace` when it names none (a copy)."""
    if calendar.namespace or not wire(namespace):
        return calendar
    out = common_pb2.Calendar()
    out.CopyFrom(calendar)
    out.namespace = namespace
    return out


def list_scope(namespace: str | None, default: str, all_namespaces: bool) -> tuple[str, bool]:
    """(namespace, all_namespaces) of a list request: every namespace, or `namespace`, else `default`."""
    if all_namespaces:
        return "", True
    return wire(check(namespace) if namespace is not None else default), False
