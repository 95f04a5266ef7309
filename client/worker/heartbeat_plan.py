"""What a worker's heartbeat lists, and how soon after the previous one it may go.

A **full** heartbeat lists every lease the worker holds: the leader renews each to its TTL (and revokes
what it does not know). It goes every heartbeat interval. Between two full ones, a held start (fire
ahead, start_gate) asks for a **confirming** heartbeat CONFIRM_AHEAD_S before its instant: the leader's
answer to a heartbeat sent at most that long before the start, listing the lease, lets it begin.

Confirming heartbeats used to be full, one per start instant. With start instants spread over the
second (W5: 500 tasks every second on 500 anchors), each worker sent a heartbeat every 2-4 ms listing
every lease it held (the hundreds held ahead and running), and the leader renewed each of them every
time: work growing with the square of the rate. At 500 fires/s the leader's event loop fell behind,
confirmations came late and starts began 0.4 s late (p50); at 10,000/s the cluster started 720 fires/s.

So a confirming heartbeat lists only the leases it can confirm: held starts not yet confirmed whose
instant is at most CONFIRM_AHEAD_S after its send. Leases it does not list are neither renewed nor
revoked by the leader (daemon.leader.leases.LeaseKeeper.renew walks the listed ones only); the full
heartbeats renew them. And a heartbeat goes CONFIRM_SPACING_S after the previous one at the earliest
(to a tick of the worker's: client/worker/ticks.py): a start instant asks CONFIRM_AHEAD_S ahead, so its
confirmation is sent at most CONFIRM_SPACING_S later and has CONFIRM_AHEAD_S - CONFIRM_SPACING_S for the
round trip before the start.

A complete listing (asked by a new leader, `list_finished`) is always a full heartbeat.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from cronraft.client.worker.leases import CONFIRM_AHEAD_S, Attempt
from cronraft.client.worker.outbox import AttemptKey

# About 40 heartbeats a second per worker at most, however many start instants it holds; the
# confirmation's round trip has CONFIRM_AHEAD_S - CONFIRM_SPACING_S = 75 ms. Each stream message costs a
# worker a few hundred microseconds of CPU in gRPC's write path: at 10 ms (100 a second) the heartbeats
# were a quarter of a worker's samples in W5 (1,000 fires/s on 1,000 anchors, 2 workers).
CONFIRM_SPACING_S = 0.025


def held(attempt: Attempt) -> bool:
    """A lease granted ahead of its start (start_gate.StartGates.await_start confirms these)."""
    lease = attempt.lease
    return lease.start_delay_ms > 0 or lease.start_at_ms > 0


def to_list(attempts: Iterable[Attempt], sent: float, *, full: bool) -> list[Attempt]:
    """The attempts a heartbeat sent at `sent` lists: every renewable one when `full`, else the held
    starts it confirms (renewable, not yet confirmed, starting at most CONFIRM_AHEAD_S after `sent`)."""
    if full:
        return [a for a in attempts if a.renewable]
    return [
        a
        for a in attempts
        if a.renewable and held(a) and not a.confirmed and a.start_at - CONFIRM_AHEAD_S <= sent
    ]


class HeldStarts:
    """The held starts not yet confirmed, by start instant: a confirming heartbeat takes what it lists
    from here instead of walking every attempt (thousands held ahead at 10,000 fires/s, up to 100
    confirming heartbeats a second). An attempt enters with its lease (`add`), becomes listable
    CONFIRM_AHEAD_S before its start, and leaves once confirmed, revoked, fenced or gone."""

    def __init__(self) -> None:
        self._ahead: list[tuple[float, int, Attempt]] = []  # a heap by start instant
        self._seq = 0  # ties broken by arrival, never by comparing attempts
        self._listable: dict[AttemptKey, Attempt] = {}

    def __len__(self) -> int:
        return len(self._ahead) + len(self._listable)

    def add(self, attempt: Attempt) -> None:
        if held(attempt):
            heapq.heappush(self._ahead, (attempt.start_at, self._seq, attempt))
            self._seq += 1

    def confirming(self, attempts: Mapping[AttemptKey, Attempt], sent: float) -> list[Attempt]:
        """What a confirming heartbeat sent at `sent` lists (as `to_list(..., full=False)` over
        `attempts`, the worker's current ones)."""
        ahead = self._ahead
        while ahead and ahead[0][0] - CONFIRM_AHEAD_S <= sent:
            attempt = heapq.heappop(ahead)[2]
            self._listable[attempt.key] = attempt
        out: list[Attempt] = []
        for key, attempt in list(self._listable.items()):
            if attempts.get(key) is not attempt or not attempt.renewable or attempt.confirmed:
                del self._listable[key]
            else:
                out.append(attempt)
        return out


def is_full_due(now: float, last_full: float, interval_s: float, *, asked: bool, list_finished: bool) -> bool:
    """Whether the heartbeat sent at `now` must be full: it was not `asked` for (the interval's timer
    sent it), the interval since the last full one has passed, or the leader asked for a complete
    listing."""
    return not asked or list_finished or now - last_full >= interval_s


def spacing_wait(now: float, last_sent: float) -> float:
    """Seconds to wait before sending, so that heartbeats are at least CONFIRM_SPACING_S apart."""
    return max(0.0, last_sent + CONFIRM_SPACING_S - now)


__all__ = ["CONFIRM_SPACING_S", "HeldStarts", "held", "is_full_due", "spacing_wait", "to_list"]
