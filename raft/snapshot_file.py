"""The snapshot file: pysyncobj's two boundary log entries, the cluster, and a compacted LMDB copy.

Layout: MAGIC | u32 header length | header | LMDB image (a compacted data.mdb) to the end of the file.
header: u64 last index, u64 last term, u32 len, last command | same for the entry before | u32 n, then
n x (u32 len, utf-8 address). The two entries are pysyncobj's own (it keeps them as the new log start);
they travel as opaque `(command, index, term)` tuples. Integers are big-endian.

Written by the replicator's serializer hook (`write_snapshot`, on the Raft thread, at the exact applied
index), read back by its deserializer (`read_snapshot_header`, then `LmdbKV.replace_from` at the offset).
Pure file I/O: no Raft library, no store.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

_MAGIC = b"CRSNAP01"
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">QQI")

LogEntry = tuple[bytes, int, int]  # pysyncobj's (command, index, term)


def _encode_entry(entry: LogEntry) -> bytes:
    command, index, term = entry
    return _ENTRY.pack(index, term, len(command)) + bytes(command)


def _decode_entry(buf: bytes, pos: int) -> tuple[LogEntry, int]:
    index, term, size = _ENTRY.unpack_from(buf, pos)
    pos += _ENTRY.size
    return (bytes(buf[pos : pos + size]), index, term), pos + size


def encode_snapshot_header(last: LogEntry, prev: LogEntry, cluster: list[str]) -> bytes:
    parts = [_encode_entry(last), _encode_entry(prev), _U32.pack(len(cluster))]
    for address in cluster:
        raw = address.encode()
        parts += [_U32.pack(len(raw)), raw]
    header = b"".join(parts)
    return _MAGIC + _U32.pack(len(header)) + header


def read_snapshot_header(path: str | Path) -> tuple[LogEntry, LogEntry, list[str], int]:
    """(last entry, entry before it, cluster addresses, offset of the LMDB image) of a snapshot file."""
    with open(path, "rb") as f:
        lead = f.read(len(_MAGIC) + _U32.size)
        if len(lead) < len(_MAGIC) + _U32.size or not lead.startswith(_MAGIC):
            raise ValueError(f"{path} is not a Cronraft snapshot")
        (size,) = _U32.unpack_from(lead, len(_MAGIC))
        header = f.read(size)
    last, pos = _decode_entry(header, 0)
    prev, pos = _decode_entry(header, pos)
    (count,) = _U32.unpack_from(header, pos)
    pos += _U32.size
    cluster = []
    for _ in range(count):
        (n,) = _U32.unpack_from(header, pos)
        pos += _U32.size
        cluster.append(header[pos : pos + n].decode())
        pos += n
    return last, prev, cluster, len(lead) + size


def write_snapshot(
    file_name: str | Path, header: bytes, write_image: Callable[[int], None], *, fsync: bool
) -> None:
    """Write `header`, then the image (`write_image(fd)`, e.g. `LmdbKV.copy_to_fd`) to `file_name`; with
    `fsync`, sync it before returning (pysyncobj renames it into place afterwards). On any failure the
    partial file is deleted: pysyncobj only logs the failure, and the copy would keep its space (a full
    disk)."""
    fd = os.open(file_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, header)
        write_image(fd)
        if fsync:
            os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(file_name)
        raise
    finally:
        os.close(fd)


__all__ = ["LogEntry", "encode_snapshot_header", "read_snapshot_header", "write_snapshot"]
