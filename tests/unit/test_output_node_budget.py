"""The read budget a leader's worker streams share (S12, daemon.leader.output_admission, "The read
budget"): N streams each pushing live output at the per-stream limit are read, together, at no more than
the node's budget, each getting an equal share; a stream alone still gets its own budget, and a worker
sending little output beside a flood is read with little delay.

The streams are driven through `LeaderRunner.on_output` on a fake clock, as the gateway drives it: each
stream sends its next piece the moment the pause the runner returned for its previous one has passed (a
sender flow control holds no longer than that)."""

from __future__ import annotations

import asyncio
import heapq

from cronraft import bounds
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner, WorkerSession
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft.kv import MemKV
from tests.support.clock import FakeClock

MIB = 1 << 20
SECONDS = 20.0


class Committer:
    max_batch = 100
    max_bytes = 4 << 20

    async def submit(self, *_: object, **__: object) -> list[object]:
        raise AssertionError("nothing may be proposed: the output is for no lease")


def _read(
    piece_sizes: list[int], *, spacing_s: float = 0.0, detach_after_s: float | None = None
) -> list[int]:
    """Bytes read from each stream over SECONDS: stream i sends pieces of `piece_sizes[i]` bytes as fast
    as it is read (at most one every `spacing_s`); the first stream leaves at `detach_after_s`."""

    async def main() -> list[int]:
        clock = FakeClock(wall=1_000, mono=1_000)
        runner = LeaderRunner(
            kv=MemKV(),
            committer=Committer(),  # type: ignore[arg-type]
            settings=LeaderSettings(),
            node_id="n1",
            term=1,
            clock=clock,  # type: ignore[arg-type]
            still_leader=lambda: True,
            heartbeat_interval_ms=1_000,
        )
        sessions: list[WorkerSession] = [
            runner.attach(worker_pb2.Hello(worker_id=f"w{i}", capacity=1), bound=True)
            for i in range(len(piece_sizes))
        ]
        token = common_pb2.FencingToken(term=1, index=7)
        read = [0] * len(sessions)
        start = clock.mono / 1000
        due = [(start, i) for i in range(len(sessions))]
        while due:
            at, i = heapq.heappop(due)
            if at >= start + SECONDS:
                continue
            if detach_after_s is not None and i == 0 and at >= start + detach_after_s:
                runner.detach(sessions[0])
                continue
            clock.advance_to(at)
            chunk = worker_pb2.OutputChunk(execution_id="0" * 26, token=token, data=b"x" * piece_sizes[i])
            pause = runner.on_output(sessions[i], chunk)
            read[i] += piece_sizes[i]
            heapq.heappush(due, (at + max(pause, spacing_s, 0.001), i))
        return read

    return asyncio.run(main())


def test_n_streams_at_the_per_stream_limit_get_together_no_more_than_the_node_budget() -> None:
    streams = 8
    read = _read([MIB] * streams)
    # Each stream alone would be read at its own limit: N times the node's budget together, before.
    per_stream_alone = bounds.MAX_OUTPUT_BURST_BYTES + bounds.MAX_OUTPUT_BYTES_PER_S * SECONDS
    assert streams * per_stream_alone > 4 * (bounds.MAX_NODE_OUTPUT_BYTES_PER_S * SECONDS)
    node_most = (
        bounds.MAX_NODE_OUTPUT_BURST_BYTES + bounds.MAX_NODE_OUTPUT_BYTES_PER_S * SECONDS + streams * MIB
    )
    assert sum(read) <= node_most
    # And the budget is used, not starved: at least the rate over the time.
    assert sum(read) >= bounds.MAX_NODE_OUTPUT_BYTES_PER_S * SECONDS * 0.9
    # Fair: each stream an equal share, within a few pieces.
    assert max(read) - min(read) <= 4 * MIB, read


def test_a_stream_alone_gets_its_own_budget() -> None:
    (read,) = _read([MIB])
    most = min(bounds.MAX_OUTPUT_BYTES_PER_S, bounds.MAX_NODE_OUTPUT_BYTES_PER_S)
    assert read >= most * SECONDS * 0.9
    assert read <= bounds.MAX_OUTPUT_BURST_BYTES + bounds.MAX_OUTPUT_BYTES_PER_S * SECONDS + MIB


def test_a_worker_sending_little_beside_a_flood_is_read_as_fast_as_it_sends() -> None:
    """Four streams push 1 MiB pieces as fast as they are read; a fifth sends 64 KiB every 0.2 s (what a
    worker flushes for a few attempts). Its pieces are read at its pace, not one per round of the
    flood's megabytes (its heartbeats wait behind its output)."""
    read = _read([MIB] * 4 + [64 * 1024], spacing_s=0.2)
    assert read[4] >= 64 * 1024 * (SECONDS / 0.2) * 0.95
    assert (
        sum(read)
        <= bounds.MAX_NODE_OUTPUT_BURST_BYTES + bounds.MAX_NODE_OUTPUT_BYTES_PER_S * SECONDS + 5 * MIB
    )


def test_a_stream_that_leaves_gives_its_share_to_the_others() -> None:
    read = _read([MIB] * 4, detach_after_s=SECONDS / 2)
    # The three that stay share the whole budget after it left: more than three quarters of the total.
    assert sum(read[1:]) >= bounds.MAX_NODE_OUTPUT_BYTES_PER_S * SECONDS * 0.8
