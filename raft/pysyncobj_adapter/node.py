"""`RaftNode`, pysyncobj's node with our one replicated entry point and a snake_case face for the
replicator, and `make_conf`, pysyncobj's configuration (the package docstring says what the adapter owns
and which private parts of pysyncobj it touches)."""

from __future__ import annotations

import itertools
import logging
import pickle
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import FileJournal
from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _COMMAND_TYPE

from cronraft.errors import CronraftError, FailedPrecondition
from cronraft.raft.append_flow import PeerFlow, PreVote
from cronraft.raft.durability import Durability, JournalSpace
from cronraft.raft.pysyncobj_adapter.elections import Elections
from cronraft.raft.pysyncobj_adapter.failures import error_for_fail_reason
from cronraft.raft.pysyncobj_adapter.flow import LogFlow
from cronraft.raft.pysyncobj_adapter.journal import guard_journal
from cronraft.raft.pysyncobj_adapter.transport import MAX_MESSAGE_BYTES, SOCKET_BUFFER_BYTES, transport_class
from cronraft.raft.replicator import ReplicatorConfig
from cronraft.raft.snapshot_file import LogEntry

log = logging.getLogger("cronraft.raft.pysyncobj_adapter")

# How an appended payload is stored in the journal and sent: pysyncobj's call of `applyEntry`, its
# (method id, (payload,)), pickled with protocol 4 (`RaftNode.append`). pysyncobj's `@replicated` pickles
# it with protocol 2, which writes bytes as latin-1 text encoded in UTF-8: every byte above 127 takes two,
# and encoding and decoding are a character codec's work each way (~20x protocol 4's for a 4 KiB
# payload), on the leader's Raft thread and at every node's apply. Protocol 4 stores the bytes as they
# are. Every reader is pysyncobj's `pickle.loads`, which reads any protocol: this release's and an older
# one's (apply, a journal replayed at start), so old and new entries mix freely in one journal.
JOURNAL_PICKLE_PROTOCOL = 4
_REGULAR = bytes([_COMMAND_TYPE.REGULAR])

# --- the node ------------------------------------------------------------------------------------------

Outcome = Callable[[Any, CronraftError | None], None]  # (result, the mapped failure reason or None)


class RaftHost(Protocol):
    """What `RaftNode` needs of the replicator that owns it (all called on the Raft thread)."""

    durability: Durability
    journal_space: JournalSpace

    def fast_election_delay(self) -> float: ...

    def stage_entry(self, index: int, payload: bytes) -> object: ...

    def before_new_commands(self, node: RaftNode) -> None: ...


class RaftNode(LogFlow, Elections):
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
        super().__init__(self_address, peers, conf, transportClass=transport_class(host.durability))
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

    # --- messages: the log's flow (.flow), pre-vote and keepalive (.elections) are handled there ---

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
            notifier = getattr(self, "_SyncObj__pipeNotifier", None)
            if not self._SyncObj__otherNodes and notifier is not None:
                # A leader alone commits its entries at the next tick: have it come at once, as
                # pysyncobj's notice of each command did (`append` skips that notice).
                notifier.notify()

    # --- the replicator's face (snake_case); the state ones are safe on the Raft thread only, or as a
    # racy read for status ---

    def append(self, payload: bytes, on_done: Outcome) -> None:
        """Append `payload` (Raft thread, while leading, from `_checkCommandsToApply`, which appends what
        is queued right after); `on_done(result, error)` once applied or failed.

        What `self.applyEntry(payload, callback=...)` does, but the call is pickled with protocol 4
        (`JOURNAL_PICKLE_PROTOCOL`), and without pysyncobj's notice to its own tick (a byte written to a
        pipe per command, which made the tick after this one come at once, to do nothing: we are in the
        tick that appends the command)."""

        def callback(result: Any, reason: int) -> None:
            on_done(result, error_for_fail_reason(reason))

        func_id = self._methodToID[self._getFuncName("applyEntry")]
        command = _REGULAR + pickle.dumps((func_id, (payload,)), protocol=JOURNAL_PICKLE_PROTOCOL)
        try:
            self._SyncObj__commandsQueue.put_nowait((command, callback))
        except queue.Full:
            callback(None, FAIL_REASON.QUEUE_FULL)

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


__all__ = ["Outcome", "RaftHost", "RaftNode", "make_conf"]
