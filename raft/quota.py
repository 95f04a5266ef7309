"""Quotas (issue 11): at most so many tasks and calendars in the cluster, and so many executions per task.

The limits are the `[limits]` table of the leader's config, stamped into each command that creates
something (`Command.limits`): apply enforces the limits of the command, never its own node's config, so
that every replica decides alike (an entry written before quotas carries none: no quota). The counts
are in the replicated state, kept as things are created and removed, never recomputed by a scan:

- tasks and calendars: the number of keys of their sub-databases (`Txn.count`, O(1) in LMDB);
- a task's stored executions: `Task.stored_executions` (kept by the handlers and by retention);
- a task's executions not yet ended (pending, buffered or running): a counter per task in the meta
  sub-database, moved wherever an execution enters or leaves the `active` index (`activated`,
  `deactivated`). A store written before this counter existed counts only the executions that became
  active since (the counter never goes below zero).

The leader runs the same checks before it proposes a client's command (so that a command over a quota
never enters the log) and apply again. A client's command over a quota is refused with
RESOURCE_EXHAUSTED (`QuotaExceeded`); a scheduled fire over a task's quota creates no execution and is
recorded in the fire ledger as `skipped_limit` with the reason, and the schedule goes on.
"""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import id_bytes
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import QuotaExceeded

Limits = commands_pb2.Limits

# meta key of a task's count of executions not yet ended: ACTIVE_PREFIX + task_id16 -> u64 (absent: 0).
ACTIVE_PREFIX = b"active:"


def _exceeded(key: str, situation: str, limit: int, remedy: str) -> QuotaExceeded:
    return QuotaExceeded(
        f"limits.{key}: {situation}; the limit is {limit}. Raise {key} in the [limits] table of every "
        f"node's config (then restart the nodes), or {remedy}"
    )


def check_tasks(txn: Txn, limits: Limits | None, adding: int = 1) -> None:
    """Raise QuotaExceeded if creating `adding` tasks goes past `max_tasks`."""
    if limits is None or not limits.max_tasks:
        return
    stored = txn.count("tasks")
    if stored + adding > limits.max_tasks:
        more = f" and this request adds {adding}" if adding > 1 else ""
        raise _exceeded(
            "max_tasks", f"the cluster stores {stored} tasks{more}", limits.max_tasks, "delete tasks"
        )


def check_calendar(txn: Txn, limits: Limits | None, name: str) -> None:
    """Raise QuotaExceeded if putting calendar `name` adds one past `max_calendars` (replacing one does
    not)."""
    if limits is None or not limits.max_calendars or txn.get("calendars", name.encode()) is not None:
        return
    stored = txn.count("calendars")
    if stored >= limits.max_calendars:
        raise _exceeded(
            "max_calendars",
            f"the cluster stores {stored} calendars",
            limits.max_calendars,
            "delete calendars",
        )


def execution_refusal(
    txn: Txn,
    limits: Limits | None,
    task: common_pb2.Task,
    *,
    new: bool = True,
    active: int | None = None,
) -> QuotaExceeded | None:
    """Why `task` may not get one more execution not yet ended now (None: it may). `new`: a new stored
    execution too (a fire, a trigger, a backfill), not one that is run again (a redrive). `active`: the
    task's count of executions not yet ended (`stored_active`), when the caller has read it already."""
    if limits is None:
        return None
    # Each limit read once (a protobuf read costs; every fire of a command carrying limits comes here).
    max_pending = limits.max_pending_per_task
    if max_pending:
        if active is None:
            active = active_count(txn, task.task_id)
        if active >= max_pending:
            return _exceeded(
                "max_pending_per_task",
                f"task {task.task_id} has {active} executions not yet ended (pending, buffered or running)",
                max_pending,
                "cancel some of its executions, or let workers run them",
            )
    if not new:
        return None
    max_stored = limits.max_executions_per_task
    if max_stored and task.stored_executions >= max_stored:
        return _exceeded(
            "max_executions_per_task",
            f"task {task.task_id} stores {task.stored_executions} executions",
            max_stored,
            "keep fewer of its executions (its retention: keep_executions, execution_max_age_ms)",
        )
    return None


def _key(task16: bytes) -> bytes:
    return ACTIVE_PREFIX + task16


def active_count(txn: Txn, task_id: str) -> int:
    return stored_active(txn, id_bytes(task_id, field="task_id"))


# stored_active / activated / deactivated run for every fire and every end of an execution: the key and
# the count are encoded inline (`_key`, codec.u64 / from_u64, without the calls).


def stored_active(txn: Txn, task16: bytes) -> int:
    """The task's count of executions not yet ended, as stored (absent: 0)."""
    raw = txn.get("meta", ACTIVE_PREFIX + task16)
    return 0 if raw is None else int.from_bytes(raw[:8], "big")


def activated(txn: Txn, task16: bytes, count: int | None = None) -> None:
    """An execution of the task entered the `active` index (call only when its key was not there).
    `count`: the task's count as the caller read it (`stored_active`) in this command, when nothing has
    moved it since (a fire reads it for its quota check first: one read, not two)."""
    if count is None:
        count = stored_active(txn, task16)
    txn.put("meta", ACTIVE_PREFIX + task16, (count + 1).to_bytes(8, "big"))


def deactivated(txn: Txn, task16: bytes) -> None:
    """An execution of the task left the `active` index (call only when its key was there)."""
    key = ACTIVE_PREFIX + task16
    raw = txn.get("meta", key)
    if raw is None:
        return  # the count is 0 already (a store older than it): it stays absent
    left = int.from_bytes(raw[:8], "big") - 1
    if left > 0:
        txn.put("meta", key, left.to_bytes(8, "big"))
    else:
        txn.delete("meta", key)


def forget(txn: Txn, task16: bytes) -> None:
    """The task is deleted: drop its counter."""
    txn.delete("meta", _key(task16))


__all__ = [
    "ACTIVE_PREFIX",
    "Limits",
    "QuotaExceeded",
    "activated",
    "active_count",
    "check_calendar",
    "check_tasks",
    "deactivated",
    "execution_refusal",
    "forget",
    "stored_active",
]
