"""Per-submission proposal timeouts: the leader's own batches may wait longer than clients' requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cronraft.errors import OutcomeUnknown
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

    async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
        self.timeouts.append(timeout_s)
        await self.gate.wait()
        return await self.inner.propose(payload, timeout_s=timeout_s, late=late)


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


class LateReplicator(RecordingReplicator):
    """Every proposal times out at once (OutcomeUnknown) and keeps its `late`: the test decides later
    whether the entry applied (`apply_late`) or not (`drop_late`), as SyncObjReplicator does for a
    commit that comes after the proposal's timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[bytes, Any]] = []

    async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
        self.timeouts.append(timeout_s)
        self.pending.append((payload, late))
        raise OutcomeUnknown("the proposal did not commit in time; it may apply")

    def apply_late(self, n: int) -> None:
        payload, late = self.pending[n]
        if late is not None:
            late(self.inner.log.append(payload)[1])

    def drop_late(self, n: int) -> None:
        _, late = self.pending[n]
        if late is not None:
            late(None)


@pytest.mark.asyncio
async def test_an_entry_that_applies_long_after_its_timeout_still_reaches_late_and_frees_its_slot() -> None:
    """A client's command (`late` given) whose entry applies after the proposal's timeout, however long
    after: `late` gets its results then. The committer's slot is not held meanwhile (it used to be, up to
    60 s, and a commit later than that was never observed: the task never reached the leader's wheel)."""
    rep = LateReplicator()
    gc = GroupCommitter(rep, timeout_s=0.2, max_inflight=1)  # type: ignore[arg-type]
    gc.start()
    heard: list[list[bool]] = []
    try:
        with pytest.raises(OutcomeUnknown):
            await gc.submit([cmd(0)], late=lambda results: heard.append([r.applied for r in results]))
        assert rep.timeouts == [0.2]  # the default: not stretched to wait for the late outcome
        # The one slot is free: the next entry is proposed although the first has no outcome yet.
        with pytest.raises(OutcomeUnknown):
            await gc.submit([cmd(1)])
        assert len(rep.pending) == 2
        rep.apply_late(0)
        await asyncio.sleep(0)
        assert heard == [[True]]
        rep.apply_late(1)  # no `late`: nobody is told, nothing breaks
        await asyncio.sleep(0)
        assert heard == [[True]]
    finally:
        await gc.close()


@pytest.mark.asyncio
async def test_an_entry_that_will_not_apply_here_is_not_reported_late() -> None:
    rep = LateReplicator()
    gc = GroupCommitter(rep, timeout_s=0.2)  # type: ignore[arg-type]
    gc.start()
    heard: list[int] = []
    try:
        with pytest.raises(OutcomeUnknown):
            await gc.submit([cmd(0)], late=lambda results: heard.append(len(results)))
        rep.drop_late(0)  # leadership ended before it committed
        await asyncio.sleep(0)
        assert heard == []
    finally:
        await gc.close()
