"""Preferred leaders (`[cluster] preferred_leader`, docs/multi-region.md): a leader that is not one of the
preferred members hands leadership to one of them once that member is healthy again.

After a region fails, the survivors elect a leader among themselves; when the preferred region comes
back, its members catch up, and the leader outside it transfers leadership back (Raft's TimeoutNow,
`Replicator.transfer_leadership`), so that writes and dispatches again pay the short round trips of the
region the operator chose (where most clients and workers are, with a majority of its members nearby).

A preferred member is a candidate once it has been connected to this leader for `SETTLE_S` and, as its
answers to the clock probe say, its storage refuses nothing; this node must have led for `SETTLE_S` too
(no transfer in the middle of a failover). pysyncobj hands leadership only to a member whose log matches
the leader's last entry, which a busy leader rarely offers a member one long round trip away: so the
leader holds its own proposals (`ProposalGate`) for at most `QUIESCE_S` while it asks, every `ASK_S`,
and lets them go as soon as the request is sent and leadership has moved, or the time is up. A dispatch
pause that short is what any leader change costs. If leadership comes back to this node within
`BOUNCE_S` (the preferred member lost it again: its clock, its disk), the next try waits longer
(`BACKOFF_S`, doubling up to `MAX_BACKOFF_S`), so that two members never hand it back and forth.

`choose` is the pure decision; `PreferredLeader.run` is its loop on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import structlog

from cronraft.raft.replicator import LateResult, RaftStatus, Replicator

__all__ = [
    "ASK_S",
    "BACKOFF_S",
    "BOUNCE_S",
    "CHECK_S",
    "MAX_BACKOFF_S",
    "QUIESCE_S",
    "SETTLE_S",
    "PreferredLeader",
    "ProposalGate",
    "choose",
]

log = structlog.get_logger("cronraft.leadership")

CHECK_S = 1.0  # how often a leader looks for a preferred member to hand leadership to
SETTLE_S = 5.0  # connected (the member) and leading (this node) at least this long first
QUIESCE_S = 1.0  # the longest the leader holds its proposals while it asks for the transfer
ASK_S = 0.05  # how often it asks meanwhile (the member catches up within a round trip)
BOUNCE_S = 60.0  # leadership back here this soon: the member could not keep it
BACKOFF_S = 30.0  # then wait this long before the next try, doubling...
MAX_BACKOFF_S = 600.0  # ...up to this


def choose(
    preferred: Sequence[str],
    me: str,
    st: RaftStatus,
    *,
    connected_for: Callable[[str], float],
    healthy: Callable[[str], bool],
    leading_for: float,
    settle_s: float = SETTLE_S,
) -> str | None:
    """The preferred member to hand leadership to now, in the list's order, or None: this node does not
    lead, is preferred itself, has not led for `settle_s`, or no preferred member is connected for
    `settle_s` and healthy."""
    if not preferred or me in preferred or not st.is_leader or leading_for < settle_s:
        return None
    for peer in preferred:
        if st.connected.get(peer) and connected_for(peer) >= settle_s and healthy(peer):
            return peer
    return None


class ProposalGate:
    """The node's replicator as the group committer sees it, with proposals that can be held for a
    moment (`hold`): while the leader asks for a transfer, no new entry keeps the preferred member one
    entry behind. Everything else is the replicator's."""

    def __init__(self, inner: Replicator) -> None:
        self._inner = inner
        self._open = asyncio.Event()
        self._open.set()

    def start(self) -> None:
        self._inner.start()

    def stop(self) -> None:
        self._inner.stop()

    def status(self) -> RaftStatus:
        return self._inner.status()

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None:
        self._inner.on_state_change(cb)

    async def transfer_leadership(self, target: str | None) -> bool:
        return await self._inner.transfer_leadership(target)

    async def propose(self, payload: bytes, *, timeout_s: float, late: LateResult | None = None) -> bytes:
        if not self._open.is_set():
            await self._open.wait()
        return await self._inner.propose(payload, timeout_s=timeout_s, late=late)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    @property
    def holding(self) -> bool:
        return not self._open.is_set()


class PreferredLeader:
    """The loop: `status`, `healthy(peer)` and `transfer(peer)` are the node's; `gate` holds its
    proposals while it asks."""

    def __init__(
        self,
        *,
        node_id: str,
        preferred: Sequence[str],
        status: Callable[[], RaftStatus],
        healthy: Callable[[str], bool],
        transfer: Callable[[str], Awaitable[bool]],
        gate: ProposalGate,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.preferred = tuple(preferred)
        self._status = status
        self._healthy = healthy
        self._transfer = transfer
        self._gate = gate
        self._clock = clock
        self._since: dict[str, float] = {}  # peer -> connected since
        self._leading_since: float | None = None
        self._term = -1
        self._not_before = 0.0  # no try before this (after a bounce)
        self._backoff = BACKOFF_S
        self._handed: tuple[float, int] | None = None  # (when, term) of the last transfer that went
        self.transfers = 0  # transfers that moved leadership (counted when it left)

    def observe(self, st: RaftStatus, now: float) -> None:
        """Note who is connected since when, and since when this node leads."""
        for peer, up in st.connected.items():
            if not up:
                self._since.pop(peer, None)
            else:
                self._since.setdefault(peer, now)
        if st.is_leader and (self._leading_since is None or st.term != self._term):
            self._leading_since = now
            if self._handed is not None and now - self._handed[0] < BOUNCE_S:
                self._not_before = now + self._backoff
                log.warning(
                    "leadership came back from the preferred member; waiting before the next transfer",
                    wait_s=self._backoff,
                )
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            self._handed = None
        elif not st.is_leader:
            self._leading_since = None
        self._term = st.term

    def candidate(self, now: float) -> str | None:
        st = self._status()
        self.observe(st, now)
        if now < self._not_before or self._leading_since is None:
            return None
        return choose(
            self.preferred,
            self.node_id,
            st,
            connected_for=lambda p: now - self._since.get(p, now),
            healthy=self._healthy,
            leading_for=now - self._leading_since,
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                target = self.candidate(self._clock())
                if target is not None:
                    await self.hand_over(target)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die of it
                log.exception("preferred leader check failed")

    async def hand_over(self, target: str) -> bool:
        """Hold proposals, ask for the transfer until it is sent and leadership left (or QUIESCE_S)."""
        start = self._clock()
        sent = False
        async with self._gate.hold():
            while self._clock() - start < QUIESCE_S:
                st = self._status()
                if not st.is_leader:
                    break
                if not sent:
                    sent = await self._transfer(target)
                await asyncio.sleep(ASK_S)
        st = self._status()
        moved = sent and not st.is_leader
        if moved:
            self.transfers += 1
            self._handed = (self._clock(), st.term)
        log.info(
            "leadership handed to a preferred member"
            if moved
            else "preferred member not ready for leadership",
            target=target,
            sent=sent,
            held_ms=round((self._clock() - start) * 1000),
        )
        return moved
