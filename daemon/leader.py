"""Leader duties as a pure, event-driven core: horizon loader, fire planner, dispatcher, lease keeper.

`LeaderCore` does no I/O and reads no clock. Its driver (the asyncio node in `daemon.node`, or the
deterministic simulation in tests/sim) feeds it events with the current wall time (`now_ms`, for
nominal fire times) and monotonic time (`mono_ms`, for lease deadlines), proposes the commands it
returns, reports back what committed (`on_committed`) or failed (`on_proposal_failed`), and delivers
the worker messages it queues in `outgoing`.

Safety rests on the state machine, not on this core: a duplicated Fire is rejected by I3, a stale
result by the fencing token. The core's job is liveness and timeliness, and I4: it hands a lease to a
worker only after the Grant committed, and only after its own Epoch committed (`ready`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cronraft.bounds import MAX_OFFER_BYTES
from cronraft.daemon import staging
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import deps, firing
from cronraft.raft import state as sm
from cronraft.raft.codec import token_tuple
from cronraft.raft.kv import KV, Txn
from cronraft.timerwheel import TimingWheel

Command = commands_pb2.Command

# Pending executions are checked for a waiting reason and their start deadline this often, at most this
# many per check, and only once they have waited the grace (most start within milliseconds).
WAITING_CHECK_MS = 1_000
WAITING_CHECK_LIMIT = 1_000
WAITING_NOTES_PER_CHECK = 100  # reasons are for people: never flood the log with them
WAITING_GRACE_MS = 1_000
EXACT_PICK = 32  # up to this many workers on a queue, a lease goes to the one with most free slots
SILENT_CHECK_MS = 200  # how often connected workers are checked for silence (worker_silent_ms)
# A worker starts a lease granted ahead of its due time only once a heartbeat it sent at most this long
# before the start (client/worker.py, _CONFIRM_AHEAD_S) has renewed it. A renewal the leader gives earlier
# than that (less a margin for the two monotonic clocks' rates over a lead of up to 30 s) cannot be that
# confirmation; a held lease never renewed later cannot have begun (ExpireLease.unstarted).
CONFIRM_AHEAD_MS = 100
CONFIRM_MARGIN_MS = 30
# One of our own commands (a Fire, Grant, Complete or ExpireLease) that apply recorded as "internal" (its
# handler raised: a bug, or stored data no check caught) fails the same way when proposed again at once:
# it is retried after a delay that doubles with each failure in a row, up to the maximum (it was put back
# at once, and a failing Fire was proposed again at every tick: a hot loop of failing entries).
INTERNAL_RETRY_MS = 1_000
INTERNAL_RETRY_MAX_MS = 60_000
# What a hold (LeaderCore.hold) keeps back: fires and grants, also those waiting to be proposed again.
_HELD_KINDS = frozenset({"fire", "grant"})
# Results that arrive before the running leases are loaded (an outbox resent to a new leader before its
# Epoch commits) wait for them, up to this many; beyond it they are dropped and the workers resend them.
MAX_EARLY_RESULTS = 10_000
CommandResult = commands_pb2.CommandResult
Token = tuple[int, int]


@dataclass(frozen=True)
class LeaderSettings:
    horizon_ms: int = 10_000
    lease_ttl_ms: int = 10_000
    # The leader expires a lease this long after the worker must have self-fenced (I5), so that for
    # exactly_once the old attempt is dead before a new one is granted.
    expiry_grace_ms: int = 5_000
    max_commands_per_tick: int = 4096
    # A connected worker not heard from (heartbeat, results) for this long gets no new lease: its stream
    # may be cut by a partition that sends no reset, and every lease offered into it would only expire
    # and burn an attempt (found by fault scenario S6, workers cut from the leader). 0: never.
    worker_silent_ms: int = 0
    # Idle heartbeats: a worker holding nothing heartbeats every `heartbeat_interval_ms`, stretched so that
    # idle workers send about `idle_workers_per_interval` heartbeats per interval in all (at 10,000 workers
    # and 2 s: one every 20 s each). Each heartbeat costs the leader ~0.2 ms of CPU in gRPC and protobuf,
    # so 10,000 workers at 2 s took a whole core. Below that many workers nothing changes.
    heartbeat_interval_ms: int = 2_000
    idle_workers_per_interval: int = 1_000
    max_idle_heartbeat_ms: int = 30_000
    pending_load_limit: int = 10_000
    # Cluster-wide cap on executions holding a lease (0: none): beyond it, work waits pending.
    max_running: int = 0
    # Priority aging: an execution waiting this long counts one priority level higher (so low never
    # starves behind a steady stream of high).
    aging_step_ms: int = 60_000
    # Fire ahead: commit the Fire and Grant of a task that may fire ahead (firing.may_fire_ahead) up to
    # this long before its due time; the worker holds the start until the due time (Lease.start_delay_ms),
    # so the commit and dispatch latency no longer delays the start. 0: fire at the due time.
    fire_lead_ms: int = 0
    # Burst staging (daemon.staging): when more is due than commits in `fire_lead_ms` at `stage_rate`
    # fires per second, fire up to `stage_lead_ms` ahead instead. 0: never more than `fire_lead_ms`.
    stage_lead_ms: int = 0
    stage_rate: int = 2_000
    # Quotas of a task's executions ([limits]; raft.quota), stamped into each Fire (0: none). A fire over
    # one creates no execution (the ledger says skipped_limit) and the schedule goes on.
    max_pending_per_task: int = 0
    max_executions_per_task: int = 0


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


@dataclass
class WorkerState:
    worker_id: str
    capacity: int
    queues: frozenset[str]
    labels: dict[str, str]
    connected: bool = True
    inflight: set[str] = field(default_factory=set)  # execution ids holding (or about to hold) a slot
    heard_mono_ms: int | None = None  # when it last sent anything (None: not since it connected)
    silent: bool = False  # not heard from for settings.worker_silent_ms: offered nothing new
    echo_ms: int = 0  # the worker's own stamp of its latest Hello/Heartbeat received (LeaseOffers.echo)
    reconciled: bool = False  # its complete listing was checked against the leases of earlier terms
    incarnation: str = ""  # the worker process (Hello.incarnation)
    draining: bool = False  # shutting down (Heartbeat.draining): offered nothing more

    def free(self) -> int:
        if not self.connected or self.silent or self.draining:
            return 0
        return self.capacity - len(self.inflight)


@dataclass
class LeaseState:
    execution_id: str
    token: Token
    worker_id: str
    task_id: str = ""
    expiring: bool = False
    # Monotonic expiry. A renewal only moves this; the lease's entry in `lease_deadlines` stays where it
    # was armed and is re-armed when it comes due (a wheel operation per renewal cost the leader ~5 µs
    # per lease: 0.1 s for one heartbeat of a worker holding 10,000 leases).
    deadline: int = 0
    # A start held for its due time: the earliest monotonic time (ours) the worker may start it, from the
    # offers we wrote (None: not held, or not known to this leader: it may have begun at any time).
    start_mono: int | None = None
    confirmed: bool = False  # renewed at or after start_mono - CONFIRM_AHEAD_MS: it may have begun
    unstarted: bool = False  # its worker's process does not hold it (reconciliation): it never began
    # Its offer was handed to a worker stream (offered); an offer dropped with a replaced or closed stream
    # never reached anyone, so its expiry is unstarted. Leases this leader did not grant count as written.
    written: bool = True
    incarnation: str = ""  # the worker process it was granted to (Execution.worker_incarnation)


class LeaderCore:
    """The leader's in-memory plan. Memory is bounded by the horizon and by running executions, not by
    the number of stored tasks (I6): only tasks due within `horizon_ms` sit in the wheel."""

    def __init__(
        self,
        kv: KV,
        settings: LeaderSettings,
        *,
        node_id: str,
        term: int,
        new_id: Callable[[int], str],
    ) -> None:
        self.kv = kv
        self.settings = settings
        self.node_id = node_id
        self.term = term
        self._new_id = new_id
        self.ready = False
        # Why dispatching is held back (empty: it is not): members disagree on the versions that change
        # schedule results (raft.versions). While held, a tick fires nothing and grants nothing; leases
        # already handed out are still renewed, expired and completed. Set by the driver.
        self.hold = ""
        self.wheel: staging.CountedWheel[str] = staging.CountedWheel(now_ms=0)
        # The lead in force since the last tick: `fire_lead_ms`, or more while a burst is staged.
        self._lead_now = settings.fire_lead_ms
        # Tasks due within the lead that may not fire ahead: they wait here for their due time (the main
        # wheel runs `fire_lead_ms` ahead of the clock).
        self._held: TimingWheel[str] = TimingWheel(now_ms=0)
        self._now_ms = 0  # the scheduling clock at the last tick or outcome (for leases offered later)
        self._loaded_until = -1  # due-index loaded into the wheel up to and including this time
        self._firing: set[str] = set()  # task ids with a Fire proposed, not yet answered
        # Executions waiting for a worker: per queue, one insertion-ordered map per priority rank (high
        # first) of execution id -> fired_at_ms. Per queue, so that work for a queue nobody serves costs
        # nothing while others dispatch.
        self._pending: dict[str, tuple[dict[str, int], ...]] = {}
        self._running_by_task: dict[str, int] = {}
        self._reasons: dict[str, str] = {}  # execution id -> waiting reason already committed
        self._expiring_pending: set[str] = set()
        self._next_waiting_check = 0
        self._next_silent_check = 0
        self._next_retry_ms: int | None = None  # earliest backoff end among pending executions
        self._pending_overflow = False  # more pending executions in the store than in memory
        self._granting: set[str] = set()
        self._granting_tasks: dict[str, str] = {}  # execution id -> task id, for grants in flight
        # Results being committed: (execution id, token) -> the worker that sent it (who gets the ack).
        self._completing: dict[tuple[str, Token], str] = {}
        # Results received before `ready` (sender, result, bound): checked and proposed by the first ticks.
        self._early_results: list[tuple[str, common_pb2.AttemptResult, bool]] = []
        # Messages refused as forged (Refusal), for the driver to log and act on; it clears the list.
        self.refusals: list[Refusal] = []
        self.workers: dict[str, WorkerState] = {}
        # Worker ids per queue served (an ordered set), its list form for the rotating pick (rebuilt
        # after a change), the rotation's position, and the queues found with no free slot in this tick:
        # with thousands of workers a pass over all of them per fire capped the fire rate.
        self._serving: dict[str, dict[str, None]] = {}
        self._serving_list: dict[str, list[str]] = {}
        self._cursor: dict[str, int] = {}
        self._full: set[str] = set()
        self.leases: dict[str, LeaseState] = {}
        # Execution ids of each worker's leases: a (re)connecting worker's slots and its reconciliation
        # are then O(its leases), not a pass over every lease (100,000 of them after a failover).
        self._leases_of: dict[str, set[str]] = {}
        # Lease deadlines on the monotonic clock, in a second wheel: expiry and renewal are O(1) and a
        # tick does not scan every running lease.
        self.lease_deadlines: TimingWheel[str] = TimingWheel(now_ms=0)
        self.outgoing: list[tuple[str, worker_pb2.GatewayMessage]] = []
        self._retry: list[Command] = []  # commands to propose again after a failed proposal
        # Our commands recorded as "internal": (kind, id) -> (failures in a row, retry at, error). The
        # retry time is on the scheduling clock, but on the monotonic one for lease expiries.
        self._failing: dict[tuple[str, str], tuple[int, int, str]] = {}
        # What the driver logs, once per streak of failures: (kind, id, error, retry delay in ms).
        self.failure_reports: list[tuple[str, str, str, int]] = []
        self._txn: Txn | None = None  # the read transaction shared by a batch's lookups (`_reading`)
        self._fire_limits = (
            commands_pb2.Limits(
                max_pending_per_task=settings.max_pending_per_task,
                max_executions_per_task=settings.max_executions_per_task,
            )
            if settings.max_pending_per_task or settings.max_executions_per_task
            else None
        )

    # ------------------------------------------------------------------------------------ lifecycle

    def epoch_command(self, now_ms: int) -> Command:
        """The first command of a new leader; nothing is dispatched before it commits (I4)."""
        return Command(stamped_at_ms=now_ms, epoch=commands_pb2.Epoch(term=self.term, leader_id=self.node_id))

    def on_epoch_committed(self, now_ms: int, mono_ms: int) -> None:
        """Load what the previous leaders left: running leases (waited out), pending executions."""
        self.wheel = staging.CountedWheel(now_ms=now_ms)
        self._held = TimingWheel(now_ms=now_ms)
        self.lease_deadlines = TimingWheel(now_ms=mono_ms)
        deadline = mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms
        with self.kv.read() as txn:
            for ex in sm.running_executions(txn):
                self._track_lease(ex, deadline)
        self._refill_pending()
        self.ready = True

    def _track_lease(self, ex: common_pb2.Execution, deadline_mono: int) -> None:
        old = self.leases.get(ex.execution_id)
        if old is None:
            self._running_by_task[ex.task_id] = self._running_by_task.get(ex.task_id, 0) + 1
        elif old.worker_id != ex.worker_id:
            self._forget_lease_of(old)
        self._leases_of.setdefault(ex.worker_id, set()).add(ex.execution_id)
        self.leases[ex.execution_id] = LeaseState(
            ex.execution_id,
            token_tuple(ex.token),
            ex.worker_id,
            ex.task_id,
            deadline=deadline_mono,
            incarnation=ex.worker_incarnation,
        )
        self.lease_deadlines.add(ex.execution_id, deadline_mono)
        w = self.workers.get(ex.worker_id)
        if w is not None:
            w.inflight.add(ex.execution_id)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction for the task lookups of a whole batch (fires of a tick, outcomes of an
        entry) instead of one per lookup. The snapshot is at least as new as the entry being handled."""
        if self._txn is not None:
            yield
            return
        with self.kv.read() as txn:
            self._txn = txn
            try:
                yield
            finally:
                self._txn = None

    def _read_task(self, task_id: str) -> common_pb2.Task | None:
        if self._txn is not None:
            return sm.read_task(self._txn, task_id)
        with self.kv.read() as txn:
            return sm.read_task(txn, task_id)

    def _pend(self, ex: common_pb2.Execution) -> None:
        task = self._read_task(ex.task_id)
        queue = (task.spec.queue if task else "") or "default"
        ranks = self._pending.setdefault(queue, ({}, {}, {}))
        ranks[sm.priority_rank(ex.priority)][ex.execution_id] = ex.fired_at_ms

    def _pending_count(self) -> int:
        return sum(len(r) for ranks in self._pending.values() for r in ranks)

    def _refill_pending(self) -> None:
        limit = self.settings.pending_load_limit
        with self.kv.read() as txn:
            found = sm.pending_executions(txn, limit=limit + 1)
        self._pending_overflow = len(found) > limit
        for ex in found[:limit]:
            if ex.execution_id not in self._granting:
                self._pend(ex)

    # ------------------------------------------------------------------------------------- workers

    def worker_connected(
        self,
        worker_id: str,
        capacity: int,
        queues: Sequence[str],
        labels: dict[str, str],
        mono_ms: int | None = None,
        *,
        echo_ms: int = 0,
        incarnation: str = "",
    ) -> None:
        w = WorkerState(worker_id, max(1, capacity), frozenset(queues or ["default"]), dict(labels))
        w.heard_mono_ms = mono_ms
        w.echo_ms = echo_ms
        w.incarnation = incarnation
        w.inflight = set(self._leases_of.get(worker_id, ()))
        w.inflight |= {eid for eid in self._granting_for(worker_id)}
        old = self.workers.get(worker_id)
        if old is not None:
            self._unserve(old)
        self.workers[worker_id] = w
        for q in w.queues:
            self._serving.setdefault(q, {})[worker_id] = None
            self._serving_list.pop(q, None)

    def _granting_for(self, worker_id: str) -> set[str]:
        old = self.workers.get(worker_id)
        return {e for e in old.inflight if e in self._granting} if old else set()

    def worker_disconnected(self, worker_id: str) -> None:
        # Its leases stay: the worker keeps running and renews them if it comes back in time.
        w = self.workers.get(worker_id)
        if w is not None:
            w.connected = False
            if not w.inflight:
                # Nothing to remember (a reconnect rebuilds its state from the leases): worker ids
                # carry a pid, so a restarted worker would otherwise leave its old state here forever.
                del self.workers[worker_id]
                self._unserve(w)

    def _unserve(self, w: WorkerState) -> None:
        for q in w.queues:
            ids = self._serving.get(q)
            if ids is not None:
                ids.pop(w.worker_id, None)
                self._serving_list.pop(q, None)

    def heard_from(self, worker_id: str, mono_ms: int) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.heard_mono_ms = mono_ms
            w.silent = False

    def idle_heartbeat_ms(self) -> int:
        """How often a worker holding nothing heartbeats now (Welcome, HeartbeatAck)."""
        s = self.settings
        stretch = -(-len(self.workers) // max(1, s.idle_workers_per_interval))  # ceil
        longest = max(s.max_idle_heartbeat_ms, s.heartbeat_interval_ms)
        return min(longest, s.heartbeat_interval_ms * max(1, stretch))

    def _expire_command(self, lease: LeaseState, now_ms: int) -> Command:
        return Command(
            stamped_at_ms=now_ms,
            expire_lease=commands_pb2.ExpireLease(
                execution_id=lease.execution_id,
                token=common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]),
                unstarted=lease.unstarted
                or not lease.written
                or (lease.start_mono is not None and not lease.confirmed),
            ),
        )

    def _mark_silent(self, mono_ms: int) -> None:
        limit = self.settings.worker_silent_ms
        if limit <= 0 or mono_ms < self._next_silent_check:
            return
        # Silence is measured in seconds: a pass over every worker at each tick cost a leader with
        # thousands of worker streams more than their heartbeats.
        self._next_silent_check = mono_ms + SILENT_CHECK_MS
        # A worker holding nothing heartbeats at the idle interval: the same two missed heartbeats.
        idle_limit = limit + 2 * max(0, self.idle_heartbeat_ms() - self.settings.heartbeat_interval_ms)
        for w in self.workers.values():
            if w.heard_mono_ms is None:
                w.heard_mono_ms = mono_ms  # connected without a time: its silence counts from now
            elif w.connected:
                w.silent = mono_ms - w.heard_mono_ms > (limit if w.inflight else idle_limit)

    def heartbeat(
        self,
        worker_id: str,
        leases: Sequence[worker_pb2.LeaseRef],
        mono_ms: int,
        echo_ms: int = 0,
        *,
        finished: Sequence[worker_pb2.LeaseRef] = (),
        complete_listing: bool = False,
        draining: bool = False,
    ) -> worker_pb2.HeartbeatAck:
        ack = worker_pb2.HeartbeatAck(idle_heartbeat_interval_ms=self.idle_heartbeat_ms())
        self.heard_from(worker_id, mono_ms)
        w = self.workers.get(worker_id)
        if w is not None and draining:
            w.draining = True
        if w is not None and echo_ms > w.echo_ms:
            w.echo_ms = echo_ms
        if not self.ready:
            # The running leases are not loaded yet: renew nothing, revoke nothing. The worker keeps its
            # local deadline, and the next heartbeat (after the epoch commits) renews it.
            return ack
        deadline = mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms
        for ref in leases:
            lease = self.leases.get(ref.execution_id)
            token = token_tuple(ref.token)
            if lease is not None and lease.token == token and lease.worker_id != worker_id:
                # Another worker's lease with its own token: never renewed for this sender (revoked in
                # this ack, which reaches the sender only), and reported as forged.
                self.refusals.append(Refusal(worker_id, ref.execution_id, "renewal", lease.worker_id))
                ack.revoked.append(ref.execution_id)
            elif (
                lease is not None
                and lease.token == token
                and lease.worker_id == worker_id
                and not lease.expiring
            ):
                lease.deadline = deadline  # re-armed in the wheel when its old entry comes due (tick)
                lease.unstarted = False  # held after all: whatever a listing said, it may begin now
                if (
                    not lease.confirmed
                    and lease.start_mono is not None
                    and mono_ms >= lease.start_mono - CONFIRM_AHEAD_MS - CONFIRM_MARGIN_MS
                ):
                    lease.confirmed = True
                ack.renewed.append(ref.execution_id)
            elif (ref.execution_id, token) in self._completing:
                ack.renewed.append(ref.execution_id)  # its result is being committed
            else:
                ack.revoked.append(ref.execution_id)
        if w is not None and w.connected and not w.reconciled:
            if complete_listing:
                self._reconcile(w, [*leases, *finished], mono_ms)
            else:
                ack.list_finished = True
        return ack

    def _reconcile(self, w: WorkerState, held: Sequence[worker_pb2.LeaseRef], mono_ms: int) -> None:
        """Expire now the leases earlier leaders granted to `w` that it neither runs nor has finished: their
        offers never reached it (the old leader died between the grant's commit and its dispatch), and
        waiting out their TTL + grace would hold those fires back for seconds after every failover.
        Sound because a worker keeps one stream at a time: once it talks to us, no earlier leader can
        hand it anything, and we never offer leases of earlier terms ourselves (_adopt_if_running)."""
        w.reconciled = True
        listed = {(ref.execution_id, token_tuple(ref.token)) for ref in held}
        for execution_id in self._leases_of.get(w.worker_id, ()):
            lease = self.leases[execution_id]
            if (
                lease.token[0] < self.term
                and not lease.expiring
                and (lease.execution_id, lease.token) not in listed
            ):
                # Granted to this very process (same incarnation), which neither holds nor finished it:
                # the offer never reached it, so nothing ran. Another process of the same worker id (a
                # restart) may have begun it before it died: that expiry spends the attempt.
                lease.unstarted = bool(lease.incarnation) and lease.incarnation == w.incarnation
                lease.deadline = mono_ms
                self.lease_deadlines.add(lease.execution_id, mono_ms)  # expired by the next tick

    def results(
        self,
        worker_id: str,
        results: Sequence[common_pb2.AttemptResult],
        now_ms: int,
        *,
        bound: bool = True,
    ) -> list[Command]:
        """Complete commands for a worker's results (the ack is sent once they commit).

        A result is proposed only when the lease of its execution is held by `worker_id` (issue 13: the
        fencing token alone, which readers could see, is not enough). A result about a lease held by
        another worker with the same token is forged: dropped, never acknowledged, and reported in
        `refusals`. A result about no lease of this worker otherwise (its attempt was fenced off, the
        execution ended) is stale: the state machine would reject it, so it is acknowledged at once
        without being proposed (the worker stops resending it, and nothing is applied). Before `ready`
        the running leases are not loaded: results wait for them (MAX_EARLY_RESULTS).

        `bound=False` (authentication off: a worker id is only a claim) skips the holder check, as
        before issue 13: the state machine checks the token. A worker restarted under another id with
        its predecessor's outbox then still reports its predecessor's results."""
        if not self.ready:
            room = max(0, MAX_EARLY_RESULTS - len(self._early_results))
            self._early_results.extend((worker_id, r, bound) for r in results[:room])
            return []
        cmds = []
        stale: list[str] = []
        for r in results:
            key = (r.execution_id, token_tuple(r.token))
            if key in self._completing:
                continue
            verdict = self.lease_check(worker_id, r.execution_id, key[1], "result") if bound else ""
            if verdict == "stale":
                stale.append(r.execution_id)
                continue
            if verdict:
                continue
            self._completing[key] = worker_id
            cmds.append(
                Command(
                    stamped_at_ms=now_ms,
                    complete=commands_pb2.Complete(execution_id=r.execution_id, token=r.token, result=r),
                )
            )
        if stale:
            self.outgoing.append(
                (worker_id, worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=stale)))
            )
        return cmds

    def lease_check(self, worker_id: str, execution_id: str, token: Token, kind: str) -> str:
        """Whether a message of `worker_id` about the lease (`execution_id`, `token`) may be acted on:
        "" when the lease is this worker's (the state machine then checks the token), "stale" when it
        is not a lease of this worker (an attempt fenced off, an execution that ended), "forged" when
        another worker holds (or held) that very lease (recorded in `refusals`).

        Once `ready`, the lease table holds every running lease: a worker learns a token only from an
        offer sent after its Grant committed and was tracked here, so a result about no lease in the
        table is stale. Output may trail its result (the worker flushes it periodically) and arrives
        before `ready` too: for output the store says who held the lease with that token."""
        lease = self.leases.get(execution_id)
        if lease is not None and (lease.token == token or kind == "result"):
            holder, held = lease.worker_id, lease.token
        elif kind == "result" and self.ready:
            return "stale"
        else:
            try:
                with self.kv.read() as txn:
                    ex = sm.read_execution(txn, execution_id)
            except InvalidArgument:  # not an execution id: nothing to act on
                ex = None
            if ex is None or token_tuple(ex.token) != token:
                return "stale"  # the state machine would refuse it: not the execution's current token
            holder, held = ex.worker_id or (ex.attempts[-1].worker_id if ex.attempts else ""), token
        if holder == worker_id:
            return ""
        if held == token:
            self.refusals.append(Refusal(worker_id, execution_id, kind, holder))
            return "forged"
        return "stale"

    def _take_early_results(self, now_ms: int) -> list[Command]:
        early, self._early_results = self._early_results, []
        cmds: list[Command] = []
        for worker_id, r, bound in early:
            cmds.extend(self.results(worker_id, [r], now_ms, bound=bound))
        return cmds

    # ---------------------------------------------------------------------------------------- tick

    def tick(self, now_ms: int, mono_ms: int) -> list[Command]:
        """Everything due now: fires from the wheel, lease expiries, grants for pending executions."""
        if not self.ready:
            return []
        if self.hold:
            return self._held_tick(now_ms, mono_ms)
        cmds: list[Command] = self._retry
        self._retry = []
        if self._early_results:
            cmds.extend(self._take_early_results(now_ms))
        self._now_ms = now_ms
        self._full.clear()  # slots are released between ticks (outcomes, disconnects), never during one
        budget = self.settings.max_commands_per_tick
        self._load_horizon(now_ms)
        until = self._stage_until(now_ms)
        self._lead_now = until - now_ms
        due = self.wheel.advance(until) + self._held.advance(now_ms)
        with self._reading():
            for task_id, due_ms in due:
                if task_id in self._firing:
                    continue
                self._firing.add(task_id)
                cmds.extend(self._fire_commands(task_id, due_ms, now_ms))
        for execution_id, _armed in self.lease_deadlines.advance(mono_ms):
            lease = self.leases.get(execution_id)
            if lease is not None and not lease.expiring and lease.deadline > mono_ms:
                self.lease_deadlines.add(execution_id, lease.deadline)  # renewed since it was armed
            elif lease is not None and not lease.expiring:
                lease.expiring = True
                cmds.append(self._expire_command(lease, now_ms))
        if len(cmds) < budget:
            self._mark_silent(mono_ms)
            cmds.extend(self._grant_pending(now_ms, budget - len(cmds)))
        if now_ms >= self._next_waiting_check and len(cmds) < budget:
            self._next_waiting_check = now_ms + WAITING_CHECK_MS
            cmds.extend(self._check_waiting(now_ms, budget - len(cmds)))
        return cmds

    def _held_tick(self, now_ms: int, mono_ms: int) -> list[Command]:
        """A tick while dispatching is held (`hold`): lease expiries and retried results only. Due tasks
        stay in the wheel and pending executions stay pending; once the hold lifts they fire (late, by
        their misfire policy) and are granted as after any pause of the leader."""
        self._now_ms = now_ms
        keep = [c for c in self._retry if c.WhichOneof("body") in _HELD_KINDS]
        cmds = [c for c in self._retry if c.WhichOneof("body") not in _HELD_KINDS]
        self._retry = keep
        if self._early_results:
            cmds.extend(self._take_early_results(now_ms))
        for execution_id, _armed in self.lease_deadlines.advance(mono_ms):
            lease = self.leases.get(execution_id)
            if lease is not None and not lease.expiring and lease.deadline > mono_ms:
                self.lease_deadlines.add(execution_id, lease.deadline)
            elif lease is not None and not lease.expiring:
                lease.expiring = True
                cmds.append(self._expire_command(lease, now_ms))
        return cmds

    def _check_waiting(self, now_ms: int, budget: int) -> list[Command]:
        """Say why pending executions wait (once per reason), and expire those past their start deadline."""
        cmds: list[Command] = []
        checked = notes = 0
        with self.kv.read() as txn:
            for queue, ranks in self._pending.items():
                for rank_map in ranks:
                    for execution_id in list(rank_map):
                        checked += 1
                        if checked > WAITING_CHECK_LIMIT or len(cmds) >= budget:
                            return cmds
                        ex = sm.read_execution(txn, execution_id)
                        if ex is None or ex.state != common_pb2.EXECUTION_PENDING:
                            rank_map.pop(execution_id, None)
                            continue
                        task = sm.read_task(txn, ex.task_id)
                        if task is None or now_ms - ex.fired_at_ms < WAITING_GRACE_MS:
                            continue
                        unmet = deps.unmet(txn, task, ex.nominal_time_ms) if task.spec.depends_on else ""
                        reason = unmet or self._why_waiting(queue, ex, task, now_ms)
                        deadline = task.spec.start_deadline_ms
                        dep_deadline = task.spec.dependency_deadline_ms if unmet else 0
                        if (deadline and now_ms >= ex.fired_at_ms + deadline) or (
                            dep_deadline and now_ms >= ex.fired_at_ms + dep_deadline
                        ):
                            if execution_id not in self._expiring_pending:
                                self._expiring_pending.add(execution_id)
                                cmds.append(
                                    Command(
                                        stamped_at_ms=now_ms,
                                        expire_pending=commands_pb2.ExpirePending(
                                            execution_id=execution_id, reason=reason
                                        ),
                                    )
                                )
                        elif (
                            reason != ex.waiting_reason
                            and self._reasons.get(execution_id) != reason
                            and notes < WAITING_NOTES_PER_CHECK
                        ):
                            notes += 1
                            self._reasons[execution_id] = reason
                            cmds.append(
                                Command(
                                    stamped_at_ms=now_ms,
                                    note_waiting=commands_pb2.NoteWaiting(
                                        execution_id=execution_id, reason=reason
                                    ),
                                )
                            )
        return cmds

    def _why_waiting(self, queue: str, ex: common_pb2.Execution, task: common_pb2.Task, now_ms: int) -> str:
        failing = self._failing.get(("grant", ex.execution_id))
        if failing is not None:
            return (
                f"granting it failed when applied ({failing[2]}); the leader tries again with a growing "
                f"delay (at most {INTERNAL_RETRY_MAX_MS // 1000} s)"
            )[:500]
        if ex.not_before_ms > now_ms:
            return f"retry backoff until {ex.not_before_ms}" if ex.attempt else f"due at {ex.not_before_ms}"
        serving = [w for w in self.workers.values() if w.connected and queue in w.queues]
        if not serving:
            return f"no connected worker serves queue {queue!r}"
        labels = task.spec.worker_labels
        eligible = [w for w in serving if all(w.labels.get(k) == v for k, v in labels.items())]
        if not eligible:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return f"no worker of queue {queue!r} carries labels {wanted}"
        limit = task.spec.max_concurrency
        if limit and self._running_by_task.get(ex.task_id, 0) >= limit:
            return f"task max_concurrency {limit} reached"
        if self.settings.max_running and len(self.leases) >= self.settings.max_running:
            return f"cluster max_running {self.settings.max_running} reached"
        if not any(w.free() > 0 for w in eligible):
            return f"all {len(eligible)} eligible workers are busy"
        return "waiting for dispatch"

    def _load_horizon(self, now_ms: int) -> None:
        horizon = self.settings.horizon_ms
        if self._loaded_until >= now_ms + horizon // 2:
            return
        until = now_ms + horizon
        # Only what is due after the part already loaded: tasks due before it are in the wheel, firing,
        # or overdue and waiting; re-reading them at every advance cost a burst of 20,000 overdue tasks
        # a scan of the whole backlog (and an id decode per entry) every half horizon.
        with self.kv.read() as txn:
            after: tuple[int, str] | None = None
            while True:
                batch = sm.due_tasks(txn, until, after=after, from_ms=self._loaded_until + 1, limit=10_000)
                for due_ms, task_id in batch:
                    if due_ms > self._loaded_until and task_id not in self._firing:
                        self.wheel.add(task_id, due_ms)
                if len(batch) < 10_000:
                    break
                after = batch[-1]
        self._loaded_until = until

    def _fire_commands(self, task_id: str, due_ms: int, now_ms: int) -> list[Command]:
        retry_at = self._held_back("fire", task_id, now_ms)
        if retry_at is not None:  # its last Fire failed inside apply: not before its retry time
            self._firing.discard(task_id)
            self.wheel.add(task_id, retry_at)
            return []
        task = self._read_task(task_id)
        if task is None or task.state != common_pb2.TASK_SCHEDULED or not task.next_fire_ms:
            self._firing.discard(task_id)
            self._failing.pop(("fire", task_id), None)
            return []
        due = firing.due_of(task)
        lead = self._lead_for(task, self._lead_now)
        if due > now_ms + lead:
            self._firing.discard(task_id)
            if due > now_ms + self._lead_now:  # the wheel held an older plan; the store decides
                self._schedule_in_wheel(task)
            else:  # due within the lead, but it may not fire ahead: it waits for its due time
                self._held.add(task_id, due)
            return []
        execution_id = self._new_id(now_ms)
        cmds = [
            Command(
                stamped_at_ms=now_ms,
                limits=self._fire_limits,
                fire=commands_pb2.Fire(
                    task_id=task_id,
                    nominal_time_ms=task.next_fire_ms,
                    execution_id=execution_id,
                    lead_ms=lead if due > now_ms else 0,
                ),
            )
        ]
        # Fire and Grant share one entry when a worker is free: one commit before the lease goes out.
        # (If the overlap policy buffers the execution, the grant is refused and the slot released.)
        worker = self._pick_worker(task.spec.queue, task.spec.worker_labels)
        cap = self.settings.max_running
        limited = (
            task.spec.max_concurrency and self._running_by_task.get(task_id, 0) >= task.spec.max_concurrency
        )
        gated = bool(task.spec.depends_on)  # dependencies are checked where pending work is granted
        if (
            worker is not None
            and not limited
            and not gated
            and not (cap and len(self.leases) + len(self._granting) >= cap)
        ):
            cmds.append(self._grant_command(execution_id, worker, now_ms, task_id=task_id, lead_ms=lead))
        return cmds

    def _lead_for(self, task: common_pb2.Task | None, requested_ms: int | None = None) -> int:
        """How far ahead of its due time a Fire or Grant of `task` is proposed (the state machine checks
        the same rule, firing.fire_lead): `fire_lead_ms`, or the staging lead of a burst."""
        lead = self.settings.fire_lead_ms if requested_ms is None else requested_ms
        if task is None or not lead:
            return 0
        return firing.fire_lead(task, lead)

    def _stage_until(self, now_ms: int) -> int:
        """Fire what is due up to here now: `fire_lead_ms` ahead, more while a burst is staged."""
        return staging.stage_until(self.wheel.counts, now_ms, **self._staging_args())

    def _staging_args(self) -> dict[str, int]:
        s = self.settings
        return {"fire_lead_ms": s.fire_lead_ms, "stage_lead_ms": s.stage_lead_ms, "rate_per_s": s.stage_rate}

    def _grant_pending(self, now_ms: int, budget: int) -> list[Command]:
        if not self._pending_count():
            if self._pending_overflow:
                self._refill_pending()
            if not self._pending_count():
                self._next_retry_ms = None
                return []  # nothing waits: no pass over the workers
        served = {q for q, ids in self._serving.items() if ids and q not in self._full}
        cmds: list[Command] = []
        self._next_retry_ms = None
        cap = self.settings.max_running
        with self.kv.read() as txn:
            for queue in served & self._pending.keys():
                for rank_map, execution_id in self._by_effective_priority(queue, now_ms):
                    if len(cmds) >= budget or (cap and len(self.leases) + len(self._granting) >= cap):
                        return cmds
                    held = self._held_back("grant", execution_id, now_ms) if self._failing else None
                    if held is not None:  # its last Grant failed inside apply
                        first: int | None = self._next_retry_ms
                        self._next_retry_ms = held if first is None else min(first, held)
                        continue
                    ex = sm.read_execution(txn, execution_id)
                    if ex is None or ex.state != common_pb2.EXECUTION_PENDING:
                        del rank_map[execution_id]
                        self._failing.pop(("grant", execution_id), None)
                        continue
                    task = sm.read_task(txn, ex.task_id)
                    # A first attempt of a staged burst may be leased as far ahead as it was fired; a
                    # retry's backoff keeps the ordinary lead.
                    lead = self._lead_for(task, self._lead_now if ex.attempt <= 1 else None)
                    ready_ms = ex.not_before_ms - lead
                    if ready_ms > now_ms:  # a retry waiting for its backoff, or a fire for its due time
                        nr: int | None = self._next_retry_ms
                        self._next_retry_ms = ready_ms if nr is None else min(nr, ready_ms)
                        continue
                    if (
                        task is not None
                        and task.spec.depends_on
                        and deps.unmet(txn, task, ex.nominal_time_ms)
                    ):
                        continue  # its upstream runs have not succeeded yet (see _why_waiting)
                    limit = task.spec.max_concurrency if task is not None else 0
                    if limit and (
                        self._running_by_task.get(ex.task_id, 0) + self._granting_for_task(ex.task_id)
                        >= limit
                    ):
                        continue
                    worker = self._pick_worker(queue, task.spec.worker_labels if task else None)
                    if worker is None:
                        continue
                    del rank_map[execution_id]
                    cmds.append(
                        self._grant_command(execution_id, worker, now_ms, task_id=ex.task_id, lead_ms=lead)
                    )
        return cmds

    def _by_effective_priority(self, queue: str, now_ms: int) -> list[tuple[dict[str, int], str]]:
        """Pending executions of a queue in dispatch order: priority raised one level per aging step
        waited, then oldest fire first. Within a rank the maps are already in fire order, so only the
        first entries of each rank can be next; a bounded number of them is considered."""
        step = max(1, self.settings.aging_step_ms)
        heads: list[tuple[int, int, dict[str, int], str]] = []
        for rank, rank_map in enumerate(self._pending[queue]):
            for n, (execution_id, fired_at) in enumerate(rank_map.items()):
                if n >= 256:
                    break
                effective = max(0, rank - max(0, now_ms - fired_at) // step)
                heads.append((effective, fired_at, rank_map, execution_id))
        heads.sort(key=lambda h: (h[0], h[1]))
        return [(m, e) for _, _, m, e in heads]

    def _granting_for_task(self, task_id: str) -> int:
        return sum(1 for t in self._granting_tasks.values() if t == task_id)

    def _pick_worker(self, queue: str, labels: Mapping[str, str] | None = None) -> WorkerState | None:
        """An eligible worker (serves the queue, carries every required label) with a free slot: the one
        with most free slots among up to EXACT_PICK workers of the queue; beyond that, the next in
        rotation, so that a fire costs O(1) amortised instead of a pass over thousands of workers."""
        queue = queue or "default"
        if queue in self._full:
            return None
        ids = self._serving_list.get(queue)
        if ids is None:
            ids = self._serving_list[queue] = list(self._serving.get(queue, ()))
        n = len(ids)
        workers = self.workers
        if n <= EXACT_PICK:
            best: WorkerState | None = None
            for worker_id in ids:
                w = workers[worker_id]
                if w.free() <= 0 or (labels and any(w.labels.get(k) != v for k, v in labels.items())):
                    continue
                if best is None or w.free() > best.free():
                    best = w
            if best is None and not labels:
                self._full.add(queue)
            return best
        start = self._cursor.get(queue, 0)
        for step in range(n):
            w = workers[ids[(start + step) % n]]
            if w.free() <= 0 or (labels and any(w.labels.get(k) != v for k, v in labels.items())):
                continue
            self._cursor[queue] = (start + step + 1) % n
            return w
        if not labels:
            self._full.add(queue)  # none has a slot: no further pass over them in this tick
        return None

    def _grant_command(
        self, execution_id: str, worker: WorkerState, now_ms: int, *, task_id: str = "", lead_ms: int = 0
    ) -> Command:
        worker.inflight.add(execution_id)
        self._granting.add(execution_id)
        self._reasons.pop(execution_id, None)
        self._granting_tasks[execution_id] = task_id
        return Command(
            stamped_at_ms=now_ms,
            grant=commands_pb2.Grant(
                execution_id=execution_id,
                worker_id=worker.worker_id,
                lease_ttl_ms=self.settings.lease_ttl_ms,
                lead_ms=lead_ms,
                worker_incarnation=worker.incarnation,
            ),
        )

    # ------------------------------------------------------------------------------ commit outcomes

    def on_committed(
        self, commands: Sequence[Command], results: Sequence[CommandResult], now_ms: int, mono_ms: int
    ) -> None:
        """Act on the outcome of our own proposals (results line up with commands)."""
        self._now_ms = now_ms
        with self._reading():
            self._on_committed(commands, results, now_ms, mono_ms)

    def _on_committed(
        self, commands: Sequence[Command], results: Sequence[CommandResult], now_ms: int, mono_ms: int
    ) -> None:
        offers: dict[str, list[worker_pb2.Lease]] = {}
        acks: dict[str, list[str]] = {}
        for cmd, res in zip(commands, results, strict=True):
            kind = cmd.WhichOneof("body")
            if res.error_code == "internal" and self._failed_inside_apply(cmd, res, now_ms, mono_ms):
                continue
            if kind == "fire":
                self._firing.discard(cmd.fire.task_id)
                self._failing.pop(("fire", cmd.fire.task_id), None)
                if not res.applied:
                    self._reschedule_from_store(cmd.fire.task_id)
            elif kind == "grant":
                self._failing.pop(("grant", cmd.grant.execution_id), None)
                lease = self._on_grant(cmd.grant, res, mono_ms)
                if lease is not None:
                    offers.setdefault(cmd.grant.worker_id, []).append(lease)
            elif kind == "complete":
                eid = cmd.complete.execution_id
                token = token_tuple(cmd.complete.token)
                sender = self._completing.pop((eid, token), "")
                self._failing.pop(("complete", eid), None)
                held = self.leases.get(eid)
                # Only the attempt this result belongs to loses its lease: a stale result (an attempt
                # fenced off earlier) must not take the lease of the attempt running now.
                if res.applied or (held is not None and held.token == token):
                    self._release(eid)
                # Acked, applied or stale, to the worker that sent it: it must stop resending it.
                if sender:
                    acks.setdefault(sender, []).append(eid)
            elif kind == "expire_lease":
                self._failing.pop(("expire", cmd.expire_lease.execution_id), None)
                self._release(cmd.expire_lease.execution_id)
            elif kind == "expire_pending":
                self._expiring_pending.discard(cmd.expire_pending.execution_id)
                self._reasons.pop(cmd.expire_pending.execution_id, None)
            # Whatever the command, its side effects: executions that now wait for a worker (fired,
            # promoted from an overlap buffer, re-queued after an expiry), executions that ended, attempts
            # whose workers must stop, and the task's next due time.
            for ex in res.executions:
                if ex.state == common_pb2.EXECUTION_PENDING:
                    if ex.execution_id not in self._granting:  # else its grant's outcome decides
                        self._pend(ex)
                elif ex.state in sm.TERMINAL_STATES:
                    self._release(ex.execution_id)
            if kind == "expire_lease" and res.execution.state == common_pb2.EXECUTION_PENDING:
                self._pend(res.execution)
            for c in res.cancels:
                self.outgoing.append(
                    (
                        c.worker_id,
                        worker_pb2.GatewayMessage(
                            cancel=worker_pb2.CancelAttempt(execution_id=c.execution_id, token=c.token)
                        ),
                    )
                )
            if res.HasField("task"):
                self._schedule_in_wheel(res.task)
            if kind == "import_tasks" and res.applied:
                self._on_imported(cmd.import_tasks, res)
        for worker_id, leases in offers.items():
            # Split so that no message passes MAX_OFFER_BYTES (payloads are up to 4 MiB each).
            batch: list[worker_pb2.Lease] = []
            size = 0
            for lease in leases:
                n = lease.ByteSize()
                if batch and size + n > MAX_OFFER_BYTES:
                    self.outgoing.append((worker_id, self._offers(worker_id, batch)))
                    batch, size = [], 0
                batch.append(lease)
                size += n
            self.outgoing.append((worker_id, self._offers(worker_id, batch)))
        for worker_id, ids in acks.items():
            self.outgoing.append(
                (worker_id, worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=ids)))
            )

    def _failed_inside_apply(self, cmd: Command, res: CommandResult, now_ms: int, mono_ms: int) -> bool:
        """One of our commands was recorded as "internal" (see INTERNAL_RETRY_MS): arrange its retry after
        a growing delay, and say why where users look. True when handled (nothing else to do for it)."""
        kind = cmd.WhichOneof("body")
        if kind == "fire":
            f = cmd.fire
            self._firing.discard(f.task_id)
            delay = self._note_failure("fire", f.task_id, res.error, now_ms)
            self.wheel.add(f.task_id, now_ms + delay)  # _fire_commands holds it until then, whatever adds it
            if self._failing["fire", f.task_id][0] == 1:
                # The fire ledger says it (`schedctl task explain`) until the nominal time fires.
                self._retry.append(
                    Command(
                        stamped_at_ms=now_ms,
                        note_waiting=commands_pb2.NoteWaiting(
                            task_id=f.task_id,
                            nominal_time_ms=f.nominal_time_ms,
                            reason=f"the fire failed when applied ({res.error}); the leader tries again "
                            f"with a growing delay (at most {INTERNAL_RETRY_MAX_MS // 1000} s)"[:500],
                        ),
                    )
                )
            return True
        if kind == "grant":
            g = cmd.grant
            self._granting.discard(g.execution_id)
            self._granting_tasks.pop(g.execution_id, None)
            worker = self.workers.get(g.worker_id)
            if worker is not None:
                worker.inflight.discard(g.execution_id)
            self._note_failure("grant", g.execution_id, res.error, now_ms)  # its waiting reason says it
            self._adopt_if_running(g.execution_id, mono_ms)  # pending again: granted after the delay
            return True
        if kind == "complete":
            # Neither acknowledged nor released: the worker sends the result again later (each resend
            # is a new try), and if it keeps failing the lease expires and the execution goes on as for
            # a lost worker.
            c = cmd.complete
            self._completing.pop((c.execution_id, token_tuple(c.token)), None)
            self._note_failure("complete", c.execution_id, res.error, now_ms)
            return True
        if kind == "expire_lease":
            x = cmd.expire_lease
            delay = self._note_failure("expire", x.execution_id, res.error, mono_ms)
            lease = self.leases.get(x.execution_id)
            if lease is not None:
                lease.expiring = False
                lease.deadline = mono_ms + delay
                self.lease_deadlines.add(lease.execution_id, lease.deadline)  # proposed again then
            return True
        return False

    def _note_failure(self, kind: str, key: str, error: str, at_ms: int) -> int:
        """Count one more failure in a row of (kind, key); the delay before its retry (ms)."""
        failures = self._failing.get((kind, key), (0, 0, ""))[0] + 1
        delay = min(INTERNAL_RETRY_MAX_MS, INTERNAL_RETRY_MS << min(failures - 1, 16))
        self._failing[kind, key] = (failures, at_ms + delay, error)
        if failures == 1:
            self.failure_reports.append((kind, key, error, delay))
        return delay

    def _held_back(self, kind: str, key: str, at_ms: int) -> int | None:
        """When a (kind, key) that failed inside apply may be proposed again, if not yet."""
        failing = self._failing.get((kind, key))
        return failing[1] if failing is not None and at_ms < failing[1] else None

    def _on_grant(self, g: commands_pb2.Grant, res: CommandResult, mono_ms: int) -> worker_pb2.Lease | None:
        self._granting.discard(g.execution_id)
        self._granting_tasks.pop(g.execution_id, None)
        if not res.applied:
            worker = self.workers.get(g.worker_id)
            if worker is not None:
                worker.inflight.discard(g.execution_id)
            self._adopt_if_running(g.execution_id, mono_ms)
            return None
        ex = res.execution
        self._track_lease(ex, mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms)
        lease = self.leases[ex.execution_id]
        lease.written = False  # until the runner hands the offer to the worker's stream (offered)
        if ex.not_before_ms > self._now_ms:  # granted ahead: the worker holds it until confirmed
            lease.start_mono = mono_ms + ex.not_before_ms - self._now_ms
        return self._lease_offer(ex)

    def _lease_offer(self, ex: common_pb2.Execution) -> worker_pb2.Lease | None:
        task = self._read_task(ex.task_id)
        if task is None:
            return None
        return worker_pb2.Lease(
            execution_id=ex.execution_id,
            task_id=ex.task_id,
            task_name=task.spec.name,
            nominal_time_ms=ex.nominal_time_ms,
            attempt=ex.attempt,
            token=ex.token,
            payload=task.spec.payload,
            timeout_ms=task.spec.timeout_ms,
            lease_ttl_ms=self.settings.lease_ttl_ms,
            # Granted ahead of its due time (or of a retry's backoff end): the worker waits the rest.
            start_delay_ms=max(0, ex.not_before_ms - self._now_ms),
            start_at_ms=ex.not_before_ms if ex.not_before_ms > self._now_ms else 0,
            guarantee=task.spec.guarantee,
            sensor=task.spec.sensor if task.spec.HasField("sensor") else None,
        )

    def _offers(self, worker_id: str, leases: list[worker_pb2.Lease]) -> worker_pb2.GatewayMessage:
        """Leases whose clocks start now, with the echo that bounds the worker's deadline (worker.proto)."""
        w = self.workers.get(worker_id)
        echo = w.echo_ms if w is not None else 0
        return worker_pb2.GatewayMessage(leases=worker_pb2.LeaseOffers(leases=leases, echo_mono_ms=echo))

    def _adopt_if_running(self, execution_id: str, mono_ms: int) -> None:
        """A grant whose outcome we lost may have committed. The store says: if it did, in our term, the
        lease is valid (its grant committed, I4) and is dispatched now; otherwise it waits in pending."""
        with self.kv.read() as txn:
            ex = sm.read_execution(txn, execution_id)
        if ex is None:
            return
        if ex.state == common_pb2.EXECUTION_RUNNING and execution_id not in self.leases:
            self._track_lease(ex, mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms)
            w = self.workers.get(ex.worker_id)
            if ex.token.term == self.term and w is not None and w.connected:
                lease = self._lease_offer(ex)
                if lease is not None:
                    self.outgoing.append((w.worker_id, self._offers(w.worker_id, [lease])))
        elif ex.state == common_pb2.EXECUTION_PENDING:
            self._pend(ex)

    def offered(self, execution_id: str, token: common_pb2.FencingToken, start_mono: int | None) -> None:
        """A lease's offer is being written to its worker's stream now; a held one's start is no earlier
        than `start_mono` (our monotonic clock; the runner computes it as it restamps the delay): the
        worker cannot be confirmed before then, whatever the estimate made at the grant."""
        lease = self.leases.get(execution_id)
        if lease is None or lease.token != token_tuple(token):
            return
        lease.written = True
        if lease.start_mono is not None and start_mono is not None:
            lease.start_mono = min(lease.start_mono, start_mono)

    def _forget_lease_of(self, lease: LeaseState) -> None:
        ids = self._leases_of.get(lease.worker_id)
        if ids is not None:
            ids.discard(lease.execution_id)
            if not ids:
                del self._leases_of[lease.worker_id]

    def _release(self, execution_id: str) -> None:
        lease = self.leases.pop(execution_id, None)
        if lease is not None:
            self._forget_lease_of(lease)
        self.lease_deadlines.cancel(execution_id)
        if lease is not None and lease.task_id:
            left = self._running_by_task.get(lease.task_id, 1) - 1
            if left > 0:
                self._running_by_task[lease.task_id] = left
            else:
                self._running_by_task.pop(lease.task_id, None)
        if lease is not None and lease.worker_id in self.workers:
            self.workers[lease.worker_id].inflight.discard(execution_id)
        elif execution_id in self._granting:
            # A slot is held only by a lease or by a grant in flight; without either (the common case:
            # an execution that ended after its lease was released) no worker holds it, and a pass over
            # thousands of workers per ended execution is saved.
            for w in self.workers.values():
                w.inflight.discard(execution_id)

    def _schedule_in_wheel(self, task: common_pb2.Task) -> None:
        if (
            task.state == common_pb2.TASK_SCHEDULED
            and task.next_fire_ms
            and task.next_fire_ms <= self._loaded_until
        ):
            self.wheel.add(task.task_id, task.next_fire_ms)
        elif task.task_id in self.wheel:
            self.wheel.cancel(task.task_id)

    def _on_imported(self, imp: commands_pb2.ImportTasks, res: CommandResult) -> None:
        """Imported tasks due within the loaded horizon go to the wheel. Apply reported those due before
        `report_due_until_ms`; if the horizon moved past that meanwhile, reload from there (the load adds
        every task due after `_loaded_until`)."""
        for task in res.tasks:
            self._schedule_in_wheel(task)
        self._loaded_until = min(self._loaded_until, imp.report_due_until_ms)

    def _reschedule_from_store(self, task_id: str) -> None:
        with self.kv.read() as txn:
            task = sm.read_task(txn, task_id)
        if task is not None:
            self._schedule_in_wheel(task)

    def on_proposal_failed(self, commands: Sequence[Command], mono_ms: int) -> None:
        """The outcome of these commands is unknown (or they were refused). Make every one safe to redo:
        fires go back to the wheel (I3 drops a duplicate), grants are re-checked against the store,
        completes and expiries are proposed again."""
        for cmd in commands:
            kind = cmd.WhichOneof("body")
            if kind == "fire":
                f = cmd.fire
                self._firing.discard(f.task_id)
                with self.kv.read() as txn:
                    fired = sm.read_fire(txn, f.task_id, f.nominal_time_ms)
                    task = sm.read_task(txn, f.task_id)
                if fired is not None and fired.state == common_pb2.EXECUTION_PENDING:
                    self._pend(fired)
                if task is not None and task.next_fire_ms == f.nominal_time_ms:
                    # Not committed (yet): fire again; if it commits meanwhile, I3 rejects the copy.
                    self.wheel.add(task.task_id, firing.due_of(task))
                elif task is not None:
                    self._schedule_in_wheel(task)
            elif kind == "grant":
                self._granting.discard(cmd.grant.execution_id)
                self._granting_tasks.pop(cmd.grant.execution_id, None)
                w = self.workers.get(cmd.grant.worker_id)
                if w is not None:
                    w.inflight.discard(cmd.grant.execution_id)
                self._adopt_if_running(cmd.grant.execution_id, mono_ms)
            elif kind == "complete":
                self._retry.append(cmd)  # the sender stays recorded in _completing for the ack
            elif kind == "expire_pending":
                self._expiring_pending.discard(cmd.expire_pending.execution_id)
            elif kind == "note_waiting":
                self._reasons.pop(cmd.note_waiting.execution_id, None)
            elif kind == "expire_lease":
                lease = self.leases.get(cmd.expire_lease.execution_id)
                if lease is not None:
                    lease.expiring = False
                    lease.deadline = mono_ms
                    self.lease_deadlines.add(lease.execution_id, mono_ms)  # propose it again

    # ------------------------------------------------------------------------------------- timing

    def next_wakeup_ms(self, now_ms: int, mono_ms: int, *, idle_ms: int = 1000) -> int:
        """Milliseconds until the next thing this core must do (bounded by `idle_ms`)."""
        wait = idle_ms
        if self.hold:  # only lease deadlines and retried results matter (_held_tick)
            ld = self.lease_deadlines.next_deadline()
            if ld is not None:
                wait = min(wait, ld - mono_ms)
            if (self._early_results and self.ready) or any(
                c.WhichOneof("body") not in _HELD_KINDS for c in self._retry
            ):
                wait = 0
            return max(0, wait)
        nd = self.wheel.next_deadline()
        if nd is not None:
            wait = min(wait, nd - self.settings.fire_lead_ms - now_ms)
            st = staging.next_stage_ms(self.wheel.counts, now_ms, **self._staging_args())
            if st is not None:
                wait = min(wait, st - now_ms)
        hd = self._held.next_deadline()
        if hd is not None:
            wait = min(wait, hd - now_ms)
        ld = self.lease_deadlines.next_deadline()
        if ld is not None:
            wait = min(wait, ld - mono_ms)
        if self._next_retry_ms is not None:
            wait = min(wait, self._next_retry_ms - now_ms)
        if self._retry or (self._early_results and self.ready):
            wait = 0
        return max(0, wait)

    def drain_outgoing(self) -> list[tuple[str, worker_pb2.GatewayMessage]]:
        out, self.outgoing = self.outgoing, []
        return out


__all__ = ["MAX_EARLY_RESULTS", "LeaderCore", "LeaderSettings", "LeaseState", "Refusal", "WorkerState"]
