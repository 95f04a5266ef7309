"""ATTEMPT_REFUSED: a worker's policy refused the lease, nothing ran. The state machine ends the
execution failed with the worker's reason, whatever the retry policy: the payload would be refused again.
A failed attempt with the same retry policy is retried (the contrast)."""

from __future__ import annotations

from test_fire_ahead import DUE, LEAD, Command, Store

from cronraft.proto.v1 import commands_pb2, common_pb2

RETRY = common_pb2.RetryPolicy(initial_backoff_ms=100)


def _report(s: Store, outcome: int, error: str) -> commands_pb2.CommandResult:
    tid = s.create(1, guarantee=common_pb2.AT_LEAST_ONCE, max_attempts=5, retry=RETRY)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    granted = s.grant(ex.execution_id, DUE - 400, LEAD).execution
    result = common_pb2.AttemptResult(
        execution_id=ex.execution_id,
        token=granted.token,
        outcome=common_pb2.AttemptOutcome.ValueType(outcome),
        exit_code=-1,
        error=error,
        finished_at_ms=DUE,
    )
    complete = commands_pb2.Complete(execution_id=ex.execution_id, token=granted.token, result=result)
    (res,) = s.apply([Command(stamped_at_ms=DUE + 1, complete=complete)])
    assert res.applied, res.error
    return res


def test_a_refused_attempt_ends_the_execution_failed_without_a_retry() -> None:
    why = "refused by worker w1: payload: this worker does not run shell payloads"
    res = _report(Store(), common_pb2.ATTEMPT_REFUSED, why)
    assert res.execution.state == common_pb2.EXECUTION_FAILED and res.execution.attempt == 1
    assert res.execution.error == why
    assert res.execution.attempts[-1].outcome == common_pb2.ATTEMPT_REFUSED
    # With a retry policy the execution goes to the dead-letter queue, saying why it is final.
    (letter,) = res.dead_letters
    assert letter.reason == "failed: refused by the worker's policy"


def test_a_failed_attempt_with_the_same_policy_is_retried() -> None:
    res = _report(Store(), common_pb2.ATTEMPT_FAILED, "exit code 1")
    assert res.execution.state == common_pb2.EXECUTION_PENDING and not res.dead_letters
