"""What every command handler works with: the apply context `Ctx`, and helpers shared by the subjects.

A handler is `handler(ctx, cmd)`: it reads and writes the store through `ctx.txn` (the entry's write
transaction, or a savepoint of it), fills `ctx.result`, and refuses by raising `Rejected` (raft.rejection)
or `InvalidArgument` before its first write. Time and ids come from the command (`ctx.now`) or are derived
from the log position (`ctx.new_id`); nothing here reads a clock or a random source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import firing, schedule, stats
from cronraft.raft.answers import LOCAL, Answers
from cronraft.raft.codec import id_bytes
from cronraft.raft.fireplan import PlanBuilder, PlanIndex
from cronraft.raft.kv import Txn
from cronraft.raft.validate import stored_namespace

Task = common_pb2.Task
Execution = common_pb2.Execution
CommandResult = commands_pb2.CommandResult


@dataclass(slots=True)  # built for every command applied: slots make it cheaper to build and read
class Ctx:
    # raft.state builds it with its fields in this order, positionally (cheaper than keywords).
    txn: Txn
    index: int
    position: int
    now: int
    result: CommandResult
    # Audit events of this command (raft.audit), or None when nobody collects them (one branch each).
    events: list[dict[str, Any]] | None = None
    # The quotas the proposing leader stamped into the command (raft.quota), or None: no quota.
    limits: commands_pb2.Limits | None = None
    # The command's plan (raft.fireplan: the leader's schedule answers), or, on the leader, the plan being
    # recorded for a command not proposed yet; None: every answer is computed here.
    plans: PlanIndex | PlanBuilder | None = None
    # The entry's statistics records, written when the entry ends (raft.stats.Batch), or None: at once.
    stats: stats.Batch | None = None
    # Nobody reads this command's result (a follower's Fire, Grant or Complete: raft.state's `unread`),
    # so the hot paths skip copying tasks and executions into it. Never set for a command whose result
    # is stored (a request id's dedup record, an audit record) nor for a handler that reads its result.
    unread: bool = False
    # The result is wanted as bytes only (a leader's command with neither a request id nor an audit record:
    # raft.state serializes it into the entry's BatchResult, and nothing reads the message). A handler may
    # then leave in `answer` and `answer_task` records it just stored, that its result would hold (below).
    bytes_only: bool = False
    # The bytes of an execution as just stored (records.put_execution), which is both the result's
    # `execution` and the first of its `executions` (a leader's Complete: the execution as it ended,
    # commands.leases; a leader's Fire: the new one, commands.fires). raft.state splices them into the
    # result's bytes (raft.result_bytes.answered) instead of copying the execution into the result (with
    # upb a copy serializes and parses) and serializing it twice more. Set only with `bytes_only`, before
    # anything is added to `executions`, and only once the execution changes no more in this command.
    answer: bytes | None = None
    # The same for a task as just stored (records.put_task_same_spec), the result's `task` (a leader's
    # Fire: the task as the fire leaves it). Set only with `bytes_only`, after the task's last change.
    answer_task: bytes | None = None
    _ids: int = 0  # the ids `new_id` derived so far

    def new_id(self) -> str:
        self._ids += 1
        return firing.derived_id(self.now, self.index, self.position, self._ids)

    def answers(self, task_id: str, spec: common_pb2.TaskSpec) -> Answers:
        """The schedule answers for `task_id` with `spec` (raft.answers): the plan's when it matches."""
        if self.plans is None:
            return LOCAL
        return self.plans.answers(self.txn, task_id, spec)

    def audit(self, kind: str, **fields: Any) -> None:
        # Call sites test `ctx.events is not None` first, so that a run without audit builds no fields.
        if self.events is not None:
            self.events.append({"ev": "apply", "kind": kind, "index": self.index, **fields})


def token_text(t: common_pb2.FencingToken) -> str:
    """A fencing token as audit events write it: "term.index"."""
    return f"{t.term}.{t.index}"


def task_of(ctx: Ctx, ex: Execution) -> Task:
    """The task of `ex` (an empty one if it was deleted meanwhile)."""
    raw = ctx.txn.get("tasks", id_bytes(ex.task_id))
    task = Task()
    if raw is not None:
        task.ParseFromString(raw)
    return task


def in_namespace(namespace: str) -> str:
    """The words " in namespace NS" for messages about a namespace other than the default one; none for
    it, so that its messages read as before namespaces (results are stored for dedup)."""
    return f" in namespace {namespace}" if stored_namespace(namespace) else ""


def max_runs_reached(task: Task) -> bool:
    m = task.spec.schedule.max_runs
    return bool(m) and task.fire_count >= m


def plan_fixed_delay(ctx: Ctx, task: Task, finished_at: int) -> None:
    """Plan a fixed-delay task's next run, `finished_at` + its delay."""
    nxt = schedule.next_fixed_delay(task.spec.schedule, finished_at)
    plan = firing.plan_from(ctx.txn, task, nxt, ctx.now, answers=ctx.answers(task.task_id, task.spec))
    firing.set_plan(task, plan, max_runs_reached(task))


Handler = Callable[[Ctx, commands_pb2.Command], None]

__all__ = [
    "CommandResult",
    "Ctx",
    "Execution",
    "Handler",
    "Task",
    "in_namespace",
    "max_runs_reached",
    "plan_fixed_delay",
    "task_of",
    "token_text",
]
