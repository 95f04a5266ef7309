"""Live output that the worker drops is said in the stream (client/worker/live_output.py): a log with a
gap shows it and its size, instead of the bytes before and after it spliced together as one text. Output
waiting when a stream goes, or written until the next one, is kept for it within the same bound."""

from __future__ import annotations

import pytest

from cronraft.client.worker.live_output import MAX_LIVE_OUTPUT_BYTES, LiveOutput, gap_note
from cronraft.proto.v1 import common_pb2, worker_pb2

KEY = ("exec-1", 1)
TOKEN = common_pb2.FencingToken(term=1, index=7)


class Session:
    def __init__(self) -> None:
        self.written: list[worker_pb2.WorkerMessage] = []
        self.read_through = 0  # no answer from the leader: nothing confirmed

    async def write(self, msg: worker_pb2.WorkerMessage) -> int:
        self.written.append(msg)
        return len(self.written)


async def _flushed(live: LiveOutput) -> bytes:
    session = Session()
    await live._flush(session, {KEY})  # type: ignore[arg-type]
    return b"".join(m.output.data for m in session.written if m.output.stream == worker_pb2.STDOUT)


@pytest.mark.asyncio
async def test_output_beyond_the_buffer_leaves_a_note_of_its_size() -> None:
    """A writer that does not wait for room (in-process work): the oldest bytes go, said once."""
    live = LiveOutput(connected=lambda: True, flush_interval_s=0.1)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    sink(worker_pb2.STDOUT, b"a" * 1000)
    sink(worker_pb2.STDOUT, b"b" * MAX_LIVE_OUTPUT_BYTES)  # pushes the a's out
    out = await _flushed(live)
    assert out == gap_note(1000) + b"b" * MAX_LIVE_OUTPUT_BYTES
    sink(worker_pb2.STDOUT, b"c")
    assert await _flushed(live) == b"c"  # said once


@pytest.mark.asyncio
async def test_output_without_a_stream_waits_for_the_next_one() -> None:
    connected = False
    live = LiveOutput(connected=lambda: connected, flush_interval_s=0.1)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    sink(worker_pb2.STDOUT, b"kept while cut off\n")
    connected = True
    sink(worker_pb2.STDOUT, b"after\n")
    assert await _flushed(live) == b"kept while cut off\nafter\n"


@pytest.mark.asyncio
async def test_a_disconnect_keeps_the_buffer_for_the_next_stream() -> None:
    connected = True
    live = LiveOutput(connected=lambda: connected, flush_interval_s=0.1)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    sink(worker_pb2.STDOUT, b"x" * 10)
    connected = False
    live.disconnected(Session())  # type: ignore[arg-type]
    connected = True
    sink(worker_pb2.STDOUT, b"y")
    assert await _flushed(live) == b"x" * 10 + b"y"
