"""raft.pysyncobj_adapter.RaftNode: a follower's acknowledgement never moves the leader's next index to it
back (pysyncobj set it to the acknowledged position, so a long round trip made the leader send the
in-flight entries again and the follower truncate applied entries: docs/multi-region.md); a `reset`
answer still does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pysyncobj import SyncObj

from cronraft.raft.pysyncobj_adapter import RaftNode


def _deliver(monkeypatch: pytest.MonkeyPatch, next_index: int, message: dict[str, Any]) -> int:
    """Run RaftNode's handler on a leader whose next index to follower "f" is `next_index`, with
    pysyncobj's own handler doing what 0.3.17 does with an answer: next index := the answer's."""

    def pysyncobj_handler(self: Any, node: Any, msg: dict[str, Any]) -> None:
        if msg["type"] == "next_node_idx" and (msg["reset"] or msg["success"]):
            self._SyncObj__raftNextIndex[node] = msg["next_node_idx"]

    monkeypatch.setattr(SyncObj, "_SyncObj__onMessageReceived", pysyncobj_handler, raising=False)
    leader = SimpleNamespace(_SyncObj__raftNextIndex={"f": next_index})
    RaftNode._SyncObj__onMessageReceived(leader, "f", message)
    return int(leader._SyncObj__raftNextIndex["f"])


def _answer(next_node_idx: int, *, success: bool = True, reset: bool = False) -> dict[str, Any]:
    return {"type": "next_node_idx", "next_node_idx": next_node_idx, "success": success, "reset": reset}


def test_an_acknowledgement_of_older_entries_keeps_the_next_index_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Entries up to 120 sent; the follower acknowledges up to 100: 101-120 are on their way, not resent.
    assert _deliver(monkeypatch, 121, _answer(101)) == 121
    # An acknowledgement beyond what the leader assumed moves it forward.
    assert _deliver(monkeypatch, 121, _answer(130)) == 130


def test_a_reset_still_moves_the_next_index_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # The follower lacks entries (it restarted, a connection dropped what was in flight): send again.
    assert _deliver(monkeypatch, 121, _answer(90, success=False, reset=True)) == 90


def test_other_messages_pass_through_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _deliver(monkeypatch, 121, {"type": "append_entries", "term": 1}) == 121
