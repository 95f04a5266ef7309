"""Client commands proposed on the leader, and the leader runner's view of their outcome.

A client's command (a task created, updated, deleted, triggered, imported) reaches the leader's timing
wheel only through the runner (`LeaderRunner.observe`): the wheel loads the due index once per horizon
step, so a task whose due time is already within the loaded horizon when it commits is known to the
leader from that observation alone. The command commits whether or not its caller still waits: a client
whose deadline passes, or that goes away, cancels the RPC's handler while its entry is being replicated.
Before, that cancellation skipped the observation, and such a task was never fired by that leader (fault
scenario S14, seed 5, 2026-12-07: a one-time task created 1 s before its due instant right after a
whole-cluster restart; the client's 8 s deadline passed 5 ms after the leader stamped the create, which
then committed and stayed scheduled, unfired, to the end of the run). So the proposal runs shielded from
the caller's cancellation, and its outcome is observed when it comes (`propose_observed`).

What is still not observed: a proposal whose outcome is unknown to the proposer (the replicator's timeout,
OutcomeUnknown) and that commits later in the same term. A new leader loads every committed task at its
Epoch; within a term, such a late commit is missed as before (docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence

import structlog

from cronraft.proto.v1 import commands_pb2

log = structlog.get_logger("cronraft.daemon.client_commits")

Command = commands_pb2.Command
CommandResult = commands_pb2.CommandResult
Observe = Callable[[Sequence[Command], Sequence[CommandResult]], None]


async def propose_observed(
    submit: Callable[[list[Command]], Awaitable[list[CommandResult]]],
    cmds: list[Command],
    observe: Observe,
) -> list[CommandResult]:
    """`submit(cmds)` (the group committer's), then `observe(cmds, results)`; if the caller is cancelled
    meanwhile, the proposal goes on and `observe` is called when its results come (not on its failure).
    A failure of the proposal itself reaches the caller, unobserved, as before."""
    proposal = asyncio.ensure_future(submit(cmds))
    try:
        results = await asyncio.shield(proposal)
    except asyncio.CancelledError:
        proposal.add_done_callback(functools.partial(_observe_late, observe, cmds))
        raise
    observe(cmds, results)
    return results


def _observe_late(
    observe: Observe, cmds: list[Command], proposal: asyncio.Future[list[CommandResult]]
) -> None:
    if proposal.cancelled() or proposal.exception() is not None:
        return  # not committed as far as this node knows: nothing to observe
    try:
        observe(cmds, proposal.result())
    except Exception:  # a callback of the loop: say it, never lose the loop
        log.exception("observing a committed client command failed", commands=len(cmds))


__all__ = ["propose_observed"]
