"""The daemon's scheduling clock (`CorrectedClock`). The clock shape and the real clock are
`cronraft.clock`'s (`Clock`, `SystemClock`), re-exported here for the daemon's modules."""

from __future__ import annotations

from cronraft.clock import Clock, SystemClock

# A change of (wall - monotonic) larger than this between two readings is a step of the wall clock, not
# drift or an NTP slew (which move it by microseconds per second).
STEP_MS = 500


class CorrectedClock:
    """The scheduling clock: another clock's wall time minus this node's measured offset from the
    cluster median (set by `daemon.clockprobe`), so that due times follow the cluster's time even when
    this node's wall clock is off. The monotonic time is passed through untouched: leases never see the
    correction (nor the wall clock at all).

    Steps are held: when the wall clock jumps (wall - monotonic moves by more than STEP_MS) while peers
    can judge it (`hold_steps`, set by the clock monitor), the scheduling clock keeps running on the
    monotonic clock from the last trusted reading until the monitor `confirm`s a correction measured
    after the step, or until `hold_limit_ms` passed without one (then the step is taken). Without this,
    a leader whose clock stepped +5 s fired everything 5 s early until the next probe round noticed
    (fault scenario S9: 168 of 3,095 fires early by up to 5 s in the 2.6 s it took).
    """

    def __init__(self, inner: Clock, *, hold_limit_ms: int = 5_000) -> None:
        self.inner = inner
        self.correction_ms = 0
        self.hold_steps = False
        self.hold_limit_ms = hold_limit_ms
        self._base: int | None = None  # wall - mono of the last trusted reading
        self._held_since: int | None = None  # mono time an unconfirmed step was first seen
        self.steps_held = 0

    @property
    def pending_step_since_ms(self) -> int | None:
        """Monotonic time at which an unconfirmed wall-clock step was first seen (None: none pending)."""
        return self._held_since

    def now_ms(self) -> int:
        wall, mono = self.inner.now_ms(), self.inner.mono_ms()
        base = wall - mono
        if self.hold_steps and self._base is not None and abs(base - self._base) > STEP_MS:
            if self._held_since is None:
                self._held_since = mono
                self.steps_held += 1
            if mono - self._held_since < self.hold_limit_ms:
                return mono + self._base - self.correction_ms
            # Nobody confirmed it in time (peers silent): the step was probably right; take it.
        self._base = base  # follows drift and slews reading by reading
        self._held_since = None
        return wall - self.correction_ms

    def confirm(self, correction_ms: int) -> None:
        """Adopt a correction measured after any pending step, and the wall clock as it is now."""
        self.correction_ms = correction_ms
        self._base = self.inner.now_ms() - self.inner.mono_ms()
        self._held_since = None

    def mono_ms(self) -> int:
        return self.inner.mono_ms()

    def raw_now_ms(self) -> int:
        """The uncorrected wall clock (what the peers measure)."""
        return self.inner.now_ms()


__all__ = ["STEP_MS", "Clock", "CorrectedClock", "SystemClock"]
