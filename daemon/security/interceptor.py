"""The one server interceptor that authenticates every call (daemon.security.authn) and checks its role
(daemon.security.authz.RPC_ROLES) before the servicer runs, refusing with UNAUTHENTICATED or
PERMISSION_DENIED and logging `call refused`."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import structlog

from cronraft.daemon.security.authn import Authenticator
from cronraft.daemon.security.authz import PUBLIC, RPC_ROLES, Principal, _current, namespaced
from cronraft.errors import PermissionDenied, Unauthenticated

__all__ = ["AuthInterceptor"]

log = structlog.get_logger("cronraft.security")


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call and checks RPC_ROLES before the servicer runs; the servicer then finds
    the caller in `current_principal()`. A method missing from the table is refused (fail closed)."""

    def __init__(self, authenticator: Authenticator, table: Mapping[str, str | None] = RPC_ROLES) -> None:
        self.authenticator = authenticator
        self.table = table

    def check(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        if method not in self.table:
            raise PermissionDenied(f"{_short(method)}: not in the role table; refused")
        needed = self.table[method]
        assert needed is not None
        try:
            principal = self.authenticator.authenticate(metadata, auth_context)
        except Unauthenticated as e:
            raise Unauthenticated(f"{_short(method)} needs role {needed}: {e}") from None
        if namespaced(method):
            # The servicer checks the namespace it acts in (require_role); here, any namespace will do.
            if not principal.has_somewhere(needed):
                raise PermissionDenied(
                    f"{_short(method)} needs role {needed} (or one above it) in some namespace; "
                    f"{principal.name} has {principal.describe_roles()}"
                )
        elif not principal.has(needed):
            raise PermissionDenied(
                f'{_short(method)} needs role {needed} (or one above it) in every namespace ("*"); '
                f"{principal.name} has {principal.describe_roles()}"
            )
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(getattr(handler_call_details, "method", ""))
        if handler is None or (method in self.table and self.table[method] is PUBLIC):
            return handler
        metadata = handler_call_details.invocation_metadata
        return _guarded(handler, lambda context: self.check(method, metadata, context.auth_context()))


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], e: Unauthenticated | PermissionDenied) -> None:
    code = (
        grpc.StatusCode.UNAUTHENTICATED
        if isinstance(e, Unauthenticated)
        else grpc.StatusCode.PERMISSION_DENIED
    )
    log.info("call refused", code=code.name, problem=str(e), peer=context.peer())
    await context.abort(code, str(e))


# How long a refused streaming call waits for the client's first message before its status is sent.
_FIRST_MESSAGE_WAIT_S = 2.0


def _guarded(handler: Any, check: Callable[[Any], Principal]) -> Any:
    """`handler` whose behaviour first runs `check(context)` and sets the principal for the servicer."""

    async def admit(context: Any) -> contextvars.Token[Principal] | None:
        try:
            return _current.set(check(context))
        except (Unauthenticated, PermissionDenied) as e:
            await _refuse(context, e)
            return None

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await admit(context)
            return await inner_uu(request, context)

        return handler._replace(unary_unary=unary_unary)

    async def admit_stream(requests: Any, context: Any) -> None:
        """`admit` for a call whose client streams: a refusal first takes the client's first message.
        Aborting before it arrives races the client's write, and grpc.aio's client then reports its
        failed write as INTERNAL "Internal error from Core" instead of our status (grpc/grpc#36066):
        a worker refused for its token would log a meaningless error."""
        try:
            _current.set(check(context))
        except (Unauthenticated, PermissionDenied) as e:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(anext(aiter(requests)), _FIRST_MESSAGE_WAIT_S)
            await _refuse(context, e)

    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await admit_stream(requests, context)
            return await inner_su(requests, context)

        return handler._replace(stream_unary=stream_unary)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await admit(context)
            async for reply in _replies(inner_us(request, context)):
                yield reply

        return handler._replace(unary_stream=unary_stream)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        await admit_stream(requests, context)
        async for reply in _replies(inner_ss(requests, context)):
            yield reply

    return handler._replace(stream_stream=stream_stream)


async def _replies(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's replies, whether it is an async generator or a coroutine returning one."""
    if hasattr(result, "__aiter__"):
        async for reply in result:
            yield reply
    else:  # a coroutine: writes with context.write() and returns None
        await result
