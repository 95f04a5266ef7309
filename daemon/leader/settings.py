"""The leader's tunables (`LeaderSettings`), read once from the daemon's config (daemon.config)."""

from __future__ import annotations

from dataclasses import dataclass

from cronraft.bounds import DEFAULT_RESULT_BYTES


@dataclass(frozen=True)
class LeaderSettings:
    horizon_ms: int = 10_000
    lease_ttl_ms: int = 10_000
    # The leader expires a lease this long after the worker must have self-fenced (I5), so that for
    # exactly_once the old attempt is dead before a new one is granted.
    expiry_grace_ms: int = 5_000
    max_commands_per_tick: int = 4096
    # A connected worker not heard from (heartbeat, results) for this long gets no new lease: its stream
    # may be cut by a partition that sends no reset, and every lease offered into it would only expire
    # and burn an attempt (found by fault scenario S6, workers cut from the leader). 0: never.
    worker_silent_ms: int = 0
    # Idle heartbeats: a worker holding nothing heartbeats every `heartbeat_interval_ms`, stretched so that
    # idle workers send about `idle_workers_per_interval` heartbeats per interval in all (at 10,000 workers
    # and 2 s: one every 20 s each). Each heartbeat costs the leader ~0.2 ms of CPU in gRPC and protobuf,
    # so 10,000 workers at 2 s took a whole core. Below that many workers nothing changes.
    heartbeat_interval_ms: int = 2_000
    idle_workers_per_interval: int = 1_000
    max_idle_heartbeat_ms: int = 30_000
    pending_load_limit: int = 10_000
    # Cluster-wide cap on executions holding a lease (0: none): beyond it, work waits pending.
    max_running: int = 0
    # Priority aging: an execution waiting this long counts one priority level higher (so low never
    # starves behind a steady stream of high).
    aging_step_ms: int = 60_000
    # Fire ahead: commit the Fire and Grant of a task that may fire ahead (firing.may_fire_ahead) up to
    # this long before its due time; the worker defers the start to the due time (Lease.start_delay_ms),
    # so the commit and dispatch latency no longer delays the start. 0: fire at the due time.
    fire_lead_ms: int = 0
    # Burst staging (daemon.leader.staging): when more is due than commits in `fire_lead_ms` at
    # `stage_rate` fires per second, fire up to `stage_lead_ms` ahead instead. 0: never more than
    # `fire_lead_ms`.
    stage_lead_ms: int = 0
    stage_rate: int = 2_000
    # Quotas of a task's executions ([limits]; raft.quota), stamped into each Fire (0: none). A fire over
    # one creates no execution (the ledger says skipped_limit) and the schedule goes on.
    max_pending_per_task: int = 0
    max_executions_per_task: int = 0
    # The largest result an attempt may hand back ([limits] max_result_bytes): told to workers in the
    # Welcome and stamped into each Complete, whose apply keeps nothing larger (raft.commands.leases).
    max_result_bytes: int = DEFAULT_RESULT_BYTES


__all__ = ["LeaderSettings"]
