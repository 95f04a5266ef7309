"""The leader's per-execution shortcuts (issue 16): a Grant's offer built from the task its Fire's result
carries (no read of the stored task), schedule plans skipped for commands the core knows need none, and
committed batches flagged when they may hold notification events. Each gives what the long way gives."""

from __future__ import annotations

from cronraft.daemon.leader import outcomes
from cronraft.daemon.leader_runner import new_id
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import leaderplan
from cronraft.raft.codec import id_bytes, make_id
from tests.support.grants import granted_executions, grants_in
from tests.support.native import pure_python_only
from tests.unit.leader_rig import T0, LeaderRig

Command = commands_pb2.Command


def _rig() -> LeaderRig:
    rig = LeaderRig()
    rig.core.worker_connected("w1", 100, ["default"], {}, rig.mono)
    return rig


def _at(ms: int) -> common_pb2.Schedule:
    return common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=ms))


def _cron() -> common_pb2.Schedule:
    return common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *", time_zone="UTC"))


def _tick_and_commit(rig: LeaderRig) -> tuple[list[Command], list[commands_pb2.CommandResult]]:
    """Tick until something is proposed; commit it; return it with its results."""
    for _ in range(20_000):
        cmds = rig.core.tick(rig.now, rig.mono)
        if cmds:
            results = rig.apply(cmds)
            rig.core.on_committed(cmds, results, rig.now, rig.mono)
            return cmds, results
        rig.now += 10
        rig.mono += 10
    raise AssertionError("nothing was proposed")


def _offers(rig: LeaderRig) -> list:
    return [
        lease
        for _, msg in rig.core.drain_outgoing()
        if msg.WhichOneof("kind") == "leases"
        for lease in msg.leases.leases
    ]


@pure_python_only  # patches a method of the (compiled) core
def test_offer_built_from_the_fire_result_is_the_offer_read_from_the_store() -> None:
    rig = _rig()
    rig.create(_at(T0 + 1_000))
    reads: list[str] = []
    read_task = rig.core.read_task
    rig.core.read_task = lambda task_id: reads.append(task_id) or read_task(task_id)  # type: ignore[method-assign]
    cmds, results = _tick_and_commit(rig)
    assert [c.WhichOneof("body") for c in cmds] == ["fire"] and len(grants_in(cmds)) == 1  # it carries it
    (offer,) = _offers(rig)
    grant_res = results[0]
    assert reads.count(grant_res.execution.task_id) == 1  # the tick's read for the Fire; none for the offer
    # The store's task gives the same offer (the long way, as before).
    assert offer == outcomes._lease_offer(rig.core, grant_res.execution)
    assert offer.payload.command.argv == ["true"] and offer.task_name == "t"


def test_plans_skipped_only_where_the_core_knows_none_is_needed() -> None:
    rig = _rig()
    one_time = rig.create(_at(T0 + 1_000))
    _, results = _tick_and_commit(rig)
    core = rig.core
    ex = results[0].execution  # the Fire's, which leased it (feature "fire_grant")
    assert ex.state == common_pb2.EXECUTION_RUNNING
    result = common_pb2.AttemptResult(
        execution_id=ex.execution_id, token=ex.token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    (complete,) = core.results("w1", [result], rig.now)
    # A one-time task asks nothing version-dependent when its execution ends: its Complete gets no plan
    # while no UpdateTask was seen since the grant.
    assert core.needing_plans([complete]) == []
    update = Command(
        stamped_at_ms=rig.now,
        update_task=commands_pb2.UpdateTask(task_id=one_time, spec=common_pb2.TaskSpec(name="t2")),
    )
    assert core.needing_plans([update]) == [update]
    assert core.needing_plans([complete]) == [complete]  # an update was prepared: the long way again


def test_a_cron_fire_and_its_grant_get_plans() -> None:
    rig = _rig()
    rig.create(_cron())
    for _ in range(20_000):
        cmds = rig.core.tick(rig.now, rig.mono)
        if cmds:
            break
        rig.now += 10
        rig.mono += 10
    assert [c.WhichOneof("body") for c in cmds] == ["fire"] and len(grants_in(cmds)) == 1
    # Its Fire asks version-dependent questions (leaderplan gives it a plan): not skipped.
    assert rig.core.needing_plans(cmds) == cmds
    with rig.kv.read() as txn:
        assert leaderplan.attach(txn, cmds[0])


def test_the_tick_marks_are_consumed_by_one_proposal() -> None:
    rig = _rig()
    rig.create(_at(T0 + 1_000))
    for _ in range(20_000):
        cmds = rig.core.tick(rig.now, rig.mono)
        if cmds:
            break
        rig.now += 10
        rig.mono += 10
    assert rig.core.needing_plans(cmds) == []
    # A second look (a retried proposal) takes the long way: nothing is known about them any more.
    assert rig.core.needing_plans(cmds) == cmds


def test_committed_batches_are_flagged_when_they_may_notify() -> None:
    rig = _rig()
    rig.create(_at(T0 + 1_000))
    rig.create(_at(T0 + 1_000))
    cmds, results = _tick_and_commit(rig)
    leased = set(granted_executions(cmds, results))
    grants = [r.execution for r in results if r.execution.execution_id in leased]
    assert len(grants) == 2
    ok, bad = (
        common_pb2.AttemptResult(execution_id=ex.execution_id, token=ex.token, outcome=outcome)
        for ex, outcome in zip(grants, [common_pb2.ATTEMPT_SUCCEEDED, common_pb2.ATTEMPT_FAILED], strict=True)
    )
    done = rig.core.results("w1", [ok], rig.now)
    assert rig.core.on_committed(done, rig.apply(done), rig.now, rig.mono) is False
    failed = rig.core.results("w1", [bad], rig.now)
    res = rig.apply(failed)
    # Attempt 1 of 3 failed: a retry waits (no event yet); the flag may say "look" only when it could.
    states = [ex.state for ex in res[0].executions]
    flagged = rig.core.on_committed(failed, res, rig.now, rig.mono)
    assert flagged == any(s == common_pb2.EXECUTION_FAILED for s in states)


def test_new_id_is_make_ids_format() -> None:
    """The leader's ids (faster than raft.codec.make_id) are make_id's: the millisecond in the first 48
    bits, 80 random bits after; all distinct, every random digit in use."""
    start = T0 + 123
    ids = [new_id(start + i // 300) for i in range(3_000)]
    assert len(set(ids)) == len(ids)
    for i, text in enumerate(ids):
        raw = id_bytes(text)
        assert int.from_bytes(raw[:6], "big") == start + i // 300
        assert make_id(start + i // 300, raw[6:]) == text
    assert {c for text in ids for c in text[10:]} == set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert new_id((1 << 48) - 1).startswith("7ZZZZZZZZZ")
