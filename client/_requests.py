"""The request messages of the client calls, free of I/O, and the bulk helpers.

Each builder checks and converts its arguments (`InvalidArgument` naming the argument) and clamps
page sizes to the server's bounds; `new_request_id` is the idempotency key of one logical write,
reused by its retries. `BulkResult`, `bulk_request_ids` and `stops_bulk` are the shape of every bulk
call (one write per id).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cronraft.client._parsing import (
    Instant,
    instant_ms,
    non_negative_int,
    parse_execution_state,
    parse_task_state,
)
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    InvalidArgument,
    Unavailable,
)
from cronraft.proto.v1 import common_pb2, scheduler_pb2

MAX_PAGE_SIZE = 1000


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (reused by every retry of that write)."""
    return uuid.uuid4().hex


def clamp_page_size(page_size: int) -> int:
    """Page sizes are 1..1000 (the server's bounds)."""
    return max(1, min(MAX_PAGE_SIZE, page_size))


def list_tasks_request(
    state: common_pb2.TaskState.ValueType | str | None,
    tags: Mapping[str, str] | None,
    name_prefix: str,
    page_size: int,
    page_token: str,
    *,
    kind: str = "",
    next_after: Instant | None = None,
    next_before: Instant | None = None,
    last_outcomes: Iterable[common_pb2.ExecutionState.ValueType | str] = (),
) -> scheduler_pb2.ListTasksRequest:
    return scheduler_pb2.ListTasksRequest(
        state=parse_task_state(state),
        tags=dict(tags or {}),
        name_prefix=name_prefix,
        page_size=clamp_page_size(page_size),
        page_token=page_token,
        kind=kind,
        next_after_ms=0 if next_after is None else instant_ms(next_after, "next_after"),
        next_before_ms=0 if next_before is None else instant_ms(next_before, "next_before"),
        last_outcomes=[parse_execution_state(s, "last_outcomes") for s in last_outcomes],
    )


def search_executions_request(
    *,
    task_id: str,
    states: Iterable[common_pb2.ExecutionState.ValueType | str],
    since: Instant | None,
    until: Instant | None,
    by_completed: bool,
    worker_id: str,
    tags: Mapping[str, str] | None,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListExecutionsRequest:
    parsed = [parse_execution_state(s, "states") for s in states]
    return scheduler_pb2.ListExecutionsRequest(
        task_id=task_id,
        # One state goes in `state`, which every version of the server reads.
        state=parsed[0] if len(parsed) == 1 else common_pb2.EXECUTION_STATE_UNSPECIFIED,
        states=parsed if len(parsed) > 1 else [],
        since_ms=0 if since is None else instant_ms(since, "since"),
        until_ms=0 if until is None else instant_ms(until, "until"),
        by_completed=by_completed,
        worker_id=worker_id,
        tags=dict(tags or {}),
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


def list_executions_request(
    task_id: str,
    state: common_pb2.ExecutionState.ValueType | str | None,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListExecutionsRequest:
    return scheduler_pb2.ListExecutionsRequest(
        task_id=task_id,
        state=parse_execution_state(state),
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


def backfill_request(
    task_id: str, from_: Instant, to: Instant, max_fires: int, request_id: str
) -> scheduler_pb2.BackfillTaskRequest:
    if max_fires < 0:
        raise InvalidArgument("max_fires", "must not be negative")
    return scheduler_pb2.BackfillTaskRequest(
        task_id=task_id,
        from_ms=instant_ms(from_, "from_ms"),
        to_ms=instant_ms(to, "to_ms"),
        max_fires=max_fires,
        request_id=request_id,
    )


def explain_request(
    task_id: str, from_: Instant | None, to: Instant | None, limit: int
) -> scheduler_pb2.ExplainTaskRequest:
    return scheduler_pb2.ExplainTaskRequest(
        task_id=task_id,
        from_ms=0 if from_ is None else instant_ms(from_, "from_ms"),
        to_ms=0 if to is None else instant_ms(to, "to_ms"),
        limit=clamp_page_size(limit),
    )


def preview_request(task_id: str, from_: Instant | None, count: int) -> scheduler_pb2.PreviewTaskRequest:
    return scheduler_pb2.PreviewTaskRequest(
        task_id=task_id,
        from_ms=0 if from_ is None else instant_ms(from_, "from_ms"),
        count=clamp_page_size(count),
    )


# -------------------------------------------------------------------------------------- dead letters


def _dlq_selector(execution_ids: Iterable[str] | str, task_id: str | None) -> tuple[list[str], str]:
    ids = [execution_ids] if isinstance(execution_ids, str) else list(execution_ids)
    if any(not isinstance(i, str) or not i.strip() for i in ids):
        raise InvalidArgument("execution_ids", "an execution id must be a non-empty string")
    if ids and task_id:
        raise InvalidArgument("execution_ids", "give execution ids or a task id, not both")
    if not ids and not task_id:
        raise InvalidArgument("execution_ids", "give execution ids or a task id")
    return list(dict.fromkeys(ids)), task_id or ""


def list_dead_letters_request(
    task_id: str | None, page_size: int, page_token: str
) -> scheduler_pb2.ListDeadLettersRequest:
    return scheduler_pb2.ListDeadLettersRequest(
        task_id=task_id or "", page_size=clamp_page_size(page_size), page_token=page_token
    )


def redrive_request(
    execution_ids: Iterable[str] | str, task_id: str | None, limit: int, request_id: str
) -> scheduler_pb2.RedriveDeadLettersRequest:
    """Redrive by ids, or every dead letter of `task_id` (at most `limit`, 0: the cluster's bound)."""
    ids, task = _dlq_selector(execution_ids, task_id)
    return scheduler_pb2.RedriveDeadLettersRequest(
        execution_ids=ids, task_id=task, limit=non_negative_int(limit, "limit"), request_id=request_id
    )


def purge_request(
    execution_ids: Iterable[str] | str,
    task_id: str | None,
    before: Instant | None,
    limit: int,
    request_id: str,
) -> scheduler_pb2.PurgeDeadLettersRequest:
    """Purge by ids, or the dead letters of `task_id`; only those dead before `before` if given."""
    ids, task = _dlq_selector(execution_ids, task_id)
    return scheduler_pb2.PurgeDeadLettersRequest(
        execution_ids=ids,
        task_id=task,
        before_ms=0 if before is None else instant_ms(before, "before_ms"),
        limit=non_negative_int(limit, "limit"),
        request_id=request_id,
    )


# ---------------------------------------------------------------------------------------------- bulk

_M = TypeVar("_M")


@dataclass
class BulkResult(Generic[_M]):
    """The outcome of a bulk call: one write per id, each with its own request id, reused on that
    write's retries and redirects. Not atomic: some ids may succeed while others fail.

    `results` and `errors` are keyed by id, in the order the ids were given; `skipped` lists the ids
    not tried because the cluster became unreachable (trying them would only wait out the timeout once
    per id); `request_ids` maps every id to its request id: pass it back as `request_ids=` to retry the
    failed or skipped ids idempotently.
    """

    results: dict[str, _M] = field(default_factory=dict)
    errors: dict[str, CronraftError] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    request_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every id succeeded."""
        return not self.errors and not self.skipped


def bulk_request_ids(ids: Iterable[str] | str, given: Mapping[str, str] | None) -> dict[str, str]:
    """One request id per distinct id (in order): the one in `given`, else a fresh one."""
    items = [ids] if isinstance(ids, str) else list(ids)
    if any(not isinstance(i, str) or not i.strip() for i in items):
        raise InvalidArgument("ids", "an id must be a non-empty string")
    given = given or {}
    return {i: given.get(i) or new_request_id() for i in dict.fromkeys(items)}


def stops_bulk(error: CronraftError) -> bool:
    """Whether a bulk call gives up on its remaining ids after `error` (the cluster is unreachable)."""
    return isinstance(error, Unavailable | DeadlineExceeded)


def check_task_filter(
    state: common_pb2.TaskState.ValueType | str | None,
    tags: Mapping[str, str] | None,
    name_prefix: str,
) -> None:
    """A bulk change by filter needs at least one filter (an empty one would select every task)."""
    if state is None and not tags and not name_prefix:
        raise InvalidArgument("filter", "give at least one of state, tags or name_prefix")
