"""raft.stats.Batch (issue 16): an entry's outcomes counted in memory and written when it ends leave the
store byte for byte as counting each outcome at once, including hours trimmed from the window meanwhile,
tasks whose hour records are deleted, and rankings, whose result depends on the order of the updates."""

from __future__ import annotations

import random

import pytest

from cronraft import _native
from cronraft.proto.v1 import common_pb2
from cronraft.raft import features, stats
from cronraft.raft.codec import id_bytes, make_id
from cronraft.raft.kv import MemKV, Txn
from cronraft.raft.stats_hist import HistDelta

HOUR = stats.HOUR_MS
T0 = 1_767_225_600_000
STATES = (
    common_pb2.EXECUTION_SUCCEEDED,
    common_pb2.EXECUTION_SUCCEEDED,
    common_pb2.EXECUTION_FAILED,
    common_pb2.EXECUTION_TIMED_OUT,
    common_pb2.EXECUTION_LOST,
    common_pb2.EXECUTION_CANCELLED,
)


# How far the clock moves between two outcomes: spread over more hours than the window.
SPREAD = (0, 1_000, 61_000, HOUR // 2, 5 * HOUR, 0, 0, 0, 0, 0, 0, 0, 0, 90 * HOUR)


def _entries(
    seed: int, tasks_n: int = 12, steps: tuple[int, ...] = SPREAD
) -> list[list[tuple[str, common_pb2.Execution, bool]]]:
    """Entries of (kind, execution, task kept) steps: outcomes spread over more hours than the window,
    several per task and hour, and now and then a task's statistics dropped between two of them."""
    rnd = random.Random(seed)
    tasks = [make_id(T0, bytes([i]) * 10) for i in range(tasks_n)]
    out = []
    at = T0
    for _ in range(60):
        entry = []
        for _ in range(rnd.randrange(1, 40)):
            at += rnd.choice(steps)
            started = at - rnd.randrange(0, 600_000)
            ex = common_pb2.Execution(
                execution_id=make_id(at, rnd.randbytes(10)),
                task_id=rnd.choice(tasks),
                state=rnd.choice(STATES),
                nominal_time_ms=started - rnd.randrange(-5, 90_000),
                started_at_ms=started if rnd.random() < 0.9 else 0,
                finished_at_ms=started + rnd.randrange(0, 3 * 600_000),
                completed_at_ms=at,
                manual=rnd.random() < 0.1,
            )
            entry.append(("drop" if rnd.random() < 0.05 else "outcome", ex, rnd.random() < 0.9))
        out.append(entry)
    return out


def _apply(
    txn: Txn,
    entry: list[tuple[str, common_pb2.Execution, bool]],
    batched: bool,
    tasks: dict[str, common_pb2.Task],
) -> None:
    # As raft.state does: a batch per entry, written out before anything else touches the records. Each
    # task keeps its totals from one outcome to the next, as the stored task does (a dropped one: deleted).
    batch = stats.Batch() if batched else None
    for kind, ex, kept in entry:
        if kind == "drop":
            if batch is not None:
                batch.flush(txn)
            stats.drop_task(txn, id_bytes(ex.task_id))
            tasks.pop(ex.task_id, None)
            continue
        task = tasks.setdefault(ex.task_id, common_pb2.Task(task_id=ex.task_id)) if kept else None
        stats.record_outcome(txn, ex, task, batch)
    if batch is not None:
        batch.flush(txn)


def _stores(
    seed: int, tasks_n: int = 12, steps: tuple[int, ...] = SPREAD
) -> list[dict[str, dict[bytes, bytes]]]:
    """The store after `_entries(seed, tasks_n, steps)`, counted at once and batched."""
    stores = []
    for batched in (False, True):
        kv = MemKV()
        with kv.write() as txn:
            features.raise_level(txn, [features.STATS])
        tasks: dict[str, common_pb2.Task] = {}
        for entry in _entries(seed, tasks_n, steps):
            with kv.write() as txn:
                _apply(txn, entry, batched, tasks)
        stores.append(kv.dump())
    return stores


def test_a_batch_writes_what_counting_each_outcome_at_once_writes() -> None:
    for seed in range(5):
        stores = _stores(seed)
        assert stores[0]["cluster_stats"], "the workload counted something"
        assert len(stores[0]["cluster_stats"]) <= stats.WINDOW_HOURS  # hours were trimmed
        assert stores[0] == stores[1], f"seed {seed}"


def test_full_rankings_move_as_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """More tasks than a ranking holds: an outcome whose run is not longer than the slowest ranking's floor
    does not rank (the batch keeps the floor between outcomes: _ClusterDelta.slowest_floor), and the
    rankings are those of ranking every outcome (`_rank` decides alone), batched or not."""
    dense = (0, 0, 1_000, 61_000)  # a few hours
    for seed in range(3):
        stores = _stores(seed, tasks_n=3 * stats.TOP_K, steps=dense)
        hours = [stats.stats_pb2.ClusterHour.FromString(raw) for raw in stores[0]["cluster_stats"].values()]
        assert any(len(h.slowest) == stats.TOP_K for h in hours), "a full ranking"
        assert stores[0] == stores[1], f"seed {seed}"
        if _native.in_use():
            continue  # the patch below cannot reach compiled code: the pure suite checks it
        with monkeypatch.context() as m:
            m.setattr(stats, "_floor", lambda ranking: -1)
            assert _stores(seed, tasks_n=3 * stats.TOP_K, steps=dense) == stores, f"seed {seed}"


def test_a_batch_counts_nothing_without_the_feature() -> None:
    kv = MemKV()
    with kv.write() as txn:
        _apply(txn, _entries(1)[0], batched=True, tasks={})
    assert not kv.dump()["cluster_stats"]


def test_an_entrys_values_make_the_histogram_adding_them_one_by_one_makes() -> None:
    # HistDelta counts an entry's values per bucket and adds the counts: the same bytes as hist_add of
    # each value as it came, into an empty or a filled histogram, negative values (stored as 0) included.
    rnd = random.Random(16)
    for _ in range(400):

        def value() -> int:
            if rnd.random() < 0.5:
                return rnd.choice([-3, 0, 0, 1, 5, 7, 8, 9, 15, 16, 1_000])
            return rnd.randrange(-10, 10 ** rnd.randrange(1, 9))

        start = stats.Histogram()
        for _ in range(rnd.choice([0, 0, 1, 5, 30])):
            stats.hist_add(start, value())
        values = [value() for _ in range(rnd.choice([1, 2, 10, 33, 200]))]
        one_by_one, merged = stats.Histogram(), stats.Histogram()
        one_by_one.CopyFrom(start)
        merged.CopyFrom(start)
        for v in values:
            stats.hist_add(one_by_one, v)
        delta = HistDelta()
        delta.values.extend(values)
        delta.merge_into(merged)
        assert merged.SerializeToString() == one_by_one.SerializeToString(), (start, values)
