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

Apply is total: every command ends in a recorded `CommandResult`, the same on every replica, and the
log moves on. A `Rejected` or `InvalidArgument` is answered with its `Rejection` (raft.rejection): its code
and text. The handlers are `raft.commands.HANDLERS`, one per command kind. Any other exception a handler
raises is a function of (state, command) as well, so it is recorded as `error_code="internal"` with its
type and message, and the command leaves no write behind while the other commands of its entry keep
theirs (the entry is applied again with a savepoint per command: `StateMachine.apply_entry`). Only
failures of this node's environment (`is_environmental`: a full map or disk, an I/O error, no memory)
propagate, and the replicator retries the entry: they say nothing about the command.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

from cronraft.errors import InvalidArgument, StorageError
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import audit_trail, features, firing, search, stats
from cronraft.raft.codec import CodecError, decode_batch, from_u64, id_bytes, id_text, u64
from cronraft.raft.commands import DEFAULT_MAX_ATTEMPTS, HANDLERS, Ctx
from cronraft.raft.fireplan import PlanIndex
from cronraft.raft.kv import KV, Txn
from cronraft.raft.records import (
    META_INDEXED,
    META_LAST_APPLIED,
    TERMINAL_STATES,
    due_key,
    fire_key,
    get_execution,
    priority_rank,
    read_epoch,
)
from cronraft.raft.rejection import Code, Rejected, Rejection, invalid_argument
from cronraft.raft.result_bytes import (
    DEDUP_RETENTION_MS,
    UNREAD_RESULT,
    answered,
    codec_failure,
    element,
    remember,
)
from cronraft.raft.validate import stored_namespace

Task = common_pb2.Task
Execution = common_pb2.Execution
CommandResult = commands_pb2.CommandResult

# Protobuf methods on the path of every command, taken from their class once: looked up on a message, a
# method costs a look-up of a field of that name first (upb).
_which = commands_pb2.Command.WhichOneof
_has = commands_pb2.Command.HasField

# ListTasks reads at most this many candidate tasks per page (a filter no index answers returns short pages).
LIST_SCAN_LIMIT = 10_000
# The `error` of a command whose handler raised an unexpected exception is cut to this many characters.
MAX_INTERNAL_ERROR = 500
DEFAULT_CATCHUP_WINDOW_MS = firing.DEFAULT_CATCHUP_WINDOW_MS

# Command kinds applied with the entry's statistics batch (raft.stats.Batch): none of them deletes a task's
# statistics (drop_task) or raises the feature level. Before any other kind the batch is written out, and
# that command counts its outcomes at once.
_STATS_BATCHED = frozenset(
    {
        "fire",
        "grant",
        "complete",
        "expire_lease",
        "append_output",
        "note_waiting",
        "expire_pending",
        "cancel_execution",
    }
)

# Command kinds whose handlers skip filling a result nobody reads (Ctx.unread): the hot path of a
# follower. Their results are stored nowhere unless the command has a request id or an audit record.
_UNREAD_SKIPS = frozenset({"fire", "grant", "complete"})


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
    exec16 = txn.get("fires", fire_key(id_bytes(task_id, field="task_id"), nominal_ms))
    return None if exec16 is None else get_execution(txn, exec16)


def read_last_applied(txn: Txn) -> int:
    raw = txn.get("meta", META_LAST_APPLIED)
    return 0 if raw is None else from_u64(raw)


def read_calendar(txn: Txn, name: str, namespace: str = "") -> common_pb2.Calendar | None:
    return firing.read_calendar(txn, name, namespace)


def list_calendars(txn: Txn) -> list[common_pb2.Calendar]:
    out = []
    for _, raw in txn.scan("calendars"):
        c = common_pb2.Calendar()
        c.ParseFromString(raw)
        out.append(c)
    return out


def calendars_page(
    txn: Txn,
    *,
    page_size: int = 100,
    page_token: str = "",
    max_bytes: int = 0,
    namespace: str | None = "",
) -> tuple[list[common_pb2.Calendar], str]:
    """One page of the calendars of `namespace` ("": the default one; None: every namespace) in stored-key
    order (firing.calendar_key); the token (a stored key) resumes after the last one. With `max_bytes`,
    the page also ends once its calendars reach that many bytes (at least one)."""
    out: list[common_pb2.Calendar] = []
    size = 0
    start = page_token.encode() + b"\0" if page_token else b""
    namespace = None if namespace is None else stored_namespace(namespace)
    prefix = "" if namespace is None else firing.calendar_key(namespace, "")
    end = None
    if prefix:  # "ns/": its keys sort together, up to "ns0"
        start, end = max(start, prefix.encode()), prefix[:-1].encode() + b"0"
    for key, raw in txn.scan("calendars", start, end):
        if namespace == "" and b"/" in key:
            continue  # another namespace's (a bounded walk: calendars are few, max_calendars)
        c = common_pb2.Calendar()
        c.ParseFromString(raw)
        out.append(c)
        size += len(raw)
        if len(out) >= page_size or (max_bytes and size >= max_bytes):
            return out, key.decode()
    return out, ""


def ledger(txn: Txn, task_id: str, from_ms: int, to_ms: int, limit: int) -> list[common_pb2.FireRecord]:
    return firing.ledger_range(txn, task_id, from_ms, to_ms, limit)


def due_tasks(
    txn: Txn,
    until_ms: int,
    *,
    after: tuple[int, str] | None = None,
    from_ms: int = 0,
    limit: int = 10_000,
) -> list[tuple[int, str]]:
    """(due_ms, task_id) of tasks whose next fire is in [from_ms, until_ms], in due order, after `after`
    if given."""
    start = u64(max(0, from_ms)) if after is None else due_key(after[0], id_bytes(after[1])) + b"\0"
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
    namespace: str | None = None,
    page_size: int = 100,
    page_token: str = "",
    scan_limit: int = LIST_SCAN_LIMIT,
    max_bytes: int = 0,
    kind: str = "",
    next_after_ms: int = 0,
    next_before_ms: int = 0,
    last_outcomes: frozenset[int] = frozenset(),
) -> tuple[list[Task], str]:
    """One page of tasks, filtered (raft.search.search_tasks: the order and the token depend on the
    filters; by id, i.e. creation, without a name prefix or a next-fire window). A page reads at most
    `scan_limit` candidates: a filter that the walked index does not answer may return a short or even
    empty page with a next-page token, so that no call scans the whole store (continue with the token).
    `namespace`: None is every one, "" the default one (stored empty). With `max_bytes`, a page also ends
    (with a token) once its tasks reach that many bytes (at least one task)."""
    q = search.TaskQuery(
        state=state,
        tags=tuple(sorted((tags or {}).items())),
        name_prefix=name_prefix,
        namespace=namespace,
        kind=kind,
        next_after_ms=next_after_ms,
        next_before_ms=next_before_ms,
        last_outcomes=last_outcomes,
    )
    return search.search_tasks(
        txn, q, page_size=page_size, page_token=page_token, scan_limit=scan_limit, max_bytes=max_bytes
    )


def list_executions(
    txn: Txn, task_id: str, *, state: int = 0, page_size: int = 100, page_token: str = "", max_bytes: int = 0
) -> tuple[list[Execution], str]:
    """One page of a task's executions, newest nominal time first (with `max_bytes`, the page also ends
    once its executions reach that many bytes, with at least one). raft.search.search_executions finds
    executions across tasks."""
    q = search.ExecutionQuery(task_id=task_id, states=frozenset({state}) if state else frozenset())
    return search.search_executions(txn, q, page_size=page_size, page_token=page_token, max_bytes=max_bytes)


# ------------------------------------------------------------------------------------- state machine

# OSError numbers that come from a computation's arguments, not from the machine: on Linux
# `datetime.fromtimestamp(1e18)` raises OSError(EOVERFLOW). The same on every replica.
_ARGUMENT_ERRNOS = frozenset({errno.EOVERFLOW, errno.ERANGE, errno.EDOM, errno.EINVAL})


def is_environmental(exc: BaseException) -> bool:
    """Whether an exception raised while applying a command is a failure of this node's environment.

    Environmental failures depend on the node, not on (state, command): the store's map or disk is full,
    an I/O error, memory ran out (`StorageError` is what the store raises for those; `OSError` and
    `MemoryError` for the rest of the process). Another replica, or this one a moment later, may apply
    the same command successfully, so recording the failure as the command's outcome would make the
    replicas diverge: the entry must be retried instead. Everything else a handler raises (a bug, a
    `RecursionError`, a `ValueError` from bad data) is the same on every replica, given the same state
    and command, and is recorded. When unsure an exception counts as environmental: a wrong retry stalls
    the log, loudly (logged, and seen in the applied index); a wrong record diverges, silently."""
    if isinstance(exc, OSError):
        return exc.errno not in _ARGUMENT_ERRNOS
    return isinstance(exc, (StorageError, MemoryError))


def internal_error(exc: BaseException) -> CommandResult:
    """The recorded outcome of a command whose handler raised `exc` (not environmental)."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_INTERNAL_ERROR:
        text = text[: MAX_INTERNAL_ERROR - 3] + "..."
    return Rejection(Code.INTERNAL, text).result()


class _Unguarded(Exception):
    """A command failed unexpectedly while its entry was applied without savepoints: raised out of the
    entry's transaction (which aborts it) so that the entry is applied again, with savepoints."""


class StateMachine:
    """Applies log entries to a `KV` store. Single-threaded: the replicator calls `apply_entry` in log
    order from one thread; readers use `kv.read()` concurrently.

    `fault`, when given, is called with each command just before its handler; whatever it raises counts
    as the handler's (the `raft.apply` failpoint, in tests). It must behave the same on every replica."""

    def __init__(
        self,
        kv: KV,
        *,
        on_applied: Callable[[int], None] | None = None,
        fault: Callable[[commands_pb2.Command], None] | None = None,
        fresh_features: frozenset[str] = features.SUPPORTED,
    ) -> None:
        self.kv = kv
        # The feature level a fresh store starts with (raft.features). A node passes none: its level comes
        # from the log alone (RaiseFeatures), so that a fresh node replaying a log an older release began
        # applies it as that release did. In-process uses (tests, benchmarks) start with every feature.
        self._fresh_features = fresh_features
        self._on_applied = on_applied
        self._fault = fault
        # Audit events (raft.audit): collected only when set, handed out by `take_events` after the
        # entry's transaction committed (the caller, not this pure module, writes them).
        self.collect_events = False
        self._events: list[dict[str, Any]] = []
        # Commands recorded as failed with error_code "internal" since this object was made (a metric).
        self.internal_errors = 0
        with kv.read() as txn:
            self._last_applied = read_last_applied(txn)

    def last_applied(self) -> int:
        return self._last_applied

    def take_events(self) -> list[dict[str, Any]]:
        """The audit events of the entries the last `apply_entry` or `apply_entries` applied (empty unless
        `collect_events`), once."""
        events, self._events = self._events, []
        return events

    def apply_entry(self, index: int, payload: bytes, *, wanted: bool = True) -> bytes | None:
        """Apply the batch at log `index`; the serialized `BatchResult`, or None if already applied.
        `wanted=False`: nobody reads the results (a follower's: only the proposer waits for them), so
        each is left empty (`UNREAD_RESULT`); the entry's effects, dedup records and audit trail are the
        same.

        Savepoints only when needed: a savepoint per command costs about 15 % of the apply time of a
        large entry (LMDB copies each page a command touches that the entry already dirtied, and merges
        dirty lists at each release; bench/perf_inproc.py --per-command). So an entry is applied without
        them; if a command raises something other than a refusal, the entry's transaction is aborted
        and the entry applied again with one savepoint per command. Both passes give the same outcome
        for every command, so every replica records the same results whichever pass it needed."""
        if index <= self._last_applied:
            return None
        entry = [(index, payload)]
        unread = frozenset() if wanted else frozenset({index})
        try:
            return self._apply_entries(entry, unread, guarded=False)[0]
        except _Unguarded:
            return self._apply_entries(entry, unread, guarded=True)[0]

    def apply_entries(
        self, entries: Sequence[tuple[int, bytes]], *, unread: Container[int] = frozenset()
    ) -> list[bytes | None]:
        """Apply consecutive log entries `(index, payload)`, in log order, in one write transaction; the
        result of each as `apply_entry` gives it (None: already applied; an index in `unread`: results
        nobody reads, left empty).

        Why: a write transaction's commit and the first write to each page it touches cost about as
        much as applying a few commands (bench/perf_inproc.py --per-entry), and most entries are small.
        Nothing stored changes: each entry is applied exactly as alone (its own dedup pruning, its own
        `last_applied` check), the statistics batch (raft.stats.Batch) spans the entries as it spans the
        commands of one entry, and `last_applied` is the last index, written in the same transaction, so
        a crash keeps all of them or none (I2). If a command needs the savepoint pass (`apply_entry`),
        the whole transaction is dropped and every entry applied alone."""
        if not entries:
            return []
        try:
            return self._apply_entries(entries, unread, guarded=False)
        except _Unguarded:
            out: list[bytes | None] = []
            events: list[dict[str, Any]] = []
            for index, payload in entries:
                out.append(self.apply_entry(index, payload, wanted=index not in unread))
                events += self.take_events()  # each entry's, kept for the group's `take_events`
            self._events = events
            return out

    def _apply_entries(
        self, entries: Sequence[tuple[int, bytes]], unread: Container[int], *, guarded: bool
    ) -> list[bytes | None]:
        events: list[dict[str, Any]] | None = [] if self.collect_events else None
        out: list[bytes | None] = []
        done: list[int] = []
        with self.kv.write() as txn:
            applied = stored = read_last_applied(txn)
            # Savepoints (guarded) roll a command back: its counts must go with it, so no batch then.
            counts = None if guarded else stats.Batch()
            for index, payload in entries:
                if index <= applied:  # another instance applied it (restored snapshot)
                    out.append(None)
                    continue
                if not applied:  # a fresh store: its search indexes are complete from the start
                    txn.put("meta", META_INDEXED, b"1")
                    if self._fresh_features:  # ... and the features it starts with (raft.features)
                        features.raise_level(txn, self._fresh_features)
                out.append(
                    self._apply_payload(
                        txn,
                        index,
                        payload,
                        events=events,
                        counts=counts,
                        guarded=guarded,
                        wanted=index not in unread,
                    )
                )
                applied = index
                done.append(index)
            if counts is not None:
                counts.flush(txn)
            if applied != stored:
                txn.put("meta", META_LAST_APPLIED, u64(applied))
        self._last_applied = applied
        if events is not None:
            self._events = events
        if self._on_applied is not None:
            for index in done:
                self._on_applied(index)
        return out

    def _apply_payload(
        self,
        txn: Txn,
        index: int,
        payload: bytes,
        *,
        events: list[dict[str, Any]] | None,
        counts: stats.Batch | None,
        guarded: bool,
        wanted: bool,
    ) -> bytes:
        """One entry's commands; its `BatchResult`, built of their serialized results (raft.result_bytes)."""
        parts: list[bytes] = []
        try:
            batch = decode_batch(payload)
        except CodecError as e:
            return codec_failure(e)  # deterministic on every node: applied with no effect
        for i, cmd in enumerate(batch.commands):
            kind = _which(cmd, "body")  # read once per command: each protobuf read costs
            audit = _has(cmd, "audit")
            batched = counts
            if counts is not None and kind not in _STATS_BATCHED:
                counts.flush(txn)
                batched = None
            res = self._apply_body(
                txn,
                index,
                i,
                cmd,
                events,
                guarded=guarded,
                counts=batched,
                wanted=wanted,
                kind=kind,
                audit=audit,
            )
            # A client's command carries `audit`: its audit record (raft.audit_trail), written with its
            # outcome whatever that is (a duplicate's is the answer it gets).
            if audit:
                assert not isinstance(res, list)  # only a result wanted as bytes only comes serialized
                audit_trail.record(txn, index, i, cmd, res)
            if wanted:  # the result's parts as an element of the BatchResult (joined below)
                parts += res if isinstance(res, list) else element(res)
            else:
                parts.append(UNREAD_RESULT)
        return b"".join(parts)

    def _apply_body(
        self,
        txn: Txn,
        index: int,
        position: int,
        cmd: commands_pb2.Command,
        events: list[dict[str, Any]] | None,
        *,
        guarded: bool,
        counts: stats.Batch | None,
        wanted: bool,
        kind: str | None,
        audit: bool,
    ) -> CommandResult | list[bytes]:
        """The command's effect. A refusal (`Rejected`, `InvalidArgument`) keeps what the handler wrote
        before it (handlers check everything before writing: nothing) and its audit events, which tell of the
        refusal. Any other exception that is not environmental discards the command's writes and events
        (one "internal" event takes their place) and is recorded as "internal": unguarded, by raising
        `_Unguarded`; guarded, by rolling back the command's savepoint.

        `kind` (the command's body) and `audit` (whether it carries an audit record): read by the caller.
        The result comes as the parts of its serialized element (raft.result_bytes.answered) when the
        handler left an answer (`Ctx.answer`, `Ctx.answer_task`), which it may only when the result is
        wanted as bytes only (`Ctx.bytes_only`)."""
        request_id = cmd.request_id
        if request_id:
            seen = txn.get("requests", request_id.encode())
            if seen is not None:
                return CommandResult.FromString(seen)
        handler = HANDLERS.get(kind or "")
        unread = not wanted and kind in _UNREAD_SKIPS and not request_id and not audit
        # An unread result is dropped (UNREAD_RESULT) and its handler reads none of it: not marked applied
        # (a keyword of the constructor: a third of its cost, on every command of a follower).
        res = CommandResult() if unread else CommandResult(applied=True)
        marked = len(events) if events is not None else 0
        sp = txn.savepoint() if guarded else None
        answer: Ctx | None = None
        try:
            if handler is None:
                raise Rejected(Code.UNKNOWN_COMMAND, f"unknown command {kind!r}")
            if self._fault is not None:
                self._fault(cmd)
            limits = cmd.limits if _has(cmd, "limits") else None
            plans = PlanIndex(cmd.plan) if _has(cmd, "plan") else None  # the leader's schedule answers
            bytes_only = wanted and not request_id and not audit
            now = cmd.stamped_at_ms
            ctx = Ctx(
                txn if sp is None else sp,
                index,
                position,
                now,
                res,
                events,
                limits,
                plans,
                counts,
                unread,
                bytes_only,
            )
            handler(ctx, cmd)
            if bytes_only and (ctx.answer is not None or ctx.answer_task is not None):
                answer = ctx
        except Rejected as r:
            res = r.rejection.result()
        except InvalidArgument as e:
            res = invalid_argument(e).result()
        except Exception as e:
            if sp is not None:
                sp.rollback()
            if is_environmental(e):
                raise
            if sp is None:
                raise _Unguarded from e
            res = internal_error(e)
            self.internal_errors += 1
            if events is not None:  # the command's own events told of effects now rolled back
                del events[marked:]
                events.append(
                    {"ev": "apply", "kind": "internal", "index": index, "command": kind, "error": res.error}
                )
            sp = None
        except BaseException:
            if sp is not None:
                sp.rollback()
            raise
        if sp is not None:
            sp.release()
        if request_id:
            remember(txn, request_id, cmd.stamped_at_ms, res, first=position == 0)
        return res if answer is None else answered(res, answer.answer, answer.answer_task)


__all__ = [
    "DEDUP_RETENTION_MS",
    "DEFAULT_CATCHUP_WINDOW_MS",
    "DEFAULT_MAX_ATTEMPTS",
    "LIST_SCAN_LIMIT",
    "MAX_INTERNAL_ERROR",
    "TERMINAL_STATES",
    "UNREAD_RESULT",
    "Rejected",
    "StateMachine",
    "calendars_page",
    "due_tasks",
    "internal_error",
    "is_environmental",
    "ledger",
    "list_calendars",
    "list_executions",
    "list_tasks",
    "pending_executions",
    "priority_rank",
    "read_calendar",
    "read_epoch",
    "read_execution",
    "read_fire",
    "read_last_applied",
    "read_task",
    "running_executions",
]
