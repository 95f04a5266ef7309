"""A cancel of a running attempt reaches its worker also when the leader that committed it could not tell
the worker: the CancelAttempt is sent only by the leader core that sees the command commit
(outcomes.on_committed, from the result's `cancels`), to the worker's stream at that moment. A leader
killed before it sent it, or a worker between two streams then (every worker reconnects after a failover),
left the payload running to its own end: a cancelled run went on, and under cancel_other the new fire
waited for it (tests/integration/test_failover_semantics.py). A new leader, and a worker's new stream,
now get the cancel of every running execution whose cancel was asked for.
"""

from __future__ import annotations

from cronraft.daemon.leader import LeaderCore
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import make_id
from tests.unit.leader_rig import T0, LeaderRig

Command = commands_pb2.Command


def _running(rig: LeaderRig) -> common_pb2.Execution:
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono, incarnation="i1")
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)))
    rig.run(1.2)
    with rig.kv.read() as txn:
        (ex,) = sm.running_executions(txn)
    rig.core.drain_outgoing()
    return ex


def _cancels(core: LeaderCore) -> list[tuple[str, worker_pb2.CancelAttempt]]:
    return [(w, m.cancel) for w, m in core.drain_outgoing() if m.WhichOneof("kind") == "cancel"]


def _ref(ex: common_pb2.Execution) -> worker_pb2.LeaseRef:
    return worker_pb2.LeaseRef(execution_id=ex.execution_id, token=ex.token)


def _cancel_committed_unseen(rig: LeaderRig, ex: common_pb2.Execution) -> None:
    """The cancel commits; the leader core never handles its outcome (it was killed first)."""
    cancel = Command(
        stamped_at_ms=rig.now,
        cancel_execution=commands_pb2.CancelExecution(execution_id=ex.execution_id, reason="stop it"),
    )
    (res,) = rig.apply([cancel])
    assert res.applied and [c.execution_id for c in res.cancels] == [ex.execution_id], res


def _new_leader(rig: LeaderRig, term: int = 2) -> LeaderCore:
    core = LeaderCore(
        rig.kv,
        rig.core.settings,
        node_id="n2",
        term=term,
        new_id=lambda ms: make_id(ms, b"\x02" * 10),
    )
    rig.apply([core.epoch_command(rig.now)])
    core.on_epoch_committed(rig.now, rig.mono)
    return core


def test_a_new_leader_sends_a_cancel_its_predecessor_committed_but_never_sent() -> None:
    rig = LeaderRig()
    ex = _running(rig)
    _cancel_committed_unseen(rig, ex)
    core = _new_leader(rig)
    core.worker_connected("w1", 4, ["default"], {}, rig.mono, incarnation="i1")
    ack = core.heartbeat("w1", [_ref(ex)], rig.mono, complete_listing=True)
    assert list(ack.renewed) == [ex.execution_id]
    cancels = _cancels(core)
    assert [(w, c.execution_id, (c.token.term, c.token.index)) for w, c in cancels] == [
        ("w1", ex.execution_id, (ex.token.term, ex.token.index))
    ]
    # Once per stream: the next heartbeat on the same stream sends nothing again.
    core.heartbeat("w1", [_ref(ex)], rig.mono + 500)
    assert _cancels(core) == []


def test_a_worker_that_reconnects_gets_a_cancel_sent_while_it_had_no_stream() -> None:
    rig = LeaderRig()
    ex = _running(rig)
    rig.core.worker_disconnected("w1")
    cancel = Command(
        stamped_at_ms=rig.now,
        cancel_execution=commands_pb2.CancelExecution(execution_id=ex.execution_id, reason="stop it"),
    )
    (res,) = rig.apply([cancel])
    rig.core.on_committed([cancel], [res], rig.now, rig.mono)
    # Queued for a worker without a stream: the driver drops it (leader_runner._flush).
    rig.core.drain_outgoing()
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono, incarnation="i1")
    rig.core.heartbeat("w1", [_ref(ex)], rig.mono, complete_listing=True)
    assert [c.execution_id for _, c in _cancels(rig.core)] == [ex.execution_id]


def test_nothing_is_sent_for_a_running_execution_nobody_cancelled() -> None:
    rig = LeaderRig()
    ex = _running(rig)
    core = _new_leader(rig)
    core.worker_connected("w1", 4, ["default"], {}, rig.mono, incarnation="i1")
    core.heartbeat("w1", [_ref(ex)], rig.mono, complete_listing=True)
    assert _cancels(core) == []
