"""The table output of schedctl, free of I/O: aligned columns with an upper-case header, or one
`key: value` line per field (docs/cli.md, "Table output"). Times are RFC 3339 UTC to the second, "-" when
unset. Table output is for people; scripts use the JSON of `_render`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cronraft.client import _cron_text, _render
from cronraft.proto.v1 import cluster_pb2, common_pb2, scheduler_pb2


def _time(ms: int) -> str:
    """RFC 3339 UTC to the second for tables; "-" for none."""
    return _render.format_instant(ms)[:19] + "Z" if ms else "-"


def format_duration(ms: int) -> str:
    """Compact duration: 90000 -> "1m30s", 1500 -> "1s500ms", 0 -> "0s"."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


def _schedule_text(schedule: common_pb2.Schedule) -> str:
    kind = schedule.WhichOneof("kind")
    if kind == "cron":
        return f"cron {schedule.cron.expression} ({schedule.cron.time_zone or 'UTC'})"
    if kind == "at":
        return f"at {_time(schedule.at.at_ms)}"
    if kind == "fixed_rate":
        anchor = f" from {_time(schedule.fixed_rate.anchor_ms)}" if schedule.fixed_rate.anchor_ms else ""
        return f"every {format_duration(schedule.fixed_rate.period_ms)}{anchor}"
    if kind == "fixed_delay":
        stop = ", stop on failure" if schedule.fixed_delay.stop_on_failure else ""
        return f"delay {format_duration(schedule.fixed_delay.delay_ms)}{stop}"
    return "-"


def _window_text(schedule: common_pb2.Schedule) -> str:
    parts = []
    if schedule.start_at_ms:
        parts.append(f"from {_time(schedule.start_at_ms)}")
    if schedule.end_at_ms:
        parts.append(f"until {_time(schedule.end_at_ms)}")
    if schedule.max_runs:
        parts.append(f"at most {schedule.max_runs} runs")
    return ", ".join(parts) or "-"


def _timing_text(schedule: common_pb2.Schedule) -> str:
    parts = []
    if schedule.jitter_ms:
        parts.append(f"jitter up to {format_duration(schedule.jitter_ms)}")
    parts.append(f"dst gap {_render.policy_name(common_pb2.DstGapPolicy, schedule.dst_gap, 'DST_GAP_')}")
    parts.append(f"dst fold {_render.policy_name(common_pb2.DstFoldPolicy, schedule.dst_fold, 'DST_FOLD_')}")
    return ", ".join(parts)


def _calendars_text(schedule: common_pb2.Schedule) -> str:
    if not schedule.calendars:
        return "-"
    action = _render.policy_name(common_pb2.CalendarAction, schedule.calendar_action, "CALENDAR_")
    return f"{', '.join(schedule.calendars)} ({action})"


def _policies_text(spec: common_pb2.TaskSpec) -> str:
    misfire = _render.policy_name(common_pb2.MisfirePolicy, spec.misfire, "MISFIRE_")
    overlap = _render.policy_name(common_pb2.OverlapPolicy, spec.overlap, "OVERLAP_")
    window = format_duration(spec.catchup_window_ms) if spec.catchup_window_ms else "default"
    cap = str(spec.max_catchup) if spec.max_catchup else "default"
    return f"misfire {misfire} (catch-up window {window}, max {cap}), overlap {overlap}"


def _payload_text(payload: common_pb2.Payload) -> str:
    kind = payload.WhichOneof("kind")
    if kind == "command":
        return shlex.join(payload.command.argv)
    if kind == "shell":
        return f"sh -c {shlex.quote(payload.shell.script)}"
    if kind == "http":
        h = payload.http
        parts = [f"http {h.method or 'GET'} {h.url}"]
        if h.headers:
            parts.append(f"{len(h.headers)} header(s)")
        if h.body:
            parts.append(f"body {len(h.body)} bytes")
        if h.expected_status:
            parts.append("expect " + ",".join(str(c) for c in h.expected_status))
        return ", ".join(parts)
    if kind == "handler":
        return f"handler {payload.handler.name} {payload.handler.args_json or '{}'}"
    return "-"


def _retry_text(spec: common_pb2.TaskSpec) -> str:
    if not spec.HasField("retry"):
        return "none (a failed attempt is final)"
    r = spec.retry
    parts = [
        f"backoff {format_duration(r.initial_backoff_ms or 1000)} x{r.multiplier or 2.0:g} "
        f"up to {format_duration(r.max_backoff_ms or 300_000)}"
    ]
    # An http payload's exit code is the response status (-1: no response).
    http = spec.payload.WhichOneof("kind") == "http"
    word = "status" if http else "exit"

    def codes(values: Iterable[int]) -> str:
        return ",".join("no-response" if http and c == -1 else str(c) for c in values)

    if r.retryable_exit_codes:
        parts.append(f"only {word} {codes(r.retryable_exit_codes)}")
    if r.non_retryable_exit_codes:
        parts.append(f"never {word} {codes(r.non_retryable_exit_codes)}")
    if r.no_retry_on_timeout:
        parts.append("no retry on timeout")
    return ", ".join(parts)


def _notify_text(target: common_pb2.NotifyTarget) -> str:
    kind = target.WhichOneof("kind")
    what = (
        f"webhook {target.webhook_url}"
        if kind == "webhook_url"
        else f"notifier {target.notifier}"
        if kind == "notifier"
        else f"command {shlex.join(target.command.argv)}"
        if kind == "command"
        else "-"
    )
    events = [_enum(common_pb2.NotifyEvent, e, "NOTIFY_") for e in target.events]
    return f"{what} on {'+'.join(events) if events else 'every event'}"


def _pairs_text(pairs: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(pairs.items())) or "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}" for k, v in pairs)


def _enum(wrapper: Any, number: int, prefix: str = "") -> str:
    return _render.enum_name(wrapper, number, prefix)


def _with_namespace(
    headers: list[str], rows: list[list[str]], namespaces: Sequence[str], shown: bool
) -> tuple[list[str], list[list[str]]]:
    """A NAMESPACE column first, when a list spans namespaces (--all-namespaces)."""
    if not shown:
        return headers, rows
    named = [[ns or "default", *row] for ns, row in zip(namespaces, rows, strict=True)]
    return ["NAMESPACE", *headers], named


def task_table(tasks: Sequence[common_pb2.Task], *, namespaces: bool = False) -> str:
    rows = [
        [
            t.task_id,
            t.spec.name,
            _enum(common_pb2.TaskState, t.state, "TASK_"),
            _schedule_text(t.spec.schedule),
            _time(t.next_fire_ms),
            str(t.fire_count),
        ]
        for t in tasks
    ]
    headers = ["TASK_ID", "NAME", "STATE", "SCHEDULE", "NEXT_FIRE", "FIRES"]
    return _table(*_with_namespace(headers, rows, [t.spec.namespace for t in tasks], namespaces))


def task_detail(task: common_pb2.Task) -> str:
    spec = task.spec
    return _fields(
        [
            ("task_id", task.task_id),
            ("namespace", spec.namespace or "default"),
            ("name", spec.name),
            ("state", _enum(common_pb2.TaskState, task.state, "TASK_")),
            ("schedule", _schedule_text(spec.schedule)),
            ("meaning", _cron_text.describe(spec.schedule)),
            ("window", _window_text(spec.schedule)),
            ("timing", _timing_text(spec.schedule)),
            ("calendars", _calendars_text(spec.schedule)),
            ("policies", _policies_text(spec)),
            ("payload", _payload_text(spec.payload)),
            ("tags", _pairs_text(spec.tags)),
            ("queue", spec.queue or "default"),
            ("timeout", format_duration(spec.timeout_ms) if spec.timeout_ms else "cluster default"),
            ("guarantee", _enum(common_pb2.DeliveryGuarantee, spec.guarantee)),
            ("priority", _enum(common_pb2.Priority, spec.priority)),
            ("max_attempts", str(spec.max_attempts) if spec.max_attempts else "default"),
            ("retry", _retry_text(spec)),
            *[("notify", _notify_text(n)) for n in spec.notify],
            ("worker_labels", _pairs_text(spec.worker_labels)),
            ("max_concurrency", str(spec.max_concurrency) if spec.max_concurrency else "no limit"),
            ("retention", _retention_text(spec)),
            ("next_fire", _time(task.next_fire_ms)),
            ("next_due", _time(task.next_due_ms)),
            ("last_fired", _time(task.last_fired_nominal_ms)),
            ("fire_count", str(task.fire_count)),
            ("stored_executions", str(task.stored_executions)),
            ("created_at", _time(task.created_at_ms)),
            ("updated_at", _time(task.updated_at_ms)),
            ("version", str(task.version)),
            *_pause_rows(task),
        ]
    )


def _pause_rows(task: common_pb2.Task) -> list[tuple[str, str]]:
    if task.state != common_pb2.TASK_PAUSED and not task.pause_note:
        return []
    return [("paused_at", _time(task.paused_at_ms)), ("pause_note", task.pause_note or "-")]


def explain_text(response: scheduler_pb2.ExplainTaskResponse) -> str:
    head = [
        ("state", _enum(common_pb2.TaskState, response.state, "TASK_")),
        ("next_fire", _time(response.next_fire_ms)),
    ]
    if response.note:
        head.append(("pause_note", response.note))
    head.append(("records", str(len(response.records))))
    rows = [
        [
            _time(r.nominal_time_ms),
            _enum(common_pb2.FireOutcome, r.outcome),
            format_duration(r.late_ms) if r.execution_id else "-",
            r.execution_id or "-",
            r.reason or "-",
        ]
        for r in response.records
    ]
    ledger = _table(["NOMINAL_TIME (UTC)", "OUTCOME", "LATE", "EXECUTION_ID", "REASON"], rows)
    return _fields(head) + "\n\n" + ledger


def weekday(local_time: str) -> str:
    """The weekday (Mon..Sun) of an RFC 3339 local time (a `[Zone]` suffix allowed), "-" when none."""
    try:
        return datetime.fromisoformat(local_time.partition("[")[0].replace("Z", "+00:00")).strftime("%a")
    except ValueError:
        return "-"


def preview_table(fires: Sequence[scheduler_pb2.PreviewFire]) -> str:
    rows = [
        [
            _time(f.nominal_time_ms),
            _time(f.actual_ms or f.nominal_time_ms),
            f.local_time or "-",
            weekday(f.local_time),
            "; ".join(f.notes) or "-",
        ]
        for f in fires
    ]
    return _table(["NOMINAL_TIME (UTC)", "DUE (UTC)", "LOCAL_TIME", "DAY", "NOTES"], rows)


def _rule_text(rule: common_pb2.CalendarRule) -> str:
    kind = rule.WhichOneof("kind")
    if kind == "dates":
        return "dates " + ", ".join(rule.dates.dates)
    if kind == "holidays":
        sub = f"-{rule.holidays.subdivision}" if rule.holidays.subdivision else ""
        return f"holidays {rule.holidays.country}{sub}"
    if kind == "weekdays":
        return "weekdays " + ",".join(str(d) for d in rule.weekdays.days)
    if kind == "date_range":
        return f"date range {getattr(rule.date_range, 'from')}..{rule.date_range.to}"
    if kind == "time_of_day":
        return f"time of day {rule.time_of_day.start}-{rule.time_of_day.end}"
    if kind == "cron":
        return f"cron {rule.cron}"
    return "-"


def calendar_detail(calendar: common_pb2.Calendar) -> str:
    pairs = [
        ("name", calendar.name),
        ("namespace", calendar.namespace or "default"),
        ("time_zone", calendar.time_zone or "UTC"),
        ("description", calendar.description or "-"),
        ("include", ", ".join(calendar.include) or "-"),
        ("version", str(calendar.version)),
        ("updated_at", _time(calendar.updated_at_ms)),
    ]
    rules = [f"  {_rule_text(r)}" for r in calendar.exclude] or ["  (none)"]
    return _fields(pairs) + "\nexclude:\n" + "\n".join(rules)


def calendar_table(calendars: Sequence[common_pb2.Calendar], *, namespaces: bool = False) -> str:
    rows = [
        [
            c.name,
            c.time_zone or "UTC",
            str(len(c.exclude)),
            ", ".join(c.include) or "-",
            str(c.version),
            c.description or "-",
        ]
        for c in calendars
    ]
    headers = ["NAME", "TIME_ZONE", "RULES", "INCLUDE", "VERSION", "DESCRIPTION"]
    return _table(*_with_namespace(headers, rows, [c.namespace for c in calendars], namespaces))


def execution_table(executions: Sequence[common_pb2.Execution]) -> str:
    rows = [
        [
            e.execution_id,
            _time(e.nominal_time_ms),
            _enum(common_pb2.ExecutionState, e.state, "EXECUTION_"),
            str(e.attempt),
            e.worker_id or "-",
            str(e.exit_code) if e.finished_at_ms else "-",
        ]
        for e in executions
    ]
    return _table(["EXECUTION_ID", "NOMINAL_TIME", "STATE", "ATTEMPT", "WORKER", "EXIT_CODE"], rows)


def execution_detail(e: common_pb2.Execution) -> str:
    token = f"{e.token.term}.{e.token.index}" if e.HasField("token") else "-"
    rows = [
        ("execution_id", e.execution_id),
        ("task_id", e.task_id),
        ("namespace", e.namespace or "default"),
        ("state", _enum(common_pb2.ExecutionState, e.state, "EXECUTION_")),
        ("nominal_time", _time(e.nominal_time_ms)),
        ("fired_at", _time(e.fired_at_ms)),
        ("manual", "yes" if e.manual else "no"),
        ("attempt", str(e.attempt)),
        ("worker_id", e.worker_id or "-"),
        ("token", token),
        ("leased_at", _time(e.leased_at_ms)),
        ("started_at", _time(e.started_at_ms)),
        ("finished_at", _time(e.finished_at_ms)),
        ("completed_at", _time(e.completed_at_ms)),
        ("exit_code", str(e.exit_code) if e.finished_at_ms else "-"),
        ("error", e.error or "-"),
        *_not_before_row(e),
        ("waiting", e.waiting_reason or "-"),
        ("dead_lettered", "yes" if e.dead_lettered else "no"),
        ("guarantee", _enum(common_pb2.DeliveryGuarantee, e.guarantee)),
        ("priority", _enum(common_pb2.Priority, e.priority)),
    ]
    if e.cancel_requested_at_ms:
        rows.append(
            ("cancel_requested", f"{_time(e.cancel_requested_at_ms)} ({e.cancel_reason or 'no reason'})")
        )
    rows.append(("return_value", _render.tail_text(e.return_value) or "-"))
    parts = [_fields(rows)]
    if e.attempts:
        parts.append("--- attempts ---\n" + attempts_table(e.attempts))
    parts.extend(_tails(e.stdout_tail, e.stderr_tail))
    return "\n".join(parts)


_LIVE = frozenset({common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED})


def _not_before_row(e: common_pb2.Execution) -> list[tuple[str, str]]:
    """`not_before`: before any attempt finished, the due time a fire committed ahead holds its start until
    (docs/scheduling.md, "Fire ahead"); after one, a retry's backoff end. An ended execution keeps the
    field as last set, which is neither: no row (a succeeded run showed a "retry_at")."""
    if not e.attempts:
        return [("start_at", _time(e.not_before_ms))]
    if e.state in _LIVE:
        return [("retry_at", _time(e.not_before_ms))]
    return []


def _tails(stdout: bytes, stderr: bytes) -> list[str]:
    parts = []
    for label, data in (("stdout", stdout), ("stderr", stderr)):
        text = _render.tail_text(data)
        parts.append(f"--- {label} (tail) ---\n{text.rstrip(chr(10)) if text else '(empty)'}")
    return parts


def attempts_table(attempts: Sequence[common_pb2.AttemptSummary]) -> str:
    rows = [
        [
            str(a.attempt),
            _enum(common_pb2.AttemptOutcome, a.outcome, "ATTEMPT_"),
            str(a.exit_code),
            a.worker_id or "-",
            _time(a.started_at_ms),
            format_duration(a.finished_at_ms - a.started_at_ms)
            if a.finished_at_ms and a.started_at_ms
            else "-",
            a.error or "-",
        ]
        for a in attempts
    ]
    return _table(["ATTEMPT", "OUTCOME", "EXIT_CODE", "WORKER", "STARTED_AT", "DURATION", "ERROR"], rows)


def dead_letter_table(items: Sequence[common_pb2.DeadLetter], *, namespaces: bool = False) -> str:
    rows = [
        [
            d.execution_id,
            d.task_id,
            d.task_name or "-",
            _time(d.dead_at_ms),
            str(d.attempts),
            d.redriven_as or "-",
            d.reason or "-",
        ]
        for d in items
    ]
    headers = ["EXECUTION_ID", "TASK_ID", "TASK_NAME", "DEAD_AT", "ATTEMPTS", "REDRIVEN_AS", "REASON"]
    return _table(*_with_namespace(headers, rows, [d.namespace for d in items], namespaces))


def dead_letter_detail(d: common_pb2.DeadLetter, execution: common_pb2.Execution | None) -> str:
    head = _fields(
        [
            ("execution_id", d.execution_id),
            ("task_id", d.task_id),
            ("task_name", d.task_name or "-"),
            ("reason", d.reason or "-"),
            ("attempts", str(d.attempts)),
            ("nominal_time", _time(d.nominal_time_ms)),
            ("dead_at", _time(d.dead_at_ms)),
            ("redriven_as", d.redriven_as or "-"),
        ]
    )
    parts = [head]
    if execution is not None and execution.attempts:
        parts.append("--- attempts ---\n" + attempts_table(execution.attempts))
    elif execution is None:
        parts.append("--- attempts ---\n(the execution is no longer stored)")
    parts.extend(_tails(d.stdout_tail, d.stderr_tail))
    return "\n".join(parts)


def _offset(ms: int) -> str:
    return f"{ms:+d}ms"


def _retention_text(spec: common_pb2.TaskSpec) -> str:
    if not spec.HasField("retention"):
        return "cluster default"
    r = spec.retention

    def one(value: int, what: str, duration: bool) -> str:
        if value == 0:
            return f"{what} default"
        if value < 0:
            return f"{what} forever"
        return f"{what} {format_duration(value) if duration else value}"

    return ", ".join(
        (
            one(r.keep_executions, "keep", False),
            one(r.execution_max_age_ms, "executions", True),
            one(r.ended_task_max_age_ms, "ended task", True),
        )
    )


def _storage_cell(s: cluster_pb2.StorageStatus) -> str:
    if not s.measured:
        return "-"
    if not s.exhausted:
        return f"ok ({s.used_bytes / (1 << 20):.0f}/{s.max_map_size_bytes / (1 << 20):.0f} MiB)"
    return f"EXHAUSTED ({s.refused})"


def _versions_cell(v: cluster_pb2.ScheduleVersions) -> str:
    """evaluator 1, tzdata 2026f, holidays 0.109, python-dateutil 2.9.0.post0 (cronraft 0.1.0)."""
    if not v.measured:
        return "-"
    order = ["evaluator", "tzdata", "holidays", "python-dateutil"]
    names = [n for n in order if n in v.versions] + sorted(set(v.versions) - set(order))
    return ", ".join(f"{n} {v.versions[n]}" for n in names) + (
        f" (cronraft {v.cronraft})" if v.cronraft else ""
    )


def status_detail(status: cluster_pb2.StatusResponse) -> str:
    clock = status.clock_max_offset_ms > 0  # 0: a server without clock health
    pairs = [
        ("node_id", status.node_id),
        ("is_leader", "yes" if status.is_leader else "no"),
        ("leader", f"{status.leader_id or '-'} ({status.leader_address or 'address unknown'})"),
        ("ready", "yes" if status.ready else "no"),
        ("term", str(status.term)),
        ("epoch_term", str(status.epoch_term)),
        ("commit_index", str(status.commit_index)),
        ("applied_index", str(status.applied_index)),
        ("connected_workers", str(status.connected_workers)),
    ]
    if status.is_leader:
        pairs.append(("dispatching", "HELD (versions differ)" if status.dispatch_held else "yes"))
    # The cluster's feature level as this node applied it (docs/operations.md, "Upgrades").
    pairs.append(("features", ", ".join(status.features) or "none"))
    if status.features_waiting:
        pairs.append(("features_waiting", status.features_waiting))
    if status.role and status.role != "voter":
        pairs.append(("role", status.role))
    if status.HasField("membership_change"):
        change = status.membership_change
        verb = "adding" if change.kind == 1 else "removing"
        progress = f": {status.membership_progress}" if status.membership_progress else ""
        pairs.append(("membership", f"{verb} {change.member.node_id} in flight{progress}"))
    if clock:
        state = "ok" if status.clock_healthy else "UNHEALTHY"
        measured = "" if status.clock_measured else ", not measured now (too few peers answer)"
        correction = _offset(status.clock_correction_ms)
        pairs.append(
            (
                "clock_offset",
                f"{_offset(status.clock_offset_ms)} from the cluster median ({state}, bound "
                f"±{status.clock_max_offset_ms}ms, correction {correction}{measured})",
            )
        )
    head = _fields(pairs)
    if clock and not status.clock_healthy:
        head += (
            f"\n\nWARNING: {status.node_id}'s wall clock is {_offset(status.clock_offset_ms)} off the "
            f"cluster median (bound ±{status.clock_max_offset_ms}ms). Its due times are corrected by "
            "the measured offset, and while it leads it hands leadership to a follower with a good "
            "clock. Fix its time synchronisation (NTP/chrony)."
        )
    rows = [
        [
            m.node_id,
            m.grpc_address or "-",
            m.raft_address or "-",
            m.http_address or "-",
            "yes" if m.connected else "no",
            m.role or "voter",
            "yes" if m.node_id == status.leader_id else "",
            _offset(m.clock_offset_ms) if clock and m.clock_measured else "-",
            _storage_cell(m.storage),
            _versions_cell(m.versions),
        ]
        for m in status.members
    ]
    if status.versions_mismatch:
        held = (
            "The leader dispatches nothing (no fires, no grants) until they agree"
            if status.is_leader
            else "The leader dispatches nothing while it sees this too"
        )
        head += (
            f"\n\nERROR: members run other versions of what changes schedule results: "
            f"{status.versions_mismatch}. {held}: install every node from the same constraints.txt "
            "(docs/scheduling.md, Determinism across nodes)."
        )
    for m in status.members:
        if m.storage.exhausted:
            head += (
                f"\n\nWARNING: {m.node_id}'s storage is exhausted: {m.storage.reason}. Writes are refused "
                f"with RESOURCE_EXHAUSTED ({m.storage.refused}); see docs/operations.md, Storage exhausted."
            )
    columns = [
        "NODE_ID",
        "GRPC_ADDRESS",
        "RAFT_ADDRESS",
        "HTTP_ADDRESS",
        "CONNECTED",
        "ROLE",
        "LEADER",
        "CLOCK_OFFSET",
        "STORAGE",
        "VERSIONS",
    ]
    return head + "\n\n" + _table(columns, rows)
