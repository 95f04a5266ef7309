"""Monitoring with real processes (issue 15; docs/monitoring.md): each node's HTTP listener (/metrics,
/healthz, /readyz), gRPC health that tells the truth, `cluster status` naming each node's listener, the
worker's metrics endpoint, and `promtool check metrics` on a real node's exposition."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2
from tests.support.ports import free_ports

from .harness import Cluster, NodeProc, wait_for

pytestmark = pytest.mark.integration

TASKS = 4


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of each sample line of a text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            out[name] = float(number)
    return out


def grpc_health(node: NodeProc) -> int:
    with grpc.insecure_channel(node.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        return status


def monitored_cluster(root: Path, n: int) -> tuple[Cluster, dict[str, str]]:
    """A cluster of `n` nodes, each with an HTTP listener on its own loopback port."""
    ports = free_ports(n)
    http = {f"node{i + 1}": f"127.0.0.1:{port}" for i, port in enumerate(ports)}
    toml = {node: f'[http]\naddress = "{address}"\n' for node, address in http.items()}
    return Cluster(root, n=n, node_toml=toml), http


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_a_real_nodes_metrics(tmp_path: Path) -> None:
    cluster, http = monitored_cluster(tmp_path, 1)
    try:
        cluster.start()
        url = f"http://{http['node1']}/metrics"
        wait_for(lambda: get(url)[0] == 200, 10, "the metrics endpoint")
        text = get(url)[1]
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            check=False,
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "cronraft_raft_term " in text and "cronraft_grpc_requests_total" in text
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_three_nodes_tell_metrics_readiness_and_health_and_lose_them_with_quorum(tmp_path: Path) -> None:
    cluster, http = monitored_cluster(tmp_path, 3)
    (worker_port,) = free_ports(1)
    try:
        cluster.start()
        cluster.start_worker("w1", extra_args=("--metrics-address", f"127.0.0.1:{worker_port}"))
        cluster.wait_workers(1)
        leader = cluster.wait_leader()
        with Client(cluster.servers, timeout_s=30) as client:
            due = int(time.time() * 1000) + 1_500
            ids = [client.create_task(f"t{i}", at(due), command("true")).task_id for i in range(TASKS)]

            def all_succeeded() -> bool:
                states = [e.state for task_id in ids for e in client.list_executions(task_id)]
                return len(states) == TASKS and all(s == common_pb2.EXECUTION_SUCCEEDED for s in states)

            wait_for(all_succeeded, 60, "every execution succeeded")

        # The leader counted them; its Raft gauges and its worker are there.
        leader_url = f"http://{http[leader.node_id]}"
        finished = 'cronraft_executions_finished_total{guarantee="at_least_once",state="succeeded"}'
        metrics = wait_for(
            lambda: (m := samples(get(f"{leader_url}/metrics")[1])).get(finished, 0) >= TASKS and m,
            10,
            "the finished counter",
        )
        assert metrics["cronraft_fire_lateness_seconds_count"] >= TASKS
        assert metrics["cronraft_attempt_duration_seconds_count"] >= TASKS
        assert metrics["cronraft_fires_total"] >= TASKS
        assert metrics["cronraft_raft_is_leader"] == 1
        assert metrics["cronraft_raft_term"] >= 1
        assert metrics["cronraft_raft_applied_index"] >= 1
        assert metrics["cronraft_raft_commit_index"] >= metrics["cronraft_raft_applied_index"]
        assert metrics['cronraft_workers{status="ready"}'] == 1
        assert metrics["cronraft_ready"] == 1
        assert (
            metrics[
                'cronraft_grpc_requests_total{code="OK",method="CreateTask",service="cronraft.v1.Scheduler"}'
            ]
            >= 1
        )
        assert metrics["cronraft_apply_seconds_count"] >= 1

        # Every node is ready, says so over HTTP and gRPC, and cluster status names every listener.
        for node in cluster.nodes:
            code, body = get(f"http://{http[node.node_id]}/readyz")
            assert code == 200 and json.loads(body)["ready"] is True, body
            assert get(f"http://{http[node.node_id]}/healthz")[0] == 200
            assert grpc_health(node) == health_pb2.HealthCheckResponse.SERVING
        status = wait_for(
            lambda: all((st := leader.status()).members[i].http_address for i in range(3)) and st,
            10,
            "the members' HTTP addresses",
        )
        assert {m.node_id: m.http_address for m in status.members} == http
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "cronraft.client.cli",
                "--server",
                leader.grpc_address,
                "-o",
                "json",
                "cluster",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert {m["node_id"]: m["http"] for m in json.loads(out)["members"]} == http

        # The worker's own endpoint.
        worker = samples(get(f"http://127.0.0.1:{worker_port}/metrics")[1])
        assert worker['cronraft_worker_attempts_total{outcome="succeeded"}'] >= TASKS
        assert worker["cronraft_worker_start_delay_seconds_count"] >= TASKS
        assert worker["cronraft_worker_connected"] == 1

        # Two of three gone: the survivor has no quorum, and says so.
        survivor, *others = cluster.nodes
        for node in others:
            cluster.kill(node)
        url = f"http://{http[survivor.node_id]}/readyz"
        body = wait_for(lambda: (r := get(url))[0] == 503 and json.loads(r[1]), 15, "the survivor unready")
        assert body["ready"] is False and "quorum" in body["failed"], body
        wait_for(
            lambda: grpc_health(survivor) == health_pb2.HealthCheckResponse.NOT_SERVING,
            15,
            "the survivor's gRPC health NOT_SERVING",
        )
        assert get(f"http://{http[survivor.node_id]}/healthz")[0] == 200  # alive all the same
        after = samples(get(f"http://{http[survivor.node_id]}/metrics")[1])
        assert after["cronraft_ready"] == 0 and after['cronraft_ready_check{check="quorum"}'] == 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
