"""Whether the members of the cluster compute schedules with the same versions (raft.versions).

Each node answers its peers' clock probes with its schedule-result versions (cluster.proto
`ClockResponse.versions`; daemon.clockprobe hands them here as they arrive). `mismatch()` names every
member whose versions differ from this node's; on the leader, while it is not empty, the leader runner
holds fires and grants back (LeaderCore.hold), and `cluster status` shows it (`versions_mismatch`,
`dispatch_held`). It lifts by itself once every member agrees.

A member whose versions are not known does not block: one never heard from yet, and one silent for
longer than `max_age_s` (down, or cut off). A silent member applies nothing, and when it comes back it
answers the next probe, blocking again if it still disagrees; keeping a dead member's versions would
hold a whole cluster back for a node that may never return.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from cronraft.proto.v1 import cluster_pb2
from cronraft.raft import versions as rv

log = structlog.get_logger("cronraft.versions")


class VersionWatch:
    def __init__(
        self,
        *,
        node_id: str,
        own: Mapping[str, str],
        peers: Sequence[str],
        max_age_s: float,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.own = dict(own)
        self.peers = tuple(peers)
        self.max_age_s = max_age_s
        self._mono = mono
        self._seen: dict[str, tuple[dict[str, str], str, float]] = {}  # peer -> (versions, cronraft, at)
        self._last = ""  # the mismatch last logged

    def message(self) -> cluster_pb2.ScheduleVersions:
        """This node's versions, for the peers' probes and the status."""
        compared = {k: v for k, v in self.own.items() if k != "cronraft"}
        return cluster_pb2.ScheduleVersions(
            measured=True, versions=compared, cronraft=self.own.get("cronraft", "")
        )

    def note_peer(self, peer: str, msg: cluster_pb2.ScheduleVersions) -> None:
        """A peer's answer to our clock probe. An answer without versions (an older node) says nothing
        about them: its versions count as unknown for the comparison (raft.versions.differences)."""
        if peer in self.peers:
            self._seen[peer] = (dict(msg.versions), msg.cronraft, self._mono())

    def peer(self, peer: str) -> dict[str, str] | None:
        seen = self._seen.get(peer)
        if seen is None or self._mono() - seen[2] > self.max_age_s:
            return None
        return seen[0]

    def peer_message(self, peer: str) -> cluster_pb2.ScheduleVersions:
        seen = self._seen.get(peer)
        if seen is None or self._mono() - seen[2] > self.max_age_s:
            return cluster_pb2.ScheduleVersions(measured=False)
        return cluster_pb2.ScheduleVersions(measured=True, versions=seen[0], cronraft=seen[1])

    def mismatch(self) -> str:
        """The members (with a recent answer) whose compared versions differ from ours, and how; ''."""
        diffs = rv.differences(self.own, {p: self.peer(p) for p in self.peers})
        return rv.describe(diffs, self_id=self.node_id)

    def check(self) -> str:
        """`mismatch()`, logged when it changes (a warning naming the members and the packages)."""
        now = self.mismatch()
        if now != self._last:
            if now:
                log.warning(
                    "members disagree on versions that change schedule results; "
                    "a leader dispatches nothing until they agree",
                    mismatch=now,
                    ours={k: v for k, v in self.own.items() if k in rv.COMPARED},
                )
            else:
                log.info("members agree again on the versions that change schedule results", was=self._last)
            self._last = now
        return now


__all__ = ["VersionWatch"]
