"""`relay_worker`: a worker's `WorkerGateway.Connect` stream, relayed by a follower to the leader.

The follower opens its own `Connect` to the leader (`Relay.channel`, authenticated as a member, carrying
the worker's identity: daemon.security.relayed), sends the worker's Hello, and then copies messages both
ways unchanged: the leader sees the worker exactly as if it had connected directly (its id bound to its
principal, its leases checked against it), and the worker sees the leader's Welcome, offers and acks.
Flow control holds end to end: each side is read only as fast as the other is written (at most
`QUEUE_MESSAGES` leader messages wait here for a slow worker).

**Re-targeting.** A stream is never moved from one leader to another under the worker's feet: its
session state (the heartbeats awaiting an answer, the results sent on this stream) belongs to one leader.
When the leader moves (the relay's watch sees another leader, the leader says NotLeader, its stream
breaks) or stops answering heartbeats for `STALE_SHARE` of the worker's own patience, the relay ends the
worker's stream with a NotLeader naming *this* node, before the worker would have given up on it; the
worker reconnects here at once (its redirect rule) and is relayed to the new leader, or served by this
node if it leads now. Before the Welcome nothing is lost by waiting, so a leader that moves during the
Hello is followed transparently, for at most `HELLO_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from cronraft.daemon.relay.core import WATCH_S, Relay
from cronraft.errors import CronraftError
from cronraft.proto.v1 import worker_pb2, worker_pb2_grpc

__all__ = ["HELLO_S", "QUEUE_MESSAGES", "STALE_SHARE", "relay_worker", "stale_after_s"]

log = structlog.get_logger("cronraft.relay")

# How long the relay tries to get the leader's first answer to a worker's Hello (following a leader that
# moves meanwhile): below the worker's own Hello timeout (3 s), so that the worker always hears from us.
HELLO_S = 2.0
# Leader messages read ahead of a worker that is slow to read them (then the leader's stream waits).
QUEUE_MESSAGES = 64
# The relay gives up on a leader that leaves a heartbeat unanswered for this share of the time after
# which the worker would give up on the stream itself (and then avoid this node for a while).
STALE_SHARE = 0.75
# A leader's refusal of the worker is passed on as it is; any other failure sends the worker back here.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def stale_after_s(welcome: worker_pb2.Welcome) -> float:
    """How long a relayed heartbeat may wait for its answer: STALE_SHARE of the worker's own limit
    (client.worker.session: min(max(1.5 heartbeats, 1 s), TTL / 3), from the same Welcome)."""
    heartbeat_s = (welcome.heartbeat_interval_ms or 2000) / 1000
    ttl_s = (welcome.lease_ttl_ms or 10_000) / 1000
    return STALE_SHARE * min(max(1.5 * heartbeat_s, 1.0), ttl_s / 3)


@dataclass
class _Stop:
    """Why the relayed stream ends: `back` sends the worker back here; else `error` is passed on."""

    reason: str
    back: bool = True
    error: grpc.aio.AioRpcError | None = None


def _not_leader(address: str) -> worker_pb2.GatewayMessage:
    return worker_pb2.GatewayMessage(not_leader=worker_pb2.NotLeader(leader_address=address))


async def relay_worker(
    relay: Relay,
    first: worker_pb2.WorkerMessage,
    requests: AsyncIterator[worker_pb2.WorkerMessage],
    context: grpc.aio.ServicerContext[Any, Any],
) -> AsyncIterator[worker_pb2.GatewayMessage]:
    """Relay the stream whose Hello is `first` (already checked by the gateway) to the leader."""
    refusal: tuple[grpc.StatusCode, str] | None = None
    try:
        with relay.stream_slot():
            metadata = relay.metadata(context)
            async for out in _relay(relay, first, requests, metadata):
                yield out
    except CronraftError as e:  # a bound, or a caller that is not relayed
        refusal = (getattr(grpc.StatusCode, e.grpc_code, grpc.StatusCode.INTERNAL), str(e))
    except _Refused as e:  # the leader refused the worker: the worker hears it as if it had asked directly
        refusal = (e.error.code(), e.error.details() or "")
    if refusal is not None:
        await context.abort(*refusal)


async def _relay(
    relay: Relay,
    first: worker_pb2.WorkerMessage,
    requests: AsyncIterator[worker_pb2.WorkerMessage],
    metadata: list[tuple[str, str | bytes]],
) -> AsyncIterator[worker_pb2.GatewayMessage]:
    worker = first.hello.worker_id
    opened = await _open(relay, first, metadata)
    if isinstance(opened, worker_pb2.GatewayMessage):
        yield opened  # NotLeader: come back, or go where the leader said
        return
    call, target, welcome = opened
    log.info("worker stream relayed", worker=worker, leader=target)
    yield welcome
    stop = _Stop("the worker's stream ended", back=False)
    async for item in _pump(relay, call, welcome, requests):
        if isinstance(item, _Stop):
            stop = item
            break
        yield item
    log.info("relayed worker stream ended", worker=worker, leader=target, reason=stop.reason)
    if stop.error is not None and not stop.back:
        raise _Refused(stop.error)
    if stop.back:
        yield _not_leader(relay.own_address)


async def _pump(
    relay: Relay,
    call: Any,
    welcome: worker_pb2.GatewayMessage,
    requests: AsyncIterator[worker_pb2.WorkerMessage],
) -> AsyncIterator[worker_pb2.GatewayMessage | _Stop]:
    """The leader's messages for the worker, while the worker's go up; ends with the `_Stop` that says why
    the relayed stream ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[worker_pb2.GatewayMessage | _Stop] = asyncio.Queue()
    room = asyncio.Semaphore(QUEUE_MESSAGES)  # leader messages read ahead of the worker
    pending: deque[float] = deque()  # loop times of the heartbeats sent up and not answered yet
    stale_s = stale_after_s(welcome.welcome)
    ended = False

    def stale(sent: float) -> None:
        if not ended and pending and pending[0] <= sent:
            queue.put_nowait(_Stop(f"the leader left a heartbeat unanswered for {stale_s:.2f} s"))

    async def upward() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            async for msg in requests:
                if msg.WhichOneof("kind") == "heartbeat":
                    sent = loop.time()
                    pending.append(sent)
                    loop.call_later(stale_s, stale, sent)
                await call.write(msg)
            await call.done_writing()  # the worker closed its side: the leader ends the stream

    async def downward() -> None:
        try:
            while True:
                await room.acquire()
                msg = await call.read()
                if not isinstance(msg, worker_pb2.GatewayMessage):  # the leader ended the stream
                    queue.put_nowait(_Stop("the leader ended the stream"))
                    return
                if msg.WhichOneof("kind") == "heartbeat_ack" and pending:
                    pending.popleft()  # the leader answers heartbeats in order
                queue.put_nowait(msg)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            queue.put_nowait(_Stop(f"the leader's stream failed: {code.name}", code not in _REFUSALS, e))

    unsubscribe = relay.on_move(lambda: queue.put_nowait(_Stop("the leader moved")))
    tasks = [
        asyncio.create_task(upward(), name="relay-up"),
        asyncio.create_task(downward(), name="relay-down"),
    ]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Stop):
                yield item
                return
            room.release()
            if item.WhichOneof("kind") == "not_leader":  # the leader stepped down: come back here
                yield _Stop("the leader stepped down")
                return
            yield item
    finally:
        ended = True
        unsubscribe()
        for task in tasks:
            task.cancel()
        call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _open(
    relay: Relay, first: worker_pb2.WorkerMessage, metadata: list[tuple[str, str | bytes]]
) -> tuple[Any, str, worker_pb2.GatewayMessage] | worker_pb2.GatewayMessage:
    """The upstream call, the leader's address and its Welcome; or the NotLeader to answer the worker
    with when no leader welcomed it within HELLO_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HELLO_S
    hint = ""
    first_target = relay.target()
    while loop.time() < deadline:
        target = relay.target()
        if target is None:
            if relay.leading():
                return _not_leader(relay.own_address)  # served here: the worker comes back
            await asyncio.sleep(WATCH_S)  # no leader known (an election): wait for one
            continue
        call = worker_pb2_grpc.WorkerGatewayStub(relay.channel(target)).Connect(metadata=metadata)
        try:
            reply = await _first_reply(relay, call, first, target, deadline)
        except grpc.aio.AioRpcError as e:
            call.cancel()
            if e.code() in _REFUSALS:  # the leader refused the worker: as if it had asked directly
                raise _Refused(e) from None
            await asyncio.sleep(WATCH_S)  # unreachable now: look again (the leader may be moving)
            continue
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            call.cancel()
            await asyncio.sleep(WATCH_S)
            continue
        if reply is not None and reply.WhichOneof("kind") == "welcome":
            return call, target, reply
        call.cancel()
        if reply is not None and reply.WhichOneof("kind") == "not_leader":
            hint = reply.not_leader.leader_address  # our view is stale: it updates within an election
            await asyncio.sleep(WATCH_S)
    # No leader answered in time. If this node learnt of a new leader meanwhile (the old one was cut
    # off: S18), the worker comes back here at once and is relayed to it: the connection to it may just
    # need longer than what was left (a new channel over a long round trip). Sending it to its other
    # nodes instead sent a worker of region C to a node of the cut region A, silent for its whole Hello
    # timeout (3 s), while the new leader expired its leases. Else the worker tries its other nodes (or
    # the leader named), as it did before relaying existed.
    now_target = relay.target()
    if not hint and now_target is not None and now_target != first_target:
        return _not_leader(relay.own_address)
    return _not_leader(hint)


async def _first_reply(
    relay: Relay, call: Any, first: worker_pb2.WorkerMessage, target: str, deadline: float
) -> worker_pb2.GatewayMessage | None:
    """Send the Hello `first`; the leader's first message; None if the stream ended, the leader moved or
    the deadline passed. The write is watched too: on a channel still connecting, grpc.aio's first write
    waits for the connection, up to gRPC's connect timeout (20 s) for a leader behind a partition."""
    loop = asyncio.get_running_loop()

    async def hello() -> Any:
        await call.write(first)
        return await call.read()

    read = asyncio.ensure_future(hello())
    try:
        while not read.done():
            await asyncio.wait({read}, timeout=min(WATCH_S * 4, max(0.0, deadline - loop.time())))
            if not read.done() and (loop.time() >= deadline or relay.target() != target):
                return None
        reply = read.result()
    finally:
        if not read.done():
            read.cancel()
            with contextlib.suppress(BaseException):
                await read
    return reply if isinstance(reply, worker_pb2.GatewayMessage) else None


class _Refused(Exception):
    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error
