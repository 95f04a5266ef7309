"""A write retried with its request id is recorded in the audit trail with the ids it was answered with.

The leader gives each create, import batch and trigger fresh ids (a task id, a first task id, an execution
id) in its command; a retry with the same request id is answered from the dedup table with the first
attempt's ids, and its command's own ids name nothing. The retry's record named those: `schedctl audit
list --target <the task id the caller got>` showed the first attempt only, and the retry's record named a
task that never existed (seen on 3 real nodes: tests/integration/test_request_scope_real.py). Under the
cluster feature schedule_fixes the record names the answer's ids (raft.audit_trail.answered_targets);
below it, the command's, as the release before it stores."""

from __future__ import annotations

import pytest
from test_audit_trail import T0, Log, spec, tid

from cronraft.proto.v1 import audit_pb2, commands_pb2
from cronraft.raft import features

Command = commands_pb2.Command
WHO = audit_pb2.AuditMeta(principal="alice", peer="ipv4:10.0.0.7:5000", method="M")


def _log(fixes: bool) -> Log:
    fresh = features.SUPPORTED if fixes else features.SUPPORTED - {features.SCHEDULE_FIXES}
    log = Log(fresh_features=fresh)
    log.apply(Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")))
    return log


def _create(n: int) -> Command:
    return Command(
        request_id="create:c-1",
        stamped_at_ms=T0 + n,
        audit=WHO,
        create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec()),
    )


def _import(n: int) -> Command:
    body = commands_pb2.ImportTasks(first_task_id=tid(n), specs=[spec("a"), spec("b")])
    return Command(request_id="import:i-1", stamped_at_ms=T0 + n, audit=WHO, import_tasks=body)


def _trigger(n: int) -> Command:
    body = commands_pb2.TriggerTask(task_id=tid(1), execution_id=tid(100 + n))
    return Command(request_id="trigger:t-1", stamped_at_ms=T0 + 10 + n, audit=WHO, trigger_task=body)


@pytest.mark.parametrize("fixes", [True, False])
def test_a_retried_create_import_and_trigger_are_recorded_with_their_answers_ids(fixes: bool) -> None:
    log = _log(fixes)
    (first,) = log.apply(_create(1))
    (again,) = log.apply(_create(2))  # the retry: a fresh task id, answered from the dedup table
    assert again.task.task_id == first.task.task_id == tid(1)
    (imported,) = log.apply(_import(3))
    log.apply(_import(5))
    assert imported.imported.first_task_id == tid(3)
    (fired,) = log.apply(_trigger(1))
    log.apply(_trigger(2))
    got = [list(r.target_ids) for r in log.records()]
    if fixes:  # each retry names what it was answered with
        triggered = [tid(1), fired.execution.execution_id]
        assert got == [[tid(1)], [tid(1)], [tid(3)], [tid(3)], triggered, triggered]
    else:  # the previous release's records: the retry's own ids, which name nothing
        assert got == [[tid(1)], [tid(2)], [tid(3)], [tid(5)], [tid(1), tid(101)], [tid(1), tid(102)]]


def test_a_refused_command_keeps_the_ids_it_carried() -> None:
    """No answer to take an id from (a refusal): the command's own ids, as before."""
    log = _log(True)
    log.apply(_create(1))
    missing = Command(
        request_id="trigger:t-9",
        stamped_at_ms=T0 + 20,
        audit=WHO,
        trigger_task=commands_pb2.TriggerTask(task_id=tid(7), execution_id=tid(200)),
    )
    (res,) = log.apply(missing)
    assert res.error_code == "not_found"
    assert list(log.records()[-1].target_ids) == [tid(7), tid(200)]
