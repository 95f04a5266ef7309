"""Large results reach the log (issue 15): the leader splits what it proposes into submissions that each
fit one entry, in bytes as well as in commands, so that results of up to 3 MiB each never make a
submission the group committer refuses (it would be retried forever)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.errors import Unavailable
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.kv import MemKV
from tests.support.clock import FakeClock

MiB = 1 << 20


class Committer:
    """Records each submission, and refuses it (the runner then hands the commands back to its core)."""

    max_batch = 5
    max_bytes = 4 * MiB

    def __init__(self) -> None:
        self.submissions: list[list[commands_pb2.Command]] = []

    async def submit(
        self, cmds: Sequence[commands_pb2.Command], **_: object
    ) -> list[commands_pb2.CommandResult]:
        self.submissions.append(list(cmds))
        raise Unavailable("not now")


def _complete(n: int, result_bytes: int) -> commands_pb2.Command:
    r = common_pb2.AttemptResult(
        execution_id=f"e{n}", outcome=common_pb2.ATTEMPT_SUCCEEDED, result=b"r" * result_bytes
    )
    return commands_pb2.Command(complete=commands_pb2.Complete(execution_id=f"e{n}", result=r))


def test_submissions_fit_an_entry_in_commands_and_bytes() -> None:
    async def main() -> Committer:
        committer = Committer()
        runner = LeaderRunner(
            kv=MemKV(),
            committer=committer,  # type: ignore[arg-type]
            settings=LeaderSettings(),
            node_id="n1",
            term=1,
            clock=FakeClock(wall=1_000, mono=1_000),  # type: ignore[arg-type]
            still_leader=lambda: True,
            heartbeat_interval_ms=1_000,
        )
        sizes = [3 * MiB, 3 * MiB, 10, 10, 2 * MiB, 1 * MiB, 10, 10, 10, 10, 10, 10]
        runner._propose([_complete(n, size) for n, size in enumerate(sizes)])
        await asyncio.gather(*runner._inflight, return_exceptions=True)
        return committer

    committer = asyncio.run(main())
    sent = [c.complete.execution_id for s in committer.submissions for c in s]
    assert sent == [f"e{n}" for n in range(12)]  # all of them, in order
    for s in committer.submissions:
        assert len(s) <= Committer.max_batch
        assert sum(c.ByteSize() + 6 for c in s) <= Committer.max_bytes
    assert [len(s) for s in committer.submissions] == [
        1,
        3,
        5,
        3,
    ]  # [3M] [3M 10 10] [2M 1M 10 10 10] [10 10 10]
