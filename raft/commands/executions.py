"""Execution commands and the moves every subject shares: ending an execution (`finish`), asking its
worker to stop (`request_cancel`), ending it at once (`terminate`); CancelExecution, NoteWaiting and
ExpirePending (an execution that never started in time, or whose dependencies never came).

Leases (Grant, Complete, ExpireLease) are in commands.leases; dead letters in commands.dead_letters.
"""

from __future__ import annotations

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps, firing, quota, stats
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx, Execution, Task, plan_fixed_delay, task_of, token_text
from cronraft.raft.records import (
    META_INDEXED,
    TERMINAL_STATES,
    get_execution,
    get_task,
    indexed,
    pending_key,
    put_execution,
    put_task_same_spec,
    task_indexed,
)
from cronraft.raft.rejection import Code, Rejected

# From the class once: looked up on a message, a method costs a look-up of a field of that name (upb).
_task_from = Task.FromString


def finish(
    ctx: Ctx,
    ex: Execution,
    state: int,
    error: str = "",
    *,
    exec16: bytes | None = None,
    answer: bool = False,
) -> None:
    """Move an execution to a final state and keep its task in step: leave the active set, count the
    outcome (raft.stats), promote the oldest buffered execution once nothing else runs, and plan a
    fixed-delay task's next run. `exec16`: the execution's key bytes, when the caller has them. `answer`:
    `ex` ends as it is now and is the command's answer (`Ctx.answer`, with `bytes_only`: the bytes stored
    here; nothing below changes `ex`, nor may the caller), not copied into the result's `executions`."""
    txn = ctx.txn
    if exec16 is None:
        exec16 = id_bytes(ex.execution_id)
    task16 = id_bytes(ex.task_id)
    before = indexed(ex)  # `ex` is as stored: every caller read it in this command and changed no state
    old_state, worker, _, namespace = before
    if old_state == common_pb2.EXECUTION_PENDING:
        txn.delete("pending", pending_key(ex, exec16))
    elif old_state == common_pb2.EXECUTION_RUNNING:
        txn.delete("running", exec16)
    elif old_state == common_pb2.EXECUTION_BUFFERED:
        txn.delete("buffered", firing.buffered_key(task16, ex.nominal_time_ms, exec16))
    if txn.delete("active", firing.active_key(task16, exec16)):
        quota.deactivated(txn, task16)
    ex.state = common_pb2.ExecutionState.ValueType(state)
    if error:
        ex.error = error[:4096]
    ex.completed_at_ms = ctx.now
    # indexed(ex) now, without reading it again: only its state and end time changed here.
    after = (state, worker, ctx.now if state in TERMINAL_STATES else 0, namespace)
    stored = put_execution(txn, exec16, ex, before, task16=task16, after=after)
    if answer:
        ctx.answer = stored
    elif not ctx.unread:
        ctx.result.executions.append(ex)

    raw = txn.get("tasks", task16)
    if raw is None:
        stats.record_outcome(txn, ex, None, ctx.stats, task16)
        return
    task = _task_from(raw)
    task_before = task_indexed(task)  # no copy to compare with: the spec does not change here
    task.last_finished_ms = ctx.now
    stats.record_outcome(txn, ex, task, ctx.stats, task16)
    # The oldest buffered execution is promoted once every active one is buffered. The buffer is looked
    # at first: it is empty for most tasks (overlap allow_all never buffers), and then the active ones
    # need no reading, let alone parsing (every finish of every execution comes here).
    key = firing.oldest_buffered(txn, task16)
    if key is not None:
        others = firing.active_executions(txn, task16)
        if others and not any(e.state != common_pb2.EXECUTION_BUFFERED for e in others):
            nxt = get_execution(txn, key[24:40])
            txn.delete("buffered", key)
            nxt.state = common_pb2.EXECUTION_PENDING
            put_execution(txn, key[24:40], nxt)
            txn.put("pending", pending_key(nxt, key[24:40]), b"")
            ctx.result.executions.append(nxt)
    # Reads only: the cheapest first (a task of any other kind has its next fire planned), the schedule
    # (two sub-messages) last.
    planned = False
    if not task.next_fire_ms and task.state == common_pb2.TASK_SCHEDULED and not ex.manual:
        sched = task.spec.schedule
        if sched.WhichOneof("kind") == "fixed_delay":
            planned = True
            if sched.fixed_delay.stop_on_failure and state != common_pb2.EXECUTION_SUCCEEDED:
                firing.set_plan(task, firing.Planned(None))
            else:
                plan_fixed_delay(ctx, task, ctx.now)
    # The search indexes' state is read once per transaction (raft.stats.Batch), or not at all (savepoints).
    searchable = ctx.stats is not None and ctx.stats.settled_meta(txn, META_INDEXED) is not None
    stored = put_task_same_spec(txn, task16, task, task_before, indexed=searchable)
    if planned:
        # The task's next run is due soon after now (its delay), a time whose part of the due index the
        # leader loaded into its wheel already: it learns of it from this result. A handler that answers
        # with a task of its own replaces it afterwards, or holds it already (a Fire reads its task into
        # the result's field and changes it there: never overwritten here).
        if ctx.bytes_only:
            ctx.answer_task = stored
        elif not ctx.unread and not ctx.result.HasField("task"):
            ctx.result.task.CopyFrom(task)


def request_cancel(ctx: Ctx, ex: Execution, reason: str) -> None:
    """Ask the worker running `ex` to stop (the leader delivers the CancelRequest); its result, or the
    lease's expiry, then ends it as cancelled."""
    if not ex.cancel_requested_at_ms:
        ex.cancel_requested_at_ms = ctx.now
        ex.cancel_reason = reason
        put_execution(ctx.txn, id_bytes(ex.execution_id), ex)
    ctx.result.cancels.append(
        commands_pb2.CancelRequest(execution_id=ex.execution_id, token=ex.token, worker_id=ex.worker_id)
    )
    ctx.result.executions.append(ex)


def terminate(ctx: Ctx, ex: Execution, reason: str) -> None:
    """End `ex` now. A running one's token stops being current at once (its late result is stale) and
    its worker is told to kill it."""
    if ex.state == common_pb2.EXECUTION_RUNNING:
        ctx.result.cancels.append(
            commands_pb2.CancelRequest(execution_id=ex.execution_id, token=ex.token, worker_id=ex.worker_id)
        )
        if ctx.events is not None:
            ctx.audit("revoke", execution_id=ex.execution_id, token=token_text(ex.token), reason=reason)
    finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, reason)


def cancel_execution(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = cmd.cancel_execution
    ex = get_execution(ctx.txn, id_bytes(c.execution_id, field="execution_id"))
    reason = c.reason or "cancelled on request"
    if ex.state == common_pb2.EXECUTION_RUNNING:
        request_cancel(ctx, ex, reason)
    elif ex.state in (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_BUFFERED):
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, reason)
    ctx.result.execution.CopyFrom(get_execution(ctx.txn, id_bytes(c.execution_id)))


def note_waiting(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    n = cmd.note_waiting
    if not n.execution_id:
        _note_unfired(ctx, n)
        return
    exec16 = id_bytes(n.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected(Code.INVALID_STATE, f"execution {n.execution_id} is not pending")
    ex.waiting_reason = n.reason[:500]
    put_execution(ctx.txn, exec16, ex)
    # The fire ledger says it too ("why didn't it run?"): the record of that nominal time gets the reason.
    key = firing.ledger_key(id_bytes(ex.task_id), ex.nominal_time_ms)
    raw = ctx.txn.get("ledger", key)
    if raw is not None:
        rec = common_pb2.FireRecord()
        rec.ParseFromString(raw)
        rec.reason = ex.waiting_reason
        ctx.txn.put("ledger", key, rec.SerializeToString(deterministic=True))
    ctx.result.execution.CopyFrom(ex)


def _note_unfired(ctx: Ctx, n: commands_pb2.NoteWaiting) -> None:
    """The leader could not fire `n.task_id` at `n.nominal_time_ms` yet (its Fire failed inside apply):
    the fire ledger records it as fire_failed with the reason, until an outcome replaces it."""
    task16 = id_bytes(n.task_id, field="task_id")
    get_task(ctx.txn, task16)
    if n.nominal_time_ms <= 0:
        raise InvalidArgument("nominal_time_ms", "must be a time (Unix milliseconds)")
    if ctx.txn.get("ledger", firing.ledger_key(task16, n.nominal_time_ms)) is not None:
        raise Rejected(Code.INVALID_STATE, f"task {n.task_id} has an outcome at {n.nominal_time_ms} already")
    firing.record(ctx.txn, task16, n.nominal_time_ms, common_pb2.FIRE_FAILED, ctx.now, reason=n.reason[:500])


def expire_pending(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    x = cmd.expire_pending
    exec16 = id_bytes(x.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected(Code.INVALID_STATE, f"execution {x.execution_id} is not pending")
    task = task_of(ctx, ex)
    dep_deadline = task.spec.dependency_deadline_ms
    days = ctx.answers(ex.task_id, task.spec).day_bounds
    unmet = deps.unmet(ctx.txn, task, ex.nominal_time_ms, days=days) if task.spec.depends_on else ""
    if unmet and dep_deadline and ctx.now >= ex.fired_at_ms + dep_deadline:
        finish(ctx, ex, common_pb2.EXECUTION_FAILED, f"dependencies unmet after {dep_deadline} ms: {unmet}")
    else:
        deadline = task.spec.start_deadline_ms
        if not deadline or ctx.now < ex.fired_at_ms + deadline:
            raise Rejected(Code.NOT_DUE, f"execution {x.execution_id} is within its deadlines")
        finish(
            ctx, ex, common_pb2.EXECUTION_EXPIRED, f"not started within {deadline} ms of its fire: {x.reason}"
        )
    ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))


__all__ = ["cancel_execution", "expire_pending", "finish", "note_waiting", "request_cancel", "terminate"]
