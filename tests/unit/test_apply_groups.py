"""Several log entries applied in one store transaction (issue 16: a transaction's commit and the first
write to each page it touches cost about as much as a few commands, and most entries are small).

`StateMachine.apply_entries` must record exactly what applying the entries one by one records (results,
stored bytes, audit events), also when a command fails inside its handler (the group falls back to one
entry at a time) or the store fails (nothing of the group stays). A follower's results, which nobody
reads, are left empty but still count the entry's commands. The apply thread groups the entries already
waiting for it and answers each proposer once its group is applied.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from pathlib import Path

import pytest

from cronraft.daemon.metrics import count_results
from cronraft.errors import OutcomeUnknown, StorageError
from cronraft.proto.v1 import audit_pb2, commands_pb2, common_pb2
from cronraft.raft import apply_thread
from cronraft.raft.apply_thread import ApplyThread
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.commands import HANDLERS, Ctx
from cronraft.raft.kv import DATABASES, KV, MemKV
from cronraft.raft.state import UNREAD_RESULT, StateMachine, read_execution
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DUE = T0 + 60_000
Command = commands_pb2.Command


@pytest.fixture(params=["mem", "lmdb"])
def kv_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], KV]]:
    made: list[KV] = []

    def make() -> KV:
        n = len(made)
        store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / f"db{n}", map_size=64 << 20)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def dump(kv: KV) -> dict[str, dict[bytes, bytes]]:
    with kv.read() as txn:
        return {db: dict(txn.scan(db)) for db in DATABASES}


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def eid(n: int) -> str:
    return make_id(DUE, (1000 + n).to_bytes(10, "big"))


def create(n: int) -> Command:
    spec = common_pb2.TaskSpec(
        name=f"t{n}",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=DUE)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    spec.tags["n"] = str(n % 3)
    return Command(
        request_id=f"create-{n}",
        stamped_at_ms=T0,
        create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec),
        audit=audit_pb2.AuditMeta(principal="alice", method="CreateTask"),
    )


def entries(n_tasks: int = 6) -> list[list[Command]]:
    """A log: creates, an epoch, then per task one entry each of fire, grant and complete (interleaved),
    with a failed outcome every third task (statistics of both kinds)."""
    log: list[list[Command]] = [[create(i)] for i in range(n_tasks)]
    log.append([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))])
    for i in range(n_tasks):
        fire = commands_pb2.Fire(task_id=tid(i), nominal_time_ms=DUE, execution_id=eid(i))
        log.append([Command(stamped_at_ms=DUE, fire=fire)])
        grant = commands_pb2.Grant(execution_id=eid(i), worker_id="w1", lease_ttl_ms=1000)
        log.append([Command(stamped_at_ms=DUE, grant=grant)])
    return log


def completes(kv: KV, n_tasks: int = 6) -> list[list[Command]]:
    out = []
    with kv.read() as txn:
        tokens = [read_execution(txn, eid(i)).token for i in range(n_tasks)]  # type: ignore[union-attr]
    for i, token in enumerate(tokens):
        outcome = common_pb2.ATTEMPT_FAILED if i % 3 == 0 else common_pb2.ATTEMPT_SUCCEEDED
        result = common_pb2.AttemptResult(
            execution_id=eid(i), token=token, outcome=outcome, started_at_ms=DUE, finished_at_ms=DUE + i
        )
        done = commands_pb2.Complete(execution_id=eid(i), token=token, result=result)
        out.append([Command(stamped_at_ms=DUE + 10 + i, complete=done)])
    return out


def one_by_one(sm: StateMachine, log: list[list[Command]], first: int) -> list[bytes | None]:
    return [sm.apply_entry(first + i, encode_batch(cmds)) for i, cmds in enumerate(log)]


def grouped(sm: StateMachine, log: list[list[Command]], first: int, size: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    numbered = [(first + i, encode_batch(cmds)) for i, cmds in enumerate(log)]
    for start in range(0, len(numbered), size):
        out += sm.apply_entries(numbered[start : start + size])
    return out


@pytest.mark.parametrize("size", [2, 5, 64])
def test_a_group_records_what_one_entry_at_a_time_records(kv_factory: Callable[[], KV], size: int) -> None:
    alone, together = StateMachine(kv_factory()), StateMachine(kv_factory())
    alone.collect_events = together.collect_events = True
    log = entries()
    assert grouped(together, log, 1, size) == one_by_one(alone, log, 1)
    done = completes(alone.kv)
    assert done == completes(together.kv)
    alone_results = one_by_one(alone, done, len(log) + 1)
    alone_events = alone.take_events()
    together_results = grouped(together, done, len(log) + 1, size)
    assert together_results == alone_results
    assert dump(together.kv) == dump(alone.kv)
    assert together.last_applied() == alone.last_applied() == len(log) + len(done)
    if size >= len(done):  # the group's events are every entry's, in order (alone: the last entry's)
        assert together.take_events()[-len(alone_events) :] == alone_events


def test_entries_already_applied_are_answered_none_and_skipped(kv_factory: Callable[[], KV]) -> None:
    sm = StateMachine(kv_factory())
    log = [(i + 1, encode_batch(cmds)) for i, cmds in enumerate(entries(2))]
    assert all(r is not None for r in sm.apply_entries(log[:3]))
    before = dump(sm.kv)
    again = sm.apply_entries(log[1:5])
    assert again[:2] == [None, None] and all(r is not None for r in again[2:])
    assert sm.last_applied() == 5
    assert dump(sm.kv) != before


def test_unread_results_are_empty_but_count_the_commands(kv_factory: Callable[[], KV]) -> None:
    leader, follower = StateMachine(kv_factory()), StateMachine(kv_factory())
    log = [(i + 1, encode_batch(cmds)) for i, cmds in enumerate(entries(3))]
    log.append((len(log) + 1, encode_batch([create(10), create(11)])))
    read = leader.apply_entries(log)
    unread = follower.apply_entries(log, unread=range(2, len(log) + 1))
    assert unread[0] == read[0]  # entry 1 was wanted
    for mine, theirs, (_, payload) in zip(unread[1:], read[1:], log[1:], strict=True):
        n = len(commands_pb2.CommandBatch.FromString(payload).commands)
        assert mine == UNREAD_RESULT * n
        assert count_results(mine or b"") == count_results(theirs or b"") == n
    assert dump(follower.kv) == dump(leader.kv)  # dedup records keep the real results
    done = [(len(log) + 1 + i, encode_batch(cmds)) for i, cmds in enumerate(completes(leader.kv, 3))]
    leader.collect_events = follower.collect_events = True
    assert all(r is not None for r in leader.apply_entries(done))
    assert follower.apply_entries(done, unread=[i for i, _ in done]) == [UNREAD_RESULT] * len(done)
    assert dump(follower.kv) == dump(leader.kv)  # handlers that skip filling results store the same
    assert follower.take_events() == leader.take_events()  # and tell the same (raft.audit)
    log.extend(done)
    assert follower.apply_entry(len(log) + 1, encode_batch([create(12)]), wanted=False) == UNREAD_RESULT


def test_a_command_failing_in_its_handler_sends_the_group_back_to_one_entry_at_a_time(
    kv_factory: Callable[[], KV],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = HANDLERS["create_task"]

    def handler(ctx: Ctx, cmd: Command) -> None:
        real(ctx, cmd)
        if cmd.create_task.spec.name == "t3":
            raise ValueError("poisoned after writing")

    monkeypatch.setitem(HANDLERS, "create_task", handler)
    alone, together = StateMachine(kv_factory()), StateMachine(kv_factory())
    alone.collect_events = together.collect_events = True
    log = entries()
    expected, alone_events = [], []
    for i, cmds in enumerate(log):
        expected.append(alone.apply_entry(i + 1, encode_batch(cmds)))
        alone_events += alone.take_events()
    assert grouped(together, log, 1, len(log)) == expected
    assert together.take_events() == alone_events  # every entry's events, the failed command's included
    assert any(e["kind"] == "internal" for e in alone_events)
    failed = commands_pb2.BatchResult.FromString(expected[3] or b"").results[0]
    assert failed.error_code == "internal" and "poisoned" in failed.error
    assert dump(together.kv) == dump(alone.kv)
    assert together.internal_errors == 1


def test_a_store_failure_in_a_group_keeps_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv = LmdbKV(tmp_path / "db", map_size=64 << 20)
    sm = StateMachine(kv)
    log = [(i + 1, encode_batch(cmds)) for i, cmds in enumerate(entries(3))]
    sm.apply_entries(log[:2])
    before = dump(kv)
    real = HANDLERS["fire"]

    def full(ctx: Ctx, cmd: Command) -> None:
        real(ctx, cmd)
        raise StorageError("store failure: map full", kind="map_full")

    monkeypatch.setitem(HANDLERS, "fire", full)
    with pytest.raises(StorageError):
        sm.apply_entries(log[2:])
    assert dump(kv) == before and sm.last_applied() == 2
    monkeypatch.setitem(HANDLERS, "fire", real)
    assert all(r is not None for r in sm.apply_entries(log[2:]))
    assert sm.last_applied() == len(log)
    kv.close()


# ----------------------------------------------------------------------------------- the apply thread


class _Recorder:
    """apply_entry / apply_entries that record their calls; `gate` holds the first call."""

    def __init__(self, fail_groups: int = 0) -> None:
        self.gate = threading.Event()
        self.calls: list[tuple[str, list[int], frozenset[int]]] = []
        self.fail_groups = fail_groups

    def one(self, index: int, payload: bytes) -> bytes | None:
        self.gate.wait(10)
        self.calls.append(("one", [index], frozenset()))
        return b"r%d" % index

    def many(self, group: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
        self.gate.wait(10)
        indexes = [i for i, _ in group]
        if self.fail_groups:
            self.fail_groups -= 1
            raise StorageError("store failure: disk full", kind="disk_full")
        self.calls.append(("many", indexes, frozenset(i for i in indexes if i in unread)))
        return [b"" if i in unread else b"r%d" % i for i in indexes]


async def _run(rec: _Recorder, waited: list[int], entries_per_tick: list[int]) -> dict[int, object]:
    loop = asyncio.get_running_loop()
    thread = ApplyThread(rec.one, apply_entries=rec.many)
    thread.start(0)
    futures: dict[int, asyncio.Future[bytes]] = {}
    index = 0
    for n in entries_per_tick:  # ticks of the Raft thread: stage, register proposers, release
        for _ in range(n):
            index += 1
            thread.stage(index, b"x" * 100)
            if index in waited:
                futures[index] = loop.create_future()
                thread.wait_for(index, (loop, futures[index]))
        thread.release_staged()
    rec.gate.set()
    answers: dict[int, object] = {}
    for i, fut in futures.items():
        answers[i] = await asyncio.wait_for(fut, 10)
    assert await asyncio.to_thread(thread.wait_applied, index)
    thread.stop()
    return answers


def test_the_thread_applies_waiting_entries_in_groups_and_answers_their_proposers() -> None:
    rec = _Recorder()
    answers = asyncio.run(_run(rec, waited=[1, 4, 9], entries_per_tick=[1, 3, 2, 4]))
    applied = [i for _, indexes, _ in rec.calls for i in indexes]
    assert applied == list(range(1, 11))  # each once, in order
    assert len(rec.calls) < 10  # held at the first entry, the rest queued up behind it: grouped
    for kind, indexes, unread in rec.calls:
        if kind == "many":
            assert unread == {i for i in indexes if i not in (1, 4, 9)}
    assert answers == {1: b"r1", 4: b"r4", 9: b"r9"}


def test_a_group_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_thread, "GROUP_MAX_ENTRIES", 4)
    rec = _Recorder()
    asyncio.run(_run(rec, waited=[], entries_per_tick=[1, 10, 3]))
    assert [i for _, indexes, _ in rec.calls for i in indexes] == list(range(1, 15))
    assert max(len(indexes) for _, indexes, _ in rec.calls) == 4
    monkeypatch.setattr(apply_thread, "GROUP_MAX_ENTRIES", 64)
    monkeypatch.setattr(apply_thread, "GROUP_MAX_BYTES", 250)  # entries of 100 bytes: 3 per group
    rec = _Recorder()
    asyncio.run(_run(rec, waited=[], entries_per_tick=[1, 10, 3]))
    assert max(len(indexes) for _, indexes, _ in rec.calls) == 3


def test_a_failed_group_is_applied_again_one_entry_at_a_time() -> None:
    rec = _Recorder(fail_groups=1)
    answers = asyncio.run(_run(rec, waited=[2, 3, 5], entries_per_tick=[1, 4]))
    assert [i for _, indexes, _ in rec.calls for i in indexes] == list(range(1, 6))
    assert answers == {2: b"r2", 3: b"r3", 5: b"r5"}  # whole results: applied alone, as ever
    kinds = [kind for kind, indexes, _ in rec.calls if 2 in indexes or 5 in indexes]
    assert kinds == ["one", "one"]


def test_a_proposer_registered_too_late_for_its_result_is_told_unknown() -> None:
    rec = _Recorder()

    async def run() -> object:
        loop = asyncio.get_running_loop()
        thread = ApplyThread(rec.one, apply_entries=rec.many)
        thread.start(0)
        for i in (1, 2, 3):
            thread.stage(i, b"x")
        thread.release_staged()
        fut: asyncio.Future[bytes] = loop.create_future()
        # Registered after release, while the group is being applied as unread (never in the replicator).
        original = rec.many

        def many(group: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
            thread.wait_for(3, (loop, fut))
            return original(group, unread)

        thread._apply_entries = many
        rec.gate.set()
        try:
            return await asyncio.wait_for(fut, 10)
        except OutcomeUnknown as exc:
            return exc
        finally:
            thread.stop()

    got = asyncio.run(run())
    assert rec.calls == [("many", [1, 2, 3], frozenset({1, 2, 3}))]
    assert isinstance(got, OutcomeUnknown)


def _trickle(thread: ApplyThread, count: int, every_s: float, waited: Container[int] = ()) -> None:
    """Entries released one per tick, `every_s` apart, as a steady load brings them to a follower."""
    loop = asyncio.new_event_loop()
    try:
        for index in range(1, count + 1):
            thread.stage(index, b"x" * 100)
            if index in waited:
                thread.wait_for(index, (loop, loop.create_future()))
            thread.release_staged()
            time.sleep(every_s)
    finally:
        loop.close()


def test_a_follower_lingers_for_entries_to_apply_together() -> None:
    rec = _Recorder()
    rec.gate.set()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=0.2)
    thread.start(0)
    try:
        _trickle(thread, 12, 0.01)
        assert thread.wait_applied(12)
    finally:
        thread.stop()
    assert [i for _, indexes, _ in rec.calls for i in indexes] == list(range(1, 13))
    assert len(rec.calls) <= 3  # without lingering: one call per entry (each arrived to an idle thread)


def test_a_group_a_proposer_waits_for_does_not_linger() -> None:
    rec = _Recorder()
    rec.gate.set()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=5.0)
    thread.start(0)
    try:
        _trickle(thread, 4, 0.01, waited=range(1, 5))  # the leader's entries: each has its proposer
        began = time.monotonic()
        assert thread.applied_index(4) == 4 or _applied_within(thread, 4, 2.0)
        assert time.monotonic() - began < 2.0  # applied as they came, not after a 5 s linger
    finally:
        thread.stop()
    assert [i for _, indexes, _ in rec.calls for i in indexes] == [1, 2, 3, 4]


def test_waiting_for_the_store_cuts_a_linger_short() -> None:
    rec = _Recorder()
    rec.gate.set()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=30.0)
    thread.start(0)
    try:
        _trickle(thread, 3, 0.0)
        began = time.monotonic()
        assert thread.wait_applied(3)  # as a snapshot waits for the store: not after a 30 s linger
        assert time.monotonic() - began < 2.0
    finally:
        thread.stop()
    assert [i for _, indexes, _ in rec.calls for i in indexes] == [1, 2, 3]


def _applied_within(thread: ApplyThread, index: int, seconds: float) -> bool:
    """Applied up to `index` within `seconds`, watched without `wait_applied` (which cuts a linger short)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if thread.applied_index(index) >= index:
            return True
        time.sleep(0.005)
    return False
