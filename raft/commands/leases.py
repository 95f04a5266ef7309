"""Lease commands: Grant (an attempt starts on a worker, with a fencing token), Complete (its result),
ExpireLease (no renewal came). Results and expiries carrying a token that is not the current one are
rejected `stale_token` (I5: records.get_current).

An attempt that failed is retried after its backoff (raft.retry) or ends the execution, as a dead letter
when the task has a retry policy; a lease that ended before its payload began is granted again with the
same attempt number (`_not_started`).
"""

from __future__ import annotations

from cronraft import bounds
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps, features, firing, retry
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx, Execution, task_of, token_text
from cronraft.raft.commands.dead_letters import dead_letter
from cronraft.raft.commands.executions import finish
from cronraft.raft.records import (
    Indexed,
    get_current,
    get_execution,
    indexed,
    pending_key,
    put_execution,
    read_epoch,
)
from cronraft.raft.rejection import Code, Rejected

DEFAULT_MAX_ATTEMPTS = 3


MAX_TAIL_BYTES = 64 * 1024


MAX_RETURN_BYTES = 64 * 1024


MAX_ATTEMPT_HISTORY = 20


# An execution whose leases keep ending before the payload began is granted again this many times; past
# that, such an ending counts as a failed attempt, so that a worker that never starts anything cannot
# keep one execution cycling forever.
MAX_REGRANTS = 100


_OUTCOME_NAMES = frozenset(common_pb2.AttemptOutcome.values())


_OUTCOME_STATE = {
    common_pb2.ATTEMPT_SUCCEEDED: common_pb2.EXECUTION_SUCCEEDED,
    common_pb2.ATTEMPT_FAILED: common_pb2.EXECUTION_FAILED,
    common_pb2.ATTEMPT_TIMED_OUT: common_pb2.EXECUTION_TIMED_OUT,
    common_pb2.ATTEMPT_CANCELLED: common_pb2.EXECUTION_CANCELLED,
    common_pb2.ATTEMPT_REFUSED: common_pb2.EXECUTION_FAILED,
}


def _outcome(value: common_pb2.AttemptOutcome.ValueType) -> str:
    return common_pb2.AttemptOutcome.Name(value) if value in _OUTCOME_NAMES else str(value)


def grant(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    g = cmd.grant
    exec16 = id_bytes(g.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected(Code.INVALID_STATE, f"execution {g.execution_id} is not pending")
    term = read_epoch(ctx.txn, ctx.stats).term
    if term == 0:
        raise Rejected(Code.NO_EPOCH, "no leader epoch committed yet")
    task = task_of(ctx, ex)
    refusal = grant_refusal(ctx, ex, task, g.lead_ms)
    if refusal is not None:
        raise refusal
    ctx.txn.delete("pending", pending_key(ex, exec16))
    before = indexed(ex)
    lease(ctx, ex, g, term)
    put_execution(ctx.txn, exec16, ex, before)
    leased(ctx, ex, exec16)


def grant_refusal(
    ctx: Ctx, ex: Execution, task: common_pb2.Task, lead_ms: int, *, lead: int | None = None
) -> Rejected | None:
    """Why the pending execution `ex` of `task` may not be leased now, an epoch being in force (None:
    it may). `lead`: `firing.fire_lead(task, lead_ms)` when the caller has it already (a Fire)."""
    if lead is None:
        lead = firing.fire_lead(task, lead_ms)
    if ex.not_before_ms > ctx.now + lead:
        return Rejected(Code.BACKOFF, f"execution {ex.execution_id} may not start before {ex.not_before_ms}")
    if lead:  # a lead is for a task with neither dependencies nor a concurrency limit (firing.fire_lead)
        return None
    spec = task.spec
    if spec.depends_on:
        waiting = deps.unmet(ctx.txn, task, ex.nominal_time_ms, days=ctx.answers(ex.task_id, spec).day_bounds)
        if waiting:
            return Rejected(Code.DEPENDENCIES_UNMET, waiting)
    if spec.max_concurrency:
        running = sum(
            1
            for e in firing.active_executions(ctx.txn, id_bytes(ex.task_id))
            if e.state == common_pb2.EXECUTION_RUNNING
        )
        if running >= spec.max_concurrency:
            return Rejected(Code.CONCURRENCY_LIMIT, f"task {ex.task_id} already runs {running} executions")
    return None


def lease(ctx: Ctx, ex: Execution, g: commands_pb2.Grant, term: int) -> None:
    """The next attempt of `ex` (pending, allowed: grant_refusal) leased to `g`'s worker, token (the
    epoch's `term`, this entry's index): the execution changed in memory; the caller stores it."""
    ex.state = common_pb2.EXECUTION_RUNNING
    ex.waiting_reason = ""
    ex.attempt += 1
    ex.worker_id = g.worker_id
    ex.worker_incarnation = g.worker_incarnation
    token = ex.token
    token.term = term
    token.index = ctx.index
    ex.leased_at_ms = ctx.now


def leased(ctx: Ctx, ex: Execution, exec16: bytes, *, result: bool = True) -> None:
    """After `lease`, with `ex` stored: its `running` entry, the result (unless the caller already put
    `ex` there: `result=False`), the audit record."""
    ctx.txn.put("running", exec16, b"")
    if result and not ctx.unread:
        ctx.result.execution.CopyFrom(ex)
    if ctx.events is not None:
        ctx.audit(
            "grant",
            execution_id=ex.execution_id,
            task_id=ex.task_id,
            nominal_ms=ex.nominal_time_ms,
            token=token_text(ex.token),
            worker_id=ex.worker_id,
            attempt=ex.attempt,
        )


def complete(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = cmd.complete
    exec16 = id_bytes(c.execution_id, field="execution_id")
    r = c.result
    # The leader's result answers the execution as it ends. Wanted as bytes only, the plain end of an
    # attempt leaves it in `ctx.answer` (`finish(answer=True)`: serialized once); else it is read into the
    # result's field and changed there (a refusal replaces the whole result).
    bytes_only = ctx.bytes_only
    answer = None if ctx.unread or bytes_only else ctx.result.execution
    try:
        ex = get_current(ctx.txn, exec16, c.token, answer)
    except Rejected as e:
        if ctx.events is not None:
            ctx.audit(
                "complete",
                execution_id=c.execution_id,
                token=token_text(c.token),
                accepted=False,
                reason=e.code,
                outcome=_outcome(r.outcome),
            )
        raise
    if r.outcome == common_pb2.ATTEMPT_NOT_STARTED and ex.regrants < MAX_REGRANTS:
        before = indexed(ex)  # as stored: `_summary` adds an attempt (a worker of the index's)
        _summary(ex, r.outcome, 0, 0, r.finished_at_ms, error=r.error)
        _not_started(ctx, ex, exec16, r.error or "ended before its payload began", before)
    else:
        ended = _end_attempt(ctx, ex, exec16, r)
        if answer is not None and ended is not ex:
            answer.CopyFrom(ended)  # as stored by the dead letter (read again)
        ex = ended
    if bytes_only and ctx.answer is None:  # an end other than the plain one: the result's field, as above
        ctx.result.execution.CopyFrom(ex)
    if ctx.events is not None:
        ctx.audit(
            "complete",
            execution_id=c.execution_id,
            token=token_text(c.token),
            accepted=True,
            reason=common_pb2.ExecutionState.Name(ex.state),
            outcome=_outcome(r.outcome),
        )


def _end_attempt(ctx: Ctx, ex: Execution, exec16: bytes, r: common_pb2.AttemptResult) -> Execution:
    """Record the result of an attempt that ran: the execution ends, or waits for its retry."""
    exit_code, started, finished = r.exit_code, r.started_at_ms, r.finished_at_ms  # each read once
    ex.exit_code = exit_code
    ex.started_at_ms = started
    ex.finished_at_ms = finished
    ex.stdout_tail = r.stdout_tail[-MAX_TAIL_BYTES:]  # bytes fields read as bytes: a slice is bytes
    ex.stderr_tail = r.stderr_tail[-MAX_TAIL_BYTES:]
    ex.return_value = r.return_value[:MAX_RETURN_BYTES]
    outcome, error = r.outcome, r.error
    refused = _keep_result(ctx, ex, exec16, r.result)
    if refused:  # the worker should have said so already; a result is never cut, so the attempt failed
        outcome = common_pb2.ATTEMPT_FAILED if outcome == common_pb2.ATTEMPT_SUCCEEDED else outcome
        error = f"{error}; {refused}" if error else refused
    _summary(ex, outcome, exit_code, started, finished, error=error)
    state = _OUTCOME_STATE.get(outcome, common_pb2.EXECUTION_FAILED)
    if ex.cancel_requested_at_ms and state != common_pb2.EXECUTION_SUCCEEDED:
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, error or ex.cancel_reason)
    elif state in (common_pb2.EXECUTION_FAILED, common_pb2.EXECUTION_TIMED_OUT):
        task = task_of(ctx, ex)
        # A refusal by the worker's policy is final: the same payload would be refused again (issue 13).
        why = (
            "refused by the worker's policy"
            if outcome == common_pb2.ATTEMPT_REFUSED
            else retry.retry_reason(task, ex, outcome, exit_code, DEFAULT_MAX_ATTEMPTS)
        )
        if not why:
            # A retry is a replicated decision: the execution waits for its backoff, then any worker.
            ctx.txn.delete("running", exec16)
            ex.state = common_pb2.EXECUTION_PENDING
            ex.error = error[:4096]
            ex.worker_id = ""
            ex.worker_incarnation = ""
            ex.not_before_ms = ctx.now + retry.backoff_ms(task.spec.retry, ex.execution_id, ex.attempt)
            ctx.txn.put("pending", pending_key(ex, exec16), b"")
            put_execution(ctx.txn, exec16, ex)
            ctx.result.executions.append(ex)
        else:
            finish(ctx, ex, state, error)
            if task.spec.HasField("retry"):
                ex = dead_letter(ctx, task, exec16, why, ex)  # `ex` as `finish` stored it: not read again
    else:
        finish(ctx, ex, state, error, exec16=exec16, answer=ctx.bytes_only)  # `ex` as it ends: the answer
    return ex


def _keep_result(ctx: Ctx, ex: Execution, exec16: bytes, data: bytes) -> str:
    """Store what the attempt handed back ($CRONRAFT_RESULT_FILE) in `results`, in place of an earlier
    attempt's: an execution's result is its last attempt's. Over the bound stamped by the leader
    (`[limits] max_result_bytes`; the hard bound without one), nothing is kept and the refusal is
    returned. Nothing is kept, nor refused, while the cluster's feature level lacks "results" (raft.features:
    a release without results ignores them; an older leader may still forward a newer worker's)."""
    active = (
        features.is_active(ctx.txn, features.RESULTS)
        if ctx.stats is None
        else ctx.stats.has(ctx.txn, features.RESULTS)
    )
    if not active:
        return ""
    bound = bounds.MAX_RESULT_BYTES
    stamped = 0 if ctx.limits is None else ctx.limits.max_result_bytes
    if 0 < stamped < bound:
        bound = stamped
    refused = ""
    if len(data) > bound:
        refused = f"result of {len(data)} bytes is over max_result_bytes ({bound}): not kept"
        data = b""
    # `result_size` written only when it changes (most attempts hand nothing back, as the one before).
    if data:
        ctx.txn.put("results", exec16, data)
        ex.result_size = len(data)
    elif ex.result_size:
        ctx.txn.delete("results", exec16)
        ex.result_size = 0
    return refused


def _not_started(ctx: Ctx, ex: Execution, exec16: bytes, why: str, before: Indexed) -> None:
    """The current lease of `ex` ended before its payload began: nothing ran, so this is not an attempt.
    The execution waits for a new grant (a new token) with the same attempt number, whatever its
    guarantee (at_most_once too), unless a cancel was asked for, which it now honours. Ending it instead,
    as a failed or lost attempt, dropped due fires whose held start a fault had left unconfirmed (issue
    17: a leader isolated, or a worker paused, just before the due instant). `before`: `indexed(ex)` of
    the stored execution (records.put_execution: not read again)."""
    if ex.cancel_requested_at_ms:
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, f"{ex.cancel_reason} (before it started)")
        return
    ctx.txn.delete("running", exec16)
    ex.state = common_pb2.EXECUTION_PENDING
    ex.attempt -= 1
    ex.regrants += 1
    ex.worker_id = ""
    ex.worker_incarnation = ""
    ex.error = why[:4096]
    ctx.txn.put("pending", pending_key(ex, exec16), b"")
    put_execution(ctx.txn, exec16, ex, before)
    ctx.result.executions.append(ex)


def _summary(ex: Execution, outcome: int, exit_code: int, started: int, finished: int, *, error: str) -> None:
    # Built in place (`add`), not built then copied in (`append`): every Complete adds one. A field left
    # at zero is not given (the same bytes: proto3 writes no zero), each keyword costs (a successful attempt
    # has neither exit code nor error).
    attempts = ex.attempts
    summary = attempts.add(
        attempt=ex.attempt,
        worker_id=ex.worker_id,
        outcome=common_pb2.AttemptOutcome.ValueType(outcome),
        started_at_ms=started,
        finished_at_ms=finished,
    )
    if exit_code:
        summary.exit_code = exit_code
    if error:
        summary.error = error[:500]
    if len(attempts) > MAX_ATTEMPT_HISTORY:
        del attempts[: len(attempts) - MAX_ATTEMPT_HISTORY]


def expire_lease(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    x = cmd.expire_lease
    exec16 = id_bytes(x.execution_id, field="execution_id")
    try:
        ex = get_current(ctx.txn, exec16, x.token)
    except Rejected:
        if ctx.events is not None:
            ctx.audit("expire", execution_id=x.execution_id, token=token_text(x.token), accepted=False)
        raise
    before = indexed(ex)  # as stored
    task = task_of(ctx, ex)
    allowed = retry.attempts_allowed(task, ex, DEFAULT_MAX_ATTEMPTS)
    if x.unstarted and ex.regrants < MAX_REGRANTS:
        why = "lease expired before its payload began (never confirmed to the worker)"
        _summary(ex, common_pb2.ATTEMPT_NOT_STARTED, 0, 0, 0, error=why)
        _not_started(ctx, ex, exec16, why, before)
        ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))
        if ctx.events is not None:
            ctx.audit(
                "expire",
                execution_id=x.execution_id,
                token=token_text(x.token),
                accepted=True,
                unstarted=True,
            )
        return
    # The attempt's outcome says it was lost (before the feature: no outcome, the error alone said it).
    lost = (
        common_pb2.ATTEMPT_LOST
        if features.is_active(ctx.txn, features.SCHEDULE_FIXES)
        else common_pb2.ATTEMPT_OUTCOME_UNSPECIFIED
    )
    _summary(ex, lost, 0, 0, 0, error="lease expired: no renewal from the worker")
    if ex.cancel_requested_at_ms:
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, f"{ex.cancel_reason}; its worker stopped answering")
    elif ex.guarantee == common_pb2.AT_MOST_ONCE:
        finish(
            ctx,
            ex,
            common_pb2.EXECUTION_LOST,
            "lease expired; at_most_once executions are never re-dispatched",
        )
    elif ex.attempt >= allowed:
        finish(ctx, ex, common_pb2.EXECUTION_LOST, f"lease expired on attempt {ex.attempt} of {allowed}")
        if task.spec.HasField("retry"):  # `ex` as `finish` stored it: not read again
            dead_letter(ctx, task, exec16, f"lease expired on attempt {ex.attempt} of {allowed}", ex)
    else:
        ctx.txn.delete("running", exec16)
        ex.state = common_pb2.EXECUTION_PENDING
        ex.worker_id = ""
        ex.worker_incarnation = ""
        ctx.txn.put("pending", pending_key(ex, exec16), b"")
        put_execution(ctx.txn, exec16, ex, before)
    ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))
    if ctx.events is not None:
        ctx.audit("expire", execution_id=x.execution_id, token=token_text(x.token), accepted=True)


__all__ = ["DEFAULT_MAX_ATTEMPTS", "MAX_REGRANTS", "complete", "expire_lease", "grant"]
