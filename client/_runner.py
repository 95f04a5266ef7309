"""Running one attempt of a lease on this machine: spawn, capture, time out, kill, report.

`AttemptRunner.run()` starts the payload in its own session (so it leads a new process group and the
whole group can be signalled), feeds its stdout/stderr into bounded tail buffers and an optional live
sink, and returns the `AttemptResult`. Anyone may call `stop(reason)` at any time to have the group
killed; the first reason decides the outcome. The runner knows nothing of gRPC or leases' renewal: the
worker decides *when* to stop, the runner decides *how*.

Killing: SIGTERM to the group, wait `kill_grace_s` for the leader process to exit, then SIGKILL to the
group (which also removes stragglers that outlived the leader). Self-fencing skips the grace and sends
SIGKILL at once: the lease is already gone locally, and the leader may re-grant it soon (DESIGN.md I5).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import os
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from cronraft.proto.v1 import common_pb2, worker_pb2

DEFAULT_OUTPUT_TAIL_BYTES = 64 * 1024
DEFAULT_KILL_GRACE_S = 5.0
# After the leader process exits, how long we keep reading its pipes: a background child that inherited
# stdout would otherwise keep the attempt open forever.
_PIPE_DRAIN_S = 1.0
_READ_SIZE = 64 * 1024

FENCED_ERROR = "lease expired before renewal; attempt killed (self-fenced)"

OutputSink = Callable[["worker_pb2.OutputStream.ValueType", bytes], None]


class Clock(Protocol):
    """The worker's view of time: a monotonic clock for deadlines, a wall clock for reports."""

    def monotonic(self) -> float:
        """Seconds, monotonic, arbitrary origin."""
        ...

    def wall_ms(self) -> int:
        """Unix time in milliseconds."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class StopReason(enum.Enum):
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REVOKED = "revoked"
    FENCED = "fenced"
    SHUTDOWN = "shutdown"


_STOP_RESULT: dict[StopReason, tuple[common_pb2.AttemptOutcome.ValueType, str]] = {
    StopReason.TIMEOUT: (common_pb2.ATTEMPT_TIMED_OUT, ""),  # message built with the timeout
    StopReason.CANCELLED: (common_pb2.ATTEMPT_CANCELLED, "cancelled; attempt killed"),
    StopReason.REVOKED: (common_pb2.ATTEMPT_FAILED, "lease revoked by the leader; attempt killed"),
    StopReason.FENCED: (common_pb2.ATTEMPT_FAILED, FENCED_ERROR),
    StopReason.SHUTDOWN: (common_pb2.ATTEMPT_FAILED, "worker shut down; attempt killed"),
}


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


def attempt_env(lease: worker_pb2.Lease, base_env: Mapping[str, str]) -> dict[str, str]:
    """The attempt's environment: worker env, then the payload's env, then ours (which always win)."""
    env = dict(base_env)
    if lease.payload.WhichOneof("kind") == "command":
        env.update(lease.payload.command.env)
    env.update(
        {
            "CRONRAFT_EXECUTION_ID": lease.execution_id,  # the idempotency key
            "CRONRAFT_TASK_ID": lease.task_id,
            "CRONRAFT_TASK_NAME": lease.task_name,
            "CRONRAFT_ATTEMPT": str(lease.attempt),
            "CRONRAFT_NOMINAL_TIME_MS": str(lease.nominal_time_ms),
            "CRONRAFT_NOMINAL_TIME": rfc3339_utc(lease.nominal_time_ms),
            "CRONRAFT_FENCING_TOKEN": format_token(lease.token),
        }
    )
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class AttemptRunner:
    """One attempt of one lease. Create, `await run()` once; `stop()` from anywhere on the loop."""

    def __init__(
        self,
        lease: worker_pb2.Lease,
        *,
        clock: Clock,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES,
        on_output: OutputSink | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.lease = lease
        self._clock = clock
        self._kill_grace_s = kill_grace_s
        self._on_output = on_output
        self._base_env = os.environ if base_env is None else base_env
        self._stdout = TailBuffer(output_tail_bytes)
        self._stderr = TailBuffer(output_tail_bytes)
        self._stop_reason: StopReason | None = None
        self._stop_requested = asyncio.Event()
        self._hard_kill = asyncio.Event()
        self.pid: int | None = None

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    def stop(self, reason: StopReason) -> None:
        """Ask for the process group to be killed. The first reason wins; FENCED always kills at once."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_requested.set()
        if reason is StopReason.FENCED:
            self._hard_kill.set()

    def _command(self) -> tuple[list[str], str | None] | str:
        """(argv, cwd), or an error text when the payload cannot be run."""
        kind = self.lease.payload.WhichOneof("kind")
        if kind == "command":
            command = self.lease.payload.command
            if not command.argv:
                return "payload.command.argv is empty"
            return list(command.argv), command.cwd or None
        if kind == "shell":
            return ["/bin/sh", "-c", self.lease.payload.shell.script], None
        return "the lease has no payload"

    def _result(
        self,
        outcome: common_pb2.AttemptOutcome.ValueType,
        *,
        started_ms: int,
        exit_code: int = 0,
        error: str = "",
    ) -> common_pb2.AttemptResult:
        return common_pb2.AttemptResult(
            execution_id=self.lease.execution_id,
            token=self.lease.token,
            outcome=outcome,
            exit_code=exit_code,
            started_at_ms=started_ms,
            finished_at_ms=self._clock.wall_ms(),
            stdout_tail=self._stdout.value(),
            stderr_tail=self._stderr.value(),
            error=error,
        )

    async def run(self) -> common_pb2.AttemptResult:
        started_ms = self._clock.wall_ms()
        command = self._command()
        if isinstance(command, str):
            return self._result(
                common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=127, error=command
            )
        argv, cwd = command
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=attempt_env(self.lease, self._base_env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            code = 127 if exc.errno == errno.ENOENT else 126
            what = f"cwd {cwd!r}" if cwd and exc.filename == cwd else repr(argv[0])
            error = f"cannot start {what}: {exc.strerror or exc}"
            return self._result(common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=code, error=error)
        except ValueError as exc:  # e.g. a NUL byte in argv or env
            error = f"cannot start {argv[0]!r}: {exc}"
            return self._result(common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=126, error=error)
        self.pid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            asyncio.create_task(self._pump(proc.stdout, worker_pb2.STDOUT, self._stdout)),
            asyncio.create_task(self._pump(proc.stderr, worker_pb2.STDERR, self._stderr)),
        ]
        killed_for = await self._supervise(proc)
        returncode = proc.returncode
        assert returncode is not None
        _, still_open = await asyncio.wait(readers, timeout=_PIPE_DRAIN_S)
        for task in still_open:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        exit_code = _exit_code(returncode)
        if killed_for is not None:
            outcome, error = _STOP_RESULT[killed_for]
            if killed_for is StopReason.TIMEOUT:
                error = f"timed out after {self.lease.timeout_ms} ms; process group killed"
            return self._result(outcome, started_ms=started_ms, exit_code=exit_code, error=error)
        if returncode == 0:
            return self._result(common_pb2.ATTEMPT_SUCCEEDED, started_ms=started_ms)
        error = f"exit code {returncode}"
        if returncode < 0:
            try:
                error = f"killed by signal {signal.Signals(-returncode).name}"
            except ValueError:
                error = f"killed by signal {-returncode}"
        return self._result(
            common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=exit_code, error=error
        )

    async def _supervise(self, proc: asyncio.subprocess.Process) -> StopReason | None:
        """Wait for exit, a stop request or the timeout; returns why we killed it (None: it exited)."""
        timeout = self.lease.timeout_ms / 1000 if self.lease.timeout_ms > 0 else None
        exited = asyncio.create_task(proc.wait())
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                return None
            if self._stop_reason is None:
                self._stop_reason = StopReason.TIMEOUT
            reason = self._stop_reason
            await self._kill_group(proc.pid, exited)
            return reason
        finally:
            stop_wait.cancel()
            # Whatever happens to us (even cancellation), the group must not outlive the attempt.
            if not exited.done():
                _signal_group(proc.pid, signal.SIGKILL)
            await exited

    async def _kill_group(self, pgid: int, exited: asyncio.Task[int]) -> None:
        if not self._hard_kill.is_set():
            _signal_group(pgid, signal.SIGTERM)
            hard = asyncio.create_task(self._hard_kill.wait())
            try:
                await asyncio.wait(
                    {exited, hard}, timeout=self._kill_grace_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                hard.cancel()
        # Also when the leader already exited: stragglers of the group go too.
        _signal_group(pgid, signal.SIGKILL)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        stream: worker_pb2.OutputStream.ValueType,
        tail: TailBuffer,
    ) -> None:
        while data := await reader.read(_READ_SIZE):
            tail.append(data)
            if self._on_output is not None:
                self._on_output(stream, data)
