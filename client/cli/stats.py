"""`schedctl task stats ID` and `schedctl stats`: the statistics the cluster keeps as executions end (a
task's, the cluster's: raft/stats.py), as text or JSON (client._render); the argparse sub-parsers and
the handlers."""

from __future__ import annotations

import argparse
from typing import Any

from cronraft.client import _render
from cronraft.client.cli.common import emit
from cronraft.client.cli.executions import when_arg
from cronraft.client.cli.options import Parser, examples
from cronraft.client.sdk import Client
from cronraft.proto.v1 import common_pb2, stats_pb2

__all__ = ["add_cluster_stats_parser", "add_task_stats_parser"]

_SINCE_HELP = "the window starts on the hour at or before WHEN (DURATION ago, RFC 3339; default 24h, most 7d)"


def add_task_stats_parser(task_commands: Any, opts: Parser) -> None:
    stats = task_commands.add_parser(
        "stats",
        parents=[opts],
        help="a task's statistics: runs, success and failure rates, durations, lateness",
        epilog=examples("schedctl task stats t0001", "schedctl task stats t0001 --since 7d -o json"),
    )
    stats.add_argument("task_id", metavar="ID")
    stats.add_argument("--since", metavar="WHEN", help=_SINCE_HELP)
    stats.set_defaults(handler=_task_stats)


def add_cluster_stats_parser(commands: Any, opts: Parser) -> None:
    stats = commands.add_parser(
        "stats",
        parents=[opts],
        help="the cluster's statistics: throughput, outcomes, top failing and slowest tasks",
        epilog=examples("schedctl stats", "schedctl stats --since 6h --limit 5 -o json"),
    )
    stats.add_argument("--since", metavar="WHEN", help=_SINCE_HELP)
    stats.add_argument(
        "--limit", type=int, default=10, metavar="N", help="tasks in each ranking (default 10, at most 20)"
    )
    stats.set_defaults(handler=_cluster_stats)


def _task_stats(client: Client, args: argparse.Namespace) -> None:
    s = client.get_task_stats(args.task_id, since=when_arg(args.since, "--since"))
    emit(args, _render.task_stats_to_json(s), lambda: task_stats_text(s))


def _cluster_stats(client: Client, args: argparse.Namespace) -> None:
    s = client.cluster_stats(since=when_arg(args.since, "--since"), limit=args.limit)
    emit(args, _render.cluster_stats_to_json(s), lambda: cluster_stats_text(s))


# ------------------------------------------------------------------------------------------------- text


def _ms(ms: int) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h10m."""
    if ms < 1_000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        return f"{ms // 60_000}m{ms // 1000 % 60:02d}s"
    return f"{ms // 3_600_000}h{ms // 60_000 % 60:02d}m"


def _counts(c: Any) -> str:
    return (
        f"{c.runs} runs: {c.succeeded} succeeded, {c.failed} failed, {c.timed_out} timed out, "
        f"{c.cancelled} cancelled, {c.lost} lost, {c.expired} expired"
    )


def _quantiles(q: stats_pb2.Quantiles) -> str:
    if not q.samples:
        return "-"
    return (
        f"p50 {_ms(q.p50_ms)}  p95 {_ms(q.p95_ms)}  p99 {_ms(q.p99_ms)}  max {_ms(q.max_ms)}  "
        f"({q.samples} samples)"
    )


def _window(since_ms: int, until_ms: int) -> str:
    return f"{_render.format_instant(since_ms)} .. {_render.format_instant(until_ms)}"


def task_stats_text(s: stats_pb2.TaskStats) -> str:
    last = (
        _render.enum_name(common_pb2.ExecutionState, s.last_outcome, "EXECUTION_") if s.last_outcome else "-"
    )
    when = _render.format_instant(s.last_outcome_at_ms) if s.last_outcome_at_ms else ""
    rows = [
        ("task", f"{s.task_id} ({s.name})"),
        ("window", _window(s.since_ms, s.until_ms)),
        ("outcomes", _counts(s.window)),
        ("success rate", f"{s.success_rate:.1%}" if s.window.runs else "-"),
        ("failure rate", f"{s.failure_rate:.1%}" if s.window.runs else "-"),
        ("duration", _quantiles(s.duration)),
        ("lateness", _quantiles(s.lateness)),
        ("last outcome", f"{last} {when} {s.last_execution_id}".strip()),
        ("all time", _counts(s.total)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _ranking(title: str, tasks: Any, value: Any) -> list[str]:
    if not tasks:
        return [f"{title}: none"]
    lines = [f"{title}:"]
    lines += [f"  {t.task_id}  {t.name:30.30s}  {value(t)}" for t in tasks]
    return lines


def cluster_stats_text(s: stats_pb2.ClusterStats) -> str:
    recent = s.throughput[-10:]
    lines = [
        f"window        {_window(s.since_ms, s.until_ms)}",
        f"outcomes      {_counts(s.window)}",
        f"success rate  {s.success_rate:.1%}" if s.window.runs else "success rate  -",
        f"failure rate  {s.failure_rate:.1%}" if s.window.runs else "failure rate  -",
        f"duration      {_quantiles(s.duration)}",
        f"lateness      {_quantiles(s.lateness)}",
        f"last hour     {sum(p.runs for p in s.throughput)} ended, "
        f"{sum(p.failures for p in s.throughput)} failed",
        "per minute    " + " ".join(str(p.runs) for p in recent) + "  (the last 10 minutes, oldest first)",
    ]
    lines += _ranking(
        "top failing", s.top_failing, lambda t: f"{_failures(t.window)} failures of {t.window.runs}"
    )
    lines += _ranking(
        "slowest", s.slowest, lambda t: f"max {_ms(t.duration.max_ms)}  p95 {_ms(t.duration.p95_ms)}"
    )
    return "\n".join(lines)


def _failures(c: Any) -> int:
    return int(c.failed + c.timed_out + c.lost + c.expired)
