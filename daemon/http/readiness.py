"""Whether a node is ready to serve: the one truth behind HTTP `/readyz`, the gRPC health service's
overall status ("") and the `cronraft_ready` metric. Pure: it judges values the node read.

A node is ready when every check passes:
- `leader`: it knows a leader;
- `quorum`: it is connected to a majority of the members, itself included;
- `synced`: its Raft log caught up with the leader's once since it started (pysyncobj's "ready");
- `storage`: its storage refuses no writes (daemon.storage; a node that refuses some writes for lack
  of space still reads, and deletes, but is not ready: `cronraft.storage` health says why too);
- `apply_lag`: its applied index is at most `max_apply_lag` entries behind its commit index;
- `member`: it is a voting member (not a learner catching up to join, not removed: daemon.membership).

A leader whose duties have not started yet (its term's first entry not committed, its clock not measured)
is ready by these checks: clients' writes wait in the group committer meanwhile, as on any leader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cronraft.raft.replicator import RaftStatus

# Entries a ready node's store may be behind its commit index: a burst of large entries is applied in
# well under a second at this depth (bench/perf_inproc.py), while a node that stopped applying (stuck on
# an entry, or far behind after a restart) passes it quickly.
MAX_APPLY_LAG = 1000


@dataclass(frozen=True)
class Readiness:
    CHECKS: ClassVar[tuple[str, ...]] = ("leader", "quorum", "synced", "storage", "apply_lag", "member")

    failed: dict[str, str] = field(default_factory=dict)  # check -> why it fails, in CHECKS order

    @property
    def ready(self) -> bool:
        return not self.failed

    def body(self, node_id: str) -> dict[str, Any]:
        """The JSON of /readyz: `ready`, and each failed check with why."""
        return {"node": node_id, "ready": self.ready, "failed": dict(self.failed)}


def evaluate(
    st: RaftStatus,
    *,
    applied_index: int,
    storage_refused: str = "",
    storage_reason: str = "",
    max_apply_lag: int = MAX_APPLY_LAG,
) -> Readiness:
    failed: dict[str, str] = {}
    if st.leader_id is None:
        failed["leader"] = "no known leader (an election is under way, or no quorum to elect one)"
    if not st.has_quorum:
        up = 1 + sum(st.connected.values())
        failed["quorum"] = f"connected to {up} of {1 + len(st.connected)} members, not a majority"
    if not st.ready:
        failed["synced"] = "the Raft log has not caught up with the leader's since the start"
    if storage_refused:
        failed["storage"] = f"refuses {storage_refused} writes: {storage_reason}"
    lag = st.commit_index - applied_index
    if lag > max_apply_lag:
        failed["apply_lag"] = (
            f"applied index {applied_index} is {lag} entries behind commit index {st.commit_index} "
            f"(at most {max_apply_lag})"
        )
    if st.role == "learner":
        failed["member"] = "a learner: catching up to join the cluster, a member once its addition is done"
    elif st.role != "voter":
        failed["member"] = f"{st.role}: not a member of the cluster"
    return Readiness(failed)


__all__ = ["MAX_APPLY_LAG", "Readiness", "evaluate"]
