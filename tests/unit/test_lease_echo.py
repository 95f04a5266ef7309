"""A lease offer that waited (a paused worker, a slow link) must not outlive the lease the leader counts.

The leader echoes in every LeaseOffers the worker's own stamp of the latest Hello/Heartbeat it had
received; the worker counts the TTL from that stamp when it is earlier than the receipt, and an attempt
whose deadline has passed before its start is fenced unstarted (fault scenario S8 found an offer read
after a 7 s SIGSTOP running beside its re-grant).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_gateway import (
    connected_stream,
    fake_leader,
    get,
    make_lease,
    running_worker,
    worker_clock,
    worker_config,
)

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine

PY = sys.executable
T0 = 1_767_225_600_000


def test_the_leader_echoes_the_latest_worker_stamp_in_its_offers() -> None:
    kv = MemKV()
    sm = StateMachine(kv)
    spec = common_pb2.TaskSpec(
        name="t",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
    )
    create = commands_pb2.Command(
        stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=make_id(T0, b"\x01" * 10), spec=spec)
    )
    n = iter(range(1, 1 << 30))
    core = LeaderCore(
        kv, LeaderSettings(), node_id="n1", term=1, new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big"))
    )
    index = 1
    assert sm.apply_entry(index, encode_batch([create, core.epoch_command(T0)])) is not None
    core.on_epoch_committed(T0, 0)
    core.worker_connected("w1", 4, ["default"], {}, 0, echo_ms=5_000)
    core.heartbeat("w1", [], 10, echo_ms=7_500)
    core.heartbeat("w1", [], 11, echo_ms=7_000)  # reordered or older: the latest stamp stays
    cmds = core.tick(T0 + 1_000, 20)
    index += 1
    raw = sm.apply_entry(index, encode_batch(cmds))
    assert raw is not None
    core.on_committed(cmds, list(commands_pb2.BatchResult.FromString(raw).results), T0 + 1_000, 20)
    ((worker_id, msg),) = core.drain_outgoing()
    assert worker_id == "w1" and len(msg.leases.leases) == 1
    assert msg.leases.echo_mono_ms == 7_500


@pytest.mark.asyncio
async def test_an_offer_read_after_its_lease_ran_out_is_fenced_unstarted(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    clock = worker_clock()
    async with fake_leader(lease_ttl_ms=1000) as leader:
        config = worker_config([leader.address], tmp_path / "o")
        async with running_worker(config, clock=clock):
            stream = await connected_stream(leader)
            code = f"open({str(stamps)!r}, 'w').write('ran')"
            lease = make_lease("exec-late", argv=[PY, "-c", code])
            # Stamped by the worker at 1000.0 s; read at 1010 s: 9 s past the TTL counted from there.
            clock.advance_to(1010.0)
            offer = worker_pb2.LeaseOffers(leases=[lease], echo_mono_ms=1_000_000)
            stream.put_nowait(worker_pb2.GatewayMessage(leases=offer))
            result = await leader.result_for("exec-late")
    assert result.outcome == common_pb2.ATTEMPT_NOT_STARTED
    assert "not started" in result.error and "self-fenced" in result.error
    assert not stamps.exists()


@pytest.mark.asyncio
async def test_a_fresh_echo_leaves_the_offer_to_run(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    clock = worker_clock()
    async with fake_leader(lease_ttl_ms=1000) as leader:
        config = worker_config([leader.address], tmp_path / "o")
        async with running_worker(config, clock=clock):
            stream = await connected_stream(leader)
            code = f"open({str(stamps)!r}, 'w').write('ran')"
            offer = worker_pb2.LeaseOffers(
                leases=[make_lease("exec-fresh", argv=[PY, "-c", code])], echo_mono_ms=999_900
            )
            stream.put_nowait(worker_pb2.GatewayMessage(leases=offer))
            result = await leader.result_for("exec-fresh")
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED
    assert stamps.read_text() == "ran"


# -- reconciling after a failover ------------------------------------------------------------------


def granted_in_term_1(kv: MemKV, sm: StateMachine, worker_id: str, n: int) -> list[str]:
    """n one-time tasks fired and granted to `worker_id` by a term-1 leader; the execution ids."""
    cmds = [commands_pb2.Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="old"))]
    ids = []
    for i in range(n):
        tid, eid = make_id(T0, bytes([1, i]) * 5), make_id(T0, bytes([2, i]) * 5)
        ids.append(eid)
        spec = common_pb2.TaskSpec(
            name=f"t{i}",
            schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0)),
            payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
        )
        cmds += [
            commands_pb2.Command(
                stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=tid, spec=spec)
            ),
            commands_pb2.Command(
                stamped_at_ms=T0, fire=commands_pb2.Fire(task_id=tid, nominal_time_ms=T0, execution_id=eid)
            ),
            commands_pb2.Command(
                stamped_at_ms=T0,
                grant=commands_pb2.Grant(execution_id=eid, worker_id=worker_id, lease_ttl_ms=10_000),
            ),
        ]
    raw = sm.apply_entry(1, encode_batch(cmds))
    assert raw is not None
    assert all(r.applied for r in commands_pb2.BatchResult.FromString(raw).results)
    return ids


def term_2_leader(kv: MemKV) -> LeaderCore:
    n = iter(range(1, 1 << 30))
    core = LeaderCore(
        kv,
        LeaderSettings(lease_ttl_ms=10_000, expiry_grace_ms=5_000),
        node_id="n2",
        term=2,
        new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
    )
    core.on_epoch_committed(T0 + 1_000, 1_000)
    return core


def expiries(cmds: list[commands_pb2.Command]) -> list[str]:
    return [c.expire_lease.execution_id for c in cmds if c.HasField("expire_lease")]


def test_a_new_leader_expires_at_once_the_old_leases_a_worker_never_received() -> None:
    kv = MemKV()
    sm = StateMachine(kv)
    running, finished, never = granted_in_term_1(kv, sm, "w1", 3)
    core = term_2_leader(kv)
    core.worker_connected("w1", 10, ["default"], {}, 1_000)
    ack = core.heartbeat("w1", [], 1_010)
    assert ack.list_finished  # no complete listing yet: it asks for one
    assert expiries(core.tick(T0 + 1_020, 1_020)) == []  # nothing decided on a partial listing
    with kv.read() as txn:
        from cronraft.raft import state as st

        tokens = {e: st.read_execution(txn, e).token for e in (running, finished)}  # type: ignore[union-attr]
    ack = core.heartbeat(
        "w1",
        [worker_pb2.LeaseRef(execution_id=running, token=tokens[running])],
        1_100,
        finished=[worker_pb2.LeaseRef(execution_id=finished, token=tokens[finished])],
        complete_listing=True,
    )
    assert not ack.list_finished
    assert expiries(core.tick(T0 + 1_110, 1_110)) == [never]  # not after TTL + grace (16 s)


def test_a_leader_never_expires_early_the_leases_of_its_own_term() -> None:
    kv = MemKV()
    sm = StateMachine(kv)
    (old,) = granted_in_term_1(kv, sm, "w1", 1)
    core = term_2_leader(kv)
    core.worker_connected("w1", 10, ["default"], {}, 1_000)
    core.leases[old].token = (2, core.leases[old].token[1])  # as if granted in this term
    core.heartbeat("w1", [], 1_100, complete_listing=True)
    assert expiries(core.tick(T0 + 1_110, 1_110)) == []


@pytest.mark.asyncio
async def test_the_worker_lists_its_unacknowledged_results_first_and_when_asked(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path / "o")):
        leader.ack_results = False  # the results stay in the outbox
        first = await get(leader.heartbeats)
        assert first.complete_listing and not first.finished  # every stream starts with a listing
        stream = await connected_stream(leader)
        lease = make_lease("exec-done", argv=[PY, "-c", "pass"], token=(1, 9))
        stream.put_nowait(worker_pb2.GatewayMessage(leases=worker_pb2.LeaseOffers(leases=[lease])))
        await leader.result_for("exec-done")
        leader.list_finished = True
        while True:
            hb = await get(leader.heartbeats)
            if hb.complete_listing:
                break
    assert [(r.execution_id, r.token.term, r.token.index) for r in hb.finished] == [("exec-done", 1, 9)]
