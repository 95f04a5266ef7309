"""Task commands: CreateTask, ImportTasks, UpdateTask, CancelTask, PauseTask, ResumeTask.

A task's lifecycle: stored with its first plan (firing.plan_from), re-planned on edit (never fired
retroactively), paused and resumed (missed nominal times recorded `paused`, or replayed through the
misfire policy), cancelled (waiting executions end; fires committed ahead of their due time withdrawn).
DeleteTask is retention's (commands.pruning).
"""

from __future__ import annotations

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps, features, firing, quota, schedule
from cronraft.raft.codec import id_bytes, id_text
from cronraft.raft.commands.context import Ctx, Execution, Task, in_namespace, max_runs_reached
from cronraft.raft.commands.executions import finish, terminate
from cronraft.raft.kv import Txn
from cronraft.raft.records import drop_execution, fire_key, get_task, pending_key, put_task
from cronraft.raft.rejection import Code, Rejected
from cronraft.raft.validate import validate_spec

# An ImportTasks command creates at most this many tasks (daemon.bulk splits larger imports).
MAX_IMPORT_BATCH = 1_000


def _check_calendars(txn: Txn, spec: common_pb2.TaskSpec) -> None:
    """The calendars a task names exist in the task's own namespace."""
    for i, name in enumerate(spec.schedule.calendars):
        if firing.read_calendar(txn, name, spec.namespace) is None:
            raise Rejected(
                Code.INVALID_ARGUMENT,
                f"no calendar named {name!r}{in_namespace(spec.namespace)}",
                field=f"spec.schedule.calendars[{i}]",
            )


def _check_new_task(ctx: Ctx, task_id: str, task16: bytes, spec: common_pb2.TaskSpec) -> None:
    """Every check of a task creation (raises Rejected / InvalidArgument); writes nothing."""
    if ctx.txn.get("tasks", task16) is not None:
        raise Rejected(Code.ALREADY_EXISTS, f"task {task_id} already exists")
    validate_spec(spec)
    _check_calendars(ctx.txn, spec)
    deps.check(ctx.txn, task_id, spec)


def _put_new_task(ctx: Ctx, task_id: str, task16: bytes, spec: common_pb2.TaskSpec) -> Task:
    """Store a checked new task with its first plan (may record calendar skips in its ledger)."""
    task = Task(
        task_id=task_id,
        created_at_ms=ctx.now,
        updated_at_ms=ctx.now,
        version=ctx.index,
        state=common_pb2.TASK_SCHEDULED,
    )
    task.spec.CopyFrom(spec)
    ans = ctx.answers(task_id, spec)  # the leader's instants when the command carries them
    first = ans.first_fire(spec.schedule, ctx.now)
    start = (ctx.now, "the task was created")
    firing.set_plan(task, firing.plan_from(ctx.txn, task, first, ctx.now, answers=ans, start=start))
    put_task(ctx.txn, task16, task, old=None)
    return task


def create_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = cmd.create_task
    task16 = id_bytes(c.task_id, field="task_id")
    _check_new_task(ctx, c.task_id, task16, c.spec)
    quota.check_tasks(ctx.txn, ctx.limits)
    ctx.result.task.CopyFrom(_put_new_task(ctx, c.task_id, task16, c.spec))


def import_tasks(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Create every task of the batch, or none: all items are checked before the first is written.
    Item i gets the id `first_task_id + i`; an error names the item (`specs[i].<field>`)."""
    c = cmd.import_tasks
    if not c.specs or len(c.specs) > MAX_IMPORT_BATCH:
        raise InvalidArgument("specs", f"a batch holds 1 to {MAX_IMPORT_BATCH} specs, not {len(c.specs)}")
    first = int.from_bytes(id_bytes(c.first_task_id, field="first_task_id"), "big")
    if first + len(c.specs) > 1 << 128:
        raise InvalidArgument("first_task_id", "too large: the batch's ids would overflow 128 bits")
    items = []
    for i, spec in enumerate(c.specs):
        task16 = (first + i).to_bytes(16, "big")
        task_id = id_text(task16)
        try:
            _check_new_task(ctx, task_id, task16, spec)
        except InvalidArgument as e:
            raise InvalidArgument(_item_field(i, e.field), e.problem) from None
        except Rejected as r:
            rej = r.rejection
            field = _item_field(i, rej.field) if rej.field else f"specs[{i}]"
            raise Rejected(Code(rej.code), rej.problem, field=field) from None
        items.append((task_id, task16, spec))
    quota.check_tasks(ctx.txn, ctx.limits, len(items))
    for task_id, task16, spec in items:
        task = _put_new_task(ctx, task_id, task16, spec)
        if task.state == common_pb2.TASK_SCHEDULED and 0 < firing.due_of(task) < c.report_due_until_ms:
            ctx.result.tasks.append(task)
    ctx.result.imported.first_task_id = c.first_task_id
    ctx.result.imported.count = len(items)


def _item_field(i: int, field: str) -> str:
    """`spec.schedule.at` of item 3 -> `specs[3].schedule.at`."""
    return f"specs[{i}].{field.removeprefix('spec.')}"


def update_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """A new spec, effective from the next nominal time after max(now, last fired): an edit never
    fires retroactively, and executions already fired are not touched."""
    u = cmd.update_task
    task16 = id_bytes(u.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        raise Rejected(Code.INVALID_STATE, f"task {u.task_id} is cancelled")
    if u.expected_version and u.expected_version != old.version:
        raise Rejected(
            Code.VERSION_MISMATCH,
            f"task {u.task_id} is at version {old.version}, not {u.expected_version}: it changed meanwhile",
        )
    validate_spec(u.spec)
    _check_calendars(ctx.txn, u.spec)
    deps.check(ctx.txn, u.task_id, u.spec)
    task = Task()
    task.CopyFrom(old)
    task.spec.CopyFrom(u.spec)
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    task.catchup_fired = 0
    if task.state == common_pb2.TASK_COMPLETED:
        task.state = common_pb2.TASK_SCHEDULED  # a new schedule may have fires left
    # A paused task gets its next fire from the new schedule too, which its resume then walks from (the
    # release before the feature kept the old schedule's, which fired once after the resume). Nominal
    # times of the old schedule that passed while paused, before the edit, are not recorded.
    replan = task.state == common_pb2.TASK_SCHEDULED or (
        task.state == common_pb2.TASK_PAUSED
        and bool(old.next_fire_ms)
        and features.is_active(ctx.txn, features.SCHEDULE_FIXES)
    )
    if replan:
        after = max(ctx.now, old.last_fired_nominal_ms)
        sched = u.spec.schedule
        ans = ctx.answers(u.task_id, u.spec)
        if sched.WhichOneof("kind") == "fixed_delay":
            first: int | None = (
                schedule.next_fixed_delay(sched, old.last_finished_ms or ctx.now)
                if not firing.active_executions(ctx.txn, task16)
                else None
            )
            task.next_fire_ms = 0
        elif sched.WhichOneof("kind") == "at" and not old.last_fired_nominal_ms:
            first = ans.first_fire(sched, ctx.now)
        else:
            first = ans.next_fire(sched, after)
        plan = firing.plan_from(
            ctx.txn,
            task,
            first,
            ctx.now,
            not_before_ms=old.last_fired_nominal_ms,
            answers=ans,
            start=(ctx.now, "the task was edited"),
        )
        if first is None and sched.WhichOneof("kind") == "fixed_delay":
            task.next_fire_ms = task.next_due_ms = 0  # waits for the running execution to end
        else:
            firing.set_plan(task, plan, max_runs_reached(task))
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


def cancel_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    task16 = id_bytes(cmd.cancel_task.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        ctx.result.task.CopyFrom(old)
        return
    task = Task()
    task.CopyFrom(old)
    task.state = common_pb2.TASK_CANCELLED
    task.next_fire_ms = task.next_due_ms = 0
    task.updated_at_ms = ctx.now
    task.version = ctx.index
    put_task(ctx.txn, task16, task, old=old)
    # Waiting executions will never start now (buffered first, so none is promoted); running ones
    # finish, or are cancelled one by one with CancelExecution.
    waiting = sorted(
        (e for e in firing.active_executions(ctx.txn, task16) if e.state != common_pb2.EXECUTION_RUNNING),
        key=lambda e: e.state != common_pb2.EXECUTION_BUFFERED,
    )
    for ex in waiting:
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, "task cancelled before the execution started")
    _withdraw_fired_ahead(ctx, task16, "task cancelled before the execution's due time")
    ctx.result.task.CopyFrom(get_task(ctx.txn, task16))


def _withdraw_fired_ahead(ctx: Ctx, task16: bytes, reason: str) -> None:
    """End the executions that fired ahead (firing.may_fire_ahead) and whose due time is still to come:
    a cancel or pause committed before the due time must stop that fire, as it would have without the
    lead. Their leases end at once (a late result is stale) and their workers are told to drop them."""
    for ex in firing.active_executions(ctx.txn, task16):
        if ex.attempt <= 1 and ex.not_before_ms > ctx.now:  # a first attempt held for its due time
            terminate(ctx, ex, reason)


def pause_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    p = cmd.pause_task
    task16 = id_bytes(p.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state not in (common_pb2.TASK_SCHEDULED, common_pb2.TASK_PAUSED):
        held = [
            e.execution_id
            for e in firing.active_executions(ctx.txn, task16)
            if e.attempt <= 1 and e.not_before_ms > ctx.now
        ]
        hint = (
            f"; its last fire committed ahead of its due time (fire_lead_ms): cancel execution {held[0]} "
            "to stop it"
            if held
            else ""
        )
        raise Rejected(
            Code.INVALID_STATE,
            f"task {p.task_id} is {common_pb2.TaskState.Name(old.state)}, not scheduled{hint}",
        )
    task = Task()
    task.CopyFrom(old)
    if old.state != common_pb2.TASK_PAUSED:
        task.paused_at_ms = ctx.now
    task.state = common_pb2.TASK_PAUSED
    task.pause_note = p.note[:1000]
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    _unfire_held(ctx, task16, task)
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(get_task(ctx.txn, task16))


def _unfire_held(ctx: Ctx, task16: bytes, task: Task) -> None:
    """Undo the fires of a task being paused that committed ahead of their due time (first attempts
    still held): without the lead they would not have fired yet, so they must not be lost either. Each
    such execution is removed (its lease ends at once; a late result finds no execution), its nominal
    time is recorded `paused`, and the task's plan goes back to the earliest of them: a resume before
    that due time fires it as if nothing had happened, a later one applies the paused rule. (Ending them
    cancelled, as before, lost that nominal time for good once the task was resumed.)"""
    txn = ctx.txn
    held = [
        e
        for e in firing.active_executions(txn, task16)
        if e.attempt <= 1 and e.not_before_ms > ctx.now and not e.manual
    ]
    if not held:
        return
    for ex in held:
        exec16 = id_bytes(ex.execution_id)
        if ex.state == common_pb2.EXECUTION_RUNNING:
            ctx.result.cancels.append(
                commands_pb2.CancelRequest(
                    execution_id=ex.execution_id, token=ex.token, worker_id=ex.worker_id
                )
            )
            txn.delete("running", exec16)
        elif ex.state == common_pb2.EXECUTION_PENDING:
            txn.delete("pending", pending_key(ex, exec16))
        if txn.delete("active", firing.active_key(task16, exec16)):
            quota.deactivated(txn, task16)
        txn.delete("fires", fire_key(task16, ex.nominal_time_ms))
        drop_execution(txn, exec16, ex)
        firing.record(
            txn, task16, ex.nominal_time_ms, common_pb2.PAUSED, ctx.now, reason="paused before its due time"
        )
        task.fire_count = max(0, task.fire_count - 1)
        task.stored_executions = max(0, task.stored_executions - 1)
        gone = Execution()
        gone.CopyFrom(ex)
        gone.state = common_pb2.EXECUTION_CANCELLED  # for the leader: its lease and slot are released
        gone.error = "withdrawn: task paused before its due time"
        ctx.result.executions.append(gone)
        if ctx.events is not None:
            ctx.audit(
                "unfire", execution_id=ex.execution_id, task_id=ex.task_id, nominal_ms=ex.nominal_time_ms
            )
    first = min(e.nominal_time_ms for e in held)
    task.last_fired_nominal_ms = min(task.last_fired_nominal_ms, first - 1)
    ans = ctx.answers(task.task_id, task.spec)
    firing.set_plan(task, firing.plan_from(txn, task, first, ctx.now, answers=ans))


def resume_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Resume fires. Without replay, nominal times that passed while paused are recorded as `paused`
    and the next future one fires; with replay, they are due now and the misfire policy decides."""
    r = cmd.resume_task
    task16 = id_bytes(r.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state != common_pb2.TASK_PAUSED:
        raise Rejected(Code.INVALID_STATE, f"task {r.task_id} is not paused")
    task = Task()
    task.CopyFrom(old)
    task.state = common_pb2.TASK_SCHEDULED
    task.pause_note = ""
    task.paused_at_ms = 0
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    task.catchup_fired = 0
    sched = task.spec.schedule
    ans = ctx.answers(r.task_id, task.spec)  # the leader's instants when the command carries them
    if not r.replay_missed and old.next_fire_ms and firing.due_of(old) < ctx.now:
        nominal: int | None = old.next_fire_ms
        recorded = 0
        while nominal is not None and nominal < ctx.now and recorded < firing.MAX_WALK:
            if recorded < firing.MAX_RECORDS_PER_COMMAND:
                firing.record(
                    ctx.txn, task16, nominal, common_pb2.PAUSED, ctx.now, reason=old.pause_note or "paused"
                )
            recorded += 1
            nominal = ans.next_fire(sched, nominal)
        if nominal is not None and nominal < ctx.now:
            nominal = ans.next_fire(sched, ctx.now)
        if sched.WhichOneof("kind") == "fixed_delay" and features.is_active(ctx.txn, features.SCHEDULE_FIXES):
            # Fixed delay has no next time of its own (next_fire: None), so the walk above ended its chain
            # and the task completed: its run that came due while paused is recorded `paused`, and the
            # next one is due now, as when nothing was planned (below). (Below the feature, as the
            # release before it: completed.)
            nxt = schedule.next_fixed_delay(sched, old.last_finished_ms or ctx.now)
            nominal = None if nxt is None else max(nxt, ctx.now)
        start = (ctx.now, "the task was resumed")
        plan = firing.plan_from(ctx.txn, task, nominal, ctx.now, answers=ans, start=start)
        firing.set_plan(task, plan, max_runs_reached(task))
    elif not old.next_fire_ms and sched.WhichOneof("kind") != "fixed_delay":
        firing.set_plan(task, firing.Planned(None))
    elif not old.next_fire_ms and not firing.active_executions(ctx.txn, task16):
        # Fixed delay plans its next run when one ends (finish), but not while paused: a run that ended
        # during the pause left nothing planned, and the chain stopped for good on resume. The delay
        # counts from that end; if it passed while paused, the run is due now.
        nxt = schedule.next_fixed_delay(sched, old.last_finished_ms or ctx.now)
        if nxt is not None:
            nxt = max(nxt, ctx.now)
        plan = firing.plan_from(ctx.txn, task, nxt, ctx.now, answers=ans)
        firing.set_plan(task, plan, max_runs_reached(task))
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


__all__ = [
    "MAX_IMPORT_BATCH",
    "cancel_task",
    "create_task",
    "import_tasks",
    "pause_task",
    "resume_task",
    "update_task",
]
