"""Overlap: what a new fire of a task does while earlier executions of it are still active.

A pure decision, beside the misfire one (`misfire.decide_misfire`): it reads the task's policy and its
active executions (pending, buffered or running) and says whether the new execution starts pending,
waits buffered, or is not created (with the ledger outcome and reason to record), and what happens to
the executions already there. `commands.fires.start_execution` carries it out inside the apply.

The policies are those of Temporal's schedules (`ScheduleOverlapPolicy`): skip, buffer_one, buffer_all,
cancel_other, terminate_other, allow_all (our default, like Kubernetes' CronJob `Allow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cronraft.proto.v1 import common_pb2

Execution = common_pb2.Execution

# A task with overlap buffer_all keeps at most this many buffered executions; later fires are dropped.
MAX_BUFFERED = 1_000

PENDING = common_pb2.EXECUTION_PENDING
BUFFERED = common_pb2.EXECUTION_BUFFERED
RUNNING = common_pb2.EXECUTION_RUNNING


@dataclass(frozen=True)
class OverlapDecision:
    """`state`: the new execution's first state (PENDING or BUFFERED), or None: no execution, and the
    fire's ledger outcome is `outcome` with `reason`. `supersede` (cancel_other): the running executions
    are asked to stop and the waiting ones end cancelled. `terminate` (terminate_other): every active
    execution ends now."""

    state: int | None
    outcome: int = 0
    reason: str = ""
    supersede: bool = False
    terminate: bool = False


# The usual decision, made once (a decision is frozen): building one costs about a microsecond.
_START = OverlapDecision(PENDING)


def decide_overlap(
    policy: int, active: Sequence[Execution], *, force_buffer: bool = False, plain: bool = False
) -> OverlapDecision:
    """What a new fire does, given the task's overlap `policy` (0: allow_all) and its `active`
    executions. `force_buffer` (a backfill): unless overlap is allowed, the new run queues up behind
    whatever is active, whatever the policy. `plain`: the ledger's reason in words ("execution X still
    running (overlap skip)": feature schedule_fixes); else the previous release's ("execution X is
    execution_running")."""
    policy = policy or common_pb2.OVERLAP_ALLOW_ALL
    if not active or policy == common_pb2.OVERLAP_ALLOW_ALL:
        return _START  # every fire of a task with overlap allow_all, or with nothing active
    if force_buffer:
        return OverlapDecision(BUFFERED)
    state = common_pb2.ExecutionState.Name(active[0].state).lower()
    if plain:
        busy = f"execution {active[0].execution_id} still {state.removeprefix('execution_')}"
    else:
        busy = f"execution {active[0].execution_id} is {state}"
    buffered = sum(1 for e in active if e.state == BUFFERED)
    if policy == common_pb2.OVERLAP_SKIP:
        return OverlapDecision(None, common_pb2.SKIPPED_OVERLAP, f"{busy} (overlap skip)" if plain else busy)
    if policy == common_pb2.OVERLAP_BUFFER_ONE:
        if buffered:
            reason = f"{busy}, a run already waits (overlap buffer_one)" if plain else busy
            return OverlapDecision(None, common_pb2.BUFFER_DROPPED, reason)
        return OverlapDecision(BUFFERED)
    if policy == common_pb2.OVERLAP_BUFFER_ALL:
        if buffered >= MAX_BUFFERED:
            return OverlapDecision(None, common_pb2.BUFFER_DROPPED, "buffer full")
        return OverlapDecision(BUFFERED)
    if policy == common_pb2.OVERLAP_CANCEL_OTHER:
        # The new one waits its turn while a cancelled run is still stopping.
        running = any(e.state == RUNNING for e in active)
        return OverlapDecision(BUFFERED if running else PENDING, supersede=True)
    if policy == common_pb2.OVERLAP_TERMINATE_OTHER:
        return OverlapDecision(PENDING, terminate=True)
    return _START  # a policy this version does not know: as allow_all


def superseded_order(active: Sequence[Execution]) -> list[Execution]:
    """The order in which cancel_other and terminate_other end the active executions: buffered ones
    first, so that none of them is promoted to pending when another ends."""
    return sorted(active, key=lambda e: e.state != BUFFERED)


__all__ = ["MAX_BUFFERED", "OverlapDecision", "decide_overlap", "superseded_order"]
