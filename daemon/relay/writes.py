"""`WriteForwarder`: on a follower, the Scheduler methods that change something (`forwarded_method`) are
forwarded to the leader as they came, for their caller (daemon.security.relayed), and the leader's
answer (its status, details and redirect trailer too) is the caller's answer. On the leader, with
relaying off, and for a call another member relayed, the servicer runs as before: a follower's servicer
answers UNAVAILABLE with the leader's address (the redirect). While no leader is known, or the leader
answers that it is not (yet) the leader, which means it proposed nothing, a write waits and goes again
for up to HOLD_S (half its deadline at most); then the last answer is the caller's.

The request id travels unchanged, so a client's retry after a timeout is deduplicated by the cluster as
if it had called the leader itself. The caller's deadline is the forwarded call's.

Read-your-writes through a follower: the leader answers a relayed write with the index it has applied
(`cronraft-applied-index`, at least the write's own), and the follower answers its caller only once it
has applied that far itself (up to APPLIED_WAIT_S, within the caller's deadline), since the SDK sends the
caller's next read to the node that answered. A follower that cannot catch up in that time answers
anyway: the write is done; a read may then not see it yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import message_factory
from google.protobuf.message import Message

from cronraft.daemon.relay.core import HOLD_S, WATCH_S, Relay, forwarded_method
from cronraft.daemon.security.relayed import relayed_hop
from cronraft.daemon.services import audit
from cronraft.errors import CronraftError
from cronraft.proto.v1 import scheduler_pb2

__all__ = ["LEADER_METADATA_KEY", "WriteForwarder"]

log = structlog.get_logger("cronraft.relay")

LEADER_METADATA_KEY = "cronraft-leader"  # the redirect trailer (daemon.services.common)
APPLIED_METADATA_KEY = "cronraft-applied-index"  # the leader's applied index, answering a relayed write
APPLIED_WAIT_S = 2.0  # how long a follower waits to apply a relayed write before answering its caller
_SERVICE = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]


def _response_type(method: str) -> type[Message]:
    """The response message class of Scheduler `method` (a full method name)."""
    desc = _SERVICE.methods_by_name[method.rsplit("/", 1)[-1]]
    return message_factory.GetMessageClass(desc.output_type)


def _serialize(msg: Message) -> bytes:
    return msg.SerializeToString()


class WriteForwarder(grpc.aio.ServerInterceptor):
    """Forwards the writes a follower receives to the leader (installed after authentication: the
    caller is known when it runs)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(getattr(handler_call_details, "method", ""))
        if handler is None or not forwarded_method(method):
            return handler
        relay = self.relay
        if not relay.relays(handler_call_details.invocation_metadata):
            if relayed_hop(handler_call_details.invocation_metadata) is not None:
                return _answer_applied(handler, relay)  # the leader, for a follower's caller
            return handler
        response = _response_type(method)
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                hold_until = _hold_until(context)
                target = await relay.settle(hold_until - _now())
                if target is None:
                    return await inner_uu(request, context)

                def call(ch: Any, md: Metadata, timeout: float | None) -> Any:
                    stub = ch.unary_unary(
                        method, request_serializer=_serialize, response_deserializer=response.FromString
                    )
                    return stub(request, metadata=md, timeout=timeout)

                return await _forward(relay, target, hold_until, context, call)

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_unary is not None:  # ImportTasks: its stream is read once, never retried here
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                hold_until = _hold_until(context)
                target = await relay.settle(hold_until - _now())
                if target is None:
                    return await inner_su(requests, context)

                def call(ch: Any, md: Metadata, timeout: float | None) -> Any:
                    stub = ch.stream_unary(
                        method, request_serializer=_serialize, response_deserializer=response.FromString
                    )
                    return stub(_copy(requests), metadata=md, timeout=timeout)

                return await _forward(relay, target, 0.0, context, call)

            return handler._replace(stream_unary=stream_unary)
        return handler


Metadata = list[tuple[str, str | bytes]]


def _now() -> float:
    return asyncio.get_running_loop().time()


def _answer_applied(handler: Any, relay: Relay) -> Any:
    """`handler` answering a relayed write, once it succeeded, with this node's applied index (which
    includes the write: the leader answers a write once it applied it). Unary writes only: the one
    client-streaming write, ImportTasks, is redirected, never relayed (daemon.relay.core)."""
    if handler.unary_unary is None:
        return handler
    inner = handler.unary_unary

    async def unary_unary(request: Any, context: Any) -> Any:
        response = await inner(request, context)
        context.set_trailing_metadata(((APPLIED_METADATA_KEY, str(relay.applied_index())),))
        return response

    return handler._replace(unary_unary=unary_unary)


async def _caught_up(relay: Relay, call: Any, context: Any) -> None:
    """Wait until this node has applied what the leader had when it answered `call` (its trailer), for at
    most APPLIED_WAIT_S and never past the caller's deadline."""
    try:
        trailers = await call.trailing_metadata()
    except Exception:  # a call object without them (a test's fake): nothing to wait for
        return
    index = next((v for k, v in trailers or () if k == APPLIED_METADATA_KEY), None)
    if index is None or not str(index).isdigit():
        return  # a leader of an older release: no read-your-writes through the relay
    target = int(index)
    remaining = context.time_remaining()
    limit = APPLIED_WAIT_S if remaining is None else min(APPLIED_WAIT_S, remaining * 0.8)
    deadline = _now() + max(0.0, limit)
    while relay.applied_index() < target:
        if _now() >= deadline:
            log.info("relayed write answered before this node applied it", index=target)
            return
        await asyncio.sleep(0.005)


def _hold_until(context: Any) -> float:
    """Until when a write may wait for a leader to be known or ready: HOLD_S, or half the caller's
    remaining deadline."""
    remaining = context.time_remaining()
    hold = HOLD_S if remaining is None else max(0.0, min(HOLD_S, remaining / 2))
    return _now() + hold


async def _copy(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield request


def _redirect(e: grpc.aio.AioRpcError) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in (e.trailing_metadata() or ()) if k == LEADER_METADATA_KEY]


async def _forward(
    relay: Relay,
    target: str,
    hold_until: float,
    context: Any,
    call: Callable[[Any, Metadata, float | None], Any],
) -> Any:
    """Run one forwarded call with the caller's identity and deadline; its failure is the caller's. A
    leader that answers NotLeader proposed nothing (a new leader not ready yet, or one that just
    stepped down): the call goes again, to the leader this node knows then, until `hold_until`."""
    try:
        with relay.write_slot():
            metadata = relay.metadata(context)
            audit.forwarded()  # from here a refusal is the leader's, logged there, not by this node
            while True:
                try:
                    pending = call(relay.channel(target), metadata, context.time_remaining())
                    response = await pending
                    await _caught_up(relay, pending, context)
                    return response
                except grpc.aio.AioRpcError as e:
                    if not (e.code() == grpc.StatusCode.UNAVAILABLE and _redirect(e)) or _now() >= hold_until:
                        raise
                    last = e
                await asyncio.sleep(WATCH_S)
                again = await relay.settle(hold_until - _now())
                if again is None:  # this node leads now, or no leader: the leader's answer stands
                    raise _Last(last)
                target = again
    except CronraftError as refused:  # the bound, or a caller that is not relayed
        code = getattr(grpc.StatusCode, refused.grpc_code, grpc.StatusCode.INTERNAL)
        await context.abort(code, str(refused))
    except (grpc.aio.AioRpcError, _Last) as failure:
        err = failure.error if isinstance(failure, _Last) else failure
        code, details = err.code(), err.details() or ""
        trailers = _redirect(err)
        if code == grpc.StatusCode.UNAVAILABLE and not trailers:
            # The leader did not answer us: the redirect this node gave before relaying, so that the
            # client may still reach the leader itself.
            trailers = [(LEADER_METADATA_KEY, target)]
            details = f"relay to the leader at {target} failed ({details}); try the leader directly"
            log.info("forwarded write failed", leader=target, code=code.name)
        context.set_trailing_metadata(tuple(trailers))
        await context.abort(code, details)


class _Last(Exception):
    """The leader's last answer, kept when no other leader is known to ask."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error
