"""`WriteForwarder`: on a follower, the Scheduler methods that change something (`forwarded_method`) are
forwarded to the leader as they came, for their caller (daemon.security.relayed), and the leader's
answer (its status, details and redirect trailer too) is the caller's answer. On the leader, with
relaying off, while no leader is known, and for a call another member relayed, the servicer runs as
before: a follower's servicer answers UNAVAILABLE with the leader's address (the redirect).

The request id travels unchanged, so a client's retry after a timeout is deduplicated by the cluster as
if it had called the leader itself. The caller's deadline is the forwarded call's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import message_factory
from google.protobuf.message import Message

from cronraft.daemon.relay.core import Relay, forwarded_method
from cronraft.errors import CronraftError
from cronraft.proto.v1 import scheduler_pb2

__all__ = ["LEADER_METADATA_KEY", "WriteForwarder"]

log = structlog.get_logger("cronraft.relay")

LEADER_METADATA_KEY = "cronraft-leader"  # the redirect trailer (daemon.services.common)
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
            return handler
        response = _response_type(method)
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                target = relay.target()
                if target is None:
                    return await inner_uu(request, context)
                call = relay.channel(target).unary_unary(
                    method, request_serializer=_serialize, response_deserializer=response.FromString
                )
                return await _forward(
                    relay, target, context, lambda md, t: call(request, metadata=md, timeout=t)
                )

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_unary is not None:  # ImportTasks
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                target = relay.target()
                if target is None:
                    return await inner_su(requests, context)
                call = relay.channel(target).stream_unary(
                    method, request_serializer=_serialize, response_deserializer=response.FromString
                )
                return await _forward(
                    relay, target, context, lambda md, t: call(_copy(requests), metadata=md, timeout=t)
                )

            return handler._replace(stream_unary=stream_unary)
        return handler


async def _copy(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield request


async def _forward(
    relay: Relay,
    target: str,
    context: Any,
    invoke: Callable[[list[tuple[str, str | bytes]], float | None], Any],
) -> Any:
    """Run one forwarded call with the caller's identity and deadline; its failure is the caller's."""
    try:
        with relay.write_slot():
            metadata = relay.metadata(context)
            return await invoke(metadata, context.time_remaining())  # None: no deadline, as the caller
    except CronraftError as e:  # the bound, or a caller that is not relayed
        await context.abort(getattr(grpc.StatusCode, e.grpc_code, grpc.StatusCode.INTERNAL), str(e))
    except grpc.aio.AioRpcError as e:
        code, details = e.code(), e.details() or ""
        trailers = [(k, v) for k, v in (e.trailing_metadata() or ()) if k == LEADER_METADATA_KEY]
        if code == grpc.StatusCode.UNAVAILABLE and not trailers:
            # The leader did not answer us: the redirect this node gave before relaying, so that the
            # client may still reach the leader itself.
            trailers = [(LEADER_METADATA_KEY, target)]
            details = f"relay to the leader at {target} failed ({details}); try the leader directly"
            log.info("forwarded write failed", leader=target, code=code.name)
        context.set_trailing_metadata(tuple(trailers))
        await context.abort(code, details)
