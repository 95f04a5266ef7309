"""Poison pills with real processes (issue 11, "a total apply"): no command can stop the log.

- The calendar include chain: a client puts ~1,000 calendars, each including the previous one. Before
  the fix the include check recursed once per calendar, apply raised RecursionError at about the 988th,
  and the replicator retried that entry forever: every later write timed out, on every node, and again
  after a restart. Now the 17th is refused (include depth at most 16) before it is proposed, and the
  node keeps answering writes at once.
- A handler exception injected by the `raft.apply` failpoint on every node of a 3-node cluster: the
  client gets INTERNAL with the reason, the commands committed with it and after it apply, and the
  replicas agree (the same applied index, the same store digest), also when one of them rebuilds its
  store by replaying the journal.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, at, command
from cronraft.errors import CronraftError, InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.calendar import MAX_INCLUDE_DEPTH
from cronraft.raft.digest import digest
from tests.support.replay import same_state

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def weekend(name: str, include: str = "") -> common_pb2.Calendar:
    cal = common_pb2.Calendar(name=name, include=[include] if include else [])
    cal.exclude.add().weekdays.days.extend([6, 7])
    return cal


def create_goes_through(client: Client, name: str) -> common_pb2.Task:
    """A write after the poison commits and is read back (a stuck log answers it with a timeout instead,
    the client's deadline: the outcome is asserted, not how long it took)."""
    task = client.create_task(name, at(int(time.time() * 1000) + HOUR_MS), command("true"))
    assert client.get_task(task.task_id).spec.name == name
    return task


def digests(cluster: Cluster) -> list[dict[str, Any]]:
    """Each stopped node's applied index and store digest (raft.digest, in process)."""
    return [digest(cluster.root / node.node_id) for node in cluster.nodes]


def agree(cluster: Cluster, stores: list[dict[str, Any]], scratch: Path) -> None:
    """The stopped members hold one state, compared at one index: an entry can still commit after the
    convergence (the leader's retention step) and reach some members only before they exit."""
    same_state(
        {n.node_id: d for n, d in zip(cluster.nodes, stores, strict=True)},
        {n.node_id: cluster.root / n.node_id for n in cluster.nodes},
        scratch,
    )


def test_a_thousand_calendar_include_chain_is_refused_and_the_node_keeps_writing(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, n=1)
    clusters.append(cluster)
    cluster.start()
    refusals: list[tuple[int, InvalidArgument]] = []
    with Client(cluster.servers, timeout_s=5) as client:
        previous = ""
        for i in range(1000):
            try:
                client.put_calendar(weekend(f"c{i}", previous))
            except InvalidArgument as e:
                refusals.append((i, e))
            previous = f"c{i}"
        # c0 .. c16 stored (c16 is 16 includes deep); c17 is refused for its depth, and every later
        # one because the calendar it includes was refused: all answered at once, none timed out.
        first, deep = refusals[0]
        assert first == MAX_INCLUDE_DEPTH + 1 and len(refusals) == 1000 - first
        assert deep.field == "calendar.include"
        assert deep.problem == (
            f"include depth above {MAX_INCLUDE_DEPTH}: c17 -> c16 -> c15 -> c14 -> ... -> c2 -> c1 -> c0 "
            f"(at most {MAX_INCLUDE_DEPTH} includes from a calendar down to the last one it includes)"
        )
        assert {e.field for _, e in refusals[1:]} == {"calendar.include[0]"}
        assert client.get_calendar(f"c{MAX_INCLUDE_DEPTH}").include == [f"c{MAX_INCLUDE_DEPTH - 1}"]
        create_goes_through(client, "after-the-chain")


def test_a_handler_exception_is_recorded_on_every_replica_and_the_log_moves_on(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, n=3)
    cluster.env["CRONRAFT_FAILPOINTS"] = "raft.apply=raise:put_calendar:poison"
    clusters.append(cluster)
    cluster.start()
    with Client(cluster.servers, timeout_s=10) as client:
        with pytest.raises(CronraftError) as raised:
            client.put_calendar(weekend("poison-1"))
        assert str(raised.value) == (
            "internal: the command failed when applied and changed nothing: "
            "RuntimeError: failpoint raft.apply: injected failure for put_calendar"
        )
        # The poison among concurrent writes (group commit puts them in the same entries): the others
        # apply, the poison leaves nothing.
        with ThreadPoolExecutor(8) as pool:
            poison = pool.submit(client.put_calendar, weekend("poison-2"))
            fine = [pool.submit(client.put_calendar, weekend(f"fine-{i}")) for i in range(4)]
            tasks = [
                pool.submit(
                    client.create_task, f"t{i}", at(int(time.time() * 1000) + HOUR_MS), command("true")
                )
                for i in range(8)
            ]
            with pytest.raises(CronraftError, match="injected failure"):
                poison.result()
            assert [f.result().name for f in fine] == [f"fine-{i}" for i in range(4)]
            assert len({t.result().task_id for t in tasks}) == 8
        create_goes_through(client, "after-the-poison")
        assert sorted(c.name for c in client.list_calendars()) == [f"fine-{i}" for i in range(4)]
    cluster.wait_converged()
    cluster.stop()
    before = digests(cluster)
    agree(cluster, before, tmp_path / "replay-before")

    # A replica that rebuilds its store from the journal (no snapshot was taken) applies the poisoned
    # entries again, fails them again in the same way, and ends identical to the others.
    shutil.rmtree(cluster.root / "node3" / "state")
    cluster.start()
    with Client(cluster.servers, timeout_s=10) as client:
        create_goes_through(client, "after-the-replay")
    wait_for(
        lambda: (
            len({n.status().applied_index for n in cluster.nodes}) == 1
            and cluster.nodes[2].status().applied_index > before[2]["applied_index"]
        ),
        30,
        "node3 to replay the journal and catch up",
    )
    cluster.stop()
    agree(cluster, digests(cluster), tmp_path / "replay-after")
