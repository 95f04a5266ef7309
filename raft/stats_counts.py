"""Outcome counts of the statistics (raft.stats), and what one execution adds to them: its outcome,
its duration and lateness, the hour and minute it ended in.
"""

from __future__ import annotations

from cronraft.proto.v1 import common_pb2

Execution = common_pb2.Execution
OutcomeCounts = common_pb2.OutcomeCounts

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

FAILURE_STATES = frozenset(
    {
        common_pb2.EXECUTION_FAILED,
        common_pb2.EXECUTION_TIMED_OUT,
        common_pb2.EXECUTION_LOST,
        common_pb2.EXECUTION_EXPIRED,
    }
)
_SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
_COUNT_FIELD: dict[int, str] = {
    common_pb2.EXECUTION_SUCCEEDED: "succeeded",
    common_pb2.EXECUTION_FAILED: "failed",
    common_pb2.EXECUTION_TIMED_OUT: "timed_out",
    common_pb2.EXECUTION_CANCELLED: "cancelled",
    common_pb2.EXECUTION_LOST: "lost",
    common_pb2.EXECUTION_EXPIRED: "expired",
}


def count(c: OutcomeCounts, state: int, n: int = 1) -> None:
    if state == _SUCCEEDED:  # the usual outcome, without getattr / setattr
        c.succeeded += n
        c.runs += n
        return
    field = _COUNT_FIELD.get(state)
    if field is None:
        return
    setattr(c, field, getattr(c, field) + n)
    c.runs += n


def add_counts(into: OutcomeCounts, other: OutcomeCounts) -> None:
    into.runs += other.runs
    for field in _COUNT_FIELD.values():
        setattr(into, field, getattr(into, field) + getattr(other, field))


def failures(c: OutcomeCounts) -> int:
    return c.failed + c.timed_out + c.lost + c.expired


def rates(c: OutcomeCounts) -> tuple[float, float]:
    """(success rate, failure rate) of `c` (0 without runs)."""
    if not c.runs:
        return 0.0, 0.0
    return c.succeeded / c.runs, failures(c) / c.runs


def duration_of(ex: Execution) -> int | None:
    """How long the last attempt ran, by its worker's clock; None if no attempt reported a run."""
    if ex.started_at_ms > 0 and ex.finished_at_ms >= ex.started_at_ms:
        return ex.finished_at_ms - ex.started_at_ms
    return None


def lateness_of(ex: Execution) -> int | None:
    """From the nominal time to the start of the first attempt that began (None: a trigger or backfill,
    whose nominal time is not a promise, or no attempt began). Early starts count as 0."""
    if ex.manual or ex.nominal_time_ms <= 0:
        return None
    start = ex.started_at_ms
    attempts = ex.attempts
    if len(attempts) > 1:  # retried: the first attempt that began (0 in a summary: it never began)
        start = min((a.started_at_ms for a in attempts if a.started_at_ms > 0), default=start)
    if start <= 0:
        return None
    return max(0, start - ex.nominal_time_ms)


def hour_of(ms: int) -> int:
    return max(0, ms) - max(0, ms) % HOUR_MS


def minute_of(ms: int) -> int:
    return max(0, ms) - max(0, ms) % MINUTE_MS
