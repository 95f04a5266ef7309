"""The pysyncobj adapter: the only package that imports pysyncobj, calls its camelCase API or touches its
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
- `SyncObj.__commandsQueue`, `SyncObj._methodToID`, `SyncObj._getFuncName`, `SyncObj.__pipeNotifier`
  (`RaftNode.append`): our payload is queued as pysyncobj's `@replicated` call of `applyEntry` would
  queue it, but pickled with protocol 4 (`JOURNAL_PICKLE_PROTOCOL`: the payload's bytes stored as they
  are, not as latin-1 text in UTF-8) and without the pipe notice per command that made pysyncobj run an
  extra, empty tick after each tick that appended; a leader alone still gets its next tick at once
  (it commits there). pysyncobj's `pickle.loads` reads both encodings (tests/unit/test_journal_encoding.py).
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
- `TCPTransport._connections` and `TcpConnection` (its `send` overridden; `__writeBuffer`,
  `__trySendBuffer`, `__poller`, `__processConnection`, `sendRandKey`, `encryptor`): the transport makes
  each connection a `_LeanConnection` by class assignment, which encodes a message with pickle protocol 4
  and compresses it only when that pays, with a window sized to the message (`deflate`) (pysyncobj's
  protocol 2 and zlib level 3 took the leader's Raft thread ~0.35 s of CPU per follower for a 4.7 MB
  entry: S12), and asks the poller for write events
  while data is left to send (pysyncobj's waited for the next send on that connection). The receiving
  end is pysyncobj's own code, which decodes both.
- the logger `pysyncobj.syncobj`: a filter rate-limits its per-tick tracebacks on a full disk.
- `_COMMAND_TYPE.NO_OP` and `FileJournal`: the journal of a store restored from a backup (`seed_journal`)
  starts with two no-op entries at the backup's index, as a journal compacted there would.

Modules: `node` (RaftNode, make_conf), `flow` (the log's flow to followers, a follower's appends),
`elections` (pre-vote, keepalives, fast failover), `journal` (the guarded journal, its layout, the seeded
journal of a restored backup), `transport` (fsync before sending, message and buffer sizes, the
connections' encoding and send path, the tick log filter), `failures` (the pinned version, failure
reasons mapped to the error tree).
"""

from cronraft.raft.pysyncobj_adapter.failures import (
    PINNED_VERSION,
    error_for_fail_reason,
    fail_reason_names,
    version_problem,
)
from cronraft.raft.pysyncobj_adapter.journal import (
    FILE_JOURNAL_LAYOUT,
    NO_OP_COMMAND,
    guard_journal,
    journal_meta_path,
    seed_journal,
)
from cronraft.raft.pysyncobj_adapter.node import RaftHost, RaftNode, make_conf
from cronraft.raft.pysyncobj_adapter.transport import MAX_MESSAGE_BYTES

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
