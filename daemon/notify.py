"""Notifications: what the leader tells the outside world when an execution fails, times out, goes to the
dead-letter queue, or when nominal times were missed.

This module owns the notification body (a documented, versioned JSON object: docs/notifications.md),
the choice of targets for an event, and the delivery: a bounded queue drained by one background task
that POSTs to webhooks or runs commands, with retries and exponential backoff.

What runs where (issue 13; docs/security.md): a node runs only what its operators configured. A task's
target either names a notifier of the config (`[notifiers.NAME]`: a webhook or a command), or is a
webhook whose host is in `[notify] webhook_hosts`; the API refuses anything else in new specs
(`raft.validate.check_new_targets`). Targets stored before that rule (a task's notify command, a webhook
to a host not allowed, a notifier since removed from the config) are skipped here and logged: never run.
The config's global `[notify] targets` are the operator's and delivered as they are.

Notifications are side effects of the leader, not replicated state: the leader submits one after the
command that caused it has committed. Delivery is at least once while this process lives; what is queued or
in flight when it dies is lost (docs/notifications.md says so). The pure part (`notification_body`,
`delivery_id`, `targets_for`) reads no clock and does no I/O; the I/O sits behind
`Sender`, whose real implementation (`SystemSender`) uses the standard library only. Targets are
validated with the task spec (`raft.validate.validate_targets`, re-exported here), by the leader and again
by the state machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog

from cronraft.daemon.clock import Clock, SystemClock
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import host_allowed, validate_targets

log = structlog.get_logger("cronraft.notify")

BODY_VERSION = 1
TAIL_CAP_BYTES = 4096  # each output tail in a body: its last 4 KiB
MAX_MISSED = 100  # nominal times listed in a `missed` body (all are counted in `missed_count`)
USER_AGENT = "cronraft-notify/1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Notification:
    """One event to tell the targets about. `event` is a `common_pb2.NotifyEvent` value."""

    event: int
    task: common_pb2.Task
    execution: common_pb2.Execution | None = None
    records: tuple[common_pb2.FireRecord, ...] = ()  # NOTIFY_MISSED: the missed nominal times
    dead_letter: common_pb2.DeadLetter | None = None
    cluster: str = ""


# ------------------------------------------------------------------------------------------ pure part


def _enum_name(wrapper: Any, number: int, prefix: str) -> str:
    """Lower-case name without `prefix`; "unspecified" for 0, "unknown_<n>" for a value newer than us."""
    if number == 0:
        return "unspecified"
    try:
        name: str = wrapper.Name(number)
    except ValueError:
        return f"unknown_{number}"
    return name.removeprefix(prefix).lower()


def event_name(event: int) -> str:
    """ "failure", "timeout", "dead_letter", "missed" (the body's `event` and the Cronraft-Event header)."""
    return _enum_name(common_pb2.NotifyEvent, event, "NOTIFY_")


def rfc3339(ms: int) -> str | None:
    """RFC 3339 UTC with milliseconds ("2025-06-01T09:00:00.000Z"); None for 0 (unset)."""
    if ms == 0:
        return None
    instant = _EPOCH + timedelta(milliseconds=ms)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _times(name: str, ms: int) -> dict[str, Any]:
    return {f"{name}_ms": ms, name: rfc3339(ms)}


def tail_text(data: bytes, cap: int = TAIL_CAP_BYTES) -> str:
    """The last `cap` bytes of an output tail as text, never starting inside a UTF-8 sequence."""
    if len(data) > cap:
        data = data[-cap:]
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")


def delivery_id(n: Notification) -> str:
    """The notification's id (header Cronraft-Delivery, body `delivery_id`): derived from what the event is
    about, so it is the same across retries and targets, and for the same event submitted twice."""
    parts = [str(BODY_VERSION), str(n.event), n.task.task_id]
    if n.execution is not None:
        parts.append(n.execution.execution_id)
    if n.dead_letter is not None:
        parts.append(n.dead_letter.execution_id)
    parts.extend(str(r.nominal_time_ms) for r in n.records)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _execution(e: common_pb2.Execution) -> dict[str, Any]:
    return {
        "execution_id": e.execution_id,
        **_times("nominal_time", e.nominal_time_ms),
        "state": _enum_name(common_pb2.ExecutionState, e.state, "EXECUTION_"),
        "attempt": e.attempt,
        "worker_id": e.worker_id,
        "exit_code": e.exit_code,
        "error": e.error,
        "manual": e.manual,
        **_times("fired_at", e.fired_at_ms),
        **_times("started_at", e.started_at_ms),
        **_times("finished_at", e.finished_at_ms),
        **_times("completed_at", e.completed_at_ms),
        "stdout_tail": tail_text(e.stdout_tail),
        "stderr_tail": tail_text(e.stderr_tail),
    }


def _dead_letter(d: common_pb2.DeadLetter) -> dict[str, Any]:
    return {
        "execution_id": d.execution_id,
        **_times("nominal_time", d.nominal_time_ms),
        "reason": d.reason,
        "attempts": d.attempts,
        **_times("dead_at", d.dead_at_ms),
        "stdout_tail": tail_text(d.stdout_tail),
        "stderr_tail": tail_text(d.stderr_tail),
    }


def notification_body(n: Notification, *, now_ms: int) -> dict[str, Any]:
    """The JSON body (docs/notifications.md). Every key is always present; keys are added, never renamed
    or removed, while `version` is 1. `now_ms` is the `sent_at` time."""
    records = sorted(n.records, key=lambda r: r.nominal_time_ms)
    return {
        "version": BODY_VERSION,
        "delivery_id": delivery_id(n),
        "event": event_name(n.event),
        "cluster": n.cluster,
        **_times("sent_at", now_ms),
        "task": {
            "task_id": n.task.task_id,
            "name": n.task.spec.name,
            "tags": dict(sorted(n.task.spec.tags.items())),
        },
        "execution": None if n.execution is None else _execution(n.execution),
        "missed_count": len(records),
        "missed": [
            {**_times("nominal_time", r.nominal_time_ms), "reason": r.reason} for r in records[:MAX_MISSED]
        ],
        "dead_letter": None if n.dead_letter is None else _dead_letter(n.dead_letter),
    }


def encode_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _wants(target: common_pb2.NotifyTarget, event: int) -> bool:
    return not target.events or event in target.events


def _identity(target: common_pb2.NotifyTarget) -> bytes:
    """The target without its event filter: two equal identities are one destination."""
    bare = common_pb2.NotifyTarget()
    bare.CopyFrom(target)
    del bare.events[:]
    return bare.SerializeToString(deterministic=True)


def task_target(
    target: common_pb2.NotifyTarget,
    notifiers: Mapping[str, common_pb2.NotifyTarget],
    webhook_hosts: Sequence[str],
) -> common_pb2.NotifyTarget | str:
    """What a task's target delivers to: a named notifier's configured target (with the task's event
    filter), or an allowed webhook; a text saying why it is skipped when the config does not allow it
    (a notify command stored in a task is never run)."""
    kind = target.WhichOneof("kind")
    if kind == "notifier":
        configured = notifiers.get(target.notifier)
        if configured is None:
            return f"notifier {target.notifier!r} is not in this node's config ([notifiers])"
        out = common_pb2.NotifyTarget()
        out.CopyFrom(configured)
        del out.events[:]
        out.events.extend(target.events)
        return out
    if kind == "command":
        return "a notify command stored in a task is never run (issue 13): name a [notifiers] entry instead"
    if kind == "webhook_url":
        try:
            host = urlsplit(target.webhook_url).hostname or ""
        except ValueError:
            host = ""
        if not host_allowed(host, webhook_hosts):
            return f"webhook host {host!r} is not in this node's [notify] webhook_hosts"
        return target
    return "no target kind this node knows"


def targets_for(
    task: common_pb2.Task,
    event: int,
    global_targets: Sequence[common_pb2.NotifyTarget],
    *,
    notifiers: Mapping[str, common_pb2.NotifyTarget] | None = None,
    webhook_hosts: Sequence[str] = (),
    skipped: list[str] | None = None,
) -> list[common_pb2.NotifyTarget]:
    """The task's targets that subscribe to `event` (no events listed: all), resolved by `task_target`
    (the reasons for those skipped are appended to `skipped`), then the global ones that do; a
    destination listed twice is delivered to once."""
    resolved: list[common_pb2.NotifyTarget] = []
    for target in task.spec.notify:
        if not _wants(target, event):
            continue
        got = task_target(target, notifiers or {}, webhook_hosts)
        if isinstance(got, str):
            if skipped is not None:
                skipped.append(got)
            continue
        resolved.append(got)
    out: list[common_pb2.NotifyTarget] = []
    seen: set[bytes] = set()
    for target in (*resolved, *global_targets):
        key = _identity(target)
        if key in seen or not _wants(target, event) or target.WhichOneof("kind") is None:
            continue
        seen.add(key)
        out.append(target)
    return out


def describe_target(target: common_pb2.NotifyTarget) -> str:
    """A loggable name: a webhook's scheme://host[:port] only (paths and queries often hold secrets)."""
    if target.WhichOneof("kind") == "webhook_url":
        try:
            parts = urlsplit(target.webhook_url)
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "webhook:(invalid URL)"
        return f"{parts.scheme}://{parts.hostname}{port}"
    return f"command:{os.path.basename(target.command.argv[0]) if target.command.argv else ''}"


# ------------------------------------------------------------------------------------------ I/O edge


class Sender(Protocol):
    """How a delivery attempt reaches its target. Exceptions (OSError, TimeoutError, ...) are failed
    attempts; cancellation must stop the attempt."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """POST `body`; return the HTTP status. Redirects are not followed."""
        ...

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes, timeout_s: float
    ) -> int:
        """Run `argv` (no shell) with exactly `env`, `stdin` on its standard input; return its exit code.
        Kill it (its whole process group) and raise TimeoutError after `timeout_s`."""
        ...


class SystemSender:
    """The real `Sender`: http.client in a small thread pool of its own, asyncio subprocesses."""

    def __init__(self, max_threads: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="cronraft-notify")
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        # A blocked request ends at its socket timeout; nobody waits for it.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._post, url, body, dict(headers), timeout_s)

    def _post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        parts = urlsplit(url)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout_s, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(userinfo).decode())
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)  # the receiver's answer is not used; read a little so it is not reset
            return response.status
        finally:
            conn.close()

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes, timeout_s: float
    ) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd or None,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        try:
            async with asyncio.timeout(timeout_s):
                err = await _talk(proc, stdin)
                code = await proc.wait()
        except BaseException:  # timeout or cancellation: never leave it running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            raise
        if code != 0:
            log.debug("notification command failed", exit_code=code, stderr_tail=tail_text(err, 1024))
        return 128 - code if code < 0 else code


async def _talk(proc: asyncio.subprocess.Process, stdin: bytes) -> bytes:
    """Write `stdin` and close it; read stderr keeping its last 1 KiB."""
    assert proc.stdin is not None and proc.stderr is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(stdin)
        await proc.stdin.drain()
    proc.stdin.close()
    tail = bytearray()
    while chunk := await proc.stderr.read(4096):
        tail += chunk
        del tail[:-1024]
    return bytes(tail)


def notifier_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a notifier command inherits from schedd: its environment without any `CRONRAFT_*` variable,
    which may hold the cluster secret (`CRONRAFT_CLUSTER_SECRET`, the default `secret_env`) or a token.
    The worker keeps the same rule for payloads (client._policy). A secret kept under another name is
    inherited: keep it in `secret_file` or name it `CRONRAFT_*` (docs/security.md)."""
    return {k: v for k, v in environ.items() if not k.startswith("CRONRAFT_")}


@dataclass
class NotifierStats:
    """Counters. `delivered` / `failed`: (notification, target) deliveries that succeeded / were given up.
    `dropped`: notifications refused by a full queue (or after close). `abandoned`: deliveries still queued
    or in flight when the notifier closed. `attempts_failed`: attempts that failed, retried or not (the
    metrics read these: daemon.http.collector)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    abandoned: int = 0
    attempts_failed: int = 0


@dataclass(frozen=True)
class _Job:
    """One (notification, target) delivery. The notification is kept as its rendered body, not its
    protobufs: output tails (64 KiB each) and long missed lists are already capped there."""

    template: Mapping[str, Any]  # the body; `sent_at` is set when delivery starts
    target: common_pb2.NotifyTarget
    event: int
    task_id: str
    execution_id: str

    @property
    def delivery_id(self) -> str:
        return str(self.template["delivery_id"])


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    permanent: bool
    detail: str


class Notifier:
    """Delivers notifications in the background. Call `submit` from the event loop's thread (it never
    blocks), run `run()` as a task, and `close()` once at shutdown.

    Each (notification, target) pair is one delivery: up to `max_attempts` attempts, `initial_backoff_s`
    doubling up to `max_backoff_s` between them, at most `max_concurrency` deliveries at once, at most
    `max_queue` deliveries waiting. No ordering between notifications is kept.
    """

    def __init__(
        self,
        *,
        global_targets: Sequence[common_pb2.NotifyTarget] = (),
        notifiers: Mapping[str, common_pb2.NotifyTarget] | None = None,
        webhook_hosts: Sequence[str] = (),
        max_queue: int = 10_000,
        max_attempts: int = 5,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 10.0,
        max_concurrency: int = 8,
        sender: Sender | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        if max_queue < 1 or max_attempts < 1 or max_concurrency < 1:
            raise ValueError("max_queue, max_attempts and max_concurrency must be at least 1")
        self._global = tuple(global_targets)
        self._notifiers = dict(notifiers or {})
        self._webhook_hosts = tuple(webhook_hosts)
        self._skip_warned: set[tuple[str, str]] = set()  # (task id, reason) already logged
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s
        self._max_concurrency = max_concurrency
        self._owned_sender: SystemSender | None = None
        if sender is None:
            self._owned_sender = SystemSender(max_concurrency)
            sender = self._owned_sender
        self._sender: Sender = sender
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._base_env = notifier_environment(os.environ) if base_env is None else base_env
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()  # bounded by submit(), which counts targets
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._run_task: asyncio.Task[None] | None = None
        self._closed = False
        self._dropping = False
        self.stats = NotifierStats()

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        return self._queue.qsize() + len(self._inflight)

    @property
    def has_global_targets(self) -> bool:
        return bool(self._global)

    def submit(self, n: Notification) -> bool:
        """Queue `n` for each target that wants its event. False (and a drop counted) when the queue has no
        room for all of them, or after close(); True otherwise, including when no target wants it."""
        skipped: list[str] = []
        targets = targets_for(
            n.task,
            n.event,
            self._global,
            notifiers=self._notifiers,
            webhook_hosts=self._webhook_hosts,
            skipped=skipped,
        )
        for reason in skipped:
            self._warn_skipped(n.task.task_id, reason)
        if not targets:
            return True
        if self._closed or self._queue.qsize() + len(targets) > self._max_queue:
            self.stats.dropped += 1
            if not self._dropping:  # one warning per episode of overload, not one per notification
                self._dropping = True
                log.warning(
                    "notification queue full; dropping notifications",
                    max_queue=self._max_queue,
                    dropped_total=self.stats.dropped,
                    closed=self._closed,
                )
            return False
        self._dropping = False
        template = notification_body(n, now_ms=0)
        execution_id = n.execution.execution_id if n.execution is not None else ""
        for target in targets:
            self._queue.put_nowait(_Job(template, target, n.event, n.task.task_id, execution_id))
        return True

    def _warn_skipped(self, task_id: str, reason: str) -> None:
        """Log a target skipped by the config's rules, once per task and reason (bounded memory)."""
        key = (task_id, reason)
        if key in self._skip_warned:
            return
        if len(self._skip_warned) >= 10_000:
            self._skip_warned.clear()
        self._skip_warned.add(key)
        log.warning("notification target skipped", task_id=task_id, reason=reason)

    async def run(self) -> None:
        """Deliver until close() (then it returns) or until cancelled. Run it once."""
        self._run_task = asyncio.current_task()
        job: _Job | None = None
        try:
            while not self._closed:
                job = await self._queue.get()
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(job), name="notify-delivery")
                job = None
                self._inflight.add(task)
                task.add_done_callback(self._delivery_done)
        except asyncio.CancelledError:
            if job is not None:  # taken from the queue, never started
                self.stats.abandoned += 1
                self._queue.task_done()
            if not self._closed:
                raise
            # close() cancelled us: a normal end.

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def join(self) -> None:
        """Wait until every submitted delivery was delivered or given up (tests; draining at shutdown)."""
        await self._queue.join()

    async def close(self, *, drain_s: float = 0.0) -> None:
        """Stop: wait up to `drain_s` for pending deliveries, then abandon the rest (counted in
        `stats.abandoned`) and end `run()`. Idempotent; later submits are dropped."""
        if self._closed:
            return
        if drain_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self.join()
        self._closed = True
        run_task = self._run_task
        if run_task is not None and run_task is not asyncio.current_task() and not run_task.done():
            run_task.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        abandoned = self._queue.qsize() + len(self._inflight)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self.stats.abandoned += abandoned
        if abandoned:
            log.warning("notifier closed with undelivered notifications", abandoned=abandoned)
        if self._owned_sender is not None:
            self._owned_sender.close()

    # ------------------------------------------------------------------------------------------ delivery

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        return float(min(self._initial_backoff_s * 2 ** (attempt - 1), self._max_backoff_s))

    async def _deliver(self, job: _Job) -> None:
        try:
            await self._deliver_job(job)
        except Exception:  # a bug, not a delivery failure: count it, say so, keep the notifier alive
            self.stats.failed += 1
            log.exception("notification delivery crashed", task_id=job.task_id)
        finally:
            self._queue.task_done()

    async def _deliver_job(self, job: _Job) -> None:
        body_dict = dict(job.template)
        body_dict.update(_times("sent_at", self._clock.now_ms()))  # same keys: their place is kept
        body = encode_body(body_dict)  # the same bytes on every attempt
        where, event = describe_target(job.target), event_name(job.event)
        result = _Attempt(False, False, "not attempted")
        attempt = 0
        for attempt in range(1, self._max_attempts + 1):
            result = await self._attempt(job, body, attempt)
            if result.ok:
                self.stats.delivered += 1
                log.debug("notification delivered", target=where, notify_event=event, attempt=attempt)
                return
            self.stats.attempts_failed += 1
            log.debug("notification attempt failed", target=where, attempt=attempt, error=result.detail)
            if result.permanent or attempt == self._max_attempts:
                break
            await self._sleep(self.backoff_s(attempt))
        self.stats.failed += 1
        log.warning(
            "notification given up",
            target=where,
            notify_event=event,
            task_id=job.task_id,
            execution_id=job.execution_id,
            delivery_id=job.delivery_id,
            attempts=attempt,
            error=result.detail,
        )

    async def _attempt(self, job: _Job, body: bytes, attempt: int) -> _Attempt:
        target, event = job.target, event_name(job.event)
        try:
            # A safety net over the sender's own timeout (a thread may ignore cancellation).
            async with asyncio.timeout(self._timeout_s + 5.0):
                if target.WhichOneof("kind") == "webhook_url":
                    headers = {
                        "Content-Type": "application/json",
                        "User-Agent": USER_AGENT,
                        "Cronraft-Event": event,
                        "Cronraft-Delivery": job.delivery_id,
                        "Cronraft-Attempt": str(attempt),
                    }
                    status = await self._sender.post(target.webhook_url, body, headers, self._timeout_s)
                    if 200 <= status < 300:
                        return _Attempt(True, False, "")
                    permanent = 300 <= status < 500 and status not in _RETRYABLE_4XX
                    return _Attempt(False, permanent, f"HTTP {status}")
                cmd = target.command
                env = {
                    **self._base_env,
                    **cmd.env,
                    "CRONRAFT_NOTIFY_EVENT": event,
                    "CRONRAFT_NOTIFY_DELIVERY": job.delivery_id,
                    "CRONRAFT_NOTIFY_ATTEMPT": str(attempt),
                }
                code = await self._sender.run(list(cmd.argv), env, cmd.cwd, body, self._timeout_s)
                return _Attempt(code == 0, False, f"exit code {code}")
        except TimeoutError:
            return _Attempt(False, False, f"timed out after {self._timeout_s:g} s")
        except Exception as e:  # OSError, http.client.HTTPException, ValueError...: a failed attempt
            return _Attempt(False, False, f"{type(e).__name__}: {e}")


__all__ = [
    "BODY_VERSION",
    "Notification",
    "Notifier",
    "NotifierStats",
    "Sender",
    "SystemSender",
    "delivery_id",
    "describe_target",
    "encode_body",
    "event_name",
    "notification_body",
    "targets_for",
    "task_target",
    "validate_targets",
]
