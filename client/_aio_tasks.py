"""The calls on one task of `AsyncClient`: create, get, list, cancel, delete, update, edit, pause,
resume, and those on its fires (trigger, backfill, explain, preview).

`AsyncTaskCalls` is one of the subject mixins `AsyncClient` (client/aio.py) is composed of; the sync
twin, `_sync_tasks.py`, is generated from this file by scripts/gen_sync_client.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from cronraft.client import _namespace, _parsing, _requests, _specs
from cronraft.client._aio_base import AsyncClientBase
from cronraft.proto.v1 import common_pb2, scheduler_pb2, stats_pb2

__all__ = ["AsyncTaskCalls"]


class AsyncTaskCalls(AsyncClientBase):
    """The calls on one task (by id, or the one created)."""

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
        kind: str = "",
        next_after: _parsing.Instant | None = None,
        next_before: _parsing.Instant | None = None,
        last_outcomes: Iterable[common_pb2.ExecutionState.ValueType | str] = (),
    ) -> tuple[list[common_pb2.Task], str]:
        """One page of tasks and the token of the next page ("" after the last). Filters: `kind` of
        schedule ("cron", "at", "fixed_rate", "fixed_delay"), next fire (its due time) in
        [next_after, next_before), the final state of the last execution any of `last_outcomes`."""
        request = _requests.list_tasks_request(
            state,
            tags,
            name_prefix,
            page_size,
            page_token,
            kind=kind,
            next_after=next_after,
            next_before=next_before,
            last_outcomes=last_outcomes,
        )
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
        kind: str = "",
        next_after: _parsing.Instant | None = None,
        next_before: _parsing.Instant | None = None,
        last_outcomes: Iterable[common_pb2.ExecutionState.ValueType | str] = (),
    ) -> AsyncIterator[common_pb2.Task]:
        """Every task matching the filters (all `tags` pairs must match), fetched page by page."""
        last_outcomes = list(last_outcomes)
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
                kind=kind,
                next_after=next_after,
                next_before=next_before,
                last_outcomes=last_outcomes,
            )
            for task in tasks:
                yield task
            if not token:
                return

    async def get_task_stats(
        self, task_id: str, *, since: _parsing.Instant | None = None
    ) -> stats_pb2.TaskStats:
        """The statistics the cluster keeps for `task_id` over whole hours from `since` (at most 7 days
        back; None: the last 24 hours): outcomes, rates, duration and lateness quantiles, totals and the
        last outcome. Raises `NotFound`."""
        request = scheduler_pb2.GetTaskStatsRequest(
            task_id=task_id, since_ms=0 if since is None else _parsing.instant_ms(since, "since")
        )
        response = await self._invoke(
            lambda s: s.scheduler.GetTaskStats, request, scheduler_pb2.GetTaskStatsResponse, write=False
        )
        return response.stats

    async def cancel_task(self, task_id: str, *, request_id: str | None = None) -> common_pb2.Task:
        """Cancel a task (no further fire); returns it. Raises `NotFound`, or `FailedPrecondition`."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.CancelTaskRequest(task_id=task_id, request_id=rid)
        return await self._invoke(
            lambda s: s.scheduler.CancelTask, request, common_pb2.Task, write=True, request_id=rid
        )

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
