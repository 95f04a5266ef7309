"""The leader's side of plans (raft.fireplan): before a command is proposed, the schedule answers its
apply will ask for are computed here, with the leader's versions, and put into `Command.plan`. Pure: it
reads the store through a transaction and writes nothing.

Only once the cluster's feature level has "schedule_plans" (`attach_all` checks it: an older replica would
ignore the plan and compute for itself, which is what every replica does without one). A command whose
apply asks nothing version-dependent gets no plan (raft.fireplan.needs_plan).

How the answers are found, per command kind:
- the leader's frequent commands (Fire, Grant, ExpirePending, Complete, ExpireLease) run the very planning
  functions their handler runs (misfire, the next plan, the logical date), through a `Recorder`;
- a client's commands (create, import, update, pause, resume, trigger, backfill, cancel of an execution)
  are rarer and their planning is interleaved with their effects: the handler itself runs on a
  transaction that drops its writes (`Discard`), recording what it asks.
Whatever apply then asks that the plan lacks (the state changed meanwhile) it computes itself (`misses`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features, firing, misfire, schedule
from cronraft.raft.codec import id_bytes, id_text
from cronraft.raft.commands import HANDLERS, Ctx
from cronraft.raft.fireplan import Discard, PlanBuilder, needs_plan
from cronraft.raft.kv import Txn
from cronraft.raft.records import get_execution, get_task

__all__ = ["attach", "attach_all"]

Command = commands_pb2.Command
Builder = Callable[[PlanBuilder, Command], None]


def attach_all(txn: Txn, cmds: Iterable[Command]) -> int:
    """Give each command the plan its apply needs, if the cluster uses plans; how many got one."""
    if not features.is_active(txn, features.SCHEDULE_PLANS):
        return 0
    return sum(attach(txn, cmd) for cmd in cmds)


def attach(txn: Txn, cmd: Command) -> bool:
    """Fill `cmd.plan` (replacing any) when its apply asks something version-dependent; whether it did."""
    kind = cmd.WhichOneof("body") or ""
    build = _LEADER.get(kind) or (_dry_run if kind in _CLIENT else None)
    if build is None:
        return False
    cmd.ClearField("plan")
    builder = PlanBuilder(txn, cmd.plan)  # recorded into the command itself
    # A command its apply will refuse (a bad spec, a task gone), or a planning path that raises: what was
    # recorded so far is kept, and apply computes the rest as without a plan.
    with contextlib.suppress(Exception):
        build(builder, cmd)
    if not cmd.plan.tasks:
        cmd.ClearField("plan")
        return False
    return True


# ---------------------------------------------------------------------------- the leader's commands


def _fire(b: PlanBuilder, cmd: Command) -> None:
    """raft.commands.fires.fire's questions: misfire, a DST shift, the next plan (fixed delay: when the
    fire makes no execution, planned at once)."""
    f, now = cmd.fire, cmd.stamped_at_ms
    task = get_task(b.txn, id_bytes(f.task_id))
    if not needs_plan(task.spec):
        return
    ans = b.answers(b.txn, f.task_id, task.spec)
    sched = task.spec.schedule
    # raft.commands.fires._decide_misfire's questions (the feature level read only when they differ).
    due = firing.due_of(task)
    if misfire.rolls_late(task, now, due) and features.is_active(b.txn, features.SCHEDULE_FIXES):
        decision, _ = misfire.decide_rolled_misfire(b.txn, task, f.nominal_time_ms, now, ans, due_ms=due)
    else:
        decision = misfire.decide_misfire(task, f.nominal_time_ms, now, ans, due_ms=due)
        if decision.missed and features.is_active(b.txn, features.SCHEDULE_FIXES):
            misfire.skip_excluded(b.txn, task, decision, ans)
    if decision.fire_nominal is not None and sched.WhichOneof("kind") == "cron":
        ans.dst_shifted(sched, decision.fire_nominal)
    if sched.WhichOneof("kind") == "fixed_delay":
        nxt = schedule.next_fixed_delay(sched, now)
        firing.plan_from(Discard(b.txn), task, nxt, now, answers=ans)
    else:
        nxt = ans.next_fire(sched, decision.resume_after)
        firing.plan_from(Discard(b.txn), task, nxt, now, not_before_ms=firing.due_of(task), answers=ans)


def _execution_task(b: PlanBuilder, execution_id: str) -> tuple[common_pb2.Execution, common_pb2.Task]:
    ex = get_execution(b.txn, id_bytes(execution_id))
    return ex, get_task(b.txn, id_bytes(ex.task_id))


def _logical_day(b: PlanBuilder, ex: common_pb2.Execution, task: common_pb2.Task) -> None:
    if task.spec.depends_on and needs_plan(task.spec):
        b.answers(b.txn, ex.task_id, task.spec).day_bounds(task.spec.schedule, ex.nominal_time_ms)


def _fixed_delay_next(b: PlanBuilder, task: common_pb2.Task, now: int) -> None:
    """An execution that ends plans its fixed-delay task's next run (raft.commands.executions.finish)."""
    sched = task.spec.schedule
    if sched.WhichOneof("kind") == "fixed_delay" and needs_plan(task.spec):
        ans = b.answers(b.txn, task.task_id, task.spec)
        firing.plan_from(Discard(b.txn), task, schedule.next_fixed_delay(sched, now), now, answers=ans)


def _grant(b: PlanBuilder, cmd: Command) -> None:
    _logical_day(b, *_execution_task(b, cmd.grant.execution_id))


def _expire_pending(b: PlanBuilder, cmd: Command) -> None:
    ex, task = _execution_task(b, cmd.expire_pending.execution_id)
    _logical_day(b, ex, task)
    _fixed_delay_next(b, task, cmd.stamped_at_ms)


def _ends(field: str) -> Builder:
    def build(b: PlanBuilder, cmd: Command) -> None:
        _, task = _execution_task(b, getattr(cmd, field).execution_id)
        _fixed_delay_next(b, task, cmd.stamped_at_ms)

    return build


def _create(b: PlanBuilder, cmd: Command) -> None:
    _first_plan(b, cmd.create_task.task_id, cmd.create_task.spec, cmd.stamped_at_ms)


def _import(b: PlanBuilder, cmd: Command) -> None:
    first = int.from_bytes(id_bytes(cmd.import_tasks.first_task_id), "big")
    for i, spec in enumerate(cmd.import_tasks.specs):
        task_id = id_text((first + i).to_bytes(16, "big"))
        with contextlib.suppress(Exception):  # a spec apply refuses (the whole batch, then): no plan
            _first_plan(b, task_id, spec, cmd.stamped_at_ms)


def _first_plan(b: PlanBuilder, task_id: str, spec: common_pb2.TaskSpec, now: int) -> None:
    """raft.commands.tasks._put_new_task's questions: the first fire and its plan."""
    if not needs_plan(spec):
        return
    ans = b.answers(b.txn, task_id, spec)
    task = common_pb2.Task(task_id=task_id, spec=spec)
    start = (now, "the task was created")
    firing.plan_from(Discard(b.txn), task, ans.first_fire(spec.schedule, now), now, answers=ans, start=start)


# ------------------------------------------------------------------------------ clients' commands


def _dry_run(b: PlanBuilder, cmd: Command) -> None:
    """Run the command's handler on a transaction that drops its writes, recording its questions."""
    ctx = Ctx(Discard(b.txn), 0, 0, cmd.stamped_at_ms, commands_pb2.CommandResult(), plans=b)
    if cmd.HasField("limits"):
        ctx.limits = cmd.limits
    HANDLERS[cmd.WhichOneof("body") or ""](ctx, cmd)


_LEADER: dict[str, Builder] = {
    "fire": _fire,
    "grant": _grant,
    "expire_pending": _expire_pending,
    "complete": _ends("complete"),
    "expire_lease": _ends("expire_lease"),
    "create_task": _create,
    "import_tasks": _import,
}
_CLIENT = frozenset(
    {"update_task", "pause_task", "resume_task", "trigger_task", "backfill_task", "cancel_execution"}
)
