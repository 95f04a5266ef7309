"""Which node the worker's stream goes to next: the leader a node named (a `NotLeader` message or the
`cronraft-leader` trailer), else the configured servers round robin, trying last the nodes whose stream
recently went silent (and starting from the first listed again after one did); and the backoff between
two tries.

The trailer, the backoff and the server defaults are the SDK's (client/_routing.py). The order of the
nodes is the worker's own: a stream lives long and a node that went silent (partitioned, stopped) is
worth avoiding for a while, where the SDK's `CallPlan` routes one call and its retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from cronraft.client._routing import Backoff, leader_from_metadata

# After a stream to a node went stale or timed out, try the other nodes first for this long.
AVOID_S = 5.0


def leader_hint(exc: grpc.aio.AioRpcError) -> str | None:
    """The leader address a refusing node put in its trailers, if any."""
    return leader_from_metadata(exc.trailing_metadata())


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
        self._followed = False  # the last step followed a redirect without the backoff

    def avoid(self, address: str, now: float) -> None:
        """`address` went silent: try the others first for AVOID_S, from the top of the list again. The
        first listed nodes are the worker's own (its region's: they relay it to wherever the leader is
        now); going on round robin sent a worker of region C whose leader's region A was cut to A's other
        node next (fault scenario S18), which was just as silent."""
        self._avoid[address] = now + AVOID_S
        self._index = 0

    def follow_at_once(self) -> bool:
        """Whether to go to the hinted leader now, without the backoff: yes for a redirect that did not
        itself follow one at once (a follower that knows the leader sends a worker that can reach it
        there, Hello.direct: the backoff after that redirect delayed failovers by 0.1-0.4 s); two nodes
        naming each other still meet the backoff every other step."""
        if self.hint and not self._followed:
            self._followed = True
            return True
        self._followed = False
        return False

    def reachable(self, now: float) -> list[str]:
        """The configured servers not marked silent (Hello.direct: a follower sends the worker to the
        leader when it is among them, rather than relaying its stream)."""
        return [a for a in self._servers if self._avoid.get(a, 0.0) <= now]

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


def stream_backoff(initial_s: float, max_s: float) -> Backoff:
    """The pause between two tries: `initial_s` doubling up to `max_s`, times 0.5 to 1 (a new one after
    each welcomed stream)."""
    return Backoff(initial_s=initial_s, cap_s=max_s)
