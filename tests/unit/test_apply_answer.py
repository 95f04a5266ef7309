"""A leader's Complete answers the execution as it ended without copying it (Ctx.answer, raft.state's
`answered`): its result's bytes are those of the message filled as before, whatever the end and whatever
else the result holds."""

from __future__ import annotations

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch
from cronraft.raft.state import answered, read_execution
from tests.unit.statelog import T0, Command, Log, complete, create, eid, grant, spec, tid, trigger

CommandResult = commands_pb2.CommandResult
Execution = common_pb2.Execution


def _filled(res: CommandResult, answer: Execution) -> bytes:
    """What `answered` stands for: the message with `answer` as its execution and first of its executions."""
    full = CommandResult()
    full.CopyFrom(res)
    full.execution.CopyFrom(answer)
    del full.executions[:]
    full.executions.append(answer)
    full.executions.extend(res.executions)
    return full.SerializeToString(deterministic=True)


def _answer() -> Execution:
    ex = Execution(execution_id=eid(1), task_id=tid(1), state=common_pb2.EXECUTION_SUCCEEDED, attempt=2)
    ex.token.term, ex.token.index = 3, 1_000_000  # a multi-byte length and varints
    ex.attempts.add(attempt=1, worker_id="w1", error="x" * 300)
    # A field this release does not know (a newer one's, kept through a parse): copied and serialized too.
    return Execution.FromString(ex.SerializeToString() + b"\xf8\x3e\x07")


def _others() -> dict[str, CommandResult]:
    promoted = CommandResult(applied=True)
    promoted.executions.add(execution_id=eid(2), state=common_pb2.EXECUTION_PENDING)
    cancels = CommandResult(applied=True)
    cancels.cancels.add(execution_id=eid(3), worker_id="w2")
    cancels.dead_letters.add(execution_id=eid(4), reason="r")
    task = CommandResult(applied=True)  # a field before `execution`: filled as a message
    task.task.task_id = tid(1)
    task.task.spec.tags["k"] = "v"
    refused = CommandResult(applied=False, error_code="x", error="y")
    return {
        "alone": CommandResult(applied=True),
        "promoted": promoted,
        "cancels": cancels,
        "task": task,
        "refused": refused,
    }


@pytest.mark.parametrize("name", list(_others()))
def test_answered_is_the_message_filled(name: str) -> None:
    res = _others()[name]
    before = res.SerializeToString(deterministic=True)
    assert answered(res, _answer()) == _filled(res, _answer())
    assert res.SerializeToString(deterministic=True) == before  # left as it was


def _stored(log: Log, execution: str) -> Execution:
    with log.sm.kv.read() as txn:
        ex = read_execution(txn, execution)
    assert ex is not None
    return ex


def _leader_and_follower(cmds: list[Command]) -> tuple[Log, list[bytes]]:
    """`cmds` applied one per entry by a leader (results read) and a follower (results unread): the
    leader's log and its results; both stores must be the same."""
    leader, follower = Log(), Log()
    out = []
    for index, cmd in enumerate(cmds, 1):
        raw = leader.sm.apply_entry(index, encode_batch([cmd]))
        assert raw is not None
        (res,) = commands_pb2.BatchResult.FromString(raw).results
        assert res.applied, res.error
        out.append(res.SerializeToString(deterministic=True))
        follower.sm.apply_entry(index, encode_batch([cmd]), wanted=False)
    with leader.sm.kv.read() as a, follower.sm.kv.read() as b:
        for db in ("execs", "tasks", "task_stats_hours", "running", "pending", "buffered"):
            assert list(a.scan(db)) == list(b.scan(db)), db
    return leader, out


def _token(index: int) -> common_pb2.FencingToken:
    return common_pb2.FencingToken(term=1, index=index)


def test_a_plain_end_answers_the_execution_as_stored_twice() -> None:
    at = T0 + 10
    cmds = [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec()),
        trigger(tid(1), eid(1), at),
        grant(eid(1), at + 1),
        complete(eid(1), _token(4), at + 9, started=at + 2, finished=at + 8, result=b"42"),
    ]
    log, results = _leader_and_follower(cmds)
    ex = _stored(log, eid(1))
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED
    expected = CommandResult(applied=True, execution=ex, executions=[ex])
    assert results[-1] == expected.SerializeToString(deterministic=True)


def test_a_promoted_execution_follows_the_answer() -> None:
    at = T0 + 10
    cmds = [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec(overlap=common_pb2.OVERLAP_BUFFER_ALL)),
        trigger(tid(1), eid(1), at),
        grant(eid(1), at + 1),
        trigger(tid(1), eid(2), at + 2),
        complete(eid(1), _token(4), at + 9, started=at + 2, finished=at + 8),
    ]
    log, results = _leader_and_follower(cmds)
    ended, promoted = _stored(log, eid(1)), _stored(log, eid(2))
    assert promoted.state == common_pb2.EXECUTION_PENDING
    expected = CommandResult(applied=True, execution=ended, executions=[ended, promoted])
    assert results[-1] == expected.SerializeToString(deterministic=True)


def test_a_retry_and_a_dead_letter_answer_as_messages() -> None:
    """Ends other than the plain one fill the result as before: a retry (the execution waits again) and a
    dead letter (the result's execution as the dead letter stored it, marked)."""
    at = T0 + 10
    retry = common_pb2.RetryPolicy(initial_backoff_ms=1)
    failed = common_pb2.ATTEMPT_FAILED
    cmds = [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec(retry=retry, max_attempts=2)),
        trigger(tid(1), eid(1), at),
        grant(eid(1), at + 1),
        complete(eid(1), _token(4), at + 9, failed, started=at + 2, finished=at + 8),
        grant(eid(1), at + 20),
        complete(eid(1), _token(6), at + 29, failed, started=at + 22, finished=at + 28),
    ]
    log, results = _leader_and_follower(cmds)
    retried = CommandResult.FromString(results[4])
    assert retried.execution.state == common_pb2.EXECUTION_PENDING
    assert list(retried.executions) == [retried.execution]
    dead = CommandResult.FromString(results[6])
    ex = _stored(log, eid(1))
    assert ex.dead_lettered and dead.execution == ex
    assert dead.executions[0].state == common_pb2.EXECUTION_FAILED and not dead.executions[0].dead_lettered
    assert [d.execution_id for d in dead.dead_letters] == [eid(1)]


def test_an_audited_complete_answers_the_same_bytes() -> None:
    """With an audit record the result is filled as a message (the record is written from it): the same
    bytes as the answer's."""
    at = T0 + 10
    head = [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec()),
        trigger(tid(1), eid(1), at),
        grant(eid(1), at + 1),
    ]
    done = complete(eid(1), _token(4), at + 9, started=at + 2, finished=at + 8)
    audited = Command()
    audited.CopyFrom(done)
    audited.audit.principal = "tester"
    _, plain = _leader_and_follower([*head, done])
    _, with_audit = _leader_and_follower([*head, audited])
    assert plain[-1] == with_audit[-1]
