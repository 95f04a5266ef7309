"""Retention: what the state machine deletes, and when (pure and deterministic, like all of apply).

Nothing here reads a clock or the configuration: the cluster-wide defaults arrive in each `Prune`
command (the leader's `[retention]` table), the time is the command's stamped time, and every decision
depends only on the stored state and the command. So every replica deletes exactly the same records.

- `delete_execution` is the one helper that removes an execution with every index entry that names it:
  `execs`, `fires`, `active`, `pending`, `running`, `buffered`, its output log (`logs`, `logs_size`,
  `logs_by_time`), its result (`results`), its dead letter (`dlq`, `dlq_by_task`) and the fire-ledger
  record that points to it (`ledger`, `ledger_count`). The dedup table (`requests`) keeps its answers,
  as it does for any command (a retried request must get the same answer), until they age out after a
  day.
- `delete_task` (the DeleteTask command) removes a task, its indexes and its history; a history longer
  than one command's budget is finished by the next Prune commands (the task is marked "doomed" in meta).
- `prune` (the Prune command) is one bounded step of retention: first the doomed tasks, then output logs
  past their age, then a sweep of the tasks from a cursor kept in meta, visiting at most `max_visits`
  tasks and deleting at most `max_deletes` records. Per task: executions beyond the task's count or past
  their age (never an active one), fire-ledger records past their age, and the task itself once it has
  ended (completed or cancelled, nothing active) for longer than its ended-task age.
- the audit trail (raft.audit_trail) loses its records past `audit_max_age_ms` or beyond
  `audit_max_records`, oldest first, in each Prune before the sweep.
- `trim_on_fire` keeps a task within its count as it fires, so that a task firing often does not wait
  for the sweep to come round (at most `TRIM_PER_FIRE` deletions per new execution).

Each `Retention` field of a task's spec overrides the cluster default: 0 takes the default, a negative
value means no limit. A default of 0 means no limit. "The newest executions" are those with the latest
nominal times (a backfill's runs count as old); an execution's age runs from when it ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import audit_trail, features, firing, output, quota, retry, stats
from cronraft.raft.codec import from_u64, id_bytes, u64
from cronraft.raft.kv import Txn
from cronraft.raft.records import drop_execution, fire_key, get_task, pending_key, remove_task
from cronraft.raft.rejection import Code, Rejected

Task = common_pb2.Task
Execution = common_pb2.Execution
_execution_from = Execution.FromString
_record_from = common_pb2.FireRecord.FromString
_task_from = Task.FromString

# Meta keys (the "meta" sub-database): the defaults of the last Prune (read by `trim_on_fire`), the
# sweep's cursor (the last task visited), and one key per deleted task whose history is still being
# deleted.
META_POLICY = b"retention"
META_CURSOR = b"prune_cursor"
META_DOOMED = b"doomed:"
# Bounds on the work of one command, whatever the command asks.
MAX_PRUNE_DELETES = 10_000
MAX_PRUNE_VISITS = 100_000
DELETE_TASK_BUDGET = 1_000  # executions a DeleteTask deletes itself; Prune commands delete the rest
TRIM_PER_FIRE = 2
TRIM_SCAN = 16  # executions of a task looked at per trim (active ones are skipped, not counted)

_TERMINAL = frozenset(
    {
        common_pb2.EXECUTION_SUCCEEDED,
        common_pb2.EXECUTION_FAILED,
        common_pb2.EXECUTION_TIMED_OUT,
        common_pb2.EXECUTION_CANCELLED,
        common_pb2.EXECUTION_LOST,
        common_pb2.EXECUTION_EXPIRED,
    }
)
_ENDED = frozenset({common_pb2.TASK_COMPLETED, common_pb2.TASK_CANCELLED})


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one task (0: no limit)."""

    keep_executions: int
    execution_max_age_ms: int
    ended_task_max_age_ms: int


def _pick(own: int, default: int) -> int:
    if own > 0:
        return own
    return 0 if own < 0 else max(0, default)


def limits(task: Task, defaults: commands_pb2.RetentionPolicy) -> Limits:
    """The task's own limits where it sets them, the cluster's defaults elsewhere."""
    return _limits(task, _defaults(defaults))


def _defaults(policy: commands_pb2.RetentionPolicy) -> Limits:
    """The limits of a task that sets none of its own."""
    return Limits(
        keep_executions=max(0, policy.keep_executions),
        execution_max_age_ms=max(0, policy.execution_max_age_ms),
        ended_task_max_age_ms=max(0, policy.ended_task_max_age_ms),
    )


def _limits(task: Task, defaults: Limits, made: dict[tuple[int, int, int], Limits] | None = None) -> Limits:
    """`limits`, the defaults' made once (`_defaults`): a sweep visits many tasks, and most of them set
    no limit of their own and share those; `made`: the limits made so far in this sweep, by the task's
    own (tasks that set some mostly set the same ones)."""
    r = task.spec.retention
    own = r.keep_executions, r.execution_max_age_ms, r.ended_task_max_age_ms
    if not any(own):
        return defaults
    lim = made.get(own) if made is not None else None
    if lim is None:
        keep, age, ended = own
        lim = Limits(
            keep_executions=_pick(keep, defaults.keep_executions),
            execution_max_age_ms=_pick(age, defaults.execution_max_age_ms),
            ended_task_max_age_ms=_pick(ended, defaults.ended_task_max_age_ms),
        )
        if made is not None:
            made[own] = lim
    return lim


def read_policy(txn: Txn, batch: stats.Batch | None = None) -> commands_pb2.RetentionPolicy:
    """The defaults of the last Prune applied (no limit before the first one); read and parsed once per
    `batch`, when given (only a Prune, never batched, writes them; then the caller gets the batch's copy,
    to read only)."""
    if batch is not None:
        return batch.settled(txn, META_POLICY, commands_pb2.RetentionPolicy)
    policy = commands_pb2.RetentionPolicy()
    raw = txn.get("meta", META_POLICY)
    if raw is not None:
        policy.ParseFromString(raw)
    return policy


class Budget:
    """How many more records one command may delete."""

    def __init__(self, n: int) -> None:
        self.left = n

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.left <= 0


# --------------------------------------------------------------------------------------- deletion


def delete_execution(txn: Txn, ex: Execution, *, listed: bytes | None = None) -> int | None:
    """Remove `ex` and every index entry that names it (see the module docstring). The caller keeps the
    task's `stored_executions` in step, and tells the leader when `ex` was active. `listed`: the `fires`
    key under which the caller found `ex` in this transaction, `ex` being parsed from its stored record
    then (`_listed`): neither is read again. Returns the task's `ledger_count` as this wrote it (None:
    not written)."""
    task16 = id_bytes(ex.task_id)
    if _delete(txn, ex, task16, listed):
        return _ledger_count_add(txn, task16, -1)
    return None


def _delete(txn: Txn, ex: Execution, task16: bytes, listed: bytes | None) -> bool:
    """`delete_execution` but for the task's `ledger_count`: True when the execution's fire-ledger record
    went, which moves the count by one (the caller's, so that a fire's trim moves it once with the fire's
    own record: `trim_on_fire`).

    An index entry that the stored execution proves absent is not looked for (a trim at each fire deletes
    an ended execution, whose entries below are mostly absent). What proves it, kept by every writer:
    - `active`, `pending`, `running`, `buffered`: an execution has the entry of its state (and `active`)
      while it is pending, running or buffered; every move between those states deletes the entry it
      leaves, and the one move to an ended state (commands.executions.finish) deletes both, so an ended
      execution has none (a redrive puts them back with the state: commands.dead_letters);
    - `results`: written only with `Execution.result_size` set to its length, and deleted when a later
      attempt hands none back (commands.leases._keep_result): no size, no result;
    - `dlq`, `dlq_by_task`: written only with `Execution.dead_lettered` set (commands.dead_letters), which
      only a redrive clears, taking the letter first (a purge leaves the flag: the look-up then finds
      nothing, as before).
    tests/unit/test_retention_proofs.py checks these over a workload of every command."""
    execution_id = ex.execution_id
    exec16 = id_bytes(execution_id)
    nominal = ex.nominal_time_ms
    key = fire_key(task16, nominal)
    # A `fires` entry names its execution until that execution is deleted (here, or by a pause's un-fire:
    # raft.commands.tasks), so the one it was listed under still names it.
    if key == listed or txn.get("fires", key) == exec16:
        txn.delete("fires", key)
    stored = drop_execution(txn, exec16, ex, stored=listed is not None)
    if stored.state not in _TERMINAL:
        if txn.delete("active", firing.active_key(task16, exec16)):
            quota.deactivated(txn, task16)  # the task's count of executions not yet ended
        txn.delete("running", exec16)
        txn.delete("buffered", firing.buffered_key(task16, nominal, exec16))
        txn.delete("pending", pending_key(ex, exec16))
    if stored.dead_lettered:
        retry.take_dead_letter(txn, execution_id)
    output.delete(txn, exec16)
    if stored.result_size:
        txn.delete("results", exec16)
    ledger = task16 + nominal.to_bytes(8, "big")  # firing.ledger_key
    raw = txn.get("ledger", ledger)
    if raw is not None and _record_from(raw).execution_id == execution_id:
        txn.delete("ledger", ledger)
        return True
    return False


def _ledger_count_add(txn: Txn, task16: bytes, n: int) -> int | None:
    """Move the task's `ledger_count` by `n` (none stays none); the count written, or None."""
    raw = txn.get("ledger_count", task16)
    if raw is None:
        return None
    count = max(0, from_u64(raw) + n)
    txn.put("ledger_count", task16, u64(count))
    return count


def _listed(txn: Txn, task16: bytes, limit: int) -> Iterator[tuple[bytes, Execution]]:
    """Up to `limit` of the task's executions with their `fires` keys, oldest nominal time first, read as
    they are asked for (a trim at a fire usually takes the first one only). A `fires` entry whose
    execution is missing is dropped on the way (it names nothing). The caller may delete each one it is
    given (`delete_execution(..., listed=key)`) before it asks for the next."""
    n = 0
    start, end = task16, firing.prefix_end(task16)
    # One seek per execution (Txn.first), not a scan: a trim at a fire takes one, and each one given
    # is usually deleted before the next is asked for.
    while n < limit and (found := txn.first("fires", start, end)) is not None:
        key, exec16 = found
        start = key + b"\0"  # the smallest key after `key`
        raw = txn.get("execs", exec16)
        if raw is None:
            txn.delete("fires", key)
            continue
        yield key, _execution_from(raw)
        n += 1


def _delete_history(txn: Txn, task16: bytes, budget: Budget) -> tuple[int, bool]:
    """Delete a removed task's executions, oldest first, then its fire ledger, within `budget`.
    Returns (executions deleted, whether nothing is left)."""
    deleted = 0
    while batch := list(_listed(txn, task16, 256)):
        for key, ex in batch:
            if not budget.take():
                return deleted, False
            delete_execution(txn, ex, listed=key)
            deleted += 1
    firing.drop_ledger(txn, task16)  # at most about firing.LEDGER_PER_TASK records
    return deleted, True


# -------------------------------------------------------------------------------------- DeleteTask


def delete_task(
    txn: Txn, task_id: str, *, force: bool, now_ms: int, result: commands_pb2.CommandResult
) -> Task:
    """The DeleteTask command (see commands.proto); returns the task as it was."""
    task16 = id_bytes(task_id, field="task_id")
    task = get_task(txn, task16)
    active = firing.active_executions(txn, task16)
    running = [e for e in active if e.state == common_pb2.EXECUTION_RUNNING]
    if running and not force:
        e = running[0]
        more = f" (and {len(running) - 1} more)" if len(running) > 1 else ""
        raise Rejected(
            Code.RUNNING,
            f"task {task_id} has a running execution {e.execution_id} (attempt {e.attempt} on worker "
            f"{e.worker_id or '?'}){more}: cancel it first (schedctl execution cancel {e.execution_id}) "
            "and delete once it ended, or delete with force, which terminates it",
        )
    # Every check is done: from here on, only writes.
    for ex in active:
        if ex.state == common_pb2.EXECUTION_RUNNING:
            result.cancels.append(
                commands_pb2.CancelRequest(
                    execution_id=ex.execution_id, token=ex.token, worker_id=ex.worker_id
                )
            )
        delete_execution(txn, ex)
        gone = Execution()
        gone.CopyFrom(ex)
        gone.state = common_pb2.EXECUTION_CANCELLED  # for the leader: its lease, slot or queue place go
        gone.error = "deleted with its task"
        gone.completed_at_ms = now_ms
        result.executions.append(gone)
    remove_task(txn, task16, task)
    deleted, done = _delete_history(txn, task16, Budget(DELETE_TASK_BUDGET))
    if not done:
        txn.put("meta", META_DOOMED + task16, b"")
    result.pruned.executions = len(active) + deleted
    result.pruned.tasks = 1
    result.pruned.more = not done
    return task


def summary(task: Task) -> Task:
    """A deleted task as its DeleteTask answers it: id, name, tags, state, counters and times."""
    out = Task(
        task_id=task.task_id,
        state=task.state,
        created_at_ms=task.created_at_ms,
        updated_at_ms=task.updated_at_ms,
        last_fired_nominal_ms=task.last_fired_nominal_ms,
        fire_count=task.fire_count,
        version=task.version,
        stored_executions=task.stored_executions,
    )
    out.spec.name = task.spec.name
    out.spec.tags.update(task.spec.tags)
    return out


# ------------------------------------------------------------------------------------------- Prune


def prune(txn: Txn, p: commands_pb2.Prune, now_ms: int, report: commands_pb2.PruneReport) -> None:
    """One bounded step of retention (see the module docstring)."""
    if read_policy(txn) != p.defaults:
        txn.put("meta", META_POLICY, p.defaults.SerializeToString(deterministic=True))
    budget = Budget(min(p.max_deletes or 1, MAX_PRUNE_DELETES))
    _finish_doomed(txn, budget, report)
    if p.defaults.log_max_age_ms > 0 and not budget.spent:
        report.logs += output.prune(txn, now_ms - p.defaults.log_max_age_ms + 1, limit=budget.left)
        budget.left -= report.logs
        oldest = txn.first("logs_by_time")  # the oldest log left: when it becomes deletable
        if oldest is not None:
            _note_next(report, from_u64(oldest[0][:8]) + p.defaults.log_max_age_ms)
    if not budget.spent:  # the audit trail: by age and count (raft.audit_trail)
        deleted, next_ms = audit_trail.prune(
            txn, now_ms, p.defaults.audit_max_age_ms, p.defaults.audit_max_records, budget.left
        )
        report.audit_records += deleted
        budget.left -= deleted
        _note_next(report, next_ms)
    if not budget.spent:
        _sweep(txn, p, now_ms, budget, report)
    report.more = budget.spent


def _note_next(report: commands_pb2.PruneReport, at_ms: int) -> None:
    """Something seen becomes deletable at `at_ms` (PruneReport.next_ms keeps the earliest)."""
    if at_ms > 0:
        earliest = report.next_ms  # read once: a sweep notes one or two instants per task it visits
        if not earliest or at_ms < earliest:
            report.next_ms = at_ms


def _finish_doomed(txn: Txn, budget: Budget, report: commands_pb2.PruneReport) -> None:
    doomed = [k for k, _ in txn.scan("meta", META_DOOMED, META_DOOMED + b"\xff" * 17)]
    for key in doomed:
        if budget.spent:
            return
        deleted, done = _delete_history(txn, key[len(META_DOOMED) :], budget)
        report.executions += deleted
        if done:
            txn.delete("meta", key)


def _sweep(
    txn: Txn, p: commands_pb2.Prune, now_ms: int, budget: Budget, report: commands_pb2.PruneReport
) -> None:
    cursor = txn.get("meta", META_CURSOR) or b""
    visits = min(p.max_visits or 1, MAX_PRUNE_VISITS)
    start = cursor + b"\0" if cursor else b""
    last = cursor
    wrapped = True  # the scan reached the end of the tasks: the next sweep starts over
    # Per task visited, what does not change within the sweep is not read again: the defaults' limits,
    # and the count of visits (kept here, stored in the report once).
    defaults = _defaults(p.defaults)
    made: dict[tuple[int, int, int], Limits] = {}
    visited = report.visited
    fixes = features.is_active(txn, features.SCHEDULE_FIXES)  # `_trim`'s rule of which ones are kept
    for task16, raw in txn.scan("tasks", start):
        if visited >= visits or budget.left <= 0:  # budget.spent
            wrapped = False
            break
        visited += 1
        task = _task_from(raw)
        lim = _limits(task, defaults, made)
        if not _visit(
            txn, task16, task=task, lim=lim, now_ms=now_ms, budget=budget, report=report, fixes=fixes
        ):
            wrapped = False  # the budget ran out inside this task: resume with it
            break
        last = task16
    report.visited = visited
    txn.put("meta", META_CURSOR, b"" if wrapped else last)
    report.wrapped = wrapped


def _visit(
    txn: Txn,
    task16: bytes,
    *,
    task: Task,
    lim: Limits,
    now_ms: int,
    budget: Budget,
    report: commands_pb2.PruneReport,
    fixes: bool = True,
) -> bool:
    """Apply the task's limits; False if the budget ran out before it was done. `fixes`: the cluster has
    the feature schedule_fixes (`_trim`)."""
    if task.state in _ENDED and lim.ended_task_max_age_ms:
        ended_at = max(task.updated_at_ms, task.last_finished_ms)
        idle = txn.first("active", task16, firing.prefix_end(task16)) is None
        if idle and ended_at + lim.ended_task_max_age_ms > now_ms:
            _note_next(report, ended_at + lim.ended_task_max_age_ms)
        if ended_at + lim.ended_task_max_age_ms <= now_ms and idle:
            if not budget.take():
                return False
            remove_task(txn, task16, task)
            report.tasks += 1
            deleted, done = _delete_history(txn, task16, budget)
            report.executions += deleted
            if not done:
                txn.put("meta", META_DOOMED + task16, b"")
            return True  # the task is gone; Prune commands finish its history (doomed)
    deleted, done = _trim(
        txn,
        task16,
        task=task,
        lim=lim,
        now_ms=now_ms,
        budget=budget,
        scan_limit=budget.left + TRIM_SCAN,
        report=report,
        fixes=fixes,
    )
    if deleted:
        report.executions += deleted
        task.stored_executions = max(0, task.stored_executions - deleted)
        txn.put(
            "tasks", task16, task.SerializeToString(deterministic=True)
        )  # no index changes: the counter only
    if not done:
        return False
    max_age = lim.execution_max_age_ms
    if max_age:
        n, done, oldest = _prune_ledger_by_age(txn, task16, now_ms - max_age + 1, budget)
        if n:
            report.ledger_records += n
        if oldest is not None:  # the oldest record left
            _note_next(report, from_u64(oldest[16:24]) + max_age)
    return done


def _trim(
    txn: Txn,
    task16: bytes,
    *,
    task: Task,
    lim: Limits,
    now_ms: int,
    budget: Budget,
    scan_limit: int,
    report: commands_pb2.PruneReport,
    fixes: bool = True,
) -> tuple[int, bool]:
    """Delete the task's oldest executions while it holds more than its count, or while they are past
    their age; active ones are kept and passed over. Returns (deleted, False if the budget ran out).

    Which ones the count keeps: with `fixes` (feature schedule_fixes), the newest `keep` by nominal time,
    live or ended, as the docs say: an ended execution goes only when `keep` newer ones exist. Before it,
    ended ones went oldest first while the task held more than `keep`, live ones passed over, so older
    runs still live made the newest ended ones go as they ended."""
    keep, max_age = lim.keep_executions, lim.execution_max_age_ms
    if not keep and not max_age:
        return 0, True
    deleted = 0
    scanned = 0
    stored = task.stored_executions
    seen = 0  # the task's executions looked at, live ones too (the newer ones are `stored - seen`)
    start, end = task16, firing.prefix_end(task16)
    # One seek per execution (Txn.first), not a scan: a visit usually reads the oldest one and stops, and
    # each further one read is usually deleted.
    while scanned < scan_limit and (found := txn.first("fires", start, end)) is not None:
        key, exec16 = found
        start = key + b"\0"  # the smallest key after `key`
        scanned += 1
        raw = txn.get("execs", exec16)
        if raw is None:
            txn.delete("fires", key)
            continue
        ex = _execution_from(raw)
        seen += 1
        if ex.state not in _TERMINAL:
            continue
        # The newest `keep` stay (schedule_fixes: `stored - seen` are newer); before: while over the count.
        over = bool(keep) and (stored - seen >= keep if fixes else stored - deleted > keep)
        if not over:
            ended = ex.completed_at_ms or ex.fired_at_ms  # when its age runs from
            if not (max_age and ended + max_age <= now_ms):  # not past its age either
                if max_age:  # the oldest ended execution it keeps goes first, then
                    _note_next(report, ended + max_age)
                break  # the newer ones are kept too
        if not budget.take():
            return deleted, False
        delete_execution(txn, ex, listed=key)
        deleted += 1
    return deleted, True


def _prune_ledger_by_age(
    txn: Txn, task16: bytes, before_ms: int, budget: Budget
) -> tuple[int, bool, bytes | None]:
    """Delete the task's fire-ledger records of nominal times before `before_ms`, within `budget`.
    Returns (deleted, False if the budget ran out, the key of the oldest record left or None). One scan
    of the task's ledger from its start: the records it deletes are its oldest, so the oldest one left
    is where the scan stopped (an older way scanned again after deleting, from the start)."""
    doomed: list[bytes] = []
    done = True
    oldest = None
    end = firing.ledger_key(task16, before_ms) if before_ms > 0 else task16
    # A visit usually finds no record past its age: its oldest one, one seek (Txn.first), says so.
    first = txn.first("ledger", task16, firing.prefix_end(task16))
    if first is None or first[0] >= end:
        return 0, True, None if first is None else first[0]
    for key, _ in txn.scan("ledger", first[0], firing.prefix_end(task16)):
        if key >= end:
            oldest = key
            break
        if len(doomed) >= budget.left:
            done = False
            oldest = key
            break
        doomed.append(key)
    for key in doomed:
        budget.take()
        txn.delete("ledger", key)
    if doomed:
        _ledger_count_add(txn, task16, -len(doomed))
    return len(doomed), done, oldest


# ------------------------------------------------------------------------------------ at each fire


def trim_on_fire(txn: Txn, task16: bytes, task: Task, batch: stats.Batch | None = None) -> int:
    """Called when `task` got a new execution (its `stored_executions` already counts it): delete its
    oldest ended executions beyond its count, at most TRIM_PER_FIRE of them (and `stored_executions`
    with them). `batch`: the entry's (raft.stats.Batch), which reads the defaults once. Returns how many
    of the task's fire-ledger records went with them, its `ledger_count` not moved for those: the fire's
    own record comes next (firing.record, `removed=`) and moves the count once for both (at a task's
    count, the one record gone and the one added leave it as it was: not written at all)."""
    keep = _pick(task.spec.retention.keep_executions, read_policy(txn, batch).keep_executions)
    stored = task.stored_executions
    if not keep or stored <= keep:
        return 0
    # Which ones the count keeps (`_trim`): the newest `keep`, live or ended (schedule_fixes), or before
    # it, while the task holds more than `keep`, its oldest ended ones.
    fixes = (
        features.is_active(txn, features.SCHEDULE_FIXES)
        if batch is None
        else batch.has(txn, features.SCHEDULE_FIXES)
    )
    total = stored
    deleted = 0
    removed = 0
    # Done once the task is within its count or TRIM_PER_FIRE are deleted, before the next execution is
    # read: usually after the first one (the task reached its count with the execution just fired).
    for seen, (key, ex) in enumerate(_listed(txn, task16, TRIM_SCAN), start=1):
        if ex.state in _TERMINAL:
            own = id_bytes(ex.task_id)
            if own == task16:
                removed += _delete(txn, ex, own, key)
            else:  # listed under another task's key: its own task's count moves now, as anywhere else
                delete_execution(txn, ex, listed=key)
            stored -= 1
            deleted += 1
            if deleted >= TRIM_PER_FIRE or (not fixes and stored <= keep):
                break
        if fixes and total - seen <= keep:  # the next one is among the newest `keep`
            break
    task.stored_executions = stored
    return removed


__all__ = [
    "DELETE_TASK_BUDGET",
    "MAX_PRUNE_DELETES",
    "MAX_PRUNE_VISITS",
    "META_CURSOR",
    "META_DOOMED",
    "META_POLICY",
    "Budget",
    "Limits",
    "delete_execution",
    "delete_task",
    "limits",
    "prune",
    "read_policy",
    "summary",
    "trim_on_fire",
]
