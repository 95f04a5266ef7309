"""The SDK against an in-process fake cluster: a dict-backed "leader" and a "follower" on loopback.

The follower answers writes with UNAVAILABLE and the `cronraft-leader` trailing metadata, as schedd does;
both serve reads from the same store. The fake records every request id it receives, so that tests can
prove that a retry reuses the request id of its logical call.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from cronraft.client import (
    AsyncClient,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    at,
    command,
    cron,
    every,
    shell,
)
from cronraft.client._common import (
    Backoff,
    CallPlan,
    Router,
    error_from_status,
    execution_to_json,
    leader_from_metadata,
    parse_duration,
    parse_instant,
    task_to_json,
)
from cronraft.errors import DeadlineExceeded, ResourceExhausted
from cronraft.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

# ------------------------------------------------------------------------------------------ fake cluster


@dataclass
class Store:
    """The state both fake nodes share (what Raft would replicate)."""

    tasks: dict[str, common_pb2.Task] = field(default_factory=dict)
    executions: dict[str, common_pb2.Execution] = field(default_factory=dict)
    results: dict[str, common_pb2.Task] = field(default_factory=dict)  # request_id -> outcome (dedup)
    write_log: list[tuple[str, str, str]] = field(default_factory=list)  # (node, method, request_id)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (node, method)
    fail_after_apply: int = 0  # next N writes apply, then answer UNAVAILABLE (outcome unknown)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0


def _page(items: list[Any], size: int, token: str) -> tuple[list[Any], str]:
    start = int(token or 0)
    size = size or 100
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, store: Store, node: str, leader_address: str | None) -> None:
        self.store = store
        self.node = node
        self.leader_address = leader_address  # None: this node is the leader

    def _write(self, method: str, request_id: str, context: grpc.ServicerContext) -> None:
        with self.store.lock:
            self.store.calls.append((self.node, method))
            self.store.write_log.append((self.node, method, request_id))
        if self.leader_address is not None:
            context.set_trailing_metadata((("cronraft-leader", self.leader_address),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader")

    def _read(self, method: str) -> None:
        with self.store.lock:
            self.store.calls.append((self.node, method))

    def _maybe_lose_answer(self, context: grpc.ServicerContext) -> None:
        if self.store.fail_after_apply > 0:
            self.store.fail_after_apply -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "leadership lost: outcome unknown")

    def CreateTask(
        self, request: scheduler_pb2.CreateTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.CreateTaskResponse:
        self._write("CreateTask", request.request_id, context)
        spec = request.spec
        if not spec.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec.name: must not be empty")
        if spec.schedule.WhichOneof("kind") == "cron":
            n = len(spec.schedule.cron.expression.split())
            if n not in (5, 6):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"spec.schedule.cron.expression: expected 5 or 6 fields, got {n}",
                )
        if spec.name == "too-many":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "task quota reached")
        with self.store.lock:
            task = self.store.results.get(request.request_id)
            if task is None:
                self.store.seq += 1
                task = common_pb2.Task(
                    task_id=f"t{self.store.seq:04d}",
                    spec=spec,
                    state=common_pb2.TASK_SCHEDULED,
                    created_at_ms=1_750_000_000_000,
                    updated_at_ms=1_750_000_000_000,
                    next_fire_ms=1_750_000_060_000,
                    version=self.store.seq,
                )
                self.store.tasks[task.task_id] = task
                self.store.results[request.request_id] = task
            self._maybe_lose_answer(context)
        return scheduler_pb2.CreateTaskResponse(task=task)

    def GetTask(
        self, request: scheduler_pb2.GetTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Task:
        self._read("GetTask")
        task = self.store.tasks.get(request.task_id)
        if task is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
        return task

    def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListTasksResponse:
        self._read("ListTasks")
        tasks = [
            t
            for t in sorted(self.store.tasks.values(), key=lambda t: t.task_id)
            if (not request.state or t.state == request.state)
            and t.spec.name.startswith(request.name_prefix)
            and all(t.spec.tags.get(k) == v for k, v in request.tags.items())
        ]
        page, token = _page(tasks, request.page_size, request.page_token)
        return scheduler_pb2.ListTasksResponse(tasks=page, next_page_token=token)

    def CancelTask(
        self, request: scheduler_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Task:
        self._write("CancelTask", request.request_id, context)
        with self.store.lock:
            done = self.store.results.get(request.request_id)
            if done is not None:
                return done
            task = self.store.tasks.get(request.task_id)
            if task is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
            if task.state == common_pb2.TASK_CANCELLED:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"task {request.task_id} is already cancelled"
                )
            task.state = common_pb2.TASK_CANCELLED
            task.next_fire_ms = 0
            self.store.results[request.request_id] = task
        return task

    def ListExecutions(
        self, request: scheduler_pb2.ListExecutionsRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListExecutionsResponse:
        self._read("ListExecutions")
        if request.task_id not in self.store.tasks:
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
        executions = [
            e
            for e in sorted(self.store.executions.values(), key=lambda e: e.nominal_time_ms)
            if e.task_id == request.task_id and (not request.state or e.state == request.state)
        ]
        page, token = _page(executions, request.page_size, request.page_token)
        return scheduler_pb2.ListExecutionsResponse(executions=page, next_page_token=token)

    def GetExecution(
        self, request: scheduler_pb2.GetExecutionRequest, context: grpc.ServicerContext
    ) -> common_pb2.Execution:
        self._read("GetExecution")
        execution = self.store.executions.get(request.execution_id)
        if execution is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"execution {request.execution_id} not found")
        return execution


class FakeClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, node: str, is_leader: bool, cluster: FakeCluster) -> None:
        self.node = node
        self.is_leader = is_leader
        self.cluster = cluster

    def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> cluster_pb2.StatusResponse:
        return cluster_pb2.StatusResponse(
            node_id=self.node,
            is_leader=self.is_leader,
            leader_id="n1",
            leader_address=self.cluster.leader_address,
            term=3,
            commit_index=42,
            applied_index=42,
            epoch_term=3,
            connected_workers=2 if self.is_leader else 0,
            ready=True,
            members=[
                cluster_pb2.Member(
                    node_id="n1",
                    raft_address="127.0.0.1:7001",
                    grpc_address=self.cluster.leader_address,
                    connected=True,
                ),
                cluster_pb2.Member(
                    node_id="n2",
                    raft_address="127.0.0.1:7002",
                    grpc_address=self.cluster.follower_address,
                    connected=True,
                ),
            ],
        )


class FakeCluster:
    """A leader and a follower fake on loopback ports, sharing one `Store`."""

    def __init__(self) -> None:
        self.store = Store()
        self._servers: list[grpc.Server] = []
        self.leader_address = ""
        self.follower_address = ""
        self.leader_address = self._start("n1", None)
        self.follower_address = self._start("n2", self.leader_address)

    def _start(self, node: str, leader_address: str | None) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            FakeScheduler(self.store, node, leader_address), server
        )
        cluster_pb2_grpc.add_ClusterServicer_to_server(
            FakeClusterService(node, leader_address is None, self), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._servers.append(server)
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        for server in self._servers:
            server.stop(None).wait()

    def add_execution(self, task_id: str, n: int, **fields: Any) -> common_pb2.Execution:
        values: dict[str, Any] = {
            "execution_id": f"{task_id}-e{n}",
            "task_id": task_id,
            "nominal_time_ms": 1_750_000_000_000 + n * 60_000,
            "fired_at_ms": 1_750_000_000_000 + n * 60_000 + 5,
            "state": common_pb2.EXECUTION_SUCCEEDED,
            "attempt": 1,
            "worker_id": "w1",
            "token": common_pb2.FencingToken(term=3, index=100 + n),
            "started_at_ms": 1_750_000_000_000 + n * 60_000 + 10,
            "finished_at_ms": 1_750_000_000_000 + n * 60_000 + 20,
            "completed_at_ms": 1_750_000_000_000 + n * 60_000 + 30,
        }
        values.update(fields)
        execution = common_pb2.Execution(**values)
        self.store.executions[execution.execution_id] = execution
        return execution

    def methods(self, node: str) -> list[str]:
        return [m for n, m in self.store.calls if n == node]


def dead_address() -> str:
    """A loopback address on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    try:
        yield fake
    finally:
        fake.stop()


def _hello() -> tuple[common_pb2.Schedule, common_pb2.Payload]:
    return cron("*/1 * * * *", "Europe/Paris"), command("echo", "hello")


# ------------------------------------------------------------------------------------- parsing helpers


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1h30m", 5_400_000),
        ("1.5s", 1500),
        ("0", 0),
        ("1m30s250ms", 90_250),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "10", "5x", "1h 30m", "-5s", "s", "1.0005s", "10S"])
def test_parse_duration_rejects_and_names_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text, "--every")
    assert info.value.field == "--every"
    assert str(info.value).startswith("--every: ")


def test_parse_instant_forms() -> None:
    base = int(datetime(2025, 6, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_instant("2025-06-01T09:00:00Z") == base
    assert parse_instant("2025-06-01t09:00:00z") == base
    assert parse_instant("2025-06-01 09:00:00Z") == base
    assert parse_instant("2025-06-01T11:00:00+02:00") == base
    assert parse_instant("2025-06-01T04:30:00-04:30") == base
    assert parse_instant("2025-06-01T09:00:00.123456789Z") == base + 123
    assert parse_instant("2025-06-01T11:00:00[Europe/Paris]") == base
    assert parse_instant("2025-06-01T11:00:00+02:00[Europe/Paris]") == base
    # Leap second: POSIX time has none; read as the start of the next second.
    assert parse_instant("2016-12-31T23:59:60Z") == parse_instant("2017-01-01T00:00:00Z")
    # DST overlap in Paris (03:00 -> 02:00 on 2025-10-26): the earlier instant.
    assert parse_instant("2025-10-26T02:30:00[Europe/Paris]") == parse_instant("2025-10-26T02:30:00+02:00")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2025-06-01T09:00:00", "naive"),
        ("2025-06-01", "invalid instant"),
        ("2025-02-30T09:00:00Z", "day is out of range"),
        ("2025-06-01T09:00:00+25:00", "invalid offset"),
        ("2025-06-01T09:00:00+01:00[Europe/Paris]", "does not match Europe/Paris"),
        ("2025-03-30T02:30:00[Europe/Paris]", "does not exist"),
        ("2025-06-01T09:00:00[Mars/Olympus]", "unknown time zone"),
    ],
)
def test_parse_instant_rejects(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_instant(text, "--at")
    assert info.value.field == "--at"
    assert problem in info.value.problem


# --------------------------------------------------------------------------------------------- builders


def test_builders() -> None:
    s = cron("0 9 * * 1-5", "Europe/Paris", start_at="2025-01-01T00:00:00Z", max_runs=3)
    assert s.cron.expression == "0 9 * * 1-5" and s.cron.time_zone == "Europe/Paris"
    assert s.start_at_ms == 1_735_689_600_000 and s.max_runs == 3 and s.end_at_ms == 0
    when = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
    assert at(when).at.at_ms == at("2025-06-01T09:00:00Z").at.at_ms == at(1_748_768_400_000).at.at_ms
    r = every(timedelta(minutes=5), anchor=when, end_at=when + timedelta(days=1))
    assert r.fixed_rate.period_ms == 300_000 and r.fixed_rate.anchor_ms == 1_748_768_400_000
    assert every("1h30m").fixed_rate.period_ms == 5_400_000 and every(250).fixed_rate.anchor_ms == 0
    p = command("echo", "hello world", env={"A": "1"}, cwd="/tmp")
    assert list(p.command.argv) == ["echo", "hello world"] and p.command.env["A"] == "1"
    assert shell("echo $HOME | wc -c").shell.script == "echo $HOME | wc -c"


def test_builders_reject_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="naive datetime") as info:
        at(datetime(2025, 6, 1, 9, 0))
    assert info.value.field == "schedule.at.at_ms"
    with pytest.raises(InvalidArgument) as info:
        every("0s")
    assert info.value.field == "schedule.fixed_rate.period_ms"
    with pytest.raises(InvalidArgument):
        command()
    with pytest.raises(InvalidArgument):
        shell("  ")
    with pytest.raises(InvalidArgument) as info:
        cron("* * * * *", end_at="tomorrow")
    assert info.value.field == "schedule.end_at_ms"


# --------------------------------------------------------------------------------- errors and routing


def test_error_mapping_splits_field_and_problem() -> None:
    err = error_from_status(
        "INVALID_ARGUMENT", "spec.schedule.cron.expression: expected 5 or 6 fields, got 3"
    )
    assert isinstance(err, InvalidArgument)
    assert err.field == "spec.schedule.cron.expression"
    assert err.problem == "expected 5 or 6 fields, got 3"
    assert isinstance(error_from_status("INVALID_ARGUMENT", "bad request"), InvalidArgument)
    assert isinstance(error_from_status("NOT_FOUND", "x"), NotFound)
    assert isinstance(error_from_status("FAILED_PRECONDITION", "x"), FailedPrecondition)
    assert isinstance(error_from_status("RESOURCE_EXHAUSTED", "x"), ResourceExhausted)
    assert isinstance(error_from_status("UNAVAILABLE", "x"), Unavailable)
    assert isinstance(error_from_status("DEADLINE_EXCEEDED", "x"), DeadlineExceeded)
    other = error_from_status("INTERNAL", "boom")
    assert type(other).__name__ == "CronraftError" and "boom" in str(other)


def test_leader_from_metadata() -> None:
    assert leader_from_metadata((("other", "x"), ("cronraft-leader", "10.0.0.1:50051"))) == "10.0.0.1:50051"
    assert leader_from_metadata((("cronraft-leader", ""),)) is None
    assert leader_from_metadata(None) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_call_plan_follows_redirects_then_rotates_and_backs_off() -> None:
    clock = FakeClock()
    router = Router(["a:1", "b:1"])
    plan = CallPlan(router, write=True, timeout_s=5, clock=clock, backoff=Backoff(rand=lambda: 1.0))
    assert plan.address == "a:1"
    assert plan.failed("UNAVAILABLE", "not the leader", "c:1") == 0.0
    assert plan.address == "c:1" and router.leader == "c:1"
    # The leader went away: forget it, try the configured servers in turn, then back off.
    assert plan.failed("UNAVAILABLE", "connection refused", None) == 0.0
    assert router.leader is None and plan.address == "b:1"
    # a:1 (which redirected) and b:1 both failed in this round: back off, then start a new round.
    assert plan.failed("UNAVAILABLE", "connection refused", None) == pytest.approx(0.05)
    assert plan.address == "a:1"
    assert plan.failed("UNAVAILABLE", "connection refused", None) == 0.0
    assert plan.address == "b:1"
    assert plan.failed("UNAVAILABLE", "connection refused", None) == pytest.approx(0.1)
    clock.now = 5.0
    assert plan.failed("UNAVAILABLE", "connection refused", None) is None
    err = plan.give_up_error("rid")
    assert isinstance(err, Unavailable) and "a:1" in str(err) and "b:1" in str(err)


def test_call_plan_caps_redirect_loops_and_stops_on_final_errors() -> None:
    clock = FakeClock()
    router = Router(["a:1", "b:1", "c:1"])
    plan = CallPlan(router, write=True, timeout_s=5, clock=clock, max_redirects=2)
    assert plan.failed("UNAVAILABLE", "", "b:1") == 0.0
    assert plan.failed("UNAVAILABLE", "", "a:1") == 0.0
    # a:1 and b:1 point at each other: no more redirects, rotate to the server not tried yet.
    assert plan.failed("UNAVAILABLE", "", "b:1") == 0.0
    assert plan.redirects_left == 0 and plan.address == "c:1"
    assert plan.failed("NOT_FOUND", "task x not found", None) is None
    assert isinstance(plan.give_up_error(), NotFound)


def test_call_plan_deadline_on_write_says_outcome_unknown() -> None:
    clock = FakeClock()
    plan = CallPlan(Router(["a:1"]), write=True, timeout_s=1, clock=clock)
    clock.now = 0.9
    assert plan.failed("DEADLINE_EXCEEDED", "Deadline Exceeded", None) is not None
    clock.now = 1.0
    assert plan.failed("DEADLINE_EXCEEDED", "Deadline Exceeded", None) is None
    err = plan.give_up_error("abc123")
    assert isinstance(err, DeadlineExceeded) and "request_id=abc123" in str(err)


# ------------------------------------------------------------------------------ sync client, fake cluster


def test_create_follows_redirect_and_remembers_the_leader(cluster: FakeCluster) -> None:
    with Client(cluster.follower_address) as client:
        task = client.create_task("hello", *_hello(), tags={"team": "ops"})
        assert task.task_id == "t0001" and task.spec.name == "hello"
        assert task.spec.payload.command.argv == ["echo", "hello"]
        assert task.spec.schedule.cron.time_zone == "Europe/Paris"
        assert client.leader == cluster.leader_address
        client.create_task("second", *_hello())
        client.cancel_task(task.task_id)
    # The first write went to the follower, was redirected; later writes went straight to the leader.
    assert cluster.methods("n2") == ["CreateTask"]
    assert cluster.methods("n1") == ["CreateTask", "CreateTask", "CancelTask"]


def test_retry_reuses_the_request_id(cluster: FakeCluster) -> None:
    cluster.store.fail_after_apply = 1  # the first attempt applies, then its answer is lost
    with Client(cluster.leader_address) as client:
        task = client.create_task("once", *_hello())
    ids = [rid for node, method, rid in cluster.store.write_log if method == "CreateTask"]
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 32
    assert list(cluster.store.tasks) == [task.task_id]  # deduplicated: one task


def test_request_id_reused_across_redirect_and_explicit_id_kept(cluster: FakeCluster) -> None:
    with Client([cluster.follower_address]) as client:
        client.create_task("x", *_hello(), request_id="my-key")
        again = client.create_task("x", *_hello(), request_id="my-key")
    assert {rid for _, _, rid in cluster.store.write_log} == {"my-key"}
    assert [(n, m) for n, m, _ in cluster.store.write_log] == [
        ("n2", "CreateTask"),
        ("n1", "CreateTask"),
        ("n1", "CreateTask"),
    ]
    assert len(cluster.store.tasks) == 1 and again.task_id == "t0001"


def test_server_errors_are_mapped(cluster: FakeCluster) -> None:
    with Client(cluster.follower_address) as client:
        with pytest.raises(InvalidArgument) as info:
            client.create_task("bad", cron("* * *"), command("true"))
        assert info.value.field == "spec.schedule.cron.expression"
        assert info.value.problem == "expected 5 or 6 fields, got 3"
        with pytest.raises(NotFound, match="t9999"):
            client.get_task("t9999")
        with pytest.raises(ResourceExhausted):
            client.create_task("too-many", *_hello())
        task = client.create_task("c", *_hello())
        client.cancel_task(task.task_id)
        with pytest.raises(FailedPrecondition, match="already cancelled"):
            client.cancel_task(task.task_id)
        assert client.get_task(task.task_id).state == common_pb2.TASK_CANCELLED


def test_list_tasks_follows_page_tokens(cluster: FakeCluster) -> None:
    with Client(cluster.leader_address) as client:
        for i in range(7):
            client.create_task(f"job-{i}", *_hello(), tags={"parity": "even" if i % 2 == 0 else "odd"})
        client.create_task("other", *_hello())
        before = len(cluster.methods("n1"))
        names = [t.spec.name for t in client.list_tasks(name_prefix="job-", page_size=3)]
        assert names == [f"job-{i}" for i in range(7)]
        assert cluster.methods("n1")[before:] == ["ListTasks"] * 3
        page, token = client.list_tasks_page(page_size=5)
        assert len(page) == 5 and token
        page, token = client.list_tasks_page(page_size=5, page_token=token)
        assert len(page) == 3 and token == ""
        assert len(list(client.list_tasks(tags={"parity": "even"}))) == 4
        client.cancel_task("t0001")
        assert [t.task_id for t in client.list_tasks(state="cancelled")] == ["t0001"]
        assert len(list(client.list_tasks(state=common_pb2.TASK_SCHEDULED))) == 7
        with pytest.raises(InvalidArgument):
            list(client.list_tasks(state="sleeping"))


def test_executions(cluster: FakeCluster) -> None:
    with Client(cluster.follower_address) as client:  # reads are served by any node
        task = client.create_task("e", *_hello())
        for n in range(5):
            cluster.add_execution(task.task_id, n, stdout_tail=b"hello\n")
        cluster.add_execution(task.task_id, 5, state=common_pb2.EXECUTION_FAILED, exit_code=2)
        assert len(list(client.list_executions(task.task_id, page_size=2))) == 6
        failed = list(client.list_executions(task.task_id, state="failed"))
        assert [e.execution_id for e in failed] == [f"{task.task_id}-e5"]
        execution = client.get_execution(f"{task.task_id}-e0")
        assert execution.stdout_tail == b"hello\n"
        with pytest.raises(NotFound):
            client.get_execution("nope")


def test_cluster_status_and_failover_to_the_next_server(cluster: FakeCluster) -> None:
    servers = f"{dead_address()},{cluster.follower_address}"
    with Client(servers, timeout_s=5) as client:
        status = client.cluster_status()
        assert status.node_id == "n2" and status.leader_address == cluster.leader_address
        task = client.create_task("failover", *_hello())  # dead -> follower -> redirect -> leader
        assert client.get_task(task.task_id).spec.name == "failover"


def test_unreachable_cluster_raises_unavailable() -> None:
    with Client([dead_address(), dead_address()], timeout_s=0.5) as client:
        with pytest.raises(Unavailable, match="cluster unavailable"):
            client.get_task("t1")
        with pytest.raises(Unavailable):
            client.create_task("x", *_hello())


def test_servers_from_environment(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONRAFT_SERVER", f" {cluster.leader_address} ,")
    with Client() as client:
        assert client.servers == [cluster.leader_address]
        assert client.cluster_status().is_leader


def test_closed_client_refuses_calls(cluster: FakeCluster) -> None:
    client = Client(cluster.leader_address)
    client.close()
    client.close()
    with pytest.raises(Exception, match="closed"):
        client.get_task("t1")


# ------------------------------------------------------------------------------------------------- JSON


def test_json_rendering_is_explicit_and_stable(cluster: FakeCluster) -> None:
    with Client(cluster.leader_address) as client:
        task = client.create_task(
            "j",
            every("5m", anchor="2025-01-01T00:00:00Z"),
            shell("date"),
            guarantee="exactly-once",
            priority="high",
        )
    doc = task_to_json(task)
    assert doc["state"] == "scheduled" and doc["fire_count"] == 0
    assert doc["spec"]["guarantee"] == "exactly_once" and doc["spec"]["priority"] == "high"
    assert doc["spec"]["schedule"] == {
        "kind": "fixed_rate",
        "period_ms": 300_000,
        "anchor_ms": 1_735_689_600_000,
        "anchor": "2025-01-01T00:00:00.000Z",
        "start_at_ms": 0,
        "start_at": None,
        "end_at_ms": 0,
        "end_at": None,
        "max_runs": 0,
        "jitter_ms": 0,
    }
    assert doc["spec"]["payload"] == {"kind": "shell", "script": "date"}
    assert doc["next_fire_ms"] == 1_750_000_060_000 and doc["next_fire"] == "2025-06-15T15:07:40.000Z"
    assert doc["last_fired_nominal"] is None
    e = execution_to_json(
        common_pb2.Execution(
            execution_id="e1", state=common_pb2.EXECUTION_TIMED_OUT, stderr_tail=b"caf\xc3\xa9 \xff"
        )
    )
    assert e["state"] == "timed_out" and e["stderr_tail"] == "café \ufffd" and e["token"] is None


# ------------------------------------------------------------------------------------------ AsyncClient


@pytest.mark.asyncio
async def test_async_client_redirect_reads_and_errors(cluster: FakeCluster) -> None:
    async with AsyncClient(cluster.follower_address) as client:
        task = await client.create_task("async", *_hello(), request_id="a-key")
        assert client.leader == cluster.leader_address
        assert (await client.get_task(task.task_id)).spec.name == "async"
        for i in range(4):
            await client.create_task(f"more-{i}", *_hello())
        names = [t.spec.name async for t in client.list_tasks(page_size=2)]
        assert names == ["async", "more-0", "more-1", "more-2", "more-3"]
        with pytest.raises(NotFound):
            await client.get_task("missing")
        with pytest.raises(InvalidArgument) as info:
            await client.create_task("bad", cron("* *"), command("true"))
        assert info.value.field == "spec.schedule.cron.expression"
        cancelled = await client.cancel_task(task.task_id)
        assert cancelled.state == common_pb2.TASK_CANCELLED
        assert (await client.cluster_status()).node_id in ("n1", "n2")
    assert [(n, rid) for n, m, rid in cluster.store.write_log if rid == "a-key"] == [
        ("n2", "a-key"),
        ("n1", "a-key"),
    ]


@pytest.mark.asyncio
async def test_async_client_retry_reuses_request_id_and_lists_executions(cluster: FakeCluster) -> None:
    cluster.store.fail_after_apply = 1
    async with AsyncClient([cluster.leader_address]) as client:
        task = await client.create_task("once", *_hello())
        cluster.add_execution(task.task_id, 0)
        cluster.add_execution(task.task_id, 1)
        executions = [e async for e in client.list_executions(task.task_id, page_size=1)]
        assert [e.execution_id for e in executions] == [f"{task.task_id}-e0", f"{task.task_id}-e1"]
        assert (await client.get_execution(executions[0].execution_id)).attempt == 1
    ids = [rid for _, m, rid in cluster.store.write_log if m == "CreateTask"]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert len(cluster.store.tasks) == 1


@pytest.mark.asyncio
async def test_async_client_unavailable() -> None:
    async with AsyncClient(dead_address(), timeout_s=0.4) as client:
        with pytest.raises(Unavailable):
            await client.cluster_status()
