"""`FakeClock`: time that moves only when a test moves it.

It has the one clock shape, `cronraft.clock.Clock`: `now_ms()` (wall) and `mono_ms()` (monotonic),
milliseconds, read by the daemon and the worker alike; and a client call plan's `clock`
(`Callable[[], float]`): calling the clock gives monotonic seconds.

Wall and monotonic time are two fields in milliseconds, `wall` and `mono`. `advance` moves both, as real
time passing does; assigning one of them alone is a clock step or a frozen clock (what the lease tests
need: a wall clock stepped by hours, monotonic time passing a deadline with the wall clock frozen).
"""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    def __init__(self, *, wall: int = 0, mono: int = 0) -> None:
        self.wall = wall  # Unix milliseconds
        self.mono = mono  # monotonic milliseconds, arbitrary origin

    def advance(self, ms: int) -> None:
        """Time passes: both clocks move by `ms`."""
        self.wall += ms
        self.mono += ms

    def advance_to(self, mono_s: float) -> None:
        """Time passes until the monotonic clock reads `mono_s` seconds (the wall clock follows)."""
        self.advance(round(mono_s * 1000) - self.mono)

    # cronraft.clock.Clock
    def now_ms(self) -> int:
        return self.wall

    def mono_ms(self) -> int:
        return self.mono

    # a call plan's clock (client._routing.CallPlan): monotonic seconds
    def __call__(self) -> float:
        return self.mono / 1000
