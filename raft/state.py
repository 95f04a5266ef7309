"""The replicated state machine: `apply` of a batch of commands to the store, deterministically.

Every node applies the same log entries in the same order and must end in the same state, so this
module never reads a clock, a random source or the configuration: times, ids and defaults arrive
stamped into the commands by the leader (I1). Each log entry is applied in one write transaction that
also records `last_applied`, so an entry replayed after a restart is recognised and skipped (I2).

Rules enforced here rather than on the leader, because only the log order is authoritative:
- a fire `(task_id, nominal)` is committed at most once: a Fire must name the task's current
  `next_fire_ms`, which then moves strictly forward (I3);
- a lease's fencing token is `(epoch term, log index of its Grant)`; results and expiries carrying any
  other token are rejected as stale (I5);
- client commands with a `request_id` are answered from the dedup table when seen again, which makes
  retrying an "outcome unknown" proposal safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cronraft.errors import CronraftError, InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import schedule
from cronraft.raft.codec import (
    CodecError,
    decode_batch,
    from_u64,
    id_bytes,
    id_text,
    token_tuple,
    u64,
)
from cronraft.raft.kv import KV, Txn
from cronraft.raft.validate import validate_spec

Task = common_pb2.Task
Execution = common_pb2.Execution
TaskSpec = common_pb2.TaskSpec
CommandResult = commands_pb2.CommandResult

# Defaults the leader normally stamps into a spec; kept here only as the fallback for specs that
# arrive without them, so every node resolves them identically.
DEFAULT_MAX_ATTEMPTS = 3
# Requests are remembered this long for deduplication (measured in stamped leader time).
DEDUP_RETENTION_MS = 24 * 3600 * 1000
# At most this many expired dedup records are pruned per entry, to bound the cost of one apply.
DEDUP_PRUNE_PER_ENTRY = 64
# Result tails stored with an execution are capped so that one result cannot bloat the state.
MAX_TAIL_BYTES = 64 * 1024
# Missed fires younger than this are all fired after an outage or a failover; older ones are skipped
# (the first late fire still runs once). Seam for the per-task misfire policy of the next issue.
DEFAULT_CATCHUP_WINDOW_MS = 60_000
# Bounds the walk over skipped nominal times.
MAX_SKIP_STEPS = 1_000_000

_META_LAST_APPLIED = b"last_applied"
_META_EPOCH = b"epoch"

_OUTCOME_STATE = {
    common_pb2.ATTEMPT_SUCCEEDED: common_pb2.EXECUTION_SUCCEEDED,
    common_pb2.ATTEMPT_FAILED: common_pb2.EXECUTION_FAILED,
    common_pb2.ATTEMPT_TIMED_OUT: common_pb2.EXECUTION_TIMED_OUT,
    common_pb2.ATTEMPT_CANCELLED: common_pb2.EXECUTION_CANCELLED,
}
TERMINAL_STATES = frozenset(
    {
        common_pb2.EXECUTION_SUCCEEDED,
        common_pb2.EXECUTION_FAILED,
        common_pb2.EXECUTION_TIMED_OUT,
        common_pb2.EXECUTION_CANCELLED,
        common_pb2.EXECUTION_LOST,
    }
)


class Rejected(CronraftError):
    """A command that is well-formed but not applicable to the current state (answered, not applied)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------- keys


def _due_key(due_ms: int, task16: bytes) -> bytes:
    return u64(due_ms) + task16


def _state_key(state: int, task16: bytes) -> bytes:
    return bytes([state]) + task16


def _tag_key(k: str, v: str, task16: bytes) -> bytes:
    return k.encode() + b"\0" + v.encode() + b"\0" + task16


def _fire_key(task16: bytes, nominal_ms: int) -> bytes:
    return task16 + u64(nominal_ms)


def _pending_key(ex: Execution, exec16: bytes) -> bytes:
    return bytes([priority_rank(ex.priority)]) + u64(ex.fired_at_ms) + exec16


def priority_rank(p: int) -> int:
    # HIGH first; UNSPECIFIED means MEDIUM.
    if p == common_pb2.HIGH:
        return 0
    return 2 if p == common_pb2.LOW else 1


# ------------------------------------------------------------------------------------------- readers


def read_task(txn: Txn, task_id: str) -> Task | None:
    raw = txn.get("tasks", id_bytes(task_id, field="task_id"))
    if raw is None:
        return None
    t = Task()
    t.ParseFromString(raw)
    return t


def read_execution(txn: Txn, execution_id: str) -> Execution | None:
    raw = txn.get("execs", id_bytes(execution_id, field="execution_id"))
    if raw is None:
        return None
    e = Execution()
    e.ParseFromString(raw)
    return e


def read_fire(txn: Txn, task_id: str, nominal_ms: int) -> Execution | None:
    """The execution created by the fire of `task_id` at `nominal_ms`, if that fire committed."""
    exec16 = txn.get("fires", _fire_key(id_bytes(task_id, field="task_id"), nominal_ms))
    return None if exec16 is None else _get_execution(txn, exec16)


def read_last_applied(txn: Txn) -> int:
    raw = txn.get("meta", _META_LAST_APPLIED)
    return 0 if raw is None else from_u64(raw)


def read_epoch(txn: Txn) -> commands_pb2.Epoch:
    raw = txn.get("meta", _META_EPOCH)
    ep = commands_pb2.Epoch()
    if raw is not None:
        ep.ParseFromString(raw)
    return ep


def due_tasks(
    txn: Txn, until_ms: int, *, after: tuple[int, str] | None = None, limit: int = 10_000
) -> list[tuple[int, str]]:
    """(due_ms, task_id) of tasks whose next fire is <= until_ms, in due order, after `after` if given."""
    start = b"" if after is None else _due_key(after[0], id_bytes(after[1])) + b"\0"
    out: list[tuple[int, str]] = []
    for k, _ in txn.scan("due", start, u64(until_ms + 1)):
        out.append((from_u64(k[:8]), id_text(k[8:24])))
        if len(out) >= limit:
            break
    return out


def pending_executions(txn: Txn, *, limit: int = 10_000) -> list[Execution]:
    """Executions waiting for a lease, highest priority first, then oldest fire first."""
    out: list[Execution] = []
    for k, _ in txn.scan("pending"):
        raw = txn.get("execs", k[9:25])
        if raw is not None:
            e = Execution()
            e.ParseFromString(raw)
            out.append(e)
        if len(out) >= limit:
            break
    return out


def running_executions(txn: Txn) -> Iterator[Execution]:
    """Every execution that holds a lease (bounded by the number of concurrent executions)."""
    for k, _ in txn.scan("running"):
        raw = txn.get("execs", k)
        if raw is not None:
            e = Execution()
            e.ParseFromString(raw)
            yield e


def list_tasks(
    txn: Txn,
    *,
    state: int = 0,
    tags: dict[str, str] | None = None,
    name_prefix: str = "",
    page_size: int = 100,
    page_token: str = "",
) -> tuple[list[Task], str]:
    """One page of tasks in id (= creation) order, filtered; the token resumes after the last one."""
    after = id_bytes(page_token, field="page_token") if page_token else None
    tags = dict(tags or {})

    # Walk the narrowest index: one tag's index, else the state index, else every task.
    candidates: Iterator[bytes]
    if tags:
        k0, v0 = sorted(tags.items())[0]
        prefix = _tag_key(k0, v0, b"")
        candidates = _ids_from_index(txn, "tasks_by_tag", prefix, after)
    elif state:
        candidates = _ids_from_index(txn, "tasks_by_state", bytes([state]), after)
    else:
        start = after + b"\0" if after else b""
        candidates = (k for k, _ in txn.scan("tasks", start))

    out: list[Task] = []
    last = b""
    for task16 in candidates:
        raw = txn.get("tasks", task16)
        if raw is None:
            continue
        t = Task()
        t.ParseFromString(raw)
        last = task16
        if state and t.state != state:
            continue
        if name_prefix and not t.spec.name.startswith(name_prefix):
            continue
        if any(t.spec.tags.get(k) != v for k, v in tags.items()):
            continue
        out.append(t)
        if len(out) >= page_size:
            break
    more = len(out) >= page_size and last != b""
    return out, (id_text(last) if more else "")


def _ids_from_index(txn: Txn, db: str, prefix: bytes, after: bytes | None) -> Iterator[bytes]:
    start = prefix + after + b"\0" if after else prefix
    end = prefix[:-1] + bytes([prefix[-1] + 1]) if prefix else None
    for k, _ in txn.scan(db, start, end):
        yield k[-16:]


def list_executions(
    txn: Txn, task_id: str, *, state: int = 0, page_size: int = 100, page_token: str = ""
) -> tuple[list[Execution], str]:
    """One page of a task's executions, newest nominal time first."""
    task16 = id_bytes(task_id, field="task_id")
    if page_token and not page_token.isdigit():
        raise InvalidArgument("page_token", "not a token returned by a previous ListExecutions call")
    end = _fire_key(task16, int(page_token)) if page_token else task16 + b"\xff" * 8 + b"\xff"
    out: list[Execution] = []
    last_nominal: int | None = None
    for k, exec16 in txn.scan("fires", task16, end, reverse=True):
        raw = txn.get("execs", exec16)
        last_nominal = from_u64(k[16:24])
        if raw is None:
            continue
        e = Execution()
        e.ParseFromString(raw)
        if state and e.state != state:
            continue
        out.append(e)
        if len(out) >= page_size:
            break
    more = len(out) >= page_size and last_nominal is not None
    return out, (str(last_nominal) if more else "")


# ------------------------------------------------------------------------------------- state machine


class StateMachine:
    """Applies log entries to a `KV` store. Single-threaded: the replicator calls `apply_entry` in log
    order from one thread; readers use `kv.read()` concurrently."""

    def __init__(self, kv: KV, *, on_applied: Callable[[int], None] | None = None) -> None:
        self.kv = kv
        self._on_applied = on_applied
        with kv.read() as txn:
            self._last_applied = read_last_applied(txn)

    def last_applied(self) -> int:
        return self._last_applied

    def apply_entry(self, index: int, payload: bytes) -> bytes | None:
        """Apply the batch at log `index`; the serialized `BatchResult`, or None if already applied."""
        if index <= self._last_applied:
            return None
        with self.kv.write() as txn:
            if index <= read_last_applied(txn):  # another instance applied it (restored snapshot)
                self._last_applied = read_last_applied(txn)
                return None
            result = commands_pb2.BatchResult()
            try:
                batch = decode_batch(payload)
            except CodecError as e:
                # Deterministic on every node: the entry is recorded as applied with no effect.
                result.results.append(CommandResult(applied=False, error_code="codec", error=str(e)))
            else:
                for i, cmd in enumerate(batch.commands):
                    result.results.append(self._apply_command(txn, index, i, cmd))
            txn.put("meta", _META_LAST_APPLIED, u64(index))
        self._last_applied = index
        if self._on_applied is not None:
            self._on_applied(index)
        return result.SerializeToString()

    # One command. Handlers check everything before writing, so a rejection leaves no partial effect.
    def _apply_command(self, txn: Txn, index: int, position: int, cmd: commands_pb2.Command) -> CommandResult:
        if cmd.request_id:
            seen = txn.get("requests", cmd.request_id.encode())
            if seen is not None:
                prior = CommandResult()
                prior.ParseFromString(seen)
                return prior
        kind = cmd.WhichOneof("body")
        handler = _HANDLERS.get(kind or "")
        try:
            if handler is None:
                raise Rejected("unknown_command", f"unknown command {kind!r}")
            res = handler(self, txn, index, cmd)
        except Rejected as r:
            res = CommandResult(applied=False, error_code=r.code, error=str(r))
        except InvalidArgument as e:
            res = CommandResult(applied=False, error_code="invalid_argument", error=str(e))
        if cmd.request_id:
            txn.put("requests", cmd.request_id.encode(), res.SerializeToString())
            txn.put("requests_by_time", u64(cmd.stamped_at_ms) + cmd.request_id.encode(), b"")
            if position == 0:
                _prune_requests(txn, cmd.stamped_at_ms - DEDUP_RETENTION_MS)
        return res

    # -- task commands

    def _create_task(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        c = cmd.create_task
        task16 = id_bytes(c.task_id, field="task_id")
        if txn.get("tasks", task16) is not None:
            raise Rejected("already_exists", f"task {c.task_id} already exists")
        validate_spec(c.spec)
        now = cmd.stamped_at_ms
        task = Task(task_id=c.task_id, created_at_ms=now, updated_at_ms=now, version=index)
        task.spec.CopyFrom(c.spec)
        first = schedule.first_fire(c.spec.schedule, now)
        _set_next(task, first)
        _put_task(txn, task16, task, old=None)
        return CommandResult(applied=True, task=task)

    def _cancel_task(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        task16 = id_bytes(cmd.cancel_task.task_id, field="task_id")
        old = _get_task(txn, task16)
        if old.state == common_pb2.TASK_CANCELLED:
            return CommandResult(applied=True, task=old)
        task = Task()
        task.CopyFrom(old)
        task.state = common_pb2.TASK_CANCELLED
        task.next_fire_ms = 0
        task.updated_at_ms = cmd.stamped_at_ms
        task.version = index
        _put_task(txn, task16, task, old=old)
        # Executions still waiting for a lease will never start now; running ones finish (or are
        # cancelled by the execution-cancel command of a later issue).
        for _, exec16 in list(txn.scan("fires", task16, task16 + b"\xff" * 9)):
            ex = _get_execution(txn, exec16)
            if ex.state == common_pb2.EXECUTION_PENDING:
                txn.delete("pending", _pending_key(ex, exec16))
                ex.state = common_pb2.EXECUTION_CANCELLED
                ex.error = "task cancelled before the execution started"
                ex.completed_at_ms = cmd.stamped_at_ms
                txn.put("execs", exec16, ex.SerializeToString())
        return CommandResult(applied=True, task=task)

    # -- leadership

    def _epoch(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        cur = read_epoch(txn)
        if cmd.epoch.term <= cur.term:
            raise Rejected("stale_epoch", f"epoch {cmd.epoch.term} is not newer than {cur.term}")
        txn.put("meta", _META_EPOCH, cmd.epoch.SerializeToString())
        return CommandResult(applied=True)

    # -- fires and leases

    def _fire(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        f = cmd.fire
        task16 = id_bytes(f.task_id, field="task_id")
        exec16 = id_bytes(f.execution_id, field="execution_id")
        old = _get_task(txn, task16)
        if old.state != common_pb2.TASK_SCHEDULED:
            raise Rejected("invalid_state", f"task {f.task_id} is not scheduled")
        if f.nominal_time_ms != old.next_fire_ms:
            # Already fired (a retried or duplicated proposal) or rescheduled meanwhile: I3.
            raise Rejected("not_due", f"task {f.task_id} is not due at {f.nominal_time_ms}")
        if txn.get("fires", _fire_key(task16, f.nominal_time_ms)) is not None:
            raise Rejected("already_fired", f"task {f.task_id} already fired at {f.nominal_time_ms}")
        if txn.get("execs", exec16) is not None:
            raise Rejected("already_exists", f"execution {f.execution_id} already exists")
        now = cmd.stamped_at_ms
        ex = Execution(
            execution_id=f.execution_id,
            task_id=f.task_id,
            nominal_time_ms=f.nominal_time_ms,
            fired_at_ms=now,
            state=common_pb2.EXECUTION_PENDING,
            guarantee=old.spec.guarantee,
            priority=old.spec.priority,
        )
        txn.put("execs", exec16, ex.SerializeToString())
        txn.put("fires", _fire_key(task16, f.nominal_time_ms), exec16)
        txn.put("pending", _pending_key(ex, exec16), b"")

        task = Task()
        task.CopyFrom(old)
        task.last_fired_nominal_ms = f.nominal_time_ms
        task.fire_count += 1
        task.updated_at_ms = now
        task.version = index
        _set_next(task, _following_fire(task, f.nominal_time_ms, now))
        _put_task(txn, task16, task, old=old)
        return CommandResult(applied=True, task=task, execution=ex)

    def _grant(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        g = cmd.grant
        exec16 = id_bytes(g.execution_id, field="execution_id")
        ex = _get_execution(txn, exec16)
        if ex.state != common_pb2.EXECUTION_PENDING:
            raise Rejected("invalid_state", f"execution {g.execution_id} is not pending")
        epoch = read_epoch(txn)
        if epoch.term == 0:
            raise Rejected("no_epoch", "no leader epoch committed yet")
        txn.delete("pending", _pending_key(ex, exec16))
        ex.state = common_pb2.EXECUTION_RUNNING
        ex.attempt += 1
        ex.worker_id = g.worker_id
        ex.token.term = epoch.term
        ex.token.index = index
        ex.leased_at_ms = cmd.stamped_at_ms
        txn.put("execs", exec16, ex.SerializeToString())
        txn.put("running", exec16, b"")
        return CommandResult(applied=True, execution=ex)

    def _complete(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        c = cmd.complete
        exec16 = id_bytes(c.execution_id, field="execution_id")
        ex = _get_current(txn, exec16, c.token)
        r = c.result
        ex.state = _OUTCOME_STATE.get(r.outcome, common_pb2.EXECUTION_FAILED)
        ex.exit_code = r.exit_code
        ex.started_at_ms = r.started_at_ms
        ex.finished_at_ms = r.finished_at_ms
        ex.stdout_tail = bytes(r.stdout_tail[-MAX_TAIL_BYTES:])
        ex.stderr_tail = bytes(r.stderr_tail[-MAX_TAIL_BYTES:])
        ex.error = r.error[:4096]
        ex.completed_at_ms = cmd.stamped_at_ms
        txn.put("execs", exec16, ex.SerializeToString())
        txn.delete("running", exec16)
        return CommandResult(applied=True, execution=ex)

    def _expire_lease(self, txn: Txn, index: int, cmd: commands_pb2.Command) -> CommandResult:
        x = cmd.expire_lease
        exec16 = id_bytes(x.execution_id, field="execution_id")
        ex = _get_current(txn, exec16, x.token)
        txn.delete("running", exec16)
        task = _get_task(txn, id_bytes(ex.task_id))
        max_attempts = task.spec.max_attempts or DEFAULT_MAX_ATTEMPTS
        if ex.guarantee == common_pb2.AT_MOST_ONCE:
            ex.state = common_pb2.EXECUTION_LOST
            ex.error = "lease expired; at_most_once executions are never re-dispatched"
            ex.completed_at_ms = cmd.stamped_at_ms
        elif ex.attempt >= max_attempts:
            ex.state = common_pb2.EXECUTION_LOST
            ex.error = f"lease expired on attempt {ex.attempt} of {max_attempts}"
            ex.completed_at_ms = cmd.stamped_at_ms
        else:
            ex.state = common_pb2.EXECUTION_PENDING
            ex.worker_id = ""
            txn.put("pending", _pending_key(ex, exec16), b"")
        txn.put("execs", exec16, ex.SerializeToString())
        return CommandResult(applied=True, execution=ex)


_Handler = Callable[[StateMachine, Txn, int, commands_pb2.Command], CommandResult]
_HANDLERS: dict[str, _Handler] = {
    "create_task": StateMachine._create_task,
    "cancel_task": StateMachine._cancel_task,
    "epoch": StateMachine._epoch,
    "fire": StateMachine._fire,
    "grant": StateMachine._grant,
    "complete": StateMachine._complete,
    "expire_lease": StateMachine._expire_lease,
}


# ------------------------------------------------------------------------------------------- helpers


def _get_task(txn: Txn, task16: bytes) -> Task:
    raw = txn.get("tasks", task16)
    if raw is None:
        raise Rejected("not_found", f"task {id_text(task16)} not found")
    t = Task()
    t.ParseFromString(raw)
    return t


def _get_execution(txn: Txn, exec16: bytes) -> Execution:
    raw = txn.get("execs", exec16)
    if raw is None:
        raise Rejected("not_found", f"execution {id_text(exec16)} not found")
    e = Execution()
    e.ParseFromString(raw)
    return e


def _get_current(txn: Txn, exec16: bytes, token: common_pb2.FencingToken) -> Execution:
    """The execution, if `token` is its current lease's token and it is running; else Rejected."""
    ex = _get_execution(txn, exec16)
    if ex.state != common_pb2.EXECUTION_RUNNING or token_tuple(token) != token_tuple(ex.token):
        raise Rejected(
            "stale_token",
            f"token {token_tuple(token)} is not the current lease of execution {ex.execution_id} "
            f"(current {token_tuple(ex.token)}, state {common_pb2.ExecutionState.Name(ex.state)})",
        )
    return ex


def _set_next(task: Task, next_ms: int | None) -> None:
    """Set the next nominal fire time, or complete the task when there is none (window, max_runs)."""
    sched = task.spec.schedule
    if next_ms is not None and sched.max_runs and task.fire_count >= sched.max_runs:
        next_ms = None
    if next_ms is None:
        task.next_fire_ms = 0
        task.state = common_pb2.TASK_COMPLETED
    else:
        task.next_fire_ms = next_ms
        task.state = common_pb2.TASK_SCHEDULED


def _following_fire(task: Task, nominal_ms: int, now_ms: int) -> int | None:
    """The next nominal time after a fire at `nominal_ms`, committed at leader time `now_ms`.

    Seam for the misfire policy (next issue). Today's rule: every missed nominal time within
    DEFAULT_CATCHUP_WINDOW_MS of `now_ms` still fires (a failover loses nothing); older ones are
    skipped, so a cluster that was down for a week does not replay a week of minutely fires.
    """
    sched = task.spec.schedule
    nxt = schedule.next_fire(sched, nominal_ms)
    steps = 0
    oldest = now_ms - DEFAULT_CATCHUP_WINDOW_MS
    while nxt is not None and nxt < oldest and steps < MAX_SKIP_STEPS:
        nxt = schedule.next_fire(sched, nxt)
        steps += 1
    return nxt


def _put_task(txn: Txn, task16: bytes, task: Task, *, old: Task | None) -> None:
    """Write a task and keep its secondary indexes (state, tags, due) in step."""
    if old is not None:
        if old.state != task.state:
            txn.delete("tasks_by_state", _state_key(old.state, task16))
        if old.next_fire_ms and old.next_fire_ms != task.next_fire_ms:
            txn.delete("due", _due_key(old.next_fire_ms, task16))
        for k, v in old.spec.tags.items():
            if task.spec.tags.get(k) != v:
                txn.delete("tasks_by_tag", _tag_key(k, v, task16))
    txn.put("tasks", task16, task.SerializeToString())
    txn.put("tasks_by_state", _state_key(task.state, task16), b"")
    for k, v in task.spec.tags.items():
        txn.put("tasks_by_tag", _tag_key(k, v, task16), b"")
    if task.state == common_pb2.TASK_SCHEDULED and task.next_fire_ms:
        txn.put("due", _due_key(task.next_fire_ms, task16), b"")


def _prune_requests(txn: Txn, before_ms: int) -> None:
    if before_ms <= 0:
        return
    doomed = []
    for k, _ in txn.scan("requests_by_time", b"", u64(before_ms)):
        doomed.append(k)
        if len(doomed) >= DEDUP_PRUNE_PER_ENTRY:
            break
    for k in doomed:
        txn.delete("requests_by_time", k)
        txn.delete("requests", k[8:])


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "TERMINAL_STATES",
    "Rejected",
    "StateMachine",
    "due_tasks",
    "list_executions",
    "list_tasks",
    "pending_executions",
    "priority_rank",
    "read_epoch",
    "read_execution",
    "read_fire",
    "read_last_applied",
    "read_task",
    "running_executions",
]
