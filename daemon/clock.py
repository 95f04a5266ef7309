"""The daemon's one real clock. Everything else receives time as arguments (or a `Clock` in tests)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time, Unix milliseconds (POSIX: no leap seconds). Nominal fire times use it."""
        ...

    def mono_ms(self) -> int:
        """Monotonic milliseconds. Lease deadlines use it: immune to wall-clock steps and skew."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class CorrectedClock:
    """The scheduling clock: another clock's wall time minus this node's measured offset from the
    cluster median (set by `daemon.clockprobe`), so that due times follow the cluster's time even when
    this node's wall clock is off. The monotonic time is passed through untouched: leases never see the
    correction (nor the wall clock at all)."""

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self.correction_ms = 0

    def now_ms(self) -> int:
        return self.inner.now_ms() - self.correction_ms

    def mono_ms(self) -> int:
        return self.inner.mono_ms()

    def raw_now_ms(self) -> int:
        """The uncorrected wall clock (what the peers measure)."""
        return self.inner.now_ms()


__all__ = ["Clock", "CorrectedClock", "SystemClock"]
