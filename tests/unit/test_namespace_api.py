"""The Scheduler servicer's namespace checks (issue 13), every RPC, against an in-memory node: a caller
who holds roles in team-a only gets NOT_FOUND for team-b's task, execution and dead letter (as if they did
not exist), PERMISSION_DENIED for creates and lists in team-b, and nothing of team-b in its lists; a
reader of every namespace sees both with all_namespaces. Real processes: tests/integration/
test_namespaces.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from test_bulk_import import MiniNode, spec

from cronraft.daemon.security import authz
from cronraft.daemon.security.authz import Principal
from cronraft.daemon.services import SchedulerServicer
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft.codec import make_id
from cronraft.tokenfile import check_roles

S = scheduler_pb2
ALICE = Principal("alice", check_roles({"team-a": ["operator"]}, "roles"), "token")
RITA = Principal("rita", check_roles({"*": ["reader"]}, "roles"), "token")


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class Context:
    def set_trailing_metadata(self, md: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


class World:
    """A node holding, in team-a and team-b each, a task, a calendar, an execution and a dead letter."""

    def __init__(self) -> None:
        self.node = MiniNode()
        self.api = SchedulerServicer(self.node)  # type: ignore[arg-type]
        self.ids: dict[str, dict[str, str]] = {}

    async def setup(self) -> None:
        self.node.replicator.start()
        self.node.committer.start()
        epoch = commands_pb2.Epoch(term=1, leader_id="n1")
        await self.node.propose([commands_pb2.Command(stamped_at_ms=0, epoch=epoch)])
        for ns in ("team-a", "team-b"):
            cal = common_pb2.Calendar(name="hol", namespace=ns)
            cal.exclude.add().dates.dates.append("2030-01-01")
            await self.api.PutCalendar(S.PutCalendarRequest(calendar=cal), Context())  # type: ignore[arg-type]
            s = spec(f"job-{ns}", namespace=ns, max_attempts=3)
            s.retry.initial_backoff_ms = 1_000  # a retry policy: a final failure is a dead letter
            s.schedule.calendars.append("hol")
            task = (await self.api._create(S.CreateTaskRequest(spec=s))).task
            letter = await self._dead_letter(task)
            self.ids[ns] = {"task": task.task_id, "exec": letter}

    async def _dead_letter(self, task: common_pb2.Task) -> str:
        """Fire the task, lease it, and have the worker refuse it: a dead letter (raft.retry)."""
        eid = make_id(task.next_fire_ms, task.spec.namespace.encode().ljust(10, b"."))
        at = task.next_fire_ms
        cmds = [
            commands_pb2.Command(
                stamped_at_ms=at,
                fire=commands_pb2.Fire(task_id=task.task_id, nominal_time_ms=at, execution_id=eid),
            )
        ]
        (fired,) = await self.node.propose(cmds)
        assert fired.applied, fired.error
        grant = commands_pb2.Grant(execution_id=eid, worker_id="w1", lease_ttl_ms=10_000)
        (granted,) = await self.node.propose([commands_pb2.Command(stamped_at_ms=at, grant=grant)])
        assert granted.applied, granted.error
        token = granted.execution.token
        result = common_pb2.AttemptResult(
            execution_id=eid, token=token, outcome=common_pb2.ATTEMPT_REFUSED, error="no"
        )
        complete = commands_pb2.Complete(execution_id=eid, token=token, result=result)
        (done,) = await self.node.propose([commands_pb2.Command(stamped_at_ms=at + 1, complete=complete)])
        assert done.applied and done.dead_letters, done.error
        return eid

    async def call(self, principal: Principal, method: str, request: Any) -> Any:
        token = authz._current.set(principal)
        try:
            return await getattr(self.api, method)(request, Context())
        finally:
            authz._current.reset(token)


def run(body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        world = World()
        await world.setup()
        try:
            await body(world)
        finally:
            await world.node.committer.close()

    asyncio.run(main())


# Every by-id RPC, with a request naming team-b's object.
BY_ID: dict[str, Callable[[dict[str, str]], Any]] = {
    "GetTask": lambda b: S.GetTaskRequest(task_id=b["task"]),
    "CancelTask": lambda b: S.CancelTaskRequest(task_id=b["task"]),
    "DeleteTask": lambda b: S.DeleteTaskRequest(task_id=b["task"]),
    "UpdateTask": lambda b: S.UpdateTaskRequest(task_id=b["task"], spec=spec("x")),
    "PauseTask": lambda b: S.PauseTaskRequest(task_id=b["task"]),
    "ResumeTask": lambda b: S.ResumeTaskRequest(task_id=b["task"]),
    "TriggerTask": lambda b: S.TriggerTaskRequest(task_id=b["task"]),
    "BackfillTask": lambda b: S.BackfillTaskRequest(task_id=b["task"], from_ms=1, to_ms=2),
    "ExplainTask": lambda b: S.ExplainTaskRequest(task_id=b["task"]),
    "PreviewTask": lambda b: S.PreviewTaskRequest(task_id=b["task"]),
    "ListExecutions": lambda b: S.ListExecutionsRequest(task_id=b["task"]),
    "GetExecution": lambda b: S.GetExecutionRequest(execution_id=b["exec"]),
    "GetExecutionLogs": lambda b: S.GetExecutionLogsRequest(execution_id=b["exec"]),
    "GetExecutionResult": lambda b: S.GetExecutionResultRequest(execution_id=b["exec"]),
    "GetTaskStats": lambda b: S.GetTaskStatsRequest(task_id=b["task"]),
    "CancelExecution": lambda b: S.CancelExecutionRequest(execution_id=b["exec"]),
    "GetDeadLetter": lambda b: S.GetDeadLetterRequest(execution_id=b["exec"]),
    "ListDeadLetters": lambda b: S.ListDeadLettersRequest(task_id=b["task"]),
    "RedriveDeadLetters": lambda b: S.RedriveDeadLettersRequest(task_id=b["task"]),
    "PurgeDeadLetters": lambda b: S.PurgeDeadLettersRequest(task_id=b["task"]),
}


@pytest.mark.parametrize("method", sorted(BY_ID))
def test_another_namespaces_object_is_not_found(method: str) -> None:
    async def body(w: World) -> None:
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, method, BY_ID[method](w.ids["team-b"]))
        assert err.value.code == grpc.StatusCode.NOT_FOUND, str(err.value)
        # A reader of team-b sees it, and is refused the write with PERMISSION_DENIED instead.
        reads = ("GetTask", "ExplainTask", "PreviewTask", "ListExecutions", "ListDeadLetters", "GetTaskStats")
        if method not in reads:
            if method in ("GetExecution", "GetExecutionLogs", "GetExecutionResult", "GetDeadLetter"):
                return
            with pytest.raises(Aborted) as err:
                await w.call(RITA, method, BY_ID[method](w.ids["team-b"]))
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, str(err.value)

    run(body)


def test_every_scheduler_rpc_is_covered() -> None:
    """Each Scheduler method is in BY_ID or tested below (a new RPC must get its namespace check)."""
    below = {"CreateTask", "ImportTasks", "ListTasks", "PutCalendar", "GetCalendar", "ListCalendars"}
    below |= {"DeleteCalendar", "GetClusterStats"}
    methods = set(S.DESCRIPTOR.services_by_name["Scheduler"].methods_by_name)
    assert methods == set(BY_ID) | below


def test_own_namespace_works_and_lists_hold_only_it() -> None:
    async def body(w: World) -> None:
        a, b = w.ids["team-a"], w.ids["team-b"]
        got = await w.call(ALICE, "GetTask", S.GetTaskRequest(task_id=a["task"]))
        assert got.spec.namespace == "team-a"
        ex = await w.call(ALICE, "GetExecution", S.GetExecutionRequest(execution_id=a["exec"]))
        assert ex.namespace == "team-a"
        listed = await w.call(ALICE, "ListTasks", S.ListTasksRequest(namespace="team-a"))
        assert [t.task_id for t in listed.tasks] == [a["task"]]
        letters = await w.call(ALICE, "ListDeadLetters", S.ListDeadLettersRequest(namespace="team-a"))
        assert [(d.execution_id, d.namespace) for d in letters.dead_letters] == [(a["exec"], "team-a")]
        for method, request in [
            ("ListTasks", S.ListTasksRequest(namespace="team-b")),
            ("ListTasks", S.ListTasksRequest()),  # the default namespace
            ("ListTasks", S.ListTasksRequest(all_namespaces=True)),
            ("ListDeadLetters", S.ListDeadLettersRequest(namespace="team-b")),
            ("ListCalendars", S.ListCalendarsRequest(namespace="team-b")),
            ("GetCalendar", S.GetCalendarRequest(name="hol", namespace="team-b")),
            ("CreateTask", S.CreateTaskRequest(spec=spec("x", namespace="team-b"))),
            ("PutCalendar", S.PutCalendarRequest(calendar=common_pb2.Calendar(name="c", namespace="team-b"))),
            ("DeleteCalendar", S.DeleteCalendarRequest(name="hol", namespace="team-b")),
            ("PurgeDeadLetters", S.PurgeDeadLettersRequest(namespace="team-b")),
        ]:
            with pytest.raises(Aborted) as err:
                await w.call(ALICE, method, request)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, (method, str(err.value))
        # Ids of another namespace in a redrive or purge are skipped, as unknown ids are; mixing refused.
        purged = await w.call(ALICE, "PurgeDeadLetters", S.PurgeDeadLettersRequest(execution_ids=[b["exec"]]))
        assert purged.purged == 0
        redriven = await w.call(
            ALICE, "RedriveDeadLetters", S.RedriveDeadLettersRequest(execution_ids=[b["exec"]])
        )
        assert not redriven.executions
        # A purge with no filter stays in its namespace: team-b's dead letter survives.
        purged = await w.call(ALICE, "PurgeDeadLetters", S.PurgeDeadLettersRequest(namespace="team-a"))
        assert purged.purged == 1
        both = await w.call(RITA, "ListDeadLetters", S.ListDeadLettersRequest(all_namespaces=True))
        assert [d.execution_id for d in both.dead_letters] == [b["exec"]]
        # A task cannot move, nor depend on another namespace's task.
        moved = spec("x", namespace="team-b")
        with pytest.raises(Aborted, match="cannot move"):
            await w.call(ALICE, "UpdateTask", S.UpdateTaskRequest(task_id=a["task"], spec=moved))
        dep = spec("d", namespace="team-a")
        dep.depends_on.add(task_id=b["task"])
        with pytest.raises(
            Aborted, match=rf"depends_on\[0\].task_id: no task {b['task']} in namespace team-a"
        ):
            await w.call(ALICE, "CreateTask", S.CreateTaskRequest(spec=dep))

    run(body)


def test_a_reader_of_every_namespace_sees_both() -> None:
    async def body(w: World) -> None:
        listed = await w.call(RITA, "ListTasks", S.ListTasksRequest(all_namespaces=True))
        assert sorted(t.spec.namespace for t in listed.tasks) == ["team-a", "team-b"]
        cals = await w.call(RITA, "ListCalendars", S.ListCalendarsRequest(all_namespaces=True))
        assert sorted(c.namespace for c in cals.calendars) == ["team-a", "team-b"]
        only_b = await w.call(RITA, "ListCalendars", S.ListCalendarsRequest(namespace="team-b"))
        assert [c.namespace for c in only_b.calendars] == ["team-b"]
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "ListCalendars", S.ListCalendarsRequest(all_namespaces=True))
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED

    run(body)


def test_bad_namespaces_are_refused_naming_the_field() -> None:
    async def body(w: World) -> None:
        for method, request, field in [
            ("ListTasks", S.ListTasksRequest(namespace="Team_B"), "namespace"),
            ("CreateTask", S.CreateTaskRequest(spec=spec("x", namespace="a" * 64)), "spec.namespace"),
            ("GetCalendar", S.GetCalendarRequest(name="hol", namespace="x/y"), "namespace"),
        ]:
            with pytest.raises(Aborted) as err:
                await w.call(authz.ANONYMOUS, method, request)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert str(err.value).startswith(f"INVALID_ARGUMENT: {field}: ")

    run(body)


def test_an_import_is_checked_spec_by_spec_in_each_specs_namespace() -> None:
    async def specs(*namespaces: str) -> Any:
        yield S.ImportTasksRequest(
            request_id="imp", specs=[spec(f"i-{ns}", namespace=ns) for ns in namespaces]
        )

    async def body(w: World) -> None:
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "ImportTasks", specs("team-a", "team-b"))
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "team-b" in str(err.value)
        done = await w.call(ALICE, "ImportTasks", specs("team-a", "team-a"))
        assert done.created == 2
        listed = await w.call(ALICE, "ListTasks", S.ListTasksRequest(namespace="team-a", name_prefix="i-"))
        assert [t.spec.namespace for t in listed.tasks] == ["team-a", "team-a"]

    run(body)
