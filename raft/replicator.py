"""The Raft replicator: the `Replicator` interface and its pysyncobj adapter (the only pysyncobj importer).

pysyncobj's camelCase stays inside this module. What it owns:

- one `@replicated` entry point (`_RaftNode.applyEntry`) taking opaque payload bytes (a serialized
  `CommandBatch`; never a pickled object of ours). The log index of the entry being applied is
  `raftLastApplied + 1`: pysyncobj's `__applyLogEntries` walks the committed entries in order from
  `raftLastApplied + 1` and increments `raftLastApplied` after each one (no-op entries included), and
  `__loadDumpFile` sets it to the snapshot's index. (The one exception, a `VERSION` entry that this code
  cannot run, never occurs: we never call `setCodeVersion`.)
- proposals only from the leader: `propose` refuses on a follower (`NotLeader`), and the payloads are handed
  to pysyncobj on the Raft thread, inside `_checkCommandsToApply`, right after checking leadership there, so
  pysyncobj never forwards them to another node; the transport also drops any `apply_command` message.
- snapshots through the `serializer`/`deserializer` hooks: one file holding pysyncobj's two boundary log
  entries and a compacted LMDB copy (`LmdbKV.copy_to_fd`), restored with `LmdbKV.replace_from`.
- the failure reasons of pysyncobj mapped to the error tree (`error_for_fail_reason`).
- the bridge from the Raft thread (pysyncobj's auto-tick thread, where every callback runs) to asyncio
  (`loop.call_soon_threadsafe`).
- the apply thread: `applyEntry` (on the Raft thread) only stages the committed entry; at the end of
  the same tick, after pysyncobj called the proposers' callbacks (which register to wait for that
  index), the staged entries go to one apply thread, which runs `apply` in log order and answers the
  proposers. Applying a burst of large entries takes the Raft thread seconds of CPU; done on that thread
  it kept heartbeats and votes unanswered for as long, and followers started elections in the middle of
  a fire burst. A snapshot (`_serialize`) waits until the store has applied exactly the snapshot's index;
  installing one (`_deserialize`) first waits for the entries already handed over.
- leadership transfer (`transfer_leadership`, Raft's TimeoutNow through pysyncobj's `transferLeadership`,
  called on the Raft thread): a leader whose wall clock is off hands leadership away (daemon.clockprobe).
- the audit records of each applied entry (raft.audit), written right after the apply, and two
  failpoints: `raft.after_apply_before_reply` (leader only: the entry is applied, its proposer not yet
  answered) and `raft.snapshot_install` (a leader's snapshot received, before it is loaded).

Space (issue 11): a full disk must never kill the node nor wedge the log.
- The journal is pysyncobj's mmap (`ResizableFile`): it grows the file with ftruncate, which leaves a
  hole, then writes through the map; on a full disk that write is a SIGBUS and the process dies. So
  every append goes through `_JournalSpace`: the journal's blocks are allocated (posix_fallocate) before
  pysyncobj writes into them, `journal_reserve_bytes` ahead of the last entry (kept up each tick), and
  an append the disk cannot hold raises `JournalFull` (an OSError, ENOSPC) before anything is written:
  on the leader the proposals are answered RESOURCE_EXHAUSTED before they reach pysyncobj; on a
  follower, pysyncobj's tick fails before it acknowledges, and the leader sends the entries again later
  (a follower with a full disk lags, and catches up once space returns). The journal object is made a
  `_GuardedJournal` by assigning its class, right after pysyncobj created it.
- The journal is compacted (a snapshot) once its entries exceed `snapshot_max_bytes`, as well as after
  `snapshot_min_entries` entries or `snapshot_min_time_s` (pysyncobj's own rules): a bulk import is few
  entries of many bytes. A snapshot that fails (no space for it) is deleted, and the next byte-triggered
  one waits `_COMPACTION_RETRY_S`.
- An entry whose apply fails for an environmental reason (the store's map or disk full, an I/O error:
  raft.state's `is_environmental`) is retried (100 ms, growing to 1 s) after `on_apply_failure` had a go
  at it (the daemon grows the map there). Meanwhile the node is "stuck": proposers waiting for that entry
  or a later one are answered at once with RESOURCE_EXHAUSTED naming the cause (the entries are
  committed and will apply once space returns), `propose` refuses everything (nothing could apply before
  it), and `stuck()` says so. Reads are never blocked: they read the store as last applied.

Durability (`ReplicatorConfig.fsync`), precisely:
- `fsync=False`: the journal is an mmap that pysyncobj never syncs; its meta file (term, vote, commit index)
  is rewritten without fsync; the snapshot is renamed without fsync. A crash of the process loses nothing
  that was acknowledged; a power loss may lose acknowledged writes on every node that lost power.
- `fsync=True`: before this node sends a message that *acknowledges or relies on* its log (a follower's
  `next_node_idx` reply, a leader's `append_entries` carrying entries, a vote request or a vote), the journal
  file is `fdatasync`ed, and before a vote request or a vote the meta file and its directory are `fsync`ed
  (term and vote are durable before they are used). A leader counts itself in the commit quorum only after
  it has sent the entries, hence after its own sync. So an entry acknowledged to a client is on disk on a
  majority. Snapshot files are fsynced before pysyncobj renames them into place. Not covered: the commit
  index in the meta file (it is recomputed from the log; not needed for safety), the directory entry of a
  snapshot rename and of the journal rewrite after compaction (a power loss right after a compaction may
  lose the new snapshot and fall back to replaying a journal that pysyncobj has rewritten in place: a torn
  rewrite there is not detected). The state store's own durability is `LmdbKV(sync=...)`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import queue
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import FileJournal
from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.transport import TCPTransport

from cronraft.errors import (
    ConfigError,
    CronraftError,
    NotLeader,
    OutcomeUnknown,
    ResourceExhausted,
    Unavailable,
)
from cronraft.failpoint import enabled as failpoints_enabled
from cronraft.failpoint import failpoint
from cronraft.raft.audit import AuditLog
from cronraft.raft.diskspace import free_bytes, preallocate, release
from cronraft.raft.store import LmdbKV

log = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"
# pysyncobj's appendEntriesBatchSizeBytes: the most entry bytes one append_entries message carries.
MAX_MESSAGE_BYTES = 16 << 20
# pysyncobj's FileJournal layout: a 40-byte header whose last 4 bytes (little-endian u32) are the offset
# past the last record; a record is u32 length, u64 index, u64 term, the command, u32 length again. The
# u32 offset also caps a journal at 4 GiB: compaction by bytes keeps it far below.
_JOURNAL_HEADER = 40
_JOURNAL_OFFSET_AT = 36
_RECORD_OVERHEAD = 24
# pysyncobj wraps our payload (the replicated call's id and arguments) before it journals it: a margin.
_COMMAND_OVERHEAD = 64
_COMPACTION_RETRY_S = 30.0
# What a failed store of the term and vote frees of the journal's reserve before it tries again.
_META_ROOM = 64 << 10
_APPLY_RETRY_S = (0.1, 1.0)  # first and longest pause between tries of an entry that failed


@dataclass(frozen=True)
class RaftMember:
    node_id: str
    raft_address: str  # "host:port"


@dataclass(frozen=True)
class ReplicatorConfig:
    self_member: RaftMember
    peers: tuple[RaftMember, ...]
    data_dir: Path
    secret: str | None
    election_timeout_ms: int = 1000
    heartbeat_ms: int = 100  # pysyncobj's appendEntriesPeriod
    snapshot_min_entries: int = 100_000
    snapshot_min_time_s: int = 300
    # Also compact once the journal's entries exceed this many bytes (0: entries and time only).
    snapshot_max_bytes: int = 256 << 20
    # Disk kept allocated ahead of the journal's last entry (module docstring, "Space").
    journal_reserve_bytes: int = 32 << 20
    fsync: bool = False


@dataclass(frozen=True)
class RaftStatus:
    node_id: str
    is_leader: bool
    leader_id: str | None
    term: int
    commit_index: int
    applied_index: int
    connected: dict[str, bool] = field(default_factory=dict)  # peer node id -> connected
    ready: bool = False
    has_quorum: bool = False


class Replicator(Protocol):
    """A replicated log feeding one `apply(index, payload)` function on every node.

    Contract: `apply` runs on one thread (the replicator's), in log order, once per entry per process
    lifetime, but an entry may be applied again after a restart (journal replay): `apply` must be idempotent
    by index and return None for an index it has already applied, else the result bytes.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> RaftStatus: ...

    async def propose(self, payload: bytes, *, timeout_s: float) -> bytes:
        """Append `payload` as one entry and wait until this node has applied it; return apply's result.

        Raises `NotLeader` (nothing was appended), `Unavailable` (not started/stopping, or no leader: nothing
        was appended), `ResourceExhausted` (queue full: nothing appended), `OutcomeUnknown` (timeout or
        leadership change after the append: the entry may still commit; retry with the same request ids).
        """
        ...

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None:
        """Register `cb`, called from the replicator's thread when leadership, leader or term change."""
        ...

    async def transfer_leadership(self, target: str | None) -> bool:
        """Ask this leader to hand leadership to the member `target` (a node id; None: any caught-up one).

        True when the request was sent (Raft's TimeoutNow); the transfer itself completes (or not) later:
        watch `status()`. False when refused: not the leader, unknown target, or the target is not fully
        caught up (it could not win the election); retry later.
        """
        ...


# --- failure reasons -----------------------------------------------------------------------------------

_FAIL_REASON_NAMES: dict[int, str] = {
    value: name for name, value in vars(FAIL_REASON).items() if not name.startswith("_")
}


def fail_reason_names() -> dict[str, int]:
    """Every pysyncobj FAIL_REASON by name (so that tests can check the mapping is complete)."""
    return {name: value for value, name in _FAIL_REASON_NAMES.items()}


def error_for_fail_reason(reason: int) -> CronraftError | None:
    """The one mapping from a pysyncobj FAIL_REASON to the error tree (None for SUCCESS)."""
    name = _FAIL_REASON_NAMES.get(reason, f"unknown({reason})")
    if reason == FAIL_REASON.SUCCESS:
        return None
    if reason == FAIL_REASON.QUEUE_FULL:
        return ResourceExhausted("the Raft command queue is full; retry later")
    if reason == FAIL_REASON.MISSING_LEADER:
        return Unavailable("no Raft leader (election in progress or no quorum); retry later")
    if reason == FAIL_REASON.NOT_LEADER:
        # Only on forwarding or our own refusal on the Raft thread: the entry was never appended here.
        return NotLeader(None)
    if reason == FAIL_REASON.REQUEST_DENIED:
        # Only membership and leadership-transfer requests are denied; we send neither as a proposal.
        return Unavailable("the Raft leader denied the request")
    if reason in (FAIL_REASON.DISCARDED, FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # DISCARDED: another entry took this index, so this one did not apply *there*; we still report
        # "unknown" so that every post-append failure has one retry rule (same request ids, deduplicated).
        return OutcomeUnknown(f"leadership changed before the entry committed ({name}); it may apply")
    return OutcomeUnknown(f"unexpected pysyncobj failure reason {name}")


# --- snapshot file -------------------------------------------------------------------------------------
# MAGIC | u32 header length | header | LMDB image (a compacted data.mdb) to the end of the file.
# header: u64 last index, u64 last term, u32 len, last command | same for the entry before | u32 n, then
# n x (u32 len, utf-8 address). The two entries are pysyncobj's own (it keeps them as the new log start).

_MAGIC = b"CRSNAP01"
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">QQI")

_LogEntry = tuple[bytes, int, int]  # pysyncobj's (command, index, term)


def _encode_entry(entry: _LogEntry) -> bytes:
    command, index, term = entry
    return _ENTRY.pack(index, term, len(command)) + bytes(command)


def _decode_entry(buf: bytes, pos: int) -> tuple[_LogEntry, int]:
    index, term, size = _ENTRY.unpack_from(buf, pos)
    pos += _ENTRY.size
    return (bytes(buf[pos : pos + size]), index, term), pos + size


def encode_snapshot_header(last: _LogEntry, prev: _LogEntry, cluster: list[str]) -> bytes:
    parts = [_encode_entry(last), _encode_entry(prev), _U32.pack(len(cluster))]
    for address in cluster:
        raw = address.encode()
        parts += [_U32.pack(len(raw)), raw]
    header = b"".join(parts)
    return _MAGIC + _U32.pack(len(header)) + header


def read_snapshot_header(path: str | Path) -> tuple[_LogEntry, _LogEntry, list[str], int]:
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


# --- pysyncobj subclasses ------------------------------------------------------------------------------


class _Durability:
    """With fsync=True: sync the journal (and term/vote) before messages that rely on them (module doc)."""

    _SYNC_LOG = frozenset({"next_node_idx", "request_vote", "response_vote"})
    _SYNC_META = frozenset({"request_vote", "response_vote"})

    def __init__(self, journal: Path, enabled: bool) -> None:
        self._journal = journal
        self._meta = Path(str(journal) + ".meta")
        self.enabled = enabled
        self._fd: int | None = None

    def before_send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        carries = kind == "append_entries" and bool(message.get("entries") or message.get("transmission"))
        if not (carries or kind in self._SYNC_LOG):
            return
        if self._fd is None:
            self._fd = os.open(self._journal, os.O_RDONLY)  # same inode: pysyncobj only grows/rewrites it
        os.fdatasync(self._fd)  # flushes the mmap's dirty pages of the journal, and its size
        if kind in self._SYNC_META and self._meta.exists():
            fd = os.open(self._meta, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self._meta.parent)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _transport_class(durability: _Durability) -> type:
    class _Transport(TCPTransport):  # type: ignore[misc]
        def send(self, node: Any, message: Any) -> bool:
            if message.get("type") == "apply_command":
                # We never forward proposals (see `_RaftNode._checkCommandsToApply`); a stray one is dropped
                # and its caller times out with OutcomeUnknown. Never happens in practice.
                log.warning("dropped a proposal that pysyncobj tried to forward to %s", node)
                return False
            if durability.enabled:
                durability.before_send(message)
            return bool(super().send(node, message))

    return _Transport


class JournalFull(OSError):
    """The disk cannot hold the journal's next entries (raised before pysyncobj writes anything)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class _JournalSpace:
    """The journal's disk space, allocated ahead of pysyncobj's writes (module docstring, "Space").

    Used on the Raft thread only (pysyncobj's appends happen there too). `allocated` is the end of the
    prefix of the file known to be allocated: blocks are allocated past the file's end without changing
    its size (raft.diskspace), and pysyncobj only ever grows the file, so they stay allocated."""

    def __init__(self, path: Path, reserve: int) -> None:
        self.path = path
        self.reserve = max(0, reserve)
        self.allocated = 0
        self.low: str | None = None  # why the reserve cannot be kept, while it cannot
        self._fd: int | None = None

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self.allocated = self.offset()  # written, hence allocated; nothing assumed past it

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def offset(self) -> int:
        """The end of the last entry (pysyncobj's own header field)."""
        if self._fd is None:
            return 0
        raw = os.pread(self._fd, 4, _JOURNAL_OFFSET_AT)
        return struct.unpack("<I", raw)[0] if len(raw) == 4 else 0

    def entry_bytes(self) -> int:
        return max(0, self.offset() - _JOURNAL_HEADER)

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
        """Keep `reserve` bytes allocated past the last entry (each tick; cheap when nothing to do)."""
        if self._fd is None:
            return
        want = self.offset() + self.reserve
        if want <= self.allocated or self._allocate(want):
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
        if start < self.offset() + _RECORD_OVERHEAD + _COMMAND_OVERHEAD:
            return False
        if not release(self._fd, start, nbytes):
            return False
        self.allocated = start
        return True


def _free_bytes(path: Path) -> int:
    return free_bytes(path.parent)


class _GuardedJournal(FileJournal):  # type: ignore[misc]
    """pysyncobj's FileJournal whose appends allocate their space first (see `_JournalSpace`), and whose
    term and vote are never half-stored. The journal pysyncobj made becomes one of these by class
    assignment; `_space` and `_node` are set on the instance.

    pysyncobj sets its current term and vote in memory, then has the journal store them (a new meta
    file, renamed over the old one). On a full disk that write fails after the node already acts on the
    new term: a leader that saw a higher term would go on leading in it, beside the one elected in it
    (two leaders in one term). So a failed store first frees a little of the journal's reserve and tries
    again, and if it still fails puts the term and vote back as they were stored, then raises: the node
    has ignored the message that carried the new term, which Raft allows (a message may be lost)."""

    _space: _JournalSpace
    _node: Any

    def add(self, command: bytes, idx: int, term: int) -> None:
        space = self._space
        space.ensure(len(command) + _RECORD_OVERHEAD)
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

    def onOneSecondTimer(self) -> None:
        # The commit index, stored lazily once a second: not needed for safety (it is recomputed from
        # the log). On a full disk it waits for space (pysyncobj tries again each second).
        try:
            super().onOneSecondTimer()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise


class _QuietTickFailures(logging.Filter):
    """pysyncobj logs every failed tick with its traceback, and every failed snapshot; on a full disk
    that is each tick (a follower's appends, the meta file's writes, a snapshot tried again each tick).
    One such record per `every_s`, per kind."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.getMessage() == "Failed to store full dump":
            key = "snapshot"
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            key = type(exc).__name__
        else:
            return True
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        self._last[key] = now
        return True


_TICK_FILTER = _QuietTickFailures()
logging.getLogger("pysyncobj.syncobj").addFilter(_TICK_FILTER)


class _RaftNode(SyncObj):  # type: ignore[misc]
    def __init__(self, owner: SyncObjReplicator, selfNode: str, otherNodes: list[str], conf: Any) -> None:
        self._owner = owner  # set first: the tick thread starts inside SyncObj.__init__
        super().__init__(selfNode, otherNodes, conf, transportClass=_transport_class(owner._durability))
        # Appends allocate their space first (module docstring, "Space"). Before this line only the
        # journal's first no-op entry can have been written (the tick thread starts with a pause).
        journal = self._SyncObj__raftLog
        if isinstance(journal, FileJournal):
            owner._journal_space.open()
            journal._space = owner._journal_space
            journal._node = self
            journal.__class__ = _GuardedJournal
        # Fast failover. pysyncobj's own callback first (it keeps the connected set), then ours. A
        # callback missed before this line only means the normal election timeout for that one event.
        transport = self._SyncObj__transport
        self._pysyncobj_on_disconnected = transport._onNodeDisconnectedCallback
        transport.setOnNodeDisconnectedCallback(self._on_node_disconnected)

    def _on_node_disconnected(self, node: Any) -> None:
        """The connection to the leader closed (runs on the Raft thread). A killed leader's kernel closes
        its sockets at once, yet followers would wait a whole election timeout (1-2 s) of missing
        heartbeats. Bring the election forward to a short random delay instead: if the leader is alive,
        pysyncobj reconnects and the next heartbeat pushes the deadline back (every append_entries
        does), so only a leader that stays unreachable for that long is replaced. A partition that
        closes nothing still waits the normal timeout. Raft's safety does not depend on timing."""
        if self._pysyncobj_on_disconnected is not None:
            self._pysyncobj_on_disconnected(node)
        if node is None or node != self._getLeader() or self._isLeader():
            return
        delay = self._owner._fast_election_delay()
        deadline = raft_monotonic() + delay
        current: float = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 (name-mangled)
        if deadline < current:
            self._SyncObj__raftElectionDeadline = deadline
            log.info("connection to the leader %s closed: election in %.2f s unless it returns", node, delay)

    @replicated  # type: ignore[untyped-decorator]
    def applyEntry(self, payload: bytes) -> _Applying:
        return self._owner._stage_entry(self.raftLastApplied + 1, payload)

    def _checkCommandsToApply(self) -> None:
        # Runs on the Raft thread right after pysyncobj applied the committed entries (and called their
        # proposers' callbacks): the staged entries go to the apply thread now.
        self._owner._release_staged()
        # No message is processed in between: hand over our proposals only if we lead *now*, so that
        # pysyncobj appends them right away instead of forwarding them.
        self._owner._hand_over_proposals(self)
        super()._checkCommandsToApply()


class _Applying:
    """What `applyEntry` returns to pysyncobj (and so to the proposer's callback): the entry at `index`
    is committed and queued for the apply thread, which answers the proposer once it is applied."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


_ResultCallback = Callable[[Any, int], None]


class SyncObjReplicator:
    """`Replicator` over pysyncobj. `start()` must run on a thread that lives as long as the replicator
    (pysyncobj's tick thread stops when the thread that created it ends): the daemon's main thread.

    `applied_index`, if given, returns the last index that `apply` committed to the store; at startup, a
    snapshot file older than that is not restored (the store is already ahead; the journal replay is then
    skipped by `apply`'s idempotency), which avoids copying the whole store back at every restart.

    `on_apply_failure(index, exc)`, if given, is called on the apply thread each time applying an entry
    raised (an environmental failure: anything else is recorded by the state machine); it returns True
    when it fixed the cause (the entry is tried again at once), False to wait before the next try.
    `on_apply_recovered(index)` is called once the entry applied after failing.
    """

    def __init__(
        self,
        config: ReplicatorConfig,
        apply: Callable[[int, bytes], bytes | None],
        store: LmdbKV,
        *,
        applied_index: Callable[[], int] | None = None,
        audit: AuditLog | None = None,
        apply_events: Callable[[], list[dict[str, Any]]] | None = None,
        on_apply_failure: Callable[[int, BaseException], bool] | None = None,
        on_apply_recovered: Callable[[int], None] | None = None,
    ) -> None:
        _validate(config)
        self._config = config
        self._apply = apply
        self._on_apply_failure = on_apply_failure
        self._on_apply_recovered = on_apply_recovered
        # (index, why) while the apply thread cannot apply an entry (module docstring, "Space").
        self._stuck: tuple[int, str] | None = None
        self._next_byte_compaction = 0.0
        # Audit (raft.audit): after each apply, `apply_events()` gives the entry's events to write.
        self._audit = audit if apply_events is not None else None
        self._apply_events = apply_events
        self._transfers: list[tuple[str | None, Callable[[Any, int], None]]] = []
        self._store = store
        self._applied_index = applied_index
        self._node: _RaftNode | None = None
        self._journal = config.data_dir / JOURNAL_FILE
        self._snapshot = config.data_dir / SNAPSHOT_FILE
        self._journal_space = _JournalSpace(self._journal, config.journal_reserve_bytes)
        self._durability = _Durability(self._journal, config.fsync)
        self._ids = {m.raft_address: m.node_id for m in (config.self_member, *config.peers)}
        self._addresses = {m.node_id: m.raft_address for m in config.peers}
        self._proposals: collections.deque[tuple[bytes, _ResultCallback]] = collections.deque()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[RaftStatus], None]] = []
        self._last_seen: tuple[bool, str | None, int] | None = None
        self._notifier: PipeNotifier | None = None
        self._startup_restore_pending = False
        self._stopping = False
        self._inflight: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes]]] = set()
        # The apply thread (module docstring): entries staged during a tick (Raft thread only), then
        # queued; proposers waiting for an index (under _lock); the last index applied (under _applied_cond).
        self._staged: list[tuple[int, bytes]] = []
        self._staged_max = 0
        self._released = 0
        self._apply_queue: queue.SimpleQueue[list[tuple[int, bytes]] | None] = queue.SimpleQueue()
        self._waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes]]] = {}
        self._applied = 0
        self._applied_cond = threading.Condition()
        self._apply_thread: threading.Thread | None = None
        self._apply_stop = False

    # --- lifecycle ---

    def start(self) -> None:
        if self._node is not None:
            raise RuntimeError("the replicator is already started")
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        self._startup_restore_pending = self._snapshot.is_file()
        self._stopping = False
        self._apply_stop = False
        self._staged, self._staged_max, self._waiters = [], 0, {}
        self._released = self._applied = self._applied_index() if self._applied_index is not None else 0
        self._apply_queue = queue.SimpleQueue()
        self._apply_thread = threading.Thread(target=self._apply_loop, name="raft-apply", daemon=True)
        self._apply_thread.start()
        node = _RaftNode(
            self,
            self._config.self_member.raft_address,
            [p.raft_address for p in self._config.peers],
            self._conf(),
        )
        self._node = node
        node.addOnTickCallback(self._on_tick)
        try:
            node.waitBinded()
        except Exception as exc:
            node.destroy_synchronous()
            self._node = None
            self._stop_apply_thread()
            raise ConfigError(
                f"cannot bind the Raft address {self._config.self_member.raft_address}: is it in use, "
                "or not an address of this host?"
            ) from exc

    def stop(self) -> None:
        with self._lock:
            node, self._node = self._node, None
            self._stopping = True
        if node is None:
            return
        node.destroy_synchronous()
        # Entries handed over and not applied yet are dropped: they are committed and in the journal, and
        # the replay at the next start applies them (apply is idempotent by index).
        self._stop_apply_thread()
        self._fail_queued(Unavailable("the replicator is stopping"))
        with self._lock:
            inflight = list(self._inflight)
        for loop, future in inflight:  # appended (or about to be): only "unknown" is honest
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    _resolve, future, OutcomeUnknown("the replicator stopped before the entry committed"), -1
                )
        self._durability.close()
        self._journal_space.close()
        self._notifier = None

    def _fast_election_delay(self) -> float:
        """How long a follower waits after losing its connection to the leader before it stands: three
        heartbeats (time for a live leader to reconnect and be heard), plus a random share of a quarter
        election timeout so that two followers rarely stand at once."""
        cfg = self._config
        return (3 * cfg.heartbeat_ms + random.uniform(0, cfg.election_timeout_ms / 4)) / 1000

    def _conf(self) -> Any:
        cfg = self._config
        election_s = cfg.election_timeout_ms / 1000
        return SyncObjConf(
            password=cfg.secret,
            bindAddress=cfg.self_member.raft_address,  # never pysyncobj's default 0.0.0.0
            raftMinTimeout=election_s,
            raftMaxTimeout=2 * election_s,  # randomised in [T, 2T] to split votes rarely
            appendEntriesPeriod=cfg.heartbeat_ms / 1000,
            connectionTimeout=max(3.5, 2 * election_s),
            connectionRetryTime=min(5.0, election_s),
            # An isolated leader steps down after 1.5 election timeouts, not pysyncobj's 30 s (DESIGN.md).
            leaderFallbackTimeout=1.5 * election_s,
            # We coalesce commands into one entry (GroupCommitter); pysyncobj's batching would only add delay.
            appendEntriesUseBatch=False,
            # Above this size pysyncobj splits an entry into "transmission" chunks; under load that path
            # lost chunks (followers failed on truncated pickles, answered with resets, and the leader
            # re-sent and the followers re-truncated their logs). Our entries stay far below it
            # (GroupCommitter's max_bytes), so an entry always travels whole in one message.
            appendEntriesBatchSizeBytes=MAX_MESSAGE_BYTES,
            # We only hand proposals over while leading (see _RaftNode); any left over fail fast if no leader.
            commandsWaitLeader=False,
            dynamicMembershipChange=False,
            journalFile=str(self._journal),
            fullDumpFile=str(self._snapshot),
            logCompactionMinEntries=max(2, cfg.snapshot_min_entries),
            logCompactionMinTime=max(1, cfg.snapshot_min_time_s),
            # With a custom serializer pysyncobj never forks (serializer.py: `useFork and serializer is
            # None`); we say so explicitly: the LMDB handle must not cross a fork, and the copy must be
            # taken at the exact applied index, which only the Raft thread (where apply runs) can do.
            useFork=False,
            serializer=self._serialize,
            deserializer=self._deserialize,
            onStateChanged=lambda _old, _new: self._maybe_notify(),
            bindRetryTime=0.2,
            maxBindRetries=10,
        )

    # --- proposals (asyncio side) ---

    async def propose(self, payload: bytes, *, timeout_s: float) -> bytes:
        node = self._node
        if node is None:
            raise Unavailable("the replicator is not running")
        if not node._isLeader():
            raise NotLeader(None)
        stuck = self._stuck
        if stuck is not None:  # nothing proposed now could apply before the stuck entry
            raise ResourceExhausted(
                f"storage exhausted: this node cannot apply log entry {stuck[0]}: {stuck[1]}; nothing is "
                "proposed until it applies"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()

        def on_result(result: Any, reason: int) -> None:  # Raft thread
            if reason == FAIL_REASON.SUCCESS and isinstance(result, _Applying):
                # Committed; the apply thread answers once applied. Registered before the entry is
                # released to the apply thread (same tick), so the answer cannot be missed.
                with self._lock:
                    self._waiters[result.index] = (loop, future)
                return
            with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future, result, reason)

        entry = (loop, future)
        with self._lock:
            if self._stopping:  # checked under the lock that stop() drains the queue with
                raise Unavailable("the replicator is stopping")
            self._proposals.append((payload, on_result))
            self._inflight.add(entry)
        notifier = self._notifier
        if notifier is not None:
            notifier.notify()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(
                f"the proposal did not commit within {timeout_s:g} s; it may apply"
            ) from None
        finally:
            with self._lock:
                self._inflight.discard(entry)

    # --- Raft thread ---

    def _hand_over_proposals(self, node: _RaftNode) -> None:
        with self._lock:
            batch = list(self._proposals)
            self._proposals.clear()
            transfers, self._transfers = self._transfers, []
        for address, callback in transfers:  # pysyncobj's state is only safe to touch on this thread
            node.transferLeadership(address, callback=callback)
        leading = node._isLeader()
        if leading and batch:
            try:
                overhead = _COMMAND_OVERHEAD + _RECORD_OVERHEAD
                self._journal_space.ensure(sum(len(p) + overhead for p, _ in batch))
            except JournalFull as exc:
                refused = ResourceExhausted(f"storage exhausted: {exc.strerror}")
                for _payload, callback in batch:
                    callback(refused, -1)  # never appended
                return
        for payload, callback in batch:
            if leading:
                node.applyEntry(payload, callback=callback)
            else:
                callback(None, FAIL_REASON.NOT_LEADER)  # never appended: NotLeader is exact

    def _fail_queued(self, exc: CronraftError) -> None:
        with self._lock:
            batch = list(self._proposals)
            self._proposals.clear()
        for _payload, callback in batch:
            callback(exc, -1)

    def _stage_entry(self, index: int, payload: bytes) -> _Applying:
        self._staged.append((index, payload))
        self._staged_max = index
        return _Applying(index)

    def _release_staged(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            self._released = staged[-1][0]
            self._apply_queue.put(staged)

    # --- apply thread ---

    def _apply_loop(self) -> None:
        while True:
            entries = self._apply_queue.get()
            if entries is None:
                return
            for index, payload in entries:
                if self._apply_stop:
                    return
                result = self._apply_with_retry(index, payload)
                with self._lock:
                    waiter = self._waiters.pop(index, None)
                if waiter is not None:
                    loop, future = waiter
                    with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits any more
                        loop.call_soon_threadsafe(_resolve, future, result, FAIL_REASON.SUCCESS)
                with self._applied_cond:
                    self._applied = max(self._applied, index)
                    self._applied_cond.notify_all()

    def _apply_with_retry(self, index: int, payload: bytes) -> bytes | None:
        # An entry is never skipped (the state would diverge): an apply that raised (the store full, an
        # I/O error: the state machine records everything else) is tried again until it applies.
        pause = _APPLY_RETRY_S[0]
        failures = 0
        while True:
            try:
                result = self._apply_entry(index, payload)
            except Exception as exc:
                failures += 1
                fixed = self._on_apply_failure(index, exc) if self._on_apply_failure is not None else False
                if fixed and failures < 100:
                    continue
                if failures == 1 or failures % 100 == 0:
                    log.error("applying entry %d failed (%d times); retrying: %s", index, failures, exc)
                if failures == 1:
                    log.debug("the failure", exc_info=True)
                self._set_stuck(index, exc)
                if self._apply_stop:
                    return None
                time.sleep(pause)
                pause = min(_APPLY_RETRY_S[1], pause * 2)
                continue
            if failures:
                self._stuck = None
                log.warning("entry %d applied after %d failed tries", index, failures)
                if self._on_apply_recovered is not None:
                    self._on_apply_recovered(index)
            return result

    def _set_stuck(self, index: int, exc: BaseException) -> None:
        """Note that `index` cannot apply, and answer everyone waiting for it or a later entry now."""
        self._stuck = (index, str(exc))
        why = f"this node cannot apply log entry {index}: {exc}"
        error = ResourceExhausted(
            f"storage exhausted: {why}; the command is committed and applies once space is freed "
            "(retry with the same request id to learn its outcome)"
        )
        with self._lock:
            waiters = [(i, w) for i, w in self._waiters.items() if i >= index]
            for i, _ in waiters:
                del self._waiters[i]
        for _, (loop, future) in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, error, -1)

    def stuck(self) -> tuple[int, str] | None:
        """(index, the failure) while this node cannot apply a committed entry (an environmental one)."""
        return self._stuck

    def journal_status(self) -> tuple[int, str | None]:
        """(bytes of entries in the journal, why its reserve cannot be kept or None)."""
        space = self._journal_space
        return space.entry_bytes(), space.low

    def _wait_applied(self, index: int) -> bool:
        """Block until the apply thread has applied `index`; False if it is stopped, or stuck on an entry
        it cannot apply (it may stay so for long: the Raft thread must not wait for it)."""
        with self._applied_cond:
            while self._applied < index and not self._apply_stop:
                thread = self._apply_thread
                if thread is None or not thread.is_alive() or self._stuck is not None:
                    return False
                self._applied_cond.wait(0.1)
            return self._applied >= index

    def _stop_apply_thread(self) -> None:
        self._apply_stop = True
        self._apply_queue.put(None)
        thread, self._apply_thread = self._apply_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._waiters.clear()  # their futures are in _inflight: stop() answers them
        with self._applied_cond:
            self._applied_cond.notify_all()

    def _apply_entry(self, index: int, payload: bytes) -> bytes | None:
        result = self._apply(index, payload)
        if self._audit is not None and self._apply_events is not None:
            self._audit.write_all(self._apply_events())
        node = self._node
        if node is not None and node._isLeader():
            # The entry is committed and applied (its LMDB transaction too); pysyncobj resolves the
            # proposer's callback only after this returns. Only the leader has a proposer to answer.
            self._flush_audit_before_failpoint()
            failpoint("raft.after_apply_before_reply")
        return result

    def _flush_audit_before_failpoint(self) -> None:
        # A failpoint's crash is os._exit: the audit's buffer would be lost, and with it the record of
        # the very event under test. Only in failpoint runs (tests); never on the normal hot path.
        if self._audit is not None and failpoints_enabled():
            self._audit.flush()

    def _on_tick(self) -> None:
        node = self._node
        if self._notifier is None and node is not None:
            # Created on the Raft thread: the poller is not thread-safe. Wakes the tick when we propose.
            self._notifier = PipeNotifier(node._poller)
        self._maybe_notify()
        self._journal_space.maintain()
        limit = self._config.snapshot_max_bytes
        if node is None or not limit:
            return
        if self._journal_space.entry_bytes() <= limit:
            self._next_byte_compaction = 0.0  # compacted (or never over): the next one may come at once
            return
        now = time.monotonic()
        if now >= self._next_byte_compaction:
            # pysyncobj takes it at its next tick, unless a snapshot is being taken; if the journal is
            # still over the limit a while later (no room for the snapshot), it is tried again then.
            self._next_byte_compaction = now + _COMPACTION_RETRY_S
            node.forceLogCompaction()

    def _maybe_notify(self) -> None:
        node = self._node
        if node is None or not self._callbacks:
            return
        leader = node._getLeader()
        seen = (bool(node._isLeader()), None if leader is None else leader.id, int(node.raftCurrentTerm))
        if seen == self._last_seen:
            return
        self._last_seen = seen
        status = self.status()
        for cb in list(self._callbacks):
            try:
                cb(status)
            except Exception:
                log.exception("a Raft state-change callback failed")

    def _serialize(self, file_name: str, raft_data: Any) -> None:
        """pysyncobj's serializer: runs synchronously on the Raft thread, right after the entries up to the
        snapshot index were applied, so the store holds exactly the state at that index."""
        last, prev, cluster = raft_data
        # The store must hold exactly the state at the snapshot's index: every entry handed over so far
        # (pysyncobj's no-op entries never reach the apply thread, so wait for those, not for `last`).
        if not self._wait_applied(self._released):
            raise RuntimeError("no snapshot: the store is behind (an entry cannot apply now)")
        needed = self._store.high_water()
        if free_bytes(Path(file_name).parent) < needed + self._journal_space.reserve:
            # A copy that cannot fit would fill the disk, be deleted, and be tried again next tick.
            raise RuntimeError(f"no snapshot: less than {needed} bytes free for the store's copy")
        header = encode_snapshot_header(last, prev, sorted(n.address for n in cluster))
        fd = os.open(file_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, header)
            self._store.copy_to_fd(fd)
            if self._config.fsync:
                os.fsync(fd)
        except BaseException:
            # pysyncobj only logs the failure: the partial copy would keep its space (a full disk).
            with contextlib.suppress(OSError):
                os.unlink(file_name)
            raise
        finally:
            os.close(fd)

    def _deserialize(self, file_name: str) -> tuple[_LogEntry, _LogEntry, set[Any]]:
        """pysyncobj's deserializer: at startup (if a snapshot file exists) and when installing a leader's
        snapshot. Returns the data the serializer was given."""
        last, prev, cluster, offset = read_snapshot_header(file_name)
        # Entries already handed to the apply thread are older than this snapshot: let them finish first.
        self._wait_applied(self._released)
        startup, self._startup_restore_pending = self._startup_restore_pending, False
        if startup and self._applied_index is not None and self._applied_index() >= last[1]:
            log.info(
                "store at index %d is ahead of snapshot %d: not restored", self._applied_index(), last[1]
            )
        else:
            if not startup:
                # A snapshot received from the leader, renamed into place, not yet loaded into the store.
                self._flush_audit_before_failpoint()
                failpoint("raft.snapshot_install")
            self._store.replace_from(file_name, offset=offset)
        with self._applied_cond:  # the store now holds at least the snapshot's index
            self._applied = max(self._applied, last[1])
            self._released = max(self._released, last[1])
            self._applied_cond.notify_all()
        return last, prev, {TCPNode(a) for a in cluster}

    # --- status ---

    def status(self) -> RaftStatus:
        node = self._node
        me = self._config.self_member.node_id
        if node is None:
            return RaftStatus(me, False, None, 0, 0, 0, {p.node_id: False for p in self._config.peers})
        leader = node._getLeader()
        return RaftStatus(
            node_id=me,
            is_leader=bool(node._isLeader()),
            leader_id=None if leader is None else self._ids.get(leader.id, leader.id),
            term=int(node.raftCurrentTerm),
            commit_index=int(node.raftCommitIndex),
            applied_index=self._store_applied_index(node),
            connected={
                p.node_id: bool(node.isNodeConnected(TCPNode(p.raft_address))) for p in self._config.peers
            },
            ready=bool(node.isReady()),
            has_quorum=bool(node.hasQuorum),
        )

    def _store_applied_index(self, node: _RaftNode) -> int:
        """The last index applied to the store. pysyncobj's own counter runs ahead of the apply thread,
        but once the apply thread has caught up with every staged entry it is exact (it also counts the
        no-op entries of new leaders, which never reach `apply`)."""
        raft_applied = int(node.raftLastApplied)
        with self._applied_cond:
            applied = self._applied
        return raft_applied if applied >= self._staged_max else applied

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None:
        self._callbacks.append(cb)

    async def transfer_leadership(self, target: str | None) -> bool:
        node = self._node
        if node is None or not node._isLeader():
            return False
        address: str | None = None
        if target is not None:
            address = self._addresses.get(target)
            if address is None:
                return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def done(_result: Any, reason: int) -> None:  # Raft thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_once, future, reason == FAIL_REASON.SUCCESS)

        with self._lock:
            if self._stopping:
                return False
            self._transfers.append((address, done))
        notifier = self._notifier
        if notifier is not None:
            notifier.notify()
        try:
            return await asyncio.wait_for(future, 2.0)
        except TimeoutError:
            return False

    def force_snapshot(self) -> None:
        """Ask for a snapshot (log compaction) at the next tick (tests and the admin CLI)."""
        if self._node is not None:
            self._node.forceLogCompaction()


def _set_once(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _resolve(future: asyncio.Future[bytes], result: Any, reason: int) -> None:
    if future.done():
        return
    if isinstance(result, CronraftError):  # failed by us before it reached pysyncobj
        future.set_exception(result)
        return
    error = error_for_fail_reason(reason)
    if error is not None:
        future.set_exception(error)
    elif result is None:
        # apply() said "already applied": only if the store is ahead of the log (e.g. after a power loss
        # without fsync); the original result is not known.
        future.set_exception(OutcomeUnknown("the entry's index was already applied; its result is unknown"))
    else:
        future.set_result(bytes(result))


def _validate(config: ReplicatorConfig) -> None:
    members = (config.self_member, *config.peers)
    if len(members) > 1 and not config.secret:
        raise ConfigError(
            "a multi-node cluster needs a cluster secret (raft.secret): without it anyone who reaches the "
            "Raft port can run code on this node"
        )
    if len({m.node_id for m in members}) != len(members) or len({m.raft_address for m in members}) != len(
        members
    ):
        raise ConfigError("raft members must have distinct node ids and distinct raft addresses")
    for m in members:
        host, sep, port = m.raft_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"raft address {m.raft_address!r} of {m.node_id} must be host:port")
    if config.heartbeat_ms <= 0 or config.election_timeout_ms <= 3 * config.heartbeat_ms:
        raise ConfigError("raft.election_timeout_ms must be more than 3 x raft.heartbeat_ms (and both > 0)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "MAX_MESSAGE_BYTES",
    "JournalFull",
    "RaftMember",
    "RaftStatus",
    "Replicator",
    "ReplicatorConfig",
    "SyncObjReplicator",
    "error_for_fail_reason",
    "fail_reason_names",
]
