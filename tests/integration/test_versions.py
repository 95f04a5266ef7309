"""Determinism across nodes with real processes (issue 12; docs/scheduling.md, "Determinism across
nodes"): node3 is started with another tzdata release, faked through the test-only environment variable
CRONRAFT_TEST_VERSION_OVERRIDE. What must hold:
- `schedctl cluster status` (human and JSON) shows every member's versions and an error naming node3 and
  tzdata; the leader reports dispatching held and logs why;
- nothing fires (a one-time task and a per-second task, with a connected worker) while node3 disagrees;
- node3 restarted without the override: the leader resumes by itself, both tasks run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, every
from cronraft.raft.versions import OVERRIDE_ENV, schedule_versions

from .harness import Cluster, ledger_command, read_ledger, wait_for

pytestmark = pytest.mark.integration

FAKE = "2099z"


@pytest.fixture
def cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path,
        n=3,
        node_env={"node3": {OVERRIDE_ENV: f"tzdata={FAKE}"}},
        # node1 or node2 leads (node3's election timer is the slowest): the leader is not the odd one.
        raft_overrides={"node3": {"election_timeout_ms": 4000}},
        extra_toml="[clock]\nprobe_interval_ms = 200\n",
    )
    failed_before = request.session.testsfailed
    yield c
    c.stop()
    if request.session.testsfailed > failed_before:
        with capsys.disabled():
            print(c.logs())


def schedctl(server: str, *argv: str) -> str:
    cmd = [sys.executable, "-m", "cronraft.client.cli", "--server", server, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_member_with_another_tzdata_holds_dispatching_until_it_agrees(
    cluster: Cluster, tmp_path: Path
) -> None:
    ours = schedule_versions()["tzdata"]
    cluster.start()
    cluster.start_worker("w1", capacity=4)
    cluster.wait_workers(1)

    def held() -> str | None:
        leader = cluster.leader()
        st = leader.status() if leader is not None else None
        return leader.node_id if st is not None and st.dispatch_held else None

    leader_id = wait_for(held, 20, "the leader to hold dispatching")
    leader = next(n for n in cluster.nodes if n.node_id == leader_id)
    st = leader.status()
    assert leader_id != "node3"
    assert st.versions_mismatch == f"node3 runs tzdata {FAKE}, {leader_id} {ours}"

    # Status, human and JSON: every member's versions, the error.
    out = schedctl(leader.grpc_address, "cluster", "status")
    assert "ERROR: members run other versions of what changes schedule results" in out
    assert f"tzdata {FAKE}" in out and f"tzdata {ours}" in out and "HELD" in out
    doc = json.loads(schedctl(leader.grpc_address, "--output", "json", "cluster", "status"))
    assert doc["dispatch_held"] is True and doc["versions_mismatch"] == st.versions_mismatch
    by_id = {m["node_id"]: m for m in doc["members"]}
    assert by_id["node3"]["versions"]["tzdata"] == FAKE
    assert by_id["node1"]["versions"]["tzdata"] == ours == by_id["node2"]["versions"]["tzdata"]
    assert set(by_id["node1"]["versions"]) == {
        "evaluator",
        "tzdata",
        "holidays",
        "python-dateutil",
        "cronraft",
    }
    # node3 itself sees the others differ (any node reports it; only the leader holds).
    node3 = cluster.nodes[2]
    assert "tzdata" in node3.status().versions_mismatch

    # Nothing fires while node3 disagrees.
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=10) as client:
        once = client.create_task("once", at(now_ms() + 500), command(*ledger_command(ledger)))
        often = client.create_task("often", every("1s", now_ms() + 500), command(*ledger_command(ledger)))
        time.sleep(4)
        assert read_ledger(ledger) == []
        assert client.get_task(once.task_id).fire_count == 0
        assert client.get_task(often.task_id).fire_count == 0
        log = (tmp_path / f"{leader_id}.log").read_text(errors="replace")
        assert "leader holds dispatching" in log and f"node3 runs tzdata {FAKE}" in log

        # node3 restarted without the override: the leader resumes by itself.
        cluster.kill(node3)
        cluster.node_env.pop("node3")
        cluster.start_node(node3)
        wait_for(lambda: not any(n.status().versions_mismatch for n in cluster.nodes), 30, "members to agree")
        wait_for(lambda: client.get_task(once.task_id).fire_count == 1, 20, "the one-time task to fire")
        wait_for(lambda: client.get_task(often.task_id).fire_count >= 2, 20, "the per-second task to fire")
        wait_for(lambda: len(read_ledger(ledger)) >= 2, 20, "the payloads to run")
        st = cluster.wait_leader().status()
        assert not st.dispatch_held and st.versions_mismatch == ""
