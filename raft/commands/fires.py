"""Fire commands: Fire (the leader's, at a task's nominal time), TriggerTask and BackfillTask (a client's).

A fire `(task_id, nominal)` commits at most once (I3): Fire must name the task's current `next_fire_ms`.
Misfire (misfire.decide_misfire) decides which late nominal times still fire; overlap
(overlap.decide_overlap) decides what the new execution does beside the active ones; `start_execution`
carries both out and records the outcome in the fire ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features, firing, misfire, quota, retention, schedule
from cronraft.raft.answers import Answers
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx, Execution, Task, max_runs_reached, plan_fixed_delay
from cronraft.raft.commands.executions import finish, request_cancel, terminate
from cronraft.raft.commands.leases import grant_refusal, lease, leased
from cronraft.raft.kv import Txn
from cronraft.raft.overlap import decide_overlap, superseded_order
from cronraft.raft.records import (
    fire_key,
    get_task,
    pending_key,
    put_execution,
    put_task,
    put_task_same_spec,
    read_epoch,
)
from cronraft.raft.rejection import Code, Rejected, Rejection

MAX_BACKFILL = 1_000

# From the class once: looked up on a message, a method costs a look-up of a field of that name (upb).
_fire_has = commands_pb2.Fire.HasField
_kind_of = common_pb2.Schedule.WhichOneof


def fire(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    f = cmd.fire
    txn = ctx.txn
    # Each field read once (with upb, every read of a string field makes a new str).
    task_id, execution_id, fired = f.task_id, f.execution_id, f.nominal_time_ms
    task16 = id_bytes(task_id, field="task_id")
    exec16 = id_bytes(execution_id, field="execution_id")
    # The leader's result answers the task as the fire leaves it: it is read into the result's field and
    # changed there (a refusal replaces the whole result); wanted as bytes only, the bytes stored last.
    bytes_only = ctx.bytes_only
    old = get_task(txn, task16, None if ctx.unread or bytes_only else ctx.result.task)
    old_state, next_fire = old.state, old.next_fire_ms
    if old_state != common_pb2.TASK_SCHEDULED:
        raise Rejected(Code.INVALID_STATE, f"task {task_id} is not scheduled")
    if fired != next_fire:
        # Already fired (a retried or duplicated proposal) or rescheduled meanwhile: I3.
        raise Rejected(Code.NOT_DUE, f"task {task_id} is not due at {fired}")
    if txn.get("fires", fire_key(task16, fired)) is not None:
        raise Rejected(Code.ALREADY_FIRED, f"task {task_id} already fired at {fired}")
    if txn.get("execs", exec16) is not None:
        raise Rejected(Code.ALREADY_EXISTS, f"execution {execution_id} already exists")
    due = old.next_due_ms or next_fire  # firing.due_of(old)
    lead_ms = f.lead_ms
    lead = firing.fire_lead(old, lead_ms)  # the task's spec does not change here: computed once
    if ctx.now + lead < due:
        raise Rejected(Code.NOT_DUE, f"task {task_id} is due at {due}, not yet at {ctx.now}")

    # The stored task read is the one changed and stored (no copy): what the fire needs of it as stored,
    # it reads before changing it, and its index entries move from `before` (records.put_task_same_spec).
    before = (old_state, due, old.last_outcome)  # task_indexed(old), from what was read above
    ans = ctx.answers(task_id, old.spec)  # the leader's instants when the command carries them
    decision, excluded = _decide_misfire(txn, old, fired, ctx.now, ans, due=due)
    task = old
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    sched = task.spec.schedule
    kind = _kind_of(sched, "kind")
    policy = (
        common_pb2.MisfirePolicy.Name(task.spec.misfire or common_pb2.MISFIRE_FIRE_ALL).lower()
        if decision.missed
        else ""
    )
    for nominal, reason in excluded.items():  # excluded by a calendar: not missed (skip_excluded)
        firing.record(txn, task16, nominal, common_pb2.SKIPPED_CALENDAR, ctx.now, reason=reason)
    for i, missed in enumerate(decision.missed):
        more = (
            f" (and {decision.missed_more} more)"
            if decision.missed_more and i == len(decision.missed) - 1
            else ""
        )
        firing.record(
            txn,
            task16,
            missed,
            common_pb2.MISSED_DOWNTIME,
            ctx.now,
            reason=f"not fired in time; {policy}{more}",
        )
        ctx.result.missed.append(
            common_pb2.FireRecord(task_id=task_id, nominal_time_ms=missed, outcome=common_pb2.MISSED_DOWNTIME)
        )
    started: Execution | None = None
    if decision.fire_nominal is not None:
        nominal = decision.fire_nominal
        outcome = common_pb2.FIRED
        reason = ""
        # The calendars read last (a list). fire_rolled: fire_once's latest time, a rolled one.
        if (nominal == fired and due != nominal and sched.calendars) or decision.fire_rolled:
            outcome, reason = common_pb2.ROLLED, "rolled by calendar"
        elif kind == "cron" and ans.dst_shifted(sched, nominal):
            outcome, reason = common_pb2.DST_SHIFTED, "moved out of a DST gap"
        if decision.catchup:
            reason = (reason + "; " if reason else "") + "catch-up after a misfire"
        task.catchup_fired = task.catchup_fired + 1 if decision.catchup else 0
        started = start_execution(
            ctx,
            task,
            nominal,
            execution_id,
            outcome=outcome,
            reason=reason,
            due_ms=due if nominal == fired else _due_of_latest(ctx, task, decision, due),
            # Fired ahead: nobody starts it before its due time.
            not_before_ms=due if due > ctx.now else 0,
            lease_to=f.grant if _fire_has(f, "grant") and _fire_grants(ctx) else None,
            lead_ms=lead_ms,
            lead=lead,
            ids=(task16, exec16),
            answer=bytes_only,
        )
    if kind == "fixed_delay":
        # The next run is planned when this one ends (finish); nothing is due meanwhile.
        task.next_fire_ms = task.next_due_ms = 0
        if decision.fire_nominal is None or started is None:
            plan_fixed_delay(ctx, task, ctx.now)
    else:
        nxt = ans.next_fire(sched, decision.resume_after)
        plan = firing.plan_from(txn, task, nxt, ctx.now, not_before_ms=due, answers=ans, sched=sched)
        firing.set_plan(task, plan, max_runs_reached(task))
        if task.state == common_pb2.TASK_COMPLETED:
            _record_window_end(ctx, task16, task, decision.resume_after, ans)
    stored = put_task_same_spec(txn, task16, task, before)  # the task's last change
    if bytes_only:
        ctx.answer_task = stored


def _decide_misfire(
    txn: Txn, task: Task, fired: int, now: int, ans: Answers, *, due: int
) -> tuple[misfire.MisfireDecision, dict[int, str]]:
    """What a fire does about the times it missed (misfire.decide_misfire), and the missed times the
    calendars skip or merge (skipped_calendar). The corrections of the feature schedule_fixes, whose level
    is read only for a misfire they concern: calendar-excluded missed times (misfire.skip_excluded), and
    the late fire of a task whose calendars roll, judged at the rolled instants (decide_rolled_misfire).
    leaderplan._fire asks the same questions."""
    if misfire.rolls_late(task, now, due) and features.is_active(txn, features.SCHEDULE_FIXES):
        return misfire.decide_rolled_misfire(txn, task, fired, now, ans, due_ms=due)
    decision = misfire.decide_misfire(task, fired, now, ans, due_ms=due)
    if decision.missed and features.is_active(txn, features.SCHEDULE_FIXES):
        return decision, misfire.skip_excluded(txn, task, decision, ans)
    return decision, {}


def _due_of_latest(ctx: Ctx, task: Task, decision: misfire.MisfireDecision, due: int) -> int:
    """When the time fire_once fires, the latest missed one, was due: its ledger record gives it
    (actual_ms) and counts its lateness from it (late_ms). `due` is when the fire's own time, the oldest
    missed one, was due: below the feature schedule_fixes the record kept it, so a fire committed a moment
    after its time read as late by the whole outage."""
    if not _schedule_fixes(ctx):
        return due
    if decision.fire_due:  # the rolled walk planned it (rolled, jittered)
        return decision.fire_due
    nominal = decision.fire_nominal or 0
    jitter = task.spec.schedule.jitter_ms
    return nominal + (schedule.jitter_offset_ms(task.task_id, nominal, jitter) if jitter else 0)


def _fire_grants(ctx: Ctx) -> bool:
    """Whether the cluster's level has "fire_grant" (raft.features): without it Fire.grant is ignored,
    as a release without it does."""
    if ctx.stats is None:
        return features.is_active(ctx.txn, features.FIRE_GRANT)
    return ctx.stats.has(ctx.txn, features.FIRE_GRANT)


def _schedule_fixes(ctx: Ctx) -> bool:
    """Whether the cluster's level has "schedule_fixes" (raft.features), read once per entry when batched."""
    if ctx.stats is None:
        return features.is_active(ctx.txn, features.SCHEDULE_FIXES)
    return ctx.stats.has(ctx.txn, features.SCHEDULE_FIXES)


def _record_window_end(ctx: Ctx, task16: bytes, task: Task, after: int, ans: Answers) -> None:
    """The task completed because its window or run budget ended: the first nominal time it would
    have had next is recorded as outside_window, so `explain` says why it stopped."""
    sched = task.spec.schedule
    if sched.WhichOneof("kind") not in ("cron", "fixed_rate"):
        return
    unbounded = common_pb2.Schedule()
    unbounded.CopyFrom(sched)
    unbounded.end_at_ms = 0
    unbounded.max_runs = 0
    nxt = ans.next_fire(unbounded, after)  # the same cron steps as the schedule's: one plan answers both
    if nxt is None:
        return
    if sched.max_runs and task.fire_count >= sched.max_runs:
        why = f"max_runs {sched.max_runs} reached"
    else:
        why = f"after end_at {sched.end_at_ms}"
    firing.record(ctx.txn, task16, nxt, common_pb2.OUTSIDE_WINDOW, ctx.now, reason=why)


def start_execution(
    ctx: Ctx,
    task: Task,
    nominal: int,
    execution_id: str,
    *,
    outcome: int,
    reason: str = "",
    due_ms: int = 0,
    manual: bool = False,
    force_buffer: bool = False,
    not_before_ms: int = 0,
    lease_to: commands_pb2.Grant | None = None,
    lead_ms: int = 0,
    lead: int | None = None,
    ids: tuple[bytes, bytes] | None = None,
    answer: bool = False,
) -> Execution | None:
    """Create the execution of one fire, as the task's overlap policy says; record the outcome.
    `lease_to` (Fire.grant): a pending execution is leased at once, as a Grant of it (with `lead_ms`)
    right after this command would lease it, if that Grant would be accepted; same stored result,
    without writing the pending state first. A caller that has them already passes `lead`
    (`firing.fire_lead(task, lead_ms)`) and `ids` (the task's and the execution's key bytes). `answer`
    (a Fire's, with `Ctx.bytes_only`): the new execution is the command's answer (`Ctx.answer`) when it
    is the first of the result's executions (nothing below adds one)."""
    txn = ctx.txn
    if ids is None:
        task16 = id_bytes(task.task_id)
        exec16 = id_bytes(execution_id, field="execution_id")
    else:
        task16, exec16 = ids
    limits = ctx.limits
    # The task's count of executions not yet ended: read once for the quota and the count's move below.
    counted = quota.stored_active(txn, task16) if limits is not None and limits.max_pending_per_task else None
    refusal = quota.execution_refusal(txn, limits, task, active=counted)
    if refusal is not None:
        # A scheduled fire over a quota creates no execution and the schedule goes on (a client's
        # trigger or backfill is refused before it gets here).
        firing.record(txn, task16, nominal, common_pb2.SKIPPED_LIMIT, ctx.now, reason=str(refusal)[:500])
        return None
    spec = task.spec
    # A lead is only given to a task with overlap allow_all (firing.fire_lead): not read again then.
    policy = common_pb2.OVERLAP_ALLOW_ALL if lead else spec.overlap or common_pb2.OVERLAP_ALLOW_ALL
    # Only the other policies look at the active executions: allow_all (the default) skips the scan.
    active = firing.active_executions(txn, task16) if policy != common_pb2.OVERLAP_ALLOW_ALL else []
    # Read only where a reason may be worded: a task with a policy and executions still active.
    plain = bool(active) and _schedule_fixes(ctx)
    decision = decide_overlap(policy, active, force_buffer=force_buffer, plain=plain)
    if decision.state is None:
        firing.record(txn, task16, nominal, decision.outcome, ctx.now, reason=decision.reason)
        return None
    if decision.supersede or decision.terminate:
        counted = None  # the executions ended below move the count: `activated` reads it again
    if decision.supersede:
        # Ask the running ones to stop; waiting ones are superseded (the new one waits its turn).
        for e in superseded_order(active):
            if e.state == common_pb2.EXECUTION_RUNNING:
                request_cancel(ctx, e, "cancelled by a newer fire (overlap cancel_other)")
            else:
                finish(
                    ctx,
                    e,
                    common_pb2.EXECUTION_CANCELLED,
                    "superseded by a newer fire (overlap cancel_other)",
                )
    elif decision.terminate:
        for e in superseded_order(active):
            terminate(ctx, e, "terminated by a newer fire (overlap terminate_other)")
    state = common_pb2.ExecutionState.ValueType(decision.state)
    # On the leader the new execution is built in the result's list, where it is answered last (nothing
    # below adds to the list), instead of being copied there at the end (upb copies serialize and parse);
    # as the answer (`answering`), it stays out of the result.
    answering = answer and not ctx.result.executions
    new: Callable[..., Execution] = Execution if ctx.unread or answering else ctx.result.executions.add
    namespace = spec.namespace  # its task's, which never changes (records: execs_by_namespace)
    ex = new(
        execution_id=execution_id,
        task_id=task.task_id,
        nominal_time_ms=nominal,
        fired_at_ms=ctx.now,
        state=state,
        guarantee=spec.guarantee,
        priority=spec.priority,
        manual=manual,
        not_before_ms=not_before_ms,
        namespace=namespace,
    )
    granted = False
    if lease_to is not None and state == common_pb2.EXECUTION_PENDING:
        term = read_epoch(txn, ctx.stats).term
        if term and grant_refusal(ctx, ex, task, lead_ms, lead=lead) is None:
            lease(ctx, ex, lease_to, term)
            granted = True
    # A new execution (I3: one fire, one new id). Its search-index entries (records.indexed) without
    # reading back what was set above: not ended, and no worker but its lease's (nor an attempt's).
    after = (ex.state, ex.worker_id, 0, namespace) if granted else (state, "", 0, namespace)
    stored = put_execution(txn, exec16, ex, None, task16=task16, after=after)  # `ex` changes no more
    txn.put("fires", fire_key(task16, nominal), exec16)
    txn.put("active", firing.active_key(task16, exec16), b"")
    quota.activated(txn, task16, counted)
    if state == common_pb2.EXECUTION_BUFFERED:
        txn.put("buffered", firing.buffered_key(task16, nominal, exec16), b"")
    elif not granted:
        txn.put("pending", pending_key(ex, exec16), b"")
    task.last_fired_nominal_ms = max(task.last_fired_nominal_ms, nominal)
    task.fire_count += 1
    task.stored_executions += 1
    # Keeps the task within its count of executions; the ledger records it deleted are counted with the
    # fire's own below.
    removed = retention.trim_on_fire(txn, task16, task, ctx.stats)
    firing.record(
        txn,
        task16,
        nominal,
        outcome,
        ctx.now,
        reason=reason,
        execution_id=execution_id,
        actual_ms=due_ms or nominal,
        removed=removed,
    )
    if answering:
        ctx.answer = stored
    elif not ctx.unread:
        ctx.result.execution.CopyFrom(ex)
    if ctx.events is not None:
        ctx.audit("fire", execution_id=execution_id, task_id=task.task_id, nominal_ms=nominal, manual=manual)
    if granted:
        leased(ctx, ex, exec16, result=False)  # the result above holds it leased already
    return ex


def trigger_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Fire now, outside the schedule (the next scheduled fire is unchanged). Overlap rules apply:
    a manual run does not bypass them (a known Dkron complaint)."""
    t = cmd.trigger_task
    task16 = id_bytes(t.task_id, field="task_id")
    id_bytes(t.execution_id, field="execution_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        raise Rejected(Code.INVALID_STATE, f"task {t.task_id} is cancelled")
    if ctx.txn.get("fires", fire_key(task16, ctx.now)) is not None:
        raise Rejected(Code.ALREADY_FIRED, f"task {t.task_id} already fired at {ctx.now}")
    refusal = quota.execution_refusal(ctx.txn, ctx.limits, old)
    if refusal is not None:
        raise refusal
    task = Task()
    task.CopyFrom(old)
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    ex = start_execution(
        ctx, task, ctx.now, t.execution_id, outcome=common_pb2.MANUAL, reason="trigger", manual=True
    )
    if ex is None:
        # The overlap policy said no: recorded in the ledger, answered (applied) without an execution.
        skipped = Rejection(
            Code.SKIPPED_OVERLAP,
            f"task {t.task_id}: an earlier execution is still active and the overlap policy skips",
        )
        ctx.result.error_code, ctx.result.error = str(skipped.code), skipped.message
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


def backfill_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Fire every nominal time in [from, to] that has no ledger outcome yet, oldest first. Unless the
    task allows overlap, they run one after another (buffered)."""
    b = cmd.backfill_task
    task16 = id_bytes(b.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        raise Rejected(Code.INVALID_STATE, f"task {b.task_id} is cancelled")
    if b.from_ms <= 0 or b.to_ms < b.from_ms:
        raise Rejected(Code.INVALID_ARGUMENT, "must be >= from_ms > 0", field="to_ms")
    if b.to_ms > ctx.now:
        raise Rejected(Code.INVALID_ARGUMENT, "a backfill covers the past only", field="to_ms")
    limit = min(b.max_fires or 100, MAX_BACKFILL)
    sched = old.spec.schedule
    if sched.WhichOneof("kind") == "fixed_delay":
        raise Rejected(
            Code.INVALID_ARGUMENT, "a fixed-delay task has no nominal times to backfill", field="task"
        )
    task = Task()
    task.CopyFrom(old)
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    ans = ctx.answers(b.task_id, old.spec)
    nominal = ans.next_fire(sched, b.from_ms - 1)
    created = 0
    steps = 0
    while nominal is not None and nominal <= b.to_ms and created < limit and steps < firing.MAX_WALK:
        steps += 1
        seen = ctx.txn.get("ledger", firing.ledger_key(task16, nominal)) is not None
        if not seen and ctx.txn.get("fires", fire_key(task16, nominal)) is None:
            refusal = quota.execution_refusal(ctx.txn, ctx.limits, task)
            if refusal is not None:
                if not created:
                    raise refusal
                break  # what is left has no outcome yet: a later backfill may fire it
            ex = start_execution(
                ctx,
                task,
                nominal,
                ctx.new_id(),
                outcome=common_pb2.MANUAL,
                reason="backfill",
                manual=True,
                force_buffer=True,
            )
            created += ex is not None
        nominal = ans.next_fire(sched, nominal)
    # Backfill must not move the schedule: last_fired_nominal tracks scheduled fires only.
    task.last_fired_nominal_ms = old.last_fired_nominal_ms
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


__all__ = ["MAX_BACKFILL", "backfill_task", "fire", "start_execution", "trigger_task"]
