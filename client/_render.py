"""The stable JSON rendering of the `cronraft.v1` messages (docs/cli.md, "JSON output"), free of I/O.

Each `*_to_json` builds plain dicts and lists by hand, never through protobuf's JSON mapping, so that the
keys are explicit and stay stable: snake_case, every key always present, times twice (`<name>_ms` and RFC
3339 `<name>`, null when unset), enums as lower-case names without their prefix, maps with sorted keys,
bytes as UTF-8 text (invalid bytes become U+FFFD). The JSON of calendars is in `_calendars`.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cronraft.proto.v1 import cluster_pb2, common_pb2, scheduler_pb2, stats_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def format_instant(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2025-06-01T09:00:00.000Z."""
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def enum_name(wrapper: Any, number: int, prefix: str = "") -> str:
    """Lower-case enum name without `prefix` ("TASK_SCHEDULED" -> "scheduled"); "unspecified" for 0,
    "unknown_<n>" for a value this client does not know (a newer server)."""
    if number == 0:
        return "unspecified"
    try:
        name: str = wrapper.Name(number)
    except ValueError:
        return f"unknown_{number}"
    return name.removeprefix(prefix).lower()


def policy_name(wrapper: Any, number: int, prefix: str) -> str:
    """`enum_name` for the policy enums, whose 0 is a documented default: "default" rather than
    "unspecified"."""
    return "default" if number == 0 else enum_name(wrapper, number, prefix)


def tail_text(data: bytes) -> str:
    """Output tails (and other bytes shown as text): UTF-8, invalid bytes replaced by U+FFFD."""
    return data.decode("utf-8", errors="replace")


def time_fields(out: dict[str, Any], name: str, ms: int) -> None:
    """Set `<name>_ms` (0 when unset) and `<name>` (RFC 3339, None when unset) in `out`."""
    out[f"{name}_ms"] = ms
    out[name] = format_instant(ms) if ms else None


# ------------------------------------------------------------------------------------------------ tasks


def schedule_to_json(schedule: common_pb2.Schedule) -> dict[str, Any]:
    kind = schedule.WhichOneof("kind")
    out: dict[str, Any] = {"kind": kind}
    if kind == "cron":
        out["expression"] = schedule.cron.expression
        out["time_zone"] = schedule.cron.time_zone
    elif kind == "at":
        time_fields(out, "at", schedule.at.at_ms)
    elif kind == "fixed_rate":
        out["period_ms"] = schedule.fixed_rate.period_ms
        time_fields(out, "anchor", schedule.fixed_rate.anchor_ms)
    elif kind == "fixed_delay":
        out["delay_ms"] = schedule.fixed_delay.delay_ms
        out["stop_on_failure"] = schedule.fixed_delay.stop_on_failure
    time_fields(out, "start_at", schedule.start_at_ms)
    time_fields(out, "end_at", schedule.end_at_ms)
    out["max_runs"] = schedule.max_runs
    out["jitter_ms"] = schedule.jitter_ms
    out["dst_gap"] = policy_name(common_pb2.DstGapPolicy, schedule.dst_gap, "DST_GAP_")
    out["dst_fold"] = policy_name(common_pb2.DstFoldPolicy, schedule.dst_fold, "DST_FOLD_")
    out["calendars"] = list(schedule.calendars)
    out["calendar_action"] = policy_name(common_pb2.CalendarAction, schedule.calendar_action, "CALENDAR_")
    return out


def handler_args(args_json: str) -> Any:
    """The decoded arguments of a handler payload: {} when empty, None when not valid JSON."""
    if not args_json.strip():
        return {}
    try:
        return json.loads(args_json)
    except ValueError:
        return None


def command_to_json(command: common_pb2.CommandPayload) -> dict[str, Any]:
    return {"argv": list(command.argv), "env": dict(sorted(command.env.items())), "cwd": command.cwd}


def payload_to_json(payload: common_pb2.Payload) -> dict[str, Any]:
    kind = payload.WhichOneof("kind")
    if kind == "command":
        return {"kind": "command", **command_to_json(payload.command)}
    if kind == "shell":
        return {"kind": "shell", "script": payload.shell.script}
    if kind == "http":
        h = payload.http
        return {
            "kind": "http",
            "method": h.method,
            "url": h.url,
            "headers": dict(sorted(h.headers.items())),
            "body": tail_text(h.body),
            "expected_status": list(h.expected_status),
        }
    if kind == "handler":
        return {
            "kind": "handler",
            "name": payload.handler.name,
            "args": handler_args(payload.handler.args_json),
            "args_json": payload.handler.args_json,
        }
    return {"kind": None}


def retry_to_json(retry: common_pb2.RetryPolicy) -> dict[str, Any]:
    return {
        "initial_backoff_ms": retry.initial_backoff_ms,
        "multiplier": retry.multiplier,
        "max_backoff_ms": retry.max_backoff_ms,
        "retryable_exit_codes": list(retry.retryable_exit_codes),
        "non_retryable_exit_codes": list(retry.non_retryable_exit_codes),
        "no_retry_on_timeout": retry.no_retry_on_timeout,
    }


def notify_to_json(target: common_pb2.NotifyTarget) -> dict[str, Any]:
    kind = target.WhichOneof("kind")
    out: dict[str, Any]
    if kind == "webhook_url":
        out = {"kind": "webhook", "url": target.webhook_url}
    elif kind == "notifier":
        out = {"kind": "notifier", "name": target.notifier}
    elif kind == "command":
        out = {"kind": "command", **command_to_json(target.command)}
    else:
        out = {"kind": None}
    out["events"] = [enum_name(common_pb2.NotifyEvent, e, "NOTIFY_") for e in target.events]
    return out


def spec_to_json(spec: common_pb2.TaskSpec) -> dict[str, Any]:
    # "namespace" only when the spec names one: a spec read back without it (task import) goes to the
    # client's namespace (--namespace), one with it to that namespace.
    return {
        **({"namespace": spec.namespace} if spec.namespace else {}),
        "name": spec.name,
        "tags": dict(sorted(spec.tags.items())),
        "schedule": schedule_to_json(spec.schedule),
        "payload": payload_to_json(spec.payload),
        "queue": spec.queue,
        "timeout_ms": spec.timeout_ms,
        "guarantee": enum_name(common_pb2.DeliveryGuarantee, spec.guarantee),
        "priority": enum_name(common_pb2.Priority, spec.priority),
        "max_attempts": spec.max_attempts,
        "misfire": policy_name(common_pb2.MisfirePolicy, spec.misfire, "MISFIRE_"),
        "catchup_window_ms": spec.catchup_window_ms,
        "max_catchup": spec.max_catchup,
        "overlap": policy_name(common_pb2.OverlapPolicy, spec.overlap, "OVERLAP_"),
        "retry": retry_to_json(spec.retry) if spec.HasField("retry") else None,
        "notify": [notify_to_json(n) for n in spec.notify],
        "worker_labels": dict(sorted(spec.worker_labels.items())),
        "max_concurrency": spec.max_concurrency,
        "start_deadline_ms": spec.start_deadline_ms,
        "depends_on": [{"task_id": d.task_id, "window_ms": d.window_ms} for d in spec.depends_on],
        "dependency_deadline_ms": spec.dependency_deadline_ms,
        "sensor": (
            {
                "probe": payload_to_json(spec.sensor.probe),
                "interval_ms": spec.sensor.interval_ms,
                "timeout_ms": spec.sensor.timeout_ms,
            }
            if spec.HasField("sensor")
            else None
        ),
        "retention": retention_to_json(spec.retention) if spec.HasField("retention") else None,
    }


def retention_to_json(r: common_pb2.Retention) -> dict[str, Any]:
    """A task's own retention: each value 0 (the cluster's default), -1 (no limit) or the limit."""
    return {
        "keep_executions": r.keep_executions,
        "execution_max_age_ms": r.execution_max_age_ms,
        "ended_task_max_age_ms": r.ended_task_max_age_ms,
    }


def task_to_json(task: common_pb2.Task) -> dict[str, Any]:
    """The JSON object of a task (docs/cli.md, "Task")."""
    out: dict[str, Any] = {
        "task_id": task.task_id,
        "namespace": task.spec.namespace or "default",
        "state": enum_name(common_pb2.TaskState, task.state, "TASK_"),
        "spec": spec_to_json(task.spec),
    }
    time_fields(out, "created_at", task.created_at_ms)
    time_fields(out, "updated_at", task.updated_at_ms)
    time_fields(out, "next_fire", task.next_fire_ms)
    time_fields(out, "last_fired_nominal", task.last_fired_nominal_ms)
    out["fire_count"] = task.fire_count
    out["stored_executions"] = task.stored_executions
    out["version"] = task.version
    out["pause_note"] = task.pause_note
    time_fields(out, "paused_at", task.paused_at_ms)
    time_fields(out, "next_due", task.next_due_ms)
    out["catchup_fired"] = task.catchup_fired
    time_fields(out, "last_finished", task.last_finished_ms)
    out["last_outcome"] = enum_name(common_pb2.ExecutionState, task.last_outcome, "EXECUTION_")
    out["last_execution_id"] = task.last_execution_id
    out["outcomes"] = counts_to_json(task.outcomes)
    return out


# ------------------------------------------------------------------------------------------- executions


def attempt_to_json(attempt: common_pb2.AttemptSummary) -> dict[str, Any]:
    """The JSON object of one finished attempt (docs/cli.md, "Attempt")."""
    out: dict[str, Any] = {
        "attempt": attempt.attempt,
        "worker_id": attempt.worker_id,
        "outcome": enum_name(common_pb2.AttemptOutcome, attempt.outcome, "ATTEMPT_"),
        "exit_code": attempt.exit_code,
    }
    time_fields(out, "started_at", attempt.started_at_ms)
    time_fields(out, "finished_at", attempt.finished_at_ms)
    out["error"] = attempt.error
    return out


def execution_to_json(execution: common_pb2.Execution) -> dict[str, Any]:
    """The JSON object of an execution (docs/cli.md, "Execution")."""
    out: dict[str, Any] = {
        "execution_id": execution.execution_id,
        "task_id": execution.task_id,
        "namespace": execution.namespace or "default",
        "state": enum_name(common_pb2.ExecutionState, execution.state, "EXECUTION_"),
    }
    time_fields(out, "nominal_time", execution.nominal_time_ms)
    time_fields(out, "fired_at", execution.fired_at_ms)
    out["attempt"] = execution.attempt
    out["worker_id"] = execution.worker_id
    out["token"] = (
        {"term": execution.token.term, "index": execution.token.index}
        if execution.HasField("token")
        else None
    )
    time_fields(out, "leased_at", execution.leased_at_ms)
    time_fields(out, "started_at", execution.started_at_ms)
    time_fields(out, "finished_at", execution.finished_at_ms)
    time_fields(out, "completed_at", execution.completed_at_ms)
    out["exit_code"] = execution.exit_code
    out["stdout_tail"] = tail_text(execution.stdout_tail)
    out["stderr_tail"] = tail_text(execution.stderr_tail)
    out["error"] = execution.error
    out["guarantee"] = enum_name(common_pb2.DeliveryGuarantee, execution.guarantee)
    out["priority"] = enum_name(common_pb2.Priority, execution.priority)
    time_fields(out, "not_before", execution.not_before_ms)
    out["waiting_reason"] = execution.waiting_reason
    out["dead_lettered"] = execution.dead_lettered
    out["return_value"] = tail_text(execution.return_value)
    out["attempts"] = [attempt_to_json(a) for a in execution.attempts]
    time_fields(out, "cancel_requested_at", execution.cancel_requested_at_ms)
    out["cancel_reason"] = execution.cancel_reason
    out["manual"] = execution.manual
    out["result_size"] = execution.result_size
    return out


def result_to_json(execution_id: str, data: bytes) -> dict[str, Any]:
    """An execution's result (`schedctl execution result -o json`): its size, the bytes as text, and
    base64 (exact whatever the bytes)."""
    return {
        "execution_id": execution_id,
        "size": len(data),
        "text": tail_text(data),
        "base64": base64.b64encode(data).decode("ascii"),
    }


def dead_letter_to_json(dead_letter: common_pb2.DeadLetter) -> dict[str, Any]:
    """The JSON object of a dead letter (docs/cli.md, "Dead letter")."""
    out: dict[str, Any] = {
        "execution_id": dead_letter.execution_id,
        "task_id": dead_letter.task_id,
        "namespace": dead_letter.namespace or "default",
        "task_name": dead_letter.task_name,
        "reason": dead_letter.reason,
        "attempts": dead_letter.attempts,
    }
    time_fields(out, "dead_at", dead_letter.dead_at_ms)
    time_fields(out, "nominal_time", dead_letter.nominal_time_ms)
    out["stdout_tail"] = tail_text(dead_letter.stdout_tail)
    out["stderr_tail"] = tail_text(dead_letter.stderr_tail)
    out["redriven_as"] = dead_letter.redriven_as
    return out


# ---------------------------------------------------------------------------------- ledger and preview


def fire_record_to_json(record: common_pb2.FireRecord) -> dict[str, Any]:
    """The JSON object of a fire-ledger record (docs/cli.md, "Fire record")."""
    out: dict[str, Any] = {"task_id": record.task_id}
    time_fields(out, "nominal_time", record.nominal_time_ms)
    out["outcome"] = enum_name(common_pb2.FireOutcome, record.outcome)
    out["reason"] = record.reason
    out["execution_id"] = record.execution_id
    time_fields(out, "committed_at", record.committed_at_ms)
    out["late_ms"] = record.late_ms
    time_fields(out, "actual", record.actual_ms)
    return out


def explain_to_json(response: scheduler_pb2.ExplainTaskResponse) -> dict[str, Any]:
    """The JSON object of `task explain` (docs/cli.md, "Explain")."""
    out: dict[str, Any] = {"state": enum_name(common_pb2.TaskState, response.state, "TASK_")}
    time_fields(out, "next_fire", response.next_fire_ms)
    out["note"] = response.note
    out["records"] = [fire_record_to_json(r) for r in response.records]
    return out


def preview_fire_to_json(fire: scheduler_pb2.PreviewFire) -> dict[str, Any]:
    """The JSON object of one previewed fire (docs/cli.md, "Preview fire")."""
    out: dict[str, Any] = {}
    time_fields(out, "nominal_time", fire.nominal_time_ms)
    time_fields(out, "actual", fire.actual_ms)
    out["local_time"] = fire.local_time
    out["notes"] = list(fire.notes)
    return out


def status_to_json(status: cluster_pb2.StatusResponse) -> dict[str, Any]:
    """The JSON object of `cluster status` (docs/cli.md, "Cluster status")."""
    # A server without clock health (older) sends clock_max_offset_ms 0: its clock keys render as null.
    clock = status.clock_max_offset_ms > 0

    def storage(s: cluster_pb2.StorageStatus) -> dict[str, Any] | None:
        if not s.measured:  # a peer that did not answer our node's probes lately, or an older server
            return None
        return {
            "exhausted": s.exhausted,
            "refused": s.refused,
            "reason": s.reason,
            "stuck_index": s.stuck_index,
            "used_bytes": s.used_bytes,
            "map_size_bytes": s.map_size_bytes,
            "max_map_size_bytes": s.max_map_size_bytes,
            "disk_free_bytes": s.disk_free_bytes,
            "journal_bytes": s.journal_bytes,
        }

    def versions(v: cluster_pb2.ScheduleVersions) -> dict[str, Any] | None:
        if not v.measured:  # a peer that did not answer our node's probes lately, or an older server
            return None
        return {**dict(sorted(v.versions.items())), "cronraft": v.cronraft}

    def member_clock(m: cluster_pb2.Member) -> dict[str, Any]:
        measured = clock and m.clock_measured
        peer = measured and m.node_id != status.node_id
        return {
            "clock_offset_ms": m.clock_offset_ms if measured else None,
            "clock_rtt_ms": round(m.clock_rtt_us / 1000, 3) if peer else None,
            "clock_age_ms": m.clock_age_ms if peer else None,
        }

    return {
        "node_id": status.node_id,
        "is_leader": status.is_leader,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "term": status.term,
        "epoch_term": status.epoch_term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "ready": status.ready,
        "connected_workers": status.connected_workers,
        "clock_offset_ms": status.clock_offset_ms if clock else None,
        "clock_healthy": status.clock_healthy if clock else None,
        "clock_measured": status.clock_measured if clock else None,
        "clock_correction_ms": status.clock_correction_ms if clock else None,
        "clock_max_offset_ms": status.clock_max_offset_ms if clock else None,
        "storage": storage(status.storage),
        "versions": versions(status.versions),
        "versions_mismatch": status.versions_mismatch or None,
        "dispatch_held": status.dispatch_held,
        # the cluster's feature level as this node applied it (docs/operations.md, "Upgrades")
        "features": list(status.features),
        "features_waiting": status.features_waiting or None,
        # membership (docs/operations.md, "Membership changes"); "voter" from a server without it
        "role": status.role or "voter",
        "membership_version": status.membership_version,
        "membership_change": (
            {
                "kind": "add" if status.membership_change.kind == 1 else "remove",
                "node_id": status.membership_change.member.node_id,
                "began_index": status.membership_change.began_index,
                "progress": status.membership_progress or None,
            }
            if status.HasField("membership_change")
            else None
        ),
        "members": [
            {
                "node_id": m.node_id,
                "raft_address": m.raft_address,
                "grpc_address": m.grpc_address,
                "http": m.http_address or None,  # its HTTP listener ([http] address), when known
                "connected": m.connected,
                "role": m.role or "voter",
                **member_clock(m),
                "storage": storage(m.storage),
                "versions": versions(m.versions),
                # the features its release supports, as its last answer said (None: not measured)
                "features": list(m.versions.features) if m.versions.measured else None,
            }
            for m in status.members
        ],
    }


# ------------------------------------------------------------------------------------------ statistics


def counts_to_json(c: common_pb2.OutcomeCounts) -> dict[str, int]:
    return {
        "runs": c.runs,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "timed_out": c.timed_out,
        "cancelled": c.cancelled,
        "lost": c.lost,
        "expired": c.expired,
    }


def quantiles_to_json(q: stats_pb2.Quantiles) -> dict[str, int]:
    return {
        "samples": q.samples,
        "p50_ms": q.p50_ms,
        "p95_ms": q.p95_ms,
        "p99_ms": q.p99_ms,
        "max_ms": q.max_ms,
        "min_ms": q.min_ms,
        "mean_ms": q.mean_ms,
    }


def task_stats_to_json(s: stats_pb2.TaskStats) -> dict[str, Any]:
    """A task's statistics (`schedctl task stats -o json`, docs/cli.md)."""
    out: dict[str, Any] = {"task_id": s.task_id, "name": s.name, "namespace": s.namespace or "default"}
    time_fields(out, "since", s.since_ms)
    time_fields(out, "until", s.until_ms)
    out["window"] = counts_to_json(s.window)
    out["success_rate"] = s.success_rate
    out["failure_rate"] = s.failure_rate
    out["duration"] = quantiles_to_json(s.duration)
    out["lateness"] = quantiles_to_json(s.lateness)
    out["total"] = counts_to_json(s.total)
    out["last_outcome"] = enum_name(common_pb2.ExecutionState, s.last_outcome, "EXECUTION_")
    time_fields(out, "last_outcome_at", s.last_outcome_at_ms)
    out["last_execution_id"] = s.last_execution_id
    return out


def cluster_stats_to_json(s: stats_pb2.ClusterStats) -> dict[str, Any]:
    """The cluster's statistics (`schedctl stats -o json`, docs/cli.md)."""
    out: dict[str, Any] = {}
    time_fields(out, "since", s.since_ms)
    time_fields(out, "until", s.until_ms)
    out["window"] = counts_to_json(s.window)
    out["success_rate"] = s.success_rate
    out["failure_rate"] = s.failure_rate
    out["duration"] = quantiles_to_json(s.duration)
    out["lateness"] = quantiles_to_json(s.lateness)
    out["throughput"] = [
        {
            "minute": format_instant(p.minute_ms),
            "minute_ms": p.minute_ms,
            "runs": p.runs,
            "failures": p.failures,
        }
        for p in s.throughput
    ]
    out["top_failing"] = [task_stats_to_json(t) for t in s.top_failing]
    out["slowest"] = [task_stats_to_json(t) for t in s.slowest]
    return out
