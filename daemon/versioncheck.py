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

The same answers carry the features each member's build supports (raft.features): `raisable` tells the
leader which features it may add to the cluster's level, which it does with a RaiseFeatures command
(daemon.leader_runner). Here the rule is the opposite: a member that cannot be judged holds every feature
back, since it may come back running an older release. `watch_level` logs the level as it changes, and
loudly when this node's build lacks a feature in force (it was rolled back: docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog

from cronraft.proto.v1 import cluster_pb2
from cronraft.raft import features as rf
from cronraft.raft import versions as rv
from cronraft.raft.kv import KV

log = structlog.get_logger("cronraft.versions")


class FeatureRaiser(Protocol):
    """What proposes RaiseFeatures: the leader runner (daemon.leader_runner.LeaderRunner.raise_features)."""

    def raise_features(self, names: frozenset[str]) -> None: ...


class VersionWatch:
    def __init__(
        self,
        *,
        node_id: str,
        own: Mapping[str, str],
        peers: Sequence[str],
        max_age_s: float,
        mono: Callable[[], float] = time.monotonic,
        features: frozenset[str] = rf.SUPPORTED,
    ) -> None:
        self.node_id = node_id
        self.own = dict(own)
        self.features = features  # what this node's build supports (raft.features)
        self.peers = tuple(peers)
        self.max_age_s = max_age_s
        self._mono = mono
        # peer -> (versions, cronraft, features, at)
        self._seen: dict[str, tuple[dict[str, str], str, frozenset[str], float]] = {}
        self._last = ""  # the mismatch last logged
        self._level: frozenset[str] | None = None  # the cluster's feature level last logged
        self._behind = ""  # the members last logged as lacking features in use

    def message(self) -> cluster_pb2.ScheduleVersions:
        """This node's versions, for the peers' probes and the status."""
        compared = {k: v for k, v in self.own.items() if k != "cronraft"}
        return cluster_pb2.ScheduleVersions(
            measured=True,
            versions=compared,
            cronraft=self.own.get("cronraft", ""),
            features=sorted(self.features),
        )

    def note_peer(self, peer: str, msg: cluster_pb2.ScheduleVersions) -> None:
        """A peer's answer to our clock probe. An answer without versions (an older node) says nothing
        about them: its versions count as unknown for the comparison (raft.versions.differences)."""
        if peer in self.peers:
            self._seen[peer] = (dict(msg.versions), msg.cronraft, frozenset(msg.features), self._mono())

    def _recent(self, peer: str) -> tuple[dict[str, str], str, frozenset[str], float] | None:
        seen = self._seen.get(peer)
        if seen is None or self._mono() - seen[3] > self.max_age_s:
            return None
        return seen

    def peer(self, peer: str) -> dict[str, str] | None:
        seen = self._recent(peer)
        return None if seen is None else seen[0]

    def peer_features(self, peer: str) -> frozenset[str] | None:
        """The features `peer` announced in its last recent answer (empty: an older release), or None."""
        seen = self._recent(peer)
        return None if seen is None else seen[2]

    def peer_message(self, peer: str) -> cluster_pb2.ScheduleVersions:
        seen = self._recent(peer)
        if seen is None:
            return cluster_pb2.ScheduleVersions(measured=False)
        return cluster_pb2.ScheduleVersions(
            measured=True, versions=seen[0], cronraft=seen[1], features=sorted(seen[2])
        )

    # ------------------------------------------------------------------------------------- features

    def raisable(self, active: frozenset[str]) -> tuple[frozenset[str], str]:
        """The features the leader may add to `active` now, and why the others of this build wait."""
        return rf.raisable(active, self.features, {p: self.peer_features(p) for p in self.peers})

    def behind(self, active: frozenset[str]) -> str:
        """The members (with a recent answer) whose release lacks features the cluster uses: rolled back
        after the gate, they apply entries differently ('' : none). Logged by `gate` as it changes."""
        parts = []
        for peer in self.peers:
            theirs = self.peer_features(peer)
            if theirs is not None and active - theirs:
                parts.append(f"{peer} lacks {', '.join(sorted(active - theirs))}")
        return "; ".join(parts)

    def features_waiting(self, active: frozenset[str]) -> str:
        """Why features of this build are not in the cluster's level yet, or who lacks some in use ('' :
        neither): `StatusResponse.features_waiting`."""
        lacking = rf.unsupported(active, self.features)
        if lacking:
            return f"this node's release lacks {', '.join(sorted(lacking))}, which the cluster uses"
        behind = self.behind(active)
        if behind:
            return f"{behind}, which the cluster uses: run this release there (docs/operations.md, Upgrades)"
        pending = self.features - active
        if not pending:
            return ""
        _, why = self.raisable(active)
        return f"{', '.join(sorted(pending))} not in use yet: " + (why or "the leader turns them on")

    def gate(self, kv: KV, runner: FeatureRaiser | None) -> None:
        """Once per leadership-watch round (daemon.node): log the cluster's feature level as it changes
        and, on the leader (`runner`), propose to raise it to what every member now supports."""
        with kv.read() as txn:
            active = rf.level(txn)
        self.watch_level(active)
        behind = self.behind(active) if active else ""
        if behind != self._behind:
            if behind:
                log.error(
                    "members run a release without features the cluster uses: they apply entries "
                    "differently; run this release there (docs/operations.md, Upgrades: rollback)",
                    members=behind,
                )
            self._behind = behind
        if runner is not None:
            names, _ = self.raisable(active)
            runner.raise_features(names)

    def watch_level(self, active: frozenset[str]) -> None:
        """Log the cluster's feature level when it changes (as this node applied it), and an error while
        it holds a feature this node's build lacks (a rollback below the level)."""
        if active == self._level:
            return
        if self._level is None:
            log.info("cluster feature level", features=sorted(active))
        else:
            added = sorted(active - self._level)
            log.info("cluster feature level raised", added=added, features=sorted(active))
        lacking = rf.unsupported(active, self.features)
        if lacking:
            log.error(
                "this node's release lacks features the cluster uses: it may apply entries differently; "
                "run a release that supports them (docs/operations.md, Upgrades: rollback)",
                lacking=sorted(lacking),
            )
        self._level = active

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
