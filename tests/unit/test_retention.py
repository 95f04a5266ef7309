"""Retention and deletion inside apply (raft.retention): what is deleted, when, with every index entry,
and within a bounded budget per command; the same over LMDB and the in-memory store.

The digest tests compare a store that had some data and then deleted it with a store that never had it,
built from the same log with the deleted commands' entries left empty (so that log indexes, derived ids
and versions line up): every sub-database that can name a task or an execution must be equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features, retention
from cronraft.raft import state as sm
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import DATABASES, KV, MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
Command = commands_pb2.Command
# What a deletion may leave different: the dedup table (answers to requests already made), the apply
# bookkeeping in meta (last applied, the sweep's cursor, the policy), the audit of the task counters, and
# the cluster's statistics (raft.stats: what ran stays counted; a ranking naming a deleted task is skipped
# by readers).
_NOT_COMPARED = {"requests", "requests_by_time", "meta", "cluster_stats"}


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


class Log:
    def __init__(self, kv: KV | None = None) -> None:
        self.sm = StateMachine(kv or MemKV())
        self.index = 0

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        """One entry (an empty one when no command: it keeps the indexes in step with another log)."""
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        out = commands_pb2.BatchResult()
        out.ParseFromString(raw)
        return list(out.results)

    def one(self, cmd: Command) -> commands_pb2.CommandResult:
        (res,) = self.apply(cmd)
        return res

    def dump(self) -> dict[str, dict[bytes, bytes]]:
        with self.sm.kv.read() as txn:
            return {db: dict(txn.scan(db)) for db in DATABASES}


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def eid(n: int) -> str:
    return make_id(T0, (1000 + n).to_bytes(10, "big"))


def spec(name: str = "t", **kw: object) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 0 1 1 *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    for k, v in kw.items():
        if isinstance(v, dict):
            getattr(s, k).update(v)
        elif isinstance(v, common_pb2.Retention | common_pb2.RetryPolicy):
            getattr(s, k).CopyFrom(v)
        elif isinstance(v, list):
            getattr(s, k).extend(v)
        else:
            setattr(s, k, v)
    return s


def create(task: str, s: common_pb2.TaskSpec, at: int = T0) -> Command:
    return Command(stamped_at_ms=at, create_task=commands_pb2.CreateTask(task_id=task, spec=s))


def trigger(task: str, execution: str, at: int) -> Command:
    return Command(
        stamped_at_ms=at, trigger_task=commands_pb2.TriggerTask(task_id=task, execution_id=execution)
    )


def grant(execution: str, at: int) -> Command:
    return Command(
        stamped_at_ms=at, grant=commands_pb2.Grant(execution_id=execution, worker_id="w1", lease_ttl_ms=1000)
    )


def complete(
    execution: str, token: common_pb2.FencingToken, at: int, outcome: int = common_pb2.ATTEMPT_SUCCEEDED
) -> Command:
    result = common_pb2.AttemptResult(
        outcome=outcome, exit_code=0 if outcome == 1 else 3, stdout_tail=b"tail"
    )
    return Command(
        stamped_at_ms=at, complete=commands_pb2.Complete(execution_id=execution, token=token, result=result)
    )


def output(execution: str, token: common_pb2.FencingToken, at: int, data: bytes) -> Command:
    return Command(
        stamped_at_ms=at,
        append_output=commands_pb2.AppendOutput(execution_id=execution, token=token, stream=1, data=data),
    )


def delete(task: str, at: int, *, force: bool = False) -> Command:
    return Command(stamped_at_ms=at, delete_task=commands_pb2.DeleteTask(task_id=task, force=force))


def prune(at: int, *, max_deletes: int = 1000, max_visits: int = 1000, **defaults: int) -> Command:
    return Command(
        stamped_at_ms=at,
        prune=commands_pb2.Prune(
            defaults=commands_pb2.RetentionPolicy(**defaults), max_deletes=max_deletes, max_visits=max_visits
        ),
    )


def epoch() -> Command:
    return Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))


def run(log: Log, task: str, execution: str, at: int, *, ok: bool = True, out: bytes = b"") -> None:
    """Trigger, grant, (output,) complete one execution of `task` at `at`."""
    assert log.one(trigger(task, execution, at)).applied
    g = log.one(grant(execution, at + 1))
    assert g.applied, g.error
    if out:
        assert log.one(output(execution, g.execution.token, at + 2, out)).applied
    outcome = common_pb2.ATTEMPT_SUCCEEDED if ok else common_pb2.ATTEMPT_FAILED
    assert log.one(complete(execution, g.execution.token, at + 3, outcome)).applied


def task_of(log: Log, task: str) -> common_pb2.Task | None:
    with log.sm.kv.read() as txn:
        return sm.read_task(txn, task)


def executions_of(log: Log, task: str) -> list[str]:
    with log.sm.kv.read() as txn:
        return sorted(e.execution_id for e in sm.list_executions(txn, task, page_size=1000)[0])


def compared(dump: dict[str, dict[bytes, bytes]], *skip: str) -> dict[str, str]:
    """A digest per sub-database, except the ones a deletion may leave different."""
    out = {}
    for db, items in dump.items():
        if db in _NOT_COMPARED or db in skip:
            continue
        h = hashlib.sha256()
        for k in sorted(items):
            h.update(len(k).to_bytes(4, "big") + k + len(items[k]).to_bytes(4, "big") + items[k])
        out[db] = h.hexdigest()
    return out


# ------------------------------------------------------------------------------------ digest tests


def _two_tasks(log: Log, *, with_t2: bool) -> None:
    """A log where task 2 has everything that can name it (tags, a calendar, executions that succeeded
    and failed into the dead-letter queue, output logs, a pending and a buffered execution, a running
    one); entries of task 2 are left empty when `with_t2` is false."""

    def t2(*cmds: Command) -> list[commands_pb2.CommandResult]:
        return log.apply(*cmds) if with_t2 else log.apply()

    log.one(epoch())
    log.one(
        Command(
            stamped_at_ms=T0,
            put_calendar=commands_pb2.PutCalendar(
                calendar=common_pb2.Calendar(
                    name="hol",
                    exclude=[common_pb2.CalendarRule(dates=common_pb2.DateList(dates=["2026-12-25"]))],
                )
            ),
        )
    )
    log.one(create(tid(1), spec("one", tags={"team": "a"})))
    s2 = spec(
        "two",
        tags={"team": "a", "kind": "x"},
        retry=common_pb2.RetryPolicy(initial_backoff_ms=1),
        max_attempts=1,
        overlap=common_pb2.OVERLAP_BUFFER_ALL,
    )
    s2.schedule.calendars.append("hol")
    t2(create(tid(2), s2))
    run(log, tid(1), eid(1), T0 + 1000, out=b"one\n")
    if with_t2:
        run(log, tid(2), eid(2), T0 + 2000, out=b"two\n" * 100)
        run(log, tid(2), eid(3), T0 + 3000, ok=False)  # dead letter
    else:
        for _ in range(7):
            log.apply()
    run(log, tid(1), eid(4), T0 + 4000)
    t2(trigger(tid(2), eid(5), T0 + 5000))  # pending
    granted = t2(grant(eid(5), T0 + 5001))  # running
    if with_t2:
        assert granted[0].applied
        log.one(output(eid(5), granted[0].execution.token, T0 + 5002, b"live"))
    else:
        log.apply()
    t2(trigger(tid(2), eid(6), T0 + 6000))  # buffered behind the running one
    log.one(trigger(tid(1), eid(7), T0 + 7000))  # task 1 keeps a pending one


def test_a_deleted_task_leaves_nothing_behind(kv: KV) -> None:
    deleted = Log(kv)
    _two_tasks(deleted, with_t2=True)
    with deleted.sm.kv.read() as txn:
        assert sm.read_execution(txn, eid(3)).dead_lettered  # type: ignore[union-attr]
    refused = deleted.one(delete(tid(2), T0 + 8000))
    assert not refused.applied and refused.error_code == "running"
    assert eid(5) in refused.error and "force" in refused.error
    res = deleted.one(delete(tid(2), T0 + 8000, force=True))
    assert res.applied, res.error
    assert [c.execution_id for c in res.cancels] == [eid(5)]  # its worker is told to stop
    assert {e.execution_id for e in res.executions} == {eid(5), eid(6)}
    assert all(e.state == common_pb2.EXECUTION_CANCELLED for e in res.executions)
    assert res.tasks[0].spec.name == "two" and not res.task.state  # the leader drops it from its wheel
    assert res.pruned.executions == 4 and res.pruned.tasks == 1 and not res.pruned.more

    never = Log()
    _two_tasks(never, with_t2=False)
    never.apply()  # the delete's entry

    assert compared(deleted.dump()) == compared(never.dump())
    assert task_of(deleted, tid(2)) is None
    # Deleted again: not found, nothing changed.
    again = deleted.one(delete(tid(2), T0 + 9000))
    assert again.error_code == "not_found"


def test_executions_beyond_the_count_are_deleted_as_the_task_fires(kv: KV) -> None:
    """keep_executions 3: each new execution past the third deletes the oldest ended one at once; the
    store then equals one in which the first executions never existed (tasks aside: counters differ)."""
    keep = common_pb2.Retention(keep_executions=3)
    pruned = Log(kv)
    pruned.one(epoch())
    pruned.one(create(tid(1), spec(retention=keep)))
    for n in range(6):
        run(pruned, tid(1), eid(n), T0 + 1000 * (n + 1), out=b"x" * 10)
    assert executions_of(pruned, tid(1)) == [eid(3), eid(4), eid(5)]
    task = task_of(pruned, tid(1))
    assert task is not None and task.stored_executions == 3 and task.fire_count == 6

    never = Log()
    never.one(epoch())
    never.one(create(tid(1), spec(retention=keep)))
    for n in range(6):
        if n < 3:
            for _ in range(4):
                never.apply()
        else:
            run(never, tid(1), eid(n), T0 + 1000 * (n + 1), out=b"x" * 10)
    # The task's statistics outlive its pruned executions, as its counters do (raft.stats).
    kept = ("tasks", "task_stats_hours")
    assert compared(pruned.dump(), *kept) == compared(never.dump(), *kept)


# ---------------------------------------------------------------------------------------- by age


def test_executions_and_ledger_records_go_once_past_their_age(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    run(log, tid(1), eid(1), T0 + 1000)  # completed at T0 + 1003
    run(log, tid(1), eid(2), T0 + DAY)
    still = log.one(prune(T0 + 1003 + DAY - 1, execution_max_age_ms=DAY))
    assert still.pruned.executions == 0 and still.pruned.visited == 1
    # The sweep went round, and says when the next thing it saw becomes deletable (the execution).
    assert still.pruned.wrapped and still.pruned.next_ms == T0 + 1003 + DAY
    gone = log.one(prune(T0 + 1003 + DAY, execution_max_age_ms=DAY))
    assert gone.pruned.executions == 1 and not gone.pruned.more
    assert executions_of(log, tid(1)) == [eid(2)]
    with log.sm.kv.read() as txn:
        records = sm.ledger(txn, tid(1), 0, T0 + 2 * DAY, 100)
    assert [r.execution_id for r in records] == [eid(2)]  # the deleted execution's record went with it
    task = task_of(log, tid(1))
    assert task is not None and task.stored_executions == 1


def test_a_task_can_keep_more_than_the_default_or_everything(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))  # the defaults
    log.one(create(tid(2), spec(retention=common_pb2.Retention(keep_executions=-1, execution_max_age_ms=-1))))
    log.one(create(tid(3), spec(retention=common_pb2.Retention(keep_executions=2))))
    for n in range(3):
        for t in (1, 2, 3):
            run(log, tid(t), eid(10 * t + n), T0 + 1000 * (10 * t + n))
    res = log.one(prune(T0 + 60_000, keep_executions=1))
    assert res.pruned.executions == 2  # task 1 down to 1; task 3 was trimmed to its own 2 as it fired
    assert executions_of(log, tid(1)) == [eid(12)]
    assert executions_of(log, tid(2)) == [eid(20), eid(21), eid(22)]
    assert executions_of(log, tid(3)) == [eid(31), eid(32)]


def test_active_executions_are_never_pruned(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    log.one(trigger(tid(1), eid(1), T0 + 1000))
    assert log.one(grant(eid(1), T0 + 1001)).applied  # running, oldest
    run(log, tid(1), eid(2), T0 + 2000)
    run(log, tid(1), eid(3), T0 + 3000)
    res = log.one(prune(T0 + 10 * DAY, keep_executions=1, execution_max_age_ms=DAY))
    assert res.pruned.executions == 2
    assert executions_of(log, tid(1)) == [eid(1)]


def test_ended_tasks_are_deleted_after_their_retention(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    log.one(create(tid(2), spec()))
    log.one(create(tid(3), spec(retention=common_pb2.Retention(ended_task_max_age_ms=-1))))
    log.one(trigger(tid(2), eid(1), T0 + 10))
    assert log.one(grant(eid(1), T0 + 11)).applied  # task 2 still runs one when cancelled
    for t in (1, 2, 3):
        assert log.one(
            Command(stamped_at_ms=T0 + 100, cancel_task=commands_pb2.CancelTask(task_id=tid(t)))
        ).applied
    early = log.one(prune(T0 + 100 + DAY - 1, ended_task_max_age_ms=DAY))
    assert early.pruned.tasks == 0
    res = log.one(prune(T0 + 100 + DAY, ended_task_max_age_ms=DAY))
    assert res.pruned.tasks == 1
    assert task_of(log, tid(1)) is None
    assert task_of(log, tid(2)) is not None  # an execution is still active
    assert task_of(log, tid(3)) is not None  # kept forever


def test_logs_go_after_their_own_age_while_the_execution_stays(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    run(log, tid(1), eid(1), T0 + 1000, out=b"hello")
    res = log.one(prune(T0 + 1002 + DAY, log_max_age_ms=DAY))
    assert res.pruned.logs == 1 and res.pruned.executions == 0
    dump = log.dump()
    assert not dump["logs"] and not dump["logs_size"] and not dump["logs_by_time"]
    assert executions_of(log, tid(1)) == [eid(1)]


# ------------------------------------------------------------------------------------------ bounds


def test_a_prune_deletes_at_most_its_budget_and_the_next_one_goes_on(kv: KV) -> None:
    log = Log(kv)
    log.one(epoch())
    for t in range(4):
        log.one(create(tid(t), spec(f"t{t}")))
        for n in range(5):
            run(log, tid(t), eid(10 * t + n), T0 + 1000 * (10 * t + n))
    steps = []
    while True:
        res = log.one(prune(T0 + 10 * DAY, max_deletes=3, max_visits=2, execution_max_age_ms=DAY))
        steps.append(res.pruned.executions)
        assert res.pruned.executions <= 3 and res.pruned.visited <= 2
        if not res.pruned.more and sum(steps) == 20:
            break
        assert len(steps) < 50
    assert all(not executions_of(log, tid(t)) for t in range(4))


def test_a_long_history_is_deleted_over_several_commands(kv: KV, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "DELETE_TASK_BUDGET", 4)
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec()))
    for n in range(10):
        run(log, tid(1), eid(n), T0 + 1000 * (n + 1))
    res = log.one(delete(tid(1), T0 + DAY))
    assert res.applied and res.pruned.executions == 4 and res.pruned.more
    assert task_of(log, tid(1)) is None  # gone for readers at once
    first = log.one(prune(T0 + DAY, max_deletes=5))
    assert first.pruned.executions == 5 and first.pruned.more
    second = log.one(prune(T0 + DAY, max_deletes=5))
    assert second.pruned.executions == 1
    dump = log.dump()
    assert not dump["execs"] and not dump["fires"] and not dump["ledger"] and not dump["ledger_count"]
    assert not [k for k in dump["meta"] if k.startswith(retention.META_DOOMED)]


def test_the_same_log_leaves_the_same_store_in_memory_and_in_lmdb(tmp_path: Path) -> None:
    stores = [MemKV(), LmdbKV(tmp_path / "db", map_size=64 << 20)]
    dumps = []
    for store in stores:
        log = Log(store)
        _two_tasks(log, with_t2=True)
        log.one(delete(tid(2), T0 + 8000, force=True))
        log.one(prune(T0 + 30 * DAY, keep_executions=1, execution_max_age_ms=DAY, log_max_age_ms=DAY))
        dumps.append(log.dump())
        store.close()
    assert dumps[0] == dumps[1]


@pytest.mark.parametrize("fixes", [True, False])
def test_the_newest_executions_are_kept_while_older_ones_still_run(fixes: bool) -> None:
    """keep_executions keeps the newest N by nominal time, live or ended (docs/operations.md), with the
    feature schedule_fixes; before it, older runs still live made the newest ended ones go as they ended
    (seen on 3 real nodes: tests/integration/test_calendar_retention.py)."""
    fresh = features.SUPPORTED if fixes else features.SUPPORTED - {features.SCHEDULE_FIXES}
    log = Log()
    log.sm = StateMachine(MemKV(), fresh_features=fresh)
    log.one(epoch())
    log.one(create(tid(1), spec(retention=common_pb2.Retention(keep_executions=2))))
    held = {}
    for n in (1, 2):  # two older runs that go on running
        assert log.one(trigger(tid(1), eid(n), T0 + n * 1000)).applied
        g = log.one(grant(eid(n), T0 + n * 1000 + 1))
        assert g.applied, g.error
        held[n] = g.execution.token
    run(log, tid(1), eid(3), T0 + 3000)
    run(log, tid(1), eid(4), T0 + 4000)  # its fire trims the task
    if fixes:
        assert executions_of(log, tid(1)) == [eid(1), eid(2), eid(3), eid(4)]  # e3 is among the newest 2
    else:
        assert executions_of(log, tid(1)) == [eid(1), eid(2), eid(4)]  # the newest ended one went
    for n, token in held.items():
        assert log.one(complete(eid(n), token, T0 + 5000)).applied
    log.one(prune(T0 + 6000, keep_executions=2))
    if fixes:
        assert executions_of(log, tid(1)) == [eid(3), eid(4)]  # the newest two
    else:
        assert executions_of(log, tid(1)) == [eid(2), eid(4)]
