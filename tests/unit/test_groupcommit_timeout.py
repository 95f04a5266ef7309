"""Per-submission proposal timeouts: the leader's own batches may wait longer than clients' requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.memreplicator import MemReplicator
from cronraft.raft.replicator import RaftStatus


def _apply(index: int, payload: bytes) -> bytes | None:
    batch = commands_pb2.CommandBatch.FromString(payload)
    return commands_pb2.BatchResult(
        results=[commands_pb2.CommandResult(applied=True) for _ in batch.commands]
    ).SerializeToString()


class RecordingReplicator:
    """Records the timeout of each proposal; proposals wait for the test to open the gate."""

    def __init__(self) -> None:
        self.inner = MemReplicator(_apply)
        self.inner.start()
        self.gate = asyncio.Event()
        self.timeouts: list[float] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> RaftStatus:
        return self.inner.status()

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None: ...

    async def transfer_leadership(self, target: str | None) -> bool:
        return False

    async def propose(self, payload: bytes, *, timeout_s: float) -> bytes:
        self.timeouts.append(timeout_s)
        await self.gate.wait()
        return await self.inner.propose(payload, timeout_s=timeout_s)


def cmd(i: int) -> commands_pb2.Command:
    return commands_pb2.Command(request_id=f"r{i}", stamped_at_ms=1)


@pytest.mark.asyncio
async def test_an_entry_waits_as_long_as_its_most_patient_submitter() -> None:
    rep = RecordingReplicator()
    gc = GroupCommitter(rep, timeout_s=5.0, max_inflight=1)  # type: ignore[arg-type]
    gc.start()
    try:
        first = asyncio.create_task(gc.submit([cmd(0)]))  # alone in the first entry: the default
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # While the first entry is in flight, a client and the leader queue into the next one.
        client = asyncio.create_task(gc.submit([cmd(1)]))
        leader = asyncio.create_task(gc.submit([cmd(2)], timeout_s=60.0))
        await asyncio.sleep(0)
        rep.gate.set()
        await asyncio.gather(first, client, leader)
        assert rep.timeouts == [5.0, 60.0]
        # A shorter request never shortens the default.
        await gc.submit([cmd(3)], timeout_s=1.0)
        assert rep.timeouts[-1] == 5.0
    finally:
        await gc.close()
