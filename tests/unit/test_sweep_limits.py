"""The sweep makes each distinct set of a task's own retention limits once (retention._limits, `made`):
every task still gets its own limits, and the cluster's defaults where it sets none."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import retention
from tests.unit.test_retention import T0, Log, create, eid, epoch, executions_of, prune, run, spec, tid


def test_each_task_is_trimmed_to_its_own_count_in_one_sweep() -> None:
    log = Log()
    log.one(epoch())
    keeps = {1: 2, 2: 3, 3: 2, 4: 0}  # task 4 sets none: the defaults' count (4)
    for t, keep in keeps.items():
        log.one(create(tid(t), spec(retention=common_pb2.Retention(keep_executions=keep))))
    for n in range(6):
        for t in keeps:
            run(log, tid(t), eid(10 * t + n), T0 + 1000 * (n + 1) + t)
    res = log.one(prune(T0 + 10_000, keep_executions=4))
    assert res.pruned.visited == 4
    assert {t: len(executions_of(log, tid(t))) for t in keeps} == {1: 2, 2: 3, 3: 2, 4: 4}


def test_limits_made_once_are_shared_and_the_defaults_kept_apart() -> None:
    defaults = retention._defaults(commands_pb2.RetentionPolicy(keep_executions=4, execution_max_age_ms=9))
    made: dict[tuple[int, int, int], retention.Limits] = {}
    a = common_pb2.Task(spec=spec(retention=common_pb2.Retention(keep_executions=2)))
    b = common_pb2.Task(spec=spec(retention=common_pb2.Retention(keep_executions=2)))
    c = common_pb2.Task(spec=spec(retention=common_pb2.Retention(keep_executions=-1)))
    la, lb, lc = (retention._limits(t, defaults, made) for t in (a, b, c))
    assert la is lb and la == retention.Limits(2, 9, 0)
    assert lc == retention.Limits(0, 9, 0)  # -1: no count at all
    assert retention._limits(common_pb2.Task(spec=spec()), defaults, made) is defaults
    assert retention.limits(a, commands_pb2.RetentionPolicy(keep_executions=4, execution_max_age_ms=9)) == la
