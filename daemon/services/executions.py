"""The Scheduler service's execution methods: list or search executions (raft.search), read one, its
output and its result, cancel one."""

from __future__ import annotations

from typing import Any

import grpc

from cronraft import bounds, errors
from cronraft.daemon.services.common import (
    SchedulerBase,
    _execution_for,
    _guard,
    _list_namespace,
    _page_size,
    _task_for,
    _task_namespace,
)
from cronraft.daemon.wire import check_length, executions_page_token
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import features, output, search
from cronraft.raft.codec import id_bytes
from cronraft.raft.records import read_result
from cronraft.raft.schedule import MAX_INSTANT_MS
from cronraft.tokenfile import ALL_NAMESPACES

_EXECUTION_STATES = frozenset(common_pb2.ExecutionState.values())


def check_window(since_ms: int, until_ms: int, since: str, until: str) -> None:
    """A time window's bounds: instants (0: none), the end after the start."""
    for value, field in ((since_ms, since), (until_ms, until)):
        if not 0 <= value <= MAX_INSTANT_MS:
            raise errors.InvalidArgument(field, f"must be a time in Unix milliseconds (0: none), not {value}")
    if since_ms and until_ms and until_ms <= since_ms:
        raise errors.InvalidArgument(until, f"must be after {since} ({since_ms}), not {until_ms}")


def check_tags(tags: dict[str, str], field: str = "tags") -> None:
    if len(tags) > bounds.MAX_FILTER_TAGS:
        raise errors.InvalidArgument(field, f"at most {bounds.MAX_FILTER_TAGS} tags to filter on")
    for k, v in tags.items():
        check_length(k, field, bounds.MAX_TAG_LEN)
        check_length(v, f"{field}.{k}", bounds.MAX_TAG_LEN)


def _states(request: scheduler_pb2.ListExecutionsRequest) -> frozenset[int]:
    if len(request.states) > len(_EXECUTION_STATES):
        raise errors.InvalidArgument("states", f"at most {len(_EXECUTION_STATES)} states")
    for i, s in enumerate([request.state, *request.states]):
        if s not in _EXECUTION_STATES:
            raise errors.InvalidArgument(
                "state" if i == 0 else f"states[{i - 1}]", f"unknown execution state {s}"
            )
    return frozenset(s for s in (request.state, *request.states) if s)


class ExecutionMethods(SchedulerBase):
    """Scheduler methods on executions (daemon.services.scheduler composes them with the other subjects)."""

    async def ListExecutions(
        self, request: scheduler_pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListExecutionsResponse:
        return await _guard(context, self._list_executions(request))

    async def _list_executions(
        self, request: scheduler_pb2.ListExecutionsRequest
    ) -> scheduler_pb2.ListExecutionsResponse:
        """A task's executions (`task_id`), or a search across the tasks of a namespace (or of every one):
        raft.search picks the index; every filter is bounded here first."""
        size = _page_size(request.page_size, "page_size")
        states = _states(request)
        check_window(request.since_ms, request.until_ms, "since_ms", "until_ms")
        check_length(request.worker_id, "worker_id", bounds.MAX_WORKER_ID)
        check_tags(dict(request.tags))
        if request.task_id:
            executions_page_token(request.page_token)
        else:
            check_length(request.page_token, "page_token", bounds.MAX_PAGE_TOKEN)
        with self.node.kv.read() as txn:
            if request.task_id:
                namespace: str | None = _task_for(txn, request.task_id, "ListExecutions").spec.namespace
            else:
                namespace = _list_namespace("ListExecutions", request.namespace, request.all_namespaces)
            q = search.ExecutionQuery(
                task_id=request.task_id,
                states=states,
                since_ms=request.since_ms,
                until_ms=request.until_ms,
                by_completed=request.by_completed,
                worker_id=request.worker_id,
                tags=tuple(sorted(request.tags.items())),
                namespace=None if request.task_id else namespace,
            )
            execs, token = search.search_executions(
                txn, q, page_size=size, page_token=request.page_token, max_bytes=bounds.MAX_PAGE_BYTES
            )
            seen: dict[str, str] = {}
            for ex in execs:  # executions stored before they kept it: their task's (the redaction reads it)
                if namespace is not None:
                    ex.namespace = namespace
                elif not ex.namespace:
                    if ex.task_id not in seen:
                        ns = _task_namespace(txn, ex.task_id)
                        seen[ex.task_id] = "" if ns == ALL_NAMESPACES else ns
                    ex.namespace = seen[ex.task_id]
        return scheduler_pb2.ListExecutionsResponse(executions=execs, next_page_token=token)

    async def GetExecutionResult(
        self, request: scheduler_pb2.GetExecutionResultRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.GetExecutionResultResponse:
        return await _guard(context, self._get_result(request))

    async def _get_result(
        self, request: scheduler_pb2.GetExecutionResultRequest
    ) -> scheduler_pb2.GetExecutionResultResponse:
        """Who may read an execution's logs may read its result (reader in its task's namespace)."""
        with self.node.kv.read() as txn:
            ex = _execution_for(txn, request.execution_id, "GetExecutionResult")
            features.require(txn, features.RESULTS, "GetExecutionResult")  # none kept before (upgrades)
            data = read_result(txn, id_bytes(request.execution_id))
        if data is None and ex.return_value:
            return scheduler_pb2.GetExecutionResultResponse(result=ex.return_value, return_value=True)
        return scheduler_pb2.GetExecutionResultResponse(result=data or b"")

    async def GetExecution(
        self, request: scheduler_pb2.GetExecutionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Execution:
        return await _guard(context, self._get_execution(request))

    async def _get_execution(self, request: scheduler_pb2.GetExecutionRequest) -> common_pb2.Execution:
        with self.node.kv.read() as txn:
            ex = _execution_for(txn, request.execution_id, "GetExecution")
        return ex

    async def CancelExecution(
        self, request: scheduler_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Execution:
        body = commands_pb2.CancelExecution(execution_id=request.execution_id, reason=request.reason)

        async def run() -> commands_pb2.CommandResult:
            check_length(request.reason, "reason", bounds.MAX_REASON)
            return await self._write("cancel-exec", request.request_id, cancel_execution=body)

        return (await _guard(context, run())).execution

    async def GetExecutionLogs(
        self, request: scheduler_pb2.GetExecutionLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.GetExecutionLogsResponse:
        async def run() -> scheduler_pb2.GetExecutionLogsResponse:
            max_bytes = request.max_bytes or 256 * 1024
            if max_bytes < 0 or max_bytes > 4 << 20:
                raise errors.InvalidArgument("max_bytes", "must be between 1 and 4 MiB")
            if request.stdout_offset < 0 or request.stderr_offset < 0 or request.attempt < 0:
                raise errors.InvalidArgument("stdout_offset", "offsets and attempt must not be negative")
            with self.node.kv.read() as txn:
                ex = _execution_for(txn, request.execution_id, "GetExecutionLogs")
                if request.attempt > ex.attempt:
                    raise errors.InvalidArgument("attempt", f"execution has {ex.attempt} attempts")
                return output.response(
                    txn,
                    ex,
                    request.attempt,
                    stdout_offset=request.stdout_offset,
                    stderr_offset=request.stderr_offset,
                    max_bytes=max_bytes,
                )

        return await _guard(context, run())


__all__ = ["ExecutionMethods"]
