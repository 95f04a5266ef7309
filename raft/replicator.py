"""The replicator interface: what the daemon and the group committer use of the replicated log.

Owns the `Replicator` protocol and its value types (`RaftMember`, `ReplicatorConfig`, `RaftStatus`);
imports no Raft library. Two implementations satisfy it (mypy checks both):

- `raft.syncobj_replicator.SyncObjReplicator`, the real one, on pysyncobj. Around it:
  `raft.pysyncobj_adapter` (the only module that imports pysyncobj or touches its private parts),
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


__all__ = ["RaftMember", "RaftStatus", "Replicator", "ReplicatorConfig"]
