"""Running an argv or shell attempt as a process group (the `_runner.Runner` contract).

`AttemptRunner` runs argv and shell payloads. It starts the payload in its own session (so it leads a
new process group and the whole group can be signalled), feeds its stdout/stderr into bounded tail
buffers and an optional live sink, and stops reading a pipe while the sink has no room (backpressure: the
payload then blocks on its writes; `_runner.OutputSink`). Killing: SIGTERM to the group, wait
`kill_grace_s` for the leader process to exit, then SIGKILL to the group (which also removes stragglers
that outlived the leader).
Self-fencing skips the grace and sends SIGKILL at once: the lease is already gone locally, and the
leader may re-grant it soon (DESIGN.md I5). With a worker policy (`_policy.WorkerPolicy`), the payload
gets only the environment the policy lets it inherit, its program must be on the executable allowlist (it
is then run by the absolute path that was checked), it runs as the policy's user and group when the
worker is root, and the policy's resource limits are set on the guard (prlimit) before the guard starts
the payload, which inherits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cronraft.client._policy import PolicyRefusal, WorkerPolicy
from cronraft.client._runner import (
    DEFAULT_KILL_GRACE_S,
    DEFAULT_OUTPUT_TAIL_BYTES,
    MAX_OUTPUT_PIECE_BYTES,
    OutputSink,
    RunnerBase,
    StopReason,
    TailBuffer,
    format_token,
    rfc3339_utc,
    stop_result,
)
from cronraft.clock import Clock
from cronraft.proto.v1 import common_pb2, worker_pb2

# After the leader process exits, how long we keep reading its pipes: a background child that inherited
# stdout would otherwise keep the attempt open forever. Time a reader spends waiting for room in the live
# output (backpressure: `HeldTime`) is not counted: what is left in the pipes is on its way to the log.
_PIPE_DRAIN_S = 1.0
_READ_SIZE = MAX_OUTPUT_PIECE_BYTES

# The variable naming a process attempt's result file (client/worker/result_files.py).
RESULT_FILE_ENV = "CRONRAFT_RESULT_FILE"


class ResultFileLike(Protocol):
    """Where a process attempt may write its result, and how the runner takes it once the payload
    exited: (data, "") or (b"", why it is refused). `discard` removes it unread."""

    @property
    def path(self) -> Path: ...

    def take(self) -> tuple[bytes, str]: ...

    def discard(self) -> None: ...


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


class HeldTime:
    """How long at least one of an attempt's pipe readers was held by backpressure (its sink had no
    room), in the caller's seconds. Pure: each call says what time it is."""

    def __init__(self) -> None:
        self._held = 0  # readers held now
        self._since = 0.0  # when the first of them was held
        self._before = 0.0  # seconds held before `_since`

    def hold(self, now: float) -> None:
        if self._held == 0:
            self._since = now
        self._held += 1

    def release(self, now: float) -> None:
        self._held -= 1
        if self._held == 0:
            self._before += now - self._since

    def total(self, now: float) -> float:
        return self._before + (now - self._since if self._held else 0.0)


def drain_left(exited_at: float, held_at_exit: float, now: float, held_now: float) -> float:
    """Seconds the pipes are still read after the payload exited at `exited_at`: `_PIPE_DRAIN_S` of
    waiting on them, not counting the time readers were held since (`HeldTime.total` then and now)."""
    return _PIPE_DRAIN_S - (now - exited_at) + (held_now - held_at_exit)


@dataclass(frozen=True)
class ProcessIdentity:
    """Who process payloads run as (a root worker's policy [run_as]): ids and the variables that say so."""

    uid: int
    gid: int
    env: Mapping[str, str]  # HOME, USER, LOGNAME of that user


class AttemptRunner(RunnerBase):
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
        self._held = HeldTime()

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
        await self._drain(readers)
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

    async def _drain(self, readers: list[asyncio.Task[None]]) -> None:
        """Read the pipes to their end after the payload exited: `drain_left` says for how long."""
        loop = asyncio.get_running_loop()
        exited_at = loop.time()
        held_at_exit = self._held.total(exited_at)
        pending = set(readers)
        while pending:
            now = loop.time()
            left = drain_left(exited_at, held_at_exit, now, self._held.total(now))
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=left)
        for task in pending:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

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
            self.stop(StopReason.TIMEOUT)  # no-op if stopped already; ends a reader's wait for room
            reason = self._stop_reason
            assert reason is not None
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
                room = self._on_output(stream, data)
                if room is not None and self._stop_reason is None:
                    await self._wait_for_room(room)

    async def _wait_for_room(self, room: asyncio.Future[None]) -> None:
        """Read nothing more until the live output has room (the payload blocks on its next write once
        the pipe is full), or the attempt is stopped: a stopped attempt's output is read to the end
        without waiting (beyond the room, dropped and said), so that it ends and its tails are whole."""
        loop = asyncio.get_running_loop()
        self._held.hold(loop.time())
        try:
            await self.hold_on(room)
        finally:
            self._held.release(loop.time())
