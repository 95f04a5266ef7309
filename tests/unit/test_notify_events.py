"""Which notification events a committed batch produces."""

from __future__ import annotations

from cronraft.daemon.notify_events import notification_events
from cronraft.proto.v1 import commands_pb2, common_pb2

Command = commands_pb2.Command


def _ex(eid: str, state: int) -> common_pb2.Execution:
    return common_pb2.Execution(execution_id=eid, task_id="T", state=state)


def test_final_failures_timeouts_dead_letters_and_missed_times() -> None:
    complete = Command(complete=commands_pb2.Complete(execution_id="a"))
    retried = Command(complete=commands_pb2.Complete(execution_id="b"))
    fire = Command(fire=commands_pb2.Fire(task_id="T"))
    rejected = Command(complete=commands_pb2.Complete(execution_id="c"))
    results = [
        commands_pb2.CommandResult(
            applied=True,
            executions=[_ex("a", common_pb2.EXECUTION_FAILED)],
            dead_letters=[common_pb2.DeadLetter(execution_id="a", task_id="T")],
        ),
        commands_pb2.CommandResult(applied=True, executions=[_ex("b", common_pb2.EXECUTION_PENDING)]),
        commands_pb2.CommandResult(
            applied=True,
            missed=[common_pb2.FireRecord(task_id="T", nominal_time_ms=n) for n in (1, 2)],
        ),
        commands_pb2.CommandResult(applied=False, executions=[_ex("c", common_pb2.EXECUTION_TIMED_OUT)]),
    ]
    events = list(notification_events([complete, retried, fire, rejected], results))
    assert [(e.event, e.execution.execution_id if e.execution else None) for e in events] == [
        (common_pb2.NOTIFY_FAILURE, "a"),
        (common_pb2.NOTIFY_DEAD_LETTER, "a"),
        (common_pb2.NOTIFY_MISSED, None),
    ]
    assert [r.nominal_time_ms for r in events[2].records] == [1, 2]
