"""The dead-letter calls of `AsyncClient`: list, get, redrive, purge.

`AsyncDeadLetterCalls` is one of the subject mixins `AsyncClient` (client/aio.py) is composed of; the
sync twin, `_sync_dead_letters.py`, is generated from this file by scripts/gen_sync_client.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from cronraft.client import _namespace, _parsing, _requests
from cronraft.client._aio_base import AsyncClientBase
from cronraft.proto.v1 import common_pb2, scheduler_pb2

__all__ = ["AsyncDeadLetterCalls"]


class AsyncDeadLetterCalls(AsyncClientBase):
    """The calls on dead letters (executions that failed for good)."""

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
