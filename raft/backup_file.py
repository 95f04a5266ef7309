"""The backup file: what `schedctl cluster backup` writes and `schedd restore` reads. Pure file format.

Layout (integers big-endian):

    MAGIC "CRBACKUP" | u32 format version | u32 header length | header (UTF-8 JSON) | body | trailer
    trailer: END_MAGIC "CRBKEND1" | u64 body length | sha256 of everything before the trailer (32 bytes)

The header says where the backup comes from and what it holds (`BackupHeader`): the cluster id, the node
that served it, the applied index its store is at, the Raft term then, the leader epoch's term stored in
it, the package version and the versions that change schedule results (raft.versions), when it was taken,
what the body is and its length. The body is a compacted LMDB image of the node's store (`data.mdb`, as
`LmdbKV.copy_to_fd` writes it), so that a restore is a copy, not a rebuild.

The checksum covers the magic, the header and the body (a flipped byte anywhere, header included, is
caught) and sits in a fixed-size trailer at the very end: the node streams the header and the body
before it knows the checksum, and a reader finds the trailer from the file's size without parsing
anything first. A truncated file has no trailer (END_MAGIC is not where it must be) and is refused as such.

`verify` checks a whole file (magic, trailer, checksum, then the header) and names what is wrong; nothing
here trusts a header field before the checksum matched.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cronraft.errors import FailedPrecondition

MAGIC = b"CRBACKUP"
END_MAGIC = b"CRBKEND1"
FORMAT_VERSION = 1
BODY_LMDB_IMAGE = "lmdb-image"  # the only body kind of format 1
_LEAD = struct.Struct(">8sII")  # magic, format version, header length
_TRAILER = struct.Struct(">8sQ32s")  # end magic, body length, sha256
TRAILER_SIZE = _TRAILER.size
MAX_HEADER_BYTES = 64 << 10  # far above what a header holds (a few hundred bytes)
_READ = 1 << 20


@dataclass(frozen=True)
class BackupHeader:
    """What a backup says of itself (the JSON header, one key per field)."""

    cluster_id: str
    node_id: str
    applied_index: int  # the store's last applied log index: the state is exactly the log up to it
    term: int  # the serving node's Raft term when the copy was taken (0: not known)
    epoch_term: int  # the term of the last leader epoch stored (a restored cluster's terms start above it)
    created_ms: int  # Unix ms, the serving node's clock
    cronraft_version: str
    versions: Mapping[str, str] = field(default_factory=dict)  # raft.versions: schedule-result versions
    body_bytes: int = 0
    body: str = BODY_LMDB_IMAGE
    format: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
            "applied_index": self.applied_index,
            "term": self.term,
            "epoch_term": self.epoch_term,
            "created_ms": self.created_ms,
            "cronraft_version": self.cronraft_version,
            "versions": dict(sorted(self.versions.items())),
            "body": self.body,
            "body_bytes": self.body_bytes,
        }


def encode_header(header: BackupHeader) -> bytes:
    """The file's first bytes: magic, format version, header length, the header."""
    raw = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":")).encode()
    return _LEAD.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw


def encode_trailer(body_bytes: int, sha256: bytes) -> bytes:
    """The file's last bytes; `sha256` is the digest of everything before them (header and body)."""
    if len(sha256) != 32:
        raise ValueError("sha256 must be 32 bytes")
    return _TRAILER.pack(END_MAGIC, body_bytes, sha256)


@dataclass(frozen=True)
class BackupFile:
    """A verified backup file: its header, and where its body is."""

    path: Path
    header: BackupHeader
    body_offset: int
    body_bytes: int
    sha256: str  # hex, of everything before the trailer

    def read_body(self, chunk: int = _READ) -> Iterator[bytes]:
        """The body, in chunks of at most `chunk` bytes."""
        with open(self.path, "rb") as f:
            f.seek(self.body_offset)
            left = self.body_bytes
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    raise FailedPrecondition(f"{self.path}: the body ended {left} bytes early")
                left -= len(data)
                yield data


def _bad(path: Path | str, problem: str) -> FailedPrecondition:
    return FailedPrecondition(f"{path}: {problem}")


def verify(path: str | Path) -> BackupFile:
    """Check a backup file whole and read its header: the magic, the trailer, the sha256 checksum of
    everything before the trailer, then the header (format version, fields, body length). Raises
    FailedPrecondition naming the file and what is wrong; a checksum mismatch says so in those words."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            return _verify(p, f, size)
    except OSError as exc:
        raise _bad(p, f"cannot read the backup: {exc.strerror or exc}") from exc


def _verify(path: Path, f: BinaryIO, size: int) -> BackupFile:
    lead = f.read(_LEAD.size)
    if len(lead) < _LEAD.size or not lead.startswith(MAGIC):
        raise _bad(path, "not a Cronraft backup file (no CRBACKUP magic at its start)")
    if size < _LEAD.size + TRAILER_SIZE:
        raise _bad(path, f"truncated: {size} bytes, shorter than an empty backup")
    f.seek(size - TRAILER_SIZE)
    end_magic, body_bytes, want = _TRAILER.unpack(f.read(TRAILER_SIZE))
    if end_magic != END_MAGIC:
        raise _bad(
            path,
            "incomplete or damaged: no CRBKEND1 trailer at its end (a backup cut short, or a file with "
            "bytes added after it)",
        )
    f.seek(0)
    h = hashlib.sha256()
    left = size - TRAILER_SIZE
    while left > 0:
        data = f.read(min(_READ, left))
        if not data:
            raise _bad(path, "shorter than its own length while reading it: was it changed meanwhile?")
        h.update(data)
        left -= len(data)
    have = h.digest()
    if have != want:
        raise _bad(
            path,
            f"checksum mismatch: the sha256 of its contents is {have.hex()}, its trailer says {want.hex()}: "
            "the file is corrupt (changed or damaged after it was written); use another backup",
        )
    _, version, header_len = _LEAD.unpack(lead)
    if version != FORMAT_VERSION:
        raise _bad(
            path, f"backup format {version}: this version of Cronraft reads format {FORMAT_VERSION} only"
        )
    if header_len > MAX_HEADER_BYTES or _LEAD.size + header_len + body_bytes + TRAILER_SIZE != size:
        raise _bad(path, "its header and body lengths do not add up to its size")
    f.seek(_LEAD.size)
    header = _decode_header(path, f.read(header_len), body_bytes)
    return BackupFile(
        path=path,
        header=header,
        body_offset=_LEAD.size + header_len,
        body_bytes=body_bytes,
        sha256=have.hex(),
    )


def _decode_header(path: Path, raw: bytes, body_bytes: int) -> BackupHeader:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise _bad(path, f"unreadable header: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad(path, "unreadable header: not a JSON object")
    try:
        header = BackupHeader(
            cluster_id=_typed(doc, "cluster_id", str),
            node_id=_typed(doc, "node_id", str),
            applied_index=_typed(doc, "applied_index", int),
            term=_typed(doc, "term", int),
            epoch_term=_typed(doc, "epoch_term", int),
            created_ms=_typed(doc, "created_ms", int),
            cronraft_version=_typed(doc, "cronraft_version", str),
            versions={str(k): str(v) for k, v in _typed(doc, "versions", dict).items()},
            body_bytes=_typed(doc, "body_bytes", int),
            body=_typed(doc, "body", str),
            format=_typed(doc, "format", int),
        )
    except KeyError as exc:
        raise _bad(path, f"header field {exc.args[0]} is missing or of the wrong type") from None
    if header.body != BODY_LMDB_IMAGE:
        raise _bad(path, f"body kind {header.body!r} is not one this version reads ({BODY_LMDB_IMAGE})")
    if header.body_bytes != body_bytes:
        raise _bad(path, f"the header says {header.body_bytes} body bytes, the trailer {body_bytes}")
    return header


def _typed(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise KeyError(key)
    return value


__all__ = [
    "BODY_LMDB_IMAGE",
    "END_MAGIC",
    "FORMAT_VERSION",
    "MAGIC",
    "TRAILER_SIZE",
    "BackupFile",
    "BackupHeader",
    "encode_header",
    "encode_trailer",
    "verify",
]
