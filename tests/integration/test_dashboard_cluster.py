"""The dashboard on a 3-node cluster (issue 15): a follower's dashboard reads from its own store, and
answers a write 503 naming the leader, with the leader's HTTP listener (learnt from the clock probes)
for the page's link; the same write on the leader's dashboard goes through."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, command, cron
from tests.support.ports import free_ports

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration


def call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_followers_dashboard_reads_and_names_the_leader_for_writes(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    ports = free_ports(3)
    http = {f"node{i + 1}": f"127.0.0.1:{port}" for i, port in enumerate(ports)}
    c = Cluster(tmp_path, n=3, node_toml={n: f'[http]\naddress = "{a}"\n' for n, a in http.items()})
    clusters.append(c)
    leader = c.start().wait_leader()
    follower = next(n for n in c.nodes if n.node_id != leader.node_id)
    task = Client(c.servers, timeout_s=10).create_task("replicated", cron("0 6 * * *"), command("true"))
    c.wait_converged()

    base = f"http://{http[follower.node_id]}/api/v1"
    status, got = call(f"{base}/tasks/{task.task_id}")
    assert status == 200 and got["spec"]["name"] == "replicated"  # read from the follower's own store

    def refused() -> dict[str, Any] | None:
        status, body = call(f"{base}/tasks/{task.task_id}/pause", {})
        assert status == 503, body
        leader_info: dict[str, Any] = body["error"]["leader"]
        return leader_info if leader_info["http_address"] else None  # once a probe told the follower

    info = wait_for(refused, 20, "the follower to know the leader's HTTP listener")
    assert info == {
        "node_id": leader.node_id,
        "grpc_address": leader.grpc_address,
        "http_address": http[leader.node_id],
    }
    status, paused = call(f"http://{info['http_address']}/api/v1/tasks/{task.task_id}/pause", {})
    assert status == 200 and paused["state"] == "paused"
