"""Results, statistics and search (issue 15) with real processes: a 3-node cluster and a real worker.
A command payload writes $CRONRAFT_RESULT_FILE and `schedctl execution result ID` prints it byte-exact; a
result over the bound fails its attempt saying so; the statistics after a few successes and failures are
exact; `schedctl executions` filters by state and task across tasks."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cronraft.bounds import DEFAULT_RESULT_BYTES
from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration

# The payload writes bytes(range(256)) * 700 (179,200 bytes, every byte value) to its result file.
WRITE_RESULT = "import os; open(os.environ['CRONRAFT_RESULT_FILE'], 'wb').write(bytes(range(256)) * 700)"
EXPECTED = bytes(range(256)) * 700
TOO_LARGE = (
    f"import os; open(os.environ['CRONRAFT_RESULT_FILE'], 'wb').write(b'x' * {DEFAULT_RESULT_BYTES + 1})"
)
ACTIVE = (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("results"), n=3)
    try:
        c.start()
        c.start_worker("w1", capacity=8)
        c.wait_workers(1)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def schedctl(cluster: Cluster, *argv: str) -> bytes:
    cmd = [sys.executable, "-m", "cronraft.client.cli", "--server", cluster.servers, *argv]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _later() -> common_pb2.Schedule:
    return at(int(time.time() * 1000) + 86_400_000)  # never fires by itself during the test


def _final(client: Client, execution_id: str) -> common_pb2.Execution:
    return wait_for(
        lambda: (e := client.get_execution(execution_id)).state not in ACTIVE and e, 60, "a final state"
    )


def _run(client: Client, task_id: str) -> common_pb2.Execution:
    return _final(client, client.trigger_task(task_id).execution_id)


def test_a_result_file_is_printed_byte_exact_and_a_larger_one_is_refused(cluster: Cluster) -> None:
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("report", _later(), command(sys.executable, "-c", WRITE_RESULT))
        ex = _run(client, task.task_id)
        assert ex.state == common_pb2.EXECUTION_SUCCEEDED, ex.error
        assert ex.result_size == len(EXPECTED)
        assert client.get_execution_result(ex.execution_id) == EXPECTED
        assert schedctl(cluster, "execution", "result", ex.execution_id) == EXPECTED
        doc = json.loads(schedctl(cluster, "execution", "result", ex.execution_id, "-o", "json"))
        assert base64.b64decode(doc["base64"]) == EXPECTED and doc["size"] == len(EXPECTED)

        big = client.create_task(
            "too-big", _later(), command(sys.executable, "-c", TOO_LARGE), max_attempts=1
        )
        ex = _run(client, big.task_id)
        assert ex.state == common_pb2.EXECUTION_FAILED and ex.exit_code == 0
        assert "result too large" in ex.error and f"max_result_bytes ({DEFAULT_RESULT_BYTES})" in ex.error
        assert ex.result_size == 0 and client.get_execution_result(ex.execution_id) == b""
        assert schedctl(cluster, "execution", "result", ex.execution_id) == b""


def test_statistics_after_successes_and_failures_are_exact(cluster: Cluster) -> None:
    with Client(cluster.servers, timeout_s=30) as client:
        ok = client.create_task("stats-ok", _later(), command("true"), tags={"suite": "stats"})
        bad = client.create_task(
            "stats-bad", _later(), command("sh", "-c", "exit 3"), tags={"suite": "stats"}, max_attempts=1
        )
        runs = [_run(client, ok.task_id) for _ in range(3)] + [_run(client, bad.task_id) for _ in range(2)]
        assert [e.state for e in runs] == [common_pb2.EXECUTION_SUCCEEDED] * 3 + [
            common_pb2.EXECUTION_FAILED
        ] * 2

        s = client.get_task_stats(ok.task_id)
        assert (s.window.runs, s.window.succeeded, s.window.failed) == (3, 3, 0) and s.success_rate == 1.0
        assert s.duration.samples == 3 and s.last_outcome == common_pb2.EXECUTION_SUCCEEDED
        assert s.last_execution_id == runs[2].execution_id and s.total == s.window
        doc = json.loads(schedctl(cluster, "task", "stats", bad.task_id, "-o", "json"))
        assert doc["window"]["runs"] == 2 and doc["window"]["failed"] == 2 and doc["failure_rate"] == 1.0
        assert doc["last_outcome"] == "failed" and doc["last_execution_id"] == runs[4].execution_id

        cluster_doc = json.loads(schedctl(cluster, "stats", "-o", "json"))
        assert cluster_doc["window"]["succeeded"] >= 3 and cluster_doc["window"]["failed"] >= 2
        assert bad.task_id in [t["task_id"] for t in cluster_doc["top_failing"]]
        assert sum(p["runs"] for p in cluster_doc["throughput"]) >= 5
        assert "top failing" in schedctl(cluster, "stats").decode()

        # Every node applied the same entries: a follower answers the same counts.
        for node in cluster.nodes:
            with Client(node.grpc_address, timeout_s=30) as one:
                got = wait_for(
                    lambda one=one: (t := one.get_task_stats(bad.task_id)).window.runs == 2 and t, 20, "stats"
                )
                assert got.window.failed == 2


def test_executions_are_found_across_tasks_by_state_and_task(cluster: Cluster) -> None:
    with Client(cluster.servers, timeout_s=30) as client:
        a = client.create_task("search-a", _later(), command("true"), tags={"suite": "search"})
        b = client.create_task(
            "search-b", _later(), command("sh", "-c", "exit 4"), tags={"suite": "search"}, max_attempts=1
        )
        ok = [_run(client, a.task_id).execution_id for _ in range(2)]
        failed = [_run(client, b.task_id).execution_id for _ in range(2)]

        def ids(*argv: str) -> list[str]:
            return [
                e["execution_id"] for e in json.loads(schedctl(cluster, "executions", *argv, "-o", "json"))
            ]

        found = ids("--state", "failed", "--tag", "suite=search")
        assert found == failed[::-1]  # newest first
        assert ids("--task", a.task_id, "--state", "succeeded") == ok[::-1]
        assert ids("--task", a.task_id, "--state", "failed") == []
        both = ids("--tag", "suite=search", "--state", "failed", "--state", "succeeded", "--since", "10m")
        assert set(both) == {*ok, *failed}
        assert (
            ids("--worker", "w1", "--tag", "suite=search", "--limit", "3") == sorted(both, reverse=True)[:3]
        )
        assert (
            ids("--state", "failed", "--completed", "--since", "10m", "--tag", "suite=search") == failed[::-1]
        )
        tasks = json.loads(
            schedctl(
                cluster, "task", "list", "--last-outcome", "failed", "--tag", "suite=search", "-o", "json"
            )
        )
        assert [t["task_id"] for t in tasks] == [b.task_id]
