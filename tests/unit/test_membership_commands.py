"""ChangeMembership in the state machine (raft/commands/membership.py): one change in flight at a time,
BEGIN then FINISH, the first change taking the leader's list, refusals that change nothing."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, membership_pb2
from cronraft.raft.commands.membership import read_membership
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine
from tests.unit.test_state import Log

Change = membership_pb2.MembershipChange
Step = membership_pb2.ChangeMembership
T0 = 1_767_225_600_000


def member(n: int) -> membership_pb2.ClusterMember:
    return membership_pb2.ClusterMember(
        node_id=f"node{n}", grpc_address=f"10.0.0.{n}:50051", raft_address=f"10.0.0.{n}:7001"
    )


BASE = [member(1), member(2), member(3)]


def begin(kind: int, m: membership_pb2.ClusterMember, base: bool = True) -> commands_pb2.Command:
    cmd = commands_pb2.Command(stamped_at_ms=T0)
    cmd.change_membership.step = Step.BEGIN
    cmd.change_membership.change.kind = kind  # type: ignore[assignment]
    cmd.change_membership.change.member.CopyFrom(m)
    if base:
        cmd.change_membership.base.extend(BASE)
    return cmd


def finish(pending: membership_pb2.MembershipChange) -> commands_pb2.Command:
    cmd = commands_pb2.Command(stamped_at_ms=T0)
    cmd.change_membership.step = Step.FINISH
    cmd.change_membership.change.CopyFrom(pending)
    return cmd


def stored(log: Log) -> membership_pb2.Membership:
    with log.sm.kv.read() as txn:
        got = read_membership(txn)
    assert got is not None
    return got


def ids(m: membership_pb2.Membership) -> list[str]:
    return [x.node_id for x in m.members]


def test_an_addition_begins_then_finishes_and_the_first_change_takes_the_leaders_list() -> None:
    log = Log(StateMachine(MemKV()))
    with log.sm.kv.read() as txn:
        assert read_membership(txn) is None
    (res,) = log.apply(begin(Change.ADD, member(4)))
    assert res.applied and not res.error_code
    m = stored(log)
    assert ids(m) == ["node1", "node2", "node3"] and m.version == 1 and list(m.founders) == BASE
    assert m.pending.kind == Change.ADD and m.pending.member == member(4)
    assert m.pending.began_index == log.index and m.pending.began_at_ms == T0
    (res,) = log.apply(finish(m.pending))
    assert res.applied, res.error
    m = stored(log)
    assert ids(m) == ["node1", "node2", "node3", "node4"] and not m.HasField("pending") and m.version == 2
    assert list(m.founders) == BASE


def test_a_second_change_is_refused_while_one_is_in_flight_and_changes_nothing() -> None:
    log = Log()
    log.apply(begin(Change.ADD, member(4)))
    before = stored(log)
    (res,) = log.apply(begin(Change.ADD, member(5)))
    assert not res.applied and res.error_code == "invalid_state"
    assert "a membership change is in flight (adding node4" in res.error
    (res,) = log.apply(begin(Change.REMOVE, member(2)))
    assert res.error_code == "invalid_state"
    assert stored(log) == before


def test_removing_an_addition_in_flight_replaces_it() -> None:
    """The way out of an addition whose node never comes: remove-node of the same id."""
    log = Log()
    log.apply(begin(Change.ADD, member(4)))
    (res,) = log.apply(begin(Change.REMOVE, membership_pb2.ClusterMember(node_id="node4")))
    assert res.applied, res.error
    m = stored(log)
    assert m.pending.kind == Change.REMOVE and m.pending.member == member(4)
    log.apply(finish(m.pending))
    assert ids(stored(log)) == ["node1", "node2", "node3"]


def test_refusals_name_the_problem() -> None:
    log = Log()
    cases = [
        (begin(Change.ADD, member(2)), "already_exists", "node2 is already a member"),
        (
            begin(Change.ADD, membership_pb2.ClusterMember(
                node_id="node9", grpc_address="10.0.0.9:1", raft_address="10.0.0.1:7001")),
            "already_exists",
            "10.0.0.1:7001 is the raft_address of member node1",
        ),
        (begin(Change.ADD, membership_pb2.ClusterMember(node_id="bad id")), "invalid_argument", "node_id:"),
        (
            begin(Change.ADD, membership_pb2.ClusterMember(
                node_id="node9", grpc_address="nohost", raft_address="10.0.0.9:7001")),
            "invalid_argument",
            "grpc_address: 'nohost': expected host:port",
        ),
        (begin(Change.REMOVE, member(7)), "not_found", "node7 is not a member"),
        (begin(Change.ADD, member(4), base=False), "invalid_state", "no member list is stored"),
        (finish(Change(kind=Change.ADD, member=member(4), began_index=1)), "invalid_state", "no member list"),
    ]  # fmt: skip
    for cmd, code, text in cases:
        (res,) = log.apply(cmd)
        assert (res.applied, res.error_code) == (False, code), (text, res)
        assert text in res.error
    with log.sm.kv.read() as txn:
        assert read_membership(txn) is None


def test_the_last_member_cannot_be_removed_and_removals_finish() -> None:
    log = Log()
    for n in (3, 2):
        log.apply(begin(Change.REMOVE, member(n)))
        (res,) = log.apply(finish(stored(log).pending))
        assert res.applied, res.error
    assert ids(stored(log)) == ["node1"]
    (res,) = log.apply(begin(Change.REMOVE, member(1)))
    assert res.error_code == "invalid_state" and "the last member" in res.error


def test_a_stale_finish_after_a_newer_change_began_is_refused() -> None:
    log = Log()
    log.apply(begin(Change.ADD, member(4)))
    first = stored(log).pending
    log.apply(finish(first))
    log.apply(begin(Change.REMOVE, member(4)))
    (res,) = log.apply(finish(first))  # a retried FINISH of the addition
    assert res.error_code == "invalid_state" and "no such membership change in flight" in res.error
    assert stored(log).pending.kind == Change.REMOVE


def test_a_store_restored_into_another_configuration_starts_its_first_change_from_the_leaders_list() -> None:
    """`schedd restore` keeps the backup's store, member list included: a BEGIN whose leader records other
    founders starts from its own list (the version goes on counting)."""
    log = Log()
    log.apply(begin(Change.ADD, member(4)))
    log.apply(finish(stored(log).pending))
    assert stored(log).version == 2
    restored = [member(7), member(8), member(9)]
    cmd = begin(Change.REMOVE, member(9), base=False)
    cmd.change_membership.base.extend(restored)
    cmd.change_membership.founders.extend(restored)
    (res,) = log.apply(cmd)
    assert res.applied, res.error
    m = stored(log)
    assert ids(m) == ["node7", "node8", "node9"] and list(m.founders) == restored and m.version == 3
    same = begin(Change.REMOVE, member(8), base=False)  # founders as stored: the stored list goes on
    same.change_membership.founders.extend(restored)
    (res,) = log.apply(same)
    assert res.error_code == "invalid_state" and "in flight (removing node9" in res.error
