"""What the apply path reads per execution: each store call it saves is one GIL hand-off less on a busy node
(bench/replay_apply.py --contend). What is stored is the same as before; these tests keep the calls saved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import quota
from cronraft.raft.codec import id_bytes
from cronraft.raft.kv import MemKV, Savepoint, Txn
from cronraft.raft.records import fire_key
from tests.unit.test_retention import (
    T0,
    Command,
    Log,
    create,
    eid,
    epoch,
    executions_of,
    run,
    spec,
    task_of,
    tid,
    trigger,
)


class _Counted:
    """A transaction that counts its gets and scans by database."""

    def __init__(self, txn: Txn, calls: Counter[tuple[str, str]]) -> None:
        self._txn = txn
        self._calls = calls

    def get(self, db: str, key: bytes) -> bytes | None:
        self._calls["get", db] += 1
        if db == "meta" and key.startswith(quota.ACTIVE_PREFIX):
            self._calls["get", "active count"] += 1
        return self._txn.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._txn.put(db, key, value)

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        return self._txn.insert(db, key, value)

    def delete(self, db: str, key: bytes) -> bool:
        return self._txn.delete(db, key)

    def count(self, db: str) -> int:
        return self._txn.count(db)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._calls["scan", db] += 1
        return self._txn.scan(db, start, end, reverse=reverse)

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        self._calls["first", db] += 1
        return self._txn.first(db, start, end, reverse=reverse)

    def savepoint(self) -> Savepoint:
        return self._txn.savepoint()


class CountedKV(MemKV):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        with super().write() as txn:
            yield _Counted(txn, self.calls)


def test_a_trim_at_a_fire_reads_only_the_execution_it_deletes() -> None:
    """keep_executions 3 and a fourth execution: the oldest ended one goes; the next ones are not read
    (up to retention.TRIM_SCAN were), the one deleted is not read again, nor is the ledger's count after
    the deletion moved it."""
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec(retention=common_pb2.Retention(keep_executions=3))))
    for n in range(3):
        run(log, tid(1), eid(n), T0 + 1000 * (n + 1))
    kv.calls.clear()
    assert log.one(trigger(tid(1), eid(3), T0 + 4000)).applied
    assert executions_of(log, tid(1)) == [eid(1), eid(2), eid(3)]
    assert kv.calls["get", "execs"] == 1  # the oldest one, to see it ended
    assert kv.calls["get", "fires"] == 1  # the trigger's own check; the deleted one's entry is not read
    # The deleted one's ledger record goes, and the new one comes: the count is read once for both.
    assert kv.calls["get", "ledger_count"] == 1
    with log.sm.kv.read() as txn:
        assert txn.get("ledger_count", id_bytes(tid(1))) == (3).to_bytes(8, "big")
        assert txn.count("ledger") == 3


def test_a_fires_entry_naming_no_execution_is_dropped_as_the_trim_passes_it() -> None:
    log = Log()
    log.one(epoch())
    log.one(create(tid(1), spec(retention=common_pb2.Retention(keep_executions=2))))
    for n in range(2):
        run(log, tid(1), eid(n), T0 + 1000 * (n + 1))
    task16 = id_bytes(tid(1))
    with log.sm.kv.write() as txn:  # eid(0)'s record gone, its `fires` entry left
        assert txn.delete("execs", id_bytes(eid(0)))
        dangling = fire_key(task16, T0 + 1000)
        assert txn.get("fires", dangling) == id_bytes(eid(0))
    assert log.one(trigger(tid(1), eid(2), T0 + 3000)).applied
    with log.sm.kv.read() as txn:
        assert txn.get("fires", dangling) is None
    assert executions_of(log, tid(1)) == [eid(2)]  # past the dangling entry, eid(1) went too


def test_a_fire_reads_its_tasks_count_of_executions_not_yet_ended_once() -> None:
    kv = CountedKV()
    log = Log(kv)
    every_minute = spec()
    every_minute.schedule.cron.expression = "* * * * *"
    log.one(create(tid(1), every_minute))
    limits = commands_pb2.Limits(max_pending_per_task=5)
    for n in range(3):
        task = task_of(log, tid(1))
        assert task is not None
        kv.calls.clear()
        fire = commands_pb2.Fire(task_id=tid(1), nominal_time_ms=task.next_fire_ms, execution_id=eid(n))
        res = log.one(Command(stamped_at_ms=task.next_fire_ms, limits=limits, fire=fire))
        assert res.HasField("execution"), res.error
        assert kv.calls["get", "active count"] == 1  # for the quota, and for the count's move
        with kv.read() as txn:
            assert quota.active_count(txn, tid(1)) == n + 1
