"""The worker's durable result outbox (DESIGN.md, delivery guarantees: `exactly_once`).

A result is written here *before* it is sent to the leader, and deleted only when the leader acknowledges
it, so a result made during a partition or just before a worker crash is delivered after reconnection or
restart instead of being lost (which would make the cluster re-run the attempt).

Layout: one file per attempt, `<execution id>.<term>.<index>.result`, holding a serialized
`AttemptResult`. A write goes to a temporary file in the same directory, is fsynced, renamed over the
final name, and the directory is fsynced, so after a power loss a file is either absent or complete.
Leftover temporary files (a crash mid-write) are removed on load; a file that does not parse is renamed
to `*.corrupt` and skipped, never silently deleted.

The class does blocking file I/O; the asyncio worker calls `put` and `remove` through a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable
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


def _fsync_dir(directory: Path) -> None:
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
        self._lock = threading.Lock()
        self._entries: dict[AttemptKey, common_pb2.AttemptResult] = {}
        directory.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(_TMP_SUFFIX):
                path.unlink(missing_ok=True)  # a crash mid-write: the rename never happened
                continue
            if not path.name.endswith(_SUFFIX):
                continue
            result = common_pb2.AttemptResult()
            try:
                result.ParseFromString(path.read_bytes())
            except (DecodeError, OSError) as exc:
                _log.warning("outbox entry unreadable; moved aside", path=str(path), error=str(exc))
                path.rename(path.with_name(path.name + ".corrupt"))
                continue
            if not result.execution_id:
                _log.warning("outbox entry without execution id; moved aside", path=str(path))
                path.rename(path.with_name(path.name + ".corrupt"))
                continue
            self._entries[result_key(result)] = result
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

    def put(self, result: common_pb2.AttemptResult) -> None:
        """Durably store `result` (replacing any entry of the same attempt). Returns after the fsyncs."""
        key = result_key(result)
        final = self.directory / _file_name(key)
        tmp = final.with_name(final.name + f".{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}")
        data = result.SerializeToString()
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
        _fsync_dir(self.directory)
        with self._lock:
            self._entries[key] = result

    def remove(self, keys: Iterable[AttemptKey]) -> int:
        """Delete the entries of `keys` (unknown keys are ignored); returns how many were deleted."""
        removed = 0
        for key in keys:
            with self._lock:
                if self._entries.pop(key, None) is None:
                    continue
            (self.directory / _file_name(key)).unlink(missing_ok=True)
            removed += 1
        if removed:
            _fsync_dir(self.directory)
        return removed
