"""Output a leader proposes (S12, docs/reliability.md): with authentication off, output bearing no
execution's current token is dropped before it reaches the log, as with authentication on."""

from __future__ import annotations

import asyncio

from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft.kv import MemKV
from tests.support.clock import FakeClock


class Committer:
    max_batch = 100
    max_bytes = 4 << 20

    async def submit(self, *_: object, **__: object) -> list[object]:
        raise AssertionError("nothing may be proposed")


def test_output_for_no_execution_is_dropped_unauthenticated_as_authenticated() -> None:
    async def main() -> dict[str, int]:
        runner = LeaderRunner(
            kv=MemKV(),
            committer=Committer(),  # type: ignore[arg-type]
            settings=LeaderSettings(),
            node_id="n1",
            term=1,
            clock=FakeClock(wall=1_000, mono=1_000),  # type: ignore[arg-type]
            still_leader=lambda: True,
            heartbeat_interval_ms=1_000,
        )
        token = common_pb2.FencingToken(term=1, index=7)
        for bound, worker_id in ((False, "anyone"), (True, "w1")):
            session = runner.attach(worker_pb2.Hello(worker_id=worker_id, capacity=1), bound=bound)
            for n in range(3):
                chunk = worker_pb2.OutputChunk(execution_id="0" * 25 + str(n), token=token, data=b"x" * 1024)
                runner.on_output(session, chunk)
        assert not runner.output.pieces and runner._output_flush is None  # nothing buffered for the log
        return runner.dropped

    dropped = asyncio.run(main())
    assert dropped.get("stale_output") == 6
