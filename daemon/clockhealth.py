"""Clock health: how far this node's wall clock is from the cluster's, from probes of the peers. Pure.

Every node asks every peer for its raw wall clock once per probe interval (`daemon.clockprobe` does the
I/O). One probe gives one *sample*: `offset = peer_wall - (local_wall_at_send + rtt / 2)`, with the round
trip `rtt` measured on the monotonic clock. The error of one sample is at most rtt / 2 (the reply may
have been stamped anywhere in the round trip), so per peer we keep the last `WINDOW` samples and use the
one with the smallest round trip, the classic NTP clock filter (RFC 5905, section 10; Mills, "Computer
Network Time Synchronization", ch. 3); samples older than `max_age_ms` expire, so a silent peer drops
out of the estimate instead of freezing it.

This node's offset from the cluster is `-median({0} | {peer offsets})`: the cluster's median wall clock
is the reference, so one wrong clock (even ±5 s, in any direction) cannot move it in a 3-node cluster.
Example: this node is 5 s ahead; both peers read -5 s; median -5 s; this node's offset +5 s.

With an even number of readings (self included: a peer silent in a 3-node cluster) the two middle values
may disagree and nobody can tell which clock is wrong; we then take the middle value closest to our own
clock (offset 0 if ours is one of them), so that two nodes that disagree both consider themselves healthy
instead of both stepping down in turn. `Estimate.decided` says whether a strict majority of readings
stands behind the median.

Nothing here reads a clock: times arrive as arguments (floats, milliseconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

WINDOW = 8  # samples kept per peer (NTP's clock filter keeps 8)
# The scheduling clock is corrected only when the measured offset differs from the correction in force
# by more than this. On loopback the measurement noise is well under 1 ms, on a LAN a few ms (rtt / 2 at
# worst); 50 ms is far above that, so noise never jitters due times, and far below the 500 ms early
# tolerance of the on-time rule (fault-testing.md 2.3, R1), so what is left uncorrected never matters.
DEADBAND_MS = 50.0


@dataclass(frozen=True, slots=True)
class Sample:
    at_mono_ms: float  # when the reply arrived (monotonic)
    rtt_ms: float
    offset_ms: float  # peer wall - our wall, estimated at the middle of the round trip


@dataclass(frozen=True, slots=True)
class Reading:
    """One peer's filtered reading: its best recent sample."""

    offset_ms: float  # peer wall - our wall
    rtt_ms: float
    age_ms: float


@dataclass(frozen=True, slots=True)
class Estimate:
    offset_ms: float  # our wall - the cluster median (0 until measured)
    decided: bool  # a strict majority of the readings (ours included) is on one side of the median
    readings: dict[str, Reading] = field(default_factory=dict)

    def peer_offset(self, peer: str) -> float | None:
        """That peer's offset from the cluster median (None if it has no fresh reading)."""
        r = self.readings.get(peer)
        return None if r is None else r.offset_ms + self.offset_ms


def make_sample(
    *, sent_wall_ms: float, sent_mono_ms: float, recv_mono_ms: float, peer_wall_ms: float
) -> Sample:
    rtt = max(0.0, recv_mono_ms - sent_mono_ms)
    return Sample(at_mono_ms=recv_mono_ms, rtt_ms=rtt, offset_ms=peer_wall_ms - (sent_wall_ms + rtt / 2))


def cluster_median(offsets: Iterable[float]) -> float:
    """The median of {0} + offsets; with an even count, the middle value closest to 0 (module doc)."""
    values = sorted([0.0, *offsets])
    n = len(values)
    if n % 2:
        return values[n // 2]
    low, high = values[n // 2 - 1], values[n // 2]
    return low if abs(low) <= abs(high) else high


class ClockEstimator:
    def __init__(self, peers: Sequence[str], *, max_age_ms: float, window: int = WINDOW) -> None:
        if max_age_ms <= 0:
            raise ValueError("max_age_ms: must be positive")
        self.peers = tuple(peers)
        self.max_age_ms = max_age_ms
        self._window = window
        self._samples: dict[str, deque[Sample]] = {p: deque(maxlen=window) for p in self.peers}

    def set_peers(self, peers: Sequence[str]) -> None:
        """The members changed (daemon.membership): a kept peer keeps its samples."""
        self.peers = tuple(peers)
        self._samples = {p: self._samples.get(p) or deque(maxlen=self._window) for p in self.peers}

    def add(self, peer: str, sample: Sample) -> None:
        q = self._samples.get(peer)
        if q is None:
            raise KeyError(f"peer {peer!r} is not a cluster member")
        if q:
            last = q[-1]
            # Each offset is off by at most half its round trip, so two honest samples differ by less than
            # the sum of their round trips. More than that (plus the deadband) is a clock step, ours or
            # the peer's: the older samples describe a clock that no longer exists, and the min-RTT
            # filter would keep choosing them for up to max_age_ms (a skewed leader firing early all
            # that time; found by fault scenario S9's runtime jumps).
            if abs(sample.offset_ms - last.offset_ms) > sample.rtt_ms + last.rtt_ms + DEADBAND_MS:
                q.clear()
        q.append(sample)

    def reading(self, peer: str, now_mono_ms: float) -> Reading | None:
        fresh = [s for s in self._samples[peer] if now_mono_ms - s.at_mono_ms <= self.max_age_ms]
        if not fresh:
            return None
        best = min(fresh, key=lambda s: (s.rtt_ms, -s.at_mono_ms))  # fastest; the newest among equals
        return Reading(offset_ms=best.offset_ms, rtt_ms=best.rtt_ms, age_ms=now_mono_ms - best.at_mono_ms)

    def estimate(self, now_mono_ms: float) -> Estimate:
        readings = {p: r for p in self.peers if (r := self.reading(p, now_mono_ms)) is not None}
        median = cluster_median(r.offset_ms for r in readings.values())
        n = len(readings) + 1
        # Decided from three clocks on: the median of three or more is fixed by the middle readings, so
        # one wrong clock cannot pull it. Two clocks (a peer silent in a 3-node cluster) decide nothing:
        # nobody can tell which one is wrong. Three clocks that all disagree (+5 s, 0, -5 s) still
        # decide, on the middle one: the rule (offset from the cluster median), and the only
        # reading that is right when the two wrong clocks err in opposite directions (fault scenario S9;
        # an earlier rule asking for a majority within the deadband decided nothing there, and the
        # leader at +5 s fired every task 5 s early).
        decided = n >= 3
        return Estimate(offset_ms=-median if readings else 0.0, decided=decided, readings=readings)

    def all_measured(self, now_mono_ms: float) -> bool:
        return all(self.reading(p, now_mono_ms) is not None for p in self.peers)


@dataclass(frozen=True, slots=True)
class Health:
    offset_ms: float
    healthy: bool
    correction_ms: int
    measured: bool


class ClockPolicy:
    """From estimates to decisions: the correction of the scheduling clock and the health flag.

    Only a decided estimate (a strict majority of readings behind the median) changes anything; otherwise
    the last decided offset, correction and health stay in force, so that a peer going silent cannot
    undo a correction (in a 3-node cluster, two readings that disagree decide nothing). The correction
    follows the offset in steps, only when they differ by more than the deadband (hysteresis: noise
    around a value never moves it). Unhealthy means |offset| > max_offset_ms.
    """

    def __init__(self, *, max_offset_ms: float, deadband_ms: float = DEADBAND_MS) -> None:
        if max_offset_ms <= 0:
            raise ValueError("max_offset_ms: must be positive")
        self.max_offset_ms = max_offset_ms
        self.deadband_ms = deadband_ms
        self.correction_ms = 0
        self.offset_ms = 0.0
        self.ever_decided = False

    def update(self, est: Estimate) -> Health:
        if est.decided:
            self.ever_decided = True
            self.offset_ms = est.offset_ms
            if abs(est.offset_ms - self.correction_ms) > self.deadband_ms:
                self.correction_ms = round(est.offset_ms)
        return Health(
            offset_ms=self.offset_ms,
            healthy=abs(self.offset_ms) <= self.max_offset_ms,
            correction_ms=self.correction_ms,
            measured=est.decided,
        )

    def transfer_target(self, est: Estimate, candidates: Iterable[str]) -> str | None:
        """The candidate (a connected follower) whose clock is closest to the median and within bounds."""
        best: tuple[float, str] | None = None
        for peer in candidates:
            off = est.peer_offset(peer)
            if off is None or abs(off) > self.max_offset_ms:
                continue
            if best is None or (abs(off), peer) < best:
                best = (abs(off), peer)
        return None if best is None else best[1]


__all__ = [
    "DEADBAND_MS",
    "WINDOW",
    "ClockEstimator",
    "ClockPolicy",
    "Estimate",
    "Health",
    "Reading",
    "Sample",
    "cluster_median",
    "make_sample",
]
