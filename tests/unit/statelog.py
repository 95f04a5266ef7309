"""A state machine fed command by command, and builders of the commands that make executions end: shared
by the tests of statistics (test_stats.py), search (test_search.py) and results (test_results.py)."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import KV, MemKV
from cronraft.raft.state import StateMachine

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
Command = commands_pb2.Command


class Log:
    def __init__(self, kv: KV | None = None) -> None:
        self.sm = StateMachine(kv or MemKV())
        self.index = 0

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def one(self, cmd: Command) -> commands_pb2.CommandResult:
        (res,) = self.apply(cmd)
        return res

    def ok(self, cmd: Command) -> commands_pb2.CommandResult:
        res = self.one(cmd)
        assert res.applied, res.error
        return res


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def eid(n: int, at: int = T0) -> str:
    return make_id(at, (1_000_000 + n).to_bytes(10, "big"))


def spec(name: str = "t", **kw: object) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 0 1 1 *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    for k, v in kw.items():
        if isinstance(v, dict):
            getattr(s, k).update(v)
        elif isinstance(v, common_pb2.Schedule | common_pb2.RetryPolicy | common_pb2.Retention):
            getattr(s, k).CopyFrom(v)
        else:
            setattr(s, k, v)
    return s


def epoch() -> Command:
    return Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))


def create(task: str, s: common_pb2.TaskSpec, at: int = T0) -> Command:
    return Command(stamped_at_ms=at, create_task=commands_pb2.CreateTask(task_id=task, spec=s))


def trigger(task: str, execution: str, at: int) -> Command:
    return Command(
        stamped_at_ms=at, trigger_task=commands_pb2.TriggerTask(task_id=task, execution_id=execution)
    )


def grant(execution: str, at: int, worker: str = "w1") -> Command:
    return Command(
        stamped_at_ms=at,
        grant=commands_pb2.Grant(execution_id=execution, worker_id=worker, lease_ttl_ms=1000),
    )


def complete(
    execution: str,
    token: common_pb2.FencingToken,
    at: int,
    outcome: int = common_pb2.ATTEMPT_SUCCEEDED,
    *,
    started: int = 0,
    finished: int = 0,
    result: bytes = b"",
) -> Command:
    r = common_pb2.AttemptResult(
        execution_id=execution,
        token=token,
        outcome=common_pb2.AttemptOutcome.ValueType(outcome),
        exit_code=0 if outcome == common_pb2.ATTEMPT_SUCCEEDED else 3,
        started_at_ms=started,
        finished_at_ms=finished,
        result=result,
    )
    return Command(
        stamped_at_ms=at, complete=commands_pb2.Complete(execution_id=execution, token=token, result=r)
    )


def run(
    log: Log,
    task: str,
    execution: str,
    at: int,
    *,
    outcome: int = common_pb2.ATTEMPT_SUCCEEDED,
    duration: int = 10,
    worker: str = "w1",
    result: bytes = b"",
) -> common_pb2.CommandResult:
    """Trigger, grant and complete one execution of `task` at `at` that ran `duration` ms."""
    log.ok(trigger(task, execution, at))
    g = log.ok(grant(execution, at + 1, worker))
    return log.ok(
        complete(
            execution,
            g.execution.token,
            at + 2 + duration,
            outcome,
            started=at + 2,
            finished=at + 2 + duration,
            result=result,
        )
    )
