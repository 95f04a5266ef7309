"""The worker's timers on one grid (client/worker/ticks.py): a held start's gate opens at a tick, and the
other timers wait for a tick, so that a timer due while gates are pending wakes the worker with one."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from fake_gateway import make_lease

from cronraft.client.worker.leases import Attempt
from cronraft.client.worker.start_gate import GATE_S, StartGates
from cronraft.client.worker.ticks import TICK_S, same_clock, sleep_to_tick, tick_after, tick_within
from cronraft.clock import SystemClock, mono_s
from tests.support.clock import FakeClock


def test_tick_after_keeps_a_tick_and_rounds_anything_else_up() -> None:
    assert GATE_S == TICK_S
    for k in (1, 7, 200_001, 2_000_000_003):
        tick = k * TICK_S
        assert tick_after(tick) == tick  # float rounding of k * TICK_S is still that tick
        assert tick_after(tick + 1e-4) == (k + 1) * TICK_S
        assert tick_after(tick - 1e-4) == tick


def test_a_timer_waits_for_the_last_tick_within_its_delay_never_longer() -> None:
    """The outbox linger bounds how long a finished result waits for its write (docs/guarantees.md):
    a timer comes at most a tick early, never late; and never at once."""
    for k in (7, 200_001, 2_000_000_003):
        tick = k * TICK_S
        assert tick_within(tick + 0.0003, 0.05) == (k + 10) * TICK_S  # 49.7 ms
        assert tick_within(tick + 0.004, 0.05) == (k + 10) * TICK_S  # 46 ms
        assert tick_within(tick, 0.05) == (k + 10) * TICK_S
        assert tick_within(tick, 0.001) == (k + 1) * TICK_S  # no tick within: the next one
        assert tick_within(tick + 0.0003, 0.0) == (k + 1) * TICK_S


class RecordingLoop(asyncio.SelectorEventLoop):
    """The stock loop, recording when each timer is due."""

    def __init__(self) -> None:
        super().__init__()
        self.whens: list[float] = []

    def call_at(self, when: float, callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        self.whens.append(when)
        return super().call_at(when, callback, *args, context=context)


class FrozenLoop(RecordingLoop):
    """A recording loop whose clock stands still: a timer's due time minus the time read before arming
    it is the delay it was given, however long the test took in between (on a loaded CI machine, 1.2 ms
    once)."""

    def time(self) -> float:
        return 5_000.0


def held(start_at: float) -> Attempt:
    lease = make_lease("exec-1")
    lease.start_delay_ms = 1
    runner: Any = None  # the gates never touch it
    return Attempt(("exec-1", 1, 1), lease, runner, 30.0, deadline=start_at + 30, start_at=start_at)


def test_on_the_system_clock_a_gate_and_a_timer_waiting_for_a_tick_are_due_at_the_same_loop_time() -> None:
    """Armed relative to the millisecond reading of now, the gate's timer came up to 1 ms after the
    tick, in a wake-up of its own after the other timers'."""

    async def run(loop: RecordingLoop) -> None:
        assert same_clock(SystemClock(), loop) and not same_clock(FakeClock(), loop)
        gates = StartGates(SystemClock(), lambda: None)
        gate = gates.join(held(mono_s(SystemClock()) + 0.0123))
        sleeper = asyncio.ensure_future(sleep_to_tick(loop.whens[0] - loop.time() + 0.001))
        await asyncio.sleep(0)
        opened, slept = loop.whens[0], loop.whens[-1]
        assert opened == slept and math.isclose(opened / TICK_S, round(opened / TICK_S), abs_tol=1e-6)
        gates.acked()
        sleeper.cancel()
        gate.cancel()

    loop = RecordingLoop()
    try:
        loop.run_until_complete(run(loop))
    finally:
        loop.close()


def test_a_start_on_the_grid_is_its_own_gates_not_the_next_ones() -> None:
    """An instant on the grid (the offer's ms reading plus its delay, 1000.330 + 0.065) came out a hair
    above it in floating point, and its start waited for the next gate, 5 ms later (about one in sixty
    such instants)."""
    start_at = 1000.330 + 0.065
    assert start_at / GATE_S > 200079  # the float this is about

    async def run(loop: RecordingLoop) -> float:
        gates = StartGates(FakeClock(mono=1_000_330), lambda: None)
        now = loop.time()
        gate = gates.join(held(start_at))
        gate.cancel()
        return loop.whens[0] - now

    loop = FrozenLoop()  # the wait measured without the time the test itself takes (a loaded machine)
    try:
        wait = loop.run_until_complete(run(loop))
    finally:
        loop.close()
    assert wait == pytest.approx(0.065, abs=0.0005)
