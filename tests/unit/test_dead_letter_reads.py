"""The dead-letter path reads an execution once (raft.commands.dead_letters): filing a dead letter moves the
execution's index entries from what it read (or from the caller's execution as stored, `ex`), and a redrive
with a quota reads it once for the quota and the redrive. What is stored is the same either way."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx
from cronraft.raft.commands.dead_letters import dead_letter
from cronraft.raft.kv import DATABASES, KV
from cronraft.raft.records import get_execution, get_task
from tests.unit.statelog import T0, Command, Log, create, eid, epoch, run, spec, tid
from tests.unit.test_apply_calls import CountedKV

_RETRY = common_pb2.RetryPolicy(initial_backoff_ms=1)


def _ended(kv: KV, *, retry: bool) -> Log:
    """A task whose one execution failed: dead-lettered with a retry policy (one attempt), else not."""
    log = Log(kv)
    log.ok(epoch())
    log.ok(create(tid(1), spec(retry=_RETRY, max_attempts=1) if retry else spec()))
    run(log, tid(1), eid(1), T0 + 10, outcome=common_pb2.ATTEMPT_FAILED)
    return log


def _dump(kv: KV) -> dict[str, list[tuple[bytes, bytes]]]:
    with kv.read() as txn:
        return {db: list(txn.scan(db)) for db in DATABASES}


def _file(log: Log, *, passed: bool) -> tuple[int, commands_pb2.CommandResult]:
    """`dead_letter` of the ended execution, read by it or passed as stored: (gets of `execs`, result)."""
    kv = log.sm.kv
    assert isinstance(kv, CountedKV)
    res = commands_pb2.CommandResult(applied=True)
    exec16 = id_bytes(eid(1))
    with kv.write() as txn:
        stored = get_execution(txn, exec16) if passed else None
        task = get_task(txn, id_bytes(tid(1)))
        kv.calls.clear()
        marked = dead_letter(Ctx(txn, 99, 0, T0 + 100, res), task, exec16, "no retries left", stored)
        gets = kv.calls["get", "execs"]
        assert marked.dead_lettered and (marked is stored or not passed)
        assert marked == get_execution(txn, exec16)
    return gets, res


def test_filing_a_dead_letter_reads_the_execution_once_or_not_at_all() -> None:
    read, passed = _ended(CountedKV(), retry=False), _ended(CountedKV(), retry=False)
    assert _dump(read.sm.kv) == _dump(passed.sm.kv)
    gets_read, res_read = _file(read, passed=False)
    gets_passed, res_passed = _file(passed, passed=True)
    assert (gets_read, gets_passed) == (1, 0)
    assert res_read == res_passed and [d.execution_id for d in res_read.dead_letters] == [eid(1)]
    assert _dump(read.sm.kv) == _dump(passed.sm.kv)


def _redrive(limits: bool) -> tuple[int, commands_pb2.CommandResult]:
    kv = CountedKV()
    log = _ended(kv, retry=True)
    with kv.read() as txn:
        assert get_execution(txn, id_bytes(eid(1))).dead_lettered
    cmd = Command(
        stamped_at_ms=T0 + 1000,
        redrive_dead_letters=commands_pb2.RedriveDeadLetters(execution_ids=[eid(1), eid(1)]),
    )
    if limits:
        cmd.limits.max_pending_per_task = 5
    kv.calls.clear()
    res = log.ok(cmd)
    return kv.calls["get", "execs"], res


def test_a_redrive_reads_the_execution_once_with_a_quota_or_without() -> None:
    (with_quota, a), (without, b) = _redrive(True), _redrive(False)
    assert (with_quota, without) == (1, 1)  # the id named twice: the second finds no dead letter
    assert a == b
    (ex,) = a.executions
    assert ex.state == common_pb2.EXECUTION_PENDING and ex.redrives == 1 and not ex.dead_lettered
    assert [d.redriven_as for d in a.dead_letters] == [eid(1)]


def _gets_to_end(retry: bool) -> tuple[int, bool]:
    """Gets of `execs` while one execution is fired, granted and fails its last attempt: (gets, whether
    it was dead-lettered)."""
    kv = CountedKV()
    log = Log(kv)
    log.ok(epoch())
    log.ok(create(tid(1), spec(retry=_RETRY, max_attempts=1) if retry else spec()))
    kv.calls.clear()
    run(log, tid(1), eid(1), T0 + 10, outcome=common_pb2.ATTEMPT_FAILED)
    with kv.read() as txn:
        return kv.calls["get", "execs"], get_execution(txn, id_bytes(eid(1))).dead_lettered


def test_a_complete_that_files_a_dead_letter_reads_the_execution_no_more_than_one_that_does_not() -> None:
    """The Complete's `finish` stores the execution; filing it as a dead letter takes it as stored
    (raft.commands.leases), not from the store again."""
    (with_letter, lettered), (without, plain) = _gets_to_end(True), _gets_to_end(False)
    assert lettered and not plain
    assert with_letter == without
