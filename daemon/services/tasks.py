"""The Scheduler service's task methods: create (one or a stream of them), read, list, edit, pause, resume,
trigger, backfill, cancel, delete, and explain or preview a task's fires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from cronraft import bounds, errors
from cronraft.daemon import redact
from cronraft.daemon.bulk import BulkImport
from cronraft.daemon.leader_runner import new_id
from cronraft.daemon.rejections import check_result, error_for
from cronraft.daemon.security.authz import require_role
from cronraft.daemon.services.common import (
    SchedulerBase,
    _caller_scope,
    _guard,
    _list_namespace,
    _page_size,
    _recorded,
    _request_id,
    _task_for,
)
from cronraft.daemon.services.executions import check_tags, check_window
from cronraft.daemon.wire import check_id, check_length
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import features, quota
from cronraft.raft import state as sm
from cronraft.raft.deps import MAX_DEPENDENCIES
from cronraft.raft.firing import preview_stored
from cronraft.raft.kv import Txn
from cronraft.raft.records import TERMINAL_STATES
from cronraft.raft.rejection import Code, Rejection
from cronraft.raft.schedule import MAX_INSTANT_MS
from cronraft.raft.validate import check_namespace, check_new_targets, check_retry_codes, validate_spec
from cronraft.tokenfile import ALL_NAMESPACES

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

_TASK_STATES = frozenset(common_pb2.TaskState.values())
_FINAL_STATES = TERMINAL_STATES


class TaskMethods(SchedulerBase):
    """Scheduler methods on tasks (daemon.services.scheduler composes them with the other subjects)."""

    async def CreateTask(
        self, request: scheduler_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.CreateTaskResponse:
        return await _guard(context, self._create(request))

    async def _create(self, request: scheduler_pb2.CreateTaskRequest) -> scheduler_pb2.CreateTaskResponse:
        node = self.node
        await node.writer()  # redirect before doing any work
        spec = common_pb2.TaskSpec()
        spec.CopyFrom(request.spec)
        spec.namespace = check_namespace(spec.namespace, "spec.namespace")
        require_role("CreateTask", spec.namespace)
        _stamp_defaults(spec, node)
        with node.kv.read() as txn:
            _check_upstreams(txn, spec)
            if _recorded(txn, request.request_id, "create") is None:  # not applied: it may have filled it
                quota.check_tasks(txn, node.limits)  # apply checks it again, with the same limits
            key = _request_id(txn, request.request_id, "create")
        now = node.clock.now_ms()
        cmd = commands_pb2.Command(
            request_id=key,
            stamped_at_ms=now,
            limits=node.limits,
            create_task=commands_pb2.CreateTask(task_id=new_id(now), spec=spec),
        )
        (res,) = await node.propose([cmd])
        check_result(res)
        return scheduler_pb2.CreateTaskResponse(task=res.task)

    async def ImportTasks(
        self,
        request_iterator: AsyncIterator[scheduler_pb2.ImportTasksRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> scheduler_pb2.ImportTasksResponse:
        def stamp(spec: common_pb2.TaskSpec, node: Node) -> None:
            spec.namespace = check_namespace(spec.namespace, "spec.namespace")
            require_role("ImportTasks", spec.namespace)  # each spec's own namespace
            _stamp_defaults(spec, node)
            with node.kv.read() as txn:
                _check_upstreams(txn, spec)

        bulk = BulkImport(self.node, stamp=stamp, request_id=_request_id, recorded=_recorded)
        return await _guard(context, bulk.run(request_iterator))

    async def CancelTask(
        self, request: scheduler_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        return await _guard(context, self._cancel(request))

    async def _cancel(self, request: scheduler_pb2.CancelTaskRequest) -> common_pb2.Task:
        node = self.node
        await node.writer()
        with node.kv.read() as txn:
            _task_for(txn, request.task_id, "CancelTask")
            key = _request_id(txn, request.request_id, "cancel")
        cmd = commands_pb2.Command(
            request_id=key,
            stamped_at_ms=node.clock.now_ms(),
            cancel_task=commands_pb2.CancelTask(task_id=request.task_id),
        )
        (res,) = await node.propose([cmd])
        check_result(res)
        return res.task

    async def DeleteTask(
        self, request: scheduler_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.DeleteTaskResponse:
        return await _guard(context, self._delete(request))

    async def _delete(self, request: scheduler_pb2.DeleteTaskRequest) -> scheduler_pb2.DeleteTaskResponse:
        """Delete a task with its history (raft.retention). A running execution refuses it with
        FAILED_PRECONDITION naming the execution, unless `force` (it is then terminated)."""
        node = self.node
        await node.writer()
        check_id(request.task_id, "task_id")
        with node.kv.read() as txn:
            namespace = _deleted_by(txn, request)
            if namespace is None:
                namespace = _task_for(txn, request.task_id, "DeleteTask").spec.namespace
        body = commands_pb2.DeleteTask(task_id=request.task_id, force=request.force)
        res = await self._write("delete", request.request_id, namespace, delete_task=body)
        return scheduler_pb2.DeleteTaskResponse(
            task=res.tasks[0] if res.tasks else common_pb2.Task(task_id=request.task_id),
            executions_deleted=res.pruned.executions,
            cleanup_pending=res.pruned.more,
        )

    async def GetTask(
        self, request: scheduler_pb2.GetTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        return await _guard(context, self._get_task(request))

    async def _get_task(self, request: scheduler_pb2.GetTaskRequest) -> common_pb2.Task:
        with self.node.kv.read() as txn:
            task = _task_for(txn, request.task_id, "GetTask")
        return task

    async def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListTasksResponse:
        return await _guard(context, self._list_tasks(request))

    async def _list_tasks(self, request: scheduler_pb2.ListTasksRequest) -> scheduler_pb2.ListTasksResponse:
        size = _page_size(request.page_size, "page_size")
        if request.state not in _TASK_STATES:
            raise errors.InvalidArgument("state", f"unknown task state {request.state}")
        check_length(request.page_token, "page_token", bounds.MAX_PAGE_TOKEN)
        check_length(request.name_prefix, "name_prefix", bounds.MAX_NAME_PREFIX)
        check_tags(dict(request.tags))
        check_window(request.next_after_ms, request.next_before_ms, "next_after_ms", "next_before_ms")
        check_length(request.kind, "kind", 16)  # the kind itself is raft.search's to check
        if len(request.last_outcomes) > len(_FINAL_STATES):
            raise errors.InvalidArgument("last_outcomes", f"at most {len(_FINAL_STATES)} states")
        for i, s in enumerate(request.last_outcomes):
            if s not in _FINAL_STATES:
                raise errors.InvalidArgument(f"last_outcomes[{i}]", f"not a final execution state: {s}")
        namespace = _list_namespace("ListTasks", request.namespace, request.all_namespaces)
        with self.node.kv.read() as txn:
            if request.last_outcomes:  # last outcomes are kept with the statistics (raft.features)
                features.require(txn, features.STATS, "ListTasks with last_outcomes")
            tasks, token = sm.list_tasks(
                txn,
                state=request.state,
                tags=dict(request.tags),
                name_prefix=request.name_prefix,
                namespace=namespace,
                page_size=size,
                page_token=request.page_token,
                max_bytes=bounds.MAX_PAGE_BYTES,
                kind=request.kind,
                next_after_ms=request.next_after_ms,
                next_before_ms=request.next_before_ms,
                last_outcomes=frozenset(request.last_outcomes),
            )
        return scheduler_pb2.ListTasksResponse(tasks=tasks, next_page_token=token)

    # ----------------------------------------------------------------------- edits and lifecycle

    def _check_room(self, task_id: str, method: str, request_id: str, kind: str) -> None:
        """The task's quotas allow one more execution (raft.quota; apply checks it again), unless this
        request was applied already: its own executions may fill them (common._recorded)."""
        check_id(task_id, "task_id")
        with self.node.kv.read() as txn:
            task = _task_for(txn, task_id, method)
            if _recorded(txn, request_id, kind) is not None:
                return
            refusal = quota.execution_refusal(txn, self.node.limits, task)
        if refusal is not None:
            raise refusal

    async def UpdateTask(
        self, request: scheduler_pb2.UpdateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        async def run() -> common_pb2.Task:
            await self.node.writer()
            spec = common_pb2.TaskSpec()
            spec.CopyFrom(request.spec)
            with self.node.kv.read() as txn:
                # A task stays in the namespace it was created in (empty here: the task's).
                spec.namespace = _same_namespace(_task_for(txn, request.task_id, "UpdateTask"), spec)
                _check_upstreams(txn, spec)
            _keep_secrets(spec, self.node, request.task_id)
            _stamp_defaults(spec, self.node)
            update = commands_pb2.UpdateTask(
                task_id=request.task_id, spec=spec, expected_version=request.expected_version
            )
            return (await self._write("update", request.request_id, update_task=update)).task

        return await _guard(context, run())

    async def PauseTask(
        self, request: scheduler_pb2.PauseTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        body = commands_pb2.PauseTask(task_id=request.task_id, note=request.note)

        async def run() -> commands_pb2.CommandResult:
            check_length(request.note, "note", bounds.MAX_NOTE)
            return await self._write("pause", request.request_id, pause_task=body)

        return (await _guard(context, run())).task

    async def ResumeTask(
        self, request: scheduler_pb2.ResumeTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        body = commands_pb2.ResumeTask(task_id=request.task_id, replay_missed=request.replay_missed)
        return (await _guard(context, self._write("resume", request.request_id, resume_task=body))).task

    async def TriggerTask(
        self, request: scheduler_pb2.TriggerTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Execution:
        async def run() -> common_pb2.Execution:
            await self.node.writer()
            self._check_room(request.task_id, "TriggerTask", request.request_id, "trigger")
            body = commands_pb2.TriggerTask(
                task_id=request.task_id, execution_id=new_id(self.node.clock.now_ms())
            )
            res = await self._write("trigger", request.request_id, trigger_task=body)
            if res.error_code == Code.SKIPPED_OVERLAP:  # applied, but no execution: refused all the same
                raise error_for(Rejection(Code.SKIPPED_OVERLAP, res.error))
            return res.execution

        return await _guard(context, run())

    async def BackfillTask(
        self, request: scheduler_pb2.BackfillTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.BackfillTaskResponse:
        async def run() -> scheduler_pb2.BackfillTaskResponse:
            if request.max_fires < 0 or request.max_fires > 1000:
                raise errors.InvalidArgument("max_fires", "must be between 0 and 1000")
            await self.node.writer()
            self._check_room(request.task_id, "BackfillTask", request.request_id, "backfill")
            body = commands_pb2.BackfillTask(
                task_id=request.task_id,
                from_ms=request.from_ms,
                to_ms=request.to_ms,
                max_fires=request.max_fires,
            )
            res = await self._write("backfill", request.request_id, backfill_task=body)
            created = [e for e in res.executions if e.manual and e.fired_at_ms == res.task.updated_at_ms]
            return scheduler_pb2.BackfillTaskResponse(executions=created)

        return await _guard(context, run())

    async def ExplainTask(
        self, request: scheduler_pb2.ExplainTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ExplainTaskResponse:
        async def run() -> scheduler_pb2.ExplainTaskResponse:
            limit = _page_size(request.limit, "limit")
            if request.from_ms < 0 or request.to_ms < 0:
                raise errors.InvalidArgument("from_ms", "from_ms and to_ms must not be negative")
            to_ms = request.to_ms or self.node.clock.now_ms()
            with self.node.kv.read() as txn:
                task = _task_for(txn, request.task_id, "ExplainTask")
                records = sm.ledger(txn, request.task_id, request.from_ms, to_ms, limit)
            return scheduler_pb2.ExplainTaskResponse(
                records=records, next_fire_ms=task.next_fire_ms, state=task.state, note=task.pause_note
            )

        return await _guard(context, run())

    async def PreviewTask(
        self, request: scheduler_pb2.PreviewTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.PreviewTaskResponse:
        async def run() -> scheduler_pb2.PreviewTaskResponse:
            count = request.count or 10
            if count < 0 or count > 1000:
                raise errors.InvalidArgument("count", "must be between 1 and 1000")
            if not 0 <= request.from_ms <= MAX_INSTANT_MS:
                raise errors.InvalidArgument("from_ms", f"must be between 0 (now) and {MAX_INSTANT_MS}")
            with self.node.kv.read() as txn:
                task = _task_for(txn, request.task_id, "PreviewTask")
                fires = preview_stored(txn, task, request.from_ms or self.node.clock.now_ms(), count)
            return scheduler_pb2.PreviewTaskResponse(fires=fires)

        return await _guard(context, run())


def _same_namespace(task: common_pb2.Task, spec: common_pb2.TaskSpec) -> str:
    """The namespace of an update's spec: the task's (a task cannot move; empty means the task's)."""
    given = check_namespace(spec.namespace, "spec.namespace")
    if spec.namespace and given != task.spec.namespace:
        raise errors.InvalidArgument(
            "spec.namespace",
            f"task {task.task_id} is in namespace {task.spec.namespace or 'default'}; a task cannot move "
            "to another namespace (create it there instead)",
        )
    return task.spec.namespace


def _deleted_by(txn: Txn, request: scheduler_pb2.DeleteTaskRequest) -> str | None:
    """The namespace to act in when this very request deleted the task: its request id is in the dedup
    table with the task's summary, else None. A retry of a delete whose answer was lost (a leader killed
    after applying it) finds the task gone, and the existence check refused it NOT_FOUND where the dedup
    table holds the answer the first attempt got. A request id tied to its caller (common._caller_scope)
    finds only the caller's own record, made with the roles it holds now, the task's namespace among
    them. Otherwise (below the feature schedule_fixes) the record may be anyone's, and its summary does
    not keep the task's namespace: the caller needs its role in every namespace, as for the other remains
    of a deleted task (common._task_namespace); anyone else still gets NOT_FOUND."""
    done = _recorded(txn, request.request_id, "delete")
    if done is None or not done.tasks or done.tasks[0].task_id != request.task_id:
        return None  # refused when applied (the task is still there), or another task's request id
    if not _caller_scope(txn):
        require_role("DeleteTask", ALL_NAMESPACES, hide=f"task {request.task_id} not found")
    return ""  # checked: `_write` must not look the task up


def _check_upstreams(txn: Txn, spec: common_pb2.TaskSpec) -> None:
    """A task depends only on tasks of its own namespace; one elsewhere reads as missing (no leak)."""
    for i, dep in enumerate(spec.depends_on[:MAX_DEPENDENCIES]):
        try:
            upstream = sm.read_task(txn, dep.task_id)
        except errors.InvalidArgument:
            continue  # a malformed id: the state machine names it
        if upstream is not None and upstream.spec.namespace != spec.namespace:
            where = f" in namespace {spec.namespace}" if spec.namespace else ""
            raise errors.InvalidArgument(f"spec.depends_on[{i}].task_id", f"no task {dep.task_id}{where}")


def _keep_secrets(spec: common_pb2.TaskSpec, node: Node, task_id: str) -> None:
    """An update sending back "<redacted>" (a read-modify-write by a caller shown redacted values) keeps
    the stored values there, while the payload around them is unchanged (daemon.redact.restore)."""
    with node.kv.read() as txn:
        stored = sm.read_task(txn, task_id) if task_id else None
    redact.restore(spec, stored.spec if stored is not None else None)


def _stamp_defaults(spec: common_pb2.TaskSpec, node: Node) -> None:
    """Validate a spec and fill its defaults. Defaults are stamped here, on the leader, so that apply()
    stays free of configuration."""
    cfg = node.config.scheduler
    validate_spec(spec, max_payload_bytes=cfg.max_payload_bytes)
    redact.refuse_placeholders(spec)  # "<redacted>" is what readers see, not a value (daemon.redact)
    # Issue 13, for new specs only (apply() keeps accepting what it accepted: committed entries replay
    # the same): no notify command, only configured notifiers, webhooks to allowed hosts.
    check_new_targets(
        spec.notify,
        "spec.notify",
        notifiers=node.config.notifiers.keys(),
        webhook_hosts=node.config.webhook_hosts,
    )
    check_retry_codes(spec)  # new specs only, as the targets above: apply() keeps its own rules
    spec.queue = spec.queue or "default"
    spec.timeout_ms = spec.timeout_ms or cfg.default_timeout_ms
    spec.max_attempts = spec.max_attempts or cfg.max_attempts
    if spec.guarantee == common_pb2.DELIVERY_GUARANTEE_UNSPECIFIED:
        spec.guarantee = common_pb2.AT_LEAST_ONCE
    if spec.priority == common_pb2.PRIORITY_UNSPECIFIED:
        spec.priority = common_pb2.MEDIUM


__all__ = ["TaskMethods"]
