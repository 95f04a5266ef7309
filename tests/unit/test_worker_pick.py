"""Which worker gets a lease: with few workers on a queue, the one with most free slots; with many, the
next one in rotation that has a free slot and the task's labels (a fire must not cost a pass over
thousands of workers). Every worker that connects is eligible, one that leaves is not.
"""

from __future__ import annotations

from collections import Counter

from test_fire_ahead import DUE, Store

from cronraft.daemon.leader import EXACT_PICK, LeaderCore, LeaderSettings
from cronraft.raft.codec import make_id
from tests.support.grants import grants_in


def leader(s: Store) -> LeaderCore:
    n = iter(range(1, 1 << 30))
    core = LeaderCore(
        s.kv,
        LeaderSettings(horizon_ms=10_000, max_commands_per_tick=100_000),
        node_id="n1",
        term=1,
        new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
    )
    core.on_epoch_committed(DUE - 5_000, 0)
    return core


def granted(core: LeaderCore, now_ms: int) -> Counter[str]:
    return Counter(g.worker_id for g in grants_in(core.tick(now_ms, 1)))


def test_few_workers_the_one_with_most_free_slots() -> None:
    s = Store()
    s.create(1)
    core = leader(s)
    core.worker_connected("small", 2, ["default"], {})
    core.worker_connected("big", 5, ["default"], {})
    assert granted(core, DUE) == {"big": 1}


def test_many_workers_each_gets_a_lease_before_any_gets_two_and_the_rest_waits() -> None:
    s = Store()
    workers = 3 * EXACT_PICK
    for i in range(workers + 5):
        s.create(i)
    core = leader(s)
    for i in range(workers):
        core.worker_connected(f"w{i}", 1, ["default"], {})
    core.worker_connected("other-queue", 10, ["etl"], {})
    got = granted(core, DUE)
    assert got == {f"w{i}": 1 for i in range(workers)}  # five fires wait pending: no slot left


def test_many_workers_labels_and_departures_are_respected() -> None:
    s = Store()
    gpu_task = s.create(0, worker_labels={"gpu": "yes"})
    for i in range(1, 40):
        s.create(i)
    core = leader(s)
    for i in range(2 * EXACT_PICK):
        core.worker_connected(f"w{i}", 1, ["default"], {"gpu": "yes"} if i == 7 else {})
    gone = {f"w{i}" for i in range(20) if i != 7}
    for worker_id in gone:
        core.worker_disconnected(worker_id)
    cmds = core.tick(DUE, 1)
    task_of = {c.fire.execution_id: c.fire.task_id for c in cmds if c.HasField("fire")}
    worker_of = {task_of[g.execution_id]: g.worker_id for g in grants_in(cmds)}
    assert worker_of[gpu_task] == "w7"
    assert not gone & set(worker_of.values())
    # 45 connected workers of one slot each: all 40 fires granted, no worker twice.
    assert len(worker_of) == 40 and len(set(worker_of.values())) == 40


def test_a_reconnecting_worker_gets_back_exactly_the_slots_of_its_leases() -> None:
    s = Store()
    for i in range(4):
        s.create(i)
    core = leader(s)
    core.worker_connected("w1", 2, ["default"], {})
    core.worker_connected("w2", 2, ["default"], {})
    cmds = core.tick(DUE, 1)
    results = s.apply(cmds)
    assert all(r.applied for r in results)
    core.on_committed(cmds, results, DUE + 5, 2)
    held = {w: set(core.workers[w].inflight) for w in ("w1", "w2")}
    assert len(held["w1"]) == 2 and len(held["w2"]) == 2
    core.worker_disconnected("w1")
    core.worker_connected("w1", 2, ["default"], {})
    assert core.workers["w1"].inflight == held["w1"] and core.workers["w1"].free() == 0
    assert core.workers["w2"].inflight == held["w2"]
