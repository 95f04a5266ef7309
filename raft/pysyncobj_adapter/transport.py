"""pysyncobj's transport and logger as the adapter uses them: the Raft connections' message and buffer
sizes, the transport that fsyncs before the messages relying on the log and drops forwarded proposals,
the connections' encoding of a message and their send path (`wire_payload`, `_LeanConnection`), and the
filter that rate-limits pysyncobj's per-tick tracebacks on a full disk."""

from __future__ import annotations

import errno
import logging
import pickle
import struct
import time
import zlib
from typing import Any

from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from cronraft.raft.durability import Durability

log = logging.getLogger("cronraft.raft.pysyncobj_adapter")

# pysyncobj's appendEntriesBatchSizeBytes. Our own sender (`RaftNode._SyncObj__sendAppendEntries`) bounds
# messages by `FLOW_LIMITS` and never uses pysyncobj's split transmission; this stays above the largest
# entry so that nothing of pysyncobj's ever takes that path.
MAX_MESSAGE_BYTES = 16 << 20
# The kernel's socket buffers of the Raft connections (pysyncobj's 64 KiB capped a connection at about
# 64 KiB per round trip: 0.4 MiB/s over a 160 ms round trip, a catch-up of megabytes took tens of
# seconds). 1 MiB (the kernel doubles it) carries the flow window in about one round trip.
SOCKET_BUFFER_BYTES = 1 << 20

_SYNC_LOG = frozenset({"next_node_idx", "request_vote", "response_vote"})
_SYNC_META = frozenset({"request_vote", "response_vote"})

# --- a message on the wire -------------------------------------------------------------------------

# pysyncobj's `TcpConnection.send` pickles every message with protocol 2 and compresses it at zlib level
# 3, on the sending node's Raft thread. Protocol 2 writes a bytes object as latin-1 text encoded in
# UTF-8 (each byte above 127 takes two), so an entry of binary data grows by up to two thirds before
# zlib sees it; and zlib spends its time searching for matches that high-entropy data does not have.
# S12 at seed 5 (2026-12-07): a worker's 1 MiB output chunks for executions it did not hold reached the
# log as 48 entries of 1.5 to 4.7 MB; each send of one took the leader 0.4 to 0.9 s (0.3 to 0.4 s of
# its Raft thread's CPU), once per follower, and the log advanced one entry every 1 to 2 s for 50-65 s.
# Here: protocol 4 (bytes as they are), and zlib level 3 as before for messages up to
# `COMPRESS_ALWAYS_BYTES` (every message of small entries: they shrink to a fifth) and for larger ones
# whose sample shrinks by at least `MIN_SAVING`; larger ones that do not (the flood's entries shrink by
# a fifth at most) are stored (level 0: still a zlib stream). The receiving end decodes all of these
# with pysyncobj's own code (zlib.decompress, then pickle.loads), an older release's too.
WIRE_PICKLE_PROTOCOL = 4
COMPRESS_ALWAYS_BYTES = 64 << 10
COMPRESS_LEVEL = 3  # pysyncobj's
MIN_SAVING = 0.25  # measured at level 1: the log's messages save 0.75-0.80, text 0.5, the flood 0.19
_SAMPLES = 4
_SAMPLE_BYTES = 16 << 10


def wire_payload(message: Any) -> bytes:
    """The bytes a Raft connection sends for `message` before encryption and length prefix (module
    comment above): pickled with protocol 4, zlib-compressed when that pays."""
    data = pickle.dumps(message, protocol=WIRE_PICKLE_PROTOCOL)
    level = COMPRESS_LEVEL if len(data) <= COMPRESS_ALWAYS_BYTES or _shrinks(data) else 0
    return deflate(data, level)


# `zlib.compress` sets up a compressor for a 32 KiB window and 32 Ki hash chains (about 256 KiB, the hash
# table cleared each time) whatever the input: for a 100-byte message 111k instructions, against 55k with
# both sized to it (callgrind), and this is most of the cost of a follower's answer to an append and of
# every heartbeat (issue 16). The sized window does the same work for the message: every earlier byte of
# it is in reach (a match reaches back the window less zlib's lookahead), as with the 32 KiB window. The
# stream is an ordinary zlib stream whose header names its window; `zlib.decompress` with its default
# window (pysyncobj's receiving end, an older release's too) inflates any window up to 32 KiB.
_MIN_WBITS = 9  # zlib's smallest window for deflate (512 bytes)
_LOOKAHEAD = 262  # zlib's MIN_LOOKAHEAD: a match reaches back at most the window less this
_MAX_WBITS = 15


def deflate(data: bytes, level: int) -> bytes:
    """`zlib.compress(data, level)` with the window and hash table sized to `data` (comment above)."""
    wbits = min(_MAX_WBITS, max(_MIN_WBITS, (len(data) + _LOOKAHEAD - 1).bit_length()))
    mem_level = min(8, max(1, wbits - 7))
    packer = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
    return packer.compress(data) + packer.flush()


def _shrinks(data: bytes) -> bool:
    """Whether zlib (level 1) saves at least `MIN_SAVING` of `_SAMPLES` slices spread over `data`."""
    step = (len(data) - _SAMPLE_BYTES) // (_SAMPLES - 1)
    sampled = [data[i * step : i * step + _SAMPLE_BYTES] for i in range(_SAMPLES)]
    packed = sum(len(zlib.compress(part, 1)) for part in sampled)
    return packed <= (1 - MIN_SAVING) * sum(map(len, sampled))


class _LeanConnection(TcpConnection):  # type: ignore[misc]
    """pysyncobj's connection, sending with `wire_payload`, and whose send never waits for the next one.

    pysyncobj subscribes a connection to the poller's write events only while a write event finds data
    left: once one found the buffer empty, what a later `send` could not hand to the kernel (a full
    socket buffer: a large entry, or a peer slow to read) stayed in the buffer until the next `send` on
    that connection, however long that took. Here a `send` that leaves data asks for write events, so
    the poller hands the rest over as soon as the socket drains. The transport makes its connections
    these by class assignment at their first message (`_Transport.send`): a connection's first handshake
    goes out as pysyncobj encodes it, a reconnection's (the object is reused) as here.
    """

    def send(self, message: Any) -> None:
        if self.sendRandKey:  # pysyncobj's per-connection key, as its own `send` adds it
            message = (self.sendRandKey, message)
        data = wire_payload(message)
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(raft_monotonic()))
        self._TcpConnection__writeBuffer += struct.pack("i", len(data)) + data
        self._TcpConnection__trySendBuffer()
        if self._TcpConnection__writeBuffer and self.state != CONNECTION_STATE.DISCONNECTED:
            events = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR
            self._TcpConnection__poller.subscribe(
                self.fileno(), self._TcpConnection__processConnection, events
            )


def transport_class(durability: Durability) -> type:
    class _Transport(TCPTransport):  # type: ignore[misc]
        def send(self, node: Any, message: Any) -> bool:
            kind = message.get("type")
            if kind == "apply_command":
                # We never forward proposals (see `RaftNode._checkCommandsToApply`); a stray one is dropped
                # and its caller times out with OutcomeUnknown. Never happens in practice.
                log.warning("dropped a proposal that pysyncobj tried to forward to %s", node)
                return False
            if durability.enabled:
                carries = kind == "append_entries" and bool(
                    message.get("entries") or message.get("transmission")
                )
                durability.before_send(sync_log=carries or kind in _SYNC_LOG, sync_meta=kind in _SYNC_META)
            connection = self._connections.get(node)
            if type(connection) is TcpConnection:
                connection.__class__ = _LeanConnection
            return bool(super().send(node, message))

    return _Transport


class _QuietTickFailures(logging.Filter):
    """pysyncobj logs every failed tick with its traceback, and every failed snapshot; on a full disk
    that is each tick (a follower's appends, the meta file's writes, a snapshot tried again each tick).
    One such record per `every_s`, per kind."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.getMessage() == "Failed to store full dump":
            key = "snapshot"
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            key = type(exc).__name__
        else:
            return True
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        self._last[key] = now
        return True


_TICK_FILTER = _QuietTickFailures()
logging.getLogger("pysyncobj.syncobj").addFilter(_TICK_FILTER)


__all__ = ["MAX_MESSAGE_BYTES", "SOCKET_BUFFER_BYTES", "deflate", "transport_class", "wire_payload"]
