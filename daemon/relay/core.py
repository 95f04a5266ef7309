"""`Relay`: whether a call is relayed and where to, the bounds of relaying, the channels to the leader,
and what those calls carry of their caller (daemon.security.relayed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import structlog
from grpc import aio

from cronraft.bounds import CLIENT_MAX_RECEIVE_BYTES
from cronraft.client._transport import Transport
from cronraft.daemon.security.authz import RPC_ROLES, current_principal
from cronraft.daemon.security.relayed import identity_metadata, relayed_hop
from cronraft.errors import ResourceExhausted
from cronraft.raft.replicator import RaftStatus

__all__ = ["CHANNEL_OPTIONS", "HOLD_S", "WATCH_S", "Relay", "forwarded_method"]

log = structlog.get_logger("cronraft.relay")

_SCHEDULER = "/cronraft.v1.Scheduler/"
# How often the relay looks for a new leader (one poll of the node's Raft status for every stream).
WATCH_S = 0.05
# How long a write waits on a follower that knows no leader (an election), at most half its deadline.
HOLD_S = 2.0
# The relay's channels to the leader: a quick reconnect after a leader change, and the largest message a
# direct client (a worker: its lease offers) accepts, so that nothing fits directly that does not fit
# relayed. What the follower accepts from its callers is its server's bound, the leader's too.
# `min_reconnect_backoff_ms` is gRPC's minimum *connect timeout* (one attempt's TCP, TLS and HTTP/2
# handshakes), not a pause: at 100 ms every attempt to a member 160 ms away was abandoned until the
# backoff had grown past the handshake (about 1 s lost on the first relayed Hello to a new leader in a
# far region, S18). The attempts still start 100 ms to 1 s apart; our own deadlines bound the waits.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE_BYTES),
]


def forwarded_method(method: str) -> bool:
    """Whether a follower forwards `method` (a full gRPC method name) to the leader: the Scheduler methods
    that change something (a role above reader: they all propose). Reads are served by every node from
    its own store; the Cluster service is about the node that answers (its status, its clock).

    Not ImportTasks: a client stream relayed while the leader refuses it mid-stream comes back from
    grpc.aio as INTERNAL "Internal error from Core" (the write racing the abort, grpc/grpc#36066), which
    the caller cannot act on; a follower answers it with the redirect instead, which every client
    follows (found by tests/integration/test_fuzz_api.py on three nodes)."""
    role = RPC_ROLES.get(method)
    if method == _SCHEDULER + "ImportTasks":
        return False
    return method.startswith(_SCHEDULER) and role is not None and role != "reader"


class Relay:
    """One node's relaying. `status` and `leader_address` are the node's (Raft status, a member's gRPC
    address); `transport` is how this node reaches its peers (their CA, its certificate when the members
    require one, the member token when they authenticate: the clock probe's)."""

    def __init__(
        self,
        *,
        node_id: str,
        own_address: str,
        enabled: bool,
        max_streams: int,
        max_writes: int,
        status: Callable[[], RaftStatus],
        leader_address: Callable[[RaftStatus], str | None],
        transport: Transport,
    ) -> None:
        self.node_id = node_id
        self.own_address = own_address  # where a worker comes back to after a leader change
        self.enabled = enabled
        self.max_streams = max_streams
        self.max_writes = max_writes
        self._status = status
        self._leader_address = leader_address
        self._transport = transport
        self._channels: dict[str, aio.Channel] = {}
        # The relayed streams' wake-ups (daemon.relay.stream): each is called once the leader moves.
        self._movers: set[Callable[[], None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self.streams = 0  # worker streams relayed now
        self.writes = 0  # client writes forwarded and not answered yet
        # Totals since start (the node's metrics read them): relayed, refused for a bound.
        self.streams_total = 0
        self.writes_total = 0
        self.refused = {"streams": 0, "writes": 0}

    # ------------------------------------------------------------------------------------- where

    def relays(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        """Whether this node may relay a call with this metadata: relaying is on and no member relayed
        the call already (one hop: two nodes each believing the other leads must not bounce it)."""
        return self.enabled and relayed_hop(metadata) is None

    def target(self) -> str | None:
        """The leader's gRPC address to relay to now; None while this node leads or knows no leader."""
        st = self._status()
        if st.is_leader or st.leader_id is None:
            return None
        address = self._leader_address(st)
        return address if address and address != self.own_address else None

    async def settle(self, hold_s: float) -> str | None:
        """`target()`, waiting up to `hold_s` while no leader is known (an election: a write held this
        briefly is answered by the new leader, where an immediate UNAVAILABLE would send the client to
        back off and retry elsewhere)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold_s
        while True:
            target = self.target()
            if target is not None or self.leading() or loop.time() >= deadline:
                return target
            await asyncio.sleep(WATCH_S)

    def leading(self) -> bool:
        return self._status().is_leader

    def applied_index(self) -> int:
        """The last log index this node applied to its store."""
        return self._status().applied_index

    def on_move(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` when the leader this node relays to changes (it moved, this node leads now, or no
        leader is known); returns the function that cancels it. One watch serves every stream."""
        self._movers.add(wake)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_leader(), name="relay-watch")
        return lambda: self._movers.discard(wake)

    async def _watch_leader(self) -> None:
        last = self.target()
        while self._movers:
            await asyncio.sleep(WATCH_S)
            now = self.target()
            if now != last:
                last = now
                for wake in list(self._movers):
                    wake()

    # -------------------------------------------------------------------------------------- what

    def metadata(self, context: grpc.aio.ServicerContext[Any, Any]) -> list[tuple[str, str | bytes]]:
        """The metadata of a call relayed for the caller of `context` (daemon.security.relayed)."""
        return identity_metadata(
            current_principal(), context.invocation_metadata(), self.node_id, str(context.peer() or "")
        )

    def channel(self, address: str) -> aio.Channel:
        """The channel to `address` (one per member, kept: a leader change needs no new handshake when
        leadership comes back)."""
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._transport.aio_channel(address, CHANNEL_OPTIONS)
        return ch

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            with contextlib.suppress(Exception):
                await ch.close()

    # ------------------------------------------------------------------------------------ bounds

    @contextlib.contextmanager
    def stream_slot(self) -> Iterator[None]:
        """One relayed worker stream, within `max_streams` (ResourceExhausted beyond)."""
        if self.streams >= self.max_streams:
            self.refused["streams"] += 1
            raise ResourceExhausted(
                f"this node relays {self.streams} worker streams, its limit ([cluster] relay_max_streams); "
                "connect the worker to another node, or to the leader"
            )
        self.streams += 1
        self.streams_total += 1
        try:
            yield
        finally:
            self.streams -= 1

    @contextlib.contextmanager
    def write_slot(self) -> Iterator[None]:
        """One forwarded client write, within `max_writes` (ResourceExhausted beyond)."""
        if self.writes >= self.max_writes:
            self.refused["writes"] += 1
            raise ResourceExhausted(
                f"this node has {self.writes} writes forwarded to the leader and unanswered, its limit "
                "([cluster] relay_max_writes); retry, or send writes to the leader"
            )
        self.writes += 1
        self.writes_total += 1
        try:
            yield
        finally:
            self.writes -= 1
