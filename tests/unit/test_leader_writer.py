"""A new leader serves writes once its term's epoch applied here (Node.writer, LeaderRunner.until_ready):
before that its store can lack entries of earlier terms that committed (Raft tells a new leader they
committed only when an entry of its own term commits), and a write's checks against the store (the task
exists, a quota, the dedup record of a retried write) would answer from a state that is behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from cronraft.daemon import node as node_module
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.daemon.node import Node
from cronraft.errors import NotLeader, Unavailable
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.kv import MemKV
from cronraft.raft.records import META_EPOCH
from tests.support.clock import FakeClock


class HeldCommitter:
    """Commits nothing until `release` (a quorum that has not answered yet), then every command."""

    max_batch = 100
    max_bytes = 1 << 20

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def submit(
        self, cmds: Sequence[commands_pb2.Command], **_: object
    ) -> list[commands_pb2.CommandResult]:
        await self.release.wait()
        return [commands_pb2.CommandResult(applied=True) for _ in cmds]


def _runner(committer: HeldCommitter) -> LeaderRunner:
    kv = MemKV()
    with kv.write() as txn:  # an existing cluster: the runner proposes its epoch at once
        txn.put("meta", META_EPOCH, commands_pb2.Epoch(term=3, leader_id="n2").SerializeToString())
    return LeaderRunner(
        kv=kv,
        committer=committer,  # type: ignore[arg-type]
        settings=LeaderSettings(),
        node_id="n1",
        term=4,
        clock=FakeClock(wall=1_000, mono=1_000),  # type: ignore[arg-type]
        still_leader=lambda: True,
        heartbeat_interval_ms=1_000,
    )


def _node(runners: list[LeaderRunner]) -> Any:
    """What Node.writer uses of a node: leader_runner() answers the runners in turn (the last one stays)."""
    leading = list(runners)

    def leader_runner() -> LeaderRunner:
        return leading.pop(0) if len(leading) > 1 else leading[0]

    return SimpleNamespace(
        leader_runner=leader_runner,
        leader_grpc_address=lambda st: "127.0.0.1:1",
        replicator=SimpleNamespace(status=lambda: None),
    )


def test_a_write_waits_for_the_terms_epoch_then_goes_on() -> None:
    async def main() -> None:
        committer = HeldCommitter()
        runner = _runner(committer)
        runner.start()
        assert not await runner.until_ready(0.05)  # the epoch is not committed: not ready
        write = asyncio.create_task(Node.writer(_node([runner])))
        await asyncio.sleep(0.05)
        assert not write.done()  # the write waits rather than checking a store that is behind
        committer.release.set()
        assert await asyncio.wait_for(write, 5) is runner
        assert runner.ready and await runner.until_ready(0)
        await runner.stop()

    asyncio.run(main())


def test_a_write_is_refused_unavailable_without_a_quorum_and_not_leader_if_leadership_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_module, "WRITER_WAIT_S", 0.1)

    async def main() -> None:
        held = _runner(HeldCommitter())
        held.start()
        with pytest.raises(Unavailable, match="has not committed its first entry of the term"):
            await Node.writer(_node([held]))
        await held.stop()
        committer = HeldCommitter()
        committer.release.set()
        first, second = _runner(committer), _runner(committer)
        first.start()
        # A runner of a later term took over while the write waited: the write is not served by it.
        with pytest.raises(NotLeader):
            await Node.writer(_node([first, second]))
        await first.stop()

    asyncio.run(main())
