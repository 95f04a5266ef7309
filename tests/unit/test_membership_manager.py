"""daemon.membership's MembershipManager over a real state machine and a scripted replicator: a learner is
promoted once its addition began; the leader waits for the joining node to catch up before the Raft
configuration takes it, then finishes the change; a leader to be removed hands leadership over; a voter
dropped from the list, or told so by a member, leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cronraft.daemon.config.model import Member
from cronraft.daemon.datadir import JOINING, MEMBER, REMOVED, Claim
from cronraft.daemon.http.readiness import evaluate
from cronraft.daemon.membership import MembershipManager, initial_role
from cronraft.errors import FailedPrecondition
from cronraft.proto.v1 import cluster_pb2, commands_pb2, membership_pb2
from cronraft.raft.codec import encode_batch
from cronraft.raft.commands.membership import read_membership
from cronraft.raft.kv import MemKV
from cronraft.raft.replicator import RaftMember, RaftStatus
from cronraft.raft.state import StateMachine

Change = membership_pb2.MembershipChange


def m(n: int) -> Member:
    return Member(f"node{n}", f"10.0.0.{n}:50051", f"10.0.0.{n}:7001")


def cm(n: int) -> membership_pb2.ClusterMember:
    x = m(n)
    return membership_pb2.ClusterMember(
        node_id=x.id, grpc_address=x.grpc_address, raft_address=x.raft_address
    )


class FakeReplicator:
    """The configuration as a set of Raft addresses; what the manager asked of it."""

    def __init__(self, me: Member, role: str, voters: set[str]) -> None:
        self.me, self.role, self.config = me, role, voters
        self.leader: str | None = "node1"
        self.leader_connected = True  # False: it names a leader it has no connection to (a stale id)
        self.calls: list[str] = []
        self.refuse: str | None = None

    def status(self) -> RaftStatus:
        connected = {self.leader: self.leader_connected} if self.leader is not None else {}
        return RaftStatus(
            self.me.id, self.leader == self.me.id, self.leader, 1, 0, 0, connected, role=self.role
        )

    def voters(self) -> frozenset[str]:
        return frozenset(self.config)

    async def change_voters(self, member: RaftMember, *, add: bool, timeout_s: float) -> None:
        self.calls.append(f"{'add' if add else 'remove'} {member.node_id}")
        if self.refuse:
            raise FailedPrecondition(self.refuse)
        (self.config.add if add else self.config.discard)(member.raft_address)

    def set_members(self, members: tuple[RaftMember, ...]) -> None:
        self.calls.append("set_members " + ",".join(x.node_id for x in members))

    def promote(self, peers: tuple[RaftMember, ...]) -> None:
        self.calls.append("promote " + ",".join(p.node_id for p in peers))
        self.role = "voter"

    def leave(self) -> None:
        self.calls.append("leave")
        self.role = "removed"

    async def transfer_leadership(self, target: str | None) -> bool:
        self.calls.append("transfer")
        return True


class Rig:
    def __init__(self, me: Member, *, state: str = MEMBER, role: str = "voter") -> None:
        self.sm = StateMachine(MemKV())
        self.index = 0
        self.rep = FakeReplicator(me, role, {m(i).raft_address for i in (1, 2, 3)})
        self.records: list[tuple[list[str], int, str]] = []
        self.answers: dict[str, cluster_pb2.ClockResponse | Exception] = {}
        self.seen: list[tuple[str, ...]] = []
        self.manager = MembershipManager(
            me=me,
            claim=Claim((m(1), m(2), m(3)), state, 0, None if state == JOINING else FOUNDERS),
            kv=self.sm.kv,
            replicator=self.rep,
            on_members=lambda members: self.seen.append(tuple(x.id for x in members)),
            record=self.record,
            transport=None,  # type: ignore[arg-type]  (probe given)
            election_timeout_ms=10,
            propose=self.propose,
            leading=lambda: self.rep.leader == me.id,
            now_ms=lambda: 1_000,
            probe=self.probe,
        )

    def record(self, members: Sequence[Member], version: int, state: str, founders: Sequence[Member]) -> None:
        self.records.append(([x.id for x in members], version, state))

    async def probe(self, address: str) -> cluster_pb2.ClockResponse:
        answer = self.answers.get(address, ConnectionError("down"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def propose(self, cmds: list[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    async def begin(self, kind: int, member: membership_pb2.ClusterMember) -> commands_pb2.CommandResult:
        cmd = commands_pb2.Command(stamped_at_ms=1_000)
        cmd.change_membership.step = membership_pb2.ChangeMembership.BEGIN
        cmd.change_membership.change.kind = kind  # type: ignore[assignment]
        cmd.change_membership.change.member.CopyFrom(member)
        cmd.change_membership.base.extend(self.manager.base())
        cmd.change_membership.founders.extend(self.manager.founders())
        (res,) = await self.propose([cmd])
        return res

    def stored(self) -> membership_pb2.Membership:
        with self.sm.kv.read() as txn:
            got = read_membership(txn)
        assert got is not None
        return got


FOUNDERS = tuple(sorted((m(i).id, m(i).raft_address) for i in (1, 2, 3)))


def voter_answer(node_id: str, applied: int, role: str = "voter") -> cluster_pb2.ClockResponse:
    return cluster_pb2.ClockResponse(node_id=node_id, applied_index=applied, role=role)


@pytest.mark.asyncio
async def test_the_leader_adds_a_node_once_it_caught_up_then_finishes() -> None:
    rig = Rig(m(1))
    rig.manager.refresh()
    assert rig.manager.members() == (m(1), m(2), m(3)) and rig.manager.stored() is None
    res = await rig.begin(Change.ADD, cm(4))
    assert res.applied, res.error
    rig.manager.refresh()
    assert rig.seen[-1] == ("node1", "node2", "node3", "node4")
    assert rig.manager.role_of("node4") == "joining"
    began = rig.stored().pending.began_index

    await rig.manager.drive()  # node4 does not answer
    assert "waiting for node4 to answer at 10.0.0.4:50051" in rig.manager.progress
    rig.answers[m(4).grpc_address] = voter_answer("node4", began - 1, role="learner")
    await rig.manager.drive()
    assert rig.manager.progress.startswith(f"waiting for node4 to catch up: applied {began - 1} of {began}")
    rig.answers[m(4).grpc_address] = voter_answer("node4", 0)  # a voter that never applied it: no --join
    await rig.manager.drive()
    assert "start it with `schedd --join`" in rig.manager.progress
    assert not [c for c in rig.rep.calls if c.startswith("add")]

    rig.answers[m(4).grpc_address] = voter_answer("node4", began)
    rig.rep.refuse = "the Raft configuration refused to add 10.0.0.4:7001"
    await rig.manager.drive()  # refused this time (say, the term's first entry not applied): again later
    assert "trying again" in rig.manager.progress and not rig.stored().members[3:]
    rig.rep.refuse = None
    await rig.manager.drive()
    assert rig.rep.calls[-2:] == ["add node4", "set_members node1,node2,node3,node4"]
    st = rig.stored()
    assert [x.node_id for x in st.members] == ["node1", "node2", "node3", "node4"] and not st.HasField(
        "pending"
    )
    assert rig.manager.progress == "" and rig.manager.role_of("node4") == "voter"
    assert rig.records[-1] == (["node1", "node2", "node3", "node4"], 2, MEMBER)

    # A leader that finds the configuration already changed (its predecessor did it) only finishes.
    await rig.begin(Change.REMOVE, cm(3))
    rig.manager.refresh()
    rig.rep.config.discard(m(3).raft_address)
    await rig.manager.drive()
    assert not [c for c in rig.rep.calls if c.startswith("remove")]
    assert [x.node_id for x in rig.stored().members] == ["node1", "node2", "node4"]


@pytest.mark.asyncio
async def test_a_leader_to_be_removed_hands_leadership_over_first() -> None:
    rig = Rig(m(1))
    await rig.begin(Change.REMOVE, cm(1))
    rig.manager.refresh()
    await rig.manager.drive()
    assert rig.rep.calls[-1] == "transfer" and "handing leadership" in rig.manager.progress
    assert not [c for c in rig.rep.calls if c.startswith("remove")]


@pytest.mark.asyncio
async def test_a_learner_is_promoted_when_its_addition_began_and_records_its_states() -> None:
    me = m(4)
    claim = Claim((m(1), m(2), m(3), me), JOINING, 0)
    assert initial_role(claim, None, me) == (True, False)
    rig = Rig(me, state=JOINING, role="learner")
    assert rig.manager.role_of("node4") == "joining"  # a learner before its addition began
    await rig.begin(Change.ADD, cm(4))
    assert initial_role(claim, rig.stored(), me) == (False, True)  # a restart now: a voter, held
    rig.manager.refresh()
    assert "promote node1,node2,node3" in rig.rep.calls
    assert rig.records[-1] == (["node1", "node2", "node3"], 1, JOINING)
    finish = commands_pb2.Command(stamped_at_ms=1_000)
    finish.change_membership.step = membership_pb2.ChangeMembership.FINISH
    finish.change_membership.change.CopyFrom(rig.stored().pending)
    await rig.propose([finish])
    rig.manager.refresh()
    assert rig.records[-1] == (["node1", "node2", "node3", "node4"], 2, MEMBER)


@pytest.mark.asyncio
async def test_a_voter_dropped_from_the_list_leaves() -> None:
    rig = Rig(m(3))
    await rig.begin(Change.REMOVE, cm(3))
    rig.manager.refresh()
    assert rig.manager.role_of("node3") == "leaving" and "leave" not in rig.rep.calls  # still a voter
    finish = commands_pb2.Command(stamped_at_ms=1_000)
    finish.change_membership.step = membership_pb2.ChangeMembership.FINISH
    finish.change_membership.change.CopyFrom(rig.stored().pending)
    await rig.propose([finish])
    rig.manager.refresh()
    assert rig.rep.calls[-1] == "leave" and rig.manager.removed
    assert rig.records[-1][2] == REMOVED and rig.manager.role_of("node3") == REMOVED


@pytest.mark.asyncio
async def test_a_leaderless_voter_asks_the_members_and_leaves_when_told_it_was_removed() -> None:
    rig = Rig(m(3))
    rig.rep.leader = None
    stale = cluster_pb2.ClockResponse(node_id="node1", prober_membership="member", membership_version=0)
    rig.answers = {m(1).grpc_address: stale}  # node2 does not answer
    await rig.manager._ask_if_removed()  # starts the clock
    await rig.manager._ask_if_removed()
    assert not rig.manager.removed
    await asyncio.sleep(0.05)  # three election timeouts of 10 ms
    await rig.manager._ask_if_removed()
    assert not rig.manager.removed  # "member": nothing to do
    told = cluster_pb2.ClockResponse(node_id="node1", prober_membership="not_member", membership_version=4)
    rig.answers[m(1).grpc_address] = told
    rig.manager._last_ask = 0.0
    await rig.manager._ask_if_removed()
    assert rig.manager.removed and rig.rep.calls[-1] == "leave" and rig.records[-1][2] == REMOVED


@pytest.mark.asyncio
async def test_a_voter_naming_a_leader_it_is_not_connected_to_asks_too() -> None:
    """A removed ex-leader that handed leadership over can keep the new leader's id while no longer
    connected to it (seen in test_membership: it never learnt it was removed)."""
    rig = Rig(m(3))
    rig.rep.leader_connected = False
    rig.answers = {
        m(1).grpc_address: cluster_pb2.ClockResponse(
            node_id="node1", prober_membership="not_member", membership_version=4
        )
    }
    await rig.manager._ask_if_removed()  # starts the clock
    await asyncio.sleep(0.05)  # three election timeouts of 10 ms
    await rig.manager._ask_if_removed()
    assert rig.manager.removed and rig.rep.calls[-1] == "leave"
    # Connected to the leader it names: it heard from one, and asks nobody.
    rig = Rig(m(3))
    rig.answers = {
        m(1).grpc_address: cluster_pb2.ClockResponse(prober_membership="not_member", membership_version=4)
    }
    await rig.manager._ask_if_removed()
    await asyncio.sleep(0.05)
    await rig.manager._ask_if_removed()
    assert not rig.manager.removed


@pytest.mark.asyncio
async def test_a_restored_stores_list_of_another_configuration_is_not_taken_for_this_ones() -> None:
    """`schedd restore` into new machines keeps the backup's member list in the store: this node is not in
    it, yet it was not removed; the list is ignored, and the next change starts from this one's."""
    rig = Rig(m(1))
    foreign = commands_pb2.Command(stamped_at_ms=1)
    foreign.change_membership.step = membership_pb2.ChangeMembership.BEGIN
    foreign.change_membership.change.kind = Change.REMOVE
    foreign.change_membership.change.member.CopyFrom(cm(9))
    foreign.change_membership.base.extend([cm(7), cm(8), cm(9)])
    await rig.propose([foreign])  # what the backup's store held
    rig.manager.refresh()
    assert rig.manager.stored() is None and not rig.manager.removed and "leave" not in rig.rep.calls
    assert rig.manager.members() == (m(1), m(2), m(3))
    res = await rig.begin(Change.ADD, cm(4))  # the first change here starts from this cluster's list
    assert res.applied, res.error
    rig.manager.refresh()
    assert rig.manager.members() == (m(1), m(2), m(3), m(4)) and rig.stored().version == 2


def test_a_learner_and_a_removed_node_are_not_ready() -> None:
    def status(role: str) -> RaftStatus:
        return RaftStatus(
            "node4", False, "node1", 3, 10, 10, {"node1": True}, ready=True, has_quorum=True, role=role
        )

    assert evaluate(status("voter"), applied_index=10).ready
    learner = evaluate(status("learner"), applied_index=10)
    assert list(learner.failed) == ["member"] and "a learner" in learner.failed["member"]
    assert evaluate(status("removed"), applied_index=10).failed == {
        "member": "removed: not a member of the cluster"
    }
