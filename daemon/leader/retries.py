"""Backoff for the leader's own commands that failed inside apply (`InternalRetries`).

One of our own commands (a Fire, Grant, Complete or ExpireLease) that apply recorded as "internal" (its
handler raised: a bug, or stored data no check caught) fails the same way when proposed again at once:
it is retried after a delay that doubles with each failure in a row, up to the maximum (it was put back
at once, and a failing Fire was proposed again at every tick: a hot loop of failing entries).

Pure: the caller passes the time (the scheduling clock, or the monotonic one for lease expiries).
"""

from __future__ import annotations

INTERNAL_RETRY_MS = 1_000
INTERNAL_RETRY_MAX_MS = 60_000


class InternalRetries:
    """(kind, id) -> (failures in a row, retry at, error), and what the driver logs once per streak."""

    def __init__(self) -> None:
        self.failing: dict[tuple[str, str], tuple[int, int, str]] = {}
        # What the driver logs, once per streak of failures: (kind, id, error, retry delay in ms).
        self.reports: list[tuple[str, str, str, int]] = []

    def note_failure(self, kind: str, key: str, error: str, at_ms: int) -> int:
        """Count one more failure in a row of (kind, key); the delay before its retry (ms)."""
        failures = self.failing.get((kind, key), (0, 0, ""))[0] + 1
        delay = min(INTERNAL_RETRY_MAX_MS, INTERNAL_RETRY_MS << min(failures - 1, 16))
        self.failing[kind, key] = (failures, at_ms + delay, error)
        if failures == 1:
            self.reports.append((kind, key, error, delay))
        return delay

    def failures(self, kind: str, key: str) -> int:
        return self.failing.get((kind, key), (0, 0, ""))[0]

    def retry_at(self, kind: str, key: str, at_ms: int) -> int | None:
        """When a (kind, key) that failed inside apply may be proposed again, if not yet (its backoff)."""
        failing = self.failing.get((kind, key))
        return failing[1] if failing is not None and at_ms < failing[1] else None

    def error(self, kind: str, key: str) -> str | None:
        failing = self.failing.get((kind, key))
        return failing[2] if failing is not None else None

    def succeeded(self, kind: str, key: str) -> None:
        self.failing.pop((kind, key), None)

    def __bool__(self) -> bool:
        return bool(self.failing)


__all__ = ["INTERNAL_RETRY_MAX_MS", "INTERNAL_RETRY_MS", "InternalRetries"]
