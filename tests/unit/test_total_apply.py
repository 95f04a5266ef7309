"""A total apply (issue 11): savepoints in both stores, the classification of handler failures, and a
command that fails inside its handler being recorded as "internal" with no effect, the same everywhere.

A handler that writes and then raises is made by wrapping a real one (monkeypatch.setitem on HANDLERS):
the wrapper runs the real handler, so the command has written all it would, then raises.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import pytest

from cronraft import failpoint
from cronraft.errors import StorageError
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import encode_batch, id_bytes, make_id
from cronraft.raft.commands import HANDLERS, Ctx
from cronraft.raft.kv import DATABASES, KV, MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Command = commands_pb2.Command


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


def dump(kv: KV) -> dict[str, dict[bytes, bytes]]:
    with kv.read() as txn:
        return {db: dict(txn.scan(db)) for db in DATABASES}


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def create(n: int, rid: str = "") -> Command:
    spec = common_pb2.TaskSpec(
        name=f"t{n}",
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="* * * * *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    spec.tags["n"] = str(n)
    return Command(
        request_id=rid, stamped_at_ms=T0 + 1, create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec)
    )


def apply(machine: StateMachine, index: int, *cmds: Command) -> list[commands_pb2.CommandResult]:
    raw = machine.apply_entry(index, encode_batch(cmds))
    assert raw is not None
    return list(commands_pb2.BatchResult.FromString(raw).results)


def fail_after_writing(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException) -> None:
    """The create_task handler writes the task named `name` in full (and its audit event), then raises."""
    real = HANDLERS["create_task"]

    def handler(ctx: Ctx, cmd: Command) -> None:
        real(ctx, cmd)
        if cmd.create_task.spec.name == name:
            ctx.audit("poisoned", task_id=cmd.create_task.task_id)
            raise exc

    monkeypatch.setitem(HANDLERS, "create_task", handler)


# ------------------------------------------------------------------------------------------ savepoints


def test_a_released_savepoint_keeps_its_writes_and_a_rolled_back_one_discards_them(kv: KV) -> None:
    with kv.write() as txn:
        txn.put("meta", b"kept", b"0")
        txn.put("meta", b"overwritten", b"old")
        txn.put("meta", b"deleted", b"old")
    with kv.write() as txn:
        sp = txn.savepoint()
        sp.put("meta", b"released", b"1")
        sp.release()
        sp = txn.savepoint()
        sp.put("meta", b"new", b"2")
        sp.put("meta", b"overwritten", b"new")
        assert sp.delete("meta", b"deleted")
        assert not sp.delete("meta", b"never")
        assert sp.get("meta", b"overwritten") == b"new"
        assert [k for k, _ in sp.scan("meta")] == [b"kept", b"new", b"overwritten", b"released"]
        sp.rollback()
        assert txn.get("meta", b"overwritten") == b"old"
        txn.put("meta", b"after", b"3")
    assert dump(kv)["meta"] == {
        b"after": b"3",
        b"deleted": b"old",
        b"kept": b"0",
        b"overwritten": b"old",
        b"released": b"1",
    }


def test_nested_savepoints_and_a_failed_entry_discards_released_ones(kv: KV) -> None:
    with kv.write() as txn:
        outer = txn.savepoint()
        outer.put("meta", b"outer", b"1")
        inner = outer.savepoint()
        inner.put("meta", b"inner", b"1")
        inner.release()
        outer.rollback()  # takes the released inner writes with it
        assert txn.get("meta", b"inner") is None
        sp = txn.savepoint()
        sp.put("meta", b"kept", b"1")
        sp.release()
    assert dump(kv)["meta"] == {b"kept": b"1"}
    with pytest.raises(RuntimeError), kv.write() as txn:
        sp = txn.savepoint()
        sp.put("meta", b"lost", b"1")
        sp.release()
        raise RuntimeError("the entry's transaction aborts")
    assert dump(kv)["meta"] == {b"kept": b"1"}


def test_the_transaction_is_not_usable_while_its_savepoint_is_open(kv: KV) -> None:
    with kv.write() as txn:
        sp = txn.savepoint()
        with pytest.raises((RuntimeError, StorageError)):
            txn.put("meta", b"k", b"v")
        sp.rollback()
        txn.put("meta", b"k", b"v")
    with kv.read() as txn, pytest.raises(PermissionError):
        txn.savepoint()


# ------------------------------------------------------------------------------------- classification


def test_lmdb_errors_become_storage_errors_except_those_the_data_causes(tmp_path: Path) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=1 << 20)
    try:
        with pytest.raises(lmdb.BadValsizeError), kv.write() as txn:
            txn.put("meta", b"k" * 600, b"v")  # a key longer than LMDB's 511 bytes: the same everywhere
        with pytest.raises(StorageError, match="MapFullError"), kv.write() as txn:
            for i in range(10_000):
                txn.put("logs", i.to_bytes(4, "big"), b"x" * 1000)
    finally:
        kv.close()


def _year_out_of_range() -> None:
    datetime.fromtimestamp(1e18, UTC)  # OSError(EOVERFLOW) on Linux: a function of the argument


@pytest.mark.parametrize(
    ("exc", "environmental"),
    [
        (StorageError("store failure: MapFullError"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EIO, "Input/output error"), True),
        (MemoryError(), True),
        (OSError(errno.EOVERFLOW, "Value too large for defined data type"), False),
        (RecursionError("maximum recursion depth exceeded"), False),
        (RuntimeError("a bug"), False),
        (ValueError("bad data"), False),
        (KeyError("missing"), False),
    ],
)
def test_what_is_environmental(exc: BaseException, environmental: bool) -> None:
    assert sm.is_environmental(exc) is environmental


def test_an_out_of_range_timestamp_is_not_environmental() -> None:
    with pytest.raises(OSError) as raised:
        _year_out_of_range()
    assert not sm.is_environmental(raised.value)


# ----------------------------------------------------------------------------------- the state machine


def test_a_failing_command_is_recorded_and_leaves_nothing_while_its_neighbours_apply(
    kv: KV, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_after_writing(monkeypatch, "t2", RuntimeError("boom"))
    machine = StateMachine(kv)
    machine.collect_events = True
    res = apply(machine, 1, create(1), create(2, rid="r2"), create(3))
    assert [r.applied for r in res] == [True, False, True]
    assert (res[1].error_code, res[1].error) == ("internal", "RuntimeError: boom")
    assert machine.last_applied() == 1
    # Nothing of task 2 is left in any database but the dedup table, which remembers the outcome.
    task2 = id_bytes(tid(2))
    leftovers = {db for db, rows in dump(kv).items() for k, v in rows.items() if task2 in k or task2 in v}
    assert leftovers <= {"requests"}, leftovers
    with kv.read() as txn:
        assert sm.read_task(txn, tid(2)) is None
        assert sm.read_task(txn, tid(1)) is not None and sm.read_task(txn, tid(3)) is not None
    # Its audit events are gone with it, replaced by one that tells of the failure.
    events = machine.take_events()
    assert all(e["kind"] != "poisoned" for e in events)
    assert [e for e in events if e["kind"] == "internal"] == [
        {
            "ev": "apply",
            "kind": "internal",
            "index": 1,
            "command": "create_task",
            "error": "RuntimeError: boom",
        }
    ]
    assert machine.internal_errors == 1
    # A retry of the same request is answered from the dedup table, without running the handler.
    monkeypatch.setitem(HANDLERS, "create_task", lambda ctx, cmd: pytest.fail("handler ran again"))
    (again,) = apply(machine, 2, create(2, rid="r2"))
    assert (again.applied, again.error_code) == (False, "internal")


def test_both_stores_end_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas, one over LMDB and one over the in-memory twin, apply the same entries."""
    fail_after_writing(monkeypatch, "t2", RuntimeError("boom"))
    mem, disk = MemKV(), LmdbKV(tmp_path / "db", map_size=64 << 20)
    try:
        outcomes = []
        for store in (mem, disk):
            machine = StateMachine(store)
            outcomes.append(
                [apply(machine, 1, create(1), create(2), create(3)), apply(machine, 2, create(4), create(2))]
            )
        assert outcomes[0] == outcomes[1]
        assert dump(mem) == dump(disk)
    finally:
        disk.close()


def test_the_error_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_after_writing(monkeypatch, "t1", ValueError("x" * 5000))
    (res,) = apply(StateMachine(MemKV()), 1, create(1))
    assert res.error_code == "internal"
    assert len(res.error) == sm.MAX_INTERNAL_ERROR
    assert res.error.startswith("ValueError: xxx") and res.error.endswith("...")


def test_a_recursion_error_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def deep(n: int) -> int:
        return deep(n + 1) + 1

    def handler(ctx: Ctx, cmd: Command) -> None:
        deep(0)

    monkeypatch.setitem(HANDLERS, "create_task", handler)
    (res,) = apply(StateMachine(MemKV()), 1, create(1))
    assert res.error_code == "internal" and res.error.startswith("RecursionError: ")


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.ENOSPC, "No space left on device"), MemoryError(), StorageError("store failure")],
    ids=["ENOSPC", "MemoryError", "StorageError"],
)
def test_an_environmental_failure_propagates_and_applies_nothing(
    kv: KV, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    machine = StateMachine(kv)
    apply(machine, 1, create(1))
    before = dump(kv)
    fail_after_writing(monkeypatch, "t3", exc)
    payload = encode_batch([create(2), create(3)])
    with pytest.raises(type(exc)):
        machine.apply_entry(2, payload)
    assert machine.last_applied() == 1
    assert dump(kv) == before
    # The environment recovers: the replicator's retry of the same entry applies it.
    monkeypatch.undo()
    assert machine.apply_entry(2, payload) is not None
    with kv.read() as txn:
        assert sm.read_task(txn, tid(3)) is not None


def test_refusals_are_answered_with_their_code() -> None:
    machine = StateMachine(MemKV())
    apply(machine, 1, create(1))
    (dup,) = apply(machine, 2, create(1))
    assert (dup.applied, dup.error_code) == (False, "already_exists")
    (unknown,) = apply(machine, 3, Command(stamped_at_ms=T0))
    assert (unknown.applied, unknown.error_code) == (False, "unknown_command")


def test_the_fault_hook_counts_as_the_handler(kv: KV, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `raft.apply` failpoint: `raise:KIND:TEXT` fails the commands of that kind containing TEXT."""
    monkeypatch.setitem(failpoint._ACTIONS, "raft.apply", "raise:create_task:poison")
    check = failpoint.raiser("raft.apply")
    assert check is not None

    def fault(cmd: Command) -> None:
        check(cmd.WhichOneof("body") or "", cmd.SerializeToString())

    machine = StateMachine(kv, fault=fault)
    poisoned = create(2)
    poisoned.create_task.spec.name = "poison-2"
    res = apply(machine, 1, create(1), poisoned, create(3))
    assert [r.error_code for r in res] == ["", "internal", ""]
    assert res[1].error == "RuntimeError: failpoint raft.apply: injected failure for create_task"
    monkeypatch.setitem(failpoint._ACTIONS, "raft.apply", "crash")
    assert failpoint.raiser("raft.apply") is None


def test_a_failing_command_costs_one_more_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries without a failure run without savepoints; one with a failure runs twice, the second time
    with a savepoint per command."""
    opened: list[int] = []
    store = MemKV()
    real_write = store.write

    def counting_write() -> Any:
        opened.append(1)
        return real_write()

    monkeypatch.setattr(store, "write", counting_write)
    machine = StateMachine(store)
    apply(machine, 1, create(1), create(2))
    assert len(opened) == 1
    fail_after_writing(monkeypatch, "t4", RuntimeError("boom"))
    apply(machine, 2, create(3), create(4), create(5))
    assert len(opened) == 3
