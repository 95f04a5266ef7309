"""The outcomes of the Fires and Completes the leader core made are handled from what it knows of them
(LeaderCore.made, issue 16), not from the commands read back: the same leases, offers, acks, slots and
wheel as the long way, and nothing left behind once the outcomes are known."""

from __future__ import annotations

import dataclasses
import itertools

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import make_id
from tests.support.native import pure_python_only
from tests.unit.leader_rig import T0, LeaderRig

Command = commands_pb2.Command


def _rig(*, read_back: bool) -> LeaderRig:
    """A rig whose ids are the same from run to run; `read_back`: its core forgets what it made before
    each outcome (the long way: every command read back)."""
    rig = LeaderRig()
    counter = itertools.count()
    rig.core._new_id = lambda ms: make_id(ms, next(counter).to_bytes(10, "big"))
    rig.core.worker_connected("w1", 3, ["default"], {}, rig.mono, incarnation="w1-a")
    rig.core.worker_connected("w2", 3, ["default"], {}, rig.mono, incarnation="w2-a")
    if read_back:
        on_committed = rig.core.on_committed

        def forgetting(*args, **kwargs):  # type: ignore[no-untyped-def]
            rig.core.made.clear()
            return on_committed(*args, **kwargs)

        rig.core.on_committed = forgetting  # type: ignore[method-assign]
    for i in range(8):
        spec = common_pb2.TaskSpec(
            name=f"t{i}",
            schedule=common_pb2.Schedule(
                fixed_rate=common_pb2.FixedRateSchedule(period_ms=1000, anchor_ms=T0 + 100 * i)
            ),
            payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
            queue="default",
            max_attempts=3,
        )
        task_id = make_id(T0, i.to_bytes(10, "big"))
        cmd = Command(stamped_at_ms=rig.now, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec))
        (res,) = rig.apply([cmd])
        assert res.applied, res.error
        rig.core.on_committed([cmd], [res], rig.now, rig.mono)
    return rig


def _state(rig: LeaderRig) -> tuple:  # type: ignore[type-arg]
    core = rig.core
    leases = sorted(dataclasses.astuple(lease) for lease in core.leases.values())
    slots = sorted((w.worker_id, sorted(w.inflight)) for w in core.workers.values())
    wheel = sorted((k, core.wheel.deadline_of(k)) for k in core.planner.firing | set(core.leases))
    return leases, slots, wheel, sorted(core.granting.items()), sorted(core.completing.items())


def _step(rig: LeaderRig, outcome: int) -> list[object]:
    """One tick committed, then every offer written answered by its worker (failed on odd `outcome`s,
    so that some attempts are retried), committed: the messages for the workers, serialized, and the
    core's state after each commit."""
    out: list[object] = []
    cmds = rig.core.tick(rig.now, rig.mono)
    if cmds:
        rig.proposed.extend(cmds)
        rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    out.append(_state(rig))
    for worker_id, msg in rig.core.drain_outgoing():
        out.append(worker_id.encode() + msg.SerializeToString())
        if msg.WhichOneof("kind") != "leases":
            continue
        results = []
        for lease in msg.leases.leases:
            rig.core.offered(lease.execution_id, lease.token, None)
            results.append(
                common_pb2.AttemptResult(
                    execution_id=lease.execution_id,
                    token=lease.token,
                    outcome=common_pb2.ATTEMPT_FAILED if outcome % 2 else common_pb2.ATTEMPT_SUCCEEDED,
                    started_at_ms=rig.now,
                    finished_at_ms=rig.now,
                )
            )
        done = rig.core.results(worker_id, results, rig.now)
        if done:
            rig.proposed.extend(done)
            rig.core.on_committed(done, rig.apply(done), rig.now, rig.mono)
        out.append(_state(rig))
    out.extend(worker_id.encode() + msg.SerializeToString() for worker_id, msg in rig.core.drain_outgoing())
    rig.now += 50
    rig.mono += 50
    return out


@pure_python_only  # patches a method of the (compiled) core
def test_outcomes_from_what_the_core_made_are_those_of_the_commands_read_back() -> None:
    quick, long = _rig(read_back=False), _rig(read_back=True)
    for n in range(160):
        sent = _step(quick, n // 20)
        assert sent == _step(long, n // 20), f"step {n}"
    assert quick.count("fire") > 40 and quick.count("complete") > 40
    assert quick.core.made == {}  # every outcome known: nothing kept


def test_a_failed_proposal_forgets_what_the_core_made() -> None:
    rig = _rig(read_back=False)
    for _ in range(100):
        cmds = rig.core.tick(rig.now, rig.mono)
        if cmds:
            break
        rig.now += 10
        rig.mono += 10
    assert cmds and all(id(c) in rig.core.made for c in cmds if c.WhichOneof("body") == "fire")
    rig.core.on_proposal_failed(cmds, rig.mono)
    assert rig.core.made == {}
