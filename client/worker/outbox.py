"""The worker's durable result outbox (DESIGN.md, delivery guarantees: `exactly_once`).

A result is written here *before* it is sent to the leader, and deleted only when the leader acknowledges
it, so a result made during a partition or just before a worker crash is delivered after reconnection or
restart instead of being lost (which would make the cluster re-run the attempt).

Layout: one file per attempt, `<execution id>.<term>.<index>.result`, holding a serialized
`AttemptResult`. A write goes to a temporary file in the same directory, is fsynced, renamed over the
final name, and the directory is fsynced, so after a power loss a file is either absent or complete.
Leftover temporary files (a crash mid-write) are removed on load; a file that does not parse is renamed
to `*.corrupt` and skipped, never silently deleted.

Results that finish together are written by `put_many` as one *batch file* (`_batch-<ns>-<pid>-<n>.result`:
a magic line, then length-prefixed `AttemptResult`s), with the same temporary-file, fsync, rename and
directory-fsync steps: one pair of fsyncs for the whole batch instead of one per result (an fsync costs
milliseconds, which capped a worker at a few hundred results per second). A batch file is deleted once
every result in it was acknowledged; if the worker restarts before that, the acknowledged ones are loaded
again and resent, and the leader acknowledges them again (a result it already committed is answered as
stale). On load, a single-result file wins over a batch holding the same attempt, and a later batch over
an earlier one.

The class does blocking file I/O; the asyncio worker calls `put` and `remove` through a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog
from google.protobuf.message import DecodeError

from cronraft.proto.v1 import common_pb2

_log = structlog.get_logger(__name__)

# (execution_id, token term, token index): an attempt's identity.
AttemptKey = tuple[str, int, int]

_SUFFIX = ".result"
_TMP_SUFFIX = ".tmp"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_BATCH_PREFIX = "_batch-"
_BATCH_MAGIC = b"CRONRAFT-OUTBOX-BATCH-1\n"
_U32 = struct.Struct(">I")


def _encode_batch(results: Sequence[common_pb2.AttemptResult]) -> bytes:
    parts = [_BATCH_MAGIC]
    for result in results:
        data = result.SerializeToString()
        parts += [_U32.pack(len(data)), data]
    return b"".join(parts)


def _decode_batch(data: bytes) -> list[common_pb2.AttemptResult]:
    """The results of a batch file; DecodeError if it is truncated or does not parse."""
    out = []
    pos = len(_BATCH_MAGIC)
    while pos < len(data):
        if pos + _U32.size > len(data):
            raise DecodeError("truncated batch")
        (size,) = _U32.unpack_from(data, pos)
        pos += _U32.size
        if pos + size > len(data):
            raise DecodeError("truncated batch")
        result = common_pb2.AttemptResult()
        result.ParseFromString(data[pos : pos + size])
        pos += size
        out.append(result)
    return out


def attempt_key(execution_id: str, token: common_pb2.FencingToken) -> AttemptKey:
    return (execution_id, token.term, token.index)


def result_key(result: common_pb2.AttemptResult) -> AttemptKey:
    return attempt_key(result.execution_id, result.token)


def _file_name(key: AttemptKey) -> str:
    execution_id, term, index = key
    # Execution ids are ours (ULID-like), but never trust a remote string with a file name.
    name = (
        execution_id
        if _SAFE_ID.match(execution_id)
        else "h-" + hashlib.sha256(execution_id.encode()).hexdigest()
    )
    return f"{name}.{term}.{index}{_SUFFIX}"


# Paths are strings from here on: pathlib's joins and conversions were 16 of the writer thread's 49 samples
# (py-spy --gil, bench/perf_worker.py --rate 500).
def _write_durably(directory: str, name: str, data: bytes) -> None:
    """Write `data` to a temporary file, fsync it, rename it to `name`, fsync the directory."""
    final = os.path.join(directory, name)
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """Results waiting for the leader's acknowledgement, on disk and mirrored in memory.

    Thread-safe: `put`/`remove` may run in worker threads while the event loop reads `pending()`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._dir = str(directory)
        self._lock = threading.Lock()
        self._entries: dict[AttemptKey, common_pb2.AttemptResult] = {}
        # Results stored in batch files: key -> file name, and each batch file's unacknowledged keys.
        self._batch_of: dict[AttemptKey, str] = {}
        self._batches: dict[str, set[AttemptKey]] = {}
        self._seq = itertools.count()
        directory.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        batches: list[tuple[Path, list[common_pb2.AttemptResult]]] = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(_TMP_SUFFIX):
                path.unlink(missing_ok=True)  # a crash mid-write: the rename never happened
                continue
            if not path.name.endswith(_SUFFIX):
                continue
            try:
                data = path.read_bytes()
                if data.startswith(_BATCH_MAGIC):
                    batches.append((path, _decode_batch(data)))
                    continue
                result = common_pb2.AttemptResult()
                result.ParseFromString(data)
            except (DecodeError, OSError) as exc:
                _log.warning("outbox entry unreadable; moved aside", path=str(path), error=str(exc))
                path.rename(path.with_name(path.name + ".corrupt"))
                continue
            if not result.execution_id:
                _log.warning("outbox entry without execution id; moved aside", path=str(path))
                path.rename(path.with_name(path.name + ".corrupt"))
                continue
            self._entries[result_key(result)] = result
        singles = set(self._entries)
        for path, results in batches:  # in name (= write) order: a later batch wins
            members = self._batches.setdefault(path.name, set())
            for result in results:
                key = result_key(result)
                if not result.execution_id or key in singles:
                    continue
                self._drop_from_batch(key)
                self._entries[key] = result
                self._batch_of[key] = path.name
                members.add(key)
            if not members:  # everything in it was superseded
                del self._batches[path.name]
                path.unlink(missing_ok=True)
        if self._entries:
            _log.info("outbox loaded", pending=len(self._entries), directory=str(self.directory))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def pending(self) -> list[common_pb2.AttemptResult]:
        """A snapshot of every result not yet acknowledged (oldest file names first)."""
        with self._lock:
            return list(self._entries.values())

    def get(self, key: AttemptKey) -> common_pb2.AttemptResult | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, result: common_pb2.AttemptResult, key: AttemptKey | None = None) -> None:
        """Durably store `result` (replacing any entry of the same attempt; `key`: its key, when the
        caller has it). Returns after the fsyncs."""
        if key is None:
            key = result_key(result)
        _write_durably(self._dir, _file_name(key), result.SerializeToString())
        with self._lock:
            self._entries[key] = result
            # A stale copy may stay in a batch file until that batch is deleted: on load, this file wins.
            emptied = self._drop_from_batch(key)
        if emptied:
            self._unlink([emptied])

    def put_many(
        self, results: Sequence[common_pb2.AttemptResult], keys: Sequence[AttemptKey] | None = None
    ) -> None:
        """Durably store `results` in one batch file (one write, one pair of fsyncs); same contract as
        `put` for each result (`keys`: theirs, in the same order, when the caller has them). Returns
        after the fsyncs."""
        if keys is None:
            keys = [result_key(result) for result in results]
        if len(results) <= 1:
            for result, key in zip(results, keys, strict=True):
                self.put(result, key)
            return
        name = f"{_BATCH_PREFIX}{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}{_SUFFIX}"
        _write_durably(self._dir, name, _encode_batch(results))
        singles = []
        emptied = []
        with self._lock:
            members = self._batches.setdefault(name, set())
            for result, key in zip(results, keys, strict=True):
                if key in self._entries and key not in self._batch_of:
                    singles.append(_file_name(key))  # superseded: on load a single file would win
                emptied_batch = self._drop_from_batch(key)
                if emptied_batch:
                    emptied.append(emptied_batch)
                self._entries[key] = result
                self._batch_of[key] = name
                members.add(key)
        if singles or emptied:
            self._unlink(singles + emptied)

    def remove(self, keys: Iterable[AttemptKey]) -> int:
        """Delete the entries of `keys` (unknown keys are ignored); returns how many were deleted.
        A batch file goes once none of its results is left."""
        removed, doomed = self.forget(keys)
        self.delete(doomed)
        return removed

    def forget(self, keys: Iterable[AttemptKey]) -> tuple[int, list[str]]:
        """`remove` without its file I/O: (how many entries were deleted, the files now to `delete`)."""
        removed = 0
        doomed: list[str] = []
        with self._lock:
            for key in keys:
                if self._entries.pop(key, None) is None:
                    continue
                removed += 1
                if key in self._batch_of:
                    emptied = self._drop_from_batch(key)
                    if emptied:
                        doomed.append(emptied)
                else:
                    doomed.append(_file_name(key))
        return removed, doomed

    def delete(self, names: Sequence[str]) -> None:
        """Delete the files `forget` returned (acknowledged: no directory fsync, see `_unlink`)."""
        if names:
            self._unlink(names, durable=False)

    def _drop_from_batch(self, key: AttemptKey) -> str | None:
        """Forget that `key` lives in a batch file (lock held); the file's name if it is now empty."""
        name = self._batch_of.pop(key, None)
        if name is None:
            return None
        members = self._batches.get(name)
        if members is not None:
            members.discard(key)
            if not members:
                del self._batches[name]
                return name
        return None

    def _unlink(self, names: Iterable[str], *, durable: bool = True) -> None:
        """Delete files; `durable`: fsync the directory after. A superseded file must not come back
        after a crash (on load, a single-result file would win over the newer batch). An acknowledged
        one may: its results are resent and acknowledged again (stale), so `remove` skips the fsync,
        which cost a millisecond per acknowledgement (Results.on_acks deletes small ones on the loop)."""
        directory = self._dir
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        if durable:
            _fsync_dir(directory)
