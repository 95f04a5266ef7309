"""The start gates of held starts (client/worker/start_gate.py) and the holds that wait at them
(client/_runner.py `RunnerBase.hold_on`): with start instants spread over the second each start is alone
at its instant, and every loop iteration and timer between the offer and the start was paid once per
start (bench/perf_worker.py --rate)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from fake_gateway import make_lease

from cronraft.client._inprocess_runner import InProcessIO, InProcessRunner, WorkOutcome
from cronraft.client._runner import StopReason
from cronraft.client.worker.heartbeat_plan import CONFIRM_SPACING_S
from cronraft.client.worker.leases import CONFIRM_AHEAD_S, Attempt
from cronraft.client.worker.start_gate import GATE_S, StartGates
from cronraft.clock import Clock, SystemClock, mono_s
from cronraft.proto.v1 import common_pb2
from tests.support.clock import FakeClock

NOW_S = 1000.0  # the fake clock's monotonic time (it stays there: the gates' timers run on the loop)
FAR = NOW_S + 30  # a lease deadline well after every instant here


class Gates(StartGates):
    """StartGates joined by start instant and lease deadline (`join_at`); `ack(sent)` answers a heartbeat
    sent at `sent` listing every start joined so far, as leases.renew records it."""

    def __init__(self, clock: Clock, ask_heartbeat: Callable[[], None]) -> None:
        super().__init__(clock, ask_heartbeat)
        self.joined: list[Attempt] = []

    def join_at(self, start_at: float, deadline: float) -> asyncio.Future[None]:
        attempt = held_attempt(f"exec-{len(self.joined)}", start_at, deadline)
        self.joined.append(attempt)
        return self.join(attempt)

    def ack(self, sent: float, *attempts: Attempt) -> None:
        for attempt in attempts or self.joined:
            attempt.confirmed_at = max(attempt.confirmed_at, sent)
        self.acked()


def held_attempt(eid: str, start_at: float, deadline: float) -> Attempt:
    lease = make_lease(eid)
    lease.start_delay_ms = 1
    runner: Any = None  # the gates never touch it
    return Attempt((eid, (1, 1)), lease, runner, 30.0, deadline=deadline, start_at=start_at)


def handler_runner() -> InProcessRunner:
    async def work(io: InProcessIO) -> WorkOutcome:
        return WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED)

    return InProcessRunner(make_lease("exec-1"), work, what="handler", clock=SystemClock())


async def iterations_until_done(task: asyncio.Task[object]) -> int:
    """Loop iterations until `task` is done (each `sleep(0)` lets one iteration run)."""
    n = 0
    while not task.done():
        await asyncio.sleep(0)
        n += 1
    return n


@pytest.mark.asyncio
async def test_a_gate_opens_at_its_instant_once_confirmed_and_wakes_every_start_of_it() -> None:
    asked: list[int] = []
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: asked.append(1))
    first = gates.join_at(NOW_S + 0.0095, FAR)
    second = gates.join_at(NOW_S + 0.0099, FAR)  # the same gate: instants are rounded up to GATE_S (5 ms)
    later = gates.join_at(NOW_S + 0.0305, FAR)  # the gate of 35 ms
    assert len(asked) == 3  # each start asks at once: less than 100 ms ahead (asks before a send are one)
    await asyncio.sleep(0.05)  # past both instants, no heartbeat answered
    assert not (first.done() or second.done() or later.done())  # never unconfirmed
    assert len(asked) == 5  # each gate asked again at its instant
    gates.ack(NOW_S + 0.015 - CONFIRM_AHEAD_S)  # confirms the first gate's instant, not the later one
    assert first.done() and second.done()  # completed by the gate itself, no callback in between
    assert not later.done()
    gates.ack(NOW_S)
    assert later.done()


@pytest.mark.asyncio
async def test_a_gate_asks_for_its_confirmation_ahead_of_its_instant_and_opens_on_time() -> None:
    asked: list[float] = []
    loop = asyncio.get_running_loop()
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: asked.append(loop.time()))
    began = loop.time()
    gate = gates.join_at(NOW_S + CONFIRM_AHEAD_S + 0.0195, FAR)  # the gate of 120 ms
    gates.ack(NOW_S + 0.03)  # answered: the gate's instant is confirmed already
    assert not asked  # a timer asks CONFIRM_AHEAD_S before the instant
    await gate
    opened = loop.time() - began
    assert len(asked) == 1 and asked[0] - began >= 0.02 - 0.001
    assert opened >= CONFIRM_AHEAD_S + 0.02 - 0.001


@pytest.mark.asyncio
async def test_a_held_start_resumes_in_the_iteration_after_its_gate_opens() -> None:
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    hold = asyncio.create_task(runner.hold_on(gates.join_at(NOW_S + 0.0035, FAR)))
    await asyncio.sleep(0.02)  # waiting at its gate, unconfirmed
    assert not hold.done()
    gates.ack(NOW_S)  # opens the gate: it completes the hold's future itself
    assert await iterations_until_done(hold) == 1  # through a done callback: 2
    assert hold.result() is False  # not stopped: go on


@pytest.mark.asyncio
async def test_a_stop_wakes_a_start_held_at_its_gate_and_the_gate_opens_later_regardless() -> None:
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    gate = gates.join_at(NOW_S + 0.0035, FAR)
    hold = asyncio.create_task(runner.hold_on(gate))
    await asyncio.sleep(0)
    runner.stop(StopReason.CANCELLED)
    assert await hold is True  # stopped: must not start
    assert gate.done()
    gates.ack(NOW_S)
    await asyncio.sleep(0.01)  # the gate opens past a future already completed: no error
    assert await runner.hold_on(gates.join_at(NOW_S + 0.0035, FAR)) is True  # stopped before: at once


@pytest.mark.asyncio
async def test_a_hold_on_a_future_ends_at_its_delay_if_given_one() -> None:
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    assert await runner.hold_on(gates.join_at(NOW_S + 0.0035, FAR), 0.02) is False  # never confirmed
    assert await runner.hold_on(gates.join_at(NOW_S + 0.0035, FAR), 0.0) is False  # no delay left: no wait


@pytest.mark.asyncio
async def test_a_start_whose_deadline_passes_at_a_closed_gate_is_let_go_at_its_deadline() -> None:
    """Unconfirmed past its instant, a gate lets each start go at its lease deadline (await_start then
    fences it unstarted): the gate's one timer, where each hold had its own."""
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    now = mono_s(clock)
    gates = Gates(clock, lambda: None)
    began = loop.time()
    soon = gates.join_at(now + 0.0035, now + 0.03)
    later = gates.join_at(now + 0.0035, now + 30)
    await asyncio.wait_for(soon, 5)
    assert loop.time() - began >= 0.03 - 0.002  # at its deadline (ms clock), not at the instant
    assert not later.done()
    gates.ack(now + 1)  # confirmed: the gate opens for the rest
    assert later.done()


@pytest.mark.asyncio
async def test_a_start_joining_past_its_deadline_is_not_held_and_a_stop_first_still_wins() -> None:
    clock = FakeClock(mono=int(NOW_S * 1000))
    gates = Gates(clock, lambda: None)
    late = gates.join_at(NOW_S + 0.0035, NOW_S)
    assert late.done()
    first = gates.join_at(NOW_S + 0.0035, NOW_S + 0.01)
    kept = gates.join_at(NOW_S + 0.0035, FAR)
    clock.advance_to(NOW_S + 0.012)  # past the first's deadline before its gate's instant came
    await asyncio.sleep(0.02)  # the instant came (the loop's time), unconfirmed
    assert first.done() and not kept.done()
    runner = handler_runner()
    runner.stop(StopReason.CANCELLED)
    assert await runner.hold_on(gates.join_at(NOW_S + 0.0135, NOW_S)) is True


@pytest.mark.asyncio
async def test_gates_offered_ahead_share_their_asks_one_per_heartbeat_spacing() -> None:
    """Leases offered 0.5 s ahead (W5): each gate asked for its confirmation with a timer of its own, a
    wake-up per start. The heartbeat loop sends one at most every CONFIRM_SPACING_S and each lists every
    start within CONFIRM_AHEAD_S of its send: asks closer together are one, asked no later than the
    heartbeat would have gone."""
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    asked: list[float] = []
    gates = Gates(clock, lambda: asked.append(mono_s(clock)))
    now = mono_s(clock)
    first = now + CONFIRM_AHEAD_S + 0.02
    instants = [first + i * 0.002 for i in range(20)]  # 20 gates 2 ms apart, asks due from 20 ms on
    joined = [gates.join_at(at, now + 30) for at in instants]
    assert not asked
    began = loop.time()
    while loop.time() - began < 0.09:  # until the first instant (unconfirmed gates ask again then)
        await asyncio.sleep(0.005)
    ahead = [t for t in asked if t < first]
    assert 2 <= len(ahead) <= 3, asked  # one per gate before
    assert ahead[0] >= first - CONFIRM_AHEAD_S - 0.002
    assert all(b - a >= CONFIRM_SPACING_S - 0.002 for a, b in itertools.pairwise(ahead))
    assert ahead[-1] >= instants[-1] - CONFIRM_AHEAD_S - 0.002  # the last gate's ask came too
    gates.ack(now + 1)
    await asyncio.sleep(instants[-1] - mono_s(clock) + 0.01)
    assert all(j.done() for j in joined)


class TimerCountingLoop(asyncio.SelectorEventLoop):
    """The stock loop, counting the timers armed (call_later arms through call_at)."""

    timers = 0

    def call_at(self, when: float, callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


def test_unconfirmed_gates_share_one_timer_for_their_deadlines() -> None:
    """A gate past its instant before its confirmation was read armed a timer for its starts' deadline,
    cancelled when the confirmation came (it stayed in the loop's heap until the deadline): one timer
    now, at the earliest deadline of them all."""

    async def run() -> list[bool]:
        clock = SystemClock()
        gates = Gates(clock, lambda: None)
        now = mono_s(clock)
        joined = [gates.join_at(now + 0.003 + i * GATE_S, now + 30 + i) for i in range(10)]
        await asyncio.sleep(0.01 + 10 * GATE_S)  # every instant passed, none confirmed
        gates.ack(now + 1)
        return [j.done() for j in joined]

    loop = TimerCountingLoop()
    try:
        done = loop.run_until_complete(run())
    finally:
        loop.close()
    assert all(done)
    assert loop.timers == 10 + 1 + 1  # each gate's instant, one deadline timer, the sleep


@pytest.mark.asyncio
async def test_a_start_joining_after_its_gates_heartbeat_went_asks_at_once_and_waits_for_its_own() -> None:
    """Two starts of one instant offered apart: the confirming heartbeat the first asked for went before
    the second came and did not list it. The gate opened for that heartbeat's answer and the second went
    on unconfirmed to await_confirmation, which asked for its heartbeat only at the instant: 1.2 % of the
    starts late in bench/perf_worker.py --rate 500, p99 65 ms. Now the second asks as it joins, and only
    the answer to a heartbeat listing it lets it go."""
    asked: list[int] = []
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: asked.append(1))
    first = held_attempt("exec-first", NOW_S + 0.0195, FAR)
    second = held_attempt("exec-second", NOW_S + 0.0199, FAR)  # the same gate (20 ms)
    first_joined = gates.join(first)
    assert len(asked) == 1
    # The heartbeat asked for goes now, listing the first only; the second comes after it.
    second_joined = gates.join(second)
    assert len(asked) == 2  # its own confirming heartbeat, at once: not at the instant
    gates.ack(NOW_S, first)  # the answer to the heartbeat listing the first
    await asyncio.sleep(0.03)  # past the instant
    assert first_joined.done()
    assert not second_joined.done()  # the answer did not confirm its lease
    gates.ack(NOW_S + 0.001, second)
    assert second_joined.done()


@pytest.mark.asyncio
async def test_a_start_joining_a_gate_past_its_instant_goes_once_confirmed() -> None:
    gates = Gates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    waiting = gates.join_at(NOW_S + 0.0015, FAR)
    await asyncio.sleep(0.01)  # the gate waits past its instant, unconfirmed
    confirmed = held_attempt("exec-confirmed", NOW_S + 0.0013, FAR)
    confirmed.confirmed_at = NOW_S
    assert gates.join(confirmed).done()  # confirmed already: not held behind the other
    assert not waiting.done()
