"""Live output: what running attempts print, forwarded to the leader as `OutputChunk` messages every
flush interval while a stream is open. Best effort: without a stream it is dropped, and beyond
MAX_LIVE_OUTPUT_BYTES per attempt and stream the oldest bytes go (the result's tails are the reliable
record). What is dropped is said where it was, in the stream itself (`gap_note`): a reader of the log sees
that bytes are missing there and how many, not a silently spliced text."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from cronraft.client._runner import OutputSink
from cronraft.client.worker.outbox import AttemptKey
from cronraft.client.worker.session import Session
from cronraft.client.worker.ticks import sleep_to_tick
from cronraft.proto.v1 import common_pb2, worker_pb2

# Live output waiting for the next flush, per attempt and stream; older bytes are dropped beyond it.
MAX_LIVE_OUTPUT_BYTES = 256 * 1024


def gap_note(dropped: int) -> bytes:
    """The line put in a live stream where `dropped` bytes of it were not forwarded."""
    return (
        f"\n[cronraft: {dropped} bytes of output not kept here: written faster than the worker forwards "
        "it, or while it had no stream to the cluster]\n"
    ).encode()


@dataclass(eq=False)
class _Buffered:
    """Output of one attempt not yet flushed as OutputChunk messages."""

    key: AttemptKey
    token: common_pb2.FencingToken
    buffers: dict[worker_pb2.OutputStream.ValueType, bytearray] = field(default_factory=dict)
    finished: bool = False
    # Bytes of each stream dropped since its last flush (said in the stream by `gap_note`).
    dropped: dict[worker_pb2.OutputStream.ValueType, int] = field(default_factory=dict)


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
    ) -> None:
        live = self._live.get(key)
        if live is None:
            if key not in self._open:
                return  # written after the attempt ended: nobody would flush or forget it
            live = self._live[key] = _Buffered(key=key, token=token)
        buf = live.buffers.setdefault(stream, bytearray())
        if not self._connected():
            # Live output is best effort (the result carries the tails): counted, said at the next flush.
            live.dropped[stream] = live.dropped.get(stream, 0) + len(data)
            return
        buf += data
        self._dirty.add(live.key)
        excess = len(buf) - MAX_LIVE_OUTPUT_BYTES
        if excess > 0:
            del buf[:excess]
            live.dropped[stream] = live.dropped.get(stream, 0) + excess

    def finish(self, key: AttemptKey) -> None:
        """The attempt ended: flush what is left, then forget it (at once without a stream)."""
        self._open.discard(key)
        live = self._live.get(key)
        if live is not None:
            live.finished = True
            # Nothing left to flush (most attempts print nothing): forget it now, not on a flush pass.
            nothing = not any(live.buffers.values()) and not any(live.dropped.values())
            if not self._connected() or (key not in self._dirty and nothing):
                del self._live[key]
            else:
                self._dirty.add(key)

    def drop(self) -> None:
        """Without a stream, live output has nowhere to go: forget what was buffered."""
        for key, live in list(self._live.items()):
            if live.finished:
                del self._live[key]
            else:
                for stream, buf in live.buffers.items():
                    if buf:
                        live.dropped[stream] = live.dropped.get(stream, 0) + len(buf)
                        buf.clear()

    async def flush_loop(self, session: Session) -> None:
        while True:
            await sleep_to_tick(self._flush_interval_s)
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
            for stream, buf in list(live.buffers.items()):  # grows while we await
                dropped = live.dropped.pop(stream, 0)
                if buf or dropped:
                    # A gap goes before what follows it: it was dropped from the front of this buffer
                    # (or while there was no stream, before anything buffered since).
                    data = gap_note(dropped) + buf if dropped else bytes(buf)
                    chunk = worker_pb2.OutputChunk(
                        execution_id=key[0], token=live.token, stream=stream, data=data
                    )
                    buf.clear()
                    await session.write(worker_pb2.WorkerMessage(output=chunk))
            if live.finished:
                self._live.pop(key, None)
