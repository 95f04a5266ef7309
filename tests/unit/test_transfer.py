"""`SyncObjReplicator.transfer_leadership`: a real 3-node pysyncobj cluster on loopback, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.raft.replicator import RaftMember, ReplicatorConfig
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from tests.support.ports import free_ports
from tests.support.wait import wait_until_async


@pytest.fixture
def replicators(tmp_path: Path) -> Iterator[list[SyncObjReplicator]]:
    members = [RaftMember(f"n{i + 1}", f"127.0.0.1:{p}") for i, p in enumerate(free_ports(3))]
    stores, reps = [], []
    for m in members:
        store = LmdbKV(tmp_path / m.node_id / "state", map_size=16 << 20)
        cfg = ReplicatorConfig(
            self_member=m,
            peers=tuple(p for p in members if p != m),
            data_dir=tmp_path / m.node_id,
            secret="transfer-test",
            election_timeout_ms=300,
            heartbeat_ms=50,
        )
        rep = SyncObjReplicator(cfg, lambda _i, _p: b"", store)
        rep.start()
        stores.append(store)
        reps.append(rep)
    yield reps
    for rep in reps:
        rep.stop()
    for store in stores:
        store.close()


def _leader(reps: list[SyncObjReplicator]) -> SyncObjReplicator | None:
    leaders = [r for r in reps if r.status().is_leader]
    if len(leaders) != 1:
        return None
    lead = leaders[0]
    me = lead.status().node_id
    return lead if all(r.status().leader_id == me for r in reps) and lead.status().ready else None


@pytest.mark.asyncio
async def test_transfer_to_a_named_follower(replicators: list[SyncObjReplicator]) -> None:
    await wait_until_async(lambda: _leader(replicators), 15.0, "a leader")
    leader = _leader(replicators)
    assert leader is not None
    follower = next(r for r in replicators if r is not leader)
    target = follower.status().node_id
    term = leader.status().term

    assert await follower.transfer_leadership(None) is False  # only a leader can hand over
    assert await leader.transfer_leadership("nobody") is False  # unknown member
    # The target must be fully caught up; right after an election it is, once a heartbeat went round.
    sent = False
    for _ in range(50):
        if await leader.transfer_leadership(target):
            sent = True
            break
        await asyncio.sleep(0.05)
    assert sent
    await wait_until_async(
        lambda: (lead := _leader(replicators)) is follower and lead, 15.0, "the target to lead"
    )
    assert follower.status().term > term
    assert not leader.status().is_leader
