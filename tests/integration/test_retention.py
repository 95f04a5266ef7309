"""Retention and deletion with real processes (issue 11): the leader's retention steps keep a task to
its count of executions and delete an ended task after its retention; a task with a running execution
is deleted only with force, which stops the run on its worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, every, retention
from cronraft.errors import FailedPrecondition, NotFound
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path,
        n=1,
        extra_toml="[retention]\nended_task_max_age_s = 2\nprune_interval_ms = 200\n",
    )
    failed_before = request.session.testsfailed
    c.start()
    c.start_worker("w1", capacity=4)
    c.wait_workers(1)
    yield c
    c.stop()
    if request.session.testsfailed > failed_before:
        with capsys.disabled():
            print(c.logs())


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_task_keeps_its_newest_executions_and_an_ended_task_goes(cluster: Cluster) -> None:
    with Client(cluster.servers, timeout_s=10) as client:
        once = client.create_task("once", at(now_ms() + 300), command("true"))
        often = client.create_task(
            "often", every("1s", now_ms() + 500), command("true"), retention=retention(keep_executions=3)
        )
        # The one-time task ends (its only execution succeeded): deleted 2 s later, with its execution.
        (ran,) = wait_for(lambda: list(client.list_executions(once.task_id)), 10, "the one-time run")

        def gone() -> bool:
            try:
                client.get_task(once.task_id)
            except NotFound:
                return True
            return False

        wait_for(gone, 10, "the ended task to be deleted")
        with pytest.raises(NotFound):
            client.get_execution(ran.execution_id)
        # The other keeps its newest three.
        wait_for(lambda: client.get_task(often.task_id).fire_count >= 7, 20, "seven fires")
        kept = list(client.list_executions(often.task_id))
        assert 3 <= len(kept) <= 4, kept  # the newest three, and perhaps one just fired
        newest = max(e.nominal_time_ms for e in kept)
        assert all(e.nominal_time_ms >= newest - 3_000 for e in kept)
        # (A fire may commit between the two reads.)
        assert abs(client.get_task(often.task_id).stored_executions - len(kept)) <= 1


def test_a_running_execution_refuses_its_task_deletion_unless_forced(
    cluster: Cluster, tmp_path: Path
) -> None:
    started, marker = tmp_path / "started", tmp_path / "stopped"
    # The payload writes a file once it runs and one when it is terminated, so that the test sees its
    # worker stopped it.
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
        f"open({str(started)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    with Client(cluster.servers, timeout_s=10) as client:
        task = client.create_task("long", at(now_ms() + 300), command("python3", "-c", script))

        def running() -> common_pb2.Execution | None:
            for e in client.list_executions(task.task_id):
                if e.state == common_pb2.EXECUTION_RUNNING:
                    return e
            return None

        ex = wait_for(running, 15, "the execution to run")
        wait_for(started.exists, 15, "the payload to start")
        with pytest.raises(FailedPrecondition) as refused:
            client.delete_task(task.task_id)
        assert ex.execution_id in str(refused.value) and "force" in str(refused.value)
        assert client.get_task(task.task_id).task_id == task.task_id  # nothing changed
        deleted = client.delete_task(task.task_id, force=True)
        assert deleted.task.spec.name == "long" and deleted.executions_deleted == 1
        with pytest.raises(NotFound):
            client.get_execution(ex.execution_id)
        wait_for(marker.exists, 15, "the worker to stop the run")
        # The cluster goes on: a new task runs.
        after = client.create_task("after", at(now_ms() + 200), command("true"))
        wait_for(
            lambda: any(
                e.state == common_pb2.EXECUTION_SUCCEEDED for e in client.list_executions(after.task_id)
            ),
            15,
            "a later run",
        )
