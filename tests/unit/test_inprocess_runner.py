"""How an in-process attempt (client/_inprocess_runner.py) waits for its work: with start instants spread
over the second each start is alone at its instant, and each loop iteration and timer between the start
and the result was paid once per start (bench/perf_worker.py --rate)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fake_gateway import make_lease

from cronraft.client._inprocess_runner import InProcessIO, InProcessRunner, InProcessWork, WorkOutcome
from cronraft.client._runner import StopReason
from cronraft.clock import SystemClock
from cronraft.proto.v1 import common_pb2


async def at_once(io: InProcessIO) -> WorkOutcome:
    return WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED)


async def after_a_step(io: InProcessIO) -> WorkOutcome:
    await asyncio.sleep(0)
    return WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED)


async def iterations_until_done(task: asyncio.Task[Any]) -> int:
    """Loop iterations until `task` is done (each `sleep(0)` lets one iteration run)."""
    n = 0
    while not task.done():
        await asyncio.sleep(0)
        n += 1
    return n


class TimerCountingLoop(asyncio.SelectorEventLoop):
    """The stock loop, counting the timers armed (call_later arms through call_at)."""

    timers = 0

    def call_at(self, when: float, callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


def runner_of(work: InProcessWork, timeout_ms: int = 0) -> InProcessRunner:
    lease = make_lease("exec-1", timeout_ms=timeout_ms)
    return InProcessRunner(lease, work, what="handler", clock=SystemClock())


def run_counting_timers(work: InProcessWork, timeout_ms: int) -> tuple[int, common_pb2.AttemptResult]:
    """Runs the attempt on a loop of its own: (timers armed, its result)."""
    runner = runner_of(work, timeout_ms)
    loop = TimerCountingLoop()
    try:
        result = loop.run_until_complete(runner.run())
    finally:
        loop.close()
    return loop.timers, result


@pytest.mark.asyncio
async def test_an_in_process_attempt_whose_work_ends_at_once_ends_in_the_same_iteration() -> None:
    """run() steps, its work's task steps, run() resumes right after it in the same iteration and ends:
    2 iterations (woken by its work's last step, run() ended in the next iteration: 3; through a done
    callback of the work's task: 4)."""
    runner = runner_of(at_once)
    run = asyncio.create_task(runner.run())
    assert await iterations_until_done(run) == 2
    assert run.result().outcome == common_pb2.ATTEMPT_SUCCEEDED


@pytest.mark.asyncio
async def test_an_in_process_attempt_whose_work_waits_resumes_in_the_iteration_after_it_ends() -> None:
    runner = runner_of(after_a_step, timeout_ms=60_000)
    run = asyncio.create_task(runner.run())
    # run(), the work's first step and run() resumed after it, its second step waking run(), run() ends
    assert await iterations_until_done(run) == 4
    assert run.result().outcome == common_pb2.ATTEMPT_SUCCEEDED


@pytest.mark.asyncio
async def test_an_in_process_attempt_whose_work_raises_still_wakes_and_reports_it() -> None:
    async def work(io: InProcessIO) -> WorkOutcome:
        raise RuntimeError("a bug of ours")

    runner = runner_of(work)
    with pytest.raises(RuntimeError, match="a bug of ours"):
        await asyncio.wait_for(runner.run(), 5)


def test_work_that_ends_in_its_first_step_arms_no_timeout_timer() -> None:
    timers, result = run_counting_timers(at_once, timeout_ms=60_000)
    assert timers == 0
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED


def test_work_still_running_after_its_first_step_is_timed_out_from_the_start() -> None:
    timers, result = run_counting_timers(after_a_step, timeout_ms=60_000)
    assert timers == 1  # armed once the first step did not end it
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED

    async def forever(io: InProcessIO) -> WorkOutcome:
        await asyncio.sleep(3600)
        raise AssertionError("not timed out")

    loop = asyncio.new_event_loop()
    runner = runner_of(forever, timeout_ms=50)
    try:
        began = loop.time()
        result = loop.run_until_complete(runner.run())
        took = loop.time() - began
    finally:
        loop.close()
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
    assert 0.05 - 0.002 <= took < 1.0  # the lease's timeout, counted from run()


@pytest.mark.asyncio
async def test_a_stop_before_the_works_first_step_ends_the_attempt_without_waiting_for_it() -> None:
    cancelled: list[bool] = []

    async def forever(io: InProcessIO) -> WorkOutcome:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.append(io.cancelled.is_set())
        raise AssertionError("not stopped")

    runner = runner_of(forever, timeout_ms=60_000)
    run = asyncio.create_task(runner.run())
    await asyncio.sleep(0)  # run() stepped: its work's first step is next
    runner.stop(StopReason.CANCELLED)
    result = await asyncio.wait_for(run, 5)
    assert result.outcome == common_pb2.ATTEMPT_CANCELLED
    assert cancelled == [True]
