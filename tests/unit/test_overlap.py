"""raft.overlap.decide_overlap: what a new fire does beside the task's active executions (pure)."""

from __future__ import annotations

import pytest

from cronraft.proto.v1 import common_pb2
from cronraft.raft.overlap import MAX_BUFFERED, OverlapDecision, decide_overlap, superseded_order

PENDING = common_pb2.EXECUTION_PENDING
BUFFERED = common_pb2.EXECUTION_BUFFERED
RUNNING = common_pb2.EXECUTION_RUNNING


def ex(execution_id: str, state: int) -> common_pb2.Execution:
    return common_pb2.Execution(execution_id=execution_id, state=common_pb2.ExecutionState.ValueType(state))


RUNS = [ex("e1", RUNNING)]
RUNS_AND_WAITS = [ex("e1", RUNNING), ex("e2", BUFFERED)]


@pytest.mark.parametrize(
    "policy",
    [
        common_pb2.OVERLAP_DEFAULT,
        common_pb2.OVERLAP_ALLOW_ALL,
        common_pb2.OVERLAP_SKIP,
        common_pb2.OVERLAP_BUFFER_ONE,
        common_pb2.OVERLAP_BUFFER_ALL,
        common_pb2.OVERLAP_CANCEL_OTHER,
        common_pb2.OVERLAP_TERMINATE_OTHER,
    ],
)
def test_nothing_active_starts_pending_whatever_the_policy(policy: int) -> None:
    assert decide_overlap(policy, []) == OverlapDecision(PENDING)
    assert decide_overlap(policy, [], force_buffer=True) == OverlapDecision(PENDING)


def test_allow_all_is_the_default_and_ignores_the_active_ones() -> None:
    for policy in (common_pb2.OVERLAP_DEFAULT, common_pb2.OVERLAP_ALLOW_ALL):
        assert decide_overlap(policy, RUNS_AND_WAITS) == OverlapDecision(PENDING)
        assert decide_overlap(policy, RUNS_AND_WAITS, force_buffer=True) == OverlapDecision(PENDING)


def test_skip_records_the_busy_execution() -> None:
    assert decide_overlap(common_pb2.OVERLAP_SKIP, RUNS) == OverlapDecision(
        None, common_pb2.SKIPPED_OVERLAP, "execution e1 is execution_running"
    )


def test_buffer_one_keeps_one_then_drops() -> None:
    assert decide_overlap(common_pb2.OVERLAP_BUFFER_ONE, RUNS) == OverlapDecision(BUFFERED)
    assert decide_overlap(common_pb2.OVERLAP_BUFFER_ONE, RUNS_AND_WAITS) == OverlapDecision(
        None, common_pb2.BUFFER_DROPPED, "execution e1 is execution_running"
    )


def test_the_reasons_in_words_with_schedule_fixes() -> None:
    assert decide_overlap(common_pb2.OVERLAP_SKIP, RUNS, plain=True).reason == (
        "execution e1 still running (overlap skip)"
    )
    assert decide_overlap(common_pb2.OVERLAP_BUFFER_ONE, RUNS_AND_WAITS, plain=True).reason == (
        "execution e1 still running, a run already waits (overlap buffer_one)"
    )


def test_buffer_all_drops_past_its_bound() -> None:
    assert decide_overlap(common_pb2.OVERLAP_BUFFER_ALL, RUNS_AND_WAITS) == OverlapDecision(BUFFERED)
    full = RUNS + [ex(f"b{i}", BUFFERED) for i in range(MAX_BUFFERED)]
    assert decide_overlap(common_pb2.OVERLAP_BUFFER_ALL, full) == OverlapDecision(
        None, common_pb2.BUFFER_DROPPED, "buffer full"
    )


def test_cancel_other_waits_while_a_cancelled_run_stops() -> None:
    assert decide_overlap(common_pb2.OVERLAP_CANCEL_OTHER, RUNS) == OverlapDecision(BUFFERED, supersede=True)
    waiting_only = [ex("e2", BUFFERED), ex("e3", PENDING)]
    assert decide_overlap(common_pb2.OVERLAP_CANCEL_OTHER, waiting_only) == OverlapDecision(
        PENDING, supersede=True
    )


def test_terminate_other_starts_at_once() -> None:
    assert decide_overlap(common_pb2.OVERLAP_TERMINATE_OTHER, RUNS_AND_WAITS) == OverlapDecision(
        PENDING, terminate=True
    )


def test_a_backfill_queues_behind_the_active_ones_whatever_the_policy() -> None:
    for policy in (
        common_pb2.OVERLAP_SKIP,
        common_pb2.OVERLAP_BUFFER_ONE,
        common_pb2.OVERLAP_CANCEL_OTHER,
        common_pb2.OVERLAP_TERMINATE_OTHER,
    ):
        assert decide_overlap(policy, RUNS_AND_WAITS, force_buffer=True) == OverlapDecision(BUFFERED)


def test_an_unknown_policy_is_allow_all() -> None:
    assert decide_overlap(999, RUNS) == OverlapDecision(PENDING)


def test_superseded_ones_end_buffered_first() -> None:
    order = superseded_order([ex("r", RUNNING), ex("p", PENDING), ex("b", BUFFERED)])
    assert [e.execution_id for e in order] == ["b", "r", "p"]
