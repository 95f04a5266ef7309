"""The metrics read from a node's state at scrape time (a prometheus_client custom collector): nothing is
computed between scrapes, and raft/ (which imports neither the daemon nor prometheus_client) is only
read. docs/monitoring.md lists every family.

Each group is a function of plain values (a `RaftStatus`, a `StorageStatus`, a `LeaderCore`...) returning
metric families, so that the tests need no node; `NodeCollector` reads the node and calls them.

Families from the replicated state (executions waiting, leased, dead letters, tasks) are the same on
every node that is caught up: take their `max` over the nodes, not their sum. Families of the leader's
memory (workers, leases, dispatch hold) are zero on the followers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cronraft.daemon.clockhealth import Health
from cronraft.daemon.http.readiness import Readiness
from cronraft.daemon.leader import LeaderCore
from cronraft.daemon.notify import Notifier
from cronraft.daemon.relay import Relay
from cronraft.proto.v1 import cluster_pb2
from cronraft.raft.kv import Txn
from cronraft.raft.replicator import RaftStatus

if TYPE_CHECKING:
    from cronraft.daemon.node import Node


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, values: Iterable[tuple[str, float]]
) -> GaugeMetricFamily | CounterMetricFamily:
    for label, value in values:
        family.add_metric([label], value)
    return family


def node_families(node_id: str, version: str, readiness: Readiness) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "cronraft_node_info", "This node's id and version (always 1).", labels=["node", "version"]
    )
    info.add_metric([node_id, version], 1)
    yield info
    yield _gauge(
        "cronraft_ready", "1 when /readyz answers 200 (gRPC health SERVING).", float(readiness.ready)
    )
    checks = GaugeMetricFamily(
        "cronraft_ready_check",
        "Each readiness check: 1 passes, 0 fails (leader, quorum, synced, storage, apply_lag).",
        labels=["check"],
    )
    for name in readiness.CHECKS:
        checks.add_metric([name], float(name not in readiness.failed))
    yield checks


def raft_families(st: RaftStatus, applied_index: int, internal_errors: int) -> Iterator[Metric]:
    yield _gauge("cronraft_raft_term", "The current Raft term.", st.term)
    yield _gauge(
        "cronraft_raft_commit_index", "The Raft commit index, as this node knows it.", st.commit_index
    )
    yield _gauge(
        "cronraft_raft_applied_index", "The last log index applied to this node's store.", applied_index
    )
    yield _gauge("cronraft_raft_is_leader", "1 on the Raft leader.", float(st.is_leader))
    yield _gauge(
        "cronraft_raft_leader_known", "1 while this node knows a leader.", float(st.leader_id is not None)
    )
    yield _gauge(
        "cronraft_raft_has_quorum",
        "1 while this node is connected to a majority (itself included).",
        float(st.has_quorum),
    )
    yield _gauge(
        "cronraft_raft_peers_connected",
        "Peers this node has a Raft connection to.",
        sum(st.connected.values()),
    )
    yield _gauge("cronraft_raft_peers", "Peers in this node's configuration.", len(st.connected))
    yield _counter(
        "cronraft_apply_internal_errors",
        "Commands this node recorded as failed inside apply (error_code internal) since it started.",
        internal_errors,
    )


def clock_families(
    health: Health, transfers: int, peer_offsets_ms: Mapping[str, float | None]
) -> Iterator[Metric]:
    yield _gauge(
        "cronraft_clock_offset_seconds",
        "This node's wall clock minus the cluster median (measured).",
        health.offset_ms / 1000,
    )
    yield _gauge(
        "cronraft_clock_correction_seconds",
        "The correction this node's scheduling clock applies.",
        health.correction_ms / 1000,
    )
    yield _gauge(
        "cronraft_clock_healthy",
        "1 while the wall-clock offset is within [clock] max_offset_ms.",
        float(health.healthy),
    )
    yield _gauge(
        "cronraft_clock_measured",
        "1 once enough peers answered to tell whose clock is off.",
        float(health.measured),
    )
    yield _counter(
        "cronraft_clock_leadership_transfers",
        "Leadership transfers this node requested because its own clock was off.",
        transfers,
    )
    peers = GaugeMetricFamily(
        "cronraft_clock_peer_offset_seconds",
        "A peer's wall clock minus the cluster median, as measured here.",
        labels=["peer"],
    )
    for peer, off in sorted(peer_offsets_ms.items()):
        if off is not None:
            peers.add_metric([peer], off / 1000)
    yield peers


def storage_families(st: cluster_pb2.StorageStatus, reserve_bytes: int, map_grown: int) -> Iterator[Metric]:
    yield _gauge(
        "cronraft_storage_exhausted",
        "1 while this node refuses writes for lack of space (cluster status says why).",
        float(st.exhausted),
    )
    yield _gauge("cronraft_storage_used_bytes", "Bytes of store pages holding data.", st.used_bytes)
    yield _gauge("cronraft_storage_map_bytes", "The LMDB map's size now.", st.map_size_bytes)
    yield _gauge(
        "cronraft_storage_max_map_bytes",
        "The most the LMDB map may grow to ([storage] max_map_size_bytes).",
        st.max_map_size_bytes,
    )
    yield _gauge(
        "cronraft_storage_disk_free_bytes",
        "Free bytes on the data directory's file system.",
        st.disk_free_bytes,
    )
    yield _gauge(
        "cronraft_storage_reserve_bytes",
        "Space kept for deletes: writes adding data are refused once the store is this close to its "
        "maximum or the disk has less free.",
        reserve_bytes,
    )
    yield _gauge(
        "cronraft_raft_journal_bytes",
        "Bytes of entries in the Raft journal since its last compaction.",
        st.journal_bytes,
    )
    yield _gauge(
        "cronraft_storage_stuck_index",
        "The log index this node cannot apply for lack of space (0: none).",
        st.stuck_index,
    )
    yield _counter(
        "cronraft_storage_map_growths", "Times the LMDB map grew after a write found it full.", map_grown
    )


def state_families(txn: Txn, max_tasks: int, max_calendars: int) -> Iterator[Metric]:
    """Counts of the replicated state, each O(1) (LMDB keeps every sub-database's entry count)."""
    yield _labelled(
        GaugeMetricFamily(
            "cronraft_executions",
            "Executions not yet ended, by state: pending (waiting for a lease or a retry's backoff), "
            "buffered (behind an earlier one of their task), leased (holding a lease).",
            labels=["state"],
        ),
        [
            ("pending", txn.count("pending")),
            ("buffered", txn.count("buffered")),
            ("leased", txn.count("running")),
        ],
    )
    yield _gauge("cronraft_dead_letters", "Dead letters kept (not yet redriven or purged).", txn.count("dlq"))
    used = GaugeMetricFamily(
        "cronraft_quota_used", "What the cluster-wide [limits] quotas count, now.", labels=["quota"]
    )
    used.add_metric(["tasks"], txn.count("tasks"))
    used.add_metric(["calendars"], txn.count("calendars"))
    yield used
    limit = GaugeMetricFamily("cronraft_quota_limit", "The cluster-wide [limits] quotas.", labels=["quota"])
    limit.add_metric(["tasks"], max_tasks)
    limit.add_metric(["calendars"], max_calendars)
    yield limit


def leader_families(core: LeaderCore | None, dropped: Mapping[str, int]) -> Iterator[Metric]:
    """The leader's memory: connected workers and their slots, leases, the dispatch hold (zero on a
    follower, `core` None)."""
    workers = [w for w in core.workers.values() if w.connected] if core is not None else []
    yield _labelled(
        GaugeMetricFamily(
            "cronraft_workers",
            "Workers with a stream to this leader, by status: ready (offered work), silent (not heard "
            "from lately), draining (shutting down).",
            labels=["status"],
        ),
        [
            ("ready", sum(1 for w in workers if not (w.silent or w.draining))),
            ("silent", sum(1 for w in workers if w.silent)),
            ("draining", sum(1 for w in workers if w.draining and not w.silent)),
        ],
    )
    yield _gauge(
        "cronraft_worker_slots",
        "Slots (attempts at once) of the workers connected to this leader.",
        sum(w.capacity for w in workers),
    )
    yield _gauge(
        "cronraft_worker_free_slots",
        "Slots this leader may still fill (ready workers' capacity less leases held or being granted).",
        sum(max(0, w.free()) for w in workers),
    )
    leases = list(core.leases.values()) if core is not None else []
    deferred = sum(1 for lease in leases if lease.start_mono is not None and not lease.confirmed)
    yield _labelled(
        GaugeMetricFamily(
            "cronraft_leases",
            "Leases this leader tracks, by phase: deferred (granted ahead, start not yet confirmed) or "
            "running (may have begun).",
            labels=["phase"],
        ),
        [("deferred", deferred), ("running", len(leases) - deferred)],
    )
    yield _gauge(
        "cronraft_dispatch_held",
        "1 while the leader holds fires and grants back (members disagree on schedule-result versions).",
        float(core is not None and bool(core.hold)),
    )
    yield _labelled(
        CounterMetricFamily(
            "cronraft_worker_messages_dropped",
            "Worker messages the leader dropped in its current term, by reason: result, output or renewal "
            "(forged: another worker's lease), stale_output, superseded (a replaced stream).",
            labels=["reason"],
        ),
        sorted(dropped.items()),
    )


def notifier_families(notifier: Notifier) -> Iterator[Metric]:
    s = notifier.stats
    yield _labelled(
        CounterMetricFamily(
            "cronraft_notifications",
            "Notification deliveries (one per notification and target) by outcome: delivered, failed "
            "(given up after its attempts), dropped (queue full), abandoned (still queued at shutdown).",
            labels=["outcome"],
        ),
        [
            ("delivered", s.delivered),
            ("failed", s.failed),
            ("dropped", s.dropped),
            ("abandoned", s.abandoned),
        ],
    )
    yield _counter(
        "cronraft_notification_attempts_failed",
        "Delivery attempts that failed (each retried delivery counts once per failed attempt).",
        s.attempts_failed,
    )
    yield _gauge("cronraft_notifications_pending", "Deliveries queued or in flight.", notifier.pending)


def proposal_families(entries: int, commands: int) -> Iterator[Metric]:
    yield _counter(
        "cronraft_proposed_entries", "Log entries this node proposed as leader (group commit).", entries
    )
    yield _counter("cronraft_proposed_commands", "Commands in the entries this node proposed.", commands)


def relay_families(relay: Relay) -> Iterator[Metric]:
    """What this node relays to the leader (daemon.relay; zero on the leader and with relaying off)."""
    yield _labelled(
        GaugeMetricFamily(
            "cronraft_relay_active",
            "Calls this node relays to the leader now, by kind: streams (workers' streams), writes "
            "(clients' writes forwarded and not answered yet).",
            labels=["kind"],
        ),
        [("streams", relay.streams), ("writes", relay.writes)],
    )
    yield _labelled(
        CounterMetricFamily(
            "cronraft_relayed",
            "Calls this node relayed to the leader since it started, by kind.",
            labels=["kind"],
        ),
        [("streams", relay.streams_total), ("writes", relay.writes_total)],
    )
    yield _labelled(
        CounterMetricFamily(
            "cronraft_relay_refused",
            "Calls this node refused to relay for a bound ([cluster] relay_max_streams, relay_max_writes), "
            "by kind.",
            labels=["kind"],
        ),
        sorted(relay.refused.items()),
    )


class NodeCollector(Collector):
    """Reads `node` at each scrape (registered in the node's registry by `Node`)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def describe(self) -> list[Metric]:
        return []  # names are not checked against the registry's other collectors

    def collect(self) -> Iterator[Metric]:
        node = self._node
        st = node.replicator.status()
        runner = node.runner if st.is_leader else None
        yield from node_families(node.config.node.id, node.versions.message().cronraft, node.readiness(st))
        yield from raft_families(st, node.sm.last_applied(), node.sm.internal_errors)
        monitor = node.clock_monitor
        yield from clock_families(
            monitor.health,
            monitor.transfers,
            {peer: monitor.estimate.peer_offset(peer) for peer in monitor.peers},
        )
        yield from storage_families(node.storage.status(), node.storage.reserve, node.storage.grown)
        lim = node.config.limits
        with node.kv.read() as txn:  # read whole before the transaction ends
            counts = list(state_families(txn, lim.max_tasks, lim.max_calendars))
        yield from counts
        yield from leader_families(
            runner.core if runner is not None else None, runner.dropped if runner else {}
        )
        yield from notifier_families(node.notifier)
        yield from proposal_families(node.committer.entries_proposed, node.committer.commands_proposed)
        yield from relay_families(node.relay)


__all__ = [
    "NodeCollector",
    "clock_families",
    "leader_families",
    "node_families",
    "notifier_families",
    "proposal_families",
    "raft_families",
    "relay_families",
    "state_families",
    "storage_families",
]
