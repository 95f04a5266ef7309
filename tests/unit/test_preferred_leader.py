"""daemon.preferred_leader without a cluster: when a leader outside `[cluster] preferred_leader` hands
leadership to a preferred member (connected and healthy long enough, after leading long enough), how it
holds its proposals meanwhile, and the backoff when leadership keeps coming back. A real 5-node cluster
moving leadership back to its preferred region: tests/fault/regions.py (S18)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cronraft.daemon import preferred_leader as pl
from cronraft.daemon.preferred_leader import PreferredLeader, ProposalGate, choose
from cronraft.raft.replicator import RaftStatus


def _st(leader: bool, term: int = 2, **connected: bool) -> RaftStatus:
    return RaftStatus(
        node_id="n3",
        is_leader=leader,
        leader_id="n3" if leader else "n1",
        term=term,
        commit_index=0,
        applied_index=0,
        connected=dict(connected),
    )


def test_a_leader_outside_the_list_picks_the_first_healthy_preferred_member() -> None:
    always = {"connected_for": lambda p: 60.0, "healthy": lambda p: True, "leading_for": 60.0}
    st = _st(True, n1=True, n2=True)
    assert choose(("n1", "n2"), "n3", st, **always) == "n1"
    assert choose(("n2", "n1"), "n3", st, **always) == "n2"  # the list's order
    assert choose((), "n3", st, **always) is None  # no preference: leave it
    assert choose(("n3", "n1"), "n3", st, **always) is None  # this leader is preferred itself
    assert choose(("n1",), "n3", _st(False, n1=True), **always) is None  # only a leader hands it over
    assert choose(("n1", "n2"), "n3", _st(True, n1=False, n2=True), **always) == "n2"  # n1 unreachable
    sick = {**always, "healthy": lambda p: p != "n1"}  # n1's storage refuses writes
    assert choose(("n1", "n2"), "n3", st, **sick) == "n2"
    fresh = {**always, "connected_for": lambda p: 1.0 if p == "n1" else 60.0}  # n1 just came back
    assert choose(("n1", "n2"), "n3", st, **fresh) == "n2"
    assert choose(("n1",), "n3", st, **{**always, "leading_for": 1.0}) is None  # mid-failover: wait


class FakeRaft:
    def __init__(self) -> None:
        self.st = _st(True, n1=True)
        self.asked: list[str] = []
        self.accept_after = 2  # the transfer is refused until the member caught up

    def status(self) -> RaftStatus:
        return self.st

    async def transfer(self, target: str) -> bool:
        self.asked.append(target)
        if len(self.asked) < self.accept_after:
            return False
        self.st = _st(False, term=self.st.term + 1, n1=True)  # n1 won the election
        return True

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def on_state_change(self, cb: Any) -> None: ...

    async def transfer_leadership(self, target: str | None) -> bool:
        return await self.transfer(target or "")

    async def propose(self, payload: bytes, *, timeout_s: float, late: Any = None) -> bytes:
        return payload


def test_proposals_wait_while_the_leader_asks_for_the_transfer_and_go_on_after() -> None:
    async def scenario() -> tuple[list[str], bool, list[str]]:
        raft = FakeRaft()
        gate = ProposalGate(raft)  # type: ignore[arg-type]
        now = [0.0]
        leader = PreferredLeader(
            node_id="n3",
            preferred=("n1",),
            status=raft.status,
            healthy=lambda p: True,
            transfer=raft.transfer,
            gate=gate,
            clock=lambda: now[0],
        )
        assert leader.candidate(0.0) is None  # just connected, just leading
        now[0] = 10.0
        assert leader.candidate(10.0) == "n1"
        events: list[str] = []

        async def propose() -> None:
            await asyncio.sleep(0.01)  # while the gate is held
            events.append("asked" if gate.holding else "free")
            await gate.propose(b"x", timeout_s=1)
            events.append(f"proposed after {len(raft.asked)} asks")

        task = asyncio.create_task(propose())
        moved = await leader.hand_over("n1")
        await task
        return raft.asked, moved, events

    asked, moved, events = asyncio.run(scenario())
    assert asked == ["n1", "n1"] and moved
    assert events == ["asked", "proposed after 2 asks"]  # held until the transfer went


def test_leadership_that_keeps_coming_back_is_handed_over_less_and_less_often() -> None:
    raft = FakeRaft()
    leader = PreferredLeader(
        node_id="n3",
        preferred=("n1",),
        status=raft.status,
        healthy=lambda p: True,
        transfer=raft.transfer,
        gate=ProposalGate(raft),  # type: ignore[arg-type]
    )
    leader.observe(_st(True, term=2, n1=True), 0.0)
    assert leader.candidate(10.0) == "n1"
    leader._handed = (10.0, 3)  # the transfer went at 10 s...
    leader.observe(_st(False, term=3, n1=True), 10.5)
    leader.observe(_st(True, term=4, n1=True), 20.0)  # ...and came back 10 s later
    raft.st = _st(True, term=4, n1=True)
    assert leader.candidate(40.0) is None  # waits BACKOFF_S from the bounce
    assert leader.candidate(20.0 + pl.BACKOFF_S + 0.1) == "n1"
    assert leader._backoff == pytest.approx(2 * pl.BACKOFF_S)  # the next bounce waits twice as long


def test_a_refused_transfer_lets_proposals_go_after_the_quiesce_time() -> None:
    async def scenario() -> tuple[bool, float]:
        raft = FakeRaft()
        raft.accept_after = 10**6  # never caught up
        gate = ProposalGate(raft)  # type: ignore[arg-type]
        leader = PreferredLeader(
            node_id="n3",
            preferred=("n1",),
            status=raft.status,
            healthy=lambda p: True,
            transfer=raft.transfer,
            gate=gate,
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        moved = await leader.hand_over("n1")
        assert not gate.holding
        return moved, loop.time() - t0

    moved, took = asyncio.run(scenario())
    assert not moved
    assert pl.QUIESCE_S <= took < pl.QUIESCE_S + 0.5
