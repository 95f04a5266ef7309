"""The apply path's "the oldest key of this prefix" and "is there any" reads are one seek each (`Txn.first`),
not scans (issue 16: an empty LMDB scan costs about four gets): at a Complete (the buffer of overlapping
executions), at a fire's trim, and per task the Prune sweep visits. What is stored is the same as with the
scans (bench/store_dump.py); these tests keep the scans from coming back, and check the answers."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from tests.unit.test_apply_calls import CountedKV
from tests.unit.test_retention import (
    DAY,
    T0,
    Command,
    Log,
    complete,
    create,
    eid,
    epoch,
    executions_of,
    grant,
    prune,
    run,
    spec,
    task_of,
    tid,
    trigger,
)

_OVERLAP = {"buffered", "fires", "ledger", "active"}  # (logs_by_time: raft.output.prune scans it)


def _scans(kv: CountedKV) -> dict[str, int]:
    return {db: n for (call, db), n in kv.calls.items() if call == "scan" and db in _OVERLAP}


def test_a_complete_looks_at_the_buffer_in_one_seek() -> None:
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    assert log.one(trigger(tid(1), eid(0), T0 + 1000)).applied
    g = log.one(grant(eid(0), T0 + 1001))
    kv.calls.clear()
    assert log.one(complete(eid(0), g.execution.token, T0 + 1002)).applied
    assert kv.calls["first", "buffered"] == 1
    assert kv.calls["get", "active"] == 0 and _scans(kv) == {}


def test_a_complete_still_promotes_the_oldest_buffered_execution() -> None:
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec(overlap=common_pb2.OVERLAP_BUFFER_ONE)))
    assert log.one(trigger(tid(1), eid(0), T0 + 1000)).applied
    g = log.one(grant(eid(0), T0 + 1001))
    buffered = log.one(trigger(tid(1), eid(1), T0 + 2000))
    assert [e.state for e in buffered.executions] == [common_pb2.EXECUTION_BUFFERED]
    kv.calls.clear()
    done = log.one(complete(eid(0), g.execution.token, T0 + 2001))
    assert [(e.execution_id, e.state) for e in done.executions][-1] == (eid(1), common_pb2.EXECUTION_PENDING)
    assert kv.calls["first", "buffered"] == 1 and _scans(kv) == {"active": 1}  # the others, to see them


def test_a_trim_at_a_fire_reads_the_oldest_execution_in_one_seek() -> None:
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec(retention=common_pb2.Retention(keep_executions=2))))
    for n in range(2):
        run(log, tid(1), eid(n), T0 + 1000 * (n + 1))
    kv.calls.clear()
    assert log.one(trigger(tid(1), eid(2), T0 + 3000)).applied
    assert executions_of(log, tid(1)) == [eid(1), eid(2)]
    assert kv.calls["first", "fires"] == 1  # the oldest, deleted: the task is within its count again
    assert _scans(kv) == {}


def test_the_sweep_visits_a_task_in_a_seek_per_index() -> None:
    """Per task: the oldest execution (kept: within its count, not past its age), whether the task has
    active executions (ended tasks only), the oldest fire-ledger record (not past its age either)."""
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    for t in range(1, 4):
        log.one(create(tid(t), spec(retention=common_pb2.Retention(keep_executions=5))))
        run(log, tid(t), eid(t), T0 + 1000 * t)
    kv.calls.clear()
    res = log.one(prune(T0 + 10_000, execution_max_age_ms=3_600_000, log_max_age_ms=3_600_000))
    assert res.pruned.visited == 3 and res.pruned.wrapped and res.pruned.executions == 0
    # The earliest instant something seen becomes deletable: the first fire's ledger record, an hour on.
    assert res.pruned.next_ms == T0 + 1000 + 3_600_000  # the oldest fire-ledger record's nominal time
    assert kv.calls["first", "fires"] == 3 and kv.calls["first", "ledger"] == 3
    assert kv.calls["first", "logs_by_time"] == 1  # once per Prune: the oldest output left
    assert _scans(kv) == {}


def test_the_sweep_deletes_what_is_past_its_age_and_notes_what_is_next() -> None:
    log = Log()
    log.one(epoch())
    log.one(create(tid(1), spec()))
    for n in range(4):
        run(log, tid(1), eid(n), T0 + 1000 * (n + 1))
    res = log.one(prune(T0 + 2500 + 60_000, execution_max_age_ms=60_000))
    assert executions_of(log, tid(1)) == [eid(2), eid(3)]  # ended at T0 + 3003 and 4003: kept
    assert res.pruned.executions == 2 and res.pruned.next_ms == T0 + 3000 + 60_000  # eid(2)'s record
    task = task_of(log, tid(1))
    assert task is not None and task.stored_executions == 2


def test_the_sweep_asks_whether_an_ended_task_is_idle_in_one_seek() -> None:
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    for t in (1, 2):
        log.one(create(tid(t), spec()))
    log.one(trigger(tid(2), eid(1), T0 + 10))
    assert log.one(grant(eid(1), T0 + 11)).applied  # task 2 still runs one when cancelled
    for t in (1, 2):
        cancel = Command(stamped_at_ms=T0 + 100, cancel_task=commands_pb2.CancelTask(task_id=tid(t)))
        assert log.one(cancel).applied
    kv.calls.clear()
    res = log.one(prune(T0 + 100 + DAY, ended_task_max_age_ms=DAY))
    assert res.pruned.tasks == 1
    assert task_of(log, tid(1)) is None
    assert task_of(log, tid(2)) is not None  # an execution is still active
    assert kv.calls["first", "active"] == 2
    assert "active" not in _scans(kv)  # task 1's deletion lists its active ones (none): that is all
