"""An in-process fake cluster for the SDK and CLI tests: a dict-backed "leader" and a "follower" on
loopback, sharing one `Store`.

The follower answers writes with UNAVAILABLE and the `cronraft-leader` trailing metadata, as schedd does;
both serve reads from the same store. The fake records every request id it receives, so that tests can
prove that a retry reuses the request id of its logical call. Used by test_client.py, test_cli.py and the
other schedctl tests (`from fake_cluster import FakeCluster, cluster_fixture`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from cronraft.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from tests.support.ports import free_port


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
    calendars: dict[str, common_pb2.Calendar] = field(default_factory=dict)
    ledger: dict[str, list[common_pb2.FireRecord]] = field(default_factory=dict)  # task_id -> records
    outcomes: dict[str, Any] = field(default_factory=dict)  # request_id -> outcome of the new writes
    requests: list[tuple[str, Any]] = field(default_factory=list)  # (method, request) reaching the leader
    race_updates: int = 0  # next N UpdateTask see the task changed by someone else first
    dead_letters: dict[str, common_pb2.DeadLetter] = field(default_factory=dict)  # by execution id

    def last(self, method: str) -> Any:
        """The last request of `method` the leader applied."""
        return [r for m, r in self.requests if m == method][-1]

    def last_spec(self, task_id: str) -> common_pb2.TaskSpec:
        """The spec of `task_id` as stored."""
        return self.tasks[task_id].spec


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

    def DeleteTask(
        self, request: scheduler_pb2.DeleteTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.DeleteTaskResponse:
        self._write("DeleteTask", request.request_id, context)
        with self.store.lock:
            task = self.store.tasks.get(request.task_id)
            if task is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
            running = [
                e
                for e in self.store.executions.values()
                if e.task_id == task.task_id and e.state == common_pb2.EXECUTION_RUNNING
            ]
            if running and not request.force:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"task {task.task_id} has a running execution {running[0].execution_id}: cancel it "
                    "first, or delete with force",
                )
            gone = [e for e in self.store.executions.values() if e.task_id == task.task_id]
            for e in gone:
                del self.store.executions[e.execution_id]
            del self.store.tasks[task.task_id]
        return scheduler_pb2.DeleteTaskResponse(task=task, executions_deleted=len(gone))

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

    # ---------------------------------------------------------------- the API of issue 3 (dict-backed)

    def _apply(
        self, method: str, request: Any, context: grpc.ServicerContext, body: Callable[[], Any]
    ) -> Any:
        """A deduplicated write on the leader: `body` runs once per request id."""
        self._write(method, request.request_id, context)
        with self.store.lock:
            done = self.store.outcomes.get(request.request_id)
            if done is None:
                self.store.requests.append((method, request))
                done = body()
                self.store.outcomes[request.request_id] = done
            self._maybe_lose_answer(context)
        return done

    def _task(self, task_id: str, context: grpc.ServicerContext) -> common_pb2.Task:
        task = self.store.tasks.get(task_id)
        if task is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {task_id} not found")
        return task

    def _bump(self, task: common_pb2.Task) -> common_pb2.Task:
        self.store.seq += 1
        task.version = self.store.seq
        return task

    def _new_execution(self, task_id: str, nominal_ms: int) -> common_pb2.Execution:
        self.store.seq += 1
        execution = common_pb2.Execution(
            execution_id=f"{task_id}-m{self.store.seq}",
            task_id=task_id,
            nominal_time_ms=nominal_ms,
            fired_at_ms=1_750_000_100_000,
            state=common_pb2.EXECUTION_PENDING,
        )
        self.store.executions[execution.execution_id] = execution
        return execution

    def UpdateTask(
        self, request: scheduler_pb2.UpdateTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Task:
        def body() -> common_pb2.Task:
            task = self._task(request.task_id, context)
            if self.store.race_updates > 0:
                self.store.race_updates -= 1
                self._bump(task)
            if request.expected_version and request.expected_version != task.version:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"task {request.task_id} is at version {task.version}, "
                    f"not the expected version {request.expected_version}",
                )
            if not request.spec.name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec.name: must not be empty")
            task.spec.CopyFrom(request.spec)
            return self._bump(task)

        result: common_pb2.Task = self._apply("UpdateTask", request, context, body)
        return result

    def PauseTask(
        self, request: scheduler_pb2.PauseTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Task:
        def body() -> common_pb2.Task:
            task = self._task(request.task_id, context)
            if task.state != common_pb2.TASK_SCHEDULED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task {request.task_id} is not scheduled")
            task.state = common_pb2.TASK_PAUSED
            task.pause_note = request.note
            task.paused_at_ms = 1_750_000_200_000
            return self._bump(task)

        result: common_pb2.Task = self._apply("PauseTask", request, context, body)
        return result

    def ResumeTask(
        self, request: scheduler_pb2.ResumeTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Task:
        def body() -> common_pb2.Task:
            task = self._task(request.task_id, context)
            if task.state != common_pb2.TASK_PAUSED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task {request.task_id} is not paused")
            task.state = common_pb2.TASK_SCHEDULED
            task.pause_note = ""
            task.paused_at_ms = 0
            return self._bump(task)

        result: common_pb2.Task = self._apply("ResumeTask", request, context, body)
        return result

    def TriggerTask(
        self, request: scheduler_pb2.TriggerTaskRequest, context: grpc.ServicerContext
    ) -> common_pb2.Execution:
        def body() -> common_pb2.Execution:
            self._task(request.task_id, context)
            return self._new_execution(request.task_id, 1_750_000_100_000)

        result: common_pb2.Execution = self._apply("TriggerTask", request, context, body)
        return result

    def BackfillTask(
        self, request: scheduler_pb2.BackfillTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.BackfillTaskResponse:
        def body() -> scheduler_pb2.BackfillTaskResponse:
            self._task(request.task_id, context)
            if request.to_ms < request.from_ms:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "to_ms: must not be before from_ms")
            cap = request.max_fires or 100
            nominals = range(request.from_ms, request.to_ms + 1, 60_000)
            executions = [self._new_execution(request.task_id, n) for n in list(nominals)[:cap]]
            return scheduler_pb2.BackfillTaskResponse(executions=executions)

        result: scheduler_pb2.BackfillTaskResponse = self._apply("BackfillTask", request, context, body)
        return result

    def ExplainTask(
        self, request: scheduler_pb2.ExplainTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ExplainTaskResponse:
        self._read("ExplainTask")
        self.store.requests.append(("ExplainTask", request))
        task = self._task(request.task_id, context)
        records = [
            r
            for r in self.store.ledger.get(request.task_id, [])
            if r.nominal_time_ms >= request.from_ms
            and (not request.to_ms or r.nominal_time_ms <= request.to_ms)
        ]
        return scheduler_pb2.ExplainTaskResponse(
            records=records[: request.limit or 100],
            next_fire_ms=task.next_fire_ms,
            state=task.state,
            note=task.pause_note,
        )

    def PreviewTask(
        self, request: scheduler_pb2.PreviewTaskRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.PreviewTaskResponse:
        self._read("PreviewTask")
        self.store.requests.append(("PreviewTask", request))
        self._task(request.task_id, context)
        start = request.from_ms or 1_750_000_000_000
        fires = [
            scheduler_pb2.PreviewFire(
                nominal_time_ms=start + i * 3_600_000,
                actual_ms=start + i * 3_600_000 + (1_000 if i == 1 else 0),
                local_time=f"2025-06-15T{17 + i:02d}:06:40+02:00[Europe/Paris]",
                notes=["jittered 1s"] if i == 1 else [],
            )
            for i in range(request.count or 10)
        ]
        return scheduler_pb2.PreviewTaskResponse(fires=fires)

    def PutCalendar(
        self, request: scheduler_pb2.PutCalendarRequest, context: grpc.ServicerContext
    ) -> common_pb2.Calendar:
        def body() -> common_pb2.Calendar:
            if not request.calendar.name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "calendar.name: must not be empty")
            for name in request.calendar.include:
                if name not in self.store.calendars:
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"calendar.include: no calendar named {name!r}"
                    )
            calendar = common_pb2.Calendar()
            calendar.CopyFrom(request.calendar)
            self.store.seq += 1
            calendar.version = self.store.seq
            calendar.updated_at_ms = 1_750_000_300_000
            self.store.calendars[calendar.name] = calendar
            return calendar

        result: common_pb2.Calendar = self._apply("PutCalendar", request, context, body)
        return result

    def GetCalendar(
        self, request: scheduler_pb2.GetCalendarRequest, context: grpc.ServicerContext
    ) -> common_pb2.Calendar:
        self._read("GetCalendar")
        calendar = self.store.calendars.get(request.name)
        if calendar is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"calendar {request.name} not found")
        return calendar

    def ListCalendars(
        self, request: scheduler_pb2.ListCalendarsRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListCalendarsResponse:
        self._read("ListCalendars")
        return scheduler_pb2.ListCalendarsResponse(
            calendars=[self.store.calendars[n] for n in sorted(self.store.calendars)]
        )

    def DeleteCalendar(
        self, request: scheduler_pb2.DeleteCalendarRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.DeleteCalendarResponse:
        def body() -> scheduler_pb2.DeleteCalendarResponse:
            if request.name not in self.store.calendars:
                context.abort(grpc.StatusCode.NOT_FOUND, f"calendar {request.name} not found")
            users = [
                t.task_id for t in self.store.tasks.values() if request.name in t.spec.schedule.calendars
            ]
            if users:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"calendar {request.name} is used by {users[0]}"
                )
            del self.store.calendars[request.name]
            return scheduler_pb2.DeleteCalendarResponse()

        result: scheduler_pb2.DeleteCalendarResponse = self._apply("DeleteCalendar", request, context, body)
        return result

    def CancelExecution(
        self, request: scheduler_pb2.CancelExecutionRequest, context: grpc.ServicerContext
    ) -> common_pb2.Execution:
        def body() -> common_pb2.Execution:
            execution = self.store.executions.get(request.execution_id)
            if execution is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"execution {request.execution_id} not found")
            live = (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED)
            if execution.state not in live:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"execution {request.execution_id} already ended"
                )
            execution.state = common_pb2.EXECUTION_CANCELLED
            execution.error = f"cancelled: {request.reason}" if request.reason else "cancelled"
            return execution

        result: common_pb2.Execution = self._apply("CancelExecution", request, context, body)
        return result

    # ---------------------------------------------------------------- dead letters (issue 4, dict-backed)

    def ListDeadLetters(
        self, request: scheduler_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListDeadLettersResponse:
        self._read("ListDeadLetters")
        self.store.requests.append(("ListDeadLetters", request))
        items = [
            d
            for d in sorted(self.store.dead_letters.values(), key=lambda d: d.execution_id)
            if not request.task_id or d.task_id == request.task_id
        ]
        page, token = _page(items, request.page_size, request.page_token)
        return scheduler_pb2.ListDeadLettersResponse(dead_letters=page, next_page_token=token)

    def GetDeadLetter(
        self, request: scheduler_pb2.GetDeadLetterRequest, context: grpc.ServicerContext
    ) -> common_pb2.DeadLetter:
        self._read("GetDeadLetter")
        dead = self.store.dead_letters.get(request.execution_id)
        if dead is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"dead letter {request.execution_id} not found")
        return dead

    def _selected(self, request: Any, context: grpc.ServicerContext) -> list[common_pb2.DeadLetter]:
        if bool(request.execution_ids) == bool(request.task_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "execution_ids: give ids or a task id")
        if request.execution_ids:
            for eid in request.execution_ids:
                if eid not in self.store.dead_letters:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"dead letter {eid} not found")
            chosen = [self.store.dead_letters[e] for e in request.execution_ids]
        else:
            chosen = sorted(
                (d for d in self.store.dead_letters.values() if d.task_id == request.task_id),
                key=lambda d: d.execution_id,
            )
        if isinstance(request, scheduler_pb2.RedriveDeadLettersRequest):
            chosen = [d for d in chosen if not d.redriven_as]  # redriven once already
        return chosen[: request.limit] if request.limit else chosen

    def RedriveDeadLetters(
        self, request: scheduler_pb2.RedriveDeadLettersRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.RedriveDeadLettersResponse:
        def body() -> scheduler_pb2.RedriveDeadLettersResponse:
            executions = []
            for dead in self._selected(request, context):
                execution = self._new_execution(dead.task_id, dead.nominal_time_ms)
                dead.redriven_as = execution.execution_id
                executions.append(execution)
            return scheduler_pb2.RedriveDeadLettersResponse(executions=executions)

        result: scheduler_pb2.RedriveDeadLettersResponse = self._apply(
            "RedriveDeadLetters", request, context, body
        )
        return result

    def PurgeDeadLetters(
        self, request: scheduler_pb2.PurgeDeadLettersRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.PurgeDeadLettersResponse:
        def body() -> scheduler_pb2.PurgeDeadLettersResponse:
            purged = 0
            for dead in self._selected(request, context):
                if not request.before_ms or dead.dead_at_ms < request.before_ms:
                    del self.store.dead_letters[dead.execution_id]
                    purged += 1
            return scheduler_pb2.PurgeDeadLettersResponse(purged=purged)

        result: scheduler_pb2.PurgeDeadLettersResponse = self._apply(
            "PurgeDeadLetters", request, context, body
        )
        return result


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
                    storage=cluster_pb2.StorageStatus(
                        measured=True,
                        exhausted=True,
                        refused="data",
                        reason="disk almost full: 3.0 MiB free on /data/n2",
                        used_bytes=10 << 20,
                        max_map_size_bytes=64 << 30,
                    ),
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

    def add_dead_letter(self, task_id: str, n: int, **fields: Any) -> common_pb2.DeadLetter:
        values: dict[str, Any] = {
            "execution_id": f"{task_id}-e{n}",
            "task_id": task_id,
            "task_name": "hello",
            "reason": "exit code 1 after 3 attempts",
            "attempts": 3,
            "dead_at_ms": 1_750_000_000_000 + n * 60_000 + 40,
            "nominal_time_ms": 1_750_000_000_000 + n * 60_000,
            "stdout_tail": b"partial\n",
            "stderr_tail": b"boom\n",
        }
        values.update(fields)
        dead = common_pb2.DeadLetter(**values)
        self.store.dead_letters[dead.execution_id] = dead
        return dead

    def methods(self, node: str) -> list[str]:
        return [m for n, m in self.store.calls if n == node]


def dead_address() -> str:
    """A loopback address on which nothing listens (connection refused): a port reserved for this
    process (tests.support.ports), so no other test binds it meanwhile."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(name="cluster")
def cluster_fixture() -> Iterator[FakeCluster]:
    """The `cluster` fixture: a running fake, stopped after the test. Import `cluster_fixture` where it is
    used (named apart from the fixture so that test parameters named `cluster` do not shadow an import)."""
    fake = FakeCluster()
    try:
        yield fake
    finally:
        fake.stop()
