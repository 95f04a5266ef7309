"""A stopped node's state at an earlier index, rebuilt from its own Raft journal through the state
machine: to compare members that stopped at different indexes (an entry can still commit after a
test's last wait and reach only some members before they exit: the leader's own, a stopping worker's).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cronraft.raft.digest import digest, store_path
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV


def state_at(data_dir: Path, index: int, scratch: Path, start: Path | None = None) -> dict[str, Any]:
    """The digest of the state at `index`, rebuilt from the node's journal (it must not have been
    compacted) from index 1, or from `start`, a store image (a restored node: its journal begins at the
    backup's index, `start` is the backup's store)."""
    from pysyncobj.journal import FileJournal  # tests only: the journal's reader

    # The caller's scratch directory may not exist yet (same_state's rare path: stores stopped apart).
    scratch.mkdir(parents=True)
    shutil.copy(data_dir / "raft" / "raft.journal", scratch / "journal")
    if start is not None:
        (scratch / "state").mkdir()
        shutil.copy(start / "data.mdb", scratch / "state" / "data.mdb")
    journal = FileJournal(str(scratch / "journal"))
    kv = LmdbKV(scratch / "state", map_size=256 << 20)
    sm = StateMachine(kv, fresh_features=frozenset())  # as a node starts: its log raises its features
    try:
        first = sm.last_applied() + 1
        assert journal[0][1] <= first, "the journal was compacted: no replay from the store's index"
        for i in range(len(journal)):
            entry, at, _term = journal[i]
            if at > index:
                break
            if at < first or entry[0] != 0:  # pysyncobj's no-op and membership entries never reach our apply
                continue
            call = pickle.loads(entry[1:])  # pysyncobj's (method id, args[, kwargs]): args[0] is ours
            sm.apply_entry(at, call[1][0])
        assert sm.last_applied() == index
    finally:
        journal._destroy()
        kv.close()
    return digest(scratch / "state")


def same_state(stores: dict[str, dict[str, Any]], data_dirs: dict[str, Path], scratch: Path) -> None:
    """Assert that members whose stores stopped as `stores` (node id -> digest with its applied_index)
    hold one state: the same digest if they stopped at one index, else the same state at the lowest
    index any of them applied (each rebuilt from its own journal, and the stores that stopped there).

    A member whose journal was compacted (a test with a small snapshot_min_entries) cannot be rebuilt
    from index 1; it is checked forward instead: a store that stopped at the lowest index, with the
    member's own journal entries after it applied, must give exactly the member's stopped state."""
    lowest = min(d["applied_index"] for d in stores.values())
    if all(d["applied_index"] == lowest for d in stores.values()):
        assert len({repr(sorted(d.items())) for d in stores.values()}) == 1, stores
        return
    stopped_there = {nid: d for nid, d in stores.items() if d["applied_index"] == lowest}
    assert len({repr(sorted(d.items())) for d in stopped_there.values()}) == 1, stopped_there
    if not any(compacted(data_dirs[nid]) for nid in stores):
        rebuilt = {nid: state_at(data_dirs[nid], lowest, scratch / f"replay-{nid}") for nid in stores}
        assert len({repr(sorted(d.items())) for d in [*rebuilt.values(), *stopped_there.values()]}) == 1, (
            stores,
            rebuilt,
        )
        return
    base = store_path(data_dirs[next(iter(stopped_there))])
    for nid, d in stores.items():
        if nid in stopped_there:
            continue
        forward = state_at(data_dirs[nid], d["applied_index"], scratch / f"forward-{nid}", start=base)
        assert forward == d, (nid, d, forward)


def compacted(data_dir: Path) -> bool:
    """True if the node's journal no longer begins at index 1 (pysyncobj compacted it into a snapshot)."""
    from pysyncobj.journal import FileJournal  # tests only: the journal's reader

    with tempfile.TemporaryDirectory() as scratch:  # a copy: opening a journal may rewrite its file
        copy = Path(scratch) / "journal"
        shutil.copy(data_dir / "raft" / "raft.journal", copy)
        journal = FileJournal(str(copy))
        try:
            return len(journal) > 0 and journal[0][1] > 1
        finally:
            journal._destroy()
