"""What must hold before an attempt's payload begins, beyond the policy (checked first, `refusal`):

- a lease granted ahead of its due time (fire ahead) is held until then, at one gate per start instant,
  and starts only once the leader confirmed it (`StartGates.await_start`);
- a lease with a sensor runs the sensor's probe every interval until it succeeds (`await_sensor`).

An attempt that ends here (cancel, revoke, self-fence, shutdown) never began: its result is
ATTEMPT_NOT_STARTED and the cluster grants it again without spending an attempt.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

from cronraft.client._policy import WorkerPolicy
from cronraft.client._runner import OutputSink, Runner, StopReason, stop_result
from cronraft.client.worker.heartbeat_plan import CONFIRM_SPACING_S
from cronraft.client.worker.leases import CONFIRM_AHEAD_S, Attempt
from cronraft.client.worker.results import not_started
from cronraft.client.worker.ticks import TICK_S, same_clock
from cronraft.clock import Clock, mono_s
from cronraft.proto.v1 import common_pb2, worker_pb2

# Held starts are gated per start instant rounded up to this (a gate never opens before its starts), so
# a held start begins up to GATE_S after its instant. Each gate is a timer that wakes the worker from its
# sleep, and on the benchmark VMs a wake-up costs 60-150 us of CPU, mostly the kernel's (an empty asyncio
# timer every 1-20 ms), which no profile of the Python code shows. With start instants spread over the
# second (W5) every gate is a wake-up: at 2 ms a worker with 1,000 held starts a second woke 500 times a
# second, 0.50 wake-ups per start against 0.12 for the same leases unheld (bench/perf_worker.py --rate
# 1000 --lead-ms 500); at 5 ms, 0.30, and 166 -> 150 us of CPU per start (4,000/s: 108 -> 98). At most 200
# gates a second; a start is 2.5 ms later on average, well inside W3's 50 ms. The worker's other timers
# wake it at the same instants (ticks).
GATE_S = TICK_S


def refusal(
    policy: WorkerPolicy,
    lease: worker_pb2.Lease,
    *,
    environ: Mapping[str, str],
    worker_id: str,
    clock: Clock,
    log: Any,
) -> common_pb2.AttemptResult | None:
    """The result of a lease this worker's policy refuses (nothing starts), or None."""
    reason = policy.refusal(lease, environ)
    if reason is None:
        return None
    log.warning("lease refused by the policy", execution_id=lease.execution_id, reason=reason)
    return common_pb2.AttemptResult(
        execution_id=lease.execution_id,
        token=lease.token,
        outcome=common_pb2.ATTEMPT_REFUSED,
        exit_code=-1,
        finished_at_ms=clock.now_ms(),
        error=f"refused by worker {worker_id}: {reason}",
    )


class StartGates:
    """Held starts wait at one gate per start instant. At the instant a start goes once its own lease was
    confirmed (`Attempt.confirmed`: the leader answered a heartbeat listing it, sent at most
    CONFIRM_AHEAD_S before its start); an unconfirmed one waits for its confirmation (`acked`) or its
    deadline. `ask_heartbeat()` asks the worker for a heartbeat now; `acked()` tells the gates that a
    heartbeat was answered and its renewals recorded in the attempts (leases.renew).

    Only a confirmation of the start's own lease lets it go: a gate opened for any heartbeat answered
    that was sent late enough, and a start that joined its gate after that heartbeat had gone (another
    start of the same instant's, offered earlier) was not listed by it; it went on unconfirmed to
    `await_confirmation`, which asked for its heartbeat only then, at the instant: late by the spacing
    and a round trip (1.2 % of the starts in bench/perf_worker.py --rate 500, p99 65 ms). So every start
    offered less than CONFIRM_AHEAD_S ahead asks for its confirming heartbeat as it joins, whether its
    gate is new or not.

    A gate holds one future per start (`join`), each its attempt's own, and completes them itself: when
    the start is confirmed at or past the instant, or when its lease deadline passes while it waits
    unconfirmed past its instant. The attempt then resumes in the next loop iteration. (A future shared
    by the gate's starts woke each through a done callback, one iteration more, and each hold had a
    deadline timer of its own; with start instants spread over the second each start is alone at its gate
    and paid both: bench/perf_worker.py --rate.)

    The gates share two more timers: one asks for the confirmations of the gates offered more than
    CONFIRM_AHEAD_S ahead, one lets go the starts of unconfirmed gates at their deadlines. (Each gate had
    a timer of its own for each: its ask, a wake-up of the worker per start when leases come 0.5 s ahead
    (W5), and its deadline, armed when the gate opened before its confirmation was read and cancelled
    when it was, staying in the loop's timer heap until the deadline, seconds later: in a W5 worker's
    profile the gates' part of the heartbeat answers and their deadline timers were a tenth of its CPU.)"""

    def __init__(self, clock: Clock, ask_heartbeat: Callable[[], None]) -> None:
        self._clock = clock
        self._ask_heartbeat = ask_heartbeat
        # gate -> its starts: each one's future, its lease deadline as it joined (mono_s(clock)) and its
        # attempt (whose `confirmed` lets it go)
        self._gates: dict[int, list[tuple[asyncio.Future[None], float, Attempt]]] = {}
        self._waiting: set[int] = set()  # gates past their instant with starts unconfirmed
        # At the earliest lease deadline of a waiting gate's starts, or earlier (then it finds nothing
        # due and comes back): never cancelled when the gates it was armed for open.
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf
        # When the gates offered ahead ask for their confirmations (mono_s, a heap), and the one timer
        # that asks for the earliest.
        self._asks: list[float] = []
        self._ask_timer: asyncio.TimerHandle | None = None
        self._ask_at = math.inf
        self._same_clock: bool | None = None  # ticks.same_clock, once the loop is known

    def acked(self) -> None:
        """A heartbeat was answered: the starts it confirmed at waiting gates go."""
        for key in list(self._waiting):
            self._settle(key)

    def join(self, attempt: Attempt) -> asyncio.Future[None]:
        """A future completed once the gate of the starts due at `attempt.start_at` (rounded up to GATE_S)
        is open and `attempt` confirmed, or once its lease deadline (`attempt.deadline` as it joins) has
        passed while it waits unconfirmed past the instant (the caller fences the start); at once if the
        deadline has passed already. A new gate asks for the confirming heartbeat CONFIRM_AHEAD_S before
        its instant; a start joining less than CONFIRM_AHEAD_S before it asks at once (the heartbeat its
        gate asked for may have gone before it came, without it)."""
        start_at = attempt.start_at
        deadline = attempt.deadline
        # An instant on the grid is its own gate's: start_at / GATE_S may come out a hair above the whole
        # number (1234.57 / 0.005), which put the start in the next gate, 5 ms later.
        key = math.ceil(start_at / GATE_S - 1e-6)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        now = mono_s(self._clock)
        if deadline <= now:
            future.set_result(None)
            return future
        wait = key * GATE_S - now
        if wait <= CONFIRM_AHEAD_S and not attempt.confirmed:
            self._ask_heartbeat()
        starts = self._gates.get(key)
        if starts is not None:
            starts.append((future, deadline, attempt))
            if key in self._waiting:
                self._settle(key)  # confirmed already, or its deadline timer may need to come sooner
            return future
        self._gates[key] = [(future, deadline, attempt)]
        if wait > CONFIRM_AHEAD_S:
            self._ask_later(key * GATE_S - CONFIRM_AHEAD_S, now)
        self._call_at(key * GATE_S, now, self._open, key)
        return future

    def _call_at(
        self, at: float, now: float, callback: Callable[..., object], *args: object
    ) -> asyncio.TimerHandle:
        """Call `callback(*args)` at the instant `at` (mono_s), `now` being mono_s read just before: at
        that loop time on the system clock, a tick when `at` is on the GATE_S grid (ticks.same_clock)."""
        loop = asyncio.get_running_loop()
        if self._same_clock is None:
            self._same_clock = same_clock(self._clock, loop)
        return loop.call_at(at if self._same_clock else loop.time() + at - now, callback, *args)

    def _ask_later(self, at: float, now: float) -> None:
        heapq.heappush(self._asks, at)
        if at < self._ask_at:
            if self._ask_timer is not None:
                self._ask_timer.cancel()
            self._arm_ask(at, now)

    def _arm_ask(self, at: float, now: float) -> None:
        self._ask_at = at
        self._ask_timer = self._call_at(at, now, self._ask_due)

    def _ask_due(self) -> None:
        """Ask for the confirming heartbeat of the gates whose ask is due. It lists every start due within
        CONFIRM_AHEAD_S of its send, and the next heartbeat goes CONFIRM_SPACING_S after it at the
        earliest (heartbeat_plan): an ask before then would only wait for that spacing, so the next one
        is asked for then, at the earliest. A start is confirmed as soon as it was (its heartbeat goes
        at the same instant), with one wake-up per heartbeat instead of one per gate."""
        # The heartbeat goes now, which may be later than the timer was armed for (a busy loop): it lists
        # the starts of every ask due by now, and the spacing counts from now.
        now = mono_s(self._clock)
        asked = max(self._ask_at, now)
        self._ask_timer = None
        self._ask_at = math.inf
        self._ask_heartbeat()
        asks = self._asks
        while asks and asks[0] <= asked:
            heapq.heappop(asks)
        if asks:
            # At the tick the heartbeat loop waits for to keep the spacing (heartbeats.Heartbeats.loop).
            spaced = math.ceil((now + CONFIRM_SPACING_S) / GATE_S - 1e-6) * GATE_S
            self._arm_ask(max(asks[0], spaced), now)

    def _open(self, key: int) -> None:
        """The gate's instant came: its confirmed starts go, the others wait (asking again)."""
        starts = self._gates.get(key)
        if starts is None:
            return
        for _, _, attempt in starts:
            if not attempt.confirmed:
                break
        else:  # the usual case: every start confirmed ahead
            del self._gates[key]
            for future, _, _ in starts:
                if not future.done():  # stopped meanwhile (RunnerBase.hold_on), or its task cancelled
                    future.set_result(None)
            return
        self._waiting.add(key)
        if self._settle(key):
            self._ask_heartbeat()

    def _settle(self, key: int) -> bool:
        """The gate `key` is past its instant: let go its confirmed starts and those whose deadline passed
        (StartGates.await_start fences these unstarted), and have the expiry timer come back by the
        earliest deadline left. Whether any start still waits there."""
        now = mono_s(self._clock)
        left = []
        for start in self._gates[key]:
            future, deadline, attempt = start
            if future.done():  # stopped meanwhile, or its task cancelled
                continue
            if attempt.confirmed or deadline <= now:
                future.set_result(None)
            else:
                left.append(start)
        if not left:
            del self._gates[key]
            self._waiting.discard(key)
            return False
        self._gates[key] = left
        due = min(deadline for _, deadline, _ in left)
        if due < self._expiry_at:
            if self._expiry is not None:
                self._expiry.cancel()
            self._expiry_at = due
            self._expiry = asyncio.get_running_loop().call_later(due - now, self._expire_waiting)
        return True

    def _expire_waiting(self) -> None:
        self._expiry = None
        self._expiry_at = math.inf
        for key in list(self._waiting):
            self._settle(key)

    async def await_start(self, attempt: Attempt) -> common_pb2.AttemptResult | None:
        """Hold a lease granted ahead of its due time until then (None: start now). A cancel, revoke,
        self-fence or shutdown meanwhile ends the attempt unstarted (ATTEMPT_NOT_STARTED)."""
        runner = attempt.runner
        lease = attempt.lease
        if lease.start_delay_ms > 0 or lease.start_at_ms > 0:
            # Granted ahead: started only once confirmed (await_confirmation), even if the offer was
            # written after its due time (no delay left). The leader counts on that: a held lease it never
            # confirmed cannot have begun, so its expiry grants it again without spending an attempt.
            stopped = False
            if lease.start_delay_ms > 0:
                # Every start of the instant waits at one gate, and wakes once: when 10,000 held starts
                # each woke at the instant, found the confirmation not yet read and waited again, the
                # heartbeat answer queued behind those wake-ups (W1: starts 0.3-1.5 s after the instant).
                gate = self.join(attempt)
                stopped = await runner.hold_on(gate)
                stopped = stopped or await runner.hold(attempt.start_at - mono_s(self._clock))
            # Confirmed at its gate in the usual case: no coroutine for await_confirmation.
            confirmed = stopped or attempt.confirmed or await self.await_confirmation(attempt)
        else:
            confirmed = True
        if runner.stop_reason is None:
            if confirmed and mono_s(self._clock) < attempt.deadline:
                return None
            # Unconfirmed at its deadline, or the lease ran out before the start (during the hold, or
            # before the offer was even read) and the fence loop has not run yet: after a pause
            # (SIGSTOP) they all wake together, and a start now would run beside the attempt the leader
            # has re-granted elsewhere (found by fault scenario S8). Fence it unstarted.
            attempt.fenced = True
            runner.stop(StopReason.FENCED)
        reason = runner.stop_reason
        assert reason is not None
        return not_started(attempt.lease, stop_result(reason, lease, "not started")[1], self._clock.now_ms())

    async def await_confirmation(self, attempt: Attempt) -> bool:
        """A lease held for its due time starts only once the leader has renewed it with a heartbeat sent
        at most CONFIRM_AHEAD_S before the start. A worker cut off from the leader meanwhile would
        otherwise start an attempt it cannot renew: self-fencing kills it and the leader grants it
        again, a duplicate (fault scenario S6 counted 48 where there were 19 before fire ahead).
        Unconfirmed at the lease's deadline, it is fenced unstarted: late, but run once. The confirming
        heartbeat was asked for CONFIRM_AHEAD_S before the start (`join`), so its answer is normally
        here already. True once confirmed; False if stopped or still unconfirmed at the deadline."""
        if attempt.confirmed:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        attempt.confirm_waiter = waiter
        self._ask_heartbeat()
        stopped = await attempt.runner.hold(attempt.deadline - mono_s(self._clock), until=waiter)
        attempt.confirm_waiter = None
        return not stopped and waiter.done()


async def await_sensor(
    attempt: Attempt, runner_for: Callable[[worker_pb2.Lease, OutputSink], Runner], clock: Clock, log: Any
) -> common_pb2.AttemptResult | None:
    """Run the lease's sensor probe every interval until it succeeds (None: go on with the payload)
    or its timeout passes (the attempt's failed result). The lease is held and renewed meanwhile;
    a cancel, revoke or self-fence stops the probing like it stops a payload."""
    lease = attempt.lease
    sensor = lease.sensor
    interval_s = (sensor.interval_ms or 10_000) / 1000
    timeout_ms = sensor.timeout_ms or 3_600_000
    deadline = mono_s(clock) + timeout_ms / 1000
    main = attempt.runner
    probes, last = 0, ""
    try:
        while True:
            probes += 1
            probe = worker_pb2.Lease()
            probe.CopyFrom(lease)
            probe.payload.CopyFrom(sensor.probe)
            probe.ClearField("sensor")
            remaining_ms = max(1, int((deadline - mono_s(clock)) * 1000))
            probe.timeout_ms = min(remaining_ms, lease.timeout_ms or remaining_ms)
            runner = runner_for(probe, lambda stream, data: None)
            attempt.runner = runner
            result = await runner.run()
            if runner.stop_reason is not None and runner.stop_reason is not StopReason.TIMEOUT:
                # Stopped while its sensor probed: the payload itself never began.
                return not_started(
                    attempt.lease, f"while waiting for its sensor: {result.error}", clock.now_ms()
                )
            if result.outcome == common_pb2.ATTEMPT_SUCCEEDED:
                log.debug("sensor satisfied", execution_id=lease.execution_id, probes=probes)
                return None
            if result.outcome == common_pb2.ATTEMPT_REFUSED:
                return result  # it would be refused at every probe: final
            last = result.error or f"exit code {result.exit_code}"
            if mono_s(clock) + interval_s >= deadline:
                result.outcome = common_pb2.ATTEMPT_FAILED
                result.error = f"sensor not satisfied after {probes} probes in {timeout_ms} ms (last: {last})"
                return result
            # The polling interval, cut short by a stop (the attempt's runner is this probe's until
            # the next one: a cancel or fence now used to wait out the whole interval).
            if await runner.hold(interval_s):  # stopped between two probes
                # hold() is True only once a stop set the reason (mypy keeps the narrowing above).
                reason = cast(StopReason, runner.stop_reason)
                error = stop_result(reason, lease, "sensor stopped")[1]
                return not_started(attempt.lease, f"while waiting for its sensor: {error}", clock.now_ms())
    finally:
        attempt.runner = main
