"""`Txn.first` (the item a scan would yield first, in one seek), on both twins, in write and read
transactions and savepoints, and on the leader's write-dropping transaction (raft.fireplan.Discard): it
is always what `next(scan(...), None)` gives."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.raft.fireplan import Discard
from cronraft.raft.kv import KV, MemKV, Txn
from cronraft.raft.store import LmdbKV

KEYS = [b"a", b"ab", b"abc", b"b", b"b\x00", b"b\xff", b"c"]


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


def _fill(kv: KV, keys: list[bytes] = KEYS) -> None:
    with kv.write() as txn:
        for k in keys:
            txn.put("ledger", k, b"v" + k)


def _scanned(txn: Txn, start: bytes, end: bytes | None, reverse: bool) -> tuple[bytes, bytes] | None:
    return next(iter(txn.scan("ledger", start, end, reverse=reverse)), None)


def test_an_empty_database_has_no_first_either_way(kv: KV) -> None:
    _fill(kv, [])
    with kv.read() as txn:
        for reverse in (False, True):
            assert txn.first("ledger", reverse=reverse) is None
            assert txn.first("ledger", b"a", b"z", reverse=reverse) is None
    _fill(kv, [b"x"])
    with kv.read() as txn:  # another database holding keys does not matter
        assert txn.first("tasks") is None
        assert txn.first("tasks", reverse=True) is None


def test_forward_the_start_is_included_and_the_end_excluded(kv: KV) -> None:
    _fill(kv)
    with kv.read() as txn:
        assert txn.first("ledger") == (b"a", b"va")
        assert txn.first("ledger", b"ab") == (b"ab", b"vab")  # key == start
        assert txn.first("ledger", b"aa") == (b"ab", b"vab")  # the next key up
        assert txn.first("ledger", b"b", b"b\x00") == (b"b", b"vb")
        assert txn.first("ledger", b"b\x01", b"b\xff") is None  # end == the next key: excluded
        assert txn.first("ledger", b"abc", b"abc") is None  # an empty range
        assert txn.first("ledger", b"b", b"a") is None  # start past end
        assert txn.first("ledger", b"c") == (b"c", b"vc")  # the last key
        assert txn.first("ledger", b"c\x00") is None  # past every key
        assert txn.first("ledger", b"c\x00", None) is None


def test_reverse_gives_the_last_key_below_the_end(kv: KV) -> None:
    _fill(kv)
    with kv.read() as txn:
        assert txn.first("ledger", reverse=True) == (b"c", b"vc")
        assert txn.first("ledger", b"", b"c", reverse=True) == (b"b\xff", b"vb\xff")  # key == end: excluded
        assert txn.first("ledger", b"", b"bb", reverse=True) == (b"b\x00", b"vb\x00")  # end between keys
        assert txn.first("ledger", b"b", b"b\x00", reverse=True) == (b"b", b"vb")  # key == start: included
        assert txn.first("ledger", b"b\x01", b"b\xff", reverse=True) is None  # nothing in the range
        assert txn.first("ledger", b"", b"a", reverse=True) is None  # every key at or above the end
        assert txn.first("ledger", b"c\x00", reverse=True) is None  # every key below the start
        assert txn.first("ledger", b"", b"zz", reverse=True) == (b"c", b"vc")  # every key below the end
        assert txn.first("ledger", b"b", b"a", reverse=True) is None  # start past end


def test_first_is_what_a_scan_yields_first_for_any_range(kv: KV) -> None:
    rnd = random.Random(16)
    alphabet = [b"", b"\x00", b"a", b"b", b"\xff"]

    def key() -> bytes:
        return b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(4)))

    _fill(kv, sorted({key() for _ in range(40)} - {b""}))
    with kv.read() as txn:
        for _ in range(600):
            start, end = key(), rnd.choice([None, key()])
            for reverse in (False, True):
                assert txn.first("ledger", start, end, reverse=reverse) == _scanned(txn, start, end, reverse)


def test_a_write_transaction_sees_its_own_writes(kv: KV) -> None:
    _fill(kv)
    with kv.write() as txn:
        assert txn.delete("ledger", b"a")
        assert txn.first("ledger") == (b"ab", b"vab")
        txn.put("ledger", b"0", b"new")
        assert txn.first("ledger", b"", b"a") == (b"0", b"new")
        txn.put("ledger", b"d", b"last")
        assert txn.first("ledger", reverse=True) == (b"d", b"last")
        txn.put("ledger", b"ab", b"changed")  # the value as written
        assert txn.first("ledger", b"aa") == (b"ab", b"changed")
    with kv.read() as txn:
        assert txn.first("ledger") == (b"0", b"new")


def test_a_savepoint_sees_what_it_wrote_and_a_rollback_takes_it_back(kv: KV) -> None:
    _fill(kv)
    with kv.write() as txn:
        sp = txn.savepoint()
        assert sp.delete("ledger", b"a")
        sp.put("ledger", b"c\x00", b"x")
        assert sp.first("ledger") == (b"ab", b"vab")
        assert sp.first("ledger", reverse=True) == (b"c\x00", b"x")
        sp.rollback()
        assert txn.first("ledger") == (b"a", b"va")
        assert txn.first("ledger", reverse=True) == (b"c", b"vc")
        sp = txn.savepoint()
        sp.put("ledger", b"0", b"kept")
        sp.release()
        assert txn.first("ledger") == (b"0", b"kept")
    with kv.read() as txn:
        assert txn.first("ledger") == (b"0", b"kept")


def test_an_unknown_database_is_named(kv: KV) -> None:
    with kv.read() as txn, pytest.raises(KeyError, match="nope"):
        txn.first("nope")


def test_the_parent_of_an_open_savepoint_refuses_first() -> None:
    kv = MemKV()
    with kv.write() as txn:
        sp = txn.savepoint()
        with pytest.raises(RuntimeError):
            txn.first("ledger")
        sp.release()
        with pytest.raises(RuntimeError):
            sp.first("ledger")  # ended
        assert txn.first("ledger") is None


def test_discard_reads_through_to_its_transaction(kv: KV) -> None:
    _fill(kv)
    with kv.write() as txn:
        d = Discard(txn)
        d.put("ledger", b"0", b"dropped")
        assert d.first("ledger") == (b"a", b"va")
        assert d.first("ledger", b"b", b"c", reverse=True) == (b"b\xff", b"vb\xff")
