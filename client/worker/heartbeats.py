"""A worker's heartbeats on its welcomed stream (`Heartbeats`): the loop that sends them, full every
interval and confirming between them when a held start asks (heartbeat_plan: what each lists, and their
spacing), and what the leader's answers do (renewals, revocations, held starts confirmed).

A part of the worker agent (agent.py), which owns the attempts it lists; see its docstring for why this
package uses `asyncio.timeout` rather than `wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from cronraft.client.worker import heartbeat_plan, leases
from cronraft.client.worker.leases import Attempt
from cronraft.client.worker.outbox import AttemptKey, Outbox
from cronraft.client.worker.results import Results
from cronraft.client.worker.session import Session, StreamStale
from cronraft.client.worker.start_gate import StartGates
from cronraft.client.worker.ticks import loop_time_of, sleep_until, tick_after, tick_within
from cronraft.clock import Clock, mono_s
from cronraft.proto.v1 import worker_pb2


class Heartbeats:
    """The heartbeats of one worker: `loop` on each welcomed stream, `on_ack` for each answer.

    `attempts`: the worker's attempts held now (the agent adds and removes them); `now`: set to send a
    heartbeat without waiting for the interval; `draining`: whether the worker is stopping.
    """

    def __init__(
        self,
        *,
        attempts: dict[AttemptKey, Attempt],
        results: Results,
        outbox: Outbox,
        clock: Clock,
        now: asyncio.Event,
        gates: StartGates,
        draining: Callable[[], bool],
        log: Any,
    ) -> None:
        self._attempts = attempts
        self._results = results
        self._outbox = outbox
        self._clock = clock
        self._now = now
        self._gates = gates
        self._draining = draining
        self._log = log
        self.held = heartbeat_plan.HeldStarts()  # what confirming heartbeats list
        self.idle_wait = False  # the loop waits the idle interval (it held nothing)

    async def loop(self, session: Session) -> None:
        """Full heartbeats every interval, confirming ones between them when a held start asks
        (heartbeat_plan: what each lists, and their spacing)."""
        loop = asyncio.get_running_loop()
        last_full = last_sent = float("-inf")  # mono_s(clock) of the latest full / any heartbeat
        asked = False  # this heartbeat was asked for (`now`), not sent by the interval's timer
        while True:
            if session.heartbeats and loop.time() - session.heartbeats[0][0] > session.stale_after_s:
                raise StreamStale(f"no heartbeat answer for {session.stale_after_s:.1f} s")
            now = mono_s(self._clock)
            wait = heartbeat_plan.spacing_wait(now, last_sent)
            if wait > 0:
                # At the first tick the spacing allows: the ticks' time on the system clock, where the
                # send times are read (to the millisecond), so that the spacing is not one tick more.
                await sleep_until(tick_after(loop_time_of(self._clock, now + wait, now, loop)))
            self._now.clear()  # this heartbeat answers every request made before it
            sent = mono_s(self._clock)
            interval = session.heartbeat_interval_s
            full = heartbeat_plan.is_full_due(
                sent, last_full, interval, asked=asked, list_finished=session.list_finished
            )
            listed = (
                heartbeat_plan.to_list(self._attempts.values(), sent, full=True)
                if full
                else self.held.confirming(self._attempts, sent)
            )
            keys = frozenset(a.key for a in listed)
            refs = [leases.lease_ref(a) for a in listed]
            session.heartbeats.append((loop.time(), sent, keys))
            heartbeat = worker_pb2.Heartbeat(
                leases=refs, sent_mono_ms=int(sent * 1000), draining=self._draining()
            )
            if full and session.list_finished:
                # Finished attempts whose results are not acknowledged (durable or not): with the running
                # ones, everything this worker holds. Attempts still storing their result are running.
                session.list_finished = False
                heartbeat.complete_listing = True
                for result in self._results.unacknowledged():
                    heartbeat.finished.add(execution_id=result.execution_id, token=result.token)
            await session.write_heartbeat(worker_pb2.WorkerMessage(heartbeat=heartbeat))
            last_sent = sent
            if full:
                last_full = sent
            # Until the next full heartbeat, or less when a held start asks for a confirming one; the idle
            # interval when this worker holds nothing (a lease arriving meanwhile ends the wait:
            # Worker._offer).
            holding = bool(self._attempts or self._results.volatile or len(self._outbox))
            self.idle_wait = not holding
            timeout = (
                max(0.0, last_full + interval - mono_s(self._clock)) if holding else session.idle_interval_s
            )
            asked = False
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow the cancellation that stops
                # this loop when it races with the event (agent.py's docstring); stop() sets the event.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(tick_within(loop.time(), timeout)):
                        await self._now.wait()
                        asked = True
            finally:
                self.idle_wait = False

    def on_ack(self, session: Session, ack: worker_pb2.HeartbeatAck) -> None:
        """The leader's answer to the oldest heartbeat awaiting one on `session`."""
        session.set_idle_interval(ack.idle_heartbeat_interval_ms)
        if ack.list_finished:
            session.list_finished = True
        sent = session.heartbeat_answered()
        leases.revoke(self._attempts, sent, ack.revoked, self._log)
        if sent is None:
            return  # an answer to no heartbeat: we cannot know from when to renew
        leases.renew(self._attempts, sent, ack.renewed)
        self._gates.acked()


__all__ = ["Heartbeats"]
