"""The asyncio driver of the leader core (daemon.leader, pure) for one leadership term: its I/O edge.

It commits the term's Epoch first (I4: no lease leaves before that), then loops: tick the core at the
time it asks for, propose what it returns through the group committer, feed the outcomes back, and
push the worker messages it queues onto the worker streams (the dispatcher of DESIGN.md). Worker
streams attach here (`attach`) and are closed with NotLeader when the term ends. The events it feeds
the core, each with the clock's wall and monotonic times: connections, heartbeats, results, output
checks, offers written (`restamp`), commits of our own and of clients' commands, and failed proposals.
(Named leader_runner, not runner: client/_runner.py runs payloads on a worker.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence

import structlog

from cronraft import __version__ as CRONRAFT_VERSION
from cronraft import bounds
from cronraft.daemon import retention
from cronraft.daemon.clock import Clock
from cronraft.daemon.config import RetentionConfig
from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.daemon.leader.output_admission import OUTPUT_FLUSH_S, OutputAdmission
from cronraft.daemon.leader_ids import new_id
from cronraft.daemon.notify import Notification, Notifier
from cronraft.daemon.notify_events import notification_events
from cronraft.daemon.wire import ByteBudget
from cronraft.daemon.worker_session import WorkerSession
from cronraft.errors import CronraftError, ResourceExhausted
from cronraft.failpoint import enabled as failpoints_enabled
from cronraft.failpoint import failpoint
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import features, leaderplan
from cronraft.raft import state as sm
from cronraft.raft.audit import AuditLog
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.kv import KV, Txn

log = structlog.get_logger("cronraft.leader")

# The proposal timeout of the leader's own commands (fires, grants, results). A client gets an answer
# within the group committer's default; the leader rather waits for the outcome: on a saturated machine a
# burst's entries can take longer than that to commit and apply, and each "outcome unknown" makes the
# core re-read and re-propose (a Fire or Grant that commits after that is adopted when it applies:
# `_late_results`).
# The runner is stopped when leadership is lost, which ends these waits.
LEADER_PROPOSAL_TIMEOUT_S = 60.0
# Leader commands refused because this node's storage is exhausted are proposed again after this pause.
STORAGE_REFUSED_PAUSE_S = 1.0
# A brand-new cluster's first leader waits this long at most for every member's first clock-probe
# answer (which says what it supports) before proposing its first epoch, so that the epoch turns every
# feature on (`_first_features`).
FIRST_FEATURES_WAIT_S = 3.0
# Taken from its class: looked up on a message, a method costs a look-up of a field of that name first (upb).
_message_kind = worker_pb2.GatewayMessage.WhichOneof


class LeaderRunner:
    def __init__(
        self,
        *,
        kv: KV,
        committer: GroupCommitter,
        settings: LeaderSettings,
        node_id: str,
        term: int,
        clock: Clock,
        still_leader: Callable[[], bool],
        heartbeat_interval_ms: int,
        notifier: Notifier | None = None,
        audit: AuditLog | None = None,
        retention: RetentionConfig | None = None,
        on_committed: Callable[[Sequence[commands_pb2.Command], Sequence[commands_pb2.CommandResult]], None]
        | None = None,
    ) -> None:
        self._audit = audit
        # Told of every batch of commands committed in this term, the leader's and its clients' (the
        # node's metrics count their outcomes: daemon.metrics.NodeMetrics.observe_committed).
        self._on_committed = on_committed
        self._retention = retention  # the retention duty's table (daemon.retention); None: no duty
        self._activity = asyncio.Event()  # set when a command other than Prune commits (the duty's idle)
        self._refused_logged = -STORAGE_REFUSED_PAUSE_S
        self.core = LeaderCore(kv, settings, node_id=node_id, term=term, new_id=new_id)
        self.term = term
        self._committer = committer
        self._clock = clock
        self._still_leader = still_leader
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._notifier = notifier
        self._kv = kv
        self._sessions: dict[str, WorkerSession] = {}
        # Worker messages dropped (issue 13), by kind: "superseded" (on a stream the worker replaced),
        # "stale_output" (output for no lease of its sender), and result/output/renewal forged.
        self.dropped: dict[str, int] = {}
        # Output pieces from the workers, proposed together every OUTPUT_FLUSH_S (or when large).
        node_budget = ByteBudget(
            bounds.MAX_NODE_OUTPUT_BYTES_PER_S, bounds.MAX_NODE_OUTPUT_BURST_BYTES, clock.mono_ms() / 1000
        )
        self.output = OutputAdmission(self.core, self.dropped, node_budget, clock.mono_ms() / 1000)
        self._output_flush: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._raising: asyncio.Task[None] | None = None  # a RaiseFeatures in flight (raise_features)
        self._raise_with_epoch: frozenset[str] = frozenset()  # offered before the epoch: proposed with it
        self._epoch_applied = asyncio.Event()  # set with core.ready: every earlier term's entry applied here

    @property
    def ready(self) -> bool:
        return self.core.ready

    async def until_ready(self, timeout_s: float) -> bool:
        """Wait until this term's epoch committed and applied here (True), for at most `timeout_s`.

        A new leader may hold entries of earlier terms that committed but that it has not applied: Raft
        lets it learn they committed only when an entry of its own term commits. Until then its store can
        lack a task a client just created or the record of a write the client retries, so a write's checks
        against it (exists, quota, dedup) wait for this."""
        if self.core.ready:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._epoch_applied.wait(), timeout_s)
        return self.core.ready

    @property
    def held(self) -> str:
        """Why this leader dispatches nothing now (empty: it dispatches)."""
        return self.core.hold

    def hold(self, reason: str) -> None:
        """Hold fires and grants back while `reason` is not empty (LeaderCore.hold); '' resumes."""
        if reason != self.core.hold:
            self.core.hold = reason
            self._wake.set()

    def raise_features(self, names: frozenset[str]) -> None:
        """Propose RaiseFeatures for `names`, which every member announced it supports (the node found them
        with daemon.versioncheck: raft.features.raisable); one at a time, from the epoch's commit on."""
        if not self.core.ready:
            # Proposed in the epoch's entry: a new cluster then uses its features from its first entry.
            self._raise_with_epoch = names
            return
        if not names or self._raising is not None or self._stopping:
            return
        cmd = commands_pb2.Command(
            stamped_at_ms=self._clock.now_ms(),
            raise_features=commands_pb2.RaiseFeatures(features=sorted(names)),
        )
        self._raising = asyncio.create_task(self._propose_raise(cmd), name=f"raise-features-{self.term}")

    async def _propose_raise(self, cmd: commands_pb2.Command) -> None:
        try:
            (res,) = await self._committer.submit([cmd])
            if res.applied:
                log.info("cluster feature level raised", features=list(cmd.raise_features.features))
            else:
                log.warning("raising the feature level refused", error=res.error)
                await asyncio.sleep(1.0)
        except CronraftError as e:
            log.warning("raising the feature level failed; retrying", error=str(e))
            await asyncio.sleep(1.0)
        finally:
            self._raising = None

    def prepare(self, cmds: Sequence[commands_pb2.Command]) -> None:
        """Give each command the schedule answers its apply needs (raft.leaderplan: fire instants
        computed here, once, not by each replica with its own tzdata), once the cluster uses plans; but
        not to those the leader core knows need none (LeaderCore.needing_plans)."""
        need = self.core.needing_plans(cmds)
        if need:
            with self._kv.read() as txn:
                leaderplan.attach_all(txn, need)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leader-term-{self.term}")

    async def stop(self, leader_address: str = "") -> None:
        self._stopping = True
        if self._output_flush is not None:
            self._output_flush.cancel()
        self._wake.set()
        for s in list(self._sessions.values()):
            s.send(worker_pb2.GatewayMessage(not_leader=worker_pb2.NotLeader(leader_address=leader_address)))
            s.send(None)
        self._sessions.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for t in list(self._inflight):
            t.cancel()
        if self._raising is not None:
            self._raising.cancel()

    async def _first_features(self) -> None:
        """On a brand-new cluster (no epoch ever committed, no feature in force), wait up to
        FIRST_FEATURES_WAIT_S until every member announced this build's features (`raise_features`
        offers them), so that they go in with the first epoch. Otherwise, when the election beats the
        first probe answers, the level rises a moment later and requests that need a feature (statistics,
        results, membership changes) are refused FAILED_PRECONDITION in between."""
        with self._kv.read() as txn:
            fresh = sm.read_epoch(txn).term == 0 and not features.level(txn)
        deadline = time.monotonic() + FIRST_FEATURES_WAIT_S
        while fresh and not self._stopping and not self._raise_with_epoch >= features.SUPPORTED:
            if time.monotonic() >= deadline:
                log.info("first epoch without every feature: members not heard from yet", term=self.term)
                return
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        clock = self._clock
        await self._first_features()
        while not self._stopping:
            cmds = [self.core.epoch_command(clock.now_ms())]
            if self._raise_with_epoch:
                cmds.append(
                    commands_pb2.Command(
                        stamped_at_ms=clock.now_ms(),
                        raise_features=commands_pb2.RaiseFeatures(features=sorted(self._raise_with_epoch)),
                    )
                )
            try:
                results = await self._committer.submit(cmds)
            except CronraftError as e:
                log.warning("epoch proposal failed; retrying", term=self.term, error=str(e))
                await asyncio.sleep(0.2)
                continue
            if not results[0].applied:
                log.warning("epoch rejected; stepping back", term=self.term, error=results[0].error)
                return
            break
        self.core.on_epoch_committed(clock.now_ms(), clock.mono_ms())
        self._epoch_applied.set()
        self._wake.set()  # results that arrived before now are checked and proposed by the next tick
        log.info("leader ready", term=self.term, running=len(self.core.leases))
        if self._retention is not None:
            duty = asyncio.create_task(
                retention.run(
                    self._committer.submit,
                    clock,
                    self._retention,
                    stopped=lambda: self._stopping,
                    activity=self._activity,
                ),
                name=f"retention-term-{self.term}",
            )
            self._inflight.add(duty)
            duty.add_done_callback(self._inflight.discard)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            cmds = self.core.tick(clock.now_ms(), clock.mono_ms())
            self._act_on_refusals()
            if cmds:
                self._propose(cmds)
            self._flush()
            delay = self.core.next_wakeup_ms(clock.now_ms(), clock.mono_ms())
            if delay > 0:
                self._wake.clear()
                # A timer that sets the event, not wait_for: that made a task, a future and callbacks at
                # every wait, and a busy leader waits here after every commit (issue 16).
                timer = loop.call_later(delay / 1000, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()

    def _propose(self, cmds: Sequence[commands_pb2.Command]) -> None:
        # One submission must fit one entry, in commands and in bytes: a burst of due fires is split into
        # several, and so are results carrying large attempt results (up to 3 MiB each: issue 15). Each
        # command is serialized once, here (upb's ByteSize costs as much), and handed on encoded.
        self.prepare(cmds)
        most, room = self._committer.max_batch, self._committer.max_bytes
        chunk: list[commands_pb2.Command] = []
        encoded: list[bytes] = []
        size = 0
        serialize = commands_pb2.Command.SerializeToString  # from the class: no field look-up first (upb)
        for cmd in cmds:
            raw = serialize(cmd)
            if chunk and (len(chunk) >= most or size + len(raw) + 6 > room):
                self._submit(chunk, encoded)
                chunk, encoded, size = [], [], 0
            chunk.append(cmd)
            encoded.append(raw)
            size += len(raw) + 6
        if chunk:
            self._submit(chunk, encoded)

    def _submit(self, cmds: list[commands_pb2.Command], encoded: list[bytes]) -> None:
        task = asyncio.create_task(self._propose_and_apply(cmds, encoded))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _propose_and_apply(self, cmds: list[commands_pb2.Command], encoded: list[bytes]) -> None:
        try:
            results = await self._committer.submit(
                cmds,
                timeout_s=LEADER_PROPOSAL_TIMEOUT_S,
                encoded=encoded,
                late=functools.partial(self._late_results, cmds),
            )
        except ResourceExhausted as e:
            # This node refuses writes for lack of space (daemon.storage): proposing again at once would
            # only spin. Wait, then let the core redo these commands as it does after any failure.
            if time.monotonic() - self._refused_logged >= STORAGE_REFUSED_PAUSE_S * 10:
                self._refused_logged = time.monotonic()
                log.warning("leader commands refused; retrying", commands=len(cmds), error=str(e))
            await asyncio.sleep(STORAGE_REFUSED_PAUSE_S)
            self.core.on_proposal_failed(cmds, self._clock.mono_ms())
        except CronraftError as e:
            log.warning("proposal failed", commands=len(cmds), error=str(e))
            self.core.on_proposal_failed(cmds, self._clock.mono_ms())
        except Exception:
            # A bug, not a cluster condition; the core must still learn the outcome is unknown, or the
            # fires in this batch would stay "in flight" forever.
            log.exception("proposal crashed", commands=len(cmds))
            self.core.on_proposal_failed(cmds, self._clock.mono_ms())
        else:
            if self.core.on_committed(cmds, results, self._clock.now_ms(), self._clock.mono_ms()):
                self._notify(cmds, results)
            self._observed(cmds, results)
            self._activity.set()
        self._report_failures()
        self._flush()
        self._wake.set()

    def _late_results(
        self, cmds: list[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        """Our commands given up on at LEADER_PROPOSAL_TIMEOUT_S applied after all, in this term (the
        replicator tells: `GroupCommitter.submit`'s `late`): the leases their Fires and Grants made are
        adopted, which only the next leader would have found before; and their notification events
        (an execution that ended failed, a dead letter, missed fires) are sent, which nobody else would:
        the command's redo finds it done and ends nothing."""
        if self._stopping:
            return
        self.core.on_late_committed(cmds, results, self._clock.mono_ms())
        if len(cmds) == len(results):
            self._notify(cmds, results)
        self._flush()
        self._wake.set()

    def _report_failures(self) -> None:
        """Log, once per streak, each of our commands that failed inside apply (LeaderCore retries it
        with a growing delay)."""
        for kind, key, error, delay_ms in self.core.failure_reports:
            log.error(
                "a leader command failed when applied; retrying with a growing delay",
                command=kind,
                id=key,
                error=error,
                retry_in_ms=delay_ms,
            )
        self.core.failure_reports.clear()

    def observe(
        self, cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        """Client commands that committed on this leader (tasks created or cancelled) reach the wheel."""
        self._activity.set()
        if self.core.on_committed(cmds, results, self._clock.now_ms(), self._clock.mono_ms()):
            self._notify(cmds, results)
        self._observed(cmds, results)
        self._wake.set()

    def _observed(
        self, cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        if self._on_committed is not None:
            try:
                self._on_committed(cmds, results)
            except Exception:  # metrics must never break the leader's loop
                log.exception("counting committed outcomes failed", commands=len(cmds))

    def _notify(
        self, cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        """Hand the notification events of committed commands to the notifier (leader side only)."""
        if self._notifier is None:
            return
        for event in notification_events(cmds, results):
            with self._kv.read() as txn:
                task = sm.read_task(txn, event.task_id)
                records = tuple(_as_recorded(txn, rec) for rec in event.records)
            if task is not None and (task.spec.notify or self._notifier.has_global_targets):
                self._notifier.submit(
                    Notification(
                        event=event.event,
                        task=task,
                        execution=event.execution,
                        records=records,
                        dead_letter=event.dead_letter,
                    )
                )

    def _flush(self) -> None:
        out = self.core.drain_outgoing()
        if not out:
            return
        # I4: a lease leaves only while we still lead; the grant itself committed in our term.
        if not self._still_leader():
            return
        if any(_message_kind(msg, "kind") == "leases" for _, msg in out):
            self._flush_audit_before_failpoint()
            failpoint("leader.after_grant_commit_before_dispatch")
        for worker_id, msg in out:
            s = self._sessions.get(worker_id)
            if s is not None:
                s.send(msg)
                if self._audit is not None and not s.closed and _message_kind(msg, "kind") == "leases":
                    for lease in msg.leases.leases:
                        self._audit.record(
                            "dispatch",
                            raft_term=self.term,
                            execution_id=lease.execution_id,
                            token=f"{lease.token.term}.{lease.token.index}",
                            worker_id=worker_id,
                        )

    def _flush_audit_before_failpoint(self) -> None:
        # A failpoint crash (os._exit) would lose the audit buffer; failpoint runs only (tests).
        if self._audit is not None and failpoints_enabled():
            self._audit.flush()

    # ------------------------------------------------------------------------------ worker streams

    def attach(
        self, hello: worker_pb2.Hello, *, bound: bool = True, namespaces: frozenset[str] | None = None
    ) -> WorkerSession:
        """A worker's stream opened (WorkerGateway.Connect). `bound`: its id is its principal's;
        `namespaces`: the namespaces whose executions it may be leased (None: every one), from its
        credential (daemon.security.authz.worker_namespaces)."""
        old = self._sessions.pop(hello.worker_id, None)
        if old is not None:
            old.send(None)  # a worker reconnecting replaces its old stream
        output_budget = ByteBudget(
            bounds.MAX_OUTPUT_BYTES_PER_S, bounds.MAX_OUTPUT_BURST_BYTES, self._clock.mono_ms() / 1000
        )
        session = WorkerSession(hello.worker_id, bound=bound, output_budget=output_budget)
        self._sessions[hello.worker_id] = session
        if hello.version != CRONRAFT_VERSION or frozenset(hello.features) != features.WORKER_FEATURES:
            # Mixed releases are fine (nothing a worker sends depends on the feature gate); say which.
            log.info(
                "worker runs another release",
                worker=hello.worker_id,
                version=hello.version or "unknown (a release before the feature gate)",
                features=sorted(hello.features),
            )
        self.core.worker_connected(
            hello.worker_id,
            hello.capacity,
            list(hello.queues),
            dict(hello.labels),
            self._clock.mono_ms(),
            echo_ms=hello.sent_mono_ms,
            incarnation=hello.incarnation,
            namespaces=namespaces,
        )
        session.send(
            worker_pb2.GatewayMessage(
                welcome=worker_pb2.Welcome(
                    leader_id=self.core.node_id,
                    heartbeat_interval_ms=self._heartbeat_interval_ms,
                    lease_ttl_ms=self.core.settings.lease_ttl_ms,
                    idle_heartbeat_interval_ms=self.core.idle_heartbeat_ms(),
                    max_result_bytes=self.core.settings.max_result_bytes,
                )
            )
        )
        self._wake.set()
        return session

    def detach(self, session: WorkerSession) -> None:
        if self._sessions.get(session.worker_id) is session:
            del self._sessions[session.worker_id]
            self.core.worker_disconnected(session.worker_id)
        if session.output_budget is not None:
            self.output.forget(session.output_budget)
        session.send(None)

    def restamp(self, msg: worker_pb2.GatewayMessage, session: WorkerSession | None = None) -> None:
        """Recompute the start delays of the leases in `msg` as it goes out on `session` (the time spent
        building and queueing the offers would otherwise be added to every deferred start), and tell the
        leader core the offers reached a stream, and which one (an offer dropped with its stream never
        reached the worker; one written to a stream the worker has since left never reached it either:
        LeaseKeeper.reconcile)."""
        if _message_kind(msg, "kind") != "leases":
            return
        now = self._clock.now_ms()
        mono = self._clock.mono_ms()
        stream = self.core.stream_of(session.worker_id) if session is not None else -1
        offered = self.core.keeper.offered  # LeaderCore.offered, one call less per lease
        for lease in msg.leases.leases:
            start_mono = None
            start_at = lease.start_at_ms
            if start_at:
                lease.start_delay_ms = delay = max(0, start_at - now)
                start_mono = mono + delay
            t = lease.token
            offered(lease.execution_id, (t.term, t.index), start_mono, stream=stream)

    def _current(self, session: WorkerSession, kind: str) -> bool:
        """Whether `session` is its worker's stream now: a message still arriving on a stream the
        worker replaced (it reconnected) is dropped; the worker resends what matters on the new one."""
        if self._sessions.get(session.worker_id) is session:
            return True
        self.dropped["superseded"] = self.dropped.get("superseded", 0) + 1
        log.debug("worker message on a replaced stream dropped", worker=session.worker_id, kind=kind)
        return False

    def _act_on_refusals(self) -> None:
        """Log and count the forged messages the core refused, and end each sender's stream with
        PERMISSION_DENIED (issue 13: a worker reports only on its own leases; with authentication off
        the stream stays: its id proves nothing, and the core renewed nothing for it anyway)."""
        for r in self.core.refusals:
            self.dropped[r.kind] = self.dropped.get(r.kind, 0) + 1
            log.warning(
                "forged worker message refused",
                worker=r.worker_id,
                execution_id=r.execution_id,
                kind=r.kind,
                holder=r.holder,
            )
            s = self._sessions.get(r.worker_id)
            if s is not None and s.bound:
                s.refuse(r.message())
        self.core.refusals.clear()

    def on_heartbeat(self, session: WorkerSession, hb: worker_pb2.Heartbeat) -> None:
        if not self._current(session, "heartbeat"):
            return
        ack = self.core.heartbeat(
            session.worker_id,
            list(hb.leases),
            self._clock.mono_ms(),
            hb.sent_mono_ms,
            finished=list(hb.finished),
            complete_listing=hb.complete_listing,
            draining=hb.draining,
        )
        session.send(worker_pb2.GatewayMessage(heartbeat_ack=ack))
        self._act_on_refusals()
        if self.core.outgoing:  # a cancel its stream had not carried (LeaseKeeper.cancelling)
            self._flush()

    def on_results(self, session: WorkerSession, results: Sequence[common_pb2.AttemptResult]) -> None:
        if not self._current(session, "results"):
            return
        self.core.heard_from(session.worker_id, self._clock.mono_ms())
        cmds = self.core.results(session.worker_id, results, self._clock.now_ms(), bound=session.bound)
        self._act_on_refusals()
        if cmds:
            # The output buffered so far goes first (its task is created first, so it reaches the group
            # committer first): an attempt's last lines are stored before the result that ends its lease,
            # after which apply refuses them (the token is no longer current).
            if self.output.pieces:
                self._flush_output()
            self._flush_audit_before_failpoint()
            failpoint("leader.before_result_propose")
            self._propose(cmds)
        self._flush()  # stale results are acknowledged at once, without a proposal

    def on_output(self, session: WorkerSession, chunk: worker_pb2.OutputChunk) -> float:
        """Buffer a piece of output for the log if the sender may send it (OutputAdmission.admit: a
        fenced-off attempt's is dropped and counted, another worker's lease's refused as forged).
        Returns how long the gateway reads nothing more from this stream, whether the piece was taken
        or not: reading it cost the same (OutputAdmission.read_pause)."""
        budget = session.output_budget
        assert budget is not None  # attach gives every session its own
        pause = self.output.read_pause(budget, len(chunk.data), self._clock.mono_ms() / 1000)
        if not chunk.data or self._stopping or not self._current(session, "output"):
            return pause
        if self.output.admit(session.worker_id, session.bound, chunk, self._clock.now_ms()):
            self._act_on_refusals()
            return pause
        if self.output.full:
            self._flush_output()
        elif self._output_flush is None:
            self._output_flush = asyncio.get_running_loop().call_later(OUTPUT_FLUSH_S, self._flush_output)
        return pause

    def _flush_output(self) -> None:
        if self._output_flush is not None:
            self._output_flush.cancel()
            self._output_flush = None
        batch = self.output.take()
        if batch and not self._stopping:
            task = asyncio.create_task(self._propose_output(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _propose_output(self, batch: list[commands_pb2.Command]) -> None:
        step = self._committer.max_batch
        for i in range(0, len(batch), step):
            try:
                await self._committer.submit(batch[i : i + step])
            except ResourceExhausted:
                pass  # dropped while storage is exhausted (daemon.storage): best effort, said in the status
            except CronraftError as e:
                # Output is best effort: the result's tails are authoritative, these are the full log.
                log.warning("output not stored", pieces=len(batch[i : i + step]), error=str(e))

    @property
    def connected_workers(self) -> int:
        return len(self._sessions)


def _as_recorded(txn: Txn, rec: common_pb2.FireRecord) -> common_pb2.FireRecord:
    """A missed nominal time as the fire ledger holds it: a Fire's result names the times it recorded
    missed without their reason, which the notification's `missed[].reason` shows (docs/notifications.md).
    The result's record when the ledger no longer has it (pruned meanwhile)."""
    stored = sm.ledger(txn, rec.task_id, rec.nominal_time_ms, rec.nominal_time_ms, 1)
    return stored[0] if stored and stored[0].nominal_time_ms == rec.nominal_time_ms else rec


__all__ = ["LeaderRunner", "WorkerSession", "new_id"]
