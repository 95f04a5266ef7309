"""Which node the worker's stream goes to next: the leader a node named (a `NotLeader` message or the
`cronraft-leader` trailer), else the configured servers round robin, trying last the nodes whose stream
recently went silent.

This is the worker's own copy of leader routing: the SDK's (client/_common.py) follows the same
trailer for unary calls; the two are not shared yet (issue 14).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

LEADER_METADATA_KEY = "cronraft-leader"
# After a stream to a node went stale or timed out, try the other nodes first for this long.
AVOID_S = 5.0


def leader_hint(exc: grpc.aio.AioRpcError) -> str | None:
    """The leader address a refusing node put in its trailers, if any."""
    for key, value in exc.trailing_metadata() or ():
        if key == LEADER_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text or None
    return None


class ServerRotation:
    """The next address to connect to. `hint` is the leader address the last stream pointed at (None:
    none); `avoid` marks a node silent (not refusing: likely partitioned). Times are the caller's loop
    time in seconds."""

    def __init__(self, servers: Sequence[str], log: Any) -> None:
        self._servers = tuple(servers)
        self._index = 0
        self._avoid: dict[str, float] = {}  # address -> loop time until which other nodes are tried first
        self._log = log
        self.hint: str | None = None

    def avoid(self, address: str, now: float) -> None:
        self._avoid[address] = now + AVOID_S

    def next(self, now: float) -> str:
        """The hint (consumed), unless it names a node marked silent; else the next configured server,
        skipping silent ones while another is left."""
        servers = self._servers
        if self.hint and self._avoid.get(self.hint, 0.0) > now:
            # A redirect to the node whose stream just went silent: the redirecting node has not
            # learnt of the election yet. Following it held the worker for the hello timeout on a
            # stopped leader while the new one, not hearing from it, expired its leases (an
            # unconfirmed held start reported late is a fire lost for at_most_once).
            self._log.debug("ignoring a redirect to a silent node", leader=self.hint)
            self.hint = None
        if self.hint:
            address, self.hint = self.hint, None
            return address
        address = servers[self._index % len(servers)]
        self._index += 1
        for _ in range(len(servers) - 1):
            if self._avoid.get(address, 0.0) <= now:
                break
            address = servers[self._index % len(servers)]
            self._index += 1
        return address
