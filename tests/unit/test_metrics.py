"""The node's metrics: outcomes counted from committed commands (daemon.metrics), the families read at
scrape time (daemon.http.collector), and the [http] config keys (with [metrics], the deprecated alias)."""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from leader_rig import LeaderRig
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from cronraft.client._transport import Transport
from cronraft.daemon.clockhealth import Health
from cronraft.daemon.config import HttpConfig, config_from_dict
from cronraft.daemon.http import collector as families
from cronraft.daemon.http.readiness import evaluate
from cronraft.daemon.metrics import (
    DURATION_BUCKETS,
    NodeMetrics,
    PlainCounter,
    PlainExporter,
    PlainHistogram,
    PlainLabelledCounter,
    count_results,
)
from cronraft.daemon.notify import Notifier
from cronraft.daemon.relay import Relay
from cronraft.errors import ConfigError
from cronraft.proto.v1 import cluster_pb2, commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.replicator import RaftStatus
from cronraft.raft.state import StateMachine

ROOT = Path(__file__).resolve().parents[2]
Command = commands_pb2.Command


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, f"no sample {name}{labels}"
    return got


class Rig(LeaderRig):
    """The leader rig, its commits counted as the leader runner counts them."""

    def __init__(self) -> None:
        self.metrics = NodeMetrics()
        super().__init__()
        self.core.worker_connected("w1", 4, ["default"], {}, self.mono)

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        results = super().apply(cmds)
        self.metrics.observe_committed(cmds, results)
        return results

    def report(self, outcome: int, started_ms: int = 0, finished_ms: int = 0) -> str:
        """The one lease's worker reports `outcome`; the execution id."""
        (lease,) = self.core.leases.values()
        result = common_pb2.AttemptResult(
            execution_id=lease.execution_id,
            token=common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]),
            outcome=common_pb2.AttemptOutcome.ValueType(outcome),
            started_at_ms=started_ms,
            finished_at_ms=finished_ms,
        )
        cmds = self.core.results("w1", [result], self.now)
        self.core.on_committed(cmds, self.apply(cmds), self.now, self.mono)
        return lease.execution_id

    def create_spec(self, spec: common_pb2.TaskSpec) -> None:
        task_id = make_id(self.now, os.urandom(10))
        cmd = Command(stamped_at_ms=self.now, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec))
        (res,) = self.apply([cmd])
        assert res.applied, res.error
        self.core.on_committed([cmd], [res], self.now, self.mono)


def spec(schedule: common_pb2.Schedule, **fields: object) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="t",
        schedule=schedule,
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        queue="default",
        **fields,  # type: ignore[arg-type]
    )


def test_a_failed_attempt_retried_then_succeeding_counts_once_as_succeeded() -> None:
    rig = Rig()
    m = rig.metrics.registry
    due = rig.now + 1_000
    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due))
    rig.create_spec(spec(at, max_attempts=3, retry=common_pb2.RetryPolicy(initial_backoff_ms=100)))
    rig.run(2)
    assert value(m, "cronraft_fires_total") == 1
    rig.report(common_pb2.ATTEMPT_FAILED, started_ms=due + 100, finished_ms=due + 600)
    assert value(m, "cronraft_retries_total", reason="failed") == 1
    assert value(m, "cronraft_attempt_duration_seconds_count") == 1
    assert value(m, "cronraft_attempt_duration_seconds_sum") == pytest.approx(0.5)
    assert value(m, "cronraft_fire_lateness_seconds_count") == 1
    assert value(m, "cronraft_fire_lateness_seconds_sum") == pytest.approx(0.1)
    rig.run(1)  # the retry's backoff, then a new grant
    rig.report(common_pb2.ATTEMPT_SUCCEEDED, started_ms=rig.now - 50, finished_ms=rig.now)
    assert value(m, "cronraft_executions_finished_total", state="succeeded", guarantee="at_least_once") == 1
    assert value(m, "cronraft_executions_finished_total", state="failed", guarantee="at_least_once") == 0
    assert value(m, "cronraft_attempt_duration_seconds_count") == 2
    assert value(m, "cronraft_fire_lateness_seconds_count") == 1  # the first attempt only
    assert value(m, "cronraft_executions_dead_lettered_total") == 0


def test_exhausted_retries_end_failed_as_a_dead_letter_and_a_lost_lease_by_its_guarantee() -> None:
    rig = Rig()
    m = rig.metrics.registry
    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=rig.now + 1_000))
    rig.create_spec(
        spec(at, max_attempts=1, retry=common_pb2.RetryPolicy(), guarantee=common_pb2.EXACTLY_ONCE)
    )
    rig.run(2)
    rig.report(common_pb2.ATTEMPT_TIMED_OUT, started_ms=rig.now - 100, finished_ms=rig.now)
    assert value(m, "cronraft_executions_finished_total", state="timed_out", guarantee="exactly_once") == 1
    assert value(m, "cronraft_executions_dead_lettered_total") == 1
    assert value(m, "cronraft_retries_total", reason="timed_out") == 0

    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=rig.now + 1_000))
    rig.create_spec(spec(at, guarantee=common_pb2.AT_MOST_ONCE))
    rig.run(2)
    (lease,) = rig.core.leases.values()
    lease.confirmed = True  # it began (its worker renewed it): an expiry is not "unstarted"
    rig.core.offered(
        lease.execution_id, common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]), None
    )
    rig.run(8)  # never renewed: expires after ttl + grace
    assert value(m, "cronraft_executions_finished_total", state="lost", guarantee="at_most_once") == 1
    assert value(m, "cronraft_regrants_total") == 0


def test_executions_a_fire_ends_by_its_overlap_policy_are_counted() -> None:
    rig = Rig()
    m = rig.metrics.registry
    every_s = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1_000, anchor_ms=rig.now))
    rig.create_spec(spec(every_s, overlap=common_pb2.OVERLAP_TERMINATE_OTHER))
    rig.run(3.5)  # each fire terminates the one before, still running (nobody reports a result)
    assert value(m, "cronraft_fires_total") >= 3
    assert value(m, "cronraft_executions_finished_total", state="cancelled", guarantee="at_least_once") >= 2


def test_misfires_are_counted_by_policy_and_outcome() -> None:
    rig = Rig()
    m = rig.metrics.registry
    every_s = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1_000, anchor_ms=rig.now))
    rig.create_spec(spec(every_s))  # fire_all (the default)
    rig.create_spec(spec(every_s, misfire=common_pb2.MISFIRE_SKIP))
    rig.create_spec(spec(every_s, misfire=common_pb2.MISFIRE_FIRE_ONCE))
    rig.now += 30_000  # no leader ticked for 30 s
    rig.mono += 30_000
    rig.run(0.1)
    assert value(m, "cronraft_misfires_total", policy="fire_all", outcome="caught_up") >= 1
    assert value(m, "cronraft_misfires_total", policy="fire_all", outcome="missed") == 0
    assert value(m, "cronraft_misfires_total", policy="skip", outcome="missed") >= 25
    assert value(m, "cronraft_misfires_total", policy="skip", outcome="caught_up") == 0
    assert value(m, "cronraft_misfires_total", policy="fire_once", outcome="caught_up") == 1
    assert value(m, "cronraft_misfires_total", policy="fire_once", outcome="missed") >= 25


def test_count_results_counts_a_serialized_batch_result_without_parsing_it() -> None:
    for sizes in ([], [0], [10, 200, 20_000], [1] * 300):
        batch = commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True, error="x" * n) for n in sizes]
        )
        assert count_results(batch.SerializeToString()) == len(sizes)


def test_timed_apply_observes_each_applied_entry_once() -> None:
    metrics = NodeMetrics()
    sm = StateMachine(MemKV())
    apply = metrics.timed_apply(sm.apply_entry)
    epoch = Command(stamped_at_ms=1, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))
    assert apply(1, encode_batch([epoch, epoch, epoch])) is not None
    assert apply(1, encode_batch([epoch])) is None  # applied already: not observed
    reg = metrics.registry
    assert value(reg, "cronraft_apply_seconds_count") == 1
    assert value(reg, "cronraft_apply_entry_commands_sum") == 3

    apply_many = metrics.timed_apply_many(lambda entries, unread: sm.apply_entries(entries, unread=unread))
    out = apply_many([(1, encode_batch([epoch])), (2, encode_batch([epoch, epoch]))], ())
    assert out[0] is None and out[1] is not None  # index 1 applied already: only index 2 observed
    assert value(reg, "cronraft_apply_seconds_count") == 2
    assert value(reg, "cronraft_apply_entry_commands_sum") == 5


def test_plain_instruments_write_what_prometheus_clients_own_would() -> None:
    """The plain instruments (no lock, no label lookup per event) expose the same text, in both formats,
    as prometheus_client's Counter and Histogram fed the same events: bounds included in their bucket."""
    ref = CollectorRegistry()
    c_ref = Counter("c", "A counter.", ["a", "b"], registry=ref)
    n_ref = Counter("n", "No labels.", registry=ref)
    h_ref = Histogram("h_seconds", "A histogram.", buckets=DURATION_BUCKETS, registry=ref)
    c, n, h = PlainLabelledCounter(["a", "b"]), PlainCounter(), PlainHistogram(DURATION_BUCKETS)
    plain = CollectorRegistry()
    plain.register(
        PlainExporter([("c", "A counter.", c), ("n", "No labels.", n), ("h_seconds", "A histogram.", h)])
    )
    for labels in (("x", "y"), ("x", "z"), ("x", "y")):
        c_ref.labels(*labels).inc()
        c.labels(*labels).inc()
    n_ref.inc(3)
    n.inc(3)
    for v in (0, 0.01, 0.011, 0.5, 3600, 86_400, 86_401, 1e-9):
        h_ref.observe(v)
        h.observe(v)
    h_ref.observe(0.25)
    h_ref.observe(0.25)
    h.observe_many(0.25, 2)
    assert generate_latest(plain) == generate_latest(ref)
    assert generate_openmetrics(plain) == generate_openmetrics(ref)


def test_a_scrape_during_observations_on_another_thread_is_consistent() -> None:
    """The apply thread observes while a scrape reads: every scrape's buckets are cumulative, its count is
    its +Inf bucket, and no count goes down from one scrape to the next."""
    metrics = NodeMetrics()
    hist = metrics.apply_seconds
    total = 200_000

    def observe() -> None:
        for i in range(total):
            hist.observe((i % 7) / 1000)

    thread = threading.Thread(target=observe)
    thread.start()
    last = 0.0
    while True:
        alive = thread.is_alive()
        (family,) = [
            f for f in metrics.registry.collect() if f.name == "cronraft_apply_seconds"
        ]  # one scrape
        buckets = [s.value for s in family.samples if s.name.endswith("_bucket")]
        (count,) = [s.value for s in family.samples if s.name.endswith("_count")]
        assert len(buckets) == len(hist.les) and buckets == sorted(buckets)
        assert count == buckets[-1] >= last
        last = count
        if not alive:
            break
    thread.join()
    assert last == total


# --------------------------------------------------------------------------- scrape-time families


class Families(Collector):
    def __init__(self, *groups: Iterator[Metric]) -> None:
        self.metrics = [m for group in groups for m in group]

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def _relay() -> Relay:
    """A follower's relay, never started (its counters are all the families read)."""
    return Relay(
        node_id="n2",
        own_address="n2:1",
        enabled=True,
        max_streams=2,
        max_writes=1,
        status=lambda: RaftStatus("n2", False, None, 0, 0, 0),
        leader_address=lambda st: None,
        transport=Transport(),
    )


def registry_of(*groups: Iterator[Metric]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(Families(*groups))
    generate_latest(reg)  # renders (types, names and label counts checked by prometheus_client)
    return reg


def status(**changes: object) -> RaftStatus:
    fields: dict[str, object] = {
        "node_id": "n1",
        "is_leader": True,
        "leader_id": "n1",
        "term": 7,
        "commit_index": 120,
        "applied_index": 118,
        "connected": {"n2": True, "n3": False},
        "ready": True,
        "has_quorum": True,
    }
    fields.update(changes)
    return RaftStatus(**fields)  # type: ignore[arg-type]


def test_node_raft_clock_and_storage_families() -> None:
    st = status()
    ready = evaluate(st, applied_index=118)
    reg = registry_of(
        families.node_families("n1", "0.1.0", ready),
        families.raft_families(st, 118, internal_errors=2),
        families.clock_families(Health(250.0, False, 200, True), 3, {"n2": -1500.0, "n3": None}),
        families.storage_families(
            cluster_pb2.StorageStatus(
                exhausted=True, used_bytes=10, map_size_bytes=20, max_map_size_bytes=40, disk_free_bytes=5
            ),
            reserve_bytes=64,
            map_grown=1,
        ),
    )
    assert value(reg, "cronraft_node_info", node="n1", version="0.1.0") == 1
    assert value(reg, "cronraft_ready") == 1
    assert value(reg, "cronraft_ready_check", check="apply_lag") == 1
    assert value(reg, "cronraft_raft_term") == 7
    assert value(reg, "cronraft_raft_commit_index") == 120
    assert value(reg, "cronraft_raft_applied_index") == 118
    assert value(reg, "cronraft_raft_is_leader") == 1
    assert value(reg, "cronraft_raft_peers_connected") == 1
    assert value(reg, "cronraft_apply_internal_errors_total") == 2
    assert value(reg, "cronraft_clock_offset_seconds") == 0.25
    assert value(reg, "cronraft_clock_healthy") == 0
    assert value(reg, "cronraft_clock_leadership_transfers_total") == 3
    assert value(reg, "cronraft_clock_peer_offset_seconds", peer="n2") == -1.5
    assert reg.get_sample_value("cronraft_clock_peer_offset_seconds", {"peer": "n3"}) is None
    assert value(reg, "cronraft_storage_exhausted") == 1
    assert value(reg, "cronraft_storage_max_map_bytes") == 40
    assert value(reg, "cronraft_storage_reserve_bytes") == 64
    assert value(reg, "cronraft_storage_map_growths_total") == 1


def test_state_leader_and_notifier_families() -> None:
    rig = Rig()
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=rig.now + 1_000)))
    rig.run(2)
    rig.core.worker_connected("w2", 2, ["default"], {}, rig.mono)
    rig.core.hold = "node2 runs tzdata 2025a"
    relay = _relay()
    relay.streams, relay.writes_total, relay.refused["writes"] = 1, 7, 2
    with rig.kv.read() as txn:
        state = list(families.state_families(txn, max_tasks=100, max_calendars=10))
    reg = registry_of(
        iter(state),
        families.leader_families(rig.core, {"superseded": 2}),
        families.notifier_families(Notifier()),
        families.proposal_families(5, 12),
        families.relay_families(relay),
    )
    assert value(reg, "cronraft_executions", state="leased") == 1
    assert value(reg, "cronraft_executions", state="pending") == 0
    assert value(reg, "cronraft_quota_used", quota="tasks") == 1
    assert value(reg, "cronraft_quota_limit", quota="tasks") == 100
    assert value(reg, "cronraft_dead_letters") == 0
    assert value(reg, "cronraft_workers", status="ready") == 2
    assert value(reg, "cronraft_worker_slots") == 6
    assert value(reg, "cronraft_worker_free_slots") == 5
    assert (
        value(reg, "cronraft_leases", phase="running") + value(reg, "cronraft_leases", phase="deferred") == 1
    )
    assert value(reg, "cronraft_dispatch_held") == 1
    assert value(reg, "cronraft_worker_messages_dropped_total", reason="superseded") == 2
    assert value(reg, "cronraft_notifications_total", outcome="delivered") == 0
    assert value(reg, "cronraft_notifications_pending") == 0
    assert value(reg, "cronraft_proposed_commands_total") == 12
    assert value(reg, "cronraft_relay_active", kind="streams") == 1
    assert value(reg, "cronraft_relayed_total", kind="writes") == 7
    assert value(reg, "cronraft_relay_refused_total", kind="writes") == 2

    follower = registry_of(families.leader_families(None, {}))
    assert value(follower, "cronraft_workers", status="ready") == 0
    assert value(follower, "cronraft_dispatch_held") == 0


def test_two_nodes_in_one_process_keep_their_own_registries() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.fires.inc()
    a.fire_lateness.observe(1)
    assert value(a.registry, "cronraft_fires_total") == 1
    assert value(b.registry, "cronraft_fires_total") == 0
    assert value(b.registry, "cronraft_fire_lateness_seconds_count") == 0


# ----------------------------------------------------------------------------------- readiness


def test_readiness_names_every_failed_check() -> None:
    assert evaluate(status(), applied_index=118).ready
    st = status(leader_id=None, has_quorum=False, ready=False, connected={"n2": False, "n3": False})
    r = evaluate(
        st, applied_index=10, storage_refused="data", storage_reason="the disk is full", max_apply_lag=100
    )
    assert list(r.failed) == ["leader", "quorum", "synced", "storage", "apply_lag"]
    assert r.failed["quorum"] == "connected to 1 of 3 members, not a majority"
    assert r.failed["storage"] == "refuses data writes: the disk is full"
    assert r.failed["apply_lag"].startswith("applied index 10 is 110 entries behind commit index 120")
    assert r.body("n1") == {"node": "n1", "ready": False, "failed": r.failed}
    assert evaluate(status(), applied_index=110, max_apply_lag=10).ready


# -------------------------------------------------------------------------------------- config


def _base() -> dict[str, object]:
    return tomllib.loads((ROOT / "cluster-configs" / "single-node.toml").read_text())


def test_http_address_defaults_on_loopback_and_metrics_is_its_deprecated_alias() -> None:
    cfg = config_from_dict(_base(), "f.toml")
    assert cfg.http == HttpConfig(address="127.0.0.1:50071") and not cfg.deprecations
    without = {k: v for k, v in _base().items() if k != "http"}
    assert config_from_dict(without, "f.toml").http == HttpConfig(address="")
    off = config_from_dict({**_base(), "http": {"address": ""}}, "f.toml")
    assert off.http.address == ""
    old = config_from_dict({**without, "metrics": {"address": "127.0.0.1:9464"}}, "f.toml")
    assert old.http.address == "127.0.0.1:9464"
    (warning,) = old.deprecations
    assert warning.startswith(
        "f.toml: metrics.address is deprecated: write [http] address = '127.0.0.1:9464'"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"http": {"address": "nowhere"}}, "f.toml: http.address: 'nowhere': expected host:port"),
        ({"http": {"address": 9464}}, "f.toml: http.address: expected a string"),
        ({"http": {"port": 1}}, "f.toml: http.port: unknown key"),
        (
            {"metrics": {"address": "127.0.0.1:1"}},
            "f.toml: metrics.address: deprecated, and http.address is set",
        ),
        ({"metrics": {"port": 1}}, "f.toml: metrics.port: unknown key"),
        (
            {"http": {"address": "127.0.0.1:50051"}},
            "f.toml: http.address: '127.0.0.1:50051' is this node's gRPC",
        ),
        (
            {"http": {"address": "0.0.0.0:50071"}},
            "f.toml: http.address: '0.0.0.0:50071' is not a loopback address",
        ),
    ],
)
def test_bad_http_keys_name_file_and_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({**_base(), **table}, "f.toml")
    assert str(e.value).startswith(message)


def test_a_non_loopback_http_listener_is_allowed_with_insecure() -> None:
    cfg = config_from_dict({**_base(), "insecure": True, "http": {"address": "0.0.0.0:50071"}}, "f.toml")
    assert cfg.http.address == "0.0.0.0:50071"
