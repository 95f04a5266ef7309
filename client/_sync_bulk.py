"""The bulk task calls of `Client`: import many tasks (`ImportTasks`), cancel or delete many
tasks (by ids, or those matching filters).

GENERATED from client/_aio_bulk.py by scripts/gen_sync_client.py: edit that file,
then run `make clients` (`make check` fails when this file is stale).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.client import _bulk, _namespace, _requests, _routing
from cronraft.client._channels import rpc_status
from cronraft.client._sync_tasks import TaskCalls
from cronraft.client._transport import with_tls_hint
from cronraft.proto.v1 import common_pb2, scheduler_pb2

__all__ = ["BulkCalls"]


class BulkCalls(TaskCalls):
    """The calls on many tasks: one call (or one `ImportTasks` segment) at a time, each retried alone."""

    def import_tasks(
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
                    response = stubs.scheduler.ImportTasks(iter(segment), timeout=plan.attempt_timeout())
                except grpc.RpcError as exc:
                    code, details, leader = rpc_status(exc)
                    delay = plan.failed(code, details, leader)
                    if delay is None:
                        raise with_tls_hint(
                            plan.give_up_error(segment[0].request_id), self._transport
                        ) from None
                    result.retries += 1
                    if delay > 0:
                        time.sleep(delay)
                    continue
                plan.succeeded()
                break
            result.add(response)
            if on_progress is not None:
                on_progress(result)
        return result

    def cancel_tasks(
        self, task_ids: Iterable[str], *, request_ids: Mapping[str, str] | None = None
    ) -> _requests.BulkResult[common_pb2.Task]:
        """Cancel each task in turn (one CancelTask per id, each with its own request id, reused on its
        retries; `request_ids` gives them, e.g. from a previous result). Never raises for one id: see
        `BulkResult` (`results`, `errors`, `skipped` once the cluster is unreachable)."""
        rids = _requests.bulk_request_ids(task_ids, request_ids)
        return self._bulk(rids, lambda i, rid: self.cancel_task(i, request_id=rid))

    def cancel_tasks_where(
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
            for t in self.list_tasks(state=state, tags=tags, name_prefix=name_prefix, namespace=namespace)
            if t.state != common_pb2.TASK_CANCELLED
        ]
        return self.cancel_tasks(ids, request_ids=request_ids)

    def delete_tasks(
        self,
        task_ids: Iterable[str],
        *,
        force: bool = False,
        request_ids: Mapping[str, str] | None = None,
    ) -> _requests.BulkResult[scheduler_pb2.DeleteTaskResponse]:
        """Delete each task in turn (one DeleteTask per id, each with its own request id, reused on its
        retries). Never raises for one id: see `BulkResult`."""
        rids = _requests.bulk_request_ids(task_ids, request_ids)
        return self._bulk(rids, lambda i, rid: self.delete_task(i, force=force, request_id=rid))

    def delete_tasks_where(
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
            for t in self.list_tasks(state=state, tags=tags, name_prefix=name_prefix, namespace=namespace)
        ]
        return self.delete_tasks(ids, force=force, request_ids=request_ids)
