"""The replicator's apply thread: a slow `apply` must not stall Raft (heartbeats, votes, commits).

Before the apply thread, `apply` ran on pysyncobj's tick thread: applying a burst of large entries kept
heartbeats unanswered for as long, and followers started elections in the middle of a fire burst. Here
every node's `apply` is held for several election timeouts; the leader and the term must not change,
proposals keep committing (the log advances on every node), and each entry is applied once, in order.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.pysyncobj_adapter import MAX_MESSAGE_BYTES
from cronraft.raft.replicator import RaftMember, ReplicatorConfig
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from tests.support.ports import free_ports
from tests.support.wait import wait_until_async

U64 = struct.Struct(">Q")
ELECTION_MS = 300


class _Node:
    def __init__(self, config: ReplicatorConfig) -> None:
        self.config = config
        self.store = LmdbKV(config.data_dir / "state", map_size=16 << 20)
        self.gate = threading.Event()
        self.gate.set()
        self.applied: list[int] = []
        self.threads: set[str] = set()
        self.rep = SyncObjReplicator(config, self.apply, self.store, applied_index=self.last_applied)

    def apply(self, index: int, payload: bytes) -> bytes | None:
        assert self.gate.wait(30)
        self.threads.add(threading.current_thread().name)
        with self.store.write() as txn:
            raw = txn.get("meta", b"last_applied")
            if raw is not None and index <= U64.unpack(raw)[0]:
                return None
            txn.put("meta", b"last_applied", U64.pack(index))
        self.applied.append(index)
        batch = commands_pb2.CommandBatch.FromString(payload)
        return commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True, error=str(index)) for _ in batch.commands]
        ).SerializeToString()

    def last_applied(self) -> int:
        with self.store.read() as txn:
            raw = txn.get("meta", b"last_applied")
        return 0 if raw is None else int(U64.unpack(raw)[0])


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[_Node]]:
    members = [RaftMember(f"n{i + 1}", f"127.0.0.1:{p}") for i, p in enumerate(free_ports(3))]
    out = [
        _Node(
            ReplicatorConfig(
                self_member=m,
                peers=tuple(p for p in members if p != m),
                data_dir=tmp_path / m.node_id,
                secret="apply-thread-test",
                election_timeout_ms=ELECTION_MS,
                heartbeat_ms=50,
            )
        )
        for m in members
    ]
    for n in out:
        n.rep.start()
    yield out
    for n in out:
        n.gate.set()
        n.rep.stop()
        n.store.close()


def _leader(nodes: list[_Node]) -> _Node | None:
    leaders = [n for n in nodes if n.rep.status().is_leader]
    if len(leaders) != 1:
        return None
    me = leaders[0].rep.status().node_id
    ok = all(n.rep.status().leader_id == me for n in nodes) and leaders[0].rep.status().ready
    return leaders[0] if ok else None


def _payload(i: int) -> bytes:
    cmd = commands_pb2.Command(request_id=f"r{i}", stamped_at_ms=1)
    return commands_pb2.CommandBatch(version=1, commands=[cmd]).SerializeToString()


@pytest.mark.asyncio
async def test_a_slow_apply_does_not_stall_raft(nodes: list[_Node]) -> None:
    await wait_until_async(lambda: _leader(nodes), 15.0, "a leader")
    leader = _leader(nodes)
    assert leader is not None
    term = leader.rep.status().term
    first = await leader.rep.propose(_payload(0), timeout_s=5)
    assert commands_pb2.BatchResult.FromString(first).results[0].applied

    for n in nodes:  # every state machine stalls, for many election timeouts
        n.gate.clear()
    proposals = [asyncio.create_task(leader.rep.propose(_payload(i), timeout_s=30)) for i in range(1, 6)]
    commit0 = leader.rep.status().commit_index
    await wait_until_async(
        lambda: leader.rep.status().commit_index >= commit0 + 5, 15.0, "the entries to commit"
    )
    await asyncio.sleep(8 * ELECTION_MS / 1000)
    for n in nodes:  # nobody started an election meanwhile: heartbeats kept flowing
        st = n.rep.status()
        assert st.term == term and st.leader_id == leader.rep.status().node_id
    # Not applied yet, and the status says so (the store's index, not pysyncobj's counter).
    assert not any(p.done() for p in proposals)
    assert leader.rep.status().applied_index < leader.rep.status().commit_index

    for n in nodes:
        n.gate.set()
    results = await asyncio.gather(*proposals)
    indexes = [int(commands_pb2.BatchResult.FromString(r).results[0].error) for r in results]
    assert indexes == sorted(indexes)  # answered with their own entry's result, in log order
    target = leader.rep.status().commit_index
    await wait_until_async(
        lambda: all(n.rep.status().applied_index >= target for n in nodes), 15.0, "every node to apply"
    )
    for n in nodes:
        assert n.applied == sorted(set(n.applied))  # each entry once, in order
        assert n.threads == {"raft-apply"}  # never on pysyncobj's tick thread
        running = n.rep.threads()  # what the benchmarks account CPU by
        assert running["apply"].name == "raft-apply" and running["raft"].is_alive()
        assert running["raft"] is not running["apply"]


def test_an_entry_always_travels_in_one_append_entries_message() -> None:
    # pysyncobj splits an entry larger than appendEntriesBatchSizeBytes into "transmission" chunks, a
    # path that lost chunks under load; the largest entry the group committer builds stays well below.
    default = inspect.signature(GroupCommitter).parameters["max_bytes"].default
    assert 2 * default <= MAX_MESSAGE_BYTES
