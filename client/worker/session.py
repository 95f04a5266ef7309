"""One welcomed `WorkerGateway.Connect` stream: the timings the leader's Welcome set, the heartbeats
awaiting their answer, and the results sent on it (what a `ResultAcks` may remove from the outbox)."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from cronraft.client.worker.config import FALLBACK_HEARTBEAT_S, FALLBACK_LEASE_TTL_S
from cronraft.client.worker.outbox import AttemptKey
from cronraft.proto.v1 import worker_pb2

# A sent heartbeat: (loop time, clock time of its send, the attempts it listed).
SentHeartbeat = tuple[float, float, frozenset[AttemptKey]]


class StreamStale(Exception):
    """The stream is dead in practice: the leader stopped answering heartbeats on it, or a write waited
    `Session.stale_after_s` for the stream to take it."""


class Session:
    """One welcomed stream."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall[worker_pb2.WorkerMessage, worker_pb2.GatewayMessage],
        welcome: worker_pb2.Welcome,
        address: str,
    ) -> None:
        self.call = call
        self.address = address
        self.leader_id = welcome.leader_id
        self.heartbeat_interval_s = (welcome.heartbeat_interval_ms or 0) / 1000 or FALLBACK_HEARTBEAT_S
        self.lease_ttl_s = (welcome.lease_ttl_ms or 0) / 1000 or FALLBACK_LEASE_TTL_S
        # Holding nothing, the worker heartbeats this often instead (the leader stretches it when
        # thousands of workers are connected; HeartbeatAck updates it).
        self.idle_interval_s = self.heartbeat_interval_s
        self.set_idle_interval(welcome.idle_heartbeat_interval_ms)
        # A heartbeat unanswered for this long means the stream is dead in practice: reconnect. It must
        # be well inside the TTL: a leader cut off by a partition sends no reset, and waiting a whole TTL
        # would let every running attempt hit its local deadline (self-fencing kills it, and the lease is
        # re-granted: a duplicate run) before the worker even tried the new leader (found by fault
        # scenario S4, leader partitioned).
        self.stale_after_s = min(max(1.5 * self.heartbeat_interval_s, 1.0), self.lease_ttl_s / 3)
        # Heartbeats sent and not yet answered, oldest first: (loop time, clock time, attempts listed).
        # The leader answers heartbeats in order, so each HeartbeatAck pairs with the oldest entry.
        self.heartbeats: deque[SentHeartbeat] = deque()
        self.sent: dict[AttemptKey, float] = {}  # results sent on this stream -> loop time
        self.sent_by_execution: dict[str, set[AttemptKey]] = {}  # the same keys, by execution id
        # Send a complete listing in the next heartbeat: the first of every stream (a new leader needs one
        # at once to release the leases its predecessor granted and never delivered), and when asked.
        self.list_finished = True
        self._write_lock = asyncio.Lock()
        self._stale = ""  # why a write found this stream dead: every later write fails alike
        # Messages are numbered in the order they go on the stream (`write` returns the number). The
        # leader reads a stream in order, so its answer to a message says it read every one before:
        # `read_through` is the number of the latest message answered (a heartbeat or a result), what a
        # stream that breaks is known to have delivered (live output: what else may be lost with it).
        self.written = 0
        self.read_through = 0
        self._heartbeat_numbers: deque[int] = deque()  # of the heartbeats awaiting an answer, in order
        self._result_numbers: dict[AttemptKey, int] = {}  # of the message that carried each result sent

    def set_idle_interval(self, ms: int) -> None:
        if ms > 0:
            self.idle_interval_s = max(self.heartbeat_interval_s, ms / 1000)

    def mark_sent(self, key: AttemptKey, now: float) -> None:
        self.sent[key] = now
        self.sent_by_execution.setdefault(key[0], set()).add(key)

    def sent_keys(self, execution_ids: set[str]) -> list[AttemptKey]:
        """The results sent on this stream for these executions (what an ack may remove)."""
        return [k for eid in execution_ids for k in self.sent_by_execution.get(eid, ())]

    def results_answered(self, keys: list[AttemptKey]) -> None:
        """The leader acknowledged these results: it read the messages that carried them."""
        for key in keys:
            self.read_through = max(self.read_through, self._result_numbers.get(key, 0))

    def heartbeat_answered(self) -> SentHeartbeat | None:
        """The leader answered the oldest heartbeat awaiting an answer (None: there is none); it read
        every message before that heartbeat."""
        if self._heartbeat_numbers:
            self.read_through = max(self.read_through, self._heartbeat_numbers.popleft())
        return self.heartbeats.popleft() if self.heartbeats else None

    def forget_sent(self, key: AttemptKey) -> None:
        self.sent.pop(key, None)
        self._result_numbers.pop(key, None)
        keys = self.sent_by_execution.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.sent_by_execution[key[0]]

    async def write_heartbeat(self, message: worker_pb2.WorkerMessage) -> None:
        """`write` a heartbeat (already in `heartbeats`): its answer will say what the leader read."""
        await self.write(message, self._heartbeat_numbers.append)

    async def write_results(self, message: worker_pb2.WorkerMessage, keys: list[AttemptKey]) -> None:
        """`write` the results of `keys`: their acknowledgement will say what the leader read."""
        await self.write(message, functools.partial(self._carried, keys))

    def _carried(self, keys: list[AttemptKey], number: int) -> None:
        for key in keys:
            self._result_numbers[key] = number

    async def write(
        self, message: worker_pb2.WorkerMessage, numbered: Callable[[int], None] | None = None
    ) -> int:
        """Put `message` on the stream, after the writes before it; returns its number (given to
        `numbered` first: the answer may be read before this returns). StreamStale if the stream does not
        take it within `stale_after_s`.

        Every write is bounded: a leader that stops reading (SIGSTOPped, or behind a partition that drops
        packets: no reset comes) leaves gRPC's send window full once about 4 MiB are in flight (measured
        on loopback), and the next write waits for a window update that never comes. Unbounded, that
        write held the lock, the heartbeat loop waited behind it and never looked at its unanswered
        heartbeats: the worker never tried the new leader, and its leases ran out (its attempts
        self-fenced, to be run again elsewhere). A write the stream does not take for as long as a
        heartbeat may go unanswered says the same as that heartbeat would: nobody reads this stream.
        The wait for the lock is not counted: the write holding it is bounded alike.

        grpc.aio cancels the whole call when a write is cancelled: the writes that waited for the lock
        behind a stale one fail with StreamStale too, not with the InvalidStateError of a call ended by
        its server (after which the worker tries the same node again: this one is likely frozen)."""
        async with self._write_lock:
            if self._stale:
                raise StreamStale(self._stale)
            self.written += 1
            number = self.written
            if numbered is not None:
                numbered(number)
            try:
                async with asyncio.timeout(self.stale_after_s):
                    await self.call.write(message)
            except TimeoutError:
                self._stale = f"a write waited {self.stale_after_s:.1f} s for the stream to take it"
                raise StreamStale(self._stale) from None
            return number


async def open_stream(
    call: grpc.aio.StreamStreamCall[worker_pb2.WorkerMessage, worker_pb2.GatewayMessage],
    hello: worker_pb2.WorkerMessage,
    timeout_s: float,
) -> worker_pb2.GatewayMessage | None:
    """Send the Hello and read the node's first answer, both within `timeout_s` (TimeoutError past it);
    None if the stream ended without a message.

    The write is inside the bound too: on a channel still connecting, grpc.aio's first write waits for
    the connection, and a node behind a partition (its SYNs dropped) holds it for gRPC's connect timeout
    (20 s). In fault scenario S18 a worker whose leader's region was cut tried a node of that region next
    and spent those 20 s there, while the new leader expired its leases and ran its fires again."""
    async with asyncio.timeout(timeout_s):
        await call.write(hello)
        first = await call.read()
    return first if isinstance(first, worker_pb2.GatewayMessage) else None
