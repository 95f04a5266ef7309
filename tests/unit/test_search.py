"""Search (raft.search) over the indexes apply keeps (raft.records): every query's pages, walked to the
end with small pages and a small scan budget, give exactly what a full scan finds; the indexes equal what
a rebuild from the records gives after a history of every kind of change; a store without them answers
the same."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import TypeVar

import pytest

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import search
from cronraft.raft.codec import id_bytes, id_text, u64
from cronraft.raft.firing import due_of
from cronraft.raft.records import (
    META_INDEXED,
    TERMINAL_STATES,
    kind_code,
    name_key,
    namespace_key,
    worker_key,
    worker_of,
)
from cronraft.raft.validate import stored_namespace
from tests.unit.statelog import (
    HOUR,
    T0,
    Command,
    Log,
    complete,
    create,
    eid,
    epoch,
    grant,
    spec,
    tid,
    trigger,
)

_T = TypeVar("_T")
S = common_pb2
WORKERS = ("w1", "w2", "w3")
SCHEDULES = {
    "cron": S.Schedule(cron=S.CronSchedule(expression="*/5 * * * *")),
    "at": S.Schedule(at=S.AtSchedule(at_ms=T0 + 48 * HOUR)),
    "fixed_rate": S.Schedule(fixed_rate=S.FixedRateSchedule(period_ms=7 * 60_000)),
    "fixed_delay": S.Schedule(fixed_delay=S.FixedDelaySchedule(delay_ms=11 * 60_000)),
}


def _history(seed: int = 1, tasks: int = 24, runs: int = 160) -> Log:
    """Tasks of every kind in two namespaces with tags, and executions that succeed, fail, time out,
    retry, get cancelled, stay pending or running, and are redriven; a task deleted, a pause."""
    rnd = random.Random(seed)
    log = Log()
    log.ok(epoch())
    for n in range(1, tasks + 1):
        kind = list(SCHEDULES)[n % 4]
        s = spec(
            f"{'etl' if n % 3 else 'report'}-{n:03d}",
            schedule=SCHEDULES[kind],
            tags={"team": "a" if n % 2 else "b", **({"tier": "gold"} if n % 5 == 0 else {})},
            namespace="ops" if n % 3 == 1 else "",
        )
        if n % 6 == 0:
            s.retry.CopyFrom(S.RetryPolicy(initial_backoff_ms=1))
            s.max_attempts = 2
        log.ok(create(tid(n), s, at=T0 + n))
    at = T0 + HOUR
    for r in range(runs):
        at += rnd.randrange(1, 90_000)
        task = tid(rnd.randrange(1, tasks + 1))
        ex = eid(r, at)
        if not log.one(trigger(task, ex, at)).applied:
            continue
        roll = rnd.random()
        if roll < 0.1:
            continue  # stays pending
        if roll < 0.15:
            log.ok(
                Command(stamped_at_ms=at + 1, cancel_execution=commands_pb2.CancelExecution(execution_id=ex))
            )
            continue
        g = log.ok(grant(ex, at + 1, rnd.choice(WORKERS)))
        if roll < 0.25:
            continue  # stays running
        outcome = rnd.choice([S.ATTEMPT_SUCCEEDED] * 3 + [S.ATTEMPT_FAILED, S.ATTEMPT_TIMED_OUT])
        end = at + 2 + rnd.randrange(0, 50_000)
        res = log.ok(complete(ex, g.execution.token, end, outcome, started=at + 2, finished=end))
        if res.execution.state == S.EXECUTION_PENDING and rnd.random() < 0.8:  # its retry runs
            g = log.ok(grant(ex, end + 10, rnd.choice(WORKERS)))
            again = rnd.choice([S.ATTEMPT_SUCCEEDED, S.ATTEMPT_FAILED])  # failed: a dead letter
            log.ok(complete(ex, g.execution.token, end + 20, again, started=end + 11, finished=end + 19))
    dead = _keys(log, "dlq")[:2]
    assert dead
    for key in dead:
        log.ok(
            Command(
                stamped_at_ms=at + 5,
                redrive_dead_letters=commands_pb2.RedriveDeadLetters(execution_ids=[id_text(key)]),
            )
        )
    log.ok(Command(stamped_at_ms=at + 6, delete_task=commands_pb2.DeleteTask(task_id=tid(7), force=True)))
    log.ok(Command(stamped_at_ms=at + 7, pause_task=commands_pb2.PauseTask(task_id=tid(9))))
    return log


def _keys(log: Log, db: str) -> list[bytes]:
    with log.sm.kv.read() as txn:
        return [k for k, _ in txn.scan(db)]


def _everything(log: Log) -> tuple[list[S.Task], list[S.Execution]]:
    with log.sm.kv.read() as txn:
        tasks = [S.Task.FromString(v) for _, v in txn.scan("tasks")]
        execs = [S.Execution.FromString(v) for _, v in txn.scan("execs")]
    return tasks, execs


@pytest.fixture(scope="module")
def history() -> Log:
    return _history()


def test_the_indexes_equal_a_rebuild_from_the_records(history: Log) -> None:
    tasks, execs = _everything(history)
    want: dict[str, set[tuple[bytes, bytes]]] = {
        db: set()
        for db in (
            "tasks_by_kind",
            "tasks_by_name",
            "tasks_by_outcome",
            "execs_by_state",
            "execs_by_worker",
            "execs_ended",
            "tasks_by_namespace",
            "execs_by_namespace",
        )
    }
    for t in tasks:
        t16 = id_bytes(t.task_id)
        want["tasks_by_kind"].add((bytes([kind_code(t)]) + t16, b""))
        want["tasks_by_name"].add((name_key(t.spec.name, t16), b""))
        want["tasks_by_namespace"].add((namespace_key(t.spec.namespace, t16), b""))
        if t.last_outcome:
            want["tasks_by_outcome"].add((bytes([t.last_outcome]) + t16, b""))
    for e in execs:
        e16, t16 = id_bytes(e.execution_id), id_bytes(e.task_id)
        want["execs_by_state"].add((bytes([e.state]) + e16, t16))
        want["execs_by_namespace"].add((namespace_key(e.namespace, e16), t16))
        if worker_of(e):
            want["execs_by_worker"].add((worker_key(worker_of(e), e16), t16))
        if e.state in TERMINAL_STATES:
            want["execs_ended"].add((u64(e.completed_at_ms) + e16, bytes([e.state]) + t16))
    with history.sm.kv.read() as txn:
        for db, entries in want.items():
            assert set(txn.scan(db)) == entries, db
    states = {e.state for e in execs}
    assert {S.EXECUTION_PENDING, S.EXECUTION_RUNNING, S.EXECUTION_SUCCEEDED, S.EXECUTION_FAILED} <= states
    assert any(len({a.worker_id for a in e.attempts}) > 1 for e in execs)  # retried on another worker


def _all_pages(fetch: Callable[[str], tuple[list[_T], str]]) -> list[_T]:
    out: list[_T] = []
    token = ""
    for _ in range(10_000):
        page, token = fetch(token)
        out.extend(page)
        if not token:
            return out
    raise AssertionError("paging never ended")


def _exec_queries(tasks: list[S.Task]) -> list[search.ExecutionQuery]:
    Q = search.ExecutionQuery
    mid = T0 + HOUR + HOUR // 2
    return [
        Q(),
        Q(states=frozenset({S.EXECUTION_FAILED})),
        Q(states=frozenset({S.EXECUTION_FAILED, S.EXECUTION_TIMED_OUT, S.EXECUTION_RUNNING})),
        Q(task_id=tasks[3].task_id),
        Q(task_id=tasks[3].task_id, states=frozenset({S.EXECUTION_SUCCEEDED})),
        Q(worker_id="w2"),
        Q(worker_id="w2", states=frozenset({S.EXECUTION_SUCCEEDED}), since_ms=mid),
        Q(tags=(("team", "a"),)),
        Q(tags=(("team", "a"), ("tier", "gold"))),
        Q(namespace="ops"),
        Q(namespace="default"),
        Q(namespace="ops", tags=(("team", "b"),), since_ms=T0 + HOUR + HOUR // 2),
        Q(namespace="default", states=frozenset({S.EXECUTION_PENDING})),
        Q(since_ms=mid, until_ms=mid + HOUR),
        Q(since_ms=mid, by_completed=True),
        Q(since_ms=mid, until_ms=mid + 2 * HOUR, by_completed=True, states=frozenset({S.EXECUTION_FAILED})),
        Q(by_completed=True, worker_id="w1", namespace="ops"),
        Q(worker_id="nobody"),
    ]


def _exec_matches(e: S.Execution, q: search.ExecutionQuery, tasks: dict[str, S.Task]) -> bool:
    t = tasks.get(e.task_id)
    if q.task_id and e.task_id != q.task_id:
        return False
    if q.states and e.state not in q.states:
        return False
    if q.worker_id and worker_of(e) != q.worker_id:
        return False
    if q.tags and (t is None or any(t.spec.tags.get(k) != v for k, v in q.tags)):
        return False
    if q.namespace is not None and (
        t is None or stored_namespace(t.spec.namespace) != stored_namespace(q.namespace)
    ):
        return False
    at = e.completed_at_ms if q.by_completed else e.fired_at_ms
    if q.by_completed and e.state not in TERMINAL_STATES:
        return False
    return not ((q.since_ms and at < q.since_ms) or (q.until_ms and at >= q.until_ms))


def _exec_order(q: search.ExecutionQuery, with_indexes: bool) -> Callable[[S.Execution], tuple[int, bytes]]:
    if q.task_id:
        return lambda e: (-e.nominal_time_ms, b"")
    if q.by_completed and with_indexes:
        return lambda e: (-e.completed_at_ms, bytes(255 - b for b in id_bytes(e.execution_id)))
    return lambda e: (0, bytes(255 - b for b in id_bytes(e.execution_id)))


@pytest.mark.parametrize("indexes", [True, False], ids=["indexed", "fallback"])
def test_every_execution_query_pages_through_exactly_what_matches(history: Log, indexes: bool) -> None:
    tasks, execs = _everything(history)
    by_id = {t.task_id: t for t in tasks}
    log = history
    if not indexes:
        log = Log()
        with history.sm.kv.read() as txn, log.sm.kv.write() as copy:
            for db in ("meta", "tasks", "execs", "fires", "tasks_by_tag"):
                for k, v in txn.scan(db):
                    copy.put(db, k, v)
            copy.delete("meta", META_INDEXED)
    for q in _exec_queries(tasks):
        want = sorted((e for e in execs if _exec_matches(e, q, by_id)), key=_exec_order(q, indexes))
        for size, scan in ((3, 7), (1000, search.EXEC_SCAN_LIMIT)):
            with log.sm.kv.read() as txn:
                got = _all_pages(
                    lambda tok, txn=txn, q=q, size=size, scan=scan: search.search_executions(
                        txn, q, page_size=size, page_token=tok, scan_limit=scan
                    )
                )
            assert [e.execution_id for e in got] == [e.execution_id for e in want], (q, size)
        if q == search.ExecutionQuery(states=frozenset({S.EXECUTION_FAILED})):
            assert want  # the history has some of each


def _task_queries() -> list[search.TaskQuery]:
    Q = search.TaskQuery
    return [
        Q(),
        Q(kind="cron"),
        Q(kind="fixed_delay", namespace="ops"),
        Q(name_prefix="report-"),
        Q(name_prefix="etl-01", tags=(("team", "a"),)),
        Q(tags=(("tier", "gold"),)),
        Q(last_outcomes=frozenset({S.EXECUTION_FAILED, S.EXECUTION_TIMED_OUT})),
        Q(last_outcomes=frozenset({S.EXECUTION_SUCCEEDED}), kind="at"),
        Q(next_before_ms=T0 + 2 * HOUR),
        Q(next_after_ms=T0 + 10 * HOUR, next_before_ms=T0 + 100 * HOUR),
        Q(state=S.TASK_PAUSED),
        Q(namespace="default", state=S.TASK_SCHEDULED),
        Q(namespace="ops"),
        Q(namespace="ops", kind="fixed_delay", last_outcomes=frozenset({S.EXECUTION_SUCCEEDED})),
    ]


def _task_matches(t: S.Task, q: search.TaskQuery) -> bool:
    due = due_of(t) if t.state == S.TASK_SCHEDULED else 0
    return not (
        (q.state and t.state != q.state)
        or (q.name_prefix and not t.spec.name.startswith(q.name_prefix))
        or (q.namespace is not None and stored_namespace(t.spec.namespace) != stored_namespace(q.namespace))
        or any(t.spec.tags.get(k) != v for k, v in q.tags)
        or (q.kind and t.spec.schedule.WhichOneof("kind") != q.kind)
        or (q.last_outcomes and t.last_outcome not in q.last_outcomes)
        or (
            q.next_window
            and (not due or due < q.next_after_ms or (q.next_before_ms and due >= q.next_before_ms))
        )
    )


def _task_order(q: search.TaskQuery, with_indexes: bool) -> Callable[[S.Task], tuple[object, ...]]:
    plan = search.task_plan(q, with_indexes=with_indexes)
    if plan == "due":
        return lambda t: (due_of(t), id_bytes(t.task_id))
    if plan == "name":
        return lambda t: (t.spec.name.encode(), id_bytes(t.task_id))
    return lambda t: (id_bytes(t.task_id),)


@pytest.mark.parametrize("indexes", [True, False], ids=["indexed", "fallback"])
def test_every_task_query_pages_through_exactly_what_matches(history: Log, indexes: bool) -> None:
    tasks, _ = _everything(history)
    log = history
    if not indexes:
        log = Log()
        with history.sm.kv.read() as txn, log.sm.kv.write() as copy:
            for db in ("meta", "tasks", "due", "tasks_by_tag", "tasks_by_state"):
                for k, v in txn.scan(db):
                    copy.put(db, k, v)
            copy.delete("meta", META_INDEXED)
    nonempty = 0
    for q in _task_queries():
        want = sorted((t for t in tasks if _task_matches(t, q)), key=_task_order(q, indexes))
        nonempty += bool(want)
        for size, scan in ((2, 5), (1000, search.SCAN_LIMIT)):
            with log.sm.kv.read() as txn:
                got = _all_pages(
                    lambda tok, txn=txn, q=q, size=size, scan=scan: search.search_tasks(
                        txn, q, page_size=size, page_token=tok, scan_limit=scan
                    )
                )
            assert [t.task_id for t in got] == [t.task_id for t in want], (q, size)
    assert nonempty >= len(_task_queries()) - 1


def test_a_selective_query_reads_few_index_entries(history: Log) -> None:
    """With its index, a query whose first page is full reads about a page of entries, not the store."""
    with history.sm.kv.read() as txn:
        page, token = search.search_executions(
            txn, search.ExecutionQuery(states=frozenset({S.EXECUTION_FAILED})), page_size=3, scan_limit=3
        )
        assert len(page) == 3 and token
        page, token = search.search_tasks(txn, search.TaskQuery(kind="cron"), page_size=2, scan_limit=2)
        assert len(page) == 2 and token


def test_bad_tokens_and_kinds_are_refused_naming_the_field(history: Log) -> None:
    with history.sm.kv.read() as txn:
        for q, token in itertools.product(
            [search.ExecutionQuery(by_completed=True), search.ExecutionQuery(task_id=tid(1))], ["zzz", "c12"]
        ):
            with pytest.raises(InvalidArgument) as e:
                search.search_executions(txn, q, page_token=token)
            assert e.value.field == "page_token"
        with pytest.raises(InvalidArgument) as e:
            search.search_tasks(txn, search.TaskQuery(kind="hourly"))
        assert e.value.field == "kind" and "cron" in str(e.value)
        with pytest.raises(InvalidArgument) as e:
            search.search_tasks(txn, search.TaskQuery(next_before_ms=T0), page_token=tid(1))
        assert e.value.field == "page_token"
