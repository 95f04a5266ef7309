"""Statistics kept by apply (raft.stats): the histogram maths, a task's figures after known runs, the
window of hours, the cluster's throughput and rankings, and cleanup with the task."""

from __future__ import annotations

import random

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2, stats_pb2
from cronraft.raft import stats
from cronraft.raft.codec import id_bytes
from cronraft.raft.state import read_task
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
    run,
    spec,
    tid,
)

FAILED = common_pb2.ATTEMPT_FAILED
TIMED_OUT = common_pb2.ATTEMPT_TIMED_OUT


# ------------------------------------------------------------------------------------------ histograms


def test_buckets_cover_every_value_once_and_in_order() -> None:
    previous_high = 0
    for b in range(0, 400):
        lo, hi = stats.bucket_bounds(b)
        assert lo == previous_high and hi > lo  # contiguous, no gap, no overlap
        assert stats.bucket_of(lo) == b and stats.bucket_of(hi - 1) == b
        assert hi - lo <= max(1, lo // 8)  # at most 1/8 of its lower bound wide
        previous_high = hi
    assert stats.bucket_of(-5) == 0
    assert stats.bucket_of(2**62) < 500


def test_quantiles_are_within_a_sixteenth_of_the_true_value() -> None:
    rnd = random.Random(7)
    values = [int(rnd.lognormvariate(8, 2)) for _ in range(5_000)]
    h = stats_pb2.Histogram()
    for v in values:
        stats.hist_add(h, v)
    values.sort()
    for per_mille in (500, 950, 990):
        true = values[-(-per_mille * len(values) // 1000) - 1]
        assert abs(stats.quantile(h, per_mille) - true) <= true / 16 + 1
    assert h.max_ms == values[-1] and h.min_ms == values[0] and h.samples == len(values)
    assert len(h.buckets) < 200  # sparse


def test_merged_histograms_equal_one_fed_everything() -> None:
    rnd = random.Random(3)
    a, b, both = stats_pb2.Histogram(), stats_pb2.Histogram(), stats_pb2.Histogram()
    for i in range(1_000):
        v = rnd.randrange(0, 10**7)
        stats.hist_add(a if i % 3 else b, v)
        stats.hist_add(both, v)
    stats.hist_merge(a, b)
    assert a == both


def test_an_hours_ranking_is_exact() -> None:
    """Values only grow within an hour: the kept TOP_K are the true top, whatever the order of updates."""
    rnd = random.Random(11)
    ranking = stats_pb2.ClusterHour().most_failures
    true: dict[str, int] = {}
    for _ in range(5_000):
        task = f"t{rnd.randrange(60)}"
        true[task] = true.get(task, 0) + rnd.randrange(1, 4)
        stats._rank(ranking, task, true[task])
    kept = [(r.task_id, r.value) for r in ranking]
    assert len(kept) == stats.TOP_K
    assert [v for _, v in kept] == sorted(true.values(), reverse=True)[: stats.TOP_K]
    assert all(true[t] == v for t, v in kept)


# ------------------------------------------------------------------------------------- through apply


def _setup(*names: str) -> Log:
    log = Log()
    log.ok(epoch())
    for i, name in enumerate(names, start=1):
        log.ok(create(tid(i), spec(name)))
    return log


def _task_stats(log: Log, task: str, *, since: int = 0, now: int = T0 + HOUR) -> stats_pb2.TaskStats:
    with log.sm.kv.read() as txn:
        t = read_task(txn, task)
        assert t is not None
        return stats.task_stats(txn, t, since_ms=since, now_ms=now)


def test_a_tasks_counts_rates_durations_and_last_outcome_are_exact() -> None:
    log = _setup("a")
    durations = [100, 200, 300, 400, 5_000]
    for n, d in enumerate(durations):
        run(log, tid(1), eid(n), T0 + 60_000 * n, duration=d)
    run(log, tid(1), eid(10), T0 + 600_000, outcome=FAILED, duration=50)
    run(log, tid(1), eid(11), T0 + 660_000, outcome=TIMED_OUT, duration=7_000)
    s = _task_stats(log, tid(1))
    assert (s.window.runs, s.window.succeeded, s.window.failed, s.window.timed_out) == (7, 5, 1, 1)
    assert s.total == s.window
    assert s.success_rate == pytest.approx(5 / 7) and s.failure_rate == pytest.approx(2 / 7)
    assert s.duration.samples == 7 and s.duration.max_ms == 7_000 and s.duration.min_ms == 50
    assert s.duration.p50_ms == pytest.approx(300, rel=1 / 16)
    assert s.duration.mean_ms == sum([*durations, 50, 7_000]) // 7
    assert s.last_outcome == common_pb2.EXECUTION_TIMED_OUT and s.last_execution_id == eid(11)
    assert s.last_outcome_at_ms == T0 + 660_000 + 2 + 7_000
    assert not s.lateness.samples  # triggered: no nominal time to be late for
    with log.sm.kv.read() as txn:
        task = read_task(txn, tid(1))
    assert task is not None and task.last_outcome == common_pb2.EXECUTION_TIMED_OUT
    assert task.outcomes == s.total and task.last_execution_id == eid(11)


def test_a_cancelled_execution_counts_apart_from_successes_and_failures() -> None:
    log = _setup("a")
    run(log, tid(1), eid(1), T0)
    log.ok(
        Command(
            stamped_at_ms=T0 + 10,
            trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=eid(2)),
        )
    )
    log.ok(Command(stamped_at_ms=T0 + 20, cancel_execution=commands_pb2.CancelExecution(execution_id=eid(2))))
    s = _task_stats(log, tid(1))
    assert (s.window.runs, s.window.succeeded, s.window.cancelled) == (2, 1, 1)
    assert (s.success_rate, s.failure_rate) == (0.5, 0.0)
    assert s.duration.samples == 1  # the cancelled one never ran


def test_lateness_runs_from_the_nominal_time_to_the_first_start() -> None:
    log = Log()
    log.ok(epoch())
    every_minute = common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *"))
    log.ok(create(tid(1), spec("a", schedule=every_minute), at=T0 - 1))
    for n, late in enumerate([5, 80, 1_200]):
        with log.sm.kv.read() as txn:
            task = read_task(txn, tid(1))
        assert task is not None
        nominal = task.next_fire_ms
        fire = commands_pb2.Fire(task_id=tid(1), nominal_time_ms=nominal, execution_id=eid(n, nominal))
        log.ok(Command(stamped_at_ms=nominal, fire=fire))
        g = log.ok(grant(eid(n, nominal), nominal + 1))
        start = nominal + late
        log.ok(complete(eid(n, nominal), g.execution.token, start + 10, started=start, finished=start + 9))
    s = _task_stats(log, tid(1), now=T0 + 300_000)
    assert s.lateness.samples == 3 and s.lateness.max_ms == 1_200 and s.lateness.min_ms == 5
    assert s.lateness.p50_ms == pytest.approx(80, rel=1 / 16)


def test_the_window_is_whole_hours_and_a_week_at_most_is_kept() -> None:
    log = _setup("a")
    for h in range(200):
        run(log, tid(1), eid(h, T0 + h * HOUR), T0 + h * HOUR, outcome=FAILED if h % 2 else 1)
    now = T0 + 199 * HOUR + 100
    with log.sm.kv.read() as txn:
        hours = list(txn.scan("task_stats_hours", id_bytes(tid(1)), id_bytes(tid(1)) + b"\xff" * 9))
        clusters = [k for k, _ in txn.scan("cluster_stats")]
    assert len(hours) == stats.WINDOW_HOURS and len(clusters) == stats.WINDOW_HOURS
    last3 = _task_stats(log, tid(1), since=now - 2 * HOUR - 200, now=now)
    assert last3.since_ms == T0 + 196 * HOUR and last3.until_ms == T0 + 200 * HOUR
    assert last3.window.runs == 4  # hours 196 to 199, whole
    week = _task_stats(log, tid(1), since=0, now=now)
    assert week.window.runs == stats.WINDOW_HOURS
    assert week.total.runs == 200 and week.total.failed == 100  # totals are never trimmed


def test_cluster_throughput_and_rankings() -> None:
    log = _setup("steady", "flaky", "slow")
    n = 0
    for minute in range(5):
        at = T0 + minute * 60_000
        for k in range(minute + 1):  # 1, 2, 3, 4, 5 finishes per minute
            n += 1
            run(log, tid(1), eid(n, at), at + 100 * k, duration=10)
    for k in range(3):
        n += 1
        run(log, tid(2), eid(n), T0 + 1000 * k, outcome=FAILED, duration=20)
    n += 1
    run(log, tid(3), eid(n), T0 + 5_000, duration=90_000)
    now = T0 + 5 * 60_000 + 1
    with log.sm.kv.read() as txn:
        c = stats.cluster_stats(txn, since_ms=T0, now_ms=now, limit=5)
    assert c.window.runs == 15 + 3 + 1 and c.window.failed == 3
    assert len(c.throughput) == stats.THROUGHPUT_MINUTES
    assert [p.failures for p in c.throughput[-6:]] == [3, 0, 0, 0, 0, 0]
    assert [p.runs for p in c.throughput[-6:]] == [1 + 3, 2 + 1, 3, 4, 5, 0]  # the slow run ends in minute 1
    assert c.throughput[-1].minute_ms == T0 + 5 * 60_000
    assert [s.task_id for s in c.top_failing] == [tid(2)] and c.top_failing[0].window.failed == 3
    assert [s.task_id for s in c.slowest][:1] == [tid(3)] and c.slowest[0].duration.max_ms == 90_000
    assert c.slowest[0].name == "slow"
    assert c.duration.max_ms == 90_000 and c.failure_rate == pytest.approx(3 / 19)


def test_a_deleted_task_takes_its_statistics_along() -> None:
    log = _setup("a", "b")
    for h in range(3):
        run(log, tid(1), eid(h), T0 + h * HOUR, outcome=FAILED)
    run(log, tid(2), eid(9), T0)
    log.ok(Command(stamped_at_ms=T0 + 4 * HOUR, delete_task=commands_pb2.DeleteTask(task_id=tid(1))))
    with log.sm.kv.read() as txn:
        assert not list(txn.scan("task_stats_hours", id_bytes(tid(1)), id_bytes(tid(2))))
        assert list(txn.scan("task_stats_hours", id_bytes(tid(2))))
        c = stats.cluster_stats(txn, since_ms=T0, now_ms=T0 + 4 * HOUR)
    assert c.window.runs == 4  # what happened cluster-wide stays counted
    assert not c.top_failing  # the ranked task is gone: skipped


def test_two_replicas_store_identical_statistics() -> None:
    logs = [_setup("a", "b"), _setup("a", "b")]
    rnd = random.Random(5)
    plan = [(rnd.randrange(1, 3), rnd.choice([1, 2, 3]), rnd.randrange(1, 10**6)) for _ in range(50)]
    for log in logs:
        for n, (task, outcome, duration) in enumerate(plan):
            run(log, tid(task), eid(n), T0 + n * 100_000, outcome=outcome, duration=duration)
    dumps = []
    for log in logs:
        with log.sm.kv.read() as txn:
            dumps.append({db: dict(txn.scan(db)) for db in ("tasks", "task_stats_hours", "cluster_stats")})
    assert dumps[0] == dumps[1]
