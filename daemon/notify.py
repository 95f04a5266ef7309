"""Notifications: what the leader tells the outside world when an execution fails, times out, goes to the
dead-letter queue, or when nominal times were missed.

This module owns the delivery: a bounded queue drained by one background task that POSTs to webhooks or
runs commands, with retries and exponential backoff. The notification body (a documented, versioned JSON
object: docs/notifications.md) and the choice of targets for an event are `notify_body`; the I/O edge is
`notify_send`. Both are re-exported here.

What runs where (issue 13; docs/security.md): a node runs only what its operators configured. A task's
target either names a notifier of the config (`[notifiers.NAME]`: a webhook or a command), or is a
webhook whose host is in `[notify] webhook_hosts`; the API refuses anything else in new specs
(`raft.validate.check_new_targets`). Targets stored before that rule (a task's notify command, a webhook
to a host not allowed, a notifier since removed from the config) are skipped here and logged: never run.
The config's global `[notify] targets` are the operator's and delivered as they are.

Notifications are side effects of the leader, not replicated state: the leader submits one after the command
that caused it has committed. Delivery is at least once while this process lives; what is queued or in flight
when it dies is lost (docs/notifications.md says so). The pure part (`notify_body`: `notification_body`,
`delivery_id`, `targets_for`) reads no clock and does no I/O; the I/O sits behind `Sender` (`notify_send`),
whose real implementation (`SystemSender`) uses the standard library only. Targets are validated with the task
spec (`raft.validate.validate_targets`, re-exported here), by the leader and again by the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from cronraft.daemon.clock import Clock, SystemClock
from cronraft.daemon.notify_body import (
    BODY_VERSION,
    Notification,
    delivery_id,
    describe_target,
    encode_body,
    event_name,
    notification_body,
    targets_for,
    task_target,
    time_fields,
)
from cronraft.daemon.notify_send import Sender, SystemSender, notifier_environment
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import validate_targets

log = structlog.get_logger("cronraft.notify")

USER_AGENT = "cronraft-notify/1"
_RETRYABLE_4XX = frozenset({408, 425, 429})


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
        body_dict.update(time_fields("sent_at", self._clock.now_ms()))  # same keys: their place is kept
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
    "notifier_environment",
    "targets_for",
    "task_target",
    "validate_targets",
]
