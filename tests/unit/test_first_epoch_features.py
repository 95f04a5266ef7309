"""A brand-new cluster's first leader puts every feature in its first epoch (daemon.leader_runner
`_first_features`): it waits, briefly, for the members' first clock-probe answers (what `raise_features`
offers it) rather than proposing an epoch without features and raising them a moment later, a window in
which requests needing a feature (statistics, results, membership) were refused. A store that already has
an epoch never waits; nor does a fresh one past FIRST_FEATURES_WAIT_S."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cronraft.daemon import leader_runner
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.proto.v1 import commands_pb2
from cronraft.raft import features
from cronraft.raft.kv import MemKV
from cronraft.raft.records import META_EPOCH
from tests.support.clock import FakeClock


class Committer:
    """Records each submission and answers that every command applied."""

    max_batch = 100
    max_bytes = 1 << 20

    def __init__(self) -> None:
        self.submissions: list[list[commands_pb2.Command]] = []

    async def submit(
        self, cmds: Sequence[commands_pb2.Command], **_: object
    ) -> list[commands_pb2.CommandResult]:
        self.submissions.append(list(cmds))
        return [commands_pb2.CommandResult(applied=True) for _ in cmds]


def _runner(kv: MemKV, committer: Committer) -> LeaderRunner:
    return LeaderRunner(
        kv=kv,
        committer=committer,  # type: ignore[arg-type]
        settings=LeaderSettings(),
        node_id="n1",
        term=1,
        clock=FakeClock(wall=1_000, mono=1_000),  # type: ignore[arg-type]
        still_leader=lambda: True,
        heartbeat_interval_ms=1_000,
    )


def _first(committer: Committer) -> tuple[bool, frozenset[str]]:
    """Whether the first submission is an epoch, and the features raised with it."""
    first = committer.submissions[0]
    raised = frozenset(n for c in first if c.HasField("raise_features") for n in c.raise_features.features)
    return first[0].HasField("epoch"), raised


async def _until_submitted(committer: Committer) -> None:
    for _ in range(200):
        if committer.submissions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the runner proposed nothing")


def test_a_fresh_clusters_first_epoch_waits_for_the_members_features() -> None:
    async def main() -> Committer:
        committer = Committer()
        runner = _runner(MemKV(), committer)
        runner.start()
        await asyncio.sleep(0.3)
        assert committer.submissions == []  # no member heard from yet: the epoch waits
        runner.raise_features(frozenset({features.RESULTS}))  # one member has not answered yet
        await asyncio.sleep(0.2)
        assert committer.submissions == []
        runner.raise_features(features.SUPPORTED)  # every member answered (daemon.versioncheck.gate)
        await _until_submitted(committer)
        await runner.stop()
        return committer

    assert _first(asyncio.run(main())) == (True, features.SUPPORTED)


def test_it_waits_no_longer_than_its_bound_and_a_store_with_an_epoch_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leader_runner, "FIRST_FEATURES_WAIT_S", 0.2)

    async def main(kv: MemKV) -> Committer:
        committer = Committer()
        runner = _runner(kv, committer)
        runner.start()
        await _until_submitted(committer)
        await runner.stop()
        return committer

    assert _first(asyncio.run(main(MemKV()))) == (True, frozenset())  # a member never answered
    older = MemKV()
    with older.write() as txn:  # an existing cluster (an older release's: no feature in force)
        txn.put("meta", META_EPOCH, commands_pb2.Epoch(term=3, leader_id="n2").SerializeToString())
    # No wait at all: with a bound of 60 s, a runner that waited for it would miss a 20 s deadline (wide
    # enough for a loaded machine; a 0.15 s deadline under the 0.2 s bound failed under load).
    monkeypatch.setattr(leader_runner, "FIRST_FEATURES_WAIT_S", 60.0)
    started = asyncio.run(asyncio.wait_for(main(older), 20.0))
    assert _first(started) == (True, frozenset())
