"""The audit trail with real processes (issue 13): on a three-node cluster with TLS and tokens, the writes
of two principals leave records that every node holds identically (read from each node directly), naming
the principal, the RPC, the target and the outcome; a reader, and a submitter, cannot list the trail;
records beyond `[retention] audit_max_records` are pruned on every node alike; schedctl prints the trail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cronraft.client import Client, command, every
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.errors import FailedPrecondition, NotFound, PermissionDenied
from cronraft.proto.v1 import audit_pb2, common_pb2
from cronraft.tokenfile import add_token

from .harness import Cluster, NodeProc, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration

KEEP = 8  # [retention] audit_max_records of the cluster
UNKNOWN = "01JF3Z6V8W2B1X9K4M7N5P0Q3R"  # a task id nobody created


def _cluster(tmp_path: Path) -> tuple[SecureCluster, dict[str, str], bytes]:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node", ("127.0.0.1",), server=True), Leaf("client")])
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    roles = {"alice": "submitter", "bob": "operator", "root": "admin", "eve": "reader"}
    tokens = {name: add_token(tokens_file, name, [role], now_ms=now_ms) for name, role in roles.items()}
    toml = (
        f'[tls]\ncert = "{pki / "node.pem"}"\nkey = "{pki / "node-key.pem"}"\nca = "{pki / "ca.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n\n'
        f"[retention]\naudit_max_records = {KEEP}\nprune_interval_ms = 100\n"
    )
    c = SecureCluster(tmp_path, n=3, extra_toml=toml)
    ca = (pki / "ca.pem").read_bytes()
    c.admin = Transport(ca=ca, token=tokens["root"])
    return c, tokens, ca


def _trail(node: NodeProc, transport: Transport) -> list[audit_pb2.AuditRecord]:
    """The trail as this one node holds it (a client of that node alone)."""
    with Client(node.grpc_address, timeout_s=10, transport=transport) as client:
        return client.list_audit(limit=None)


def _log_lines(node: NodeProc) -> list[str]:
    return node.log_path.read_text(errors="replace").splitlines()


def _summary(records: list[audit_pb2.AuditRecord]) -> list[tuple[str, str, tuple[str, ...], str]]:
    return [(r.principal, r.method, tuple(r.target_ids), r.outcome) for r in records]


def _same_on_every_node(c: Cluster, admin: Transport, count: int) -> list[audit_pb2.AuditRecord]:
    """Wait until every node holds `count` records, and the same ones in the same order."""

    seen: list[object] = []

    def agreed() -> list[audit_pb2.AuditRecord] | None:
        trails = [_trail(node, admin) for node in c.nodes]
        seen[:] = [_summary(t) for t in trails]
        if any(len(t) != count for t in trails):
            return None
        return trails[0] if all(t == trails[0] for t in trails) else None

    try:
        return wait_for(agreed, 30, f"every node to hold the same {count} audit records", interval_s=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; the nodes held {seen}") from None


def test_the_audit_trail_is_the_same_on_every_node_and_bounded(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, tokens, ca = _cluster(tmp_path)
    clusters.append(c)
    c.start()
    admin = Transport(ca=ca, token=tokens["root"])
    alice = Client(c.servers, timeout_s=10, transport=Transport(ca=ca, token=tokens["alice"]))
    bob = Client(c.servers, timeout_s=10, transport=Transport(ca=ca, token=tokens["bob"]))
    with alice, bob:
        task = alice.create_task("nightly", every("1h"), command("true"), request_id="alice-create-1")
        alice.pause_task(task.task_id, "maintenance")
        specs = [common_pb2.TaskSpec(), common_pb2.TaskSpec()]
        for i, spec in enumerate(specs):
            spec.CopyFrom(task.spec)
            spec.name = f"imported-{i}"
        (batch,) = alice.import_tasks(specs, import_id="bulk").batches  # one batch: one record
        alice.resume_task(task.task_id)
        with pytest.raises(FailedPrecondition):
            alice.resume_task(task.task_id)  # proposed, refused when applied: recorded with its error code
        with pytest.raises(PermissionDenied):
            alice.delete_task(task.task_id)  # refused by the role check: never proposed, not recorded
        # Through a follower, which forwards bob's writes to the leader: the trail names bob's own address
        # and the follower. Refused before it was proposed: not in the trail, in the log of the node that
        # refused it (the leader), not in the follower's as well.
        leader = c.wait_leader()
        follower = next(node for node in c.nodes if node is not leader)
        with Client(
            follower.grpc_address, timeout_s=10, transport=Transport(ca=ca, token=tokens["bob"])
        ) as via:
            via.put_calendar(common_pb2.Calendar(name="holidays"))
            with pytest.raises(NotFound):
                via.pause_task(UNKNOWN)
        bob.delete_task(task.task_id)

        trail = _same_on_every_node(c, admin, 7)
        t = (task.task_id,)
        assert _summary(trail) == [
            ("alice", "CreateTask", t, "ok"),
            ("alice", "PauseTask", t, "ok"),
            ("alice", "ImportTasks", (batch.first_task_id,), "ok"),
            ("alice", "ResumeTask", t, "ok"),
            ("alice", "ResumeTask", t, "invalid_state"),
            ("bob", "PutCalendar", ("holidays",), "ok"),
            ("bob", "DeleteTask", t, "ok"),
        ]
        assert "not paused" in trail[4].error
        assert (trail[2].request_id, trail[2].targets_omitted) == ("bulk-0", 1)
        assert trail[0].request_id == "alice-create-1"
        assert all(r.peer.startswith("ipv4:127.0.0.1:") for r in trail)
        assert trail[5].peer.endswith(f" via {follower.node_id}") and " via " not in trail[4].peer
        assert [r.raft_index for r in trail] == sorted(r.raft_index for r in trail)
        assert trail[0].time_ms == task.created_at_ms  # the leader's stamped time, the task's too

        refusals = [line for node in c.nodes for line in _log_lines(node) if '"write refused"' in line]
        assert len(refusals) == 1 and all(w in refusals[0] for w in ('"bob"', '"PauseTask"', '"NOT_FOUND"'))
        assert refusals[0] in _log_lines(leader)

        # Filters, on one node.
        with Client(c.nodes[1].grpc_address, timeout_s=10, transport=admin) as root:
            assert root.list_audit(principal="alice") == trail[:5]
            assert [r.method for r in root.list_audit(target_id=task.task_id)] == [
                "CreateTask",
                "PauseTask",
                "ResumeTask",
                "ResumeTask",
                "DeleteTask",
            ]
            assert root.list_audit(method="PutCalendar") == trail[5:6]
            assert root.list_audit(since=trail[3].time_ms, until=trail[4].time_ms) == [
                r for r in trail if trail[3].time_ms <= r.time_ms < trail[4].time_ms
            ]
            assert root.list_audit(since=trail[-1].time_ms + 1) == []

        # Only admins read the trail.
        for name in ("eve", "alice"):
            with (
                Client(c.servers, timeout_s=10, transport=Transport(ca=ca, token=tokens[name])) as other,
                pytest.raises(PermissionDenied, match="ListAudit needs role admin"),
            ):
                other.list_audit()

        # Past audit_max_records: the oldest go, on every node alike.
        for n in range(4):
            bob.put_calendar(common_pb2.Calendar(name=f"cal{n}"))
        trail = _same_on_every_node(c, admin, KEEP)  # alice's first three records were the oldest
        assert [r.method for r in trail[:4]] == ["ResumeTask", "ResumeTask", "PutCalendar", "DeleteTask"]
        assert [r.target_ids[0] for r in trail[4:]] == [f"cal{n}" for n in range(4)]

    # schedctl audit list, with the environment of a client.
    env = {**os.environ, "CRONRAFT_SERVER": c.nodes[2].grpc_address, "CRONRAFT_TOKEN": tokens["root"]}
    env["CRONRAFT_TLS_CA"] = str(tmp_path / "pki" / "ca.pem")
    out = subprocess.run(
        [sys.executable, "-m", "cronraft.client.cli", "audit", "list", "--principal", "bob", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    docs = json.loads(out.stdout)
    assert [d["method"] for d in docs] == ["PutCalendar", "DeleteTask"] + ["PutCalendar"] * 4
    assert docs[1]["targets"] == [task.task_id]
