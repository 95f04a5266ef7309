"""The worker's choice of the next node and the opening of a stream, without a cluster
(client/worker/routing.py, client/worker/session.py): what decided how long a worker of region C took to
reach the new leader after its leader's region was cut (fault scenario S18, issue 18)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog

from cronraft.client.worker.routing import AVOID_S, ServerRotation
from cronraft.client.worker.session import open_stream
from cronraft.proto.v1 import worker_pb2

# S18's worker w4: its own node n5 (region C) first, then n1 n2 (region A), n3 n4 (region B).
N5, N1, N2, N3, N4 = "n5:1", "n1:1", "n2:1", "n3:1", "n4:1"
SERVERS = [N5, N1, N2, N3, N4]


def _rotation() -> ServerRotation:
    return ServerRotation(SERVERS, structlog.get_logger("test"))


def test_after_a_silent_node_the_worker_goes_back_to_its_first_listed_node() -> None:
    servers = _rotation()
    assert servers.next(0.0) == N5
    servers.hint = N1  # n5 stepped down and named n1 (region A) the leader
    assert servers.next(0.0) == N1
    # Region A is cut: n1's stream goes silent. Before: round robin went on to n2, in the same cut region
    # (and waited there). Now: the worker's own node, which relays it to whichever node leads now.
    servers.avoid(N1, 10.0)
    assert servers.next(10.0) == N5
    assert servers.next(10.0) == N2  # round robin again after it, skipping the silent n1
    servers.avoid(N2, 11.0)  # n2 silent too
    assert servers.next(11.0) == N5
    assert [servers.next(11.0) for _ in range(3)] == [N3, N4, N5]


def test_a_silent_first_node_is_skipped_until_its_avoidance_ends() -> None:
    servers = _rotation()
    assert servers.next(0.0) == N5
    servers.avoid(N5, 0.0)
    assert servers.next(0.0) == N1
    assert servers.next(AVOID_S + 0.1) == N2  # round robin, no longer avoiding n5
    servers.avoid(N2, AVOID_S + 0.1)
    assert servers.next(AVOID_S + 0.2) == N5


def test_the_servers_a_worker_says_it_can_reach_leave_out_the_silent_ones() -> None:
    """Hello.direct: a follower sends the worker to the leader only if it is among these; a leader whose
    stream went silent is left out, so the worker is relayed instead of sent back to it."""
    servers = _rotation()
    assert servers.reachable(0.0) == SERVERS
    servers.avoid(N1, 1.0)
    assert servers.reachable(1.0) == [N5, N2, N3, N4]
    assert servers.reachable(1.0 + AVOID_S) == SERVERS


def test_a_redirect_is_followed_at_once_but_not_twice_in_a_row() -> None:
    """A follower sending the worker to the leader (Hello.direct) is followed without the backoff, which
    delayed failovers; a second redirect right after (two nodes naming each other) waits for it."""
    servers = _rotation()
    assert not servers.follow_at_once()  # no redirect: the backoff
    servers.hint = N1
    assert servers.follow_at_once()
    assert servers.next(0.0) == N1
    servers.hint = N2  # N1 redirected again
    assert not servers.follow_at_once()
    servers.hint = N1
    assert servers.follow_at_once()  # a fresh redirect after a backoff step


class _Call:
    """A stream whose first write waits `write_s` (grpc.aio's first write on a channel still connecting
    waits for the connection) and whose first read answers `reply` after `read_s`."""

    def __init__(self, write_s: float, read_s: float, reply: Any) -> None:
        self.write_s, self.read_s, self.reply = write_s, read_s, reply
        self.written: list[worker_pb2.WorkerMessage] = []

    async def write(self, message: worker_pb2.WorkerMessage) -> None:
        await asyncio.sleep(self.write_s)
        self.written.append(message)

    async def read(self) -> Any:
        await asyncio.sleep(self.read_s)
        return self.reply


HELLO = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w4"))
WELCOME = worker_pb2.GatewayMessage(welcome=worker_pb2.Welcome(leader_id="n4"))


def test_the_hello_timeout_bounds_a_write_to_a_node_that_never_connects() -> None:
    # A node behind a partition: the connection never completes and the first write would wait for
    # gRPC's connect timeout (20 s, measured with SYNs dropped). The Hello timeout must cover it.
    call = _Call(write_s=20.0, read_s=0.0, reply=WELCOME)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(open_stream(call, HELLO, 0.2))  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert call.written == []


def test_the_hello_timeout_covers_the_write_and_the_first_answer_together() -> None:
    call = _Call(write_s=0.15, read_s=0.15, reply=WELCOME)
    with pytest.raises(TimeoutError):
        asyncio.run(open_stream(call, HELLO, 0.2))  # type: ignore[arg-type]


def test_a_node_that_answers_in_time_opens_the_stream() -> None:
    call = _Call(write_s=0.0, read_s=0.01, reply=WELCOME)
    assert asyncio.run(open_stream(call, HELLO, 1.0)) == WELCOME  # type: ignore[arg-type]
    assert call.written == [HELLO]
    ended = _Call(write_s=0.0, read_s=0.0, reply=object())  # grpc.aio's EOF marker: not a message
    assert asyncio.run(open_stream(ended, HELLO, 1.0)) is None  # type: ignore[arg-type]
