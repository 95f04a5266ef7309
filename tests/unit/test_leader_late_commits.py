"""The leader's own commands that apply after it gave up on them (LEADER_PROPOSAL_TIMEOUT_S; the
replicator tells the late outcome: `LeaderCore.on_late_committed`): a Fire's lease, which only the store
then knows, is adopted and offered, instead of waiting, unoffered and unexpired, for the next leader."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import state as sm
from tests.unit.test_fire_ahead import DUE, LEAD, Store, leader_over


def _leases_offered(outgoing: list[tuple[str, worker_pb2.GatewayMessage]]) -> list[str]:
    return [
        lease.execution_id
        for _, m in outgoing
        if m.WhichOneof("kind") == "leases"
        for lease in m.leases.leases
    ]


def test_a_fire_that_applies_after_the_leader_gave_up_on_it_is_leased_and_offered() -> None:
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    cmds = core.tick(DUE - LEAD, 1)
    (fire,) = [c.fire for c in cmds if c.HasField("fire") and c.fire.HasField("grant")]
    core.on_proposal_failed(cmds, 2)  # the proposal timed out: not committed, as far as the store says
    assert fire.execution_id not in core.keeper.leases
    core.drain_outgoing()

    results = s.apply(cmds)  # ... and then the entry commits and applies, in this term
    with s.kv.read() as txn:
        stored = sm.read_execution(txn, fire.execution_id)
    assert stored is not None and stored.state == common_pb2.EXECUTION_RUNNING
    core.on_late_committed(cmds, results, 3)
    assert fire.execution_id in core.keeper.leases  # with a deadline: it expires if nobody runs it
    assert _leases_offered(core.drain_outgoing()) == [fire.execution_id]

    # Told again (or found by the core meanwhile): adopted once, offered once.
    core.on_late_committed(cmds, results, 4)
    assert _leases_offered(core.drain_outgoing()) == []


def test_a_late_outcome_of_commands_that_did_not_apply_changes_nothing() -> None:
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    cmds = core.tick(DUE - LEAD, 1)
    core.on_proposal_failed(cmds, 2)
    core.drain_outgoing()
    refused = [commands_pb2.CommandResult(applied=False, error="not due") for _ in cmds]
    core.on_late_committed(cmds, refused, 3)
    assert not core.keeper.leases and not core.drain_outgoing()


def test_a_lease_adopted_late_keeps_the_cancel_asked_for_it_meanwhile() -> None:
    """A client cancelled the execution between the Fire's commit and the leader's late outcome: the
    cancel's own outcome found no lease to cancel (the core did not know it yet). The adopted lease keeps
    the pending cancel (LeaseKeeper.cancelling), so the worker's next stream gets the CancelAttempt, as
    a new leader's adopted leases do (LeaderCore.adopt_lease); without it the payload ran on."""
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    cmds = core.tick(DUE - LEAD, 1)
    (fire,) = [c.fire for c in cmds if c.HasField("fire") and c.fire.HasField("grant")]
    core.on_proposal_failed(cmds, 2)
    results = s.apply(cmds)
    cancel = commands_pb2.Command(
        stamped_at_ms=DUE,
        cancel_execution=commands_pb2.CancelExecution(execution_id=fire.execution_id, reason="stop it"),
    )
    (done,) = s.apply([cancel])
    assert done.applied and [c.execution_id for c in done.cancels] == [fire.execution_id]
    core.on_committed([cancel], [done], DUE, 3)
    assert fire.execution_id not in core.keeper.cancelling  # no lease known yet: nothing to remember
    core.on_late_committed(cmds, results, 4)
    assert fire.execution_id in core.keeper.leases
    assert fire.execution_id in core.keeper.cancelling
