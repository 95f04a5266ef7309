"""Bounded storage (issue 11): the store's map grows up to its maximum, what a node refuses when space runs
out (daemon.storage), the group committer's admission, and the replicator with an entry it cannot apply
(answered at once with RESOURCE_EXHAUSTED, nothing proposed meanwhile, recovered by itself).

The real full disk (a small tmpfs) and full map with real processes: tests/integration/test_storage.py.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.daemon import storage
from cronraft.daemon.storage import StorageMonitor, assess, refuses
from cronraft.errors import ResourceExhausted, StorageError
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.memreplicator import MemReplicator
from cronraft.raft.replicator import RaftMember, ReplicatorConfig
from cronraft.raft.store import LmdbKV, StoreUsage
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from tests.support.ports import free_port
from tests.support.wait import wait_until_async

MIB = 1 << 20
U64 = struct.Struct(">Q")


def _usage(used: int, max_map: int = 64 * MIB) -> StoreUsage:
    return StoreUsage(map_size=max_map, max_map_size=max_map, high_water=used, used=used, page_size=4096)


def _assess(**kw: object) -> storage.Assessment:
    args: dict[str, object] = {
        "usage": _usage(10 * MIB),
        "disk_free": 1 << 40,
        "reserve": 8 * MIB,
        "store_reserve_ok": True,
        "journal_low": None,
        "stuck": None,
        "data_dir": Path("/data/node1"),
    }
    args.update(kw)
    return assess(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ assess


def test_nothing_is_refused_with_room_left() -> None:
    a = _assess()
    assert a.refused == "" and a.reason == ""


def test_a_store_near_its_maximum_refuses_data_and_says_which_limit() -> None:
    a = _assess(usage=_usage(57 * MIB))
    assert a.refused == storage.REFUSE_DATA
    assert "store full" in a.reason and "storage.max_map_size_bytes (64.0 MiB)" in a.reason
    assert "delete tasks" in a.reason


def test_a_disk_below_the_reserve_refuses_data() -> None:
    a = _assess(disk_free=3 * MIB)
    assert a.refused == storage.REFUSE_DATA
    assert "disk almost full: 3.0 MiB free on /data/node1" in a.reason and "reserve_bytes" in a.reason


def test_a_full_disk_keeps_only_deletes() -> None:
    a = _assess(store_reserve_ok=False, disk_free=0)
    assert a.refused == storage.REFUSE_ALL_BUT_DELETES and "disk full" in a.reason
    b = _assess(journal_low="disk full: the Raft journal cannot keep its reserve")
    assert b.refused == storage.REFUSE_ALL_BUT_DELETES and "Raft journal" in b.reason


def test_an_entry_that_cannot_apply_refuses_everything_and_names_the_entry() -> None:
    a = _assess(stuck=(42, "disk full (0.0 MiB free on /data/node1): free disk space"), disk_free=0)
    assert a.refused == storage.REFUSE_ALL
    assert "cannot apply log entry 42: disk full" in a.reason and "reads still work" in a.reason


def test_what_each_level_refuses() -> None:
    assert not refuses("", "create_task")
    assert refuses("data", "create_task") and refuses("data", "append_output")
    assert not refuses("data", "fire") and not refuses("data", "delete_task")
    assert not refuses("data", "update_task")  # how a task's retention is lowered to make room
    assert refuses("all_but_deletes", "fire") and refuses("all_but_deletes", "complete")
    for kind in ("delete_task", "prune", "cancel_task", "purge_dead_letters", "epoch"):
        assert not refuses("all_but_deletes", kind)
    assert refuses("all", "delete_task") and refuses("all", "prune")


# -------------------------------------------------------------------------------------- the store


def test_the_map_grows_on_demand_up_to_its_maximum(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=1 * MIB, max_map_size=8 * MIB)
    try:
        assert kv.map_size == 1 * MIB
        with pytest.raises(StorageError) as full:
            for i in range(20_000):
                with kv.write() as txn:
                    txn.put("tasks", U64.pack(i), b"v" * 1000)
        assert full.value.kind == "map_full"
        usage = kv.usage()
        assert kv.map_size == usage.map_size == 8 * MIB  # grew by doubling before each write...
        assert usage.used > 6 * MIB and usage.high_water >= usage.used
        assert not kv.grow()  # ...up to its maximum, and no further
        with kv.read() as txn:  # what committed is there
            assert txn.get("tasks", U64.pack(0)) == b"v" * 1000
    finally:
        kv.close()


def test_a_store_larger_than_the_configured_map_opens_and_grows_again(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=1 * MIB, max_map_size=8 * MIB)
    for i in range(2000):
        with kv.write() as txn:
            txn.put("tasks", U64.pack(i), b"v" * 1000)
    high_water = kv.high_water()
    kv.close()
    again = LmdbKV(tmp_path / "db", map_size=1 * MIB, max_map_size=8 * MIB)
    try:
        assert again.map_size >= high_water > 1 * MIB  # LMDB opens it at least at its data's size
        for i in range(2000, 4000):
            with again.write() as txn:
                txn.put("tasks", U64.pack(i), b"v" * 1000)
        with again.read() as txn:
            assert txn.count("tasks") == 4000
    finally:
        again.close()


def test_a_growth_waits_for_open_reads_only_when_asked_to(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=1 * MIB, max_map_size=8 * MIB)
    holding, release = threading.Event(), threading.Event()

    def long_read() -> None:  # as a snapshot's copy holds its read transaction
        with kv.read():
            holding.set()
            release.wait(60)

    reader = threading.Thread(target=long_read)
    reader.start()
    try:
        assert holding.wait(5)
        assert not kv.grow(wait_s=0.05)  # gives up: the reader holds on
        # It gave up while the reader still held its transaction (had it waited for the reader, it would
        # have returned only after the reader's 60 s): an ordering, not a duration.
        assert reader.is_alive() and not release.is_set() and kv.map_size == 1 * MIB
        with kv.read() as txn:  # other readers were held back only that long
            assert txn.get("tasks", b"x") is None
    finally:
        release.set()
        reader.join()
    assert kv.grow() and kv.map_size == 2 * MIB
    kv.close()


def test_disk_is_reserved_past_the_store_without_changing_its_size(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=4 * MIB)
    try:
        data = tmp_path / "db" / "data.mdb"
        size = data.stat().st_size
        assert kv.reserve_disk(2 * MIB)
        assert data.stat().st_size == size
        assert data.stat().st_blocks * 512 >= 2 * MIB  # allocated past the end
    finally:
        kv.close()


# ------------------------------------------------------------------------------------- admission


def _cmd(kind: str) -> commands_pb2.Command:
    cmd = commands_pb2.Command(stamped_at_ms=1)
    getattr(cmd, kind).SetInParent()
    return cmd


class _Replicated:
    def __init__(self) -> None:
        self.stuck_at: tuple[int, str] | None = None
        self.low: str | None = None

    def stuck(self) -> tuple[int, str] | None:
        return self.stuck_at

    def journal_status(self) -> tuple[int, str | None]:
        return 1000, self.low


@pytest.mark.asyncio
async def test_the_committer_refuses_what_the_node_cannot_store(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=4 * MIB)
    rep = _Replicated()
    monitor = StorageMonitor(kv=kv, replicator=rep, data_dir=tmp_path, reserve_bytes=MIB)
    mem = MemReplicator(
        lambda index, payload: commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True)]
        ).SerializeToString()
    )
    committer = GroupCommitter(mem, admit=monitor.admit)
    mem.start()
    committer.start()
    try:
        assert (await committer.submit([_cmd("create_task")]))[0].applied
        rep.low = "disk full: the Raft journal cannot keep its reserve of 0.5 MiB"
        with pytest.raises(ResourceExhausted, match="storage exhausted: disk full: the Raft journal"):
            await committer.submit([_cmd("create_task")])
        with pytest.raises(ResourceExhausted):
            await committer.submit([_cmd("fire")])  # the leader's own duties wait too
        assert (await committer.submit([_cmd("delete_task")]))[0].applied  # deletes still go
        rep.low = None
        assert (await committer.submit([_cmd("fire")]))[0].applied  # back by itself
        status = monitor.status()
        assert status.measured and not status.exhausted and status.journal_bytes == 1000
    finally:
        await committer.close()
        mem.stop()
        kv.close()


# -------------------------------------------------------------------------- an entry that fails


class _FailingApply:
    """An apply whose store is "full" while `full` is set (raises StorageError like LMDB's)."""

    def __init__(self) -> None:
        self.full = threading.Event()
        self.applied: list[int] = []
        self.failures: list[int] = []

    def __call__(self, index: int, payload: bytes) -> bytes | None:
        if self.full.is_set():
            raise StorageError("store failure: DiskError: No space left on device", kind="disk_full")
        self.applied.append(index)
        n = len(commands_pb2.CommandBatch.FromString(payload).commands)
        return commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True) for _ in range(n)]
        ).SerializeToString()


def _payload() -> bytes:
    cmd = commands_pb2.Command(stamped_at_ms=1)
    return commands_pb2.CommandBatch(version=1, commands=[cmd]).SerializeToString()


@pytest.fixture
def single(tmp_path: Path) -> Iterator[tuple[SyncObjReplicator, _FailingApply]]:
    apply = _FailingApply()
    kv = LmdbKV(tmp_path / "state", map_size=4 * MIB)
    failures: list[int] = []

    def on_failure(index: int, exc: BaseException) -> bool:
        failures.append(index)
        return False

    apply.failures = failures
    rep = SyncObjReplicator(
        ReplicatorConfig(
            self_member=RaftMember("n1", f"127.0.0.1:{free_port()}"),
            peers=(),
            data_dir=tmp_path / "raft",
            secret=None,
            election_timeout_ms=300,
            heartbeat_ms=50,
        ),
        apply,
        kv,
        on_apply_failure=on_failure,
    )
    rep.start()
    yield rep, apply
    apply.full.clear()
    rep.stop()
    kv.close()


@pytest.mark.asyncio
async def test_an_entry_that_cannot_apply_is_answered_at_once_and_applies_once_space_returns(
    single: tuple[SyncObjReplicator, _FailingApply],
) -> None:
    rep, apply = single
    await wait_until_async(lambda: rep.status().is_leader and rep.status().ready, 15.0, "leadership")
    await rep.propose(_payload(), timeout_s=5)
    apply.full.set()
    with pytest.raises(ResourceExhausted) as refused:
        await rep.propose(_payload(), timeout_s=30)
    # Answered by the failed apply, not by the 30 s timeout (which would raise OutcomeUnknown instead).
    assert "No space left on device" in str(refused.value) and "committed" in str(refused.value)
    stuck = rep.stuck()
    assert stuck is not None and stuck[1] == "store failure: DiskError: No space left on device"
    with pytest.raises(ResourceExhausted, match="nothing is proposed until it applies"):
        await rep.propose(_payload(), timeout_s=5)  # refused before it is appended
    assert apply.failures and all(i == stuck[0] for i in apply.failures)
    # A snapshot asked for meanwhile is not taken (the store is behind) and does not hold the Raft
    # thread waiting for the apply thread: it keeps ticking.
    ticks: list[float] = []
    assert rep._node is not None
    rep._node.addOnTickCallback(lambda: ticks.append(time.monotonic()))
    rep.force_snapshot()
    await asyncio.sleep(1.0)
    seen = len(ticks)
    await asyncio.sleep(0.5)
    assert len(ticks) > seen
    apply.full.clear()  # space returns
    await wait_until_async(lambda: rep.stuck() is None, 15.0, "the entry to apply")
    assert stuck[0] in apply.applied
    result = await rep.propose(_payload(), timeout_s=5)  # writes go on, without a restart
    assert commands_pb2.BatchResult.FromString(result).results[0].applied


# ------------------------------------------------------------------------------ journal by bytes


@pytest.mark.asyncio
async def test_the_journal_is_compacted_once_its_entries_pass_a_size(tmp_path: Path) -> None:
    """Few entries of many bytes (a bulk import): the entry count (100,000) is far, the byte limit is
    not. The journal's entries go into a snapshot and the journal starts again."""
    kv = LmdbKV(tmp_path / "state", map_size=64 * MIB)
    applied: list[int] = []

    def apply(index: int, payload: bytes) -> bytes:
        with kv.write() as txn:
            txn.put("meta", b"last_applied", U64.pack(index))
        applied.append(index)
        return commands_pb2.BatchResult(
            results=[commands_pb2.CommandResult(applied=True)]
        ).SerializeToString()

    def last_applied() -> int:
        with kv.read() as txn:
            raw = txn.get("meta", b"last_applied")
        return 0 if raw is None else int(U64.unpack(raw)[0])

    rep = SyncObjReplicator(
        ReplicatorConfig(
            self_member=RaftMember("n1", f"127.0.0.1:{free_port()}"),
            peers=(),
            data_dir=tmp_path / "raft",
            secret=None,
            election_timeout_ms=300,
            heartbeat_ms=50,
            snapshot_max_bytes=1 * MIB,
            journal_reserve_bytes=1 * MIB,
        ),
        apply,
        kv,
        applied_index=last_applied,
    )
    rep.start()
    try:
        await wait_until_async(lambda: rep.status().is_leader and rep.status().ready, 15.0, "leadership")
        big = commands_pb2.CommandBatch(
            version=1, commands=[commands_pb2.Command(request_id="x" * 100_000, stamped_at_ms=1)]
        ).SerializeToString()
        peak = 0
        for _ in range(30):  # 3 MB of entries
            await rep.propose(big, timeout_s=5)
            peak = max(peak, rep.journal_status()[0])
        await wait_until_async(lambda: rep.journal_status()[0] < 1 * MIB, 15.0, "a compaction")
        assert peak > 1 * MIB  # it did pass the limit before the snapshot
        assert (tmp_path / "raft" / "raft.snapshot").is_file()
        assert rep.journal_status()[1] is None  # its reserve is kept
    finally:
        rep.stop()
        kv.close()
