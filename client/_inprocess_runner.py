"""Running in-process work as an asyncio task (the `_runner.Runner` contract).

`InProcessRunner` runs work inside the worker process (HTTP requests, `_http`; Python handlers,
`handlers`) as an asyncio task. Stopping sets `InProcessIO.cancelled` and cancels the task, then waits
up to `kill_grace_s` (none when fenced) for it to unwind; a task that outlives that is abandoned (kept
referenced, its result ignored): in-process work cannot be killed, only asked to stop.
Blocking work runs in a daemon thread of its own (`call_in_thread`), never in the loop's default
executor: an abandoned call that blocks forever must not starve the outbox writes that share that pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from cronraft.client._runner import (
    DEFAULT_KILL_GRACE_S,
    DEFAULT_OUTPUT_TAIL_BYTES,
    NO_EXIT_CODE,
    OutputSink,
    RunnerBase,
    StopReason,
    TailBuffer,
    stop_result,
)
from cronraft.clock import Clock
from cronraft.proto.v1 import common_pb2, worker_pb2

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class WorkOutcome:
    """How in-process work ended by itself (a stop is the runner's business)."""

    outcome: common_pb2.AttemptOutcome.ValueType
    exit_code: int = 0
    error: str = ""
    return_value: bytes = b""


class InProcessIO:
    """What in-process work may touch: its output (tails and live sink) and the cancellation flag.

    `write` runs on the loop; threads use `write_threadsafe`, whose writes land in order, before any
    result the same thread hands back through `call_in_thread`. Writes after the attempt ended are
    dropped. `cancelled` is set when the attempt is stopped; a thread may poll `cancelled.is_set()`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stdout: TailBuffer,
        stderr: TailBuffer,
        on_output: OutputSink | None,
    ) -> None:
        self.cancelled = asyncio.Event()
        self._loop = loop
        self._tails = {worker_pb2.STDOUT: stdout, worker_pb2.STDERR: stderr}
        self._on_output = on_output
        self._closed = False

    def write(self, stream: worker_pb2.OutputStream.ValueType, data: bytes) -> None:
        if self._closed or not data:
            return
        self._tails[stream].append(data)
        if self._on_output is not None:
            self._on_output(stream, data)

    def write_threadsafe(self, stream: worker_pb2.OutputStream.ValueType, data: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self.write, stream, data)

    def close(self) -> None:
        self._closed = True


InProcessWork = Callable[[InProcessIO], Coroutine[Any, Any, WorkOutcome]]

# Tasks of stopped attempts that did not unwind within their grace: referenced until they end, so that
# they are not garbage-collected mid-flight, and their late exceptions are consumed quietly.
_abandoned: set[asyncio.Task[WorkOutcome]] = set()


def _forget(task: asyncio.Task[WorkOutcome]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()


def _abandon(task: asyncio.Task[WorkOutcome]) -> None:
    _abandoned.add(task)
    task.add_done_callback(_forget)


class InProcessRunner(RunnerBase):
    """One attempt whose work runs inside the worker process (`what` names it in errors)."""

    def __init__(
        self,
        lease: worker_pb2.Lease,
        work: InProcessWork,
        *,
        what: str,
        clock: Clock,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES,
        on_output: OutputSink | None = None,
    ) -> None:
        super().__init__(
            lease,
            clock=clock,
            kill_grace_s=kill_grace_s,
            output_tail_bytes=output_tail_bytes,
            on_output=on_output,
        )
        self._work = work
        self._what = what

    async def run(self) -> common_pb2.AttemptResult:
        started_ms = self._clock.now_ms()
        loop = asyncio.get_running_loop()
        io = InProcessIO(loop, self._stdout, self._stderr, self._on_output)
        # Wait for the work, a stop request or the timeout, whichever comes first: one future that each
        # of them settles (no helper task and no asyncio.wait per attempt: a busy worker runs thousands).
        wake: asyncio.Future[None] = loop.create_future()
        task = loop.create_task(self._work_then(io, wake), name=f"{self._what} {self.lease.execution_id}")

        def settle(*_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        self._on_stop.append(settle)
        timeout_s = self._timeout_s()
        timer: asyncio.TimerHandle | None = None
        try:
            if self._stop_reason is None:
                due = None if timeout_s is None else loop.time() + timeout_s
                # One step of our own first: the loop runs its callbacks in the order scheduled, so this
                # resumes right after the work's first step, in the same loop iteration. Work that ended
                # there (most handlers) is read at once, with no timer and no wake-up through `wake`: one
                # loop iteration per attempt and two callbacks fewer than waiting for `wake` (set by the
                # work's last step, it resumed this in the next iteration) after a callback that armed
                # the timer. A timer armed and cancelled would stay in the loop's heap until swept.
                await asyncio.sleep(0)
                if not wake.done():  # neither ended nor stopped in that step
                    if due is not None:
                        timer = loop.call_at(due, settle)
                    await wake
            if task.done():  # finished, even if a stop raced with it (as a process that exited)
                ended = task.result()  # an exception here is a bug of ours: the worker reports it
                return self._result(
                    ended.outcome,
                    started_ms=started_ms,
                    exit_code=ended.exit_code,
                    error=ended.error,
                    return_value=ended.return_value,
                )
            if self._stop_reason is None:
                self._stop_reason = StopReason.TIMEOUT
            reason = self._stop_reason
            await self._abort(task, io)
            outcome, error = stop_result(reason, self.lease, f"{self._what} aborted")
            return self._result(outcome, started_ms=started_ms, exit_code=NO_EXIT_CODE, error=error)
        finally:
            if timer is not None:
                timer.cancel()
            self._on_stop.remove(settle)
            io.close()
            if not task.done():  # stopped and not unwound, or we were cancelled ourselves
                if not io.cancelled.is_set():  # cancel once: a second one would hit its cleanup
                    io.cancelled.set()
                    task.cancel()
                _abandon(task)

    async def _work_then(self, io: InProcessIO, wake: asyncio.Future[None]) -> WorkOutcome:
        """The work, then `run` woken from its last step if it waits: a done callback of its task woke it
        one loop iteration later. The task is done when `run` resumes (it ends in the step that sets
        `wake`). Only `run` cancels this task, and never waits for `wake` after that: a cancel before the
        first step (which skips this `finally`) leaves nobody waiting."""
        try:
            return await self._work(io)
        finally:
            if not wake.done():
                wake.set_result(None)

    async def _abort(self, task: asyncio.Task[WorkOutcome], io: InProcessIO) -> None:
        """Cancel the work and give it the kill grace (none when fenced) to unwind."""
        io.cancelled.set()
        task.cancel()
        if self._hard_kill.is_set():
            return
        hard = asyncio.create_task(self._hard_kill.wait())
        try:
            await asyncio.wait({task, hard}, timeout=self._kill_grace_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hard.cancel()
        if not task.done():
            _log.warning(
                "in-process attempt did not stop within the grace; abandoned, its result is ignored",
                execution_id=self.lease.execution_id,
                what=self._what,
            )


def call_in_thread(fn: Callable[[], _T], *, name: str) -> asyncio.Future[_T]:
    """Run blocking `fn` in a new daemon thread; the future settles on the loop with its outcome.

    Cancelling the future abandons the thread (Python cannot stop it): it runs on, and its outcome is
    dropped. A fresh daemon thread, not the default executor, so that abandoned calls neither exhaust
    a shared pool nor hold up interpreter exit. `fn` runs in a copy of the caller's context.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    context = copy_context()

    def settle(value: _T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile: nobody waits for this outcome any more
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]  # None only with an error

    def target() -> None:
        try:
            value = context.run(fn)
        except Exception as exc:
            outcome: tuple[_T | None, BaseException | None] = (None, exc)
        except BaseException as exc:  # SystemExit in a thread must not end the worker's loop
            wrapped = RuntimeError(f"{type(exc).__name__} raised: {exc}")
            wrapped.__cause__ = exc
            outcome = (None, wrapped)
        else:
            outcome = (value, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
