"""What both clients share of a backup (`Client.backup`, `AsyncClient.backup`): the stream of
`Cluster.Backup` written to a file object as it arrives, in order, with its checksum checked.

The node sends the backup file's bytes (cluster.proto `BackupChunk`): the header (`start`), the body
(`data`, in order), the trailer (`end`, with the sha256 of the header and body). The writer writes them
as they come, so a backup never has to fit in memory, and checks that they came in that order and that
the sha256 it computed over what it wrote is the node's: a backup damaged in transit is an error, not a
file. It knows nothing else of the file's format (that is the node's, raft/backup_file.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from cronraft.errors import InternalError
from cronraft.proto.v1 import cluster_pb2

__all__ = ["BackupReceipt", "BackupWriter"]


@dataclass(frozen=True)
class BackupReceipt:
    """A backup written whole: what it holds (as its header says), its checksum, its size in bytes."""

    info: cluster_pb2.BackupInfo
    sha256: str  # hex, of the header and the body (the trailer holds it too)
    file_bytes: int
    server: str  # the node that served it


class BackupWriter:
    """Writes the chunks of one backup stream to `sink`; `progress(bytes written so far)` after each."""

    def __init__(self, sink: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        self._sink = sink
        self._progress = progress
        self._hash = hashlib.sha256()
        self._info: cluster_pb2.BackupInfo | None = None
        self._body = 0
        self.written = 0
        self._end: cluster_pb2.BackupEnd | None = None

    def take(self, chunk: cluster_pb2.BackupChunk) -> None:
        part = chunk.WhichOneof("part")
        if self._end is not None:
            raise InternalError("the backup stream went on after its end")
        if part == "start":
            if self._info is not None:
                raise InternalError("the backup stream started twice")
            self._info = chunk.start.info
            self._write(chunk.start.header, hashed=True)
        elif self._info is None:
            raise InternalError(f"the backup stream began with {part or 'nothing'}, not its header")
        elif part == "data":
            self._body += len(chunk.data)
            self._write(chunk.data, hashed=True)
        elif part == "end":
            self._end = chunk.end
            if self._hash.digest() != chunk.end.sha256 or self._body != chunk.end.body_bytes:
                raise InternalError(
                    f"the backup arrived damaged: {self._body} body bytes with sha256 "
                    f"{self._hash.hexdigest()}, the node sent {chunk.end.body_bytes} with sha256 "
                    f"{chunk.end.sha256.hex()}"
                )
            self._write(chunk.end.trailer, hashed=False)
        else:
            raise InternalError(f"the backup stream sent an unknown part {part!r}")

    def _write(self, data: bytes, *, hashed: bool) -> None:
        if hashed:
            self._hash.update(data)
        self._sink.write(data)
        self.written += len(data)
        if self._progress is not None:
            self._progress(self.written)

    def finish(self, server: str) -> BackupReceipt:
        """The receipt once the stream ended; an error if it ended before its trailer."""
        if self._info is None or self._end is None:
            raise InternalError(f"the backup stream ended early, after {self.written} bytes")
        return BackupReceipt(
            info=self._info, sha256=self._end.sha256.hex(), file_bytes=self.written, server=server
        )
