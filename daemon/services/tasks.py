"""gRPC servicers: Scheduler (tasks and executions), WorkerGateway (worker streams), Cluster (status).

Errors from the one error tree are mapped to gRPC status codes here and only here (`_abort`); a command's
recorded rejection becomes such an error in daemon/rejections.py (`check_result`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import structlog

from cronraft import bounds, errors
from cronraft.daemon import redact
from cronraft.daemon.bulk import BulkImport
from cronraft.daemon.leader_runner import new_id
from cronraft.daemon.rejections import check_result, error_for
from cronraft.daemon.security import (
    current_principal,
    readable,
    require_all_namespaces,
    require_role,
)
from cronraft.daemon.wire import (
    ByteBudget,
    bounded_results,
    calendar_name,
    check_id,
    check_ids,
    check_length,
    check_limit,
    executions_page_token,
    hello_problem,
    worker_identity_problem,
    worker_problem,
)
from cronraft.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    commands_pb2,
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from cronraft.raft import output, quota, retry
from cronraft.raft import state as sm
from cronraft.raft.deps import MAX_DEPENDENCIES
from cronraft.raft.firing import calendar_key, check_calendar, preview_stored
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import Code, Rejection
from cronraft.raft.schedule import MAX_INSTANT_MS
from cronraft.raft.validate import check_namespace, check_new_targets, validate_spec
from cronraft.tokenfile import ALL_NAMESPACES

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

log = structlog.get_logger("cronraft.api")

LEADER_METADATA_KEY = "cronraft-leader"
# A worker that reaches a node while no leader is known (an election is on) is held this long, and told
# the new leader the moment this node learns it, instead of being sent away to back off and retry. Below
# the worker's Hello timeout (3 s) so that the answer always arrives.
LEADERLESS_HOLD_S = 2.0
LEADERLESS_POLL_S = 0.02
MAX_PAGE_SIZE = bounds.MAX_PAGE_SIZE
_TASK_STATES = frozenset(common_pb2.TaskState.values())
_EXECUTION_STATES = frozenset(common_pb2.ExecutionState.values())
_T = TypeVar("_T")

# The ids each kind of write must name (others are checked only when given).
_ID_REQUIRED: dict[str, tuple[str, ...]] = {
    "update": ("task_id",),
    "pause": ("task_id",),
    "resume": ("task_id",),
    "trigger": ("task_id",),
    "backfill": ("task_id",),
    "cancel-exec": ("execution_id",),
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], e: errors.CronraftError) -> NoReturn:
    if isinstance(e, errors.NotLeader):
        context.set_trailing_metadata(((LEADER_METADATA_KEY, e.leader_address or ""),))
    code = getattr(grpc.StatusCode, e.grpc_code, grpc.StatusCode.INTERNAL)
    await context.abort(code, str(e))


async def _guard(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[_T]) -> _T:
    try:
        return await call
    except errors.CronraftError as e:
        await _abort(context, e)


def _page_size(n: int, field: str) -> int:
    """A page size or limit: 0 is the default (100), more than MAX_PAGE_SIZE is lowered to it."""
    if n < 0:
        raise errors.InvalidArgument(field, f"must be between 0 and {MAX_PAGE_SIZE}")
    return min(n or 100, MAX_PAGE_SIZE)


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def CreateTask(
        self, request: scheduler_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.CreateTaskResponse:
        return await _guard(context, self._create(request))

    async def _create(self, request: scheduler_pb2.CreateTaskRequest) -> scheduler_pb2.CreateTaskResponse:
        node = self.node
        node.leader_runner()  # redirect before doing any work
        spec = common_pb2.TaskSpec()
        spec.CopyFrom(request.spec)
        spec.namespace = check_namespace(spec.namespace, "spec.namespace")
        require_role("CreateTask", spec.namespace)
        _stamp_defaults(spec, node)
        with node.kv.read() as txn:
            _check_upstreams(txn, spec)
            quota.check_tasks(txn, node.limits)  # apply checks it again, with the same limits
        now = node.clock.now_ms()
        cmd = commands_pb2.Command(
            request_id=_request_id(request.request_id, "create"),
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

        bulk = BulkImport(self.node, stamp=stamp, request_id=_request_id)
        return await _guard(context, bulk.run(request_iterator))

    async def CancelTask(
        self, request: scheduler_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        return await _guard(context, self._cancel(request))

    async def _cancel(self, request: scheduler_pb2.CancelTaskRequest) -> common_pb2.Task:
        node = self.node
        node.leader_runner()
        with node.kv.read() as txn:
            _task_for(txn, request.task_id, "CancelTask")
        cmd = commands_pb2.Command(
            request_id=_request_id(request.request_id, "cancel"),
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
        node.leader_runner()
        check_id(request.task_id, "task_id")
        with node.kv.read() as txn:
            _task_for(txn, request.task_id, "DeleteTask")
        body = commands_pb2.DeleteTask(task_id=request.task_id, force=request.force)
        res = await self._write("delete", request.request_id, delete_task=body)
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
        if len(request.tags) > bounds.MAX_FILTER_TAGS:
            raise errors.InvalidArgument("tags", f"at most {bounds.MAX_FILTER_TAGS} tags to filter on")
        for k, v in request.tags.items():
            check_length(k, "tags", bounds.MAX_TAG_LEN)
            check_length(v, f"tags.{k}", bounds.MAX_TAG_LEN)
        namespace = _list_namespace("ListTasks", request.namespace, request.all_namespaces)
        with self.node.kv.read() as txn:
            tasks, token = sm.list_tasks(
                txn,
                state=request.state,
                tags=dict(request.tags),
                name_prefix=request.name_prefix,
                namespace=namespace,
                page_size=size,
                page_token=request.page_token,
                max_bytes=bounds.MAX_PAGE_BYTES,
            )
        return scheduler_pb2.ListTasksResponse(tasks=tasks, next_page_token=token)

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

    # ----------------------------------------------------------------------- edits and lifecycle

    async def _write(
        self, kind: str, request_id: str, _namespace: str | None = None, **body: Any
    ) -> commands_pb2.CommandResult:
        node = self.node
        node.leader_runner()
        # The ids a write names are checked before it is proposed (the state machine refuses a malformed
        # one too, but only once it is in the log).
        (message,) = body.values()
        for name in ("task_id", "execution_id"):
            given: str = getattr(message, name, "")
            if given or name in _ID_REQUIRED.get(kind, ()):
                check_id(given, name)
        # The caller's role in the namespace of the task or execution the write names (NOT_FOUND when it
        # cannot read that namespace); `_namespace` when the caller checked it already.
        namespace = _namespace
        method = _KIND_METHOD.get(kind)
        if method is not None and namespace is None:
            with node.kv.read() as txn:
                if getattr(message, "task_id", ""):
                    namespace = _task_for(txn, message.task_id, method).spec.namespace
                elif kind == "cancel-exec":
                    namespace = _execution_for(txn, message.execution_id, method).namespace
        cmd = commands_pb2.Command(
            request_id=_request_id(request_id, kind),
            stamped_at_ms=node.clock.now_ms(),
            limits=node.limits,
            **body,
        )
        (res,) = await node.propose([cmd])
        check_result(res)
        if namespace is not None:
            for ex in (res.execution, *res.executions):
                ex.namespace = namespace
            for letter in res.dead_letters:
                letter.namespace = namespace
        return res

    def _check_room(self, task_id: str, method: str) -> None:
        """The task's quotas allow one more execution (raft.quota; apply checks it again)."""
        check_id(task_id, "task_id")
        with self.node.kv.read() as txn:
            task = _task_for(txn, task_id, method)
            refusal = None if task is None else quota.execution_refusal(txn, self.node.limits, task)
        if refusal is not None:
            raise refusal

    async def UpdateTask(
        self, request: scheduler_pb2.UpdateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Task:
        async def run() -> common_pb2.Task:
            self.node.leader_runner()
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
            self.node.leader_runner()
            self._check_room(request.task_id, "TriggerTask")
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
            self.node.leader_runner()
            self._check_room(request.task_id, "BackfillTask")
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

    async def CancelExecution(
        self, request: scheduler_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Execution:
        body = commands_pb2.CancelExecution(execution_id=request.execution_id, reason=request.reason)

        async def run() -> commands_pb2.CommandResult:
            check_length(request.reason, "reason", bounds.MAX_REASON)
            return await self._write("cancel-exec", request.request_id, cancel_execution=body)

        return (await _guard(context, run())).execution

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

    # ------------------------------------------------------------------------------- dead letters

    async def ListDeadLetters(
        self, request: scheduler_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListDeadLettersResponse:
        async def run() -> scheduler_pb2.ListDeadLettersResponse:
            size = _page_size(request.page_size, "page_size")
            check_length(request.page_token, "page_token", bounds.MAX_PAGE_TOKEN)
            with self.node.kv.read() as txn:
                if request.task_id:  # the task's namespace
                    task = _task_for(txn, request.task_id, "ListDeadLetters")
                    letters, token = retry.list_dead_letters(txn, request.task_id, size, request.page_token)
                    for letter in letters:
                        letter.namespace = task.spec.namespace
                else:
                    namespace = _list_namespace("ListDeadLetters", request.namespace, request.all_namespaces)
                    letters, token = _letters_page(txn, namespace, size, request.page_token)
            total = 0
            for i, letter in enumerate(letters):  # a page ends past MAX_PAGE_BYTES (tokens: an id)
                total += letter.ByteSize()
                if total >= bounds.MAX_PAGE_BYTES and i + 1 < len(letters):
                    letters, token = letters[: i + 1], letter.execution_id
                    break
            return scheduler_pb2.ListDeadLettersResponse(dead_letters=letters, next_page_token=token)

        return await _guard(context, run())

    async def GetDeadLetter(
        self, request: scheduler_pb2.GetDeadLetterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.DeadLetter:
        async def run() -> common_pb2.DeadLetter:
            with self.node.kv.read() as txn:
                letters = [
                    d
                    for d in retry.list_dead_letters(txn, "", 1, _before(request.execution_id))[0]
                    if d.execution_id == request.execution_id
                ]
                missing = f"no dead letter for execution {request.execution_id}"
                if not letters:
                    raise errors.NotFound(missing)
                namespace = _task_namespace(txn, letters[0].task_id)
            require_role("GetDeadLetter", namespace, hide=missing)
            letters[0].namespace = "" if namespace == ALL_NAMESPACES else namespace
            return letters[0]

        return await _guard(context, run())

    async def RedriveDeadLetters(
        self, request: scheduler_pb2.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.RedriveDeadLettersResponse:
        async def run() -> scheduler_pb2.RedriveDeadLettersResponse:
            if not request.execution_ids and not request.task_id:
                raise errors.InvalidArgument("execution_ids", "give execution ids or a task_id")
            check_ids(request.execution_ids, "execution_ids", bounds.MAX_REDRIVE_IDS)
            check_limit(request.limit, "limit", bounds.MAX_REDRIVE_IDS)
            ids, namespace = list(request.execution_ids), None
            if ids:
                with self.node.kv.read() as txn:
                    ids, namespace = _ids_in_one_namespace(txn, ids, "RedriveDeadLetters")
                if not ids:  # none the caller can see: as if none existed (an empty list means "all")
                    return scheduler_pb2.RedriveDeadLettersResponse()
            body = commands_pb2.RedriveDeadLetters(
                execution_ids=ids, task_id=request.task_id, limit=request.limit
            )
            res = await self._write(
                "redrive", request.request_id, _namespace=namespace, redrive_dead_letters=body
            )
            return scheduler_pb2.RedriveDeadLettersResponse(executions=res.executions)

        return await _guard(context, run())

    async def PurgeDeadLetters(
        self, request: scheduler_pb2.PurgeDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.PurgeDeadLettersResponse:
        body = commands_pb2.PurgeDeadLetters(
            execution_ids=request.execution_ids,
            task_id=request.task_id,
            before_ms=request.before_ms,
            limit=request.limit,
        )

        async def run() -> commands_pb2.CommandResult:
            check_ids(request.execution_ids, "execution_ids", bounds.MAX_PURGE_IDS)
            check_limit(request.limit, "limit", bounds.MAX_PURGE_IDS)
            if request.before_ms < 0:
                raise errors.InvalidArgument("before_ms", "must not be negative (0: any time)")
            namespace = None
            if request.execution_ids or not request.task_id:
                # By ids: the ids' one namespace. With no filter: the request's namespace only, never
                # the whole queue (the state machine's "every task" is not offered to clients).
                with self.node.kv.read() as txn:
                    if request.execution_ids:
                        ids, namespace = _ids_in_one_namespace(
                            txn, list(request.execution_ids), "PurgeDeadLetters"
                        )
                    else:
                        namespace = check_namespace(request.namespace, "namespace")
                        require_role("PurgeDeadLetters", namespace)
                        limit = min(request.limit or 1000, bounds.MAX_PURGE_IDS)
                        letters, _ = _letters_page(
                            txn, namespace, limit, "", before_ms=request.before_ms, scan_limit=None
                        )
                        ids = [d.execution_id for d in letters]
                if not ids:  # an empty list would mean "every task": nothing to purge
                    return commands_pb2.CommandResult()
                del body.execution_ids[:]
                body.execution_ids.extend(ids)
            return await self._write(
                "purge", request.request_id, _namespace=namespace, purge_dead_letters=body
            )

        res = await _guard(context, run())
        return scheduler_pb2.PurgeDeadLettersResponse(purged=len(res.dead_letters))

    # ------------------------------------------------------------------------------------ calendars

    async def PutCalendar(
        self, request: scheduler_pb2.PutCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Calendar:
        async def run() -> common_pb2.Calendar:
            self.node.leader_runner()
            calendar = common_pb2.Calendar()
            calendar.CopyFrom(request.calendar)
            calendar.namespace = check_namespace(calendar.namespace, "calendar.namespace")
            require_role("PutCalendar", calendar.namespace)
            # The state machine runs the same check when applying (raft.firing.check_calendar); here it
            # keeps a calendar it would refuse out of the log.
            with self.node.kv.read() as txn:
                check_calendar(txn, calendar)
                quota.check_calendar(txn, self.node.limits, calendar_key(calendar.namespace, calendar.name))
            body = commands_pb2.PutCalendar(calendar=calendar)
            return (await self._write("calendar", request.request_id, put_calendar=body)).calendar

        return await _guard(context, run())

    async def DeleteCalendar(
        self, request: scheduler_pb2.DeleteCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.DeleteCalendarResponse:
        body = commands_pb2.DeleteCalendar(name=request.name, namespace=request.namespace)

        async def run() -> commands_pb2.CommandResult:
            calendar_name(request.name, "name")
            body.namespace = check_namespace(request.namespace, "namespace")
            require_role("DeleteCalendar", body.namespace)
            return await self._write("calendar-delete", request.request_id, delete_calendar=body)

        await _guard(context, run())
        return scheduler_pb2.DeleteCalendarResponse()

    async def GetCalendar(
        self, request: scheduler_pb2.GetCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Calendar:
        async def run() -> common_pb2.Calendar:
            calendar_name(request.name, "name")
            namespace = check_namespace(request.namespace, "namespace")
            require_role("GetCalendar", namespace)
            with self.node.kv.read() as txn:
                c = sm.read_calendar(txn, request.name, namespace)
            if c is None:
                where = f" in namespace {namespace}" if namespace else ""
                raise errors.NotFound(f"calendar {request.name!r} not found{where}")
            return c

        return await _guard(context, run())

    async def ListCalendars(
        self, request: scheduler_pb2.ListCalendarsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListCalendarsResponse:
        async def run() -> scheduler_pb2.ListCalendarsResponse:
            size = _page_size(request.page_size, "page_size")
            if request.page_token:  # a stored key: NAME, or NAMESPACE/NAME (raft.firing.calendar_key)
                token_ns, _, token_name = request.page_token.rpartition("/")
                calendar_name(token_name, "page_token")
                check_namespace(token_ns, "page_token")
            namespace = _list_namespace("ListCalendars", request.namespace, request.all_namespaces)
            with self.node.kv.read() as txn:
                calendars, token = sm.calendars_page(
                    txn,
                    page_size=size,
                    page_token=request.page_token,
                    max_bytes=bounds.MAX_PAGE_BYTES,
                    namespace=namespace,
                )
            return scheduler_pb2.ListCalendarsResponse(calendars=calendars, next_page_token=token)

        return await _guard(context, run())


# ------------------------------------------------------------------------------------- namespaces
# The namespace checks happen here, at the API, before anything is proposed: apply() acts on what the
# entry holds. A task never changes namespace and ids are never reused, so a check made on the stored
# object stays true until the command applies.

# The Scheduler method of each kind of `_write`, for the role check in the named object's namespace.
_KIND_METHOD = {
    "update": "UpdateTask",
    "pause": "PauseTask",
    "resume": "ResumeTask",
    "trigger": "TriggerTask",
    "backfill": "BackfillTask",
    "cancel-exec": "CancelExecution",
    "delete": "DeleteTask",
    "redrive": "RedriveDeadLetters",
    "purge": "PurgeDeadLetters",
}
_LETTER_CHUNK = 256


def _task_for(txn: Txn, task_id: str, method: str) -> common_pb2.Task:
    """The stored task `task_id`, for Scheduler `method`: NotFound when it does not exist or lies in a
    namespace the caller cannot read (the same answer: existence does not leak); PermissionDenied when
    the caller reads that namespace but lacks the method's role there."""
    missing = f"task {task_id} not found"
    task = sm.read_task(txn, task_id)
    if task is None:
        raise errors.NotFound(missing)
    require_role(method, task.spec.namespace, hide=missing)
    return task


def _task_namespace(txn: Txn, task_id: str) -> str:
    """The namespace of a stored task (stored form), or "*" for a task that is gone: the executions and
    dead letters of a deleted task, until retention removes them, are seen only by principals holding
    their roles in every namespace."""
    task = sm.read_task(txn, task_id)
    return ALL_NAMESPACES if task is None else task.spec.namespace


def _execution_for(txn: Txn, execution_id: str, method: str) -> common_pb2.Execution:
    """The stored execution, checked like `_task_for` in its task's namespace (which it carries back)."""
    missing = f"execution {execution_id} not found"
    ex = sm.read_execution(txn, execution_id)
    if ex is None:
        raise errors.NotFound(missing)
    namespace = _task_namespace(txn, ex.task_id)
    require_role(method, namespace, hide=missing)
    ex.namespace = "" if namespace == ALL_NAMESPACES else namespace
    return ex


def _ids_in_one_namespace(txn: Txn, ids: list[str], method: str) -> tuple[list[str], str | None]:
    """The execution ids of a redrive or purge that the caller may act on, and their one namespace. Ids
    that do not exist, or lie in a namespace the caller cannot read, are left out (the state machine
    skips unknown ids alike); PermissionDenied for a namespace read but not operated; ids from two
    namespaces are refused (a bulk action stays in one)."""
    kept: list[str] = []
    namespace: str | None = None
    for i, execution_id in enumerate(ids):
        ex = sm.read_execution(txn, execution_id)
        if ex is None:
            continue
        ns = _task_namespace(txn, ex.task_id)
        if not readable(ns):
            continue
        require_role(method, ns)
        if namespace is not None and ns != namespace:
            raise errors.InvalidArgument(
                f"execution_ids[{i}]",
                f"in namespace {ns or 'default'}, not {namespace or 'default'}: a call acts in one namespace",
            )
        namespace = ns
        kept.append(execution_id)
    return kept, namespace


def _letters_page(
    txn: Txn,
    namespace: str | None,
    size: int,
    token: str,
    *,
    before_ms: int = 0,
    scan_limit: int | None = sm.LIST_SCAN_LIMIT,
) -> tuple[list[common_pb2.DeadLetter], str]:
    """Dead letters of `namespace` (None: every one) in execution-id order, each with its namespace,
    dead before `before_ms` if given. Reads at most `scan_limit` letters (None: no bound, for a purge,
    whose size bounds it): a page may be short, even empty, and still carry a token."""
    out: list[common_pb2.DeadLetter] = []
    namespaces: dict[str, str] = {}
    scanned = 0
    while True:
        chunk, following = retry.list_dead_letters(txn, "", _LETTER_CHUNK, token)
        for letter in chunk:
            scanned += 1
            token = letter.execution_id
            ns = namespaces.get(letter.task_id)
            if ns is None:
                ns = namespaces[letter.task_id] = _task_namespace(txn, letter.task_id)
            wanted = namespace is None or ns == namespace
            if wanted and not (before_ms and letter.dead_at_ms >= before_ms):
                letter.namespace = "" if ns == ALL_NAMESPACES else ns
                out.append(letter)
                if len(out) >= size:
                    return out, letter.execution_id
            if scan_limit is not None and scanned >= scan_limit:
                return out, token
        if not following:
            return out, ""
        token = following


def _list_namespace(method: str, namespace: str, all_namespaces: bool) -> str | None:
    """The namespace a list call reads (stored form), after the role check; None: every namespace."""
    if all_namespaces:
        require_all_namespaces(method)
        return None
    stored = check_namespace(namespace, "namespace")
    require_role(method, stored)
    return stored


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


def _before(execution_id: str) -> str:
    """A page token that makes a listing start at `execution_id` (tokens resume strictly after an id)."""
    from cronraft.raft.codec import id_bytes, id_text

    n = int.from_bytes(id_bytes(execution_id, field="execution_id"), "big")
    return id_text(max(0, n - 1).to_bytes(16, "big"))


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
    spec.queue = spec.queue or "default"
    spec.timeout_ms = spec.timeout_ms or cfg.default_timeout_ms
    spec.max_attempts = spec.max_attempts or cfg.max_attempts
    if spec.guarantee == common_pb2.DELIVERY_GUARANTEE_UNSPECIFIED:
        spec.guarantee = common_pb2.AT_LEAST_ONCE
    if spec.priority == common_pb2.PRIORITY_UNSPECIFIED:
        spec.priority = common_pb2.MEDIUM


def _request_id(given: str, kind: str) -> str:
    if len(given) > bounds.MAX_REQUEST_ID:
        raise errors.InvalidArgument("request_id", f"longer than {bounds.MAX_REQUEST_ID} characters")
    # Without a client id the request cannot be deduplicated across retries; give it a unique one.
    return f"{kind}:{given}" if given else ""


class WorkerGatewayServicer(worker_pb2_grpc.WorkerGatewayServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.WorkerMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[worker_pb2.GatewayMessage]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "hello" or not first.hello.worker_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "hello: the first message must be a Hello with a worker_id"
            )
        problem = hello_problem(first.hello)
        if problem:
            log.warning("worker refused", problem=problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        problem = worker_identity_problem(first.hello, current_principal())
        if problem:
            log.warning("worker refused", problem=problem, peer=context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        loop = asyncio.get_running_loop()
        hold_until = loop.time() + LEADERLESS_HOLD_S
        while True:
            try:
                runner = self.node.leader_runner()
                break
            except errors.NotLeader as e:
                if e.leader_address or loop.time() >= hold_until:
                    yield worker_pb2.GatewayMessage(
                        not_leader=worker_pb2.NotLeader(leader_address=e.leader_address or "")
                    )
                    return
            await asyncio.sleep(LEADERLESS_POLL_S)  # the Raft thread changes the leader; poll it briefly
        session = runner.attach(first.hello, bound=current_principal().source != "none")
        log.info("worker connected", worker=first.hello.worker_id, capacity=first.hello.capacity)
        refused: list[str] = []  # why the stream was ended, if a message broke a bound

        output_budget = ByteBudget(bounds.MAX_OUTPUT_BYTES_PER_S, bounds.MAX_OUTPUT_BURST_BYTES, loop.time())

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    problem = worker_problem(msg)
                    if problem:
                        refused.append(problem)
                        log.warning("worker message refused", worker=session.worker_id, problem=problem)
                        break
                    kind = msg.WhichOneof("kind")
                    if kind == "heartbeat":
                        runner.on_heartbeat(session, msg.heartbeat)
                    elif kind == "results":
                        runner.on_results(session, bounded_results(msg.results.results))
                    elif kind == "output":
                        runner.on_output(session, msg.output)
                        pause = output_budget.charge(len(msg.output.data), loop.time())
                        if pause > 0:  # read nothing for a while: flow control then holds the sender
                            await asyncio.sleep(pause)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                runner.detach(session)

        reader = asyncio.create_task(read())
        try:
            while True:
                out = await session.queue.get()
                if out is None:
                    break
                runner.restamp(out)
                yield out
        finally:
            reader.cancel()
            runner.detach(session)
            log.info("worker disconnected", worker=session.worker_id)
        if refused:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])
        if session.refusal:  # a forged message (daemon.leader.Refusal)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, session.refusal)


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.StatusResponse:
        node = self.node
        st = node.replicator.status()
        with node.kv.read() as txn:
            epoch = sm.read_epoch(txn)
        runner = node.runner if st.is_leader else None
        monitor = node.clock_monitor
        health, est = monitor.health, monitor.estimate
        now = monitor.now_mono_ms()
        members = []
        storage = node.storage.status()
        for m in node.config.cluster.members:
            member = cluster_pb2.Member(
                node_id=m.id,
                raft_address=m.raft_address,
                grpc_address=m.grpc_address,
                connected=True if m.id == node.config.node.id else bool(st.connected.get(m.id, False)),
            )
            # Its storage: ours, or what the peer's answer to our last clock probe said.
            member.storage.CopyFrom(
                storage if m.id == node.config.node.id else node.storage.peer_status(m.id)
            )
            # Its schedule-result versions: ours, or its answer to our last clock probe (daemon.versioncheck).
            member.versions.CopyFrom(
                node.versions.message() if m.id == node.config.node.id else node.versions.peer_message(m.id)
            )
            if m.id == node.config.node.id:
                member.clock_measured = health.measured
                member.clock_offset_ms = round(health.offset_ms)
            elif (reading := monitor.estimator.reading(m.id, now)) is not None:
                # The peer's offset from the median, as this node sees it (its own reading + our offset).
                member.clock_measured = True
                member.clock_offset_ms = round(reading.offset_ms + est.offset_ms)
                member.clock_rtt_us = min(2**32 - 1, round(reading.rtt_ms * 1000))
                member.clock_age_ms = min(2**32 - 1, round(reading.age_ms))
            members.append(member)
        return cluster_pb2.StatusResponse(
            node_id=node.config.node.id,
            is_leader=st.is_leader,
            leader_id=st.leader_id or "",
            leader_address=node.leader_grpc_address(st) or "",
            term=st.term,
            commit_index=st.commit_index,
            applied_index=node.sm.last_applied(),
            members=members,
            epoch_term=epoch.term,
            connected_workers=runner.connected_workers if runner is not None else 0,
            ready=(runner.ready if runner is not None else st.ready),
            clock_offset_ms=round(health.offset_ms),
            clock_healthy=health.healthy,
            clock_correction_ms=health.correction_ms,
            clock_max_offset_ms=node.config.clock.max_offset_ms,
            clock_measured=health.measured,
            storage=storage,
            versions=node.versions.message(),
            versions_mismatch=node.versions.mismatch(),
            dispatch_held=bool(runner is not None and runner.held),
        )

    async def Clock(
        self, request: cluster_pb2.ClockRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.ClockResponse:
        if len(request.node_id) > bounds.MAX_NODE_ID:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"node_id: longer than {bounds.MAX_NODE_ID} characters"
            )
        # The raw wall clock (not the corrected one): the peers measure clocks, not corrections, so
        # that two nodes' corrections never feed back into each other.
        return cluster_pb2.ClockResponse(
            node_id=self.node.config.node.id,
            wall_us=self.node.clock_monitor.wall_us(),
            storage=self.node.storage.status(),  # so that every node knows its peers' (daemon.storage)
            versions=self.node.versions.message(),  # and their schedule-result versions (daemon.versioncheck)
        )


__all__ = ["LEADER_METADATA_KEY", "ClusterServicer", "SchedulerServicer", "WorkerGatewayServicer"]
