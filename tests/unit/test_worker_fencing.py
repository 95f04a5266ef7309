"""A worker acts only as itself and only on its own leases (issue 13): the Hello's id is the principal's
name; the leader proposes a result, stores output and renews a lease only for the worker holding it.
Real processes: tests/integration/test_security_workers.py."""

from __future__ import annotations

from leader_rig import T0, LeaderRig

from cronraft.daemon.security.authz import ANONYMOUS, Principal
from cronraft.daemon.wire import worker_identity_problem
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.tokenfile import ALL_NAMESPACES


def _worker(name: str) -> Principal:
    return Principal(name, {ALL_NAMESPACES: frozenset({"worker"})}, "token")


def test_a_worker_connects_under_its_principal_name_only() -> None:
    assert worker_identity_problem(worker_pb2.Hello(worker_id="w1"), _worker("w1")) == ""
    problem = worker_identity_problem(worker_pb2.Hello(worker_id="w2"), _worker("w1"))
    assert problem.startswith("hello.worker_id: 'w2' is not this stream's principal 'w1'")
    assert "--id w1" in problem
    # Several processes with one credential: each an instance of it, none another principal's.
    assert worker_identity_problem(worker_pb2.Hello(worker_id="w1#pod-7f9c"), _worker("w1")) == ""
    for forged in ("w2#pod-7f9c", "w1#", "w1#a#b", "w11#x", "w#1"):
        assert worker_identity_problem(worker_pb2.Hello(worker_id=forged), _worker("w1")), forged
    # Authentication off (the loopback single node): any id, as before.
    assert worker_identity_problem(worker_pb2.Hello(worker_id="w2"), ANONYMOUS) == ""


def _running(rig: LeaderRig) -> tuple[str, common_pb2.FencingToken]:
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    rig.core.worker_connected("w2", 4, ["default"], {}, rig.mono)
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 500)))
    rig.run(1)
    (lease,) = rig.core.leases.values()
    rig.core.drain_outgoing()
    return lease.execution_id, common_pb2.FencingToken(term=lease.token[0], index=lease.token[1])


def _other(holder: str) -> str:
    return "w2" if holder == "w1" else "w1"


def test_a_result_for_another_workers_lease_is_refused_and_never_proposed() -> None:
    rig = LeaderRig()
    execution_id, token = _running(rig)
    holder = rig.core.leases[execution_id].worker_id
    thief = _other(holder)
    forged = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_FAILED, exit_code=9
    )
    assert rig.core.results(thief, [forged], rig.now) == []
    (refusal,) = rig.core.refusals
    assert (refusal.worker_id, refusal.holder, refusal.kind) == (thief, holder, "result")
    assert f"held by worker {holder!r}, not {thief!r}" in refusal.message()
    assert not rig.core.drain_outgoing()  # not acknowledged either: nothing tells the thief it "worked"
    assert execution_id in rig.core.leases
    # The holder's own result goes through.
    rig.core.refusals.clear()
    real = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    cmds = rig.core.results(holder, [real], rig.now)
    assert [c.WhichOneof("body") for c in cmds] == ["complete"]
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert not rig.core.refusals and execution_id not in rig.core.leases


def test_a_stale_result_is_acknowledged_without_a_proposal() -> None:
    rig = LeaderRig()
    execution_id, token = _running(rig)
    holder = rig.core.leases[execution_id].worker_id
    old = common_pb2.FencingToken(term=token.term, index=token.index - 1)  # an earlier lease's token
    stale = common_pb2.AttemptResult(execution_id=execution_id, token=old, outcome=common_pb2.ATTEMPT_FAILED)
    assert rig.core.results(_other(holder), [stale], rig.now) == []
    assert not rig.core.refusals  # stale, not forged: the other worker may have run an older attempt
    ((to, msg),) = rig.core.drain_outgoing()
    assert to == _other(holder) and list(msg.acks.execution_ids) == [execution_id]
    gone = common_pb2.AttemptResult(execution_id="0" * 26, token=token, outcome=common_pb2.ATTEMPT_FAILED)
    assert rig.core.results(holder, [gone], rig.now) == []  # no such lease at all
    assert [list(m.acks.execution_ids) for _, m in rig.core.drain_outgoing()] == [["0" * 26]]


def test_output_and_renewals_are_checked_the_same_way() -> None:
    rig = LeaderRig()
    execution_id, token = _running(rig)
    holder = rig.core.leases[execution_id].worker_id
    thief = _other(holder)
    key = (token.term, token.index)
    assert rig.core.lease_check(holder, execution_id, key, "output") == ""
    assert rig.core.lease_check(thief, execution_id, key, "output") == "forged"
    assert rig.core.lease_check(thief, execution_id, (token.term, token.index - 1), "output") == "stale"
    assert rig.core.lease_check(thief, "not-an-id", key, "output") == "stale"
    ack = rig.core.heartbeat(thief, [worker_pb2.LeaseRef(execution_id=execution_id, token=token)], rig.mono)
    assert list(ack.revoked) == [execution_id] and not ack.renewed
    assert [(r.kind, r.worker_id) for r in rig.core.refusals] == [("output", thief), ("renewal", thief)]
    ack = rig.core.heartbeat(holder, [worker_pb2.LeaseRef(execution_id=execution_id, token=token)], rig.mono)
    assert list(ack.renewed) == [execution_id]
    # Output may trail its result: once the lease is released, the store says who held it.
    real = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    cmds = rig.core.results(holder, [real], rig.now)
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert execution_id not in rig.core.leases
    rig.core.refusals.clear()
    assert rig.core.lease_check(holder, execution_id, key, "output") == ""
    assert rig.core.lease_check(thief, execution_id, key, "output") == "forged"


def test_results_before_the_epoch_commits_wait_for_the_lease_table() -> None:
    rig = LeaderRig()
    execution_id, token = _running(rig)
    holder = rig.core.leases[execution_id].worker_id
    rig.core.ready = False  # a new leader whose Epoch has not committed yet: the lease table is not loaded
    forged = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_FAILED
    )
    real = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    assert rig.core.results(_other(holder), [forged], rig.now) == []
    assert rig.core.results(holder, [real], rig.now) == []
    rig.core.ready = True
    cmds = rig.core.tick(rig.now, rig.mono)
    completes = [c.complete for c in cmds if c.WhichOneof("body") == "complete"]
    assert [c.result.outcome for c in completes] == [common_pb2.ATTEMPT_SUCCEEDED]
    assert [r.worker_id for r in rig.core.refusals] == [_other(holder)]


def test_with_authentication_off_a_worker_id_is_a_claim_and_only_the_token_is_checked() -> None:
    """As before issue 13: a worker restarted under another id with its predecessor's outbox still
    reports its predecessor's results (the state machine checks the token)."""
    rig = LeaderRig()
    execution_id, token = _running(rig)
    other = _other(rig.core.leases[execution_id].worker_id)
    result = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    cmds = rig.core.results(other, [result], rig.now, bound=False)
    assert [c.WhichOneof("body") for c in cmds] == ["complete"] and not rig.core.refusals
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert execution_id not in rig.core.leases


def test_with_authentication_off_output_is_checked_by_its_token_alone() -> None:
    """A worker id is only a claim without authentication: any worker may send output for a lease it says
    it holds, but output bearing no execution's current token is dropped before it is proposed (S12: a
    stream of 1 MiB chunks for executions that do not exist slowed the log to an entry a second)."""
    rig = LeaderRig()
    execution_id, token = _running(rig)
    holder = rig.core.leases[execution_id].worker_id
    key = (token.term, token.index)
    assert rig.core.token_check(execution_id, key) == ""
    assert rig.core.token_check(execution_id, (token.term, token.index - 1)) == "stale"
    assert rig.core.token_check("0" * 26, key) == "stale"  # no such execution
    assert rig.core.token_check("not-an-id", key) == "stale"
    assert not rig.core.refusals  # nothing is forged where ids are claims
    # Once the lease is released, the stored execution's token still admits the output that trails it.
    real = common_pb2.AttemptResult(
        execution_id=execution_id, token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    cmds = rig.core.results(holder, [real], rig.now)
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert execution_id not in rig.core.leases
    assert rig.core.token_check(execution_id, key) == ""
    assert rig.core.token_check(execution_id, (token.term + 1, token.index)) == "stale"
