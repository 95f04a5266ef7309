"""Transport security with real processes (issue 13): a TLS node with a token file refuses plaintext,
missing, wrong and expired tokens, and a reader's create (schedctl exits 4); a TLS worker holding a
worker token runs a real command; the Raft port never runs a crafted pickle frame from someone without
the cluster secret; a node on a non-loopback address refuses to start without TLS and authentication."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.fernet import Fernet

from cronraft.client import Client, at, command, every
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.errors import PermissionDenied, Unauthenticated, Unavailable
from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from cronraft.tokenfile import add_token
from tests.support.ports import free_ports

from .harness import Cluster, NodeProc, wait_for

pytestmark = pytest.mark.integration


class SecureCluster(Cluster):
    """The harness's cluster, with its leader found over TLS with an admin token."""

    admin: Transport = Transport()

    def status_of(self, node: NodeProc) -> cluster_pb2.StatusResponse:
        with self.admin.channel(node.grpc_address) as ch:
            return cluster_pb2_grpc.ClusterStub(ch).Status(cluster_pb2.StatusRequest(), timeout=1)

    def leader(self) -> NodeProc | None:
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                st = self.status_of(node)
            except grpc.RpcError:
                continue
            if st.is_leader and st.ready:
                return node
        return None


def _secure_cluster(tmp_path: Path) -> tuple[SecureCluster, dict[str, str], Path]:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node1", ("127.0.0.1",), server=True), Leaf("client"), Leaf("w1")])
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    # A worker's principal is its worker id (docs/security.md, "Workers"): the worker token is w1's.
    tokens = {
        role: add_token(tokens_file, "w1" if role == "worker" else f"{role}-user", [role], now_ms=now_ms)
        for role in ("reader", "submitter", "admin", "worker")
    }
    tokens["expired"] = add_token(tokens_file, "late", ["admin"], expires_ms=now_ms - 1000, now_ms=now_ms)
    tls = (
        f'[tls]\ncert = "{pki / "node1.pem"}"\nkey = "{pki / "node1-key.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n'
    )
    c = SecureCluster(tmp_path, n=1, extra_toml=tls)
    c.admin = Transport(ca=(pki / "ca.pem").read_bytes(), token=tokens["admin"])
    return c, tokens, pki / "ca.pem"


def _client(c: Cluster, ca: Path | None, token: str | None) -> Client:
    transport = Transport(ca=ca.read_bytes() if ca else None, token=token)
    return Client(c.servers, timeout_s=5, transport=transport)


def test_tls_cluster_refuses_what_it_should_and_serves_a_tls_worker(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, tokens, ca = _secure_cluster(tmp_path)
    clusters.append(c)
    c.start()

    # Plaintext against the TLS listener: the handshake fails, nothing is served.
    with Client(c.servers, timeout_s=2, transport=Transport()) as plain, pytest.raises(Unavailable):
        list(plain.list_tasks())
    # TLS without a token, with an unknown one, with an expired one: UNAUTHENTICATED.
    for token, why in ((None, "no credentials"), ("crt1_nope", "not known"), (tokens["expired"], "expired")):
        with _client(c, ca, token) as client, pytest.raises(Unauthenticated, match=why):
            list(client.list_tasks())
    # A reader reads but cannot create: PERMISSION_DENIED naming the role needed.
    with _client(c, ca, tokens["reader"]) as reader:
        assert list(reader.list_tasks()) == []
        with pytest.raises(PermissionDenied, match="needs role submitter"):
            reader.create_task("x", every("1h"), command("true"))
    # schedctl: exit code 4 for both, with the flags or the environment.
    env = {**os.environ, "CRONRAFT_SERVER": c.servers, "CRONRAFT_TLS_CA": str(ca)}
    schedctl = [sys.executable, "-m", "cronraft.client.cli"]
    denied = subprocess.run(
        [
            *schedctl,
            "--token",
            tokens["reader"],
            "task",
            "create",
            "--name",
            "x",
            "--every",
            "1h",
            "--",
            "true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert denied.returncode == 4, denied.stderr
    assert "needs role submitter" in denied.stderr
    anonymous = subprocess.run(
        [*schedctl, "task", "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert anonymous.returncode == 4, anonymous.stderr
    # A TLS worker with a worker token runs a real command.
    c.start_worker("w1", extra_args=("--tls-ca", str(ca)), env={"CRONRAFT_TOKEN": tokens["worker"]})
    marker = tmp_path / "ran-over-tls"
    with _client(c, ca, tokens["submitter"]) as submitter:
        task = submitter.create_task("touch", at(int(time.time() * 1000)), command("touch", str(marker)))
        wait_for(marker.exists, 30, "the worker to run the command")
        wait_for(
            lambda: any(e.worker_id == "w1" for e in submitter.list_executions(task.task_id)),
            10,
            "the execution recorded with worker w1",
        )


def test_a_worker_without_the_worker_role_gets_nothing(tmp_path: Path, clusters: list[Cluster]) -> None:
    c, tokens, ca = _secure_cluster(tmp_path)
    clusters.append(c)
    c.start()
    c.start_worker("w1", extra_args=("--tls-ca", str(ca)), env={"CRONRAFT_TOKEN": tokens["submitter"]})
    log = tmp_path / "w1.log"
    wait_for(lambda: log.exists() and "PERMISSION_DENIED" in log.read_text(), 30, "the worker to be refused")


# ------------------------------------------------------------------------------------- the raft port


class _Touch:
    """Unpickling this runs `touch PATH`: what an attacker would send to a Raft port."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def _frame(payload: bytes) -> bytes:
    return struct.pack("i", len(payload)) + payload  # pysyncobj's framing (tcp_connection.py)


def _send(raft_address: str, frames: list[bytes]) -> None:
    host, port = raft_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        for f in frames:
            s.sendall(f)
        time.sleep(0.5)


def _raft_address(node: NodeProc) -> str:
    text = node.config_path.read_text()
    own = text.split(f'id = "{node.node_id}"\ngrpc_address')[1]
    return own.split('raft_address = "')[1].split('"')[0]


def test_a_crafted_pickle_frame_never_runs_without_the_secret(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    # A node with a secret: frames in clear, and frames encrypted with a wrong secret.
    (tmp_path / "secured").mkdir()
    secured = Cluster(tmp_path / "secured", n=1)
    cfg = secured.nodes[0].config_path
    cfg.write_text(
        cfg.read_text().replace("[cluster]\n", '[cluster]\nsecret_env = "CRONRAFT_CLUSTER_SECRET"\n', 1)
    )
    clusters.append(secured)
    secured.start()
    marker = tmp_path / "pwned"
    evil = zlib.compress(pickle.dumps(_Touch(marker)), 3)
    wrong = Fernet(Fernet.generate_key()).encrypt_at_time(evil, int(time.monotonic()))
    raft = _raft_address(secured.nodes[0])
    _send(raft, [_frame(evil)])
    _send(raft, [_frame(wrong), _frame(wrong)])
    _send(raft, [_frame(b"x" * 64), _frame(evil)])
    time.sleep(1.0)
    assert not marker.exists()
    assert secured.nodes[0].alive and secured.leader() is not None  # still serving

    # The control: the same frame against a loopback node without a secret does run. This proves the
    # frame above is one pysyncobj would execute, so its absence there is the secret's doing.
    (tmp_path / "open").mkdir()
    open_node = Cluster(tmp_path / "open", n=1)
    clusters.append(open_node)
    open_node.start()
    control = tmp_path / "control"
    _send(_raft_address(open_node.nodes[0]), [_frame(zlib.compress(pickle.dumps(_Touch(control)), 3))])
    wait_for(control.exists, 10, "the control frame to run on the node without a secret")


# ------------------------------------------------------------------------------------ start refusals


def _local_ip() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _schedd(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronraft.daemon.main", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "CRONRAFT_CLUSTER_SECRET"},
        cwd=config.parent,
    )


def _one_node(tmp_path: Path, grpc_host: str, extra: str = "", head: str = "", secret: str = "") -> Path:
    g, r = free_ports(2)
    path = tmp_path / "node.toml"
    path.write_text(
        f'{head}[node]\nid = "n"\ndata_dir = "{tmp_path / "data"}"\n\n[cluster]\n{secret}'
        f'[[cluster.members]]\nid = "n"\ngrpc_address = "{grpc_host}:{g}"\nraft_address = "127.0.0.1:{r}"\n\n'
        + extra
    )
    return path


def test_a_non_loopback_address_without_tls_and_auth_refuses_to_start(tmp_path: Path) -> None:
    proc = _schedd(_one_node(tmp_path, "192.0.2.10"))
    assert proc.returncode == 2
    assert "is not a loopback address and this node has no TLS" in proc.stderr
    assert "insecure = true" in proc.stderr
    # The raft port too: not loopback, no secret.
    g, r = free_ports(2)
    path = tmp_path / "raft.toml"
    path.write_text(
        f'[node]\nid = "n"\ndata_dir = "{tmp_path / "d2"}"\n\n[cluster]\n'
        f'[[cluster.members]]\nid = "n"\ngrpc_address = "127.0.0.1:{g}"\nraft_address = "192.0.2.10:{r}"\n'
    )
    proc = _schedd(path)
    assert proc.returncode == 2
    assert "is not loopback, so a secret is required even for one member" in proc.stderr


def test_insecure_true_starts_and_says_so_loudly(tmp_path: Path) -> None:
    ip = _local_ip()
    if ip is None:
        pytest.skip("no non-loopback address on this machine")
    config = _one_node(tmp_path, ip, head="insecure = true\n\n")
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cronraft.daemon.main", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: "node started" in log.read_text(), 30, "the node to start")
        assert "INSECURE: insecure = true" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
