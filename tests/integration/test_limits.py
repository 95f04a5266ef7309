"""Bounds and quotas through the real API of a real node (issue 11).

Every bound is sent just past its limit with a plain gRPC stub (not the SDK, which checks some of them
itself): the answer is INVALID_ARGUMENT naming the field and the bound, and nothing is changed: the
node applied no entry for any of them (they are refused before anything is proposed) and its tasks and
calendars are what they were. A worker stream past a bound is ended with INVALID_ARGUMENT naming it. A
message over the node's 8 MiB is refused by gRPC itself. Then the quotas of a node configured with small
[limits]: creates, imports and calendars past them are refused with RESOURCE_EXHAUSTED naming the limit
and how to raise it, a trigger past a task's pending quota too, and a scheduled fire past it is recorded
`skipped_limit` while the schedule goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cronraft import bounds
from cronraft.client import Client, at, command, cron
from cronraft.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
LIMITS = """
[limits]
max_tasks = 4
max_calendars = 2
max_pending_per_task = 2

[retention]
prune_interval_ms = 3600000
"""


@pytest.fixture
def node(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, n=1, extra_toml=LIMITS)
    failed_before = request.session.testsfailed
    cluster.start()
    yield cluster
    cluster.stop()
    if request.session.testsfailed > failed_before:
        with capsys.disabled():
            print(cluster.logs())


def spec(**kw: Any) -> common_pb2.TaskSpec:
    fields: dict[str, Any] = {
        "name": "t",
        "schedule": common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=int(time.time() * 1000) + HOUR_MS)),
        "payload": common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        **kw,
    }
    return common_pb2.TaskSpec(**fields)


def with_(s: common_pb2.TaskSpec, change: Callable[[common_pb2.TaskSpec], object]) -> common_pb2.TaskSpec:
    change(s)
    return s


def too_many_env(s: common_pb2.TaskSpec) -> None:
    s.payload.command.env.update({f"V{i}": "" for i in range(1025)})


def big_sensor(s: common_pb2.TaskSpec) -> None:
    s.payload.command.argv.append("a" * 40_000)
    s.sensor.probe.shell.script = "b" * 40_000


def deep_args(s: common_pb2.TaskSpec) -> None:
    s.payload.handler.name = "h"
    s.payload.handler.args_json = '{"a":' * 65 + "1" + "}" * 65


def notify_argv(s: common_pb2.TaskSpec) -> None:
    s.notify.add().command.argv.extend(["x"] * 257)


def weekdays(n: int) -> common_pb2.Calendar:
    cal = common_pb2.Calendar(name="w")
    cal.exclude.add().weekdays.days.extend([1] * n)
    return cal


ID = "01KDVDNAZ8M8SWFTS96A5D6SX4"  # a well-formed id of nothing

# (what, rpc name, request, field, bound named in the message)
REQUESTS: list[tuple[str, str, Any, str, str]] = [
    (
        "env vars",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=with_(spec(), too_many_env)),
        "spec.payload.command.env",
        "1024",
    ),
    (
        "worker labels",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=spec(worker_labels={f"k{i}": "v" for i in range(65)})),
        "spec.worker_labels",
        "64",
    ),
    (
        "task calendars",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(
            spec=with_(spec(), lambda s: s.schedule.calendars.extend(["c"] * 17))
        ),
        "spec.schedule.calendars",
        "16",
    ),
    (
        "notify argv",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=with_(spec(), notify_argv)),
        "spec.notify[0].command.argv",
        "256",
    ),
    (
        "sensor in payload size",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=with_(spec(), big_sensor)),
        "spec.payload",
        "65536",
    ),
    (
        "handler args nesting",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=with_(spec(), deep_args)),
        "spec.payload.handler.args_json",
        "64",
    ),
    (
        "retry multiplier",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=spec(retry=common_pb2.RetryPolicy(multiplier=1e308))),
        "spec.retry.multiplier",
        "100",
    ),
    (
        "request id",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=spec(), request_id="r" * 129),
        "request_id",
        "128",
    ),
    (
        "tags",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=spec(tags={f"k{i}": "" for i in range(65)})),
        "spec.tags",
        "64",
    ),
    (
        "task name",
        "CreateTask",
        scheduler_pb2.CreateTaskRequest(spec=spec(name="n" * 201)),
        "spec.name",
        "200",
    ),
    ("page token", "ListTasks", scheduler_pb2.ListTasksRequest(page_token="x" * 65), "page_token", "64"),
    ("name prefix", "ListTasks", scheduler_pb2.ListTasksRequest(name_prefix="n" * 201), "name_prefix", "200"),
    (
        "tag filters",
        "ListTasks",
        scheduler_pb2.ListTasksRequest(tags={f"k{i}": "" for i in range(65)}),
        "tags",
        "64",
    ),
    ("page size", "ListTasks", scheduler_pb2.ListTasksRequest(page_size=-1), "page_size", "1000"),
    (
        "executions token",
        "ListExecutions",
        scheduler_pb2.ListExecutionsRequest(task_id=ID, page_token="1" * 21),
        "page_token",
        "ListExecutions",
    ),
    ("pause note", "PauseTask", scheduler_pb2.PauseTaskRequest(task_id=ID, note="n" * 1001), "note", "1000"),
    (
        "cancel reason",
        "CancelExecution",
        scheduler_pb2.CancelExecutionRequest(execution_id=ID, reason="r" * 1001),
        "reason",
        "1000",
    ),
    (
        "redrive ids",
        "RedriveDeadLetters",
        scheduler_pb2.RedriveDeadLettersRequest(execution_ids=[ID] * 1001),
        "execution_ids",
        "1000",
    ),
    (
        "purge ids",
        "PurgeDeadLetters",
        scheduler_pb2.PurgeDeadLettersRequest(execution_ids=[ID] * 10_001),
        "execution_ids",
        "10000",
    ),
    ("a malformed id", "TriggerTask", scheduler_pb2.TriggerTaskRequest(task_id="nope"), "task_id", "26"),
    ("calendar name", "GetCalendar", scheduler_pb2.GetCalendarRequest(name="c" * 65), "name", "64"),
    (
        "weekdays",
        "PutCalendar",
        scheduler_pb2.PutCalendarRequest(calendar=weekdays(8)),
        "calendar.exclude[0].weekdays.days",
        "7",
    ),
    (
        "calendars page token",
        "ListCalendars",
        scheduler_pb2.ListCalendarsRequest(page_token="c" * 65),
        "page_token",
        "64",
    ),
    (
        "backfill fires",
        "BackfillTask",
        scheduler_pb2.BackfillTaskRequest(task_id=ID, max_fires=1001),
        "max_fires",
        "1000",
    ),
]


def snapshot(cluster: Cluster) -> tuple[int, list[str], list[str]]:
    node = cluster.nodes[0]
    with Client(cluster.servers, timeout_s=5) as client:
        tasks = sorted(t.task_id for t in client.list_tasks())
        calendars = sorted(c.name for c in client.list_calendars())
    return node.status().applied_index, tasks, calendars


def test_every_bound_is_refused_through_the_api_naming_field_and_bound_and_nothing_changes(
    node: Cluster,
) -> None:
    with Client(node.servers, timeout_s=5) as client:
        client.create_task("existing", at(int(time.time() * 1000) + HOUR_MS), command("true"))
        cal = common_pb2.Calendar(name="weekend")
        cal.exclude.add().weekdays.days.extend([6, 7])
        client.put_calendar(cal)
    wait_for(lambda: node.nodes[0].status().applied_index > 0, 5, "the writes to apply")
    before = snapshot(node)
    with grpc.insecure_channel(node.servers, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        for what, rpc, request, field, bound in REQUESTS:
            with pytest.raises(grpc.RpcError) as e:
                getattr(stub, rpc)(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, e.value.details())
            details = e.value.details() or ""
            assert details.startswith(f"{field}: "), (what, details)
            assert bound in details, (what, details)
        with pytest.raises(grpc.RpcError) as e:
            cluster_pb2_grpc.ClusterStub(ch).Clock(cluster_pb2.ClockRequest(node_id="n" * 65), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (e.value.details() or "").startswith("node_id: longer than 64")
        # Over the node's largest message (8 MiB): refused by gRPC before any servicer sees it.
        huge = scheduler_pb2.CreateTaskRequest(spec=spec())
        huge.spec.payload.command.argv.append("x" * (bounds.SERVER_MAX_RECEIVE_BYTES + 1))
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateTask(huge, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert snapshot(node) == before, "a refused request changed something (or was proposed)"


def worker_stream(address: str, *messages: worker_pb2.WorkerMessage) -> grpc.RpcError:
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = worker_pb2_grpc.WorkerGatewayStub(ch)
        replies = stub.Connect(iter(messages), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            for _ in replies:
                pass
        return e.value


WORKER_MESSAGES: list[tuple[worker_pb2.WorkerMessage, str, str]] = [
    (
        worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w" * 129, capacity=1)),
        "hello.worker_id",
        "128",
    ),
    (
        worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w", capacity=100_001)),
        "hello.capacity",
        "100000",
    ),
    (
        worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w", queues=["q"] * 65)),
        "hello.queues",
        "64",
    ),
    (
        worker_pb2.WorkerMessage(
            hello=worker_pb2.Hello(worker_id="w", labels={f"k{i}": "" for i in range(65)})
        ),
        "hello.labels",
        "64",
    ),
    (
        worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(leases=[worker_pb2.LeaseRef()] * 100_001)),
        "heartbeat.leases",
        "100000",
    ),
    (
        worker_pb2.WorkerMessage(results=worker_pb2.Results(results=[common_pb2.AttemptResult()] * 10_001)),
        "results.results",
        "10000",
    ),
    (
        worker_pb2.WorkerMessage(output=worker_pb2.OutputChunk(data=b"x" * ((1 << 20) + 1))),
        "output.data",
        "1048576",
    ),
]


def test_a_worker_stream_past_a_bound_is_ended_naming_it(node: Cluster) -> None:
    hello = worker_pb2.WorkerMessage(
        hello=worker_pb2.Hello(worker_id="fuzzy", capacity=1, queues=["nothing"])
    )
    for message, field, bound in WORKER_MESSAGES:
        messages = (message,) if message.WhichOneof("kind") == "hello" else (hello, message)
        error = worker_stream(node.servers, *messages)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        details = error.details() or ""
        assert details.startswith(f"{field}: ") and bound in details, details
    wait_for(lambda: node.nodes[0].status().connected_workers == 0, 5, "the refused workers to be gone")
    assert node.nodes[0].alive


def test_quotas_are_refused_with_resource_exhausted_naming_the_limit(node: Cluster) -> None:
    later = int(time.time() * 1000) + HOUR_MS
    with Client(node.servers, timeout_s=5) as client:
        ticking = client.create_task("ticking", cron("* * * * * *"), command("true"))  # no worker: waits
        for i in range(2):
            client.create_task(f"t{i}", at(later), command("true"))
        with grpc.insecure_channel(node.servers) as ch:
            stub = scheduler_pb2_grpc.SchedulerStub(ch)

            def refused(rpc: str, request: Any, key: str) -> str:
                with pytest.raises(grpc.RpcError) as e:
                    getattr(stub, rpc)(request, timeout=10)
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
                details = e.value.details() or ""
                assert details.startswith(f"limits.{key}: "), details
                assert f"Raise {key} in the [limits] table of every node's config" in details
                return details

            # An import of 2 would make 5 tasks: refused whole; one more task fits, then none.
            imp = scheduler_pb2.ImportTasksRequest(request_id="imp", specs=[spec(), spec()])
            details = refused("ImportTasks", iter([imp]), "max_tasks")
            assert "the cluster stores 3 tasks and this request adds 2; the limit is 4" in details
            client.create_task("t3", at(later), command("true"))
            refused("CreateTask", scheduler_pb2.CreateTaskRequest(spec=spec()), "max_tasks")

            for name in ("a", "b"):
                cal = common_pb2.Calendar(name=name)
                cal.exclude.add().weekdays.days.append(6)
                client.put_calendar(cal)
            client.put_calendar(cal)  # replacing one is not a new one
            c = common_pb2.Calendar(name="c")
            c.exclude.add().weekdays.days.append(6)
            refused("PutCalendar", scheduler_pb2.PutCalendarRequest(calendar=c), "max_calendars")

            # The per-second task piles up pending executions (no worker): 2 at most, then its fires
            # are recorded skipped_limit and its schedule goes on; a trigger is refused.
            def skipped() -> list[common_pb2.FireRecord]:
                records = client.explain_task(ticking.task_id, limit=1000).records
                return [r for r in records if r.outcome == common_pb2.SKIPPED_LIMIT]

            wait_for(lambda: len(skipped()) >= 2, 15, "fires recorded skipped_limit")
            assert skipped()[0].reason.startswith(
                f"limits.max_pending_per_task: task {ticking.task_id} has 2 executions not yet ended"
            )
            assert len([e for e in client.list_executions(ticking.task_id)]) == 2
            refused(
                "TriggerTask",
                scheduler_pb2.TriggerTaskRequest(task_id=ticking.task_id),
                "max_pending_per_task",
            )
            task = client.get_task(ticking.task_id)
            assert task.next_fire_ms > skipped()[-1].nominal_time_ms  # the schedule goes on
        # Room again once executions end: the next fire creates one.
        for ex in client.list_executions(ticking.task_id):
            client.cancel_execution(ex.execution_id)
        wait_for(
            lambda: any(
                e.state == common_pb2.EXECUTION_PENDING for e in client.list_executions(ticking.task_id)
            ),
            10,
            "a new execution once there is room",
        )
