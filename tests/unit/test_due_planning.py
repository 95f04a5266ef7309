"""The leader's wheel holds a task at its due time (jitter or a calendar roll moved from the nominal time),
as the due index does: not at its nominal time (the leader spun from the nominal time to the due time,
a whole day for a roll to the next day, and starved its other work on a real cluster)."""

from __future__ import annotations

from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader.planner import FirePlanner
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import id_bytes, make_id
from cronraft.raft.records import get_task
from cronraft.raft.schedule import jitter_offset_ms
from tests.unit.leader_rig import STEP_MS, T0, LeaderRig

PERIOD, JITTER = 10_000, 4_000


def _jittered_task_id(nominal: int) -> str:
    """A task id whose fire at `nominal` is delayed by at least half the jitter (deterministic)."""
    for i in range(256):
        task_id = make_id(T0, bytes([i]) * 10)
        if jitter_offset_ms(task_id, nominal, JITTER) >= JITTER // 2:
            return task_id
    raise AssertionError("no id with a large offset")


def test_a_jittered_fire_waits_for_its_due_time_without_spinning() -> None:
    rig = LeaderRig()
    # The leader has loaded its horizon: the new task reaches the wheel from the CreateTask's result.
    assert rig.core.tick(rig.now, rig.mono) == []
    nominal = T0 + 5_000  # the anchor: the first nominal time
    task_id = _jittered_task_id(nominal)
    sched = common_pb2.Schedule(
        fixed_rate=common_pb2.FixedRateSchedule(period_ms=PERIOD, anchor_ms=nominal), jitter_ms=JITTER
    )
    spec = common_pb2.TaskSpec(
        name="jittered",
        schedule=sched,
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        queue="default",
    )
    cmd = commands_pb2.Command(
        stamped_at_ms=rig.now, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec)
    )
    (res,) = rig.apply([cmd])
    assert res.applied, res.error
    rig.core.on_committed([cmd], [res], rig.now, rig.mono)
    due = nominal + jitter_offset_ms(task_id, nominal, JITTER)
    assert res.task.next_fire_ms == nominal and res.task.next_due_ms == due
    # Up to the due time: no Fire, and never a wait of 0 (a tick with nothing to do, again and again).
    while rig.now < due - STEP_MS:
        cmds = rig.core.tick(rig.now, rig.mono)
        assert not [c for c in cmds if c.WhichOneof("body") == "fire"], rig.now - nominal
        if rig.now >= nominal:
            wake = rig.core.next_wakeup_ms(rig.now, rig.mono)
            assert wake > 0, f"spins {rig.now - nominal} ms after nominal"
        rig.now += STEP_MS
        rig.mono += STEP_MS
    rig.run(0.1)
    fires = [c.fire for c in rig.proposed if c.WhichOneof("body") == "fire"]
    assert [f.nominal_time_ms for f in fires] == [nominal]
    with rig.kv.read() as txn:
        assert get_task(txn, id_bytes(task_id)).last_fired_nominal_ms == nominal


def _task(next_fire_ms: int, next_due_ms: int) -> common_pb2.Task:
    return common_pb2.Task(
        task_id=make_id(T0, b"\x01" * 10),
        state=common_pb2.TASK_SCHEDULED,
        next_fire_ms=next_fire_ms,
        next_due_ms=next_due_ms,
    )


def test_a_task_is_in_the_wheel_at_its_due_time() -> None:
    planner = FirePlanner(LeaderSettings(horizon_ms=10_000))
    planner.loaded(T0 + 10_000)
    # Jitter or a roll to a later day: at the due time (a roll beyond the horizon: loaded from the index).
    planner.schedule(_task(T0 + 1_000, T0 + 3_000))
    assert planner.wheel.next_deadline() == T0 + 3_000
    planner.schedule(_task(T0 + 1_000, T0 + 86_401_000))
    assert planner.wheel.next_deadline() is None
    # A roll to an earlier day (roll-preceding) inside the part of the due index loaded already: only
    # this call can put it in the wheel, though its nominal time is beyond the horizon.
    planner.schedule(_task(T0 + 86_405_000, T0 + 5_000))
    assert planner.wheel.next_deadline() == T0 + 5_000
    # Without jitter or roll (no next_due_ms): at the nominal time.
    planner.schedule(_task(T0 + 2_000, 0))
    assert planner.wheel.next_deadline() == T0 + 2_000
