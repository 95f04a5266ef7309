"""`Txn.insert` (a put where the key is absent), on both twins, in transactions and savepoints, and on the
leader's write-dropping transaction (raft.fireplan.Discard)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.raft.fireplan import Discard
from cronraft.raft.kv import KV, MemKV
from cronraft.raft.store import LmdbKV


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


def _contents(kv: KV, db: str) -> list[tuple[bytes, bytes]]:
    with kv.read() as txn:
        return list(txn.scan(db))


def test_insert_writes_only_an_absent_key(kv: KV) -> None:
    with kv.write() as txn:
        txn.put("ledger", b"b", b"old")
        assert txn.insert("ledger", b"a", b"1") is True
        assert txn.insert("ledger", b"a", b"2") is False  # there: nothing written
        assert txn.insert("ledger", b"b", b"new") is False
        assert txn.get("ledger", b"a") == b"1"
        assert txn.get("ledger", b"b") == b"old"
        assert txn.count("ledger") == 2
    assert _contents(kv, "ledger") == [(b"a", b"1"), (b"b", b"old")]
    with kv.write() as txn:
        assert txn.delete("ledger", b"a") is True
        assert txn.insert("ledger", b"a", b"3") is True  # absent again
    assert _contents(kv, "ledger") == [(b"a", b"3"), (b"b", b"old")]


def test_insert_in_a_read_transaction_is_refused(kv: KV) -> None:
    with kv.read() as txn, pytest.raises(PermissionError):
        txn.insert("ledger", b"a", b"1")
    with kv.read() as txn, pytest.raises(KeyError):
        txn.get("nope", b"a")


def test_insert_in_a_savepoint_rolls_back_and_releases(kv: KV) -> None:
    with kv.write() as txn:
        txn.put("ledger", b"kept", b"v")
        sp = txn.savepoint()
        assert sp.insert("ledger", b"new", b"n") is True
        assert sp.insert("ledger", b"kept", b"x") is False  # refused: rolling back must not drop `kept`
        sp.rollback()
        assert txn.get("ledger", b"new") is None
        assert txn.get("ledger", b"kept") == b"v"
        sp = txn.savepoint()
        assert sp.insert("ledger", b"new", b"n") is True
        inner = sp.savepoint()
        assert inner.insert("ledger", b"inner", b"i") is True
        assert inner.insert("ledger", b"new", b"x") is False
        inner.release()
        sp.release()
    assert _contents(kv, "ledger") == [(b"inner", b"i"), (b"kept", b"v"), (b"new", b"n")]
    with kv.write() as txn:
        sp = txn.savepoint()
        inner = sp.savepoint()
        assert inner.insert("ledger", b"gone", b"g") is True
        inner.release()
        sp.rollback()  # the released inner savepoint's insert goes with its parent
    assert _contents(kv, "ledger") == [(b"inner", b"i"), (b"kept", b"v"), (b"new", b"n")]


def test_insert_of_a_transaction_aborted_is_dropped(kv: KV) -> None:
    with pytest.raises(RuntimeError), kv.write() as txn:
        assert txn.insert("ledger", b"a", b"1") is True
        raise RuntimeError("abort")
    assert _contents(kv, "ledger") == []


def test_discard_answers_insert_as_the_store_would_and_writes_nothing() -> None:
    kv = MemKV()
    with kv.write() as txn:
        txn.put("ledger", b"there", b"v")
    with kv.write() as txn:
        dropped = Discard(txn)
        assert dropped.insert("ledger", b"there", b"x") is False
        assert dropped.insert("ledger", b"absent", b"x") is True
    assert _contents(kv, "ledger") == [(b"there", b"v")]
