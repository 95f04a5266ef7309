"""A DeleteTask retried with the request id of the delete that removed the task gets that delete's answer
from the dedup table, not NOT_FOUND. The SDK resends a write whose answer was lost (a leader killed after
applying it) with the same request id; the servicer's existence check ran before the dedup table was
consulted, so a delete that succeeded was reported NOT_FOUND (seen on 3 real nodes:
tests/integration/test_writes_failover.py::test_delete_task). The caller's role is checked in the deleted
task's namespace, which the dedup record does not keep. Under the feature schedule_fixes a request id is
its caller's (daemon/services/common._caller_scope): the record found is the caller's own, made with the
roles it holds now, and its retry is answered; another caller reusing the id makes a new delete. Below
it, a principal with the role in every namespace gets the answer, one with roles in some namespaces
NOT_FOUND (the remains of a deleted task are seen only in "*", common._task_namespace)."""

from __future__ import annotations

import pytest
from test_namespace_api import ALICE, Aborted, World, run

from cronraft.daemon.security.authz import Principal
from cronraft.proto.v1 import scheduler_pb2
from cronraft.raft import features
from cronraft.tokenfile import check_roles

BOB = Principal("bob", check_roles({"team-b": ["operator"]}, "roles"), "token")
OPS = Principal("ops", check_roles({"*": ["operator"]}, "roles"), "token")


def test_a_delete_retried_with_its_request_id_gets_its_answer() -> None:
    async def body(w: World) -> None:
        request = scheduler_pb2.DeleteTaskRequest(task_id=w.ids["team-a"]["task"], request_id="del-1")
        first = await w.call(OPS, "DeleteTask", request)
        again = await w.call(OPS, "DeleteTask", request)
        assert first == again and first.task.task_id == request.task_id
        fresh = scheduler_pb2.DeleteTaskRequest(task_id=request.task_id, request_id="del-2")
        with pytest.raises(Aborted, match="NOT_FOUND"):  # a new request: the task is gone
            await w.call(OPS, "DeleteTask", fresh)

    run(body)


def test_the_retry_is_the_callers_own() -> None:
    """A request id is its caller's (common._caller_scope, feature schedule_fixes): bob's retry gets his
    delete's answer with his roles in team-b only; anyone else reusing his request id makes a new delete
    of a task that is gone (NOT_FOUND), whatever its roles."""

    async def body(w: World) -> None:
        request = scheduler_pb2.DeleteTaskRequest(task_id=w.ids["team-b"]["task"], request_id="del-b")
        first = await w.call(BOB, "DeleteTask", request)
        assert (await w.call(BOB, "DeleteTask", request)) == first
        for who in (ALICE, OPS):
            with pytest.raises(Aborted, match="NOT_FOUND"):
                await w.call(who, "DeleteTask", request)

    run(body)


def test_below_the_feature_the_retry_needs_the_role_in_every_namespace() -> None:
    async def body(w: World) -> None:
        with w.node.kv.write() as txn:  # a cluster below schedule_fixes: request ids not tied to callers
            level = features.SUPPORTED - {features.SCHEDULE_FIXES}
            txn.put("meta", features.META_FEATURES, features.encode(level))
        request = scheduler_pb2.DeleteTaskRequest(task_id=w.ids["team-b"]["task"], request_id="del-b")
        await w.call(BOB, "DeleteTask", request)
        for who in (ALICE, BOB):  # as if it did not exist (the answer before the fix, for everyone)
            with pytest.raises(Aborted, match="NOT_FOUND"):
                await w.call(who, "DeleteTask", request)
        assert (await w.call(OPS, "DeleteTask", request)).task.task_id == request.task_id

    run(body)
