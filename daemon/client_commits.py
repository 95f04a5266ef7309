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

The same for a proposal whose caller is told OutcomeUnknown (the committer's 5 s timeout: an overloaded or
stalled log) and that applies later, however much later within this leader's term: the replicator keeps
the proposal's outcome and the group committer hands the results over then (raft.groupcommit's `late`,
`Replicator.propose`'s). An entry committed only under a later leader is found by that leader's load at
its Epoch. (The committer used to hold its slot up to 60 s for such an entry, and a commit later than
that was never observed: the task stayed out of this leader's wheel.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import Late

log = structlog.get_logger("cronraft.daemon.client_commits")

Command = commands_pb2.Command
CommandResult = commands_pb2.CommandResult
Observe = Callable[[Sequence[Command], Sequence[CommandResult]], None]


class Submit(Protocol):
    """`GroupCommitter.submit` as used here."""

    def __call__(
        self, commands: list[Command], *, late: Late | None = None
    ) -> Awaitable[list[CommandResult]]: ...


async def propose_observed(submit: Submit, cmds: list[Command], observe: Observe) -> list[CommandResult]:
    """`submit(cmds)` (the group committer's), then `observe(cmds, results)`. If the caller is cancelled
    meanwhile, the proposal goes on and `observe` is called when its results come; if the caller is told
    OutcomeUnknown (its timeout) and the entry commits later, `observe` is called then (the committer's
    `late`). A proposal that fails is not observed, and its failure reaches the caller, as before."""

    def late(results: list[CommandResult]) -> None:
        _observe_safely(observe, cmds, results)

    proposal = asyncio.ensure_future(submit(cmds, late=late))
    try:
        results = await asyncio.shield(proposal)
    except asyncio.CancelledError:
        proposal.add_done_callback(functools.partial(_observe_done, observe, cmds))
        raise
    observe(cmds, results)
    return results


def _observe_done(
    observe: Observe, cmds: list[Command], proposal: asyncio.Future[list[CommandResult]]
) -> None:
    if proposal.cancelled() or proposal.exception() is not None:
        return  # no results (yet): the committer's `late` tells if the entry commits after all
    _observe_safely(observe, cmds, proposal.result())


def _observe_safely(observe: Observe, cmds: list[Command], results: Sequence[CommandResult]) -> None:
    try:
        observe(cmds, results)
    except Exception:  # a callback of the loop: say it, never lose the loop
        log.exception("observing a committed client command failed", commands=len(cmds))


__all__ = ["propose_observed"]
