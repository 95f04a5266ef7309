"""Durability of the Raft journal: fsync before acknowledging, and disk space allocated ahead of writes.

Neither class imports the Raft library: `raft.pysyncobj_adapter` tells them which messages rely on the
log (`Durability.before_send`) and where pysyncobj's journal keeps the end of its entries (`JournalLayout`).
Both are used on the Raft thread only.

fsync (`ReplicatorConfig.fsync`), precisely:
- `fsync=False`: the journal is an mmap that pysyncobj never syncs; its meta file (term, vote, commit index)
  is rewritten without fsync; the snapshot is renamed without fsync. A crash of the process loses nothing
  that was acknowledged; a power loss may lose acknowledged writes on every node that lost power.
- `fsync=True`: before this node sends a message that *acknowledges or relies on* its log (a follower's
  `next_node_idx` reply, a leader's `append_entries` carrying entries, a vote request or a vote), the journal
  file is `fdatasync`ed, and before a vote request or a vote the meta file and its directory are `fsync`ed
  (term and vote are durable before they are used). A leader counts itself in the commit quorum only after
  it has sent the entries, hence after its own sync. So an entry acknowledged to a client is on disk on a
  majority. Snapshot files are fsynced before pysyncobj renames them into place (raft.snapshot_file). Not
  covered: the commit index in the meta file (it is recomputed from the log; not needed for safety), the
  directory entry of a snapshot rename and of the journal rewrite after compaction (a power loss right
  after a compaction may lose the new snapshot and fall back to replaying a journal that pysyncobj has
  rewritten in place: a torn rewrite there is not detected). The state store's own durability is
  `LmdbKV(sync=...)`.

Space (issue 11): a full disk must never kill the node nor wedge the log. The journal is pysyncobj's mmap
(`ResizableFile`): it grows the file with ftruncate, which leaves a hole, then writes through the map; on a
full disk that write is a SIGBUS and the process dies. So every append first goes through `JournalSpace`:
the journal's blocks are allocated (posix_fallocate, raft.diskspace) before pysyncobj writes into them,
`journal_reserve_bytes` ahead of the last entry (kept up each tick), and an append the disk cannot hold
raises `JournalFull` (an OSError, ENOSPC) before anything is written (what the replicator then does:
raft.syncobj_replicator).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cronraft.raft.diskspace import free_bytes, preallocate, release


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Durability:
    """With `enabled` (fsync=True): sync the journal (and the meta file holding term and vote) before the
    messages that rely on them (module docstring). The adapter says which messages those are."""

    def __init__(self, journal: Path, meta: Path, enabled: bool) -> None:
        self._journal = journal
        self._meta = meta
        self.enabled = enabled
        self._fd: int | None = None

    def before_send(self, *, sync_log: bool, sync_meta: bool) -> None:
        if not sync_log:
            return
        if self._fd is None:
            self._fd = os.open(self._journal, os.O_RDONLY)  # same inode: pysyncobj only grows/rewrites it
        os.fdatasync(self._fd)  # flushes the mmap's dirty pages of the journal, and its size
        if sync_meta and self._meta.exists():
            fd = os.open(self._meta, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self._meta.parent)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JournalFull(OSError):
    """The disk cannot hold the journal's next entries (raised before pysyncobj writes anything)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


@dataclass(frozen=True)
class JournalLayout:
    """Where the journal file keeps the end of its entries (a little-endian u32 at `end_offset_at`, past a
    `header`-byte header), and what an entry costs beyond its payload (`record_overhead` in the file,
    `command_overhead` of the library's wrapping of the payload). raft.pysyncobj_adapter has pysyncobj's."""

    header: int
    end_offset_at: int
    record_overhead: int
    command_overhead: int


MAINTAIN_STEP = 1 << 20


class JournalSpace:
    """The journal's disk space, allocated ahead of pysyncobj's writes (module docstring, "Space").

    Used on the Raft thread only (pysyncobj's appends happen there too). `allocated` is the end of the
    prefix of the file known to be allocated: blocks are allocated past the file's end without changing
    its size (raft.diskspace), and pysyncobj only ever grows the file, so they stay allocated."""

    def __init__(self, path: Path, reserve: int, layout: JournalLayout) -> None:
        self.path = path
        self.reserve = max(0, reserve)
        self.layout = layout
        self.allocated = 0
        self.low: str | None = None  # why the reserve cannot be kept, while it cannot
        self._fd: int | None = None
        self._read_end: Callable[[], int] | None = None

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self._read_end = None
        self.allocated = self.offset()  # written, hence allocated; nothing assumed past it

    def track(self, read_end: Callable[[], int]) -> None:
        """Take the end of the last entry from the journal's writer (`read_end`, in memory), not from the
        file: a pread is a system call on the Raft thread, made for each entry (`ensure`) and twice a tick
        (`maintain`, `entry_bytes`), and each system call there lets the apply thread take the GIL, to be
        waited for (about 8 us of the Raft thread's CPU each on a busy follower)."""
        self._read_end = read_end

    def close(self) -> None:
        self._read_end = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def offset(self) -> int:
        """The end of the last entry (the journal's own header field)."""
        if self._fd is None:
            return 0
        if self._read_end is not None:
            return self._read_end()
        raw = os.pread(self._fd, 4, self.layout.end_offset_at)
        return struct.unpack("<I", raw)[0] if len(raw) == 4 else 0

    def entry_bytes(self) -> int:
        return max(0, self.offset() - self.layout.header)

    def entry_cost(self, payload_bytes: int) -> int:
        """The journal bytes one proposed payload of `payload_bytes` takes."""
        return payload_bytes + self.layout.command_overhead + self.layout.record_overhead

    def ensure(self, nbytes: int) -> None:
        """Make sure the next `nbytes` of the journal are allocated; JournalFull if the disk cannot."""
        if self._fd is None:
            return
        need = self.offset() + nbytes
        if need > self.allocated and not self._allocate(need):
            free = _free_bytes(self.path)
            raise JournalFull(
                f"disk full: the Raft journal cannot take {nbytes} more bytes ({free} bytes free on "
                f"{self.path.parent})"
            )

    def maintain(self) -> None:
        """Keep `reserve` bytes allocated past the last entry (each tick; cheap when nothing to do). When it
        must allocate, it takes up to `MAINTAIN_STEP` more (no more than the reserve again) where the disk
        has it: a journal growing each tick cost a fallocate each tick (a system call on the Raft thread,
        about 30 us there on a busy follower), now one per step of growth."""
        if self._fd is None:
            return
        want = self.offset() + self.reserve
        step = min(MAINTAIN_STEP, self.reserve)
        if want <= self.allocated or self._allocate(want + step) or self._allocate(want):
            self.low = None
        elif self.low is None:
            self.low = (
                f"disk full: the Raft journal cannot keep its reserve of {self.reserve} bytes "
                f"({_free_bytes(self.path)} bytes free on {self.path.parent})"
            )

    def _allocate(self, end: int) -> bool:
        assert self._fd is not None
        if not preallocate(self._fd, self.allocated, end - self.allocated):
            return False
        self.allocated = end
        return True

    def release(self, nbytes: int) -> bool:
        """Give `nbytes` of the reserve back to the file system (for pysyncobj's small meta file, whose
        rewrite needs a new block): the last ones allocated, if that leaves the next entry its room."""
        if self._fd is None:
            return False
        start = self.allocated - nbytes
        if start < self.offset() + self.layout.record_overhead + self.layout.command_overhead:
            return False
        if not release(self._fd, start, nbytes):
            return False
        self.allocated = start
        return True


def _free_bytes(path: Path) -> int:
    return free_bytes(path.parent)


__all__ = ["MAINTAIN_STEP", "Durability", "JournalFull", "JournalLayout", "JournalSpace", "fsync_dir"]
