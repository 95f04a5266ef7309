"""The byte budget that paces a worker stream's live output (daemon.wire.ByteBudget): a node stops
reading a stream that pushes output faster than bounds.MAX_OUTPUT_BYTES_PER_S after its burst."""

from __future__ import annotations

import pytest

from cronraft import bounds
from cronraft.daemon.wire import ByteBudget

MIB = 1 << 20


def test_within_the_burst_nothing_waits() -> None:
    budget = ByteBudget(8 * MIB, 16 * MIB, now_s=0.0)
    assert all(budget.charge(MIB, 0.0) == 0.0 for _ in range(16))


def test_past_the_burst_the_wait_is_what_the_rate_needs() -> None:
    budget = ByteBudget(8 * MIB, 16 * MIB, now_s=0.0)
    for _ in range(16):
        budget.charge(MIB, 0.0)
    assert budget.charge(MIB, 0.0) == pytest.approx(1 / 8)
    # After waiting that long the bucket is back at zero: the next MiB waits another 1/8 s.
    assert budget.charge(MIB, 0.125) == pytest.approx(1 / 8)


def test_a_flood_is_held_to_the_rate() -> None:
    """1 MiB chunks sent as fast as the reader reads, the reader sleeping as told: bytes read over 10 s
    stay within burst + rate * time."""
    budget = ByteBudget(bounds.MAX_OUTPUT_BYTES_PER_S, bounds.MAX_OUTPUT_BURST_BYTES, now_s=0.0)
    now, read = 0.0, 0
    while now < 10.0:
        read += MIB
        now += budget.charge(MIB, now)
    assert read <= bounds.MAX_OUTPUT_BURST_BYTES + bounds.MAX_OUTPUT_BYTES_PER_S * 10.0 + MIB


def test_idle_time_refills_only_up_to_the_burst() -> None:
    budget = ByteBudget(8 * MIB, 16 * MIB, now_s=0.0)
    for _ in range(16):
        budget.charge(MIB, 0.0)
    assert budget.charge(0, 3600.0) == 0.0
    assert sum(budget.charge(MIB, 3600.0) > 0 for _ in range(17)) == 1  # the 17th MiB waits
