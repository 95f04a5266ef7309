"""A client command committed after its caller went away still reaches the leader runner
(daemon.client_commits.propose_observed): S14 seed 5 lost a fire to the old path, where the caller's
cancellation skipped `LeaderRunner.observe` and the task never entered the leader's wheel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cronraft.daemon.client_commits import propose_observed
from cronraft.errors import OutcomeUnknown
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import GroupCommitter, Late
from tests.unit.test_groupcommit import GatedReplicator, cmd, echo_apply

Command = commands_pb2.Command
CommandResult = commands_pb2.CommandResult


class _Proposals:
    """A submit whose outcome the test decides, and what was observed."""

    def __init__(self) -> None:
        self.outcome: asyncio.Future[list[CommandResult]] | None = None
        self.submitted = asyncio.Event()
        self.observed: list[tuple[list[str], int]] = []

    async def submit(self, cmds: list[Command], *, late: Late | None = None) -> list[CommandResult]:
        self.outcome = asyncio.get_running_loop().create_future()
        self.submitted.set()
        return await self.outcome

    def observe(self, cmds: Sequence[Command], results: Sequence[CommandResult]) -> None:
        self.observed.append(([c.request_id for c in cmds], len(results)))


@pytest.mark.asyncio
async def test_a_committed_command_is_observed_once() -> None:
    p = _Proposals()
    caller = asyncio.create_task(propose_observed(p.submit, [cmd("a")], p.observe))
    await p.submitted.wait()
    assert p.outcome is not None
    p.outcome.set_result([CommandResult(applied=True)])
    assert len(await caller) == 1
    assert p.observed == [(["a"], 1)]


@pytest.mark.asyncio
async def test_a_command_that_commits_after_its_caller_went_away_is_observed() -> None:
    p = _Proposals()
    caller = asyncio.create_task(propose_observed(p.submit, [cmd("a")], p.observe))
    await p.submitted.wait()
    caller.cancel()  # the client's deadline passed: gRPC cancels the handler
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert p.observed == []
    assert p.outcome is not None and not p.outcome.cancelled()  # the proposal goes on
    p.outcome.set_result([CommandResult(applied=True)])
    for _ in range(3):
        await asyncio.sleep(0)  # the proposal's task, then its done callback
    assert p.observed == [(["a"], 1)]


@pytest.mark.asyncio
async def test_a_proposal_that_fails_is_not_observed_whether_or_not_its_caller_waits() -> None:
    waited, gone = _Proposals(), _Proposals()
    first = asyncio.create_task(propose_observed(waited.submit, [cmd("a")], waited.observe))
    second = asyncio.create_task(propose_observed(gone.submit, [cmd("b")], gone.observe))
    await waited.submitted.wait()
    await gone.submitted.wait()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert waited.outcome is not None and gone.outcome is not None
    waited.outcome.set_exception(OutcomeUnknown("timed out"))
    gone.outcome.set_exception(OutcomeUnknown("timed out"))
    with pytest.raises(OutcomeUnknown):
        await first
    for _ in range(3):
        await asyncio.sleep(0)
    assert waited.observed == [] and gone.observed == []


@pytest.mark.asyncio
async def test_with_the_group_committer_a_cancelled_callers_entry_commits_and_is_observed() -> None:
    """Through the real GroupCommitter: the caller is cancelled while its entry waits to be replicated;
    the entry then commits, and its results are observed (the committer used to drop them)."""
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    gc = GroupCommitter(rep)
    gc.start()
    observed: list[list[str]] = []
    seen = asyncio.Event()

    def observe(cmds: Sequence[Command], results: Sequence[CommandResult]) -> None:
        observed.append([c.request_id for c in cmds])
        seen.set()

    caller = asyncio.create_task(propose_observed(gc.submit, [cmd("made")], observe))
    for _ in range(10):
        await asyncio.sleep(0)  # taken into an entry, held at the gate
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    rep.gate.set()
    await asyncio.wait_for(seen.wait(), 10)
    assert [ids for _, ids in entries] == [["made"]]
    assert observed == [["made"]]
    await gc.close()


@pytest.mark.asyncio
async def test_a_command_that_commits_after_its_caller_was_told_outcome_unknown_is_observed() -> None:
    """The committer's own timeout (5 s for a client's command) passes: the caller gets OutcomeUnknown,
    and the entry, committed later, is observed then."""
    entries: list[tuple[int, list[str]]] = []
    rep = GatedReplicator(echo_apply(entries))
    gc = GroupCommitter(rep, timeout_s=0.05)
    gc.start()
    seen = asyncio.Event()
    observed: list[list[str]] = []

    def observe(cmds: Sequence[Command], results: Sequence[CommandResult]) -> None:
        observed.append([c.request_id for c in cmds])
        seen.set()

    with pytest.raises(OutcomeUnknown):
        await propose_observed(gc.submit, [cmd("slow")], observe)
    assert observed == []
    rep.gate.set()  # the log moves again: the entry commits
    await asyncio.wait_for(seen.wait(), 10)
    assert observed == [["slow"]] and [ids for _, ids in entries] == [["slow"]]
    await gc.close()
