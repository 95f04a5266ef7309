"""The ordered key-value interface the state machine is written against, and its in-memory twin.

The state machine (`cronraft.raft.state`) reads and writes only through `Txn`; `cronraft.raft.store`
implements it over LMDB (one sub-database per name in `DATABASES`), `MemKV` here implements it over
sorted in-memory lists for fast unit and simulation tests. Both give the same contract:

- `KV.write()` is a context manager yielding a `Txn`; its effects become visible atomically when the
  block exits normally and are discarded when it raises. Only one write transaction runs at a time.
- `KV.read()` yields a read-only `Txn` on a consistent snapshot; `put`/`delete` on it raise.
- `insert(db, key, value)` is `put` where `key` is absent: True once written; False, writing nothing,
  where it is present (one call for a get then a put whose usual case is a new key: LMDB's
  MDB_NOOVERWRITE, py-lmdb's `put(..., overwrite=False)`).
- `count(db)` is the number of keys in a database as this transaction sees it, in O(1) (the quotas on
  tasks and calendars read it: raft.quota).
- Keys and values are bytes; `scan(db, start, end)` yields `(key, value)` with `start <= key < end`
  (`end=None`: to the end of the database) in ascending byte order, or descending with `reverse=True`.
- `first(db, start, end)` is the item `scan(db, start, end)` would yield first (with `reverse=True`: the
  last key in the range), or None where the range is empty: one seek, for the apply path's many "the
  oldest key of this prefix" and "is there any" reads (a scan builds a generator and reads a chunk).
- `Txn.savepoint()` (write transactions only) opens a nested transaction: a `Savepoint`, itself a `Txn`
  that sees every write made so far. `release()` keeps its writes in the enclosing transaction (they
  still commit or abort with it); `rollback()` discards them. While a savepoint is open, the transaction
  it was opened on must not be used (LMDB's rule for nested transactions; the twin enforces it too), and
  a savepoint may itself open one. The state machine opens one per command when it applies an entry a
  second time because a command failed (raft.state), so that the failing command leaves no partial
  effect while the other commands of its entry keep theirs.
- Failures of the store itself (map full, disk full, I/O error) raise `cronraft.errors.StorageError`
  (the in-memory twin has none); errors of the caller's making keep their own types.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

# Sub-databases. Keys are compact binary: ids as 16 raw bytes, times as 8-byte big-endian unsigned.
DATABASES: tuple[str, ...] = (
    "meta",  # b"last_applied" -> u64; b"epoch" -> Epoch proto
    "tasks",  # task_id16 -> Task proto
    "due",  # due_ms8 + task_id16 -> b"" : the due-index by next fire time
    "tasks_by_state",  # state1 + task_id16 -> b""
    "tasks_by_tag",  # key + b"\0" + value + b"\0" + task_id16 -> b""
    "execs",  # execution_id16 -> Execution proto
    "fires",  # task_id16 + nominal_ms8 -> execution_id16 : at most one fire per (task, nominal)
    "pending",  # priority1 + fired_at_ms8 + execution_id16 -> b"" : executions waiting for a lease
    "running",  # execution_id16 -> b"" : executions holding a lease
    "requests",  # request_id (utf-8) -> CommandResult proto : the dedup table
    "requests_by_time",  # stamped_at_ms8 + request_id -> b"" : to prune the dedup table
    "ledger",  # task_id16 + nominal_ms8 -> FireRecord proto : the fire ledger (bounded per task)
    "ledger_count",  # task_id16 -> u64 : records in a task's ledger (to prune without scanning it)
    "active",  # task_id16 + execution_id16 -> b"" : a task's pending, buffered and running executions
    "buffered",  # task_id16 + nominal_ms8 + execution_id16 -> b"" : overlap buffer, oldest first
    "calendars",  # name (utf-8) -> Calendar proto
    "calendar_refs",  # name + b"\0T" + task_id16 or name + b"\0C" + calendar -> b"" : who uses a calendar
    "dlq",  # execution_id16 -> DeadLetter proto : the dead-letter queue
    "dlq_by_task",  # task_id16 + execution_id16 -> b""
    "logs",  # execution_id16 + attempt4 + stream1 + offset8 -> bytes : attempts' full output (capped)
    "logs_size",  # execution_id16 + attempt4 + stream1 -> u64 bytes stored (cap: truncated)
    "logs_by_time",  # first_chunk_ms8 + execution_id16 -> b"" : retention
    "audit",  # stamped_ms8 + index8 + position4 -> AuditRecord proto : the audit trail (raft.audit_trail)
    "task_stats_hours",  # task_id16 + hour8 -> StatsHour proto : a task's outcomes per hour (raft.stats)
    "cluster_stats",  # hour8 -> ClusterHour : the cluster's outcomes per hour (raft.stats)
    "results",  # execution_id16 -> bytes : the result its last attempt handed back ($CRONRAFT_RESULT_FILE)
    # Search indexes (raft.records, read by raft.search):
    "tasks_by_kind",  # kind1 + task_id16 -> b"" : schedule kind (records.SCHEDULE_KINDS)
    "tasks_by_name",  # name + b"\0" + task_id16 -> b""
    "tasks_by_outcome",  # state1 + task_id16 -> b"" : the final state of the task's last execution
    "execs_by_state",  # state1 + execution_id16 -> task_id16 : every execution, by its current state
    "execs_by_worker",  # worker_id + b"\0" + execution_id16 -> task_id16 : its current or last lease's
    "execs_ended",  # completed_ms8 + execution_id16 -> state1 + task_id16 : ended executions
    "tasks_by_namespace",  # namespace + b"\0" + task_id16 -> b"" : the default namespace is ""
    "execs_by_namespace",  # namespace + b"\0" + execution_id16 -> task_id16
)
# Sub-databases that a snapshot image made by an older version lacks: such an image is accepted, and they
# are created empty when the store opens it (a rolling upgrade installs the old leader's snapshots).
ADDED_LATER: frozenset[str] = frozenset(
    {
        "audit",
        "task_stats_hours",
        "cluster_stats",
        "results",
        "tasks_by_kind",
        "tasks_by_name",
        "tasks_by_outcome",
        "execs_by_state",
        "execs_by_worker",
        "execs_ended",
        "tasks_by_namespace",
        "execs_by_namespace",
    }
)


class Txn(Protocol):
    def get(self, db: str, key: bytes) -> bytes | None: ...

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def insert(self, db: str, key: bytes, value: bytes) -> bool: ...

    def delete(self, db: str, key: bytes) -> bool: ...

    def count(self, db: str) -> int: ...

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None: ...

    def savepoint(self) -> Savepoint: ...


class Savepoint(Txn, Protocol):
    """A nested transaction (see the module docstring); exactly one of `release` / `rollback` ends it."""

    def release(self) -> None: ...

    def rollback(self) -> None: ...


class KV(Protocol):
    def write(self) -> AbstractContextManager[Txn]: ...

    def read(self) -> AbstractContextManager[Txn]: ...

    def close(self) -> None: ...


class _MemDb:
    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.values: dict[bytes, bytes] = {}

    def copy(self) -> _MemDb:
        c = _MemDb()
        c.keys = list(self.keys)
        c.values = dict(self.values)
        return c


class MemTxn:
    """A transaction over `MemKV`: writes go to copy-on-write database copies, swapped in at commit."""

    def __init__(self, kv: MemKV, *, writable: bool) -> None:
        self._kv = kv
        self._writable = writable
        self._dbs = kv._dbs  # snapshot of the mapping; databases are copied on first write
        self._copied: dict[str, _MemDb] = {}
        self._child: _MemSavepoint | None = None  # an open savepoint: this one must not be used meanwhile

    def _db(self, db: str, *, for_write: bool) -> _MemDb:
        if db not in self._dbs:
            raise KeyError(f"unknown database {db!r}")
        if not for_write:
            return self._copied.get(db) or self._dbs[db]
        if not self._writable:
            raise PermissionError("read-only transaction")
        if db not in self._copied:
            self._copied[db] = self._dbs[db].copy()
        return self._copied[db]

    def _refuse(self) -> None:
        raise RuntimeError("a savepoint of this transaction is open: use the savepoint")

    def get(self, db: str, key: bytes) -> bytes | None:
        if self._child is not None:
            self._refuse()
        return self._get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        if self._child is not None:
            self._refuse()
        self._put(db, key, value)

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        if self._child is not None:
            self._refuse()
        if not self._writable:
            raise PermissionError("read-only transaction")
        if self._get(db, key) is not None:
            return False
        self._put(db, key, value)
        return True

    def delete(self, db: str, key: bytes) -> bool:
        if self._child is not None:
            self._refuse()
        return self._delete(db, key)

    def count(self, db: str) -> int:
        if self._child is not None:
            self._refuse()
        return len(self._db(db, for_write=False).keys)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        if self._child is not None:
            self._refuse()
        return self._scan(db, start, end, reverse)

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        if self._child is not None:
            self._refuse()
        return self._first(db, start, end, reverse)

    def savepoint(self) -> Savepoint:
        if self._child is not None:
            self._refuse()
        if not self._writable:
            raise PermissionError("read-only transaction")
        return _MemSavepoint(self, self)

    # The operations themselves, also used by this transaction's savepoints.
    def _get(self, db: str, key: bytes) -> bytes | None:
        return self._db(db, for_write=False).values.get(key)

    def _put(self, db: str, key: bytes, value: bytes) -> None:
        d = self._db(db, for_write=True)
        if key not in d.values:
            bisect.insort(d.keys, key)
        d.values[key] = bytes(value)

    def _delete(self, db: str, key: bytes) -> bool:
        d = self._db(db, for_write=True)
        if key not in d.values:
            return False
        del d.values[key]
        del d.keys[bisect.bisect_left(d.keys, key)]
        return True

    def _scan(self, db: str, start: bytes, end: bytes | None, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        d = self._db(db, for_write=False)
        lo = bisect.bisect_left(d.keys, start)
        hi = len(d.keys) if end is None else bisect.bisect_left(d.keys, end)
        keys = d.keys[lo:hi]  # a copy: the caller may write while iterating
        if reverse:
            keys.reverse()
        for k in keys:
            v = d.values.get(k)
            if v is not None:
                yield k, v

    def _first(self, db: str, start: bytes, end: bytes | None, reverse: bool) -> tuple[bytes, bytes] | None:
        d = self._db(db, for_write=False)
        keys = d.keys
        if reverse:
            i = (len(keys) if end is None else bisect.bisect_left(keys, end)) - 1
            if i < 0 or keys[i] < start:
                return None
        else:
            i = bisect.bisect_left(keys, start)
            if i == len(keys) or (end is not None and keys[i] >= end):
                return None
        return keys[i], d.values[keys[i]]

    def _commit(self) -> None:
        if self._copied:
            merged = dict(self._kv._dbs)
            merged.update(self._copied)
            self._kv._dbs = merged


class _MemSavepoint:
    """A savepoint of a `MemTxn`: writes go straight to the transaction, recorded in an undo log.

    `rollback` replays the undo log backwards; `release` appends it to the enclosing savepoint's (if
    any), so that rolling that one back also undoes the writes of this one."""

    def __init__(self, root: MemTxn, parent: MemTxn | _MemSavepoint) -> None:
        self._root = root
        self._parent = parent
        self._undo: list[tuple[str, bytes, bytes | None]] = []
        self._child: _MemSavepoint | None = None
        self._open = True
        parent._child = self

    def _check_usable(self) -> None:
        if not self._open:
            raise RuntimeError("the savepoint has ended")
        if self._child is not None:
            raise RuntimeError("a savepoint of this savepoint is open: use that one")

    def get(self, db: str, key: bytes) -> bytes | None:
        self._check_usable()
        return self._root._get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._check_usable()
        root = self._root
        self._undo.append((db, key, root._get(db, key)))
        root._put(db, key, value)

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        self._check_usable()
        root = self._root
        if root._get(db, key) is not None:
            return False  # nothing written: nothing to undo
        self._undo.append((db, key, None))
        root._put(db, key, value)
        return True

    def delete(self, db: str, key: bytes) -> bool:
        self._check_usable()
        root = self._root
        old = root._get(db, key)
        if old is None:
            return False
        self._undo.append((db, key, old))
        return root._delete(db, key)

    def count(self, db: str) -> int:
        self._check_usable()
        return len(self._root._db(db, for_write=False).keys)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_usable()
        return self._root._scan(db, start, end, reverse)

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        self._check_usable()
        return self._root._first(db, start, end, reverse)

    def savepoint(self) -> Savepoint:
        self._check_usable()
        return _MemSavepoint(self._root, self)

    def release(self) -> None:
        self._end()
        if isinstance(self._parent, _MemSavepoint):
            self._parent._undo.extend(self._undo)

    def rollback(self) -> None:
        self._end()
        root = self._root
        for db, key, old in reversed(self._undo):
            if old is None:
                root._delete(db, key)
            else:
                root._put(db, key, old)

    def _end(self) -> None:
        self._check_usable()
        self._open = False
        self._parent._child = None


class MemKV:
    """In-memory twin of the LMDB store (same contract as `KV`)."""

    def __init__(self) -> None:
        self._dbs: dict[str, _MemDb] = {name: _MemDb() for name in DATABASES}

    @contextmanager
    def write(self) -> Iterator[Txn]:
        txn = MemTxn(self, writable=True)
        yield txn
        txn._commit()

    @contextmanager
    def read(self) -> Iterator[Txn]:
        yield MemTxn(self, writable=False)

    def close(self) -> None:
        pass

    def dump(self) -> dict[str, dict[bytes, bytes]]:
        """Every database's contents (for snapshots of the twin and for divergence checks in tests)."""
        return {name: dict(db.values) for name, db in self._dbs.items()}

    def load(self, data: dict[str, dict[bytes, bytes]]) -> None:
        dbs = {name: _MemDb() for name in DATABASES}
        for name, values in data.items():
            dbs[name].values = dict(values)
            dbs[name].keys = sorted(values)
        self._dbs = dbs
