"""The bulk API on a real 3-node cluster: 5,000 tasks imported in batches, readable on every node; imported
tasks due within the leader's horizon fire; a re-run of the same import creates nothing twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, InvalidArgument, at, command
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, n=3)
    try:
        c.start()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def _spec(name: str, due_ms: int, group: str) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name=name,
        tags={"import": group},
        schedule=at(due_ms),
        payload=command("true"),
        queue="nobody",  # no worker: a fire commits, its execution waits
    )


def test_import_5000_tasks(cluster: Cluster) -> None:
    far = int(time.time() * 1000) + 3_600_000
    specs = [_spec(f"bulk-{i}", far, "big") for i in range(5_000)]
    with Client(cluster.servers, timeout_s=30) as client:
        result = client.import_tasks(specs, import_id="it-5000")
        assert result.created == 5_000 and len(result.batches) == 5
        ids = list(result.task_ids())
        assert len(set(ids)) == 5_000
        # Any node answers reads from its own store, a follower perhaps behind the leader that
        # acknowledged the import (docs/multi-region.md, "Where clients and workers connect"); which node
        # this client reads from is the SDK's routing (a relayed write is answered by the follower, which
        # has not necessarily applied it: NotFound once, when ImportTasks was relayed). So every node
        # first applies what the leader has committed, then the reads may go anywhere.
        cluster.core.wait_caught_up()
        task = client.get_task(ids[4_321])
        assert task.spec.name == "bulk-4321" and task.next_fire_ms == far
        listed = [t.task_id for t in client.list_tasks(tags={"import": "big"}, page_size=1000)]
        assert listed == ids  # ids are consecutive per batch and batches are in order: creation order

        again = client.import_tasks(specs, import_id="it-5000")  # the same import again: nothing new
        assert again.created == 0 and again.replayed == 5_000 and list(again.task_ids()) == ids

        bad = [_spec("ok", far, "bad"), _spec("", far, "bad")]
        with pytest.raises(InvalidArgument) as err:
            client.import_tasks(bad)
        assert err.value.field == "batches[0].specs[1].name"
        assert list(client.list_tasks(tags={"import": "bad"})) == []

        soon = int(time.time() * 1000) + 1_500
        due = client.import_tasks([_spec(f"soon-{i}", soon, "soon") for i in range(50)])
        for task_id in due.task_ids():
            wait_for(
                lambda t=task_id: client.get_task(t).state == common_pb2.TASK_COMPLETED, 20, "imported fire"
            )
    cluster.wait_converged()
    for node in cluster.nodes:  # every node stored them
        with Client(node.grpc_address) as reader:
            assert reader.get_task(ids[0]).spec.name == "bulk-0"
