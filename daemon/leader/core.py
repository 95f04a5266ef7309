"""The leader core: composes the fire planner, worker pool, lease keeper and pending queue.

`LeaderCore` does no I/O but reads the store (its `kv`, an in-memory twin in tests) and reads no clock.
Its driver (daemon.leader_runner, or the deterministic simulation in tests/sim) feeds it events with the
current wall time (`now_ms`, for nominal fire times) and monotonic time (`mono_ms`, for lease deadlines),
proposes the commands it returns, reports back what committed (`on_committed`) or failed
(`on_proposal_failed`), and delivers the worker messages it queues in `outgoing`.

Safety rests on the state machine, not on this core: a duplicated Fire is rejected by I3, a stale
result by the fencing token. The core's job is liveness and timeliness, and I4: it hands a lease to a
worker only after the Grant committed, and only after its own Epoch committed (`ready`).

Its parts (docs/architecture.md, "The leader"): `FirePlanner` (planner.py), `WorkerPool` (workers.py),
`LeaseKeeper` (leases.py), `PendingQueue` (pending.py), `InternalRetries` (retries.py), `PlanMarks`
(plans.py); outcomes of committed commands are handled in outcomes.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from cronraft.daemon.leader import granting, messages, outcomes
from cronraft.daemon.leader.leases import Granted, LeaseKeeper, LeaseState, Refusal
from cronraft.daemon.leader.messages import MAX_EARLY_RESULTS
from cronraft.daemon.leader.pending import PendingQueue, waiting_commands
from cronraft.daemon.leader.planner import FirePlanner
from cronraft.daemon.leader.plans import PlanMarks
from cronraft.daemon.leader.retries import INTERNAL_RETRY_MAX_MS, InternalRetries
from cronraft.daemon.leader.settings import LeaderSettings
from cronraft.daemon.leader.staging import CountedWheel
from cronraft.daemon.leader.workers import WorkerPool, WorkerState
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import features
from cronraft.raft import state as sm
from cronraft.raft.codec import token_tuple
from cronraft.raft.fireplan import needs_plan
from cronraft.raft.kv import KV, Txn
from cronraft.timefmt import utc_text

Command = commands_pb2.Command
CommandResult = commands_pb2.CommandResult
Token = tuple[int, int]

# What the dispatch hold (LeaderCore.hold) keeps back: fires and grants, also those waiting to be proposed
# again. Everything else (renewals, expiries, results) goes on during a hold.
_KEPT_BACK_BY_HOLD = frozenset({"fire", "grant"})
# Taken from its class: looked up on a message, a method costs a look-up of a field of that name first (upb).
_copy_limits = commands_pb2.Limits.CopyFrom


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
        # The dispatch hold: why dispatching is held back (empty: it is not): members disagree on the
        # versions that change schedule results (raft.versions). During a hold a tick fires nothing and
        # grants nothing; leases already handed out are still renewed, expired and completed. Set by the
        # driver.
        self.hold = ""
        self.planner = FirePlanner(settings)
        self.pool = WorkerPool(settings)
        self.keeper = LeaseKeeper()
        self.pending = PendingQueue()
        self.retries = InternalRetries()
        self.now_ms = 0  # the scheduling clock at the last tick or outcome (for leases offered later)
        # Grants in flight (proposed, not answered): execution id -> task id.
        self.granting: dict[str, str] = {}
        # Results being committed: (execution id, token) -> the worker that sent it (who gets the ack).
        self.completing: dict[tuple[str, Token], str] = {}
        # Results received before `ready` (sender, result, bound): checked and proposed by the first ticks.
        self.early_results: list[tuple[str, common_pb2.AttemptResult, bool]] = []
        # Messages refused as forged (Refusal), for the driver to log and act on; it clears the list.
        self.refusals: list[Refusal] = []
        self.outgoing: list[tuple[str, worker_pb2.GatewayMessage]] = []
        self.retry: list[Command] = []  # commands to propose again after a failed proposal
        # Commands this core made, by id, with what it knows of them until their outcome: (the command,
        # kept so that its id stays unique; "fire", task id, Granted or None) or (the command, "complete",
        # execution id, token). Outcomes are handled from these, not from the commands read back (upb: a
        # new object per field read; issue 16).
        self.made: dict[int, tuple] = {}  # type: ignore[type-arg]
        self._txn: Txn | None = None  # the read transaction shared by a batch's lookups (`_reading`)
        self._txn_stack: contextlib.ExitStack | None = None  # a batch is being handled (`_reading`)
        self.plans = PlanMarks()  # the commands known to need no schedule plan (`needing_plans`)
        # Features the cluster's level has (raft.features), read until found on: a level is never
        # lowered, so once on they stay on for the term, and the steady state reads no meta record (a
        # read transaction and a parse of the level per results message, cut for issue 16).
        self._fire_grants = False  # "fire_grant" (read at each tick until on)
        self.results_kept = False  # "results" (read for each results message until on: messages.results)
        # The Limits every Complete carries once results are kept (never changed; its one field is set in
        # each Complete: messages.results).
        self.result_limits = commands_pb2.Limits(max_result_bytes=settings.max_result_bytes)
        self._fire_limits = (
            commands_pb2.Limits(
                max_pending_per_task=settings.max_pending_per_task,
                max_executions_per_task=settings.max_executions_per_task,
            )
            if settings.max_pending_per_task or settings.max_executions_per_task
            else None
        )

    # The components' state under the names the driver, the simulation and the tests read.
    @property
    def workers(self) -> dict[str, WorkerState]:
        return self.pool.workers

    @property
    def leases(self) -> dict[str, LeaseState]:
        return self.keeper.leases

    @property
    def wheel(self) -> CountedWheel[str]:
        return self.planner.wheel

    @property
    def failure_reports(self) -> list[tuple[str, str, str, int]]:
        return self.retries.reports

    # Read by tests written against the single-class core (test_leader_backoff, test_leader_batching).
    @property
    def _failing(self) -> dict[tuple[str, str], tuple[int, int, str]]:
        return self.retries.failing

    def _pending_count(self) -> int:
        return len(self.pending)

    # ------------------------------------------------------------------------------------ lifecycle

    def epoch_command(self, now_ms: int) -> Command:
        """The first command of a new leader; nothing is dispatched before it commits (I4)."""
        return Command(stamped_at_ms=now_ms, epoch=commands_pb2.Epoch(term=self.term, leader_id=self.node_id))

    def on_epoch_committed(self, now_ms: int, mono_ms: int) -> None:
        """Load what the previous leaders left: running leases (waited out), pending executions."""
        self.planner.reset_clock(now_ms)
        self.keeper.reset_clock(mono_ms)
        deadline = mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms
        with self.kv.read() as txn:
            for ex in sm.running_executions(txn):
                self.adopt_lease(ex, deadline)
        self._refill_pending()
        self.ready = True

    def lease_deadline(self, mono_ms: int) -> int:
        return mono_ms + self.settings.lease_ttl_ms + self.settings.expiry_grace_ms

    def track_lease(
        self, ex: common_pb2.Execution, deadline_mono: int, granted: Granted | None = None
    ) -> LeaseState:
        lease = self.keeper.track(ex, deadline_mono, granted)
        self.pool.take_slot(lease.worker_id, lease.execution_id)  # its fields, decoded once (by track)
        return lease

    def adopt_lease(self, ex: common_pb2.Execution, deadline_mono: int) -> LeaseState:
        """Track the lease of a running execution read from the store (one this leader did not see
        granted): with its pending cancel, if one was asked, since its worker may never have been told
        (LeaseKeeper.cancelling re-sends it on the worker's next stream)."""
        lease = self.track_lease(ex, deadline_mono)
        if ex.cancel_requested_at_ms:
            self.keeper.cancel_asked(ex.execution_id, token_tuple(ex.token), -1)
        return lease

    def release(self, execution_id: str) -> None:
        lease = self.keeper.release(execution_id)
        if lease is not None and lease.worker_id in self.pool.workers:
            self.pool.release_slot(lease.worker_id, execution_id)
        elif execution_id in self.granting:
            # A slot is held only by a lease or by a grant in flight; without either (the common case:
            # an execution that ended after its lease was released) no worker holds it, and a pass over
            # thousands of workers per ended execution is saved.
            self.pool.release_anywhere(execution_id)

    def end_grant(self, execution_id: str, worker_id: str) -> None:
        """A grant in flight was answered (or failed): it no longer holds its worker's slot."""
        self.granting.pop(execution_id, None)
        self.pool.release_slot(worker_id, execution_id)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction for the task lookups of a whole batch (fires of a tick, outcomes of an
        entry) instead of one per lookup, opened at the batch's first lookup (`_batch_txn`): most
        batches look nothing up (a tick with nothing due; the outcomes of Fires, whose results carry
        their tasks, and of Completes), and a transaction begun and ended for nothing cost a few
        microseconds and, with the apply thread busy, two hand-offs of the GIL (issue 16). The snapshot
        is at least as new as the entry being handled."""
        if self._txn_stack is not None:
            yield
            return
        with contextlib.ExitStack() as stack:
            self._txn_stack = stack
            try:
                yield
            finally:
                self._txn_stack = None
                self._txn = None

    def _batch_txn(self) -> Txn | None:
        """The batch's read transaction (opened now if it is not yet), None outside a batch."""
        if self._txn is None and self._txn_stack is not None:
            self._txn = self._txn_stack.enter_context(self.kv.read())
        return self._txn

    def read_task(self, task_id: str) -> common_pb2.Task | None:
        txn = self._txn or self._batch_txn()
        if txn is not None:
            return sm.read_task(txn, task_id)
        with self.kv.read() as txn:
            return sm.read_task(txn, task_id)

    def pend(self, ex: common_pb2.Execution) -> None:
        task = self.read_task(ex.task_id)
        queue = (task.spec.queue if task else "") or "default"
        self.pending.add(queue, ex.execution_id, sm.priority_rank(ex.priority), ex.fired_at_ms)

    def _refill_pending(self) -> None:
        limit = self.settings.pending_load_limit
        with self.kv.read() as txn:
            found = sm.pending_executions(txn, limit=limit + 1)
        self.pending.overflow = len(found) > limit
        for ex in found[:limit]:
            if ex.execution_id not in self.granting:
                self.pend(ex)

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
        namespaces: frozenset[str] | None = None,
    ) -> None:
        """A worker's stream opened. `namespaces`: those whose executions it may be leased (stored form;
        None: every one), from its credential (daemon.security.authz.worker_namespaces)."""
        self.pool.connect(
            worker_id,
            capacity,
            queues,
            labels,
            mono_ms,
            echo_ms=echo_ms,
            incarnation=incarnation,
            leases=self.keeper.of_worker(worker_id),
            granting=self.granting,
            namespaces=namespaces,
        )

    def worker_disconnected(self, worker_id: str) -> None:
        self.pool.disconnect(worker_id)

    def heard_from(self, worker_id: str, mono_ms: int) -> None:
        self.pool.heard_from(worker_id, mono_ms)

    def idle_heartbeat_ms(self) -> int:
        """How often a worker holding nothing heartbeats now (Welcome, HeartbeatAck)."""
        return self.pool.idle_heartbeat_ms()

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
        """Renew the listed leases of `worker_id` (messages.heartbeat)."""
        return messages.heartbeat(
            self,
            worker_id,
            leases,
            mono_ms,
            echo_ms,
            finished=finished,
            complete_listing=complete_listing,
            draining=draining,
        )

    # ------------------------------------------------------------------------------------- results

    def results(
        self,
        worker_id: str,
        results: Sequence[common_pb2.AttemptResult],
        now_ms: int,
        *,
        bound: bool = True,
    ) -> list[Command]:
        """Complete commands for a worker's results (messages.results: the ack is sent once they commit)."""
        return messages.results(self, worker_id, results, now_ms, bound=bound)

    def lease_check(self, worker_id: str, execution_id: str, token: Token, kind: str) -> str:
        """Whether to act on a worker's message about a lease: "" (yes), "stale" or "forged" (see
        messages.lease_check)."""
        return messages.lease_check(self, worker_id, execution_id, token, kind)

    def token_check(self, execution_id: str, token: Token) -> str:
        """Whether to store output that a worker with an unauthenticated id sent: "" (yes) or "stale"
        (see messages.token_check)."""
        return messages.token_check(self, execution_id, token)

    # ---------------------------------------------------------------------------------------- tick

    def tick(self, now_ms: int, mono_ms: int) -> list[Command]:
        """Everything due now: fires from the wheel, lease expiries, grants for pending executions."""
        if not self.ready:
            return []
        if self.hold:
            return self._tick_during_hold(now_ms, mono_ms)
        cmds: list[Command] = self.retry
        self.retry = []
        if self.early_results:
            cmds.extend(messages.take_early_results(self, now_ms))
        self.now_ms = now_ms
        self.pool.new_tick()
        budget = self.settings.max_commands_per_tick
        self._load_horizon(now_ms)
        with self._reading():
            if not self._fire_grants:
                txn = self._batch_txn()
                assert txn is not None
                self._fire_grants = features.is_active(txn, features.FIRE_GRANT)
            for task_id, _due_ms in self.planner.take_due(now_ms):
                if self.planner.start_firing(task_id):
                    cmds.extend(self._fire_commands(task_id, now_ms))
        cmds.extend(self.keeper.expire_command(lease, now_ms) for lease in self.keeper.due(mono_ms))
        if len(cmds) < budget:
            self.pool.mark_silent(mono_ms)
            cmds.extend(self._grant_pending(now_ms, budget - len(cmds)))
        if len(cmds) < budget and self.pending.waiting_check_due(now_ms):
            with self.kv.read() as txn:
                cmds.extend(
                    waiting_commands(
                        self.pending, txn, self._why_waiting_for_worker, now_ms, budget - len(cmds)
                    )
                )
        return cmds

    def _tick_during_hold(self, now_ms: int, mono_ms: int) -> list[Command]:
        """A tick during the dispatch hold (`hold`): lease expiries and retried results only. Due tasks
        stay in the wheel and pending executions stay pending; once the hold lifts they fire (late, by
        their misfire policy) and are granted as after any pause of the leader."""
        self.now_ms = now_ms
        keep = [c for c in self.retry if c.WhichOneof("body") in _KEPT_BACK_BY_HOLD]
        cmds = [c for c in self.retry if c.WhichOneof("body") not in _KEPT_BACK_BY_HOLD]
        self.retry = keep
        if self.early_results:
            cmds.extend(messages.take_early_results(self, now_ms))
        cmds.extend(self.keeper.expire_command(lease, now_ms) for lease in self.keeper.due(mono_ms))
        return cmds

    def _why_waiting_for_worker(
        self, queue: str, ex: common_pb2.Execution, task: common_pb2.Task, now_ms: int
    ) -> str:
        error = self.retries.error("grant", ex.execution_id)
        if error is not None:
            return (
                f"granting it failed when applied ({error}); the leader tries again with a growing "
                f"delay (at most {INTERNAL_RETRY_MAX_MS // 1000} s)"
            )[:500]
        if ex.not_before_ms > now_ms:
            until = utc_text(ex.not_before_ms)
            return f"retry backoff until {until}" if ex.attempt else f"due at {until}"
        labels = task.spec.worker_labels
        namespace = task.spec.namespace
        unserved = self.pool.unserved_reason(queue, labels, namespace)
        if unserved:
            return unserved
        limit = task.spec.max_concurrency
        if limit and self.keeper.running(ex.task_id) >= limit:
            return f"task max_concurrency {limit} reached"
        if self.settings.max_running and len(self.keeper) >= self.settings.max_running:
            return f"cluster max_running {self.settings.max_running} reached"
        return self.pool.busy_reason(queue, labels, namespace) or "waiting for dispatch"

    def _load_horizon(self, now_ms: int) -> None:
        span = self.planner.horizon_to_load(now_ms)
        if span is None:
            return
        from_ms, until = span
        with self.kv.read() as txn:
            after: tuple[int, str] | None = None
            while True:
                batch = sm.due_tasks(txn, until, after=after, from_ms=from_ms, limit=10_000)
                self.planner.load(batch)
                if len(batch) < 10_000:
                    break
                after = batch[-1]
        self.planner.loaded(until)

    def _fire_commands(self, task_id: str, now_ms: int) -> list[Command]:
        retries = self.retries
        retry_at = retries.retry_at("fire", task_id, now_ms) if retries.failing else None
        if retry_at is not None:  # its last Fire failed inside apply: not before its retry time
            self.planner.retry_later(task_id, retry_at)
            return []
        task = self.read_task(task_id)
        if retries.failing and not FirePlanner.scheduled(task):
            retries.succeeded("fire", task_id)
        # Its spec read first and held: the plan's reads of it (firing.may_fire_ahead) then find the same
        # object (upb keeps a submessage's object while one is alive) instead of making one each.
        spec = task.spec if task is not None else None
        lead = self.planner.plan(task, task_id, now_ms)
        if lead is None or task is None or spec is None:
            return []
        execution_id = self._new_id(now_ms)
        # Built in place: nested messages as keywords are converted, then copied (twice the cost).
        cmd = Command()
        plan_free = not needs_plan(spec)
        if plan_free:
            self.plans.mark(cmd)
        cmd.stamped_at_ms = now_ms
        if self._fire_limits is not None:
            _copy_limits(cmd.limits, self._fire_limits)
        fire = cmd.fire
        fire.task_id = task_id
        fire.nominal_time_ms = task.next_fire_ms
        fire.execution_id = execution_id
        fire.lead_ms = lead if self.planner.due_planned > now_ms else 0  # firing.due_of(task), read by plan
        cmds = [cmd]
        # Fire and Grant share one entry when a worker is free: one commit before the lease goes out.
        # (If the overlap policy buffers the execution, the grant is refused and the slot released.)
        pool = self.pool
        # Its namespace is read only when some worker serves some namespaces only (WorkerPool.bound).
        worker = pool.pick(spec.queue, spec.worker_labels, spec.namespace if pool.bound else "")
        if worker is None:
            self.made[id(cmd)] = (cmd, "fire", task_id, None)
            return cmds
        cap = self.settings.max_running
        limit = spec.max_concurrency
        limited = limit and self.keeper.running(task_id) >= limit
        gated = bool(spec.depends_on)  # dependencies are checked where pending work is granted
        if not limited and not gated and not (cap and len(self.keeper) + len(self.granting) >= cap):
            if self._fire_grants:
                # One command instead of two (cluster feature "fire_grant"): the Fire leases what it
                # makes, as the Grant after it would; on_committed reads the grant's outcome from the
                # Fire's result (outcomes.py).
                self._fill_grant(fire.grant, execution_id, worker, task_id=task_id, lead_ms=lead)
                granted = (execution_id, worker.worker_id, task_id, worker.incarnation)
                self.made[id(cmd)] = (cmd, "fire", task_id, granted)
                return cmds
            else:
                grant = self._grant_command(execution_id, worker, now_ms, task_id=task_id, lead_ms=lead)
                if plan_free:
                    self.plans.mark(grant)
                cmds.append(grant)
        self.made[id(cmd)] = (cmd, "fire", task_id, None)
        return cmds

    def _grant_pending(self, now_ms: int, budget: int) -> list[Command]:
        return granting.grant_pending(self, now_ms, budget)

    def _grant_command(
        self, execution_id: str, worker: WorkerState, now_ms: int, *, task_id: str = "", lead_ms: int = 0
    ) -> Command:
        cmd = Command()  # built in place, as a Fire (_fire_commands)
        cmd.stamped_at_ms = now_ms
        self._fill_grant(cmd.grant, execution_id, worker, task_id=task_id, lead_ms=lead_ms)
        return cmd

    def _fill_grant(
        self, grant: commands_pb2.Grant, execution_id: str, worker: WorkerState, *, task_id: str, lead_ms: int
    ) -> None:
        """A grant of `execution_id` to `worker`, in flight from now (its slot taken until its outcome)."""
        worker.inflight.add(execution_id)
        self.granting[execution_id] = task_id
        reasons = self.pending.reasons
        if reasons:
            reasons.pop(execution_id, None)
        grant.execution_id = execution_id
        grant.worker_id = worker.worker_id
        grant.lease_ttl_ms = self.settings.lease_ttl_ms
        grant.lead_ms = lead_ms
        grant.worker_incarnation = worker.incarnation

    # ------------------------------------------------------------------------------ schedule plans

    def needing_plans(self, cmds: Sequence[Command]) -> list[Command]:
        """The commands of `cmds` (about to be proposed) whose schedule plan is to be computed (plans.py)."""
        return self.plans.needing(cmds, self.keeper.leases)

    # ------------------------------------------------------------------------------ commit outcomes

    def on_committed(
        self, commands: Sequence[Command], results: Sequence[CommandResult], now_ms: int, mono_ms: int
    ) -> bool:
        """Act on the outcome of our own proposals (results line up with commands), and on client
        commands that committed on this leader (tasks created, changed or cancelled reach the wheel).
        True when the batch may hold notification events (daemon.notify_events; False: it holds none)."""
        self.now_ms = now_ms
        with self._reading():
            return outcomes.on_committed(self, commands, results, now_ms, mono_ms)

    def on_proposal_failed(self, commands: Sequence[Command], mono_ms: int) -> None:
        """The outcome of these commands is unknown (or they were refused). Make every one safe to redo:
        fires go back to the wheel (I3 drops a duplicate), grants are re-checked against the store,
        completes and expiries are proposed again."""
        outcomes.on_proposal_failed(self, commands, mono_ms)

    def on_late_committed(
        self, commands: Sequence[Command], results: Sequence[CommandResult], mono_ms: int
    ) -> None:
        """Commands whose outcome was unknown (`on_proposal_failed`) applied after all, in this term: what
        they made that only the store knows (a Fire's execution and lease, a Grant's lease) is adopted."""
        outcomes.on_late_committed(self, commands, results, mono_ms)

    def offered(self, execution_id: str, token: common_pb2.FencingToken, start_mono: int | None) -> None:
        """A lease's offer is being written to its worker's stream now; a deferred start is no earlier
        than `start_mono` (our monotonic clock; the runner computes it as it restamps the delay): the
        worker cannot be confirmed before then, whatever the estimate made at the grant. The offer is
        tagged with its worker's stream now (WorkerState.stream): an offer still written to a stream the
        worker replaced a moment ago gets the newer number, which only keeps it from an early expiry."""
        lease = self.keeper.leases.get(execution_id)
        stream = self.stream_of(lease.worker_id) if lease is not None else -1
        self.keeper.offered(execution_id, token_tuple(token), start_mono, stream=stream)

    def stream_of(self, worker_id: str) -> int:
        """The number of the worker's stream now (WorkerState.stream; -1: not connected)."""
        w = self.pool.get(worker_id)
        return w.stream if w is not None and w.connected else -1

    # ------------------------------------------------------------------------------------- timing

    def next_wakeup_ms(self, now_ms: int, mono_ms: int, *, idle_ms: int = 1000) -> int:
        """Milliseconds until the next thing this core must do (bounded by `idle_ms`)."""
        wait = idle_ms
        if self.hold:  # only lease deadlines and retried results matter (_tick_during_hold)
            ld = self.keeper.deadlines.next_deadline()
            if ld is not None:
                wait = min(wait, ld - mono_ms)
            if (self.early_results and self.ready) or any(
                c.WhichOneof("body") not in _KEPT_BACK_BY_HOLD for c in self.retry
            ):
                wait = 0
            return max(0, wait)
        wait = self.planner.wait_ms(now_ms, wait)
        ld = self.keeper.deadlines.next_deadline()
        if ld is not None:
            wait = min(wait, ld - mono_ms)
        if self.pending.next_ready_ms is not None:
            wait = min(wait, self.pending.next_ready_ms - now_ms)
        if self.retry or (self.early_results and self.ready):
            wait = 0
        return max(0, wait)

    def drain_outgoing(self) -> list[tuple[str, worker_pb2.GatewayMessage]]:
        out, self.outgoing = self.outgoing, []
        return out


__all__ = ["MAX_EARLY_RESULTS", "LeaderCore"]
