"""What lets retention skip look-ups when it deletes an ended execution (raft.retention._delete): index
entries that the stored execution proves absent. If a writer ever breaks one of these rules, a skipped
entry could outlive its execution (and replicas running different releases would differ), so the rules
are checked after every entry of bench/store_dump.py's workload (every command, both replicas, an old
store too), and a trimmed execution that had everything is compared with one that never existed.

The rules (every writer of these databases keeps them):
- `active`, `pending`, `running`, `buffered` hold only executions not yet ended, each in the index of
  its state;
- `results` holds a result only for an execution whose `result_size` says so;
- `dlq` holds a letter only for an execution marked `dead_lettered`;
- `logs` holds a piece only where `logs_size` holds its stream's size.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import quota
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands import HANDLERS
from cronraft.raft.firing import active_key, buffered_key
from cronraft.raft.kv import KV, MemKV, Txn
from cronraft.raft.records import TERMINAL_STATES, pending_key
from tests.unit.test_retention import (
    T0,
    Command,
    Log,
    compared,
    complete,
    create,
    eid,
    epoch,
    executions_of,
    grant,
    output,
    spec,
    task_of,
    tid,
    trigger,
)

STORE_DUMP = Path(__file__).resolve().parents[2] / "bench" / "store_dump.py"
_INDEX_OF_STATE = {
    common_pb2.EXECUTION_PENDING: "pending",
    common_pb2.EXECUTION_RUNNING: "running",
    common_pb2.EXECUTION_BUFFERED: "buffered",
}


def broken_rules(txn: Txn) -> list[str]:
    """Every entry that breaks one of the rules in the module docstring (none: an empty list)."""
    execs = {k: common_pb2.Execution.FromString(v) for k, v in txn.scan("execs")}
    out = []

    def named(db: str, key: bytes, exec16: bytes) -> Iterator[common_pb2.Execution]:
        """The execution an entry names, to check; the entry is reported when there is none."""
        ex = execs.get(exec16)
        if ex is None:
            out.append(f"{db} {key.hex()} (no execution)")
        else:
            yield ex

    def broken(db: str, key: bytes, ex: common_pb2.Execution) -> None:
        out.append(f"{db} {key.hex()} ({common_pb2.ExecutionState.Name(ex.state)})")

    for key, _ in txn.scan("active"):
        for ex in named("active", key, key[16:32]):
            if ex.state in TERMINAL_STATES:
                broken("active", key, ex)
    for db, at in (("pending", slice(9, 25)), ("running", slice(0, 16)), ("buffered", slice(24, 40))):
        for key, _ in txn.scan(db):
            for ex in named(db, key, key[at]):
                if _INDEX_OF_STATE.get(ex.state) != db:
                    broken(db, key, ex)
    for key, value in txn.scan("results"):
        for ex in named("results", key, key):
            if not ex.result_size or ex.result_size != len(value):
                broken("results", key, ex)
    for key, _ in txn.scan("dlq"):
        for ex in named("dlq", key, key):
            if not ex.dead_lettered:
                broken("dlq", key, ex)
    sizes = {k for k, _ in txn.scan("logs_size")}
    out += [f"logs {k.hex()} (no size)" for k, _ in txn.scan("logs") if k[:21] not in sizes]
    # The other way round: an execution not yet ended is found under the keys retention computes for it.
    for exec16, ex in execs.items():
        db = _INDEX_OF_STATE.get(ex.state)
        if db is None:
            continue
        task16 = id_bytes(ex.task_id)
        own = {
            "pending": pending_key(ex, exec16),
            "running": exec16,
            "buffered": buffered_key(task16, ex.nominal_time_ms, exec16),
        }[db]
        for index, key in ((db, own), ("active", active_key(task16, exec16))):
            if txn.get(index, key) is None:
                out.append(f"{index} lacks {key.hex()} ({common_pb2.ExecutionState.Name(ex.state)})")
    return out


@pytest.fixture
def store_dump() -> Iterator[ModuleType]:
    """bench/store_dump.py loaded afresh: it wraps some handlers of HANDLERS when loaded (its failing
    commands), which are put back afterwards."""
    saved = dict(HANDLERS)
    spec_ = importlib.util.spec_from_file_location("store_dump_for_test", STORE_DUMP)
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    try:
        spec_.loader.exec_module(module)
        yield module
    finally:
        HANDLERS.clear()
        HANDLERS.update(saved)
        sys.modules.pop("store_dump_for_test", None)


@pytest.mark.parametrize("old_store", [False, True])
def test_the_rules_hold_after_every_entry_of_a_workload_of_every_command(
    store_dump: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_store: bool
) -> None:
    seen: dict[str, int] = {"entries": 0, "ended": 0, "results": 0, "dlq": 0, "logs": 0}
    apply = store_dump.Replica.apply

    def checked(self: Any, entries: list[tuple[int, bytes]], *, group: bool) -> None:
        apply(self, entries, group=group)
        kv: KV = self.kv
        with kv.read() as txn:
            assert broken_rules(txn) == [], f"after entries {[i for i, _ in entries]}"
            seen["entries"] += len(entries)
            seen["ended"] += sum(
                1 for _, v in txn.scan("execs") if common_pb2.Execution.FromString(v).state in TERMINAL_STATES
            )
            for db in ("results", "dlq", "logs"):
                seen[db] += sum(1 for _ in txn.scan(db))

    monkeypatch.setattr(store_dump.Replica, "apply", checked)
    store_dump.run(40, tmp_path, old_store=old_store)
    # The workload has what the rules are about.
    assert all(seen.values()), seen


def test_the_check_finds_an_entry_that_outlived_its_state() -> None:
    log = Log()
    log.one(epoch())
    log.one(create(tid(1), spec()))
    _run(log, 1, T0 + 1000)
    exec16 = id_bytes(eid(1))
    with log.sm.kv.write() as txn:
        assert broken_rules(txn) == []
        txn.put("running", exec16, b"")
        txn.put("dlq", exec16, b"")
        txn.put("results", exec16, b"x")
        txn.put("logs", exec16 + b"\0\0\0\x07\x01" + bytes(8), b"x")
        assert len(broken_rules(txn)) == 4


# ------------------------------------------------------------- a trim deletes what an execution had


def _run(log: Log, n: int, at: int, *, ok: bool = True, out: bytes = b"", result: bytes = b"") -> None:
    """Trigger, grant, (output,) complete execution `n` of task 1 at `at`, with a result."""
    assert log.one(trigger(tid(1), eid(n), at)).applied
    g = log.one(grant(eid(n), at + 1))
    assert g.applied, g.error
    if out:
        assert log.one(output(eid(n), g.execution.token, at + 2, out)).applied
    done = complete(eid(n), g.execution.token, at + 3, common_pb2.ATTEMPT_SUCCEEDED if ok else 2)
    done.complete.result.result = result
    assert log.one(done).applied


def _purge(execution: str, at: int) -> Command:
    return Command(
        stamped_at_ms=at,
        purge_dead_letters=commands_pb2.PurgeDeadLetters(execution_ids=[execution]),
    )


def test_a_trim_at_a_fire_deletes_a_dead_letter_a_result_and_output_with_their_execution() -> None:
    """keep_executions 1, a retry policy of one attempt: the first execution failed into the dead-letter
    queue with output and a result, the second one's letter was purged (still marked dead-lettered);
    trimmed at the next fires, they leave a store equal to one where they never existed."""
    s = spec(
        retention=common_pb2.Retention(keep_executions=1),
        retry=common_pb2.RetryPolicy(initial_backoff_ms=1),
        max_attempts=1,
    )
    trimmed = Log()
    trimmed.one(epoch())
    trimmed.one(create(tid(1), s))
    _run(trimmed, 1, T0 + 1000, ok=False, out=b"one\n", result=b'{"a": 1}')
    _run(trimmed, 2, T0 + 2000, ok=False, out=b"two\n")
    assert trimmed.one(_purge(eid(2), T0 + 2500)).applied
    _run(trimmed, 3, T0 + 3000, out=b"three\n", result=b"3")
    assert executions_of(trimmed, tid(1)) == [eid(3)]
    with trimmed.sm.kv.read() as txn:
        assert [k for k, _ in txn.scan("results")] == [id_bytes(eid(3))]
        assert list(txn.scan("dlq")) == []

    never = Log()
    never.one(epoch())
    never.one(create(tid(1), s))
    for _ in range(4 + 4 + 1):  # the first two executions' entries, the purge's
        never.apply()
    _run(never, 3, T0 + 3000, out=b"three\n", result=b"3")
    kept = ("tasks", "task_stats_hours")  # counters and statistics outlive what they counted
    assert compared(trimmed.dump(), *kept) == compared(never.dump(), *kept)
    task = task_of(trimmed, tid(1))
    assert task is not None and task.stored_executions == 1


class _Calls:
    """A transaction that counts every call by (call, database)."""

    def __init__(self, txn: Txn, calls: Counter[tuple[str, str]]) -> None:
        self._txn, self._calls = txn, calls

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._txn, name)

        def counted(db: str, *a: Any, **k: Any) -> Any:
            self._calls[name, db] += 1
            return call(db, *a, **k)

        return counted


class _CountingKV(MemKV):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        with super().write() as txn:
            yield cast(Txn, _Calls(txn, self.calls))


def test_a_trim_at_a_fire_looks_up_only_what_the_ended_execution_may_have() -> None:
    """The execution trimmed ended without output, result or dead letter: nothing is looked up in
    those databases, nor in the indexes of executions not yet ended; at the task's count the ledger's
    count (one record gone, one added) is read once and not written."""
    kv = _CountingKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), spec(retention=common_pb2.Retention(keep_executions=2))))
    for n in range(2):
        _run(log, n, T0 + 1000 * (n + 1))
    kv.calls.clear()
    assert log.one(trigger(tid(1), eid(2), T0 + 3000)).applied
    assert executions_of(log, tid(1)) == [eid(1), eid(2)]
    looked = {db for _, db in kv.calls}
    assert not looked & {"dlq", "dlq_by_task", "results", "logs", "running", "buffered"}, kv.calls
    # The one look at its output: a seek that finds none (raft.output.delete), no scan.
    assert kv.calls["first", "logs_size"] == 1 and kv.calls["scan", "logs_size"] == 0
    # The trigger's own entries only: the new execution is pending and active.
    assert kv.calls["put", "active"] == 1 and kv.calls["put", "pending"] == 1
    assert kv.calls["delete", "active"] == 0 and kv.calls["delete", "pending"] == 0
    assert kv.calls["get", "ledger_count"] == 1 and kv.calls["put", "ledger_count"] == 0
    with kv.read() as txn:
        assert txn.get("ledger_count", id_bytes(tid(1))) == (2).to_bytes(8, "big")
        assert txn.count("ledger") == 2


def test_a_forced_delete_of_a_task_leaves_no_entry_of_its_executions_not_yet_ended() -> None:
    """delete_execution of a running and a buffered execution (a forced DeleteTask's): the index entries
    of their states go, and the task's count of executions not yet ended with them."""
    log = Log()
    log.one(epoch())
    log.one(create(tid(1), spec(overlap=common_pb2.OVERLAP_BUFFER_ALL)))
    assert log.one(trigger(tid(1), eid(1), T0 + 1000)).applied
    assert log.one(grant(eid(1), T0 + 1001)).applied  # running
    assert log.one(trigger(tid(1), eid(2), T0 + 2000)).applied  # buffered behind it
    assert log.one(trigger(tid(2), eid(3), T0 + 2000)).error_code == "not_found"
    gone = Command(stamped_at_ms=T0 + 3000, delete_task=commands_pb2.DeleteTask(task_id=tid(1), force=True))
    res = log.one(gone)
    assert res.applied, res.error
    with log.sm.kv.read() as txn:
        for db in ("active", "pending", "running", "buffered", "execs"):
            assert list(txn.scan(db)) == [], db
        assert [k for k, _ in txn.scan("meta") if k.startswith(quota.ACTIVE_PREFIX)] == []
