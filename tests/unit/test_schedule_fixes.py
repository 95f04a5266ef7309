"""The feature `schedule_fixes` (raft.features): apply's schedule corrections of 2026-12, on from the
entry that raises it, the previous release's behaviour below it (a rolling upgrade applies one log alike
on old and new nodes)."""

from __future__ import annotations

import pytest
from test_state import T0, Log, create, epoch, spec

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine

Command = commands_pb2.Command
MIN = 60_000
ID = "01M990QVT8FHE0548MV8BA2RMB"


def _log(fixes: bool) -> Log:
    fresh = features.SUPPORTED if fixes else features.SUPPORTED - {features.SCHEDULE_FIXES}
    log = Log(StateMachine(MemKV(), fresh_features=fresh))
    log.apply(epoch(1))
    return log


def _every_minute(anchor_ms: int) -> common_pb2.Schedule:
    return common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MIN, anchor_ms=anchor_ms))


@pytest.mark.parametrize("fixes", [True, False])
def test_a_task_edited_while_paused_resumes_on_its_new_schedule(fixes: bool) -> None:
    log = _log(fixes)
    (c,) = log.apply(create(ID, spec(_every_minute(0))))
    old_next = c.task.next_fire_ms
    assert old_next % MIN == 0
    (p,) = log.apply(Command(stamped_at_ms=T0 + 2, pause_task=commands_pb2.PauseTask(task_id=ID)))
    assert p.applied, p.error
    edit = commands_pb2.UpdateTask(task_id=ID, spec=spec(_every_minute(30_000)))
    (u,) = log.apply(Command(stamped_at_ms=T0 + 3, update_task=edit))
    assert u.applied, u.error
    assert u.task.state == common_pb2.TASK_PAUSED
    (r,) = log.apply(Command(stamped_at_ms=T0 + 4, resume_task=commands_pb2.ResumeTask(task_id=ID)))
    assert r.applied, r.error
    if fixes:  # the new schedule's first time after the edit
        assert u.task.next_fire_ms % MIN == 30_000 and u.task.next_fire_ms > T0 + 3
        assert r.task.next_fire_ms == u.task.next_fire_ms
    else:  # the previous release: the old schedule's time, which then fires once
        assert u.task.next_fire_ms == old_next and r.task.next_fire_ms == old_next


@pytest.mark.parametrize("fixes", [True, False])
def test_a_fixed_delay_task_resumed_after_its_run_came_due(fixes: bool) -> None:
    log = _log(fixes)
    s = spec(
        common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=5_000), start_at_ms=T0 + MIN)
    )
    (c,) = log.apply(create(ID, s))
    assert c.task.next_fire_ms == T0 + MIN  # planned at creation, not yet run
    (p,) = log.apply(Command(stamped_at_ms=T0 + 2, pause_task=commands_pb2.PauseTask(task_id=ID)))
    assert p.applied, p.error
    resume_at = T0 + 2 * MIN  # past the planned run
    (r,) = log.apply(Command(stamped_at_ms=resume_at, resume_task=commands_pb2.ResumeTask(task_id=ID)))
    assert r.applied, r.error
    if fixes:  # it never ran: the delay counts from the resume (raft.commands.tasks.resume_task)
        assert r.task.state == common_pb2.TASK_SCHEDULED and r.task.next_fire_ms == resume_at + 5_000
    else:  # the previous release completed it: no run ever again
        assert r.task.state == common_pb2.TASK_COMPLETED and r.task.next_fire_ms == 0
