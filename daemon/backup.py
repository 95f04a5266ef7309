"""A node's backups (`Cluster.Backup`): a consistent copy of its store streamed as a backup file
(raft.backup_file), while the node goes on applying.

How, and why so:
1. *Copy.* The store is copied to a spool file in the data directory (`backup-spool/`) with
   `LmdbKV.copy_to_fd`: LMDB's compacting copy, which reads the whole store in one read transaction, so
   the copy is the state at exactly one applied index (read back from the copy: `meta.last_applied`).
   It costs what a Raft snapshot costs (the node takes one every `snapshot_max_bytes` of log) and holds
   that read transaction only while copying at disk speed. Streaming straight out of the transaction
   instead would hold it for as long as the client takes to read the whole store: the store's gate
   (raft.store) makes a growing map wait for every open transaction, and apply with it.
2. *Stream.* The header (where the backup comes from, its index, its versions), then the spool file in
   chunks of at most `CHUNK_BYTES`, at most `max_bytes_per_s` (the request's, at most the node's
   default), then the trailer with the sha256 of everything before it. No transaction is held while
   streaming; the spool is deleted when the stream ends, however it ends.

Bounds: one backup at a time per node (a second is refused RESOURCE_EXHAUSTED while one streams); the
copy needs free disk for a store's worth plus the storage reserve (refused RESOURCE_EXHAUSTED otherwise,
naming both), so that the node still accepts writes meanwhile (daemon.storage).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cronraft.errors import InternalError, InvalidArgument, ResourceExhausted
from cronraft.proto.v1 import cluster_pb2
from cronraft.raft.backup_file import BackupHeader, encode_header, encode_trailer
from cronraft.raft.backup_image import ImageFacts, image_facts
from cronraft.raft.diskspace import free_bytes
from cronraft.raft.store import LmdbKV

SPOOL_DIR = "backup-spool"
SPOOL_FILE = "store.mdb"
CHUNK_BYTES = 1 << 20
DEFAULT_MAX_BYTES_PER_S = 64 << 20
# The slowest pace a backup may ask for: slower would hold the node's one backup slot (and its spool)
# for hours. A paced stream sends chunks of about a quarter second of its rate (at least MIN_CHUNK_BYTES),
# so that a slow backup still moves every second or so instead of once per megabyte.
MIN_BYTES_PER_S = 32 << 10
MIN_CHUNK_BYTES = 16 << 10


@dataclass(frozen=True)
class Origin:
    """Where a backup comes from, as its header says (read when the copy starts)."""

    cluster_id: str
    node_id: str
    term: int
    versions: Mapping[str, str]  # raft.versions.schedule_versions(): the compared keys and "cronraft"


class BackupSource:
    """The backups of one node's store (module docstring). `origin` is read as the copy starts; `wall_ms`
    stamps the header; `sleep` and `monotonic` pace the stream (injected for tests)."""

    def __init__(
        self,
        kv: LmdbKV,
        data_dir: Path,
        *,
        origin: Callable[[], Origin],
        reserve_bytes: int,
        wall_ms: Callable[[], int],
        max_bytes_per_s: int = DEFAULT_MAX_BYTES_PER_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self._spool_dir = data_dir / SPOOL_DIR
        self._origin = origin
        self._reserve = reserve_bytes
        self._wall_ms = wall_ms
        self._max_rate = max_bytes_per_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._running: str | None = None  # the node id of the backup streaming now, for the refusal

    @property
    def busy(self) -> bool:
        return self._running is not None

    def rate(self, asked: int) -> int:
        """The body bytes a second a stream asking for `asked` gets (0: the default); a positive rate
        under MIN_BYTES_PER_S is refused naming the field."""
        if 0 < asked < MIN_BYTES_PER_S:
            raise InvalidArgument(
                "max_bytes_per_s",
                f"{asked} bytes a second is under the minimum, {MIN_BYTES_PER_S} (32 KiB/s)",
            )
        return self._max_rate if asked <= 0 else min(asked, self._max_rate)

    async def stream(self, max_bytes_per_s: int = 0) -> AsyncGenerator[cluster_pb2.BackupChunk, None]:
        """The backup as `BackupChunk`s: start, data..., end. Close it (`aclose`, or `contextlib.aclosing`)
        to stop early: the spool is deleted and the next backup may start."""
        rate = self.rate(max_bytes_per_s)  # refused before anything starts
        chunk_bytes = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, rate // 4))
        origin = self._origin()
        if self._running is not None:
            raise ResourceExhausted(
                f"a backup from node {self._running} is already running: one at a time per node; try again "
                "once it ends, or take it from another member"
            )
        self._running = origin.node_id
        spool = self._spool_dir / SPOOL_FILE
        try:
            facts, size = await asyncio.to_thread(self._copy, spool)
            header = BackupHeader(
                cluster_id=origin.cluster_id,
                node_id=origin.node_id,
                applied_index=facts.applied_index,
                term=origin.term,
                epoch_term=facts.epoch_term,
                created_ms=self._wall_ms(),
                cronraft_version=origin.versions.get("cronraft", ""),
                versions={k: v for k, v in origin.versions.items() if k != "cronraft"},
                body_bytes=size,
            )
            head = encode_header(header)
            digest = hashlib.sha256(head)
            yield cluster_pb2.BackupChunk(start=cluster_pb2.BackupStart(header=head, info=_info(header)))
            sent = 0
            started = self._monotonic()
            with open(spool, "rb") as f:
                while data := await asyncio.to_thread(f.read, chunk_bytes):
                    digest.update(data)
                    sent += len(data)
                    yield cluster_pb2.BackupChunk(data=data)
                    ahead = started + sent / rate - self._monotonic()
                    if ahead > 0:
                        await self._sleep(ahead)
            if sent != size:
                raise InternalError(
                    f"the backup's copy changed while it was sent ({size} bytes, sent {sent})"
                )
            checksum = digest.digest()
            yield cluster_pb2.BackupChunk(
                end=cluster_pb2.BackupEnd(
                    trailer=encode_trailer(size, checksum), sha256=checksum, body_bytes=size
                )
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, self._spool_dir, True)
            self._running = None

    def _copy(self, spool: Path) -> tuple[ImageFacts, int]:
        """The store copied into `spool` (one read transaction: one applied index); its facts and size."""
        shutil.rmtree(self._spool_dir, ignore_errors=True)  # a spool left by a crash mid-backup
        need = self._kv.high_water()
        free = free_bytes(self._spool_dir.parent)
        if free < need + self._reserve:
            raise ResourceExhausted(
                f"no room for the backup's copy of the store: it needs about {need} bytes plus the storage "
                f"reserve ({self._reserve}), and {free} are free on the data directory's file system"
            )
        self._spool_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._kv.copy_to_fd(fd)
        finally:
            os.close(fd)
        return image_facts(spool), spool.stat().st_size


def _info(header: BackupHeader) -> cluster_pb2.BackupInfo:
    return cluster_pb2.BackupInfo(
        format=header.format,
        cluster_id=header.cluster_id,
        node_id=header.node_id,
        applied_index=header.applied_index,
        term=header.term,
        epoch_term=header.epoch_term,
        created_ms=header.created_ms,
        cronraft_version=header.cronraft_version,
        versions=dict(header.versions),
        body_bytes=header.body_bytes,
    )


__all__ = ["CHUNK_BYTES", "DEFAULT_MAX_BYTES_PER_S", "MIN_BYTES_PER_S", "SPOOL_DIR", "BackupSource", "Origin"]
