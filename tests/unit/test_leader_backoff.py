"""The leader's own commands that apply records as "internal" (issue 11): a Fire, Grant, Complete or
ExpireLease whose handler raises fails the same way when proposed again at once, so the leader retries it
after a delay that doubles with each failure (1 s, 2 s, 4 s ... at most 60 s) instead of at every tick,
reports it once per streak, and says why where users look: the fire ledger for a fire, the execution's
waiting reason for a grant. The failure is injected as the `raft.apply` failpoint does it: a `fault`
that raises inside apply for one kind of command."""

from __future__ import annotations

from leader_rig import LeaderRig

from cronraft.daemon.leader import INTERNAL_RETRY_MAX_MS
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Command = commands_pb2.Command
STEP_MS = 10


class Rig(LeaderRig):
    """A leader core over one state machine whose handlers fail for the kinds in `poisoned`."""

    def __init__(self) -> None:
        self.poisoned: set[str] = set()
        super().__init__(fault=self._fault)

    def _fault(self, cmd: Command) -> None:
        if cmd.WhichOneof("body") in self.poisoned:
            raise RuntimeError(f"poisoned {cmd.WhichOneof('body')}")


def test_a_failing_fire_is_retried_with_a_growing_delay_and_shows_in_the_ledger() -> None:
    rig = Rig()
    rig.poisoned.add("fire")
    due = T0 + 1_000
    task_id = rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)))
    rig.run(40)
    # Failures at about 1, 2, 4, 8, 16 and 32 s after the first (at every 10 ms tick before: 4,000).
    assert 5 <= rig.count("fire") <= 7, rig.count("fire")
    assert [(kind, key) for kind, key, _, _ in rig.core.failure_reports] == [("fire", task_id)]
    _, _, error, delay = rig.core.failure_reports[0]
    assert error == "RuntimeError: poisoned fire" and delay == 1_000
    with rig.kv.read() as txn:
        (record,) = sm.ledger(txn, task_id, 0, 1 << 62, 10)
    assert record.outcome == common_pb2.FIRE_FAILED and record.nominal_time_ms == due
    assert record.reason.startswith("the fire failed when applied (RuntimeError: poisoned fire)")

    # Fixed (the failpoint cleared, a new version): the next retry fires it, and the record says so.
    rig.poisoned.clear()
    rig.run(INTERNAL_RETRY_MAX_MS / 1000 + 1)
    with rig.kv.read() as txn:
        (record,) = sm.ledger(txn, task_id, 0, 1 << 62, 10)
        task = sm.read_task(txn, task_id)
    assert record.outcome == common_pb2.FIRED
    assert task is not None and task.fire_count == 1
    assert ("fire", task_id) not in rig.core._failing


def test_the_delay_is_capped_and_other_tasks_fire_meanwhile() -> None:
    rig = Rig()
    rig.poisoned.add("fire")
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)))
    rig.run(200)
    # 1+2+4+8+16+32 = 63 s, then every 60 s: 8 or 9 tries in 200 s.
    assert 7 <= rig.count("fire") <= 9, rig.count("fire")
    rig.poisoned.clear()
    fine = rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=rig.now + 1_000)))
    rig.run(2)
    with rig.kv.read() as txn:
        task = sm.read_task(txn, fine)
    assert task is not None and task.fire_count == 1


def test_a_failing_grant_is_held_back_and_its_waiting_reason_says_why() -> None:
    rig = Rig()
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    rig.poisoned.add("grant")
    task_id = rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)))
    rig.run(20)
    assert rig.count("fire") == 1
    assert 3 <= rig.count("grant") <= 6, rig.count("grant")  # 1, 2, 4, 8 s apart (not at every tick)
    with rig.kv.read() as txn:
        (ex,) = sm.list_executions(txn, task_id)[0]
    assert ex.state == common_pb2.EXECUTION_PENDING
    assert ex.waiting_reason.startswith("granting it failed when applied (RuntimeError: poisoned grant)")
    rig.poisoned.clear()
    rig.run(INTERNAL_RETRY_MAX_MS / 1000)
    with rig.kv.read() as txn:
        (ex,) = sm.list_executions(txn, task_id)[0]
    assert ex.state == common_pb2.EXECUTION_RUNNING and ex.waiting_reason == ""


def test_a_failing_lease_expiry_keeps_the_lease_and_tries_again_later() -> None:
    rig = Rig()
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    task_id = rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)))
    rig.run(2)
    rig.poisoned.add("expire_lease")
    rig.run(30)  # never renewed: expires after 6 s, then fails at 1, 2, 4, 8 s...
    assert 3 <= rig.count("expire_lease") <= 6, rig.count("expire_lease")
    assert len(rig.core.leases) == 1  # kept (it was forgotten: the execution stayed running for good)
    rig.poisoned.clear()
    rig.run(INTERNAL_RETRY_MAX_MS / 1000)
    with rig.kv.read() as txn:
        (ex,) = sm.list_executions(txn, task_id)[0]
    # Expired at last (as unstarted here: its offer never reached a stream), and granted again.
    assert ex.attempts[0].error.startswith("lease expired")
    assert ex.regrants >= 1


def test_a_failing_result_is_neither_acknowledged_nor_released() -> None:
    rig = Rig()
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    rig.create(common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 1_000)))
    rig.run(2)
    (lease,) = rig.core.leases.values()
    rig.poisoned.add("complete")
    rig.core.drain_outgoing()
    result = common_pb2.AttemptResult(
        execution_id=lease.execution_id,
        token=common_pb2.FencingToken(term=lease.token[0], index=lease.token[1]),
        outcome=common_pb2.ATTEMPT_SUCCEEDED,
    )
    cmds = rig.core.results("w1", [result], rig.now)
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert lease.execution_id in rig.core.leases
    assert not [m for _, m in rig.core.drain_outgoing() if m.WhichOneof("kind") == "acks"]
    # The worker sends it again later (a new try), which applies once the handler is fixed.
    rig.poisoned.clear()
    cmds = rig.core.results("w1", [result], rig.now)
    assert cmds
    rig.core.on_committed(cmds, rig.apply(cmds), rig.now, rig.mono)
    assert lease.execution_id not in rig.core.leases


def test_a_waiting_reason_names_its_instant_in_utc_not_in_raw_milliseconds() -> None:
    """`schedctl task explain` and `execution get` show this text: it read "retry backoff until
    1796684684278" (a new user's walkthrough)."""
    rig = Rig()
    task = common_pb2.Task(task_id="t", spec=common_pb2.TaskSpec(queue="default"))
    retry = common_pb2.Execution(attempt=1, not_before_ms=T0 + 1_500)
    first = common_pb2.Execution(attempt=0, not_before_ms=T0 + 2_000)
    why = rig.core._why_waiting_for_worker
    assert why("default", retry, task, T0) == "retry backoff until 2026-01-01T00:00:01.500Z"
    assert why("default", first, task, T0) == "due at 2026-01-01T00:00:02Z"
