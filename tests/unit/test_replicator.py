"""The pysyncobj replicator: a real 3-node cluster on loopback in this process, plus the error mapping.

The toy state machine records every applied `(index, payload)` in an LmdbKV with `last_applied` written in
the same transaction (I2), and counts the entries it really applied in this process lifetime, so that a
replay applying something twice would show.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cronraft.errors import (
    ConfigError,
    NotLeader,
    OutcomeUnknown,
    ResourceExhausted,
    Unavailable,
)
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.pysyncobj_adapter import error_for_fail_reason, fail_reason_names
from cronraft.raft.replicator import RaftMember, RaftStatus, ReplicatorConfig
from cronraft.raft.snapshot_file import encode_snapshot_header, read_snapshot_header
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from tests.support.ports import free_ports
from tests.support.wait import wait_until_async

SECRET = "test-cluster-secret"
U64 = struct.Struct(">Q")


class ToyNode:
    """One cluster member: a store, a toy apply, a replicator (restartable on the same data dir)."""

    def __init__(self, config: ReplicatorConfig) -> None:
        self.config = config
        self.store: LmdbKV | None = None
        self.replicator: SyncObjReplicator | None = None
        self.applied_now: list[int] = []  # indexes really applied in this lifetime
        self.block_on: threading.Event | None = None  # apply waits for it (to stall the Raft thread)

    @property
    def rep(self) -> SyncObjReplicator:
        assert self.replicator is not None
        return self.replicator

    @property
    def kv(self) -> LmdbKV:
        assert self.store is not None
        return self.store

    def apply(self, index: int, payload: bytes) -> bytes | None:
        if self.block_on is not None:
            assert self.block_on.wait(10)
        with self.kv.write() as txn:
            raw = txn.get("meta", b"last_applied")
            if raw is not None and index <= U64.unpack(raw)[0]:
                return None  # replay of an entry already in the store
            txn.put("execs", U64.pack(index), payload)
            txn.put("meta", b"last_applied", U64.pack(index))
        self.applied_now.append(index)
        batch = commands_pb2.CommandBatch.FromString(payload)
        return commands_pb2.BatchResult(
            results=[
                commands_pb2.CommandResult(applied=True, error=f"{index}:{c.request_id}")
                for c in batch.commands
            ]
        ).SerializeToString()

    def last_applied(self) -> int:
        with self.kv.read() as txn:
            raw = txn.get("meta", b"last_applied")
        return 0 if raw is None else int(U64.unpack(raw)[0])

    def records(self) -> list[tuple[int, bytes]]:
        with self.kv.read() as txn:
            return [(U64.unpack(k)[0], v) for k, v in txn.scan("execs")]

    def start(self) -> None:
        self.store = LmdbKV(self.config.data_dir / "state", map_size=64 << 20)
        self.applied_now = []
        self.replicator = SyncObjReplicator(
            self.config, self.apply, self.store, applied_index=self.last_applied
        )
        self.replicator.start()

    def stop(self) -> None:
        if self.replicator is not None:
            self.replicator.stop()
            self.replicator = None
        if self.store is not None:
            self.store.close()
            self.store = None


def cluster_configs(tmp_path: Path, n: int, **overrides: object) -> list[ReplicatorConfig]:
    members = [RaftMember(f"n{i + 1}", f"127.0.0.1:{port}") for i, port in enumerate(free_ports(n))]
    return [
        ReplicatorConfig(
            self_member=m,
            peers=tuple(p for p in members if p != m),
            data_dir=tmp_path / m.node_id,
            secret=SECRET if n > 1 else None,
            **{"election_timeout_ms": 300, "heartbeat_ms": 50, **overrides},  # type: ignore[arg-type]
        )
        for m in members
    ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ToyNode]]:
    nodes = [ToyNode(c) for c in cluster_configs(tmp_path, 3, fsync=True)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


def leader_of(nodes: list[ToyNode]) -> ToyNode | None:
    running = [n for n in nodes if n.replicator is not None]
    leaders = [n for n in running if n.rep.status().is_leader]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    term = leader.rep.status().term
    # a leader whose followers all know it, at its term, and that is ready
    ok = all(
        n.rep.status().leader_id == leader.config.self_member.node_id and n.rep.status().term == term
        for n in running
    )
    return leader if ok and leader.rep.status().ready else None


async def elect(nodes: list[ToyNode]) -> ToyNode:
    await wait_until_async(lambda: leader_of(nodes) is not None, 15.0, "a leader")
    leader = leader_of(nodes)
    assert leader is not None
    return leader


def cmd(request_id: str) -> commands_pb2.Command:
    return commands_pb2.Command(request_id=request_id, stamped_at_ms=1)


async def propose_all(leader: ToyNode, ids: list[str]) -> list[list[commands_pb2.CommandResult]]:
    gc = GroupCommitter(leader.rep, timeout_s=10)
    gc.start()
    try:
        return await asyncio.gather(*(gc.submit([cmd(i)]) for i in ids))
    finally:
        await gc.close()


async def converge(nodes: list[ToyNode]) -> list[tuple[int, bytes]]:
    """Wait until every running node's store holds the same records as the leader's; return them."""
    leader = await elect(nodes)
    target = leader.rep.status().commit_index
    running = [n for n in nodes if n.replicator is not None]
    await wait_until_async(
        lambda: all(n.rep.status().applied_index >= target for n in running), 15.0, "every node applied"
    )
    records = leader.records()
    for n in running:
        assert n.records() == records, f"{n.config.self_member.node_id} diverged"
    return records


def payload_ids(records: list[tuple[int, bytes]]) -> list[str]:
    return [c.request_id for _, p in records for c in commands_pb2.CommandBatch.FromString(p).commands]


@pytest.mark.asyncio
async def test_three_nodes_apply_the_same_entries_and_a_follower_catches_up(cluster: list[ToyNode]) -> None:
    leader = await elect(cluster)
    followers = [n for n in cluster if n is not leader]
    states: list[RaftStatus] = []
    followers[0].rep.on_state_change(states.append)
    with pytest.raises(NotLeader):
        await followers[0].rep.propose(b"x", timeout_s=1)

    ids = [f"r{i}" for i in range(100)]
    results = await propose_all(leader, ids)
    for rid, res in zip(ids, results, strict=True):
        assert len(res) == 1 and res[0].error.endswith(f":{rid}")
    records = await converge(cluster)
    assert sorted(payload_ids(records)) == sorted(ids)
    for n in cluster:  # each node applied each entry exactly once, at the same index
        assert n.applied_now == [i for i, _ in records]
    # the index apply saw is the Raft log index: the leader reports it as its applied index
    assert records[-1][0] == leader.rep.status().applied_index

    lagging = followers[1]
    lagging.stop()
    more = [f"s{i}" for i in range(30)]
    await propose_all(leader, more)
    lagging.start()  # from its data dir: journal and store
    records = await converge(cluster)
    assert sorted(payload_ids(records)) == sorted(ids + more)
    # the journal replay skipped what the store already had
    before = [
        i for i, p in records if commands_pb2.CommandBatch.FromString(p).commands[0].request_id[0] == "r"
    ]
    assert not set(lagging.applied_now) & set(before)
    assert lagging.applied_now == [i for i, _ in records if i > max(before)]
    status = leader.rep.status()
    assert status.has_quorum and all(status.connected.values())

    # the leader goes away: the others elect a new one, in a higher term, and tell their callbacks
    old_term = status.term
    leader.stop()
    new_leader = await elect(cluster)
    assert new_leader.rep.status().term > old_term
    await wait_until_async(
        lambda: any(s.leader_id == new_leader.config.self_member.node_id for s in states),
        15.0,
        "a state callback",
    )
    assert any(s.term > old_term for s in states)
    await propose_all(new_leader, ["t0"])
    assert "t0" in payload_ids(await converge(cluster))


@pytest.mark.asyncio
async def test_snapshot_restart_and_snapshot_install(cluster: list[ToyNode]) -> None:
    leader = await elect(cluster)
    await propose_all(leader, [f"a{i}" for i in range(40)])
    await converge(cluster)
    for n in cluster:
        n.rep.force_snapshot()
    await wait_until_async(
        lambda: all((n.config.data_dir / "raft.snapshot").is_file() for n in cluster),
        15.0,
        "snapshots on disk",
    )
    snap_index = {
        n.config.self_member.node_id: read_snapshot_header(n.config.data_dir / "raft.snapshot")[0][1]
        for n in cluster
    }
    leader = await elect(cluster)
    await propose_all(leader, [f"b{i}" for i in range(10)])  # after the snapshot: only in the journals
    records = await converge(cluster)

    # 1. restart every node with its store intact: nothing is applied twice
    for n in cluster:
        n.stop()
    for n in cluster:
        n.start()
    assert await converge(cluster) == records
    for n in cluster:
        assert n.applied_now == [i for i, _ in records if i > records[-1][0]]  # i.e. none

    # 2. a node that lost its store: restored from its snapshot, then the journal tail re-applied
    victim = cluster[0]
    victim.stop()
    shutil.rmtree(victim.config.data_dir / "state")
    victim.start()
    assert await converge(cluster) == records
    sid = victim.config.self_member.node_id
    assert victim.applied_now == [i for i, _ in records if i > snap_index[sid]]

    # 3. a node that lost everything gets the leader's snapshot (its log was compacted past index 1)
    leader = await elect(cluster)
    blank = next(n for n in cluster if n is not leader)
    blank.stop()
    shutil.rmtree(blank.config.data_dir)
    await propose_all(leader, [f"c{i}" for i in range(5)])
    # Both live nodes compact past the new entries: whichever leads when `blank` comes back (on a loaded
    # machine leadership can move) has only a snapshot to send it for them.
    live = [n for n in cluster if n is not blank]
    await converge(live)
    for n in live:
        n.rep.force_snapshot()
    await wait_until_async(
        lambda: all(
            read_snapshot_header(n.config.data_dir / "raft.snapshot")[0][1]
            > snap_index[n.config.self_member.node_id]
            for n in live
        ),
        15.0,
        "new snapshots on both live nodes",
    )
    leader_snap = min(read_snapshot_header(n.config.data_dir / "raft.snapshot")[0][1] for n in live)
    blank.start()
    records = await converge(cluster)
    # it got the state up to the snapshot by installing it, not by applying the entries
    assert all(i > leader_snap for i in blank.applied_now)
    assert blank.last_applied() >= leader_snap
    assert sorted(payload_ids(records)) == sorted(
        [f"a{i}" for i in range(40)] + [f"b{i}" for i in range(10)] + [f"c{i}" for i in range(5)]
    )


@pytest.mark.asyncio
async def test_single_node_needs_no_secret_and_times_out_honestly(tmp_path: Path) -> None:
    (config,) = cluster_configs(tmp_path, 1)
    node = ToyNode(config)
    node.start()
    try:
        await wait_until_async(
            lambda: node.rep.status().is_leader and node.rep.status().ready, 15.0, "single-node leader"
        )
        payload = commands_pb2.CommandBatch(version=1, commands=[cmd("x")]).SerializeToString()
        result = commands_pb2.BatchResult.FromString(await node.rep.propose(payload, timeout_s=5))
        assert result.results[0].error.endswith(":x")
        assert node.records()[-1][1] == payload
        # apply blocks (on the apply thread) until released: the proposer times out with OutcomeUnknown,
        # and the entry applies nonetheless
        release = threading.Event()
        node.block_on = release
        with pytest.raises(OutcomeUnknown):
            await node.rep.propose(payload, timeout_s=0.2)
        release.set()
        await wait_until_async(lambda: len(node.records()) == 2, 15.0, "the timed-out entry applied")
        # snapshot, more entries (journal only), then restart without the store: the snapshot and the
        # journal tail (kept by pysyncobj because the snapshot's boundary entries match) rebuild it
        node.rep.force_snapshot()
        await wait_until_async((config.data_dir / "raft.snapshot").is_file, 15.0, "a snapshot")
        for i in range(5):
            one = commands_pb2.CommandBatch(version=1, commands=[cmd(f"tail{i}")]).SerializeToString()
            await node.rep.propose(one, timeout_s=5)
        records = node.records()
        node.stop()
        shutil.rmtree(config.data_dir / "state")
        node.start()
        await wait_until_async(
            lambda: node.last_applied() >= records[-1][0], 15.0, "the journal tail re-applied"
        )
        assert node.records() == records
        snap = read_snapshot_header(config.data_dir / "raft.snapshot")[0][1]
        assert node.applied_now == [i for i, _ in records if i > snap] and len(node.applied_now) == 5
    finally:
        node.stop()
    with pytest.raises(Unavailable):
        await SyncObjReplicator(config, node.apply, LmdbKV(tmp_path / "x", map_size=1 << 20)).propose(
            b"", timeout_s=1
        )


def test_multi_node_config_without_secret_is_refused(tmp_path: Path) -> None:
    config = cluster_configs(tmp_path, 3)[0]
    store = LmdbKV(tmp_path / "s", map_size=1 << 20)
    with pytest.raises(ConfigError, match="secret"):
        SyncObjReplicator(replace(config, secret=None), lambda i, p: b"", store)
    with pytest.raises(ConfigError, match="election_timeout_ms"):
        SyncObjReplicator(replace(config, heartbeat_ms=200), lambda i, p: b"", store)
    with pytest.raises(ConfigError, match="host:port"):
        SyncObjReplicator(replace(config, self_member=RaftMember("n1", "nohost")), lambda i, p: b"", store)
    store.close()


def test_every_fail_reason_is_mapped() -> None:
    expected = {
        "SUCCESS": type(None),
        "QUEUE_FULL": ResourceExhausted,
        "MISSING_LEADER": Unavailable,
        "DISCARDED": OutcomeUnknown,
        "NOT_LEADER": NotLeader,
        "LEADER_CHANGED": OutcomeUnknown,
        "REQUEST_DENIED": Unavailable,
        "UNKNOWN_OUTCOME": OutcomeUnknown,
    }
    names = fail_reason_names()
    assert set(names) == set(expected), "pysyncobj's FAIL_REASON changed: map the new reasons"
    for name, code in names.items():
        assert type(error_for_fail_reason(code)) is expected[name], name
    assert isinstance(error_for_fail_reason(999), OutcomeUnknown)


def test_snapshot_header_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    header = encode_snapshot_header((b"\x00cmd", 7, 2), (b"\x01", 6, 2), ["a:1", "b:2"])
    path.write_bytes(header + b"IMAGE")
    last, prev, cluster, offset = read_snapshot_header(path)
    assert (last, prev, cluster) == ((b"\x00cmd", 7, 2), (b"\x01", 6, 2), ["a:1", "b:2"])
    assert path.read_bytes()[offset:] == b"IMAGE"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError):
        read_snapshot_header(path)


@pytest.mark.asyncio
async def test_a_leader_whose_connections_close_is_replaced_before_the_election_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fast failover: a stopped (or killed) leader's sockets close, and the followers stand after a few
    heartbeats instead of a whole election timeout of silence (6-12 s here). What is ours is the early
    candidacy; whether its vote wins at once is pysyncobj's (a split vote falls back to the timeout)."""
    nodes = [ToyNode(c) for c in cluster_configs(tmp_path, 3, election_timeout_ms=6000, heartbeat_ms=50)]
    for node in nodes:
        node.start()
    try:
        old = await elect(nodes)
        old_term = old.rep.status().term
        caplog.set_level(logging.INFO, logger="cronraft.raft.pysyncobj_adapter")
        old.stop()
        rest = [n for n in nodes if n is not old]

        def stood() -> bool:
            return any(n.rep.status().term > old_term for n in rest)

        def replaced() -> bool:
            new = leader_of(rest)
            return new is not None and new.rep.status().term > old_term

        await wait_until_async(stood, 20, "a candidate")
        # The fast path is a decision, asserted as such (how soon the Raft thread then acts depends on
        # the machine's load): a follower saw the leader's connection close and brought its election
        # forward to 3 heartbeats + at most a quarter election timeout (1.65 s), not the 6-12 s of
        # silence of the normal path.
        forward = [r for r in caplog.records if r.getMessage().startswith("connection to the leader")]
        assert forward, "no follower brought its election forward when the leader's connection closed"
        delays = [float(r.args[1]) for r in forward]  # type: ignore[index]  # (leader, delay_s)
        assert all(0.15 <= d <= 1.65 for d in delays), delays
        # Then a leader, at once or, after a split vote (a lost first vote, docs/benchmarks.md), later.
        await wait_until_async(replaced, 30, "a new leader")
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.asyncio
async def test_a_proposal_that_applies_after_its_timeout_is_told_to_late(tmp_path: Path) -> None:
    """The real replicator: a proposal times out (OutcomeUnknown) while apply is stalled; when the entry
    applies later, `late` gets apply's result (the leader runner observes a client's command so)."""
    (config,) = cluster_configs(tmp_path, 1)
    node = ToyNode(config)
    node.start()
    try:
        await wait_until_async(
            lambda: node.rep.status().is_leader and node.rep.status().ready, 15.0, "single-node leader"
        )
        payload = commands_pb2.CommandBatch(version=1, commands=[cmd("late")]).SerializeToString()
        told: list[bytes | None] = []
        heard = asyncio.Event()

        def late(raw: bytes | None) -> None:
            told.append(raw)
            heard.set()

        release = threading.Event()
        node.block_on = release
        with pytest.raises(OutcomeUnknown):
            await node.rep.propose(payload, timeout_s=0.2, late=late)
        assert told == []
        release.set()
        await asyncio.wait_for(heard.wait(), 15)
        (raw,) = told
        assert raw is not None
        assert commands_pb2.BatchResult.FromString(raw).results[0].error.endswith(":late")
        # Without `late`, a timed-out proposal is forgotten as before (nothing more is told).
        await node.rep.propose(payload, timeout_s=5)
        assert len(told) == 1
    finally:
        if node.block_on is not None:
            node.block_on.set()
        node.stop()
