"""Unit and model-based tests of `cronraft.timerwheel.TimingWheel`.

The state machine at the end compares the wheel with a plain dict + sort model after every step, over
several wheel shapes (including tiny ones, so cascades and the overflow heap are exercised constantly).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cronraft.timerwheel import TimingWheel
from cronraft.timerwheel._wheel import _check_invariants

YEAR_2025_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
YEAR_2100_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
YEAR_2500_MS = 16_725_225_600_000  # 2500-01-01T00:00:00Z

Key = tuple[str, int]


# -- basics -----------------------------------------------------------------------------------------


def test_empty_wheel() -> None:
    wheel: TimingWheel[str] = TimingWheel(now_ms=100)
    assert len(wheel) == 0
    assert wheel.next_deadline() is None
    assert wheel.advance(10**15) == []
    assert wheel.now_ms == 10**15
    assert "x" not in wheel
    assert wheel.deadline_of("x") is None


def test_add_then_advance_fires_at_the_exact_deadline() -> None:
    wheel: TimingWheel[Key] = TimingWheel(tick_ms=10)
    key = ("task-a", 1234)
    wheel.add(key, 1234)
    assert key in wheel
    assert len(wheel) == 1
    assert wheel.deadline_of(key) == 1234
    assert wheel.next_deadline() == 1234
    assert wheel.advance(1233) == []
    assert wheel.advance(1234) == [(key, 1234)]
    assert key not in wheel
    assert len(wheel) == 0
    assert wheel.next_deadline() is None


def test_never_fires_early_within_the_current_tick() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=1000, now_ms=5000)
    wheel.add("a", 5700)
    wheel.add("b", 5300)
    assert wheel.advance(5299) == []
    assert wheel.advance(5300) == [("b", 5300)]
    assert wheel.advance(5699) == []
    assert wheel.next_deadline() == 5700
    assert wheel.advance(5999) == [("a", 5700)]


def test_next_deadline_is_exact_not_rounded_to_a_slot() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10, wheel_bits=2, levels=2)
    wheel.add("far", 12_345)  # beyond the wheels: overflow heap
    assert wheel.next_deadline() == 12_345
    wheel.add("mid", 97)  # level 1
    assert wheel.next_deadline() == 97
    wheel.add("near", 23)  # level 0
    assert wheel.next_deadline() == 23
    assert wheel.advance(30) == [("near", 23)]
    assert wheel.next_deadline() == 97
    assert wheel.advance(96) == []
    assert wheel.next_deadline() == 97


def test_past_and_present_deadlines_expire_at_the_next_advance() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10, now_ms=1000)
    wheel.add("now", 1000)
    wheel.add("past", 10)
    wheel.add("negative", -5)
    assert wheel.next_deadline() == -5
    # advancing to the current time is not a no-op: it returns what is already due
    assert wheel.advance(1000) == [("negative", -5), ("past", 10), ("now", 1000)]
    assert len(wheel) == 0


def test_advance_backwards_is_a_no_op() -> None:
    wheel: TimingWheel[str] = TimingWheel(now_ms=500)
    wheel.add("a", 400)
    assert wheel.advance(499) == []
    assert wheel.now_ms == 500
    assert "a" in wheel
    assert wheel.advance(500) == [("a", 400)]


def test_order_is_deadline_then_insertion() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10, wheel_bits=3, levels=2)
    wheel.add("c", 300)
    wheel.add("a", 100)
    wheel.add("b", 300)
    wheel.add("d", 5)
    wheel.add("e", 100)
    assert wheel.advance(10_000) == [("d", 5), ("a", 100), ("e", 100), ("c", 300), ("b", 300)]


def test_replace_moves_the_deadline_and_counts_as_a_new_insertion() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10)
    wheel.add("a", 500)
    wheel.add("b", 200)
    wheel.add("a", 100)  # earlier
    assert len(wheel) == 2
    assert wheel.deadline_of("a") == 100
    assert wheel.next_deadline() == 100
    wheel.add("a", 900)  # later again
    assert wheel.next_deadline() == 200
    wheel.add("b", 900)  # same deadline as "a"; "a" was inserted first... until it is replaced
    wheel.add("a", 900)
    assert wheel.advance(899) == []
    assert wheel.advance(900) == [("b", 900), ("a", 900)]


def test_cancel() -> None:
    wheel: TimingWheel[str] = TimingWheel(tick_ms=10, wheel_bits=2, levels=2)
    wheel.add("ready", 0)
    wheel.add("wheel", 50)
    wheel.add("overflow", 10**9)
    assert wheel.cancel("ready") is True
    assert wheel.cancel("ready") is False
    assert wheel.cancel("never") is False
    assert wheel.next_deadline() == 50
    assert wheel.cancel("wheel") is True
    assert wheel.next_deadline() == 10**9
    assert wheel.cancel("overflow") is True
    assert len(wheel) == 0
    assert wheel.next_deadline() is None
    assert wheel.advance(10**10) == []


def test_many_cancels_in_every_container() -> None:
    # enough dead heap items to trigger the lazy heaps' compaction, both for the ready and the overflow heap
    wheel: TimingWheel[int] = TimingWheel(tick_ms=1, wheel_bits=2, levels=1, now_ms=1000)
    for i in range(1000):
        wheel.add(i, 1000 - i if i % 3 == 0 else (1002 if i % 3 == 1 else 10_000 + i))
    for i in range(1000):
        if i % 10:
            assert wheel.cancel(i)
    _check_invariants(wheel)  # includes the heaps' dead-item accounting after compaction
    kept = sorted((wheel.deadline_of(i), i) for i in range(0, 1000, 10))
    assert len(wheel) == 100
    assert wheel.next_deadline() == kept[0][0]
    assert wheel.advance(10**6) == [(i, d) for d, i in kept]


def test_top_level_span_boundaries() -> None:
    # one level of 4 one-ms slots: from tick 0, deadline 3 is in the wheel and 4.. overflow; each must
    # enter the wheel when time reaches the start of its 4-tick span, and fire exactly on time
    wheel: TimingWheel[str] = TimingWheel(tick_ms=1, wheel_bits=2, levels=1)
    for key, deadline in [("h", 8), ("c", 3), ("d", 4), ("g", 7), ("e", 5), ("d2", 4)]:
        wheel.add(key, deadline)
    out, nexts = [], []
    for now in range(10):
        out.append(wheel.advance(now))
        nexts.append(wheel.next_deadline())
    assert nexts == [3, 3, 3, 4, 5, 7, 7, 8, None, None]
    assert out == [[], [], [], [("c", 3)], [("d", 4), ("d2", 4)], [("e", 5)], [], [("g", 7)], [("h", 8)], []]


def test_constructor_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="tick_ms"):
        TimingWheel(tick_ms=0)
    with pytest.raises(ValueError, match="wheel_bits"):
        TimingWheel(wheel_bits=0)
    with pytest.raises(ValueError, match="levels"):
        TimingWheel(levels=0)
    with pytest.raises(ValueError, match="now_ms"):
        TimingWheel(now_ms=-1)


# -- far future and large jumps ---------------------------------------------------------------------


def test_year_2100_deadline_with_the_default_shape() -> None:
    wheel: TimingWheel[Key] = TimingWheel(now_ms=YEAR_2025_MS)
    key = ("yearly", YEAR_2100_MS)
    wheel.add(key, YEAR_2100_MS)
    wheel.add(("soon", 1), YEAR_2025_MS + 60_000)
    assert wheel.next_deadline() == YEAR_2025_MS + 60_000
    assert wheel.advance(YEAR_2025_MS + 60_000) == [(("soon", 1), YEAR_2025_MS + 60_000)]
    assert wheel.next_deadline() == YEAR_2100_MS
    # approach in a few big steps, each crossing many top-level spans
    for now in (YEAR_2025_MS + 10**11, YEAR_2100_MS - 86_400_000, YEAR_2100_MS - 1):
        assert wheel.advance(now) == []
        assert wheel.next_deadline() == YEAR_2100_MS
    assert wheel.advance(YEAR_2100_MS) == [(key, YEAR_2100_MS)]


def test_jump_of_centuries_with_one_ms_ticks_does_not_walk_ticks() -> None:
    # ~1.5e13 ticks of 1 ms through a wheel spanning 2 ticks: walking tick by tick would never finish
    wheel: TimingWheel[str] = TimingWheel(tick_ms=1, wheel_bits=1, levels=1, now_ms=0)
    wheel.add("a", YEAR_2500_MS)
    wheel.add("b", YEAR_2100_MS)
    assert wheel.advance(YEAR_2500_MS - 1) == [("b", YEAR_2100_MS)]
    assert wheel.advance(YEAR_2500_MS) == [("a", YEAR_2500_MS)]


def test_one_big_jump_returns_everything_in_order() -> None:
    rng = random.Random(7)
    wheel: TimingWheel[Key] = TimingWheel(now_ms=YEAR_2025_MS)
    expected = []
    for i in range(5000):
        deadline = YEAR_2025_MS + rng.choice(
            [rng.randrange(10**4), rng.randrange(10**9), rng.randrange(10**13)]
        )
        wheel.add((f"t{i}", deadline), deadline)
        expected.append((deadline, i, (f"t{i}", deadline)))
    expected.sort()
    cut = expected[2500][0]
    first = wheel.advance(cut)
    assert first == [(key, d) for d, _, key in expected if d <= cut]
    assert wheel.next_deadline() == min(d for d, _, _ in expected if d > cut)
    rest = wheel.advance(YEAR_2500_MS)
    assert first + rest == [(key, d) for d, _, key in expected]
    assert len(wheel) == 0


@pytest.mark.parametrize(("tick_ms", "wheel_bits", "levels"), [(10, 4, 3), (10, 8, 4), (1, 2, 1), (3, 1, 3)])
def test_many_small_steps_agree_with_sorting(tick_ms: int, wheel_bits: int, levels: int) -> None:
    rng = random.Random(11)
    wheel: TimingWheel[int] = TimingWheel(tick_ms=tick_ms, wheel_bits=wheel_bits, levels=levels)
    deadlines = {i: rng.randrange(200_000) for i in range(3000)}
    for key, deadline in deadlines.items():
        wheel.add(key, deadline)
    out: list[tuple[int, int]] = []
    now = 0
    while now < 200_000:
        now += rng.randrange(1, 700)
        out.extend(wheel.advance(now))
        nxt = wheel.next_deadline()
        assert nxt is None or nxt > now
    assert out == sorted(((k, d) for k, d in deadlines.items()), key=lambda kd: (kd[1], kd[0]))


# -- model-based ------------------------------------------------------------------------------------

SHAPES = st.sampled_from(
    [
        (10, 8, 4),  # the production default
        (1, 1, 1),  # two slots, everything else overflows
        (1, 2, 2),
        (3, 2, 3),
        (7, 3, 2),
        (1000, 4, 2),
    ]
)
STARTS = st.sampled_from([0, 1, 255, YEAR_2025_MS, YEAR_2100_MS]) | st.integers(0, 2**44)
OFFSETS = st.one_of(
    st.integers(-30, 30),
    st.integers(-5_000, 5_000),
    st.integers(-(10**6), 10**7),
    st.integers(0, 2**42),  # up to ~140 years ahead
)
STEPS = st.one_of(
    st.integers(-20, -1),  # time going back: no-op
    st.integers(0, 30),
    st.integers(0, 10_000),
    st.integers(0, 2**42),
)


class WheelMachine(RuleBasedStateMachine):
    """The wheel against a dict of key -> (deadline, insertion seq)."""

    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimingWheel[int] = TimingWheel()
        self.model: dict[int, tuple[int, int]] = {}
        self.now = 0
        self.seq = 0

    @initialize(shape=SHAPES, start=STARTS)
    def start(self, shape: tuple[int, int, int], start: int) -> None:
        tick_ms, wheel_bits, levels = shape
        self.wheel = TimingWheel(tick_ms=tick_ms, wheel_bits=wheel_bits, levels=levels, now_ms=start)
        self.now = start

    @rule(key=st.integers(0, 12), offset=OFFSETS)
    def add(self, key: int, offset: int) -> None:
        self.seq += 1
        self.model[key] = (self.now + offset, self.seq)
        self.wheel.add(key, self.now + offset)

    @rule(key=st.integers(0, 12))
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) is (self.model.pop(key, None) is not None)

    @rule(step=STEPS)
    def advance(self, step: int) -> None:
        self._advance_to(self.now + step)

    @rule(delta=st.integers(-2, 2))
    def advance_near_next_deadline(self, delta: int) -> None:
        if self.model:
            self._advance_to(min(d for d, _ in self.model.values()) + delta)

    def _advance_to(self, now: int) -> None:
        expected: list[tuple[int, int]] = []
        if now >= self.now:
            self.now = now
            due = sorted((d, s, k) for k, (d, s) in self.model.items() if d <= now)
            expected = [(k, d) for d, _, k in due]
            for k, _ in expected:
                del self.model[k]
        assert self.wheel.advance(now) == expected

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.wheel.now_ms == self.now
        assert len(self.wheel) == len(self.model)
        expected_next = min((d for d, _ in self.model.values()), default=None)
        assert self.wheel.next_deadline() == expected_next
        _check_invariants(self.wheel)
        for key in range(13):
            assert (key in self.wheel) is (key in self.model)
            held = self.model.get(key)
            assert self.wheel.deadline_of(key) == (None if held is None else held[0])


WheelMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wheel_matches_model = WheelMachine.TestCase
