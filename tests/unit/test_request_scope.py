"""A request id is its caller's (docs/security.md, "Request ids"): the dedup table answers a retried write
from the first attempt's record only for the principal that made it, with the same roles. Before, the key
was the kind of write and the client's id alone, so any caller past the role checks who reused another
caller's request id got that caller's recorded answer (a task of another namespace, its spec) and its own
write was dropped; the servicer's pre-checks skipped for a recorded request (common._recorded: quotas)
were skipped for it too. Under the cluster feature schedule_fixes only (daemon.services.common
._caller_scope): below it the keys are the previous release's. Real processes:
tests/integration/test_request_scope_real.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from test_bulk_import import spec
from test_namespace_api import ALICE, Aborted, World, run

from cronraft.daemon.security.authz import Principal
from cronraft.proto.v1 import audit_pb2, commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import audit_trail, features, retry
from cronraft.raft import state as sm
from cronraft.tokenfile import check_roles

S = scheduler_pb2
BOB = Principal("bob", check_roles({"team-b": ["operator"]}, "roles"), "token")
# alice's name with another credential's roles: another caller.
ALICE_IN_B = Principal("alice", check_roles({"team-b": ["operator"]}, "roles"), "token")
# alice again, as a JWT granting the same roles: the same caller (a rotated or refreshed credential).
ALICE_JWT = Principal("alice", check_roles({"team-a": ["operator"]}, "roles"), "jwt")


def _features_off(w: World) -> None:
    """The cluster below schedule_fixes (a rolling upgrade from the release before it)."""
    with w.node.kv.write() as txn:
        txn.put(
            "meta", features.META_FEATURES, features.encode(features.SUPPORTED - {features.SCHEDULE_FIXES})
        )


def _create(name: str, namespace: str, rid: str) -> S.CreateTaskRequest:
    return S.CreateTaskRequest(spec=spec(name, namespace=namespace), request_id=rid)


def _tasks(w: World, namespace: str) -> list[str]:
    with w.node.kv.read() as txn:
        tasks, _ = sm.list_tasks(txn, namespace=namespace, page_size=100)
    return sorted(t.spec.name for t in tasks)


def test_a_create_with_another_callers_request_id_is_a_new_write() -> None:
    async def body(w: World) -> None:
        mine = await w.call(ALICE, "CreateTask", _create("alice-job", "team-a", "shared"))
        theirs = await w.call(BOB, "CreateTask", _create("bob-job", "team-b", "shared"))
        # bob gets his own task, never alice's (her task id and spec in team-a).
        assert theirs.task.task_id != mine.task.task_id
        assert (theirs.task.spec.name, theirs.task.spec.namespace) == ("bob-job", "team-b")
        assert "bob-job" in _tasks(w, "team-b")
        # Each caller's retry is still answered from its own record: one task each.
        assert await w.call(ALICE, "CreateTask", _create("alice-job", "team-a", "shared")) == mine
        assert await w.call(ALICE_JWT, "CreateTask", _create("alice-job", "team-a", "shared")) == mine
        assert await w.call(BOB, "CreateTask", _create("bob-job", "team-b", "shared")) == theirs
        assert _tasks(w, "team-a").count("alice-job") == 1
        assert _tasks(w, "team-b").count("bob-job") == 1

    run(body)


def test_the_same_name_with_other_roles_is_another_caller() -> None:
    async def body(w: World) -> None:
        mine = await w.call(ALICE, "CreateTask", _create("a-job", "team-a", "r-1"))
        other = await w.call(ALICE_IN_B, "CreateTask", _create("b-job", "team-b", "r-1"))
        assert other.task.task_id != mine.task.task_id and other.task.spec.namespace == "team-b"

    run(body)


# Writes on an object of the caller's own namespace ("task": a task, "exec": its dead letter's execution),
# each made by alice on team-a's then by bob on team-b's with the same request id.
WRITES: dict[str, Callable[[dict[str, str], str], Any]] = {
    "PauseTask": lambda o, rid: S.PauseTaskRequest(task_id=o["task"], note="n", request_id=rid),
    "TriggerTask": lambda o, rid: S.TriggerTaskRequest(task_id=o["task"], request_id=rid),
    "CancelTask": lambda o, rid: S.CancelTaskRequest(task_id=o["task"], request_id=rid),
    "DeleteTask": lambda o, rid: S.DeleteTaskRequest(task_id=o["task"], request_id=rid),
    "RedriveDeadLetters": lambda o, rid: S.RedriveDeadLettersRequest(
        execution_ids=[o["exec"]], request_id=rid
    ),
    "PurgeDeadLetters": lambda o, rid: S.PurgeDeadLettersRequest(task_id=o["task"], request_id=rid),
}


def _answered_for(method: str, answer: Any) -> set[str]:
    """The ids of tasks or executions `answer` names (to check that it is the caller's own)."""
    if method in ("PauseTask", "CancelTask"):
        return {answer.task_id}
    if method == "DeleteTask":
        return {answer.task.task_id}
    if method == "TriggerTask":
        return {answer.task_id}
    if method == "RedriveDeadLetters":
        return {e.task_id for e in answer.executions}
    return set()  # a purge answers a count


@pytest.mark.parametrize("method", sorted(WRITES))
def test_a_write_with_another_callers_request_id_acts_on_its_own_object(method: str) -> None:
    async def body(w: World) -> None:
        a, b = dict(w.ids["team-a"]), dict(w.ids["team-b"])
        if method not in ("RedriveDeadLetters", "PurgeDeadLetters"):  # a task still scheduled
            for who, own, ns in ((ALICE, a, "team-a"), (BOB, b, "team-b")):
                hourly = spec(f"hourly-{ns}", namespace=ns)
                hourly.schedule.cron.expression = "0 * * * *"
                created = await w.call(who, "CreateTask", S.CreateTaskRequest(spec=hourly))
                own["task"] = created.task.task_id
        await w.call(ALICE, method, WRITES[method](a, "same-id"))
        answer = await w.call(BOB, method, WRITES[method](b, "same-id"))
        assert _answered_for(method, answer) <= {b["task"]}, answer
        if method == "PurgeDeadLetters":
            assert answer.purged == 1
        with w.node.kv.read() as txn:  # bob's write took effect on his object
            task = sm.read_task(txn, b["task"])
            letters, _ = retry.list_dead_letters(txn, b["task"], 10, "")
        effect = {
            "PauseTask": lambda: task is not None and task.state == common_pb2.TASK_PAUSED,
            "CancelTask": lambda: task is not None and task.state == common_pb2.TASK_CANCELLED,
            "DeleteTask": lambda: task is None,
            "TriggerTask": lambda: answer.manual and answer.task_id == b["task"],
            "RedriveDeadLetters": lambda: (
                [(e.execution_id, e.redrives) for e in answer.executions] == [(b["exec"], 1)]
            ),
            "PurgeDeadLetters": lambda: not letters,
        }[method]
        assert effect(), (method, task)

    run(body)


def test_another_callers_request_id_skips_no_check_made_before_proposing() -> None:
    """alice's create filled max_tasks: its retry skips the quota check (common._recorded); bob reusing
    her request id is refused by it, as any new create is."""

    async def body(w: World) -> None:
        w.node.limits = commands_pb2.Limits(max_tasks=3)  # 2 tasks stored: alice's create fills it
        await w.call(ALICE, "CreateTask", _create("full", "team-a", "c-1"))
        with pytest.raises(Aborted) as err:
            await w.call(BOB, "CreateTask", _create("over", "team-b", "c-1"))
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, str(err.value)
        assert "over" not in _tasks(w, "team-b")

    run(body)


def test_an_import_batch_keeps_the_clients_request_id() -> None:
    async def batch(rid: str, namespace: str) -> AsyncIterator[S.ImportTasksRequest]:
        yield S.ImportTasksRequest(request_id=rid, specs=[spec(f"i-{namespace}", namespace=namespace)])

    async def body(w: World) -> None:
        mine = await w.call(ALICE, "ImportTasks", batch("imp", "team-a"))
        theirs = await w.call(BOB, "ImportTasks", batch("imp", "team-b"))
        assert [b.request_id for b in (*mine.batches, *theirs.batches)] == ["imp", "imp"]
        assert (theirs.created, theirs.replayed) == (1, 0)
        assert theirs.batches[0].first_task_id != mine.batches[0].first_task_id
        again = await w.call(BOB, "ImportTasks", batch("imp", "team-b"))
        assert (again.created, again.replayed, again.batches[0].request_id) == (0, 1, "imp")

    run(body)


def test_below_the_feature_the_key_is_the_previous_releases() -> None:
    """Without schedule_fixes the stored key is `kind:id` (the bytes the release before it stores), and a
    reused request id is answered from the first caller's record as then."""

    async def body(w: World) -> None:
        _features_off(w)
        mine = await w.call(ALICE, "CreateTask", _create("alice-job", "team-a", "shared"))
        theirs = await w.call(BOB, "CreateTask", _create("bob-job", "team-b", "shared"))
        assert theirs == mine
        with w.node.kv.read() as txn:
            keys = [k for k, _ in txn.scan("requests", b"", None)]
        assert keys == [b"create:shared"]

    run(body)


def test_under_the_feature_the_key_is_scoped_and_authentication_off_is_not() -> None:
    async def body(w: World) -> None:
        await w.call(ALICE, "CreateTask", _create("alice-job", "team-a", "scoped"))
        anonymous = Principal("anonymous", ALICE.roles, "none")
        await w.call(anonymous, "CreateTask", _create("anon-job", "team-a", "plain"))
        with w.node.kv.read() as txn:
            keys = sorted(k.decode() for k, _ in txn.scan("requests", b"", None))
        assert keys[0] == "create:plain"
        assert keys[1].startswith("create@") and keys[1].endswith(":scoped") and len(keys[1]) == 46

    run(body)


def test_the_audit_trail_keeps_the_clients_request_id() -> None:
    """The scope goes before the first ':', which raft.audit_trail drops with the kind."""

    async def body(w: World) -> None:
        await w.call(ALICE, "CreateTask", _create("audited", "team-a", "r:with:colons"))
        with w.node.kv.read() as txn:
            (key,) = [k.decode() for k, _ in txn.scan("requests", b"", None)]
        cmd = commands_pb2.Command(request_id=key, audit=audit_pb2.AuditMeta(principal="alice"))
        record = audit_trail.build(1, 0, cmd, commands_pb2.CommandResult(applied=True))
        assert record.request_id == "r:with:colons"

    run(body)
