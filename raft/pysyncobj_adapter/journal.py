"""pysyncobj's journal as the adapter uses it: its file layout (for raft.durability), the guard that makes
appends take their disk space first and never half-stores a term and vote (`guard_journal`), and the
journal of a store seeded from a backup (`seed_journal`)."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

from pysyncobj.journal import FileJournal, ResizableFile
from pysyncobj.syncobj import _COMMAND_TYPE

from cronraft.raft.durability import JournalFull, JournalLayout, JournalSpace
from cronraft.raft.snapshot_file import LogEntry

# pysyncobj's FileJournal layout: a 40-byte header whose last 4 bytes (little-endian u32) are the offset
# past the last record; a record is u32 length, u64 index, u64 term, the command, u32 length again. The
# u32 offset also caps a journal at 4 GiB: compaction by bytes keeps it far below. pysyncobj wraps our
# payload (the replicated call's id and arguments) before it journals it: a margin of 64 bytes.
FILE_JOURNAL_LAYOUT = JournalLayout(header=40, end_offset_at=36, record_overhead=24, command_overhead=64)
# What a failed store of the term and vote frees of the journal's reserve before it tries again.
_META_ROOM = 64 << 10


# The command of pysyncobj's no-op entries (a new leader's first entry); never applied by us.
NO_OP_COMMAND = bytes([_COMMAND_TYPE.NO_OP])


def seed_journal(journal: Path, entries: list[LogEntry], term: int) -> None:
    """Create pysyncobj's journal (and its `.meta`) holding `entries`, current term `term`, no vote: the
    Raft files of a store seeded from a backup (raft.backup_image), written with pysyncobj's own
    FileJournal so that its layout is pysyncobj's. The caller syncs the files."""
    created = FileJournal(str(journal))
    try:
        if len(created):
            raise ValueError(f"{journal} already holds entries")
        created.setCurrentTerm(term, None)
        for command, index, entry_term in entries:
            created.add(command, index, entry_term)
        created.flush()
    finally:
        created._destroy()


def journal_meta_path(journal: Path) -> Path:
    """pysyncobj's FileJournal keeps term, vote and commit index in `<journal>.meta`."""
    return Path(str(journal) + ".meta")


class _GuardedJournal(FileJournal):  # type: ignore[misc]
    """pysyncobj's FileJournal whose appends allocate their space first (raft.durability `JournalSpace`),
    and whose term and vote are never half-stored. The journal pysyncobj made becomes one of these by
    class assignment; `_space` and `_node` are set on the instance.

    pysyncobj sets its current term and vote in memory, then has the journal store them (a new meta
    file, renamed over the old one). On a full disk that write fails after the node already acts on the
    new term: a leader that saw a higher term would go on leading in it, beside the one elected in it
    (two leaders in one term). So a failed store first frees a little of the journal's reserve and tries
    again, and if it still fails puts the term and vote back as they were stored, then raises: the node
    has ignored the message that carried the new term, which Raft allows (a message may be lost)."""

    _space: JournalSpace
    _node: Any

    def add(self, command: bytes, idx: int, term: int) -> None:
        space = self._space
        space.ensure(len(command) + space.layout.record_overhead)
        super().add(command, idx, term)

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        stored = (self.getCurrentTerm(), self.getVotedForNodeId())
        try:
            super().setCurrentTerm(term, votedForNodeId)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._put_back(stored)
                raise
        if self._space.release(_META_ROOM):
            with contextlib.suppress(OSError):
                super().setCurrentTerm(term, votedForNodeId)
                return
        self._put_back(stored)
        raise JournalFull(f"disk full: term {term} cannot be stored; ignored until space returns")

    def _put_back(self, stored: tuple[int, Any]) -> None:
        meta = self._FileJournal__meta
        meta["currentTerm"], meta["votedForNodeId"] = stored
        node = self._node
        if node is not None:
            node._SyncObj__raftCurrentTerm = max(stored[0], node._SyncObj__getCurrentLogTerm())
            node._SyncObj__votedForNodeId = stored[1]

    def end_offset(self) -> int:
        """The end of the last entry in the file, as the journal keeps it in memory (its header's field)."""
        return int(self._FileJournal__currentOffset)

    def onOneSecondTimer(self) -> None:
        # The commit index, stored lazily once a second: not needed for safety (it is recomputed from
        # the log). On a full disk it waits for space (pysyncobj tries again each second).
        try:
            super().onOneSecondTimer()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise


def guard_journal(journal: Any, space: JournalSpace, node: Any) -> None:
    """Make pysyncobj's FileJournal `journal` a `_GuardedJournal` whose appends take their space from
    `space` (opened here; it reads the journal's end from memory), over a `_SizedFile`. `node`: the
    RaftNode whose term and vote are put back when storing them fails (None: none)."""
    space.open()
    journal._space = space
    journal._node = node
    journal.__class__ = _GuardedJournal
    space.track(journal.end_offset)
    mapped = journal._FileJournal__journalFile
    if type(mapped) is ResizableFile:
        mapped._size = mapped._ResizableFile__mm.size()
        mapped.__class__ = _SizedFile


class _SizedFile(ResizableFile):  # type: ignore[misc]
    """pysyncobj's mmap of the journal file, knowing its size: `ResizableFile.write` asks the map for its
    size (an fstat, a system call on the Raft thread) before each write, twice per appended entry. The
    size changes only when `write` grows the map, so it is kept (`_size`) and read again only then. The
    journal's file becomes one of these by class assignment (`RaftNode.__init__`)."""

    _size: int

    def write(self, offset: int, values: bytes) -> None:
        end = offset + len(values)
        if end > self._size:
            super().write(offset, values)  # grows the map (or the file), then writes
            self._size = self._ResizableFile__mm.size()
            return
        self._ResizableFile__mm[offset:end] = values


__all__ = ["FILE_JOURNAL_LAYOUT", "NO_OP_COMMAND", "guard_journal", "journal_meta_path", "seed_journal"]
