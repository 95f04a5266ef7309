"""apply(): determinism, replay by index, dedup, at-most-once fires, fencing, indexes."""

from __future__ import annotations

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Command = commands_pb2.Command


class Log:
    """Feeds entries to a state machine with consecutive indexes, like the replicator."""

    def __init__(self, machine: StateMachine | None = None) -> None:
        self.sm = machine or StateMachine(MemKV())
        self.index = self.sm.last_applied()
        self.entries: list[tuple[int, bytes]] = []

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        self.index += 1
        payload = encode_batch(cmds)
        self.entries.append((self.index, payload))
        raw = self.sm.apply_entry(self.index, payload)
        assert raw is not None
        res = commands_pb2.BatchResult()
        res.ParseFromString(raw)
        return list(res.results)


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def spec(schedule: common_pb2.Schedule | None = None, **kw: object) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name="t",
        schedule=schedule or common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["echo", "hi"])),
    )
    for k, v in kw.items():
        if isinstance(v, dict):
            getattr(s, k).update(v)
        else:
            setattr(s, k, v)
    return s


def create(task_id: str, s: common_pb2.TaskSpec, at: int = T0 + 1, rid: str = "") -> Command:
    return Command(
        request_id=rid, stamped_at_ms=at, create_task=commands_pb2.CreateTask(task_id=task_id, spec=s)
    )


def epoch(term: int) -> Command:
    return Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=term, leader_id="n1"))


def fire(task_id: str, nominal: int, eid: str, at: int | None = None) -> Command:
    return Command(
        stamped_at_ms=at or nominal,
        fire=commands_pb2.Fire(task_id=task_id, nominal_time_ms=nominal, execution_id=eid),
    )


def grant(eid: str, worker: str = "w1") -> Command:
    return Command(
        stamped_at_ms=T0, grant=commands_pb2.Grant(execution_id=eid, worker_id=worker, lease_ttl_ms=1000)
    )


def complete(
    eid: str, token: common_pb2.FencingToken, outcome: int = common_pb2.ATTEMPT_SUCCEEDED
) -> Command:
    return Command(
        stamped_at_ms=T0,
        complete=commands_pb2.Complete(
            execution_id=eid,
            token=token,
            result=common_pb2.AttemptResult(outcome=outcome, stdout_tail=b"out"),
        ),
    )


def expire(eid: str, token: common_pb2.FencingToken) -> Command:
    return Command(stamped_at_ms=T0, expire_lease=commands_pb2.ExpireLease(execution_id=eid, token=token))


def test_create_sets_first_fire_and_due_index() -> None:
    log = Log()
    (res,) = log.apply(create(tid(1), spec()))
    assert res.applied
    assert res.task.next_fire_ms == T0 + 60_000
    assert res.task.state == common_pb2.TASK_SCHEDULED
    with log.sm.kv.read() as txn:
        assert sm.due_tasks(txn, T0 + 60_000) == [(T0 + 60_000, tid(1))]
        assert sm.due_tasks(txn, T0 + 59_999) == []


def test_replayed_index_is_skipped() -> None:
    log = Log()
    log.apply(create(tid(1), spec()))
    index, payload = log.entries[0]
    assert log.sm.apply_entry(index, payload) is None
    # A fresh machine over the same store (a restart) also skips it: last_applied is in the store.
    again = StateMachine(log.sm.kv)
    assert again.last_applied() == index
    assert again.apply_entry(index, payload) is None
    with log.sm.kv.read() as txn:
        tasks, _ = sm.list_tasks(txn)
    assert len(tasks) == 1


def test_request_id_dedup_answers_the_first_outcome() -> None:
    log = Log()
    (a,) = log.apply(create(tid(1), spec(), rid="r1"))
    (b,) = log.apply(create(tid(2), spec(), rid="r1"))  # a retry stamped with a new id by a new leader
    assert b.task.task_id == a.task.task_id == tid(1)
    with log.sm.kv.read() as txn:
        assert len(sm.list_tasks(txn)[0]) == 1


def test_dedup_records_are_pruned_after_retention() -> None:
    log = Log()
    log.apply(create(tid(1), spec(), rid="old"))
    later = T0 + sm.DEDUP_RETENTION_MS + 10
    log.apply(create(tid(2), spec(), at=later, rid="new"))
    with log.sm.kv.read() as txn:
        assert txn.get("requests", b"old") is None
        assert txn.get("requests", b"new") is not None


def test_invalid_spec_is_rejected_without_effect() -> None:
    log = Log()
    bad = spec(common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="not a cron")))
    (res,) = log.apply(create(tid(1), bad))
    assert not res.applied and res.error_code == "invalid_argument"
    assert "spec.schedule.cron.expression" in res.error
    with log.sm.kv.read() as txn:
        assert sm.read_task(txn, tid(1)) is None
        assert list(txn.scan("due")) == []


def test_a_fire_commits_at_most_once() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), spec()))
    nominal = c.task.next_fire_ms
    (f1,) = log.apply(fire(tid(1), nominal, tid(100)))
    (f2,) = log.apply(fire(tid(1), nominal, tid(101)))  # a duplicate proposal after a failover
    assert f1.applied and f1.task.next_fire_ms == nominal + 60_000
    assert not f2.applied and f2.error_code == "not_due"
    with log.sm.kv.read() as txn:
        execs, _ = sm.list_executions(txn, tid(1))
    assert [e.execution_id for e in execs] == [tid(100)]


def test_grant_token_is_epoch_and_index_and_stale_results_are_rejected() -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), spec()))
    log.apply(fire(tid(1), c.task.next_fire_ms, tid(100)))
    (g0,) = log.apply(grant(tid(100)))
    assert not g0.applied and g0.error_code == "no_epoch"
    log.apply(epoch(3))
    (g1,) = log.apply(grant(tid(100)))
    assert g1.applied
    assert (g1.execution.token.term, g1.execution.token.index) == (3, log.index)
    old = g1.execution.token
    (x,) = log.apply(expire(tid(100), old))
    assert x.applied and x.execution.state == common_pb2.EXECUTION_PENDING
    log.apply(epoch(4))
    (g2,) = log.apply(grant(tid(100), "w2"))
    assert (g2.execution.token.term, g2.execution.token.index) == (4, log.index)
    assert g2.execution.attempt == 2
    (stale,) = log.apply(complete(tid(100), old))
    assert not stale.applied and stale.error_code == "stale_token"
    (stale_x,) = log.apply(expire(tid(100), old))
    assert not stale_x.applied and stale_x.error_code == "stale_token"
    (ok,) = log.apply(complete(tid(100), g2.execution.token))
    assert ok.applied and ok.execution.state == common_pb2.EXECUTION_SUCCEEDED
    (twice,) = log.apply(complete(tid(100), g2.execution.token))
    assert not twice.applied


def test_lease_expiry_respects_max_attempts_and_at_most_once() -> None:
    log = Log()
    log.apply(epoch(1))
    (c,) = log.apply(create(tid(1), spec(max_attempts=1)))
    log.apply(fire(tid(1), c.task.next_fire_ms, tid(100)))
    (g,) = log.apply(grant(tid(100)))
    (x,) = log.apply(expire(tid(100), g.execution.token))
    assert x.execution.state == common_pb2.EXECUTION_LOST

    (c2,) = log.apply(create(tid(2), spec(guarantee=common_pb2.AT_MOST_ONCE)))
    log.apply(fire(tid(2), c2.task.next_fire_ms, tid(200)))
    (g2,) = log.apply(grant(tid(200)))
    (x2,) = log.apply(expire(tid(200), g2.execution.token))
    assert x2.execution.state == common_pb2.EXECUTION_LOST
    assert "at_most_once" in x2.execution.error


def test_one_time_task_completes_after_its_fire_and_cancel_drops_pending() -> None:
    log = Log()
    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 5_000))
    (_c,) = log.apply(create(tid(1), spec(at)))
    (f,) = log.apply(fire(tid(1), T0 + 5_000, tid(100)))
    assert f.task.state == common_pb2.TASK_COMPLETED and f.task.next_fire_ms == 0
    (c2,) = log.apply(create(tid(2), spec()))
    log.apply(fire(tid(2), c2.task.next_fire_ms, tid(200)))
    (cx,) = log.apply(Command(stamped_at_ms=T0, cancel_task=commands_pb2.CancelTask(task_id=tid(2))))
    assert cx.task.state == common_pb2.TASK_CANCELLED
    with log.sm.kv.read() as txn:
        assert sm.read_execution(txn, tid(200)).state == common_pb2.EXECUTION_CANCELLED  # type: ignore[union-attr]
        assert sm.pending_executions(txn) == [sm.read_execution(txn, tid(100))]
        assert sm.due_tasks(txn, 2**62) == []


def test_list_tasks_filters_and_pages() -> None:
    log = Log()
    for i in range(7):
        log.apply(create(tid(i + 1), spec(tags={"team": "a" if i % 2 else "b"}, name=f"job-{i}")))
    log.apply(Command(stamped_at_ms=T0, cancel_task=commands_pb2.CancelTask(task_id=tid(1))))
    with log.sm.kv.read() as txn:
        page, token = sm.list_tasks(txn, page_size=3)
        assert [t.task_id for t in page] == [tid(1), tid(2), tid(3)] and token
        page2, _token2 = sm.list_tasks(txn, page_size=3, page_token=token)
        assert [t.task_id for t in page2] == [tid(4), tid(5), tid(6)]
        a, _ = sm.list_tasks(txn, tags={"team": "a"})
        assert [t.spec.name for t in a] == ["job-1", "job-3", "job-5"]
        cancelled, _ = sm.list_tasks(txn, state=common_pb2.TASK_CANCELLED)
        assert [t.task_id for t in cancelled] == [tid(1)]
        pre, _ = sm.list_tasks(txn, name_prefix="job-6")
        assert [t.task_id for t in pre] == [tid(7)]


def test_undecodable_entry_is_recorded_identically() -> None:
    log = Log()
    log.index += 1
    raw = log.sm.apply_entry(log.index, commands_pb2.CommandBatch(version=99).SerializeToString())
    res = commands_pb2.BatchResult()
    res.ParseFromString(raw or b"")
    assert res.results[0].error_code == "codec"
    assert log.sm.last_applied() == log.index


def test_two_machines_fed_the_same_log_are_identical() -> None:
    log = Log()
    log.apply(epoch(1))
    for i in range(5):
        (c,) = log.apply(create(tid(i + 1), spec(), rid=f"r{i}"))
        log.apply(fire(tid(i + 1), c.task.next_fire_ms, tid(100 + i)), grant(tid(100 + i)))
    other = StateMachine(MemKV())
    for index, payload in log.entries:
        other.apply_entry(index, payload)
    assert log.sm.kv.dump() == other.kv.dump()  # type: ignore[attr-defined]


@pytest.mark.parametrize("late_ms", [30_000, 3_600_000])
def test_missed_fires_within_the_catchup_window_all_fire(late_ms: int) -> None:
    log = Log()
    (c,) = log.apply(create(tid(1), spec()))
    first = c.task.next_fire_ms
    (f,) = log.apply(fire(tid(1), first, tid(100), at=first + late_ms))
    # Within the window the next missed minute is still due; beyond it, the next fire is in the future.
    nxt = f.task.next_fire_ms
    if late_ms <= sm.DEFAULT_CATCHUP_WINDOW_MS:
        assert nxt == first + 60_000
    else:
        assert nxt >= first + late_ms - sm.DEFAULT_CATCHUP_WINDOW_MS


def test_a_leader_proposing_its_epoch_again_is_answered_applied() -> None:
    """A leader whose epoch proposal timed out retries it; if the first one did apply, the retry must
    not be refused (the leader stepped back while still leading the Raft group: no dispatch until the
    next election). Another leader's claim to the same term is still refused."""
    log = Log()
    (first,) = log.apply(Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=15, leader_id="n1")))
    (again,) = log.apply(Command(stamped_at_ms=T0 + 5_000, epoch=commands_pb2.Epoch(term=15, leader_id="n1")))
    (other,) = log.apply(Command(stamped_at_ms=T0 + 5_001, epoch=commands_pb2.Epoch(term=15, leader_id="n2")))
    (older,) = log.apply(Command(stamped_at_ms=T0 + 5_002, epoch=commands_pb2.Epoch(term=14, leader_id="n1")))
    assert first.applied and again.applied
    assert not other.applied and other.error_code == "stale_epoch"
    assert not older.applied and older.error_code == "stale_epoch"
    with log.sm.kv.read() as txn:
        assert sm.read_epoch(txn) == commands_pb2.Epoch(term=15, leader_id="n1")
