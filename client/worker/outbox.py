"""The worker's durable result outbox (DESIGN.md, delivery guarantees: `exactly_once`).

A result is written here *before* it is sent to the leader, and deleted only when the leader acknowledges
it, so a result made during a partition or just before a worker crash is delivered after reconnection or
restart instead of being lost (which would make the cluster re-run the attempt).

Layout: one file per attempt, `<execution id>.<term>.<index>.result`, holding a serialized
`AttemptResult`. A write goes to a temporary file in the same directory, is fsynced, renamed over the
final name, and the directory is fsynced, so after a power loss a file is either absent or complete.
Leftover temporary files (a crash mid-write) are removed on load; a file that does not parse is renamed
to `*.corrupt` and skipped, never silently deleted.

Results that finish together are written by `put_many` to a *segment* (`_batch-<ns>-<pid>-<n>.result`: a
magic line, then records of a length, a CRC-32 and an `AttemptResult`). A segment is made like a single
file (temporary file, fsync, rename, directory fsync) with its first results; the writes that follow,
while it is open, are appended to it and fdatasynced: one flush per write, no new file, no directory
fsync, no unlink. (A file per write was 7 wake-ups of the writer thread and ~0.7 ms of its CPU; an
append is 3 and ~0.1 ms. Under load, with results written every 50 ms, that was a tenth of a worker's
CPU: bench/perf_worker.py --rate.) A crash mid-append leaves a torn last record, whose results were
never flushed and so never sent: loading keeps the records before it. A segment stays open for
SEGMENT_S at most (then the next write starts a new one), and is closed sooner when no write came for a
while (`close_segment`). It is deleted once it is closed and every result in it was acknowledged; if
the worker restarts before that, the acknowledged ones are loaded again and resent, and the leader
acknowledges them again (a result it already committed is answered as stale): at most SEGMENT_S of
results. Batch files of an earlier release (magic `..._BATCH-1`, written whole) load as before. On
load, a single-result file wins over a segment holding the same attempt, a later segment over an
earlier one, and a later record over an earlier one.

The class does blocking file I/O; the asyncio worker calls `put_many` and large deletes through a
thread.
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
import zlib
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
_BATCH_MAGIC = b"CRONRAFT-OUTBOX-BATCH-1\n"  # an earlier release's batch file, written whole
_SEGMENT_MAGIC = b"CRONRAFT-OUTBOX-SEGMENT-1\n"
_U32 = struct.Struct(">I")
_RECORD = struct.Struct(">II")  # a segment record's length and CRC-32, then the result

# A segment takes appends for this long after it was made, then the next write starts a new one: what a
# restart resends of the results already acknowledged, and a file made (7 wake-ups) per SEGMENT_S.
SEGMENT_S = 1.0
SEGMENT_MAX_BYTES = 8 * 1024 * 1024


def _encode_records(results: Sequence[common_pb2.AttemptResult]) -> bytes:
    parts = []
    for result in results:
        data = result.SerializeToString()
        parts += [_RECORD.pack(len(data), zlib.crc32(data)), data]
    return b"".join(parts)


def _decode_batch(data: bytes) -> list[common_pb2.AttemptResult]:
    """The results of an earlier release's batch file; DecodeError if it is truncated or does not
    parse."""
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


def _decode_segment(data: bytes) -> tuple[list[common_pb2.AttemptResult], int]:
    """The results of a segment, and how many bytes at its end were not a whole record (a crash mid-
    append: never flushed, so never sent). DecodeError if a whole record does not parse."""
    out = []
    pos = len(_SEGMENT_MAGIC)
    while pos + _RECORD.size <= len(data):
        size, crc = _RECORD.unpack_from(data, pos)
        body = data[pos + _RECORD.size : pos + _RECORD.size + size]
        if len(body) < size or zlib.crc32(body) != crc:
            break
        result = common_pb2.AttemptResult()
        result.ParseFromString(body)
        out.append(result)
        pos += _RECORD.size + size
    return out, len(data) - pos


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
def _write_durably(directory: str, name: str, data: bytes, *, keep_open: bool = False) -> int | None:
    """Write `data` to a temporary file, fsync it, rename it to `name`, fsync the directory. With
    `keep_open`, return the file's descriptor, positioned at its end (for appends), instead of closing
    it."""
    final = os.path.join(directory, name)
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        if not keep_open:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        if keep_open:
            os.close(fd)
        raise
    return fd if keep_open else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    """The open segment: its file name, its descriptor (at its end), when it was made (time.monotonic),
    and its size in bytes."""

    __slots__ = ("fd", "made", "name", "size")

    def __init__(self, name: str, fd: int, made: float, size: int) -> None:
        self.name = name
        self.fd = fd
        self.made = made
        self.size = size

    def full(self, now: float) -> bool:
        """Whether the next write should start a new segment instead."""
        return now - self.made >= SEGMENT_S or self.size >= SEGMENT_MAX_BYTES


class Outbox:
    """Results waiting for the leader's acknowledgement, on disk and mirrored in memory.

    Thread-safe: `put_many`/`remove` may run in worker threads while the event loop reads `pending()`;
    writes (`put`, `put_many`, `close_segment`) take turns.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._dir = str(directory)
        self._lock = threading.Lock()  # the maps below
        # One write at a time: appends share the open segment (reentrant: put_many hands a lone result
        # to put).
        self._write_lock = threading.RLock()
        self._entries: dict[AttemptKey, common_pb2.AttemptResult] = {}
        # Results stored in segments: key -> file name, and each segment's unacknowledged keys.
        self._batch_of: dict[AttemptKey, str] = {}
        self._batches: dict[str, set[AttemptKey]] = {}
        self._segment: _Segment | None = None  # the one appends go to; never deleted while open
        self._open_name = ""  # its name (read under _lock)
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
                if data.startswith(_SEGMENT_MAGIC):
                    results, torn = _decode_segment(data)
                    if torn:
                        _log.warning(
                            "outbox segment ends in a torn record; ignored", path=str(path), bytes=torn
                        )
                    batches.append((path, results))
                    continue
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
        for path, results in batches:  # in name (= write) order: a later segment, a later record wins
            members = self._batches.setdefault(path.name, set())
            for result in results:
                key = result_key(result)
                if not result.execution_id or key in singles:
                    continue
                if self._batch_of.get(key) != path.name:
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

    @property
    def segment_open(self) -> bool:
        """Whether writes are appended to an open segment (`close_segment` closes it)."""
        return self._segment is not None

    def put(self, result: common_pb2.AttemptResult, key: AttemptKey | None = None) -> None:
        """Durably store `result` in a file of its own (replacing any entry of the same attempt; `key`: its
        key, when the caller has it). Returns after the fsyncs."""
        if key is None:
            key = result_key(result)
        with self._write_lock:
            _write_durably(self._dir, _file_name(key), result.SerializeToString())
            with self._lock:
                self._entries[key] = result
                # A stale copy may stay in a segment until that segment is deleted: on load, this file wins.
                emptied = self._drop_from_batch(key)
            if emptied:
                self._unlink([emptied])

    def put_many(
        self, results: Sequence[common_pb2.AttemptResult], keys: Sequence[AttemptKey] | None = None
    ) -> None:
        """Durably store `results` with one flush: appended to the open segment, else in a new one (or a
        lone result in a file of its own); same contract as `put` for each result (`keys`: theirs, in
        the same order, when the caller has them). Returns after the flush."""
        if not results:
            return
        if keys is None:
            keys = [result_key(result) for result in results]
        with self._write_lock:
            segment = self._segment
            if segment is not None and segment.full(time.monotonic()):
                self._close(segment)
                segment = None
            if segment is None and len(results) == 1:
                self.put(results[0], keys[0])
                return
            records = _encode_records(results)
            if segment is None:
                segment = self._open(records)
            else:
                try:
                    _write_all(segment.fd, records)
                    os.fdatasync(segment.fd)
                except OSError:
                    self._close(segment)  # it may end in a torn record now: no more appends there
                    raise
                segment.size += len(records)
            self._record(segment.name, results, keys)

    def _open(self, records: bytes) -> _Segment:
        """Make a new segment holding `records` (durably, as a single file is) and open it for appends."""
        name = f"{_BATCH_PREFIX}{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}{_SUFFIX}"
        data = _SEGMENT_MAGIC + records
        fd = _write_durably(self._dir, name, data, keep_open=True)
        assert fd is not None
        segment = self._segment = _Segment(name, fd, time.monotonic(), len(data))
        with self._lock:
            self._open_name = name
        return segment

    def _record(
        self, name: str, results: Sequence[common_pb2.AttemptResult], keys: Sequence[AttemptKey]
    ) -> None:
        """`results` are stored in segment `name`: the maps say so; copies they supersede go."""
        singles = []
        emptied = []
        with self._lock:
            members = self._batches.setdefault(name, set())
            for result, key in zip(results, keys, strict=True):
                if self._batch_of.get(key) != name:
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

    def close_segment(self) -> None:
        """No more appends to the open segment (no write came for a while): it goes now if every result
        in it was acknowledged, else with the last acknowledgement. Nothing while a write is under way."""
        with self._lock:
            name = self._open_name
            if not (name and self._close_idle()) or name in self._batches:
                return
        self._unlink([name], durable=False)  # acknowledged: it may come back (see _unlink)

    def _close_idle(self) -> bool:
        """Close the open segment (`_lock` held) unless a write is under way; whether it was closed."""
        if not self._write_lock.acquire(blocking=False):  # never waits: no lock-order inversion
            return False
        try:
            segment = self._segment
            if segment is not None:
                self._segment = None
                self._open_name = ""
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
            return segment is not None
        finally:
            self._write_lock.release()

    def close(self) -> None:
        """The worker is stopping: close the open segment (`close_segment`)."""
        self.close_segment()

    def _close(self, segment: _Segment) -> None:
        """Close `segment` (write lock held); delete it if nothing in it is left to acknowledge."""
        self._segment = None
        with contextlib.suppress(OSError):
            os.close(segment.fd)
        with self._lock:
            self._open_name = ""
            empty = segment.name not in self._batches
        if empty:
            self._unlink([segment.name], durable=False)  # acknowledged: it may come back (see _unlink)

    def remove(self, keys: Iterable[AttemptKey]) -> int:
        """Delete the entries of `keys` (unknown keys are ignored); returns how many were deleted.
        A segment goes once none of its results is left and it is closed."""
        removed, doomed = self.forget(keys)
        self.delete(doomed)
        return removed

    def forget(self, keys: Iterable[AttemptKey], *, keep_open: bool = False) -> tuple[int, list[str]]:
        """`remove` without its file I/O: (how many entries were deleted, the files now to `delete`).
        The open segment, emptied, is closed and named too, unless `keep_open` (more writes are coming
        that will append to it) or a write to it is under way."""
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
            open_name = self._open_name
            if open_name and not keep_open and open_name not in self._batches and self._close_idle():
                doomed.append(open_name)
        return removed, doomed

    def delete(self, names: Sequence[str]) -> None:
        """Delete the files `forget` returned (acknowledged: no directory fsync, see `_unlink`)."""
        if names:
            self._unlink(names, durable=False)

    def _drop_from_batch(self, key: AttemptKey) -> str | None:
        """Forget that `key` lives in a segment (lock held); the segment's name if that emptied it and it
        is closed (the open one goes when it closes: `_close`)."""
        name = self._batch_of.pop(key, None)
        if name is None:
            return None
        members = self._batches.get(name)
        if members is not None:
            members.discard(key)
            if not members:
                del self._batches[name]
                return name if name != self._open_name else None
        return None

    def _unlink(self, names: Iterable[str], *, durable: bool = True) -> None:
        """Delete files; `durable`: fsync the directory after. A superseded file must not come back
        after a crash (on load, a single-result file would win over the newer segment). An acknowledged
        one may: its results are resent and acknowledged again (stale), so `remove` skips the fsync,
        which cost a millisecond per acknowledgement (Results.on_acks deletes small ones on the loop)."""
        directory = self._dir
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        if durable:
            _fsync_dir(directory)
