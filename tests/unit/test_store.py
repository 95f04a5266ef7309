"""The `KV` contract, run against both twins: `MemKV` (in memory) and `LmdbKV` (LMDB)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.errors import Unavailable
from cronraft.raft.kv import DATABASES, KV, MemKV
from cronraft.raft.store import LmdbKV


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


def _fill(kv: KV, db: str, keys: list[bytes]) -> None:
    with kv.write() as txn:
        for k in keys:
            txn.put(db, k, b"v" + k)


def test_put_get_delete(kv: KV) -> None:
    with kv.write() as txn:
        txn.put("tasks", b"a", b"1")
        txn.put("tasks", b"b", b"2")
        assert txn.get("tasks", b"a") == b"1"  # a transaction reads its own writes
        txn.put("tasks", b"a", b"3")
    with kv.read() as txn:
        assert txn.get("tasks", b"a") == b"3"
        assert txn.get("tasks", b"zz") is None
        assert txn.get("execs", b"a") is None  # databases are separate
    with kv.write() as txn:
        assert txn.delete("tasks", b"a") is True
        assert txn.delete("tasks", b"a") is False
    with kv.read() as txn:
        assert txn.get("tasks", b"a") is None
        assert txn.get("tasks", b"b") == b"2"


def test_every_database_exists_and_unknown_one_raises(kv: KV) -> None:
    with kv.write() as txn:
        for name in DATABASES:
            txn.put(name, b"k", name.encode())
    with kv.read() as txn:
        assert [txn.get(name, b"k") for name in DATABASES] == [n.encode() for n in DATABASES]
        with pytest.raises(KeyError):
            txn.get("nope", b"k")


def test_read_txn_refuses_writes(kv: KV) -> None:
    with kv.read() as txn:
        with pytest.raises(PermissionError):
            txn.put("tasks", b"a", b"1")
        with pytest.raises(PermissionError):
            txn.delete("tasks", b"a")


def test_scan_ranges(kv: KV) -> None:
    keys = [bytes([i]) + b"x" for i in range(1, 200)]
    _fill(kv, "due", keys)
    _fill(kv, "tasks", [b"\x05only"])
    with kv.read() as txn:
        assert [k for k, _ in txn.scan("due")] == keys
        assert [k for k, _ in txn.scan("due", reverse=True)] == keys[::-1]
        lo, hi = bytes([10]), bytes([150])
        expected = [k for k in keys if lo <= k < hi]
        assert [k for k, _ in txn.scan("due", lo, hi)] == expected
        assert [k for k, _ in txn.scan("due", lo, hi, reverse=True)] == expected[::-1]
        # bounds falling on existing keys: start included, end excluded
        assert [k for k, _ in txn.scan("due", keys[3], keys[6])] == keys[3:6]
        assert [k for k, _ in txn.scan("due", keys[3], keys[6], reverse=True)] == keys[5:2:-1]
        assert [v for _, v in txn.scan("due", keys[0], keys[2])] == [b"v" + keys[0], b"v" + keys[1]]
        assert list(txn.scan("due", b"\xff")) == []
        assert list(txn.scan("due", b"\x20", b"\x10")) == []
        assert list(txn.scan("execs")) == []
        assert list(txn.scan("execs", reverse=True)) == []
        assert [k for k, _ in txn.scan("due", b"", bytes([3]), reverse=True)] == keys[1::-1]
        assert [k for k, _ in txn.scan("due", bytes([198]), None, reverse=True)] == keys[:196:-1]


def test_scan_is_lazy_and_tolerates_writes_in_the_same_txn(kv: KV) -> None:
    keys = [i.to_bytes(4, "big") for i in range(3000)]
    _fill(kv, "due", keys)
    with kv.write() as txn:
        seen = []
        for k, _ in txn.scan("due"):
            seen.append(k)
            txn.put("tasks", k, b"moved")  # another database
            txn.delete("due", k)  # the scanned database, at the cursor
        assert seen == keys
        assert list(txn.scan("due")) == []
        assert sum(1 for _ in txn.scan("tasks")) == len(keys)
    with kv.write() as txn:
        first = next(iter(txn.scan("tasks", reverse=True)))
        assert first == (keys[-1], b"moved")


def test_abort_on_exception(kv: KV) -> None:
    _fill(kv, "tasks", [b"keep"])
    with pytest.raises(RuntimeError), kv.write() as txn:
        txn.put("tasks", b"lost", b"1")
        txn.delete("tasks", b"keep")
        raise RuntimeError("boom")
    with kv.read() as txn:
        assert txn.get("tasks", b"lost") is None
        assert txn.get("tasks", b"keep") == b"vkeep"


def test_an_exception_kept_alive_does_not_hold_a_reader_slot(tmp_path: Path) -> None:
    """Errors raised in read blocks and kept (as a traceback in a reference cycle is, until the cyclic
    collector runs) must not keep LMDB reader slots: the table has 126, and filling it stops every read."""
    kv = LmdbKV(tmp_path / "db", map_size=64 << 20)
    kept: list[BaseException] = []

    def refuse() -> None:  # its frame, holding `txn`, stays in the kept exception's traceback
        with kv.read() as txn:
            txn.get("meta", b"k")
            raise LookupError("refused")

    try:
        for _ in range(300):
            try:
                refuse()
            except LookupError as e:
                kept.append(e)
        with kv.read() as txn:
            assert txn.get("meta", b"k") is None
    finally:
        kv.close()


def test_read_isolation(kv: KV) -> None:
    _fill(kv, "tasks", [b"a"])
    with kv.read() as snap:
        with kv.write() as txn:
            txn.put("tasks", b"a", b"new")
            txn.put("tasks", b"b", b"new")
        assert snap.get("tasks", b"a") == b"va"
        assert snap.get("tasks", b"b") is None
        assert [k for k, _ in snap.scan("tasks")] == [b"a"]
    with kv.read() as txn:
        assert txn.get("tasks", b"a") == b"new"


def test_lmdb_copy_and_replace_from(tmp_path: Path) -> None:
    src = LmdbKV(tmp_path / "src", map_size=64 << 20)
    dst = LmdbKV(tmp_path / "dst", map_size=64 << 20)
    _fill(src, "tasks", [b"a", b"b"])
    _fill(dst, "tasks", [b"old"])
    snapshot = tmp_path / "snap.mdb"
    src.copy_to(snapshot)
    _fill(src, "tasks", [b"after"])  # not in the copy
    dst.replace_from(snapshot)
    with dst.read() as txn:
        assert [k for k, _ in txn.scan("tasks")] == [b"a", b"b"]
    _fill(dst, "execs", [b"x"])  # writable after the swap
    # an image embedded after a header (as the replicator's snapshot file does)
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        f.write(b"HEADER")
        f.flush()
        src.copy_to_fd(f.fileno())
    dst.replace_from(blob, offset=6)
    with dst.read() as txn:
        assert [k for k, _ in txn.scan("tasks")] == [b"a", b"after", b"b"]
        assert txn.get("execs", b"x") is None
    bad = tmp_path / "bad"
    bad.write_bytes(b"not lmdb" * 1000)
    with pytest.raises(ValueError):
        dst.replace_from(bad)
    with dst.read() as txn:  # a bad image changes nothing
        assert txn.get("tasks", b"after") == b"vafter"
    src.close()
    dst.close()


def test_lmdb_replace_waits_for_open_readers(tmp_path: Path) -> None:
    src = LmdbKV(tmp_path / "src", map_size=64 << 20)
    dst = LmdbKV(tmp_path / "dst", map_size=64 << 20)
    _fill(src, "tasks", [b"new"])
    _fill(dst, "tasks", [b"old"])
    snapshot = tmp_path / "snap.mdb"
    src.copy_to(snapshot)
    swapped = threading.Event()

    def swap() -> None:
        dst.replace_from(snapshot)
        swapped.set()

    with dst.read() as txn:
        worker = threading.Thread(target=swap)
        worker.start()
        assert not swapped.wait(0.2)  # the swap waits for this reader
        assert [k for k, _ in txn.scan("tasks")] == [b"old"]
    worker.join(5)
    assert swapped.is_set()
    with dst.read() as txn:
        assert [k for k, _ in txn.scan("tasks")] == [b"new"]
    src.close()
    dst.close()


def test_lmdb_reopen_keeps_data_and_close_is_final(tmp_path: Path) -> None:
    store = LmdbKV(tmp_path / "db", map_size=64 << 20, sync=True)
    _fill(store, "tasks", [b"a"])
    store.close()
    store.close()
    with pytest.raises(Unavailable), store.read():
        pass
    again = LmdbKV(tmp_path / "db", map_size=64 << 20)
    with again.read() as txn:
        assert txn.get("tasks", b"a") == b"va"
    again.close()


def test_memkv_dump_load_round_trip() -> None:
    a = MemKV()
    _fill(a, "tasks", [b"a", b"b"])
    b = MemKV()
    b.load(a.dump())
    with b.read() as txn:
        assert [k for k, _ in txn.scan("tasks")] == [b"a", b"b"]
