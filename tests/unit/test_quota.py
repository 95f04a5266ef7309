"""Quotas (issue 11, raft.quota): the limits travel in the command and apply enforces them, with counts
kept in the replicated state; a client's command over one is refused (RESOURCE_EXHAUSTED, naming the
limit and how to raise it) and changes nothing; a scheduled fire over a task's quota creates no execution,
is recorded `skipped_limit`, and the schedule goes on. The same through the real API with real processes:
tests/integration/test_limits.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.daemon.config import LimitsConfig, config_from_dict, default_config
from cronraft.errors import ConfigError
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import quota
from cronraft.raft import state as sm
from cronraft.raft.codec import encode_batch, id_bytes, make_id
from cronraft.raft.kv import KV, MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Command = commands_pb2.Command
Limits = commands_pb2.Limits


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


class Cluster:
    """One state machine and a log index."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.sm = StateMachine(kv)
        self.index = 0

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def one(self, cmd: Command) -> commands_pb2.CommandResult:
        (res,) = self.apply(cmd)
        return res


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def spec(n: int, cron: str = "* * * * *") -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name=f"t{n}",
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=cron)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        guarantee=common_pb2.AT_LEAST_ONCE,
        max_attempts=1,
    )


def create(n: int, limits: Limits | None = None) -> Command:
    return Command(
        stamped_at_ms=T0, limits=limits, create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec(n))
    )


def refused(res: commands_pb2.CommandResult, key: str) -> None:
    assert (res.applied, res.error_code) == (False, "resource_exhausted"), res
    assert res.error.startswith(f"limits.{key}: ")
    assert f"Raise {key} in the [limits] table of every node's config" in res.error


def test_max_tasks_refuses_creates_and_imports_past_it(kv: KV) -> None:
    c = Cluster(kv)
    lim = Limits(max_tasks=3)
    assert all(c.one(create(n, lim)).applied for n in range(3))
    res = c.one(create(3, lim))
    refused(res, "max_tasks")
    assert "the cluster stores 3 tasks; the limit is 3" in res.error
    imp = Command(
        stamped_at_ms=T0,
        limits=Limits(max_tasks=4),
        import_tasks=commands_pb2.ImportTasks(first_task_id=tid(10), specs=[spec(10), spec(11)]),
    )
    res = c.one(imp)
    refused(res, "max_tasks")
    assert "and this request adds 2" in res.error
    with kv.read() as txn:
        assert txn.count("tasks") == 3  # nothing changed
    # An entry without limits (written before quotas, or by a leader without them) is not limited.
    assert c.one(create(3)).applied


def test_max_calendars_counts_new_calendars_only(kv: KV) -> None:
    c = Cluster(kv)
    lim = Limits(max_calendars=1)

    def put(name: str) -> Command:
        cal = common_pb2.Calendar(name=name)
        cal.exclude.add().weekdays.days.append(6)
        return Command(stamped_at_ms=T0, limits=lim, put_calendar=commands_pb2.PutCalendar(calendar=cal))

    assert c.one(put("a")).applied
    assert c.one(put("a")).applied  # replacing it adds none
    refused(c.one(put("b")), "max_calendars")


def fire(c: Cluster, task_id: str, limits: Limits | None, n: int) -> commands_pb2.CommandResult:
    with c.kv.read() as txn:
        task = sm.read_task(txn, task_id)
    assert task is not None
    return c.one(
        Command(
            stamped_at_ms=max(T0, task.next_fire_ms),
            limits=limits,
            fire=commands_pb2.Fire(
                task_id=task_id, nominal_time_ms=task.next_fire_ms, execution_id=tid(100 + n)
            ),
        )
    )


def test_a_fire_over_max_pending_per_task_is_recorded_skipped_and_the_schedule_goes_on(kv: KV) -> None:
    c = Cluster(kv)
    assert c.one(create(1)).applied
    lim = Limits(max_pending_per_task=2)
    results = [fire(c, tid(1), lim, n) for n in range(4)]
    assert all(r.applied for r in results)
    assert [r.HasField("execution") for r in results] == [True, True, False, False]
    with kv.read() as txn:
        assert quota.active_count(txn, tid(1)) == 2
        task = sm.read_task(txn, tid(1))
        assert task is not None and task.fire_count == 2 and task.stored_executions == 2
        records = sm.ledger(txn, tid(1), 0, 1 << 62, 10)
    assert [r.outcome for r in records] == [common_pb2.FIRED] * 2 + [common_pb2.SKIPPED_LIMIT] * 2
    assert records[2].reason.startswith(f"limits.max_pending_per_task: task {tid(1)} has 2 executions")
    assert task.next_fire_ms == records[3].nominal_time_ms + 60_000  # the schedule went on

    # Ending one makes room: the count follows the active index.
    ended = results[0].execution
    assert c.one(
        Command(
            stamped_at_ms=T0 + 10**6,
            cancel_execution=commands_pb2.CancelExecution(execution_id=ended.execution_id),
        )
    ).applied
    with kv.read() as txn:
        assert quota.active_count(txn, tid(1)) == 1
    assert fire(c, tid(1), lim, 9).HasField("execution")


def test_trigger_and_backfill_over_a_quota_are_refused(kv: KV) -> None:
    c = Cluster(kv)
    assert c.one(create(1)).applied
    lim = Limits(max_pending_per_task=1)
    trigger = Command(
        stamped_at_ms=T0 + 5,
        limits=lim,
        trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=tid(50)),
    )
    assert c.one(trigger).applied
    trigger.stamped_at_ms += 1
    trigger.trigger_task.execution_id = tid(51)
    refused(c.one(trigger), "max_pending_per_task")
    backfill = Command(
        stamped_at_ms=T0 + 600_000,
        limits=Limits(max_pending_per_task=3),
        backfill_task=commands_pb2.BackfillTask(
            task_id=tid(1), from_ms=T0 + 1, to_ms=T0 + 599_000, max_fires=10
        ),
    )
    res = c.one(backfill)
    assert res.applied
    with kv.read() as txn:
        assert quota.active_count(txn, tid(1)) == 3  # stopped at the quota; the rest has no outcome yet
        task = sm.read_task(txn, tid(1))
        assert task is not None
    refused(c.one(backfill), "max_pending_per_task")
    assert task.stored_executions == 3


def test_max_executions_per_task_reads_stored_executions(kv: KV) -> None:
    c = Cluster(kv)
    assert c.one(create(1)).applied
    lim = Limits(max_executions_per_task=2)
    results = [fire(c, tid(1), lim, n) for n in range(3)]
    assert [r.HasField("execution") for r in results] == [True, True, False]
    with kv.read() as txn:
        (last,) = [r for r in sm.ledger(txn, tid(1), 0, 1 << 62, 10) if r.outcome == common_pb2.SKIPPED_LIMIT]
    assert last.reason.startswith(f"limits.max_executions_per_task: task {tid(1)} stores 2 executions")


def test_the_pending_count_is_the_same_on_both_stores_and_drops_to_no_key(tmp_path: Path) -> None:
    stores: list[KV] = [MemKV(), LmdbKV(tmp_path / "db", map_size=64 << 20)]
    for kv in stores:
        c = Cluster(kv)
        assert c.one(create(1)).applied
        fired = [fire(c, tid(1), None, n).execution for n in range(3)]
        for n, ex in enumerate(fired):
            cancel = commands_pb2.CancelExecution(execution_id=ex.execution_id)
            assert c.one(Command(stamped_at_ms=T0 + 10**6 + n, cancel_execution=cancel)).applied
        with kv.read() as txn:
            assert txn.get("meta", quota.ACTIVE_PREFIX + id_bytes(tid(1))) is None
        kv.close()


def test_limits_config() -> None:
    assert default_config().limits == LimitsConfig()
    base = {
        "cluster": {"members": [{"id": "n", "grpc_address": "127.0.0.1:1", "raft_address": "127.0.0.1:2"}]},
        "node": {"id": "n"},
    }
    cfg = config_from_dict({**base, "limits": {"max_tasks": 5, "max_calendars": 2}}, "t.toml")
    assert (cfg.limits.max_tasks, cfg.limits.max_calendars) == (5, 2)
    with pytest.raises(ConfigError, match=r"limits\.max_pending_per_task: 0 is too small"):
        config_from_dict({**base, "limits": {"max_pending_per_task": 0}}, "t.toml")
    with pytest.raises(ConfigError, match=r"limits\.max_task: unknown key \(did you mean limits\.max_tasks"):
        config_from_dict({**base, "limits": {"max_task": 1}}, "t.toml")


def test_the_leaders_check_raises_resource_exhausted(kv: KV) -> None:
    """What the leader raises before it proposes (the servicer answers `grpc_code`): RESOURCE_EXHAUSTED,
    compiled or not (compiled, a class attribute of raft.quota's own subclass read INTERNAL)."""
    with kv.write() as txn:
        txn.put("tasks", b"t" * 16, b"")
        with pytest.raises(quota.QuotaExceeded) as refused:
            quota.check_tasks(txn, commands_pb2.Limits(max_tasks=1))
    assert refused.value.grpc_code == "RESOURCE_EXHAUSTED" and "limits.max_tasks" in str(refused.value)
