"""The start deadline (`start_deadline_ms`) in the leader's waiting check (daemon.leader.pending): an
execution that could not start within the deadline of its fire is expired (ExpirePending); one whose
attempt began already is past it, and waits for its retry (its backoff, or a re-grant after its lease
expired) as its retry policy says.

Found with real processes (tests/integration/test_run_semantics.py): a task with a 1 s start deadline
and a 2 s retry backoff ran its first attempt at once, failed, and ended `expired` ("not started within
1000 ms of its fire: retry backoff until ...") instead of retrying: the retry never ran, no dead letter."""

from __future__ import annotations

from test_state import T0, Log, create, epoch, fire, grant, spec, tid

from cronraft.daemon.leader.pending import PendingQueue, waiting_commands
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm

Command = commands_pb2.Command
DEADLINE_MS = 1_000


def _at_once() -> common_pb2.Schedule:
    return common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 10))


def _log_with_task(retry: common_pb2.RetryPolicy | None = None, **kw: object) -> Log:
    log = Log()
    log.apply(epoch(1))
    s = spec(_at_once(), start_deadline_ms=DEADLINE_MS, **kw)
    if retry is not None:
        s.retry.CopyFrom(retry)
    (c,) = log.apply(create(tid(1), s))
    assert c.applied, c.error
    (f,) = log.apply(fire(tid(1), T0 + 10, tid(100), at=T0 + 10))
    assert f.applied and f.execution.state == common_pb2.EXECUTION_PENDING, f
    return log


def _check(log: Log, now_ms: int) -> list[Command]:
    pending = PendingQueue()
    pending.add("default", tid(100), 1, T0 + 10)
    with log.sm.kv.read() as txn:
        return waiting_commands(pending, txn, lambda *_: "waiting for dispatch", now_ms, 100)


def _kinds(cmds: list[Command]) -> list[str]:
    return [str(c.WhichOneof("body")) for c in cmds]


def test_an_execution_that_never_started_expires_at_its_start_deadline() -> None:
    log = _log_with_task()
    assert "expire_pending" not in _kinds(_check(log, T0 + 10 + DEADLINE_MS - 1))
    (x,) = _check(log, T0 + 10 + DEADLINE_MS)
    assert x.WhichOneof("body") == "expire_pending" and x.expire_pending.execution_id == tid(100)


def test_an_execution_waiting_for_its_retry_is_past_its_start_deadline() -> None:
    retry = common_pb2.RetryPolicy(initial_backoff_ms=5_000)
    log = _log_with_task(retry=retry, max_attempts=2)
    (g,) = log.apply(grant(tid(100)))
    failed = Command(
        stamped_at_ms=T0 + 20,
        complete=commands_pb2.Complete(
            execution_id=tid(100),
            token=g.execution.token,
            result=common_pb2.AttemptResult(
                outcome=common_pb2.ATTEMPT_FAILED, exit_code=1, started_at_ms=T0 + 11, finished_at_ms=T0 + 19
            ),
        ),
    )
    (r,) = log.apply(failed)
    assert r.execution.state == common_pb2.EXECUTION_PENDING and r.execution.not_before_ms > T0 + 4_000
    # Long past the deadline, during the backoff: no expiry (the retry is its policy's to decide).
    cmds = _check(log, T0 + 10 + 3 * DEADLINE_MS)
    assert "expire_pending" not in _kinds(cmds), cmds
    with log.sm.kv.read() as txn:
        ex = sm.read_execution(txn, tid(100))
    assert ex is not None and ex.state == common_pb2.EXECUTION_PENDING and ex.attempt == 1


def test_an_execution_whose_started_lease_expired_is_past_its_start_deadline() -> None:
    log = _log_with_task(max_attempts=3)
    (g,) = log.apply(grant(tid(100)))
    (r,) = log.apply(
        Command(
            stamped_at_ms=T0 + 5_000,
            expire_lease=commands_pb2.ExpireLease(execution_id=tid(100), token=g.execution.token),
        )
    )
    assert r.execution.state == common_pb2.EXECUTION_PENDING and r.execution.attempt == 1, r
    assert "expire_pending" not in _kinds(_check(log, T0 + 5_000))
