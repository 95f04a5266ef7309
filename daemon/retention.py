"""The leader's retention duty: one `Prune` command every `prune_interval_ms`, sooner while work is left,
none while the cluster is quiet and nothing is due.

Every decision is taken inside apply (raft.retention), from the command's stamped time and the stored
state; the leader only says when, with its `[retention]` table as the defaults and a budget per step
(`prune_max_deletes` records, `prune_max_visits` tasks), so that a step is never a long apply. While the
last step used its whole budget, the next follows after `BACKLOG_PAUSE_S`; a backlog of a million
executions at 500 a step goes in minutes without holding the log for long at any moment.

Idle: once a whole sweep (every task, `PruneReport.wrapped`) deleted nothing while no other command
committed, the duty waits until the earliest time something it saw becomes deletable
(`PruneReport.next_ms`), at most `IDLE_MAX_S`, or until another command commits (`activity`): a quiet
cluster's log then stays still (nothing but retention would move it), and a busy one is pruned at the
normal pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from cronraft.daemon.clock import Clock
from cronraft.daemon.config import RetentionConfig
from cronraft.errors import CronraftError, ResourceExhausted
from cronraft.proto.v1 import commands_pb2

log = structlog.get_logger("cronraft.retention")

BACKLOG_PAUSE_S = 0.05
REFUSED_PAUSE_S = 1.0
SUMMARY_EVERY_S = 60.0
IDLE_MAX_S = 600.0

Submit = Callable[[Sequence[commands_pb2.Command]], Awaitable[list[commands_pb2.CommandResult]]]


def policy(cfg: RetentionConfig) -> commands_pb2.RetentionPolicy:
    """The defaults a Prune carries: the config's table in milliseconds (0: no limit)."""
    return commands_pb2.RetentionPolicy(
        keep_executions=cfg.keep_executions,
        execution_max_age_ms=cfg.execution_max_age_s * 1000,
        ended_task_max_age_ms=cfg.ended_task_max_age_s * 1000,
        log_max_age_ms=cfg.log_max_age_s * 1000,
        audit_max_age_ms=cfg.audit_max_age_s * 1000,
        audit_max_records=cfg.audit_max_records,
    )


def prune_command(cfg: RetentionConfig, now_ms: int) -> commands_pb2.Command:
    return commands_pb2.Command(
        stamped_at_ms=now_ms,
        prune=commands_pb2.Prune(
            defaults=policy(cfg), max_deletes=cfg.prune_max_deletes, max_visits=cfg.prune_max_visits
        ),
    )


async def run(
    submit: Submit,
    clock: Clock,
    cfg: RetentionConfig,
    *,
    stopped: Callable[[], bool],
    activity: asyncio.Event | None = None,
) -> None:
    """Propose retention steps until `stopped()` (the leader's term ended): the runner cancels it too.
    `activity` is set by the runner whenever another command commits (see the module docstring)."""
    totals = commands_pb2.PruneReport()
    last_summary = time.monotonic()
    cycle = _Cycle()
    if activity is not None:
        activity.clear()
    while not stopped():
        pause = cfg.prune_interval_ms / 1000
        try:
            (res,) = await submit([prune_command(cfg, clock.now_ms())])
        except ResourceExhausted:
            pause = max(pause, REFUSED_PAUSE_S)  # nothing proposed now could apply: wait
        except CronraftError as e:
            log.debug("retention step not applied", error=str(e))
        else:
            p = res.pruned
            _add(totals, p)
            cycle.add(p)
            if p.more:
                pause = min(pause, BACKLOG_PAUSE_S)
            elif p.wrapped:
                busy = cycle.deleted or (activity is not None and activity.is_set())
                if not busy and activity is not None:
                    pause = max(pause, cycle.idle_s(clock.now_ms()))
                cycle = _Cycle()
                if activity is not None:
                    activity.clear()
        now = time.monotonic()
        if now - last_summary >= SUMMARY_EVERY_S:
            if _deleted(totals):
                log.info(
                    "retention deleted",
                    executions=totals.executions,
                    tasks=totals.tasks,
                    ledger_records=totals.ledger_records,
                    logs=totals.logs,
                    audit_records=totals.audit_records,
                    seconds=round(now - last_summary),
                )
            totals = commands_pb2.PruneReport()
            last_summary = now
        if activity is None or pause <= cfg.prune_interval_ms / 1000:
            await asyncio.sleep(pause)
        else:  # idle: until something is due, or another command commits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(activity.wait(), pause)


def _deleted(p: commands_pb2.PruneReport) -> int:
    return p.executions + p.tasks + p.ledger_records + p.logs + p.audit_records


def _add(totals: commands_pb2.PruneReport, p: commands_pb2.PruneReport) -> None:
    totals.executions += p.executions
    totals.tasks += p.tasks
    totals.ledger_records += p.ledger_records
    totals.logs += p.logs
    totals.audit_records += p.audit_records


class _Cycle:
    """One sweep of every task: what it deleted, and the earliest deadline it saw."""

    def __init__(self) -> None:
        self.deleted = 0
        self.next_ms = 0

    def add(self, p: commands_pb2.PruneReport) -> None:
        self.deleted += _deleted(p)
        if p.next_ms and (not self.next_ms or p.next_ms < self.next_ms):
            self.next_ms = p.next_ms

    def idle_s(self, now_ms: int) -> float:
        """How long nothing needs a step (at most IDLE_MAX_S)."""
        if not self.next_ms:
            return IDLE_MAX_S
        return max(0.0, min(IDLE_MAX_S, (self.next_ms - now_ms) / 1000))


__all__ = ["BACKLOG_PAUSE_S", "IDLE_MAX_S", "policy", "prune_command", "run"]
