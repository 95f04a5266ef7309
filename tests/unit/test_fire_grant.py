"""A Fire that carries its Grant (cluster feature "fire_grant", issue 16): one command instead of two for
each fire the leader can lease at once.

Applied, `[Fire(grant=G)]` must store exactly what `[Fire, Grant G]` in one entry stores (every byte of
every table, and the execution the leader reads back), when the Grant would be accepted and when it would
be refused (the execution then waits pending, as after a refused Grant). Without the feature in force the
field is ignored, as by a release that does not know it. The leader core proposes the one command only
once the feature is in force, and acts on its outcome as on a Grant's.
"""

from __future__ import annotations

import pytest

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import audit_pb2, commands_pb2, common_pb2
from cronraft.raft import features
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import DATABASES, KV, MemKV
from cronraft.raft.state import StateMachine, read_execution, read_task

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DUE = T0 + 60_000
Command = commands_pb2.Command
RUNNING, PENDING = common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_PENDING


def dump(kv: KV) -> dict[str, dict[bytes, bytes]]:
    with kv.read() as txn:
        return {db: dict(txn.scan(db)) for db in DATABASES}


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def eid(n: int, round_: int = 0) -> str:
    return make_id(DUE, (1000 + 100 * round_ + n).to_bytes(10, "big"))


# One task per case: (schedule, spec tweaks, fired at, lead): a Grant of its fire is accepted, or refused.
CASES: dict[str, tuple[common_pb2.Schedule, dict[str, object], int, int]] = {
    "one-time, due": (common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=DUE)), {}, DUE, 0),
    "fixed rate, fired 50 ms ahead": (
        common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1000, anchor_ms=DUE)),
        {},
        DUE - 50,
        50,
    ),
    # The overlap policy buffers the second fire while the first runs: no grant.
    "buffered": (
        common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1000, anchor_ms=DUE)),
        {"overlap": common_pb2.OVERLAP_BUFFER_ONE},
        DUE,
        0,
    ),
    # A concurrency limit of 1 with the first fire's attempt running: the grant is refused, pending.
    "concurrency limit": (
        common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1000, anchor_ms=DUE)),
        {"max_concurrency": 1},
        DUE,
        0,
    ),
}


def create(n: int, sched: common_pb2.Schedule, tweaks: dict[str, object]) -> Command:
    spec = common_pb2.TaskSpec(
        name=f"t{n}",
        schedule=sched,
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        **tweaks,  # type: ignore[arg-type]
    )
    spec.tags["n"] = str(n)
    return Command(
        request_id=f"create-{n}",
        stamped_at_ms=T0,
        create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec),
        audit=audit_pb2.AuditMeta(principal="alice", method="CreateTask"),
    )


def grant(n: int, round_: int, lead: int) -> commands_pb2.Grant:
    return commands_pb2.Grant(
        execution_id=eid(n, round_), worker_id="w1", lease_ttl_ms=30_000, lead_ms=lead, worker_incarnation="i"
    )


def fires(kv: KV, round_: int, *, merged: bool) -> list[Command]:
    """One fire of every case's task at its next nominal time, each with the grant the leader would ask
    for: in the Fire (`merged`) or as a Grant after it."""
    out: list[Command] = []
    with kv.read() as txn:
        for n, (_sched, _tweaks, at, lead) in enumerate(CASES.values()):
            task = read_task(txn, tid(n))
            assert task is not None
            if task.state != common_pb2.TASK_SCHEDULED:
                continue
            now = at + 1000 * round_
            fire = commands_pb2.Fire(
                task_id=tid(n), nominal_time_ms=task.next_fire_ms, execution_id=eid(n, round_), lead_ms=lead
            )
            g = grant(n, round_, lead)
            if merged:
                fire.grant.CopyFrom(g)
                out.append(Command(stamped_at_ms=now, fire=fire))
            else:
                out += [Command(stamped_at_ms=now, fire=fire), Command(stamped_at_ms=now, grant=g)]
    return out


def replay(
    sm: StateMachine, *, merged: bool, rounds: int = 2, unread: bool = False
) -> list[commands_pb2.BatchResult]:
    """Creates, an epoch, then `rounds` entries of fires (results nobody reads when `unread`, as on a
    follower); the fires' results."""
    index = 0

    def apply(cmds: list[Command], unread: bool = False) -> commands_pb2.BatchResult:
        nonlocal index
        index += 1
        (raw,) = sm.apply_entries([(index, encode_batch(cmds))], unread={index} if unread else ())
        assert raw is not None
        return commands_pb2.BatchResult.FromString(raw)

    apply([create(n, sched, tweaks) for n, (sched, tweaks, _at, _lead) in enumerate(CASES.values())])
    apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=3, leader_id="n1"))])
    return [apply(fires(sm.kv, r, merged=merged), unread) for r in range(rounds)]


@pytest.mark.parametrize("unread", [False, True], ids=["leader", "follower"])
def test_a_fire_carrying_its_grant_stores_what_fire_then_grant_store(unread: bool) -> None:
    separate, merged = StateMachine(MemKV()), StateMachine(MemKV())
    separate.collect_events = merged.collect_events = True
    two = replay(separate, merged=False, unread=unread)
    one = replay(merged, merged=True, unread=unread)
    assert dump(merged.kv) == dump(separate.kv)
    # The leader reads the grant's outcome from the Fire's result: the execution as the Grant left it.
    for r, (a, b) in enumerate(zip(two, one, strict=not unread)):
        granted = [res.execution for res in a.results if res.execution.state == RUNNING and res.applied]
        fired = [res.execution for res in b.results if res.execution.state == RUNNING]
        assert [e.SerializeToString() for e in fired] == [e.SerializeToString() for e in granted], r
    with merged.kv.read() as txn:
        states = {name: read_execution(txn, eid(n, 1)) for n, name in enumerate(CASES)}
    assert states["one-time, due"] is None  # fired once, in round 0
    assert states["fixed rate, fired 50 ms ahead"].state == RUNNING  # type: ignore[union-attr]
    assert states["buffered"].state == common_pb2.EXECUTION_BUFFERED  # type: ignore[union-attr]
    assert states["concurrency limit"].state == PENDING  # type: ignore[union-attr]
    assert states["fixed rate, fired 50 ms ahead"].token.index == 4  # type: ignore[union-attr]


def test_without_the_feature_the_grant_in_a_fire_is_ignored() -> None:
    older = StateMachine(MemKV(), fresh_features=features.SUPPORTED - {features.FIRE_GRANT})
    plain = StateMachine(MemKV(), fresh_features=features.SUPPORTED - {features.FIRE_GRANT})
    replay(older, merged=True, rounds=1)
    index = 0
    # The same log without the grants: what a release without the feature stores.
    for cmds in (
        [create(n, sched, tweaks) for n, (sched, tweaks, _at, _lead) in enumerate(CASES.values())],
        [Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=3, leader_id="n1"))],
    ):
        index += 1
        plain.apply_entry(index, encode_batch(cmds))
    only_fires = [c for c in fires(plain.kv, 0, merged=False) if c.HasField("fire")]
    plain.apply_entry(index + 1, encode_batch(only_fires))
    assert dump(older.kv) == dump(plain.kv)
    with older.kv.read() as txn:
        assert read_execution(txn, eid(0)).state == PENDING  # type: ignore[union-attr]


def core_with_worker(kv: KV) -> LeaderCore:
    core = LeaderCore(
        kv,
        LeaderSettings(horizon_ms=10_000, fire_lead_ms=50),
        node_id="n1",
        term=3,
        new_id=lambda ms: make_id(ms, b"\x00" * 10),
    )
    return core


@pytest.mark.parametrize("feature", [True, False])
def test_the_leader_proposes_one_command_per_fire_once_the_feature_is_in_force(feature: bool) -> None:
    fresh = features.SUPPORTED if feature else features.SUPPORTED - {features.FIRE_GRANT}
    sm = StateMachine(MemKV(), fresh_features=fresh)
    sched, tweaks, _at, _lead = CASES["one-time, due"]
    sm.apply_entry(1, encode_batch([create(0, sched, tweaks)]))
    core = core_with_worker(sm.kv)
    sm.apply_entry(2, encode_batch([core.epoch_command(T0)]))
    core.on_epoch_committed(T0, 0)
    core.worker_connected("w1", 10, ["default"], {})
    cmds = core.tick(DUE, 60_000)
    assert [c.WhichOneof("body") for c in cmds] == (["fire"] if feature else ["fire", "grant"])
    raw = sm.apply_entry(3, encode_batch(cmds))
    assert raw is not None
    results = list(commands_pb2.BatchResult.FromString(raw).results)
    core.on_committed(cmds, results, DUE, 60_000)
    offers = [m for _w, m in core.drain_outgoing() if m.WhichOneof("kind") == "leases"]
    assert [lease.execution_id for m in offers for lease in m.leases.leases] == [cmds[0].fire.execution_id]
    assert cmds[0].fire.execution_id in core.leases and not core.granting
