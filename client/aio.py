"""The asyncio Cronraft client (grpc.aio): the methods of `Client`, as coroutines and async iterators.

Routing, leader redirects, request-id reuse, retries and error mapping are those of the sync client (they
live in `_routing.CallPlan`). Channels are created lazily inside the running event loop; use the client as
an async context manager, or `await client.close()`, from the loop that used it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.client import _audit, _bulk, _namespace, _parsing, _requests, _routing, _specs
from cronraft.client._transport import Transport, with_tls_hint
from cronraft.client.sdk import CHANNEL_OPTIONS, rpc_status
from cronraft.errors import CronraftError
from cronraft.proto.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

__all__ = ["AsyncClient"]

_Resp = TypeVar("_Resp")
_Msg = TypeVar("_Msg")


class _AsyncStubs:
    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(channel)
        self.cluster = cluster_pb2_grpc.ClusterStub(channel)
        self.audit = audit_pb2_grpc.AuditStub(channel)


class AsyncClient:
    """An asyncio client of a Cronraft cluster; arguments and errors as for `Client`."""

    def __init__(
        self,
        servers: str | Sequence[str] | None = None,
        *,
        timeout_s: float = 10.0,
        attempt_timeout_s: float | None = None,
        max_redirects: int = 5,
        transport: Transport | None = None,
        namespace: str = _namespace.DEFAULT_NAMESPACE,
    ) -> None:
        self._router = _routing.Router(_routing.parse_servers(servers))
        self._transport = transport if transport is not None else Transport.from_env()
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.max_redirects = max_redirects
        # Creates, puts, lists and bulk calls act in this namespace unless told otherwise (client._namespace).
        self.namespace = _namespace.check(namespace)
        self._stubs: dict[str, _AsyncStubs] = {}
        self._closed = False

    @property
    def servers(self) -> list[str]:
        """The configured server addresses."""
        return list(self._router.servers)

    @property
    def leader(self) -> str | None:
        """The leader address learnt from the last write or redirect, if any."""
        return self._router.leader

    # ------------------------------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close every channel. Idempotent."""
        self._closed = True
        stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            await s.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _stubs_for(self, address: str) -> _AsyncStubs:
        if self._closed:
            raise CronraftError("client is closed")
        stubs = self._stubs.get(address)
        if stubs is None:
            stubs = _AsyncStubs(self._transport.aio_channel(address, CHANNEL_OPTIONS))
            self._stubs[address] = stubs
        return stubs

    async def _invoke(
        self,
        pick: Callable[[_AsyncStubs], Callable[..., Any]],
        request: Any,
        response_type: type[_Resp],
        *,
        write: bool,
        request_id: str | None = None,
    ) -> _Resp:
        plan = _routing.CallPlan(
            self._router,
            write=write,
            timeout_s=self.timeout_s,
            attempt_timeout_s=self.attempt_timeout_s,
            max_redirects=self.max_redirects,
        )
        while True:
            try:
                result = await pick(self._stubs_for(plan.address))(request, timeout=plan.attempt_timeout())
            except grpc.RpcError as exc:
                code, details, leader = rpc_status(exc)
                delay = plan.failed(code, details, leader)
                if delay is None:
                    raise with_tls_hint(plan.give_up_error(request_id), self._transport) from None
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            plan.succeeded()
            if not isinstance(result, response_type):
                raise CronraftError(f"unexpected response type {type(result).__name__}")
            return result

    # ------------------------------------------------------------------------------------------ tasks

    async def create_task(
        self,
        name: str,
        schedule: common_pb2.Schedule,
        payload: common_pb2.Payload,
        *,
        tags: Mapping[str, str] | None = None,
        queue: str = "",
        timeout_ms: int = 0,
        guarantee: common_pb2.DeliveryGuarantee.ValueType | str = common_pb2.AT_LEAST_ONCE,
        priority: common_pb2.Priority.ValueType | str = common_pb2.MEDIUM,
        max_attempts: int = 0,
        misfire: common_pb2.MisfirePolicy.ValueType | str | None = None,
        catchup_window: _parsing.Duration | None = None,
        max_catchup: int = 0,
        overlap: common_pb2.OverlapPolicy.ValueType | str | None = None,
        retry: common_pb2.RetryPolicy | None = None,
        notify: Sequence[common_pb2.NotifyTarget] | None = None,
        worker_labels: Mapping[str, str] | None = None,
        max_concurrency: int = 0,
        retention: common_pb2.Retention | None = None,
        request_id: str | None = None,
    ) -> common_pb2.Task:
        """Create a task; see `Client.create_task`."""
        spec = _specs.build_spec(
            name,
            schedule,
            payload,
            tags=tags,
            queue=queue,
            timeout_ms=timeout_ms,
            guarantee=guarantee,
            priority=priority,
            max_attempts=max_attempts,
            misfire=misfire,
            catchup_window=catchup_window,
            max_catchup=max_catchup,
            overlap=overlap,
            retry=retry,
            notify=notify,
            worker_labels=worker_labels,
            max_concurrency=max_concurrency,
            retention=retention,
        )
        return await self.create_task_spec(spec, request_id=request_id)

    async def create_task_spec(
        self, spec: common_pb2.TaskSpec, *, request_id: str | None = None
    ) -> common_pb2.Task:
        """Create a task from a complete `TaskSpec`."""
        rid = request_id or _requests.new_request_id()
        spec = _namespace.spec_in(spec, self.namespace)  # the client's namespace unless the spec names one
        request = scheduler_pb2.CreateTaskRequest(spec=spec, request_id=rid)
        response = await self._invoke(
            lambda s: s.scheduler.CreateTask,
            request,
            scheduler_pb2.CreateTaskResponse,
            write=True,
            request_id=rid,
        )
        return response.task

    async def import_tasks(
        self,
        specs: Iterable[common_pb2.TaskSpec],
        *,
        batch_size: int = _bulk.MAX_BATCH,
        import_id: str | None = None,
        on_progress: Callable[[_bulk.ImportResult], None] | None = None,
        segment_timeout_s: float = 120.0,
    ) -> _bulk.ImportResult:
        """Create many tasks through the bulk API; see `Client.import_tasks`."""
        result = _bulk.ImportResult(import_id=import_id or _requests.new_request_id())
        in_namespace = (_namespace.spec_in(spec, self.namespace) for spec in specs)
        for segment in _bulk.segments(in_namespace, import_id=result.import_id, batch_size=batch_size):
            plan = _routing.CallPlan(
                self._router,
                write=True,
                timeout_s=max(self.timeout_s, segment_timeout_s),
                max_redirects=self.max_redirects,
            )
            while True:
                stubs = self._stubs_for(plan.address)
                try:
                    response = await stubs.scheduler.ImportTasks(
                        iter(segment), timeout=plan.attempt_timeout()
                    )
                except grpc.RpcError as exc:
                    code, details, leader = rpc_status(exc)
                    delay = plan.failed(code, details, leader)
                    if delay is None:
                        raise with_tls_hint(
                            plan.give_up_error(segment[0].request_id), self._transport
                        ) from None
                    result.retries += 1
                    if delay > 0:
                        await asyncio.sleep(delay)
                    continue
                plan.succeeded()
                break
            result.add(response)
            if on_progress is not None:
                on_progress(result)
        return result

    async def get_task(self, task_id: str) -> common_pb2.Task:
        """The task `task_id`; raises `NotFound`."""
        request = scheduler_pb2.GetTaskRequest(task_id=task_id)
        return await self._invoke(lambda s: s.scheduler.GetTask, request, common_pb2.Task, write=False)

    async def list_tasks_page(
        self,
        *,
        state: common_pb2.TaskState.ValueType | str | None = None,
        tags: Mapping[str, str] | None = None,
        name_prefix: str = "",
        page_size: int = 100,
        page_token: str = "",
        namespace: str | None = None,
        all_namespaces: bool = False,
    ) -> tuple[list[common_pb2.Task], str]:
        """One page of tasks and the token of the next page ("" after the last)."""
        request = _requests.list_tasks_request(state, tags, name_prefix, page_size, page_token)
        # The client's namespace, `namespace`, or every one (which needs reader in "*").
        request.namespace, request.all_namespaces = _namespace.list_scope(
            namespace, self.namespace, all_namespaces
        )
        response = await self._invoke(
            lambda s: s.scheduler.ListTasks, request, scheduler_pb2.ListTasksResponse, write=False
        )
        return list(response.tasks), response.next_page_token

    async def list_tasks(
        self,
        *,
        state: common_pb2.TaskState.ValueType | str | None = None,
        tags: Mapping[str, str] | None = None,
        name_prefix: str = "",
        page_size: int = 100,
        namespace: str | None = None,
        all_namespaces: bool = False,
    ) -> AsyncIterator[common_pb2.Task]:
        """Every task matching the filters, fetched page by page (`async for`)."""
        token = ""
        while True:
            tasks, token = await self.list_tasks_page(
                state=state,
                tags=tags,
                name_prefix=name_prefix,
                page_size=page_size,
                page_token=token,
                namespace=namespace,
                all_namespaces=all_namespaces,
            )
            for task in tasks:
                yield task
            if not token:
                return

    async def cancel_task(self, task_id: str, *, request_id: str | None = None) -> common_pb2.Task:
        """Cancel a task; see `Client.cancel_task`."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.CancelTaskRequest(task_id=task_id, request_id=rid)
        return await self._invoke(
            lambda s: s.scheduler.CancelTask, request, common_pb2.Task, write=True, request_id=rid
        )

    async def cancel_tasks(
        self, task_ids: Iterable[str], *, request_ids: Mapping[str, str] | None = None
    ) -> _requests.BulkResult[common_pb2.Task]:
        """Cancel each task in turn; see `Client.cancel_tasks`."""
        rids = _requests.bulk_request_ids(task_ids, request_ids)
        return await self._bulk(rids, lambda i, rid: self.cancel_task(i, request_id=rid))

    async def cancel_tasks_where(
        self,
        *,
        state: common_pb2.TaskState.ValueType | str | None = None,
        tags: Mapping[str, str] | None = None,
        name_prefix: str = "",
        request_ids: Mapping[str, str] | None = None,
        namespace: str | None = None,
    ) -> _requests.BulkResult[common_pb2.Task]:
        """List the tasks matching the filters, then cancel them one by one: not atomic; see
        `Client.cancel_tasks_where`."""
        _requests.check_task_filter(state, tags, name_prefix)
        ids = [
            t.task_id
            async for t in self.list_tasks(
                state=state, tags=tags, name_prefix=name_prefix, namespace=namespace
            )
            if t.state != common_pb2.TASK_CANCELLED
        ]
        return await self.cancel_tasks(ids, request_ids=request_ids)

    async def delete_task(
        self, task_id: str, *, force: bool = False, request_id: str | None = None
    ) -> scheduler_pb2.DeleteTaskResponse:
        """Delete a task with its whole history; see `Client.delete_task`."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.DeleteTaskRequest(task_id=task_id, request_id=rid, force=force)
        return await self._invoke(
            lambda s: s.scheduler.DeleteTask,
            request,
            scheduler_pb2.DeleteTaskResponse,
            write=True,
            request_id=rid,
        )

    async def delete_tasks(
        self,
        task_ids: Iterable[str],
        *,
        force: bool = False,
        request_ids: Mapping[str, str] | None = None,
    ) -> _requests.BulkResult[scheduler_pb2.DeleteTaskResponse]:
        """Delete each task in turn; see `Client.delete_tasks`."""
        rids = _requests.bulk_request_ids(task_ids, request_ids)
        return await self._bulk(rids, lambda i, rid: self.delete_task(i, force=force, request_id=rid))

    async def delete_tasks_where(
        self,
        *,
        state: common_pb2.TaskState.ValueType | str | None = None,
        tags: Mapping[str, str] | None = None,
        name_prefix: str = "",
        force: bool = False,
        request_ids: Mapping[str, str] | None = None,
        namespace: str | None = None,
    ) -> _requests.BulkResult[scheduler_pb2.DeleteTaskResponse]:
        """List the tasks matching the filters, then delete them one by one: not atomic; see
        `Client.delete_tasks_where`."""
        _requests.check_task_filter(state, tags, name_prefix)
        ids = [
            t.task_id
            async for t in self.list_tasks(
                state=state, tags=tags, name_prefix=name_prefix, namespace=namespace
            )
        ]
        return await self.delete_tasks(ids, force=force, request_ids=request_ids)

    async def _bulk(
        self, request_ids: Mapping[str, str], call: Callable[[str, str], Awaitable[_Msg]]
    ) -> _requests.BulkResult[_Msg]:
        result: _requests.BulkResult[_Msg] = _requests.BulkResult(request_ids=dict(request_ids))
        for item, rid in request_ids.items():
            if result.errors and _requests.stops_bulk(list(result.errors.values())[-1]):
                result.skipped.append(item)
                continue
            try:
                result.results[item] = await call(item, rid)
            except CronraftError as exc:
                result.errors[item] = exc
        return result

    async def update_task(
        self,
        task_id: str,
        spec: common_pb2.TaskSpec,
        *,
        expected_version: int = 0,
        request_id: str | None = None,
    ) -> common_pb2.Task:
        """Replace the spec of a task; effective from its next nominal time (never retroactive).

        With `expected_version` (a `Task.version` you read) the update applies only if the task has not
        changed since: else `FailedPrecondition`. 0 updates unconditionally.
        """
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.UpdateTaskRequest(
            task_id=task_id, spec=spec, expected_version=expected_version, request_id=rid
        )
        return await self._invoke(
            lambda s: s.scheduler.UpdateTask, request, common_pb2.Task, write=True, request_id=rid
        )

    async def edit_task(
        self, task_id: str, *, request_id: str | None = None, **changes: Any
    ) -> common_pb2.Task:
        """Read the task, apply `changes` (keyword arguments named in `_specs.EDITABLE_FIELDS`, e.g.
        `schedule=cron(...)`, `tags={...}`, `overlap="skip"`) and update it with
        `expected_version=task.version`: a concurrent change makes it fail with `FailedPrecondition`
        instead of being overwritten."""
        task = await self.get_task(task_id)
        spec = _specs.edit_spec(task.spec, changes)
        return await self.update_task(task_id, spec, expected_version=task.version, request_id=request_id)

    async def pause_task(
        self, task_id: str, note: str = "", *, request_id: str | None = None
    ) -> common_pb2.Task:
        """Pause a task: no fire until resumed (its nominal times are recorded as `paused`)."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.PauseTaskRequest(task_id=task_id, note=note, request_id=rid)
        return await self._invoke(
            lambda s: s.scheduler.PauseTask, request, common_pb2.Task, write=True, request_id=rid
        )

    async def resume_task(
        self, task_id: str, replay_missed: bool = False, *, request_id: str | None = None
    ) -> common_pb2.Task:
        """Resume a paused task. The paused period is not replayed unless `replay_missed` (then the
        misfire policy applies to it)."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.ResumeTaskRequest(
            task_id=task_id, replay_missed=replay_missed, request_id=rid
        )
        return await self._invoke(
            lambda s: s.scheduler.ResumeTask, request, common_pb2.Task, write=True, request_id=rid
        )

    async def trigger_task(self, task_id: str, *, request_id: str | None = None) -> common_pb2.Execution:
        """Fire the task now, outside its schedule; returns the new execution."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.TriggerTaskRequest(task_id=task_id, request_id=rid)
        return await self._invoke(
            lambda s: s.scheduler.TriggerTask, request, common_pb2.Execution, write=True, request_id=rid
        )

    async def backfill_task(
        self,
        task_id: str,
        from_: _parsing.Instant,
        to: _parsing.Instant,
        max_fires: int = 0,
        *,
        request_id: str | None = None,
    ) -> list[common_pb2.Execution]:
        """Fire the nominal times of the task in [from_, to] now; returns the executions created
        (`max_fires` 0: the cluster default, 100; at most 1000)."""
        rid = request_id or _requests.new_request_id()
        request = _requests.backfill_request(task_id, from_, to, max_fires, rid)
        response = await self._invoke(
            lambda s: s.scheduler.BackfillTask,
            request,
            scheduler_pb2.BackfillTaskResponse,
            write=True,
            request_id=rid,
        )
        return list(response.executions)

    async def explain_task(
        self,
        task_id: str,
        from_: _parsing.Instant | None = None,
        to: _parsing.Instant | None = None,
        limit: int = 100,
    ) -> scheduler_pb2.ExplainTaskResponse:
        """The fire ledger of the task between `from_` and `to` (default: now), oldest first: one
        record per nominal time with its outcome and reason, plus the task's state and next fire."""
        request = _requests.explain_request(task_id, from_, to, limit)
        return await self._invoke(
            lambda s: s.scheduler.ExplainTask, request, scheduler_pb2.ExplainTaskResponse, write=False
        )

    async def preview_task(
        self, task_id: str, from_: _parsing.Instant | None = None, count: int = 10
    ) -> list[scheduler_pb2.PreviewFire]:
        """The next `count` fires of the stored task after `from_` (default: now), computed by the
        function the leader uses."""
        request = _requests.preview_request(task_id, from_, count)
        response = await self._invoke(
            lambda s: s.scheduler.PreviewTask, request, scheduler_pb2.PreviewTaskResponse, write=False
        )
        return list(response.fires)

    # ------------------------------------------------------------------------------------- audit trail

    async def list_audit(
        self,
        *,
        principal: str = "",
        method: str = "",
        since: _parsing.Instant | None = None,
        until: _parsing.Instant | None = None,
        target_id: str = "",
        limit: int | None = 100,
    ) -> list[audit_pb2.AuditRecord]:
        """The audit trail, filtered, oldest first, at most `limit` (None: all): see `Client.list_audit`."""
        request = _audit.request(principal, method, since, until, target_id)
        out: list[audit_pb2.AuditRecord] = []
        while limit is None or len(out) < limit:
            request.page_size = 1000 if limit is None else min(1000, limit - len(out))
            response = await self._invoke(
                lambda s: s.audit.ListAudit, request, audit_pb2.ListAuditResponse, write=False
            )
            out.extend(response.records)
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        return out

    # ------------------------------------------------------------------------------------- calendars

    async def put_calendar(
        self, calendar: common_pb2.Calendar, *, request_id: str | None = None
    ) -> common_pb2.Calendar:
        """Create or replace the calendar `calendar.name`; returns it with its new version."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.PutCalendarRequest(
            calendar=_namespace.calendar_in(calendar, self.namespace), request_id=rid
        )
        return await self._invoke(
            lambda s: s.scheduler.PutCalendar, request, common_pb2.Calendar, write=True, request_id=rid
        )

    async def get_calendar(self, name: str, *, namespace: str | None = None) -> common_pb2.Calendar:
        """The calendar `name`; raises `NotFound`."""
        request = scheduler_pb2.GetCalendarRequest(
            name=name, namespace=_namespace.wire(namespace or self.namespace)
        )
        return await self._invoke(
            lambda s: s.scheduler.GetCalendar, request, common_pb2.Calendar, write=False
        )

    async def list_calendars(
        self, *, namespace: str | None = None, all_namespaces: bool = False
    ) -> list[common_pb2.Calendar]:
        """Every stored calendar, in name order (read a page at a time)."""
        out: list[common_pb2.Calendar] = []
        scope, every = _namespace.list_scope(namespace, self.namespace, all_namespaces)
        token = ""
        while True:
            response = await self._invoke(
                lambda s: s.scheduler.ListCalendars,
                scheduler_pb2.ListCalendarsRequest(
                    page_size=1000, page_token=token, namespace=scope, all_namespaces=every
                ),
                scheduler_pb2.ListCalendarsResponse,
                write=False,
            )
            out.extend(response.calendars)
            token = response.next_page_token
            if not token:
                return out

    async def delete_calendar(
        self, name: str, *, request_id: str | None = None, namespace: str | None = None
    ) -> None:
        """Delete the calendar `name`; raises `NotFound`, or `FailedPrecondition` while a task or
        another calendar uses it."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.DeleteCalendarRequest(
            name=name, request_id=rid, namespace=_namespace.wire(namespace or self.namespace)
        )
        await self._invoke(
            lambda s: s.scheduler.DeleteCalendar,
            request,
            scheduler_pb2.DeleteCalendarResponse,
            write=True,
            request_id=rid,
        )

    # ------------------------------------------------------------------------------------- executions

    async def list_executions_page(
        self,
        task_id: str,
        *,
        state: common_pb2.ExecutionState.ValueType | str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[common_pb2.Execution], str]:
        """One page of the executions of `task_id` and the next page token ("" after the last)."""
        request = _requests.list_executions_request(task_id, state, page_size, page_token)
        response = await self._invoke(
            lambda s: s.scheduler.ListExecutions, request, scheduler_pb2.ListExecutionsResponse, write=False
        )
        return list(response.executions), response.next_page_token

    async def list_executions(
        self,
        task_id: str,
        *,
        state: common_pb2.ExecutionState.ValueType | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[common_pb2.Execution]:
        """Every execution of `task_id` (optionally in `state`), fetched page by page (`async for`)."""
        token = ""
        while True:
            executions, token = await self.list_executions_page(
                task_id, state=state, page_size=page_size, page_token=token
            )
            for execution in executions:
                yield execution
            if not token:
                return

    async def get_execution_logs(
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
        return await self._invoke(
            lambda s: s.scheduler.GetExecutionLogs,
            request,
            scheduler_pb2.GetExecutionLogsResponse,
            write=False,
        )

    async def get_execution(self, execution_id: str) -> common_pb2.Execution:
        """The execution `execution_id`; raises `NotFound`."""
        request = scheduler_pb2.GetExecutionRequest(execution_id=execution_id)
        return await self._invoke(
            lambda s: s.scheduler.GetExecution, request, common_pb2.Execution, write=False
        )

    async def cancel_execution(
        self, execution_id: str, reason: str = "", *, request_id: str | None = None
    ) -> common_pb2.Execution:
        """Cancel one execution; see `Client.cancel_execution`."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.CancelExecutionRequest(
            execution_id=execution_id, reason=reason, request_id=rid
        )
        return await self._invoke(
            lambda s: s.scheduler.CancelExecution, request, common_pb2.Execution, write=True, request_id=rid
        )

    async def cancel_executions(
        self, execution_ids: Iterable[str], reason: str = "", *, request_ids: Mapping[str, str] | None = None
    ) -> _requests.BulkResult[common_pb2.Execution]:
        """Cancel each execution in turn; see `Client.cancel_executions`."""
        rids = _requests.bulk_request_ids(execution_ids, request_ids)
        return await self._bulk(rids, lambda i, rid: self.cancel_execution(i, reason, request_id=rid))

    # ----------------------------------------------------------------------------------- dead letters

    async def list_dead_letters_page(
        self,
        task_id: str | None = None,
        *,
        page_size: int = 100,
        page_token: str = "",
        namespace: str | None = None,
        all_namespaces: bool = False,
    ) -> tuple[list[common_pb2.DeadLetter], str]:
        """One page of dead letters and the next page token; see `Client.list_dead_letters_page`."""
        request = _requests.list_dead_letters_request(task_id, page_size, page_token)
        if not task_id:  # a task's dead letters are in the task's namespace
            request.namespace, request.all_namespaces = _namespace.list_scope(
                namespace, self.namespace, all_namespaces
            )
        response = await self._invoke(
            lambda s: s.scheduler.ListDeadLetters, request, scheduler_pb2.ListDeadLettersResponse, write=False
        )
        return list(response.dead_letters), response.next_page_token

    async def list_dead_letters(
        self,
        task_id: str | None = None,
        *,
        page_size: int = 100,
        namespace: str | None = None,
        all_namespaces: bool = False,
    ) -> AsyncIterator[common_pb2.DeadLetter]:
        """Every dead letter (of `task_id`, or of every task), fetched page by page (`async for`)."""
        token = ""
        while True:
            items, token = await self.list_dead_letters_page(
                task_id,
                page_size=page_size,
                page_token=token,
                namespace=namespace,
                all_namespaces=all_namespaces,
            )
            for item in items:
                yield item
            if not token:
                return

    async def get_dead_letter(self, execution_id: str) -> common_pb2.DeadLetter:
        """The dead letter of `execution_id`; raises `NotFound`."""
        request = scheduler_pb2.GetDeadLetterRequest(execution_id=execution_id)
        return await self._invoke(
            lambda s: s.scheduler.GetDeadLetter, request, common_pb2.DeadLetter, write=False
        )

    async def redrive_dead_letters(
        self,
        execution_ids: Iterable[str] = (),
        task_id: str | None = None,
        limit: int = 0,
        *,
        request_id: str | None = None,
    ) -> list[common_pb2.Execution]:
        """Run dead letters again; see `Client.redrive_dead_letters`."""
        rid = request_id or _requests.new_request_id()
        request = _requests.redrive_request(execution_ids, task_id, limit, rid)
        response = await self._invoke(
            lambda s: s.scheduler.RedriveDeadLetters,
            request,
            scheduler_pb2.RedriveDeadLettersResponse,
            write=True,
            request_id=rid,
        )
        return list(response.executions)

    async def purge_dead_letters(
        self,
        execution_ids: Iterable[str] = (),
        task_id: str | None = None,
        before: _parsing.Instant | None = None,
        limit: int = 0,
        *,
        request_id: str | None = None,
        namespace: str | None = None,
    ) -> int:
        """Delete dead letters; returns how many; see `Client.purge_dead_letters`."""
        rid = request_id or _requests.new_request_id()
        request = _requests.purge_request(execution_ids, task_id, before, limit, rid)
        request.namespace = _namespace.wire(
            namespace or self.namespace
        )  # without ids or a task: this namespace only
        response = await self._invoke(
            lambda s: s.scheduler.PurgeDeadLetters,
            request,
            scheduler_pb2.PurgeDeadLettersResponse,
            write=True,
            request_id=rid,
        )
        return response.purged

    # ---------------------------------------------------------------------------------------- cluster

    async def cluster_status(self) -> cluster_pb2.StatusResponse:
        """The status of the cluster as seen by the first reachable node."""
        return await self._invoke(
            lambda s: s.cluster.Status, cluster_pb2.StatusRequest(), cluster_pb2.StatusResponse, write=False
        )
