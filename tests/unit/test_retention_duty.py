"""The leader's retention duty (daemon.retention): its pace, and its idle while the cluster is quiet.

A quiet cluster's log must stay still (the fault harness compares the nodes' stores at rest, and nothing
but retention would move the log): after a whole sweep that deleted nothing with no other command
committed, no step until something is due or another command commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cronraft.daemon import retention
from cronraft.daemon.config import RetentionConfig
from cronraft.proto.v1 import commands_pb2
from tests.support.clock import FakeClock


class _Steps:
    """Answers each Prune with the next report of a script (then empty, wrapped reports)."""

    def __init__(self, reports: list[commands_pb2.PruneReport]) -> None:
        self.reports = list(reports)
        self.steps: list[commands_pb2.Prune] = []

    async def __call__(self, cmds: Sequence[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        (cmd,) = cmds
        self.steps.append(cmd.prune)
        report = self.reports.pop(0) if self.reports else commands_pb2.PruneReport(wrapped=True)
        return [commands_pb2.CommandResult(applied=True, pruned=report)]


CFG = RetentionConfig(prune_interval_ms=20, prune_max_deletes=7, prune_max_visits=9)


async def _run_for(steps: _Steps, seconds: float, activity: asyncio.Event, *, poke_at: float = -1) -> None:
    stop = False
    task = asyncio.create_task(
        retention.run(steps, FakeClock(wall=1_000_000), CFG, stopped=lambda: stop, activity=activity)  # type: ignore[arg-type]
    )
    if poke_at >= 0:
        await asyncio.sleep(poke_at)
        activity.set()
        await asyncio.sleep(seconds - poke_at)
    else:
        await asyncio.sleep(seconds)
    stop = True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_a_step_carries_the_table_and_its_budget() -> None:
    steps = _Steps([commands_pb2.PruneReport(wrapped=True, executions=1)])
    await _run_for(steps, 0.05, asyncio.Event())
    first = steps.steps[0]
    assert first.max_deletes == 7 and first.max_visits == 9
    assert first.defaults.keep_executions == 1000 and first.defaults.execution_max_age_ms == 30 * 86_400_000


@pytest.mark.asyncio
async def test_a_quiet_cluster_gets_no_step_until_something_commits() -> None:
    steps = _Steps([])  # every sweep finds nothing
    activity = asyncio.Event()
    await _run_for(steps, 0.5, activity)
    assert len(steps.steps) == 1  # one sweep, then idle (nothing due, nothing committed)
    steps = _Steps([])
    await _run_for(steps, 0.5, asyncio.Event(), poke_at=0.2)
    assert len(steps.steps) >= 2  # another command committed: a new sweep


@pytest.mark.asyncio
async def test_work_left_or_done_keeps_the_pace() -> None:
    more = [commands_pb2.PruneReport(more=True, executions=7) for _ in range(5)]
    done = [commands_pb2.PruneReport(wrapped=True, executions=3)] * 3
    steps = _Steps([*more, *done])
    await _run_for(steps, 0.5, asyncio.Event())
    assert len(steps.steps) >= 9  # the backlog, then sweeps that still deleted, then idle


@pytest.mark.asyncio
async def test_an_idle_duty_wakes_when_the_next_deadline_comes() -> None:
    due = commands_pb2.PruneReport(wrapped=True, next_ms=1_000_000 + 150)  # due in 150 ms
    steps = _Steps([due])
    await _run_for(steps, 0.6, asyncio.Event())
    assert len(steps.steps) == 2  # the one that saw the deadline, the one at the deadline; then idle
