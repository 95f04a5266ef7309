"""Stored records and their secondary indexes: the key layout and the read/write helpers that keep a
task's or an execution's indexes in step with it. Used by the state machine's handlers and readers.

Search indexes (issue 15; read by raft.search):
- tasks by schedule kind (`tasks_by_kind`), by name (`tasks_by_name`), by the final state of their last
  execution (`tasks_by_outcome`), by namespace (`tasks_by_namespace`), kept by `put_task` /
  `remove_task` beside the older ones (state, tags, due, calendar refs);
- executions by state (`execs_by_state`, every execution), by the worker of their current or last lease
  (`execs_by_worker`), by when they ended (`execs_ended`) and by namespace (`execs_by_namespace`: an
  execution stores its task's namespace, which never changes), kept by `put_execution` (every write of
  an execution goes through it: it compares with the stored one) and `drop_execution`.
A store made by a version without them has the databases empty (kv.ADDED_LATER); `META_INDEXED` is set by
the first entry a fresh store applies (raft.state), and the searches that need these indexes fall back to
bounded walks without it (raft.search)."""

from __future__ import annotations

from cronraft.bounds import DEFAULT_NAMESPACE
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import stats
from cronraft.raft.codec import id_bytes, id_text, token_tuple
from cronraft.raft.firing import calendar_key, due_of
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import Code, Rejected

# The search indexes (the tables above): derived from the tasks and executions, kept by put_task and
# put_execution; a store older than them builds them once (META_INDEXED).
SEARCH_INDEXES: tuple[str, ...] = (
    "tasks_by_kind",
    "tasks_by_name",
    "tasks_by_outcome",
    "tasks_by_namespace",
    "execs_by_state",
    "execs_by_worker",
    "execs_ended",
    "execs_by_namespace",
)

Task = common_pb2.Task
Execution = common_pb2.Execution

# Protobuf methods taken from their class once, for the apply path of every execution: looked up on a
# message, a method costs a look-up of a field of that name first (upb), 0.1-0.2 us each time.
_task_from = Task.FromString
_execution_from = Execution.FromString
_task_bytes = Task.SerializeToString
_execution_bytes = Execution.SerializeToString

META_LAST_APPLIED = b"last_applied"
META_EPOCH = b"epoch"
META_INDEXED = b"search_indexes"  # set in a store whose search indexes are complete (see above)

TERMINAL_STATES = frozenset(
    {
        common_pb2.EXECUTION_SUCCEEDED,
        common_pb2.EXECUTION_FAILED,
        common_pb2.EXECUTION_TIMED_OUT,
        common_pb2.EXECUTION_CANCELLED,
        common_pb2.EXECUTION_LOST,
        common_pb2.EXECUTION_EXPIRED,
    }
)
# Schedule kinds in `tasks_by_kind` (the Schedule oneof's field numbers).
SCHEDULE_KINDS = {"cron": 1, "at": 2, "fixed_rate": 3, "fixed_delay": 4}

# The keys below are built on the apply path of every command: a one-byte prefix is looked up
# (`bytes([n])` builds a list first), and a time is encoded inline (`codec.u64`, without the call).
_BYTE = tuple(bytes((i,)) for i in range(256))
# priority_rank(p) as a key's first byte (anything but HIGH and LOW ranks as MEDIUM).
_RANK_BYTE = {common_pb2.HIGH: b"\x00", common_pb2.LOW: b"\x02"}
_MEDIUM_BYTE = b"\x01"


def due_key(due_ms: int, task16: bytes) -> bytes:
    return due_ms.to_bytes(8, "big") + task16


def state_key(state: int, task16: bytes) -> bytes:
    return _BYTE[state] + task16


def tag_key(k: str, v: str, task16: bytes) -> bytes:
    return k.encode() + b"\0" + v.encode() + b"\0" + task16


def fire_key(task16: bytes, nominal_ms: int) -> bytes:
    return task16 + nominal_ms.to_bytes(8, "big")


def pending_key(ex: Execution, exec16: bytes) -> bytes:
    # bytes([priority_rank(ex.priority)]) + u64(ex.fired_at_ms) + exec16
    return _RANK_BYTE.get(ex.priority, _MEDIUM_BYTE) + ex.fired_at_ms.to_bytes(8, "big") + exec16


def name_key(name: str, task16: bytes) -> bytes:
    return name.encode() + b"\0" + task16


def kind_code(task: Task) -> int:
    """The task's schedule kind as stored in `tasks_by_kind` (0: none)."""
    return SCHEDULE_KINDS.get(task.spec.schedule.WhichOneof("kind") or "", 0)


def namespace_key(namespace: str, id16: bytes) -> bytes:
    """A task's or an execution's entry in its namespace's index (the default one stored as "")."""
    return ("" if namespace == DEFAULT_NAMESPACE else namespace).encode() + b"\0" + id16


def worker_key(worker_id: str, exec16: bytes) -> bytes:
    return worker_id.encode() + b"\0" + exec16


def worker_of(ex: Execution) -> str:
    """The worker of the execution's current lease, else of its last attempt ("" : never leased)."""
    if ex.worker_id:
        return ex.worker_id
    return ex.attempts[-1].worker_id if ex.attempts else ""


def calendar_ref_key(name: str, task16: bytes) -> bytes:
    """A task that uses calendar `name` (see `calendar_include_key` for calendars that include it).
    `name` is the calendar's stored key (firing.calendar_key: qualified by its namespace)."""
    return name.encode() + b"\0T" + task16


def calendar_include_key(name: str, includer: str) -> bytes:
    """Calendar `includer` includes `name` (both stored keys: firing.calendar_key)."""
    return name.encode() + b"\0C" + includer.encode()


def _calendar_keys(task: Task) -> set[str]:
    """The stored keys of the calendars a task's schedule names: resolved in the task's namespace."""
    spec = task.spec
    names = spec.schedule.calendars
    if not names:  # most tasks
        return set()
    return {calendar_key(spec.namespace, name) for name in names}


def priority_rank(p: int) -> int:
    # HIGH first; UNSPECIFIED means MEDIUM.
    if p == common_pb2.HIGH:
        return 0
    return 2 if p == common_pb2.LOW else 1


# `into` (get_task, get_execution, get_current): an empty message to parse the record into, returned, such
# as the command result's own field on the leader (a handler that changes the record and answers it then
# answers it without copying it: with upb a copy serializes and parses again).


def get_task(txn: Txn, task16: bytes, into: Task | None = None) -> Task:
    raw = txn.get("tasks", task16)
    if raw is None:
        raise Rejected(Code.NOT_FOUND, f"task {id_text(task16)} not found")
    if into is None:
        return _task_from(raw)
    into.ParseFromString(raw)
    return into


def get_execution(txn: Txn, exec16: bytes, into: Execution | None = None) -> Execution:
    raw = txn.get("execs", exec16)
    if raw is None:
        raise Rejected(Code.NOT_FOUND, f"execution {id_text(exec16)} not found")
    if into is None:
        return _execution_from(raw)
    into.ParseFromString(raw)
    return into


def get_current(
    txn: Txn, exec16: bytes, token: common_pb2.FencingToken, into: Execution | None = None
) -> Execution:
    """The execution, if `token` is its current lease's token and it is running; else Rejected."""
    ex = get_execution(txn, exec16, into)
    current = ex.token
    # token_tuple(token) != token_tuple(current), field by field (a Complete's every time)
    if ex.state != common_pb2.EXECUTION_RUNNING or token.term != current.term or token.index != current.index:
        raise Rejected(
            Code.STALE_TOKEN,
            f"token {token_tuple(token)} is not the current lease of execution {ex.execution_id} "
            f"(current {token_tuple(ex.token)}, state {common_pb2.ExecutionState.Name(ex.state)})",
        )
    return ex


def read_result(txn: Txn, exec16: bytes) -> bytes | None:
    """The result an execution's last attempt handed back (None: none kept)."""
    return txn.get("results", exec16)


def read_epoch(txn: Txn, batch: stats.Batch | None = None) -> commands_pb2.Epoch:
    """The epoch committed last (read and parsed once per `batch`, when given: only an Epoch command, never
    batched, writes it; then the caller gets the batch's copy, to read only)."""
    if batch is not None:
        return batch.settled(txn, META_EPOCH, commands_pb2.Epoch)
    raw = txn.get("meta", META_EPOCH)
    ep = commands_pb2.Epoch()
    if raw is not None:
        ep.ParseFromString(raw)
    return ep


def put_task(txn: Txn, task16: bytes, task: Task, *, old: Task | None) -> None:
    """Write a task and keep its secondary indexes (state, tags, due, calendar refs, and the search
    indexes: kind, name, last outcome) in step.

    With `old` (the stored task), only the index entries that change are written: the others are in the
    store already (every write of a task goes through here), so writing them again would change no byte.
    That keeps a fire or a finish, which change neither the spec nor usually the state, to the task record
    and its due entry (bench/perf_inproc.py --per-command). An entry that may be missing is written as
    before (the search indexes of a store older than them: `_put_search_keys`)."""
    if old is None:
        _put_search_keys(txn, task16, task, None)
        txn.put("tasks", task16, task.SerializeToString(deterministic=True))
        txn.put("tasks_by_state", state_key(task.state, task16), b"")
        for k, v in task.spec.tags.items():
            txn.put("tasks_by_tag", tag_key(k, v, task16), b"")
        for name in _calendar_keys(task):
            txn.put("calendar_refs", calendar_ref_key(name, task16), b"")
        if task.state == common_pb2.TASK_SCHEDULED and due_of(task):
            txn.put("due", due_key(due_of(task), task16), b"")
        return
    same_spec = old.spec == task.spec  # a fire, a grant's finish: tags, calendars, kind, name unchanged
    _put_search_keys(txn, task16, task, old, same_spec=same_spec)
    old_state, state = old.state, task.state
    if old_state != state:
        txn.delete("tasks_by_state", state_key(old_state, task16))
    old_due, due = due_of(old), due_of(task)
    scheduled = state == common_pb2.TASK_SCHEDULED
    if old_due and (old_due != due or not scheduled):
        txn.delete("due", due_key(old_due, task16))
    if not same_spec:
        old_tags, tags = old.spec.tags, task.spec.tags
        for k, v in old_tags.items():
            if tags.get(k) != v:
                txn.delete("tasks_by_tag", tag_key(k, v, task16))
        old_cals, cals = _calendar_keys(old), _calendar_keys(task)
        for name in old_cals - cals:
            txn.delete("calendar_refs", calendar_ref_key(name, task16))
    txn.put("tasks", task16, task.SerializeToString(deterministic=True))
    if old_state != state:
        txn.put("tasks_by_state", state_key(state, task16), b"")
    if not same_spec:
        for k, v in tags.items():
            if old_tags.get(k) != v:
                txn.put("tasks_by_tag", tag_key(k, v, task16), b"")
        for name in cals - old_cals:
            txn.put("calendar_refs", calendar_ref_key(name, task16), b"")
    # Stored while the task was scheduled with the same due time: the entry is there already.
    if scheduled and due and not (old_state == common_pb2.TASK_SCHEDULED and old_due == due):
        txn.put("due", due_key(due, task16), b"")


TaskIndexed = tuple[int, int, int]


def task_indexed(task: Task) -> TaskIndexed:
    """What a task's index entries depend on besides its spec: (state, due time, last outcome)."""
    return task.state, task.next_due_ms or task.next_fire_ms, task.last_outcome


def put_task_same_spec(
    txn: Txn, task16: bytes, task: Task, before: TaskIndexed, *, indexed: bool = False
) -> bytes:
    """`put_task(txn, task16, task, old=stored)` for a task whose spec did not change since it was read
    (a fire, a finish), `before` being `task_indexed(stored)`: the same writes, in the same order, without
    a copy of the stored task to compare with (a copy and a spec comparison cost about as much as parsing
    the task). `indexed`: the store's search indexes are complete (META_INDEXED), so the task's kind and
    name entries are there already and are not written again when its last outcome changes. Returns the
    bytes stored (a result may answer them: Ctx.answer_task)."""
    old_state, old_due, old_outcome = before
    state, outcome = task.state, task.last_outcome
    if old_outcome != outcome:  # `_put_search_keys` with the kind, the name and the namespace unchanged
        if old_outcome:
            txn.delete("tasks_by_outcome", _BYTE[old_outcome] + task16)
        if not indexed:  # a store older than the search indexes gets them as before
            kind = kind_code(task)
            if kind:
                txn.put("tasks_by_kind", _BYTE[kind] + task16, b"")
            txn.put("tasks_by_name", name_key(task.spec.name, task16), b"")
        if outcome:
            txn.put("tasks_by_outcome", _BYTE[outcome] + task16, b"")
    if old_state != state:
        txn.delete("tasks_by_state", _BYTE[old_state] + task16)
    due = task.next_due_ms or task.next_fire_ms
    scheduled = state == common_pb2.TASK_SCHEDULED
    if old_due and (old_due != due or not scheduled):
        txn.delete("due", old_due.to_bytes(8, "big") + task16)
    stored = _task_bytes(task, deterministic=True)  # a Task holds maps (its tags)
    txn.put("tasks", task16, stored)
    if old_state != state:
        txn.put("tasks_by_state", _BYTE[state] + task16, b"")
    if scheduled and due and not (old_state == common_pb2.TASK_SCHEDULED and old_due == due):
        txn.put("due", due.to_bytes(8, "big") + task16, b"")
    return stored


def _put_search_keys(
    txn: Txn, task16: bytes, task: Task, old: Task | None, *, same_spec: bool = False
) -> None:
    outcome = task.last_outcome
    if same_spec and old is not None and old.last_outcome == outcome:
        return  # the usual case (a fire, a finish): nothing searched for changed
    kind, name = kind_code(task), task.spec.name
    if old is None or old.spec.namespace != task.spec.namespace:  # set once: a task never moves
        if old is not None:
            txn.delete("tasks_by_namespace", namespace_key(old.spec.namespace, task16))
        txn.put("tasks_by_namespace", namespace_key(task.spec.namespace, task16), b"")
    if old is not None:
        old_kind = kind_code(old)
        if old_kind == kind and old.spec.name == name and old.last_outcome == outcome:
            return  # nothing searched for changed
        if old_kind != kind and old_kind:
            txn.delete("tasks_by_kind", bytes([old_kind]) + task16)
        if old.spec.name != name:
            txn.delete("tasks_by_name", name_key(old.spec.name, task16))
        if old.last_outcome != outcome and old.last_outcome:
            txn.delete("tasks_by_outcome", bytes([old.last_outcome]) + task16)
    if kind:
        txn.put("tasks_by_kind", bytes([kind]) + task16, b"")
    txn.put("tasks_by_name", name_key(name, task16), b"")
    if outcome:
        txn.put("tasks_by_outcome", bytes([outcome]) + task16, b"")


Indexed = tuple[int, str, int, str]
# put_execution's default: read what is stored. Tested by value (no execution has state -1), not by `is`:
# compiled (cronraft/_native.py), a tuple is unboxed and boxed again, and keeps no identity.
_READ = (-1, "", 0, "")


def indexed(ex: Execution) -> Indexed:
    """What an execution's search-index entries depend on: (state, worker, ended at or 0, namespace)."""
    state = ex.state
    worker = ex.worker_id or worker_of(ex)  # worker_of's usual case inline (called for every write)
    return state, worker, ex.completed_at_ms if state in TERMINAL_STATES else 0, ex.namespace


def _set_exec_keys(txn: Txn, exec16: bytes, task16: bytes, old: Indexed | None, new: Indexed | None) -> None:
    """Move an execution's index entries from `old` (None: none) to `new` (None: none)."""
    o_state, o_worker, o_ended, o_ns = old or (0, "", 0, None)
    n_state, n_worker, n_ended, n_ns = new or (0, "", 0, None)
    if o_state != n_state:
        if o_state:
            txn.delete("execs_by_state", _BYTE[o_state] + exec16)
        if n_state:
            txn.put("execs_by_state", _BYTE[n_state] + exec16, task16)
    if o_worker != n_worker:
        if o_worker:
            txn.delete("execs_by_worker", worker_key(o_worker, exec16))
        if n_worker:
            txn.put("execs_by_worker", worker_key(n_worker, exec16), task16)
    if (o_ended or n_ended) and (o_ended != n_ended or o_state != n_state):  # its value holds the state
        if o_ended:
            txn.delete("execs_ended", o_ended.to_bytes(8, "big") + exec16)
        if n_ended:
            txn.put("execs_ended", n_ended.to_bytes(8, "big") + exec16, _BYTE[n_state] + task16)
    if o_ns != n_ns:
        if o_ns is not None:
            txn.delete("execs_by_namespace", namespace_key(o_ns, exec16))
        if n_ns is not None:
            txn.put("execs_by_namespace", namespace_key(n_ns, exec16), task16)


def put_execution(
    txn: Txn,
    exec16: bytes,
    ex: Execution,
    before: Indexed | None = _READ,
    *,
    task16: bytes | None = None,
    after: Indexed | None = None,
) -> bytes:
    """Write an execution and keep its search indexes in step with what was stored before: `before` is
    `indexed()` of the stored one when the caller knows it (the hot paths: fire, grant, finish; None: a
    new execution), else it is read. `task16`: its task's key bytes, when the caller has them; `after`:
    `indexed(ex)`, when the caller knows it without reading `ex` again (finish). Returns the bytes stored
    (a result may answer them: Ctx.answer)."""
    new = indexed(ex) if after is None else after
    old = before
    if old is not None and old[0] == -1:  # _READ
        raw = txn.get("execs", exec16)
        old = None if raw is None else indexed(Execution.FromString(raw))
    if old != new:
        _set_exec_keys(txn, exec16, id_bytes(ex.task_id) if task16 is None else task16, old, new)
    # An Execution holds no map (codec.MAPLESS): the bytes of `deterministic=True`, cheaper.
    stored = _execution_bytes(ex)
    txn.put("execs", exec16, stored)
    return stored


def drop_execution(txn: Txn, exec16: bytes, ex: Execution, *, stored: bool = False) -> Execution:
    """Delete an execution's record and its search-index entries (its other index entries are the
    caller's: raft.retention.delete_execution). `stored`: `ex` is parsed from the stored record, unchanged
    since (else the record is read: the index entries to delete are the stored ones). Returns the
    execution as stored (`ex` when there is no record)."""
    if not stored:
        raw = txn.get("execs", exec16)
        if raw is not None:
            ex = _execution_from(raw)
    _set_exec_keys(txn, exec16, b"", indexed(ex), None)
    txn.delete("execs", exec16)
    return ex


def remove_task(txn: Txn, task16: bytes, task: Task) -> None:
    """Delete a task and its own index entries (state, tags, due, calendar refs): `put_task` undone, and
    its statistics (raft.stats). Its executions and fire ledger are not touched (raft.retention deletes
    those)."""
    txn.delete("tasks", task16)
    stats.drop_task(txn, task16)
    if kind_code(task):
        txn.delete("tasks_by_kind", bytes([kind_code(task)]) + task16)
    txn.delete("tasks_by_name", name_key(task.spec.name, task16))
    txn.delete("tasks_by_namespace", namespace_key(task.spec.namespace, task16))
    if task.last_outcome:
        txn.delete("tasks_by_outcome", bytes([task.last_outcome]) + task16)
    txn.delete("tasks_by_state", state_key(task.state, task16))
    for k, v in task.spec.tags.items():
        txn.delete("tasks_by_tag", tag_key(k, v, task16))
    for name in _calendar_keys(task):
        txn.delete("calendar_refs", calendar_ref_key(name, task16))
    if due_of(task):
        txn.delete("due", due_key(due_of(task), task16))


__all__ = [
    "META_EPOCH",
    "META_INDEXED",
    "META_LAST_APPLIED",
    "SCHEDULE_KINDS",
    "SEARCH_INDEXES",
    "TERMINAL_STATES",
    "Rejected",
    "calendar_include_key",
    "calendar_ref_key",
    "drop_execution",
    "due_key",
    "fire_key",
    "get_current",
    "get_execution",
    "get_task",
    "indexed",
    "kind_code",
    "name_key",
    "namespace_key",
    "pending_key",
    "priority_rank",
    "put_execution",
    "put_task",
    "put_task_same_spec",
    "read_epoch",
    "read_result",
    "remove_task",
    "state_key",
    "tag_key",
    "task_indexed",
    "worker_key",
    "worker_of",
]
