"""Stored records and their secondary indexes: the key layout and the read/write helpers that keep a
task's or an execution's indexes in step with it. Used by the state machine's handlers and readers."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import stats
from cronraft.raft.codec import id_text, token_tuple, u64
from cronraft.raft.firing import calendar_key, due_of
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import Code, Rejected

Task = common_pb2.Task
Execution = common_pb2.Execution

META_LAST_APPLIED = b"last_applied"
META_EPOCH = b"epoch"


def due_key(due_ms: int, task16: bytes) -> bytes:
    return u64(due_ms) + task16


def state_key(state: int, task16: bytes) -> bytes:
    return bytes([state]) + task16


def tag_key(k: str, v: str, task16: bytes) -> bytes:
    return k.encode() + b"\0" + v.encode() + b"\0" + task16


def fire_key(task16: bytes, nominal_ms: int) -> bytes:
    return task16 + u64(nominal_ms)


def pending_key(ex: Execution, exec16: bytes) -> bytes:
    return bytes([priority_rank(ex.priority)]) + u64(ex.fired_at_ms) + exec16


def calendar_ref_key(name: str, task16: bytes) -> bytes:
    """A task that uses calendar `name` (see `calendar_include_key` for calendars that include it).
    `name` is the calendar's stored key (firing.calendar_key: qualified by its namespace)."""
    return name.encode() + b"\0T" + task16


def calendar_include_key(name: str, includer: str) -> bytes:
    """Calendar `includer` includes `name` (both stored keys: firing.calendar_key)."""
    return name.encode() + b"\0C" + includer.encode()


def _calendar_keys(task: Task) -> set[str]:
    """The stored keys of the calendars a task's schedule names: resolved in the task's namespace."""
    return {calendar_key(task.spec.namespace, name) for name in task.spec.schedule.calendars}


def priority_rank(p: int) -> int:
    # HIGH first; UNSPECIFIED means MEDIUM.
    if p == common_pb2.HIGH:
        return 0
    return 2 if p == common_pb2.LOW else 1


def get_task(txn: Txn, task16: bytes) -> Task:
    raw = txn.get("tasks", task16)
    if raw is None:
        raise Rejected(Code.NOT_FOUND, f"task {id_text(task16)} not found")
    t = Task()
    t.ParseFromString(raw)
    return t


def get_execution(txn: Txn, exec16: bytes) -> Execution:
    raw = txn.get("execs", exec16)
    if raw is None:
        raise Rejected(Code.NOT_FOUND, f"execution {id_text(exec16)} not found")
    e = Execution()
    e.ParseFromString(raw)
    return e


def get_current(txn: Txn, exec16: bytes, token: common_pb2.FencingToken) -> Execution:
    """The execution, if `token` is its current lease's token and it is running; else Rejected."""
    ex = get_execution(txn, exec16)
    if ex.state != common_pb2.EXECUTION_RUNNING or token_tuple(token) != token_tuple(ex.token):
        raise Rejected(
            Code.STALE_TOKEN,
            f"token {token_tuple(token)} is not the current lease of execution {ex.execution_id} "
            f"(current {token_tuple(ex.token)}, state {common_pb2.ExecutionState.Name(ex.state)})",
        )
    return ex


def read_result(txn: Txn, exec16: bytes) -> bytes | None:
    """The result an execution's last attempt handed back (None: none kept)."""
    return txn.get("results", exec16)


def read_epoch(txn: Txn) -> commands_pb2.Epoch:
    raw = txn.get("meta", META_EPOCH)
    ep = commands_pb2.Epoch()
    if raw is not None:
        ep.ParseFromString(raw)
    return ep


def put_task(txn: Txn, task16: bytes, task: Task, *, old: Task | None) -> None:
    """Write a task and keep its secondary indexes (state, tags, due, calendar refs) in step."""
    if old is not None:
        if old.state != task.state:
            txn.delete("tasks_by_state", state_key(old.state, task16))
        if due_of(old) and (due_of(old) != due_of(task) or task.state != common_pb2.TASK_SCHEDULED):
            txn.delete("due", due_key(due_of(old), task16))
        for k, v in old.spec.tags.items():
            if task.spec.tags.get(k) != v:
                txn.delete("tasks_by_tag", tag_key(k, v, task16))
        for name in _calendar_keys(old) - _calendar_keys(task):
            txn.delete("calendar_refs", calendar_ref_key(name, task16))
    txn.put("tasks", task16, task.SerializeToString())
    txn.put("tasks_by_state", state_key(task.state, task16), b"")
    for k, v in task.spec.tags.items():
        txn.put("tasks_by_tag", tag_key(k, v, task16), b"")
    for name in _calendar_keys(task):
        txn.put("calendar_refs", calendar_ref_key(name, task16), b"")
    if task.state == common_pb2.TASK_SCHEDULED and due_of(task):
        txn.put("due", due_key(due_of(task), task16), b"")


def remove_task(txn: Txn, task16: bytes, task: Task) -> None:
    """Delete a task and its own index entries (state, tags, due, calendar refs): `put_task` undone, and
    its statistics (raft.stats). Its executions and fire ledger are not touched (raft.retention deletes
    those)."""
    txn.delete("tasks", task16)
    stats.drop_task(txn, task16)
    txn.delete("tasks_by_state", state_key(task.state, task16))
    for k, v in task.spec.tags.items():
        txn.delete("tasks_by_tag", tag_key(k, v, task16))
    for name in _calendar_keys(task):
        txn.delete("calendar_refs", calendar_ref_key(name, task16))
    if due_of(task):
        txn.delete("due", due_key(due_of(task), task16))


__all__ = [
    "META_EPOCH",
    "META_LAST_APPLIED",
    "Rejected",
    "calendar_include_key",
    "calendar_ref_key",
    "due_key",
    "fire_key",
    "get_current",
    "get_execution",
    "get_task",
    "pending_key",
    "priority_rank",
    "put_task",
    "read_epoch",
    "read_result",
    "remove_task",
    "state_key",
    "tag_key",
]
