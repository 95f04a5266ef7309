"""Live output: what running attempts print, forwarded to the leader as `OutputChunk` messages while a
stream is open, every flush interval, or at once when a writer waits for room.

**Backpressure.** A process payload's pipes are read only while its buffer has room: once
`HOLD_AT_BYTES` of a stream wait to be sent, the sink hands its writer (the runner's pipe reader) a
future to wait for before it reads more, and the payload blocks on its next write, as on a slow terminal,
until the flush has sent the buffer. So output up to the log's cap (`LOG_CAP_BYTES`) reaches the log
whole and in order, at the pace the stream takes it. Past the cap nothing more is forwarded and nobody
waits (the leader would not keep it: the log keeps the first `LOG_CAP_BYTES` and is marked truncated).

**Without a stream** (a failover, a reconnect) nobody waits either: a payload is never held for a stream
that may not come back. What was buffered when the stream went is kept, and so is what is written until
the next one, within the same bound per stream (the oldest bytes beyond `MAX_LIVE_OUTPUT_BYTES` go), and
sent on the next stream, for every attempt the worker still holds: its lease's token survives a leader
change, so the new leader takes it. A writer that does not wait (in-process handlers and HTTP requests)
loses the oldest bytes beyond `MAX_LIVE_OUTPUT_BYTES` likewise. What is dropped is said where it was, in
the stream itself (`gap_note`): a reader of the log sees that bytes are missing there and how many, not a
silently spliced text. The result's tails are the complete last bytes either way.

**Output on a stream that breaks.** The leader acknowledges no output, but it reads a stream in order:
its answer to a heartbeat or to results says it read every message before them (`Session.read_through`).
Output written after the last such answer may have been lost with the stream (a frozen leader's socket
takes about 4 MiB that nobody reads) or may have reached the log; it is not sent again (that could store
it twice) but said on the next stream, where it would have been (`doubt_note`: up to N bytes may be
missing), and no longer counted towards the log's cap, so that a log that lost it still fills to its cap
and is marked truncated past it. Read by the old leader but not yet proposed when it failed is lost
without a note: the leader's own loss, which the worker cannot see."""

from __future__ import annotations

import asyncio
import collections
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


def doubt_note(unconfirmed: int) -> bytes:
    """The line put in a live stream after `unconfirmed` bytes of it that were sent on a stream that
    broke before the leader said it had read them."""
    return (
        f"\n[cronraft: up to {unconfirmed} bytes of output before this may be missing: the worker's stream "
        "to the cluster broke before the leader confirmed them]\n"
    ).encode()


@dataclass(eq=False)
class StreamBuffer:
    """One stream of one attempt, not yet sent: its bytes, what was dropped since the last send, and what
    the log took. Pure: no loop, no time."""

    buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes dropped since the last `take` (said by `gap_note` before what follows)
    unconfirmed: int = 0  # bytes taken but maybe lost with their stream (`doubt_note`, before the gap's)
    logged: int = 0  # bytes taken for the log so far, notes included (less those maybe lost)
    past_cap: int = 0  # bytes left out since the log had all it keeps (a gap if `doubt` gives room back)
    room: asyncio.Future[None] | None = None  # the held writer's wake-up (LiveOutput)

    def _notes(self) -> bytes:
        """What the next `take` says before its bytes, in the stream's order: what may have been lost
        with a stream, then what was dropped after it."""
        doubt = doubt_note(self.unconfirmed) if self.unconfirmed else b""
        return doubt + gap_note(self.dropped) if self.dropped else doubt

    def pending(self) -> int:
        """Bytes the next `take` returns."""
        if self.dropped or self.unconfirmed:
            return len(self.buf) + len(self._notes())
        return len(self.buf)

    def at_cap(self) -> bool:
        """Whether the log has all it keeps of this stream (taken or waiting): the rest is not sent."""
        return self.logged + self.pending() >= LOG_CAP_BYTES

    def add(self, data: bytes) -> None:
        """Buffer `data`: the oldest bytes beyond MAX_LIVE_OUTPUT_BYTES go (a writer that did not wait),
        then whatever is past the log's cap (the leader would drop it: the same log either way)."""
        if self.at_cap():
            self.past_cap += len(data)
            return
        buf = self.buf
        buf += data
        excess = len(buf) - MAX_LIVE_OUTPUT_BYTES
        if excess > 0:
            del buf[:excess]
            self.dropped += excess
        over = self.logged + self.pending() - LOG_CAP_BYTES
        if over > 0:
            cut = min(over, len(buf))
            del buf[len(buf) - cut :]
            self.past_cap += cut

    def full(self) -> bool:
        """Whether a writer that waits for room must wait now (never past the log's cap)."""
        return len(self.buf) >= HOLD_AT_BYTES and not self.at_cap()

    def doubt(self, n: int) -> None:
        """`n` bytes taken were sent on a stream that broke before the leader said it read them: said at
        the next `take`, and no longer counted towards the log's cap (if they were lost, the log has room
        for as much more; if not, the state machine stops at the cap and marks the log truncated)."""
        self.unconfirmed += n
        self.logged -= n
        if self.past_cap:
            # Bytes were left out as past the cap, after those waiting: with the room given back they
            # are a gap in the log. The waiting ones go with them, one gap said before what follows
            # (a note can only precede the buffer; the stream's order is waiting, then left out).
            self.dropped += len(self.buf) + self.past_cap
            self.buf.clear()
            self.past_cap = 0

    def take(self) -> bytes:
        """What to send now (the notes first: what they say of came before what follows), counted as
        logged."""
        data = self._notes() + self.buf if self.dropped or self.unconfirmed else bytes(self.buf)
        self.buf.clear()
        self.dropped = self.unconfirmed = 0
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
        # Chunks written on the stream and not known to be read yet, in order: (the message's number
        # on it, its attempt's output, its stream's buffer, its size). Pruned at each flush as the
        # leader's answers come (Session.read_through): a stream's worth of a few seconds at most.
        self._unread: collections.deque[tuple[int, _Buffered, StreamBuffer, int]] = collections.deque()

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
        buf.add(data)
        self._dirty.add(key)
        if not buf.full() or not self._connected():
            # Without a stream, maybe for long, nobody is held: beyond its bound the oldest bytes go.
            return None
        self._held.set()
        if buf.room is None or buf.room.done():  # done: its writer stopped waiting (a stop)
            buf.room = asyncio.get_running_loop().create_future()
        return buf.room

    def finish(self, key: AttemptKey) -> None:
        """The attempt ended: flush what is left (on the next stream, without one), then forget it."""
        self._open.discard(key)
        live = self._live.get(key)
        if live is not None:
            live.finished = True
            for buf in live.streams.values():
                buf.wake()  # its writers are gone; nobody must wait on it
            # Nothing left to flush (most attempts print nothing): forget it now, not on a flush pass.
            if key not in self._dirty and not any(buf.pending() for buf in live.streams.values()):
                del self._live[key]
            else:
                self._dirty.add(key)

    def disconnected(self, session: Session) -> None:
        """`session`'s stream went: what it may have lost is said on the next one (`StreamBuffer.doubt`),
        what waits is kept for it, and every held writer goes on (nobody is held without a stream)."""
        for number, live, buf, n in self._unread:
            if number > session.read_through:
                buf.doubt(n)
                # An ended attempt's last chunks: its buffer, gone after them, comes back for the note.
                self._live.setdefault(live.key, live)
                self._dirty.add(live.key)
        self._unread.clear()
        for live in self._live.values():
            for buf in live.streams.values():
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
        unread = self._unread
        while unread and unread[0][0] <= session.read_through:
            unread.popleft()
        for key in keys:
            live = self._live.get(key)
            if live is None:
                continue
            for stream, buf in list(live.streams.items()):  # grows while we await
                if not buf.pending():
                    continue
                data = buf.take()
                chunk = worker_pb2.OutputChunk(
                    execution_id=key[0], token=live.token, stream=stream, data=data
                )
                try:
                    number = await session.write(worker_pb2.WorkerMessage(output=chunk))
                except BaseException:
                    # The stream broke (or this loop was stopped because it did) with the chunk on its
                    # way or not: in doubt, as one sent (`disconnected`).
                    buf.doubt(len(data))
                    self._dirty.add(key)
                    raise
                finally:
                    # Once the chunk is on its way: gRPC's flow control paces the payload through this.
                    buf.wake()
                unread.append((number, live, buf, len(data)))
            if live.finished:
                self._live.pop(key, None)
