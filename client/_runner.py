"""Running one attempt of a lease on this machine: spawn, capture, time out, kill, report.

Two runners share one contract (`Runner`): `await run()` once, returning the `AttemptResult`; anyone
may call `stop(reason)` at any time; the first reason decides the outcome. A runner knows nothing of
gRPC or leases' renewal: the worker decides *when* to stop, the runner decides *how*.

`AttemptRunner` runs argv and shell payloads. It starts the payload in its own session (so it leads a
new process group and the whole group can be signalled), feeds its stdout/stderr into bounded tail
buffers and an optional live sink. Killing: SIGTERM to the group, wait `kill_grace_s` for the leader
process to exit, then SIGKILL to the group (which also removes stragglers that outlived the leader).
Self-fencing skips the grace and sends SIGKILL at once: the lease is already gone locally, and the
leader may re-grant it soon (DESIGN.md I5). With a worker policy (`_policy.WorkerPolicy`), the payload
gets only the environment the policy lets it inherit, its program must be on the executable allowlist (it
is then run by the absolute path that was checked), it runs as the policy's user and group when the
worker is root, and the policy's resource limits are set on the guard (prlimit) before the guard starts
the payload, which inherits them.

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
import enum
import errno
import os
import shutil
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping
from contextvars import copy_context
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from cronraft.client._policy import PolicyRefusal, WorkerPolicy
from cronraft.clock import Clock
from cronraft.proto.v1 import common_pb2, worker_pb2

DEFAULT_OUTPUT_TAIL_BYTES = 64 * 1024
DEFAULT_KILL_GRACE_S = 5.0
# After the leader process exits, how long we keep reading its pipes: a background child that inherited
# stdout would otherwise keep the attempt open forever.
_PIPE_DRAIN_S = 1.0
_READ_SIZE = 64 * 1024

FENCED_ERROR = "lease expired before renewal; attempt killed (self-fenced)"
# Exit code of an attempt that has none: an in-process attempt stopped, or an HTTP request that got no
# response.
NO_EXIT_CODE = -1

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

OutputSink = Callable[["worker_pb2.OutputStream.ValueType", bytes], None]

# The variable naming a process attempt's result file (client/worker/result_files.py).
RESULT_FILE_ENV = "CRONRAFT_RESULT_FILE"


class ResultFileLike(Protocol):
    """Where a process attempt may write its result, and how the runner takes it once the payload
    exited: (data, "") or (b"", why it is refused). `discard` removes it unread."""

    @property
    def path(self) -> Path: ...

    def take(self) -> tuple[bytes, str]: ...

    def discard(self) -> None: ...


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


def attempt_env(
    lease: worker_pb2.Lease,
    base_env: Mapping[str, str],
    policy: WorkerPolicy | None = None,
    *,
    result_file: Path | None = None,
) -> dict[str, str]:
    """The attempt's environment: worker env (only what `policy` lets a payload inherit), then the
    payload's env (its `secret:NAME` values resolved by `policy`), then ours (which always win), with
    `CRONRAFT_RESULT_FILE` when the attempt has a result file. Raises PolicyRefusal when a secret cannot
    be resolved."""
    command_env = lease.payload.command.env if lease.payload.WhichOneof("kind") == "command" else {}
    if policy is None:
        env = dict(base_env)
        env.update(command_env)
    else:
        env = policy.payload_env(command_env, base_env)
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
    if result_file is not None:
        env[RESULT_FILE_ENV] = str(result_file)
    else:
        env.pop(RESULT_FILE_ENV, None)  # never one inherited from the worker's or the payload's env
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class _RunnerBase:
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
        self._stop_requested = asyncio.Event()
        self._hard_kill = asyncio.Event()
        self._on_stop: list[Callable[[], None]] = []  # called once, at the first stop request

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
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def settle(*_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        self._on_stop.append(settle)
        timer = loop.call_later(delay_s, settle)
        if until is not None:
            until.add_done_callback(settle)
        try:
            await wake
        finally:
            timer.cancel()
            self._on_stop.remove(settle)
            if until is not None:
                until.remove_done_callback(settle)
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


# The guard: a few lines of /bin/sh (it starts in about a millisecond; a Python guard cost 40 ms of CPU
# per attempt, which saturated two cores at 50 attempts/s). It runs the payload in the background in its
# own process group, and a watcher that blocks reading the lifeline pipe (the guard's stdin): when the
# worker dies, the pipe's write end closes, `read` returns, and the watcher kills the whole group (the
# lifeline is moved to fd 3 first: an asynchronous list's stdin is /dev/null in sh). TERM
# is trapped (not ignored, so the payload still gets the default action) so that a timeout's SIGTERM
# reaches the payload while the guard waits for it; the guard then exits with the payload's status,
# re-raising a signal death so the worker sees it as such. Side effect of `&` in a non-interactive
# shell: the payload starts with SIGINT and SIGQUIT ignored.
_GUARD = """
exec 3<&0
trap ':' TERM HUP INT
"$@" </dev/null 3<&- &
pid=$!
{ read -r _ <&3 ; kill -KILL 0 ; } </dev/null >/dev/null 2>&1 &
watcher=$!
while :; do
  wait "$pid"; code=$?
  kill -0 "$pid" 2>/dev/null || break
done
kill -KILL "$watcher" 2>/dev/null
if [ "$code" -gt 128 ] && [ "$code" -lt 160 ]; then
  trap - TERM HUP INT
  kill -"$((code - 128))" "$$"
fi
exit "$code"
"""


# The same guard, first waiting for one line on the lifeline: the worker writes it once it has set the
# policy's resource limits on the guard (prlimit), so that the payload starts with them. EOF instead (the
# worker died meanwhile): nothing starts.
_GUARD_AFTER_GO = "read -r _ || exit 125\n" + _GUARD


def _guarded(argv: list[str], *, wait_for_go: bool = False) -> list[str]:
    return ["/bin/sh", "-c", _GUARD_AFTER_GO if wait_for_go else _GUARD, "cronraft-guard", *argv]


def _set_limits(pid: int, limits: list[tuple[int, int]]) -> None:
    """Set each (resource, value) as both soft and hard limit of process `pid` (never above the hard
    limit it already has: only root may raise that)."""
    import resource

    for which, wanted in limits:
        _, hard = resource.prlimit(pid, which)
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.prlimit(pid, which, (value, value))


def _cannot_start(argv: list[str], cwd: str | None, env: Mapping[str, str]) -> tuple[int, str] | None:
    """(exit code, error) when the payload cannot be started, checked before the guard runs it, so the
    user sees the same errors as from a direct exec (127: not found, 126: not executable)."""
    if cwd is not None and not os.path.isdir(cwd):
        return 127, f"cannot start: cwd {cwd!r} is not a directory"
    program = argv[0]
    if "\0" in program:
        return 126, f"cannot start {program!r}: embedded NUL byte"
    if "/" in program:
        path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(path):
            return 127, f"cannot start {program!r}: No such file or directory"
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return 126, f"cannot start {program!r}: Permission denied"
        return None
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return 127, f"cannot start {program!r}: No such file or directory (not on PATH)"
    return None


@dataclass(frozen=True)
class ProcessIdentity:
    """Who process payloads run as (a root worker's policy [run_as]): ids and the variables that say so."""

    uid: int
    gid: int
    env: Mapping[str, str]  # HOME, USER, LOGNAME of that user


class AttemptRunner(_RunnerBase):
    """One attempt of an argv or shell lease. Create, `await run()` once; `stop()` from the loop."""

    def __init__(
        self,
        lease: worker_pb2.Lease,
        *,
        clock: Clock,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES,
        on_output: OutputSink | None = None,
        base_env: Mapping[str, str] | None = None,
        policy: WorkerPolicy | None = None,
        identity: ProcessIdentity | None = None,
        result_file: Callable[[], ResultFileLike] | None = None,
    ) -> None:
        super().__init__(
            lease,
            clock=clock,
            kill_grace_s=kill_grace_s,
            output_tail_bytes=output_tail_bytes,
            on_output=on_output,
        )
        self._base_env = os.environ if base_env is None else base_env
        self._policy = policy
        self._identity = identity
        # Makes the attempt's result file, just before the payload starts (client/worker/result_files).
        self._new_result_file = result_file
        self._result_file: ResultFileLike | None = None
        self.pid: int | None = None

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
        if kind is None:
            return "the lease has no payload"
        return f"payload kind {kind!r} is not run as a process"

    async def run(self) -> common_pb2.AttemptResult:
        try:
            return await self._run()
        finally:
            if self._result_file is not None:  # taken already when the payload exited by itself
                self._result_file.discard()

    async def _run(self) -> common_pb2.AttemptResult:
        started_ms = self._clock.now_ms()
        command = self._command()
        if isinstance(command, str):
            return self._result(
                common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=127, error=command
            )
        argv, cwd = command
        limits: list[tuple[int, int]] = []
        spawn: dict[str, Any] = {}
        if self._new_result_file is not None:
            try:
                self._result_file = self._new_result_file()
            except OSError as exc:
                error = f"cannot create the result file ({RESULT_FILE_ENV}): {exc}"
                return self._result(
                    common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=126, error=error
                )
        try:
            result_path = self._result_file.path if self._result_file is not None else None
            env = attempt_env(self.lease, self._base_env, self._policy, result_file=result_path)
            if self._policy is not None:
                if self.lease.payload.WhichOneof("kind") == "command":
                    argv = self._policy.resolve_program(argv, cwd, env)
                limits = self._policy.limits.rlimits()
            if self._identity is not None:
                env.update(self._identity.env)
                spawn = {"user": self._identity.uid, "group": self._identity.gid, "extra_groups": []}
        except PolicyRefusal as exc:
            return self._result(common_pb2.ATTEMPT_REFUSED, started_ms=started_ms, error=str(exc))
        problem = _cannot_start(argv, cwd, env)
        if problem is not None:
            code, error = problem
            return self._result(common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=code, error=error)
        # The payload runs under a small guard process that kills the whole process group when this
        # worker dies (its end of `lifeline` closes): without it, a payload would outlive a crashed worker
        # and run on while the lease expires and the execution is granted again elsewhere.
        lifeline_r, lifeline_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *_guarded(argv, wait_for_go=bool(limits)),
                stdin=lifeline_r,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                **spawn,
            )
        except OSError as exc:
            os.close(lifeline_w)
            code = 127 if exc.errno == errno.ENOENT else 126
            what = f"cwd {cwd!r}" if cwd and exc.filename == cwd else repr(argv[0])
            error = f"cannot start {what}: {exc.strerror or exc}"
            return self._result(common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=code, error=error)
        except ValueError as exc:  # e.g. a NUL byte in argv or env
            os.close(lifeline_w)
            error = f"cannot start {argv[0]!r}: {exc}"
            return self._result(common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=126, error=error)
        finally:
            os.close(lifeline_r)
        if limits:
            try:
                _set_limits(proc.pid, limits)
                os.write(lifeline_w, b"go\n")
            except (OSError, ValueError) as exc:  # the guard waits on: closing the lifeline ends it
                os.close(lifeline_w)
                with contextlib.suppress(ProcessLookupError):
                    await proc.wait()
                error = f"cannot set the policy's resource limits: {exc}"
                return self._result(
                    common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=126, error=error
                )
        try:
            return await self._watch(proc, started_ms)
        finally:
            os.close(lifeline_w)

    async def _watch(self, proc: asyncio.subprocess.Process, started_ms: int) -> common_pb2.AttemptResult:
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
            action = "process group killed" if killed_for is StopReason.TIMEOUT else "attempt killed"
            outcome, error = stop_result(killed_for, self.lease, action)
            return self._result(outcome, started_ms=started_ms, exit_code=exit_code, error=error)
        # It exited by itself: what it wrote to its result file is its result, whatever its exit code.
        data, refused = self._take_result()
        if returncode == 0 and not refused:
            return self._result(common_pb2.ATTEMPT_SUCCEEDED, started_ms=started_ms, result=data)
        error = f"exit code {returncode}" if returncode else ""
        if returncode < 0:
            try:
                error = f"killed by signal {signal.Signals(-returncode).name}"
            except ValueError:
                error = f"killed by signal {-returncode}"
        error = f"{error}; {refused}" if error and refused else error or refused
        return self._result(
            common_pb2.ATTEMPT_FAILED, started_ms=started_ms, exit_code=exit_code, error=error, result=data
        )

    def _take_result(self) -> tuple[bytes, str]:
        if self._result_file is None:
            return b"", ""
        taken, self._result_file = self._result_file, None
        return taken.take()

    async def _supervise(self, proc: asyncio.subprocess.Process) -> StopReason | None:
        """Wait for exit, a stop request or the timeout; returns why we killed it (None: it exited)."""
        timeout = self._timeout_s()
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


# -- in-process attempts ----------------------------------------------------------------------------


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


class InProcessRunner(_RunnerBase):
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
        task = loop.create_task(self._work(io), name=f"{self._what} {self.lease.execution_id}")
        # Wait for the work, a stop request or the timeout, whichever comes first: one future that each
        # of them settles (no helper task and no asyncio.wait per attempt: a busy worker runs thousands).
        wake: asyncio.Future[None] = loop.create_future()

        def settle(*_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        task.add_done_callback(settle)
        self._on_stop.append(settle)
        timeout_s = self._timeout_s()
        timer = loop.call_later(timeout_s, settle) if timeout_s is not None else None
        try:
            if self._stop_reason is None:
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
            task.remove_done_callback(settle)
            self._on_stop.remove(settle)
            io.close()
            if not task.done():  # stopped and not unwound, or we were cancelled ourselves
                if not io.cancelled.is_set():  # cancel once: a second one would hit its cleanup
                    io.cancelled.set()
                    task.cancel()
                _abandon(task)

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
