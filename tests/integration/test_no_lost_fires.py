"""No fire lost to a fault between the grant and the due instant (issue 17), with real processes.

A fire committed ahead of its due time (fire ahead, `fire_lead_ms`) is leased before the instant and the
worker holds the start until the leader confirms it. Before issue 17, a fault in that window dropped the
fire: the leader isolated (here: SIGSTOP, which cuts it from everything at once) left the held start
unconfirmed, the worker fenced it unstarted and reported a failed attempt, which the next leader accepted;
a worker paused past its lease's expiry lost it to an expiry counted as an attempt (at_most_once: lost).
Now each ends with the payload run exactly once, as attempt 1. at_most_once is the strictest contract
(never run twice), so it is the one tested.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, ledger_command, read_ledger, wait_for

pytestmark = pytest.mark.integration

LEAD_MS = 3_000  # a wide window between the grant and the instant, for the fault to land in
TTL_MS = 2_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path,
        n=3,
        lease_ttl_ms=TTL_MS,
        heartbeat_interval_ms=300,
        scheduler_overrides={"fire_lead_ms": LEAD_MS, "stage_lead_ms": 0},
    )
    c.env["CRONRAFT_AUDIT_DIR"] = str(tmp_path / "audit")
    c.start()
    try:
        yield c
    finally:
        for node in c.nodes:  # never leave a stopped process behind
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
        for w in c.workers.values():
            if w.poll() is None:
                os.kill(w.pid, signal.SIGCONT)
        c.stop()


def held_execution(client: Client, ledger: Path, due_in_ms: int) -> common_pb2.Execution:
    """An at_most_once one-time task due in `due_in_ms`; its execution once leased ahead of that."""
    task = client.create_task(
        "held",
        at(int(time.time() * 1000) + due_in_ms),
        command(*ledger_command(ledger)),
        guarantee="at-most-once",
    )

    def leased() -> common_pb2.Execution | None:
        for e in client.list_executions(task.task_id):
            if e.state == common_pb2.EXECUTION_RUNNING:
                return e
        return None

    ex = wait_for(leased, 20, "the fire to be leased ahead", interval_s=0.02)
    assert ex.not_before_ms > int(time.time() * 1000) + 300, "leased too late for the fault to land first"
    return ex


def ended(client: Client, execution_id: str, timeout_s: float = 60) -> common_pb2.Execution:
    def done() -> common_pb2.Execution | None:
        try:
            e = client.get_execution(execution_id)
        except Exception:  # a node may be stopped: the SDK tries the others on the next poll
            return None
        return e if e.state not in (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING) else None

    return wait_for(done, timeout_s, "a final state")


def assert_ran_once_as_attempt_1(done: common_pb2.Execution, ledger: Path) -> None:
    """Succeeded, as attempt 1 (a lease that ended before its payload began spent nothing), and the
    payload ran exactly once."""
    assert done.state == common_pb2.EXECUTION_SUCCEEDED, (
        common_pb2.ExecutionState.Name(done.state),
        done.error,
    )
    assert done.attempt == 1
    unstarted = [a for a in done.attempts if a.outcome == common_pb2.ATTEMPT_NOT_STARTED]
    assert len(unstarted) == done.regrants
    assert read_ledger(ledger) == [(done.execution_id, done.nominal_time_ms, 1)]  # ran once


def test_the_leader_isolated_between_the_grant_and_the_instant_loses_no_fire(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_worker("w1")
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=10) as client:
        first = held_execution(client, ledger, due_in_ms=LEAD_MS)
        leader = cluster.leader()
        assert leader is not None and leader.proc is not None
        os.kill(leader.proc.pid, signal.SIGSTOP)  # cut from nodes and workers, before the confirmation
        try:
            # The held start goes unconfirmed and is fenced unstarted; the others elect a new leader.
            wait_for(cluster.leader, 30, "a new leader")
            done = ended(client, first.execution_id)
        finally:
            os.kill(leader.proc.pid, signal.SIGCONT)
    # Either the worker reached the new leader before its held start's deadline (which then confirmed
    # it) or it fenced the start and reported it unstarted: run once as attempt 1 in both cases.
    assert_ran_once_as_attempt_1(done, ledger)


def test_a_worker_paused_before_the_instant_past_its_lease_loses_no_fire(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_worker("w1")
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=10) as client:
        first = held_execution(client, ledger, due_in_ms=LEAD_MS)
        worker = cluster.workers["w1"]
        os.kill(worker.pid, signal.SIGSTOP)  # holds the lease, unconfirmed, and says nothing more
        try:
            cluster.start_worker("w2")  # takes the fire once the leader expires the silent lease
            done = ended(client, first.execution_id)
        finally:
            os.kill(worker.pid, signal.SIGCONT)  # it wakes, fences its held start, reports nothing ran
    assert_ran_once_as_attempt_1(done, ledger)
    assert done.worker_id == "w2" and done.regrants == 1  # the leader knew the held start never began
    assert (done.token.term, done.token.index) > (first.token.term, first.token.index)
