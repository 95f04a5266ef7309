"""What the leader core does with the outcome of a proposal: committed (`on_committed`), failed inside
apply (recorded as "internal": retried with a growing delay, retries.py), or unknown
(`on_proposal_failed`: every command is made safe to redo).

A committed Grant becomes a lease offer to its worker (I4: never before); a committed Complete acks
the worker that sent it; the side effects of any command (executions now pending or ended, attempts to
cancel, a task's next due time) reach the pending queue, the lease keeper and the fire planner.
Functions of `LeaderCore` (core.py), kept here so that each module does one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cronraft.bounds import MAX_OFFER_BYTES
from cronraft.daemon.leader.leases import Granted, LeaseState
from cronraft.daemon.leader.retries import INTERNAL_RETRY_MAX_MS
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import token_tuple
from cronraft.raft.fireplan import needs_plan

if TYPE_CHECKING:
    from cronraft.daemon.leader.core import LeaderCore

Command = commands_pb2.Command
CommandResult = commands_pb2.CommandResult
# Protobuf methods taken from their class once, for the outcome of every command: looked up on a message,
# a method costs a look-up of a field of that name first (upb; as in raft/records.py).
_kind_of = Command.WhichOneof
_result_has = CommandResult.HasField
_fire_has = commands_pb2.Fire.HasField
_schedule_kind = common_pb2.Schedule.WhichOneof
_spec_has = common_pb2.TaskSpec.HasField
_serialize_payload = common_pb2.Payload.SerializeToString
_merge_payload = common_pb2.Payload.MergeFromString
# A lease offer's size but for its name, payload and sensor: two ids of 26 characters, the token, seven
# numbers, every field's tag and length (about 170 bytes at most).
_OFFER_FIXED_BYTES = 256
# A lease just granted, whose offer is to go out: its execution as the entry left it, its task, its lease,
# and its task's spec (read once).
Leased = tuple[common_pb2.Execution, common_pb2.Task, LeaseState, common_pb2.TaskSpec]
# The final states a notification can be about (daemon.notify_events: failure, timeout).
_NOTIFIED_STATES = frozenset(
    {common_pb2.EXECUTION_FAILED, common_pb2.EXECUTION_LOST, common_pb2.EXECUTION_TIMED_OUT}
)


def on_committed(
    core: LeaderCore, commands: Sequence[Command], results: Sequence[CommandResult], now_ms: int, mono_ms: int
) -> bool:
    """Act on committed commands (LeaderCore.on_committed). True when the batch may hold notification
    events (an execution ended failed, lost or timed out, a dead letter, a missed fire): without one, the
    driver need not look for them."""
    notable = False
    # Offers per worker, built in place in their messages (a standalone Lease then copied into its message
    # cost about twice as much); more than one message when they would pass MAX_OFFER_BYTES.
    offers: dict[str, _Offers] = {}
    acks: dict[str, list[str]] = {}
    # Tasks as a Fire of this batch left them (its result carries the task): the offer of the Grant that
    # follows it in the same entry is built from it instead of a read and parse of the stored task. Any
    # other command of the batch carrying a task (an update, a delete) drops it: the store says then.
    fired: dict[str, common_pb2.Task] = {}
    planner, retries = core.planner, core.retries
    failing = bool(retries.failing)  # none of our commands is being retried: nothing to clear
    pending_state, terminal = common_pb2.EXECUTION_PENDING, sm.TERMINAL_STATES
    made = core.made
    for cmd, res in zip(commands, results, strict=True):
        # What the core knows of a command it made (LeaderCore.made), instead of reading it back.
        known = made.pop(id(cmd), None) if made else None
        kind = _kind_of(cmd, "body") if known is None else known[1]
        applied = res.applied
        released = ""
        leased_fire = False  # a Fire whose grant leased its new execution (running: nothing more to do)
        task: common_pb2.Task | None = None  # the result's task, read once (`task_read`)
        task_read = False
        # A command that failed inside apply is recorded not applied, with error_code "internal".
        if (
            not applied
            and res.error_code == "internal"
            and _failed_inside_apply(core, cmd, res, now_ms, mono_ms)
        ):
            failing = True
            continue
        if kind == "grant":
            g = cmd.grant
            if failing:
                retries.succeeded("grant", g.execution_id)
            leased = _on_grant(core, g, res, mono_ms, fired)
            if leased is not None:
                _offer_into(core, offers, g.worker_id, leased)
        elif kind == "complete":
            if known is None:
                c = cmd.complete
                eid = c.execution_id
                t = c.token
                token = (t.term, t.index)
            else:
                _, _, eid, token = known
            sender = core.completing.pop((eid, token), "")
            if failing:
                retries.succeeded("complete", eid)
            # Only the attempt this result belongs to loses its lease: a stale result (an attempt
            # fenced off earlier) must not take the lease of the attempt running now.
            if applied or ((current := core.keeper.get(eid)) is not None and current.token == token):
                core.release(eid)
                released = eid  # its ending, listed in the result's executions, needs no second release
            # Acked, applied or stale, to the worker that sent it: it must stop resending it.
            if sender:
                sent = acks.get(sender)
                if sent is None:
                    acks[sender] = [eid]
                else:
                    sent.append(eid)
        elif kind == "fire":
            if known is None:
                f = cmd.fire
                task_id = f.task_id
                granted: Granted | None = None
                if _fire_has(f, "grant"):
                    g = f.grant
                    granted = (g.execution_id, g.worker_id, task_id, None)
            else:
                _, _, task_id, granted = known
            planner.done_firing(task_id)
            if failing:
                retries.succeeded("fire", task_id)
            if not applied:
                _reschedule_from_store(core, task_id)
            if granted is not None:
                task = res.task if _result_has(res, "task") else None
                task_read = True
                leased = _on_fire_grant(core, granted, res, mono_ms, applied=applied, task=task)
                if leased is not None:
                    _offer_into(core, offers, granted[1], leased)
                    leased_fire = True
        elif kind == "expire_lease":
            retries.succeeded("expire", cmd.expire_lease.execution_id)
            core.release(cmd.expire_lease.execution_id)
        elif kind == "expire_pending":
            core.pending.expiring.discard(cmd.expire_pending.execution_id)
            core.pending.reasons.pop(cmd.expire_pending.execution_id, None)
        elif kind == "update_task":
            core.plans.spec_changes += 1  # the plans known not needed are known no longer (needing_plans)
        # Whatever the command, its side effects: executions that now wait for a worker (fired,
        # promoted from an overlap buffer, re-queued after an expiry), executions that ended, attempts
        # whose workers must stop, and the task's next due time.
        executions = res.executions
        # A Fire that leased lists its new execution, running, and the executions it ended (overlap)
        # before it: alone, there is nothing to do with it (each element read is a new object with upb).
        for ex in () if leased_fire and len(executions) == 1 else executions:
            state = ex.state
            if state == pending_state:
                if ex.execution_id not in core.granting:  # else its grant's outcome decides
                    core.pend(ex)
            elif state in terminal:
                if ex.execution_id != released:
                    core.release(ex.execution_id)
                if state in _NOTIFIED_STATES:
                    notable = True
        if not notable and (res.dead_letters or res.missed):
            notable = True
        if kind == "expire_lease" and res.execution.state == pending_state:
            core.pend(res.execution)
        if res.cancels:
            for stop in res.cancels:
                cancel = worker_pb2.CancelAttempt(execution_id=stop.execution_id, token=stop.token)
                core.outgoing.append((stop.worker_id, worker_pb2.GatewayMessage(cancel=cancel)))
                # Sent on the worker's stream now, if it has one: its next stream gets it again.
                stream = core.stream_of(stop.worker_id)
                core.keeper.cancel_asked(stop.execution_id, token_tuple(stop.token), stream)
        if not task_read:
            task = res.task if _result_has(res, "task") else None
        if task is not None:
            if kind == "fire":
                planner.schedule(task, task_id)  # a Fire's result's task is the Fire's
                fired[task_id] = task
            else:
                task_id = task.task_id
                planner.schedule(task, task_id)
                fired.pop(task_id, None)
        if kind == "import_tasks" and applied:
            planner.imported(res.tasks, cmd.import_tasks.report_due_until_ms)
    for worker_id, to in offers.items():
        core.outgoing.extend((worker_id, msg) for msg in to.messages)
    for worker_id, ids in acks.items():
        core.outgoing.append(
            (worker_id, worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=ids)))
        )
    return notable


def _failed_inside_apply(
    core: LeaderCore, cmd: Command, res: CommandResult, now_ms: int, mono_ms: int
) -> bool:
    """One of our commands was recorded as "internal" (retries.py): arrange its retry after a growing
    delay, and say why where users look. True when handled (nothing else to do for it)."""
    kind = cmd.WhichOneof("body")
    retries = core.retries
    if kind == "fire":
        f = cmd.fire
        if f.HasField("grant"):
            core.end_grant(f.grant.execution_id, f.grant.worker_id)
        core.planner.done_firing(f.task_id)
        delay = retries.note_failure("fire", f.task_id, res.error, now_ms)
        core.planner.wheel.add(f.task_id, now_ms + delay)  # and never fired earlier (core._fire_commands)
        if retries.failures("fire", f.task_id) == 1:
            # The fire ledger says it (`schedctl task explain`) until the nominal time fires.
            core.retry.append(
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
        core.end_grant(g.execution_id, g.worker_id)
        retries.note_failure("grant", g.execution_id, res.error, now_ms)  # its waiting reason says it
        _adopt_if_running(core, g.execution_id, mono_ms)  # pending again: granted after the delay
        return True
    if kind == "complete":
        # Neither acknowledged nor released: the worker sends the result again later (each resend is a
        # new try), and if it keeps failing the lease expires and the execution goes on as for a lost
        # worker.
        c = cmd.complete
        core.completing.pop((c.execution_id, token_tuple(c.token)), None)
        retries.note_failure("complete", c.execution_id, res.error, now_ms)
        return True
    if kind == "expire_lease":
        x = cmd.expire_lease
        delay = retries.note_failure("expire", x.execution_id, res.error, mono_ms)
        core.keeper.expire_at(x.execution_id, mono_ms + delay)  # proposed again then
        return True
    return False


def _on_grant(
    core: LeaderCore,
    g: commands_pb2.Grant,
    res: CommandResult,
    mono_ms: int,
    fired: dict[str, common_pb2.Task] | None = None,
) -> Leased | None:
    """Track the lease of a committed Grant: the execution, its task and its lease, whose offer is to go
    out (None: no offer). The task as a Fire of the same entry left it if in `fired`, else read."""
    execution_id = g.execution_id
    core.granting.pop(execution_id, None)
    if not res.applied:
        core.pool.release_slot(g.worker_id, execution_id)
        _adopt_if_running(core, execution_id, mono_ms)
        return None
    return _leased(core, res.execution, mono_ms, None, fired=fired)


def _leased(
    core: LeaderCore,
    ex: common_pb2.Execution,
    mono_ms: int,
    task: common_pb2.Task | None,
    *,
    fired: dict[str, common_pb2.Task] | None = None,
    granted: Granted | None = None,
) -> Leased | None:
    """Track the lease of `ex`, just granted (its grant's slot is the lease's now). `task`: the task of
    the granted execution as the entry left it, when the caller has it (a Fire's result); else found in
    `fired` or read. `granted`: what the grant said, if known (LeaseKeeper.track then reads less of
    `ex`). The execution, its task and its lease, whose offer is to go out (None: no offer)."""
    lease = core.track_lease(ex, core.lease_deadline(mono_ms), granted)
    lease.written = False  # until the runner hands the offer to the worker's stream (offered)
    not_before, now_ms = ex.not_before_ms, core.now_ms
    if not_before > now_ms:  # a deferred start: the worker starts it once confirmed
        lease.start_mono = mono_ms + not_before - now_ms
    if task is None:
        task_id = lease.task_id  # ex.task_id, read once (by track)
        task = (fired.get(task_id) if fired else None) or core.read_task(task_id)
        if task is None:
            return None
    spec = task.spec
    # Its end plans the task's next run only for a fixed delay (raft.leaderplan): no plan otherwise.
    if _schedule_kind(spec.schedule, "kind") != "fixed_delay" or not needs_plan(spec):
        lease.plan_free = core.plans.spec_changes
    return ex, task, lease, spec


def _on_fire_grant(
    core: LeaderCore,
    granted: Granted,
    res: CommandResult,
    mono_ms: int,
    *,
    applied: bool,
    task: common_pb2.Task | None,
) -> Leased | None:
    """The grant a Fire carried (feature "fire_grant"; `granted`: its execution id, worker, task,
    worker incarnation): leased if the Fire's execution is running (then as a committed Grant, see
    `_leased`; `task`: the Fire's result's, the task of its execution), else its slot is released and the
    execution, if the Fire made it, waits pending (on_committed's loop over the result's executions)."""
    ex = res.execution
    execution_id = granted[0]
    if not (applied and ex.execution_id == execution_id and ex.state == common_pb2.EXECUTION_RUNNING):
        core.end_grant(execution_id, granted[1])
        return None
    core.granting.pop(execution_id, None)
    # Running under this very grant: its execution id, worker and task are the grant's (raft.commands.
    # leases sets them from it), so they need not be read from `ex` again.
    return _leased(core, ex, mono_ms, task, granted=granted)


class _Offers:
    """A worker's offers messages of one batch: the last one's leases (the container, looked up once: with
    upb each read of a field is a new object) and the bound of their size (MAX_OFFER_BYTES)."""

    __slots__ = ("leases", "messages", "size")

    def __init__(self, first: worker_pb2.GatewayMessage) -> None:
        self.messages = [first]
        self.leases = first.leases.leases
        self.size = 0


def _offer_into(core: LeaderCore, offers: dict[str, _Offers], worker_id: str, leased: Leased) -> None:
    """Add the offer of a lease just granted (`leased`: its execution, task and lease) to the last of
    `worker_id`'s messages in `offers`, or to a new one if it would pass MAX_OFFER_BYTES (payloads are
    up to 4 MiB each)."""
    ex, task, held, spec = leased
    to = offers.get(worker_id)
    if to is None:
        to = offers[worker_id] = _Offers(_offers(core, worker_id, []))
    leases = to.leases
    lease = leases.add()
    n = _fill_offer(core, lease, ex, task, held, spec=spec)
    if to.size + n > MAX_OFFER_BYTES and len(leases) > 1:
        following = _offers(core, worker_id, [])
        following.leases.leases.add().CopyFrom(lease)
        del leases[-1]
        to.messages.append(following)
        to.leases, to.size = following.leases.leases, 0
    to.size += n


def _lease_offer(
    core: LeaderCore, ex: common_pb2.Execution, task: common_pb2.Task | None = None
) -> worker_pb2.Lease | None:
    """The offer of a granted lease; `task` as the entry left it if the caller has it (else read)."""
    if task is None:
        task = core.read_task(ex.task_id)
        if task is None:
            return None
    lease = worker_pb2.Lease()
    _fill_offer(core, lease, ex, task)
    return lease


def _fill_offer(
    core: LeaderCore,
    lease: worker_pb2.Lease,
    ex: common_pb2.Execution,
    task: common_pb2.Task,
    held: LeaseState | None = None,
    *,
    spec: common_pb2.TaskSpec | None = None,
) -> int:
    """The offer of `ex` in `lease`; `held`: its lease as tracked, whose fields (read from `ex` by
    LeaseKeeper.track) are not read from `ex` again; `spec`: `task`'s, if the caller read it. Returns a
    bound of the offer's serialized size, from the lengths at hand (a ByteSize serializes the whole lease
    with upb)."""
    now_ms = core.now_ms
    if spec is None:
        spec = task.spec
    not_before = ex.not_before_ms
    if held is None:
        lease.execution_id = ex.execution_id
        lease.task_id = ex.task_id
        lease.token.CopyFrom(ex.token)
    else:
        lease.execution_id = held.execution_id
        lease.task_id = held.task_id
        token = lease.token
        token.term, token.index = held.token
    lease.task_name = name = spec.name
    lease.nominal_time_ms = ex.nominal_time_ms
    lease.attempt = ex.attempt
    # Copied as its bytes (what CopyFrom does with upb), whose length is then known.
    payload = _serialize_payload(spec.payload)
    if payload:
        _merge_payload(lease.payload, payload)
    else:
        lease.payload.SetInParent()  # as a copy of an empty payload
    lease.timeout_ms = spec.timeout_ms
    lease.lease_ttl_ms = core.settings.lease_ttl_ms
    # Granted ahead of its due time (or of a retry's backoff end): the worker waits the rest.
    if not_before > now_ms:
        lease.start_delay_ms = not_before - now_ms
        lease.start_at_ms = not_before
    lease.guarantee = spec.guarantee
    size = _OFFER_FIXED_BYTES + 4 * len(name) + len(payload)  # UTF-8: at most 4 bytes a character
    if _spec_has(spec, "sensor"):
        lease.sensor.CopyFrom(spec.sensor)
        size += lease.sensor.ByteSize() + 6
    return size


def _offers(core: LeaderCore, worker_id: str, leases: list[worker_pb2.Lease]) -> worker_pb2.GatewayMessage:
    """Leases whose clocks start now, with the echo that bounds the worker's deadline (worker.proto)."""
    w = core.pool.get(worker_id)
    echo = w.echo_ms if w is not None else 0
    return worker_pb2.GatewayMessage(leases=worker_pb2.LeaseOffers(leases=leases, echo_mono_ms=echo))


def _adopt_if_running(core: LeaderCore, execution_id: str, mono_ms: int) -> None:
    """A grant whose outcome we lost may have committed. The store says: if it did, in our term, the
    lease is valid (its grant committed, I4) and is dispatched now; otherwise it waits in pending."""
    with core.kv.read() as txn:
        ex = sm.read_execution(txn, execution_id)
    if ex is None:
        return
    if ex.state == common_pb2.EXECUTION_RUNNING and execution_id not in core.keeper.leases:
        core.adopt_lease(ex, core.lease_deadline(mono_ms))
        w = core.pool.get(ex.worker_id)
        if ex.token.term == core.term and w is not None and w.connected:
            lease = _lease_offer(core, ex)
            if lease is not None:
                core.outgoing.append((w.worker_id, _offers(core, w.worker_id, [lease])))
    elif ex.state == common_pb2.EXECUTION_PENDING:
        core.pend(ex)


def _reschedule_from_store(core: LeaderCore, task_id: str) -> None:
    with core.kv.read() as txn:
        task = sm.read_task(txn, task_id)
    if task is not None:
        core.planner.schedule(task)


def on_proposal_failed(core: LeaderCore, commands: Sequence[Command], mono_ms: int) -> None:
    made = core.made
    for cmd in commands:
        made.pop(id(cmd), None)  # a Complete proposed again is handled as any command: read back
        kind = cmd.WhichOneof("body")
        if kind == "fire":
            f = cmd.fire
            core.planner.done_firing(f.task_id)
            if f.HasField("grant"):
                core.end_grant(f.grant.execution_id, f.grant.worker_id)
            with core.kv.read() as txn:
                fired = sm.read_fire(txn, f.task_id, f.nominal_time_ms)
                task = sm.read_task(txn, f.task_id)
            if fired is not None and fired.state == common_pb2.EXECUTION_PENDING:
                core.pend(fired)
            elif fired is not None and f.HasField("grant") and fired.state == common_pb2.EXECUTION_RUNNING:
                _adopt_if_running(core, fired.execution_id, mono_ms)  # its grant committed: valid (I4)
            # Not committed (yet): fire again; if it commits meanwhile, I3 rejects the copy.
            core.planner.refire(task, f.nominal_time_ms)
        elif kind == "grant":
            core.end_grant(cmd.grant.execution_id, cmd.grant.worker_id)
            _adopt_if_running(core, cmd.grant.execution_id, mono_ms)
        elif kind == "complete":
            core.retry.append(cmd)  # the sender stays recorded in `completing` for the ack
        elif kind == "expire_pending":
            core.pending.expiring.discard(cmd.expire_pending.execution_id)
        elif kind == "note_waiting":
            core.pending.reasons.pop(cmd.note_waiting.execution_id, None)
        elif kind == "expire_lease":
            core.keeper.expire_at(cmd.expire_lease.execution_id, mono_ms)  # propose it again


def on_late_committed(
    core: LeaderCore, commands: Sequence[Command], results: Sequence[CommandResult], mono_ms: int
) -> None:
    """Commands given up on (`on_proposal_failed`: their proposal timed out) applied after all, in this
    term. Each was made safe to redo then, except what the store alone now knows: the execution a Fire
    made (leased by its grant: a lease nobody would offer nor expire until the next leader; or pending)
    and the lease a Grant made. Adopted from the store, as `on_proposal_failed` does when it finds them."""
    for cmd, res in zip(commands, results, strict=False):
        if not res.applied:
            continue
        kind = cmd.WhichOneof("body")
        if kind == "fire":
            _adopt_if_running(core, cmd.fire.execution_id, mono_ms)
        elif kind == "grant":
            _adopt_if_running(core, cmd.grant.execution_id, mono_ms)


__all__ = ["on_committed", "on_late_committed", "on_proposal_failed"]
