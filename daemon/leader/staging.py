"""Burst staging: how far ahead the leader fires when more is due than it can commit in the fire lead.

Fire ahead (`fire_lead_ms`, 500 ms) hides the commit and dispatch latency of an ordinary second. A burst
(20,000 one-time tasks due at one instant) does not fit in it: the cluster commits a few thousand fires
per second on two cores, so without more lead the last fire of the burst starts seconds late. The
leader knows the burst in advance (it is in the timing wheel), so it stages it: it starts firing early
enough that the whole backlog, committed at the rate the cluster sustains, is leased before the due
instant, and the workers hold every start until then.

The lead is adaptive, not fixed: an ordinary second (fewer fires than the rate times the lead) keeps
`fire_lead_ms`, so the lead window, in which a task edit no longer reaches the fire, stays short
unless a burst needs it. Pure functions and a counter; the leader core owns them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from cronraft.timerwheel import TimingWheel

K = TypeVar("K", bound=Hashable)

BUCKET_MS = 1_000  # the due counts' granularity: a burst is staged a whole second of due times at once


def stage_until(
    counts: dict[int, int],
    now_ms: int,
    *,
    fire_lead_ms: int,
    stage_lead_ms: int,
    rate_per_s: int,
) -> int:
    """The wall time up to which fires are due to be proposed now: `now + fire_lead_ms`, extended over
    every second of due times whose backlog (its fires and every earlier one still waiting) is a burst
    (takes longer than `fire_lead_ms` to commit at `rate_per_s`) and takes longer to commit than the time
    left before that second's ordinary lead begins; never beyond `now + stage_lead_ms`.
    `counts` maps a second (due_ms // BUCKET_MS) to the fires waiting in it."""
    target = now_ms + fire_lead_ms
    if stage_lead_ms <= fire_lead_ms or rate_per_s <= 0 or not counts:
        return target
    limit = now_ms + stage_lead_ms
    backlog = 0
    for second in range(now_ms // BUCKET_MS, limit // BUCKET_MS + 1):
        n = counts.get(second, 0)
        if not n:
            continue
        backlog += n
        start = second * BUCKET_MS
        # Committing the backlog up to this second takes backlog / rate. A backlog that commits within
        # the fire lead is no burst: the ordinary lead serves it. A burst must be committed by the time
        # this second's ordinary lead begins (start - fire_lead_ms), which leaves the lead as the margin
        # for the dispatch of its last leases.
        commit_ms = backlog * 1000 // rate_per_s
        if commit_ms > fire_lead_ms and commit_ms >= start - fire_lead_ms - now_ms:
            target = max(target, min(start + BUCKET_MS - 1, limit))
    return target


def next_stage_ms(
    counts: dict[int, int],
    now_ms: int,
    *,
    fire_lead_ms: int,
    stage_lead_ms: int,
    rate_per_s: int,
) -> int | None:
    """The earliest time after `now_ms` at which `stage_until` reaches a second it does not reach now
    (the leader wakes up then), or None: no burst is coming. Never late; early (a wake-up with nothing
    to stage) when seconds due before it are drained meanwhile and the backlog shrinks."""
    if stage_lead_ms <= fire_lead_ms or rate_per_s <= 0 or not counts:
        return None
    best: int | None = None
    backlog = 0
    for second in sorted(b for b in counts if (b + 1) * BUCKET_MS > now_ms + fire_lead_ms):
        start = second * BUCKET_MS
        backlog += counts[second]
        commit_ms = backlog * 1000 // rate_per_s
        if commit_ms <= fire_lead_ms:
            continue  # no burst (yet): the ordinary lead serves it
        # When the backlog's commit time reaches the time left, bounded by the staging lead.
        crossing = max(start - fire_lead_ms - commit_ms, start - stage_lead_ms)
        if crossing > now_ms and (best is None or crossing < best):
            best = crossing
    return best


class CountedWheel(Generic[K]):
    """A timing wheel that also counts its entries per second of due time (for `stage_until`). The
    counts follow every add, replace, cancel and expiry, so they are exact."""

    def __init__(self, now_ms: int = 0) -> None:
        self._wheel: TimingWheel[K] = TimingWheel(now_ms=now_ms)
        self.counts: dict[int, int] = {}

    def _drop(self, due_ms: int) -> None:
        b = due_ms // BUCKET_MS
        n = self.counts[b] - 1
        if n:
            self.counts[b] = n
        else:
            del self.counts[b]

    def add(self, key: K, due_ms: int) -> None:
        old = self._wheel.deadline_of(key)
        if old is not None:
            self._drop(old)
        self._wheel.add(key, due_ms)
        b = due_ms // BUCKET_MS
        self.counts[b] = self.counts.get(b, 0) + 1

    def cancel(self, key: K) -> bool:
        old = self._wheel.deadline_of(key)
        if old is None:
            return False
        self._drop(old)
        return self._wheel.cancel(key)

    def advance(self, now_ms: int) -> list[tuple[K, int]]:
        due = self._wheel.advance(now_ms)
        for _key, due_ms in due:
            self._drop(due_ms)
        return due

    def next_deadline(self) -> int | None:
        return self._wheel.next_deadline()

    def deadline_of(self, key: K) -> int | None:
        return self._wheel.deadline_of(key)

    def __contains__(self, key: object) -> bool:
        return key in self._wheel

    def __len__(self) -> int:
        return len(self._wheel)


__all__ = ["BUCKET_MS", "CountedWheel", "stage_until"]
