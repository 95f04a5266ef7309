"""The bulk API: `ImportTasks`, a client stream of batches of task specs, each created in one entry.

Per batch: every spec is validated and stamped with its defaults before anything is proposed; a bad
spec rejects its whole batch with INVALID_ARGUMENT naming `batches[b].specs[i].<field>`, and ends the
call. A good batch becomes one `ImportTasks` command (one replicated entry, one LMDB transaction on
each node: all of it or nothing). Up to `MAX_INFLIGHT` batches are in flight at once, so the stream is
read while earlier batches replicate. Batches acknowledged before a failure stay created; the error
says how many. A retried batch (same request id) is answered from the dedup table with its first ids,
without the quota check (its own tasks may fill the quota: `recorded`, daemon.services.common).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from cronraft import errors
from cronraft.daemon.leader_runner import new_id
from cronraft.daemon.rejections import check_result
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import quota
from cronraft.raft.commands import MAX_IMPORT_BATCH
from cronraft.raft.kv import Txn

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

MAX_INFLIGHT = 4
# One batch must fit one entry of the group committer (4 MiB) with room for the command's envelope.
MAX_BATCH_BYTES = 3 << 20

Stamp = Callable[[common_pb2.TaskSpec, "Node"], None]
# The dedup key of a client's request id of a kind, tied to the caller (daemon.services.common).
RequestId = Callable[[Txn, str, str], str]
# The answer the dedup table keeps for a client's request id of a kind, if applied already.
Recorded = Callable[[Txn, str, str], commands_pb2.CommandResult | None]


class BulkImport:
    """One `ImportTasks` call."""

    def __init__(self, node: Node, *, stamp: Stamp, request_id: RequestId, recorded: Recorded) -> None:
        self.node = node
        self._stamp = stamp
        self._request_id = request_id
        self._recorded = recorded
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)
        self._inflight: set[asyncio.Task[None]] = set()
        self._batches: list[scheduler_pb2.ImportedBatch | None] = []
        self._failure: BaseException | None = None

    async def run(
        self, requests: AsyncIterator[scheduler_pb2.ImportTasksRequest]
    ) -> scheduler_pb2.ImportTasksResponse:
        await self.node.writer()  # redirect before reading anything
        rejected: errors.CronraftError | None = None
        try:
            async for request in requests:
                if self._failure is not None:
                    break
                number = len(self._batches)
                try:
                    cmd = self._command(number, request)
                except errors.CronraftError as e:
                    rejected = e
                    break
                self._batches.append(None)
                await self._slots.acquire()
                task = asyncio.create_task(self._propose(number, cmd))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        failure = self._failure or rejected
        if failure is not None:
            raise self._with_progress(failure)
        done = [b for b in self._batches if b is not None]
        return scheduler_pb2.ImportTasksResponse(
            created=sum(b.count for b in done if not b.replayed),
            replayed=sum(b.count for b in done if b.replayed),
            batches=done,
        )

    def _command(self, number: int, request: scheduler_pb2.ImportTasksRequest) -> commands_pb2.Command:
        where = f"batches[{number}]"
        count = len(request.specs)
        if not 1 <= count <= MAX_IMPORT_BATCH:
            raise errors.InvalidArgument(
                f"{where}.specs", f"a batch holds 1 to {MAX_IMPORT_BATCH} specs, not {count}"
            )
        size = request.ByteSize()
        if size > MAX_BATCH_BYTES:
            raise errors.InvalidArgument(
                where, f"is {size} bytes; a batch holds at most {MAX_BATCH_BYTES} bytes: send smaller batches"
            )
        for i, spec in enumerate(request.specs):
            try:
                self._stamp(spec, self.node)
            except errors.InvalidArgument as e:
                raise errors.InvalidArgument(
                    f"{where}.specs[{i}].{e.field.removeprefix('spec.')}", e.problem
                ) from None
        with self.node.kv.read() as txn:
            rid = self._request_id(txn, request.request_id, "import")
            if self._recorded(txn, request.request_id, "import") is None:  # not applied: it may fill it
                quota.check_tasks(txn, self.node.limits, count)  # apply checks it again (batches in flight)
        now = self.node.clock.now_ms()
        body = commands_pb2.ImportTasks(
            first_task_id=new_id(now),
            report_due_until_ms=now + 2 * self.node.settings.horizon_ms,
        )
        body.specs.extend(request.specs)
        return commands_pb2.Command(
            request_id=rid, stamped_at_ms=now, limits=self.node.limits, import_tasks=body
        )

    async def _propose(self, number: int, cmd: commands_pb2.Command) -> None:
        try:
            (res,) = await self.node.propose([cmd])
            check_result(res, where=f"batches[{number}]")
            self._batches[number] = scheduler_pb2.ImportedBatch(
                request_id=cmd.request_id.partition(":")[2],  # the client's (after "import[@scope]:")
                first_task_id=res.imported.first_task_id,
                count=res.imported.count,
                replayed=res.imported.first_task_id != cmd.import_tasks.first_task_id,
            )
        except BaseException as e:
            if self._failure is None:
                self._failure = e
            if not isinstance(e, Exception):
                raise
        finally:
            self._slots.release()

    def _with_progress(self, failure: BaseException) -> BaseException:
        """The error, saying which batches were created before it (they stay created)."""
        if not isinstance(failure, errors.CronraftError):
            return failure
        done = [b for b in self._batches if b is not None]
        note = (
            f" ({len(done)} batches of this call were created, {sum(b.count for b in done)} tasks; "
            "a batch is created whole or not at all)"
            if done
            else " (no batch was created)"
        )
        if isinstance(failure, errors.InvalidArgument):
            return errors.InvalidArgument(failure.field, failure.problem + note)
        if isinstance(failure, errors.NotLeader):
            return failure  # the client follows the redirect and resends every batch (dedup by request id)
        return type(failure)(str(failure) + note)


__all__ = ["MAX_BATCH_BYTES", "MAX_INFLIGHT", "BulkImport"]
