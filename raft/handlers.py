"""The command handlers of the state machine: one function per replicated command.

Every handler checks everything that can reject the command before it writes, so a rejected command
leaves no partial effect in the entry's transaction. Time and ids come from the command (`Ctx.now`) or
are derived from the log position (`firing.derived_id`); nothing here reads a clock or a random source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps, firing, output, quota, retention, retry, schedule
from cronraft.raft.codec import id_bytes, id_text
from cronraft.raft.kv import Txn
from cronraft.raft.records import (
    META_EPOCH,
    Rejected,
    calendar_include_key,
    fire_key,
    get_current,
    get_execution,
    get_task,
    pending_key,
    put_task,
    read_epoch,
)
from cronraft.raft.validate import stored_namespace, validate_spec

Task = common_pb2.Task
Execution = common_pb2.Execution
CommandResult = commands_pb2.CommandResult

DEFAULT_MAX_ATTEMPTS = 3
MAX_TAIL_BYTES = 64 * 1024
MAX_BACKFILL = 1_000
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


@dataclass
class Ctx:
    txn: Txn
    index: int
    position: int
    now: int
    result: CommandResult
    _ids: int = 0
    # Audit events of this command (raft.audit), or None when nobody collects them (one branch each).
    events: list[dict[str, Any]] | None = None
    # The quotas the proposing leader stamped into the command (raft.quota), or None: no quota.
    limits: commands_pb2.Limits | None = None

    def new_id(self) -> str:
        self._ids += 1
        return firing.derived_id(self.now, self.index, self.position, self._ids)

    def audit(self, kind: str, **fields: Any) -> None:
        # Call sites test `ctx.events is not None` first, so that a run without audit builds no fields.
        if self.events is not None:
            self.events.append({"ev": "apply", "kind": kind, "index": self.index, **fields})


def _token(t: common_pb2.FencingToken) -> str:
    return f"{t.term}.{t.index}"


def _outcome(value: common_pb2.AttemptOutcome.ValueType) -> str:
    return common_pb2.AttemptOutcome.Name(value) if value in _OUTCOME_NAMES else str(value)


Handler = Callable[[Ctx, commands_pb2.Command], None]


# ------------------------------------------------------------------------------------------ tasks


def _in_namespace(namespace: str) -> str:
    """The words " in namespace NS" for messages about a namespace other than the default one; none for
    it, so that its messages read as before namespaces (results are stored for dedup)."""
    return f" in namespace {namespace}" if stored_namespace(namespace) else ""


def _check_calendars(txn: Txn, spec: common_pb2.TaskSpec) -> None:
    """The calendars a task names exist in the task's own namespace."""
    for i, name in enumerate(spec.schedule.calendars):
        if firing.read_calendar(txn, name, spec.namespace) is None:
            raise Rejected(
                "invalid_argument",
                f"spec.schedule.calendars[{i}]: no calendar named {name!r}{_in_namespace(spec.namespace)}",
            )


def _check_new_task(ctx: Ctx, task_id: str, task16: bytes, spec: common_pb2.TaskSpec) -> None:
    """Every check of a task creation (raises Rejected / InvalidArgument); writes nothing."""
    if ctx.txn.get("tasks", task16) is not None:
        raise Rejected("already_exists", f"task {task_id} already exists")
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
    first = schedule.first_fire(spec.schedule, ctx.now)
    firing.set_plan(task, firing.plan_from(ctx.txn, task, first, ctx.now))
    put_task(ctx.txn, task16, task, old=None)
    return task


def create_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = cmd.create_task
    task16 = id_bytes(c.task_id, field="task_id")
    _check_new_task(ctx, c.task_id, task16, c.spec)
    quota.check_tasks(ctx.txn, ctx.limits)
    ctx.result.task.CopyFrom(_put_new_task(ctx, c.task_id, task16, c.spec))


MAX_IMPORT_BATCH = 1_000


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
            field, sep, problem = str(r).partition(": ")
            message = f"{_item_field(i, field)}: {problem}" if sep else f"specs[{i}]: {r}"
            raise Rejected(r.code, message) from None
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
        raise Rejected("invalid_state", f"task {u.task_id} is cancelled")
    if u.expected_version and u.expected_version != old.version:
        raise Rejected(
            "version_mismatch",
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
    if task.state == common_pb2.TASK_SCHEDULED:
        after = max(ctx.now, old.last_fired_nominal_ms)
        sched = u.spec.schedule
        if sched.WhichOneof("kind") == "fixed_delay":
            first: int | None = (
                schedule.next_fixed_delay(sched, old.last_finished_ms or ctx.now)
                if not firing.active_executions(ctx.txn, task16)
                else None
            )
            task.next_fire_ms = 0
        elif sched.WhichOneof("kind") == "at" and not old.last_fired_nominal_ms:
            first = schedule.first_fire(sched, ctx.now)
        else:
            first = schedule.next_fire(sched, after)
        plan = firing.plan_from(ctx.txn, task, first, ctx.now, not_before_ms=old.last_fired_nominal_ms)
        if first is None and sched.WhichOneof("kind") == "fixed_delay":
            task.next_fire_ms = task.next_due_ms = 0  # waits for the running execution to end
        else:
            firing.set_plan(task, plan, _max_runs_reached(task))
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
            "invalid_state",
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
        txn.delete("execs", exec16)
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
    firing.set_plan(task, firing.plan_from(txn, task, first, ctx.now))


def resume_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Resume fires. Without replay, nominal times that passed while paused are recorded as `paused`
    and the next future one fires; with replay, they are due now and the misfire policy decides."""
    r = cmd.resume_task
    task16 = id_bytes(r.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state != common_pb2.TASK_PAUSED:
        raise Rejected("invalid_state", f"task {r.task_id} is not paused")
    task = Task()
    task.CopyFrom(old)
    task.state = common_pb2.TASK_SCHEDULED
    task.pause_note = ""
    task.paused_at_ms = 0
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    task.catchup_fired = 0
    sched = task.spec.schedule
    if not r.replay_missed and old.next_fire_ms and firing.due_of(old) < ctx.now:
        nominal: int | None = old.next_fire_ms
        recorded = 0
        while nominal is not None and nominal < ctx.now and recorded < firing.MAX_WALK:
            if recorded < firing.MAX_RECORDS_PER_COMMAND:
                firing.record(
                    ctx.txn, task16, nominal, common_pb2.PAUSED, ctx.now, reason=old.pause_note or "paused"
                )
            recorded += 1
            nominal = schedule.next_fire(sched, nominal)
        if nominal is not None and nominal < ctx.now:
            nominal = schedule.next_fire(sched, ctx.now)
        firing.set_plan(task, firing.plan_from(ctx.txn, task, nominal, ctx.now), _max_runs_reached(task))
    elif not old.next_fire_ms and sched.WhichOneof("kind") != "fixed_delay":
        firing.set_plan(task, firing.Planned(None))
    elif not old.next_fire_ms and not firing.active_executions(ctx.txn, task16):
        # Fixed delay plans its next run when one ends (finish), but not while paused: a run that ended
        # during the pause left nothing planned, and the chain stopped for good on resume. The delay
        # counts from that end; if it passed while paused, the run is due now.
        nxt = schedule.next_fixed_delay(sched, old.last_finished_ms or ctx.now)
        if nxt is not None:
            nxt = max(nxt, ctx.now)
        firing.set_plan(task, firing.plan_from(ctx.txn, task, nxt, ctx.now), _max_runs_reached(task))
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


# ------------------------------------------------------------------------------------------ fires


def fire(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    f = cmd.fire
    txn = ctx.txn
    task16 = id_bytes(f.task_id, field="task_id")
    exec16 = id_bytes(f.execution_id, field="execution_id")
    old = get_task(txn, task16)
    if old.state != common_pb2.TASK_SCHEDULED:
        raise Rejected("invalid_state", f"task {f.task_id} is not scheduled")
    if f.nominal_time_ms != old.next_fire_ms:
        # Already fired (a retried or duplicated proposal) or rescheduled meanwhile: I3.
        raise Rejected("not_due", f"task {f.task_id} is not due at {f.nominal_time_ms}")
    if txn.get("fires", fire_key(task16, f.nominal_time_ms)) is not None:
        raise Rejected("already_fired", f"task {f.task_id} already fired at {f.nominal_time_ms}")
    if txn.get("execs", exec16) is not None:
        raise Rejected("already_exists", f"execution {f.execution_id} already exists")
    if ctx.now + firing.fire_lead(old, f.lead_ms) < firing.due_of(old):
        raise Rejected("not_due", f"task {f.task_id} is due at {firing.due_of(old)}, not yet at {ctx.now}")

    task = Task()
    task.CopyFrom(old)
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    sched = task.spec.schedule
    decision = firing.decide_misfire(old, f.nominal_time_ms, ctx.now)
    policy = (
        common_pb2.MisfirePolicy.Name(task.spec.misfire or common_pb2.MISFIRE_FIRE_ALL).lower()
        if decision.missed
        else ""
    )
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
            common_pb2.FireRecord(
                task_id=f.task_id, nominal_time_ms=missed, outcome=common_pb2.MISSED_DOWNTIME
            )
        )
    due = firing.due_of(old)
    if decision.fire_nominal is not None:
        nominal = decision.fire_nominal
        outcome = common_pb2.FIRED
        reason = ""
        if nominal == f.nominal_time_ms and sched.calendars and due != nominal:
            outcome, reason = common_pb2.ROLLED, "rolled by calendar"
        elif sched.WhichOneof("kind") == "cron" and schedule.dst_shifted(sched, nominal):
            outcome, reason = common_pb2.DST_SHIFTED, "moved out of a DST gap"
        if decision.catchup:
            reason = (reason + "; " if reason else "") + "catch-up after a misfire"
        task.catchup_fired = old.catchup_fired + 1 if decision.catchup else 0
        start_execution(
            ctx,
            task,
            nominal,
            f.execution_id,
            outcome=outcome,
            reason=reason,
            due_ms=due,
            # Fired ahead: nobody starts it before its due time.
            not_before_ms=due if due > ctx.now else 0,
        )
    if sched.WhichOneof("kind") == "fixed_delay":
        # The next run is planned when this one ends (finish); nothing is due meanwhile.
        task.next_fire_ms = task.next_due_ms = 0
        if decision.fire_nominal is None or not ctx.result.HasField("execution"):
            _plan_fixed_delay(ctx, task, ctx.now)
    else:
        nxt = schedule.next_fire(sched, decision.resume_after)
        plan = firing.plan_from(txn, task, nxt, ctx.now, not_before_ms=due)
        firing.set_plan(task, plan, _max_runs_reached(task))
        if task.state == common_pb2.TASK_COMPLETED:
            _record_window_end(ctx, task16, task, decision.resume_after)
    put_task(txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


def _record_window_end(ctx: Ctx, task16: bytes, task: Task, after: int) -> None:
    """The task completed because its window or run budget ended: the first nominal time it would
    have had next is recorded as outside_window, so `explain` says why it stopped."""
    sched = task.spec.schedule
    if sched.WhichOneof("kind") not in ("cron", "fixed_rate"):
        return
    unbounded = common_pb2.Schedule()
    unbounded.CopyFrom(sched)
    unbounded.end_at_ms = 0
    unbounded.max_runs = 0
    nxt = schedule.next_fire(unbounded, after)
    if nxt is None:
        return
    if sched.max_runs and task.fire_count >= sched.max_runs:
        why = f"max_runs {sched.max_runs} reached"
    else:
        why = f"after end_at {sched.end_at_ms}"
    firing.record(ctx.txn, task16, nxt, common_pb2.OUTSIDE_WINDOW, ctx.now, reason=why)


def _max_runs_reached(task: Task) -> bool:
    m = task.spec.schedule.max_runs
    return bool(m) and task.fire_count >= m


def _plan_fixed_delay(ctx: Ctx, task: Task, finished_at: int) -> None:
    nxt = schedule.next_fixed_delay(task.spec.schedule, finished_at)
    firing.set_plan(task, firing.plan_from(ctx.txn, task, nxt, ctx.now), _max_runs_reached(task))


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
) -> Execution | None:
    """Create the execution of one fire, as the task's overlap policy says; record the outcome."""
    txn = ctx.txn
    task16 = id_bytes(task.task_id)
    exec16 = id_bytes(execution_id, field="execution_id")
    refusal = quota.execution_refusal(txn, ctx.limits, task)
    if refusal is not None:
        # A scheduled fire over a quota creates no execution and the schedule goes on (a client's
        # trigger or backfill is refused before it gets here).
        firing.record(txn, task16, nominal, common_pb2.SKIPPED_LIMIT, ctx.now, reason=str(refusal)[:500])
        return None
    policy = task.spec.overlap or common_pb2.OVERLAP_ALLOW_ALL
    # Only the other policies look at the active executions: allow_all (the default) skips the scan.
    active = firing.active_executions(txn, task16) if policy != common_pb2.OVERLAP_ALLOW_ALL else []
    state = common_pb2.EXECUTION_PENDING
    if force_buffer:
        # Backfill: unless overlap is allowed, the runs queue up behind whatever is active.
        if active and policy != common_pb2.OVERLAP_ALLOW_ALL:
            state = common_pb2.EXECUTION_BUFFERED
    elif active and policy != common_pb2.OVERLAP_ALLOW_ALL:
        busy = (
            f"execution {active[0].execution_id} is {common_pb2.ExecutionState.Name(active[0].state).lower()}"
        )
        buffered = [e for e in active if e.state == common_pb2.EXECUTION_BUFFERED]
        if policy == common_pb2.OVERLAP_SKIP:
            firing.record(txn, task16, nominal, common_pb2.SKIPPED_OVERLAP, ctx.now, reason=busy)
            return None
        if policy == common_pb2.OVERLAP_BUFFER_ONE:
            if buffered:
                firing.record(txn, task16, nominal, common_pb2.BUFFER_DROPPED, ctx.now, reason=busy)
                return None
            state = common_pb2.EXECUTION_BUFFERED
        elif policy == common_pb2.OVERLAP_BUFFER_ALL:
            if len(buffered) >= firing.MAX_BUFFERED:
                firing.record(txn, task16, nominal, common_pb2.BUFFER_DROPPED, ctx.now, reason="buffer full")
                return None
            state = common_pb2.EXECUTION_BUFFERED
        elif policy == common_pb2.OVERLAP_CANCEL_OTHER:
            # Ask the running ones to stop; waiting ones are superseded; the new one waits its turn.
            running = False
            for e in sorted(active, key=lambda e: e.state != common_pb2.EXECUTION_BUFFERED):
                if e.state == common_pb2.EXECUTION_RUNNING:
                    request_cancel(ctx, e, "cancelled by a newer fire (overlap cancel_other)")
                    running = True
                else:
                    finish(
                        ctx,
                        e,
                        common_pb2.EXECUTION_CANCELLED,
                        "superseded by a newer fire (overlap cancel_other)",
                    )
            state = common_pb2.EXECUTION_BUFFERED if running else common_pb2.EXECUTION_PENDING
        elif policy == common_pb2.OVERLAP_TERMINATE_OTHER:
            for e in sorted(active, key=lambda e: e.state != common_pb2.EXECUTION_BUFFERED):
                terminate(ctx, e, "terminated by a newer fire (overlap terminate_other)")
            state = common_pb2.EXECUTION_PENDING
    ex = Execution(
        execution_id=execution_id,
        task_id=task.task_id,
        nominal_time_ms=nominal,
        fired_at_ms=ctx.now,
        state=state,
        guarantee=task.spec.guarantee,
        priority=task.spec.priority,
        manual=manual,
        not_before_ms=not_before_ms,
    )
    txn.put("execs", exec16, ex.SerializeToString())
    txn.put("fires", fire_key(task16, nominal), exec16)
    txn.put("active", firing.active_key(task16, exec16), b"")
    quota.activated(txn, task16)
    if state == common_pb2.EXECUTION_BUFFERED:
        txn.put("buffered", firing.buffered_key(task16, nominal, exec16), b"")
    else:
        txn.put("pending", pending_key(ex, exec16), b"")
    task.last_fired_nominal_ms = max(task.last_fired_nominal_ms, nominal)
    task.fire_count += 1
    task.stored_executions += 1
    retention.trim_on_fire(txn, task16, task)  # keeps the task within its count of executions
    firing.record(
        txn,
        task16,
        nominal,
        outcome,
        ctx.now,
        reason=reason,
        execution_id=execution_id,
        actual_ms=due_ms or nominal,
    )
    ctx.result.execution.CopyFrom(ex)
    ctx.result.executions.append(ex)
    if ctx.events is not None:
        ctx.audit("fire", execution_id=execution_id, task_id=task.task_id, nominal_ms=nominal, manual=manual)
    return ex


def trigger_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Fire now, outside the schedule (the next scheduled fire is unchanged). Overlap rules apply:
    a manual run does not bypass them (a known Dkron complaint)."""
    t = cmd.trigger_task
    task16 = id_bytes(t.task_id, field="task_id")
    id_bytes(t.execution_id, field="execution_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        raise Rejected("invalid_state", f"task {t.task_id} is cancelled")
    if ctx.txn.get("fires", fire_key(task16, ctx.now)) is not None:
        raise Rejected("already_fired", f"task {t.task_id} already fired at {ctx.now}")
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
        # The overlap policy said no: recorded in the ledger, answered without an execution.
        ctx.result.error_code = "skipped_overlap"
        ctx.result.error = (
            f"task {t.task_id}: an earlier execution is still active and the overlap policy skips"
        )
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


def backfill_task(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Fire every nominal time in [from, to] that has no ledger outcome yet, oldest first. Unless the
    task allows overlap, they run one after another (buffered)."""
    b = cmd.backfill_task
    task16 = id_bytes(b.task_id, field="task_id")
    old = get_task(ctx.txn, task16)
    if old.state == common_pb2.TASK_CANCELLED:
        raise Rejected("invalid_state", f"task {b.task_id} is cancelled")
    if b.from_ms <= 0 or b.to_ms < b.from_ms:
        raise Rejected("invalid_argument", "to_ms: must be >= from_ms > 0")
    if b.to_ms > ctx.now:
        raise Rejected("invalid_argument", "to_ms: a backfill covers the past only")
    limit = min(b.max_fires or 100, MAX_BACKFILL)
    sched = old.spec.schedule
    if sched.WhichOneof("kind") == "fixed_delay":
        raise Rejected("invalid_argument", "task: a fixed-delay task has no nominal times to backfill")
    task = Task()
    task.CopyFrom(old)
    task.version = ctx.index
    task.updated_at_ms = ctx.now
    nominal = schedule.next_fire(sched, b.from_ms - 1)
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
        nominal = schedule.next_fire(sched, nominal)
    # Backfill must not move the schedule: last_fired_nominal tracks scheduled fires only.
    task.last_fired_nominal_ms = old.last_fired_nominal_ms
    put_task(ctx.txn, task16, task, old=old)
    ctx.result.task.CopyFrom(task)


# ------------------------------------------------------------------------------------- executions


def finish(ctx: Ctx, ex: Execution, state: int, error: str = "") -> None:
    """Move an execution to a final state and keep its task in step: leave the active set, promote the
    oldest buffered execution once nothing else runs, and plan a fixed-delay task's next run."""
    txn = ctx.txn
    exec16 = id_bytes(ex.execution_id)
    task16 = id_bytes(ex.task_id)
    if ex.state == common_pb2.EXECUTION_PENDING:
        txn.delete("pending", pending_key(ex, exec16))
    elif ex.state == common_pb2.EXECUTION_RUNNING:
        txn.delete("running", exec16)
    elif ex.state == common_pb2.EXECUTION_BUFFERED:
        txn.delete("buffered", firing.buffered_key(task16, ex.nominal_time_ms, exec16))
    if txn.delete("active", firing.active_key(task16, exec16)):
        quota.deactivated(txn, task16)
    ex.state = common_pb2.ExecutionState.ValueType(state)
    if error:
        ex.error = error[:4096]
    ex.completed_at_ms = ctx.now
    txn.put("execs", exec16, ex.SerializeToString())
    ctx.result.executions.append(ex)

    raw = txn.get("tasks", task16)
    if raw is None:
        return
    old = Task()
    old.ParseFromString(raw)
    task = Task()
    task.CopyFrom(old)
    task.last_finished_ms = ctx.now
    others = firing.active_executions(txn, task16)
    # Buffered executions are active ones too: with none active, there is no buffer to look at.
    if others and not any(e.state != common_pb2.EXECUTION_BUFFERED for e in others):
        key = firing.oldest_buffered(txn, task16)
        if key is not None:
            nxt = get_execution(txn, key[24:40])
            txn.delete("buffered", key)
            nxt.state = common_pb2.EXECUTION_PENDING
            txn.put("execs", key[24:40], nxt.SerializeToString())
            txn.put("pending", pending_key(nxt, key[24:40]), b"")
            ctx.result.executions.append(nxt)
    sched = task.spec.schedule
    if (
        sched.WhichOneof("kind") == "fixed_delay"
        and task.state == common_pb2.TASK_SCHEDULED
        and not task.next_fire_ms
        and not ex.manual
    ):
        if sched.fixed_delay.stop_on_failure and state != common_pb2.EXECUTION_SUCCEEDED:
            firing.set_plan(task, firing.Planned(None))
        else:
            _plan_fixed_delay(ctx, task, ctx.now)
    put_task(txn, task16, task, old=old)


def request_cancel(ctx: Ctx, ex: Execution, reason: str) -> None:
    """Ask the worker running `ex` to stop (the leader delivers the CancelRequest); its result, or the
    lease's expiry, then ends it as cancelled."""
    if not ex.cancel_requested_at_ms:
        ex.cancel_requested_at_ms = ctx.now
        ex.cancel_reason = reason
        ctx.txn.put("execs", id_bytes(ex.execution_id), ex.SerializeToString())
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
            ctx.audit("revoke", execution_id=ex.execution_id, token=_token(ex.token), reason=reason)
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


def grant(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    g = cmd.grant
    exec16 = id_bytes(g.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected("invalid_state", f"execution {g.execution_id} is not pending")
    epoch = read_epoch(ctx.txn)
    if epoch.term == 0:
        raise Rejected("no_epoch", "no leader epoch committed yet")
    task = _task_of(ctx, ex)
    if ex.not_before_ms > ctx.now + firing.fire_lead(task, g.lead_ms):
        raise Rejected("backoff", f"execution {g.execution_id} may not start before {ex.not_before_ms}")
    if task.spec.depends_on:
        waiting = deps.unmet(ctx.txn, task, ex.nominal_time_ms)
        if waiting:
            raise Rejected("dependencies_unmet", waiting)
    if task.spec.max_concurrency:
        running = sum(
            1
            for e in firing.active_executions(ctx.txn, id_bytes(ex.task_id))
            if e.state == common_pb2.EXECUTION_RUNNING
        )
        if running >= task.spec.max_concurrency:
            raise Rejected("concurrency_limit", f"task {ex.task_id} already runs {running} executions")
    ctx.txn.delete("pending", pending_key(ex, exec16))
    ex.state = common_pb2.EXECUTION_RUNNING
    ex.waiting_reason = ""
    ex.attempt += 1
    ex.worker_id = g.worker_id
    ex.worker_incarnation = g.worker_incarnation
    ex.token.term = epoch.term
    ex.token.index = ctx.index
    ex.leased_at_ms = ctx.now
    ctx.txn.put("execs", exec16, ex.SerializeToString())
    ctx.txn.put("running", exec16, b"")
    ctx.result.execution.CopyFrom(ex)
    if ctx.events is not None:
        ctx.audit(
            "grant",
            execution_id=ex.execution_id,
            task_id=ex.task_id,
            nominal_ms=ex.nominal_time_ms,
            token=_token(ex.token),
            worker_id=ex.worker_id,
            attempt=ex.attempt,
        )


def _summary(ex: Execution, outcome: int, exit_code: int, started: int, finished: int, *, error: str) -> None:
    ex.attempts.append(
        common_pb2.AttemptSummary(
            attempt=ex.attempt,
            worker_id=ex.worker_id,
            outcome=common_pb2.AttemptOutcome.ValueType(outcome),
            exit_code=exit_code,
            started_at_ms=started,
            finished_at_ms=finished,
            error=error[:500],
        )
    )
    del ex.attempts[: max(0, len(ex.attempts) - MAX_ATTEMPT_HISTORY)]


def _task_of(ctx: Ctx, ex: Execution) -> Task:
    raw = ctx.txn.get("tasks", id_bytes(ex.task_id))
    task = Task()
    if raw is not None:
        task.ParseFromString(raw)
    return task


def complete(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = cmd.complete
    exec16 = id_bytes(c.execution_id, field="execution_id")
    r = c.result
    try:
        ex = get_current(ctx.txn, exec16, c.token)
    except Rejected as e:
        if ctx.events is not None:
            ctx.audit(
                "complete",
                execution_id=c.execution_id,
                token=_token(c.token),
                accepted=False,
                reason=e.code,
                outcome=_outcome(r.outcome),
            )
        raise
    if r.outcome == common_pb2.ATTEMPT_NOT_STARTED and ex.regrants < MAX_REGRANTS:
        _summary(ex, r.outcome, 0, 0, r.finished_at_ms, error=r.error)
        _not_started(ctx, ex, exec16, r.error or "ended before its payload began")
    else:
        ex = _end_attempt(ctx, ex, exec16, r)
    ctx.result.execution.CopyFrom(ex)  # as stored by finish, the retry, the dead letter or the re-grant
    if ctx.events is not None:
        ctx.audit(
            "complete",
            execution_id=c.execution_id,
            token=_token(c.token),
            accepted=True,
            reason=common_pb2.ExecutionState.Name(ctx.result.execution.state),
            outcome=_outcome(r.outcome),
        )


def _end_attempt(ctx: Ctx, ex: Execution, exec16: bytes, r: common_pb2.AttemptResult) -> Execution:
    """Record the result of an attempt that ran: the execution ends, or waits for its retry."""
    ex.exit_code = r.exit_code
    ex.started_at_ms = r.started_at_ms
    ex.finished_at_ms = r.finished_at_ms
    ex.stdout_tail = bytes(r.stdout_tail[-MAX_TAIL_BYTES:])
    ex.stderr_tail = bytes(r.stderr_tail[-MAX_TAIL_BYTES:])
    ex.return_value = bytes(r.return_value[:MAX_RETURN_BYTES])
    _summary(ex, r.outcome, r.exit_code, r.started_at_ms, r.finished_at_ms, error=r.error)
    state = _OUTCOME_STATE.get(r.outcome, common_pb2.EXECUTION_FAILED)
    if ex.cancel_requested_at_ms and state != common_pb2.EXECUTION_SUCCEEDED:
        finish(ctx, ex, common_pb2.EXECUTION_CANCELLED, r.error or ex.cancel_reason)
    elif state in (common_pb2.EXECUTION_FAILED, common_pb2.EXECUTION_TIMED_OUT):
        task = _task_of(ctx, ex)
        # A refusal by the worker's policy is final: the same payload would be refused again (issue 13).
        why = (
            "refused by the worker's policy"
            if r.outcome == common_pb2.ATTEMPT_REFUSED
            else retry.retry_reason(task, ex, r.outcome, r.exit_code, DEFAULT_MAX_ATTEMPTS)
        )
        if not why:
            # A retry is a replicated decision: the execution waits for its backoff, then any worker.
            ctx.txn.delete("running", exec16)
            ex.state = common_pb2.EXECUTION_PENDING
            ex.error = r.error[:4096]
            ex.worker_id = ""
            ex.worker_incarnation = ""
            ex.not_before_ms = ctx.now + retry.backoff_ms(task.spec.retry, ex.execution_id, ex.attempt)
            ctx.txn.put("pending", pending_key(ex, exec16), b"")
            ctx.txn.put("execs", exec16, ex.SerializeToString())
            ctx.result.executions.append(ex)
        else:
            finish(ctx, ex, state, r.error)
            if task.spec.HasField("retry"):
                _dead_letter(ctx, task, exec16, why)
                ex = get_execution(ctx.txn, exec16)
    else:
        finish(ctx, ex, state, r.error)
    return ex


def _not_started(ctx: Ctx, ex: Execution, exec16: bytes, why: str) -> None:
    """The current lease of `ex` ended before its payload began: nothing ran, so this is not an attempt.
    The execution waits for a new grant (a new token) with the same attempt number, whatever its
    guarantee (at_most_once too), unless a cancel was asked for, which it now honours. Ending it instead,
    as a failed or lost attempt, dropped due fires whose held start a fault had left unconfirmed (issue
    17: a leader isolated, or a worker paused, just before the due instant)."""
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
    ctx.txn.put("execs", exec16, ex.SerializeToString())
    ctx.result.executions.append(ex)


def _dead_letter(ctx: Ctx, task: Task, exec16: bytes, reason: str) -> None:
    ex = get_execution(ctx.txn, exec16)
    ex.dead_lettered = True
    ctx.txn.put("execs", exec16, ex.SerializeToString())
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


def expire_lease(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    x = cmd.expire_lease
    exec16 = id_bytes(x.execution_id, field="execution_id")
    try:
        ex = get_current(ctx.txn, exec16, x.token)
    except Rejected:
        if ctx.events is not None:
            ctx.audit("expire", execution_id=x.execution_id, token=_token(x.token), accepted=False)
        raise
    task = _task_of(ctx, ex)
    allowed = retry.attempts_allowed(task, ex, DEFAULT_MAX_ATTEMPTS)
    if x.unstarted and ex.regrants < MAX_REGRANTS:
        why = "lease expired before its payload began (never confirmed to the worker)"
        _summary(ex, common_pb2.ATTEMPT_NOT_STARTED, 0, 0, 0, error=why)
        _not_started(ctx, ex, exec16, why)
        ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))
        if ctx.events is not None:
            ctx.audit(
                "expire", execution_id=x.execution_id, token=_token(x.token), accepted=True, unstarted=True
            )
        return
    _summary(
        ex, common_pb2.ATTEMPT_OUTCOME_UNSPECIFIED, 0, 0, 0, error="lease expired: no renewal from the worker"
    )
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
        if task.spec.HasField("retry"):
            _dead_letter(ctx, task, exec16, f"lease expired on attempt {ex.attempt} of {allowed}")
    else:
        ctx.txn.delete("running", exec16)
        ex.state = common_pb2.EXECUTION_PENDING
        ex.worker_id = ""
        ex.worker_incarnation = ""
        ctx.txn.put("pending", pending_key(ex, exec16), b"")
        ctx.txn.put("execs", exec16, ex.SerializeToString())
    ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))
    if ctx.events is not None:
        ctx.audit("expire", execution_id=x.execution_id, token=_token(x.token), accepted=True)


def redrive_dead_letters(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    """Run dead-lettered executions again: the same execution (same id, same nominal time) gets a new
    budget of attempts; its history is kept."""
    r = cmd.redrive_dead_letters
    limit = min(r.limit or 100, 1000)
    ids = list(r.execution_ids) or retry.dead_letter_ids(ctx.txn, r.task_id, limit)
    for execution_id in ids[:limit]:
        if ctx.limits is not None and ctx.txn.get("dlq", id_bytes(execution_id, field="execution_ids")):
            ex = get_execution(ctx.txn, id_bytes(execution_id))
            refusal = quota.execution_refusal(ctx.txn, ctx.limits, _task_of(ctx, ex), new=False)
            if refusal is not None:
                if not ctx.result.executions:
                    raise refusal
                break  # those left stay dead letters
        letter = retry.take_dead_letter(ctx.txn, execution_id)
        if letter is None:
            continue
        exec16 = id_bytes(execution_id)
        ex = get_execution(ctx.txn, exec16)
        task16 = id_bytes(ex.task_id)
        ex.state = common_pb2.EXECUTION_PENDING
        ex.dead_lettered = False
        ex.redrives += 1
        ex.error = ""
        ex.worker_id = ""
        ex.worker_incarnation = ""
        ex.not_before_ms = 0
        ex.completed_at_ms = 0
        ctx.txn.put("execs", exec16, ex.SerializeToString())
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


# ------------------------------------------------------------------------------------- leadership


def epoch(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    cur = read_epoch(ctx.txn)
    if cmd.epoch.term == cur.term and cmd.epoch.leader_id == cur.leader_id:
        # The same leader proposing its epoch again: a retry after a proposal that timed out but did
        # apply. Refusing it made that leader step back while it still led the Raft group, and nothing
        # was dispatched until the next election (found by S4 at soak size: 4 minutes without a ready
        # leader). Applied, with nothing to change.
        return
    if cmd.epoch.term <= cur.term:
        raise Rejected("stale_epoch", f"epoch {cmd.epoch.term} is not newer than {cur.term}")
    ctx.txn.put("meta", META_EPOCH, cmd.epoch.SerializeToString())
    if ctx.events is not None:
        ctx.audit("epoch", term=cmd.epoch.term, leader_id=cmd.epoch.leader_id)


# -------------------------------------------------------------------------------------- calendars


def put_calendar(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    c = common_pb2.Calendar()
    c.CopyFrom(cmd.put_calendar.calendar)
    firing.check_calendar(ctx.txn, c)  # the leader ran the same check before proposing
    c.namespace = stored_namespace(c.namespace)  # the default namespace is stored empty
    # Names are unique per namespace, and includes resolve in the calendar's own (firing.calendar_key).
    key = firing.calendar_key(c.namespace, c.name)
    quota.check_calendar(ctx.txn, ctx.limits, key)
    old = firing.read_calendar(ctx.txn, c.name, c.namespace)
    c.version = ctx.index
    c.updated_at_ms = ctx.now
    if old is not None:
        for name in set(old.include) - set(c.include):
            ctx.txn.delete("calendar_refs", calendar_include_key(firing.calendar_key(c.namespace, name), key))
    for name in c.include:
        ctx.txn.put("calendar_refs", calendar_include_key(firing.calendar_key(c.namespace, name), key), b"")
    ctx.txn.put("calendars", key.encode(), c.SerializeToString())
    ctx.result.calendar.CopyFrom(c)
    # Tasks already planned keep their next due instant; the new rules apply from their next planning.


def delete_calendar(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    name, namespace = cmd.delete_calendar.name, cmd.delete_calendar.namespace
    c = firing.read_calendar(ctx.txn, name, namespace)
    if c is None:
        raise Rejected("not_found", f"calendar {name!r} not found{_in_namespace(namespace)}")
    key = firing.calendar_key(namespace, name)
    prefix, skip = key.encode() + b"\0", len(firing.calendar_key(namespace, ""))
    users = []
    for k, _ in ctx.txn.scan("calendar_refs", prefix, prefix + b"\xff" * 65):
        rest = k[len(prefix) :]
        users.append(
            f"calendar {rest[1:].decode()[skip:]}" if rest[:1] == b"C" else f"task {id_text(rest[1:])}"
        )
        if len(users) >= 5:
            break
    if users:
        raise Rejected("in_use", f"calendar {name!r} is used by {', '.join(users)}")
    for inc in c.include:
        ctx.txn.delete("calendar_refs", calendar_include_key(firing.calendar_key(namespace, inc), key))
    ctx.txn.delete("calendars", key.encode())
    ctx.result.calendar.CopyFrom(c)


def append_output(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    a = cmd.append_output
    raw = ctx.txn.get("execs", id_bytes(a.execution_id, field="execution_id"))
    if raw is None:
        raise Rejected("not_found", f"execution {a.execution_id} not found")
    ex = Execution()
    ex.ParseFromString(raw)
    if not output.append(ctx.txn, ex, a.token, stream=a.stream, data=a.data, now_ms=ctx.now):
        ctx.result.applied = False
        ctx.result.error_code = "refused"


def note_waiting(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    n = cmd.note_waiting
    if not n.execution_id:
        _note_unfired(ctx, n)
        return
    exec16 = id_bytes(n.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected("invalid_state", f"execution {n.execution_id} is not pending")
    ex.waiting_reason = n.reason[:500]
    ctx.txn.put("execs", exec16, ex.SerializeToString())
    # The fire ledger says it too ("why didn't it run?"): the record of that nominal time gets the reason.
    key = firing.ledger_key(id_bytes(ex.task_id), ex.nominal_time_ms)
    raw = ctx.txn.get("ledger", key)
    if raw is not None:
        rec = common_pb2.FireRecord()
        rec.ParseFromString(raw)
        rec.reason = ex.waiting_reason
        ctx.txn.put("ledger", key, rec.SerializeToString())
    ctx.result.execution.CopyFrom(ex)


def _note_unfired(ctx: Ctx, n: commands_pb2.NoteWaiting) -> None:
    """The leader could not fire `n.task_id` at `n.nominal_time_ms` yet (its Fire failed inside apply):
    the fire ledger records it as fire_failed with the reason, until an outcome replaces it."""
    task16 = id_bytes(n.task_id, field="task_id")
    get_task(ctx.txn, task16)
    if n.nominal_time_ms <= 0:
        raise InvalidArgument("nominal_time_ms", "must be a time (Unix milliseconds)")
    if ctx.txn.get("ledger", firing.ledger_key(task16, n.nominal_time_ms)) is not None:
        raise Rejected("invalid_state", f"task {n.task_id} has an outcome at {n.nominal_time_ms} already")
    firing.record(ctx.txn, task16, n.nominal_time_ms, common_pb2.FIRE_FAILED, ctx.now, reason=n.reason[:500])


def expire_pending(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    x = cmd.expire_pending
    exec16 = id_bytes(x.execution_id, field="execution_id")
    ex = get_execution(ctx.txn, exec16)
    if ex.state != common_pb2.EXECUTION_PENDING:
        raise Rejected("invalid_state", f"execution {x.execution_id} is not pending")
    task = _task_of(ctx, ex)
    dep_deadline = task.spec.dependency_deadline_ms
    unmet = deps.unmet(ctx.txn, task, ex.nominal_time_ms) if task.spec.depends_on else ""
    if unmet and dep_deadline and ctx.now >= ex.fired_at_ms + dep_deadline:
        finish(ctx, ex, common_pb2.EXECUTION_FAILED, f"dependencies unmet after {dep_deadline} ms: {unmet}")
    else:
        deadline = task.spec.start_deadline_ms
        if not deadline or ctx.now < ex.fired_at_ms + deadline:
            raise Rejected("not_due", f"execution {x.execution_id} is within its deadlines")
        finish(
            ctx, ex, common_pb2.EXECUTION_EXPIRED, f"not started within {deadline} ms of its fire: {x.reason}"
        )
    ctx.result.execution.CopyFrom(get_execution(ctx.txn, exec16))


# ------------------------------------------------------------------------------------- retention


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


HANDLERS: dict[str, Handler] = {
    "create_task": create_task,
    "import_tasks": import_tasks,
    "update_task": update_task,
    "cancel_task": cancel_task,
    "pause_task": pause_task,
    "resume_task": resume_task,
    "trigger_task": trigger_task,
    "backfill_task": backfill_task,
    "epoch": epoch,
    "fire": fire,
    "grant": grant,
    "complete": complete,
    "expire_lease": expire_lease,
    "cancel_execution": cancel_execution,
    "redrive_dead_letters": redrive_dead_letters,
    "purge_dead_letters": purge_dead_letters,
    "append_output": append_output,
    "note_waiting": note_waiting,
    "expire_pending": expire_pending,
    "put_calendar": put_calendar,
    "delete_calendar": delete_calendar,
    "delete_task": delete_task,
    "prune": prune,
}

__all__ = ["DEFAULT_MAX_ATTEMPTS", "HANDLERS", "Ctx", "finish", "start_execution"]
