"""A worker that reaches a node during an election is held and told the new leader as soon as this node
learns it, rather than sent away empty-handed to back off (part of the failover time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cronraft import errors
from cronraft.daemon.services import WorkerGatewayServicer, worker_gateway
from cronraft.proto.v1 import worker_pb2


class ElectingNode:
    """A node that knows no leader until `learn` is called."""

    def __init__(self) -> None:
        self.leader_address = ""
        self.asked = 0
        self.relay = SimpleNamespace(enabled=False)  # [cluster] relay = false: the redirect (daemon.relay)

    def leader_runner(self) -> Any:
        self.asked += 1
        raise errors.NotLeader(self.leader_address or None)


async def hello() -> AsyncIterator[worker_pb2.WorkerMessage]:
    yield worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w1", capacity=1))


async def first_answer(servicer: WorkerGatewayServicer) -> worker_pb2.GatewayMessage:
    stream = servicer.Connect(hello(), cast(Any, None))
    return await anext(stream)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_worker_is_held_until_the_new_leader_is_known() -> None:
    node = ElectingNode()
    servicer = WorkerGatewayServicer(cast(Any, node))
    answer = asyncio.create_task(first_answer(servicer))
    while node.asked < 3:  # held: asking again and again, nothing answered yet
        await asyncio.sleep(worker_gateway.LEADERLESS_POLL_S)
    assert not answer.done()
    node.leader_address = "127.0.0.1:7001"
    msg = await asyncio.wait_for(answer, 5)
    assert msg.WhichOneof("kind") == "not_leader" and msg.not_leader.leader_address == "127.0.0.1:7001"


@pytest.mark.asyncio
async def test_without_a_leader_the_worker_is_sent_away_after_the_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_gateway, "LEADERLESS_HOLD_S", 0.1)
    msg = await asyncio.wait_for(first_answer(WorkerGatewayServicer(cast(Any, ElectingNode()))), 5)
    assert msg.WhichOneof("kind") == "not_leader" and msg.not_leader.leader_address == ""
