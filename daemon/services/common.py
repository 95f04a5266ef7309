"""What the Scheduler service's subjects share, and the one place an error becomes a gRPC status.

Errors from the one error tree are mapped to gRPC status codes here and only here (`_abort`, which every
servicer's `_guard` calls); a command's recorded rejection becomes such an error in daemon/rejections.py
(`check_result`). `SchedulerBase` holds the node and `_write`, which proposes one command for a client;
the namespace helpers find a stored task or execution for a method and check the caller's role in its
namespace (daemon.security.authz).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc

from cronraft import bounds, errors
from cronraft.daemon.rejections import check_result
from cronraft.daemon.security.authz import current_principal, require_all_namespaces, require_role
from cronraft.daemon.wire import check_id
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft import state as sm
from cronraft.raft.kv import Txn
from cronraft.raft.validate import check_namespace
from cronraft.tokenfile import ALL_NAMESPACES

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

LEADER_METADATA_KEY = "cronraft-leader"
MAX_PAGE_SIZE = bounds.MAX_PAGE_SIZE
_T = TypeVar("_T")

# The ids each kind of write must name (others are checked only when given).
_ID_REQUIRED: dict[str, tuple[str, ...]] = {
    "update": ("task_id",),
    "pause": ("task_id",),
    "resume": ("task_id",),
    "trigger": ("task_id",),
    "backfill": ("task_id",),
    "cancel-exec": ("execution_id",),
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], e: errors.CronraftError) -> NoReturn:
    if isinstance(e, errors.NotLeader):
        context.set_trailing_metadata(((LEADER_METADATA_KEY, e.leader_address or ""),))
    code = getattr(grpc.StatusCode, e.grpc_code, grpc.StatusCode.INTERNAL)
    await context.abort(code, str(e))


async def _guard(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[_T]) -> _T:
    try:
        return await call
    except errors.CronraftError as e:
        await _abort(context, e)


def _page_size(n: int, field: str) -> int:
    """A page size or limit: 0 is the default (100), more than MAX_PAGE_SIZE is lowered to it."""
    if n < 0:
        raise errors.InvalidArgument(field, f"must be between 0 and {MAX_PAGE_SIZE}")
    return min(n or 100, MAX_PAGE_SIZE)


def _request_id(txn: Txn, given: str, kind: str) -> str:
    """The dedup key of the client's request id `given` for a write of `kind` ("" when none is given: the
    request cannot be deduplicated across retries). `kind:given`, scoped to the caller under the feature
    schedule_fixes (`_caller_scope`): apply answers a request id it saw from the dedup table whatever the
    command holds, so an unscoped id let any caller who reused another's get that caller's answer (a
    task of another namespace) and have its own write dropped."""
    if len(given) > bounds.MAX_REQUEST_ID:
        raise errors.InvalidArgument("request_id", f"longer than {bounds.MAX_REQUEST_ID} characters")
    return f"{kind}{_caller_scope(txn)}:{given}" if given else ""


def _caller_scope(txn: Txn) -> str:
    """What ties a request id to its caller (docs/security.md, "Request ids"): "@" and a digest of the
    principal's name and the roles its credential grants per namespace, or "" with authentication off
    (one anonymous caller holding every role) and below the feature schedule_fixes (the stored keys of
    the release before it; every leader of a cluster at the feature scopes alike, so a retry that
    reaches another leader finds its record). The roles are in it, not only the name: a token or JWT of
    the same principal granting other namespaces is another caller. It goes before the ':', so the audit
    trail's request id (raft.audit_trail: what follows the first ':') stays the client's."""
    principal = current_principal()
    if principal.source == "none" or not features.is_active(txn, features.SCHEDULE_FIXES):
        return ""
    roles = sorted((ns, sorted(held)) for ns, held in principal.roles.items())
    digest = hashlib.sha256(json.dumps([principal.name, roles]).encode()).hexdigest()
    return f"@{digest[:32]}"


def _recorded(txn: Txn, request_id: str, kind: str) -> commands_pb2.CommandResult | None:
    """The answer the dedup table keeps for the client's request `request_id` of `kind` (the first
    attempt's, refused or not: raft.result_bytes.remember), or None when it has not been applied.

    The SDK resends a write whose answer was lost (a leader killed after applying it) with the same
    request id, and apply answers it from this table whatever the command holds. A check a servicer
    makes before proposing that the first attempt's own effect makes fail (a quota it filled, the task it
    deleted, the letters it purged) must not run for such a retry: it would refuse a write that was done.
    The role checks stay (a request id is not a credential), and the key is the caller's own
    (`_request_id`): another caller's record is never found here."""
    key = _request_id(txn, request_id, kind)
    if not key:
        return None
    seen = txn.get("requests", key.encode())
    return None if seen is None else commands_pb2.CommandResult.FromString(seen)


class SchedulerBase:
    """The node a Scheduler servicer serves, and the one path of its writes (each subject's methods are
    a subclass: daemon.services.scheduler puts them together)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def _write(
        self, kind: str, request_id: str, _namespace: str | None = None, **body: Any
    ) -> commands_pb2.CommandResult:
        node = self.node
        await node.writer()
        # The ids a write names are checked before it is proposed (the state machine refuses a malformed
        # one too, but only once it is in the log).
        (message,) = body.values()
        for name in ("task_id", "execution_id"):
            given: str = getattr(message, name, "")
            if given or name in _ID_REQUIRED.get(kind, ()):
                check_id(given, name)
        # The caller's role in the namespace of the task or execution the write names (NOT_FOUND when it
        # cannot read that namespace); `_namespace` when the caller checked it already.
        namespace = _namespace
        method = _KIND_METHOD.get(kind)
        with node.kv.read() as txn:
            if method is not None and namespace is None:
                if getattr(message, "task_id", ""):
                    namespace = _task_for(txn, message.task_id, method).spec.namespace
                elif kind == "cancel-exec":
                    namespace = _execution_for(txn, message.execution_id, method).namespace
            key = _request_id(txn, request_id, kind)
        cmd = commands_pb2.Command(
            request_id=key,
            stamped_at_ms=node.clock.now_ms(),
            limits=node.limits,
            **body,
        )
        (res,) = await node.propose([cmd])
        check_result(res)
        if namespace is not None:
            for ex in (res.execution, *res.executions):
                ex.namespace = namespace
            for letter in res.dead_letters:
                letter.namespace = namespace
        return res


# ------------------------------------------------------------------------------------- namespaces
# The namespace checks happen here, at the API, before anything is proposed: apply() acts on what the
# entry holds. A task never changes namespace and ids are never reused, so a check made on the stored
# object stays true until the command applies.

# The Scheduler method of each kind of `_write`, for the role check in the named object's namespace.
_KIND_METHOD = {
    "update": "UpdateTask",
    "pause": "PauseTask",
    "resume": "ResumeTask",
    "trigger": "TriggerTask",
    "backfill": "BackfillTask",
    "cancel-exec": "CancelExecution",
    "delete": "DeleteTask",
    "redrive": "RedriveDeadLetters",
    "purge": "PurgeDeadLetters",
}


def _task_for(txn: Txn, task_id: str, method: str) -> common_pb2.Task:
    """The stored task `task_id`, for Scheduler `method`: NotFound when it does not exist or lies in a
    namespace the caller cannot read (the same answer: existence does not leak); PermissionDenied when
    the caller reads that namespace but lacks the method's role there."""
    missing = f"task {task_id} not found"
    task = sm.read_task(txn, task_id)
    if task is None:
        raise errors.NotFound(missing)
    require_role(method, task.spec.namespace, hide=missing)
    return task


def _task_namespace(txn: Txn, task_id: str) -> str:
    """The namespace of a stored task (stored form), or "*" for a task that is gone: the executions and
    dead letters of a deleted task, until retention removes them, are seen only by principals holding
    their roles in every namespace."""
    task = sm.read_task(txn, task_id)
    return ALL_NAMESPACES if task is None else task.spec.namespace


def _execution_for(txn: Txn, execution_id: str, method: str) -> common_pb2.Execution:
    """The stored execution, checked like `_task_for` in its task's namespace (which it carries back)."""
    missing = f"execution {execution_id} not found"
    ex = sm.read_execution(txn, execution_id)
    if ex is None:
        raise errors.NotFound(missing)
    namespace = _task_namespace(txn, ex.task_id)
    require_role(method, namespace, hide=missing)
    ex.namespace = "" if namespace == ALL_NAMESPACES else namespace
    return ex


def _list_namespace(method: str, namespace: str, all_namespaces: bool) -> str | None:
    """The namespace a list call reads (stored form), after the role check; None: every namespace."""
    if all_namespaces:
        require_all_namespaces(method)
        return None
    stored = check_namespace(namespace, "namespace")
    require_role(method, stored)
    return stored


__all__ = ["LEADER_METADATA_KEY", "MAX_PAGE_SIZE", "SchedulerBase"]
