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


__all__ = ["Clock", "SystemClock"]
