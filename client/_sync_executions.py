"""The execution calls of `Client`: list a task's, search across tasks, get one, read or follow the
output logs, read the result, cancel one or many.

GENERATED from client/_aio_executions.py by scripts/gen_sync_client.py: edit that file,
then run `make clients` (`make check` fails when this file is stale).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

from cronraft.client import _namespace, _parsing, _requests
from cronraft.client._sync_base import ClientBase
from cronraft.proto.v1 import common_pb2, scheduler_pb2

__all__ = ["ExecutionCalls"]


class ExecutionCalls(ClientBase):
    """The calls on executions (the runs of a task)."""

    def list_executions_page(
        self,
        task_id: str,
        *,
        state: common_pb2.ExecutionState.ValueType | str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[common_pb2.Execution], str]:
        """One page of the executions of `task_id` and the next page token ("" after the last)."""
        request = _requests.list_executions_request(task_id, state, page_size, page_token)
        response = self._invoke(
            lambda s: s.scheduler.ListExecutions, request, scheduler_pb2.ListExecutionsResponse, write=False
        )
        return list(response.executions), response.next_page_token

    def list_executions(
        self,
        task_id: str,
        *,
        state: common_pb2.ExecutionState.ValueType | str | None = None,
        page_size: int = 100,
    ) -> Iterator[common_pb2.Execution]:
        """Every execution of `task_id` (optionally in `state`), fetched page by page."""
        token = ""
        while True:
            executions, token = self.list_executions_page(
                task_id, state=state, page_size=page_size, page_token=token
            )
            yield from executions
            if not token:
                return

    def search_executions_page(
        self,
        *,
        task_id: str = "",
        states: Iterable[common_pb2.ExecutionState.ValueType | str] = (),
        since: _parsing.Instant | None = None,
        until: _parsing.Instant | None = None,
        by_completed: bool = False,
        worker_id: str = "",
        tags: Mapping[str, str] | None = None,
        namespace: str | None = None,
        all_namespaces: bool = False,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[common_pb2.Execution], str]:
        """One page of executions across tasks (or of `task_id`) and the next page token ("" after the
        last). Every filter given must match: any of `states`; fired in [since, until) (ended, with
        `by_completed`: then only ended ones); the worker of the current or last attempt; every `tags`
        pair on the task. Newest first (fire time, or end time with `by_completed`; a task's executions by
        nominal time). A page may be short, even empty, and still carry a token: the cluster reads a
        bounded number of index entries per page. Without `task_id`, the client's namespace,
        `namespace`, or every one (which needs reader in "*")."""
        request = _requests.search_executions_request(
            task_id=task_id,
            states=states,
            since=since,
            until=until,
            by_completed=by_completed,
            worker_id=worker_id,
            tags=tags,
            page_size=page_size,
            page_token=page_token,
        )
        if not task_id:
            request.namespace, request.all_namespaces = _namespace.list_scope(
                namespace, self.namespace, all_namespaces
            )
        response = self._invoke(
            lambda s: s.scheduler.ListExecutions, request, scheduler_pb2.ListExecutionsResponse, write=False
        )
        return list(response.executions), response.next_page_token

    def search_executions(
        self,
        *,
        task_id: str = "",
        states: Iterable[common_pb2.ExecutionState.ValueType | str] = (),
        since: _parsing.Instant | None = None,
        until: _parsing.Instant | None = None,
        by_completed: bool = False,
        worker_id: str = "",
        tags: Mapping[str, str] | None = None,
        namespace: str | None = None,
        all_namespaces: bool = False,
        page_size: int = 100,
    ) -> Iterator[common_pb2.Execution]:
        """Every execution `search_executions_page` finds, fetched page by page."""
        states = list(states)
        token = ""
        while True:
            executions, token = self.search_executions_page(
                task_id=task_id,
                states=states,
                since=since,
                until=until,
                by_completed=by_completed,
                worker_id=worker_id,
                tags=tags,
                namespace=namespace,
                all_namespaces=all_namespaces,
                page_size=page_size,
                page_token=token,
            )
            yield from executions
            if not token:
                return

    def get_execution_result(self, execution_id: str) -> bytes:
        """What the execution's last attempt handed back: the bytes its payload wrote to
        $CRONRAFT_RESULT_FILE, or a handler's JSON return value; b"" when none was kept. Raises
        `NotFound`."""
        request = scheduler_pb2.GetExecutionResultRequest(execution_id=execution_id)
        response = self._invoke(
            lambda s: s.scheduler.GetExecutionResult,
            request,
            scheduler_pb2.GetExecutionResultResponse,
            write=False,
        )
        return bytes(response.result)

    def get_execution_logs(
        self,
        execution_id: str,
        *,
        attempt: int = 0,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        max_bytes: int = 0,
    ) -> scheduler_pb2.GetExecutionLogsResponse:
        """One read of an attempt's full stdout/stderr from the given offsets (attempt 0: the latest)."""
        request = scheduler_pb2.GetExecutionLogsRequest(
            execution_id=execution_id,
            attempt=attempt,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            max_bytes=max_bytes,
        )
        return self._invoke(
            lambda s: s.scheduler.GetExecutionLogs,
            request,
            scheduler_pb2.GetExecutionLogsResponse,
            write=False,
        )

    def follow_execution_logs(
        self, execution_id: str, *, attempt: int = 0, poll_s: float = 0.5
    ) -> Iterator[scheduler_pb2.GetExecutionLogsResponse]:
        """Reads until the attempt ended and everything stored was returned (`schedctl logs -f`)."""
        out = err = 0
        while True:
            page = self.get_execution_logs(
                execution_id, attempt=attempt, stdout_offset=out, stderr_offset=err
            )
            attempt = page.attempt
            out, err = page.stdout_next_offset, page.stderr_next_offset
            yield page
            if page.finished:
                return
            if not page.stdout and not page.stderr:
                time.sleep(poll_s)

    def get_execution(self, execution_id: str) -> common_pb2.Execution:
        """The execution `execution_id` (with its stdout/stderr tails); raises `NotFound`."""
        request = scheduler_pb2.GetExecutionRequest(execution_id=execution_id)
        return self._invoke(lambda s: s.scheduler.GetExecution, request, common_pb2.Execution, write=False)

    def cancel_execution(
        self, execution_id: str, reason: str = "", *, request_id: str | None = None
    ) -> common_pb2.Execution:
        """Cancel one execution: a pending or buffered one ends at once, a running one is killed by
        its worker. Raises `NotFound`, or `FailedPrecondition` if it already ended."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.CancelExecutionRequest(
            execution_id=execution_id, reason=reason, request_id=rid
        )
        return self._invoke(
            lambda s: s.scheduler.CancelExecution, request, common_pb2.Execution, write=True, request_id=rid
        )

    def cancel_executions(
        self, execution_ids: Iterable[str], reason: str = "", *, request_ids: Mapping[str, str] | None = None
    ) -> _requests.BulkResult[common_pb2.Execution]:
        """Cancel each execution in turn (one CancelExecution per id, each with its own request id,
        reused on its retries). Results as `cancel_tasks`."""
        rids = _requests.bulk_request_ids(execution_ids, request_ids)
        return self._bulk(rids, lambda i, rid: self.cancel_execution(i, reason, request_id=rid))
