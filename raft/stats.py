"""Statistics of executions, per task and cluster-wide, kept incrementally by apply (issue 15).

When an execution reaches its final state (`commands.executions.finish`, the one place that sets one),
`record_outcome` adds it to these records (proto/v1/stats.proto), never recomputed from the history
(retention deletes executions; the statistics outlive them):

- its task's totals, in the Task itself (`outcomes`, `last_outcome`, `last_execution_id`; the task is
  rewritten by `finish` anyway, so they cost no extra record);
- its task's hour, `task_stats_hours`: task16 + hour8 -> StatsHour: the outcome counts of that hour and
  two histograms, the run's duration and its lateness (nominal time to the start of its first attempt
  that began; scheduled executions only);
- the cluster's hour, `cluster_stats`: hour8 -> ClusterHour (outcome counts, the two histograms, the
  executions ended in each of its minutes, and the rankings below).

A task keeps at most WINDOW_HOURS hours (older ones are deleted when a newer one is written, and all of
them with the task: `drop_task`), and so does the cluster. So a reader's
window (`--since`) is whole hours, at most WINDOW_HOURS of them, and every read is bounded: a task's
figures merge at most WINDOW_HOURS records; the cluster's merge at most WINDOW_HOURS records plus the
candidates of the rankings below.

**Histograms** (`stats_hist`: the durations and lateness) and **outcome counts** (`stats_counts`) are
the maths of one record; both are re-exported here.

**Cluster-wide rankings** (top failing, slowest) are kept incrementally, not computed by walking the
tasks (a read must not visit a million task records): each cluster hour keeps the TOP_K tasks with the
most failures in that hour and with the longest run in that hour. Both values only grow within an hour,
so each hour's ranking is exact (a task outside it has at most its smallest value: it was below it when
last updated, and the smallest only grows). Over a window of several hours, `cluster_stats` takes the
union of the hours' rankings as candidates, scores them from the rankings (failures summed over the hours
where ranked, the longest run in them), and computes the exact figures over the window of the best
scored (CANDIDATES_PER_RANK per place asked for) from their own hour records; a task that never made an
hour's ranking, or scored below those, is missed (approximate across hours, by design). A ranking may
name a task deleted since: readers skip it.

Deterministic: the times are the execution's own (`completed_at_ms`, stamped by the leader; the start
and finish its worker reported); readers take `now_ms` from their caller. No clock is read here.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message

from cronraft.proto.v1 import common_pb2, stats_pb2
from cronraft.raft import features
from cronraft.raft.codec import id_bytes, u64
from cronraft.raft.kv import Txn
from cronraft.raft.stats_counts import (
    FAILURE_STATES,
    HOUR_MS,
    MINUTE_MS,
    add_counts,
    count,
    duration_of,
    failures,
    hour_of,
    lateness_of,
    minute_of,
    rates,
)
from cronraft.raft.stats_hist import (
    HistDelta,
    bucket_bounds,
    bucket_of,
    hist_add,
    hist_merge,
    quantile,
    quantiles,
)

Execution = common_pb2.Execution
Task = common_pb2.Task
OutcomeCounts = common_pb2.OutcomeCounts
Histogram = stats_pb2.Histogram
_SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED

WINDOW_HOURS = 168  # a week of hours, per task and for the cluster
THROUGHPUT_MINUTES = 60  # the cluster's throughput is answered per minute over the last hour
TOP_K = 20  # tasks in each hour's rankings (and at most this many answered)
# A ranking's candidates over a window are scored from the hours' rankings; this many per place asked for
# get their exact figures computed (each reads at most WINDOW_HOURS records).
CANDIDATES_PER_RANK = 3

_M = TypeVar("_M", bound=Message)


# ------------------------------------------------------------------------------------------ writing


def _read(txn: Txn, db: str, key: bytes, message: type[_M]) -> _M:
    out = message()
    raw = txn.get(db, key)
    if raw is not None:
        out.ParseFromString(raw)
    return out


class _ClusterDelta:
    """One cluster hour within an entry: the stored record (its rankings kept up to date command by
    command, since a ranking depends on the order of its updates) and the order-free sums added to it when
    the entry ends."""

    __slots__ = (
        "duration",
        "lateness",
        "minute_failures",
        "minute_runs",
        "record",
        "slowest_floor",
        "states",
    )

    def __init__(self, record: stats_pb2.ClusterHour) -> None:
        self.record = record
        self.states: dict[int, int] = {}
        self.duration, self.lateness = HistDelta(), HistDelta()
        self.minute_runs: dict[int, int] = {}
        self.minute_failures: dict[int, int] = {}
        # `_floor(record.slowest)`, kept between the commands that leave the ranking as it is (most: a
        # task's longest run of the hour rarely makes it); None: read it again (`_rank` may have moved it).
        self.slowest_floor: int | None = None

    def apply(self) -> stats_pb2.ClusterHour:
        ch = self.record
        for state, n in self.states.items():
            count(ch.counts, state, n)
        self.duration.merge_into(ch.duration)
        self.lateness.merge_into(ch.lateness)
        if self.minute_runs and not ch.minute_runs:
            ch.minute_runs.extend([0] * 60)
            ch.minute_failures.extend([0] * 60)
        for minute, n in self.minute_runs.items():
            ch.minute_runs[minute] += n
        for minute, n in self.minute_failures.items():
            ch.minute_failures[minute] += n
        return ch


class Batch:
    """The statistics records one log entry touches, read once, kept in memory between its commands and
    written once when the entry ends (`flush`): an entry of 2,000 Completes reads, parses, serializes and
    writes the cluster's hour once instead of 2,000 times, and adds its histogram samples as integers.
    The stored bytes are those of writing each outcome as it came (`record_outcome` without a batch).

    The caller (raft.state) flushes before any command that may read or delete statistics records another
    way (`drop_task`, a feature raised) and uses no batch for those, nor when an entry is applied with
    savepoints (a command rolled back must take its counts with it)."""

    def __init__(self) -> None:
        self._tasks: dict[bytes, dict[int, stats_pb2.StatsHour]] = {}  # task16 -> hour -> record
        self._cluster: dict[int, _ClusterDelta] = {}  # hour -> record
        self._level: frozenset[str] | None = None
        self._meta: dict[bytes, bytes | None] = {}
        self._parsed: dict[bytes, Message] = {}

    def settled_meta(self, txn: Txn, key: bytes) -> bytes | None:
        """A `meta` record that no batched command writes (the epoch, the retention defaults, whether the
        search indexes are complete), read once per batch like the feature level."""
        try:
            return self._meta[key]
        except KeyError:
            raw = self._meta[key] = txn.get("meta", key)
            return raw

    def settled(self, txn: Txn, key: bytes, message: type[_M]) -> _M:
        """`settled_meta(key)` parsed as `message` (empty if absent), once per batch: every caller gets the
        same object, to read, never to change (the epoch of every Grant, the retention defaults of every
        Fire)."""
        try:
            out = self._parsed[key]
        except KeyError:
            out = self._parsed[key] = message()
            raw = self.settled_meta(txn, key)
            if raw is not None:
                out.ParseFromString(raw)
        assert isinstance(out, message)
        return out

    def has(self, txn: Txn, feature: str) -> bool:
        """Whether `feature` is in force (raft.features), read once per batch: no batched command raises
        the level."""
        if self._level is None:
            self._level = features.level(txn)
        return feature in self._level

    def task_hour(self, txn: Txn, task16: bytes, hour: int, *, fresh: bool = False) -> stats_pb2.StatsHour:
        """The task's record of `hour`; `fresh`: the task has none yet (`record_outcome`)."""
        hours = self._tasks.get(task16)
        if hours is None:  # the usual case: a task's first outcome in the batch
            hours = self._tasks[task16] = {}
        else:
            h = hours.get(hour)
            if h is not None:
                return h
        # (A new hour's `_trim` drops older ones from `hours`, through `forget`.)
        h = hours[hour] = _task_hour(txn, task16, hour, fresh=fresh, batch=self)
        return h

    def cluster_hour(self, txn: Txn, hour: int) -> _ClusterDelta:
        d = self._cluster.get(hour)
        if d is None:
            ch = _load_hour(
                txn,
                "cluster_stats",
                u64(hour),
                prefix=b"",
                hour=hour,
                message=stats_pb2.ClusterHour,
                batch=self,
            )
            d = self._cluster[hour] = _ClusterDelta(ch)
        return d

    def forget(self, db: str, prefix: bytes, before_ms: int) -> None:
        """Drop the records of `prefix` (a task16, or b"": the cluster) older than `before_ms`: `_trim`
        deleted them from the store."""
        hours = self._cluster if db == "cluster_stats" else self._tasks.get(prefix)
        if hours:
            for hour in [h for h in hours if h < before_ms]:
                del hours[hour]

    def flush(self, txn: Txn) -> None:
        # StatsHour and ClusterHour hold no map (codec.MAPLESS): serialized without `deterministic`, the
        # same bytes, cheaper.
        serialize = stats_pb2.StatsHour.SerializeToString  # from the class: cheaper than from each record
        for task16, hours in self._tasks.items():
            for hour, h in hours.items():
                txn.put("task_stats_hours", task16 + hour.to_bytes(8, "big"), serialize(h))
        for hour, d in self._cluster.items():
            txn.put("cluster_stats", u64(hour), d.apply().SerializeToString())
        self._tasks.clear()
        self._cluster.clear()
        self._level = None
        self._meta.clear()
        self._parsed.clear()


def _load_hour(
    txn: Txn, db: str, key: bytes, *, prefix: bytes, hour: int, message: type[_M], batch: Batch | None
) -> _M:
    """The stored hour record `key` (empty if none: then the oldest hour kept may go, `_trim`)."""
    raw = txn.get(db, key)
    if raw is None:  # a new hour: the oldest one kept may go
        _trim(txn, db, prefix, hour - (WINDOW_HOURS - 1) * HOUR_MS, batch)
        return message()
    return message.FromString(raw)  # a class's method: cheaper than looking one up on a message (upb)


def _task_hour(
    txn: Txn, task16: bytes, hour: int, *, fresh: bool, batch: Batch | None
) -> stats_pb2.StatsHour:
    """The task's stored record of `hour` (trimming older ones: `_load_hour`); `fresh`: the task never
    counted an outcome, so it has none to read."""
    if fresh:
        return stats_pb2.StatsHour()
    return _load_hour(
        txn,
        "task_stats_hours",
        task16 + u64(hour),
        prefix=task16,
        hour=hour,
        message=stats_pb2.StatsHour,
        batch=batch,
    )


def record_outcome(
    txn: Txn, ex: Execution, task: Task | None, batch: Batch | None = None, task16: bytes | None = None
) -> None:
    """Count `ex`, which just reached its final state at `ex.completed_at_ms` (see the module docstring).
    `task` is its task as the caller is about to store it (its totals are updated here), or None when
    the task was deleted meanwhile: then only the cluster's figures count it. Nothing is counted while
    the cluster's feature level lacks "stats" (raft.features: a rolling upgrade from a release without
    statistics), so that every replica counts from the same entry on. With `batch`, the hour records are
    written when the entry ends (`Batch`); without, at once. `task16`: the task's key bytes, when the
    caller has them."""
    if not (features.is_active(txn, features.STATS) if batch is None else batch.has(txn, features.STATS)):
        return
    # On the apply path of every execution that ends: each protobuf field is read once where it can be
    # (upb attribute reads are not free), and what only a failure needs is computed only for one.
    at = max(0, ex.completed_at_ms)
    hour = at - at % HOUR_MS  # hour_of(at)
    state = ex.state
    started, finished = ex.started_at_ms, ex.finished_at_ms
    duration = finished - started if started > 0 and finished >= started else None  # duration_of, inline
    lateness = None  # lateness_of(ex), inline with the start read above
    if not ex.manual and (nominal := ex.nominal_time_ms) > 0:
        if len(ex.attempts) > 1:  # retried: from the first attempt that began
            lateness = lateness_of(ex)
        elif started > 0:
            lateness = started - nominal if started > nominal else 0
    failed = state in FAILURE_STATES
    hour_failures = hour_longest = 0
    if task is not None:
        outcomes = task.outcomes
        # A task that never counted an outcome has no hour records (each one written here counted one in
        # `outcomes` too, `count`: every final state counts): none to read, none older to trim (a
        # one-time task's only execution, the burst of issue 16).
        counted = outcomes.runs
        fresh = not counted
        if state == _SUCCEEDED:  # count(outcomes, state) for the usual outcome, its runs read once
            outcomes.succeeded += 1
            outcomes.runs = counted + 1
        else:
            count(outcomes, state)
        task.last_outcome = state
        task.last_execution_id = ex.execution_id
        if task16 is None:
            task16 = id_bytes(ex.task_id)
        if batch is None:
            key = task16 + u64(hour)
            h = _task_hour(txn, task16, hour, fresh=fresh, batch=None)
        else:
            h = batch.task_hour(txn, task16, hour, fresh=fresh)
        hour_counts = h.counts
        count(hour_counts, state)
        if duration is not None:
            hd = h.duration
            hist_add(hd, duration)
            hour_longest = hd.max_ms
        if lateness is not None:
            hist_add(h.lateness, lateness)
        if batch is None:
            txn.put("task_stats_hours", key, h.SerializeToString(deterministic=True))
        if failed:  # only a failure moves the failures ranking (below)
            hour_failures = failures(hour_counts)

    minute = (at - hour) // MINUTE_MS
    d = None
    if batch is not None:
        d = batch.cluster_hour(txn, hour)
        states = d.states
        states[state] = states.get(state, 0) + 1
        if duration is not None:
            d.duration.values.append(duration)
        if lateness is not None:
            d.lateness.values.append(lateness)
        runs = d.minute_runs
        runs[minute] = runs.get(minute, 0) + 1
        if failed:
            d.minute_failures[minute] = d.minute_failures.get(minute, 0) + 1
        ch = d.record
    else:
        ch = _load_hour(
            txn, "cluster_stats", u64(hour), prefix=b"", hour=hour, message=stats_pb2.ClusterHour, batch=None
        )
        count(ch.counts, state)
        if duration is not None:
            hist_add(ch.duration, duration)
        if lateness is not None:
            hist_add(ch.lateness, lateness)
        if not ch.minute_runs:
            ch.minute_runs.extend([0] * 60)
            ch.minute_failures.extend([0] * 60)
        ch.minute_runs[minute] += 1
        if failed:
            ch.minute_failures[minute] += 1
    if task is not None:
        if failed:
            _rank(ch.most_failures, ex.task_id, hour_failures)
        if duration is not None:
            if d is None:
                floor = _floor(ch.slowest)
            else:
                known = d.slowest_floor
                floor = d.slowest_floor = _floor(ch.slowest) if known is None else known
            if hour_longest > floor:  # else `_rank` changes nothing
                _rank(ch.slowest, ex.task_id, hour_longest)
                if d is not None:
                    d.slowest_floor = None
    if batch is None:
        txn.put("cluster_stats", u64(hour), ch.SerializeToString(deterministic=True))


def _trim(txn: Txn, db: str, prefix: bytes, keep_from_ms: int, batch: Batch | None = None) -> None:
    """Delete the records of `prefix` older than `keep_from_ms`. Called when a new hour or minute record
    is about to be written, so only a handful are ever older."""
    if keep_from_ms <= 0:
        return
    doomed = [k for k, _ in txn.scan(db, prefix + u64(0), prefix + u64(keep_from_ms))]
    for k in doomed:
        txn.delete(db, k)
    if batch is not None:
        batch.forget(db, prefix, keep_from_ms)


def _floor(ranking: RepeatedCompositeFieldContainer[stats_pb2.RankedTask]) -> int:
    """The value a task must pass to enter a full ranking (its smallest); -1 while it is not full."""
    n = len(ranking)
    return ranking[n - 1].value if n >= TOP_K else -1


def _rank(ranking: RepeatedCompositeFieldContainer[stats_pb2.RankedTask], task_id: str, value: int) -> None:
    """Put `task_id` with `value` (which only grows) in a ranking, largest first, at most TOP_K long;
    among equal values the earlier entrant stays first."""
    n = len(ranking)
    if n >= TOP_K and value <= ranking[n - 1].value:
        return  # the common case, decided without looking further
    pos = next((i for i in range(n) if ranking[i].task_id == task_id), None)
    if pos is None:
        if n >= TOP_K:
            pos = n - 1  # the smallest makes room
        else:
            ranking.add()
            pos = n
    elif value <= ranking[pos].value:
        return
    # Move up past the smaller values, then put it there.
    while pos > 0 and ranking[pos - 1].value < value:
        ranking[pos].task_id = ranking[pos - 1].task_id
        ranking[pos].value = ranking[pos - 1].value
        pos -= 1
    ranking[pos].task_id = task_id
    ranking[pos].value = value


def drop_task(txn: Txn, task16: bytes) -> None:
    """Delete a task's hours of statistics (at most WINDOW_HOURS records; its totals are in its Task)."""
    doomed = [k for k, _ in txn.scan("task_stats_hours", task16, task16 + b"\xff" * 8 + b"\xff")]
    for k in doomed:
        txn.delete("task_stats_hours", k)


# ------------------------------------------------------------------------------------------ reading


def window(since_ms: int, now_ms: int) -> tuple[int, int]:
    """The window of whole hours a reader gets for `since_ms`: [start, end), start on the hour at or
    before `since_ms` but not before the oldest hour kept, end after the hour of `now_ms`."""
    end = hour_of(now_ms) + HOUR_MS
    oldest = end - WINDOW_HOURS * HOUR_MS
    return max(hour_of(since_ms), oldest, 0), end


def _task_window(txn: Txn, task16: bytes, start: int, end: int) -> tuple[OutcomeCounts, Histogram, Histogram]:
    counts, duration, lateness = OutcomeCounts(), Histogram(), Histogram()
    for _, raw in txn.scan("task_stats_hours", task16 + u64(start), task16 + u64(end)):
        h = stats_pb2.StatsHour.FromString(raw)
        add_counts(counts, h.counts)
        hist_merge(duration, h.duration)
        hist_merge(lateness, h.lateness)
    return counts, duration, lateness


def task_stats(txn: Txn, task: Task, *, since_ms: int, now_ms: int) -> stats_pb2.TaskStats:
    """`task`'s statistics over the hours from `since_ms` to `now_ms` (see `window`), and its totals."""
    task16 = id_bytes(task.task_id)
    start, end = window(since_ms, now_ms)
    counts, duration, lateness = _task_window(txn, task16, start, end)
    success, failure = rates(counts)
    return stats_pb2.TaskStats(
        task_id=task.task_id,
        name=task.spec.name,
        namespace=task.spec.namespace,
        since_ms=start,
        until_ms=end,
        window=counts,
        success_rate=success,
        failure_rate=failure,
        duration=quantiles(duration),
        lateness=quantiles(lateness),
        total=task.outcomes,
        last_outcome=task.last_outcome,
        last_outcome_at_ms=task.last_finished_ms if task.last_outcome else 0,
        last_execution_id=task.last_execution_id,
    )


def cluster_stats(txn: Txn, *, since_ms: int, now_ms: int, limit: int = 10) -> stats_pb2.ClusterStats:
    """The cluster's statistics over the hours from `since_ms` to `now_ms` (see `window`): outcomes,
    quantiles, executions ended per minute over the last THROUGHPUT_MINUTES minutes (whatever the window),
    and the `limit` (at most TOP_K) tasks with the most failures and with the longest runs in the window
    (see the module docstring)."""
    start, end = window(since_ms, now_ms)
    limit = max(0, min(limit, TOP_K))
    out = stats_pb2.ClusterStats(since_ms=start, until_ms=end)
    failing: dict[str, int] = {}  # candidate -> failures in the hours it was ranked (a lower bound)
    slow: dict[str, int] = {}  # candidate -> its longest run in those hours
    duration, lateness = Histogram(), Histogram()
    for _, raw in txn.scan("cluster_stats", u64(start), u64(end)):
        ch = stats_pb2.ClusterHour.FromString(raw)
        add_counts(out.window, ch.counts)
        hist_merge(duration, ch.duration)
        hist_merge(lateness, ch.lateness)
        for r in ch.most_failures:
            failing[r.task_id] = failing.get(r.task_id, 0) + r.value
        for r in ch.slowest:
            slow[r.task_id] = max(slow.get(r.task_id, 0), r.value)
    out.success_rate, out.failure_rate = rates(out.window)
    out.duration.CopyFrom(quantiles(duration))
    out.lateness.CopyFrom(quantiles(lateness))

    first = minute_of(now_ms) - (THROUGHPUT_MINUTES - 1) * MINUTE_MS
    hours: dict[int, stats_pb2.ClusterHour] = {}
    for minute in range(first, first + THROUGHPUT_MINUTES * MINUTE_MS, MINUTE_MS):
        if minute < 0:
            continue
        hour = hour_of(minute)
        if hour not in hours:
            stored = txn.get("cluster_stats", u64(hour))
            hours[hour] = stats_pb2.ClusterHour.FromString(stored or b"")
        ch = hours[hour]
        i = (minute - hour) // MINUTE_MS
        point = out.throughput.add(minute_ms=minute)
        if ch.minute_runs:
            point.runs, point.failures = ch.minute_runs[i], ch.minute_failures[i]

    if limit:
        ranked = [s for s in _candidates(txn, failing, limit, start, end) if failures(s.window)]
        ranked.sort(key=lambda s: (-failures(s.window), s.task_id))
        out.top_failing.extend(ranked[:limit])
        ranked = [s for s in _candidates(txn, slow, limit, start, end) if s.duration.samples]
        ranked.sort(key=lambda s: (-s.duration.max_ms, s.task_id))
        out.slowest.extend(ranked[:limit])
    return out


def _candidates(
    txn: Txn, scores: dict[str, int], limit: int, start: int, end: int
) -> list[stats_pb2.TaskStats]:
    """The exact figures of the CANDIDATES_PER_RANK * `limit` best-scored candidates (bounded work)."""
    best = sorted(scores, key=lambda t: (-scores[t], t))[: CANDIDATES_PER_RANK * limit]
    return [s for s in (_candidate(txn, t, start, end) for t in best) if s is not None]


def _candidate(txn: Txn, task_id: str, start: int, end: int) -> stats_pb2.TaskStats | None:
    """A ranked task's exact figures over the window (None: deleted since)."""
    task16 = id_bytes(task_id)
    raw = txn.get("tasks", task16)
    if raw is None:
        return None
    task = Task.FromString(raw)
    counts, duration, _ = _task_window(txn, task16, start, end)
    success, failure = rates(counts)
    return stats_pb2.TaskStats(
        task_id=task_id,
        name=task.spec.name,
        namespace=task.spec.namespace,
        since_ms=start,
        until_ms=end,
        window=counts,
        success_rate=success,
        failure_rate=failure,
        duration=quantiles(duration),
    )


__all__ = [
    "FAILURE_STATES",
    "HOUR_MS",
    "MINUTE_MS",
    "THROUGHPUT_MINUTES",
    "TOP_K",
    "WINDOW_HOURS",
    "Batch",
    "bucket_bounds",
    "bucket_of",
    "cluster_stats",
    "count",
    "drop_task",
    "duration_of",
    "failures",
    "hist_add",
    "hist_merge",
    "lateness_of",
    "quantile",
    "quantiles",
    "record_outcome",
    "task_stats",
    "window",
]
