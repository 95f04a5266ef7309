"""A stopped node's state at an earlier index, rebuilt from its own Raft journal through the state
machine: to compare members that stopped at different indexes (an entry can still commit after a
test's last wait and reach only some members before they exit: the leader's own, a stopping worker's).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

from cronraft.raft.digest import digest
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
    sm = StateMachine(kv)
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
    index any of them applied (each rebuilt from its own journal, and the stores that stopped there)."""
    lowest = min(d["applied_index"] for d in stores.values())
    if all(d["applied_index"] == lowest for d in stores.values()):
        assert len({repr(sorted(d.items())) for d in stores.values()}) == 1, stores
        return
    rebuilt = {nid: state_at(data_dirs[nid], lowest, scratch / f"replay-{nid}") for nid in stores}
    stopped_there = [d for d in stores.values() if d["applied_index"] == lowest]
    assert len({repr(sorted(d.items())) for d in [*rebuilt.values(), *stopped_there]}) == 1, (stores, rebuilt)
