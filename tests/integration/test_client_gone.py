"""A task whose create commits after its client gave up is fired all the same (daemon/client_commits.py).

Fault scenario S14 (seed 5, 2026-12-07) lost a fire this way: the client's deadline cancelled the create's
handler while its entry was being replicated, the entry committed, and the leader, which had loaded its
horizon past the task's due time already, never learned of the task. Here every node applies each entry
1.5 s late (failpoint raft.before_apply), and the client, raw gRPC with no retry (an SDK retry with the
same request id would show the task to the leader through the dedup answer), waits 0.3 s: the create
commits well after the call failed."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from cronraft.client import Client, at, command, every
from cronraft.proto.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

from .harness import Cluster, ledger_command, read_ledger, wait_for

_SLOW = {"CRONRAFT_FAILPOINTS": "raft.before_apply=sleep:1500"}


def test_a_task_created_by_a_client_that_gave_up_still_fires(tmp_path: Path, clusters: list[Cluster]) -> None:
    c = Cluster(tmp_path, n=3, node_env={f"node{i}": _SLOW for i in (1, 2, 3)})
    clusters.append(c)
    c.start()
    c.start_worker("w1")
    c.wait_workers(1, timeout_s=60)
    leader = c.wait_leader(60)
    # A leader that has loaded its horizon (20 s ahead) before the create: a task firing every second,
    # seen run once. (An idle leader's first load could come after the create and find it in the store.)
    beat = tmp_path / "beat.ledger"
    with Client(leader.grpc_address, timeout_s=30) as client:
        client.create_task("beat", every("1s", int(time.time() * 1000)), command(*ledger_command(beat)))
    wait_for(lambda: read_ledger(beat) or None, 60, "the leader to fire a first task")
    ledger = tmp_path / "ran.ledger"
    due_ms = int(time.time() * 1000) + 5_000  # within the horizon loaded already (at least 10 s ahead)
    spec = common_pb2.TaskSpec(
        name="client-gone", schedule=at(due_ms), payload=command(*ledger_command(ledger))
    )
    with grpc.insecure_channel(leader.grpc_address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        try:
            stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec), timeout=0.3)
            raise AssertionError("the create answered within 0.3 s: entries are not applied late")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    # The task committed anyway (the caller only gave up waiting), and runs once, at its due time.
    rows = wait_for(
        lambda: read_ledger(ledger) or None, 60, "the task created by a client that gave up to run"
    )
    assert len(rows) == 1 and rows[0][1] == due_ms, rows
