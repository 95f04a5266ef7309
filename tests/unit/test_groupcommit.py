"""Group commit over the in-memory replicator twin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cronraft.errors import NotLeader, OutcomeUnknown, Unavailable
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import BUSY_S, LINGER_S, GroupCommitter
from cronraft.raft.memreplicator import MemLog, MemReplicator
from cronraft.raft.replicator import RaftStatus


def echo_apply(log: list[tuple[int, list[str]]]) -> Callable[[int, bytes], bytes | None]:
    """A toy state machine: answers each command with its request id (in `error`), records entries."""

    def apply(index: int, payload: bytes) -> bytes | None:
        if log and index <= log[-1][0]:
            return None
        batch = commands_pb2.CommandBatch.FromString(payload)
        assert batch.version == 1
        ids = [c.request_id for c in batch.commands]
        log.append((index, ids))
        return commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True, error=i) for i in ids]
        ).SerializeToString()

    return apply


def cmd(request_id: str) -> commands_pb2.Command:
    return commands_pb2.Command(request_id=request_id, stamped_at_ms=1)


class GatedReplicator:
    """A replicator whose proposals wait for the test to open a gate (to observe coalescing)."""

    def __init__(self, apply: Callable[[int, bytes], bytes | None]) -> None:
        self.inner = MemReplicator(apply)
        self.inner.start()
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> RaftStatus:
        return self.inner.status()

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None: ...

    async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await self.inner.propose(payload, timeout_s=timeout_s, late=late)
        finally:
            self.in_flight -= 1


@pytest.mark.asyncio
async def test_each_submitter_gets_its_slice() -> None:
    entries: list[tuple[int, list[str]]] = []
    rep = MemReplicator(echo_apply(entries))
    rep.start()
    gc = GroupCommitter(rep)
    gc.start()
    results = await asyncio.gather(*(gc.submit([cmd(f"{i}a"), cmd(f"{i}b")]) for i in range(50)))
    for i, res in enumerate(results):
        assert [r.error for r in res] == [f"{i}a", f"{i}b"]
    assert sorted(i for _, ids in entries for i in ids) == sorted(f"{i}{s}" for i in range(50) for s in "ab")
    assert [index for index, _ in entries] == list(range(1, len(entries) + 1))
    assert await gc.submit([]) == []
    await gc.close()


@pytest.mark.asyncio
async def test_submitters_coalesce_while_entries_are_in_flight() -> None:
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    gc = GroupCommitter(rep, max_inflight=2, max_batch=100, linger_s=0)  # (the linger: below)
    gc.start()
    tasks = [asyncio.create_task(gc.submit([cmd(str(i))])) for i in range(300)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert rep.in_flight == 2  # the first two entries wait at the gate; the rest queue
    rep.gate.set()
    results = await asyncio.gather(*tasks)
    assert [r[0].error for r in results] == [str(i) for i in range(300)]
    assert rep.max_in_flight == 2
    assert all(len(ids) <= 100 for _, ids in entries)
    assert len(entries) < 300 / 2  # coalesced: far fewer entries than submitters
    assert gc.entries_proposed == len(entries) and gc.commands_proposed == 300
    # the order of commands in the log is the order of submission
    assert [i for _, ids in entries for i in ids] == [str(i) for i in range(300)]
    await gc.close()


@pytest.mark.asyncio
async def test_under_a_steady_load_submissions_share_entries_and_a_lone_one_goes_at_once() -> None:
    """Submissions 1 ms apart, each committed at once (no entry waits for another): without the linger
    each would be an entry of its own. With it, those of LINGER_S share one; the first (nothing proposed
    lately) is proposed without waiting."""
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    rep.gate.set()
    # A linger 40 times the default: "at once" (under half of it) then holds on a loaded machine, where
    # half of the default 5 ms was missed (9.5 ms at load 9), and a linger taken would still show.
    linger_s = 40 * LINGER_S
    gc = GroupCommitter(rep, max_inflight=4, linger_s=linger_s, busy_s=max(BUSY_S, 2 * linger_s))
    gc.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await gc.submit([cmd("lone")])
    assert loop.time() - t0 < linger_s / 2 and len(entries) == 1  # at once
    tasks = []
    for i in range(40):
        tasks.append(asyncio.create_task(gc.submit([cmd(str(i))])))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert [i for _, ids in entries[1:] for i in ids] == [str(i) for i in range(40)]
    assert len(entries) - 1 <= 40 / 3, [len(ids) for _, ids in entries]
    await gc.close()


@pytest.mark.asyncio
async def test_max_bytes_splits_entries_but_never_a_submission() -> None:
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    gc = GroupCommitter(rep, max_inflight=1, max_bytes=200)
    gc.start()
    tasks = [asyncio.create_task(gc.submit([cmd(f"{i:03d}-{'x' * 20}")] * 2)) for i in range(20)]
    for _ in range(10):
        await asyncio.sleep(0)
    rep.gate.set()
    await asyncio.gather(*tasks)
    assert len(entries) > 2
    for _, ids in entries:
        assert len(ids) % 2 == 0 and all(ids[k] == ids[k + 1] for k in range(0, len(ids), 2))
    with pytest.raises(ValueError):
        await gc.submit([cmd("y" * 300)])
    await gc.close()


@pytest.mark.asyncio
async def test_errors_reach_every_submitter_of_the_entry() -> None:
    entries: list[tuple[int, list[str]]] = []
    rep = MemReplicator(echo_apply(entries))
    rep.start()
    gc = GroupCommitter(rep)
    gc.start()
    rep.fail_next(OutcomeUnknown("lost"), applied=True)
    outcomes = await asyncio.gather(*(gc.submit([cmd(str(i))]) for i in range(5)), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, OutcomeUnknown)]
    assert failed  # every submitter of the first entry
    assert len(entries) >= 1  # ... whose commands may nonetheless have applied
    rep.set_leader(False)
    with pytest.raises(NotLeader):
        await gc.submit([cmd("x")])
    await gc.close()
    with pytest.raises(Unavailable):
        await gc.submit([cmd("late")])


@pytest.mark.asyncio
async def test_close_fails_queued_submitters() -> None:
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    gc = GroupCommitter(rep, max_inflight=1, timeout_s=1.0)
    gc.start()
    first = asyncio.create_task(gc.submit([cmd("first")]))
    for _ in range(5):
        await asyncio.sleep(0)
    queued = asyncio.create_task(gc.submit([cmd("queued")]))
    for _ in range(5):
        await asyncio.sleep(0)
    closing = asyncio.create_task(gc.close())
    with pytest.raises(Unavailable):
        await queued
    rep.gate.set()  # the entry in flight completes normally
    assert (await first)[0].error == "first"
    await closing


@pytest.mark.asyncio
async def test_memreplicator_controls() -> None:
    seen: list[RaftStatus] = []
    entries: list[tuple[int, list[str]]] = []
    rep = MemReplicator(echo_apply(entries))
    rep.on_state_change(seen.append)
    with pytest.raises(Unavailable):
        await rep.propose(b"", timeout_s=1)
    rep.start()
    batch = commands_pb2.CommandBatch(version=1, commands=[cmd("a")]).SerializeToString()
    assert commands_pb2.BatchResult.FromString(await rep.propose(batch, timeout_s=1)).results[0].error == "a"
    assert rep.status().applied_index == 1
    assert rep.bump_term() == 2
    rep.set_leader(False)
    assert seen[-1].is_leader is False and seen[-1].term == 2
    with pytest.raises(NotLeader):
        await rep.propose(batch, timeout_s=1)
    # a replay applies nothing twice
    rep.log.replay()
    assert [i for i, _ in entries] == [1]


def test_memlog_is_synchronous() -> None:
    applied: list[int] = []

    def apply(index: int, payload: bytes) -> bytes:
        applied.append(index)
        return payload

    mem = MemLog(apply)
    assert mem.append(b"x") == (1, b"x")
    assert mem.append(b"y") == (2, b"y")
    assert applied == [1, 2]


@pytest.mark.asyncio
async def test_a_full_queue_refuses_with_resource_exhausted() -> None:
    import asyncio

    from cronraft.errors import ResourceExhausted
    from cronraft.proto.v1 import commands_pb2
    from cronraft.raft.groupcommit import GroupCommitter
    from cronraft.raft.memreplicator import MemReplicator

    gate = asyncio.Event()

    class Slow(MemReplicator):
        async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
            await gate.wait()
            return await super().propose(payload, timeout_s=timeout_s, late=late)

    def apply(index: int, payload: bytes) -> bytes:
        from cronraft.raft.codec import decode_batch

        n = len(decode_batch(payload).commands)
        return commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True)] * n
        ).SerializeToString()

    rep = Slow(apply)
    rep.start()
    gc = GroupCommitter(rep, max_inflight=1, max_queued=5)
    gc.start()
    cmd = commands_pb2.Command(stamped_at_ms=1)
    first = asyncio.ensure_future(gc.submit([cmd]))  # taken into the one in-flight entry
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(gc.submit([cmd])) for _ in range(5)]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted):
        await gc.submit([cmd])
    gate.set()
    assert len(await first) == 1
    assert all(len(r) == 1 for r in await asyncio.gather(*queued))
    await gc.close()
