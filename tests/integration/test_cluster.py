"""A real 3-node cluster (real schedd processes, LMDB files, pysyncobj over loopback) and real workers
running real commands. Each test states the property it would catch breaking."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, cron
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, Worker, ledger_command, read_ledger, started, wait_for

pytestmark = pytest.mark.integration

WORKERS = (Worker("w1"), Worker("w2"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for a test that kills or restarts its nodes."""
    c = Cluster(tmp_path, n=3)
    try:
        yield started(c, workers=WORKERS)
    finally:
        c.stop()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    """One cluster for the tests that leave it running (each with its own task names)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), n=3)
    module_clusters.append(c)
    return started(c, workers=WORKERS)


@pytest.fixture
def shared_cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


def _succeeded(client: Client, task_id: str) -> list[common_pb2.Execution]:
    return [e for e in client.list_executions(task_id) if e.state == common_pb2.EXECUTION_SUCCEEDED]


def test_cron_and_one_time_tasks_run_and_read_the_same_on_every_node(
    shared_cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Client(shared_cluster.servers) as client:
        every_second = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        once = client.create_task("once", at(int(time.time() * 1000) + 1500), command("echo", "one-time"))
        wait_for(lambda: len(_succeeded(client, every_second.task_id)) >= 3, 30, "3 cron runs")
        (ex,) = wait_for(lambda: _succeeded(client, once.task_id), 30, "the one-time run")
        assert ex.stdout_tail == b"one-time\n"
        assert client.get_task(once.task_id).state == common_pb2.TASK_COMPLETED
        client.cancel_task(every_second.task_id)
    shared_cluster.wait_converged()
    views = []
    for node in shared_cluster.nodes:
        with Client(node.grpc_address) as direct:
            views.append(
                [
                    (e.execution_id, e.state, e.token.index)
                    for e in direct.list_executions(every_second.task_id)
                ]
            )
    assert views[0] == views[1] == views[2]
    # Each run recorded in the ledger by the payload itself is one committed execution.
    rows = read_ledger(ledger)
    assert Counter(eid for eid, _, _ in rows).most_common(1)[0][1] == 1


def test_killing_the_leader_loses_no_due_fire_and_doubles_none(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(read_ledger(ledger)) >= 2, 30, "first runs")
        leader = cluster.wait_leader()
        cluster.kill(leader)
        killed_at = int(time.time() * 1000)
        new_leader = cluster.wait_leader(timeout_s=30)
        assert new_leader is not leader
        # Keep firing well past the failover, then stop the task and let the last runs finish.
        wait_for(
            lambda: max((n for _, n, _ in read_ledger(ledger)), default=0) > killed_at + 8_000,
            60,
            "runs after failover",
        )
        client.cancel_task(task.task_id)
        cancelled = client.get_task(task.task_id)
        last_nominal = cancelled.last_fired_nominal_ms
        wait_for(
            lambda: all(
                e.state != common_pb2.EXECUTION_RUNNING for e in client.list_executions(task.task_id)
            ),
            40,
            "running executions to finish",
        )
        execs = list(client.list_executions(task.task_id, page_size=1000))
    nominals = sorted(e.nominal_time_ms for e in execs)
    expected = list(range(nominals[0], last_nominal + 1, 1000))
    assert nominals == expected, "a due fire was lost or committed twice"
    bad = [
        (e.nominal_time_ms, e.state, e.exit_code, e.error, e.attempt)
        for e in execs
        if e.state != common_pb2.EXECUTION_SUCCEEDED
    ]
    assert not bad
    ran = Counter(n for _, n, _ in read_ledger(ledger))
    assert set(ran) == set(expected)
    assert max(ran.values()) == 1, f"ran twice: {[n for n, c in ran.items() if c > 1]}"


def test_bad_input_is_invalid_argument_naming_the_field(shared_cluster: Cluster) -> None:
    cases = [
        # A raw message: the SDK's `cron()` refuses this one before it is sent (the server must too).
        (
            "spec.schedule.cron.expression",
            dict(
                schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="61 * * * *")),
                payload=command("true"),
            ),
        ),
        (
            "spec.schedule.cron.time_zone",
            dict(schedule=cron("* * * * *", "Mars/Olympus"), payload=command("true")),
        ),
        (
            "spec.payload.command.argv",
            dict(schedule=cron("* * * * *"), payload=common_pb2.Payload(command=common_pb2.CommandPayload())),
        ),
        ("spec.payload", dict(schedule=cron("* * * * *"), payload=command("echo", "x" * 70_000))),
    ]
    with Client(shared_cluster.servers) as client:
        before = sorted((t.task_id, t.spec.name) for t in client.list_tasks())
        for field, kw in cases:
            with pytest.raises(InvalidArgument) as err:
                client.create_task("bad", **kw)  # type: ignore[arg-type]
            assert err.value.field == field, str(err.value)
        after = sorted((t.task_id, t.spec.name) for t in client.list_tasks())
        assert after == before and "bad" not in {name for _, name in after}, (
            "a rejected request changed state"
        )


def test_health_and_reflection_are_served_on_every_node(shared_cluster: Cluster) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for node in shared_cluster.nodes:
        with grpc.insecure_channel(node.grpc_address) as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            (resp,) = list(
                stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
            )
            names = {s.name for s in resp.list_services_response.service}
            assert {"cronraft.v1.Scheduler", "cronraft.v1.WorkerGateway", "cronraft.v1.Cluster"} <= names


def test_restarted_node_catches_up(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    cluster.kill(follower)
    with Client(cluster.servers) as client:
        created = [client.create_task(f"t{i}", cron("0 0 1 1 *"), command("true")).task_id for i in range(20)]
    cluster.start_node(follower)
    cluster.wait_converged(timeout_s=30)
    with Client(follower.grpc_address) as direct:
        assert sorted(t.task_id for t in direct.list_tasks()) == sorted(created)


def test_whole_cluster_restart_keeps_every_acknowledged_write_once(cluster: Cluster, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with Client(cluster.servers) as client:
        created = [client.create_task(f"t{i}", cron("0 0 1 1 *"), command("true")).task_id for i in range(30)]
        tick = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(_succeeded(client, tick.task_id)) >= 3, 30, "some runs")
    for node in cluster.nodes:
        cluster.kill(node)
    for node in cluster.nodes:
        cluster.start_node(node)
    cluster.wait_leader(timeout_s=40)
    cluster.wait_converged(timeout_s=30)
    with Client(cluster.servers, timeout_s=30) as client:
        tasks = {t.task_id: t for t in client.list_tasks()}
        assert set(created) <= set(tasks)
        client.cancel_task(tick.task_id)
        wait_for(
            lambda: all(
                e.state != common_pb2.EXECUTION_RUNNING for e in client.list_executions(tick.task_id)
            ),
            40,
            "running executions to finish",
        )
        t = client.get_task(tick.task_id)
        execs = list(client.list_executions(tick.task_id, page_size=1000))
    # Re-applying an entry twice would count a fire twice: fire_count must equal the executions kept.
    assert t.fire_count == len(execs)
    assert len({e.nominal_time_ms for e in execs}) == len(execs)


def test_multi_node_config_without_secret_is_refused(tmp_path: Path) -> None:
    c = Cluster(tmp_path, n=3)
    env = {k: v for k, v in c.env.items() if k != "CRONRAFT_CLUSTER_SECRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "cronraft.daemon.main", "--config", str(c.nodes[0].config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "secret" in proc.stderr
