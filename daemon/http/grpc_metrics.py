"""gRPC calls served by this node, by method and status code, with their latency: a server interceptor.

It is the node's first interceptor, so calls refused by authentication (UNAUTHENTICATED,
PERMISSION_DENIED) are counted too. Methods are the proto services' (a bounded set); a call to an
unknown method never reaches a handler and is not counted. The latency of a streaming call is its
lifetime (a worker's `Connect` stream lasts as long as the worker stays connected).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def split_method(full: str) -> tuple[str, str]:
    """ "/cronraft.v1.Scheduler/CreateTask" -> ("cronraft.v1.Scheduler", "CreateTask")."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code(context: Any, exc: BaseException | None) -> str:
    """The status a call ended with: what the servicer set or aborted with, else what the exception means."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client went away
        return "CANCELLED"
    return "UNKNOWN"


class GrpcMetrics(grpc.aio.ServerInterceptor):
    """`cronraft_grpc_requests_total{service, method, code}` and `cronraft_grpc_request_seconds{service,
    method}`, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cronraft_grpc_requests",
            "gRPC calls this node served, by service, method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "cronraft_grpc_request_seconds",
            "Time this node took to serve a gRPC call (a stream: its lifetime), by service and method.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _done(
        self, service: str, method: str, started: float, context: Any, exc: BaseException | None
    ) -> None:
        self.seconds.labels(service, method).observe(time.perf_counter() - started)
        self.requests.labels(service, method, _code(context, exc)).inc()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, method = split_method(str(getattr(handler_call_details, "method", "")))
        done = self._done

        if handler.unary_unary is not None or handler.stream_unary is not None:
            streaming = handler.unary_unary is None
            inner = handler.stream_unary if streaming else handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    reply = await inner(request, context)
                except BaseException as e:
                    done(service, method, started, context, e)
                    raise
                done(service, method, started, context, None)
                return reply

            return handler._replace(**{"stream_unary" if streaming else "unary_unary": unary})

        streaming = handler.unary_stream is None
        inner_stream = handler.stream_stream if streaming else handler.unary_stream

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for reply in result:
                        yield reply
                else:  # a coroutine that writes with context.write() and returns None
                    await result
            except BaseException as e:
                done(service, method, started, context, e)
                raise
            done(service, method, started, context, None)

        return handler._replace(**{"stream_stream" if streaming else "unary_stream": stream})


__all__ = ["GrpcMetrics", "split_method"]
