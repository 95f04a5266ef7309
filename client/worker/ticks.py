"""The worker's timers wake it on one grid: loop times that are multiples of TICK_S, the instants at which
held starts are released (start_gate.GATE_S). A wake-up from sleep costs 60-150 us of CPU on the benchmark
VMs, and with start instants spread over the second (W5) a gate opens at nearly every tick: a timer that
waits for a tick instead of its own instant (the heartbeat's spacing and interval, the fence check, the
output flush, the outbox segment's idle close) wakes the worker together with a gate, in the same loop
iteration, instead of on its own. A timer waits for the last tick within its delay (`sleep_to_tick`,
at most TICK_S less), or the first after a time (`tick_after`, the heartbeat spacing: at least its
delay); none of them is a held start's instant.
"""

from __future__ import annotations

import asyncio
import math

from cronraft.clock import Clock, SystemClock

TICK_S = 0.005
# Loop times a few nanoseconds past a tick (float rounding of k * TICK_S) still count as that tick.
_EPSILON = 1e-6


def tick_after(loop_time: float) -> float:
    """The first tick at or after `loop_time`."""
    return math.ceil(loop_time / TICK_S - _EPSILON) * TICK_S


def tick_within(now: float, delay: float) -> float:
    """The last tick at or before `now + delay`, or the first after `now` if none is between."""
    tick = math.floor((now + delay) / TICK_S + _EPSILON)
    if tick * TICK_S <= now:
        tick = math.floor(now / TICK_S + _EPSILON) + 1
    return tick * TICK_S


async def sleep_to_tick(delay: float) -> None:
    """Sleep until the last tick within `delay` seconds (`tick_within`)."""
    loop = asyncio.get_running_loop()
    await sleep_until(tick_within(loop.time(), delay))


async def sleep_until(loop_time: float) -> None:
    """Sleep until `loop_time`, armed at it: asyncio.sleep would add the delay to a later reading of the
    loop's time, a few microseconds after a tick."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(loop_time, _wake, woken)
    try:
        await woken
    finally:
        timer.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def same_clock(clock: Clock, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `clock`'s monotonic seconds (`mono_s`) are the loop's times, truncated to the millisecond:
    the system clock on the stock loop (both read time.monotonic). Then a gate's instant, a multiple of
    TICK_S in `mono_s`, is that same loop time, the tick the other timers wait for; a timer armed for it
    relative to the truncated reading of now would come up to a millisecond later, in a wake-up of its
    own. Any other clock (tests move a fake one) is read relative to now."""
    return type(clock) is SystemClock and type(loop).time is asyncio.BaseEventLoop.time


def loop_time_of(clock: Clock, at: float, now: float, loop: asyncio.AbstractEventLoop) -> float:
    """The loop time at which `clock`'s mono_s reads `at`, `now` being its reading just before: `at`
    itself on the system clock (`same_clock`), else counted from now."""
    return at if same_clock(clock, loop) else loop.time() + at - now


__all__ = [
    "TICK_S",
    "loop_time_of",
    "same_clock",
    "sleep_to_tick",
    "sleep_until",
    "tick_after",
    "tick_within",
]
