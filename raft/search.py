"""Search: tasks and executions found by their filters (issue 15), one index walk per page.

Each search picks its *plan* from the query (a pure function of it: the same query always walks the
same index, so its page tokens stay valid from page to page), walks that one index from the page token,
and checks the query's other filters on what it reads. A page reads at most `scan_limit` index entries:
a filter the walked index does not answer can leave a page short, even empty, with a next-page token
(only an empty token means the end), so that no call walks a million entries (EXEC_SCAN_LIMIT entries
for executions, SCAN_LIMIT for tasks). The indexes are
raft.records' (kept by apply); nothing here writes.

Executions (`search_executions`), newest first. Plans, the first that applies:
- `task`: a task's executions from `fires`, newest nominal time first (the page token is a nominal time,
  as ListExecutions' always was);
- `ended` (`by_completed`: the window is on completion times): `execs_ended`, latest end first;
- `worker`: `execs_by_worker` (the worker of the current or last lease), newest fire first;
- `namespace`: `execs_by_namespace`, newest fire first;
- `state`: `execs_by_state` (one walk per state asked for, merged), newest fire first;
- `tagged` (tags only): `execs_by_state` over every state, merged: its entries name their task, whose tags
  are checked once per page and task before any execution is read;
- `all`: `execs` itself, newest fire first.
"Newest fire first" is execution-id order: an id starts with the leader's time when it fired it
(codec.make_id), so a window on fire times narrows the walk to ids of those times, widened by
`ID_SLACK_MS` for ids made before their fire committed; the fire time itself is then checked exactly.

Tasks (`search_tasks`). Plans: `due` (a next-fire window: the due index, soonest first), `tag` (the
first tag: by id), `name` (a name prefix: by name), `namespace` (by id), `outcome` (last outcome: by
id), `kind` (schedule kind: by id), `state` (by id), `all` (by id). Id order is creation order.

Without the search indexes (a store from an older version: records.META_INDEXED unset) the plans that
need them walk `tasks` or `execs` instead: the same answers, in id order, with more short pages.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.codec import from_u64, id_bytes, id_text, u64
from cronraft.raft.firing import due_of
from cronraft.raft.kv import Txn
from cronraft.raft.records import (
    META_INDEXED,
    SCHEDULE_KINDS,
    fire_key,
    kind_code,
    name_key,
    namespace_key,
    state_key,
    tag_key,
    worker_key,
    worker_of,
)
from cronraft.raft.validate import stored_namespace

Task = common_pb2.Task
Execution = common_pb2.Execution

SCAN_LIMIT = 10_000  # index entries one page of tasks may read
# Index entries one page of executions may read: an execution's filters cost more to check (a task's tags
# and namespace, then the record), and the indexes hold many more executions than tasks.
EXEC_SCAN_LIMIT = 5_000
ID_SLACK_MS = 10 * 60_000  # an execution id's time may precede its fire time by this much
_MAX_MS = (1 << 48) - 1  # the largest time an id holds
_NOT_OURS = "not a token returned by a previous call with the same filters"


@dataclass(frozen=True)
class ExecutionQuery:
    """Filters of an execution search; every one given must match. `since_ms` <= time < `until_ms`
    (0: unbounded) on fire times, or on completion times with `by_completed` (then only executions that
    ended match). `namespace` None: every namespace; "" or "default": the default one."""

    task_id: str = ""
    states: frozenset[int] = frozenset()
    since_ms: int = 0
    until_ms: int = 0
    by_completed: bool = False
    worker_id: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    namespace: str | None = None


@dataclass(frozen=True)
class TaskQuery:
    """Filters of a task search; every one given must match. The next-fire window is on the due time
    (`next_due_ms`: the nominal time moved by jitter or a calendar roll), `next_after_ms` <= due <
    `next_before_ms` (0: unbounded), and only scheduled tasks have one."""

    state: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    name_prefix: str = ""
    namespace: str | None = None
    kind: str = ""
    next_after_ms: int = 0
    next_before_ms: int = 0
    last_outcomes: frozenset[int] = field(default_factory=frozenset)

    @property
    def next_window(self) -> bool:
        return bool(self.next_after_ms or self.next_before_ms)


def indexed(txn: Txn) -> bool:
    """Whether this store's search indexes are complete (records.META_INDEXED)."""
    return txn.get("meta", META_INDEXED) is not None


# ----------------------------------------------------------------------------------- executions


def execution_plan(q: ExecutionQuery, *, with_indexes: bool = True) -> str:
    if q.task_id:
        return "task"
    if not with_indexes:
        return "all"
    if q.by_completed:
        return "ended"
    if q.worker_id:
        return "worker"
    if q.namespace is not None and not q.states:
        return "namespace"
    if q.states:
        return "state"
    return "tagged" if q.tags else "all"


def search_executions(
    txn: Txn,
    q: ExecutionQuery,
    *,
    page_size: int = 100,
    page_token: str = "",
    scan_limit: int = EXEC_SCAN_LIMIT,
    max_bytes: int = 0,
) -> tuple[list[Execution], str]:
    """One page of the executions matching `q` (see the module docstring for the order and the token).
    With `max_bytes`, a page also ends once its executions reach that many bytes (at least one)."""
    plan = execution_plan(q, with_indexes=indexed(txn))
    walk = _execution_walk(txn, q, plan, page_token)
    tasks = _TaskFilter(txn, q.tags, q.namespace)
    want_task = id_bytes(q.task_id, field="task_id") if q.task_id else b""
    out: list[Execution] = []
    size = scanned = 0
    cursor = b""
    for position, exec16, task16, state, stored in walk:
        if scanned >= scan_limit:
            return out, _exec_token(plan, cursor)
        scanned += 1
        cursor = position
        if state is not None and q.states and state not in q.states:
            continue
        if task16 is not None and ((want_task and task16 != want_task) or not tasks.ok(task16)):
            continue
        raw = stored if stored is not None else txn.get("execs", exec16)
        if raw is None:
            continue
        ex = Execution.FromString(raw)
        if not _execution_matches(ex, q, want_task):
            continue
        if task16 is None and not tasks.ok(id_bytes(ex.task_id)):
            continue
        out.append(ex)
        size += len(raw)
        if len(out) >= page_size or (max_bytes and size >= max_bytes):
            return out, _exec_token(plan, cursor)
    return out, ""


def _exec_token(plan: str, position: bytes) -> str:
    """The page token resuming after `position` (the key a walk yielded last; made only once a page)."""
    if plan == "task":
        return str(from_u64(position))
    if plan == "ended":
        return "c" + position.hex()
    return id_text(position)


def _execution_matches(ex: Execution, q: ExecutionQuery, want_task: bytes) -> bool:
    if q.states and ex.state not in q.states:
        return False
    if want_task and id_bytes(ex.task_id) != want_task:
        return False
    if q.worker_id and worker_of(ex) != q.worker_id:
        return False
    at = ex.completed_at_ms if q.by_completed else ex.fired_at_ms
    if q.by_completed and not at:
        return False
    return not ((q.since_ms and at < q.since_ms) or (q.until_ms and at >= q.until_ms))


# A walk yields (its position: what `_exec_token` makes the page token of, execution id16, task id16 or
# None, state or None, the stored execution or None); the task and state come from the index when it
# holds them.
_Walk = Iterator[tuple[bytes, bytes, bytes | None, int | None, bytes | None]]


def _execution_walk(txn: Txn, q: ExecutionQuery, plan: str, token: str) -> _Walk:
    if plan == "task":
        return _task_walk(txn, q, token)
    if plan == "ended":
        return _ended_walk(txn, q, token)
    lo, hi = _id_range(q)
    if token:
        hi = min(hi, id_bytes(token, field="page_token")) if hi else id_bytes(token, field="page_token")
    if plan in ("worker", "namespace"):
        db = "execs_by_worker" if plan == "worker" else "execs_by_namespace"
        prefix = worker_key(q.worker_id, b"") if plan == "worker" else namespace_key(q.namespace or "", b"")
        end = prefix + hi if hi else _after(prefix)
        return ((k[-16:], k[-16:], v, None, None) for k, v in txn.scan(db, prefix + lo, end, reverse=True))
    if plan in ("state", "tagged"):
        states = sorted(q.states) if plan == "state" else sorted(common_pb2.ExecutionState.values())[1:]
        walks = [
            (
                (k[1:], v, k[0])
                for k, v in txn.scan(
                    "execs_by_state", bytes([s]) + lo, bytes([s]) + hi if hi else bytes([s + 1]), reverse=True
                )
            )
            for s in states
        ]
        merged = heapq.merge(*walks, key=lambda item: item[0], reverse=True)
        return ((e, e, t, s, None) for e, t, s in merged)
    return ((k, k, None, None, v) for k, v in txn.scan("execs", lo, hi or None, reverse=True))


def _id_range(q: ExecutionQuery) -> tuple[bytes, bytes]:
    """[low, high) of the execution ids a fire-time window can hold (b"": unbounded)."""
    if q.by_completed:  # ids say nothing of completion times
        return b"", b""
    lo = _id_at(q.since_ms - ID_SLACK_MS) if q.since_ms else b""
    hi = _id_at(q.until_ms + ID_SLACK_MS) if q.until_ms else b""
    return lo, hi


def _id_at(ms: int) -> bytes:
    return min(max(0, ms), _MAX_MS).to_bytes(6, "big") + bytes(10)


def _after(prefix: bytes) -> bytes:
    """The first key past every key starting with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _task_walk(txn: Txn, q: ExecutionQuery, token: str) -> _Walk:
    task16 = id_bytes(q.task_id, field="task_id")
    if token and not token.isdigit():
        raise InvalidArgument("page_token", "not a token returned by a previous call with this task filter")
    end = fire_key(task16, int(token)) if token else task16 + b"\xff" * 9
    for k, exec16 in txn.scan("fires", task16, end, reverse=True):
        yield k[16:24], exec16, task16, None, None


def _ended_walk(txn: Txn, q: ExecutionQuery, token: str) -> _Walk:
    lo = u64(max(0, q.since_ms))
    hi = u64(q.until_ms) if q.until_ms else b"\xff" * 9
    if token:
        if not (len(token) == 49 and token[0] == "c"):
            raise InvalidArgument("page_token", _NOT_OURS)
        try:
            hi = min(hi, bytes.fromhex(token[1:]))
        except ValueError:
            raise InvalidArgument("page_token", _NOT_OURS) from None
    for k, v in txn.scan("execs_ended", lo, hi, reverse=True):
        yield k, k[8:24], v[1:17], v[0], None


class _TaskFilter:
    """A task's tags and namespace, checked once per task and page (each answer is cached)."""

    def __init__(self, txn: Txn, tags: tuple[tuple[str, str], ...], namespace: str | None) -> None:
        self._txn = txn
        self._tags = tags
        self._namespace = None if namespace is None else stored_namespace(namespace)
        self._seen: dict[bytes, bool] = {}
        self.active = bool(tags) or namespace is not None

    def ok(self, task16: bytes) -> bool:
        if not self.active:
            return True
        seen = self._seen.get(task16)
        if seen is None:
            seen = self._seen[task16] = self._check(task16)
        return seen

    def _check(self, task16: bytes) -> bool:
        txn = self._txn
        if any(txn.get("tasks_by_tag", tag_key(k, v, task16)) is None for k, v in self._tags):
            return False
        if self._namespace is None:
            return True
        raw = txn.get("tasks", task16)
        return raw is not None and stored_namespace(Task.FromString(raw).spec.namespace) == self._namespace


# ------------------------------------------------------------------------------------------ tasks


def task_plan(q: TaskQuery, *, with_indexes: bool = True) -> str:
    if q.next_window:
        return "due"
    if q.tags:
        return "tag"
    if with_indexes:
        if q.name_prefix:
            return "name"
        if q.namespace is not None:
            return "namespace"
        if q.last_outcomes:
            return "outcome"
        if q.kind:
            return "kind"
    return "state" if q.state else "all"


def search_tasks(
    txn: Txn,
    q: TaskQuery,
    *,
    page_size: int = 100,
    page_token: str = "",
    scan_limit: int = SCAN_LIMIT,
    max_bytes: int = 0,
) -> tuple[list[Task], str]:
    """One page of the tasks matching `q` (see the module docstring for each plan's order and token).
    With `max_bytes`, a page also ends once its tasks reach that many bytes (at least one)."""
    if q.kind and q.kind not in SCHEDULE_KINDS:
        kinds = ", ".join(SCHEDULE_KINDS)
        raise InvalidArgument("kind", f"{q.kind!r} is not a schedule kind: one of {kinds}")
    plan = task_plan(q, with_indexes=indexed(txn))
    namespace = None if q.namespace is None else stored_namespace(q.namespace)
    out: list[Task] = []
    size = scanned = 0
    cursor = ""
    for position, task16 in _task_walk_for(txn, q, plan, page_token):
        if scanned >= scan_limit:
            return out, cursor
        scanned += 1
        cursor = position
        raw = txn.get("tasks", task16)
        if raw is None:
            continue
        t = Task.FromString(raw)
        if not _task_matches(t, q, namespace):
            continue
        out.append(t)
        size += len(raw)
        if len(out) >= page_size or (max_bytes and size >= max_bytes):
            return out, cursor
    return out, ""


def _task_matches(t: Task, q: TaskQuery, namespace: str | None) -> bool:
    if q.state and t.state != q.state:
        return False
    if q.name_prefix and not t.spec.name.startswith(q.name_prefix):
        return False
    if namespace is not None and stored_namespace(t.spec.namespace) != namespace:
        return False
    if any(t.spec.tags.get(k) != v for k, v in q.tags):
        return False
    if q.kind and kind_code(t) != SCHEDULE_KINDS[q.kind]:
        return False
    if q.last_outcomes and t.last_outcome not in q.last_outcomes:
        return False
    if q.next_window:
        due = due_of(t) if t.state == common_pb2.TASK_SCHEDULED else 0
        if not due or due < q.next_after_ms or (q.next_before_ms and due >= q.next_before_ms):
            return False
    return True


def _task_walk_for(txn: Txn, q: TaskQuery, plan: str, token: str) -> Iterator[tuple[str, bytes]]:
    """(page token of this position, task id16) in the plan's index order, after `token`."""
    if plan == "due":
        start = u64(max(0, q.next_after_ms))
        if token:
            if not (len(token) == 49 and token[0] == "d"):
                raise InvalidArgument("page_token", _NOT_OURS)
            try:
                start = max(start, bytes.fromhex(token[1:]) + b"\0")
            except ValueError:
                raise InvalidArgument("page_token", _NOT_OURS) from None
        end = u64(q.next_before_ms) if q.next_before_ms else None
        for k, _ in txn.scan("due", start, end):
            yield "d" + k.hex(), k[8:24]
        return
    if plan == "name":
        prefix = q.name_prefix.encode()
        start = prefix
        if token:
            if not token.startswith("n"):
                raise InvalidArgument("page_token", _NOT_OURS)
            last16 = id_bytes(token[1:], field="page_token")
            raw = txn.get("tasks", last16)
            if raw is None:
                raise InvalidArgument("page_token", "the task this page ended with was deleted: list again")
            start = name_key(Task.FromString(raw).spec.name, last16) + b"\0"
        end = _after(prefix) if prefix and prefix[-1] < 255 else None
        for k, _ in txn.scan("tasks_by_name", start, end):
            yield "n" + id_text(k[-16:]), k[-16:]
        return
    after = id_bytes(token, field="page_token") if token else None
    if plan == "tag":
        k0, v0 = sorted(q.tags)[0]
        yield from _by_id(txn, "tasks_by_tag", [tag_key(k0, v0, b"")], after)
    elif plan == "outcome":
        yield from _by_id(txn, "tasks_by_outcome", [bytes([s]) for s in sorted(q.last_outcomes)], after)
    elif plan == "namespace":
        yield from _by_id(txn, "tasks_by_namespace", [namespace_key(q.namespace or "", b"")], after)
    elif plan == "kind":
        yield from _by_id(txn, "tasks_by_kind", [bytes([SCHEDULE_KINDS[q.kind]])], after)
    elif plan == "state":
        yield from _by_id(txn, "tasks_by_state", [state_key(q.state, b"")], after)
    else:
        for k, _ in txn.scan("tasks", after + b"\0" if after else b""):
            yield id_text(k), k


def _by_id(txn: Txn, db: str, prefixes: list[bytes], after: bytes | None) -> Iterator[tuple[str, bytes]]:
    """Task ids under any of `prefixes` (each prefix + task_id16 in `db`), in id order, after `after`."""
    walks = [
        (k[-16:] for k, _ in txn.scan(db, p + after + b"\0" if after else p, _after(p))) for p in prefixes
    ]
    for task16 in heapq.merge(*walks) if len(walks) > 1 else walks[0]:
        yield id_text(task16), task16


__all__ = [
    "EXEC_SCAN_LIMIT",
    "ID_SLACK_MS",
    "SCAN_LIMIT",
    "ExecutionQuery",
    "TaskQuery",
    "execution_plan",
    "indexed",
    "search_executions",
    "search_tasks",
    "task_plan",
]
