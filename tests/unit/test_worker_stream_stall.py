"""A worker stream that stops taking writes is dead (client/worker/session.py, `Session.write`): a leader
that freezes (SIGSTOP, a partition dropping packets) while output fills gRPC's send window leaves the
worker's next write waiting for ever, and the heartbeat loop, waiting for the write lock behind it, never
looked at its unanswered heartbeats: the worker never tried another node and its leases ran out.

Output on a stream that breaks (client/worker/live_output.py): the leader acknowledges none, but reads a
stream in order, so its answer to a heartbeat or to results confirms what went before; output sent after
the last answer may be lost, and is said on the next stream (`doubt_note`) instead of vanishing unsaid;
what waited for a stream is kept and sent on the next one.

No real time: the loop's clock is stepped by the test (`SteppedLoop`), and the leader is a fake call that
takes a window's worth of bytes once frozen, then nothing (`FreezingCall`), as a stopped peer's socket
does. The attempt is a real process (its output is what fills the window)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fake_gateway import WAIT_S, make_lease, offers, worker_clock, worker_config

from cronraft.client.worker import Worker
from cronraft.client.worker.live_output import LiveOutput, doubt_note, gap_note
from cronraft.client.worker.session import Session, StreamStale
from cronraft.proto.v1 import common_pb2, worker_pb2

HEARTBEAT_MS = 100
LEASE_TTL_MS = 5000
WELCOME = worker_pb2.Welcome(leader_id="fake", heartbeat_interval_ms=HEARTBEAT_MS, lease_ttl_ms=LEASE_TTL_MS)
STALE_S = 1.0  # min(max(1.5 x 0.1 s, 1 s), 5 s / 3): Session.stale_after_s for WELCOME
WINDOW = 64 * 1024  # what a frozen leader's socket still takes
STEP_S = 0.01


class SteppedLoop(asyncio.SelectorEventLoop):
    """The stock loop, its clock moved only by `step` beyond real time (which is not waited for: every
    timeout that matters here is many steps long)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset

    async def step(self, seconds: float = STEP_S) -> None:
        """Time passes: `seconds` more on the clock, then the loop runs what came due."""
        self.offset += seconds
        for _ in range(5):
            await asyncio.sleep(0)

    async def step_until(self, done: Callable[[], bool], limit_s: float) -> float:
        """Step until `done()` or `limit_s` of stepped time; returns the stepped time."""
        stepped = 0.0
        while not done() and stepped < limit_s:
            await self.step()
            stepped += STEP_S
        return stepped

    async def step_while_io(self, done: Callable[[], bool]) -> None:
        """Step until `done()`, for as long as WAIT_S of real time: what it waits for also needs a real
        process's writes to be read."""
        deadline = time.monotonic() + WAIT_S
        while not done() and time.monotonic() < deadline:
            await self.step()


def run(main: Callable[[SteppedLoop], Coroutine[Any, Any, Any]]) -> Any:
    loop = SteppedLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


class FreezingCall:
    """One `WorkerGateway.Connect` call to a fake leader. It answers the Hello with a Welcome and every
    heartbeat with a renewal, until it freezes (`freeze_on_output`: at the first output chunk): then it
    answers nothing and takes WINDOW bytes more; a write beyond them waits until it is cancelled, which
    cancels the call, as grpc.aio does (later writes: InvalidStateError; reads: CancelledError)."""

    def __init__(self, *, freeze_on_output: bool) -> None:
        self.freeze_on_output = freeze_on_output
        self.frozen = False
        self.taken = 0  # bytes written since the freeze
        self.written: list[worker_pb2.WorkerMessage] = []  # what reached the call
        self.stuck = asyncio.Event()  # a write waits for a window that never opens
        self.welcomed = asyncio.Event()
        self.cancelled = False
        self.answers: asyncio.Queue[worker_pb2.GatewayMessage] = asyncio.Queue()
        self._reads: set[asyncio.Future[worker_pb2.GatewayMessage]] = set()

    async def write(self, message: worker_pb2.WorkerMessage) -> None:
        if self.cancelled:
            raise asyncio.InvalidStateError("RPC already finished.")
        self.written.append(message)
        kind = message.WhichOneof("kind")
        if kind == "output" and self.freeze_on_output:
            self.frozen = True
        if self.frozen:
            self.taken += message.ByteSize()
            if self.taken > WINDOW:
                self.stuck.set()
                try:
                    await asyncio.get_running_loop().create_future()
                except asyncio.CancelledError:
                    self.cancel()
                    raise
            return
        if kind == "hello":
            self.answers.put_nowait(worker_pb2.GatewayMessage(welcome=WELCOME))
            self.welcomed.set()
        elif kind == "heartbeat":
            ack = worker_pb2.HeartbeatAck(renewed=[ref.execution_id for ref in message.heartbeat.leases])
            self.answers.put_nowait(worker_pb2.GatewayMessage(heartbeat_ack=ack))

    async def read(self) -> worker_pb2.GatewayMessage:
        if self.cancelled:
            raise asyncio.CancelledError
        read = asyncio.ensure_future(self.answers.get())
        self._reads.add(read)
        try:
            return await read
        finally:
            self._reads.discard(read)

    def cancel(self) -> bool:
        self.cancelled = True
        for read in self._reads:
            read.cancel()
        return True


class FakeTransport:
    """The worker's transport (WorkerConfig.transport): each Connect to an address gets the next call
    `calls` made for it."""

    def __init__(self, calls: dict[str, Callable[[], FreezingCall]]) -> None:
        self._calls = calls
        self.connects: list[tuple[str, FreezingCall]] = []

    @contextlib.asynccontextmanager
    async def aio_channel(self, address: str, options: Any = ()) -> Any:
        transport = self

        class Channel:
            def stream_stream(self, *args: Any, **kwargs: Any) -> Callable[[], FreezingCall]:
                def connect(*args: Any, **kwargs: Any) -> FreezingCall:
                    call = transport._calls[address]()
                    transport.connects.append((address, call))
                    return call

                return connect

        yield Channel()


def test_a_write_the_stream_does_not_take_ends_the_stream_after_the_stale_timeout() -> None:
    """An output write the frozen leader does not take: StreamStale once `stale_after_s` passed on the
    loop's clock, not before; the heartbeat waiting for the write lock behind it fails the same way (not
    with the InvalidStateError of the call the timeout cancelled) and never reaches the call."""

    async def main(loop: SteppedLoop) -> None:
        call = FreezingCall(freeze_on_output=True)
        session = Session(call, WELCOME, "frozen")  # type: ignore[arg-type]
        assert session.stale_after_s == STALE_S
        chunk = worker_pb2.OutputChunk(execution_id="e", stream=worker_pb2.STDOUT, data=b"x" * 2 * WINDOW)
        output = asyncio.ensure_future(session.write(worker_pb2.WorkerMessage(output=chunk)))
        await asyncio.wait_for(call.stuck.wait(), WAIT_S)
        heartbeat = asyncio.ensure_future(
            session.write(worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat()))
        )
        await loop.step(STALE_S - 2 * STEP_S)
        assert not output.done() and not heartbeat.done()
        await loop.step_until(lambda: output.done() and heartbeat.done(), 4 * STEP_S)
        await asyncio.wait({output, heartbeat}, timeout=WAIT_S)  # real time only if the bound is missing
        assert output.done() and isinstance(output.exception(), StreamStale)
        assert heartbeat.done() and isinstance(heartbeat.exception(), StreamStale)
        assert call.cancelled and [m.WhichOneof("kind") for m in call.written] == ["output"]

    run(main)


OUTPUT = hashlib.shake_256(b"out").digest(600_000)  # no run of it repeats: a splice would show


def _writes(data: bytes) -> list[str]:
    """A payload that writes `data` to stdout at once, then sleeps until it is stopped."""
    code = (
        "import hashlib, sys, time\n"
        f"sys.stdout.buffer.write(hashlib.shake_256(b'out').digest({len(data)}))\n"
        "sys.stdout.buffer.flush()\n"
        "time.sleep(60)\n"
    )
    assert data == hashlib.shake_256(b"out").digest(len(data))
    return [sys.executable, "-c", code]


def test_a_worker_whose_leader_freezes_while_output_fills_the_stream_goes_to_another_node(
    tmp_path: Path,
) -> None:
    """The leader freezes at the first output chunk of a payload writing 600 KB as fast as it can: the
    worker's output write waits, its heartbeats wait behind it. Within `stale_after_s` of the stuck
    write (and the backoff) the worker greets the other node, not the frozen one again; the attempt
    goes on there (renewed, not fenced). Its output there: a note of what went to the frozen leader (up
    to as many bytes may be missing: exactly those), what waited kept and sent, a note of what was
    dropped while there was no stream if anything was, then the rest; nothing lost unsaid."""
    transport = FakeTransport(
        {
            "frozen": lambda: FreezingCall(freeze_on_output=True),
            "new": lambda: FreezingCall(freeze_on_output=False),
        }
    )
    config = worker_config(["frozen", "new"], tmp_path / "outbox", transport=transport)

    async def main(loop: SteppedLoop) -> None:
        worker = Worker(config, clock=worker_clock())
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.connected.wait(), WAIT_S)
            ((address, frozen),) = transport.connects
            assert address == "frozen"
            lease = make_lease("exec-1", argv=_writes(OUTPUT), lease_ttl_ms=LEASE_TTL_MS)
            frozen.answers.put_nowait(offers(lease))
            await asyncio.wait_for(frozen.stuck.wait(), WAIT_S)
            stepped = await loop.step_until(lambda: len(transport.connects) > 1, STALE_S + 1.0)
            assert [a for a, _ in transport.connects] == ["frozen", "new"], stepped
            assert stepped <= STALE_S + config.backoff_max_s + 2 * STEP_S
            new = transport.connects[1][1]
            await asyncio.wait_for(new.welcomed.wait(), WAIT_S)
            assert [lease.execution_id for lease in worker.running] == ["exec-1"]  # not fenced
            await loop.step_while_io(lambda: _stdout(new).endswith(OUTPUT[-1000:]))
            before, after = _stdout(frozen), _stdout(new)
            assert OUTPUT.startswith(before) and len(before) > WINDOW
            note = doubt_note(len(before))
            assert after.startswith(note), after[:200]
            rest = after[len(note) :]
            gap = re.match(rb"\n\[cronraft: (\d+) bytes of output not kept here: [^\]]*\]\n", rest)
            dropped = int(gap.group(1)) if gap else 0
            if gap:
                assert gap.group(0) == gap_note(dropped)
                rest = rest[gap.end() :]
            assert rest == OUTPUT[len(before) + dropped :]
        finally:
            worker.stop(immediate=True)
            await asyncio.wait_for(running, WAIT_S)

    run(main)


# -- output on a stream that breaks (client/worker/live_output.py) -----------------------------------

KEY = ("exec-1", 1, 7)
TOKEN = common_pb2.FencingToken(term=1, index=7)


def _stdout(call: FreezingCall) -> bytes:
    return b"".join(
        m.output.data
        for m in call.written
        if m.WhichOneof("kind") == "output" and m.output.stream == worker_pb2.STDOUT
    )


async def _heartbeat_answered(session: Session) -> None:
    """A heartbeat goes on `session` and the leader answers it."""
    session.heartbeats.append((0.0, 0.0, frozenset()))
    await session.write_heartbeat(worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat()))
    assert session.heartbeat_answered() is not None


def _streams() -> tuple[FreezingCall, Session, FreezingCall, Session]:
    old, new = FreezingCall(freeze_on_output=False), FreezingCall(freeze_on_output=False)
    return old, Session(old, WELCOME, "old"), new, Session(new, WELCOME, "new")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_output_sent_after_the_leaders_last_answer_is_said_on_the_next_stream() -> None:
    """The leader reads a stream in order: a heartbeat answered confirms the output before it. What was
    sent after it may have gone with the stream: not sent again (it may be in the log), said where it
    was (up to how many bytes); what the answer confirmed is not."""
    old_call, old, new_call, new = _streams()
    live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    sink(worker_pb2.STDOUT, b"read\n")
    await live._flush(old, {KEY})
    await _heartbeat_answered(old)
    sink(worker_pb2.STDOUT, b"maybe lost\n")
    await live._flush(old, {KEY})
    assert _stdout(old_call) == b"read\nmaybe lost\n"
    live.disconnected(old)
    sink(worker_pb2.STDOUT, b"next\n")
    await live._flush(new, {KEY})
    assert _stdout(new_call) == doubt_note(len(b"maybe lost\n")) + b"next\n"


@pytest.mark.asyncio
async def test_an_ended_attempts_last_output_in_doubt_is_said_before_its_result_goes_again() -> None:
    """An attempt that ended after its last chunk went: the note still goes on the next stream (its
    output comes back for it, flushed with the ended ones before results); once its result was
    acknowledged on that stream, its output before it is confirmed and nothing is said."""
    for acknowledged in (False, True):
        _, old, new_call, new = _streams()
        live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
        sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
        sink(worker_pb2.STDOUT, b"last words\n")
        live.finish(KEY)
        await live.flush_finished(old)
        result = common_pb2.AttemptResult(execution_id=KEY[0], token=TOKEN)
        await old.write_results(worker_pb2.WorkerMessage(results=worker_pb2.Results(results=[result])), [KEY])
        if acknowledged:
            old.results_answered([KEY])
        live.disconnected(old)
        await live.flush_finished(new)
        assert _stdout(new_call) == (b"" if acknowledged else doubt_note(len(b"last words\n"))), acknowledged
        assert not live._live  # forgotten once said


@pytest.mark.asyncio
async def test_a_chunk_whose_write_failed_is_in_doubt() -> None:
    """The write of a chunk failed (the stream broke under it; StreamStale; the loop cancelled): it may
    or may not have gone, so it is said like the others."""
    old_call, old, new_call, new = _streams()
    live = LiveOutput(connected=lambda: True, flush_interval_s=3600)
    sink = live.open(KEY, TOKEN)  # type: ignore[arg-type]
    old_call.cancel()  # writes now fail: InvalidStateError
    sink(worker_pb2.STDOUT, b"in flight\n")
    with pytest.raises(asyncio.InvalidStateError):
        await live._flush(old, {KEY})
    live.disconnected(old)
    await live._flush(new, {KEY})
    assert _stdout(new_call) == doubt_note(len(b"in flight\n"))
