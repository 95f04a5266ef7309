"""raft.pysyncobj_adapter.RaftNode's handling of a follower's answer on the leader: an acknowledgement never
moves the next index to it back (pysyncobj set it to the acknowledged position, so a long round trip made
the leader send the in-flight entries again: docs/multi-region.md, 750949a), and a refusal moves it back
only once per epoch (the refusals of the appends in flight with the first one made the leader resend from
one old index again and again: S19)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from cronraft.raft.append_flow import PeerFlow
from cronraft.raft.pysyncobj_adapter import RaftNode


def _leader(next_index: int, match_index: int = 0) -> Any:
    flow = PeerFlow(itertools.count(1).__next__, term=1)
    return SimpleNamespace(
        _SyncObj__raftNextIndex={"f": next_index},
        _SyncObj__raftMatchIndex={"f": match_index},
        _SyncObj__lastResponseTime={},
        _flow=lambda _node: flow,
        flow=flow,
    )


def _answer(next_node_idx: int, *, success: bool = True, epoch: int | None = None) -> dict[str, Any]:
    message = {
        "type": "next_node_idx",
        "next_node_idx": next_node_idx,
        "success": success,
        "reset": not success,
    }
    if epoch is not None:
        message["cr_epoch"] = epoch
    return message


def _deliver(leader: Any, message: dict[str, Any]) -> tuple[int, int]:
    RaftNode._on_follower_answer(leader, "f", message)
    return leader._SyncObj__raftNextIndex["f"], leader._SyncObj__raftMatchIndex["f"]


def test_an_acknowledgement_of_older_entries_keeps_the_next_index_ahead() -> None:
    # Entries up to 120 sent; the follower acknowledges up to 100: 101-120 are on their way, not resent.
    leader = _leader(121)
    assert _deliver(leader, _answer(101)) == (121, 100)
    # An acknowledgement beyond what the leader assumed moves it forward.
    assert _deliver(leader, _answer(130)) == (130, 129)
    # A late acknowledgement never moves the match index back.
    assert _deliver(leader, _answer(110)) == (130, 129)


def test_a_refusal_moves_the_next_index_back_once_per_epoch() -> None:
    leader = _leader(121, 80)
    epoch = leader.flow.epoch
    # The follower lacks entries (it restarted, a connection dropped what was in flight): send again.
    assert _deliver(leader, _answer(90, success=False, epoch=epoch)) == (90, 80)
    leader._SyncObj__raftNextIndex["f"] = 105  # resent 90-104 since
    # The refusals of the other appends sent before the first refusal came back: ignored.
    assert _deliver(leader, _answer(90, success=False, epoch=epoch)) == (105, 80)
    # A refusal of an append sent after the move back counts.
    assert _deliver(leader, _answer(95, success=False, epoch=leader.flow.epoch)) == (95, 80)


def test_an_older_release_s_refusal_without_an_epoch_still_counts() -> None:
    leader = _leader(121)
    assert _deliver(leader, _answer(90, success=False)) == (90, 0)
