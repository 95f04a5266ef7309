"""pysyncobj's transport and logger as the adapter uses them: the Raft connections' message and buffer
sizes, the transport that fsyncs before the messages relying on the log and drops forwarded proposals,
and the filter that rate-limits pysyncobj's per-tick tracebacks on a full disk."""

from __future__ import annotations

import errno
import logging
import time
from typing import Any

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


__all__ = ["MAX_MESSAGE_BYTES", "SOCKET_BUFFER_BYTES", "transport_class"]
