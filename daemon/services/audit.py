"""The daemon's side of the audit trail (raft/audit_trail.py; docs/security.md, "Audit trail").

- `CallInterceptor` remembers, for the mutating RPCs, which method is being served and for which peer
  (a context variable; the authenticated principal is `daemon.security.authz.current_principal()`).
- `stamp` puts that into each command `Node.propose` sends for a client (`Command.audit`): the leader
  stamps it before proposing, so that apply writes the same record on every node from the entry alone.
- `AuditServicer` serves `Audit.ListAudit` from this node's own store (admin role: RPC_ROLES).

Requests refused before they are proposed never reach the log and are not in the trail. The node that
refused one logs it (info, this node's log only): daemon.security.interceptor logs `call refused` for
authentication and roles, and `CallInterceptor` logs `write refused` for a write that failed before
anything was proposed (invalid argument, not found, a namespace's role, a quota; not a redirect to the
leader).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from cronraft import bounds, errors
from cronraft.daemon.security.authz import RPC_ROLES, current_principal
from cronraft.daemon.security.relayed import relayed_via
from cronraft.daemon.services.common import _abort
from cronraft.daemon.wire import check_length
from cronraft.proto.v1 import audit_pb2, audit_pb2_grpc, commands_pb2
from cronraft.raft import audit_trail

__all__ = ["AuditServicer", "CallInterceptor", "audited_method", "forwarded", "stamp"]

log = structlog.get_logger("cronraft.audit")

MAX_FILTER = 256  # characters of a principal, method or target filter
_READ_ROLES = frozenset({None, "reader", "worker", "node"})
# Codes of a failed write that are not a refusal of the request: the client tries again (elsewhere).
_NOT_REFUSALS = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@dataclass(slots=True)
class _Call:
    method: str  # the RPC's name, e.g. "CreateTask"
    peer: str
    proposed: bool = False  # `stamp` ran: the write is in the log, hence in the trail
    forwarded: bool = False  # `forwarded` ran: the leader served it, and logs its refusal itself


# The RPC being served, for the methods `audited_method` selects.
_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("cronraft_call", default=None)


def audited_method(method: str) -> bool:
    """Whether the interceptor tracks `method`: the cluster's RPCs that may change something (every
    method whose role is above reader; workers' streams and the clock probe are not client writes)."""
    return method.startswith("/cronraft.v1.") and RPC_ROLES.get(method, None) not in _READ_ROLES


def stamp(cmds: Sequence[commands_pb2.Command]) -> None:
    """Set `Command.audit` on commands proposed for the client being served (Node.propose)."""
    call = _call.get()
    if call is not None:
        call.proposed = True
    meta = audit_pb2.AuditMeta(
        principal=current_principal().name,
        peer=call.peer if call is not None else "",
        method=call.method if call is not None else "",
    )
    for cmd in cmds:
        cmd.audit.CopyFrom(meta)


def forwarded() -> None:
    """Note that the call being served went to the leader (daemon.relay.writes): a refusal is the
    leader's, logged there, and this follower does not log it a second time."""
    call = _call.get()
    if call is not None:
        call.forwarded = True


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Sets the call's context variable around the audited methods' behaviours (unary and
    client-streaming ones: the mutating RPCs are those), and logs a write refused before it was proposed;
    every other method passes untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(getattr(handler_call_details, "method", ""))
        if handler is None or not audited_method(method):
            return handler
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                call = _Call(name, _peer(context))
                _call.set(call)
                try:
                    return await inner_uu(request, context)
                except BaseException:
                    _note_refusal(call, context)
                    raise

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                call = _Call(name, _peer(context))
                _call.set(call)
                try:
                    return await inner_su(requests, context)
                except BaseException:
                    _note_refusal(call, context)
                    raise

            return handler._replace(stream_unary=stream_unary)
        return handler


def _peer(context: Any) -> str:
    """The caller's address for the trail: for a call a member relayed, the caller's own with the
    member's name (Principal.via; with authentication off, the relay's word, as everything there is)."""
    principal = current_principal()
    if principal.via:
        return principal.via
    if principal.source == "none":
        via = relayed_via(context.invocation_metadata())
        if via:
            return via
    return str(context.peer())


def _note_refusal(call: _Call, context: Any) -> None:
    """Log a write that ended in an error before anything was proposed (it is not in the trail)."""
    if call.proposed or call.forwarded:
        return
    try:
        code, details = context.code(), context.details()
    except Exception:  # a context without them (not grpc.aio's): nothing to say, and the call's own error
        return  # is the one to raise
    if code is None or code in _NOT_REFUSALS or code == grpc.StatusCode.OK:
        return
    log.info(
        "write refused",
        principal=current_principal().name,
        method=call.method,
        peer=call.peer,
        code=getattr(code, "name", str(code)),
        problem=details.decode(errors="replace") if isinstance(details, bytes) else str(details or ""),
    )


class AuditServicer(audit_pb2_grpc.AuditServicer):
    """`Audit.ListAudit`: this node's copy of the trail (the same on every node that applied as far)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def ListAudit(
        self, request: audit_pb2.ListAuditRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListAuditResponse:
        try:
            return self._list(request)
        except errors.CronraftError as e:
            await _abort(context, e)

    def _list(self, request: audit_pb2.ListAuditRequest) -> audit_pb2.ListAuditResponse:
        if request.page_size < 0:
            raise errors.InvalidArgument("page_size", f"must be between 0 and {bounds.MAX_PAGE_SIZE}")
        size = min(request.page_size or 100, bounds.MAX_PAGE_SIZE)
        if request.since_ms < 0 or request.until_ms < 0:
            raise errors.InvalidArgument("since_ms", "since_ms and until_ms must not be negative (0: open)")
        for field in ("principal", "method", "target_id"):
            check_length(getattr(request, field), field, MAX_FILTER)
        check_length(request.page_token, "page_token", bounds.MAX_PAGE_TOKEN)
        with self.node.kv.read() as txn:
            records, token = audit_trail.list_records(
                txn,
                principal=request.principal,
                method=request.method,
                since_ms=request.since_ms,
                until_ms=request.until_ms,
                target_id=request.target_id,
                page_size=size,
                page_token=request.page_token,
                max_bytes=bounds.MAX_PAGE_BYTES,
            )
        return audit_pb2.ListAuditResponse(records=records, next_page_token=token)
