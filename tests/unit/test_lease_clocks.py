"""The worker's self-fencing never reads the wall clock (issue 5: leases never depend on wall clocks).

A fake clock whose wall time and monotonic time move independently: a wall clock stepped by hours does
not fence a renewed attempt; monotonic time passing the deadline fences it with the wall clock frozen.
The leader's side is tests/sim/test_lease_clocks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_gateway import (
    connected_stream,
    fake_leader,
    heartbeat_listing,
    make_lease,
    offers,
    running_worker,
    worker_config,
)

from cronraft.client._runner import FENCED_ERROR
from tests.support.clock import FakeClock

HOUR_MS = 3_600_000


@pytest.mark.asyncio
async def test_wall_steps_never_fence_and_monotonic_time_does(tmp_path: Path) -> None:
    clock = FakeClock(wall=1_767_225_600_000, mono=1_000_000)
    async with fake_leader(heartbeat_interval_ms=20, lease_ttl_ms=1000) as leader:
        config = worker_config([leader.address], tmp_path)
        async with running_worker(config, clock=clock) as worker:
            stream = await connected_stream(leader)
            stream.put_nowait(offers(make_lease("exec-wall", argv=["sleep", "30"])))
            await heartbeat_listing(leader, {"exec-wall"})
            for step in (HOUR_MS, -3 * HOUR_MS, 5000):
                clock.wall += step
                for _ in range(3):
                    await heartbeat_listing(leader, {"exec-wall"})
                assert [lease.execution_id for lease in worker.running] == ["exec-wall"], step
            leader.answer_heartbeats = False
            clock.mono += 10_000  # past the local deadline; the wall clock does not move
            result = await leader.result_for("exec-wall")
            assert result.error == FENCED_ERROR
