"""The size an offer is counted for (daemon.leader.outcomes._fill_offer: a bound from the lengths at hand,
not a ByteSize) is never below its serialized size, so offers messages stay within MAX_OFFER_BYTES."""

from __future__ import annotations

import pytest

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.daemon.leader.leases import LeaseState
from cronraft.daemon.leader.outcomes import _fill_offer
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft.kv import MemKV

BIG = 2**63 - 1


def _task(name: str, payload: common_pb2.Payload, sensor: bool) -> common_pb2.Task:
    spec = common_pb2.TaskSpec(name=name, payload=payload, timeout_ms=BIG, guarantee=common_pb2.EXACTLY_ONCE)
    if sensor:
        spec.sensor.probe.handler.name = "probe"
        spec.sensor.probe.handler.args_json = "x" * 1000
        spec.sensor.interval_ms = spec.sensor.timeout_ms = BIG
    return common_pb2.Task(task_id="t" * 26, spec=spec)


@pytest.mark.parametrize("name", ["", "n", "n" * 253, "\U0001f600" * 63, "é" * 200])
@pytest.mark.parametrize("sensor", [False, True])
@pytest.mark.parametrize(
    "payload",
    [
        common_pb2.Payload(),
        common_pb2.Payload(handler=common_pb2.HandlerPayload(name="bench.noop")),
        common_pb2.Payload(handler=common_pb2.HandlerPayload(name="h", args_json="a" * 70_000)),
    ],
)
def test_the_counted_size_of_an_offer_bounds_its_serialized_size(
    name: str, sensor: bool, payload: common_pb2.Payload
) -> None:
    core = LeaderCore(MemKV(), LeaderSettings(lease_ttl_ms=BIG), node_id="n1", term=1, new_id=str)
    ex = common_pb2.Execution(
        execution_id="e" * 26,
        task_id="t" * 26,
        nominal_time_ms=BIG,
        attempt=2**31 - 1,
        not_before_ms=BIG,
        token=common_pb2.FencingToken(term=BIG, index=BIG),
    )
    held = LeaseState("e" * 26, (BIG, BIG), "w", "t" * 26)
    for h in (None, held):
        lease = worker_pb2.Lease()
        counted = _fill_offer(core, lease, ex, _task(name, payload, sensor), h)
        assert lease.ByteSize() <= counted
        assert lease.HasField("payload")  # as the copy made it, even of an empty payload
        if payload.ByteSize():
            assert lease.payload == payload
