"""The one clock shape every layer reads time through, and the real clock.

Two readings, both integer milliseconds: `now_ms()` is wall time (Unix milliseconds, POSIX: no leap
seconds), which nominal fire times and reports use; `mono_ms()` is monotonic time with an arbitrary
origin, which deadlines use (lease expiry, timeouts, backoff waits), so that a wall-clock step or skew
never moves them. The daemon schedules on `daemon.clock.CorrectedClock`, a `Clock` whose wall time is
corrected by the cluster's measured offset; the worker and the client read `SystemClock`; tests move a
`tests.support.clock.FakeClock`. Code that works in float seconds converts with `mono_s`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "mono_s"]


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time, Unix milliseconds. Nominal fire times and reported instants use it."""
        ...

    def mono_ms(self) -> int:
        """Monotonic milliseconds, arbitrary origin. Deadlines use it: immune to wall-clock steps."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


def mono_s(clock: Clock) -> float:
    """The clock's monotonic time in seconds (the worker's lease and gate arithmetic is in seconds)."""
    return clock.mono_ms() / 1000
