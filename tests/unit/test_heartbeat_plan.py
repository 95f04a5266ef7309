"""What a worker's heartbeats list (client.worker.heartbeat_plan): full ones every interval, confirming
ones between them listing only the held starts they confirm, at least CONFIRM_SPACING_S apart.

W5 (500 tasks every second, each on its own anchor) found the old rule, one full heartbeat per start
instant, quadratic in the rate: starts began 0.4 s late at 500 fires/s."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from fake_gateway import connected_stream, fake_leader, get, make_lease, offers, running_worker, worker_config

from cronraft.client.worker.heartbeat_plan import (
    CONFIRM_SPACING_S,
    HeldStarts,
    is_full_due,
    spacing_wait,
    to_list,
)
from cronraft.client.worker.leases import CONFIRM_AHEAD_S, Attempt, lease_ref
from cronraft.client.worker.results import RESULT_BUSY_S, STORE_LINGER_S, linger_s
from cronraft.proto.v1 import common_pb2, worker_pb2


def attempt(eid: str, *, start_at: float, held: bool = True, confirmed_at: float = float("-inf")) -> Attempt:
    lease = make_lease(eid, argv=["true"])
    if held:
        lease.start_delay_ms = 1
    runner: Any = None  # not used by the plan
    return Attempt(
        (eid, (1, 1)), lease, runner, 30.0, deadline=1e9, start_at=start_at, confirmed_at=confirmed_at
    )


def test_an_attempt_is_listed_by_one_lease_ref_made_at_its_first_listing() -> None:
    a = attempt("a", start_at=10.0)
    a.lease.token.term, a.lease.token.index = 3, 7
    ref = lease_ref(a)
    assert ref.execution_id == "a" and (ref.token.term, ref.token.index) == (3, 7)
    assert lease_ref(a) is ref  # reused: copied into each heartbeat, made once
    heartbeat = worker_pb2.Heartbeat(leases=[ref, lease_ref(a)])
    assert [r.execution_id for r in heartbeat.leases] == ["a", "a"]


def test_a_full_heartbeat_lists_every_renewable_attempt() -> None:
    a, b, c = attempt("a", start_at=10.0), attempt("b", start_at=99.0, held=False), attempt("c", start_at=5.0)
    c.revoked = True
    assert [x.key[0] for x in to_list([a, b, c], 1.0, full=True)] == ["a", "b"]


def test_a_confirming_heartbeat_lists_only_the_held_starts_it_confirms() -> None:
    sent = 100.0
    due_now = attempt("due", start_at=sent + CONFIRM_AHEAD_S)  # confirmable: at most CONFIRM_AHEAD_S ahead
    later = attempt("later", start_at=sent + CONFIRM_AHEAD_S + 0.001)  # a later heartbeat confirms it
    done = attempt("done", start_at=sent + 0.05, confirmed_at=sent - 0.02)  # already confirmed
    running = attempt("running", start_at=sent - 5.0, held=False)  # not held: renewed by full ones
    fenced = attempt("fenced", start_at=sent)
    fenced.fenced = True
    listed = to_list([due_now, later, done, running, fenced], sent, full=False)
    assert [x.key[0] for x in listed] == ["due"]


def test_the_held_starts_index_lists_what_a_walk_of_every_attempt_would() -> None:
    rng = random.Random(7)
    attempts: dict[Any, Attempt] = {}
    index = HeldStarts()
    for step in range(400):
        now = step * 0.005
        for _ in range(rng.randint(0, 3)):  # new leases, held or not, starting up to 0.5 s ahead
            a = attempt(
                f"e{len(attempts)}-{step}", start_at=now + rng.uniform(0, 0.5), held=rng.random() < 0.8
            )
            attempts[a.key] = a
            index.add(a)
        for a in list(attempts.values()):  # some end, some are confirmed by an answer, some fenced
            r = rng.random()
            if r < 0.02:
                del attempts[a.key]
            elif r < 0.04:
                a.confirmed_at = now
            elif r < 0.045:
                a.fenced = True
        walked = to_list(attempts.values(), now, full=False)
        assert sorted(x.key for x in index.confirming(attempts, now)) == sorted(x.key for x in walked)
    assert len(index) < len(attempts) + 50  # ended and confirmed attempts leave the index


def test_full_heartbeats_keep_their_interval_and_complete_listings_are_full() -> None:
    assert is_full_due(10.0, 9.9, 5.0, asked=False, list_finished=False)  # the interval's timer
    assert not is_full_due(10.0, 9.9, 5.0, asked=True, list_finished=False)  # a held start asked
    assert is_full_due(10.0, 5.0, 5.0, asked=True, list_finished=False)  # the interval passed anyway
    assert is_full_due(10.0, 9.9, 5.0, asked=True, list_finished=True)  # a new leader's listing


def test_heartbeats_are_spaced() -> None:
    assert spacing_wait(10.0, 10.0) == pytest.approx(CONFIRM_SPACING_S)
    assert spacing_wait(10.0, 10.0 - CONFIRM_SPACING_S) == 0.0
    assert spacing_wait(10.0, float("-inf")) == 0.0


@pytest.mark.asyncio
async def test_held_starts_on_many_instants_are_confirmed_without_listing_every_lease_each_time(
    tmp_path: Path,
) -> None:
    """40 held leases, one start instant every 10 ms: each starts, confirmed, and the heartbeats list
    each lease about once (the old rule listed every held lease in each instant's heartbeat: ~800
    references here, growing with the square of the rate)."""
    n = 40
    async with (
        fake_leader(heartbeat_interval_ms=10_000, lease_ttl_ms=30_000) as leader,
        running_worker(worker_config([leader.address], tmp_path / "o")),
    ):
        stream = await connected_stream(leader)
        leases = []
        for i in range(n):
            lease = make_lease(f"exec-{i}", argv=["true"])
            lease.start_delay_ms = 150 + 10 * i
            leases.append(lease)
        stream.put_nowait(offers(*leases))
        results = [await get(leader.results) for _ in range(n)]
        await asyncio.sleep(0)
    assert sorted(r.execution_id for r in results) == sorted(f"exec-{i}" for i in range(n))
    assert {r.outcome for r in results} == {common_pb2.ATTEMPT_SUCCEEDED}
    heartbeats: list[worker_pb2.Heartbeat] = []
    while not leader.heartbeats.empty():
        heartbeats.append(leader.heartbeats.get_nowait())
    listed = [ref.execution_id for hb in heartbeats for ref in hb.leases]
    assert set(listed) == {f"exec-{i}" for i in range(n)}  # each confirmed by a heartbeat listing it
    assert len(listed) <= 3 * n, f"{len(listed)} lease references in {len(heartbeats)} heartbeats"
    sent = [hb.sent_mono_ms for hb in heartbeats]
    assert all(b - a >= CONFIRM_SPACING_S * 1000 - 1 for a, b in itertools.pairwise(sent))


def test_a_fresh_result_waits_for_others_only_while_results_flow() -> None:
    """Under load a result waits STORE_LINGER_S so that those ending close together share an outbox
    write and a message (the leader proposes each message's results as one Raft entry); a lone result
    is written and sent at once."""
    assert linger_s(100.0, 100.0 - RESULT_BUSY_S / 2) == STORE_LINGER_S
    assert linger_s(100.0, 100.0 - 2 * RESULT_BUSY_S) == 0.0
    assert linger_s(100.0, float("-inf")) == 0.0
