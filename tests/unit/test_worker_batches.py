"""A worker under a burst: many leases in one offer message run at once, their results are stored in
the outbox a batch at a time (not one flush each) and all reach the leader and leave the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cronraft.client.handlers import HandlerContext, HandlerRegistry
from cronraft.proto.v1 import common_pb2
from tests.support.wait import wait_until_async
from tests.unit.fake_gateway import (
    WAIT_S,
    connected_stream,
    fake_leader,
    get,
    make_lease,
    offers,
    running_worker,
    worker_config,
)

N = 300


@pytest.mark.asyncio
async def test_a_burst_of_handler_attempts_is_stored_and_reported_in_batches(tmp_path: Path) -> None:
    registry = HandlerRegistry()
    started: list[str] = []

    @registry.handler("noop")
    async def noop(ctx: HandlerContext) -> None:
        started.append(ctx.execution_id)

    payload = common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop"))
    leases = [make_lease(f"e{i:04d}", payload=payload, token=(1, i + 1)) for i in range(N)]
    async with fake_leader() as leader:
        config = worker_config([leader.address], tmp_path / "outbox", capacity=N)
        async with running_worker(config, handlers=registry) as worker:
            writes: list[int] = []
            put_many = worker.outbox.put_many

            def counting(results: list[common_pb2.AttemptResult], keys: Any = None) -> None:
                writes.append(len(results))
                put_many(results, keys)

            worker.outbox.put_many = counting  # type: ignore[method-assign]
            stream = await connected_stream(leader)
            stream.put_nowait(offers(*leases))
            results = [await get(leader.results) for _ in range(N)]
            assert sorted(r.execution_id for r in results) == sorted(lease.execution_id for lease in leases)
            assert all(r.outcome == common_pb2.ATTEMPT_SUCCEEDED for r in results)
            assert sorted(started) == sorted(lease.execution_id for lease in leases)
            assert sum(writes) == N
            assert len(writes) < N // 10  # results that finish together share one write
            await wait_until_async(lambda: len(worker.outbox) == 0, WAIT_S, "every result acked and removed")
            # The outbox's segment closes once no write came for SEGMENT_IDLE_S, and goes, acknowledged.
            await wait_until_async(
                lambda: not [p for p in (tmp_path / "outbox").iterdir() if p.name.endswith(".result")],
                WAIT_S,
                "the outbox's files deleted",
            )
