"""The replicator interface: what the daemon and the group committer use of the replicated log.

Owns the `Replicator` protocol and its value types (`RaftMember`, `ReplicatorConfig`, `RaftStatus`);
imports no Raft library. Two implementations satisfy it (mypy checks both):

- `raft.syncobj_replicator.SyncObjReplicator`, the real one, on pysyncobj. Around it:
  `raft.pysyncobj_adapter` (the only package that imports pysyncobj or touches its private parts),
  `raft.apply_thread` (committed entries applied off the Raft thread), `raft.snapshot_file` (the snapshot
  file format) and `raft.durability` (fsync before acknowledging, the journal's disk space);
- `raft.memreplicator.MemReplicator`, the in-memory twin for tests: one node, no network, no thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
    # Disk kept allocated ahead of the journal's last entry (raft.durability, `JournalSpace`).
    journal_reserve_bytes: int = 32 << 20
    # Sync the journal before acknowledging (raft.durability says exactly what each setting promises).
    fsync: bool = False
    # Start as a learner (docs/operations.md, "Membership changes"): receive the log from the leader
    # without voting, standing or counting for a majority, until promoted (`Reconfigurable.promote`).
    # `peers` are then the members to connect to, and `self_member` the address it will vote from.
    learner: bool = False
    # Stand for no election until a leader was heard from (a voter that may be outside the configuration
    # yet: a learner promoted before the leader added it; the replicator's `_hold_or_release`).
    hold_elections: bool = False


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
    # This node's part: "voter", "learner" (not voting yet), "removed" (no longer a member: Raft stopped).
    role: str = "voter"


# A proposal's result told after its proposer was answered OutcomeUnknown (`Replicator.propose`): apply's
# result bytes, or None when the entry will not apply on this node.
LateResult = Callable[[bytes | None], None]


class Replicator(Protocol):
    """A replicated log feeding one `apply(index, payload)` function on every node.

    Contract: `apply` runs on one thread (the replicator's), in log order, once per entry per process
    lifetime, but an entry may be applied again after a restart (journal replay): `apply` must be idempotent
    by index and return None for an index it has already applied, else the result bytes.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> RaftStatus: ...

    async def propose(self, payload: bytes, *, timeout_s: float, late: LateResult | None = None) -> bytes:
        """Append `payload` as one entry and wait until this node has applied it; return apply's result.

        Raises `NotLeader` (nothing was appended), `Unavailable` (not started/stopping, or no leader: nothing
        was appended), `ResourceExhausted` (queue full: nothing appended), `OutcomeUnknown` (timeout or
        leadership change after the append: the entry may still commit; retry with the same request ids).

        `late`: when propose raises `OutcomeUnknown`, `late` is called once, later, on the event loop: with
        apply's result if this node applies the entry after all (however long that takes), or None once it
        will not (not committed before this node's leadership ended, or the replicator stopped). Not called
        when propose returns or raises anything else (nothing was appended then).
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


class Reconfigurable(Protocol):
    """Membership changes of the Raft configuration (docs/operations.md, "Membership changes"), which the
    real replicator offers besides `Replicator`. The member list the rest of the node sees is the state
    machine's (raft.commands.membership); this is only the voting configuration underneath it.

    One change at a time is the caller's rule (the state machine's change in flight): the Raft library
    does not enforce it.
    """

    def voters(self) -> frozenset[str]:
        """The Raft addresses of the voting configuration as this node has it (a change counts from the
        moment its entry is appended, not committed); empty while not started."""
        ...

    async def change_voters(self, member: RaftMember, *, add: bool, timeout_s: float) -> None:
        """On the leader: add `member` to (or remove it from) the voting configuration and wait until the
        change committed. Raises `NotLeader` (nothing appended), `FailedPrecondition` (refused: this
        leader's term has not applied its first entry yet, or the configuration already has (or lacks)
        that address, or the leader itself is to be removed: transfer leadership first),
        `OutcomeUnknown` (appended, not known to have committed: read `voters()` again)."""
        ...

    def set_members(self, members: tuple[RaftMember, ...]) -> None:
        """The ids of the members' addresses as the member list now says (status and transfers name ids)."""
        ...

    def promote(self, peers: tuple[RaftMember, ...]) -> None:
        """A learner becomes a voter: Raft restarts with this node's address and `peers` on the same
        journal. It holds its elections until it has heard from a leader (until the leader added it to the
        configuration, it is outside it). Blocks for about a tick; call from the node's thread."""
        ...

    def leave(self) -> None:
        """This node was removed from the configuration: Raft stops for good (no election, no port); the
        store stays readable. `status().role` is then "removed"."""
        ...


__all__ = ["LateResult", "RaftMember", "RaftStatus", "Reconfigurable", "Replicator", "ReplicatorConfig"]
