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
from collections.abc import Callable, Container, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

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


class NodeMetrics:
    """The registry of one node process and the instruments it updates (module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series: a start time per counter and histogram doubles the exposition and says
        # nothing a restart's reset does not (a process-wide setting of prometheus_client).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.executions_finished = Counter(
            "cronraft_executions_finished",
            "Executions that reached a final state, by that state and the task's delivery guarantee "
            "(counted by the leader that committed it: sum over the nodes).",
            ["state", "guarantee"],
            registry=r,
        )
        self.fires = Counter(
            "cronraft_fires",
            "Scheduled fires committed that created an execution (not triggers or backfills).",
            registry=r,
        )
        self.fire_lateness = Histogram(
            "cronraft_fire_lateness_seconds",
            "From a scheduled execution's nominal time to the start of its first attempt on a worker "
            "(observed when that attempt's result commits; jitter counts as lateness).",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.attempt_duration = Histogram(
            "cronraft_attempt_duration_seconds",
            "Run time of attempts that ran (the worker's start to finish), observed as their results commit.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "cronraft_retries",
            "Executions sent back to pending for another attempt, by why the attempt ended "
            "(failed, timed_out, lease_expired).",
            ["reason"],
            registry=r,
        )
        self.regrants = Counter(
            "cronraft_regrants",
            "Leases that ended before their payload began, granted again without spending an attempt.",
            registry=r,
        )
        self.dead_letters = Counter(
            "cronraft_executions_dead_lettered",
            "Executions that exhausted their retries and became dead letters.",
            registry=r,
        )
        self.misfires = Counter(
            "cronraft_misfires",
            "Nominal times that passed with no leader to fire them, by misfire policy and what it did: "
            "missed (recorded missed_downtime) or caught_up (fired late).",
            ["policy", "outcome"],
            registry=r,
        )
        self.apply_seconds = Histogram(
            "cronraft_apply_seconds",
            "Time to apply one committed log entry to the store (every node).",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.entry_commands = Histogram(
            "cronraft_apply_entry_commands",
            "Commands in each log entry applied (group commit's batch size).",
            buckets=ENTRY_COMMANDS_BUCKETS,
            registry=r,
        )
        # The label values known in advance exist from the start (at 0), so that rate() and absent()
        # behave before the first event.
        for state in FINAL_STATES.values():
            for guarantee in ("at_least_once", "exactly_once", "at_most_once"):
                self.executions_finished.labels(state, guarantee)
        for reason in ("failed", "timed_out", "lease_expired"):
            self.retries.labels(reason)
        for policy in ("fire_all", "skip", "fire_once"):
            for outcome in ("missed", "caught_up"):
                self.misfires.labels(policy, outcome)

    # ------------------------------------------------------------------------------------ apply

    def timed_apply(
        self, apply: Callable[[int, bytes], bytes | None]
    ) -> Callable[[int, bytes], bytes | None]:
        """`apply` (the state machine's `apply_entry`), timed, with its entry's command count observed."""

        def timed(index: int, payload: bytes) -> bytes | None:
            t0 = time.perf_counter()
            out = apply(index, payload)
            if out is not None:
                self.apply_seconds.observe(time.perf_counter() - t0)
                self.entry_commands.observe(count_results(out))
            return out

        return timed

    def timed_apply_many(
        self, apply_many: Callable[[Sequence[tuple[int, bytes]], Container[int]], list[bytes | None]]
    ) -> Callable[[Sequence[tuple[int, bytes]], Container[int]], list[bytes | None]]:
        """`apply_many` (the state machine's `apply_entries`: several entries in one transaction), timed:
        each entry applied is observed with its share of the group's time, and its command count."""

        def timed(entries: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
            t0 = time.perf_counter()
            out = apply_many(entries, unread)
            applied = [r for r in out if r is not None]
            if applied:
                share = (time.perf_counter() - t0) / len(applied)
                for raw in applied:
                    self.apply_seconds.observe(share)
                    self.entry_commands.observe(count_results(raw))
            return out

        return timed

    # ------------------------------------------------------------------------- committed commands

    def observe_committed(
        self, cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
    ) -> None:
        """Count the outcomes a batch of committed commands recorded (module docstring). It runs on the
        leader's loop for every batch: about 1 µs a command (bench: a batch of 1,000 fires)."""
        fires = 0
        for cmd, res in zip(cmds, results, strict=True):
            if not res.applied:
                continue
            kind = cmd.WhichOneof("body")
            if kind == "fire":
                created = res.HasField("execution")
                fires += created
                # Only a fire committed past the misfire threshold can be a misfire (decide_misfire).
                if cmd.stamped_at_ms - cmd.fire.nominal_time_ms > MISFIRE_THRESHOLD_MS:
                    self._misfired(cmd, res, created)
            elif kind in _OUTCOME_KINDS and res.HasField("execution"):
                self._attempt_ended(kind, res)
                if res.dead_letters:
                    self.dead_letters.inc(len(res.dead_letters))
            executions = res.executions
            # A fire lists the execution it created there; more only when it ended others (overlap).
            if len(executions) > (1 if kind == "fire" else 0):
                self._finished(cmd.stamped_at_ms, executions)
        if fires:
            self.fires.inc(fires)

    def _finished(self, stamped_at_ms: int, executions: Sequence[common_pb2.Execution]) -> None:
        # A handler lists an execution it ended (raft.commands.executions.finish) in `executions`, with
        # completed_at_ms = the command's time; anything else listed there (created, re-queued) is not.
        ended: dict[str, common_pb2.Execution] | None = None
        for ex in executions:
            if ex.completed_at_ms == stamped_at_ms and ex.state in FINAL_STATES:
                if ended is None:
                    ended = {}
                ended[ex.execution_id] = ex
        for ex in (ended or {}).values():
            self.executions_finished.labels(
                FINAL_STATES[ex.state], GUARANTEES.get(ex.guarantee, "other")
            ).inc()

    def _attempt_ended(self, kind: str, res: commands_pb2.CommandResult) -> None:
        ex = res.execution
        last = ex.attempts[-1] if ex.attempts else None
        if last is None:
            return
        if ex.state == common_pb2.EXECUTION_PENDING:
            if last.outcome == common_pb2.ATTEMPT_NOT_STARTED:
                self.regrants.inc()
            else:
                reason = (
                    "lease_expired" if kind == "expire_lease" else _RETRY_REASONS.get(last.outcome, "failed")
                )
                self.retries.labels(reason).inc()
        if kind != "complete" or last.started_at_ms <= 0:
            return
        if last.finished_at_ms >= last.started_at_ms:
            self.attempt_duration.observe((last.finished_at_ms - last.started_at_ms) / 1000)
        # The first attempt that ran (a re-grant keeps the attempt number) of a scheduled execution.
        if last.attempt == 1 and not ex.manual:
            self.fire_lateness.observe(max(0, last.started_at_ms - ex.nominal_time_ms) / 1000)

    def _misfired(self, cmd: commands_pb2.Command, res: commands_pb2.CommandResult, created: bool) -> None:
        task = res.task
        policy = MISFIRE_POLICIES.get(task.spec.misfire, "fire_all")
        if res.missed:
            self.misfires.labels(policy, "missed").inc(len(res.missed))
        # raft.firing.decide_misfire: fire_all counts its late fires in catchup_fired; fire_once fires
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


__all__ = ["FINAL_STATES", "GUARANTEES", "MISFIRE_POLICIES", "NodeMetrics", "count_results"]
