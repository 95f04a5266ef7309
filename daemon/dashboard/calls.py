"""The dashboard's calls into the node's own servicers, in process, through the gRPC interceptors.

The JSON API does not re-implement who may do what: each request becomes the request message of one RPC,
and runs the servicer's method behind the same interceptors the gRPC server installs (authentication
and RPC_ROLES, then the audit call tracking), in the same order, with a small servicer context
(`HttpCallContext`) in place of grpc.aio's. So the caller is authenticated by the same `Authenticator`
(the bearer token of the `Authorization` header, or the client certificate of an HTTPS listener with
mutual TLS), the principal reaches the servicer in the same context variable, and namespaces, roles,
redaction, bounds and the audit trail are exactly the gRPC API's.

A servicer ends a failed call with `context.abort(code, message)`; `HttpCallContext.abort` raises
`CallFailed` instead, carrying the gRPC status code, the message, the field of an InvalidArgument and
the leader a follower named (`cronraft-leader` trailing metadata). `http_status` maps the code to the
HTTP answer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from cronraft import errors

__all__ = ["CallFailed", "HttpCallContext", "InProcessCalls", "PeerInfo", "auth_context", "http_status"]

LEADER_METADATA_KEY = "cronraft-leader"  # the trailer a follower's NotLeader sets (daemon.services)

# gRPC status -> HTTP status of the JSON API (docs/dashboard.md, "Errors").
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


class CallFailed(Exception):
    """A call that ended with a gRPC status other than OK (or an error of the dashboard itself)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, field: str | None = None, leader: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.leader = leader

    @classmethod
    def of(cls, e: errors.CronraftError) -> CallFailed:
        """The failure a servicer would send for `e` (the dashboard's own checks use the same tree)."""
        code = getattr(grpc.StatusCode, e.grpc_code, grpc.StatusCode.INTERNAL)
        field = e.field if isinstance(e, errors.InvalidArgument) else None
        leader = e.leader_address if isinstance(e, errors.NotLeader) else None
        return cls(code, str(e), field=field, leader=leader)

    @property
    def status(self) -> int:
        return http_status(self.code)


@dataclass(frozen=True)
class PeerInfo:
    """Who is on the other end of the HTTP connection: its address (gRPC's peer form) and, over HTTPS
    with a client certificate, the certificate as `ssl.SSLSocket.getpeercert()` returns it."""

    address: str  # e.g. "ipv4:127.0.0.1:53012"
    cert: Mapping[str, Any] | None = None


def auth_context(cert: Mapping[str, Any] | None) -> dict[str, list[bytes]]:
    """A verified client certificate in the shape of grpc's `ServicerContext.auth_context()`: the
    identities the Authenticator maps through `auth.cert_roles` (subject alternative names, then the
    common name). Empty without a certificate."""
    if not cert:
        return {}
    # grpc lists DNS names, IP addresses and URIs among the subject alternative names.
    kinds = ("DNS", "IP Address", "URI")
    sans = [str(value).encode() for kind, value in cert.get("subjectAltName", ()) if kind in kinds]
    cns = [
        str(value).encode() for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    out: dict[str, list[bytes]] = {}
    if sans:
        out["x509_subject_alternative_name"] = sans
    if cns:
        out["x509_common_name"] = cns
    return out


class HttpCallContext:
    """What the servicers and interceptors use of `grpc.aio.ServicerContext`, for one in-process call."""

    def __init__(self, peer: PeerInfo, metadata: Sequence[tuple[str, str]]) -> None:
        self._peer = peer
        self._metadata = tuple(metadata)
        self._trailing: tuple[tuple[str, str], ...] = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def peer(self) -> str:
        return self._peer.address

    def auth_context(self) -> dict[str, list[bytes]]:
        return auth_context(self._peer.cert)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple((str(k), str(v)) for k, v in metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:  # the generated UNIMPLEMENTED stubs call these
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        """Like grpc.aio's: ends the call by raising. The error tree's field is read from the error
        being handled (a servicer aborts inside `except CronraftError`), else from "field: problem"."""
        if trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        self._code, self._details = code, details
        leader = next((v for k, v in self._trailing if k == LEADER_METADATA_KEY), "") or None
        raise CallFailed(code, details, field=_field_of(code, details), leader=leader)


def _field_of(code: grpc.StatusCode, details: str) -> str | None:
    """The field an INVALID_ARGUMENT names: its details read "field: problem" (cronraft.errors)."""
    if code != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    name, sep, _ = details.partition(": ")
    return name if sep and name and " " not in name else None


@dataclass(frozen=True)
class _CallDetails:
    """grpc.HandlerCallDetails of an in-process call."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


Behaviour = Callable[[Any, Any], Awaitable[Any]]


MAX_IN_FLIGHT = 256  # dashboard calls served at once; more are refused 429 (gRPC has its own bound)


class InProcessCalls:
    """Runs servicer methods as the gRPC server would, behind `interceptors` (the node's list, outermost
    first: authentication and roles, then the audit call tracking), at most `max_in_flight` at once."""

    def __init__(
        self, interceptors: Sequence[grpc.aio.ServerInterceptor], *, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self.interceptors = tuple(interceptors)
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def call(
        self,
        full_method: str,
        behaviour: Behaviour,
        request: Message,
        *,
        peer: PeerInfo,
        authorization: str | None,
    ) -> Any:
        """`behaviour(request, context)` for RPC `full_method` ("/cronraft.v1.Scheduler/PauseTask") on
        behalf of the HTTP caller; CallFailed when the call ends with an error status."""
        metadata = (("authorization", authorization),) if authorization is not None else ()
        details = _CallDetails(full_method, metadata)
        context = HttpCallContext(peer, metadata)

        async def resolve(i: int, d: Any) -> Any:  # the chain grpc.aio's server builds
            if i == len(self.interceptors):
                return grpc.unary_unary_rpc_method_handler(behaviour)
            return await self.interceptors[i].intercept_service(functools.partial(resolve, i + 1), d)

        async def run() -> Any:
            handler = await resolve(0, details)
            return await handler.unary_unary(request, context)

        if self.in_flight >= self.max_in_flight:
            raise CallFailed(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the dashboard serves at most {self.max_in_flight} calls at once; try again shortly",
            )
        # A task of its own, as grpc.aio serves each RPC: the principal and the audit call the
        # interceptors set in context variables stay in that task (an HTTP connection's task serves the
        # next request too).
        self.in_flight += 1
        try:
            return await asyncio.create_task(run())
        except CallFailed:
            raise
        except NotImplementedError:  # the generated stub of an RPC this node's servicer lacks
            raise CallFailed(
                grpc.StatusCode.UNIMPLEMENTED, f"{full_method}: not served by this node"
            ) from None
        except errors.CronraftError as e:  # raised past a servicer's guard (a bug): the same mapping
            raise CallFailed.of(e) from e
        finally:
            self.in_flight -= 1
