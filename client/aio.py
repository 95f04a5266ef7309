"""The asyncio Cronraft client (grpc.aio), and the one source of both clients.

`client/sdk.py` (`Client`, the synchronous client) is generated from this file by
scripts/gen_sync_client.py (`make clients`; `make check` fails when it is stale), the way httpcore
generates its sync code with unasync: `async def` -> `def`, `await x` -> `x`, `asyncio.sleep` ->
`time.sleep`, `AsyncIterator` -> `Iterator`, `aio_channel` -> `channel`, `AsyncClient` -> `Client`. So the
two clients have the same methods, arguments, docstrings and behaviour; write a method here only.

Writes (create, update, pause, resume, trigger, backfill, cancel, calendar changes, dead-letter redrive
and purge) go to the leader: a follower answers UNAVAILABLE with the leader's address in the
`cronraft-leader` trailing metadata, and the client retries there and remembers it. Every write carries a
`request_id` generated once per logical call and reused on each retry, so a retry after an unknown outcome
is safe (the cluster deduplicates). Reads go to any reachable node. UNAVAILABLE and DEADLINE_EXCEEDED are
retried over the configured servers with capped exponential backoff, within the client's `timeout_s`
(`_routing.CallPlan`). Channels are created lazily inside the running event loop; use the client from the
loop that created its channels.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.client import _audit, _bulk, _namespace, _parsing, _requests, _routing, _specs
from cronraft.client._channels import CHANNEL_OPTIONS, Stubs, rpc_status
from cronraft.client._transport import Transport, with_tls_hint
from cronraft.errors import CronraftError
from cronraft.proto.v1 import audit_pb2, cluster_pb2, common_pb2, scheduler_pb2

__all__ = ["AsyncClient"]

_Resp = TypeVar("_Resp")
_Msg = TypeVar("_Msg")


class AsyncClient:
    """An asyncio client of a Cronraft cluster.

    `servers` is "host:port", several comma separated, or a sequence of them; None (the default) reads
    $CRONRAFT_SERVER, else 127.0.0.1:50051. `timeout_s` bounds each logical call, retries included;
    `attempt_timeout_s` bounds one attempt (default: half of `timeout_s`) so that a hung node leaves time
    to try another. `transport` carries TLS settings and the bearer token (default: from the environment,
    `client._transport`). `namespace` is where creates, imports, calendar calls, lists and bulk calls act
    unless a call or a spec names another (calls by id act in the object's own namespace; docs/security.md,
    "Namespaces"). Use it as a context manager (`async with`), or `await close()`.

    Errors raised are those of `cronraft.errors`: `InvalidArgument` (with `.field`), `NotFound`,
    `FailedPrecondition`, `ResourceExhausted`, `Unavailable` (retries exhausted), `DeadlineExceeded`,
    else `CronraftError`.
    """

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
        # TLS and token (client._transport); None: from $CRONRAFT_TLS_* and $CRONRAFT_TOKEN.
        self._transport = transport if transport is not None else Transport.from_env()
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.max_redirects = max_redirects
        # Creates, puts, lists and bulk calls act in this namespace unless told otherwise (client._namespace).
        self.namespace = _namespace.check(namespace)
        self._stubs: dict[str, Stubs] = {}
        self._lock = threading.Lock()  # the sync client is shared between threads
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
        with self._lock:
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

    def _stubs_for(self, address: str) -> Stubs:
        with self._lock:
            if self._closed:
                raise CronraftError("client is closed")
            stubs = self._stubs.get(address)
            if stubs is None:
                stubs = Stubs(self._transport.aio_channel(address, CHANNEL_OPTIONS))
                self._stubs[address] = stubs
            return stubs

    async def _invoke(
        self,
        pick: Callable[[Stubs], Callable[..., Any]],
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
        """Create a task; returns it as stored (with `task_id`, `state`, `next_fire_ms`).

        `schedule` comes from `cron`, `at`, `every` or `delay`; `payload` from `command` or `shell`.
        `guarantee` is an enum value or "at-least-once" / "exactly-once" / "at-most-once"; `priority`
        "high" / "medium" / "low". `misfire` ("skip" / "fire-once" / "fire-all"), `catchup_window`,
        `max_catchup` and `overlap` ("skip" / "buffer-one" / "buffer-all" / "cancel-other" /
        "terminate-other" / "allow-all") are described in `build_spec`, as are `retry` (from `retry`),
        `notify` (from `notify_webhook` / `notify_command`), `worker_labels`, `max_concurrency` and
        `retention` (from `retention`). `payload` may also come from `http` or `handler`.
        `request_id` (default: a fresh uuid4 hex) makes the call idempotent.
        """
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
        """Create many tasks through the bulk API (`ImportTasks`): `specs` (read lazily) are sent in
        batches of `batch_size`, each created whole or not at all in one replicated entry.

        Batch n carries the request id `<import_id>-<n>` (`import_id`: a fresh one by default): running
        the same import again with the same `import_id` creates only the batches that are missing. A bad
        spec raises `InvalidArgument` naming `batches[b].specs[i].<field>`; the batches acknowledged before
        it stay created (`on_progress`, called after each acknowledged segment, has seen them).
        `segment_timeout_s` bounds each call of `SEGMENT_BATCHES` batches, retries included.
        """
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
        """Every task matching the filters (all `tags` pairs must match), fetched page by page."""
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
        """Cancel a task (no further fire); returns it. Raises `NotFound`, or `FailedPrecondition`."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.CancelTaskRequest(task_id=task_id, request_id=rid)
        return await self._invoke(
            lambda s: s.scheduler.CancelTask, request, common_pb2.Task, write=True, request_id=rid
        )

    async def cancel_tasks(
        self, task_ids: Iterable[str], *, request_ids: Mapping[str, str] | None = None
    ) -> _requests.BulkResult[common_pb2.Task]:
        """Cancel each task in turn (one CancelTask per id, each with its own request id, reused on its
        retries; `request_ids` gives them, e.g. from a previous result). Never raises for one id: see
        `BulkResult` (`results`, `errors`, `skipped` once the cluster is unreachable)."""
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
        """Cancel every task matching the filters (at least one is required), skipping those already
        cancelled. Not atomic: it lists the matching tasks, then cancels them one by one, so a task
        created or changed meanwhile may be missed or still cancelled. Results as `cancel_tasks`."""
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
        """Delete a task with its whole history (executions, attempts, output logs, dead letters, fire
        ledger); the response holds the task as it was. Raises `NotFound`, or `FailedPrecondition`
        naming the execution while one runs, unless `force`: running executions are then terminated
        (their workers are told to stop; a late result is refused) and deleted too. A long history is
        deleted over the next retention steps (`cleanup_pending`); the task is gone at once."""
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
        """Delete each task in turn (one DeleteTask per id, each with its own request id, reused on its
        retries). Never raises for one id: see `BulkResult`."""
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
        """Delete every task matching the filters (at least one is required). Not atomic: it lists the
        matching tasks, then deletes them one by one. Results as `delete_tasks`."""
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
        """The audit trail (docs/security.md, "Audit trail"): records of the writes, oldest first, filtered
        by principal, RPC name (e.g. "CreateTask"), stamped time in [since, until) and a target id or
        calendar name; at most `limit` (None: all). Read from the node the client reaches: every node
        holds the same trail up to the entry it applied. Needs the admin role."""
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
        """Every execution of `task_id` (optionally in `state`), fetched page by page."""
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

    async def follow_execution_logs(
        self, execution_id: str, *, attempt: int = 0, poll_s: float = 0.5
    ) -> AsyncIterator[scheduler_pb2.GetExecutionLogsResponse]:
        """Reads until the attempt ended and everything stored was returned (`schedctl logs -f`)."""
        out = err = 0
        while True:
            page = await self.get_execution_logs(
                execution_id, attempt=attempt, stdout_offset=out, stderr_offset=err
            )
            attempt = page.attempt
            out, err = page.stdout_next_offset, page.stderr_next_offset
            yield page
            if page.finished:
                return
            if not page.stdout and not page.stderr:
                await asyncio.sleep(poll_s)

    async def get_execution(self, execution_id: str) -> common_pb2.Execution:
        """The execution `execution_id` (with its stdout/stderr tails); raises `NotFound`."""
        request = scheduler_pb2.GetExecutionRequest(execution_id=execution_id)
        return await self._invoke(
            lambda s: s.scheduler.GetExecution, request, common_pb2.Execution, write=False
        )

    async def cancel_execution(
        self, execution_id: str, reason: str = "", *, request_id: str | None = None
    ) -> common_pb2.Execution:
        """Cancel one execution: a pending or buffered one ends at once, a running one is killed by
        its worker. Raises `NotFound`, or `FailedPrecondition` if it already ended."""
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
        """Cancel each execution in turn (one CancelExecution per id, each with its own request id,
        reused on its retries). Results as `cancel_tasks`."""
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
        """One page of dead letters (of `task_id`, or of every task) and the next page token."""
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
        """Every dead letter (of `task_id`, or of every task), fetched page by page."""
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
        """The dead letter of `execution_id` (reason, attempts, output tails); raises `NotFound`."""
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
        """Run dead letters again as new executions (by ids, or every one of `task_id`, at most `limit`;
        0: the cluster's bound); returns the new executions. One write: idempotent by `request_id`."""
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
        """Delete dead letters (by ids, or those of `task_id`; only those dead before `before` if
        given; at most `limit`, 0: the cluster's bound); returns how many were deleted."""
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
