"""Idle heartbeats: with thousands of workers connected, a worker holding nothing heartbeats less often.

The rules under test: the leader stretches the idle interval with the number of workers (unchanged up to
`idle_workers_per_interval`, capped) and sends it in every HeartbeatAck; a worker holding nothing is
silent only after two idle intervals, one holding leases after the ordinary limit; the worker waits the
idle interval only while it holds nothing, and a lease arriving during that wait is renewed at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_gateway import (
    connected_stream,
    fake_leader,
    get,
    heartbeat_listing,
    make_lease,
    offers,
    running_worker,
    worker_config,
)

from cronraft.client.handlers import HandlerContext, HandlerRegistry
from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import common_pb2
from cronraft.raft.codec import make_id
from cronraft.raft.kv import MemKV

SETTINGS = LeaderSettings(
    heartbeat_interval_ms=2_000, worker_silent_ms=4_200, idle_workers_per_interval=1_000
)


def core_with(workers: int, settings: LeaderSettings = SETTINGS) -> LeaderCore:
    core = LeaderCore(MemKV(), settings, node_id="n1", term=1, new_id=lambda ms: make_id(ms, b"\0" * 10))
    for i in range(workers):
        core.worker_connected(f"w{i}", 1, ["default"], {}, mono_ms=0)
    return core


def test_the_idle_interval_grows_with_the_workers_and_is_capped() -> None:
    assert core_with(1).idle_heartbeat_ms() == 2_000
    assert core_with(1_000).idle_heartbeat_ms() == 2_000  # nothing changes up to 1,000 workers
    assert core_with(1_001).idle_heartbeat_ms() == 4_000
    assert core_with(10_000).idle_heartbeat_ms() == 20_000
    assert core_with(40_000).idle_heartbeat_ms() == 30_000  # max_idle_heartbeat_ms
    core = core_with(3_500)
    assert core.heartbeat("w1", [], 10).idle_heartbeat_interval_ms == 8_000


def test_an_idle_worker_is_silent_after_two_idle_intervals_a_busy_one_after_the_ordinary_limit() -> None:
    core = core_with(3_000)  # idle interval 6 s: silent after 4.2 + 2 x 4 = 12.2 s
    core.ready = True
    core.workers["w0"].inflight.add("e1")  # holds a lease: the ordinary limit
    core.tick(0, 4_201)
    assert core.workers["w0"].silent and not core.workers["w1"].silent
    core.tick(0, 12_200)
    assert not core.workers["w1"].silent
    core.tick(0, 12_401)
    assert core.workers["w1"].silent
    core.heard_from("w1", 12_500)
    assert not core.workers["w1"].silent and core.workers["w1"].free() == 1


def test_a_disconnected_worker_holding_nothing_is_forgotten() -> None:
    core = core_with(2)
    core.workers["w0"].inflight.add("e1")
    core.worker_disconnected("w0")
    core.worker_disconnected("w1")
    assert set(core.workers) == {"w0"} and not core.workers["w0"].connected


@pytest.mark.asyncio
async def test_a_worker_holding_nothing_waits_the_idle_interval_and_renews_a_new_lease_at_once(
    tmp_path: Path,
) -> None:
    registry = HandlerRegistry()

    @registry.handler("hold")
    async def hold(ctx: HandlerContext) -> None:
        await asyncio.Event().wait()  # runs until the worker stops

    payload = common_pb2.Payload(handler=common_pb2.HandlerPayload(name="hold"))
    async with fake_leader(heartbeat_interval_ms=100) as leader:
        leader.welcome.idle_heartbeat_interval_ms = 60_000
        config = worker_config([leader.address], tmp_path / "outbox")
        async with running_worker(config, handlers=registry):
            stream = await connected_stream(leader)
            await get(leader.heartbeats)  # the first heartbeat of the stream (its complete listing)
            # Holding nothing: no heartbeat for many ordinary intervals (100 ms).
            await asyncio.sleep(0.8)
            assert leader.heartbeats.empty()
            lease = make_lease("e1", payload=payload, token=(1, 1))
            stream.put_nowait(offers(lease))
            # The new lease is listed (renewed) at once, not after the idle minute...
            await heartbeat_listing(leader, {"e1"})
            # ...and from then on at the ordinary interval.
            await heartbeat_listing(leader, {"e1"})
