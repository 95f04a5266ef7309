"""Live output: what running attempts print, forwarded to the leader as `OutputChunk` messages while a
stream is open, every flush interval, or at once when a writer waits for room.

**Backpressure.** A process payload's pipes are read only while its buffer has room: once
`HOLD_AT_BYTES` of a stream wait to be sent, the sink hands its writer (the runner's pipe reader) a
future to wait for before it reads more, and the payload blocks on its next write, as on a slow terminal,
until the flush has sent the buffer. So output up to the log's cap (`LOG_CAP_BYTES`) reaches the log
whole and in order, at the pace the stream takes it. Past the cap nothing more is forwarded and nobody
waits (the leader would not keep it: the log keeps the first `LOG_CAP_BYTES` and is marked truncated).

**Without a stream** (a failover, a reconnect) nobody waits either: output is read and dropped, and so
is what was buffered when the stream went. A payload is never held for a stream that may not come back.
A writer that does not wait (in-process handlers and HTTP requests) loses the oldest bytes beyond
`MAX_LIVE_OUTPUT_BYTES`. What is dropped is said where it was, in the stream itself (`gap_note`): a reader
of the log sees that bytes are missing there and how many, not a silently spliced text. The result's
tails are the complete last bytes either way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from cronraft.client._runner import MAX_OUTPUT_PIECE_BYTES, OutputSink
from cronraft.client.worker.outbox import AttemptKey
from cronraft.client.worker.session import Session
from cronraft.client.worker.ticks import tick_within
from cronraft.proto.v1 import common_pb2, worker_pb2

# Live output waiting to be sent, per attempt and stream (its memory bound): a writer that does not wait
# for room loses the oldest bytes beyond it.
MAX_LIVE_OUTPUT_BYTES = 256 * 1024
# A writer that waits for room is held from this much on: what it passes in one call (at most
# MAX_OUTPUT_PIECE_BYTES) still fits, so nothing it writes is dropped.
HOLD_AT_BYTES = MAX_LIVE_OUTPUT_BYTES - MAX_OUTPUT_PIECE_BYTES
# What the log keeps of each stream of an attempt: raft/output.py MAX_BYTES_PER_STREAM (the client may
# not import raft; tests/unit/test_live_output_backpressure.py checks they agree).
LOG_CAP_BYTES = 1 << 20


def gap_note(dropped: int) -> bytes:
    """The line put in a live stream where `dropped` bytes of it were not forwarded."""
    return (
        f"\n[cronraft: {dropped} bytes of output not kept here: written faster than the worker forwards "
        "it, or while it had no stream to the cluster]\n"
    ).encode()


@dataclass(eq=False)
class StreamBuffer:
    """One stream of one attempt, not yet sent: its bytes, what was dropped since the last send, and what
    the log took. Pure: no loop, no time."""

    buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes dropped since the last `take` (said by `gap_note` before what follows)
    logged: int = 0  # bytes taken for the log so far, notes included
    room: asyncio.Future[None] | None = None  # the held writer's wake-up (LiveOutput)

    def pending(self) -> int:
        """Bytes the next `take` returns."""
        return len(self.buf) + (len(gap_note(self.dropped)) if self.dropped else 0)

    def at_cap(self) -> bool:
        """Whether the log has all it keeps of this stream (taken or waiting): the rest is not sent."""
        return self.logged + self.pending() >= LOG_CAP_BYTES

    def add(self, data: bytes) -> None:
        """Buffer `data`: the oldest bytes beyond MAX_LIVE_OUTPUT_BYTES go (a writer that did not wait),
        then whatever is past the log's cap (the leader would drop it: the same log either way)."""
        if self.at_cap():
            return
        buf = self.buf
        buf += data
        excess = len(buf) - MAX_LIVE_OUTPUT_BYTES
        if excess > 0:
            del buf[:excess]
            self.dropped += excess
        over = self.logged + self.pending() - LOG_CAP_BYTES
        if over > 0:
            del buf[max(0, len(buf) - over) :]

    def full(self) -> bool:
        """Whether a writer that waits for room must wait now (never past the log's cap)."""
        return len(self.buf) >= HOLD_AT_BYTES and not self.at_cap()

    def lose(self, n: int) -> None:
        """`n` bytes written while they could not be buffered (no stream); past the log's cap they would
        not be kept anyway (nor a note of them)."""
        if not self.at_cap():
            self.dropped += n

    def lose_buffered(self) -> None:
        """The stream went: what waited is dropped (counted, said at the next send)."""
        n = len(self.buf)
        self.buf.clear()
        self.lose(n)

    def take(self) -> bytes:
        """What to send now (a gap's note first: it was dropped before what follows), counted as logged."""
        data = gap_note(self.dropped) + self.buf if self.dropped else bytes(self.buf)
        self.buf.clear()
        self.dropped = 0
        self.logged += len(data)
        return data

    def wake(self) -> None:
        """Let the held writer, if any, go on."""
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)


@dataclass(eq=False)
class _Buffered:
    """Output of one attempt not yet flushed as OutputChunk messages."""

    key: AttemptKey
    token: common_pb2.FencingToken
    streams: dict[worker_pb2.OutputStream.ValueType, StreamBuffer] = field(default_factory=dict)
    finished: bool = False


class LiveOutput:
    """The buffered output of every attempt; `connected()` says whether a stream is open."""

    def __init__(self, connected: Callable[[], bool], flush_interval_s: float) -> None:
        self._connected = connected
        self._flush_interval_s = flush_interval_s
        # Attempts that wrote output; an attempt's buffer is made at its first write (most write none:
        # a buffer made per attempt showed in bench/perf_worker.py --rate's profile).
        self._live: dict[AttemptKey, _Buffered] = {}
        self._open: set[AttemptKey] = set()  # attempts not finished yet
        # Live outputs with something to flush or to forget (the flush loop visits only these: a pass
        # over 10,000 held attempts every flush interval was a tenth of a busy worker's CPU).
        self._dirty: set[AttemptKey] = set()
        # Set when a writer waits for room: the flush loop sends at once instead of at its next tick.
        self._held = asyncio.Event()

    def open(self, key: AttemptKey, token: common_pb2.FencingToken) -> OutputSink:
        """Start buffering an attempt's output; returns the sink its runner writes to."""
        self._open.add(key)
        return functools.partial(self._on_output, key, token)

    def _on_output(
        self,
        key: AttemptKey,
        token: common_pb2.FencingToken,
        stream: worker_pb2.OutputStream.ValueType,
        data: bytes,
    ) -> asyncio.Future[None] | None:
        live = self._live.get(key)
        if live is None:
            if key not in self._open:
                return None  # written after the attempt ended: nobody would flush or forget it
            live = self._live[key] = _Buffered(key=key, token=token)
        buf = live.streams.get(stream)
        if buf is None:
            buf = live.streams[stream] = StreamBuffer()
        if not self._connected():
            # No stream, maybe for long: dropped (counted, said at the next flush), nobody held.
            buf.lose(len(data))
            return None
        buf.add(data)
        self._dirty.add(key)
        if not buf.full():
            return None
        self._held.set()
        if buf.room is None or buf.room.done():  # done: its writer stopped waiting (a stop)
            buf.room = asyncio.get_running_loop().create_future()
        return buf.room

    def finish(self, key: AttemptKey) -> None:
        """The attempt ended: flush what is left, then forget it (at once without a stream)."""
        self._open.discard(key)
        live = self._live.get(key)
        if live is not None:
            live.finished = True
            for buf in live.streams.values():
                buf.wake()  # its writers are gone; nobody must wait on it
            # Nothing left to flush (most attempts print nothing): forget it now, not on a flush pass.
            nothing = not any(buf.pending() for buf in live.streams.values())
            if not self._connected() or (key not in self._dirty and nothing):
                del self._live[key]
            else:
                self._dirty.add(key)

    def drop(self) -> None:
        """Without a stream, live output has nowhere to go: forget what was buffered, and let every held
        writer go on (it is not held without a stream)."""
        for key, live in list(self._live.items()):
            if live.finished:
                del self._live[key]
            else:
                for buf in live.streams.values():
                    buf.lose_buffered()
                    buf.wake()

    async def flush_loop(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # The next tick of the flush interval, or sooner when a writer waits for room (`_held`).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(tick_within(loop.time(), self._flush_interval_s)):
                    await self._held.wait()
            self._held.clear()
            dirty, self._dirty = self._dirty, set()
            await self._flush(session, dirty)

    async def flush_finished(self, session: Session) -> None:
        """Send now what ended attempts left unflushed: called before their results are sent, so that
        an attempt's last lines reach the leader before the result that ends its lease (after which
        the cluster refuses them: the token is no longer current)."""
        done = {key for key in self._dirty if (live := self._live.get(key)) is not None and live.finished}
        if done:
            self._dirty -= done
            await self._flush(session, done)

    async def _flush(self, session: Session, keys: set[AttemptKey]) -> None:
        for key in keys:
            live = self._live.get(key)
            if live is None:
                continue
            for stream, buf in list(live.streams.items()):  # grows while we await
                if not buf.pending():
                    continue
                chunk = worker_pb2.OutputChunk(
                    execution_id=key[0], token=live.token, stream=stream, data=buf.take()
                )
                try:
                    await session.write(worker_pb2.WorkerMessage(output=chunk))
                finally:
                    # Once the chunk is on its way: gRPC's flow control paces the payload through this.
                    buf.wake()
            if live.finished:
                self._live.pop(key, None)
