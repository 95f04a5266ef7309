"""Retrying an HTTP payload by its status: an http payload's exit code is the response status, so its retry
policy's lists hold HTTP statuses (100-599), the other kinds' exit codes (0-255). Checked for new and
updated specs (raft.validate.check_retry_codes: the API, the SDK's spec builders, schedctl); apply()
keeps accepting what it accepted. The retry decision itself (raft.retry) compares the attempt's exit code
with the lists, whatever the payload. Real processes: tests/integration/test_run_semantics.py."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from statelog import Log, complete, create, eid, epoch, grant, tid, trigger
from test_bulk_import import MiniNode

from cronraft.client import _specs, command, every, handler, http, retry, shell
from cronraft.daemon.services import SchedulerServicer
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft import retry as retries
from cronraft.raft import state as sm
from cronraft.raft.validate import check_retry_codes, validate_spec

T0 = 1_767_225_600_000
HTTP = http("http://127.0.0.1:8080/run")
CMD = command("true")


def _spec(payload: common_pb2.Payload, **lists: list[int]) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name="t",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 3_600_000)),
        payload=payload,
        max_attempts=5,
    )
    s.retry.initial_backoff_ms = 1_000
    for name, codes in lists.items():
        getattr(s.retry, name).extend(codes)
    return s


def _refusal(s: common_pb2.TaskSpec) -> str:
    with pytest.raises(InvalidArgument) as info:
        check_retry_codes(s)
    return str(info.value)


# -- validation ----------------------------------------------------------------------------------


def test_an_http_payload_takes_http_statuses_in_both_lists() -> None:
    check_retry_codes(_spec(HTTP, retryable_exit_codes=[503, 429, 100, 599]))
    check_retry_codes(_spec(HTTP, retryable_exit_codes=[503, -1]))  # -1: no response at all
    check_retry_codes(_spec(HTTP, non_retryable_exit_codes=[404, 400]))
    check_retry_codes(_spec(HTTP))  # a policy without lists
    check_retry_codes(common_pb2.TaskSpec(payload=HTTP))  # no policy


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        (
            {"retryable_exit_codes": [503, 429, 700]},
            "spec.retry.retryable_exit_codes[2]: 700 is not an HTTP status (100-599) nor -1 (no response): "
            "an http payload's exit code is the response status",
        ),
        ({"retryable_exit_codes": [3]}, "spec.retry.retryable_exit_codes[0]: 3 is not an HTTP status"),
        ({"non_retryable_exit_codes": [404, 99]}, "spec.retry.non_retryable_exit_codes[1]: 99 is not an"),
        ({"non_retryable_exit_codes": [-2]}, "spec.retry.non_retryable_exit_codes[0]: -2 is not an HTTP"),
    ],
)
def test_an_http_payload_refuses_what_is_no_http_status(lists: dict[str, list[int]], message: str) -> None:
    assert _refusal(_spec(HTTP, **lists)).startswith(message)


@pytest.mark.parametrize("payload", [CMD, shell("exit 3"), handler("h")], ids=["command", "shell", "handler"])
def test_the_other_kinds_take_exit_codes(payload: common_pb2.Payload) -> None:
    check_retry_codes(_spec(payload, retryable_exit_codes=[0, 3, 255], non_retryable_exit_codes=[2]))
    assert _refusal(_spec(payload, retryable_exit_codes=[3, 503])) == (
        "spec.retry.retryable_exit_codes[1]: 503 is not an exit code (0-255): HTTP statuses apply to an "
        "http payload only"
    )
    assert _refusal(_spec(payload, non_retryable_exit_codes=[700])) == (
        "spec.retry.non_retryable_exit_codes[0]: 700 is not an exit code (0-255)"
    )
    assert "-1 is not an exit code (0-255)" in _refusal(_spec(payload, non_retryable_exit_codes=[-1]))


def test_the_list_length_bound_is_unchanged_and_checked_by_apply() -> None:
    """At most 256 codes per list (raft.validate.MAX_EXIT_CODES), for every kind: there are 500 statuses,
    but a policy naming more than 256 of them says nothing a shorter one cannot."""
    validate_spec(_spec(HTTP, retryable_exit_codes=list(range(100, 356))))
    with pytest.raises(InvalidArgument) as info:
        validate_spec(_spec(HTTP, retryable_exit_codes=list(range(100, 357))))
    assert info.value.field == "spec.retry.retryable_exit_codes" and "256" in info.value.problem


def test_apply_accepts_what_it_accepted_before_the_rule() -> None:
    """An entry committed before the rule (a command payload's list holding 503) applies as it did: the
    rule is the API's, not apply's, so replaying an old log stores the same."""
    log = Log()
    log.ok(epoch())
    res = log.ok(create(tid(1), _spec(CMD, retryable_exit_codes=[503, 1000, -7])))
    assert list(res.task.spec.retry.retryable_exit_codes) == [503, 1000, -7]


# -- the SDK and schedctl ------------------------------------------------------------------------


def test_the_sdk_builder_takes_statuses_and_the_spec_checks_them_against_its_payload() -> None:
    policy = retry("200ms", retryable=[503, 429])
    s = _specs.build_spec("ping", every("1m"), HTTP, retry=policy)
    assert list(s.retry.retryable_exit_codes) == [503, 429]
    with pytest.raises(InvalidArgument) as info:
        _specs.build_spec("ping", every("1m"), CMD, retry=policy)
    assert info.value.field == "spec.retry.retryable_exit_codes[0]"
    # Changing the payload of a spec that holds statuses checks them too; the retry alone as well.
    with pytest.raises(InvalidArgument) as info:
        _specs.edit_spec(s, {"payload": CMD})
    assert "503 is not an exit code (0-255)" in info.value.problem
    with pytest.raises(InvalidArgument) as info:
        _specs.edit_spec(s, {"retry": retry(non_retryable=[2])})
    assert info.value.field == "spec.retry.non_retryable_exit_codes[0]"
    assert _specs.edit_spec(s, {"retry": retry(non_retryable=[404])}).retry.non_retryable_exit_codes == [404]
    with pytest.raises(InvalidArgument) as info:
        retry(retryable=[503, 600])
    assert str(info.value) == (
        "retry.retryable_exit_codes[1]: 600 is neither an exit code (0-255) nor an HTTP status "
        "(100-599, -1: no response)"
    )


# -- the API -------------------------------------------------------------------------------------


class _Aborted(Exception):
    pass


class _Context:
    def set_trailing_metadata(self, md: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise _Aborted(f"{code.name}: {message}")


def test_the_api_refuses_codes_that_do_not_fit_the_payload_and_proposes_nothing() -> None:
    async def scenario() -> None:
        node = MiniNode()
        node.replicator.start()
        node.committer.start()
        api = SchedulerServicer(node)  # type: ignore[arg-type]
        try:
            ok = await api._create(
                scheduler_pb2.CreateTaskRequest(spec=_spec(HTTP, retryable_exit_codes=[503]))
            )
            assert list(ok.task.spec.retry.retryable_exit_codes) == [503]
            proposals = node.proposals
            for bad, field in (
                (_spec(CMD, retryable_exit_codes=[1, 503]), "spec.retry.retryable_exit_codes[1]"),
                (_spec(HTTP, non_retryable_exit_codes=[404, 700]), "spec.retry.non_retryable_exit_codes[1]"),
            ):
                with pytest.raises(InvalidArgument) as info:
                    await api._create(scheduler_pb2.CreateTaskRequest(spec=bad))
                assert info.value.field == field
            # An update to a command payload keeping the statuses: refused, the task unchanged.
            changed = _spec(CMD, retryable_exit_codes=[503])
            with pytest.raises(_Aborted) as aborted:
                await api.UpdateTask(  # type: ignore[arg-type]
                    scheduler_pb2.UpdateTaskRequest(task_id=ok.task.task_id, spec=changed), _Context()
                )
            assert str(aborted.value).startswith(
                "INVALID_ARGUMENT: spec.retry.retryable_exit_codes[0]: 503 is not an exit code (0-255)"
            )
            assert node.proposals == proposals
            with node.kv.read() as txn:
                stored = sm.read_task(txn, ok.task.task_id)
            assert stored is not None and stored.spec.payload.WhichOneof("kind") == "http"
        finally:
            await node.committer.close()

    asyncio.run(scenario())


# -- the retry decision --------------------------------------------------------------------------


def _attempt(log: Log, execution: str, at: int, status: int) -> common_pb2.Execution:
    """Grant `execution` and complete its attempt as an http payload that got `status` (failed)."""
    token = log.ok(grant(execution, at)).execution.token
    cmd = complete(execution, token, at + 5, common_pb2.ATTEMPT_FAILED, started=at + 1, finished=at + 4)
    cmd.complete.result.exit_code = status
    return log.ok(cmd).execution


def test_an_http_task_is_retried_on_its_listed_statuses_only() -> None:
    """retryable [503, 429]: a 503 and a 429 wait for their retry, a 404 ends the run and dead-letters it
    (as an exit code off the list does); no response at all (-1) is not listed either."""
    log = Log()
    log.ok(epoch())
    task = tid(1)
    log.ok(create(task, _spec(HTTP, retryable_exit_codes=[503, 429])))
    ex = eid(1, T0 + 10)
    log.ok(trigger(task, ex, T0 + 10))
    first = _attempt(log, ex, T0 + 20, 503)
    assert first.state == common_pb2.EXECUTION_PENDING and first.not_before_ms > T0 + 20
    second = _attempt(log, ex, first.not_before_ms, 429)
    assert second.state == common_pb2.EXECUTION_PENDING and second.attempt == 2
    last = _attempt(log, ex, second.not_before_ms, 404)
    assert last.state == common_pb2.EXECUTION_FAILED and last.dead_lettered and last.attempt == 3
    assert [a.exit_code for a in last.attempts] == [503, 429, 404]
    with log.sm.kv.read() as txn:
        (letter,), _ = retries.list_dead_letters(txn, task, 10, "")
    assert letter.reason == "failed: exit code 404 is not among the retryable ones"

    http_task = common_pb2.Task(spec=_spec(HTTP, retryable_exit_codes=[503, 429]))
    running = common_pb2.Execution(attempt=1, guarantee=common_pb2.AT_LEAST_ONCE)
    failed = common_pb2.ATTEMPT_FAILED
    assert retries.retry_reason(http_task, running, failed, 503, 3) == ""
    assert (
        retries.retry_reason(http_task, running, failed, -1, 3)
        == "exit code -1 is not among the retryable ones"
    )


def test_an_http_task_never_retries_its_non_retryable_statuses() -> None:
    task = common_pb2.Task(spec=_spec(HTTP, non_retryable_exit_codes=[404, 410]))
    running = common_pb2.Execution(attempt=1, guarantee=common_pb2.AT_LEAST_ONCE)
    failed = common_pb2.ATTEMPT_FAILED
    assert retries.retry_reason(task, running, failed, 404, 3) == "exit code 404 is not retryable"
    assert retries.retry_reason(task, running, failed, 503, 3) == ""
    assert retries.retry_reason(task, running, failed, -1, 3) == ""  # no response: retried
    assert retries.retry_reason(task, running, common_pb2.ATTEMPT_TIMED_OUT, 0, 3) == ""


def test_an_http_task_listing_no_response_retries_it() -> None:
    """-1 is what an http attempt that got no response reports (connection refused, DNS, TLS): "retry on
    503 and when the server is unreachable" is retryable [503, -1] (--retry-on-exit 503,no-response)."""
    task = common_pb2.Task(spec=_spec(HTTP, retryable_exit_codes=[503, -1]))
    running = common_pb2.Execution(attempt=1, guarantee=common_pb2.AT_LEAST_ONCE)
    failed = common_pb2.ATTEMPT_FAILED
    assert retries.retry_reason(task, running, failed, -1, 3) == ""
    assert retries.retry_reason(task, running, failed, 503, 3) == ""
    assert (
        retries.retry_reason(task, running, failed, 404, 3) == "exit code 404 is not among the retryable ones"
    )
