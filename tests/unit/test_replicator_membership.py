"""Membership of the pysyncobj replicator (raft.replicator `Reconfigurable`), on a real cluster on loopback in
this process: a learner catches up (from a snapshot) without voting, is promoted in place, added to the
configuration, and a member is removed; what pysyncobj refuses comes back as FailedPrecondition."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cronraft.errors import FailedPrecondition, NotLeader
from cronraft.raft.replicator import RaftMember
from tests.support.ports import free_ports
from tests.support.wait import wait_until_async
from tests.unit.test_replicator import ToyNode, cluster_configs, converge, elect, propose_all


def address(node: ToyNode) -> str:
    return node.config.self_member.raft_address


@pytest.mark.asyncio
async def test_a_learner_catches_up_is_promoted_added_and_a_member_removed(tmp_path: Path) -> None:
    configs = cluster_configs(tmp_path, 3)
    nodes = [ToyNode(c) for c in configs]
    for n in nodes:
        n.start()
    joining: ToyNode | None = None
    try:
        leader = await elect(nodes)
        await propose_all(leader, [f"a{i}" for i in range(30)])
        await converge(nodes)
        for n in nodes:  # the learner gets a snapshot, not the journal from its start
            n.rep.force_snapshot()
        await propose_all(leader, [f"b{i}" for i in range(10)])
        founders = frozenset(address(n) for n in nodes)
        assert leader.rep.voters() == founders

        # A learner: pysyncobj's read-only node; it receives everything, counts for nothing.
        members = tuple(n.config.self_member for n in nodes)
        me = RaftMember("n4", f"127.0.0.1:{free_ports(1)[0]}")
        joining = ToyNode(
            replace(configs[0], self_member=me, peers=members, data_dir=tmp_path / "n4", learner=True)
        )
        joining.start()
        target = leader.rep.status().commit_index
        await wait_until_async(
            lambda: joining.rep.status().applied_index >= target, 15, "the learner caught up"
        )
        assert joining.records() == leader.records()
        assert (tmp_path / "n4" / "raft.snapshot").is_file()  # installed from the leader's snapshot
        st = joining.rep.status()
        assert (st.role, st.is_leader, joining.rep.voters()) == ("learner", False, founders)
        assert leader.rep.voters() == founders  # not a voter: the configuration is unchanged

        # Promoted: a voter on the same journal, outside the configuration until added; it stands for
        # no election meanwhile, so its term stays the leader's.
        term = leader.rep.status().term
        joining.rep.promote(members)
        assert joining.rep.status().role == "voter"
        await propose_all(leader, ["c0"])
        assert joining.rep.status().term <= term and not joining.rep.status().is_leader

        await leader.rep.change_voters(me, add=True, timeout_s=10)
        four = founders | {me.raft_address}
        everyone = [*nodes, joining]
        await wait_until_async(
            lambda: all(n.rep.voters() == four for n in everyone), 10, "every node has the new configuration"
        )
        await propose_all(leader, [f"d{i}" for i in range(10)])
        records = await converge(everyone)
        assert len(records) == len(leader.records())
        assert leader.rep.status().term == term  # no election came of it

        # Refusals: adding a voter it has; removing the leader itself (transfer leadership first);
        # a change asked of a follower.
        with pytest.raises(FailedPrecondition, match="refused to add"):
            await leader.rep.change_voters(me, add=True, timeout_s=10)
        with pytest.raises(FailedPrecondition, match="refused to remove"):
            await leader.rep.change_voters(leader.config.self_member, add=False, timeout_s=10)
        follower = next(n for n in nodes if n is not leader)
        with pytest.raises(NotLeader):
            await follower.rep.change_voters(me, add=False, timeout_s=10)

        # A follower removed: the others go on, it stops for good.
        await leader.rep.change_voters(follower.config.self_member, add=False, timeout_s=10)
        follower.rep.leave()
        assert follower.rep.status().role == "removed" and follower.rep.voters() == frozenset()
        rest = [n for n in everyone if n is not follower]
        three = four - {address(follower)}
        await wait_until_async(
            lambda: all(n.rep.voters() == three for n in rest), 10, "the removal everywhere"
        )
        await propose_all(leader, [f"e{i}" for i in range(10)])
        await converge(rest)
        assert leader.rep.status().term == term
    finally:
        for n in [*nodes, *([joining] if joining is not None else [])]:
            n.stop()
