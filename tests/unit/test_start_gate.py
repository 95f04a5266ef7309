"""The start gates of held starts (client/worker/start_gate.py) and the holds that wait at them
(client/_runner.py `RunnerBase.hold_on`), and how soon an in-process attempt resumes once its work ended
(client/_inprocess_runner.py): with start instants spread over the second each start is alone at its
instant, and every loop iteration between the instant and the result was paid once per start
(bench/perf_worker.py --rate)."""

from __future__ import annotations

import asyncio

import pytest
from fake_gateway import make_lease

from cronraft.client._inprocess_runner import InProcessIO, InProcessRunner, WorkOutcome
from cronraft.client._runner import StopReason
from cronraft.client.worker.leases import CONFIRM_AHEAD_S
from cronraft.client.worker.start_gate import StartGates
from cronraft.clock import SystemClock
from cronraft.proto.v1 import common_pb2
from tests.support.clock import FakeClock

NOW_S = 1000.0  # the fake clock's monotonic time (it stays there: the gates' timers run on the loop)


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
    gates = StartGates(FakeClock(mono=int(NOW_S * 1000)), lambda: asked.append(1))
    first = gates.join(NOW_S + 0.0095)
    second = gates.join(NOW_S + 0.0099)  # the same gate: instants are rounded up to GATE_S (10 ms)
    later = gates.join(NOW_S + 0.0305)  # the gate of 32 ms
    assert len(asked) == 2  # one confirming heartbeat per gate, asked at once: less than 100 ms ahead
    await asyncio.sleep(0.05)  # past both instants, no heartbeat answered
    assert not (first.done() or second.done() or later.done())  # never unconfirmed
    assert len(asked) == 4  # each gate asked again at its instant
    gates.acked(NOW_S + 0.015 - CONFIRM_AHEAD_S)  # confirms the first gate's instant, not the later one
    assert first.done() and second.done()  # completed by the gate itself, no callback in between
    assert not later.done()
    gates.acked(NOW_S)
    assert later.done()


@pytest.mark.asyncio
async def test_a_gate_asks_for_its_confirmation_ahead_of_its_instant_and_opens_on_time() -> None:
    asked: list[float] = []
    loop = asyncio.get_running_loop()
    gates = StartGates(FakeClock(mono=int(NOW_S * 1000)), lambda: asked.append(loop.time()))
    began = loop.time()
    gate = gates.join(NOW_S + CONFIRM_AHEAD_S + 0.0195)  # the gate of 120 ms
    gates.acked(NOW_S + 0.03)  # answered: the gate's instant is confirmed already
    assert not asked  # a timer asks CONFIRM_AHEAD_S before the instant
    await gate
    opened = loop.time() - began
    assert len(asked) == 1 and asked[0] - began >= 0.02 - 0.001
    assert opened >= CONFIRM_AHEAD_S + 0.02 - 0.001


@pytest.mark.asyncio
async def test_a_held_start_resumes_in_the_iteration_after_its_gate_opens() -> None:
    gates = StartGates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    hold = asyncio.create_task(runner.hold_on(gates.join(NOW_S + 0.0035), 30.0))
    await asyncio.sleep(0.02)  # waiting at its gate, unconfirmed
    assert not hold.done()
    gates.acked(NOW_S)  # opens the gate: it completes the hold's future itself
    assert await iterations_until_done(hold) == 1  # through a done callback: 2
    assert hold.result() is False  # not stopped: go on


@pytest.mark.asyncio
async def test_a_stop_wakes_a_start_held_at_its_gate_and_the_gate_opens_later_regardless() -> None:
    gates = StartGates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    gate = gates.join(NOW_S + 0.0035)
    hold = asyncio.create_task(runner.hold_on(gate, 30.0))
    await asyncio.sleep(0)
    runner.stop(StopReason.CANCELLED)
    assert await hold is True  # stopped: must not start
    assert gate.done()
    gates.acked(NOW_S)
    await asyncio.sleep(0.01)  # the gate opens past a future already completed: no error
    assert await runner.hold_on(gates.join(NOW_S + 0.0035), 30.0) is True  # stopped before: at once


@pytest.mark.asyncio
async def test_a_hold_at_a_gate_ends_at_its_delay() -> None:
    gates = StartGates(FakeClock(mono=int(NOW_S * 1000)), lambda: None)
    runner = handler_runner()
    assert await runner.hold_on(gates.join(NOW_S + 0.0035), 0.02) is False  # never confirmed
    assert await runner.hold_on(gates.join(NOW_S + 0.0035), 0.0) is False  # no delay left: no wait


@pytest.mark.asyncio
async def test_an_in_process_attempt_resumes_in_the_iteration_after_its_work_ends() -> None:
    """run() steps, its work's task steps and wakes it from its last step, run() ends: 3 iterations (a
    done callback of the work's task between the last two made 4)."""
    runner = handler_runner()
    run = asyncio.create_task(runner.run())
    assert await iterations_until_done(run) == 3
    assert run.result().outcome == common_pb2.ATTEMPT_SUCCEEDED


@pytest.mark.asyncio
async def test_an_in_process_attempt_whose_work_raises_still_wakes_and_reports_it() -> None:
    async def work(io: InProcessIO) -> WorkOutcome:
        raise RuntimeError("a bug of ours")

    runner = InProcessRunner(make_lease("exec-1"), work, what="handler", clock=SystemClock())
    with pytest.raises(RuntimeError, match="a bug of ours"):
        await asyncio.wait_for(runner.run(), 5)
