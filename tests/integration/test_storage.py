"""Bounded storage with real processes (issue 11): a full store or a full disk never crashes a node and
never wedges the log. Writes are refused with RESOURCE_EXHAUSTED naming the cause, reads keep working,
deletes free space, and writes are accepted again without a restart.

- A small LMDB map (`[storage] max_map_size_bytes`): filled with tasks until refused.
- A small tmpfs as a node's data directory (needs root to mount it, as the fault harness does): filled
  by a ballast file until the disk is full. On one node, and on the leader of three (it hands leadership
  to a healthy follower, then catches up once its disk is freed; every node ends with the same store).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cronraft.client import Client, at, build_spec, command
from cronraft.errors import CronraftError, ResourceExhausted
from cronraft.proto.v1 import common_pb2
from cronraft.raft.digest import digest
from tests.support.replay import same_state

from .harness import Cluster, NodeProc, wait_for

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
MIB = 1 << 20
BALLAST = "ballast"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points made on demand (`mount(path, mib)`); unmounted at the end."""
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def mount_tmpfs(mounted: list[Path], path: Path, mib: int) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs", str(path)]
    done = subprocess.run(mount, check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    mounted.append(path)


def fill_disk(path: Path) -> None:
    """Write a ballast file into `path`'s file system until it is full (ENOSPC)."""
    fd = os.open(path / BALLAST, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)


def storage_health(node: NodeProc) -> int:
    with grpc.insecure_channel(node.grpc_address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="cronraft.storage"), timeout=2
        )
    return int(resp.status)


def later() -> common_pb2.Schedule:
    return at(int(time.time() * 1000) + HOUR_MS)


def fill_with_tasks(client: Client, prefix: str, limit: int) -> tuple[list[str], ResourceExhausted]:
    """Create tasks until the cluster refuses one; (their ids, the refusal)."""
    created: list[str] = []
    payload = command("echo", "x" * 2000)
    for i in range(limit):
        try:
            created.append(client.create_task(f"{prefix}-{i}", later(), payload).task_id)
        except ResourceExhausted as e:
            return created, e
    raise AssertionError(f"{limit} tasks created and none refused")


def creates(client: Client, name: str) -> bool:
    try:
        client.create_task(name, later(), command("true"))
    except CronraftError:
        return False
    return True


def test_a_full_store_refuses_writes_reads_go_on_and_deletes_make_room(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    cluster = Cluster(
        tmp_path,
        n=1,
        extra_toml=f"[storage]\nmap_size_bytes = {2 * MIB}\nmax_map_size_bytes = {16 * MIB}\n"
        f"reserve_bytes = {4 * MIB}\n",
    )
    clusters.append(cluster)
    cluster.start()
    node = cluster.nodes[0]
    assert node.proc is not None
    pid = node.proc.pid
    with Client(cluster.servers, timeout_s=10) as client:
        created, refusal = fill_with_tasks(client, "fill", 20_000)
        text = str(refusal)
        assert "store full" in text and "storage.max_map_size_bytes (16.0 MiB)" in text, text
        assert len(created) > 500
        # Reads keep working, from the same store.
        assert client.get_task(created[0]).spec.name == "fill-0"
        assert sum(1 for _ in client.list_tasks(page_size=1000)) == len(created)
        status = client.cluster_status()
        assert status.storage.exhausted and status.storage.refused == "data"
        assert status.members[0].storage.reason == status.storage.reason
        assert status.storage.map_size_bytes == 16 * MIB  # it grew from 2 MiB to its maximum
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        wait_for(lambda: storage_health(node) == not_serving, 5, "the storage health to say so")
        # Deletes are accepted, and free space: writes are accepted again, without a restart.
        deleted = client.delete_tasks(created[: len(created) // 2])
        assert deleted.ok, deleted.errors
        wait_for(lambda: creates(client, "after"), 10, "a create accepted again")
        assert not client.cluster_status().storage.exhausted
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_for(lambda: storage_health(node) == serving, 5, "the storage health to recover")
    assert node.alive and node.proc.pid == pid


def test_a_full_disk_refuses_writes_without_crashing_and_recovers_once_freed(
    tmp_path: Path, clusters: list[Cluster], tmpfs: list[Path]
) -> None:
    data = tmp_path / "node1"
    mount_tmpfs(tmpfs, data, 96)
    cluster = Cluster(tmp_path, n=1, extra_toml=f"[storage]\nreserve_bytes = {8 * MIB}\n")
    clusters.append(cluster)
    cluster.start()
    node = cluster.nodes[0]
    assert node.proc is not None
    pid = node.proc.pid
    with Client(cluster.servers, timeout_s=10) as client:
        ids = [client.create_task(f"t{i}", later(), command("echo", "x" * 1000)).task_id for i in range(200)]
        fill_disk(data)
        # Awaited through status, not by probing with creates: a probe accepted before the node noticed
        # the full disk left one task more than the count below expects (CI saw 101).
        refusal = wait_for(
            lambda: (st := client.cluster_status().storage).exhausted and st,
            10,
            "the node to see its disk full",
        )
        assert "disk" in refusal.reason, refusal
        with pytest.raises(ResourceExhausted, match="disk"):
            client.create_task("refused", later(), command("true"))
        assert client.get_task(ids[0]).spec.name == "t0"  # reads
        deleted = client.delete_tasks(ids[:100])  # deletes, on a full disk
        assert deleted.ok, deleted.errors
        assert sum(1 for _ in client.list_tasks(page_size=1000)) == 100
        assert node.alive and node.proc.pid == pid  # no SIGBUS
        (data / BALLAST).unlink()
        wait_for(lambda: creates(client, "after"), 10, "a create accepted once the disk is freed")
        assert not client.cluster_status().storage.exhausted
    assert node.alive and node.proc.pid == pid


def test_a_leader_whose_disk_fills_hands_over_and_catches_up_once_freed(
    tmp_path: Path, clusters: list[Cluster], tmpfs: list[Path]
) -> None:
    for i in (1, 2, 3):
        mount_tmpfs(tmpfs, tmp_path / f"node{i}", 96)
    cluster = Cluster(tmp_path, n=3, extra_toml=f"[storage]\nreserve_bytes = {8 * MIB}\n")
    clusters.append(cluster)
    cluster.start()
    leader = cluster.wait_leader()
    assert leader.proc is not None
    pids = {n.node_id: n.proc.pid for n in cluster.nodes if n.proc is not None}
    with Client(cluster.servers, timeout_s=10) as client:
        for i in range(100):
            client.create_task(f"before-{i}", later(), command("true"))
        fill_disk(tmp_path / leader.node_id)
        # The full leader hands leadership to a follower; writes go on there.
        wait_for(
            lambda: (n := cluster.leader()) is not None and n.node_id != leader.node_id, 30, "a new leader"
        )
        for i in range(50):
            wait_for(lambda i=i: creates(client, f"after-{i}"), 10, "a write on the new leader")
        # More than the full node's reserves (4 MiB for its journal, 4 MiB for its store): it falls
        # behind, alive, while the other two go on.
        big = command("echo", "x" * 3000)
        specs = (build_spec(f"bulk-{i}", later(), big) for i in range(4000))
        assert client.import_tasks(specs, batch_size=200).total == 4000
        behind = wait_for(
            lambda: (st := leader.status()).storage.exhausted and st.storage, 20, "the full node to refuse"
        )
        assert behind.refused in ("all_but_deletes", "all"), behind
        assert leader.status().applied_index < cluster.leader().status().applied_index  # type: ignore[union-attr]

        def seen_full() -> bool:  # as the answering node's last clock probe of it said
            member = next(m for m in client.cluster_status().members if m.node_id == leader.node_id)
            return member.storage.exhausted and "disk" in member.storage.reason

        wait_for(seen_full, 10, "the full node's storage in cluster status")
        assert leader.alive
        (tmp_path / leader.node_id / BALLAST).unlink()
        cluster.wait_converged(30)
    cluster.stop()
    assert all(n.proc is not None and n.proc.pid == pids[n.node_id] for n in cluster.nodes)
    # Compared at one index: an entry can still commit after the convergence and reach some members
    # only before they exit (tests/support/replay.py).
    same_state(
        {n.node_id: digest(tmp_path / n.node_id) for n in cluster.nodes},
        {n.node_id: tmp_path / n.node_id for n in cluster.nodes},
        tmp_path / "replay",
    )
