"""Backpressure on a payload's live output (client/worker/live_output.py, client/_process_runner.py):
while what a process payload printed waits to be sent, its pipes are not read, so that output up to
the log's cap reaches the log whole and in order; past the cap, without a stream, or once the attempt
is stopped, nobody waits.

The buffer's rules are tested pure (`StreamBuffer`, `HeldTime`, `drain_left`: no loop, no time); the
live output's hand-offs on a loop with a fake session (no sleeps: each wait is a future or a task,
bounded by `WAIT_S`); the runner with real processes; the worker against the fake leader."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from fake_gateway import (
    WAIT_S,
    connected_stream,
    fake_leader,
    make_lease,
    offers,
    running_worker,
    worker_config,
)

from cronraft.client import _process_runner
from cronraft.client._process_runner import AttemptRunner, HeldTime, drain_left
from cronraft.client._runner import MAX_OUTPUT_PIECE_BYTES
from cronraft.client.worker.live_output import (
    HOLD_AT_BYTES,
    LOG_CAP_BYTES,
    MAX_LIVE_OUTPUT_BYTES,
    LiveOutput,
    StreamBuffer,
    doubt_note,
    gap_note,
)
from cronraft.clock import SystemClock
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft import output as raft_output

KEY = ("exec-1", 1, 7)
TOKEN = common_pb2.FencingToken(term=1, index=7)
PIECE = MAX_OUTPUT_PIECE_BYTES


def _data(n: int, seed: bytes = b"out") -> bytes:
    """`n` bytes of every value, none repeating in a way that would hide a reordering."""
    return hashlib.shake_256(seed).digest(n)


def _pieces(data: bytes, size: int = PIECE) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_workers_log_cap_is_the_state_machines() -> None:
    assert LOG_CAP_BYTES == raft_output.MAX_BYTES_PER_STREAM
    assert HOLD_AT_BYTES + PIECE == MAX_LIVE_OUTPUT_BYTES


# -- the buffer (pure) -------------------------------------------------------------------------------


def test_a_writer_that_waits_is_held_with_room_left_for_its_next_piece_and_loses_nothing() -> None:
    buf = StreamBuffer()
    data = _data(HOLD_AT_BYTES)
    for piece in _pieces(data)[:-1]:
        buf.add(piece)
        assert not buf.full()
    buf.add(_pieces(data)[-1])
    assert buf.full()  # held at HOLD_AT_BYTES
    buf.add(_data(PIECE, b"last"))  # the piece it read before it saw the hold still fits
    assert buf.take() == data + _data(PIECE, b"last")
    assert buf.dropped == 0 and not buf.full() and buf.logged == MAX_LIVE_OUTPUT_BYTES


def test_past_the_log_cap_nothing_more_is_sent_and_nobody_waits() -> None:
    """The log keeps the first LOG_CAP_BYTES (and says truncated): the worker sends exactly those, so
    the log is what it would be had everything been sent; a writer is never held for the rest."""
    data = _data(LOG_CAP_BYTES + 3 * PIECE + 17)
    buf, sent = StreamBuffer(), bytearray()
    for piece in _pieces(data):
        buf.add(piece)
        if buf.full():
            sent += buf.take()  # the flush, before the writer goes on
    sent += buf.take()
    assert bytes(sent) == data[:LOG_CAP_BYTES]
    assert buf.at_cap() and not buf.full()
    buf.add(b"more")
    assert not buf.full() and buf.take() == b""


def test_a_note_counts_toward_the_cap_as_it_does_in_the_log() -> None:
    buf = StreamBuffer()
    buf.dropped = 123  # dropped before anything was sent
    data = _data(LOG_CAP_BYTES)
    sent = bytearray()
    for piece in _pieces(data):
        buf.add(piece)
        if buf.full():
            sent += buf.take()
    sent += buf.take()
    note = gap_note(123)
    assert bytes(sent) == note + data[: LOG_CAP_BYTES - len(note)]
    assert len(sent) == LOG_CAP_BYTES


def test_a_writer_that_does_not_wait_loses_the_oldest_bytes_then_the_cap_applies() -> None:
    """One write of 2 MiB (an in-process handler): the newest MAX_LIVE_OUTPUT_BYTES are kept, after a
    note of the rest, as before; the log's cap then counts the note and those bytes."""
    buf = StreamBuffer()
    data = _data(2 * LOG_CAP_BYTES)
    buf.add(data)
    dropped = len(data) - MAX_LIVE_OUTPUT_BYTES
    assert buf.take() == gap_note(dropped) + data[-MAX_LIVE_OUTPUT_BYTES:]


def test_output_in_doubt_is_said_and_frees_its_room_under_the_cap() -> None:
    """Bytes sent on a stream that broke before the leader said it read them may be lost: said at the
    next send, and no longer counted towards the cap (the state machine stops at the cap if not)."""
    buf = StreamBuffer()
    buf.logged = LOG_CAP_BYTES - 1000
    buf.add(_data(1000))
    assert buf.at_cap()
    buf.doubt(len(buf.take()))  # sent, then the stream went before an answer came
    assert not buf.at_cap() and buf.take() == doubt_note(1000)
    room = 1000 - len(doubt_note(1000))
    buf.add(_data(2000))
    assert buf.take() == _data(2000)[:room] and buf.at_cap()
    buf.add(b"more")  # past the cap: not kept, nor a note of it
    assert buf.dropped == 0 and buf.take() == b""


def test_output_left_out_past_the_cap_is_a_gap_once_a_doubt_gives_the_room_back() -> None:
    """At the cap the rest is left out, unsaid (the log is full). If what filled it then goes in doubt
    (its stream broke), the log may have room after all: what was left out, and what waited before it,
    is said as one gap, and what comes next is kept."""
    buf = StreamBuffer()
    buf.logged = LOG_CAP_BYTES - 1000  # taken, the last 4096 of them on a stream that then went
    buf.add(_data(3000, b"waits"))  # 1000 fit under the cap, wait to be sent
    buf.add(_data(5000, b"left out"))
    assert buf.at_cap() and len(buf.buf) == 1000
    buf.doubt(4096)  # the stream went before the leader answered for its last chunk
    buf.add(b"next\n")
    assert buf.take() == doubt_note(4096) + gap_note(1000 + 2000 + 5000) + b"next\n"


def test_a_doubt_is_said_before_a_gap_after_it() -> None:
    """In the stream's order: what went with the stream was sent before what was dropped since."""
    buf = StreamBuffer()
    buf.add(b"sent")
    buf.doubt(len(buf.take()))
    buf.dropped = 7
    buf.add(b"after")
    assert buf.pending() == len(doubt_note(4) + gap_note(7)) + 5
    assert buf.take() == doubt_note(4) + gap_note(7) + b"after"
    assert (buf.unconfirmed, buf.dropped) == (0, 0)


# -- held time and the drain after exit (pure) -------------------------------------------------------


def test_held_time_counts_while_at_least_one_reader_is_held() -> None:
    held = HeldTime()
    assert held.total(5.0) == 0.0
    held.hold(10.0)
    held.hold(11.0)  # both pipes held: counted once
    assert held.total(12.0) == 2.0
    held.release(13.0)
    assert held.total(14.0) == 4.0
    held.release(14.0)
    assert held.total(20.0) == 4.0
    held.hold(30.0)
    assert held.total(30.5) == 4.5


def test_the_drain_after_exit_does_not_count_time_held() -> None:
    drain = _process_runner._PIPE_DRAIN_S
    assert drain_left(100.0, 3.0, 100.0, 3.0) == drain
    assert drain_left(100.0, 3.0, 100.0 + drain, 3.0) == 0.0  # a background child's pipe: given up
    # Held 5 s of the 5.5 s since the exit: half a second of waiting on the pipes counted.
    assert drain_left(100.0, 3.0, 105.5, 8.0) == pytest.approx(drain - 0.5)


# -- the live output on a loop -----------------------------------------------------------------------


class Session:
    """What LiveOutput writes to: records chunks; `gate` (when set) holds each write until opened."""

    def __init__(self) -> None:
        self.written: list[worker_pb2.OutputChunk] = []
        self.gate: asyncio.Event | None = None
        self.writing = asyncio.Event()  # a write began
        self.read_through = 0  # no answer from the leader: nothing confirmed

    async def write(self, msg: worker_pb2.WorkerMessage) -> int:
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()
        self.written.append(msg.output)
        return len(self.written)

    def data(self, stream: worker_pb2.OutputStream.ValueType = worker_pb2.STDOUT) -> bytes:
        return b"".join(c.data for c in self.written if c.stream == stream)


async def _write_all(sink: object, data: bytes, stream: worker_pb2.OutputStream.ValueType) -> int:
    """Write `data` as a pipe reader does, waiting whenever told to; returns how many waits."""
    waits = 0
    for piece in _pieces(data):
        room = sink(stream, piece)  # type: ignore[operator]
        if room is not None:
            waits += 1
            await room
    return waits


@pytest.mark.asyncio
async def test_a_held_writer_goes_on_once_its_buffer_was_sent_and_not_before() -> None:
    live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
    session = Session()
    session.gate = asyncio.Event()
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    rooms = [sink(worker_pb2.STDOUT, piece) for piece in _pieces(_data(HOLD_AT_BYTES))]
    room = rooms[-1]
    assert rooms[:-1] == [None] * (len(rooms) - 1) and room is not None
    flush = asyncio.create_task(live._flush(session, {KEY}))  # type: ignore[arg-type]
    await asyncio.wait_for(session.writing.wait(), WAIT_S)  # the flush took the buffer, writes it
    assert not room.done()  # taken but not on its way yet: still held
    session.gate.set()
    await asyncio.wait_for(flush, WAIT_S)
    assert room.done() and session.data() == _data(HOLD_AT_BYTES)


@pytest.mark.asyncio
async def test_the_flush_loop_sends_at_once_for_a_held_writer_not_at_its_tick() -> None:
    """An hour's flush interval: 900 KiB on two streams still go through whole, in order, no note."""
    live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
    session = Session()
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    loop_task = asyncio.create_task(live.flush_loop(session))  # type: ignore[arg-type]
    out, err = _data(900 * 1024), _data(900 * 1024, b"err")
    try:
        waits = await asyncio.wait_for(
            asyncio.gather(
                _write_all(sink, out, worker_pb2.STDOUT), _write_all(sink, err, worker_pb2.STDERR)
            ),
            WAIT_S,
        )
        live.finish(KEY)
        await live.flush_finished(session)  # type: ignore[arg-type]
    finally:
        loop_task.cancel()
    assert min(waits) >= 4  # held, and let go each time by a flush (an hour's tick never came)
    assert session.data(worker_pb2.STDOUT) == out and session.data(worker_pb2.STDERR) == err
    assert all(len(c.data) <= MAX_LIVE_OUTPUT_BYTES for c in session.written)


@pytest.mark.asyncio
async def test_without_a_stream_a_held_writer_is_let_go_and_nobody_is_held() -> None:
    """Without a stream nobody waits; the newest MAX_LIVE_OUTPUT_BYTES wait for the next stream (what
    waited when the stream went among them), after a note of what was dropped."""
    connected = True
    live = LiveOutput(connected=lambda: connected, flush_interval_s=3600)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    before = _data(HOLD_AT_BYTES)
    rooms = [sink(worker_pb2.STDOUT, piece) for piece in _pieces(before)]
    room = rooms[-1]
    assert room is not None and not room.done()
    connected = False
    live.disconnected(Session())  # type: ignore[arg-type]  # the stream went
    assert room.done()
    cut_off = _data(4 * LOG_CAP_BYTES, b"cut off")
    assert all(sink(worker_pb2.STDOUT, piece) is None for piece in _pieces(cut_off))
    connected = True
    held = sink(worker_pb2.STDOUT, b"back\n")  # a stream again, the buffer full: held until it is sent
    assert held is not None and not held.done()
    session = Session()
    await live._flush(session, {KEY})  # type: ignore[arg-type]
    assert held.done()
    written = before + cut_off + b"back\n"
    kept = written[-MAX_LIVE_OUTPUT_BYTES:]
    assert session.data() == gap_note(len(written) - len(kept)) + kept


@pytest.mark.asyncio
async def test_an_ended_attempt_lets_its_writer_go() -> None:
    live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    room = [sink(worker_pb2.STDOUT, piece) for piece in _pieces(_data(HOLD_AT_BYTES))][-1]
    assert room is not None and not room.done()
    live.finish(KEY)
    assert room.done()


# -- the process runner ------------------------------------------------------------------------------


def _cat_runner(
    tmp_path: Path, data: bytes, *, then: str = "", timeout_ms: int = 0, sink: object
) -> AttemptRunner:
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    lease = make_lease("e1", script=f"cat {path}{then}", timeout_ms=timeout_ms)
    return AttemptRunner(
        lease,
        clock=SystemClock(),
        kill_grace_s=0.5,
        base_env={"PATH": os.environ["PATH"]},
        on_output=sink,  # type: ignore[arg-type]
    )


def _settle(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)


class HoldingSink:
    """Takes a runner's output and holds its writer once `hold_at` bytes arrived: let go by
    `release_after` (a loop timer; None: never, until the runner stops waiting)."""

    def __init__(self, hold_at: int, release_after: float | None) -> None:
        self.got = bytearray()
        self.holds = 0
        self.hold_at = hold_at
        self.release_after = release_after

    def __call__(self, stream: worker_pb2.OutputStream.ValueType, data: bytes) -> asyncio.Future[None] | None:
        self.got += data
        if len(self.got) < self.hold_at or self.holds:
            return None
        self.holds += 1
        loop = asyncio.get_running_loop()
        room: asyncio.Future[None] = loop.create_future()
        if self.release_after is not None:
            loop.call_later(self.release_after, _settle, room)
        return room


@pytest.mark.asyncio
async def test_a_payload_held_by_backpressure_still_times_out_and_others_run_meanwhile(
    tmp_path: Path,
) -> None:
    """A sink that never makes room: the payload blocks on its writes (it never reaches the line after
    `cat`), the runner waits on a future (the loop is free: another payload runs and ends meanwhile),
    and the timeout kills it on time."""
    marker = tmp_path / "after-cat"
    sink = HoldingSink(hold_at=1, release_after=None)
    data = _data(4 * LOG_CAP_BYTES)
    held = _cat_runner(tmp_path, data, then=f"; touch {marker}", timeout_ms=1500, sink=sink)
    loop = asyncio.get_running_loop()
    began = loop.time()
    held_run = asyncio.create_task(held.run())
    other = AttemptRunner(
        make_lease("e2", script="echo other"), clock=SystemClock(), base_env={"PATH": os.environ["PATH"]}
    )
    other_result = await asyncio.wait_for(other.run(), WAIT_S)
    assert other_result.outcome == common_pb2.ATTEMPT_SUCCEEDED and other_result.stdout_tail == b"other\n"
    assert not held_run.done()
    result = await asyncio.wait_for(held_run, WAIT_S)
    took = loop.time() - began
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT, result.error
    assert not marker.exists()  # it was blocked writing until killed
    assert len(sink.got) < len(data) and sink.holds == 1
    assert 1.5 <= took < 1.5 + 0.5 + 1.0  # its timeout, within the kill grace (and slack), not later


@pytest.mark.asyncio
async def test_a_held_payload_is_read_to_its_end_after_it_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payload writes 300 KiB and exits while its reader is held for longer than the drain after
    exit: the time held is not counted, so its output is read whole (into the sink and the tail)."""
    monkeypatch.setattr(_process_runner, "_PIPE_DRAIN_S", 0.1)
    data = _data(300 * 1024)
    sink = HoldingSink(hold_at=HOLD_AT_BYTES, release_after=0.6)
    result = await asyncio.wait_for(_cat_runner(tmp_path, data, sink=sink).run(), WAIT_S)
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED, result.error
    assert sink.holds == 1 and bytes(sink.got) == data
    assert result.stdout_tail == data[-64 * 1024 :]


# -- the worker against the fake leader --------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_worker_forwards_fast_output_whole_and_in_order(tmp_path: Path) -> None:
    out, err = _data(900 * 1024), _data(900 * 1024, b"err")
    (tmp_path / "out.bin").write_bytes(out)
    (tmp_path / "err.bin").write_bytes(err)
    script = f"cat {tmp_path / 'out.bin'} & cat {tmp_path / 'err.bin'} >&2; wait"
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path / "outbox")):
        stream = await connected_stream(leader)
        stream.put_nowait(offers(make_lease("exec-fast", script=script)))
        result = await leader.result_for("exec-fast")
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED, result.error
    chunks = [c for c in leader.outputs if c.execution_id == "exec-fast"]
    assert b"".join(c.data for c in chunks if c.stream == worker_pb2.STDOUT) == out
    assert b"".join(c.data for c in chunks if c.stream == worker_pb2.STDERR) == err
