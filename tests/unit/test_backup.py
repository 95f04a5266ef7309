"""Backups and restores in process (issue 18): the backup file's format and its checks
(raft.backup_file), a node's backup stream from a real LMDB store (daemon.backup: one at a time, paced,
its spool removed however it ends), and `schedd restore` seeding data directories from it
(daemon.restore, raft.backup_image): the same digest as the store backed up, the Raft files at the
backup's index with a term above its epoch, refusals that change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.daemon.backup import SPOOL_DIR, BackupSource, Origin
from cronraft.daemon.clusterid import CLUSTER_ID_FILE, derived_cluster_id, read_cluster_id
from cronraft.daemon.config import load_config
from cronraft.daemon.datadir import IDENTITY_FILE
from cronraft.daemon.main import main as schedd_main
from cronraft.daemon.restore import restore
from cronraft.errors import ConfigError, FailedPrecondition, InvalidArgument, ResourceExhausted
from cronraft.proto.v1 import cluster_pb2, commands_pb2, common_pb2, membership_pb2
from cronraft.raft import backup_file
from cronraft.raft.backup_file import BackupHeader, encode_header, encode_trailer, verify
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.commands.membership import META_MEMBERSHIP
from cronraft.raft.digest import digest
from cronraft.raft.snapshot_file import read_snapshot_header
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV
from tests.support.nodeconfig import node_config, toml_dumps

T0 = 1_767_225_600_000
VERSIONS = {
    "evaluator": "3",
    "tzdata": "2026a",
    "holidays": "0.60",
    "python-dateutil": "2.9",
    "cronraft": "0.1.0",
}


def _header(**kw: object) -> BackupHeader:
    fields: dict[str, object] = {
        "cluster_id": "c-test",
        "node_id": "node1",
        "applied_index": 42,
        "term": 7,
        "epoch_term": 6,
        "created_ms": T0,
        "cronraft_version": "0.1.0",
        "versions": {"tzdata": "2026a"},
        "body_bytes": 0,
    }
    fields.update(kw)
    return BackupHeader(**fields)  # type: ignore[arg-type]


def _file(path: Path, body: bytes, **kw: object) -> Path:
    head = encode_header(_header(body_bytes=len(body), **kw))
    path.write_bytes(head + body + encode_trailer(len(body), hashlib.sha256(head + body).digest()))
    return path


# --- the file format ---------------------------------------------------------------------------------


def test_a_backup_file_reads_back_what_was_written(tmp_path: Path) -> None:
    body = os.urandom(3000)
    f = verify(_file(tmp_path / "b", body))
    assert f.header == _header(body_bytes=3000)
    assert b"".join(f.read_body(1000)) == body
    assert (
        f.sha256
        == hashlib.sha256(tmp_path.joinpath("b").read_bytes()[: -backup_file.TRAILER_SIZE]).hexdigest()
    )


@pytest.mark.parametrize("where", ["body", "header", "trailer digest"])
def test_one_flipped_byte_anywhere_is_a_checksum_mismatch(tmp_path: Path, where: str) -> None:
    path = _file(tmp_path / "b", os.urandom(3000))
    raw = bytearray(path.read_bytes())
    at = {"body": 2000, "header": 40, "trailer digest": len(raw) - 5}[where]
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(FailedPrecondition, match="checksum mismatch: the sha256 of its contents is"):
        verify(path)


def test_truncated_foreign_and_future_files_are_refused_naming_why(tmp_path: Path) -> None:
    path = _file(tmp_path / "b", os.urandom(100))
    raw = path.read_bytes()
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(FailedPrecondition, match="no CRBKEND1 trailer"):
        verify(tmp_path / "cut")
    (tmp_path / "other").write_bytes(b"SQLite format 3\0" + raw[16:])
    with pytest.raises(FailedPrecondition, match="not a Cronraft backup file"):
        verify(tmp_path / "other")
    future = bytearray(raw[: -backup_file.TRAILER_SIZE])
    future[11] = 9  # format version 9, with a checksum that matches
    (tmp_path / "future").write_bytes(bytes(future) + encode_trailer(100, hashlib.sha256(future).digest()))
    with pytest.raises(FailedPrecondition, match="backup format 9: this version of Cronraft reads format 1"):
        verify(tmp_path / "future")
    with pytest.raises(FailedPrecondition, match="cannot read the backup"):
        verify(tmp_path / "missing")


# --- a store to back up ----------------------------------------------------------------------------------


def _spec(name: str) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="*/5 * * * *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )


def _fill(kv: LmdbKV, tasks: int, *, epoch_term: int = 4) -> StateMachine:
    """A store as a cluster's: index 1 is pysyncobj's no-op, then an epoch, then `tasks` creates."""
    sm = StateMachine(kv)
    cmds = [commands_pb2.Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=epoch_term, leader_id="n1"))]
    for i in range(tasks):
        task = commands_pb2.CreateTask(task_id=make_id(T0, i.to_bytes(10, "big")), spec=_spec(f"task-{i}"))
        cmds.append(commands_pb2.Command(stamped_at_ms=T0 + 1 + i, create_task=task))
    for index, cmd in enumerate(cmds, start=2):
        assert sm.apply_entry(index, encode_batch([cmd])) is not None
    return sm


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[LmdbKV, Path]]:
    data = tmp_path / "src"
    data.mkdir()
    kv = LmdbKV(data / "state", map_size=64 << 20)
    _fill(kv, 200)
    yield kv, data
    kv.close()


def _source(kv: LmdbKV, data: Path, clock: FakeTime | None = None, **kw: int) -> BackupSource:
    clock = clock or FakeTime()
    return BackupSource(
        kv,
        data,
        origin=lambda: Origin(cluster_id="c-src", node_id="node1", term=9, versions=VERSIONS),
        reserve_bytes=kw.pop("reserve_bytes", 1 << 20),
        wall_ms=lambda: T0,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **kw,
    )


async def _collect(stream: object, path: Path) -> list[cluster_pb2.BackupChunk]:
    chunks = [c async for c in stream]  # type: ignore[attr-defined]
    start, *data, end = chunks
    assert start.WhichOneof("part") == "start" and end.WhichOneof("part") == "end"
    body = b"".join(c.data for c in data)
    assert hashlib.sha256(start.start.header + body).digest() == end.end.sha256
    path.write_bytes(start.start.header + body + end.end.trailer)
    return chunks


def test_a_backup_stream_is_a_verified_file_of_the_store_at_its_applied_index(
    source: tuple[LmdbKV, Path], tmp_path: Path
) -> None:
    kv, data = source
    clock = FakeTime()
    backups = _source(kv, data, clock, max_bytes_per_s=64 << 10)  # 64 KiB/s: a few chunks, paced
    chunks = asyncio.run(_collect(backups.stream(), tmp_path / "b.crbackup"))
    f = verify(tmp_path / "b.crbackup")
    h = f.header
    assert (h.cluster_id, h.node_id, h.applied_index, h.term, h.epoch_term) == ("c-src", "node1", 202, 9, 4)
    assert h.created_ms == T0 and h.cronraft_version == "0.1.0" and "cronraft" not in h.versions
    info = chunks[0].start.info
    assert (info.applied_index, info.body_bytes, info.cluster_id) == (202, f.body_bytes, "c-src")
    # Paced: the body at 64 KiB a second, whatever the chunks (the clock advanced by the sleeps only).
    assert sum(clock.slept) == pytest.approx(f.body_bytes / (64 << 10), rel=0.01)
    # Chunks of a quarter second of the rate (16 KiB at least): a slow backup moves every second or so.
    assert all(len(c.data) <= 16 << 10 for c in chunks[1:-1]) and len(chunks) > 3
    assert not (data / SPOOL_DIR).exists()  # the spool is gone once the stream ended
    assert backups.rate(0) == 64 << 10 and backups.rate(1 << 40) == 64 << 10
    assert backups.rate(40_000) == 40_000
    with pytest.raises(InvalidArgument, match="max_bytes_per_s: 1000 bytes a second is under the minimum"):
        backups.rate(1000)


def test_one_backup_at_a_time_and_the_spool_goes_when_a_client_leaves(
    source: tuple[LmdbKV, Path], tmp_path: Path
) -> None:
    kv, data = source

    async def body() -> None:
        backups = _source(kv, data)
        first = backups.stream()
        start = await anext(first)
        assert start.WhichOneof("part") == "start" and (data / SPOOL_DIR).is_dir()
        with pytest.raises(ResourceExhausted, match="a backup from node node1 is already running"):
            await anext(backups.stream())
        await first.aclose()  # the client went away mid-stream
        assert not backups.busy and not (data / SPOOL_DIR).exists()
        await _collect(backups.stream(), tmp_path / "again")

    asyncio.run(body())
    assert verify(tmp_path / "again").header.applied_index == 202


def test_a_backup_without_room_for_its_copy_is_refused(source: tuple[LmdbKV, Path]) -> None:
    kv, data = source
    backups = _source(kv, data, reserve_bytes=1 << 62)
    with pytest.raises(ResourceExhausted, match="no room for the backup's copy of the store"):
        asyncio.run(anext(backups.stream()))
    assert not backups.busy and not (data / SPOOL_DIR).exists()


# --- restore -----------------------------------------------------------------------------------------------


def _config(tmp_path: Path, node_id: str, n: int = 1) -> Path:
    members = [(f"node{i}", f"127.0.0.1:{41000 + i}", f"127.0.0.1:{42000 + i}") for i in range(1, n + 1)]
    cfg = node_config(
        node_id,
        tmp_path / "new" / node_id,
        members,
        raft={"election_timeout_ms": 1000, "heartbeat_ms": 50},
        scheduler={},
        secret_env="TEST_BACKUP_SECRET" if n > 1 else None,
    )
    path = tmp_path / f"{node_id}-of-{n}.toml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_dumps(cfg))
    return path


@pytest.fixture
def backup(source: tuple[LmdbKV, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A backup file of the source store, and the store's digest (taken once the store is closed)."""
    monkeypatch.setenv("TEST_BACKUP_SECRET", "s" * 32)
    kv, data = source
    path = tmp_path / "b.crbackup"
    asyncio.run(_collect(_source(kv, data).stream(), path))
    kv.close()
    return path, digest(data)


def test_restore_seeds_a_node_at_the_backups_index_with_the_same_digest(
    backup: tuple[Path, dict], tmp_path: Path
) -> None:
    path, source_digest = backup
    config = load_config(_config(tmp_path, "node1"))
    done = restore(path, config)
    data = config.node.data_dir
    assert digest(data) == source_digest == {"applied_index": 202, "digest": source_digest["digest"]}
    assert sorted(p.name for p in data.iterdir()) == [CLUSTER_ID_FILE, IDENTITY_FILE, "raft", "state"]
    # The Raft files: a snapshot at the backup's index, its term above the stored epoch's and the backup's.
    last, prev, cluster, _ = read_snapshot_header(data / "raft" / "raft.snapshot")
    assert (last[1], last[2], prev[1], prev[2]) == (202, 9, 201, 9) and cluster == ["127.0.0.1:42001"]
    assert (data / "raft" / "raft.journal").is_file() and (data / "raft" / "raft.journal.meta").is_file()
    assert (done.applied_index, done.term) == (202, 9)
    assert done.cluster_id.startswith("r-") and done.cluster_id != "c-src"
    assert read_cluster_id(data) == done.cluster_id
    assert done.warnings  # the test's made-up versions differ from this node's, and it says so


def test_members_restored_from_one_file_agree_on_the_new_cluster_id(
    backup: tuple[Path, dict], tmp_path: Path
) -> None:
    path, source_digest = backup
    configs = [load_config(_config(tmp_path, f"node{i}", n=3)) for i in (1, 2, 3)]
    ids = {restore(path, c).cluster_id for c in configs}
    assert len(ids) == 1
    assert {digest(c.node.data_dir)["digest"] for c in configs} == {source_digest["digest"]}
    # --same-identity keeps the backup's id, --cluster-id names one.
    assert (
        restore(path, load_config(_config(tmp_path / "a", "node1")), same_identity=True).cluster_id == "c-src"
    )
    assert (
        restore(path, load_config(_config(tmp_path / "b", "node1")), cluster_id="dr-2027").cluster_id
        == "dr-2027"
    )
    with pytest.raises(InvalidArgument, match="--cluster-id"):
        restore(path, load_config(_config(tmp_path / "c", "node1")), cluster_id="no spaces")
    assert not (tmp_path / "c" / "new").exists()


def test_restore_refuses_a_data_directory_that_is_not_new(backup: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = backup
    config = load_config(_config(tmp_path, "node1"))
    config.node.data_dir.mkdir(parents=True)
    (config.node.data_dir / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not empty \(it holds notes.txt\): a restore only seeds a new"):
        restore(path, config)
    assert [p.name for p in config.node.data_dir.iterdir()] == ["notes.txt"]


def test_a_corrupted_backup_is_refused_and_changes_nothing(
    backup: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = backup
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    cfg = _config(tmp_path, "node1")
    assert schedd_main(["restore", str(path), "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and str(path) in err
    assert not (tmp_path / "new").exists()


def test_a_failed_seed_leaves_the_data_directory_as_it_was(backup: tuple[Path, dict], tmp_path: Path) -> None:
    """An image whose store is not at its header's index (a backup made by something else) is refused
    after the checks of the file: what the restore had created is removed."""
    path, _ = backup
    f = verify(path)
    body = b"".join(f.read_body())
    bad = _file(tmp_path / "bad.crbackup", body, applied_index=999)
    config = load_config(_config(tmp_path, "node1"))
    config.node.data_dir.mkdir(parents=True)
    with pytest.raises(FailedPrecondition, match="its store is at index 202, its header says 999"):
        restore(bad, config)
    assert list(config.node.data_dir.iterdir()) == []


def test_schedd_restore_command_line(
    backup: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = backup
    cfg = _config(tmp_path, "node1")
    assert schedd_main(["restore", str(path), "--config", str(cfg), "--same-identity"]) == 0
    out = capsys.readouterr()
    assert "as member node1 of cluster c-src" in out.out and "index 202" in out.out
    assert "warning:" in out.err
    assert schedd_main(["restore", str(path), "--config", str(cfg)]) == 2  # not new any more
    assert "is not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the two are exclusive
        schedd_main(["restore", str(path), "--config", str(cfg), "--same-identity", "--cluster-id", "x"])


def test_a_cluster_never_restored_has_the_id_of_its_member_list(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text('{"node_id": "a", "members": [["b", "h:2"], ["a", "h:1"]]}')
    assert read_cluster_id(tmp_path) == derived_cluster_id([("a", "h:1"), ("b", "h:2")])
    assert read_cluster_id(tmp_path / "nothing-here") == ""


def test_a_stored_member_list_other_than_the_configs_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "src"
    kv = LmdbKV(data / "state", map_size=64 << 20)
    _fill(kv, 3)
    stored = membership_pb2.Membership(
        members=[membership_pb2.ClusterMember(node_id="old1", raft_address="10.0.0.1:7001")], version=2
    )
    with kv.write() as txn:  # as a cluster that changed its membership keeps it (raft.commands.membership)
        txn.put("meta", META_MEMBERSHIP, stored.SerializeToString())
    asyncio.run(_collect(_source(kv, data).stream(), tmp_path / "b"))
    kv.close()
    done = restore(tmp_path / "b", load_config(_config(tmp_path, "node1")))
    (warning,) = [w for w in done.warnings if "member list" in w]
    assert "old1 10.0.0.1:7001" in warning and "node1 127.0.0.1:42001" in warning
    assert digest(done.data_dir) == digest(data)  # restored as it is
