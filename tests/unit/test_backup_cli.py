"""`schedctl cluster backup` and `Client.backup` against an in-process gRPC server whose Cluster.Backup
streams a prepared backup (issue 18): the file written byte for byte through FILE.tmp and a rename,
private; an existing FILE kept unless --force; `-` to stdout with the report on stderr; a stream damaged
in transit or cut short leaves no file; a refusal's code is the exit code; RATE parsed."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from cronraft.client import Client
from cronraft.client.cli import main
from cronraft.client.cli.cluster import rate_arg
from cronraft.errors import InternalError, InvalidArgument
from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from cronraft.raft.backup_file import BackupHeader, encode_header, encode_trailer, verify

BODY = os.urandom(300_000)


def _parts(body: bytes = BODY) -> tuple[bytes, bytes, bytes]:
    header = BackupHeader(
        cluster_id="c-x",
        node_id="node2",
        applied_index=77,
        term=3,
        epoch_term=3,
        created_ms=1_767_225_600_000,
        cronraft_version="0.1.0",
        versions={"tzdata": "2026a"},
        body_bytes=len(body),
    )
    head = encode_header(header)
    return head, body, encode_trailer(len(body), hashlib.sha256(head + body).digest())


class FakeCluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[cluster_pb2.BackupRequest] = []

    def Backup(self, request: cluster_pb2.BackupRequest, context: Any) -> Iterator[cluster_pb2.BackupChunk]:
        self.requests.append(request)
        if self.mode == "busy":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "a backup from node node2 is already running")
        head, body, trailer = _parts()
        info = cluster_pb2.BackupInfo(
            format=1, cluster_id="c-x", node_id="node2", applied_index=77, term=3, body_bytes=len(body)
        )
        yield cluster_pb2.BackupChunk(start=cluster_pb2.BackupStart(header=head, info=info))
        for at in range(0, len(body), 100_000):
            data = body[at : at + 100_000]
            if self.mode == "damaged" and at == 100_000:
                # Damaged whatever the byte was (setting it to 0 left 1 body in 256 intact: urandom).
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            yield cluster_pb2.BackupChunk(data=data)
            if self.mode == "cut" and at == 100_000:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the node stopped")
        digest = hashlib.sha256(head + body).digest()
        yield cluster_pb2.BackupChunk(
            end=cluster_pb2.BackupEnd(trailer=trailer, sha256=digest, body_bytes=len(body))
        )


@pytest.fixture
def server() -> Iterator[tuple[str, FakeCluster]]:
    fake = FakeCluster()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    cluster_pb2_grpc.add_ClusterServicer_to_server(fake, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", fake
    srv.stop(None)


def test_backup_to_a_file_is_the_streamed_bytes_private_and_renamed(
    server: tuple[str, FakeCluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, fake = server
    out = tmp_path / "b.crbackup"
    assert main(["--server", address, "-o", "json", "cluster", "backup", str(out), "--rate", "20MiB"]) == 0
    assert out.read_bytes() == b"".join(_parts())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and not (tmp_path / "b.crbackup.tmp").exists()
    assert verify(out).header.applied_index == 77
    doc = json.loads(capsys.readouterr().out)
    assert doc["bytes"] == out.stat().st_size and doc["applied_index"] == 77 and doc["server"] == address
    assert doc["sha256"] == verify(out).sha256 and doc["cluster_id"] == "c-x"
    assert fake.requests[-1].max_bytes_per_s == 20 << 20
    # An existing file is kept unless --force.
    out.write_bytes(b"mine")
    assert main(["--server", address, "cluster", "backup", str(out)]) == 2
    assert "exists: pass --force to replace it" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["--server", address, "cluster", "backup", str(out), "--force"]) == 0
    assert "backup of cluster c-x from node2" in capsys.readouterr().out and out.stat().st_size > 4


@pytest.mark.parametrize("mode", ["damaged", "cut"])
def test_a_stream_damaged_or_cut_leaves_no_file(
    server: tuple[str, FakeCluster], tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    address, fake = server
    fake.mode = mode
    out = tmp_path / "b.crbackup"
    code = main(["--server", address, "cluster", "backup", str(out)])
    err = capsys.readouterr().err
    assert code == (1 if mode == "damaged" else 3)
    assert ("arrived damaged" in err) if mode == "damaged" else ("the node stopped" in err)
    assert list(tmp_path.iterdir()) == []


def test_a_busy_node_is_refused_with_its_reason(
    server: tuple[str, FakeCluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, fake = server
    fake.mode = "busy"
    assert main(["--server", address, "cluster", "backup", str(tmp_path / "b")]) == 1
    assert "already running" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_the_sdk_writes_to_any_binary_sink(server: tuple[str, FakeCluster], tmp_path: Path) -> None:
    address, fake = server
    seen: list[int] = []
    with Client(address) as client, open(tmp_path / "b", "wb") as sink:
        receipt = client.backup(sink, progress=seen.append)
    assert (tmp_path / "b").read_bytes() == b"".join(_parts())
    assert (
        receipt.file_bytes == seen[-1] == (tmp_path / "b").stat().st_size and receipt.info.node_id == "node2"
    )
    fake.mode = "damaged"
    with Client(address) as client, open(tmp_path / "c", "wb") as sink, pytest.raises(InternalError):
        client.backup(sink)


def test_rate_argument() -> None:
    assert rate_arg(None) == 0
    assert [rate_arg(t) for t in ("1000", "512KiB", "20MiB", "1g", "3M/s")] == [
        1000,
        512 << 10,
        20 << 20,
        1 << 30,
        3 << 20,
    ]
    for bad in ("fast", "0", "-5MiB", "2TB"):
        with pytest.raises(InvalidArgument, match="--rate"):
            rate_arg(bad)


def test_backup_to_stdout_reports_on_stderr(
    server: tuple[str, FakeCluster], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    address, _ = server
    assert main(["--server", address, "cluster", "backup", "-"]) == 0
    out = capsysbinary.readouterr()
    assert out.out == b"".join(_parts())
    assert b"backup of cluster c-x from node2" in out.err
