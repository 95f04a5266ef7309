"""A write retried with the request id of its first attempt, which was applied, gets that attempt's answer
(from the dedup table, raft.result_bytes.remember), not a refusal by a check the servicer makes before
proposing that the first attempt's own effect makes fail. The SDK resends a write whose answer was lost (a
leader killed after applying it) with the same request id (tests/integration/test_writes_failover.py).

The checks so skipped (daemon.services.common._recorded): the quota a create, an import batch, a trigger
or a backfill filled exactly (RESOURCE_EXHAUSTED on the retry before), and the listing of a purge with
neither ids nor task (the letters it purged are gone: purged=0 on the retry before). DeleteTask's existence
check: tests/unit/test_delete_retry.py. The other writes' pre-checks hold after their own first attempt;
the last test retries each of them once, as a guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from test_bulk_import import T0, spec
from test_namespace_api import ALICE, Aborted, World, run

from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2

S = scheduler_pb2
Limits = commands_pb2.Limits


async def _twice_then_fresh(w: World, method: str, request: Any) -> tuple[Any, Any]:
    """`request` sent twice (answers equal), then again with another request id: that one refused."""
    first = await w.call(ALICE, method, request)
    again = await w.call(ALICE, method, request)
    assert again == first
    fresh = type(request)()
    fresh.CopyFrom(request)
    fresh.request_id = request.request_id + "-fresh"
    with pytest.raises(Aborted) as err:
        await w.call(ALICE, method, fresh)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, str(err.value)
    return first, again


def test_a_create_that_filled_max_tasks_is_answered_on_its_retry() -> None:
    async def body(w: World) -> None:
        w.node.limits = Limits(max_tasks=3)  # 2 tasks stored: this create fills it
        request = S.CreateTaskRequest(spec=spec("full", namespace="team-a"), request_id="c-1")
        first, _ = await _twice_then_fresh(w, "CreateTask", request)
        assert first.task.spec.name == "full"

    run(body)


def test_an_import_batch_that_filled_max_tasks_is_answered_on_its_retry() -> None:
    async def batch(rid: str) -> AsyncIterator[S.ImportTasksRequest]:
        yield S.ImportTasksRequest(
            request_id=rid, specs=[spec(f"i{i}", namespace="team-a") for i in range(2)]
        )

    async def body(w: World) -> None:
        w.node.limits = Limits(max_tasks=4)  # 2 tasks stored: this batch of 2 fills it
        first = await w.call(ALICE, "ImportTasks", batch("imp-1"))
        again = await w.call(ALICE, "ImportTasks", batch("imp-1"))
        assert (first.created, again.created, again.replayed) == (2, 0, 2)
        assert again.batches[0].first_task_id == first.batches[0].first_task_id
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "ImportTasks", batch("imp-2"))
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, str(err.value)

    run(body)


def test_a_trigger_that_filled_max_pending_per_task_is_answered_on_its_retry() -> None:
    async def body(w: World) -> None:
        w.node.limits = Limits(max_pending_per_task=1)  # the task has no execution not yet ended
        request = S.TriggerTaskRequest(task_id=w.ids["team-a"]["task"], request_id="t-1")
        first, _ = await _twice_then_fresh(w, "TriggerTask", request)
        assert first.manual and first.namespace == "team-a"

    run(body)


def test_a_backfill_that_filled_max_pending_per_task_is_answered_on_its_retry() -> None:
    async def body(w: World) -> None:
        hourly = spec("hourly", namespace="team-a")
        hourly.schedule.cron.expression = "0 * * * *"
        task = (await w.call(ALICE, "CreateTask", S.CreateTaskRequest(spec=hourly))).task
        w.node.clock.advance(3 * 3_600_000)  # its fire times T0 + 1 h and + 2 h are past (not fired)
        w.node.limits = Limits(max_pending_per_task=2)
        request = S.BackfillTaskRequest(
            task_id=task.task_id, from_ms=T0 + 1, to_ms=T0 + 2 * 3_600_000, request_id="b-1"
        )
        first, _ = await _twice_then_fresh(w, "BackfillTask", request)
        assert [e.nominal_time_ms for e in first.executions] == [T0 + 3_600_000, T0 + 2 * 3_600_000]

    run(body)


def test_a_purge_of_a_namespace_is_answered_on_its_retry() -> None:
    async def body(w: World) -> None:
        request = S.PurgeDeadLettersRequest(namespace="team-a", request_id="p-1")
        first = await w.call(ALICE, "PurgeDeadLetters", request)
        again = await w.call(ALICE, "PurgeDeadLetters", request)
        assert first.purged == again.purged == 1  # listed again, the retry found none: 0
        fresh = S.PurgeDeadLettersRequest(namespace="team-a", request_id="p-2")
        assert (await w.call(ALICE, "PurgeDeadLetters", fresh)).purged == 0

    run(body)


# The other writes, each retried once after its first attempt applied: the same answer. "hourly": a
# scheduled task; "task": one with a dead letter ("exec").
OTHERS: dict[str, Callable[[dict[str, str]], Any]] = {
    "UpdateTask": lambda a: S.UpdateTaskRequest(
        task_id=a["hourly"], spec=spec("renamed", namespace="team-a")
    ),
    "PauseTask": lambda a: S.PauseTaskRequest(task_id=a["hourly"], note="n"),
    "ResumeTask": lambda a: S.ResumeTaskRequest(task_id=a["hourly"]),
    "CancelTask": lambda a: S.CancelTaskRequest(task_id=a["hourly"]),
    "CancelExecution": lambda a: S.CancelExecutionRequest(execution_id=a["exec"]),
    "RedriveDeadLetters": lambda a: S.RedriveDeadLettersRequest(execution_ids=[a["exec"]]),
    "RedriveDeadLetters/task": lambda a: S.RedriveDeadLettersRequest(task_id=a["task"]),
    "PurgeDeadLetters/ids": lambda a: S.PurgeDeadLettersRequest(execution_ids=[a["exec"]]),
    "PurgeDeadLetters/task": lambda a: S.PurgeDeadLettersRequest(task_id=a["task"]),
    "PutCalendar": lambda a: S.PutCalendarRequest(
        calendar=common_pb2.Calendar(name="c2", namespace="team-a")
    ),
    "DeleteCalendar": lambda a: S.DeleteCalendarRequest(name="spare", namespace="team-a"),
}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_the_other_writes_retried_get_their_first_answer(name: str) -> None:
    async def body(w: World) -> None:
        hourly = spec("hourly", namespace="team-a")
        hourly.schedule.cron.expression = "0 * * * *"
        created = await w.call(ALICE, "CreateTask", S.CreateTaskRequest(spec=hourly))
        ids = dict(w.ids["team-a"], hourly=created.task.task_id)
        if name == "ResumeTask":
            await w.call(ALICE, "PauseTask", S.PauseTaskRequest(task_id=ids["hourly"]))
        spare = common_pb2.Calendar(name="spare", namespace="team-a")
        await w.call(ALICE, "PutCalendar", S.PutCalendarRequest(calendar=spare))  # unused: deletable
        w.node.limits = Limits(max_calendars=4, max_pending_per_task=1)  # a new calendar fills it
        request = OTHERS[name](ids)
        request.request_id = "r-1"
        method = name.partition("/")[0]
        first = await w.call(ALICE, method, request)
        assert await w.call(ALICE, method, request) == first

    run(body)
