"""The API of issue 15's search, statistics and results, through the real Scheduler servicer on an
in-memory node (test_namespace_api's world: a task, an execution and a dead letter in team-a and in
team-b): namespaces and roles, every new filter's bound refused naming its field, results byte-exact."""

from __future__ import annotations

import grpc
import pytest
from test_namespace_api import ALICE, RITA, Aborted, World, run

from cronraft.daemon.security.authz import ANONYMOUS
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft.codec import make_id

S = scheduler_pb2
FAILED = common_pb2.EXECUTION_FAILED


async def _run_with_result(w: World, ns: str, data: bytes) -> str:
    """One more execution of the namespace's task, ending with `data` as its result."""
    task_id = w.ids[ns]["task"]
    eid = make_id(2_000_000_000_000, b"result....")
    trigger = commands_pb2.TriggerTask(task_id=task_id, execution_id=eid)
    (done,) = await w.node.propose(
        [commands_pb2.Command(stamped_at_ms=2_000_000_000_000, trigger_task=trigger)]
    )
    assert done.applied, done.error
    grant = commands_pb2.Grant(execution_id=eid, worker_id="w2", lease_ttl_ms=10_000)
    (g,) = await w.node.propose([commands_pb2.Command(stamped_at_ms=2_000_000_000_001, grant=grant)])
    result = common_pb2.AttemptResult(
        execution_id=eid,
        token=g.execution.token,
        outcome=common_pb2.ATTEMPT_SUCCEEDED,
        started_at_ms=2_000_000_000_002,
        finished_at_ms=2_000_000_000_502,
        result=data,
    )
    complete = commands_pb2.Complete(execution_id=eid, token=g.execution.token, result=result)
    (c,) = await w.node.propose([commands_pb2.Command(stamped_at_ms=2_000_000_000_503, complete=complete)])
    assert c.applied, c.error
    return eid


def test_a_search_across_tasks_stays_in_the_callers_namespaces() -> None:
    async def body(w: World) -> None:
        failed = S.ListExecutionsRequest(states=[FAILED, common_pb2.EXECUTION_TIMED_OUT])
        mine = await w.call(
            ALICE, "ListExecutions", S.ListExecutionsRequest(namespace="team-a", state=FAILED)
        )
        assert [e.execution_id for e in mine.executions] == [w.ids["team-a"]["exec"]]
        assert mine.executions[0].namespace == "team-a"
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "ListExecutions", S.ListExecutionsRequest(namespace="team-b"))
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "ListExecutions", S.ListExecutionsRequest(all_namespaces=True))
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        failed.all_namespaces = True
        both = await w.call(RITA, "ListExecutions", failed)
        assert {e.execution_id for e in both.executions} == {w.ids[ns]["exec"] for ns in ("team-a", "team-b")}
        assert {e.namespace for e in both.executions} == {"team-a", "team-b"}
        by_worker = await w.call(
            RITA, "ListExecutions", S.ListExecutionsRequest(worker_id="w1", all_namespaces=True)
        )
        assert len(by_worker.executions) == 2
        none = await w.call(
            RITA, "ListExecutions", S.ListExecutionsRequest(worker_id="w9", all_namespaces=True)
        )
        assert not none.executions and not none.next_page_token

    run(body)


def test_tasks_by_last_outcome_and_kind() -> None:
    async def body(w: World) -> None:
        request = S.ListTasksRequest(all_namespaces=True, last_outcomes=[FAILED], kind="at")
        found = await w.call(RITA, "ListTasks", request)
        assert {t.task_id for t in found.tasks} == {w.ids[ns]["task"] for ns in ("team-a", "team-b")}
        assert all(t.last_outcome == FAILED and t.outcomes.failed == 1 for t in found.tasks)
        request = S.ListTasksRequest(namespace="team-a", last_outcomes=[common_pb2.EXECUTION_SUCCEEDED])
        assert not (await w.call(ALICE, "ListTasks", request)).tasks

    run(body)


def test_results_and_statistics() -> None:
    async def body(w: World) -> None:
        data = bytes(range(256)) * 3
        eid = await _run_with_result(w, "team-a", data)
        got = await w.call(ALICE, "GetExecutionResult", S.GetExecutionResultRequest(execution_id=eid))
        assert got.result == data and not got.return_value
        empty = S.GetExecutionResultRequest(execution_id=w.ids["team-a"]["exec"])
        assert (await w.call(ALICE, "GetExecutionResult", empty)).result == b""

        since = 1_999_999_000_000
        stats = (
            await w.call(ALICE, "GetTaskStats", S.GetTaskStatsRequest(task_id=w.ids["team-a"]["task"]))
        ).stats
        assert stats.total.runs == 2 and stats.total.failed == 1 and stats.total.succeeded == 1
        assert stats.last_outcome == common_pb2.EXECUTION_SUCCEEDED and stats.last_execution_id == eid
        request = S.GetTaskStatsRequest(task_id=w.ids["team-a"]["task"], since_ms=since)
        assert (await w.call(ALICE, "GetTaskStats", request)).stats.since_ms <= since

        with pytest.raises(Aborted) as err:
            await w.call(ALICE, "GetClusterStats", S.GetClusterStatsRequest())
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and '"*"' in str(err.value)
        cluster = (await w.call(RITA, "GetClusterStats", S.GetClusterStatsRequest(limit=5))).stats
        assert len(cluster.throughput) == 60
        assert cluster.since_ms > 0

    run(body)


BAD = [
    ("ListExecutions", S.ListExecutionsRequest(states=[99]), "states[0]"),
    ("ListExecutions", S.ListExecutionsRequest(states=[1] * 11), "states"),
    ("ListExecutions", S.ListExecutionsRequest(since_ms=5, until_ms=5), "until_ms"),
    ("ListExecutions", S.ListExecutionsRequest(since_ms=-1), "since_ms"),
    ("ListExecutions", S.ListExecutionsRequest(worker_id="w" * 200), "worker_id"),
    ("ListExecutions", S.ListExecutionsRequest(tags={f"k{i}": "v" for i in range(65)}), "tags"),
    ("ListExecutions", S.ListExecutionsRequest(tags={"k": "v" * 300}), "tags.k"),
    ("ListExecutions", S.ListExecutionsRequest(page_token="x" * 65), "page_token"),
    ("ListExecutions", S.ListExecutionsRequest(page_token="not-a-token"), "page_token"),
    ("ListExecutions", S.ListExecutionsRequest(by_completed=True, page_token="c123"), "page_token"),
    ("ListExecutions", S.ListExecutionsRequest(namespace="Bad_NS"), "namespace"),
    ("ListTasks", S.ListTasksRequest(kind="hourly"), "kind"),
    ("ListTasks", S.ListTasksRequest(kind="k" * 17), "kind"),
    ("ListTasks", S.ListTasksRequest(last_outcomes=[common_pb2.EXECUTION_RUNNING]), "last_outcomes[0]"),
    ("ListTasks", S.ListTasksRequest(next_after_ms=10, next_before_ms=5), "next_before_ms"),
    ("ListTasks", S.ListTasksRequest(next_before_ms=5, page_token="d" + "0" * 47), "page_token"),
    ("GetTaskStats", S.GetTaskStatsRequest(task_id="nope"), "task_id"),
    ("GetTaskStats", S.GetTaskStatsRequest(task_id=make_id(1, bytes(10)), since_ms=-5), "since_ms"),
    ("GetClusterStats", S.GetClusterStatsRequest(limit=21), "limit"),
    ("GetExecutionResult", S.GetExecutionResultRequest(execution_id="nope"), "execution_id"),
]


@pytest.mark.parametrize(("method", "request_", "field"), BAD, ids=[f"{m}-{f}" for m, _, f in BAD])
def test_every_new_input_is_bounded_naming_its_field(method: str, request_: object, field: str) -> None:
    async def body(w: World) -> None:
        with pytest.raises(Aborted) as err:
            await w.call(ANONYMOUS, method, request_)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, str(err.value)
        assert f"INVALID_ARGUMENT: {field}: " in str(err.value)

    run(body)
