"""Running one attempt of a lease on this machine: spawn, capture, time out, kill, report.

Two runners share one contract (`Runner`): `await run()` once, returning the `AttemptResult`; anyone
may call `stop(reason)` at any time; the first reason decides the outcome. A runner knows nothing of
gRPC or leases' renewal: the worker decides *when* to stop, the runner decides *how*.

The two runners: `_process_runner.AttemptRunner` (argv and shell payloads, as process groups) and
`_inprocess_runner.InProcessRunner` (HTTP requests and Python handlers, as asyncio tasks). This module
holds what they share: the contract, stop reasons, tails and the result building of `RunnerBase`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from cronraft.clock import Clock
from cronraft.proto.v1 import common_pb2, worker_pb2

DEFAULT_OUTPUT_TAIL_BYTES = 64 * 1024
DEFAULT_KILL_GRACE_S = 5.0

FENCED_ERROR = "lease expired before renewal; attempt killed (self-fenced)"
# Exit code of an attempt that has none: an in-process attempt stopped, or an HTTP request that got no
# response.
NO_EXIT_CODE = -1

# Where a runner writes what its attempt prints, piece by piece (`stream`, `data`). It answers None, or a
# future to wait for before writing more (backpressure: the worker's live output has no room left,
# client/worker/live_output.py): a writer that can wait does (AttemptRunner stops reading the payload's
# pipes), one that cannot (in-process work) goes on and its oldest unsent bytes are dropped.
OutputSink = Callable[["worker_pb2.OutputStream.ValueType", bytes], "asyncio.Future[None] | None"]
# The most a writer that waits for room passes its sink at once (AttemptRunner's reads of a pipe).
MAX_OUTPUT_PIECE_BYTES = 64 * 1024


class StopReason(enum.Enum):
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REVOKED = "revoked"
    FENCED = "fenced"
    SHUTDOWN = "shutdown"


# (outcome, error); `{action}` says what was done to the attempt, `{timeout_ms}` is the lease's timeout.
_STOP_RESULT: dict[StopReason, tuple[common_pb2.AttemptOutcome.ValueType, str]] = {
    StopReason.TIMEOUT: (common_pb2.ATTEMPT_TIMED_OUT, "timed out after {timeout_ms} ms; {action}"),
    StopReason.CANCELLED: (common_pb2.ATTEMPT_CANCELLED, "cancelled; {action}"),
    StopReason.REVOKED: (common_pb2.ATTEMPT_FAILED, "lease revoked by the leader; {action}"),
    StopReason.FENCED: (common_pb2.ATTEMPT_FAILED, "lease expired before renewal; {action} (self-fenced)"),
    StopReason.SHUTDOWN: (common_pb2.ATTEMPT_FAILED, "worker shut down; {action}"),
}


def stop_result(
    reason: StopReason, lease: worker_pb2.Lease, action: str
) -> tuple[common_pb2.AttemptOutcome.ValueType, str]:
    """The outcome and error text of an attempt stopped for `reason` (`action`: what was done to it)."""
    outcome, template = _STOP_RESULT[reason]
    return outcome, template.format(timeout_ms=lease.timeout_ms, action=action)


class Runner(Protocol):
    """What the worker needs of a runner, whatever the payload kind."""

    @property
    def lease(self) -> worker_pb2.Lease: ...

    @property
    def stop_reason(self) -> StopReason | None: ...

    def stop(self, reason: StopReason) -> None: ...

    async def hold(self, delay_s: float, until: asyncio.Future[None] | None = None) -> bool: ...

    async def hold_on(self, wake: asyncio.Future[None], delay_s: float | None = None) -> bool: ...

    async def run(self) -> common_pb2.AttemptResult: ...


class TailBuffer:
    """The last `limit` bytes written to it; memory stays bounded by `limit` plus one chunk."""

    def __init__(self, limit: int) -> None:
        self._limit = max(0, limit)
        self._buf = bytearray()

    def append(self, data: bytes) -> None:
        if self._limit == 0:
            return
        self._buf += data
        excess = len(self._buf) - self._limit
        if excess > 0:
            del self._buf[:excess]

    def value(self) -> bytes:
        return bytes(self._buf)


def format_token(token: common_pb2.FencingToken) -> str:
    return f"{token.term}.{token.index}"


def rfc3339_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunnerBase:
    """Stop requests, tails and result building, shared by both runners."""

    def __init__(
        self,
        lease: worker_pb2.Lease,
        *,
        clock: Clock,
        kill_grace_s: float,
        output_tail_bytes: int,
        on_output: OutputSink | None,
    ) -> None:
        self.lease = lease
        self._clock = clock
        self._kill_grace_s = kill_grace_s
        self._on_output = on_output
        self._stdout = TailBuffer(output_tail_bytes)
        self._stderr = TailBuffer(output_tail_bytes)
        self._stop_reason: StopReason | None = None
        self._on_stop: list[Callable[[], None]] = []  # called once, at the first stop request

    # Made when first used: most attempts are never stopped (two Events per attempt cost a busy worker).
    @functools.cached_property
    def _stop_requested(self) -> asyncio.Event:
        return asyncio.Event()

    @functools.cached_property
    def _hard_kill(self) -> asyncio.Event:
        return asyncio.Event()

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    def stop(self, reason: StopReason) -> None:
        """Ask for the attempt to be stopped. The first reason wins; FENCED always stops at once."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_requested.set()
            for callback in self._on_stop:
                callback()
        if reason is StopReason.FENCED:
            self._hard_kill.set()

    async def hold(self, delay_s: float, until: asyncio.Future[None] | None = None) -> bool:
        """Wait `delay_s` before the start (a lease granted ahead of its due time), or less if `until`
        completes first; True if a stop was requested meanwhile (the attempt must then not start). One
        future per hold, no helper task."""
        if self._stop_reason is not None:
            return True
        if delay_s <= 0 or (until is not None and until.done()):
            return False
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if until is None:
            return await self.hold_on(wake, delay_s)

        def forward(_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        until.add_done_callback(forward)
        try:
            return await self.hold_on(wake, delay_s)
        finally:
            until.remove_done_callback(forward)

    async def hold_on(self, wake: asyncio.Future[None], delay_s: float | None = None) -> bool:
        """`hold`, ended by `wake`: a future of the caller's own (nobody else awaits it) that whoever
        ends the hold completes directly, and this completes on a stop or after `delay_s` (None: no
        timer; whoever holds `wake` ends the hold). The attempt resumes in the loop's next iteration,
        where `hold(until=...)` takes one more (the done callback that forwards `until`): a start gate
        wakes its held starts this way (start_gate.StartGates)."""
        if self._stop_reason is not None:
            return True
        if wake.done() or (delay_s is not None and delay_s <= 0):
            return False

        def settle(*_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        self._on_stop.append(settle)
        timer = None if delay_s is None else asyncio.get_running_loop().call_later(delay_s, settle)
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()
            self._on_stop.remove(settle)
        return self._stop_reason is not None

    def _result(
        self,
        outcome: common_pb2.AttemptOutcome.ValueType,
        *,
        started_ms: int,
        exit_code: int = 0,
        error: str = "",
        return_value: bytes = b"",
        result: bytes = b"",
    ) -> common_pb2.AttemptResult:
        return common_pb2.AttemptResult(
            execution_id=self.lease.execution_id,
            token=self.lease.token,
            outcome=outcome,
            exit_code=exit_code,
            started_at_ms=started_ms,
            finished_at_ms=self._clock.now_ms(),
            stdout_tail=self._stdout.value(),
            stderr_tail=self._stderr.value(),
            error=error,
            return_value=return_value,
            result=result,
        )

    def _timeout_s(self) -> float | None:
        return self.lease.timeout_ms / 1000 if self.lease.timeout_ms > 0 else None
