"""Retention commands: DeleteTask (a task and its history) and Prune (one bounded step of retention).
The work is raft.retention's; these handlers put its report into the result.
"""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2
from cronraft.raft import retention
from cronraft.raft.commands.context import Ctx


def delete_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Delete a task and its history (raft.retention). What it was (`retention.summary`: not its whole
    spec, since the dedup table keeps the answer a day) is answered in `result.tasks`; `result.task`
    holds only its id, so that the leader drops it from its wheel."""
    d = cmd.delete_task
    task = retention.delete_task(ctx.txn, d.task_id, force=d.force, now_ms=ctx.now, result=ctx.result)
    ctx.result.tasks.append(retention.summary(task))
    ctx.result.task.task_id = task.task_id
    if ctx.events is not None:
        ctx.audit(
            "delete_task",
            task_id=task.task_id,
            executions=ctx.result.pruned.executions,
            terminated=len(ctx.result.cancels),
        )


def prune(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """One bounded step of retention (raft.retention)."""
    retention.prune(ctx.txn, cmd.prune, ctx.now, ctx.result.pruned)


__all__ = ["delete_task", "prune"]
