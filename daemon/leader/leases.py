"""The lease keeper: the running leases, their deadlines, renewals, expiry and reconciliation.

Inputs: leases granted (a committed Grant, or running executions loaded at the Epoch), offers written to
a worker's stream, heartbeats (renewals), a worker's complete listing (reconciliation), and the
monotonic time. Outputs: the leases to expire now (`due`), their ExpireLease commands, the verdict on a
renewals a heartbeat gets (`renew`), and the forged renewals seen (`Refusal`).

A **deferred start**: a lease granted ahead of its due time (fire ahead, or a retry's backoff) that the
worker starts only at the due time, and only once a heartbeat near that time renewed it (the start is
*confirmed*). One never confirmed cannot have begun, so its expiry says so (ExpireLease.unstarted) and
the attempt is not spent (issue 17's ATTEMPT_NOT_STARTED path).

Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft.codec import token_tuple
from cronraft.timerwheel import TimingWheel

Command = commands_pb2.Command
CancelAttempt = worker_pb2.CancelAttempt
Token = tuple[int, int]
# A grant as the leader proposed it: execution id, worker id, task id, and the worker's incarnation (None:
# not known, read from the execution).
Granted = tuple[str, str, str, str | None]

# A worker starts a deferred start only once a heartbeat it sent at most this long before the start
# (client/worker/leases.py, CONFIRM_AHEAD_S) has renewed it. A renewal the leader gives earlier than
# that (less a margin for the two monotonic clocks' rates over a lead of up to 30 s) cannot be that
# confirmation; a deferred start never renewed later cannot have begun (ExpireLease.unstarted).
CONFIRM_AHEAD_MS = 100
CONFIRM_MARGIN_MS = 30


@dataclass(frozen=True)
class Refusal:
    """A worker message about a lease another worker holds, with that lease's very token: a forgery
    (the token was read somewhere), never a stale message. Dropped; the driver logs it and ends the
    sender's stream (issue 13)."""

    worker_id: str  # who sent it
    execution_id: str
    kind: str  # "result", "output" or "renewal"
    holder: str  # the worker holding the lease

    def message(self) -> str:
        return (
            f"{self.kind} for execution {self.execution_id}: its lease is held by worker {self.holder!r}, "
            f"not {self.worker_id!r}; a worker may only report on its own leases"
        )


@dataclass(slots=True)  # one per running execution: slots make it smaller and quicker to make
class LeaseState:
    execution_id: str
    token: Token
    worker_id: str
    task_id: str = ""
    expiring: bool = False
    # Monotonic expiry. A renewal only moves this; the lease's entry in the deadline wheel stays where it
    # was armed and is re-armed when it comes due (a wheel operation per renewal cost the leader ~5 µs
    # per lease: 0.1 s for one heartbeat of a worker holding 10,000 leases).
    deadline: int = 0
    # A deferred start: the earliest monotonic time (ours) the worker may start it, from the offers we
    # wrote (None: not deferred, or not known to this leader: it may have begun at any time).
    start_mono: int | None = None
    confirmed: bool = False  # renewed at or after start_mono - CONFIRM_AHEAD_MS: it may have begun
    unstarted: bool = False  # its worker's process does not hold it (reconciliation): it never began
    # Its offer was handed to a worker stream (offered); an offer dropped with a replaced or closed stream
    # never reached anyone, so its expiry is unstarted. Leases this leader did not grant count as written.
    written: bool = True
    incarnation: str = ""  # the worker process it was granted to (Execution.worker_incarnation)
    # Its Complete or ExpireLease needs no schedule plan while PlanMarks.spec_changes equals this: its
    # task's spec at the grant planned nothing when an execution ends (-1: not known).
    plan_free: int = -1
    armed: int = -1  # the deadline whose bucket holds it in LeaseKeeper.deadlines (-1: none)
    # The worker stream (WorkerState.stream) its offer was last written to by this leader (-1: none).
    stream: int = -1

    def never_began(self) -> bool:
        """Whether this leader knows the attempt never began (ExpireLease.unstarted)."""
        return self.unstarted or not self.written or (self.start_mono is not None and not self.confirmed)


@dataclass
class Renewals:
    """The verdict on the leases a heartbeat lists (HeartbeatAck.renewed / revoked)."""

    renewed: list[str]
    revoked: list[str]
    forged: list[Refusal]


class LeaseKeeper:
    def __init__(self) -> None:
        self.leases: dict[str, LeaseState] = {}
        # Execution ids of each worker's leases: a (re)connecting worker's slots and its reconciliation
        # are then O(its leases), not a pass over every lease (100,000 of them after a failover).
        self._leases_of: dict[str, set[str]] = {}
        # Lease deadlines on the monotonic clock, in a wheel: expiry and renewal are O(1) and a tick does
        # not scan every running lease. The wheel holds one entry per deadline, a bucket of the leases
        # armed at it (`_armed`, in the order they were armed): the leases of one commit share their
        # deadline, and a wheel entry per lease (made, then cancelled when the lease ended a few
        # milliseconds later) cost the leader ~1.5 us per execution (issue 16).
        self.deadlines: TimingWheel[int] = TimingWheel(now_ms=0)
        self._armed: dict[int, dict[str, None]] = {}
        self._running_by_task: dict[str, int] = {}
        # Leases whose execution's cancel was asked for (Execution.cancel_requested_at_ms), by execution
        # id: the worker stream (WorkerState.stream) the CancelAttempt was last sent on (-1: not sent by
        # this leader). A CancelAttempt goes out once, to the stream the worker has when the cancel
        # commits: a leader killed before it sent it, or a worker between streams then (all of them
        # reconnect after a failover), lost it, and the payload ran on to its own end. A worker's
        # heartbeat on another stream gets it again (messages.heartbeat). Empty but for such leases.
        self.cancelling: dict[str, int] = {}

    def reset_clock(self, mono_ms: int) -> None:
        self.deadlines = TimingWheel(now_ms=mono_ms)
        self._armed = {}
        for lease in self.leases.values():
            lease.armed = -1

    def __len__(self) -> int:
        return len(self.leases)

    def get(self, execution_id: str) -> LeaseState | None:
        return self.leases.get(execution_id)

    def of_worker(self, worker_id: str) -> set[str]:
        return self._leases_of.get(worker_id, set())

    def running(self, task_id: str) -> int:
        """Leases of `task_id` (for its max_concurrency)."""
        return self._running_by_task.get(task_id, 0)

    # ------------------------------------------------------------------------------- track, release

    def track(
        self, ex: common_pb2.Execution, deadline_mono: int, granted: Granted | None = None
    ) -> LeaseState:
        """A running execution's lease, expiring at `deadline_mono` unless renewed. `granted`: the grant
        `ex` runs under, as proposed (its ids are then not read from `ex`: the grant set them)."""
        # Each field read once: a protobuf string field is a new str at every read.
        if granted is None:
            execution_id, worker_id, task_id = ex.execution_id, ex.worker_id, ex.task_id
            incarnation = ex.worker_incarnation
        else:
            execution_id, worker_id, task_id, known = granted
            incarnation = ex.worker_incarnation if known is None else known
        leases, running = self.leases, self._running_by_task
        old = leases.get(execution_id)
        if old is None:
            running[task_id] = running.get(task_id, 0) + 1
        else:
            self._disarm(execution_id, old)
            if old.worker_id != worker_id:
                self._forget_lease_of(old)
        ids = self._leases_of.get(worker_id)
        if ids is None:
            ids = self._leases_of[worker_id] = set()
        ids.add(execution_id)
        t = ex.token
        # Positional: keywords reach a dataclass's __init__ as a dict made for each call.
        lease = leases[execution_id] = LeaseState(
            execution_id,
            (t.term, t.index),
            worker_id,
            task_id,
            False,  # expiring
            deadline_mono,  # deadline
            None,  # start_mono
            False,  # confirmed
            False,  # unstarted
            True,  # written
            incarnation,
        )
        # Armed at its deadline (`_arm`, inline: the lease is new, armed nowhere).
        bucket = self._armed.get(deadline_mono)
        if bucket is None:
            bucket = self._armed[deadline_mono] = {}
            self.deadlines.add(deadline_mono, deadline_mono)
        bucket[execution_id] = None
        lease.armed = deadline_mono
        return lease

    def _arm(self, execution_id: str, lease: LeaseState, at_ms: int) -> None:
        """Hold the lease in the bucket of `at_ms` (last in it), out of any other: what adding it to a
        wheel of its own would do, the expiry order included (by deadline, then by when armed)."""
        if lease.armed >= 0:
            self._disarm(execution_id, lease)
        bucket = self._armed.get(at_ms)
        if bucket is None:
            bucket = self._armed[at_ms] = {}
            self.deadlines.add(at_ms, at_ms)
        bucket[execution_id] = None
        lease.armed = at_ms

    def _disarm(self, execution_id: str, lease: LeaseState) -> None:
        at_ms = lease.armed
        if at_ms < 0:
            return
        lease.armed = -1
        bucket = self._armed.get(at_ms)
        if bucket is not None:
            bucket.pop(execution_id, None)
            if not bucket:
                del self._armed[at_ms]
                self.deadlines.cancel(at_ms)

    def _forget_lease_of(self, lease: LeaseState) -> None:
        ids = self._leases_of.get(lease.worker_id)
        if ids is not None:
            ids.discard(lease.execution_id)
            if not ids:
                del self._leases_of[lease.worker_id]

    def release(self, execution_id: str) -> LeaseState | None:
        lease = self.leases.pop(execution_id, None)
        if lease is None:
            return None
        if self.cancelling:
            self.cancelling.pop(execution_id, None)
        # _forget_lease_of and _disarm, inline: once per execution.
        worker_id = lease.worker_id
        ids = self._leases_of.get(worker_id)
        if ids is not None:
            ids.discard(execution_id)
            if not ids:
                del self._leases_of[worker_id]
        at_ms = lease.armed
        if at_ms >= 0:
            lease.armed = -1
            bucket = self._armed.get(at_ms)
            if bucket is not None:
                bucket.pop(execution_id, None)
                if not bucket:
                    del self._armed[at_ms]
                    self.deadlines.cancel(at_ms)
        task_id = lease.task_id
        if task_id:
            running = self._running_by_task
            left = running.get(task_id, 1) - 1
            if left > 0:
                running[task_id] = left
            else:
                running.pop(task_id, None)
        return lease

    def offered(self, execution_id: str, token: Token, start_mono: int | None, *, stream: int = -1) -> None:
        """A lease's offer is being written to its worker's stream `stream` now (see LeaderCore.offered)."""
        lease = self.leases.get(execution_id)
        if lease is None or lease.token != token:
            return
        lease.written = True
        if stream > lease.stream:  # noqa: PLR1730 (max() is a call, once per lease offered)
            lease.stream = stream
        if start_mono is not None and lease.start_mono is not None and start_mono < lease.start_mono:
            lease.start_mono = start_mono

    def cancel_asked(self, execution_id: str, token: Token, stream: int) -> None:
        """The cancel of the lease `token` of `execution_id` was asked for; its CancelAttempt was sent on
        the worker stream `stream` (-1: not sent). Nothing if that lease is not held (it ended)."""
        lease = self.leases.get(execution_id)
        if lease is not None and lease.token == token:
            self.cancelling[execution_id] = stream

    def cancels_to_resend(self, worker_id: str, renewed: Sequence[str], stream: int) -> list[CancelAttempt]:
        """The CancelAttempts of the leases just renewed for `worker_id` on its stream `stream` whose
        cancel was asked for and not sent on that stream yet (now counted as sent on it)."""
        out = []
        cancelling, leases = self.cancelling, self.leases
        for execution_id in renewed:
            sent = cancelling.get(execution_id)
            lease = leases.get(execution_id)
            if sent is None or sent == stream or lease is None or lease.worker_id != worker_id:
                continue
            cancelling[execution_id] = stream
            term, index = lease.token
            token = common_pb2.FencingToken(term=term, index=index)
            out.append(worker_pb2.CancelAttempt(execution_id=execution_id, token=token))
        return out

    # ------------------------------------------------------------------------------------- expiry

    def expire_at(self, execution_id: str, mono_ms: int) -> None:
        """Expire the lease at `mono_ms` (again: its expiry was not committed), unless it is gone."""
        lease = self.leases.get(execution_id)
        if lease is not None:
            lease.expiring = False
            lease.deadline = mono_ms
            self._arm(execution_id, lease, mono_ms)

    def due(self, mono_ms: int) -> list[LeaseState]:
        """Leases whose deadline passed, now marked expiring (their ExpireLease is to be proposed)."""
        out = []
        leases, armed = self.leases, self._armed
        for at_ms, _deadline in self.deadlines.advance(mono_ms):
            for execution_id in armed.pop(at_ms, ()):
                lease = leases.get(execution_id)
                if lease is None:
                    continue
                lease.armed = -1
                if not lease.expiring and lease.deadline > mono_ms:
                    self._arm(execution_id, lease, lease.deadline)  # renewed since it was armed
                elif not lease.expiring:
                    lease.expiring = True
                    out.append(lease)
        return out

    @staticmethod
    def expire_command(lease: LeaseState, now_ms: int) -> Command:
        return Command(
            stamped_at_ms=now_ms,
            expire_lease=commands_pb2.ExpireLease(
                execution_id=lease.execution_id,
                token=common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]),
                unstarted=lease.never_began(),
            ),
        )

    # ------------------------------------------------------------------------- renewal, reconcile

    def renew(
        self,
        worker_id: str,
        refs: Sequence[worker_pb2.LeaseRef],
        mono_ms: int,
        deadline: int,
        completing: Container[tuple[str, Token]],
    ) -> Renewals:
        """Renew (to `deadline`) the listed leases `worker_id` holds; revoke the others, except those
        whose result is being committed (`completing`); another worker's lease with its own token is
        revoked and reported as forged. A renewal near a deferred start confirms it."""
        renewed: list[str] = []
        revoked: list[str] = []
        out = Renewals(renewed, revoked, [])
        leases = self.leases
        confirm_from = mono_ms + CONFIRM_AHEAD_MS + CONFIRM_MARGIN_MS  # start_mono <= this: confirmed
        for ref in refs:
            execution_id = ref.execution_id  # read once: a protobuf string field is a new str per read
            lease = leases.get(execution_id)
            t = ref.token
            token = (t.term, t.index)  # token_tuple, inline: once per lease per heartbeat
            if lease is not None and lease.token == token:
                if lease.worker_id != worker_id:
                    # Never renewed for this sender (revoked in this ack, which reaches the sender only).
                    out.forged.append(Refusal(worker_id, execution_id, "renewal", lease.worker_id))
                    revoked.append(execution_id)
                    continue
                if not lease.expiring:
                    lease.deadline = deadline  # re-armed in the wheel when its old entry comes due (due)
                    # The worker has it after all: whatever a listing said, it may begin now.
                    lease.unstarted = False
                    if (
                        not lease.confirmed
                        and lease.start_mono is not None
                        and lease.start_mono <= confirm_from
                    ):
                        lease.confirmed = True
                    renewed.append(execution_id)
                    continue
            if (execution_id, token) in completing:
                renewed.append(execution_id)  # its result is being committed
            else:
                revoked.append(execution_id)
        return out

    def reconcile(
        self,
        worker_id: str,
        incarnation: str,
        listed: Sequence[worker_pb2.LeaseRef],
        term: int,
        mono_ms: int,
        *,
        stream: int = -1,
    ) -> None:
        """Expire now the leases the worker neither runs nor has finished (`listed` is its complete
        listing, on its stream `stream`) whose offers never reached it:
        - leases earlier leaders granted (the old leader died between the grant's commit and its
          dispatch): waiting out their TTL + grace would hold those fires back for seconds after every
          failover;
        - leases this leader offered to the same worker process on an earlier stream (the worker was cut
          from us and came back on a new stream, through a follower's relay: S6): the old stream took
          the offers and never delivered them.
        Sound because a worker keeps one stream at a time (it ends the old call before it opens a new
        one): once it lists on a new stream, nothing written to an older one reaches it, no earlier
        leader can hand it anything, and we never offer leases of earlier terms ourselves
        (LeaderCore._adopt_if_running). Offers written to this stream (possibly still in flight) are
        left alone, and so is a lease of another process of the same worker id."""
        have = {(ref.execution_id, token_tuple(ref.token)) for ref in listed}
        for execution_id in self._leases_of.get(worker_id, ()):
            lease = self.leases[execution_id]
            if lease.expiring or (lease.execution_id, lease.token) in have:
                continue
            same = bool(lease.incarnation) and lease.incarnation == incarnation
            if lease.token[0] < term:
                # Granted to this very process (same incarnation), which neither holds nor finished it:
                # the offer never reached it, so nothing ran. Another process of the same worker id (a
                # restart) may have begun it before it died: that expiry spends the attempt.
                lease.unstarted = same
            elif not (same and 0 <= lease.stream < stream):
                continue
            else:
                lease.unstarted = True  # written only to a stream this process had left: never received
            lease.deadline = mono_ms
            self._arm(execution_id, lease, mono_ms)  # expired by the next tick


__all__ = [
    "CONFIRM_AHEAD_MS",
    "CONFIRM_MARGIN_MS",
    "Granted",
    "LeaseKeeper",
    "LeaseState",
    "Refusal",
    "Renewals",
]
