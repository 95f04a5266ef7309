"""The Scheduler service's execution methods: list a task's executions, read one and its output, cancel
one."""

from __future__ import annotations

from typing import Any

import grpc

from cronraft import bounds, errors
from cronraft.daemon.services.common import SchedulerBase, _execution_for, _guard, _page_size, _task_for
from cronraft.daemon.wire import check_length, executions_page_token
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import output
from cronraft.raft import state as sm

_EXECUTION_STATES = frozenset(common_pb2.ExecutionState.values())


class ExecutionMethods(SchedulerBase):
    """Scheduler methods on executions (daemon.services.scheduler composes them with the other subjects)."""

    async def ListExecutions(
        self, request: scheduler_pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListExecutionsResponse:
        return await _guard(context, self._list_executions(request))

    async def _list_executions(
        self, request: scheduler_pb2.ListExecutionsRequest
    ) -> scheduler_pb2.ListExecutionsResponse:
        size = _page_size(request.page_size, "page_size")
        if request.state not in _EXECUTION_STATES:
            raise errors.InvalidArgument("state", f"unknown execution state {request.state}")
        executions_page_token(request.page_token)
        with self.node.kv.read() as txn:
            task = _task_for(txn, request.task_id, "ListExecutions")
            execs, token = sm.list_executions(
                txn,
                request.task_id,
                state=request.state,
                page_size=size,
                page_token=request.page_token,
                max_bytes=bounds.MAX_PAGE_BYTES,
            )
        for ex in execs:
            ex.namespace = task.spec.namespace
        return scheduler_pb2.ListExecutionsResponse(executions=execs, next_page_token=token)

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
