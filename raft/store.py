"""The LMDB store: the `KV` contract of `cronraft.raft.kv` over one LMDB environment, plus snapshots.

One environment (a directory holding `data.mdb` and `lock.mdb`) with one named sub-database per entry of
`DATABASES`. The state machine writes only from the Raft thread (one write transaction per log entry);
readers (gRPC handlers, leader duties) may run on any thread.

Durability: `sync=True` fsyncs every write transaction at commit (data and meta pages: LMDB's default,
durability mode "fsync"). `sync=False` opens the environment with LMDB's `sync` and `metasync` off: a
committed transaction survives a crash of the process (it is in the OS page cache), but a power loss or
kernel crash may lose recent transactions and, per LMDB's documentation of MDB_NOSYNC, may corrupt the
environment; the Raft log is then the source of truth (see `cronraft.raft.durability`).

Errors: an `lmdb.Error` raised by a transaction becomes `cronraft.errors.StorageError` (the environment:
map full, disk full, I/O error...), except the few that the caller's data causes on every node alike
(`_CALLER_ERRORS`: a key or value of a size LMDB does not support), which keep their type. Savepoints
(`Txn.savepoint`) are LMDB nested transactions (`mdb_txn_begin` with a parent; not available with
MDB_WRITEMAP, which this store does not use).

Size: the map (LMDB's `map_size`, address space, not disk) starts at `map_size` and grows on demand up
to `max_map_size`: before a write transaction once the file's used extent passes 3/4 of the map, and
when a write failed with MDB_MAP_FULL (`grow`, with no transaction open: `set_mapsize` requires it).
`usage()` says how full it is. `reserve_disk(n)` keeps `n` bytes of disk allocated past the file's
used extent, so that the store can still commit that much (deletes, above all) once
the file system is full: LMDB writes pages with pwrite, and a write into allocated blocks needs no new
space (a full disk otherwise fails every commit, deletes included: ENOSPC, or EIO on a short write).
The blocks are allocated past the file's end without changing its size (raft.diskspace).

Snapshots: `copy_to` writes a consistent, compacted single-file copy (LMDB's `mdb_env_copyfd2` with
MDB_CP_COMPACT, which runs its own read transaction); `replace_from` swaps such a copy in atomically
(`rename` of `data.mdb`) while no transaction is open. Every transaction goes through a gate (a shared /
exclusive lock) so that a swap waits for open transactions to end and holds back new ones meanwhile.
A thread must not call `replace_from` or `close` while it holds a transaction of the same store (that would
wait for itself).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from cronraft.errors import StorageError, Unavailable
from cronraft.raft.diskspace import preallocate
from cronraft.raft.gate import Gate
from cronraft.raft.kv import ADDED_LATER, DATABASES, Savepoint, Txn

_DATA_FILE = "data.mdb"
_RESTORE_FILE = "data.mdb.restore"
# A scan reads this many entries under the cursor, then hands them out; the cursor is closed and re-seeked
# for the next chunk. Chunks double up to the maximum, so a "first due item" lookup reads few entries and
# a long scan costs one seek per `_SCAN_CHUNK_MAX` entries. The first chunk is one entry: most scans on
# the apply path take one (the oldest ledger record, the first fire to trim, a task's buffered
# execution) or none, and a first chunk of 16 read 27.5 entries per W5 execution, keys and values
# copied, to hand out 2.8 (bench/replay_apply.py --counts); a long scan pays about four more seeks.
_SCAN_CHUNK_MIN = 1
_SCAN_CHUNK_MAX = 1024
# lmdb errors caused by the caller's data, hence the same on every node: kept as they are, so that the
# state machine records them as the command's outcome. Every other lmdb.Error is taken as a failure of
# this node's environment (map or disk full, I/O error, corruption, too many readers) and becomes a
# StorageError, which the state machine never records: retrying an entry whose failure was really
# deterministic only stalls the log (loudly), while recording a failure that only this node had would
# make the replicas diverge (silently).
_CALLER_ERRORS = (lmdb.BadValsizeError,)


# The map grows (by doubling, up to its maximum) once the file's used extent passes this share of it,
# if the open transactions end within GROW_WAIT_S.
GROW_AT = 0.75
GROW_WAIT_S = 0.05
_DISK_FULL_TEXT = ("No space left", "Disk quota exceeded")


def _storage_error(exc: lmdb.Error) -> StorageError:
    if isinstance(exc, lmdb.MapFullError):
        kind = "map_full"
    elif any(t in str(exc) for t in _DISK_FULL_TEXT):
        kind = "disk_full"
    else:
        kind = "io"
    return StorageError(f"store failure: {type(exc).__name__}: {exc}", kind=kind)


@dataclass(frozen=True)
class StoreUsage:
    """How full the store is (bytes)."""

    map_size: int  # the map now
    max_map_size: int  # what it may grow to
    high_water: int  # the file's used extent: (last page + 1) x page size
    used: int  # pages holding data, in every sub-database (pages freed and not yet reused are not)
    page_size: int


def _cause(exc: Exception) -> BaseException | None:
    """The cause chained to `LmdbTxn._write_failure`'s error: LMDB's own for a storage error, none for a
    read-only write (its message says it all), the exception's own cause when it is raised as it came."""
    if isinstance(exc, _CALLER_ERRORS):
        return exc.__cause__
    if isinstance(exc, lmdb.ReadonlyError):
        return None
    if isinstance(exc, lmdb.Error):
        return exc
    return exc.__cause__


class LmdbTxn:
    """One LMDB transaction seen through the `Txn` protocol.

    `scan` never holds a cursor across a `yield`: it reads a small chunk under a cursor, closes it, hands the
    chunk out, and seeks again after the last key it handed out. So the caller may write to *any* database
    of the same write transaction while a scan generator is open, including the one being scanned: keys
    deleted after being read are still yielded from the current chunk (with the value read then), and keys
    inserted ahead of the scan position may or may not be yielded. A generator must not be resumed after its
    transaction has ended (LMDB raises).
    """

    # read() drops `_txn` to free the reader slot at once; compiled (cronraft/_native.py), an attribute may
    # be deleted only when listed here.
    __deletable__ = ["_txn"]

    def __init__(
        self, txn: lmdb.Transaction, dbs: dict[str, Any], *, writable: bool, env: lmdb.Environment
    ) -> None:
        self._txn = txn
        self._dbs = dbs
        self._writable = writable
        self._env = env

    def _db(self, db: str) -> Any:
        try:
            return self._dbs[db]
        except KeyError:
            raise KeyError(f"unknown database {db!r}") from None

    # get / put / delete run a few dozen times per applied command, so each is one `try` around the call:
    # the database handle is looked up inline (a KeyError falls back on `_db` for its message), a put or
    # delete in a read-only transaction is refused by LMDB itself (ReadonlyError, raised before anything
    # is written, becomes the PermissionError of the `Txn` contract), and a value is copied only if it is
    # not `bytes` already (transactions are opened with buffers=False: it always is). The `try` costs
    # nothing until something raises (CPython 3.11's zero-cost exceptions). py-lmdb's methods are called
    # with positional arguments, their defaults spelled out: its keyword parsing costs about a third of a
    # put of a small record (dupdata=True, overwrite=True, append=False; value=b""; get's default=None;
    # and a scan's cursor(db)).
    def get(self, db: str, key: bytes) -> bytes | None:
        try:
            value = self._txn.get(key, None, self._dbs[db])
        except KeyError:
            self._db(db)  # raises, naming the database
            raise
        except _CALLER_ERRORS:
            raise
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc
        return value if value is None or isinstance(value, bytes) else bytes(value)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        try:
            self._txn.put(key, value, True, True, False, self._dbs[db])
        except Exception as exc:
            raise self._write_failure(db, exc) from _cause(exc)

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        # overwrite=False is MDB_NOOVERWRITE: LMDB finds the key and returns MDB_KEYEXIST (py-lmdb: False)
        # before it touches a page, and that return does not fail the transaction.
        try:
            return bool(self._txn.put(key, value, True, False, False, self._dbs[db]))
        except Exception as exc:
            raise self._write_failure(db, exc) from _cause(exc)

    def delete(self, db: str, key: bytes) -> bool:
        try:
            return bool(self._txn.delete(key, b"", self._dbs[db]))
        except Exception as exc:
            raise self._write_failure(db, exc) from _cause(exc)

    def _write_failure(self, db: str, exc: Exception) -> BaseException:
        """What a failed put, insert or delete raises: an unknown database named, a write to a read-only
        transaction as PermissionError, LMDB's other failures as storage errors (`_storage_error`), a
        caller's mistake (a wrong type) as it came. One handler for the three, off their success path."""
        if isinstance(exc, KeyError):
            self._db(db)  # raises, naming the database
        if isinstance(exc, _CALLER_ERRORS):
            return exc
        if isinstance(exc, lmdb.ReadonlyError):
            return PermissionError("read-only transaction")
        if isinstance(exc, lmdb.Error):
            return _storage_error(exc)
        return exc

    def count(self, db: str) -> int:
        try:
            return int(self._txn.stat(self._db(db))["entries"])
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc

    def savepoint(self) -> Savepoint:
        if not self._writable:
            raise PermissionError("read-only transaction")
        try:
            child = self._env.begin(write=True, parent=self._txn)
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc
        return LmdbSavepoint(child, self._dbs, writable=True, env=self._env)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        handle = self._db(db)
        chunk_size = _SCAN_CHUNK_MIN
        lo, hi = start, end
        while True:
            chunk = self._read_chunk(handle, lo, hi, reverse, chunk_size)
            yield from chunk
            if len(chunk) < chunk_size:
                return
            last = chunk[-1][0]
            if reverse:
                hi = last  # exclusive upper bound: continue strictly below the last key handed out
            else:
                lo = last + b"\x00"  # the smallest key strictly greater than `last`
            chunk_size = min(chunk_size * 2, _SCAN_CHUNK_MAX)

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        # One cursor and one seek, no generator nor chunk list: about a get's cost, where an empty scan
        # costs four (issue 16). The cursor is gone when this returns: writes may follow at once.
        try:
            cur = self._txn.cursor(self._dbs[db])
            try:
                if reverse:  # the last key below `end`, if any
                    positioned = cur.last() if end is None or not cur.set_range(end) else cur.prev()
                else:
                    positioned = cur.set_range(start)
                if not positioned:
                    return None
                item: tuple[bytes, bytes] = cur.item()  # type: ignore[assignment]  # buffers=False: bytes
                if reverse:
                    return item if item[0] >= start else None
                return item if end is None or item[0] < end else None
            finally:
                cur.close()
        except KeyError:
            self._db(db)  # raises, naming the database
            raise
        except _CALLER_ERRORS:
            raise
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc

    def _read_chunk(
        self, handle: Any, lo: bytes, hi: bytes | None, reverse: bool, limit: int
    ) -> list[tuple[bytes, bytes]]:
        try:
            return self._read_chunk_unchecked(handle, lo, hi, reverse, limit)
        except _CALLER_ERRORS:
            raise
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc

    def _read_chunk_unchecked(
        self, handle: Any, lo: bytes, hi: bytes | None, reverse: bool, limit: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(handle) as cur:
            if reverse:
                if hi is None:
                    positioned = cur.last()
                elif cur.set_range(hi):
                    positioned = cur.prev()  # the first key >= hi is excluded: step back below it
                else:
                    positioned = cur.last()  # every key is < hi
                while positioned and len(out) < limit:
                    key = bytes(cur.key())
                    if key < lo:
                        break
                    out.append((key, bytes(cur.value())))
                    positioned = cur.prev()
            else:
                positioned = cur.set_range(lo)
                while positioned and len(out) < limit:
                    key = bytes(cur.key())
                    if hi is not None and key >= hi:
                        break
                    out.append((key, bytes(cur.value())))
                    positioned = cur.next()
        return out


class LmdbSavepoint(LmdbTxn):
    """A savepoint: an LMDB nested transaction, committed into its parent by `release`."""

    def release(self) -> None:
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            raise _storage_error(exc) from exc

    def rollback(self) -> None:
        self._txn.abort()


class LmdbKV:
    """The `KV` contract over LMDB (see the module docstring for durability and snapshot rules)."""

    def __init__(
        self,
        path: str | Path,
        *,
        map_size: int = 8 << 30,
        max_map_size: int | None = None,
        sync: bool = False,
    ) -> None:
        self._path = Path(path)
        self._map_size = map_size
        self._max_map_size = max(map_size, max_map_size or map_size)
        self._sync = sync
        self._grow_lock = threading.Lock()
        self._page_size = 4096
        self._gate = Gate()
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}
        self._path.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: it holds every payload
        self._open()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sync(self) -> bool:
        return self._sync

    def _open(self) -> None:
        env = lmdb.open(
            str(self._path),
            map_size=self._map_size,
            max_dbs=len(DATABASES),
            sync=self._sync,
            metasync=self._sync,
            readahead=False,  # random access into a store that may be larger than RAM
            max_spare_txns=4,
            mode=0o600,  # data.mdb and lock.mdb: private (issue 13; LMDB's default is 0644)
        )
        with env.begin(write=True) as txn:
            dbs = {name: env.open_db(name.encode(), txn=txn, create=True) for name in DATABASES}
        self._env = env
        self._dbs = dbs
        self._map_size = int(env.info()["map_size"])  # LMDB raises it to the data's size if larger
        self._page_size = int(env.stat()["psize"])

    def _require_env(self) -> lmdb.Environment:
        if self._env is None:
            raise Unavailable(f"the store at {self._path} is closed")
        return self._env

    @property
    def map_size(self) -> int:
        return self._map_size

    @property
    def max_map_size(self) -> int:
        return self._max_map_size

    def usage(self) -> StoreUsage:
        """How full the store is (a read transaction and one stat per sub-database: cheap)."""
        with self._gate.shared():
            env = self._require_env()
            info = env.info()
            stat = env.stat()
            psize = int(stat["psize"])
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            with env.begin(write=False) as txn:
                for handle in self._dbs.values():
                    s = txn.stat(handle)
                    pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
            return StoreUsage(
                map_size=int(info["map_size"]),
                max_map_size=self._max_map_size,
                high_water=(int(info["last_pgno"]) + 1) * psize,
                used=int(pages) * psize,
                page_size=psize,
            )

    def high_water(self) -> int:
        """The file's used extent, (last page + 1) x page size: at least what `usage().used` says, and
        much cheaper (no transaction)."""
        env = self._env
        if env is None:
            return 0
        return (int(env.info()["last_pgno"]) + 1) * self._page_size

    def grow(self, *, need: int = 0, wait_s: float | None = None) -> bool:
        """Double the map (at least `need` bytes more), up to its maximum; False if it is there already.
        Waits for every open transaction to end (LMDB's rule for `set_mapsize`), new ones waiting
        meanwhile; with `wait_s`, gives up (False) after that long (a snapshot's copy holds a read
        transaction for seconds, and every reader would wait with it)."""
        with self._grow_lock:
            if self._map_size >= self._max_map_size:
                return False
            target = min(self._max_map_size, max(2 * self._map_size, self._map_size + need))
            with self._gate.exclusive(wait_s) as acquired:
                if not acquired:
                    return False
                env = self._require_env()
                try:
                    env.set_mapsize(target)
                except lmdb.Error as exc:
                    raise _storage_error(exc) from exc
                self._map_size = int(env.info()["map_size"])
            return True

    def _grow_if_needed(self) -> None:
        env = self._env
        if env is None or self._map_size >= self._max_map_size:
            return
        info = env.info()
        if (int(info["last_pgno"]) + 1) * self._page_size >= GROW_AT * self._map_size:
            self.grow(wait_s=GROW_WAIT_S)  # else the next write tries again; a full map grows at any cost

    def reserve_disk(self, nbytes: int) -> bool:
        """Keep `nbytes` of disk allocated past the file's used extent (module docstring). False when the
        file system has not that much left (what it had is still allocated); True also where the file
        system cannot preallocate (nothing is reserved there)."""
        with self._gate.shared():
            env = self._require_env()
            start = (int(env.info()["last_pgno"]) + 1) * self._page_size
            fd = os.open(self._path / _DATA_FILE, os.O_RDWR)
            try:
                return preallocate(fd, start, nbytes)
            finally:
                os.close(fd)

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction: committed when the block exits normally, aborted when it raises."""
        self._grow_if_needed()
        with self._gate.shared():
            env = self._require_env()
            txn = env.begin(write=True)
            try:
                yield LmdbTxn(txn, self._dbs, writable=True, env=env)
            except BaseException:
                txn.abort()
                raise
            try:
                txn.commit()
            except lmdb.Error as exc:
                raise _storage_error(exc) from exc

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only transaction on a consistent snapshot (held until the block exits)."""
        with self._gate.shared():
            env = self._require_env()
            txn = env.begin(write=False)
            view = LmdbTxn(txn, self._dbs, writable=False, env=env)
            try:
                yield view
            finally:
                txn.abort()
                # py-lmdb keeps an aborted read transaction's reader slot for as long as its Transaction
                # object lives, and an exception raised in the block keeps this frame and the caller's
                # (holding `view`) alive in its traceback until the cyclic collector runs (rarely in
                # schedd). Dropping both references frees the slot now: a stream of refused requests
                # filled the reader table (MDB_READERS_FULL) and then every read failed.
                del view._txn
                del txn

    def copy_to(self, dest_file: str | Path) -> None:
        """Write a consistent, compacted copy of the environment to `dest_file` (a single `data.mdb` image).

        The file appears atomically (written to a temporary name, then renamed); with `sync=True` it is
        fsynced first.
        """
        dest = Path(dest_file)
        tmp = dest.with_name(dest.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.copy_to_fd(fd)
            if self._sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        if self._sync:
            _fsync_dir(dest.parent)

    def copy_to_fd(self, fd: int) -> None:
        """Write a consistent compacted copy at the current offset of `fd` (LMDB writes with `write(2)`)."""
        with self._gate.shared():
            self._require_env().copyfd(fd, compact=True)

    def replace_from(self, src_file: str | Path, *, offset: int = 0) -> None:
        """Replace the whole contents with the image in `src_file` (from byte `offset` to its end).

        The image is copied next to the live file and checked to open as an LMDB environment with every
        database of `DATABASES`; then, with no transaction open, the environment is closed, the copy renamed
        over `data.mdb` (atomic: a crash leaves either the old or the new contents) and reopened.
        """
        env = self._require_env()
        restore = self._path / _RESTORE_FILE
        with open(src_file, "rb") as src, open(restore, "wb") as out:
            src.seek(offset)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())  # the rename below must never expose a partly written file
        _check_image(restore, self._map_size)
        with self._gate.exclusive():
            if self._env is not env:
                raise Unavailable(f"the store at {self._path} was closed during a restore")
            env.close()
            self._env = None
            try:
                os.replace(restore, self._path / _DATA_FILE)
                _fsync_dir(self._path)
            finally:
                self._open()

    def close(self) -> None:
        """Close the environment once every open transaction has ended. Idempotent."""
        with self._gate.exclusive():
            if self._env is not None:
                self._env.close()
                self._env = None


def _check_image(image: Path, map_size: int) -> None:
    """Open an LMDB single-file image read-only and check that every database of `DATABASES` exists."""
    try:
        env = lmdb.open(
            str(image),
            subdir=False,
            readonly=True,
            lock=False,
            map_size=map_size,
            max_dbs=len(DATABASES),
        )
        try:
            with env.begin() as txn:
                for name in DATABASES:
                    if name not in ADDED_LATER:
                        env.open_db(name.encode(), txn=txn, create=False)
        finally:
            env.close()
    except lmdb.Error as exc:
        image.unlink(missing_ok=True)
        raise ValueError(f"{image} is not a Cronraft store image: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["GROW_AT", "LmdbKV", "LmdbSavepoint", "LmdbTxn", "StoreUsage"]
