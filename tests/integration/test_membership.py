"""Membership changes on real processes (docs/operations.md, "Membership changes"): 3 -> 4 -> 5 -> 3 members
while a task fires every second, a killed member replaced by a fresh machine (same id, then a new id), a
second change refused while one is in flight, a non-admin refused, and a removed node that keeps running
stepping out without disturbing the cluster."""

from __future__ import annotations

import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from cronraft.client import Client, command, cron
from cronraft.errors import FailedPrecondition, NotFound, PermissionDenied
from cronraft.proto.v1 import cluster_pb2, common_pb2
from tests.support.cluster import Proc, node_argv
from tests.support.nodeconfig import TEST_STORAGE, node_config, toml_dumps
from tests.support.ports import free_ports

from .harness import Cluster, NodeProc, ledger_command, read_ledger, wait_for
from .test_security_transport import _client as secure_client
from .test_security_transport import _secure_cluster

pytestmark = pytest.mark.integration


class GrowingCluster(Cluster):
    """The harness's cluster, plus nodes started later with `schedd --join` (what this test needed beyond
    the public API: a node whose config lists the current members and itself, started with a flag)."""

    def member(self, name: str) -> tuple[str, str, str]:
        """(node id, gRPC address, Raft address) of the node the harness calls `name`, as its config says."""
        cfg = tomllib.loads(self._node(name).config_path.read_text())
        me = cfg["node"]["id"]
        raft = next(m["raft_address"] for m in cfg["cluster"]["members"] if m["id"] == me)
        return str(me), self._node(name).grpc_address, str(raft)

    def raft_address(self, name: str) -> str:
        return self.member(name)[2]

    def add_joining(
        self, node_id: str, members: list[str], *, name: str | None = None, start: bool = True
    ) -> NodeProc:
        """Node `node_id` with an empty data directory, its config listing `members` (the harness's names
        of the current members: the learner receives the log from the leader, so the list must hold it)
        and itself, started with `--join` (`start`: now; else `start_joining` later). `name`: the
        harness's name for the process, when another one (dead) has `node_id`."""
        name = name or node_id
        grpc_port, raft_port = free_ports(2)
        grpc_address, raft_address = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{raft_port}"
        listed = [self.member(m) for m in members]
        cfg = self.root / f"{name}.toml"
        base = node_config(
            node_id,
            self.root / name,
            [*listed, (node_id, grpc_address, raft_address)],
            raft={"election_timeout_ms": 1000, "heartbeat_ms": 50},
            scheduler={
                "lease_ttl_ms": self.lease_ttl_ms,
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "horizon_ms": 5000,
            },
            storage=TEST_STORAGE,
        )
        cfg.write_text(toml_dumps(base))
        log = self.root / f"{name}.log"
        self.core.add(Proc(name, "node", log), grpc_address)
        node = NodeProc(name, cfg, grpc_address, log, core=self.core)
        self.nodes.append(node)
        if start:
            self.start_joining(node)
        return node

    def start_joining(self, node: NodeProc) -> None:
        node.proc = self.core.spawn(node.node_id, [*node_argv(node.config_path), "--join"], self.env)


def start(cluster: Cluster) -> None:
    """Start the cluster and wait until it uses membership changes (the leader raises the 'membership'
    feature once every member said it supports it: raft/features.py)."""
    cluster.start()
    wait_for(lambda: "membership" in leader_status(cluster).features, 30, "the membership feature")


def leader_status(cluster: Cluster) -> cluster_pb2.StatusResponse:
    leader = cluster.wait_leader(timeout_s=30)
    return leader.status()


def voters(st: cluster_pb2.StatusResponse) -> set[str]:
    return {m.node_id for m in st.members if m.role == "voter"}


def wait_members(cluster: Cluster, expected: set[str], timeout_s: float = 60) -> cluster_pb2.StatusResponse:
    """The leader reports exactly `expected` as voters and no change in flight."""

    def done() -> cluster_pb2.StatusResponse | None:
        st = leader_status(cluster)
        if st.HasField("membership_change") or voters(st) != expected:
            return None
        return st

    return wait_for(done, timeout_s, f"members {sorted(expected)} and no change in flight")


def raft_voters(node: NodeProc) -> set[str]:
    return {m.node_id for m in node.status().members if m.role == "voter"}


def test_three_to_five_to_three_members_while_a_task_fires_every_second(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    cluster = GrowingCluster(tmp_path, n=3)
    clusters.append(cluster)
    start(cluster)
    cluster.start_worker("w1", capacity=8)
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    # The client knows only the three founders: later it reaches new leaders through their hints.
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(read_ledger(ledger)) >= 2, 30, "first runs")

        # 3 -> 4: node4 joins as a learner, then is added.
        node4 = cluster.add_joining("node4", ["node1", "node2", "node3"])
        wait_for(lambda: node4.status().role == "learner", 30, "node4 a learner")
        assert not node4.status().ready or node4.status().role == "learner"
        began = client.add_node(
            "node4", grpc_address=node4.grpc_address, raft_address=cluster.raft_address("node4")
        )
        assert began.pending.member.node_id == "node4" and [m.node_id for m in began.members] == [
            "node1",
            "node2",
            "node3",
        ]
        wait_members(cluster, {"node1", "node2", "node3", "node4"})

        # 4 -> 5, with node5's addition begun before node5 runs: it stays in flight, and a second change
        # is refused meanwhile, naming the one in flight.
        node5 = cluster.add_joining("node5", ["node1", "node2", "node3", "node4"], start=False)
        client.add_node("node5", grpc_address=node5.grpc_address, raft_address=cluster.raft_address("node5"))
        with pytest.raises(FailedPrecondition, match=r"a membership change is in flight \(adding node5"):
            client.remove_node("node1")
        with pytest.raises(FailedPrecondition, match="in flight"):
            client.add_node("node6", grpc_address="127.0.0.1:1", raft_address="127.0.0.1:2")
        progress = wait_for(
            lambda: "node5" in (p := leader_status(cluster).membership_progress) and p,
            20,
            "the leader's progress",
        )
        assert "waiting for node5 to answer" in progress, progress
        cluster.start_joining(node5)
        wait_members(cluster, {"node1", "node2", "node3", "node4", "node5"})

        # 5 -> 3: the leader first (if it is a founder: it hands leadership over), then another founder.
        lead = cluster.wait_leader().node_id
        first = lead if lead in ("node1", "node2", "node3") else "node1"
        second = next(n for n in ("node1", "node2", "node3") if n != first)
        client.remove_node(first)
        rest = {"node1", "node2", "node3", "node4", "node5"} - {first}
        wait_members(cluster, rest)
        client.remove_node(second)
        rest -= {second}
        st = wait_members(cluster, rest)

        # The removed nodes keep running: they say so, and disturb nothing (no election: same term).
        for gone in (first, second):
            wait_for(lambda g=gone: cluster._node(g).status().role == "removed", 30, f"{gone} removed")  # type: ignore[misc]
        term, leader_id = st.term, st.node_id
        time.sleep(5)  # five election timeouts with two removed nodes running
        after = leader_status(cluster)
        assert (after.term, after.node_id) == (term, leader_id), "a removed node disturbed the cluster"
        for gone in (first, second):
            cluster.kill(cluster._node(gone))

        # Fires go on; stop, then check the executions: every nominal time exactly once.
        lead_ms = int(time.time() * 1000)
        wait_for(
            lambda: max(n for _, n, _ in read_ledger(ledger)) > lead_ms + 3000, 60, "runs after the changes"
        )
        client.cancel_task(task.task_id)
        last_nominal = client.get_task(task.task_id).last_fired_nominal_ms
        wait_for(
            lambda: all(
                e.state != common_pb2.EXECUTION_RUNNING for e in client.list_executions(task.task_id)
            ),
            40,
            "running executions to finish",
        )
        execs = list(client.list_executions(task.task_id, page_size=1000))
    nominals = sorted(e.nominal_time_ms for e in execs)
    assert nominals == list(range(nominals[0], last_nominal + 1, 1000)), "a fire was lost or doubled"
    assert not [e for e in execs if e.state != common_pb2.EXECUTION_SUCCEEDED]
    ran = Counter(n for _, n, _ in read_ledger(ledger))
    assert set(ran) == set(nominals)
    runs_per_execution = Counter(eid for eid, _, _ in read_ledger(ledger))
    assert len(runs_per_execution) == len(nominals), "an execution per nominal time"


def test_a_killed_member_is_replaced_with_the_same_id_then_with_a_new_one(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    cluster = GrowingCluster(tmp_path, n=3)
    clusters.append(cluster)
    start(cluster)
    with Client(cluster.servers, timeout_s=30) as client:
        before = client.create_task("before", cron("0 0 1 1 *"), command("true"))

        # node3 dies for good; a new machine takes its id (new addresses, empty data directory).
        old3 = cluster._node("node3")
        cluster.kill(old3)
        client.remove_node("node3")
        wait_members(cluster, {"node1", "node2"})
        new3 = cluster.add_joining("node3", ["node1", "node2"], name="node3b")
        client.add_node("node3", grpc_address=new3.grpc_address, raft_address=cluster.raft_address("node3b"))
        wait_members(cluster, {"node1", "node2", "node3"})
        during = client.create_task("during", cron("0 0 1 1 *"), command("true"))
        cluster.wait_converged()
        with Client(new3.grpc_address, timeout_s=10) as direct:  # the new node3 holds everything
            assert direct.get_task(before.task_id).spec.name == "before"
            assert direct.get_task(during.task_id).spec.name == "during"

        # The old node3 comes back with its old data directory: outside the configuration, it learns it
        # was removed (its id is a member again, at other addresses) and disturbs nothing.
        term = leader_status(cluster).term
        cluster.start_node(old3)
        wait_for(lambda: old3.status().role == "removed", 30, "the old node3 to learn it was removed")
        assert leader_status(cluster).term == term
        cluster.kill(old3)

        # node2 dies; a new id replaces it: added first (it counts once caught up), then node2 removed.
        cluster.kill(cluster._node("node2"))
        node4 = cluster.add_joining("node4", ["node1", "node2", "node3b"])
        client.add_node("node4", grpc_address=node4.grpc_address, raft_address=cluster.raft_address("node4"))
        wait_members(cluster, {"node1", "node2", "node3", "node4"})
        client.remove_node("node2")
        wait_members(cluster, {"node1", "node3", "node4"})
        after = client.create_task("after", cron("0 0 1 1 *"), command("true"))
        cluster.wait_converged()
        with Client(node4.grpc_address, timeout_s=10) as direct:
            assert {t.spec.name for t in direct.list_tasks()} >= {"before", "during", "after"}
        assert after.task_id


def test_membership_changes_need_the_admin_role(tmp_path: Path, clusters: list[Cluster]) -> None:
    c, tokens, ca = _secure_cluster(tmp_path)
    clusters.append(c)
    c.start()
    for role in ("reader", "submitter"):
        with secure_client(c, ca, tokens[role]) as client:
            with pytest.raises(PermissionDenied, match="admin"):
                client.add_node("node2", grpc_address="127.0.0.1:1", raft_address="127.0.0.1:2")
            with pytest.raises(PermissionDenied, match="admin"):
                client.remove_node("node1")
    with secure_client(c, ca, tokens["admin"]) as client:  # past the role check: the state machine answers
        with pytest.raises(NotFound, match="node9 is not a member"):
            client.remove_node("node9")
        with pytest.raises(FailedPrecondition, match="the last member"):
            client.remove_node("node1")
