"""The one bounded poll of the tests: wait for a condition that has no event to wait on.

Prefer an event (a queue, an asyncio.Event, a process exit) when the code under test offers one; poll
only what it does not expose (a leader elected in another process, a file written, an outbox emptied).
On timeout the failure (`WaitTimeout`) names what was awaited and the last value (or error) the
condition gave, so a failed run says how far things got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")

_Ignored = type[Exception] | tuple[type[Exception], ...]


class WaitTimeout(AssertionError, TimeoutError):
    """A bounded wait ran out: a failed assertion to pytest, a TimeoutError to code that retries (the
    fault harness's nemesis, when no leader comes)."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    ignore: _Ignored = (),
) -> T:
    """Call `predicate` every `interval` seconds until it returns a truthy value, and return that value.

    `ignore`: exceptions that count as "not yet" (e.g. `grpc.RpcError` while processes start); any other
    exception propagates. Raises WaitTimeout naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = _Last()
    while True:
        try:
            value = predicate()
        except ignore as e:
            last.error = e
        else:
            if value:
                return value
            last.value = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(last.message(timeout, what))
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    ignore: _Ignored = (),
) -> T:
    """`wait_until` for a coroutine: sleeps with `asyncio.sleep`, so the event loop keeps running."""
    deadline = time.monotonic() + timeout
    last = _Last()
    while True:
        try:
            value = predicate()
        except ignore as e:
            last.error = e
        else:
            if value:
                return value
            last.value = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(last.message(timeout, what))
        await asyncio.sleep(interval)


class _Last:
    """What the condition last gave: its last (falsy) value and the last ignored error, if any."""

    def __init__(self) -> None:
        self.value: object = None
        self.error: Exception | None = None

    def message(self, timeout: float, what: str) -> str:
        error = "" if self.error is None else f", last error: {self.error!r}"
        return f"timed out after {timeout}s waiting for {what} (last value: {self.value!r}{error})"
