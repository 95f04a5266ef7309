"""Python handlers: named functions a worker runs in-process for `handler` payloads (docs/payloads.md).

Register a handler on a worker you build yourself::

    from cronraft.client.handlers import HandlerContext
    from cronraft.client.worker import Worker, WorkerConfig

    worker = Worker(WorkerConfig(servers=("127.0.0.1:50051",), worker_id="w1", outbox_dir=Path("outbox")))

    @worker.handler("send-reminder")
    async def send_reminder(ctx: HandlerContext, user_id: str) -> dict[str, str]:
        await mailer.send(user_id, idempotency_key=ctx.execution_id)
        return {"sent_to": user_id}

or on the module-level registry, which every `Worker` (and so `schedworker`) also consults::

    # myapp/jobs.py
    from cronraft.client.handlers import HandlerContext, handler

    @handler("purge-sessions")
    def purge_sessions(ctx: HandlerContext, older_than_days: int = 30) -> int:
        return db.purge(older_than_days)

    $ schedworker --server 127.0.0.1:50051 --handlers myapp.jobs     # --handlers is repeatable

`schedworker --handlers MODULE` imports MODULE (the current directory is on the import path, as with
`python -m`) before it connects; the imports register the handlers.

The contract of a call:
- The first argument is a `HandlerContext` (the attempt's identity and a `cancelled` event); the
  payload's `args_json` object is passed as keyword arguments.
- `async def` handlers run on the worker's event loop: they must not block it. Plain functions run in a
  daemon thread of their own.
- The return value is JSON-encoded (UTF-8, compact) into `AttemptResult.return_value`: `None` becomes
  `null`. More than `max_return_value_bytes` (64 KiB by default), or a value JSON cannot encode, fails
  the attempt.
- A raised exception fails the attempt (exit code 1): `error` is "Type: message", the traceback's tail
  is the result's stderr tail.
- A stop (timeout, cancel, revoked or expired lease, shutdown) sets `ctx.cancelled` and cancels an async
  handler's task (`CancelledError` is raised at its current `await`; it may clean up within the worker's
  kill grace). A sync handler cannot be interrupted: it is abandoned, runs on in its thread, and its
  result is ignored. Long sync handlers should poll `ctx.cancelled.is_set()` and return early.

Exit codes: 0 success, 1 the handler failed (exception, bad return value), 126 the call could not be
made (`args_json` is not a JSON object, or does not fit the handler's parameters), 127 no handler of
that name is registered in this worker.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cronraft.client._inprocess_runner import InProcessIO, WorkOutcome, call_in_thread
from cronraft.client._runner import format_token
from cronraft.proto.v1 import common_pb2, worker_pb2

__all__ = [
    "MAX_RETURN_VALUE_BYTES",
    "HandlerContext",
    "HandlerRegistry",
    "handler",
    "import_handler_modules",
    "registry",
]

MAX_RETURN_VALUE_BYTES = 64 * 1024
HANDLER_FAILED_EXIT_CODE = 1
CANNOT_CALL_EXIT_CODE = 126
UNKNOWN_HANDLER_EXIT_CODE = 127
_MAX_ERROR_CHARS = 2000

Handler = Callable[..., Any]
_H = TypeVar("_H", bound=Handler)


@dataclass(frozen=True)
class HandlerContext:
    """The attempt a handler call belongs to."""

    execution_id: str  # the idempotency key: the same for every attempt of one execution
    task_id: str
    task_name: str
    attempt: int  # 1 for the first attempt
    nominal_time_ms: int  # the fire's nominal (scheduled) time, Unix ms
    fencing_token: str  # "term.index"; strictly increases from one lease to the next
    cancelled: asyncio.Event = field(compare=False, repr=False)  # set when the attempt is stopped

    @property
    def nominal_time(self) -> datetime:
        return datetime.fromtimestamp(self.nominal_time_ms / 1000, UTC)

    @classmethod
    def for_lease(cls, lease: worker_pb2.Lease, cancelled: asyncio.Event) -> HandlerContext:
        # Its fields set in its __dict__, not through the frozen dataclass's __init__ (one
        # object.__setattr__ per field): 2.2 -> 1.0 us, once per handler call. No __post_init__ to skip.
        ctx = object.__new__(cls)
        ctx.__dict__.update(
            execution_id=lease.execution_id,
            task_id=lease.task_id,
            task_name=lease.task_name,
            attempt=lease.attempt,
            nominal_time_ms=lease.nominal_time_ms,
            fencing_token=format_token(lease.token),
            cancelled=cancelled,
        )
        return ctx


class HandlerRegistry:
    """Handlers by name. A lookup that misses falls back on `parent` (if any)."""

    def __init__(self, parent: HandlerRegistry | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        self._parent = parent

    def register(self, name: str, fn: Handler) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"handler name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise TypeError(f"handler {name!r}: {fn!r} is not callable")
        existing = self._handlers.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"handler {name!r} is already registered (by {_describe_fn(existing)})")
        self._handlers[name] = fn

    def unregister(self, name: str) -> None:
        """Forget the handler `name` of this registry (not of its parent); unknown names are ignored."""
        self._handlers.pop(name, None)

    def handler(self, name: str) -> Callable[[_H], _H]:
        """Decorator: register the function as the handler `name`; the function is returned as is."""

        def decorate(fn: _H) -> _H:
            self.register(name, fn)
            return fn

        return decorate

    def get(self, name: str) -> Handler | None:
        found = self._handlers.get(name)
        if found is None and self._parent is not None:
            return self._parent.get(name)
        return found

    def names(self) -> list[str]:
        inherited = self._parent.names() if self._parent is not None else []
        return sorted({*self._handlers, *inherited})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


registry = HandlerRegistry()
"""The module-level registry: what `handler()` registers on, and what every `Worker` falls back on."""


def handler(name: str) -> Callable[[_H], _H]:
    """Decorator: register the function as the handler `name` on the module-level registry."""
    return registry.handler(name)


def import_handler_modules(modules: Iterable[str]) -> None:
    """Import each module (so that its `@handler` decorators run); the current directory is searched."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        importlib.import_module(module)


def _describe_fn(fn: Handler) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _error_text(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = f"{name}: {exc}" if str(exc) else name
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _failed(exit_code: int, error: str) -> WorkOutcome:
    return WorkOutcome(common_pb2.ATTEMPT_FAILED, exit_code=exit_code, error=error)


def _raised(name: str, exc: BaseException, io: InProcessIO) -> WorkOutcome:
    # Skip our own frames (those that made the call): the trace starts in the user's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    io.write(worker_pb2.STDERR, "".join(traceback.format_exception(type(exc), exc, tb)).encode())
    return _failed(HANDLER_FAILED_EXIT_CODE, f"handler {name!r} raised {_error_text(exc)}")


def _arguments(fn: Handler, args_json: str) -> dict[str, Any] | str:
    """The keyword arguments of the call, or an error text."""
    try:
        kwargs = json.loads(args_json) if args_json.strip() else {}
    except ValueError as exc:
        return f"payload.handler.args_json: not valid JSON ({exc})"
    if not isinstance(kwargs, dict):
        return f"payload.handler.args_json: must be a JSON object, got {type(kwargs).__name__}"
    try:
        signature = _signature(fn)
    except (TypeError, ValueError):  # some callables have none: let the call itself decide
        return kwargs
    if kwargs:
        problem = _bind_problem(signature, kwargs)
    else:  # the usual call (no arguments): checked once per handler, as its signature is read once
        try:
            problem = _ALONE[fn]
        except KeyError:
            problem = _ALONE[fn] = _bind_problem(signature, kwargs)
        except TypeError:
            problem = _bind_problem(signature, kwargs)
    return problem or kwargs


def _bind_problem(signature: inspect.Signature, kwargs: dict[str, Any]) -> str:
    try:
        signature.bind(None, **kwargs)
    except TypeError as exc:
        return f"args_json does not fit its parameters: {exc}"
    return ""


# Per handler function, computed once (inspect is slow, and a busy worker calls the same few handlers
# thousands of times a second). Unhashable callables are inspected on every call.
_SIGNATURES: dict[Any, inspect.Signature] = {}
_ASYNC: dict[Any, bool] = {}
_ALONE: dict[Any, str] = {}  # why a call with no arguments does not fit, "" if it does


def _signature(fn: Handler) -> inspect.Signature:
    try:
        return _SIGNATURES[fn]
    except KeyError:
        signature = _SIGNATURES[fn] = inspect.signature(fn)
        return signature
    except TypeError:
        return inspect.signature(fn)


def _is_async(fn: Handler) -> bool:
    try:
        return _ASYNC[fn]
    except KeyError:
        result = _ASYNC[fn] = _check_async(fn)
        return result
    except TypeError:
        return _check_async(fn)


def _check_async(fn: Handler) -> bool:
    # An instance whose class has `async def __call__` is async too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


_NULL = b"null"  # None as encode_return_value encodes it
# What a handler returning None ends with (most do): made once, it is frozen.
_SUCCEEDED_NULL = WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED, return_value=_NULL)


def encode_return_value(value: Any, limit: int) -> bytes | str:
    """The JSON encoding of `value`, or an error text."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        return f"return value is not JSON-serialisable: {exc}"
    if len(encoded) > limit:
        return f"return value too large: {len(encoded)} bytes as JSON (limit {limit})"
    return encoded


async def run_handler(
    handlers: HandlerRegistry,
    lease: worker_pb2.Lease,
    io: InProcessIO,
    *,
    max_return_value_bytes: int = MAX_RETURN_VALUE_BYTES,
) -> WorkOutcome:
    """Call the handler of `lease`'s payload (`InProcessWork` for `_inprocess_runner.InProcessRunner`)."""
    payload = lease.payload.handler
    name = payload.name
    fn = handlers.get(name)
    if fn is None:
        known = ", ".join(handlers.names()) or "none"
        return _failed(
            UNKNOWN_HANDLER_EXIT_CODE,
            f"no handler named {name!r} is registered in this worker (registered: {known}); "
            "register it with @worker.handler(name) or load its module with schedworker --handlers",
        )
    kwargs = _arguments(fn, payload.args_json)
    if isinstance(kwargs, str):
        return _failed(CANNOT_CALL_EXIT_CODE, f"handler {name!r}: {kwargs}")
    ctx = HandlerContext.for_lease(lease, io.cancelled)
    try:
        if _is_async(fn):
            value = await fn(ctx, **kwargs)
        else:

            def call() -> tuple[Any, BaseException | None]:
                try:
                    return fn(ctx, **kwargs), None
                except BaseException as exc:  # SystemExit too: it would end the thread silently
                    return None, exc

            value, error = await call_in_thread(call, name=f"handler {name} {ctx.execution_id}")
            if error is not None:
                return _raised(name, error, io)
            if inspect.isawaitable(value):  # a plain function that returned a coroutine
                value = await value
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # SystemExit and friends too: they must not end the worker's loop
        return _raised(name, exc, io)
    if value is None and max_return_value_bytes >= len(_NULL):  # most handlers return nothing
        return _SUCCEEDED_NULL
    encoded = encode_return_value(value, max_return_value_bytes)
    if isinstance(encoded, str):
        return _failed(HANDLER_FAILED_EXIT_CODE, f"handler {name!r}: {encoded}")
    return WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED, return_value=encoded)
