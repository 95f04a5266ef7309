"""The bulk API: the ImportTasks command (all or nothing, ids, dedup), the leader-side BulkImport (per-batch
validation naming position and field, pipelining), the SDK batching and the JSON spec reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cronraft.client import _bulk, at, command, cron, every
from cronraft.client._render import spec_to_json
from cronraft.client._spec_json import spec_from_json, task_spec_from_json_line
from cronraft.daemon.bulk import BulkImport
from cronraft.daemon.config import SchedulerConfig
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.services.common import _recorded, _request_id
from cronraft.daemon.services.tasks import _stamp_defaults
from cronraft.errors import InvalidArgument, ResourceExhausted
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import encode_batch, id_bytes, id_text, make_id
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.kv import MemKV
from cronraft.raft.memreplicator import MemReplicator
from cronraft.raft.state import StateMachine
from tests.support.clock import FakeClock

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FIRST = make_id(T0, b"\x00" * 9 + b"\xfe")  # the batch's ids cross a byte boundary


def spec(name: str = "t", **kw: Any) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 3_600_000)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    for k, v in kw.items():
        if isinstance(v, common_pb2.Payload):
            getattr(s, k).CopyFrom(v)
        else:
            setattr(s, k, v)
    return s


def import_cmd(specs: list[common_pb2.TaskSpec], rid: str = "", first: str = FIRST, **kw: Any) -> Any:
    return commands_pb2.Command(
        request_id=rid,
        stamped_at_ms=T0,
        import_tasks=commands_pb2.ImportTasks(first_task_id=first, specs=specs, **kw),
    )


class Log:
    def __init__(self) -> None:
        self.sm = StateMachine(MemKV())
        self.index = 0

    def apply(self, cmd: commands_pb2.Command) -> commands_pb2.CommandResult:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch([cmd]))
        assert raw is not None
        return commands_pb2.BatchResult.FromString(raw).results[0]

    def tasks(self) -> list[common_pb2.Task]:
        with self.sm.kv.read() as txn:
            return sm.list_tasks(txn, page_size=1000)[0]


def ids_from(first: str, n: int) -> list[str]:
    base = int.from_bytes(id_bytes(first), "big")
    return [id_text((base + i).to_bytes(16, "big")) for i in range(n)]


# ---------------------------------------------------------------------------------------- the command


def test_one_entry_creates_every_task_with_consecutive_ids() -> None:
    log = Log()
    res = log.apply(import_cmd([spec(f"t{i}") for i in range(5)], rid="import:a-0"))
    assert res.applied and res.imported.count == 5 and res.imported.first_task_id == FIRST
    tasks = log.tasks()
    assert [t.task_id for t in tasks] == ids_from(FIRST, 5)
    assert [t.spec.name for t in tasks] == [f"t{i}" for i in range(5)]
    assert all(t.state == common_pb2.TASK_SCHEDULED and t.version == 1 for t in tasks)
    assert _bulk.batch_ids(FIRST, 5) == ids_from(FIRST, 5)  # the SDK computes the same ids
    with log.sm.kv.read() as txn:  # the due index holds them (the leader loads them into its wheel)
        assert len(sm.due_tasks(txn, T0 + 3_600_000)) == 5


def test_a_retried_batch_is_answered_from_the_dedup_table() -> None:
    log = Log()
    first = log.apply(import_cmd([spec(), spec()], rid="import:x-0"))
    again = log.apply(import_cmd([spec(), spec()], rid="import:x-0", first=make_id(T0 + 5, b"\x07" * 10)))
    assert again.imported.first_task_id == first.imported.first_task_id == FIRST
    assert len(log.tasks()) == 2


def test_a_bad_item_rejects_the_whole_batch_naming_its_position_and_field() -> None:
    log = Log()
    bad = spec("bad")
    bad.schedule.ClearField("at")
    res = log.apply(import_cmd([spec(), spec(), bad, spec()]))
    assert not res.applied and res.error_code == "invalid_argument"
    assert res.error.startswith("specs[2].schedule")
    assert log.tasks() == []


def test_an_unknown_calendar_in_one_item_creates_nothing() -> None:
    log = Log()
    s = spec()
    s.schedule.calendars.append("holidays")
    res = log.apply(import_cmd([spec(), s]))
    assert not res.applied
    assert res.error == "specs[1].schedule.calendars[0]: no calendar named 'holidays'"
    assert log.tasks() == []


def test_an_existing_id_rejects_the_batch() -> None:
    log = Log()
    log.apply(import_cmd([spec()]))
    res = log.apply(import_cmd([spec(), spec()]))
    assert not res.applied and res.error_code == "already_exists" and res.error.startswith("specs[0]: ")
    assert len(log.tasks()) == 1


@pytest.mark.parametrize("n", [0, 1001])
def test_batch_size_is_bounded(n: int) -> None:
    res = Log().apply(import_cmd([spec()] * n))
    assert not res.applied and res.error.startswith("specs: ")


def test_tasks_due_before_the_reported_horizon_come_back_for_the_wheel() -> None:
    soon = spec("soon")
    soon.schedule.at.at_ms = T0 + 1_000
    res = Log().apply(import_cmd([spec("later"), soon], report_due_until_ms=T0 + 10_000))
    assert [t.spec.name for t in res.tasks] == ["soon"]


# ------------------------------------------------------------------------------- the leader's BulkImport


class _Runner:
    def __init__(self) -> None:
        self.observed: list[tuple[Any, Any]] = []

    def observe(self, cmds: Any, results: Any) -> None:
        self.observed.append((cmds, results))


@dataclass
class _Config:
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    notifiers: dict[str, object] = field(default_factory=dict)  # [notifiers] (issue 13): none
    webhook_hosts: tuple[str, ...] = ()


class MiniNode:
    """What BulkImport needs of `daemon.node.Node`, over the in-memory replicator."""

    def __init__(self) -> None:
        self.sm = StateMachine(MemKV())
        self.kv = self.sm.kv
        self.replicator = MemReplicator(self.sm.apply_entry)
        self.committer = GroupCommitter(self.replicator)
        self.runner = _Runner()
        self.config = _Config()
        self.clock = FakeClock(wall=T0)
        self.settings = LeaderSettings(horizon_ms=5_000)
        self.limits = commands_pb2.Limits()  # no quota (raft.quota)
        self.proposals = 0

    def leader_runner(self) -> _Runner:
        return self.runner

    async def writer(self) -> _Runner:  # Node.writer: the runner, its epoch applied (here at once)
        return self.leader_runner()

    async def propose(self, cmds: list[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        self.proposals += 1
        results = await self.committer.submit(cmds)
        self.runner.observe(cmds, results)
        return results


async def _requests(*batches: tuple[str, list[common_pb2.TaskSpec]]) -> AsyncIterator[Any]:
    for rid, specs in batches:
        yield scheduler_pb2.ImportTasksRequest(request_id=rid, specs=specs)


async def _run(node: MiniNode, *batches: tuple[str, list[common_pb2.TaskSpec]]) -> Any:
    node.replicator.start()
    node.committer.start()
    try:
        bulk = BulkImport(node, stamp=_stamp_defaults, request_id=_request_id, recorded=_recorded)
        return await bulk.run(_requests(*batches))
    finally:
        await node.committer.close()


def test_bulk_import_creates_each_batch_and_reports_ranges() -> None:
    node = MiniNode()
    resp = asyncio.run(_run(node, *((f"imp-{b}", [spec(f"b{b}-{i}") for i in range(300)]) for b in range(5))))
    assert resp.created == 1500 and resp.replayed == 0
    assert [b.request_id for b in resp.batches] == [f"imp-{b}" for b in range(5)]
    assert all(b.count == 300 and not b.replayed for b in resp.batches)
    with node.kv.read() as txn:
        for b in resp.batches:
            ids = _bulk.batch_ids(b.first_task_id, b.count)
            task = sm.read_task(txn, ids[-1])
            assert task is not None and task.spec.name == f"b{b.request_id[-1]}-299"
            assert task.spec.queue == "default" and task.spec.max_attempts == 3  # defaults stamped
    assert node.proposals == 5

    again = asyncio.run(_run(node, ("imp-4", [spec("b4-x")] * 300)))  # a retried batch
    assert again.created == 0 and again.replayed == 300 and again.batches[0].replayed
    assert again.batches[0].first_task_id == resp.batches[4].first_task_id


def test_bulk_import_rejects_a_bad_batch_before_proposing_it() -> None:
    node = MiniNode()
    bad = spec("")
    with pytest.raises(InvalidArgument) as err:
        asyncio.run(_run(node, ("i-0", [spec()] * 3), ("i-1", [spec(), bad]), ("i-2", [spec()])))
    assert err.value.field == "batches[1].specs[1].name"
    assert "1 batches of this call were created, 3 tasks" in err.value.problem
    with node.kv.read() as txn:
        assert len(sm.list_tasks(txn)[0]) == 3


def test_bulk_import_past_max_tasks_is_refused_with_resource_exhausted() -> None:
    """The quota is checked before a batch is proposed (and again in apply): the batch that would go past
    it is refused whole, naming the limit; the batches before it stay created."""
    node = MiniNode()
    node.limits = commands_pb2.Limits(max_tasks=5)
    with pytest.raises(ResourceExhausted) as err:
        asyncio.run(_run(node, ("q-0", [spec()] * 3), ("q-1", [spec()] * 3)))
    assert "limits.max_tasks: the cluster stores 3 tasks and this request adds 3; the limit is 5" in str(
        err.value
    )
    assert "1 batches of this call were created, 3 tasks" in str(err.value)
    with node.kv.read() as txn:
        assert txn.count("tasks") == 3


def test_bulk_import_refuses_an_oversized_batch() -> None:
    with pytest.raises(InvalidArgument) as err:
        asyncio.run(_run(MiniNode(), ("i-0", [spec()] * 1001)))
    assert err.value.field == "batches[0].specs"


# ---------------------------------------------------------------------------------------- the SDK side


def test_segments_batch_lazily_with_derived_request_ids() -> None:
    specs = (spec(f"s{i}") for i in range(2_350))
    segs = list(_bulk.segments(specs, import_id="imp", batch_size=100, segment_batches=10))
    assert [len(s) for s in segs] == [10, 10, 4]
    assert [r.request_id for r in segs[2]] == [f"imp-{n}" for n in range(20, 24)]
    assert len(segs[2][-1].specs) == 50
    with pytest.raises(InvalidArgument):
        list(_bulk.segments([spec()], import_id="imp", batch_size=1001))


def test_batches_are_also_bounded_in_bytes() -> None:
    big = spec(payload=common_pb2.Payload(shell=common_pb2.ShellPayload(script="x" * 60_000)))
    (seg,) = _bulk.segments([big] * 100, import_id="i")
    assert all(len(r.specs) * 60_000 <= _bulk.MAX_BATCH_BYTES for r in seg) and len(seg) > 1


def _rich_spec() -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name="rich",
        tags={"team": "a", "env": "prod"},
        schedule=cron("0 9 * * 1-5", "Europe/Paris", jitter="30s", calendars=["fr"], dst_gap="skip"),
        payload=common_pb2.Payload(
            http=common_pb2.HttpPayload(
                method="POST", url="https://example.com/x", headers={"A": "b"}, expected_status=[200]
            )
        ),
        queue="q1",
        timeout_ms=60_000,
        guarantee=common_pb2.EXACTLY_ONCE,
        priority=common_pb2.HIGH,
        max_attempts=4,
        misfire=common_pb2.MISFIRE_SKIP,
        catchup_window_ms=5_000,
        max_catchup=7,
        overlap=common_pb2.OVERLAP_BUFFER_ONE,
        retry=common_pb2.RetryPolicy(initial_backoff_ms=100, multiplier=1.5, retryable_exit_codes=[3]),
        notify=[
            common_pb2.NotifyTarget(webhook_url="https://h.example/n", events=[common_pb2.NOTIFY_FAILURE])
        ],
        worker_labels={"gpu": "yes"},
        max_concurrency=2,
        start_deadline_ms=9_000,
        depends_on=[common_pb2.Dependency(task_id=FIRST, window_ms=1_000)],
        dependency_deadline_ms=3_000,
    )
    s.sensor.probe.CopyFrom(command("test", "-f", "/tmp/x"))
    s.sensor.interval_ms = 1_000
    return s


@pytest.mark.parametrize(
    "original",
    [
        _rich_spec(),
        spec(),
        common_pb2.TaskSpec(
            name="h",
            schedule=every("5s", anchor=T0),
            payload=common_pb2.Payload(
                handler=common_pb2.HandlerPayload(name="bench.noop", args_json='{"a":1}')
            ),
        ),
    ],
)
def test_spec_json_round_trips(original: common_pb2.TaskSpec) -> None:
    assert spec_from_json(spec_to_json(original)) == original


def test_an_import_line_is_a_task_object_or_a_bare_spec() -> None:
    line = '{"task_id": "x", "state": "scheduled", "spec": {"name": "a", "schedule": {"kind": "at", "at": "2026-01-01T00:00:01Z"}, "payload": {"kind": "command", "argv": ["true"]}}}'  # noqa: E501
    s = task_spec_from_json_line(line, "line 1")
    assert s.schedule == at(T0 + 1000) and s.payload == command("true")
    bare = '{"name": "b", "schedule": {"kind": "fixed_rate", "period_ms": "10s"}, "payload": {"kind": "shell", "script": "true"}}'  # noqa: E501
    assert task_spec_from_json_line(bare, "line 2").schedule.fixed_rate.period_ms == 10_000


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("not json", "line 7"),
        ("[1]", "line 7"),
        ('{"name": "a", "payload": {"kind": "shell", "script": "x"}}', "line 7: spec.schedule"),
        ('{"name": "a", "schedule": {"kind": "hourly"}, "payload": {}}', "line 7: spec.schedule.kind"),
        (
            '{"name": "a", "schedule": {"kind": "at", "at_ms": 1}, "payload": {"kind": "command"}, "x": 1}',
            "line 7: spec.x",
        ),
        (
            '{"name": "a", "schedule": {"kind": "at", "at_ms": 1}, "payload": {"kind": "command"}, "priority": "urgent"}',  # noqa: E501
            "line 7: spec.priority",
        ),
    ],
)
def test_import_line_errors_name_the_line_and_field(line: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        task_spec_from_json_line(line, "line 7")
    assert err.value.field == field


# ------------------------------------------------------------------------------ ListTasks at scale


def test_a_filtered_page_reads_a_bounded_number_of_tasks_and_resumes() -> None:
    log = Log()
    names = [("keep" if i % 7 == 0 else "skip") + f"-{i}" for i in range(300)]
    specs = [spec(n) for n in names]
    for s in specs:
        s.tags["team"] = "x"
    log.apply(import_cmd(specs))

    def pages(**filters: Any) -> tuple[list[str], int]:
        found: list[str] = []
        token, n = "", 0
        with log.sm.kv.read() as txn:
            while True:
                page, token = sm.list_tasks(txn, page_size=10, page_token=token, scan_limit=50, **filters)
                n += 1
                assert len(page) <= 10
                found += [t.spec.name for t in page]
                if not token:
                    return found, n

    # The tag's index walks every task; the name is checked on each: short pages, in id order.
    found, n = pages(tags={"team": "x"}, name_prefix="keep")
    assert found == [n for n in names if n.startswith("keep")]
    assert n >= 300 // 50  # short pages: each read at most 50 candidates
    # The name index answers a name prefix alone (issue 15): full pages, in name order.
    found, n = pages(name_prefix="keep")
    assert found == sorted(n for n in names if n.startswith("keep"))
    assert n == -(-len(found) // 10)
