"""A Fire's checks that its fire is new (I3: `fires`) and its execution id unused (`execs`) are deferred, in
an entry applied without savepoints, to the writes that insert those records (raft.commands.fires._NewFire):
no store call reads them first. A fire that fails them must be refused exactly as when they came first:
each scenario below is applied as usual and, on a second store, with savepoints (raft.state's second
pass, where the checks come first, as they always did), and both must store and answer the same."""

from __future__ import annotations

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch
from cronraft.raft.kv import MemKV
from tests.unit.test_apply_calls import CountedKV
from tests.unit.test_retention import T0, Command, Log, create, eid, epoch, run, spec, task_of, tid

MINUTE = 60_000
Fire = commands_pb2.Fire


class _Guarded(Log):
    """A log whose every entry is applied with savepoints (the pass that checks before it writes)."""

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        self.index += 1
        (raw,) = self.sm._apply_entries([(self.index, encode_batch(cmds))], frozenset(), guarded=True)
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)


def _minutely(**kw: object) -> common_pb2.TaskSpec:
    s = spec(**kw)
    s.schedule.cron.expression = "* * * * *"
    return s


def _fire(task: str, nominal: int, execution: str, at: int, **kw: object) -> Command:
    return Command(
        stamped_at_ms=at, fire=Fire(task_id=task, nominal_time_ms=nominal, execution_id=execution, **kw)
    )  # type: ignore[arg-type]


def _both(*entries: list[Command]) -> list[list[commands_pb2.CommandResult]]:
    """Apply `entries` to a usual log and to a guarded one: the same results and the same store, or fail.
    Returns the usual log's results."""
    usual, guarded = Log(MemKV()), _Guarded(MemKV())
    out = []
    for cmds in entries:
        got, want = usual.apply(*cmds), guarded.apply(*cmds)
        assert got == want
        out.append(got)
    assert usual.dump() == guarded.dump()
    return out


def _setup(s: common_pb2.TaskSpec) -> list[list[Command]]:
    """The epoch, task 1 (`s`) and task 2, both created at CREATED (task 2 fires every minute)."""
    return [[epoch()], [create(tid(1), s, CREATED)], [create(tid(2), _minutely(), CREATED)]]


CREATED = T0 - 30_000
NEXT = T0  # the first nominal time of a task created at CREATED that fires every minute


def test_a_fire_reads_neither_its_fire_nor_its_execution_id_before_writing_them() -> None:
    kv = CountedKV()
    log = Log(kv)
    log.one(epoch())
    log.one(create(tid(1), _minutely(), CREATED))
    kv.calls.clear()
    res = log.one(_fire(tid(1), NEXT, eid(1), NEXT))
    assert res.HasField("execution"), res.error
    assert kv.calls["get", "fires"] == 0
    assert kv.calls["get", "execs"] == 0


@pytest.mark.parametrize("at", [NEXT, NEXT - 1000], ids=["due", "not-due"])
def test_an_execution_id_in_use_is_refused_already_exists(at: int) -> None:
    """eid(0) is task 2's: a Fire of task 1 naming it is refused (before not_due, when it is not due
    yet), leaving nothing written."""
    (*_, done, refused, after) = _both(
        *_setup(_minutely()),
        [_fire(tid(2), NEXT, eid(0), NEXT)],
        [_fire(tid(1), NEXT, eid(0), at)],
        [_fire(tid(1), NEXT, eid(1), NEXT)],
    )
    assert done[0].HasField("execution")
    assert refused[0].error_code == "already_exists"
    assert after[0].execution.execution_id == eid(1)


@pytest.mark.parametrize("at", [NEXT, NEXT - 1000], ids=["due", "not-due"])
def test_a_nominal_time_a_trigger_fired_is_refused_already_fired(at: int) -> None:
    """A trigger at the very instant of the next nominal time fires it: the scheduled Fire of that time
    is refused already_fired (before not_due), in an entry with other commands that are applied."""
    (*_, _trig, (ok1, refused, ok2)) = _both(
        *_setup(_minutely()),
        [
            Command(
                stamped_at_ms=NEXT,
                trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=eid(9)),
            )
        ],
        [
            _fire(tid(2), NEXT, eid(1), NEXT),
            _fire(tid(1), NEXT, eid(2), at),
            _fire(tid(2), NEXT, eid(3), NEXT),  # not due any more: eid(1) fired it
        ],
    )
    assert ok1.HasField("execution")
    assert refused.error_code == "already_fired"
    assert ok2.error_code == "not_due"


@pytest.mark.parametrize(
    "overlap",
    [common_pb2.OVERLAP_SKIP, common_pb2.OVERLAP_CANCEL_OTHER, common_pb2.OVERLAP_TERMINATE_OTHER],
    ids=["skip", "cancel_other", "terminate_other"],
)
def test_a_fire_reusing_an_id_beside_an_active_execution_is_refused_as_before(overlap: int) -> None:
    """Task 1's active execution eid(0) and a Fire naming it again: refused already_exists, whether the
    overlap policy would skip the new fire (a ledger record) or end the active one (writes before the new
    execution's), with nothing written; a Fire with a new id then fires."""
    s = _minutely(overlap=overlap)
    trig = Command(
        stamped_at_ms=CREATED + 1000,
        trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=eid(0)),
    )
    (*_, refused, fired) = _both(
        *_setup(s),
        [trig],
        [
            Command(
                stamped_at_ms=CREATED + 2000, grant=commands_pb2.Grant(execution_id=eid(0), worker_id="w1")
            )
        ],
        [_fire(tid(1), NEXT, eid(0), NEXT)],
        [_fire(tid(1), NEXT, eid(1), NEXT)],
    )
    assert refused[0].error_code == "already_exists"
    assert fired[0].applied and not fired[0].error_code


def test_a_late_fire_reusing_an_id_is_refused_before_its_missed_times_are_recorded() -> None:
    """Fired minutes late (misfire skip): the missed times would be recorded first; an id in use is
    refused before any, as a granted fire (Fire.grant) reusing one is."""
    (*_, late, granted, ok) = _both(
        *_setup(_minutely(misfire=common_pb2.MISFIRE_SKIP)),
        [_fire(tid(2), NEXT, eid(0), NEXT)],
        [_fire(tid(1), NEXT, eid(0), NEXT + 10 * MINUTE)],
        [_fire(tid(1), NEXT, eid(0), NEXT, grant=commands_pb2.Grant(worker_id="w1"))],
        [_fire(tid(1), NEXT, eid(1), NEXT, grant=commands_pb2.Grant(worker_id="w1"))],
    )
    assert late[0].error_code == "already_exists"
    assert granted[0].error_code == "already_exists"
    assert ok[0].execution.state == common_pb2.EXECUTION_RUNNING


def test_fires_and_completes_store_and_answer_as_with_the_checks_first() -> None:
    """Ten minutes of fires, grants and completes of two tasks, one keeping 3 executions: the usual pass
    (checks deferred) and the checking one store the same."""
    usual, guarded = Log(MemKV()), _Guarded(MemKV())
    for log in (usual, guarded):
        log.one(epoch())
        log.one(create(tid(1), _minutely(retention=common_pb2.Retention(keep_executions=3)), CREATED))
        for n in range(10):
            nxt = task_of(log, tid(1))
            assert nxt is not None
            res = log.one(_fire(tid(1), nxt.next_fire_ms, eid(n), nxt.next_fire_ms))
            assert res.HasField("execution"), res.error
            run(log, tid(1), eid(100 + n), nxt.next_fire_ms + 10)
    assert usual.dump() == guarded.dump()
