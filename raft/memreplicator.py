"""The in-memory twin of the replicator: one node, no network, no thread.

`MemReplicator` implements `Replicator` (raft.replicator; declared as its base, so mypy checks it) for a
single node: `propose` applies the payload at once, at the next index, through the same
`apply(index, payload)` callback the real replicator uses. Tests steer it: `set_leader(False)` makes
`propose` raise `NotLeader`, `bump_term()` simulates a new term, and `fail_next(exc)` makes the next
proposal fail with `exc` (with `applied=True` the entry is applied first, the way a real `OutcomeUnknown`
may hide a commit). `MemLog` is the pure, synchronous core (index bookkeeping and apply), reusable by
the deterministic simulation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cronraft.errors import CronraftError, NotLeader, OutcomeUnknown, Unavailable
from cronraft.raft.audit import AuditLog
from cronraft.raft.replicator import LateResult, RaftStatus, Replicator


@dataclass
class MemLog:
    """A log that commits each payload immediately: `append` returns (index, apply's result)."""

    apply: Callable[[int, bytes], bytes | None]
    last_index: int = 0
    entries: list[bytes] = field(default_factory=list)

    def append(self, payload: bytes) -> tuple[int, bytes | None]:
        self.last_index += 1
        self.entries.append(payload)
        return self.last_index, self.apply(self.last_index, payload)

    def replay(self, apply: Callable[[int, bytes], bytes | None] | None = None) -> None:
        """Apply every entry again from index 1 (what a restart without snapshot does)."""
        fn = apply or self.apply
        for i, payload in enumerate(self.entries, start=1):
            fn(i, payload)


class MemReplicator(Replicator):
    def __init__(
        self,
        apply: Callable[[int, bytes], bytes | None],
        *,
        node_id: str = "n1",
        audit: AuditLog | None = None,
        apply_events: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.log = MemLog(self._apply_and_audit)
        self._apply = apply
        self._audit = audit if apply_events is not None else None
        self._apply_events = apply_events
        self._node_id = node_id
        self._leader = True
        self._term = 1
        self._running = False
        self._failures: list[tuple[CronraftError, bool]] = []
        self._callbacks: list[Callable[[RaftStatus], None]] = []
        self.proposals = 0  # number of propose() calls that reached the log or a failure

    def start(self) -> None:
        self._running = True
        self._notify()

    def stop(self) -> None:
        self._running = False

    def status(self) -> RaftStatus:
        return RaftStatus(
            node_id=self._node_id,
            is_leader=self._running and self._leader,
            leader_id=self._node_id if self._running and self._leader else None,
            term=self._term,
            commit_index=self.log.last_index,
            applied_index=self.log.last_index,
            connected={},
            ready=self._running,
            has_quorum=self._running,
        )

    async def propose(self, payload: bytes, *, timeout_s: float, late: LateResult | None = None) -> bytes:
        if not self._running:
            raise Unavailable("the replicator is not running")
        if not self._leader:
            raise NotLeader(None)
        self.proposals += 1
        if self._failures:
            exc, applied = self._failures.pop(0)
            result = self.log.append(payload)[1] if applied else None
            if late is not None and isinstance(exc, OutcomeUnknown):  # the contract: told once, later
                asyncio.get_running_loop().call_soon(late, result)
            raise exc
        _, result = self.log.append(payload)
        if result is None:
            if late is not None:
                asyncio.get_running_loop().call_soon(late, None)
            raise OutcomeUnknown("the entry's index was already applied; its result is unknown")
        return result

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None:
        self._callbacks.append(cb)

    async def transfer_leadership(self, target: str | None) -> bool:
        """One node has nobody to hand leadership to: refused, like pysyncobj with no caught-up peer."""
        return False

    def _apply_and_audit(self, index: int, payload: bytes) -> bytes | None:
        result = self._apply(index, payload)
        if self._audit is not None and self._apply_events is not None:
            self._audit.write_all(self._apply_events())
        return result

    # --- test controls ---

    def set_leader(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            self._notify()

    def bump_term(self) -> int:
        self._term += 1
        self._notify()
        return self._term

    def fail_next(self, exc: CronraftError, *, applied: bool = False) -> None:
        """The next proposal raises `exc`; with `applied=True` its entry is applied nonetheless."""
        self._failures.append((exc, applied))

    def _notify(self) -> None:
        status = self.status()
        for cb in list(self._callbacks):
            cb(status)


__all__ = ["MemLog", "MemReplicator"]
