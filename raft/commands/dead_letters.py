"""Dead-letter commands: RedriveDeadLetters, PurgeDeadLetters, and `dead_letter`, which files an
execution whose retries are exhausted (called by commands.leases). The dead-letter index is raft.retry's.
"""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import firing, quota, retry
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx, Execution, Task, task_of
from cronraft.raft.records import get_execution, indexed, pending_key, put_execution


def dead_letter(ctx: Ctx, task: Task, exec16: bytes, reason: str, ex: Execution | None = None) -> Execution:
    """File the ended execution `exec16` of `task` as a dead letter; the execution as stored now (marked).
    `ex`: the execution as stored, unchanged since (the caller's, just ended: `finish`), which is then not
    read again and is the one marked and returned. The execution is read once at most: its index entries
    are moved from what was read (records.put_execution's `before`), not read again."""
    if ex is None:
        ex = get_execution(ctx.txn, exec16)
    before = indexed(ex)  # as stored (the mark moves no index entry)
    ex.dead_lettered = True
    put_execution(ctx.txn, exec16, ex, before)
    letter = common_pb2.DeadLetter(
        execution_id=ex.execution_id,
        task_id=ex.task_id,
        task_name=task.spec.name,
        reason=f"{common_pb2.ExecutionState.Name(ex.state).removeprefix('EXECUTION_').lower()}: {reason}"[
            :1000
        ],
        attempts=ex.attempt,
        dead_at_ms=ctx.now,
        stdout_tail=ex.stdout_tail[-4096:],
        stderr_tail=ex.stderr_tail[-4096:],
        nominal_time_ms=ex.nominal_time_ms,
    )
    retry.put_dead_letter(ctx.txn, letter)
    ctx.result.dead_letters.append(letter)
    return ex


def redrive_dead_letters(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Run dead-lettered executions again: the same execution (same id, same nominal time) gets a new
    budget of attempts; its history is kept."""
    r = cmd.redrive_dead_letters
    limit = min(r.limit or 100, 1000)
    ids = list(r.execution_ids) or retry.dead_letter_ids(ctx.txn, r.task_id, limit)
    for execution_id in ids[:limit]:
        ex: Execution | None = None  # read once: the quota reads it; taking the letter changes no execution
        if ctx.limits is not None and ctx.txn.get("dlq", id_bytes(execution_id, field="execution_ids")):
            ex = get_execution(ctx.txn, id_bytes(execution_id))
            refusal = quota.execution_refusal(ctx.txn, ctx.limits, task_of(ctx, ex), new=False)
            if refusal is not None:
                if not ctx.result.executions:
                    raise refusal
                break  # those left stay dead letters
        letter = retry.take_dead_letter(ctx.txn, execution_id)
        if letter is None:
            continue
        exec16 = id_bytes(execution_id)
        if ex is None:
            ex = get_execution(ctx.txn, exec16)
        before = indexed(ex)  # as stored: put_execution does not read it again
        task16 = id_bytes(ex.task_id)
        ex.state = common_pb2.EXECUTION_PENDING
        ex.dead_lettered = False
        ex.redrives += 1
        ex.error = ""
        ex.worker_id = ""
        ex.worker_incarnation = ""
        ex.not_before_ms = 0
        ex.completed_at_ms = 0
        put_execution(ctx.txn, exec16, ex, before)
        ctx.txn.put("active", firing.active_key(task16, exec16), b"")
        quota.activated(ctx.txn, task16)
        ctx.txn.put("pending", pending_key(ex, exec16), b"")
        letter.redriven_as = execution_id
        ctx.result.dead_letters.append(letter)
        ctx.result.executions.append(ex)


def purge_dead_letters(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    p = cmd.purge_dead_letters
    limit = min(p.limit or 1000, 10_000)
    ids = list(p.execution_ids) or retry.dead_letter_ids(ctx.txn, p.task_id, limit)
    for execution_id in ids[:limit]:
        raw = ctx.txn.get("dlq", id_bytes(execution_id, field="execution_ids"))
        if raw is None:
            continue
        letter = common_pb2.DeadLetter()
        letter.ParseFromString(raw)
        if p.before_ms and not p.execution_ids and letter.dead_at_ms >= p.before_ms:
            continue
        retry.take_dead_letter(ctx.txn, execution_id)
        ctx.result.dead_letters.append(letter)


__all__ = ["dead_letter", "purge_dead_letters", "redrive_dead_letters"]
