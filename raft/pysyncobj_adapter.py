"""The pysyncobj adapter: the only module that imports pysyncobj, calls its camelCase API or touches its
private attributes. Everything else (raft.syncobj_replicator above all) talks to `RaftNode`'s snake_case
methods, `make_conf` and the error mapping here.

Checked against pysyncobj 0.3.17, the version pinned in pyproject.toml (`PINNED_VERSION`; `start` logs
a warning when another one is installed): every private name below must be re-checked on an upgrade.

What it owns:
- `RaftNode`, the `SyncObj` subclass with the one `@replicated` entry point (`applyEntry`) taking opaque
  payload bytes (a serialized `CommandBatch`; never a pickled object of ours). The log index of the entry
  being applied is `raftLastApplied + 1`: pysyncobj's `__applyLogEntries` walks the committed entries in
  order from `raftLastApplied + 1` and increments `raftLastApplied` after each one (no-op entries
  included), and `__loadDumpFile` sets it to the snapshot's index. (The one exception, a `VERSION` entry
  that this code cannot run, never occurs: we never call `setCodeVersion`.)
- proposals only from the leader: the host's proposals are handed to pysyncobj on the Raft thread, inside
  `_checkCommandsToApply`, right after pysyncobj applied the committed entries, where the host checks
  leadership, so pysyncobj never forwards them to another node; the transport also drops any
  `apply_command` message.
- the configuration (`make_conf`), including the `serializer`/`deserializer` hooks, translated from and
  to pysyncobj's `(last entry, entry before, set of TCPNode)`.
- the failure reasons of pysyncobj mapped to the error tree (`error_for_fail_reason`).
- which messages rely on the log (for raft.durability's fsync), pysyncobj's journal file layout
  (`FILE_JOURNAL_LAYOUT`, for raft.durability's `JournalSpace`), and `_GuardedJournal`.
- faster elections when the connection to the leader closes (`_on_node_disconnected`).
- membership (docs/operations.md, "Membership changes"): `dynamicMembershipChange` is on; a change is
  pysyncobj's own log entry (`change_cluster`: `addNodeToCluster` / `removeNodeFromCluster`, appended
  on the Raft thread while leading), which counts from its append on every node that has it (Raft's
  single-server change), is undone if that entry is truncated, and is carried in snapshots (the cluster
  set of `serializer`). A learner is pysyncobj's read-only node (`SyncObj(None, ...)`): it connects to
  the members, the leader replicates the log (or a snapshot) to it, and it never votes, stands, or binds
  a port; it becomes a voter by being closed and started again with its address (same journal). What
  pysyncobj does not do, the replicator does: one change at a time (pysyncobj's own check,
  `__changeClusterIDx`, is never set, so it lets a second change through), learners promoted in place
  (issue bakwc/PySyncObj#50, open: "connect as a readonly one, sync journal, then add itself"), and
  keeping a node that is not (or no longer) in the configuration from standing (`postpone_election`).
  A node outside the configuration cannot disturb it anyway: the members' transports drop a connection
  whose first message names an address they do not know, and pysyncobj stands only while connected.

Private parts of pysyncobj touched, and why:
- `SyncObj._checkCommandsToApply` (overridden): the one point of each tick after committed entries were
  applied and before new commands are appended: staged entries go to the apply thread, our proposals are
  appended while leading (never forwarded), leadership transfers are started on the Raft thread; the
  entries it appends are sent once it is done, together (pysyncobj sent a message per entry).
- `SyncObj._isLeader`, `SyncObj._getLeader`: leadership and the leader's address (no public accessor
  that is safe on the Raft thread).
- `SyncObj._poller`: a `PipeNotifier` on it wakes the tick when we propose from another thread.
- `SyncObj.__raftLog` (`_SyncObj__raftLog`): the journal, made a `_GuardedJournal` by class assignment
  so that appends allocate their disk space first and a term/vote that cannot be stored is put back.
- `SyncObj.__transport` (`_SyncObj__transport`) and `TCPTransport._onNodeDisconnectedCallback`: our
  disconnect callback is chained after pysyncobj's own.
- `SyncObj.__onMessageReceived` (overridden as `_SyncObj__onMessageReceived`), `SyncObj.__sendAppendEntries`
  (overridden) and `SyncObj._onTick` (extended): the log's flow to followers, a follower's handling of
  an append, pre-vote and keepalives are ours (raft.append_flow says why: S18/S19 over long round
  trips, docs/multi-region.md; the lost first vote, issue 16). They read and write pysyncobj's
  `__raftNextIndex`, `__raftMatchIndex`, `__lastResponseTime`, `__raftCommitIndex`,
  `__leaderCommitIndex`, `__raftState`, `__raftCurrentTerm`, `__connectedNodes`, `__otherNodes`,
  `__readonlyNodes`, `__serializer`, `__transferInProgress`, `__newAppendEntriesTime`, and call its
  `__getEntries`, `__deleteEntriesFrom`, `__parseChangeClusterRequest`, `__doChangeCluster`,
  `__getCurrentLogIndex`/`Term`, `__generateRaftTimeout`, `__connectedToAnyone`; pysyncobj's own
  handler still does an append's bookkeeping (term, leader, state, election deadline) and steps down
  on a higher term. Our messages (`cr_pre_vote`, `cr_pre_vote_answer`, `cr_term`, `cr_ping`, and the
  `cr_epoch` key) are ignored by a node of an older release.
- `SyncObj.__raftElectionDeadline`: brought forward when the leader's connection closes; pushed back each
  tick while the replicator holds elections (a promoted learner not yet in the configuration, a removed
  node).
- `SyncObj.__raftCurrentTerm`, `SyncObj.__votedForNodeId`, `SyncObj.__getCurrentLogTerm` and
  `FileJournal.__meta`: put back as stored when storing a new term/vote failed (disk full).
- `FileJournal`'s file layout (header, end offset, record size) and the `.meta` file name: disk space
  and fsync (raft.durability); `FileJournal.__currentOffset` (the end offset as kept in memory, read
  instead of the file's header) and `FileJournal.__journalFile`, whose `ResizableFile` becomes a
  `_SizedFile` (its `__mm`'s size kept rather than asked for at each write).
- the message dicts' `type`, `entries`, `transmission` keys in `TCPTransport.send`: fsync before the
  messages that rely on the log; drop forwarded proposals.
- the logger `pysyncobj.syncobj`: a filter rate-limits its per-tick tracebacks on a full disk.
- `_COMMAND_TYPE.NO_OP` and `FileJournal`: the journal of a store restored from a backup (`seed_journal`)
  starts with two no-op entries at the backup's index, as a journal compacted there would.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import FileJournal, ResizableFile
from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _COMMAND_TYPE, _RAFT_STATE
from pysyncobj.transport import TCPTransport
from pysyncobj.version import VERSION as _INSTALLED_VERSION

from cronraft.errors import (
    CronraftError,
    FailedPrecondition,
    NotLeader,
    OutcomeUnknown,
    ResourceExhausted,
    Unavailable,
)
from cronraft.raft.append_flow import (
    FlowLimits,
    PeerFlow,
    PreVote,
    batch_size,
    grants_pre_vote,
    plan_append,
)
from cronraft.raft.durability import Durability, JournalFull, JournalLayout, JournalSpace
from cronraft.raft.replicator import ReplicatorConfig
from cronraft.raft.snapshot_file import LogEntry

log = logging.getLogger(__name__)

PINNED_VERSION = "0.3.17"  # pyproject.toml pins pysyncobj==0.3.17; the private names above are its own

# pysyncobj's appendEntriesBatchSizeBytes. Our own sender (`RaftNode._SyncObj__sendAppendEntries`) bounds
# messages by `FLOW_LIMITS` and never uses pysyncobj's split transmission; this stays above the largest
# entry so that nothing of pysyncobj's ever takes that path.
MAX_MESSAGE_BYTES = 16 << 20
# The log's flow to each follower (raft.append_flow): a message carries at most 256 KiB of entries (or one
# larger entry) and at most 1 MiB is unacknowledged, so a heartbeat waits behind at most that much on a
# slow link (docs/multi-region.md: 30-80 ms one way).
FLOW_LIMITS = FlowLimits()
# The kernel's socket buffers of the Raft connections (pysyncobj's 64 KiB capped a connection at about
# 64 KiB per round trip: 0.4 MiB/s over a 160 ms round trip, a catch-up of megabytes took tens of
# seconds). 1 MiB (the kernel doubles it) carries the flow window in about one round trip.
SOCKET_BUFFER_BYTES = 1 << 20
# Every connection carries a message at least this often. pysyncobj closes a connection that has read
# nothing for `connectionTimeout` as soon as it next sends or reads on it: the link between two
# followers is idle between elections, so the first vote request after a leader's death closed it
# unread (issue 16, "the lost first vote") and the election waited for a second timeout.
KEEPALIVE_S = 1.0
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


def version_problem() -> str | None:
    """Why the installed pysyncobj is not the one this adapter was checked against, or None."""
    if _INSTALLED_VERSION == PINNED_VERSION:
        return None
    return (
        f"pysyncobj {_INSTALLED_VERSION} is installed, but raft.pysyncobj_adapter was checked against "
        f"{PINNED_VERSION} (it uses private parts of pysyncobj): install pysyncobj=={PINNED_VERSION}"
    )


def journal_meta_path(journal: Path) -> Path:
    """pysyncobj's FileJournal keeps term, vote and commit index in `<journal>.meta`."""
    return Path(str(journal) + ".meta")


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


# --- transport, journal, logging -----------------------------------------------------------------------

_SYNC_LOG = frozenset({"next_node_idx", "request_vote", "response_vote"})
_SYNC_META = frozenset({"request_vote", "response_vote"})


def _transport_class(durability: Durability) -> type:
    class _Transport(TCPTransport):  # type: ignore[misc]
        def send(self, node: Any, message: Any) -> bool:
            kind = message.get("type")
            if kind == "apply_command":
                # We never forward proposals (see `RaftNode._checkCommandsToApply`); a stray one is dropped
                # and its caller times out with OutcomeUnknown. Never happens in practice.
                log.warning("dropped a proposal that pysyncobj tried to forward to %s", node)
                return False
            if durability.enabled:
                carries = kind == "append_entries" and bool(
                    message.get("entries") or message.get("transmission")
                )
                durability.before_send(sync_log=carries or kind in _SYNC_LOG, sync_meta=kind in _SYNC_META)
            return bool(super().send(node, message))

    return _Transport


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


# --- the node ------------------------------------------------------------------------------------------

Outcome = Callable[[Any, CronraftError | None], None]  # (result, the mapped failure reason or None)


class RaftHost(Protocol):
    """What `RaftNode` needs of the replicator that owns it (all called on the Raft thread)."""

    durability: Durability
    journal_space: JournalSpace

    def fast_election_delay(self) -> float: ...

    def stage_entry(self, index: int, payload: bytes) -> object: ...

    def before_new_commands(self, node: RaftNode) -> None: ...


class RaftNode(SyncObj):  # type: ignore[misc]
    """pysyncobj's node with our one replicated entry point, and a snake_case face for the replicator.

    `self_address` None: a learner (pysyncobj's read-only node; module docstring)."""

    def __init__(self, host: RaftHost, self_address: str | None, peers: list[str], conf: Any) -> None:
        # Set first: the tick thread starts inside SyncObj.__init__ and runs the overrides below.
        self._host = host
        self._flows: dict[Any, PeerFlow] = {}
        self._epochs = itertools.count(1)
        self._pre_vote = PreVote()
        self._pre_vote_promise: tuple[int, str | None, float] = (0, None, 0.0)  # term, to whom, until
        self._stand_now = False
        self._leader_heard_at = float("-inf")
        self._next_keepalive = 0.0
        self._holding_appends = False  # while pysyncobj appends a tick's commands (`_checkCommandsToApply`)
        self._appends_held = False
        super().__init__(self_address, peers, conf, transportClass=_transport_class(host.durability))
        # Appends allocate their space first (raft.durability, "Space"). Before this line only the
        # journal's first no-op entry can have been written (the tick thread starts with a pause).
        journal = self._SyncObj__raftLog
        if isinstance(journal, FileJournal):
            guard_journal(journal, host.journal_space, self)
        # Fast failover. pysyncobj's own callback first (it keeps the connected set), then ours. A
        # callback missed before this line only means the normal election timeout for that one event.
        transport = self._SyncObj__transport
        self._pysyncobj_on_disconnected = transport._onNodeDisconnectedCallback
        transport.setOnNodeDisconnectedCallback(self._on_node_disconnected)
        self.addOnTickCallback(self._keep_alive)

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
        delay = self._host.fast_election_delay()
        deadline = raft_monotonic() + delay
        current: float = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 (name-mangled)
        if deadline < current:
            self._SyncObj__raftElectionDeadline = deadline
            log.info("connection to the leader %s closed: election in %.2f s unless it returns", node, delay)

    # --- messages: the log's flow, pre-vote, keepalive (raft.append_flow says why) ---

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """pysyncobj's handler of every message (it registers `self.__onMessageReceived`, which finds this).
        Ours: a leader's handling of a follower's answer, a follower's handling of an append (not a
        snapshot's), pre-vote, a stale leader's notice, keepalives; the rest is pysyncobj's."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message["term"] >= self._SyncObj__raftCurrentTerm:
            self._leader_heard_at = raft_monotonic()
            if "prevLogIdx" in message and message.get("transmission") is None:
                self._on_append(node, message)
                return
        elif kind == "append_entries" and self.selfNode is not None:
            # A leader of a term we have passed: tell it, or it would go on leading (pysyncobj answers
            # nothing) while pre-vote keeps this node from ever standing against it.
            self._SyncObj__transport.send(node, {"type": "cr_term", "term": self._SyncObj__raftCurrentTerm})
            return
        elif kind == "next_node_idx":
            if self._isLeader():
                self._on_follower_answer(node, message)
            return
        elif kind == "cr_pre_vote":
            self._on_pre_vote(node, message)
            return
        elif kind == "cr_pre_vote_answer":
            self._on_pre_vote_answer(node, message)
            return
        elif kind == "cr_term":
            if self.selfNode is not None and message["term"] > self._SyncObj__raftCurrentTerm:
                # Step down to that term through pysyncobj's own handling of a higher term (a vote
                # request whose log position can win no vote).
                stale = {
                    "type": "request_vote",
                    "term": message["term"],
                    "last_log_index": -1,
                    "last_log_term": -1,
                }
                SyncObj._SyncObj__onMessageReceived(self, node, stale)
            return
        elif kind == "cr_ping":
            # Only this release (or a later one) sends keepalives: the sender speaks pre-vote, and its
            # silence in a round is never presumed a grant (a member cut off with its connections still
            # open would otherwise stand on grants it never got: S19, n5 deposed the leader after the heal).
            self._pre_vote.heard_from(node.id)
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _term_at(self, index: int) -> int:
        log_ = self._SyncObj__raftLog
        return int(log_[index - log_[0][1]][2])

    def _on_append(self, node: Any, message: dict[str, Any]) -> None:
        """A follower's (or learner's) handling of an append of the current term or a later one
        (raft.append_flow `plan_append`): never deletes entries that match the leader's, answers a
        conflict with where the conflicting term began, and echoes the leader's epoch."""
        log_ = self._SyncObj__raftLog
        entries = message.get("entries") or []
        commit = self._SyncObj__raftCommitIndex
        # pysyncobj's bookkeeping of an append (term, leader, state, election deadline), without the log
        # part and with the commit index unchanged: the log is ours below.
        SyncObj._SyncObj__onMessageReceived(
            self, node, {"type": "append_entries", "term": message["term"], "commit_index": commit}
        )
        plan = plan_append(
            log_first=log_[0][1],
            log_last=log_[-1][1],
            term_at=self._term_at,
            prev_index=message["prevLogIdx"],
            prev_term=message["prevLogTerm"],
            entries=[(entry[1], entry[2]) for entry in entries],
            commit_index=commit,
        )
        if plan.accepted:
            membership = self.conf.dynamicMembershipChange
            if plan.truncate_from is not None:
                if plan.truncate_from <= self.raftLastApplied:
                    log.critical(
                        "the leader's log conflicts with applied entries from index %d (last applied %d)",
                        plan.truncate_from,
                        self.raftLastApplied,
                    )
                if membership:  # undo the configuration changes of the deleted entries, newest first
                    for entry in reversed(self._SyncObj__getEntries(plan.truncate_from)):
                        change = self._SyncObj__parseChangeClusterRequest(entry[0])
                        if change is not None:
                            self._SyncObj__doChangeCluster(change, reverse=True)
                self._SyncObj__deleteEntriesFrom(plan.truncate_from)
            added = entries[plan.first_new :]
            for entry in added:
                log_.add(*entry)
            if membership:
                for entry in added:
                    change = self._SyncObj__parseChangeClusterRequest(entry[0])
                    if change is not None:
                        self._SyncObj__doChangeCluster(change)
            last = log_[-1][1]
            commit = min(self._SyncObj__raftCommitIndex, last)
            commit = max(commit, min(message["commit_index"], plan.last_new, last))
            if commit != self._SyncObj__raftCommitIndex:
                setattr(self, "_SyncObj__raftCommitIndex", commit)  # noqa: B010 (name-mangled)
                log_.setRaftCommitIndex(commit)
        self._SyncObj__leaderCommitIndex = message["commit_index"]
        answer = {
            "type": "next_node_idx",
            "next_node_idx": plan.next_index,
            "reset": not plan.accepted,
            "success": plan.accepted,
        }
        if "cr_epoch" in message:
            answer["cr_epoch"] = message["cr_epoch"]
        self._SyncObj__transport.send(node, answer)

    def _flow(self, node: Any) -> PeerFlow:
        term = self._SyncObj__raftCurrentTerm
        flow = self._flows.get(node)
        if flow is None or flow.term != term:
            flow = self._flows[node] = PeerFlow(self._epochs.__next__, term)
        return flow

    def _on_follower_answer(self, node: Any, message: dict[str, Any]) -> None:
        """The leader's handling of a follower's answer (replaces pysyncobj's): an acknowledgement moves
        the match and next indexes forward only; a refusal moves the next index back only if it answers
        an append of the current epoch (raft.append_flow `PeerFlow`)."""
        self._SyncObj__lastResponseTime[node] = raft_monotonic()
        flow = self._flow(node)
        epoch = message.get("cr_epoch")
        next_index = message["next_node_idx"]
        if message["success"]:
            if not flow.counts_ack(epoch):
                return
            matched = self._SyncObj__raftMatchIndex
            if matched.get(node, 0) < next_index - 1:
                matched[node] = next_index - 1
            nexts = self._SyncObj__raftNextIndex
            if nexts.get(node, 0) < next_index:
                nexts[node] = next_index
            flow.acked(next_index - 1)
        elif message["reset"] and flow.counts_reject(epoch):
            self._SyncObj__raftNextIndex[node] = next_index
            flow.rewind()

    def _SyncObj__sendAppendEntries(self) -> None:
        """The leader's appends and heartbeats to every connected follower (replaces pysyncobj's, which sent
        all a follower lacks at once): whole entries in messages bounded by `FLOW_LIMITS`, at most a
        window of them unacknowledged, one message at least (a heartbeat) per call, the epoch attached.
        A follower behind the log's start gets the snapshot, as pysyncobj sends it."""
        if self._holding_appends:
            self._appends_held = True
            return
        conf = self.conf
        started = raft_monotonic()
        self._SyncObj__newAppendEntriesTime = started + conf.appendEntriesPeriod
        log_ = self._SyncObj__raftLog
        transport = self._SyncObj__transport
        connected = self._SyncObj__connectedNodes
        nexts = self._SyncObj__raftNextIndex
        for node in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes:
            flow = self._flow(node)
            if node not in connected:
                self._SyncObj__serializer.cancelTransmisstion(node)
                flow.dropped()
                continue
            if nexts[node] <= log_[0][1]:
                self._send_snapshot(node, started)
                continue
            sent = False
            while node in connected:
                next_index = min(nexts[node], log_[-1][1] + 1)
                entries = self._SyncObj__getEntries(next_index, FLOW_LIMITS.message_entries)
                sizes = [len(entry[0]) for entry in entries]
                count = batch_size(
                    sizes, FLOW_LIMITS, flight_bytes=flow.flight_bytes, flight_entries=flow.flight_entries
                )
                if count == 0 and (sent or started - flow.sent_at < conf.appendEntriesPeriod):
                    # Nothing new, or no room: a heartbeat only if nothing went out for a heartbeat
                    # period. pysyncobj sent one on every call (each tick that applied entries), which
                    # doubled the traffic of a slow link that was already the bottleneck (S20: the
                    # link to region C carried ~30 KB/s and its queue held 20 s of messages).
                    break
                batch = entries[:count]
                message = {
                    "type": "append_entries",
                    "term": self._SyncObj__raftCurrentTerm,
                    "commit_index": self._SyncObj__raftCommitIndex,
                    "entries": batch,
                    "prevLogIdx": next_index - 1,
                    "prevLogTerm": self._term_at(next_index - 1),
                    "cr_epoch": flow.epoch,
                }
                transport.send(node, message)
                sent = True
                flow.sent_at = started
                if batch:
                    nexts[node] = batch[-1][1] + 1
                    flow.sent(batch[-1][1], count, sum(sizes[:count]))
                if not batch or raft_monotonic() - started > conf.appendEntriesPeriod:
                    break

    def _send_snapshot(self, node: Any, started: float) -> None:
        """pysyncobj's snapshot transmission to a follower behind the log's start (its own code's logic)."""
        serializer = self._SyncObj__serializer
        transport = self._SyncObj__transport
        connected = self._SyncObj__connectedNodes
        while node in connected:
            data = serializer.getTransmissionData(node)
            message = {
                "type": "append_entries",
                "term": self._SyncObj__raftCurrentTerm,
                "commit_index": self._SyncObj__raftCommitIndex,
                "serialized": data,
            }
            transport.send(node, message)
            if data is None or node not in connected:
                return
            if data[2]:  # the last chunk
                self._SyncObj__raftNextIndex[node] = self._SyncObj__raftLog[1][1] + 1
                return
            if raft_monotonic() - started > self.conf.appendEntriesPeriod:
                return

    # --- pre-vote (raft.append_flow `PreVote`) ---

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._guard_election()
        super()._onTick(timeToWait)

    def _guard_election(self) -> None:
        """Runs before pysyncobj's tick, which stands once the election deadline passed: hold that with a
        pre-vote round first, unless a round was just won or the leader asked (TimeoutNow)."""
        if self._stand_now:  # a round was won: pysyncobj stands in this tick (its deadline is 0)
            self._stand_now = False
            return
        if self.selfNode is None:
            return
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._pre_vote.stop()
            return
        now = raft_monotonic()
        if self._SyncObj__raftElectionDeadline >= now or not self._SyncObj__connectedToAnyone():
            return
        others = self._SyncObj__otherNodes
        if not others or self._SyncObj__transferInProgress:
            return
        voters = len(others) + 1
        connected = [n.id for n in others if n in self._SyncObj__connectedNodes]
        round_ = self._pre_vote
        if round_.won_at_end(voters, connected):
            log.info("pre-vote for term %s: members that never answered one presumed to grant", round_.term)
            round_.stop()
            return  # pysyncobj stands in this tick
        term = self._SyncObj__raftCurrentTerm + 1
        log.info("no leader heard: pre-vote for term %d", term)
        round_.start(term)
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        ask = {
            "type": "cr_pre_vote",
            "term": term,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        transport = self._SyncObj__transport
        for node in others:
            transport.send(node, ask)

    def _hears_leader(self) -> bool:
        """A leader was heard within the shortest election timeout over a connection still open (a killed
        leader's connections close at once: then the fast failover needs no timeout)."""
        if self._isLeader():
            return True
        leader = self._getLeader()
        return (
            leader is not None
            and leader in self._SyncObj__connectedNodes
            and raft_monotonic() - self._leader_heard_at < self.conf.raftMinTimeout
        )

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        if self.selfNode is None:
            return
        now = raft_monotonic()
        term = message["term"]
        promise_term, promised_to, promise_until = self._pre_vote_promise
        granted = not self._stand_now and grants_pre_vote(
            candidate=node.id,
            candidate_term=term,
            candidate_last=(message["last_log_term"], message["last_log_index"]),
            own_id=self.selfNode.id,
            own_term=self._SyncObj__raftCurrentTerm,
            own_vote=self._SyncObj__votedForNodeId,
            own_last=(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()),
            hears_leader=self._hears_leader(),
            own_round=self._pre_vote.term,
            promised_to=promised_to if promise_term == term and now < promise_until else None,
        )
        if granted:
            # As Raft resets its election timer when it grants a vote: give that candidate the time to
            # stand before this node stands too. The two followers of a killed leader stand within a few
            # ms of each other (the fast failover): both winning their pre-votes split the real vote
            # (each voting for itself), and the next election waited a whole timeout (1-2 s).
            self._pre_vote_promise = (term, node.id, now + self.conf.raftMinTimeout)
            postponed = now + self._SyncObj__generateRaftTimeout() / 4
            if self._pre_vote.term is not None:
                self._pre_vote.stop()
                self._SyncObj__raftElectionDeadline = postponed
            else:
                self._SyncObj__raftElectionDeadline = max(self._SyncObj__raftElectionDeadline, postponed)
        log.debug("pre-vote for %s in term %d: %s", node.id, term, granted)
        self._SyncObj__transport.send(node, {"type": "cr_pre_vote_answer", "term": term, "granted": granted})

    def _on_pre_vote_answer(self, node: Any, message: dict[str, Any]) -> None:
        round_ = self._pre_vote
        round_.answer(node.id, message["term"], bool(message["granted"]))
        if round_.won(len(self._SyncObj__otherNodes) + 1):
            log.info("pre-vote for term %s won: standing", round_.term)
            round_.stop()
            if self._SyncObj__raftState != _RAFT_STATE.LEADER:
                self._stand_now = True
                self._SyncObj__raftElectionDeadline = 0

    def _keep_alive(self) -> None:
        """A tick callback: a message on every connection at least every KEEPALIVE_S (see there)."""
        now = raft_monotonic()
        if now < self._next_keepalive:
            return
        self._next_keepalive = now + KEEPALIVE_S
        transport = self._SyncObj__transport
        for node in list(self._SyncObj__connectedNodes):
            transport.send(node, {"type": "cr_ping"})

    @replicated  # type: ignore[untyped-decorator]
    def applyEntry(self, payload: bytes) -> object:
        return self._host.stage_entry(self.raftLastApplied + 1, payload)

    def _checkCommandsToApply(self) -> None:
        # Runs on the Raft thread right after pysyncobj applied the committed entries (and called their
        # proposers' callbacks). No message is processed in between: the host hands over its proposals
        # only if we lead *now*, so that pysyncobj appends them right away instead of forwarding them.
        self._host.before_new_commands(self)
        # pysyncobj sends the followers each command as it appends it: one message (a pickle, a system
        # call, an answer from each follower, each a few tens of us on every node) per entry. The entries
        # it appends here leave together once it is done, in this same tick.
        self._holding_appends = True
        try:
            super()._checkCommandsToApply()
        finally:
            self._holding_appends = False
        if self._appends_held:
            self._appends_held = False
            self._SyncObj__sendAppendEntries()

    # --- the replicator's face (snake_case); the state ones are safe on the Raft thread only, or as a
    # racy read for status ---

    def append(self, payload: bytes, on_done: Outcome) -> None:
        """Append `payload` (Raft thread, while leading); `on_done(result, error)` once applied or failed."""
        self.applyEntry(
            payload, callback=lambda result, reason: on_done(result, error_for_fail_reason(reason))
        )

    def start_transfer(self, address: str | None, on_done: Callable[[bool], None]) -> None:
        """Raft's TimeoutNow to `address` (None: any caught-up peer); Raft thread only."""
        self.transferLeadership(
            address, callback=lambda _result, reason: on_done(reason == FAIL_REASON.SUCCESS)
        )

    def change_cluster(
        self, add: bool, address: str, on_done: Callable[[CronraftError | None], None]
    ) -> None:
        """Append pysyncobj's membership entry adding (or removing) the voter at `address` (Raft thread,
        while leading); `on_done(None)` once it committed, else with the failure. It counts from its append.
        """

        def done(_result: Any, reason: int) -> None:
            if reason == FAIL_REASON.SUCCESS:
                on_done(None)
            elif reason == FAIL_REASON.REQUEST_DENIED:
                # pysyncobj refuses a change before the leader's first entry of its term applied, an
                # addition of a voter it has, a removal of one it does not have, and removing itself.
                on_done(
                    FailedPrecondition(
                        f"the Raft configuration refused to {'add' if add else 'remove'} {address}"
                    )
                )
            else:
                on_done(error_for_fail_reason(reason))

        if add:
            self.addNodeToCluster(address, callback=done)
        else:
            self.removeNodeFromCluster(address, callback=done)

    def voters(self) -> frozenset[str]:
        """The Raft addresses of the configuration as this node has it (itself included unless a learner)."""
        me = self.selfNode
        found = {n.address for n in self.otherNodes}
        if me is not None:
            found.add(me.address)
        return frozenset(found)

    def postpone_election(self) -> None:
        """No election from this node for a whole (longest) election timeout from now (Raft thread)."""
        self._SyncObj__raftElectionDeadline = raft_monotonic() + self.conf.raftMaxTimeout

    def is_leader(self) -> bool:
        return bool(self._isLeader())

    def leader_address(self) -> str | None:
        leader = self._getLeader()
        return None if leader is None else str(leader.id)

    def current_term(self) -> int:
        return int(self.raftCurrentTerm)

    def commit_index(self) -> int:
        return int(self.raftCommitIndex)

    def last_applied(self) -> int:
        """pysyncobj's applied counter (ahead of the apply thread; counts no-op entries)."""
        return int(self.raftLastApplied)

    def is_connected(self, address: str) -> bool:
        return bool(self.isNodeConnected(TCPNode(address)))

    def is_ready(self) -> bool:
        return bool(self.isReady())

    def quorum(self) -> bool:
        return bool(self.hasQuorum)

    def force_compaction(self) -> None:
        self.forceLogCompaction()

    def add_tick_callback(self, callback: Callable[[], None]) -> None:
        self.addOnTickCallback(callback)

    def new_notifier(self) -> PipeNotifier:
        """A notifier whose `notify()` wakes the tick. Create it on the Raft thread (the poller is not
        thread-safe)."""
        return PipeNotifier(self._poller)

    def wait_bound(self) -> None:
        self.waitBinded()

    def tick_thread(self) -> threading.Thread | None:
        """pysyncobj's auto-tick thread (the Raft thread), for per-thread CPU accounting (benchmarks)."""
        thread = getattr(self, "_SyncObj__thread", None)
        return thread if isinstance(thread, threading.Thread) else None

    def close(self) -> None:
        """Stop the tick thread and close the connections; returns once the thread is gone."""
        self.destroy_synchronous()


def make_conf(
    config: ReplicatorConfig,
    *,
    journal: Path,
    snapshot: Path,
    write_snapshot: Callable[[str, LogEntry, LogEntry, list[str]], None],
    load_snapshot: Callable[[str], tuple[LogEntry, LogEntry, list[str]]],
    on_state_changed: Callable[[], None],
) -> Any:
    """pysyncobj's configuration for `config`. The snapshot hooks see addresses, not TCPNodes."""
    election_s = config.election_timeout_ms / 1000

    def serializer(file_name: str, raft_data: Any) -> None:
        last, prev, cluster = raft_data
        # A learner's own entry in pysyncobj's cluster set is None (it has no address yet).
        write_snapshot(file_name, last, prev, sorted(n.address for n in cluster if n is not None))

    def deserializer(file_name: str) -> tuple[LogEntry, LogEntry, set[Any]]:
        last, prev, cluster = load_snapshot(file_name)
        return last, prev, {TCPNode(a) for a in cluster}

    return SyncObjConf(
        password=config.secret,
        bindAddress=config.self_member.raft_address,  # never pysyncobj's default 0.0.0.0
        raftMinTimeout=election_s,
        raftMaxTimeout=2 * election_s,  # randomised in [T, 2T] to split votes rarely
        appendEntriesPeriod=config.heartbeat_ms / 1000,
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
        sendBufferSize=SOCKET_BUFFER_BYTES,
        recvBufferSize=SOCKET_BUFFER_BYTES,
        # We only hand proposals over while leading (see RaftNode); any left over fail fast if no leader.
        commandsWaitLeader=False,
        # Membership changes through the log (module docstring); the replicator allows one at a time.
        dynamicMembershipChange=True,
        journalFile=str(journal),
        fullDumpFile=str(snapshot),
        logCompactionMinEntries=max(2, config.snapshot_min_entries),
        logCompactionMinTime=max(1, config.snapshot_min_time_s),
        # With a custom serializer pysyncobj never forks (serializer.py: `useFork and serializer is
        # None`); we say so explicitly: the LMDB handle must not cross a fork, and the copy must be
        # taken at the exact applied index, which only the Raft thread (where apply runs) can do.
        useFork=False,
        serializer=serializer,
        deserializer=deserializer,
        onStateChanged=lambda _old, _new: on_state_changed(),
        bindRetryTime=0.2,
        maxBindRetries=10,
    )


__all__ = [
    "FILE_JOURNAL_LAYOUT",
    "MAX_MESSAGE_BYTES",
    "NO_OP_COMMAND",
    "PINNED_VERSION",
    "RaftHost",
    "RaftNode",
    "error_for_fail_reason",
    "fail_reason_names",
    "guard_journal",
    "journal_meta_path",
    "make_conf",
    "seed_journal",
    "version_problem",
]
