"""This node's Prometheus metrics: its registry and the instruments the daemon updates as it sees things
happen. docs/monitoring.md lists every family with its labels.

One `CollectorRegistry` per `NodeMetrics` (never prometheus_client's global default), so that a test can
run several nodes in one process. Label sets are bounded: states, guarantees, policies, reasons, gRPC
methods and codes; never a task, an execution or a worker id.

Who counts what:
- **Outcomes of executions** (finished by state and guarantee, fire lateness, attempt duration, retries,
  re-grants, dead letters, misfires, fires): `observe_committed`, called by the leader runner with each
  batch of commands it committed, its own and its clients'. Each outcome is counted once, by the leader
  that committed it, so the cluster's total is the *sum* over the nodes. A command whose outcome its
  leader never learned (it lost leadership between the commit and the answer) is not counted.
- **Apply latency and entry size**: every node, on its apply thread (`timed_apply`).
- **gRPC calls**: the server interceptor of daemon.http.grpc_metrics, with this registry.
- **Everything read from the node's state at scrape time** (Raft, storage, queues, workers, clock,
  notifier): daemon.http.collector, registered here by the node.

The lateness and duration times are the worker's clock (`started_at_ms`, `finished_at_ms` of its result)
against the leader's (the nominal time): the clock-health bound (docs/guarantees.md, "Clock skew") bounds
the error.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Container, Iterator, Sequence
from math import inf

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.firing import MISFIRE_THRESHOLD_MS

# Seconds, from a few milliseconds (an on-time fire) to an hour (a misfire caught up).
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Seconds, from a no-op to a long batch job.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
ENTRY_COMMANDS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

FINAL_STATES = {
    common_pb2.EXECUTION_SUCCEEDED: "succeeded",
    common_pb2.EXECUTION_FAILED: "failed",
    common_pb2.EXECUTION_TIMED_OUT: "timed_out",
    common_pb2.EXECUTION_CANCELLED: "cancelled",
    common_pb2.EXECUTION_LOST: "lost",
    common_pb2.EXECUTION_EXPIRED: "expired",
}
GUARANTEES = {
    common_pb2.DELIVERY_GUARANTEE_UNSPECIFIED: "at_least_once",
    common_pb2.AT_LEAST_ONCE: "at_least_once",
    common_pb2.EXACTLY_ONCE: "exactly_once",
    common_pb2.AT_MOST_ONCE: "at_most_once",
}
MISFIRE_POLICIES = {
    common_pb2.MISFIRE_DEFAULT: "fire_all",
    common_pb2.MISFIRE_FIRE_ALL: "fire_all",
    common_pb2.MISFIRE_SKIP: "skip",
    common_pb2.MISFIRE_FIRE_ONCE: "fire_once",
}
# Why an execution went back to pending for another attempt.
_RETRY_REASONS = {
    common_pb2.ATTEMPT_FAILED: "failed",
    common_pb2.ATTEMPT_TIMED_OUT: "timed_out",
}
_OUTCOME_KINDS = frozenset({"complete", "expire_lease"})
# Protobuf methods taken from their class once: looked up on a message, a method costs a look-up of a field
# of that name first (upb; as in raft/records.py).
_kind_of = commands_pb2.Command.WhichOneof
_result_has = commands_pb2.CommandResult.HasField
_PENDING = common_pb2.EXECUTION_PENDING
_NOT_STARTED = common_pb2.ATTEMPT_NOT_STARTED


# ------------------------------------------------------------------------------ plain instruments
#
# prometheus_client's Counter and Histogram take a lock per increment, and `labels()` validates and looks
# its child up at every call: several microseconds an execution on the leader's loop (issue 16). These
# count in plain ints and floats and are exported at scrape time by `PlainExporter`. Each instrument has one
# writer thread (the leader's loop for outcomes, the apply thread for apply), so no increment is lost;
# a scrape on another thread reads each value whole (the GIL) and never lower than the scrape before; it
# may miss the observations made while it reads. A histogram's count is its +Inf bucket's, so the two
# never disagree; its sum is read apart from its buckets, as prometheus_client's own Histogram reads it.


class PlainCounter:
    """A counter's value (one writer thread)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class PlainLabelledCounter:
    """A counter family with labels: a `PlainCounter` per label tuple, in the order first used."""

    __slots__ = ("children", "labelnames")

    def __init__(self, labelnames: Sequence[str]) -> None:
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], PlainCounter] = {}

    def labels(self, *values: str) -> PlainCounter:
        child = self.children.get(values)
        if child is None:
            child = self.children.setdefault(values, PlainCounter())
        return child


class PlainHistogram:
    """A histogram without labels: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "les", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = (*(float(b) for b in buckets), inf)
        # The `le` labels as prometheus_client's Histogram writes them ("1.0", "+Inf").
        self.les: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount, as prometheus_client's Histogram.observe picks it.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def observe_many(self, amount: float, times: int) -> None:
        """`observe(amount)` `times` times (one bucket lookup)."""
        self.counts[bisect_left(self.bounds, amount)] += times
        self.sum += amount * times


Instrument = PlainCounter | PlainLabelledCounter | PlainHistogram


class PlainExporter(Collector):
    """Writes the plain instruments as prometheus_client's own would (names, help, types, label sets,
    `le` labels, family and sample order), read at each scrape."""

    def __init__(self, families: Sequence[tuple[str, str, Instrument]]) -> None:
        self._families = families

    def describe(self) -> list[Metric]:
        # The names, so that the registry refuses another collector of the same family.
        return [
            HistogramMetricFamily(name, doc)
            if isinstance(it, PlainHistogram)
            else CounterMetricFamily(name, doc)
            for name, doc, it in self._families
        ]

    def collect(self) -> Iterator[Metric]:
        for name, doc, it in self._families:
            if isinstance(it, PlainCounter):
                yield CounterMetricFamily(name, doc, value=it.value)
            elif isinstance(it, PlainLabelledCounter):
                counter = CounterMetricFamily(name, doc, labels=it.labelnames)
                for values, child in list(it.children.items()):  # list(): one step under the GIL
                    counter.add_metric(values, child.value)
                yield counter
            else:
                total = it.sum
                cumulative, buckets = 0, []
                for le, n in zip(it.les, list(it.counts), strict=True):
                    cumulative += n
                    buckets.append((le, float(cumulative)))
                histogram = HistogramMetricFamily(name, doc)
                histogram.add_metric([], buckets, total)
                yield histogram


class NodeMetrics:
    """The registry of one node process and the instruments it updates (module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series: a start time per counter and histogram doubles the exposition and says
        # nothing a restart's reset does not (a process-wide setting of prometheus_client, for the
        # instruments of daemon.http.grpc_metrics; the plain ones here have none).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.executions_finished = PlainLabelledCounter(["state", "guarantee"])
        self.fires = PlainCounter()
        self.fire_lateness = PlainHistogram(LATENESS_BUCKETS)
        self.attempt_duration = PlainHistogram(DURATION_BUCKETS)
        self.retries = PlainLabelledCounter(["reason"])
        self.regrants = PlainCounter()
        self.dead_letters = PlainCounter()
        self.misfires = PlainLabelledCounter(["policy", "outcome"])
        self.apply_seconds = PlainHistogram(APPLY_BUCKETS)
        self.entry_commands = PlainHistogram(ENTRY_COMMANDS_BUCKETS)
        self.registry.register(
            PlainExporter(
                [
                    (
                        "cronraft_executions_finished",
                        "Executions that reached a final state, by that state and the task's delivery "
                        "guarantee (counted by the leader that committed it: sum over the nodes).",
                        self.executions_finished,
                    ),
                    (
                        "cronraft_fires",
                        "Scheduled fires committed that created an execution (not triggers or backfills).",
                        self.fires,
                    ),
                    (
                        "cronraft_fire_lateness_seconds",
                        "From a scheduled execution's nominal time to the start of its first attempt on a "
                        "worker (observed when that attempt's result commits; jitter counts as lateness).",
                        self.fire_lateness,
                    ),
                    (
                        "cronraft_attempt_duration_seconds",
                        "Run time of attempts that ran (the worker's start to finish), observed as their "
                        "results commit.",
                        self.attempt_duration,
                    ),
                    (
                        "cronraft_retries",
                        "Executions sent back to pending for another attempt, by why the attempt ended "
                        "(failed, timed_out, lease_expired).",
                        self.retries,
                    ),
                    (
                        "cronraft_regrants",
                        "Leases that ended before their payload began, granted again without spending an "
                        "attempt.",
                        self.regrants,
                    ),
                    (
                        "cronraft_executions_dead_lettered",
                        "Executions that exhausted their retries and became dead letters.",
                        self.dead_letters,
                    ),
                    (
                        "cronraft_misfires",
                        "Nominal times that passed with no leader to fire them, by misfire policy and what "
                        "it did: missed (recorded missed_downtime) or caught_up (fired late).",
                        self.misfires,
                    ),
                    (
                        "cronraft_apply_seconds",
                        "Time to apply one committed log entry to the store (every node).",
                        self.apply_seconds,
                    ),
                    (
                        "cronraft_apply_entry_commands",
                        "Commands in each log entry applied (group commit's batch size).",
                        self.entry_commands,
                    ),
                ]
            )
        )
        # The label values known in advance exist from the start (at 0), so that rate() and absent()
        # behave before the first event. The hot path finds its child by the proto's enum values.
        self._finished_by: dict[tuple[int, int], PlainCounter] = {}
        for state in FINAL_STATES.values():
            for guarantee in ("at_least_once", "exactly_once", "at_most_once"):
                self.executions_finished.labels(state, guarantee)
        for state_value, state in FINAL_STATES.items():
            for guarantee_value, guarantee in GUARANTEES.items():
                child = self.executions_finished.labels(state, guarantee)
                self._finished_by[(state_value, guarantee_value)] = child
        self._retried = {
            reason: self.retries.labels(reason) for reason in ("failed", "timed_out", "lease_expired")
        }
        self._retried_by = {outcome: self._retried[reason] for outcome, reason in _RETRY_REASONS.items()}
        for policy in ("fire_all", "skip", "fire_once"):
            for outcome in ("missed", "caught_up"):
                self.misfires.labels(policy, outcome)

    # ------------------------------------------------------------------------------------ apply

    def timed_apply(
        self, apply: Callable[[int, bytes], bytes | None]
    ) -> Callable[[int, bytes], bytes | None]:
        """`apply` (the state machine's `apply_entry`), timed, with its entry's command count observed."""
        apply_seconds, entry_commands = self.apply_seconds, self.entry_commands

        def timed(index: int, payload: bytes) -> bytes | None:
            t0 = time.perf_counter()
            out = apply(index, payload)
            if out is not None:
                apply_seconds.observe(time.perf_counter() - t0)
                entry_commands.observe(count_results(out))
            return out

        return timed

    def timed_apply_many(
        self, apply_many: Callable[[Sequence[tuple[int, bytes]], Container[int]], list[bytes | None]]
    ) -> Callable[[Sequence[tuple[int, bytes]], Container[int]], list[bytes | None]]:
        """`apply_many` (the state machine's `apply_entries`: several entries in one transaction), timed:
        each entry applied is observed with its share of the group's time, and its command count."""
        apply_seconds, entry_commands = self.apply_seconds, self.entry_commands

        def timed(entries: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
            t0 = time.perf_counter()
            out = apply_many(entries, unread)
            applied = [r for r in out if r is not None]
            if applied:
                apply_seconds.observe_many((time.perf_counter() - t0) / len(applied), len(applied))
                for raw in applied:
                    entry_commands.observe(count_results(raw))
            return out

        return timed

    # ------------------------------------------------------------------------- committed commands

    def observe_committed(
        self, cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        """Count the outcomes a batch of committed commands recorded (module docstring). It runs on the
        leader's loop for every batch (bench/perf_metrics.py times it): each field is read once (with upb a
        read makes a new object)."""
        fires = 0
        for cmd, res in zip(cmds, results, strict=True):
            if not res.applied:
                continue
            kind = _kind_of(cmd, "body")
            stamped_at_ms = cmd.stamped_at_ms
            if kind == "fire":
                created = _result_has(res, "execution")
                fires += created
                # Only a fire committed past the misfire threshold can be a misfire (decide_misfire).
                if stamped_at_ms - cmd.fire.nominal_time_ms > MISFIRE_THRESHOLD_MS:
                    self._misfired(cmd, res, created)
                executions = res.executions
                # A fire lists the execution it created; more only when it ended others (overlap).
                if len(executions) > 1:
                    self._finished(stamped_at_ms, executions)
                continue
            if kind in _OUTCOME_KINDS and _result_has(res, "execution"):
                self._attempt_ended(kind, res.execution)
                dead = len(res.dead_letters)
                if dead:
                    self.dead_letters.value += dead
            executions = res.executions
            n = len(executions)
            if n == 1:  # most often: the execution a Complete ended or re-queued (a Fire's is above)
                ex = executions[0]
                if ex.completed_at_ms == stamped_at_ms and (state := ex.state) in FINAL_STATES:
                    self._count_finished(ex, state)
            elif n:
                self._finished(stamped_at_ms, executions)
        if fires:
            self.fires.value += fires

    def _finished(self, stamped_at_ms: int, executions: Sequence[common_pb2.Execution]) -> None:
        # A handler lists an execution it ended (raft.commands.executions.finish) in `executions`, with
        # completed_at_ms = the command's time; anything else listed there (created, re-queued) is not.
        # Each execution counts once, even if listed twice.
        if len(executions) == 1:
            ex = executions[0]
            if ex.completed_at_ms == stamped_at_ms and (state := ex.state) in FINAL_STATES:
                self._count_finished(ex, state)
            return
        ended: dict[str, tuple[common_pb2.Execution, common_pb2.ExecutionState.ValueType]] = {}
        for ex in executions:
            if ex.completed_at_ms == stamped_at_ms and (state := ex.state) in FINAL_STATES:
                ended[ex.execution_id] = (ex, state)
        for ex, state in ended.values():
            self._count_finished(ex, state)

    def _count_finished(self, ex: common_pb2.Execution, state: common_pb2.ExecutionState.ValueType) -> None:
        """Count `ex`, which ended in `state` (read by the caller: with upb each read is a look-up)."""
        child = self._finished_by.get((state, ex.guarantee))
        if child is None:  # a guarantee this version does not know
            child = self.executions_finished.labels(FINAL_STATES[state], "other")
        child.value += 1

    def _attempt_ended(self, kind: str, ex: common_pb2.Execution) -> None:
        """An attempt's end (`ex`: the execution a Complete or ExpireLease left)."""
        attempts = ex.attempts
        if not attempts:
            return
        last = attempts[-1]
        if ex.state == _PENDING:
            outcome = last.outcome
            if outcome == _NOT_STARTED:
                self.regrants.value += 1
            elif kind == "expire_lease":
                self._retried["lease_expired"].value += 1
            else:
                self._retried_by.get(outcome, self._retried["failed"]).value += 1
        if kind != "complete":
            return
        started = last.started_at_ms
        if started <= 0:
            return
        finished = last.finished_at_ms
        if finished >= started:
            self.attempt_duration.observe((finished - started) / 1000)
        # The first attempt that ran (a re-grant keeps the attempt number) of a scheduled execution.
        if last.attempt == 1 and not ex.manual:
            self.fire_lateness.observe(max(0, started - ex.nominal_time_ms) / 1000)

    def _misfired(self, cmd: commands_pb2.Command, res: commands_pb2.CommandResult, created: bool) -> None:
        task = res.task
        policy = MISFIRE_POLICIES.get(task.spec.misfire, "fire_all")
        if res.missed:
            self.misfires.labels(policy, "missed").inc(len(res.missed))
        # raft.misfire.decide_misfire: fire_all counts its late fires in catchup_fired; fire_once fires
        # the latest missed time instead of the one proposed, and records the others missed.
        caught_up = task.catchup_fired > 0 or (
            policy == "fire_once"
            and created
            and (bool(res.missed) or res.execution.nominal_time_ms != cmd.fire.nominal_time_ms)
        )
        if created and caught_up:
            self.misfires.labels(policy, "caught_up").inc()


def count_results(batch_result: bytes) -> int:
    """The number of results in a serialized `BatchResult` (repeated field 1), without parsing them: a
    result holds whole tasks and executions, and this runs on the apply thread for every entry."""
    count = 0
    pos, end = 0, len(batch_result)
    while pos < end:
        pos += 1  # the tag of field 1, length-delimited: one byte (0x0a)
        length, shift = 0, 0
        while True:
            byte = batch_result[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        pos += length
        count += 1
    return count


__all__ = [
    "FINAL_STATES",
    "GUARANTEES",
    "MISFIRE_POLICIES",
    "NodeMetrics",
    "PlainCounter",
    "PlainExporter",
    "PlainHistogram",
    "PlainLabelledCounter",
    "count_results",
]
