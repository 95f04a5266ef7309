"""Burst staging: the leader fires a burst early enough that all of it is leased by its due instant.

The rules under test: an ordinary second keeps `fire_lead_ms`; a second whose backlog takes longer to
commit at `stage_rate` than the time left before its lead is fired that much earlier, never beyond
`stage_lead_ms`; the leader wakes up when a burst enters staging; the state machine accepts the staged
Fire and Grant (within its cap) and the lease holds the start until the due time; tasks that may not fire
ahead still wait for their due time; per-second counts follow every change of the wheel.
"""

from __future__ import annotations

import random

import pytest
from test_fire_ahead import DUE, Store

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.daemon.leader.staging import CountedWheel, next_stage_ms, stage_until
from cronraft.proto.v1 import common_pb2
from cronraft.raft.codec import make_id
from tests.support.grants import grants_in

D = 1_000_000_000  # a due instant on a second boundary
KW = {"fire_lead_ms": 500, "stage_lead_ms": 10_000, "rate_per_s": 2_000}


def test_an_ordinary_second_keeps_the_fire_lead() -> None:
    counts = {D // 1000: 900}  # commits in 0.45 s: fits in the 0.5 s lead
    for now in (D - 10_000, D - 2_000, D - 600):
        assert stage_until(counts, now, **KW) == now + 500
    assert next_stage_ms(counts, D - 2_000, **KW) is None


def test_a_burst_is_fired_as_early_as_its_backlog_needs() -> None:
    counts = {D // 1000: 4_000}  # 2 s of commits at 2,000/s, done when the ordinary lead would begin
    assert stage_until(counts, D - 2_501, **KW) == D - 2_001  # not yet
    assert stage_until(counts, D - 2_500, **KW) >= D  # its backlog must start now
    assert next_stage_ms(counts, D - 5_000, **KW) == D - 2_500


def test_staging_never_goes_beyond_the_stage_lead() -> None:
    counts = {D // 1000: 100_000}  # 50 s of commits: staged as early as allowed, no earlier
    assert stage_until(counts, D - 10_001, **KW) == D - 9_501
    assert stage_until(counts, D - 10_000, **KW) == D
    assert next_stage_ms(counts, D - 15_000, **KW) == D - 10_000


def test_a_small_second_after_a_burst_is_staged_with_it() -> None:
    # The later second's own fires would fit in the lead, but they wait behind the burst's backlog.
    counts = {D // 1000: 4_000, D // 1000 + 1: 10}
    assert stage_until(counts, D - 2_500, **KW) == D + 999


def test_no_staging_when_it_is_off() -> None:
    counts = {D // 1000: 100_000}
    off = dict(KW, stage_lead_ms=0)
    assert stage_until(counts, D - 5_000, **off) == D - 4_500
    assert next_stage_ms(counts, D - 5_000, **off) is None


def test_the_wake_up_time_is_when_staging_starts() -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        now = D - 20_000
        counts = {D // 1000 + rng.randrange(-15, 20): rng.choice((10, 500, 3_000, 30_000)) for _ in range(4)}

        def left(t: int, counts: dict[int, int] = counts) -> dict[int, int]:
            # What the wheel still holds at t (the ordinary advance drained the rest).
            return {b: n for b, n in counts.items() if (b + 1) * 1000 > t + 500}

        if stage_until(left(now), now, **KW) > now + 500:
            continue  # already staging: the wake-up is for what is not staged yet
        nxt = next_stage_ms(left(now), now, **KW)
        if nxt is None:
            assert all(stage_until(left(t), t, **KW) == t + 500 for t in range(now, D + 20_000, 250))
            continue
        # Never late: nothing is staged before the wake-up time. Exact when nothing drained meanwhile.
        assert all(stage_until(left(t), t, **KW) == t + 500 for t in range(now, nxt, 250))
        if left(nxt) == left(now):
            checked += 1
            assert stage_until(left(nxt), nxt, **KW) > nxt + 500
    assert checked > 50


def test_counts_follow_every_change_of_the_wheel() -> None:
    rng = random.Random(3)
    wheel: CountedWheel[int] = CountedWheel(now_ms=0)
    model: dict[int, int] = {}
    now = 0
    for _ in range(3_000):
        op = rng.random()
        if op < 0.6:
            k, due = rng.randrange(200), now + rng.randrange(0, 30_000)
            wheel.add(k, due)
            model[k] = due
        elif op < 0.8:
            k = rng.randrange(200)
            assert wheel.cancel(k) is (model.pop(k, None) is not None)
        else:
            now += rng.randrange(0, 3_000)
            for k, _ in wheel.advance(now):
                del model[k]
        expected: dict[int, int] = {}
        for due in model.values():
            expected[due // 1000] = expected.get(due // 1000, 0) + 1
        assert wheel.counts == expected


# -- the leader core over a real state machine ------------------------------------------------------


def staging_leader(s: Store, capacity: int) -> LeaderCore:
    n = iter(range(1, 1 << 30))
    core = LeaderCore(
        s.kv,
        LeaderSettings(horizon_ms=10_000, fire_lead_ms=500, stage_lead_ms=5_000, stage_rate=1_000),
        node_id="n1",
        term=1,
        new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
    )
    core.on_epoch_committed(DUE - 9_000, 0)
    core.worker_connected("w1", capacity, ["default"], {})
    return core


@pytest.mark.parametrize("size", [1_500])
def test_the_leader_stages_a_burst_and_the_leases_hold_every_start_until_the_due_time(size: int) -> None:
    s = Store()
    eager = {s.create(i) for i in range(size)}
    held = s.create(size, overlap=common_pb2.OVERLAP_SKIP)  # may not fire ahead, whatever the burst
    core = staging_leader(s, capacity=size + 1)
    start = DUE - 500 - (size + 1)  # the backlog (1,501 fires) takes 1.501 s at 1,000/s
    assert core.tick(start - 1, 1) == []
    assert core.next_wakeup_ms(start - 1, 1) == 1  # it wakes up for the staging, not the due time

    cmds = core.tick(start, 2)
    fires = [c.fire for c in cmds if c.HasField("fire")]
    grants = grants_in(cmds)
    assert {f.task_id for f in fires} == eager and len(grants) == size
    assert {f.lead_ms for f in fires} == {grants[0].lead_ms} and grants[0].lead_ms >= DUE - start
    results = s.apply(cmds)
    assert all(r.applied for r in results), {r.error for r in results if not r.applied}
    core.on_committed(cmds, results, start + 100, 102)
    leases = [lease for _, msg in core.drain_outgoing() for lease in msg.leases.leases]
    assert len(leases) == size
    assert {lease.start_at_ms for lease in leases} == {DUE}
    assert {lease.start_delay_ms for lease in leases} == {DUE - start - 100}

    # The task that may not fire ahead is fired at its due time, with no lead.
    assert not any(c.HasField("fire") for c in core.tick(DUE - 1, 3))
    at_due = [c.fire for c in core.tick(DUE, 4) if c.HasField("fire")]
    assert [(f.task_id, f.lead_ms) for f in at_due] == [(held, 0)]


def test_the_state_machine_refuses_a_fire_beyond_its_cap() -> None:
    from cronraft.raft.firing import MAX_FIRE_LEAD_MS

    s = Store()
    tid = s.create(1)
    res = s.fire(tid, DUE - MAX_FIRE_LEAD_MS - 1, MAX_FIRE_LEAD_MS + 5_000)
    assert not res.applied and res.error_code == "not_due"
    assert s.fire(tid, DUE - MAX_FIRE_LEAD_MS, MAX_FIRE_LEAD_MS).applied
