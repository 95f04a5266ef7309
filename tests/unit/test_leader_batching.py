"""The leader core's batching on the fire path: one read transaction per tick and per committed batch,
the horizon loader reads only what is newly due, and a fired execution whose grant is in flight is not
queued as pending (its grant's outcome decides)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV, Txn
from cronraft.raft.state import StateMachine
from tests.support.grants import grants_in

T0 = 1_767_225_600_000
DUE = T0 + 60_000
Command = commands_pb2.Command


class _CountingTxn:
    def __init__(self, txn: Txn, owner: CountingKV) -> None:
        self._txn = txn
        self._owner = owner

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._txn.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._txn.put(db, key, value)

    def delete(self, db: str, key: bytes) -> bool:
        return self._txn.delete(db, key)

    def scan(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        for item in self._txn.scan(db, start, end, reverse=reverse):
            if db == "due":
                self._owner.due_scanned += 1
            yield item

    def first(
        self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> tuple[bytes, bytes] | None:
        item = self._txn.first(db, start, end, reverse=reverse)
        if db == "due" and item is not None:
            self._owner.due_scanned += 1
        return item


class CountingKV:
    """MemKV, counting read transactions and the due-index entries read."""

    def __init__(self) -> None:
        self.kv = MemKV()
        self.reads = 0
        self.due_scanned = 0

    @contextmanager
    def write(self) -> Iterator[Txn]:
        with self.kv.write() as txn:
            yield txn

    @contextmanager
    def read(self) -> Iterator[Txn]:
        self.reads += 1
        with self.kv.read() as txn:
            yield _CountingTxn(txn, self)


class Cluster:
    """One state machine and a leader core over it; entries are applied as the core proposes them."""

    def __init__(self, tasks: int, *, fire_grant: bool = True) -> None:
        self.kv = CountingKV()
        fresh = features.SUPPORTED if fire_grant else features.SUPPORTED - {features.FIRE_GRANT}
        self.sm = StateMachine(self.kv.kv, fresh_features=fresh)
        self.index = 0
        spec = common_pb2.TaskSpec(
            name="t",
            schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=DUE)),
            payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
            queue="default",
        )
        self.apply(
            [
                Command(
                    stamped_at_ms=T0,
                    create_task=commands_pb2.CreateTask(
                        task_id=make_id(T0, i.to_bytes(10, "big")), spec=spec
                    ),
                )
                for i in range(tasks)
            ]
        )
        n = iter(range(1, 1 << 30))
        self.core = LeaderCore(
            self.kv,
            LeaderSettings(horizon_ms=10_000, max_commands_per_tick=100_000),
            node_id="n1",
            term=1,
            new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
        )
        self.apply([self.core.epoch_command(T0)])
        self.core.on_epoch_committed(DUE - 1_000, 0)

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)


def test_one_read_transaction_per_tick_and_per_committed_batch() -> None:
    c = Cluster(200)
    c.core.worker_connected("w1", 1_000, ["default"], {})
    reads = c.kv.reads
    cmds = c.core.tick(DUE, 1)
    assert sum(1 for cmd in cmds if cmd.HasField("fire")) == 200
    assert len(grants_in(cmds)) == 200
    # horizon load, the fires' task lookups, pending grants, waiting check: a few, not one per task
    assert c.kv.reads - reads <= 4
    results = c.apply(cmds)
    reads = c.kv.reads
    c.core.on_committed(cmds, results, DUE, 1)
    # The lease offers are built from the tasks the Fires' results carry: no snapshot is even opened
    # (one at most for a batch that looks something up: LeaderCore._reading).
    assert c.kv.reads - reads == 0
    (to_worker,) = c.core.drain_outgoing()
    assert len(to_worker[1].leases.leases) == 200
    assert c.core._pending_count() == 0  # granted in the same entry: never queued as pending


def test_a_fire_whose_grant_is_refused_waits_in_pending() -> None:
    """As a release without "fire_grant" proposes them: a Grant after each Fire."""
    c = Cluster(3, fire_grant=False)
    c.core.worker_connected("w1", 10, ["default"], {})
    cmds = c.core.tick(DUE, 1)
    fires = [cmd for cmd in cmds if cmd.HasField("fire")]
    grants = [cmd for cmd in cmds if cmd.HasField("grant")]
    assert len(fires) == len(grants) == 3
    # The fires commit; the grants are refused (say, a rejection the core did not foresee).
    results = c.apply(fires)
    refused = [commands_pb2.CommandResult(applied=False, error_code="invalid_state") for _ in grants]
    c.core.on_committed([*fires, *grants], [*results, *refused], DUE, 1)
    assert c.core._pending_count() == 3
    assert c.core.drain_outgoing() == []


def test_a_fire_whose_carried_grant_is_refused_waits_in_pending() -> None:
    """With "fire_grant": the Fire carries the grant; applied but not granted (say, a rejection the core
    did not foresee), its execution is pending in the result: the slot is freed, it waits in pending."""
    c = Cluster(3)
    c.core.worker_connected("w1", 3, ["default"], {})
    cmds = c.core.tick(DUE, 1)
    assert [cmd.WhichOneof("body") for cmd in cmds] == ["fire"] * 3 and len(grants_in(cmds)) == 3
    results = c.apply(cmds)
    assert all(r.execution.state == common_pb2.EXECUTION_RUNNING for r in results)
    for r in results:  # as apply answers a Fire whose grant it refused
        r.execution.state = common_pb2.EXECUTION_PENDING
        r.execution.ClearField("worker_id")
        del r.executions[:]
        r.executions.append(r.execution)
    c.core.on_committed(cmds, results, DUE, 1)
    assert c.core._pending_count() == 3 and not c.core.granting and not c.core.leases
    assert c.core.drain_outgoing() == []
    assert c.core.pool.get("w1").free() == 3  # type: ignore[union-attr]


def test_the_horizon_loader_does_not_rescan_overdue_tasks() -> None:
    c = Cluster(500)
    c.core.tick(DUE, 1)  # 500 fires proposed, never answered: the tasks stay overdue in the store
    assert c.kv.due_scanned == 500
    for step in range(1, 6):  # the horizon advances several times while they wait
        c.core.tick(DUE + step * 6_000, 1)
    assert c.kv.due_scanned == 500  # nothing newly due: the backlog is not read again


def test_a_tick_with_nothing_due_opens_no_read_transaction() -> None:
    c = Cluster(3)
    c.core.worker_connected("w1", 10, ["default"], {})
    cmds = c.core.tick(DUE, 1)
    assert len(grants_in(cmds)) == 3
    reads = c.kv.reads
    assert c.core.tick(DUE + 1, 2) == []  # the three are in flight: nothing is due
    assert c.kv.reads == reads
