"""The Scheduler service's dead-letter methods: list, read, redrive and purge the executions that used up
their attempts (raft.retry keeps the dead-letter index). A bulk action acts in one namespace."""

from __future__ import annotations

from typing import Any

import grpc

from cronraft import bounds, errors
from cronraft.daemon.rejections import check_result
from cronraft.daemon.security.authz import readable, require_role
from cronraft.daemon.services.common import (
    SchedulerBase,
    _guard,
    _list_namespace,
    _page_size,
    _recorded,
    _task_for,
    _task_namespace,
)
from cronraft.daemon.wire import check_ids, check_length, check_limit
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import retry
from cronraft.raft import state as sm
from cronraft.raft.kv import Txn
from cronraft.raft.validate import check_namespace
from cronraft.tokenfile import ALL_NAMESPACES

_LETTER_CHUNK = 256


class DeadLetterMethods(SchedulerBase):
    """Scheduler methods on dead letters (daemon.services.scheduler composes them with the other subjects)."""

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
            namespace, done = None, None
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
                        done = _recorded(txn, request.request_id, "purge")
                        ids = _letters_to_purge(txn, request, namespace) if done is None else _purged(done)
                if not ids:  # an empty list would mean "every task": nothing to purge
                    if done is not None:  # a retry of a purge that removed none: its answer as kept
                        check_result(done)
                        return done
                    return commands_pb2.CommandResult()
                del body.execution_ids[:]
                body.execution_ids.extend(ids)
            return await self._write(
                "purge", request.request_id, _namespace=namespace, purge_dead_letters=body
            )

        res = await _guard(context, run())
        return scheduler_pb2.PurgeDeadLettersResponse(purged=len(res.dead_letters))


def _letters_to_purge(txn: Txn, request: scheduler_pb2.PurgeDeadLettersRequest, namespace: str) -> list[str]:
    """The ids of the dead letters a purge with neither ids nor task removes: the namespace's, dead before
    `before_ms` if given, at most `limit`."""
    limit = min(request.limit or 1000, bounds.MAX_PURGE_IDS)
    letters, _ = _letters_page(txn, namespace, limit, "", before_ms=request.before_ms, scan_limit=None)
    return [d.execution_id for d in letters]


def _purged(done: commands_pb2.CommandResult) -> list[str]:
    """The ids a purge with neither ids nor task removed when first applied (its answer in the dedup
    table, common._recorded). Listed again, its retry would find them gone and answer purged=0; proposed
    with them, it is answered from the dedup table (were the record gone, it would act on those letters
    only, never on the whole queue as an empty list would)."""
    return [d.execution_id for d in done.dead_letters]


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


def _before(execution_id: str) -> str:
    """A page token that makes a listing start at `execution_id` (tokens resume strictly after an id)."""
    from cronraft.raft.codec import id_bytes, id_text

    n = int.from_bytes(id_bytes(execution_id, field="execution_id"), "big")
    return id_text(max(0, n - 1).to_bytes(16, "big"))


__all__ = ["DeadLetterMethods"]
