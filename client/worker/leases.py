"""The worker's lease clocks (DESIGN.md I5): each running attempt's local, monotonic deadline, how a
renewed heartbeat moves it, revocation, and self-fencing when it passes.

An attempt's deadline starts at receive time + TTL (or earlier: `offer_deadline`) and moves to (send time
of a heartbeat the leader renewed) + TTL; the TTL is the lease's own `lease_ttl_ms`, else the Welcome's.
The send time, not the ack time, is used because the leader renewed the lease no earlier than it received
the heartbeat. When a deadline passes (partition, slow leader), the worker kills the attempt itself
(SIGKILL, no grace) and records a FAILED result: the leader may already have re-granted the execution
elsewhere. Attempts keep running while the stream is down; only their leases decide their fate.

Times are monotonic seconds (`cronraft.clock.mono_s`); nothing here reads a clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cronraft.client._runner import Runner, StopReason
from cronraft.client.worker.outbox import AttemptKey
from cronraft.client.worker.session import SentHeartbeat
from cronraft.proto.v1 import worker_pb2

# A held start asks the leader to confirm its lease this long before the start instant (one heartbeat
# shared by every start of that instant): the answer normally arrives before the start, adding no lag.
CONFIRM_AHEAD_S = 0.1


@dataclass(eq=False, slots=True)
class Attempt:
    key: AttemptKey
    lease: worker_pb2.Lease
    runner: Runner
    ttl_s: float
    deadline: float  # mono_s(clock) seconds
    start_at: float = 0.0  # mono_s(clock) seconds: the lease's start is held until then
    # A held start waits for the leader to renew the lease with a heartbeat sent at most
    # CONFIRM_AHEAD_S before the start (start_gate.await_confirmation).
    confirmed_at: float = float("-inf")  # mono_s(clock) of the latest renewing heartbeat's send
    confirm_waiter: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None
    revoked: bool = False  # the leader revoked the lease: kill, report nothing
    fenced: bool = False  # the local deadline passed: killed at once
    ref: worker_pb2.LeaseRef | None = None  # how heartbeats list it (`lease_ref`)

    @property
    def renewable(self) -> bool:
        return not (self.revoked or self.fenced)

    @property
    def confirmed(self) -> bool:
        """Renewed by a heartbeat sent at most CONFIRM_AHEAD_S before its start: it may begin."""
        return self.confirmed_at >= self.start_at - CONFIRM_AHEAD_S


def lease_ref(attempt: Attempt) -> worker_pb2.LeaseRef:
    """The LeaseRef heartbeats list `attempt` by, made at its first listing and reused by the next ones:
    a message copied into a heartbeat costs a fifth of one made anew, and a held start is listed by its
    confirming heartbeat and by every full one until it ends (hundreds of leases each in W5)."""
    ref = attempt.ref
    if ref is None:
        lease = attempt.lease
        ref = attempt.ref = worker_pb2.LeaseRef(execution_id=lease.execution_id, token=lease.token)
    return ref


def offer_deadline(received: float, ttl_s: float, echo_ms: int) -> float:
    """The deadline of a lease offered at `received`. The lease's clock started at the leader after it
    had our message stamped `echo_ms` (a time of our own clock): counting the TTL from there, never from
    a late receipt, keeps this deadline before the leader's expiry however long the offer waited (a
    SIGSTOP, a slow link). Found by fault scenario S8: an offer read after a 7 s pause ran beside its
    re-grant."""
    deadline = received + ttl_s
    if echo_ms > 0:
        deadline = min(deadline, echo_ms / 1000 + ttl_s)
    return deadline


def revoke(
    attempts: Mapping[AttemptKey, Attempt],
    sent: SentHeartbeat | None,
    execution_ids: Iterable[str],
    log: Any,
) -> None:
    """Kill the attempts of the revoked executions: those the answered heartbeat listed (every attempt
    of them when it answers no heartbeat we know of)."""
    for execution_id in execution_ids:
        keys = (
            [k for k in sent[2] if k[0] == execution_id]
            if sent is not None
            else [k for k in attempts if k[0] == execution_id]
        )
        for key in keys:
            attempt = attempts.get(key)
            if attempt is not None and not attempt.revoked:
                attempt.revoked = True
                attempt.runner.stop(StopReason.REVOKED)
                log.warning("lease revoked by the leader; killing attempt", execution_id=execution_id)


def renew(attempts: Mapping[AttemptKey, Attempt], sent: SentHeartbeat, renewed: Iterable[str]) -> None:
    """Move the deadlines of the attempts the answered heartbeat listed and the leader renewed to its
    send time + TTL; wake a held start waiting for this confirmation."""
    renewed_ids = set(renewed)
    for key in sent[2]:
        attempt = attempts.get(key)
        if key[0] in renewed_ids and attempt is not None and attempt.renewable:
            attempt.deadline = max(attempt.deadline, sent[1] + attempt.ttl_s)
            attempt.confirmed_at = max(attempt.confirmed_at, sent[1])
            waiter = attempt.confirm_waiter
            if waiter is not None and not waiter.done() and attempt.confirmed:
                waiter.set_result(None)


def fence_overdue(attempts: Iterable[Attempt], now: float, log: Any) -> float:
    """Self-fencing (I5): kill every attempt whose lease was not renewed before its local deadline.
    Returns the earliest deadline of the attempts left unfenced (inf: none): until then, and until an
    attempt with an earlier deadline arrives, no attempt can come due (renewals only move deadlines
    later), so the caller need not look again."""
    earliest = math.inf
    for attempt in list(attempts):
        if attempt.fenced:
            continue
        deadline = attempt.deadline
        # Also a revoked attempt still dying within its kill grace: no process outlives its lease.
        if now >= deadline:
            attempt.fenced = True
            log.warning(
                "lease not renewed before its deadline; killing attempt",
                execution_id=attempt.lease.execution_id,
                overdue_s=round(now - deadline, 3),
            )
            attempt.runner.stop(StopReason.FENCED)
        elif deadline < earliest:
            earliest = deadline
    return earliest
