"""The cluster's feature level (raft/features.py, raft/commands/features.py; docs/operations.md, "Upgrades"):
what the leader may raise and when, a fresh store against one an older release wrote, RaiseFeatures, and
apply behaving as the older release for a feature not in force yet (results, statistics)."""

from __future__ import annotations

import pytest

from cronraft.errors import FailedPrecondition
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft.codec import id_bytes
from cronraft.raft.features import RESULTS, STATS, SUPPORTED, raisable
from cronraft.raft.records import read_result
from cronraft.raft.state import read_execution, read_task
from tests.unit.statelog import T0, Command, Log, create, eid, epoch, run, spec, tid


def raise_cmd(*names: str) -> Command:
    return Command(stamped_at_ms=T0, raise_features=commands_pb2.RaiseFeatures(features=list(names)))


def old_store() -> Log:
    """A store as the release before the gate left it: entries applied, no feature level recorded."""
    log = Log()
    log.ok(epoch())
    with log.sm.kv.write() as txn:
        txn.delete("meta", features.META_FEATURES)
    return log


def level(log: Log) -> frozenset[str]:
    with log.sm.kv.read() as txn:
        return features.level(txn)


# ----------------------------------------------------------------------------------------- the gate


def test_raised_only_what_every_member_supports() -> None:
    own = {"a", "b"}
    assert raisable(set(), own, {"n2": {"a", "b"}, "n3": {"a", "b", "c"}}) == (frozenset(own), "")
    got, why = raisable(set(), own, {"n2": {"a", "b"}, "n3": {"a"}})
    assert got == {"a"} and why == "n3 does not support b"
    # An older release announces nothing: nothing is raised, and the reason names it.
    assert raisable(set(), own, {"n2": set(), "n3": {"a", "b"}}) == (frozenset(), "n2 does not support a, b")


def test_a_member_without_a_recent_answer_holds_every_feature_back() -> None:
    got, why = raisable(set(), {"a"}, {"n2": {"a"}, "n3": None})
    assert got == frozenset() and why == "n3 has not answered lately"


def test_nothing_to_raise_once_in_force() -> None:
    assert raisable({"a", "b"}, {"a", "b"}, {"n2": None}) == (frozenset(), "")
    # A node rolled back below the level: what is in force that it lacks.
    assert features.unsupported({"a", "x"}, {"a"}) == {"x"}


# ----------------------------------------------------------------------------------------- the store


def test_a_fresh_store_uses_every_feature_of_its_build() -> None:
    log = Log()
    log.ok(epoch())
    assert level(log) == SUPPORTED


def test_a_nodes_store_takes_its_level_from_the_log_alone() -> None:
    """A node's state machine starts with no feature: a fresh node replaying a log an older release began
    applies it as that release did; a new cluster's first leader raises the level in its epoch's entry."""
    from cronraft.raft.codec import encode_batch
    from cronraft.raft.kv import MemKV
    from cronraft.raft.state import StateMachine

    replaying = Log(MemKV())
    replaying.sm = StateMachine(replaying.sm.kv, fresh_features=frozenset())
    replaying.ok(epoch())  # an older leader's first entry
    assert level(replaying) == frozenset()
    new = StateMachine(MemKV(), fresh_features=frozenset())
    raw = new.apply_entry(1, encode_batch([epoch(), raise_cmd(*SUPPORTED)]))
    assert raw is not None
    with new.kv.read() as txn:
        assert features.level(txn) == SUPPORTED


def test_a_store_an_older_release_wrote_has_none_until_raised_and_never_lowered() -> None:
    log = old_store()
    assert level(log) == frozenset()
    with log.sm.kv.read() as txn, pytest.raises(FailedPrecondition, match="'stats'"):
        features.require(txn, STATS, "GetTaskStats")
    log.ok(raise_cmd(RESULTS))
    assert level(log) == {RESULTS}
    log.ok(raise_cmd(STATS, "from_a_newer_release"))  # kept as well: the set is the log's
    assert level(log) == {RESULTS, STATS, "from_a_newer_release"}
    log.ok(raise_cmd(RESULTS))
    assert level(log) == {RESULTS, STATS, "from_a_newer_release"}
    with log.sm.kv.read() as txn:
        features.require(txn, STATS, "GetTaskStats")


@pytest.mark.parametrize("names", [[], ["Bad-Name"], [""]])
def test_a_malformed_raise_is_refused_and_changes_nothing(names: list[str]) -> None:
    log = old_store()
    res = log.one(Command(stamped_at_ms=T0, raise_features=commands_pb2.RaiseFeatures(features=names)))
    assert not res.applied and res.error_code == "invalid_argument"
    assert level(log) == frozenset()


# ------------------------------------------------------------------------ apply as the older release


def test_results_and_statistics_wait_for_their_features() -> None:
    """Below the gate a Complete's result is neither kept nor refused and nothing is counted, as the
    release before them applied it; from the RaiseFeatures entry on, both are."""
    log = old_store()
    log.ok(create(tid(1), spec("r")))
    run(log, tid(1), eid(1), T0, result=b"x" * 5000)
    with log.sm.kv.read() as txn:
        ex = read_execution(txn, eid(1))
        task = read_task(txn, tid(1))
        assert read_result(txn, id_bytes(eid(1))) is None
        assert txn.count("task_stats_hours") == txn.count("cluster_stats") == 0
    assert ex is not None and ex.result_size == 0 and ex.state == common_pb2.EXECUTION_SUCCEEDED
    assert task is not None and task.outcomes.runs == 0 and not task.last_outcome

    log.ok(raise_cmd(RESULTS, STATS))
    run(log, tid(1), eid(2), T0 + 10_000, result=b"kept")
    with log.sm.kv.read() as txn:
        ex = read_execution(txn, eid(2))
        task = read_task(txn, tid(1))
        assert read_result(txn, id_bytes(eid(2))) == b"kept"
    assert ex is not None and ex.result_size == 4
    assert task is not None and task.outcomes.runs == 1 and task.last_execution_id == eid(2)


# ------------------------------------------------------------------------- announced in clock probes


def test_members_announce_their_features_and_the_watch_tells_what_may_be_raised() -> None:
    from cronraft.daemon.versioncheck import VersionWatch
    from cronraft.proto.v1 import cluster_pb2

    now = [0.0]
    watch = VersionWatch(
        node_id="n1", own={"tzdata": "x"}, peers=["n2", "n3"], max_age_s=5, mono=lambda: now[0]
    )
    assert set(watch.message().features) == SUPPORTED
    assert watch.raisable(frozenset()) == (
        frozenset(),
        "n2 has not answered lately; n3 has not answered lately",
    )
    new = cluster_pb2.ScheduleVersions(measured=True, versions={"tzdata": "x"}, features=sorted(SUPPORTED))
    old = cluster_pb2.ScheduleVersions(measured=True, versions={"tzdata": "x"})  # the release before the gate
    watch.note_peer("n2", new)
    watch.note_peer("n3", old)
    got, why = watch.raisable(frozenset())
    assert got == frozenset() and why.startswith("n3 does not support ")
    assert watch.features_waiting(frozenset()).endswith(why)
    assert watch.peer_message("n3").features == [] and set(watch.peer_message("n2").features) == SUPPORTED
    watch.note_peer("n3", new)
    assert watch.raisable(frozenset()) == (SUPPORTED, "")
    assert watch.features_waiting(SUPPORTED) == ""
    assert "lacks from_a_newer_release" in watch.features_waiting(SUPPORTED | {"from_a_newer_release"})
    now[0] = 6.0  # n2 and n3 silent since: nothing may be raised until they answer again
    assert watch.raisable(frozenset({RESULTS}))[0] == frozenset()


# ----------------------------------------------------------------------------- what the leader emits


@pytest.mark.parametrize("gate", [False, True])
def test_the_leader_proposes_results_only_once_the_cluster_keeps_them(gate: bool) -> None:
    """Below the gate a Complete carries neither the worker's result nor the leader's bound, as the release
    before results proposed it; from the gate on, both."""
    from tests.unit.leader_rig import T0 as RIG_T0
    from tests.unit.leader_rig import LeaderRig

    rig = LeaderRig()
    if not gate:
        with rig.kv.write() as txn:
            txn.delete("meta", features.META_FEATURES)
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=RIG_T0 + 1_000)))
    rig.run(2)
    (lease,) = rig.core.leases.values()
    result = common_pb2.AttemptResult(
        execution_id=lease.execution_id,
        token=common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]),
        outcome=common_pb2.ATTEMPT_SUCCEEDED,
        result=b"42",
    )
    (cmd,) = rig.core.results("w1", [result], rig.now)
    assert cmd.complete.result.result == (b"42" if gate else b"")
    assert cmd.HasField("limits") == gate
    (res,) = rig.apply([cmd])
    assert res.applied and res.execution.result_size == (2 if gate else 0)


# --------------------------------------------------------------------- refused through the API before


def test_requests_needing_a_feature_are_refused_naming_it_until_the_cluster_has_it() -> None:
    """On a store an older release wrote, the RPCs that read what only the new features keep answer
    FAILED_PRECONDITION naming the feature (not an empty or partial answer that differs by node); once
    RaiseFeatures applied, they answer."""
    import grpc
    from test_namespace_api import ALICE, RITA, Aborted, World, run

    from cronraft.proto.v1 import scheduler_pb2 as S

    async def body(w: World) -> None:
        with w.node.kv.write() as txn:
            txn.delete("meta", features.META_FEATURES)
        task, execution = w.ids["team-a"]["task"], w.ids["team-a"]["exec"]
        calls = [
            (ALICE, "GetExecutionResult", S.GetExecutionResultRequest(execution_id=execution), RESULTS),
            (ALICE, "GetTaskStats", S.GetTaskStatsRequest(task_id=task), STATS),
            (RITA, "GetClusterStats", S.GetClusterStatsRequest(), STATS),
            (
                ALICE,
                "ListTasks",
                S.ListTasksRequest(namespace="team-a", last_outcomes=[common_pb2.EXECUTION_SUCCEEDED]),
                STATS,
            ),
        ]
        for who, method, request, feature in calls:
            with pytest.raises(Aborted) as err:
                await w.call(who, method, request)
            assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, method
            assert f"needs the cluster feature {feature!r}" in str(err.value), method
        (res,) = await w.node.propose([raise_cmd(RESULTS, STATS)])
        assert res.applied
        for who, method, request, _ in calls:
            await w.call(who, method, request)

    run(body)


def test_a_member_rolled_back_below_the_level_is_named() -> None:
    from cronraft.daemon.versioncheck import VersionWatch
    from cronraft.proto.v1 import cluster_pb2

    watch = VersionWatch(node_id="n1", own={}, peers=["n2"], max_age_s=5, mono=lambda: 0.0)
    watch.note_peer("n2", cluster_pb2.ScheduleVersions(measured=True, features=[RESULTS]))
    assert watch.behind(SUPPORTED).startswith("n2 lacks ")
    assert "stats" in watch.features_waiting(
        SUPPORTED
    ) and "run this release there" in watch.features_waiting(SUPPORTED)
    assert watch.behind(frozenset({RESULTS})) == ""


def test_a_membership_change_waits_for_its_feature() -> None:
    """AddNode and RemoveNode are refused, before anything is proposed, until every member's release
    can apply a ChangeMembership (a release before it records it as an unknown command)."""
    import asyncio

    from cronraft.daemon.services.membership import MembershipMethods
    from cronraft.proto.v1 import membership_pb2

    log = old_store()

    class Node:
        kv = log.sm.kv

        def leader_runner(self) -> None:
            return None

        async def writer(self) -> None:
            return None

        async def propose(self, cmds: object) -> object:
            raise AssertionError("nothing is proposed below the gate")

    methods = MembershipMethods()
    methods.node = Node()  # type: ignore[assignment]
    member = membership_pb2.ClusterMember(node_id="node4", grpc_address="h:1", raft_address="h:2")
    change = membership_pb2.MembershipChange.ADD
    with pytest.raises(FailedPrecondition, match="add-node needs the cluster feature 'membership'"):
        asyncio.run(methods._begin(change, member, "", "add-node"))
