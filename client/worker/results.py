"""Results on their way to the leader: stored durably in the outbox (client/worker/outbox.py) before
they are sent, sent in batches, resent on every new stream and every `result_resend_s`, and removed only
on the leader's `ResultAcks` for what was sent on the same stream. A result the outbox failed to store is
kept in memory (`volatile`) and still delivered if the stream holds. A restarted worker loads its outbox:
results made before the restart are delivered, not re-run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from cronraft.client.worker.outbox import AttemptKey, Outbox, result_key
from cronraft.client.worker.session import Session
from cronraft.client.worker.ticks import tick_after
from cronraft.proto.v1 import common_pb2, worker_pb2

_log = structlog.get_logger(__name__)

# Called once a result is stored: with None, or with the OSError that kept it from the outbox.
Stored = Callable[[OSError | None], None]

MAX_RESULTS_MESSAGE_BYTES = 1024 * 1024
MAX_RESULTS_PER_MESSAGE = 1_000  # well below what a leader accepts (cronraft.bounds)
# Under load (an outbox write began within the last RESULT_BUSY_S) a fresh result waits STORE_LINGER_S
# for others to share its outbox write, and so its results message: the leader proposes a message's
# results as one submission. With start instants spread over the second (W5), results ended one by
# one: each was a write (a thread hop, a file, two fsyncs, later an unlink, which cost more CPU than
# running the attempt: bench/perf_worker.py --rate) and a message, a Raft entry and an apply
# transaction on every node. A lone result (a fixed-delay chain counts its delay from the commit of
# its result) is written and sent at once. (The send loop lingered 10 ms of its own too; with the
# writes grouped it only added a wake-up per message: 12 us per execution.) 50 ms, not 20: each write
# round (a timer, a thread hop, the files, a results message, its acknowledgement, each a wake-up of
# the worker) cost about 0.6 ms of worker CPU, shared by 10 results at 500 a second and 25 now:
# perf_worker.py --rate 500 282 -> 250 us per execution. A result reaches the leader up to 30 ms later
# under load; a held start's instant is not touched.
RESULT_BUSY_S = 0.05
STORE_LINGER_S = 0.05
# An acknowledgement that empties this many outbox files or fewer deletes them on the loop: at most that
# many unlinks (no fsync), where a hop to a thread and back cost more (bench/perf_worker.py --rate 500:
# 321 -> 281 us per execution); more go to a thread. Files, not results: a batch file holds the results
# stored together, and goes with the last of them (this counted results, and an ack of more than 16,
# most often one or two files, took the thread).
INLINE_REMOVE_MAX = 16
# The outbox's open segment takes the writes of a steady load (outbox.py: an append and one flush per
# write); it is closed, and deleted once acknowledged, when no write began for this long. Longer than the
# gaps between writes of a moderate load, shorter than a segment's life (outbox.SEGMENT_S).
SEGMENT_IDLE_S = 0.5


def linger_s(now: float, last_write: float, linger: float = STORE_LINGER_S) -> float:
    """How long a fresh result waits for others before its outbox write (`last_write`: when the latest
    write began)."""
    return linger if now - last_write < RESULT_BUSY_S else 0.0


def not_started(lease: worker_pb2.Lease, error: str, wall_ms: int) -> common_pb2.AttemptResult:
    """The result of an attempt that ended before its payload began: nothing ran, so the cluster
    grants the execution again instead of ending it (a cancel asked for ends it cancelled)."""
    return common_pb2.AttemptResult(
        execution_id=lease.execution_id,
        token=lease.token,
        outcome=common_pb2.ATTEMPT_NOT_STARTED,
        finished_at_ms=wall_ms,
        error=error,
    )


class Results:
    """The worker's unacknowledged results: the outbox, the ones it failed to store, and the sending."""

    def __init__(self, outbox: Outbox, resend_s: float, log: Any) -> None:
        self.outbox = outbox
        self.volatile: dict[AttemptKey, common_pb2.AttemptResult] = {}  # results the outbox failed to store
        self._resend_s = resend_s
        self._log = log
        # Results stored since the send loop last looked (it sends these without rescanning the whole
        # outbox, which it does on a new stream and every `resend_s`).
        self._fresh: list[tuple[AttemptKey, common_pb2.AttemptResult]] = []
        # Results waiting for the outbox write, each with its key and what to call once it is stored;
        # results that finish together share one write and fsync.
        self._to_store: list[tuple[common_pb2.AttemptResult, AttemptKey, Stored]] = []
        self._storing: asyncio.Task[None] | None = None
        self._last_store = float("-inf")  # loop time the latest outbox write began
        self._idle_timer: asyncio.TimerHandle | None = None  # closes the outbox's segment (SEGMENT_IDLE_S)
        self.ready = asyncio.Event()  # something to send
        self.acked = asyncio.Event()  # an acknowledgement removed results
        self.sent = 0  # results written to a stream, resends included (metrics)
        self.acknowledged = 0  # results removed on an acknowledgement (metrics)

    def holds(self, key: AttemptKey) -> bool:
        """A result of this attempt is waiting for its acknowledgement."""
        return key in self.outbox or key in self.volatile

    def unacknowledged(self) -> list[common_pb2.AttemptResult]:
        return [*self.outbox.pending(), *self.volatile.values()]

    def add_fresh(self, result: common_pb2.AttemptResult, key: AttemptKey | None = None) -> None:
        """`result` (of attempt `key`, when the caller has it) is stored (or volatile): send it without
        waiting for a rescan."""
        self._fresh.append((key if key is not None else result_key(result), result))

    def store(self, result: common_pb2.AttemptResult) -> asyncio.Future[None]:
        """Durably store `result` in the outbox: await the future returned (OSError if that failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(error: OSError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.store_then(result, result_key(result), settle)
        return future

    def store_then(self, result: common_pb2.AttemptResult, key: AttemptKey, then: Stored) -> None:
        """Durably store `result` (of attempt `key`) in the outbox, then call `then(None)` on the loop,
        or `then(error)` if the write failed. Results finishing while a write is in progress wait for
        the next one and share it: one batch file, one fsync pair. (A callback, not a future that the
        attempt's task awaits: the task ends here, and a task woken per result was a loop iteration
        per attempt: bench/perf_worker.py --rate.)"""
        self._to_store.append((result, key, then))
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store_loop(), name="outbox")

    async def stored(self) -> None:
        """Return once every result handed to `store_then` so far is stored (or failed to be)."""
        while self._storing is not None and not self._storing.done():
            await asyncio.wait({self._storing})  # not cancelled if this wait is

    async def _store_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._to_store:
            wait = linger_s(loop.time(), self._last_store)
            if wait:
                # Not to a tick (client/worker/ticks.py): the last one within the linger is 2.5 ms
                # sooner on average, and a write round more every 20 costs more wake-ups (its thread,
                # its message, the acknowledgement's) than the linger's own saves.
                await asyncio.sleep(wait)
            self._last_store = loop.time()
            batch, self._to_store = self._to_store, []
            error: OSError | None = None
            try:
                await asyncio.to_thread(
                    self.outbox.put_many, [entry[0] for entry in batch], [entry[1] for entry in batch]
                )
            except OSError as exc:
                error = exc
            for _, _, then in batch:
                try:
                    then(error)
                except Exception:  # a bug of ours: the other results must still be told
                    _log.exception("a stored result's callback failed")
            if self._idle_timer is None and self.outbox.segment_open:
                at = tick_after(self._last_store + SEGMENT_IDLE_S)
                self._idle_timer = loop.call_at(tick_after(at), self._close_idle_segment)

    def _close_idle_segment(self) -> None:
        """Close the outbox's open segment if no write began for SEGMENT_IDLE_S, else look again then."""
        loop = asyncio.get_running_loop()
        self._idle_timer = None
        if self._storing is not None and not self._storing.done():
            at = loop.time() + SEGMENT_IDLE_S  # a write under way (a slow disk): not a busy loop
        elif loop.time() - self._last_store < SEGMENT_IDLE_S:
            at = self._last_store + SEGMENT_IDLE_S
        else:
            self.outbox.close_segment()
            return
        self._idle_timer = loop.call_at(tick_after(at), self._close_idle_segment)

    async def on_acks(self, session: Session, execution_ids: Sequence[str]) -> None:
        # Only what was sent on this stream: a newer result of the same execution must not be dropped.
        keys = session.sent_keys(set(execution_ids))
        if not keys:
            return
        # Under load the open segment stays for the next writes, even with all it holds acknowledged.
        busy = asyncio.get_running_loop().time() - self._last_store < SEGMENT_IDLE_S
        _, doomed = self.outbox.forget(keys, keep_open=busy)
        if len(doomed) <= INLINE_REMOVE_MAX:
            self.outbox.delete(doomed)  # at most that many unlinks (no fsync): cheaper than a thread hop
        else:
            await asyncio.to_thread(self.outbox.delete, doomed)
        session.results_answered(keys)  # the leader read what carried them: live output before too
        for key in keys:  # only now: until removed, the send loop must not see them as unsent
            session.forget_sent(key)
            self.volatile.pop(key, None)
        self.acknowledged += len(keys)
        self.acked.set()

    async def send_loop(
        self, session: Session, before_send: Callable[[Session], Awaitable[None]] | None = None
    ) -> None:
        """Send fresh results as they come, and everything unacknowledged every `resend_s`.
        `before_send` runs before each round's results go (the worker flushes ended attempts' output)."""
        loop = asyncio.get_running_loop()
        resend = self._resend_s
        rescan_at = loop.time()  # a new stream sends the whole outbox
        while True:
            self.ready.clear()
            now = loop.time()
            if now >= rescan_at:
                # Everything unacknowledged (and not sent on this stream within `resend`); the fresh
                # list is a subset of it.
                self._fresh.clear()
                pending = [(result_key(result), result) for result in self.unacknowledged()]
                rescan_at = now + resend
            else:
                pending, self._fresh = self._fresh, []
            if pending and before_send is not None:
                await before_send(session)
            batch: list[common_pb2.AttemptResult] = []
            keys: list[AttemptKey] = []
            size = 0
            for key, result in pending:
                sent_at = session.sent.get(key)
                if sent_at is not None and now - sent_at < resend:
                    continue
                n = result.ByteSize()  # as costly as serializing it (upb): once
                if batch and (size + n > MAX_RESULTS_MESSAGE_BYTES or len(batch) >= MAX_RESULTS_PER_MESSAGE):
                    await self._send(session, batch, keys)
                    batch, keys, size = [], [], 0
                batch.append(result)
                keys.append(key)
                size += n
                session.mark_sent(key, now)
            if batch:
                await self._send(session, batch, keys)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, rescan_at - loop.time())):
                    await self.ready.wait()

    async def _send(
        self, session: Session, batch: list[common_pb2.AttemptResult], keys: list[AttemptKey]
    ) -> None:
        await session.write_results(worker_pb2.WorkerMessage(results=worker_pb2.Results(results=batch)), keys)
        self.sent += len(batch)
        self._log.debug("results sent", count=len(batch))
