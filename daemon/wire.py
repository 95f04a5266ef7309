"""Checks of what arrives on the wire before anything is proposed: request fields and worker messages.

The bounds themselves are in `cronraft.bounds` (and, for task specs and calendars, in the state machine's
validation, which the servicers call too). Each check raises `InvalidArgument` naming the field and the
bound; a worker message over a bound ends its stream with INVALID_ARGUMENT (`worker_problem` says why),
and a Hello under another id than its sender's principal with PERMISSION_DENIED (`worker_identity_problem`).
A worker's results are cut to what the state machine keeps (`bounded_results`), never refused: a result
is the record of a run. Bytes that do not decode as the request's message are refused as INVALID_ARGUMENT
(`DecodingServer`), not UNKNOWN. What leaves is checked too: unary replies are redacted for the caller
(`daemon.redact`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.message import Message

from cronraft import bounds
from cronraft.daemon.redact import for_caller
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft.codec import id_bytes

if TYPE_CHECKING:
    from cronraft.daemon.security.authz import Principal

_CALENDAR_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{bounds.MAX_CALENDAR_NAME}}}")
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_length(text: str, field: str, most: int) -> None:
    if len(text) > most:
        raise InvalidArgument(field, f"longer than {most} characters")


def check_id(text: str, field: str) -> None:
    id_bytes(text, field=field)  # InvalidArgument naming `field` unless a 26-character id


def check_ids(ids: Sequence[str], field: str, most: int) -> None:
    """A list of execution ids (bulk operations): at most `most`, each an id."""
    if len(ids) > most:
        raise InvalidArgument(field, f"at most {most} ids, got {len(ids)}")
    for i, text in enumerate(ids):
        check_id(text, f"{field}[{i}]")


def check_limit(n: int, field: str, most: int) -> None:
    if not 0 <= n <= most:
        raise InvalidArgument(field, f"must be between 0 (the default) and {most}")


def calendar_name(name: str, field: str) -> None:
    if not _CALENDAR_NAME.fullmatch(name):
        raise InvalidArgument(
            field, f"not a calendar name: 1 to {bounds.MAX_CALENDAR_NAME} characters from A-Z a-z 0-9 _ . -"
        )


def executions_page_token(token: str) -> None:
    """ListExecutions' tokens are a nominal time: up to 20 digits, below 2^64."""
    if token and (len(token) > 20 or not token.isdigit() or not token.isascii() or int(token) >= 1 << 64):
        raise InvalidArgument("page_token", "not a token returned by a previous ListExecutions call")


# --------------------------------------------------------------------------------------- workers


def _printable(text: str) -> bool:
    return text.isprintable() and not any(c.isspace() for c in text)


def hello_problem(hello: worker_pb2.Hello) -> str:
    """Why a worker's Hello is refused ("" if it is not): `field: problem`."""
    if not hello.worker_id or len(hello.worker_id) > bounds.MAX_WORKER_ID or not _printable(hello.worker_id):
        return f"hello.worker_id: must be 1 to {bounds.MAX_WORKER_ID} printable characters without spaces"
    if not 0 <= hello.capacity <= bounds.MAX_WORKER_CAPACITY:
        return f"hello.capacity: must be between 0 and {bounds.MAX_WORKER_CAPACITY}"
    if len(hello.queues) > bounds.MAX_WORKER_QUEUES:
        return f"hello.queues: at most {bounds.MAX_WORKER_QUEUES} queues, got {len(hello.queues)}"
    for i, q in enumerate(hello.queues):
        if not _QUEUE.fullmatch(q):
            return (
                f"hello.queues[{i}]: must be 1..64 characters of [A-Za-z0-9_.-], not starting with a symbol"
            )
    if len(hello.labels) > bounds.MAX_WORKER_LABELS:
        return f"hello.labels: at most {bounds.MAX_WORKER_LABELS} labels, got {len(hello.labels)}"
    for k, v in hello.labels.items():
        if not k or len(k) > bounds.MAX_TAG_LEN or len(v) > bounds.MAX_TAG_LEN:
            most = bounds.MAX_TAG_LEN
            return f"hello.labels: keys 1 to {most} characters, values at most {most}"
    if len(hello.incarnation) > bounds.MAX_INCARNATION:
        return f"hello.incarnation: longer than {bounds.MAX_INCARNATION} characters"
    if len(hello.direct) > bounds.MAX_HELLO_DIRECT:
        return f"hello.direct: at most {bounds.MAX_HELLO_DIRECT} addresses, got {len(hello.direct)}"
    if any(len(a) > bounds.MAX_ADDRESS for a in hello.direct):
        return f"hello.direct: an address longer than {bounds.MAX_ADDRESS} characters"
    return ""


# Between a worker credential's principal and one instance's name in a worker id (`w1#pod-7f9c`).
INSTANCE_SEPARATOR = "#"


def worker_identity_problem(hello: worker_pb2.Hello, principal: Principal) -> str:
    """Why a Hello is refused for who sent it ("" if it is not): with authentication on, a worker's id is
    its principal's name (the token's principal or JWT subject, the certificate's identity), so that a
    worker credential connects as that one worker only and receives only its leases. With it off (the
    loopback single node: every caller is the anonymous principal), any id goes, as before.

    One credential may serve several worker processes (replicas of one Deployment): each connects as
    `PRINCIPAL#INSTANCE`, e.g. `w1#pod-7f9c`. `#` is not a principal character (cronraft.tokenfile), so
    such an id belongs to that principal alone; each instance is its own worker with its own leases."""
    if principal.source == "none" or hello.worker_id == principal.name:
        return ""
    name, hash_, instance = hello.worker_id.partition(INSTANCE_SEPARATOR)
    if hash_ and name == principal.name and instance and INSTANCE_SEPARATOR not in instance:
        return ""
    return (
        f"hello.worker_id: {hello.worker_id!r} is not this stream's principal {principal.name!r}; a worker "
        f"connects under its own name: start it with --id {principal.name} (or --id "
        f"{principal.name}{INSTANCE_SEPARATOR}INSTANCE for one of several), or give it the credential "
        f"of worker {hello.worker_id!r}"
    )


def worker_problem(msg: worker_pb2.WorkerMessage) -> str:
    """Why a message on an established worker stream is refused ("" if it is not)."""
    kind = msg.WhichOneof("kind")
    if kind == "heartbeat":
        hb = msg.heartbeat
        most = bounds.MAX_HEARTBEAT_LEASES
        if len(hb.leases) > most:
            return f"heartbeat.leases: at most {most} leases, got {len(hb.leases)}"
        if len(hb.finished) > most:
            return f"heartbeat.finished: at most {most} leases, got {len(hb.finished)}"
    elif kind == "results":
        n = len(msg.results.results)
        if n > bounds.MAX_RESULTS_PER_MESSAGE:
            return f"results.results: at most {bounds.MAX_RESULTS_PER_MESSAGE} results per message, got {n}"
    elif kind == "output":
        size = len(msg.output.data)
        if size > bounds.MAX_OUTPUT_CHUNK_BYTES:
            return f"output.data: at most {bounds.MAX_OUTPUT_CHUNK_BYTES} bytes per chunk, got {size}"
    elif kind == "hello":
        return "hello: only the first message of a stream is a Hello"
    else:
        return "kind: empty message (set heartbeat, results or output)"
    return ""


class ByteBudget:
    """A token bucket of bytes per second: `charge(n, now_s)` says how long to wait before reading
    more (0.0 while within the rate and its burst). Pure: the caller passes the time."""

    def __init__(self, rate_bytes_s: float, burst_bytes: float, now_s: float) -> None:
        self.rate = rate_bytes_s
        self.burst = burst_bytes
        self._level = burst_bytes
        self._at = now_s

    def charge(self, n: int, now_s: float) -> float:
        self._level = min(self.burst, self._level + (now_s - self._at) * self.rate)
        self._at = now_s
        self._level -= n
        return 0.0 if self._level >= 0 else -self._level / self.rate


def bounded_results(results: Sequence[common_pb2.AttemptResult]) -> list[common_pb2.AttemptResult]:
    """The results cut to what the state machine keeps of them (the last MAX_RESULT_TAIL_BYTES of each
    tail, the first MAX_RETURN_VALUE_BYTES of a return value, MAX_RESULT_ERROR characters of an error),
    so that the entry carrying them is no larger than needed."""
    out = []
    tail, ret, err = bounds.MAX_RESULT_TAIL_BYTES, bounds.MAX_RETURN_VALUE_BYTES, bounds.MAX_RESULT_ERROR
    for r in results:
        if (
            len(r.stdout_tail) > tail
            or len(r.stderr_tail) > tail
            or len(r.return_value) > ret
            or len(r.error) > err
        ):
            cut = common_pb2.AttemptResult()
            cut.CopyFrom(r)
            cut.stdout_tail = r.stdout_tail[-tail:]
            cut.stderr_tail = r.stderr_tail[-tail:]
            cut.return_value = r.return_value[:ret]
            cut.error = r.error[:err]
            out.append(cut)
        else:
            out.append(r)
    return out


# ---------------------------------------------------------------------------------- undecodable bytes


class _Undecodable:
    """A request whose bytes are not a message of its type (what the deserializer hands on instead of
    raising: gRPC answered those with UNKNOWN "Unexpected DecodeError")."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _lenient(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as e:  # protobuf's DecodeError and friends
            return _Undecodable(f"request: the bytes of a {method} request are not a valid message ({e})")

    return parse


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], bad: _Undecodable) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.problem)
    raise AssertionError("unreachable")  # pragma: no cover


async def _checked(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            await _refuse(context, request)
        yield request


def _for_caller(reply: Any) -> Any:
    # A servicer that aborted returns None; anything else is a message.
    return for_caller(reply) if isinstance(reply, Message) else reply


def decoded(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with requests that do not decode refused as INVALID_ARGUMENT (naming the request), and
    its unary replies redacted for the caller (`daemon.redact.for_caller`: secret values of task specs
    and fencing tokens, for callers without the `secrets` permission). Streamed replies are not: the
    worker stream's leases must carry the payload as stored, and a backup's chunks are the store's bytes
    (admin only)."""
    h: Any = handler
    parse = _lenient(h.request_deserializer, method)
    if h.unary_unary is not None:
        inner_uu = h.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Undecodable):
                await _refuse(context, request)
            return _for_caller(await inner_uu(request, context))

        return h._replace(request_deserializer=parse, unary_unary=unary_unary)  # type: ignore[no-any-return]
    if h.stream_unary is not None:
        inner_su = h.stream_unary

        async def stream_unary(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            return _for_caller(await inner_su(_checked(requests, context), context))

        return h._replace(request_deserializer=parse, stream_unary=stream_unary)  # type: ignore[no-any-return]
    if h.stream_stream is not None:
        inner_ss = h.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for reply in inner_ss(_checked(requests, context), context):
                yield reply

        return h._replace(request_deserializer=parse, stream_stream=stream_stream)  # type: ignore[no-any-return]
    if h.unary_stream is not None:  # Cluster.Backup: its chunks are the store's bytes, never redacted
        inner_us = h.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(context, request)
            # aclosing: a caller that hangs up closes the servicer's generator now (a backup's spool)
            async with contextlib.aclosing(inner_us(request, context)) as replies:
                async for reply in replies:
                    yield reply

        return h._replace(request_deserializer=parse, unary_stream=unary_stream)  # type: ignore[no-any-return]
    return handler


class _DecodedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        method = str(getattr(handler_call_details, "method", "")).rsplit("/", 1)[-1]
        return None if handler is None else decoded(handler, method)


class DecodingServer:
    """Stands for a `grpc.aio.Server` in the generated `add_*Servicer_to_server` functions, and adds their
    handlers with `decoded` requests."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_DecodedGeneric(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        wrapped = {name: decoded(h, name) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)


__all__ = [
    "ByteBudget",
    "DecodingServer",
    "bounded_results",
    "calendar_name",
    "check_id",
    "check_ids",
    "check_length",
    "check_limit",
    "decoded",
    "executions_page_token",
    "hello_problem",
    "worker_identity_problem",
    "worker_problem",
]
