"""The daemon's failpoints with real processes (docs/guarantees.md, "Failpoints"): each one crashes a
node once (`once-crash`: `os._exit(137)` at that place), and the cluster must recover with no lost and
no doubled fire, every node converging to the same state (the offline digest, raft.digest).

Arming at a chosen moment: `once-crash` crashes only while its marker file does not exist. The marker is
created before the nodes start (the failpoint is disarmed) and deleted when the test wants the next
pass through it to crash.

These runs also write the audit log (CRONRAFT_AUDIT_DIR) and check it tells one consistent story.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, at, command, cron
from cronraft.proto.v1 import common_pb2
from cronraft.raft.audit import read_audit
from tests.support.replay import same_state

from .harness import Cluster, NodeProc, ledger_command, read_ledger, wait_for

pytestmark = pytest.mark.integration


def make(
    tmp_path: Path, clusters: list[Cluster], *, failpoint: str = "", lease_ttl_ms: int = 2000, **kw: Any
) -> Cluster:
    c = Cluster(tmp_path, n=3, lease_ttl_ms=lease_ttl_ms, heartbeat_interval_ms=500, **kw)
    c.env["CRONRAFT_AUDIT_DIR"] = str(tmp_path / "audit")
    if failpoint:
        c.env["CRONRAFT_FAILPOINTS"] = failpoint
        c.env["CRONRAFT_FAILPOINT_MARKER"] = str(tmp_path / "failpoint.marker")
    clusters.append(c)
    return c


def crashed(cluster: Cluster) -> NodeProc:
    (node,) = wait_for(
        lambda: [n for n in cluster.nodes if n.proc is not None and n.proc.poll() is not None],
        30,
        "a node to crash at the failpoint",
    )
    assert node.proc is not None and node.proc.returncode == 137, node.proc and node.proc.returncode
    return node


def digests(cluster: Cluster) -> list[dict[str, Any]]:
    out = []
    for node in cluster.nodes:
        res = subprocess.run(
            [sys.executable, "-m", "cronraft.raft.digest", str(cluster.root / node.node_id)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        out.append(json.loads(res.stdout))
    return out


def stop_and_compare(cluster: Cluster) -> None:
    """Converged, then stopped: every node holds the same state (fault checker rule R9), compared at the
    lowest index a node applied when they did not stop at one (an entry can still commit after the
    convergence and reach some nodes only before they exit)."""
    cluster.wait_converged()
    cluster.stop()
    d = digests(cluster)
    same_state(
        {n.node_id: x for n, x in zip(cluster.nodes, d, strict=True)},
        {n.node_id: cluster.root / n.node_id for n in cluster.nodes},
        cluster.root,
    )


def tick_until(client: Client, ledger: Path, task_id: str, after_ms: int) -> list[common_pb2.Execution]:
    """Let a per-second task run until a nominal time past `after_ms`, cancel it, wait for the last runs;
    check that every nominal time from the first to the last fired once and ran once."""
    wait_for(
        lambda: max((n for _, n, _ in read_ledger(ledger)), default=0) > after_ms, 60, "runs after recovery"
    )
    client.cancel_task(task_id)
    last = client.get_task(task_id).last_fired_nominal_ms
    wait_for(
        lambda: all(
            e.state not in (common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_PENDING)
            for e in client.list_executions(task_id)
        ),
        40,
        "the last runs to finish",
    )
    execs = list(client.list_executions(task_id, page_size=1000))
    nominals = sorted(e.nominal_time_ms for e in execs)
    assert nominals == list(range(nominals[0], last + 1, 1000)), "a due fire was lost or committed twice"
    assert all(e.state == common_pb2.EXECUTION_SUCCEEDED for e in execs), [
        (e.nominal_time_ms, common_pb2.ExecutionState.Name(e.state), e.error) for e in execs
    ]
    ran = Counter(n for _, n, _ in read_ledger(ledger))
    assert set(ran) == set(nominals), "an execution never ran"
    assert max(ran.values()) == 1, f"ran twice: {[n for n, c in ran.items() if c > 1]}"
    return execs


def audit_chain(root: Path, execution_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every audit record about one execution, by kind ("fire", "grant", "dispatch", "complete", ...)."""
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted((root / "audit").glob("*.audit.jsonl")):
        for rec in read_audit(path):
            if rec.get("execution_id") == execution_id:
                by_kind[rec.get("kind", rec["ev"])].append(rec)
    return by_kind


def assert_one_story(root: Path, ex: common_pb2.Execution) -> None:
    """fire, grant, dispatch and an accepted complete agree on the execution's final token."""
    chain = audit_chain(root, ex.execution_id)
    token = f"{ex.token.term}.{ex.token.index}"
    assert {r["node"] for r in chain["fire"]} == {"node1", "node2", "node3"}  # applied on every node
    assert all(r["nominal_ms"] == ex.nominal_time_ms for r in chain["fire"])
    assert token in {r["token"] for r in chain["grant"]}
    assert token in {r["token"] for r in chain["dispatch"]}
    accepted = {(r["node"], r["token"]) for r in chain["complete"] if r["accepted"]}
    assert {t for _, t in accepted} == {token}
    assert len(accepted) == 3  # one accepted completion per node, with the current token (R2, R3)


# -- leader.before_result_propose --------------------------------------------------------------------


def test_leader_crash_before_proposing_a_result(tmp_path: Path, clusters: list[Cluster]) -> None:
    """The leader dies with a worker's result in hand, before proposing it. The worker keeps the result
    in its outbox, reconnects to the new leader (which waits out the old leases) and delivers it: one
    run, attempt 1, same token; the crashed node comes back and converges.

    Holds when the worker is back before the new leader expires the lease (TTL + grace after it took
    over; the worker needed up to 3.5 s to find it here): with a 2 s TTL (3 s to expiry) the lease
    expired first and the payload ran again as attempt 2, the documented at-least-once duplicate, and
    the late attempt-1 result was refused as stale. Hence an 8 s TTL."""
    cluster = make(tmp_path, clusters, failpoint="leader.before_result_propose=once-crash", lease_ttl_ms=8000)
    cluster.start()
    cluster.start_worker("w1", env={"CRONRAFT_FAILPOINTS": ""})
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("once", at(int(time.time() * 1000) + 300), command(*ledger_command(ledger)))
        (ex,) = wait_for(lambda: list(client.list_executions(task.task_id)), 30, "the fire")
        victim = crashed(cluster)
        cluster.wait_leader()

        def final() -> common_pb2.Execution | None:
            e = client.get_execution(ex.execution_id)
            return e if e.state == common_pb2.EXECUTION_SUCCEEDED else None

        done = wait_for(final, 40, "the result to be delivered to the new leader")
    assert done.attempt == 1 and [a.attempt for a in done.attempts] == [1]
    assert read_ledger(ledger) == [(ex.execution_id, ex.nominal_time_ms, 1)]
    cluster.start_node(victim)  # the marker exists now: it passes the failpoint
    stop_and_compare(cluster)
    # The audit log tells it: one grant, one accepted completion with its token, on every node.
    chain = audit_chain(tmp_path, ex.execution_id)
    token = f"{done.token.term}.{done.token.index}"
    assert {r["token"] for r in chain["grant"]} == {token}
    assert {(r["node"], r["token"]) for r in chain["complete"] if r["accepted"]} == {
        (n, token) for n in ("node1", "node2", "node3")
    }


# -- raft.after_apply_before_reply -----------------------------------------------------------------


def test_leader_crash_after_apply_before_reply(tmp_path: Path, clusters: list[Cluster]) -> None:
    """The leader dies after an entry committed and applied, before its proposer (a fire, a grant, a
    result) got the answer. The new leader finds the entry's effects in the store: nothing fires twice,
    nothing is lost, every run runs once."""
    marker = tmp_path / "failpoint.marker"
    marker.write_text("disarmed")
    cluster = make(tmp_path, clusters, failpoint="raft.after_apply_before_reply=once-crash")
    cluster.start()
    cluster.start_worker("w1", env={"CRONRAFT_FAILPOINTS": ""})
    cluster.start_worker("w2", env={"CRONRAFT_FAILPOINTS": ""})
    cluster.wait_workers(2)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(read_ledger(ledger)) >= 2, 30, "first runs")
        marker.unlink()  # armed: the leader's next apply crashes it
        victim = crashed(cluster)
        crashed_at = int(time.time() * 1000)
        assert cluster.wait_leader() is not victim
        cluster.start_node(victim)
        execs = tick_until(client, ledger, task.task_id, crashed_at + 5000)
    stop_and_compare(cluster)
    assert_one_story(tmp_path, execs[0])


# -- raft.snapshot_install ---------------------------------------------------------------------------


def test_follower_crash_while_installing_a_snapshot(tmp_path: Path, clusters: list[Cluster]) -> None:
    """A follower that missed more entries than the leader keeps (compaction every 20 entries) gets the
    leader's snapshot; it crashes right after receiving it, before loading it. Restarted, it loads the
    snapshot it has on disk (or gets it again), catches up, and converges."""
    cluster = make(
        tmp_path,
        clusters,
        raft_overrides={n: {"snapshot_min_entries": 20} for n in ("node1", "node2", "node3")},
    )
    cluster.start()
    cluster.start_worker("w1")
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(read_ledger(ledger)) >= 2, 30, "first runs")
        leader = cluster.wait_leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.kill(follower)
        for i in range(60):  # 60 entries while it is down: far past the leader's compaction
            client.create_task(f"filler-{i}", at(int(time.time() * 1000) + 3_600_000), command("true"))
        cluster.node_env[follower.node_id] = {
            "CRONRAFT_FAILPOINTS": "raft.snapshot_install=once-crash",
            "CRONRAFT_FAILPOINT_MARKER": str(tmp_path / "snapshot.marker"),
        }
        cluster.start_node(follower)
        assert crashed(cluster) is follower
        assert (tmp_path / "snapshot.marker").read_text() == "raft.snapshot_install"
        cluster.start_node(follower)
        execs = tick_until(client, ledger, task.task_id, int(time.time() * 1000) + 5000)
    stop_and_compare(cluster)
    assert_one_story(tmp_path, execs[-1])
