"""LeaseKeeper's deadline wheel holds one entry per deadline, a bucket of the leases armed at it (issue 16):
the expiry order is still by deadline then by when each lease was armed, and a bucket goes with its last
lease (memory bounded by the running leases, I6). The scripted histories are tests/sim/testdata."""

from __future__ import annotations

from cronraft.daemon.leader.leases import LeaseKeeper
from cronraft.proto.v1 import common_pb2, worker_pb2


def _ex(n: int, worker: str = "w1") -> common_pb2.Execution:
    ex = common_pb2.Execution(execution_id=f"e{n}", task_id=f"t{n}", worker_id=worker)
    ex.token.term, ex.token.index = 1, n
    return ex


def _ref(n: int) -> worker_pb2.LeaseRef:
    ref = worker_pb2.LeaseRef(execution_id=f"e{n}")
    ref.token.term, ref.token.index = 1, n
    return ref


def test_leases_sharing_a_deadline_expire_in_the_order_they_were_armed() -> None:
    k = LeaseKeeper()
    for n in (3, 1, 2):
        k.track(_ex(n), 100)
    k.track(_ex(4), 50)
    k.expire_at("e3", 100)  # armed again at the same time: last of its deadline, as a wheel re-add
    assert [lease.execution_id for lease in k.due(100)] == ["e4", "e1", "e2", "e3"]
    assert len(k.deadlines) == 0


def test_a_renewed_lease_is_rearmed_at_its_new_deadline_when_its_old_one_comes_due() -> None:
    k = LeaseKeeper()
    k.track(_ex(1), 100)
    k.track(_ex(2), 100)
    assert k.renew("w1", [_ref(1)], 90, 300, set()).renewed == ["e1"]
    assert [lease.execution_id for lease in k.due(100)] == ["e2"]
    assert k.deadlines.next_deadline() == 300
    assert [lease.execution_id for lease in k.due(300)] == ["e1"]


def test_released_leases_leave_no_bucket_behind() -> None:
    k = LeaseKeeper()
    for n in range(1, 101):
        k.track(_ex(n, worker=f"w{n % 3}"), 1_000 + n // 10)
    k.expire_at("e5", 2_000)
    for n in range(1, 101):
        k.release(f"e{n}")
    assert len(k.deadlines) == 0
    assert k.deadlines.next_deadline() is None
    assert k.due(10_000) == []


def test_a_lease_tracked_again_moves_to_its_new_deadline() -> None:
    k = LeaseKeeper()
    k.track(_ex(1), 100)
    k.track(_ex(1, worker="w2"), 200)  # the same execution leased again (a re-grant)
    assert k.due(150) == []
    assert [(lease.execution_id, lease.worker_id) for lease in k.due(200)] == [("e1", "w2")]
    assert k.of_worker("w1") == set()
