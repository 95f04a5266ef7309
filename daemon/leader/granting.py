"""Grants for pending executions (`grant_pending`): the part of the leader core's tick that leases
executions waiting in the pending queue (fired with no free worker, re-queued after an expiry or a failed
attempt, a retry's backoff ended) to workers with a free slot, by dispatch order. A function of
`LeaderCore` (core.py), kept here so that each module does one job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps
from cronraft.raft import state as sm
from cronraft.raft.fireplan import needs_plan

if TYPE_CHECKING:
    from cronraft.daemon.leader.core import LeaderCore

Command = commands_pb2.Command


def grant_pending(core: LeaderCore, now_ms: int, budget: int) -> list[Command]:
    pending = core.pending
    if not len(pending):
        if pending.overflow:
            core._refill_pending()
        if not len(pending):
            pending.next_ready_ms = None
            return []  # nothing waits: no pass over the workers
    pool = core.pool
    served = pool.served_queues()
    cmds: list[Command] = []
    pending.next_ready_ms = None
    cap = core.settings.max_running
    with core.kv.read() as txn:
        for queue in served & pending.queues():
            for rank, execution_id in pending.dispatch_order(queue, now_ms, core.settings.aging_step_ms):
                if len(cmds) >= budget or (cap and len(core.keeper) + len(core.granting) >= cap):
                    return cmds
                retry_at = core.retries.retry_at("grant", execution_id, now_ms) if core.retries else None
                if retry_at is not None:  # its last Grant failed inside apply
                    pending.note_ready_at(retry_at)
                    continue
                ex = sm.read_execution(txn, execution_id)
                if ex is None or ex.state != common_pb2.EXECUTION_PENDING:
                    pending.remove(queue, rank, execution_id)
                    core.retries.succeeded("grant", execution_id)
                    continue
                task = sm.read_task(txn, ex.task_id)
                # A first attempt of a staged burst may be leased as far ahead as it was fired; a
                # retry's backoff keeps the ordinary lead.
                lead = core.planner.lead_for(task, core.planner.lead_now if ex.attempt <= 1 else None)
                ready_ms = ex.not_before_ms - lead
                if ready_ms > now_ms:  # a retry waiting for its backoff, or a fire for its due time
                    pending.note_ready_at(ready_ms)
                    continue
                if task is not None and task.spec.depends_on and deps.unmet(txn, task, ex.nominal_time_ms):
                    continue  # its upstream runs have not succeeded yet (LeaderCore._why_waiting_for_worker)
                limit = task.spec.max_concurrency if task is not None else 0
                if limit and core.keeper.running(ex.task_id) + _granting_for_task(core, ex.task_id) >= limit:
                    continue
                if task is not None:
                    spec = task.spec
                    # Its namespace is read only when some worker serves some namespaces only.
                    worker = pool.pick(queue, spec.worker_labels, spec.namespace if pool.bound else "")
                else:  # its grant fails when applied; to a worker of its namespace all the same
                    worker = pool.pick(queue, None, ex.namespace)
                if worker is None:
                    continue
                pending.remove(queue, rank, execution_id)
                grant = core._grant_command(execution_id, worker, now_ms, task_id=ex.task_id, lead_ms=lead)
                if task is not None and not needs_plan(task.spec):
                    core.plans.mark(grant)
                cmds.append(grant)
    return cmds


def _granting_for_task(core: LeaderCore, task_id: str) -> int:
    return sum(1 for t in core.granting.values() if t == task_id)


__all__ = ["grant_pending"]
