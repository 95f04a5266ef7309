"""A leader's Complete answers the execution as it ended, and a leader's Fire the task and the new
execution, with the bytes it just stored, copied nowhere (Ctx.answer, Ctx.answer_task,
raft.result_bytes.answered): their results' bytes are those of the message filled as before (a straight
serialization), whatever the end and whatever else the result holds."""

from __future__ import annotations

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, message_field
from cronraft.raft.result_bytes import answered
from cronraft.raft.state import read_execution, read_task
from tests.unit.statelog import T0, Command, Log, complete, create, eid, grant, spec, tid, trigger

CommandResult = commands_pb2.CommandResult
Execution = common_pb2.Execution


def _filled(res: CommandResult, answer: Execution | None, task: common_pb2.Task | None = None) -> bytes:
    """What `answered` stands for: the message with `answer` as its execution and first of its executions
    and `task` as its task, as an element of a BatchResult."""
    full = CommandResult()
    full.CopyFrom(res)
    if task is not None:
        full.task.CopyFrom(task)
    if answer is not None:
        full.execution.CopyFrom(answer)
        del full.executions[:]
        full.executions.append(answer)
        full.executions.extend(res.executions)
    return message_field(1, full.SerializeToString(deterministic=True))


def _answer() -> Execution:
    ex = Execution(execution_id=eid(1), task_id=tid(1), state=common_pb2.EXECUTION_SUCCEEDED, attempt=2)
    ex.token.term, ex.token.index = 3, 1_000_000  # a multi-byte length and varints
    ex.attempts.add(attempt=1, worker_id="w1", error="x" * 300)
    # A field this release does not know (a newer one's, kept through a parse): copied and serialized too.
    return Execution.FromString(ex.SerializeToString() + b"\xf8\x3e\x07")


def _task() -> common_pb2.Task:
    task = common_pb2.Task(task_id=tid(1), state=common_pb2.TASK_SCHEDULED, next_fire_ms=T0 + 1000)
    task.spec.name = "n" * 200  # a multi-byte length
    task.spec.tags.update({"b": "2", "a": "1", "c": "3"})  # a map: its bytes are those of deterministic=True
    return common_pb2.Task.FromString(task.SerializeToString(deterministic=True) + b"\xf8\x3e\x07")


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
    missed = CommandResult(applied=True)  # a fire's: fields after the executions
    missed.missed.add(task_id=tid(1), nominal_time_ms=T0, outcome=common_pb2.MISSED_DOWNTIME)
    missed.cancels.add(execution_id=eid(3), worker_id="w2")
    executed = CommandResult(applied=True)  # a fire that superseded another: its execution is a message
    executed.execution.execution_id = eid(5)
    executed.executions.add(execution_id=eid(6))
    return {
        "alone": CommandResult(applied=True),
        "promoted": promoted,
        "cancels": cancels,
        "task": task,
        "refused": refused,
        "missed": missed,
        "executed": executed,
    }


@pytest.mark.parametrize("answers", ["execution", "task", "both"])
@pytest.mark.parametrize("name", list(_others()))
def test_answered_is_the_message_filled(name: str, answers: str) -> None:
    res = _others()[name]
    before = res.SerializeToString(deterministic=True)
    ex = _answer() if answers != "task" else None
    task = _task() if answers != "execution" else None
    spliced = answered(
        res,
        None if ex is None else ex.SerializeToString(),  # as records.put_execution stores it
        None if task is None else task.SerializeToString(deterministic=True),  # as put_task_same_spec
    )
    assert b"".join(spliced) == _filled(res, ex, task)
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


def _one_run_returning_42() -> list[Command]:
    """An epoch, a task, and one execution of it triggered, granted and completed with the result b"42"."""
    at = T0 + 10
    return [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec()),
        trigger(tid(1), eid(1), at),
        grant(eid(1), at + 1),
        complete(eid(1), _token(4), at + 9, started=at + 2, finished=at + 8, result=b"42"),
    ]


def test_a_plain_end_answers_the_execution_as_stored_twice() -> None:
    cmds = _one_run_returning_42()
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


# ------------------------------------------------------------------------------- through apply, raw bytes


def _raw_last(cmds: list[Command], *, audited: bool) -> tuple[Log, bytes]:
    """`cmds` applied one per entry by a leader; the last entry's result as apply returned it (raw bytes,
    not parsed again). `audited`: the last command carries an audit record, so that its result is filled
    as a message and serialized straight (raft.state: not `bytes_only`), the reference for the answer."""
    log = Log()
    last = cmds[-1]
    if audited:
        last = Command()
        last.CopyFrom(cmds[-1])
        last.audit.principal = "tester"
    raw = b""
    for index, cmd in enumerate([*cmds[:-1], last], 1):
        got = log.sm.apply_entry(index, encode_batch([cmd]))
        assert got is not None
        raw = got
    return log, raw


def _same_bytes(cmds: list[Command]) -> tuple[Log, CommandResult]:
    """The last command's result: the same bytes answered as bytes (spliced) and as a message."""
    log, spliced = _raw_last(cmds, audited=False)
    _, straight = _raw_last(cmds, audited=True)
    assert spliced == straight
    (res,) = commands_pb2.BatchResult.FromString(spliced).results
    assert res.applied, res.error
    return log, res


def _fire(task: str, nominal: int, execution: str, at: int, **grant: object) -> Command:
    cmd = Command(
        stamped_at_ms=at,
        fire=commands_pb2.Fire(task_id=task, nominal_time_ms=nominal, execution_id=execution),
    )
    if grant:
        cmd.fire.grant.CopyFrom(commands_pb2.Grant(execution_id=execution, **grant))  # type: ignore[arg-type]
    return cmd


_RATE = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1000, anchor_ms=T0))


def _rated(**kw: object) -> tuple[list[Command], int]:
    """An epoch and a fixed-rate task with tags (a map: deterministic bytes); when it is first due."""
    cmds = [
        Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")),
        create(tid(1), spec(schedule=_RATE, tags={"z": "1", "a": "2", "m": "3"}, **kw)),
    ]
    log = Log()
    for cmd in cmds:
        log.ok(cmd)
    return cmds, _stored_task(log).next_fire_ms


def _stored_task(log: Log) -> common_pb2.Task:
    with log.sm.kv.read() as txn:
        task = read_task(txn, tid(1))
    assert task is not None
    return task


def test_a_fire_answers_the_task_and_the_execution_as_stored() -> None:
    head, due = _rated()
    cmds = [*head, _fire(tid(1), due, eid(1), due)]
    log, res = _same_bytes(cmds)
    ex = _stored(log, eid(1))
    assert res.task == _stored_task(log) and res.task.next_fire_ms == due + 1000
    assert res.execution == ex and list(res.executions) == [ex]
    # Its bytes: those of the message filled with the stored records, serialized straight.
    expected = CommandResult(applied=True, task=_stored_task(log), execution=ex, executions=[ex])
    _, raw = _raw_last(cmds, audited=False)
    assert raw == message_field(1, expected.SerializeToString(deterministic=True))


def test_a_fire_that_grants_answers_the_leased_execution() -> None:
    head, due = _rated()
    log, res = _same_bytes([*head, _fire(tid(1), due, eid(1), due, worker_id="w1", lease_ttl_ms=1000)])
    assert res.execution.state == common_pb2.EXECUTION_RUNNING and res.execution.token.index == 3
    assert res.execution == _stored(log, eid(1))


def test_a_late_fire_answers_its_missed_times_after_the_execution() -> None:
    head, due = _rated(misfire=common_pb2.MISFIRE_FIRE_ONCE)
    log, res = _same_bytes([*head, _fire(tid(1), due, eid(1), due + 5500)])
    assert res.missed and res.execution == _stored(log, eid(1))


def test_a_fire_that_supersedes_answers_the_task_alone_as_bytes() -> None:
    """cancel_other: the running execution is asked to stop (an element of `executions` and a cancel
    before the new one), so the new execution is a message and only the task is spliced in."""
    head, due = _rated(overlap=common_pb2.OVERLAP_CANCEL_OTHER)
    cmds = [
        *head,
        _fire(tid(1), due, eid(1), due),
        grant(eid(1), due + 1),
        _fire(tid(1), due + 1000, eid(2), due + 1000),
    ]
    log, res = _same_bytes(cmds)
    assert [e.execution_id for e in res.executions] == [eid(1), eid(2)] and len(res.cancels) == 1
    assert res.task == _stored_task(log) and res.execution == _stored(log, eid(2))


def test_a_fire_skipped_by_overlap_answers_the_task_alone() -> None:
    head, due = _rated(overlap=common_pb2.OVERLAP_SKIP)
    cmds = [
        *head,
        _fire(tid(1), due, eid(1), due),
        grant(eid(1), due + 1),
        _fire(tid(1), due + 1000, eid(2), due + 1000),
    ]
    log, res = _same_bytes(cmds)
    assert not res.HasField("execution") and not res.executions
    assert res.task == _stored_task(log) and res.task.next_fire_ms == due + 2000


def test_a_complete_answers_the_same_bytes_raw() -> None:
    cmds = _one_run_returning_42()
    log, res = _same_bytes(cmds)
    assert res.execution == _stored(log, eid(1)) and res.execution.state == common_pb2.EXECUTION_SUCCEEDED


@pytest.mark.parametrize("size", [0, 100, 4000, 5000, 20_000])
def test_answered_lengths_of_every_size(size: int) -> None:
    """Lengths looked up (under 4 KiB) and computed (above), for the records and for the result."""
    ex = _answer()
    ex.stdout_tail = b"o" * size
    task = _task()
    task.spec.name = "d" * size
    for res in (CommandResult(applied=True), _others()["missed"]):
        spliced = answered(res, ex.SerializeToString(), task.SerializeToString(deterministic=True))
        assert b"".join(spliced) == _filled(res, ex, task)
