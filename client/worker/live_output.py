"""Live output: what running attempts print, forwarded to the leader as `OutputChunk` messages every
flush interval while a stream is open. Best effort: without a stream it is dropped, and beyond
MAX_LIVE_OUTPUT_BYTES per attempt and stream the oldest bytes go (the result's tails are the reliable
record)."""

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


@dataclass(eq=False)
class _Buffered:
    """Output of one attempt not yet flushed as OutputChunk messages."""

    key: AttemptKey
    token: common_pb2.FencingToken
    buffers: dict[worker_pb2.OutputStream.ValueType, bytearray] = field(default_factory=dict)
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
        if not self._connected():
            return  # live output is best effort; the result carries the tails
        live = self._live.get(key)
        if live is None:
            if key not in self._open:
                return  # written after the attempt ended: nobody would flush or forget it
            live = self._live[key] = _Buffered(key=key, token=token)
        buf = live.buffers.setdefault(stream, bytearray())
        buf += data
        self._dirty.add(live.key)
        excess = len(buf) - MAX_LIVE_OUTPUT_BYTES
        if excess > 0:
            del buf[:excess]

    def finish(self, key: AttemptKey) -> None:
        """The attempt ended: flush what is left, then forget it (at once without a stream)."""
        self._open.discard(key)
        live = self._live.get(key)
        if live is not None:
            live.finished = True
            # Nothing left to flush (most attempts print nothing): forget it now, not on a flush pass.
            if not self._connected() or (key not in self._dirty and not any(live.buffers.values())):
                del self._live[key]
            else:
                self._dirty.add(key)

    def drop(self) -> None:
        """Without a stream, live output has nowhere to go: forget what was buffered."""
        for key, live in list(self._live.items()):
            if live.finished:
                del self._live[key]
            else:
                live.buffers.clear()

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
                if buf:
                    chunk = worker_pb2.OutputChunk(
                        execution_id=key[0], token=live.token, stream=stream, data=bytes(buf)
                    )
                    buf.clear()
                    await session.write(worker_pb2.WorkerMessage(output=chunk))
            if live.finished:
                self._live.pop(key, None)
