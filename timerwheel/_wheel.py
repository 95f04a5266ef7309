"""Hierarchical timing wheel: the leader's in-memory index of upcoming deadlines.

Owns: which keys are due when, and handing them out in order once the caller says time has passed.
It does not own time. The caller passes the time in as integer milliseconds (non-negative, e.g. since
the Unix epoch) and the wheel never reads a clock, sleeps or schedules anything.

Contract:
- ``add(key, deadline_ms)`` holds at most one deadline per key; adding a key again replaces its deadline
  (and counts as a new insertion for ordering). A deadline at or before the current time expires at the
  next ``advance``.
- ``advance(now_ms)`` removes and returns every ``(key, deadline_ms)`` with ``deadline_ms <= now_ms``,
  sorted by ``(deadline_ms, insertion order)``. Deadlines are exact: slots have ``tick_ms`` granularity,
  but nothing is returned before its deadline. Time never goes back: a smaller ``now_ms`` is a no-op.
- ``next_deadline()`` is the exact earliest deadline held (not rounded to a tick), ``None`` when empty;
  O(1) while the earliest entry stays, otherwise one scan of a single slot.
- ``add`` and ``cancel`` are O(1) (plus O(log n) heap pushes for past or far-future deadlines);
  ``advance`` costs O(occupied slots visited + entries cascaded or expired, + k log k to sort the k
  expired), never O(elapsed ticks), so a jump of decades costs no more than a jump of one tick.

Layout (after Varghese & Lauck, "Hashed and Hierarchical Timing Wheels", SOSP 1987, with the
Linux/``timeout.c`` rule of choosing the level by the highest bit in which the deadline tick differs
from the current tick): level ``L`` has ``2**wheel_bits`` slots of width ``tick_ms * 2**(wheel_bits*L)``.
An entry lives at the level of the highest ``wheel_bits``-digit in which its tick differs from the
current tick, in the slot named by that digit; so every occupied slot lies ahead of the current tick,
within the current span of the level above. When the current tick enters a slot's span, the slot is
emptied and its entries re-placed at lower levels (cascade; at most ``levels`` times per entry).
Entries whose ticks are the current tick or earlier wait in a small *ready* heap ordered by exact
deadline; entries beyond the top level's span wait in an *overflow* heap and enter the wheels when the
current tick reaches their top-level span.
A bitmap per level marks occupied slots, so the next slot to visit is one bit operation away.
"""

from __future__ import annotations

from collections.abc import Hashable
from heapq import heapify, heappop, heappush
from operator import attrgetter
from typing import Any, Generic, TypeVar

__all__ = ["TimingWheel"]

K = TypeVar("K", bound=Hashable)

# `_Entry.loc` is the flat slot index (level << wheel_bits | slot) while the entry sits in a wheel,
# or one of these markers. Heaps delete lazily: an entry popped with a marker other than the heap's own
# was cancelled or replaced, and is skipped.
_DEAD = -1
_READY = -2
_OVERFLOW = -3

# Rebuild a lazily-deleted heap once its dead items outnumber its live ones (and exceed this floor),
# so cancelled far-future entries cannot grow memory without bound.
_COMPACT_FLOOR = 64

_ORDER = attrgetter("deadline", "seq")


class _Entry:
    """One held deadline; the only per-entry record (never reused after it dies).

    Deliberately not `Generic[K]`: a generic base makes every instantiation about twice as slow on
    CPython 3.11, and `add` creates one per call. `TimingWheel` keeps the key type.
    """

    __slots__ = ("deadline", "key", "loc", "seq")

    def __init__(self, key: Any, deadline: int, seq: int) -> None:
        self.key = key
        self.deadline = deadline
        self.seq = seq  # insertion order, breaks ties between equal deadlines
        self.loc = _DEAD


# Heap items carry (deadline, seq) first so that tuples compare without ever reaching the entry.
_HeapItem = tuple[int, int, _Entry]


class TimingWheel(Generic[K]):
    """Hierarchical timing wheel keyed by ``K``; see the module docstring for the contract."""

    def __init__(self, *, tick_ms: int = 10, wheel_bits: int = 8, levels: int = 4, now_ms: int = 0) -> None:
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be >= 1 (got {tick_ms})")
        if not 1 <= wheel_bits <= 16:
            raise ValueError(f"wheel_bits must be between 1 and 16 (got {wheel_bits})")
        if levels < 1:
            raise ValueError(f"levels must be >= 1 (got {levels})")
        if now_ms < 0:
            raise ValueError(f"now_ms must be >= 0 (got {now_ms})")
        self._tick_ms = tick_ms
        self._bits = wheel_bits
        self._mask = (1 << wheel_bits) - 1
        self._levels = levels
        self._top_shift = wheel_bits * levels
        self._now_ms = now_ms
        self._cur = now_ms // tick_ms  # current tick; always now_ms // tick_ms
        # All levels * 2**wheel_bits slot sets up front (~220 KB for the default 4 x 256): keeps `None`
        # checks out of the hot loop. Sets, not lists, so that cancel is O(1).
        self._slots: list[set[_Entry]] = [set() for _ in range(levels << wheel_bits)]
        self._occupied = [0] * levels  # per level, bit s set <=> slot s non-empty
        self._ready: list[_HeapItem] = []
        self._ready_dead = 0
        self._overflow: list[_HeapItem] = []
        self._overflow_dead = 0
        self._index: dict[K, _Entry] = {}
        self._seq = 0
        # Cached earliest entry; recomputed only once it dies (fires, is cancelled or replaced), since
        # removing other entries or cascading cannot change which entry is earliest.
        self._min: _Entry | None = None

    # -- queries ---------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The time of the last effective ``advance`` (or the constructor's ``now_ms``)."""
        return self._now_ms

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __repr__(self) -> str:
        return f"TimingWheel(len={len(self._index)}, now_ms={self._now_ms}, tick_ms={self._tick_ms})"

    def deadline_of(self, key: K) -> int | None:
        """The deadline held for ``key``, or ``None`` if it is not held."""
        entry = self._index.get(key)
        return None if entry is None else entry.deadline

    def next_deadline(self) -> int | None:
        """The exact earliest deadline held, ``None`` when empty. O(1) while the earliest entry lives."""
        entry = self._min
        if entry is None or entry.loc == _DEAD:
            entry = self._min = self._find_min()
        return None if entry is None else entry.deadline

    # -- updates ---------------------------------------------------------------------------------

    def add(self, key: K, deadline_ms: int) -> None:
        """Hold ``key`` until ``deadline_ms``, replacing any deadline it already had."""
        old = self._index.get(key)
        if old is not None:
            self._unlink(old)
        self._seq += 1
        entry = _Entry(key, deadline_ms, self._seq)
        self._index[key] = entry
        self._place(entry, deadline_ms // self._tick_ms)
        cached = self._min
        # Every live deadline is >= the cached entry's, live or dead (an entry added since with an
        # earlier deadline would have replaced it), so beating it makes the new entry the earliest.
        # An unknown (None) or dead cache is otherwise recomputed on demand.
        if cached is not None and deadline_ms < cached.deadline:
            self._min = entry

    def cancel(self, key: K) -> bool:
        """Forget ``key``; True if it was held."""
        entry = self._index.pop(key, None)
        if entry is None:
            return False
        self._unlink(entry)
        return True

    def advance(self, now_ms: int) -> list[tuple[K, int]]:
        """Move time to ``now_ms``; remove and return what is due, sorted by (deadline, insertion)."""
        if now_ms < self._now_ms:
            return []
        self._now_ms = now_ms
        target = now_ms // self._tick_ms
        fired: list[_Entry] = []
        if target > self._cur:
            self._run_until(target, now_ms, fired)
            self._cur = target
        # Entries from the wheels come out in slot order, not deadline order; the ready heap alone
        # yields them sorted, so the sort is skipped when only the heap contributed.
        unsorted = bool(fired)
        # Everything left with a tick before `target` has fired above; the ready heap holds the
        # current tick's entries, of which only those with deadline <= now_ms are due.
        ready = self._ready
        while ready and ready[0][0] <= now_ms:
            entry = heappop(ready)[2]
            if entry.loc == _READY:
                fired.append(entry)
            else:
                self._ready_dead -= 1
        if not fired:
            return []
        index = self._index
        for entry in fired:
            entry.loc = _DEAD
            del index[entry.key]
        if unsorted:
            fired.sort(key=_ORDER)
        return [(entry.key, entry.deadline) for entry in fired]

    # -- internals -------------------------------------------------------------------------------

    def _place(self, entry: _Entry, tick: int) -> None:
        """Put a live entry where it belongs relative to the current tick."""
        cur = self._cur
        if tick <= cur:
            entry.loc = _READY
            heappush(self._ready, (entry.deadline, entry.seq, entry))
            return
        # The highest differing digit picks the level: the entry shares every higher digit with the
        # current tick, so its slot is ahead of the current one within the current upper span.
        level = ((tick ^ cur).bit_length() - 1) // self._bits
        if level >= self._levels:
            entry.loc = _OVERFLOW
            heappush(self._overflow, (entry.deadline, entry.seq, entry))
            return
        slot = (tick >> (self._bits * level)) & self._mask
        loc = (level << self._bits) | slot
        entry.loc = loc
        self._slots[loc].add(entry)
        self._occupied[level] |= 1 << slot

    def _unlink(self, entry: _Entry) -> None:
        """Remove a live entry from its container (O(1); heaps are cleaned lazily)."""
        loc = entry.loc
        entry.loc = _DEAD
        if loc >= 0:
            bucket = self._slots[loc]
            bucket.discard(entry)
            if not bucket:
                self._occupied[loc >> self._bits] &= ~(1 << (loc & self._mask))
        elif loc == _READY:
            self._ready_dead += 1
            if self._ready_dead > _COMPACT_FLOOR and 2 * self._ready_dead > len(self._ready):
                self._ready = _compact(self._ready, _READY)
                self._ready_dead = 0
        elif loc == _OVERFLOW:
            self._overflow_dead += 1
            if self._overflow_dead > _COMPACT_FLOOR and 2 * self._overflow_dead > len(self._overflow):
                self._overflow = _compact(self._overflow, _OVERFLOW)
                self._overflow_dead = 0

    def _run_until(self, target: int, now_ms: int, fired: list[_Entry]) -> None:
        """Visit, in time order, every occupied slot whose span starts at or before tick ``target``.

        Entries that are due (tick before ``target``, or deadline <= ``now_ms``) are appended to
        ``fired``; the others cascade to lower levels or the ready heap. Empty spans are skipped by
        jumping the current tick straight to the next occupied slot, found from the lowest non-empty
        level's bitmap: lower levels always come first, because every occupied slot at level L lies
        before the next span of level L + 1. This is the hot loop, hence `_place` inlined.
        """
        bits = self._bits
        mask = self._mask
        levels = self._levels
        slots = self._slots
        occupied = self._occupied
        ready = self._ready
        tick_ms = self._tick_ms
        while True:
            level = 0
            while level < levels and not occupied[level]:
                level += 1
            if level == levels:
                if self._drain_overflow(target, fired):
                    continue
                return
            occ = occupied[level]
            slot = (occ & -occ).bit_length() - 1
            shift = bits * level
            upper = shift + bits
            start = ((self._cur >> upper) << upper) | (slot << shift)
            if start > target:
                return
            self._cur = start
            loc = (level << bits) | slot
            bucket = slots[loc]
            occupied[level] = occ ^ (1 << slot)
            if start + (1 << shift) <= target:
                fired.extend(bucket)  # the whole span is in the past
            elif level == 0:
                # The slot of `target` itself: deadlines are exact, so only part of it may be due.
                for entry in bucket:
                    if entry.deadline <= now_ms:
                        fired.append(entry)
                    else:
                        entry.loc = _READY
                        heappush(ready, (entry.deadline, entry.seq, entry))
            else:
                # Re-placing relative to `start` only ever lands on lower levels (or the ready heap),
                # never in this bucket, so iterating it while placing is safe.
                for entry in bucket:
                    tick = entry.deadline // tick_ms
                    if tick < target:
                        fired.append(entry)
                    elif tick == start:
                        if entry.deadline <= now_ms:
                            fired.append(entry)
                        else:
                            entry.loc = _READY
                            heappush(ready, (entry.deadline, entry.seq, entry))
                    else:
                        lower = ((tick ^ start).bit_length() - 1) // bits
                        lower_slot = (tick >> (bits * lower)) & mask
                        entry.loc = (lower << bits) | lower_slot
                        slots[entry.loc].add(entry)
                        occupied[lower] |= 1 << lower_slot
            bucket.clear()

    def _drain_overflow(self, target: int, fired: list[_Entry]) -> bool:
        """With the wheels empty: fire overflow entries before ``target``; if the next one falls in the
        top-level span of ``target``, move the current tick to that span's start and load the span's
        entries into the wheels (True). False when nothing more can happen before ``target``.
        """
        overflow = self._overflow
        tick_ms = self._tick_ms
        while overflow:
            deadline, _, entry = overflow[0]
            if entry.loc != _OVERFLOW:
                heappop(overflow)
                self._overflow_dead -= 1
            elif deadline // tick_ms < target:
                heappop(overflow)
                fired.append(entry)
            else:
                break
        if not overflow:
            return False
        span = (overflow[0][0] // tick_ms) >> self._top_shift
        if span != target >> self._top_shift:
            return False
        self._cur = span << self._top_shift
        while overflow and (overflow[0][0] // tick_ms) >> self._top_shift == span:
            entry = heappop(overflow)[2]
            if entry.loc == _OVERFLOW:
                self._place(entry, entry.deadline // tick_ms)
            else:
                self._overflow_dead -= 1
        return True

    def _find_min(self) -> _Entry | None:
        """The earliest live entry. The ready heap precedes the wheels, the lowest non-empty level's
        first occupied slot precedes every other slot, and the wheels precede the overflow heap; so
        only one slot is ever scanned.
        """
        ready = self._ready
        while ready and ready[0][2].loc != _READY:
            heappop(ready)
            self._ready_dead -= 1
        if ready:
            return ready[0][2]
        for level, occ in enumerate(self._occupied):
            if occ:
                slot = (occ & -occ).bit_length() - 1
                return min(self._slots[(level << self._bits) | slot], key=_ORDER)
        overflow = self._overflow
        while overflow and overflow[0][2].loc != _OVERFLOW:
            heappop(overflow)
            self._overflow_dead -= 1
        return overflow[0][2] if overflow else None


def _check_invariants(wheel: TimingWheel[Any]) -> None:
    """Assert the layout invariants the module docstring describes (for tests; O(n))."""
    w = wheel
    assert w._cur == w._now_ms // w._tick_ms
    live: dict[int, _Entry] = {}
    for loc, bucket in enumerate(w._slots):
        level, slot = loc >> w._bits, loc & w._mask
        assert bool(w._occupied[level] >> slot & 1) == bool(bucket), (level, slot)
        for entry in bucket:
            tick = entry.deadline // w._tick_ms
            assert entry.loc == loc
            assert tick > w._cur
            assert ((tick ^ w._cur).bit_length() - 1) // w._bits == level
            assert (tick >> (w._bits * level)) & w._mask == slot
            live[id(entry)] = entry
    ready_dead = 0
    for _, _, entry in w._ready:
        if entry.loc == _READY:
            assert entry.deadline // w._tick_ms <= w._cur
            live[id(entry)] = entry
        else:
            assert entry.loc == _DEAD
            ready_dead += 1
    assert ready_dead == w._ready_dead
    overflow_dead = 0
    for _, _, entry in w._overflow:
        if entry.loc == _OVERFLOW:
            assert (entry.deadline // w._tick_ms) >> w._top_shift > w._cur >> w._top_shift
            live[id(entry)] = entry
        else:
            assert entry.loc == _DEAD
            overflow_dead += 1
    assert overflow_dead == w._overflow_dead
    assert len(live) == len(w._index)
    assert all(live.get(id(entry)) is entry for entry in w._index.values())


def _compact(heap: list[_HeapItem], marker: int) -> list[_HeapItem]:
    """A new heap holding only the live items of ``heap`` (those still marked ``marker``)."""
    live = [item for item in heap if item[2].loc == marker]
    heapify(live)
    return live
