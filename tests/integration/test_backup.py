"""Backup and restore with real processes (issue 18, docs/operations.md "Backup and restore").

Three nodes with a worker run a per-second task and three tasks with each misfire policy while a client
keeps creating tasks; `schedctl cluster backup` takes a backup from a follower meanwhile, slowed down so
that it spans several seconds (a second backup from that node is refused RESOURCE_EXHAUSTED while it
streams). The backup's store is the source's state at the backup's index: replaying the source's own
Raft journal up to that index through the state machine gives the same digest. `schedd restore` seeds a
new three-node cluster (new ports, new data directories) from the file; each restored member's digest
is that digest, they agree on a new cluster id, they elect a leader and take writes, and the tasks fire
again with their misfire policy applied to the gap since the backup (skip: all missed; fire-once: the
latest; fire-all: all). A byte flipped in the file is refused naming the checksum, with nothing created;
a data directory that is not new is refused.

A single node with TLS and tokens: a reader's backup is refused PERMISSION_DENIED, an admin's is taken,
and restored into a single new node that runs the task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cronraft.client import Client, command, cron
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.errors import PermissionDenied, ResourceExhausted
from cronraft.proto.v1 import common_pb2
from cronraft.raft.backup_file import verify
from cronraft.raft.backup_image import image_facts
from cronraft.raft.digest import digest
from cronraft.tokenfile import add_token
from tests.support.replay import state_at

from .harness import Cluster, NodeProc, ledger_command, read_ledger, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration

POLICIES = ("skip", "fire-once", "fire-all")
RATE = 48 << 10  # bytes a second: the backup of the test's store streams for several seconds


def _schedctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronraft.client.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _restore(backup: Path, cluster: Cluster, node: NodeProc, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cronraft.daemon.main",
            "restore",
            str(backup),
            "--config",
            str(node.config_path),
            *extra,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=cluster.env,  # the cluster secret's variable: the config is loaded whole
    )


def _root(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _outcomes(client: Client, task_id: str, lo: int, hi: int) -> dict[int, str]:
    resp = client.explain_task(task_id, from_=lo, to=hi, limit=1000)
    return {r.nominal_time_ms: common_pb2.FireOutcome.Name(r.outcome) for r in resp.records}


def test_backup_under_load_restores_into_a_fresh_cluster(
    tmp_path: Path, clusters: list[Cluster], capsys: pytest.CaptureFixture[str]
) -> None:
    keep_journal = {"snapshot_min_time_s": 3600}  # no compaction: the journal replays from index 1
    source = Cluster(_root(tmp_path / "a"), n=3, raft_overrides={f"node{i}": keep_journal for i in (1, 2, 3)})
    clusters.append(source)
    source.start()
    source.start_worker("w1", capacity=8)
    source.wait_workers(1)
    ledgers = {p: tmp_path / f"ledger-{p}" for p in (*POLICIES, "tick")}
    with Client(source.servers, timeout_s=30) as client:
        tasks = {
            p: client.create_task(
                f"every-second-{p}",
                cron("* * * * * *"),
                command(*ledger_command(ledgers[p])),
                misfire=p,
                catchup_window="2m",
                max_catchup=1000,
            )
            for p in POLICIES
        }
        tick = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledgers["tick"])))
        for i in range(150):  # a store of some size, so that the paced backup lasts a while
            client.create_task(f"filler-{i:03d}", cron("0 3 * * *"), command("true"), tags={"kind": "filler"})
        wait_for(lambda: all(len(read_ledger(f)) >= 2 for f in ledgers.values()), 40, "first runs")
        leader = source.wait_leader()
        follower = next(n for n in source.nodes if n is not leader)

        # Creates go on during the backup: a thread creates tasks until told to stop.
        stop = threading.Event()
        created: list[tuple[float, str]] = []

        def keep_creating() -> None:
            with Client(source.servers, timeout_s=30) as writer:
                n = 0
                while not stop.is_set():
                    t = writer.create_task(f"during-{n}", cron("0 4 * * *"), command("true"))
                    created.append((time.monotonic(), t.task_id))
                    n += 1
                    time.sleep(0.05)

        creator = threading.Thread(target=keep_creating, daemon=True)
        creator.start()
        backup = tmp_path / "cluster.crbackup"
        began = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "cronraft.client.cli", "--server", follower.grpc_address, "-o", "json",
                "cluster", "backup", str(backup), "--rate", str(RATE),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        tmp_file = tmp_path / "cluster.crbackup.tmp"
        wait_for(lambda: tmp_file.exists() and tmp_file.stat().st_size > RATE, 30, "the backup streaming")
        # One backup at a time per node: a second one is refused while the first streams.
        with (
            Client(follower.grpc_address, timeout_s=10) as other,
            open(tmp_path / "second", "wb") as sink,
            pytest.raises(ResourceExhausted) as busy,
        ):
            other.backup(sink)
        assert "already running" in str(busy.value)
        out, err = proc.communicate(timeout=120)
        ended = time.monotonic()
        stop.set()
        creator.join(30)
        assert proc.returncode == 0, err
        report = json.loads(out)
        index = report["applied_index"]
        # The backup took seconds, the cluster wrote and fired meanwhile.
        assert ended - began > 3 and report["seconds"] > 3
        during = [tid for at, tid in created if began < at < ended]
        assert len(during) > 10
        after = source.core.status(follower.node_id)
        assert after is not None and after.applied_index > index
        assert report["node_id"] == follower.node_id and report["bytes"] == backup.stat().st_size
        with capsys.disabled():
            print(f"\nbackup: {report['bytes']} bytes in {report['seconds']} s at {RATE} B/s, index {index}")
    backup_file = verify(backup)
    taken_ms = backup_file.header.created_ms
    assert backup_file.header.applied_index == index and backup_file.sha256 == report["sha256"]
    source.stop()

    # The backup is the source's state at its index, as the source's own log says.
    body = tmp_path / "body"
    body.mkdir()
    (body / "data.mdb").write_bytes(b"".join(backup_file.read_body()))
    assert image_facts(body / "data.mdb").applied_index == index
    expected = state_at(tmp_path / "a" / "node1", index, tmp_path / "replay")
    assert digest(body) == expected

    # A corrupted copy is refused, naming the checksum, and creates nothing.
    target = Cluster(_root(tmp_path / "b"), n=3, raft_overrides={f"node{i}": keep_journal for i in (1, 2, 3)})
    clusters.append(target)
    corrupt = tmp_path / "corrupt.crbackup"
    raw = bytearray(backup.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    corrupt.write_bytes(bytes(raw))
    refused = _restore(corrupt, target, target.nodes[0])
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr, refused.stderr
    assert not (tmp_path / "b" / "node1").exists()

    # Each new member restored from the same file: the source's state, one new cluster id.
    ids = set()
    for node in target.nodes:
        done = _restore(backup, target, node)
        assert done.returncode == 0, done.stderr
        ids.add(done.stdout.split(" of cluster ")[1].split(";")[0])
        assert digest(tmp_path / "b" / node.node_id) == expected
    assert len(ids) == 1 and backup_file.header.cluster_id not in ids
    again = _restore(backup, target, target.nodes[0])
    assert again.returncode == 2 and "is not empty" in again.stderr

    # The gap: nominal times that pass after the backup with no cluster firing them.
    time.sleep(max(0.0, (taken_ms + 9000) / 1000 - time.time()))
    target.start()
    target.start_worker("w2", capacity=8)
    target.wait_workers(1)
    up_at = int(time.time() * 1000)
    with Client(target.servers, timeout_s=30) as client:
        status = client.cluster_status()
        assert status.term > backup_file.header.epoch_term
        assert status.applied_index > index
        # The state is the backup's: tasks created while it streamed (after its copy) are not in it.
        assert not _exists(client, during[-1])
        client.create_task("after-restore", cron("0 5 * * *"), command("true"))

        def resumed() -> bool:
            return all(
                client.get_task(t.task_id).last_fired_nominal_ms > up_at + 1000
                for t in (*tasks.values(), tick)
            )

        wait_for(resumed, 60, "fires from the restored cluster")
        for t in (*tasks.values(), tick):
            client.pause_task(t.task_id)
        window = (taken_ms + 2000, up_at - 6000)  # nominal times surely missed: committed > 5 s late
        outcome = {p: _outcomes(client, t.task_id, *window) for p, t in tasks.items()}
    assert window[1] - window[0] >= 2000
    skip = list(outcome["skip"].values())
    assert skip and set(skip) == {"MISSED_DOWNTIME"}, outcome["skip"]
    once = list(outcome["fire-once"].values())
    assert once.count("FIRED") <= 1 and "MISSED_DOWNTIME" in once, outcome["fire-once"]
    everything = outcome["fire-all"]
    assert everything and set(everything.values()) == {"FIRED"}, everything
    # The restored cluster's worker ran them: the ledger has runs of nominal times after the backup.
    wait_for(
        lambda: any(nominal > up_at for _, nominal, _ in read_ledger(ledgers["tick"])),
        30,
        "a run after restore",
    )
    target.wait_converged()
    target.stop()
    # The restored members hold the same state at the same index. Not simply their stores as they
    # stopped: an entry can still commit after wait_converged (the stopping worker's, the leader's own)
    # and reach some members before they exit. So at the lowest index a member applied: each member's
    # state at that index is rebuilt from the backup's store and its own journal, and the stores that
    # stopped at that index are that state too.
    stores = {n.node_id: digest(tmp_path / "b" / n.node_id) for n in target.nodes}
    lowest = min(d["applied_index"] for d in stores.values())
    assert lowest > index
    rebuilt = {
        nid: state_at(tmp_path / "b" / nid, lowest, tmp_path / f"replay-{nid}", start=body) for nid in stores
    }
    stopped_there = [d for d in stores.values() if d["applied_index"] == lowest]
    assert len({json.dumps(d) for d in [*rebuilt.values(), *stopped_there]}) == 1, (stores, rebuilt)


def _exists(client: Client, task_id: str) -> bool:
    try:
        client.get_task(task_id)
    except Exception:
        return False
    return True


def test_only_an_admin_backs_up_and_a_single_node_restores(tmp_path: Path, clusters: list[Cluster]) -> None:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node", ("127.0.0.1",), server=True), Leaf("client")])
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    tokens = {
        role: add_token(tokens_file, f"{role}-user", [role], now_ms=now_ms) for role in ("reader", "admin")
    }
    toml = (
        f'[tls]\ncert = "{pki / "node.pem"}"\nkey = "{pki / "node-key.pem"}"\nca = "{pki / "ca.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n'
    )
    ca = (pki / "ca.pem").read_bytes()
    source = SecureCluster(_root(tmp_path / "a"), n=1, extra_toml=toml)
    source.admin = Transport(ca=ca, token=tokens["admin"])
    clusters.append(source)
    source.start()
    admin = Transport(ca=ca, token=tokens["admin"])
    with Client(source.servers, timeout_s=20, transport=admin) as client:
        task = client.create_task("nightly", cron("* * * * * *"), command("true"), misfire="skip")
    env = {"CRONRAFT_SERVER": source.servers, "CRONRAFT_TLS_CA": str(pki / "ca.pem")}
    reader = Transport(ca=ca, token=tokens["reader"])
    with (
        Client(source.servers, timeout_s=20, transport=reader) as client,
        open(tmp_path / "nope", "wb") as sink,
        pytest.raises(PermissionDenied),
    ):
        client.backup(sink)
    denied = _schedctl(
        "cluster",
        "backup",
        str(tmp_path / "nope2"),
        env={**os.environ, **env, "CRONRAFT_TOKEN": tokens["reader"]},
    )
    assert denied.returncode == 4 and not (tmp_path / "nope2").exists(), denied.stderr
    backup = tmp_path / "one.crbackup"
    taken = _schedctl(
        "cluster", "backup", str(backup), env={**os.environ, **env, "CRONRAFT_TOKEN": tokens["admin"]}
    )
    assert taken.returncode == 0, taken.stderr
    assert "backup of cluster" in taken.stdout
    source.stop()

    target = SecureCluster(_root(tmp_path / "b"), n=1, extra_toml=toml)
    target.admin = admin
    clusters.append(target)
    done = _restore(backup, target, target.nodes[0], "--same-identity")
    assert done.returncode == 0, done.stderr
    assert verify(backup).header.cluster_id in done.stdout
    target.start()
    with Client(target.servers, timeout_s=20, transport=admin) as client:
        restored = client.get_task(task.task_id)
        assert restored.spec.name == "nightly"
        up_at = int(time.time() * 1000)
        wait_for(
            lambda: client.get_task(task.task_id).last_fired_nominal_ms > up_at, 30, "a fire after restore"
        )
