"""The leader's retention duty: one `Prune` command every `prune_interval_ms`, sooner while work is left.

Every decision is taken inside apply (raft.retention), from the command's stamped time and the stored
state; the leader only says when, with its `[retention]` table as the defaults and a budget per step
(`prune_max_deletes` records, `prune_max_visits` tasks), so that a step is never a long apply. While the
last step used its whole budget, the next follows after `BACKLOG_PAUSE_S`; a backlog of a million
executions at 500 a step goes in minutes without holding the log for long at any moment.
"""

from __future__ import annotations

import asyncio
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

Submit = Callable[[Sequence[commands_pb2.Command]], Awaitable[list[commands_pb2.CommandResult]]]


def policy(cfg: RetentionConfig) -> commands_pb2.RetentionPolicy:
    """The defaults a Prune carries: the config's table in milliseconds (0: no limit)."""
    return commands_pb2.RetentionPolicy(
        keep_executions=cfg.keep_executions,
        execution_max_age_ms=cfg.execution_max_age_s * 1000,
        ended_task_max_age_ms=cfg.ended_task_max_age_s * 1000,
        log_max_age_ms=cfg.log_max_age_s * 1000,
    )


def prune_command(cfg: RetentionConfig, now_ms: int) -> commands_pb2.Command:
    return commands_pb2.Command(
        stamped_at_ms=now_ms,
        prune=commands_pb2.Prune(
            defaults=policy(cfg), max_deletes=cfg.prune_max_deletes, max_visits=cfg.prune_max_visits
        ),
    )


async def run(submit: Submit, clock: Clock, cfg: RetentionConfig, *, stopped: Callable[[], bool]) -> None:
    """Propose retention steps until `stopped()` (the leader's term ended): the runner cancels it too."""
    totals = commands_pb2.PruneReport()
    last_summary = time.monotonic()
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
            totals.executions += p.executions
            totals.tasks += p.tasks
            totals.ledger_records += p.ledger_records
            totals.logs += p.logs
            if p.more:
                pause = min(pause, BACKLOG_PAUSE_S)
        now = time.monotonic()
        if now - last_summary >= SUMMARY_EVERY_S:
            if totals.executions or totals.tasks or totals.ledger_records or totals.logs:
                log.info(
                    "retention deleted",
                    executions=totals.executions,
                    tasks=totals.tasks,
                    ledger_records=totals.ledger_records,
                    logs=totals.logs,
                    seconds=round(now - last_summary),
                )
            totals = commands_pb2.PruneReport()
            last_summary = now
        await asyncio.sleep(pause)


__all__ = ["BACKLOG_PAUSE_S", "policy", "prune_command", "run"]
